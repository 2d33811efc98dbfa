/* Review of OFD liveness, fork handling, the queue lock's self-detection
 * and named-channel creation: each test here failed before the fix it
 * names in its comment. */
#include <criterion/criterion.h>
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
    int n = 0;
    for (int fd = 3; fd < 64; fd++) {   /* this test's fds are all low */
        struct stat st;
        if (fd == creator_fd || fstat(fd, &st) != 0)
            continue;
        if (st.st_dev == dev && st.st_ino == ino && !(fcntl(fd, F_GETFL) & O_NONBLOCK))
            n++;
    }
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
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, open_loop, &o), 0);
    int forks = 0, leaks = 0;
    int64_t end = th_now_ns() + 1500 * MS;
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
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&o.err), 0, "open: %d", atomic_load(&o.err));
    cr_assert_eq(leaks, 0, "a fork child kept the liveness description of a handle being attached "
                 "(%d of %d forks, %d opens)", leaks, forks, atomic_load(&o.opens));
    ndc_free(ch);
    ndc_unlink(nm);
}

/* A fork child of a process one of whose threads was inside the repair
 * lock (waiting for it) inherited that thread's count in in_lock: the
 * child's own single thread then counted as "a sibling holds the lock", so
 * a lock word naming the child's entry with nobody holding it (what a
 * process killed after retiring its own entry inside the lock leaves, or a
 * scribble) was waited for forever instead of being taken over. Ring steps
 * need the lock only behind a closed gate (a repair under way), so the
 * gate is closed here: every commit waits in the lock. */
struct inlock {
    ndc_chan *ch;
    _Atomic int done;
    _Atomic int rc;
};

static void *send_forever(void *p)
{
    struct inlock *s = p;
    atomic_store(&s->rc, th_send_u64(s->ch, 7, 8, NDC_FOREVER));
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
    CK(atomic_load(&ch->ctrl->gate) == 1, 4, "the gate is open: the send would not need the lock");
    int r = th_send_u64(ch, 9, 8, 500 * MS);
    CK(r == 0, 3, "send under a lock word naming this process, held by none of its threads: %d (%s)",
       r, ndc_strerror(r));
    return 0;
}

Test(review_fork, child_does_not_inherit_lock_waiters, .timeout = 60)
{
    ndc_chan *ch = th_chan(4, 64);
    ndc_chan *other;
    th_ok(ndc_open_fd(&other, ndc_fd(ch), 0));
    /* a word naming a live peer (the other handle) that does not hold it,
     * the gate closed as by its repair: the thread's commit waits inside
     * the lock */
    atomic_store(&ch->ctrl->lock, other->me + 1);
    atomic_store(&ch->ctrl->gate, 1);
    struct inlock s = { .ch = ch };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, send_forever, &s), 0);
    int64_t end = th_now_ns() + 5 * SEC;
    while (!(atomic_load(&ch->ctrl->lock) & NDC__LOCK_WAITERS) && th_now_ns() < end)
        usleep(1000);
    cr_assert(atomic_load(&ch->ctrl->lock) & NDC__LOCK_WAITERS, "the thread never waited in the lock");
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
    cr_assert(atomic_load(&ch->ctrl->gate) == 0 && atomic_load(&ch->ctrl->lock) == 0, "gate %u lock %#x",
              atomic_load(&ch->ctrl->gate), atomic_load(&ch->ctrl->lock));
    struct ndc_array a;
    int seen7 = 0, seen9 = 0;   /* the parent's array and the child's, each once */
    for (int i = 0; i < 2; i++) {
        th_ok(ndc_acquire(ch, &a, 0));
        cr_assert((a.tag == 7 || a.tag == 9) && th_check_u64(&a) == 0, "tag %llu", (unsigned long long)a.tag);
        seen7 += a.tag == 7;
        seen9 += a.tag == 9;
        th_ok(ndc_release(ch, &a));
    }
    cr_assert(seen7 == 1 && seen9 == 1, "tag 7 %d times, tag 9 %d times", seen7, seen9);
    th_expect(ndc_acquire(ch, &a, 0), -EAGAIN);
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

/* ---- several waiters ------------------------------------------------------------ */

