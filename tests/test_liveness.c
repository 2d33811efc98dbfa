/* Liveness the kernel vouches for, creation without a visible half, memory
 * claimed before it is used, and the contract's edges: each test here was
 * a defect seen from outside with the public API, and fails on the code
 * before its fix.
 *
 *   liveness::  peers in other pid namespaces, stopped processes, forks
 *   create::    named channels appear complete or not at all; waiting for one
 *   space::     a small shm filesystem: -ENOSPC, never SIGBUS
 *   contract::  end of stream vs dead peers, timeouts, API traps
 *
 * Namespace and mount tests need root (CI runs as root); elsewhere they skip
 * with the reason. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan.h"
#include "peer.h"
#include "faults_helpers.h"

#define SKIP 77

/* Wait until *flag >= want (10 s at most). */
static int wait_flag(_Atomic int *flag, int want)
{
    int64_t end = th_now_ns() + 10 * SEC;
    while (atomic_load(flag) < want)
        if (th_now_ns() > end)
            return -1;
        else
            usleep(200);
    return 0;
}

/* ---- liveness ---------------------------------------------------------------- */

struct ns_shared {
    _Atomic int phase;       /* 1: the receiver holds its loan */
    _Atomic pid_t inner;     /* the receiver's pid as this namespace sees it */
    _Atomic int changed;     /* the receiver saw its loan change */
    _Atomic int code;
};

/* In a new pid namespace with its own /proc (as in a container sharing
 * /dev/shm), attach by name and hold the only array. */
static int ns_receiver(void *p)
{
    void **a = p;
    const char *name = a[0];
    struct ns_shared *sh = a[1];
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        return SKIP;
    CK(getpid() == 1, 2, "not the first process of a new pid namespace");
    ndc_chan *ch;
    CK(ndc_open(&ch, name, NDC_RDONLY) == 0, 3, "open");
    struct ndc_array l;
    CK(ndc_acquire(ch, &l, 5 * SEC) == 0, 4, "acquire");
    CK(th_check_u64(&l) == 0, 5, "content");
    atomic_store(&sh->phase, 1);
    for (;;) {   /* read the loan until killed */
        if (th_check_u64(&l) != 0)
            atomic_store(&sh->changed, 1);
        usleep(1000);
    }
}

static int ns_outer(void *p)
{
    void **a = p;
    struct ns_shared *sh = a[1];
    die_with_parent();
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0)
        return SKIP;
    pid_t c = th_fork(ns_receiver, p);
    atomic_store(&sh->inner, c);
    int st;
    waitpid(c, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

/* A receiver in another pid namespace holds a loan for seconds: no sender
 * gets its slot (it is alive, whatever our /proc says); when it is killed,
 * the slot comes back within 100 ms. */
Test(liveness, loan_held_across_pid_namespace, .timeout = 60)
{
    const char *name = th_unique_name("pidns");
    ndc_chan *ch;
    th_ok(ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 1, .slot_bytes = 4096 }));
    th_ok(th_send_u64(ch, 7, 512, 0));
    struct ns_shared *sh = th_shared(sizeof *sh);
    void *args[2] = { (void *)name, sh };
    pid_t outer = th_fork(ns_outer, args);
    int64_t end = th_now_ns() + 10 * SEC;
    while (atomic_load(&sh->phase) == 0 && th_now_ns() < end) {
        int st;
        if (waitpid(outer, &st, WNOHANG) == outer) {
            ndc_free(ch);
            ndc_unlink(name);
            if (WIFEXITED(st) && WEXITSTATUS(st) == SKIP)
                cr_skip_test("cannot make a pid and mount namespace here (needs root)");
            cr_assert_fail("the receiver in the new namespace failed: status %#x", st);
        }
        usleep(1000);
    }
    cr_assert_eq(atomic_load(&sh->phase), 1, "the receiver never took its loan");
    /* the sender must not get the slot while the loan is held */
    struct ndc_array a;
    int64_t shape[1] = { 512 };
    ndc_array_init(&a, NDC_U64, 1, shape, NULL);
    int64_t t0 = th_now_ns();
    int r = ndc_reserve(ch, &a, 1500 * MS);
    int64_t dt = th_now_ns() - t0;
    cr_assert_eq(r, -ETIMEDOUT, "reserve while a live peer in another pid namespace holds the only slot: "
                 "%d (%s) after %lld ms", r, ndc_strerror(r), (long long)(dt / MS));
    cr_assert_eq(atomic_load(&sh->changed), 0, "the loan changed under its holder");
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.attached, 2, "attached %u: the peer in the other namespace counts", st.attached);
    /* killed: its loan comes back, quickly */
    kill(atomic_load(&sh->inner), SIGKILL);
    t0 = th_now_ns();
    r = ndc_reserve(ch, &a, 2 * SEC);
    dt = th_now_ns() - t0;
    cr_assert_eq(r, 0, "reserve after the holder died: %d (%s)", r, ndc_strerror(r));
    cr_assert_lt(dt, 100 * MS, "the dead holder's slot came back after %lld ms", (long long)(dt / MS));
    fprintf(stderr, "[pidns] slot back %.1f ms after SIGKILL of a holder in another pid namespace\n",
            dt / 1e6);
    th_ok(ndc_cancel(ch, &a));
    th_wait(outer, 5000);
    ndc_free(ch);
    th_ok(ndc_unlink(name));
}

struct stop_shared { _Atomic int phase; _Atomic int idx; };

/* A repairer stopped half way: the repair lock taken as a sweep or a join
 * takes it, the gate closed as ndc__queue_repair closes it, then SIGSTOP;
 * continued, it opens the gate and lets go, as a repair ends. */
static int stop_inside_lock(void *p)
{
    void **a = p;
    ndc_chan *ch = a[0], *h;
    struct stop_shared *sh = a[1];
    die_with_parent();
    CK(ndc_open_fd(&h, ndc_fd(ch), 0) == 0, 1, "attach");
    struct ndc__deadline dl;
    ndc__deadline_init(&dl, SEC);
    CK(ndc__peer_lock(h, &dl) == 0, 2, "lock");
    atomic_store(&h->ctrl->gate, 1);
    atomic_store(&sh->idx, (int)h->me);
    atomic_store(&sh->phase, 1);
    raise(SIGSTOP);
    atomic_store(&h->ctrl->gate, 0);   /* continued: finish the "repair" */
    ndc__futex_wake(&h->ctrl->gate, INT32_MAX);
    ndc__peer_unlock(h);
    atomic_store(&sh->phase, 2);
    for (;;)
        pause();
}

