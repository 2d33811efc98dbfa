/* The machine as ndchan-topo prints it, read with hwloc (topo_stub.c when
 * the build has no hwloc). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hwloc.h>

#include "topo.h"

static void cpulist(char *buf, size_t n, hwloc_const_cpuset_t set)
{
    int len = hwloc_bitmap_list_snprintf(buf, n, set);
    if (len >= (int)n && n > 4)
        memcpy(buf + n - 4, "...", 4);
}

struct desc_build {
    hwloc_topology_t h;
    struct topo_desc *d;
    size_t cap;
    int list_cores;
};

static struct topo_item *desc_add(struct desc_build *b, int kind, int depth,
                                       hwloc_obj_t o)
{
    struct topo_desc *d = b->d;
    if (d->nitems == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        struct topo_item *it = realloc(d->items, cap * sizeof *it);
        if (!it)
            return NULL;
        d->items = it;
        b->cap = cap;
    }
    struct topo_item *it = &d->items[d->nitems++];
    memset(it, 0, sizeof *it);
    it->kind = kind;
    it->depth = depth;
    it->os_index = (kind == TOPO_PACKAGE || kind == TOPO_NODE || kind == TOPO_CORE) &&
                   o->os_index != HWLOC_UNKNOWN_INDEX ? (int)o->os_index : -1;
    it->ncores = hwloc_get_nbobjs_inside_cpuset_by_type(b->h, o->cpuset, HWLOC_OBJ_CORE);
    it->npus = hwloc_get_nbobjs_inside_cpuset_by_type(b->h, o->cpuset, HWLOC_OBJ_PU);
    cpulist(it->cpus, sizeof it->cpus, o->cpuset);
    return it;
}

static int desc_walk(struct desc_build *b, hwloc_obj_t o, int depth)
{
    int kind = -1;
    switch (o->type) {
    case HWLOC_OBJ_MACHINE: kind = TOPO_MACHINE; break;
    case HWLOC_OBJ_PACKAGE: kind = TOPO_PACKAGE; break;
    case HWLOC_OBJ_DIE:
    case HWLOC_OBJ_GROUP:   kind = TOPO_GROUP; break;
    case HWLOC_OBJ_CORE:    kind = b->list_cores ? TOPO_CORE : -1; break;
    case HWLOC_OBJ_L2CACHE: case HWLOC_OBJ_L3CACHE: case HWLOC_OBJ_L4CACHE:
    case HWLOC_OBJ_L5CACHE: case HWLOC_OBJ_L1CACHE:
        /* a cache of one core says nothing about where to put two processes */
        if (hwloc_get_nbobjs_inside_cpuset_by_type(b->h, o->cpuset, HWLOC_OBJ_CORE) > 1)
            kind = TOPO_CACHE;
        break;
    default: break;
    }
    int child_depth = depth;
    if (kind >= 0) {
        struct topo_item *it = desc_add(b, kind, depth, o);
        if (!it)
            return -ENOMEM;
        if (kind == TOPO_CACHE) {
            it->level = (int)o->attr->cache.depth;
            it->bytes = o->attr->cache.size;
        }
        child_depth = depth + 1;
    }
    /* memory first: a node reads best right under what it is local to */
    for (hwloc_obj_t m = o->memory_first_child; m; m = m->next_sibling) {
        if (m->type != HWLOC_OBJ_NUMANODE)
            continue;
        struct topo_item *it = desc_add(b, TOPO_NODE, child_depth, m);
        if (!it)
            return -ENOMEM;
        it->bytes = m->attr->numanode.local_memory;
    }
    if (o->type == HWLOC_OBJ_CORE)
        return 0;
    for (hwloc_obj_t c = o->first_child; c; c = c->next_sibling) {
        int r = desc_walk(b, c, child_depth);
        if (r)
            return r;
    }
    return 0;
}

static int desc_distances(hwloc_topology_t h, struct topo_desc *d)
{
    struct hwloc_distances_s *dist[1];
    unsigned nr = 1;
    if (hwloc_distances_get_by_type(h, HWLOC_OBJ_NUMANODE, &nr, dist,
                                    HWLOC_DISTANCES_KIND_MEANS_LATENCY, 0) < 0 || nr == 0)
        return 0;
    int n = (int)dist[0]->nbobjs, r = 0;
    d->dist_node = calloc((size_t)n, sizeof *d->dist_node);
    d->dist = calloc((size_t)n * (size_t)n, sizeof *d->dist);
    if (!d->dist_node || !d->dist) {
        r = -ENOMEM;
    } else {
        for (int i = 0; i < n; i++)
            d->dist_node[i] = (int)dist[0]->objs[i]->os_index;
        for (int i = 0; i < n * n; i++)
            d->dist[i] = dist[0]->values[i];
        d->ndist = n;
    }
    hwloc_distances_release(h, dist[0]);
    return r;
}

void topo_desc_free(struct topo_desc *d)
{
    if (!d)
        return;
    free(d->items);
    free(d->dist_node);
    free(d->dist);
    free(d);
}

/* hwloc's topology from a description, as the library loads one. */
static int load(hwloc_topology_t *out, const char *desc)
{
    hwloc_topology_t h;
    if (hwloc_topology_init(&h) < 0)
        return -ENOMEM;
    int r = 0;
    if (desc && desc[0] == '<')
        r = hwloc_topology_set_xmlbuffer(h, desc, (int)strlen(desc) + 1);
    else if (desc)
        r = hwloc_topology_set_synthetic(h, desc);
    if (r < 0) {
        hwloc_topology_destroy(h);
        return -EINVAL;
    }
    if (hwloc_topology_load(h) < 0) {
        int e = errno ? errno : EINVAL;
        hwloc_topology_destroy(h);
        return -e;
    }
    *out = h;
    return 0;
}

int topo_describe(const char *topology, struct topo_desc **out)
{
    hwloc_topology_t h;
    int r = load(&h, topology);
    if (r)
        return r;
    struct topo_desc *d = calloc(1, sizeof *d);
    if (!d) {
        hwloc_topology_destroy(h);
        return -ENOMEM;
    }
    snprintf(d->version, sizeof d->version, "%s", HWLOC_VERSION);
    d->packages = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_PACKAGE);
    d->nodes = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_NUMANODE);
    d->cores = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_CORE);
    d->pus = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_PU);
    for (hwloc_obj_t n = NULL; (n = hwloc_get_next_obj_by_type(h, HWLOC_OBJ_NUMANODE, n)); )
        d->memory += n->attr->numanode.local_memory;
    struct desc_build b = { .h = h, .d = d, .list_cores = d->cores <= 64 };
    r = desc_walk(&b, hwloc_get_root_obj(h), 0);
    if (!r)
        r = desc_distances(h, d);
    hwloc_topology_destroy(h);
    if (r) {
        topo_desc_free(d);
        return r;
    }
    *out = d;
    return 0;
}