/* A lock word naming this process while none of its threads holds it
 * (scribbled, or left by a process killed inside the lock after retiring
 * its own entry, whose entry this process then took) is taken over even
 * while two threads of the process wait for the lock: waiters are not
 * counted as holders, so they do not mistake each other for one. The gate
 * is closed, so that the threads' commits need the lock. */
static void *send_2s(void *p)
{
    struct inlock *s = p;
    atomic_store(&s->rc, th_send_u64(s->ch, 3, 8, 2 * SEC));
    atomic_store(&s->done, 1);
    return NULL;
}

Test(review_lock, two_waiters_on_a_word_naming_their_own_process, .timeout = 60)
{
    ndc_chan *ch = th_chan(4, 64);
    ndc_chan *other;
    th_ok(ndc_open_fd(&other, ndc_fd(ch), 0));
    atomic_store(&ch->ctrl->lock, other->me + 1);   /* a live peer, not holding it */
    atomic_store(&ch->ctrl->gate, 1);                /* repairing, as far as anyone can tell */
    struct inlock s[2] = { { .ch = ch }, { .ch = ch } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, send_2s, &s[i]), 0);
    int64_t end = th_now_ns() + 5 * SEC;
    while (!(atomic_load(&ch->ctrl->lock) & NDC__LOCK_WAITERS) && th_now_ns() < end)
        usleep(200);
    cr_assert(atomic_load(&ch->ctrl->lock) & NDC__LOCK_WAITERS, "the threads never waited");
    usleep(20 * 1000);   /* both past their spins, asleep in 1 ms slices */
    /* now the word names this process, and no thread of it holds the lock */
    atomic_store(&ch->ctrl->lock, ch->me + 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&s[0].rc), 0, "thread 0: %d (%s)", atomic_load(&s[0].rc),
                 ndc_strerror(atomic_load(&s[0].rc)));
    cr_assert_eq(atomic_load(&s[1].rc), 0, "thread 1: %d (%s)", atomic_load(&s[1].rc),
                 ndc_strerror(atomic_load(&s[1].rc)));
    cr_assert(atomic_load(&ch->ctrl->gate) == 0 && atomic_load(&ch->ctrl->lock) == 0, "gate %u lock %#x",
              atomic_load(&ch->ctrl->gate), atomic_load(&ch->ctrl->lock));
    struct ndc_array a;
    for (int i = 0; i < 2; i++) {
        th_ok(ndc_acquire(ch, &a, 0));
        cr_assert(a.tag == 3 && th_check_u64(&a) == 0, "tag %llu", (unsigned long long)a.tag);
        th_ok(ndc_release(ch, &a));
    }
    th_expect(ndc_acquire(ch, &a, 0), -EAGAIN);
    ndc_free(other);
    ndc_free(ch);
}

/* ---- many processes at once --------------------------------------------------- */

/* Fifty receivers open by name, take a loan each and are SIGKILLed while
 * eight others attach and detach in a loop (claiming entries, sweeping,
 * retiring the dead in ndc_free). Afterwards every loan is back, the only
 * process attached is this one, no entry is leaked (255 more handles fit,
 * the 256th is -EUSERS) and nobody saw an error. */
struct mass {
    _Atomic int loaned;
    _Atomic int stop;
    _Atomic int joins;
    _Atomic int bad;
    _Atomic int bad_code;
};

struct mass_arg {
    const char *name;
    struct mass *m;
};

static int mass_loaner(void *p)
{
    struct mass_arg *a = p;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ndc_chan *ch;
    int r = ndc_open(&ch, a->name, NDC_RDONLY);
    CK(r == 0, 1, "open: %d (%s)", r, ndc_strerror(r));
    struct ndc_array l;
    r = ndc_acquire(ch, &l, 10 * SEC);
    CK(r == 0, 2, "acquire: %d (%s)", r, ndc_strerror(r));
    atomic_fetch_add(&a->m->loaned, 1);
    for (;;)
        pause();
}

static int mass_joiner(void *p)
{
    struct mass_arg *a = p;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    while (!atomic_load(&a->m->stop)) {
        ndc_chan *ch;
        int r = ndc_open(&ch, a->name, 0);
        if (r == 0) {
            struct ndc_stat st;
            r = ndc_stat(ch, &st);
            ndc_free(ch);
        }
        if (r) {
            atomic_fetch_add(&a->m->bad, 1);
            atomic_store(&a->m->bad_code, r);
            fprintf(stderr, "joiner: %d (%s): %s\n", r, ndc_strerror(r), ndc_last_error());
        }
        atomic_fetch_add(&a->m->joins, 1);
    }
    return 0;
}

