/* ndchan-bridge: the wire codec (see bridge_wire.h). Nothing a peer sends
 * is trusted: each decoder checks length, magic and version first, then
 * every field, and leaves *m untouched on failure. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bridge_wire.h"

static void put16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int fail(int err, char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (why && whylen)
        vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return err;
}

static const char *kind_name(unsigned k)
{
    static const char *n[] = { "?", "HELLO", "HELLO_ACK", "HDR", "DATA", "CTL", "NCTL" };
    return k < sizeof n / sizeof *n ? n[k] : "?";
}

static void preamble(unsigned char *b, enum bw_kind k, size_t len)
{
    put32(b, BW_MAGIC);
    put16(b + 4, BW_VERSION);
    put16(b + 6, (uint16_t)k);
    put32(b + 8, (uint32_t)len);
    put32(b + 12, 0);
}

/* The version is checked before the length: a future version may have
 * grown the message, and deserves "another version", not "bad length". */
static int check_preamble(const unsigned char *b, size_t n, enum bw_kind k, size_t len,
                          uint32_t *version, char *why, size_t whylen)
{
    if (n < 16 || get32(b) != BW_MAGIC)
        return fail(-EPROTO, why, whylen, "not an ndchan-bridge message (%zu bytes, no magic)", n);
    *version = get16(b + 4);
    if (*version != BW_VERSION)
        return fail(-EPROTONOSUPPORT, why, whylen,
                    "peer speaks bridge protocol version %u, this bridge speaks %u",
                    *version, BW_VERSION);
    if (get16(b + 6) != k)
        return fail(-EPROTO, why, whylen, "expected %s, got message kind %u",
                    kind_name(k), get16(b + 6));
    if (n != len || get32(b + 8) != len || get32(b + 12) != 0)
        return fail(-EPROTO, why, whylen, "%s of %zu bytes (length field %u), want %zu",
                    kind_name(k), n, get32(b + 8), len);
    return 0;
}

/* A fixed-size text field: must hold a NUL. */
static int get_text(char *dst, const unsigned char *src, size_t len)
{
    if (!memchr(src, 0, len))
        return -1;
    memcpy(dst, src, len);
    return 0;
}

size_t bw_hello_encode(unsigned char *b, const struct bw_hello *m)
{
    memset(b, 0, BW_HELLO_SIZE);
    preamble(b, BW_HELLO, BW_HELLO_SIZE);
    put16(b + 16, m->conn);
    put16(b + 18, m->flags);
    put32(b + 20, m->slots);
    put64(b + 24, m->slot_bytes);
    snprintf((char *)b + 32, BW_NAME_LEN, "%s", m->chan);
    return BW_HELLO_SIZE;
}

int bw_hello_decode(const unsigned char *b, size_t n, struct bw_hello *m, char *why, size_t whylen)
{
    struct bw_hello h;
    int r = check_preamble(b, n, BW_HELLO, BW_HELLO_SIZE, &h.version, why, whylen);
    if (r) {
        m->version = h.version;
        return r;
    }
    h.conn = get16(b + 16);
    h.slots = get32(b + 20);
    h.slot_bytes = get64(b + 24);
    h.flags = get16(b + 18);
    if (h.flags & ~BW_HELLO_FLAGS)
        return fail(-EBADMSG, why, whylen, "HELLO: unknown flags 0x%x", (unsigned)(h.flags & ~BW_HELLO_FLAGS));
    if (h.slots == 0 || h.slots > NDC_MAX_SLOTS || h.slot_bytes == 0 || h.slot_bytes > NDC_MAX_SLOT_BYTES)
        return fail(-EBADMSG, why, whylen, "HELLO: geometry %u x %llu out of range", h.slots,
                    (unsigned long long)h.slot_bytes);
    if (get_text(h.chan, b + 32, BW_NAME_LEN))
        return fail(-EBADMSG, why, whylen, "HELLO: channel name not terminated");
    *m = h;
    return 0;
}

size_t bw_hello_ack_encode(unsigned char *b, const struct bw_hello_ack *m)
{
    memset(b, 0, BW_HELLO_ACK_SIZE);
    preamble(b, BW_HELLO_ACK, BW_HELLO_ACK_SIZE);
    put32(b + 16, (uint32_t)m->status);
    put32(b + 20, m->credits);
    put32(b + 24, m->have_last);
    put32(b + 28, m->far_slots);
    put64(b + 32, m->last_seq);
    put64(b + 40, m->far_slot_bytes);
    snprintf((char *)b + 48, BW_TEXT_LEN, "%s", m->text);
    return BW_HELLO_ACK_SIZE;
}

int bw_hello_ack_decode(const unsigned char *b, size_t n, struct bw_hello_ack *m, char *why, size_t whylen)
{
    struct bw_hello_ack h;
    int r = check_preamble(b, n, BW_HELLO_ACK, BW_HELLO_ACK_SIZE, &h.version, why, whylen);
    if (r) {
        m->version = h.version;
        return r;
    }
    h.status = (int32_t)get32(b + 16);
    h.credits = get32(b + 20);
    h.have_last = get32(b + 24);
    h.far_slots = get32(b + 28);
    h.last_seq = get64(b + 32);
    h.far_slot_bytes = get64(b + 40);
    if (get_text(h.text, b + 48, BW_TEXT_LEN))
        return fail(-EBADMSG, why, whylen, "HELLO_ACK: text not terminated");
    if (h.status > 0 || h.status < -4095 || h.have_last > 1 || h.credits > NDC_MAX_SLOTS)
        return fail(-EBADMSG, why, whylen, "HELLO_ACK: status %d, credits %u out of range",
                    h.status, h.credits);
    *m = h;
    return 0;
}

