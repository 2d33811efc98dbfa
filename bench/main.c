/*
 * ndchan-bench: ndchan against the ways people move arrays between
 * processes today, and against the machine's own ceilings, in one run.
 *
 *   ndchan-bench                 quick run (about two minutes)
 *   ndchan-bench --full          the whole sweep, 4 KiB .. 1 GiB
 *   ndchan-bench --help          every option
 *
 * Writes a table on stdout and results.csv, results.json, throughput.png/svg,
 * latency.png/svg to --out (default bench/out). See harness.c for what each
 * loop times and bench.h for the transport interface.
 */
#include "bench.h"
#include "fanout.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ndchan.h"

#ifndef BENCH_SRCDIR
#define BENCH_SRCDIR "bench"
#endif
#ifndef BENCH_DATADIR
#define BENCH_DATADIR "/usr/local/share/ndchan"
#endif


/* ---- options ---------------------------------------------------------------- */

static struct {
    int full, reps, cpu[2], cpus_given, sleep_us, no_python, no_plot, warmup, list;
    double rep_time, timeout;
    const char *out, *only, *parts, *python, *pyscript, *plotscript;
    uint64_t tput[32], lat[32];
    int ntput, nlat;
    int64_t spin_ns;
} opt;

static const uint64_t quick_tput[] = { 4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 256 * MiB };
static const uint64_t full_tput[] = { 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB,
                                      16 * MiB, 64 * MiB, 256 * MiB, 1 * GiB };
static const uint64_t quick_lat[] = { 8, 4 * KiB, 1 * MiB, 64 * MiB };
static const uint64_t full_lat[] = { 8, 4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 64 * MiB, 256 * MiB };
/* The hand-off target compares 256 MiB with 8 B, so ndchan-loan always runs it. */
#define HANDOFF_BIG (256 * MiB)

static const char help[] =
"usage: ndchan-bench [options]\n"
"Moves float64 arrays between two pinned processes through ndchan and through\n"
"pipes, a unix socket, ZeroMQ and Python's multiprocessing, beside the machine's\n"
"ceilings (memcpy in one process, rawcopy between two: one memcpy each side\n"
"through shared memory) and floors (spin and futex round trips), and prints\n"
"ratios and targets.\n"
"\n"
"  --full             the whole sweep: 4 KiB..1 GiB, 5 repetitions (several minutes)\n"
"  --quick            the default: 5 sizes, 3 repetitions, about two minutes\n"
"  --cpus A,B         producer/pinger on CPU A, consumer/ponger on CPU B\n"
"                     (default: the first two CPUs this process may use)\n"
"  --reps N           repetitions per measurement (medians and min..max reported)\n"
"  --rep-time SEC     aimed length of one repetition (quick 0.1, full 0.25)\n"
"  --warmup N         warm-up messages before timing (default: by size; never fewer\n"
"                     than it takes to write every slot)\n"
"  --sizes LIST       throughput sizes, e.g. 4K,1M,16M,1G\n"
"  --lat-sizes LIST   round-trip sizes, e.g. 8,4K,1M,64M\n"
"  --only LIST        only these rows, e.g. memcpy,rawcopy,spin,futex,ndchan-loan,pipe,\n"
"                     mp-queue,idle\n"
"  --parts LIST       only these parts: throughput,latency,asleep,same-core,python,\n"
"                     slots (ndchan-loan's 8 B round trip at 1, 4, 16 and 64 slots per\n"
"                     channel, beside the spin floor), fanout (broadcast: the publisher's\n"
"                     cost with 1, 2, 4 subscribers, 256 MiB to 4 without a copy, the\n"
"                     latest policy with a sleeping subscriber), notify (ndc_notify_fd's\n"
"                     round trip in epoll against a raw eventfd, ndc_wait_any's wake-up\n"
"                     over 1, 128, 1000 channels: runs notify-rtt), bridge (ndchan-bridge vs\n"
"                     raw UCX; only when named)\n"
"  --sleep-us N       pause between round trips in the peer-asleep case (default 1000)\n"
"  --spin-ns N        ndchan spin budget (ndc_chan_opts.spin_ns; default 0 = library's)\n"
"  --numa P           ndchan payload placement: first-touch (default), bind:N, preferred:N,\n"
"                     interleave[:N,M,...], near-receiver (see ndchan-topo for the nodes)\n"
"  --out DIR          where results.csv/json and the plots go (default bench/out)\n"
"  --no-python        skip the Python rows;  --python PATH (default /usr/bin/python3)\n"
"  --python-script F  mp_bench.py to run;  --plot-script F  plot.gp to run\n"
"  --no-plot          skip gnuplot\n"
"  --timeout SEC      kill a measurement that takes longer (default 120, full 600)\n"
"  --list             list the transports and exit\n"
"Cache misses per round trip of the spin floor and of ndchan-loan at 8 B (slots sweep\n"
"included) are counted with perf_event_open where the machine allows it (a CPU PMU,\n"
"kernel.perf_event_paranoid <= 2 or CAP_PERFMON); otherwise one line says why.\n"
"Exit status: 0 after a run (the targets PASS or MISS in the report), 1 on a failure,\n"
"2 on a usage error.\n";

/* "4K", "1M", "1.5G", "4096": a size, or a usage error. */
static uint64_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= KiB; end++; break;
    case 'm': case 'M': v *= MiB; end++; break;
    case 'g': case 'G': v *= GiB; end++; break;
    default: break;
    }
    if (end == s || *end || errno == ERANGE || !(v >= 0) || v > 64.0 * GiB)
        cli_usage("size '%s': a number of bytes with an optional K, M or G", s);
    return (uint64_t)v;
}

static int parse_sizes(const char *s, uint64_t *out, int max)
{
    int n = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save)) {
        uint64_t v = parse_size(t);
        if (v < 8 || v % 8)
            cli_usage("size %s: must be a multiple of 8 bytes (float64)", t);
        out[n++] = v;
    }
    free(dup);
    return n;
}

static int in_list(const char *list, const char *name)
{
    if (!list)
        return 1;
    size_t l = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += l)
        if ((p == list || p[-1] == ',') && (p[l] == 0 || p[l] == ','))
            return 1;
    return 0;
}

static int selected(const char *name) { return in_list(opt.only, name); }
static int part(const char *name) { return in_list(opt.parts, name); }

static void default_cpus(void)
{
    cpu_set_t set;
    int k = 0;
    opt.cpu[0] = opt.cpu[1] = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int i = 0; i < CPU_SETSIZE && k < 2; i++)
            if (CPU_ISSET(i, &set))
                opt.cpu[k++] = i;
    if (k == 1)
        opt.cpu[1] = opt.cpu[0];
}

static const char *find_file(const char *given, const char *src, const char *inst)
{
    if (given)
        return given;
    if (access(src, R_OK) == 0)
        return src;
    return inst;
}

/* --numa POLICY into bench_placement, checked by creating a small channel
 * with it: a policy the machine cannot honour stops the run with the
 * library's reason instead of quietly measuring first touch. */
static char placement_text[96] = "first touch";
static void parse_numa(const char *arg)
{
    struct ndc_chan_opts *o = &bench_placement;
    char *end = NULL;
    if (!strcmp(arg, "first-touch")) {
        o->numa_policy = NDC_NUMA_FIRST_TOUCH;
    } else if (!strncmp(arg, "bind:", 5) || !strncmp(arg, "preferred:", 10)) {
        o->numa_policy = arg[0] == 'b' ? NDC_NUMA_BIND : NDC_NUMA_PREFERRED;
        o->numa_node = (int32_t)strtol(strchr(arg, ':') + 1, &end, 10);
        if (end == strchr(arg, ':') + 1 || *end)
            goto bad;
    } else if (!strncmp(arg, "interleave", 10) && (arg[10] == 0 || arg[10] == ':')) {
        o->numa_policy = NDC_NUMA_INTERLEAVE;
        for (const char *p = arg[10] ? arg + 11 : ""; *p; p = *end ? end + 1 : end) {
            long n = strtol(p, &end, 10);
            if (end == p || n < 0 || n > 63 || (*end && *end != ','))
                goto bad;
            o->numa_nodeset |= 1ull << n;
        }
    } else if (!strcmp(arg, "near-receiver")) {
        o->numa_policy = NDC_NUMA_NEAR_RECEIVER;
    } else {
        goto bad;
    }
    struct ndc_chan_opts probe = *o;
    probe.slots = 1;
    probe.slot_bytes = 4096;
    ndc_chan *ch;
    int e = ndc_create(&ch, NULL, &probe);
    if (e) {
        cli_fail(e, "--numa");
        exit(2);
    }
    ndc_free(ch);
    snprintf(placement_text, sizeof placement_text, "numa %s", arg);
    return;
bad:
    cli_usage("--numa wants first-touch, bind:N, preferred:N, interleave[:N,M,...] or "
              "near-receiver, not \"%s\"", arg);
}

