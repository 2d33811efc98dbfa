/*
 * .npy files: the header parser and writer on memory (every version, dtype,
 * byte order, layout, and the rejections), then files through channels
 * (read, load in order with more files than slots, drain, Fortran order,
 * big-endian swaps, registered buffers refused by memlock, O_DIRECT), then
 * numpy itself: files numpy writes load exactly, files we write np.load()
 * unchanged. The numpy suite runs /usr/bin/python3 and skips without numpy.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "npy.h"

/* ---- helpers ------------------------------------------------------------- */

static char tmpdir[256];

static void mktmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ndc_npy_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rmtmp(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static const char *tpath(const char *name)
{
    static __thread char buf[4][512];
    static __thread int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* A .npy file from a header dict text and a payload, in a given version. */
static size_t make_npy(uint8_t *out, int major, const char *dict, const void *payload, size_t n)
{
    size_t prefix = major == 1 ? 10 : 12;
    size_t dl = strlen(dict);
    size_t total = (prefix + dl + 1 + 63) / 64 * 64;
    size_t hlen = total - prefix;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (uint8_t)major;
    out[7] = 0;
    out[8] = (uint8_t)hlen;
    out[9] = (uint8_t)(hlen >> 8);
    if (prefix == 12) {
        out[10] = (uint8_t)(hlen >> 16);
        out[11] = (uint8_t)(hlen >> 24);
    }
    memcpy(out + prefix, dict, dl);
    memset(out + prefix + dl, ' ', hlen - dl - 1);
    out[total - 1] = '\n';
    if (n)
        memcpy(out + total, payload, n);
    return total + n;
}

static int parse_dict(int major, const char *dict, struct ndc__npy_header *h)
{
    uint8_t buf[8192];
    size_t n = make_npy(buf, major, dict, NULL, 0);
    return ndc__npy_parse(buf, n, h);
}

/* ---- the parser ---------------------------------------------------------- */

Test(npy_parse, every_version)
{
    for (int v = 1; v <= 3; v++) {
        struct ndc__npy_header h;
        th_ok(parse_dict(v, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", &h));
        cr_assert_eq(h.major, v);
        cr_assert_eq(h.dtype, NDC_F64);
        cr_assert_eq(h.ndim, 2);
        cr_assert_eq(h.shape[0], 3);
        cr_assert_eq(h.shape[1], 4);
        cr_assert_eq(h.nbytes, 96);
        cr_assert_eq(h.data_offset % 64, 0);
        cr_assert_eq(h.fortran, 0);
        cr_assert_eq(h.swap, 0);
    }
}

Test(npy_parse, every_dtype_and_order)
{
    static const struct { const char *d; enum ndc_dtype t; } k[] = {
        { "b1", NDC_BOOL }, { "i1", NDC_I8 }, { "i2", NDC_I16 }, { "i4", NDC_I32 },
        { "i8", NDC_I64 }, { "u1", NDC_U8 }, { "u2", NDC_U16 }, { "u4", NDC_U32 },
        { "u8", NDC_U64 }, { "f2", NDC_F16 }, { "f4", NDC_F32 }, { "f8", NDC_F64 },
        { "c8", NDC_C64 }, { "c16", NDC_C128 },
    };
    const char orders[] = "<>|=";
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        for (int o = 0; o < 4; o++) {
            char dict[128];
            snprintf(dict, sizeof dict, "{'descr': '%c%s', 'fortran_order': False, 'shape': (2,), }",
                     orders[o], k[i].d);
            struct ndc__npy_header h;
            th_ok(parse_dict(1, dict, &h));
            cr_assert_eq(h.dtype, k[i].t, "%s", dict);
            cr_assert_eq(h.nbytes, 2 * ndc_dtype_size(k[i].t));
            int want_swap = orders[o] == '>' && ndc_dtype_size(k[i].t) > 1;
            cr_assert_eq(h.swap, want_swap, "%s", dict);
        }
    }
    struct ndc__npy_header h;
    th_ok(parse_dict(1, "{'descr': 'bfloat16', 'fortran_order': False, 'shape': (2,), }", &h));
    cr_assert_eq(h.dtype, NDC_BF16);
}

Test(npy_parse, shapes_and_spelling)
{
    struct ndc__npy_header h;
    th_ok(parse_dict(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (), }", &h));
    cr_assert_eq(h.ndim, 0);
    cr_assert_eq(h.nbytes, 4);
    th_ok(parse_dict(1, "{'descr': '<i4', 'fortran_order': True, 'shape': (0, 7), }", &h));
    cr_assert_eq(h.ndim, 2);
    cr_assert_eq(h.nbytes, 0);
    cr_assert_eq(h.fortran, 1);
    /* keys in any order, double quotes, no trailing comma, Python 2 longs */
    th_ok(parse_dict(1, "{\"shape\":(5L,6L),\"fortran_order\":False,\"descr\":\"|u1\"}", &h));
    cr_assert_eq(h.shape[1], 6);
    cr_assert_eq(h.nbytes, 30);
    /* numpy's 1-d spelling */
    th_ok(parse_dict(1, "{'descr': '<i2', 'fortran_order': False, 'shape': (9,), }", &h));
    cr_assert_eq(h.ndim, 1);
    /* 32 dimensions */
    char dict[512] = "{'descr': '<i2', 'fortran_order': False, 'shape': (";
    for (int i = 0; i < 32; i++)
        strcat(dict, "1, ");
    strcat(dict, "), }");
    th_ok(parse_dict(1, dict, &h));
    cr_assert_eq(h.ndim, 32);
}

Test(npy_parse, rejections)
{
    struct ndc__npy_header h;
    memset(&h, 0x5a, sizeof h);
    struct ndc__npy_header ref = h;
    static const struct { const char *dict; int err; } bad[] = {
        { "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", -ENOTSUP },
        { "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,), }", -ENOTSUP },
        { "{'descr': '<U10', 'fortran_order': False, 'shape': (2,), }", -ENOTSUP },
        { "{'descr': '<f16', 'fortran_order': False, 'shape': (2,), }", -ENOTSUP },
        { "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (2,), }", -ENOTSUP },
        { "{'descr': '|V2', 'fortran_order': False, 'shape': (2,), }", -ENOTSUP },
        { "{'descr': '<f8', 'fortran_order': False, 'shape': (3), }", -EBADMSG },
        { "{'descr': '<f8', 'fortran_order': False, 'shape': (-3,), }", -EBADMSG },
        { "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", -EOVERFLOW },
        { "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", -EOVERFLOW },
        { "{'descr': '<f8', 'fortran_order': 0, 'shape': (2,), }", -EBADMSG },
        { "{'descr': '<f8', 'shape': (2,), }", -EBADMSG },
        { "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'extra': 1}", -EBADMSG },
        { "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", -EBADMSG },
        { "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), } junk", -EBADMSG },
        { "{'descr': '<f8', 'fortran_order': False, 'shape': (2,)", -EBADMSG },
        { "['descr', '<f8']", -EBADMSG },
        { "{'descr': '<f\\x38', 'fortran_order': False, 'shape': (2,), }", -EBADMSG },
        { "{'descr': '<f8', 'fortran_order': Falsey, 'shape': (2,), }", -EBADMSG },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = parse_dict(1, bad[i].dict, &h);
        cr_assert_eq(r, bad[i].err, "%s: got %d (%s), want %d; detail: %s", bad[i].dict, r,
                     ndc_strerror(r), bad[i].err, ndc_last_error());
        cr_assert_neq(ndc_last_error()[0], '\0', "a rejection without a reason");
        cr_assert_eq(memcmp(&h, &ref, sizeof h), 0, "header touched on failure");
    }
    /* too many dimensions */
    char dict[512] = "{'descr': '<i2', 'fortran_order': False, 'shape': (";
    for (int i = 0; i < 33; i++)
        strcat(dict, "1, ");
    strcat(dict, "), }");
    th_expect(parse_dict(1, dict, &h), -ENOTSUP);

    /* the prefix: magic, version, lengths that lie */
    uint8_t buf[256];
    size_t n = make_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", NULL, 0);
    th_expect(ndc__npy_parse(buf, 5, &h), -EBADMSG);
    th_expect(ndc__npy_parse(buf, n - 1, &h), -EBADMSG);       /* header cut short */
    buf[8] = 0xff;                                              /* longer than the buffer */
    th_expect(ndc__npy_parse(buf, n, &h), -EBADMSG);
    buf[8] = 10;                                                /* shorter: cuts the dict */
    th_expect(ndc__npy_parse(buf, n, &h), -EBADMSG);
    n = make_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", NULL, 0);
    buf[6] = 4;
    th_expect(ndc__npy_parse(buf, n, &h), -ENOTSUP);
    buf[6] = 1;
    buf[7] = 1;
    th_expect(ndc__npy_parse(buf, n, &h), -ENOTSUP);
    buf[7] = 0;
    buf[0] = 'X';
    th_expect(ndc__npy_parse(buf, n, &h), -EBADMSG);
    /* 2.0 with a 4 GiB header length */
    n = make_npy(buf, 2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", NULL, 0);
    buf[11] = 0xff;
    th_expect(ndc__npy_parse(buf, n, &h), -EBADMSG);

    /* file size against the header */
    th_ok(parse_dict(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", &h));
    th_ok(ndc__npy_check_size(&h, h.data_offset + 16));
    th_expect(ndc__npy_check_size(&h, h.data_offset + 15), -EBADMSG);
    th_expect(ndc__npy_check_size(&h, h.data_offset + 17), -EBADMSG);
}

Test(npy_format, round_trip_all_dtypes)
{
    int64_t shapes[][3] = { { 0 }, { 5 }, { 2, 3 }, { 4, 0, 2 } };
    int ndims[] = { 0, 1, 2, 3 };
    for (int t = NDC_BOOL; t <= NDC_DTYPE_LAST; t++) {
        for (int s = 0; s < 4; s++) {
            for (int f = 0; f < 2; f++) {
                for (size_t align = 64; align <= 4096; align *= 64) {
                    uint8_t buf[8192];
                    int64_t n = ndc__npy_format(buf, sizeof buf, (enum ndc_dtype)t, ndims[s],
                                                shapes[s], f, align);
                    cr_assert_gt(n, 0, "%s", ndc_last_error());
                    cr_assert_eq(n % (int64_t)align, 0);
                    cr_assert_eq(buf[n - 1], '\n');
                    struct ndc__npy_header h;
                    th_ok(ndc__npy_parse(buf, (size_t)n, &h));
                    cr_assert_eq((int)h.dtype, (int)t);
                    cr_assert_eq(h.ndim, ndims[s]);
                    cr_assert_eq(h.fortran, f);
                    cr_assert_eq(h.data_offset, (uint64_t)n);
                    cr_assert_eq(h.swap, 0);
                    for (int i = 0; i < ndims[s]; i++)
                        cr_assert_eq(h.shape[i], shapes[s][i]);
                }
            }
        }
    }
    uint8_t small[32];
    th_expect((int)ndc__npy_format(small, sizeof small, NDC_F64, 0, NULL, 0, 0), -ENOSPC);
    th_expect((int)ndc__npy_format(small, sizeof small, (enum ndc_dtype)99, 0, NULL, 0, 0), -EINVAL);
    th_expect((int)ndc__npy_format(small, sizeof small, NDC_F64, 0, NULL, 0, 100), -EINVAL);
}

Test(npy_format, transforms)
{
    /* 2x3 int32 in Fortran order: columns first */
    int32_t f[6] = { 1, 4, 2, 5, 3, 6 }, c[6];
    int64_t shape[2] = { 2, 3 };
    ndc__npy_f2c(c, f, 4, 2, shape);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(c[i], i + 1);
    uint32_t w[2] = { 0x01020304, 0x0a0b0c0d };
    ndc__npy_swap(w, sizeof w, NDC_C64);
    cr_assert_eq(w[0], 0x04030201);
    cr_assert_eq(w[1], 0x0d0c0b0a);
    cr_assert(ndc__npy_f_is_c(2, (int64_t[]){ 1, 7 }));
    cr_assert(!ndc__npy_f_is_c(2, (int64_t[]){ 2, 7 }));
}

/* ---- files through channels ----------------------------------------------- */

TestSuite(npy_chan, .init = mktmp, .fini = rmtmp, .timeout = 60);

Test(npy_chan, write_read_c_fortran_bigendian)
{
    ndc_chan *ch = th_chan(4, 1 << 20);
    /* C order, through ndc_npy_write */
    double d[12];
    for (int i = 0; i < 12; i++)
        d[i] = i * 1.5;
    struct ndc_array a;
    th_ok(ndc_array_init(&a, NDC_F64, 2, (int64_t[]){ 3, 4 }, d));
    th_ok(ndc_npy_write(&a, tpath("c.npy")));
    th_ok(ndc_npy_read(ch, tpath("c.npy"), 42, NDC_FOREVER));
    struct ndc_array r;
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.tag, 42);
    cr_assert_eq(r.dtype, NDC_F64);
    cr_assert_eq(r.ndim, 2);
    cr_assert_eq(r.shape[0], 3);
    cr_assert_eq(memcmp(r.data, d, sizeof d), 0);
    th_ok(ndc_release(ch, &r));

    /* a transposed view: ndc_npy_write keeps it Fortran order, and reading
     * it gives the same logical array in C order */
    struct ndc_array t = a;
    t.shape[0] = 4, t.shape[1] = 3;
    t.strides[0] = 8, t.strides[1] = 32;
    th_ok(ndc_npy_write(&t, tpath("f.npy")));
    struct ndc__npy_header h;
    uint8_t hb[128];
    int fd = open(tpath("f.npy"), O_RDONLY);
    cr_assert_eq(pread(fd, hb, sizeof hb, 0), (ssize_t)sizeof hb);
    close(fd);
    th_ok(ndc__npy_parse(hb, sizeof hb, &h));
    cr_assert_eq(h.fortran, 1);
    th_ok(ndc_npy_read(ch, tpath("f.npy"), 7, 0));
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.shape[0], 4);
    cr_assert_eq(r.shape[1], 3);
    const double *x = r.data;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            cr_assert_eq(x[i * 3 + j], d[j * 4 + i], "[%d,%d]", i, j);
    th_ok(ndc_release(ch, &r));

    /* a strided view (every other column, reversed rows) is gathered */
    struct ndc_array s = a;
    s.data = d + 8;             /* row 2 */
    s.shape[0] = 3, s.shape[1] = 2;
    s.strides[0] = -32, s.strides[1] = 16;
    th_ok(ndc_npy_write(&s, tpath("s.npy")));
    th_ok(ndc_npy_read(ch, tpath("s.npy"), 0, 0));
    th_ok(ndc_acquire(ch, &r, 0));
    x = r.data;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            cr_assert_eq(x[i * 2 + j], d[(2 - i) * 4 + 2 * j]);
    th_ok(ndc_release(ch, &r));

    /* big-endian int32 and complex64, swapped on read */
    uint8_t file[512];
    uint8_t be[16] = { 0, 0, 0, 1, 0, 0, 1, 0, 0x80, 0, 0, 0, 0x3f, 0x80, 0, 0 };
    size_t n = make_npy(file, 1, "{'descr': '>i4', 'fortran_order': False, 'shape': (4,), }", be, 16);
    write_file(tpath("be.npy"), file, n);
    th_ok(ndc_npy_read(ch, tpath("be.npy"), 0, 0));
    th_ok(ndc_acquire(ch, &r, 0));
    const int32_t *iv = r.data;
    cr_assert_eq(iv[0], 1);
    cr_assert_eq(iv[1], 256);
    cr_assert_eq(iv[2], INT32_MIN);
    cr_assert_eq(iv[3], 0x3f800000);
    th_ok(ndc_release(ch, &r));
    n = make_npy(file, 3, "{'descr': '>c8', 'fortran_order': False, 'shape': (2,), }", be, 16);
    write_file(tpath("bec.npy"), file, n);
    th_ok(ndc_npy_read(ch, tpath("bec.npy"), 0, 0));
    th_ok(ndc_acquire(ch, &r, 0));
    const float *fv = r.data;
    cr_assert_eq(fv[3], 1.0f);
    th_ok(ndc_release(ch, &r));

    /* 0-d and zero-size arrays */
    int64_t v = 77;
    th_ok(ndc_array_init(&a, NDC_I64, 0, NULL, &v));
    th_ok(ndc_npy_write(&a, tpath("0d.npy")));
    th_ok(ndc_npy_read(ch, tpath("0d.npy"), 0, 0));
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.ndim, 0);
    cr_assert_eq(*(int64_t *)r.data, 77);
    th_ok(ndc_release(ch, &r));
    th_ok(ndc_array_init(&a, NDC_U16, 2, (int64_t[]){ 0, 5 }, NULL));
    th_ok(ndc_npy_write(&a, tpath("empty.npy")));
    th_ok(ndc_npy_read(ch, tpath("empty.npy"), 0, 0));
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.shape[0], 0);
    cr_assert_eq(r.shape[1], 5);
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
}

Test(npy_chan, rejections_take_no_slot)
{
    ndc_chan *ch = th_chan(2, 4096);
    uint8_t file[8192];
    double p[8] = { 0 };
    size_t n = make_npy(file, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }", p, 64);
    write_file(tpath("short.npy"), file, n - 1);
    th_expect(ndc_npy_read(ch, tpath("short.npy"), 0, 0), -EBADMSG);
    cr_assert(strstr(ndc_last_error(), "short.npy"), "detail names the file: %s", ndc_last_error());
    write_file(tpath("long.npy"), file, n + 1);                 /* a byte after the array */
    th_expect(ndc_npy_read(ch, tpath("long.npy"), 0, 0), -EBADMSG);
    n = make_npy(file, 1, "{'descr': '|O', 'fortran_order': False, 'shape': (8,), }", p, 64);
    write_file(tpath("obj.npy"), file, n);
    th_expect(ndc_npy_read(ch, tpath("obj.npy"), 0, 0), -ENOTSUP);
    n = make_npy(file, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1024,), }", NULL, 0);
    write_file(tpath("big.npy"), file, n);
    cr_assert_eq(truncate(tpath("big.npy"), (off_t)(n + 8192)), 0);
    th_expect(ndc_npy_read(ch, tpath("big.npy"), 0, 0), -E2BIG);
    th_expect(ndc_npy_read(ch, tpath("none.npy"), 0, 0), -ENOENT);
    th_expect(ndc_npy_read(ch, tmpdir, 0, 0), -EINVAL);
    struct ndc_stat st;
    th_ok(ndc_stat(ch, &st));
    cr_assert_eq(st.free, 2, "a rejected file kept a slot");
    struct ndc_npy_opts o = { .flags = 1u << 7 };
    th_expect(ndc_npy_load(ch, NULL, 0, &o), -EINVAL);
    o = (struct ndc_npy_opts){ .reserved = { 0, 1 } };
    th_expect(ndc_npy_load(ch, NULL, 0, &o), -EINVAL);
    ndc_free(ch);
}

/* n files of distinct content; returns their paths. */
static void free_series(const char **paths, int n)
{
    for (int i = 0; i < n; i++)
        free((void *)paths[i]);
    free(paths);
}

static const char **make_series(int n, int64_t len, enum ndc_dtype t)
{
    const char **paths = calloc((size_t)n, sizeof *paths);
    size_t bytes = (size_t)len * ndc_dtype_size(t);
    uint8_t *buf = malloc(bytes);
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "s%03d.npy", i);
        paths[i] = strdup(tpath(name));
        th_fill(buf, bytes, (uint64_t)i + 1);
        struct ndc_array a;
        th_ok(ndc_array_init(&a, t, 1, &len, buf));
        th_ok(ndc_npy_write(&a, paths[i]));
    }
    free(buf);
    return paths;
}

