/* The peer table.
 *
 * Each attached process owns one entry (one cache line) with its pid and
 * start time; slots it reserves or borrows carry its entry index. There is
 * no daemon: whichever process waits long enough to wonder (a semaphore
 * sleep slice, a full table at join) checks the others, marks the dead
 * LIVE -> GONE, and under the queue lock returns their slots and clears the
 * entry. A process that left by ndc_free is GONE too, so the two paths are
 * one. Counters of departed senders and receivers let a waiter tell "the
 * other side has not come yet" (wait) from "it came and went" (-EOWNERDEAD).
 */
#include <errno.h>
#include <unistd.h>

#include "error.h"
#include "lock.h"
#include "peer.h"
#include "queue.h"

static int lock_ctrl(ndc_chan *ch, struct ndc__deadline *dl)
{
    int r = ndc__lock(&ch->ctrl->lock, ch->pid, dl);
    if (r == 1) {
        ndc__queue_rebuild(ch);
        r = 0;
    }
    return r;
}

/* Under the lock: return an entry's slots, count its departure, clear it. */
static void retire(ndc_chan *ch, uint32_t i)
{
    struct ndc__ctrl *c = ch->ctrl;
    struct ndc__peer *p = &ch->peers[i];
    ndc__queue_reclaim(ch, i);
    uint32_t flags = atomic_load_explicit(&p->flags, memory_order_relaxed);
    if (flags & NDC__PEER_SENT)
        atomic_fetch_add_explicit(&c->gone_senders, 1, memory_order_relaxed);
    if (flags & NDC__PEER_RECEIVED)
        atomic_fetch_add_explicit(&c->gone_receivers, 1, memory_order_relaxed);
    /* a dead sleeper no longer needs waking */
    for (int side = 0; side < 2; side++) {
        uint32_t s = atomic_exchange_explicit(&p->sleeping[side], 0, memory_order_relaxed);
        uint32_t all = atomic_load_explicit(&c->sleepers[side], memory_order_relaxed);
        while (s && !atomic_compare_exchange_weak_explicit(&c->sleepers[side], &all,
                                                           all > s ? all - s : 0,
                                                           memory_order_relaxed, memory_order_relaxed))
            ;   /* clamped: a scribbled count must not wrap the total */
    }
    atomic_store_explicit(&p->flags, 0, memory_order_relaxed);
    atomic_store_explicit(&p->state, NDC__PEER_UNUSED, memory_order_release);
}

/* After retiring peers under the lock: let go of it, wake one sender per
 * slot that came back, and every receiver (each must re-check whether its
 * senders are gone). \return the slots that came back. */
static uint32_t unlock_and_wake(ndc_chan *ch, uint32_t free_before)
{
    uint32_t after = NDC__COUNT(atomic_load(&ch->ctrl->sem[NDC__SIDE_FREE].count));
    ndc__unlock(&ch->ctrl->lock);
    uint32_t back = after > free_before ? after - free_before : 0;
    if (back)
        ndc__futex_wake(&ch->ctrl->sem[NDC__SIDE_FREE].count, (int)back);
    ndc__futex_wake(&ch->ctrl->sem[NDC__SIDE_READY].count, INT32_MAX);
    return back;
}

static uint32_t peers_hw(ndc_chan *ch)
{
    uint32_t hw = atomic_load_explicit(&ch->ctrl->peers_hw, memory_order_acquire);
    return hw < ch->seg.g.max_peers ? hw : ch->seg.g.max_peers;
}

int ndc__peer_sweep(ndc_chan *ch, struct ndc__deadline *dl)
{
    /* Judge liveness without the lock (it reads /proc), but change an entry
     * only under it, and only if it is still the very entry judged: in
     * between, another sweeper may have retired it and a new process
     * claimed it (claims and retirements both run under the lock). */
    struct judged { uint32_t i, state; int32_t pid; uint64_t start; } dead[NDC_MAX_PEERS];
    uint32_t hw = peers_hw(ch), ndead = 0, gone = 0;
    for (uint32_t i = 0; i < hw; i++) {
        struct ndc__peer *p = &ch->peers[i];
        uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
        if (i == ch->me || st == NDC__PEER_UNUSED)
            continue;
        if (st == NDC__PEER_GONE) {
            gone++;
            continue;
        }
        /* a state that is none of ours is a scribbled entry: retire it too,
         * or it would hold its place (and any slots naming it) forever */
        int32_t pid = p->pid;
        uint64_t start = p->start_time;
        if (st != NDC__PEER_LIVE || !ndc__pid_alive(pid, start))
            dead[ndead++] = (struct judged){i, st, pid, start};
    }
    if (!ndead && !gone)
        return 0;
    int r = lock_ctrl(ch, dl);
    if (r)
        return r;
    for (uint32_t k = 0; k < ndead; k++) {
        struct ndc__peer *p = &ch->peers[dead[k].i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) == dead[k].state &&
            p->pid == dead[k].pid && p->start_time == dead[k].start)
            atomic_store_explicit(&p->state, NDC__PEER_GONE, memory_order_relaxed);
    }
    uint32_t before = NDC__COUNT(atomic_load(&ch->ctrl->sem[NDC__SIDE_FREE].count));
    for (uint32_t i = 0; i < hw; i++)
        if (i != ch->me && atomic_load_explicit(&ch->peers[i].state, memory_order_relaxed) == NDC__PEER_GONE)
            retire(ch, i);
    return (int)unlock_and_wake(ch, before);
}

