/*
 * Waiting on many channels and pollable fds, between real processes:
 *   wait_any  arguments, timeouts, who is ready; entries whose stream was
 *             closed or whose every sender was SIGKILLed; the reserve
 *             side; 1000 channels in one call (one sleep, and the scan
 *             fallbacks); a blocked acquirer never loses its wake-up to a
 *             wait-any waiter on the same channel;
 *   notify    the fd in poll, select and epoll (level and edge), end of
 *             stream, a killed sender, the reserve side, a fork child's
 *             own fd; 100k arrays between two processes where the
 *             receiver waits only in epoll on the fd, for each mechanism.
 * Every wait is bounded: a missed wake-up fails, it does not hang.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/io_uring.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan.h"   /* the control block: watchers[] */

/* internal switches (notify.h) */
extern int ndc__notify_force;
extern int ndc__waitany_force;
int ndc__notify_mode(ndc_chan *ch, uint32_t what);
enum { AUTO = 0, URING = 1, THREAD = 2 };

/* Every child: die with the test, so that a failed assertion in the
 * parent never leaves a child waiting for a flag that will not come. */
static void die_with_parent(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(99);
}

static int take_one(ndc_chan *ch, uint64_t *tag)
{
    struct ndc_array a;
    int r = ndc_acquire(ch, &a, 0);
    if (r)
        return r;
    if (tag)
        *tag = a.tag;
    r = th_check_u64(&a);
    int rr = ndc_release(ch, &a);
    return r ? -EBADMSG : rr;
}

static int fd_readable(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int n = poll(&p, 1, timeout_ms);
    return n == 1 && (p.revents & POLLIN);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t median(int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    return v[n / 2];
}

/* A wake-up that is missed is found at the next 40 ms look for dead peers:
 * slow, not lost. The median wake-up says which: a few ms at most under
 * load when the poster wakes the waiter, 20 ms and more when it does not. */
#define WAKE_MEDIAN_MAX (12 * MS)

/* ---- wait_any: arguments and one process ------------------------------------ */

Test(wait_any, arguments_and_timeouts, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    ndc_chan *chans[2] = { ch, ch };
    uint32_t what[2] = { NDC_WAIT_ACQUIRE, NDC_WAIT_RESERVE };
    int32_t ready[2] = { 77, 77 };
    th_expect(ndc_wait_any(chans, what, 2, NULL, 0), -EINVAL);
    th_expect(ndc_wait_any(NULL, what, 2, ready, 0), -EINVAL);
    th_expect(ndc_wait_any(chans, what, NDC_WAIT_MAX + 1, ready, 0), -EINVAL);
    th_expect(ndc_wait_any(chans, what, 1, ready, -2), -EINVAL);
    uint32_t bad[1] = { NDC_WAIT_ACQUIRE | NDC_WAIT_RESERVE };
    th_expect(ndc_wait_any(chans, bad, 1, ready, 0), -EINVAL);
    ndc_chan *nul[1] = { NULL };
    th_expect(ndc_wait_any(nul, what, 1, ready, 0), -EINVAL);
    uint32_t skip[1] = { 0 };
    th_expect(ndc_wait_any(nul, skip, 1, ready, 0), -EAGAIN);   /* a skipped entry may be NULL */
    /* empty channel: acquire would wait, reserve would not */
    th_expect(ndc_wait_any(chans, what, 1, ready, 0), -EAGAIN);
    cr_assert_eq(ready[0], 77, "ready[] written on failure");
    int64_t t0 = th_now_ns();
    th_expect(ndc_wait_any(chans, what, 1, ready, 30 * MS), -ETIMEDOUT);
    int64_t el = th_now_ns() - t0;
    cr_assert(el >= 30 * MS && el < 2 * SEC, "a 30 ms wait took %lld ns", (long long)el);
    th_expect(ndc_wait_any(chans, what, 2, ready, 0), 1);
    cr_assert(ready[0] == 0 && ready[1] == 1, "ready = {%d, %d}", ready[0], ready[1]);
    /* full: the other way round */
    th_ok(th_send_u64(ch, 1, 4, 0));
    th_ok(th_send_u64(ch, 2, 4, 0));
    th_expect(ndc_wait_any(chans, what, 2, ready, NDC_FOREVER), 1);
    cr_assert(ready[0] == 1 && ready[1] == 0, "ready = {%d, %d}", ready[0], ready[1]);
    /* closed: acquire is ready while arrays remain, reserve says -EPIPE */
    th_ok(ndc_close(ch));
    th_expect(ndc_wait_any(chans, what, 2, ready, 0), 2);
    cr_assert(ready[0] == 1 && ready[1] == -EPIPE, "ready = {%d, %d}", ready[0], ready[1]);
    th_ok(take_one(ch, NULL));
    th_ok(take_one(ch, NULL));
    th_expect(ndc_wait_any(chans, what, 2, ready, 0), 2);
    cr_assert(ready[0] == -EPIPE && ready[1] == -EPIPE, "ready = {%d, %d}", ready[0], ready[1]);
    ndc_free(ch);
}

Test(wait_any, receive_only_reserve_is_eperm, .timeout = 30)
{
    const char *name = th_unique_name("wa_ro");
    ndc_chan *ch, *ro;
    th_ok(ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 2, .slot_bytes = 4096 }));
    th_ok(ndc_open(&ro, name, NDC_RDONLY));
    ndc_chan *chans[1] = { ro };
    uint32_t what[1] = { NDC_WAIT_RESERVE };
    int32_t ready[1];
    th_expect(ndc_wait_any(chans, what, 1, ready, 0), 1);
    cr_assert_eq(ready[0], -EPERM);
    th_expect(ndc_notify_fd(ro, NDC_WAIT_RESERVE), -EPERM);
    ndc_free(ro);
    ndc_free(ch);
    ndc_unlink(name);
}

/* ---- wait_any across processes ----------------------------------------------- */

