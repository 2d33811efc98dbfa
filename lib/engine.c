/* The wait engine.
 *
 * FloatChannel's recipe, generalised: `empty` and `full` become two
 * semaphores over N slots, FREE (senders wait on it) and READY (receivers
 * wait on it), whose contents live in the lock-free queue (queue.c):
 *
 *   ndc_reserve: take(FREE)   a FREE slot becomes RESERVED by this process
 *   ndc_commit:  give_ready   RESERVED -> READY, listed at the ring's tail
 *   ndc_acquire: take(READY)  the ring's head -> LOANED to this process
 *   ndc_release: give_free    LOANED -> FREE
 *
 * take() is a try path (one attempt of the queue, no waiting) and a wait
 * path. Waiting spins first, then sleeps on the side's event word with
 * FUTEX_WAIT; a V wakes only when the waiter line says someone sleeps, so
 * no system call is made while both sides keep up. A receiver spins on the
 * very ring cell its array will appear in (one sender writes it), a sender
 * on the FREE side's event word (every release changes it).
 *
 * Waking a sleeper on an idle vCPU costs ~80 us here while a spinning peer
 * sees a store in ~0.3 us, so the spin budget decides the latency. It
 * adapts: no spinning when every other peer last ran on this CPU (two
 * spinners on one core starve each other) or when this process can run on
 * one CPU only; after a sleep, the waker's timestamp tells whether a longer
 * spin would have caught the post (restore the budget) or the peer was
 * idle (halve it, down to 1 us), so an idle channel burns almost nothing
 * and a busy one never sleeps. Sleeps are 40 ms slices: between them the
 * waiter sweeps dead peers (which repairs what one left half done) and
 * returns -EOWNERDEAD if the other side is all gone.
 *
 * No lost wake-up: a sleeper raises ctrl->sleepers[side], then (a seq_cst
 * fence) reads the event word and checks the queue once more, then sleeps
 * on the word's value. A poster makes its slot available, then (a seq_cst
 * fence) reads sleepers[side] and, if raised, changes the event word and
 * wakes. Either the poster sees the sleeper or the sleeper sees the slot.
 */
#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "bcast.h"
#include "engine.h"
#include "error.h"
#include "notify.h"
#include "peer.h"
#include "queue.h"

#define DEFAULT_SPIN_NS    20000
#define MIN_SPIN_NS        1000
#define SLEEP_SLICE_NS     40000000     /* liveness checks while asleep: < 100 ms detection */
#define STUCK_SPINS        2000         /* a ring step of a peer is a few dozen instructions */
#define STUCK_REPAIR_NS    100000000    /* a cell that stays stuck this long is repaired */

static int64_t budget_of(int64_t spin_ns)
{
    if (spin_ns < 0 || sysconf(_SC_NPROCESSORS_ONLN) < 2)
        return 0;
    return spin_ns == 0 ? DEFAULT_SPIN_NS : spin_ns;
}

void ndc__engine_init(ndc_chan *ch, int64_t spin_ns)
{
    ch->spin_budget = budget_of(spin_ns);
    atomic_init(&ch->spin_now[0], ch->spin_budget);
    atomic_init(&ch->spin_now[1], ch->spin_budget);
}

void ndc__engine_set_spin(ndc_chan *ch, int64_t spin_ns)
{
    ch->spin_budget = budget_of(spin_ns);
    atomic_store_explicit(&ch->spin_now[0], ch->spin_budget, memory_order_relaxed);
    atomic_store_explicit(&ch->spin_now[1], ch->spin_budget, memory_order_relaxed);
}

static _Atomic uint32_t *event_word(ndc_chan *ch, int side)
{
    return &ch->ctrl->sem[side].count;
}

/* ---- posting -------------------------------------------------------------------- */

/* Wake one sleeper on side if there is one; the slot was made available
 * before. */
