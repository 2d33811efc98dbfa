/* Channel internals shared with the optional parts (numa, npy/io). */
#ifndef NDC_CHAN_H
#define NDC_CHAN_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "ndchan.h"

/* The payload region as mapped in this process: nslots slots of
 * slot_stride bytes each (page aligned, huge-page aligned under
 * NDC_HUGEPAGES) from base. Slot i's payload is base + i * slot_stride. */
struct ndc__payload {
    void    *base;
    size_t   len;
    uint64_t slot_stride;
    uint64_t slot_bytes;
    uint32_t nslots;
    int      writable;
};
void ndc__chan_payload(const ndc_chan *ch, struct ndc__payload *p);

/* ---- the handle (private to the library) -------------------------------- */
#include "live.h"
#include "segment.h"

struct ndc_chan {
    struct ndc__segment seg;     /* fd, mapping, validated geometry: never re-read */
    struct ndc__ctrl *ctrl;
    struct ndc__peer *peers;     /* [seg.g.max_peers] */
    struct ndc__cell *cells;     /* [nslots] the ready ring */
    struct ndc__slot *slots;     /* [nslots] */
    unsigned char *payload;      /* slot i at payload + i * slot_stride */
    uint32_t open_flags;         /* NDC_RDONLY */
    /* This process's identity in the segment. A child after fork() finds
     * fork_gen stale and joins as a process of its own (see peer.c). */
    struct ndc__live live;       /* the liveness lock's description */
    uint32_t me;                 /* peer index */
    _Atomic uint32_t in_lock;    /* this process's threads holding the repair lock or in a CAS
                                    to take it (lock.h): a lock word naming this process
                                    while it is 0 is forged */
    int32_t pid;
    unsigned fork_gen;
    uint64_t *claimed;           /* [nslots] payload bytes of each slot this process has
                                    made sure exist (fallocate): private, never trusted
                                    from the segment */
    _Atomic uint32_t roles;      /* NDC__PEER_SENT/RECEIVED already published */
    _Atomic int joining;
    _Atomic uint32_t cursor;     /* where the next reserve looks for a FREE slot first */
    int bcast;                   /* NDC_BROADCAST */
    _Atomic uint64_t history_end;/* broadcast: positions before this were history when this
                                    handle subscribed: skipping them is no loss */
    /* Waiting policy (engine.c). */
    int64_t spin_budget;         /* ns; 0: never spin */
    _Atomic int64_t spin_now[2]; /* adapted budget per semaphore */
    _Atomic uint32_t posts;      /* V operations by this handle, to sample the CPU */
    _Atomic int64_t last_sweep;  /* when a non-blocking call last looked for dead peers */
    /* Loans kept by ndc_recv's -EMSGSIZE, handed out first by the next
     * receives, oldest first (several threads may each keep one). */
    pthread_mutex_t stash_lock;
    uint16_t stash[NDC_MAX_SLOTS];  /* FIFO of slot indices, nstash of them */
    uint32_t nstash;             /* under stash_lock */
    _Atomic uint32_t stash_count;/* the same, for a lock-free look on the fast path */
};

/* Peer entries in use are below this (the shared high-water mark, clamped:
 * a scribbled one must not steer a loop past the table). */
static inline uint32_t ndc__peers_hw(const ndc_chan *ch)
{
    uint32_t hw = atomic_load_explicit(&ch->ctrl->peers_hw, memory_order_acquire);
    return hw < ch->seg.g.max_peers ? hw : ch->seg.g.max_peers;
}

/* Bring a handle used for the first time in a forked child into the
 * segment as its own peer. Cheap when nothing forked: one load. */
int ndc__rejoin_slow(ndc_chan *ch);
static inline int ndc__ensure_joined(ndc_chan *ch)
{
    if (__builtin_expect(ch->fork_gen == atomic_load_explicit(&ndc__fork_gen, memory_order_relaxed), 1))
        return 0;
    return ndc__rejoin_slow(ch);
}

#endif