struct sender_arg {
    ndc_chan *ch;
    int64_t delay_ms;
    uint64_t tag;
    int close_after;     /* ndc_close, then exit */
    int hang_after;      /* pause() after sending, to be killed */
    _Atomic int *sent;   /* set once sent */
    _Atomic int *done;   /* stay attached until set: a sender that exits is a sender gone */
    _Atomic int64_t *sent_at;   /* when the commit was about to start */
};

static int sender_main(void *p)
{
    die_with_parent();
    struct sender_arg *a = p;
    usleep((useconds_t)a->delay_ms * 1000);
    if (a->sent_at)
        atomic_store(a->sent_at, th_now_ns());
    CK(th_send_u64(a->ch, a->tag, 4, 5 * SEC) == 0, 1, "send");
    if (a->sent)
        atomic_store(a->sent, 1);
    if (a->close_after)
        CK(ndc_close(a->ch) == 0, 2, "close");
    if (a->hang_after)
        for (;;)
            pause();
    while (a->done && !atomic_load(a->done))
        usleep(1000);
    return 0;
}

/* Wait until the child flagged `flag` (bounded). */
static void await_flag(_Atomic int *flag)
{
    int64_t until = th_now_ns() + 5 * SEC;
    while (!atomic_load(flag) && th_now_ns() < until)
        usleep(1000);
    cr_assert(atomic_load(flag), "the child did not get there");
}

/* After a peer attached or left (a close of the segment file: a possible
 * death), the fd may turn readable without news, once at the close and
 * once at the second look 20 ms later; a caller arms again. Arm until it
 * says 0 and the fd stays quiet. */
static void settle(ndc_chan *ch, int fd)
{
    for (int i = 0; i < 20; i++) {
        int r = ndc_notify_arm(ch, NDC_WAIT_ACQUIRE);
        cr_assert_eq(r, 0, "arm = %d (%s)", r, ndc_strerror(r));
        if (!fd_readable(fd, 60))
            return;
    }
    cr_assert_fail("the fd stays readable with nothing to take");
}

Test(wait_any, wakes_on_the_right_channel, .timeout = 60)
{
    enum { N = 8 };
    ndc_chan *chans[N];
    uint32_t what[N];
    for (int i = 0; i < N; i++) {
        chans[i] = th_chan(2, 4096);
        what[i] = NDC_WAIT_ACQUIRE;
    }
    _Atomic int64_t *sent_at = th_shared(sizeof *sent_at);
    _Atomic int *done = th_shared(sizeof *done);
    int64_t lat[40];
    pid_t pids[40];
    for (int round = 0; round < 40; round++) {
        int k = (round * 5 + 3) % N;
        /* senders stay: one that left would be a channel whose senders are gone */
        struct sender_arg a = { .ch = chans[k], .delay_ms = 10, .tag = (uint64_t)round,
                                .sent_at = sent_at, .done = done };
        pid_t pid = pids[round] = th_fork(sender_main, &a);
        (void)pid;
        int32_t ready[N];
        int r = ndc_wait_any(chans, what, N, ready, 5 * SEC);
        lat[round] = th_now_ns() - atomic_load(sent_at);
        cr_assert_eq(r, 1, "round %d: wait_any = %d (%s)", round, r, ndc_strerror(r));
        for (int i = 0; i < N; i++)
            cr_assert_eq(ready[i], i == k, "round %d: ready[%d] = %d, sent on %d", round, i, ready[i], k);
        uint64_t tag;
        th_ok(take_one(chans[k], &tag));
        cr_assert_eq(tag, (uint64_t)round);
    }
    atomic_store(done, 1);
    for (int round = 0; round < 40; round++)
        cr_assert_eq(th_wait(pids[round], 5000), 0);
    int64_t med = median(lat, 40);
    cr_assert_lt(med, WAKE_MEDIAN_MAX, "median wake-up %.1f ms: the posts do not wake the waiter", med / 1e6);
    for (int i = 0; i < N; i++)
        ndc_free(chans[i]);
}

/* Entries end three ways at once: closed streams, senders SIGKILLed, and
 * live ones that never send. Each must be reported as what an acquire
 * would say, promptly, and the live ones never. */
Test(wait_any, closed_and_killed_peers, .timeout = 60)
{
    enum { N = 12 };
    ndc_chan *chans[N];
    uint32_t what[N];
    pid_t pids[N];
    _Atomic int *sent = th_shared(sizeof(_Atomic int) * N);
    /* i % 3: 0 closes its stream, 1 is killed, 2 stays alive and idle */
    for (int i = 0; i < N; i++) {
        chans[i] = th_chan(2, 4096);
        what[i] = NDC_WAIT_ACQUIRE;
        struct sender_arg a = { .ch = chans[i], .tag = (uint64_t)i, .close_after = i % 3 == 0,
                                .hang_after = i % 3 != 0, .sent = &sent[i] };
        pids[i] = th_fork(sender_main, &a);
    }
    /* take the one array each sent: what remains is the end or silence */
    for (int i = 0; i < N; i++) {
        int64_t until = th_now_ns() + 5 * SEC;
        while (!atomic_load(&sent[i]) && th_now_ns() < until)
            usleep(1000);
        cr_assert(atomic_load(&sent[i]), "sender %d did not send", i);
        struct ndc_array a;
        th_ok(ndc_acquire(chans[i], &a, 5 * SEC));
        th_ok(ndc_release(chans[i], &a));
    }
    for (int i = 1; i < N; i += 3)
        kill(pids[i], SIGKILL);
    int32_t got[N] = { 0 };
    int pending = 2 * N / 3;
    int64_t t0 = th_now_ns();
    while (pending > 0) {
        int32_t ready[N];
        int r = ndc_wait_any(chans, what, N, ready, 3 * SEC);
        cr_assert_gt(r, 0, "wait_any = %d (%s) with %d entries still to end", r, ndc_strerror(r), pending);
        for (int i = 0; i < N; i++) {
            if (!ready[i])
                continue;
            cr_assert_eq(i % 3 == 2, 0, "idle entry %d reported %d", i, ready[i]);
            int want = i % 3 == 0 ? -EPIPE : -EOWNERDEAD;
            cr_assert_eq(ready[i], want, "entry %d: %d, want %d", i, ready[i], want);
            /* what the call says too (timeout 0 says -EAGAIN for the dead: see the header) */
            struct ndc_array a;
            if (i % 3 == 0)
                th_expect(ndc_acquire(chans[i], &a, 0), -EPIPE);
            else
                th_expect(ndc_acquire(chans[i], &a, 50 * MS), -EOWNERDEAD);
            got[i] = ready[i];
            what[i] = 0;   /* done with it */
            pending--;
        }
    }
    cr_assert_lt(th_now_ns() - t0, 2 * SEC, "the deaths took too long to see");
    for (int i = 0; i < N; i++) {
        if (i % 3 == 2) {
            cr_assert_eq(got[i], 0);
            kill(pids[i], SIGKILL);
        }
        th_wait(pids[i], 5000);
        ndc_free(chans[i]);
    }
}

