/* The kernel-copy baselines: a pipe carrying the raw bytes, a pipe carrying
 * a serialized message (what a queue does), an AF_UNIX stream socket. Each
 * copies the array into the kernel and out again; none is given any help the
 * ordinary user would not have beyond the largest pipe buffer allowed. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct posix_st {
    void  *buf;          /* tx: the sender's array; rx: the receive buffer */
    size_t buflen;
    void  *msg;          /* pipe-ser tx: header + payload packed */
    void  *fresh;        /* pipe-ser rx: the decoded array, freed by rx_end */
};

static struct posix_st *st_of(struct link *l) { return l->st; }

/* /proc/sys/fs/pipe-max-size, which unprivileged users may ask for. */
static int pipe_max_size(void)
{
    FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
    int v = 1 << 20;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = 1 << 20;
        fclose(f);
    }
    return v;
}

static int make_pipe(struct link *l, int enlarge)
{
    if (pipe(l->fd))
        return snprintf(l->err, ERR_LEN, "pipe: %s", strerror(errno)), -errno;
    if (enlarge) {
        /* The largest buffer an unprivileged user may ask for, halving
         * until the kernel agrees (its per-user pipe budget may refuse). */
        for (int sz = pipe_max_size(); sz > 65536; sz /= 2)
            if (fcntl(l->fd[1], F_SETPIPE_SZ, sz) >= 0)
                break;
    }
    return 0;
}

static int pipe_create(struct link *l) { return make_pipe(l, 1); }
static int pipe_small_create(struct link *l) { return make_pipe(l, 0); }

