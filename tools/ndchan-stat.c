/* ndchan-stat: the channels on this machine and what they are doing.
 *
 *   ndchan-stat [--json] NAME                  one channel, once
 *   ndchan-stat --watch [-i S] [-n N] NAME     a live view, refreshed in place
 *   ndchan-stat --list [--json]                every ndchan channel in /dev/shm
 *   ndchan-stat --gc [--dry-run] [NAME...]     remove stale channels
 *
 * It attaches receive-only (it never sends or receives, and its mapping of
 * the payloads is read-only), so it sees what ndc_stat sees. A channel is
 * stale when no process but ndchan-stat itself is attached: every process
 * that used it is gone, and only its name keeps it (a producer that was
 * killed before ndc_unlink; a run that did not clean up). --gc removes
 * exactly those, never a channel that a live process holds. Files of the
 * shm directory that are not ndchan channels are left alone, silently.
 *
 * A broadcast channel's subscribers are listed one by one (ndc_subscribers):
 * pid, position (the seq of the next array it takes), lag (arrays committed
 * it has not taken), loans, received and dropped (skipped under the latest
 * policy); ndchan-stat itself never subscribes. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ndchan.h"

#define SHM_DIR "/dev/shm"

static const char help[] =
    "usage: ndchan-stat [--json] NAME\n"
    "       ndchan-stat --watch [--interval S] [--count N] [--json] NAME\n"
    "       ndchan-stat --list [--json]\n"
    "       ndchan-stat --gc [--dry-run] [--json] [NAME...]\n"
    "The state of ndchan channels: slots free, ready and on loan, processes\n"
    "attached, whether the consumer is idle or the producer held back; for a\n"
    "broadcast channel, each subscriber: pid, position (the seq of the next array\n"
    "it takes), lag (arrays it has not taken yet), loans, received, dropped.\n"
    "  -w, --watch         a live view: arrays/s and GB/s, slots as a bar,\n"
    "                      receivers idle or busy, senders blocked, subscribers\n"
    "                      with their arrays/s (Ctrl-C ends it)\n"
    "  -i, --interval S    seconds between refreshes, 0.05..3600 (default 1)\n"
    "  -n, --count N       stop after N refreshes (default: until the stream\n"
    "                      ends and every other process has detached)\n"
    "  -l, --list          every ndchan channel in " SHM_DIR ": geometry, processes\n"
    "                      attached, and whether it is live, closed or stale\n"
    "  -g, --gc            remove stale channels (no process attached any more);\n"
    "                      with NAMEs, only those of them that are stale\n"
    "      --dry-run       with --gc: say what would be removed, remove nothing\n"
    "  -j, --json          JSON on stdout (--watch: one object per line)\n"
    "  -h, --help          this text\n"
    "Exit status: 0, 1 on a failure, 2 on a usage error.\n";

struct snap {
    struct ndc_stat s;
    unsigned others;        /* processes attached besides ndchan-stat */
    double t;
    int nsubs;              /* broadcast: subscribers listed in subs */
    struct ndc_sub_stat subs[NDC_MAX_PEERS];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int take(ndc_chan *ch, struct snap *p)
{
    int r = ndc_stat(ch, &p->s);
    if (r)
        return r;
    p->others = p->s.attached > 0 ? p->s.attached - 1 : 0;   /* not counting ourselves */
    p->t = now();
    p->nsubs = 0;
    if (p->s.broadcast) {
        r = ndc_subscribers(ch, p->subs, NDC_MAX_PEERS);
        if (r < 0)
            return r;
        p->nsubs = r < NDC_MAX_PEERS ? r : NDC_MAX_PEERS;
    }
    return 0;
}

/* The received count of subscriber pid in an earlier snapshot; -1: not there. */
static int64_t received_before(const struct snap *p, int32_t pid)
{
    for (int i = 0; i < p->nsubs; i++)
        if (p->subs[i].pid == pid)
            return (int64_t)p->subs[i].received;
    return -1;
}

/* The subscribers as a table, one line each (prev: with arrays/s since
 * then). Returns the lines printed. */