struct releaser_arg {
    ndc_chan *ch;
    _Atomic int *done;   /* stay attached until set: a receiver that exits is a receiver gone */
};

static int releaser_main(void *p)
{
    die_with_parent();
    struct releaser_arg *r = p;
    usleep(20000);
    struct ndc_array a;
    CK(ndc_acquire(r->ch, &a, 5 * SEC) == 0, 1, "acquire");
    CK(ndc_release(r->ch, &a) == 0, 2, "release");
    while (r->done && !atomic_load(r->done))
        usleep(1000);
    return 0;
}

Test(wait_any, reserve_side_wakes, .timeout = 30)
{
    ndc_chan *full = th_chan(1, 4096), *idle = th_chan(1, 4096);
    th_ok(th_send_u64(full, 1, 4, 0));
    th_ok(th_send_u64(idle, 1, 4, 0));
    ndc_chan *chans[2] = { idle, full };
    uint32_t what[2] = { NDC_WAIT_RESERVE, NDC_WAIT_RESERVE };
    int32_t ready[2];
    th_expect(ndc_wait_any(chans, what, 2, ready, 0), -EAGAIN);
    struct releaser_arg ra = { .ch = full };
    pid_t pid = th_fork(releaser_main, &ra);
    th_expect(ndc_wait_any(chans, what, 2, ready, 5 * SEC), 1);
    cr_assert(ready[0] == 0 && ready[1] == 1);
    th_ok(th_send_u64(full, 2, 4, 0));
    cr_assert_eq(th_wait(pid, 5000), 0);
    ndc_free(full);
    ndc_free(idle);
}

/* A blocked acquirer and a wait-any waiter sleep on one word; the waiter
 * went to sleep first. One array comes: the acquirer must get it at once,
 * not at its next 40 ms look (the wake-up must not go to the waiter only). */
struct blocked {
    ndc_chan *ch;
    _Atomic int phase;
    int rc;
    int64_t got_at;
};

static void *wait_any_thread(void *p)
{
    struct blocked *b = p;
    ndc_chan *chans[1] = { b->ch };
    uint32_t what[1] = { NDC_WAIT_ACQUIRE };
    int32_t ready[1];
    ndc_wait_any(chans, what, 1, ready, 3 * SEC);
    return NULL;
}

static void *acquire_thread(void *p)
{
    struct blocked *b = p;
    struct ndc_array a;
    b->rc = ndc_acquire(b->ch, &a, 3 * SEC);
    b->got_at = th_now_ns();
    if (b->rc == 0)
        ndc_release(b->ch, &a);
    return NULL;
}

/* The acquirer goes to sleep for a 40 ms slice; 5 ms into it one array
 * comes. Woken, it has it at once; not woken (the wake-up went to the
 * wait-any waiter only), it finds it at the end of its slice, ~35 ms on. */
Test(wait_any, never_steals_an_acquirers_wakeup, .timeout = 120)
{
    int late = 0;
    for (int round = 0; round < 20; round++) {
        ndc_chan *ch = th_chan(2, 4096);
        ndc_set_spin(ch, -1);   /* straight to sleep: the order of sleepers is the test */
        struct blocked b = { .ch = ch };
        pthread_t w, a;
        pthread_create(&w, NULL, wait_any_thread, &b);
        usleep(5000);           /* the wait-any waiter sleeps first */
        pthread_create(&a, NULL, acquire_thread, &b);
        usleep(5000);
        int64_t sent_at = th_now_ns();
        th_ok(th_send_u64(ch, 7, 4, 0));
        pthread_join(a, NULL);
        cr_assert_eq(b.rc, 0, "round %d: acquire = %d (%s)", round, b.rc, ndc_strerror(b.rc));
        late += b.got_at - sent_at > 25 * MS;
        th_ok(ndc_close(ch));   /* ends the wait-any waiter's wait if the acquirer was first */
        pthread_join(w, NULL);
        ndc_free(ch);
    }
    cr_assert_leq(late, 4, "%d of 20 acquirers were woken late: their wake-up went to the wait-any waiter",
                  late);
}

static void raise_nofile(rlim_t want);

/* A caught signal ends the sleep with -EINTR, in futex_waitv (few
 * entries) and in the io_uring sleep (over 128). */
static void on_signal(int sig) { (void)sig; }

struct poker {
    pthread_t target;
    int64_t after_ns;
    _Atomic int stop;
};

/* A signal that lands while the caller is between sleeps (counting itself
 * in, looking for the dead) interrupts nothing, as for any call: poke
 * again every 20 ms until the call returned. */
static void *poke_main(void *p)
{
    struct poker *k = p;
    struct timespec ts = { 0, k->after_ns };
    while (!atomic_load(&k->stop)) {
        nanosleep(&ts, NULL);
        if (!atomic_load(&k->stop))
            pthread_kill(k->target, SIGUSR1);
        ts.tv_nsec = 20 * MS;
    }
    return NULL;
}

