/* The free stack and the ready ring, under the queue lock.
 *
 * Invariant (between critical sections): sem[FREE].count equals the number of
 * FREE slots and free_idx[0..count) lists them; sem[READY].count equals the
 * number of READY slots and ready_idx[head .. head+count) (mod nslots) lists
 * them in seq order. RESERVED and LOANED slots are on neither: their owner
 * holds them. So free + ready + reserved + loaned = nslots.
 *
 * Each critical section changes a slot's state word (the truth) with one
 * store, and the queues around it; a holder that dies mid-way leaves states
 * that are each either before or after, and the queues are rebuilt from
 * them. Indices and counts read here are checked against nslots and against
 * the slot they name: a corrupt segment gives -EBADMSG and a rebuild, never
 * an access out of bounds. The ring head is kept below nslots (it wraps by
 * hand): a free-running counter taken mod nslots would jump when it wraps
 * at 2^32 unless nslots divided 2^32. Work arrays of the rebuild are
 * private, so a peer scribbling during it cannot steer an index. */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "peer.h"
#include "queue.h"

static int corrupt(ndc_chan *ch, const char *what)
{
    ndc__queue_rebuild(ch, ndc__peer_alive);
    return ndc__fail(-EBADMSG, "channel queue inconsistent (%s); rebuilt from the slot table", what);
}

