/* ndchan-bridge: continue a named channel on another host over UCX.
 *
 *   on the receiving host:  ndchan-bridge listen [ADDR:]PORT CHAN
 *   on the sending host:    ndchan-bridge connect HOST:PORT CHAN
 *
 * The connect side is a receiver of its local channel and forwards every
 * array; the listen side is a sender of its own, which it creates with the
 * sender's geometry when missing. On a broadcast channel the connect side
 * is one more subscriber (--subscribe). See bridge_engine.c for how commit order,
 * exactly-once delivery, backpressure, end of stream and dead peers carry
 * across, and bridge_wire.h for what goes over the link.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ndchan.h"
#include "bridge_engine.h"
#include "cli.h"

static const char help[] =
"usage: ndchan-bridge listen [ADDR:]PORT CHAN [options]\n"
"       ndchan-bridge connect HOST:PORT CHAN [options]\n"
"\n"
"Continues the named channel CHAN on another host. `listen` (the receiving\n"
"host) accepts one sending bridge and feeds its local channel CHAN, created\n"
"with the sender's geometry if missing; `connect` (the sending host) attaches\n"
"to its local CHAN as a receiver and forwards every array, zero copy where the\n"
"transport allows. Order, exactly-once delivery, backpressure, end of stream\n"
"and dead producers/consumers carry across; a broken link is retried and\n"
"arrays not yet committed on the far side are resent.\n"
"\n"
"A broadcast CHAN (every subscriber gets every array) is forwarded with\n"
"--subscribe: the connect side subscribes, so the far host gets every array\n"
"published from then on (after the channel's history) as one more subscriber;\n"
"it holds back a block-policy publisher like any subscriber, and under the\n"
"latest policy it forwards the newest array each time (the far side counts\n"
"the ones skipped). The far CHAN is a work queue unless listen is given\n"
"--broadcast, which makes it a broadcast channel too for subscribers there.\n"
"\n"
"options:\n"
"  --slots N          listen: slots of a channel it creates (default: the sender's)\n"
"  --slot-bytes SIZE  listen: slot size of a channel it creates, e.g. 64M (default: the sender's)\n"
"  --window N         listen: far slots lent to the sender at once (default: all of them)\n"
"  --tls LIST         UCX transports, as UCX_TLS (e.g. tcp, or rc,sm); default: UCX's choice\n"
"  --link-timeout S   how long a broken link may stay down before both sides report a\n"
"                     dead peer (default 30)\n"
"  --wait S           connect: wait up to S seconds for CHAN to exist (default: forever)\n"
"  --subscribe        connect: CHAN is a broadcast channel: subscribe to it and forward every\n"
"                     array (required for a broadcast CHAN, refused for a work queue)\n"
"  --broadcast        listen: a channel it creates is a broadcast channel\n"
"  --history N        listen, with --broadcast: its history (arrays a late subscriber gets\n"
"                     first), 0..slots-1 (default 0)\n"
"  --policy P         listen, with --broadcast: block (lossless, default) or latest (the\n"
"                     bridge never waits for a slow subscriber there)\n"
"  --stat S           a progress line on stderr every S seconds\n"
"  -q, --quiet        only errors on stderr\n"
"  -h, --help         this text\n"
"\n"
"exit status: 0 end of stream carried through; 1 a failure (channel, UCX); 2 a usage\n"
"error; 3 refused (protocol or geometry); 4 the producers (connect side) or consumers\n"
"(listen side) died and this was reported; 5 the link stayed down past --link-timeout.\n"
"\n"
"examples:\n"
"  # on host B, feed channel \"frames\" from whoever connects to port 13337:\n"
"  ndchan-bridge listen 13337 frames --stat 5\n"
"  # on host A, forward A's channel \"frames\" to B:\n"
"  ndchan-bridge connect hostB:13337 frames\n"
"  # the same over TCP only, listening on one interface:\n"
"  ndchan-bridge listen 10.0.0.2:13337 frames --tls tcp\n"
"  UCX_TLS=tcp ndchan-bridge connect 10.0.0.2:13337 frames\n"
"  # a broadcast channel \"cams\" on A, fanned out again to subscribers on B:\n"
"  ndchan-bridge listen 13338 cams --broadcast --history 1\n"
"  ndchan-bridge connect hostB:13338 cams --subscribe\n";

/* "4096", "64K", "16M", "1G": a positive size, or a usage error. */
static uint64_t parse_size(const char *opt, const char *s)
{
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024; end++; break;
    case 'm': case 'M': v *= 1024 * 1024; end++; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
    default: break;
    }
    if (end == s || *end || !(v >= 1) || v > (double)NDC_MAX_SLOT_BYTES)
        cli_usage("%s: a size such as 4096, 64K or 16M, not \"%s\"", opt, s);
    return (uint64_t)v;
}

