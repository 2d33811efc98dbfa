/* The hand-off's data structure, without a lock.
 *
 * A slot's state word (segment.h) is the truth: FREE, RESERVED by a peer,
 * COMMITTING by a peer, READY, LOANED to a peer. Free slots need no list:
 * a sender finds one by its state and takes it with one compare-and-swap.
 * Committed slots are listed in commit order in a ring of nslots cells
 * (Vyukov's bounded MPMC queue, as DPDK's rte_ring and iceoryx2 keep
 * theirs): the tail and head positions count up for ever (64 bits), cell
 * p % nslots serves position p, and its seq word says whose turn it is.
 * A sender claims a position by CAS on the tail, a receiver by CAS on the
 * head; each line is written by one side only, and the cell a receiver
 * waits on is written by the one sender that claimed it.
 *
 * The memory-order edges, each named at both ends:
 *   (C2) commit's release of cell.seq = p + 1   -> (T1) take's acquire of it:
 *        the array, its header, its state and cell.slot are visible to the
 *        receiver that sees the cell full.
 *   (T3) take's release of cell.seq = p + n     -> (C1) commit's acquire of it:
 *        the receiver is done with the cell before a sender reuses it.
 *   (F1) free's release CAS of the state to FREE -> (R1) reserve's acquire CAS:
 *        the last user of the payload is done before the next writes it.
 *   (S1) a step's seq_cst increment of its peer's busy count, then load of
 *        the gate  <->  (G1) a repair's seq_cst store of the gate, then load
 *        of each busy count: either the step sees the gate closed and backs
 *        out, or the repair sees the step and waits for it (Dekker).
 *   (S2) a step's release decrement of busy     -> (G2) the repair's acquire
 *        load that sees it reach 0: the step's stores are visible to the
 *        rebuild.
 *
 * Recovery. A peer that dies inside a step leaves a position claimed whose
 * cell never turns, or a slot taken off the ring but still READY. Its
 * process's busy count stays above 0, which the sweep (peer.c) sees; it
 * then repairs: with the repair lock held it closes the gate, waits until
 * no live peer is inside a step, and rebuilds the ring from the states.
 * Each step's stores are ordered so that any prefix of them rebuilds to a
 * consistent ring: a commit that did not reach READY loses its array (the
 * sender died before the commit was done), a take that did not reach
 * LOANED relists its array, and a slot a dead peer holds goes back FREE.
 * Indices and positions read here are checked against nslots and against
 * the slot they name: a corrupt segment gives -EBADMSG and a repair, never
 * an access out of bounds. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "bcast.h"
#include "error.h"
#include "queue.h"

#define FREE_WORD NDC__WORD(NDC__FREE, 0)

#define step_enter ndc__step_enter
#define step_leave ndc__step_leave

/* ---- free slots ------------------------------------------------------------- */

/* Whether a state word is one the protocol stores. */
static int word_valid(const ndc_chan *ch, uint64_t w)
{
    uint32_t st = NDC__STATE(w);
    if (st == NDC__FREE || st == NDC__READY)
        return w == NDC__WORD(st, 0);
    return (st == NDC__RESERVED || st == NDC__LOANED || st == NDC__COMMITTING) &&
           w == NDC__WORD(st, NDC__OWNER(w)) && NDC__OWNER(w) < ch->seg.g.max_peers;
}

