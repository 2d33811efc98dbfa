/*
 * Real processes: producers and consumers forked from the test, channels
 * shared by inheritance, by name and by fd; order and content checked
 * array by array; several senders and receivers; zero copy of a 1 GiB array;
 * waiting visible in ndc_stat, signals, end of stream and dead peers.
 *
 * Children never call cr_assert (the runner does not expect reports from
 * them): they print what went wrong to stderr and exit with a nonzero code,
 * and the parent asserts on that code.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"


static int wait_flag(_Atomic int *f, int want, int ms)
{
    int64_t deadline = th_now_ns() + (int64_t)ms * MS;
    while (atomic_load(f) < want) {
        if (th_now_ns() > deadline)
            return -1;
        usleep(500);
    }
    return 0;
}

/* Poll ndc_stat until the uint32_t field at `off` equals want, up to 3 s;
 * returns the last value seen. */
static uint32_t poll_stat(const ndc_chan *ch, size_t off, uint32_t want)
{
    int64_t deadline = th_now_ns() + 3 * SEC;
    uint32_t v;
    for (;;) {
        struct ndc_stat st = th_stat(ch);
        memcpy(&v, (const char *)&st + off, sizeof v);
        if (v == want || th_now_ns() > deadline)
            return v;
        usleep(1000);
    }
}
#define POLL_STAT(ch, field, want) poll_stat((ch), offsetof(struct ndc_stat, field), (want))

/* Where p lives: the offset in the mapped file and its inode, from
 * /proc/self/maps. Public-API only: no need to know the library's layout. */