/* ndc_send of th_send_u64's array: reserve and commit under one timeout. */
static int send_u64_timed(ndc_chan *ch, uint64_t tag, int64_t tmo)
{
    uint64_t buf[64];
    struct ndc_array a;
    int64_t shape[1] = { 64 };
    ndc_array_init(&a, NDC_U64, 1, shape, buf);
    a.tag = tag;
    for (int i = 0; i < 64; i++)
        buf[i] = th_mix(tag * 1000003u + (uint64_t)i);   /* as th_send_u64 fills it */
    return ndc_send(ch, &a, tmo);
}

/* A process stopped inside a repair, holding the repair lock with the gate
 * closed, for longer than any grace period (round 1 took the lock over
 * after 2 s) keeps both: ring steps with a timeout (acquire, send) give up
 * at their deadline, a reserve needs neither and is not held up; nobody
 * enters the lock or opens the gate behind its back; continued, it lets go
 * and the channel goes on with nothing lost. */
Test(liveness, stopped_lock_holder_keeps_the_lock, .timeout = 60)
{
    ndc_chan *ch = th_chan(4, 4096);
    th_ok(th_send_u64(ch, 1, 64, 0));
    struct stop_shared *sh = th_shared(sizeof *sh);
    void *args[2] = { ch, sh };
    pid_t p = th_fork(stop_inside_lock, args);
    cr_assert_eq(wait_flag(&sh->phase, 1), 0, "the child never took the lock");
    uint32_t word = atomic_load(&ch->ctrl->lock) & ~NDC__LOCK_WAITERS;
    cr_assert_eq(word, (uint32_t)atomic_load(&sh->idx) + 1, "lock word %#x", word);
    int64_t start = th_now_ns(), worst = 0;
    int calls = 0;
    while (th_now_ns() - start < 3 * SEC) {
        struct ndc_array a;
        int64_t tmo = (calls % 3) * 100 * MS;   /* 0, 100 and 200 ms */
        int64_t t0 = th_now_ns();
        int r = calls % 2 ? ndc_acquire(ch, &a, tmo) : send_u64_timed(ch, 2, tmo);
        int64_t dt = th_now_ns() - t0;
        cr_assert_eq(r, tmo ? -ETIMEDOUT : -EAGAIN, "call %d (timeout %lld ms) under a stopped holder: %d (%s)",
                     calls, (long long)(tmo / MS), r, ndc_strerror(r));
        cr_assert_lt(dt, tmo + 150 * MS, "call %d waited %lld ms past a %lld ms timeout", calls,
                     (long long)((dt - tmo) / MS), (long long)(tmo / MS));
        worst = dt - tmo > worst ? dt - tmo : worst;
        calls++;
        /* a free slot is found by its state: no lock, no gate, no wait */
        ndc_array_init(&a, NDC_U64, 1, (int64_t[]){ 64 }, NULL);
        t0 = th_now_ns();
        r = ndc_reserve(ch, &a, 100 * MS);
        dt = th_now_ns() - t0;
        cr_assert(r == 0 && dt < 50 * MS, "reserve under a stopped holder: %d (%s) in %lld ms", r,
                  ndc_strerror(r), (long long)(dt / MS));
        th_ok(ndc_cancel(ch, &a));
    }
    cr_assert_eq(atomic_load(&ch->ctrl->lock) & ~NDC__LOCK_WAITERS, word, "the lock was taken from its holder");
    cr_assert_eq(atomic_load(&ch->ctrl->gate), 1, "the gate was opened behind the holder's back");
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.attached, 2, "a stopped process is attached");
    cr_assert(st.ready == 1 && st.free == 3, "ready %u free %u: the timed sends dropped their arrays", st.ready,
              st.free);
    kill(p, SIGCONT);
    cr_assert_eq(wait_flag(&sh->phase, 2), 0, "the holder never finished");
    struct ndc_array a;
    th_ok(ndc_acquire(ch, &a, SEC));
    cr_assert(a.tag == 1 && th_check_u64(&a) == 0, "the array sent before the stop");
    th_ok(ndc_release(ch, &a));
    th_ok(th_send_u64(ch, 3, 64, SEC));
    th_ok(ndc_acquire(ch, &a, SEC));
    cr_assert_eq(a.tag, 3);
    th_ok(ndc_release(ch, &a));
    th_expect(ndc_acquire(ch, &a, 0), -EAGAIN);
    fprintf(stderr, "[stopped holder] %d calls in 3 s, worst %.1f ms past their timeout; lock kept\n", calls,
            worst / 1e6);
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    st = th_stat(ch);
    cr_assert_eq(st.free, 4);
    ndc_free(ch);
}

/* A receiver stopped inside its take: the head claimed, the cell not let
 * go yet (what a SIGSTOP between the two stores leaves). */
