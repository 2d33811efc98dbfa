/*
 * Threads on one handle (suite threads): senders and receivers deliver
 * every array exactly once; two threads' -EMSGSIZE at once keep both
 * arrays; two threads releasing one loan at once: exactly one succeeds.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "ndchan.h"
#include "helpers.h"

/* ---- many threads on one handle ------------------------------------------- */

enum { MT_SENDERS = 2, MT_RECEIVERS = 2, MT_PER = 2000 };

struct mt {
    ndc_chan *ch;
    int id;
    int bad;
    size_t n;
    uint64_t tags[MT_SENDERS * MT_PER];
    uint64_t seqs[MT_SENDERS * MT_PER];
};

static void *mt_send(void *p)
{
    struct mt *m = p;
    for (uint64_t c = 0; c < MT_PER; c++) {
        uint64_t tag = ((uint64_t)m->id << 32) | c;
        uint64_t v[8];
        int64_t s[] = { 1 + (int64_t)(c % 8) };
        for (int k = 0; k < 8; k++)
            v[k] = tag ^ ((uint64_t)k * 0x9e3779b97f4a7c15ull);
        struct ndc_array a;
        ndc_array_init(&a, NDC_U64, 1, s, v);
        a.tag = tag;
        int r;
        if (c % 2) {
            r = ndc_send(m->ch, &a, 10 * SEC);
        } else {
            struct ndc_array w = a;
            r = ndc_reserve(m->ch, &w, 10 * SEC);
            if (r == 0) {
                memcpy(w.data, v, (size_t)s[0] * 8);
                r = ndc_commit(m->ch, &w);
            }
        }
        if (r) {
            m->bad = r;
            return NULL;
        }
    }
    return NULL;
}

static void *mt_recv(void *p)
{
    struct mt *m = p;
    for (;;) {
        struct ndc_array a;
        uint64_t buf[8];
        int r;
        if (m->n % 2) {
            a.data = buf;
            r = ndc_recv(m->ch, &a, sizeof buf, 10 * SEC);
        } else {
            r = ndc_acquire(m->ch, &a, 10 * SEC);
        }
        if (r == -EPIPE)
            return NULL;
        if (r) {
            m->bad = r;
            return NULL;
        }
        const uint64_t *v = (m->n % 2) ? buf : a.data;
        uint64_t c = a.tag & 0xffffffffu;
        if (a.dtype != NDC_U64 || a.ndim != 1 || a.shape[0] != 1 + (int64_t)(c % 8))
            m->bad = 1000;
        for (int64_t k = 0; k < a.shape[0] && !m->bad; k++)
            if (v[k] != (a.tag ^ ((uint64_t)k * 0x9e3779b97f4a7c15ull)))
                m->bad = 1001;
        if (!(m->n % 2))
            ndc_release(m->ch, &a);
        if (m->n >= MT_SENDERS * MT_PER) {
            m->bad = 1002;
            return NULL;
        }
        m->tags[m->n] = a.tag;
        m->seqs[m->n] = a.seq;
        m->n++;
    }
}

Test(threads, mpmc_exactly_once, .timeout = 30)
{
    ndc_chan *ch = th_chan(4, 4096);
    static struct mt s[MT_SENDERS], r[MT_RECEIVERS];
    pthread_t ts[MT_SENDERS], tr[MT_RECEIVERS];
    for (int i = 0; i < MT_RECEIVERS; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].ch = ch;
        r[i].id = i;
        pthread_create(&tr[i], NULL, mt_recv, &r[i]);
    }
    for (int i = 0; i < MT_SENDERS; i++) {
        memset(&s[i], 0, sizeof s[i]);
        s[i].ch = ch;
        s[i].id = i;
        pthread_create(&ts[i], NULL, mt_send, &s[i]);
    }
    for (int i = 0; i < MT_SENDERS; i++)
        pthread_join(ts[i], NULL);
    th_ok(ndc_close(ch));
    for (int i = 0; i < MT_RECEIVERS; i++)
        pthread_join(tr[i], NULL);
    for (int i = 0; i < MT_SENDERS; i++)
        cr_assert_eq(s[i].bad, 0, "sender %d failed: %d (%s)", i, s[i].bad,
                     ndc_strerror(s[i].bad));
    for (int i = 0; i < MT_RECEIVERS; i++)
        cr_assert_eq(r[i].bad, 0, "receiver %d failed: %d (%s)", i, r[i].bad,
                     ndc_strerror(r[i].bad));
    /* seq_of[sender][counter]: each exactly once; seqs a permutation of 0..N-1
     * that rises with each sender's counter. */
    enum { N = MT_SENDERS * MT_PER };
    static int64_t seq_of[MT_SENDERS][MT_PER];
    static unsigned char seen_seq[N];
    memset(seq_of, 0xff, sizeof seq_of);
    memset(seen_seq, 0, sizeof seen_seq);
    size_t total = 0;
    for (int i = 0; i < MT_RECEIVERS; i++) {
        for (size_t k = 0; k < r[i].n; k++) {
            uint64_t id = r[i].tags[k] >> 32, c = r[i].tags[k] & 0xffffffffu;
            cr_assert(id < MT_SENDERS && c < MT_PER, "unknown tag %llx",
                      (unsigned long long)r[i].tags[k]);
            cr_assert_eq(seq_of[id][c], -1, "sender %llu array %llu received twice",
                         (unsigned long long)id, (unsigned long long)c);
            cr_assert_lt(r[i].seqs[k], (uint64_t)N, "seq %llu out of range",
                         (unsigned long long)r[i].seqs[k]);
            cr_assert_eq(seen_seq[r[i].seqs[k]], 0, "seq %llu delivered twice",
                         (unsigned long long)r[i].seqs[k]);
            seen_seq[r[i].seqs[k]] = 1;
            seq_of[id][c] = (int64_t)r[i].seqs[k];
            if (k > 0)
                cr_assert_gt(r[i].seqs[k], r[i].seqs[k - 1],
                             "one receiver saw seq %llu after %llu",
                             (unsigned long long)r[i].seqs[k],
                             (unsigned long long)r[i].seqs[k - 1]);
        }
        total += r[i].n;
    }
    cr_assert_eq(total, (size_t)N, "received %zu of %d", total, N);
    for (int id = 0; id < MT_SENDERS; id++)
        for (int c = 1; c < MT_PER; c++)
            cr_assert_gt(seq_of[id][c], seq_of[id][c - 1],
                         "sender %d: array %d has seq %lld before array %d's %lld", id, c,
                         (long long)seq_of[id][c], c - 1, (long long)seq_of[id][c - 1]);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, (uint64_t)N);
    cr_assert_eq(st.received, (uint64_t)N);
    ndc_free(ch);
}

