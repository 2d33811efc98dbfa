/* Liveness by OFD locks: see live.h for the model. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "live.h"

_Atomic unsigned ndc__fork_gen;

/* Every handle of this process with a description open. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ndc__live registry = { -1, 0, &registry, &registry };
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void before_fork(void) { pthread_mutex_lock(&registry_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&registry_lock); }

/* The child's copies of the parent's descriptions would keep the parent's
 * locks, and so the parent "alive", for as long as the child lives. */
static void after_fork_child(void)
{
    for (struct ndc__live *l = registry.next, *next; l != &registry; l = next) {
        next = l->next;
        close(l->fd);
        l->fd = -1;
        l->next = l->prev = NULL;   /* unregistered: the child registers anew at rejoin */
    }
    registry.next = registry.prev = &registry;
    atomic_fetch_add_explicit(&ndc__fork_gen, 1, memory_order_relaxed);   /* the child is one thread */
    pthread_mutex_init(&registry_lock, NULL);
}

static void install(void) { pthread_atfork(before_fork, after_fork_parent, after_fork_child); }

void ndc__live_init(void)
{
    pthread_once(&init_once, install);
}

static int same_file(int a, int b)
{
    struct stat x, y;
    return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

static int reopen(int seg_fd, const char *path)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", seg_fd);
    const char *tries[2] = { proc, path };
    for (int i = 0; i < 2; i++) {
        if (!tries[i])
            continue;
        int fd = open(tries[i], O_RDWR | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (same_file(fd, seg_fd))
            return fd;
        close(fd);   /* a name since taken by another file */
    }
    return -1;
}

int ndc__live_open(struct ndc__live *l, int seg_fd, const char *path)
{
    ndc__live_init();
    /* Opened under the registry lock, which fork() takes (before_fork): a
     * child forked by another thread between the open and the entry would
     * keep a copy of the description nobody closes, and with it this
     * handle's lock, as long as it lives. */
    pthread_mutex_lock(&registry_lock);
    int fd = reopen(seg_fd, path);
    l->private_fd = fd >= 0;
    if (fd < 0)
        fd = fcntl(seg_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        pthread_mutex_unlock(&registry_lock);
        return ndc__fail(-e, "opening the channel for its liveness lock: %s", strerror(e));
    }
    l->fd = fd;
    l->next = registry.next;
    l->prev = &registry;
    registry.next->prev = l;
    registry.next = l;
    pthread_mutex_unlock(&registry_lock);
    return 0;
}

void ndc__live_close(struct ndc__live *l)
{
    pthread_mutex_lock(&registry_lock);
    if (l->next) {
        l->prev->next = l->next;
        l->next->prev = l->prev;
        l->next = l->prev = NULL;
    }
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    pthread_mutex_unlock(&registry_lock);
}

static struct flock byte(short type, uint32_t idx)
{
    struct flock f;
    memset(&f, 0, sizeof f);   /* l_pid must be 0 for OFD locks */
    f.l_type = type;
    f.l_whence = SEEK_SET;
    f.l_start = (off_t)idx;
    f.l_len = 1;
    return f;
}

int ndc__live_hold(struct ndc__live *l, uint32_t idx)
{
    struct flock f = byte(F_WRLCK, idx);
    if (fcntl(l->fd, F_OFD_SETLK, &f) == 0)
        return 0;
    if (errno == EAGAIN || errno == EACCES)
        return -EAGAIN;
    return ndc__fail(-errno, "liveness lock on byte %u: %s", idx, strerror(errno));
}

int ndc__live_held(const struct ndc__live *l, int seg_fd, uint32_t idx)
{
    int fd = l->fd >= 0 ? l->fd : seg_fd;
    if (!l->private_fd || fd < 0)
        return 1;
    struct flock f = byte(F_WRLCK, idx);
    if (fcntl(fd, F_OFD_GETLK, &f) != 0)
        return 1;
    return f.l_type != F_UNLCK;
}