static int stop_inside_take(void *p)
{
    void **a = p;
    ndc_chan *ch = a[0], *h;
    struct stop_shared *sh = a[1];
    die_with_parent();
    CK(ndc_open_fd(&h, ndc_fd(ch), 0) == 0, 1, "attach");
    struct ndc_array l;
    CK(ndc_acquire(h, &l, 5 * SEC) == 0 && l.tag == 1, 2, "acquire tag 1");
    CK(ndc_release(h, &l) == 0, 3, "release");
    CK(wait_flag(&sh->phase, 1) == 0, 4, "tag 2 never sent");
    uint64_t n = h->seg.g.nslots;
    atomic_fetch_add(&h->peers[h->me].busy, 1);
    CK(atomic_load(&h->ctrl->gate) == 0, 5, "gate");
    uint64_t hd = atomic_load(&h->ctrl->head);
    struct ndc__cell *cell = &h->cells[hd % n];
    CK(atomic_load(&cell->seq) == hd + 1, 6, "nothing at the head");
    uint32_t slot = atomic_load(&cell->slot);
    CK(slot < n && atomic_compare_exchange_strong(&h->ctrl->head, &hd, hd + 1), 7, "head");
    atomic_store(&sh->phase, 2);
    raise(SIGSTOP);
    /* continued: the rest of the step, then the loan is used and given back */
    atomic_store(&cell->seq, hd + n);
    uint64_t ready = NDC__WORD(NDC__READY, 0);
    CK(atomic_compare_exchange_strong(&h->slots[slot].state, &ready, NDC__WORD(NDC__LOANED, h->me)), 8,
       "the slot it claimed was taken from it: state %#llx", (unsigned long long)ready);
    atomic_fetch_sub(&h->peers[h->me].busy, 1);
    struct ndc_array got;
    CK(h->slots[slot].tag == 2, 9, "claimed tag %llu", (unsigned long long)h->slots[slot].tag);
    memset(&got, 0, sizeof got);
    got.data = h->payload + (uint64_t)slot * h->seg.g.slot_stride;
    got.dtype = NDC_U64;
    got.ndim = 1;
    got.shape[0] = 64;
    got.tag = 2;
    CK(th_check_u64(&got) == 0, 10, "tag 2 torn");
    CK(ndc_release(h, &got) == 0, 11, "release of tag 2");
    atomic_store(&sh->phase, 3);
    for (;;)
        pause();
}

struct commit_later { ndc_chan *ch; struct ndc_array a; _Atomic int rc; _Atomic int64_t took; };
static void *commit_blocking(void *p)
{
    struct commit_later *c = p;
    int64_t t0 = th_now_ns();
    atomic_store(&c->rc, ndc_commit(c->ch, &c->a));
    atomic_store(&c->took, th_now_ns() - t0);
    return NULL;
}

/* A receiver stopped inside its ring step, between claiming the head and
 * letting go of the cell, for longer than the engine waits before it
 * repairs a stuck cell: its claim is never robbed. A sender whose commit
 * needs that cell gives up at its deadline (ndc_send: the array dropped,
 * its slot back; a repair that would wait for the stopped step gives up
 * too and opens the gate again); a blocking ndc_commit waits; continued,
 * the receiver finishes its take of the array it claimed, and everything
 * else arrives once, in order. */
Test(liveness, stopped_inside_a_step_keeps_its_claim, .timeout = 60)
{
    ndc_chan *ch = th_chan(3, 4096);
    th_ok(th_send_u64(ch, 1, 64, 0));
    struct stop_shared *sh = th_shared(sizeof *sh);
    void *args[2] = { ch, sh };
    pid_t p = th_fork(stop_inside_take, args);
    /* tag 1 taken by the child, tag 2 (position 1) claimed by it */
    int64_t end = th_now_ns() + 10 * SEC;
    while (th_stat(ch).free != 3 && th_now_ns() < end)
        usleep(1000);
    th_ok(th_send_u64(ch, 2, 64, 0));
    atomic_store(&sh->phase, 1);
    cr_assert_eq(wait_flag(&sh->phase, 2), 0, "the child never claimed tag 2");
    for (int k = 0; k < 2000 && proc_state(p) != 'T'; k++)
        usleep(1000);
    cr_assert_eq(proc_state(p), 'T', "the child is not stopped");
    /* tags 3 and 4 at positions 2 and 3 (cell 0, let go long ago) come;
     * tag 5's commit (position 4) needs cell 1, which the child holds */
    struct ndc_array a;
    for (uint64_t t = 3; t <= 4; t++) {
        th_ok(th_send_u64(ch, t, 64, 0));
        th_ok(ndc_acquire(ch, &a, SEC));
        cr_assert(a.tag == t && th_check_u64(&a) == 0, "tag %llu, want %llu", (unsigned long long)a.tag,
                  (unsigned long long)t);
        th_ok(ndc_release(ch, &a));
    }
    int64_t worst = 0;
    const int64_t tmos[] = { 0, 100 * MS, 300 * MS };
    for (int i = 0; i < 6; i++) {
        int64_t tmo = tmos[i % 3], t0 = th_now_ns();
        int r = send_u64_timed(ch, 5, tmo);
        int64_t dt = th_now_ns() - t0;
        cr_assert_eq(r, tmo ? -ETIMEDOUT : -EAGAIN, "send (timeout %lld ms) behind a stopped step: %d (%s)",
                     (long long)(tmo / MS), r, ndc_strerror(r));
        cr_assert_lt(dt, tmo + 150 * MS, "send waited %lld ms past a %lld ms timeout", (long long)((dt - tmo) / MS),
                     (long long)(tmo / MS));
        worst = dt - tmo > worst ? dt - tmo : worst;
        cr_assert_eq(atomic_load(&ch->ctrl->gate), 0, "a repair that gave up left the gate closed");
        struct ndc_stat st = th_stat(ch);
        cr_assert(st.free == 2 && st.ready == 1 && st.loaned == 0, "free %u ready %u loaned %u: the dropped "
                  "array's slot is back, the claimed one untouched", st.free, st.ready, st.loaned);
    }
    cr_assert_eq(atomic_load(&sh->phase), 2, "the stopped child moved");
    /* a blocking commit waits for the stopped step */
    struct commit_later c = { .ch = ch };
    ndc_array_init(&c.a, NDC_U64, 1, (int64_t[]){ 64 }, NULL);
    c.a.tag = 5;
    th_ok(ndc_reserve(ch, &c.a, 0));
    for (int i = 0; i < 64; i++)
        ((uint64_t *)c.a.data)[i] = th_mix(5 * 1000003u + (uint64_t)i);
    atomic_store(&c.rc, 1);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, commit_blocking, &c), 0);
    usleep(500 * 1000);
    cr_assert_eq(atomic_load(&c.rc), 1, "commit returned %d while the step it needs was stopped",
                 atomic_load(&c.rc));
    kill(p, SIGCONT);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&c.rc), 0, "commit: %d (%s)", atomic_load(&c.rc), ndc_strerror(atomic_load(&c.rc)));
    cr_assert_gt(atomic_load(&c.took), 450 * MS, "commit returned after %lld ms",
                 (long long)(atomic_load(&c.took) / MS));
    cr_assert_eq(wait_flag(&sh->phase, 3), 0, "the continued receiver failed: see its stderr");
    th_ok(ndc_acquire(ch, &a, SEC));
    cr_assert(a.tag == 5 && th_check_u64(&a) == 0, "tag %llu after the stop, want 5", (unsigned long long)a.tag);
    th_ok(ndc_release(ch, &a));
    th_expect(ndc_acquire(ch, &a, 0), -EAGAIN);
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.free == 3 && st.sent == 5 && st.received == 5, "free %u sent %llu received %llu", st.free,
              (unsigned long long)st.sent, (unsigned long long)st.received);
    fprintf(stderr, "[stopped step] timed sends behind a stopped receiver's step gave up at most %.1f ms late; "
            "a blocking commit waited for it\n", worst / 1e6);
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    ndc_free(ch);
}

