/* producer: one side of a named channel; consumer.c is the other. Start them
 * from two shells, in either order:
 *
 *   ./consumer frames        # waits for the channel to appear
 *   ./producer frames        # creates it, sends 100 frames, ends the stream
 *
 * The producer writes each 480 x 640 float32 frame in place. It removes the
 * name when it is done: processes still attached keep working, and the next
 * run can create the channel again. */
#include <stdio.h>

#include "ndchan.h"

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "frames";
    int64_t shape[2] = { 480, 640 };
    struct ndc_chan_opts o = { .slots = 8, .slot_bytes = 480 * 640 * sizeof(float) };
    ndc_chan *ch;
    int r = ndc_create(&ch, name, &o);             /* /dev/shm/<name>, mode 0600 */
    if (r) {
        /* -EEXIST: a channel of that name is left over; `ndchan-stat --gc` removes stale ones */
        fprintf(stderr, "producer: %s: %s\n", name, ndc_strerror(r));
        return 1;
    }
    for (int i = 0; i < 100 && r == 0; i++) {
        struct ndc_array a;
        ndc_array_init(&a, NDC_F32, 2, shape, NULL);
        a.tag = (uint64_t)i;
        if ((r = ndc_reserve(ch, &a, NDC_FOREVER)))  /* waits for a free slot */
            break;
        float *px = a.data;                        /* the slot itself */
        for (int k = 0; k < 480 * 640; k++)
            px[k] = (float)i + (float)k * 1e-6f;
        r = ndc_commit(ch, &a);                    /* visible to receivers now */
    }
    if (r)
        fprintf(stderr, "producer: %s\n", ndc_strerror(r));
    ndc_close(ch);        /* end of stream: receivers drain, then get -EPIPE */
    ndc_free(ch);
    ndc_unlink(name);
    return r ? 1 : 0;
}