static int file_offset_of(const void *p, uint64_t *off, uint64_t *ino)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, foff, inode;
        char perms[5], dev[16];
        if (sscanf(line, "%lx-%lx %4s %lx %15s %lu", &lo, &hi, perms, &foff, dev, &inode) == 6 &&
            (uintptr_t)p >= lo && (uintptr_t)p < hi) {
            *off = foff + ((uintptr_t)p - lo);
            *ino = inode;
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

/* ---- a deterministic random stream of arrays ------------------------------ */

#define STREAM_SLOT (256u << 10)

/* Array i of the stream: dtype, ndim 0..5, extents 1..6 (sometimes a 0),
 * tag i; content th_fill(seed 7000 + i). */
static void stream_header(uint64_t i, struct ndc_array *a)
{
    uint64_t r = th_mix(i * 0x1234567ull + 99);
    int64_t shape[NDC_MAX_DIMS];
    int ndim = (int)((r >> 8) % 6);
    for (int d = 0; d < ndim; d++)
        shape[d] = 1 + (int64_t)((r >> (16 + 5 * d)) % 6);
    if (ndim > 0 && (r >> 60) == 0)
        shape[ndim - 1] = 0;
    ndc_array_init(a, (enum ndc_dtype)(1 + r % NDC_DTYPE_LAST), ndim, shape, NULL);
    a->tag = i;
}

static int stream_produce(ndc_chan *ch, int n)
{
    unsigned char *buf = malloc(STREAM_SLOT), *phys = malloc(STREAM_SLOT);
    for (int i = 0; i < n; i++) {
        struct ndc_array a;
        stream_header((uint64_t)i, &a);
        size_t nb = ndc_array_nbytes(&a);
        int r;
        switch (i % 3) {
        case 0:   /* in place */
            r = ndc_reserve(ch, &a, 10 * SEC);
            CK(r == 0, 10, "reserve %d: %s", i, ndc_strerror(r));
            th_fill(a.data, nb, 7000 + (uint64_t)i);
            r = ndc_commit(ch, &a);
            CK(r == 0, 11, "commit %d: %s", i, ndc_strerror(r));
            break;
        case 1:   /* copy, contiguous */
            th_fill(buf, nb, 7000 + (uint64_t)i);
            a.data = buf;
            r = ndc_send(ch, &a, 10 * SEC);
            CK(r == 0, 12, "send %d: %s", i, ndc_strerror(r));
            break;
        default:  /* copy from a view whose first axis runs backwards */
            th_fill(buf, nb, 7000 + (uint64_t)i);
            if (a.ndim > 0 && a.shape[0] > 0 && nb > 0) {
                size_t row = nb / (size_t)a.shape[0];
                for (int64_t k = 0; k < a.shape[0]; k++)
                    memcpy(phys + (size_t)(a.shape[0] - 1 - k) * row, buf + (size_t)k * row, row);
                a.data = phys + (size_t)(a.shape[0] - 1) * row;
                a.strides[0] = -(int64_t)row;
            } else {
                a.data = buf;
            }
            r = ndc_send(ch, &a, 10 * SEC);
            CK(r == 0, 13, "send (reversed view) %d: %s", i, ndc_strerror(r));
        }
    }
    free(buf);
    free(phys);
    int r = ndc_close(ch);
    CK(r == 0, 14, "close: %s", ndc_strerror(r));
    return 0;
}

static int stream_consume(ndc_chan *ch, int n)
{
    unsigned char *buf = malloc(STREAM_SLOT);
    for (int i = 0; i < n; i++) {
        struct ndc_array want, a;
        stream_header((uint64_t)i, &want);
        size_t nb = ndc_array_nbytes(&want);
        const void *p;
        int r;
        memset(&a, 0, sizeof a);
        if (i % 2) {
            a.data = buf;
            r = ndc_recv(ch, &a, STREAM_SLOT, 10 * SEC);
            p = buf;
        } else {
            r = ndc_acquire(ch, &a, 10 * SEC);
            p = a.data;
        }
        CK(r == 0, 20, "receive %d: %s", i, ndc_strerror(r));
        CK(a.tag == (uint64_t)i, 21, "array %d arrived with tag %llu (order broken)", i,
           (unsigned long long)a.tag);
        CK(a.seq == (uint64_t)i, 22, "array %d has seq %llu", i, (unsigned long long)a.seq);
        CK(a.dtype == want.dtype && a.ndim == want.ndim, 23, "array %d: dtype %d ndim %d, want %d %d",
           i, a.dtype, a.ndim, want.dtype, want.ndim);
        for (int d = 0; d < a.ndim; d++)
            CK(a.shape[d] == want.shape[d] && a.strides[d] == want.strides[d], 24,
               "array %d dim %d: shape %lld stride %lld, want %lld %lld", i, d,
               (long long)a.shape[d], (long long)a.strides[d], (long long)want.shape[d],
               (long long)want.strides[d]);
        CK(th_check(p, nb, 7000 + (uint64_t)i), 25, "array %d: payload differs", i);
        if (!(i % 2)) {
            r = ndc_release(ch, &a);
            CK(r == 0, 26, "release %d: %s", i, ndc_strerror(r));
        }
    }
    struct ndc_array a;
    int r = ndc_acquire(ch, &a, 10 * SEC);
    CK(r == -EPIPE, 27, "after the last array: %d (%s), want -EPIPE", r, ndc_strerror(r));
    free(buf);
    return 0;
}

#define STREAM_N 3000

struct stream_arg { ndc_chan *ch; };

static int child_produce(void *p) { return stream_produce(((struct stream_arg *)p)->ch, STREAM_N); }
static int child_consume(void *p) { return stream_consume(((struct stream_arg *)p)->ch, STREAM_N); }

Test(proc, stream_child_to_parent, .timeout = 60)
{
    struct stream_arg arg = { th_chan(4, STREAM_SLOT) };
    pid_t pid = th_fork(child_produce, &arg);
    cr_assert_gt(pid, 0);
    int rc = stream_consume(arg.ch, STREAM_N);
    if (rc)
        kill(pid, SIGKILL);   /* it would wait for room until its timeout */
    int st = th_wait(pid, 20000);
    cr_assert_eq(rc, 0, "consumer (parent) failed with code %d; see stderr", rc);
    cr_assert(rc || st == 0, "producer child exited with %d", st);
    struct ndc_stat s = th_stat(arg.ch);
    cr_assert_eq(s.sent, STREAM_N);
    cr_assert_eq(s.received, STREAM_N);
    cr_assert_eq(s.free, 4);
    ndc_free(arg.ch);
}

Test(proc, stream_parent_to_child, .timeout = 60)
{
    struct stream_arg arg = { th_chan(3, STREAM_SLOT) };
    pid_t pid = th_fork(child_consume, &arg);
    cr_assert_gt(pid, 0);
    int rc = stream_produce(arg.ch, STREAM_N);
    if (rc)
        ndc_close(arg.ch);   /* end the child's wait */
    int st = th_wait(pid, 20000);
    cr_assert_eq(rc, 0, "producer (parent) failed with code %d; see stderr", rc);
    cr_assert_eq(st, 0, "consumer child exited with %d (20-27: see stream_consume)", st);
    ndc_free(arg.ch);
}

/* ---- several senders x several receivers ---------------------------------- */

enum { MP_S = 3, MP_R = 3, MP_PER = 1000 };

struct mp_shared {
    _Atomic int senders_done;
    _Atomic int release_senders;
    _Atomic uint32_t count[MP_R];
    uint64_t tag[MP_R][MP_S * MP_PER];
    uint64_t seq[MP_R][MP_S * MP_PER];
};

struct mp_arg { ndc_chan *ch; struct mp_shared *sh; int id; };

static uint64_t mp_val(uint64_t tag, int64_t k)
{
    return tag ^ ((uint64_t)k * 0x9e3779b97f4a7c15ull);
}

static int mp_sender(void *p)
{
    struct mp_arg *m = p;
    for (uint64_t c = 0; c < MP_PER; c++) {
        uint64_t tag = ((uint64_t)m->id << 32) | c, v[16];
        int64_t shape[] = { 1 + (int64_t)(c % 16) };
        for (int64_t k = 0; k < shape[0]; k++)
            v[k] = mp_val(tag, k);
        struct ndc_array a;
        ndc_array_init(&a, NDC_U64, 1, shape, v);
        a.tag = tag;
        int r;
        if (c % 2) {
            r = ndc_send(m->ch, &a, 10 * SEC);
        } else {
            r = ndc_reserve(m->ch, &a, 10 * SEC);
            if (r == 0) {
                memcpy(a.data, v, (size_t)shape[0] * 8);
                r = ndc_commit(m->ch, &a);
            }
        }
        CK(r == 0, 30, "sender %d array %llu: %s", m->id, (unsigned long long)c, ndc_strerror(r));
    }
    atomic_fetch_add(&m->sh->senders_done, 1);
    /* Stay attached until the parent has closed the stream, so receivers
     * never see a stream whose senders are all gone. */
    CK(wait_flag(&m->sh->release_senders, 1, 30000) == 0, 31, "never released");
    return 0;
}

static int mp_receiver(void *p)
{
    struct mp_arg *m = p;
    uint64_t buf[16];
    for (uint32_t n = 0;; n++) {
        struct ndc_array a;
        memset(&a, 0, sizeof a);
        int r;
        const uint64_t *v;
        if (n % 2) {
            a.data = buf;
            r = ndc_recv(m->ch, &a, sizeof buf, 20 * SEC);
            v = buf;
        } else {
            r = ndc_acquire(m->ch, &a, 20 * SEC);
            v = a.data;
        }
        if (r == -EPIPE)
            return 0;
        CK(r == 0, 40, "receiver %d: %s", m->id, ndc_strerror(r));
        uint64_t c = a.tag & 0xffffffffu;
        CK(a.dtype == NDC_U64 && a.ndim == 1 && a.shape[0] == 1 + (int64_t)(c % 16), 41,
           "receiver %d: bad header for tag %llx", m->id, (unsigned long long)a.tag);
        for (int64_t k = 0; k < a.shape[0]; k++)
            CK(v[k] == mp_val(a.tag, k), 42, "receiver %d: tag %llx element %lld wrong", m->id,
               (unsigned long long)a.tag, (long long)k);
        if (!(n % 2))
            CK(ndc_release(m->ch, &a) == 0, 43, "release");
        CK(n < MP_S * MP_PER, 44, "receiver %d got more arrays than were sent", m->id);
        m->sh->tag[m->id][n] = a.tag;
        m->sh->seq[m->id][n] = a.seq;
        atomic_store(&m->sh->count[m->id], n + 1);
    }
}

Test(proc, senders_x_receivers_exactly_once, .timeout = 90)
{
    ndc_chan *ch = th_chan(4, 4096);
    struct mp_shared *sh = th_shared(sizeof *sh);
    struct mp_arg args[MP_S + MP_R];
    pid_t pids[MP_S + MP_R];
    for (int i = 0; i < MP_R; i++) {
        args[i] = (struct mp_arg){ ch, sh, i };
        pids[i] = th_fork(mp_receiver, &args[i]);
    }
    for (int i = 0; i < MP_S; i++) {
        args[MP_R + i] = (struct mp_arg){ ch, sh, i };
        pids[MP_R + i] = th_fork(mp_sender, &args[MP_R + i]);
    }
    /* Wait for the senders, but stop early if a receiver dies: the senders
     * would then sit on a full channel until their timeouts. */
    int st[MP_S + MP_R], reaped[MP_S + MP_R] = { 0 }, ok = -1;
    int64_t deadline = th_now_ns() + 30 * SEC;
    while (th_now_ns() < deadline) {
        if (atomic_load(&sh->senders_done) == MP_S) {
            ok = 0;
            break;
        }
        int early = 0;
        for (int i = 0; i < MP_R; i++) {
            int w;
            if (!reaped[i] && waitpid(pids[i], &w, WNOHANG) == pids[i]) {
                reaped[i] = 1;
                st[i] = WIFEXITED(w) ? WEXITSTATUS(w) : 128 + WTERMSIG(w);
                early = 1;
            }
        }
        if (early)
            break;
        usleep(1000);
    }
    th_ok(ndc_close(ch));
    atomic_store(&sh->release_senders, 1);
    for (int i = 0; i < MP_S + MP_R; i++)
        if (!reaped[i])
            st[i] = th_wait(pids[i], 30000);
    for (int i = 0; i < MP_R; i++)
        cr_assert_eq(st[i], 0, "receiver %d exited with %d", i, st[i]);
    cr_assert_eq(ok, 0, "senders did not finish in 30 s (done %d)", atomic_load(&sh->senders_done));
    for (int i = 0; i < MP_R; i++)
        cr_assert_eq(st[i], 0, "receiver %d exited with %d", i, st[i]);
    for (int i = 0; i < MP_S; i++)
        cr_assert_eq(st[MP_R + i], 0, "sender %d exited with %d", i, st[MP_R + i]);

    enum { N = MP_S * MP_PER };
    static int64_t seq_of[MP_S][MP_PER];
    static unsigned char seen[N];
    memset(seq_of, 0xff, sizeof seq_of);
    memset(seen, 0, sizeof seen);
    size_t total = 0;
    for (int r = 0; r < MP_R; r++) {
        uint32_t n = atomic_load(&sh->count[r]);
        for (uint32_t k = 0; k < n; k++) {
            uint64_t id = sh->tag[r][k] >> 32, c = sh->tag[r][k] & 0xffffffffu;
            uint64_t s = sh->seq[r][k];
            cr_assert(id < MP_S && c < MP_PER, "unknown tag %llx", (unsigned long long)sh->tag[r][k]);
            cr_assert_eq(seq_of[id][c], -1, "sender %llu array %llu delivered twice",
                         (unsigned long long)id, (unsigned long long)c);
            cr_assert_lt(s, (uint64_t)N, "seq %llu out of range", (unsigned long long)s);
            cr_assert_eq(seen[s], 0, "seq %llu delivered twice", (unsigned long long)s);
            seen[s] = 1;
            seq_of[id][c] = (int64_t)s;
            if (k > 0)
                cr_assert_gt(s, sh->seq[r][k - 1], "receiver %d got seq %llu after %llu", r,
                             (unsigned long long)s, (unsigned long long)sh->seq[r][k - 1]);
        }
        total += n;
    }
    cr_assert_eq(total, (size_t)N, "%zu arrays delivered, %d sent", total, N);
    for (int id = 0; id < MP_S; id++)
        for (int c = 1; c < MP_PER; c++)
            cr_assert_gt(seq_of[id][c], seq_of[id][c - 1],
                         "sender %d's order broken: array %d seq %lld, array %d seq %lld", id,
                         c - 1, (long long)seq_of[id][c - 1], c, (long long)seq_of[id][c]);
    struct ndc_stat s = th_stat(ch);
    cr_assert_eq(s.sent, (uint64_t)N);
    cr_assert_eq(s.received, (uint64_t)N);
    ndc_free(ch);
    munmap(sh, sizeof *sh);
}

/* ---- a forked child is its own process ------------------------------------- */

struct sync_shared {
    _Atomic int step;
    _Atomic int go;
    int rc;
    int64_t t_call, t_ret;
    uint64_t off, ino;
};

struct inh_arg { ndc_chan *ch; struct sync_shared *sh; int free_before_exit; };

static int inh_child(void *p)
{
    struct inh_arg *m = p;
    int64_t shape[] = { 32 };
    unsigned char buf[32];
    th_fill(buf, 32, 4242);
    struct ndc_array a;
    ndc_array_init(&a, NDC_U8, 1, shape, buf);
    a.tag = (uint64_t)getpid();
    int r = ndc_send(m->ch, &a, 5 * SEC);
    CK(r == 0, 50, "send from the inherited handle: %s", ndc_strerror(r));
    atomic_store(&m->sh->step, 1);
    CK(wait_flag(&m->sh->go, 1, 10000) == 0, 51, "parent never said go");
    if (m->free_before_exit) {
        ndc_free(m->ch);
        atomic_store(&m->sh->step, 2);
        CK(wait_flag(&m->sh->go, 2, 10000) == 0, 52, "parent never said go (2)");
    }
    return 0;
}

Test(proc, inherited_handle_counts_as_process, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    cr_assert_eq(th_stat(ch).attached, 1);
    struct sync_shared *sh = th_shared(sizeof *sh);
    struct inh_arg arg = { ch, sh, 1 };
    pid_t pid = th_fork(inh_child, &arg);
    cr_assert_eq(wait_flag(&sh->step, 1, 10000), 0, "the child never sent");
    uint32_t att = POLL_STAT(ch, attached, 2);
    struct ndc_array r;
    int rc = ndc_acquire(ch, &r, 2 * SEC);
    atomic_store(&sh->go, 1);
    cr_assert_eq(att, 2, "attached %u with a forked child that sent, want 2", att);
    th_ok(rc);
    cr_assert_eq(r.tag, (uint64_t)pid, "the array is not the child's");
    cr_assert(th_check(r.data, 32, 4242), "the child's payload differs");
    th_ok(ndc_release(ch, &r));
    cr_assert_eq(wait_flag(&sh->step, 2, 10000), 0);
    att = POLL_STAT(ch, attached, 1);
    atomic_store(&sh->go, 2);
    cr_assert_eq(att, 1, "attached %u after the child's ndc_free, want 1", att);
    cr_assert_eq(th_wait(pid, 10000), 0);
    /* The parent's handle is unaffected by the child's ndc_free. */
    int64_t s[] = { 4 };
    struct ndc_array a;
    ndc_array_init(&a, NDC_U8, 1, s, "abcd");
    th_ok(ndc_send(ch, &a, 0));
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert(memcmp(r.data, "abcd", 4) == 0);
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
    munmap(sh, sizeof *sh);
}

Test(proc, attached_drops_when_child_exits, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct sync_shared *sh = th_shared(sizeof *sh);
    struct inh_arg arg = { ch, sh, 0 };
    pid_t pid = th_fork(inh_child, &arg);
    cr_assert_eq(wait_flag(&sh->step, 1, 10000), 0, "the child never sent");
    uint32_t att = POLL_STAT(ch, attached, 2);
    atomic_store(&sh->go, 1);
    cr_assert_eq(th_wait(pid, 10000), 0);
    cr_assert_eq(att, 2);
    /* Exited without ndc_free: "live processes attached" must drop. */
    att = POLL_STAT(ch, attached, 1);
    cr_assert_eq(att, 1, "attached %u after the child exited, want 1", att);
    struct ndc_array r;
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert(th_check(r.data, 32, 4242));
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
    munmap(sh, sizeof *sh);
}

/* ---- by name and by fd ------------------------------------------------------ */

#define SMALL_N 200

static int send_small_stream(ndc_chan *ch, int n, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        int64_t s[] = { 1 + i % 7, 1 + i % 5 };
        unsigned char buf[35 * 8];
        struct ndc_array a;
        ndc_array_init(&a, NDC_F64, 2, s, buf);
        th_fill(buf, ndc_array_nbytes(&a), seed + (uint64_t)i);
        a.tag = (uint64_t)i;
        int r = ndc_send(ch, &a, 10 * SEC);
        CK(r == 0, 60, "send %d: %s", i, ndc_strerror(r));
    }
    int r = ndc_close(ch);
    CK(r == 0, 61, "close: %s", ndc_strerror(r));
    return 0;
}

