/* NUMA placement with hwloc.
 *
 * Where the policy lives. The payload is a MAP_SHARED mapping of a memfd or
 * shm object (shmem). mbind() on such a range does not set a policy of this
 * process's mapping only: shmem keeps a *shared* policy per file range, so a
 * page is allocated on the policy's nodes whichever process faults it in
 * first. That is why placing the region once, in the creator, before the
 * first touch (and before NDC_POPULATE), is enough for every attachment.
 *
 * What the kernel will not do. Pages that exist before a policy is set stay
 * where they are unless migrated, and mbind(MPOL_MF_MOVE) moves only pages
 * mapped in the caller's page tables and by nobody else; pages another
 * process maps move only with MPOL_MF_MOVE_ALL, which needs CAP_SYS_NICE.
 * NEAR_RECEIVER therefore binds first (every later page lands right) and
 * migrates what it can; ndc_numa_where reports the truth either way.
 *
 * Reading where pages are. move_pages(2) in query mode, like
 * hwloc_get_area_memlocation, sees only pages mapped in this process. A
 * reporter (ndchan-topo --channel) maps nothing yet, so it asks mincore(2)
 * which pages the object holds (mincore on a shared file mapping reports the
 * page cache, not our page tables), reads one byte of each such page to map
 * it, and only then queries: holes are never read, so nothing is allocated.
 *
 * Topology. This machine's topology is loaded once per process (hwloc
 * topologies are safe for concurrent reads once loaded). The decisions take
 * any topology, so the tests feed them synthetic 2-socket, 4-node machines.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mempolicy.h>

#include <hwloc.h>

#include "chan.h"
#include "error.h"
#include "numa.h"

struct ndc__topo {
    hwloc_topology_t h;
};

/* ---- topologies ---------------------------------------------------------- */

int ndc__topo_load(struct ndc__topo **out, const char *desc)
{
    struct ndc__topo *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    if (hwloc_topology_init(&t->h) < 0) {
        free(t);
        return ndc__fail(-ENOMEM, "hwloc_topology_init failed");
    }
    int r = 0;
    if (desc && desc[0] == '<')
        r = hwloc_topology_set_xmlbuffer(t->h, desc, (int)strlen(desc) + 1);
    else if (desc)
        r = hwloc_topology_set_synthetic(t->h, desc);
    if (r < 0) {
        hwloc_topology_destroy(t->h);
        free(t);
        return ndc__fail(-EINVAL, "hwloc rejects the topology description \"%.40s\"", desc);
    }
    if (hwloc_topology_load(t->h) < 0) {
        int e = errno ? errno : EINVAL;
        hwloc_topology_destroy(t->h);
        free(t);
        return ndc__fail(-e, "hwloc_topology_load: %s", strerror(e));
    }
    *out = t;
    return 0;
}

void ndc__topo_free(struct ndc__topo *t)
{
    if (!t)
        return;
    hwloc_topology_destroy(t->h);
    free(t);
}

int ndc__topo_nodes(const struct ndc__topo *t)
{
    return hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_NUMANODE);
}

int ndc__topo_node_span(const struct ndc__topo *t)
{
    int last = hwloc_bitmap_last(hwloc_topology_get_topology_nodeset(t->h));
    return last < 0 ? 0 : last + 1;
}

/* This machine, loaded on first use. */
static pthread_once_t machine_once = PTHREAD_ONCE_INIT;
static struct ndc__topo *machine;
static int machine_err;

static void machine_load(void)
{
    machine_err = ndc__topo_load(&machine, NULL);
}

static int machine_get(const struct ndc__topo **t)
{
    pthread_once(&machine_once, machine_load);
    if (machine_err)
        return ndc__fail(machine_err, "cannot load this machine's topology with hwloc");
    *t = machine;
    return 0;
}

/* Does the kernel let us bind memory at all? Seccomp profiles of container
 * runtimes refuse mbind without CAP_SYS_NICE, and a kernel without
 * CONFIG_NUMA has no mbind: asked once, on one page, so that a policy the
 * machine cannot honour fails ndc_create instead of being ignored. */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int probe_err;
static char probe_why[160];

