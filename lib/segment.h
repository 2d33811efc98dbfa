/* The segment: one memfd or shm object per channel. Its layout is an ABI
 * shared by every process attached, possibly built from other versions of
 * this code: fixed-width fields, offsets not pointers, a magic and a layout
 * version, sizes asserted at compile time.
 *
 *   0            struct ndc__ctrl      geometry, waiters, 2 event words, the
 *                                      repair lock, the ready ring's tail and head
 *   cells_off    struct ndc__cell[nslots]          the ready ring, one line a cell
 *   peers_off    struct ndc__peer[max_peers]       four lines each
 *   table_off    struct ndc__slot[nslots]          one header per slot
 *   payload_off  nslots x slot_stride  payloads, page (or huge page) aligned
 *
 * Liveness locks (live.h) are OFD locks on bytes [0, max_peers) of the
 * file: byte i is held by the process whose peer entry is i. They are
 * advisory and touch no data.
 *
 * A named channel is built complete on an unnamed file in the shm
 * directory and only then linked to its name, so an opener never sees a
 * half-built one; the control area's pages are allocated (fallocate) before
 * it is written, and a slot's pages before a sender is given them, so a
 * full shm filesystem is an error code, never SIGBUS.
 *
 * Every offset is a function of (nslots, slot_bytes, flags): an attacher
 * recomputes them and rejects a segment whose stored values differ, then
 * uses only its own copy. Nothing else in the segment is trusted either:
 * indices, counts and slot headers are validated on every read. */
#ifndef NDC_SEGMENT_H
#define NDC_SEGMENT_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ndchan.h"

#define NDC__MAGIC   0x314e414843444e7full   /* "\x7fNDCHAN1" */
#define NDC__LAYOUT  3u      /* 3: lock-free ready ring, free slots found by state */
#define NDC__LINE    64

/* Slot states. The state word is the truth about a slot: a free slot is
 * found by its state, and the ready ring is an index over the READY ones
 * that can be rebuilt from the states alone (see queue.c), which is how a
 * peer that died in the middle of a step is repaired. COMMITTING is a
 * sender's own mark while it lists the slot (it owns the slot, and no
 * second thread can commit it too). */
enum { NDC__FREE = 1, NDC__RESERVED, NDC__READY, NDC__LOANED, NDC__COMMITTING };
#define NDC__STATE(w)       ((uint32_t)((w) & 0xff))
#define NDC__OWNER(w)       ((uint32_t)(((w) >> 8) & 0xffff))
#define NDC__WORD(st, own)  ((uint64_t)(st) | ((uint64_t)(own) << 8))
/* A broadcast channel's READY slot also counts the subscribers reading it. */
#define NDC__READER         (1ull << 24)
#define NDC__READERS(w)     ((uint32_t)(((w) >> 24) & 0xffff))

/* The two sides waiters wait on: [NDC__SIDE_FREE] a free slot (senders),
 * [NDC__SIDE_READY] a committed array (receivers). Each has an event word
 * (ctrl->sem[side].count): a counter that posters change when someone may
 * be waiting for what they posted, and the word sleepers sleep on. Its
 * high bit is the end-of-stream mark, so that ndc_close changes the very
 * word sleepers wait on and no wake-up can be missed. */
enum { NDC__SIDE_FREE = 0, NDC__SIDE_READY = 1 };
#define NDC__CLOSED   1u
#define NDC__EVENT    2u       /* what a post adds: the mark's bit never changes by it */
/* The ready ring's tail carries the end-of-stream mark too: a commit's
 * claim of a position and ndc_close are ordered on that one word. */
#define NDC__TAIL_CLOSED (1ull << 63)

/* Lock word: 0, or 1 + the holder's peer entry index (whose liveness lock
 * says whether it still runs); the high bit says someone sleeps. */
#define NDC__LOCK_WAITERS 0x80000000u

struct ndc__slot {
    /* line 0 is all a receiver reads of a header of up to 3 dimensions */
    _Atomic uint64_t state;   /* NDC__WORD(state, owner peer) */
    uint64_t seq;             /* commit order: the ready ring position, set at commit */
    uint64_t nbytes;          /* the rest is written by the owner while it holds the slot */
    uint64_t tag;
    uint32_t dtype;
    int32_t  ndim;
    int64_t  shape[NDC_MAX_DIMS];
    int64_t  strides[NDC_MAX_DIMS];  /* for tools; receivers derive their own */
    uint8_t  pad[24];
};
_Static_assert(sizeof(struct ndc__slot) == 576, "slot header is part of the segment ABI");
_Static_assert(offsetof(struct ndc__slot, shape) == 40, "shape[0..2] share line 0");

/* Peer roles, learnt from use: only a peer that has sent can feed a waiting
 * receiver, so "every sender is gone" is decided from these. */
