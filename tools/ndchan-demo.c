/* ndchan-demo: the classic pipeline, end to end.
 *
 * A producer process emits float64 arrays of varying shapes into a channel;
 * a consumer process reads them in place and is sometimes busy, so arrays
 * pile up in the slots (the producer does not wait until they are full) and
 * are still delivered in the producer's order; then the producer closes the
 * stream and the consumer ends on -EPIPE. Every array is checked.
 *
 *   ndchan-demo [--arrays N] [--slots N] [--busy-every K] [--busy-ms MS] [--name NAME]
 *
 * examples/pipeline.c is the same pipeline as a short program to copy from.
 *
 * With --broadcast, a broadcast channel instead: one producer, two
 * subscribers, one fast and one that sleeps a few ms per array, run under
 * the block policy (lossless: the producer waits for the slow one), the
 * latest policy (the producer never waits: the slow one gets the newest
 * array each time and the rest count as dropped), or both in turn. Each
 * subscriber says what it got and dropped (ndc_subscribers). See
 * examples/broadcast.c for the same as a short program.
 *
 *   ndchan-demo --broadcast [--policy block|latest|both] [--arrays N]
 *               [--slots N] [--slow-ms MS] [--produce-us US] [--name NAME]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ndchan.h"

struct cfg {
    int arrays, slots, busy_every, busy_ms;
    const char *name;        /* a named channel (ndchan-stat NAME watches it); NULL: anonymous */
    int slow_ms, produce_us; /* --broadcast */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Array i's shape: 1 to 3 dimensions, from 8 KiB to about 12 MiB. */
static int shape_of(int i, int64_t *shape)
{
    int ndim = 1 + i % 3;
    static const int64_t span[] = {200000, 400, 100};
    static const int64_t least[] = {1000, 64, 16};
    for (int d = 0; d < ndim; d++)
        shape[d] = least[ndim - 1] + (i * 37 + d * 11) % span[ndim - 1];
    return ndim;
}

static double value_of(int i, int64_t k)
{
    return (double)i * 1e6 + (double)k;
}

static int producer(ndc_chan *ch, const struct cfg *c)
{
    for (int i = 0; i < c->arrays; i++) {
        int64_t shape[NDC_MAX_DIMS];
        struct ndc_array a;
        int r = ndc_array_init(&a, NDC_F64, shape_of(i, shape), shape, NULL);
        a.tag = (uint64_t)i;
        if (!r)
            r = ndc_reserve(ch, &a, NDC_FOREVER);
        if (r) {
            fprintf(stderr, "producer: reserve: %s\n", ndc_strerror(r));
            return 1;
        }
        double *x = a.data;   /* written in place: no copy */
        size_t n = ndc_array_nbytes(&a) / sizeof *x;
        for (size_t k = 0; k < n; k++)
            x[k] = value_of(i, (int64_t)k);
        if ((r = ndc_commit(ch, &a))) {
            fprintf(stderr, "producer: commit: %s\n", ndc_strerror(r));
            return 1;
        }
    }
    ndc_close(ch);   /* end of stream: the consumer drains, then gets -EPIPE */
    return 0;
}

