/* ndchan-bridge: the far side's resume record (see bridge_state.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bridge_state.h"
#include "bridge_wire.h"

#define BS_MAGIC 0x3174736567646962ull   /* "bidgest1" */

struct bs_rec {
    uint64_t magic;
    _Atomic uint64_t sent_before, pending, last;
    _Atomic uint32_t have_pending, have_last;
    char     near[BW_NAME_LEN];
};

struct bs_state {
    struct bs_rec *rec;
    char name[NDC_NAME_MAX + 16];
};

int bs_open(struct bs_state **out, const char *chan, int fresh)
{
    struct bs_state *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    snprintf(s->name, sizeof s->name, "/%s.bridge", chan[0] == '/' ? chan + 1 : chan);
    int fd = shm_open(s->name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, sizeof(struct bs_rec)) != 0) {
        int e = -errno;
        if (fd >= 0)
            close(fd);
        free(s);
        return e;
    }
    s->rec = mmap(NULL, sizeof(struct bs_rec), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (s->rec == MAP_FAILED) {
        int e = -errno;
        free(s);
        return e;
    }
    if (fresh || s->rec->magic != BS_MAGIC || !memchr(s->rec->near, 0, sizeof s->rec->near)) {
        memset(s->rec, 0, sizeof *s->rec);
        s->rec->magic = BS_MAGIC;
    }
    *out = s;
    return 0;
}

int bs_last(struct bs_state *s, ndc_chan *far, const char *near, uint64_t *last)
{
    struct bs_rec *r = s->rec;
    if (strcmp(r->near, near) != 0) {
        /* another stream's record (or none): this one starts here */
        atomic_store(&r->have_pending, 0);
        atomic_store(&r->have_last, 0);
        snprintf(r->near, sizeof r->near, "%s", near);
        return 0;
    }
    if (atomic_load(&r->have_pending) &&
        (!atomic_load(&r->have_last) || atomic_load(&r->last) != atomic_load(&r->pending))) {
        /* killed between bs_begin and bs_end: did the commit happen? */
        struct ndc_stat st;
        if (ndc_stat(far, &st) == 0 && st.sent > atomic_load(&r->sent_before)) {
            atomic_store(&r->last, atomic_load(&r->pending));
            atomic_store(&r->have_last, 1);
        }
        atomic_store(&r->have_pending, 0);
    }
    if (!atomic_load(&r->have_last))
        return 0;
    *last = atomic_load(&r->last);
    return 1;
}

void bs_begin(struct bs_state *s, uint64_t sent_before, uint64_t seq)
{
    atomic_store(&s->rec->have_pending, 0);
    atomic_store(&s->rec->sent_before, sent_before);
    atomic_store(&s->rec->pending, seq);
    atomic_store(&s->rec->have_pending, 1);
}

void bs_end(struct bs_state *s, uint64_t seq)
{
    atomic_store(&s->rec->last, seq);
    atomic_store(&s->rec->have_last, 1);
    atomic_store(&s->rec->have_pending, 0);
}

void bs_remove(struct bs_state *s)
{
    if (s)
        shm_unlink(s->name);
}

void bs_close(struct bs_state *s)
{
    if (!s)
        return;
    munmap(s->rec, sizeof *s->rec);
    free(s);
}
