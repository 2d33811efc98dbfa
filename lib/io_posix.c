/* pread/pwrite backend of io.h, chosen by meson when liburing is absent.
 * Requests wait in a FIFO and each ndc__io_reap performs the oldest one,
 * synchronously and in full (a loop over short transfers), so the callers
 * are the same code with and without io_uring; only the overlap is lost. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "error.h"
#include "io.h"

struct ndc__io {
    unsigned             entries, head, count;
    struct ndc__io_req **fifo;
};

const char *ndc__io_backend(void)
{
    return "pread";
}

int ndc__io_create(struct ndc__io **out, unsigned entries)
{
    if (entries == 0 || entries > 4096)
        return ndc__fail(-EINVAL, "io: %u entries (1..4096)", entries);
    struct ndc__io *io = calloc(1, sizeof *io);
    if (!io || !(io->fifo = calloc(entries, sizeof *io->fifo))) {
        free(io);
        return -ENOMEM;
    }
    io->entries = entries;
    *out = io;
    return 0;
}

void ndc__io_free(struct ndc__io *io)
{
    if (!io)
        return;
    free(io->fifo);
    free(io);
}

int ndc__io_buffers(struct ndc__io *io, unsigned n)
{
    return ndc__fail(-ENOTSUP, "io: registered buffers need io_uring (built without liburing)");
}

int ndc__io_register(struct ndc__io *io, unsigned index, void *base, size_t len)
{
    return -ENOTSUP;
}

int ndc__io_queue(struct ndc__io *io, struct ndc__io_req *r)
{
    if (io->count >= io->entries)
        return -EBUSY;
    io->fifo[(io->head + io->count++) % io->entries] = r;
    return 0;
}

int ndc__io_reap(struct ndc__io *io, struct ndc__io_req **done)
{
    if (io->count == 0)
        return -EAGAIN;
    struct ndc__io_req *r = io->fifo[io->head];
    io->head = (io->head + 1) % io->entries;
    io->count--;
    size_t got = 0;
    while (got < r->len) {
        ssize_t n = r->write ? pwrite(r->fd, (const char *)r->buf + got, r->len - got, (off_t)(r->off + got))
                             : pread(r->fd, (char *)r->buf + got, r->len - got, (off_t)(r->off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (got == 0) {
                r->res = -errno;
                *done = r;
                return 0;
            }
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    r->res = (int64_t)got;
    *done = r;
    return 0;
}