int ndc__queue_try_reserve(ndc_chan *ch, uint32_t *slot)
{
    uint32_t n = ch->seg.g.nslots;
    int bad = 0;
    uint32_t k = atomic_load_explicit(&ch->cursor, memory_order_relaxed);
    if (k >= n)
        k = 0;
    /* From where this process last took one: in a steady stream the next
     * slot round the table is the one freed longest ago. */
    for (uint32_t i = 0; i < n; i++, k = k + 1 == n ? 0 : k + 1) {
        _Atomic uint64_t *st = &ch->slots[k].state;
        uint64_t w = atomic_load_explicit(st, memory_order_relaxed);
        if (w == FREE_WORD &&
            atomic_compare_exchange_strong_explicit(st, &w, NDC__WORD(NDC__RESERVED, ch->me),
                                                    memory_order_acquire, memory_order_relaxed)) {   /* (R1) */
            uint32_t next = k + 1 == n ? 0 : k + 1;
            atomic_store_explicit(&ch->cursor, next, memory_order_relaxed);
            /* The next reserve's slot, fetched for writing while nobody
             * needs it: in a steady stream its receiver let go of it long
             * ago, and it is ours next. */
            if (next != k) {
                __builtin_prefetch(&ch->slots[next], 1);
                __builtin_prefetch(ch->payload + (uint64_t)next * ch->seg.g.slot_stride, 1);
            }
            *slot = k;
            return 0;
        }
        bad |= !word_valid(ch, w);
    }
    /* a slot whose word is garbage is never found free: lost until a repair */
    return bad ? ndc__fail(-EBADMSG, "no slot free, and a slot state word is corrupt") : -EAGAIN;
}

int ndc__queue_free(ndc_chan *ch, uint32_t slot, uint64_t held)
{
    uint64_t w = held;
    if (!atomic_compare_exchange_strong_explicit(&ch->slots[slot].state, &w, FREE_WORD,
                                                 memory_order_release, memory_order_relaxed))   /* (F1) */
        return -EINVAL;
    ndc__queue_freed(ch);
    return 0;
}

int ndc__queue_has_free(const ndc_chan *ch)
{
    for (uint32_t i = 0; i < ch->seg.g.nslots; i++)
        if (atomic_load_explicit(&ch->slots[i].state, memory_order_relaxed) == FREE_WORD)
            return 1;
    return 0;
}

/* ---- the ready ring ----------------------------------------------------------- */

int ndc__queue_try_commit(ndc_chan *ch, uint32_t slot)
{
    struct ndc__ctrl *c = ch->ctrl;
    struct ndc__slot *s = &ch->slots[slot];
    uint64_t n = ch->seg.g.nslots, mine = NDC__WORD(NDC__RESERVED, ch->me);
    int r = step_enter(ch);
    if (r)
        return r;
    /* the mark makes the commit this thread's: a second commit of the slot fails here */
    uint64_t w = mine;
    if (!atomic_compare_exchange_strong_explicit(&s->state, &w, NDC__WORD(NDC__COMMITTING, ch->me),
                                                 memory_order_relaxed, memory_order_relaxed)) {
        step_leave(ch);
        return -EINVAL;
    }
    uint64_t t = atomic_load_explicit(&c->tail, memory_order_relaxed);
    for (;;) {
        if (t & NDC__TAIL_CLOSED) {
            r = -EPIPE;
            break;
        }
        struct ndc__cell *cell = &ch->cells[t % n];
        uint64_t cs = atomic_load_explicit(&cell->seq, memory_order_acquire);   /* (C1) */
        /* A broadcast channel's cells are never emptied by a receiver: the
         * array at t - n was passed by every subscriber (its slot came free),
         * or is skipped (latest policy); subscribers check each slot's seq. */
        if (cs == t || (ch->bcast && cs < t)) {
            if (!atomic_compare_exchange_weak_explicit(&c->tail, &t, t + 1, memory_order_relaxed,
                                                       memory_order_relaxed))
                continue;   /* another sender claimed t (or the channel closed): t is reloaded */
            /* Position t is ours. The state store is the commit (a death
             * before it loses the array, after it lists it on repair); the
             * cell store publishes it. */
            s->seq = t;
            atomic_store_explicit(&s->state, NDC__WORD(NDC__READY, 0) | (ch->bcast ? NDC__SEQBITS(t) : 0),
                                  memory_order_relaxed);
            atomic_store_explicit(&cell->slot, slot, memory_order_relaxed);
            atomic_store_explicit(&cell->seq, t + 1, memory_order_release);    /* (C2) */
            step_leave(ch);
            /* The next commit's cell, fetched for writing while nobody needs
             * it: its receiver emptied it long ago, and takes it next only
             * after our commit there. */
            __builtin_prefetch(&ch->cells[(t + 1) % n], 1);
            atomic_fetch_add_explicit(&c->bytes_sent, s->nbytes, memory_order_relaxed);
            return 0;
        }
        if (cs < t) {
            r = -EAGAIN;   /* the receiver of position t - n has not let go of the cell yet */
            break;
        }
        uint64_t again = atomic_load_explicit(&c->tail, memory_order_relaxed);
        if (again == t) {
            r = -EAGAIN;   /* a cell ahead of the tail: corrupt; the engine repairs if it lasts */
            break;
        }
        t = again;
    }
    atomic_store_explicit(&s->state, mine, memory_order_relaxed);   /* back out */
    step_leave(ch);
    return r;
}

