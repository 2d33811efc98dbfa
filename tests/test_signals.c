/*
 * Signals (suite signals): a call asleep in the kernel returns -EINTR to a
 * caught signal and leaves the channel consistent; SIGINT in the middle of
 * a long ndc_send leaves no partial array and gives the slot back.
 *
 * With -DFAULTS_SOAK=1 (the soak_signals program): ten times the rounds and
 * the timeouts.
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
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "faults_helpers.h"

static _Atomic int sig_count;
static void on_sig(int sig) { (void)sig; atomic_fetch_add(&sig_count, 1); }

struct kicker { ndc_chan *ch; pthread_t target; int field; _Atomic int done; };

/* Signal the target thread every 5 ms once it sleeps, until its call returns. */
static void *kicker_main(void *p)
{
    struct kicker *k = p;
    while (!atomic_load(&k->done)) {
        struct ndc_stat st;
        if (ndc_stat(k->ch, &st) == 0 && (k->field ? st.senders_waiting : st.receivers_waiting))
            pthread_kill(k->target, SIGUSR1);
        usleep(5000);
    }
    return NULL;
}

static void eintr_case(int sender_side)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;   /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    ndc_chan *ch = th_chan(2, 64);
    int rc;
    if (sender_side)
        for (uint64_t t = 1; t <= 2; t++) {
            send_tag(ch, t, 0, &rc);
            th_ok(rc);
        }
    struct seg s;
    seg_map(&s, ch);
    for (int round = 0; round < 5; round++) {
        struct kicker k = { ch, pthread_self(), sender_side, 0 };
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, kicker_main, &k), 0);
        int64_t t0 = th_now_ns();
        struct ndc_array a;
        unsigned char buf[64];
        if (sender_side) {
            tag_array(9, 64, &a, buf);
            rc = round % 2 ? ndc_send(ch, &a, 10 * SEC) : ndc_reserve(ch, &a, 10 * SEC);
        } else {
            a.data = buf;
            rc = round % 2 ? ndc_recv(ch, &a, sizeof buf, 10 * SEC) : ndc_acquire(ch, &a, 10 * SEC);
        }
        int64_t dt = th_now_ns() - t0;
        atomic_store(&k.done, 1);
        pthread_join(th, NULL);
        cr_assert_eq(rc, -EINTR, "%s asleep, signal caught: %d (%s) after %lld ms",
                     sender_side ? "sender" : "receiver", rc, ndc_strerror(rc), (long long)(dt / MS));
        cr_assert_lt(dt, 5 * SEC);
        /* consistent: nothing taken, nobody counted asleep */
        struct ndc_stat st = th_stat(ch);
        cr_assert_eq(st.free + st.ready + st.loaned, 2);
        cr_assert_eq(st.loaned, 0, "a slot stayed taken after -EINTR");
        cr_assert_eq(sender_side ? st.ready : st.free, 2);
        cr_assert(st.receivers_waiting == 0 && st.senders_waiting == 0, "still counted asleep");
        cr_assert(atomic_load(&s.c->sleepers[0]) == 0 && atomic_load(&s.c->sleepers[1]) == 0, "sleepers word");
    }
    /* and it goes on working */
    struct ndc_array g;
    if (sender_side) {
        th_ok(ndc_acquire(ch, &g, 0));
        cr_assert_eq(g.tag, 1);
        th_ok(ndc_release(ch, &g));
        send_tag(ch, 3, 0, &rc);
        th_ok(rc);
        for (uint64_t t = 2; t <= 3; t++) {
            th_ok(ndc_acquire(ch, &g, 0));
            cr_assert_eq(g.tag, t);
            th_ok(ndc_release(ch, &g));
        }
    } else {
        roundtrip(ch, 4, "after -EINTR");
    }
    seg_unmap(&s);
    ndc_free(ch);
    signal(SIGUSR1, SIG_DFL);
}

Test(signals, eintr_blocked_receiver_channel_consistent, .timeout = 60) { eintr_case(0); }
Test(signals, eintr_blocked_sender_channel_consistent, .timeout = 60) { eintr_case(1); }

/* Ctrl-C in the middle of a long ndc_send: the array is either delivered
 * whole or never seen, and its slot comes back. */
#define BIG_ROWS 1024
#define BIG_COLS 2048
struct bigsh { _Atomic int phase; };
struct bigarg { ndc_chan *ch; struct bigsh *sh; uint64_t tag; };

static uint64_t big_val(uint64_t tag, uint64_t i, uint64_t j) { return th_mix(tag ^ (i * BIG_COLS + j)); }

