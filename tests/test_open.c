/*
 * Creating, opening and naming channels, and their options (suite open):
 * defaults, names, missing and bad names, option validation, ndc_open_fd's
 * checks, and the positional order of struct ndc_chan_opts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create, F_GET_SEALS; meson passes it too */
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "chan_helpers.h"

Test(open, create_anonymous_defaults, .timeout = 10)
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

Test(open, create_named, .timeout = 10)
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

Test(open, missing, .timeout = 10)
{
    ndc_chan *ch = (ndc_chan *)0x1;
    th_expect(ndc_open(&ch, th_unique_name("missing"), 0), -ENOENT);
    cr_assert_eq(ch, (ndc_chan *)0x1, "*ch written on failure");
    th_expect(ndc_open(&ch, th_unique_name("missing"), NDC_RDONLY), -ENOENT);
    cr_assert_eq(ch, (ndc_chan *)0x1);
}

Test(open, bad_names, .timeout = 10)
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

Test(open, name_max_allowed, .timeout = 10)
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

Test(open, option_validation, .timeout = 10)
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
    BAD_OPT(o.flags = 1u << 4, "flag bit 4");
    BAD_OPT(o.flags = 1u << 31, "flag bit 31");
    BAD_OPT(o.flags = NDC_RDONLY, "NDC_RDONLY is an open flag, not a create flag");
    BAD_OPT(o.flags = NDC_POPULATE | (1u << 7), "a known and an unknown flag");
    for (int i = 0; i < 6; i++)
        BAD_OPT(o.reserved[i] = 1, "nonzero reserved");
    BAD_OPT(o.reserved[8] = 1u << 31, "nonzero reserved[8] high bit");
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

    /* ndc_open flags: NDC_RDONLY and NDC_SUBSCRIBE only (on a name that exists, so
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
    th_expect(ndc_open(&ch, name, NDC_SUBSCRIBE), -EINVAL);   /* not a broadcast channel */
    cr_assert_eq(ch, (ndc_chan *)0x1);
    th_ok(ndc_unlink(name));
    ndc_free(owner);
}

Test(open, fd_checks, .timeout = 10)
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

Test(open, opts_fields_in_design_order, .timeout = 10)
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