static int recv_small_stream(ndc_chan *ch, int n, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        struct ndc_array a;
        int r = ndc_acquire(ch, &a, 10 * SEC);
        CK(r == 0, 70, "acquire %d: %s", i, ndc_strerror(r));
        CK(a.tag == (uint64_t)i && a.seq == (uint64_t)i, 71, "array %d: tag %llu seq %llu", i,
           (unsigned long long)a.tag, (unsigned long long)a.seq);
        CK(a.dtype == NDC_F64 && a.ndim == 2 && a.shape[0] == 1 + i % 7 && a.shape[1] == 1 + i % 5,
           72, "array %d: wrong header", i);
        CK(th_check(a.data, ndc_array_nbytes(&a), seed + (uint64_t)i), 73, "array %d: payload", i);
        CK(ndc_release(ch, &a) == 0, 74, "release %d", i);
    }
    struct ndc_array a;
    int r = ndc_acquire(ch, &a, 10 * SEC);
    CK(r == -EPIPE, 75, "after the stream: %d (%s), want -EPIPE", r, ndc_strerror(r));
    return 0;
}

struct name_arg { char name[160]; uint32_t flags; int fd; int sock; };

static int named_child(void *p)
{
    struct name_arg *m = p;
    ndc_chan *ch = NULL;
    char missing[200];
    snprintf(missing, sizeof missing, "%s.nope", m->name);
    int r = ndc_open(&ch, missing, 0);
    CK(r == -ENOENT, 80, "ndc_open of a missing name: %d (%s)", r, ndc_strerror(r));
    r = ndc_open(&ch, m->name, m->flags);
    CK(r == 0, 81, "ndc_open(%s): %s", m->name, ndc_strerror(r));
    r = recv_small_stream(ch, SMALL_N, 123);
    ndc_free(ch);
    return r;
}

