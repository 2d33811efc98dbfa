/* notify-rtt: what a pollable channel fd and a wait over many channels cost.
 *
 *   build/bench/notify-rtt [rounds [runs]]     (defaults: 20000 rounds, 5 runs)
 *
 * Two processes ping-pong one small array (or one 8-byte token) back and
 * forth; each side waits in epoll_wait on its fd. The round trip of:
 *   eventfd, pipe, unix-dgram   the raw fds, one written by the other side
 *                               (unix-dgram: what a socket per waiting
 *                               handle, written by posters, would cost at
 *                               least)
 *   ndchan-fd (io_uring)        two channels, ndc_notify_fd in epoll, take
 *                               with timeout 0, ndc_notify_arm
 *   ndchan-fd (thread)          the same with the helper-thread fallback
 *   ndchan + socket doorbell    mechanism (a) simulated: a datagram socket
 *                               per waiting side, written by the poster
 *                               only while the waiter armed a shared flag
 *   ndchan blocking             ndc_acquire(NDC_FOREVER), spinning off: the
 *                               futex path alone
 * and the wake-up latency of ndc_wait_any over 1, 128 or 1000 channels
 * (the receiver asleep in it, the array sent on a random one; against a
 * blocking ndc_acquire), and what one sleep of it costs the caller.
 * Medians of each run's per-round medians, in microseconds. The two
 * processes are pinned to CPUs 0 and 1 where there are two.
 * Not a test: nothing is asserted. Links the static library to pick the
 * fd's mechanism (ndc__notify_force).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ndchan.h"

extern int ndc__notify_force;   /* notify.h: 1 io_uring, 2 helper thread */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int r)
{
    fprintf(stderr, "notify-rtt: %s: %s (%s)\n", what, r < 0 ? ndc_strerror(r) : strerror(errno),
            ndc_last_error());
    exit(1);
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

static int ncpu;

static void pin(int cpu)
{
    if (ncpu < 2)
        return;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

static int epoll_on(int fd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll", 0);
    return ep;
}

static void epoll_one(int ep)
{
    struct epoll_event ev;
    while (epoll_wait(ep, &ev, 1, -1) != 1)
        if (errno != EINTR)
            die("epoll_wait", 0);
}

/* ---- raw fds ---------------------------------------------------------------- */

enum raw_kind { RAW_EVENTFD, RAW_PIPE, RAW_DGRAM };

/* fds[0]: parent -> child, fds[1]: child -> parent; each a (read, write) pair */
static void raw_pair(enum raw_kind k, int rd[2], int wr[2])
{
    for (int i = 0; i < 2; i++) {
        if (k == RAW_EVENTFD) {
            rd[i] = wr[i] = eventfd(0, EFD_NONBLOCK);
        } else if (k == RAW_PIPE) {
            int p[2];
            if (pipe2(p, O_NONBLOCK))
                die("pipe", 0);
            rd[i] = p[0];
            wr[i] = p[1];
        } else {
            int p[2];
            if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, p))
                die("socketpair", 0);
            rd[i] = p[0];
            wr[i] = p[1];
        }
    }
}

static void raw_recv(enum raw_kind k, int fd)
{
    uint64_t v;
    if (k == RAW_DGRAM)
        recv(fd, &v, sizeof v, 0);
    else
        while (read(fd, &v, sizeof v) < 0 && errno == EINTR)
            ;
}

static void raw_send(enum raw_kind k, int fd)
{
    uint64_t v = 1;
    if (k == RAW_DGRAM)
        send(fd, &v, sizeof v, 0);
    else if (write(fd, &v, sizeof v) < 0)
        die("write", 0);
}

static int64_t run_raw(enum raw_kind k, int rounds)
{
    int rd[2], wr[2];
    raw_pair(k, rd, wr);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pin(1);
        int ep = epoll_on(rd[0]);
        for (int i = 0; i < rounds; i++) {
            epoll_one(ep);
            raw_recv(k, rd[0]);
            raw_send(k, wr[1]);
        }
        _exit(0);
    }
    pin(0);
    int ep = epoll_on(rd[1]);
    int64_t *t = malloc(sizeof *t * (size_t)rounds);
    for (int i = 0; i < rounds; i++) {
        int64_t t0 = now_ns();
        raw_send(k, wr[0]);
        epoll_one(ep);
        raw_recv(k, rd[1]);
        t[i] = now_ns() - t0;
    }
    waitpid(pid, NULL, 0);
    int64_t m = median(t, rounds);
    free(t);
    for (int i = 0; i < 2; i++) {
        close(rd[i]);
        if (wr[i] != rd[i])
            close(wr[i]);
    }
    close(ep);
    return m;
}

