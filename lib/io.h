/* File I/O for .npy streaming: the contract each backend supplies.
 *
 * Two implementations, chosen by meson: io_uring.c (liburing) and io_posix.c
 * (pread/pwrite, when liburing is absent). The caller queues requests, each
 * a read or write of one buffer at one file offset, and reaps completions
 * one at a time, in any order. A completion may be short (a request above
 * the kernel's ~2 GiB per-call limit, a signal, end of file): the caller
 * advances its request and queues the rest. The caller keeps at most
 * `entries` requests queued or in flight; a request and its buffer belong to
 * the backend from ndc__io_queue until ndc__io_reap returns it.
 *
 * Registered buffers: the payload region of a channel may be registered in
 * slot-sized pieces, on demand, so only slots actually used get pinned (and
 * charged to RLIMIT_MEMLOCK). Registering may fail (memlock, an old kernel,
 * the pread backend): the caller then queues the same requests with
 * buf_index = -1 and nothing else changes.
 *
 * One ndc__io belongs to one thread at a time.
 */
#ifndef NDC_IO_H
#define NDC_IO_H
#include <stddef.h>
#include <stdint.h>

struct ndc__io;

struct ndc__io_req {
    int      fd;
    int      write;          /* 0: read into buf, 1: write from buf */
    int      buf_index;      /* a registered buffer holding [buf, buf+len), or -1 */
    void    *buf;
    size_t   len;
    uint64_t off;            /* file offset */
    int64_t  res;            /* on reap: bytes transferred (maybe short), or -errno */
    void    *user;           /* the caller's */
};

/* Backend name for reports: "io_uring" or "pread". */
const char *ndc__io_backend(void);

/* A context for up to `entries` requests at once (1..4096).
 * \return 0 and *out, or -EINVAL, -ENOMEM, -errno of io_uring_queue_init */
int ndc__io_create(struct ndc__io **out, unsigned entries);

/* Waits for every request still in flight, then frees. NULL is a no-op. */
void ndc__io_free(struct ndc__io *io);

/* Make room for `n` registered buffers, all empty (indices 0..n-1).
 * \return 0, -ENOTSUP (backend or kernel without them), -errno */
int ndc__io_buffers(struct ndc__io *io, unsigned n);

/* Register [base, base+len) as buffer `index` (pins its pages).
 * \return 0, -ENOMEM (RLIMIT_MEMLOCK), -EFAULT (memory that cannot be
 *         pinned), -EINVAL (index or len out of range), -ENOTSUP, -errno */
int ndc__io_register(struct ndc__io *io, unsigned index, void *base, size_t len);

/* Queue a request; it is submitted at the latest by the next ndc__io_reap.
 * \return 0, or -EBUSY (`entries` requests already queued or in flight) */
int ndc__io_queue(struct ndc__io *io, struct ndc__io_req *r);

/* Submit what is queued and wait for one completion (r->res set).
 * \return 0 and *done, -EAGAIN (nothing queued or in flight), -EINTR, -errno */
int ndc__io_reap(struct ndc__io *io, struct ndc__io_req **done);

#endif
