/*
 * Running one cell: fork the workers, pin them, run the loops, reap them.
 *
 * Worker A (index 0) is the producer, or the pinger of a ping-pong; worker B
 * (index 1) the consumer, or the ponger. They meet at barriers in a shared
 * control page (struct ctl) and write their timings there; the orchestrator
 * reads them after both have exited and takes each worker's CPU time and
 * peak RSS from wait4(). Every loop is the same for every transport:
 *
 *   throughput  A: begin, stamp, end, repeated; B: begin, verify, end.
 *               A repetition is timed from the first worker leaving the start
 *               barrier to B's last verified array.
 *   latency     A: begin+stamp (untimed); t0; send; receive the reply; t1;
 *               then verify and give back (untimed). B has its reply begun and
 *               stamped before it waits, so the timed path is exactly
 *               send -> receive -> send back -> receive, as for the raw spin
 *               and futex floors, and checking the sample never adds to it.
 *
 * The warm-up (a fixed count both workers know) faults every slot and buffer
 * in and lets A estimate how many messages fill a repetition.
 */
#include "bench.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct ctl *C;
static int nworkers;

static _Noreturn void fail(const char *fmt, ...)
{
    if (!atomic_exchange(&C->failed, 1)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(C->err, ERR_LEN, fmt, ap);
        va_end(ap);
    }
    atomic_fetch_add(&C->bar_gen, 1);
    futex_wake(&C->bar_gen, INT_MAX);
    _exit(1);
}

/* Spins briefly, then sleeps: on one core a spinning barrier would eat the
 * peer's time slice. */
static void barrier(void)
{
    uint32_t gen = atomic_load_explicit(&C->bar_gen, memory_order_acquire);
    if (atomic_fetch_add(&C->bar_count, 1) == (uint32_t)nworkers - 1) {
        atomic_store(&C->bar_count, 0);
        atomic_fetch_add_explicit(&C->bar_gen, 1, memory_order_release);
        futex_wake(&C->bar_gen, INT_MAX);
        return;
    }
    for (int i = 0; atomic_load_explicit(&C->bar_gen, memory_order_acquire) == gen; i++) {
        if (atomic_load(&C->failed))
            _exit(1);
        if (i < 1000)
            cpu_relax();
        else
            futex_wait(&C->bar_gen, gen, 10 * 1000 * 1000);
    }
}

static void pause_us(int us)
{
    struct timespec ts = { us / 1000000, (long)(us % 1000000) * 1000 };
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
        ;
}

static uint64_t clampu(double v, uint64_t lo, uint64_t hi)
{
    if (!(v > (double)lo))
        return lo;
    if (v > (double)hi)
        return hi;
    return (uint64_t)v;
}

static uint64_t auto_warmup(const struct cell *c, uint64_t budget, uint64_t lo, uint64_t hi)
{
    if (c->warmup > 0)
        return (uint64_t)c->warmup;
    return clampu((double)budget / (double)(c->bytes ? c->bytes : 1), lo, hi);
}

/* ---- throughput ----------------------------------------------------------- */

static void rep_begin(int w, int r, double *cpu0)
{
    barrier();
    C->t_start[w][r] = now_ns();
    *cpu0 = cpu_seconds_self();
}

static void rep_end(int w, int r, double cpu0)
{
    C->t_end[w][r] = now_ns();
    C->cpu[w][r] = cpu_seconds_self() - cpu0;
}

static void produce(struct link *l, size_t n, uint64_t *seq)
{
    void *p = l->ops->tx_begin(l, n);
    if (!p)
        fail("%s", l->err);
    sample_stamp(p, n, (*seq)++);
    if (l->ops->tx_end(l, n))
        fail("%s", l->err);
}

static void consume(struct link *l, size_t n, uint64_t *seq)
{
    char err[ERR_LEN];
    const void *p = l->ops->rx_begin(l, n);
    if (!p)
        fail("%s", l->err);
    if (sample_verify(p, n, (*seq)++, err))
        fail("%s", err);
    if (l->ops->rx_end(l))
        fail("%s", l->err);
}

