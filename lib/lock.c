/* The queue lock.
 *
 * The word is 0 when free, else the holder's pid, with NDC__LOCK_WAITERS set
 * once someone sleeps on it. Critical sections are a few dozen instructions
 * with no call inside, so waiters spin briefly, then sleep on the futex in
 * 1 ms slices; between slices they check the holder: a holder that is gone
 * (or a pid that names nobody: a scribbled word) is taken over, and the
 * caller repairs the state from the slot table (queue.c), which is the
 * truth the queues index. A holder alive but holding for over two seconds
 * is treated as a corrupt word too, unless it is stopped (SIGSTOP, a
 * debugger), since no critical section takes that long otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "lock.h"
#include "segment.h"

#define SPINS         200
#define SLICE_NS      1000000           /* 1 ms */
#define STUCK_NS      2000000000        /* 2 s */
#define TRY_GRACE_NS  200000            /* timeout 0 still waits this long for a slow holder */

int ndc__proc_stat(int32_t pid, uint64_t *start_time, char *state)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -ESRCH;
    buf[n] = 0;
    /* comm may hold spaces and parentheses: fields restart after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -EBADMSG;
    p += 2;
    *state = *p;
    /* starttime is field 22; state is field 3 */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -EBADMSG;
        p++;
    }
    *start_time = strtoull(p, NULL, 10);
    return 0;
}

/* Whether /proc can answer for this process at all (not mounted in some
 * chroots and sandboxes): without it, ENOENT would call every pid dead. */
static int proc_usable(void)
{
    static _Atomic int usable = -1;
    int u = atomic_load_explicit(&usable, memory_order_relaxed);
    if (u < 0) {
        u = access("/proc/self/stat", R_OK) == 0;
        atomic_store_explicit(&usable, u, memory_order_relaxed);
    }
    return u;
}

int ndc__pid_alive(int32_t pid, uint64_t start_time)
{
    if (pid <= 0)
        return 0;
    if (!proc_usable())   /* the signal probe: blind to zombies and reused pids */
        return kill(pid, 0) == 0 || errno == EPERM;
    uint64_t st;
    char state;
    int r = ndc__proc_stat(pid, &st, &state);
    if (r == -ENOENT || r == -ESRCH)
        return 0;
    if (r)  /* /proc unreadable here: fall back to the signal probe */
        return kill(pid, 0) == 0 || errno == EPERM;
    if (state == 'Z' || state == 'X')
        return 0;
    return start_time == 0 || st == start_time;
}

int ndc__trylock(_Atomic uint32_t *w, int32_t pid)
{
    uint32_t z = 0;
    return atomic_compare_exchange_strong_explicit(w, &z, (uint32_t)pid, memory_order_acquire,
                                                   memory_order_relaxed) ? 0 : -EBUSY;
}

static int holder_stuck(uint32_t holder)
{
    uint64_t st;
    char state;
    if (ndc__proc_stat((int32_t)holder, &st, &state))
        return 1;   /* no /proc: a holder for 2 s is stuck, stopped or not */
    return state != 'T' && state != 't';
}

int ndc__lock(_Atomic uint32_t *w, int32_t pid, struct ndc__deadline *dl)
{
    for (int i = 0; i < SPINS; i++) {
        uint32_t v = atomic_load_explicit(w, memory_order_relaxed);
        if (v == 0 && ndc__trylock(w, pid) == 0)
            return 0;
        ndc__cpu_relax();
    }
    /* Once we have slept, we take the lock with the waiters bit set: we
     * cannot know whether others still sleep, so the unlock must wake. */
    uint32_t mine = (uint32_t)pid | NDC__LOCK_WAITERS;
    uint32_t seen = 0;
    int64_t seen_since = 0;
    int64_t grace_end = dl->timeout_ns == 0 ? ndc__now_ns() + TRY_GRACE_NS : 0;
    for (;;) {
        uint32_t v = atomic_load_explicit(w, memory_order_relaxed);
        if (v == 0) {
            if (atomic_compare_exchange_strong_explicit(w, &v, mine, memory_order_acquire,
                                                        memory_order_relaxed))
                return 0;
            continue;
        }
        uint32_t holder = v & ~NDC__LOCK_WAITERS;
        int64_t now = ndc__now_ns();
        if (v != seen) {
            seen = v;
            seen_since = now;
        }
        int broken = !ndc__pid_alive((int32_t)holder, 0) ||
                     (now - seen_since > STUCK_NS && holder_stuck(holder));
        if (broken) {
            if (atomic_compare_exchange_strong_explicit(w, &v, mine, memory_order_acquire,
                                                        memory_order_relaxed))
                return 1;
            continue;
        }
        int64_t left = dl->timeout_ns == 0 ? grace_end - now : ndc__deadline_left(dl);
        if (left <= 0)
            return -ETIMEDOUT;
        if (!(v & NDC__LOCK_WAITERS) &&
            !atomic_compare_exchange_strong_explicit(w, &v, v | NDC__LOCK_WAITERS,
                                                     memory_order_relaxed, memory_order_relaxed))
            continue;
        ndc__futex_wait(w, v | NDC__LOCK_WAITERS, left < SLICE_NS ? left : SLICE_NS);
    }
}

void ndc__unlock(_Atomic uint32_t *w)
{
    /* release: pairs with the acquire of the next holder's CAS */
    uint32_t v = atomic_exchange_explicit(w, 0, memory_order_release);
    if (v & NDC__LOCK_WAITERS)
        ndc__futex_wake(w, 1);
}
