/* Review of OFD liveness, fork handling, the queue lock's self-detection
 * and named-channel creation: each test here failed before the fix it
 * names in its comment. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan.h"
#include "peer.h"

static int send_u64(ndc_chan *ch, uint64_t tag, int64_t n, int64_t timeout)
{
    struct ndc_array a;
    int64_t shape[1] = { n };
    ndc_array_init(&a, NDC_U64, 1, shape, NULL);
    a.tag = tag;
    int r = ndc_reserve(ch, &a, timeout);
    if (r)
        return r;
    memset(a.data, 0x5a, (size_t)n * 8);
    return ndc_commit(ch, &a);
}

static int shm_exists(const char *name)
{
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%s", name[0] == '/' ? name + 1 : name);
    struct stat st;
    return lstat(path, &st) == 0;
}

static void shm_path(char *path, size_t cap, const char *name)
{
    snprintf(path, cap, "/dev/shm/%s", name[0] == '/' ? name + 1 : name);
}

/* ---- fork ------------------------------------------------------------------ */

/* A thread attaching while another thread forks: the liveness description
 * was opened before it was entered in the fork registry, so a child forked
 * in between kept a copy of it, and with it the lock that says the parent
 * lives, for as long as the child lived (the parent dead or not). The child
 * must hold no description of the channel but those the registry closes:
 * every channel fd a child inherits here is a segment fd (opened
 * O_NONBLOCK by ndc_open) or the creator's, never a liveness one. */
struct opener {
    const char *name;
    _Atomic int stop;
    _Atomic int opens;
    _Atomic int err;
};

static void *open_loop(void *p)
{
    struct opener *o = p;
    while (!atomic_load(&o->stop)) {
        ndc_chan *h;
        int r = ndc_open(&h, o->name, 0);
        if (r) {
            atomic_store(&o->err, r);
            break;
        }
        ndc_free(h);
        atomic_fetch_add(&o->opens, 1);
    }
    return NULL;
}

/* In the child: fds of the channel file that are neither O_NONBLOCK
 * (segment fds of ndc_open handles) nor the creator's segment fd. */
static int leaked_live_fds(dev_t dev, ino_t ino, int creator_fd)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    int n = 0, dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        struct stat st;
        if (e->d_name[0] == '.' || fd == dfd || fd == creator_fd || fstat(fd, &st) != 0)
            continue;
        if (st.st_dev == dev && st.st_ino == ino && !(fcntl(fd, F_GETFL) & O_NONBLOCK))
            n++;
    }
    closedir(d);
    return n;
}

Test(review_fork, attach_racing_fork_leaks_no_liveness_description, .timeout = 60)
{
    const char *name = th_unique_name("forkrace");
    char nm[128];
    snprintf(nm, sizeof nm, "%s", name);
    ndc_chan *ch;
    th_ok(ndc_create(&ch, nm, &(struct ndc_chan_opts){ .slots = 2, .slot_bytes = 4096 }));
    struct stat st;
    cr_assert_eq(fstat(ndc_fd(ch), &st), 0);
    struct opener o = { .name = nm };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, open_loop, &o), 0);
    int forks = 0, leaks = 0;
    int64_t end = th_now_ns() + 4 * SEC;
    while (th_now_ns() < end && !leaks && !atomic_load(&o.err)) {
        pid_t c = fork();
        if (c == 0)
            _exit(leaked_live_fds(st.st_dev, st.st_ino, ndc_fd(ch)) ? 1 : 0);
        int ws;
        waitpid(c, &ws, 0);
        forks++;
        leaks += WIFEXITED(ws) && WEXITSTATUS(ws) == 1;
    }
    atomic_store(&o.stop, 1);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&o.err), 0, "open: %d", atomic_load(&o.err));
    cr_assert_eq(leaks, 0, "a fork child kept the liveness description of a handle being attached "
                 "(%d of %d forks, %d opens)", leaks, forks, atomic_load(&o.opens));
    ndc_free(ch);
    ndc_unlink(nm);
}

/* A fork child of a process one of whose threads was inside the queue lock
 * (waiting for it) inherited that thread's count in in_lock: the child's
 * own single thread then counted as "a sibling holds the lock", so a lock
 * word naming the child's entry with nobody holding it (what a process
 * killed after retiring its own entry inside the lock leaves, or a
 * scribble) was waited for forever instead of being taken over. */
struct inlock {
    ndc_chan *ch;
    _Atomic int done;
    _Atomic int rc;
};

static void *send_forever(void *p)
{
    struct inlock *s = p;
    atomic_store(&s->rc, send_u64(s->ch, 7, 8, NDC_FOREVER));
    atomic_store(&s->done, 1);
    return NULL;
}

static int child_takes_self_named_word(void *p)
{
    ndc_chan *ch = p;
    /* join as a process of its own without taking the lock: a cancel of a
     * slot that is not ours fails after the rejoin */
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    a.data = ch->payload;
    CK(ndc_cancel(ch, &a) == -EINVAL, 1, "cancel of a slot not ours");
    CK(ch->me < NDC_MAX_PEERS, 2, "not joined");
    atomic_store(&ch->ctrl->lock, ch->me + 1);   /* names us; no thread of ours holds it */
    int r = send_u64(ch, 9, 8, 500 * MS);
    CK(r == 0, 3, "send under a lock word naming this process, held by none of its threads: %d (%s)",
       r, ndc_strerror(r));
    return 0;
}