/* A estimates the cost of one message from the second half of the warm-up
 * (the first half pays the page faults) and publishes the count. */
static void calibrate(const struct cell *c, int w, int64_t t_half, int64_t t_done, uint64_t done,
                      uint64_t lo, uint64_t hi)
{
    if (w == 0) {
        double per = (double)(t_done - t_half) / (double)(done ? done : 1) * 1e-9;
        C->msgs = clampu(c->rep_time / (per > 0 ? per : 1e-9), lo, hi);
    }
    barrier();
}

/* Steady state, not fill and drain: after the calibration the producer
 * sends 1 + reps * msgs arrays without a pause; the consumer lets the
 * first one fill the pipeline and times each following group of `msgs`
 * arrays from the arrival of the group before it. Timing each repetition
 * from a barrier instead would charge transports that buffer whole arrays
 * (channel slots, ZeroMQ's queue) a pipeline fill per repetition. */
static void worker_tput(const struct cell *c, struct link *l, int w)
{
    size_t n = c->bytes;
    /* every slot written once; huge arrays need no more than that */
    uint64_t seq = 0, warm = auto_warmup(c, 32 * MiB, 2, 1000);
    if (warm < l->slots)
        warm = l->slots;
    if (l->ops->open(l, w == 0))
        fail("%s: %s", l->ops->name, l->err[0] ? l->err : "open failed");
    barrier();
    int64_t t0 = now_ns(), th = t0;
    for (uint64_t i = 0; i < warm; i++) {
        if (i == warm / 2)
            th = now_ns();
        if (w == 0)
            produce(l, n, &seq);
        else
            consume(l, n, &seq);
    }
    calibrate(c, w, th, now_ns(), warm - warm / 2, 1, 1ull << 24);
    double cpu0;
    rep_begin(w, 0, &cpu0);
    if (w == 0) {
        for (uint64_t i = 0, total = 1 + (uint64_t)c->reps * C->msgs; i < total; i++)
            produce(l, n, &seq);
        C->t_end[0][0] = now_ns();
    } else {
        consume(l, n, &seq);
        C->t_start[1][0] = now_ns();
        for (int r = 0; r < c->reps; r++) {
            for (uint64_t i = 0; i < C->msgs; i++)
                consume(l, n, &seq);
            C->t_end[1][r] = now_ns();
            if (r + 1 < c->reps)
                C->t_start[1][r + 1] = C->t_end[1][r];
        }
    }
    C->cpu[w][0] = cpu_seconds_self() - cpu0;   /* the whole steady phase, preroll included */
    barrier();
    l->ops->close(l, w == 0);
}

/* ---- cache misses around the round trips --------------------------------------- */

/* Each worker counts its own process over the repetitions' loops (the
 * untimed steps of each round trip included: they are part of every hand-off),
 * not the warm-up or the barriers. A counter that does not open leaves its
 * errno in the control page and counts nothing; the cell goes on. */
static void pmc_start(const struct cell *c, int w, struct pmc *pm)
{
    for (int i = 0; i < NPMC; i++)
        pm->fd[i] = -1;
    if (c->count_misses)
        pmc_open(pm, C->pmc_err[w]);
}

static void pmc_finish(int w, struct pmc *pm)
{
    pmc_read(pm, C->pmc[w]);
    pmc_close(pm);
}

/* ---- latency ---------------------------------------------------------------- */

#define PING 0ull
#define PONG (1ull << 62)

