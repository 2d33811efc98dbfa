/*
 * One process (threads allowed): creating and opening channels, option
 * validation, the zero-copy and copy paths, every error a caller can
 * provoke alone, end of stream, counters, receive-only handles, and the cost
 * of an untouched channel. Every check looks at contents and order, not just
 * at return codes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create, F_GET_SEALS; meson passes it too */
#endif
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"


/* ---- helpers local to this file ----------------------------------------- */

static void poison(struct ndc_array *a)
{
    memset(a, 0xa5, sizeof *a);
}

static int is_poisoned(const struct ndc_array *a)
{
    struct ndc_array ref;
    poison(&ref);
    return memcmp(a, &ref, sizeof ref) == 0;
}

static struct ndc_array mkarr(enum ndc_dtype t, int ndim, const int64_t *shape, void *data,
                              uint64_t tag)
{
    struct ndc_array a;
    th_ok(ndc_array_init(&a, t, ndim, shape, data));
    a.tag = tag;
    return a;
}

/* Send a C-order array whose bytes are th_fill(seed); returns nbytes. */
static size_t send_filled(ndc_chan *ch, enum ndc_dtype t, int ndim, const int64_t *shape,
                          uint64_t tag, uint64_t seed)
{
    struct ndc_array a = mkarr(t, ndim, shape, NULL, tag);
    size_t n = ndc_array_nbytes(&a);
    void *buf = malloc(n ? n : 1);
    th_fill(buf, n, seed);
    a.data = buf;
    th_ok(ndc_send(ch, &a, 0));
    free(buf);
    return n;
}

static void assert_c_strides(const struct ndc_array *a)
{
    /* Outside a zero extent both the plain product (0) and numpy's (which
     * skips zero extents) describe the same empty memory: accept either. */
    int64_t s = (int64_t)ndc_dtype_size(a->dtype), np = s;
    for (int i = a->ndim - 1; i >= 0; i--) {
        cr_assert(a->strides[i] == s || a->strides[i] == np,
                  "strides[%d] = %lld, want C order %lld", i, (long long)a->strides[i],
                  (long long)s);
        s *= a->shape[i];
        if (a->shape[i])
            np *= a->shape[i];
    }
}

/* Acquire one array and check its header and bytes against what
 * send_filled() sent. */
static void expect_filled(ndc_chan *ch, enum ndc_dtype t, int ndim, const int64_t *shape,
                          uint64_t tag, uint64_t seed, uint64_t seq)
{
    struct ndc_array a;
    poison(&a);
    th_ok(ndc_acquire(ch, &a, 0));
    cr_assert_eq(a.dtype, t, "dtype %d, want %d", a.dtype, t);
    cr_assert_eq(a.ndim, ndim, "ndim %d, want %d", a.ndim, ndim);
    for (int i = 0; i < ndim; i++)
        cr_assert_eq(a.shape[i], shape[i], "shape[%d] = %lld, want %lld", i,
                     (long long)a.shape[i], (long long)shape[i]);
    assert_c_strides(&a);
    cr_assert_eq(a.tag, tag, "tag %llu, want %llu", (unsigned long long)a.tag,
                 (unsigned long long)tag);
    cr_assert_eq(a.seq, seq, "seq %llu, want %llu", (unsigned long long)a.seq,
                 (unsigned long long)seq);
    size_t n = ndc_array_nbytes(&a);
    cr_assert(n == 0 || a.data != NULL);
    cr_assert(th_check(a.data, n, seed), "payload of tag %llu differs from what was sent",
              (unsigned long long)tag);
    th_ok(ndc_release(ch, &a));
}

/* The permissions ("r--s") of the mapping holding p, from /proc/self/maps. */
static int map_perms(const void *p, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char pr[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, pr) == 3 && (uintptr_t)p >= lo &&
            (uintptr_t)p < hi) {
            memcpy(perms, pr, 5);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static int64_t elapsed_since(int64_t t0)
{
    return th_now_ns() - t0;
}

/* ---- creating, opening, naming ------------------------------------------ */

Test(chan, create_anonymous_defaults, .timeout = 10)
{
    ndc_chan *ch = (ndc_chan *)0x1;
    th_ok(ndc_create(&ch, NULL, NULL));
    cr_assert(ch != NULL && ch != (ndc_chan *)0x1, "ndc_create did not set *ch");
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.slots, 4, "default slots %u, want 4", st.slots);
    cr_assert_eq(st.slot_bytes, 64ull << 20, "default slot_bytes %llu, want 64 MiB",
                 (unsigned long long)st.slot_bytes);
    cr_assert_eq(st.free, 4);
    cr_assert_eq(st.ready, 0);
    cr_assert_eq(st.loaned, 0);
    cr_assert_eq(st.attached, 1, "attached %u, want 1", st.attached);
    cr_assert_eq(st.receivers_waiting, 0);
    cr_assert_eq(st.senders_waiting, 0);
    cr_assert_eq(st.closed, 0);
    cr_assert_eq(st.sent, 0);
    cr_assert_eq(st.received, 0);
    cr_assert_eq(st.bytes_sent, 0);

    int fd = ndc_fd(ch);
    cr_assert_geq(fd, 0, "ndc_fd = %d", fd);
    int fl = fcntl(fd, F_GETFD);
    cr_assert(fl >= 0 && (fl & FD_CLOEXEC), "the segment fd is not close-on-exec");
    /* Anonymous: a memfd sealed against resizing. */
    int seals = fcntl(fd, F_GET_SEALS);
    cr_assert_geq(seals, 0, "F_GET_SEALS failed: %s (not a sealable memfd?)", strerror(errno));
    cr_assert(seals & F_SEAL_GROW, "memfd not sealed against growing (seals %#x)", seals);
    cr_assert(seals & F_SEAL_SHRINK, "memfd not sealed against shrinking (seals %#x)", seals);
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    cr_assert_lt(ftruncate(fd, 0), 0, "ftruncate to 0 succeeded on a sealed memfd");
    cr_assert_lt(ftruncate(fd, sb.st_size + 4096), 0, "ftruncate grew a sealed memfd");
    ndc_free(ch);

    /* All-zero options are the defaults too. */
    struct ndc_chan_opts o;
    memset(&o, 0, sizeof o);
    th_ok(ndc_create(&ch, NULL, &o));
    st = th_stat(ch);
    cr_assert_eq(st.slots, 4);
    cr_assert_eq(st.slot_bytes, 64ull << 20);
    ndc_free(ch);
    ndc_free(NULL);   /* a no-op */
}

Test(chan, create_named, .timeout = 10)
{
    char name[160];
    snprintf(name, sizeof name, "%s", th_unique_name("named"));
    umask(0);   /* the mode must be 0600 by itself, not by the umask */
    ndc_chan *ch = NULL;
    th_ok(ndc_create(&ch, name, NULL));
    struct stat sb;
    cr_assert_eq(fstat(ndc_fd(ch), &sb), 0);
    cr_assert(S_ISREG(sb.st_mode));
    cr_assert_eq(sb.st_mode & 07777, 0600, "mode %o, want 0600", sb.st_mode & 07777);
    cr_assert_eq(sb.st_uid, geteuid());
    int fl = fcntl(ndc_fd(ch), F_GETFD);
    cr_assert(fl >= 0 && (fl & FD_CLOEXEC), "the segment fd is not close-on-exec");

    char path[256];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    struct stat sp;
    cr_assert_eq(stat(path, &sp), 0, "%s does not exist: %s", path, strerror(errno));
    cr_assert_eq(sp.st_ino, sb.st_ino, "the fd is not the shm object of that name");

    /* O_EXCL: a second create of the name fails and leaves *out alone. */
    ndc_chan *ch2 = (ndc_chan *)0x1;
    th_expect(ndc_create(&ch2, name, NULL), -EEXIST);
    cr_assert_eq(ch2, (ndc_chan *)0x1, "*ch written on failure");
    /* The same name without the leading '/' is the same object. */
    th_expect(ndc_create(&ch2, name + 1, NULL), -EEXIST);

    /* ndc_open (with and without '/') attaches to the same channel. */
    ndc_chan *a = NULL, *b = NULL;
    th_ok(ndc_open(&a, name, 0));
    th_ok(ndc_open(&b, name + 1, 0));
    int64_t shape[] = { 5, 3 };
    send_filled(ch, NDC_I16, 2, shape, 11, 1001);
    send_filled(a, NDC_I16, 2, shape, 12, 1002);
    expect_filled(b, NDC_I16, 2, shape, 11, 1001, 0);
    expect_filled(ch, NDC_I16, 2, shape, 12, 1002, 1);

    /* Unlink: the name goes, the attached handles keep working. */
    th_ok(ndc_unlink(name));
    cr_assert_neq(stat(path, &sp), 0, "%s still exists after ndc_unlink", path);
    ndc_chan *c = (ndc_chan *)0x1;
    th_expect(ndc_open(&c, name, 0), -ENOENT);
    cr_assert_eq(c, (ndc_chan *)0x1);
    send_filled(a, NDC_I16, 2, shape, 13, 1003);
    expect_filled(b, NDC_I16, 2, shape, 13, 1003, 2);
    /* And the name is free for a new channel. */
    th_ok(ndc_create(&c, name, NULL));
    struct ndc_stat st = th_stat(c);
    cr_assert_eq(st.sent, 0, "a new channel of a reused name inherited old state");
    th_ok(ndc_unlink(name));
    ndc_free(c);
    ndc_free(b);
    ndc_free(a);
    ndc_free(ch);
}

Test(chan, open_missing, .timeout = 10)
{
    ndc_chan *ch = (ndc_chan *)0x1;
    th_expect(ndc_open(&ch, th_unique_name("missing"), 0), -ENOENT);
    cr_assert_eq(ch, (ndc_chan *)0x1, "*ch written on failure");
    th_expect(ndc_open(&ch, th_unique_name("missing"), NDC_RDONLY), -ENOENT);
    cr_assert_eq(ch, (ndc_chan *)0x1);
}

