/*
 * Recovery of the lock-free ring and the repair lock (suite lock):
 *   - a peer SIGKILLed inside a ready-ring step, after each store of the
 *     step: a sender inside its commit, a receiver inside its take. The
 *     survivors get every array exactly once (or never, when the sender
 *     died before READY), in order, within a second; ndc_stat adds up and
 *     every slot can be used again;
 *   - a holder of the repair lock that died (an exited or zombie process,
 *     a word naming nobody; a repairer killed with the gate closed, half
 *     way through its rebuild): taken over at once, the ring rebuilt;
 *   - a live holder of the repair lock that never lets go: calls that need
 *     it (a ring step behind the closed gate, a join that retires an entry)
 *     give up at their deadline or wait while it lives, never rob it.
 * And the ring's positions far beyond 2^32 (suite queue).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "faults_helpers.h"
#include "segment.h"
#include "chan.h"
#include "peer.h"

/* A lock word naming a peer entry that nobody holds: its "holder" is dead. */
#define DEAD_HOLDER_WORD 200u

static uint32_t rd_lock(struct seg *s) { return atomic_load(&s->c->lock); }
static uint32_t rd_gate(struct seg *s) { return atomic_load(&s->c->gate); }

/* Start an empty, idle ring at position p: head = tail = p, and the cell of
 * each position p' in [p, p + nslots) waiting for the commit at p'. */
static void ring_start(struct seg *s, uint64_t p)
{
    uint32_t n = s->g.nslots;
    for (uint64_t q = p; q < p + n; q++)
        atomic_store(&s->cells[q % n].seq, q);
    atomic_store(&s->c->head, p);
    atomic_store(&s->c->tail, p);
}

/* What publish() (chan.c) writes into a reserved slot's header. */
static void write_header(struct ndc__slot *h, const struct ndc_array *a)
{
    h->nbytes = ndc_array_nbytes(a);
    h->tag = a->tag;
    h->dtype = a->dtype;
    h->ndim = a->ndim;
    memcpy(h->shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    memcpy(h->strides, a->strides, sizeof(int64_t) * (size_t)a->ndim);
}

/* Every slot can be used again: nslots reservations at once (waiting up to
 * a second each, long enough for a sweep to bring back what a dead peer
 * held), each a different slot; committed and taken in order with
 * consecutive seqs; then the channel is idle, nothing held, and its counts
 * agree. */
static void all_slots_usable(ndc_chan *ch, struct seg *s, const char *what)
{
    uint32_t n = s->g.nslots;
    struct ndc_array r[NDC_MAX_SLOTS < 16 ? NDC_MAX_SLOTS : 16];
    cr_assert_leq(n, sizeof r / sizeof r[0]);
    for (uint32_t i = 0; i < n; i++) {
        tag_array(1000 + i, 64, &r[i], NULL);
        int rc = ndc_reserve(ch, &r[i], SEC);
        cr_assert_eq(rc, 0, "%s: reserve %u of %u: %d (%s) %s", what, i + 1, n, rc, ndc_strerror(rc),
                     ndc_last_error());
        for (uint32_t j = 0; j < i; j++)
            cr_assert_neq(r[j].data, r[i].data, "%s: a slot handed out twice", what);
        th_fill(r[i].data, ndc_array_nbytes(&r[i]), r[i].tag);
    }
    for (uint32_t i = 0; i < n; i++)
        th_ok(ndc_commit(ch, &r[i]));
    uint64_t seq0 = 0;
    char msg[200];
    for (uint32_t i = 0; i < n; i++) {
        struct ndc_array a;
        th_ok(ndc_acquire(ch, &a, 0));
        cr_assert_eq(a.tag, 1000 + i, "%s: order: tag %llu, want %u", what, (unsigned long long)a.tag, 1000 + i);
        cr_assert_eq(tag_check(&a, 64, msg, sizeof msg), 0, "%s: %s", what, msg);
        if (i == 0)
            seq0 = a.seq;
        cr_assert_eq(a.seq, seq0 + i, "%s: seq %llu after %llu", what, (unsigned long long)a.seq,
                     (unsigned long long)(seq0 + i - 1));
        th_ok(ndc_release(ch, &a));
    }
    struct ndc_array a;
    th_expect(ndc_acquire(ch, &a, 0), -EAGAIN);
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.free == n && st.ready == 0 && st.loaned == 0, "%s: end: free %u ready %u loaned %u", what,
              st.free, st.ready, st.loaned);
    cr_assert_eq(st.sent, st.received, "%s: sent %llu, received %llu with nothing left", what,
                 (unsigned long long)st.sent, (unsigned long long)st.received);
    cr_assert_eq(st.sent, seq0 + n, "%s: sent %llu, the last array's seq %llu", what,
                 (unsigned long long)st.sent, (unsigned long long)(seq0 + n - 1));
    cr_assert_eq(rd_gate(s), 0, "%s: the gate stayed closed", what);
    cr_assert_eq(rd_lock(s) & ~NDC__LOCK_WAITERS, 0, "%s: lock word %#x", what, rd_lock(s));
}

/* ---- peers killed inside a ring step ------------------------------------------------ */

struct ctl {
    _Atomic int phase;
    _Atomic uint32_t slot;     /* the slot the step was about */
    _Atomic uint64_t pos;      /* the ring position it claimed */
    _Atomic uint32_t me;       /* the dying peer's entry */
};

/* Wait until the child reaches `want`; fail the test if it exits first or
 * takes more than 10 s. */
static void await_phase(pid_t pid, struct ctl *x, int want, const char *what)
{
    int64_t end = th_now_ns() + 10 * SEC;
    while (atomic_load(&x->phase) < want) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            cr_assert_fail("%s: the child ended before phase %d: status %#x", what, want, st);
        if (th_now_ns() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("%s: the child never reached phase %d", what, want);
        }
        usleep(200);
    }
}

static void kill_child(pid_t pid)
{
    int st = 0;
    kill(pid, SIGKILL);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the child ended by itself: status %#x", st);
}

/* The stores of ndc__queue_try_commit, in its order; a sender is killed
 * after the one named. */
enum { CS_BUSY, CS_MARK, CS_TAIL, CS_SEQ, CS_READY, CS_CELL_SLOT, CS_PUBLISHED, CS_N };
static const char *const cs_name[CS_N] = {
    "busy raised", "COMMITTING marked", "tail claimed", "slot seq written", "READY stored",
    "cell slot stored", "cell published (busy not lowered)",
};