size_t bw_hdr_encode(unsigned char *b, const struct bw_hdr *m)
{
    memset(b, 0, BW_HDR_SIZE);
    preamble(b, BW_HDR, BW_HDR_SIZE);
    put32(b + 16, m->dtype);
    put32(b + 20, m->ndim);
    put64(b + 24, m->tag);
    put64(b + 32, m->seq);
    put64(b + 40, m->nbytes);
    for (uint32_t i = 0; i < m->ndim && i < NDC_MAX_DIMS; i++)
        put64(b + 48 + 8 * i, (uint64_t)m->shape[i]);
    return BW_HDR_SIZE;
}

int bw_hdr_decode(const unsigned char *b, size_t n, uint64_t max_bytes, struct bw_hdr *m,
                  char *why, size_t whylen)
{
    struct bw_hdr h;
    uint32_t version;
    int r = check_preamble(b, n, BW_HDR, BW_HDR_SIZE, &version, why, whylen);
    if (r)
        return r;
    memset(&h, 0, sizeof h);
    h.dtype = get32(b + 16);
    h.ndim = get32(b + 20);
    h.tag = get64(b + 24);
    h.seq = get64(b + 32);
    h.nbytes = get64(b + 40);
    if (h.ndim > NDC_MAX_DIMS)
        return fail(-EBADMSG, why, whylen, "HDR: ndim %u", h.ndim);
    for (uint32_t i = 0; i < NDC_MAX_DIMS; i++) {
        uint64_t v = get64(b + 48 + 8 * i);
        if (i >= h.ndim && v != 0)
            return fail(-EBADMSG, why, whylen, "HDR: extent beyond ndim");
        h.shape[i] = (int64_t)v;
    }
    struct ndc_array a;
    if (bw_hdr_to_array(&h, &a))
        return fail(-EBADMSG, why, whylen, "HDR: dtype %u / shape invalid", h.dtype);
    size_t nb = ndc_array_nbytes(&a);
    if (nb != h.nbytes)
        return fail(-EBADMSG, why, whylen, "HDR: %llu bytes announced, the shape holds %zu",
                    (unsigned long long)h.nbytes, nb);
    if (h.nbytes > max_bytes)
        return fail(-EBADMSG, why, whylen, "HDR: %llu bytes, larger than a slot (%llu)",
                    (unsigned long long)h.nbytes, (unsigned long long)max_bytes);
    *m = h;
    return 0;
}

size_t bw_ctl_encode(unsigned char *b, const struct bw_ctl *m)
{
    memset(b, 0, BW_CTL_SIZE);
    preamble(b, BW_CTL, BW_CTL_SIZE);
    put32(b + 16, m->type);
    put32(b + 20, m->grant);
    put32(b + 24, m->have_seq);
    put64(b + 32, m->seq);
    return BW_CTL_SIZE;
}

int bw_ctl_decode(const unsigned char *b, size_t n, struct bw_ctl *m, char *why, size_t whylen)
{
    struct bw_ctl c;
    uint32_t version;
    /* NCTL and CTL share the layout; the tag told the kinds apart */
    unsigned char tmp[BW_CTL_SIZE];
    if (n == BW_CTL_SIZE) {
        memcpy(tmp, b, n);
        put16(tmp + 6, BW_CTL);
        b = tmp;
    }
    int r = check_preamble(b, n, BW_CTL, BW_CTL_SIZE, &version, why, whylen);
    if (r)
        return r;
    c.type = get32(b + 16);
    c.grant = get32(b + 20);
    c.have_seq = get32(b + 24);
    c.seq = get64(b + 32);
    if (c.type < BW_ACK || c.type > BW_DEAD || c.have_seq > 1 || c.grant > NDC_MAX_SLOTS ||
        get32(b + 28) != 0)
        return fail(-EBADMSG, why, whylen, "CTL: type %u grant %u out of range", c.type, c.grant);
    *m = c;
    return 0;
}

void bw_hdr_from_array(struct bw_hdr *h, const struct ndc_array *a)
{
    memset(h, 0, sizeof *h);
    h->dtype = (uint32_t)a->dtype;
    h->ndim = (uint32_t)a->ndim;
    h->tag = a->tag;
    h->seq = a->seq;
    h->nbytes = ndc_array_nbytes(a);
    for (int i = 0; i < a->ndim; i++)
        h->shape[i] = a->shape[i];
}

int bw_hdr_to_array(const struct bw_hdr *h, struct ndc_array *a)
{
    struct ndc_array t;
    if (h->dtype > 255)
        return -EINVAL;
    int r = ndc_array_init(&t, (enum ndc_dtype)h->dtype, (int)h->ndim, h->shape, NULL);
    if (r)
        return r;
    t.tag = h->tag;
    t.seq = h->seq;
    *a = t;
    return 0;
}