static void post(ndc_chan *ch, int side)
{
    /* Waiters decide whether to spin from where their peers last ran; a
     * pure sender never waits, so it says where it runs here (every 16th
     * post: asking costs more than the rest of a post). */
    uint32_t k = atomic_load_explicit(&ch->posts, memory_order_relaxed);
    atomic_store_explicit(&ch->posts, k + 1, memory_order_relaxed);   /* a sample: threads may race */
    if ((k & 15) == 0) {
        _Atomic int32_t *cpu = &ch->peers[ch->me].cpu;
        int now_cpu = ndc__current_cpu();
        if (atomic_load_explicit(cpu, memory_order_relaxed) != now_cpu)
            atomic_store_explicit(cpu, now_cpu, memory_order_relaxed);
    }
    atomic_thread_fence(memory_order_seq_cst);          /* pairs with the fence in sleep_once */
    if (atomic_load_explicit(&ch->ctrl->sleepers[side], memory_order_relaxed) == 0)
        return;
    /* the FREE side's word changed already (queue_free); the READY side's
     * changes only now, for the sleeper */
    if (side == NDC__SIDE_READY)
        atomic_fetch_add_explicit(event_word(ch, side), NDC__EVENT, memory_order_release);
    atomic_store_explicit(&ch->ctrl->post_ns[side], ndc__now_ns(), memory_order_relaxed);
    /* One sleeper, even on a broadcast channel, where every subscriber
     * wants the array: each one woken passes the wake-up on (sleep_once),
     * so the publisher's cost does not grow with its subscribers. Every
     * one while a wait-any or notify-fd waiter is among them (notify.h). */
    ndc__futex_wake(event_word(ch, side), ndc__wake_n(ch, side));
}

/* ---- waiting ---------------------------------------------------------------------- */

static int has_ready(const ndc_chan *ch)
{
    return ch->bcast ? ndc__bcast_has_ready(ch) : ndc__queue_has_ready(ch);
}

static int ended(const ndc_chan *ch)
{
    return ch->bcast ? ndc__bcast_ended(ch) : ndc__queue_ended(ch);
}

/* Whether a try on side could succeed now, or the stream ended there
 * (acquire loads: what the try then reads was published before). */
static int available(ndc_chan *ch, int side, uint32_t ev_seen)
{
    /* The end of stream changes the event word, so the tail (the senders'
     * line: reading it would slow their next commit) is left alone. */
    return (side == NDC__SIDE_READY && has_ready(ch)) ||
           atomic_load_explicit(event_word(ch, side), memory_order_acquire) != ev_seen;
}

/* Spin until something may be there or the budget runs out.
 * \return 1 look again. */
static int spin(ndc_chan *ch, int side, uint32_t ev_seen, int64_t budget)
{
    int64_t end = ndc__now_ns() + budget;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (available(ch, side, ev_seen))
                return 1;
            ndc__cpu_relax();
        }
        if (ndc__now_ns() >= end)
            return 0;
    }
}

static int sleep_once(ndc_chan *ch, int side, uint32_t ev_seen, int64_t ns)
{
    struct ndc__ctrl *c = ch->ctrl;
    struct ndc__peer *me = &ch->peers[ch->me];
    /* The total first on the way in and last on the way out: a process
     * killed in between leaves it too high (a spare wake-up), never too low
     * (a missed one); the sweep subtracts what its entry says. */
    atomic_fetch_add_explicit(&c->sleepers[side], 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&me->sleeping[side], 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);          /* pairs with the fence in post */
    int r = 0;
    uint32_t v = atomic_load_explicit(event_word(ch, side), memory_order_acquire);
    /* The READY side's word changes only for sleepers: the ring itself is
     * looked at again, now that posters see us. */
    if (v == ev_seen && !(side == NDC__SIDE_READY && (has_ready(ch) || ended(ch))))
        r = ndc__futex_wait(event_word(ch, side), v, ns);
    atomic_fetch_sub_explicit(&me->sleeping[side], 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&c->sleepers[side], 1, memory_order_seq_cst);
    /* Broadcast: woken for a post (the word moved on from the value we
     * slept on), wake the next subscriber. One woken for nothing (it went
     * to sleep after the post) does not, so the chain ends. */
    if (ch->bcast && side == NDC__SIDE_READY && r == 0 &&
        atomic_load_explicit(event_word(ch, side), memory_order_relaxed) != v &&
        atomic_load_explicit(&c->sleepers[side], memory_order_seq_cst))
        ndc__futex_wake(event_word(ch, side), 1);
    return r;
}