Test(review_mass, fifty_killed_while_others_join, .timeout = 120)
{
    enum { NLOAN = 50, NJOIN = 8, SLOTS = 64 };
    char name[128];
    snprintf(name, sizeof name, "%s", th_unique_name("mass"));
    ndc_chan *ch;
    th_ok(ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = SLOTS, .slot_bytes = 4096 }));
    for (int i = 0; i < SLOTS; i++)
        th_ok(th_send_u64(ch, (uint64_t)i, 8, 0));
    struct mass *m = th_shared(sizeof *m);
    struct mass_arg arg = { name, m };
    pid_t loaners[NLOAN], joiners[NJOIN];
    for (int i = 0; i < NJOIN; i++)
        joiners[i] = th_fork(mass_joiner, &arg);
    for (int i = 0; i < NLOAN; i++)
        loaners[i] = th_fork(mass_loaner, &arg);
    int64_t end = th_now_ns() + 30 * SEC;
    while (atomic_load(&m->loaned) < NLOAN && th_now_ns() < end)
        usleep(1000);
    cr_assert_eq(atomic_load(&m->loaned), NLOAN, "loans taken: %d", atomic_load(&m->loaned));
    for (int i = 0; i < NLOAN; i++)
        kill(loaners[i], SIGKILL);
    for (int i = 0; i < NLOAN; i++)
        waitpid(loaners[i], NULL, 0);
    usleep(300 * 1000);   /* joiners keep attaching over the dead */
    atomic_store(&m->stop, 1);
    for (int i = 0; i < NJOIN; i++)
        cr_assert_eq(th_wait(joiners[i], 30000), 0, "joiner %d", i);
    cr_assert_eq(atomic_load(&m->bad), 0, "%d joins failed, last %d (%s)", atomic_load(&m->bad),
                 atomic_load(&m->bad_code), ndc_strerror(atomic_load(&m->bad_code)));
    /* what the dead held comes back at the latest with the next sweep */
    struct ndc_array a;
    int64_t shape[1] = { 8 };
    ndc_array_init(&a, NDC_U64, 1, shape, NULL);
    int r = ndc_reserve(ch, &a, 200 * MS);
    cr_assert_eq(r, 0, "reserve after the loaners died: %d (%s)", r, ndc_strerror(r));
    th_ok(ndc_cancel(ch, &a));
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.loaned, 0, "loans still out: %u", st.loaned);
    cr_assert_eq(st.free + st.ready, SLOTS);
    cr_assert_eq(st.ready, SLOTS - NLOAN, "ready %u", st.ready);
    cr_assert_eq(st.attached, 1, "attached %u", st.attached);
    cr_assert_eq(st.stale, 1);
    /* no entry leaked */
    static ndc_chan *h[NDC_MAX_PEERS];
    int n = 0;
    while (n < NDC_MAX_PEERS && (r = ndc_open(&h[n], name, 0)) == 0)
        n++;
    cr_assert_eq(n, NDC_MAX_PEERS - 1, "only %d more handles fit: %d (%s)", n, r, ndc_strerror(r));
    cr_assert_eq(r, -EUSERS, "the 257th: %d (%s)", r, ndc_strerror(r));
    for (int i = 0; i < n; i++)
        ndc_free(h[i]);
    ndc_free(ch);
    th_ok(ndc_unlink(name));
}

/* ---- ndc_open_wait -------------------------------------------------------------- */

static void on_usr1(int sig) { (void)sig; }

struct poke { pthread_t target; int64_t after; };

static void *poke_later(void *p)
{
    struct poke *k = p;
    usleep((useconds_t)(k->after / 1000));
    pthread_kill(k->target, SIGUSR1);
    return NULL;
}

/* A caught signal ends the wait with -EINTR (SA_RESTART or not), soon; a
 * timeout ends it with -ETIMEDOUT at the deadline, not before. */