#define NDC__PEER_RDONLY   1u
#define NDC__PEER_SENT     2u
#define NDC__PEER_RECEIVED 4u
enum { NDC__PEER_UNUSED = 0, NDC__PEER_LIVE, NDC__PEER_GONE };

#define NDC__SUB_LOANS 32          /* loans a broadcast subscriber may hold at once */
struct ndc__peer {                 /* written by its own process */
    _Atomic uint32_t state;        /* NDC__PEER_*: UNUSED -> LIVE by a joiner holding the entry's
                                      liveness byte; LIVE -> GONE by its owner; to UNUSED only
                                      under the queue lock (retire) */
    int32_t  pid;                  /* in its own pid namespace: for people (ndchan-stat), never
                                      for decisions */
    _Atomic uint32_t flags;        /* NDC__PEER_RDONLY | SENT | RECEIVED */
    _Atomic int32_t  cpu;          /* where it last ran a call: spin only if elsewhere */
    _Atomic uint32_t sleeping[2];  /* its threads asleep on each side */
    _Atomic uint32_t watching[2];  /* of those, wait-any/notify-fd waiters (notify.c): a
                                      retirement subtracts them from ctrl->watchers */
    uint8_t  pad[32];
    /* Line 1, written at every ring step, read only by a repair: the line
     * above is read by every waiter, and must not move with each step. */
    _Atomic uint32_t busy;         /* its threads inside a ready-ring step (queue.c): a repair
                                      waits for these to finish, and repairs after a dead
                                      peer's */
    uint8_t  pad1[60];
    /* Lines 2-3: a broadcast subscriber's record (bcast.c), written by its
     * own process, read by publishers looking for slots to reuse. */
    _Atomic uint64_t cursor;       /* the next position (seq) it takes */
    _Atomic uint64_t dropped;      /* arrays it never got (latest policy) */
    _Atomic uint64_t taken;        /* arrays it got */
    _Atomic uint32_t subscribed;   /* 1 from ndc_subscribe on */
    uint8_t  pad2[36];
    _Atomic uint16_t held[NDC__SUB_LOANS];   /* slot + 1 of each loan it holds, 0 unused: the
                                                truth a repair counts readers from */
};
_Static_assert(sizeof(struct ndc__peer) == 4 * NDC__LINE, "a peer is four cache lines");

struct ndc__ctrl {
    /* Lines 0-1: geometry, written once by the creator; magic last (release). */
    _Atomic uint64_t magic;
    uint32_t layout;
    uint32_t flags;            /* creation flags: NDC_HUGEPAGES, ... */
    uint32_t nslots;
    uint32_t max_peers;
    uint64_t slot_bytes;
    uint64_t slot_stride;
    uint64_t peers_off, table_off, payload_off, total_size;
    int64_t  spin_ns;          /* the channel's default spin budget */
    uint32_t numa_policy;
    int32_t  numa_node;
    uint64_t numa_nodeset;
    /* Read by every ring step, written only by a repair: 0 open, 1 closed
     * by the repairer, which holds the repair lock (queue.c). */
    _Atomic uint32_t gate;
    _Atomic uint32_t closed;   /* ndc_close was called: read by every reserve, so it lives
                                  here, apart from the words every post writes */
    uint32_t history;          /* NDC_BROADCAST: arrays kept for late subscribers */
    uint32_t slow_policy;      /* NDC_BROADCAST: enum ndc_slow_policy */
    uint8_t  pad0[16];
    /* Line 2: waiters, written on the slow path only. */
    _Atomic uint32_t sleepers[2];      /* threads asleep on each semaphore */
    _Atomic uint32_t gone_senders;     /* departed peers that had sent */
    _Atomic uint32_t gone_receivers;   /* departed peers that had received */
    _Atomic uint32_t peers_hw;         /* peer entries in use are below this */
    _Atomic uint32_t numa_resolved;    /* NDC_NUMA_NEAR_RECEIVER: placement done */
    _Atomic uint32_t repairs;          /* ring rebuilds after a death or corruption */
    uint32_t pad1;
    _Atomic int64_t  post_ns[2];       /* when a sleeper was last woken: adaptive spin */
    _Atomic uint32_t watchers[2];      /* of sleepers[], wait-any and notify-fd waiters (notify.c):
                                          while nonzero a post wakes every sleeper, so that
                                          such a waiter cannot take the one wake-up an
                                          acquirer or reserver needed */
    uint8_t  pad2[8];
    /* Lines 3-4: the two event words, a line each. Waiters spin on (and
     * sleep on) these words, so nothing else lives there. The FREE side's
     * changes at every release (senders waiting for a slot spin on it);
     * the READY side's only when a receiver sleeps (receivers spin on the
     * ring cell they wait for). */
    struct ndc__sem {
        _Atomic uint32_t count;        /* an event counter; NDC__CLOSED */
        uint8_t pad[60];
    } sem[2];
    /* Line 5: the repair lock (lock.h): joins, sweeps and ring repairs;
     * and what departed broadcast subscribers had counted (their retirement
     * adds it here, under the lock). */
    _Atomic uint32_t lock;
    uint32_t pad3;
    _Atomic uint64_t gone_received, gone_dropped;
    uint8_t  pad3b[40];
    /* Line 6: written by senders only. */
    _Atomic uint64_t tail;             /* ready ring: next position to claim (the next array's
                                          seq, so commits so far) | NDC__TAIL_CLOSED */
    _Atomic uint64_t bytes_sent;
    uint8_t  pad4[48];
    /* Line 7: written by receivers only. */
    _Atomic uint64_t head;             /* ready ring: next position to take (arrays taken) */
    uint8_t  pad5[56];
};
_Static_assert(sizeof(struct ndc__ctrl) == 8 * NDC__LINE, "control block is part of the segment ABI");
_Static_assert(offsetof(struct ndc__ctrl, sleepers) == 2 * NDC__LINE, "waiter line");
_Static_assert(offsetof(struct ndc__ctrl, sem) == 3 * NDC__LINE, "event lines");
_Static_assert(offsetof(struct ndc__ctrl, lock) == 5 * NDC__LINE, "lock line");
_Static_assert(offsetof(struct ndc__ctrl, tail) == 6 * NDC__LINE, "senders' line");
_Static_assert(offsetof(struct ndc__ctrl, head) == 7 * NDC__LINE, "receivers' line");