Test(proc, named_channel_opened_by_child, .timeout = 30)
{
    for (int ro = 0; ro < 2; ro++) {
        struct name_arg arg;
        memset(&arg, 0, sizeof arg);
        snprintf(arg.name, sizeof arg.name, "%s", th_unique_name("byname"));
        arg.flags = ro ? NDC_RDONLY : 0;
        struct ndc_chan_opts o = { .slots = 3, .slot_bytes = 4096 };
        ndc_chan *ch = NULL;
        th_ok(ndc_create(&ch, arg.name, &o));
        pid_t pid = th_fork(named_child, &arg);
        int rc = send_small_stream(ch, SMALL_N, 123);
        int st = th_wait(pid, 20000);
        ndc_unlink(arg.name);
        cr_assert_eq(rc, 0, "parent sender failed: %d", rc);
        cr_assert_eq(st, 0, "child (%s) exited with %d; see stderr", ro ? "NDC_RDONLY" : "rw", st);
        ndc_free(ch);
    }
}

static int fd_child_inherited(void *p)
{
    struct name_arg *m = p;
    ndc_chan *ch = NULL;
    int r = ndc_open_fd(&ch, m->fd, 0);
    CK(r == 0, 90, "ndc_open_fd(inherited %d): %s", m->fd, ndc_strerror(r));
    r = send_small_stream(ch, SMALL_N, 321);
    ndc_free(ch);
    return r;
}