static void interrupted(uint32_t n)
{
    raise_nofile(4 * n + 64);
    struct sigaction sa = { .sa_handler = on_signal }, old;   /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, &old);
    ndc_chan **chans = calloc(n, sizeof *chans);
    uint32_t *what = calloc(n, sizeof *what);
    int32_t *ready = calloc(n, sizeof *ready);
    for (uint32_t i = 0; i < n; i++) {
        chans[i] = th_chan(1, 4096);
        what[i] = NDC_WAIT_ACQUIRE;
    }
    struct poker k = { .target = pthread_self(), .after_ns = 50 * MS };
    pthread_t t;
    pthread_create(&t, NULL, poke_main, &k);
    int64_t t0 = th_now_ns();
    int r = ndc_wait_any(chans, what, n, ready, 5 * SEC);
    atomic_store(&k.stop, 1);
    pthread_join(t, NULL);
    cr_assert_eq(r, -EINTR, "wait_any = %d (%s)", r, ndc_strerror(r));
    cr_assert_lt(th_now_ns() - t0, 2 * SEC);
    /* and nothing of the sleep is left counted in */
    for (uint32_t i = 0; i < n; i++)
        cr_assert(atomic_load(&chans[i]->ctrl->watchers[1]) == 0 &&
                  atomic_load(&chans[i]->ctrl->sleepers[1]) == 0, "channel %u still counts a waiter", i);
    sigaction(SIGUSR1, &old, NULL);
    for (uint32_t i = 0; i < n; i++)
        ndc_free(chans[i]);
    free(chans);
    free(what);
    free(ready);
}

Test(wait_any, signal_is_eintr, .timeout = 60) { interrupted(4); }
Test(wait_any, signal_is_eintr_over_128, .timeout = 60) { interrupted(300); }

/* ---- 1000 channels -------------------------------------------------------- */

enum { MANY = 1000, MANY_ROUNDS = 300 };

struct many {
    ndc_chan **chans;
    ndc_chan *reply;
    int rounds;
    _Atomic int64_t *sent_at;
};