Test(review_create, open_wait_eintr_and_timeout, .timeout = 30)
{
    struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_RESTART }, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old);
    char name[128];
    snprintf(name, sizeof name, "%s", th_unique_name("waitintr"));
    struct poke k = { pthread_self(), 150 * MS };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, poke_later, &k), 0);
    ndc_chan *ch;
    int64_t t0 = th_now_ns();
    int r = ndc_open_wait(&ch, name, 0, NDC_FOREVER);
    int64_t dt = th_now_ns() - t0;
    pthread_join(t, NULL);
    sigaction(SIGUSR1, &old, NULL);
    cr_assert_eq(r, -EINTR, "open_wait interrupted: %d (%s)", r, ndc_strerror(r));
    cr_assert_lt(dt, 1 * SEC, "returned after %lld ms", (long long)(dt / MS));

    t0 = th_now_ns();
    r = ndc_open_wait(&ch, name, 0, 250 * MS);
    dt = th_now_ns() - t0;
    cr_assert_eq(r, -ETIMEDOUT, "%d (%s)", r, ndc_strerror(r));
    cr_assert_geq(dt, 250 * MS, "gave up after %lld ms", (long long)(dt / MS));
    cr_assert_lt(dt, 400 * MS, "gave up after %lld ms", (long long)(dt / MS));
    th_expect(ndc_open_wait(&ch, name, 0, 0), -ENOENT);
}

static int create_later(void *p)
{
    const char *name = p;
    usleep(150 * 1000);
    ndc_chan *ch;
    int r = ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 1, .slot_bytes = 64 });
    CK(r == 0, 1, "create: %d (%s)", r, ndc_strerror(r));
    CK(th_send_u64(ch, 42, 8, SEC) == 0, 2, "send");
    usleep(500 * 1000);
    ndc_free(ch);
    return 0;
}

/* A name of the longest length (NDC_NAME_MAX with the '/'): waited for,
 * seen soon after it is linked, opened, unlinked. */
Test(review_create, open_wait_longest_name, .timeout = 30)
{
    char name[NDC_NAME_MAX + 1];
    const char *u = th_unique_name("longest");
    size_t n = strlen(u);
    memcpy(name, u, n);
    memset(name + n, 'z', NDC_NAME_MAX - n);
    name[NDC_NAME_MAX] = 0;
    pid_t c = th_fork(create_later, name);
    ndc_chan *ch;
    int r = ndc_open_wait(&ch, name, NDC_RDONLY, 5 * SEC);
    int64_t opened = th_now_ns();
    cr_assert_eq(r, 0, "open_wait: %d (%s): %s", r, ndc_strerror(r), ndc_last_error());
    struct ndc_array a;
    th_ok(ndc_acquire(ch, &a, 2 * SEC));
    cr_assert_eq(a.tag, 42);
    cr_assert_lt(th_now_ns() - opened, 300 * MS);
    th_ok(ndc_release(ch, &a));
    cr_assert_eq(th_wait(c, 5000), 0);
    ndc_free(ch);
    th_ok(ndc_unlink(name));
    th_expect(ndc_unlink(name), -ENOENT);
}

/* The peer table full of a process that dies holding loans in many of its
 * entries: until it dies, one more is -EUSERS; after, every entry can be
 * claimed again (each claim retires a dead entry under the lock), its loans
 * came back, and nothing is counted twice. */
struct full {
    _Atomic int ready;
};

static int fill_table(void *p)
{
    void **a = p;
    const char *name = a[0];
    struct full *f = a[1];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    static ndc_chan *h[NDC_MAX_PEERS];
    int n = 0, r;
    while ((r = ndc_open(&h[n], name, 0)) == 0)
        n++;
    CK(r == -EUSERS, 1, "open %d: %d (%s)", n, r, ndc_strerror(r));
    CK(n == NDC_MAX_PEERS - 1, 2, "%d handles", n);
    for (int i = 0; i < 4; i++) {   /* loans under four of the entries */
        struct ndc_array l;
        CK(ndc_acquire(h[i * 60], &l, SEC) == 0, 3, "acquire");
    }
    atomic_store(&f->ready, 1);
    for (;;)
        pause();
}