/* ---- ndchan ----------------------------------------------------------------- */

static ndc_chan *chan(void)
{
    ndc_chan *ch;
    int r = ndc_create(&ch, NULL, &(struct ndc_chan_opts){ .slots = 4, .slot_bytes = 4096,
                                                             .spin_ns = -1 });
    if (r)
        die("ndc_create", r);
    return ch;
}

static void send_token(ndc_chan *ch, uint64_t tag)
{
    int64_t shape[1] = { 1 };
    struct ndc_array a;
    ndc_array_init(&a, NDC_U64, 1, shape, &tag);
    a.tag = tag;
    int r = ndc_send(ch, &a, NDC_FOREVER);
    if (r)
        die("ndc_send", r);
}

/* Take everything there, then arm; \return arrays taken. */
static int take_by_fd(ndc_chan *ch, int ep)
{
    int got = 0;
    for (;;) {
        epoll_one(ep);
        int r;
        do {
            struct ndc_array a;
            while ((r = ndc_acquire(ch, &a, 0)) == 0) {
                ndc_release(ch, &a);
                got++;
            }
            if (r != -EAGAIN)
                die("ndc_acquire", r);
        } while ((r = ndc_notify_arm(ch, NDC_WAIT_ACQUIRE)) == 1);
        if (r < 0)
            die("ndc_notify_arm", r);
        if (got)
            return got;
    }
}

static void take_blocking(ndc_chan *ch)
{
    struct ndc_array a;
    int r = ndc_acquire(ch, &a, NDC_FOREVER);
    if (r)
        die("ndc_acquire", r);
    ndc_release(ch, &a);
}

/* mode: 1 io_uring fd, 2 thread fd, 0 blocking acquire */
static int64_t run_ndchan(int mode, int rounds)
{
    ndc_chan *ping = chan(), *pong = chan();
    ndc__notify_force = mode;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pin(1);
        int ep = -1;
        if (mode) {
            int fd = ndc_notify_fd(ping, NDC_WAIT_ACQUIRE);
            if (fd < 0)
                die("ndc_notify_fd", fd);
            ep = epoll_on(fd);
        }
        for (int i = 0; i < rounds; i++) {
            if (mode)
                take_by_fd(ping, ep);
            else
                take_blocking(ping);
            send_token(pong, (uint64_t)i);
        }
        ndc_free(ping);
        ndc_free(pong);
        _exit(0);
    }
    pin(0);
    int ep = -1;
    if (mode) {
        int fd = ndc_notify_fd(pong, NDC_WAIT_ACQUIRE);
        if (fd < 0)
            die("ndc_notify_fd", fd);
        ep = epoll_on(fd);
    }
    int64_t *t = malloc(sizeof *t * (size_t)rounds);
    for (int i = 0; i < rounds; i++) {
        int64_t t0 = now_ns();
        send_token(ping, (uint64_t)i);
        if (mode)
            take_by_fd(pong, ep);
        else
            take_blocking(pong);
        t[i] = now_ns() - t0;
    }
    waitpid(pid, NULL, 0);
    int64_t m = median(t, rounds);
    free(t);
    if (ep >= 0)
        close(ep);
    ndc_free(ping);
    ndc_free(pong);
    ndc__notify_force = 0;
    return m;
}

/* Mechanism (a) simulated over the public API, for comparison: a datagram
 * socket per waiting side that the poster writes only while the waiter has
 * armed it (a flag in shared memory), as a socket bound next to the channel
 * would be used. The receiver drains the socket, takes until -EAGAIN, arms
 * the flag and looks once more; the sender commits, then, if the flag is
 * set, clears it and sends one datagram. */
static int take_by_socket(ndc_chan *ch, int ep, int sock, _Atomic int *armed)
{
    int got = 0;
    for (;;) {
        struct ndc_array a;
        int r;
        while ((r = ndc_acquire(ch, &a, 0)) == 0) {
            ndc_release(ch, &a);
            got++;
        }
        if (r != -EAGAIN)
            die("ndc_acquire", r);
        if (got)
            return got;
        atomic_store(armed, 1);   /* seq_cst: pairs with the poster's exchange */
        if ((r = ndc_acquire(ch, &a, 0)) == 0) {
            atomic_store(armed, 0);
            ndc_release(ch, &a);
            return 1;
        }
        epoll_one(ep);
        uint64_t v;
        while (recv(sock, &v, sizeof v, MSG_DONTWAIT) > 0)
            ;
    }
}

