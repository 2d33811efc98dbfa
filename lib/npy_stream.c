/*
 * .npy files streamed into and out of channels (the format itself is
 * npy_codec.c).
 *
 * Loading. Each file in flight is a job: its header is read and checked
 * (synchronously: a few hundred bytes) before a slot is reserved, so a bad
 * file never takes a slot. The payload is then read with up to
 * JOB_REQS requests of at most CHUNK bytes in flight, straight into the slot
 * (or into a temporary buffer for Fortran order). Jobs finish in any order
 * and are committed strictly in the order given. A reservation is only ever
 * waited for when nothing of ours is in flight, so our own uncommitted slots
 * can never starve us.
 *
 * Registered buffers: each slot is registered (pinned) the first time a job
 * lands in it, for the bytes it needs (rounded to 2 MiB), so unused slot
 * capacity stays unbacked. The first -ENOMEM (RLIMIT_MEMLOCK) stops further
 * attempts; requests then use plain reads.
 *
 * O_DIRECT (NDC_NPY_DIRECT): the payload sits at a 64-byte (sometimes only
 * 16-byte) file offset while the slot is page aligned, so only the middle
 * part whose file offset and memory address both meet statx's DIOALIGN
 * requirements is read direct; the unaligned head and tail go through the
 * page cache. It helps for cold files read once (no page-cache copy, no
 * cache pollution); it hurts for files already cached. Writing (drain) uses
 * O_DIRECT when the payload length is block aligned: the header is then
 * padded to 4096 bytes so the payload starts block aligned.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "array.h"
#include "chan.h"
#include "error.h"
#include "io.h"
#include "npy.h"
#include "wait.h"

#define CHUNK       (8u << 20)     /* bytes per request */
#define JOB_REQS    4              /* requests in flight per file */
#define REG_ROUND   (2u << 20)     /* registration granularity */
#define MAX_DEPTH   256            /* queue_depth above this is -EINVAL */

enum job_state { JOB_EMPTY, JOB_OPENED, JOB_IO, JOB_DONE };

struct job {
    enum job_state state;
    int            fd, dfd;        /* buffered; O_DIRECT or -1 */
    int            err;
    int            buf_index;      /* registered buffer of dst, or -1 */
    const char    *path;
    struct ndc__npy_header h;
    struct ndc_array a;            /* load: the reserved slot; drain: the loan */
    uint8_t       *dst;            /* where the payload goes (or comes from) */
    uint8_t       *bounce;         /* Fortran order: the file's layout */
    uint8_t       *hdr;            /* drain: the header to write */
    uint64_t       hdr_len;
    uint64_t       direct_lo, direct_hi;  /* payload range done with dfd */
    uint64_t       cursor;         /* payload bytes handed to requests so far */
    uint64_t       left;           /* payload bytes not yet transferred */
    unsigned       pending;        /* requests in flight */
    struct ndc__io_req req[JOB_REQS + 1];   /* +1: drain's header write */
};

static void job_close(struct job *j)
{
    if (j->fd >= 0)
        close(j->fd);
    if (j->dfd >= 0)
        close(j->dfd);
    free(j->bounce);
    free(j->hdr);
    j->fd = j->dfd = -1;
    j->bounce = j->hdr = NULL;
    j->state = JOB_EMPTY;
}

/* Prefix this thread's last detail with `what` (copied first: the detail
 * buffer is also the destination). */
static int fail_in(int err, const char *what)
{
    char detail[200];
    snprintf(detail, sizeof detail, "%s", ndc_last_error());
    return ndc__fail(err, "%s: %s", what, detail);
}

static int opts_check(const struct ndc_npy_opts *o, unsigned *depth, uint32_t *flags)
{
    static const struct ndc_npy_opts zero;
    if (!o)
        o = &zero;
    for (size_t i = 0; i < sizeof o->reserved / sizeof o->reserved[0]; i++)
        if (o->reserved[i])
            return ndc__fail(-EINVAL, "npy opts: reserved[%zu] is not zero", i);
    if (o->flags & ~NDC_NPY_DIRECT)
        return ndc__fail(-EINVAL, "npy opts: unknown flag bits 0x%x", o->flags & ~NDC_NPY_DIRECT);
    if (o->queue_depth > MAX_DEPTH)
        return ndc__fail(-EINVAL, "npy opts: queue_depth %u > %d", o->queue_depth, MAX_DEPTH);
    *depth = o->queue_depth ? o->queue_depth : 4;
    *flags = o->flags;
    return 0;
}

