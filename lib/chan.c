/* Channels: handles (create, open, attach, fork, free) and the public
 * API over the wait engine (engine.c), which hands slots over through the
 * lock-free queue (queue.c):
 *
 *   ndc_reserve -> take(FREE)  -> write in place -> ndc_commit  -> give_ready
 *   ndc_acquire -> take(READY) -> read in place  -> ndc_release -> give_free
 *
 * ndc_send and ndc_recv are the same with one copy each side; a receive
 * whose buffer is too small keeps its loan for the next receive (the
 * -EMSGSIZE stash, below).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "bcast.h"
#include "error.h"
#include "engine.h"
#include "lock.h"
#include "notify.h"   /* ndc__notify_free: wait-any and notify fds */
#include "numa.h"
#include "peer.h"
#include "queue.h"

#define DEFAULT_SLOTS      4
#define DEFAULT_SLOT_BYTES (64ull << 20)

/* ---- handles ------------------------------------------------------------ */

static void bind_handle(ndc_chan *ch, uint32_t open_flags)
{
    unsigned char *b = ch->seg.base;
    const struct ndc__geometry *g = &ch->seg.g;
    ch->ctrl = (struct ndc__ctrl *)b;
    ch->peers = (struct ndc__peer *)(b + g->peers_off);
    ch->cells = (struct ndc__cell *)(b + NDC__CELLS_OFF);
    ch->slots = (struct ndc__slot *)(b + g->table_off);
    ch->payload = b + g->payload_off;
    ch->open_flags = open_flags;
    ch->bcast = !!(g->flags & NDC_BROADCAST);
    ndc__engine_init(ch, ch->ctrl->spin_ns);
    pthread_mutex_init(&ch->stash_lock, NULL);
    ch->nstash = 0;
    atomic_init(&ch->stash_count, 0);
    ch->fork_gen = atomic_load_explicit(&ndc__fork_gen, memory_order_relaxed);
}

/* Open this process's liveness description and enter the peer table. */
static int join(ndc_chan *ch)
{
    int r = ndc__live_open(&ch->live, ch->seg.fd, ch->seg.path[0] ? ch->seg.path : NULL);
    if (r)
        return r;
    struct ndc__deadline dl;
    /* Joining needs the queue lock only to retire a dead process's entry;
     * a live holder that keeps it (stopped) makes the attach fail, not hang. */
    ndc__deadline_init(&dl, 1000000000);
    r = ndc__peer_join(ch, &dl);
    if (r)
        ndc__live_close(&ch->live);
    return r;
}

static int finish_attach(ndc_chan **out, ndc_chan *ch, uint32_t open_flags)
{
    bind_handle(ch, open_flags);
    ch->claimed = calloc(ch->seg.g.nslots, sizeof *ch->claimed);
    int r = (open_flags & NDC_SUBSCRIBE) && !ch->bcast
                ? ndc__fail(-EINVAL, "NDC_SUBSCRIBE: not a broadcast channel")
                : ch->claimed ? join(ch) : -ENOMEM;
    if (r == 0 && (open_flags & NDC_SUBSCRIBE))
        ndc__bcast_subscribe(ch);
    if (r) {
        ndc__segment_unmap(&ch->seg);
        close(ch->seg.fd);
        pthread_mutex_destroy(&ch->stash_lock);
        free(ch->claimed);
        free(ch);
        return r;
    }
    *out = ch;
    return 0;
}

static int check_opts(const struct ndc_chan_opts *o)
{
    const uint32_t known = NDC_POPULATE | NDC_HUGEPAGES | NDC_BROADCAST;
    if (o->flags & ~known)
        return ndc__fail(-EINVAL, "unknown flag bits 0x%x", o->flags & ~known);
    if (!(o->flags & NDC_BROADCAST) && (o->history || o->slow_policy))
        return ndc__fail(-EINVAL, "opts.history and opts.slow_policy are for NDC_BROADCAST channels");
    if (o->slow_policy > NDC_SLOW_LATEST)
        return ndc__fail(-EINVAL, "opts.slow_policy %u unknown", o->slow_policy);
    for (size_t i = 0; i < sizeof o->reserved / sizeof o->reserved[0]; i++)
        if (o->reserved[i])
            return ndc__fail(-EINVAL, "opts.reserved[%zu] must be zero", i);
    if (o->mode & ~0777u)
        return ndc__fail(-EINVAL, "opts.mode 0%o has bits beyond 0777", o->mode);
    return ndc__numa_check(o);
}

