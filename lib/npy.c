/*
 * .npy files: the format (headers on byte buffers) and the streaming of
 * files into and out of channels.
 *
 * Format. See npy.h for the layout. The header is a Python literal; we parse
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

#include "error.h"
#include "npy.h"

static const uint8_t npy_magic[6] = { 0x93, 'N', 'U', 'M', 'P', 'Y' };

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ORDER '<'
#else
#define HOST_ORDER '>'
#endif

/* ---- dtypes ------------------------------------------------------------ */

static const struct { char kind; uint8_t size; } npy_types[NDC_DTYPE_LAST + 1] = {
    [NDC_BOOL] = { 'b', 1 },
    [NDC_I8]  = { 'i', 1 }, [NDC_I16] = { 'i', 2 }, [NDC_I32] = { 'i', 4 }, [NDC_I64] = { 'i', 8 },
    [NDC_U8]  = { 'u', 1 }, [NDC_U16] = { 'u', 2 }, [NDC_U32] = { 'u', 4 }, [NDC_U64] = { 'u', 8 },
    [NDC_F16] = { 'f', 2 }, [NDC_BF16] = { 0, 2 }, [NDC_F32] = { 'f', 4 }, [NDC_F64] = { 'f', 8 },
    [NDC_C64] = { 'c', 8 }, [NDC_C128] = { 'c', 16 },
};

static size_t npy_esize(enum ndc_dtype t)
{
    return (t >= NDC_BOOL && t <= NDC_DTYPE_LAST) ? npy_types[t].size : 0;
}

/* numpy's rule, whatever the order of the extents: the product of the
 * non-zero extents times the item size must fit in int64 (np.load says
 * "array is too big" otherwise, even when another extent is 0); the payload
 * is 0 bytes if any extent is 0. */
static int npy_payload_size(enum ndc_dtype t, int ndim, const int64_t *shape, uint64_t *out)
{
    uint64_t n = npy_esize(t);
    int zero = 0;
    for (int i = 0; i < ndim; i++) {
        uint64_t e = (uint64_t)shape[i];
        if (e == 0) {
            zero = 1;
            continue;
        }
        if (n > (uint64_t)INT64_MAX / e)
            return ndc__fail(-EOVERFLOW, "npy: the payload size of 'shape' overflows int64");
        n *= e;
    }
    *out = zero ? 0 : n;
    return 0;
}

