/* Broadcast channels.
 *
 * The publisher side is the work queue's: a slot is reserved, written,
 * committed at the ring's tail (queue.c). What changes is who takes it.
 * Every subscriber keeps its own cursor (the next position it takes) in its
 * peer entry, and reads the cell of that position; nobody empties cells. A
 * READY slot's state word counts the subscribers reading it (readers) and
 * carries the low bits of its seq, so a compare-and-swap on the word checks
 * "still the array of position c" and "nobody reads it" at once.
 *
 * A slot comes back to the publisher only when nobody needs it: no
 * subscriber is reading it, and (NDC_SLOW_BLOCK) every subscriber's cursor
 * is past it, and it is older than the last `history` commits. Under
 * NDC_SLOW_LATEST the publisher also takes the oldest array nobody is
 * reading when it has nothing else: subscribers that had not got to it
 * find it gone and skip. Slots are given back lazily, when the publisher
 * needs one, so the history costs nothing.
 *
 * Recovery: a subscriber's loans are listed in its entry (held[]), which is
 * the truth the readers counts are rebuilt from; pinning, recording and
 * moving the cursor are one step (queue.h), so a subscriber that dies in
 * the middle is repaired like any other step. A subscriber that dies
 * between steps is retired by the sweep: its loans are given back and its
 * cursor stops counting. */
#include <errno.h>
#include <string.h>

#include "bcast.h"
#include "error.h"

#define SEQMASK (0xffffffull << 40)

static struct ndc__peer *me_of(const ndc_chan *ch)
{
    return &ch->peers[ch->me];
}


void ndc__bcast_subscribe(ndc_chan *ch)
{
    struct ndc__peer *p = me_of(ch);
    uint32_t zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&p->subscribed, &zero, 2, memory_order_acquire,
                                                 memory_order_acquire)) {
        while (atomic_load_explicit(&p->subscribed, memory_order_acquire) == 2)
            ndc__cpu_relax();   /* another thread of this handle is subscribing it */
        return;
    }
    uint64_t t = ndc__queue_commits(ch), h = ch->seg.g.history;
    uint64_t start = t > h ? t - h : 0;
    atomic_store_explicit(&p->dropped, 0, memory_order_relaxed);
    atomic_store_explicit(&p->taken, 0, memory_order_relaxed);
    atomic_store_explicit(&p->cursor, start, memory_order_relaxed);
    atomic_store_explicit(&ch->history_end, t, memory_order_relaxed);
    /* seq_cst: a publisher that looks for slots to reuse after this sees
     * our cursor; one that looked before may reuse history slots, which we
     * then pass over without counting them as lost */
    atomic_store_explicit(&p->subscribed, 1, memory_order_seq_cst);
}

/* ---- the publisher --------------------------------------------------------------- */

/* The smallest cursor of the live subscribers (UINT64_MAX: none). */
static uint64_t slowest(const ndc_chan *ch)
{
    uint64_t low = UINT64_MAX;
    uint32_t hw = ndc__peers_hw(ch);
    for (uint32_t i = 0; i < hw; i++) {
        const struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_LIVE ||
            atomic_load_explicit(&p->subscribed, memory_order_seq_cst) == 0)
            continue;
        /* a subscriber being set up (2) counts from the oldest history on */
        uint64_t c = atomic_load_explicit(&p->subscribed, memory_order_relaxed) == 1
                         ? atomic_load_explicit(&p->cursor, memory_order_acquire)
                         : 0;
        if (c < low)
            low = c;
    }
    return low;
}

/* The READY slot with the lowest seq below `below` that nobody reads. */
static int oldest_unread(const ndc_chan *ch, uint64_t below, uint32_t *slot, uint64_t *word)
{
    uint64_t best = UINT64_MAX;
    for (uint32_t i = 0; i < ch->seg.g.nslots; i++) {
        uint64_t w = atomic_load_explicit(&ch->slots[i].state, memory_order_relaxed);
        if (NDC__STATE(w) != NDC__READY || NDC__READERS(w) != 0)
            continue;
        uint64_t seq = ch->slots[i].seq;   /* checked by the word's seq bits at the CAS */
        if (seq < below && seq < best && NDC__SEQBITS(seq) == (w & SEQMASK)) {
            best = seq;
            *slot = i;
            *word = w;
        }
    }
    return best != UINT64_MAX;
}