static void membind_probe(void)
{
    const struct ndc__topo *t = machine;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        probe_err = -errno;
        snprintf(probe_why, sizeof probe_why, "mmap of a probe page: %s", strerror(errno));
        return;
    }
    hwloc_obj_t n = hwloc_get_obj_by_type(t->h, HWLOC_OBJ_NUMANODE, 0);
    if (n && hwloc_set_area_membind(t->h, p, pg, n->nodeset, HWLOC_MEMBIND_BIND,
                                    HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_STRICT) < 0) {
        int e = errno;
        probe_err = (e == ENOSYS || e == EPERM || e == EACCES) ? -ENOTSUP : -e;
        snprintf(probe_why, sizeof probe_why,
                 "the kernel refuses mbind (%s): no CONFIG_NUMA, or a seccomp profile "
                 "without CAP_SYS_NICE", strerror(e));
    }
    munmap(p, pg);
}

static int membind_works(void)
{
    pthread_once(&probe_once, membind_probe);
    return probe_err ? ndc__fail(probe_err, "%s", probe_why) : 0;
}

/* ---- decisions ----------------------------------------------------------- */

/* A node pages can go to: present (the topology is restricted to what this
 * process may use) and, when hwloc knows memory sizes, holding memory. */
static int node_usable(const struct ndc__topo *t, int node)
{
    hwloc_obj_t n = hwloc_get_numanode_obj_by_os_index(t->h, (unsigned)node);
    if (!n)
        return ndc__fail(-ENODEV, "NUMA node %d does not exist or is not allowed here "
                         "(nodes: %d, highest %d)", node, ndc__topo_nodes(t),
                         ndc__topo_node_span(t) - 1);
    const struct hwloc_topology_support *s = hwloc_topology_get_support(t->h);
    if (s->discovery->numa_memory && n->attr->numanode.local_memory == 0)
        return ndc__fail(-ENODEV, "NUMA node %d has no memory", node);
    return 0;
}

static uint64_t nodeset_low64(hwloc_const_nodeset_t set)
{
    uint64_t m = 0;
    unsigned i;
    hwloc_bitmap_foreach_begin(i, set) {
        if (i < 64)
            m |= 1ull << i;
    } hwloc_bitmap_foreach_end();
    return m;
}

int ndc__numa_plan(const struct ndc__topo *t, const struct ndc_chan_opts *o,
                   struct ndc__numa_plan *p)
{
    int r = ndc__numa_check_fields(o);
    if (r)
        return r;
    struct ndc__numa_plan q = { .policy = o ? o->numa_policy : NDC_NUMA_FIRST_TOUCH,
                                .node = -1 };
    hwloc_const_nodeset_t all = hwloc_topology_get_topology_nodeset(t->h);
    switch (q.policy) {
    case NDC_NUMA_BIND:
    case NDC_NUMA_PREFERRED:
        if ((r = node_usable(t, o->numa_node)))
            return r;
        q.node = o->numa_node;
        q.nodes = q.node < 64 ? 1ull << q.node : 0;
        q.nnodes = 1;
        q.strict = q.policy == NDC_NUMA_BIND;
        break;
    case NDC_NUMA_INTERLEAVE:
        if (o->numa_nodeset) {
            for (uint64_t m = o->numa_nodeset; m; m &= m - 1)
                if ((r = node_usable(t, __builtin_ctzll(m))))
                    return r;
            q.nodes = o->numa_nodeset;
            q.nnodes = __builtin_popcountll(q.nodes);
            break;
        }
        /* every node with memory: a node without (CPU-only) would refuse pages */
        for (hwloc_obj_t n = NULL; (n = hwloc_get_next_obj_by_type(t->h, HWLOC_OBJ_NUMANODE, n)); )
            if (node_usable(t, (int)n->os_index) == 0) {
                q.nnodes++;
                if (n->os_index < 64)
                    q.nodes |= 1ull << n->os_index;
            }
        if (!q.nnodes)
            return ndc__fail(-ENODEV, "no NUMA node with memory to interleave over");
        q.all_nodes = 1;
        break;
    default: /* FIRST_TOUCH, NEAR_RECEIVER: any node, decided later */
        q.nodes = nodeset_low64(all);
        q.nnodes = hwloc_bitmap_weight(all);
        q.all_nodes = 1;
        break;
    }
    *p = q;
    return 0;
}