static int many_sender_main(void *p)
{
    die_with_parent();
    struct many *m = p;
    for (int round = 0; round < m->rounds; round++) {
        int k = (int)(th_mix((uint64_t)round) % MANY);
        usleep(2000);   /* the receiver asleep by then */
        atomic_store(m->sent_at, th_now_ns());
        CK(th_send_u64(m->chans[k], (uint64_t)round, 4, 5 * SEC) == 0, 1, "send %d on %d", round, k);
        struct ndc_array a;
        CK(ndc_acquire(m->reply, &a, 5 * SEC) == 0, 2, "round %d: no reply", round);
        CK(a.tag == (uint64_t)round, 3, "reply %llu for round %d", (unsigned long long)a.tag, round);
        ndc_release(m->reply, &a);
    }
    return 0;
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void thousand(int force, int rounds)
{
    raise_nofile(4 * MANY);
    ndc__waitany_force = force;
    ndc_chan **chans = calloc(MANY, sizeof *chans);
    uint32_t *what = calloc(MANY, sizeof *what);
    int32_t *ready = calloc(MANY, sizeof *ready);
    for (int i = 0; i < MANY; i++) {
        int r = ndc_create(&chans[i], NULL, &(struct ndc_chan_opts){ .slots = 1, .slot_bytes = 4096 });
        if (r == -EMFILE)
            cr_skip_test("%d channels need %d fds: RLIMIT_NOFILE too low", MANY, 2 * MANY);
        cr_assert_eq(r, 0, "channel %d: %s", i, ndc_strerror(r));
        what[i] = NDC_WAIT_ACQUIRE;
    }
    struct many m = { .chans = chans, .reply = th_chan(1, 4096), .rounds = rounds,
                      .sent_at = th_shared(sizeof(_Atomic int64_t)) };
    pid_t pid = th_fork(many_sender_main, &m);
    int64_t *lat = calloc((size_t)rounds, sizeof *lat);
    for (int round = 0; round < rounds; round++) {
        int k = (int)(th_mix((uint64_t)round) % MANY);
        int r = ndc_wait_any(chans, what, MANY, ready, 5 * SEC);
        lat[round] = th_now_ns() - atomic_load(m.sent_at);
        cr_assert_eq(r, 1, "round %d: wait_any = %d (%s)", round, r, ndc_strerror(r));
        cr_assert_eq(ready[k], 1, "round %d: sent on %d, not reported", round, k);
        uint64_t tag;
        th_ok(take_one(chans[k], &tag));
        cr_assert_eq(tag, (uint64_t)round);
        th_ok(th_send_u64(m.reply, (uint64_t)round, 4, 5 * SEC));
    }
    cr_assert_eq(th_wait(pid, 10000), 0);
    int64_t med = median(lat, rounds);
    cr_log_info("1000 channels, force %d: median wake-up %.3f ms", force, med / 1e6);
    cr_assert_lt(med, WAKE_MEDIAN_MAX, "median wake-up %.1f ms over 1000 channels (force %d)", med / 1e6, force);
    free(lat);
    ndc__waitany_force = 0;
    ndc_free(m.reply);
    for (int i = 0; i < MANY; i++)
        ndc_free(chans[i]);
    free(chans);
    free(what);
    free(ready);
}

Test(wait_any, thousand_channels, .timeout = 120) { thousand(0, MANY_ROUNDS); }
Test(wait_any, thousand_channels_without_io_uring, .timeout = 120) { thousand(1, MANY_ROUNDS); }
Test(wait_any, thousand_channels_without_futex_waitv, .timeout = 120) { thousand(2, MANY_ROUNDS / 3); }

/* ---- notify fds ----------------------------------------------------------- */

static void use_mode(int mode)
{
    ndc__notify_force = mode;
    if (mode == URING) {   /* skip where the kernel cannot (io_uring off, < 6.7) */
        ndc_chan *ch = th_chan(1, 4096);
        int fd = ndc_notify_fd(ch, NDC_WAIT_ACQUIRE);
        ndc_free(ch);
        if (fd == -ENOSYS)
            cr_skip_test("io_uring cannot wait on futexes here");
        cr_assert_geq(fd, 0, "ndc_notify_fd = %d (%s)", fd, ndc_strerror(fd));
    }
}

static void fini_mode(void) { ndc__notify_force = AUTO; }

static void poll_and_select(int mode)
{
    use_mode(mode);
    ndc_chan *ch = th_chan(2, 4096);
    th_expect(ndc_notify_fd(ch, 0), -EINVAL);
    th_expect(ndc_notify_arm(ch, NDC_WAIT_ACQUIRE), -EINVAL);   /* none made yet */
    int fd = ndc_notify_fd(ch, NDC_WAIT_ACQUIRE);
    cr_assert_geq(fd, 0, "ndc_notify_fd = %d (%s)", fd, ndc_strerror(fd));
    cr_assert_eq(ndc_notify_fd(ch, NDC_WAIT_ACQUIRE), fd, "a second call made another fd");
    if (mode)
        cr_assert_eq(ndc__notify_mode(ch, NDC_WAIT_ACQUIRE), mode);
    cr_assert(!fd_readable(fd, 50), "readable on an empty channel");
    _Atomic int *done = th_shared(sizeof *done);
    struct sender_arg a = { .ch = ch, .delay_ms = 20, .tag = 5, .done = done };
    pid_t pid = th_fork(sender_main, &a);
    cr_assert(fd_readable(fd, 5000), "not readable after another process sent");
    uint64_t tag;
    th_ok(take_one(ch, &tag));
    cr_assert_eq(tag, 5);
    settle(ch, fd);   /* the child's attach closed a description of the file */
    /* select() too, with a sender of this process this time */
    th_ok(th_send_u64(ch, 6, 4, 0));
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(fd, &rd);
    struct timeval tv = { 5, 0 };
    cr_assert_eq(select(fd + 1, &rd, NULL, NULL, &tv), 1, "select did not see it");
    /* an arm while something is there says so, and the fd stays readable */
    th_expect(ndc_notify_arm(ch, NDC_WAIT_ACQUIRE), 1);
    cr_assert(fd_readable(fd, 0), "an arm that said 1 left the fd unreadable");
    th_expect(ndc_notify_arm(ch, NDC_WAIT_ACQUIRE), 1);
    th_ok(take_one(ch, NULL));
    th_expect(ndc_notify_arm(ch, NDC_WAIT_ACQUIRE), 0);
    cr_assert(!fd_readable(fd, 20));
    atomic_store(done, 1);
    cr_assert_eq(th_wait(pid, 5000), 0);
    /* the reserve side has an fd of its own */
    int wfd = ndc_notify_fd(ch, NDC_WAIT_RESERVE);
    cr_assert(wfd >= 0 && wfd != fd);
    cr_assert(fd_readable(wfd, 0), "slots are free: the reserve fd must be readable");
    ndc_free(ch);   /* closes both */
    cr_assert(fcntl(fd, F_GETFD) < 0 && fcntl(wfd, F_GETFD) < 0, "ndc_free left a notify fd open");
    fini_mode();
}

Test(notify, poll_and_select_uring, .timeout = 60) { poll_and_select(URING); }
Test(notify, poll_and_select_thread, .timeout = 60) { poll_and_select(THREAD); }

struct burst_arg {
    ndc_chan *ch;
    int n;
    int close_at_end;
};

static int burst_main(void *p)
{
    die_with_parent();
    struct burst_arg *b = p;
    for (int i = 0; i < b->n; i++) {
        CK(th_send_u64(b->ch, (uint64_t)i, 4, 10 * SEC) == 0, 1, "send %d", i);
        if (i % 7 == 6)
            usleep(200);   /* let the receiver go back to epoll now and then */
    }
    if (b->close_at_end)
        CK(ndc_close(b->ch) == 0, 2, "close");
    return 0;
}

/* The receiver's loop of the header: take until -EAGAIN, arm, poll. Every
 * wait is bounded; \return arrays received before -EPIPE. */
static int receive_by_fd(ndc_chan *ch, int fd, int edge, int n, int *events)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN | (edge ? EPOLLET : 0) };
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    int got = 0, r = 0;
    *events = 0;
    for (;;) {
        struct epoll_event out;
        int k = epoll_wait(ep, &out, 1, 5000);
        if (k < 0 && errno == EINTR)
            continue;
        cr_assert_eq(k, 1, "epoll_wait timed out after %d of %d arrays: a missed wake-up", got, n);
        ++*events;
        for (;;) {
            uint64_t tag;
            while ((r = take_one(ch, &tag)) == 0) {
                cr_assert_eq(tag, (uint64_t)got, "array %llu, want %d", (unsigned long long)tag, got);
                got++;
            }
            cr_assert(r == -EAGAIN || r == -EPIPE, "take = %d (%s)", r, ndc_strerror(r));
            r = ndc_notify_arm(ch, NDC_WAIT_ACQUIRE);
            if (r != 1)
                break;
        }
        if (r < 0)
            break;
        cr_assert_eq(r, 0, "arm = %d (%s)", r, ndc_strerror(r));
    }
    cr_assert_eq(r, -EPIPE, "arm = %d (%s)", r, ndc_strerror(r));
    close(ep);
    return got;
}

static void epoll_stream(int mode, int edge, int n)
{
    use_mode(mode);
    ndc_chan *ch = th_chan(4, 4096);
    int fd = ndc_notify_fd(ch, NDC_WAIT_ACQUIRE);
    cr_assert_geq(fd, 0);
    struct burst_arg b = { .ch = ch, .n = n, .close_at_end = 1 };
    pid_t pid = th_fork(burst_main, &b);
    int events;
    int got = receive_by_fd(ch, fd, edge, n, &events);
    cr_assert_eq(got, n, "received %d of %d", got, n);
    cr_assert_eq(th_wait(pid, 10000), 0);
    /* end of stream: the fd stays readable, the arm and the call say -EPIPE */
    cr_assert(fd_readable(fd, 0));
    th_expect(ndc_notify_arm(ch, NDC_WAIT_ACQUIRE), -EPIPE);
    struct ndc_array a;
    th_expect(ndc_acquire(ch, &a, 0), -EPIPE);
    cr_log_info("mode %d edge %d: %d arrays, %d epoll events", mode, edge, n, events);
    /* an fd that is readable with nothing there would be a busy loop: each
     * wake-up brings an array, bar a few at the child's attach and exit */
    cr_assert_leq(events, n + 8, "%d epoll events for %d arrays: readable without news", events, n);
    ndc_free(ch);
    fini_mode();
}

