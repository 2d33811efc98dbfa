/*
 * The zero-copy path (suite loan): reserve, commit, acquire, release and
 * cancel; seq order; several loans at once; -E2BIG and the largest array
 * that fits; empty and 0-d arrays; misuse (not a loan, not a reservation,
 * invalid headers). Every check looks at contents and order, not just at
 * return codes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan_helpers.h"

/* ---- the zero-copy path --------------------------------------------------- */

Test(loan, reserve_commit_acquire_release, .timeout = 10)
{
    ndc_chan *ch = th_chan(3, 1 << 16);
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 20; i++) {
        struct ndc_array a;
        poison(&a);
        a.dtype = NDC_F64;
        a.ndim = 2;
        a.shape[0] = 3 + i;
        a.shape[1] = 5;
        a.tag = 0xdeadbeefcafe0000ull + (uint64_t)i;
        th_ok(ndc_reserve(ch, &a, 0));
        cr_assert_not_null(a.data);
        cr_assert_eq((uintptr_t)a.data % (uintptr_t)page, 0, "slot payload not page aligned");
        cr_assert_eq(a.strides[0], 40);
        cr_assert_eq(a.strides[1], 8);
        cr_assert_eq(a.dtype, NDC_F64, "reserve changed the dtype");
        cr_assert_eq(a.shape[0], 3 + i, "reserve changed the shape");
        size_t n = ndc_array_nbytes(&a);
        th_fill(a.data, n, 500 + (uint64_t)i);
        struct ndc_stat st = th_stat(ch);
        cr_assert_eq(st.ready, 0, "a reserved array is visible before commit");
        cr_assert_eq(st.loaned, 1, "a reservation is not counted as loaned");
        struct ndc_array peek;
        poison(&peek);
        th_expect(ndc_acquire(ch, &peek, 0), -EAGAIN);
        cr_assert(is_poisoned(&peek), "acquire wrote its output on failure");
        th_ok(ndc_commit(ch, &a));

        struct ndc_array r;
        poison(&r);
        th_ok(ndc_acquire(ch, &r, 0));
        cr_assert_eq(r.dtype, NDC_F64);
        cr_assert_eq(r.ndim, 2);
        cr_assert_eq(r.shape[0], 3 + i);
        cr_assert_eq(r.shape[1], 5);
        cr_assert_eq(r.strides[0], 40);
        cr_assert_eq(r.strides[1], 8);
        cr_assert_eq(r.tag, 0xdeadbeefcafe0000ull + (uint64_t)i, "tag not carried unchanged");
        cr_assert_eq(r.seq, (uint64_t)i, "seq %llu, want %d", (unsigned long long)r.seq, i);
        cr_assert(th_check(r.data, n, 500 + (uint64_t)i), "payload %d differs", i);
        th_ok(ndc_release(ch, &r));
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.free, 3);
    cr_assert_eq(st.sent, 20);
    cr_assert_eq(st.received, 20);
    ndc_free(ch);
}

Test(loan, seq_follows_commit_order, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    struct ndc_array a[3];
    for (int i = 0; i < 3; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].dtype = NDC_U8;
        a[i].ndim = 1;
        a[i].shape[0] = 100 + i;
        a[i].tag = 10 + (uint64_t)i;
        th_ok(ndc_reserve(ch, &a[i], 0));
        th_fill(a[i].data, 100 + (size_t)i, 90 + (uint64_t)i);
    }
    cr_assert(a[0].data != a[1].data && a[1].data != a[2].data && a[0].data != a[2].data,
              "two reservations share a slot");
    /* Commit 2, 0, 1: that is the receive order, with seq 0, 1, 2. */
    int order[] = { 2, 0, 1 };
    for (int k = 0; k < 3; k++)
        th_ok(ndc_commit(ch, &a[order[k]]));
    for (int k = 0; k < 3; k++) {
        int i = order[k];
        int64_t shape[] = { 100 + i };
        expect_filled(ch, NDC_U8, 1, shape, 10 + (uint64_t)i, 90 + (uint64_t)i, (uint64_t)k);
    }
    ndc_free(ch);
}

