/* Element types: size and numpy's name for each. */
#include "ndchan.h"

static const struct {
    unsigned char size;
    const char *name;
} dtypes[] = {
    [NDC_BOOL] = {1, "bool"},     [NDC_I8] = {1, "int8"},       [NDC_I16] = {2, "int16"},
    [NDC_I32] = {4, "int32"},     [NDC_I64] = {8, "int64"},     [NDC_U8] = {1, "uint8"},
    [NDC_U16] = {2, "uint16"},    [NDC_U32] = {4, "uint32"},    [NDC_U64] = {8, "uint64"},
    [NDC_F16] = {2, "float16"},   [NDC_BF16] = {2, "bfloat16"}, [NDC_F32] = {4, "float32"},
    [NDC_F64] = {8, "float64"},   [NDC_C64] = {8, "complex64"}, [NDC_C128] = {16, "complex128"},
};

size_t ndc_dtype_size(enum ndc_dtype t)
{
    /* unsigned compare: negative values of the enum are rejected too */
    if ((unsigned)t < NDC_BOOL || (unsigned)t > NDC_DTYPE_LAST)
        return 0;
    return dtypes[t].size;
}

const char *ndc_dtype_name(enum ndc_dtype t)
{
    if ((unsigned)t < NDC_BOOL || (unsigned)t > NDC_DTYPE_LAST)
        return "invalid";
    return dtypes[t].name;
}