Test(review_mass, full_table_of_the_dead_is_reclaimed, .timeout = 120)
{
    char name[128];
    snprintf(name, sizeof name, "%s", th_unique_name("full"));
    ndc_chan *ch;
    th_ok(ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 8, .slot_bytes = 64 }));
    for (int i = 0; i < 8; i++)
        th_ok(th_send_u64(ch, (uint64_t)i, 8, 0));
    struct full *f = th_shared(sizeof *f);
    void *args[2] = { name, f };
    pid_t c = th_fork(fill_table, args);
    int64_t end = th_now_ns() + 30 * SEC;
    while (!atomic_load(&f->ready) && th_now_ns() < end)
        usleep(1000);
    cr_assert(atomic_load(&f->ready), "the child never filled the table");
    ndc_chan *h;
    th_expect(ndc_open(&h, name, 0), -EUSERS);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.attached, NDC_MAX_PEERS);
    cr_assert_eq(st.loaned, 4);
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    st = th_stat(ch);
    cr_assert_eq(st.attached, 1, "attached %u after the child died", st.attached);
    static ndc_chan *hs[NDC_MAX_PEERS];
    int n = 0, r;
    while (n < NDC_MAX_PEERS && (r = ndc_open(&hs[n], name, 0)) == 0)
        n++;
    cr_assert_eq(n, NDC_MAX_PEERS - 1, "%d handles: %d (%s)", n, r, ndc_strerror(r));
    cr_assert_eq(r, -EUSERS);
    st = th_stat(ch);
    cr_assert_eq(st.loaned, 0, "loans of the dead: %u", st.loaned);
    cr_assert_eq(st.ready, 4);
    cr_assert_eq(st.free, 4);
    cr_assert_eq(st.attached, NDC_MAX_PEERS);
    cr_assert_eq(ch->ctrl->gone_receivers, 4, "departed receivers counted %u", ch->ctrl->gone_receivers);
    for (int i = 0; i < n; i++)
        ndc_free(hs[i]);
    st = th_stat(ch);
    cr_assert_eq(st.attached, 1);
    ndc_free(ch);
    th_ok(ndc_unlink(name));
}

/* ---- a holder killed in ndc_free ------------------------------------------------ */

/* ndc_free retires its own entry under the queue lock, and with it (as
 * every peer it sees) the dead. A process killed after its own entry was
 * cleared to UNUSED but before the unlock left a lock word naming an
 * UNUSED entry with a free byte. The next process to attach took that
 * entry without touching the lock (an UNUSED entry holds nothing) and from
 * then on the word named it, alive: every other process waited for it to
 * "let go" of a lock it never held (for ever in ndc_commit/ndc_release),
 * and a receiver waiting on an empty channel never takes the lock, so
 * sender and receiver waited on each other for good. (A joiner killed in
 * its claim, between the retirement and LIVE, did the same.) The word must
 * only ever name an entry that is not UNUSED: then whoever attaches in its
 * place claims it under the lock, which takes the dead holder's word over. */
struct leave_shared {
    _Atomic int ready, go, idx;
    _Atomic int helpers_ready;
};

static int many_live_handles(void *p)
{
    void **a = p;
    const char *name = a[0];
    struct leave_shared *sh = a[1];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    static ndc_chan *h[NDC_MAX_PEERS];
    for (int i = 0; i < NDC_MAX_PEERS - 8; i++)
        CK(ndc_open(&h[i], name, NDC_RDONLY) == 0, 1, "open %d", i);
    atomic_store(&sh->helpers_ready, 1);
    for (;;)
        pause();
}

static int free_on_go(void *p)
{
    void **a = p;
    const char *name = a[0];
    struct leave_shared *sh = a[1];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ndc_chan *ch;
    CK(ndc_open(&ch, name, 0) == 0, 1, "open");
    atomic_store(&sh->idx, (int)ch->me);
    atomic_store(&sh->ready, 1);
    while (!atomic_load(&sh->go))
        ;
    ndc_free(ch);
    for (;;)
        pause();
}

static int receive_for_a_while(void *p)
{
    void **a = p;
    const char *name = a[0];
    struct leave_shared *sh = a[1];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ndc_chan *ch;
    CK(ndc_open(&ch, name, NDC_RDONLY) == 0, 1, "open");
    atomic_store(&sh->idx, (int)ch->me);
    atomic_store(&sh->ready, 1);
    struct ndc_array a2;
    int r = ndc_acquire(ch, &a2, 5 * SEC);
    CK(r == 0, 2, "acquire: %d (%s)", r, ndc_strerror(r));
    return 0;
}

