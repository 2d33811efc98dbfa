/*
 * ndchan: zero-copy channels of n-dimensional arrays between processes.
 *
 * A channel is one shared-memory segment (an anonymous memfd or a named
 * POSIX shm object) holding N slots. A sender reserves a slot, writes the
 * array into it in place and commits it; a receiver acquires the oldest
 * committed slot, reads it in place and releases it. ndc_send/ndc_recv do the
 * same with one copy for data that lives elsewhere.
 *
 * Conventions of every call here:
 *  - a fallible call returns 0 (or a count) on success and a negative errno
 *    value on failure; ndc_strerror() gives the text, ndc_last_error() the
 *    details of this thread's last failure;
 *  - out parameters are left untouched on failure (one documented exception:
 *    ndc_recv's -EMSGSIZE fills in the shape so the caller can size a buffer);
 *  - timeouts are relative, in nanoseconds: NDC_FOREVER (-1) blocks, 0 tries
 *    once, a positive value waits at most that long (values near INT64_MAX
 *    mean no limit: deadlines saturate); any other negative value is
 *    -EINVAL, so a passed deadline computed as `deadline - now` never turns
 *    into "forever";
 *  - the library prints nothing, installs no signal handler, starts no thread
 *    (it registers pthread_atfork handlers: see Fork below), except one
 *    helper thread per ndc_notify_fd where io_uring cannot wait on futexes.
 *
 * Liveness. Every process attached to a channel holds an OFD lock
 * (fcntl F_OFD_SETLK) on one byte of the segment file, through a file
 * description of its own; the kernel drops it when the process dies. A
 * peer is alive exactly while its lock is held, which holds in any pid
 * namespace (containers sharing /dev/shm or an fd), without /proc, and
 * whatever pids are reused. What a dead peer held comes back, and waiters
 * on the other side get -EOWNERDEAD, within 100 ms: waiters look every
 * 40 ms while they sleep; one that died in the middle of a hand-off (a few
 * instructions) is repaired from the slot table, so its half-done step
 * loses nothing committed. A process that is merely stopped (SIGSTOP, a
 * debugger) or slow is alive: it keeps its loans, and what it is in the
 * middle of is waited for, never taken from it (calls with a timeout give
 * up at their deadline). In a sandbox without /proc an anonymous channel cannot open a
 * description of its own; such a process then judges nobody dead (dead
 * peers' slots stay held) but is itself judged correctly by others.
 *
 * Fork. A child may use a handle it inherited: at its first call it joins
 * as a process of its own (loans and reservations stay the parent's). A
 * child that never uses it does not keep the parent's peer "alive".
 *
 * Containers. Processes in different pid, mount or user namespaces may
 * share a channel when they share the file: a named channel through a
 * common /dev/shm (same tmpfs), or any channel through an fd passed over a
 * unix socket (ndc_open_fd). Every peer needs read and write access to the
 * file (opts.mode). Not supported: peers on different kernels (VMs), or
 * /dev/shm directories that are different tmpfs instances (the name then
 * names different files).
 *
 * Thread safety: every call on one ndc_chan may run concurrently from any
 * number of threads, except ndc_free, which must be the handle's last call.
 */
#ifndef NDCHAN_H
#define NDCHAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(NDC_BUILDING) && defined(__GNUC__)
#define NDC_API __attribute__((visibility("default")))
#else
#define NDC_API
#endif

#define NDC_VERSION_MAJOR 0
#define NDC_VERSION_MINOR 1

/* ---- constants ---------------------------------------------------------- */

#define NDC_FOREVER   (-1)           /* timeout: block until done */

#define NDC_RDONLY    (1u << 0)      /* ndc_open*: receive only; payload mapped read-only */
#define NDC_POPULATE  (1u << 1)      /* opts.flags: fault every page in at creation */
#define NDC_HUGEPAGES (1u << 2)      /* opts.flags: back payloads with huge pages, or fail clearly */
#define NDC_BROADCAST (1u << 3)      /* opts.flags: every subscriber gets every array (Broadcast) */
#define NDC_SUBSCRIBE (1u << 4)      /* ndc_open*: subscribe to a broadcast channel at once */
#define NDC_MAX_SUB_LOANS 32         /* loans one broadcast subscriber may hold at once */

#define NDC_MAX_DIMS  32
#define NDC_MAX_SLOTS 4096           /* opts.slots above this is -EINVAL */
#define NDC_MAX_PEERS 256            /* processes attached at once; one more is -EUSERS */
#define NDC_MAX_SLOT_BYTES (1ull << 40) /* opts.slot_bytes above this is -EINVAL */
#define NDC_NAME_MAX  200            /* longest channel name, leading '/' included */

/* ---- dtypes ------------------------------------------------------------- */

enum ndc_dtype {
    NDC_BOOL = 1, NDC_I8, NDC_I16, NDC_I32, NDC_I64,
    NDC_U8, NDC_U16, NDC_U32, NDC_U64,
    NDC_F16, NDC_BF16, NDC_F32, NDC_F64, NDC_C64, NDC_C128
};
#define NDC_DTYPE_LAST NDC_C128

/* Size in bytes of one element; 0 for a value that is not a dtype. */
NDC_API size_t ndc_dtype_size(enum ndc_dtype t);
/* numpy's name ("float64", "bfloat16", "complex128", "bool"); "invalid" for
 * a value that is not a dtype. Never NULL. */
NDC_API const char *ndc_dtype_name(enum ndc_dtype t);

/* ---- arrays ------------------------------------------------------------- */