static int consumer(ndc_chan *ch, const struct cfg *c)
{
    int got = 0, max_ready = 0;
    uint64_t bytes = 0;
    for (;;) {
        struct ndc_array a;
        int r = ndc_acquire(ch, &a, 5 * 1000000000ll);
        if (r == -EPIPE)
            break;
        if (r) {
            fprintf(stderr, "consumer: acquire: %s (%s)\n", ndc_strerror(r), ndc_last_error());
            return 1;
        }
        struct ndc_stat st;
        ndc_stat(ch, &st);
        if ((int)st.ready > max_ready)
            max_ready = (int)st.ready;
        int64_t shape[NDC_MAX_DIMS];
        int ndim = shape_of(got, shape);
        const double *x = a.data;  /* read in place: no copy */
        size_t n = ndc_array_nbytes(&a) / sizeof *x;
        int ok = a.tag == (uint64_t)got && a.seq == (uint64_t)got && a.ndim == ndim &&
                 !memcmp(a.shape, shape, sizeof(int64_t) * (size_t)ndim);
        for (size_t k = 0; ok && k < n; k++)
            ok = x[k] == value_of(got, (int64_t)k);
        if (!ok) {
            fprintf(stderr, "consumer: array %d arrived wrong (tag %llu seq %llu)\n", got,
                    (unsigned long long)a.tag, (unsigned long long)a.seq);
            return 1;
        }
        bytes += ndc_array_nbytes(&a);
        ndc_release(ch, &a);
        got++;
        if (c->busy_every && got % c->busy_every == 0) {
            printf("  consumer busy for %d ms after array %d (%u waiting in the channel)\n",
                   c->busy_ms, got - 1, st.ready);
            usleep((useconds_t)c->busy_ms * 1000);
        }
    }
    printf("consumer: %d arrays, %.1f MiB, all in order and intact; up to %d buffered "
           "while busy; end of stream seen\n", got, bytes / 1048576.0, max_ready);
    return got == c->arrays ? 0 : 1;
}

/* ---- --broadcast --------------------------------------------------------------- */

#define BC_SIDE 64   /* arrays of BC_SIDE x BC_SIDE float64: 32 KiB */

struct sub_report {
    int      ok;                 /* in order, intact, as the policy promises */
    uint64_t received, dropped;  /* as counted by the library (ndc_subscribers) */
    uint64_t got, first, last;   /* as seen here */
    int      pid;
};

static int subscriber(ndc_chan *ch, int sleep_ms, int policy, const struct cfg *c, int fd)
{
    struct sub_report rep = {.ok = 1, .first = UINT64_MAX, .pid = (int)getpid()};
    int r = ndc_subscribe(ch);   /* the inherited handle joins as this process, then subscribes */
    uint64_t want = 0;
    while (r == 0) {
        struct ndc_array a;
        r = ndc_acquire(ch, &a, 10 * 1000000000ll);
        if (r)
            break;
        const double *x = a.data;
        size_t n = ndc_array_nbytes(&a) / sizeof *x;
        int ok = a.tag == a.seq && n == BC_SIDE * BC_SIDE && x[0] == value_of((int)a.seq, 0) &&
                 x[n - 1] == value_of((int)a.seq, (int64_t)n - 1);
        /* block: every array, in order; latest: never back, never twice */
        if (!ok || (policy == NDC_SLOW_BLOCK ? a.seq != want : a.seq < want))
            rep.ok = 0;
        want = a.seq + 1;
        if (rep.first == UINT64_MAX)
            rep.first = a.seq;
        rep.last = a.seq;
        rep.got++;
        ndc_release(ch, &a);
        if (sleep_ms)
            usleep((useconds_t)sleep_ms * 1000);
    }
    if (r != -EPIPE) {
        fprintf(stderr, "subscriber %d: acquire: %s (%s)\n", (int)getpid(), ndc_strerror(r), ndc_last_error());
        rep.ok = 0;
    }
    struct ndc_sub_stat subs[NDC_MAX_PEERS];
    int n = ndc_subscribers(ch, subs, NDC_MAX_PEERS);
    for (int i = 0; i < n && i < NDC_MAX_PEERS; i++)
        if (subs[i].pid == rep.pid) {
            rep.received = subs[i].received;
            rep.dropped = subs[i].dropped;
        }
    /* every array is had or dropped; the last one is had (latest: the newest) */
    if (rep.received != rep.got || rep.got + rep.dropped != (uint64_t)c->arrays ||
        (c->arrays && rep.last != (uint64_t)c->arrays - 1))
        rep.ok = 0;
    if (policy == NDC_SLOW_BLOCK && rep.dropped)
        rep.ok = 0;
    return write(fd, &rep, sizeof rep) == (ssize_t)sizeof rep && rep.ok ? 0 : 1;
}

