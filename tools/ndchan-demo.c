/* ndchan-demo: the classic pipeline, end to end.
 *
 * A producer process emits float64 arrays of varying shapes into a channel;
 * a consumer process reads them in place and is sometimes busy, so arrays
 * pile up in the slots (the producer does not wait until they are full) and
 * are still delivered in the producer's order; then the producer closes the
 * stream and the consumer ends on -EPIPE. Every array is checked.
 *
 *   ndchan-demo [--arrays N] [--slots N] [--busy-every K] [--busy-ms MS]
 *
 * examples/pipeline.c is the same pipeline as a short program to copy from.
 */
#include <errno.h>
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

static const char help[] =
    "usage: ndchan-demo [--arrays N] [--slots N] [--busy-every K] [--busy-ms MS]\n"
    "The classic pipeline in two processes: a producer, a consumer that is\n"
    "sometimes busy (arrays buffer in the channel, order kept), a clean end.\n"
    "  -n, --arrays N      arrays to send, 0..1000000 (default 200)\n"
    "  -s, --slots N       slots of the channel, 1..4096 (default 8)\n"
    "  -b, --busy-every K  the consumer pauses after every K arrays (0: never; default 50)\n"
    "  -m, --busy-ms MS    for MS milliseconds, 0..60000 (default 30)\n"
    "  -h, --help          this text\n"
    "Exit status: 0 when every array arrived intact and in order, 1 otherwise,\n"
    "2 on a usage error.\n";

int main(int argc, char **argv)
{
    struct cfg c = {.arrays = 200, .slots = 8, .busy_every = 50, .busy_ms = 30};
    static const struct option opts[] = {
        {"arrays", required_argument, 0, 'n'},   {"slots", required_argument, 0, 's'},
        {"busy-every", required_argument, 0, 'b'}, {"busy-ms", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    cli_init("ndchan-demo", help);
    int o;
    while ((o = cli_getopt(argc, argv, "n:s:b:m:h", opts)) != -1) {
        switch (o) {
        case 'n': c.arrays = (int)cli_int("--arrays", optarg, 0, 1000000); break;
        case 's': c.slots = (int)cli_int("--slots", optarg, 1, NDC_MAX_SLOTS); break;
        case 'b': c.busy_every = (int)cli_int("--busy-every", optarg, 0, 1000000); break;
        case 'm': c.busy_ms = (int)cli_int("--busy-ms", optarg, 0, 60000); break;
        }
    }
    cli_positional(argc, argv, 0, 0);
    struct ndc_chan_opts opt = {.slots = (uint32_t)c.slots, .slot_bytes = 16 << 20};
    ndc_chan *ch;
    int r = ndc_create(&ch, NULL, &opt);   /* anonymous: shared with the child by fork */
    if (r)
        return cli_fail(r, "ndc_create");
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
    puts(rc ? "FAILED" : "ok");
    return rc;
}
