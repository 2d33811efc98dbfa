/* The queue lock: a futex lock whose word names the holder's pid, so a
 * waiter can tell a holder that died (and repair what it left) from one
 * that is merely slow. */
#ifndef NDC_LOCK_H
#define NDC_LOCK_H
#include <stdatomic.h>
#include <stdint.h>
#include "wait.h"

/* \return 0 locked; 1 locked, but taken over from a holder that died or a
 * corrupt word: the caller must rebuild what the lock protects;
 * -ETIMEDOUT (the deadline passed, or timeout 0 and a holder that would not
 * let go within a grace period); -EINTR never (signals are left to the
 * semaphore waits, which are the long ones). */
int ndc__lock(_Atomic uint32_t *w, int32_t pid, struct ndc__deadline *dl);
/* One attempt, no waiting: 0 locked, -EBUSY. */
int ndc__trylock(_Atomic uint32_t *w, int32_t pid);
void ndc__unlock(_Atomic uint32_t *w);

/* Whether the process (pid, start_time) still runs; start_time 0 skips the
 * reuse check. A zombie counts as dead: it holds nothing any more. */
int ndc__pid_alive(int32_t pid, uint64_t start_time);
/* /proc/<pid>/stat's start time (clock ticks since boot) and state letter. */
int ndc__proc_stat(int32_t pid, uint64_t *start_time, char *state);

#endif