const char *ndc__npy_descr(enum ndc_dtype t)
{
    static const char *const names[NDC_DTYPE_LAST + 1] = {
        [NDC_BOOL] = "|b1", [NDC_I8] = "|i1", [NDC_U8] = "|u1",
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        [NDC_I16] = "<i2", [NDC_I32] = "<i4", [NDC_I64] = "<i8",
        [NDC_U16] = "<u2", [NDC_U32] = "<u4", [NDC_U64] = "<u8",
        [NDC_F16] = "<f2", [NDC_F32] = "<f4", [NDC_F64] = "<f8",
        [NDC_C64] = "<c8", [NDC_C128] = "<c16",
#else
        [NDC_I16] = ">i2", [NDC_I32] = ">i4", [NDC_I64] = ">i8",
        [NDC_U16] = ">u2", [NDC_U32] = ">u4", [NDC_U64] = ">u8",
        [NDC_F16] = ">f2", [NDC_F32] = ">f4", [NDC_F64] = ">f8",
        [NDC_C64] = ">c8", [NDC_C128] = ">c16",
#endif
        [NDC_BF16] = "bfloat16",
    };
    return (t >= NDC_BOOL && t <= NDC_DTYPE_LAST) ? names[t] : NULL;
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
        /* bfloat16's entry has no kind letter: a NUL in the descr must not match it */
        if (!npy_types[i].kind || npy_types[i].kind != kind || npy_types[i].size != size)
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

    uint64_t n;
    int r = npy_payload_size(h.dtype, h.ndim, h.shape, &n);
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
    const char *descr = ndc__npy_descr(t);
    if (!descr || ndim < 0 || ndim > NDC_MAX_DIMS || (ndim > 0 && !shape))
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
    size_t w = npy_esize(t);
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

/* Walk the destination in C order while the source is addressed by its own
 * strides: an odometer over all but the last axis, a tight loop over it. */
static void copy_strided(uint8_t *dst, const uint8_t *src, size_t esize, int ndim,
                         const int64_t *shape, const int64_t *sstrides)
{
    if (ndim == 0) {
        memcpy(dst, src, esize);
        return;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0)
            return;
    int64_t idx[NDC_MAX_DIMS] = { 0 };
    int last = ndim - 1;
    int64_t inner = shape[last], is = sstrides[last];
    for (;;) {
        if (is == (int64_t)esize) {
            memcpy(dst, src, (size_t)inner * esize);
            dst += (size_t)inner * esize;
        } else {
            const uint8_t *q = src;
            for (int64_t j = 0; j < inner; j++, q += is, dst += esize)
                memcpy(dst, q, esize);
        }
        int k = last - 1;
        for (; k >= 0; k--) {
            src += sstrides[k];
            if (++idx[k] < shape[k])
                break;
            src -= sstrides[k] * shape[k];
            idx[k] = 0;
        }
        if (k < 0)
            return;
    }
}

void ndc__npy_f2c(void *dst, const void *src, size_t esize, int ndim, const int64_t *shape)
{
    int64_t st[NDC_MAX_DIMS];
    int64_t s = (int64_t)esize;
    for (int i = 0; i < ndim; i++) {
        st[i] = s;
        s *= shape[i];
    }
    copy_strided(dst, src, esize, ndim, shape, st);
}

void ndc__npy_gather(void *dst, const struct ndc_array *a, size_t esize)
{
    copy_strided(dst, a->data, esize, a->ndim, a->shape, a->strides);
}

/* ==== streaming files into and out of channels ===========================
 *
 * Loading. Each file in flight is a job: its header is read and checked
 * (synchronously: a few hundred bytes) before a slot is reserved, so a bad
 * file never takes a slot. The payload is then read with up to
 * JOB_REQS requests of at most CHUNK bytes in flight, straight into the slot
 * (or into a temporary buffer for Fortran order). Jobs finish in any order
 * and are committed strictly in the order given. A reservation is only ever
 * waited for when nothing of ours is in flight, so our own uncommitted slots
 * can never starve us.
 *
 * Registered buffers: each slot is registered (pinned) the first time a job
 * lands in it, for the bytes it needs (rounded to 2 MiB), so unused slot
 * capacity stays unbacked. The first -ENOMEM (RLIMIT_MEMLOCK) stops further
 * attempts; requests then use plain reads.
 *
 * O_DIRECT (NDC_NPY_DIRECT): the payload sits at a 64-byte (sometimes only
 * 16-byte) file offset while the slot is page aligned, so only the middle
 * part whose file offset and memory address both meet statx's DIOALIGN
 * requirements is read direct; the unaligned head and tail go through the
 * page cache. It helps for cold files read once (no page-cache copy, no
 * cache pollution); it hurts for files already cached. Writing (drain) uses
 * O_DIRECT when the payload length is block aligned: the header is then
 * padded to 4096 bytes so the payload starts block aligned.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chan.h"
#include "io.h"

#define CHUNK       (8u << 20)     /* bytes per request */
#define JOB_REQS    4              /* requests in flight per file */
#define REG_ROUND   (2u << 20)     /* registration granularity */
#define MAX_DEPTH   256            /* queue_depth above this is -EINVAL */

enum job_state { JOB_EMPTY, JOB_OPENED, JOB_IO, JOB_DONE };

struct job {
    enum job_state state;
    int            fd, dfd;        /* buffered; O_DIRECT or -1 */
    int            err;
    int            buf_index;      /* registered buffer of dst, or -1 */
    const char    *path;
    struct ndc__npy_header h;
    struct ndc_array a;            /* load: the reserved slot; drain: the loan */
    uint8_t       *dst;            /* where the payload goes (or comes from) */
    uint8_t       *bounce;         /* Fortran order: the file's layout */
    uint8_t       *hdr;            /* drain: the header to write */
    uint64_t       hdr_len;
    uint64_t       direct_lo, direct_hi;  /* payload range done with dfd */
    uint64_t       cursor;         /* payload bytes handed to requests so far */
    uint64_t       left;           /* payload bytes not yet transferred */
    unsigned       pending;        /* requests in flight */
    struct ndc__io_req req[JOB_REQS + 1];   /* +1: drain's header write */
};

static void job_close(struct job *j)
{
    if (j->fd >= 0)
        close(j->fd);
    if (j->dfd >= 0)
        close(j->dfd);
    free(j->bounce);
    free(j->hdr);
    j->fd = j->dfd = -1;
    j->bounce = j->hdr = NULL;
    j->state = JOB_EMPTY;
}

/* Prefix this thread's last detail with `what` (copied first: the detail
 * buffer is also the destination). */
static int fail_in(int err, const char *what)
{
    char detail[200];
    snprintf(detail, sizeof detail, "%s", ndc_last_error());
    return ndc__fail(err, "%s: %s", what, detail);
}

static int opts_check(const struct ndc_npy_opts *o, unsigned *depth, uint32_t *flags)
{
    static const struct ndc_npy_opts zero;
    if (!o)
        o = &zero;
    for (size_t i = 0; i < sizeof o->reserved / sizeof o->reserved[0]; i++)
        if (o->reserved[i])
            return ndc__fail(-EINVAL, "npy opts: reserved[%zu] is not zero", i);
    if (o->flags & ~NDC_NPY_DIRECT)
        return ndc__fail(-EINVAL, "npy opts: unknown flag bits 0x%x", o->flags & ~NDC_NPY_DIRECT);
    if (o->queue_depth > MAX_DEPTH)
        return ndc__fail(-EINVAL, "npy opts: queue_depth %u > %d", o->queue_depth, MAX_DEPTH);
    *depth = o->queue_depth ? o->queue_depth : 4;
    *flags = o->flags;
    return 0;
}

/* Direct I/O alignment of fd: memory and file offset, 0 when unsupported. */
static void dio_align(int fd, uint32_t *mem, uint32_t *off)
{
    struct statx sx;
    *mem = *off = 0;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
        *mem = sx.stx_dio_mem_align;
        *off = sx.stx_dio_offset_align;
    } else {
        *mem = *off = 4096;        /* no report: the safe assumption */
    }
}

