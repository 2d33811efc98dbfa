/* ndchan-bridge: the UCX transport (see bridge_ucx.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge_ucx.h"

int64_t bu_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int bu_init(struct bu *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->efd = -1;
    ucp_config_t *cfg;
    ucs_status_t s = ucp_config_read(NULL, NULL, &cfg);   /* UCX_TLS and friends apply */
    if (s != UCS_OK) {
        snprintf(err, errlen, "ucp_config_read: %s", ucs_status_string(s));
        return -1;
    }
    ucp_params_t p = {
        .field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME,
        .features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP,
        .name = "ndchan-bridge",
    };
    s = ucp_init(&p, cfg, &u->ctx);
    ucp_config_release(cfg);
    if (s != UCS_OK) {
        snprintf(err, errlen, "ucp_init: %s", ucs_status_string(s));
        return -1;
    }
    ucp_worker_params_t wp = {
        .field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
        .thread_mode = UCS_THREAD_MODE_SINGLE,
    };
    s = ucp_worker_create(u->ctx, &wp, &u->worker);
    if (s == UCS_OK)
        s = ucp_worker_get_efd(u->worker, &u->efd);
    if (s != UCS_OK) {
        snprintf(err, errlen, "ucp worker: %s", ucs_status_string(s));
        bu_fini(u);
        return -1;
    }
    return 0;
}

void bu_fini(struct bu *u)
{
    if (u->listener)
        ucp_listener_destroy(u->listener);
    for (size_t i = 0; i < u->capmaps; i++)
        if (u->maps[i].memh)
            ucp_mem_unmap(u->ctx, u->maps[i].memh);
    free(u->maps);
    if (u->worker)
        ucp_worker_destroy(u->worker);
    if (u->ctx)
        ucp_cleanup(u->ctx);
    memset(u, 0, sizeof *u);
    u->efd = -1;
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len,
                   char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = host ? 0 : AI_PASSIVE }, *res;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    int r = getaddrinfo(host, ps, &hints, &res);
    if (r) {
        snprintf(err, errlen, "%s: %s", host ? host : "*", gai_strerror(r));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int bu_listen(struct bu *u, const char *addr, uint16_t port, uint16_t *bound,
              void (*on_conn)(ucp_conn_request_h, void *), void *arg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(addr && *addr ? addr : NULL, port, &ss, &len, err, errlen))
        return -1;
    ucp_listener_params_t p = {
        .field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
        .sockaddr = { .addr = (struct sockaddr *)&ss, .addrlen = len },
        .conn_handler = { .cb = on_conn, .arg = arg },
    };
    ucs_status_t s = ucp_listener_create(u->worker, &p, &u->listener);
    if (s != UCS_OK) {
        snprintf(err, errlen, "listen on %s:%u: %s", addr && *addr ? addr : "*", port,
                 ucs_status_string(s));
        return -1;
    }
    ucp_listener_attr_t a = { .field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR };
    *bound = port;
    if (ucp_listener_query(u->listener, &a) == UCS_OK) {
        if (a.sockaddr.ss_family == AF_INET)
            *bound = ntohs(((struct sockaddr_in *)&a.sockaddr)->sin_port);
        else if (a.sockaddr.ss_family == AF_INET6)
            *bound = ntohs(((struct sockaddr_in6 *)&a.sockaddr)->sin6_port);
    }
    return 0;
}

static int make_ep(struct bu *u, ucp_ep_params_t *p, ucp_ep_h *ep,
                   void (*on_err)(void *, ucp_ep_h, ucs_status_t), void *arg, char *err, size_t errlen)
{
    p->field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p->err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p->err_handler.cb = on_err;
    p->err_handler.arg = arg;
    ucs_status_t s = ucp_ep_create(u->worker, p, ep);
    if (s != UCS_OK) {
        snprintf(err, errlen, "ucp_ep_create: %s", ucs_status_string(s));
        return -1;
    }
    return 0;
}