static void adapt_spin(ndc_chan *ch, int side, int64_t gave_up_at)
{
    int64_t budget = ch->spin_budget;
    int64_t posted = atomic_load_explicit(&ch->ctrl->post_ns[side], memory_order_relaxed);
    int64_t now = atomic_load_explicit(&ch->spin_now[side], memory_order_relaxed);
    /* posted soon after we gave up: a full budget would have caught it */
    if (posted >= gave_up_at && posted - gave_up_at < budget)
        now = budget;
    else
        now = now / 2 > MIN_SPIN_NS ? now / 2 : MIN_SPIN_NS;
    atomic_store_explicit(&ch->spin_now[side], now, memory_order_relaxed);
}

static int would_take_now(ndc_chan *ch, int side)
{
    if (side == NDC__SIDE_READY)
        return has_ready(ch) || ended(ch);
    /* (a broadcast publisher may also find a READY slot to reuse: its try tells) */
    return (atomic_load_explicit(event_word(ch, side), memory_order_acquire) & NDC__CLOSED) ||
           ndc__queue_has_free(ch);
}

/* Whether a waiter on side should be told its peers are gone. The sweep
 * first: a peer that died inside a ring step may have left an array (or a
 * slot) that the repair lists, and that must be delivered first. */
static int gone_for_good(ndc_chan *ch, int side, struct ndc__deadline *dl)
{
    /* a broadcast publisher needs no subscriber: with none, it reuses slots */
    if (ch->bcast && side == NDC__SIDE_FREE) {
        if (ndc__peer_other_side_gone(ch, side))
            ndc__peer_sweep(ch, dl);
        return 0;
    }
    if (!ndc__peer_other_side_gone(ch, side))
        return 0;
    ndc__peer_sweep(ch, dl);
    /* Commits past the head whose head cell says "not yet", with nobody
     * inside a step: the cell lost its array (a scribble). Those arrays
     * are owed to us before "gone": repair, which lists them again. */
    if (side == NDC__SIDE_READY && !ch->bcast && ndc__queue_head_stuck(ch))
        ndc__peer_repair(ch, dl, 1);
    return !would_take_now(ch, side) && ndc__peer_other_side_gone(ch, side);
}

static int can_take(ndc_chan *ch, int side)
{
    if (side == NDC__SIDE_READY)
        return has_ready(ch);
    return ndc__queue_has_free(ch) || (ch->bcast && ndc__bcast_can_reserve(ch));
}

int ndc__would_take(ndc_chan *ch, int side)
{
    if (side == NDC__SIDE_FREE && atomic_load_explicit(&ch->ctrl->closed, memory_order_acquire))
        return NDC__TAKE_END;                /* a reserve on a closed channel: -EPIPE */
    if (can_take(ch, side))
        return NDC__TAKE_YES;
    if (side == NDC__SIDE_READY && ended(ch))
        return NDC__TAKE_END;                /* closed and drained */
    if ((ch->bcast && side == NDC__SIDE_FREE) || !ndc__peer_other_side_gone(ch, side))
        return NDC__TAKE_NO;
    /* As a waiter does before it says so: sweep once, so that what a peer
     * that died inside a step left is listed first. Never waits. */
    struct ndc__deadline dl;
    ndc__deadline_init(&dl, 0);
    ndc__peer_sweep(ch, &dl);
    if (can_take(ch, side))
        return NDC__TAKE_YES;
    if (atomic_load_explicit(event_word(ch, side), memory_order_acquire) & NDC__CLOSED)
        return NDC__TAKE_END;
    return ndc__peer_other_side_gone(ch, side) ? NDC__TAKE_GONE : NDC__TAKE_NO;
}

/* What a waiter whose other side is all gone is told: the end of stream
 * when it was closed (the usual ending: ndc_close, then exit), whatever
 * the moment the waiter looked; else that its peers died. */
static int gone_error(ndc_chan *ch, int side)
{
    if (atomic_load_explicit(event_word(ch, side), memory_order_acquire) & NDC__CLOSED)
        return ndc__fail(-EPIPE, "end of stream: the channel was closed");
    return ndc__fail(-EOWNERDEAD, "every %s of this channel is gone",
                     side == NDC__SIDE_READY ? "sender" : "receiver");
}

