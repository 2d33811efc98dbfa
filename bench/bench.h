/*
 * ndchan-bench: what every part of the benchmark shares.
 *
 * A measurement ("cell") is one transport at one array size in one mode.
 * The orchestrator (main.c) sets the transport's links up, forks two workers
 * pinned to the chosen CPUs (harness.c), and collects what they wrote into a
 * shared control page. A transport is a pair of one-way links with the same
 * five verbs, so every transport runs the very same loops:
 *
 *   tx_begin  where the sender writes the next array (a slot, or its buffer)
 *   tx_end    send it                                  (the transport's work)
 *   rx_begin  receive the next array, return its bytes (the transport's work)
 *   rx_end    give it back (release a loan, free a decoded array)
 *
 * and the harness stamps a fixed sample of every array before tx_end and
 * checks the sample on the bytes rx_begin returned (verify.c): a transport
 * that delivered stale or torn data fails the cell.
 */
#ifndef NDCHAN_BENCH_H
#define NDCHAN_BENCH_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ndchan.h"
#include <sys/types.h>

#define KiB (1024ull)
#define MiB (1024ull * 1024)
#define GiB (1024ull * 1024 * 1024)

#define MAX_REPS     32
#define MAX_SAMPLES  200000      /* latency samples kept per cell */
#define ERR_LEN      240

/* ---- links: one direction of a transport -------------------------------- */

struct link;
struct link_ops {
    const char *name;        /* row name in every output: "pipe", "ndchan-loan" */
    const char *what;        /* one line for --list and the JSON */
    /* Parent, before fork: make what both processes inherit. 0 or -errno,
     * with a message in l->err. */
    int  (*create)(struct link *l);
    /* Child, after fork: become the sending (tx=1) or receiving side. */
    int  (*open)(struct link *l, int tx);
    void *(*tx_begin)(struct link *l, size_t n);
    int  (*tx_end)(struct link *l, size_t n);
    const void *(*rx_begin)(struct link *l, size_t n);
    int  (*rx_end)(struct link *l);
    void (*close)(struct link *l, int tx);     /* child, before exit */
    void (*destroy)(struct link *l);           /* parent, after the workers exit */
};

struct link {
    const struct link_ops *ops;
    size_t   max_bytes;      /* the largest array this cell sends */
    uint32_t slots;          /* arrays in flight the transport may buffer */
    int      dir;            /* 0: A->B, 1: B->A (the pong of a ping-pong) */
    int      fd[2];          /* pipes, sockets */
    void    *st;             /* the transport's own state */
    uint64_t seq;            /* arrays moved (serialized header check) */
    char     err[ERR_LEN];
};

/* The transports (links_posix.c, link_zmq*.c, link_ndchan.c). */
extern const struct link_ops link_pipe, link_pipe_small, link_pipe_ser, link_unix;
extern const struct link_ops link_ndchan_loan, link_ndchan_copy;
extern const struct link_ops link_rawcopy;     /* the cross-core copy ceiling (link_rawcopy.c) */
const struct link_ops *link_zmq(void);         /* NULL when built without libzmq */

/* ---- the array sample every transport is checked on ---------------------- */

/* Stamp `n` bytes at p (a float64 array) with the sample of message `seq`;
 * verify returns 0 when the sample read from p matches, or -EBADMSG with
 * a message in err. Both touch at most SAMPLE_WORDS words spread over the
 * whole array, the first and the last included. */
#define SAMPLE_WORDS 64
void sample_stamp(void *p, size_t n, uint64_t seq);
int  sample_verify(const void *p, size_t n, uint64_t seq, char *err);
uint64_t sample_value(uint64_t seq, unsigned i);

/* ---- utilities (util.c) ------------------------------------------------- */

int64_t now_ns(void);
int     pin_cpu(int cpu);
void   *map_shared(size_t len);          /* MAP_SHARED|MAP_ANONYMOUS, or NULL */
void   *alloc_buf(size_t len);           /* page-aligned, pre-faulted, or NULL */
void    free_buf(void *p, size_t len);
int     write_all(int fd, const void *p, size_t n);    /* 0 or -errno */
int     read_all(int fd, void *p, size_t n);           /* 0, -errno, -EPIPE on EOF */
double  cpu_seconds_self(void);          /* user + system, getrusage */
long    futex_wait(_Atomic uint32_t *w, uint32_t val, int64_t timeout_ns);
long    futex_wake(_Atomic uint32_t *w, int n);
const char *fmt_size(uint64_t bytes, char *buf);   /* "4 KiB", "256 MiB" */
int     cmp_double(const void *a, const void *b);
double  percentile(const double *sorted, size_t n, double q);

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---- cache misses (perfctr.c) -------------------------------------------- */

/* Hardware counters of the calling process, user space only, opened with
 * perf_event_open(2) disabled; enable/disable around what is counted. */
