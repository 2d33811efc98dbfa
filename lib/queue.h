/* The slots' hand-off without a lock: free slots are found by their state
 * word, committed ones are listed in a bounded ring (Vyukov's MPMC queue)
 * in commit order. Every call here tries once and never waits; waiting is
 * the engine's (engine.h). */
#ifndef NDC_QUEUE_H
#define NDC_QUEUE_H
#include <stdint.h>
#include "chan.h"
#include "wait.h"

/* Take a FREE slot for this process (state RESERVED).
 * \return 0 and *slot; -EAGAIN none is free; -EBADMSG none is free and
 * some slot's state word is garbage (it needs a repair to be found free). */
int ndc__queue_try_reserve(ndc_chan *ch, uint32_t *slot);
/* Give back a slot this process holds as `held` (RESERVED or LOANED):
 * FREE, and the FREE side's event word changes.
 * \return 0; -EINVAL it is not held so (a second release). */
int ndc__queue_free(ndc_chan *ch, uint32_t slot, uint64_t held);
/* List a RESERVED slot of this process, its header written, as the next
 * array. \return 0 (its seq is set); -EINVAL not reserved by this process;
 * -EPIPE the channel is closed (the slot stays RESERVED); -EAGAIN the ring
 * cell it needs is still being emptied by a receiver (try again);
 * -EBUSY a repair is under way (wait for it: ndc__queue_wait_repair). */
int ndc__queue_try_commit(ndc_chan *ch, uint32_t slot);
/* Take the oldest listed array for this process (state LOANED).
 * \return 0 and *slot; -EAGAIN nothing is listed yet; -EBUSY a repair is
 * under way; -EBADMSG the ring named a slot that is not READY: it must be
 * repaired (ndc__queue_repair) before anything else is taken. */
int ndc__queue_try_take(ndc_chan *ch, uint32_t *slot);
/* Whether positions past the head were claimed while the head's cell
 * reads as empty (waiting for its commit, or for its last receiver to let
 * go) and no peer is inside a step: once, a commit in flight; seen again
 * later, a cell that lost its array (a scribble), which holds the ring for
 * ever unless repaired. */
int ndc__queue_head_stuck(const ndc_chan *ch);
/* Whether the stream ended: closed, and every commit before the close taken. */
int ndc__queue_ended(const ndc_chan *ch);
/* Whether some array is listed / some slot is FREE (a guess for waiters). */
int ndc__queue_has_ready(const ndc_chan *ch);
int ndc__queue_has_free(const ndc_chan *ch);

/* Return every slot held (RESERVED, COMMITTING or LOANED) by peer `who`,
 * which is gone, to FREE. \return how many. */
uint32_t ndc__queue_reclaim(ndc_chan *ch, uint32_t who);

/* A step: what a peer does to the shared hand-off structures between
 * these two calls is repaired if it dies in between (queue.c, S1 and S2).
 * \return 0; -EBUSY a repair is under way (the step did not start). */
static inline int ndc__step_enter(ndc_chan *ch)
{
    _Atomic uint32_t *busy = &ch->peers[ch->me].busy;
    atomic_fetch_add_explicit(busy, 1, memory_order_seq_cst);                 /* (S1) */
    if (__builtin_expect(atomic_load_explicit(&ch->ctrl->gate, memory_order_seq_cst) == 0, 1))
        return 0;
    atomic_fetch_sub_explicit(busy, 1, memory_order_release);
    return -EBUSY;
}
static inline void ndc__step_leave(ndc_chan *ch)
{
    atomic_fetch_sub_explicit(&ch->peers[ch->me].busy, 1, memory_order_release);   /* (S2) */
}

/* Commits so far: the ring's tail without its end-of-stream mark (the next
 * array's seq). */
static inline uint64_t ndc__queue_commits(const ndc_chan *ch)
{
    return atomic_load_explicit(&ch->ctrl->tail, memory_order_acquire) & ~NDC__TAIL_CLOSED;
}
/* A slot came free: change the FREE side's event word (by 2: bit 0 is the
 * end-of-stream mark). seq_cst: with a sleeper's seq_cst increment of
 * sleepers[FREE] before its load of this word, either the engine's post
 * sees the sleeper or the sleeper sees this change (engine.c, post). */
static inline void ndc__queue_freed(ndc_chan *ch)
{
    atomic_fetch_add_explicit(&ch->ctrl->sem[NDC__SIDE_FREE].count, NDC__EVENT, memory_order_seq_cst);
}

/* Whether a peer's process still runs (the liveness lock). */
typedef int (*ndc__alive_fn)(const ndc_chan *ch, uint32_t peer);
/* Repair, with the repair lock held: close the gate to ring steps, wait
 * until no live peer is inside one, rebuild the ring from the slot states
 * (READY slots in seq order, renumbered without gaps; slots a dead peer
 * held back to FREE), open the gate. \return 0; -ETIMEDOUT the deadline
 * passed while a live peer stayed inside a step (stopped): nothing
 * changed. */
int ndc__queue_repair(ndc_chan *ch, struct ndc__deadline *dl, ndc__alive_fn alive);
/* Whether a peer died inside a ring step, so that a repair is due. */
int ndc__queue_died_in_step(const ndc_chan *ch, uint32_t peer);
/* Forget a retired peer's step count. */
void ndc__queue_forget(ndc_chan *ch, uint32_t peer);

#endif