/* ---- SIGSTOP storm ------------------------------------------------------------ */

#define STORM_SENDERS 2
#define STORM_RECEIVERS 2
#define STORM_PER_SENDER 100000   /* at most: they send until told to stop */
#define STORM_ELEMS 128

struct storm {
    _Atomic int stop;
    _Atomic int sent[STORM_SENDERS];
    _Atomic int done_senders;
    _Atomic int failed;
    _Atomic uint32_t seen[STORM_SENDERS * STORM_PER_SENDER];
    _Atomic uint64_t last_seq[STORM_RECEIVERS];
};

static int storm_sender(void *p)
{
    void **a = p;
    ndc_chan *ch = a[0];
    struct storm *s = a[1];
    int id = (int)(intptr_t)a[2];
    die_with_parent();
    for (int i = 0; i < STORM_PER_SENDER && !atomic_load(&s->stop); i++) {
        uint64_t tag = (uint64_t)id * STORM_PER_SENDER + (uint64_t)i;
        int r;
        while ((r = th_send_u64(ch, tag, STORM_ELEMS, 200 * MS)) == -ETIMEDOUT)
            ;
        CK(r == 0, 10, "send %d: %d (%s)", i, r, ndc_strerror(r));
        atomic_store(&s->sent[id], i + 1);
        if (i % 16 == 15)
            usleep(500);   /* paced: the storm lasts as long as the parent says */
    }
    atomic_fetch_add(&s->done_senders, 1);
    return 0;
}

static int storm_receiver(void *p)
{
    void **a = p;
    ndc_chan *ch = a[0];
    struct storm *s = a[1];
    int id = (int)(intptr_t)a[2];
    die_with_parent();
    uint64_t last = 0;
    int first = 1;
    for (;;) {
        struct ndc_array x;
        int r = ndc_acquire(ch, &x, 200 * MS);
        if (r == -EPIPE)
            return 0;
        if (r == -ETIMEDOUT)
            continue;
        CK(r == 0, 20, "acquire: %d (%s)", r, ndc_strerror(r));
        CK(x.tag < STORM_SENDERS * STORM_PER_SENDER, 21, "tag %llu", (unsigned long long)x.tag);
        CK(th_check_u64(&x) == 0, 22, "torn array, tag %llu", (unsigned long long)x.tag);
        CK(first || x.seq > last, 23, "seq %llu after %llu", (unsigned long long)x.seq, (unsigned long long)last);
        first = 0;
        last = x.seq;
        atomic_store(&s->last_seq[id], last);
        atomic_fetch_add(&s->seen[x.tag], 1);
        CK(ndc_release(ch, &x) == 0, 24, "release");
    }
}

/* Senders and receivers stopped at random moments, some for longer than
 * any old takeover delay, then continued: every array arrives exactly
 * once, whole, each receiver in commit order, and nobody is robbed. */
Test(liveness, sigstop_storm, .timeout = 120)
{
    ndc_chan *ch = th_chan(4, STORM_ELEMS * 8);
    struct storm *s = th_shared(sizeof *s);
    pid_t kids[STORM_SENDERS + STORM_RECEIVERS];
    void *args[STORM_SENDERS + STORM_RECEIVERS][3];
    int n = 0;
    for (int i = 0; i < STORM_SENDERS; i++, n++) {
        args[n][0] = ch, args[n][1] = s, args[n][2] = (void *)(intptr_t)i;
        kids[n] = th_fork(storm_sender, args[n]);
    }
    for (int i = 0; i < STORM_RECEIVERS; i++, n++) {
        args[n][0] = ch, args[n][1] = s, args[n][2] = (void *)(intptr_t)i;
        kids[n] = th_fork(storm_receiver, args[n]);
    }
    uint64_t rs = (uint64_t)th_now_ns();
    int stops = 0, long_stops = 0;
    for (; stops < 150; stops++) {
        rs = th_mix(rs);
        pid_t v = kids[stops == 40 ? 0 : stops == 90 ? STORM_SENDERS : rs % (uint64_t)n];
        int64_t stop_us = stops == 40 || stops == 90 ? 2200000 : (int64_t)(th_mix(rs) % 20000);
        long_stops += stop_us > 2000000;
        kill(v, SIGSTOP);
        usleep((useconds_t)stop_us);
        kill(v, SIGCONT);
        usleep((useconds_t)(th_mix(rs + 1) % 5000));
    }
    atomic_store(&s->stop, 1);
    int64_t end = th_now_ns() + 20 * SEC;
    while (atomic_load(&s->done_senders) < STORM_SENDERS && th_now_ns() < end)
        usleep(1000);
    cr_assert_eq(atomic_load(&s->done_senders), STORM_SENDERS, "the senders did not finish");
    th_ok(ndc_close(ch));
    for (int i = 0; i < n; i++) {
        int st = th_wait(kids[i], 20000);
        cr_assert_eq(st, 0, "child %d ended with %d", i, st);
    }
    int total = 0;
    for (int id = 0; id < STORM_SENDERS; id++) {
        for (int i = 0; i < STORM_PER_SENDER; i++) {
            uint32_t seen = atomic_load(&s->seen[id * STORM_PER_SENDER + i]);
            cr_assert_eq(seen, i < atomic_load(&s->sent[id]) ? 1u : 0u, "sender %d's array %d seen %u times "
                         "(it sent %d)", id, i, seen, atomic_load(&s->sent[id]));
        }
        total += atomic_load(&s->sent[id]);
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.free == 4 && st.ready == 0 && st.loaned == 0, "free %u ready %u loaned %u", st.free, st.ready,
              st.loaned);
    fprintf(stderr, "[sigstop storm] %d stops (%d of 2.2 s), %d arrays exactly once\n", stops, long_stops,
            total);
    ndc_free(ch);
}