/* "HOST:PORT", "[v6]:PORT", or just "PORT" when a host is optional. */
static int parse_endpoint(char *s, const char **host, uint16_t *port, int host_required)
{
    char *colon = strrchr(s, ':');
    char *p = colon ? colon + 1 : s;
    if (colon) {
        *colon = 0;
        if (s[0] == '[' && colon > s && colon[-1] == ']') {
            colon[-1] = 0;
            s++;
        }
        *host = s;
    } else if (host_required) {
        return -1;
    } else {
        *host = NULL;
    }
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end || v < 0 || v > 65535 || (host_required && v == 0))
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_SLOTS = 256, O_SLOTB, O_WINDOW, O_TLS, O_LINK, O_WAIT, O_SUB, O_STAT, O_BCAST, O_HIST,
           O_POLICY };
    static const struct option lo[] = {
        { "slots", 1, 0, O_SLOTS }, { "slot-bytes", 1, 0, O_SLOTB }, { "window", 1, 0, O_WINDOW },
        { "tls", 1, 0, O_TLS }, { "link-timeout", 1, 0, O_LINK }, { "wait", 1, 0, O_WAIT },
        { "subscribe", 0, 0, O_SUB }, { "stat", 1, 0, O_STAT }, { "quiet", 0, 0, 'q' },
        { "broadcast", 0, 0, O_BCAST }, { "history", 1, 0, O_HIST }, { "policy", 1, 0, O_POLICY },
        { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
    struct bridge_opts o = { .link_timeout = 30, .open_timeout = -1 };
    cli_init("ndchan-bridge", help);
    int c, history_set = 0, policy_set = 0;
    /* GNU getopt permutes: options may come before or after the operands */
    while ((c = cli_getopt(argc, argv, "qh", lo)) != -1) {
        switch (c) {
        case O_SLOTS: o.slots = (uint32_t)cli_int("--slots", optarg, 1, NDC_MAX_SLOTS); break;
        case O_SLOTB: o.slot_bytes = parse_size("--slot-bytes", optarg); break;
        case O_WINDOW: o.window = (uint32_t)cli_int("--window", optarg, 1, NDC_MAX_SLOTS); break;
        case O_TLS: setenv("UCX_TLS", optarg, 1); break;
        case O_LINK: o.link_timeout = cli_double("--link-timeout", optarg, 0.001, 1e9); break;
        case O_WAIT: o.open_timeout = cli_double("--wait", optarg, 0, 1e9); break;
        case O_SUB: o.subscribe = 1; break;
        case O_STAT: o.stat_every = cli_double("--stat", optarg, 0.01, 1e9); break;
        case O_BCAST: o.broadcast = 1; break;
        case O_HIST: o.history = (uint32_t)cli_int("--history", optarg, 0, NDC_MAX_SLOTS - 1); history_set = 1; break;
        case O_POLICY:
            if (!strcmp(optarg, "block"))
                o.slow_policy = NDC_SLOW_BLOCK;
            else if (!strcmp(optarg, "latest"))
                o.slow_policy = NDC_SLOW_LATEST;
            else
                cli_usage("--policy: block or latest, not \"%s\"", optarg);
            policy_set = 1;
            break;
        case 'q': o.quiet = 1; break;
        }
    }
    cli_positional(argc, argv, 3, 3);
    const char *verb = argv[optind];
    int listen = !strcmp(verb, "listen");
    if (!listen && strcmp(verb, "connect"))
        cli_usage("the first operand is listen or connect, not \"%s\"", verb);
    if (listen && o.subscribe)
        cli_usage("--subscribe goes with connect (the side that reads the broadcast channel)");
    if (!listen && (o.broadcast || history_set || policy_set))
        cli_usage("--broadcast, --history and --policy go with listen (the side that creates the far channel)");
    if (!o.broadcast && (history_set || policy_set))
        cli_usage("--history and --policy go with --broadcast");
    if (o.broadcast && o.slots && o.history >= o.slots)
        cli_usage("--history %u: at most --slots - 1 (%u)", o.history, o.slots - 1);
    char *ep = strdup(argv[optind + 1]);   /* parsed in place; the original stays for messages */
    if (parse_endpoint(ep, &o.host, &o.port, !listen))
        cli_usage("%s wants %s, not \"%s\"", verb, listen ? "[ADDR:]PORT" : "HOST:PORT", argv[optind + 1]);
    o.chan = argv[optind + 2];
    signal(SIGPIPE, SIG_IGN);
    int rc = listen ? bridge_listen(&o) : bridge_connect(&o);
    free(ep);   /* o.host points into it */
    return rc;
}
