/* The peer table.
 *
 * Each attached process owns one entry (one cache line), and holds the
 * entry's liveness byte (live.h) for as long as it is attached: the kernel
 * vouches for it, whatever pid namespace it runs in. Slots it reserves or
 * borrows carry its entry index, and so does the queue lock while it holds
 * it.
 *
 * Claiming: a joiner locks the byte of an entry first. Getting it proves no
 * live process owns the entry. An UNUSED entry is then taken with a CAS
 * (it holds nothing); one left LIVE or GONE by a process that died or
 * detached is retired under the queue lock first (its slots back to the
 * pool, its departure counted). So an entry is LIVE only while its byte is
 * held, except in the moment after its owner died: LIVE with a free byte
 * means dead, and that state only changes by a retirement.
 *
 * There is no daemon: whichever process waits long enough to wonder (a
 * semaphore sleep slice, a poller once a slice, ndc_free) sweeps: it finds
 * entries whose byte is free, and under the queue lock checks again and
 * retires them. Counters of departed senders and receivers let a waiter
 * tell "the other side has not come yet" (wait) from "it came and went"
 * (-EOWNERDEAD). The pid in an entry is for people; nothing decides by it.
 */
#include <errno.h>
#include <unistd.h>

#include "error.h"
#include "lock.h"
#include "bcast.h"
#include "notify.h"   /* ndc__watch_retire, ndc__wake_n */
#include "peer.h"
#include "queue.h"

/* Whether entry i is this process's. ch->me is only once the process has
 * joined here: in a fork child that has not used the handle yet, it is
 * the parent's. */
static int is_me(const ndc_chan *ch, uint32_t i)
{
    return i == ch->me && ch->fork_gen == atomic_load_explicit(&ndc__fork_gen, memory_order_relaxed);
}

int ndc__peer_alive(const ndc_chan *ch, uint32_t i)
{
    return is_me(ch, i) || ndc__live_held(&ch->live, ch->seg.fd, i);
}

/* A lock word naming this process is true only while one of its threads
 * holds the lock (or is taking it): else the word was forged (scribbled,
 * or left by a process killed inside the lock whose entry we then took),
 * and waiting for ourselves would hang.
 * Threads that merely wait are not counted (lock.h), so two of them do
 * not mistake each other for the holder. */
static int holder_alive(void *ctx, uint32_t holder)
{
    ndc_chan *ch = ctx;
    if (holder == ch->me)
        return atomic_load_explicit(&ch->in_lock, memory_order_relaxed) > 0;   /* ordered by the word's acquire load */
    return ndc__peer_alive(ch, holder);
}

static int lock_as(ndc_chan *ch, uint32_t id, struct ndc__deadline *dl)
{
    int r = ndc__lock(&ch->ctrl->lock, id, &ch->in_lock, ch->seg.g.max_peers, dl, holder_alive, ch);
    if (r == 1) {
        /* The last holder died inside: it was joining, sweeping or
         * repairing, and may have left the gate closed on a half-built
         * ring. Repair again (a live peer stopped inside a step makes this
         * wait, as long as the deadline allows). */
        ndc__queue_repair(ch, dl, ndc__peer_alive);
        r = 0;
    }
    return r == -ETIMEDOUT && dl->timeout_ns == 0 ? -EAGAIN : r;
}

int ndc__peer_lock(ndc_chan *ch, struct ndc__deadline *dl)
{
    return lock_as(ch, ch->me, dl);
}

void ndc__peer_unlock(ndc_chan *ch)
{
    ndc__unlock(&ch->ctrl->lock);
    atomic_fetch_sub_explicit(&ch->in_lock, 1, memory_order_release);
}

int ndc__peer_repair(ndc_chan *ch, struct ndc__deadline *dl, int force)
{
    /* The repairer holds the lock while the gate is closed: taking the
     * lock waits for it (or takes over from a dead one, which repairs). A
     * gate still closed once we hold the lock was left by nobody: it is
     * stale or scribbled, and a repair opens it. */
    int r = ndc__peer_lock(ch, dl);
    if (r)
        return r;
    if (force || atomic_load_explicit(&ch->ctrl->gate, memory_order_acquire))
        r = ndc__queue_repair(ch, dl, ndc__peer_alive);
    ndc__peer_unlock(ch);
    return r == -ETIMEDOUT && dl->timeout_ns == 0 ? -EAGAIN : r;
}

/* Under the lock: return an entry's slots, count its departure, clear it.
 * `keep`: leave its state as it is rather than UNUSED, for the entry whose
 * index the lock word names (our own in ndc_free, the one a joiner claims):
 * killed before the unlock, we would leave a word naming an UNUSED entry,
 * which the next joiner takes without the lock; the word would then name a
 * live process that does not hold it, and everyone would wait for it. Not
 * UNUSED, the entry is taken only through a claim under the lock, which
 * takes the dead holder's word over. A second retirement of it (a sweep)
 * finds nothing to give back or count. */
