/* What ndchan-topo shows of a machine: its tree of packages, groups, NUMA
 * nodes, shared caches and cores, and the node distances. Read with hwloc
 * (topo_hwloc.c); without hwloc (topo_stub.c) every call is -ENOTSUP. */
#ifndef NDC_TOOLS_TOPO_H
#define NDC_TOOLS_TOPO_H
#include <stddef.h>
#include <stdint.h>

enum topo_kind { TOPO_MACHINE, TOPO_PACKAGE, TOPO_GROUP, TOPO_NODE, TOPO_CACHE, TOPO_CORE };
struct topo_item {
    int      kind;        /* enum topo_kind */
    int      depth;       /* nesting in the tree, machine = 0 */
    int      os_index;    /* package, node, core: the OS number; else -1 */
    int      level;       /* cache level; 0 otherwise */
    uint64_t bytes;       /* node: local memory; cache: size */
    int      ncores;      /* cores below (or, for a node, local to it) */
    int      npus;        /* hardware threads below / local */
    char     cpus[128];   /* CPU list ("0-7,16-23"), truncated with "..." */
};
struct topo_desc {
    char     version[16];        /* hwloc's, "2.9.0" */
    int      packages, nodes, cores, pus;
    uint64_t memory;             /* total over the nodes */
    size_t   nitems;
    struct topo_item *items;     /* depth-first: each item before its children */
    int      ndist;              /* nodes in dist, 0 when the machine gives none */
    int     *dist_node;          /* OS number of row/column i */
    uint64_t *dist;              /* ndist x ndist relative latencies (10 = local) */
};
/* topology: as ndc_topo_suggest takes it (NULL = this machine, '<' = XML,
 * else synthetic). \return 0, *out set (free with topo_desc_free); -EINVAL a
 * description hwloc rejects; -ENOTSUP without hwloc; -ENOMEM. Caches shared
 * by a single core are left out (they say nothing about placement), cores
 * appear only when few enough to read (<= 64). */
int  topo_describe(const char *topology, struct topo_desc **out);
void topo_desc_free(struct topo_desc *d);   /* NULL is a no-op */

#endif
