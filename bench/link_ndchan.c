/* ndchan through its public API only, both ways of using it:
 *
 *   ndchan-loan  zero copy: the sender reserves a slot and writes the array
 *                in place, commits; the receiver acquires and reads it in
 *                place, releases. Nothing moves but the slot's index.
 *   ndchan-copy  ndc_send from the sender's own buffer, ndc_recv into the
 *                receiver's: one copy each side.
 *
 * The orchestrator creates the channel (an anonymous memfd) before it forks
 * the two workers, which use the inherited handle, as the API allows; each
 * cell gets a channel sized to its arrays, warmed by the warm-up, with the
 * library's default options but for the slots the harness asks for (none:
 * the default, which round trips use). */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ndchan.h"

struct ndc_st {
    ndc_chan *ch;
    struct ndc_array a;      /* the reservation or loan in hand */
    void  *buf;              /* ndchan-copy: the sender's array / the receiver's buffer */
    size_t buflen;
};

int64_t bench_spin_ns;       /* --spin-ns: 0 = the library's default */
struct ndc_chan_opts bench_placement;   /* --numa: only the numa_* fields are used */

static int nfail(struct link *l, const char *what, int e)
{
    const char *why = ndc_last_error();
    snprintf(l->err, ERR_LEN, "%s: %s%s%s", what, ndc_strerror(e), why && *why ? ": " : "", why ? why : "");
    return e;
}

static int nd_create(struct link *l)
{
    struct ndc_st *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    l->st = s;
    struct ndc_chan_opts o;
    memset(&o, 0, sizeof o);
    o.slots = l->slots;      /* 0: the library's default */
    o.slot_bytes = l->max_bytes < 8 ? 8 : l->max_bytes;
    o.spin_ns = bench_spin_ns;
    o.numa_policy = bench_placement.numa_policy;
    o.numa_node = bench_placement.numa_node;
    o.numa_nodeset = bench_placement.numa_nodeset;
    int e = ndc_create(&s->ch, NULL, &o);
    if (e)
        return nfail(l, "ndc_create", e);
    /* what the channel holds, for the warm-up and the report */
    struct ndc_stat st;
    e = ndc_stat(s->ch, &st);
    if (e)
        return nfail(l, "ndc_stat", e);
    l->slots = st.slots;
    return 0;
}

static int nd_open(struct link *l, int tx)
{
    (void)tx;
    return 0;
}

static int copy_open(struct link *l, int tx)
{
    struct ndc_st *s = l->st;
    (void)tx;
    s->buflen = l->max_bytes;
    s->buf = alloc_buf(s->buflen);
    return s->buf ? 0 : -ENOMEM;
}

static void nd_close(struct link *l, int tx)
{
    struct ndc_st *s = l->st;
    (void)tx;
    free_buf(s->buf, s->buflen);
    s->buf = NULL;
    ndc_free(s->ch);
    s->ch = NULL;
}

static void nd_destroy(struct link *l)
{
    struct ndc_st *s = l->st;
    if (s) {
        ndc_free(s->ch);
        free(s);
    }
    l->st = NULL;
}

static void describe(struct ndc_array *a, size_t n)
{
    memset(a, 0, sizeof *a);
    a->dtype = NDC_F64;
    a->ndim = 1;
    a->shape[0] = (int64_t)(n / 8);
}

/* What arrived must be what was sent: float64, 1-d, n bytes. */
static int check_header(struct link *l, const struct ndc_array *a, size_t n)
{
    if (a->dtype != NDC_F64 || a->ndim != 1 || a->shape[0] != (int64_t)(n / 8) ||
        ndc_array_nbytes(a) != n || (n && !a->data)) {
        snprintf(l->err, ERR_LEN, "received a header that does not match: dtype %d ndim %d shape[0] %lld",
                 (int)a->dtype, a->ndim, (long long)a->shape[0]);
        return -EBADMSG;
    }
    return 0;
}

/* ---- loan ---------------------------------------------------------------- */

static void *loan_tx_begin(struct link *l, size_t n)
{
    struct ndc_st *s = l->st;
    describe(&s->a, n);
    int e = ndc_reserve(s->ch, &s->a, NDC_FOREVER);
    if (e) {
        nfail(l, "ndc_reserve", e);
        return NULL;
    }
    return s->a.data;
}

static int loan_tx_end(struct link *l, size_t n)
{
    struct ndc_st *s = l->st;
    (void)n;
    int e = ndc_commit(s->ch, &s->a);
    return e ? nfail(l, "ndc_commit", e) : 0;
}

static const void *loan_rx_begin(struct link *l, size_t n)
{
    struct ndc_st *s = l->st;
    int e = ndc_acquire(s->ch, &s->a, NDC_FOREVER);
    if (e) {
        nfail(l, "ndc_acquire", e);
        return NULL;
    }
    return check_header(l, &s->a, n) ? NULL : s->a.data;
}

static int loan_rx_end(struct link *l)
{
    struct ndc_st *s = l->st;
    int e = ndc_release(s->ch, &s->a);
    return e ? nfail(l, "ndc_release", e) : 0;
}

/* ---- one copy each side ------------------------------------------------------ */

static void *copy_tx_begin(struct link *l, size_t n)
{
    (void)n;
    return ((struct ndc_st *)l->st)->buf;
}

static int copy_tx_end(struct link *l, size_t n)
{
    struct ndc_st *s = l->st;
    int64_t shape[1] = { (int64_t)(n / 8) };
    int e = ndc_array_init(&s->a, NDC_F64, 1, shape, s->buf);
    if (!e)
        e = ndc_send(s->ch, &s->a, NDC_FOREVER);
    return e ? nfail(l, "ndc_send", e) : 0;
}

static const void *copy_rx_begin(struct link *l, size_t n)
{
    struct ndc_st *s = l->st;
    memset(&s->a, 0, sizeof s->a);
    s->a.data = s->buf;
    int e = ndc_recv(s->ch, &s->a, s->buflen, NDC_FOREVER);
    if (e) {
        nfail(l, "ndc_recv", e);
        return NULL;
    }
    if (check_header(l, &s->a, n))
        return NULL;
    return s->a.data;
}

static int copy_rx_end(struct link *l)
{
    (void)l;
    return 0;
}

const struct link_ops link_ndchan_loan = {
    .name = "ndchan-loan", .what = "ndchan zero copy: reserve/commit, acquire/release, read in place",
    .create = nd_create, .open = nd_open, .tx_begin = loan_tx_begin, .tx_end = loan_tx_end,
    .rx_begin = loan_rx_begin, .rx_end = loan_rx_end, .close = nd_close, .destroy = nd_destroy,
};
const struct link_ops link_ndchan_copy = {
    .name = "ndchan-copy", .what = "ndchan one copy each side: ndc_send, ndc_recv",
    .create = nd_create, .open = copy_open, .tx_begin = copy_tx_begin, .tx_end = copy_tx_end,
    .rx_begin = copy_rx_begin, .rx_end = copy_rx_end, .close = nd_close, .destroy = nd_destroy,
};
