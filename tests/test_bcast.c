/* Broadcast channels: every subscriber gets every array, in order, exactly
 * once (block policy); history for late subscribers; the latest policy
 * never holds the publisher back; dead subscribers let go. Real processes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>

#include "helpers.h"

static ndc_chan *bchan(uint32_t slots, uint32_t history, uint32_t policy)
{
    struct ndc_chan_opts o = {.slots = slots, .slot_bytes = 4096, .flags = NDC_BROADCAST,
                              .history = history, .slow_policy = policy};
    ndc_chan *ch = NULL;
    th_ok(ndc_create(&ch, NULL, &o));
    return ch;
}

/* Take one array (any timeout), check it, return its tag; or the error. */
static int take_tag(ndc_chan *ch, int64_t tmo, uint64_t *tag, uint64_t *seq)
{
    struct ndc_array a;
    int r = ndc_acquire(ch, &a, tmo);
    if (r)
        return r;
    if (th_check_u64(&a) != 0)
        return -EBADMSG;
    *tag = a.tag;
    if (seq)
        *seq = a.seq;
    return ndc_release(ch, &a);
}

/* ---- every array to every subscriber ----------------------------------------------- */

#define NPUB 2
#define NSUB 3
#define K    3000

struct fan {
    _Atomic int subscribed, started;
    _Atomic uint32_t got[NSUB + 1][NPUB];   /* per subscriber (the last: a two-thread one) */
    _Atomic int bad;
    char msg[256];
};

static void bad(struct fan *f, const char *fmt, uint64_t a, uint64_t b)
{
    if (!atomic_exchange(&f->bad, 1))
        snprintf(f->msg, sizeof f->msg, fmt, (unsigned long long)a, (unsigned long long)b);
}

struct sub_arg { ndc_chan *ch; struct fan *f; int idx; _Atomic uint64_t *last_seq; };

/* Read until the end of stream; per publisher, tags must come 0, 1, 2, ... */
static void *sub_loop(void *p)
{
    struct sub_arg *s = p;
    uint64_t seen_seq = 0;
    int first = 1;
    for (;;) {
        uint64_t tag, seq;
        int r = take_tag(s->ch, 10 * SEC, &tag, &seq);
        if (r == -EPIPE)
            break;
        if (r) {
            if (!atomic_exchange(&s->f->bad, 1))
                snprintf(s->f->msg, sizeof s->f->msg, "subscriber %d: %s: %s", s->idx, ndc_strerror(r),
                         ndc_last_error());
            break;
        }
        uint32_t pub = (uint32_t)(tag >> 32), k = (uint32_t)tag;
        if (pub >= NPUB) {
            bad(s->f, "unknown publisher %llu (tag %llu)", pub, tag);
            break;
        }
        uint32_t want = atomic_fetch_add(&s->f->got[s->idx][pub], 1);
        if (s->last_seq == NULL && k != want)   /* one thread: exact order */
            bad(s->f, "out of order or lost: got #%llu, want #%llu", k, want);
        if (!first && seq <= seen_seq)
            bad(s->f, "seq went back: %llu after %llu", seq, seen_seq);
        seen_seq = seq;
        first = 0;
    }
    return NULL;
}