int ndc__npy_open(const char *path, struct ndc__npy_header *h)
{
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer, past
     * any timeout; it is refused as not a regular file below, and the flag
     * is cleared for the reads (io_uring would answer -EAGAIN). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return ndc__fail(-errno, "npy: open %s", path);
    struct stat st;
    int err = 0;
    if (fstat(fd, &st) != 0)
        err = ndc__fail(-errno, "npy: fstat %s", path);
    else if (!S_ISREG(st.st_mode))
        err = ndc__fail(-EINVAL, "npy: %s is not a regular file", path);
    else if (fcntl(fd, F_SETFL, 0) != 0)
        err = ndc__fail(-errno, "npy: fcntl %s", path);
    uint8_t small[4096];
    uint8_t *buf = small;
    ssize_t got = 0;
    if (!err && (got = pread(fd, small, sizeof small, 0)) < 0)
        err = ndc__fail(-errno, "npy: read %s", path);
    uint64_t off;
    int parsed = 0;   /* errors from here on come from the header: name the file */
    if (!err) {
        err = ndc__npy_header_size(small, (size_t)got, &off);
        parsed = 1;
    }
    if (!err && off > (uint64_t)got && off <= (uint64_t)st.st_size) {
        if (!(buf = malloc(off)))
            err = -ENOMEM;
        else if ((got = pread(fd, buf, off, 0)) < 0)
            err = ndc__fail(-errno, "npy: read %s", path);
    }
    if (!err)
        err = ndc__npy_parse(buf, (size_t)got, h);
    if (buf != small)
        free(buf);
    if (!err)
        err = ndc__npy_check_size(h, (uint64_t)st.st_size);
    if (err && parsed)
        err = fail_in(err, path);   /* the parser's detail, with the file named */
    if (err) {
        close(fd);
        return err;
    }
    return fd;
}

int ndc_npy_peek(const char *path, struct ndc_array *a)
{
    if (!path || !a)
        return ndc__fail(-EINVAL, "npy: NULL argument");
    struct ndc__npy_header h;
    int fd = ndc__npy_open(path, &h);
    if (fd < 0)
        return fd;
    close(fd);
    /* the header passed ndc__npy_parse: a valid dtype, ndim and shape */
    return ndc_array_init(a, h.dtype, h.ndim, h.shape, NULL);
}

