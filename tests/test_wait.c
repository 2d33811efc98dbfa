/*
 * Waiting (one process, threads allowed):
 *   timeout  0 is -EAGAIN, a short timeout expires on time;
 *   wake     waiters are counted, and woken by the other side;
 *   eos      ndc_close drains then gives -EPIPE, wakes waiters, ends commits;
 *   stat     the sent and received counters;
 *   drain    ndc_wait_drained waits for the last release, for the end of
 *            stream, and reports dead receivers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan_helpers.h"

/* ---- timeouts ------------------------------------------------------------- */

Test(timeout, zero_is_eagain, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct ndc_array r;
    unsigned char buf[64];
    poison(&r);
    int64_t t0 = th_now_ns();
    th_expect(ndc_acquire(ch, &r, 0), -EAGAIN);
    cr_assert(is_poisoned(&r), "ndc_acquire wrote its output on -EAGAIN");
    r.data = buf;
    th_expect(ndc_recv(ch, &r, sizeof buf, 0), -EAGAIN);
    /* Full channel: senders too. */
    int64_t s[] = { 8 };
    send_filled(ch, NDC_U8, 1, s, 0, 0);
    send_filled(ch, NDC_U8, 1, s, 1, 1);
    struct ndc_array a = mkarr(NDC_U8, 1, s, buf, 2);
    th_expect(ndc_send(ch, &a, 0), -EAGAIN);
    struct ndc_array w;
    poison(&w);
    w.dtype = NDC_U8;
    w.ndim = 1;
    w.shape[0] = 8;
    w.tag = 0;
    struct ndc_array w0 = w;
    th_expect(ndc_reserve(ch, &w, 0), -EAGAIN);
    cr_assert(memcmp(&w, &w0, sizeof w) == 0, "ndc_reserve wrote its output on -EAGAIN");
    cr_assert_lt(elapsed_since(t0), SEC / 2, "timeout 0 waited");
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, 2, "a failed send was counted");
    cr_assert_eq(st.ready, 2);
    ndc_free(ch);
}

Test(timeout, short_timeout_expires, .timeout = 10)
{
    ndc_chan *ch = th_chan(1, 4096);
    const int64_t tmo[] = { 1 * MS, 20 * MS, 150 * MS };
    for (int i = 0; i < 3; i++) {
        struct ndc_array r;
        poison(&r);
        int64_t t0 = th_now_ns();
        th_expect(ndc_acquire(ch, &r, tmo[i]), -ETIMEDOUT);
        int64_t el = elapsed_since(t0);
        cr_assert_geq(el, tmo[i], "acquire timed out after %lld ns < %lld", (long long)el,
                      (long long)tmo[i]);
        cr_assert_lt(el, tmo[i] + 2 * SEC, "acquire overslept: %lld ns", (long long)el);
        cr_assert(is_poisoned(&r));
        unsigned char buf[16];
        r.data = buf;
        t0 = th_now_ns();
        th_expect(ndc_recv(ch, &r, sizeof buf, tmo[i]), -ETIMEDOUT);
        cr_assert_geq(elapsed_since(t0), tmo[i]);
    }
    int64_t s[] = { 3 };
    send_filled(ch, NDC_U8, 1, s, 0, 0);
    for (int i = 0; i < 3; i++) {
        struct ndc_array a = mkarr(NDC_U8, 1, s, "abc", 1);
        int64_t t0 = th_now_ns();
        th_expect(ndc_send(ch, &a, tmo[i]), -ETIMEDOUT);
        int64_t el = elapsed_since(t0);
        cr_assert_geq(el, tmo[i], "send timed out after %lld ns < %lld", (long long)el,
                      (long long)tmo[i]);
        t0 = th_now_ns();
        th_expect(ndc_reserve(ch, &a, tmo[i]), -ETIMEDOUT);
        cr_assert_geq(elapsed_since(t0), tmo[i]);
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.receivers_waiting, 0, "a timed-out receiver still counted as waiting");
    cr_assert_eq(st.senders_waiting, 0, "a timed-out sender still counted as waiting");
    cr_assert_eq(st.sent, 1);
    ndc_free(ch);
}

