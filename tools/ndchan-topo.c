/* ndchan-topo: the machine as a pipeline sees it, and where to run one.
 *
 *   ndchan-topo                     packages, NUMA nodes, shared caches, cores,
 *                                   node distances, and a suggested placement
 *   ndchan-topo --json              the same for scripts
 *   ndchan-topo --channel NAME      where that channel's payload pages are now
 *   ndchan-topo --input DESC        another machine: an hwloc synthetic string
 *                                   ("pack:2 numa:2 core:4 pu:2") or an XML
 *                                   file from `lstopo machine.xml`
 *
 * Exit status: 0, 1 on a failure (the library's own words on stderr), 2 on
 * a usage error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ndchan.h"
#include "topo.h"

/* The CPUs this process may run on, as a list ("0-3,8"), for the suggestion. */
static const char *my_cpus(char *buf, size_t n)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0)
        return NULL;
    size_t len = 0;
    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE && len + 16 < n; c++) {
        if (!CPU_ISSET(c, &set))
            continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set))
            e++;
        len += (size_t)snprintf(buf + len, n - len, len ? ",%d" : "%d", c);
        if (e > c)
            len += (size_t)snprintf(buf + len, n - len, "-%d", e);
        c = e;
    }
    return buf;
}

/* ---- the machine ----------------------------------------------------------- */

struct advice {
    int have_pair;
    struct ndc_cpu_pair pair;
    int pair_err;
};

static const char *node_cpus(const struct topo_desc *d, int node)
{
    for (size_t i = 0; i < d->nitems; i++)
        if (d->items[i].kind == TOPO_NODE && d->items[i].os_index == node)
            return d->items[i].cpus;
    return "?";
}

/* "0-3" from core numbers a..b, or "0,2,5" */
static void print_core_run(const struct topo_item *it, size_t n)
{
    for (size_t i = 0; i < n; ) {
        size_t j = i;
        while (j + 1 < n && it[j + 1].os_index == it[j].os_index + 1)
            j++;
        printf("%s%d", i ? "," : "", it[i].os_index);
        if (j > i)
            printf("-%d", it[j].os_index);
        i = j + 1;
    }
}

