/*
 * .npy files, the format: headers on byte buffers, byte swaps and the
 * Fortran-to-C transposition. Nothing here touches a file or a channel (that
 * is npy_stream.c), so the fuzzer (tests/fuzz/fuzz_npy.c) covers all of it.
 *
 * See npy.h for the layout. The header is a Python literal; we parse
 * the small subset numpy writes (a dict of strings, True/False and tuples of
 * integers, Python 2's "3L" included) with a hand-written scanner that never
 * reads past `len`, rather than evaluate anything. Every rejection names its
 * reason through ndc__fail().
 *
 * Decisions a user sees:
 *  - big-endian payloads are read as they are, then byte-swapped in the slot
 *    before the commit: the receiver always gets this host's byte order;
 *  - Fortran-order files are transposed into C order on read (through a
 *    temporary buffer of the payload's size): the receiver sees the same
 *    shape and values np.load() gives, in the C-order slot a channel carries.
 *    Files whose Fortran and C layouts coincide (at most one extent > 1) are
 *    read straight into the slot;
 *  - the file must hold exactly the header and the payload.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "array.h"
#include "dtype.h"
#include "error.h"
#include "npy.h"

static const uint8_t npy_magic[6] = { 0x93, 'N', 'U', 'M', 'P', 'Y' };

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ORDER '<'
#else
#define HOST_ORDER '>'
#endif

/* ---- dtypes ------------------------------------------------------------ */

/* The descr of a dtype in this host's byte order, from the dtype table:
 * "|b1", "<f8", "<c16"; numpy has none for bfloat16 (ml_dtypes' name). */
static int npy_descr(enum ndc_dtype t, char buf[16])
{
    size_t size = ndc_dtype_size(t);
    if (!size)
        return -EINVAL;
    if (t == NDC_BF16) {
        memcpy(buf, "bfloat16", 9);
        return 0;
    }
    snprintf(buf, 16, "%c%c%u", size == 1 ? '|' : HOST_ORDER, ndc__dtype_kind(t), (unsigned)size);
    return 0;
}

/* descr string s[0..n) -> dtype and whether to swap. */
static int npy_descr_parse(const char *s, size_t n, enum ndc_dtype *t, int *swap)
{
    if (n == 8 && memcmp(s, "bfloat16", 8) == 0) {
        *t = NDC_BF16;
        *swap = 0;
        return 0;
    }
    if (n < 3 || n > 4)
        goto unsupported;
    char order = s[0], kind = s[1];
    if (order != '<' && order != '>' && order != '|' && order != '=')
        goto unsupported;
    unsigned size = 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            goto unsupported;
        size = size * 10 + (unsigned)(s[i] - '0');
    }
    for (int i = NDC_BOOL; i <= NDC_DTYPE_LAST; i++) {
        /* bfloat16 has no kind letter: a NUL in the descr must not match it */
        char k = ndc__dtype_kind((enum ndc_dtype)i);
        if (!k || k != kind || ndc_dtype_size((enum ndc_dtype)i) != size)
            continue;
        /* '|' (not applicable) and '=' (native) mean this host's order, as numpy reads them */
        *t = (enum ndc_dtype)i;
        *swap = size > 1 && (order == '<' || order == '>') && order != HOST_ORDER;
        return 0;
    }
unsupported:
    return ndc__fail(-ENOTSUP, "npy: descr '%.*s' is not a dtype ndchan carries "
                     "(bool, int/uint 8-64, float16/32/64, bfloat16, complex64/128)",
                     (int)(n > 40 ? 40 : n), s);
}

/* ---- the header literal ------------------------------------------------ */

struct scan {
    const char *p, *end;
};

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool eat(struct scan *s, char c)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

/* A quoted string without escapes: out points into the buffer. */
static int scan_string(struct scan *s, const char **out, size_t *n)
{
    skip_ws(s);
    if (s->p >= s->end || (*s->p != '\'' && *s->p != '"'))
        return ndc__fail(-EBADMSG, "npy header: expected a quoted string");
    char q = *s->p++;
    const char *start = s->p;
    while (s->p < s->end && *s->p != q) {
        if (*s->p == '\\' || *s->p == '\n')
            return ndc__fail(-EBADMSG, "npy header: escapes and newlines in strings are not taken");
        s->p++;
    }
    if (s->p >= s->end)
        return ndc__fail(-EBADMSG, "npy header: unterminated string");
    *out = start;
    *n = (size_t)(s->p - start);
    s->p++;
    return 0;
}

