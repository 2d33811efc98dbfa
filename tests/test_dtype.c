/*
 * Element types: size and numpy name of every dtype, and what a value that
 * is not a dtype gives. The table is written out by hand from numpy's own
 * names so a typo in lib/dtype.c cannot agree with itself.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <string.h>

#include "ndchan.h"
#include "helpers.h"

struct dt_case {
    int  dtype;
    int  size;
    char name[16];   /* inline, not a pointer: params are copied into the worker */
};

static struct dt_case dt_cases[] = {
    { NDC_BOOL, 1, "bool" },
    { NDC_I8, 1, "int8" },
    { NDC_I16, 2, "int16" },
    { NDC_I32, 4, "int32" },
    { NDC_I64, 8, "int64" },
    { NDC_U8, 1, "uint8" },
    { NDC_U16, 2, "uint16" },
    { NDC_U32, 4, "uint32" },
    { NDC_U64, 8, "uint64" },
    { NDC_F16, 2, "float16" },
    { NDC_BF16, 2, "bfloat16" },
    { NDC_F32, 4, "float32" },
    { NDC_F64, 8, "float64" },
    { NDC_C64, 8, "complex64" },
    { NDC_C128, 16, "complex128" },
};

ParameterizedTestParameters(dtype, known)
{
    return cr_make_param_array(struct dt_case, dt_cases,
                               sizeof dt_cases / sizeof dt_cases[0]);
}

ParameterizedTest(struct dt_case *c, dtype, known, .timeout = 5)
{
    cr_assert_eq(ndc_dtype_size((enum ndc_dtype)c->dtype), (size_t)c->size,
                 "dtype %d (%s): size %zu, want %d", c->dtype, c->name,
                 ndc_dtype_size((enum ndc_dtype)c->dtype), c->size);
    const char *n = ndc_dtype_name((enum ndc_dtype)c->dtype);
    cr_assert_not_null(n, "dtype %d: name is NULL", c->dtype);
    cr_assert_str_eq(n, c->name, "dtype %d: name \"%s\", want \"%s\"", c->dtype, n, c->name);
}

/* Values around and far from the valid range: none is a dtype. */
static int bad_dtypes[] = { 0, NDC_DTYPE_LAST + 1, 16, -1, 17, 255, 256, 0x7fffffff,
                            (int)0x80000000, -16 };

ParameterizedTestParameters(dtype, invalid)
{
    return cr_make_param_array(int, bad_dtypes, sizeof bad_dtypes / sizeof bad_dtypes[0]);
}

ParameterizedTest(int *t, dtype, invalid, .timeout = 5)
{
    cr_assert_eq(ndc_dtype_size((enum ndc_dtype)*t), 0, "dtype %d: size %zu, want 0",
                 *t, ndc_dtype_size((enum ndc_dtype)*t));
    const char *n = ndc_dtype_name((enum ndc_dtype)*t);
    cr_assert_not_null(n, "dtype %d: name is NULL (must never be)", *t);
    cr_assert_str_eq(n, "invalid", "dtype %d: name \"%s\", want \"invalid\"", *t, n);
}

Test(dtype, table_is_complete, .timeout = 5)
{
    /* Every value from 1 to NDC_DTYPE_LAST is a dtype and appears once in
     * the table above; the names are all distinct. */
    size_t n = sizeof dt_cases / sizeof dt_cases[0];
    cr_assert_eq(n, (size_t)NDC_DTYPE_LAST, "the header has %d dtypes, the table %zu",
                 NDC_DTYPE_LAST, n);
    for (int t = 1; t <= NDC_DTYPE_LAST; t++) {
        int found = 0;
        for (size_t i = 0; i < n; i++)
            found += dt_cases[i].dtype == t;
        cr_assert_eq(found, 1, "dtype %d appears %d times in the table", t, found);
        cr_assert_neq(ndc_dtype_size((enum ndc_dtype)t), 0, "dtype %d has size 0", t);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            cr_assert_str_neq(ndc_dtype_name((enum ndc_dtype)dt_cases[i].dtype),
                              ndc_dtype_name((enum ndc_dtype)dt_cases[j].dtype),
                              "dtypes %d and %d share a name", dt_cases[i].dtype,
                              dt_cases[j].dtype);
}

Test(dtype, name_is_stable, .timeout = 5)
{
    /* The name is a constant string, not a per-call buffer. */
    const char *a = ndc_dtype_name(NDC_F64);
    const char *b = ndc_dtype_name(NDC_I8);
    cr_assert_str_eq(a, "float64", "first name clobbered by the second call: \"%s\"", a);
    cr_assert_str_eq(b, "int8");
}

Test(strerror, never_null, .timeout = 5)
{
    int errs[] = { 0, -EINVAL, -EOVERFLOW, -EEXIST, -ENOENT, -EPERM, -EPIPE, -EAGAIN,
                   -ETIMEDOUT, -EINTR, -E2BIG, -EMSGSIZE, -EOWNERDEAD, -EBADMSG, -EPROTO,
                   -EUSERS, -ENOMEM, -ENOTSUP, -ENODEV, -12345, 1, 12345 };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        const char *s = ndc_strerror(errs[i]);
        cr_assert_not_null(s, "ndc_strerror(%d) is NULL", errs[i]);
        if (errs[i] < 0 && errs[i] > -4096)
            cr_assert_gt(strlen(s), 0, "ndc_strerror(%d) is empty", errs[i]);
    }
    cr_assert_not_null(ndc_last_error(), "ndc_last_error() is NULL");
}
