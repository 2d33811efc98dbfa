/* NUMA placement.
 *
 * numa_decide: the pure decisions (validation, resolution of a policy into
 *   nodes, the node "near the receiver" picks, the CPU pair suggested, the
 *   node ndc_numa_pin_near picks) on synthetic and XML topologies with 2
 *   sockets and 4 nodes, so they run on any machine.
 * numa_area: placement and the page report on a memfd of our own, on this
 *   machine (no channel needed).
 * numa_chan: the same through the public API, across processes.
 * Whatever needs more nodes than this machine has is skipped with the reason;
 * without hwloc every test says so and skips. */
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "segment.h"
#include "chan.h"
#include "numa.h"
#include "topo.h"

/* 2 packages x 2 nodes x 2 cores: nodes 0-3, CPUs 0-7, CPU 2k..2k+1 on node k. */
#define SYN_2X2 "pack:2 numa:2 core:2 pu:1"

/* A machine the synthetic syntax cannot say: sparse node numbers (0, 1, 2, 5),
 * package 0 with DRAM node 0 (8 GiB) and a smaller HBM node 2 on the same
 * CPUs, package 1 with node 1, and a CPU-less CXL node 5 (16 GiB) attached to
 * the whole machine; an SLIT-like latency matrix. */
static const char xml_hetero[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE topology SYSTEM \"hwloc2.dtd\">\n"
    "<topology version=\"2.0\">\n"
    " <object type=\"Machine\" os_index=\"0\" cpuset=\"0x0000000f\" complete_cpuset=\"0x0000000f\" allowed_cpuset=\"0x0000000f\" nodeset=\"0x00000027\" complete_nodeset=\"0x00000027\" allowed_nodeset=\"0x00000027\" gp_index=\"1\">\n"
    "  <object type=\"NUMANode\" os_index=\"5\" cpuset=\"0x0000000f\" complete_cpuset=\"0x0000000f\" nodeset=\"0x00000020\" complete_nodeset=\"0x00000020\" gp_index=\"2\" local_memory=\"17179869184\"/>\n"
    "  <object type=\"Package\" os_index=\"0\" cpuset=\"0x00000003\" complete_cpuset=\"0x00000003\" nodeset=\"0x00000005\" complete_nodeset=\"0x00000005\" gp_index=\"3\">\n"
    "   <object type=\"NUMANode\" os_index=\"0\" cpuset=\"0x00000003\" complete_cpuset=\"0x00000003\" nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" gp_index=\"4\" local_memory=\"8589934592\"/>\n"
    "   <object type=\"NUMANode\" os_index=\"2\" cpuset=\"0x00000003\" complete_cpuset=\"0x00000003\" nodeset=\"0x00000004\" complete_nodeset=\"0x00000004\" gp_index=\"5\" local_memory=\"2147483648\"/>\n"
    "   <object type=\"L3Cache\" os_index=\"0\" cpuset=\"0x00000003\" complete_cpuset=\"0x00000003\" nodeset=\"0x00000005\" complete_nodeset=\"0x00000005\" gp_index=\"6\" cache_size=\"16777216\" depth=\"3\" cache_linesize=\"64\" cache_associativity=\"16\" cache_type=\"0\">\n"
    "    <object type=\"Core\" os_index=\"0\" cpuset=\"0x00000001\" complete_cpuset=\"0x00000001\" nodeset=\"0x00000005\" complete_nodeset=\"0x00000005\" gp_index=\"7\">\n"
    "     <object type=\"PU\" os_index=\"0\" cpuset=\"0x00000001\" complete_cpuset=\"0x00000001\" nodeset=\"0x00000005\" complete_nodeset=\"0x00000005\" gp_index=\"8\"/>\n"
    "    </object>\n"
    "    <object type=\"Core\" os_index=\"1\" cpuset=\"0x00000002\" complete_cpuset=\"0x00000002\" nodeset=\"0x00000005\" complete_nodeset=\"0x00000005\" gp_index=\"9\">\n"
    "     <object type=\"PU\" os_index=\"1\" cpuset=\"0x00000002\" complete_cpuset=\"0x00000002\" nodeset=\"0x00000005\" complete_nodeset=\"0x00000005\" gp_index=\"10\"/>\n"
    "    </object>\n"
    "   </object>\n"
    "  </object>\n"
    "  <object type=\"Package\" os_index=\"1\" cpuset=\"0x0000000c\" complete_cpuset=\"0x0000000c\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"11\">\n"
    "   <object type=\"NUMANode\" os_index=\"1\" cpuset=\"0x0000000c\" complete_cpuset=\"0x0000000c\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"12\" local_memory=\"8589934592\"/>\n"
    "   <object type=\"L3Cache\" os_index=\"1\" cpuset=\"0x0000000c\" complete_cpuset=\"0x0000000c\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"13\" cache_size=\"16777216\" depth=\"3\" cache_linesize=\"64\" cache_associativity=\"16\" cache_type=\"0\">\n"
    "    <object type=\"Core\" os_index=\"2\" cpuset=\"0x00000004\" complete_cpuset=\"0x00000004\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"14\">\n"
    "     <object type=\"PU\" os_index=\"2\" cpuset=\"0x00000004\" complete_cpuset=\"0x00000004\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"15\"/>\n"
    "    </object>\n"
    "    <object type=\"Core\" os_index=\"3\" cpuset=\"0x00000008\" complete_cpuset=\"0x00000008\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"16\">\n"
    "     <object type=\"PU\" os_index=\"3\" cpuset=\"0x00000008\" complete_cpuset=\"0x00000008\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"17\"/>\n"
    "    </object>\n"
    "   </object>\n"
    "  </object>\n"
    " </object>\n"
    " <distances2 type=\"NUMANode\" nbobjs=\"4\" kind=\"5\" indexing=\"os\">\n"
    "  <indexes length=\"7\">5 0 2 1</indexes>\n"
    "  <u64values length=\"47\">10 30 30 30 30 10 12 21 30 12 10 21 30 21 21 10</u64values>\n"
    " </distances2>\n"
    "</topology>\n";

/* Load a topology, or skip the test when this build has no hwloc. */
static struct ndc__topo *load(const char *desc)
{
    struct ndc__topo *t = NULL;
    int r = ndc__topo_load(&t, desc);
    if (r == -ENOTSUP)
        cr_skip_test("built without hwloc: %s", ndc_last_error());
    cr_assert_eq(r, 0, "ndc__topo_load(%s) = %d (%s): %s", desc ? desc : "this machine", r,
                 ndc_strerror(r), ndc_last_error());
    return t;
}

static struct ndc_chan_opts numa_opts(uint32_t policy, int32_t node, uint64_t nodeset)
{
    struct ndc_chan_opts o;
    memset(&o, 0, sizeof o);
    o.numa_policy = policy;
    o.numa_node = node;
    o.numa_nodeset = nodeset;
    return o;
}

/* ---- numa_decide ---------------------------------------------------------- */

Test(numa_decide, synthetic_machine_shape)
{
    struct ndc__topo *t = load(SYN_2X2);
    cr_expect_eq(ndc__topo_nodes(t), 4);
    cr_expect_eq(ndc__topo_node_span(t), 4);
    ndc__topo_free(t);
    th_expect(ndc__topo_load(&t, "pack:two nonsense"), -EINVAL);
}

Test(numa_decide, bind_and_preferred_resolve_to_one_node)
{
    struct ndc__topo *t = load(SYN_2X2);
    struct ndc__numa_plan p;
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, 2, 0);
    th_ok(ndc__numa_plan(t, &o, &p));
    cr_expect_eq(p.node, 2);
    cr_expect_eq(p.nodes, 1u << 2);
    cr_expect_eq(p.nnodes, 1);
    cr_expect(p.strict, "BIND must not spill");

    o = numa_opts(NDC_NUMA_PREFERRED, 3, 0);
    th_ok(ndc__numa_plan(t, &o, &p));
    cr_expect_eq(p.node, 3);
    cr_expect_not(p.strict, "PREFERRED spills when the node is full");
    ndc__topo_free(t);
}

