/* Waiting on many channels (ndc_wait_any) and pollable notification fds
 * (ndc_notify_fd): see notify.c. What the wait engine (engine.c) calls. */
#ifndef NDC_NOTIFY_H
#define NDC_NOTIFY_H
#include <limits.h>
#include <stdatomic.h>
#include "chan.h"

/* Readiness: ndc__would_take (engine.h). */
#include "engine.h"

/* How many sleepers a post on `side` wakes: one, or every one while a
 * wait-any or notify-fd waiter is among them (it would not take the slot,
 * so it must not be the only one woken). Read after the seq_cst load of
 * ctrl->sleepers[side] that found sleepers: a watcher counts itself in
 * watchers before sleepers. */
static inline int ndc__wake_n(const ndc_chan *ch, int side)
{
    return atomic_load_explicit(&ch->ctrl->watchers[side], memory_order_relaxed) ? INT32_MAX : 1;
}

/* ndc_free: close this handle's notify fds (before it leaves the peer table). */
void ndc__notify_free(ndc_chan *ch);
/* Retiring peer entry i (under the queue lock): what it counted in
 * ctrl->watchers goes, as its sleepers do. */
void ndc__watch_retire(ndc_chan *ch, uint32_t i);

/* For tests and the bench: force a mechanism. 0 = choose (the default). */
enum { NDC__NOTIFY_AUTO = 0, NDC__NOTIFY_URING, NDC__NOTIFY_THREAD };
extern int ndc__notify_force;
/* wait-any's sleep: 0 = choose; 1 = no io_uring (batches beyond 128 words
 * are scanned); 2 = no futex_waitv either (one word and a scan). */
extern int ndc__waitany_force;
/* The mechanism an existing notify fd uses (NDC__NOTIFY_*), or -EINVAL. */
int ndc__notify_mode(ndc_chan *ch, uint32_t what);

#endif