Test(chan, bad_names, .timeout = 10)
{
    char longname[NDC_NAME_MAX + 2];
    longname[0] = '/';
    memset(longname + 1, 'x', NDC_NAME_MAX);
    longname[NDC_NAME_MAX + 1] = 0;   /* NDC_NAME_MAX + 1 characters with the '/' */
    const char *bad[] = { "", "/", "a/b", "/a/b", "/ndctest/", longname };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ndc_chan *ch = (ndc_chan *)0x1;
        int r = ndc_create(&ch, bad[i], NULL);
        cr_assert_eq(r, -EINVAL, "ndc_create(\"%.40s\") = %d (%s), want -EINVAL; %s", bad[i], r,
                     ndc_strerror(r), ndc_last_error());
        cr_assert_eq(ch, (ndc_chan *)0x1);
        r = ndc_open(&ch, bad[i], 0);
        cr_assert_eq(r, -EINVAL, "ndc_open(\"%.40s\") = %d (%s), want -EINVAL; %s", bad[i], r,
                     ndc_strerror(r), ndc_last_error());
    }
}

Test(chan, name_max_allowed, .timeout = 10)
{
    /* Exactly NDC_NAME_MAX characters, '/' included, is allowed. */
    char okname[NDC_NAME_MAX + 1];
    int n = snprintf(okname, sizeof okname, "%s.", th_unique_name("max"));
    memset(okname + n, 'y', NDC_NAME_MAX - n);
    okname[NDC_NAME_MAX] = 0;
    cr_assert_eq(strlen(okname), NDC_NAME_MAX);
    ndc_chan *ch = NULL;
    th_ok(ndc_create(&ch, okname, NULL));
    th_ok(ndc_unlink(okname));
    ndc_free(ch);
}

Test(chan, option_validation, .timeout = 10)
{
    struct ndc_chan_opts o;
    ndc_chan *ch = (ndc_chan *)0x1;
#define BAD_OPT(stmt, what)                                                                  \
    do {                                                                                     \
        memset(&o, 0, sizeof o);                                                             \
        o.slots = 2;                                                                         \
        o.slot_bytes = 4096;                                                                 \
        stmt;                                                                                \
        int r_ = ndc_create(&ch, NULL, &o);                                                  \
        cr_assert_eq(r_, -EINVAL, "%s: ndc_create = %d (%s), want -EINVAL; %s", what, r_,    \
                     ndc_strerror(r_), ndc_last_error());                                    \
        cr_assert_eq(ch, (ndc_chan *)0x1, "%s: *ch written on failure", what);               \
    } while (0)
    BAD_OPT(o.flags = 1u << 3, "flag bit 3");
    BAD_OPT(o.flags = 1u << 31, "flag bit 31");
    BAD_OPT(o.flags = NDC_RDONLY, "NDC_RDONLY is an open flag, not a create flag");
    BAD_OPT(o.flags = NDC_POPULATE | (1u << 7), "a known and an unknown flag");
    for (int i = 0; i < 6; i++)
        BAD_OPT(o.reserved[i] = 1, "nonzero reserved");
    BAD_OPT(o.reserved[10] = 1u << 31, "nonzero reserved[10] high bit");
    BAD_OPT(o.slots = NDC_MAX_SLOTS + 1, "slots > NDC_MAX_SLOTS");
    BAD_OPT(o.slots = UINT32_MAX, "slots UINT32_MAX");
    BAD_OPT(o.slot_bytes = NDC_MAX_SLOT_BYTES + 1, "slot_bytes > NDC_MAX_SLOT_BYTES");
    BAD_OPT(o.slot_bytes = UINT64_MAX, "slot_bytes UINT64_MAX");
#undef BAD_OPT

    /* The limits themselves are allowed. */
    memset(&o, 0, sizeof o);
    o.slots = NDC_MAX_SLOTS;
    o.slot_bytes = 4096;
    ch = NULL;
    th_ok(ndc_create(&ch, NULL, &o));
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.slots, NDC_MAX_SLOTS);
    cr_assert_eq(st.free, NDC_MAX_SLOTS);
    int64_t shape[] = { 512 };
    send_filled(ch, NDC_F64, 1, shape, 1, 77);
    expect_filled(ch, NDC_F64, 1, shape, 1, 77, 0);
    ndc_free(ch);

    /* ndc_open flags: 0 or NDC_RDONLY only (on a name that exists, so
     * -EINVAL is the only possible answer). */
    char name[160];
    snprintf(name, sizeof name, "%s", th_unique_name("flags"));
    ndc_chan *owner = NULL;
    th_ok(ndc_create(&owner, name, &o));
    ch = (ndc_chan *)0x1;
    th_expect(ndc_open(&ch, name, 1u << 5), -EINVAL);
    th_expect(ndc_open(&ch, name, NDC_POPULATE), -EINVAL);
    th_expect(ndc_open(&ch, name, NDC_RDONLY | (1u << 31)), -EINVAL);
    th_expect(ndc_open_fd(&ch, ndc_fd(owner), 1u << 5), -EINVAL);
    cr_assert_eq(ch, (ndc_chan *)0x1);
    th_ok(ndc_unlink(name));
    ndc_free(owner);
}

Test(chan, open_fd_checks, .timeout = 10)
{
    ndc_chan *ch = (ndc_chan *)0x1;
    int r = ndc_open_fd(&ch, -1, 0);
    cr_assert_lt(r, 0, "ndc_open_fd(-1) succeeded");
    cr_assert_eq(ch, (ndc_chan *)0x1);

    /* A memfd that is not an ndchan segment. */
    int fd = memfd_create("not-ndchan", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 1 << 20), 0);
    th_expect(ndc_open_fd(&ch, fd, 0), -EPROTO);
    cr_assert_eq(ch, (ndc_chan *)0x1);
    /* One that is too short to hold a control block. */
    int fd0 = memfd_create("empty", MFD_CLOEXEC);
    r = ndc_open_fd(&ch, fd0, 0);
    cr_assert(r == -EPROTO || r == -EBADMSG, "empty fd: %d (%s), want -EPROTO/-EBADMSG", r,
              ndc_strerror(r));
    cr_assert_eq(ch, (ndc_chan *)0x1);
    close(fd);
    close(fd0);

    /* The fd is duplicated: closing ours keeps the new handle working. */
    ndc_chan *a = th_chan(2, 4096), *b = NULL;
    int dup_fd = dup(ndc_fd(a));
    th_ok(ndc_open_fd(&b, dup_fd, 0));
    cr_assert_neq(ndc_fd(b), dup_fd, "ndc_open_fd kept the caller's fd instead of a copy");
    close(dup_fd);
    int64_t shape[] = { 100 };
    send_filled(a, NDC_U32, 1, shape, 5, 55);
    expect_filled(b, NDC_U32, 1, shape, 5, 55, 0);
    ndc_free(b);
    ndc_free(a);
}

/* ---- the zero-copy path -------------------------------------------------- */

Test(chan, reserve_commit_acquire_release, .timeout = 10)
{
    ndc_chan *ch = th_chan(3, 1 << 16);
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 20; i++) {
        struct ndc_array a;
        poison(&a);
        a.dtype = NDC_F64;
        a.ndim = 2;
        a.shape[0] = 3 + i;
        a.shape[1] = 5;
        a.tag = 0xdeadbeefcafe0000ull + (uint64_t)i;
        th_ok(ndc_reserve(ch, &a, 0));
        cr_assert_not_null(a.data);
        cr_assert_eq((uintptr_t)a.data % (uintptr_t)page, 0, "slot payload not page aligned");
        cr_assert_eq(a.strides[0], 40);
        cr_assert_eq(a.strides[1], 8);
        cr_assert_eq(a.dtype, NDC_F64, "reserve changed the dtype");
        cr_assert_eq(a.shape[0], 3 + i, "reserve changed the shape");
        size_t n = ndc_array_nbytes(&a);
        th_fill(a.data, n, 500 + (uint64_t)i);
        struct ndc_stat st = th_stat(ch);
        cr_assert_eq(st.ready, 0, "a reserved array is visible before commit");
        cr_assert_eq(st.loaned, 1, "a reservation is not counted as loaned");
        struct ndc_array peek;
        poison(&peek);
        th_expect(ndc_acquire(ch, &peek, 0), -EAGAIN);
        cr_assert(is_poisoned(&peek), "acquire wrote its output on failure");
        th_ok(ndc_commit(ch, &a));

        struct ndc_array r;
        poison(&r);
        th_ok(ndc_acquire(ch, &r, 0));
        cr_assert_eq(r.dtype, NDC_F64);
        cr_assert_eq(r.ndim, 2);
        cr_assert_eq(r.shape[0], 3 + i);
        cr_assert_eq(r.shape[1], 5);
        cr_assert_eq(r.strides[0], 40);
        cr_assert_eq(r.strides[1], 8);
        cr_assert_eq(r.tag, 0xdeadbeefcafe0000ull + (uint64_t)i, "tag not carried unchanged");
        cr_assert_eq(r.seq, (uint64_t)i, "seq %llu, want %d", (unsigned long long)r.seq, i);
        cr_assert(th_check(r.data, n, 500 + (uint64_t)i), "payload %d differs", i);
        th_ok(ndc_release(ch, &r));
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.free, 3);
    cr_assert_eq(st.sent, 20);
    cr_assert_eq(st.received, 20);
    ndc_free(ch);
}

Test(chan, seq_follows_commit_order, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    struct ndc_array a[3];
    for (int i = 0; i < 3; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].dtype = NDC_U8;
        a[i].ndim = 1;
        a[i].shape[0] = 100 + i;
        a[i].tag = 10 + (uint64_t)i;
        th_ok(ndc_reserve(ch, &a[i], 0));
        th_fill(a[i].data, 100 + (size_t)i, 90 + (uint64_t)i);
    }
    cr_assert(a[0].data != a[1].data && a[1].data != a[2].data && a[0].data != a[2].data,
              "two reservations share a slot");
    /* Commit 2, 0, 1: that is the receive order, with seq 0, 1, 2. */
    int order[] = { 2, 0, 1 };
    for (int k = 0; k < 3; k++)
        th_ok(ndc_commit(ch, &a[order[k]]));
    for (int k = 0; k < 3; k++) {
        int i = order[k];
        int64_t shape[] = { 100 + i };
        expect_filled(ch, NDC_U8, 1, shape, 10 + (uint64_t)i, 90 + (uint64_t)i, (uint64_t)k);
    }
    ndc_free(ch);
}