struct ndc_array {                  /* a view: it never owns data */
    void          *data;
    enum ndc_dtype dtype;
    int            ndim;
    int64_t        shape[NDC_MAX_DIMS];
    int64_t        strides[NDC_MAX_DIMS];   /* bytes; any sign on the send side */
    uint64_t       tag;             /* the sender's, carried unchanged */
    uint64_t       seq;             /* set on receive: the channel's commit order, from 0,
                                       never given twice; an array whose receiver died
                                       before it had it is delivered again, with its
                                       own (older) seq */
};

/* Describe `data` as a C-ordered array: fills dtype, ndim, shape and C-order
 * strides, sets tag and seq to 0. `shape` may be NULL when ndim is 0.
 * \return 0
 * \return -EINVAL   a NULL `a`, an unknown dtype, ndim outside 0..NDC_MAX_DIMS,
 *                   a negative extent, or a NULL shape with ndim > 0
 * \return -EOVERFLOW the payload size does not fit in int64_t
 * `a` is untouched on failure. */
NDC_API int ndc_array_init(struct ndc_array *a, enum ndc_dtype t, int ndim,
                           const int64_t *shape, void *data);

/* Payload size: product of the shape times the element size (strides play no
 * part). SIZE_MAX when `a` is NULL or invalid (unknown dtype, bad ndim,
 * negative extent) or the size overflows int64_t. 0 for a zero-size array. */
NDC_API size_t ndc_array_nbytes(const struct ndc_array *a);

/* ---- channels ----------------------------------------------------------- */

typedef struct ndc_chan ndc_chan;

struct ndc_chan_opts {
    /* The first three fields keep the original contract's order: {slots, slot_bytes, flags}. */
    uint32_t slots;        /* arrays in flight; 0 = default (4); at most NDC_MAX_SLOTS */
    uint64_t slot_bytes;   /* largest payload; 0 = default (64 MiB); at most NDC_MAX_SLOT_BYTES.
                              Untouched capacity costs no memory. */
    uint32_t flags;        /* NDC_POPULATE, NDC_HUGEPAGES, NDC_BROADCAST; other bits are
                              -EINVAL */
    int64_t  spin_ns;      /* how long a waiter spins before it sleeps in the kernel:
                              0 = default (adaptive, up to 20 us, never when the peer
                              last ran on the waiter's own CPU); < 0 = never spin */
    /* NUMA placement of the payload pages (see ndc_numa_*). 0 = first touch. */
    uint32_t numa_policy;  /* enum ndc_numa_policy */
    int32_t  numa_node;    /* NDC_NUMA_BIND / NDC_NUMA_PREFERRED: the node */
    uint64_t numa_nodeset; /* NDC_NUMA_INTERLEAVE: bit i = node i; 0 = all nodes */
    uint32_t mode;         /* named channels: permission bits of the shm file, e.g. 0660 to
                              share with a group; 0 = 0600. Applied exactly (umask plays no
                              part). Every peer, receive-only ones included, needs read and
                              write permission: the control block is written by all. */
    /* NDC_BROADCAST only (0 otherwise): */
    uint32_t history;      /* arrays a late subscriber gets first (the last ones committed);
                              0..slots-1; 0 = none */
    uint32_t slow_policy;  /* enum ndc_slow_policy: what a slow subscriber does to the
                              publisher; 0 = NDC_SLOW_BLOCK */
    uint32_t reserved[9];  /* must be zero */
};

/* Broadcast channels (opts.flags NDC_BROADCAST): what a slow subscriber does. */
enum ndc_slow_policy {
    NDC_SLOW_BLOCK = 0,    /* lossless: the slowest subscriber sets the pace */
    NDC_SLOW_LATEST = 1,   /* the publisher never waits for subscribers: each acquire gives the
                              newest array the subscriber has not had, older ones are skipped
                              and counted in its `dropped` */
};

/* Create a channel and attach to it.
 * name == NULL: an anonymous memfd, shared by fork() or by passing ndc_fd();
 * sealed against growing and shrinking. Otherwise a POSIX shm object "/name"
 * in /dev/shm (a leading '/' is optional; no other '/', no control
 * characters, at most NDC_NAME_MAX bytes with the '/'), with permission bits
 * opts.mode (0600 by default). A named channel is built complete under no
 * name and then linked to its name, so no process ever opens a half-built
 * one; a failed create leaves nothing behind.
 * Memory: the file is as large as its capacity, but untouched slots cost
 * nothing; the control block's pages are allocated here, a slot's when a
 * sender first needs them (see ndc_reserve).
 * o == NULL means all defaults.
 * \return 0, *ch set
 * \return -EINVAL    bad name, unknown flag bit, nonzero reserved field, mode
 *                    bits beyond 0777, a size above the limits, history or
 *                    slow_policy without NDC_BROADCAST, history >= slots, or an
 *                    unknown slow_policy
 * \return -EEXIST    a shm object of that name exists (ndc_last_error() names it)
 * \return -ENOSPC    the shm filesystem cannot hold the control block (or,
 *                    with NDC_POPULATE, the whole channel); ndc_last_error()
 *                    gives its free space
 * \return -ENOMEM    NDC_HUGEPAGES and the system has no huge pages to give
 *                    (ndc_last_error() names the setting), out of memory, or
 *                    a memory cgroup limit (anonymous channels, NDC_POPULATE)
 * \return -ENOTSUP   a NUMA policy this build or machine cannot honour (with
 *                    NDC_HUGEPAGES: one needs shmem THP, hugetlb keeps no shared policy)
 * \return -ENODEV    a NUMA node that does not exist
 * \return other      -errno of memfd_create, open, ftruncate, mmap, link (-EACCES:
 *                    no write permission on /dev/shm) */