/* A fork child that never uses the handle does not keep its parent
 * "alive": the parent's death is reported although the child, holding
 * copies of every fd, lives on. */
static int parent_of_idle_child(void *p)
{
    ndc_chan *ch = p;
    die_with_parent();
    CK(th_send_u64(ch, 1, 8, SEC) == 0, 1, "send");
    pid_t c = fork();
    if (c == 0) {
        sleep(3);   /* outlives its parent, with copies of all its fds */
        _exit(0);
    }
    for (;;)
        pause();
}

Test(liveness, idle_fork_child_does_not_keep_parent_alive, .timeout = 60)
{
    ndc_chan *ch = th_chan(2, 64);
    pid_t p = th_fork(parent_of_idle_child, ch);
    struct ndc_array a;
    th_ok(ndc_acquire(ch, &a, 5 * SEC));
    th_ok(ndc_release(ch, &a));
    usleep(50 * 1000);   /* the grandchild is forked */
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    int64_t t0 = th_now_ns();
    int r = ndc_acquire(ch, &a, 3 * SEC);
    int64_t dt = th_now_ns() - t0;
    cr_assert_eq(r, -EOWNERDEAD, "acquire after the only sender died (its fork child idles on): %d (%s)", r,
                 ndc_strerror(r));
    cr_assert_lt(dt, 100 * MS, "detected after %lld ms", (long long)(dt / MS));
    ndc_free(ch);
}

/* ---- creation ----------------------------------------------------------------- */

struct race {
    _Atomic int stop;
    _Atomic int opened, absent, bad;
    _Atomic int bad_code;
};

static int race_creator(void *p)
{
    void **a = p;
    struct race *r = a[1];
    const char *prefix = a[0];
    int id = (int)(intptr_t)a[2];
    die_with_parent();
    char name[96];
    for (int round = 0; !atomic_load(&r->stop); round++) {
        snprintf(name, sizeof name, "%s.%d", prefix, id);
        ndc_chan *ch;
        /* populate: creation takes long enough to be caught in the middle */
        int rc = ndc_create(&ch, name, &(struct ndc_chan_opts){ .slots = 16, .slot_bytes = 1 << 20,
                                                                 .flags = NDC_POPULATE });
        CK(rc == 0, 30, "create round %d: %d (%s)", round, rc, ndc_strerror(rc));
        CK(th_send_u64(ch, (uint64_t)round, 16, SEC) == 0, 31, "send");
        ndc_free(ch);
        CK(ndc_unlink(name) == 0, 32, "unlink");
    }
    return 0;
}

static int race_opener(void *p)
{
    void **a = p;
    struct race *r = a[1];
    const char *prefix = a[0];
    die_with_parent();
    char name[96];
    for (int i = 0; !atomic_load(&r->stop); i++) {
        snprintf(name, sizeof name, "%s.%d", prefix, i % 2);
        ndc_chan *ch;
        int rc = ndc_open(&ch, name, NDC_RDONLY);
        if (rc == 0) {
            atomic_fetch_add(&r->opened, 1);
            ndc_free(ch);
        } else if (rc == -ENOENT) {
            atomic_fetch_add(&r->absent, 1);
        } else {
            atomic_fetch_add(&r->bad, 1);
            atomic_store(&r->bad_code, rc);
            fprintf(stderr, "open: %d (%s): %s\n", rc, ndc_strerror(rc), ndc_last_error());
        }
    }
    return 0;
}

/* Openers polling while creators build, populate and remove channels over
 * and over: every open succeeds or says the channel is not there yet. */
Test(create, never_seen_half_built, .timeout = 60)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s", th_unique_name("race") + 1);
    struct race *r = th_shared(sizeof *r);
    void *args[4][3];
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        args[i][0] = prefix, args[i][1] = r, args[i][2] = (void *)(intptr_t)(i % 2);
        kids[i] = th_fork(i < 2 ? race_creator : race_opener, args[i]);
    }
    usleep(3 * 1000 * 1000);
    atomic_store(&r->stop, 1);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(th_wait(kids[i], 20000), 0, "child %d", i);
    fprintf(stderr, "[creation race] %d opens, %d not there yet, %d other\n", atomic_load(&r->opened),
            atomic_load(&r->absent), atomic_load(&r->bad));
    cr_assert_eq(atomic_load(&r->bad), 0, "%d opens failed otherwise, last %d (%s)", atomic_load(&r->bad),
                 atomic_load(&r->bad_code), ndc_strerror(atomic_load(&r->bad_code)));
    cr_assert_gt(atomic_load(&r->opened), 0, "no open ever met a channel: the race was not run");
}

struct late { _Atomic int phase; _Atomic int64_t opened_ns; _Atomic int code; };

static int early_consumer(void *p)
{
    void **a = p;
    const char *name = a[0];
    struct late *l = a[1];
    die_with_parent();
    atomic_store(&l->phase, 1);
    ndc_chan *ch;
    int r = ndc_open_wait(&ch, name, NDC_RDONLY, 5 * SEC);
    atomic_store(&l->opened_ns, th_now_ns());
    CK(r == 0, 40, "open_wait: %d (%s)", r, ndc_strerror(r));
    struct ndc_array x;
    r = ndc_acquire(ch, &x, 5 * SEC);
    CK(r == 0 && x.tag == 99 && th_check_u64(&x) == 0, 41, "acquire: %d", r);
    ndc_release(ch, &x);
    ndc_free(ch);
    return 0;
}

/* A consumer started first waits for its channel, and has it as soon as
 * the producer creates it. */