int ndc_create(ndc_chan **out, const char *name, const struct ndc_chan_opts *o)
{
    ndc__live_init();
    if (!out)
        return ndc__fail(-EINVAL, "NULL out pointer");
    struct ndc_chan_opts v = o ? *o : (struct ndc_chan_opts){0};
    int r = check_opts(&v);
    if (r)
        return r;
    if (!v.slots)
        v.slots = DEFAULT_SLOTS;
    if (v.history && v.history >= v.slots)
        return ndc__fail(-EINVAL, "opts.history %u: at most slots - 1 (%u), the publisher needs a slot "
                         "to write in", v.history, v.slots - 1);
    if (!v.slot_bytes)
        v.slot_bytes = DEFAULT_SLOT_BYTES;
    char path[NDC_NAME_MAX + 2];
    if (name && (r = ndc__segment_name(path, sizeof path, name)))
        return r;
    ndc_chan *ch = calloc(1, sizeof *ch);
    if (!ch)
        return -ENOMEM;
    r = ndc__segment_create(&ch->seg, name ? path : NULL, &v);
    if (r) {
        free(ch);
        return r;
    }
    /* The name is linked already: a create that fails to attach (no fd
     * left for the liveness lock, no memory) must take it back, or a
     * complete channel with nobody attached stays under it. */
    struct stat made;
    char file[sizeof ch->seg.path];
    int named = name && fstat(ch->seg.fd, &made) == 0;
    memcpy(file, ch->seg.path, sizeof file);
    r = finish_attach(out, ch, 0);
    struct stat now;
    if (r && named && lstat(file, &now) == 0 && now.st_dev == made.st_dev && now.st_ino == made.st_ino)
        unlink(file);
    return r;
}

static int check_open_flags(uint32_t flags)
{
    const uint32_t known = NDC_RDONLY | NDC_SUBSCRIBE;
    return flags & ~known ? ndc__fail(-EINVAL, "unknown open flags 0x%x", flags & ~known) : 0;
}

/* Attach to the segment open as fd (the caller's); path: its name's file. */
static int attach(ndc_chan **out, int fd, uint32_t flags, const char *path)
{
    ndc__live_init();
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return ndc__fail(-errno, "dup of fd %d: %s", fd, strerror(errno));
    ndc_chan *ch = calloc(1, sizeof *ch);
    if (!ch) {
        close(own);
        return -ENOMEM;
    }
    int r = ndc__segment_attach(&ch->seg, own, flags);
    if (r) {
        close(own);
        free(ch);
        return r;
    }
    snprintf(ch->seg.path, sizeof ch->seg.path, "%s", path ? path : "");
    return finish_attach(out, ch, flags);
}

int ndc_open_fd(ndc_chan **out, int fd, uint32_t flags)
{
    int r = check_open_flags(flags);
    if (r)
        return r;
    if (!out || fd < 0)
        return ndc__fail(-EINVAL, "NULL out pointer or negative fd");
    return attach(out, fd, flags, NULL);
}

/* Open the file a channel name names ("/dev/shm/name" into path), as a
 * regular file only: a symlink (O_NOFOLLOW), a directory, a socket or a
 * fifo under the name is another program's object, -EPROTO. \return the
 * fd, or -errno. */
static int open_channel_file(const char *name, int oflags, char *path, size_t cap)
{
    char n[NDC_NAME_MAX + 2];
    int r = ndc__segment_name(n, sizeof n, name);
    if (r)
        return r;
    snprintf(path, cap, NDC__SHM_DIR "%s", n);
    int fd = open(path, oflags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 && (errno == ELOOP || errno == EISDIR || errno == ENXIO))
        return ndc__fail(-EPROTO, "%s is not a regular file (%s): not an ndchan channel", path,
                         strerror(errno));
    if (fd < 0)
        return ndc__fail(-errno, "channel \"%s\" (%s): %s", n + 1, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ndc__fail(-EPROTO, "%s is not a regular file: not an ndchan channel", path);
    }
    return fd;
}

int ndc_open(ndc_chan **out, const char *name, uint32_t flags)
{
    char path[sizeof ((struct ndc__segment *)0)->path];
    int r = check_open_flags(flags);
    if (r)
        return r;
    if (!out)
        return ndc__fail(-EINVAL, "NULL out pointer");
    int fd = open_channel_file(name, O_RDWR, path, sizeof path);
    if (fd < 0)
        return fd;
    r = attach(out, fd, flags, path);
    close(fd);
    return r;
}

/* Wait up to `left` ns (at most a slice) for a name to appear in the shm
 * directory: inotify, or a 10 ms sleep where it is unavailable.
 * \return 0 look again; -EINTR. */
static int wait_for_name(int ino, int64_t left)
{
    int64_t slice = ino >= 0 ? 100000000 : 10000000;   /* inotify is the wake-up; this, a safety net */
    struct pollfd p = { .fd = ino, .events = POLLIN };
    struct timespec ts = { 0, left < slice ? left : slice };
    int r = ppoll(ino >= 0 ? &p : NULL, ino >= 0 ? 1 : 0, &ts, NULL);
    if (r < 0 && errno == EINTR)
        return -EINTR;
    char buf[4096];
    while (ino >= 0 && read(ino, buf, sizeof buf) > 0)
        ;   /* drain: any creation is a reason to look again */
    return 0;
}