static int subscriber(void *p)
{
    struct sub_arg *s = p;
    CK(ndc_subscribe(s->ch) == 0, 2, "subscribe");
    atomic_fetch_add(&s->f->subscribed, 1);
    if (s->idx < NSUB) {
        sub_loop(s);
        return 0;
    }
    /* two threads share one subscribing handle: each array to one of them */
    pthread_t t[2];
    struct sub_arg a[2] = { *s, *s };
    _Atomic uint64_t dummy;
    a[0].last_seq = a[1].last_seq = &dummy;
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, sub_loop, &a[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    return 0;
}

struct pub_arg { ndc_chan *ch; struct fan *f; int idx; };

static int publisher(void *p)
{
    struct pub_arg *a = p;
    while (!atomic_load(&a->f->started))
        usleep(100);
    for (uint32_t k = 0; k < K; k++) {
        int r = th_send_u64(a->ch, ((uint64_t)a->idx << 32) | k, 1 + k % 7, 10 * SEC);
        CK(r == 0, 3, "publisher %d send #%u: %d", a->idx, k, r);
    }
    return 0;
}

Test(bcast, every_subscriber_gets_every_array_in_order, .timeout = 120)
{
    ndc_chan *ch = bchan(8, 0, NDC_SLOW_BLOCK);
    struct fan *f = th_shared(sizeof *f);
    pid_t subs[NSUB + 1], pubs[NPUB];
    struct sub_arg sa[NSUB + 1];
    for (int i = 0; i <= NSUB; i++) {
        sa[i] = (struct sub_arg){ ch, f, i, NULL };
        subs[i] = th_fork(subscriber, &sa[i]);
    }
    int64_t end = th_now_ns() + 10 * SEC;
    while (atomic_load(&f->subscribed) < NSUB + 1 && th_now_ns() < end)
        usleep(1000);
    cr_assert_eq(atomic_load(&f->subscribed), NSUB + 1, "subscribers never subscribed");
    struct pub_arg pa[NPUB];
    for (int i = 0; i < NPUB; i++) {
        pa[i] = (struct pub_arg){ ch, f, i };
        pubs[i] = th_fork(publisher, &pa[i]);
    }
    atomic_store(&f->started, 1);
    for (int i = 0; i < NPUB; i++)
        cr_assert_eq(th_wait(pubs[i], 60000), 0, "publisher %d failed", i);
    th_ok(ndc_close(ch));
    for (int i = 0; i <= NSUB; i++)
        cr_assert_eq(th_wait(subs[i], 60000), 0, "subscriber %d failed", i);
    cr_assert_eq(atomic_load(&f->bad), 0, "%s", f->msg);
    for (int i = 0; i <= NSUB; i++)
        for (int p = 0; p < NPUB; p++)
            cr_assert_eq(atomic_load(&f->got[i][p]), K, "subscriber %d got %u of publisher %d's %d arrays",
                         i, atomic_load(&f->got[i][p]), p, K);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, (uint64_t)NPUB * K);
    cr_assert_eq(st.dropped, 0);
    ndc_free(ch);
}

/* ---- history --------------------------------------------------------------------------- */

Test(bcast, late_subscriber_gets_the_history_first, .timeout = 30)
{
    for (uint32_t h = 0; h <= 3; h += 3) {
        ndc_chan *pub = bchan(5, h, NDC_SLOW_BLOCK);
        for (uint64_t k = 0; k < 10; k++)
            th_ok(th_send_u64(pub, k, 4, 0));   /* nobody subscribed: never blocks */
        ndc_chan *sub = NULL;
        th_ok(ndc_open_fd(&sub, ndc_fd(pub), NDC_SUBSCRIBE | NDC_RDONLY));
        uint64_t tag, seq;
        for (uint64_t k = 10 - h; k < 10; k++) {
            th_ok(take_tag(sub, 0, &tag, &seq));
            cr_assert_eq(tag, k, "history %u: got %llu, want %llu", h, (unsigned long long)tag,
                         (unsigned long long)k);
            cr_assert_eq(seq, k);
        }
        th_expect(take_tag(sub, 0, &tag, &seq), -EAGAIN);
        th_ok(th_send_u64(pub, 10, 4, 0));
        th_ok(take_tag(sub, 0, &tag, &seq));
        cr_assert_eq(tag, 10);
        struct ndc_sub_stat ss[2];
        cr_assert_eq(ndc_subscribers(pub, ss, 2), 1);
        cr_assert_eq(ss[0].position, 11);
        cr_assert_eq(ss[0].lag, 0);
        cr_assert_eq(ss[0].dropped, 0);
        cr_assert_eq(ss[0].received, h + 1);
        ndc_free(sub);
        ndc_free(pub);
    }
}

/* ---- slow subscribers -------------------------------------------------------------------- */