Test(numa_decide, interleave_sets)
{
    struct ndc__topo *t = load(SYN_2X2);
    struct ndc__numa_plan p;
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_INTERLEAVE, 0, 0);
    th_ok(ndc__numa_plan(t, &o, &p));
    cr_expect_eq(p.nodes, 0xfu, "nodeset 0 = every node: got %#llx", (unsigned long long)p.nodes);
    cr_expect(p.all_nodes);
    cr_expect_eq(p.nnodes, 4);
    cr_expect_eq(p.node, -1);

    o = numa_opts(NDC_NUMA_INTERLEAVE, 0, 0x5);     /* nodes 0 and 2: one per socket */
    th_ok(ndc__numa_plan(t, &o, &p));
    cr_expect_eq(p.nodes, 0x5u);
    cr_expect_not(p.all_nodes);
    cr_expect_eq(p.nnodes, 2);

    o = numa_opts(NDC_NUMA_INTERLEAVE, 0, 0x11);    /* node 4 does not exist */
    th_expect(ndc__numa_plan(t, &o, &p), -ENODEV);
    cr_expect(strstr(ndc_last_error(), "node 4"), "detail names the node: %s", ndc_last_error());
    ndc__topo_free(t);
}

Test(numa_decide, invalid_nodes_and_fields)
{
    struct ndc__topo *t = load(SYN_2X2);
    struct ndc__numa_plan p = { .node = 1234 };
    struct ndc_chan_opts o;

    o = numa_opts(NDC_NUMA_BIND, 4, 0);
    th_expect(ndc__numa_plan(t, &o, &p), -ENODEV);
    o = numa_opts(NDC_NUMA_PREFERRED, 1000, 0);
    th_expect(ndc__numa_plan(t, &o, &p), -ENODEV);
    o = numa_opts(NDC_NUMA_BIND, -1, 0);
    th_expect(ndc__numa_plan(t, &o, &p), -EINVAL);
    o = numa_opts(NDC_NUMA_BIND, 1, 0x2);           /* nodeset is INTERLEAVE's */
    th_expect(ndc__numa_plan(t, &o, &p), -EINVAL);
    o = numa_opts(NDC_NUMA_INTERLEAVE, 1, 0);       /* numa_node is BIND's */
    th_expect(ndc__numa_plan(t, &o, &p), -EINVAL);
    o = numa_opts(NDC_NUMA_FIRST_TOUCH, 1, 0);
    th_expect(ndc__numa_plan(t, &o, &p), -EINVAL);
    o = numa_opts(NDC_NUMA_NEAR_RECEIVER, 0, 0x3);
    th_expect(ndc__numa_plan(t, &o, &p), -EINVAL);
    o = numa_opts(NDC_NUMA_NEAR_RECEIVER + 1, 0, 0);
    th_expect(ndc__numa_plan(t, &o, &p), -EINVAL);
    cr_expect_eq(p.node, 1234, "plan written on failure");

    th_ok(ndc__numa_plan(t, NULL, &p));
    cr_expect_eq(p.policy, NDC_NUMA_FIRST_TOUCH);
    ndc__topo_free(t);
}

