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
#include "progress.h"

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
    ndc_chan *chan;
    int err;
    long steps = (long)(wait_s * 50);   /* -w: retry a missing channel every 20 ms */
    while ((err = ndc_open(&chan, name, 0)) == -ENOENT && steps-- > 0) {
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (err) {
        fprintf(stderr, "ndchan-save: %s: %s (%s)\n", name, ndc_strerror(err), ndc_last_error());
        return 1;
    }
    if (unlink_name)
        ndc_unlink(name);
    struct progress *prog = progress_start(chan, PROGRESS_RECEIVING, 0, quiet);
    int r = ndc_npy_drain(chan, dir, &o);
    char detail[512];
    snprintf(detail, sizeof detail, "%s", ndc_last_error());
    progress_stop(prog);
    ndc_free(chan);
    if (r < 0) {
        fprintf(stderr, "ndchan-save: %s (%s)\n", ndc_strerror(r), detail);
        return 1;
    }
    return 0;
}