Test(bcast, block_policy_waits_for_the_slowest, .timeout = 30)
{
    ndc_chan *pub = bchan(4, 0, NDC_SLOW_BLOCK);
    ndc_chan *fast = NULL, *slow = NULL;
    th_ok(ndc_open_fd(&fast, ndc_fd(pub), NDC_SUBSCRIBE));
    th_ok(ndc_open_fd(&slow, ndc_fd(pub), NDC_SUBSCRIBE));
    uint64_t tag;
    for (uint64_t k = 0; k < 4; k++) {
        th_ok(th_send_u64(pub, k, 2, 0));
        th_ok(take_tag(fast, 0, &tag, NULL));
        cr_assert_eq(tag, k);
    }
    /* the slow one has taken nothing: every slot is still its */
    th_expect(th_send_u64(pub, 4, 2, 0), -EAGAIN);
    th_expect(th_send_u64(pub, 4, 2, 20 * MS), -ETIMEDOUT);
    th_ok(take_tag(slow, 0, &tag, NULL));
    cr_assert_eq(tag, 0);
    th_ok(th_send_u64(pub, 4, 2, 0));   /* slot of #0 came back */
    for (uint64_t k = 1; k <= 4; k++) {
        th_ok(take_tag(slow, 0, &tag, NULL));
        cr_assert_eq(tag, k);
    }
    th_ok(take_tag(fast, 0, &tag, NULL));
    cr_assert_eq(tag, 4);
    struct ndc_stat st = th_stat(pub);
    cr_assert_eq(st.subscribers, 2);
    cr_assert_eq(st.dropped, 0);
    ndc_free(fast);
    ndc_free(slow);
    ndc_free(pub);
}

Test(bcast, latest_policy_never_waits, .timeout = 30)
{
    ndc_chan *pub = bchan(4, 0, NDC_SLOW_LATEST);
    ndc_chan *sleeper = NULL, *reader = NULL;
    th_ok(ndc_open_fd(&sleeper, ndc_fd(pub), NDC_SUBSCRIBE));
    th_ok(ndc_open_fd(&reader, ndc_fd(pub), NDC_SUBSCRIBE));
    /* the reader holds a loan the whole time: that slot must not be reused */
    th_ok(th_send_u64(pub, 0, 8, 0));
    struct ndc_array held;
    th_ok(ndc_acquire(reader, &held, 0));
    for (uint64_t k = 1; k < 1000; k++)
        th_ok(th_send_u64(pub, k, 8, 0));   /* timeout 0: never waits */
    cr_assert_eq(th_check_u64(&held), 0, "a loaned slot was overwritten");
    cr_assert_eq(held.tag, 0);
    th_ok(ndc_release(reader, &held));
    uint64_t tag;
    th_ok(take_tag(sleeper, 0, &tag, NULL));
    cr_assert_eq(tag, 999, "the sleeper got %llu, not the newest", (unsigned long long)tag);
    th_expect(take_tag(sleeper, 0, &tag, NULL), -EAGAIN);
    th_ok(take_tag(reader, 0, &tag, NULL));
    cr_assert_eq(tag, 999);
    struct ndc_sub_stat ss[3];
    cr_assert_eq(ndc_subscribers(pub, ss, 3), 2);
    for (int i = 0; i < 2; i++) {
        /* the sleeper had only the newest; the reader #0 and then the newest */
        cr_assert_eq(ss[i].position, 1000);
        cr_assert_eq(ss[i].lag, 0);
        cr_assert_eq(ss[i].dropped, ss[i].received == 1 ? 999 : 998, "received %llu, dropped %llu",
                     (unsigned long long)ss[i].received, (unsigned long long)ss[i].dropped);
    }
    cr_assert_eq(th_stat(pub).dropped, 999 + 998);
    ndc_free(sleeper);
    ndc_free(reader);
    ndc_free(pub);
}

Test(bcast, latest_value_channel, .timeout = 30)
{
    ndc_chan *w = bchan(4, 1, NDC_SLOW_LATEST);
    for (uint64_t k = 1; k <= 5; k++)
        th_ok(th_send_u64(w, k, 3, 0));
    ndc_chan *r = NULL;
    th_ok(ndc_open_fd(&r, ndc_fd(w), NDC_SUBSCRIBE | NDC_RDONLY));
    uint64_t tag;
    th_ok(take_tag(r, 0, &tag, NULL));
    cr_assert_eq(tag, 5, "a late reader gets the current value");
    th_expect(take_tag(r, 0, &tag, NULL), -EAGAIN);
    for (uint64_t k = 6; k <= 9; k++)
        th_ok(th_send_u64(w, k, 3, 0));
    th_ok(take_tag(r, 0, &tag, NULL));
    cr_assert_eq(tag, 9, "the newest, not the next");
    ndc_free(r);
    ndc_free(w);
}

