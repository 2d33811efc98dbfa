/* Broadcast channels: every subscriber gets every array, all reading the
 * same slot. Like queue.h, every call tries once and never waits. */
#ifndef NDC_BCAST_H
#define NDC_BCAST_H
#include <stdint.h>
#include "chan.h"
#include "queue.h"

/* A cell naming no slot: a position whose publisher died before it listed
 * its array (a repair fills it so subscribers can pass it). */
#define NDC__HOLE 0xffffffffu

/* Subscribe this handle: it gets every array committed from now on, after
 * the last `history` ones. Idempotent. */
void ndc__bcast_subscribe(ndc_chan *ch);
/* A slot for the publisher: a FREE one, else a READY one no subscriber
 * needs any more (all past it and none reading it, outside the history),
 * else under the latest policy the oldest one nobody is reading.
 * \return 0 and *slot; -EAGAIN none. */
int ndc__bcast_try_reserve(ndc_chan *ch, uint32_t *slot);
/* Whether a reserve would find a slot to reuse now (a look, no change). */
int ndc__bcast_can_reserve(const ndc_chan *ch);
/* The subscriber's next array (latest policy: its newest unseen one),
 * pinned: its readers count is raised and the loan recorded.
 * \return 0 and *slot; -EAGAIN nothing new; -EBUSY a repair is under way;
 * -ENOBUFS the handle holds NDC_MAX_SUB_LOANS loans already;
 * -EBADMSG a corrupt cell (passed over). */
int ndc__bcast_try_take(ndc_chan *ch, uint32_t *slot);
/* Give a loan back. \return 0; -EINVAL not a loan of this handle; -EBUSY
 * a repair is under way. */
int ndc__bcast_release(ndc_chan *ch, uint32_t slot);
/* Whether this handle holds slot as a loan. */
int ndc__bcast_holds(const ndc_chan *ch, uint32_t slot);
/* Whether the subscriber has something to take (or to skip). */
int ndc__bcast_has_ready(const ndc_chan *ch);
/* Closed, and the subscriber has had every commit before the close. */
int ndc__bcast_ended(const ndc_chan *ch);
/* A departed subscriber's loans and place no longer count. */
void ndc__bcast_retire(ndc_chan *ch, uint32_t peer);
/* The repair's broadcast part (gate closed, no live step under way):
 * readers counted again from the live subscribers' loans, slots a dead
 * publisher held freed, positions a dead publisher claimed filled. */
void ndc__bcast_rebuild(ndc_chan *ch, ndc__alive_fn alive);
/* Whether every live subscriber has had and released every array before
 * seq `upto`. */
int ndc__bcast_drained(const ndc_chan *ch, uint64_t upto);
/* The READY state word of a broadcast slot committed at seq. */
#define NDC__SEQBITS(seq) (((uint64_t)(seq) & 0xffffffull) << 40)

#endif