static void print_human(const struct topo_desc *d, const struct advice *a, const char *source)
{
    char b1[32];
    printf("%s: %d package%s, %d NUMA node%s, %d cores, %d CPUs, %s memory (hwloc %s)\n\n",
           source, d->packages, d->packages == 1 ? "" : "s", d->nodes, d->nodes == 1 ? "" : "s",
           d->cores, d->pus, cli_bytes(d->memory, b1, sizeof b1), d->version);
    for (size_t i = 1; i < d->nitems; i++) {   /* item 0 is the machine: said above */
        const struct topo_item *it = &d->items[i];
        int indent = 2 * (it->depth - 1);
        char label[64];
        switch (it->kind) {
        case TOPO_PACKAGE:
            snprintf(label, sizeof label, "package %d", it->os_index);
            break;
        case TOPO_GROUP:
            snprintf(label, sizeof label, "group");
            break;
        case TOPO_NODE:
            snprintf(label, sizeof label, "node %d  %s%s", it->os_index,
                     cli_bytes(it->bytes, b1, sizeof b1), it->npus ? "" : "  (no CPU)");
            break;
        case TOPO_CACHE:
            snprintf(label, sizeof label, "L%d %s  shared by %d cores", it->level,
                     cli_bytes(it->bytes, b1, sizeof b1), it->ncores);
            break;
        case TOPO_CORE: {
            size_t n = 1;
            while (i + n < d->nitems && d->items[i + n].kind == TOPO_CORE &&
                   d->items[i + n].depth == it->depth)
                n++;
            printf("%*s%s ", indent, "", n == 1 ? "core" : "cores");
            print_core_run(it, n);
            if (it->npus > 1)
                printf("  (%d threads each)", it->npus);
            putchar('\n');
            i += n - 1;
            continue;
        }
        default:
            continue;
        }
        printf("%*s%-*s cpus %s\n", indent, "", 40 - indent, label, it->cpus);
    }
    if (d->ndist > 1) {
        printf("\nnode distances (relative latency, 10 = local):\n      ");
        for (int j = 0; j < d->ndist; j++)
            printf("%5d", d->dist_node[j]);
        putchar('\n');
        for (int i = 0; i < d->ndist; i++) {
            printf("  %4d", d->dist_node[i]);
            for (int j = 0; j < d->ndist; j++)
                printf("%5" PRIu64, d->dist[i * d->ndist + j]);
            putchar('\n');
        }
    }

    printf("\nsuggested placement for a producer -> consumer pipeline:\n");
    if (!a->have_pair) {
        printf("  none: %s (%s)\n", ndc_strerror(a->pair_err), ndc_last_error());
        return;
    }
    const struct ndc_cpu_pair *p = &a->pair;
    printf("  producer    cpu %d\n  consumer    cpu %d\n", p->producer, p->consumer);
    if (!strcmp(p->shared, "core"))
        printf("  why         the only core: two hardware threads of it\n");
    else if (p->node >= 0)
        printf("  why         different cores sharing the %s; node %d is local to both\n",
               p->shared, p->node);
    else
        printf("  why         different cores sharing the %s; no node is local to both\n",
               p->shared);
    if (d->nodes <= 1) {
        printf("  channel     default placement (first touch): one NUMA node, nothing to choose\n");
    } else if (p->node >= 0) {
        printf("  channel     .numa_policy = NDC_NUMA_BIND, .numa_node = %d\n", p->node);
        printf("              (or NDC_NUMA_NEAR_RECEIVER to follow the consumer)\n");
    } else {
        printf("  channel     .numa_policy = NDC_NUMA_NEAR_RECEIVER (the pair spans nodes)\n");
    }
    printf("  run         taskset -c %d <producer> & taskset -c %d <consumer>\n",
           p->producer, p->consumer);
    if (d->nodes > 1 && p->node >= 0)
        printf("              or ndc_pin_cpu(%d) / ndc_pin_cpu(%d); a process that only knows the\n"
               "              channel: ndc_numa_pin_near() (cpus %s)\n",
               p->producer, p->consumer, node_cpus(d, p->node));
    else
        printf("              or ndc_pin_cpu(%d) / ndc_pin_cpu(%d) in each process\n",
               p->producer, p->consumer);
}

static const char *kind_name(int k)
{
    switch (k) {
    case TOPO_MACHINE: return "machine";
    case TOPO_PACKAGE: return "package";
    case TOPO_GROUP:   return "group";
    case TOPO_NODE:    return "node";
    case TOPO_CACHE:   return "cache";
    case TOPO_CORE:    return "core";
    default:              return "?";
    }
}