int ndc__numa_node_near_cpu(const struct ndc__topo *t, int cpu)
{
    if (cpu < 0 || !hwloc_get_pu_obj_by_os_index(t->h, (unsigned)cpu))
        return ndc__fail(-EINVAL, "CPU %d is not in the topology", cpu);
    const struct hwloc_topology_support *s = hwloc_topology_get_support(t->h);
    hwloc_obj_t best = NULL;
    int best_w = 0;
    for (hwloc_obj_t n = NULL; (n = hwloc_get_next_obj_by_type(t->h, HWLOC_OBJ_NUMANODE, n)); ) {
        if (!hwloc_bitmap_isset(n->cpuset, (unsigned)cpu))
            continue;
        if (s->discovery->numa_memory && n->attr->numanode.local_memory == 0)
            continue;
        /* Smallest CPU set = most local (a sub-NUMA cluster beats the
         * package's node); then most memory, so on a machine with HBM or
         * CXL memory beside DRAM the receiver gets the ordinary DRAM node;
         * nodes come in OS order, so ties keep the lowest number. */
        int w = hwloc_bitmap_weight(n->cpuset);
        if (!best || w < best_w ||
            (w == best_w && n->attr->numanode.local_memory > best->attr->numanode.local_memory)) {
            best = n;
            best_w = w;
        }
    }
    if (!best)
        return ndc__fail(-ENODEV, "no NUMA node with memory is local to CPU %d", cpu);
    return (int)best->os_index;
}

/* How closely two cores share: depth of their deepest common ancestor. */
static const char *shared_name(hwloc_obj_t a, char *buf, size_t n)
{
    if (hwloc_obj_type_is_cache(a->type))
        snprintf(buf, n, "L%u", a->attr->cache.depth);
    else if (a->type == HWLOC_OBJ_PACKAGE)
        snprintf(buf, n, "package");
    else if (a->type == HWLOC_OBJ_MACHINE)
        snprintf(buf, n, "machine");
    else if (a->type == HWLOC_OBJ_DIE)
        snprintf(buf, n, "die");
    else if (a->type == HWLOC_OBJ_CORE)
        snprintf(buf, n, "core");
    else
        snprintf(buf, n, "%s", hwloc_obj_type_string(a->type));
    return buf;
}

static int suggest_in(const struct ndc__topo *t, hwloc_const_cpuset_t allowed,
                      struct ndc_cpu_pair *out)
{
    hwloc_obj_type_t unit = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_CORE) > 0
                                ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
    int ncores = hwloc_get_nbobjs_by_type(t->h, unit);
    hwloc_obj_t *core = calloc((size_t)ncores + 1, sizeof *core);
    int *pu = calloc((size_t)ncores + 1, sizeof *pu);
    int *node = calloc((size_t)ncores + 1, sizeof *node);
    int n = 0, r = 0;
    if (!core || !pu || !node) {
        r = -ENOMEM;
        goto out;
    }
    hwloc_bitmap_t tmp = hwloc_bitmap_alloc();
    if (!tmp) {
        r = -ENOMEM;
        goto out;
    }
    /* one candidate PU per core: its first allowed hardware thread */
    for (hwloc_obj_t c = NULL; (c = hwloc_get_next_obj_by_type(t->h, unit, c)); ) {
        hwloc_bitmap_and(tmp, c->cpuset, allowed);
        int first = hwloc_bitmap_first(tmp);
        if (first < 0)
            continue;
        core[n] = c;
        pu[n] = first;
        node[n] = ndc__numa_node_near_cpu(t, first);
        n++;
    }
    if (n == 1) {
        /* one core: two of its hardware threads, if it has them */
        hwloc_bitmap_and(tmp, core[0]->cpuset, allowed);
        int second = hwloc_bitmap_next(tmp, pu[0]);
        hwloc_bitmap_free(tmp);
        if (second < 0) {
            r = ndc__fail(-ENODEV, "only one CPU (%d) is available: nothing to pair", pu[0]);
            goto out;
        }
        out->producer = pu[0];
        out->consumer = second;
        out->node = node[0] >= 0 ? node[0] : -1;
        snprintf(out->shared, sizeof out->shared, "core");
        goto out;
    }
    hwloc_bitmap_free(tmp);
    if (n == 0) {
        r = ndc__fail(-ENODEV, "no CPU available");
        goto out;
    }
    /* best (depth, same node, avoids CPU 0); ties keep the first pair found,
     * the lowest-numbered cores */
    int bi = -1, bj = -1, bdepth = -1, bsame = 0, bno0 = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            hwloc_obj_t a = hwloc_get_common_ancestor_obj(t->h, core[i], core[j]);
            int depth = a->depth;
            int same = node[i] >= 0 && node[i] == node[j];
            int no0 = pu[i] != 0 && pu[j] != 0;
            if (depth > bdepth ||
                (depth == bdepth && (same > bsame || (same == bsame && no0 > bno0)))) {
                bi = i, bj = j, bdepth = depth, bsame = same, bno0 = no0;
            }
        }
    hwloc_obj_t a = hwloc_get_common_ancestor_obj(t->h, core[bi], core[bj]);
    out->producer = pu[bi];
    out->consumer = pu[bj];
    out->node = bsame ? node[bi] : -1;
    shared_name(a, out->shared, sizeof out->shared);