Test(loan, several_loans_any_order, .timeout = 10)
{
    enum { N = 5 };
    ndc_chan *ch = th_chan(N, 8192);
    int64_t shape[] = { 7, 9 };
    for (int i = 0; i < N; i++)
        send_filled(ch, NDC_I32, 2, shape, (uint64_t)i, 3000 + (uint64_t)i);
    struct ndc_array l[N];
    for (int i = 0; i < N; i++) {
        th_ok(ndc_acquire(ch, &l[i], 0));
        cr_assert_eq(l[i].seq, (uint64_t)i);
        cr_assert_eq(l[i].tag, (uint64_t)i);
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.loaned, N, "loaned %u, want %d", st.loaned, N);
    cr_assert_eq(st.free, 0);
    /* All loans stay valid and distinct while held together. */
    for (int i = 0; i < N; i++)
        cr_assert(th_check(l[i].data, 7 * 9 * 4, 3000 + (uint64_t)i), "loan %d corrupted", i);
    int rel[] = { 3, 0, 4, 1, 2 };
    for (int k = 0; k < N; k++) {
        th_ok(ndc_release(ch, &l[rel[k]]));
        st = th_stat(ch);
        cr_assert_eq(st.free, (uint32_t)k + 1);
        for (int j = k + 1; j < N; j++)   /* the others are untouched */
            cr_assert(th_check(l[rel[j]].data, 7 * 9 * 4, 3000 + (uint64_t)rel[j]),
                      "loan %d corrupted after releasing %d", rel[j], rel[k]);
    }
    /* The freed slots are reused and still deliver in order. */
    for (int i = 0; i < N; i++)
        send_filled(ch, NDC_I32, 2, shape, 100 + (uint64_t)i, 4000 + (uint64_t)i);
    for (int i = 0; i < N; i++)
        expect_filled(ch, NDC_I32, 2, shape, 100 + (uint64_t)i, 4000 + (uint64_t)i,
                      (uint64_t)(N + i));
    ndc_free(ch);
}

Test(loan, refill_after_loans, .timeout = 10)
{
    enum { N = 4 };
    ndc_chan *ch = th_chan(N, 8192);
    int64_t shape[] = { 33 };
    uint64_t seq = 0;
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < N; i++)
            send_filled(ch, NDC_C64, 1, shape, (uint64_t)(round * N + i),
                        (uint64_t)(round * N + i));
        int64_t big[] = { 1 };
        struct ndc_array x = mkarr(NDC_U8, 1, big, "z", 0);
        th_expect(ndc_send(ch, &x, 0), -EAGAIN);
        for (int i = 0; i < N; i++)
            expect_filled(ch, NDC_C64, 1, shape, (uint64_t)(round * N + i),
                          (uint64_t)(round * N + i), seq++);
    }
    ndc_free(ch);
}

/* ---- -E2BIG, and the largest array that fits ----------------------------- */

Test(loan, too_big_before_anything, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct ndc_stat st0 = th_stat(ch);
    int64_t big[] = { 513 };   /* 4104 bytes of float64 */
    double *buf = calloc(513, sizeof *buf);
    struct ndc_array a = mkarr(NDC_F64, 1, big, buf, 1);
    th_expect(ndc_send(ch, &a, 0), -E2BIG);
    th_expect(ndc_send(ch, &a, NDC_FOREVER), -E2BIG);
    struct ndc_array r;
    poison(&r);
    r.dtype = NDC_F64;
    r.ndim = 1;
    r.shape[0] = 513;
    r.tag = 0;
    struct ndc_array r0 = r;
    th_expect(ndc_reserve(ch, &r, 0), -E2BIG);
    cr_assert(memcmp(&r, &r0, sizeof r) == 0, "ndc_reserve wrote its output on -E2BIG");
    struct ndc_stat st1 = th_stat(ch);
    cr_assert(memcmp(&st0, &st1, sizeof st0) == 0,
              "-E2BIG changed the channel's state (sent %llu, free %u)",
              (unsigned long long)st1.sent, st1.free);

    /* Checked before waiting: on a full channel, NDC_FOREVER returns at once. */
    int64_t one[] = { 1 };
    send_filled(ch, NDC_F64, 1, one, 1, 1);
    send_filled(ch, NDC_F64, 1, one, 2, 2);
    int64_t t0 = th_now_ns();
    th_expect(ndc_send(ch, &a, NDC_FOREVER), -E2BIG);
    poison(&r);
    r.dtype = NDC_U8;
    r.ndim = 2;
    r.shape[0] = 4097;
    r.shape[1] = 1;
    th_expect(ndc_reserve(ch, &r, NDC_FOREVER), -E2BIG);
    cr_assert_lt(elapsed_since(t0), SEC, "-E2BIG waited for a slot first");
    /* Overflowing shapes are not E2BIG by accident of wrap-around. */
    poison(&r);
    r.dtype = NDC_U8;
    r.ndim = 4;
    r.shape[0] = r.shape[1] = r.shape[2] = r.shape[3] = 1 << 16;   /* 2^64: wraps to 0 */
    int rr = ndc_reserve(ch, &r, 0);
    cr_assert(rr == -E2BIG || rr == -EINVAL || rr == -EOVERFLOW,
              "a 2^64-byte array reserved: %d (%s)", rr, ndc_strerror(rr));
    expect_filled(ch, NDC_F64, 1, one, 1, 1, 0);
    expect_filled(ch, NDC_F64, 1, one, 2, 2, 1);
    free(buf);
    ndc_free(ch);
}