/* ---- threads: waiting, waking, counting ----------------------------------- */

struct waiter {
    ndc_chan *ch;
    int op;           /* 0 acquire, 1 reserve, 2 recv */
    int64_t timeout;
    _Atomic int done;
    int rc;
    int64_t returned_at;
    struct ndc_array a;
    unsigned char buf[64];
};

static void *waiter_main(void *p)
{
    struct waiter *w = p;
    if (w->op == 0)
        w->rc = ndc_acquire(w->ch, &w->a, w->timeout);
    else if (w->op == 1)
        w->rc = ndc_reserve(w->ch, &w->a, w->timeout);
    else {
        w->a.data = w->buf;
        w->rc = ndc_recv(w->ch, &w->a, sizeof w->buf, w->timeout);
    }
    w->returned_at = th_now_ns();
    atomic_store(&w->done, 1);
    return NULL;
}

static void start_waiter(pthread_t *t, struct waiter *w, ndc_chan *ch, int op)
{
    memset(w, 0, sizeof *w);
    w->ch = ch;
    w->op = op;
    w->timeout = NDC_FOREVER;
    w->rc = 1;
    if (op == 1) {
        w->a.dtype = NDC_U8;
        w->a.ndim = 1;
        w->a.shape[0] = 16;
        w->a.tag = 99;
    }
    cr_assert_eq(pthread_create(t, NULL, waiter_main, w), 0);
}

/* Poll ndc_stat until field >= want or 3 s pass. */
#define WAIT_STAT(ch, field, want)                                                           \
    do {                                                                                     \
        int64_t d_ = th_now_ns() + 3 * SEC;                                                  \
        struct ndc_stat s_;                                                                  \
        for (;;) {                                                                           \
            s_ = th_stat(ch);                                                                \
            if (s_.field >= (want) || th_now_ns() > d_)                                      \
                break;                                                                       \
            usleep(1000);                                                                    \
        }                                                                                    \
        cr_assert_eq(s_.field, (want), #field " = %u, want %u", s_.field, (unsigned)(want)); \
    } while (0)

Test(wake, waiters_counted_and_woken, .timeout = 15)
{
    ndc_chan *ch = th_chan(2, 4096);
    pthread_t t1, t2;
    struct waiter w1, w2;
    start_waiter(&t1, &w1, ch, 0);
    start_waiter(&t2, &w2, ch, 2);
    WAIT_STAT(ch, receivers_waiting, 2);
    cr_assert_eq(atomic_load(&w1.done) + atomic_load(&w2.done), 0, "a waiter returned early");
    int64_t s[] = { 5 };
    send_filled(ch, NDC_U8, 1, s, 1, 1);
    send_filled(ch, NDC_U8, 1, s, 2, 2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    th_ok(w1.rc);
    th_ok(w2.rc);
    /* Each got one of the two, once. */
    cr_assert(w1.a.seq + w2.a.seq == 1 && w1.a.tag + w2.a.tag == 3,
              "two receivers got seq %llu and %llu", (unsigned long long)w1.a.seq,
              (unsigned long long)w2.a.seq);
    const void *d2 = w2.buf;
    cr_assert(th_check(d2, 5, w2.a.tag), "recv payload wrong");
    cr_assert(th_check(w1.a.data, 5, w1.a.tag), "acquired payload wrong");
    th_ok(ndc_release(ch, &w1.a));
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.receivers_waiting, 0);

    /* Backpressure: a full channel puts a sender to sleep, a release wakes it. */
    send_filled(ch, NDC_U8, 1, s, 3, 3);
    send_filled(ch, NDC_U8, 1, s, 4, 4);
    start_waiter(&t1, &w1, ch, 1);
    WAIT_STAT(ch, senders_waiting, 1);
    cr_assert_eq(atomic_load(&w1.done), 0, "the sender did not wait on a full channel");
    expect_filled(ch, NDC_U8, 1, s, 3, 3, 2);
    pthread_join(t1, NULL);
    th_ok(w1.rc);
    memset(w1.a.data, 0xab, 16);
    th_ok(ndc_commit(ch, &w1.a));
    st = th_stat(ch);
    cr_assert_eq(st.senders_waiting, 0);
    expect_filled(ch, NDC_U8, 1, s, 4, 4, 3);
    struct ndc_array r;
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.tag, 99);
    cr_assert_eq(r.seq, 4);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(((unsigned char *)r.data)[i], 0xab);
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
}