/* Open a file and read and check its header; nothing is reserved yet. */
static int job_open(struct job *j, const char *path)
{
    j->fd = j->dfd = -1;
    j->path = path;
    j->err = 0;
    int fd = ndc__npy_open(path, &j->h);
    if (fd < 0)
        return fd;
    j->fd = fd;
    posix_fadvise(fd, (off_t)j->h.data_offset, (off_t)j->h.nbytes, POSIX_FADV_SEQUENTIAL);

    memset(&j->a, 0, sizeof j->a);
    j->a.dtype = j->h.dtype;
    j->a.ndim = j->h.ndim;
    memcpy(j->a.shape, j->h.shape, sizeof j->h.shape);
    j->state = JOB_OPENED;
    return 0;
}

/* Per-channel registration state for the loader. */
struct reg {
    struct ndc__payload pl;
    uint64_t *len;                 /* registered bytes per slot; 0 = none */
    int       on;
};

static void reg_init(struct reg *g, ndc_chan *ch, struct ndc__io *io)
{
    memset(g, 0, sizeof *g);
    ndc__chan_payload(ch, &g->pl);
    if (!g->pl.writable || g->pl.nslots == 0 || g->pl.slot_stride > (1u << 30))
        return;
    if (!(g->len = calloc(g->pl.nslots, sizeof *g->len)))
        return;
    g->on = ndc__io_buffers(io, g->pl.nslots) == 0;
}

static int reg_slot(struct reg *g, struct ndc__io *io, void *data, uint64_t need)
{
    if (!g->on || need == 0)
        return -1;
    uint8_t *base = g->pl.base, *p = data;
    if (p < base || (uint64_t)(p - base) >= (uint64_t)g->pl.nslots * g->pl.slot_stride)
        return -1;
    uint64_t idx = (uint64_t)(p - base) / g->pl.slot_stride;
    uint8_t *slot = base + idx * g->pl.slot_stride;
    need += (uint64_t)(p - slot);
    if (g->len[idx] < need) {
        uint64_t len = (need + REG_ROUND - 1) / REG_ROUND * REG_ROUND;
        if (len > g->pl.slot_stride)
            len = g->pl.slot_stride;
        int err = ndc__io_register(io, (unsigned)idx, slot, len);
        if (err) {
            if (err == -ENOMEM || err == -EPERM || err == -ENOTSUP)
                g->on = 0;         /* memlock exhausted: plain reads from now on */
            g->len[idx] = 0;
            return -1;
        }
        g->len[idx] = len;
    }
    return (int)idx;
}

/* The next request of a job: the payload range [cursor, cursor+len) of one
 * kind (head/tail buffered, middle direct). */
static void job_next_req(struct job *j, struct ndc__io_req *r)
{
    uint64_t c = j->cursor, end = j->h.nbytes;
    int direct = j->dfd >= 0 && c >= j->direct_lo && c < j->direct_hi;
    if (j->dfd >= 0)
        end = c < j->direct_lo ? j->direct_lo : c < j->direct_hi ? j->direct_hi : end;
    uint64_t len = end - c < CHUNK ? end - c : CHUNK;
    r->fd = direct ? j->dfd : j->fd;
    r->write = 0;
    r->buf_index = j->buf_index;
    r->buf = j->dst + c;
    r->len = len;
    r->off = j->h.data_offset + c;
    r->user = j;
    j->cursor = c + len;
}

/* Start reading the payload of an opened job whose slot is reserved. */
static int job_start_read(struct job *j, struct ndc__io *io, struct reg *g, uint32_t flags)
{
    uint64_t n = j->h.nbytes;
    j->buf_index = -1;
    j->dst = j->a.data;
    if (j->h.fortran && !ndc__npy_f_is_c(j->h.ndim, j->h.shape)) {
        if (posix_memalign((void **)&j->bounce, 4096, n ? n : 1))
            return ndc__fail(-ENOMEM, "npy: %s: no memory for a %llu-byte Fortran-order buffer",
                             j->path, (unsigned long long)n);
        j->dst = j->bounce;
    } else {
        j->buf_index = reg_slot(g, io, j->dst, n);
    }
    j->direct_lo = j->direct_hi = 0;
    if ((flags & NDC_NPY_DIRECT) && n > 0) {
        uint32_t mem, offa;
        dio_align(j->fd, &mem, &offa);
        if (mem && offa) {
            uint64_t k = (offa - j->h.data_offset % offa) % offa;
            uint64_t m = k < n ? (n - k) / offa * offa : 0;
            if (m > 0 && ((uintptr_t)(j->dst + k) % mem) == 0) {
                char fdpath[64];
                snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", j->fd);
                j->dfd = open(fdpath, O_RDONLY | O_DIRECT | O_CLOEXEC);
                j->direct_lo = k;
                j->direct_hi = k + m;
            }
        }
    }
    j->cursor = 0;
    j->left = n;
    j->pending = 0;
    j->state = JOB_IO;
    for (unsigned i = 0; i < JOB_REQS && j->cursor < n; i++) {
        job_next_req(j, &j->req[i]);
        int err = ndc__io_queue(io, &j->req[i]);
        if (err)
            return ndc__fail(err, "npy: io queue full");   /* sized for it: a bug */
        j->pending++;
    }
    if (j->pending == 0)
        j->state = JOB_DONE;
    return 0;
}

