/* ndchan-bridge: continue a named channel on another host over UCX.
 *
 *   on the receiving host:  ndchan-bridge listen [ADDR:]PORT CHAN
 *   on the sending host:    ndchan-bridge connect HOST:PORT CHAN
 *
 * The connect side is a receiver of its local channel and forwards every
 * array; the listen side is a sender of its own, which it creates with the
 * sender's geometry when missing. See bridge_engine.c for how commit order,
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

static void usage(FILE *f)
{
    fputs(
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
"options:\n"
"  --slots N          listen: slots of a channel it creates (default: the sender's)\n"
"  --slot-bytes SIZE  listen: slot size of a channel it creates, e.g. 64M (default: the sender's)\n"
"  --window N         listen: far slots lent to the sender at once (default: all of them)\n"
"  --tls LIST         UCX transports, as UCX_TLS (e.g. tcp, or rc,sm); default: UCX's choice\n"
"  --link-timeout S   how long a broken link may stay down before both sides report a\n"
"                     dead peer (default 30)\n"
"  --wait S           connect: wait up to S seconds for CHAN to exist (default: forever)\n"
"  --subscribe        connect: attach as a subscriber of a broadcast channel (not yet in ndchan)\n"
"  --stat S           a progress line on stderr every S seconds\n"
"  -q, --quiet        only errors on stderr\n"
"  -h, --help         this text\n"
"\n"
"exit status: 0 end of stream carried through; 1 setup error; 2 refused (protocol or\n"
"geometry); 3 the producers (connect side) or consumers (listen side) died and this was\n"
"reported; 4 the link stayed down past --link-timeout.\n"
"\n"
"examples:\n"
"  # on host B, feed channel \"frames\" from whoever connects to port 13337:\n"
"  ndchan-bridge listen 13337 frames --stat 5\n"
"  # on host A, forward A's channel \"frames\" to B:\n"
"  ndchan-bridge connect hostB:13337 frames\n"
"  # the same over TCP only, listening on one interface:\n"
"  ndchan-bridge listen 10.0.0.2:13337 frames --tls tcp\n"
"  UCX_TLS=tcp ndchan-bridge connect 10.0.0.2:13337 frames\n", f);
}

static uint64_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024; break;
    case 'm': case 'M': v *= 1024 * 1024; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
    default: break;
    }
    return v > 0 ? (uint64_t)v : 0;
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
    enum { O_SLOTS = 256, O_SLOTB, O_WINDOW, O_TLS, O_LINK, O_WAIT, O_SUB, O_STAT };
    static const struct option lo[] = {
        { "slots", 1, 0, O_SLOTS }, { "slot-bytes", 1, 0, O_SLOTB }, { "window", 1, 0, O_WINDOW },
        { "tls", 1, 0, O_TLS }, { "link-timeout", 1, 0, O_LINK }, { "wait", 1, 0, O_WAIT },
        { "subscribe", 0, 0, O_SUB }, { "stat", 1, 0, O_STAT }, { "quiet", 0, 0, 'q' },
        { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
    struct bridge_opts o = { .link_timeout = 30, .open_timeout = -1 };
    int c;
    /* GNU getopt permutes: options may come before or after the operands */
    while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
        switch (c) {
        case O_SLOTS: o.slots = (uint32_t)strtoul(optarg, NULL, 0); break;
        case O_SLOTB: o.slot_bytes = parse_size(optarg); break;
        case O_WINDOW: o.window = (uint32_t)strtoul(optarg, NULL, 0); break;
        case O_TLS: setenv("UCX_TLS", optarg, 1); break;
        case O_LINK: o.link_timeout = strtod(optarg, NULL); break;
        case O_WAIT: o.open_timeout = strtod(optarg, NULL); break;
        case O_SUB: o.subscribe = 1; break;
        case O_STAT: o.stat_every = strtod(optarg, NULL); break;
        case 'q': o.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return BRIDGE_ERR;
        }
    }
    if (argc - optind != 3) {
        usage(stderr);
        return BRIDGE_ERR;
    }
    const char *verb = argv[optind];
    int listen = !strcmp(verb, "listen");
    if (!listen && strcmp(verb, "connect")) {
        fprintf(stderr, "ndchan-bridge: the first operand is listen or connect, not \"%s\"\n", verb);
        return BRIDGE_ERR;
    }
    if (parse_endpoint(argv[optind + 1], &o.host, &o.port, !listen)) {
        fprintf(stderr, "ndchan-bridge: %s wants %s, not \"%s\"\n", verb,
                listen ? "[ADDR:]PORT" : "HOST:PORT", argv[optind + 1]);
        return BRIDGE_ERR;
    }
    o.chan = argv[optind + 2];
    if (o.link_timeout <= 0) {
        fprintf(stderr, "ndchan-bridge: --link-timeout wants a positive number of seconds\n");
        return BRIDGE_ERR;
    }
    signal(SIGPIPE, SIG_IGN);
    return listen ? bridge_listen(&o) : bridge_connect(&o);
}
