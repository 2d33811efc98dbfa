/* ndchan-bridge's wire protocol: what the two bridges say to each other.
 *
 * Every message is a UCX tagged message. The 64-bit tag says what it is
 * and to which connection it belongs, so a late message of a dead
 * connection never matches a receive of the next one:
 *
 *   bits 63..56  kind (enum bw_kind)
 *   bits 55..40  connection id, chosen by the sending (connect) side per
 *                connection and echoed by the far side
 *   bits 39..0   the array's seq (payloads only), modulo 2^40
 *
 * A connection opens with HELLO (near -> far) and HELLO_ACK (far -> near).
 * Then, per array, HDR (dtype, shape, tag, the producer's seq, size) and
 * DATA (the payload, straight from the near slot into a far slot); the far
 * side answers with CTL ACK (committed up to seq, plus credits). The near
 * side ends with NCTL CLOSE (end of stream) or NCTL DEAD (every producer
 * died), which the far side answers with CTL CLOSED once it has acted on it;
 * the far side says CTL DEAD when its consumers died. Whoever spoke last
 * waits for the other to hang up, so the last word is never lost to a
 * reset connection.
 *
 * Integers are little-endian at fixed offsets; every decoder checks the
 * length, the magic and the version before it reads anything else, and
 * checks every field before it is used. The layouts below are the wire's
 * ABI: change one and bump BW_VERSION.
 */
#ifndef NDC_TOOLS_BRIDGE_WIRE_H
#define NDC_TOOLS_BRIDGE_WIRE_H
#include <stddef.h>
#include <stdint.h>
#include "ndchan.h"

#define BW_MAGIC   0x4244434eu          /* "NCDB" read as little-endian bytes */
#define BW_VERSION 2u                   /* 2: HELLO's flags */

enum bw_kind {
    BW_HELLO = 1, BW_HELLO_ACK, BW_HDR, BW_DATA,
    BW_CTL,      /* far -> near: ACK, CLOSED, DEAD */
    BW_NCTL,     /* near -> far: CLOSE, DEAD */
};
#define BW_KIND_SHIFT 56
#define BW_CONN_SHIFT 40
#define BW_SEQ_MASK   ((1ull << BW_CONN_SHIFT) - 1)
#define BW_MASK_KIND  (0xffull << BW_KIND_SHIFT)
#define BW_MASK_CONN  (BW_MASK_KIND | (0xffffull << BW_CONN_SHIFT))
#define BW_MASK_ALL   (~0ull)

static inline uint64_t bw_tag(enum bw_kind k, uint16_t conn, uint64_t seq)
{
    return ((uint64_t)k << BW_KIND_SHIFT) | ((uint64_t)conn << BW_CONN_SHIFT) | (seq & BW_SEQ_MASK);
}
static inline enum bw_kind bw_tag_kind(uint64_t tag) { return (enum bw_kind)(tag >> BW_KIND_SHIFT); }
static inline uint16_t bw_tag_conn(uint64_t tag) { return (uint16_t)(tag >> BW_CONN_SHIFT); }

#define BW_NAME_LEN 208   /* > NDC_NAME_MAX, so any channel name fits with its NUL */
#define BW_TEXT_LEN 160

/* HELLO flags */
#define BW_HELLO_SUBSCRIBER 1u   /* the near bridge is a subscriber of a broadcast channel:
                                    seqs may skip (latest policy; arrays published while
                                    no bridge was subscribed), and that is no loss */
#define BW_HELLO_FLAGS      BW_HELLO_SUBSCRIBER

/* near -> far: who I am, what I carry */
struct bw_hello {
    uint32_t version;
    uint16_t conn;
    uint16_t flags;          /* BW_HELLO_*; other bits are refused */
    uint32_t slots;          /* the near channel's geometry: the default for a far */
    uint64_t slot_bytes;     /* channel the far bridge creates */
    char     chan[BW_NAME_LEN];   /* the near channel's name (the resume key) */
};

/* far -> near: accepted (status 0) or refused (-errno, and why in text) */
struct bw_hello_ack {
    uint32_t version;
    int32_t  status;
    uint32_t credits;        /* far slots reserved for this connection */
    uint32_t have_last;      /* 1: last_seq is the last near seq the far channel committed */
    uint64_t last_seq;
    uint32_t far_slots;
    uint64_t far_slot_bytes;
    char     text[BW_TEXT_LEN];
};

/* near -> far, one per array, before its DATA */
struct bw_hdr {
    uint32_t dtype;
    uint32_t ndim;
    uint64_t tag, seq, nbytes;
    int64_t  shape[NDC_MAX_DIMS];
};

enum bw_ctl_type { BW_ACK = 1, BW_CLOSE, BW_CLOSED, BW_DEAD };
struct bw_ctl {
    uint32_t type;           /* enum bw_ctl_type */
    uint32_t grant;          /* ACK: credits returned (far slots reserved again) */
    uint32_t have_seq;
    uint64_t seq;            /* ACK: committed up to here; CLOSE/DEAD: last seq sent */
};

/* Encoded sizes; a buffer of BW_MAX_MSG holds any of them. */
/* Each opens with a 16-byte preamble: magic u32, version u16, kind u16,
 * length u32, zero u32. */
#define BW_HELLO_SIZE     (16 + 16 + BW_NAME_LEN)
#define BW_HELLO_ACK_SIZE (16 + 32 + BW_TEXT_LEN)
#define BW_HDR_SIZE       (16 + 32 + 8 * NDC_MAX_DIMS)
#define BW_CTL_SIZE       (16 + 24)
#define BW_MAX_MSG        512

/* Encoders return the encoded length. Decoders return 0, or -EPROTO (bad
 * magic, length or kind) / -EPROTONOSUPPORT (another version; *version
 * says which) / -EBADMSG (a field out of range), with a reason in why. */
size_t bw_hello_encode(unsigned char *b, const struct bw_hello *m);
int    bw_hello_decode(const unsigned char *b, size_t n, struct bw_hello *m, char *why, size_t whylen);
size_t bw_hello_ack_encode(unsigned char *b, const struct bw_hello_ack *m);
int    bw_hello_ack_decode(const unsigned char *b, size_t n, struct bw_hello_ack *m, char *why, size_t whylen);
size_t bw_hdr_encode(unsigned char *b, const struct bw_hdr *m);
/* Also checks the array: a known dtype, 0..NDC_MAX_DIMS dims, no negative
 * extent, nbytes equal to the shape's size and at most max_bytes. */
int    bw_hdr_decode(const unsigned char *b, size_t n, uint64_t max_bytes, struct bw_hdr *m,
                     char *why, size_t whylen);
size_t bw_ctl_encode(unsigned char *b, const struct bw_ctl *m);
int    bw_ctl_decode(const unsigned char *b, size_t n, struct bw_ctl *m, char *why, size_t whylen);

/* The header of an array, and the array a header describes (data NULL,
 * C-order strides). */
void bw_hdr_from_array(struct bw_hdr *h, const struct ndc_array *a);
int  bw_hdr_to_array(const struct bw_hdr *h, struct ndc_array *a);

#endif