Test(create, consumer_first_waits_for_the_channel, .timeout = 30)
{
    const char *name = th_unique_name("late");
    char keep[96];
    snprintf(keep, sizeof keep, "%s", name);
    struct late *l = th_shared(sizeof *l);
    void *args[2] = { keep, l };
    pid_t c = th_fork(early_consumer, args);
    cr_assert_eq(wait_flag(&l->phase, 1), 0);
    usleep(300 * 1000);
    cr_assert_eq(atomic_load(&l->opened_ns), 0, "open_wait returned before the channel existed");
    ndc_chan *ch;
    th_ok(ndc_create(&ch, keep, &(struct ndc_chan_opts){ .slots = 2, .slot_bytes = 4096 }));
    int64_t created = th_now_ns();
    th_ok(th_send_u64(ch, 99, 16, SEC));
    cr_assert_eq(th_wait(c, 10000), 0);
    int64_t lag = atomic_load(&l->opened_ns) - created;
    cr_assert_lt(lag, 100 * MS, "the waiting consumer opened %lld ms after the creation", (long long)(lag / MS));
    fprintf(stderr, "[open_wait] opened %.2f ms after the creation\n", lag / 1e6);
    ndc_free(ch);
    th_ok(ndc_unlink(keep));
    /* and the edges: 0 is one try, a timeout runs out, negative is refused */
    th_expect(ndc_open_wait(&ch, keep, 0, 0), -ENOENT);
    int64_t t0 = th_now_ns();
    th_expect(ndc_open_wait(&ch, keep, 0, 100 * MS), -ETIMEDOUT);
    cr_assert_geq(th_now_ns() - t0, 100 * MS);
    th_expect(ndc_open_wait(&ch, keep, 0, -5), -EINVAL);
}

Test(create, exists_and_mode, .timeout = 30)
{
    const char *name = th_unique_name("mode");
    char keep[96];
    snprintf(keep, sizeof keep, "%s", name);
    ndc_chan *ch, *h;
    mode_t old = umask(077);
    th_ok(ndc_create(&ch, keep, &(struct ndc_chan_opts){ .slots = 1, .slot_bytes = 64, .mode = 0660 }));
    umask(old);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm%s", keep);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0660, "mode %o, want 0660 whatever the umask", st.st_mode & 07777);
    th_expect(ndc_create(&h, keep, NULL), -EEXIST);
    cr_assert(strstr(ndc_last_error(), keep + 1), "the error names the channel: %s", ndc_last_error());
    th_expect(ndc_create(&h, "x", &(struct ndc_chan_opts){ .mode = 01000 }), -EINVAL);
    th_expect(ndc_create(&h, "bad\nname", NULL), -EINVAL);
    th_expect(ndc_open(&h, "bad\001name", 0), -EINVAL);
    th_expect(ndc_unlink("bad\x7fname"), -EINVAL);
    /* flags are checked before the name is looked up */
    th_expect(ndc_open(&h, "/no-such-channel-at-all", 0x80), -EINVAL);
    th_expect(ndc_open(&h, "/no-such-channel-at-all", 0), -ENOENT);
    cr_assert(strstr(ndc_last_error(), "no-such-channel-at-all"), "%s", ndc_last_error());
    ndc_free(ch);
    th_ok(ndc_unlink(keep));
    th_expect(ndc_unlink(keep), -ENOENT);
}

/* ndc_unlink removes ndchan channels only. */
Test(create, unlink_leaves_other_objects_alone, .timeout = 30)
{
    const char *name = th_unique_name("foreign");
    char keep[96];
    snprintf(keep, sizeof keep, "%s", name);
    int fd = shm_open(keep, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "not a channel, but 64 bytes long, the size of nothing in particular....", 64), 64);
    close(fd);
    th_expect(ndc_unlink(keep), -EPROTO);
    fd = shm_open(keep, O_RDONLY, 0);
    cr_assert_geq(fd, 0, "ndc_unlink removed another program's shm object");
    close(fd);
    ndc_chan *h;
    th_expect(ndc_open(&h, keep, 0), -EPROTO);
    shm_unlink(keep);
}

/* A channel every user of which is gone is stale; one with a live process
 * besides the caller is not. */
static int create_and_die(void *p)
{
    ndc_chan *ch;
    CK(ndc_create(&ch, p, &(struct ndc_chan_opts){ .slots = 1, .slot_bytes = 64 }) == 0, 1, "create");
    CK(th_send_u64(ch, 1, 8, 0) == 0, 2, "send");
    _exit(0);   /* no ndc_free: killed, as far as the channel knows */
}

static int open_and_pause(void *p)
{
    die_with_parent();
    ndc_chan *ch;
    CK(ndc_open(&ch, p, NDC_RDONLY) == 0, 1, "open");
    for (;;)
        pause();
}

Test(create, stale_channels_are_visible, .timeout = 30)
{
    char keep[96];
    snprintf(keep, sizeof keep, "%s", th_unique_name("stale"));
    cr_assert_eq(th_wait(th_fork(create_and_die, keep), 5000), 0);
    ndc_chan *ch;
    th_ok(ndc_open(&ch, keep, NDC_RDONLY));
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.stale == 1 && st.attached == 1, "stale %u attached %u", st.stale, st.attached);
    pid_t p = th_fork(open_and_pause, keep);
    int64_t end = th_now_ns() + 5 * SEC;
    while ((st = th_stat(ch)).attached < 2 && th_now_ns() < end)
        usleep(1000);
    cr_assert(st.stale == 0 && st.attached == 2, "with a live reader: stale %u attached %u", st.stale, st.attached);
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    st = th_stat(ch);
    cr_assert(st.stale == 1 && st.attached == 1, "after it died: stale %u attached %u", st.stale, st.attached);
    ndc_free(ch);
    th_ok(ndc_unlink(keep));
}

/* ---- a small shm filesystem ------------------------------------------------- */

#define SPACE_FAIL(code, ...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return code; } while (0)