Test(notify, epoll_level_uring, .timeout = 60) { epoll_stream(URING, 0, 3000); }
Test(notify, epoll_edge_uring, .timeout = 60) { epoll_stream(URING, 1, 3000); }
Test(notify, epoll_level_thread, .timeout = 60) { epoll_stream(THREAD, 0, 3000); }
Test(notify, epoll_edge_thread, .timeout = 60) { epoll_stream(THREAD, 1, 3000); }

/* 100k arrays; the receiver waits only in epoll on the fd. */
Test(notify, stress_100k_uring, .timeout = 300) { epoll_stream(URING, 1, 100000); }
Test(notify, stress_100k_thread, .timeout = 300) { epoll_stream(THREAD, 0, 100000); }

static void killed_sender(int mode)
{
    use_mode(mode);
    ndc_chan *ch = th_chan(2, 4096);
    _Atomic int *sent = th_shared(sizeof *sent);
    struct sender_arg a = { .ch = ch, .tag = 1, .hang_after = 1, .sent = sent };
    pid_t pid = th_fork(sender_main, &a);
    int fd = ndc_notify_fd(ch, NDC_WAIT_ACQUIRE);
    cr_assert_geq(fd, 0);
    cr_assert(fd_readable(fd, 5000));
    await_flag(sent);
    th_ok(take_one(ch, NULL));
    settle(ch, fd);
    cr_assert(!fd_readable(fd, 100), "readable while the sender lives and sends nothing");
    kill(pid, SIGKILL);
    int64_t t0 = th_now_ns();
    /* each readiness is answered with an arm, as a caller would */
    int r = 0;
    while (th_now_ns() - t0 < 3 * SEC) {
        if (!fd_readable(fd, 3000))
            break;
        if ((r = ndc_notify_arm(ch, NDC_WAIT_ACQUIRE)) != 0)
            break;
    }
    int64_t el = th_now_ns() - t0;
    cr_assert_eq(r, -EOWNERDEAD, "after the sender's death: arm = %d (%s)", r, ndc_strerror(r));
    cr_assert_lt(el, SEC, "the death took %lld ms to show", (long long)(el / MS));
    cr_assert(fd_readable(fd, 0), "not readable with every sender gone");
    struct ndc_array arr;
    th_expect(ndc_acquire(ch, &arr, 100 * MS), -EOWNERDEAD);
    th_wait(pid, 5000);
    ndc_free(ch);
    fini_mode();
}

Test(notify, killed_sender_uring, .timeout = 60) { killed_sender(URING); }
Test(notify, killed_sender_thread, .timeout = 60) { killed_sender(THREAD); }

static void reserve_fd(int mode)
{
    use_mode(mode);
    ndc_chan *ch = th_chan(1, 4096);
    th_ok(th_send_u64(ch, 1, 4, 0));
    int fd = ndc_notify_fd(ch, NDC_WAIT_RESERVE);
    cr_assert_geq(fd, 0);
    th_expect(ndc_notify_arm(ch, NDC_WAIT_RESERVE), 0);
    cr_assert(!fd_readable(fd, 50), "readable on a full channel");
    _Atomic int *done = th_shared(sizeof *done);
    struct releaser_arg ra = { .ch = ch, .done = done };
    pid_t pid = th_fork(releaser_main, &ra);
    cr_assert(fd_readable(fd, 5000), "not readable after a slot was released");
    th_expect(ndc_notify_arm(ch, NDC_WAIT_RESERVE), 1);
    th_ok(th_send_u64(ch, 2, 4, 0));
    th_expect(ndc_notify_arm(ch, NDC_WAIT_RESERVE), 0);
    cr_assert(!fd_readable(fd, 50) || ndc_notify_arm(ch, NDC_WAIT_RESERVE) == 0);
    atomic_store(done, 1);
    cr_assert_eq(th_wait(pid, 5000), 0);
    th_ok(ndc_close(ch));
    cr_assert(fd_readable(fd, 5000), "not readable after close");
    th_expect(ndc_notify_arm(ch, NDC_WAIT_RESERVE), -EPIPE);
    ndc_free(ch);
    fini_mode();
}

Test(notify, reserve_side_uring, .timeout = 60) { reserve_fd(URING); }
Test(notify, reserve_side_thread, .timeout = 60) { reserve_fd(THREAD); }

/* A fork child makes its own fd; the parent's keeps working. */
static int child_fd_main(void *p)
{
    die_with_parent();
    ndc_chan *ch = p;
    int fd = ndc_notify_fd(ch, NDC_WAIT_ACQUIRE);
    CK(fd >= 0, 1, "ndc_notify_fd in the child = %d", fd);
    CK(fd_readable(fd, 5000), 2, "child: not readable");
    uint64_t tag;
    CK(take_one(ch, &tag) == 0 && tag == 11, 3, "child: take");
    CK(ndc_notify_arm(ch, NDC_WAIT_ACQUIRE) == 0, 4, "child: arm");
    ndc_free(ch);
    return 0;
}