/* Commit `slot` by hand on this peer's own mapping, as try_commit does,
 * up to and including the store `stop`. \return 0 or a CK code. */
static int commit_by_hand(ndc_chan *h, uint32_t slot, int stop, struct ctl *x)
{
    struct ndc__ctrl *c = h->ctrl;
    struct ndc__slot *s = &h->slots[slot];
    uint64_t n = h->seg.g.nslots;
    atomic_fetch_add(&h->peers[h->me].busy, 1);
    CK(atomic_load(&c->gate) == 0, 60, "the gate is closed");
    if (stop == CS_BUSY)
        return 0;
    uint64_t w = NDC__WORD(NDC__RESERVED, h->me);
    CK(atomic_compare_exchange_strong(&s->state, &w, NDC__WORD(NDC__COMMITTING, h->me)), 61,
       "mark: state %#llx", (unsigned long long)w);
    if (stop == CS_MARK)
        return 0;
    uint64_t t = atomic_load(&c->tail);
    struct ndc__cell *cell = &h->cells[t % n];
    CK(!(t & NDC__TAIL_CLOSED) && atomic_load(&cell->seq) == t, 62, "tail %#llx, its cell's seq %llu",
       (unsigned long long)t, (unsigned long long)atomic_load(&cell->seq));
    CK(atomic_compare_exchange_strong(&c->tail, &t, t + 1), 63, "the tail moved");
    atomic_store(&x->pos, t);
    if (stop == CS_TAIL)
        return 0;
    s->seq = t;
    if (stop == CS_SEQ)
        return 0;
    atomic_store(&s->state, NDC__WORD(NDC__READY, 0));
    if (stop == CS_READY)
        return 0;
    atomic_store(&cell->slot, slot);
    if (stop == CS_CELL_SLOT)
        return 0;
    atomic_store(&cell->seq, t + 1);
    return 0;   /* CS_PUBLISHED: busy is never lowered */
}

struct karg { ndc_chan *ch; struct ctl *x; int stop; };

/* The stream's sender: sends tag 1, then dies inside the commit of tag 2. */
static int dying_sender(void *p)
{
    struct karg *g = p;
    die_with_parent();
    ndc_chan *h = NULL;
    CK(ndc_open_fd(&h, ndc_fd(g->ch), 0) == 0, 1, "attach");
    atomic_store(&g->x->me, h->me);
    int r;
    send_tag(h, 1, 5 * SEC, &r);
    CK(r == 0, 2, "send: %d (%s)", r, ndc_strerror(r));
    struct ndc_array a;
    tag_array(2, 64, &a, NULL);
    r = ndc_reserve(h, &a, 5 * SEC);
    CK(r == 0, 3, "reserve: %d (%s)", r, ndc_strerror(r));
    th_fill(a.data, ndc_array_nbytes(&a), 2);
    uint32_t slot = (uint32_t)(((unsigned char *)a.data - h->payload) / h->seg.g.slot_stride);
    write_header(&h->slots[slot], &a);
    atomic_store(&g->x->slot, slot);
    int code = commit_by_hand(h, slot, g->stop, g->x);
    if (code)
        return code;
    atomic_store(&g->x->phase, 1);
    for (;;)
        pause();   /* SIGKILLed here, inside the step */
    return 0;
}

#define LIVE_N 5   /* arrays a live sender sends after the death */

struct live_sender { ndc_chan *h; int rc[LIVE_N]; };

static void *send_after(void *p)
{
    struct live_sender *l = p;
    for (int i = 0; i < LIVE_N; i++)
        send_tag(l->h, 3 + (uint64_t)i, 2 * SEC, &l->rc[i]);
    return NULL;
}

/* A sender killed after store `stop` of its commit of tag 2 (tag 1 listed
 * before it, at position p0; tag 2's at p0 + 1, just past 2^32). `live`: a
 * second sender goes on with tags 3.. once it is dead; else the dead one
 * was the only sender and the receiver is told so once the stream is
 * drained. The receiver (this process) gets tag 1, tag 2 if it reached
 * READY, then the live sender's, in order, with consecutive seqs (a
 * commit that never reached READY leaves no gap), all within a second. */