int bu_accept(struct bu *u, ucp_conn_request_h req, ucp_ep_h *ep,
              void (*on_err)(void *, ucp_ep_h, ucs_status_t), void *arg, char *err, size_t errlen)
{
    ucp_ep_params_t p = { .field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST, .conn_request = req };
    return make_ep(u, &p, ep, on_err, arg, err, errlen);
}

int bu_connect(struct bu *u, const char *host, uint16_t port, ucp_ep_h *ep,
               void (*on_err)(void *, ucp_ep_h, ucs_status_t), void *arg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(host, port, &ss, &len, err, errlen))
        return -1;
    ucp_ep_params_t p = {
        .field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR,
        .flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
        .sockaddr = { .addr = (struct sockaddr *)&ss, .addrlen = len },
    };
    return make_ep(u, &p, ep, on_err, arg, err, errlen);
}

void bu_reject(struct bu *u, ucp_conn_request_h req)
{
    ucp_listener_reject(u->listener, req);
}

void bu_close(struct bu *u, ucp_ep_h ep, int force, int timeout_ms)
{
    if (!ep)
        return;
    ucp_request_param_t p = { .op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                              .flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0 };
    void *req = ucp_ep_close_nbx(ep, &p);
    if (!UCS_PTR_IS_PTR(req))
        return;
    int64_t end = bu_now_ns() + (int64_t)timeout_ms * 1000000;
    while (ucp_request_check_status(req) == UCS_INPROGRESS) {
        if (bu_now_ns() > end && !force) {
            /* a flush that cannot finish (the peer is gone): force it */
            ucp_request_cancel(u->worker, req);
            force = 1;
        }
        if (!bu_progress(u))
            bu_wait(u, 1);
    }
    ucp_request_free(req);
}

static void send_cb(void *request, ucs_status_t status, void *user)
{
    struct bu_req *r = user;
    r->status = status;
    r->done = 1;
    r->busy = 0;
    r->ucx = NULL;
    ucp_request_free(request);
}

static void recv_cb(void *request, ucs_status_t status, const ucp_tag_recv_info_t *info, void *user)
{
    struct bu_req *r = user;
    r->status = status;
    if (status == UCS_OK && info) {
        r->length = info->length;
        r->sender_tag = info->sender_tag;
    }
    r->done = 1;
    r->busy = 0;
    r->ucx = NULL;
    ucp_request_free(request);
}

static int posted(struct bu_req *r, ucs_status_ptr_t p)
{
    if (p == NULL) {
        r->status = UCS_OK;
        r->done = 1;
        return 0;
    }
    if (UCS_PTR_IS_ERR(p)) {
        r->status = UCS_PTR_STATUS(p);
        r->done = 1;
        return r->status;
    }
    /* the callback may not have run yet, nor may it have: it sets done */
    if (!r->done) {
        r->busy = 1;
        r->ucx = p;
    }
    return 0;
}

int bu_send(struct bu *u, ucp_ep_h ep, const void *buf, size_t n, uint64_t tag, ucp_mem_h memh,
            struct bu_req *r)
{
    memset(r, 0, sizeof *r);
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
        .cb.send = send_cb, .user_data = r,
    };
    if (memh) {
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        p.memh = memh;
    }
    return posted(r, ucp_tag_send_nbx(ep, buf, n, tag, &p));
}

int bu_recv(struct bu *u, void *buf, size_t n, uint64_t tag, uint64_t mask, ucp_mem_h memh,
            struct bu_req *r)
{
    memset(r, 0, sizeof *r);
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
        .cb.recv = recv_cb, .user_data = r,
    };
    if (memh) {
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        p.memh = memh;
    }
    /* no immediate completion: the callback always runs, so what arrived
     * (length, tag) is always told the same way */
    p.op_attr_mask |= UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    ucs_status_ptr_t q = ucp_tag_recv_nbx(u->worker, buf, n, tag, mask, &p);
    return posted(r, q);
}

void bu_cancel(struct bu *u, struct bu_req *r)
{
    if (!r->busy)
        return;
    ucp_request_cancel(u->worker, r->ucx);
    while (r->busy)
        if (!bu_progress(u))
            bu_wait(u, 1);
}

