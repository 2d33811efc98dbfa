/* Helpers shared by the fault tests: see faults_helpers.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "helpers.h"
#include "faults_helpers.h"

uint64_t rnd(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return th_mix(*s);
}

/* /proc state letter of pid ('S' asleep, 'R', 'Z', ...), '?' if unknown. */
char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] ? p[2] : '?';
}

void seg_map(struct seg *s, const ndc_chan *ch)
{
    int fd = ndc_fd(ch);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    void *head = mmap(NULL, sizeof(struct ndc__ctrl), PROT_READ, MAP_SHARED, fd, 0);
    cr_assert_neq(head, MAP_FAILED);
    const struct ndc__ctrl *h = head;
    cr_assert_eq(ndc__geometry(&s->g, h->nslots, h->slot_bytes, h->flags), 0);
    munmap(head, sizeof(struct ndc__ctrl));
    s->len = s->g.total_size;
    s->base = mmap(NULL, s->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(s->base, MAP_FAILED);
    s->c = (struct ndc__ctrl *)s->base;
    s->peers = (struct ndc__peer *)(s->base + s->g.peers_off);
    s->slots = (struct ndc__slot *)(s->base + s->g.table_off);
    s->cells = (struct ndc__cell *)(s->base + NDC__CELLS_OFF);
}

void seg_unmap(struct seg *s)
{
    munmap(s->base, s->len);
}

static const enum ndc_dtype kdt[] = { NDC_U8, NDC_I16, NDC_F32, NDC_F64, NDC_C128, NDC_BOOL };

void tag_array(uint64_t tag, uint64_t slot_bytes, struct ndc_array *a, void *data)
{
    uint64_t h = th_mix(tag ^ 0x5eedull);
    enum ndc_dtype dt = kdt[h % (sizeof kdt / sizeof kdt[0])];
    uint64_t item = ndc_dtype_size(dt), maxn = slot_bytes / item;
    int ndim = (int)((h >> 8) % 4);
    int64_t shape[3] = { 1, 1, 1 };
    if (ndim == 1) {
        shape[0] = (int64_t)((h >> 16) % (maxn + 1));
    } else if (ndim == 2) {
        shape[0] = 1 + (int64_t)((h >> 16) % 8);
        shape[1] = (int64_t)((h >> 24) % (maxn / (uint64_t)shape[0] + 1));
    } else if (ndim == 3) {
        shape[0] = 1 + (int64_t)((h >> 16) % 4);
        shape[1] = 1 + (int64_t)((h >> 20) % 4);
        shape[2] = (int64_t)((h >> 24) % (maxn / (uint64_t)(shape[0] * shape[1]) + 1));
    }
    ndc_array_init(a, dt, ndim, shape, data);
    a->tag = tag;
}

/* 0 if `a` is the array of its tag, complete; else a message in err. */
int tag_check(const struct ndc_array *a, uint64_t slot_bytes, char *err, size_t cap)
{
    struct ndc_array want;
    tag_array(a->tag, slot_bytes, &want, NULL);
    if (a->dtype != want.dtype || a->ndim != want.ndim ||
        memcmp(a->shape, want.shape, sizeof(int64_t) * (size_t)want.ndim) != 0) {
        snprintf(err, cap, "tag %#llx: header dtype %d ndim %d, want dtype %d ndim %d",
                 (unsigned long long)a->tag, a->dtype, a->ndim, want.dtype, want.ndim);
        return -1;
    }
    size_t n = ndc_array_nbytes(&want);
    if (!th_check(a->data, n, a->tag)) {
        snprintf(err, cap, "tag %#llx: payload of %zu bytes torn", (unsigned long long)a->tag, n);
        return -1;
    }
    return 0;
}

void send_tag(ndc_chan *ch, uint64_t tag, int64_t tmo, int *rc)
{
    struct ndc_array a;
    unsigned char buf[64];
    tag_array(tag, sizeof buf, &a, buf);
    th_fill(buf, ndc_array_nbytes(&a), tag);
    *rc = ndc_send(ch, &a, tmo);
}

void roundtrip(ndc_chan *ch, uint64_t tag, const char *what)
{
    int rc;
    send_tag(ch, tag, 0, &rc);
    cr_assert_eq(rc, 0, "%s: send: %d (%s) %s", what, rc, ndc_strerror(rc), ndc_last_error());
    struct ndc_array a;
    rc = ndc_acquire(ch, &a, 0);
    cr_assert_eq(rc, 0, "%s: acquire: %d (%s) %s", what, rc, ndc_strerror(rc), ndc_last_error());
    char msg[200];
    cr_assert_eq(a.tag, tag, "%s: got tag %#llx", what, (unsigned long long)a.tag);
    cr_assert_eq(tag_check(&a, 64, msg, sizeof msg), 0, "%s: %s", what, msg);
    th_ok(ndc_release(ch, &a));
}

void die_with_parent(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}