static uint32_t retire(ndc_chan *ch, uint32_t i, int keep)
{
    struct ndc__ctrl *c = ch->ctrl;
    struct ndc__peer *p = &ch->peers[i];
    uint32_t back = ndc__queue_reclaim(ch, i);
    if (ch->bcast)
        ndc__bcast_retire(ch, i);
    ndc__queue_forget(ch, i);
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
    ndc__watch_retire(ch, i);   /* notify.c: its wait-any/notify-fd waiters, likewise */
    atomic_store_explicit(&p->flags, 0, memory_order_relaxed);
    /* release: a joiner's CAS from UNUSED sees the entry cleared */
    if (!keep)
        atomic_store_explicit(&p->state, NDC__PEER_UNUSED, memory_order_release);
    return back;
}

/* After retiring peers under the lock: let go of it, wake one sender per
 * slot that came back, and every receiver (each must re-check whether its
 * senders are gone: their event word changes for them). \return back. */
static uint32_t unlock_and_wake(ndc_chan *ch, uint32_t back)
{
    struct ndc__ctrl *c = ch->ctrl;
    ndc__peer_unlock(ch);
    if (back)
        ndc__futex_wake(&c->sem[NDC__SIDE_FREE].count,   /* all, while notify.c's watch */
                        ndc__wake_n(ch, NDC__SIDE_FREE) == 1 ? (int)back : INT32_MAX);
    atomic_fetch_add_explicit(&c->sem[NDC__SIDE_READY].count, NDC__EVENT, memory_order_release);
    ndc__futex_wake(&c->sem[NDC__SIDE_READY].count, INT32_MAX);
    return back;
}


/* Whether entry i holds something a sweep must give back: it was left by
 * ndc_free (GONE), its process died (LIVE, byte free), or it is garbage. */
static int departed(const ndc_chan *ch, uint32_t i)
{
    uint32_t st = atomic_load_explicit(&ch->peers[i].state, memory_order_acquire);
    if (i == ch->me || st == NDC__PEER_UNUSED)
        return 0;
    return st != NDC__PEER_LIVE || !ndc__peer_alive(ch, i);
}

int ndc__peer_sweep(ndc_chan *ch, struct ndc__deadline *dl)
{
    /* Judged without the lock (a syscall per peer), acted on only after
     * judging again under it: claims of dead entries and retirements both
     * run under the lock, and a joiner holds the byte before it claims. */
    uint32_t hw = ndc__peers_hw(ch), found = 0;
    for (uint32_t i = 0; i < hw && !found; i++)
        found = departed(ch, i);
    if (!found)
        return 0;
    int r = ndc__peer_lock(ch, dl);
    if (r)
        return r;
    /* One that died inside a ring step left it half done: repair first
     * (it frees what the dead held, and lists what they committed). */
    int repaired = 0;
    for (uint32_t i = 0; i < hw && !repaired; i++)
        if (departed(ch, i) && ndc__queue_died_in_step(ch, i))
            repaired = ndc__queue_repair(ch, dl, ndc__peer_alive) == 0 ? 1 : -1;
    /* (a repair that timed out leaves those for the next sweep) */
    uint32_t back = 0;
    for (uint32_t i = 0; i < hw; i++)
        if (departed(ch, i) && (repaired > 0 || !ndc__queue_died_in_step(ch, i)))
            back += retire(ch, i, 0);
    return (int)unlock_and_wake(ch, back);
}

/* Entry i, whose byte we hold, becomes ours. */
static int claim(ndc_chan *ch, uint32_t i, struct ndc__deadline *dl)
{
    struct ndc__ctrl *c = ch->ctrl;
    struct ndc__peer *p = &ch->peers[i];
    uint32_t unused = NDC__PEER_UNUSED;
    /* Nothing is written before the entry is known to be ours and empty: a
     * dead owner's roles decide what its retirement counts. Retirement
     * cleared the flags (acquire: pairs with its release of UNUSED). */
    int quick = atomic_compare_exchange_strong_explicit(&p->state, &unused, NDC__PEER_LIVE,
                                                        memory_order_acquire, memory_order_relaxed);
    uint32_t back = 0;
    if (!quick) {
        /* left by a process that is gone: give back what it held first */
        int r = lock_as(ch, i, dl);
        if (r)
            return r;
        if (ndc__queue_died_in_step(ch, i) && (r = ndc__queue_repair(ch, dl, ndc__peer_alive))) {
            ndc__peer_unlock(ch);
            return r;
        }
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_UNUSED)
            back = retire(ch, i, 1);   /* LIVE (ours) below, never UNUSED under our word */
    }
    p->pid = ch->pid;
    atomic_store_explicit(&p->flags, (ch->open_flags & NDC_RDONLY) ? NDC__PEER_RDONLY : 0,
                          memory_order_relaxed);
    atomic_store_explicit(&p->cpu, ndc__current_cpu(), memory_order_relaxed);
    if (!quick) {
        atomic_store_explicit(&p->state, NDC__PEER_LIVE, memory_order_release);
        unlock_and_wake(ch, back);
    }
    uint32_t hw = atomic_load_explicit(&c->peers_hw, memory_order_relaxed);
    while (hw < i + 1 && !atomic_compare_exchange_weak_explicit(&c->peers_hw, &hw, i + 1,
                                                                memory_order_release, memory_order_relaxed))
        ;
    ch->me = i;
    return 0;
}

