/* broadcast: one publisher, two subscribers that each get every array.
 *
 * A broadcast channel (NDC_BROADCAST) hands every array to every
 * subscriber, zero copy: they all read the same slot. One subscriber here
 * is fast; the other sleeps 5 ms after each array. The channel's
 * slow_policy decides what the slow one does to the publisher:
 *
 *   block   lossless: the publisher waits until the slowest subscriber has
 *           released the oldest array (it runs at the slow one's pace);
 *   latest  the publisher never waits: each acquire gives the slow
 *           subscriber the newest array it has not had, and the ones it
 *           skipped are counted in its `dropped` (ndc_subscribers).
 *
 *   broadcast [block|latest] [ARRAYS]      (default: block 100)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ndchan.h"

static int subscribe_and_read(ndc_chan *ch, const char *who, int sleep_ms, int n, int lossless)
{
    ndc_subscribe(ch);                             /* from now on, every array is for us too */
    int got = 0;
    uint64_t last = 0;
    for (;;) {
        struct ndc_array a;
        int r = ndc_acquire(ch, &a, NDC_FOREVER);
        if (r == -EPIPE)
            break;                                 /* closed, and we had the last one */
        if (r) {
            fprintf(stderr, "%s: %s\n", who, ndc_strerror(r));
            return 1;
        }
        const double *x = a.data;                  /* the slot itself, shared by all subscribers */
        if (x[0] != (double)a.seq || (got && a.seq <= last) || (lossless && a.seq != (uint64_t)got)) {
            fprintf(stderr, "%s: array %llu out of order\n", who, (unsigned long long)a.seq);
            return 1;
        }
        last = a.seq;
        got++;
        ndc_release(ch, &a);
        if (sleep_ms)
            usleep((useconds_t)sleep_ms * 1000);   /* a slow subscriber */
    }
    struct ndc_sub_stat me[NDC_MAX_PEERS];         /* what the channel counted for us */
    int k = ndc_subscribers(ch, me, NDC_MAX_PEERS);
    for (int i = 0; i < k && i < NDC_MAX_PEERS; i++)
        if (me[i].pid == getpid())
            printf("%s subscriber: received %llu, dropped %llu, last seq %llu\n", who,
                   (unsigned long long)me[i].received, (unsigned long long)me[i].dropped,
                   (unsigned long long)last);
    fflush(stdout);                                /* the child leaves with _exit */
    return got == 0 || last != (uint64_t)n - 1 || (lossless && got != n);
}

int main(int argc, char **argv)
{
    int latest = argc > 1 && !strcmp(argv[1], "latest");
    int n = argc > 2 ? atoi(argv[2]) : 100;
    struct ndc_chan_opts o = { .slots = 8, .slot_bytes = 64 * 64 * sizeof(double),
                               .flags = NDC_BROADCAST,
                               .slow_policy = latest ? NDC_SLOW_LATEST : NDC_SLOW_BLOCK };
    ndc_chan *ch;
    int r = ndc_create(&ch, NULL, &o);             /* anonymous: shared by fork() */
    if (r) {
        fprintf(stderr, "ndc_create: %s\n", ndc_strerror(r));
        return 1;
    }
    pid_t fast = fork();
    if (fast == 0)
        _exit(subscribe_and_read(ch, "fast", 0, n, !latest));
    pid_t slow = fork();
    if (slow == 0)
        _exit(subscribe_and_read(ch, "slow", 5, n, !latest));
    /* arrays published before a subscriber subscribed are not for it:
     * wait for both (history would give a late one the last few) */
    struct ndc_stat st = { 0 };
    while (ndc_stat(ch, &st) == 0 && st.subscribers < 2)
        usleep(1000);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n && r == 0; i++) {
        int64_t shape[2] = { 64, 64 };
        struct ndc_array a;
        ndc_array_init(&a, NDC_F64, 2, shape, NULL);
        if ((r = ndc_reserve(ch, &a, NDC_FOREVER)))  /* block: waits for the slowest */
            break;
        double *x = a.data;
        for (int k = 0; k < 64 * 64; k++)
            x[k] = (double)i;                      /* seq i carries the value i */
        r = ndc_commit(ch, &a);
        usleep(1000);                              /* one array a millisecond */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ndc_close(ch);                                 /* end of stream for every subscriber */
    printf("publisher (%s policy): %d arrays in %.3f s\n", latest ? "latest" : "block", n,
           (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
    fflush(stdout);
    int bad = r != 0, status;
    for (int k = 0; k < 2; k++) {
        waitpid(k ? slow : fast, &status, 0);
        bad |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    ndc_free(ch);
    return bad;
}