Test(chan, several_loans_any_order, .timeout = 10)
{
    enum { N = 5 };
    ndc_chan *ch = th_chan(N, 8192);
    int64_t shape[] = { 7, 9 };
    for (int i = 0; i < N; i++)
        send_filled(ch, NDC_I32, 2, shape, (uint64_t)i, 3000 + (uint64_t)i);
    struct ndc_array l[N];
    for (int i = 0; i < N; i++) {
        th_ok(ndc_acquire(ch, &l[i], 0));
        cr_assert_eq(l[i].seq, (uint64_t)i);
        cr_assert_eq(l[i].tag, (uint64_t)i);
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.loaned, N, "loaned %u, want %d", st.loaned, N);
    cr_assert_eq(st.free, 0);
    /* All loans stay valid and distinct while held together. */
    for (int i = 0; i < N; i++)
        cr_assert(th_check(l[i].data, 7 * 9 * 4, 3000 + (uint64_t)i), "loan %d corrupted", i);
    int rel[] = { 3, 0, 4, 1, 2 };
    for (int k = 0; k < N; k++) {
        th_ok(ndc_release(ch, &l[rel[k]]));
        st = th_stat(ch);
        cr_assert_eq(st.free, (uint32_t)k + 1);
        for (int j = k + 1; j < N; j++)   /* the others are untouched */
            cr_assert(th_check(l[rel[j]].data, 7 * 9 * 4, 3000 + (uint64_t)rel[j]),
                      "loan %d corrupted after releasing %d", rel[j], rel[k]);
    }
    /* The freed slots are reused and still deliver in order. */
    for (int i = 0; i < N; i++)
        send_filled(ch, NDC_I32, 2, shape, 100 + (uint64_t)i, 4000 + (uint64_t)i);
    for (int i = 0; i < N; i++)
        expect_filled(ch, NDC_I32, 2, shape, 100 + (uint64_t)i, 4000 + (uint64_t)i,
                      (uint64_t)(N + i));
    ndc_free(ch);
}

Test(chan, refill_after_loans, .timeout = 10)
{
    enum { N = 4 };
    ndc_chan *ch = th_chan(N, 8192);
    int64_t shape[] = { 33 };
    uint64_t seq = 0;
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < N; i++)
            send_filled(ch, NDC_C64, 1, shape, (uint64_t)(round * N + i),
                        (uint64_t)(round * N + i));
        int64_t big[] = { 1 };
        struct ndc_array x = mkarr(NDC_U8, 1, big, "z", 0);
        th_expect(ndc_send(ch, &x, 0), -EAGAIN);
        for (int i = 0; i < N; i++)
            expect_filled(ch, NDC_C64, 1, shape, (uint64_t)(round * N + i),
                          (uint64_t)(round * N + i), seq++);
    }
    ndc_free(ch);
}

/* ---- ndc_send from strided views ---------------------------------------- */

struct view_case {
    int ndim;
    int64_t shape[3];
    int64_t strides[3];   /* in elements */
    int64_t offset;       /* in elements */
    int byte_skew;        /* extra bytes: unaligned data */
};

/* Views into a 16 x 12 base array. */
static const struct view_case view_cases[] = {
    { 2, { 16, 6 }, { 12, 2 }, 0, 0 },          /* every other column */
    { 2, { 16, 12 }, { -12, 1 }, 15 * 12, 0 },  /* rows reversed */
    { 2, { 16, 12 }, { -12, -1 }, 16 * 12 - 1, 0 }, /* both reversed */
    { 2, { 5, 12 }, { 0, 1 }, 3 * 12, 0 },      /* a row broadcast */
    { 2, { 4, 4 }, { 0, 0 }, 7, 0 },            /* a scalar broadcast */
    { 2, { 12, 16 }, { 1, 12 }, 0, 0 },         /* transposed */
    { 3, { 2, 4, 3 }, { 96, -12, 3 }, 3 * 12, 0 }, /* 3-d, mixed signs */
    { 1, { 10 }, { -3 }, 30, 0 },               /* negative step 3 */
    { 3, { 3, 1, 4 }, { 24, 5, 0 }, 1, 0 },     /* broadcast inner, extent-1 dim */
    { 2, { 8, 6 }, { 24, 2 }, 1, 1 },           /* unaligned data */
    { 2, { 16, 0 }, { 12, 1 }, 0, 0 },          /* empty view */
};
#define N_VIEWS (int)(sizeof view_cases / sizeof view_cases[0])

struct view_param { int dtype; int vcase; };

ParameterizedTestParameters(chan, send_views)
{
    static struct view_param p[4 * N_VIEWS];
    static const int dts[] = { NDC_U8, NDC_I16, NDC_F64, NDC_C128 };
    size_t n = 0;
    for (int d = 0; d < 4; d++)
        for (int v = 0; v < N_VIEWS; v++)
            p[n++] = (struct view_param){ dts[d], v };
    return cr_make_param_array(struct view_param, p, n);
}

static void gather(const struct ndc_array *v, void *out)
{
    size_t item = ndc_dtype_size(v->dtype);
    size_t n = ndc_array_nbytes(v) / item;
    int64_t idx[NDC_MAX_DIMS] = { 0 };
    char *o = out;
    for (size_t k = 0; k < n; k++) {
        const char *p = v->data;
        for (int d = 0; d < v->ndim; d++)
            p += idx[d] * v->strides[d];
        memcpy(o + k * item, p, item);
        for (int d = v->ndim - 1; d >= 0; d--) {
            if (++idx[d] < v->shape[d])
                break;
            idx[d] = 0;
        }
    }
}

ParameterizedTest(struct view_param *p, chan, send_views, .timeout = 10)
{
    const struct view_case *vc = &view_cases[p->vcase];
    enum ndc_dtype t = (enum ndc_dtype)p->dtype;
    int64_t item = (int64_t)ndc_dtype_size(t);
    size_t base_bytes = (size_t)(16 * 12 * item) + 16;
    unsigned char *base = malloc(base_bytes);
    th_fill(base, base_bytes, (uint64_t)(p->dtype * 100 + p->vcase));

    struct ndc_array v;
    memset(&v, 0, sizeof v);
    v.dtype = t;
    v.ndim = vc->ndim;
    v.data = base + vc->offset * item + vc->byte_skew;
    v.tag = 0x5000 + (uint64_t)p->vcase;
    for (int d = 0; d < vc->ndim; d++) {
        v.shape[d] = vc->shape[d];
        v.strides[d] = vc->strides[d] * item;
    }
    size_t n = ndc_array_nbytes(&v);
    unsigned char *want = malloc(n + 1);
    gather(&v, want);
    const struct ndc_array v_before = v;
    unsigned char *base_copy = malloc(base_bytes);
    memcpy(base_copy, base, base_bytes);

    ndc_chan *ch = th_chan(2, 1 << 16);
    /* some cases are deliberate broadcasts (every stride zero) */
    th_ok(ndc_send_flags(ch, &v, 0, NDC_SEND_BROADCAST));
    th_ok(ndc_send_flags(ch, &v, 0, NDC_SEND_BROADCAST));
    cr_assert(memcmp(&v, &v_before, sizeof v) == 0, "ndc_send modified its input array");
    cr_assert(memcmp(base, base_copy, base_bytes) == 0, "ndc_send wrote to the source data");

    /* Copy path: arrives C-contiguous, exact. */
    unsigned char *got = malloc(n + 64);
    memset(got, 0x77, n + 64);
    struct ndc_array r;
    poison(&r);
    r.data = got;
    th_ok(ndc_recv(ch, &r, n + 64, 0));
    cr_assert_eq(r.data, got, "ndc_recv changed a->data");
    cr_assert_eq(r.ndim, vc->ndim);
    for (int d = 0; d < vc->ndim; d++)
        cr_assert_eq(r.shape[d], vc->shape[d]);
    assert_c_strides(&r);
    cr_assert_eq(r.tag, v.tag);
    cr_assert_eq(r.seq, 0);
    cr_assert(memcmp(got, want, n) == 0, "%s view %d: ndc_recv bytes differ from the view",
              ndc_dtype_name(t), p->vcase);
    for (size_t i = n; i < n + 64; i++)
        cr_assert_eq(got[i], 0x77, "ndc_recv wrote past the array's %zu bytes", n);

    /* Zero-copy read of the same: identical, and C strides. */
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.seq, 1);
    assert_c_strides(&r);
    cr_assert_eq(ndc_array_nbytes(&r), n);
    cr_assert(n == 0 || memcmp(r.data, want, n) == 0, "acquired bytes differ from the view");
    th_ok(ndc_release(ch, &r));
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.bytes_sent, 2 * n, "bytes_sent %llu, want %zu",
                 (unsigned long long)st.bytes_sent, 2 * n);
    ndc_free(ch);
    free(got);
    free(want);
    free(base_copy);
    free(base);
}

/* ---- ndc_recv into a small buffer: -EMSGSIZE keeps the array ------------- */

