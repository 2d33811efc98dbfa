/* Broadcast: what fan-out costs the publisher, that a huge array fanned out
 * is never copied, and that the latest policy never slows the publisher.
 *
 *   cost     one publisher, S = 1, 2, 4 subscriber processes (block policy,
 *            4 slots), 8 B and 16 MiB arrays. Subscribers never spin: two
 *            CPUs cannot run four spinners, and a subscriber that spins on
 *            its own CPU would make S = 1 look cheaper than it is (no wake-up
 *            to pay); and each array is published once the last one was
 *            released by all, so every commit wakes every subscriber. The
 *            cost is the publisher thread's CPU time (being preempted by a
 *            subscriber it woke is not its cost: two CPUs, five processes). The publisher stamps the
 *            array's first and last words (as a producer that writes in
 *            place) and commits; each subscriber checks both words and
 *            releases. The publisher's cost per array is its own work:
 *            the median time of a reserve that found a slot at once plus its
 *            commit (a reserve that had to wait for the slowest subscriber
 *            is waiting, not cost, and is left out of the samples).
 *   memory   256 MiB arrays (2 slots) to 4 subscribers that read every
 *            page: the channel's resident pages, and the private memory the
 *            subscribers added (a copy would show there).
 *   latest   the publisher's rate (8 B, latest policy) with no subscriber
 *            and with one that sleeps 1 ms per array.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "fanout.h"

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU time of this thread: being preempted by a subscriber it woke (two
 * CPUs, up to five processes) is not the publisher's cost. */
static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':')
            v = atol(line + n + 1);
    if (f)
        fclose(f);
    return v;
}

static ndc_chan *bchan(uint32_t slots, uint64_t bytes, uint32_t policy)
{
    struct ndc_chan_opts o = {.slots = slots, .slot_bytes = bytes, .flags = NDC_BROADCAST,
                              .slow_policy = policy, .spin_ns = bench_spin_ns};
    ndc_chan *ch = NULL;
    return ndc_create(&ch, NULL, &o) ? NULL : ch;
}

struct shared {
    int no_spin;               /* subscribers sleep at once when they wait */
    _Atomic int ready;
    _Atomic int bad;
    _Atomic long anon_kb[8];   /* each subscriber's private memory added (memory case) */
};

/* A subscriber: check each array's stamps (or read every page), release,
 * until the end of stream; sleep_us after each one. */
static int subscriber(ndc_chan *ch, struct shared *sh, int idx, int touch_all, int sleep_us)
{
    if (ndc_subscribe(ch) || (sh->no_spin && ndc_set_spin(ch, -1)))
        return 1;
    long anon0 = status_kb("RssAnon");
    atomic_fetch_add(&sh->ready, 1);
    volatile uint64_t sink = 0;
    for (;;) {
        struct ndc_array a;
        int r = ndc_acquire(ch, &a, 60LL * 1000000000);
        if (r == -EPIPE)
            break;
        if (r)
            return 2;
        size_t n = ndc_array_nbytes(&a);
        const uint64_t *w = a.data;
        if (n >= 16 && (w[0] != a.tag || w[n / 8 - 1] != ~a.tag))
            atomic_store(&sh->bad, 1);
        if (touch_all)
            for (size_t i = 0; i < n / 8; i += 512)
                sink += w[i];
        if (ndc_release(ch, &a))
            return 3;
        if (sleep_us)
            usleep((useconds_t)sleep_us);
    }
    long anon1 = status_kb("RssAnon");
    atomic_store(&sh->anon_kb[idx], anon1 - anon0);
    (void)sink;
    return 0;
}

static int start_subscribers(ndc_chan *ch, struct shared *sh, int n, int touch_all, int sleep_us, pid_t *pids)
{
    fflush(NULL);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            return -1;
        if (pids[i] == 0)
            _exit(subscriber(ch, sh, i, touch_all, sleep_us));
    }
    int64_t end = mono_ns() + 10LL * 1000000000;
    while (atomic_load(&sh->ready) < n && mono_ns() < end)
        usleep(1000);
    return atomic_load(&sh->ready) == n ? 0 : -1;
}

static int reap(pid_t *pids, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int st = 0;
        if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
            bad = 1;
    }
    return bad;
}

/* One publisher run: n arrays of `bytes`; per-array cost samples in ns.
 * drained: wait (untimed) until every subscriber released each array
 * before the next, so every commit finds them all asleep. */
