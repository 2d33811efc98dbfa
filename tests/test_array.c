/*
 * Array views: ndc_array_init's C-order strides, every invalid argument
 * (which must leave the output untouched), overflow of the payload size, and
 * ndc_array_nbytes on valid, invalid and zero-size views.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "ndchan.h"
#include "helpers.h"

/* A recognisable garbage pattern: a call that must not touch `a` must leave
 * every byte of it as it was. */
static void poison(struct ndc_array *a)
{
    memset(a, 0xa5, sizeof *a);
}

static void assert_poisoned(const struct ndc_array *a, const char *what)
{
    struct ndc_array ref;
    poison(&ref);
    cr_assert(memcmp(a, &ref, sizeof ref) == 0, "%s: the array was modified on failure", what);
}

/* Expected C-order strides, computed independently (plain product). */
static void c_strides(int ndim, const int64_t *shape, int64_t item, int64_t *out)
{
    int64_t s = item;
    for (int i = ndim - 1; i >= 0; i--) {
        out[i] = s;
        s *= shape[i];
    }
}

static void assert_c_order(const struct ndc_array *a, int64_t item)
{
    int64_t want[NDC_MAX_DIMS];
    c_strides(a->ndim, a->shape, item, want);
    for (int i = 0; i < a->ndim; i++)
        cr_assert_eq(a->strides[i], want[i], "ndim %d: strides[%d] = %lld, want %lld",
                     a->ndim, i, (long long)a->strides[i], (long long)want[i]);
}

/* ---- valid arrays -------------------------------------------------------- */

Test(array, zero_d, .timeout = 5)
{
    struct ndc_array a;
    poison(&a);
    double x = 1.5;
    th_ok(ndc_array_init(&a, NDC_F64, 0, NULL, &x));
    cr_assert_eq(a.data, &x);
    cr_assert_eq(a.dtype, NDC_F64);
    cr_assert_eq(a.ndim, 0);
    cr_assert_eq(a.tag, 0, "tag not reset: %llx", (unsigned long long)a.tag);
    cr_assert_eq(a.seq, 0, "seq not reset: %llx", (unsigned long long)a.seq);
    cr_assert_eq(ndc_array_nbytes(&a), 8, "a 0-d float64 holds one element: %zu",
                 ndc_array_nbytes(&a));

    /* shape may be non-NULL with ndim 0: it is not read. */
    int64_t junk[1] = { -5 };
    poison(&a);
    th_ok(ndc_array_init(&a, NDC_C128, 0, junk, NULL));
    cr_assert_eq(a.data, NULL);
    cr_assert_eq(ndc_array_nbytes(&a), 16);
}

Test(array, one_d, .timeout = 5)
{
    struct ndc_array a;
    poison(&a);
    int64_t shape[] = { 7 };
    th_ok(ndc_array_init(&a, NDC_I32, 1, shape, (void *)0x1000));
    cr_assert_eq(a.data, (void *)0x1000);
    cr_assert_eq(a.ndim, 1);
    cr_assert_eq(a.shape[0], 7);
    cr_assert_eq(a.strides[0], 4);
    cr_assert_eq(a.tag, 0);
    cr_assert_eq(a.seq, 0);
    cr_assert_eq(ndc_array_nbytes(&a), 28);
}

Test(array, n_d, .timeout = 5)
{
    struct ndc_array a;
    poison(&a);
    int64_t shape[] = { 2, 3, 4, 5 };
    th_ok(ndc_array_init(&a, NDC_F64, 4, shape, NULL));
    int64_t want[] = { 480, 160, 40, 8 };
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(a.shape[i], shape[i]);
        cr_assert_eq(a.strides[i], want[i], "strides[%d] = %lld, want %lld", i,
                     (long long)a.strides[i], (long long)want[i]);
    }
    cr_assert_eq(ndc_array_nbytes(&a), 960);
    /* The caller's shape array is an input only. */
    cr_assert_eq(shape[0], 2);
    cr_assert_eq(shape[3], 5);
}

