/* Array arithmetic shared by the channel, npy and validation code. */
#ifndef NDC_ARRAY_H
#define NDC_ARRAY_H
#include <stddef.h>
#include <stdint.h>
#include "ndchan.h"

/* Payload bytes of `item`-byte elements of shape[0..ndim): 0 when an
 * extent is 0. `strict` is numpy's rule, which the .npy codec keeps: the
 * product of the non-zero extents times item must fit in int64 even when
 * another extent is 0 (np.load refuses such a file); otherwise a zero
 * extent settles it. \return 0 and *nbytes; -EINVAL (a negative extent);
 * -EOVERFLOW. */
int ndc__shape_bytes(size_t item, int ndim, const int64_t *shape, int strict, uint64_t *nbytes);
/* Validate a header (dtype, ndim, shape) and compute its payload size.
 * \return 0 and *nbytes; -EINVAL (bad dtype, ndim or extent); -EOVERFLOW. */
int ndc__shape_check(uint32_t dtype, int ndim, const int64_t *shape, uint64_t *nbytes);
/* C-order byte strides of a valid header. */
void ndc__c_strides(size_t itemsize, int ndim, const int64_t *shape, int64_t *strides);
/* Whether strides are C order for this shape (extents of 0 or 1 make any
 * stride of that axis acceptable, as numpy does). */
int ndc__is_c_contiguous(size_t itemsize, int ndim, const int64_t *shape, const int64_t *strides);
/* Copy `item`-byte elements of a valid shape, addressed from src by any
 * strides (any sign), into dst in C order. */
void ndc__copy_strided(void *dst, const void *src, size_t item, int ndim,
                       const int64_t *shape, const int64_t *strides);
/* Copy a valid array with any strides into dst as C order (nbytes bytes). */
void ndc__copy_to_c(void *dst, const struct ndc_array *src, uint64_t nbytes);

#endif
