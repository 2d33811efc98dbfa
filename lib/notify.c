/* Waiting on many channels, and a pollable fd per handle.
 *
 * Both wait on the words sleepers already wait on (ctrl->sem[side].count,
 * whose NDC__CLOSED bit is the end of stream) with the sleeper's protocol:
 * count yourself in (ctrl->sleepers[side] and the peer entry's sleeping[],
 * seq_cst), then read the word, then ask ndc__would_take, and only when it
 * says "wait" sleep on the word with the value read before asking. A
 * poster changes the word before it looks for sleepers, so either it sees
 * us and wakes the word, or we see its change. Such a waiter takes nothing
 * when woken, so it also counts itself in ctrl->watchers[side]: while that
 * is nonzero a post wakes every sleeper (ndc__wake_n), and a real reserver
 * or acquirer asleep on the same word cannot lose its wake-up to us.
 *
 * Peers that die change no word. A sleeping waiter looks every 40 ms
 * (SLICE_NS): it sweeps (peer.c), which gives back what the dead held and
 * lets ndc__would_take see "every peer of the other side is gone".
 *
 * ndc_wait_any sleeps in one futex_waitv (Linux 5.16) over up to 128 words
 * (the kernel's limit). Beyond 128 words it submits one IORING_OP_FUTEX_WAITV
 * per 128 words to an io_uring (Linux 6.7) of the calling thread and waits
 * for the first completion, then cancels the rest: still one sleep, no
 * thread. Without that (an older kernel, io_uring disabled or filtered by
 * seccomp), it sleeps in futex_waitv on the first 128 words for at most
 * 1 ms at a time and looks at all of them between sleeps: a wake-up on the
 * first 128 is immediate, one beyond is seen within a millisecond, none is
 * missed (each sleep starts from values read after counting ourselves in).
 * Without futex_waitv (before 5.16) it sleeps on the first word alike.
 *
 * ndc_notify_fd: the fd cannot live in the segment, and posters must not
 * make a system call for it unless someone waits on one. The fd handed out
 * is an io_uring (Linux 6.7) of the waiting process with one
 * IORING_OP_FUTEX_WAIT on the channel's word in flight: a poster's
 * FUTEX_WAKE completes it in the kernel, the completion makes the ring fd
 * readable, and poll/epoll/select/io_uring/asyncio see that. No fd crosses
 * processes, nothing is named, so it works for anonymous channels and
 * across pid and network namespaces alike, and a poster pays only the
 * futex wake it pays for any sleeper. The same ring polls an inotify watch
 * for IN_CLOSE_WRITE on the segment file: a peer that dies closes its own
 * description of it (live.c), so a death makes the fd readable too, and
 * ndc_notify_arm then sweeps; an idle fd wakes nobody. Where the ring
 * cannot do that (no io_uring, no futex op, no inotify), the fd is an
 * eventfd written by a helper thread that sleeps on the word (and sweeps
 * every 40 ms): one more wake-up on the way, and a thread per fd.
 *
 * Why not a socket per waiter that posters write while it is armed: it
 * needs a name every peer can reach (an abstract name is per network
 * namespace; a path in /dev/shm outlives a SIGKILLed owner), lets any peer
 * write to the waiter, and costs a poster one sendto per armed waiter;
 * bench/notify-rtt simulates it over the public API, and it is no faster
 * than the ring (both ~1.3x a raw eventfd round trip here, the helper
 * thread ~1.8x). The ring's cost over a raw eventfd is its completion:
 * the kernel runs it as task work of the thread that armed, which
 * interrupts that thread's epoll_wait (EINTR, one more epoll_wait).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "notify.h"
#include "peer.h"
#include "wait.h"

#define SLICE_NS       40000000    /* liveness: as chan.c's sleep slices */
#define SCAN_NS        1000000     /* beyond the words one sleep can cover */
#define RETRY_NS       20000000    /* a death's second look (see on_close) */
#define WAITV_MAX      128         /* the kernel's FUTEX_WAITV_MAX */

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
/* io_uring opcodes newer than some headers */
#define OP_FUTEX_WAIT  51
#define OP_FUTEX_WAITV 53
#ifndef IORING_ASYNC_CANCEL_ANY
#define IORING_ASYNC_CANCEL_ANY (1U << 2)
#endif
#ifndef IORING_ENTER_EXT_ARG
#define IORING_ENTER_EXT_ARG (1U << 3)
struct io_uring_getevents_arg { __u64 sigmask; __u32 sigmask_sz; __u32 pad; __u64 ts; };
#endif
#ifndef IORING_FEAT_EXT_ARG
#define IORING_FEAT_EXT_ARG (1U << 8)
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
struct futex_waitv { __u64 val; __u64 uaddr; __u32 flags; __u32 __reserved; };
#endif

int ndc__notify_force;
int ndc__waitany_force;

/* ---- readiness (ndc__would_take: engine.c) -------------------------------- */

/* What an entry reports: 0 wait; 1 a try succeeds now; else the error a
 * blocking call would return now. */
static int outcome(ndc_chan *ch, int side)
{
    if (side == NDC__SIDE_FREE && (ch->open_flags & NDC_RDONLY))
        return -EPERM;
    switch (ndc__would_take(ch, side)) {
    case NDC__TAKE_NO:   return 0;
    case NDC__TAKE_END:  return -EPIPE;
    case NDC__TAKE_GONE: return -EOWNERDEAD;
    default:             return 1;
    }
}