NDC_API int ndc_create(ndc_chan **ch, const char *name, const struct ndc_chan_opts *o);

/* Attach to a named channel. flags: 0, NDC_RDONLY (receive only: the
 * payload is mapped read-only and sending is -EPERM; the file must still be
 * readable and writable, see opts.mode), NDC_SUBSCRIBE (a broadcast
 * channel's subscriber from now on: see ndc_subscribe), or both. A channel being created is
 * invisible until it is complete (-ENOENT), never half-built.
 * \return 0, *ch set
 * \return -EINVAL  unknown flags (checked first), a bad name, NULL ch,
 *                  NDC_SUBSCRIBE on a channel that is not a broadcast one
 * \return -ENOENT  no such channel (yet: ndc_open_wait waits for one)
 * \return -EACCES  the file's mode does not let this user read and write it
 * \return -EPROTO  not an ndchan channel of this layout version (another
 *                  program's shm object, or a channel of an older ndchan)
 * \return -EBADMSG a channel whose geometry is inconsistent (corrupt)
 * \return -EUSERS  NDC_MAX_PEERS processes attached
 * \return -ETIMEDOUT a live process has held the channel's lock for over a
 *                  second (stopped inside it) while this one had to retire a
 *                  dead process's entry to join */
NDC_API int ndc_open(ndc_chan **ch, const char *name, uint32_t flags);
/* As ndc_open, on a segment fd (from ndc_fd() of another process, passed over
 * a unix socket). The fd is duplicated: the caller keeps and closes its own. */
NDC_API int ndc_open_fd(ndc_chan **ch, int fd, uint32_t flags);
/* As ndc_open, but a channel that does not exist yet is waited for, up to
 * timeout_ns (NDC_FOREVER: no limit; 0: one try, as ndc_open), so a consumer
 * may start before its producer. A channel is never seen half-created.
 * \return as ndc_open, and -ETIMEDOUT (still no such channel), -EINTR. */
NDC_API int ndc_open_wait(ndc_chan **ch, const char *name, uint32_t flags, int64_t timeout_ns);
/* The segment's file descriptor, owned by the handle (close-on-exec). */
NDC_API int ndc_fd(const ndc_chan *ch);

/* End of stream. Senders get -EPIPE from then on; receivers get every array
 * committed before it, then -EPIPE. Wakes every waiter. Never waits on
 * another process. Closing twice is harmless. \return 0, or -EINVAL */
NDC_API int ndc_close(ndc_chan *ch);
/* Detach this process: loans and reservations it still holds are returned to
 * the pool, the mapping and fd are released. Does not close the stream (a
 * receiver waiting on a stream whose every sender detached without
 * ndc_close gets -EOWNERDEAD; one whose last sender closed it, then
 * detached or died, gets -EPIPE). Never waits on another process. NULL is
 * a no-op. */
NDC_API void ndc_free(ndc_chan *ch);
/* Remove a named channel's name; attached processes keep working, and the
 * memory goes when the last of them detaches. Only an ndchan channel is
 * removed: another program's object of that name is left in place.
 * \return 0; -ENOENT no such name; -EPROTO not an ndchan channel; -EINVAL a
 * bad name; -EACCES/-EPERM no permission on /dev/shm. */
NDC_API int ndc_unlink(const char *name);

/* ---- zero copy: write and read in place --------------------------------- */

/* Wait for a free slot and lend it to the caller.
 * in:  a->dtype, a->ndim, a->shape, a->tag
 * out: a->data (the slot's payload, page aligned), a->strides (C order)
 * The array is not visible to receivers until ndc_commit. The pages of the
 * array's bytes are allocated before the slot is handed out (fallocate,
 * once per slot and size), so writing them cannot raise SIGBUS on a full
 * shm filesystem; bytes past the reserved array (an array grown at commit)
 * are not claimed.
 * \return 0
 * \return -EINVAL   invalid dtype/ndim/shape
 * \return -E2BIG    the array is larger than slot_bytes (checked before waiting)
 * \return -EPERM    the handle is receive-only
 * \return -EPIPE    the channel is closed
 * \return -EAGAIN   timeout 0 and no slot free (or a repair of the channel, after
 *                   a peer died mid hand-off, under way for longer than a try
 *                   waits: 200 us)
 * \return -ETIMEDOUT, -EINTR (a caught signal while asleep)
 * \return -EOWNERDEAD no slot is free and every receiver is gone
 * \return -ENOSPC   the shm filesystem has no room for the array's pages
 *                   (ndc_last_error() names it and its free space); -ENOMEM
 *                   likewise for a memory cgroup limit. The slot stays free.
 * \return -EBADMSG  the segment's shared state is corrupt */
NDC_API int ndc_reserve(ndc_chan *ch, struct ndc_array *a, int64_t timeout_ns);
/* Publish a reserved slot. a->data must be what ndc_reserve returned;
 * dtype, ndim, shape and tag are read again (the shape may shrink, never grow
 * past slot_bytes); strides must be C order. Takes no lock and never waits
 * for a peer's progress, with two rare exceptions, each for as long as the
 * process it waits for lives: a receiver inside the few instructions that
 * empty the ring cell this commit needs (a full ring turning over), and a
 * repair under way. Behind a process stopped there (SIGSTOP, a debugger)
 * it waits until that one runs again or dies.
 * \return 0; -EINVAL not a slot this process reserved, or a bad header;
 * -E2BIG grown past slot_bytes (the slot stays reserved);
 * -EPIPE the channel was closed (the slot is discarded). */
