/* The .npy format on byte buffers: header parsing and writing, byte swaps
 * and the Fortran-to-C transposition (npy_codec.c). Nothing here touches a
 * file or a channel (npy_stream.c does), so the parser can be fuzzed and
 * unit-tested on memory alone.
 *
 * A .npy file is: the magic "\x93NUMPY", a major and a minor version byte,
 * the header length (2 bytes little-endian in 1.0, 4 bytes in 2.0 and 3.0),
 * then the header: a Python dict literal with exactly the keys 'descr',
 * 'fortran_order' and 'shape', padded with spaces and ended by '\n'; then the
 * payload. Versions 1.0 and 2.0 use latin-1 for the header, 3.0 UTF-8; we
 * accept any byte inside a string, so both are the same to us. numpy pads
 * the header so the payload starts on a multiple of 64; older writers used
 * 16, so alignment is not required on read.
 */
#ifndef NDC_NPY_H
#define NDC_NPY_H
#include <stddef.h>
#include <stdint.h>
#include "ndchan.h"

#define NDC__NPY_PREFIX_MIN 10          /* magic + version + 2-byte length (1.0) */
#define NDC__NPY_PREFIX_MAX 12          /* ... 4-byte length (2.0, 3.0) */
#define NDC__NPY_HEADER_MAX (1u << 20)  /* longest header accepted: numpy's own are < 1 KiB */
#define NDC__NPY_ALIGN      64          /* data offset alignment numpy writes */

struct ndc__npy_header {
    uint8_t        major, minor;   /* 1.0, 2.0 or 3.0 */
    enum ndc_dtype dtype;
    int            swap;           /* the payload's byte order is not this host's */
    int            fortran;        /* 'fortran_order': True */
    int            ndim;
    int64_t        shape[NDC_MAX_DIMS];
    uint64_t       data_offset;    /* prefix + header: where the payload starts */
    uint64_t       nbytes;         /* payload size */
};

/* From the first `len` bytes of a file (at least NDC__NPY_PREFIX_MAX, or the
 * whole file when it is shorter), check the magic and version and give the
 * data offset: how many bytes the full header needs.
 * \return 0, *data_offset set
 * \return -EBADMSG  not a .npy file, truncated, or a header length above
 *                   NDC__NPY_HEADER_MAX
 * \return -ENOTSUP  a version other than 1.0, 2.0, 3.0 */
int ndc__npy_header_size(const void *buf, size_t len, uint64_t *data_offset);
/* Parse a whole header from buf[0..len); `len` may exceed the header (the
 * payload's first bytes are ignored). Fills every field of *h; *h is
 * untouched on failure.
 * \return 0
 * \return -EBADMSG   malformed: bad magic, truncated, not a dict literal,
 *                    missing/duplicate/extra keys, wrong value types
 * \return -ENOTSUP   a version, dtype (object, structured, strings, void,
 *                    datetime, longdouble...) or ndim we do not take
 * \return -EOVERFLOW the payload size does not fit in int64_t
 * Details go to ndc__fail(). */
int ndc__npy_parse(const void *buf, size_t len, struct ndc__npy_header *h);

/* The file holds exactly the header and the payload.
 * \return 0, or -EBADMSG (the file is shorter: truncated or lying header;
 *         or longer: bytes after the array we would not know what to do with) */
int ndc__npy_check_size(const struct ndc__npy_header *h, uint64_t file_size);

/* Write a header (prefix included) into buf[0..cap) for an array of dtype t
 * and shape[0..ndim), C order or Fortran order, padded with spaces so the
 * data offset is a multiple of `align` (a power of two, >= 64; 0 = 64).
 * Version 1.0, or 2.0 when the header does not fit 1.0's 16-bit length.
 * \return the header length (the data offset), or -EINVAL (bad dtype, ndim,
 *         extent or align), -ENOSPC (cap too small) */
int64_t ndc__npy_format(void *buf, size_t cap, enum ndc_dtype t, int ndim,
                        const int64_t *shape, int fortran, size_t align);

/* Reverse the byte order of every element of p[0..nbytes) in place (complex
 * numbers: each half). 1-byte dtypes are left alone. */
void ndc__npy_swap(void *p, size_t nbytes, enum ndc_dtype t);

/* Copy an array of element size `esize` and shape[0..ndim) from
 * Fortran-order memory `src` to C-order memory `dst` (no overlap). */
void ndc__npy_f2c(void *dst, const void *src, size_t esize, int ndim, const int64_t *shape);

/* Fortran memory order equals C memory order when at most one extent is
 * greater than 1 (or the array is empty): no transposition needed. */
int ndc__npy_f_is_c(int ndim, const int64_t *shape);

#endif
