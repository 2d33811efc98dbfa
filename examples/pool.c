/* pool: a worker pool whose results come back in input order, as Python's
 * Pool.imap gives them.
 *
 * Tasks go out on one channel that every worker receives from (each task
 * reaches exactly one worker); results come back on a second channel,
 * tagged with the task's index. Workers finish out of order, so the parent
 * keeps results that are early on loan (no copy) until their turn comes.
 * With at most `window` tasks in flight and as many result slots, a worker
 * always finds a slot for its result: the pool cannot deadlock.
 *
 *   pool [TASKS [WORKERS]]     (default 64 tasks, 3 workers)
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"

enum { WINDOW = 8, N = 10000 };

/* The work: a slow per-task function of the input (and some jitter, so
 * workers finish out of order). */
static int worker(ndc_chan *tasks, ndc_chan *results, int id)
{
    for (;;) {
        struct ndc_array in;
        int r = ndc_acquire(tasks, &in, NDC_FOREVER);
        if (r == -EPIPE)
            return 0;                              /* no more tasks */
        if (r)
            return 1;
        int64_t one = 1;
        struct ndc_array out;
        ndc_array_init(&out, NDC_F64, 1, &one, NULL);
        out.tag = in.tag;                          /* which task this answers */
        if ((r = ndc_reserve(results, &out, NDC_FOREVER)))
            return 1;
        const double *x = in.data;
        double sum = 0;
        for (int64_t k = 0; k < in.shape[0]; k++)
            sum += sqrt(x[k]);
        *(double *)out.data = sum;
        ndc_release(tasks, &in);
        usleep((useconds_t)((in.tag * 7 + (uint64_t)id * 3) % 5) * 1000);
        if ((r = ndc_commit(results, &out)))
            return 1;
    }
}

static int send_task(ndc_chan *tasks, int i)
{
    double x[N];
    for (int k = 0; k < N; k++)
        x[k] = (double)i + k;
    int64_t n = N;
    struct ndc_array a;
    ndc_array_init(&a, NDC_F64, 1, &n, x);
    a.tag = (uint64_t)i;
    return ndc_send(tasks, &a, NDC_FOREVER);       /* one copy into a slot */
}

int main(int argc, char **argv)
{
    int ntasks = argc > 1 ? atoi(argv[1]) : 64, nworkers = argc > 2 ? atoi(argv[2]) : 3;
    struct ndc_chan_opts to = { .slots = WINDOW, .slot_bytes = N * sizeof(double) };
    struct ndc_chan_opts ro = { .slots = WINDOW, .slot_bytes = 4096 };
    ndc_chan *tasks, *results;
    if (ndc_create(&tasks, NULL, &to) || ndc_create(&results, NULL, &ro)) {
        fprintf(stderr, "ndc_create: %s\n", ndc_last_error());
        return 1;
    }
    for (int w = 0; w < nworkers; w++)
        if (fork() == 0)
            _exit(worker(tasks, results, w));

    struct ndc_array early[WINDOW];                /* results that came before their turn */
    int have[WINDOW] = { 0 }, sent = 0, next = 0, rc = 0;
    while (next < ntasks && !rc) {
        while (sent < ntasks && sent - next < WINDOW)
            if (send_task(tasks, sent++))
                rc = 1;
        if (sent == ntasks)
            ndc_close(tasks);                      /* the workers end after the last task */
        struct ndc_array r;
        if (rc || ndc_acquire(results, &r, 10 * 1000000000ll)) {
            rc = 1;
            break;
        }
        early[r.tag % WINDOW] = r;
        have[r.tag % WINDOW] = 1;
        while (next < ntasks && have[next % WINDOW]) {    /* in input order */
            struct ndc_array *a = &early[next % WINDOW];
            double want = 0;
            for (int k = 0; k < N; k++)
                want += sqrt((double)next + k);
            if (fabs(*(double *)a->data - want) > 1e-6 * want)
                rc = 1;
            if (next % 16 == 0 || next == ntasks - 1)
                printf("result %d: %.3f\n", next, *(double *)a->data);
            ndc_release(results, a);
            have[next % WINDOW] = 0;
            next++;
        }
    }
    ndc_close(tasks);
    for (int w = 0; w < nworkers; w++) {
        int status;
        wait(&status);
        rc |= !WIFEXITED(status) || WEXITSTATUS(status);
    }
    printf("%d results in input order from %d workers: %s\n", next, nworkers, rc ? "FAILED" : "ok");
    ndc_free(tasks);
    ndc_free(results);
    return rc;
}