static void sender_killed(int stop, int live)
{
    const uint32_t n = 3;
    char what[128];
    snprintf(what, sizeof what, "sender killed after \"%s\"%s", cs_name[stop], live ? ", a live sender goes on" : "");
    ndc_chan *ch = th_chan(n, 64);
    struct seg s;
    seg_map(&s, ch);
    uint64_t p0 = (1ull << 32) - 1 - (uint64_t)(stop % 3);
    ring_start(&s, p0);
    uint32_t rep0 = atomic_load(&s.c->repairs);
    struct ctl *x = th_shared(sizeof *x);
    struct karg g = { ch, x, stop };
    pid_t p = th_fork(dying_sender, &g);
    await_phase(p, x, 1, what);
    kill_child(p);
    int64_t t0 = th_now_ns();
    ndc_chan *h2 = NULL;
    struct live_sender ls;
    memset(&ls, 0, sizeof ls);
    pthread_t t;
    if (live) {
        th_ok(ndc_open_fd(&h2, ndc_fd(ch), 0));
        ls.h = h2;
        cr_assert_eq(pthread_create(&t, NULL, send_after, &ls), 0);
    }
    uint64_t want[2 + LIVE_N];
    int nwant = 0;
    want[nwant++] = 1;
    if (stop >= CS_READY)
        want[nwant++] = 2;
    for (int i = 0; live && i < LIVE_N; i++)
        want[nwant++] = 3 + (uint64_t)i;
    char msg[200];
    struct ndc_array a;
    for (int i = 0; i < nwant; i++) {
        int rc = ndc_acquire(ch, &a, 2 * SEC);
        cr_assert_eq(rc, 0, "%s: array %d (tag %llu): %d (%s) %s after %lld ms", what, i,
                     (unsigned long long)want[i], rc, ndc_strerror(rc), ndc_last_error(),
                     (long long)((th_now_ns() - t0) / MS));
        cr_assert_eq(a.tag, want[i], "%s: array %d has tag %llu, want %llu", what, i, (unsigned long long)a.tag,
                     (unsigned long long)want[i]);
        cr_assert_eq(tag_check(&a, 64, msg, sizeof msg), 0, "%s: %s", what, msg);
        cr_assert_eq(a.seq, p0 + (uint64_t)i, "%s: tag %llu has seq %#llx, want %#llx", what,
                     (unsigned long long)a.tag, (unsigned long long)a.seq, (unsigned long long)(p0 + (uint64_t)i));
        th_ok(ndc_release(ch, &a));
    }
    if (live) {
        pthread_join(t, NULL);
        for (int i = 0; i < LIVE_N; i++)
            cr_assert_eq(ls.rc[i], 0, "%s: the live sender's send %d: %d (%s)", what, i, ls.rc[i],
                         ndc_strerror(ls.rc[i]));
        th_expect(ndc_acquire(ch, &a, 0), -EAGAIN);   /* nothing twice */
    } else {
        int rc = ndc_acquire(ch, &a, 2 * SEC);
        cr_assert_eq(rc, -EOWNERDEAD, "%s: after the stream: %d (%s), tag %llu; want -EOWNERDEAD", what, rc,
                     ndc_strerror(rc), rc == 0 ? (unsigned long long)a.tag : 0ull);
    }
    int64_t dt = th_now_ns() - t0;
    cr_assert_lt(dt, SEC, "%s: the survivors took %lld ms", what, (long long)(dt / MS));
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.sent == p0 + (uint64_t)nwant && st.received == st.sent,
              "%s: sent %#llx received %#llx, want both %#llx (the commits that were made)", what,
              (unsigned long long)st.sent, (unsigned long long)st.received, (unsigned long long)(p0 + (uint64_t)nwant));
    if (stop >= CS_TAIL && stop < CS_PUBLISHED)
        cr_assert_gt(atomic_load(&s.c->repairs), rep0, "%s: the ring was never repaired", what);
    all_slots_usable(ch, &s, what);
    if (h2)
        ndc_free(h2);
    munmap(x, sizeof *x);
    seg_unmap(&s);
    ndc_free(ch);
}

Test(lock, sender_killed_inside_commit, .timeout = 90)
{
    for (int stop = 0; stop < CS_N; stop++)
        sender_killed(stop, 0);
}

Test(lock, sender_killed_inside_commit_while_another_sends, .timeout = 90)
{
    for (int stop = 0; stop < CS_N; stop++)
        sender_killed(stop, 1);
}

/* The stores of ndc__queue_try_take, in its order; a receiver is killed
 * after the one named. The last is not a prefix of the library's order
 * (it lets go of the cell before it marks the slot LOANED): a rebuild
 * must not depend on that order either. */
enum { RS_BUSY, RS_HEAD, RS_CELL, RS_LOANED, RS_LOANED_CELL_KEPT, RS_N };
static const char *const rs_name[RS_N] = {
    "busy raised", "head claimed", "cell let go", "LOANED (busy not lowered)",
    "head claimed and LOANED, cell never let go",
};

/* Take the array at the head by hand, as try_take does, up to `stop`. */
static int take_by_hand(ndc_chan *h, int stop, struct ctl *x)
{
    struct ndc__ctrl *c = h->ctrl;
    uint64_t n = h->seg.g.nslots;
    atomic_fetch_add(&h->peers[h->me].busy, 1);
    CK(atomic_load(&c->gate) == 0, 70, "the gate is closed");
    if (stop == RS_BUSY)
        return 0;
    uint64_t hd = atomic_load(&c->head);
    struct ndc__cell *cell = &h->cells[hd % n];
    CK(atomic_load(&cell->seq) == hd + 1, 71, "nothing listed at head %#llx", (unsigned long long)hd);
    uint32_t slot = atomic_load(&cell->slot);
    CK(slot < n, 72, "cell names slot %u", slot);
    CK(atomic_compare_exchange_strong(&c->head, &hd, hd + 1), 73, "the head moved");
    atomic_store(&x->slot, slot);
    atomic_store(&x->pos, hd);
    if (stop == RS_HEAD)
        return 0;
    if (stop != RS_LOANED_CELL_KEPT) {
        atomic_store(&cell->seq, hd + n);
        if (stop == RS_CELL)
            return 0;
    }
    uint64_t ready = NDC__WORD(NDC__READY, 0);
    CK(atomic_compare_exchange_strong(&h->slots[slot].state, &ready, NDC__WORD(NDC__LOANED, h->me)), 74,
       "slot %u state %#llx", slot, (unsigned long long)ready);
    return 0;
}

/* A receiver: takes tag 1 as usual, then dies inside its take of the next. */
static int dying_receiver(void *p)
{
    struct karg *g = p;
    die_with_parent();
    ndc_chan *h = NULL;
    CK(ndc_open_fd(&h, ndc_fd(g->ch), 0) == 0, 1, "attach");
    atomic_store(&g->x->me, h->me);
    struct ndc_array a;
    int r = ndc_acquire(h, &a, 5 * SEC);
    CK(r == 0 && a.tag == 1, 2, "acquire: %d (%s) tag %llu", r, ndc_strerror(r), (unsigned long long)a.tag);
    CK(ndc_release(h, &a) == 0, 3, "release");
    atomic_store(&g->x->phase, 1);
    int64_t end = th_now_ns() + 10 * SEC;
    while (atomic_load(&g->x->phase) < 2)
        if (th_now_ns() > end)
            return 4;
        else
            usleep(200);
    int code = take_by_hand(h, g->stop, g->x);
    if (code)
        return code;
    atomic_store(&g->x->phase, 3);
    for (;;)
        pause();
    return 0;
}

/* A receiver killed after store `stop` of its take of tag 2 (position
 * p0 + 1), with tag 2 alone in the ring or tags 3 and 4 listed behind it.
 * Tag 2 reaches a survivor exactly once unless the dead one had marked it
 * LOANED (then it was delivered to the dead, and never again). Alone, it
 * comes with the seq it was committed with. With more listed behind it,
 * a survivor may take those first: a position claimed by a receiver that
 * then died holds nobody back in a lock-free ring, and the repair lists
 * the array again only when a sweep finds the dead peer. */