struct bc_result {
    double   seconds;            /* the producer's, from the first reserve to the close */
    struct sub_report sub[2];    /* fast, slow */
    int      ok;
};

static int broadcast_run(const struct cfg *c, int policy, struct bc_result *res)
{
    const char *pname = policy == NDC_SLOW_BLOCK ? "block" : "latest";
    struct ndc_chan_opts opt = {.slots = (uint32_t)c->slots, .slot_bytes = BC_SIDE * BC_SIDE * sizeof(double),
                                .flags = NDC_BROADCAST, .slow_policy = (uint32_t)policy};
    ndc_chan *ch;
    int r = ndc_create(&ch, c->name, &opt);
    if (r)
        return cli_fail(r, c->name ? c->name : "ndc_create");
    printf("policy %s: %d arrays of %dx%d float64 through %d slots; the slow subscriber sleeps "
           "%d ms per array, the producer makes one every %d us\n", pname, c->arrays, BC_SIDE, BC_SIDE,
           c->slots, c->slow_ms, c->produce_us);
    fflush(stdout);
    int fds[2];
    if (pipe(fds)) {
        perror("pipe");
        return 1;
    }
    pid_t kid[2];
    for (int k = 0; k < 2; k++) {
        if ((kid[k] = fork()) == 0) {
            close(fds[0]);
            _exit(subscriber(ch, k ? c->slow_ms : 0, policy, c, fds[1]));
        }
    }
    close(fds[1]);
    /* arrays committed before a subscriber subscribed are not for it: start
     * once both are there */
    struct ndc_stat st = {0};
    for (int i = 0; i < 10000 && (ndc_stat(ch, &st) || st.subscribers < 2); i++)
        usleep(1000);
    double t0 = now_s();
    int rc = st.subscribers < 2;
    if (rc)
        fprintf(stderr, "ndchan-demo: the subscribers did not subscribe within 10 s\n");
    for (int i = 0; !rc && i < c->arrays; i++) {
        int64_t shape[2] = {BC_SIDE, BC_SIDE};
        struct ndc_array a;
        ndc_array_init(&a, NDC_F64, 2, shape, NULL);
        a.tag = (uint64_t)i;
        if ((r = ndc_reserve(ch, &a, NDC_FOREVER)) == 0) {
            double *x = a.data;
            for (int64_t k = 0; k < BC_SIDE * BC_SIDE; k++)
                x[k] = value_of(i, k);
            r = ndc_commit(ch, &a);
        }
        if (r) {
            rc = cli_fail(r, "producer");
            break;
        }
        if (c->produce_us) {
            /* a steady rate, however long the reserve waited */
            double due = t0 + (i + 1) * c->produce_us * 1e-6, left = due - now_s();
            if (left > 0)
                usleep((useconds_t)(left * 1e6));
        }
    }
    ndc_close(ch);
    res->seconds = now_s() - t0;
    for (int k = 0; k < 2; k++) {
        int status;
        waitpid(kid[k], &status, 0);
        rc |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    for (int k = 0; k < 2; k++)
        if (read(fds[0], &res->sub[k], sizeof res->sub[k]) != (ssize_t)sizeof res->sub[k])
            rc = 1;
    close(fds[0]);
    /* the reports come in the order the subscribers finished: fast first */
    if (res->sub[0].pid == (int)kid[1]) {
        struct sub_report t = res->sub[0];
        res->sub[0] = res->sub[1];
        res->sub[1] = t;
    }
    double ideal = c->arrays * c->produce_us * 1e-6;
    printf("  producer: %d arrays in %.3f s (at its own pace: %.3f s)%s\n", c->arrays, res->seconds,
           ideal, policy == NDC_SLOW_BLOCK ? ", held back by the slowest subscriber"
                                           : ", never waiting for a subscriber");
    for (int k = 0; k < 2; k++) {
        const struct sub_report *u = &res->sub[k];
        printf("  %s subscriber (pid %d%s): received %" PRIu64 ", dropped %" PRIu64, k ? "slow" : "fast",
               u->pid, k ? ", sleeps after each array" : "", u->received, u->dropped);
        if (u->got)
            printf(", seq %" PRIu64 "..%" PRIu64 "%s", u->first, u->last,
                   policy == NDC_SLOW_BLOCK ? " in order" : " (the newest each time)");
        printf("%s\n", u->ok ? "" : "  WRONG");
    }
    fflush(stdout);
    ndc_free(ch);
    if (c->name)
        ndc_unlink(c->name);
    res->ok = !rc;
    return rc;
}

static int broadcast_demo(const struct cfg *c, const char *policy)
{
    int both = !strcmp(policy, "both");
    struct bc_result res[2];
    int rc = 0;
    if (both || !strcmp(policy, "block"))
        rc |= broadcast_run(c, NDC_SLOW_BLOCK, &res[0]);
    if (both || !strcmp(policy, "latest"))
        rc |= broadcast_run(c, NDC_SLOW_LATEST, &res[1]);
    if (both && res[0].ok && res[1].ok) {
        printf("\n%-8s %10s %22s %22s\n", "policy", "producer", "fast: got/dropped", "slow: got/dropped");
        for (int k = 0; k < 2; k++) {
            char f[48], s[48];
            snprintf(f, sizeof f, "%" PRIu64 "/%" PRIu64, res[k].sub[0].received, res[k].sub[0].dropped);
            snprintf(s, sizeof s, "%" PRIu64 "/%" PRIu64, res[k].sub[1].received, res[k].sub[1].dropped);
            printf("%-8s %8.3f s %22s %22s\n", k ? "latest" : "block", res[k].seconds, f, s);
        }
    }
    puts(rc ? "FAILED" : "ok");
    return rc;
}

static const char help[] =
    "usage: ndchan-demo [--arrays N] [--slots N] [--busy-every K] [--busy-ms MS] [--name NAME]\n"
    "       ndchan-demo --broadcast [--policy block|latest|both] [--arrays N] [--slots N]\n"
    "                   [--slow-ms MS] [--produce-us US] [--name NAME]\n"
    "The classic pipeline in two processes: a producer, a consumer that is\n"
    "sometimes busy (arrays buffer in the channel, order kept), a clean end.\n"
    "With --broadcast: one producer feeds two subscribers of a broadcast channel,\n"
    "one fast, one sleeping after each array, and each says what it got and dropped.\n"
    "  -n, --arrays N      arrays to send, 0..1000000 (default 200)\n"
    "  -s, --slots N       slots of the channel, 1..4096 (default 8; --broadcast: 2..4096)\n"
    "  -b, --busy-every K  the consumer pauses after every K arrays (0: never; default 50)\n"
    "  -m, --busy-ms MS    for MS milliseconds, 0..60000 (default 30)\n"
    "      --name NAME     a named channel, so `ndchan-stat --watch NAME` can watch the\n"
    "                      run from another shell (default: anonymous); removed at the end\n"
    "  -B, --broadcast     the broadcast demo (the options below go with it)\n"
    "  -p, --policy P      block (lossless: the producer waits for the slow subscriber),\n"
    "                      latest (the producer never waits: the slow one gets the newest\n"
    "                      array each time, the others count as dropped), or both in\n"
    "                      turn (default both)\n"
    "      --slow-ms MS    the slow subscriber sleeps MS ms after each array, 0..60000\n"
    "                      (default 5)\n"
    "      --produce-us US the producer makes one array every US microseconds,\n"
    "                      0..1000000 (default 1000)\n"
    "  -h, --help          this text\n"
    "Exit status: 0 when every array arrived intact and in order (--broadcast: as\n"
    "the policy promises), 1 otherwise, 2 on a usage error.\n";

int main(int argc, char **argv)
{
    enum { O_NAME = 256, O_SLOW, O_PRODUCE };
    struct cfg c = {.arrays = 200, .slots = 8, .busy_every = 50, .busy_ms = 30, .slow_ms = 5,
                    .produce_us = 1000};
    static const struct option opts[] = {
        {"arrays", required_argument, 0, 'n'},   {"slots", required_argument, 0, 's'},
        {"busy-every", required_argument, 0, 'b'}, {"busy-ms", required_argument, 0, 'm'},
        {"name", required_argument, 0, O_NAME},  {"broadcast", no_argument, 0, 'B'},
        {"policy", required_argument, 0, 'p'},   {"slow-ms", required_argument, 0, O_SLOW},
        {"produce-us", required_argument, 0, O_PRODUCE},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    cli_init("ndchan-demo", help);
    int o, broadcast = 0, pipeline_opt = 0, broadcast_opt = 0;
    const char *policy = "both";
    while ((o = cli_getopt(argc, argv, "n:s:b:m:Bp:h", opts)) != -1) {
        switch (o) {
        case 'n': c.arrays = (int)cli_int("--arrays", optarg, 0, 1000000); break;
        case 's': c.slots = (int)cli_int("--slots", optarg, 1, NDC_MAX_SLOTS); break;
        case 'b': c.busy_every = (int)cli_int("--busy-every", optarg, 0, 1000000); pipeline_opt = 1; break;
        case 'm': c.busy_ms = (int)cli_int("--busy-ms", optarg, 0, 60000); pipeline_opt = 1; break;
        case O_NAME: c.name = optarg; break;
        case 'B': broadcast = 1; break;
        case 'p':
            policy = optarg;
            broadcast_opt = 1;
            if (strcmp(policy, "block") && strcmp(policy, "latest") && strcmp(policy, "both"))
                cli_usage("--policy: block, latest or both, not '%s'", optarg);
            break;
        case O_SLOW: c.slow_ms = (int)cli_int("--slow-ms", optarg, 0, 60000); broadcast_opt = 1; break;
        case O_PRODUCE: c.produce_us = (int)cli_int("--produce-us", optarg, 0, 1000000); broadcast_opt = 1; break;
        }
    }
    cli_positional(argc, argv, 0, 0);
    if (broadcast && pipeline_opt)
        cli_usage("--busy-every and --busy-ms go with the pipeline, not --broadcast");
    if (!broadcast && broadcast_opt)
        cli_usage("--policy, --slow-ms and --produce-us go with --broadcast");
    if (broadcast && c.slots < 2)
        cli_usage("--slots: a broadcast channel needs 2 or more");
    if (broadcast)
        return broadcast_demo(&c, policy);
    struct ndc_chan_opts opt = {.slots = (uint32_t)c.slots, .slot_bytes = 16 << 20};
    ndc_chan *ch;
    int r = ndc_create(&ch, c.name, &opt);   /* anonymous: shared with the child by fork */
    if (r)
        return cli_fail(r, c.name ? c.name : "ndc_create");
    printf("ndchan-demo: %d float64 arrays of 1-3 dimensions through %d slots\n", c.arrays, c.slots);
    double t0 = now_s();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int crc = consumer(ch, &c);   /* the inherited handle is the child's own */
        fflush(stdout);
        _exit(crc);
    }
    int rc = producer(ch, &c);
    int st;
    waitpid(pid, &st, 0);
    rc |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    struct ndc_stat s;
    ndc_stat(ch, &s);
    printf("producer: sent %llu arrays (%.1f MiB) in %.3f s; channel closed=%u, %u of %u slots free\n",
           (unsigned long long)s.sent, s.bytes_sent / 1048576.0, now_s() - t0, s.closed, s.free,
           s.slots);
    ndc_free(ch);
    if (c.name)
        ndc_unlink(c.name);
    puts(rc ? "FAILED" : "ok");
    return rc;
}
