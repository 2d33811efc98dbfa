/*
 * The copy path (suite copy): ndc_send from strided views of every dtype
 * arrives in C order, and ndc_recv into a buffer too small returns
 * -EMSGSIZE and keeps the array for the next call.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan_helpers.h"

/* ---- ndc_send from strided views ---------------------------------------- */

struct view_case {
    int ndim;
    int64_t shape[3];
    int64_t strides[3];   /* in elements */
    int64_t offset;       /* in elements */
    int byte_skew;        /* extra bytes: unaligned data */
};

/* Views into a 16 x 12 base array. */
static const struct view_case view_cases[] = {
    { 2, { 16, 6 }, { 12, 2 }, 0, 0 },          /* every other column */
    { 2, { 16, 12 }, { -12, 1 }, 15 * 12, 0 },  /* rows reversed */
    { 2, { 16, 12 }, { -12, -1 }, 16 * 12 - 1, 0 }, /* both reversed */
    { 2, { 5, 12 }, { 0, 1 }, 3 * 12, 0 },      /* a row broadcast */
    { 2, { 4, 4 }, { 0, 0 }, 7, 0 },            /* a scalar broadcast */
    { 2, { 12, 16 }, { 1, 12 }, 0, 0 },         /* transposed */
    { 3, { 2, 4, 3 }, { 96, -12, 3 }, 3 * 12, 0 }, /* 3-d, mixed signs */
    { 1, { 10 }, { -3 }, 30, 0 },               /* negative step 3 */
    { 3, { 3, 1, 4 }, { 24, 5, 0 }, 1, 0 },     /* broadcast inner, extent-1 dim */
    { 2, { 8, 6 }, { 24, 2 }, 1, 1 },           /* unaligned data */
    { 2, { 16, 0 }, { 12, 1 }, 0, 0 },          /* empty view */
};
#define N_VIEWS (int)(sizeof view_cases / sizeof view_cases[0])

struct view_param { int dtype; int vcase; };

ParameterizedTestParameters(copy, send_views)
{
    static struct view_param p[4 * N_VIEWS];
    static const int dts[] = { NDC_U8, NDC_I16, NDC_F64, NDC_C128 };
    size_t n = 0;
    for (int d = 0; d < 4; d++)
        for (int v = 0; v < N_VIEWS; v++)
            p[n++] = (struct view_param){ dts[d], v };
    return cr_make_param_array(struct view_param, p, n);
}

static void gather(const struct ndc_array *v, void *out)
{
    size_t item = ndc_dtype_size(v->dtype);
    size_t n = ndc_array_nbytes(v) / item;
    int64_t idx[NDC_MAX_DIMS] = { 0 };
    char *o = out;
    for (size_t k = 0; k < n; k++) {
        const char *p = v->data;
        for (int d = 0; d < v->ndim; d++)
            p += idx[d] * v->strides[d];
        memcpy(o + k * item, p, item);
        for (int d = v->ndim - 1; d >= 0; d--) {
            if (++idx[d] < v->shape[d])
                break;
            idx[d] = 0;
        }
    }
}

ParameterizedTest(struct view_param *p, copy, send_views, .timeout = 10)
{
    const struct view_case *vc = &view_cases[p->vcase];
    enum ndc_dtype t = (enum ndc_dtype)p->dtype;
    int64_t item = (int64_t)ndc_dtype_size(t);
    size_t base_bytes = (size_t)(16 * 12 * item) + 16;
    unsigned char *base = malloc(base_bytes);
    th_fill(base, base_bytes, (uint64_t)(p->dtype * 100 + p->vcase));

    struct ndc_array v;
    memset(&v, 0, sizeof v);
    v.dtype = t;
    v.ndim = vc->ndim;
    v.data = base + vc->offset * item + vc->byte_skew;
    v.tag = 0x5000 + (uint64_t)p->vcase;
    for (int d = 0; d < vc->ndim; d++) {
        v.shape[d] = vc->shape[d];
        v.strides[d] = vc->strides[d] * item;
    }
    size_t n = ndc_array_nbytes(&v);
    unsigned char *want = malloc(n + 1);
    gather(&v, want);
    const struct ndc_array v_before = v;
    unsigned char *base_copy = malloc(base_bytes);
    memcpy(base_copy, base, base_bytes);

    ndc_chan *ch = th_chan(2, 1 << 16);
    /* some cases are deliberate broadcasts (every stride zero) */
    th_ok(ndc_send_flags(ch, &v, 0, NDC_SEND_BROADCAST));
    th_ok(ndc_send_flags(ch, &v, 0, NDC_SEND_BROADCAST));
    cr_assert(memcmp(&v, &v_before, sizeof v) == 0, "ndc_send modified its input array");
    cr_assert(memcmp(base, base_copy, base_bytes) == 0, "ndc_send wrote to the source data");

    /* Copy path: arrives C-contiguous, exact. */
    unsigned char *got = malloc(n + 64);
    memset(got, 0x77, n + 64);
    struct ndc_array r;
    poison(&r);
    r.data = got;
    th_ok(ndc_recv(ch, &r, n + 64, 0));
    cr_assert_eq(r.data, got, "ndc_recv changed a->data");
    cr_assert_eq(r.ndim, vc->ndim);
    for (int d = 0; d < vc->ndim; d++)
        cr_assert_eq(r.shape[d], vc->shape[d]);
    assert_c_strides(&r);
    cr_assert_eq(r.tag, v.tag);
    cr_assert_eq(r.seq, 0);
    cr_assert(memcmp(got, want, n) == 0, "%s view %d: ndc_recv bytes differ from the view",
              ndc_dtype_name(t), p->vcase);
    for (size_t i = n; i < n + 64; i++)
        cr_assert_eq(got[i], 0x77, "ndc_recv wrote past the array's %zu bytes", n);

    /* Zero-copy read of the same: identical, and C strides. */
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.seq, 1);
    assert_c_strides(&r);
    cr_assert_eq(ndc_array_nbytes(&r), n);
    cr_assert(n == 0 || memcmp(r.data, want, n) == 0, "acquired bytes differ from the view");
    th_ok(ndc_release(ch, &r));
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.bytes_sent, 2 * n, "bytes_sent %llu, want %zu",
                 (unsigned long long)st.bytes_sent, 2 * n);
    ndc_free(ch);
    free(got);
    free(want);
    free(base_copy);
    free(base);
}