static void print_json(const struct topo_desc *d, const struct advice *a, const char *source)
{
    printf("{\"source\":");
    cli_json_str(source);
    printf(",\"hwloc\":");
    cli_json_str(d->version);
    printf(",\"packages\":%d,\"nodes\":%d,\"cores\":%d,\"pus\":%d,\"memory\":%" PRIu64,
           d->packages, d->nodes, d->cores, d->pus, d->memory);
    printf(",\n \"numa_nodes\":[");
    int first = 1;
    for (size_t i = 0; i < d->nitems; i++) {
        const struct topo_item *it = &d->items[i];
        if (it->kind != TOPO_NODE)
            continue;
        printf("%s{\"node\":%d,\"memory\":%" PRIu64 ",\"cores\":%d,\"pus\":%d,\"cpus\":",
               first ? "" : ",", it->os_index, it->bytes, it->ncores, it->npus);
        cli_json_str(it->cpus);
        putchar('}');
        first = 0;
    }
    printf("],\n \"tree\":[");
    for (size_t i = 0; i < d->nitems; i++) {
        const struct topo_item *it = &d->items[i];
        printf("%s\n  {\"kind\":\"%s\",\"depth\":%d", i ? "," : "", kind_name(it->kind), it->depth);
        if (it->os_index >= 0)
            printf(",\"os_index\":%d", it->os_index);
        if (it->level)
            printf(",\"level\":%d", it->level);
        if (it->bytes)
            printf(",\"bytes\":%" PRIu64, it->bytes);
        printf(",\"cores\":%d,\"pus\":%d,\"cpus\":", it->ncores, it->npus);
        cli_json_str(it->cpus);
        putchar('}');
    }
    printf("],\n \"distances\":");
    if (d->ndist > 0) {
        printf("{\"nodes\":[");
        for (int i = 0; i < d->ndist; i++)
            printf("%s%d", i ? "," : "", d->dist_node[i]);
        printf("],\"latency\":[");
        for (int i = 0; i < d->ndist; i++) {
            printf("%s[", i ? "," : "");
            for (int j = 0; j < d->ndist; j++)
                printf("%s%" PRIu64, j ? "," : "", d->dist[i * d->ndist + j]);
            putchar(']');
        }
        printf("]}");
    } else {
        printf("null");
    }
    printf(",\n \"suggestion\":");
    if (!a->have_pair) {
        printf("{\"error\":");
        cli_json_str(ndc_strerror(a->pair_err));
        putchar('}');
    } else {
        const struct ndc_cpu_pair *p = &a->pair;
        const char *pol = d->nodes <= 1 ? "first_touch" : p->node >= 0 ? "bind" : "near_receiver";
        printf("{\"producer_cpu\":%d,\"consumer_cpu\":%d,\"shared\":", p->producer, p->consumer);
        cli_json_str(p->shared);
        printf(",\"node\":%d,\"numa_policy\":\"%s\"", p->node, pol);
        if (!strcmp(pol, "bind"))
            printf(",\"numa_node\":%d", p->node);
        putchar('}');
    }
    printf("}\n");
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1)
            break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb)
            free(buf);
        buf = nb;
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

static int show_machine(const char *input, int json)
{
    char *xml = NULL;
    const char *desc = input;
    if (input && access(input, R_OK) == 0) {   /* a file: hwloc XML */
        if (!(xml = slurp(input))) {
            fprintf(stderr, "%s: %s: %s\n", cli_prog(), input, strerror(errno));
            return 1;
        }
        desc = xml;
    }
    struct topo_desc *d = NULL;
    int r = topo_describe(desc, &d);
    if (r) {
        free(xml);
        return cli_fail(r, input ? "loading the topology" : "reading this machine's topology");
    }
    struct advice a = { 0 };
    char cpus[1024];
    /* this machine: within the CPUs we may use (taskset, cgroup) */
    r = ndc_topo_suggest(desc, input ? NULL : my_cpus(cpus, sizeof cpus), &a.pair);
    a.have_pair = r == 0;
    a.pair_err = r;
    free(xml);
    if (json)
        print_json(d, &a, input ? input : "this machine");
    else
        print_human(d, &a, input ? input : "this machine");
    topo_desc_free(d);
    return 0;
}

/* ---- a channel ------------------------------------------------------------ */

static const char *policy_name(uint32_t p)
{
    switch (p) {
    case NDC_NUMA_FIRST_TOUCH: return "first_touch";
    case NDC_NUMA_BIND:        return "bind";     /* or preferred: the kernel's view */
    case NDC_NUMA_INTERLEAVE:  return "interleave";
    default:                   return "?";
    }
}

