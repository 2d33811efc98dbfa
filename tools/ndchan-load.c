/* ndchan-load: stream .npy files (or directories of them) into a named
 * channel, in order, then close the stream.
 *
 *   ndchan-load [-c] [-u] [-s SLOTS] [-d DEPTH] [-D] [-q] CHANNEL PATH...
 *
 * Directories contribute their *.npy files sorted by name (numbers in
 * natural order: 2 before 10). Every file's header is checked, and every
 * option, before the channel is created or a single array sent: a bad file
 * or option leaves nothing behind. With -c the channel is created, its slot
 * size the largest array among the files; a load that fails after that
 * removes the name again. With -u the name is removed once the stream has
 * been consumed (every array received), so a consumer may start after the
 * loader and still find the channel. Progress (arrays, bytes, rate) goes to
 * stderr when it is a terminal; nothing is printed otherwise, except errors.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "ndchan.h"
#include "progress.h"

static const char help[] =
    "usage: ndchan-load [-c] [-u] [-s SLOTS] [-d DEPTH] [-D] [-q] CHANNEL PATH...\n"
    "Streams .npy files into a named channel in order, then closes the stream.\n"
    "  PATH          .npy files, or directories of them (sorted by name, 2 before 10)\n"
    "  -c, --create  create the channel (slot size: the largest array)\n"
    "  -u, --unlink  remove the channel's name once every array was received\n"
    "                (waits for that; a consumer may start after the loader)\n"
    "  -s, --slots N slots when creating, 1..4096 (default: DEPTH + 2)\n"
    "  -d, --depth N files in flight, 1..256 (default 4)\n"
    "  -D, --direct  O_DIRECT where alignment allows (cold files)\n"
    "  -q, --quiet   no progress line on a terminal\n"
    "  -h, --help    this text\n"
    "Exit status: 0 when every file was sent, 1 on a failure, 2 on a usage error.\n";

static char **paths;
static size_t npaths, cap;

static void add(const char *p)
{
    if (npaths == cap) {
        cap = cap ? 2 * cap : 64;
        paths = realloc(paths, cap * sizeof *paths);
        if (!paths) {
            perror("ndchan-load");
            exit(1);
        }
    }
    if (!(paths[npaths++] = strdup(p))) {
        perror("ndchan-load");
        exit(1);
    }
}

static int is_npy(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return e->d_name[0] != '.' && n > 4 && strcmp(e->d_name + n - 4, ".npy") == 0;
}

/* A file, or a directory's .npy files; 0, or 1 after saying why not. */
static int add_path(const char *p)
{
    struct stat st;
    if (stat(p, &st) != 0) {
        fprintf(stderr, "ndchan-load: %s: %s\n", p, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        add(p);
        return 0;
    }
    struct dirent **list;
    int n = scandir(p, &list, is_npy, versionsort);
    if (n < 0) {
        fprintf(stderr, "ndchan-load: %s: %s\n", p, strerror(errno));
        return 1;
    }
    if (n == 0) {
        fprintf(stderr, "ndchan-load: %s: no .npy files in this directory\n", p);
        free(list);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s/%s", p, list[i]->d_name);
        add(buf);
        free(list[i]);
    }
    free(list);
    return 0;
}

/* Check every header as the loader will; the largest payload, or 0 after
 * saying which file is bad. */
static uint64_t check_files(void)
{
    uint64_t max = 4096;
    for (size_t i = 0; i < npaths; i++) {
        struct ndc_array a;
        int r = ndc_npy_peek(paths[i], &a);
        if (r) {
            cli_fail(r, paths[i]);
            return 0;
        }
        if (ndc_array_nbytes(&a) > max)
            max = ndc_array_nbytes(&a);
    }
    return max;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "create", no_argument, NULL, 'c' },  { "unlink", no_argument, NULL, 'u' },
        { "slots", required_argument, NULL, 's' }, { "depth", required_argument, NULL, 'd' },
        { "direct", no_argument, NULL, 'D' },  { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },    { NULL, 0, NULL, 0 },
    };
    cli_init("ndchan-load", help);
    int create = 0, unlink_name = 0, quiet = 0, c;
    uint32_t slots = 0;
    struct ndc_npy_opts o;
    memset(&o, 0, sizeof o);
    while ((c = cli_getopt(argc, argv, "cus:d:Dqh", longopts)) != -1) {
        switch (c) {
        case 'c': create = 1; break;
        case 'u': unlink_name = 1; break;
        case 's': slots = (uint32_t)cli_int("-s", optarg, 1, NDC_MAX_SLOTS); break;
        case 'd': o.queue_depth = (uint32_t)cli_int("-d", optarg, 1, 256); break;
        case 'D': o.flags |= NDC_NPY_DIRECT; break;
        case 'q': quiet = 1; break;
        }
    }
    cli_positional(argc, argv, 2, -1);
    if (slots && !create)
        cli_usage("-s sets the slots of a channel -c creates");
    const char *name = argv[optind];
    for (int i = optind + 1; i < argc; i++)
        if (add_path(argv[i]))
            return 1;
    uint64_t largest = check_files();
    if (!largest)
        return 1;

    ndc_chan *chan;
    int err;
    if (create) {
        struct ndc_chan_opts co;
        memset(&co, 0, sizeof co);
        co.slot_bytes = largest;
        co.slots = slots ? slots : (o.queue_depth ? o.queue_depth : 4) + 2;
        err = ndc_create(&chan, name, &co);
    } else {
        err = ndc_open(&chan, name, 0);
    }
    if (err)
        return cli_fail(err, name);
    struct ndc_stat st;
    if (!create && ndc_stat(chan, &st) == 0 && st.slot_bytes < largest) {
        fprintf(stderr, "ndchan-load: %s: slots of %llu bytes, the largest file needs %llu\n",
                name, (unsigned long long)st.slot_bytes, (unsigned long long)largest);
        ndc_free(chan);
        return 1;
    }
    struct progress *prog = progress_start(chan, PROGRESS_SENDING, npaths, quiet);
    int r = ndc_npy_load(chan, (const char *const *)paths, npaths, &o);
    char detail[512];
    snprintf(detail, sizeof detail, "%s", ndc_last_error());
    progress_stop(prog);
    ndc_close(chan);
    int keep = 0;
    if (r >= 0 && unlink_name) {
        /* -u: the name goes once every array was received and released (a
         * consumer may not have started yet); if every receiver died with
         * arrays left, the name stays for the next one */
        int w = ndc_wait_drained(chan, NDC_DRAIN_CLOSED, NDC_FOREVER);
        if (w) {
            keep = 1;
            r = w;
            snprintf(detail, sizeof detail, "the stream was not consumed; %s stays", name);
        }
    }
    /* a channel we created for a load that failed is of no further use */
    if (!keep && (unlink_name || (create && r < 0)))
        ndc_unlink(name);
    ndc_free(chan);
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    if (r < 0) {
        fprintf(stderr, "ndchan-load: %s (%s)\n", ndc_strerror(r), detail);
        return 1;
    }
    return 0;
}