static int side_of(uint32_t what)
{
    return what == NDC_WAIT_ACQUIRE ? NDC__SIDE_READY : what == NDC_WAIT_RESERVE ? NDC__SIDE_FREE : -1;
}

/* ---- counting ourselves in ------------------------------------------------ */

/* Totals first on the way in and last on the way out (as chan.c's
 * sleep_once): a process killed in between leaves a total too high (a
 * spare wake-up, waking all), never too low; the retirement of its entry
 * subtracts what the entry says. watchers before sleepers: a poster that
 * sees us in sleepers sees us in watchers. */
static void watch_add(ndc_chan *ch, int side)
{
    struct ndc__ctrl *c = ch->ctrl;
    struct ndc__peer *me = &ch->peers[ch->me];
    atomic_fetch_add(&c->watchers[side], 1);
    atomic_fetch_add(&me->watching[side], 1);
    atomic_fetch_add(&c->sleepers[side], 1);   /* seq_cst: pairs with the poster's */
    atomic_fetch_add(&me->sleeping[side], 1);
}

static void watch_del(ndc_chan *ch, int side)
{
    struct ndc__ctrl *c = ch->ctrl;
    struct ndc__peer *me = &ch->peers[ch->me];
    atomic_fetch_sub(&me->sleeping[side], 1);
    atomic_fetch_sub(&c->sleepers[side], 1);
    atomic_fetch_sub(&me->watching[side], 1);
    atomic_fetch_sub(&c->watchers[side], 1);
}

void ndc__watch_retire(ndc_chan *ch, uint32_t i)
{
    struct ndc__ctrl *c = ch->ctrl;
    struct ndc__peer *p = &ch->peers[i];
    for (int side = 0; side < 2; side++) {
        uint32_t s = atomic_exchange_explicit(&p->watching[side], 0, memory_order_relaxed);
        uint32_t all = atomic_load_explicit(&c->watchers[side], memory_order_relaxed);
        while (s && !atomic_compare_exchange_weak_explicit(&c->watchers[side], &all,
                                                           all > s ? all - s : 0,
                                                           memory_order_relaxed, memory_order_relaxed))
            ;   /* clamped: a scribbled count must not wrap the total */
    }
}

/* Return what dead peers held and notice departures; never waits. */
static void sweep(ndc_chan *ch)
{
    struct ndc__deadline dl;
    ndc__deadline_init(&dl, 0);
    ndc__peer_sweep(ch, &dl);
}

/* ---- a minimal io_uring ----------------------------------------------------- */

struct ring {
    int fd;
    unsigned sq_entries, features;
    _Atomic unsigned *sq_head, *sq_tail, *cq_head, *cq_tail;
    unsigned sq_mask, cq_mask;
    unsigned *sq_array;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *map;
    size_t map_len, sqes_len;
    unsigned queued;            /* sqes written since the last enter */
};