Test(numa_decide, sparse_node_numbers)
{
    struct ndc__topo *t = load(xml_hetero);
    cr_expect_eq(ndc__topo_nodes(t), 4);
    cr_expect_eq(ndc__topo_node_span(t), 6, "nodes 0,1,2,5: span 6");
    struct ndc__numa_plan p;
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, 3, 0);
    th_expect(ndc__numa_plan(t, &o, &p), -ENODEV);
    o = numa_opts(NDC_NUMA_BIND, 5, 0);
    th_ok(ndc__numa_plan(t, &o, &p));
    o = numa_opts(NDC_NUMA_INTERLEAVE, 0, 0);
    th_ok(ndc__numa_plan(t, &o, &p));
    cr_expect_eq(p.nodes, 0x27u, "got %#llx", (unsigned long long)p.nodes);
    ndc__topo_free(t);
}

Test(numa_decide, near_receiver_picks_the_receivers_node)
{
    struct ndc__topo *t = load(SYN_2X2);
    for (int cpu = 0; cpu < 8; cpu++)
        cr_expect_eq(ndc__numa_node_near_cpu(t, cpu), cpu / 2, "cpu %d", cpu);
    th_expect(ndc__numa_node_near_cpu(t, 8), -EINVAL);
    th_expect(ndc__numa_node_near_cpu(t, -1), -EINVAL);
    ndc__topo_free(t);
}

Test(numa_decide, near_receiver_prefers_local_dram)
{
    /* CPU 0 sees DRAM node 0 and HBM node 2 (same CPUs) and the machine-wide
     * CXL node 5: the most local, then the largest, is node 0. */
    struct ndc__topo *t = load(xml_hetero);
    cr_expect_eq(ndc__numa_node_near_cpu(t, 0), 0);
    cr_expect_eq(ndc__numa_node_near_cpu(t, 1), 0);
    cr_expect_eq(ndc__numa_node_near_cpu(t, 2), 1);
    cr_expect_eq(ndc__numa_node_near_cpu(t, 3), 1);
    ndc__topo_free(t);
}

Test(numa_decide, pin_near_picks_the_fullest_node)
{
    uint64_t c1[4] = { 0, 5, 5, 1 };
    cr_expect_eq(ndc__numa_pick_node(c1, 4, 0), 1, "tie: lowest node");
    uint64_t c2[4] = { 3, 0, 0, 900 };
    cr_expect_eq(ndc__numa_pick_node(c2, 4, 0x1), 3, "pages beat the bound node");
    uint64_t c3[4] = { 0 };
    cr_expect_eq(ndc__numa_pick_node(c3, 4, 0x4), 2, "nothing touched: the bound node");
    cr_expect_eq(ndc__numa_pick_node(c3, 4, 0x6), 1);
    cr_expect_eq(ndc__numa_pick_node(c3, 4, 0), -ENODEV);
}

Test(numa_decide, suggest_shares_the_deepest_cache)
{
    struct ndc__topo *t = load("pack:2 numa:1 l3:1 l2:2 core:2 pu:1");
    /* L2 pairs: cores {0,1} {2,3} | {4,5} {6,7}; {0,1} holds CPU 0 */
    struct ndc_cpu_pair p;
    th_ok(ndc__suggest_pair(t, NULL, &p));
    cr_expect_eq(p.producer, 2);
    cr_expect_eq(p.consumer, 3);
    cr_expect_str_eq(p.shared, "L2");
    cr_expect_eq(p.node, 0);
    ndc__topo_free(t);

    t = load("pack:2 numa:1 l3:1 core:4 pu:2");
    th_ok(ndc__suggest_pair(t, NULL, &p));
    cr_expect_str_eq(p.shared, "L3");
    cr_expect_neq(p.producer / 2, p.consumer / 2, "different cores, not SMT siblings: %d %d",
                  p.producer, p.consumer);
    cr_expect(p.producer != 0 && p.consumer != 0, "CPU 0 avoided: %d %d", p.producer, p.consumer);
    cr_expect(p.producer < 8 && p.consumer < 8, "same package");
    ndc__topo_free(t);
}

Test(numa_decide, suggest_within_allowed_cpus)
{
    struct ndc__topo *t = load(SYN_2X2);
    struct ndc_cpu_pair p;
    th_ok(ndc__suggest_pair(t, "4-7", &p));
    cr_expect_eq(p.producer, 4);
    cr_expect_eq(p.consumer, 5);
    cr_expect_eq(p.node, 2);

    th_ok(ndc__suggest_pair(t, "3-4", &p));         /* only a cross-socket pair */
    cr_expect_eq(p.producer, 3);
    cr_expect_eq(p.consumer, 4);
    cr_expect_eq(p.node, -1, "no node local to both");
    cr_expect_str_eq(p.shared, "machine");

    p.producer = -7;
    th_expect(ndc__suggest_pair(t, "6", &p), -ENODEV);
    th_expect(ndc__suggest_pair(t, "100-200", &p), -ENODEV);
    th_expect(ndc__suggest_pair(t, "x,y", &p), -EINVAL);
    cr_expect_eq(p.producer, -7, "out parameter written on failure");
    ndc__topo_free(t);
}

