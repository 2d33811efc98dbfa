/* Per-array header validation on arbitrary bytes.
 *
 * Input: 8 bytes of slot_bytes (taken modulo NDC_MAX_SLOT_BYTES + 1), then a
 * slot header (struct ndc__slot, 576 bytes; shorter inputs zero-padded).
 *
 * Oracles:
 *  - ndc__slot_validate agrees with an independent check done here in
 *    128-bit arithmetic (known dtype, 0 <= ndim <= 32, extents >= 0, product
 *    times the item size equal to nbytes and within slot_bytes), both ways;
 *  - end to end: the header is written over a READY slot of a live channel
 *    (slot_bytes 4096); ndc_acquire returns -EBADMSG exactly when the
 *    header is invalid for that channel (and the slot is free again), else
 *    the array as the header describes it with C-order strides.
 *
 * Seeds: build with -DNDC_FUZZ_GEN and run with the corpus directory (see
 * fuzz_attach.c for the command line).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ndchan.h"
#include "segment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIVE_SLOT_BYTES 4096
__extension__ typedef unsigned __int128 u128;

static int oracle(const struct ndc__slot *s, uint64_t slot_bytes)
{
    size_t item = ndc_dtype_size((enum ndc_dtype)s->dtype);
    if (s->dtype < NDC_BOOL || s->dtype > NDC_DTYPE_LAST || !item)
        return 0;
    if (s->ndim < 0 || s->ndim > NDC_MAX_DIMS)
        return 0;
    for (int i = 0; i < s->ndim; i++)
        if (s->shape[i] < 0)
            return 0;
    u128 n = item;
    for (int i = 0; i < s->ndim; i++) {
        if (s->shape[i] == 0) {
            n = 0;
            break;
        }
        n *= (uint64_t)s->shape[i];
        if (n > slot_bytes) {   /* unless a later extent is 0 */
            int zero = 0;
            for (int j = i + 1; j < s->ndim; j++)
                zero |= s->shape[j] == 0;
            if (!zero)
                return 0;
            n = 0;
            break;
        }
    }
    return n == s->nbytes && n <= slot_bytes;
}

static ndc_chan *live;
static struct ndc__slot *live_slots;
static uint32_t live_nslots;

static void live_setup(void)
{
    struct ndc_chan_opts o;
    memset(&o, 0, sizeof o);
    o.slots = 2;
    o.slot_bytes = LIVE_SLOT_BYTES;
    if (ndc_create(&live, NULL, &o) != 0)
        abort();
    struct ndc__geometry g;
    ndc__geometry(&g, 2, LIVE_SLOT_BYTES, 0);
    unsigned char *m = mmap(NULL, g.payload_off, PROT_READ | PROT_WRITE, MAP_SHARED, ndc_fd(live), 0);
    if (m == MAP_FAILED)
        abort();
    live_slots = (struct ndc__slot *)(m + g.table_off);
    live_nslots = g.nslots;
}

static void live_check(const struct ndc__slot *h)
{
    if (!live)
        live_setup();
    struct ndc_array a;
    int64_t shape[1] = { 8 };
    ndc_array_init(&a, NDC_U8, 1, shape, NULL);
    a.tag = 1;
    if (ndc_reserve(live, &a, 0) || ndc_commit(live, &a))
        abort();
    struct ndc__slot *s = NULL;
    for (uint32_t i = 0; i < live_nslots; i++)
        if (NDC__STATE(atomic_load(&live_slots[i].state)) == NDC__READY)
            s = &live_slots[i];
    if (!s)
        abort();
    /* everything but the state word and seq, which the queues own */
    size_t from = offsetof(struct ndc__slot, nbytes);
    memcpy((unsigned char *)s + from, (const unsigned char *)h + from, sizeof *s - from);
    int want_ok = oracle(h, LIVE_SLOT_BYTES);
    int r = ndc_acquire(live, &a, 0);
    if (want_ok) {
        if (r != 0 || a.tag != h->tag || a.dtype != (enum ndc_dtype)h->dtype || a.ndim != h->ndim ||
            memcmp(a.shape, h->shape, sizeof(int64_t) * (size_t)h->ndim) != 0)
            abort();
        int64_t st = (int64_t)ndc_dtype_size(a.dtype);
        for (int d = a.ndim - 1; d >= 0 && h->nbytes > 0; d--) {   /* C order (any, when empty) */
            if (a.strides[d] != st)
                abort();
            st *= a.shape[d];
        }
        if (ndc_array_nbytes(&a) != h->nbytes)
            abort();
        if (ndc_release(live, &a) != 0)
            abort();
    } else if (r != -EBADMSG) {
        abort();
    }
    struct ndc_stat st;
    if (ndc_stat(live, &st) != 0 || st.free != st.slots)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t sb = 0;
    memcpy(&sb, data, size < 8 ? size : 8);
    sb %= NDC_MAX_SLOT_BYTES + 1;
    struct ndc__slot s;
    memset(&s, 0, sizeof s);
    if (size > 8)
        memcpy(&s, data + 8, size - 8 < sizeof s ? size - 8 : sizeof s);
    struct ndc__geometry g;
    if (ndc__geometry(&g, 1, sb, 0) != 0)
        abort();
    int r = ndc__slot_validate(&s, &g);
    if (r != 0 && r != -EBADMSG)
        abort();
    if ((r == 0) != oracle(&s, sb))
        abort();
    live_check(&s);
    return 0;
}