static int claim_entry(ndc_chan *ch)
{
    struct ndc__ctrl *c = ch->ctrl;
    for (uint32_t i = 0; i < ch->seg.g.max_peers; i++) {
        struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_UNUSED)
            continue;
        uint64_t start = 0;
        char state;
        ndc__proc_stat(ch->pid, &start, &state);
        p->pid = ch->pid;
        p->start_time = start;
        atomic_store_explicit(&p->flags, (ch->open_flags & NDC_RDONLY) ? NDC__PEER_RDONLY : 0,
                              memory_order_relaxed);
        atomic_store_explicit(&p->cpu, ndc__current_cpu(), memory_order_relaxed);
        atomic_store_explicit(&p->sleeping[0], 0, memory_order_relaxed);
        atomic_store_explicit(&p->sleeping[1], 0, memory_order_relaxed);
        atomic_store_explicit(&p->state, NDC__PEER_LIVE, memory_order_release);
        if (atomic_load_explicit(&c->peers_hw, memory_order_relaxed) < i + 1)
            atomic_store_explicit(&c->peers_hw, i + 1, memory_order_release);
        ch->me = i;
        return 0;
    }
    return -EUSERS;
}

int ndc__peer_join(ndc_chan *ch, struct ndc__deadline *dl)
{
    ch->pid = (int32_t)getpid();
    atomic_store_explicit(&ch->roles, 0, memory_order_relaxed);
    ch->me = UINT32_MAX;   /* not a peer until claimed: sweeps skip nobody */
    for (int attempt = 0; attempt < 2; attempt++) {
        int r = lock_ctrl(ch, dl);
        if (r)
            return ndc__fail(r, "joining the channel: its lock is held by a live process that does not let go");
        r = claim_entry(ch);
        ndc__unlock(&ch->ctrl->lock);
        if (r == 0)
            return 0;
        ndc__peer_sweep(ch, dl);   /* full: make room from the dead, once */
    }
    return ndc__fail(-EUSERS, "%u processes already attached", ch->seg.g.max_peers);
}

void ndc__peer_leave(ndc_chan *ch)
{
    if (ch->me >= ch->seg.g.max_peers)
        return;
    struct ndc__peer *p = &ch->peers[ch->me];
    if (p->pid != ch->pid)
        return;   /* the entry is not ours any more (swept as dead) */
    uint32_t live = NDC__PEER_LIVE;
    if (!atomic_compare_exchange_strong(&p->state, &live, NDC__PEER_GONE))
        return;
    if (ndc__trylock(&ch->ctrl->lock, ch->pid) != 0)
        return;   /* someone else's sweep will finish it */
    uint32_t before = NDC__COUNT(atomic_load(&ch->ctrl->sem[NDC__SIDE_FREE].count));
    retire(ch, ch->me);
    /* While the lock is ours anyway, retire the dead too: otherwise what
     * they held comes back only when some survivor next has to wait. */
    uint32_t hw = peers_hw(ch);
    for (uint32_t i = 0; i < hw; i++) {
        struct ndc__peer *q = &ch->peers[i];
        uint32_t st = atomic_load_explicit(&q->state, memory_order_acquire);
        if (st == NDC__PEER_GONE ||
            (st == NDC__PEER_LIVE && !ndc__pid_alive(q->pid, q->start_time)))
            retire(ch, i);
    }
    unlock_and_wake(ch, before);
}

void ndc__peer_role(ndc_chan *ch, uint32_t role)
{
    if (atomic_load_explicit(&ch->roles, memory_order_relaxed) & role)
        return;
    /* the shared entry first: another thread that sees the handle's bit
     * skips this, and must not run ahead of what other processes can see */
    atomic_fetch_or_explicit(&ch->peers[ch->me].flags, role, memory_order_release);
    atomic_fetch_or_explicit(&ch->roles, role, memory_order_release);
}

int ndc__peer_other_side_gone(ndc_chan *ch, int side)
{
    /* receivers wait for senders, senders for receivers */
    uint32_t role = side == NDC__SIDE_READY ? NDC__PEER_SENT : NDC__PEER_RECEIVED;
    uint32_t gone = atomic_load_explicit(side == NDC__SIDE_READY ? &ch->ctrl->gone_senders
                                                                 : &ch->ctrl->gone_receivers,
                                         memory_order_relaxed);
    if (gone == 0)
        return 0;
    uint32_t hw = peers_hw(ch);
    for (uint32_t i = 0; i < hw; i++) {
        struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) == NDC__PEER_LIVE &&
            (atomic_load_explicit(&p->flags, memory_order_relaxed) & role))
            return 0;
    }
    return 1;
}

int ndc__peer_elsewhere(ndc_chan *ch)
{
    int cpu = ndc__current_cpu();
    atomic_store_explicit(&ch->peers[ch->me].cpu, cpu, memory_order_relaxed);
    uint32_t hw = peers_hw(ch), others = 0;
    for (uint32_t i = 0; i < hw; i++) {
        if (i == ch->me)
            continue;
        struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_LIVE)
            continue;
        others++;
        if (atomic_load_explicit(&p->cpu, memory_order_relaxed) != cpu)
            return 1;
    }
    /* alone: only this process's other threads can post; they may run elsewhere */
    return others == 0 && ndc__can_run_elsewhere();
}