/* Direct I/O alignment of fd: memory and file offset, 0 when unsupported. */
static void dio_align(int fd, uint32_t *mem, uint32_t *off)
{
    struct statx sx;
    *mem = *off = 0;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
        *mem = sx.stx_dio_mem_align;
        *off = sx.stx_dio_offset_align;
    } else {
        *mem = *off = 4096;        /* no report: the safe assumption */
    }
}

/* Open a .npy file for reading and read, parse and size-check its header.
 * Never blocks on a FIFO (refused: not a regular file). \return the fd,
 * or -errno with a detail in ndc_last_error(). */
static int npy_open(const char *path, struct ndc__npy_header *h)
{
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer, past
     * any timeout; it is refused as not a regular file below, and the flag
     * is cleared for the reads (io_uring would answer -EAGAIN). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return ndc__fail(-errno, "npy: open %s", path);
    struct stat st;
    int err = 0;
    if (fstat(fd, &st) != 0)
        err = ndc__fail(-errno, "npy: fstat %s", path);
    else if (!S_ISREG(st.st_mode))
        err = ndc__fail(-EINVAL, "npy: %s is not a regular file", path);
    else if (fcntl(fd, F_SETFL, 0) != 0)
        err = ndc__fail(-errno, "npy: fcntl %s", path);
    uint8_t small[4096];
    uint8_t *buf = small;
    ssize_t got = 0;
    if (!err && (got = pread(fd, small, sizeof small, 0)) < 0)
        err = ndc__fail(-errno, "npy: read %s", path);
    uint64_t off;
    int parsed = 0;   /* errors from here on come from the header: name the file */
    if (!err) {
        err = ndc__npy_header_size(small, (size_t)got, &off);
        parsed = 1;
    }
    if (!err && off > (uint64_t)got && off <= (uint64_t)st.st_size) {
        if (!(buf = malloc(off)))
            err = -ENOMEM;
        else if ((got = pread(fd, buf, off, 0)) < 0)
            err = ndc__fail(-errno, "npy: read %s", path);
    }
    if (!err)
        err = ndc__npy_parse(buf, (size_t)got, h);
    if (buf != small)
        free(buf);
    if (!err)
        err = ndc__npy_check_size(h, (uint64_t)st.st_size);
    if (err && parsed)
        err = fail_in(err, path);   /* the parser's detail, with the file named */
    if (err) {
        close(fd);
        return err;
    }
    return fd;
}

int ndc_npy_peek(const char *path, struct ndc_array *a)
{
    if (!path || !a)
        return ndc__fail(-EINVAL, "npy: NULL argument");
    struct ndc__npy_header h;
    int fd = npy_open(path, &h);
    if (fd < 0)
        return fd;
    close(fd);
    /* the header passed ndc__npy_parse: a valid dtype, ndim and shape */
    return ndc_array_init(a, h.dtype, h.ndim, h.shape, NULL);
}

/* Open a file and read and check its header; nothing is reserved yet. */
static int job_open(struct job *j, const char *path)
{
    j->fd = j->dfd = -1;
    j->path = path;
    j->err = 0;
    int fd = npy_open(path, &j->h);
    if (fd < 0)
        return fd;
    j->fd = fd;
    posix_fadvise(fd, (off_t)j->h.data_offset, (off_t)j->h.nbytes, POSIX_FADV_SEQUENTIAL);

    memset(&j->a, 0, sizeof j->a);
    j->a.dtype = j->h.dtype;
    j->a.ndim = j->h.ndim;
    memcpy(j->a.shape, j->h.shape, sizeof j->h.shape);
    j->state = JOB_OPENED;
    return 0;
}

/* Per-channel registration state for the loader. */
struct reg {
    struct ndc__payload pl;
    uint64_t *len;                 /* registered bytes per slot; 0 = none */
    int       on;
};

