/* pipeline: the classic producer -> consumer pipeline in two processes.
 *
 * The producer writes each array straight into a slot (no copy) and commits
 * it; the consumer reads it in place and is sometimes busy, so arrays wait
 * in the channel's slots (the producer goes on until every slot is full) and
 * still come out in order. ndc_close ends the stream: the consumer gets
 * every array committed before it, then -EPIPE.
 *
 *   pipeline [ARRAYS]      (default 100)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"

static int produce(ndc_chan *ch, int n)
{
    for (int i = 0; i < n; i++) {
        int64_t shape[2] = { 256, 256 + i % 64 };   /* shapes may change from array to array */
        struct ndc_array a;
        ndc_array_init(&a, NDC_F32, 2, shape, NULL);
        a.tag = (uint64_t)i;
        int r = ndc_reserve(ch, &a, NDC_FOREVER);  /* waits while every slot is taken */
        if (r) {
            fprintf(stderr, "producer: %s\n", ndc_strerror(r));
            return 1;
        }
        float *x = a.data;                         /* the slot itself */
        for (int64_t k = 0; k < shape[0] * shape[1]; k++)
            x[k] = (float)i;
        if ((r = ndc_commit(ch, &a))) {            /* visible to the consumer from here */
            fprintf(stderr, "producer: %s\n", ndc_strerror(r));
            return 1;
        }
    }
    ndc_close(ch);                                 /* end of stream */
    return 0;
}

static int consume(ndc_chan *ch)
{
    uint64_t next = 0;
    unsigned most_waiting = 0;
    for (;;) {
        struct ndc_array a;
        int r = ndc_acquire(ch, &a, NDC_FOREVER);
        if (r == -EPIPE)
            break;                                 /* closed, and everything drained */
        if (r) {
            fprintf(stderr, "consumer: %s\n", ndc_strerror(r));
            return 1;
        }
        const float *x = a.data;                   /* read in place */
        if (a.seq != next || a.tag != next || x[0] != (float)next) {
            fprintf(stderr, "consumer: array %llu out of order\n", (unsigned long long)a.seq);
            return 1;
        }
        ndc_release(ch, &a);                       /* the slot goes back to the producer */
        struct ndc_stat st;
        if (ndc_stat(ch, &st) == 0 && st.ready > most_waiting)
            most_waiting = st.ready;
        if (++next % 25 == 0)
            usleep(20000);                         /* busy: the producer runs ahead */
    }
    printf("consumer: %llu arrays in order; up to %u waited in the channel while it was busy\n",
           (unsigned long long)next, most_waiting);
    fflush(stdout);                                /* the child leaves with _exit */
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100;
    struct ndc_chan_opts o = { .slots = 8, .slot_bytes = 256 * 320 * sizeof(float) };
    ndc_chan *ch;
    int r = ndc_create(&ch, NULL, &o);             /* anonymous: shared by fork() */
    if (r) {
        fprintf(stderr, "ndc_create: %s\n", ndc_strerror(r));
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0)
        _exit(consume(ch));                        /* the inherited handle is the child's own */
    int rc = produce(ch, n), status;
    waitpid(pid, &status, 0);
    ndc_free(ch);
    return rc || !WIFEXITED(status) || WEXITSTATUS(status) ? 1 : 0;
}