static int ring_init(struct ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    memset(r, 0, sizeof *r);
    r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (r->fd < 0)
        return -errno;
    int e = -ENOTSUP;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP))
        goto fail;
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->map_len = sq_len > cq_len ? sq_len : cq_len;
    r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                  IORING_OFF_SQ_RING);
    if (r->map == MAP_FAILED) {
        e = -errno;
        goto fail;
    }
    r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                   IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        e = -errno;
        munmap(r->map, r->map_len);
        goto fail;
    }
    unsigned char *m = r->map;
    r->sq_head = (_Atomic unsigned *)(m + p.sq_off.head);
    r->sq_tail = (_Atomic unsigned *)(m + p.sq_off.tail);
    r->sq_mask = *(unsigned *)(m + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(m + p.sq_off.array);
    r->cq_head = (_Atomic unsigned *)(m + p.cq_off.head);
    r->cq_tail = (_Atomic unsigned *)(m + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(m + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(m + p.cq_off.cqes);
    r->sq_entries = p.sq_entries;
    r->features = p.features;
    return 0;
fail:
    close(r->fd);
    r->fd = -1;
    return e;
}

/* Unmap; the fd is the caller's to close (or keep, as a forked child's copy). */
static void ring_unmap(struct ring *r)
{
    if (r->sqes && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_len);
    if (r->map && r->map != MAP_FAILED)
        munmap(r->map, r->map_len);
    r->sqes = NULL;
    r->map = NULL;
}

/* Whether the kernel does io_uring opcode `op`. */
static int ring_has_op(const struct ring *r, int op)
{
    size_t len = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *p = calloc(1, len);
    if (!p)
        return 0;
    int ok = syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_PROBE, p, 256) == 0 &&
             op <= p->last_op && (p->ops[op].flags & IO_URING_OP_SUPPORTED);
    free(p);
    return ok;
}

/* An SQE to fill (zeroed), or NULL when the queue is full (never here:
 * every user submits before it queues more than a ring holds). */
static struct io_uring_sqe *ring_sqe(struct ring *r)
{
    unsigned tail = atomic_load_explicit(r->sq_tail, memory_order_relaxed);
    if (tail - atomic_load_explicit(r->sq_head, memory_order_acquire) >= r->sq_entries)
        return NULL;
    unsigned i = tail & r->sq_mask;
    struct io_uring_sqe *s = &r->sqes[i];
    memset(s, 0, sizeof *s);
    r->sq_array[i] = i;
    atomic_store_explicit(r->sq_tail, tail + 1, memory_order_release);
    r->queued++;
    return s;
}

/* Submit what is queued; wait for min_complete completions up to ns
 * (ns < 0: no limit). \return 0, -ETIME, -EINTR, -errno. */
static int ring_enter(struct ring *r, unsigned min_complete, int64_t ns)
{
    unsigned flags = min_complete ? IORING_ENTER_GETEVENTS : 0;
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    void *argp = NULL;
    size_t argsz = 0;
    if (min_complete && ns >= 0) {
        ts.tv_sec = ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        memset(&arg, 0, sizeof arg);
        arg.ts = (uint64_t)(uintptr_t)&ts;
        argp = &arg;
        argsz = sizeof arg;
        flags |= IORING_ENTER_EXT_ARG;
    }
    unsigned n = r->queued;
    long k = syscall(__NR_io_uring_enter, r->fd, n, min_complete, flags, argp, argsz);
    if (k < 0)
        return -errno;
    r->queued -= (unsigned)k < n ? (unsigned)k : n;
    return 0;
}

static unsigned ring_ready(const struct ring *r, unsigned from)
{
    return atomic_load_explicit(r->cq_tail, memory_order_acquire) - from;
}

/* ---- wait-any -------------------------------------------------------------- */

static int futex_waitv(struct futex_waitv *w, unsigned n, int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* the timeout is absolute */
    int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
    ts.tv_sec = at / 1000000000;
    ts.tv_nsec = at % 1000000000;
    if (syscall(SYS_futex_waitv, w, n, 0, &ts, CLOCK_MONOTONIC) >= 0)
        return 0;
    return errno == EAGAIN ? 0 : -errno;   /* EAGAIN: a word had changed already */
}

static int futex_wait1(_Atomic uint32_t *word, uint32_t val, int64_t ns, int private)
{
    struct timespec ts = { ns / 1000000000, ns % 1000000000 };
    if (syscall(SYS_futex, word, FUTEX_WAIT | (private ? FUTEX_PRIVATE_FLAG : 0), val,
                ns >= 0 ? &ts : NULL, NULL, 0) == 0)
        return 0;
    return errno == EAGAIN ? 0 : -errno;
}

/* What the kernel lets us use, learnt once: -1 no, 1 yes, 0 not asked. */
static _Atomic int have_waitv, have_ring_waitv;

/* A ring per thread for waits beyond 128 words: made once, freed at the
 * thread's exit; a forked child makes its own (the inherited one is its
 * parent's). */
struct tl_ring {
    struct ring r;
    unsigned fork_gen;
};
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static void tl_free(void *p)
{
    struct tl_ring *t = p;
    ring_unmap(&t->r);
    close(t->r.fd);
    free(t);
}
static void tl_init(void) { pthread_key_create(&tl_key, tl_free); }

static struct ring *thread_ring(unsigned entries)
{
    pthread_once(&tl_once, tl_init);
    struct tl_ring *t = pthread_getspecific(tl_key);
    unsigned gen = atomic_load(&ndc__fork_gen);
    if (t && (t->fork_gen != gen || t->r.sq_entries < entries)) {
        ring_unmap(&t->r);
        close(t->r.fd);
        free(t);
        t = NULL;
        pthread_setspecific(tl_key, NULL);
    }
    if (t)
        return &t->r;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (ring_init(&t->r, entries) != 0) {
        free(t);
        return NULL;
    }
    t->fork_gen = gen;
    pthread_setspecific(tl_key, t);
    return &t->r;
}

/* Sleep until one of n words (n > 128) changes, via one FUTEX_WAITV per
 * 128 words, then cancel the others. \return 0, -ETIMEDOUT, -EINTR, or
 * -ENOSYS when the ring cannot do it. */
static int ring_waitv(struct futex_waitv *w, unsigned n, int64_t ns)
{
    unsigned batches = (n + WAITV_MAX - 1) / WAITV_MAX, entries = 8;
    while (entries < batches + 2)
        entries *= 2;
    struct ring *r = thread_ring(entries);
    if (!r || !(r->features & IORING_FEAT_EXT_ARG))
        return -ENOSYS;
    if (atomic_load(&have_ring_waitv) == 0)
        atomic_store(&have_ring_waitv, ring_has_op(r, OP_FUTEX_WAITV) ? 1 : -1);
    if (atomic_load(&have_ring_waitv) < 0)
        return -ENOSYS;
    if (r->queued)
        ring_enter(r, 0, -1);   /* never: every call leaves its ring empty */
    if (r->sq_entries - (atomic_load(r->sq_tail) - atomic_load(r->sq_head)) < batches + 1)
        return -ENOSYS;
    unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
    for (unsigned b = 0; b < batches; b++) {
        struct io_uring_sqe *s = ring_sqe(r);
        s->opcode = OP_FUTEX_WAITV;
        s->addr = (uint64_t)(uintptr_t)(w + (size_t)b * WAITV_MAX);
        s->len = n - b * WAITV_MAX < WAITV_MAX ? n - b * WAITV_MAX : WAITV_MAX;
        s->user_data = 1;
    }
    /* submit, then wait: a wait that a signal interrupts says so (a
     * submitting enter would report what it submitted instead) */
    int e = ring_enter(r, 0, -1);
    if (e)
        return e == -EINTR ? -EINTR : -ENOSYS;   /* nothing went in: nothing to cancel */
    int res = ring_ready(r, head) ? 0 : ring_enter(r, 1, ns);
    /* Cancel what still waits and collect every completion: nothing of
     * ours may stay asleep on a word once we stop counting ourselves in (a
     * wake of one would find it rather than a real sleeper). */
    struct io_uring_sqe *s = ring_sqe(r);
    s->opcode = IORING_OP_ASYNC_CANCEL;
    s->cancel_flags = IORING_ASYNC_CANCEL_ANY;
    s->user_data = 2;
    unsigned want = batches + 1, got = 0;
    while (r->queued && ring_enter(r, 0, -1) == -EINTR)
        ;
    for (int tries = 0; tries < 1000; tries++) {
        unsigned tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
        got += tail - head;
        head = tail;
        atomic_store_explicit(r->cq_head, head, memory_order_release);
        if (got >= want)
            break;
        ring_enter(r, 1, 1000000);
    }
    return res == -ETIME ? -ETIMEDOUT : res == -EINTR ? -EINTR : 0;
}

/* One sleep over the words, at most ns. \return 0 (woken, changed, or slept
 * a scan period), -ETIMEDOUT (the whole ns passed), -EINTR. */
static int sleep_words(struct futex_waitv *w, unsigned n, int64_t ns)
{
    int force = ndc__waitany_force;
    if (n > WAITV_MAX && force == 0 && atomic_load(&have_ring_waitv) >= 0) {
        int r = ring_waitv(w, n, ns);
        if (r != -ENOSYS)
            return r;
        atomic_store(&have_ring_waitv, -1);
    }
    if (force != 2 && atomic_load(&have_waitv) >= 0) {
        /* words beyond the first 128 are looked at between sleeps */
        int r = futex_waitv(w, n < WAITV_MAX ? n : WAITV_MAX, n > WAITV_MAX && ns > SCAN_NS ? SCAN_NS : ns);
        if (r != -ENOSYS) {
            atomic_store(&have_waitv, 1);
            return r;
        }
        atomic_store(&have_waitv, -1);
    }
    /* no futex_waitv: the first word, and a look at the others every ms */
    return futex_wait1((_Atomic uint32_t *)(uintptr_t)w[0].uaddr, (uint32_t)w[0].val,
                       n > 1 && ns > SCAN_NS ? SCAN_NS : ns, 0);
}

static _Atomic int64_t poll_sweep_at;   /* timeout-0 callers sweep once a slice */

/* Look at every entry: res[i] as outcome(); \return how many are nonzero. */
static uint32_t scan(ndc_chan *const *chans, const uint32_t *what, uint32_t n, int8_t *res)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        int side = what[i] ? side_of(what[i]) : -1;
        int o = side < 0 ? 0 : outcome(chans[i], side);
        res[i] = (int8_t)(o > 0 ? 1 : o < 0 ? (o == -EPIPE ? 2 : o == -EOWNERDEAD ? 3 : 4) : 0);
        k += o != 0;
    }
    return k;
}

