/*
 * ndchan-bridge: the forwarding engine.
 *
 * Roles. The near (connect) bridge is a receiver of the local channel; the
 * far (listen) bridge is a sender of its own. Between them, one UCX
 * endpoint carries the messages of bridge_wire.h.
 *
 * Credits. A credit is a far slot the far bridge has already reserved, at
 * full slot size (ndc_commit lets the shape shrink to the array's). The
 * near bridge takes an array off its channel only while it holds a credit,
 * so a full far channel (no slot to reserve) stops the near side from
 * acquiring, its channel fills, and the producer blocks: backpressure end
 * to end, with no buffer in between. The payload goes straight from the
 * acquired near slot (registered with ucp_mem_map) into the reserved far
 * slot (registered too): UCX picks eager or rendezvous by size.
 *
 * Acks. The far bridge commits arrays in seq order and acks each commit
 * (committed up to seq, plus the credits it could reserve again). The near
 * bridge keeps every array's slot on loan until its ack: a link that breaks
 * loses nothing the far channel has not committed.
 *
 * Reconnect and dedup. The far side's handshake reply carries the last near
 * seq its channel committed (kept across far restarts by bridge_state.c);
 * the near side releases what that covers and resends the rest in order;
 * the far side drops any array at or below its last seq. So every array
 * reaches the far channel exactly once, in commit order.
 *
 * Ends. End of stream on the near channel (-EPIPE after the last array)
 * becomes CLOSE after the last ack, and ndc_close on the far channel. Dead
 * producers (-EOWNERDEAD) become DEAD: the far bridge detaches without
 * closing, so far receivers get -EOWNERDEAD as from a dead sender. Dead far
 * consumers (-EOWNERDEAD on reserve) become DEAD the other way: the near
 * bridge detaches (its loans go back), so once every receiver of the near
 * channel is gone its producers get -EOWNERDEAD. A link down for longer
 * than --link-timeout is reported the same way on both sides, the near one
 * saying how many arrays it could not deliver.
 *
 * Broadcast. On a broadcast near channel the near bridge is one more
 * subscriber (--subscribe): it gets every array from its subscription on,
 * after the channel's history, and holds at most NDC_MAX_SUB_LOANS of them
 * (fewer than the slots, so a latest-policy publisher always finds one to
 * reuse). Under the latest policy it gets the newest array each time and
 * skips the rest, so seqs may jump; HELLO says it is a subscriber, and the
 * far side counts such gaps as skipped, not lost. A restarted near bridge
 * subscribes anew: it gets the history again (the far side drops what it
 * had) and what was published while no bridge was subscribed is not for it.
 * The far channel is what the listen side was told to make (--broadcast,
 * --history, --policy) or what it finds.
 *
 * Waiting. One thread per bridge. The channel wait that detects dead peers
 * must sleep at least one 40 ms liveness slice (the library sweeps dead
 * peers between slices), so a bridge with nothing in flight sleeps in
 * ndc_acquire/ndc_reserve for a slice; with transfers in flight it polls
 * the channel and progresses UCX, sleeping on the worker's event fd.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ndchan.h"
#include "bridge_engine.h"
#include "bridge_state.h"
#include "bridge_ucx.h"
#include "bridge_wire.h"

#define MS          1000000LL
#define SLICE_NS    (45 * MS)      /* > the library's 40 ms liveness slice */
#define HELLO_MS    5000           /* a handshake that takes longer is dropped */
#define RETRY_MS    200            /* between connection attempts */
#define NCTL_RING   64