static void receiver_killed(int stop, int queued)
{
    const uint32_t n = 3;
    char what[128];
    snprintf(what, sizeof what, "receiver killed after \"%s\"%s", rs_name[stop],
             queued ? ", two arrays listed behind" : "");
    ndc_chan *ch = th_chan(n, 64);
    struct seg s;
    seg_map(&s, ch);
    uint64_t p0 = (1ull << 32) - 2 + (uint64_t)(stop % 2);
    ring_start(&s, p0);
    uint32_t rep0 = atomic_load(&s.c->repairs);
    int rc;
    send_tag(ch, 1, 0, &rc);
    th_ok(rc);
    struct ctl *x = th_shared(sizeof *x);
    struct karg g = { ch, x, stop };
    pid_t p = th_fork(dying_receiver, &g);
    await_phase(p, x, 1, what);
    uint64_t last = queued ? 4 : 2;
    for (uint64_t t = 2; t <= last; t++) {
        send_tag(ch, t, 0, &rc);
        th_ok(rc);
    }
    atomic_store(&x->phase, 2);
    await_phase(p, x, 3, what);
    if (stop != RS_BUSY) {
        cr_assert_eq(atomic_load(&x->pos), p0 + 1);
        cr_assert_eq(s.slots[atomic_load(&x->slot)].tag, 2);
    }
    kill_child(p);
    int64_t t0 = th_now_ns();
    int taken_by_dead = stop == RS_LOANED || stop == RS_LOANED_CELL_KEPT;
    int nwant = (int)(last - 1) - taken_by_dead;
    int seen[5] = { 0 };
    uint64_t tags[4], seqs[4];
    char msg[200];
    struct ndc_array a;
    for (int i = 0; i < nwant; i++) {
        rc = ndc_acquire(ch, &a, 2 * SEC);
        cr_assert_eq(rc, 0, "%s: array %d of %d: %d (%s) %s after %lld ms", what, i + 1, nwant, rc,
                     ndc_strerror(rc), ndc_last_error(), (long long)((th_now_ns() - t0) / MS));
        cr_assert(a.tag >= 2 && a.tag <= last, "%s: tag %llu", what, (unsigned long long)a.tag);
        cr_assert_eq(tag_check(&a, 64, msg, sizeof msg), 0, "%s: %s", what, msg);
        cr_assert_eq(seen[a.tag]++, 0, "%s: tag %llu delivered twice", what, (unsigned long long)a.tag);
        cr_assert(!(taken_by_dead && a.tag == 2), "%s: tag 2 was LOANED to the dead receiver, yet delivered again",
                  what);
        tags[i] = a.tag;
        seqs[i] = a.seq;
        th_ok(ndc_release(ch, &a));
    }
    th_expect(ndc_acquire(ch, &a, 0), -EAGAIN);   /* nothing twice, nothing more */
    int64_t dt = th_now_ns() - t0;
    cr_assert_lt(dt, SEC, "%s: the survivor took %lld ms", what, (long long)(dt / MS));
    /* the arrays nobody claimed keep their order and their seqs */
    uint64_t prev = 0;
    for (int i = 0; i < nwant; i++) {
        if (tags[i] == 2 && stop != RS_BUSY)
            continue;
        cr_assert_gt(tags[i], prev, "%s: tag %llu after tag %llu", what, (unsigned long long)tags[i],
                     (unsigned long long)prev);
        prev = tags[i];
        cr_assert_eq(seqs[i], p0 + tags[i] - 1, "%s: tag %llu has seq %#llx, committed at %#llx", what,
                     (unsigned long long)tags[i], (unsigned long long)seqs[i],
                     (unsigned long long)(p0 + tags[i] - 1));
    }
    /* Seqs are unique, except that of an array taken again after a
     * survivor overtook it: the repair numbers it back from the head
     * (keeping ndc_stat's sent and ndc_wait_drained exact), below positions
     * already handed out, so it may repeat one of their seqs. */
    int overtaken = queued && (stop == RS_HEAD || stop == RS_CELL);
    for (int i = 0; i < nwant; i++)
        for (int j = 0; j < i; j++)
            cr_assert(seqs[i] != seqs[j] || (overtaken && (tags[i] == 2 || tags[j] == 2)),
                      "%s: tags %llu and %llu were both delivered with seq %#llx", what,
                      (unsigned long long)tags[j], (unsigned long long)tags[i], (unsigned long long)seqs[i]);
    if (!queued && !taken_by_dead)
        cr_assert(tags[0] == 2 && seqs[0] == p0 + 1, "%s: tag %llu seq %#llx, want tag 2 at %#llx", what,
                  (unsigned long long)tags[0], (unsigned long long)seqs[0], (unsigned long long)(p0 + 1));
    if (stop == RS_HEAD || stop == RS_CELL)
        cr_assert_gt(atomic_load(&s.c->repairs), rep0, "%s: listed again without a repair?", what);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, p0 + last, "%s: sent %#llx, %llu commits were made from %#llx", what,
                 (unsigned long long)st.sent, (unsigned long long)last, (unsigned long long)p0);
    cr_assert_eq(st.received, st.sent, "%s: received %#llx, sent %#llx, nothing left", what,
                 (unsigned long long)st.received, (unsigned long long)st.sent);
    all_slots_usable(ch, &s, what);
    munmap(x, sizeof *x);
    seg_unmap(&s);
    ndc_free(ch);
}

Test(lock, receiver_killed_inside_take, .timeout = 90)
{
    for (int stop = 0; stop < RS_N; stop++)
        receiver_killed(stop, 0);
}

Test(lock, receiver_killed_inside_take_with_arrays_behind, .timeout = 90)
{
    for (int stop = 0; stop < RS_N; stop++)
        receiver_killed(stop, 1);
}

/* ---- a dead holder of the repair lock ------------------------------------------------ */

static int attach_and_exit(void *p)
{
    ndc_chan *ch = p, *h = NULL;
    CK(ndc_open_fd(&h, ndc_fd(ch), 0) == 0, 1, "attach");
    _exit(50 + (int)h->me);   /* no ndc_free: the entry stays LIVE, its byte freed by death */
}

/* An attached process that exited without detaching: \return its lock
 * word (entry + 1). */
static uint32_t exited_attacher(ndc_chan *ch)
{
    pid_t z = th_fork(attach_and_exit, ch);
    int st = 0;
    waitpid(z, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) >= 50, "attacher status %#x", st);
    return (uint32_t)(WEXITSTATUS(st) - 50 + 1);
}