static void worker_lat(const struct cell *c, struct link *L, int w)
{
    size_t n = c->bytes;
    struct link *out = &L[w == 0 ? 0 : 1], *in = &L[w == 0 ? 1 : 0];
    char err[ERR_LEN];
    if (out->ops->open(out, 1))
        fail("%s: %s", out->ops->name, out->err[0] ? out->err : "open failed");
    if (in->ops->open(in, 0))
        fail("%s: %s", in->ops->name, in->err[0] ? in->err : "open failed");
    struct pmc pm;
    pmc_start(c, w, &pm);
    barrier();
    uint64_t warm = auto_warmup(c, 16 * MiB, 3, 200), k = 0, seq = 0;
    /* Every slot of both channels written once in the first half, so that
     * the second half, which calibrates, pays no first touch. */
    if (warm < 2 * ((uint64_t)out->slots + 1))
        warm = 2 * ((uint64_t)out->slots + 1);
    int64_t th = 0;
    /* phase 0: the warm-up, one pass; phase 1: the repetitions */
    for (int phase = 0; phase < 2; phase++) {
        for (int r = 0; r < (phase ? c->reps : 1); r++) {
            double cpu0 = 0;
            uint64_t m = phase ? C->msgs : warm;
            if (phase) {
                rep_begin(w, r, &cpu0);
                pmc_enable(&pm);
            }
            for (uint64_t i = 0; i < m; i++, seq++) {
                if (!phase && i == m / 2)
                    th = now_ns();
                void *p = out->ops->tx_begin(out, n);
                if (!p)
                    fail("%s", out->err);
                sample_stamp(p, n, seq | (w == 0 ? PING : PONG));
                /* Drain the stamp's stores before the clock starts: else the
                 * first fence on the path (the commit's) pays for them, and a
                 * big array's 64 cache misses would pass for hand-off time. */
                atomic_thread_fence(memory_order_seq_cst);
                const void *q;
                if (w == 0) {
                    int64_t t0 = now_ns();
                    if (out->ops->tx_end(out, n))
                        fail("%s", out->err);
                    q = in->ops->rx_begin(in, n);
                    int64_t t1 = now_ns();
                    if (!q)
                        fail("%s", in->err);
                    if (phase && k < MAX_SAMPLES)
                        C->lat[k++] = (double)(t1 - t0);
                } else {
                    q = in->ops->rx_begin(in, n);
                    if (!q)
                        fail("%s", in->err);
                    if (out->ops->tx_end(out, n))
                        fail("%s", out->err);
                }
                if (sample_verify(q, n, seq | (w == 0 ? PONG : PING), err))
                    fail("%s", err);
                if (in->ops->rx_end(in))
                    fail("%s", in->err);
                if (w == 0 && c->sleep_us)
                    pause_us(c->sleep_us);
            }
            if (phase) {
                pmc_disable(&pm);
                rep_end(w, r, cpu0);
            }
        }
        if (!phase)
            calibrate(c, w, th, now_ns(), warm - warm / 2, 3, MAX_SAMPLES / (uint64_t)c->reps);
    }
    if (w == 0)
        C->nsamples = k;
    pmc_finish(w, &pm);
    barrier();
    out->ops->close(out, 1);
    in->ops->close(in, 0);
}

/* ---- the machine's own floors ----------------------------------------------- */

/* Two words on their own cache lines: A writes ping, B writes pong. */
struct floor_words {
    _Alignas(64) _Atomic uint32_t ping;
    _Alignas(64) _Atomic uint32_t pong;
};
static struct floor_words *F;

static inline void spin_until(_Atomic uint32_t *w, uint32_t v)
{
    while (atomic_load_explicit(w, memory_order_acquire) != v)
        cpu_relax();
}

/* The plain futex protocol: publish, wake, and sleep at once until the
 * peer's answer; no spinning, so every round trip pays the kernel's wakes. */
static inline void futex_until(_Atomic uint32_t *w, uint32_t v)
{
    uint32_t cur;
    while ((cur = atomic_load_explicit(w, memory_order_acquire)) != v)
        futex_wait(w, cur, -1);
}

