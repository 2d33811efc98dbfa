/* consumer: the other side of producer.c. It may start first: ndc_open_wait
 * waits for the channel to be created (here up to 30 s), and never sees it
 * half-made. It reads each frame in place, read-only, then releases it. */
#include <errno.h>
#include <stdio.h>

#include "ndchan.h"

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "frames";
    ndc_chan *ch;
    int r = ndc_open_wait(&ch, name, NDC_RDONLY, 30 * 1000000000ll);
    if (r) {
        fprintf(stderr, "consumer: %s: %s\n", name, ndc_strerror(r));
        return 1;
    }
    unsigned long n = 0;
    for (;;) {
        struct ndc_array a;
        r = ndc_acquire(ch, &a, 5 * 1000000000ll);   /* 5 s */
        if (r == -EPIPE)
            break;                                   /* closed and drained */
        if (r) {
            fprintf(stderr, "consumer: %s\n", ndc_strerror(r));
            break;
        }
        const float *px = a.data;                    /* mapped read-only */
        if (a.seq % 20 == 0)
            printf("frame %llu: tag %llu, %lld x %lld %s, first %g\n",
                   (unsigned long long)a.seq, (unsigned long long)a.tag, (long long)a.shape[0],
                   (long long)a.shape[1], ndc_dtype_name(a.dtype), px[0]);
        ndc_release(ch, &a);                         /* the slot goes back to the producer */
        n++;
    }
    printf("consumer: %lu frames, end of stream\n", n);
    ndc_free(ch);
    return r == -EPIPE ? 0 : 1;
}
