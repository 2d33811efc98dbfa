/* ZeroMQ as a real peer: PUSH/PULL over ipc://, the way its users move
 * buffers. zmq_send copies the array into a message (the library then writes
 * it to a unix socket from its I/O thread); the receiver takes the message
 * with zmq_msg_recv and reads it in place, sparing the last copy. High-water
 * marks of two messages keep memory bounded for large arrays, like the
 * channels' few slots. Built only when meson finds libzmq. */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

struct zmq_st {
    char   endpoint[128];
    char   path[120];
    void  *ctx, *sock;
    void  *buf;
    size_t buflen;
    zmq_msg_t msg;
    int    have_msg;
};

static int zmq_create(struct link *l)
{
    static unsigned counter;
    struct zmq_st *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    snprintf(s->path, sizeof s->path, "/tmp/ndchan-bench-%d-%u-%d.ipc", (int)getpid(), counter++, l->dir);
    snprintf(s->endpoint, sizeof s->endpoint, "ipc://%s", s->path);
    unlink(s->path);
    l->st = s;
    return 0;
}

static int zfail(struct link *l, const char *what)
{
    int e = zmq_errno();
    snprintf(l->err, ERR_LEN, "%s: %s", what, zmq_strerror(e));
    return e > 0 ? -e : -EIO;
}

static int zmq_open_(struct link *l, int tx)
{
    struct zmq_st *s = l->st;
    int hwm = 2, ivl = 1, linger = 0;
    s->ctx = zmq_ctx_new();
    if (!s->ctx)
        return zfail(l, "zmq_ctx_new");
    s->sock = zmq_socket(s->ctx, tx ? ZMQ_PUSH : ZMQ_PULL);
    if (!s->sock)
        return zfail(l, "zmq_socket");
    zmq_setsockopt(s->sock, tx ? ZMQ_SNDHWM : ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (tx) {
        /* The receiver binds; until it has, retry every millisecond rather
         * than the default 100 ms (the warm-up absorbs it either way). */
        zmq_setsockopt(s->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
        if (zmq_connect(s->sock, s->endpoint))
            return zfail(l, "zmq_connect");
        s->buflen = l->max_bytes;
        s->buf = alloc_buf(s->buflen);
        if (!s->buf)
            return -ENOMEM;
    } else if (zmq_bind(s->sock, s->endpoint)) {
        return zfail(l, "zmq_bind");
    }
    return 0;
}

static void *zmq_tx_begin(struct link *l, size_t n) { (void)n; return ((struct zmq_st *)l->st)->buf; }

static int zmq_tx_end(struct link *l, size_t n)
{
    struct zmq_st *s = l->st;
    while (zmq_send(s->sock, s->buf, n, 0) < 0)
        if (zmq_errno() != EINTR)
            return zfail(l, "zmq_send");
    return 0;
}

static const void *zmq_rx_begin(struct link *l, size_t n)
{
    struct zmq_st *s = l->st;
    zmq_msg_init(&s->msg);
    s->have_msg = 1;
    while (zmq_msg_recv(&s->msg, s->sock, 0) < 0)
        if (zmq_errno() != EINTR) {
            zfail(l, "zmq_msg_recv");
            return NULL;
        }
    if (zmq_msg_size(&s->msg) != n) {
        snprintf(l->err, ERR_LEN, "zmq message of %zu bytes, expected %zu", zmq_msg_size(&s->msg), n);
        return NULL;
    }
    return zmq_msg_data(&s->msg);
}

static int zmq_rx_end(struct link *l)
{
    struct zmq_st *s = l->st;
    if (s->have_msg)
        zmq_msg_close(&s->msg);
    s->have_msg = 0;
    return 0;
}

static void zmq_close_(struct link *l, int tx)
{
    struct zmq_st *s = l->st;
    if (!s)
        return;
    zmq_rx_end(l);
    if (s->sock)
        zmq_close(s->sock);
    if (s->ctx)
        zmq_ctx_term(s->ctx);
    free_buf(s->buf, s->buflen);
    s->sock = s->ctx = s->buf = NULL;
}

static void zmq_destroy(struct link *l)
{
    struct zmq_st *s = l->st;
    if (s) {
        unlink(s->path);
        free(s);
    }
    l->st = NULL;
}

static const struct link_ops ops = {
    .name = "zeromq", .what = "ZeroMQ PUSH/PULL over ipc:// (zmq_send, zmq_msg_recv)",
    .create = zmq_create, .open = zmq_open_, .tx_begin = zmq_tx_begin, .tx_end = zmq_tx_end,
    .rx_begin = zmq_rx_begin, .rx_end = zmq_rx_end, .close = zmq_close_, .destroy = zmq_destroy,
};

const struct link_ops *link_zmq(void) { return &ops; }