static void post_by_socket(ndc_chan *ch, uint64_t tag, int sock, _Atomic int *armed)
{
    send_token(ch, tag);
    if (atomic_load(armed) && atomic_exchange(armed, 0)) {
        uint64_t v = 1;
        send(sock, &v, sizeof v, 0);
    }
}

static int64_t run_socket_doorbell(int rounds)
{
    ndc_chan *ping = chan(), *pong = chan();
    int sv[2][2];   /* [0]: the child's doorbell, [1]: the parent's; [i][0] is read */
    for (int i = 0; i < 2; i++)
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv[i]))
            die("socketpair", 0);
    _Atomic int *armed = mmap(NULL, 2 * sizeof *armed, PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pin(1);
        int ep = epoll_on(sv[0][0]);
        for (int i = 0; i < rounds; i++) {
            take_by_socket(ping, ep, sv[0][0], &armed[0]);
            post_by_socket(pong, (uint64_t)i, sv[1][1], &armed[1]);
        }
        _exit(0);
    }
    pin(0);
    int ep = epoll_on(sv[1][0]);
    int64_t *t = malloc(sizeof *t * (size_t)rounds);
    for (int i = 0; i < rounds; i++) {
        int64_t t0 = now_ns();
        post_by_socket(ping, (uint64_t)i, sv[0][1], &armed[0]);
        take_by_socket(pong, ep, sv[1][0], &armed[1]);
        t[i] = now_ns() - t0;
    }
    waitpid(pid, NULL, 0);
    int64_t m = median(t, rounds);
    free(t);
    close(ep);
    for (int i = 0; i < 2; i++) {
        close(sv[i][0]);
        close(sv[i][1]);
    }
    munmap(armed, 2 * sizeof *armed);
    ndc_free(ping);
    ndc_free(pong);
    return m;
}

/* ---- wait-any ----------------------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Wake-up latency: the receiver sleeps in ndc_wait_any over n channels
 * (n = 0: a blocking ndc_acquire on one channel instead); the sender waits
 * until it is surely asleep (1 ms), notes the time, sends on a random
 * channel; the receiver notes when its call returned. The median of those
 * differences (one clock, two processes). Then it takes the array and
 * replies, and the sender waits for the reply before the next round. */
