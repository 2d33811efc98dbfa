/* Built when hwloc is absent: placement is not available. Options are still
 * validated (a typo is -EINVAL here as with hwloc); every policy but first
 * touch is -ENOTSUP, and so is every question about the topology. Pinning to
 * a given CPU needs no hwloc (cpu.c). */
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "chan.h"
#include "error.h"
#include "numa.h"

#define NO_HWLOC "NUMA placement needs hwloc: rebuild with -Dhwloc=enabled"

int ndc__numa_check(const struct ndc_chan_opts *o)
{
    int r = ndc__numa_check_fields(o);
    if (r)
        return r;
    if (o && o->numa_policy != NDC_NUMA_FIRST_TOUCH)
        return ndc__fail(-ENOTSUP, NO_HWLOC);
    return 0;
}

int ndc__numa_place(void *addr, size_t len, const struct ndc_chan_opts *o)
{
    (void)addr; (void)len;
    return ndc__numa_check(o);
}

int ndc__numa_bind_here(void *addr, size_t len)
{
    (void)addr; (void)len;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc__numa_where_area(const void *addr, size_t len, uint64_t *counts, int max)
{
    (void)addr; (void)len; (void)counts; (void)max;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc__numa_area_policy(const void *addr, uint32_t *policy, uint64_t *nodes)
{
    (void)addr; (void)policy; (void)nodes;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc__topo_load(struct ndc__topo **out, const char *desc)
{
    (void)out; (void)desc;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}
void ndc__topo_free(struct ndc__topo *t) { (void)t; }
int ndc__topo_nodes(const struct ndc__topo *t) { (void)t; return 0; }
int ndc__topo_node_span(const struct ndc__topo *t) { (void)t; return 0; }

int ndc__numa_plan(const struct ndc__topo *t, const struct ndc_chan_opts *o,
                   struct ndc__numa_plan *p)
{
    (void)t; (void)o; (void)p;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc__numa_node_near_cpu(const struct ndc__topo *t, int cpu)
{
    (void)t; (void)cpu;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc__suggest_pair(const struct ndc__topo *t, const char *allowed,
                      struct ndc_cpu_pair *out)
{
    (void)t; (void)allowed; (void)out;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc_topo_suggest(const char *topology, const char *allowed, struct ndc_cpu_pair *out)
{
    (void)topology; (void)allowed; (void)out;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc_numa_policy(const ndc_chan *ch, uint32_t *policy, uint64_t *nodes)
{
    (void)ch; (void)policy; (void)nodes;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc_numa_where(const ndc_chan *ch, uint64_t *counts, int max)
{
    (void)ch; (void)counts; (void)max;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc_numa_pin_near(const ndc_chan *ch)
{
    (void)ch;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

int ndc_suggest_cpus(int *producer_cpu, int *consumer_cpu)
{
    (void)producer_cpu; (void)consumer_cpu;
    return ndc__fail(-ENOTSUP, NO_HWLOC);
}

