/* Attach-time validation on arbitrary bytes.
 *
 * Input: the first 512 bytes are a control block (struct ndc__ctrl, layout
 * 3; shorter inputs are zero-padded), the next 8 a file size. Then records
 * of [u16 line][64 bytes]: each is written over line `line` (mod the number
 * of lines before the payloads) of a real segment, zeroed at first, so the
 * ring positions, the gate, the event words, the ring cells, the peer
 * table and the slot headers get hostile values too. The geometry (line 0
 * and line 1 up to the gate) stays as validated: a record on line 0 goes
 * to line 2, one on line 1 writes its bytes from the gate on.
 *
 * Oracles:
 *  - ndc__ctrl_validate accepts exactly the control blocks whose geometry
 *    is layout 3's for their slot count, slot size and flags (computed
 *    here from the layout's ABI, not by the library) and fits the file;
 *  - whatever is accepted and small enough is then attached for real
 *    (ndc_open_fd on a memfd with these bytes) and used: stat, reserve,
 *    commit, acquire, release, each returning 0 or a negative errno, stat
 *    adding up, no crash, no out-of-bounds access (ASan).
 *
 * Seeds: build this file with -DNDC_FUZZ_GEN and run it with a directory:
 *   cc -DNDC_FUZZ_GEN -D_GNU_SOURCE -Iinclude -Ilib tests/fuzz/fuzz_attach.c \
 *      build/lib/libndchan.a -lhwloc -luring -lpthread -o /tmp/gen && /tmp/gen tests/fuzz/corpus/fuzz_attach
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ndchan.h"
#include "segment.h"
#include "lock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CTRL_SZ   sizeof(struct ndc__ctrl)
#define MAX_LIVE  (4u << 20)    /* attach for real only segments up to this size */

/* Layout 3 as its ABI describes it: a 512-byte control block, then one
 * 64-byte ring cell per slot, 256 peer entries of 256 bytes, one 576-byte
 * header per slot, the payloads from the next page (2 MiB under
 * NDC_HUGEPAGES), one stride each. \return 0 for values beyond the limits. */
_Static_assert(sizeof(struct ndc__ctrl) == 512 && sizeof(struct ndc__cell) == 64 &&
               sizeof(struct ndc__peer) == 256 && sizeof(struct ndc__slot) == 576 && NDC_MAX_PEERS == 256,
               "layout 3's sizes");
struct layout { uint64_t stride, peers_off, table_off, payload_off, total_size; };
static int layout3(const struct ndc__ctrl *c, struct layout *l)
{
    if (c->nslots < 1 || c->nslots > NDC_MAX_SLOTS || c->slot_bytes > NDC_MAX_SLOT_BYTES ||
        (c->flags & ~(uint32_t)(NDC_POPULATE | NDC_HUGEPAGES | NDC_BROADCAST)))
        return 0;
    /* broadcast settings: history below the slots, a known policy; none
     * without NDC_BROADCAST */
    if ((c->flags & NDC_BROADCAST) ? c->history >= c->nslots || c->slow_policy > NDC_SLOW_LATEST
                                   : c->history || c->slow_policy)
        return 0;
    uint64_t align = (c->flags & NDC_HUGEPAGES) ? (2u << 20) : 4096;
    l->stride = ((c->slot_bytes ? c->slot_bytes : 1) + align - 1) / align * align;
    l->peers_off = 512 + 64ull * c->nslots;
    l->table_off = l->peers_off + 256 * 256;
    l->payload_off = (l->table_off + 576ull * c->nslots + align - 1) / align * align;
    l->total_size = l->payload_off + (uint64_t)c->nslots * l->stride;
    return 1;
}

/* Whether a control block must be accepted: its magic, layout and
 * geometry are layout 3's, and it fits the file. */
static int must_accept(const struct ndc__ctrl *c, uint64_t file_size)
{
    struct layout l;
    return atomic_load(&c->magic) == NDC__MAGIC && c->layout == 3 && layout3(c, &l) && c->max_peers == 256 &&
           c->slot_stride == l.stride && c->peers_off == l.peers_off && c->table_off == l.table_off &&
           c->payload_off == l.payload_off && c->total_size == l.total_size &&
           c->numa_policy <= NDC_NUMA_NEAR_RECEIVER && l.total_size <= file_size;
}