NDC_API int ndc_commit(ndc_chan *ch, struct ndc_array *a);
/* Give a reserved slot back without publishing it (the array could not be
 * produced). \return 0; -EINVAL not a slot this process reserved. */
NDC_API int ndc_cancel(ndc_chan *ch, struct ndc_array *a);
/* Wait for the oldest committed array and lend it to the caller; fills every
 * field of `a`; a->data points into the segment (read-only under NDC_RDONLY).
 * \return 0; -EAGAIN (timeout 0, and nothing committed yet: a commit still in
 * progress in another process is not waited for; or a repair under way for
 * longer than a try waits, 200 us); -ETIMEDOUT; -EINTR;
 * -EPIPE (closed and drained); -EOWNERDEAD (empty and every sender gone);
 * -ENOBUFS (broadcast: this subscriber holds NDC_MAX_SUB_LOANS loans already);
 * -EBADMSG (the slot's header failed validation: the array is dropped, its
 * slot returned, and the next call goes on with the next array). */
NDC_API int ndc_acquire(ndc_chan *ch, struct ndc_array *a, int64_t timeout_ns);
/* Return an acquired slot to the pool (loans may be released in any order).
 * Never waits.
 * \return 0; -EINVAL `a` is not a loan this process holds */
NDC_API int ndc_release(ndc_chan *ch, struct ndc_array *a);

/* ---- one copy each side ------------------------------------------------- */

/* Copy `a` (any strides: negative, zero, non-contiguous) into a slot, C order,
 * and commit it. Returns as ndc_reserve, and -EINVAL for an array of more
 * than one element whose strides are all zero (unset: see ndc_send_flags). */
NDC_API int ndc_send(ndc_chan *ch, const struct ndc_array *a, int64_t timeout_ns);
/* ndc_send with flags: 0 or NDC_SEND_BROADCAST. Without it, an array of more
 * than one element whose strides are all zero is -EINVAL: that is what a
 * struct literal whose strides were left unset looks like (fill them with
 * ndc_array_init). With it, such an array is a deliberate broadcast (every
 * element is element 0, as numpy.broadcast_to makes). */
#define NDC_SEND_BROADCAST (1u << 0)
NDC_API int ndc_send_flags(ndc_chan *ch, const struct ndc_array *a, int64_t timeout_ns,
                           uint32_t flags);
/* Receive into the caller's buffer a->data of `capacity` bytes, C order.
 * \return as ndc_acquire, and -EMSGSIZE: the array is larger than capacity.
 * It is kept: the next ndc_recv or ndc_acquire on this handle returns it, and
 * a's dtype/ndim/shape/tag/seq describe it (a->data is untouched) so
 * ndc_array_nbytes(a) is the capacity needed. A NULL a->data with capacity 0
 * is the way to learn the next array's size without taking it (a zero-size
 * array is received whole). */
NDC_API int ndc_recv(ndc_chan *ch, struct ndc_array *a, size_t capacity, int64_t timeout_ns);

/* ---- waiting on many channels, pollable fds ----------------------------
 * Both report the condition an ndc_acquire or ndc_reserve would meet now,
 * without taking anything: "would not wait", because there is an array
 * (a free slot) to take, or because the call would fail at once (end of
 * stream, every peer of the other side gone). Nothing is reserved for the
 * caller: another thread or process may take it first, so a try with
 * timeout 0 may still give -EAGAIN; wait again then.
 * Peers that die are noticed within 100 ms, as by a blocking call. */

#define NDC_WAIT_ACQUIRE (1u << 0)   /* an ndc_acquire / ndc_recv would not wait */
#define NDC_WAIT_RESERVE (1u << 1)   /* an ndc_reserve / ndc_send would not wait */
#define NDC_WAIT_MAX     65536u      /* most entries of one ndc_wait_any */

/* Wait until any of n (channel, what) entries would not wait, and say
 * which. chans[i] with what[i] (NDC_WAIT_ACQUIRE or NDC_WAIT_RESERVE; 0
 * skips the entry, whose channel may then be NULL). A channel may appear
 * in several entries. On success every ready[i] is set:
 *    1            an array (acquire) or a free slot (reserve) is there:
 *                 try it with timeout 0
 *    0            not ready (or a skipped entry)
 *   -EPIPE        end of stream: the call would return -EPIPE (acquire:
 *                 closed and drained; reserve: closed)
 *   -EOWNERDEAD   nothing there and every peer of the other side is gone
 *                 (a call with timeout 0 says -EAGAIN in that case: this
 *                 is how a poller learns it)
 *   -EPERM        NDC_WAIT_RESERVE on a receive-only handle
 * Sleeps in the kernel on the channels' own futex words (futex_waitv, 128
 * words per call): an entry's wake-up costs its poster one FUTEX_WAKE,
 * as for any sleeper, and while wait-any waiters are among a channel's
 * sleepers each post wakes all of them (never only this one), so a
 * waiter here never takes a wake-up from a blocked ndc_acquire/reserve.
 * Over 128 entries (Linux 6.7 and io_uring available) one sleep covers
 * them all; otherwise the first 128 entries wake at once and the others
 * are looked at every millisecond (put the busy ones first). Without
 * futex_waitv (Linux < 5.16) the first entry wakes at once and the others
 * are looked at every millisecond. No wake-up is ever missed. Cost: each
 * sleep counts the caller in on every entry's channel (a few atomic
 * operations each), and every 40 ms asleep it checks each channel's
 * peers for deaths (a system call per attached process).
 * \return the number of nonzero ready[] entries (>= 1)
 * \return -EAGAIN    timeout 0 and no entry ready
 * \return -ETIMEDOUT no entry became ready in time
 * \return -EINTR     a caught signal while asleep (one caught between two
 *                    sleeps, as the call looks for dead peers, interrupts
 *                    nothing)
 * \return -EINVAL    n > NDC_WAIT_MAX, a NULL array with n > 0, an unknown
 *                    what[i], a NULL chans[i] with what[i] != 0, a negative
 *                    timeout other than NDC_FOREVER
 * \return -ENOMEM
 * ready is untouched on failure. n == 0 (or every entry skipped) just
 * sleeps out the timeout (-ETIMEDOUT, -EAGAIN for 0). */