Test(proc, fd_inherited_across_fork, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct name_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.fd = ndc_fd(ch);
    pid_t pid = th_fork(fd_child_inherited, &arg);
    int rc = recv_small_stream(ch, SMALL_N, 321);
    int st = th_wait(pid, 20000);
    cr_assert_eq(rc, 0, "parent receiver failed: %d; see stderr", rc);
    cr_assert_eq(st, 0, "child exited with %d", st);
    ndc_free(ch);
}

static int fd_child_scm(void *p)
{
    struct name_arg *m = p;
    char byte;
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } u;
    struct iovec iov = { &byte, 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                          .msg_controllen = sizeof u.b };
    ssize_t n = recvmsg(m->sock, &msg, 0);
    CK(n == 1, 100, "recvmsg: %s", strerror(errno));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    CK(c && c->cmsg_type == SCM_RIGHTS, 101, "no fd received");
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    ndc_chan *ch = NULL;
    int r = ndc_open_fd(&ch, fd, NDC_RDONLY);
    CK(r == 0, 102, "ndc_open_fd(passed fd): %s", ndc_strerror(r));
    close(fd);   /* duplicated by ndc_open_fd: ours may go */
    r = recv_small_stream(ch, SMALL_N, 555);
    ndc_free(ch);
    return r;
}

Test(proc, fd_passed_with_scm_rights, .timeout = 30)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct name_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.sock = sv[1];
    /* Fork first: the child inherits nothing of the channel. */
    pid_t pid = th_fork(fd_child_scm, &arg);
    ndc_chan *ch = th_chan(2, 4096);
    int fd = ndc_fd(ch);
    char byte = 'x';
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } u;
    memset(&u, 0, sizeof u);
    struct iovec iov = { &byte, 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                          .msg_controllen = sizeof u.b };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    cr_assert_eq(sendmsg(sv[0], &msg, 0), 1);
    int rc = send_small_stream(ch, SMALL_N, 555);
    int st = th_wait(pid, 20000);
    cr_assert_eq(rc, 0, "parent sender failed: %d", rc);
    cr_assert_eq(st, 0, "child exited with %d; see stderr", st);
    cr_assert_eq(fcntl(fd, F_GETFD) >= 0, 1, "the handle's fd was closed");
    ndc_free(ch);
    close(sv[0]);
    close(sv[1]);
}

/* ---- a 1 GiB array without a copy ------------------------------------------ */

#define GIB (1ull << 30)
#define PAGE 4096ull

static uint64_t page_word(uint64_t page)
{
    return th_mix(page ^ 0xabcdef1234ull);
}

struct big_arg { ndc_chan *ch; struct sync_shared *sh; };

static int big_child(void *p)
{
    struct big_arg *m = p;
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    a.dtype = NDC_U8;
    a.ndim = 1;
    a.shape[0] = (int64_t)GIB;
    a.tag = 0xb16;
    int r = ndc_reserve(m->ch, &a, 10 * SEC);
    CK(r == 0, 110, "reserve 1 GiB: %s", ndc_strerror(r));
    CK(file_offset_of(a.data, &m->sh->off, &m->sh->ino) == 0, 111, "slot not in a file mapping");
    unsigned char *d = a.data;
    /* Every page written, so the array really is 1 GiB of memory. */
    for (uint64_t pg = 0; pg < GIB / PAGE; pg++) {
        uint64_t w = page_word(pg);
        memcpy(d + pg * PAGE, &w, 8);
        memcpy(d + pg * PAGE + PAGE - 8 - (pg % 500) * 8, &w, 8);
    }
    r = ndc_commit(m->ch, &a);
    CK(r == 0, 112, "commit: %s", ndc_strerror(r));
    atomic_store(&m->sh->step, 1);
    CK(wait_flag(&m->sh->go, 1, 60000) == 0, 113, "parent never finished");
    return 0;
}

