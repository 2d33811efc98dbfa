/* The .npy header parser on arbitrary bytes. Beyond not crashing: whatever
 * it accepts must be self-consistent (payload size = product of the shape
 * times the element size, offset within the input) and must survive a
 * write/parse round trip through our own writer unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ndchan.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t off;
    if (ndc__npy_header_size(data, size, &off) != 0)
        return 0;
    struct ndc__npy_header h;
    if (ndc__npy_parse(data, size, &h) != 0)
        return 0;
    if (h.data_offset != off || h.data_offset > size || h.ndim < 0 || h.ndim > NDC_MAX_DIMS)
        abort();
    uint64_t n = ndc_dtype_size(h.dtype);
    for (int i = 0; i < h.ndim; i++) {
        if (h.shape[i] < 0)
            abort();
        n *= (uint64_t)h.shape[i];
    }
    if (n != h.nbytes)
        abort();
    (void)ndc__npy_check_size(&h, (uint64_t)size);

    uint8_t buf[8192];
    int64_t len = ndc__npy_format(buf, sizeof buf, h.dtype, h.ndim, h.shape, h.fortran, 0);
    if (len <= 0 || len % 64)
        abort();
    struct ndc__npy_header g;
    if (ndc__npy_parse(buf, (size_t)len, &g) != 0)
        abort();
    if (g.dtype != h.dtype || g.ndim != h.ndim || g.fortran != h.fortran || g.nbytes != h.nbytes ||
        memcmp(g.shape, h.shape, sizeof g.shape[0] * (size_t)h.ndim) != 0)
        abort();
    return 0;
}