Test(loan, largest_that_fits, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    int64_t s1[] = { 4096 };
    send_filled(ch, NDC_U8, 1, s1, 1, 41);
    expect_filled(ch, NDC_U8, 1, s1, 1, 41, 0);
    int64_t s2[] = { 8, 4, 16 };
    send_filled(ch, NDC_F64, 3, s2, 2, 42);
    expect_filled(ch, NDC_F64, 3, s2, 2, 42, 1);
    /* In place: the whole slot is writable. */
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    a.dtype = NDC_C128;
    a.ndim = 1;
    a.shape[0] = 256;
    a.tag = 3;
    th_ok(ndc_reserve(ch, &a, 0));
    th_fill(a.data, 4096, 43);
    th_ok(ndc_commit(ch, &a));
    expect_filled(ch, NDC_C128, 1, (int64_t[]){ 256 }, 3, 43, 2);
    ndc_free(ch);

    /* A slot_bytes that is not a page multiple is honoured to the byte. */
    ch = th_chan(2, 5000);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.slot_bytes, 5000, "slot_bytes %llu, want 5000",
                 (unsigned long long)st.slot_bytes);
    int64_t ok[] = { 5000 }, bad[] = { 5001 };
    send_filled(ch, NDC_U8, 1, ok, 4, 44);
    char *buf = calloc(1, 5001);
    struct ndc_array b = mkarr(NDC_U8, 1, bad, buf, 0);
    th_expect(ndc_send(ch, &b, 0), -E2BIG);
    expect_filled(ch, NDC_U8, 1, ok, 4, 44, 0);
    free(buf);
    ndc_free(ch);
}

Test(loan, commit_may_shrink_not_grow, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    a.dtype = NDC_F64;
    a.ndim = 1;
    a.shape[0] = 512;
    a.tag = 7;
    th_ok(ndc_reserve(ch, &a, 0));
    a.shape[0] = 513;
    th_expect(ndc_commit(ch, &a), -E2BIG);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.loaned, 1, "the slot must stay reserved after -E2BIG");
    cr_assert_eq(st.ready, 0);
    /* Shrink it and reshape: committed as described at commit time. */
    a.ndim = 2;
    a.shape[0] = 10;
    a.shape[1] = 3;
    a.strides[0] = 24;
    a.strides[1] = 8;
    a.tag = 8;
    th_fill(a.data, 240, 77);
    th_ok(ndc_commit(ch, &a));
    expect_filled(ch, NDC_F64, 2, (int64_t[]){ 10, 3 }, 8, 77, 0);
    ndc_free(ch);
}

/* ---- empty and 0-d arrays -------------------------------------------------- */