static void check_geometry(const struct ndc__ctrl *c, uint64_t file_size, const struct ndc__geometry *g)
{
    if (!must_accept(c, file_size))
        abort();
    if (c->nslots < 1 || c->nslots > NDC_MAX_SLOTS || c->slot_bytes > NDC_MAX_SLOT_BYTES)
        abort();
    if (c->flags & ~(uint32_t)(NDC_POPULATE | NDC_HUGEPAGES | NDC_BROADCAST))
        abort();
    uint64_t align = (c->flags & NDC_HUGEPAGES) ? (2u << 20) : 4096;
    uint64_t stride = ((c->slot_bytes ? c->slot_bytes : 1) + align - 1) / align * align;
    if (g->nslots != c->nslots || g->slot_bytes != c->slot_bytes || g->slot_stride != stride ||
        c->slot_stride != stride || g->max_peers != NDC_MAX_PEERS || c->max_peers != NDC_MAX_PEERS)
        abort();
    /* the regions follow each other, inside the file: the ring's cells
     * right after the control block, a line each */
    if (NDC__CELLS_OFF != CTRL_SZ ||
        g->peers_off < CTRL_SZ + (uint64_t)g->nslots * sizeof(struct ndc__cell) || g->peers_off % NDC__LINE ||
        g->table_off != g->peers_off + (uint64_t)g->max_peers * sizeof(struct ndc__peer) ||
        g->payload_off < g->table_off + (uint64_t)g->nslots * sizeof(struct ndc__slot) ||
        g->payload_off % align ||
        g->total_size != g->payload_off + (uint64_t)g->nslots * stride || g->total_size > file_size)
        abort();
    if (c->peers_off != g->peers_off || c->table_off != g->table_off || c->payload_off != g->payload_off ||
        c->total_size != g->total_size)
        abort();
}