Test(chan, recv_too_small_keeps_array, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    int64_t shape[] = { 4, 4 };
    send_filled(ch, NDC_F64, 2, shape, 9, 900);
    int64_t shape2[] = { 3 };
    send_filled(ch, NDC_I8, 1, shape2, 10, 901);

    unsigned char buf[256];
    memset(buf, 0x5a, sizeof buf);
    for (int attempt = 0; attempt < 3; attempt++) {
        struct ndc_array r;
        poison(&r);
        r.data = buf;
        int64_t t0 = th_now_ns();
        th_expect(ndc_recv(ch, &r, 127, attempt == 2 ? NDC_FOREVER : 0), -EMSGSIZE);
        cr_assert_lt(elapsed_since(t0), SEC, "-EMSGSIZE took a second");
        cr_assert_eq(r.data, buf, "-EMSGSIZE changed a->data");
        cr_assert_eq(r.dtype, NDC_F64);
        cr_assert_eq(r.ndim, 2);
        cr_assert_eq(r.shape[0], 4);
        cr_assert_eq(r.shape[1], 4);
        cr_assert_eq(r.tag, 9);
        cr_assert_eq(r.seq, 0, "attempt %d: seq %llu, want the kept array's 0", attempt,
                     (unsigned long long)r.seq);
        cr_assert_eq(ndc_array_nbytes(&r), 128, "nbytes of the reported shape: %zu",
                     ndc_array_nbytes(&r));
        for (size_t i = 0; i < sizeof buf; i++)
            cr_assert_eq(buf[i], 0x5a, "-EMSGSIZE wrote into the caller's buffer");
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, 2);
    /* A big enough buffer now gets that same array. */
    struct ndc_array r;
    poison(&r);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, 128, 0));
    cr_assert_eq(r.seq, 0);
    cr_assert_eq(r.tag, 9);
    cr_assert(th_check(buf, 128, 900), "the kept array's bytes differ");
    cr_assert_eq(buf[128], 0x5a, "ndc_recv wrote past 128 bytes");
    /* Then the next one. */
    poison(&r);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, sizeof buf, 0));
    cr_assert_eq(r.seq, 1);
    cr_assert_eq(r.tag, 10);
    cr_assert(th_check(buf, 3, 901));
    th_expect(ndc_recv(ch, &r, sizeof buf, 0), -EAGAIN);
    st = th_stat(ch);
    cr_assert_eq(st.free, 4, "a slot leaked after -EMSGSIZE");
    cr_assert_eq(st.received, 2);
    ndc_free(ch);
}

Test(chan, recv_too_small_then_acquire, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    int64_t shape[] = { 2, 3, 5 };
    send_filled(ch, NDC_U16, 3, shape, 21, 2100);
    send_filled(ch, NDC_U16, 3, shape, 22, 2200);
    unsigned char buf[8];
    struct ndc_array r;
    poison(&r);
    r.data = buf;
    th_expect(ndc_recv(ch, &r, sizeof buf, 0), -EMSGSIZE);
    cr_assert_eq(r.seq, 0);
    expect_filled(ch, NDC_U16, 3, shape, 21, 2100, 0);
    expect_filled(ch, NDC_U16, 3, shape, 22, 2200, 1);
    /* Capacity 0 with a valid pointer: an empty array fits, others do not. */
    int64_t z[] = { 0, 4 };
    send_filled(ch, NDC_F32, 2, z, 23, 0);
    poison(&r);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, 0, 0));
    cr_assert_eq(r.seq, 2);
    cr_assert_eq(r.shape[0], 0);
    cr_assert_eq(r.shape[1], 4);
    ndc_free(ch);
}

/* ---- -E2BIG, and the largest array that fits ----------------------------- */

Test(chan, too_big_before_anything, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct ndc_stat st0 = th_stat(ch);
    int64_t big[] = { 513 };   /* 4104 bytes of float64 */
    double *buf = calloc(513, sizeof *buf);
    struct ndc_array a = mkarr(NDC_F64, 1, big, buf, 1);
    th_expect(ndc_send(ch, &a, 0), -E2BIG);
    th_expect(ndc_send(ch, &a, NDC_FOREVER), -E2BIG);
    struct ndc_array r;
    poison(&r);
    r.dtype = NDC_F64;
    r.ndim = 1;
    r.shape[0] = 513;
    r.tag = 0;
    struct ndc_array r0 = r;
    th_expect(ndc_reserve(ch, &r, 0), -E2BIG);
    cr_assert(memcmp(&r, &r0, sizeof r) == 0, "ndc_reserve wrote its output on -E2BIG");
    struct ndc_stat st1 = th_stat(ch);
    cr_assert(memcmp(&st0, &st1, sizeof st0) == 0,
              "-E2BIG changed the channel's state (sent %llu, free %u)",
              (unsigned long long)st1.sent, st1.free);

    /* Checked before waiting: on a full channel, NDC_FOREVER returns at once. */
    int64_t one[] = { 1 };
    send_filled(ch, NDC_F64, 1, one, 1, 1);
    send_filled(ch, NDC_F64, 1, one, 2, 2);
    int64_t t0 = th_now_ns();
    th_expect(ndc_send(ch, &a, NDC_FOREVER), -E2BIG);
    poison(&r);
    r.dtype = NDC_U8;
    r.ndim = 2;
    r.shape[0] = 4097;
    r.shape[1] = 1;
    th_expect(ndc_reserve(ch, &r, NDC_FOREVER), -E2BIG);
    cr_assert_lt(elapsed_since(t0), SEC, "-E2BIG waited for a slot first");
    /* Overflowing shapes are not E2BIG by accident of wrap-around. */
    poison(&r);
    r.dtype = NDC_U8;
    r.ndim = 4;
    r.shape[0] = r.shape[1] = r.shape[2] = r.shape[3] = 1 << 16;   /* 2^64: wraps to 0 */
    int rr = ndc_reserve(ch, &r, 0);
    cr_assert(rr == -E2BIG || rr == -EINVAL || rr == -EOVERFLOW,
              "a 2^64-byte array reserved: %d (%s)", rr, ndc_strerror(rr));
    expect_filled(ch, NDC_F64, 1, one, 1, 1, 0);
    expect_filled(ch, NDC_F64, 1, one, 2, 2, 1);
    free(buf);
    ndc_free(ch);
}

Test(chan, largest_that_fits, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    int64_t s1[] = { 4096 };
    send_filled(ch, NDC_U8, 1, s1, 1, 41);
    expect_filled(ch, NDC_U8, 1, s1, 1, 41, 0);
    int64_t s2[] = { 8, 4, 16 };
    send_filled(ch, NDC_F64, 3, s2, 2, 42);
    expect_filled(ch, NDC_F64, 3, s2, 2, 42, 1);
    /* In place: the whole slot is writable. */
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    a.dtype = NDC_C128;
    a.ndim = 1;
    a.shape[0] = 256;
    a.tag = 3;
    th_ok(ndc_reserve(ch, &a, 0));
    th_fill(a.data, 4096, 43);
    th_ok(ndc_commit(ch, &a));
    expect_filled(ch, NDC_C128, 1, (int64_t[]){ 256 }, 3, 43, 2);
    ndc_free(ch);

    /* A slot_bytes that is not a page multiple is honoured to the byte. */
    ch = th_chan(2, 5000);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.slot_bytes, 5000, "slot_bytes %llu, want 5000",
                 (unsigned long long)st.slot_bytes);
    int64_t ok[] = { 5000 }, bad[] = { 5001 };
    send_filled(ch, NDC_U8, 1, ok, 4, 44);
    char *buf = calloc(1, 5001);
    struct ndc_array b = mkarr(NDC_U8, 1, bad, buf, 0);
    th_expect(ndc_send(ch, &b, 0), -E2BIG);
    expect_filled(ch, NDC_U8, 1, ok, 4, 44, 0);
    free(buf);
    ndc_free(ch);
}

Test(chan, commit_may_shrink_not_grow, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    a.dtype = NDC_F64;
    a.ndim = 1;
    a.shape[0] = 512;
    a.tag = 7;
    th_ok(ndc_reserve(ch, &a, 0));
    a.shape[0] = 513;
    th_expect(ndc_commit(ch, &a), -E2BIG);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.loaned, 1, "the slot must stay reserved after -E2BIG");
    cr_assert_eq(st.ready, 0);
    /* Shrink it and reshape: committed as described at commit time. */
    a.ndim = 2;
    a.shape[0] = 10;
    a.shape[1] = 3;
    a.strides[0] = 24;
    a.strides[1] = 8;
    a.tag = 8;
    th_fill(a.data, 240, 77);
    th_ok(ndc_commit(ch, &a));
    expect_filled(ch, NDC_F64, 2, (int64_t[]){ 10, 3 }, 8, 77, 0);
    ndc_free(ch);
}

/* ---- timeouts ------------------------------------------------------------- */

Test(chan, timeout_zero_is_eagain, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct ndc_array r;
    unsigned char buf[64];
    poison(&r);
    int64_t t0 = th_now_ns();
    th_expect(ndc_acquire(ch, &r, 0), -EAGAIN);
    cr_assert(is_poisoned(&r), "ndc_acquire wrote its output on -EAGAIN");
    r.data = buf;
    th_expect(ndc_recv(ch, &r, sizeof buf, 0), -EAGAIN);
    /* Full channel: senders too. */
    int64_t s[] = { 8 };
    send_filled(ch, NDC_U8, 1, s, 0, 0);
    send_filled(ch, NDC_U8, 1, s, 1, 1);
    struct ndc_array a = mkarr(NDC_U8, 1, s, buf, 2);
    th_expect(ndc_send(ch, &a, 0), -EAGAIN);
    struct ndc_array w;
    poison(&w);
    w.dtype = NDC_U8;
    w.ndim = 1;
    w.shape[0] = 8;
    w.tag = 0;
    struct ndc_array w0 = w;
    th_expect(ndc_reserve(ch, &w, 0), -EAGAIN);
    cr_assert(memcmp(&w, &w0, sizeof w) == 0, "ndc_reserve wrote its output on -EAGAIN");
    cr_assert_lt(elapsed_since(t0), SEC / 2, "timeout 0 waited");
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, 2, "a failed send was counted");
    cr_assert_eq(st.ready, 2);
    ndc_free(ch);
}

