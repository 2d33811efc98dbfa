/* Liveness: the kernel vouches for every attached process.
 *
 * Each attached handle holds an OFD write lock (F_OFD_SETLK) on one byte of
 * the segment file, the byte whose offset is its peer entry's index,
 * through an open file description of its own. A peer is alive exactly
 * while its byte is locked: the kernel drops the lock when the last fd of
 * that description closes, that is when the process dies or detaches, in
 * any pid namespace, with no /proc, and a reused pid changes nothing.
 *
 * The description must be the handle's own: one shared with another
 * process (a forked child's inherited fd, an fd passed over a socket)
 * would keep the lock, and the peer "alive", as long as that other process
 * lives. So it is opened afresh at attach (via /proc/self/fd, or the
 * channel's path), the inherited copy is closed in a forked child, and the
 * child opens its own at its first call.
 *
 * Where no fresh description can be had (an anonymous channel in a sandbox
 * without /proc), the handle locks through a duplicate of its segment fd
 * and, not being able to tell its own locks from others' on that shared
 * description, judges nobody dead: dead peers' slots then stay held, but a
 * live peer is never robbed. Others still see its lock.
 */
#ifndef NDC_LIVE_H
#define NDC_LIVE_H
#include <stdatomic.h>
#include <stdint.h>

struct ndc__live {
    int fd;                     /* the handle's own description, -1 before one is open */
    int private_fd;             /* 1: fd is a description of its own, so probes through it
                                   see every other holder; 0: judge nobody dead */
    struct ndc__live *prev, *next;   /* every handle of this process: see fork below */
};

/* Open the handle's own description of the segment (seg_fd), verified to
 * be the same file; `path` ("/dev/shm/x") is the fallback where /proc is
 * missing, NULL for anonymous channels. Registers the handle, so a fork
 * child closes its copy. \return 0 or -errno. */
int ndc__live_open(struct ndc__live *l, int seg_fd, const char *path);
/* Close the description (dropping its lock) and unregister. Idempotent. */
void ndc__live_close(struct ndc__live *l);

/* Lock byte `idx` for this handle. \return 0; -EAGAIN a live process holds
 * it; other -errno. */
int ndc__live_hold(struct ndc__live *l, uint32_t idx);
/* Whether some other description holds byte idx: 1 yes (or unknown: a
 * failed probe counts as alive), 0 no. Always 1 when !private_fd. Before
 * the handle has a description of its own (a fork child that has not used
 * it yet), the probe goes through `seg_fd`, the segment's description,
 * through which nobody locks. */
int ndc__live_held(const struct ndc__live *l, int seg_fd, uint32_t idx);

/* Bumped in every fork child: a handle whose generation differs was
 * inherited and must join as a peer of its own before its next call. */
extern _Atomic unsigned ndc__fork_gen;
/* Install the fork handler (once per process). */
void ndc__live_init(void);

#endif