NDC_API int ndc_wait_any(ndc_chan *const *chans, const uint32_t *what, uint32_t n,
                         int32_t *ready, int64_t timeout_ns);

/* A file descriptor that is readable while an acquire (what =
 * NDC_WAIT_ACQUIRE) or a reserve (NDC_WAIT_RESERVE) on this handle would
 * not wait: for poll, epoll, select, io_uring poll, asyncio's add_reader.
 * The fd is the handle's, made on the first call and returned again by
 * later calls with the same `what` (one per what); it is closed by
 * ndc_free (remove it from epoll sets first: a closed fd leaves them), and
 * the caller must not close, read or write it. Close-on-exec.
 * Readiness is level-triggered with respect to the condition as of the
 * last arming: ndc_notify_fd arms it, and so does ndc_notify_arm, which
 * the caller calls when it has taken what there was:
 *     fd readable -> take with timeout 0 until -EAGAIN -> ndc_notify_arm:
 *         0   armed: back to poll; the fd turns readable when an array
 *             (slot) comes, the stream ends or a peer of the other side dies
 *         1   something came meanwhile: take again (the fd stays readable)
 *         < 0 the call's answer now: -EPIPE, -EOWNERDEAD (the fd stays
 *             readable, so stop polling it)
 * The fd may be readable when a try then gives -EAGAIN (another taker was
 * first, or a peer left without a death): arm and poll again. Edge-
 * triggered use (EPOLLET) works with the same loop: every completion that
 * makes it readable is a new edge, and an arm that returns 1 leaves it
 * readable without a new edge, so keep taking until an arm returns 0.
 * Mechanism: an io_uring of this process with a futex wait on the
 * channel's word (Linux 6.7+), and an inotify watch on the segment file
 * for deaths; where io_uring cannot wait on futexes (older kernels,
 * io_uring disabled or filtered by seccomp, no inotify), an eventfd
 * written by a helper thread of this process that sleeps on the word (the
 * library then runs a thread per such fd; it blocks every signal). Either
 * way nothing crosses processes: anonymous channels and peers in other pid
 * or network namespaces work alike, and a poster makes no system call for
 * it unless an fd is armed (then one FUTEX_WAKE per post, from the arming
 * until the next arm after it fired). Poll the fd from any thread; the
 * io_uring's completions are delivered by the thread that last armed it,
 * interrupting (without a signal handler) whatever it is blocked in.
 * Fork: a child does not share the parent's fd (the number it inherits
 * stays the parent's ring or eventfd and must not be polled); its first
 * ndc_notify_fd on the handle makes a new one for it.
 * \return the fd (>= 0)
 * \return -EINVAL    NULL ch, or what is not exactly one of the two
 * \return -EPERM     NDC_WAIT_RESERVE on a receive-only handle
 * \return -EMFILE, -ENFILE, -ENOMEM, -EAGAIN (no thread): no fd, memory or
 *                    thread to make it with */
NDC_API int ndc_notify_fd(ndc_chan *ch, uint32_t what);
/* Re-arm the handle's notify fd for `what` and say the condition now
 * (see ndc_notify_fd for the loop). Never waits.
 * \return 0 armed, nothing to take: the fd is not readable (until it fires)
 * \return 1 something to take now; the fd stays readable
 * \return -EPIPE, -EOWNERDEAD: as an acquire/reserve would now (see
 *         ndc_wait_any's ready[]); the fd stays readable
 * \return -EPERM  NDC_WAIT_RESERVE on a receive-only handle
 * \return -EINVAL NULL ch, a bad what, or no notify fd for it in this
 *         process (ndc_notify_fd makes one) */
NDC_API int ndc_notify_arm(ndc_chan *ch, uint32_t what);

/* ---- state -------------------------------------------------------------- */

struct ndc_stat {
    uint32_t slots, free, ready, loaned;  /* slot states now; they add up to slots */
    uint32_t attached;                    /* live attachments, the caller's included: one per
                                             handle (a process with two handles of the
                                             channel counts twice) */
    uint32_t receivers_waiting;           /* receivers asleep on an empty channel: idle */
    uint32_t senders_waiting;             /* senders asleep on a full channel: backpressure */
    uint32_t closed;
    uint32_t stale;                       /* no handle but the caller's is attached: every
                                             process that used the channel is gone */
    uint64_t sent, received, bytes_sent;  /* commits, arrays taken by receivers, bytes
                                             committed; on a work queue sent - received is
                                             what is ready. Broadcast: received and dropped
                                             sum every subscriber's, departed ones included */
    uint64_t slot_bytes;
    uint32_t broadcast;                   /* NDC_BROADCAST */
    uint32_t subscribers;                 /* broadcast: subscribed handles attached */
    uint64_t dropped;                     /* broadcast: arrays subscribers skipped (latest) */
    uint32_t history, slow_policy;        /* broadcast: the channel's opts.history and
                                             opts.slow_policy */
};
/* A snapshot, read without locking (never waits on another process; asks
 * the kernel whether each peer is alive: a syscall per attached process).
 * \return 0; -EBADMSG a slot state word is corrupt */
