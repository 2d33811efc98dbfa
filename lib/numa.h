/* NUMA placement of a channel's payload pages (numa.c with hwloc, numa_stub.c
 * without). Called by the segment and channel code; the public calls
 * (ndc_numa_where, ndc_numa_pin_near, ndc_pin_cpu, ndc_suggest_cpus) live in
 * the same files.
 *
 * Node numbers everywhere here are the kernel's (OS) numbers, the ones
 * numactl and /sys/devices/system/node use, not hwloc's logical indices.
 *
 * The decisions (which nodes a policy means, which node is "near" a CPU,
 * which CPU pair shares the most) are pure functions of a topology, so they
 * are testable on a synthetic or XML topology loaded with ndc__topo_load; the
 * hooks below run them on this machine's topology. No hwloc type appears in
 * this header: the tests use it whether hwloc is present or not (without it,
 * every call returns -ENOTSUP). */
#ifndef NDC_NUMA_H
#define NDC_NUMA_H
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include "error.h"
#include "ndchan.h"

/* ---- hooks of the segment and channel code ------------------------------ */

/* Check o's numa_* fields before anything is created: 0, -EINVAL (unknown
 * policy, fields set for a policy that does not use them), -ENODEV (no such
 * node), -ENOTSUP (no hwloc, or the machine cannot honour the policy). */
int ndc__numa_check(const struct ndc_chan_opts *o);
/* The part of ndc__numa_check that needs no topology: a known policy, and
 * numa_node / numa_nodeset zero unless the policy uses them (the fields are
 * zero by default, so a nonzero one for a policy that ignores it is a
 * mistake worth reporting). Shared by numa.c and numa_stub.c. */
static inline int ndc__numa_check_fields(const struct ndc_chan_opts *o)
{
    if (!o)
        return 0;
    switch (o->numa_policy) {
    case NDC_NUMA_FIRST_TOUCH:
    case NDC_NUMA_NEAR_RECEIVER:
        if (o->numa_node || o->numa_nodeset)
            return ndc__fail(-EINVAL, "numa_node/numa_nodeset set, but numa_policy %s uses neither",
                             o->numa_policy ? "NEAR_RECEIVER" : "FIRST_TOUCH");
        return 0;
    case NDC_NUMA_BIND:
    case NDC_NUMA_PREFERRED:
        if (o->numa_nodeset)
            return ndc__fail(-EINVAL, "numa_nodeset is for NDC_NUMA_INTERLEAVE; BIND/PREFERRED take numa_node");
        if (o->numa_node < 0)
            return ndc__fail(-EINVAL, "numa_node %d is negative", (int)o->numa_node);
        return 0;
    case NDC_NUMA_INTERLEAVE:
        if (o->numa_node)
            return ndc__fail(-EINVAL, "numa_node is for BIND/PREFERRED; INTERLEAVE takes numa_nodeset");
        return 0;
    default:
        return ndc__fail(-EINVAL, "unknown numa_policy %u", (unsigned)o->numa_policy);
    }
}
/* Apply the policy to [addr, addr+len) before anything touches it. A no-op
 * for NDC_NUMA_FIRST_TOUCH and NDC_NUMA_NEAR_RECEIVER. The policy lands on
 * the shared memory object itself, so it governs the pages whichever process
 * touches them first. */
int ndc__numa_place(void *addr, size_t len, const struct ndc_chan_opts *o);
/* NDC_NUMA_NEAR_RECEIVER: bind [addr, addr+len) to the node the calling
 * thread runs on, migrating pages already touched (best effort: the kernel
 * moves a page another process has mapped only with CAP_SYS_NICE; a page
 * that stays is visible in ndc_numa_where). \return 0 or -errno. */
int ndc__numa_bind_here(void *addr, size_t len);

/* ---- pages of any mapping ----------------------------------------------- */

/* ndc_numa_where on any mapping of a shared memory object (readable, as
 * the payload is in every attachment): counts[i] = base pages of [addr, addr+len) resident on node i (i < max). Pages resident in
 * the object but not yet mapped by this process are faulted in for reading
 * first (never allocated: holes stay holes). \return highest node + 1 of the
 * machine, or -errno. */