static void reg_init(struct reg *g, ndc_chan *ch, struct ndc__io *io)
{
    memset(g, 0, sizeof *g);
    ndc__chan_payload(ch, &g->pl);
    if (!g->pl.writable || g->pl.nslots == 0 || g->pl.slot_stride > (1u << 30))
        return;
    if (!(g->len = calloc(g->pl.nslots, sizeof *g->len)))
        return;
    g->on = ndc__io_buffers(io, g->pl.nslots) == 0;
}

static int reg_slot(struct reg *g, struct ndc__io *io, void *data, uint64_t need)
{
    if (!g->on || need == 0)
        return -1;
    uint8_t *base = g->pl.base, *p = data;
    if (p < base || (uint64_t)(p - base) >= (uint64_t)g->pl.nslots * g->pl.slot_stride)
        return -1;
    uint64_t idx = (uint64_t)(p - base) / g->pl.slot_stride;
    uint8_t *slot = base + idx * g->pl.slot_stride;
    need += (uint64_t)(p - slot);
    if (g->len[idx] < need) {
        uint64_t len = (need + REG_ROUND - 1) / REG_ROUND * REG_ROUND;
        if (len > g->pl.slot_stride)
            len = g->pl.slot_stride;
        int err = ndc__io_register(io, (unsigned)idx, slot, len);
        if (err) {
            if (err == -ENOMEM || err == -EPERM || err == -ENOTSUP)
                g->on = 0;         /* memlock exhausted: plain reads from now on */
            g->len[idx] = 0;
            return -1;
        }
        g->len[idx] = len;
    }
    return (int)idx;
}

/* The next request of a job: the payload range [cursor, cursor+len) of one
 * kind (head/tail buffered, middle direct). */
static void job_next_req(struct job *j, struct ndc__io_req *r)
{
    uint64_t c = j->cursor, end = j->h.nbytes;
    int direct = j->dfd >= 0 && c >= j->direct_lo && c < j->direct_hi;
    if (j->dfd >= 0)
        end = c < j->direct_lo ? j->direct_lo : c < j->direct_hi ? j->direct_hi : end;
    uint64_t len = end - c < CHUNK ? end - c : CHUNK;
    r->fd = direct ? j->dfd : j->fd;
    r->write = 0;
    r->buf_index = j->buf_index;
    r->buf = j->dst + c;
    r->len = len;
    r->off = j->h.data_offset + c;
    r->user = j;
    j->cursor = c + len;
}

/* Start reading the payload of an opened job whose slot is reserved. */
static int job_start_read(struct job *j, struct ndc__io *io, struct reg *g, uint32_t flags)
{
    uint64_t n = j->h.nbytes;
    j->buf_index = -1;
    j->dst = j->a.data;
    if (j->h.fortran && !ndc__npy_f_is_c(j->h.ndim, j->h.shape)) {
        if (posix_memalign((void **)&j->bounce, 4096, n ? n : 1))
            return ndc__fail(-ENOMEM, "npy: %s: no memory for a %llu-byte Fortran-order buffer",
                             j->path, (unsigned long long)n);
        j->dst = j->bounce;
    } else {
        j->buf_index = reg_slot(g, io, j->dst, n);
    }
    j->direct_lo = j->direct_hi = 0;
    if ((flags & NDC_NPY_DIRECT) && n > 0) {
        uint32_t mem, offa;
        dio_align(j->fd, &mem, &offa);
        if (mem && offa) {
            uint64_t k = (offa - j->h.data_offset % offa) % offa;
            uint64_t m = k < n ? (n - k) / offa * offa : 0;
            if (m > 0 && ((uintptr_t)(j->dst + k) % mem) == 0) {
                char fdpath[64];
                snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", j->fd);
                j->dfd = open(fdpath, O_RDONLY | O_DIRECT | O_CLOEXEC);
                j->direct_lo = k;
                j->direct_hi = k + m;
            }
        }
    }
    j->cursor = 0;
    j->left = n;
    j->pending = 0;
    j->state = JOB_IO;
    for (unsigned i = 0; i < JOB_REQS && j->cursor < n; i++) {
        job_next_req(j, &j->req[i]);
        int err = ndc__io_queue(io, &j->req[i]);
        if (err)
            return ndc__fail(err, "npy: io queue full");   /* sized for it: a bug */
        j->pending++;
    }
    if (j->pending == 0)
        j->state = JOB_DONE;
    return 0;
}

