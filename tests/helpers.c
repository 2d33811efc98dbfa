#include "helpers.h"

#include <signal.h>
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *th_unique_name(const char *what)
{
    static _Atomic unsigned counter;
    static __thread char buf[128];
    snprintf(buf, sizeof buf, "/ndctest.%s.%d.%u", what, (int)getpid(),
             atomic_fetch_add(&counter, 1));
    return buf;
}

pid_t th_fork(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fn(arg) & 0xff);
    return pid;
}

int th_wait(pid_t pid, int timeout_ms)
{
    int64_t deadline = th_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0)
            return -1;
        if (th_now_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(1000);
    }
}

/* splitmix64: cheap, and every byte depends on the seed and its position. */
uint64_t th_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void th_fill(void *p, size_t n, uint64_t seed)
{
    unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = th_mix(seed ^ i);
        memcpy(b + i, &v, 8);
    }
    uint64_t v = th_mix(seed ^ i);
    memcpy(b + i, &v, n - i);
}

int th_check(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = th_mix(seed ^ i);
        if (memcmp(b + i, &v, 8) != 0)
            return 0;
    }
    uint64_t v = th_mix(seed ^ i);
    return memcmp(b + i, &v, n - i) == 0;
}

int64_t th_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

ndc_chan *th_chan(uint32_t slots, uint64_t slot_bytes)
{
    struct ndc_chan_opts o = {.slots = slots, .slot_bytes = slot_bytes};
    ndc_chan *ch = NULL;
    th_ok(ndc_create(&ch, NULL, &o));
    cr_assert_not_null(ch);
    return ch;
}

long th_proc_kb(const char *file, const char *key)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

void *th_shared(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    memset(p, 0, n);
    return p;
}

struct ndc_stat th_stat(const ndc_chan *ch)
{
    struct ndc_stat st;
    memset(&st, 0, sizeof st);
    th_ok(ndc_stat(ch, &st));
    cr_assert_eq(st.free + st.ready + st.loaned, st.slots,
                 "free %u + ready %u + loaned %u != slots %u", st.free, st.ready, st.loaned, st.slots);
    return st;
}

static void fill_u64(struct ndc_array *a, uint64_t tag)
{
    uint64_t *d = a->data;
    for (int64_t i = 0; i < a->shape[0]; i++)
        d[i] = th_mix(tag * 1000003u + (uint64_t)i);
}

int th_check_u64(const struct ndc_array *a)
{
    const uint64_t *d = a->data;
    for (int64_t i = 0; i < a->shape[0]; i++)
        if (d[i] != th_mix(a->tag * 1000003u + (uint64_t)i))
            return -1;
    return 0;
}

int th_send_u64(ndc_chan *ch, uint64_t tag, int64_t n, int64_t timeout)
{
    struct ndc_array a;
    int64_t shape[1] = { n };
    ndc_array_init(&a, NDC_U64, 1, shape, NULL);
    a.tag = tag;
    int r = ndc_reserve(ch, &a, timeout);
    if (r)
        return r;
    fill_u64(&a, tag);
    return ndc_commit(ch, &a);
}
