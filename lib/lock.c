/* The queue lock.
 *
 * The word is 0 when free, else 1 + the holder's peer entry index, with
 * NDC__LOCK_WAITERS set once someone sleeps on it. Critical sections are a
 * few dozen instructions with no call inside, so waiters spin briefly, then
 * sleep on the futex in 1 ms slices; between slices they ask whether the
 * holder still runs (its liveness lock, live.h). A holder that is gone, or
 * a word that names no entry (scribbled), is taken over, and the caller
 * repairs the state from the slot table (queue.c), which is the truth the
 * queues index. A live holder is waited for, however long: a process
 * stopped by SIGSTOP or a debugger inside the lock is not dead, and two
 * processes inside would corrupt the queues. Waiters with a timeout give up
 * at their deadline instead. */
#include <errno.h>

#include "lock.h"
#include "segment.h"

#define SPINS         200
#define SLICE_NS      1000000           /* 1 ms */
#define TRY_GRACE_NS  200000            /* timeout 0 still waits this long for a slow holder */

/* One compare-and-swap of the word from `expect` to `want`, counted in
 * `holding` while it may succeed (see lock.h). acquire: pairs with the
 * release exchange in ndc__unlock; release: a sibling thread whose acquire
 * load sees our word also sees our count (holder_alive in peer.c). */
static int take(_Atomic uint32_t *w, uint32_t expect, uint32_t want, _Atomic uint32_t *holding)
{
    atomic_fetch_add_explicit(holding, 1, memory_order_relaxed);
    if (atomic_compare_exchange_strong_explicit(w, &expect, want, memory_order_acq_rel,
                                                memory_order_relaxed))
        return 1;
    atomic_fetch_sub_explicit(holding, 1, memory_order_release);
    return 0;
}

int ndc__trylock(_Atomic uint32_t *w, uint32_t me, _Atomic uint32_t *holding)
{
    return take(w, 0, me + 1, holding) ? 0 : -EBUSY;
}

int ndc__lock(_Atomic uint32_t *w, uint32_t me, _Atomic uint32_t *holding, uint32_t npeers,
              struct ndc__deadline *dl, ndc__holder_alive_fn alive, void *ctx)
{
    for (int i = 0; i < SPINS; i++) {
        uint32_t v = atomic_load_explicit(w, memory_order_relaxed);
        if (v == 0 && take(w, 0, me + 1, holding))
            return 0;
        ndc__cpu_relax();
    }
    /* Once we have slept, we take the lock with the waiters bit set: we
     * cannot know whether others still sleep, so the unlock must wake. */
    uint32_t mine = (me + 1) | NDC__LOCK_WAITERS;
    int64_t grace_end = dl->timeout_ns == 0 ? ndc__now_ns() + TRY_GRACE_NS : 0;
    for (;;) {
        /* acquire: pairs with the release of take(), before the holder is judged */
        uint32_t v = atomic_load_explicit(w, memory_order_acquire);
        if (v == 0) {
            if (take(w, v, mine, holding))
                return 0;
            continue;
        }
        uint32_t holder = v & ~NDC__LOCK_WAITERS;
        if (holder == 0 || holder > npeers || !alive(ctx, holder - 1)) {
            if (take(w, v, mine, holding))
                return 1;
            continue;
        }
        int64_t left = dl->timeout_ns == 0 ? grace_end - ndc__now_ns() : ndc__deadline_left(dl);
        if (left <= 0)
            return -ETIMEDOUT;
        if (!(v & NDC__LOCK_WAITERS) &&
            !atomic_compare_exchange_strong_explicit(w, &v, v | NDC__LOCK_WAITERS,
                                                     memory_order_relaxed, memory_order_relaxed))
            continue;
        ndc__futex_wait(w, v | NDC__LOCK_WAITERS, left < SLICE_NS ? left : SLICE_NS);
    }
}

void ndc__unlock(_Atomic uint32_t *w)
{
    /* release: pairs with the acquire of the next holder's CAS */
    uint32_t v = atomic_exchange_explicit(w, 0, memory_order_release);
    if (v & NDC__LOCK_WAITERS)
        ndc__futex_wake(w, 1);
}