static int sweep_due(ndc_chan *ch)
{
    int64_t now = ndc__now_ns(), last = atomic_load_explicit(&ch->last_sweep, memory_order_relaxed);
    return now - last >= SLEEP_SLICE_NS &&
           atomic_compare_exchange_strong_explicit(&ch->last_sweep, &last, now, memory_order_relaxed,
                                                   memory_order_relaxed);
}

/* The try path: one attempt, no waiting. */
static int try_take(ndc_chan *ch, int side, uint32_t ev_seen, uint32_t *slot)
{
    if (side == NDC__SIDE_FREE) {
        if (atomic_load_explicit(&ch->ctrl->closed, memory_order_relaxed))
            return -EPIPE;
        return ch->bcast ? ndc__bcast_try_reserve(ch, slot) : ndc__queue_try_reserve(ch, slot);
    }
    int r = ch->bcast ? ndc__bcast_try_take(ch, slot) : ndc__queue_try_take(ch, slot);
    /* ndc_close marks the tail before the event word */
    return r == -EAGAIN && (ev_seen & NDC__CLOSED) && ended(ch) ? -EPIPE : r;
}

int ndc__take(ndc_chan *ch, int side, struct ndc__deadline *dl, uint32_t *slot)
{
    int spun = 0, repaired = 0, stuck = 0;
    int64_t gave_up_at = 0;
    /* The first try reads no event word: posters write it (the FREE side's
     * at every release), and a read would pull that line away from them. */
    uint32_t first = 0;
    int r = try_take(ch, side, first, slot);
    if (r == 0)
        return 0;
    /* A corrupt ring it found is repaired before anything else is taken:
     * the head moved past the bad cell, so a second try would not see it. */
    int bad = r == -EBADMSG;
    for (;;) {
        /* Read before the try: a post after it changes it, so a wait on
         * this value cannot miss that post. */
        uint32_t ev = atomic_load_explicit(event_word(ch, side), memory_order_acquire);
        r = bad ? -EBADMSG : try_take(ch, side, ev, slot);
        bad = 0;
        if (r == 0) {
            if (gave_up_at)
                adapt_spin(ch, side, gave_up_at);
            return 0;
        }
        if (r == -EBUSY || r == -EBADMSG) {
            /* a repair under way: wait for it; a corrupt ring: repair it,
             * which lists again whatever is READY (once: if it stays
             * corrupt, say so) */
            if (r == -EBADMSG && repaired++)
                return r;
            if ((r = ndc__peer_repair(ch, dl, r == -EBADMSG)))
                return r;
            continue;
        }
        if (r != -EAGAIN)
            return r;
        int64_t left = ndc__deadline_left(dl);
        if (left == 0) {
            /* A poller never sleeps, so it sweeps here instead (once a
             * slice): slots held by a dead peer must come back for it too. */
            if (dl->timeout_ns == 0 && side == NDC__SIDE_FREE && sweep_due(ch) &&
                ndc__peer_sweep(ch, dl) > 0)
                continue;
            return dl->timeout_ns == 0 ? -EAGAIN : -ETIMEDOUT;
        }
        if (!spun) {
            spun = 1;
            int64_t budget = atomic_load_explicit(&ch->spin_now[side], memory_order_relaxed);
            if (budget > 0 && ndc__peer_elsewhere(ch, side) && spin(ch, side, ev, budget < left ? budget : left))
                continue;
            if (gone_for_good(ch, side, dl))
                return gone_error(ch, side);
            gave_up_at = ndc__now_ns();
            continue;
        }
        r = sleep_once(ch, side, ev, left < SLEEP_SLICE_NS ? left : SLEEP_SLICE_NS);
        if (r == -EINTR) {
            /* we may have been the one woken for a post: pass it on */
            if (would_take_now(ch, side))
                ndc__futex_wake(event_word(ch, side), 1);
            return -EINTR;
        }
        if (r == -ETIMEDOUT) {
            atomic_store_explicit(&ch->last_sweep, ndc__now_ns(), memory_order_relaxed);
            ndc__peer_sweep(ch, dl);
            if (gone_for_good(ch, side, dl))
                return gone_error(ch, side);
            /* a head cell that stays empty behind later commits, two
             * slices running, with nobody inside a step: repair it */
            stuck = side == NDC__SIDE_READY && ndc__queue_head_stuck(ch) ? stuck + 1 : 0;
            if (stuck == 2 && (r = ndc__peer_repair(ch, dl, 1)))
                return r;
        }
    }
}