int ndc__peer_join(ndc_chan *ch, struct ndc__deadline *dl)
{
    ch->pid = (int32_t)getpid();
    atomic_store_explicit(&ch->roles, 0, memory_order_relaxed);
    ch->me = UINT32_MAX;   /* not a peer until claimed */
    /* Unused entries first (no lock needed), then any: those left by the
     * dead, and one a sweep cleared to UNUSED after the first pass looked
     * (skipped by both passes, it would make a free entry -EUSERS). */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < ch->seg.g.max_peers; i++) {
            uint32_t st = atomic_load_explicit(&ch->peers[i].state, memory_order_relaxed);
            if (pass == 0 && st != NDC__PEER_UNUSED)
                continue;
            int r = ndc__live_hold(&ch->live, i);
            if (r == -EAGAIN)
                continue;   /* a live process has it */
            if (r == 0 && (r = claim(ch, i, dl)) == 0)
                return 0;
            if (r == -ETIMEDOUT || r == -EAGAIN)
                return ndc__fail(r, "joining the channel: its lock is held by a live process "
                                 "that does not let go");
            return r;   /* the liveness lock's own detail stands */
        }
    }
    return ndc__fail(-EUSERS, "%u processes already attached", ch->seg.g.max_peers);
}

void ndc__peer_leave(ndc_chan *ch)
{
    if (ch->me >= ch->seg.g.max_peers)
        return;
    struct ndc__peer *p = &ch->peers[ch->me];
    uint32_t live = NDC__PEER_LIVE;
    if (!atomic_compare_exchange_strong_explicit(&p->state, &live, NDC__PEER_GONE, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return;   /* not ours any more (a scribbled entry, retired) */
    if (ndc__trylock(&ch->ctrl->lock, ch->me, &ch->in_lock) != 0)
        return;   /* someone else's sweep will finish it */
    uint32_t back = retire(ch, ch->me, 1);   /* stays GONE: the next sweep or claim clears it */
    /* While the lock is ours anyway, retire the dead too: otherwise what
     * they held comes back only when some survivor next has to wait. One
     * that died inside a ring step needs a repair, which may wait: that is
     * left to the next sweep. */
    uint32_t hw = ndc__peers_hw(ch);
    for (uint32_t i = 0; i < hw; i++)
        if (departed(ch, i) && !ndc__queue_died_in_step(ch, i))
            back += retire(ch, i, 0);
    unlock_and_wake(ch, back);
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
    uint32_t hw = ndc__peers_hw(ch);
    for (uint32_t i = 0; i < hw; i++) {
        struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) == NDC__PEER_LIVE &&
            (atomic_load_explicit(&p->flags, memory_order_relaxed) & role))
            return 0;
    }
    return 1;
}

int ndc__peer_elsewhere(ndc_chan *ch, int side)
{
    int cpu = ndc__current_cpu();
    atomic_store_explicit(&ch->peers[ch->me].cpu, cpu, memory_order_relaxed);
    /* Only a peer that can post what we wait for counts: a sender for a
     * receiver, a receiver for a sender. A bystander (the process that
     * created the channel and forked the workers, a monitor) last ran
     * wherever it ran, and must not make a waiter spin on a CPU its real
     * peer shares. Until some peer has played the role, any peer counts. */
    uint32_t role = side == NDC__SIDE_READY ? NDC__PEER_SENT : NDC__PEER_RECEIVED;
    uint32_t hw = ndc__peers_hw(ch), others = 0, with_role = 0;
    int role_elsewhere = 0, any_elsewhere = 0;
    for (uint32_t i = 0; i < hw; i++) {
        if (i == ch->me)
            continue;
        struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_LIVE)
            continue;
        others++;
        int away = atomic_load_explicit(&p->cpu, memory_order_relaxed) != cpu;
        any_elsewhere |= away;
        if (atomic_load_explicit(&p->flags, memory_order_relaxed) & role) {
            with_role++;
            role_elsewhere |= away;
        }
    }
    if (with_role)
        return role_elsewhere;
    /* alone: only this process's other threads can post; they may run elsewhere */
    return others ? any_elsewhere : ndc__can_run_elsewhere();
}

uint32_t ndc__peer_count_alive(const ndc_chan *ch, uint32_t *others)
{
    uint32_t hw = ndc__peers_hw(ch), n = 0, o = 0;
    for (uint32_t i = 0; i < hw; i++) {
        if (atomic_load_explicit(&ch->peers[i].state, memory_order_relaxed) != NDC__PEER_LIVE ||
            !ndc__peer_alive(ch, i))
            continue;
        n++;
        o += !is_me(ch, i);
    }
    *others = o;
    return n;
}