static int print_subs(const struct snap *p, const struct snap *prev)
{
    if (!p->nsubs)
        return 0;
    printf("    %-8s %10s %8s %5s %10s %10s%s\n", "PID", "POSITION", "LAG", "LOANS", "RECEIVED",
           "DROPPED", prev ? "   ARRAYS/S" : "");
    for (int i = 0; i < p->nsubs; i++) {
        const struct ndc_sub_stat *u = &p->subs[i];
        printf("    %-8d %10" PRIu64 " %8" PRIu64 " %5u %10" PRIu64 " %10" PRIu64, (int)u->pid,
               u->position, u->lag, u->loans, u->received, u->dropped);
        if (prev) {
            int64_t before = received_before(prev, u->pid);
            double dt = p->t - prev->t;
            if (before >= 0 && dt > 0 && u->received >= (uint64_t)before)
                printf(" %10.1f", (double)(u->received - (uint64_t)before) / dt);
            else
                printf(" %10s", "-");
        }
        putchar('\n');
    }
    return 1 + p->nsubs;
}

static const char *state_of(const struct ndc_stat *s)
{
    return s->stale ? "stale" : s->closed ? "closed" : "live";
}

/* ---- one channel ---------------------------------------------------------- */

static void print_text(const char *name, const struct snap *p)
{
    const struct ndc_stat *s = &p->s;
    char b[32];
    printf("%s: %u slots of %s: %u free, %u ready, %u on loan; %u processes attached%s\n", name,
           s->slots, cli_bytes(s->slot_bytes, b, sizeof b), s->free, s->ready, s->loaned,
           p->others, s->stale ? "; STALE (every process that used it is gone)"
                      : s->closed ? "; CLOSED (end of stream)" : "");
    printf("  sent %" PRIu64 " arrays (%s), received %" PRIu64 "%s\n", s->sent,
           cli_bytes(s->bytes_sent, b, sizeof b), s->received,
           s->broadcast ? " (by the subscribers attached, summed)" : "");
    if (s->broadcast)
        printf("  broadcast: %u subscriber%s, %" PRIu64 " array%s dropped\n", s->subscribers,
               s->subscribers == 1 ? "" : "s", s->dropped, s->dropped == 1 ? "" : "s");
    if (s->receivers_waiting)
        printf("  %u receiver(s) asleep on an empty channel: the consumer is idle\n",
               s->receivers_waiting);
    if (s->senders_waiting)
        printf("  %u sender(s) asleep on a full channel: backpressure, the consumer is behind\n",
               s->senders_waiting);
    print_subs(p, NULL);
}

static void json_fields(const struct snap *p)
{
    const struct ndc_stat *s = &p->s;
    printf("\"state\":\"%s\",\"slots\":%u,\"slot_bytes\":%" PRIu64 ",\"free\":%u,\"ready\":%u,"
           "\"loaned\":%u,\"attached\":%u,\"receivers_waiting\":%u,\"senders_waiting\":%u,"
           "\"closed\":%s,\"stale\":%s,\"sent\":%" PRIu64 ",\"received\":%" PRIu64
           ",\"bytes_sent\":%" PRIu64,
           state_of(s), s->slots, s->slot_bytes, s->free, s->ready, s->loaned, p->others,
           s->receivers_waiting, s->senders_waiting, s->closed ? "true" : "false",
           s->stale ? "true" : "false", s->sent, s->received, s->bytes_sent);
    printf(",\"broadcast\":%s", s->broadcast ? "true" : "false");
    if (!s->broadcast)
        return;
    printf(",\"dropped\":%" PRIu64 ",\"subscribers\":[", s->dropped);
    for (int i = 0; i < p->nsubs; i++) {
        const struct ndc_sub_stat *u = &p->subs[i];
        printf("%s{\"pid\":%d,\"position\":%" PRIu64 ",\"lag\":%" PRIu64 ",\"loans\":%u,"
               "\"received\":%" PRIu64 ",\"dropped\":%" PRIu64 "}", i ? "," : "", (int)u->pid,
               u->position, u->lag, u->loans, u->received, u->dropped);
    }
    putchar(']');
}

