/*
 * Kill rounds: senders and receivers SIGKILLed at every moment of their
 * calls, round after round on fresh channels, and every invariant checked
 * after each kill (suite kill).
 *
 * What a receiver sees when a peer dies (checked by the kill rounds below,
 * round by round, from the phase the victim had published when it died):
 *
 *   sender killed before its commit (inside ndc_reserve, or between
 *   ndc_reserve and ndc_commit): the array is never seen by any receiver;
 *   the RESERVED slot is returned to the free pool by the next sweep (any
 *   process that sleeps in a wait notices within one 40 ms slice) and reused.
 *
 *   sender killed inside ndc_commit / ndc_send: the array is delivered at
 *   most once, complete, or not at all; never a torn one.
 *
 *   sender killed after its commit returned: the array is delivered exactly
 *   once, like any other.
 *
 *   receiver killed while holding loans: the slots go back to the free pool;
 *   the arrays it held are lost (never delivered again). Killed inside
 *   ndc_acquire / ndc_recv: at most the one array being taken is lost.
 *
 *   every sender dead and the channel empty: a waiting receiver gets
 *   -EOWNERDEAD (measured: test_detect.c). Every receiver dead and no slot
 *   free: a waiting sender gets -EOWNERDEAD.
 *
 * With -DFAULTS_SOAK=1 (the soak_kill program, meson test --suite soak):
 * ten times the rounds and the timeouts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "faults_helpers.h"

/* ---- kill rounds ------------------------------------------------------------ */

enum { PH_START = 0, PH_IDLE, PH_IN_RESERVE, PH_RESERVED, PH_IN_COMMIT, PH_IN_SEND,
       PH_IN_ACQUIRE, PH_IN_ACQUIRE2, PH_HOLDING, PH_RELEASING, PH_IN_RECV, PH_DONE, PH_N };
static const char *const ph_name[PH_N] = {
    "start", "idle", "in ndc_reserve", "between reserve and commit", "in ndc_commit",
    "in ndc_send", "in ndc_acquire", "in a 2nd ndc_acquire", "holding loans", "releasing",
    "in ndc_recv", "done" };

#define KMAXC 4          /* children per round */
#define KMAX  16384      /* arrays per sender per round */
#define CALL_TMO (5 * SEC)

struct kchild {
    _Atomic int phase;
    _Atomic int dwell;          /* stop in this phase until killed (0: never) */
    _Atomic int calls;          /* calls begun */
    _Atomic uint64_t inflight;  /* the tag being sent, or last taken */
    _Atomic uint64_t committed; /* sender: commits that returned 0 */
    _Atomic uint64_t taken;     /* receiver: arrays received */
    _Atomic int ended, end_rc;  /* how the loop ended */
    char err[200];
};

struct kshared {
    _Atomic int stop, pause_send, pause_recv;
    struct kchild c[KMAXC];
    _Atomic uint8_t seen[2][KMAX];   /* deliveries per (sender, counter) */
    _Atomic int bad;                  /* torn or unknown arrays seen */
    char bad_msg[200];
};

struct karg {
    ndc_chan *ch;
    struct kshared *sh;
    int idx, sid;                     /* child index; sender id (0, 1) */
    uint64_t slot_bytes;
};

static void k_dwell(struct kchild *me, int ph)
{
    if (atomic_load(&me->dwell) != ph)
        return;
    int64_t end = th_now_ns() + 10 * SEC;   /* the parent kills us long before */
    while (th_now_ns() < end)
        usleep(100);
}

static void k_bad(struct kshared *sh, const char *msg)
{
    if (atomic_fetch_add(&sh->bad, 1) == 0)
        snprintf(sh->bad_msg, sizeof sh->bad_msg, "%s", msg);
}

static void k_record(struct kshared *sh, const struct ndc_array *a, uint64_t slot_bytes)
{
    uint64_t s = (a->tag >> 32) - 1, k = a->tag & 0xffffffffu;
    char msg[200];
    if (s > 1 || k >= KMAX) {
        snprintf(msg, sizeof msg, "unknown tag %#llx", (unsigned long long)a->tag);
        k_bad(sh, msg);
        return;
    }
    atomic_fetch_add(&sh->seen[s][k], 1);
    if (tag_check(a, slot_bytes, msg, sizeof msg))
        k_bad(sh, msg);
}

