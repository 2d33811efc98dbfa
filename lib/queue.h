/* The free stack and the ready ring: the two semaphores' contents. Every
 * call here runs under the queue lock. */
#ifndef NDC_QUEUE_H
#define NDC_QUEUE_H
#include <stdint.h>
#include "chan.h"

/* Pop a slot index from side's queue and mark the slot with new_word.
 * \return 0; -EAGAIN empty; -EBADMSG the queue was inconsistent with the
 * slot table (it has been rebuilt: the caller may retry). */
int ndc__queue_pop(ndc_chan *ch, int side, uint64_t new_word, uint32_t *slot);
/* Mark slot with new_word and push it on side's queue. For the ready side
 * the slot's seq is assigned here. \return 0; -EPIPE (ready side only: the
 * channel is closed, nothing changed); -EBADMSG (the queue was corrupt and
 * has been rebuilt). */
int ndc__queue_push(ndc_chan *ch, int side, uint32_t slot, uint64_t new_word);
/* Rebuild both queues and counts from the slot states: FREE slots onto the
 * free stack, READY ones into the ring in seq order; a slot whose state is
 * garbage, or RESERVED/LOANED by a peer that owner_alive says is gone,
 * becomes FREE. owner_alive is asked at most once per peer. */
void ndc__queue_rebuild(ndc_chan *ch, int (*owner_alive)(const ndc_chan *ch, uint32_t peer));
/* Return every slot held (RESERVED or LOANED) by peer `who` to the free
 * stack. \return how many. */
uint32_t ndc__queue_reclaim(ndc_chan *ch, uint32_t who);

#endif