NDC_API int ndc_stat(const ndc_chan *ch, struct ndc_stat *st);

/* ---- broadcast ---------------------------------------------------------- */

/* A channel created with NDC_BROADCAST is publish/subscribe: every
 * subscriber gets every array committed after it subscribed, in commit
 * order, zero copy (all subscribers read the same slot; none may write
 * it). Publishers use ndc_reserve/ndc_commit/ndc_send as on a work queue,
 * several at once if they like (one commit order). A handle becomes a
 * subscriber with ndc_subscribe, NDC_SUBSCRIBE at open, or its first
 * ndc_acquire/ndc_recv; ndc_free ends it. Subscribers use ndc_acquire/
 * ndc_release/ndc_recv, each holding at most NDC_MAX_SUB_LOANS loans at
 * once (-ENOBUFS beyond); several threads of one subscribing handle share
 * its stream (each array goes to one of them).
 *
 * A slot returns to the publisher once no subscriber still needs it. Until
 * then it keeps its array: opts.history = H lets a subscriber that arrives
 * late first get the last H arrays (H <= slots - 1).
 * A slow subscriber, by opts.slow_policy:
 *   NDC_SLOW_BLOCK   lossless: the publisher waits (reserve blocks) until the
 *                    slowest subscriber has released the oldest array;
 *   NDC_SLOW_LATEST  the publisher never waits for a subscriber (only, if
 *                    every slot is being read at once, for a reader to let
 *                    go): it reuses the oldest slot nobody is reading. Each
 *                    ndc_acquire gives the newest array the subscriber has
 *                    not had; the ones it skipped are counted in its
 *                    `dropped` (ndc_subscribers).
 * A latest-value channel (multiprocessing's shared Value/Array): NDC_BROADCAST
 * with history 1 and NDC_SLOW_LATEST. The writer publishes whenever it
 * likes and never waits; a reader's ndc_acquire(timeout 0) returns the
 * newest value it has not seen yet (-EAGAIN: nothing newer since its last
 * one), and a reader that opens late gets the current value at once:
 *
 *     opts.flags = NDC_BROADCAST; opts.history = 1; opts.slow_policy = NDC_SLOW_LATEST;
 *     writer: ndc_send(ch, &a, NDC_FOREVER);       (never blocks on readers)
 *     reader: ndc_open(&ch, "pose", NDC_SUBSCRIBE | NDC_RDONLY);
 *             ndc_acquire(ch, &a, 0) ... ndc_release(ch, &a);
 *
 * A subscriber that dies gives back what it held within 100 ms and stops
 * holding back the publisher. ndc_wait_drained on a broadcast channel waits
 * until every attached subscriber has had and released every array.
 * A publisher never gets -EOWNERDEAD for lack of subscribers: with none,
 * arrays are kept as history and slots reused. */

/* Subscribe this handle (see above): it gets every array committed from
 * now on, after the last `history` ones. A second call does nothing.
 * \return 0; -EINVAL NULL or not a broadcast channel. */
NDC_API int ndc_subscribe(ndc_chan *ch);

struct ndc_sub_stat {
    int32_t  pid;        /* the subscriber's process, in its own pid namespace */
    uint32_t loans;      /* arrays it holds now */
    uint64_t position;   /* the seq of the next array it takes */
    uint64_t lag;        /* arrays committed that it has not taken yet */
    uint64_t received;   /* arrays it got */
    uint64_t dropped;    /* arrays it skipped (NDC_SLOW_LATEST) */
};
/* Each attached subscriber of a broadcast channel, up to cap of them into
 * out (a snapshot; nothing waits or changes).
 * \return the number of subscribers (more than cap: only cap written);
 * -EINVAL NULL ch, NULL out with cap > 0, or not a broadcast channel. */
NDC_API int ndc_subscribers(const ndc_chan *ch, struct ndc_sub_stat *out, uint32_t cap);

/* Wait until every array committed so far (before this call) has been
 * released by its receiver (multiprocessing.JoinableQueue.join()'s
 * counterpart): none of them is still ready or on loan. An array whose
 * receiver died holding it counts as done (its slot came back). flags: 0,
 * or NDC_DRAIN_CLOSED to wait, in addition, until the channel is closed
 * and holds no array at all (every sender finished and every array was
 * consumed). Polls the slot table every millisecond while it waits; takes
 * no lock, changes nothing.
 * \return 0 drained
 * \return -EAGAIN   timeout 0 and not drained
 * \return -ETIMEDOUT, -EINTR (a caught signal while asleep)
 * \return -EOWNERDEAD arrays remain and every receiver is gone
 * \return -EINVAL   NULL ch, unknown flags, a negative timeout other than
 *                   NDC_FOREVER */
#define NDC_DRAIN_CLOSED (1u << 0)
NDC_API int ndc_wait_drained(ndc_chan *ch, uint32_t flags, int64_t timeout_ns);

/* Text for a value returned by any call here (0 or negative errno). */
NDC_API const char *ndc_strerror(int err);
/* Details of the last call on this thread that failed ("NDC_HUGEPAGES: ...",
 * "segment magic mismatch", ...); "" when none. Valid until the thread's
 * next ndc_ call. */