static int k_sender(void *p)
{
    struct karg *k = p;
    struct kchild *me = &k->sh->c[k->idx];
    die_with_parent();
    unsigned char *buf = malloc(k->slot_bytes + 1);
    CK(buf, 41, "malloc");
    int r = 0;
    for (uint64_t i = 0; i < KMAX; i++) {
        while (atomic_load(&k->sh->pause_send) && !atomic_load(&k->sh->stop))
            usleep(200);
        if (atomic_load(&k->sh->stop))
            break;
        uint64_t tag = ((uint64_t)(k->sid + 1) << 32) | i;
        struct ndc_array a;
        atomic_store(&me->inflight, tag);
        atomic_fetch_add(&me->calls, 1);
        if (atomic_load(&me->dwell) == PH_RESERVED || (th_mix(tag) >> 63)) {
            tag_array(tag, k->slot_bytes, &a, NULL);
            atomic_store(&me->phase, PH_IN_RESERVE);
            r = ndc_reserve(k->ch, &a, CALL_TMO);
            if (r)
                break;
            atomic_store(&me->phase, PH_RESERVED);
            k_dwell(me, PH_RESERVED);
            th_fill(a.data, ndc_array_nbytes(&a), tag);
            atomic_store(&me->phase, PH_IN_COMMIT);
            r = ndc_commit(k->ch, &a);
            CK(r == 0, 42, "commit: %s", ndc_strerror(r));
        } else {
            tag_array(tag, k->slot_bytes, &a, buf);
            th_fill(buf, ndc_array_nbytes(&a), tag);
            atomic_store(&me->phase, PH_IN_SEND);
            r = ndc_send(k->ch, &a, CALL_TMO);
            if (r)
                break;
        }
        atomic_store(&me->committed, i + 1);
        atomic_store(&me->phase, PH_IDLE);
    }
    atomic_store(&me->phase, PH_DONE);
    atomic_store(&me->end_rc, r);
    atomic_store(&me->ended, 1);
    if (r != 0 && r != -EOWNERDEAD) {
        snprintf(me->err, sizeof me->err, "sender %d: %s (%s)", k->sid, ndc_strerror(r), ndc_last_error());
        fprintf(stderr, "%s\n", me->err);
        return 103;
    }
    while (!atomic_load(&k->sh->stop))   /* KMAX reached, or -EOWNERDEAD: stay attached */
        usleep(500);
    ndc_free(k->ch);
    free(buf);
    return 0;
}

static int k_receiver(void *p)
{
    struct karg *k = p;
    struct kchild *me = &k->sh->c[k->idx];
    die_with_parent();
    unsigned char *buf = malloc(k->slot_bytes + 1);
    CK(buf, 51, "malloc");
    int r = 0;
    for (uint64_t n = 0;; n++) {
        while (atomic_load(&k->sh->pause_recv) && !atomic_load(&k->sh->stop))
            usleep(200);
        uint64_t h = th_mix(n ^ ((uint64_t)k->idx << 40) ^ (uint64_t)getpid());
        int mode = atomic_load(&me->dwell) == PH_HOLDING ? 1 : (int)(h % 3);
        struct ndc_array a, b;
        atomic_fetch_add(&me->calls, 1);
        if (mode == 2) {
            a.data = buf;
            atomic_store(&me->phase, PH_IN_RECV);
            r = ndc_recv(k->ch, &a, k->slot_bytes, CALL_TMO);
            if (r)
                break;
            atomic_store(&me->inflight, a.tag);
            k_record(k->sh, &a, k->slot_bytes);
            atomic_fetch_add(&me->taken, 1);
            atomic_store(&me->phase, PH_IDLE);
            continue;
        }
        atomic_store(&me->phase, PH_IN_ACQUIRE);
        r = ndc_acquire(k->ch, &a, CALL_TMO);
        if (r)
            break;
        atomic_store(&me->inflight, a.tag);
        k_record(k->sh, &a, k->slot_bytes);
        atomic_fetch_add(&me->taken, 1);
        int two = 0;
        if (mode == 1) {
            /* a second loan if one is there: a process may hold several */
            atomic_store(&me->phase, PH_IN_ACQUIRE2);
            int r2 = ndc_acquire(k->ch, &b, 0);
            CK(r2 == 0 || r2 == -EAGAIN || r2 == -EOWNERDEAD, 52, "2nd acquire: %d (%s)", r2,
               ndc_strerror(r2));
            if (r2 == 0) {
                two = 1;
                k_record(k->sh, &b, k->slot_bytes);
                atomic_fetch_add(&me->taken, 1);
            }
        }
        atomic_store(&me->phase, PH_HOLDING);
        k_dwell(me, PH_HOLDING);
        if ((h >> 8) % 4 == 0)
            usleep((useconds_t)((h >> 16) % 300));   /* a slow receiver now and then */
        atomic_store(&me->phase, PH_RELEASING);
        if (two && (h >> 30) % 2) {
            CK(ndc_release(k->ch, &b) == 0, 53, "release b");
            two = 0;
        }
        CK(ndc_release(k->ch, &a) == 0, 54, "release a");
        if (two)
            CK(ndc_release(k->ch, &b) == 0, 55, "release b");
        atomic_store(&me->phase, PH_IDLE);
    }
    atomic_store(&me->phase, PH_DONE);
    atomic_store(&me->end_rc, r);
    atomic_store(&me->ended, 1);
    free(buf);
    if (r != -EOWNERDEAD) {
        snprintf(me->err, sizeof me->err, "receiver %d: %s (%s)", k->idx, ndc_strerror(r), ndc_last_error());
        fprintf(stderr, "%s\n", me->err);
        return 116;
    }
    ndc_free(k->ch);
    return 0;
}