static int32_t result_of(int8_t r)
{
    switch (r) {
    case 1:  return 1;
    case 2:  return -EPIPE;
    case 3:  return -EOWNERDEAD;
    case 4:  return -EPERM;
    default: return 0;
    }
}

int ndc_wait_any(ndc_chan *const *chans, const uint32_t *what, uint32_t n, int32_t *ready,
                 int64_t timeout_ns)
{
    if (n > NDC_WAIT_MAX)
        return ndc__fail(-EINVAL, "%u entries, at most NDC_WAIT_MAX (%u)", n, (unsigned)NDC_WAIT_MAX);
    if (n && (!chans || !what || !ready))
        return ndc__fail(-EINVAL, "NULL chans, what or ready");
    int r = ndc__timeout_check(timeout_ns);
    if (r)
        return r;
    uint32_t active = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!what[i])
            continue;
        if (side_of(what[i]) < 0)
            return ndc__fail(-EINVAL, "entry %u: what 0x%x is not NDC_WAIT_ACQUIRE or NDC_WAIT_RESERVE",
                             i, what[i]);
        if (!chans[i])
            return ndc__fail(-EINVAL, "entry %u: NULL channel", i);
        if ((r = ndc__ensure_joined(chans[i])))
            return r;
        active++;
    }
    int8_t *res = malloc(n ? n : 1);
    struct futex_waitv *w = calloc(active ? active : 1, sizeof *w);
    uint32_t *idx = malloc((active ? active : 1) * sizeof *idx);
    if (!res || !w || !idx) {
        free(res);
        free(w);
        free(idx);
        return ndc__fail(-ENOMEM, "wait-any over %u entries: out of memory", n);
    }
    for (uint32_t i = 0, j = 0; i < n; i++)
        if (what[i])
            idx[j++] = i;
    struct ndc__deadline dl;
    ndc__deadline_init(&dl, timeout_ns);
    int64_t slice_end = 0;
    uint32_t k;
    for (;;) {
        if ((k = scan(chans, what, n, res)))
            break;
        int64_t left = ndc__deadline_left(&dl);
        if (left == 0 && timeout_ns == 0) {
            /* a poller never sleeps: it sweeps here, once a slice per process */
            int64_t now = ndc__now_ns(), last = atomic_load(&poll_sweep_at);
            if (now - last >= SLICE_NS && atomic_compare_exchange_strong(&poll_sweep_at, &last, now)) {
                for (uint32_t j = 0; j < active; j++)
                    sweep(chans[idx[j]]);
                if ((k = scan(chans, what, n, res)))
                    break;
            }
            r = -EAGAIN;
            goto out;
        }
        if (left == 0) {
            r = ndc__fail(-ETIMEDOUT, "no channel of %u became ready in time", active);
            goto out;
        }
        if (!slice_end)
            slice_end = ndc__now_ns() + SLICE_NS;
        for (uint32_t j = 0; j < active; j++) {
            ndc_chan *ch = chans[idx[j]];
            int side = side_of(what[idx[j]]);
            watch_add(ch, side);
            _Atomic uint32_t *word = &ch->ctrl->sem[side].count;
            w[j].uaddr = (uint64_t)(uintptr_t)word;
            w[j].val = atomic_load(word);
            w[j].flags = FUTEX_32;   /* shared: no FUTEX_PRIVATE_FLAG */
        }
        k = scan(chans, what, n, res);   /* the re-check, after counting ourselves in */
        int64_t now = ndc__now_ns(), until = slice_end - now;
        if (until > left)
            until = left;
        if (!k && until > 0)
            r = active ? sleep_words(w, active, until)
                       : (nanosleep(&(struct timespec){ until / 1000000000, until % 1000000000 }, NULL)
                              ? -EINTR : 0);
        for (uint32_t j = 0; j < active; j++)
            watch_del(chans[idx[j]], side_of(what[idx[j]]));
        if (k)
            break;
        if (r == -EINTR) {
            r = ndc__fail(-EINTR, "interrupted while waiting on %u channels", active);
            goto out;
        }
        if (ndc__now_ns() >= slice_end) {   /* a slice without news: look for the dead */
            for (uint32_t j = 0; j < active; j++)
                sweep(chans[idx[j]]);
            slice_end = 0;
        }
    }
    for (uint32_t i = 0; i < n; i++)
        ready[i] = result_of(res[i]);
    r = (int)k;