static int count_dir(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static int small_shm(void *p)
{
    (void)p;
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=4m") != 0)
        return SKIP;
    ndc_chan *ch;
    /* untouched capacity costs nothing: 4 x 64 MiB in a 4 MiB filesystem */
    int r = ndc_create(&ch, "small", &(struct ndc_chan_opts){ .slots = 4, .slot_bytes = 64 << 20 });
    CK(r == 0, 1, "create 4 x 64 MiB: %d (%s)", r, ndc_strerror(r));
    struct ndc_array a;
    int64_t big[1] = { 1 << 20 };   /* 8 MiB of u64 */
    ndc_array_init(&a, NDC_U64, 1, big, NULL);
    r = ndc_reserve(ch, &a, 0);
    CK(r == -ENOSPC, 2, "reserve of 8 MiB in 4 MiB: %d (%s)", r, ndc_strerror(r));
    CK(strstr(ndc_last_error(), "/dev/shm") && strstr(ndc_last_error(), "free"), 3,
       "the message names the filesystem and its free space: %s", ndc_last_error());
    struct ndc_stat st;
    CK(ndc_stat(ch, &st) == 0 && st.free == 4, 4, "the slot came back: free %u", st.free);
    /* what fits, works */
    CK(th_send_u64(ch, 5, 1 << 17, 0) == 0, 5, "a 1 MiB array: %s", ndc_last_error());
    CK(ndc_acquire(ch, &a, 0) == 0 && th_check_u64(&a) == 0, 6, "acquire");
    CK(ndc_release(ch, &a) == 0, 7, "release");
    /* the one-copy path and the .npy loader say the same */
    uint64_t *buf = calloc(1 << 20, 8);
    ndc_array_init(&a, NDC_U64, 1, big, buf);
    r = ndc_send(ch, &a, 0);
    CK(r == -ENOSPC, 8, "send of 8 MiB: %d (%s)", r, ndc_strerror(r));
    struct ndc_array w;
    ndc_array_init(&w, NDC_U64, 1, big, buf);
    char npy[64];
    snprintf(npy, sizeof npy, "/tmp/ndc-space-%d.npy", (int)getpid());
    CK(ndc_npy_write(&w, npy) == 0, 9, "npy write");
    r = ndc_npy_read(ch, npy, 1, 0);
    unlink(npy);
    CK(r == -ENOSPC, 10, "npy read of 8 MiB: %d (%s)", r, ndc_strerror(r));
    free(buf);
    /* populate: -ENOSPC at creation, and no name left behind */
    ndc_chan *h;
    r = ndc_create(&h, "populated", &(struct ndc_chan_opts){ .slots = 4, .slot_bytes = 2 << 20,
                                                              .flags = NDC_POPULATE });
    CK(r == -ENOSPC, 11, "create with NDC_POPULATE of 8 MiB in 4 MiB: %d (%s)", r, ndc_strerror(r));
    ndc_free(ch);
    CK(ndc_unlink("small") == 0, 12, "unlink");
    CK(count_dir("/dev/shm") == 0, 13, "files left in /dev/shm: %d", count_dir("/dev/shm"));
    return 0;
}

Test(space, small_shm_is_enospc_never_sigbus, .timeout = 60)
{
    int r = th_wait(th_fork(small_shm, NULL), 30000);
    if (r == SKIP)
        cr_skip_test("cannot mount a tmpfs in a private mount namespace here (needs root)");
    cr_assert_eq(r, 0, "code %d (see stderr; 128+ is a signal: %s)", r, r > 128 ? strsignal(r - 128) : "-");
}

/* ---- contract ----------------------------------------------------------------- */

/* What ndc_close does (ndc__engine_close), minus the wake-up: the marks
 * land while the waiter sleeps out its slice, then the closer dies. */
static int close_quietly_and_die(void *p)
{
    void **a = p;
    ndc_chan *ch = a[0];
    int sender = (int)(intptr_t)a[1];
    _Atomic int *go = a[2];
    die_with_parent();
    if (sender)
        CK(th_send_u64(ch, 1, 8, SEC) == 0, 1, "send");
    else {
        struct ndc_array x;
        CK(ndc_acquire(ch, &x, SEC) == 0, 2, "acquire");
        CK(ndc_release(ch, &x) == 0, 3, "release");
    }
    atomic_store(go, 1);
    /* once the parent sleeps on its semaphore */
    int side = sender ? NDC__SIDE_READY : NDC__SIDE_FREE;
    for (int i = 0; i < 10000 && !atomic_load(&ch->ctrl->sleepers[side]); i++)
        usleep(500);
    CK(atomic_load(&ch->ctrl->sleepers[side]), 4, "the parent never slept");
    atomic_fetch_or(&ch->ctrl->tail, NDC__TAIL_CLOSED);
    atomic_store(&ch->ctrl->closed, 1);
    atomic_fetch_or(&ch->ctrl->sem[NDC__SIDE_READY].count, NDC__CLOSED);
    atomic_fetch_or(&ch->ctrl->sem[NDC__SIDE_FREE].count, NDC__CLOSED);
    _exit(0);
}

/* A stream ended by its last sender (close, then exit) is -EPIPE to a
 * receiver whatever the moment it looks, not -EOWNERDEAD; the same for a
 * sender whose last receiver closed and left. */
Test(contract, closed_stream_is_epipe_not_eownerdead, .timeout = 60)
{
    for (int sender = 1; sender >= 0; sender--) {
        ndc_chan *ch = th_chan(1, 64);
        _Atomic int *go = th_shared(sizeof *go);
        if (!sender)
            th_ok(th_send_u64(ch, 0, 8, 0));   /* the child receives it: a receiver; we fill the slot */
        void *args[3] = { ch, (void *)(intptr_t)sender, (void *)go };
        pid_t p = th_fork(close_quietly_and_die, args);
        cr_assert_eq(wait_flag(go, 1), 0);
        int r;
        if (sender) {
            struct ndc_array a;
            th_ok(ndc_acquire(ch, &a, SEC));
            th_ok(ndc_release(ch, &a));
            r = ndc_acquire(ch, &a, 3 * SEC);
        } else {
            th_ok(th_send_u64(ch, 2, 8, SEC));   /* the only slot: the next send waits */
            r = th_send_u64(ch, 3, 8, 3 * SEC);
        }
        waitpid(p, NULL, 0);
        cr_assert_eq(r, -EPIPE, "%s after the other side closed and died: %d (%s)",
                     sender ? "acquire" : "reserve", r, ndc_strerror(r));
        ndc_free(ch);
    }
}

static int send_close_exit(void *p)
{
    ndc_chan *ch = p;
    CK(th_send_u64(ch, 1, 8, SEC) == 0, 1, "send");
    ndc_close(ch);
    ndc_free(ch);
    _exit(0);
}

/* The same, the ordinary way, many times with an idle receiver. */
Test(contract, stream_end_by_exiting_sender_is_epipe, .timeout = 120)
{
    for (int i = 0; i < 150; i++) {
        ndc_chan *ch = th_chan(2, 64);
        pid_t p = th_fork(send_close_exit, ch);
        struct ndc_array a;
        th_ok(ndc_acquire(ch, &a, 5 * SEC));
        th_ok(ndc_release(ch, &a));
        int r = ndc_acquire(ch, &a, 5 * SEC);
        cr_assert_eq(r, -EPIPE, "round %d: %d (%s)", i, r, ndc_strerror(r));
        waitpid(p, NULL, 0);
        ndc_free(ch);
    }
}

struct waiter { ndc_chan *ch; int64_t tmo; _Atomic int r; _Atomic int done; };
static void *acquire_waiter(void *p)
{
    struct waiter *w = p;
    struct ndc_array a;
    atomic_store(&w->r, ndc_acquire(w->ch, &a, w->tmo));
    atomic_store(&w->done, 1);
    return NULL;
}

/* A timeout near INT64_MAX is "no limit", not "already expired". */
Test(contract, huge_timeouts_do_not_expire, .timeout = 30)
{
    const int64_t tmos[] = { INT64_MAX, INT64_MAX - 1, INT64_MAX / 2 + 1 };
    for (size_t i = 0; i < 3; i++) {
        ndc_chan *ch = th_chan(1, 64);
        struct waiter w = { .ch = ch, .tmo = tmos[i] };
        pthread_t t;
        pthread_create(&t, NULL, acquire_waiter, &w);
        usleep(200 * 1000);
        cr_assert_eq(atomic_load(&w.done), 0, "acquire(%lld) returned %d at once", (long long)tmos[i],
                     atomic_load(&w.r));
        th_ok(ndc_close(ch));
        pthread_join(t, NULL);
        cr_assert_eq(atomic_load(&w.r), -EPIPE);
        ndc_free(ch);
    }
    ndc_chan *ch = th_chan(1, 64);
    th_ok(th_send_u64(ch, 1, 8, 0));
    int64_t t0 = th_now_ns();
    struct ndc_array a;
    int64_t shape[1] = { 8 };
    ndc_array_init(&a, NDC_U64, 1, shape, NULL);
    /* a full channel: a finite timeout still runs out */
    th_expect(ndc_reserve(ch, &a, 300 * MS), -ETIMEDOUT);
    cr_assert_geq(th_now_ns() - t0, 300 * MS);
    ndc_free(ch);
}

/* Negative timeouts other than NDC_FOREVER are refused, not "forever". */
Test(contract, negative_timeouts_refused, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 64);
    const int64_t bad[] = { -2, -1000, INT64_MIN };
    for (size_t i = 0; i < 3; i++) {
        struct ndc_array a;
        int64_t shape[1] = { 2 };
        uint64_t buf[2] = { 1, 2 };
        ndc_array_init(&a, NDC_U64, 1, shape, buf);
        th_expect(ndc_send(ch, &a, bad[i]), -EINVAL);
        th_expect(ndc_reserve(ch, &a, bad[i]), -EINVAL);
        th_expect(ndc_acquire(ch, &a, bad[i]), -EINVAL);
        a.data = buf;
        th_expect(ndc_recv(ch, &a, sizeof buf, bad[i]), -EINVAL);
        ndc_chan *h;
        th_expect(ndc_open_wait(&h, "/whatever", 0, bad[i]), -EINVAL);
        th_expect(ndc_npy_read(ch, "/nonexistent.npy", 0, bad[i]), -EINVAL);
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.free == 2 && st.ready == 0, "nothing was sent");
    ndc_free(ch);
}