int ndc_open_wait(ndc_chan **out, const char *name, uint32_t flags, int64_t timeout_ns)
{
    int r = ndc__timeout_check(timeout_ns);
    if (r)
        return r;
    struct ndc__deadline dl;
    ndc__deadline_init(&dl, timeout_ns);
    /* watch first, then look: a channel linked in between is not missed */
    int ino = -1;
    if (timeout_ns != 0) {
        ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (ino >= 0 && inotify_add_watch(ino, NDC__SHM_DIR, IN_CREATE | IN_MOVED_TO) < 0) {
            close(ino);
            ino = -1;
        }
    }
    for (;;) {
        r = ndc_open(out, name, flags);
        if (r != -ENOENT)
            break;
        int64_t left = ndc__deadline_left(&dl);
        if (left == 0) {
            if (timeout_ns != 0)
                r = ndc__fail(-ETIMEDOUT, "no channel \"%s\" appeared in time", name);
            break;
        }
        if ((r = wait_for_name(ino, left)) == -EINTR) {
            r = ndc__fail(-EINTR, "interrupted while waiting for channel \"%s\"", name);
            break;
        }
    }
    if (ino >= 0)
        close(ino);
    return r;
}

int ndc_fd(const ndc_chan *ch)
{
    return ch ? ch->seg.fd : -EINVAL;
}

int ndc_unlink(const char *name)
{
    /* Only an ndchan channel: the name may be another program's object. */
    char path[sizeof ((struct ndc__segment *)0)->path];
    int fd = open_channel_file(name, O_RDONLY, path, sizeof path);
    if (fd < 0)
        return fd;
    uint64_t magic = 0;
    int ours = pread(fd, &magic, sizeof magic, 0) == (ssize_t)sizeof magic && magic == NDC__MAGIC;
    close(fd);
    if (!ours)
        return ndc__fail(-EPROTO, "%s is not an ndchan channel: left in place", path);
    return unlink(path) ? ndc__fail(-errno, "removing %s: %s", path, strerror(errno)) : 0;
}

void ndc_free(ndc_chan *ch)
{
    if (!ch)
        return;
    ndc__notify_free(ch);   /* notify.c: this handle's notify fds, while it is a peer */
    /* A handle inherited across fork and never used here has no entry of
     * this process to leave; the parent's stays the parent's. The
     * liveness lock goes last: until then the entry is ours. */
    if (ch->fork_gen == atomic_load_explicit(&ndc__fork_gen, memory_order_relaxed))
        ndc__peer_leave(ch);
    ndc__live_close(&ch->live);
    ndc__segment_unmap(&ch->seg);
    close(ch->seg.fd);
    pthread_mutex_destroy(&ch->stash_lock);
    free(ch->claimed);
    free(ch);
}

int ndc__rejoin_slow(ndc_chan *ch)
{
    /* joining is 1 + the fork generation of the thread rejoining. Another
     * generation's mark was left by a thread of the process this one was
     * forked from (fork() in the middle of its rejoin): that thread is not
     * here to clear it, so it is taken, not waited for. */
    unsigned gen = atomic_load_explicit(&ndc__fork_gen, memory_order_relaxed);
    int mine = (int)(gen + 1), expect = 0;
    /* acquire/release: a thread that gets the mark sees what the last
     * rejoin wrote (fork_gen, the live description) */
    while (!atomic_compare_exchange_weak_explicit(&ch->joining, &expect, mine, memory_order_acquire,
                                                  memory_order_relaxed)) {
        if (expect != 0 && expect != mine)
            continue;   /* stale: the next CAS replaces it */
        expect = 0;
        ndc__cpu_relax();
    }
    int r = 0;
    if (ch->fork_gen != gen) {
        /* the parent's kept loans are not ours, and its threads may have
         * held the stash lock at fork(): start both afresh */
        pthread_mutex_init(&ch->stash_lock, NULL);
        ch->nstash = 0;
        atomic_store_explicit(&ch->stash_count, 0, memory_order_relaxed);
        /* likewise the parent's threads counted in the lock: none of them
         * is here, and a count of them would make a lock word naming this
         * process look held by a sibling forever (holder_alive, peer.c) */
        atomic_store_explicit(&ch->in_lock, 0, memory_order_relaxed);
        ndc__live_close(&ch->live);   /* closed at fork already; unregistered */
        r = join(ch);
        if (r == 0)
            ch->fork_gen = gen;
    }
    atomic_store_explicit(&ch->joining, 0, memory_order_release);
    return r;
}