Test(proc, one_gib_zero_copy, .timeout = 60)
{
    long avail = th_proc_kb("/proc/meminfo", "MemAvailable");
    if (avail >= 0 && avail < 3L * 1024 * 1024)
        cr_skip_test("%ld KiB available, need 3 GiB", avail);
    ndc_chan *ch = th_chan(1, GIB);
    struct sync_shared *sh = th_shared(sizeof *sh);
    struct big_arg arg = { ch, sh };
    pid_t pid = th_fork(big_child, &arg);
    long rss0 = th_proc_kb("/proc/self/status", "VmRSS"), anon0 = th_proc_kb("/proc/self/status", "RssAnon");
    struct ndc_array a;
    int rc = ndc_acquire(ch, &a, 40 * SEC);
    if (rc) {
        atomic_store(&sh->go, 1);
        th_wait(pid, 10000);
    }
    th_ok(rc);
    if (a.shape[0] != (int64_t)GIB || a.ndim != 1) {
        atomic_store(&sh->go, 1);
        th_wait(pid, 10000);
        cr_assert_fail("the 1 GiB array arrived as ndim %d shape[0] %lld", a.ndim,
                       (long long)a.shape[0]);
    }
    uint64_t off = 0, ino = 0;
    int mapped = file_offset_of(a.data, &off, &ino);
    struct stat sb;
    fstat(ndc_fd(ch), &sb);
    /* A sample of pages: every 1024th, and 500 scattered ones. (Few: a read
     * fault maps its neighbours too, fault-around, and that is not a copy.) */
    const unsigned char *d = a.data;
    uint64_t bad_page = UINT64_MAX;
    for (uint64_t pg = 0; pg < GIB / PAGE && bad_page == UINT64_MAX; pg += 1024) {
        uint64_t w = page_word(pg), g1, g2;
        memcpy(&g1, d + pg * PAGE, 8);
        memcpy(&g2, d + pg * PAGE + PAGE - 8 - (pg % 500) * 8, 8);
        if (g1 != w || g2 != w)
            bad_page = pg;
    }
    for (uint64_t k = 0; k < 500 && bad_page == UINT64_MAX; k++) {
        uint64_t pg = th_mix(k) % (GIB / PAGE), w = page_word(pg), g;
        memcpy(&g, d + pg * PAGE, 8);
        if (g != w)
            bad_page = pg;
    }
    long rss1 = th_proc_kb("/proc/self/status", "VmRSS"), anon1 = th_proc_kb("/proc/self/status", "RssAnon");
    struct ndc_stat st = th_stat(ch);
    int rel = ndc_release(ch, &a);
    atomic_store(&sh->go, 1);
    int child = th_wait(pid, 20000);

    cr_assert_eq(a.tag, 0xb16);
    cr_assert_eq(mapped, 0, "the loan is not in a file mapping");
    cr_assert_eq(ino, (uint64_t)sb.st_ino, "the loan is not in the channel's segment");
    cr_assert_eq(sh->ino, ino, "sender and receiver see different files");
    cr_assert_eq(sh->off, off, "sender wrote at segment offset %llu, receiver reads at %llu",
                 (unsigned long long)sh->off, (unsigned long long)off);
    cr_assert_eq(bad_page, UINT64_MAX, "page %llu differs from what the sender wrote",
                 (unsigned long long)bad_page);
    cr_log_info("receiver RSS grew by %ld KiB (anon %ld KiB) reading a 1 GiB loan",
                rss1 - rss0, anon1 - anon0);
    cr_assert_lt(anon1 - anon0, 64 * 1024, "the receiver's private memory grew by %ld KiB: a copy?",
                 anon1 - anon0);
    cr_assert_lt(rss1 - rss0, 256 * 1024, "the receiver's RSS grew by %ld KiB: a copy?",
                 rss1 - rss0);
    cr_assert_eq(st.bytes_sent, GIB);
    th_ok(rel);
    cr_assert_eq(child, 0, "sender child exited with %d", child);
    ndc_free(ch);
    munmap(sh, sizeof *sh);
}

/* ---- waiting, signals, backpressure ----------------------------------------- */

static void on_usr1(int sig) { (void)sig; }

struct intr_arg { ndc_chan *ch; struct sync_shared *sh; int sender; };

static int intr_child(void *p)
{
    struct intr_arg *m = p;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: the wait must come back with -EINTR */
    sigaction(SIGUSR1, &sa, NULL);
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    m->sh->t_call = th_now_ns();
    if (m->sender) {
        a.dtype = NDC_U8;
        a.ndim = 1;
        a.shape[0] = 8;
        m->sh->rc = ndc_reserve(m->ch, &a, 20 * SEC);
    } else {
        m->sh->rc = ndc_acquire(m->ch, &a, 20 * SEC);
    }
    m->sh->t_ret = th_now_ns();
    CK(m->sh->rc == -EINTR, 120, "%s interrupted by a signal: %d (%s), want -EINTR",
       m->sender ? "reserve" : "acquire", m->sh->rc, ndc_strerror(m->sh->rc));
    return 0;
}

static void interrupt_case(int sender)
{
    ndc_chan *ch = th_chan(2, 4096);
    if (sender) {
        int64_t s[] = { 1 };
        struct ndc_array a;
        ndc_array_init(&a, NDC_U8, 1, s, "x");
        th_ok(ndc_send(ch, &a, 0));
        th_ok(ndc_send(ch, &a, 0));
    }
    struct sync_shared *sh = th_shared(sizeof *sh);
    struct intr_arg arg = { ch, sh, sender };
    pid_t pid = th_fork(intr_child, &arg);
    uint32_t w = sender ? POLL_STAT(ch, senders_waiting, 1) : POLL_STAT(ch, receivers_waiting, 1);
    int64_t t_kill = th_now_ns();
    /* The count goes up just before the futex wait: a signal that lands
     * in between runs its handler and the wait begins after it, as any
     * blocking call would. Signal again until one lands in the sleep. */
    for (int i = 0; i < 500; i++) {
        siginfo_t si = { 0 };
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == pid)
            break;   /* it returned (and exited) */
        kill(pid, SIGUSR1);
        usleep(20 * 1000);
    }
    int st = th_wait(pid, 10000);
    cr_assert_eq(w, 1, "%s_waiting = %u while the child sleeps, want 1",
                 sender ? "senders" : "receivers", w);
    cr_assert_eq(st, 0, "child exited with %d (rc %d: %s)", st, sh->rc, ndc_strerror(sh->rc));
    cr_assert_lt(sh->t_ret - t_kill, 2 * SEC, "the signal took %lld ns to interrupt",
                 (long long)(sh->t_ret - t_kill));
    struct ndc_stat s = th_stat(ch);
    cr_assert_eq(s.receivers_waiting, 0, "an interrupted receiver is still counted");
    cr_assert_eq(s.senders_waiting, 0, "an interrupted sender is still counted");
    cr_assert_eq(s.ready, sender ? 2 : 0);
    cr_assert_eq(s.loaned, 0, "an interrupted call left a slot loaned");
    ndc_free(ch);
    munmap(sh, sizeof *sh);
}