/* A struct literal whose strides were left zero is refused rather than
 * sending element 0 everywhere; a broadcast says so. */
Test(contract, unset_strides_refused, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    double v[4] = { 1, 2, 3, 4 };
    struct ndc_array lit = { .data = v, .dtype = NDC_F64, .ndim = 1, .shape = { 4 } };
    th_expect(ndc_send(ch, &lit, 0), -EINVAL);
    cr_assert(strstr(ndc_last_error(), "ndc_array_init"), "the message says how: %s", ndc_last_error());
    th_expect(ndc_send_flags(ch, &lit, 0, 0x10), -EINVAL);
    th_ok(ndc_send_flags(ch, &lit, 0, NDC_SEND_BROADCAST));
    struct ndc_array one = { .data = v, .dtype = NDC_F64, .ndim = 2, .shape = { 1, 1 } };
    th_ok(ndc_send(ch, &one, 0));   /* one element: strides do not matter */
    double out[4];
    struct ndc_array r = { .data = out };
    th_ok(ndc_recv(ch, &r, sizeof out, 0));
    cr_assert(out[0] == 1 && out[1] == 1 && out[2] == 1 && out[3] == 1, "broadcast of element 0");
    th_ok(ndc_recv(ch, &r, sizeof out, 0));
    cr_assert(r.ndim == 2 && out[0] == 1);
    ndc_free(ch);
}

/* ndc_recv with a NULL buffer is how to learn an array's size: -EMSGSIZE,
 * the shape filled in, the array kept. */
Test(contract, recv_null_buffer_tells_the_size, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    th_ok(th_send_u64(ch, 4, 100, 0));
    struct ndc_array a = { 0 };
    th_expect(ndc_recv(ch, &a, 0, 0), -EMSGSIZE);
    cr_assert(a.ndim == 1 && a.shape[0] == 100 && a.data == NULL && ndc_array_nbytes(&a) == 800);
    uint64_t *buf = malloc(ndc_array_nbytes(&a));
    a.data = buf;
    th_ok(ndc_recv(ch, &a, 800, 0));
    cr_assert(a.tag == 4 && th_check_u64(&a) == 0);
    free(buf);
    ndc_free(ch);
}