out:
    free(core);
    free(pu);
    free(node);
    return r;
}

int ndc__suggest_pair(const struct ndc__topo *t, const char *allowed,
                      struct ndc_cpu_pair *out)
{
    hwloc_bitmap_t set = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(t->h));
    if (!set)
        return -ENOMEM;
    if (allowed) {
        hwloc_bitmap_t want = hwloc_bitmap_alloc();
        if (!want || hwloc_bitmap_list_sscanf(want, allowed) < 0) {
            hwloc_bitmap_free(want);
            hwloc_bitmap_free(set);
            return ndc__fail(-EINVAL, "bad CPU list \"%.40s\"", allowed);
        }
        hwloc_bitmap_and(set, set, want);
        hwloc_bitmap_free(want);
    }
    struct ndc_cpu_pair p;
    int r = suggest_in(t, set, &p);
    hwloc_bitmap_free(set);
    if (r == 0)
        *out = p;
    return r;
}

/* ---- public calls on a topology ----------------------------------------- */

int ndc_topo_suggest(const char *topology, const char *allowed, struct ndc_cpu_pair *out)
{
    if (!out)
        return ndc__fail(-EINVAL, "NULL out");
    struct ndc__topo *t = NULL;
    int r = ndc__topo_load(&t, topology);
    if (r)
        return r;
    r = ndc__suggest_pair(t, allowed, out);
    ndc__topo_free(t);
    return r;
}

/* ---- pages --------------------------------------------------------------- */

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* Map into this process the pages of [addr, addr+len) the object already
 * holds, so that mbind and move_pages see them. Holes are left alone.
 * \return pages found, or -errno. */
static long map_resident(const void *addr, size_t len)
{
    enum { CHUNK = 4096 };
    unsigned char vec[CHUNK];
    size_t pg = page_size();
    long found = 0;
    for (size_t off = 0; off < len; off += (size_t)CHUNK * pg) {
        size_t n = len - off < (size_t)CHUNK * pg ? len - off : (size_t)CHUNK * pg;
        if (mincore((void *)((const char *)addr + off), n, vec) < 0)
            return ndc__fail(-errno, "mincore: %s", strerror(errno));
        for (size_t i = 0; i < (n + pg - 1) / pg; i++)
            if (vec[i] & 1) {
                (void)*(const volatile char *)((const char *)addr + off + i * pg);
                found++;
            }
    }
    return found;
}

