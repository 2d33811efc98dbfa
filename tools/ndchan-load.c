/* ndchan-load: stream .npy files (or directories of them) into a named
 * channel, in order, then close the stream.
 *
 *   ndchan-load [-c] [-u] [-s SLOTS] [-d DEPTH] [-D] [-q] CHANNEL PATH...
 *
 * Directories contribute their *.npy files sorted by name (numbers in
 * natural order: 2 before 10). With -c the channel is created, its slot size
 * the largest array among the files. Progress (arrays, bytes, rate) goes to
 * stderr when it is a terminal; nothing is printed otherwise, except errors.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "npy.h"

static void usage(void)
{
    fputs("usage: ndchan-load [-c] [-u] [-s SLOTS] [-d DEPTH] [-D] [-q] CHANNEL PATH...\n"
          "  PATH    .npy files, or directories of them (sorted by name)\n"
          "  -c      create the channel (slot size: the largest array)\n"
          "  -u      unlink the channel's name when done\n"
          "  -s N    slots when creating (default: DEPTH + 2)\n"
          "  -d N    files in flight (default 4)\n"
          "  -D      O_DIRECT where alignment allows (cold files)\n"
          "  -q      no progress on a terminal\n", stderr);
    exit(2);
}

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
    paths[npaths++] = strdup(p);
}

static int is_npy(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return e->d_name[0] != '.' && n > 4 && strcmp(e->d_name + n - 4, ".npy") == 0;
}

static void add_path(const char *p)
{
    struct stat st;
    if (stat(p, &st) != 0) {
        fprintf(stderr, "ndchan-load: %s: %s\n", p, strerror(errno));
        exit(1);
    }
    if (!S_ISDIR(st.st_mode)) {
        add(p);
        return;
    }
    struct dirent **list;
    int n = scandir(p, &list, is_npy, versionsort);
    if (n < 0) {
        fprintf(stderr, "ndchan-load: %s: %s\n", p, strerror(errno));
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s/%s", p, list[i]->d_name);
        add(buf);
        free(list[i]);
    }
    free(list);
}

/* The largest payload among the files, for -c. */
static uint64_t largest(void)
{
    uint64_t max = 4096;
    for (size_t i = 0; i < npaths; i++) {
        struct ndc__npy_header h;
        int fd = ndc__npy_open(paths[i], &h);   /* what the loader will read, checked the same way */
        if (fd < 0) {
            fprintf(stderr, "ndchan-load: %s: %s (%s)\n", paths[i], ndc_strerror(fd), ndc_last_error());
            exit(1);
        }
        close(fd);
        if (h.nbytes > max)
            max = h.nbytes;
    }
    return max;
}

int main(int argc, char **argv)
{
    int create = 0, unlink_name = 0, quiet = 0, c;
    unsigned slots = 0;
    struct ndc_npy_opts o;
    memset(&o, 0, sizeof o);
    while ((c = getopt(argc, argv, "cus:d:Dqh")) != -1) {
        switch (c) {
        case 'c': create = 1; break;
        case 'u': unlink_name = 1; break;
        case 's': slots = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'd': o.queue_depth = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'D': o.flags |= NDC_NPY_DIRECT; break;
        case 'q': quiet = 1; break;
        default: usage();
        }
    }
    if (argc - optind < 2)
        usage();
    const char *name = argv[optind];
    for (int i = optind + 1; i < argc; i++)
        add_path(argv[i]);

    ndc_chan *chan;
    int err;
    if (create) {
        struct ndc_chan_opts co;
        memset(&co, 0, sizeof co);
        co.slot_bytes = largest();
        co.slots = slots ? slots : (o.queue_depth ? o.queue_depth : 4) + 2;
        err = ndc_create(&chan, name, &co);
    } else {
        err = ndc_open(&chan, name, 0);
    }
    if (err) {
        fprintf(stderr, "ndchan-load: %s: %s (%s)\n", name, ndc_strerror(err), ndc_last_error());
        return 1;
    }
    struct progress *prog = progress_start(chan, PROGRESS_SENDING, npaths, quiet);
    int r = ndc_npy_load(chan, (const char *const *)paths, npaths, &o);
    char detail[512];
    snprintf(detail, sizeof detail, "%s", ndc_last_error());
    progress_stop(prog);
    ndc_close(chan);
    if (unlink_name)
        ndc_unlink(name);
    ndc_free(chan);
    if (r < 0) {
        fprintf(stderr, "ndchan-load: %s (%s)\n", ndc_strerror(r), detail);
        return 1;
    }
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    return 0;
}