static void print_json(const char *name, const struct snap *p)
{
    printf("{\"name\":");
    cli_json_str(name);
    putchar(',');
    json_fields(p);
    printf("}\n");
}

/* ---- --watch ---------------------------------------------------------------- */

/* Slots as a bar of at most 40 cells: '#' ready, '=' on loan, '.' free. */
static void bar(char *out, const struct ndc_stat *s)
{
    unsigned w = s->slots < 40 ? s->slots : 40;
    unsigned r = s->slots ? (unsigned)((uint64_t)s->ready * w / s->slots) : 0;
    unsigned l = s->slots ? (unsigned)((uint64_t)s->loaned * w / s->slots) : 0;
    if (s->ready && !r && r + l < w)
        r = 1;   /* something ready always shows */
    if (s->loaned && !l && r + l < w)
        l = 1;
    unsigned i = 0;
    for (; i < r; i++)
        out[i] = '#';
    for (; i < r + l; i++)
        out[i] = '=';
    for (; i < w; i++)
        out[i] = '.';
    out[w] = '\0';
}

static int watch_lines;   /* lines drawn last time, to redraw in place */

static void draw_watch(const char *name, const struct snap *p, const struct snap *prev,
                       double arrays_s, double gb_s, int json, int tty)
{
    const struct ndc_stat *s = &p->s;
    if (json) {
        printf("{\"name\":");
        cli_json_str(name);
        printf(",\"arrays_per_s\":%.1f,\"gb_per_s\":%.4f,", arrays_s, gb_s);
        json_fields(p);
        printf("}\n");
        fflush(stdout);
        return;
    }
    if (tty && watch_lines)
        printf("\033[%dA\033[J", watch_lines);   /* back to the top of the last frame */
    char b[32], cells[41];
    bar(cells, s);
    printf("%s  %u slots x %s  %u processes attached  %s\n", name, s->slots,
           cli_bytes(s->slot_bytes, b, sizeof b), p->others, state_of(s));
    printf("  rate       %10.1f arrays/s  %8.3f GB/s   sent %" PRIu64 ", received %" PRIu64 "\n",
           arrays_s, gb_s, s->sent, s->received);
    printf("  slots      [%s]  %u free, %u ready (#), %u on loan (=)\n", cells, s->free,
           s->ready, s->loaned);
    if (s->receivers_waiting)
        printf("  receivers  idle: %u asleep on an empty channel\n", s->receivers_waiting);
    else if (!p->others)
        printf("  receivers  none: no other process is attached\n");
    else if (s->ready || s->loaned)
        printf("  receivers  busy: arrays are waiting or on loan\n");
    else
        printf("  receivers  none waiting, nothing ready\n");
    if (s->senders_waiting)
        printf("  senders    blocked: %u asleep on a full channel (the consumer is behind)\n",
               s->senders_waiting);
    else
        printf("  senders    not blocked\n");
    watch_lines = 5;
    if (s->broadcast) {
        printf("  subscribers %u, %" PRIu64 " arrays dropped\n", s->subscribers, s->dropped);
        watch_lines += 1 + print_subs(p, prev);
    }
    if (!tty)
        putchar('\n');
    fflush(stdout);
}

static int one_channel(const char *name, int json, int watch, double interval, long count)
{
    ndc_chan *ch;
    int r = ndc_open(&ch, name, NDC_RDONLY);
    if (r)
        return cli_fail(r, name);
    static struct snap prev, cur;   /* with every subscriber: too big for the stack */
    if ((r = take(ch, &prev))) {
        ndc_free(ch);
        return cli_fail(r, "ndc_stat");
    }
    if (!watch) {
        json ? print_json(name, &prev) : print_text(name, &prev);
        ndc_free(ch);
        return 0;
    }
    int tty = isatty(STDOUT_FILENO);
    for (long i = 0; count < 0 || i < count; i++) {
        if (i > 0) {
            struct timespec ts = { (time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9) };
            nanosleep(&ts, NULL);
        }
        if ((r = take(ch, &cur))) {
            ndc_free(ch);
            return cli_fail(r, "ndc_stat");
        }
        double dt = cur.t - prev.t;
        double arrays_s = i && dt > 0 ? (double)(cur.s.sent - prev.s.sent) / dt : 0;
        double gb_s = i && dt > 0 ? (double)(cur.s.bytes_sent - prev.s.bytes_sent) / dt / 1e9 : 0;
        draw_watch(name, &cur, i ? &prev : NULL, arrays_s, gb_s, json, tty);
        prev = cur;
        /* nothing more will happen: drained after the end, and alone (a
         * broadcast channel keeps its last arrays as history: ready) */
        if (count < 0 && cur.s.closed && cur.s.stale && (!cur.s.ready || cur.s.broadcast) &&
            !cur.s.loaned)
            break;
    }
    ndc_free(ch);
    return 0;
}