out:
    free(res);
    free(w);
    free(idx);
    return r;
}

/* ---- notify fds ------------------------------------------------------------ */

enum { TAG_FUTEX = 1, TAG_CLOSE, TAG_RETRY, TAG_NOP, TAG_CANCEL };
enum { CMD_IDLE = 0, CMD_ARMED, CMD_STOP };

struct nstate {
    struct nstate *next;
    ndc_chan *ch;
    int side;
    unsigned fork_gen;          /* the process generation that made it */
    int mode;                   /* NDC__NOTIFY_URING or NDC__NOTIFY_THREAD */
    pthread_mutex_t lock;
    int fd;                     /* what the caller polls: the ring, or the eventfd */
    /* io_uring */
    struct ring ring;
    int ino;                    /* inotify fd watching the segment file for IN_CLOSE_WRITE */
    unsigned seen;              /* completions looked at; the kernel's head may lag by one */
    int futex_on;               /* a FUTEX_WAIT of ours is in flight: we are counted in */
    int close_on, retry_on;     /* the inotify poll, the death's second look */
    /* helper thread */
    pthread_t thread;
    int thread_on;
    _Atomic uint32_t cmd;       /* CMD_*: private futex word */
    int signalled;              /* the eventfd holds a count (under lock) */
};

/* Every notify fd of this process, by handle. */
#define NBUCKETS 256
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct nstate *reg[NBUCKETS];
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static _Atomic uint32_t reg_count;

static void reg_before_fork(void) { pthread_mutex_lock(&reg_lock); }
static void reg_after_fork_parent(void) { pthread_mutex_unlock(&reg_lock); }
static void reg_after_fork_child(void) { pthread_mutex_init(&reg_lock, NULL); }
static void reg_init(void) { pthread_atfork(reg_before_fork, reg_after_fork_parent, reg_after_fork_child); }

static unsigned bucket(const ndc_chan *ch)
{
    uintptr_t p = (uintptr_t)ch;
    return (unsigned)((p >> 4) ^ (p >> 12)) % NBUCKETS;
}

static struct nstate *reg_find(ndc_chan *ch, int side)
{
    for (struct nstate *s = reg[bucket(ch)]; s; s = s->next)
        if (s->ch == ch && s->side == side)
            return s;
    return NULL;
}

static void reg_unlink(struct nstate *st)
{
    struct nstate **p = &reg[bucket(st->ch)];
    while (*p && *p != st)
        p = &(*p)->next;
    if (*p) {
        *p = st->next;
        atomic_fetch_sub(&reg_count, 1);
    }
}

/* io_uring ----------------------------------------------------------------- */

