/* io_uring backend of io.h (liburing), chosen by meson when liburing is
 * found. One ring per ndc__io; requests carry their ndc__io_req pointer as
 * user data. Reads and writes into registered buffers use the _fixed
 * opcodes, which skip pinning the pages on every request. */
#include <errno.h>
#include <stdlib.h>
#include <liburing.h>

#include "error.h"
#include "io.h"

struct ndc__io {
    struct io_uring ring;
    unsigned        entries;
    unsigned        queued;     /* prepared, not yet submitted */
    unsigned        inflight;   /* queued or submitted, not yet reaped */
    unsigned        nbufs;      /* registered buffer table size */
};

const char *ndc__io_backend(void)
{
    return "io_uring";
}

int ndc__io_create(struct ndc__io **out, unsigned entries)
{
    if (entries == 0 || entries > 4096)
        return ndc__fail(-EINVAL, "io: %u entries (1..4096)", entries);
    struct ndc__io *io = calloc(1, sizeof *io);
    if (!io)
        return -ENOMEM;
    /* COOP_TASKRUN: completions are run when we enter the kernel anyway,
     * without an IPI to interrupt us; older kernels lack it. */
    int err = io_uring_queue_init(entries, &io->ring, IORING_SETUP_COOP_TASKRUN);
    if (err == -EINVAL)
        err = io_uring_queue_init(entries, &io->ring, 0);
    if (err < 0) {
        free(io);
        return ndc__fail(err, "io_uring_queue_init(%u): %s", entries,
                         err == -ENOSYS ? "no io_uring in this kernel" :
                         err == -EPERM ? "io_uring disabled (kernel.io_uring_disabled?)" :
                         "failed");
    }
    io->entries = entries;
    *out = io;
    return 0;
}

void ndc__io_free(struct ndc__io *io)
{
    if (!io)
        return;
    /* the buffers of requests in flight belong to the caller's slots: wait
     * for them rather than let the kernel write after we return */
    while (io->inflight) {
        struct ndc__io_req *r;
        if (ndc__io_reap(io, &r) < 0)
            break;
    }
    io_uring_queue_exit(&io->ring);
    free(io);
}

int ndc__io_buffers(struct ndc__io *io, unsigned n)
{
    int err = io_uring_register_buffers_sparse(&io->ring, n);
    if (err < 0)
        return ndc__fail(err == -EINVAL ? -ENOTSUP : err,
                         "io_uring: sparse buffer table of %u: error %d", n, -err);
    io->nbufs = n;
    return 0;
}

int ndc__io_register(struct ndc__io *io, unsigned index, void *base, size_t len)
{
    if (index >= io->nbufs || len == 0 || len > (1u << 30))
        return ndc__fail(-EINVAL, "io_uring: buffer %u of %zu bytes (table %u, at most 1 GiB)",
                         index, len, io->nbufs);
    struct iovec iov = { .iov_base = base, .iov_len = len };
    __u64 tag = 0;
    int err = io_uring_register_buffers_update_tag(&io->ring, index, &iov, &tag, 1);
    if (err < 0)
        return ndc__fail(err, "io_uring: registering buffer %u (%zu bytes)%s", index, len,
                         err == -ENOMEM ? ": above RLIMIT_MEMLOCK" : "");
    return 0;
}

int ndc__io_queue(struct ndc__io *io, struct ndc__io_req *r)
{
    if (io->inflight >= io->entries)
        return -EBUSY;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
    if (!sqe) {
        /* the SQ ring is full of prepared entries: hand them over */
        io_uring_submit(&io->ring);
        io->queued = 0;
        sqe = io_uring_get_sqe(&io->ring);
        if (!sqe)
            return -EBUSY;
    }
    unsigned len = r->len > 0x7ffff000u ? 0x7ffff000u : (unsigned)r->len;
    if (r->write) {
        if (r->buf_index >= 0)
            io_uring_prep_write_fixed(sqe, r->fd, r->buf, len, r->off, r->buf_index);
        else
            io_uring_prep_write(sqe, r->fd, r->buf, len, r->off);
    } else {
        if (r->buf_index >= 0)
            io_uring_prep_read_fixed(sqe, r->fd, r->buf, len, r->off, r->buf_index);
        else
            io_uring_prep_read(sqe, r->fd, r->buf, len, r->off);
    }
    io_uring_sqe_set_data(sqe, r);
    io->queued++;
    io->inflight++;
    return 0;
}

int ndc__io_reap(struct ndc__io *io, struct ndc__io_req **done)
{
    if (io->inflight == 0)
        return -EAGAIN;
    struct io_uring_cqe *cqe = NULL;
    int err;
    do {
        if (io->queued) {
            err = io_uring_submit_and_wait(&io->ring, 1);
            if (err >= 0) {
                io->queued = 0;
                err = io_uring_peek_cqe(&io->ring, &cqe);
            }
        } else {
            err = io_uring_wait_cqe(&io->ring, &cqe);
        }
        /* disk I/O waits are short and bounded: a signal does not abandon
         * buffers the kernel is still writing */
    } while (err == -EINTR || (err == -EAGAIN && !cqe));
    if (err < 0)
        return ndc__fail(err, "io_uring: waiting for a completion");
    struct ndc__io_req *r = io_uring_cqe_get_data(cqe);
    r->res = cqe->res;
    io_uring_cqe_seen(&io->ring, cqe);
    io->inflight--;
    *done = r;
    return 0;
}
