/* ndchan-save: write every array of a named channel to DIR/<seq>.npy until
 * the stream ends.
 *
 *   ndchan-save [-d DEPTH] [-D] [-w SECONDS] [-u] [-q] CHANNEL DIR
 *
 * DIR is created if missing. -w waits up to SECONDS for the channel to
 * appear (ndc_open_wait: the saver may start before its loader). Progress
 * (arrays, bytes, rate) goes to stderr when it is a terminal; nothing
 * otherwise, except errors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "ndchan.h"
#include "progress.h"

static const char help[] =
    "usage: ndchan-save [-d DEPTH] [-D] [-w SECONDS] [-u] [-q] CHANNEL DIR\n"
    "Writes every array of a named channel to DIR/<seq>.npy until end of stream.\n"
    "  -d, --depth N    writes in flight, 1..256 (default 4)\n"
    "  -D, --direct     O_DIRECT when the payload is block aligned\n"
    "  -w, --wait S     wait up to S seconds for the channel to be created\n"
    "                   (-1: forever; default 0: it must exist)\n"
    "  -u, --unlink     remove the channel's name once attached\n"
    "  -q, --quiet      no progress line on a terminal\n"
    "  -h, --help       this text\n"
    "Exit status: 0 at end of stream, 1 on a failure, 2 on a usage error.\n";

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "depth", required_argument, NULL, 'd' }, { "direct", no_argument, NULL, 'D' },
        { "wait", required_argument, NULL, 'w' },  { "unlink", no_argument, NULL, 'u' },
        { "quiet", no_argument, NULL, 'q' },       { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    cli_init("ndchan-save", help);
    int quiet = 0, unlink_name = 0, c;
    double wait_s = 0;
    struct ndc_npy_opts o;
    memset(&o, 0, sizeof o);
    while ((c = cli_getopt(argc, argv, "d:Dw:uqh", longopts)) != -1) {
        switch (c) {
        case 'd': o.queue_depth = (uint32_t)cli_int("-d", optarg, 1, 256); break;
        case 'D': o.flags |= NDC_NPY_DIRECT; break;
        case 'w': wait_s = cli_double("-w", optarg, -1, 9e9); break;
        case 'u': unlink_name = 1; break;
        case 'q': quiet = 1; break;
        }
    }
    cli_positional(argc, argv, 2, 2);
    if (wait_s < 0 && wait_s != -1)
        cli_usage("-w: a number of seconds, or -1 for no limit");
    const char *name = argv[optind], *dir = argv[optind + 1];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "ndchan-save: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    ndc_chan *chan;
    int err = ndc_open_wait(&chan, name, 0, wait_s < 0 ? NDC_FOREVER : (int64_t)(wait_s * 1e9));
    if (err)
        return cli_fail(err, name);
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