/* A read request of a job completed. */
/* A short transfer (a signal, the ~2 GiB per-call limit): queue the rest of
 * the same request. \return 1 queued; 0 it could not be, which is the
 * job's error (a file must never be left short without one). */
static int requeue_rest(struct job *j, struct ndc__io *io, struct ndc__io_req *r)
{
    r->buf = (uint8_t *)r->buf + r->res;
    r->off += (uint64_t)r->res;
    r->len -= (size_t)r->res;
    if (ndc__io_queue(io, r) == 0) {
        j->pending++;
        return 1;
    }
    if (j->path)
        j->err = ndc__fail(-EIO, "npy: %s: could not queue the rest of a short transfer", j->path);
    else   /* a drain job: its file is named by seq */
        j->err = ndc__fail(-EIO, "npy: %012llu.npy: could not queue the rest of a short transfer",
                           (unsigned long long)j->a.seq);
    return 0;
}

static void job_read_done(struct job *j, struct ndc__io *io, struct ndc__io_req *r)
{
    j->pending--;
    if (r->res <= 0 && !j->err)
        j->err = r->res < 0 ? ndc__fail((int)r->res, "npy: reading %s", j->path)
                            : ndc__fail(-EBADMSG, "npy: %s shrank while being read", j->path);
    if (!j->err) {
        j->left -= (uint64_t)r->res;
        if ((uint64_t)r->res < r->len) {
            if (requeue_rest(j, io, r))
                return;
        } else if (j->cursor < j->h.nbytes) {
            job_next_req(j, r);
            if (ndc__io_queue(io, r) == 0) {
                j->pending++;
                return;
            }
        }
    }
    if (j->pending == 0)
        j->state = JOB_DONE;
}

/* Everything read: put the payload in order and publish it. */
static int job_commit(struct job *j, ndc_chan *ch)
{
    if (j->err)
        return j->err;
    if (j->left)   /* never publish a slot whose payload was not all read */
        return ndc__fail(-EIO, "npy: %s: %llu bytes were never read", j->path,
                         (unsigned long long)j->left);
    if (j->bounce)
        ndc__npy_f2c(j->a.data, j->bounce, npy_esize(j->h.dtype), j->h.ndim, j->h.shape);
    if (j->h.swap)
        ndc__npy_swap(j->a.data, j->h.nbytes, j->h.dtype);
    return ndc_commit(ch, &j->a);
}