Test(chan, short_timeout_expires, .timeout = 10)
{
    ndc_chan *ch = th_chan(1, 4096);
    const int64_t tmo[] = { 1 * MS, 20 * MS, 150 * MS };
    for (int i = 0; i < 3; i++) {
        struct ndc_array r;
        poison(&r);
        int64_t t0 = th_now_ns();
        th_expect(ndc_acquire(ch, &r, tmo[i]), -ETIMEDOUT);
        int64_t el = elapsed_since(t0);
        cr_assert_geq(el, tmo[i], "acquire timed out after %lld ns < %lld", (long long)el,
                      (long long)tmo[i]);
        cr_assert_lt(el, tmo[i] + 2 * SEC, "acquire overslept: %lld ns", (long long)el);
        cr_assert(is_poisoned(&r));
        unsigned char buf[16];
        r.data = buf;
        t0 = th_now_ns();
        th_expect(ndc_recv(ch, &r, sizeof buf, tmo[i]), -ETIMEDOUT);
        cr_assert_geq(elapsed_since(t0), tmo[i]);
    }
    int64_t s[] = { 3 };
    send_filled(ch, NDC_U8, 1, s, 0, 0);
    for (int i = 0; i < 3; i++) {
        struct ndc_array a = mkarr(NDC_U8, 1, s, "abc", 1);
        int64_t t0 = th_now_ns();
        th_expect(ndc_send(ch, &a, tmo[i]), -ETIMEDOUT);
        int64_t el = elapsed_since(t0);
        cr_assert_geq(el, tmo[i], "send timed out after %lld ns < %lld", (long long)el,
                      (long long)tmo[i]);
        t0 = th_now_ns();
        th_expect(ndc_reserve(ch, &a, tmo[i]), -ETIMEDOUT);
        cr_assert_geq(elapsed_since(t0), tmo[i]);
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.receivers_waiting, 0, "a timed-out receiver still counted as waiting");
    cr_assert_eq(st.senders_waiting, 0, "a timed-out sender still counted as waiting");
    cr_assert_eq(st.sent, 1);
    ndc_free(ch);
}

/* ---- threads: waiting, waking, counting ----------------------------------- */

struct waiter {
    ndc_chan *ch;
    int op;           /* 0 acquire, 1 reserve, 2 recv */
    int64_t timeout;
    _Atomic int done;
    int rc;
    int64_t returned_at;
    struct ndc_array a;
    unsigned char buf[64];
};

static void *waiter_main(void *p)
{
    struct waiter *w = p;
    if (w->op == 0)
        w->rc = ndc_acquire(w->ch, &w->a, w->timeout);
    else if (w->op == 1)
        w->rc = ndc_reserve(w->ch, &w->a, w->timeout);
    else {
        w->a.data = w->buf;
        w->rc = ndc_recv(w->ch, &w->a, sizeof w->buf, w->timeout);
    }
    w->returned_at = th_now_ns();
    atomic_store(&w->done, 1);
    return NULL;
}

static void start_waiter(pthread_t *t, struct waiter *w, ndc_chan *ch, int op)
{
    memset(w, 0, sizeof *w);
    w->ch = ch;
    w->op = op;
    w->timeout = NDC_FOREVER;
    w->rc = 1;
    if (op == 1) {
        w->a.dtype = NDC_U8;
        w->a.ndim = 1;
        w->a.shape[0] = 16;
        w->a.tag = 99;
    }
    cr_assert_eq(pthread_create(t, NULL, waiter_main, w), 0);
}

/* Poll ndc_stat until field >= want or 3 s pass. */
#define WAIT_STAT(ch, field, want)                                                           \
    do {                                                                                     \
        int64_t d_ = th_now_ns() + 3 * SEC;                                                  \
        struct ndc_stat s_;                                                                  \
        for (;;) {                                                                           \
            s_ = th_stat(ch);                                                                \
            if (s_.field >= (want) || th_now_ns() > d_)                                      \
                break;                                                                       \
            usleep(1000);                                                                    \
        }                                                                                    \
        cr_assert_eq(s_.field, (want), #field " = %u, want %u", s_.field, (unsigned)(want)); \
    } while (0)

Test(chan, waiters_counted_and_woken, .timeout = 15)
{
    ndc_chan *ch = th_chan(2, 4096);
    pthread_t t1, t2;
    struct waiter w1, w2;
    start_waiter(&t1, &w1, ch, 0);
    start_waiter(&t2, &w2, ch, 2);
    WAIT_STAT(ch, receivers_waiting, 2);
    cr_assert_eq(atomic_load(&w1.done) + atomic_load(&w2.done), 0, "a waiter returned early");
    int64_t s[] = { 5 };
    send_filled(ch, NDC_U8, 1, s, 1, 1);
    send_filled(ch, NDC_U8, 1, s, 2, 2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    th_ok(w1.rc);
    th_ok(w2.rc);
    /* Each got one of the two, once. */
    cr_assert(w1.a.seq + w2.a.seq == 1 && w1.a.tag + w2.a.tag == 3,
              "two receivers got seq %llu and %llu", (unsigned long long)w1.a.seq,
              (unsigned long long)w2.a.seq);
    const void *d2 = w2.buf;
    cr_assert(th_check(d2, 5, w2.a.tag), "recv payload wrong");
    cr_assert(th_check(w1.a.data, 5, w1.a.tag), "acquired payload wrong");
    th_ok(ndc_release(ch, &w1.a));
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.receivers_waiting, 0);

    /* Backpressure: a full channel puts a sender to sleep, a release wakes it. */
    send_filled(ch, NDC_U8, 1, s, 3, 3);
    send_filled(ch, NDC_U8, 1, s, 4, 4);
    start_waiter(&t1, &w1, ch, 1);
    WAIT_STAT(ch, senders_waiting, 1);
    cr_assert_eq(atomic_load(&w1.done), 0, "the sender did not wait on a full channel");
    expect_filled(ch, NDC_U8, 1, s, 3, 3, 2);
    pthread_join(t1, NULL);
    th_ok(w1.rc);
    memset(w1.a.data, 0xab, 16);
    th_ok(ndc_commit(ch, &w1.a));
    st = th_stat(ch);
    cr_assert_eq(st.senders_waiting, 0);
    expect_filled(ch, NDC_U8, 1, s, 4, 4, 3);
    struct ndc_array r;
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.tag, 99);
    cr_assert_eq(r.seq, 4);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(((unsigned char *)r.data)[i], 0xab);
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
}

/* ---- end of stream --------------------------------------------------------- */

Test(chan, close_drains_then_epipe, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    int64_t s[] = { 6, 2 };
    for (int i = 0; i < 3; i++)
        send_filled(ch, NDC_I64, 2, s, (uint64_t)i, 70 + (uint64_t)i);
    th_ok(ndc_close(ch));
    th_ok(ndc_close(ch));   /* twice is harmless */
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.closed, 1, "closed = %u", st.closed);
    cr_assert_eq(st.ready, 3, "close dropped arrays");

    /* Senders: -EPIPE at once, even with NDC_FOREVER. */
    unsigned char buf[96] = { 0 };
    struct ndc_array a = mkarr(NDC_I64, 2, s, buf, 9);
    th_expect(ndc_send(ch, &a, NDC_FOREVER), -EPIPE);
    struct ndc_array w;
    memset(&w, 0, sizeof w);
    w.dtype = NDC_U8;
    w.ndim = 0;
    th_expect(ndc_reserve(ch, &w, NDC_FOREVER), -EPIPE);

    /* Receivers: everything sent before, in order, then -EPIPE. */
    expect_filled(ch, NDC_I64, 2, s, 0, 70, 0);
    struct ndc_array r;
    r.data = buf;
    th_ok(ndc_recv(ch, &r, sizeof buf, 0));
    cr_assert_eq(r.seq, 1);
    cr_assert(th_check(buf, 96, 71));
    expect_filled(ch, NDC_I64, 2, s, 2, 72, 2);
    int64_t t0 = th_now_ns();
    th_expect(ndc_acquire(ch, &r, NDC_FOREVER), -EPIPE);
    th_expect(ndc_acquire(ch, &r, 0), -EPIPE);
    r.data = buf;
    th_expect(ndc_recv(ch, &r, sizeof buf, NDC_FOREVER), -EPIPE);
    cr_assert_lt(elapsed_since(t0), SEC);
    st = th_stat(ch);
    cr_assert_eq(st.sent, 3);
    cr_assert_eq(st.received, 3);
    cr_assert_eq(st.free, 4);
    ndc_free(ch);
    th_expect(ndc_close(NULL), -EINVAL);
}

Test(chan, close_wakes_waiters, .timeout = 15)
{
    ndc_chan *ch = th_chan(1, 4096);
    pthread_t t[3];
    struct waiter w[3];
    start_waiter(&t[0], &w[0], ch, 0);
    start_waiter(&t[1], &w[1], ch, 2);
    WAIT_STAT(ch, receivers_waiting, 2);
    int64_t t0 = th_now_ns();
    th_ok(ndc_close(ch));
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        th_expect(w[i].rc, -EPIPE);
        cr_assert_lt(w[i].returned_at - t0, SEC, "close took %lld ns to wake a receiver",
                     (long long)(w[i].returned_at - t0));
    }
    ndc_free(ch);

    /* A sender asleep on a full channel is woken with -EPIPE too. */
    ch = th_chan(1, 4096);
    int64_t s[] = { 1 };
    send_filled(ch, NDC_U8, 1, s, 0, 0);
    start_waiter(&t[2], &w[2], ch, 1);
    WAIT_STAT(ch, senders_waiting, 1);
    t0 = th_now_ns();
    th_ok(ndc_close(ch));
    pthread_join(t[2], NULL);
    th_expect(w[2].rc, -EPIPE);
    cr_assert_lt(w[2].returned_at - t0, SEC);
    /* The array sent before the close is still there. */
    expect_filled(ch, NDC_U8, 1, s, 0, 0, 0);
    struct ndc_array r;
    th_expect(ndc_acquire(ch, &r, 0), -EPIPE);
    ndc_free(ch);
}

Test(chan, commit_after_close, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    int64_t s[] = { 4 };
    send_filled(ch, NDC_U32, 1, s, 1, 11);
    struct ndc_array a;
    memset(&a, 0, sizeof a);
    a.dtype = NDC_U32;
    a.ndim = 1;
    a.shape[0] = 4;
    a.tag = 2;
    th_ok(ndc_reserve(ch, &a, 0));
    th_fill(a.data, 16, 12);
    th_ok(ndc_close(ch));
    th_expect(ndc_commit(ch, &a), -EPIPE);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.ready, 1, "the discarded slot was published");
    cr_assert_eq(st.loaned, 0, "the discarded slot is still reserved");
    cr_assert_eq(st.sent, 1);
    expect_filled(ch, NDC_U32, 1, s, 1, 11, 0);
    struct ndc_array r;
    th_expect(ndc_acquire(ch, &r, 0), -EPIPE);
    st = th_stat(ch);
    cr_assert_eq(st.free, 2);
    ndc_free(ch);
}