int ndc__queue_try_take(ndc_chan *ch, uint32_t *slot_out)
{
    struct ndc__ctrl *c = ch->ctrl;
    uint64_t n = ch->seg.g.nslots;
    /* a look before the step: an empty ring costs two loads, no write.
     * Empty is a head cell that waits for its commit, or whose last
     * receiver is still inside its step; any other seq is judged in the
     * step (a stale head, or a corrupt one that would look empty for ever) */
    uint64_t h0 = atomic_load_explicit(&c->head, memory_order_relaxed);
    uint64_t cs0 = atomic_load_explicit(&ch->cells[h0 % n].seq, memory_order_acquire);
    if (cs0 == h0 || cs0 + n == h0 + 1)
        return -EAGAIN;
    int r = step_enter(ch);
    if (r)
        return r;
    uint64_t h = atomic_load_explicit(&c->head, memory_order_relaxed);
    for (;;) {
        struct ndc__cell *cell = &ch->cells[h % n];
        uint64_t cs = atomic_load_explicit(&cell->seq, memory_order_acquire);   /* (T1) */
        if (cs == h + 1) {
            uint32_t slot = atomic_load_explicit(&cell->slot, memory_order_relaxed);
            if (slot < n) {
                /* its header line is the next miss: start it now */
                __builtin_prefetch(&ch->slots[slot], 1);
                __builtin_prefetch(ch->payload + (uint64_t)slot * ch->seg.g.slot_stride, 0);
            }
            if (!atomic_compare_exchange_weak_explicit(&c->head, &h, h + 1, memory_order_relaxed,
                                                       memory_order_relaxed))
                continue;
            /* Position h is ours, and so is the slot it names: the cell is
             * let go of first (its line's ownership and the slot's header
             * line then travel at once), and LOANED is the taking. A death
             * between the two leaves a READY slot off the ring, which the
             * repair lists again. */
            atomic_store_explicit(&cell->seq, h + n, memory_order_release);      /* (T3) */
            uint64_t ready = NDC__WORD(NDC__READY, 0);
            int ok = slot < n &&
                     atomic_compare_exchange_strong_explicit(&ch->slots[slot].state, &ready,
                                                             NDC__WORD(NDC__LOANED, ch->me),
                                                             memory_order_relaxed, memory_order_relaxed);
            step_leave(ch);
            if (!ok)
                return ndc__fail(-EBADMSG, "ready ring position %llu names slot %u, which is not ready",
                                 (unsigned long long)h, slot);
            *slot_out = slot;
            return 0;
        }
        if (cs == h || cs + n == h + 1) {
            r = -EAGAIN;   /* not committed yet (or the cell's last receiver is still inside its step) */
            break;
        }
        uint64_t again = atomic_load_explicit(&c->head, memory_order_relaxed);
        if (again == h) {
            r = ndc__fail(-EBADMSG, "ready ring cell %llu holds seq %llu at head %llu",
                          (unsigned long long)(h % n), (unsigned long long)cs, (unsigned long long)h);
            break;
        }
        h = again;
    }
    step_leave(ch);
    return r;
}