/* Free every READY slot below `horizon` that nobody reads, at once: the
 * next reserves then find them FREE, and the look at every subscriber's
 * cursor is paid once for all of them. */
static void free_below(ndc_chan *ch, uint64_t horizon)
{
    int any = 0;
    for (uint32_t i = 0; i < ch->seg.g.nslots; i++) {
        _Atomic uint64_t *st = &ch->slots[i].state;
        uint64_t w = atomic_load_explicit(st, memory_order_relaxed);
        if (NDC__STATE(w) != NDC__READY || NDC__READERS(w) != 0)
            continue;
        uint64_t seq = ch->slots[i].seq;
        /* release: pairs with the acquire CAS of the reserve that takes it */
        if (seq < horizon && NDC__SEQBITS(seq) == (w & SEQMASK) &&
            atomic_compare_exchange_strong_explicit(st, &w, NDC__WORD(NDC__FREE, 0), memory_order_acq_rel,
                                                    memory_order_relaxed))
            any = 1;
    }
    if (any)
        ndc__queue_freed(ch);
}

/* The horizon: READY slots below it that nobody reads are the publisher's. */
static uint64_t horizon_of(const ndc_chan *ch, uint64_t t)
{
    uint64_t h = ch->seg.g.history, horizon = t > h ? t - h : 0;
    if (ch->seg.g.slow_policy != NDC_SLOW_LATEST) {
        uint64_t low = slowest(ch);
        if (low < horizon)
            horizon = low;
    }
    return horizon;
}

int ndc__bcast_can_reserve(const ndc_chan *ch)
{
    uint64_t t = ndc__queue_commits(ch), w;
    uint32_t s;
    return oldest_unread(ch, horizon_of(ch, t), &s, &w) ||
           (ch->seg.g.slow_policy == NDC_SLOW_LATEST && oldest_unread(ch, t ? t - 1 : 0, &s, &w));
}

int ndc__bcast_try_reserve(ndc_chan *ch, uint32_t *slot)
{
    if (ndc__queue_try_reserve(ch, slot) == 0)
        return 0;
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t t = ndc__queue_commits(ch), horizon = horizon_of(ch, t);
        int latest = ch->seg.g.slow_policy == NDC_SLOW_LATEST;
        free_below(ch, horizon);
        if (ndc__queue_try_reserve(ch, slot) == 0)
            return 0;
        uint64_t w = 0;
        uint32_t s = 0;
        /* under the latest policy, the newest array stays for whoever asks */
        int found = oldest_unread(ch, horizon, &s, &w) || (latest && oldest_unread(ch, t ? t - 1 : 0, &s, &w));
        if (!found)
            return -EAGAIN;
        /* acquire: pairs with a subscriber's release of its reader count */
        if (atomic_compare_exchange_strong_explicit(&ch->slots[s].state, &w, NDC__WORD(NDC__RESERVED, ch->me),
                                                    memory_order_acquire, memory_order_relaxed)) {
            *slot = s;
            return 0;
        }
    }
    return -EAGAIN;
}

/* ---- subscribers ----------------------------------------------------------------- */