static int uring_open(struct nstate *st)
{
    ndc_chan *ch = st->ch;
    int r = ring_init(&st->ring, 8);
    if (r)
        return ndc__fail(-ENOSYS, "io_uring_setup: %s", strerror(-r));   /* off, filtered, too old */
    if (!ring_has_op(&st->ring, OP_FUTEX_WAIT))
        goto nosys;
    /* a dying peer closes its own description of the segment file */
    st->ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (st->ino < 0)
        goto nosys;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", ch->seg.fd);
    if (inotify_add_watch(st->ino, path, IN_CLOSE_WRITE) < 0 &&
        (!ch->seg.path[0] || inotify_add_watch(st->ino, ch->seg.path, IN_CLOSE_WRITE) < 0))
        goto nosys;
    st->fd = st->ring.fd;
    st->seen = atomic_load(st->ring.cq_tail);
    return 0;
nosys:
    ndc__fail(-ENOSYS, "io_uring cannot wait on futexes here, or inotify cannot watch the channel");
    if (st->ino >= 0)
        close(st->ino);
    st->ino = -1;
    ring_unmap(&st->ring);
    close(st->ring.fd);
    return -ENOSYS;
}

static void drain_fd(int fd)
{
    char buf[4096];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static int uring_arm(struct nstate *st)
{
    ndc_chan *ch = st->ch;
    struct ring *r = &st->ring;
    /* at most four SQEs below (poll, timeout, futex, nop); a failed enter
     * leaves its SQEs queued for the next one */
    if (r->sq_entries - (atomic_load(r->sq_tail) - atomic_load(r->sq_head)) < 4) {
        int e = ring_enter(r, 0, -1);
        if (e)
            return ndc__fail(e, "io_uring_enter: %s", strerror(-e));
    }
    unsigned tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
    int look = 0, closed = 0;
    for (; st->seen != tail; st->seen++) {
        const struct io_uring_cqe *c = &r->cqes[st->seen & r->cq_mask];
        switch (c->user_data) {
        case TAG_FUTEX:
            st->futex_on = 0;
            watch_del(ch, st->side);
            break;
        case TAG_CLOSE:
            st->close_on = 0;
            closed = look = 1;
            break;
        case TAG_RETRY:
            st->retry_on = 0;
            look = 1;
            break;
        default:
            break;
        }
    }
    if (closed)
        drain_fd(st->ino);
    if (look)
        sweep(ch);
    if (!st->close_on) {
        struct io_uring_sqe *s = ring_sqe(r);
        s->opcode = IORING_OP_POLL_ADD;
        s->fd = st->ino;
        s->poll32_events = POLLIN;
        s->user_data = TAG_CLOSE;
        st->close_on = 1;
    }
    /* The close event comes before the kernel drops the dead process's
     * locks (both in the last fput of its description): the sweep just
     * made may still see it alive. Look once more a little later. */
    static const struct __kernel_timespec retry = { 0, RETRY_NS };
    if (closed && !st->retry_on) {
        struct io_uring_sqe *s = ring_sqe(r);
        s->opcode = IORING_OP_TIMEOUT;
        s->addr = (uint64_t)(uintptr_t)&retry;
        s->len = 1;
        s->user_data = TAG_RETRY;
        st->retry_on = 1;
    }
    int o = outcome(ch, st->side);
    if (o == 0 && !st->futex_on) {
        _Atomic uint32_t *word = &ch->ctrl->sem[st->side].count;
        watch_add(ch, st->side);
        uint32_t v = atomic_load(word);
        o = outcome(ch, st->side);
        if (o == 0) {
            struct io_uring_sqe *s = ring_sqe(r);
            s->opcode = OP_FUTEX_WAIT;
            s->fd = FUTEX_32;   /* futex2 flags: 32 bits, shared */
            s->addr = (uint64_t)(uintptr_t)word;
            s->off = v;
            s->addr3 = FUTEX_BITSET_MATCH_ANY;
            s->user_data = TAG_FUTEX;
            st->futex_on = 1;
        } else {
            watch_del(ch, st->side);
        }
    }
    int e = r->queued ? ring_enter(r, 0, -1) : 0;
    if (e && e != -EINTR)
        return ndc__fail(e, "io_uring_enter: %s", strerror(-e));
    tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
    unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
    if (o == 0) {
        /* consumed: unreadable until a completion comes (one that came
         * after we read tail stays, and the fd is readable at once) */
        atomic_store_explicit(r->cq_head, st->seen, memory_order_release);
        return 0;
    }
    /* ready: keep (or make) one completion, so the fd is readable. Only
     * completions looked at are consumed: the last of them stays. */
    if (tail != head) {
        if (st->seen != head)
            atomic_store_explicit(r->cq_head, st->seen - 1, memory_order_release);
    } else {
        struct io_uring_sqe *s = ring_sqe(r);
        s->opcode = IORING_OP_NOP;
        s->user_data = TAG_NOP;
        ring_enter(r, 0, -1);
    }
    return o;
}

/* Cancel everything in flight and collect it, so nothing of ours stays
 * asleep on the word once we stop counting ourselves in. */
static void uring_close(struct nstate *st)
{
    struct ring *r = &st->ring;
    if (r->queued)
        ring_enter(r, 0, -1);
    struct io_uring_sqe *s = ring_sqe(r);
    int inflight = st->futex_on + st->close_on + st->retry_on;
    if (s) {
        s->opcode = IORING_OP_ASYNC_CANCEL;
        s->cancel_flags = IORING_ASYNC_CANCEL_ANY;
        s->user_data = TAG_CANCEL;
        inflight++;
    }
    ring_enter(r, 0, -1);
    for (int tries = 0; tries < 100; tries++) {
        unsigned tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
        for (; st->seen != tail; st->seen++) {
            uint64_t tag = r->cqes[st->seen & r->cq_mask].user_data;
            if (tag == TAG_FUTEX || tag == TAG_CLOSE || tag == TAG_RETRY || tag == TAG_CANCEL)
                inflight--;
            if (tag == TAG_FUTEX) {
                st->futex_on = 0;
                watch_del(st->ch, st->side);
            }
        }
        atomic_store_explicit(r->cq_head, tail, memory_order_release);
        if (inflight <= 0)
            break;
        ring_enter(r, 1, 10000000);
    }
    if (st->futex_on)
        watch_del(st->ch, st->side);   /* cannot happen; never leave the count high */
    st->futex_on = 0;
    ring_unmap(r);
    close(r->fd);
    close(st->ino);
}

/* helper thread ------------------------------------------------------------ */

static void *helper_main(void *p)
{
    struct nstate *st = p;
    ndc_chan *ch = st->ch;
    _Atomic uint32_t *word = &ch->ctrl->sem[st->side].count;
    int64_t slice_end = 0;
    for (;;) {
        uint32_t cmd = atomic_load(&st->cmd);
        if (cmd == CMD_STOP)
            break;
        if (cmd == CMD_IDLE) {
            futex_wait1(&st->cmd, CMD_IDLE, -1, 1);
            slice_end = 0;
            continue;
        }
        if (!slice_end)
            slice_end = ndc__now_ns() + SLICE_NS;
        watch_add(ch, st->side);
        uint32_t v = atomic_load(word);
        int o = outcome(ch, st->side);
        int64_t until = slice_end - ndc__now_ns();
        if (o == 0 && until > 0) {
            struct futex_waitv w[2] = {
                { .val = v, .uaddr = (uint64_t)(uintptr_t)word, .flags = FUTEX_32 },
                { .val = CMD_ARMED, .uaddr = (uint64_t)(uintptr_t)&st->cmd,
                  .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG },
            };
            int r = atomic_load(&have_waitv) >= 0 && ndc__waitany_force != 2 ? futex_waitv(w, 2, until)
                                                                              : -ENOSYS;
            if (r == -ENOSYS) {
                atomic_store(&have_waitv, -1);
                futex_wait1(word, v, until, 0);   /* a stop wakes this word too */
            }
        }
        watch_del(ch, st->side);
        if (o == 0 && ndc__now_ns() >= slice_end) {
            sweep(ch);
            slice_end = 0;
        }
        o = outcome(ch, st->side);
        if (o == 0)
            continue;
        pthread_mutex_lock(&st->lock);
        uint32_t armed = CMD_ARMED;
        if (atomic_compare_exchange_strong(&st->cmd, &armed, CMD_IDLE) && !st->signalled) {
            uint64_t one = 1;
            if (write(st->fd, &one, sizeof one) == sizeof one)
                st->signalled = 1;
        }
        pthread_mutex_unlock(&st->lock);
    }
    return NULL;
}

static int thread_open(struct nstate *st)
{
    st->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->fd < 0)
        return ndc__fail(-errno, "eventfd: %s", strerror(errno));
    atomic_init(&st->cmd, CMD_IDLE);
    /* The helper takes no signal of the process's: all blocked in it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&st->thread, &attr, helper_main, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (e) {
        close(st->fd);
        return ndc__fail(-e, "starting the notify helper thread: %s", strerror(e));
    }
    st->thread_on = 1;
    return 0;
}

static int thread_arm(struct nstate *st)
{
    int o = outcome(st->ch, st->side);
    if (o != 0) {
        if (!st->signalled) {
            uint64_t one = 1;
            if (write(st->fd, &one, sizeof one) == sizeof one)
                st->signalled = 1;
        }
        return o;
    }
    if (st->signalled) {
        uint64_t n;
        if (read(st->fd, &n, sizeof n) < 0 && errno != EAGAIN)
            return ndc__fail(-errno, "reading the notify eventfd: %s", strerror(errno));
        st->signalled = 0;
    }
    uint32_t idle = CMD_IDLE;
    if (atomic_compare_exchange_strong(&st->cmd, &idle, CMD_ARMED))
        syscall(SYS_futex, &st->cmd, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
    return 0;
}

static void thread_close(struct nstate *st)
{
    atomic_store(&st->cmd, CMD_STOP);
    syscall(SYS_futex, &st->cmd, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
    /* without futex_waitv the helper sleeps on the channel's word alone */
    ndc__futex_wake(&st->ch->ctrl->sem[st->side].count, INT32_MAX);
    pthread_join(st->thread, NULL);
    close(st->fd);
}