static bool scan_word(struct scan *s, const char *w)
{
    size_t n = strlen(w);
    skip_ws(s);
    if ((size_t)(s->end - s->p) >= n && memcmp(s->p, w, n) == 0) {
        const char *after = s->p + n;
        if (after < s->end && ((*after >= 'a' && *after <= 'z') || (*after >= 'A' && *after <= 'Z') ||
                               (*after >= '0' && *after <= '9') || *after == '_'))
            return false;
        s->p = after;
        return true;
    }
    return false;
}

/* '(' [int (',' int)* [',']] ')', with a single element needing its comma
 * as in Python: "(3)" is the integer 3, which numpy rejects too. */
static int scan_shape(struct scan *s, int *ndim, int64_t *shape)
{
    if (!eat(s, '('))
        return ndc__fail(-EBADMSG, "npy header: 'shape' is not a tuple");
    int n = 0;
    bool comma = false;
    for (;;) {
        skip_ws(s);
        if (eat(s, ')'))
            break;
        if (n > 0 && !comma)
            return ndc__fail(-EBADMSG, "npy header: 'shape' is malformed");
        bool neg = eat(s, '-');
        skip_ws(s);
        if (s->p >= s->end || *s->p < '0' || *s->p > '9')
            return ndc__fail(-EBADMSG, "npy header: 'shape' holds something other than integers");
        uint64_t v = 0;
        bool big = false;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
            unsigned d = (unsigned)(*s->p++ - '0');
            if (v > ((uint64_t)INT64_MAX - d) / 10)
                big = true;
            else
                v = v * 10 + d;
        }
        if (s->p < s->end && (*s->p == 'L' || *s->p == 'l'))
            s->p++;                     /* Python 2's long suffix */
        if (neg && v != 0)
            return ndc__fail(-EBADMSG, "npy header: negative extent -%llu in 'shape'",
                             (unsigned long long)v);
        if (big)
            return ndc__fail(-EOVERFLOW, "npy header: an extent of 'shape' overflows int64");
        if (n == NDC_MAX_DIMS)
            return ndc__fail(-ENOTSUP, "npy header: more than NDC_MAX_DIMS (%d) dimensions",
                             NDC_MAX_DIMS);
        shape[n++] = (int64_t)v;
        comma = eat(s, ',');
        if (n == 1 && !comma) {
            skip_ws(s);
            if (s->p < s->end && *s->p == ')')
                return ndc__fail(-EBADMSG, "npy header: 'shape' (%lld) is not a tuple (no comma)",
                                 (long long)v);
        }
    }
    *ndim = n;
    return 0;
}

int ndc__npy_header_size(const void *buf, size_t len, uint64_t *data_offset)
{
    const uint8_t *b = buf;
    if (len < NDC__NPY_PREFIX_MIN || memcmp(b, npy_magic, sizeof npy_magic) != 0)
        return ndc__fail(-EBADMSG, len < NDC__NPY_PREFIX_MIN && len >= 6 &&
                         memcmp(b, npy_magic, 6) == 0 ? "npy: truncated before the header"
                         : "npy: not a .npy file (bad magic)");
    uint8_t major = b[6], minor = b[7];
    uint64_t prefix, hlen;
    if (major == 1 && minor == 0) {
        prefix = 10;
        hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (len < 12)
            return ndc__fail(-EBADMSG, "npy: truncated before the header");
        prefix = 12;
        hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8 | (uint64_t)b[10] << 16 | (uint64_t)b[11] << 24;
    } else {
        return ndc__fail(-ENOTSUP, "npy: format version %u.%u (1.0, 2.0, 3.0 are taken)",
                         major, minor);
    }
    if (hlen > NDC__NPY_HEADER_MAX)
        return ndc__fail(-EBADMSG, "npy: header length %llu above the limit of %u",
                         (unsigned long long)hlen, NDC__NPY_HEADER_MAX);
    *data_offset = prefix + hlen;
    return 0;
}