static int publish(ndc_chan *ch, uint64_t bytes, int n, int64_t *cost, int *ncost, double *wall_s, int drained)
{
    int64_t shape[1] = { (int64_t)(bytes / 8) };
    int k = 0;
    int64_t t0 = mono_ns();
    for (int i = 0; i < n; i++) {
        struct ndc_array a;
        ndc_array_init(&a, NDC_U64, 1, shape, NULL);
        a.tag = (uint64_t)i;
        int64_t s0 = cost ? cpu_ns() : 0;
        int r = ndc_reserve(ch, &a, 0);
        int waited = r == -EAGAIN;
        if (waited)
            r = ndc_reserve(ch, &a, NDC_FOREVER);
        if (r)
            return r;
        uint64_t *w = a.data;
        if (bytes >= 16) {
            w[0] = a.tag;
            w[bytes / 8 - 1] = ~a.tag;
        }
        int64_t s1 = cost ? cpu_ns() : 0;
        if ((r = ndc_commit(ch, &a)))
            return r;
        int64_t s2 = cost ? cpu_ns() : 0;
        if (!waited && cost)
            cost[k++] = (s1 - s0) + (s2 - s1);
        if (drained && (r = ndc_wait_drained(ch, 0, NDC_FOREVER)))
            return r;
        if (drained)
            usleep(20);   /* the subscribers are asleep again before the next commit */
    }
    *wall_s = (double)(mono_ns() - t0) / 1e9;
    *ncost = k;
    return 0;
}

int bench_fanout(struct fanout_result *out, int quick)
{
    memset(out, 0, sizeof *out);
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return -1;
    static const int subs[FANOUT_NS] = { 1, 2, 4 };
    static const uint64_t sizes[FANOUT_NB] = { 8, 16 * MiB };
    int n = quick ? 20000 : 100000;
    int64_t *cost = malloc(sizeof *cost * (size_t)n);
    pid_t pids[8];
    int err = 0;
    for (int b = 0; b < FANOUT_NB && !err; b++) {
        for (int s = 0; s < FANOUT_NS && !err; s++) {
            int count = sizes[b] > 4096 ? n / 20 : n;
            ndc_chan *ch = bchan(4, sizes[b], NDC_SLOW_BLOCK);
            memset(sh, 0, sizeof *sh);
            sh->no_spin = 1;
            if (!ch || start_subscribers(ch, sh, subs[s], 0, 0, pids)) {
                err = -1;
                break;
            }
            int k = 0;
            double wall = 0;
            err = publish(ch, sizes[b], count, NULL, &k, &wall, 0);
            double w = wall;
            /* the cost in one regime for every S: each commit wakes sleeping subscribers */
            if (!err)
                err = publish(ch, sizes[b], count / 10, cost, &k, &wall, 1);
            wall = w;
            ndc_close(ch);
            err |= reap(pids, subs[s]) | atomic_load(&sh->bad);
            ndc_free(ch);
            qsort(cost, (size_t)k, sizeof *cost, cmp_i64);
            out->cost_us[b][s] = k ? (double)cost[k / 2] / 1e3 : -1;
            out->per_array_us[b][s] = wall / count * 1e6;
            out->immediate[b][s] = (double)k / count;
        }
    }
    /* memory: 256 MiB to 4 subscribers that read every page */
    if (!err) {
        uint64_t big = 256 * MiB;
        ndc_chan *ch = bchan(2, big, NDC_SLOW_BLOCK);
        memset(sh, 0, sizeof *sh);
        if (!ch || start_subscribers(ch, sh, 4, 1, 0, pids)) {
            err = -1;
        } else {
            int k;
            double wall;
            err = publish(ch, big, 6, cost, &k, &wall, 0);
            struct stat st;
            if (fstat(ndc_fd(ch), &st) == 0)
                out->segment_mib = (double)st.st_blocks * 512 / (double)MiB;
            ndc_close(ch);
            err |= reap(pids, 4) | atomic_load(&sh->bad);
            for (int i = 0; i < 4; i++)
                out->private_mib += (double)atomic_load(&sh->anon_kb[i]) / 1024;
            out->array_mib = (double)big / (double)MiB;
        }
        ndc_free(ch);
    }
    /* latest: the publisher's rate without and with a sleeping subscriber,
     * alternated three times (the median of each: the machine is shared) */
    double rate[2][3];
    int m = n * 50;   /* about a quarter of a second alone */
    for (int round = 0; round < 3 && !err; round++) {
        for (int with = 0; with < 2 && !err; with++) {
            ndc_chan *ch = bchan(4, 64, NDC_SLOW_LATEST);
            memset(sh, 0, sizeof *sh);
            if (!ch || (with && start_subscribers(ch, sh, 1, 0, 1000, pids))) {
                err = -1;
                ndc_free(ch);
                break;
            }
            int k;
            double wall;
            err = publish(ch, 64, m, NULL, &k, &wall, 0);
            ndc_close(ch);
            if (with)
                err |= reap(pids, 1) | atomic_load(&sh->bad);
            ndc_free(ch);
            rate[with][round] = (double)m / wall;
        }
    }
    for (int with = 0; with < 2 && !err; with++) {
        double *r = rate[with], t;
        for (int a = 0; a < 3; a++)
            for (int b = a + 1; b < 3; b++)
                if (r[b] < r[a])
                    t = r[a], r[a] = r[b], r[b] = t;
        out->latest_rate[with] = r[1];
    }
    free(cost);
    munmap(sh, sizeof *sh);
    out->ok = !err;
    return err ? -1 : 0;
}