NDC_API const char *ndc_last_error(void);

/* Spin budget of this handle (see ndc_chan_opts.spin_ns); returns 0. */
NDC_API int ndc_set_spin(ndc_chan *ch, int64_t spin_ns);

/* ---- NUMA placement (hwloc) --------------------------------------------- */

enum ndc_numa_policy {
    NDC_NUMA_FIRST_TOUCH = 0,  /* the kernel's default: where the first writer runs */
    NDC_NUMA_BIND,             /* only numa_node; fail rather than spill */
    NDC_NUMA_PREFERRED,        /* numa_node first, others when it is full */
    NDC_NUMA_INTERLEAVE,       /* page by page over numa_nodeset */
    NDC_NUMA_NEAR_RECEIVER,    /* bound to the node of the first process that receives, at its
                                  first receive (pages written before are migrated); observers
                                  that attach without receiving (ndchan-stat) decide nothing */
};

/* Nodes holding the payload pages now: counts[i] = pages on node i, for
 * i < max (entries beyond the machine's nodes are 0). Only touched pages
 * count. \return one more than the machine's highest node number (its node
 * count when node numbers have no gaps), or -ENOTSUP without hwloc, or
 * -errno; counts is untouched on failure. */
NDC_API int ndc_numa_where(const ndc_chan *ch, uint64_t *counts, int max);
/* Bind the calling thread to the cores of the node holding most of the
 * channel's payload pages (or of its bound node when nothing is touched yet).
 * \return the node, or -ENOTSUP, -ENODEV, -errno. */
NDC_API int ndc_numa_pin_near(const ndc_chan *ch);
/* Bind the calling thread to one CPU. \return 0 or -EINVAL/-errno. */
NDC_API int ndc_pin_cpu(int cpu);
/* Suggest a producer/consumer CPU pair sharing the most (same L3, same
 * node, different cores). \return 0, or -ENOTSUP, -ENODEV (one CPU). */
NDC_API int ndc_suggest_cpus(int *producer_cpu, int *consumer_cpu);

/* ---- .npy files --------------------------------------------------------- */

/* numpy's .npy format, versions 1.0, 2.0 and 3.0, for every dtype above.
 * Files are read straight into a reserved slot with io_uring (pread/pwrite
 * when built without liburing) and written straight from a slot.
 *
 * What a receiver sees of a file:
 *  - C-order files: the payload as is, zero copy;
 *  - Fortran-order files: transposed into C order on read, so the receiver
 *    gets the shape and values np.load() gives, C-ordered (slots carry C
 *    order only). This costs one extra pass and a temporary buffer of the
 *    payload's size; files whose two layouts coincide (at most one extent
 *    above 1) are read straight into the slot;
 *  - big-endian ('>') files: read as they are, then byte-swapped in the slot
 *    before the commit: arrays always arrive in this host's byte order;
 *  - bfloat16: numpy has no descr for it; ndchan writes and reads the descr
 *    'bfloat16' (ml_dtypes' name).
 * Rejected: object, structured, string, void, datetime and longdouble
 * dtypes, more than NDC_MAX_DIMS dimensions (-ENOTSUP); a malformed header,
 * one that lies about its length, a file shorter or longer than header plus
 * payload (-EBADMSG); a shape whose size overflows (-EOVERFLOW). A rejected
 * file never takes a slot. ndc_last_error() names the file and the reason. */

struct ndc_npy_opts {
    uint32_t queue_depth;  /* files in flight for ndc_npy_load/ndc_npy_drain;
                              0 = default (4); at most 256 */
    uint32_t flags;        /* NDC_NPY_DIRECT; other bits are -EINVAL */
    uint64_t reserved[4];  /* must be zero */
};
/* O_DIRECT where alignment allows. Reading: the part of the payload whose
 * file offset and slot address meet the file system's direct-I/O alignment
 * (statx DIOALIGN) bypasses the page cache; the unaligned head and tail do
 * not. Writing (drain): payloads whose length is block aligned go direct,
 * the header then padded to 4096 bytes. Worth it for cold files read or
 * written once (no page-cache copy, no cache pollution); a loss for files
 * already in the page cache, which are then read from the device again. */
#define NDC_NPY_DIRECT (1u << 0)

/* Read one .npy file into the channel: check the header, reserve a slot of
 * its dtype and shape (waiting up to timeout_ns), read the payload straight
 * into the slot, commit it with tag `tag`. See above for Fortran order and
 * byte order. For a stream of files ndc_npy_load is faster (overlap, pinned
 * buffers).
 * \return 0
 * \return -EBADMSG   not a .npy file, a malformed or lying header, a file
 *                    whose size is not header + payload, or that shrank
 * \return -ENOTSUP   a dtype or version ndchan does not take
 * \return -EOVERFLOW the payload size overflows
 * \return -EINVAL    a NULL argument, or not a regular file
 * \return -E2BIG     the array is larger than slot_bytes
 * \return -ENOENT, -EACCES, -EIO, ... : open/read errors (-errno)
 * \return and ndc_reserve's returns (-EAGAIN, -ETIMEDOUT, -EPIPE, ...)
 * A failure after the slot was reserved (an I/O error mid-read) gives the
 * slot back with ndc_cancel: nothing half-read is ever published. */