int ndc__queue_has_ready(const ndc_chan *ch)
{
    uint64_t h = atomic_load_explicit(&ch->ctrl->head, memory_order_relaxed);
    return atomic_load_explicit(&ch->cells[h % ch->seg.g.nslots].seq, memory_order_acquire) == h + 1;
}

int ndc__queue_head_stuck(const ndc_chan *ch)
{
    uint64_t n = ch->seg.g.nslots;
    uint64_t h = atomic_load_explicit(&ch->ctrl->head, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&ch->ctrl->tail, memory_order_acquire) & ~NDC__TAIL_CLOSED;
    uint64_t cs = atomic_load_explicit(&ch->cells[h % n].seq, memory_order_acquire);
    if (t <= h || (cs != h && cs + n != h + 1))   /* not what a take reads as empty */
        return 0;
    uint32_t hw = ndc__peers_hw(ch);
    for (uint32_t i = 0; i < hw; i++)
        if (atomic_load_explicit(&ch->peers[i].busy, memory_order_acquire))
            return 0;   /* a commit under way (or one whose sender stopped or died: the sweep's) */
    return 1;
}

int ndc__queue_ended(const ndc_chan *ch)
{
    uint64_t t = atomic_load_explicit(&ch->ctrl->tail, memory_order_acquire);
    return (t & NDC__TAIL_CLOSED) &&
           atomic_load_explicit(&ch->ctrl->head, memory_order_acquire) >= (t & ~NDC__TAIL_CLOSED);
}

/* ---- giving back what the dead held -------------------------------------------- */

uint32_t ndc__queue_reclaim(ndc_chan *ch, uint32_t who)
{
    uint32_t n = ch->seg.g.nslots, got = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit(&ch->slots[i].state, memory_order_relaxed);
        uint32_t st = NDC__STATE(w);
        if ((st == NDC__RESERVED || st == NDC__LOANED || st == NDC__COMMITTING) && NDC__OWNER(w) == who &&
            ndc__queue_free(ch, i, w) == 0)
            got++;
    }
    return got;
}

int ndc__queue_died_in_step(const ndc_chan *ch, uint32_t peer)
{
    return atomic_load_explicit(&ch->peers[peer].busy, memory_order_acquire) != 0;
}

void ndc__queue_forget(ndc_chan *ch, uint32_t peer)
{
    atomic_store_explicit(&ch->peers[peer].busy, 0, memory_order_relaxed);
}

/* ---- repair ------------------------------------------------------------------------ */

