/* Hardware cache-miss counters around a loop, through perf_event_open(2)
 * itself (no library): each worker counts its own process, user space
 * only, which kernel.perf_event_paranoid <= 2 allows without privileges.
 *
 * Many virtual machines expose no PMU, and containers often refuse the
 * call: then nothing is counted, the reason is said once, and the run goes
 * on. A counter the PMU had to share is scaled by enabled / running time. */
#include "bench.h"

#include <errno.h>
#include <glob.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

const char *const pmc_names[NPMC] = { "cache-misses", "L1-dcache-load-misses" };

static void pmc_attr(int i, struct perf_event_attr *a)
{
    memset(a, 0, sizeof *a);
    a->size = sizeof *a;
    if (i == PMC_MISSES) {
        a->type = PERF_TYPE_HARDWARE;
        a->config = PERF_COUNT_HW_CACHE_MISSES;
    } else {
        a->type = PERF_TYPE_HW_CACHE;
        a->config = PERF_COUNT_HW_CACHE_L1D | (PERF_COUNT_HW_CACHE_OP_READ << 8) |
                    (PERF_COUNT_HW_CACHE_RESULT_MISS << 16);
    }
    a->disabled = 1;
    a->exclude_kernel = 1;
    a->exclude_hv = 1;
    a->read_format = PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING;
}

static int open_one(int i)
{
    struct perf_event_attr a;
    pmc_attr(i, &a);
    long fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    return fd < 0 ? -errno : (int)fd;
}

void pmc_open(struct pmc *p, int err[NPMC])
{
    for (int i = 0; i < NPMC; i++) {
        int fd = open_one(i);
        p->fd[i] = fd < 0 ? -1 : fd;
        err[i] = fd < 0 ? -fd : 0;
    }
}

void pmc_enable(struct pmc *p)
{
    for (int i = 0; i < NPMC; i++)
        if (p->fd[i] >= 0)
            ioctl(p->fd[i], PERF_EVENT_IOC_ENABLE, 0);
}

void pmc_disable(struct pmc *p)
{
    for (int i = 0; i < NPMC; i++)
        if (p->fd[i] >= 0)
            ioctl(p->fd[i], PERF_EVENT_IOC_DISABLE, 0);
}

void pmc_read(struct pmc *p, double out[NPMC])
{
    for (int i = 0; i < NPMC; i++) {
        uint64_t v[3];   /* value, time enabled, time running */
        out[i] = -1;
        if (p->fd[i] < 0 || read(p->fd[i], v, sizeof v) != (ssize_t)sizeof v || !v[2])
            continue;
        out[i] = v[2] < v[1] ? (double)v[0] * ((double)v[1] / (double)v[2]) : (double)v[0];
    }
}

void pmc_close(struct pmc *p)
{
    for (int i = 0; i < NPMC; i++) {
        if (p->fd[i] >= 0)
            close(p->fd[i]);
        p->fd[i] = -1;
    }
}

static int paranoid(void)
{
    FILE *f = fopen("/proc/sys/kernel/perf_event_paranoid", "r");
    int v = 99;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = 99;
        fclose(f);
    }
    return v;
}

static int has_cpu_pmu(void)
{
    glob_t g;
    int n = glob("/sys/bus/event_source/devices/cpu*", GLOB_NOSORT, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
    if (n)
        globfree(&g);
    return n > 0;
}

const char *pmc_why(int i, int err, char *buf, size_t len)
{
    int par = paranoid();
    char ps[48] = "unreadable";
    if (par != 99)
        snprintf(ps, sizeof ps, "%d", par);
    const char *what = strerror(err);
    switch (err) {
    case ENOENT:
    case EOPNOTSUPP:
    case ENODEV:
        if (!has_cpu_pmu())
            snprintf(buf, len, "perf_event_open(%s): %s: the kernel shows no CPU PMU "
                     "(nothing like /sys/bus/event_source/devices/cpu), usual in a virtual machine "
                     "without a virtual PMU (kernel.perf_event_paranoid is %s)", pmc_names[i], what, ps);
        else
            snprintf(buf, len, "perf_event_open(%s): %s: the CPU's PMU has no such event here "
                     "(kernel.perf_event_paranoid is %s)", pmc_names[i], what, ps);
        break;
    case EACCES:
    case EPERM:
        snprintf(buf, len, "perf_event_open(%s): %s: kernel.perf_event_paranoid is %s (counting one's "
                 "own process in user space needs <= 2, or CAP_PERFMON), or a seccomp filter "
                 "(containers) refuses the call", pmc_names[i], what, ps);
        break;
    case ENOSYS:
        snprintf(buf, len, "perf_event_open(%s): %s: a kernel without perf events, or a seccomp filter",
                 pmc_names[i], what);
        break;
    default:
        snprintf(buf, len, "perf_event_open(%s): %s (kernel.perf_event_paranoid %s)", pmc_names[i], what, ps);
        break;
    }
    return buf;
}

int pmc_probe(char *why, size_t len)
{
    struct pmc p;
    int err[NPMC], ok = 0;
    pmc_open(&p, err);
    pmc_close(&p);
    why[0] = 0;
    for (int i = 0; i < NPMC; i++) {
        if (!err[i])
            ok = 1;
        else if (!why[0])
            pmc_why(i, err[i], why, len);
    }
    return ok ? 0 : -err[0];
}