/* ---- two threads on one loan, one receive --------------------------------- */

struct race { ndc_chan *ch; pthread_barrier_t *go; struct ndc_array a; int r; };

static void *recv_small(void *p)
{
    struct race *x = p;
    char buf[8];
    x->a.data = buf;
    pthread_barrier_wait(x->go);
    x->r = ndc_recv(x->ch, &x->a, sizeof buf, SEC);   /* both arrays are there: no wait */
    return NULL;
}

/* One stash word per handle: two threads' -EMSGSIZE at once overwrote one
 * kept loan, losing its array and its slot. Both must come back. */
Test(threads, two_threads_keep_two_arrays, .timeout = 60)
{
    ndc_chan *ch = th_chan(4, 64);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    for (int it = 0; it < 2000; it++) {
        for (int k = 0; k < 2; k++) {
            struct ndc_array a = {.dtype = NDC_U8, .ndim = 1, .shape = {16}, .tag = (uint64_t)k};
            th_ok(ndc_reserve(ch, &a, 0));
            th_ok(ndc_commit(ch, &a));
        }
        struct race x[2] = {{.ch = ch, .go = &go}, {.ch = ch, .go = &go}};
        pthread_t t[2];
        for (int k = 0; k < 2; k++)
            pthread_create(&t[k], NULL, recv_small, &x[k]);
        for (int k = 0; k < 2; k++)
            pthread_join(t[k], NULL);
        cr_assert(x[0].r == -EMSGSIZE && x[1].r == -EMSGSIZE, "%d %d", x[0].r, x[1].r);
        unsigned seen = 0;
        for (int k = 0; k < 2; k++) {
            struct ndc_array a;
            th_ok(ndc_acquire(ch, &a, 0));   /* the kept ones, oldest first */
            seen |= 1u << a.tag;
            th_ok(ndc_release(ch, &a));
        }
        cr_assert_eq(seen, 3u, "iteration %d: a kept array was lost", it);
        struct ndc_stat st;
        th_ok(ndc_stat(ch, &st));
        cr_assert_eq(st.free, 4u, "iteration %d: a slot leaked", it);
    }
    pthread_barrier_destroy(&go);
    ndc_free(ch);
}

static void *release_it(void *p)
{
    struct race *x = p;
    pthread_barrier_wait(x->go);
    x->r = ndc_release(x->ch, &x->a);
    return NULL;
}

/* Ownership was checked before the lock: two threads releasing one loan both
 * got 0 and listed the slot twice. Exactly one may succeed. */
Test(threads, one_loan_released_twice_at_once, .timeout = 60)
{
    ndc_chan *ch = th_chan(2, 64);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    for (int it = 0; it < 3000; it++) {
        struct ndc_array a = {.dtype = NDC_U8, .ndim = 1, .shape = {8}};
        th_ok(ndc_reserve(ch, &a, 0));
        th_ok(ndc_commit(ch, &a));
        th_ok(ndc_acquire(ch, &a, 0));
        struct race x[2] = {{.ch = ch, .go = &go, .a = a}, {.ch = ch, .go = &go, .a = a}};
        pthread_t t[2];
        for (int k = 0; k < 2; k++)
            pthread_create(&t[k], NULL, release_it, &x[k]);
        for (int k = 0; k < 2; k++)
            pthread_join(t[k], NULL);
        cr_assert((x[0].r == 0) + (x[1].r == 0) == 1 && (x[0].r == -EINVAL || x[1].r == -EINVAL),
                  "iteration %d: releases returned %d and %d", it, x[0].r, x[1].r);
        struct ndc_stat st;
        th_ok(ndc_stat(ch, &st));
        cr_assert_eq(st.free, 2u, "iteration %d", it);
    }
    pthread_barrier_destroy(&go);
    ndc_free(ch);
}
