/* The peer table: which processes are attached, what roles they have
 * played, and the sweep that returns what dead ones held. */
#ifndef NDC_PEER_H
#define NDC_PEER_H
#include "chan.h"
#include "wait.h"

/* Enter the segment as a new peer (at attach, and in a forked child).
 * Sweeps dead entries when the table is full. \return 0, -EUSERS, or the
 * lock's errors. */
int ndc__peer_join(ndc_chan *ch, struct ndc__deadline *dl);
/* Leave: return held slots, free the entry. Never waits: if the lock is
 * busy, the entry is marked GONE and the next sweep by anyone finishes. */
void ndc__peer_leave(ndc_chan *ch);
/* Find peers that died (or left without finishing) and return their slots.
 * \return slots returned, or a lock error. */
int ndc__peer_sweep(ndc_chan *ch, struct ndc__deadline *dl);
/* Publish a role (NDC__PEER_SENT / RECEIVED) of this process, once. */
void ndc__peer_role(ndc_chan *ch, uint32_t role);
/* Whether every peer that could feed a waiter on `side` is gone: some peer
 * with that role departed, and none with it is live (this process counts). */
int ndc__peer_other_side_gone(ndc_chan *ch, int side);
/* Whether spinning can pay: some other live peer last ran on another CPU. */
int ndc__peer_elsewhere(ndc_chan *ch);

#endif