int ndc_close(ndc_chan *ch)
{
    if (!ch)
        return -EINVAL;
    ndc__engine_close(ch);
    return 0;
}

int ndc_set_spin(ndc_chan *ch, int64_t spin_ns)
{
    if (!ch)
        return -EINVAL;
    ndc__engine_set_spin(ch, spin_ns);
    return 0;
}

void ndc__chan_payload(const ndc_chan *ch, struct ndc__payload *p)
{
    p->base = ch->payload;
    p->len = (size_t)(ch->seg.g.total_size - ch->seg.g.payload_off);
    p->slot_stride = ch->seg.g.slot_stride;
    p->slot_bytes = ch->seg.g.slot_bytes;
    p->nslots = ch->seg.g.nslots;
    p->writable = !(ch->open_flags & NDC_RDONLY);
}

/* ---- loans -------------------------------------------------------------- */

/* The slot a loaned array's data points at, or -EINVAL. */
static int slot_of(const ndc_chan *ch, const void *data, uint32_t *slot)
{
    uintptr_t off = (uintptr_t)data - (uintptr_t)ch->payload;
    if ((uintptr_t)data < (uintptr_t)ch->payload || off % ch->seg.g.slot_stride ||
        off / ch->seg.g.slot_stride >= ch->seg.g.nslots)
        return ndc__fail(-EINVAL, "array data %p is not a slot of this channel", data);
    *slot = (uint32_t)(off / ch->seg.g.slot_stride);
    return 0;
}

/* Whether this process holds slot in state st. */
static int holds(const ndc_chan *ch, uint32_t slot, uint32_t st)
{
    if (ch->bcast && st == NDC__LOANED)
        return ndc__bcast_holds(ch, slot);
    return atomic_load_explicit(&ch->slots[slot].state, memory_order_relaxed) == NDC__WORD(st, ch->me);
}

/* The slot `a` names, checked to be held by this process in state st (a
 * loan kept by -EMSGSIZE is not the caller's to release). The engine checks
 * again under the lock; this check comes first so that nothing (commit's
 * header) is written into a slot that is not ours. */
static int stash_has(ndc_chan *ch, uint32_t slot);
static int own_slot(ndc_chan *ch, const struct ndc_array *a, uint32_t st, uint32_t *slot)
{
    if (!ch || !a)
        return ndc__fail(-EINVAL, "NULL channel or array");
    int r = slot_of(ch, a->data, slot);
    if (r || (r = ndc__ensure_joined(ch)))
        return r;
    if (!holds(ch, *slot, st) || (st == NDC__LOANED && stash_has(ch, *slot)))
        return ndc__fail(-EINVAL, "slot %u is not %s by this process", *slot,
                         st == NDC__RESERVED ? "reserved" : "on loan");
    return 0;
}

/* Make sure the pages of slot's first nbytes exist before a sender writes
 * them: on a full shm filesystem (or memory cgroup) that is -ENOSPC or
 * -ENOMEM here, rather than SIGBUS at the first store. Each process
 * remembers how much of each slot it has claimed: the pages stay with the
 * file, so one fallocate per slot and size is all the hot path pays. */
static int claim_slot(ndc_chan *ch, uint32_t slot, uint64_t nbytes)
{
    if (nbytes <= ch->claimed[slot])
        return 0;
    char what[64];
    snprintf(what, sizeof what, "an array in slot %u", slot);
    uint64_t off = ch->seg.g.payload_off + (uint64_t)slot * ch->seg.g.slot_stride;
    uint64_t len = (nbytes + 4095) & ~4095ull;
    int r = ndc__segment_claim(&ch->seg, off, len, what);
    if (r == 0)
        ch->claimed[slot] = len < ch->seg.g.slot_bytes ? len : ch->seg.g.slot_bytes;
    return r;
}

/* Reserve a slot for an array of nbytes whose header the caller has
 * validated; fill a->data and a->strides. */
static int reserve_slot(ndc_chan *ch, struct ndc_array *a, uint64_t nbytes, int64_t timeout_ns,
                        struct ndc__deadline *dl, uint32_t *slot)
{
    if (ch->open_flags & NDC_RDONLY)
        return ndc__fail(-EPERM, "receive-only handle cannot send");
    if (nbytes > ch->seg.g.slot_bytes)
        return ndc__fail(-E2BIG, "array of %llu bytes, slots hold %llu", (unsigned long long)nbytes,
                         (unsigned long long)ch->seg.g.slot_bytes);
    int r = ndc__timeout_check(timeout_ns);
    if (r || (r = ndc__ensure_joined(ch)))
        return r;
    ndc__peer_role(ch, NDC__PEER_SENT);
    ndc__deadline_init(dl, timeout_ns);
    if ((r = ndc__take(ch, NDC__SIDE_FREE, dl, slot)))
        return r;
    if ((r = claim_slot(ch, *slot, nbytes))) {
        ndc__give_free(ch, *slot, NDC__RESERVED);
        return r;
    }
    a->data = ch->payload + (uint64_t)*slot * ch->seg.g.slot_stride;
    ndc__c_strides(ndc_dtype_size(a->dtype), a->ndim, a->shape, a->strides);
    return 0;
}

