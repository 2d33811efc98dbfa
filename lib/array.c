/* Shapes, strides, the one payload-size check and the one strided copy
 * (ndc_send, and the .npy codec's transposition and gather). */
#include <errno.h>
#include <string.h>

#include "array.h"
#include "error.h"

int ndc__shape_bytes(size_t item, int ndim, const int64_t *shape, int strict, uint64_t *nbytes)
{
    /* Every extent must be valid, and with a zero extent the product is 0
     * whatever follows: check them all before multiplying. */
    int zero = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return ndc__fail(-EINVAL, "negative extent %lld on axis %d", (long long)shape[i], i);
        zero |= shape[i] == 0;
    }
    uint64_t n = item;
    for (int i = 0; i < ndim && (strict || !zero); i++) {
        if (shape[i] == 0)
            continue;
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n) || n > INT64_MAX)
            return ndc__fail(-EOVERFLOW, "array size overflows int64 at axis %d", i);
    }
    *nbytes = zero ? 0 : n;
    return 0;
}

int ndc__shape_check(uint32_t dtype, int ndim, const int64_t *shape, uint64_t *nbytes)
{
    size_t item = ndc_dtype_size((enum ndc_dtype)dtype);
    if (!item)
        return ndc__fail(-EINVAL, "unknown dtype %u", dtype);
    if (ndim < 0 || ndim > NDC_MAX_DIMS)
        return ndc__fail(-EINVAL, "ndim %d outside 0..%d", ndim, NDC_MAX_DIMS);
    if (ndim > 0 && !shape)
        return ndc__fail(-EINVAL, "NULL shape with ndim %d", ndim);
    return ndc__shape_bytes(item, ndim, shape, 0, nbytes);
}

void ndc__c_strides(size_t itemsize, int ndim, const int64_t *shape, int64_t *strides)
{
    /* Unsigned, so wrapping is defined: a valid array's strides never wrap,
     * and a zero-size one (an extent of 0 beside huge ones) addresses
     * nothing, so whatever its outer strides wrap to is never used. */
    uint64_t s = itemsize;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = (int64_t)s;
        s *= shape[i] > 0 ? (uint64_t)shape[i] : 1;
    }
}

int ndc__is_c_contiguous(size_t itemsize, int ndim, const int64_t *shape, const int64_t *strides)
{
    int64_t s = (int64_t)itemsize;
    for (int i = ndim - 1; i >= 0; i--) {
        if (shape[i] == 0)
            return 1;
        if (shape[i] != 1 && strides[i] != s)
            return 0;
        s *= shape[i];
    }
    return 1;
}

int ndc_array_init(struct ndc_array *a, enum ndc_dtype t, int ndim, const int64_t *shape, void *data)
{
    uint64_t nbytes;
    if (!a)
        return ndc__fail(-EINVAL, "NULL array");
    int r = ndc__shape_check(t, ndim, shape, &nbytes);
    if (r)
        return r;
    struct ndc_array v = {.data = data, .dtype = t, .ndim = ndim};
    if (ndim)
        memcpy(v.shape, shape, sizeof *shape * (size_t)ndim);
    ndc__c_strides(ndc_dtype_size(t), ndim, v.shape, v.strides);
    *a = v;
    return 0;
}

size_t ndc_array_nbytes(const struct ndc_array *a)
{
    uint64_t n;
    if (!a || ndc__shape_check(a->dtype, a->ndim, a->shape, &n))
        return SIZE_MAX;
    return (size_t)n;
}

/* The strided copy: axes are merged where the source is contiguous across
 * them, so the innermost loop is one memcpy per contiguous run (the whole
 * array for a C-order source) and only truly strided sources pay per item. */
void ndc__copy_strided(void *dst, const void *src, size_t item, int ndim,
                       const int64_t *src_shape, const int64_t *src_strides)
{
    int64_t shape[NDC_MAX_DIMS], strides[NDC_MAX_DIMS];
    uint64_t nbytes = item;
    int nd = 0;
    /* Drop extent-1 axes, then merge axis i into i+1 when stride[i] ==
     * shape[i+1] * stride[i+1]. */
    for (int i = 0; i < ndim; i++) {
        if (src_shape[i] == 0)
            return;
        nbytes *= (uint64_t)src_shape[i];
        if (src_shape[i] == 1)
            continue;
        shape[nd] = src_shape[i];
        strides[nd] = src_strides[i];
        nd++;
    }
    int m = 0;
    for (int i = 1; i < nd; i++) {
        if (strides[m] == shape[i] * strides[i]) {
            shape[m] *= shape[i];
            strides[m] = strides[i];
        } else {
            m++;
            shape[m] = shape[i];
            strides[m] = strides[i];
        }
    }
    nd = nd ? m + 1 : 0;
    /* Innermost contiguous run in bytes. */
    size_t run = item;
    if (nd && strides[nd - 1] == (int64_t)item) {
        run = item * (size_t)shape[nd - 1];
        nd--;
    }
    unsigned char *out = dst;
    const unsigned char *base = src;
    int64_t idx[NDC_MAX_DIMS] = {0};
    for (uint64_t done = 0; done < nbytes; done += run) {
        int64_t off = 0;
        for (int i = 0; i < nd; i++)
            off += idx[i] * strides[i];
        memcpy(out, base + off, run);
        out += run;
        for (int i = nd - 1; i >= 0; i--) {
            if (++idx[i] < shape[i])
                break;
            idx[i] = 0;
        }
    }
}

void ndc__copy_to_c(void *dst, const struct ndc_array *src, uint64_t nbytes)
{
    if (nbytes == 0)
        return;
    ndc__copy_strided(dst, src->data, ndc_dtype_size(src->dtype), src->ndim, src->shape,
                      src->strides);
}