static void use_live(const uint8_t *data, size_t size, const struct ndc__geometry *g)
{
    int fd = memfd_create("fuzz_attach", MFD_CLOEXEC);
    if (fd < 0)
        return;
    if (ftruncate(fd, (off_t)g->total_size) != 0) {
        close(fd);
        return;
    }
    unsigned char *m = mmap(NULL, g->payload_off, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        close(fd);
        return;
    }
    memcpy(m, data, size < CTRL_SZ ? size : CTRL_SZ);
    size_t lines = g->payload_off / NDC__LINE;
    for (size_t off = CTRL_SZ + 8; off + 2 <= size; off += 66) {
        uint16_t line;
        memcpy(&line, data + off, 2);
        size_t n = size - off - 2 < 64 ? size - off - 2 : 64;
        size_t l = line % lines, from = 0;
        if (l == 0)   /* the geometry stays what was validated: attach sees the same */
            l = 2;
        else if (l == 1)
            from = offsetof(struct ndc__ctrl, gate) - NDC__LINE;
        if (n > from)
            memcpy(m + l * NDC__LINE + from, data + off + 2 + from, n - from);
    }
    /* whatever the lock word says, its holder is dead: nobody holds a
     * liveness byte of this fresh file */
    munmap(m, g->payload_off);

    ndc_chan *ch = NULL;
    int r = ndc_open_fd(&ch, fd, 0);
    close(fd);
    if (r) {
        if (r > 0)
            abort();
        return;
    }
    struct ndc_stat st;
    r = ndc_stat(ch, &st);
    if (r > 0 || (r == 0 && st.free + st.ready + st.loaned != st.slots))
        abort();
    struct ndc_array a;
    int64_t shape[1] = { 3 };
    ndc_array_init(&a, NDC_U8, 1, shape, NULL);
    a.tag = 7;
    r = ndc_reserve(ch, &a, 0);
    if (r > 0)
        abort();
    if (r == 0 && g->slot_bytes >= 3) {
        memset(a.data, 1, 3);
        if (ndc_commit(ch, &a) > 0)
            abort();
    }
    for (int i = 0; i < 3; i++) {
        r = ndc_acquire(ch, &a, 0);
        if (r > 0)
            abort();
        if (r != 0)
            continue;
        size_t n = ndc_array_nbytes(&a);
        if (n > g->slot_bytes)
            abort();
        volatile unsigned char sum = 0;
        for (size_t k = 0; k < n; k++)
            sum ^= ((const unsigned char *)a.data)[k];
        (void)sum;
        /* a loan is ours by its state word alone: giving it back cannot fail */
        if (ndc_release(ch, &a) != 0)
            abort();
    }
    r = ndc_stat(ch, &st);
    if (r > 0 || (r == 0 && st.free + st.ready + st.loaned != st.slots))
        abort();
    ndc_close(ch);
    ndc_free(ch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ndc__ctrl c;
    memset(&c, 0, sizeof c);
    memcpy(&c, data, size < sizeof c ? size : sizeof c);
    uint64_t file_size = c.total_size;
    if (size >= CTRL_SZ + 8)
        memcpy(&file_size, data + CTRL_SZ, 8);
    struct ndc__geometry g;
    int r = ndc__ctrl_validate(&c, file_size, &g);
    if (r != 0 && must_accept(&c, file_size))
        abort();   /* a valid layout-3 control block refused */
    if (r == 0) {
        check_geometry(&c, file_size, &g);
        if (g.total_size <= MAX_LIVE && file_size <= MAX_LIVE)
            use_live(data, size, &g);
    } else if (r != -EPROTO && r != -EBADMSG) {
        abort();
    } else if (r == -EPROTO && c.magic == NDC__MAGIC && c.layout == NDC__LAYOUT) {
        abort();   /* -EPROTO is for magic and layout only */
    }
    return 0;
}

#ifdef NDC_FUZZ_GEN
/* Seeds: valid control blocks of several geometries, then truncated and
 * mutated copies, and valid layout-3 segments (cells waiting for their
 * commits, every slot FREE, as ndc_create leaves them) with records of
 * hostile values over them. */
static void put(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n)
        abort();
    fclose(f);
}

static size_t make(uint8_t *out, uint32_t nslots, uint64_t slot_bytes, uint32_t flags, int64_t size_delta)
{
    struct ndc__geometry g;
    if (ndc__geometry(&g, nslots, slot_bytes, flags))
        abort();
    struct ndc__ctrl c;
    memset(&c, 0, sizeof c);
    atomic_store(&c.magic, NDC__MAGIC);
    c.layout = NDC__LAYOUT;
    c.flags = flags;
    c.nslots = nslots;
    c.max_peers = g.max_peers;
    c.slot_bytes = slot_bytes;
    c.slot_stride = g.slot_stride;
    c.peers_off = g.peers_off;
    c.table_off = g.table_off;
    c.payload_off = g.payload_off;
    c.total_size = g.total_size;
    memcpy(out, &c, sizeof c);
    uint64_t fs = g.total_size + (uint64_t)size_delta;
    memcpy(out + sizeof c, &fs, 8);
    return sizeof c + 8;
}

/* A record: 64 bytes over line `line`, `w` bytes of v at `at`. */
static size_t rec(uint8_t *out, uint16_t line, size_t at, uint64_t v, int w)
{
    memcpy(out, &line, 2);
    memset(out + 2, 0, 64);
    memcpy(out + 2 + at, &v, (size_t)w);
    return 66;
}

/* make(), then the records that make the rest of a segment what
 * ndc_create writes: cell i waits for the commit at position i, every slot
 * is FREE. */