static int show_channel(const char *name, int json)
{
    ndc_chan *ch;
    int r = ndc_open(&ch, name, NDC_RDONLY);
    if (r)
        return cli_fail(r, name);
    struct ndc_stat st;
    if ((r = ndc_stat(ch, &st))) {
        ndc_free(ch);
        return cli_fail(r, "ndc_stat");
    }
    uint64_t counts[1024];
    int span = ndc_numa_where(ch, counts, 1024);
    if (span < 0) {
        ndc_free(ch);
        return cli_fail(span, "where are the pages");
    }
    if (span > 1024)
        span = 1024;
    uint32_t pol = 0;
    uint64_t nodes = 0;
    int pr = ndc_numa_policy(ch, &pol, &nodes);
    /* every slot's payload starts on a page: the pages the payload spans */
    uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t total = st.slots * ((st.slot_bytes + pg - 1) / pg), resident = 0;
    int best = -1;
    for (int i = 0; i < span; i++) {
        resident += counts[i];
        if (counts[i] && (best < 0 || counts[i] > counts[best]))
            best = i;
    }
    char b1[32], b2[32];
    if (json) {
        printf("{\"channel\":");
        cli_json_str(name);
        printf(",\"slots\":%u,\"slot_bytes\":%" PRIu64 ",\"attached\":%u,\"page_size\":%" PRIu64
               ",\"pages\":%" PRIu64 ",\"resident\":%" PRIu64 ",\"policy\":",
               st.slots, st.slot_bytes, st.attached, pg, total, resident);
        if (pr == 0) {
            printf("{\"kind\":\"%s\",\"nodes\":[", policy_name(pol));
            int f = 1;
            for (int i = 0; i < 64; i++)
                if (nodes >> i & 1) {
                    printf("%s%d", f ? "" : ",", i);
                    f = 0;
                }
            printf("]}");
        } else {
            printf("null");
        }
        printf(",\"per_node\":[");
        int f = 1;
        for (int i = 0; i < span; i++)
            if (counts[i]) {
                printf("%s{\"node\":%d,\"pages\":%" PRIu64 "}", f ? "" : ",", i, counts[i]);
                f = 0;
            }
        printf("]}\n");
    } else {
        printf("channel %s: %u slots x %s, %u processes attached (this one included)\n", name, st.slots,
               cli_bytes(st.slot_bytes, b1, sizeof b1), st.attached);
        if (pr == 0) {
            printf("  policy     %s", pol == NDC_NUMA_BIND ? "bind/preferred" : policy_name(pol));
            for (int i = 0, f = 1; i < 64; i++)
                if (nodes >> i & 1) {
                    printf("%s%d", f ? " node " : ",", i);
                    f = 0;
                }
            putchar('\n');
        }
        printf("  resident   %" PRIu64 " of %" PRIu64 " pages (%s of %s)\n", resident, total,
               cli_bytes(resident * pg, b1, sizeof b1), cli_bytes(total * pg, b2, sizeof b2));
        for (int i = 0; i < span; i++)
            if (counts[i])
                printf("  node %-5d %" PRIu64 " pages  %5.1f%%\n", i, counts[i],
                       100.0 * (double)counts[i] / (double)resident);
        if (best >= 0 && span > 1)
            printf("  advice     run the consumer near node %d (ndc_numa_pin_near, or numactl -N %d)\n",
                   best, best);
        else if (best < 0)
            printf("  advice     nothing touched yet: pages land where they are first written%s\n",
                   pr == 0 && pol != NDC_NUMA_FIRST_TOUCH ? ", within the policy's nodes" : "");
    }
    ndc_free(ch);
    return 0;
}

static const char help[] =
    "usage: ndchan-topo [--json] [--input DESC|FILE.xml] | [--json] --channel NAME\n"
    "Shows the machine (packages, NUMA nodes, shared caches, cores, node\n"
    "distances) and a producer/consumer placement; with --channel, where a\n"
    "channel's payload pages are now.\n"
    "  -j, --json          one JSON object on stdout\n"
    "  -c, --channel NAME  a named channel's pages per node, and its policy\n"
    "  -i, --input DESC    another machine: an hwloc synthetic description\n"
    "                      (\"pack:2 numa:2 core:4 pu:2\") or an XML file written\n"
    "                      by `lstopo file.xml` there\n"
    "  -h, --help          this text\n"
    "Exit status: 0, 1 on a failure, 2 on a usage error.\n";

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "json", no_argument, NULL, 'j' },
        { "channel", required_argument, NULL, 'c' },
        { "input", required_argument, NULL, 'i' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    cli_init("ndchan-topo", help);
    int json = 0, opt;
    const char *channel = NULL, *input = NULL;
    while ((opt = cli_getopt(argc, argv, "jc:i:h", longopts)) != -1) {
        switch (opt) {
        case 'j': json = 1; break;
        case 'c': channel = optarg; break;
        case 'i': input = optarg; break;
        }
    }
    cli_positional(argc, argv, 0, 0);
    if (channel && input)
        cli_usage("--channel and --input exclude each other");
    return channel ? show_channel(channel, json) : show_machine(input, json);
}