int ndc__numa_where_area(const void *addr, size_t len, uint64_t *counts, int max)
{
    const struct ndc__topo *t = NULL;
    int r = machine_get(&t);
    if (r)
        return r;
    if (max < 0 || (max > 0 && !counts))
        return ndc__fail(-EINVAL, "counts NULL or max < 0");
    /* counted aside, so that counts is untouched on failure */
    uint64_t *acc = calloc((size_t)max + 1, sizeof *acc);
    if (!acc)
        return -ENOMEM;
    size_t pg = page_size();
    uintptr_t a0 = (uintptr_t)addr & ~(uintptr_t)(pg - 1);
    len += (uintptr_t)addr - a0;
    const char *base = (const char *)a0;

    /* Chunk by chunk: mincore says which pages the object holds; only those
     * are mapped in (one read each) and asked about. A payload is mostly
     * untouched capacity, so this skips most of it. */
    enum { CHUNK = 1024 };
    unsigned char vec[CHUNK];
    void *pages[CHUNK];
    int status[CHUNK];
    for (size_t off = 0; off < len && r == 0; off += (size_t)CHUNK * pg) {
        size_t n = len - off < (size_t)CHUNK * pg ? len - off : (size_t)CHUNK * pg;
        if (mincore((void *)(base + off), n, vec) < 0) {
            r = ndc__fail(-errno, "mincore: %s", strerror(errno));
            break;
        }
        unsigned long k = 0;
        for (size_t i = 0; i < (n + pg - 1) / pg; i++)
            if (vec[i] & 1) {
                pages[k] = (void *)(base + off + i * pg);
                (void)*(const volatile char *)pages[k];
                k++;
            }
        if (!k)
            continue;
        if (syscall(SYS_move_pages, 0, k, pages, NULL, status, 0) < 0) {
            int e = errno;
            if (e == ENOSYS || e == EPERM)
                r = ndc__fail(-ENOTSUP, "move_pages: %s (no CONFIG_NUMA, or refused by seccomp)",
                              strerror(e));
            else
                r = ndc__fail(-e, "move_pages: %s", strerror(e));
            break;
        }
        for (unsigned long j = 0; j < k; j++)
            if (status[j] >= 0 && status[j] < max)   /* < 0: gone meanwhile */
                acc[status[j]]++;
    }
    if (r == 0) {
        if (max)
            memcpy(counts, acc, (size_t)max * sizeof *acc);
        r = ndc__topo_node_span(t);
    }
    free(acc);
    return r;
}

int ndc__numa_area_policy(const void *addr, uint32_t *policy, uint64_t *nodes)
{
    const struct ndc__topo *t = NULL;
    int r = machine_get(&t);
    if (r)
        return r;
    hwloc_nodeset_t set = hwloc_bitmap_alloc();
    if (!set)
        return -ENOMEM;
    hwloc_membind_policy_t pol;
    size_t pg = page_size();
    const void *a = (const void *)((uintptr_t)addr & ~(uintptr_t)(pg - 1));
    if (hwloc_get_area_membind(t->h, a, pg, set, &pol, HWLOC_MEMBIND_BYNODESET) < 0) {
        int e = errno;
        hwloc_bitmap_free(set);
        return ndc__fail(e == ENOSYS ? -ENOTSUP : -e, "get_mempolicy: %s", strerror(e));
    }
    uint32_t p = NDC_NUMA_FIRST_TOUCH;
    uint64_t m = 0;
    if (pol == HWLOC_MEMBIND_BIND) {
        p = NDC_NUMA_BIND;
        m = nodeset_low64(set);
    } else if (pol == HWLOC_MEMBIND_INTERLEAVE) {
        p = NDC_NUMA_INTERLEAVE;
        m = nodeset_low64(set);
    }
    hwloc_bitmap_free(set);
    *policy = p;
    *nodes = m;
    return 0;
}

int ndc_numa_policy(const ndc_chan *ch, uint32_t *policy, uint64_t *nodes)
{
    if (!ch || !policy || !nodes)
        return ndc__fail(-EINVAL, "NULL argument");
    struct ndc__payload pl;
    ndc__chan_payload(ch, &pl);
    return ndc__numa_area_policy(pl.base, policy, nodes);
}

/* ---- hooks ---------------------------------------------------------------- */

int ndc__numa_check(const struct ndc_chan_opts *o)
{
    int r = ndc__numa_check_fields(o);
    if (r || !o || o->numa_policy == NDC_NUMA_FIRST_TOUCH)
        return r;
    const struct ndc__topo *t = NULL;
    struct ndc__numa_plan p;
    if ((r = machine_get(&t)) || (r = ndc__numa_plan(t, o, &p)))
        return r;
    const struct hwloc_topology_support *s = hwloc_topology_get_support(t->h);
    if (!s->membind->set_area_membind || !s->membind->bind_membind ||
        (o->numa_policy == NDC_NUMA_INTERLEAVE && !s->membind->interleave_membind))
        return ndc__fail(-ENOTSUP, "hwloc cannot bind memory areas on this system");
    return membind_works();
}