struct drain_arg {
    const char *name, *dir;
    int depth;
};

static int drain_child(void *p)
{
    struct drain_arg *d = p;
    ndc_chan *ch;
    if (ndc_open(&ch, d->name, 0))
        return 10;
    struct ndc_npy_opts o = { .queue_depth = (uint32_t)d->depth };
    int r = ndc_npy_drain(ch, d->dir, &o);
    ndc_free(ch);
    return r < 0 ? 11 : r;
}

static void load_and_drain(int nfiles, int64_t len, uint32_t slots, uint32_t depth, uint32_t flags)
{
    const char **paths = make_series(nfiles, len, NDC_I32);
    const char *name = th_unique_name("npyload");
    struct ndc_chan_opts co = { .slots = slots, .slot_bytes = (uint64_t)len * 4 };
    ndc_chan *ch;
    th_ok(ndc_create(&ch, name, &co));
    char out[512];
    snprintf(out, sizeof out, "%s/out", tmpdir);
    cr_assert_eq(mkdir(out, 0755), 0);
    struct drain_arg d = { name, out, (int)depth };
    pid_t pid = th_fork(drain_child, &d);
    struct ndc_npy_opts o = { .queue_depth = depth, .flags = flags };
    int r = ndc_npy_load(ch, paths, (size_t)nfiles, &o);
    cr_assert_eq(r, nfiles, "load = %d (%s): %s", r, ndc_strerror(r), ndc_last_error());
    th_ok(ndc_close(ch));
    cr_assert_eq(th_wait(pid, 30000), nfiles);
    ndc_free(ch);
    ndc_unlink(name);
    /* every file came out in order, unchanged */
    uint8_t *buf = malloc((size_t)len * 4);
    for (int i = 0; i < nfiles; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%012d.npy", out, i);
        ndc_chan *c2 = th_chan(1, (uint64_t)len * 4);
        th_ok(ndc_npy_read(c2, p, 0, 0));
        struct ndc_array a;
        th_ok(ndc_acquire(c2, &a, 0));
        cr_assert_eq(a.shape[0], len);
        cr_assert(th_check(a.data, (size_t)len * 4, (uint64_t)i + 1), "file %d out of order or corrupt", i);
        th_ok(ndc_release(c2, &a));
        ndc_free(c2);
        free((void *)paths[i]);
    }
    free(buf);
    free(paths);
}