static int held_add(struct ndc__peer *p, uint32_t slot)
{
    for (int i = 0; i < NDC__SUB_LOANS; i++) {
        uint16_t zero = 0;
        if (atomic_load_explicit(&p->held[i], memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong_explicit(&p->held[i], &zero, (uint16_t)(slot + 1),
                                                    memory_order_relaxed, memory_order_relaxed))
            return i;
    }
    return -1;
}

static int held_find(const struct ndc__peer *p, uint32_t slot)
{
    for (int i = 0; i < NDC__SUB_LOANS; i++)
        if (atomic_load_explicit(&p->held[i], memory_order_relaxed) == slot + 1)
            return i;
    return -1;
}

int ndc__bcast_holds(const ndc_chan *ch, uint32_t slot)
{
    return held_find(me_of(ch), slot) >= 0;
}

/* Lower a READY slot's readers count. */
static void unpin(ndc_chan *ch, uint32_t slot)
{
    _Atomic uint64_t *st = &ch->slots[slot].state;
    uint64_t w = atomic_load_explicit(st, memory_order_relaxed);
    /* release: our reads of the array happen before a publisher reuses it */
    while (NDC__STATE(w) == NDC__READY && NDC__READERS(w) > 0 &&
           !atomic_compare_exchange_weak_explicit(st, &w, w - NDC__READER, memory_order_release,
                                                  memory_order_relaxed))
        ;
}

/* Pass position c: the cursor moves on; the array is counted lost unless
 * it was history when we subscribed (or a hole). */
static void pass(ndc_chan *ch, uint64_t c, uint64_t to, int lost)
{
    struct ndc__peer *p = me_of(ch);
    if (!atomic_compare_exchange_strong_explicit(&p->cursor, &c, to, memory_order_relaxed, memory_order_relaxed))
        return;   /* another thread of this handle moved it */
    uint64_t from = c, hist = atomic_load_explicit(&ch->history_end, memory_order_relaxed);
    if (from < hist)
        from = hist < to ? hist : to;
    if (lost && to > from)
        atomic_fetch_add_explicit(&p->dropped, to - from, memory_order_relaxed);
}

int ndc__bcast_try_take(ndc_chan *ch, uint32_t *slot_out)
{
    struct ndc__peer *p = me_of(ch);
    if (atomic_load_explicit(&p->subscribed, memory_order_acquire) != 1)
        ndc__bcast_subscribe(ch);
    if (!ndc__bcast_has_ready(ch))
        return -EAGAIN;
    uint64_t n = ch->seg.g.nslots;
    int latest = ch->seg.g.slow_policy == NDC_SLOW_LATEST;
    int r = ndc__step_enter(ch);
    if (r)
        return r;
    for (;;) {
        uint64_t c = atomic_load_explicit(&p->cursor, memory_order_relaxed);
        if (latest) {
            uint64_t t = ndc__queue_commits(ch);
            if (t > c + 1) {
                pass(ch, c, t - 1, 1);   /* the newest one it has not had */
                continue;
            }
        }
        struct ndc__cell *cell = &ch->cells[c % n];
        uint64_t cs = atomic_load_explicit(&cell->seq, memory_order_acquire);   /* (C2) of queue.c */
        if (cs < c + 1) {
            r = -EAGAIN;
            break;
        }
        if (cs > c + 1) {   /* the cell serves a later position: ours is gone */
            pass(ch, c, c + 1, 1);
            continue;
        }
        uint32_t slot = atomic_load_explicit(&cell->slot, memory_order_relaxed);
        if (slot == NDC__HOLE) {
            pass(ch, c, c + 1, 0);
            continue;
        }
        if (slot >= n) {
            pass(ch, c, c + 1, 1);
            r = ndc__fail(-EBADMSG, "broadcast ring position %llu names slot %u", (unsigned long long)c, slot);
            break;
        }
        /* Pin: READY, of position c (the word's seq bits), one more reader.
         * acquire: pairs with the commit's release (C2) through the cell,
         * and makes the header and payload ours to read. */
        _Atomic uint64_t *st = &ch->slots[slot].state;
        uint64_t w = atomic_load_explicit(st, memory_order_relaxed);
        int pinned = 0;
        while (NDC__STATE(w) == NDC__READY && (w & SEQMASK) == NDC__SEQBITS(c) && NDC__READERS(w) < 0xffff) {
            if (atomic_compare_exchange_weak_explicit(st, &w, w + NDC__READER, memory_order_acquire,
                                                      memory_order_relaxed)) {
                pinned = 1;
                break;
            }
        }
        if (!pinned) {   /* reused by the publisher (latest policy) before we got to it */
            pass(ch, c, c + 1, 1);
            continue;
        }
        int entry = held_add(p, slot);
        if (entry < 0) {
            unpin(ch, slot);
            r = ndc__fail(-ENOBUFS, "this subscriber holds %d loans already: release some",
                          NDC__SUB_LOANS);
            break;
        }
        uint64_t expect = c;
        if (!atomic_compare_exchange_strong_explicit(&p->cursor, &expect, c + 1, memory_order_relaxed,
                                                     memory_order_relaxed)) {
            /* another thread of this handle took position c: undo our own
             * entry (not just any of this slot: that may be its) */
            atomic_store_explicit(&p->held[entry], 0, memory_order_relaxed);
            unpin(ch, slot);
            continue;
        }
        atomic_fetch_add_explicit(&p->taken, 1, memory_order_relaxed);
        *slot_out = slot;
        r = 0;
        break;
    }
    ndc__step_leave(ch);
    return r;
}

int ndc__bcast_release(ndc_chan *ch, uint32_t slot)
{
    struct ndc__peer *p = me_of(ch);
    int r = ndc__step_enter(ch);
    if (r)
        return r;
    int i = held_find(p, slot);
    uint16_t want = (uint16_t)(slot + 1);
    if (i < 0 || !atomic_compare_exchange_strong_explicit(&p->held[i], &want, 0, memory_order_relaxed,
                                                          memory_order_relaxed)) {
        ndc__step_leave(ch);
        return -EINVAL;
    }
    unpin(ch, slot);
    ndc__step_leave(ch);
    /* a publisher waiting for a slot looks again (as queue_free) */
    ndc__queue_freed(ch);
    return 0;
}

int ndc__bcast_has_ready(const ndc_chan *ch)
{
    const struct ndc__peer *p = me_of(ch);
    if (atomic_load_explicit(&p->subscribed, memory_order_acquire) != 1)
        return 1;   /* the take subscribes first, then looks */
    uint64_t c = atomic_load_explicit(&p->cursor, memory_order_relaxed);
    return atomic_load_explicit(&ch->cells[c % ch->seg.g.nslots].seq, memory_order_acquire) >= c + 1;
}

int ndc__bcast_ended(const ndc_chan *ch)
{
    uint64_t t = atomic_load_explicit(&ch->ctrl->tail, memory_order_acquire);
    return (t & NDC__TAIL_CLOSED) &&
           atomic_load_explicit(&me_of(ch)->cursor, memory_order_relaxed) >= (t & ~NDC__TAIL_CLOSED);
}

/* ---- departures and repairs -------------------------------------------------------- */

void ndc__bcast_retire(ndc_chan *ch, uint32_t peer)
{
    struct ndc__peer *p = &ch->peers[peer];
    if (atomic_load_explicit(&p->subscribed, memory_order_acquire)) {
        atomic_fetch_add_explicit(&ch->ctrl->gone_received, atomic_load_explicit(&p->taken, memory_order_relaxed),
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&ch->ctrl->gone_dropped, atomic_load_explicit(&p->dropped, memory_order_relaxed),
                                  memory_order_relaxed);
    }
    for (int i = 0; i < NDC__SUB_LOANS; i++) {
        uint16_t e = atomic_exchange_explicit(&p->held[i], 0, memory_order_relaxed);
        if (e && e - 1u < ch->seg.g.nslots)
            unpin(ch, e - 1u);
    }
    atomic_store_explicit(&p->subscribed, 0, memory_order_release);
    ndc__queue_freed(ch);
}

void ndc__bcast_rebuild(ndc_chan *ch, ndc__alive_fn alive)
{
    uint32_t n = ch->seg.g.nslots, hw = ndc__peers_hw(ch);
    uint16_t readers[NDC_MAX_SLOTS];
    memset(readers, 0, sizeof readers[0] * n);
    for (uint32_t i = 0; i < hw; i++) {
        struct ndc__peer *p = &ch->peers[i];
        int live = atomic_load_explicit(&p->state, memory_order_relaxed) == NDC__PEER_LIVE && alive(ch, i);
        for (int k = 0; k < NDC__SUB_LOANS; k++) {
            uint16_t e = atomic_load_explicit(&p->held[k], memory_order_relaxed);
            if (!e)
                continue;
            if (live && e - 1u < n && readers[e - 1] < 0xffff)
                readers[e - 1]++;
            else
                atomic_store_explicit(&p->held[k], 0, memory_order_relaxed);
        }
        /* a dead subscriber's counts and place go at its retirement, which
         * follows (the sweep) */
    }
    int8_t live[NDC_MAX_PEERS];
    memset(live, -1, sizeof live);
    uint64_t t = ndc__queue_commits(ch);
    for (uint32_t i = 0; i < n; i++) {
        _Atomic uint64_t *stw = &ch->slots[i].state;
        uint64_t w = atomic_load_explicit(stw, memory_order_relaxed);
        uint32_t st = NDC__STATE(w), who = NDC__OWNER(w);
        if (st == NDC__READY) {
            uint64_t seq = ch->slots[i].seq;
            if (seq >= t) {   /* garbage: not a commit of this channel */
                atomic_store_explicit(stw, NDC__WORD(NDC__FREE, 0), memory_order_relaxed);
                continue;
            }
            atomic_store_explicit(stw, NDC__WORD(NDC__READY, 0) | NDC__SEQBITS(seq) |
                                  (uint64_t)readers[i] * NDC__READER, memory_order_relaxed);
            /* listed if its publisher died before the cell said so */
            struct ndc__cell *cell = &ch->cells[seq % n];
            if (seq + n >= t && atomic_load_explicit(&cell->seq, memory_order_relaxed) < seq + 1) {
                atomic_store_explicit(&cell->slot, i, memory_order_relaxed);
                atomic_store_explicit(&cell->seq, seq + 1, memory_order_relaxed);
            }
            continue;
        }
        if (w == NDC__WORD(NDC__FREE, 0))
            continue;
        if ((st == NDC__RESERVED || st == NDC__COMMITTING) && who < ch->seg.g.max_peers) {
            if (live[who] < 0)
                live[who] = (int8_t)!!alive(ch, who);
            if (live[who]) {
                if (st == NDC__COMMITTING)
                    atomic_store_explicit(stw, NDC__WORD(NDC__RESERVED, who), memory_order_relaxed);
                continue;
            }
        }
        atomic_store_explicit(stw, NDC__WORD(NDC__FREE, 0), memory_order_relaxed);
    }
    /* positions claimed by publishers that died before listing anything */
    for (uint64_t pos = t > n ? t - n : 0; pos < t; pos++) {
        struct ndc__cell *cell = &ch->cells[pos % n];
        if (atomic_load_explicit(&cell->seq, memory_order_relaxed) < pos + 1) {
            atomic_store_explicit(&cell->slot, NDC__HOLE, memory_order_relaxed);
            atomic_store_explicit(&cell->seq, pos + 1, memory_order_relaxed);
        }
    }
    atomic_fetch_add_explicit(&ch->ctrl->repairs, 1, memory_order_relaxed);
}

int ndc__bcast_drained(const ndc_chan *ch, uint64_t upto)
{
    uint32_t hw = ndc__peers_hw(ch);
    for (uint32_t i = 0; i < hw; i++) {
        const struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_LIVE ||
            atomic_load_explicit(&p->subscribed, memory_order_acquire) != 1)
            continue;
        if (atomic_load_explicit(&p->cursor, memory_order_relaxed) < upto)
            return 0;
        for (int k = 0; k < NDC__SUB_LOANS; k++) {
            uint16_t e = atomic_load_explicit(&p->held[k], memory_order_relaxed);
            if (e && e - 1u < ch->seg.g.nslots && ch->slots[e - 1].seq < upto)
                return 0;
        }
    }
    return 1;
}