static int area_bind(const struct ndc__topo *t, void *addr, size_t len,
                     hwloc_const_nodeset_t set, hwloc_membind_policy_t pol, int flags,
                     const char *what)
{
    if (!len)
        return 0;
    if (hwloc_set_area_membind(t->h, addr, len, set, pol, flags | HWLOC_MEMBIND_BYNODESET) == 0)
        return 0;
    int e = errno;
    char nodes[64];
    hwloc_bitmap_list_snprintf(nodes, sizeof nodes, set);
    return ndc__fail(e == ENOSYS ? -ENOTSUP : -e, "%s on node(s) %s: mbind: %s",
                     what, nodes, strerror(e));
}

static int nodeset_of_plan(const struct ndc__topo *t, const struct ndc__numa_plan *p,
                           hwloc_nodeset_t set)
{
    if (p->all_nodes) {
        /* every usable node, including numbers >= 64 */
        for (hwloc_obj_t n = NULL; (n = hwloc_get_next_obj_by_type(t->h, HWLOC_OBJ_NUMANODE, n)); )
            if (node_usable(t, (int)n->os_index) == 0)
                hwloc_bitmap_set(set, n->os_index);
    } else if (p->node >= 0) {
        hwloc_bitmap_only(set, (unsigned)p->node);
    } else {
        for (uint64_t m = p->nodes; m; m &= m - 1)
            hwloc_bitmap_set(set, (unsigned)__builtin_ctzll(m));
    }
    return hwloc_bitmap_iszero(set) ? -ENODEV : 0;
}

int ndc__numa_place(void *addr, size_t len, const struct ndc_chan_opts *o)
{
    if (!o || o->numa_policy == NDC_NUMA_FIRST_TOUCH || o->numa_policy == NDC_NUMA_NEAR_RECEIVER)
        return ndc__numa_check_fields(o);
    const struct ndc__topo *t = NULL;
    struct ndc__numa_plan p;
    int r;
    if ((r = machine_get(&t)) || (r = ndc__numa_plan(t, o, &p)))
        return r;
    hwloc_nodeset_t set = hwloc_bitmap_alloc();
    if (!set)
        return -ENOMEM;
    if ((r = nodeset_of_plan(t, &p, set)) == 0) {
        switch (p.policy) {
        case NDC_NUMA_BIND:
            r = area_bind(t, addr, len, set, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_STRICT, "NDC_NUMA_BIND");
            break;
        case NDC_NUMA_PREFERRED: /* hwloc: BIND without STRICT is MPOL_PREFERRED(_MANY) */
            r = area_bind(t, addr, len, set, HWLOC_MEMBIND_BIND, 0, "NDC_NUMA_PREFERRED");
            break;
        default:
            r = area_bind(t, addr, len, set, HWLOC_MEMBIND_INTERLEAVE, 0, "NDC_NUMA_INTERLEAVE");
            break;
        }
    }
    hwloc_bitmap_free(set);
    return r;
}

/* Move the pages of [addr, addr+len) that exist already onto `node`. Pages
 * other processes map move only with MPOL_MF_MOVE_ALL (CAP_SYS_NICE), which
 * hwloc does not offer, hence the raw mbind; without the capability, hwloc's
 * MIGRATE (MPOL_MF_MOVE) moves the pages no one else maps. Best effort. */
static void migrate_existing(const struct ndc__topo *t, void *addr, size_t len,
                             hwloc_const_nodeset_t set, int node)
{
    if (map_resident(addr, len) <= 0)
        return;
    enum { W = 8 * sizeof(unsigned long) };
    size_t nlong = (size_t)node / W + 1;
    unsigned long *mask = calloc(nlong, sizeof *mask);
    if (mask) {
        mask[node / W] = 1ul << (node % W);
        long r = syscall(SYS_mbind, addr, len, MPOL_BIND, mask, nlong * W + 1, MPOL_MF_MOVE_ALL);
        free(mask);
        if (r == 0)
            return;
    }
    (void)hwloc_set_area_membind(t->h, addr, len, set, HWLOC_MEMBIND_BIND,
                                 HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_STRICT |
                                 HWLOC_MEMBIND_MIGRATE);
}