static void worker_floor(const struct cell *c, int w)
{
    int fut = c->mode == M_FUTEX;
    uint64_t warm = c->warmup > 0 ? (uint64_t)c->warmup : 200, total = 0, k = 0;
    uint32_t v = 0;
    int64_t th = 0;
    struct pmc pm;
    pmc_start(c, w, &pm);
    barrier();
    for (int phase = 0; phase < 2; phase++) {
        for (int r = 0; r < (phase ? c->reps : 1); r++) {
            double cpu0 = 0;
            uint64_t m = phase ? total : warm;
            if (phase) {
                rep_begin(w, r, &cpu0);
                pmc_enable(&pm);
            }
            for (uint64_t i = 0; i < m; i++) {
                if (!phase && i == m / 2)
                    th = now_ns();
                v++;
                if (w == 0) {
                    int64_t t0 = now_ns();
                    atomic_store_explicit(&F->ping, v, memory_order_release);
                    if (fut) {
                        futex_wake(&F->ping, 1);
                        futex_until(&F->pong, v);
                    } else {
                        spin_until(&F->pong, v);
                    }
                    int64_t t1 = now_ns();
                    if (phase && k < MAX_SAMPLES)
                        C->lat[k++] = (double)(t1 - t0);
                    if (c->sleep_us)
                        pause_us(c->sleep_us);
                } else {
                    if (fut)
                        futex_until(&F->ping, v);
                    else
                        spin_until(&F->ping, v);
                    atomic_store_explicit(&F->pong, v, memory_order_release);
                    if (fut)
                        futex_wake(&F->pong, 1);
                }
            }
            if (phase) {
                pmc_disable(&pm);
                rep_end(w, r, cpu0);
            }
        }
        if (!phase) {
            calibrate(c, w, th, now_ns(), warm - warm / 2, 3, MAX_SAMPLES / (uint64_t)c->reps);
            total = C->msgs;
        }
    }
    if (w == 0)
        C->nsamples = k;
    pmc_finish(w, &pm);
    barrier();
}

/* One thread copying: the ceiling of any path that copies the array once.
 * Each copy is stamped and checked like every transport's arrays. */
static void worker_memcpy(const struct cell *c)
{
    size_t n = c->bytes;
    char err[ERR_LEN];
    void *src = alloc_buf(n), *dst = alloc_buf(n);
    if (!src || !dst)
        fail("out of memory for two %zu-byte buffers", n);
    uint64_t warm = auto_warmup(c, 64 * MiB, 3, 10000), seq = 0;
    int64_t th = 0;
    for (uint64_t i = 0; i < warm; i++, seq++) {
        if (i == warm / 2)
            th = now_ns();
        sample_stamp(src, n, seq);
        memcpy(dst, src, n);
        __asm__ __volatile__("" ::: "memory");
        if (sample_verify(dst, n, seq, err))
            fail("%s", err);
    }
    calibrate(c, 0, th, now_ns(), warm - warm / 2, 1, 1ull << 26);
    for (int r = 0; r < c->reps; r++) {
        double cpu0;
        rep_begin(0, r, &cpu0);
        for (uint64_t i = 0; i < C->msgs; i++, seq++) {
            sample_stamp(src, n, seq);
            memcpy(dst, src, n);
            __asm__ __volatile__("" ::: "memory");
            if (sample_verify(dst, n, seq, err))
                fail("%s", err);
        }
        rep_end(0, r, cpu0);
    }
    free_buf(src, n);
    free_buf(dst, n);
}

static _Noreturn void worker(const struct cell *c, struct link *L, int w)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int e = pin_cpu(c->cpu[w]);
    if (e)
        fail("cannot pin to CPU %d: %s", c->cpu[w], strerror(-e));
    switch (c->mode) {
    case M_TPUT:   worker_tput(c, &L[0], w); break;
    case M_LAT:    worker_lat(c, L, w); break;
    case M_MEMCPY: worker_memcpy(c); break;
    case M_SPIN:
    case M_FUTEX:  worker_floor(c, w); break;
    }
    _exit(0);
}

/* ---- the orchestrator's side -------------------------------------------------- */

static double median_of(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n ? (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2])) : 0;
}

/* Waits for both workers; kills what is left at the deadline, or a second
 * after its partner failed. SIGCHLD is blocked in the orchestrator (main). */