static int quiet;

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ndchan-bridge: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void info(const char *fmt, ...)
{
    if (quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ndchan-bridge: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void stat_line(const char *side, int64_t t0, uint64_t arrays, uint64_t bytes, uint64_t inflight,
                      uint32_t credits, int up)
{
    double s = (double)(bu_now_ns() - t0) / 1e9;
    fprintf(stderr, "ndchan-bridge: %s %llu arrays, %.1f MiB, %.1f MiB/s; in flight %llu, credits %u, link %s\n",
            side, (unsigned long long)arrays, (double)bytes / 1048576, s > 0 ? (double)bytes / 1048576 / s : 0,
            (unsigned long long)inflight, credits, up ? "up" : "down");
}

static uint16_t new_conn_id(uint16_t old)
{
    uint16_t c;
    static uint64_t x;
    if (!x)
        x = (uint64_t)bu_now_ns() ^ ((uint64_t)getpid() << 32);
    do {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        c = (uint16_t)(x >> 48);
    } while (c == 0 || c == old);
    return c;
}

/* ==== the near (connect) side ============================================ */

struct nent {                        /* an array on loan from the near channel */
    struct ndc_array a;
    unsigned char    hdr[BW_HDR_SIZE];
    struct bu_req    rh, rd;         /* its HDR and DATA sends */
};

struct near {
    const struct bridge_opts *o;
    struct bu     u;
    ndc_chan     *ch;
    uint64_t      slot_bytes;
    uint32_t      slots;
    ucp_ep_h      ep;
    int           link_err, up;    /* up: handshake done on ep */
    uint16_t      conn;
    struct nent  *ring;
    uint32_t      cap;
    uint64_t      head, next, tail;  /* acked < head <= unsent from next <= tail */
    uint32_t      credits;
    int           have_acked;
    uint64_t      acked;             /* the far channel committed up to here */
    unsigned char cbuf[BW_MAX_MSG];
    struct bu_req rc;                /* the posted CTL receive */
    unsigned char fbuf[BW_CTL_SIZE];
    struct bu_req rf;                /* our CLOSE/DEAD */
    int           eos, dead, fin_sent, closed, far_dead;
    int           have_expect;       /* the first seq we should see after a restart */
    uint64_t      expect;
    uint64_t      arrays, bytes;
    int64_t       down_since, t0;
    int           subscriber;        /* a subscriber of a broadcast channel */
    uint64_t      next_seq;          /* subscriber: the seq it takes next unless it skips */
    uint64_t      skipped;           /* latest policy: arrays the library passed over for us */
};

static void near_on_err(void *arg, ucp_ep_h ep, ucs_status_t s)
{
    struct near *n = arg;
    if (ep == n->ep && !n->link_err) {
        n->link_err = 1;
        if (n->up)   /* failed attempts to connect are not news */
            info("link to %s:%u broken: %s", n->o->host, n->o->port, ucs_status_string(s));
    }
}

static struct nent *nat(struct near *n, uint64_t i) { return &n->ring[i % n->cap]; }

static int sends_busy(struct near *n)
{
    for (uint64_t i = n->head; i < n->next; i++)
        if (nat(n, i)->rh.busy || nat(n, i)->rd.busy)
            return 1;
    return n->rf.busy;
}

/* The link broke: forget the endpoint, keep every loan, resend later. */
static void near_link_down(struct near *n)
{
    if (n->ep) {
        bu_close(&n->u, n->ep, 1, 1000);
        n->ep = NULL;
    }
    bu_cancel(&n->u, &n->rc);
    int64_t end = bu_now_ns() + 2000 * MS;
    while (sends_busy(n) && bu_now_ns() < end)
        if (!bu_progress(&n->u))
            bu_wait(&n->u, 1);
    n->next = n->head;
    n->credits = 0;
    n->link_err = 0;
    n->up = 0;
    n->fin_sent = 0;
    if (!n->down_since)
        n->down_since = bu_now_ns();
}

/* Release loans the far channel has committed, oldest first. */
static void near_release_acked(struct near *n)
{
    while (n->have_acked && n->head < n->next) {
        struct nent *e = nat(n, n->head);
        if (e->a.seq > n->acked || e->rh.busy || e->rd.busy)
            break;
        n->arrays++;
        n->bytes += ndc_array_nbytes(&e->a);
        ndc_release(n->ch, &e->a);
        n->head++;
    }
}

/* One connection attempt and handshake. 0 connected, -1 try again later,
 * BRIDGE_REFUSED fatal. */
static int near_try_connect(struct near *n)
{
    char err[256];
    n->conn = new_conn_id(n->conn);
    n->link_err = 0;
    if (bu_connect(&n->u, n->o->host, n->o->port, &n->ep, near_on_err, n, err, sizeof err)) {
        info("%s", err);
        n->ep = NULL;
        return -1;
    }
    unsigned char hb[BW_HELLO_SIZE];
    struct bw_hello h = { .conn = n->conn, .slots = n->slots, .slot_bytes = n->slot_bytes,
                          .flags = n->subscriber ? BW_HELLO_SUBSCRIBER : 0 };
    snprintf(h.chan, sizeof h.chan, "%s", n->o->chan);
    bw_hello_encode(hb, &h);
    struct bu_req rs;
    bu_recv(&n->u, n->cbuf, sizeof n->cbuf, bw_tag(BW_HELLO_ACK, n->conn, 0), BW_MASK_CONN, NULL, &n->rc);
    bu_send(&n->u, n->ep, hb, sizeof hb, bw_tag(BW_HELLO, n->conn, 0), NULL, &rs);
    int64_t end = bu_now_ns() + HELLO_MS * MS;
    while (!n->rc.done && !n->link_err && bu_now_ns() < end)
        if (!bu_progress(&n->u))
            bu_wait(&n->u, 5);
    bu_wait_req(&n->u, &rs, 100);
    if (!n->rc.done || n->rc.status != UCS_OK || n->link_err) {
        near_link_down(n);
        bu_cancel(&n->u, &rs);
        return -1;
    }
    struct bw_hello_ack a;
    char why[200];
    int r = bw_hello_ack_decode(n->cbuf, n->rc.length, &a, why, sizeof why);
    if (r) {
        say("refusing %s:%u: %s", n->o->host, n->o->port, why);
        near_link_down(n);
        return BRIDGE_REFUSED;
    }
    if (a.status) {
        say("%s:%u refused this bridge: %s (%s)", n->o->host, n->o->port, a.text, ndc_strerror(a.status));
        near_link_down(n);
        return BRIDGE_REFUSED;
    }
    n->credits = a.credits;
    if (a.have_last) {
        n->have_acked = 1;
        n->acked = a.last_seq;
        near_release_acked(n);
        if (n->head == n->tail && !n->have_expect && !n->arrays) {
            n->have_expect = 1;        /* a restarted near bridge: watch for a gap */
            n->expect = a.last_seq + 1;
        }
    }
    bu_recv(&n->u, n->cbuf, sizeof n->cbuf, bw_tag(BW_CTL, n->conn, 0), BW_MASK_CONN, NULL, &n->rc);
    char tl[256], resume[64] = "";
    if (a.have_last)
        snprintf(resume, sizeof resume, ", resuming after seq %llu", (unsigned long long)a.last_seq);
    info("connected to %s:%u over %s; far channel %u x %llu B%s", n->o->host, n->o->port,
         bu_transports(n->ep, tl, sizeof tl), a.far_slots, (unsigned long long)a.far_slot_bytes, resume);
    n->down_since = 0;
    n->up = 1;
    return 0;
}

static void near_send(struct near *n, struct nent *e)
{
    size_t nb = ndc_array_nbytes(&e->a);
    ucp_mem_h mh = bu_memh(&n->u, e->a.data, n->slot_bytes);
    bu_send(&n->u, n->ep, e->hdr, BW_HDR_SIZE, bw_tag(BW_HDR, n->conn, 0), NULL, &e->rh);
    bu_send(&n->u, n->ep, e->a.data, nb, bw_tag(BW_DATA, n->conn, e->a.seq), mh, &e->rd);
}

static void near_handle_ctl(struct near *n)
{
    struct bw_ctl c;
    char why[200];
    if (n->rc.status != UCS_OK) {
        if (n->rc.status != UCS_ERR_CANCELED)
            n->link_err = 1;
        return;
    }
    if (bw_ctl_decode(n->cbuf, n->rc.length, &c, why, sizeof why)) {
        say("protocol error from %s:%u: %s; dropping the link", n->o->host, n->o->port, why);
        n->link_err = 1;
        return;
    }
    switch (c.type) {
    case BW_ACK:
        if (c.have_seq) {
            n->have_acked = 1;
            n->acked = c.seq;
        }
        n->credits += c.grant;
        break;
    case BW_CLOSED: n->closed = 1; break;
    case BW_DEAD: n->far_dead = 1; break;
    default: break;
    }
    bu_recv(&n->u, n->cbuf, sizeof n->cbuf, bw_tag(BW_CTL, n->conn, 0), BW_MASK_CONN, NULL, &n->rc);
}

/* Attach to the near channel: a receiver of a work queue, a subscriber of
 * a broadcast channel (--subscribe), and a clear word when the two do not
 * match. */
static int near_attach(struct near *n)
{
    int64_t t = n->o->open_timeout < 0 ? NDC_FOREVER : (int64_t)(n->o->open_timeout * 1e9);
    int r = ndc_open_wait(&n->ch, n->o->chan, NDC_RDONLY, t);
    if (r) {
        say("%s: %s (%s)", n->o->chan, ndc_strerror(r), ndc_last_error());
        return r;
    }
    struct ndc_stat st;
    if ((r = ndc_stat(n->ch, &st)) == 0 && st.broadcast && !n->o->subscribe) {
        say("%s is a broadcast channel: every subscriber gets every array. Run with --subscribe "
            "to forward them all as one more subscriber", n->o->chan);
        r = -EINVAL;
    } else if (r == 0 && !st.broadcast && n->o->subscribe) {
        say("--subscribe: %s is a work queue, not a broadcast channel (each array goes to one "
            "receiver): drop --subscribe to forward what this bridge receives", n->o->chan);
        r = -EINVAL;
    } else if (r == 0 && st.broadcast && (r = ndc_subscribe(n->ch)) == 0) {
        n->subscriber = 1;
        /* where our subscription starts (history included): what we get
         * past that, the library skipped for us */
        struct ndc_sub_stat subs[NDC_MAX_PEERS];
        int k = ndc_subscribers(n->ch, subs, NDC_MAX_PEERS);
        n->next_seq = UINT64_MAX;
        for (int i = 0; i < k && i < NDC_MAX_PEERS; i++)
            if (subs[i].pid == getpid() && subs[i].position < n->next_seq)
                n->next_seq = subs[i].position;
        if (n->next_seq == UINT64_MAX)
            n->next_seq = 0;
        info("subscribed to broadcast channel %s (%u subscribers now)", n->o->chan, st.subscribers + 1);
    }
    if (r && r != -EINVAL)
        say("%s: %s (%s)", n->o->chan, ndc_strerror(r), ndc_last_error());
    if (r) {
        ndc_free(n->ch);
        n->ch = NULL;
    }
    return r;
}

int bridge_connect(const struct bridge_opts *o)
{
    struct near n;
    memset(&n, 0, sizeof n);
    n.o = o;
    quiet = o->quiet;
    char err[256];
    if (near_attach(&n))
        return BRIDGE_ERR;
    struct ndc_stat st;
    ndc_stat(n.ch, &st);
    n.slots = st.slots;
    n.slot_bytes = st.slot_bytes;
    n.cap = st.slots;
    if (n.subscriber) {
        /* a subscriber's loans are bounded; two slots stay for a latest-policy
         * publisher, which never reuses the newest array nor one being read */
        n.cap = st.slots > 2 ? st.slots - 2 : 1;
        if (n.cap > NDC_MAX_SUB_LOANS)
            n.cap = NDC_MAX_SUB_LOANS;
    }
    n.ring = calloc(n.cap, sizeof *n.ring);
    if (!n.ring || bu_init(&n.u, err, sizeof err)) {
        say("%s", n.ring ? err : "out of memory");
        ndc_free(n.ch);
        return BRIDGE_ERR;
    }
    n.t0 = bu_now_ns();
    n.down_since = n.t0;
    int64_t next_stat = o->stat_every > 0 ? n.t0 + (int64_t)(o->stat_every * 1e9) : INT64_MAX;
    int ret = BRIDGE_OK, idle = 0;
    for (;;) {
        int busy = 0;
        while (bu_progress(&n.u))
            busy = 1;
        if (n.link_err)
            near_link_down(&n);
        if (!n.ep) {
            if ((double)(bu_now_ns() - n.down_since) / 1e9 > o->link_timeout) {
                uint64_t lost = n.tail - n.head;
                say("link to %s:%u down for more than %g s: giving up; %llu array%s not delivered%s",
                    o->host, o->port, o->link_timeout, (unsigned long long)lost, lost == 1 ? "" : "s",
                    lost ? " (their slots go back to the near channel)" : "");
                if (lost)
                    say("undelivered: seq %llu..%llu", (unsigned long long)nat(&n, n.head)->a.seq,
                        (unsigned long long)nat(&n, n.tail - 1)->a.seq);
                ret = BRIDGE_LINK_DOWN;
                break;
            }
            int r = near_try_connect(&n);
            if (r == BRIDGE_REFUSED) {
                ret = r;
                break;
            }
            if (r) {
                struct timespec ts = { 0, RETRY_MS * MS };
                nanosleep(&ts, NULL);
            }
            continue;
        }
        if (n.rc.done)
            near_handle_ctl(&n);
        if (n.link_err)
            continue;
        near_release_acked(&n);
        for (uint64_t i = n.head; i < n.next; i++) {
            struct nent *e = nat(&n, i);
            if ((e->rh.done && e->rh.status != UCS_OK) || (e->rd.done && e->rd.status != UCS_OK))
                n.link_err = 1;
        }
        if (n.link_err)
            continue;
        while (n.next < n.tail && n.credits > 0) {
            near_send(&n, nat(&n, n.next++));
            n.credits--;
            busy = 1;
        }
        if (n.far_dead) {
            say("the far channel's consumers are gone: detaching, so the producers here see a dead receiver");
            ret = BRIDGE_PEER_DEAD;
            break;
        }
        if (n.closed && n.dead) {
            say("every producer of %s died: reported to the far side as a dead sender", o->chan);
            ret = BRIDGE_PEER_DEAD;
            break;
        }
        if (n.closed) {
            if (n.skipped)
                info("end of stream carried: %llu arrays, %.1f MiB; %llu skipped as a latest-policy "
                     "subscriber (it forwards the newest array each time)", (unsigned long long)n.arrays,
                     (double)n.bytes / 1048576, (unsigned long long)n.skipped);
            else
                info("end of stream carried: %llu arrays, %.1f MiB", (unsigned long long)n.arrays,
                     (double)n.bytes / 1048576);
            break;
        }
        if ((n.eos || n.dead) && n.head == n.tail) {
            if (!n.fin_sent) {
                struct bw_ctl c = { .type = n.eos ? BW_CLOSE : BW_DEAD, .have_seq = n.have_acked,
                                    .seq = n.acked };
                bw_ctl_encode(n.fbuf, &c);
                bu_send(&n.u, n.ep, n.fbuf, BW_CTL_SIZE, bw_tag(BW_NCTL, n.conn, 0), NULL, &n.rf);
                n.fin_sent = 1;
            }

        }
        if (bu_now_ns() >= next_stat) {
            stat_line("sent", n.t0, n.arrays, n.bytes, n.tail - n.head, n.credits, n.ep != NULL);
            next_stat += (int64_t)(o->stat_every * 1e9);
        }
        int inflight_busy = sends_busy(&n);
        int can_take = !n.eos && !n.dead && n.credits > 0 && n.next == n.tail && n.tail - n.head < n.cap;
        if (can_take) {
            /* waiting on the channel: long enough to notice dead producers
             * when nothing else is going on, briefly while acks are due */
            int64_t t = busy || inflight_busy ? 0 : n.head < n.next ? 200000 : SLICE_NS;
            struct nent *e = nat(&n, n.tail);
            int r = ndc_acquire(n.ch, &e->a, t);
            if (r == 0) {
                if (n.have_expect && e->a.seq > n.expect && n.subscriber)
                    say("seq %llu..%llu never reached the far side: they were published while no bridge "
                        "was subscribed, beyond the channel's history",
                        (unsigned long long)n.expect, (unsigned long long)e->a.seq - 1);
                else if (n.have_expect && e->a.seq > n.expect)
                    say("seq %llu..%llu never reached the far side: the previous near bridge died holding "
                        "them, and the library gives a dead receiver's loans back as free slots",
                        (unsigned long long)n.expect, (unsigned long long)e->a.seq - 1);
                n.have_expect = 0;
                if (n.subscriber && e->a.seq > n.next_seq)
                    n.skipped += e->a.seq - n.next_seq;
                n.next_seq = e->a.seq + 1;
                struct bw_hdr h;
                bw_hdr_from_array(&h, &e->a);
                bw_hdr_encode(e->hdr, &h);
                memset(&e->rh, 0, sizeof e->rh);
                memset(&e->rd, 0, sizeof e->rd);
                n.tail++;
                idle = 0;
                continue;
            }
            if (r == -EPIPE)
                n.eos = 1;
            else if (r == -EOWNERDEAD)
                n.dead = 1;
            else if (r == -EBADMSG)
                say("%s: a corrupt array was dropped by the library (%s)", o->chan, ndc_last_error());
            else if (r != -EAGAIN && r != -ETIMEDOUT && r != -EINTR) {
                say("%s: %s (%s)", o->chan, ndc_strerror(r), ndc_last_error());
                ret = BRIDGE_ERR;
                break;
            }
            if (t)
                continue;
        }
        if (busy) {
            idle = 0;
        } else if (inflight_busy || n.head < n.next) {
            if (++idle > 64)
                bu_wait(&n.u, 1);
        } else {
            bu_wait(&n.u, 50);
        }
    }
    /* Leaving: loans still held go back to the pool with ndc_free. */
    if (n.ep)
        bu_close(&n.u, n.ep, ret == BRIDGE_ERR || ret == BRIDGE_LINK_DOWN, 1000);
    bu_cancel(&n.u, &n.rc);
    bu_fini(&n.u);
    ndc_free(n.ch);
    free(n.ring);
    return ret;
}

/* ==== the far (listen) side ============================================== */

struct fent {                        /* an array on its way into a far slot */
    struct bw_hdr   h;
    struct ndc_array slot;
    struct bu_req  *rd;              /* its DATA receive (leaked if UCX never lets go) */
};

struct far {
    const struct bridge_opts *o;
    struct bu     u;
    ndc_chan     *ch;
    struct bs_state *st;
    uint32_t      slots, window;
    uint64_t      slot_bytes;
    /* the connection */
    ucp_ep_h      ep;
    uint16_t      conn;
    int           link_err;
    unsigned char hbuf[BW_MAX_MSG], nbuf[BW_MAX_MSG];
    struct bu_req rh, rn;            /* posted HDR and NCTL receives */
    /* a connection being handshaken */
    ucp_conn_request_h conn_req;
    ucp_ep_h      cand;
    int           cand_err;
    int64_t       cand_deadline;
    unsigned char hello[BW_MAX_MSG];
    struct bu_req rhello;
    /* credits: far slots reserved at full size, not yet given an array */
    struct ndc_array *pool;
    uint32_t      npool, ungranted;
    struct fent  *pend;
    uint64_t      phead, ptail;
    int           have_last;
    uint64_t      last;
    int           fin;               /* BW_CLOSE or BW_DEAD from the near side */
    int           fin_have;
    uint64_t      fin_seq;
    unsigned char cbufs[NCTL_RING][BW_CTL_SIZE];
    struct bu_req creqs[NCTL_RING];
    unsigned      ci;
    uint64_t      arrays, bytes;
    int64_t       down_since, t0;
    int           ever;
    int           near_subscriber;   /* HELLO: seqs may skip, and that is no loss */
    uint64_t      skipped;           /* arrays the near subscriber skipped */
};

static void far_on_err(void *arg, ucp_ep_h ep, ucs_status_t s)
{
    struct far *f = arg;
    if (ep == f->ep && !f->link_err) {
        f->link_err = 1;
        info("link from the near bridge broken: %s", ucs_status_string(s));
    } else if (ep == f->cand) {
        f->cand_err = 1;
    }
}

static void far_on_conn(ucp_conn_request_h req, void *arg)
{
    struct far *f = arg;
    if (f->conn_req || f->cand)
        bu_reject(&f->u, req);   /* one handshake at a time */
    else
        f->conn_req = req;
}

static struct fent *fat(struct far *f, uint64_t i) { return &f->pend[i % f->window]; }

static int far_send_ctl(struct far *f, ucp_ep_h ep, const struct bw_ctl *c)
{
    struct bu_req *r = &f->creqs[f->ci % NCTL_RING];
    unsigned char *b = f->cbufs[f->ci % NCTL_RING];
    if (r->busy && bu_wait_req(&f->u, r, 2000))
        return -1;
    f->ci++;
    bw_ctl_encode(b, c);
    return bu_send(&f->u, ep, b, BW_CTL_SIZE, bw_tag(BW_CTL, f->conn, 0), NULL, r) ? -1 : 0;
}

static int far_ack(struct far *f)
{
    struct bw_ctl c = { .type = BW_ACK, .grant = f->ungranted, .have_seq = (uint32_t)f->have_last,
                        .seq = f->last };
    f->ungranted = 0;
    return far_send_ctl(f, f->ep, &c);
}

/* Reserve far slots up to the window without waiting. 0, or the
 * channel's error (-EOWNERDEAD: every consumer is gone; -EPIPE: closed). */
static int far_top_up(struct far *f, int64_t timeout)
{
    while (f->npool + (f->ptail - f->phead) < f->window) {
        struct ndc_array a = { .dtype = NDC_U8, .ndim = 1, .shape = { (int64_t)f->slot_bytes } };
        int r = ndc_reserve(f->ch, &a, timeout);
        if (r == -EAGAIN || r == -ETIMEDOUT || r == -EINTR)
            return 0;
        if (r)
            return r;
        f->pool[f->npool++] = a;
        f->ungranted++;
        timeout = 0;
    }
    return 0;
}

/* Forget the connection; arrays half-received go back to the pool, never
 * committed. */
static void far_drop(struct far *f)
{
    if (f->ep) {
        bu_close(&f->u, f->ep, 1, 1000);
        f->ep = NULL;
    }
    bu_cancel(&f->u, &f->rh);
    bu_cancel(&f->u, &f->rn);
    for (uint64_t i = f->phead; i < f->ptail; i++) {
        struct fent *e = fat(f, i);
        if (e->rd->busy) {
            ucp_request_cancel(f->u.worker, e->rd->ucx);
            if (bu_wait_req(&f->u, e->rd, 2000)) {
                /* UCX still owns the buffer: leave the slot reserved */
                e->rd = NULL;
                continue;
            }
        }
        f->pool[f->npool++] = e->slot;
    }
    for (uint64_t i = f->phead; i < f->ptail; i++) {
        struct fent *e = fat(f, i);
        if (!e->rd)
            e->rd = calloc(1, sizeof *e->rd);
    }
    f->phead = f->ptail = 0;
    f->link_err = 0;
    f->fin = 0;
    f->down_since = bu_now_ns();
}

static void far_refuse(struct far *f, int status, const char *why)
{
    struct bw_hello_ack a = { .status = status };
    snprintf(a.text, sizeof a.text, "%s", why);
    unsigned char b[BW_HELLO_ACK_SIZE];
    bw_hello_ack_encode(b, &a);
    struct bu_req r;
    uint16_t conn = bw_tag_conn(f->rhello.sender_tag);
    if (bu_send(&f->u, f->cand, b, sizeof b, bw_tag(BW_HELLO_ACK, conn, 0), NULL, &r) == 0)
        bu_wait_req(&f->u, &r, 1000);
    if (r.busy)
        bu_cancel(&f->u, &r);
    say("refused a connection: %s", why);
    bu_close(&f->u, f->cand, 0, 500);
    f->cand = NULL;
}

/* Open the far channel at the first handshake: create it with the near
 * channel's geometry (or the options'), or attach to an existing one. */
static int far_open(struct far *f, const struct bw_hello *h, char *why, size_t whylen)
{
    int fresh = 0;
    int r = ndc_open(&f->ch, f->o->chan, 0);
    if (r == -ENOENT) {
        struct ndc_chan_opts co = { .slots = f->o->slots ? f->o->slots : h->slots,
                                    .slot_bytes = f->o->slot_bytes ? f->o->slot_bytes : h->slot_bytes,
                                    .flags = f->o->broadcast ? NDC_BROADCAST : 0,
                                    .history = f->o->history, .slow_policy = f->o->slow_policy };
        r = ndc_create(&f->ch, f->o->chan, &co);
        fresh = r == 0;
        if (r == -EEXIST)
            r = ndc_open(&f->ch, f->o->chan, 0);
    }
    if (r) {
        snprintf(why, whylen, "far channel %s: %s (%s)", f->o->chan, ndc_strerror(r), ndc_last_error());
        return r;
    }
    struct ndc_stat st;
    ndc_stat(f->ch, &st);
    f->slots = st.slots;
    f->slot_bytes = st.slot_bytes;
    if (!fresh && f->o->broadcast && !st.broadcast)
        info("far channel %s exists as a work queue: --broadcast applies only to a channel this "
             "bridge creates", f->o->chan);
    f->window = f->o->window && f->o->window < st.slots ? f->o->window : st.slots;
    f->pool = calloc(f->window, sizeof *f->pool);
    f->pend = calloc(f->window, sizeof *f->pend);
    for (uint32_t i = 0; f->pend && i < f->window; i++)
        f->pend[i].rd = calloc(1, sizeof *f->pend[i].rd);
    if (!f->pool || !f->pend)
        return -ENOMEM;
    r = bs_open(&f->st, f->o->chan, fresh);
    if (r) {
        snprintf(why, whylen, "resume record for %s: %s", f->o->chan, strerror(-r));
        return r;
    }
    info("%s far channel %s: %u slots x %llu B%s", fresh ? "created" : "opened", f->o->chan,
         f->slots, (unsigned long long)f->slot_bytes, st.broadcast ? ", broadcast" : "");
    return 0;
}

/* A HELLO arrived from the candidate: accept it (replacing a connection
 * still up, whose near bridge has evidently restarted) or refuse it. */
static int far_handshake(struct far *f)
{
    char why[256];
    struct bw_hello h;
    if (f->rhello.status != UCS_OK) {
        if (f->rhello.status == UCS_ERR_CANCELED)
            return 0;
        snprintf(why, sizeof why, "unreadable HELLO: %s", ucs_status_string(f->rhello.status));
        far_refuse(f, -EPROTO, why);
        return 0;
    }
    int r = bw_hello_decode(f->hello, f->rhello.length, &h, why, sizeof why);
    if (r) {
        far_refuse(f, r, why);
        return 0;
    }
    if (!f->ch && (r = far_open(f, &h, why, sizeof why))) {
        far_refuse(f, r, why);
        return BRIDGE_ERR;
    }
    if (f->slot_bytes < h.slot_bytes) {
        snprintf(why, sizeof why, "far channel %s has %llu-byte slots, the near channel %llu: "
                 "its arrays may not fit", f->o->chan, (unsigned long long)f->slot_bytes,
                 (unsigned long long)h.slot_bytes);
        far_refuse(f, -E2BIG, why);
        return 0;
    }
    if (f->ep) {
        info("a new near bridge replaces the connection still up");
        far_drop(f);
    }
    uint64_t last = 0;
    f->near_subscriber = !!(h.flags & BW_HELLO_SUBSCRIBER);
    f->have_last = bs_last(f->st, f->ch, h.chan, &last);
    f->last = f->have_last ? last : 0;
    r = far_top_up(f, 0);
    if (r == -EOWNERDEAD || r == -EPIPE) {
        snprintf(why, sizeof why, "far channel %s: %s", f->o->chan, ndc_strerror(r));
        far_refuse(f, r, why);
        return BRIDGE_PEER_DEAD;
    }
    struct bw_hello_ack a = { .credits = f->npool, .have_last = (uint32_t)f->have_last, .last_seq = f->last,
                              .far_slots = f->slots, .far_slot_bytes = f->slot_bytes };
    f->ungranted = 0;
    f->ep = f->cand;
    f->cand = NULL;
    f->conn = h.conn;
    unsigned char b[BW_HELLO_ACK_SIZE];
    bw_hello_ack_encode(b, &a);
    struct bu_req rs;
    bu_send(&f->u, f->ep, b, sizeof b, bw_tag(BW_HELLO_ACK, f->conn, 0), NULL, &rs);
    bu_wait_req(&f->u, &rs, 1000);
    if (rs.busy)
        bu_cancel(&f->u, &rs);
    bu_recv(&f->u, f->hbuf, sizeof f->hbuf, bw_tag(BW_HDR, f->conn, 0), BW_MASK_CONN, NULL, &f->rh);
    bu_recv(&f->u, f->nbuf, sizeof f->nbuf, bw_tag(BW_NCTL, f->conn, 0), BW_MASK_CONN, NULL, &f->rn);
    char tl[256];
    if (f->have_last)
        info("accepted near channel %s over %s; resuming after seq %llu", h.chan,
             bu_transports(f->ep, tl, sizeof tl), (unsigned long long)f->last);
    else
        info("accepted near channel %s over %s; a new stream", h.chan, bu_transports(f->ep, tl, sizeof tl));
    f->down_since = 0;
    f->ever = 1;
    return 0;
}

/* A HDR arrived: give it a reserved slot and post its DATA receive there. */
static int far_on_hdr(struct far *f)
{
    char why[200];
    struct bw_hdr h;
    if (f->rh.status != UCS_OK) {
        if (f->rh.status != UCS_ERR_CANCELED)
            f->link_err = 1;
        return 0;
    }
    if (bw_hdr_decode(f->hbuf, f->rh.length, f->slot_bytes, &h, why, sizeof why)) {
        say("protocol error from the near bridge: %s; dropping the link", why);
        f->link_err = 1;
        return 0;
    }
    if (f->npool == 0) {
        say("protocol error from the near bridge: an array beyond its credits; dropping the link");
        f->link_err = 1;
        return 0;
    }
    struct fent *e = fat(f, f->ptail++);
    e->h = h;
    e->slot = f->pool[--f->npool];
    ucp_mem_h mh = bu_memh(&f->u, e->slot.data, f->slot_bytes);
    bu_recv(&f->u, e->slot.data, h.nbytes, bw_tag(BW_DATA, f->conn, h.seq), BW_MASK_ALL, mh, e->rd);
    bu_recv(&f->u, f->hbuf, sizeof f->hbuf, bw_tag(BW_HDR, f->conn, 0), BW_MASK_CONN, NULL, &f->rh);
    return 0;
}

/* Commit what arrived, in seq order. 0, or an exit status. */
static int far_commit_ready(struct far *f)
{
    while (f->phead < f->ptail && fat(f, f->phead)->rd->done) {
        struct fent *e = fat(f, f->phead);
        if (e->rd->status != UCS_OK || e->rd->length != e->h.nbytes) {
            if (e->rd->status != UCS_ERR_CANCELED)
                f->link_err = 1;
            return 0;   /* far_drop returns the slot */
        }
        f->phead++;
        if (f->have_last && e->h.seq <= f->last) {
            f->pool[f->npool++] = e->slot;   /* a duplicate: the slot is a credit again */
            f->ungranted++;
            continue;
        }
        if (f->have_last && e->h.seq > f->last + 1 && f->near_subscriber)
            f->skipped += e->h.seq - f->last - 1;   /* not for the near subscriber: no loss */
        else if (f->have_last && e->h.seq > f->last + 1)
            say("seq %llu..%llu never reached this bridge: the near bridge died holding them",
                (unsigned long long)f->last + 1, (unsigned long long)e->h.seq - 1);
        struct ndc_array a;
        bw_hdr_to_array(&e->h, &a);
        a.data = e->slot.data;
        struct ndc_stat st;
        ndc_stat(f->ch, &st);
        bs_begin(f->st, st.sent, e->h.seq);
        int r = ndc_commit(f->ch, &a);
        if (r) {
            say("%s: commit: %s (%s)", f->o->chan, ndc_strerror(r), ndc_last_error());
            return r == -EPIPE ? BRIDGE_PEER_DEAD : BRIDGE_ERR;
        }
        bs_end(f->st, e->h.seq);
        f->have_last = 1;
        f->last = e->h.seq;
        f->arrays++;
        f->bytes += e->h.nbytes;
        int t = far_top_up(f, 0);
        if (t)
            return t == -EOWNERDEAD || t == -EPIPE ? BRIDGE_PEER_DEAD : BRIDGE_ERR;
        if (f->ep && far_ack(f))
            f->link_err = 1;
    }
    return 0;
}

/* After the last word to the near side: let it hang up first (up to 2 s),
 * so our close cannot reset the link before it has read that word. */
static void far_linger(struct far *f)
{
    int64_t end = bu_now_ns() + 2000 * MS;
    while (f->ep && !f->link_err && bu_now_ns() < end)
        if (!bu_progress(&f->u))
            bu_wait(&f->u, 5);
}

static void far_give_back(struct far *f)
{
    while (f->npool)
        ndc_cancel(f->ch, &f->pool[--f->npool]);
}

int bridge_listen(const struct bridge_opts *o)
{
    struct far f;
    memset(&f, 0, sizeof f);
    f.o = o;
    quiet = o->quiet;
    char err[256];
    /* a restarted bridge takes its port back from the TIME_WAIT connections
     * of the one before (unless the user says otherwise) */
    setenv("UCX_CM_REUSEADDR", "y", 0);
    if (bu_init(&f.u, err, sizeof err)) {
        say("%s", err);
        return BRIDGE_ERR;
    }
    uint16_t port;
    /* a restarted bridge may find its port still held a moment by the
     * connections of the one before: keep trying up to --link-timeout */
    int64_t give_up = bu_now_ns() + (int64_t)(o->link_timeout * 1e9);
    while (bu_listen(&f.u, o->host, o->port, &port, far_on_conn, &f, err, sizeof err)) {
        if (bu_now_ns() > give_up) {
            say("%s", err);
            bu_fini(&f.u);
            return BRIDGE_ERR;
        }
        struct timespec ts = { 0, RETRY_MS * MS };
        nanosleep(&ts, NULL);
    }
    info("listening on %s:%u for channel %s", o->host && *o->host ? o->host : "*", port, o->chan);
    bu_recv(&f.u, f.hello, sizeof f.hello, bw_tag(BW_HELLO, 0, 0), BW_MASK_KIND, NULL, &f.rhello);
    f.t0 = bu_now_ns();
    int64_t next_stat = o->stat_every > 0 ? f.t0 + (int64_t)(o->stat_every * 1e9) : INT64_MAX;
    int ret = BRIDGE_OK, idle = 0;
    for (;;) {
        int busy = 0;
        while (bu_progress(&f.u))
            busy = 1;
        if (f.conn_req) {
            if (bu_accept(&f.u, f.conn_req, &f.cand, far_on_err, &f, err, sizeof err))
                info("%s", err), f.cand = NULL;
            f.conn_req = NULL;
            f.cand_err = 0;
            f.cand_deadline = bu_now_ns() + HELLO_MS * MS;
        }
        if (f.rhello.done) {
            if (f.cand) {
                int r = far_handshake(&f);
                if (r) {
                    ret = r;
                    break;
                }
            }
            bu_recv(&f.u, f.hello, sizeof f.hello, bw_tag(BW_HELLO, 0, 0), BW_MASK_KIND, NULL, &f.rhello);
        }
        if (f.cand && (f.cand_err || bu_now_ns() > f.cand_deadline)) {
            info("dropped a connection that never said HELLO");
            bu_close(&f.u, f.cand, 1, 500);
            f.cand = NULL;
        }
        if (f.ep && f.rh.done && !f.link_err)
            far_on_hdr(&f);
        if (f.ep && !f.link_err) {
            int r = far_commit_ready(&f);
            if (r) {
                ret = r;
                if (r == BRIDGE_PEER_DEAD) {
                    struct bw_ctl c = { .type = BW_DEAD };
                    far_send_ctl(&f, f.ep, &c);
                    far_linger(&f);
                    bs_remove(f.st);
                    say("the consumers of %s are gone: told the near side, which detaches as a dead receiver",
                        o->chan);
                }
                break;
            }
        }
        if (f.ep && f.rn.done && !f.link_err) {
            struct bw_ctl c;
            char why[200];
            if (f.rn.status != UCS_OK) {
                if (f.rn.status != UCS_ERR_CANCELED)
                    f.link_err = 1;
            } else if (bw_ctl_decode(f.nbuf, f.rn.length, &c, why, sizeof why) ||
                       (c.type != BW_CLOSE && c.type != BW_DEAD)) {
                say("protocol error from the near bridge: %s; dropping the link", why);
                f.link_err = 1;
            } else {
                f.fin = (int)c.type;
                f.fin_have = (int)c.have_seq;
                f.fin_seq = c.seq;
                bu_recv(&f.u, f.nbuf, sizeof f.nbuf, bw_tag(BW_NCTL, f.conn, 0), BW_MASK_CONN, NULL, &f.rn);
            }
        }
        if (f.link_err) {
            far_drop(&f);
            continue;
        }
        if (f.fin && f.phead == f.ptail && (!f.fin_have || (f.have_last && f.last >= f.fin_seq))) {
            far_give_back(&f);
            bs_remove(f.st);
            if (f.fin == BW_CLOSE)
                ndc_close(f.ch);
            struct bw_ctl c = { .type = BW_CLOSED };   /* to CLOSE and to DEAD alike */
            far_send_ctl(&f, f.ep, &c);
            far_linger(&f);
            if (f.fin == BW_CLOSE) {
                info("end of stream: %llu arrays, %.1f MiB; %s closed", (unsigned long long)f.arrays,
                     (double)f.bytes / 1048576, o->chan);
                if (f.skipped)
                    info("%llu arrays were skipped by the near side, a subscriber of a latest-policy "
                         "broadcast channel", (unsigned long long)f.skipped);
                ret = BRIDGE_OK;
            } else {
                say("the producers of the near channel died: detaching from %s without closing it, "
                    "so its receivers see a dead sender", o->chan);
                ret = BRIDGE_PEER_DEAD;
            }
            break;
        }
        if (!f.ep && f.ever && (double)(bu_now_ns() - f.down_since) / 1e9 > o->link_timeout) {
            say("link down for more than %g s: detaching from %s without closing it, "
                "so its receivers see a dead sender", o->link_timeout, o->chan);
            far_give_back(&f);
            bs_remove(f.st);
            ret = BRIDGE_LINK_DOWN;
            break;
        }
        if (bu_now_ns() >= next_stat) {
            stat_line("committed", f.t0, f.arrays, f.bytes, f.ptail - f.phead, f.npool, f.ep != NULL);
            next_stat += (int64_t)(o->stat_every * 1e9);
        }
        if (f.ep && f.npool == 0 && f.phead == f.ptail && !busy) {
            /* the near side has no credit: wait on the channel for one, a
             * slice at a time, which also notices consumers that died */
            int r = far_top_up(&f, SLICE_NS);
            if (r) {
                struct bw_ctl c = { .type = BW_DEAD };
                far_send_ctl(&f, f.ep, &c);
                far_linger(&f);
                say("the consumers of %s are gone (%s): told the near side, which detaches as a dead "
                    "receiver", o->chan, ndc_strerror(r));
                bs_remove(f.st);
                ret = BRIDGE_PEER_DEAD;
                break;
            }
            if (f.ungranted && far_ack(&f))
                f.link_err = 1;
            continue;
        }
        if (busy)
            idle = 0;
        else if (f.phead < f.ptail) {
            if (++idle > 64)
                bu_wait(&f.u, 1);
        } else {
            bu_wait(&f.u, 50);
        }
    }
    far_give_back(&f);
    if (f.cand)
        bu_close(&f.u, f.cand, 1, 500);
    if (f.ep)
        bu_close(&f.u, f.ep, ret == BRIDGE_ERR || ret == BRIDGE_LINK_DOWN, 1000);
    bu_cancel(&f.u, &f.rh);
    bu_cancel(&f.u, &f.rn);
    bu_cancel(&f.u, &f.rhello);
    bu_fini(&f.u);
    bs_close(f.st);
    ndc_free(f.ch);   /* without ndc_close unless the stream ended */
    free(f.pool);
    if (f.pend)
        for (uint32_t i = 0; i < f.window; i++)
            free(f.pend[i].rd);
    free(f.pend);
    return ret;
}