#ifdef NDC_FUZZ_GEN
static void put(const char *dir, const char *name, uint64_t sb, const struct ndc__slot *s, size_t hdr_len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(&sb, 1, 8, f) != 8 || fwrite(s, 1, hdr_len, f) != hdr_len)
        abort();
    fclose(f);
}

static struct ndc__slot hdr(uint32_t dt, int ndim, const int64_t *shape, int64_t nbytes_delta)
{
    struct ndc__slot s;
    memset(&s, 0, sizeof s);
    atomic_store(&s.state, NDC__WORD(NDC__READY, 0));
    s.dtype = dt;
    s.ndim = ndim;
    s.tag = 0x1234;
    uint64_t n = ndc_dtype_size((enum ndc_dtype)dt);
    for (int i = 0; i < ndim; i++) {
        s.shape[i] = shape[i];
        n *= (uint64_t)shape[i];
    }
    s.nbytes = n + (uint64_t)nbytes_delta;
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    const char *d = argv[1];
    int64_t sh[NDC_MAX_DIMS];
    for (int i = 0; i < NDC_MAX_DIMS; i++)
        sh[i] = 1;
    struct ndc__slot s;
    char nm[64];
    for (uint32_t dt = NDC_BOOL; dt <= NDC_DTYPE_LAST; dt++) {
        int64_t shp[2] = { 4, 8 };
        s = hdr(dt, 2, shp, 0);
        snprintf(nm, sizeof nm, "valid_%s_4x8", ndc_dtype_name((enum ndc_dtype)dt));
        put(d, nm, 4096, &s, sizeof s);
    }
    s = hdr(NDC_F64, 0, sh, 0);                       put(d, "valid_0d", 4096, &s, sizeof s);
    s = hdr(NDC_U8, NDC_MAX_DIMS, sh, 0);             put(d, "valid_32d", 4096, &s, sizeof s);
    int64_t full[1] = { 512 };
    s = hdr(NDC_F64, 1, full, 0);                     put(d, "valid_full_slot", 4096, &s, sizeof s);
    s = hdr(NDC_F64, 1, full, 0);                     put(d, "over_small_slot", 4095, &s, sizeof s);
    int64_t empty[2] = { 0, 1ll << 62 };
    s = hdr(NDC_F64, 2, empty, 0);                    put(d, "valid_empty_huge_extent", 4096, &s, sizeof s);
    s = hdr(NDC_U8, 1, full, 0);                      put(d, "short_header", 4096, &s, 64);
    put(d, "trunc_slot_bytes", 4096, &s, 0);
    s = hdr(NDC_F32, 1, full, 0); s.dtype = 0;        put(d, "dtype0", 4096, &s, sizeof s);
    s = hdr(NDC_F32, 1, full, 0); s.dtype = 16;       put(d, "dtype16", 4096, &s, sizeof s);
    s = hdr(NDC_F32, 1, full, 0); s.ndim = 33;        put(d, "ndim33", 4096, &s, sizeof s);
    s = hdr(NDC_F32, 1, full, 0); s.ndim = -1;        put(d, "ndim_neg", 4096, &s, sizeof s);
    int64_t neg[1] = { -1 };
    s = hdr(NDC_U8, 1, neg, 0); s.nbytes = 0;         put(d, "negative_extent", 4096, &s, sizeof s);
    int64_t wrap[2] = { 1ll << 32, 1ll << 32 };
    s = hdr(NDC_U8, 2, wrap, 0); s.nbytes = 0;        put(d, "product_wraps_to_0", 1ull << 40, &s, sizeof s);
    int64_t big[1] = { 1ll << 61 };
    s = hdr(NDC_F64, 1, big, 0); s.nbytes = 0;        put(d, "bytes_wrap_to_0", 1ull << 40, &s, sizeof s);
    int64_t imax[2] = { INT64_MAX, 2 };
    s = hdr(NDC_U8, 2, imax, 0);                      put(d, "int64_max_extent", 1ull << 40, &s, sizeof s);
    int64_t ok[2] = { 3, 5 };
    s = hdr(NDC_I32, 2, ok, 1);                       put(d, "nbytes_plus1", 4096, &s, sizeof s);
    s = hdr(NDC_I32, 2, ok, -1);                      put(d, "nbytes_minus1", 4096, &s, sizeof s);
    s = hdr(NDC_I32, 2, ok, 0); s.nbytes = ~0ull;     put(d, "nbytes_max", 4096, &s, sizeof s);
    int64_t z[2] = { 0, 5 };
    s = hdr(NDC_I32, 2, z, 8);                        put(d, "zero_extent_nbytes8", 4096, &s, sizeof s);
    s = hdr(NDC_I32, 2, ok, 0);
    for (int i = 2; i < NDC_MAX_DIMS; i++) s.shape[i] = -1;
    for (int i = 0; i < NDC_MAX_DIMS; i++) s.strides[i] = INT64_MIN;
    put(d, "valid_garbage_tail", 4096, &s, sizeof s);
    s = hdr(NDC_I32, 2, ok, 0);                       put(d, "valid_slot_bytes_0", 0, &s, sizeof s);
    int64_t zz[1] = { 0 };
    s = hdr(NDC_I32, 1, zz, 0);                       put(d, "valid_empty_slot_bytes_0", 0, &s, sizeof s);
    return 0;
}
#endif