Test(loan, empty_and_scalar, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    /* Zero-size, copy path. */
    int64_t z[] = { 0, 3 };
    float fdummy[1] = { 0 };
    struct ndc_array a = mkarr(NDC_F32, 2, z, fdummy, 31);
    th_ok(ndc_send(ch, &a, 0));
    /* 0-d, copy path. */
    double x = 3.25;
    struct ndc_array s = mkarr(NDC_F64, 0, NULL, &x, 32);
    th_ok(ndc_send(ch, &s, 0));
    /* Zero-size and 0-d, in place. */
    struct ndc_array w;
    memset(&w, 0, sizeof w);
    w.dtype = NDC_C128;
    w.ndim = 1;
    w.shape[0] = 0;
    w.tag = 33;
    th_ok(ndc_reserve(ch, &w, 0));
    th_ok(ndc_commit(ch, &w));
    memset(&w, 0, sizeof w);
    w.dtype = NDC_I16;
    w.ndim = 0;
    w.tag = 34;
    th_ok(ndc_reserve(ch, &w, 0));
    cr_assert_not_null(w.data);
    *(int16_t *)w.data = -1234;
    th_ok(ndc_commit(ch, &w));

    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, 4);
    cr_assert_eq(st.bytes_sent, 10, "bytes_sent %llu, want 0 + 8 + 0 + 2",
                 (unsigned long long)st.bytes_sent);

    struct ndc_array r;
    unsigned char buf[32];
    memset(buf, 0x11, sizeof buf);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, 0, 0));
    cr_assert_eq(r.dtype, NDC_F32);
    cr_assert_eq(r.ndim, 2);
    cr_assert_eq(r.shape[0], 0);
    cr_assert_eq(r.shape[1], 3);
    cr_assert_eq(r.tag, 31);
    cr_assert_eq(r.seq, 0);
    cr_assert_eq(buf[0], 0x11, "an empty array wrote bytes");

    r.data = buf;
    th_expect(ndc_recv(ch, &r, 7, 0), -EMSGSIZE);   /* a scalar float64 needs 8 */
    cr_assert_eq(r.ndim, 0);
    cr_assert_eq(ndc_array_nbytes(&r), 8);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, 8, 0));
    cr_assert_eq(r.ndim, 0);
    cr_assert_eq(r.dtype, NDC_F64);
    cr_assert_eq(r.tag, 32);
    cr_assert_eq(r.seq, 1);
    double got;
    memcpy(&got, buf, 8);
    cr_assert_eq(got, 3.25);

    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.dtype, NDC_C128);
    cr_assert_eq(r.ndim, 1);
    cr_assert_eq(r.shape[0], 0);
    cr_assert_eq(r.strides[0], 16);
    cr_assert_eq(r.tag, 33);
    cr_assert_eq(r.seq, 2);
    th_ok(ndc_release(ch, &r));
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.ndim, 0);
    cr_assert_eq(r.tag, 34);
    cr_assert_eq(r.seq, 3);
    cr_assert_eq(*(int16_t *)r.data, -1234);
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
}

/* ---- misuse: not a loan, not a reservation, invalid headers --------------- */

Test(loan, release_not_a_loan, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct ndc_array r;
    memset(&r, 0, sizeof r);
    th_expect(ndc_release(ch, &r), -EINVAL);
    unsigned char local[64];
    int64_t s[] = { 8 };
    r = mkarr(NDC_U8, 1, s, local, 0);
    th_expect(ndc_release(ch, &r), -EINVAL);

    send_filled(ch, NDC_U8, 1, s, 1, 1);
    th_ok(ndc_acquire(ch, &r, 0));
    struct ndc_array copy = r;
    copy.data = (char *)r.data + 8;   /* inside the slot, not its start */
    th_expect(ndc_release(ch, &copy), -EINVAL);
    th_ok(ndc_release(ch, &r));
    th_expect(ndc_release(ch, &r), -EINVAL);   /* twice */
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.free, 2);
    cr_assert_eq(st.loaned, 0);
    /* A double release must not have duplicated the slot in the free pool. */
    for (int i = 0; i < 2; i++)
        send_filled(ch, NDC_U8, 1, s, 10 + (uint64_t)i, 10 + (uint64_t)i);
    struct ndc_array a = mkarr(NDC_U8, 1, s, local, 0);
    th_expect(ndc_send(ch, &a, 0), -EAGAIN);
    expect_filled(ch, NDC_U8, 1, s, 10, 10, 1);
    expect_filled(ch, NDC_U8, 1, s, 11, 11, 2);
    ndc_free(ch);
}