enum { PMC_MISSES, PMC_L1D, NPMC };     /* PERF_COUNT_HW_CACHE_MISSES, L1D read misses */
extern const char *const pmc_names[NPMC];
struct pmc { int fd[NPMC]; };
void pmc_open(struct pmc *p, int err[NPMC]);    /* err[i]: 0 or the errno of counter i */
void pmc_enable(struct pmc *p);
void pmc_disable(struct pmc *p);
void pmc_read(struct pmc *p, double out[NPMC]); /* counts, scaled if shared; -1: not counted */
void pmc_close(struct pmc *p);
/* Once, in the orchestrator: 0 when a counter opens here, else -errno with
 * the reason in why. pmc_why: the reason counter i failed with errno err. */
int  pmc_probe(char *why, size_t len);
const char *pmc_why(int i, int err, char *buf, size_t len);

/* ---- cells: what the workers run and report ------------------------------ */

enum mode { M_TPUT, M_LAT, M_MEMCPY, M_SPIN, M_FUTEX };

struct cell {
    enum mode mode;
    const struct link_ops *ops;   /* M_TPUT, M_LAT */
    const char *name;             /* transport row name */
    uint64_t bytes;
    int      cpu[2];
    int      sleep_us;            /* M_LAT/M_SPIN/M_FUTEX: the pinger pauses this long between
                                     round trips, so the peer has gone to sleep */
    int      reps;
    double   rep_time;            /* seconds per repetition (aimed at) */
    int      warmup;              /* minimum warm-up messages; 0 = auto */
    double   timeout;             /* seconds before the cell is killed */
    uint32_t slots;               /* ndchan slots per channel; 0: the library's default for
                                     round trips, 4 (2 above 64 MiB) for throughput */
    int      count_misses;        /* M_LAT/M_SPIN: each worker counts its cache misses over
                                     the repetitions' loops (perfctr.c) */
};

/* The page both workers share with the orchestrator. */
struct ctl {
    _Atomic uint32_t bar_count, bar_gen;
    _Atomic int      failed;
    char     err[ERR_LEN];
    uint64_t msgs;                /* messages (or round trips) per repetition */
    int      reps;
    int64_t  t_start[2][MAX_REPS];  /* per worker: left the start barrier */
    int64_t  t_end[2][MAX_REPS];    /* per worker: done with its part */
    double   cpu[2][MAX_REPS];      /* per worker: CPU seconds in the repetition */
    uint64_t nsamples;
    double   pmc[2][NPMC];        /* per worker: counted over the repetitions; -1 not counted */
    int      pmc_err[2][NPMC];    /* per worker: the errno perf_event_open gave, or 0 */
    double   lat[MAX_SAMPLES];    /* round trips, ns, in the order taken */
};

/* What one cell gave. */
struct result {
    char     kind[16];            /* "throughput", "latency" */
    char     transport[32];
    char     variant[24];         /* "", "peer-asleep", "same-core" */
    uint64_t bytes;
    int      cpu[2];
    int      ok;                  /* 1 measured, 0 failed, -1 skipped */
    char     err[ERR_LEN];
    int      nreps;
    uint64_t msgs;                /* per repetition */
    /* throughput, GB/s (1e9 bytes per second) */
    double   gbps_med, gbps_min, gbps_max;
    /* latency: round trip, microseconds */
    uint64_t nsamples;
    double   p50, p50_min, p50_max, p99, p999, lat_min;
    double   cpu_s_per_gib;       /* both processes */
    double   peak_mib[2];         /* max RSS of each process */
    int      from_python;
    uint32_t slots;               /* ndchan rows: slots per channel; 0 for the others */
    int      pmc_asked;           /* cache misses were to be counted (cell.count_misses) */
    double   pmc_rt[2][NPMC];     /* misses per round trip in worker A, B; < 0: not counted */
    int      pmc_err[NPMC];       /* the errno of a counter that did not open, or 0 */
};

extern int64_t bench_spin_ns;   /* --spin-ns, for ndchan's channels */
extern struct ndc_chan_opts bench_placement;
/* CPU used by a receiver asleep on an empty channel for `seconds`, in
 * percent of one core (bench/idle.c); -1 if it could not be measured. */
double bench_idle_cpu_percent(double seconds);  /* --numa: numa_* fields for ndchan's channels */

/* bridge.c (bridge_stub.c without UCX): `--parts bridge` prints its own
 * rows and targets; -1 when a measurement failed. */
int bench_bridge(void);

/* harness.c */
int  run_cell(const struct cell *c, struct ctl *ctl, struct result *r);

/* python.c: run bench/python/mp_bench.py and append its results. */
struct pyopts {
    const char *python, *script;
    int cpu[2];
    int reps;
    double rep_time;
    int sleep_us, asleep;
    const uint64_t *tput_sizes; int ntput;
    const uint64_t *lat_sizes; int nlat;
};
int run_python(const struct pyopts *o, struct result **res, int *nres, int *cap, char *why);

#endif