int ndc__numa_bind_here(void *addr, size_t len)
{
    const struct ndc__topo *t = NULL;
    int r = machine_get(&t);
    if (r)
        return r;
    int cpu = sched_getcpu();
    if (cpu < 0)
        return ndc__fail(-errno, "sched_getcpu: %s", strerror(errno));
    int node = ndc__numa_node_near_cpu(t, cpu);
    if (node < 0)
        return node;
    hwloc_nodeset_t set = hwloc_bitmap_alloc();
    if (!set)
        return -ENOMEM;
    hwloc_bitmap_only(set, (unsigned)node);
    /* the policy first: every page touched from now on lands on `node` */
    r = area_bind(t, addr, len, set, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_STRICT,
                  "NDC_NUMA_NEAR_RECEIVER");
    if (r == 0)
        migrate_existing(t, addr, len, set, node);
    hwloc_bitmap_free(set);
    return r;
}

/* ---- public calls ---------------------------------------------------------- */

NDC_API int ndc_numa_where(const ndc_chan *ch, uint64_t *counts, int max)
{
    if (!ch)
        return ndc__fail(-EINVAL, "NULL channel");
    struct ndc__payload p;
    ndc__chan_payload(ch, &p);
    return ndc__numa_where_area(p.base, p.len, counts, max);
}

NDC_API int ndc_numa_pin_near(const ndc_chan *ch)
{
    if (!ch)
        return ndc__fail(-EINVAL, "NULL channel");
    const struct ndc__topo *t = NULL;
    int r = machine_get(&t);
    if (r)
        return r;
    struct ndc__payload p;
    ndc__chan_payload(ch, &p);
    int span = ndc__topo_node_span(t);
    uint64_t *counts = calloc((size_t)span + 1, sizeof *counts);
    if (!counts)
        return -ENOMEM;
    r = ndc__numa_where_area(p.base, p.len, counts, span);
    uint32_t pol = NDC_NUMA_FIRST_TOUCH;
    uint64_t bound = 0;
    if (r >= 0 && ndc__numa_area_policy(p.base, &pol, &bound) < 0)
        bound = 0;
    int node = r < 0 ? r : ndc__numa_pick_node(counts, span, bound);
    free(counts);
    if (node == -ENODEV)
        return ndc__fail(-ENODEV, "no page of the channel is touched and no node is bound: "
                         "nothing to be near yet");
    if (node < 0)
        return node;
    hwloc_obj_t n = hwloc_get_numanode_obj_by_os_index(t->h, (unsigned)node);
    if (!n)
        return ndc__fail(-ENODEV, "the channel's pages are on node %d, which this process may not use", node);
    hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
    if (!cpus)
        return -ENOMEM;
    hwloc_bitmap_and(cpus, n->cpuset, hwloc_topology_get_allowed_cpuset(t->h));
    if (hwloc_bitmap_iszero(cpus))
        r = ndc__fail(-ENODEV, "node %d has no CPU this process may run on", node);
    else if (hwloc_set_cpubind(t->h, cpus, HWLOC_CPUBIND_THREAD) < 0)
        r = ndc__fail(-errno, "binding the thread near node %d: %s", node, strerror(errno));
    else
        r = node;
    hwloc_bitmap_free(cpus);
    return r;
}

NDC_API int ndc_suggest_cpus(int *producer_cpu, int *consumer_cpu)
{
    if (!producer_cpu || !consumer_cpu)
        return ndc__fail(-EINVAL, "NULL out parameter");
    const struct ndc__topo *t = NULL;
    int r = machine_get(&t);
    if (r)
        return r;
    /* within the CPUs this process may use (taskset, cgroup cpuset) */
    hwloc_bitmap_t mine = hwloc_bitmap_alloc();
    if (!mine)
        return -ENOMEM;
    if (hwloc_get_cpubind(t->h, mine, HWLOC_CPUBIND_PROCESS) < 0 &&
        hwloc_get_cpubind(t->h, mine, HWLOC_CPUBIND_THREAD) < 0)
        hwloc_bitmap_copy(mine, hwloc_topology_get_allowed_cpuset(t->h));
    hwloc_bitmap_and(mine, mine, hwloc_topology_get_allowed_cpuset(t->h));
    struct ndc_cpu_pair p;
    r = suggest_in(t, mine, &p);
    hwloc_bitmap_free(mine);
    if (r)
        return r;
    *producer_cpu = p.producer;
    *consumer_cpu = p.consumer;
    return 0;
}