Test(loan, commit_not_reserved, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    unsigned char local[64];
    int64_t s[] = { 8 };
    struct ndc_array a = mkarr(NDC_U8, 1, s, local, 0);
    th_expect(ndc_commit(ch, &a), -EINVAL);
    a.data = NULL;
    th_expect(ndc_commit(ch, &a), -EINVAL);

    struct ndc_array w;
    memset(&w, 0, sizeof w);
    w.dtype = NDC_U8;
    w.ndim = 1;
    w.shape[0] = 8;
    th_ok(ndc_reserve(ch, &w, 0));
    struct ndc_array off = w;
    off.data = (char *)w.data + 64;
    th_expect(ndc_commit(ch, &off), -EINVAL);
    struct ndc_array bad = w;
    bad.dtype = (enum ndc_dtype)0;
    th_expect(ndc_commit(ch, &bad), -EINVAL);
    bad = w;
    bad.shape[0] = -1;
    th_expect(ndc_commit(ch, &bad), -EINVAL);
    bad = w;
    bad.strides[0] = 2;   /* not C order */
    th_expect(ndc_commit(ch, &bad), -EINVAL);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.ready, 0, "an invalid commit published something");
    cr_assert_eq(st.loaned, 1, "an invalid commit dropped the reservation");
    memset(w.data, 0x42, 8);
    th_ok(ndc_commit(ch, &w));
    th_expect(ndc_commit(ch, &w), -EINVAL);   /* twice */
    st = th_stat(ch);
    cr_assert_eq(st.ready, 1, "a second commit published the slot again");

    /* An acquired loan is not a reservation. */
    struct ndc_array r;
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(((unsigned char *)r.data)[7], 0x42);
    th_expect(ndc_commit(ch, &r), -EINVAL);
    th_ok(ndc_release(ch, &r));
    th_expect(ndc_acquire(ch, &r, 0), -EAGAIN);
    ndc_free(ch);
}

Test(loan, invalid_headers_rejected, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    unsigned char local[64] = { 0 };
    struct ndc_array a;
    struct {
        int dtype, ndim;
        int64_t s0;
    } bad[] = { { 0, 1, 4 }, { 16, 1, 4 }, { -1, 1, 4 }, { NDC_U8, -1, 4 },
                { NDC_U8, NDC_MAX_DIMS + 1, 1 }, { NDC_U8, 1, -4 } };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&a, 0, sizeof a);
        a.data = local;
        a.dtype = (enum ndc_dtype)bad[i].dtype;
        a.ndim = bad[i].ndim;
        for (int d = 0; d < NDC_MAX_DIMS; d++) {
            a.shape[d] = 1;
            a.strides[d] = 1;
        }
        a.shape[0] = bad[i].s0;
        int r = ndc_send(ch, &a, 0);
        cr_assert_eq(r, -EINVAL, "case %zu: ndc_send = %d (%s), want -EINVAL", i, r,
                     ndc_strerror(r));
        struct ndc_array w = a;
        r = ndc_reserve(ch, &w, 0);
        cr_assert_eq(r, -EINVAL, "case %zu: ndc_reserve = %d (%s), want -EINVAL", i, r,
                     ndc_strerror(r));
        cr_assert(memcmp(&w, &a, sizeof a) == 0, "case %zu: reserve wrote on failure", i);
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.free, 2);
    cr_assert_eq(st.sent, 0);
    ndc_free(ch);
}

/* ---- ndc_cancel ----------------------------------------------------------- */

Test(loan, cancel_returns_the_slot_unpublished, .timeout = 10)
{
    ndc_chan *ch;
    struct ndc_chan_opts o = {.slots = 2, .slot_bytes = 4096};
    th_ok(ndc_create(&ch, NULL, &o));
    struct ndc_array a = {.dtype = NDC_U8, .ndim = 1, .shape = {16}, .tag = 7};
    th_ok(ndc_reserve(ch, &a, 0));
    struct ndc_stat st;
    th_ok(ndc_stat(ch, &st));
    cr_assert_eq(st.loaned, 1);
    th_ok(ndc_cancel(ch, &a));
    th_ok(ndc_stat(ch, &st));
    cr_assert_eq(st.free, 2, "a cancelled slot is free again");
    cr_assert_eq(st.sent, 0, "nothing was published");
    struct ndc_array r;
    th_expect(ndc_acquire(ch, &r, 0), -EAGAIN);
    /* twice, or after a commit, or on a loan: not a reservation any more */
    th_expect(ndc_cancel(ch, &a), -EINVAL);
    th_ok(ndc_reserve(ch, &a, 0));
    th_ok(ndc_commit(ch, &a));
    th_expect(ndc_cancel(ch, &a), -EINVAL);
    th_ok(ndc_acquire(ch, &r, 0));
    th_expect(ndc_cancel(ch, &r), -EINVAL);
    cr_assert_eq(r.seq, 0, "the cancelled reservation took no seq");
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
}
