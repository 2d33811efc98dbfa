/* The peer table: which processes are attached, what roles they have
 * played, whether they still run, and the sweep that returns what dead
 * ones held. */
#ifndef NDC_PEER_H
#define NDC_PEER_H
#include "chan.h"
#include "wait.h"

/* Enter the segment as a new peer (at attach, and in a forked child): take
 * an entry whose liveness byte nobody holds, retiring what a dead owner
 * left in it. \return 0, -EUSERS, or the lock's or liveness lock's errors. */
int ndc__peer_join(ndc_chan *ch, struct ndc__deadline *dl);
/* Leave: return held slots, free the entry. Never waits: if the lock is
 * busy, the entry is marked GONE and the next sweep by anyone finishes. */
void ndc__peer_leave(ndc_chan *ch);
/* Find peers that died (or left without finishing) and return their slots.
 * \return slots returned, or a lock error. */
int ndc__peer_sweep(ndc_chan *ch, struct ndc__deadline *dl);
/* Whether peer entry i's process still runs (its liveness byte is held;
 * this process counts as running). Reads no /proc. */
int ndc__peer_alive(const ndc_chan *ch, uint32_t i);
/* The repair lock, taken as this peer; a holder that died is taken over and
 * the ring repaired from the slot states. \return 0 or the lock's errors
 * (-EAGAIN for timeout 0). */
int ndc__peer_lock(ndc_chan *ch, struct ndc__deadline *dl);
void ndc__peer_unlock(ndc_chan *ch);
/* The one lock-and-repair helper: take the repair lock (which waits for a
 * repair under way, or finishes one whose repairer died), repair the ring
 * if `force` or if the gate was left closed, let go.
 * \return 0 or the lock's errors (-EAGAIN for timeout 0), -ETIMEDOUT. */
int ndc__peer_repair(ndc_chan *ch, struct ndc__deadline *dl, int force);
/* Publish a role (NDC__PEER_SENT / RECEIVED) of this process, once. */
void ndc__peer_role(ndc_chan *ch, uint32_t role);
/* Whether every peer that could feed a waiter on `side` is gone: some peer
 * with that role departed, and none with it is live (this process counts). */
int ndc__peer_other_side_gone(ndc_chan *ch, int side);
/* Whether spinning can pay for a waiter on `side`: some live peer that
 * posts to that side (or, before any has, any live peer) last ran on
 * another CPU. */
int ndc__peer_elsewhere(ndc_chan *ch, int side);
/* Live processes attached, this one included when it is. */
uint32_t ndc__peer_count_alive(const ndc_chan *ch, uint32_t *others);

#endif