Test(npy_chan, load_more_files_than_slots_in_order)
{
    /* depth 6 over 3 slots: the loader must commit before reserving more */
    load_and_drain(40, 100000, 3, 6, 0);
}

Test(npy_chan, load_direct)
{
    load_and_drain(12, 1 << 20, 4, 4, NDC_NPY_DIRECT);
}

Test(npy_chan, load_many_chunks)
{
    /* 24 MiB files: several requests per file */
    load_and_drain(4, 6 << 20, 2, 2, NDC_NPY_DIRECT);
}

Test(npy_chan, read_timeout_when_full)
{
    ndc_chan *ch = th_chan(1, 1 << 20);
    const char **p = make_series(2, 100, NDC_I32);
    th_ok(ndc_npy_read(ch, p[0], 0, 0));
    th_expect(ndc_npy_read(ch, p[1], 0, 0), -EAGAIN);
    th_expect(ndc_npy_read(ch, p[1], 0, 20 * 1000000LL), -ETIMEDOUT);
    ndc_free(ch);
    free_series(p, 2);
}

/* Registered buffers refused: drop CAP_IPC_LOCK so RLIMIT_MEMLOCK applies,
 * set it to 64 KiB, and load must still work (plain reads). */
static int memlock_child(void *arg)
{
    struct __user_cap_header_struct hd = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct cd[2];
    if (syscall(SYS_capget, &hd, cd) == 0) {
        cd[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
        syscall(SYS_capset, &hd, cd);
    }
    struct rlimit rl = { 64 << 10, 64 << 10 };
    if (setrlimit(RLIMIT_MEMLOCK, &rl))
        return 20;
    const char *const *paths = arg;
    struct ndc_chan_opts co = { .slots = 8, .slot_bytes = 4 << 20 };
    ndc_chan *ch;
    if (ndc_create(&ch, NULL, &co))
        return 21;
    int got = 0;
    for (int round = 0; round < 2; round++) {
        if (ndc_npy_load(ch, paths, 4, NULL) != 4)
            return 22;
        for (int i = 0; i < 4; i++) {
            struct ndc_array a;
            if (ndc_acquire(ch, &a, 0))
                return 23;
            got += th_check(a.data, ndc_array_nbytes(&a), (uint64_t)i + 1);
            ndc_release(ch, &a);
        }
    }
    ndc_free(ch);
    return got == 8 ? 0 : 24;
}

Test(npy_chan, memlock_refuses_registration)
{
    const char **paths = make_series(4, 1 << 20, NDC_U8);
    pid_t pid = th_fork(memlock_child, paths);
    cr_assert_eq(th_wait(pid, 30000), 0);
    free_series(paths, 4);
}

Test(npy_chan, drain_to_missing_dir)
{
    ndc_chan *ch = th_chan(1, 4096);
    th_expect(ndc_npy_drain(ch, tpath("nope"), NULL), -ENOENT);
    th_ok(ndc_close(ch));
    th_expect(ndc_npy_drain(ch, tmpdir, NULL), 0);
    ndc_free(ch);
}

/* ---- numpy interop ------------------------------------------------------- */

static const char numpy_make[] =
    "import numpy as np, sys, os\n"
    "d = sys.argv[1]\n"
    "rng = np.random.default_rng(5)\n"
    "names = []\n"
    "def save(name, a, version=None):\n"
    "    with open(os.path.join(d, name + '.npy'), 'wb') as f:\n"
    "        np.lib.format.write_array(f, a, version=version)\n"
    "    n = a.astype(a.dtype.newbyteorder('=')) if a.dtype.byteorder == '>' else a\n"
    "    open(os.path.join(d, name + '.raw'), 'wb').write(np.ascontiguousarray(n).tobytes())\n"
    "    names.append(name)\n"
    "kinds = ['?', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8', 'c8', 'c16']\n"
    "for k in kinds:\n"
    "    for bo in '<>':\n"
    "        dt = np.dtype(k).newbyteorder(bo)\n"
    "        x = (rng.standard_normal((3, 4, 5)) * 50)\n"
    "        if dt.kind == 'c': x = x + 1j * rng.standard_normal((3, 4, 5))\n"
    "        a = x.astype(dt) if dt.kind != 'b' else x > 0\n"
    "        save('%s_%s_c' % (k, 'be' if bo == '>' else 'le'), a)\n"
    "        save('%s_%s_f' % (k, 'be' if bo == '>' else 'le'), np.asfortranarray(a))\n"
    "save('f8_0d', np.array(3.25))\n"
    "save('i4_empty', np.zeros((0, 3), np.int32))\n"
    "save('f4_v2', np.arange(10, dtype=np.float32), (2, 0))\n"
    "save('f4_v3', np.arange(10, dtype=np.float32).reshape(2, 5), (3, 0))\n"
    "save('nan', np.array([np.nan, -0.0, np.inf]))\n"
    "open(os.path.join(d, 'list'), 'w').write('\\n'.join(names) + '\\n')\n";

static const char numpy_check[] =
    "import numpy as np, sys, os\n"
    "d = sys.argv[1]\n"
    "bad = 0\n"
    "for name in open(os.path.join(d, 'list')).read().split():\n"
    "    a = np.load(os.path.join(d, name + '.npy'))\n"
    "    b = np.load(os.path.join(d, 'out', name + '.npy'))\n"
    "    want = a.dtype.newbyteorder('=') if a.dtype.byteorder == '>' else a.dtype\n"
    "    if b.dtype != want or b.shape != a.shape or a.astype(want).tobytes() != b.tobytes():\n"
    "        print('mismatch', name, a.dtype, b.dtype, a.shape, b.shape); bad += 1\n"
    "sys.exit(1 if bad else 0)\n";

static int have_numpy(void)
{
    return access("/usr/bin/python3", X_OK) == 0 &&
           system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

static int run_python(const char *script, const char *arg)
{
    char path[600];
    snprintf(path, sizeof path, "%s/script.py", tmpdir);
    write_file(path, script, strlen(script));
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", path, arg);
    return system(cmd);
}

Test(npy_numpy, round_trip_every_dtype_and_order, .init = mktmp, .fini = rmtmp, .timeout = 120)
{
    if (!have_numpy())
        cr_skip_test("numpy is not importable by /usr/bin/python3 (apt install python3-numpy)");
    cr_assert_eq(run_python(numpy_make, tmpdir), 0, "numpy failed to write the test files");
    char out[600];
    snprintf(out, sizeof out, "%s/out", tmpdir);
    cr_assert_eq(mkdir(out, 0755), 0);

    ndc_chan *ch = th_chan(2, 1 << 20);
    FILE *list = fopen(tpath("list"), "r");
    cr_assert_not_null(list);
    char name[128];
    int files = 0;
    while (fscanf(list, "%127s", name) == 1) {
        char p[900], raw[900], o[900];
        snprintf(p, sizeof p, "%s/%s.npy", tmpdir, name);
        snprintf(raw, sizeof raw, "%s/%s.raw", tmpdir, name);
        snprintf(o, sizeof o, "%s/%s.npy", out, name);
        int r = ndc_npy_read(ch, p, 0, 0);
        cr_assert_eq(r, 0, "%s: %s: %s", name, ndc_strerror(r), ndc_last_error());
        struct ndc_array a;
        th_ok(ndc_acquire(ch, &a, 0));
        size_t n = ndc_array_nbytes(&a);
        uint8_t *want = malloc(n + 1);
        FILE *f = fopen(raw, "rb");
        cr_assert_eq(fread(want, 1, n + 1, f), n, "%s: size", name);
        fclose(f);
        cr_assert_eq(memcmp(a.data, want, n), 0, "%s: values differ", name);
        free(want);
        th_ok(ndc_npy_write(&a, o));
        th_ok(ndc_release(ch, &a));
        files++;
    }
    fclose(list);
    cr_assert_gt(files, 50);
    ndc_free(ch);
    cr_assert_eq(run_python(numpy_check, tmpdir), 0, "np.load disagrees with what ndchan wrote");
}

Test(npy_chan, load_stops_at_first_bad_file, .init = mktmp, .fini = rmtmp, .timeout = 60)
{
    const char **p = make_series(5, 1000, NDC_I32);
    write_file(p[2], "garbage", 7);
    ndc_chan *ch = th_chan(8, 1 << 20);
    struct ndc_npy_opts o = { .queue_depth = 4 };
    th_expect(ndc_npy_load(ch, p, 5, &o), -EBADMSG);
    cr_assert(strstr(ndc_last_error(), "s002.npy"), "detail: %s", ndc_last_error());
    struct ndc_stat st;
    th_ok(ndc_stat(ch, &st));
    cr_assert_eq(st.ready, 2, "files before the bad one are sent, none after");
    cr_assert_eq(st.free, 8 - 2, "no slot taken by the bad file or those after it");
    ndc_free(ch);
    free_series(p, 5);
}

/* ---- found by review: each was a confirmed bug with a reproducer --------- */

/* Opening a FIFO waited for a writer, past any timeout: refused at once. */
Test(npy_review, fifo_path_is_refused_not_waited_on, .init = mktmp, .fini = rmtmp, .timeout = 10)
{
    char path[512];
    snprintf(path, sizeof path, "%s/f.fifo", tmpdir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    ndc_chan *ch = th_chan(2, 4096);
    th_expect(ndc_npy_read(ch, path, 0, 0), -EINVAL);
    const char *paths[] = {path};
    th_expect(ndc_npy_load(ch, paths, 1, NULL), -EINVAL);
    ndc_free(ch);
}

/* bfloat16's table entry has no kind letter: a NUL there matched it. */
Test(npy_review, nul_type_letter_is_not_bfloat16, .timeout = 10)
{
    struct ndc__npy_header h;
    uint8_t buf[256];
    size_t n = make_npy(buf, 1, "{'descr': '<X2', 'fortran_order': False, 'shape': (3,), }", NULL, 0);
    /* put the NUL where make_npy put the X */
    uint8_t *x = memchr(buf, 'X', n);
    cr_assert_not_null(x);
    *x = 0;
    cr_assert_neq(ndc__npy_parse(buf, n, &h), 0, "a NUL type letter was accepted as dtype %d", h.dtype);
}

/* The size check multiplied in order and stopped at the first zero: (0, 2^62)
 * passed, (2^62, 0) did not. numpy refuses both; so does ndchan, both ways. */
Test(npy_review, oversized_shape_with_a_zero_is_refused_in_any_order, .init = mktmp, .fini = rmtmp,
     .timeout = 10)
{
    struct ndc__npy_header h;
    th_expect(parse_dict(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 4611686018427387904), }", &h),
              -EOVERFLOW);
    th_expect(parse_dict(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 0), }", &h),
              -EOVERFLOW);
    char path[512];
    snprintf(path, sizeof path, "%s/z.npy", tmpdir);
    int64_t shape[2] = {0, (int64_t)1 << 62};
    struct ndc_array a;
    th_ok(ndc_array_init(&a, NDC_F64, 2, shape, NULL));
    th_expect(ndc_npy_write(&a, path), -EOVERFLOW);   /* never write what np.load refuses */
}

/* A failed write unlinked whatever was at the path, a device node included. */
Test(npy_review, failed_write_leaves_a_device_node_alone, .init = mktmp, .fini = rmtmp, .timeout = 10)
{
    char path[512];
    snprintf(path, sizeof path, "%s/full", tmpdir);
    if (mknod(path, S_IFCHR | 0600, makedev(1, 7)) != 0)   /* a /dev/full of our own */
        cr_skip_test("mknod needs root: %s", strerror(errno));
    int64_t shape[1] = {1024};
    static double x[1024];
    struct ndc_array a;
    th_ok(ndc_array_init(&a, NDC_F64, 1, shape, x));
    th_expect(ndc_npy_write(&a, path), -ENOSPC);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "the device node was removed");
    cr_assert(S_ISCHR(st.st_mode));
}