/* A read request of a job completed. */
/* A short transfer (a signal, the ~2 GiB per-call limit): queue the rest of
 * the same request. \return 1 queued; 0 it could not be, which is the
 * job's error (a file must never be left short without one). */
static int requeue_rest(struct job *j, struct ndc__io *io, struct ndc__io_req *r)
{
    r->buf = (uint8_t *)r->buf + r->res;
    r->off += (uint64_t)r->res;
    r->len -= (size_t)r->res;
    if (ndc__io_queue(io, r) == 0) {
        j->pending++;
        return 1;
    }
    if (j->path)
        j->err = ndc__fail(-EIO, "npy: %s: could not queue the rest of a short transfer", j->path);
    else   /* a drain job: its file is named by seq */
        j->err = ndc__fail(-EIO, "npy: %012llu.npy: could not queue the rest of a short transfer",
                           (unsigned long long)j->a.seq);
    return 0;
}

static void job_read_done(struct job *j, struct ndc__io *io, struct ndc__io_req *r)
{
    j->pending--;
    if (r->res <= 0 && !j->err)
        j->err = r->res < 0 ? ndc__fail((int)r->res, "npy: reading %s", j->path)
                            : ndc__fail(-EBADMSG, "npy: %s shrank while being read", j->path);
    if (!j->err) {
        j->left -= (uint64_t)r->res;
        if ((uint64_t)r->res < r->len) {
            if (requeue_rest(j, io, r))
                return;
        } else if (j->cursor < j->h.nbytes) {
            job_next_req(j, r);
            if (ndc__io_queue(io, r) == 0) {
                j->pending++;
                return;
            }
        }
    }
    if (j->pending == 0)
        j->state = JOB_DONE;
}

/* Everything read: put the payload in order and publish it. */
static int job_commit(struct job *j, ndc_chan *ch)
{
    if (j->err)
        return j->err;
    if (j->left)   /* never publish a slot whose payload was not all read */
        return ndc__fail(-EIO, "npy: %s: %llu bytes were never read", j->path,
                         (unsigned long long)j->left);
    if (j->bounce)
        ndc__npy_f2c(j->a.data, j->bounce, ndc_dtype_size(j->h.dtype), j->h.ndim, j->h.shape);
    if (j->h.swap)
        ndc__npy_swap(j->a.data, j->h.nbytes, j->h.dtype);
    return ndc_commit(ch, &j->a);
}