/* ---- end of stream --------------------------------------------------------- */

Test(eos, close_drains_then_epipe, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    int64_t s[] = { 6, 2 };
    for (int i = 0; i < 3; i++)
        send_filled(ch, NDC_I64, 2, s, (uint64_t)i, 70 + (uint64_t)i);
    th_ok(ndc_close(ch));
    th_ok(ndc_close(ch));   /* twice is harmless */
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.closed, 1, "closed = %u", st.closed);
    cr_assert_eq(st.ready, 3, "close dropped arrays");

    /* Senders: -EPIPE at once, even with NDC_FOREVER. */
    unsigned char buf[96] = { 0 };
    struct ndc_array a = mkarr(NDC_I64, 2, s, buf, 9);
    th_expect(ndc_send(ch, &a, NDC_FOREVER), -EPIPE);
    struct ndc_array w;
    memset(&w, 0, sizeof w);
    w.dtype = NDC_U8;
    w.ndim = 0;
    th_expect(ndc_reserve(ch, &w, NDC_FOREVER), -EPIPE);

    /* Receivers: everything sent before, in order, then -EPIPE. */
    expect_filled(ch, NDC_I64, 2, s, 0, 70, 0);
    struct ndc_array r;
    r.data = buf;
    th_ok(ndc_recv(ch, &r, sizeof buf, 0));
    cr_assert_eq(r.seq, 1);
    cr_assert(th_check(buf, 96, 71));
    expect_filled(ch, NDC_I64, 2, s, 2, 72, 2);
    int64_t t0 = th_now_ns();
    th_expect(ndc_acquire(ch, &r, NDC_FOREVER), -EPIPE);
    th_expect(ndc_acquire(ch, &r, 0), -EPIPE);
    r.data = buf;
    th_expect(ndc_recv(ch, &r, sizeof buf, NDC_FOREVER), -EPIPE);
    cr_assert_lt(elapsed_since(t0), SEC);
    st = th_stat(ch);
    cr_assert_eq(st.sent, 3);
    cr_assert_eq(st.received, 3);
    cr_assert_eq(st.free, 4);
    ndc_free(ch);
    th_expect(ndc_close(NULL), -EINVAL);
}

Test(eos, close_wakes_waiters, .timeout = 15)
{
    ndc_chan *ch = th_chan(1, 4096);
    pthread_t t[3];
    struct waiter w[3];
    start_waiter(&t[0], &w[0], ch, 0);
    start_waiter(&t[1], &w[1], ch, 2);
    WAIT_STAT(ch, receivers_waiting, 2);
    int64_t t0 = th_now_ns();
    th_ok(ndc_close(ch));
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        th_expect(w[i].rc, -EPIPE);
        cr_assert_lt(w[i].returned_at - t0, SEC, "close took %lld ns to wake a receiver",
                     (long long)(w[i].returned_at - t0));
    }
    ndc_free(ch);

    /* A sender asleep on a full channel is woken with -EPIPE too. */
    ch = th_chan(1, 4096);
    int64_t s[] = { 1 };
    send_filled(ch, NDC_U8, 1, s, 0, 0);
    start_waiter(&t[2], &w[2], ch, 1);
    WAIT_STAT(ch, senders_waiting, 1);
    t0 = th_now_ns();
    th_ok(ndc_close(ch));
    pthread_join(t[2], NULL);
    th_expect(w[2].rc, -EPIPE);
    cr_assert_lt(w[2].returned_at - t0, SEC);
    /* The array sent before the close is still there. */
    expect_filled(ch, NDC_U8, 1, s, 0, 0, 0);
    struct ndc_array r;
    th_expect(ndc_acquire(ch, &r, 0), -EPIPE);
    ndc_free(ch);
}