static int big_sender(void *p)
{
    struct bigarg *g = p;
    die_with_parent();
    size_t pitch = BIG_COLS * 16;   /* every other element: not contiguous */
    unsigned char *buf = malloc(pitch * BIG_ROWS);
    CK(buf, 80, "malloc");
    unsigned char *origin = buf + pitch * (BIG_ROWS - 1);   /* rows reversed: negative stride */
    for (uint64_t i = 0; i < BIG_ROWS; i++)
        for (uint64_t j = 0; j < BIG_COLS; j++) {
            uint64_t v = big_val(g->tag, i, j);
            memcpy(origin - i * pitch + j * 16, &v, 8);
        }
    struct ndc_array a;
    int64_t shape[2] = { BIG_ROWS, BIG_COLS };
    ndc_array_init(&a, NDC_U64, 2, shape, origin);
    a.strides[0] = -(int64_t)pitch;
    a.strides[1] = 16;
    a.tag = g->tag;
    /* Become a sender the channel knows before the parent may interrupt
     * us: a process killed before its first call was never a peer, and a
     * receiver rightly waits for a sender still to come. */
    struct ndc_array first;
    int64_t none[1] = { 0 };
    ndc_array_init(&first, NDC_U8, 1, none, NULL);
    CK(ndc_reserve(g->ch, &first, 10 * SEC) == 0 && ndc_cancel(g->ch, &first) == 0, 81, "first reserve");
    atomic_store(&g->sh->phase, 1);
    int r = ndc_send(g->ch, &a, 10 * SEC);
    atomic_store(&g->sh->phase, r == 0 ? 2 : 3);
    for (;;)
        pause();
    return 0;
}

Test(signals, sigint_mid_send_leaves_no_partial_array, .timeout = TMO(120))
{
    struct bigsh *sh = th_shared(sizeof *sh);
    uint64_t rs = (uint64_t)th_now_ns();
    int mid = 0, after = 0;
    for (int round = 0; round < ROUNDS(12); round++) {
        ndc_chan *ch = th_chan(1, (uint64_t)BIG_ROWS * BIG_COLS * 8);
        atomic_store(&sh->phase, 0);
        struct bigarg g = { ch, sh, 100 + (uint64_t)round };
        pid_t p = th_fork(big_sender, &g);
        int64_t end = th_now_ns() + 20 * SEC;
        while (atomic_load(&sh->phase) == 0 && th_now_ns() < end)
            usleep(100);
        cr_assert_neq(atomic_load(&sh->phase), 0, "the sender never started sending");
        usleep((useconds_t)(rnd(&rs) % (round < 4 ? 3000 : 40000)));
        kill(p, SIGINT);
        int st;
        waitpid(p, &st, 0);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "sender status %#x", st);
        int phase = atomic_load(&sh->phase);
        cr_assert_neq(phase, 3, "the send failed by itself");
        struct ndc_array a;
        int rc = ndc_acquire(ch, &a, 2 * SEC);
        if (rc == 0) {
            /* delivered: then whole */
            cr_assert(a.tag == g.tag && a.dtype == NDC_U64 && a.ndim == 2 && a.shape[0] == BIG_ROWS &&
                      a.shape[1] == BIG_COLS, "header of the delivered array");
            const uint64_t *d = a.data;
            for (uint64_t i = 0; i < BIG_ROWS; i++)
                for (uint64_t j = 0; j < BIG_COLS; j++)
                    if (d[i * BIG_COLS + j] != big_val(g.tag, i, j))
                        cr_assert_fail("round %d: a partial array was delivered (element %llu,%llu)", round,
                                       (unsigned long long)i, (unsigned long long)j);
            th_ok(ndc_release(ch, &a));
            after++;
        } else {
            cr_assert_eq(rc, -EOWNERDEAD, "round %d: acquire %d (%s)", round, rc, ndc_strerror(rc));
            cr_assert_neq(phase, 2, "round %d: the send had returned 0 but nothing was delivered", round);
            mid++;
        }
        /* the slot comes back */
        struct ndc_stat stt = th_stat(ch);
        cr_assert(stt.free == 1 && stt.loaned == 0 && stt.ready == 0, "round %d: free %u ready %u loaned %u", round,
                  stt.free, stt.ready, stt.loaned);
        ndc_free(ch);
    }
    fprintf(stderr, "[sigint] %d sends interrupted before their commit (never seen), %d delivered whole\n",
            mid, after);
    cr_assert_gt(mid, 0, "no round interrupted a send in its middle: the test proved nothing");
}