/* ---- counters ------------------------------------------------------------- */

Test(chan, stat_counters, .timeout = 10)
{
    ndc_chan *ch = th_chan(3, 4096);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.slots, 3);
    cr_assert_eq(st.slot_bytes, 4096);
    int64_t s1[] = { 3 }, s2[] = { 5 };
    send_filled(ch, NDC_F64, 1, s1, 0, 0);   /* 24 bytes */
    send_filled(ch, NDC_F64, 1, s2, 1, 1);   /* 40 bytes */
    st = th_stat(ch);
    cr_assert_eq(st.sent, 2);
    cr_assert_eq(st.bytes_sent, 64, "bytes_sent %llu, want 64",
                 (unsigned long long)st.bytes_sent);
    cr_assert_eq(st.ready, 2);
    cr_assert_eq(st.free, 1);
    cr_assert_eq(st.received, 0);

    struct ndc_array r;
    th_ok(ndc_acquire(ch, &r, 0));
    st = th_stat(ch);
    cr_assert_eq(st.ready, 1);
    cr_assert_eq(st.loaned, 1);
    cr_assert_eq(st.free, 1);
    struct ndc_array w;
    memset(&w, 0, sizeof w);
    w.dtype = NDC_U8;
    w.ndim = 1;
    w.shape[0] = 100;
    th_ok(ndc_reserve(ch, &w, 0));
    st = th_stat(ch);
    cr_assert_eq(st.loaned, 2);
    cr_assert_eq(st.free, 0);
    cr_assert_eq(st.sent, 2, "a reservation counted as sent");
    th_ok(ndc_commit(ch, &w));
    th_ok(ndc_release(ch, &r));
    st = th_stat(ch);
    cr_assert_eq(st.sent, 3);
    cr_assert_eq(st.bytes_sent, 164);
    cr_assert_eq(st.received, 1);
    cr_assert_eq(st.ready, 2);
    cr_assert_eq(st.free, 1);
    cr_assert_eq(st.loaned, 0);
    cr_assert_eq(st.attached, 1);
    cr_assert_eq(st.closed, 0);
    ndc_free(ch);
}

/* ---- receive-only handles ------------------------------------------------- */

static int write_to(void *p)
{
    signal(SIGSEGV, SIG_DFL);
    *(volatile unsigned char *)p = 1;
    return 0;   /* reached only if the write was allowed */
}

static void check_rdonly(ndc_chan *rw, ndc_chan *ro)
{
    int64_t s[] = { 64 };
    unsigned char buf[64] = { 0 };
    struct ndc_array a = mkarr(NDC_U8, 1, s, buf, 0);
    th_expect(ndc_send(ro, &a, 0), -EPERM);
    th_expect(ndc_send(ro, &a, NDC_FOREVER), -EPERM);
    struct ndc_array w;
    poison(&w);
    w.dtype = NDC_U8;
    w.ndim = 1;
    w.shape[0] = 64;
    w.tag = 0;
    struct ndc_array w0 = w;
    th_expect(ndc_reserve(ro, &w, 0), -EPERM);
    cr_assert(memcmp(&w, &w0, sizeof w) == 0, "ndc_reserve wrote its output on -EPERM");
    struct ndc_stat st = th_stat(rw);
    cr_assert_eq(st.sent, 0);
    cr_assert_eq(st.free, st.slots, "-EPERM took a slot");

    send_filled(rw, NDC_U8, 1, s, 5, 555);
    struct ndc_array r;
    th_ok(ndc_acquire(ro, &r, 0));
    cr_assert_eq(r.tag, 5);
    cr_assert(th_check(r.data, 64, 555));
    char perms[5] = "";
    cr_assert_eq(map_perms(r.data, perms), 0, "a->data is not in any mapping");
    cr_assert_eq(perms[1], '-', "the payload is mapped writable (%s) under NDC_RDONLY", perms);
    /* And a write really faults (in a child, so this test survives). */
    pid_t pid = th_fork(write_to, r.data);
    int rc = th_wait(pid, 5000);
    cr_assert_eq(rc, 128 + SIGSEGV, "writing a read-only payload: child status %d", rc);
    cr_assert(th_check(r.data, 64, 555));
    th_ok(ndc_release(ro, &r));
    /* recv works too. */
    send_filled(rw, NDC_U8, 1, s, 6, 666);
    r.data = buf;
    th_ok(ndc_recv(ro, &r, sizeof buf, 0));
    cr_assert(th_check(buf, 64, 666));
}

Test(chan, rdonly_named, .timeout = 15)
{
    const char *name = th_unique_name("ro");
    char n[160];
    snprintf(n, sizeof n, "%s", name);
    ndc_chan *rw = NULL, *ro = NULL;
    struct ndc_chan_opts o = { .slots = 2, .slot_bytes = 4096 };
    th_ok(ndc_create(&rw, n, &o));
    th_ok(ndc_open(&ro, n, NDC_RDONLY));
    th_ok(ndc_unlink(n));
    check_rdonly(rw, ro);
    ndc_free(ro);
    ndc_free(rw);
}

Test(chan, rdonly_fd, .timeout = 15)
{
    ndc_chan *rw = th_chan(2, 4096), *ro = NULL;
    th_ok(ndc_open_fd(&ro, ndc_fd(rw), NDC_RDONLY));
    check_rdonly(rw, ro);
    ndc_free(ro);
    ndc_free(rw);
}

/* ---- empty and 0-d arrays -------------------------------------------------- */

Test(chan, empty_and_scalar, .timeout = 10)
{
    ndc_chan *ch = th_chan(4, 4096);
    /* Zero-size, copy path. */
    int64_t z[] = { 0, 3 };
    float fdummy[1] = { 0 };
    struct ndc_array a = mkarr(NDC_F32, 2, z, fdummy, 31);
    th_ok(ndc_send(ch, &a, 0));
    /* 0-d, copy path. */
    double x = 3.25;
    struct ndc_array s = mkarr(NDC_F64, 0, NULL, &x, 32);
    th_ok(ndc_send(ch, &s, 0));
    /* Zero-size and 0-d, in place. */
    struct ndc_array w;
    memset(&w, 0, sizeof w);
    w.dtype = NDC_C128;
    w.ndim = 1;
    w.shape[0] = 0;
    w.tag = 33;
    th_ok(ndc_reserve(ch, &w, 0));
    th_ok(ndc_commit(ch, &w));
    memset(&w, 0, sizeof w);
    w.dtype = NDC_I16;
    w.ndim = 0;
    w.tag = 34;
    th_ok(ndc_reserve(ch, &w, 0));
    cr_assert_not_null(w.data);
    *(int16_t *)w.data = -1234;
    th_ok(ndc_commit(ch, &w));

    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, 4);
    cr_assert_eq(st.bytes_sent, 10, "bytes_sent %llu, want 0 + 8 + 0 + 2",
                 (unsigned long long)st.bytes_sent);

    struct ndc_array r;
    unsigned char buf[32];
    memset(buf, 0x11, sizeof buf);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, 0, 0));
    cr_assert_eq(r.dtype, NDC_F32);
    cr_assert_eq(r.ndim, 2);
    cr_assert_eq(r.shape[0], 0);
    cr_assert_eq(r.shape[1], 3);
    cr_assert_eq(r.tag, 31);
    cr_assert_eq(r.seq, 0);
    cr_assert_eq(buf[0], 0x11, "an empty array wrote bytes");

    r.data = buf;
    th_expect(ndc_recv(ch, &r, 7, 0), -EMSGSIZE);   /* a scalar float64 needs 8 */
    cr_assert_eq(r.ndim, 0);
    cr_assert_eq(ndc_array_nbytes(&r), 8);
    r.data = buf;
    th_ok(ndc_recv(ch, &r, 8, 0));
    cr_assert_eq(r.ndim, 0);
    cr_assert_eq(r.dtype, NDC_F64);
    cr_assert_eq(r.tag, 32);
    cr_assert_eq(r.seq, 1);
    double got;
    memcpy(&got, buf, 8);
    cr_assert_eq(got, 3.25);

    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.dtype, NDC_C128);
    cr_assert_eq(r.ndim, 1);
    cr_assert_eq(r.shape[0], 0);
    cr_assert_eq(r.strides[0], 16);
    cr_assert_eq(r.tag, 33);
    cr_assert_eq(r.seq, 2);
    th_ok(ndc_release(ch, &r));
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(r.ndim, 0);
    cr_assert_eq(r.tag, 34);
    cr_assert_eq(r.seq, 3);
    cr_assert_eq(*(int16_t *)r.data, -1234);
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
}

/* ---- misuse: not a loan, not a reservation, invalid headers --------------- */

Test(chan, release_not_a_loan, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    struct ndc_array r;
    memset(&r, 0, sizeof r);
    th_expect(ndc_release(ch, &r), -EINVAL);
    unsigned char local[64];
    int64_t s[] = { 8 };
    r = mkarr(NDC_U8, 1, s, local, 0);
    th_expect(ndc_release(ch, &r), -EINVAL);

    send_filled(ch, NDC_U8, 1, s, 1, 1);
    th_ok(ndc_acquire(ch, &r, 0));
    struct ndc_array copy = r;
    copy.data = (char *)r.data + 8;   /* inside the slot, not its start */
    th_expect(ndc_release(ch, &copy), -EINVAL);
    th_ok(ndc_release(ch, &r));
    th_expect(ndc_release(ch, &r), -EINVAL);   /* twice */
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.free, 2);
    cr_assert_eq(st.loaned, 0);
    /* A double release must not have duplicated the slot in the free pool. */
    for (int i = 0; i < 2; i++)
        send_filled(ch, NDC_U8, 1, s, 10 + (uint64_t)i, 10 + (uint64_t)i);
    struct ndc_array a = mkarr(NDC_U8, 1, s, local, 0);
    th_expect(ndc_send(ch, &a, 0), -EAGAIN);
    expect_filled(ch, NDC_U8, 1, s, 10, 10, 1);
    expect_filled(ch, NDC_U8, 1, s, 11, 11, 2);
    ndc_free(ch);
}