/* ---- --list and --gc --------------------------------------------------------- */

struct entry {
    char name[NDC_NAME_MAX + 1];
    int err;                /* 0, or why it could not be read (-EACCES, ...) */
    struct snap p;
};

/* Every ndchan channel in the shm directory, sorted by name. Objects that
 * are not ndchan segments (-EPROTO: other programs' shm, semaphores) are
 * skipped; one that cannot be opened at all is listed with the reason. */
static int scan(struct entry **out, size_t *n)
{
    struct dirent **list;
    int k = scandir(SHM_DIR, &list, NULL, alphasort);
    if (k < 0) {
        fprintf(stderr, "%s: %s: %s\n", cli_prog(), SHM_DIR, strerror(errno));
        return -1;
    }
    struct entry *e = calloc((size_t)k + 1, sizeof *e);
    if (!e) {
        perror(cli_prog());
        return -1;
    }
    size_t m = 0;
    for (int i = 0; i < k; i++) {
        const char *d = list[i]->d_name;
        struct stat st;
        char path[sizeof SHM_DIR + 256];
        snprintf(path, sizeof path, SHM_DIR "/%s", d);
        int regular = lstat(path, &st) == 0 && S_ISREG(st.st_mode);
        if (d[0] == '.' || !regular || strlen(d) + 1 > NDC_NAME_MAX) {
            free(list[i]);
            continue;
        }
        ndc_chan *ch;
        int r = ndc_open(&ch, d, NDC_RDONLY);
        if (r == 0) {
            r = take(ch, &e[m].p);
            ndc_free(ch);
        }
        if (r != -EPROTO && r != -EINVAL) {
            snprintf(e[m].name, sizeof e[m].name, "%s", d);
            e[m].err = r;
            m++;
        }
        free(list[i]);
    }
    free(list);
    *out = e;
    *n = m;
    return 0;
}

static int list_channels(int json)
{
    struct entry *e;
    size_t n;
    if (scan(&e, &n))
        return 1;
    int w = 24;   /* the name column: as wide as the longest name */
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(e[i].name) > w)
            w = (int)strlen(e[i].name);
    if (json)
        printf("[");
    else if (n)
        printf("%-*s %6s %10s %5s %5s %6s %9s  %s\n", w, "NAME", "SLOTS", "SLOT_SIZE", "READY",
               "LOAN", "PROCS", "SENT", "STATE");
    else
        printf("no ndchan channels in %s\n", SHM_DIR);
    for (size_t i = 0; i < n; i++) {
        const struct ndc_stat *s = &e[i].p.s;
        if (json) {
            printf("%s\n {\"name\":", i ? "," : "");
            cli_json_str(e[i].name);
            if (e[i].err) {
                printf(",\"error\":");
                cli_json_str(ndc_strerror(e[i].err));
            } else {
                putchar(',');
                json_fields(&e[i].p);
            }
            putchar('}');
        } else if (e[i].err) {
            printf("%-*s %s\n", w, e[i].name, ndc_strerror(e[i].err));
        } else {
            char b[32];
            printf("%-*s %6u %10s %5u %5u %6u %9" PRIu64 "  %s\n", w, e[i].name, s->slots,
                   cli_bytes(s->slot_bytes, b, sizeof b), s->ready, s->loaned, e[i].p.others,
                   s->sent, state_of(s));
        }
    }
    if (json)
        printf("%s]\n", n ? "\n" : "");
    free(e);
    return 0;
}

