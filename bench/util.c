/* Small helpers: time, pinning, buffers, futexes, full reads and writes,
 * and the payload sample every transport is verified on. */
#include "bench.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int pin_cpu(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) ? -errno : 0;
}

void *map_shared(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Private buffers are touched up front so that no transport pays its page
 * faults inside a timed loop (ndchan slots are warmed by the warm-up). */
void *alloc_buf(size_t len)
{
    if (len == 0)
        len = 1;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 0x5a, len);
    return p;
}

void free_buf(void *p, size_t len)
{
    if (p)
        munmap(p, len ? len : 1);
}

int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EPIPE;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

double cpu_seconds_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/* Shared (not private) futexes: the two sides are different processes. */
long futex_wait(_Atomic uint32_t *w, uint32_t val, int64_t timeout_ns)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tp = &ts;
    }
    return syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, val, tp, NULL, 0);
}

long futex_wake(_Atomic uint32_t *w, int n)
{
    return syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, n, NULL, NULL, 0);
}

const char *fmt_size(uint64_t b, char *buf)
{
    if (b >= GiB && b % GiB == 0)
        sprintf(buf, "%llu GiB", (unsigned long long)(b / GiB));
    else if (b >= MiB && b % MiB == 0)
        sprintf(buf, "%llu MiB", (unsigned long long)(b / MiB));
    else if (b >= KiB && b % KiB == 0)
        sprintf(buf, "%llu KiB", (unsigned long long)(b / KiB));
    else
        sprintf(buf, "%llu B", (unsigned long long)b);
    return buf;
}

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank on sorted data. */
double percentile(const double *s, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)(q * (double)n);
    if (k >= n)
        k = n - 1;
    return s[k];
}

/* ---- the sample ---------------------------------------------------------
 * Word i of the sample sits at element i*(nelem-1)/(K-1) of the float64
 * array, so the first and last elements and pages all over the array are
 * checked. Its value is a fixed pseudo-random word xor the message number:
 * a stale array (an earlier message) or a torn one (parts of two) fails.
 * bench/python/mp_bench.py stamps the same words. */
static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Positions and base values are worked out once per array size, so a
 * stamp or a check costs a few dozen loads and stores, not divisions. */
static struct {
    size_t   n, k;
    size_t   pos[SAMPLE_WORDS];
    uint64_t base[SAMPLE_WORDS];
} S;

static void sample_setup(size_t n)
{
    if (S.n == n && n)
        return;
    size_t nelem = n / 8;
    S.k = nelem < SAMPLE_WORDS ? nelem : SAMPLE_WORDS;
    for (size_t i = 0; i < S.k; i++) {
        S.pos[i] = 8 * (S.k <= 1 ? 0 : i * (nelem - 1) / (S.k - 1));
        S.base[i] = splitmix64(i);
    }
    S.n = n;
}

uint64_t sample_value(uint64_t seq, unsigned i)
{
    return splitmix64(i) ^ seq;
}

void sample_stamp(void *p, size_t n, uint64_t seq)
{
    sample_setup(n);
    for (size_t i = 0; i < S.k; i++) {
        uint64_t v = S.base[i] ^ seq;
        memcpy((char *)p + S.pos[i], &v, 8);
    }
}

int sample_verify(const void *p, size_t n, uint64_t seq, char *err)
{
    sample_setup(n);
    /* Compare all the words, then look: the loads are independent, so the
     * cache misses of a large array overlap instead of queueing. */
    uint64_t diff = 0;
    for (size_t i = 0; i < S.k; i++) {
        uint64_t v;
        memcpy(&v, (const char *)p + S.pos[i], 8);
        diff |= v ^ S.base[i] ^ seq;
    }
    if (!diff)
        return 0;
    for (size_t i = 0; i < S.k; i++) {
        uint64_t v;
        memcpy(&v, (const char *)p + S.pos[i], 8);
        if (v != (S.base[i] ^ seq)) {
            if (err)
                snprintf(err, ERR_LEN, "payload check failed: message %llu of %zu bytes, word %zu "
                         "(byte %zu) is %016llx, expected %016llx",
                         (unsigned long long)(seq & 0x3fffffffffffffffull), n, i, S.pos[i],
                         (unsigned long long)v, (unsigned long long)(S.base[i] ^ seq));
            break;
        }
    }
    return -EBADMSG;
}