Test(numa_decide, suggest_smt_only)
{
    struct ndc__topo *t = load("core:1 pu:2");
    struct ndc_cpu_pair p;
    th_ok(ndc__suggest_pair(t, NULL, &p));
    cr_expect_eq(p.producer, 0);
    cr_expect_eq(p.consumer, 1);
    cr_expect_str_eq(p.shared, "core");
    ndc__topo_free(t);
    t = load("pu:1");
    th_expect(ndc__suggest_pair(t, NULL, &p), -ENODEV);
    ndc__topo_free(t);
}

Test(numa_decide, describe_lists_packages_nodes_caches_distances)
{
    struct topo_desc *d = NULL;
    if (topo_describe(xml_hetero, &d) == -ENOTSUP)
        cr_skip_test("built without hwloc");
    cr_assert_not_null(d);
    cr_expect_eq(d->packages, 2);
    cr_expect_eq(d->nodes, 4);
    cr_expect_eq(d->cores, 4);
    cr_expect_eq(d->pus, 4);
    cr_expect_eq(d->memory, 34ull << 30);
    int nodes = 0, caches = 0, pkgs = 0, cores = 0;
    for (size_t i = 0; i < d->nitems; i++) {
        const struct topo_item *it = &d->items[i];
        nodes += it->kind == TOPO_NODE;
        caches += it->kind == TOPO_CACHE;
        pkgs += it->kind == TOPO_PACKAGE;
        cores += it->kind == TOPO_CORE;
        if (it->kind == TOPO_NODE && it->os_index == 5) {
            cr_expect_eq(it->depth, 1, "CXL node under the machine");
            cr_expect_str_eq(it->cpus, "0-3");
            cr_expect_eq(it->bytes, 16ull << 30);
        }
        if (it->kind == TOPO_CACHE) {
            cr_expect_eq(it->level, 3);
            cr_expect_eq(it->ncores, 2);
        }
    }
    cr_expect_eq(d->items[0].kind, TOPO_MACHINE);
    cr_expect_eq(nodes, 4);
    cr_expect_eq(caches, 2, "the shared L3s; no private cache");
    cr_expect_eq(pkgs, 2);
    cr_expect_eq(cores, 4);
    cr_assert_eq(d->ndist, 4);
    int i5 = -1, i1 = -1;
    for (int i = 0; i < 4; i++) {
        if (d->dist_node[i] == 5) i5 = i;
        if (d->dist_node[i] == 1) i1 = i;
    }
    cr_assert(i5 >= 0 && i1 >= 0);
    cr_expect_eq(d->dist[i5 * 4 + i1], 30);
    cr_expect_eq(d->dist[i1 * 4 + i1], 10);
    topo_desc_free(d);
}

/* ---- numa_area: this machine, a memfd of our own -------------------------- */

#define AREA_PAGES 64

struct area { void *p; size_t len; int fd; };

static struct area area_new(void)
{
    struct area a = { .len = (size_t)AREA_PAGES * (size_t)sysconf(_SC_PAGESIZE) };
    a.fd = memfd_create("ndc-test-numa", MFD_CLOEXEC);
    cr_assert(a.fd >= 0);
    cr_assert_eq(ftruncate(a.fd, (off_t)a.len), 0);
    a.p = mmap(NULL, a.len, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd, 0);
    cr_assert(a.p != MAP_FAILED);
    return a;
}

static void area_free(struct area *a)
{
    munmap(a->p, a->len);
    close(a->fd);
}

/* The machine's node count, skipping when there is no hwloc or fewer than `need`. */
static int machine_nodes(int need)
{
    struct ndc__topo *t = load(NULL);
    int n = ndc__topo_nodes(t);
    ndc__topo_free(t);
    if (n < need)
        cr_skip_test("needs %d NUMA nodes, this machine has %d", need, n);
    return n;
}

static int first_node(void)
{
    struct ndc__topo *t = load(NULL);
    int node = ndc__numa_node_near_cpu(t, 0);
    struct topo_desc *d = NULL;
    if (topo_describe(NULL, &d) == 0) {
        for (size_t i = 0; i < d->nitems; i++)
            if (d->items[i].kind == TOPO_NODE) {
                node = d->items[i].os_index;
                break;
            }
        topo_desc_free(d);
    }
    ndc__topo_free(t);
    return node;
}

/* Place with `o`, skipping when this kernel refuses memory binding at all. */
static void place_or_skip(struct area *a, const struct ndc_chan_opts *o)
{
    int r = ndc__numa_check(o);
    if (r == -ENOTSUP)
        cr_skip_test("this machine cannot bind memory: %s", ndc_last_error());
    th_ok(r);
    th_ok(ndc__numa_place(a->p, a->len, o));
}

Test(numa_area, bind_then_touch_reads_back_the_node)
{
    machine_nodes(1);
    int node = first_node();
    struct area a = area_new();
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, node, 0);
    place_or_skip(&a, &o);
    memset(a.p, 0xa5, a.len);
    uint64_t counts[64];
    int span = ndc__numa_where_area(a.p, a.len, counts, 64);
    cr_assert(span > node, "where = %d (%s): %s", span, ndc_strerror(span), ndc_last_error());
    cr_expect_eq(counts[node], AREA_PAGES, "pages on node %d: %llu", node,
                 (unsigned long long)counts[node]);
    uint32_t pol;
    uint64_t nodes;
    th_ok(ndc__numa_area_policy(a.p, &pol, &nodes));
    cr_expect_eq(pol, NDC_NUMA_BIND);
    cr_expect_eq(nodes, node < 64 ? 1ull << node : 0);
    area_free(&a);
}