Test(chan, commit_not_reserved, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    unsigned char local[64];
    int64_t s[] = { 8 };
    struct ndc_array a = mkarr(NDC_U8, 1, s, local, 0);
    th_expect(ndc_commit(ch, &a), -EINVAL);
    a.data = NULL;
    th_expect(ndc_commit(ch, &a), -EINVAL);

    struct ndc_array w;
    memset(&w, 0, sizeof w);
    w.dtype = NDC_U8;
    w.ndim = 1;
    w.shape[0] = 8;
    th_ok(ndc_reserve(ch, &w, 0));
    struct ndc_array off = w;
    off.data = (char *)w.data + 64;
    th_expect(ndc_commit(ch, &off), -EINVAL);
    struct ndc_array bad = w;
    bad.dtype = (enum ndc_dtype)0;
    th_expect(ndc_commit(ch, &bad), -EINVAL);
    bad = w;
    bad.shape[0] = -1;
    th_expect(ndc_commit(ch, &bad), -EINVAL);
    bad = w;
    bad.strides[0] = 2;   /* not C order */
    th_expect(ndc_commit(ch, &bad), -EINVAL);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.ready, 0, "an invalid commit published something");
    cr_assert_eq(st.loaned, 1, "an invalid commit dropped the reservation");
    memset(w.data, 0x42, 8);
    th_ok(ndc_commit(ch, &w));
    th_expect(ndc_commit(ch, &w), -EINVAL);   /* twice */
    st = th_stat(ch);
    cr_assert_eq(st.ready, 1, "a second commit published the slot again");

    /* An acquired loan is not a reservation. */
    struct ndc_array r;
    th_ok(ndc_acquire(ch, &r, 0));
    cr_assert_eq(((unsigned char *)r.data)[7], 0x42);
    th_expect(ndc_commit(ch, &r), -EINVAL);
    th_ok(ndc_release(ch, &r));
    th_expect(ndc_acquire(ch, &r, 0), -EAGAIN);
    ndc_free(ch);
}

Test(chan, invalid_headers_rejected, .timeout = 10)
{
    ndc_chan *ch = th_chan(2, 4096);
    unsigned char local[64] = { 0 };
    struct ndc_array a;
    struct {
        int dtype, ndim;
        int64_t s0;
    } bad[] = { { 0, 1, 4 }, { 16, 1, 4 }, { -1, 1, 4 }, { NDC_U8, -1, 4 },
                { NDC_U8, NDC_MAX_DIMS + 1, 1 }, { NDC_U8, 1, -4 } };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&a, 0, sizeof a);
        a.data = local;
        a.dtype = (enum ndc_dtype)bad[i].dtype;
        a.ndim = bad[i].ndim;
        for (int d = 0; d < NDC_MAX_DIMS; d++) {
            a.shape[d] = 1;
            a.strides[d] = 1;
        }
        a.shape[0] = bad[i].s0;
        int r = ndc_send(ch, &a, 0);
        cr_assert_eq(r, -EINVAL, "case %zu: ndc_send = %d (%s), want -EINVAL", i, r,
                     ndc_strerror(r));
        struct ndc_array w = a;
        r = ndc_reserve(ch, &w, 0);
        cr_assert_eq(r, -EINVAL, "case %zu: ndc_reserve = %d (%s), want -EINVAL", i, r,
                     ndc_strerror(r));
        cr_assert(memcmp(&w, &a, sizeof a) == 0, "case %zu: reserve wrote on failure", i);
    }
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.free, 2);
    cr_assert_eq(st.sent, 0);
    ndc_free(ch);
}

/* ---- memory: untouched capacity is free ----------------------------------- */

Test(chan, huge_channel_is_cheap, .timeout = 20)
{
    long rss0 = th_proc_kb("/proc/self/status", "VmRSS");
    cr_assert_gt(rss0, 0, "cannot read VmRSS");
    ndc_chan *ch = th_chan(8, 1ull << 30);
    long rss1 = th_proc_kb("/proc/self/status", "VmRSS");
    struct stat sb;
    cr_assert_eq(fstat(ndc_fd(ch), &sb), 0);
    cr_assert_geq((uint64_t)sb.st_size, 8ull << 30, "segment of %lld bytes cannot hold 8 GiB",
                  (long long)sb.st_size);
    long long backed = (long long)sb.st_blocks * 512;
    cr_assert_lt(backed, 32ll << 20, "an untouched 8 x 1 GiB channel allocated %lld bytes",
                 backed);
    cr_assert_lt(rss1 - rss0, 32 * 1024, "RSS grew by %ld KiB at create", rss1 - rss0);
    /* Using one small array in it costs a page or so, not a slot. */
    int64_t s[] = { 1000 };
    send_filled(ch, NDC_F64, 1, s, 1, 1);
    expect_filled(ch, NDC_F64, 1, s, 1, 1, 0);
    long rss2 = th_proc_kb("/proc/self/status", "VmRSS");
    cr_assert_lt(rss2 - rss0, 48 * 1024, "RSS grew by %ld KiB after one small array",
                 rss2 - rss0);
    cr_assert_eq(fstat(ndc_fd(ch), &sb), 0);
    cr_assert_lt((long long)sb.st_blocks * 512, 48ll << 20);
    ndc_free(ch);
}

Test(chan, populate_faults_in, .timeout = 20)
{
    struct ndc_chan_opts o = { .slots = 2, .slot_bytes = 1 << 20, .flags = NDC_POPULATE };
    ndc_chan *ch = NULL;
    th_ok(ndc_create(&ch, NULL, &o));
    struct stat sb;
    cr_assert_eq(fstat(ndc_fd(ch), &sb), 0);
    cr_assert_geq((long long)sb.st_blocks * 512, 2ll << 20,
                  "NDC_POPULATE left the payload unallocated (%lld bytes backed)",
                  (long long)sb.st_blocks * 512);
    int64_t s[] = { 1 << 17 };
    send_filled(ch, NDC_F64, 1, s, 1, 1);
    expect_filled(ch, NDC_F64, 1, s, 1, 1, 0);
    ndc_free(ch);
}

Test(chan, hugepages_work_or_fail_clearly, .timeout = 20)
{
    struct ndc_chan_opts o = { .slots = 2, .slot_bytes = 2 << 20, .flags = NDC_HUGEPAGES };
    ndc_chan *ch = NULL;
    int r = ndc_create(&ch, NULL, &o);
    if (r == -ENOMEM) {
        cr_assert_gt(strlen(ndc_last_error()), 0, "-ENOMEM for huge pages without a detail");
        cr_skip_test("no huge pages: %s", ndc_last_error());
    }
    th_ok(r);
    int64_t s[] = { 2 << 20 };
    send_filled(ch, NDC_U8, 1, s, 1, 1);
    expect_filled(ch, NDC_U8, 1, s, 1, 1, 0);
    ndc_free(ch);
}

/* ---- many threads on one handle ------------------------------------------- */

enum { MT_SENDERS = 2, MT_RECEIVERS = 2, MT_PER = 2000 };

struct mt {
    ndc_chan *ch;
    int id;
    int bad;
    size_t n;
    uint64_t tags[MT_SENDERS * MT_PER];
    uint64_t seqs[MT_SENDERS * MT_PER];
};

static void *mt_send(void *p)
{
    struct mt *m = p;
    for (uint64_t c = 0; c < MT_PER; c++) {
        uint64_t tag = ((uint64_t)m->id << 32) | c;
        uint64_t v[8];
        int64_t s[] = { 1 + (int64_t)(c % 8) };
        for (int k = 0; k < 8; k++)
            v[k] = tag ^ ((uint64_t)k * 0x9e3779b97f4a7c15ull);
        struct ndc_array a;
        ndc_array_init(&a, NDC_U64, 1, s, v);
        a.tag = tag;
        int r;
        if (c % 2) {
            r = ndc_send(m->ch, &a, 10 * SEC);
        } else {
            struct ndc_array w = a;
            r = ndc_reserve(m->ch, &w, 10 * SEC);
            if (r == 0) {
                memcpy(w.data, v, (size_t)s[0] * 8);
                r = ndc_commit(m->ch, &w);
            }
        }
        if (r) {
            m->bad = r;
            return NULL;
        }
    }
    return NULL;
}

static void *mt_recv(void *p)
{
    struct mt *m = p;
    for (;;) {
        struct ndc_array a;
        uint64_t buf[8];
        int r;
        if (m->n % 2) {
            a.data = buf;
            r = ndc_recv(m->ch, &a, sizeof buf, 10 * SEC);
        } else {
            r = ndc_acquire(m->ch, &a, 10 * SEC);
        }
        if (r == -EPIPE)
            return NULL;
        if (r) {
            m->bad = r;
            return NULL;
        }
        const uint64_t *v = (m->n % 2) ? buf : a.data;
        uint64_t c = a.tag & 0xffffffffu;
        if (a.dtype != NDC_U64 || a.ndim != 1 || a.shape[0] != 1 + (int64_t)(c % 8))
            m->bad = 1000;
        for (int64_t k = 0; k < a.shape[0] && !m->bad; k++)
            if (v[k] != (a.tag ^ ((uint64_t)k * 0x9e3779b97f4a7c15ull)))
                m->bad = 1001;
        if (!(m->n % 2))
            ndc_release(m->ch, &a);
        if (m->n >= MT_SENDERS * MT_PER) {
            m->bad = 1002;
            return NULL;
        }
        m->tags[m->n] = a.tag;
        m->seqs[m->n] = a.seq;
        m->n++;
    }
}

