/* Built when hwloc is absent: placement is not available. */
#include <errno.h>

#include "error.h"
#include "numa.h"

int ndc__numa_check(const struct ndc_chan_opts *o)
{
    if (o && o->numa_policy != NDC_NUMA_FIRST_TOUCH)
        return ndc__fail(-ENOTSUP, "NUMA placement needs hwloc: rebuild with -Dhwloc=enabled");
    return 0;
}
int ndc__numa_place(void *addr, size_t len, const struct ndc_chan_opts *o) { (void)addr; (void)len; (void)o; return 0; }
int ndc__numa_bind_here(void *addr, size_t len) { (void)addr; (void)len; return -ENOTSUP; }
int ndc_numa_where(const ndc_chan *ch, uint64_t *counts, int max) { (void)ch; (void)counts; (void)max; return -ENOTSUP; }
int ndc_numa_pin_near(const ndc_chan *ch) { (void)ch; return -ENOTSUP; }
int ndc_suggest_cpus(int *p, int *c) { (void)p; (void)c; return -ENOTSUP; }

#include <sched.h>
int ndc_pin_cpu(int cpu)
{
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return ndc__fail(-EINVAL, "cpu %d out of range", cpu);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) ? -errno : 0;
}