static void fork_child(int mode)
{
    use_mode(mode);
    ndc_chan *ch = th_chan(2, 4096);
    int fd = ndc_notify_fd(ch, NDC_WAIT_ACQUIRE);
    cr_assert_geq(fd, 0);
    /* Let the parent's helper thread (thread mode) finish starting: a fork
     * while a thread is being created leaves AddressSanitizer's thread
     * registry locked in the child, whose own helper then never starts (an
     * ASan limitation: glibc resets its own locks at fork). */
    usleep(100000);
    pid_t pid = th_fork(child_fd_main, ch);
    usleep(50000);
    th_ok(th_send_u64(ch, 11, 4, 0));
    cr_assert_eq(th_wait(pid, 10000), 0);
    settle(ch, fd);
    _Atomic int *done = th_shared(sizeof *done);
    struct sender_arg a = { .ch = ch, .delay_ms = 10, .tag = 12, .done = done };
    pid = th_fork(sender_main, &a);
    cr_assert(fd_readable(fd, 5000), "the parent's fd stopped working after a child used its own");
    uint64_t tag;
    th_ok(take_one(ch, &tag));
    cr_assert_eq(tag, 12);
    settle(ch, fd);
    /* armed: one waiting receiver (the helper thread counts itself in when it sleeps) */
    int64_t until = th_now_ns() + 2 * SEC;
    while (th_stat(ch).receivers_waiting != 1 && th_now_ns() < until)
        usleep(1000);
    cr_assert_eq(th_stat(ch).receivers_waiting, 1, "the armed fd counts as one waiting receiver");
    atomic_store(done, 1);
    cr_assert_eq(th_wait(pid, 5000), 0);
    ndc_free(ch);
    fini_mode();
}

Test(notify, fork_child_uring, .timeout = 60) { fork_child(URING); }
Test(notify, fork_child_thread, .timeout = 60) { fork_child(THREAD); }

/* ndc_free of a handle with armed fds leaves nothing counted in. */
static void free_uncounts(int mode)
{
    use_mode(mode);
    const char *name = th_unique_name("free_uncounts");
    ndc_chan *ch, *other;
    th_ok(ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 1, .slot_bytes = 4096 }));
    th_ok(ndc_open(&other, name, 0));
    th_ok(th_send_u64(ch, 1, 4, 0));   /* full: a reserve would wait, an acquire would not */
    cr_assert_geq(ndc_notify_fd(other, NDC_WAIT_RESERVE), 0);
    cr_assert_geq(ndc_notify_fd(other, NDC_WAIT_ACQUIRE), 0);
    int64_t until = th_now_ns() + 2 * SEC;   /* the helper thread counts itself in when it sleeps */
    while (atomic_load(&ch->ctrl->watchers[0]) != 1 && th_now_ns() < until)
        usleep(1000);
    cr_assert_eq(atomic_load(&ch->ctrl->watchers[0]), 1, "the armed reserve fd is not counted");
    ndc_free(other);
    for (int side = 0; side < 2; side++) {
        cr_assert_eq(atomic_load(&ch->ctrl->watchers[side]), 0, "side %d: a freed handle's fd still counted", side);
        cr_assert_eq(atomic_load(&ch->ctrl->sleepers[side]), 0, "side %d: a freed handle's fd still a sleeper", side);
    }
    ndc_free(ch);
    ndc_unlink(name);
    fini_mode();
}

Test(notify, free_uncounts_uring, .timeout = 30) { free_uncounts(URING); }
Test(notify, free_uncounts_thread, .timeout = 30) { free_uncounts(THREAD); }

/* A killed watcher's counts go with its entry: posts return to waking one. */
static int watcher_main(void *p)
{
    die_with_parent();
    ndc_chan *ch = p;
    CK(ndc_notify_fd(ch, NDC_WAIT_ACQUIRE) >= 0, 1, "notify fd");
    for (;;)
        pause();
}

Test(notify, killed_watcher_is_uncounted, .timeout = 60)
{
    ndc_chan *ch = th_chan(2, 4096);
    pid_t pid = th_fork(watcher_main, ch);
    int64_t until = th_now_ns() + 5 * SEC;
    while (th_stat(ch).receivers_waiting == 0 && th_now_ns() < until)
        usleep(1000);
    cr_assert_eq(th_stat(ch).receivers_waiting, 1, "the child's armed fd is not counted");
    kill(pid, SIGKILL);
    th_wait(pid, 5000);
    /* a blocking call sweeps; the dead watcher's counts must go with it */
    struct ndc_array a;
    th_expect(ndc_acquire(ch, &a, 100 * MS), -ETIMEDOUT);
    cr_assert_eq(atomic_load(&ch->ctrl->watchers[1]), 0, "a dead watcher is still counted");
    cr_assert_eq(atomic_load(&ch->ctrl->sleepers[1]), 0, "a dead watcher is still a sleeper");
    cr_assert_eq(th_stat(ch).receivers_waiting, 0);
    ndc_free(ch);
}

/* ---- other namespaces, other pollers --------------------------------------- */

enum { NS_ARRAYS = 200, NS_SKIP = 77 };

struct ns_arg {
    const char *to_child, *to_parent;   /* channel names */
};

/* In new pid and network namespaces: receive NS_ARRAYS through a notify fd
 * until the end of stream, then send NS_ARRAYS back and hang (to be killed). */
static int ns_inner(void *p)
{
    struct ns_arg *a = p;
    die_with_parent();
    ndc_chan *in, *out;
    CK(ndc_open(&in, a->to_child, 0) == 0, 1, "open in");
    CK(ndc_open(&out, a->to_parent, 0) == 0, 2, "open out");
    int fd = ndc_notify_fd(in, NDC_WAIT_ACQUIRE);
    CK(fd >= 0, 3, "notify fd %d", fd);
    int got = 0, r = 0;
    for (;;) {
        CK(fd_readable(fd, 5000), 4, "no wake-up after %d arrays", got);
        uint64_t tag;
        while ((r = take_one(in, &tag)) == 0) {
            CK(tag == (uint64_t)got, 5, "array %llu, want %d", (unsigned long long)tag, got);
            got++;
        }
        r = ndc_notify_arm(in, NDC_WAIT_ACQUIRE);
        if (r < 0)
            break;
    }
    CK(r == -EPIPE && got == NS_ARRAYS, 6, "ended with %d after %d arrays", r, got);
    for (int i = 0; i < NS_ARRAYS; i++)
        CK(th_send_u64(out, (uint64_t)i, 4, 5 * SEC) == 0, 7, "send %d", i);
    for (;;)
        pause();
}

