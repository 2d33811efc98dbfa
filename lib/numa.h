/* NUMA placement of a channel's payload pages (numa.c with hwloc, numa_stub.c
 * without). Called by the segment and channel code; the public calls
 * (ndc_numa_where, ndc_numa_pin_near, ndc_pin_cpu, ndc_suggest_cpus) live in
 * the same files. */
#ifndef NDC_NUMA_H
#define NDC_NUMA_H
#include <stddef.h>
#include "ndchan.h"

/* Check o's numa_* fields before anything is created: 0, -EINVAL (unknown
 * policy, fields set for a policy that does not use them), -ENODEV (no such
 * node), -ENOTSUP (no hwloc, or the machine cannot honour the policy). */
int ndc__numa_check(const struct ndc_chan_opts *o);
/* Apply the policy to [addr, addr+len) before anything touches it. A no-op
 * for NDC_NUMA_FIRST_TOUCH and NDC_NUMA_NEAR_RECEIVER. */
int ndc__numa_place(void *addr, size_t len, const struct ndc_chan_opts *o);
/* NDC_NUMA_NEAR_RECEIVER: bind [addr, addr+len) to the node the calling
 * thread runs on, migrating pages already touched. */
int ndc__numa_bind_here(void *addr, size_t len);

#endif