Test(array, max_dims, .timeout = 5)
{
    struct ndc_array a;
    int64_t shape[NDC_MAX_DIMS];
    for (int i = 0; i < NDC_MAX_DIMS; i++)
        shape[i] = (i % 3 == 0) ? 2 : 1;
    poison(&a);
    th_ok(ndc_array_init(&a, NDC_U16, NDC_MAX_DIMS, shape, NULL));
    cr_assert_eq(a.ndim, NDC_MAX_DIMS);
    for (int i = 0; i < NDC_MAX_DIMS; i++)
        cr_assert_eq(a.shape[i], shape[i]);
    assert_c_order(&a, 2);
    cr_assert_eq(ndc_array_nbytes(&a), (size_t)2 << 11, "2^11 elements of 2 bytes: %zu",
                 ndc_array_nbytes(&a));

    /* All 32 extents 2, one byte each: 4 GiB, still fits. */
    for (int i = 0; i < NDC_MAX_DIMS; i++)
        shape[i] = 2;
    th_ok(ndc_array_init(&a, NDC_U8, NDC_MAX_DIMS, shape, NULL));
    assert_c_order(&a, 1);
    cr_assert_eq(a.strides[0], (int64_t)1 << 31);
    cr_assert_eq(ndc_array_nbytes(&a), (size_t)1 << 32);
}

Test(array, zero_size_dims, .timeout = 5)
{
    struct ndc_array a;
    int64_t shape[] = { 3, 0, 5 };
    poison(&a);
    th_ok(ndc_array_init(&a, NDC_F32, 3, shape, NULL));
    cr_assert_eq(ndc_array_nbytes(&a), 0);
    cr_assert_eq(a.shape[0], 3);
    cr_assert_eq(a.shape[1], 0);
    cr_assert_eq(a.shape[2], 5);
    /* Inside the zero extent the strides are those of any C array; outside
     * it both the plain product (0) and numpy's (20) describe the same
     * (empty) memory, so either is accepted. */
    cr_assert_eq(a.strides[2], 4);
    cr_assert_eq(a.strides[1], 20);
    cr_assert(a.strides[0] == 0 || a.strides[0] == 20, "strides[0] = %lld",
              (long long)a.strides[0]);

    int64_t z[] = { 0 };
    th_ok(ndc_array_init(&a, NDC_C128, 1, z, NULL));
    cr_assert_eq(a.strides[0], 16);
    cr_assert_eq(ndc_array_nbytes(&a), 0);

    /* Zero-size with huge neighbours: the size is 0, which fits. */
    int64_t big[] = { INT64_MAX, INT64_MAX, 0 };
    th_ok(ndc_array_init(&a, NDC_C128, 3, big, NULL));
    cr_assert_eq(ndc_array_nbytes(&a), 0, "INT64_MAX x INT64_MAX x 0 holds no bytes: %zu",
                 ndc_array_nbytes(&a));
    int64_t big2[] = { 0, INT64_MAX, INT64_MAX };
    th_ok(ndc_array_init(&a, NDC_U8, 3, big2, NULL));
    cr_assert_eq(ndc_array_nbytes(&a), 0);
}

Test(array, largest_that_fits, .timeout = 5)
{
    struct ndc_array a;
    int64_t s1[] = { INT64_MAX };
    th_ok(ndc_array_init(&a, NDC_U8, 1, s1, NULL));
    cr_assert_eq(ndc_array_nbytes(&a), (size_t)INT64_MAX);
    int64_t s2[] = { INT64_MAX / 8 };
    th_ok(ndc_array_init(&a, NDC_F64, 1, s2, NULL));
    cr_assert_eq(ndc_array_nbytes(&a), (size_t)(INT64_MAX / 8) * 8);
}

/* Every dtype x several ndims: strides are C order with the dtype's size. */
struct layout_case { int dtype; int ndim; };

ParameterizedTestParameters(array, strides_matrix)
{
    static struct layout_case cases[NDC_DTYPE_LAST * 6];
    static const int ndims[] = { 0, 1, 2, 3, 7, NDC_MAX_DIMS };
    size_t n = 0;
    for (int t = 1; t <= NDC_DTYPE_LAST; t++)
        for (int k = 0; k < 6; k++)
            cases[n++] = (struct layout_case){ t, ndims[k] };
    return cr_make_param_array(struct layout_case, cases, n);
}