static int ns_outer(void *p)
{
    die_with_parent();
    if (unshare(CLONE_NEWPID | CLONE_NEWNET) != 0)
        return NS_SKIP;
    pid_t c = th_fork(ns_inner, p);
    int st;
    waitpid(c, &st, 0);   /* killed with us: PDEATHSIG */
    return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

/* Peers in other pid and network namespaces (sharing /dev/shm): both ways
 * through notify fds, the end of stream, and a death across the boundary. */
Test(notify, across_pid_and_net_namespaces, .timeout = 120)
{
    struct ns_arg a = { .to_child = strdup(th_unique_name("ns_in")), .to_parent = strdup(th_unique_name("ns_out")) };
    ndc_chan *out, *in;
    th_ok(ndc_create(&out, a.to_child, &(struct ndc_chan_opts){ .slots = 4, .slot_bytes = 4096 }));
    th_ok(ndc_create(&in, a.to_parent, &(struct ndc_chan_opts){ .slots = 4, .slot_bytes = 4096 }));
    int fd = ndc_notify_fd(in, NDC_WAIT_ACQUIRE);
    cr_assert_geq(fd, 0);
    pid_t outer = th_fork(ns_outer, &a);
    for (int i = 0; i < NS_ARRAYS; i++) {
        int r = th_send_u64(out, (uint64_t)i, 4, 5 * SEC);
        if (r != 0) {
            int st = th_wait(outer, 5000);
            ndc_free(out);
            ndc_free(in);
            ndc_unlink(a.to_child);
            ndc_unlink(a.to_parent);
            if (st == NS_SKIP)
                cr_skip_test("cannot make pid and network namespaces here (needs root)");
            cr_assert_fail("send %d = %d (%s); the child's status %d", i, r, ndc_strerror(r), st);
        }
    }
    th_ok(ndc_close(out));
    int got = 0, r = 0;
    int64_t until = th_now_ns() + 20 * SEC;
    while (got < NS_ARRAYS && th_now_ns() < until) {
        cr_assert(fd_readable(fd, 5000), "no wake-up from the other namespace after %d arrays", got);
        uint64_t tag;
        while ((r = take_one(in, &tag)) == 0) {
            cr_assert_eq(tag, (uint64_t)got);
            got++;
        }
        r = ndc_notify_arm(in, NDC_WAIT_ACQUIRE);
        cr_assert_geq(r, 0, "arm = %d (%s) after %d arrays", r, ndc_strerror(r), got);
    }
    cr_assert_eq(got, NS_ARRAYS);
    /* the sender in there dies: the fd says so within a second */
    kill(outer, SIGKILL);   /* its child goes with it (PDEATHSIG), in its own pid namespace */
    th_wait(outer, 5000);
    int64_t t0 = th_now_ns();
    while (th_now_ns() - t0 < 3 * SEC && (r = ndc_notify_arm(in, NDC_WAIT_ACQUIRE)) == 0)
        fd_readable(fd, 1000);
    cr_assert_eq(r, -EOWNERDEAD, "after the death in the other namespace: arm = %d (%s)", r, ndc_strerror(r));
    cr_assert_lt(th_now_ns() - t0, SEC);
    ndc_free(out);
    ndc_free(in);
    ndc_unlink(a.to_child);
    ndc_unlink(a.to_parent);
}

/* The fd in another io_uring: an IORING_OP_POLL_ADD on it completes when
 * an array comes. Raw syscalls: the suite builds without liburing too. */
Test(notify, io_uring_poll_add, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    int fd = ndc_notify_fd(ch, NDC_WAIT_ACQUIRE);
    cr_assert_geq(fd, 0);
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int ring = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (ring < 0)
        cr_skip_test("no io_uring here: %s", strerror(errno));
    size_t len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.sq_off.array + p.sq_entries * sizeof(unsigned) > len)
        len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, ring, IORING_OFF_SQ_RING);
    struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof *sqes, PROT_READ | PROT_WRITE, MAP_SHARED,
                                     ring, IORING_OFF_SQES);
    cr_assert(m != MAP_FAILED && sqes != MAP_FAILED);
    _Atomic unsigned *sq_tail = (_Atomic unsigned *)(m + p.sq_off.tail);
    unsigned *sq_array = (unsigned *)(m + p.sq_off.array);
    _Atomic unsigned *cq_tail = (_Atomic unsigned *)(m + p.cq_off.tail);
    struct io_uring_cqe *cqes = (struct io_uring_cqe *)(m + p.cq_off.cqes);
    memset(&sqes[0], 0, sizeof sqes[0]);
    sqes[0].opcode = IORING_OP_POLL_ADD;
    sqes[0].fd = fd;
    sqes[0].poll32_events = POLLIN;
    sqes[0].user_data = 42;
    sq_array[0] = 0;
    atomic_store(sq_tail, atomic_load(sq_tail) + 1);
    cr_assert_eq(syscall(__NR_io_uring_enter, ring, 1, 0, 0, NULL, 0), 1);
    usleep(20000);
    cr_assert_eq(atomic_load(cq_tail), 0, "the poll completed on an empty channel");
    _Atomic int *done = th_shared(sizeof *done);
    struct sender_arg a = { .ch = ch, .delay_ms = 20, .tag = 3, .done = done };
    pid_t pid = th_fork(sender_main, &a);
    cr_assert_eq(syscall(__NR_io_uring_enter, ring, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0), 0);
    cr_assert_eq(atomic_load(cq_tail), 1);
    cr_assert_eq(cqes[0].user_data, 42);
    cr_assert(cqes[0].res & POLLIN, "poll result %#x", cqes[0].res);
    uint64_t tag;
    th_ok(take_one(ch, &tag));
    cr_assert_eq(tag, 3);
    atomic_store(done, 1);
    cr_assert_eq(th_wait(pid, 5000), 0);
    close(ring);
    ndc_free(ch);
}