/* ---- ndc_recv into a small buffer: -EMSGSIZE keeps the array ------------- */

Test(copy, recv_too_small_keeps_array, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    int64_t shape[] = { 4, 4 };
    send_filled(ch, NDC_F64, 2, shape, 9, 900);
    int64_t shape2[] = { 3 };
    send_filled(ch, NDC_I8, 1, shape2, 10, 901);

    unsigned char buf[256];
    memset(buf, 0x5a, sizeof buf);
    for (int attempt = 0; attempt < 3; attempt++) {
        struct ndc_array r;
        poison(&r);
        r.data = buf;
        int64_t t0 = th_now_ns();
        th_expect(ndc_recv(ch, &r, 127, attempt == 2 ? NDC_FOREVER : 0), -EMSGSIZE);
        cr_assert_lt(elapsed_since(t0), SEC, "-EMSGSIZE took a second");
        cr_assert_eq(r.data, buf, "-EMSGSIZE changed a->data");
        cr_assert_eq(r.dtype, NDC_F64);
        cr_assert_eq(r.ndim, 2);
        cr_assert_eq(r.shape[0], 4);
        cr_assert_eq(r.shape[1], 4);
        cr_assert_eq(r.tag, 9);
        cr_assert_eq(r.seq, 0, "attempt %d: seq %llu, want the kept array's 0", attempt,
                     (unsigned long long)r.seq);
        cr_assert_eq(ndc_array_nbytes(&r), 128, "nbytes of the reported shape: %zu",
                     ndc_array_nbytes(&r));
        for (size_t i = 0; i < sizeof buf; i++)
            cr_assert_eq(buf[i], 0x5a, "-EMSGSIZE wrote into the caller's buffer");
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, 2);
    /* A big enough buffer now gets that same array. */
    struct ndc_array r;
    poison(&r);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, 128, 0));
    cr_assert_eq(r.seq, 0);
    cr_assert_eq(r.tag, 9);
    cr_assert(th_check(buf, 128, 900), "the kept array's bytes differ");
    cr_assert_eq(buf[128], 0x5a, "ndc_recv wrote past 128 bytes");
    /* Then the next one. */
    poison(&r);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, sizeof buf, 0));
    cr_assert_eq(r.seq, 1);
    cr_assert_eq(r.tag, 10);
    cr_assert(th_check(buf, 3, 901));
    th_expect(ndc_recv(ch, &r, sizeof buf, 0), -EAGAIN);
    st = th_stat(ch);
    cr_assert_eq(st.free, 4, "a slot leaked after -EMSGSIZE");
    cr_assert_eq(st.received, 2);
    ndc_free(ch);
}

Test(copy, recv_too_small_then_acquire, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    int64_t shape[] = { 2, 3, 5 };
    send_filled(ch, NDC_U16, 3, shape, 21, 2100);
    send_filled(ch, NDC_U16, 3, shape, 22, 2200);
    unsigned char buf[8];
    struct ndc_array r;
    poison(&r);
    r.data = buf;
    th_expect(ndc_recv(ch, &r, sizeof buf, 0), -EMSGSIZE);
    cr_assert_eq(r.seq, 0);
    expect_filled(ch, NDC_U16, 3, shape, 21, 2100, 0);
    expect_filled(ch, NDC_U16, 3, shape, 22, 2200, 1);
    /* Capacity 0 with a valid pointer: an empty array fits, others do not. */
    int64_t z[] = { 0, 4 };
    send_filled(ch, NDC_F32, 2, z, 23, 0);
    poison(&r);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, 0, 0));
    cr_assert_eq(r.seq, 2);
    cr_assert_eq(r.shape[0], 0);
    cr_assert_eq(r.shape[1], 4);
    ndc_free(ch);
}