/* Wait until no live peer is inside a step. */
static int drain_steps(ndc_chan *ch, struct ndc__deadline *dl, ndc__alive_fn alive)
{
    uint32_t hw = ndc__peers_hw(ch);
    for (uint32_t i = 0; i < hw; i++) {
        for (int spins = 0;; spins++) {
            if (atomic_load_explicit(&ch->peers[i].busy, memory_order_seq_cst) == 0)   /* (G1) (G2) */
                break;
            if (spins == 0 && !alive(ch, i))
                break;   /* died inside: that is what we repair */
            if (spins < 1000) {
                ndc__cpu_relax();
                continue;
            }
            /* a step is a few dozen instructions: this peer was descheduled
             * or stopped inside one, and comes out when it runs again */
            if (ndc__deadline_left(dl) == 0)
                return -ETIMEDOUT;
            if (!alive(ch, i))
                break;
            struct timespec ts = { 0, 50000 };
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

static void rebuild(ndc_chan *ch, ndc__alive_fn alive)
{
    struct ndc__ctrl *c = ch->ctrl;
    uint32_t n = ch->seg.g.nslots, nready = 0, relisted = 0;
    int8_t live[NDC_MAX_PEERS];   /* -1 not asked yet */
    memset(live, -1, sizeof live);
    uint64_t head0 = atomic_load_explicit(&c->head, memory_order_relaxed);
    uint64_t tail0 = atomic_load_explicit(&c->tail, memory_order_relaxed) & ~NDC__TAIL_CLOSED;
    int sane = head0 <= tail0 && tail0 - head0 <= n && tail0 < (1ull << 62);
    /* Private work arrays: the sort must not read back what a peer can
     * scribble on. Each slot's seq is read once. */
    uint16_t order[NDC_MAX_SLOTS];
    uint64_t seqs[NDC_MAX_SLOTS];
    for (uint32_t i = 0; i < n; i++) {
        _Atomic uint64_t *stw = &ch->slots[i].state;
        uint64_t w = atomic_load_explicit(stw, memory_order_relaxed);
        uint32_t st = NDC__STATE(w), who = NDC__OWNER(w);
        if (w == NDC__WORD(NDC__READY, 0)) {   /* exactly what a commit stores; else garbage */
            /* insertion by seq: n is at most NDC_MAX_SLOTS, and this is rare */
            uint64_t seq = ch->slots[i].seq;
            relisted += sane && seq < head0;   /* taken off by a receiver that died before LOANED */
            uint32_t j = nready++;
            while (j > 0 && seqs[j - 1] > seq) {
                order[j] = order[j - 1];
                seqs[j] = seqs[j - 1];
                j--;
            }
            order[j] = (uint16_t)i;
            seqs[j] = seq;
            continue;
        }
        if (st == NDC__FREE && w == FREE_WORD)
            continue;
        if ((st == NDC__RESERVED || st == NDC__LOANED || st == NDC__COMMITTING) && who < ch->seg.g.max_peers) {
            if (live[who] < 0)
                live[who] = (int8_t)!!alive(ch, who);
            if (live[who]) {
                /* no live step is under way: a COMMITTING mark is left over */
                if (st == NDC__COMMITTING)
                    atomic_store_explicit(stw, NDC__WORD(NDC__RESERVED, who), memory_order_relaxed);
                continue;
            }
        }
        atomic_store_explicit(stw, FREE_WORD, memory_order_relaxed);
    }
    /* Positions: what was taken and delivered stays counted (head), what
     * is listed follows without gaps, so tail - head is what is ready and
     * tail counts exactly the commits that were made. A commit whose
     * sender died before READY left a gap; dropping it renumbers the
     * arrays after it, which nobody has seen. */
    uint64_t head = sane ? head0 - relisted : 0;
    uint64_t tail = head + nready;
    /* An array listed again (its receiver died before it had it) keeps its
     * seq: survivors may have had later ones, and a seq is never given
     * twice. Those come first, in seq order; the rest are numbered on from
     * head0 (past every seq delivered), dropping the gaps. */
    for (uint32_t i = 0; i < nready; i++)
        if (!sane || i >= relisted)
            ch->slots[order[i]].seq = (sane ? head0 - relisted : 0) + i;
    for (uint64_t p = head; p < head + n; p++) {
        struct ndc__cell *cell = &ch->cells[p % n];
        if (p < tail)
            atomic_store_explicit(&cell->slot, order[p - head], memory_order_relaxed);
        atomic_store_explicit(&cell->seq, p < tail ? p + 1 : p, memory_order_relaxed);
    }
    atomic_store_explicit(&c->head, head, memory_order_relaxed);
    /* a CAS: ndc_close may set the mark at any moment, without the lock */
    uint64_t old = atomic_load_explicit(&c->tail, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&c->tail, &old, (old & NDC__TAIL_CLOSED) | tail,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    atomic_fetch_add_explicit(&c->repairs, 1, memory_order_relaxed);
}

int ndc__queue_repair(ndc_chan *ch, struct ndc__deadline *dl, ndc__alive_fn alive)
{
    _Atomic uint32_t *gate = &ch->ctrl->gate;
    atomic_store_explicit(gate, 1, memory_order_seq_cst);                         /* (G1) */
    int r = drain_steps(ch, dl, alive);
    if (r == 0 && ch->bcast)
        ndc__bcast_rebuild(ch, alive);
    else if (r == 0)
        rebuild(ch, alive);
    /* release: steps that see the gate open see the rebuilt ring */
    atomic_store_explicit(gate, 0, memory_order_release);
    ndc__futex_wake(gate, INT32_MAX);
    return r;
}
