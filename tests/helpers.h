/* Helpers shared by the Criterion suites. */
#ifndef NDC_TEST_HELPERS_H
#define NDC_TEST_HELPERS_H
#include <stdint.h>
#include <sys/types.h>
#include "ndchan.h"

#include <stdio.h>
#include <unistd.h>

#define MS  (1000000LL)      /* nanoseconds */
#define SEC (1000000000LL)

/* A forked child's check: report where and why on stderr (with
 * ndc_last_error) and return `code`, which the parent asserts on. Children
 * never call cr_assert. */
#define CK(cond, code, ...)                                                                  \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "[child %d] %s:%d: ", (int)getpid(), __FILE__, __LINE__);        \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fprintf(stderr, " (last error: %s)\n", ndc_last_error());                        \
            return (code);                                                                   \
        }                                                                                    \
    } while (0)

/* Zeroed memory shared with forked children (flags, times, records). */
void *th_shared(size_t n);
/* A shm name unique to this process and call, so suites run in parallel. */
const char *th_unique_name(const char *what);
/* Fork; the child runs fn(arg) and _exits with its return value. */
pid_t th_fork(int (*fn)(void *), void *arg);
/* Wait for pid up to timeout_ms; returns its exit status (0..255), 128+signal
 * if it was killed, or -1 on timeout (the child is then SIGKILLed). */
int th_wait(pid_t pid, int timeout_ms);
/* Deterministic fill/check of a payload from (seed, nbytes). */
void th_fill(void *p, size_t n, uint64_t seed);
int th_check(const void *p, size_t n, uint64_t seed);
/* An anonymous channel of `slots` x `slot_bytes` (asserts it was created). */
ndc_chan *th_chan(uint32_t slots, uint64_t slot_bytes);
/* ndc_stat, asserted to succeed and to classify every slot exactly once
 * (free + ready + loaned == slots): a guard on stat's own bookkeeping. */
struct ndc_stat th_stat(const ndc_chan *ch);
/* The number of a "Key:  N kB" line of a /proc file ("/proc/self/status"
 * VmRSS, "/proc/meminfo" MemAvailable...), or -1. */
long th_proc_kb(const char *file, const char *key);
/* splitmix64: a well-mixed 64-bit hash of x. */
uint64_t th_mix(uint64_t x);
/* Reserve a 1-d uint64 array of n elements tagged `tag`, fill it from the
 * tag, commit it. \return ndc_reserve's or ndc_commit's result. */
int th_send_u64(ndc_chan *ch, uint64_t tag, int64_t n, int64_t timeout);
/* 0 when a received 1-d uint64 array holds what th_send_u64 put there for
 * its tag, -1 otherwise. */
int th_check_u64(const struct ndc_array *a);
/* Monotonic clock in ns. */
int64_t th_now_ns(void);

/* cr_assert that an ndc_ call returned `want`, printing ndc_strerror. */
#define th_expect(call, want) do { int th_r_ = (call); \
    cr_assert_eq(th_r_, (want), "%s = %d (%s), want %d (%s); detail: %s", #call, th_r_, \
                 ndc_strerror(th_r_), (want), ndc_strerror(want), ndc_last_error()); } while (0)
#define th_ok(call) th_expect(call, 0)
#endif