/* The repair lock's word names a holder that is gone (an exited process, a
 * zombie, an entry nobody holds) or nothing at all.
 *  - It died repairing, the gate closed: the next ring step (a commit, an
 *    acquire) finds the gate closed, takes the lock over and repairs, at
 *    once; one repair, the lock and the gate free afterwards.
 *  - The gate open: ring steps never need the lock; the word stays as it
 *    was through a round trip. The next sweep (a timed wait's sleep slice,
 *    with a dead peer to retire) takes it over. */
Test(lock, dead_holder_taken_over, .timeout = 60)
{
    for (size_t i = 0; i < 7; i++) {
        ndc_chan *ch = th_chan(2, 64);
        uint32_t word;
        char what[64];
        pid_t zombie = 0;
        if (i == 0) {
            word = exited_attacher(ch);
            snprintf(what, sizeof what, "exited holder, word %#x", word);
        } else if (i == 1) {
            pid_t z = th_fork(attach_and_exit, ch);
            for (int k = 0; k < 2000 && proc_state(z) != 'Z'; k++)
                usleep(1000);
            cr_assert_eq(proc_state(z), 'Z');
            siginfo_t si;
            waitid(P_PID, (id_t)z, &si, WEXITED | WNOWAIT);
            cr_assert(si.si_status >= 50, "attacher status %d", si.si_status);
            word = (uint32_t)(si.si_status - 50 + 1) | NDC__LOCK_WAITERS;
            snprintf(what, sizeof what, "zombie holder, word %#x", word);
            zombie = z;   /* reaped once the round trips are done */
        } else {
            const uint32_t words[] = { DEAD_HOLDER_WORD, DEAD_HOLDER_WORD | NDC__LOCK_WAITERS, 0x7fffffffu,
                                       NDC__LOCK_WAITERS, 0xffffffffu };
            word = words[i - 2];
            snprintf(what, sizeof what, "lock word %#x", word);
        }
        struct seg s;
        seg_map(&s, ch);
        /* died repairing: commit path */
        uint32_t rep0 = atomic_load(&s.c->repairs);
        atomic_store(&s.c->lock, word);
        atomic_store(&s.c->gate, 1);
        int64_t t0 = th_now_ns();
        roundtrip(ch, 7, what);
        int64_t dt = th_now_ns() - t0;
        cr_assert_lt(dt, 200 * MS, "%s: took %lld ms", what, (long long)(dt / MS));
        cr_assert_eq(rd_lock(&s), 0, "%s: lock word %#x afterwards", what, rd_lock(&s));
        cr_assert_eq(rd_gate(&s), 0, "%s: the gate stayed closed", what);
        cr_assert_eq(atomic_load(&s.c->repairs), rep0 + 1, "%s: %u repairs, want one", what,
                     atomic_load(&s.c->repairs) - rep0);
        /* died repairing: acquire path, an array listed */
        int rc;
        send_tag(ch, 8, 0, &rc);
        th_ok(rc);
        atomic_store(&s.c->lock, word);
        atomic_store(&s.c->gate, 1);
        struct ndc_array a;
        th_ok(ndc_acquire(ch, &a, 0));
        cr_assert_eq(a.tag, 8);
        th_ok(ndc_release(ch, &a));
        cr_assert(rd_lock(&s) == 0 && rd_gate(&s) == 0, "%s: lock %#x gate %u", what, rd_lock(&s), rd_gate(&s));
        cr_assert_eq(atomic_load(&s.c->repairs), rep0 + 2, "%s: %u repairs, want two", what,
                     atomic_load(&s.c->repairs) - rep0);
        /* the gate open: the hot path leaves the lock alone ... */
        atomic_store(&s.c->lock, word);
        t0 = th_now_ns();
        roundtrip(ch, 9, what);
        dt = th_now_ns() - t0;
        cr_assert_lt(dt, 200 * MS, "%s, gate open: took %lld ms", what, (long long)(dt / MS));
        cr_assert_eq(rd_lock(&s), word, "%s, gate open: a ring step touched the lock: %#x", what, rd_lock(&s));
        /* ... and a sweep takes it over */
        if (i >= 2)
            exited_attacher(ch);   /* a dead peer for the sweep to retire */
        rc = ndc_acquire(ch, &a, 150 * MS);
        cr_assert_eq(rc, -ETIMEDOUT, "%s: acquire on an empty channel: %d (%s)", what, rc, ndc_strerror(rc));
        cr_assert_eq(rd_lock(&s), 0, "%s: the sweep left lock word %#x", what, rd_lock(&s));
        cr_assert_eq(atomic_load(&s.c->repairs), rep0 + 3, "%s: %u repairs, want three", what,
                     atomic_load(&s.c->repairs) - rep0);
        struct ndc_stat st = th_stat(ch);
        cr_assert(st.free == 2 && st.loaned == 0 && st.ready == 0 && st.attached == 1,
                  "%s: free %u loaned %u ready %u attached %u", what, st.free, st.loaned, st.ready, st.attached);
        cr_assert(st.sent == 3 && st.received == 3, "%s: sent %llu received %llu", what,
                  (unsigned long long)st.sent, (unsigned long long)st.received);
        seg_unmap(&s);
        ndc_free(ch);
        if (zombie)
            waitpid(zombie, NULL, 0);
    }
}

/* How far a repairer got through its rebuild (queue.c, rebuild) before it
 * was killed: the gate closed; the READY slots renumbered; the cells
 * rewritten up to the one listing the renumbered array (which is then
 * listed twice); every cell and the head, not the tail. */
enum { HR_GATE, HR_SEQS, HR_CELLS, HR_HEAD, HR_N };
static const char *const hr_name[HR_N] = {
    "gate closed", "slots renumbered", "cells half rewritten (an array listed twice)", "all but the tail",
};

struct rarg { ndc_chan *ch; struct ctl *x; int stage; uint64_t p; };

/* A repairer: the real repair lock, the gate closed, part of a rebuild of
 * a ring with a gap at p + 2 (a claimed position never published) and tag
 * 3 listed at p + 3, whose slot is x->slot. */