Test(proc, blocked_receiver_seen_then_eintr, .timeout = 30)
{
    interrupt_case(0);
}

Test(proc, blocked_sender_seen_then_eintr, .timeout = 30)
{
    interrupt_case(1);
}

struct bp_arg { ndc_chan *ch; struct sync_shared *sh; };

static int bp_child(void *p)
{
    struct bp_arg *m = p;
    for (int i = 0; i < 15; i++) {
        int64_t s[] = { 16 };
        unsigned char buf[16];
        th_fill(buf, 16, 800 + (uint64_t)i);
        struct ndc_array a;
        ndc_array_init(&a, NDC_U8, 1, s, buf);
        a.tag = (uint64_t)i;
        if (i == 2)
            atomic_store(&m->sh->step, 1);   /* the channel is full now */
        int r = ndc_send(m->ch, &a, 20 * SEC);
        CK(r == 0, 130, "send %d: %s", i, ndc_strerror(r));
    }
    CK(ndc_close(m->ch) == 0, 131, "close");
    return 0;
}

Test(proc, full_channel_blocks_sender, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct sync_shared *sh = th_shared(sizeof *sh);
    struct bp_arg arg = { ch, sh };
    pid_t pid = th_fork(bp_child, &arg);
    cr_assert_eq(wait_flag(&sh->step, 1, 10000), 0);
    uint32_t w = POLL_STAT(ch, senders_waiting, 1);
    struct ndc_stat s = th_stat(ch);
    if (w != 1) {
        kill(pid, SIGKILL);
        th_wait(pid, 1000);
    }
    cr_assert_eq(w, 1, "senders_waiting %u on a full channel, want 1", w);
    cr_assert_eq(s.ready, 2);
    cr_assert_eq(s.free, 0);
    cr_assert_eq(s.sent, 2, "a third array got in past a full channel");
    for (int i = 0; i < 15; i++) {
        struct ndc_array a;
        th_ok(ndc_acquire(ch, &a, 10 * SEC));
        cr_assert_eq(a.tag, (uint64_t)i);
        cr_assert_eq(a.seq, (uint64_t)i);
        cr_assert(th_check(a.data, 16, 800 + (uint64_t)i));
        th_ok(ndc_release(ch, &a));
        if (i == 0)
            usleep(20000);   /* let the sender fill again */
    }
    struct ndc_array a;
    th_expect(ndc_acquire(ch, &a, 10 * SEC), -EPIPE);
    cr_assert_eq(th_wait(pid, 10000), 0);
    ndc_free(ch);
    munmap(sh, sizeof *sh);
}

/* ---- end of stream across processes ----------------------------------------- */

struct eos_arg { ndc_chan *ch; struct sync_shared *sh; int child_closes; };

static int eos_child(void *p)
{
    struct eos_arg *m = p;
    if (m->child_closes) {
        usleep(200000);   /* the parent is asleep in ndc_acquire by now */
        CK(ndc_close(m->ch) == 0, 140, "close");
        CK(wait_flag(&m->sh->go, 1, 10000) == 0, 141, "parent never returned");
        return 0;
    }
    struct ndc_array a;
    m->sh->rc = ndc_acquire(m->ch, &a, 20 * SEC);
    m->sh->t_ret = th_now_ns();
    CK(m->sh->rc == -EPIPE, 142, "acquire across a close: %d (%s), want -EPIPE", m->sh->rc,
       ndc_strerror(m->sh->rc));
    return 0;
}

Test(proc, end_of_stream_across_processes, .timeout = 30)
{
    /* The child closes while the parent waits. */
    ndc_chan *ch = th_chan(2, 4096);
    struct sync_shared *sh = th_shared(sizeof *sh);
    struct eos_arg arg = { ch, sh, 1 };
    pid_t pid = th_fork(eos_child, &arg);
    struct ndc_array a;
    int64_t t0 = th_now_ns();
    int rc = ndc_acquire(ch, &a, 10 * SEC);
    int64_t el = th_now_ns() - t0;
    atomic_store(&sh->go, 1);
    cr_assert_eq(th_wait(pid, 10000), 0);
    th_expect(rc, -EPIPE);
    cr_assert_lt(el, 3 * SEC, "the close took %lld ns to reach the waiter", (long long)el);
    cr_assert_eq(th_stat(ch).closed, 1);
    ndc_free(ch);

    /* The parent closes while the child waits. */
    ch = th_chan(2, 4096);
    memset(sh, 0, sizeof *sh);
    arg = (struct eos_arg){ ch, sh, 0 };
    pid = th_fork(eos_child, &arg);
    uint32_t w = POLL_STAT(ch, receivers_waiting, 1);
    int64_t t_close = th_now_ns();
    th_ok(ndc_close(ch));
    int st = th_wait(pid, 10000);
    cr_assert_eq(w, 1);
    cr_assert_eq(st, 0, "child exited with %d (rc %d)", st, sh->rc);
    cr_assert_lt(sh->t_ret - t_close, 2 * SEC);
    ndc_free(ch);
    munmap(sh, sizeof *sh);
}

/* ---- a peer killed while the other side waits -------------------------------- */

struct dead_shared {
    _Atomic int sent, ready, go;
    int rc;
    int64_t t_call, t_ret;
};

struct dead_arg { ndc_chan *ch; struct dead_shared *sh; };

static int dead_sender(void *p)
{
    struct dead_arg *m = p;
    int64_t s[] = { 8 };
    struct ndc_array a;
    ndc_array_init(&a, NDC_U8, 1, s, "ABCDEFGH");
    a.tag = 1;
    int r = ndc_send(m->ch, &a, 5 * SEC);
    CK(r == 0, 150, "send: %s", ndc_strerror(r));
    atomic_store(&m->sh->sent, 1);
    for (;;)
        pause();   /* killed here */
}

