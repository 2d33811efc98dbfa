/* ndchan-save: write every array of a named channel to DIR/<seq>.npy until
 * the stream ends.
 *
 *   ndchan-save [-d DEPTH] [-D] [-w SECONDS] [-u] [-q] CHANNEL DIR
 *
 * DIR is created if missing. -w waits up to SECONDS for the channel to
 * appear (a loader started at the same time). Progress (arrays, bytes, rate)
 * goes to stderr when it is a terminal; nothing otherwise, except errors.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ndchan.h"

static void usage(void)
{
    fputs("usage: ndchan-save [-d DEPTH] [-D] [-w SECONDS] [-u] [-q] CHANNEL DIR\n"
          "  -d N    writes in flight (default 4)\n"
          "  -D      O_DIRECT when the payload is block aligned\n"
          "  -w S    wait up to S seconds for the channel to exist\n"
          "  -u      unlink the channel's name once attached\n"
          "  -q      no progress on a terminal\n", stderr);
    exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static ndc_chan *chan;
static atomic_int done;
static double t0;

/* The channel counts arrays received but bytes only as sent: the bytes shown
 * are the sent bytes scaled by received/sent, exact once the stream ends. */
static void show(int final)
{
    struct ndc_stat st;
    if (ndc_stat(chan, &st) != 0)
        return;
    double dt = now() - t0;
    double mib = st.sent ? (double)st.bytes_sent * st.received / st.sent / (1 << 20) : 0;
    fprintf(stderr, "\r%llu arrays  %.1f MiB  %.1f MiB/s   %s", (unsigned long long)st.received,
            mib, dt > 0 ? mib / dt : 0.0, final ? "\n" : "");
}

static void *progress(void *arg)
{
    (void)arg;
    while (!atomic_load(&done)) {
        show(0);
        struct timespec ts = { 0, 200 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int quiet = 0, unlink_name = 0, c;
    double wait_s = 0;
    struct ndc_npy_opts o;
    memset(&o, 0, sizeof o);
    while ((c = getopt(argc, argv, "d:Dw:uqh")) != -1) {
        switch (c) {
        case 'd': o.queue_depth = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'D': o.flags |= NDC_NPY_DIRECT; break;
        case 'w': wait_s = strtod(optarg, NULL); break;
        case 'u': unlink_name = 1; break;
        case 'q': quiet = 1; break;
        default: usage();
        }
    }
    if (argc - optind != 2)
        usage();
    const char *name = argv[optind], *dir = argv[optind + 1];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "ndchan-save: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    double until = now() + wait_s;
    int err;
    while ((err = ndc_open(&chan, name, 0)) == -ENOENT && now() < until) {
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (err) {
        fprintf(stderr, "ndchan-save: %s: %s (%s)\n", name, ndc_strerror(err), ndc_last_error());
        return 1;
    }
    if (unlink_name)
        ndc_unlink(name);
    pthread_t th;
    int tty = !quiet && isatty(STDERR_FILENO);
    t0 = now();
    if (tty)
        pthread_create(&th, NULL, progress, NULL);
    int r = ndc_npy_drain(chan, dir, &o);
    char detail[512];
    snprintf(detail, sizeof detail, "%s", ndc_last_error());
    if (tty) {
        atomic_store(&done, 1);
        pthread_join(th, NULL);
        show(1);
    }
    ndc_free(chan);
    if (r < 0) {
        fprintf(stderr, "ndchan-save: %s (%s)\n", ndc_strerror(r), detail);
        return 1;
    }
    return 0;
}