static int dying_repairer(void *v)
{
    struct rarg *g = v;
    die_with_parent();
    ndc_chan *h = NULL;
    CK(ndc_open_fd(&h, ndc_fd(g->ch), 0) == 0, 1, "attach");
    struct ndc__deadline dl;
    ndc__deadline_init(&dl, SEC);
    CK(ndc__peer_lock(h, &dl) == 0, 2, "lock");
    atomic_store(&h->ctrl->gate, 1);
    uint64_t n = h->seg.g.nslots, p = g->p;
    uint32_t slot3 = atomic_load(&g->x->slot);
    if (g->stage >= HR_SEQS)
        h->slots[slot3].seq = p + 2;
    if (g->stage >= HR_CELLS) {
        atomic_store(&h->cells[(p + 2) % n].slot, slot3);
        atomic_store(&h->cells[(p + 2) % n].seq, p + 3);
    }
    if (g->stage >= HR_HEAD) {
        atomic_store(&h->cells[(p + 3) % n].seq, p + 3);
        atomic_store(&h->ctrl->head, p);
    }
    atomic_store(&g->x->phase, 1);
    for (;;)
        pause();
    return 0;
}

/* A repairer killed holding the repair lock, half way through a rebuild:
 * the next call that meets the closed gate (a commit or an acquire) takes
 * the lock over and rebuilds again from the slot states. Tags 1 to 3 come
 * once each, in order, with seqs that close the gap; the positions (near
 * 2^40) are kept; each slot is handed out once. */
Test(lock, repairer_killed_half_way, .timeout = 60)
{
    for (int stage = 0; stage < HR_N; stage++) {
        for (int send_first = 0; send_first < 2; send_first++) {
            char what[128];
            snprintf(what, sizeof what, "repairer killed after \"%s\", %s first", hr_name[stage],
                     send_first ? "a send" : "an acquire");
            ndc_chan *ch = th_chan(4, 64);
            struct seg s;
            seg_map(&s, ch);
            const uint64_t p = (1ull << 40) - 2;
            ring_start(&s, p);
            int rc;
            for (uint64_t t = 1; t <= 2; t++) {
                send_tag(ch, t, 0, &rc);
                th_ok(rc);
            }
            atomic_fetch_add(&s.c->tail, 1);   /* p + 2: claimed by a sender that died */
            send_tag(ch, 3, 0, &rc);
            th_ok(rc);
            int slot3 = -1;
            for (uint32_t i = 0; i < s.g.nslots; i++)
                if (NDC__STATE(atomic_load(&s.slots[i].state)) == NDC__READY && s.slots[i].tag == 3)
                    slot3 = (int)i;
            cr_assert(slot3 >= 0 && s.slots[slot3].seq == p + 3);
            uint32_t rep0 = atomic_load(&s.c->repairs);
            struct ctl *x = th_shared(sizeof *x);
            atomic_store(&x->slot, (uint32_t)slot3);
            struct rarg g = { ch, x, stage, p };
            pid_t k = th_fork(dying_repairer, &g);
            await_phase(k, x, 1, what);
            kill_child(k);
            int64_t t0 = th_now_ns();
            uint64_t last = 3;
            if (send_first) {
                send_tag(ch, 4, 0, &rc);
                cr_assert_eq(rc, 0, "%s: send: %d (%s) %s", what, rc, ndc_strerror(rc), ndc_last_error());
                last = 4;
            }
            char msg[200];
            for (uint64_t t = 1; t <= last; t++) {
                struct ndc_array a;
                rc = ndc_acquire(ch, &a, 0);
                cr_assert_eq(rc, 0, "%s: acquire of tag %llu: %d (%s) %s", what, (unsigned long long)t, rc,
                             ndc_strerror(rc), ndc_last_error());
                cr_assert_eq(a.tag, t, "%s: tag %llu, want %llu", what, (unsigned long long)a.tag,
                             (unsigned long long)t);
                cr_assert_eq(a.seq, p + t - 1, "%s: tag %llu has seq %#llx, want %#llx", what,
                             (unsigned long long)t, (unsigned long long)a.seq, (unsigned long long)(p + t - 1));
                cr_assert_eq(tag_check(&a, 64, msg, sizeof msg), 0, "%s: %s", what, msg);
                th_ok(ndc_release(ch, &a));
            }
            struct ndc_array a;
            th_expect(ndc_acquire(ch, &a, 0), -EAGAIN);
            int64_t dt = th_now_ns() - t0;
            cr_assert_lt(dt, 200 * MS, "%s: took %lld ms", what, (long long)(dt / MS));
            cr_assert_eq(atomic_load(&s.c->repairs), rep0 + 1, "%s: %u repairs, want one", what,
                         atomic_load(&s.c->repairs) - rep0);
            struct ndc_stat st = th_stat(ch);
            cr_assert(st.sent == p + last && st.received == p + last, "%s: sent %#llx received %#llx, want %#llx",
                      what, (unsigned long long)st.sent, (unsigned long long)st.received,
                      (unsigned long long)(p + last));
            all_slots_usable(ch, &s, what);
            munmap(x, sizeof *x);
            seg_unmap(&s);
            ndc_free(ch);
        }
    }
}

/* ---- a live holder that never lets go --------------------------------------------- */

struct holder_info { _Atomic int32_t idx; };

/* A process attached to ch that does nothing: its entry index (its lock
 * word is index + 1) is published in *info. */
static int attach_and_pause(void *p)
{
    void **a = p;
    ndc_chan *ch = a[0], *h = NULL;
    struct holder_info *info = a[1];
    die_with_parent();
    CK(ndc_open_fd(&h, ndc_fd(ch), 0) == 0, 1, "attach");
    atomic_store(&info->idx, (int32_t)h->me);
    for (;;)
        pause();
    return 0;
}

static pid_t live_holder(ndc_chan *ch, uint32_t *word)
{
    struct holder_info *info = th_shared(sizeof *info);
    atomic_store(&info->idx, -1);
    void *a[2] = { ch, info };
    pid_t p = th_fork(attach_and_pause, a);
    int64_t end = th_now_ns() + 10 * SEC;
    while (atomic_load(&info->idx) < 0 && th_now_ns() < end)
        usleep(200);
    cr_assert_geq(atomic_load(&info->idx), 0, "the holder never attached");
    *word = (uint32_t)atomic_load(&info->idx) + 1;
    munmap(info, sizeof *info);
    return p;
}