static int load_files(ndc_chan *ch, const char *const *paths, size_t n, const uint64_t *tag,
                      int64_t timeout_ns, const struct ndc_npy_opts *o)
{
    unsigned depth;
    uint32_t flags;
    int err = opts_check(o, &depth, &flags);
    if (err)
        return err;
    if (!ch || (n && !paths))
        return ndc__fail(-EINVAL, "npy: NULL channel or paths");
    if (n > INT32_MAX)
        return ndc__fail(-EINVAL, "npy: %zu files (at most INT_MAX)", n);
    if (depth > n)
        depth = n ? (unsigned)n : 1;

    struct ndc__io *io;
    if ((err = ndc__io_create(&io, depth * JOB_REQS)))
        return err;
    struct job *jobs = calloc(depth, sizeof *jobs);
    if (!jobs) {
        ndc__io_free(io);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < depth; i++)
        jobs[i].fd = jobs[i].dfd = -1;
    struct reg g;
    if (n > 1)          /* pinning pays off over a stream, not for one file */
        reg_init(&g, ch, io);
    else
        memset(&g, 0, sizeof g);

    size_t next = 0, sent = 0;
    unsigned head = 0, count = 0;     /* jobs holding a slot, oldest first */
    err = 0;
    for (;;) {
        /* start files while there is room */
        while (!err && count < depth) {
            struct job *j = &jobs[(head + count) % depth];
            if (j->state == JOB_EMPTY) {
                if (next == n)
                    break;
                if ((err = job_open(j, paths[next]))) {
                    job_close(j);
                    break;
                }
                j->a.tag = tag ? *tag : (uint64_t)next;
                next++;
            }
            int r = ndc_reserve(ch, &j->a, count ? 0 : timeout_ns);
            if (r == -EAGAIN && count)
                break;                  /* reap and commit first, then retry */
            if (r) {
                err = fail_in(r, j->path);
                job_close(j);
                break;
            }
            count++;
            if ((r = job_start_read(j, io, &g, flags))) {
                j->err = r;
                if (j->pending == 0)
                    j->state = JOB_DONE;
            }
        }
        /* commit finished files in order */
        while (count && jobs[head].state == JOB_DONE) {
            struct job *j = &jobs[head];
            int r = job_commit(j, ch);
            if (r)
                ndc_cancel(ch, &j->a);  /* its file failed: the slot goes back unpublished */
            if (r && !err)
                err = r;
            if (!r)
                sent++;
            job_close(j);
            head = (head + 1) % depth;
            count--;
            if (r)
                goto fail;
        }
        if (count == 0 && (err || (next == n && jobs[head].state == JOB_EMPTY)))
            break;
        if (count == 0)
            continue;
        struct ndc__io_req *r;
        int e = ndc__io_reap(io, &r);
        if (e) {
            err = e;
            goto fail;
        }
        job_read_done(r->user, io, r);
    }
    goto out;
fail:
    /* Let the reads in flight land before their slots and buffers go, then
     * give back every reservation: nothing after the failure is committed. */
    while (ndc__io_reap(io, &(struct ndc__io_req *){ NULL }) == 0)
        ;
    for (unsigned k = 0; k < count; k++)
        ndc_cancel(ch, &jobs[(head + k) % depth].a);
    for (unsigned i = 0; i < depth; i++)
        job_close(&jobs[i]);
out:
    for (unsigned i = 0; i < depth; i++)
        if (jobs[i].state != JOB_EMPTY)
            job_close(&jobs[i]);
    ndc__io_free(io);
    free(jobs);
    free(g.len);
    return err ? err : (int)sent;
}

int ndc_npy_read(ndc_chan *ch, const char *path, uint64_t tag, int64_t timeout_ns)
{
    if (!path)
        return ndc__fail(-EINVAL, "npy: NULL path");
    int r = load_files(ch, &path, 1, &tag, timeout_ns, NULL);
    return r < 0 ? r : 0;
}

int ndc_npy_load(ndc_chan *ch, const char *const *paths, size_t n, const struct ndc_npy_opts *o)
{
    return load_files(ch, paths, n, NULL, NDC_FOREVER, o);
}

/* ---- writing ------------------------------------------------------------- */

/* Write all of buf at off through io (one request at a time). */
static int io_write_all(struct ndc__io *io, int fd, const void *buf, size_t len, uint64_t off)
{
    struct ndc__io_req req = { .fd = fd, .write = 1, .buf_index = -1,
                               .buf = (void *)buf, .len = len, .off = off };
    while (req.len > 0) {
        struct ndc__io_req *r;
        int err = ndc__io_queue(io, &req);
        if (!err)
            err = ndc__io_reap(io, &r);
        if (err)
            return err;
        if (req.res <= 0)
            return req.res < 0 ? (int)req.res : -EIO;
        req.buf = (uint8_t *)req.buf + req.res;
        req.off += (uint64_t)req.res;
        req.len -= (size_t)req.res;
    }
    return 0;
}

static int layout(const struct ndc_array *a, size_t esize, int fortran)
{
    int64_t s = (int64_t)esize;
    for (int k = 0; k < a->ndim; k++) {
        int i = fortran ? k : a->ndim - 1 - k;
        if (a->shape[i] != 1 && a->strides[i] != s)
            return 0;
        s *= a->shape[i];
    }
    return 1;
}