Test(numa_area, untouched_pages_are_not_counted)
{
    machine_nodes(1);
    struct area a = area_new();
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    memset((char *)a.p + 3 * pg, 1, 5 * pg);       /* pages 3..7 only */
    uint64_t counts[64];
    int span = ndc__numa_where_area(a.p, a.len, counts, 64);
    cr_assert(span > 0, "%s", ndc_last_error());
    uint64_t total = 0;
    for (int i = 0; i < 64; i++)
        total += counts[i];
    cr_expect_eq(total, 5);
    /* reading the report allocated nothing: the holes are still holes */
    unsigned char vec[AREA_PAGES];
    cr_assert_eq(mincore(a.p, a.len, vec), 0);
    int resident = 0;
    for (int i = 0; i < AREA_PAGES; i++)
        resident += vec[i] & 1;
    cr_expect_eq(resident, 5);
    area_free(&a);
}

static struct area shared_area;
static int child_touches(void *arg)
{
    (void)arg;
    memset(shared_area.p, 7, shared_area.len / 2);
    return 0;
}

Test(numa_area, counts_pages_another_process_touched, .timeout = 30)
{
    /* The reporter (ndchan-topo --channel) maps pages it never touched. */
    machine_nodes(1);
    int node = first_node();
    shared_area = area_new();
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_PREFERRED, node, 0);
    place_or_skip(&shared_area, &o);
    /* a second mapping of the object: this process never touches it */
    void *view = mmap(NULL, shared_area.len, PROT_READ, MAP_SHARED, shared_area.fd, 0);
    cr_assert(view != MAP_FAILED);
    pid_t pid = th_fork(child_touches, NULL);
    cr_assert_eq(th_wait(pid, 10000), 0);
    uint64_t counts[64];
    int span = ndc__numa_where_area(view, shared_area.len, counts, 64);
    cr_assert(span > 0, "%s", ndc_last_error());
    cr_expect_eq(counts[node], AREA_PAGES / 2, "got %llu", (unsigned long long)counts[node]);
    munmap(view, shared_area.len);
    area_free(&shared_area);
}

Test(numa_area, interleave_over_every_node)
{
    int n = machine_nodes(1);
    struct area a = area_new();
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_INTERLEAVE, 0, 0);
    place_or_skip(&a, &o);
    memset(a.p, 1, a.len);
    uint64_t counts[64];
    cr_assert(ndc__numa_where_area(a.p, a.len, counts, 64) > 0, "%s", ndc_last_error());
    int used = 0;
    uint64_t total = 0;
    for (int i = 0; i < 64; i++) {
        used += counts[i] > 0;
        total += counts[i];
    }
    cr_expect_eq(total, AREA_PAGES);
    cr_expect_eq(used, n < AREA_PAGES ? n : AREA_PAGES, "interleave used %d of %d nodes", used, n);
    area_free(&a);
}

Test(numa_area, bind_here_binds_to_the_callers_node)
{
    machine_nodes(1);
    struct area a = area_new();
    memset(a.p, 1, a.len);        /* touched before the receiver shows up */
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_NEAR_RECEIVER, 0, 0);
    int r = ndc__numa_check(&o);
    if (r == -ENOTSUP)
        cr_skip_test("this machine cannot bind memory: %s", ndc_last_error());
    th_ok(ndc__numa_place(a.p, a.len, &o));        /* a no-op until a receiver */
    th_ok(ndc__numa_bind_here(a.p, a.len));
    struct ndc__topo *t = load(NULL);
    int node = ndc__numa_node_near_cpu(t, sched_getcpu());
    ndc__topo_free(t);
    uint32_t pol;
    uint64_t nodes;
    th_ok(ndc__numa_area_policy(a.p, &pol, &nodes));
    cr_expect_eq(pol, NDC_NUMA_BIND);
    cr_expect_eq(nodes, 1ull << node);
    uint64_t counts[64];
    cr_assert(ndc__numa_where_area(a.p, a.len, counts, 64) > 0);
    cr_expect_eq(counts[node], AREA_PAGES);
    area_free(&a);
}

Test(numa_area, check_rejects_what_the_machine_lacks)
{
    int n = machine_nodes(1);
    struct ndc__topo *t = load(NULL);
    int span = ndc__topo_node_span(t);
    ndc__topo_free(t);
    (void)n;
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, span, 0);
    th_expect(ndc__numa_check(&o), -ENODEV);
    o = numa_opts(NDC_NUMA_INTERLEAVE, 0, 1ull << (span < 63 ? span : 63));
    if (span < 63)
        th_expect(ndc__numa_check(&o), -ENODEV);
    o = numa_opts(77, 0, 0);
    th_expect(ndc__numa_check(&o), -EINVAL);
    th_ok(ndc__numa_check(NULL));
}

/* Needs two nodes: bind to the second and see every page there; interleave
 * over two and see them split; a receiver on node B pulling pages touched on
 * node A. */
