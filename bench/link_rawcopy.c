/* rawcopy: the ceiling of a copy from one process to another, with nothing
 * of a channel around it.
 *
 * A shared mapping holds slots of the cell's array size, as many as the
 * harness gives every throughput link (ndchan-copy's channel has the same:
 * 4, 2 above 64 MiB), and a flag per slot, each flag on its own cache line;
 * the slots are used in turn. The producer memcpys its own buffer
 * into the next slot once that slot's flag says free (acquire) and flags it
 * full (release); the consumer waits for the flag (acquire), memcpys the slot
 * out into its own buffer and flags it free (release). One memcpy each side,
 * what ndchan-copy does (ndc_send, ndc_recv), and no more: no header, no
 * bookkeeping, no sleeping. The throughput loop runs it like any transport,
 * so every array is stamped and checked. (With fewer slots than ndchan-copy
 * it would be a lower ceiling: two slots keep the sides in lockstep, and
 * every stall of one stalls the other.)
 *
 * On a machine where one core's cache holds a 16 MiB array, memcpy (one
 * thread, in process) measures that cache; any copy between two cores pays
 * for the lines crossing between them, and this row is what such a copy can
 * reach. The copy targets are judged against it.
 */
#include "bench.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define RAW_SLOTS 64             /* at most; a flag per slot fills the first page */
#define RAW_HEAD  4096              /* the flags' page; the slots follow, page-aligned */
#define RAW_SPINS (1u << 16)        /* then yield: only one CPU may be given */

struct raw_head {
    struct {
        _Alignas(64) _Atomic uint32_t full;
    } flag[RAW_SLOTS];
};

_Static_assert(sizeof(struct raw_head) <= RAW_HEAD, "the flags fit their page");

struct raw_st {
    struct raw_head *h;            /* the shared mapping */
    char  *slot0;
    size_t slot_bytes, maplen;
    unsigned nslots;
    void  *buf;                    /* the producer's array / the consumer's buffer */
    size_t buflen;
    unsigned next;                 /* the slot this side uses next */
};

static size_t page_up(size_t n) { return (n + 4095) & ~(size_t)4095; }

static int raw_create(struct link *l)
{
    struct raw_st *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    l->st = s;
    s->nslots = l->slots < 2 ? 2 : l->slots > RAW_SLOTS ? RAW_SLOTS : l->slots;
    l->slots = s->nslots;          /* the warm-up writes every one */
    s->slot_bytes = page_up(l->max_bytes ? l->max_bytes : 8);
    s->maplen = RAW_HEAD + s->nslots * s->slot_bytes;
    s->h = map_shared(s->maplen);  /* untouched: the warm-up faults the slots in */
    if (!s->h) {
        snprintf(l->err, ERR_LEN, "mmap %zu bytes: %s", s->maplen, strerror(errno));
        return -ENOMEM;
    }
    s->slot0 = (char *)s->h + RAW_HEAD;
    return 0;
}

static int raw_open(struct link *l, int tx)
{
    struct raw_st *s = l->st;
    (void)tx;
    s->next = 0;
    s->buflen = l->max_bytes;
    s->buf = alloc_buf(s->buflen);
    return s->buf ? 0 : -ENOMEM;
}

static void wait_flag(_Atomic uint32_t *f, uint32_t want)
{
    for (uint32_t i = 0; atomic_load_explicit(f, memory_order_acquire) != want; i++) {
        if (i < RAW_SPINS)
            cpu_relax();
        else
            sched_yield();
    }
}

static void *raw_tx_begin(struct link *l, size_t n)
{
    (void)n;
    return ((struct raw_st *)l->st)->buf;
}

static int raw_tx_end(struct link *l, size_t n)
{
    struct raw_st *s = l->st;
    unsigned i = s->next;
    wait_flag(&s->h->flag[i].full, 0);
    memcpy(s->slot0 + i * s->slot_bytes, s->buf, n);
    atomic_store_explicit(&s->h->flag[i].full, 1, memory_order_release);
    s->next = (i + 1) % s->nslots;
    return 0;
}

static const void *raw_rx_begin(struct link *l, size_t n)
{
    struct raw_st *s = l->st;
    unsigned i = s->next;
    wait_flag(&s->h->flag[i].full, 1);
    memcpy(s->buf, s->slot0 + i * s->slot_bytes, n);
    atomic_store_explicit(&s->h->flag[i].full, 0, memory_order_release);
    s->next = (i + 1) % s->nslots;
    return s->buf;
}

static int raw_rx_end(struct link *l)
{
    (void)l;
    return 0;
}

static void raw_close(struct link *l, int tx)
{
    struct raw_st *s = l->st;
    (void)tx;
    free_buf(s->buf, s->buflen);
    s->buf = NULL;
}

static void raw_destroy(struct link *l)
{
    struct raw_st *s = l->st;
    if (s) {
        if (s->h)
            munmap(s->h, s->maplen);
        free(s);
    }
    l->st = NULL;
}

const struct link_ops link_rawcopy = {
    .name = "rawcopy",
    .what = "ceiling: two processes, one memcpy each side through shared slots with spin flags",
    .create = raw_create, .open = raw_open, .tx_begin = raw_tx_begin, .tx_end = raw_tx_end,
    .rx_begin = raw_rx_begin, .rx_end = raw_rx_end, .close = raw_close, .destroy = raw_destroy,
};
