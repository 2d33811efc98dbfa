/* The queue lock: a futex lock whose word names the holder's peer entry,
 * so a waiter can tell a holder that died (and repair what it left) from
 * one that is merely slow, stopped or descheduled. */
#ifndef NDC_LOCK_H
#define NDC_LOCK_H
#include <stdatomic.h>
#include <stdint.h>
#include "wait.h"

/* Whether the holder named by a lock word (its peer index) still runs. */
typedef int (*ndc__holder_alive_fn)(void *ctx, uint32_t holder);

/* Take the lock as peer `me`. `holding` counts this process's threads that
 * hold the lock or are in the middle of a compare-and-swap to take it
 * (never those that merely wait): it is raised just before each attempt,
 * lowered when one fails, and by the caller after ndc__unlock. A waiter
 * that finds the word naming its own process while the count is 0 knows
 * the word is forged.
 * \return 0 locked; 1 locked, but taken over from a holder that died (or a
 * word naming nobody): the caller must rebuild what the lock protects;
 * -ETIMEDOUT the deadline passed (timeout 0: after a short grace period)
 * while a live holder kept it. A live holder is never robbed, however long
 * it holds: time cannot tell a slow holder from a dead one. */
int ndc__lock(_Atomic uint32_t *w, uint32_t me, _Atomic uint32_t *holding, uint32_t npeers,
              struct ndc__deadline *dl, ndc__holder_alive_fn alive, void *ctx);
/* One attempt, no waiting: 0 locked, -EBUSY. */
int ndc__trylock(_Atomic uint32_t *w, uint32_t me, _Atomic uint32_t *holding);
void ndc__unlock(_Atomic uint32_t *w);

#endif