enum { T_RESERVED, T_HOLDING, T_ASLEEP_FULL, T_ASLEEP_EMPTY, T_RANDOM, T_N };
static const char *const t_name[T_N] = { "sender between reserve and commit", "receiver holding loans",
                                         "sender asleep on a full channel",
                                         "receiver asleep on an empty channel", "anyone at a random moment" };

struct ktally {
    int rounds, at_phase[PH_N], lost, lazy, all_senders_dead, all_receivers_dead;
    int64_t round_ns_max;
};

/* Wait until pred(sh, arg) holds, up to ms; 0 or -1. */
static int k_wait(int (*pred)(struct kshared *, int), struct kshared *sh, int arg, int ms)
{
    int64_t end = th_now_ns() + (int64_t)ms * MS;
    while (!pred(sh, arg)) {
        if (th_now_ns() > end)
            return -1;
        usleep(100);
    }
    return 0;
}

static int all_started(struct kshared *sh, int n)
{
    for (int i = 0; i < n; i++)
        if (atomic_load(&sh->c[i].calls) < 2 && !atomic_load(&sh->c[i].ended))
            return 0;
    return 1;
}
static int in_phase(struct kshared *sh, int v)
{
    return atomic_load(&sh->c[v].phase) == atomic_load(&sh->c[v].dwell);
}

static pid_t k_pids[KMAXC];
static int asleep_in(struct kshared *sh, int v)
{
    int ph = atomic_load(&sh->c[v].phase);
    int waiting = ph == PH_IN_RESERVE || ph == PH_IN_SEND || ph == PH_IN_ACQUIRE || ph == PH_IN_RECV;
    return waiting && proc_state(k_pids[v]) == 'S';
}

static uint64_t k_sum(struct kshared *sh, int from, int to, int taken)
{
    uint64_t s = 0;
    for (int i = from; i < to; i++)
        s += taken ? atomic_load(&sh->c[i].taken) : atomic_load(&sh->c[i].committed);
    return s;
}

/* One round: senders [0, ns), receivers [ns, ns + nr) on a fresh channel;
 * one victim is SIGKILLed; then every invariant is checked. */