int ndc__queue_pop(ndc_chan *ch, int side, uint64_t new_word, uint32_t *slot)
{
    struct ndc__ctrl *c = ch->ctrl;
    uint32_t n = ch->seg.g.nslots;
    uint32_t cnt = NDC__COUNT(atomic_load_explicit(&c->sem[side].count, memory_order_relaxed));
    if (cnt == 0)
        return -EAGAIN;
    if (cnt > n)
        return corrupt(ch, "count above slots");
    uint32_t head = c->ready_head;
    if (head >= n)
        return corrupt(ch, "ring head out of range");
    uint32_t idx = side == NDC__SIDE_FREE ? ch->free_idx[cnt - 1] : ch->ready_idx[head];
    if (idx >= n)
        return corrupt(ch, "slot index out of range");
    uint64_t w = atomic_load_explicit(&ch->slots[idx].state, memory_order_relaxed);
    if (NDC__STATE(w) != (side == NDC__SIDE_FREE ? NDC__FREE : NDC__READY))
        return corrupt(ch, "queued slot in the wrong state");
    /* The state store is the taking; the counters follow it (a holder that
     * dies in between leaves a LOANED slot of a dead peer: freed by the
     * rebuild, its array lost with the receiver that took it). */
    atomic_store_explicit(&ch->slots[idx].state, new_word, memory_order_relaxed);
    atomic_fetch_sub_explicit(&c->sem[side].count, 1, memory_order_relaxed);
    if (side == NDC__SIDE_READY) {
        c->ready_head = head + 1 == n ? 0 : head + 1;
        atomic_store_explicit(&c->received, atomic_load_explicit(&c->received, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
    *slot = idx;
    return 0;
}

int ndc__queue_push(ndc_chan *ch, int side, uint32_t slot, uint64_t new_word)
{
    struct ndc__ctrl *c = ch->ctrl;
    uint32_t n = ch->seg.g.nslots;
    _Atomic uint32_t *count = &c->sem[side].count;
    uint32_t old = atomic_load_explicit(count, memory_order_relaxed);
    uint32_t cnt = NDC__COUNT(old), head = c->ready_head;
    if (cnt >= n || head >= n)
        return corrupt(ch, "push onto a full queue");
    /* The count is the semaphore. It may go up before the slot is listed:
     * takers pop only under the lock we hold. seq_cst, not just release:
     * with the sleeper's seq_cst increment of `sleepers` and both sides'
     * seq_cst loads, either the poster sees the sleeper (post_wake in
     * chan.c) or the sleeper sees this count (Dekker). The release half
     * pairs with a waiter's acquire load of the count. */
    if (side == NDC__SIDE_READY) {
        /* A commit races ndc_close, which sets CLOSED without the lock:
         * either this increment comes first (the array was sent before the
         * end of stream, and receivers drain it) or the commit fails. */
        uint64_t seq = atomic_load_explicit(&c->sent, memory_order_relaxed);
        ch->slots[slot].seq = seq;
        ch->ready_idx[(head + cnt) % n] = (uint16_t)slot;
        do {
            if (old & NDC__CLOSED)
                return -EPIPE;
        } while (!atomic_compare_exchange_weak_explicit(count, &old, old + 1, memory_order_seq_cst,
                                                        memory_order_relaxed));
        /* The state store is the commit. The counters follow it: a holder
         * that dies in between leaves a READY slot whose seq the rebuild
         * turns back into `sent`, never a count of an array that is not. */
        atomic_store_explicit(&ch->slots[slot].state, new_word, memory_order_relaxed);
        atomic_store_explicit(&c->sent, seq + 1, memory_order_relaxed);
        atomic_store_explicit(&c->bytes_sent, atomic_load_explicit(&c->bytes_sent, memory_order_relaxed) +
                              ch->slots[slot].nbytes, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(count, 1, memory_order_seq_cst);
        ch->free_idx[cnt] = (uint16_t)slot;
        atomic_store_explicit(&ch->slots[slot].state, new_word, memory_order_relaxed);
    }
    atomic_store_explicit(&c->sem[side].hint, slot, memory_order_relaxed);
    return 0;
}

void ndc__queue_rebuild(ndc_chan *ch, int (*owner_alive)(const ndc_chan *ch, uint32_t peer))
{
    struct ndc__ctrl *c = ch->ctrl;
    uint32_t n = ch->seg.g.nslots, nfree = 0, nready = 0;
    int8_t alive[NDC_MAX_PEERS];   /* -1 not asked yet */
    memset(alive, -1, sizeof alive);
    uint64_t max_seq = 0;
    /* Private work arrays: the sort must not read back indices a peer can
     * scribble on. Each slot's seq is read once. */
    uint16_t order[NDC_MAX_SLOTS];
    uint64_t seqs[NDC_MAX_SLOTS];
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit(&ch->slots[i].state, memory_order_relaxed);
        uint32_t st = NDC__STATE(w);
        if (st == NDC__READY) {
            /* insertion by seq: n is at most NDC_MAX_SLOTS, and this is rare */
            uint64_t seq = ch->slots[i].seq;
            uint32_t j = nready++;
            while (j > 0 && seqs[j - 1] > seq) {
                order[j] = order[j - 1];
                seqs[j] = seqs[j - 1];
                j--;
            }
            order[j] = (uint16_t)i;
            seqs[j] = seq;
            if (seq + 1 > max_seq)
                max_seq = seq + 1;
            continue;
        }
        uint32_t who = NDC__OWNER(w);
        if ((st == NDC__RESERVED || st == NDC__LOANED) && who < ch->seg.g.max_peers) {
            if (alive[who] < 0)
                alive[who] = (int8_t)!!owner_alive(ch, who);
            if (alive[who])
                continue;
        }
        atomic_store_explicit(&ch->slots[i].state, NDC__WORD(NDC__FREE, 0), memory_order_relaxed);
        ch->free_idx[nfree++] = (uint16_t)i;
    }
    memcpy(ch->ready_idx, order, sizeof order[0] * nready);
    c->ready_head = 0;
    if (atomic_load_explicit(&c->sent, memory_order_relaxed) < max_seq)
        atomic_store_explicit(&c->sent, max_seq, memory_order_relaxed);
    /* keep the end-of-stream marks */
    for (int side = 0; side < 2; side++) {
        /* a CAS: ndc_close may set CLOSED at any moment, without the lock */
        uint32_t want = side ? nready : nfree;
        uint32_t old = atomic_load_explicit(&c->sem[side].count, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(&c->sem[side].count, &old, (old & NDC__CLOSED) | want,
                                                      memory_order_release, memory_order_relaxed))
            ;
    }
    atomic_fetch_add_explicit(&c->repairs, 1, memory_order_relaxed);
}

uint32_t ndc__queue_reclaim(ndc_chan *ch, uint32_t who)
{
    uint32_t n = ch->seg.g.nslots, got = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t w = atomic_load_explicit(&ch->slots[i].state, memory_order_relaxed);
        uint32_t st = NDC__STATE(w);
        if ((st == NDC__RESERVED || st == NDC__LOANED) && NDC__OWNER(w) == who) {
            if (ndc__queue_push(ch, NDC__SIDE_FREE, i, NDC__WORD(NDC__FREE, 0)) != 0)
                return got;   /* the queue was rebuilt, which freed the rest too */
            got++;
        }
    }
    return got;
}