int ndc_npy_write(const struct ndc_array *a, const char *path)
{
    if (!a || !path)
        return ndc__fail(-EINVAL, "npy: NULL array or path");
    size_t nbytes = ndc_array_nbytes(a);
    if (nbytes == SIZE_MAX)
        return ndc__fail(-EINVAL, "npy: invalid array (dtype %d, ndim %d)", (int)a->dtype, a->ndim);
    size_t esize = npy_esize(a->dtype);
    if (nbytes && !a->data)
        return ndc__fail(-EINVAL, "npy: NULL data");
    uint64_t numpy_size;
    int r = npy_payload_size(a->dtype, a->ndim, a->shape, &numpy_size);
    if (r)
        return r;   /* a file np.load (and ndc_npy_read) would refuse */
    /* like np.save: C-contiguous as is, Fortran-contiguous as fortran_order,
     * anything else gathered into C order */
    int c = nbytes == 0 || layout(a, esize, 0);
    int f = !c && layout(a, esize, 1);
    uint8_t hdr[4096];
    int64_t hlen = ndc__npy_format(hdr, sizeof hdr, a->dtype, a->ndim, a->shape, f, 0);
    if (hlen < 0)
        return (int)hlen;
    const void *src = a->data;
    void *tmp = NULL;
    if (!c && !f) {
        if (!(tmp = malloc(nbytes)))
            return ndc__fail(-ENOMEM, "npy: no memory to gather %zu bytes", nbytes);
        ndc__npy_gather(tmp, a, esize);
        src = tmp;
    }
    struct ndc__io *io = NULL;
    int err = ndc__io_create(&io, 1);
    int fd = -1;
    int regular = 0;
    if (!err && (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        err = ndc__fail(-errno, "npy: create %s", path);
    struct stat st;
    if (!err)
        regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (!err)
        err = io_write_all(io, fd, hdr, (size_t)hlen, 0);
    if (!err && nbytes)
        err = io_write_all(io, fd, src, nbytes, (uint64_t)hlen);
    if (fd >= 0 && close(fd) != 0 && !err)
        err = -errno;
    if (err && fd >= 0 && regular)
        unlink(path);   /* a half-written file; never a device or FIFO that was there */
    ndc__io_free(io);
    free(tmp);
    return err ? ndc__fail(err, "npy: writing %s", path) : 0;
}

/* Drain: one job per array being written. */
static int drain_start(struct job *j, struct ndc__io *io, int dirfd, uint32_t flags)
{
    char name[32];
    snprintf(name, sizeof name, "%012llu.npy", (unsigned long long)j->a.seq);
    uint64_t n = ndc_array_nbytes(&j->a);
    uint32_t mem = 0, offa = 0;
    int direct = 0;
    j->fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (j->fd < 0)
        return ndc__fail(-errno, "npy: create %s", name);
    if ((flags & NDC_NPY_DIRECT) && n > 0) {
        dio_align(j->fd, &mem, &offa);
        direct = mem && offa && offa <= 4096 && 4096 % offa == 0 && n % offa == 0 &&
                 (uintptr_t)j->a.data % mem == 0;
        if (direct) {
            char fdpath[64];
            snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", j->fd);
            j->dfd = open(fdpath, O_WRONLY | O_DIRECT | O_CLOEXEC);
            direct = j->dfd >= 0;
        }
    }
    if (posix_memalign((void **)&j->hdr, 4096, 4096))
        return -ENOMEM;
    int64_t hlen = ndc__npy_format(j->hdr, 4096, j->a.dtype, j->a.ndim, j->a.shape, 0,
                                   direct ? 4096 : 0);
    if (hlen < 0)
        return (int)hlen;
    j->hdr_len = (uint64_t)hlen;
    j->h.data_offset = (uint64_t)hlen;
    j->h.nbytes = n;
    j->dst = j->a.data;
    j->buf_index = -1;
    j->pending = 0;
    j->left = n;
    j->cursor = n;                 /* writes go in one request each (split only when short) */
    j->state = JOB_IO;
    int fd = direct ? j->dfd : j->fd;
    j->req[0] = (struct ndc__io_req){ .fd = fd, .write = 1, .buf_index = -1, .buf = j->hdr,
                                      .len = (size_t)hlen, .off = 0, .user = j };
    j->req[1] = (struct ndc__io_req){ .fd = fd, .write = 1, .buf_index = -1, .buf = j->a.data,
                                      .len = n, .off = (uint64_t)hlen, .user = j };
    for (int i = 0; i < (n ? 2 : 1); i++) {
        int err = ndc__io_queue(io, &j->req[i]);
        if (err)
            return ndc__fail(err, "npy: io queue full");
        j->pending++;
    }
    return 0;
}

static void drain_done(struct job *j, struct ndc__io *io, struct ndc__io_req *r)
{
    j->pending--;
    if (r->res <= 0 && !j->err)
        j->err = r->res < 0 ? ndc__fail((int)r->res, "npy: writing %012llu.npy",
                                        (unsigned long long)j->a.seq)
                            : ndc__fail(-EIO, "npy: writing %012llu.npy: no progress",
                                        (unsigned long long)j->a.seq);
    if (!j->err && (uint64_t)r->res < r->len && requeue_rest(j, io, r))
        return;
    if (j->pending == 0)
        j->state = JOB_DONE;
}

/* A write finished: close the file, give the slot back. */
static int drain_finish(struct job *j, ndc_chan *ch, int dirfd)
{
    int err = j->err;
    if (j->dfd >= 0 && close(j->dfd) != 0 && !err)
        err = -errno;
    j->dfd = -1;
    if (j->fd >= 0 && close(j->fd) != 0 && !err)
        err = -errno;
    j->fd = -1;
    if (err) {
        char name[32];
        snprintf(name, sizeof name, "%012llu.npy", (unsigned long long)j->a.seq);
        unlinkat(dirfd, name, 0);
    }
    int r = ndc_release(ch, &j->a);
    job_close(j);
    return err ? err : r;
}

int ndc_npy_drain(ndc_chan *ch, const char *dir, const struct ndc_npy_opts *o)
{
    unsigned depth;
    uint32_t flags;
    int err = opts_check(o, &depth, &flags);
    if (err)
        return err;
    if (!ch || !dir)
        return ndc__fail(-EINVAL, "npy: NULL channel or directory");
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return ndc__fail(-errno, "npy: open directory %s", dir);
    struct ndc__io *io;
    if ((err = ndc__io_create(&io, depth * 2))) {
        close(dirfd);
        return err;
    }
    struct job *jobs = calloc(depth, sizeof *jobs);
    if (!jobs) {
        ndc__io_free(io);
        close(dirfd);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < depth; i++)
        jobs[i].fd = jobs[i].dfd = -1;

    unsigned inflight = 0;
    int written = 0, closed = 0;
    for (;;) {
        while (!err && !closed && inflight < depth) {
            struct job *j = NULL;
            for (unsigned i = 0; i < depth && !j; i++)
                if (jobs[i].state == JOB_EMPTY)
                    j = &jobs[i];
            /* never sleep on the channel while our writes hold slots: the
             * sender may be waiting for exactly those */
            int r = ndc_acquire(ch, &j->a, inflight ? 0 : NDC_FOREVER);
            if (r == -EAGAIN && inflight)
                break;
            if (r == -EPIPE) {
                closed = 1;
                break;
            }
            if (r) {
                err = r;
                break;
            }
            j->err = 0;
            j->fd = j->dfd = -1;
            inflight++;
            if ((r = drain_start(j, io, dirfd, flags))) {
                j->err = r;
                if (j->pending == 0)
                    j->state = JOB_DONE;
            }
            if (written == INT32_MAX - (int)inflight)
                closed = 1;                     /* the count would overflow */
        }
        for (unsigned i = 0; i < depth; i++) {
            if (jobs[i].state != JOB_DONE)
                continue;
            int r = drain_finish(&jobs[i], ch, dirfd);
            inflight--;
            if (r && !err)
                err = r;
            else if (!r)
                written++;
        }
        if (inflight == 0 && (err || closed))
            break;
        if (inflight == 0)
            continue;
        struct ndc__io_req *r;
        int e = ndc__io_reap(io, &r);
        if (e) {
            if (!err)
                err = e;
            break;
        }
        drain_done(r->user, io, r);
    }
    ndc__io_free(io);       /* waits for anything still in flight */
    for (unsigned i = 0; i < depth; i++)
        if (jobs[i].state != JOB_EMPTY)
            drain_finish(&jobs[i], ch, dirfd);
    free(jobs);
    close(dirfd);
    return err ? err : written;
}