/* A ready ring cell (Vyukov's bounded queue): position p uses cell
 * p % nslots; seq == p: free for the commit that claims p; seq == p + 1:
 * holds the array committed at p; a receiver that takes it sets seq to
 * p + nslots, freeing the cell for the commit at that position. One line
 * each: the cell a receiver spins on is written by one sender only. */
struct ndc__cell {
    _Atomic uint64_t seq;
    _Atomic uint32_t slot;
    uint8_t pad[52];
};
_Static_assert(sizeof(struct ndc__cell) == NDC__LINE, "one cell per line");
#define NDC__CELLS_OFF sizeof(struct ndc__ctrl)

/* Geometry: everything derived from (nslots, slot_bytes, flags). */
struct ndc__geometry {
    uint32_t nslots, max_peers, flags;
    uint32_t numa_policy;      /* validated at attach; the segment's field is never re-read */
    uint32_t history, slow_policy;   /* NDC_BROADCAST; likewise */
    uint64_t slot_bytes, slot_stride, align;
    uint64_t peers_off, table_off, payload_off, total_size;
};
/* \return 0, or -EINVAL for values beyond the limits. */
int ndc__geometry(struct ndc__geometry *g, uint32_t nslots, uint64_t slot_bytes, uint32_t flags);
/* Validate a copy of a control block against the file's size (pure: used at
 * attach and by the fuzzer). \return 0 and *g; -EPROTO wrong magic or
 * layout; -EBADMSG inconsistent geometry. */
int ndc__ctrl_validate(const struct ndc__ctrl *copy, uint64_t file_size, struct ndc__geometry *g);
/* Validate a copy of a slot header of a ready slot (pure). \return 0 or -EBADMSG. */
int ndc__slot_validate(const struct ndc__slot *copy, const struct ndc__geometry *g);

/* The shm directory: where shm_open(3) puts names, and where named
 * channels are built before they are linked. */
#define NDC__SHM_DIR "/dev/shm"

/* A mapped segment. */
struct ndc__segment {
    int fd;
    unsigned char *base;       /* the whole mapping: control, table, payloads */
    struct ndc__geometry g;
    char path[NDC_NAME_MAX + sizeof NDC__SHM_DIR + 1];  /* a named channel's file, "" if anonymous */
};
/* Create, size, seal, map and initialise a segment (NUMA placement and
 * population included). name: NULL or a normalised "/name". */
int ndc__segment_create(struct ndc__segment *s, const char *name, const struct ndc_chan_opts *o);
/* Map and validate an existing segment; the fd is the caller's to keep. */
int ndc__segment_attach(struct ndc__segment *s, int fd, uint32_t flags);
/* Make sure the file's pages [off, off + len) exist, so that touching them
 * cannot raise SIGBUS. \return 0; -ENOSPC / -ENOMEM with the filesystem
 * and its free space in ndc_last_error(); what = what they are for. */
int ndc__segment_claim(const struct ndc__segment *s, uint64_t off, uint64_t len, const char *what);
void ndc__segment_unmap(struct ndc__segment *s);
/* "/name" from a user's name; -EINVAL for a bad or NULL one. */
int ndc__segment_name(char *out, size_t cap, const char *name);

#endif
