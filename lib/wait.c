/* Waiting primitives. The futexes are the shared kind (no
 * FUTEX_PRIVATE_FLAG): the words live in a segment mapped by several
 * processes, and the kernel keys them by inode and offset. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "ndchan.h"
#include "wait.h"

int64_t ndc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ndc__deadline_init(struct ndc__deadline *d, int64_t timeout_ns)
{
    d->timeout_ns = timeout_ns;
    d->at = 0;
    d->started = 0;
}

int64_t ndc__deadline_left(struct ndc__deadline *d)
{
    if (d->timeout_ns < 0)
        return INT64_MAX;
    if (d->timeout_ns == 0)
        return 0;
    int64_t now = ndc__now_ns();
    if (!d->started) {
        d->started = 1;
        /* saturating: a timeout near INT64_MAX means "no limit", not "now" */
        if (__builtin_add_overflow(now, d->timeout_ns, &d->at))
            d->at = INT64_MAX;
    }
    return d->at > now ? d->at - now : 0;
}

int ndc__timeout_check(int64_t timeout_ns)
{
    if (timeout_ns >= 0 || timeout_ns == NDC_FOREVER)
        return 0;
    return ndc__fail(-EINVAL, "timeout %lld ns: negative timeouts other than NDC_FOREVER (-1) "
                     "are refused", (long long)timeout_ns);
}

int ndc__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tp = &ts;
    }
    if (syscall(SYS_futex, word, FUTEX_WAIT, expected, tp, NULL, 0) == 0)
        return 0;
    if (errno == ETIMEDOUT || errno == EINTR)
        return -errno;
    return 0;   /* EAGAIN: the value had changed already */
}

void ndc__futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

int ndc__current_cpu(void)
{
    return sched_getcpu();
}

int ndc__can_run_elsewhere(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 1;
    return CPU_COUNT(&set) > 1;
}