static int load_files(ndc_chan *ch, const char *const *paths, size_t n, const uint64_t *tag,
                      int64_t timeout_ns, const struct ndc_npy_opts *o)
{
    unsigned depth;
    uint32_t flags;
    int err = opts_check(o, &depth, &flags);
    if (err)
        return err;
    if (!ch || (n && !paths))
        return ndc__fail(-EINVAL, "npy: NULL channel or paths");
    if (n > INT32_MAX)
        return ndc__fail(-EINVAL, "npy: %zu files (at most INT_MAX)", n);
    if (depth > n)
        depth = n ? (unsigned)n : 1;

    struct ndc__io *io;
    if ((err = ndc__io_create(&io, depth * JOB_REQS)))
        return err;
    struct job *jobs = calloc(depth, sizeof *jobs);
    if (!jobs) {
        ndc__io_free(io);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < depth; i++)
        jobs[i].fd = jobs[i].dfd = -1;
    struct reg g;
    if (n > 1)          /* pinning pays off over a stream, not for one file */
        reg_init(&g, ch, io);
    else
        memset(&g, 0, sizeof g);

    size_t next = 0, sent = 0;
    unsigned head = 0, count = 0;     /* jobs holding a slot, oldest first */
    err = 0;
    for (;;) {
        /* start files while there is room */
        while (!err && count < depth) {
            struct job *j = &jobs[(head + count) % depth];
            if (j->state == JOB_EMPTY) {
                if (next == n)
                    break;
                if ((err = job_open(j, paths[next]))) {
                    job_close(j);
                    break;
                }
                j->a.tag = tag ? *tag : (uint64_t)next;
                next++;
            }
            int r = ndc_reserve(ch, &j->a, count ? 0 : timeout_ns);
            if (r == -EAGAIN && count)
                break;                  /* reap and commit first, then retry */
            if (r) {
                err = fail_in(r, j->path);
                job_close(j);
                break;
            }
            count++;
            if ((r = job_start_read(j, io, &g, flags))) {
                j->err = r;
                if (j->pending == 0)
                    j->state = JOB_DONE;
            }
        }
        /* commit finished files in order */
        while (count && jobs[head].state == JOB_DONE) {
            struct job *j = &jobs[head];
            int r = job_commit(j, ch);
            if (r)
                ndc_cancel(ch, &j->a);  /* its file failed: the slot goes back unpublished */
            if (r && !err)
                err = r;
            if (!r)
                sent++;
            job_close(j);
            head = (head + 1) % depth;
            count--;
            if (r)
                goto fail;
        }
        if (count == 0 && (err || (next == n && jobs[head].state == JOB_EMPTY)))
            break;
        if (count == 0)
            continue;
        struct ndc__io_req *r;
        int e = ndc__io_reap(io, &r);
        if (e) {
            err = e;
            goto fail;
        }
        job_read_done(r->user, io, r);
    }
    goto out;
fail:
    /* Let the reads in flight land before their slots and buffers go, then
     * give back every reservation: nothing after the failure is committed. */
    while (ndc__io_reap(io, &(struct ndc__io_req *){ NULL }) == 0)
        ;
    for (unsigned k = 0; k < count; k++)
        ndc_cancel(ch, &jobs[(head + k) % depth].a);
    for (unsigned i = 0; i < depth; i++)
        job_close(&jobs[i]);
out:
    for (unsigned i = 0; i < depth; i++)
        if (jobs[i].state != JOB_EMPTY)
            job_close(&jobs[i]);
    ndc__io_free(io);
    free(jobs);
    free(g.len);
    return err ? err : (int)sent;
}

int ndc_npy_read(ndc_chan *ch, const char *path, uint64_t tag, int64_t timeout_ns)
{
    int err = ndc__timeout_check(timeout_ns);
    if (err)
        return err;
    if (!path)
        return ndc__fail(-EINVAL, "npy: NULL path");
    int r = load_files(ch, &path, 1, &tag, timeout_ns, NULL);
    return r < 0 ? r : 0;
}

int ndc_npy_load(ndc_chan *ch, const char *const *paths, size_t n, const struct ndc_npy_opts *o)
{
    return load_files(ch, paths, n, NULL, NDC_FOREVER, o);
}

/* ---- writing ------------------------------------------------------------- */

/* Write all of buf at off through io (one request at a time). */
static int io_write_all(struct ndc__io *io, int fd, const void *buf, size_t len, uint64_t off)
{
    struct ndc__io_req req = { .fd = fd, .write = 1, .buf_index = -1,
                               .buf = (void *)buf, .len = len, .off = off };
    while (req.len > 0) {
        struct ndc__io_req *r;
        int err = ndc__io_queue(io, &req);
        if (!err)
            err = ndc__io_reap(io, &r);
        if (err)
            return err;
        if (req.res <= 0)
            return req.res < 0 ? (int)req.res : -EIO;
        req.buf = (uint8_t *)req.buf + req.res;
        req.off += (uint64_t)req.res;
        req.len -= (size_t)req.res;
    }
    return 0;
}

static int layout(const struct ndc_array *a, size_t esize, int fortran)
{
    int64_t s = (int64_t)esize;
    for (int k = 0; k < a->ndim; k++) {
        int i = fortran ? k : a->ndim - 1 - k;
        if (a->shape[i] != 1 && a->strides[i] != s)
            return 0;
        s *= a->shape[i];
    }
    return 1;
}