#define TIMED(var, call) do { int64_t t0_ = th_now_ns(); var = (call); dt = th_now_ns() - t0_; } while (0)

/* A call that must not wait: each of three tries returns `want`, and the
 * fastest takes under 50 ms (on a busy machine any one may be preempted;
 * one that waited for the holder would wait every time). */
#define QUICK(what, want, call, undo) do {                                                          \
        int64_t best_ = INT64_MAX;                                                                 \
        for (int k_ = 0; k_ < 3; k_++) {                                                           \
            int64_t t0_ = th_now_ns();                                                             \
            int rc_ = (call);                                                                      \
            int64_t d_ = th_now_ns() - t0_;                                                        \
            cr_assert_eq(rc_, (want), "%s = %d (%s), want %d", what, rc_, ndc_strerror(rc_), (want)); \
            undo;                                                                                  \
            best_ = d_ < best_ ? d_ : best_;                                                       \
        }                                                                                          \
        cr_assert_lt(best_, 50 * MS, "%s took %lld ms at best", what, (long long)(best_ / MS));     \
    } while (0)

struct later { pid_t pid; int sig; int64_t after_ns; };
static void *signal_later(void *p)
{
    struct later *l = p;
    struct timespec ts = { (time_t)(l->after_ns / SEC), (long)(l->after_ns % SEC) };
    nanosleep(&ts, NULL);
    kill(l->pid, l->sig);
    return NULL;
}

/* The repair lock's word names a live process that never lets go, and the
 * gate is closed (a repairer stopped half way, say). Taking a free slot
 * and giving one back need neither; every ring step does: a step with a
 * timeout gives up within it (ndc_send drops its array, the slot comes
 * back), a join that must retire a dead entry gives up after its second;
 * ndc_stat, ndc_close and ndc_free never wait; ndc_commit and a blocking
 * acquire wait as long as the holder lives, never take the lock or open
 * the gate behind its back, and go on the moment it is gone. */
Test(lock, live_holder_never_lets_go, .timeout = 60)
{
    ndc_chan *ch = th_chan(4, 64);
    struct seg s;
    seg_map(&s, ch);
    int rc;
    for (uint64_t t = 1; t <= 2; t++) {
        send_tag(ch, t, 0, &rc);
        th_ok(rc);
    }
    struct ndc_array loan, res;
    th_ok(ndc_acquire(ch, &loan, 0));
    tag_array(5, 64, &res, NULL);
    th_ok(ndc_reserve(ch, &res, 0));
    ndc_chan *h2 = NULL;
    th_ok(ndc_open_fd(&h2, ndc_fd(ch), 0));
    uint32_t hw;
    pid_t holder = live_holder(ch, &hw);
    const uint32_t words[] = { hw, hw | NDC__LOCK_WAITERS };
    int64_t dt, worst = 0;
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        atomic_store(&s.c->lock, words[w]);
        atomic_store(&s.c->gate, 1);
        struct ndc_array a;
        unsigned char buf[64];
        /* a free slot, found by its state, and given back */
        tag_array(9, 64, &a, NULL);
        QUICK("reserve(0)", 0, ndc_reserve(ch, &a, 0), th_ok(ndc_cancel(ch, &a)));
        /* ring steps */
        QUICK("acquire(0)", -EAGAIN, ndc_acquire(ch, &a, 0), (void)0);
        int64_t tmo = 50 * MS;
        TIMED(rc, ndc_acquire(ch, &a, tmo));
        cr_assert(rc == -ETIMEDOUT && dt >= tmo && dt < tmo + 150 * MS, "acquire(50 ms) = %d (%s) in %lld ms",
                  rc, ndc_strerror(rc), (long long)(dt / MS));
        worst = dt > worst ? dt : worst;
        tag_array(9, 64, &a, buf);
        th_fill(buf, ndc_array_nbytes(&a), 9);
        TIMED(rc, ndc_send(ch, &a, tmo));
        cr_assert(rc == -ETIMEDOUT && dt >= tmo && dt < tmo + 150 * MS, "send(50 ms) = %d (%s) in %lld ms", rc,
                  ndc_strerror(rc), (long long)(dt / MS));
        worst = dt > worst ? dt : worst;
        QUICK("send(0)", -EAGAIN, ndc_send(ch, &a, 0), (void)0);
        a.data = buf;
        TIMED(rc, ndc_recv(ch, &a, sizeof buf, tmo));
        cr_assert(rc == -ETIMEDOUT && dt < tmo + 150 * MS, "recv(50 ms) = %d (%s) in %lld ms", rc,
                  ndc_strerror(rc), (long long)(dt / MS));
        struct ndc_stat st;
        QUICK("stat", 0, ndc_stat(ch, &st), (void)0);
        cr_assert(st.free == 1 && st.ready == 1 && st.loaned == 2,
                  "free %u ready %u loaned %u: the dropped sends gave their slots back", st.free, st.ready,
                  st.loaned);
        /* a join that must retire an entry left behind: every free entry
         * looks left by a process that is gone */
        uint32_t marked[NDC_MAX_PEERS], nm = 0;
        for (uint32_t i = 0; i < s.g.max_peers; i++) {
            uint32_t unused = NDC__PEER_UNUSED;
            if (atomic_compare_exchange_strong(&s.peers[i].state, &unused, NDC__PEER_GONE))
                marked[nm++] = i;
        }
        ndc_chan *h3 = NULL;
        TIMED(rc, ndc_open_fd(&h3, ndc_fd(ch), 0));
        for (uint32_t i = 0; i < nm; i++)
            atomic_store(&s.peers[marked[i]].state, NDC__PEER_UNUSED);
        cr_assert(rc == -ETIMEDOUT && dt >= SEC - 50 * MS && dt < SEC + 300 * MS,
                  "open_fd needing the lock = %d (%s) in %lld ms", rc, ndc_strerror(rc), (long long)(dt / MS));
        cr_assert_eq(rd_lock(&s) & ~NDC__LOCK_WAITERS, words[w] & ~NDC__LOCK_WAITERS,
                     "the lock word changed under a live holder: %#x", rd_lock(&s));
        cr_assert_eq(rd_gate(&s), 1, "the gate was opened behind the live repairer's back");
    }
    int64_t t0 = th_now_ns();
    ndc_free(h2);
    dt = th_now_ns() - t0;
    cr_assert_lt(dt, 100 * MS, "ndc_free took %lld ms with the lock stuck", (long long)(dt / MS));
    /* giving back a loan needs no lock */
    TIMED(rc, ndc_release(ch, &loan));
    cr_assert(rc == 0 && dt < 100 * MS, "release under a live holder: %d (%s) in %lld ms", rc, ndc_strerror(rc),
              (long long)(dt / MS));
    /* a blocking acquire waits for the live holder, and goes on once it died */
    struct later l = { holder, SIGKILL, 300 * MS };
    pthread_t t;
    pthread_create(&t, NULL, signal_later, &l);
    struct ndc_array a;
    TIMED(rc, ndc_acquire(ch, &a, NDC_FOREVER));
    pthread_join(t, NULL);
    waitpid(holder, NULL, 0);
    cr_assert_eq(rc, 0, "acquire under a live holder: %d (%s)", rc, ndc_strerror(rc));
    cr_assert_eq(a.tag, 2);
    th_ok(ndc_release(ch, &a));
    cr_assert(dt >= 250 * MS && dt < 800 * MS, "acquire returned after %lld ms; the holder lived 300 ms",
              (long long)(dt / MS));
    cr_assert(rd_lock(&s) == 0 && rd_gate(&s) == 0, "lock %#x gate %u", rd_lock(&s), rd_gate(&s));
    /* commit likewise, under a second holder stopped for longer than any
     * grace period, after a close */
    holder = live_holder(ch, &hw);
    atomic_store(&s.c->lock, hw);
    atomic_store(&s.c->gate, 1);
    t0 = th_now_ns();
    th_ok(ndc_close(ch));
    dt = th_now_ns() - t0;
    cr_assert_lt(dt, 100 * MS, "ndc_close took %lld ms", (long long)(dt / MS));
    kill(holder, SIGSTOP);
    l = (struct later){ holder, SIGKILL, 2500 * MS };
    pthread_create(&t, NULL, signal_later, &l);
    TIMED(rc, ndc_commit(ch, &res));
    pthread_join(t, NULL);
    waitpid(holder, NULL, 0);
    cr_assert_eq(rc, -EPIPE, "commit after the close: %d (%s)", rc, ndc_strerror(rc));
    cr_assert(dt >= 2400 * MS && dt < 2500 * MS + 500 * MS,
              "commit returned after %lld ms; the holder lived 2500 ms", (long long)(dt / MS));
    cr_assert(rd_lock(&s) == 0 && rd_gate(&s) == 0, "lock %#x gate %u", rd_lock(&s), rd_gate(&s));
    fprintf(stderr, "[stuck lock] timed calls overshoot at most %.1f ms past a 50 ms timeout; a blocking "
            "acquire and ndc_commit waited for the live holder and went on once it died\n",
            (worst - 50 * MS) / 1e6);
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.free == 4 && st.ready == 0 && st.loaned == 0, "end: free %u ready %u loaned %u", st.free,
              st.ready, st.loaned);
    seg_unmap(&s);
    t0 = th_now_ns();
    ndc_free(ch);
    cr_assert_lt(th_now_ns() - t0, 100 * MS);
}