int bu_progress(struct bu *u)
{
    return (int)ucp_worker_progress(u->worker);
}

void bu_wait(struct bu *u, int timeout_ms)
{
    if (timeout_ms <= 0)
        return;
    ucs_status_t s = ucp_worker_arm(u->worker);
    if (s == UCS_ERR_BUSY)
        return;   /* events are waiting: progress them now */
    struct pollfd pf = { .fd = u->efd, .events = POLLIN };
    poll(&pf, 1, timeout_ms);
}

int bu_wait_req(struct bu *u, struct bu_req *r, int timeout_ms)
{
    int64_t end = bu_now_ns() + (int64_t)timeout_ms * 1000000;
    while (!r->done) {
        if (bu_now_ns() > end)
            return -1;
        if (!bu_progress(u))
            bu_wait(u, 1);
    }
    return 0;
}

static size_t hash_addr(const void *p, size_t cap)
{
    uint64_t x = (uint64_t)(uintptr_t)p >> 12;
    x *= 0x9e3779b97f4a7c15ull;
    return (size_t)(x >> 20) & (cap - 1);
}

ucp_mem_h bu_memh(struct bu *u, void *addr, size_t len)
{
    if (u->no_memh || len == 0)
        return NULL;
    if (u->nmaps * 2 >= u->capmaps) {
        size_t cap = u->capmaps ? u->capmaps * 2 : 64;
        struct bu_memh *m = calloc(cap, sizeof *m);
        if (!m)
            return NULL;
        for (size_t i = 0; i < u->capmaps; i++)
            if (u->maps[i].addr) {
                size_t k = hash_addr(u->maps[i].addr, cap);
                while (m[k].addr)
                    k = (k + 1) & (cap - 1);
                m[k] = u->maps[i];
            }
        free(u->maps);
        u->maps = m;
        u->capmaps = cap;
    }
    size_t k = hash_addr(addr, u->capmaps);
    while (u->maps[k].addr) {
        if (u->maps[k].addr == addr && u->maps[k].len >= len)
            return u->maps[k].memh;
        if (u->maps[k].addr == addr)
            break;   /* a larger array in the same slot: register again */
        k = (k + 1) & (u->capmaps - 1);
    }
    ucp_mem_map_params_t p = {
        .field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
        .address = addr, .length = len,
    };
    ucp_mem_h h;
    if (ucp_mem_map(u->ctx, &p, &h) != UCS_OK) {
        u->no_memh = 1;
        return NULL;
    }
    if (u->maps[k].addr) {
        ucp_mem_unmap(u->ctx, u->maps[k].memh);
        u->nmaps--;
    }
    u->maps[k] = (struct bu_memh){ addr, len, h };
    u->nmaps++;
    return h;
}

const char *bu_transports(ucp_ep_h ep, char *buf, size_t n)
{
    char *text = NULL;
    size_t tlen = 0;
    FILE *f = open_memstream(&text, &tlen);
    snprintf(buf, n, "unknown");
    if (!f)
        return buf;
    ucp_ep_print_info(ep, f);
    fclose(f);
    /* lane lines read "lane[0]:  1:tcp/lo.0 md[1] ...": keep each distinct
     * "tcp/lo" */
    size_t used = 0;
    buf[0] = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *l = strstr(line, "lane[");
        if (!l || !(l = strchr(l, ':')))
            continue;
        char tl[64];
        if (sscanf(l + 1, " %*d:%63s", tl) != 1)
            continue;
        char *dot = strrchr(tl, '.');
        if (dot && dot > strchr(tl, '/'))
            *dot = 0;
        if (strstr(buf, tl))
            continue;
        int w = snprintf(buf + used, n - used, "%s%s", used ? ", " : "", tl);
        if (w < 0 || (size_t)w >= n - used)
            break;
        used += (size_t)w;
    }
    if (!buf[0])
        snprintf(buf, n, "unknown");
    free(text);
    return buf;
}