int ndc_npy_write(const struct ndc_array *a, const char *path)
{
    if (!a || !path)
        return ndc__fail(-EINVAL, "npy: NULL array or path");
    size_t nbytes = ndc_array_nbytes(a);
    if (nbytes == SIZE_MAX)
        return ndc__fail(-EINVAL, "npy: invalid array (dtype %d, ndim %d)", (int)a->dtype, a->ndim);
    size_t esize = ndc_dtype_size(a->dtype);
    if (nbytes && !a->data)
        return ndc__fail(-EINVAL, "npy: NULL data");
    uint64_t numpy_size;
    int r = ndc__shape_bytes(esize, a->ndim, a->shape, 1, &numpy_size);
    if (r)
        return r;   /* a file np.load (and ndc_npy_read) would refuse */
    /* like np.save: C-contiguous as is, Fortran-contiguous as fortran_order,
     * anything else gathered into C order */
    int c = nbytes == 0 || layout(a, esize, 0);
    int f = !c && layout(a, esize, 1);
    uint8_t hdr[4096];
    int64_t hlen = ndc__npy_format(hdr, sizeof hdr, a->dtype, a->ndim, a->shape, f, 0);
    if (hlen < 0)
        return (int)hlen;
    const void *src = a->data;
    void *tmp = NULL;
    if (!c && !f) {
        if (!(tmp = malloc(nbytes)))
            return ndc__fail(-ENOMEM, "npy: no memory to gather %zu bytes", nbytes);
        ndc__copy_to_c(tmp, a, nbytes);
        src = tmp;
    }
    struct ndc__io *io = NULL;
    int err = ndc__io_create(&io, 1);
    int fd = -1;
    int regular = 0;
    if (!err && (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        err = ndc__fail(-errno, "npy: create %s", path);
    struct stat st;
    if (!err)
        regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (!err)
        err = io_write_all(io, fd, hdr, (size_t)hlen, 0);
    if (!err && nbytes)
        err = io_write_all(io, fd, src, nbytes, (uint64_t)hlen);
    if (fd >= 0 && close(fd) != 0 && !err)
        err = -errno;
    if (err && fd >= 0 && regular)
        unlink(path);   /* a half-written file; never a device or FIFO that was there */
    ndc__io_free(io);
    free(tmp);
    return err ? ndc__fail(err, "npy: writing %s", path) : 0;
}

/* Drain: one job per array being written. */
static int drain_start(struct job *j, struct ndc__io *io, int dirfd, uint32_t flags)
{
    char name[32];
    snprintf(name, sizeof name, "%012llu.npy", (unsigned long long)j->a.seq);
    uint64_t n = ndc_array_nbytes(&j->a);
    uint32_t mem = 0, offa = 0;
    int direct = 0;
    j->fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (j->fd < 0)
        return ndc__fail(-errno, "npy: create %s", name);
    if ((flags & NDC_NPY_DIRECT) && n > 0) {
        dio_align(j->fd, &mem, &offa);
        direct = mem && offa && offa <= 4096 && 4096 % offa == 0 && n % offa == 0 &&
                 (uintptr_t)j->a.data % mem == 0;
        if (direct) {
            char fdpath[64];
            snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", j->fd);
            j->dfd = open(fdpath, O_WRONLY | O_DIRECT | O_CLOEXEC);
            direct = j->dfd >= 0;
        }
    }
    if (posix_memalign((void **)&j->hdr, 4096, 4096))
        return -ENOMEM;
    int64_t hlen = ndc__npy_format(j->hdr, 4096, j->a.dtype, j->a.ndim, j->a.shape, 0,
                                   direct ? 4096 : 0);
    if (hlen < 0)
        return (int)hlen;
    j->hdr_len = (uint64_t)hlen;
    j->h.data_offset = (uint64_t)hlen;
    j->h.nbytes = n;
    j->dst = j->a.data;
    j->buf_index = -1;
    j->pending = 0;
    j->left = n;
    j->cursor = n;                 /* writes go in one request each (split only when short) */
    j->state = JOB_IO;
    int fd = direct ? j->dfd : j->fd;
    j->req[0] = (struct ndc__io_req){ .fd = fd, .write = 1, .buf_index = -1, .buf = j->hdr,
                                      .len = (size_t)hlen, .off = 0, .user = j };
    j->req[1] = (struct ndc__io_req){ .fd = fd, .write = 1, .buf_index = -1, .buf = j->a.data,
                                      .len = n, .off = (uint64_t)hlen, .user = j };
    for (int i = 0; i < (n ? 2 : 1); i++) {
        int err = ndc__io_queue(io, &j->req[i]);
        if (err)
            return ndc__fail(err, "npy: io queue full");
        j->pending++;
    }
    return 0;
}

static void drain_done(struct job *j, struct ndc__io *io, struct ndc__io_req *r)
{
    j->pending--;
    if (r->res <= 0 && !j->err)
        j->err = r->res < 0 ? ndc__fail((int)r->res, "npy: writing %012llu.npy",
                                        (unsigned long long)j->a.seq)
                            : ndc__fail(-EIO, "npy: writing %012llu.npy: no progress",
                                        (unsigned long long)j->a.seq);
    if (!j->err && (uint64_t)r->res < r->len && requeue_rest(j, io, r))
        return;
    if (j->pending == 0)
        j->state = JOB_DONE;
}

/* A write finished: close the file, give the slot back. */
static int drain_finish(struct job *j, ndc_chan *ch, int dirfd)
{
    int err = j->err;
    if (j->dfd >= 0 && close(j->dfd) != 0 && !err)
        err = -errno;
    j->dfd = -1;
    if (j->fd >= 0 && close(j->fd) != 0 && !err)
        err = -errno;
    j->fd = -1;
    if (err) {
        char name[32];
        snprintf(name, sizeof name, "%012llu.npy", (unsigned long long)j->a.seq);
        unlinkat(dirfd, name, 0);
    }
    int r = ndc_release(ch, &j->a);
    job_close(j);
    return err ? err : r;
}

int ndc_npy_drain(ndc_chan *ch, const char *dir, const struct ndc_npy_opts *o)
{
    unsigned depth;
    uint32_t flags;
    int err = opts_check(o, &depth, &flags);
    if (err)
        return err;
    if (!ch || !dir)
        return ndc__fail(-EINVAL, "npy: NULL channel or directory");
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return ndc__fail(-errno, "npy: open directory %s", dir);
    struct ndc__io *io;
    if ((err = ndc__io_create(&io, depth * 2))) {
        close(dirfd);
        return err;
    }
    struct job *jobs = calloc(depth, sizeof *jobs);
    if (!jobs) {
        ndc__io_free(io);
        close(dirfd);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < depth; i++)
        jobs[i].fd = jobs[i].dfd = -1;

    unsigned inflight = 0;
    int written = 0, closed = 0;
    for (;;) {
        while (!err && !closed && inflight < depth) {
            struct job *j = NULL;
            for (unsigned i = 0; i < depth && !j; i++)
                if (jobs[i].state == JOB_EMPTY)
                    j = &jobs[i];
            /* never sleep on the channel while our writes hold slots: the
             * sender may be waiting for exactly those */
            int r = ndc_acquire(ch, &j->a, inflight ? 0 : NDC_FOREVER);
            if (r == -EAGAIN && inflight)
                break;
            if (r == -EPIPE) {
                closed = 1;
                break;
            }
            if (r) {
                err = r;
                break;
            }
            j->err = 0;
            j->fd = j->dfd = -1;
            inflight++;
            if ((r = drain_start(j, io, dirfd, flags))) {
                j->err = r;
                if (j->pending == 0)
                    j->state = JOB_DONE;
            }
            if (written == INT32_MAX - (int)inflight)
                closed = 1;                     /* the count would overflow */
        }
        for (unsigned i = 0; i < depth; i++) {
            if (jobs[i].state != JOB_DONE)
                continue;
            int r = drain_finish(&jobs[i], ch, dirfd);
            inflight--;
            if (r && !err)
                err = r;
            else if (!r)
                written++;
        }
        if (inflight == 0 && (err || closed))
            break;
        if (inflight == 0)
            continue;
        struct ndc__io_req *r;
        int e = ndc__io_reap(io, &r);
        if (e) {
            if (!err)
                err = e;
            break;
        }
        drain_done(r->user, io, r);
    }
    ndc__io_free(io);       /* waits for anything still in flight */
    for (unsigned i = 0; i < depth; i++)
        if (jobs[i].state != JOB_EMPTY)
            drain_finish(&jobs[i], ch, dirfd);
    free(jobs);
    close(dirfd);
    return err ? err : written;
}