Test(numa_area, bind_to_a_remote_node)
{
    machine_nodes(2);
    struct topo_desc *d = NULL;
    th_ok(topo_describe(NULL, &d));
    int second = -1, seen = 0;
    for (size_t i = 0; i < d->nitems; i++)
        if (d->items[i].kind == TOPO_NODE && ++seen == 2)
            second = d->items[i].os_index;
    topo_desc_free(d);
    struct area a = area_new();
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, second, 0);
    place_or_skip(&a, &o);
    memset(a.p, 1, a.len);
    uint64_t counts[64];
    cr_assert(ndc__numa_where_area(a.p, a.len, counts, 64) > second);
    cr_expect_eq(counts[second], AREA_PAGES);
    area_free(&a);
}

Test(numa_area, interleave_splits_pages_evenly)
{
    int n = machine_nodes(2);
    struct area a = area_new();
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_INTERLEAVE, 0, 0);
    place_or_skip(&a, &o);
    memset(a.p, 1, a.len);
    uint64_t counts[64];
    cr_assert(ndc__numa_where_area(a.p, a.len, counts, 64) > 0);
    for (int i = 0; i < 64; i++)
        if (counts[i])
            cr_expect(counts[i] + 1 >= (uint64_t)(AREA_PAGES / n) && counts[i] <= (uint64_t)(AREA_PAGES / n + 1),
                      "node %d holds %llu of %d pages over %d nodes", i,
                      (unsigned long long)counts[i], AREA_PAGES, n);
    area_free(&a);
}

Test(numa_area, near_receiver_migrates_from_a_remote_node)
{
    machine_nodes(2);
    struct topo_desc *d = NULL;
    th_ok(topo_describe(NULL, &d));
    int nodeA = -1, nodeB = -1;
    char cpusB[128] = "";
    for (size_t i = 0; i < d->nitems; i++)
        if (d->items[i].kind == TOPO_NODE && d->items[i].npus > 0) {
            if (nodeA < 0) {
                nodeA = d->items[i].os_index;
            } else if (nodeB < 0 && d->items[i].os_index != nodeA) {
                nodeB = d->items[i].os_index;
                snprintf(cpusB, sizeof cpusB, "%s", d->items[i].cpus);
            }
        }
    topo_desc_free(d);
    if (nodeB < 0)
        cr_skip_test("needs two nodes with CPUs");
    struct area a = area_new();
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_PREFERRED, nodeA, 0);
    place_or_skip(&a, &o);
    memset(a.p, 1, a.len);
    /* the receiver runs on node B */
    int cpu = atoi(cpusB);
    th_ok(ndc_pin_cpu(cpu));
    th_ok(ndc__numa_bind_here(a.p, a.len));
    uint64_t counts[64];
    cr_assert(ndc__numa_where_area(a.p, a.len, counts, 64) > 0);
    cr_expect_eq(counts[nodeB], AREA_PAGES, "pages moved to node %d: %llu (node %d keeps %llu)",
                 nodeB, (unsigned long long)counts[nodeB], nodeA,
                 (unsigned long long)counts[nodeA]);
    area_free(&a);
}

/* ---- numa_chan: the public API ---------------------------------------------- */

static ndc_chan *chan_or_skip(const char *name, const struct ndc_chan_opts *o)
{
    ndc_chan *ch = NULL;
    int r = ndc_create(&ch, name, o);
    if (r == -ENOTSUP)
        cr_skip_test("placement not available here: %s", ndc_last_error());
    cr_assert_eq(r, 0, "ndc_create = %d (%s): %s", r, ndc_strerror(r), ndc_last_error());
    return ch;
}

static void send_bytes(ndc_chan *ch, int64_t n, uint64_t seed)
{
    struct ndc_array a;
    th_ok(ndc_array_init(&a, NDC_U8, 1, &n, NULL));
    th_ok(ndc_reserve(ch, &a, NDC_FOREVER));
    th_fill(a.data, (size_t)n, seed);
    th_ok(ndc_commit(ch, &a));
}

Test(numa_chan, create_rejects_bad_placement)
{
    machine_nodes(1);
    struct ndc__topo *t = load(NULL);
    int span = ndc__topo_node_span(t);
    ndc__topo_free(t);
    ndc_chan *ch = (ndc_chan *)0x1;
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, span + 3, 0);
    o.slot_bytes = 1 << 20;
    th_expect(ndc_create(&ch, NULL, &o), -ENODEV);
    cr_expect_eq(ch, (ndc_chan *)0x1, "*ch written on failure");
}

Test(numa_chan, typos_are_einval_with_or_without_hwloc)
{
    ndc_chan *ch = (ndc_chan *)0x1;
    struct ndc_chan_opts o = numa_opts(9, 0, 0);
    th_expect(ndc_create(&ch, NULL, &o), -EINVAL);
    o = numa_opts(NDC_NUMA_FIRST_TOUCH, 0, 0x1);
    th_expect(ndc_create(&ch, NULL, &o), -EINVAL);
    o = numa_opts(NDC_NUMA_BIND, -2, 0);
    th_expect(ndc_create(&ch, NULL, &o), -EINVAL);
    cr_expect_eq(ch, (ndc_chan *)0x1, "*ch written on failure");
}

