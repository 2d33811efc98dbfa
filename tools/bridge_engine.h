/* ndchan-bridge: the forwarding engine, one function per side. */
#ifndef NDC_TOOLS_BRIDGE_ENGINE_H
#define NDC_TOOLS_BRIDGE_ENGINE_H
#include <stdint.h>

struct bridge_opts {
    const char *host;        /* connect: the far host; listen: the address (NULL = any) */
    uint16_t    port;
    const char *chan;        /* the local channel */
    uint32_t    slots;       /* listen: geometry of a channel it creates (0 = the near one's) */
    uint64_t    slot_bytes;
    uint32_t    window;      /* listen: far slots lent to the near side at once (0 = all) */
    double      link_timeout;/* seconds a broken link may stay down */
    double      open_timeout;/* connect: seconds to wait for the local channel (< 0 forever) */
    double      stat_every;  /* seconds between progress lines; 0 = none */
    int         subscribe;   /* connect: attach as a subscriber of a broadcast channel */
    int         broadcast;   /* listen: a channel it creates is a broadcast one, */
    uint32_t    history;     /* with this history */
    uint32_t    slow_policy; /* and this enum ndc_slow_policy */
    int         quiet;
};

/* Exit statuses of both sides (2 is a usage error, as for every tool). */
enum {
    BRIDGE_OK = 0,           /* end of stream carried through */
    BRIDGE_ERR = 1,          /* a failure: the channel, UCX */
    BRIDGE_REFUSED = 3,      /* the peer was refused, or refused us */
    BRIDGE_PEER_DEAD = 4,    /* producers (near) or consumers (far) died: reported */
    BRIDGE_LINK_DOWN = 5,    /* the link stayed down past --link-timeout: reported */
};

int bridge_connect(const struct bridge_opts *o);   /* the sending (near) side */
int bridge_listen(const struct bridge_opts *o);    /* the receiving (far) side */
#endif