ParameterizedTest(struct layout_case *c, array, strides_matrix, .timeout = 5)
{
    int64_t shape[NDC_MAX_DIMS];
    size_t elems = 1;
    for (int i = 0; i < c->ndim; i++) {
        shape[i] = (i < 8) ? 1 + (i * 5 + c->dtype) % 4 : 1;
        elems *= (size_t)shape[i];
    }
    struct ndc_array a;
    poison(&a);
    size_t item = ndc_dtype_size((enum ndc_dtype)c->dtype);
    th_ok(ndc_array_init(&a, (enum ndc_dtype)c->dtype, c->ndim, shape, &a));
    cr_assert_eq((int)a.dtype, c->dtype);
    cr_assert_eq(a.ndim, c->ndim);
    assert_c_order(&a, (int64_t)item);
    cr_assert_eq(ndc_array_nbytes(&a), elems * item, "dtype %s ndim %d: %zu bytes, want %zu",
                 ndc_dtype_name((enum ndc_dtype)c->dtype), c->ndim, ndc_array_nbytes(&a),
                 elems * item);
}

/* ---- invalid arguments: -EINVAL, `a` untouched --------------------------- */

Test(array, null_array, .timeout = 5)
{
    int64_t shape[] = { 2 };
    th_expect(ndc_array_init(NULL, NDC_F32, 1, shape, NULL), -EINVAL);
}

Test(array, bad_dtype, .timeout = 5)
{
    int64_t shape[] = { 2, 2 };
    int bad[] = { 0, 16, -1, NDC_DTYPE_LAST + 1, 1000 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ndc_array a;
        poison(&a);
        th_expect(ndc_array_init(&a, (enum ndc_dtype)bad[i], 2, shape, NULL), -EINVAL);
        assert_poisoned(&a, "bad dtype");
    }
}

Test(array, bad_ndim, .timeout = 5)
{
    int64_t shape[NDC_MAX_DIMS + 2];
    for (int i = 0; i < NDC_MAX_DIMS + 2; i++)
        shape[i] = 1;
    int bad[] = { -1, NDC_MAX_DIMS + 1, 33, 1000, -1000, INT32_MIN };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ndc_array a;
        poison(&a);
        th_expect(ndc_array_init(&a, NDC_F32, bad[i], shape, NULL), -EINVAL);
        assert_poisoned(&a, "bad ndim");
    }
}

Test(array, negative_extent, .timeout = 5)
{
    int64_t cases[][3] = { { -1, 2, 2 }, { 2, -1, 2 }, { 2, 2, -1 }, { INT64_MIN, 1, 1 },
                           { 0, -3, 1 }, { 4, 4, INT64_MIN } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ndc_array a;
        poison(&a);
        th_expect(ndc_array_init(&a, NDC_I16, 3, cases[i], NULL), -EINVAL);
        assert_poisoned(&a, "negative extent");
    }
}

Test(array, null_shape, .timeout = 5)
{
    for (int nd = 1; nd <= NDC_MAX_DIMS; nd += 7) {
        struct ndc_array a;
        poison(&a);
        th_expect(ndc_array_init(&a, NDC_F32, nd, NULL, NULL), -EINVAL);
        assert_poisoned(&a, "NULL shape");
    }
}

/* ---- overflow: -EOVERFLOW, `a` untouched --------------------------------- */