int ndc__numa_where_area(const void *addr, size_t len, uint64_t *counts, int max);
/* The policy the kernel holds for the page at addr: *policy is an
 * enum ndc_numa_policy (NDC_NUMA_BIND also stands for PREFERRED, which the
 * kernel does not tell apart through hwloc), *nodes bit i = node i (0 when
 * first touch). \return 0 or -errno. */
int ndc__numa_area_policy(const void *addr, uint32_t *policy, uint64_t *nodes);

/* ---- decisions on a topology -------------------------------------------- */

struct ndc__topo;

/* Load a topology: desc NULL = this machine; text starting with '<' = hwloc
 * XML; anything else = an hwloc synthetic description ("pack:2 numa:2
 * core:2 pu:1"). \return 0, *out set; -EINVAL a description hwloc rejects;
 * -ENOTSUP without hwloc; -ENOMEM. */
int  ndc__topo_load(struct ndc__topo **out, const char *desc);
void ndc__topo_free(struct ndc__topo *t);   /* NULL is a no-op */
/* Number of NUMA nodes, and highest node number + 1 (they differ when the
 * numbering has holes). */
int  ndc__topo_nodes(const struct ndc__topo *t);
int  ndc__topo_node_span(const struct ndc__topo *t);

/* What ndc__numa_place does for a set of options, resolved on t. */
struct ndc__numa_plan {
    uint32_t policy;    /* enum ndc_numa_policy, as asked */
    int      strict;    /* 1: fail rather than spill to other nodes (BIND) */
    int      node;      /* BIND, PREFERRED: the node; else -1 */
    uint64_t nodes;     /* nodes the pages may use, bit i = node i (nodes >= 64
                           are not representable: all_nodes says "all") */
    int      all_nodes; /* INTERLEAVE with numa_nodeset 0: every node with memory */
    int      nnodes;    /* how many nodes the pages are spread over */
};
/* Validate o's numa_* fields against t and resolve them: 0 and *p set,
 * -EINVAL, -ENODEV (ndc_last_error() names the node). o NULL = defaults. */
int ndc__numa_plan(const struct ndc__topo *t, const struct ndc_chan_opts *o,
                   struct ndc__numa_plan *p);
/* The node NDC_NUMA_NEAR_RECEIVER picks for a receiver running on `cpu` (OS
 * number): among the nodes local to the CPU, the most local one (smallest
 * CPU set), then the one with most memory, then the lowest number.
 * \return the node, -EINVAL (no such CPU), -ENODEV (no node holds memory). */
int ndc__numa_node_near_cpu(const struct ndc__topo *t, int cpu);
/* The node ndc_numa_pin_near picks: the one holding most pages (lowest
 * number on a tie); when no page is touched, the lowest node of `bound`
 * (the policy's nodes, 0 = none). \return the node, or -ENODEV.
 * Pure arithmetic, shared by numa.c and numa_stub.c. */
static inline int ndc__numa_pick_node(const uint64_t *counts, int n, uint64_t bound)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (counts[i] && (best < 0 || counts[i] > counts[best]))
            best = i;
    if (best >= 0)
        return best;
    return bound ? __builtin_ctzll(bound) : -ENODEV;
}

/* A producer/consumer CPU pair (struct ndc_cpu_pair): two PUs of different
 * cores whose closest common cache or group is the deepest (an L2 shared by
 * a cluster beats an L3, which beats the package), on one node when
 * possible; CPU 0 is avoided when another pair shares as much (it takes
 * housekeeping interrupts). With a single core, two hardware threads of it. */
/* allowed: a CPU list ("0-3,8") restricting the choice, NULL = every CPU of t.
 * \return 0; -ENODEV fewer than two CPUs; -EINVAL a bad list. */
int ndc__suggest_pair(const struct ndc__topo *t, const char *allowed,
                      struct ndc_cpu_pair *out);

#endif