Test(review_lock, holder_killed_in_free_leaves_no_word_on_an_unused_entry, .timeout = 120)
{
    char name[128];
    snprintf(name, sizeof name, "%s", th_unique_name("leavekill"));
    ndc_chan *ch;
    th_ok(ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 4, .slot_bytes = 64 }));
    struct leave_shared *sh = th_shared(sizeof *sh);
    void *args[2] = { name, sh };
    /* many live entries: ndc_free asks the kernel about each while it
     * holds the lock, which widens the moment to be killed in */
    pid_t helper = th_fork(many_live_handles, args);
    int64_t end = th_now_ns() + 30 * SEC;
    while (!atomic_load(&sh->helpers_ready) && th_now_ns() < end)
        usleep(1000);
    cr_assert(atomic_load(&sh->helpers_ready));
    int bad = -1, tries = 0, inside = 0;
    uint64_t rnd = 12345;
    for (end = th_now_ns() + 20 * SEC; tries < 400 && inside < 10 && th_now_ns() < end && bad < 0; tries++) {
        atomic_store(&sh->ready, 0);
        atomic_store(&sh->go, 0);
        pid_t x = th_fork(free_on_go, args);
        while (!atomic_load(&sh->ready))
            usleep(100);
        int idx = atomic_load(&sh->idx);
        rnd = th_mix(rnd);
        atomic_store(&sh->go, 1);
        for (volatile uint64_t spin = rnd % 60000; spin; spin--)
            ;
        kill(x, SIGKILL);
        waitpid(x, NULL, 0);
        uint32_t w = atomic_load(&ch->ctrl->lock) & ~NDC__LOCK_WAITERS;
        inside += w == (uint32_t)idx + 1;
        if (w == (uint32_t)idx + 1 && atomic_load(&ch->peers[idx].state) == NDC__PEER_UNUSED)
            bad = idx;
        else
            ndc__peer_sweep(ch, &(struct ndc__deadline){ .timeout_ns = SEC });   /* tidy up */
    }
    if (bad >= 0) {
        /* what follows: a receiver attaches in the dead holder's entry and
         * waits; a sender cannot get the lock to send it anything */
        atomic_store(&sh->ready, 0);
        pid_t r = th_fork(receive_for_a_while, args);
        while (!atomic_load(&sh->ready))
            usleep(100);
        int got = atomic_load(&sh->idx);
        usleep(20 * 1000);
        int s = th_send_u64(ch, 1, 8, 500 * MS);
        th_wait(r, 6000);
        cr_assert(0, "try %d: a process killed in ndc_free left the lock word naming its entry %d, cleared to UNUSED; a receiver attached in entry %d; a send then: %d (%s)",
                  tries, bad, got, s, ndc_strerror(s));
    }
    cr_log_info("%d of %d processes were killed holding the lock in ndc_free", inside, tries);
    kill(helper, SIGKILL);
    waitpid(helper, NULL, 0);
    th_ok(th_send_u64(ch, 1, 8, SEC));
    ndc_free(ch);
    th_ok(ndc_unlink(name));
}

/* A process forked while one of its threads was rejoining an inherited
 * handle (itself a fork child, its thread waiting in the join for the
 * queue lock) inherited the handle's "joining" mark with no thread behind
 * it: its own first call on the handle spun for ever. Here the join waits
 * because the only entry left was left by a process that is gone (its
 * claim needs the lock) and this process holds the lock. */
struct rejoin_shared {
    _Atomic int helpers_ready;
    _Atomic int t_rc, t_done;
};

static void *rejoin_in_thread(void *p)
{
    void **a = p;
    ndc_chan *ch = a[0];
    struct rejoin_shared *sh = a[1];
    struct ndc_array x;
    int64_t shape[1] = { 1 };
    ndc_array_init(&x, NDC_U8, 1, shape, NULL);
    atomic_store(&sh->t_rc, ndc_reserve(ch, &x, 0));
    atomic_store(&sh->t_done, 1);
    return NULL;
}

static int first_call_returns(void *p)
{
    ndc_chan *ch = p;
    struct ndc_array x;
    int64_t shape[1] = { 1 };
    ndc_array_init(&x, NDC_U8, 1, shape, NULL);
    int r = ndc_reserve(ch, &x, 0);   /* any answer will do, but an answer */
    (void)r;
    return 0;
}