Test(eos, commit_after_close, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    int64_t s[] = { 4 };
    send_filled(ch, NDC_U32, 1, s, 1, 11);
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    a.dtype = NDC_U32;
    a.ndim = 1;
    a.shape[0] = 4;
    a.tag = 2;
    th_ok(ndc_reserve(ch, &a, 0));
    th_fill(a.data, 16, 12);
    th_ok(ndc_close(ch));
    th_expect(ndc_commit(ch, &a), -EPIPE);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.ready, 1, "the discarded slot was published");
    cr_assert_eq(st.loaned, 0, "the discarded slot is still reserved");
    cr_assert_eq(st.sent, 1);
    expect_filled(ch, NDC_U32, 1, s, 1, 11, 0);
    struct ndc_array r;
    th_expect(ndc_acquire(ch, &r, 0), -EPIPE);
    st = th_stat(ch);
    cr_assert_eq(st.free, 2);
    ndc_free(ch);
}

/* ---- counters ------------------------------------------------------------- */

Test(stat, counters, .timeout = 10)
{
    ndc_chan *ch = th_chan(3, 4096);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.slots, 3);
    cr_assert_eq(st.slot_bytes, 4096);
    int64_t s1[] = { 3 }, s2[] = { 5 };
    send_filled(ch, NDC_F64, 1, s1, 0, 0);   /* 24 bytes */
    send_filled(ch, NDC_F64, 1, s2, 1, 1);   /* 40 bytes */
    st = th_stat(ch);
    cr_assert_eq(st.sent, 2);
    cr_assert_eq(st.bytes_sent, 64, "bytes_sent %llu, want 64",
                 (unsigned long long)st.bytes_sent);
    cr_assert_eq(st.ready, 2);
    cr_assert_eq(st.free, 1);
    cr_assert_eq(st.received, 0);

    struct ndc_array r;
    th_ok(ndc_acquire(ch, &r, 0));
    st = th_stat(ch);
    cr_assert_eq(st.ready, 1);
    cr_assert_eq(st.loaned, 1);
    cr_assert_eq(st.free, 1);
    struct ndc_array w;
    memset(&w, 0, sizeof w);
    w.dtype = NDC_U8;
    w.ndim = 1;
    w.shape[0] = 100;
    th_ok(ndc_reserve(ch, &w, 0));
    st = th_stat(ch);
    cr_assert_eq(st.loaned, 2);
    cr_assert_eq(st.free, 0);
    cr_assert_eq(st.sent, 2, "a reservation counted as sent");
    th_ok(ndc_commit(ch, &w));
    th_ok(ndc_release(ch, &r));
    st = th_stat(ch);
    cr_assert_eq(st.sent, 3);
    cr_assert_eq(st.bytes_sent, 164);
    cr_assert_eq(st.received, 1);
    cr_assert_eq(st.ready, 2);
    cr_assert_eq(st.free, 1);
    cr_assert_eq(st.loaned, 0);
    cr_assert_eq(st.attached, 1);
    cr_assert_eq(st.closed, 0);
    ndc_free(ch);
}

/* ---- waiting until drained ------------------------------------------------ */

static int slow_receiver(void *p)
{
    ndc_chan *ch = p;
    for (int i = 0; i < 3; i++) {
        struct ndc_array a;
        CK(ndc_acquire(ch, &a, 5 * SEC) == 0, 1, "acquire %d", i);
        usleep(50 * 1000);
        CK(ndc_release(ch, &a) == 0, 2, "release %d", i);
    }
    return 0;
}

