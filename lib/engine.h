/* The wait engine: the two semaphores' P and V over the lock-free queue
 * (queue.h), with spinning, sleeping, and the sweeps that find dead peers
 * while a caller waits. */
#ifndef NDC_ENGINE_H
#define NDC_ENGINE_H
#include <stdint.h>
#include "chan.h"
#include "wait.h"

/* The handle's waiting policy from the channel's spin_ns (0: the default,
 * < 0: never spin). */
void ndc__engine_init(ndc_chan *ch, int64_t spin_ns);
void ndc__engine_set_spin(ndc_chan *ch, int64_t spin_ns);

/* P: a free slot for a sender (side NDC__SIDE_FREE, state RESERVED) or the
 * oldest committed array for a receiver (NDC__SIDE_READY, state LOANED).
 * \return 0 and *slot; -EAGAIN (timeout 0) / -ETIMEDOUT; -EPIPE the stream
 * ended; -EOWNERDEAD every peer of the other side is gone; -EINTR; the
 * repair lock's errors; -EBADMSG the ring stayed corrupt after a repair. */
int ndc__take(ndc_chan *ch, int side, struct ndc__deadline *dl, uint32_t *slot);
/* V on the ready side: list a slot this process reserved (header written)
 * and wake a receiver. Waits only for a repair under way, or while a
 * receiver is inside its step on the ring cell needed (as long as that one
 * lives), and no longer than dl (ndc_commit's is NDC_FOREVER). \return 0;
 * -EINVAL not reserved by this process; -EPIPE closed, -EAGAIN (timeout 0)
 * / -ETIMEDOUT: the slot is freed, the array dropped. */
int ndc__give_ready(ndc_chan *ch, uint32_t slot, struct ndc__deadline *dl);
/* V on the free side: free a slot this process holds in state `held`
 * (RESERVED or LOANED) and wake a sender. \return 0; -EINVAL not held so. */
int ndc__give_free(ndc_chan *ch, uint32_t slot, uint32_t held);
/* End of stream: mark both sides and wake every waiter. */
void ndc__engine_close(ndc_chan *ch);
/* Whether a take on `side` (NDC__SIDE_FREE: ndc_reserve, NDC__SIDE_READY:
 * ndc_acquire) would return without waiting, and why. Nonzero means it
 * would not wait: NDC__TAKE_YES there is something to take, NDC__TAKE_END
 * the stream ended (the call gives -EPIPE), NDC__TAKE_GONE every peer of
 * the other side is gone (-EOWNERDEAD). Every readiness decision of
 * wait-any and the notify fds (notify.c) goes through here. Never waits
 * (it may sweep, with timeout 0). */
enum { NDC__TAKE_NO = 0, NDC__TAKE_YES, NDC__TAKE_END, NDC__TAKE_GONE };
int ndc__would_take(ndc_chan *ch, int side);

#endif