/* states ------------------------------------------------------------------- */

/* Drop a state made by the process this one was forked from: its fds are
 * copies (closing them leaves the parent's alone), its ring mapping a copy,
 * its thread was not forked, its counts are the parent's. */
static void forget(struct nstate *st)
{
    if (st->mode == NDC__NOTIFY_URING) {
        ring_unmap(&st->ring);
        close(st->ring.fd);
        close(st->ino);
    } else {
        close(st->fd);
    }
    free(st);
}

static void destroy(struct nstate *st)
{
    if (st->mode == NDC__NOTIFY_URING)
        uring_close(st);
    else
        thread_close(st);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* Under reg_lock: drop this handle's states inherited from a parent. */
static void forget_inherited(ndc_chan *ch)
{
    unsigned gen = atomic_load(&ndc__fork_gen);
    struct nstate **p = &reg[bucket(ch)];
    while (*p) {
        struct nstate *s = *p;
        if (s->ch == ch && s->fork_gen != gen) {
            *p = s->next;
            atomic_fetch_sub(&reg_count, 1);
            forget(s);
        } else {
            p = &s->next;
        }
    }
}

static int arm(struct nstate *st)
{
    pthread_mutex_lock(&st->lock);
    int o = st->mode == NDC__NOTIFY_URING ? uring_arm(st) : thread_arm(st);
    pthread_mutex_unlock(&st->lock);
    return o;
}

int ndc_notify_fd(ndc_chan *ch, uint32_t what)
{
    int side = side_of(what);
    if (!ch || side < 0)
        return ndc__fail(-EINVAL, "NULL channel, or what 0x%x is not NDC_WAIT_ACQUIRE or "
                         "NDC_WAIT_RESERVE", what);
    if (side == NDC__SIDE_FREE && (ch->open_flags & NDC_RDONLY))
        return ndc__fail(-EPERM, "receive-only handle cannot reserve");
    int r = ndc__ensure_joined(ch);
    if (r)
        return r;
    pthread_once(&reg_once, reg_init);
    pthread_mutex_lock(&reg_lock);
    forget_inherited(ch);
    struct nstate *st = reg_find(ch, side);
    if (st) {
        pthread_mutex_unlock(&reg_lock);
        return st->fd;
    }
    st = calloc(1, sizeof *st);
    if (!st) {
        pthread_mutex_unlock(&reg_lock);
        return ndc__fail(-ENOMEM, "notify fd: out of memory");
    }
    st->ch = ch;
    st->side = side;
    st->fork_gen = atomic_load(&ndc__fork_gen);
    st->ino = -1;
    pthread_mutex_init(&st->lock, NULL);
    sweep(ch);   /* deaths before now produce no event */
    r = -ENOSYS;
    if (ndc__notify_force != NDC__NOTIFY_THREAD) {
        r = uring_open(st);
        st->mode = NDC__NOTIFY_URING;
    }
    if (r && ndc__notify_force != NDC__NOTIFY_URING) {
        r = thread_open(st);
        st->mode = NDC__NOTIFY_THREAD;
    }
    if (r) {
        pthread_mutex_destroy(&st->lock);
        free(st);
        pthread_mutex_unlock(&reg_lock);
        return r;
    }
    st->next = reg[bucket(ch)];
    reg[bucket(ch)] = st;
    atomic_fetch_add(&reg_count, 1);
    pthread_mutex_unlock(&reg_lock);
    r = arm(st);
    return r == -EINTR || r >= 0 || r == -EPIPE || r == -EOWNERDEAD || r == -EPERM ? st->fd : r;
}

int ndc_notify_arm(ndc_chan *ch, uint32_t what)
{
    int side = side_of(what);
    if (!ch || side < 0)
        return ndc__fail(-EINVAL, "NULL channel, or what 0x%x is not NDC_WAIT_ACQUIRE or "
                         "NDC_WAIT_RESERVE", what);
    int r = ndc__ensure_joined(ch);
    if (r)
        return r;
    pthread_once(&reg_once, reg_init);
    pthread_mutex_lock(&reg_lock);
    if (atomic_load_explicit(&ndc__fork_gen, memory_order_relaxed) != 0)
        forget_inherited(ch);
    struct nstate *st = reg_find(ch, side);
    pthread_mutex_unlock(&reg_lock);
    if (!st)
        return ndc__fail(-EINVAL, "no notify fd for %s on this handle in this process "
                         "(ndc_notify_fd makes one)", what == NDC_WAIT_ACQUIRE ? "acquire" : "reserve");
    return arm(st);
}

int ndc__notify_mode(ndc_chan *ch, uint32_t what)
{
    int side = side_of(what);
    pthread_once(&reg_once, reg_init);
    pthread_mutex_lock(&reg_lock);
    struct nstate *st = side < 0 ? NULL : reg_find(ch, side);
    int m = st ? st->mode : -EINVAL;
    pthread_mutex_unlock(&reg_lock);
    return m;
}

void ndc__notify_free(ndc_chan *ch)
{
    if (atomic_load_explicit(&reg_count, memory_order_relaxed) == 0)
        return;
    unsigned gen = atomic_load(&ndc__fork_gen);
    pthread_mutex_lock(&reg_lock);
    struct nstate *mine[2] = { NULL, NULL };
    forget_inherited(ch);
    for (int side = 0; side < 2; side++) {
        struct nstate *st = reg_find(ch, side);
        if (st && st->fork_gen == gen) {
            reg_unlink(st);
            mine[side] = st;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    for (int side = 0; side < 2; side++)
        if (mine[side])
            destroy(mine[side]);
}