Test(chan, threads_mpmc_exactly_once, .timeout = 30)
{
    ndc_chan *ch = th_chan(4, 4096);
    static struct mt s[MT_SENDERS], r[MT_RECEIVERS];
    pthread_t ts[MT_SENDERS], tr[MT_RECEIVERS];
    for (int i = 0; i < MT_RECEIVERS; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].ch = ch;
        r[i].id = i;
        pthread_create(&tr[i], NULL, mt_recv, &r[i]);
    }
    for (int i = 0; i < MT_SENDERS; i++) {
        memset(&s[i], 0, sizeof s[i]);
        s[i].ch = ch;
        s[i].id = i;
        pthread_create(&ts[i], NULL, mt_send, &s[i]);
    }
    for (int i = 0; i < MT_SENDERS; i++)
        pthread_join(ts[i], NULL);
    th_ok(ndc_close(ch));
    for (int i = 0; i < MT_RECEIVERS; i++)
        pthread_join(tr[i], NULL);
    for (int i = 0; i < MT_SENDERS; i++)
        cr_assert_eq(s[i].bad, 0, "sender %d failed: %d (%s)", i, s[i].bad,
                     ndc_strerror(s[i].bad));
    for (int i = 0; i < MT_RECEIVERS; i++)
        cr_assert_eq(r[i].bad, 0, "receiver %d failed: %d (%s)", i, r[i].bad,
                     ndc_strerror(r[i].bad));
    /* seq_of[sender][counter]: each exactly once; seqs a permutation of 0..N-1
     * that rises with each sender's counter. */
    enum { N = MT_SENDERS * MT_PER };
    static int64_t seq_of[MT_SENDERS][MT_PER];
    static unsigned char seen_seq[N];
    memset(seq_of, 0xff, sizeof seq_of);
    memset(seen_seq, 0, sizeof seen_seq);
    size_t total = 0;
    for (int i = 0; i < MT_RECEIVERS; i++) {
        for (size_t k = 0; k < r[i].n; k++) {
            uint64_t id = r[i].tags[k] >> 32, c = r[i].tags[k] & 0xffffffffu;
            cr_assert(id < MT_SENDERS && c < MT_PER, "unknown tag %llx",
                      (unsigned long long)r[i].tags[k]);
            cr_assert_eq(seq_of[id][c], -1, "sender %llu array %llu received twice",
                         (unsigned long long)id, (unsigned long long)c);
            cr_assert_lt(r[i].seqs[k], (uint64_t)N, "seq %llu out of range",
                         (unsigned long long)r[i].seqs[k]);
            cr_assert_eq(seen_seq[r[i].seqs[k]], 0, "seq %llu delivered twice",
                         (unsigned long long)r[i].seqs[k]);
            seen_seq[r[i].seqs[k]] = 1;
            seq_of[id][c] = (int64_t)r[i].seqs[k];
            if (k > 0)
                cr_assert_gt(r[i].seqs[k], r[i].seqs[k - 1],
                             "one receiver saw seq %llu after %llu",
                             (unsigned long long)r[i].seqs[k],
                             (unsigned long long)r[i].seqs[k - 1]);
        }
        total += r[i].n;
    }
    cr_assert_eq(total, (size_t)N, "received %zu of %d", total, N);
    for (int id = 0; id < MT_SENDERS; id++)
        for (int c = 1; c < MT_PER; c++)
            cr_assert_gt(seq_of[id][c], seq_of[id][c - 1],
                         "sender %d: array %d has seq %lld before array %d's %lld", id, c,
                         (long long)seq_of[id][c], c - 1, (long long)seq_of[id][c - 1]);
    struct ndc_stat st = th_stat(ch);
    cr_assert_eq(st.sent, (uint64_t)N);
    cr_assert_eq(st.received, (uint64_t)N);
    ndc_free(ch);
}

Test(chan, cancel_returns_the_slot_unpublished, .timeout = 10)
{
    ndc_chan *ch;
    struct ndc_chan_opts o = {.slots = 2, .slot_bytes = 4096};
    th_ok(ndc_create(&ch, NULL, &o));
    struct ndc_array a = {.dtype = NDC_U8, .ndim = 1, .shape = {16}, .tag = 7};
    th_ok(ndc_reserve(ch, &a, 0));
    struct ndc_stat st;
    th_ok(ndc_stat(ch, &st));
    cr_assert_eq(st.loaned, 1);
    th_ok(ndc_cancel(ch, &a));
    th_ok(ndc_stat(ch, &st));
    cr_assert_eq(st.free, 2, "a cancelled slot is free again");
    cr_assert_eq(st.sent, 0, "nothing was published");
    struct ndc_array r;
    th_expect(ndc_acquire(ch, &r, 0), -EAGAIN);
    /* twice, or after a commit, or on a loan: not a reservation any more */
    th_expect(ndc_cancel(ch, &a), -EINVAL);
    th_ok(ndc_reserve(ch, &a, 0));
    th_ok(ndc_commit(ch, &a));
    th_expect(ndc_cancel(ch, &a), -EINVAL);
    th_ok(ndc_acquire(ch, &r, 0));
    th_expect(ndc_cancel(ch, &r), -EINVAL);
    cr_assert_eq(r.seq, 0, "the cancelled reservation took no seq");
    th_ok(ndc_release(ch, &r));
    ndc_free(ch);
}

Test(chan, opts_fields_in_design_order, .timeout = 10)
{
    /* the original contract's order, positionally: slots, slot_bytes, flags (the
     * fields after them are extensions, zero here on purpose) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
    struct ndc_chan_opts o = {2, 4096, NDC_POPULATE};
#pragma GCC diagnostic pop
    ndc_chan *ch;
    th_ok(ndc_create(&ch, NULL, &o));
    struct ndc_stat st;
    th_ok(ndc_stat(ch, &st));
    cr_assert_eq(st.slots, 2);
    cr_assert_eq(st.slot_bytes, 4096);
    ndc_free(ch);
}

/* ---- waiting until drained ------------------------------------------------ */

static int slow_receiver(void *p)
{
    ndc_chan *ch = p;
    for (int i = 0; i < 3; i++) {
        struct ndc_array a;
        CK(ndc_acquire(ch, &a, 5 * SEC) == 0, 1, "acquire %d", i);
        usleep(50 * 1000);
        CK(ndc_release(ch, &a) == 0, 2, "release %d", i);
    }
    return 0;
}

static int take_two_and_die(void *p)
{
    ndc_chan *ch = p;
    struct ndc_array a, b;
    CK(ndc_acquire(ch, &a, 5 * SEC) == 0 && ndc_acquire(ch, &b, 5 * SEC) == 0, 1, "acquire");
    _exit(0);   /* holding both loans */
}

static void send3(ndc_chan *ch)
{
    for (uint64_t t = 0; t < 3; t++) {
        struct ndc_array a;
        int64_t shape[1] = { 4 };
        th_ok(ndc_array_init(&a, NDC_U8, 1, shape, NULL));
        a.tag = t;
        th_ok(ndc_reserve(ch, &a, 0));
        th_ok(ndc_commit(ch, &a));
    }
}

/* JoinableQueue.join(): returns once every array committed before the call
 * has been released, not before. */
Test(drain, waits_for_the_last_release, .timeout = 30)
{
    ndc_chan *ch = th_chan(4, 64);
    th_ok(ndc_wait_drained(ch, 0, 0));   /* nothing sent: drained */
    send3(ch);
    th_expect(ndc_wait_drained(ch, 0, 0), -EAGAIN);
    th_expect(ndc_wait_drained(ch, 0, 20 * MS), -ETIMEDOUT);
    pid_t p = th_fork(slow_receiver, ch);
    int64_t t0 = th_now_ns();
    th_ok(ndc_wait_drained(ch, 0, 5 * SEC));
    int64_t dt = th_now_ns() - t0;
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.free == 4 && st.ready == 0 && st.loaned == 0, "drained, yet free %u ready %u loaned %u", st.free,
              st.ready, st.loaned);
    cr_assert_geq(dt, 140 * MS, "returned after %lld ms; three 50 ms loans take 150", (long long)(dt / MS));
    cr_assert_eq(th_wait(p, 5000), 0);
    th_expect(ndc_wait_drained(ch, 2, 0), -EINVAL);
    th_expect(ndc_wait_drained(ch, 0, -3), -EINVAL);
    th_expect(ndc_wait_drained(NULL, 0, 0), -EINVAL);
    ndc_free(ch);
}

struct closer { ndc_chan *ch; int64_t after; };
static void *close_later(void *p)
{
    struct closer *c = p;
    struct timespec ts = { 0, (long)c->after };
    nanosleep(&ts, NULL);
    ndc_close(c->ch);
    return NULL;
}

/* NDC_DRAIN_CLOSED: also until the stream has ended. */
Test(drain, closed_waits_for_the_end_of_stream, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 64);
    th_ok(ndc_wait_drained(ch, 0, 0));
    th_expect(ndc_wait_drained(ch, NDC_DRAIN_CLOSED, 0), -EAGAIN);
    struct closer c = { ch, 100 * MS };
    pthread_t t;
    pthread_create(&t, NULL, close_later, &c);
    int64_t t0 = th_now_ns();
    th_ok(ndc_wait_drained(ch, NDC_DRAIN_CLOSED, 5 * SEC));
    cr_assert_geq(th_now_ns() - t0, 90 * MS);
    pthread_join(t, NULL);
    ndc_free(ch);
}

/* Arrays left and every receiver dead: -EOWNERDEAD, not forever. */
Test(drain, dead_receivers_are_reported, .timeout = 30)
{
    ndc_chan *ch = th_chan(4, 64);
    send3(ch);
    cr_assert_eq(th_wait(th_fork(take_two_and_die, ch), 5000), 0);
    int64_t t0 = th_now_ns();
    th_expect(ndc_wait_drained(ch, 0, 5 * SEC), -EOWNERDEAD);
    cr_assert_lt(th_now_ns() - t0, 200 * MS);
    struct ndc_stat st = th_stat(ch);
    cr_assert(st.ready == 1 && st.loaned == 0, "the dead receiver's loans came back: ready %u loaned %u",
              st.ready, st.loaned);
    ndc_free(ch);
}
