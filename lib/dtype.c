/* Element types: the one table of every dtype's size, numpy kind letter and
 * numpy name. The .npy codec derives its descr strings ("<f8") from it. */
#include "dtype.h"

static const struct {
    unsigned char size;
    char kind;
    const char *name;
} dtypes[] = {
    [NDC_BOOL] = {1, 'b', "bool"},
    [NDC_I8]   = {1, 'i', "int8"},    [NDC_I16] = {2, 'i', "int16"},
    [NDC_I32]  = {4, 'i', "int32"},   [NDC_I64] = {8, 'i', "int64"},
    [NDC_U8]   = {1, 'u', "uint8"},   [NDC_U16] = {2, 'u', "uint16"},
    [NDC_U32]  = {4, 'u', "uint32"},  [NDC_U64] = {8, 'u', "uint64"},
    [NDC_F16]  = {2, 'f', "float16"}, [NDC_BF16] = {2, 0, "bfloat16"},
    [NDC_F32]  = {4, 'f', "float32"}, [NDC_F64] = {8, 'f', "float64"},
    [NDC_C64]  = {8, 'c', "complex64"}, [NDC_C128] = {16, 'c', "complex128"},
};

/* unsigned compare: negative values of the enum are rejected too */
static int valid(enum ndc_dtype t)
{
    return (unsigned)t >= NDC_BOOL && (unsigned)t <= NDC_DTYPE_LAST;
}

size_t ndc_dtype_size(enum ndc_dtype t)
{
    return valid(t) ? dtypes[t].size : 0;
}

const char *ndc_dtype_name(enum ndc_dtype t)
{
    return valid(t) ? dtypes[t].name : "invalid";
}

char ndc__dtype_kind(enum ndc_dtype t)
{
    return valid(t) ? dtypes[t].kind : 0;
}