static void parse_args(int argc, char **argv)
{
    cli_init("ndchan-bench", help);
    enum { O_FULL = 256, O_QUICK, O_CPUS, O_REPS, O_RT, O_WARM, O_SIZES, O_LSIZES, O_ONLY, O_SLEEP,
           O_SPIN, O_NUMA, O_PARTS, O_OUT, O_NOPY, O_PY, O_PYS, O_PLS, O_NOPLOT, O_TIMEOUT, O_LIST };
    static const struct option lo[] = {
        { "full", 0, 0, O_FULL }, { "quick", 0, 0, O_QUICK }, { "cpus", 1, 0, O_CPUS },
        { "reps", 1, 0, O_REPS }, { "rep-time", 1, 0, O_RT }, { "warmup", 1, 0, O_WARM },
        { "sizes", 1, 0, O_SIZES }, { "lat-sizes", 1, 0, O_LSIZES }, { "only", 1, 0, O_ONLY }, { "parts", 1, 0, O_PARTS },
        { "sleep-us", 1, 0, O_SLEEP }, { "spin-ns", 1, 0, O_SPIN }, { "numa", 1, 0, O_NUMA }, { "out", 1, 0, O_OUT },
        { "no-python", 0, 0, O_NOPY }, { "python", 1, 0, O_PY }, { "python-script", 1, 0, O_PYS },
        { "plot-script", 1, 0, O_PLS }, { "no-plot", 0, 0, O_NOPLOT }, { "timeout", 1, 0, O_TIMEOUT },
        { "list", 0, 0, O_LIST }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
    int c, reps = 0;
    double rt = 0, to = 0;
    const char *sizes = NULL, *lsizes = NULL;
    opt.sleep_us = 1000;
    opt.out = "bench/out";
    opt.python = "/usr/bin/python3";
    while ((c = cli_getopt(argc, argv, "h", lo)) != -1) {
        switch (c) {
        case O_FULL: opt.full = 1; break;
        case O_QUICK: opt.full = 0; break;
        case O_CPUS:
            {
                char *comma = strchr(optarg, ',');
                if (!comma)
                    cli_usage("--cpus wants A,B (two CPU numbers)");
                *comma = '\0';
                opt.cpu[0] = (int)cli_int("--cpus", optarg, 0, CPU_SETSIZE - 1);
                opt.cpu[1] = (int)cli_int("--cpus", comma + 1, 0, CPU_SETSIZE - 1);
            }
            opt.cpus_given = 1;
            break;
        case O_REPS: reps = (int)cli_int("--reps", optarg, 1, MAX_REPS); break;
        case O_RT: rt = cli_double("--rep-time", optarg, 0.001, 3600); break;
        case O_WARM: opt.warmup = (int)cli_int("--warmup", optarg, 0, 1000000); break;
        case O_SIZES: sizes = optarg; break;
        case O_LSIZES: lsizes = optarg; break;
        case O_ONLY: opt.only = optarg; break;
        case O_PARTS: opt.parts = optarg; break;
        case O_SLEEP: opt.sleep_us = (int)cli_int("--sleep-us", optarg, 0, 10000000); break;
        case O_SPIN: opt.spin_ns = cli_int("--spin-ns", optarg, -1, 1000000000); break;
        case O_NUMA: parse_numa(optarg); break;
        case O_OUT: opt.out = optarg; break;
        case O_NOPY: opt.no_python = 1; break;
        case O_PY: opt.python = optarg; break;
        case O_PYS: opt.pyscript = optarg; break;
        case O_PLS: opt.plotscript = optarg; break;
        case O_NOPLOT: opt.no_plot = 1; break;
        case O_TIMEOUT: to = cli_double("--timeout", optarg, 1, 86400); break;
        case O_LIST: opt.list = 1; break;
        }
    }
    cli_positional(argc, argv, 0, 0);
    opt.reps = reps > 0 ? (reps > MAX_REPS ? MAX_REPS : reps) : opt.full ? 5 : 3;
    opt.rep_time = rt > 0 ? rt : opt.full ? 0.25 : 0.1;
    opt.timeout = to > 0 ? to : opt.full ? 600 : 120;
    if (sizes)
        opt.ntput = parse_sizes(sizes, opt.tput, 32);
    else if (opt.full)
        memcpy(opt.tput, full_tput, sizeof full_tput), opt.ntput = (int)(sizeof full_tput / sizeof *full_tput);
    else
        memcpy(opt.tput, quick_tput, sizeof quick_tput), opt.ntput = (int)(sizeof quick_tput / sizeof *quick_tput);
    if (lsizes)
        opt.nlat = parse_sizes(lsizes, opt.lat, 32);
    else if (opt.full)
        memcpy(opt.lat, full_lat, sizeof full_lat), opt.nlat = (int)(sizeof full_lat / sizeof *full_lat);
    else
        memcpy(opt.lat, quick_lat, sizeof quick_lat), opt.nlat = (int)(sizeof quick_lat / sizeof *quick_lat);
    if (!opt.cpus_given)
        default_cpus();
    long ncpu = sysconf(_SC_NPROCESSORS_CONF);
    for (int i = 0; i < 2; i++)
        if (opt.cpu[i] >= ncpu)
            cli_usage("CPU %d does not exist (%ld CPUs)", opt.cpu[i], ncpu);
    opt.pyscript = find_file(opt.pyscript, BENCH_SRCDIR "/python/mp_bench.py", BENCH_DATADIR "/mp_bench.py");
    opt.plotscript = find_file(opt.plotscript, BENCH_SRCDIR "/plot.gp", BENCH_DATADIR "/plot.gp");
    bench_spin_ns = opt.spin_ns;
}

/* ---- the results ---------------------------------------------------------------- */

static struct result *R;
static int nR, capR;

static struct result *new_result(void)
{
    if (nR == capR) {
        capR = capR ? capR * 2 : 128;
        R = realloc(R, (size_t)capR * sizeof *R);
        if (!R) {
            perror("ndchan-bench");
            exit(1);
        }
    }
    memset(&R[nR], 0, sizeof *R);
    return &R[nR++];
}

static const struct result *find(const char *kind, const char *t, const char *variant, uint64_t bytes)
{
    for (int i = 0; i < nR; i++)
        if (R[i].ok == 1 && !strcmp(R[i].kind, kind) && !strcmp(R[i].transport, t) &&
            !strcmp(R[i].variant, variant) && R[i].bytes == bytes)
            return &R[i];
    return NULL;
}

/* ---- memory: skip what this machine cannot hold ------------------------------ */

static double mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/* Arrays' worth of memory a cell may hold at its peak, both processes. */
static double copies_needed(const struct cell *c)
{
    const char *n = c->name;
    /* ndchan's round trips use the library's default, 4 slots */
    double slots = c->slots ? c->slots : c->mode == M_LAT ? 4 : c->bytes > 64 * MiB ? 2 : 4, k;
    if (c->mode == M_MEMCPY)
        return 2;
    if (c->ops == &link_rawcopy)
        return slots + 2;   /* ndchan-copy's slots, two buffers */
    if (c->mode != M_TPUT && c->mode != M_LAT)
        return 0;
    if (!strcmp(n, "ndchan-loan"))
        k = slots;
    else if (!strcmp(n, "ndchan-copy"))
        k = slots + 2;
    else if (!strcmp(n, "pipe-serial"))
        k = 4;
    else if (!strcmp(n, "zeromq"))
        k = 6;
    else
        k = 2;
    return c->mode == M_LAT ? 2 * k : k;
}

/* ---- running ------------------------------------------------------------------------ */

static struct ctl *CTL;
static int ncells_done, ncells_total;

static void progress(const struct result *r)
{
    char sz[32];
    if (r->from_python)
        fprintf(stderr, "[python] ");
    else
        fprintf(stderr, "[%3d/%d] ", ++ncells_done, ncells_total);
    fprintf(stderr, "%-10s %-12s %-11s %8s  ", r->kind, r->transport,
            r->variant, fmt_size(r->bytes, sz));
    if (r->ok == 1 && !strcmp(r->kind, "throughput"))
        fprintf(stderr, "%10.2f GB/s\n", r->gbps_med);
    else if (r->ok == 1)
        fprintf(stderr, "p50 %10.2f us\n", r->p50);
    else
        fprintf(stderr, "%s: %s\n", r->ok < 0 ? "skipped" : "FAILED", r->err);
}

/* Cache misses (perfctr.c): probed once; counted around the 8 B round trips
 * of the spin floor and of ndchan-loan (its sweep included), on two CPUs. */
static int pmc_ok;
static char pmc_reason[ERR_LEN + 160];

static int count_misses(enum mode m, const struct link_ops *ops, uint64_t bytes, int same_core, int sleep_us)
{
    return pmc_ok && bytes == 8 && !same_core && !sleep_us &&
           (m == M_SPIN || (m == M_LAT && ops == &link_ndchan_loan));
}

/* slots: ndchan's slots per channel, 0 for the harness's choice; a row of
 * the slots sweep otherwise, its variant "N slots". */
static void run_slots(enum mode m, const struct link_ops *ops, const char *name, uint64_t bytes,
                      int same_core, int sleep_us, uint32_t slots)
{
    struct cell c = {
        .mode = m, .ops = ops, .name = name, .bytes = bytes,
        .cpu = { opt.cpu[0], same_core ? opt.cpu[0] : opt.cpu[1] },
        .sleep_us = sleep_us, .reps = opt.reps,
        /* a round trip with the peer asleep takes a millisecond: give it
         * enough of them for a p50 that holds still */
        .rep_time = sleep_us && opt.rep_time < 0.2 ? 0.2 : opt.rep_time,
        .warmup = opt.warmup, .timeout = opt.timeout, .slots = slots,
        .count_misses = count_misses(m, ops, bytes, same_core, sleep_us),
    };
    struct result *r = new_result();
    if (slots)
        snprintf(r->variant, sizeof r->variant, "%u slot%s", slots, slots == 1 ? "" : "s");
    else
        snprintf(r->variant, sizeof r->variant, "%s", sleep_us ? "peer-asleep" : same_core ? "same-core" : "");
    double need = copies_needed(&c) * (double)bytes, avail = mem_available();
    if (need > 0.8 * avail) {
        snprintf(r->kind, sizeof r->kind, "%s", m == M_TPUT || m == M_MEMCPY ? "throughput" : "latency");
        snprintf(r->transport, sizeof r->transport, "%s", name);
        r->bytes = bytes;
        r->ok = -1;
        snprintf(r->err, ERR_LEN, "needs ~%.1f GiB, %.1f GiB available", need / GiB, avail / GiB);
    } else {
        char variant[sizeof r->variant];
        memcpy(variant, r->variant, sizeof variant);
        run_cell(&c, CTL, r);
        memcpy(r->variant, variant, sizeof variant);
    }
    progress(r);
}

static void run(enum mode m, const struct link_ops *ops, const char *name, uint64_t bytes,
                int same_core, int sleep_us)
{
    run_slots(m, ops, name, bytes, same_core, sleep_us, 0);
}

/* The slots sweep (--parts slots): ndchan-loan's 8 B round trip at these
 * slots per channel, in one run with the spin floor. */
static const uint32_t sweep_slots[] = { 1, 4, 16, 64 };
#define NSWEEP ((int)(sizeof sweep_slots / sizeof *sweep_slots))

struct row { const char *name; const struct link_ops *ops; };

static int transports(struct row *rows)
{
    int n = 0;
    rows[n++] = (struct row){ "ndchan-loan", &link_ndchan_loan };
    rows[n++] = (struct row){ "ndchan-copy", &link_ndchan_copy };
    rows[n++] = (struct row){ "pipe", &link_pipe };
    if (opt.full)
        rows[n++] = (struct row){ "pipe-64k", &link_pipe_small };
    rows[n++] = (struct row){ "pipe-serial", &link_pipe_ser };
    rows[n++] = (struct row){ "unix-socket", &link_unix };
    if (link_zmq())
        rows[n++] = (struct row){ "zeromq", link_zmq() };
    return n;
}

static char py_skip[ERR_LEN];

static void run_all(void)
{
    struct row rows[16];
    int nt = transports(rows);
    int same = opt.cpu[0] == opt.cpu[1];
    int has_big = 0;
    for (int i = 0; i < opt.nlat; i++)
        has_big |= opt.lat[i] == HANDOFF_BIG;

    /* Count first, for the progress lines. */
    for (int pass = 0; pass < 2; pass++) {
        int k = 0;
#define RUN(...) do { if (pass) run(__VA_ARGS__); else k++; } while (0)
        /* Throughput: the ceilings, then every transport by size. rawcopy
         * runs just before ndchan-copy at each size, when both do: on a
         * noisy machine the pair the copy targets compare is then measured
         * under the same load (the tables show rawcopy beside memcpy). */
        int tput = part("throughput"), raw = selected("rawcopy") && tput;
        int paired = raw && selected("ndchan-copy");
        if (selected("memcpy") && tput)
            for (int s = 0; s < opt.ntput; s++)
                RUN(M_MEMCPY, NULL, "memcpy", opt.tput[s], 0, 0);
        if (raw && !paired)
            for (int s = 0; s < opt.ntput; s++)
                RUN(M_TPUT, &link_rawcopy, "rawcopy", opt.tput[s], same, 0);
        for (int t = 0; t < nt; t++)
            if (selected(rows[t].name) && tput)
                for (int s = 0; s < opt.ntput; s++) {
                    if (paired && rows[t].ops == &link_ndchan_copy)
                        RUN(M_TPUT, &link_rawcopy, "rawcopy", opt.tput[s], same, 0);
                    RUN(M_TPUT, rows[t].ops, rows[t].name, opt.tput[s], same, 0);
                }
        /* Round trips: the floors, the slots sweep beside them, then every
         * transport by size. */
        int lat = part("latency"), sweep = part("slots");
        if (selected("spin") && (lat || sweep))
            RUN(M_SPIN, NULL, "spin", 8, same, 0);
        if (selected("futex") && lat)
            RUN(M_FUTEX, NULL, "futex", 8, same, 0);
        if (selected("ndchan-loan") && sweep)
            for (int i = 0; i < NSWEEP; i++) {
                if (pass)
                    run_slots(M_LAT, &link_ndchan_loan, "ndchan-loan", 8, same, 0, sweep_slots[i]);
                else
                    k++;
            }
        for (int t = 0; t < nt; t++)
            if (selected(rows[t].name) && lat) {
                for (int s = 0; s < opt.nlat; s++)
                    RUN(M_LAT, rows[t].ops, rows[t].name, opt.lat[s], same, 0);
                if (rows[t].ops == &link_ndchan_loan && !has_big)
                    RUN(M_LAT, rows[t].ops, rows[t].name, HANDOFF_BIG, same, 0);
            }
        /* The peer asleep: the pinger pauses, so each ping finds the ponger
         * gone to sleep in the kernel. */
        int asleep = part("asleep");
        if (selected("futex") && asleep)
            RUN(M_FUTEX, NULL, "futex", 8, same, opt.sleep_us);
        for (int t = 0; t < nt; t++)
            if (selected(rows[t].name) && asleep && rows[t].ops != &link_pipe_small && rows[t].ops != &link_pipe_ser)
                RUN(M_LAT, rows[t].ops, rows[t].name, 8, same, opt.sleep_us);
        /* Both on one CPU: nobody may starve the other. */
        if (!same && part("same-core")) {
            if (selected("spin"))
                RUN(M_SPIN, NULL, "spin", 8, 1, 0);
            if (selected("futex"))
                RUN(M_FUTEX, NULL, "futex", 8, 1, 0);
            for (int t = 0; t < nt; t++)
                if (selected(rows[t].name) && (rows[t].ops == &link_ndchan_loan ||
                                               rows[t].ops == &link_ndchan_copy || rows[t].ops == &link_pipe)) {
                    RUN(M_LAT, rows[t].ops, rows[t].name, 8, 1, 0);
                    RUN(M_TPUT, rows[t].ops, rows[t].name, 16 * MiB, 1, 0);
                }
        }
        if (!pass)
            ncells_total = k;
#undef RUN
    }

    /* The rawcopy rows right after memcpy's, wherever they ran. */
    struct result *tmp = malloc((size_t)nR * sizeof *R);
    if (tmp) {
        int n = 0, after = 0;
        for (int i = 0; i < nR; i++)
            if (!strcmp(R[i].transport, "memcpy"))
                after = i + 1;
        for (int pass = 0; pass < 3; pass++)
            for (int i = 0; i < nR; i++) {
                int raw = !strcmp(R[i].transport, "rawcopy");
                if ((pass == 0 && i < after && !raw) || (pass == 1 && raw) || (pass == 2 && i >= after && !raw))
                    tmp[n++] = R[i];
            }
        memcpy(R, tmp, (size_t)nR * sizeof *R);
        free(tmp);
    }

    /* Python's rows, through its own processes. */
    if (opt.no_python || !part("python") || !(selected("mp-queue") || selected("mp-pipe") || selected("shm-sem") ||
                                                 selected("py-ndchan-loan") || selected("py-ndchan-copy"))) {
        snprintf(py_skip, sizeof py_skip, "%s", opt.no_python ? "--no-python" : "not selected");
        return;
    }
    uint64_t pt[32], pl[32];
    int npt = 0, npl = 0;
    /* Pickling a queue's worth of big arrays costs seconds and five copies
     * of memory each: Python's rows stop at 256 MiB (throughput) and 64 MiB
     * (round trip), and at 16 MiB / 1 MiB in the quick run. */
    for (int s = 0; s < opt.ntput && part("throughput"); s++)
        if (opt.tput[s] <= (opt.full ? 256 * MiB : 16 * MiB))
            pt[npt++] = opt.tput[s];
    for (int s = 0; s < opt.nlat && part("latency"); s++)
        if (opt.lat[s] <= (opt.full ? 64 * MiB : 1 * MiB))
            pl[npl++] = opt.lat[s];
    struct pyopts po = { .python = opt.python, .script = opt.pyscript, .cpu = { opt.cpu[0], opt.cpu[1] },
                         .reps = opt.reps, .rep_time = opt.rep_time, .sleep_us = opt.sleep_us,
                         .asleep = part("asleep"),
                         .tput_sizes = pt, .ntput = npt, .lat_sizes = pl, .nlat = npl };
    if (!npt && !npl && !po.asleep)
        return;
    fprintf(stderr, "[python] %s %s: %d throughput and %d round-trip sizes x 5 transports ...\n",
            opt.python, opt.pyscript, npt, npl);
    int before = nR;
    if (run_python(&po, &R, &nR, &capR, py_skip) && nR == before)
        fprintf(stderr, "[python] skipped: %s\n", py_skip);
    else
        py_skip[0] = 0;
    for (int i = before; i < nR; i++) {
        /* drop rows the caller did not ask for */
        if (!selected(R[i].transport)) {
            memmove(&R[i], &R[i + 1], (size_t)(nR - i - 1) * sizeof *R);
            nR--, i--;
            continue;
        }
        progress(&R[i]);
    }
}

/* ---- printing -------------------------------------------------------------------------- */

static char machine[512], cmdline[1024];

static void describe_machine(void)
{
    char model[256] = "unknown CPU", line[512];
    int virt = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        char *p;
        if (!strncmp(line, "model name", 10) && (p = strchr(line, ':')) && !strcmp(model, "unknown CPU")) {
            snprintf(model, sizeof model, "%s", p + 2);
            model[strcspn(model, "\n")] = 0;
        }
        if (!strncmp(line, "flags", 5) && strstr(line, " hypervisor"))
            virt = 1;
    }
    if (f)
        fclose(f);
    struct utsname u;
    uname(&u);
    snprintf(machine, sizeof machine, "%s, %ld CPUs%s, %.1f GiB RAM, Linux %s %s", model,
             sysconf(_SC_NPROCESSORS_ONLN), virt ? " (virtual machine)" : "",
             (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / GiB, u.release, u.machine);
}

static const char *sz(uint64_t b)
{
    static char buf[8][32];
    static int k;
    k = (k + 1) % 8;
    return fmt_size(b, buf[k]);
}

/* Ratios that mean something for a row: throughput against memcpy and
 * against rawcopy at the same size, round trips against the spin floor of
 * the same placement; and both against ndchan-loan. NaN when not measured. */
static double vs_ceiling(const struct result *r)
{
    if (r->ok != 1)
        return NAN;
    if (!strcmp(r->kind, "throughput")) {
        const struct result *m = find("throughput", "memcpy", "", r->bytes);
        return m ? r->gbps_med / m->gbps_med : NAN;
    }
    /* always the floor of two CPUs: on one CPU, spinning is the thing to avoid */
    const struct result *s = find("latency", "spin", "", 8);
    return s ? r->p50 / s->p50 : NAN;
}

static double vs_raw(const struct result *r)
{
    if (r->ok != 1 || strcmp(r->kind, "throughput"))
        return NAN;
    const struct result *m = find("throughput", "rawcopy", "", r->bytes);
    return m ? r->gbps_med / m->gbps_med : NAN;
}

static double vs_loan(const struct result *r)
{
    if (r->ok != 1)
        return NAN;
    const struct result *l = find(r->kind, "ndchan-loan", r->variant, r->bytes);
    if (!l)
        return NAN;
    return !strcmp(r->kind, "throughput") ? l->gbps_med / r->gbps_med : r->p50 / l->p50;
}

static void fmt_ratio(char *buf, double v)
{
    if (isnan(v))
        strcpy(buf, "-");
    else if (v >= 100)
        sprintf(buf, "%.0fx", v);
    else if (v >= 10)
        sprintf(buf, "%.1fx", v);
    else
        sprintf(buf, "%.2fx", v);
}

static void fmt_gbps(char *buf, double v)
{
    if (v >= 1000)
        sprintf(buf, "%.0f", v);
    else if (v >= 10)
        sprintf(buf, "%.1f", v);
    else
        sprintf(buf, "%.3f", v);
}

static void fmt_us(char *buf, double v)
{
    if (v >= 10000)
        sprintf(buf, "%.0f", v);
    else if (v >= 100)
        sprintf(buf, "%.1f", v);
    else
        sprintf(buf, "%.2f", v);
}

static const char *row_label(const struct result *r, char *buf)
{
    sprintf(buf, "%s%s%s%s", r->transport, r->variant[0] ? " (" : "", r->variant, r->variant[0] ? ")" : "");
    return buf;
}

/* The summary: one row per transport, one column per size. */
static void print_matrix(const char *kind, const char *title, const uint64_t *sizes, int ns)
{
    char names[64][96];
    int nn = 0;
    for (int i = 0; i < nR; i++) {
        char lab[96];
        if (strcmp(R[i].kind, kind))
            continue;
        row_label(&R[i], lab);
        int seen = 0;
        for (int j = 0; j < nn; j++)
            seen |= !strcmp(names[j], lab);
        if (!seen && nn < 64)
            snprintf(names[nn++], sizeof names[0], "%s", lab);
    }
    if (!nn)
        return;
    int used[64] = { 0 };
    for (int s = 0; s < ns && s < 64; s++)
        for (int i = 0; i < nR; i++)
            used[s] |= !strcmp(R[i].kind, kind) && R[i].bytes == sizes[s];
    printf("\n%s\n%-26s", title, "");
    for (int s = 0; s < ns; s++)
        if (used[s])
            printf(" %9s", sz(sizes[s]));
    printf("\n");
    for (int j = 0; j < nn; j++) {
        printf("%-26s", names[j]);
        for (int s = 0; s < ns; s++) {
            const struct result *hit = NULL;
            if (!used[s])
                continue;
            for (int i = 0; i < nR && !hit; i++) {
                char lab[96];
                if (!strcmp(R[i].kind, kind) && R[i].bytes == sizes[s] && !strcmp(row_label(&R[i], lab), names[j]))
                    hit = &R[i];
            }
            char v[32] = "";
            if (!hit)
                strcpy(v, ".");
            else if (hit->ok != 1)
                strcpy(v, hit->ok < 0 ? "skip" : "FAIL");
            else if (!strcmp(kind, "throughput"))
                fmt_gbps(v, hit->gbps_med);
            else
                fmt_us(v, hit->p50);
            printf(" %9s", v);
        }
        printf("\n");
    }
}

static void print_details(void)
{
    printf("\nThroughput, every row (GB/s = 1e9 bytes/s; median [min..max] of the repetitions)\n");
    printf("(x memcpy: this row / memcpy at the same size, one thread copying in process: its array may\n"
           " stay in one core's caches (a 16 MiB one can fit in one L3), which no copy between two cores can;\n"
           " x rawcopy: this row / rawcopy, two processes on the two CPUs, one memcpy each side through\n"
           " shared slots (as many as ndchan-copy's) and spin flags: the ceiling of any one-copy transport\n"
           " between cores, which the copy targets are judged against; loan is: ndchan-loan / this row)\n");
    printf("%-26s %8s %10s %21s %9s %9s %10s %10s %12s\n", "transport", "size", "GB/s", "[spread]",
           "x memcpy", "x rawcopy", "loan is", "CPU s/GiB", "peak MiB A+B");
    for (int i = 0; i < nR; i++) {
        const struct result *r = &R[i];
        char lab[96], g[32], a[32], b[32], sp[80], c1[32], c2[32], c3[32];
        if (strcmp(r->kind, "throughput"))
            continue;
        row_label(r, lab);
        if (r->ok != 1) {
            printf("%-26s %8s  %s: %s\n", lab, sz(r->bytes), r->ok < 0 ? "skipped" : "FAILED", r->err);
            continue;
        }
        fmt_gbps(g, r->gbps_med);
        fmt_gbps(a, r->gbps_min);
        fmt_gbps(b, r->gbps_max);
        snprintf(sp, sizeof sp, "[%s..%s]", a, b);
        fmt_ratio(c1, vs_ceiling(r));
        fmt_ratio(c3, vs_raw(r));
        fmt_ratio(c2, vs_loan(r));
        printf("%-26s %8s %10s %21s %9s %9s %10s %10.3g %12.1f\n", lab, sz(r->bytes), g, sp, c1, c3, c2,
               r->cpu_s_per_gib, r->peak_mib[0] + r->peak_mib[1]);
    }
    printf("\nRound trips, every row (send, receive, send back, receive; microseconds)\n");
    printf("(x spin: p50 / the spin floor on two CPUs; x loan: p50 / ndchan-loan's p50, same size and case)\n");
    printf("%-26s %8s %9s %19s %9s %9s %9s %9s %10s %12s %7s\n", "transport", "size", "p50", "[p50 spread]",
           "p99", "p999", "x spin", "x loan", "CPU s/GiB", "peak MiB A+B", "samples");
    for (int i = 0; i < nR; i++) {
        const struct result *r = &R[i];
        char lab[96], p[32], a[32], b[32], sp[80], p99[32], p999[32], c1[32], c2[32];
        if (strcmp(r->kind, "latency"))
            continue;
        row_label(r, lab);
        if (r->ok != 1) {
            printf("%-26s %8s  %s: %s\n", lab, sz(r->bytes), r->ok < 0 ? "skipped" : "FAILED", r->err);
            continue;
        }
        fmt_us(p, r->p50);
        fmt_us(a, r->p50_min);
        fmt_us(b, r->p50_max);
        fmt_us(p99, r->p99);
        fmt_us(p999, r->p999);
        snprintf(sp, sizeof sp, "[%s..%s]", a, b);
        fmt_ratio(c1, vs_ceiling(r));
        fmt_ratio(c2, vs_loan(r));
        printf("%-26s %8s %9s %19s %9s %9s %9s %9s %10.3g %12.1f %7llu\n", lab, sz(r->bytes), p, sp, p99, p999,
               c1, c2, r->cpu_s_per_gib, r->peak_mib[0] + r->peak_mib[1], (unsigned long long)r->nsamples);
    }
}

/* The slots sweep's rows are in the tables above too; here they stand
 * together, against the spin floor and against the fastest of them. */
static const struct result *sweep_row(uint32_t slots);
static void print_sweep(void)
{
    const struct result *spin = find("latency", "spin", "", 8), *r;
    double lo = INFINITY;
    for (int i = 0; i < NSWEEP; i++)
        if ((r = sweep_row(sweep_slots[i])))
            lo = fmin(lo, r->p50);
    if (isinf(lo))
        return;
    char f[32];
    fmt_us(f, spin ? spin->p50 : NAN);
    printf("\nSlots sweep: ndchan-loan 8 B round trip by slots per channel (the library's default is 4;\n"
           "x spin: p50 / the spin floor of this run, %s us; x fastest: p50 / the fastest of the four)\n",
           spin ? f : "not measured");
    printf("%8s %9s %19s %9s %9s %9s %10s\n", "slots", "p50", "[p50 spread]", "p99", "x spin", "x fastest", "samples");
    for (int i = 0; i < NSWEEP; i++) {
        char p[32], a[32], b[32], sp[80], p99[32], c1[32], c2[32];
        if (!(r = sweep_row(sweep_slots[i]))) {
            printf("%8u  not measured (see the table above)\n", sweep_slots[i]);
            continue;
        }
        fmt_us(p, r->p50);
        fmt_us(a, r->p50_min);
        fmt_us(b, r->p50_max);
        fmt_us(p99, r->p99);
        snprintf(sp, sizeof sp, "[%s..%s]", a, b);
        fmt_ratio(c1, spin ? r->p50 / spin->p50 : NAN);
        fmt_ratio(c2, r->p50 / lo);
        printf("%8u %9s %19s %9s %9s %9s %10llu\n", sweep_slots[i], p, sp, p99, c1, c2,
               (unsigned long long)r->nsamples);
    }
}

/* Misses per round trip of counter k in worker w (-1: both); NaN when not counted. */
static double misses_rt(const struct result *r, int k, int w)
{
    if (r->ok != 1 || !r->pmc_asked)
        return NAN;
    double a = r->pmc_rt[0][k], b = r->pmc_rt[1][k];
    if (w >= 0)
        return r->pmc_rt[w][k] >= 0 ? r->pmc_rt[w][k] : NAN;
    return a >= 0 && b >= 0 ? a + b : NAN;
}

/* Cache lines per hand-off: the misses both processes took per round trip,
 * ndchan-loan's against the spin floor's (two lines cross per round trip:
 * the ping's and the pong's). */
static void print_misses(void)
{
    if (!pmc_ok) {
        int lat = 0;
        for (int i = 0; i < nR && !lat; i++)
            lat = !strcmp(R[i].kind, "latency") && !R[i].from_python;
        if (lat)
            printf("\nCache misses per round trip: not available: %s\n", pmc_reason);
        return;
    }
    int any = 0;
    for (int i = 0; i < nR; i++)
        any |= R[i].pmc_asked && R[i].ok == 1;
    if (!any)
        return;
    printf("\nCache misses per round trip (perf_event_open, user space, each process counting itself over\n"
           "the repetitions' loops, untimed steps included; A + B = pinger + ponger)\n");
    printf("%-26s %8s", "transport", "size");
    for (int k = 0; k < NPMC; k++)
        printf(" %30s", pmc_names[k]);
    printf("\n");
    for (int i = 0; i < nR; i++) {
        const struct result *r = &R[i];
        char lab[96];
        if (!r->pmc_asked || r->ok != 1)
            continue;
        printf("%-26s %8s", row_label(r, lab), sz(r->bytes));
        for (int k = 0; k < NPMC; k++) {
            char cell[64];
            if (isnan(misses_rt(r, k, -1)))
                snprintf(cell, sizeof cell, "not counted");
            else
                snprintf(cell, sizeof cell, "%.2f (%.2f + %.2f)", misses_rt(r, k, -1), misses_rt(r, k, 0),
                         misses_rt(r, k, 1));
            printf(" %30s", cell);
        }
        printf("\n");
    }
    for (int k = 0; k < NPMC; k++) {
        for (int i = 0; i < nR; i++)
            if (R[i].pmc_asked && R[i].pmc_err[k]) {
                char why[ERR_LEN + 160];
                printf("(%s not counted: %s)\n", pmc_names[k], pmc_why(k, R[i].pmc_err[k], why, sizeof why));
                break;
            }
    }
    const struct result *loan = find("latency", "ndchan-loan", "", 8), *spin = find("latency", "spin", "", 8);
    /* L1D read misses are the lines that came from elsewhere; cache-misses
     * (an L2 or last-level miss, by CPU) the ones that came from farther */
    int k = loan && spin && !isnan(misses_rt(loan, PMC_L1D, -1)) && !isnan(misses_rt(spin, PMC_L1D, -1))
                ? PMC_L1D : PMC_MISSES;
    if (loan && spin && !isnan(misses_rt(loan, k, -1)) && !isnan(misses_rt(spin, k, -1))) {
        printf("ndchan-loan moves %.1f lines per round trip against the floor's %.1f (%s, both processes",
               misses_rt(loan, k, -1), misses_rt(spin, k, -1), pmc_names[k]);
        int o = k == PMC_L1D ? PMC_MISSES : PMC_L1D;
        if (!isnan(misses_rt(loan, o, -1)) && !isnan(misses_rt(spin, o, -1)))
            printf("; %s: %.1f against %.1f", pmc_names[o], misses_rt(loan, o, -1), misses_rt(spin, o, -1));
        printf(")\n");
    }
}

/* ---- targets ---------------------------------------------------------------------------- */

struct target {
    char what[160];
    char detail[320];
    int  status;    /* 1 pass, 0 miss, -1 not measured */
    double value, goal;
};
static struct target T[24];
static int nT;

static void target(const char *what, double value, double goal, int higher_is_better, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void target(const char *what, double value, double goal, int higher_is_better, const char *fmt, ...)
{
    struct target *t = &T[nT++];
    snprintf(t->what, sizeof t->what, "%s", what);
    t->value = value;
    t->goal = goal;
    if (isnan(value)) {
        t->status = -1;
        snprintf(t->detail, sizeof t->detail, "not measured in this run");
        return;
    }
    t->status = higher_is_better ? value >= goal : value <= goal;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->detail, sizeof t->detail, fmt, ap);
    va_end(ap);
}

/* p50 ratio of two round-trip rows; x, y their p50s; spread: both rows'
 * p50 ranges over the repetitions, for the reader to judge the noise. */
static double ratio_lat(const char *t1, const char *v1, uint64_t b1, const char *t2, const char *v2, uint64_t b2,
                        double *x, double *y, char *spread)
{
    const struct result *a = find("latency", t1, v1, b1), *b = find("latency", t2, v2, b2);
    *x = a ? a->p50 : NAN;
    *y = b ? b->p50 : NAN;
    if (spread && a && b)
        snprintf(spread, 96, "; p50 of the repetitions %.3g..%.3g vs %.3g..%.3g", a->p50_min, a->p50_max,
                 b->p50_min, b->p50_max);
    return a && b ? a->p50 / b->p50 : NAN;
}

static double ratio_tput(const char *t1, const char *t2, uint64_t b, double *x, double *y)
{
    const struct result *p = find("throughput", t1, "", b), *q = find("throughput", t2, "", b);
    *x = p ? p->gbps_med : NAN;
    *y = q ? q->gbps_med : NAN;
    return p && q ? p->gbps_med / q->gbps_med : NAN;
}

/* A row of the slots sweep, or NULL. */
static const struct result *sweep_row(uint32_t slots)
{
    for (int i = 0; i < nR; i++)
        if (R[i].ok == 1 && R[i].slots == slots && !strcmp(R[i].kind, "latency") &&
            !strcmp(R[i].transport, "ndchan-loan") && R[i].bytes == 8 && !R[i].from_python &&
            strstr(R[i].variant, "slot"))
            return &R[i];
    return NULL;
}

static double idle_pct = -1;   /* measured in main, unless --only leaves it out */
static struct fanout_result FO;   /* measured in main: --parts fanout */
static int fanout_run;

/* The pollable fd and wait-any (--parts notify): notify-rtt, built beside
 * this program, run as a child; its report is printed as it is and two of
 * its figures feed the targets. */
static char notify_out[8192];
static double notify_fd_ratio = NAN, notify_1000_us = NAN;
static int notify_run;

static void run_notify(void)
{
    char self[4096], cmd[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(notify_out, sizeof notify_out, "skipped: no /proc/self/exe to find notify-rtt by\n");
        return;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash)
        slash[1] = 0;
    snprintf(cmd, sizeof cmd, "%snotify-rtt", self);
    if (access(cmd, X_OK) != 0) {
        snprintf(notify_out, sizeof notify_out, "skipped: %s is not there (it is built, not installed)\n", cmd);
        return;
    }
    snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %d 3 2>&1", opt.full ? 20000 : 5000);
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    size_t len = 0;
    char line[512];
    while (p && fgets(line, sizeof line, p)) {
        double v;
        if (sscanf(line, "ndchan-fd (io_uring) / eventfd: %lfx", &v) == 1)
            notify_fd_ratio = v;
        if (sscanf(line, "  ndc_wait_any, 1000 channels %lf", &v) == 1 && isnan(notify_1000_us))
            notify_1000_us = v;
        if (len + strlen(line) < sizeof notify_out - 1) {
            memcpy(notify_out + len, line, strlen(line) + 1);
            len += strlen(line);
        }
    }
    if (!p || pclose(p) != 0)
        snprintf(notify_out + len, sizeof notify_out - len, "(notify-rtt failed)\n");
}

static void print_notify(void)
{
    if (!notify_run)
        return;
    printf("\nPollable fd and wait-any (notify-rtt: two processes, each in epoll_wait on the other's fd, "
           "against raw fds; wait-any wake-ups):\n%s", notify_out);
}

static void notify_targets(void)
{
    if (!notify_run)
        return;
    target("notify fd: round trip through ndc_notify_fd in epoll <= 1.2x a raw eventfd", notify_fd_ratio, 1.2, 0,
           "%.2fx; ndc_wait_any over 1000 channels wakes a sleeping receiver in %.0f us", notify_fd_ratio,
           notify_1000_us);
}

static void print_fanout(void)
{
    if (!fanout_run)
        return;
    if (!FO.ok) {
        printf("\nBroadcast fan-out: the measurement failed\n");
        return;
    }
    printf("\nBroadcast fan-out (block policy, 4 slots; one publisher, S subscriber processes that sleep\n"
           "when they wait): the publisher's own cost per array (median CPU time of reserve + commit,\n"
           "each commit waking every subscriber) and the wall time per array of a free run (paced by\n"
           "the slowest subscriber, all sharing the CPUs)\n");
    printf("%10s %12s %12s %12s %14s\n", "size", "subscribers", "cost us", "x 1 sub", "wall us/array");
    static const int subs[FANOUT_NS] = { 1, 2, 4 };
    for (int b = 0; b < FANOUT_NB; b++)
        for (int s = 0; s < FANOUT_NS; s++)
            printf("%10s %12d %12.2f %11.2fx %14.2f\n", b ? "16 MiB" : "8 B", subs[s], FO.cost_us[b][s],
                   FO.cost_us[b][s] / FO.cost_us[b][0], FO.per_array_us[b][s]);
    printf("256 MiB arrays to 4 subscribers reading every page: the channel holds %.0f MiB (2 slots of "
           "%.0f MiB); the subscribers added %.1f MiB of private memory in all (no copies)\n",
           FO.segment_mib, FO.array_mib, FO.private_mib);
    printf("latest policy, 8 B: the publisher commits %.0f arrays/s alone, %.0f with a subscriber that "
           "sleeps 1 ms per array (%.2fx)\n", FO.latest_rate[0], FO.latest_rate[1],
           FO.latest_rate[1] / FO.latest_rate[0]);
}

static void fanout_targets(void)
{
    if (!fanout_run || !FO.ok)
        return;
    for (int b = 0; b < FANOUT_NB; b++) {
        double v = FO.cost_us[b][2] / FO.cost_us[b][0];
        char what[160];
        snprintf(what, sizeof what, "broadcast %s: the publisher's cost per array with 4 subscribers <= 1.5x with 1",
                 b ? "16 MiB" : "8 B");
        target(what, v, 1.5, 0, "%.2fx (%.2f us vs %.2f us)", v, FO.cost_us[b][2], FO.cost_us[b][0]);
    }
    double v = FO.private_mib / FO.array_mib;
    target("broadcast 256 MiB to 4 subscribers: no copy (private memory added < 1/16 of one array)", v, 1.0 / 16, 0,
           "%.1f MiB added by 4 subscribers, arrays of %.0f MiB; the channel holds %.0f MiB", FO.private_mib,
           FO.array_mib, FO.segment_mib);
    v = FO.latest_rate[1] / FO.latest_rate[0];
    target("broadcast, latest policy: a sleeping subscriber leaves the publisher >= 0.9x its rate alone", v, 0.9, 1,
           "%.2fx (%.0f vs %.0f arrays/s)", v, FO.latest_rate[1], FO.latest_rate[0]);
}
#define IDLE_SECONDS 2.0

static void compute_targets(void)
{
    double x, y, v;
    char sp[96] = "";
    if (idle_pct >= 0)
        target("idle: a receiver asleep on an empty channel uses <= 1% of a core", idle_pct, 1.0, 0,
               "%.2f%% of a core over %.0f s", idle_pct, IDLE_SECONDS);
    fanout_targets();
    notify_targets();
    v = ratio_lat("ndchan-loan", "", HANDOFF_BIG, "ndchan-loan", "", 8, &x, &y, sp);
    target("ndchan-loan hand-off does not grow: 256 MiB round trip <= 2x the 8 B one", v, 2, 0,
           "%.2fx (p50 %.2f us vs %.2f us%s)", v, x, y, sp);
    v = ratio_tput("ndchan-loan", "pipe", 16 * MiB, &x, &y);
    target("ndchan-loan at 16 MiB >= 1000x the pipe", v, 1000, 1, "%.0fx (%.0f GB/s vs %.3f GB/s)", v, x, y);
    v = ratio_tput("ndchan-loan", "mp-queue", 16 * MiB, &x, &y);
    target("ndchan-loan at 16 MiB >= 1000x Python's multiprocessing.Queue", v, 1000, 1,
           "%.0fx (%.0f GB/s vs %.3f GB/s)", v, x, y);
    v = ratio_tput("py-ndchan-loan", "mp-queue", 16 * MiB, &x, &y);
    target("Python: py-ndchan-loan at 16 MiB >= 1000x multiprocessing.Queue", v, 1000, 1,
           "%.0fx (%.0f GB/s vs %.3f GB/s)", v, x, y);
    v = ratio_lat("py-ndchan-copy", "", 8, "mp-pipe", "", 8, &x, &y, sp);
    target("Python: py-ndchan-copy 8 B round trip <= 1/10 of multiprocessing.Pipe's", v, 0.1, 0,
           "%.3fx (p50 %.2f us vs %.2f us%s)", v, x, y, sp);
    v = ratio_tput("py-ndchan-copy", "ndchan-copy", 16 * MiB, &x, &y);
    target("Python: py-ndchan-copy at 16 MiB >= 70% of the C ndchan-copy", v, 0.7, 1,
           "%.0f%% (%.2f GB/s vs %.2f GB/s)", v * 100, x, y);
    for (int i = 0; i < 2; i++) {
        uint64_t b = i ? 256 * MiB : 16 * MiB;
        double m = NAN, dummy;
        char what[160];
        ratio_tput("memcpy", "rawcopy", b, &m, &dummy);
        v = ratio_tput("ndchan-copy", "rawcopy", b, &x, &y);
        snprintf(what, sizeof what, "ndchan-copy at %s >= 80%% of rawcopy (the cross-core copy ceiling)", sz(b));
        target(what, v, 0.8, 1, "%.0f%% (%.2f GB/s vs %.2f GB/s; in-process memcpy: %.2f GB/s)", v * 100, x, y, m);
    }
    v = ratio_lat("ndchan-loan", "", 8, "spin", "", 8, &x, &y, sp);
    target("ndchan-loan 8 B round trip, peer active: p50 <= 2.0x the raw spin floor (the goal after this: 1.5x)",
           v, 2.0, 0, "%.2fx (%.2f us vs %.2f us%s)", v, x, y, sp);
    v = ratio_lat("ndchan-copy", "", 8, "spin", "", 8, &x, &y, sp);
    target("ndchan-copy 8 B round trip, peer active: p50 <= 2.5x the raw spin floor", v, 2.5, 0,
           "%.2fx (%.2f us vs %.2f us%s)", v, x, y, sp);
    v = ratio_lat("ndchan-loan", "peer-asleep", 8, "futex", "peer-asleep", 8, &x, &y, sp);
    target("ndchan-loan 8 B round trip, peer asleep: p50 <= 1.0x the raw futex floor", v, 1.0, 0,
           "%.2fx (%.1f us vs %.1f us%s)", v, x, y, sp);
    v = ratio_lat("ndchan-loan", "same-core", 8, "futex", "same-core", 8, &x, &y, sp);
    {
        double s, z;
        ratio_lat("spin", "same-core", 8, "futex", "same-core", 8, &s, &z, NULL);
        target("same core: ndchan-loan 8 B round trip <= 1.5x the futex floor (no starving)", v, 1.5, 0,
               "%.2fx (%.2f us vs %.2f us; raw spin on one core: %.0f us)", v, x, y, s);
    }
    /* the slots sweep, against the spin floor of the same run */
    {
        const struct result *sw[NSWEEP], *spin = find("latency", "spin", "", 8);
        double lo = INFINITY, hi = 0, at = 0;
        int all = 1;
        char list[160] = "";
        size_t k = 0;
        for (int i = 0; i < NSWEEP; i++) {
            sw[i] = sweep_row(sweep_slots[i]);
            if (!sw[i]) {
                all = 0;
                continue;
            }
            lo = fmin(lo, sw[i]->p50);
            hi = fmax(hi, sw[i]->p50);
            if (sweep_slots[i] == 4 || sweep_slots[i] == 16)
                at = fmax(at, sw[i]->p50);
            k += (size_t)snprintf(list + k, sizeof list - (k < sizeof list ? k : sizeof list),
                                  "%s%u: %.2f us", k ? ", " : "", sweep_slots[i], sw[i]->p50);
        }
        const struct result *s4 = sweep_row(4), *s16 = sweep_row(16);
        v = s4 && s16 && spin ? at / spin->p50 : NAN;
        target("8 B loan round trip at 4 and 16 slots: p50 <= 2.0x the raw spin floor (the goal after this: 1.5x)",
               v, 2.0, 0, "%.2fx (4 slots %.2f us = %.2fx, 16 slots %.2f us = %.2fx; spin floor %.2f us)", v,
               s4 ? s4->p50 : NAN, s4 && spin ? s4->p50 / spin->p50 : NAN, s16 ? s16->p50 : NAN,
               s16 && spin ? s16->p50 / spin->p50 : NAN, spin ? spin->p50 : NAN);
        v = all ? hi / lo : NAN;
        target("1, 4, 16, 64 slots within 1.2x of each other (max p50 / min p50)", v, 1.2, 0,
               "%.2fx (p50 by slots per channel: %s)", v, list);
    }
}

static void print_targets(void)
{
    printf("\nTargets, producer CPU %d, consumer CPU %d\n", opt.cpu[0], opt.cpu[1]);
    for (int i = 0; i < nT; i++)
        printf("  %-4s  %s\n        %s\n", T[i].status > 0 ? "PASS" : T[i].status == 0 ? "MISS" : "n/a",
               T[i].what, T[i].detail);
}

/* ---- files ------------------------------------------------------------------------------------ */

static void csv_num(FILE *f, double v)
{
    if (isnan(v) || isinf(v))
        fprintf(f, ",");
    else
        fprintf(f, ",%.6g", v);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, const char *k, double v, int last)
{
    fprintf(f, "\"%s\": ", k);
    if (isnan(v) || isinf(v))
        fprintf(f, "null");
    else
        fprintf(f, "%.6g", v);
    fprintf(f, last ? "" : ", ");
}

static int mkdir_p(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    return mkdir(buf, 0755) && errno != EEXIST ? -errno : 0;
}

static void write_files(void)
{
    char path[1100];
    if (mkdir_p(opt.out)) {
        fprintf(stderr, "ndchan-bench: cannot create %s: %s\n", opt.out, strerror(errno));
        return;
    }
    snprintf(path, sizeof path, "%s/results.csv", opt.out);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "ndchan-bench: %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "kind,transport,variant,bytes,cpu_a,cpu_b,ok,reps,msgs,gbps_med,gbps_min,gbps_max,"
               "p50_us,p50_min_us,p50_max_us,p99_us,p999_us,min_us,samples,cpu_s_per_gib,"
               "peak_mib_a,peak_mib_b,vs_ceiling,vs_ndchan_loan,slots,vs_rawcopy,cache_misses_per_rt,"
               "l1d_read_misses_per_rt,source,error\n");
    for (int i = 0; i < nR; i++) {
        const struct result *r = &R[i];
        int tp = !strcmp(r->kind, "throughput"), ok = r->ok == 1;
        fprintf(f, "%s,%s,%s,%llu,%d,%d,%d,%d,%llu", r->kind, r->transport, r->variant,
                (unsigned long long)r->bytes, r->cpu[0], r->cpu[1], r->ok, r->nreps, (unsigned long long)r->msgs);
        csv_num(f, ok && tp ? r->gbps_med : NAN);
        csv_num(f, ok && tp ? r->gbps_min : NAN);
        csv_num(f, ok && tp ? r->gbps_max : NAN);
        csv_num(f, ok && !tp ? r->p50 : NAN);
        csv_num(f, ok && !tp ? r->p50_min : NAN);
        csv_num(f, ok && !tp ? r->p50_max : NAN);
        csv_num(f, ok && !tp ? r->p99 : NAN);
        csv_num(f, ok && !tp ? r->p999 : NAN);
        csv_num(f, ok && !tp ? r->lat_min : NAN);
        csv_num(f, ok && !tp ? (double)r->nsamples : NAN);
        csv_num(f, ok ? r->cpu_s_per_gib : NAN);
        csv_num(f, ok ? r->peak_mib[0] : NAN);
        csv_num(f, ok ? r->peak_mib[1] : NAN);
        csv_num(f, vs_ceiling(r));
        csv_num(f, vs_loan(r));
        csv_num(f, r->slots ? (double)r->slots : NAN);
        csv_num(f, vs_raw(r));
        csv_num(f, misses_rt(r, PMC_MISSES, -1));
        csv_num(f, misses_rt(r, PMC_L1D, -1));
        char err[ERR_LEN];
        snprintf(err, sizeof err, "%s", r->err);
        for (char *p = err; *p; p++)
            if (*p == ',' || *p == '\n' || *p == '"')
                *p = ';';
        fprintf(f, ",%s,%s\n", r->from_python ? "python" : "c", err);
    }
    fclose(f);

    snprintf(path, sizeof path, "%s/results.json", opt.out);
    f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "ndchan-bench: %s: %s\n", path, strerror(errno));
        return;
    }
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(f, "{\n  \"tool\": \"ndchan-bench\", \"ndchan_version\": \"%d.%d\", \"date\": \"%s\",\n  \"machine\": ",
            NDC_VERSION_MAJOR, NDC_VERSION_MINOR, date);
    json_str(f, machine);
    fprintf(f, ",\n  \"command\": ");
    json_str(f, cmdline);
    fprintf(f, ",\n  \"options\": {\"mode\": \"%s\", \"cpus\": [%d, %d], \"reps\": %d, \"rep_time_s\": %g, "
               "\"sleep_us\": %d, \"spin_ns\": %lld, \"python\": ",
            opt.full ? "full" : "quick", opt.cpu[0], opt.cpu[1], opt.reps, opt.rep_time, opt.sleep_us,
            (long long)opt.spin_ns);
    json_str(f, py_skip[0] ? py_skip : "ran");
    fprintf(f, ", \"placement\": ");
    json_str(f, placement_text);
    fprintf(f, "},\n  \"cache_miss_counters\": {\"available\": %s, \"note\": ", pmc_ok ? "true" : "false");
    json_str(f, pmc_ok ? "perf_event_open, user space, per process, over the repetitions' loops; "
                         "misses_per_round_trip in the rows counted"
                       : pmc_reason);
    fprintf(f, "},\n  \"units\": {\"gbps\": \"1e9 bytes/s\", \"latency\": \"microseconds, round trip\", "
               "\"cpu\": \"CPU seconds (user+system, both processes) per GiB moved\", "
               "\"peak_mib\": \"max RSS of each process, MiB (shared pages count in both)\"},\n  \"results\": [\n");
    for (int i = 0; i < nR; i++) {
        const struct result *r = &R[i];
        int tp = !strcmp(r->kind, "throughput"), ok = r->ok == 1;
        fprintf(f, "    {\"kind\": \"%s\", \"transport\": \"%s\", \"variant\": \"%s\", \"bytes\": %llu, "
                   "\"cpus\": [%d, %d], \"ok\": %d, \"source\": \"%s\", \"reps\": %d, \"msgs_per_rep\": %llu, ",
                r->kind, r->transport, r->variant, (unsigned long long)r->bytes, r->cpu[0], r->cpu[1], r->ok,
                r->from_python ? "python" : "c", r->nreps, (unsigned long long)r->msgs);
        if (r->slots)
            fprintf(f, "\"slots\": %u, ", r->slots);
        if (ok && tp) {
            json_num(f, "gbps_med", r->gbps_med, 0);
            json_num(f, "gbps_min", r->gbps_min, 0);
            json_num(f, "gbps_max", r->gbps_max, 0);
        } else if (ok) {
            json_num(f, "p50_us", r->p50, 0);
            json_num(f, "p50_min_us", r->p50_min, 0);
            json_num(f, "p50_max_us", r->p50_max, 0);
            json_num(f, "p99_us", r->p99, 0);
            json_num(f, "p999_us", r->p999, 0);
            json_num(f, "min_us", r->lat_min, 0);
            json_num(f, "samples", (double)r->nsamples, 0);
        }
        if (ok) {
            json_num(f, "cpu_s_per_gib", r->cpu_s_per_gib, 0);
            json_num(f, "peak_mib_a", r->peak_mib[0], 0);
            json_num(f, "peak_mib_b", r->peak_mib[1], 0);
            json_num(f, "vs_ceiling", vs_ceiling(r), 0);
            if (tp)
                json_num(f, "vs_rawcopy", vs_raw(r), 0);
            json_num(f, "vs_ndchan_loan", vs_loan(r), 0);
            if (r->pmc_asked) {
                fprintf(f, "\"misses_per_round_trip\": {");
                for (int k = 0; k < NPMC; k++) {
                    fprintf(f, "%s\"%s\": {", k ? ", " : "", pmc_names[k]);
                    json_num(f, "a_plus_b", misses_rt(r, k, -1), 0);
                    json_num(f, "a", misses_rt(r, k, 0), 0);
                    json_num(f, "b", misses_rt(r, k, 1), 1);
                    fprintf(f, "}");
                }
                fprintf(f, "}, ");
            }
        }
        fprintf(f, "\"error\": ");
        json_str(f, r->err);
        fprintf(f, "}%s\n", i + 1 < nR ? "," : "");
    }
    fprintf(f, "  ],\n  \"targets\": [\n");
    for (int i = 0; i < nT; i++) {
        fprintf(f, "    {\"target\": ");
        json_str(f, T[i].what);
        fprintf(f, ", \"status\": \"%s\", ", T[i].status > 0 ? "pass" : T[i].status == 0 ? "miss" : "not measured");
        json_num(f, "value", T[i].value, 0);
        json_num(f, "goal", T[i].goal, 0);
        fprintf(f, "\"detail\": ");
        json_str(f, T[i].detail);
        fprintf(f, "}%s\n", i + 1 < nT ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
    printf("\nWrote %s/results.csv and %s/results.json\n", opt.out, opt.out);
}

static void plot(void)
{
    if (opt.no_plot)
        return;
    if (access(opt.plotscript, R_OK)) {
        printf("Plots skipped: %s: %s (give --plot-script)\n", opt.plotscript, strerror(errno));
        return;
    }
    char dirarg[1200];
    snprintf(dirarg, sizeof dirarg, "dir='%s'; title=\"\\n%s\"", opt.out, machine);
    fflush(NULL);
    pid_t p = fork();
    if (p == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execlp("gnuplot", "gnuplot", "-e", dirarg, opt.plotscript, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (p > 0)
        waitpid(p, &st, 0);
    if (p < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
        printf("Plots: gnuplot failed (exit %d; is gnuplot-nox installed?)\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    else
        printf("Plots: %s/throughput.png, %s/latency.png (and .svg)\n", opt.out, opt.out);
}

int main(int argc, char **argv)
{
    size_t k = 0;
    for (int i = 0; i < argc && k < sizeof cmdline; i++)
        k += (size_t)snprintf(cmdline + k, sizeof cmdline - k, "%s%s", i ? " " : "", argv[i]);
    parse_args(argc, argv);
    if (opt.list) {
        struct row rows[16];
        int nt = transports(rows);
        printf("memcpy       ceiling: one thread copying the array once (in one core's caches)\n"
               "rawcopy      %s\n"
               "spin         floor: two processes ping-ponging a word by spinning\n"
               "futex        floor: the same, sleeping in futex_wait at once\n", link_rawcopy.what);
        for (int i = 0; i < nt; i++)
            printf("%-12s %s\n", rows[i].name, rows[i].ops->what);
        printf("pipe-64k     (--full only) %s\n", link_pipe_small.what);
        printf("mp-queue     Python multiprocessing.Queue (pickles in a feeder thread)\n"
               "mp-pipe      Python multiprocessing.Pipe send/recv (pickles)\n"
               "shm-sem      Python shared_memory + two semaphores (the FloatChannel recipe)\n"
               "py-ndchan-loan  ndchan from Python: reserve/commit, acquire/release views in place\n"
               "py-ndchan-copy  ndchan from Python: send() and recv_into() (one copy each side)\n");
        if (!link_zmq())
            printf("(zeromq: not built; install libzmq3-dev and reconfigure with -Dzmq=enabled)\n");
        return 0;
    }
    /* Workers report through the control page, not signals: SIGCHLD is
     * waited for with sigtimedwait, a dead peer's pipe is EPIPE. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    signal(SIGPIPE, SIG_IGN);
    CTL = map_shared(sizeof *CTL);
    if (!CTL) {
        perror("ndchan-bench: mmap");
        return 1;
    }
    describe_machine();
    pmc_ok = pmc_probe(pmc_reason, sizeof pmc_reason) == 0;
    printf("ndchan-bench (%s run): %s\n", opt.full ? "full" : "quick", machine);
    printf("producer/pinger on CPU %d, consumer/ponger on CPU %d%s; %d repetitions of ~%.2g s; "
           "float64 arrays; every array's sample checked by the receiver\n",
           opt.cpu[0], opt.cpu[1], opt.cpu[0] == opt.cpu[1] ? " (one CPU only: all rows are same-core)" : "",
           opt.reps, opt.rep_time);
    char spin[64] = "the library's default";
    if (opt.spin_ns)
        snprintf(spin, sizeof spin, "%lld ns (--spin-ns)", (long long)opt.spin_ns);
    printf("ndchan channels: round trips with the library's default slots (4 per channel), throughput "
           "with 4 (2 above 64 MiB); spin budget: %s; payload placement: %s\n", spin, placement_text);
    fflush(stdout);
    int64_t t0 = now_ns();
    run_all();
    if (!opt.only || strstr(opt.only, "idle"))
        idle_pct = bench_idle_cpu_percent(IDLE_SECONDS);
    if (part("fanout") && selected("fanout")) {
        fanout_run = 1;
        bench_fanout(&FO, !opt.full);
    }
    if (part("notify") && selected("notify")) {
        notify_run = 1;
        run_notify();
    }
    double secs = (double)(now_ns() - t0) * 1e-9;

    int same = opt.cpu[0] == opt.cpu[1];
    char title[200];
    snprintf(title, sizeof title, "Throughput, GB/s (median of %d)", opt.reps);
    print_matrix("throughput", title, opt.tput, opt.ntput);
    uint64_t ls[40];
    int nls = 0;
    for (int i = 0; i < opt.nlat; i++)
        ls[nls++] = opt.lat[i];
    int has_big = 0;
    for (int i = 0; i < nls; i++)
        has_big |= ls[i] == HANDOFF_BIG;
    if (!has_big)
        ls[nls++] = HANDOFF_BIG;
    print_matrix("latency", "Round trip p50, microseconds (send, receive, send back, receive)", ls, nls);
    print_details();
    print_sweep();
    print_misses();
    print_fanout();
    print_notify();
    compute_targets();
    print_targets();
    if (opt.parts && in_list(opt.parts, "bridge"))   /* never in the default run */
        bench_bridge();
    if (py_skip[0])
        printf("\nPython rows skipped: %s\n", py_skip);
    if (same)
        printf("\nNote: both processes ran on CPU %d; the targets assume two CPUs.\n", opt.cpu[0]);
    printf("\nTotal %.0f s. Command: %s\n", secs, cmdline);
    write_files();
    plot();
    return 0;
}