static int64_t run_wait_any(uint32_t n, int rounds)
{
    uint32_t nch = n ? n : 1;
    ndc_chan **chans = calloc(nch, sizeof *chans);
    uint32_t *what = calloc(nch, sizeof *what);
    int32_t *ready = calloc(nch, sizeof *ready);
    for (uint32_t i = 0; i < nch; i++) {
        chans[i] = chan();
        what[i] = NDC_WAIT_ACQUIRE;
    }
    ndc_chan *reply = chan();
    _Atomic int64_t *woke = mmap(NULL, sizeof *woke * (size_t)rounds, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (woke == MAP_FAILED)
        die("mmap", 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pin(1);
        for (int i = 0; i < rounds; i++) {
            uint32_t k = (uint32_t)(mix((uint64_t)i) % nch);
            if (n) {
                int r = ndc_wait_any(chans, what, n, ready, NDC_FOREVER);
                atomic_store(&woke[i], now_ns());
                if (r < 1 || ready[k] != 1)
                    die("ndc_wait_any", r < 0 ? r : -EPROTO);
                struct ndc_array a;
                if ((r = ndc_acquire(chans[k], &a, 0)))
                    die("ndc_acquire", r);
                ndc_release(chans[k], &a);
            } else {
                take_blocking(chans[k]);
                atomic_store(&woke[i], now_ns());
            }
            send_token(reply, (uint64_t)i);
        }
        _exit(0);
    }
    pin(0);
    int64_t *t = malloc(sizeof *t * (size_t)rounds);
    for (int i = 0; i < rounds; i++) {
        uint32_t k = (uint32_t)(mix((uint64_t)i) % nch);
        struct timespec ms = { 0, 1000000 };
        nanosleep(&ms, NULL);
        int64_t t0 = now_ns();
        send_token(chans[k], (uint64_t)i);
        take_blocking(reply);
        t[i] = atomic_load(&woke[i]) - t0;
    }
    waitpid(pid, NULL, 0);
    int64_t m = median(t, rounds);
    free(t);
    munmap(woke, sizeof *woke * (size_t)rounds);
    for (uint32_t i = 0; i < nch; i++)
        ndc_free(chans[i]);
    ndc_free(reply);
    free(chans);
    free(what);
    free(ready);
    return m;
}

/* What one sleep costs the caller: ndc_wait_any over n idle channels with
 * a 1 us timeout (count in, arm the kernel's waits, time out, undo). */
static int64_t run_wait_any_call(uint32_t n, int rounds)
{
    ndc_chan **chans = calloc(n, sizeof *chans);
    uint32_t *what = calloc(n, sizeof *what);
    int32_t *ready = calloc(n, sizeof *ready);
    for (uint32_t i = 0; i < n; i++) {
        chans[i] = chan();
        what[i] = NDC_WAIT_ACQUIRE;
    }
    pin(0);
    int64_t *t = malloc(sizeof *t * (size_t)rounds);
    for (int i = 0; i < rounds; i++) {
        int64_t t0 = now_ns();
        int r = ndc_wait_any(chans, what, n, ready, 1000);
        t[i] = now_ns() - t0;
        if (r != -ETIMEDOUT)
            die("ndc_wait_any", r);
    }
    int64_t m = median(t, rounds);
    free(t);
    for (uint32_t i = 0; i < n; i++)
        ndc_free(chans[i]);
    free(chans);
    free(what);
    free(ready);
    return m;
}

/* ---- main ------------------------------------------------------------------- */

#define ROWS 14
#define FIRST_WAKE 7   /* rows from here: wake-up latency, not round trips */
#define FIRST_CALL 11  /* rows from here: the cost of one call */
static const char *const row_name[ROWS] = {
    "eventfd (raw)", "pipe (raw)", "unix-dgram (raw)", "ndchan-fd (io_uring)",
    "ndchan-fd (thread)", "ndchan + socket doorbell (a, sim.)", "ndchan blocking acquire",
    "ndc_acquire (1 channel)", "ndc_wait_any, 1 channel", "ndc_wait_any, 128 channels",
    "ndc_wait_any, 1000 channels",
    "ndc_wait_any, 1", "ndc_wait_any, 128", "ndc_wait_any, 1000",
};

static int64_t run_row(int row, int rounds)
{
    switch (row) {
    case 0: return run_raw(RAW_EVENTFD, rounds);
    case 1: return run_raw(RAW_PIPE, rounds);
    case 2: return run_raw(RAW_DGRAM, rounds);
    case 3: return run_ndchan(1, rounds);
    case 4: return run_ndchan(2, rounds);
    case 5: return run_socket_doorbell(rounds);
    case 6: return run_ndchan(0, rounds);
    case 7: return run_wait_any(0, rounds / 20);
    case 8: return run_wait_any(1, rounds / 20);
    case 9: return run_wait_any(128, rounds / 20);
    case 10: return run_wait_any(1000, rounds / 20);
    case 11: return run_wait_any_call(1, rounds / 20);
    case 12: return run_wait_any_call(128, rounds / 20);
    default: return run_wait_any_call(1000, rounds / 20);
    }
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (rounds < 100 || runs < 1 || runs > 50) {
        fprintf(stderr, "usage: notify-rtt [rounds >= 100 [runs 1..50]]\n");
        return 2;
    }
    ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
        rl.rlim_cur = 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int64_t res[ROWS][50];
    /* runs interleaved, so that a slow spell of the machine hits every row */
    for (int run = 0; run < runs; run++)
        for (int row = 0; row < ROWS; row++)
            res[row][run] = run_row(row, rounds);
    for (int row = 0; row < ROWS; row++) {
        if (row == 0)
            printf("round trip, two processes, each in epoll_wait (or the call named); median of %d "
                   "runs of %d rounds, us\n", runs, rounds);
        if (row == FIRST_WAKE)
            printf("wake-up latency: post to return of the sleeping call, receiver asleep; median of "
                   "%d runs of %d rounds, us\n", runs, rounds / 20);
        if (row == FIRST_CALL)
            printf("one ndc_wait_any call over n idle channels with a 1 us timeout (a sleep's "
                   "overhead); median of %d runs of %d calls, us\n", runs, rounds / 20);
        int64_t v[50];
        memcpy(v, res[row], sizeof v[0] * (size_t)runs);
        printf("  %-32s %8.2f   runs:", row_name[row], median(v, runs) / 1e3);
        for (int run = 0; run < runs; run++)
            printf(" %.2f", res[row][run] / 1e3);
        printf("\n");
    }
    int64_t v[50], e[50];
    memcpy(v, res[3], sizeof v[0] * (size_t)runs);
    memcpy(e, res[0], sizeof e[0] * (size_t)runs);
    printf("ndchan-fd (io_uring) / eventfd: %.2fx\n", (double)median(v, runs) / (double)median(e, runs));
    return 0;
}