int ndc__npy_parse(const void *buf, size_t len, struct ndc__npy_header *out)
{
    uint64_t off;
    int err = ndc__npy_header_size(buf, len, &off);
    if (err)
        return err;
    if (off > len)
        return ndc__fail(-EBADMSG, "npy: header says %llu bytes, only %zu present",
                         (unsigned long long)off, len);
    const uint8_t *b = buf;
    struct ndc__npy_header h = { .major = b[6], .minor = b[7], .data_offset = off };
    struct scan s = { (const char *)b + (b[6] == 1 ? 10 : 12), (const char *)b + off };

    if (!eat(&s, '{'))
        return ndc__fail(-EBADMSG, "npy header: not a dict literal");
    bool have_descr = false, have_fortran = false, have_shape = false;
    for (;;) {
        if (eat(&s, '}'))
            break;
        const char *key;
        size_t klen;
        if ((err = scan_string(&s, &key, &klen)))
            return err;
        if (!eat(&s, ':'))
            return ndc__fail(-EBADMSG, "npy header: expected ':' after a key");
        if (klen == 5 && memcmp(key, "descr", 5) == 0) {
            if (have_descr)
                return ndc__fail(-EBADMSG, "npy header: 'descr' given twice");
            have_descr = true;
            skip_ws(&s);
            if (s.p < s.end && *s.p == '[')
                return ndc__fail(-ENOTSUP, "npy: structured dtypes are not taken");
            const char *d;
            size_t dlen;
            if ((err = scan_string(&s, &d, &dlen)))
                return err;
            if ((err = npy_descr_parse(d, dlen, &h.dtype, &h.swap)))
                return err;
        } else if (klen == 13 && memcmp(key, "fortran_order", 13) == 0) {
            if (have_fortran)
                return ndc__fail(-EBADMSG, "npy header: 'fortran_order' given twice");
            have_fortran = true;
            if (scan_word(&s, "True"))
                h.fortran = 1;
            else if (scan_word(&s, "False"))
                h.fortran = 0;
            else
                return ndc__fail(-EBADMSG, "npy header: 'fortran_order' is not True or False");
        } else if (klen == 5 && memcmp(key, "shape", 5) == 0) {
            if (have_shape)
                return ndc__fail(-EBADMSG, "npy header: 'shape' given twice");
            have_shape = true;
            if ((err = scan_shape(&s, &h.ndim, h.shape)))
                return err;
        } else {
            return ndc__fail(-EBADMSG, "npy header: unexpected key '%.*s'",
                             (int)(klen > 40 ? 40 : klen), key);
        }
        if (!eat(&s, ',')) {
            if (eat(&s, '}'))
                break;
            return ndc__fail(-EBADMSG, "npy header: expected ',' or '}' after a value");
        }
    }
    skip_ws(&s);
    /* what follows the dict: padding only (numpy pads with spaces, we also
     * allow NULs some writers use) */
    while (s.p < s.end && *s.p == '\0')
        s.p++;
    if (s.p != s.end)
        return ndc__fail(-EBADMSG, "npy header: bytes after the dict literal");
    if (!have_descr || !have_fortran || !have_shape)
        return ndc__fail(-EBADMSG, "npy header: missing key '%s'",
                         !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");

    /* numpy's rule: the non-zero extents' product must fit even beside a 0 */
    uint64_t n;
    int r = ndc__shape_bytes(ndc_dtype_size(h.dtype), h.ndim, h.shape, 1, &n);
    if (r)
        return r;
    if (off > (uint64_t)INT64_MAX - n)
        return ndc__fail(-EOVERFLOW, "npy: header plus payload overflows int64");
    h.nbytes = n;
    *out = h;
    return 0;
}

int ndc__npy_check_size(const struct ndc__npy_header *h, uint64_t file_size)
{
    uint64_t want = h->data_offset + h->nbytes;
    if (file_size < want)
        return ndc__fail(-EBADMSG, "npy: file has %llu bytes, header and shape need %llu "
                         "(truncated, or the header lies)",
                         (unsigned long long)file_size, (unsigned long long)want);
    if (file_size > want)
        return ndc__fail(-EBADMSG, "npy: %llu bytes after the array (header says %llu in all)",
                         (unsigned long long)(file_size - want), (unsigned long long)want);
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

int64_t ndc__npy_format(void *buf, size_t cap, enum ndc_dtype t, int ndim,
                        const int64_t *shape, int fortran, size_t align)
{
    char descr[16];
    if (npy_descr(t, descr) || ndim < 0 || ndim > NDC_MAX_DIMS || (ndim > 0 && !shape))
        return ndc__fail(-EINVAL, "npy: bad dtype %d or ndim %d", (int)t, ndim);
    if (align == 0)
        align = NDC__NPY_ALIGN;
    if (align < NDC__NPY_ALIGN || (align & (align - 1)) || align > NDC__NPY_HEADER_MAX)
        return ndc__fail(-EINVAL, "npy: header alignment %zu is not a power of two in 64..%u",
                         align, NDC__NPY_HEADER_MAX);
    /* the dict, as numpy's repr() of it reads */
    char dict[64 + NDC_MAX_DIMS * 22];
    size_t n = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': (",
                                descr, fortran ? "True" : "False");
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return ndc__fail(-EINVAL, "npy: negative extent %lld", (long long)shape[i]);
        n += (size_t)snprintf(dict + n, sizeof dict - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    }
    n += (size_t)snprintf(dict + n, sizeof dict - n, "%s), }", ndim == 1 ? "," : "");

    size_t prefix = 10;
    size_t total = (prefix + n + 1 + align - 1) & ~(align - 1);
    if (total - prefix > 65535) {
        prefix = 12;
        total = (prefix + n + 1 + align - 1) & ~(align - 1);
    }
    if (total > cap)
        return ndc__fail(-ENOSPC, "npy: header needs %zu bytes, buffer has %zu", total, cap);
    uint8_t *b = buf;
    size_t hlen = total - prefix;
    memcpy(b, npy_magic, sizeof npy_magic);
    b[6] = prefix == 10 ? 1 : 2;
    b[7] = 0;
    b[8] = (uint8_t)hlen;
    b[9] = (uint8_t)(hlen >> 8);
    if (prefix == 12) {
        b[10] = (uint8_t)(hlen >> 16);
        b[11] = (uint8_t)(hlen >> 24);
    }
    memcpy(b + prefix, dict, n);
    memset(b + prefix + n, ' ', hlen - n - 1);
    b[total - 1] = '\n';
    return (int64_t)total;
}

/* ---- payload transforms ------------------------------------------------- */

void ndc__npy_swap(void *p, size_t nbytes, enum ndc_dtype t)
{
    size_t w = ndc_dtype_size(t);
    if (t == NDC_C64 || t == NDC_C128)
        w /= 2;                         /* real and imaginary parts separately */
    uint8_t *b = p;
    /* one loop per width, each a load, a byte swap and a store */
#define SWAP_EACH(bits)                                                 \
    for (size_t i = 0; i + (bits) / 8 <= nbytes; i += (bits) / 8) {     \
        uint##bits##_t v;                                               \
        memcpy(&v, b + i, (bits) / 8);                                  \
        v = __builtin_bswap##bits(v);                                   \
        memcpy(b + i, &v, (bits) / 8);                                  \
    }
    switch (w) {
    case 2: SWAP_EACH(16); break;
    case 4: SWAP_EACH(32); break;
    case 8: SWAP_EACH(64); break;
    default:
        break;
    }
#undef SWAP_EACH
}

int ndc__npy_f_is_c(int ndim, const int64_t *shape)
{
    int big = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 0)
            return 1;
        big += shape[i] > 1;
    }
    return big <= 1;
}

void ndc__npy_f2c(void *dst, const void *src, size_t esize, int ndim, const int64_t *shape)
{
    int64_t st[NDC_MAX_DIMS];
    int64_t s = (int64_t)esize;
    for (int i = 0; i < ndim; i++) {
        st[i] = s;
        s *= shape[i];
    }
    ndc__copy_strided(dst, src, esize, ndim, shape, st);
}
