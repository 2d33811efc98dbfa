/* Helpers shared by the single-process channel tests: see chan_helpers.h. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan_helpers.h"

void poison(struct ndc_array *a)
{
    memset(a, 0xa5, sizeof *a);
}

int is_poisoned(const struct ndc_array *a)
{
    struct ndc_array ref;
    poison(&ref);
    return memcmp(a, &ref, sizeof ref) == 0;
}

struct ndc_array mkarr(enum ndc_dtype t, int ndim, const int64_t *shape, void *data,
                       uint64_t tag)
{
    struct ndc_array a;
    th_ok(ndc_array_init(&a, t, ndim, shape, data));
    a.tag = tag;
    return a;
}

/* Send a C-order array whose bytes are th_fill(seed); returns nbytes. */
size_t send_filled(ndc_chan *ch, enum ndc_dtype t, int ndim, const int64_t *shape,
                   uint64_t tag, uint64_t seed)
{
    struct ndc_array a = mkarr(t, ndim, shape, NULL, tag);
    size_t n = ndc_array_nbytes(&a);
    void *buf = malloc(n ? n : 1);
    th_fill(buf, n, seed);
    a.data = buf;
    th_ok(ndc_send(ch, &a, 0));
    free(buf);
    return n;
}

void assert_c_strides(const struct ndc_array *a)
{
    /* Outside a zero extent both the plain product (0) and numpy's (which
     * skips zero extents) describe the same empty memory: accept either. */
    int64_t s = (int64_t)ndc_dtype_size(a->dtype), np = s;
    for (int i = a->ndim - 1; i >= 0; i--) {
        cr_assert(a->strides[i] == s || a->strides[i] == np,
                  "strides[%d] = %lld, want C order %lld", i, (long long)a->strides[i],
                  (long long)s);
        s *= a->shape[i];
        if (a->shape[i])
            np *= a->shape[i];
    }
}

/* Acquire one array and check its header and bytes against what
 * send_filled() sent. */
void expect_filled(ndc_chan *ch, enum ndc_dtype t, int ndim, const int64_t *shape,
                   uint64_t tag, uint64_t seed, uint64_t seq)
{
    struct ndc_array a;
    poison(&a);
    th_ok(ndc_acquire(ch, &a, 0));
    cr_assert_eq(a.dtype, t, "dtype %d, want %d", a.dtype, t);
    cr_assert_eq(a.ndim, ndim, "ndim %d, want %d", a.ndim, ndim);
    for (int i = 0; i < ndim; i++)
        cr_assert_eq(a.shape[i], shape[i], "shape[%d] = %lld, want %lld", i,
                     (long long)a.shape[i], (long long)shape[i]);
    assert_c_strides(&a);
    cr_assert_eq(a.tag, tag, "tag %llu, want %llu", (unsigned long long)a.tag,
                 (unsigned long long)tag);
    cr_assert_eq(a.seq, seq, "seq %llu, want %llu", (unsigned long long)a.seq,
                 (unsigned long long)seq);
    size_t n = ndc_array_nbytes(&a);
    cr_assert(n == 0 || a.data != NULL);
    cr_assert(th_check(a.data, n, seed), "payload of tag %llu differs from what was sent",
              (unsigned long long)tag);
    th_ok(ndc_release(ch, &a));
}

int64_t elapsed_since(int64_t t0)
{
    return th_now_ns() - t0;
}
