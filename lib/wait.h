/* Waiting: time, deadlines, spinning and futexes on shared words. */
#ifndef NDC_WAIT_H
#define NDC_WAIT_H
#include <stdatomic.h>
#include <stdint.h>

int64_t ndc__now_ns(void);                       /* CLOCK_MONOTONIC */

/* A deadline made from a caller's relative timeout. The clock is read only
 * when the caller first has to wait, so the uncontended path makes no call. */
struct ndc__deadline {
    int64_t timeout_ns;    /* as given: NDC_FOREVER (< 0), 0 (try once), or ns */
    int64_t at;            /* absolute, valid once started */
    int     started;
};
void ndc__deadline_init(struct ndc__deadline *d, int64_t timeout_ns);
/* A caller's timeout: NDC_FOREVER, 0 or positive. \return 0, or -EINVAL
 * for any other negative value (a passed deadline, computed as
 * deadline - now, must not turn into "forever"). */
int ndc__timeout_check(int64_t timeout_ns);
/* ns left (INT64_MAX forever, 0 when expired); starts the clock. */
int64_t ndc__deadline_left(struct ndc__deadline *d);

static inline void ndc__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Sleep while *word == expected, at most timeout_ns (< 0: no limit).
 * \return 0 woken or value changed; -ETIMEDOUT; -EINTR a signal handler ran. */
int ndc__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns);
/* Wake up to n sleepers on word (INT32_MAX: all). */
void ndc__futex_wake(_Atomic uint32_t *word, int n);

/* The CPU this thread runs on now (vDSO getcpu; -1 if unknown). */
int ndc__current_cpu(void);
/* Whether this thread may run on more than one CPU: spinning can pay only
 * if the peer can run at the same time on another one. */
int ndc__can_run_elsewhere(void);

#endif