static void kill_round(uint64_t seed, int target, struct ktally *t)
{
    int64_t t0 = th_now_ns();
    uint64_t rs = seed;
    int ns = 1 + (int)(rnd(&rs) % 2), nr = 1 + (int)(rnd(&rs) % 2);
    uint32_t slots = 1 + (uint32_t)(rnd(&rs) % 4);
    static const uint64_t sizes[] = { 64, 1024, 4096, 16384 };
    uint64_t slot_bytes = sizes[rnd(&rs) % 4];
    int victim;
    switch (target) {
    case T_RESERVED: case T_ASLEEP_FULL: victim = (int)(rnd(&rs) % (uint64_t)ns); break;
    case T_HOLDING: case T_ASLEEP_EMPTY: victim = ns + (int)(rnd(&rs) % (uint64_t)nr); break;
    default: victim = (int)(rnd(&rs) % (uint64_t)(ns + nr)); break;
    }
    int victim_sends = victim < ns;
    char what[160];
    snprintf(what, sizeof what, "round seed %#llx (%d senders, %d receivers, %u slots of %llu B, victim %s %d, %s)",
             (unsigned long long)seed, ns, nr, slots, (unsigned long long)slot_bytes,
             victim_sends ? "sender" : "receiver", victim, t_name[target]);

    ndc_chan *ch = th_chan(slots, slot_bytes);
    static struct kshared *sh;
    if (!sh)
        sh = th_shared(sizeof *sh);
    memset(sh, 0, sizeof *sh);
    struct karg args[KMAXC];
    for (int i = 0; i < ns + nr; i++) {
        args[i] = (struct karg){ ch, sh, i, i < ns ? i : -1, slot_bytes };
        k_pids[i] = th_fork(i < ns ? k_sender : k_receiver, &args[i]);
        cr_assert_gt(k_pids[i], 0);
    }
    /* every child has joined and published its role (its first call returned) */
    int ok = k_wait(all_started, sh, ns + nr, 10000);
    for (int i = 0; i < ns + nr; i++)
        cr_assert(!atomic_load(&sh->c[i].ended), "%s: child %d ended early: %s", what, i, sh->c[i].err);
    cr_assert_eq(ok, 0, "%s: children did not start", what);
    switch (target) {
    case T_RESERVED:
        atomic_store(&sh->c[victim].dwell, PH_RESERVED);
        ok = k_wait(in_phase, sh, victim, 10000);
        break;
    case T_HOLDING:
        atomic_store(&sh->c[victim].dwell, PH_HOLDING);
        ok = k_wait(in_phase, sh, victim, 10000);
        break;
    case T_ASLEEP_FULL: case T_ASLEEP_EMPTY:
        /* the other side pauses; the victim ends up asleep in the kernel */
        atomic_store(target == T_ASLEEP_FULL ? &sh->pause_recv : &sh->pause_send, 1);
        for (int64_t end = th_now_ns() + 10 * SEC;;) {
            ok = k_wait(asleep_in, sh, victim, 10000);
            usleep(2000);
            if (ok || asleep_in(sh, victim) || th_now_ns() > end)
                break;
        }
        ok |= !asleep_in(sh, victim);
        break;
    default:
        usleep((useconds_t)(rnd(&rs) % 3000));
        break;
    }
    kill(k_pids[victim], SIGKILL);
    int vst;
    cr_assert_eq(waitpid(k_pids[victim], &vst, 0), k_pids[victim]);
    int vph = atomic_load(&sh->c[victim].phase);
    uint64_t vtag = atomic_load(&sh->c[victim].inflight);
    atomic_store(&sh->pause_recv, 0);
    atomic_store(&sh->pause_send, 0);
    cr_assert(WIFSIGNALED(vst) && WTERMSIG(vst) == SIGKILL, "%s: the victim ended by itself (status %#x): %s",
              what, vst, sh->c[victim].err);
    cr_assert_eq(ok, 0, "%s: the victim never reached the phase to kill it in (phase %s)", what,
                 ph_name[vph]);
    t->at_phase[vph]++;

    /* stat adds up right after the kill */
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.free + st.ready + st.loaned, slots, "%s: stat %u+%u+%u != %u", what, st.free, st.ready,
                 st.loaned, slots);

    int senders_left = ns - victim_sends, receivers_left = nr - !victim_sends;
    if (senders_left && receivers_left) {
        /* the survivors make progress */
        uint64_t c0 = k_sum(sh, 0, ns, 0), r0 = k_sum(sh, ns, ns + nr, 1);
        int64_t end = th_now_ns() + 5 * SEC;
        int moved = 0;
        while (th_now_ns() < end && !moved) {
            int capped = 1;
            for (int i = 0; i < ns; i++)
                if (i != victim && atomic_load(&sh->c[i].committed) < KMAX)
                    capped = 0;
            moved = capped || (k_sum(sh, 0, ns, 0) >= c0 + 3 && k_sum(sh, ns, ns + nr, 1) >= r0 + 3);
            usleep(200);
        }
        cr_assert(moved, "%s: the survivors made no progress in 5 s after the kill (committed %llu -> %llu, "
                  "received %llu -> %llu)", what, (unsigned long long)c0,
                  (unsigned long long)k_sum(sh, 0, ns, 0), (unsigned long long)r0,
                  (unsigned long long)k_sum(sh, ns, ns + nr, 1));
    } else if (!senders_left) {
        t->all_senders_dead++;   /* the receivers drain, then get -EOWNERDEAD by themselves */
    } else {
        t->all_receivers_dead++; /* the senders fill the channel, then get -EOWNERDEAD */
        for (int i = 0; i < ns; i++) {
            int64_t end = th_now_ns() + 5 * SEC;
            while (!atomic_load(&sh->c[i].ended) && atomic_load(&sh->c[i].committed) < KMAX &&
                   th_now_ns() < end)
                usleep(200);
            cr_assert(atomic_load(&sh->c[i].ended) || atomic_load(&sh->c[i].committed) >= KMAX,
                      "%s: sender %d, waiting on a full channel with every receiver dead, got no "
                      "-EOWNERDEAD in 5 s (phase %s)", what, i, ph_name[atomic_load(&sh->c[i].phase)]);
        }
    }
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < ns + nr; i++) {
        if (i == victim)
            continue;
        int cs = th_wait(k_pids[i], 10000);
        cr_assert_eq(cs, 0, "%s: %s %d exited with %d (phase %s): %s", what, i < ns ? "sender" : "receiver",
                     i, cs, ph_name[atomic_load(&sh->c[i].phase)], sh->c[i].err);
        int rc = atomic_load(&sh->c[i].end_rc);
        if (i < ns)
            cr_assert(rc == 0 || (rc == -EOWNERDEAD && !receivers_left),
                      "%s: sender %d ended with %d (%s) while a receiver was alive", what, i, rc,
                      ndc_strerror(rc));
    }
    cr_assert_eq(atomic_load(&sh->bad), 0, "%s: %d torn or unknown arrays delivered, first: %s", what,
                 atomic_load(&sh->bad), sh->bad_msg);

    /* Whatever is still ready was committed and never taken. If a receiver
     * survived, it ended on -EOWNERDEAD, which means "empty": nothing may be
     * stranded. */
    st = th_stat(ch);
    cr_assert_eq(st.free + st.ready + st.loaned, slots, "%s: stat %u+%u+%u != %u after the survivors finished",
                 what, st.free, st.ready, st.loaned, slots);
    uint32_t stranded = 0;
    for (;;) {
        struct ndc_array a;
        int r = ndc_acquire(ch, &a, 0);
        if (r == -EAGAIN)
            break;
        cr_assert_eq(r, 0, "%s: drain: %d (%s) %s", what, r, ndc_strerror(r), ndc_last_error());
        k_record(sh, &a, slot_bytes);
        th_ok(ndc_release(ch, &a));
        stranded++;
    }
    cr_assert_eq(atomic_load(&sh->bad), 0, "%s: drained a torn array: %s", what, sh->bad_msg);
    if (receivers_left)
        cr_assert_eq(stranded, 0, "%s: every surviving receiver got -EOWNERDEAD (\"empty and every sender "
                     "gone\") but %u committed arrays were still ready", what, stranded);

    /* exactly once: nothing twice, nothing that was not committed, and
     * nothing committed lost unless a receiver died taking it */
    uint64_t delivered = 0, lost = 0;
    for (int s = 0; s < ns; s++) {
        uint64_t committed = atomic_load(&sh->c[s].committed);
        uint64_t inflight = atomic_load(&sh->c[s].inflight) & 0xffffffffu;
        int ph = atomic_load(&sh->c[s].phase);
        for (uint64_t k = 0; k < KMAX; k++) {
            unsigned n = atomic_load(&sh->seen[s][k]);
            delivered += n;
            cr_assert_leq(n, 1, "%s: array (sender %d, #%llu) delivered %u times", what, s,
                          (unsigned long long)k, n);
            if (k < committed) {
                lost += n == 0;
            } else if (k == inflight && (ph == PH_IN_COMMIT || ph == PH_IN_SEND)) {
                /* killed inside the commit: either way, once at most */
            } else {
                cr_assert_eq(n, 0, "%s: array (sender %d, #%llu) delivered but never committed (sender "
                             "%s, %llu committed)", what, s, (unsigned long long)k, ph_name[ph],
                             (unsigned long long)committed);
            }
        }
    }
    int taking = !victim_sends && (vph == PH_IN_ACQUIRE || vph == PH_IN_ACQUIRE2 || vph == PH_IN_RECV);
    cr_assert_leq(lost, (uint64_t)taking, "%s: %llu committed arrays never delivered (victim %s)", what,
                  (unsigned long long)lost, ph_name[vph]);
    t->lost += (int)lost;
    /* a receiver killed between taking an array and counting it leaves
     * the count one short: that array is the one lost */
    cr_assert(st.sent >= st.received + stranded && st.sent <= st.received + stranded + (uint64_t)taking,
              "%s: stat sent %llu, received %llu + %u drained (victim %s)", what, (unsigned long long)st.sent,
              (unsigned long long)st.received, stranded, ph_name[vph]);
    cr_assert_eq(delivered + lost, st.sent, "%s: %llu delivered + %llu lost, %llu committed", what,
                 (unsigned long long)delivered, (unsigned long long)lost, (unsigned long long)st.sent);
    if (victim_sends && (vph == PH_IN_RESERVE || vph == PH_RESERVED))
        cr_assert_eq(atomic_load(&sh->seen[victim][vtag & 0xffffffffu]), 0,
                     "%s: the array of a sender killed before its commit was delivered", what);

    /* The dead peer's slots come back: lazily (the next waiter's sweep), so
     * ndc_stat may still count them now; a process that needs every slot
     * gets them. */
    st = th_stat(ch);
    if (st.loaned)
        t->lazy++;
    struct ndc_array res[4];
    for (uint32_t i = 0; i < slots; i++) {
        tag_array(((uint64_t)1 << 32) | (KMAX - 1 - i), slot_bytes, &res[i], NULL);
        int r = ndc_reserve(ch, &res[i], 2 * SEC);
        cr_assert_eq(r, 0, "%s: reserving slot %u of %u after the round: %d (%s) %s", what, i + 1, slots, r,
                     ndc_strerror(r), ndc_last_error());
        th_fill(res[i].data, ndc_array_nbytes(&res[i]), res[i].tag);
    }
    for (uint32_t i = 0; i < slots; i++)
        th_ok(ndc_commit(ch, &res[i]));
    for (uint32_t i = 0; i < slots; i++) {
        struct ndc_array a;
        th_ok(ndc_acquire(ch, &a, SEC));
        char msg[200];
        cr_assert_eq(a.tag, res[i].tag, "%s: order after the round", what);
        cr_assert_eq(tag_check(&a, slot_bytes, msg, sizeof msg), 0, "%s: %s", what, msg);
        th_ok(ndc_release(ch, &a));
    }
    st = th_stat(ch);
    cr_assert(st.free == slots && st.loaned == 0 && st.ready == 0, "%s: at the end free %u ready %u loaned %u",
              what, st.free, st.ready, st.loaned);
    ndc_free(ch);
    t->rounds++;
    int64_t dt = th_now_ns() - t0;
    if (dt > t->round_ns_max)
        t->round_ns_max = dt;
}