/* ---- a subscriber that dies ---------------------------------------------------------------- */

struct holder { ndc_chan *ch; _Atomic int holding; };

static int hold_and_sleep(void *p)
{
    struct holder *h = p;
    struct ndc_array a, b;
    CK(ndc_subscribe(h->ch) == 0, 2, "subscribe");
    atomic_store(&h->holding, 1);
    CK(ndc_acquire(h->ch, &a, 10 * SEC) == 0, 3, "acquire");
    CK(ndc_acquire(h->ch, &b, 10 * SEC) == 0, 4, "acquire");
    atomic_store(&h->holding, 2);
    pause();
    return 0;
}

Test(bcast, dead_subscriber_lets_the_publisher_go, .timeout = 30)
{
    ndc_chan *pub = bchan(4, 0, NDC_SLOW_BLOCK);
    struct holder *h = th_shared(sizeof *h);
    h->ch = pub;
    pid_t p = th_fork(hold_and_sleep, h);
    while (atomic_load(&h->holding) < 1)
        usleep(200);
    for (uint64_t k = 0; k < 4; k++)
        th_ok(th_send_u64(pub, k, 2, 5 * SEC));
    while (atomic_load(&h->holding) < 2)
        usleep(200);
    th_expect(th_send_u64(pub, 4, 2, 50 * MS), -ETIMEDOUT);   /* held back */
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    int64_t t0 = th_now_ns();
    th_ok(th_send_u64(pub, 4, 2, 5 * SEC));
    int64_t dt = th_now_ns() - t0;
    cr_assert_lt(dt, 500 * MS, "the publisher waited %lld ms after the subscriber died", (long long)(dt / MS));
    fprintf(stderr, "[bcast] publisher unblocked %.1f ms after the subscriber's SIGKILL\n", dt / 1e6);
    for (uint64_t k = 5; k < 20; k++)
        th_ok(th_send_u64(pub, k, 2, 0));   /* no subscriber left: never blocks */
    struct ndc_stat st = th_stat(pub);
    cr_assert_eq(st.subscribers, 0);
    cr_assert_eq(st.loaned, 0);
    ndc_free(pub);
}

/* ---- edges ----------------------------------------------------------------------------------- */

Test(bcast, edges_and_errors, .timeout = 30)
{
    struct ndc_chan_opts o = {.slots = 4, .history = 1};
    ndc_chan *ch = NULL;
    th_expect(ndc_create(&ch, NULL, &o), -EINVAL);   /* history without NDC_BROADCAST */
    o = (struct ndc_chan_opts){.slots = 4, .flags = NDC_BROADCAST, .history = 4};
    th_expect(ndc_create(&ch, NULL, &o), -EINVAL);   /* history >= slots */
    o = (struct ndc_chan_opts){.flags = NDC_BROADCAST, .slow_policy = 2};
    th_expect(ndc_create(&ch, NULL, &o), -EINVAL);
    ndc_chan *q = th_chan(2, 64), *x = NULL;
    th_expect(ndc_subscribe(q), -EINVAL);
    th_expect(ndc_open_fd(&x, ndc_fd(q), NDC_SUBSCRIBE), -EINVAL);
    struct ndc_sub_stat ss;
    th_expect(ndc_subscribers(q, &ss, 1), -EINVAL);
    ndc_free(q);

    /* at most NDC_MAX_SUB_LOANS loans per subscriber */
    ch = bchan(NDC_MAX_SUB_LOANS + 4, 0, NDC_SLOW_BLOCK);
    th_ok(ndc_subscribe(ch));
    th_ok(ndc_subscribe(ch));
    for (uint64_t k = 0; k < NDC_MAX_SUB_LOANS + 2; k++)
        th_ok(th_send_u64(ch, k, 1, 0));
    struct ndc_array a[NDC_MAX_SUB_LOANS + 1];
    for (int i = 0; i < NDC_MAX_SUB_LOANS; i++)
        th_ok(ndc_acquire(ch, &a[i], 0));
    th_expect(ndc_acquire(ch, &a[NDC_MAX_SUB_LOANS], 0), -ENOBUFS);
    th_ok(ndc_release(ch, &a[3]));
    th_expect(ndc_release(ch, &a[3]), -EINVAL);      /* not held any more */
    th_ok(ndc_acquire(ch, &a[3], 0));
    cr_assert_eq(a[3].tag, NDC_MAX_SUB_LOANS, "the next one, not the refused one lost");
    cr_assert_eq(ndc_subscribers(ch, &ss, 1), 1);
    cr_assert_eq(ss.loans, NDC_MAX_SUB_LOANS);
    cr_assert_eq(ss.lag, 1);
    for (int i = 0; i < NDC_MAX_SUB_LOANS; i++)
        th_ok(ndc_release(ch, &a[i]));
    /* the subscriber's zero-copy arrays are the same slot for everyone: a
     * stat sees them ready again (kept as history until reused) */
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.loaned, 0);
    th_expect(ndc_wait_drained(ch, 0, 0), -EAGAIN);   /* one array not taken yet */
    th_ok(take_tag(ch, 0, &(uint64_t){0}, NULL));
    th_ok(ndc_wait_drained(ch, 0, 0));
    ndc_free(ch);
}