static int take_two_and_die(void *p)
{
    ndc_chan *ch = p;
    struct ndc_array a, b;
    CK(ndc_acquire(ch, &a, 5 * SEC) == 0 && ndc_acquire(ch, &b, 5 * SEC) == 0, 1, "acquire");
    _exit(0);   /* holding both loans */
}

static void send3(ndc_chan *ch)
{
    for (uint64_t t = 0; t < 3; t++) {
        struct ndc_array a;
        int64_t shape[1] = { 4 };
        th_ok(ndc_array_init(&a, NDC_U8, 1, shape, NULL));
        a.tag = t;
        th_ok(ndc_reserve(ch, &a, 0));
        th_ok(ndc_commit(ch, &a));
    }
}

/* JoinableQueue.join(): returns once every array committed before the call
 * has been released, not before. */
Test(drain, waits_for_the_last_release, .timeout = 30)
{
    ndc_chan *ch = th_chan(4, 64);
    th_ok(ndc_wait_drained(ch, 0, 0));   /* nothing sent: drained */
    send3(ch);
    th_expect(ndc_wait_drained(ch, 0, 0), -EAGAIN);
    th_expect(ndc_wait_drained(ch, 0, 20 * MS), -ETIMEDOUT);
    pid_t p = th_fork(slow_receiver, ch);
    int64_t t0 = th_now_ns();
    th_ok(ndc_wait_drained(ch, 0, 5 * SEC));
    int64_t dt = th_now_ns() - t0;
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.free == 4 && st.ready == 0 && st.loaned == 0, "drained, yet free %u ready %u loaned %u", st.free,
              st.ready, st.loaned);
    cr_assert_geq(dt, 140 * MS, "returned after %lld ms; three 50 ms loans take 150", (long long)(dt / MS));
    cr_assert_eq(th_wait(p, 5000), 0);
    th_expect(ndc_wait_drained(ch, 2, 0), -EINVAL);
    th_expect(ndc_wait_drained(ch, 0, -3), -EINVAL);
    th_expect(ndc_wait_drained(NULL, 0, 0), -EINVAL);
    ndc_free(ch);
}

struct closer { ndc_chan *ch; int64_t after; };
static void *close_later(void *p)
{
    struct closer *c = p;
    struct timespec ts = { 0, (long)c->after };
    nanosleep(&ts, NULL);
    ndc_close(c->ch);
    return NULL;
}

/* NDC_DRAIN_CLOSED: also until the stream has ended. */
Test(drain, closed_waits_for_the_end_of_stream, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 64);
    th_ok(ndc_wait_drained(ch, 0, 0));
    th_expect(ndc_wait_drained(ch, NDC_DRAIN_CLOSED, 0), -EAGAIN);
    struct closer c = { ch, 100 * MS };
    pthread_t t;
    pthread_create(&t, NULL, close_later, &c);
    int64_t t0 = th_now_ns();
    th_ok(ndc_wait_drained(ch, NDC_DRAIN_CLOSED, 5 * SEC));
    cr_assert_geq(th_now_ns() - t0, 90 * MS);
    pthread_join(t, NULL);
    ndc_free(ch);
}

/* Arrays left and every receiver dead: -EOWNERDEAD, not forever. */
Test(drain, dead_receivers_are_reported, .timeout = 30)
{
    ndc_chan *ch = th_chan(4, 64);
    send3(ch);
    cr_assert_eq(th_wait(th_fork(take_two_and_die, ch), 5000), 0);
    int64_t t0 = th_now_ns();
    th_expect(ndc_wait_drained(ch, 0, 5 * SEC), -EOWNERDEAD);
    cr_assert_lt(th_now_ns() - t0, 200 * MS);
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.ready == 1 && st.loaned == 0, "the dead receiver's loans came back: ready %u loaned %u",
              st.ready, st.loaned);
    ndc_free(ch);
}