static int reap(pid_t *pid, int nw, double timeout, struct rusage *ru, int *status, char *err)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int64_t deadline = now_ns() + (int64_t)(timeout * 1e9), grace = 0;
    int left = nw, rc = 0;
    while (left) {
        for (int i = 0; i < nw; i++) {
            if (pid[i] <= 0)
                continue;
            pid_t p = wait4(pid[i], &status[i], WNOHANG, &ru[i]);
            if (p == pid[i]) {
                pid[i] = 0;
                left--;
                if ((!WIFEXITED(status[i]) || WEXITSTATUS(status[i])) && !grace)
                    grace = now_ns() + 1000000000;
            }
        }
        if (!left)
            break;
        int64_t now = now_ns(), until = grace ? (grace < deadline ? grace : deadline) : deadline;
        if (now >= until) {
            if (now >= deadline && !rc) {
                snprintf(err, ERR_LEN, "timed out after %.0f s", timeout);
                rc = -ETIMEDOUT;
            }
            for (int i = 0; i < nw; i++)
                if (pid[i] > 0)
                    kill(pid[i], SIGKILL);
            grace = deadline = now + 5000000000;   /* reap the killed ones */
            continue;
        }
        int64_t wait = until - now;
        if (wait > 50000000)
            wait = 50000000;   /* also poll: a SIGCHLD may have come before we blocked */
        struct timespec ts = { wait / 1000000000, wait % 1000000000 };
        sigtimedwait(&chld, NULL, &ts);
    }
    return rc;
}