Test(review_fork, child_does_not_inherit_lock_waiters, .timeout = 60)
{
    ndc_chan *ch = th_chan(4, 64);
    ndc_chan *other;
    th_ok(ndc_open_fd(&other, ndc_fd(ch), 0));
    /* a word naming a live peer (the other handle) that does not hold it:
     * the thread waits inside the lock */
    atomic_store(&ch->ctrl->lock, other->me + 1);
    struct inlock s = { .ch = ch };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, send_forever, &s), 0);
    int64_t end = th_now_ns() + 5 * SEC;
    while (atomic_load(&ch->in_lock) == 0 && th_now_ns() < end)
        usleep(1000);
    cr_assert_eq(atomic_load(&ch->in_lock), 1, "the thread never waited in the lock");
    usleep(5000);
    pid_t c = th_fork(child_takes_self_named_word, ch);
    int code = th_wait(c, 10000);
    /* let the thread go whatever happened in the child */
    uint32_t v = atomic_load(&ch->ctrl->lock);
    if ((v & ~NDC__LOCK_WAITERS) == other->me + 1)
        atomic_compare_exchange_strong(&ch->ctrl->lock, &v, 0);
    pthread_join(t, NULL);
    cr_assert_eq(code, 0, "child: %d", code);
    cr_assert_eq(atomic_load(&s.rc), 0, "the parent's send: %d", atomic_load(&s.rc));
    ndc_free(other);
    ndc_free(ch);
}

/* ---- creation -------------------------------------------------------------- */

/* A create that fails after the name was linked (here: no fd left for the
 * liveness description) left a complete channel under the name, with
 * nobody attached: the header promises "a failed create leaves nothing
 * behind", and the next create of that name got -EEXIST. */
static int create_with_one_fd_left(void *p)
{
    const char *name = p;
    struct rlimit rl = { 64, 64 };
    CK(setrlimit(RLIMIT_NOFILE, &rl) == 0, 1, "setrlimit");
    int last = -1;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0)
            break;
        last = fd;
    }
    CK(last >= 0, 2, "no fd at all");
    close(last);   /* exactly one left: the segment gets it, the liveness lock none */
    ndc_chan *ch;
    int r = ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 2, .slot_bytes = 4096 });
    CK(r != 0, 3, "create with one fd left succeeded");
    CK(!shm_exists(name), 4, "create failed (%d: %s) but left %s behind", r, ndc_strerror(r), name);
    return 0;
}

Test(review_create, failed_create_after_link_leaves_nothing, .timeout = 30)
{
    char name[128];
    snprintf(name, sizeof name, "%s", th_unique_name("emfile"));
    pid_t c = th_fork(create_with_one_fd_left, name);
    int code = th_wait(c, 10000);
    int left = shm_exists(name);
    if (left)
        ndc_unlink(name);
    cr_assert_eq(code, 0, "child: %d", code);
    cr_assert(!left);
    /* and the name is free again */
    ndc_chan *ch;
    th_ok(ndc_create(&ch, name, NULL));
    ndc_free(ch);
    th_ok(ndc_unlink(name));
}

/* Odd files under a channel's name: another program's objects. ndc_unlink
 * documents -EPROTO "not an ndchan channel: left in place", ndc_open
 * -EPROTO "not an ndchan channel"; a symlink gave -ELOOP and a directory
 * (ndc_open) -EISDIR, codes the header does not list. */
Test(review_create, odd_files_are_eproto, .timeout = 30)
{
    char name[128], path[300], target[300];
    snprintf(name, sizeof name, "%s", th_unique_name("odd"));
    shm_path(path, sizeof path, name);

    /* a symlink to a real channel */
    char tname[128];
    snprintf(tname, sizeof tname, "%s", th_unique_name("oddtarget"));
    ndc_chan *ch;
    th_ok(ndc_create(&ch, tname, NULL));
    shm_path(target, sizeof target, tname);
    cr_assert_eq(symlink(target, path), 0);
    th_expect(ndc_unlink(name), -EPROTO);
    cr_assert(shm_exists(name), "the symlink was removed");
    ndc_chan *h;
    th_expect(ndc_open(&h, name, 0), -EPROTO);
    th_expect(ndc_open_wait(&h, name, 0, 10 * MS), -EPROTO);
    unlink(path);
    ndc_free(ch);
    th_ok(ndc_unlink(tname));

    /* a directory */
    cr_assert_eq(mkdir(path, 0700), 0);
    th_expect(ndc_unlink(name), -EPROTO);
    th_expect(ndc_open(&h, name, 0), -EPROTO);
    th_expect(ndc_open(&h, name, NDC_RDONLY), -EPROTO);
    rmdir(path);

    /* a fifo */
    cr_assert_eq(mkfifo(path, 0600), 0);
    th_expect(ndc_unlink(name), -EPROTO);
    th_expect(ndc_open(&h, name, 0), -EPROTO);
    unlink(path);

    /* a unix socket */
    int so = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%.100s", path);
    cr_assert_eq(bind(so, (struct sockaddr *)&sa, sizeof sa), 0);
    th_expect(ndc_unlink(name), -EPROTO);
    th_expect(ndc_open(&h, name, 0), -EPROTO);
    close(so);
    unlink(path);

    /* a file shorter than the magic, and one holding just the magic's
     * first bytes */
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "\x7fNDC", 4), 4);
    close(fd);
    th_expect(ndc_unlink(name), -EPROTO);
    th_expect(ndc_open(&h, name, 0), -EPROTO);
    cr_assert(shm_exists(name));
    unlink(path);
}