static void kill_rounds(int target, int rounds, uint64_t seed0)
{
    struct ktally t;
    memset(&t, 0, sizeof t);
    int64_t t0 = th_now_ns();
    uint64_t base = seed0 ^ (uint64_t)th_now_ns();
    for (int i = 0; i < rounds; i++)
        kill_round(th_mix(base + (uint64_t)i), target, &t);
    char ph[512] = "";
    size_t off = 0;
    for (int p = 0; p < PH_N; p++)
        if (t.at_phase[p])
            off += (size_t)snprintf(ph + off, sizeof ph - off, " %s:%d", ph_name[p], t.at_phase[p]);
    fprintf(stderr, "[kill %s] %d rounds in %.1f s (slowest %.0f ms); victim died%s; lost in flight %d; "
            "every sender dead %d, every receiver dead %d; dead peer's slot not yet swept when the "
            "survivors finished: %d rounds\n", t_name[target], t.rounds, (th_now_ns() - t0) / 1e9,
            t.round_ns_max / 1e6, ph, t.lost, t.all_senders_dead, t.all_receivers_dead, t.lazy);
    cr_log_info("%d rounds, victim phases:%s", t.rounds, ph);
}

Test(kill, sender_between_reserve_and_commit, .timeout = TMO(120))
{
    kill_rounds(T_RESERVED, ROUNDS(100), 1);
}

Test(kill, receiver_holding_loans, .timeout = TMO(120))
{
    kill_rounds(T_HOLDING, ROUNDS(100), 2);
}

Test(kill, sender_asleep_on_full_channel, .timeout = TMO(120))
{
    kill_rounds(T_ASLEEP_FULL, ROUNDS(60), 3);
}

Test(kill, receiver_asleep_on_empty_channel, .timeout = TMO(120))
{
    kill_rounds(T_ASLEEP_EMPTY, ROUNDS(60), 4);
}

Test(kill, anyone_at_random_moment, .timeout = TMO(240))
{
    kill_rounds(T_RANDOM, ROUNDS(250), 5);
}