int run_cell(const struct cell *c, struct ctl *ctl, struct result *r)
{
    struct link L[2];
    int nl = c->mode == M_LAT ? 2 : c->mode == M_TPUT ? 1 : 0;
    nworkers = c->mode == M_MEMCPY ? 1 : 2;
    C = ctl;
    memset(ctl, 0, offsetof(struct ctl, lat));
    ctl->reps = c->reps;
    static struct floor_words *fw;
    if (!fw)
        fw = map_shared(sizeof *fw);
    F = fw;
    atomic_store(&F->ping, 0);
    atomic_store(&F->pong, 0);

    r->ok = 0;
    r->nreps = c->reps;
    r->bytes = c->bytes;
    r->cpu[0] = c->cpu[0];
    r->cpu[1] = c->cpu[1];
    snprintf(r->transport, sizeof r->transport, "%s", c->name);
    snprintf(r->kind, sizeof r->kind, "%s", c->mode == M_TPUT || c->mode == M_MEMCPY ? "throughput" : "latency");

    memset(L, 0, sizeof L);
    for (int i = 0; i < nl; i++) {
        L[i].ops = c->ops;
        L[i].max_bytes = c->bytes;
        L[i].dir = i;
        L[i].fd[0] = L[i].fd[1] = -1;
        /* Round trips: the slots asked for, else the library's default (the
         * link reads back what it got). Throughput: few slots for huge
         * arrays, as slots cost memory once touched. */
        L[i].slots = c->slots ? c->slots : c->mode == M_LAT ? 0 : c->bytes > 64 * MiB ? 2 : 4;
        int e = c->ops->create(&L[i]);
        if (e) {
            snprintf(r->err, ERR_LEN, "%s", L[i].err[0] ? L[i].err : strerror(-e));
            for (int j = 0; j <= i; j++)
                if (c->ops->destroy)
                    c->ops->destroy(&L[j]);
            return -1;
        }
    }

    if (nl && (c->ops == &link_ndchan_loan || c->ops == &link_ndchan_copy))
        r->slots = L[0].slots;

    pid_t pid[2] = { 0, 0 };
    fflush(NULL);
    for (int w = 0; w < nworkers; w++) {
        pid[w] = fork();
        if (pid[w] == 0)
            worker(c, L, w);
        if (pid[w] < 0) {
            snprintf(r->err, ERR_LEN, "fork: %s", strerror(errno));
            atomic_store(&ctl->failed, 1);
            if (w)
                kill(pid[0], SIGKILL);
            pid[w] = 0;
            break;
        }
    }
    struct rusage ru[2];
    int status[2] = { 0, 0 };
    memset(ru, 0, sizeof ru);
    char terr[ERR_LEN] = "";
    int trc = reap(pid, nworkers, c->timeout, ru, status, terr);
    for (int i = 0; i < nl; i++)
        c->ops->destroy(&L[i]);

    if (ctl->failed || trc) {
        snprintf(r->err, ERR_LEN, "%s", ctl->err[0] ? ctl->err : terr[0] ? terr : r->err);
        return -1;
    }
    for (int w = 0; w < nworkers; w++) {
        if (!WIFEXITED(status[w]) || WEXITSTATUS(status[w])) {
            if (WIFSIGNALED(status[w]))
                snprintf(r->err, ERR_LEN, "worker %c killed by signal %d (%s)", 'A' + w,
                         WTERMSIG(status[w]), strsignal(WTERMSIG(status[w])));
            else
                snprintf(r->err, ERR_LEN, "worker %c exited with %d", 'A' + w, WEXITSTATUS(status[w]));
            return -1;
        }
        r->peak_mib[w] = (double)ru[w].ru_maxrss / 1024.0;
    }

    r->msgs = ctl->msgs;
    double cpu = 0, moved = 0;
    for (int i = 0; i < c->reps; i++) {
        cpu += ctl->cpu[0][i] + ctl->cpu[1][i];
    }
    if (c->mode == M_TPUT || c->mode == M_MEMCPY) {
        /* the consumer's windows (the memcpy worker's repetitions) */
        double g[MAX_REPS];
        int cons = nworkers - 1;
        for (int i = 0; i < c->reps; i++) {
            double secs = (double)(ctl->t_end[cons][i] - ctl->t_start[cons][i]) * 1e-9;
            g[i] = (double)ctl->msgs * (double)c->bytes / secs / 1e9;
        }
        r->gbps_med = median_of(g, c->reps);
        r->gbps_min = g[0];
        r->gbps_max = g[c->reps - 1];
        moved = ((double)ctl->msgs * c->reps + (c->mode == M_TPUT)) * (double)c->bytes;
    } else {
        uint64_t ns = ctl->nsamples, per = ns / (uint64_t)c->reps;
        if (ns == 0 || per == 0) {
            snprintf(r->err, ERR_LEN, "no samples");
            return -1;
        }
        double p50s[MAX_REPS];
        for (int i = 0; i < c->reps; i++) {
            qsort(ctl->lat + per * (uint64_t)i, per, sizeof(double), cmp_double);
            p50s[i] = percentile(ctl->lat + per * (uint64_t)i, per, 0.5) / 1e3;
        }
        qsort(p50s, (size_t)c->reps, sizeof(double), cmp_double);
        r->p50_min = p50s[0];
        r->p50_max = p50s[c->reps - 1];
        qsort(ctl->lat, ns, sizeof(double), cmp_double);
        r->nsamples = ns;
        r->p50 = percentile(ctl->lat, ns, 0.5) / 1e3;
        r->p99 = percentile(ctl->lat, ns, 0.99) / 1e3;
        r->p999 = percentile(ctl->lat, ns, 0.999) / 1e3;
        r->lat_min = ctl->lat[0] / 1e3;
        moved = 2.0 * (double)c->bytes * (double)ctl->msgs * c->reps;
        if (c->count_misses) {
            double rts = (double)ctl->msgs * c->reps;
            r->pmc_asked = 1;
            for (int i = 0; i < NPMC; i++) {
                r->pmc_err[i] = ctl->pmc_err[0][i] ? ctl->pmc_err[0][i] : ctl->pmc_err[1][i];
                for (int w = 0; w < 2; w++)
                    r->pmc_rt[w][i] = ctl->pmc[w][i] >= 0 && rts > 0 ? ctl->pmc[w][i] / rts : -1;
            }
        }
    }
    r->cpu_s_per_gib = moved > 0 ? cpu / (moved / (double)GiB) : 0;
    r->ok = 1;
    return 0;
}