Test(numa_chan, without_hwloc_placement_is_enotsup)
{
    struct ndc__topo *t = NULL;
    if (ndc__topo_load(&t, "pu:2") == 0) {
        ndc__topo_free(t);
        cr_skip_test("this build has hwloc: nothing to check here");
    }
    ndc_chan *ch = NULL;
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, 0, 0);
    th_expect(ndc_create(&ch, NULL, &o), -ENOTSUP);
    o = numa_opts(NDC_NUMA_FIRST_TOUCH, 0, 0);
    o.slot_bytes = 1 << 16;
    th_ok(ndc_create(&ch, NULL, &o));
    uint64_t counts[4];
    int p, c;
    th_expect(ndc_numa_where(ch, counts, 4), -ENOTSUP);
    th_expect(ndc_numa_pin_near(ch), -ENOTSUP);
    th_expect(ndc_suggest_cpus(&p, &c), -ENOTSUP);
    ndc_free(ch);
}

Test(numa_chan, bound_channel_reports_its_pages, .timeout = 30)
{
    machine_nodes(1);
    int node = first_node();
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, node, 0);
    o.slots = 2;
    o.slot_bytes = 1 << 20;
    ndc_chan *ch = chan_or_skip(NULL, &o);
    uint64_t counts[64];
    int span = ndc_numa_where(ch, counts, 64);
    cr_assert(span > node, "ndc_numa_where = %d (%s): %s", span, ndc_strerror(span), ndc_last_error());
    uint64_t before = counts[node];
    send_bytes(ch, 256 << 10, 1);
    th_ok(ndc_numa_where(ch, counts, 64) > 0 ? 0 : -1);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    cr_expect_geq(counts[node] - before, (256u << 10) / pg, "256 KiB sent, %llu pages on node %d",
                  (unsigned long long)(counts[node] - before), node);
    for (int i = 0; i < 64; i++)
        if (i != node)
            cr_expect_eq(counts[i], 0, "page on node %d under BIND %d", i, node);
    /* pin near: the thread lands on the node's CPUs */
    int r = ndc_numa_pin_near(ch);
    cr_expect_eq(r, node, "ndc_numa_pin_near = %d (%s): %s", r, ndc_strerror(r), ndc_last_error());
    ndc_free(ch);
}

Test(numa_chan, populate_lands_on_the_bound_node, .timeout = 30)
{
    /* the segment places before NDC_POPULATE faults every page in */
    machine_nodes(1);
    int node = first_node();
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_BIND, node, 0);
    o.slots = 2;
    o.slot_bytes = 256 << 10;
    o.flags = NDC_POPULATE;
    ndc_chan *ch = chan_or_skip(NULL, &o);
    struct ndc__payload pl;
    ndc__chan_payload(ch, &pl);
    uint64_t counts[64];
    cr_assert(ndc_numa_where(ch, counts, 64) > node, "%s", ndc_last_error());
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    cr_expect_eq(counts[node], pl.len / pg, "populated %llu of %zu payload pages on node %d",
                 (unsigned long long)counts[node], pl.len / pg, node);
    ndc_free(ch);
}

struct reader_arg { const char *name; int node; };

static int reader_reports(void *p)
{
    const struct reader_arg *ra = p;
    ndc_chan *ch;
    if (ndc_open(&ch, ra->name, NDC_RDONLY))
        return 10;
    uint64_t counts[64];
    if (ndc_numa_where(ch, counts, 64) <= ra->node)
        return 11;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    int ok = counts[ra->node] >= (128u << 10) / pg;
    ndc_free(ch);
    return ok ? 0 : 12;
}

Test(numa_chan, another_process_sees_where_the_pages_are, .timeout = 30)
{
    machine_nodes(1);
    int node = first_node();
    const char *name = th_unique_name("numa-where");
    char buf[128];
    snprintf(buf, sizeof buf, "%s", name);
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_PREFERRED, node, 0);
    o.slots = 2;
    o.slot_bytes = 1 << 20;
    ndc_chan *ch = chan_or_skip(buf, &o);
    send_bytes(ch, 128 << 10, 2);
    struct reader_arg ra = { buf, node };
    pid_t pid = th_fork(reader_reports, &ra);
    int st = th_wait(pid, 10000);
    cr_expect_eq(st, 0, "reader process: %d (10 open, 11 where, 12 count)", st);
    ndc_free(ch);
    ndc_unlink(buf);
}

static int receive_one(void *p)
{
    ndc_chan *ch = p;
    struct ndc_array a;
    if (ndc_acquire(ch, &a, 5000000000ll))
        return 10;
    int ok = th_check(a.data, ndc_array_nbytes(&a), 3);
    ndc_release(ch, &a);
    return ok ? 0 : 11;
}

Test(numa_chan, near_receiver_binds_at_first_receive, .timeout = 30)
{
    machine_nodes(1);
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_NEAR_RECEIVER, 0, 0);
    o.slots = 2;
    o.slot_bytes = 1 << 20;
    ndc_chan *ch = chan_or_skip(NULL, &o);
    struct ndc__payload pl;
    ndc__chan_payload(ch, &pl);
    uint32_t pol;
    uint64_t nodes;
    th_ok(ndc__numa_area_policy(pl.base, &pol, &nodes));
    cr_expect_eq(pol, NDC_NUMA_FIRST_TOUCH, "nothing decided before a receiver");
    send_bytes(ch, 64 << 10, 3);
    pid_t pid = th_fork(receive_one, ch);
    cr_assert_eq(th_wait(pid, 10000), 0);
    th_ok(ndc__numa_area_policy(pl.base, &pol, &nodes));
    cr_expect_eq(pol, NDC_NUMA_BIND, "bound once the receiver came");
    cr_expect_neq(nodes, 0);
    ndc_free(ch);
}