static int unix_create(struct link *l)
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, l->fd))
        return snprintf(l->err, ERR_LEN, "socketpair: %s", strerror(errno)), -errno;
    int sz = 1 << 20;   /* capped by net.core.wmem_max / rmem_max */
    setsockopt(l->fd[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);   /* the writer's end */
    setsockopt(l->fd[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    return 0;
}

static int posix_open(struct link *l, int tx)
{
    struct posix_st *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    l->st = s;
    close(l->fd[tx ? 0 : 1]);
    l->fd[tx ? 0 : 1] = -1;
    s->buflen = l->max_bytes;
    s->buf = alloc_buf(s->buflen);
    if (!s->buf)
        return snprintf(l->err, ERR_LEN, "out of memory for a %zu-byte buffer", s->buflen), -ENOMEM;
    return 0;
}

static void posix_close(struct link *l, int tx)
{
    struct posix_st *s = st_of(l);
    if (s) {
        free_buf(s->buf, s->buflen);
        free_buf(s->msg, s->buflen + 64);
        free(s->fresh);
        free(s);
        l->st = NULL;
    }
    for (int i = 0; i < 2; i++)
        if (l->fd[i] >= 0)
            close(l->fd[i]);
}

static void posix_destroy(struct link *l)
{
    for (int i = 0; i < 2; i++)
        if (l->fd[i] >= 0)
            close(l->fd[i]);
    l->fd[0] = l->fd[1] = -1;
}

static void *raw_tx_begin(struct link *l, size_t n) { (void)n; return st_of(l)->buf; }

static int raw_tx_end(struct link *l, size_t n)
{
    int e = write_all(l->fd[1], st_of(l)->buf, n);
    if (e)
        snprintf(l->err, ERR_LEN, "write: %s", strerror(-e));
    return e;
}

static const void *raw_rx_begin(struct link *l, size_t n)
{
    int e = read_all(l->fd[0], st_of(l)->buf, n);
    if (e) {
        snprintf(l->err, ERR_LEN, "read: %s", strerror(-e));
        return NULL;
    }
    return st_of(l)->buf;
}

static int raw_rx_end(struct link *l) { (void)l; return 0; }

/* ---- a serialized message ------------------------------------------------
 * What multiprocessing.Queue does without Python around it: the sender packs
 * a header (dtype, shape, sequence) and the payload into one buffer and writes
 * it; the receiver reads the message and decodes it into a freshly allocated
 * array. Four copies: pack, pipe in, pipe out, decode. */
struct ser_hdr {
    uint32_t magic, dtype, ndim, pad;
    uint64_t shape[4];
    uint64_t seq, nbytes;
};
_Static_assert(sizeof(struct ser_hdr) == 64, "header is one cache line");
#define SER_MAGIC 0x6e64736du
#define SER_F64 12u          /* NDC_F64 */

static int ser_open(struct link *l, int tx)
{
    int e = posix_open(l, tx);
    if (e)
        return e;
    struct posix_st *s = st_of(l);
    s->msg = alloc_buf(l->max_bytes + sizeof(struct ser_hdr));
    return s->msg ? 0 : -ENOMEM;
}

static int ser_tx_end(struct link *l, size_t n)
{
    struct posix_st *s = st_of(l);
    struct ser_hdr h = { .magic = SER_MAGIC, .dtype = SER_F64, .ndim = 1,
                         .shape = { n / 8 }, .seq = l->seq++, .nbytes = n };
    memcpy(s->msg, &h, sizeof h);
    memcpy((char *)s->msg + sizeof h, s->buf, n);
    int e = write_all(l->fd[1], s->msg, sizeof h + n);
    if (e)
        snprintf(l->err, ERR_LEN, "write: %s", strerror(-e));
    return e;
}

static const void *ser_rx_begin(struct link *l, size_t n)
{
    struct posix_st *s = st_of(l);
    struct ser_hdr h;
    int e = read_all(l->fd[0], &h, sizeof h);
    if (e) {
        snprintf(l->err, ERR_LEN, "read: %s", strerror(-e));
        return NULL;
    }
    if (h.magic != SER_MAGIC || h.dtype != SER_F64 || h.ndim != 1 || h.nbytes != n ||
        h.shape[0] * 8 != h.nbytes || h.seq != l->seq) {
        snprintf(l->err, ERR_LEN, "bad message header (seq %llu, %llu bytes)",
                 (unsigned long long)h.seq, (unsigned long long)h.nbytes);
        return NULL;
    }
    l->seq++;
    e = read_all(l->fd[0], s->msg, h.nbytes);
    if (e) {
        snprintf(l->err, ERR_LEN, "read: %s", strerror(-e));
        return NULL;
    }
    s->fresh = malloc(h.nbytes ? h.nbytes : 1);
    if (!s->fresh) {
        snprintf(l->err, ERR_LEN, "out of memory decoding %llu bytes", (unsigned long long)h.nbytes);
        return NULL;
    }
    memcpy(s->fresh, s->msg, h.nbytes);
    return s->fresh;
}

static int ser_rx_end(struct link *l)
{
    struct posix_st *s = st_of(l);
    free(s->fresh);
    s->fresh = NULL;
    return 0;
}

const struct link_ops link_pipe = {
    .name = "pipe", .what = "pipe carrying the raw bytes, buffer enlarged with F_SETPIPE_SZ",
    .create = pipe_create, .open = posix_open, .tx_begin = raw_tx_begin, .tx_end = raw_tx_end,
    .rx_begin = raw_rx_begin, .rx_end = raw_rx_end, .close = posix_close, .destroy = posix_destroy,
};
const struct link_ops link_pipe_small = {
    .name = "pipe-64k", .what = "pipe carrying the raw bytes, default 64 KiB buffer",
    .create = pipe_small_create, .open = posix_open, .tx_begin = raw_tx_begin, .tx_end = raw_tx_end,
    .rx_begin = raw_rx_begin, .rx_end = raw_rx_end, .close = posix_close, .destroy = posix_destroy,
};
const struct link_ops link_pipe_ser = {
    .name = "pipe-serial", .what = "pipe carrying a serialized message: packed by the sender, "
                                   "decoded into a fresh array by the receiver",
    .create = pipe_create, .open = ser_open, .tx_begin = raw_tx_begin, .tx_end = ser_tx_end,
    .rx_begin = ser_rx_begin, .rx_end = ser_rx_end, .close = posix_close, .destroy = posix_destroy,
};
const struct link_ops link_unix = {
    .name = "unix-socket", .what = "AF_UNIX stream socket carrying the raw bytes",
    .create = unix_create, .open = posix_open, .tx_begin = raw_tx_begin, .tx_end = raw_tx_end,
    .rx_begin = raw_rx_begin, .rx_end = raw_rx_end, .close = posix_close, .destroy = posix_destroy,
};