static size_t make_valid(uint8_t *out, uint32_t nslots, uint64_t slot_bytes)
{
    struct ndc__geometry g;
    ndc__geometry(&g, nslots, slot_bytes, 0);
    size_t len = make(out, nslots, slot_bytes, 0, 0);
    for (uint32_t i = 0; i < nslots; i++)
        len += rec(out + len, (uint16_t)(NDC__CELLS_OFF / 64 + i), 0, i, 8);
    for (uint32_t i = 0; i < nslots; i++)
        len += rec(out + len, (uint16_t)((g.table_off + (uint64_t)i * sizeof(struct ndc__slot)) / 64), 0,
                   NDC__WORD(NDC__FREE, 0), 8);
    return len;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    const char *dir = argv[1];
    uint8_t buf[8192];
    char name[64];
    struct { uint32_t n; uint64_t b; uint32_t f; } geo[] = {
        { 1, 0, 0 }, { 1, 64, 0 }, { 4, 4096, 0 }, { 8, 100, 0 }, { 3, 65536, 1 }, { 16, 1, 0 },
        { 2, 1u << 20, 0 }, { 1, 1ull << 40, 0 }, { 4096, 1, 0 }, { 2, 4096, 2 },
    };
    for (size_t i = 0; i < sizeof geo / sizeof geo[0]; i++) {
        size_t n = make(buf, geo[i].n, geo[i].b, geo[i].f, 0);
        snprintf(name, sizeof name, "valid_%u_%llu_%u", geo[i].n, (unsigned long long)geo[i].b, geo[i].f);
        put(dir, name, buf, n);
    }
    /* whole valid segments, small enough to be used live */
    struct { uint32_t n; uint64_t b; } live[] = { { 1, 64 }, { 3, 100 }, { 4, 4096 }, { 16, 1 } };
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        snprintf(name, sizeof name, "segment_%u_%llu", live[i].n, (unsigned long long)live[i].b);
        put(dir, name, buf, make_valid(buf, live[i].n, live[i].b));
    }
    size_t n = make(buf, 4, 4096, 0, 0);
    put(dir, "short_file", buf, make(buf, 4, 4096, 0, -1));
    put(dir, "long_file", buf, make(buf, 4, 4096, 0, 4096));
    make(buf, 4, 4096, 0, 0);
    put(dir, "trunc_8", buf, 8);
    put(dir, "trunc_100", buf, 100);
    put(dir, "trunc_ctrl", buf, sizeof(struct ndc__ctrl) - 1);
    put(dir, "no_file_size", buf, sizeof(struct ndc__ctrl));
    struct { size_t off; uint8_t val; const char *nm; } mut[] = {
        { 0, 0x7e, "bad_magic" }, { 8, 2, "layout2" }, { 8, 4, "layout4" }, { 12, 4, "flag_unknown" },
        { 16, 5, "nslots5" }, { 21, 0, "max_peers0" }, { 24, 1, "slot_bytes_plus" }, { 33, 0, "stride0" },
        { 40, 0xff, "peers_off" }, { 49, 0, "table_off0" }, { 56, 1, "payload_off1" }, { 64, 0xff, "total_size" },
        { 71, 0x80, "total_size_hi" },
    };
    for (size_t i = 0; i < sizeof mut / sizeof mut[0]; i++) {
        make(buf, 4, 4096, 0, 0);
        if (buf[mut[i].off] == mut[i].val)
            abort();   /* a mutation must change something */
        buf[mut[i].off] = mut[i].val;
        put(dir, mut[i].nm, buf, n);
    }
    /* a valid 4-slot segment, then hostile records over its live part */
    struct ndc__geometry g;
    ndc__geometry(&g, 4, 4096, 0);
    const uint16_t cells = NDC__CELLS_OFF / 64, peers = (uint16_t)(g.peers_off / 64),
                   table = (uint16_t)(g.table_off / 64);
    const uint16_t slot3 = (uint16_t)((g.table_off + 3 * sizeof(struct ndc__slot)) / 64);
    const size_t gate_at = offsetof(struct ndc__ctrl, gate) - 64, closed_at = offsetof(struct ndc__ctrl, closed) - 64;
    /* a line's record replaces the whole line: a second value on it goes in at2/v2 */
    struct r1 { uint16_t line; size_t at; uint64_t v; int w; size_t at2; uint64_t v2; };
    struct { const char *nm; struct r1 r[3]; } hostile[] = {
        { "rec_lock_dead", { { 5, 0, 0x7fffffff, 4 } } },
        { "rec_gate_closed", { { 1, gate_at, 1, 4 } } },
        { "rec_gate_closed_lock_dead", { { 1, gate_at, 1, 4 }, { 5, 0, 200, 4 } } },
        { "rec_closed_flag", { { 1, closed_at, 1, 4 } } },
        { "rec_events_garbage", { { 3, 0, 0x7fffffff, 4 }, { 4, 0, 9, 4 } } },
        { "rec_tail_far", { { 6, 0, 1ull << 40, 8 } } },
        { "rec_tail_closed", { { 6, 0, NDC__TAIL_CLOSED | 2, 8 } } },
        { "rec_head_far", { { 7, 0, 1ull << 40, 8 } } },
        { "rec_head_ahead_of_tail", { { 7, 0, 3, 8 } } },
        { "rec_cell_ahead", { { cells, 0, 5, 8 } } },
        { "rec_cell_names_ffff", { { cells, 0, 1, 8, 8, 0xffff }, { 6, 0, 1, 8 } } },
        { "rec_cell_names_free_slot", { { cells, 0, 1, 8, 8, 2 }, { 6, 0, 1, 8 } } },
        { "rec_peer_live_nobody", { { peers, 0, 1 | (0x7ffffffeull << 32), 8 } } },
        { "rec_peer_died_in_step", { { peers, 0, 1, 4 }, { (uint16_t)(peers + 1), 0, 3, 4 } } },
        { "rec_peer_state_garbage", { { (uint16_t)(peers + 2), 0, 9, 4 } } },
        { "rec_peer_busy_garbage", { { (uint16_t)(peers + 3), 0, 0xffffffff, 4 } } },
        { "rec_slot_ready_unlisted", { { table, 0, NDC__WORD(NDC__READY, 0), 8 } } },
        { "rec_slot_loaned_by_nobody", { { table, 0, NDC__WORD(NDC__LOANED, 3), 8 } } },
        { "rec_slot_committing_by_nobody", { { table, 0, NDC__WORD(NDC__COMMITTING, 3), 8 } } },
        { "rec_slot_ready_with_owner", { { table, 0, NDC__WORD(NDC__READY, 7), 8 } } },
        { "rec_slot_state_garbage", { { (uint16_t)(table + 9), 0, 0xdeadbeef, 8 } } },
    };
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        size_t len = make_valid(buf, 4, 4096);
        for (int k = 0; k < 3 && hostile[i].r[k].w; k++) {
            const struct r1 *r = &hostile[i].r[k];
            len += rec(buf + len, r->line, r->at, r->v, r->w);
            if (r->at2)
                memcpy(buf + len - 64 + r->at2, &r->v2, 4);
        }
        put(dir, hostile[i].nm, buf, len);
    }
    /* a READY slot with a plausible header, listed in the ring at position 0 */
    {
        size_t len = make_valid(buf, 4, 4096);
        struct ndc__slot sl;
        memset(&sl, 0, sizeof sl);
        atomic_store(&sl.state, NDC__WORD(NDC__READY, 0));
        sl.seq = 0; sl.nbytes = 24; sl.dtype = NDC_F64; sl.ndim = 1; sl.shape[0] = 3; sl.tag = 5;
        memcpy(buf + len, &slot3, 2);
        memcpy(buf + len + 2, &sl, 64);
        len += 66;
        len += rec(buf + len, cells, 0, 1, 8);   /* cell 0: full for position 0 ... */
        memcpy(buf + len - 64 + 8, &(uint32_t){ 3 }, 4);   /* ... naming slot 3 */
        len += rec(buf + len, 6, 0, 1, 8);       /* tail 1 */
        put(dir, "rec_ready_slot_valid", buf, len);
        memcpy(buf + len - 3 * 66 + 2 + offsetof(struct ndc__slot, nbytes), &(uint64_t){ 25 }, 8);
        put(dir, "rec_ready_slot_nbytes_off", buf, len);
    }
    return 0;
}
#endif