static int fork_while_rejoining(void *p)
{
    void **a = p;
    ndc_chan *ch = a[0];
    struct rejoin_shared *sh = a[1];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pthread_t t;
    CK(pthread_create(&t, NULL, rejoin_in_thread, a) == 0, 1, "thread");
    int64_t end = th_now_ns() + 5 * SEC;
    while (atomic_load(&ch->joining) == 0 && th_now_ns() < end)
        usleep(100);
    CK(atomic_load(&ch->joining) != 0, 2, "the thread never rejoined");
    usleep(50 * 1000);   /* in the claim, waiting for the lock */
    CK(!atomic_load(&sh->t_done), 3, "the rejoin did not wait: %d", atomic_load(&sh->t_rc));
    pid_t g = th_fork(first_call_returns, ch);
    int code = th_wait(g, 3000);
    pthread_join(t, NULL);
    CK(code == 0, 4, "the grandchild's first call on the handle never returned (%d)", code);
    return 0;
}

Test(review_fork, fork_during_a_rejoin_does_not_hang_the_child, .timeout = 60)
{
    char name[128];
    snprintf(name, sizeof name, "%s", th_unique_name("rejoin"));
    ndc_chan *ch;
    th_ok(ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 2, .slot_bytes = 64 }));
    struct rejoin_shared *sh = th_shared(sizeof *sh);
    void *args[2] = { name, sh };
    /* every entry but one live (this process and the helper's) */
    struct leave_shared *lh = th_shared(sizeof *lh);
    void *hargs[2] = { name, lh };
    pid_t helper = th_fork(many_live_handles, hargs);
    int64_t end = th_now_ns() + 30 * SEC;
    while (!atomic_load(&lh->helpers_ready) && th_now_ns() < end)
        usleep(1000);
    cr_assert(atomic_load(&lh->helpers_ready));
    static ndc_chan *more[NDC_MAX_PEERS];
    int n = 0;
    while (ndc_open(&more[n], name, 0) == 0)
        n++;
    cr_assert_gt(n, 0);
    /* the last one leaves: its entry is free to claim, under the lock */
    uint32_t last = more[--n]->me;
    ndc_free(more[n]);
    atomic_store(&ch->peers[last].state, NDC__PEER_GONE);
    struct ndc__deadline dl = { .timeout_ns = SEC };
    th_ok(ndc__peer_lock(ch, &dl));
    args[0] = ch;
    pid_t a = th_fork(fork_while_rejoining, args);
    int code = th_wait(a, 20000);
    ndc__peer_unlock(ch);
    kill(helper, SIGKILL);
    waitpid(helper, NULL, 0);
    for (int i = 0; i < n; i++)
        ndc_free(more[i]);
    ndc_free(ch);
    ndc_unlink(name);
    cr_assert_eq(code, 0, "child: %d", code);
}

/* ndc_stat on a handle a fork child inherited and has not used yet: the
 * child has no liveness description of its own (closed at fork, opened at
 * the rejoin, which ndc_stat does not do). It probes through the segment's
 * description instead, so a monitor process forked to watch a channel
 * through ndc_stat alone sees a peer die. */
static int recv_long(void *p)
{
    ndc_chan *ch = p;
    struct ndc_array a;
    ndc_acquire(ch, &a, 30 * SEC);
    return 0;
}

static int monitor_stat(void *p)
{
    ndc_chan *ch = p;
    struct ndc_stat st;
    CK(ndc_stat(ch, &st) == 0, 1, "stat");
    CK(st.receivers_waiting == 0, 2, "a dead receiver counted waiting (%u; attached %u)",
       st.receivers_waiting, st.attached);
    return 0;
}

Test(review_fork, stat_in_a_fork_child_sees_the_dead, .timeout = 60)
{
    ndc_chan *ch = th_chan(2, 64);
    pid_t r = th_fork(recv_long, ch);
    int64_t end = th_now_ns() + 10 * SEC;
    while (th_stat(ch).receivers_waiting == 0 && th_now_ns() < end)
        usleep(1000);
    cr_assert_eq(th_stat(ch).receivers_waiting, 1);
    kill(r, SIGKILL);
    waitpid(r, NULL, 0);
    cr_assert_eq(th_stat(ch).receivers_waiting, 0, "this process sees it dead");
    pid_t m = th_fork(monitor_stat, ch);
    cr_assert_eq(th_wait(m, 10000), 0, "the forked monitor");
    ndc_free(ch);
}