/* Write the header of a reserved slot (validated C-order array of nbytes)
 * and publish it. The header is ours to write while the slot is RESERVED;
 * the ring cell's release store (queue.c, C2) publishes it with the state.
 * dl: how long listing it may wait (ndc_send's deadline; ndc_commit has none). */
static int publish(ndc_chan *ch, uint32_t slot, const struct ndc_array *a, uint64_t nbytes,
                   struct ndc__deadline *dl)
{
    struct ndc__slot *s = &ch->slots[slot];
    s->nbytes = nbytes;
    s->tag = a->tag;
    s->dtype = a->dtype;
    s->ndim = a->ndim;
    memcpy(s->shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    ndc__c_strides(ndc_dtype_size(a->dtype), a->ndim, a->shape, s->strides);
    return ndc__give_ready(ch, slot, dl);
}

int ndc_reserve(ndc_chan *ch, struct ndc_array *a, int64_t timeout_ns)
{
    if (!ch || !a)
        return ndc__fail(-EINVAL, "NULL channel or array");
    uint64_t nbytes;
    uint32_t slot;
    struct ndc__deadline dl;
    int r = ndc__shape_check(a->dtype, a->ndim, a->shape, &nbytes);
    return r ? r : reserve_slot(ch, a, nbytes, timeout_ns, &dl, &slot);
}

int ndc_commit(ndc_chan *ch, struct ndc_array *a)
{
    uint32_t slot = 0;
    uint64_t nbytes;
    int r = own_slot(ch, a, NDC__RESERVED, &slot);
    if (r || (r = ndc__shape_check(a->dtype, a->ndim, a->shape, &nbytes)))
        return r;
    if (!ndc__is_c_contiguous(ndc_dtype_size(a->dtype), a->ndim, a->shape, a->strides))
        return ndc__fail(-EINVAL, "a committed array must keep the C-order strides of its slot");
    if (nbytes > ch->seg.g.slot_bytes)
        return ndc__fail(-E2BIG, "array grew to %llu bytes, slots hold %llu",
                         (unsigned long long)nbytes, (unsigned long long)ch->seg.g.slot_bytes);
    struct ndc__deadline forever;
    ndc__deadline_init(&forever, NDC_FOREVER);
    return publish(ch, slot, a, nbytes, &forever);
}

int ndc_cancel(ndc_chan *ch, struct ndc_array *a)
{
    uint32_t slot = 0;
    int r = own_slot(ch, a, NDC__RESERVED, &slot);
    return r ? r : ndc__give_free(ch, slot, NDC__RESERVED);
}

/* Fill `a` from a loaned slot's header. Only what is used is read, once,
 * into a private copy that is validated before use: ndim first (it bounds
 * the copy of the shape), then the shape against nbytes and the slot size.
 * Strides are derived here, not read. */
static int describe(ndc_chan *ch, uint32_t slot, struct ndc_array *a)
{
    const struct ndc__slot *src = &ch->slots[slot];
    struct ndc__slot h;
    memcpy(&h, src, offsetof(struct ndc__slot, shape));
    if (h.ndim < 0 || h.ndim > NDC_MAX_DIMS)
        return ndc__fail(-EBADMSG, "slot header: ndim %d", h.ndim);
    memcpy(h.shape, src->shape, sizeof(int64_t) * (size_t)h.ndim);
    int r = ndc__slot_validate(&h, &ch->seg.g);
    if (r)
        return r;
    a->data = ch->payload + (uint64_t)slot * ch->seg.g.slot_stride;
    a->dtype = (enum ndc_dtype)h.dtype;
    a->ndim = h.ndim;
    memcpy(a->shape, h.shape, sizeof(int64_t) * (size_t)h.ndim);
    ndc__c_strides(ndc_dtype_size(a->dtype), h.ndim, h.shape, a->strides);
    a->tag = h.tag;
    a->seq = h.seq;
    return 0;
}

/* NDC_NUMA_NEAR_RECEIVER: the first process that receives places the
 * payload on its node, at its first receive. Not at attach: a receive-only
 * attach may be an observer (ndchan-stat, ndchan-topo --channel), which
 * must not decide where the consumer's memory goes. Pages the sender wrote
 * before are migrated. A failed bind is left for the next receiver to try
 * rather than marked done. The policy is the attach-time validated copy,
 * not the segment's live (writable by any peer) field. */
static void place_near_receiver(ndc_chan *ch)
{
    uint32_t zero = 0;
    if (ch->seg.g.numa_policy != NDC_NUMA_NEAR_RECEIVER ||
        !atomic_compare_exchange_strong_explicit(&ch->ctrl->numa_resolved, &zero, 1, memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    if (ndc__numa_bind_here(ch->payload, (size_t)(ch->seg.g.total_size - ch->seg.g.payload_off)))
        atomic_store_explicit(&ch->ctrl->numa_resolved, 0, memory_order_relaxed);
}

static void first_receive(ndc_chan *ch)
{
    if (atomic_load_explicit(&ch->roles, memory_order_relaxed) & NDC__PEER_RECEIVED)
        return;
    ndc__peer_role(ch, NDC__PEER_RECEIVED);
    place_near_receiver(ch);
}

/* The -EMSGSIZE stash: a FIFO of loans this handle keeps for its next
 * receives. The count is read without the lock so that the usual receive
 * (nothing kept) costs one load. */
static void stash_put(ndc_chan *ch, uint32_t slot)
{
    pthread_mutex_lock(&ch->stash_lock);
    if (ch->nstash < ch->seg.g.nslots)
        ch->stash[ch->nstash++] = (uint16_t)slot;
    atomic_store_explicit(&ch->stash_count, ch->nstash, memory_order_relaxed);   /* under stash_lock */
    pthread_mutex_unlock(&ch->stash_lock);
}

static int stash_take(ndc_chan *ch, uint32_t *slot)
{
    if (atomic_load_explicit(&ch->stash_count, memory_order_relaxed) == 0)
        return 0;
    pthread_mutex_lock(&ch->stash_lock);
    int got = ch->nstash > 0;
    if (got) {
        *slot = ch->stash[0];
        memmove(ch->stash, ch->stash + 1, sizeof ch->stash[0] * --ch->nstash);
    }
    atomic_store_explicit(&ch->stash_count, ch->nstash, memory_order_relaxed);   /* under stash_lock */
    pthread_mutex_unlock(&ch->stash_lock);
    return got;
}

static int stash_has(ndc_chan *ch, uint32_t slot)
{
    if (atomic_load_explicit(&ch->stash_count, memory_order_relaxed) == 0)
        return 0;
    pthread_mutex_lock(&ch->stash_lock);
    int found = 0;
    for (uint32_t i = 0; i < ch->nstash && !found; i++)
        found = ch->stash[i] == slot;
    pthread_mutex_unlock(&ch->stash_lock);
    return found;
}

/* Take the next array: the one kept by -EMSGSIZE first, else the oldest
 * ready one. A header that fails validation drops its array. */
static int next_loan(ndc_chan *ch, struct ndc_array *a, int64_t timeout_ns, uint32_t *slot_out)
{
    int r = ndc__timeout_check(timeout_ns);
    if (r || (r = ndc__ensure_joined(ch)))
        return r;
    uint32_t slot = 0;
    if (!stash_take(ch, &slot)) {
        first_receive(ch);
        struct ndc__deadline dl;
        ndc__deadline_init(&dl, timeout_ns);
        if ((r = ndc__take(ch, NDC__SIDE_READY, &dl, &slot)))
            return r;
    }
    if ((r = describe(ch, slot, a))) {
        ndc__give_free(ch, slot, NDC__LOANED);
        return r;
    }
    *slot_out = slot;
    return 0;
}

int ndc_acquire(ndc_chan *ch, struct ndc_array *a, int64_t timeout_ns)
{
    if (!ch || !a)
        return ndc__fail(-EINVAL, "NULL channel or array");
    struct ndc_array v;
    uint32_t slot = 0;
    int r = next_loan(ch, &v, timeout_ns, &slot);
    if (r == 0)
        *a = v;
    return r;
}

int ndc_release(ndc_chan *ch, struct ndc_array *a)
{
    uint32_t slot = 0;
    int r = own_slot(ch, a, NDC__LOANED, &slot);
    return r ? r : ndc__give_free(ch, slot, NDC__LOANED);
}

/* ---- one copy ----------------------------------------------------------- */

/* Whether a's strides look unset: all zero on an array of several elements. */
static int strides_unset(const struct ndc_array *a, uint64_t nbytes)
{
    if (nbytes <= ndc_dtype_size(a->dtype))
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->strides[i])
            return 0;
    return 1;
}

int ndc_send(ndc_chan *ch, const struct ndc_array *a, int64_t timeout_ns)
{
    return ndc_send_flags(ch, a, timeout_ns, 0);
}

int ndc_send_flags(ndc_chan *ch, const struct ndc_array *a, int64_t timeout_ns, uint32_t flags)
{
    if (!ch || !a)
        return ndc__fail(-EINVAL, "NULL channel or array");
    if (flags & ~NDC_SEND_BROADCAST)
        return ndc__fail(-EINVAL, "unknown send flags 0x%x", flags & ~NDC_SEND_BROADCAST);
    /* validated once: reserve and publish below take it as checked */
    uint64_t nbytes;
    uint32_t slot;
    int r = ndc__shape_check(a->dtype, a->ndim, a->shape, &nbytes);
    if (r)
        return r;
    if (nbytes && !a->data)
        return ndc__fail(-EINVAL, "NULL data for an array of %llu bytes", (unsigned long long)nbytes);
    if (!(flags & NDC_SEND_BROADCAST) && strides_unset(a, nbytes))
        return ndc__fail(-EINVAL, "every stride is zero: unset strides (fill them with "
                         "ndc_array_init), or pass NDC_SEND_BROADCAST if a broadcast is meant");
    struct ndc_array s = *a;
    struct ndc__deadline dl;
    if ((r = reserve_slot(ch, &s, nbytes, timeout_ns, &dl, &slot)))
        return r;
    ndc__copy_to_c(s.data, a, nbytes);
    return publish(ch, slot, &s, nbytes, &dl);
}

int ndc_recv(ndc_chan *ch, struct ndc_array *a, size_t capacity, int64_t timeout_ns)
{
    if (!ch || !a)
        return ndc__fail(-EINVAL, "NULL channel or array");
    struct ndc_array v;
    uint32_t slot = 0;
    int r = next_loan(ch, &v, timeout_ns, &slot);
    if (r)
        return r;
    uint64_t nbytes = ndc_array_nbytes(&v);
    void *dst = a->data;
    if (nbytes > capacity || (nbytes && !dst)) {
        /* keep it for the next receive; describe it so the caller can size a buffer */
        stash_put(ch, slot);
        v.data = dst;
        *a = v;
        return ndc__fail(-EMSGSIZE, "array of %llu bytes, buffer of %zu: kept for the next receive",
                         (unsigned long long)nbytes, capacity);
    }
    memcpy(dst, v.data, nbytes);
    ndc__give_free(ch, slot, NDC__LOANED);
    v.data = dst;
    *a = v;
    return 0;
}

/* ---- state -------------------------------------------------------------- */

/* Whether nothing committed before `upto` (a seq) is ready or on loan.
 * A torn read of a header's seq can only make it wait one more poll. */
static int drained(const ndc_chan *ch, uint64_t upto)
{
    for (uint32_t i = 0; i < ch->seg.g.nslots; i++) {
        uint64_t w = atomic_load_explicit(&ch->slots[i].state, memory_order_acquire);
        uint32_t st = NDC__STATE(w);
        if ((st == NDC__READY || st == NDC__LOANED) && ch->slots[i].seq < upto)
            return 0;
    }
    return 1;
}

int ndc_wait_drained(ndc_chan *ch, uint32_t flags, int64_t timeout_ns)
{
    if (!ch)
        return ndc__fail(-EINVAL, "NULL channel");
    if (flags & ~NDC_DRAIN_CLOSED)
        return ndc__fail(-EINVAL, "unknown drain flags 0x%x", flags & ~NDC_DRAIN_CLOSED);
    int r = ndc__timeout_check(timeout_ns);
    if (r || (r = ndc__ensure_joined(ch)))
        return r;
    struct ndc__ctrl *c = ch->ctrl;
    uint64_t upto = ndc__queue_commits(ch);
    struct ndc__deadline dl;
    ndc__deadline_init(&dl, timeout_ns);
    for (int64_t polls = 0;; polls++) {
        int closed = !!(atomic_load_explicit(&c->sem[NDC__SIDE_READY].count, memory_order_acquire) & NDC__CLOSED);
        if (flags & NDC_DRAIN_CLOSED)
            upto = closed ? UINT64_MAX : ndc__queue_commits(ch);
        if ((ch->bcast ? ndc__bcast_drained(ch, upto) : drained(ch, upto)) &&
            (!(flags & NDC_DRAIN_CLOSED) || closed))
            return 0;
        int64_t left = ndc__deadline_left(&dl);
        if (left == 0)
            return timeout_ns == 0 ? -EAGAIN : ndc__fail(-ETIMEDOUT, "not drained in time");
        if (polls % 40 == 39) {   /* every 40 ms: give back what dead receivers held */
            ndc__peer_sweep(ch, &dl);
            if (ndc__peer_other_side_gone(ch, NDC__SIDE_FREE) && !drained(ch, upto))
                return ndc__fail(-EOWNERDEAD, "arrays remain and every receiver is gone");
        }
        struct timespec ts = { 0, left < 1000000 ? left : 1000000 };
        if (nanosleep(&ts, NULL) != 0)
            return ndc__fail(-EINTR, "interrupted while waiting for the channel to drain");
    }
}

int ndc_subscribe(ndc_chan *ch)
{
    if (!ch)
        return ndc__fail(-EINVAL, "NULL channel");
    if (!ch->bcast)
        return ndc__fail(-EINVAL, "not a broadcast channel");
    int r = ndc__ensure_joined(ch);
    if (r == 0)
        ndc__bcast_subscribe(ch);
    return r;
}

int ndc_subscribers(const ndc_chan *ch, struct ndc_sub_stat *out, uint32_t cap)
{
    if (!ch || (cap && !out))
        return ndc__fail(-EINVAL, "NULL channel or output");
    if (!ch->bcast)
        return ndc__fail(-EINVAL, "not a broadcast channel");
    uint64_t sent = ndc__queue_commits(ch);
    uint32_t hw = ndc__peers_hw(ch), k = 0;
    for (uint32_t i = 0; i < hw; i++) {
        const struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_LIVE ||
            atomic_load_explicit(&p->subscribed, memory_order_acquire) != 1 || !ndc__peer_alive(ch, i))
            continue;
        if (k < cap) {
            struct ndc_sub_stat s = {.pid = p->pid};
            s.position = atomic_load_explicit(&p->cursor, memory_order_relaxed);
            s.lag = sent > s.position ? sent - s.position : 0;
            s.dropped = atomic_load_explicit(&p->dropped, memory_order_relaxed);
            s.received = atomic_load_explicit(&p->taken, memory_order_relaxed);
            for (int h = 0; h < NDC__SUB_LOANS; h++)
                s.loans += atomic_load_explicit(&p->held[h], memory_order_relaxed) != 0;
            out[k] = s;
        }
        k++;
    }
    return (int)k;
}

int ndc_stat(const ndc_chan *ch, struct ndc_stat *st)
{
    if (!ch || !st)
        return ndc__fail(-EINVAL, "NULL channel or stat");
    const struct ndc__ctrl *c = ch->ctrl;
    struct ndc_stat s = {.slots = ch->seg.g.nslots, .slot_bytes = ch->seg.g.slot_bytes};
    for (uint32_t i = 0; i < s.slots; i++) {
        uint64_t w = atomic_load_explicit(&ch->slots[i].state, memory_order_relaxed);
        switch (NDC__STATE(w)) {
        case NDC__FREE:     s.free++; break;
        case NDC__READY:    if (NDC__READERS(w)) s.loaned++; else s.ready++; break;
        case NDC__RESERVED:
        case NDC__COMMITTING:
        case NDC__LOANED:   s.loaned++; break;
        default:
            return ndc__fail(-EBADMSG, "slot %u has a corrupt state word", i);
        }
    }
    uint32_t hw = ndc__peers_hw(ch), others;
    for (uint32_t i = 0; i < hw; i++) {
        const struct ndc__peer *p = &ch->peers[i];
        if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_LIVE ||
            !ndc__peer_alive(ch, i))
            continue;   /* a peer that died is not attached, swept or not */
        s.senders_waiting += atomic_load_explicit(&p->sleeping[NDC__SIDE_FREE], memory_order_relaxed);
        s.receivers_waiting += atomic_load_explicit(&p->sleeping[NDC__SIDE_READY], memory_order_relaxed);
    }
    s.attached = ndc__peer_count_alive(ch, &others);
    s.closed = !!(atomic_load_explicit(&c->sem[NDC__SIDE_READY].count, memory_order_relaxed) & NDC__CLOSED);
    s.stale = others == 0;
    s.sent = ndc__queue_commits(ch);
    s.received = atomic_load_explicit(&c->head, memory_order_relaxed);
    if (ch->bcast) {
        s.broadcast = 1;
        s.history = ch->seg.g.history;
        s.slow_policy = ch->seg.g.slow_policy;
        s.received = atomic_load_explicit(&c->gone_received, memory_order_relaxed);
        s.dropped = atomic_load_explicit(&c->gone_dropped, memory_order_relaxed);
        for (uint32_t i = 0; i < hw; i++) {
            const struct ndc__peer *p = &ch->peers[i];
            if (atomic_load_explicit(&p->state, memory_order_relaxed) != NDC__PEER_LIVE ||
                atomic_load_explicit(&p->subscribed, memory_order_relaxed) != 1 || !ndc__peer_alive(ch, i))
                continue;
            s.subscribers++;
            s.received += atomic_load_explicit(&p->taken, memory_order_relaxed);
            s.dropped += atomic_load_explicit(&p->dropped, memory_order_relaxed);
        }
    }
    s.bytes_sent = atomic_load_explicit(&c->bytes_sent, memory_order_relaxed);
    *st = s;
    return 0;
}