static int dead_receiver(void *p)
{
    struct dead_arg *m = p;
    ndc_chan *ch = NULL;
    /* A receive-only handle of its own: it is plainly not a sender. */
    int r = ndc_open_fd(&ch, ndc_fd(m->ch), NDC_RDONLY);
    CK(r == 0, 160, "open_fd: %s", ndc_strerror(r));
    struct ndc_array a;
    r = ndc_acquire(ch, &a, 10 * SEC);
    CK(r == 0 && a.tag == 1, 161, "first acquire: %d (%s)", r, ndc_strerror(r));
    CK(ndc_release(ch, &a) == 0, 162, "release");
    atomic_store(&m->sh->ready, 1);
    CK(wait_flag(&m->sh->go, 1, 10000) == 0, 163, "never told to go");
    m->sh->t_call = th_now_ns();
    m->sh->rc = ndc_acquire(ch, &a, 10 * SEC);
    m->sh->t_ret = th_now_ns();
    ndc_free(ch);
    CK(m->sh->rc == -EOWNERDEAD, 164, "acquire with its only sender dead: %d (%s), want -EOWNERDEAD",
       m->sh->rc, ndc_strerror(m->sh->rc));
    return 0;
}

Test(proc, sender_killed_receiver_gets_eownerdead, .timeout = 40)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct dead_shared *sh = th_shared(sizeof *sh);
    struct dead_arg arg = { ch, sh };
    pid_t ps = th_fork(dead_sender, &arg);
    pid_t pr = th_fork(dead_receiver, &arg);
    int ok = wait_flag(&sh->ready, 1, 15000);
    /* Only the sender and the receiver stay attached. */
    ndc_free(ch);
    atomic_store(&sh->go, 1);
    usleep(300000);   /* the receiver is asleep in ndc_acquire */
    int64_t t_kill = th_now_ns();
    kill(ps, SIGKILL);
    th_wait(ps, 5000);
    int st = th_wait(pr, 15000);
    cr_assert_eq(ok, 0, "the receiver never got the first array");
    int64_t lat = sh->t_ret - t_kill;
    cr_log_info("-EOWNERDEAD %lld us after SIGKILL", (long long)(lat / 1000));
    cr_assert_eq(st, 0, "receiver exited with %d: rc %d (%s) after %lld ms", st, sh->rc,
                 ndc_strerror(sh->rc), (long long)((sh->t_ret - sh->t_call) / MS));
    cr_assert_geq(sh->t_ret, t_kill, "returned before the sender died");
    cr_assert_lt(lat, SEC, "-EOWNERDEAD came %lld ms after the kill (contract: ~100 ms)",
                 (long long)(lat / MS));
    munmap(sh, sizeof *sh);
}

static int dead_receiver2(void *p)
{
    struct dead_arg *m = p;
    struct ndc_array a;
    int r = ndc_acquire(m->ch, &a, 10 * SEC);
    CK(r == 0 && a.tag == 1, 170, "first acquire: %d (%s)", r, ndc_strerror(r));
    CK(ndc_release(m->ch, &a) == 0, 171, "release");
    atomic_store(&m->sh->ready, 1);
    for (;;)
        pause();   /* killed here */
}

static int blocked_sender(void *p)
{
    struct dead_arg *m = p;
    ndc_chan *ch = m->ch;
    int64_t s[] = { 8 };
    struct ndc_array a;
    ndc_array_init(&a, NDC_U8, 1, s, "ABCDEFGH");
    a.tag = 1;
    int r = ndc_send(ch, &a, 5 * SEC);
    CK(r == 0, 180, "send: %s", ndc_strerror(r));
    CK(wait_flag(&m->sh->ready, 1, 10000) == 0, 181, "receiver never took the first array");
    for (int i = 0; i < 2; i++)
        CK(ndc_send(ch, &a, 5 * SEC) == 0, 182, "fill %d", i);
    atomic_store(&m->sh->sent, 1);
    CK(wait_flag(&m->sh->go, 1, 10000) == 0, 183, "never told to go");
    m->sh->t_call = th_now_ns();
    m->sh->rc = ndc_send(ch, &a, 10 * SEC);
    m->sh->t_ret = th_now_ns();
    CK(m->sh->rc == -EOWNERDEAD, 184, "send on a full channel whose receiver died: %d (%s)",
       m->sh->rc, ndc_strerror(m->sh->rc));
    return 0;
}

Test(proc, receiver_killed_sender_gets_eownerdead, .timeout = 40)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct dead_shared *sh = th_shared(sizeof *sh);
    struct dead_arg arg = { ch, sh };
    pid_t pr = th_fork(dead_receiver2, &arg);
    pid_t ps = th_fork(blocked_sender, &arg);
    int ok = wait_flag(&sh->sent, 1, 15000);
    ndc_free(ch);
    atomic_store(&sh->go, 1);
    usleep(300000);   /* the sender is asleep on the full channel */
    int64_t t_kill = th_now_ns();
    kill(pr, SIGKILL);
    th_wait(pr, 5000);
    int st = th_wait(ps, 15000);
    cr_assert_eq(ok, 0, "the sender never filled the channel");
    int64_t lat = sh->t_ret - t_kill;
    cr_log_info("-EOWNERDEAD %lld us after SIGKILL", (long long)(lat / 1000));
    cr_assert_eq(st, 0, "sender exited with %d: rc %d (%s) after %lld ms", st, sh->rc,
                 ndc_strerror(sh->rc), (long long)((sh->t_ret - sh->t_call) / MS));
    cr_assert_lt(lat, SEC, "-EOWNERDEAD came %lld ms after the kill", (long long)(lat / MS));
    munmap(sh, sizeof *sh);
}