/* ---- the ready ring's positions ---------------------------------------------------- */

/* Positions count up for ever in 64 bits, and cell p % nslots serves p:
 * with 3 slots (not a power of two) a position that wrapped at 2^32, or
 * was cut to 32 bits anywhere, would pick the wrong cell and deliver out
 * of order or hang. Rings started just below 2^32, 2^40 and above 2^52 go
 * round many laps with one to three arrays in flight; seq is the
 * position; a repair now and then (a dead repairer's closed gate) keeps
 * the positions as they are. */
Test(queue, ring_positions_beyond_2_32_keep_order, .timeout = 60)
{
    const uint64_t starts[] = { (1ull << 32) - 4, (1ull << 40) - 5, (1ull << 52) + 1 };
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        const uint64_t p = starts[k];
        ndc_chan *ch = th_chan(3, 64);
        struct seg s;
        seg_map(&s, ch);
        ring_start(&s, p);
        uint32_t rep0 = atomic_load(&s.c->repairs), forced = 0;
        uint64_t want = 0;
        for (int lap = 0; lap < 3000; lap++) {
            int n = 1 + lap % 3;
            for (int j = 0; j < n; j++) {
                struct ndc_array a = {.dtype = NDC_U8, .ndim = 1, .shape = {8}, .tag = want + (uint64_t)j};
                th_ok(ndc_reserve(ch, &a, 0));
                th_ok(ndc_commit(ch, &a));
            }
            if (lap % 500 == 499) {
                atomic_store(&s.c->lock, DEAD_HOLDER_WORD);
                atomic_store(&s.c->gate, 1);
                forced++;
            }
            for (int j = 0; j < n; j++, want++) {
                struct ndc_array a;
                th_ok(ndc_acquire(ch, &a, 0));
                cr_assert_eq(a.tag, want, "start %#llx lap %d: tag %llu, want %llu", (unsigned long long)p, lap,
                             (unsigned long long)a.tag, (unsigned long long)want);
                cr_assert_eq(a.seq, p + want, "start %#llx lap %d: seq %#llx, want %#llx", (unsigned long long)p,
                             lap, (unsigned long long)a.seq, (unsigned long long)(p + want));
                th_ok(ndc_release(ch, &a));
            }
            cr_assert(atomic_load(&s.c->head) == p + want && atomic_load(&s.c->tail) == p + want,
                      "start %#llx lap %d: head %#llx tail %#llx, want %#llx", (unsigned long long)p, lap,
                      (unsigned long long)atomic_load(&s.c->head), (unsigned long long)atomic_load(&s.c->tail),
                      (unsigned long long)(p + want));
        }
        cr_assert_eq(atomic_load(&s.c->repairs), rep0 + forced, "start %#llx: %u repairs, %u forced",
                     (unsigned long long)p, atomic_load(&s.c->repairs) - rep0, forced);
        struct ndc_stat st = th_stat(ch);
        cr_assert(st.sent == p + want && st.received == p + want && st.free == 3, "start %#llx: sent %#llx "
                  "received %#llx free %u", (unsigned long long)p, (unsigned long long)st.sent,
                  (unsigned long long)st.received, st.free);
        seg_unmap(&s);
        ndc_free(ch);
    }
}