Test(numa_chan, pin_near_untouched_first_touch_channel)
{
    machine_nodes(1);
    struct ndc_chan_opts o = numa_opts(NDC_NUMA_FIRST_TOUCH, 0, 0);
    o.slot_bytes = 1 << 20;
    ndc_chan *ch = chan_or_skip(NULL, &o);
    th_expect(ndc_numa_pin_near(ch), -ENODEV);     /* nothing to be near yet */
    ndc_free(ch);
}

Test(numa_chan, pin_and_suggest_cpus)
{
    cpu_set_t saved;
    cr_assert_eq(sched_getaffinity(0, sizeof saved, &saved), 0);
    th_expect(ndc_pin_cpu(-1), -EINVAL);
    th_expect(ndc_pin_cpu(CPU_SETSIZE), -EINVAL);
    int cpu = sched_getcpu();
    th_ok(ndc_pin_cpu(cpu));
    cpu_set_t now;
    cr_assert_eq(sched_getaffinity(0, sizeof now, &now), 0);
    cr_expect_eq(CPU_COUNT(&now), 1);
    cr_expect(CPU_ISSET(cpu, &now));
    cr_assert_eq(sched_setaffinity(0, sizeof saved, &saved), 0);

    int p = -5, c = -5;
    int r = ndc_suggest_cpus(&p, &c);
    if (r == -ENOTSUP)
        cr_skip_test("built without hwloc: %s", ndc_last_error());
    if (CPU_COUNT(&saved) < 2) {
        th_expect(r, -ENODEV);
        return;
    }
    th_ok(r);
    cr_expect_neq(p, c);
    cr_expect(CPU_ISSET(p, &saved) && CPU_ISSET(c, &saved), "suggested %d,%d outside our CPUs", p, c);
}

/* ---- found by review ------------------------------------------------------ */

/* A receive-only attach (ndchan-stat, ndchan-topo --channel) decided where a
 * NEAR_RECEIVER channel's memory went, for good. Only a receive does now. */
Test(numa_review, observers_do_not_place_near_receiver, .timeout = 20)
{
    struct ndc_chan_opts o = {.slots = 2, .slot_bytes = 1 << 20, .numa_policy = NDC_NUMA_NEAR_RECEIVER};
    const char *name = th_unique_name("near");
    ndc_chan *tx, *obs;
    int r = ndc_create(&tx, name, &o);
    if (r == -ENOTSUP)
        cr_skip_test("placement not available here: %s", ndc_last_error());
    th_ok(r);
    struct ndc__ctrl *c = mmap(NULL, sizeof *c, PROT_READ, MAP_SHARED, ndc_fd(tx), 0);
    cr_assert_neq(c, MAP_FAILED);
    th_ok(ndc_open(&obs, name, NDC_RDONLY));
    struct ndc_stat st;
    th_ok(ndc_stat(obs, &st));
    cr_assert_eq(atomic_load(&c->numa_resolved), 0, "an observer's attach placed the payload");
    struct ndc_array a = {.dtype = NDC_U8, .ndim = 1, .shape = {64}};
    th_ok(ndc_reserve(tx, &a, 0));
    th_ok(ndc_commit(tx, &a));
    th_ok(ndc_acquire(obs, &a, 0));   /* now it receives: now it decides */
    cr_assert_eq(atomic_load(&c->numa_resolved), 1, "the first receive did not place the payload");
    th_ok(ndc_release(obs, &a));
    munmap(c, sizeof *c);
    ndc_free(obs);
    ndc_free(tx);
    ndc_unlink(name);
}

/* hugetlbfs keeps no shared memory policy: a placement there bound only the
 * creator's mapping. With a policy, NDC_HUGEPAGES takes THP or fails. */
Test(numa_review, hugepages_with_a_policy_never_use_hugetlb, .timeout = 20)
{
    struct ndc_chan_opts o = {.slots = 1, .slot_bytes = 2 << 20, .flags = NDC_HUGEPAGES,
                              .numa_policy = NDC_NUMA_BIND, .numa_node = 0};
    ndc__topo_free(load(NULL));   /* skips when this build has no hwloc: no policy at all */
    char thp[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
    if (f) {
        if (!fgets(thp, sizeof thp, f))
            thp[0] = 0;
        fclose(f);
    }
    int thp_on = thp[0] && !strstr(thp, "[never]") && !strstr(thp, "[deny]");
    uint64_t counts[1];
    int no_hwloc = ndc_numa_where(NULL, counts, 1) == -ENOTSUP;   /* built without: no policy at all */
    ndc_chan *ch;
    int r = ndc_create(&ch, NULL, &o);
    if (no_hwloc) {
        cr_assert_eq(r, -ENOTSUP, "got %d (%s): %s", r, ndc_strerror(r), ndc_last_error());
        cr_assert(strstr(ndc_last_error(), "hwloc"), "the reason is missing: %s", ndc_last_error());
    } else if (thp_on) {
        th_ok(r);
        ndc_free(ch);
    } else {
        cr_assert_eq(r, -ENOTSUP, "got %d (%s): %s", r, ndc_strerror(r), ndc_last_error());
        cr_assert(strstr(ndc_last_error(), "hugetlb"), "the reason is missing: %s", ndc_last_error());
    }
}
