/*
 * Who may do what to a channel (suite access): a named segment is 0600 and
 * created exclusively, an anonymous one is sealed against resizing, and a
 * receive-only handle (NDC_RDONLY, by name or by fd) reads but cannot send,
 * its payload mapped read-only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "faults_helpers.h"
#include "chan_helpers.h"

/* ---- permissions and seals ----------------------------------------------- */

Test(access, named_segment_is_0600_and_exclusive, .timeout = 30)
{
    const char *name = th_unique_name("perm");
    mode_t old = umask(0);   /* whatever the umask, the mode is the library's */
    ndc_chan *ch = NULL;
    int r = ndc_create(&ch, name, NULL);
    umask(old);
    th_ok(r);
    struct stat st;
    cr_assert_eq(fstat(ndc_fd(ch), &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600, "named segment mode %o, want 0600", st.st_mode & 07777);
    cr_assert_eq(st.st_uid, getuid());
    ndc_chan *again = NULL;
    th_expect(ndc_create(&again, name, NULL), -EEXIST);
    th_ok(ndc_unlink(name));
    ndc_free(ch);
}

Test(access, anonymous_segment_sealed, .timeout = 30)
{
    ndc_chan *ch = th_chan(2, 4096);
    int fd = ndc_fd(ch);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    int seals = fcntl(fd, F_GET_SEALS);
    cr_assert_eq(seals & (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL), F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
                 "seals %#x", seals);
    errno = 0;
    cr_assert_neq(ftruncate(fd, st.st_size / 2), 0, "shrinking the segment worked");
    cr_assert_eq(errno, EPERM);
    errno = 0;
    cr_assert_neq(ftruncate(fd, st.st_size * 2), 0, "growing the segment worked");
    cr_assert_eq(errno, EPERM);
    cr_assert_neq(ftruncate(fd, 0), 0);
    errno = 0;
    cr_assert_neq(fallocate(fd, 0, st.st_size, 4096), 0, "fallocate past the end worked");
    cr_assert_eq(errno, EPERM);
    /* no seal can be added or taken away any more */
    errno = 0;
    cr_assert_neq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), 0, "adding a seal worked");
    cr_assert_eq(errno, EPERM);
    cr_assert_eq(fcntl(fd, F_GET_SEALS), seals);
    /* the same through a descriptor of another process's kind: /proc/self/fd */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int fd2 = open(path, O_RDWR);
    cr_assert_geq(fd2, 0);
    cr_assert_neq(ftruncate(fd2, 4096), 0);
    close(fd2);
    struct stat st2;
    cr_assert_eq(fstat(fd, &st2), 0);
    cr_assert_eq(st2.st_size, st.st_size);
    roundtrip(ch, 1, "after the resize attempts");
    ndc_free(ch);
}

/* ---- receive-only handles ------------------------------------------------- */

static ndc_chan *rdonly_with_loan(struct ndc_array *a, ndc_chan **owner)
{
    ndc_chan *ch = th_chan(2, 4096);
    int rc;
    send_tag(ch, 1, 0, &rc);
    th_ok(rc);
    ndc_chan *ro = NULL;
    th_ok(ndc_open_fd(&ro, ndc_fd(ch), NDC_RDONLY));
    th_ok(ndc_acquire(ro, a, 0));
    cr_assert_eq(a->tag, 1);
    *owner = ch;
    return ro;
}

Test(access, rdonly_handle_reads_but_cannot_send, .timeout = 30)
{
    struct ndc_array a;
    ndc_chan *ch, *ro = rdonly_with_loan(&a, &ch);
    char msg[200];
    cr_assert_eq(tag_check(&a, 64, msg, sizeof msg), 0, "%s", msg);   /* reading works */
    struct ndc_array b;
    tag_array(2, 64, &b, NULL);
    th_expect(ndc_reserve(ro, &b, 0), -EPERM);
    unsigned char buf[64];
    tag_array(2, 64, &b, buf);
    th_expect(ndc_send(ro, &b, 0), -EPERM);
    th_ok(ndc_release(ro, &a));
    ndc_free(ro);
    ndc_free(ch);
}

/* A receive-only handle's payload is mapped read-only: writing faults. */
Test(access, rdonly_payload_write_faults, .timeout = 30, .signal = SIGSEGV)
{
    struct ndc_array a;
    ndc_chan *ch, *ro = rdonly_with_loan(&a, &ch);
    (void)ch;
    (void)ro;
    ((volatile unsigned char *)a.data)[0] = 0x42;
    cr_assert_fail("writing into a receive-only loan did not fault");
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

Test(access, rdonly_named, .timeout = 15)
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

Test(access, rdonly_fd, .timeout = 15)
{
    ndc_chan *rw = th_chan(2, 4096), *ro = NULL;
    th_ok(ndc_open_fd(&ro, ndc_fd(rw), NDC_RDONLY));
    check_rdonly(rw, ro);
    ndc_free(ro);
    ndc_free(rw);
}