/* ---- giving ------------------------------------------------------------------------- */

int ndc__give_free(ndc_chan *ch, uint32_t slot, uint32_t held)
{
    int r;
    if (ch->bcast && held == NDC__LOANED) {
        struct ndc__deadline forever;
        ndc__deadline_init(&forever, NDC_FOREVER);
        while ((r = ndc__bcast_release(ch, slot)) == -EBUSY)
            if ((r = ndc__peer_repair(ch, &forever, 0)))
                return r;
    } else {
        r = ndc__queue_free(ch, slot, NDC__WORD(held, ch->me));
    }
    if (r)
        return ndc__fail(-EINVAL, "slot %u is not %s by this process", slot,
                         held == NDC__RESERVED ? "reserved" : "on loan");
    post(ch, NDC__SIDE_FREE);
    return 0;
}

/* A commit that could not be made by the caller's deadline (ndc_send's):
 * the array is dropped, its slot freed. */
static int drop(ndc_chan *ch, uint32_t slot, int r)
{
    ndc__give_free(ch, slot, NDC__RESERVED);
    return ndc__fail(r, "the array could not be listed %s: it is dropped", r == -EAGAIN ? "at once" : "in time");
}

int ndc__give_ready(ndc_chan *ch, uint32_t slot, struct ndc__deadline *dl)
{
    int64_t stuck_since = 0;
    for (int spins = 0;; spins++) {
        int r = ndc__queue_try_commit(ch, slot);
        if (r == 0) {
            post(ch, NDC__SIDE_READY);
            return 0;
        }
        if (r == -EPIPE) {
            ndc__give_free(ch, slot, NDC__RESERVED);
            return ndc__fail(-EPIPE, "channel closed before commit: the array is dropped");
        }
        if (r == -EINVAL)
            return ndc__fail(-EINVAL, "slot %u is not reserved by this process", slot);
        if (r == -EBUSY) {
            if ((r = ndc__peer_repair(ch, dl, 0)))
                return r == -ETIMEDOUT || r == -EAGAIN ? drop(ch, slot, r) : r;
            continue;
        }
        /* -EAGAIN: the receiver of the cell's last array is still inside
         * its step. It leaves in a few instructions unless it was
         * descheduled, stopped or killed there: then a sweep (which
         * repairs after a death), and after a while a repair (a corrupt
         * cell), while we wait as long as it lives. */
        if (spins < STUCK_SPINS) {
            ndc__cpu_relax();
            continue;
        }
        int64_t now = ndc__now_ns();
        if (!stuck_since)
            stuck_since = now;
        else if (ndc__deadline_left(dl) == 0)   /* after one sleep at least */
            return drop(ch, slot, dl->timeout_ns == 0 ? -EAGAIN : -ETIMEDOUT);
        ndc__peer_sweep(ch, dl);
        if (now - stuck_since > STUCK_REPAIR_NS) {
            if ((r = ndc__peer_repair(ch, dl, 1)))
                return r == -ETIMEDOUT || r == -EAGAIN ? drop(ch, slot, r) : r;
            stuck_since = 0;
        }
        struct timespec ts = { 0, 100000 };
        nanosleep(&ts, NULL);
    }
}

void ndc__engine_close(ndc_chan *ch)
{
    /* The ring's tail first: commits after it fail, so what receivers
     * drain is exactly what was committed before. Then the marks go into
     * the event words themselves: a waiter about to sleep on an old value
     * sees the change (no lost wake-up), and nothing here waits on another
     * process. The ready side first: a closer killed in between still ends
     * the stream for receivers. */
    atomic_fetch_or_explicit(&ch->ctrl->tail, NDC__TAIL_CLOSED, memory_order_seq_cst);
    atomic_store_explicit(&ch->ctrl->closed, 1, memory_order_seq_cst);
    for (int side = NDC__SIDE_READY; side >= NDC__SIDE_FREE; side--) {
        atomic_fetch_or_explicit(event_word(ch, side), NDC__CLOSED, memory_order_seq_cst);
        ndc__futex_wake(event_word(ch, side), INT32_MAX);
    }
}