/* Whether --gc's NAME list (empty: every channel) holds name. */
static int wanted(const char *name, char **names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i] + (names[i][0] == '/'), name))
            return 1;
    return n == 0;
}

static int gc(int dry_run, int json, char **names, int nnames)
{
    struct entry *e;
    size_t n;
    if (scan(&e, &n))
        return 1;
    int rc = 0, any = 0;
    if (json)
        printf("[");
    for (size_t i = 0; i < n; i++) {
        /* stale: no process but us was attached when we looked */
        if (e[i].err || !e[i].p.s.stale || !wanted(e[i].name, names, nnames))
            continue;
        int r = dry_run ? 0 : ndc_unlink(e[i].name);
        if (r)
            rc = 1;
        const struct ndc_stat *s = &e[i].p.s;
        /* a broadcast channel's arrays are for whoever subscribes: none is
         * owed to a receiver, and its counts went with its subscribers */
        uint64_t lost = s->broadcast ? 0 : s->sent - s->received;
        if (json) {
            printf("%s\n {\"name\":", any ? "," : "");
            cli_json_str(e[i].name);
            printf(",\"removed\":%s,\"unreceived\":%" PRIu64, !dry_run && !r ? "true" : "false", lost);
            if (r) {
                printf(",\"error\":");
                cli_json_str(ndc_strerror(r));
            }
            putchar('}');
        } else if (r) {
            fprintf(stderr, "%s: %s: %s\n", cli_prog(), e[i].name, ndc_strerror(r));
        } else if (s->broadcast) {
            printf("%s %s (%s, a broadcast channel of %" PRIu64 " arrays)\n",
                   dry_run ? "would remove" : "removed", e[i].name,
                   s->closed ? "closed" : "never closed", s->sent);
        } else {
            printf("%s %s (%s, %" PRIu64 " arrays never received)\n",
                   dry_run ? "would remove" : "removed", e[i].name,
                   s->closed ? "closed" : "never closed", lost);
        }
        any = 1;
    }
    if (json)
        printf("%s]\n", any ? "\n" : "");
    else if (!any)
        printf("no stale channels in %s\n", SHM_DIR);
    free(e);
    return rc;
}

int main(int argc, char **argv)
{
    enum { OPT_DRY_RUN = 256 };
    static const struct option longopts[] = {
        { "watch", no_argument, NULL, 'w' },      { "interval", required_argument, NULL, 'i' },
        { "count", required_argument, NULL, 'n' }, { "list", no_argument, NULL, 'l' },
        { "gc", no_argument, NULL, 'g' },         { "dry-run", no_argument, NULL, OPT_DRY_RUN },
        { "json", no_argument, NULL, 'j' },       { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    cli_init("ndchan-stat", help);
    int watch = 0, list = 0, do_gc = 0, dry_run = 0, json = 0, interval_set = 0, c;
    double interval = 1;
    long count = -1;
    while ((c = cli_getopt(argc, argv, "wi:n:lgjh", longopts)) != -1) {
        switch (c) {
        case 'w': watch = 1; break;
        case 'i': interval = cli_double("--interval", optarg, 0.05, 3600); interval_set = 1; break;
        case 'n': count = (long)cli_int("--count", optarg, 1, 1000000000); break;
        case 'l': list = 1; break;
        case 'g': do_gc = 1; break;
        case OPT_DRY_RUN: dry_run = 1; break;
        case 'j': json = 1; break;
        }
    }
    if (watch + list + do_gc > 1)
        cli_usage("--watch, --list and --gc exclude each other");
    if (dry_run && !do_gc)
        cli_usage("--dry-run goes with --gc");
    if ((interval_set || count >= 0) && !watch)
        cli_usage("--interval and --count go with --watch");
    if (list) {
        cli_positional(argc, argv, 0, 0);
        return list_channels(json);
    }
    if (do_gc) {
        int n = cli_positional(argc, argv, 0, -1);
        return gc(dry_run, json, argv + optind, n);
    }
    cli_positional(argc, argv, 1, 1);
    return one_channel(argv[optind], json, watch, interval, count);
}