/* ---- SIGKILL storm ------------------------------------------------------------------------------- */

struct storm { ndc_chan *ch; _Atomic int ready; _Atomic uint32_t got[3]; _Atomic int bad; };

static int storm_sub(void *p)
{
    struct storm *s = p;
    int idx = atomic_fetch_add(&s->ready, 1);
    CK(ndc_subscribe(s->ch) == 0, 2, "subscribe");
    int first = 1;
    for (uint64_t want = 0;; want++) {
        struct ndc_array a;
        int r = ndc_acquire(s->ch, &a, 10 * SEC);
        if (r == -EPIPE)
            return 0;
        CK(r == 0, 3, "acquire %d", r);
        if (first && idx >= 2)
            want = a.tag;   /* a late subscriber starts where the stream is */
        first = 0;
        CK(th_check_u64(&a) == 0 && a.tag == want, 4, "got %llu want %llu", (unsigned long long)a.tag,
           (unsigned long long)want);
        if (idx < 3)
            atomic_store(&s->got[idx], (uint32_t)want + 1);
        if (idx >= 2 && a.tag % 97 == 13)
            usleep(300);   /* victims hold their loan a moment, sometimes */
        CK(ndc_release(s->ch, &a) == 0, 5, "release");
    }
}

Test(bcast, subscribers_killed_at_random, .timeout = 120)
{
    ndc_chan *ch = bchan(4, 0, NDC_SLOW_BLOCK);
    struct storm *s = th_shared(sizeof *s);
    s->ch = ch;
    pid_t keep[2];
    for (int i = 0; i < 2; i++)
        keep[i] = th_fork(storm_sub, s);
    while (atomic_load(&s->ready) < 2)
        usleep(200);
    usleep(20000);
    const uint64_t total = 20000;
    pid_t victim = 0;
    uint64_t rnd = 0x1234;
    int kills = 0;
    for (uint64_t k = 0; k < total; k++) {
        if (k % 2000 == 0) {
            if (victim) {
                kill(victim, SIGKILL);
                waitpid(victim, NULL, 0);
                kills++;
            }
            victim = th_fork(storm_sub, s);
        }
        if (victim && (th_mix(rnd++) % 500) == 0) {
            kill(victim, SIGKILL);
            waitpid(victim, NULL, 0);
            kills++;
            victim = 0;
        }
        int r = th_send_u64(ch, k, 1 + k % 5, 5 * SEC);
        cr_assert_eq(r, 0, "send #%llu: %d (%s) after %d kills", (unsigned long long)k, r, ndc_strerror(r), kills);
    }
    th_ok(ndc_close(ch));
    if (victim) {
        kill(victim, SIGKILL);
        waitpid(victim, NULL, 0);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(th_wait(keep[i], 30000), 0, "surviving subscriber %d failed", i);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(atomic_load(&s->got[i]), total, "survivor %d got %u", i, atomic_load(&s->got[i]));
    fprintf(stderr, "[bcast] %d subscribers killed; both survivors got all %llu arrays in order\n", kills,
            (unsigned long long)total);
    ndc_free(ch);
}