Test(array, overflow, .timeout = 5)
{
    struct {
        int dtype;
        int ndim;
        int64_t shape[4];
    } cases[] = {
        { NDC_U8, 2, { INT64_MAX, 2 } },                 /* product overflows */
        { NDC_U8, 2, { (int64_t)1 << 32, (int64_t)1 << 31 } }, /* product 2^63 */
        { NDC_F64, 1, { INT64_MAX / 8 + 1 } },           /* product fits, bytes do not */
        { NDC_C128, 1, { (int64_t)1 << 59 } },           /* 2^63 bytes */
        { NDC_U16, 1, { INT64_MAX } },
        { NDC_U8, 4, { 1 << 16, 1 << 16, 1 << 16, 1 << 16 } }, /* 2^64 wraps to 0 */
        { NDC_U8, 3, { 3, INT64_MAX / 2, 3 } },
        { NDC_I32, 2, { (int64_t)1 << 31, (int64_t)1 << 30 } }, /* 2^61 * 4 = 2^63 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ndc_array a;
        poison(&a);
        int r = ndc_array_init(&a, (enum ndc_dtype)cases[i].dtype, cases[i].ndim,
                               cases[i].shape, NULL);
        cr_assert_eq(r, -EOVERFLOW, "case %zu: ndc_array_init = %d (%s), want -EOVERFLOW; %s",
                     i, r, ndc_strerror(r), ndc_last_error());
        assert_poisoned(&a, "overflow");
    }
    /* 32 dims of 4: 2^64 elements, one byte each. */
    int64_t shape[NDC_MAX_DIMS];
    for (int i = 0; i < NDC_MAX_DIMS; i++)
        shape[i] = 4;
    struct ndc_array a;
    poison(&a);
    th_expect(ndc_array_init(&a, NDC_U8, NDC_MAX_DIMS, shape, NULL), -EOVERFLOW);
    assert_poisoned(&a, "overflow, 32 dims");
}

/* ---- ndc_array_nbytes on hand-built views ------------------------------- */

static struct ndc_array valid_view(void)
{
    struct ndc_array a;
    int64_t shape[] = { 3, 4 };
    cr_assert_eq(ndc_array_init(&a, NDC_F32, 2, shape, NULL), 0);
    return a;
}

Test(array, nbytes_invalid, .timeout = 5)
{
    cr_assert_eq(ndc_array_nbytes(NULL), SIZE_MAX);

    struct ndc_array a = valid_view();
    cr_assert_eq(ndc_array_nbytes(&a), 48);

    int bad_t[] = { 0, 16, -1 };
    for (size_t i = 0; i < 3; i++) {
        a = valid_view();
        a.dtype = (enum ndc_dtype)bad_t[i];
        cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "dtype %d: %zu", bad_t[i],
                     ndc_array_nbytes(&a));
    }
    int bad_nd[] = { -1, NDC_MAX_DIMS + 1, INT32_MAX };
    for (size_t i = 0; i < 3; i++) {
        a = valid_view();
        a.ndim = bad_nd[i];
        cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "ndim %d: %zu", bad_nd[i],
                     ndc_array_nbytes(&a));
    }
    a = valid_view();
    a.shape[1] = -4;
    cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "negative extent: %zu", ndc_array_nbytes(&a));
    a = valid_view();
    a.shape[0] = -3;    /* -3 * -4 would be positive if multiplied blindly */
    a.shape[1] = -4;
    cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "two negative extents: %zu",
                 ndc_array_nbytes(&a));
    a = valid_view();
    a.shape[0] = -1;
    a.shape[1] = 0;
    cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "negative extent beside a zero: %zu",
                 ndc_array_nbytes(&a));
}

Test(array, nbytes_overflow, .timeout = 5)
{
    struct ndc_array a = valid_view();
    a.shape[0] = INT64_MAX;
    a.shape[1] = 2;
    cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "%zu", ndc_array_nbytes(&a));
    a.shape[0] = INT64_MAX / 4 + 1;   /* x4 bytes past INT64_MAX */
    a.shape[1] = 1;
    cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "%zu", ndc_array_nbytes(&a));
    a.shape[0] = (int64_t)1 << 32;    /* 2^64 x 4: wraps to 0 if unchecked */
    a.shape[1] = (int64_t)1 << 32;
    cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "%zu", ndc_array_nbytes(&a));
    /* Between INT64_MAX and SIZE_MAX: does not fit in int64_t, so invalid. */
    a.dtype = NDC_U8;
    a.ndim = 1;
    a.shape[0] = INT64_MAX;
    cr_assert_eq(ndc_array_nbytes(&a), (size_t)INT64_MAX);
    a.dtype = NDC_U16;
    cr_assert_eq(ndc_array_nbytes(&a), SIZE_MAX, "2 * INT64_MAX bytes: %zu",
                 ndc_array_nbytes(&a));
}

Test(array, nbytes_ignores_strides_and_fields, .timeout = 5)
{
    struct ndc_array a = valid_view();
    a.strides[0] = -12345;
    a.strides[1] = 0;
    a.data = (void *)1;
    a.tag = UINT64_MAX;
    a.seq = UINT64_MAX;
    for (int i = 2; i < NDC_MAX_DIMS; i++)
        a.shape[i] = -1;     /* beyond ndim: never read */
    cr_assert_eq(ndc_array_nbytes(&a), 48, "%zu", ndc_array_nbytes(&a));

    a.shape[1] = 0;
    cr_assert_eq(ndc_array_nbytes(&a), 0);
    a.ndim = 0;
    cr_assert_eq(ndc_array_nbytes(&a), 4, "a 0-d float32 is 4 bytes: %zu",
                 ndc_array_nbytes(&a));
}