NDC_API int ndc_npy_read(ndc_chan *ch, const char *path, uint64_t tag, int64_t timeout_ns);
/* Write one array (any strides, as ndc_send takes) to a .npy file, created or
 * truncated, mode 0644 before umask. Like np.save: C-contiguous arrays as
 * they are, Fortran-contiguous ones with fortran_order True, anything else
 * gathered into C order first. Version 1.0 (2.0 if the header needs it),
 * data offset a multiple of 64, this host's byte order. A partial file is
 * removed on failure.
 * \return 0, -EINVAL (a NULL or invalid array), -ENOMEM, or -errno of
 * open/write. */
NDC_API int ndc_npy_write(const struct ndc_array *a, const char *path);
/* Read `n` files into the channel in the order given, keeping up to
 * queue_depth files in flight (each in several requests); tag i = i. Every
 * header is checked before its file takes a slot. The channel's slots are
 * registered with io_uring as fixed buffers as they are first used (pinning
 * only the bytes written), where RLIMIT_MEMLOCK allows; beyond it plain
 * reads are used. Blocks while the channel is full.
 * \return the number of files sent (n), or the -errno of the first failure
 * (as ndc_npy_read; files before it were sent, none after it). -EINVAL: bad
 * options. */
NDC_API int ndc_npy_load(ndc_chan *ch, const char *const *paths, size_t n,
                         const struct ndc_npy_opts *o);
/* Receive until end of stream, writing each array to dir/<seq>.npy (seq as
 * 12 zero-padded digits), keeping up to queue_depth writes in flight; a slot
 * is released when its write completes (or fails: the partial file is then
 * removed). Never sleeps on the channel while its own writes hold slots.
 * \return the number of arrays written (after -EPIPE from the channel), or
 * -errno of the first failure (open/write errors, ndc_acquire's returns such
 * as -EOWNERDEAD), once the writes in flight are done. */
NDC_API int ndc_npy_drain(ndc_chan *ch, const char *dir, const struct ndc_npy_opts *o);

/* ---- version, .npy headers, topology -------------------------------------
 * Calls added for the tools (ndchan-load, ndchan-topo), which use nothing
 * but this header. */

#define NDC_VERSION_PATCH 0
/* The version as one number, for compile-time checks: 0x00MMmmpp. */
#define NDC_VERSION_NUMBER \
    ((NDC_VERSION_MAJOR << 16) | (NDC_VERSION_MINOR << 8) | NDC_VERSION_PATCH)

/* The library's version as "MAJOR.MINOR.PATCH" (the library actually loaded,
 * which may be newer than the header a program was built with). Never NULL. */
NDC_API const char *ndc_version(void);
/* The same as NDC_VERSION_NUMBER computes: (major << 16) | (minor << 8) | patch. */
NDC_API uint32_t ndc_version_number(void);

/* Read and check a .npy file's header as ndc_npy_read would (the file's size
 * included), without reading its payload or touching a channel: fills
 * a->dtype, ndim, shape and C-order strides of the array a receiver would
 * get (Fortran-order files: the shape np.load() gives); a->data is NULL, tag
 * and seq 0. ndc_array_nbytes(a) is then the slot_bytes the file needs.
 * \return 0
 * \return -EBADMSG   not a .npy file, a malformed or lying header, or a file
 *                    whose size is not header + payload
 * \return -ENOTSUP   a dtype or version ndchan does not take
 * \return -EOVERFLOW the payload size overflows
 * \return -EINVAL    a NULL argument, or not a regular file
 * \return -ENOENT, -EACCES, -EIO, ... : open/read errors (-errno)
 * `a` is untouched on failure; ndc_last_error() names the file and reason. */
NDC_API int ndc_npy_peek(const char *path, struct ndc_array *a);

/* A producer/consumer CPU pair, as ndc_suggest_cpus picks it, with reasons. */
struct ndc_cpu_pair {
    int  producer, consumer;  /* OS CPU numbers */
    int  node;                /* the NUMA node local to both; -1 when none is */
    char shared[32];          /* the closest thing they share: "L2", "L3",
                                 "package", "machine", or "core" (two hardware
                                 threads of one core: the machine has one core) */
};
/* ndc_suggest_cpus on any topology, within a set of CPUs.
 * topology: NULL = this machine; text starting with '<' = hwloc XML (as
 * written by `lstopo file.xml`); anything else = an hwloc synthetic
 * description ("pack:2 numa:2 core:4 pu:2").
 * allowed: a CPU list ("0-3,8") the pair must come from; NULL = every CPU.
 * \return 0, *out set
 * \return -EINVAL   a topology description hwloc rejects, or a bad CPU list
 * \return -ENODEV   fewer than two CPUs to choose from
 * \return -ENOTSUP  built without hwloc
 * \return -ENOMEM */
NDC_API int ndc_topo_suggest(const char *topology, const char *allowed,
                             struct ndc_cpu_pair *out);
/* The NUMA policy the kernel holds for the channel's payload: *policy is an
 * enum ndc_numa_policy (NDC_NUMA_BIND also stands for NDC_NUMA_PREFERRED,
 * which the kernel does not tell apart here; NDC_NUMA_NEAR_RECEIVER shows as
 * FIRST_TOUCH until the first receive binds it), *nodes bit i = node i
 * (0 for first touch).
 * \return 0; -EINVAL a NULL argument; -ENOTSUP built without hwloc or a
 * kernel without NUMA; -errno of get_mempolicy. Untouched on failure. */
NDC_API int ndc_numa_policy(const ndc_chan *ch, uint32_t *policy, uint64_t *nodes);

#ifdef __cplusplus
}
#endif
#endif /* NDCHAN_H */
