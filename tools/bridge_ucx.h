/* ndchan-bridge: the UCX transport, as little of it as the bridge needs.
 *
 * One UCP context and one worker per process (single-threaded), tag
 * matching for every message, wakeup through the worker's event fd so an
 * idle bridge sleeps. Requests are owned by a struct bu_req the caller keeps
 * alive until it is done: completion callbacks only fill it in.
 * Connections are client/server by socket address (ucp_listener,
 * UCP_EP_PARAMS_FLAGS_CLIENT_SERVER) with UCP_ERR_HANDLING_MODE_PEER, so a
 * dead peer or a broken link is reported on the endpoint, not hidden.
 */
#ifndef NDC_TOOLS_BRIDGE_UCX_H
#define NDC_TOOLS_BRIDGE_UCX_H
#include <stddef.h>
#include <stdint.h>
#include <ucp/api/ucp.h>

struct bu_req {
    int          busy;       /* posted and not completed */
    int          done;       /* completed (successfully or not) */
    ucs_status_t status;
    size_t       length;     /* receives: bytes that arrived */
    uint64_t     sender_tag; /* receives: the tag that matched */
    void        *ucx;        /* the UCX request while busy */
};

struct bu_memh {
    void     *addr;
    size_t    len;
    ucp_mem_h memh;
};

struct bu {
    ucp_context_h ctx;
    ucp_worker_h  worker;
    int           efd;
    ucp_listener_h listener;
    struct bu_memh *maps;     /* registered regions, open addressing on addr */
    size_t        nmaps, capmaps;
    int           no_memh;    /* registration failed once: let UCX register on the fly */
};

/* 0 or -1 with a message in err. */
int  bu_init(struct bu *u, char *err, size_t errlen);
void bu_fini(struct bu *u);

/* Listen on addr:port (addr NULL or "" = every interface); *bound gets the
 * port (port 0 picks one). on_conn runs inside bu_progress. */
int bu_listen(struct bu *u, const char *addr, uint16_t port, uint16_t *bound,
              void (*on_conn)(ucp_conn_request_h, void *), void *arg, char *err, size_t errlen);
/* An endpoint for a connection request, or to host:port. on_err runs
 * inside bu_progress when the peer fails or the link breaks. */
int bu_accept(struct bu *u, ucp_conn_request_h req, ucp_ep_h *ep,
              void (*on_err)(void *, ucp_ep_h, ucs_status_t), void *arg, char *err, size_t errlen);
int bu_connect(struct bu *u, const char *host, uint16_t port, ucp_ep_h *ep,
               void (*on_err)(void *, ucp_ep_h, ucs_status_t), void *arg, char *err, size_t errlen);
void bu_reject(struct bu *u, ucp_conn_request_h req);
/* Close an endpoint: flush first unless force, waiting at most timeout_ms. */
void bu_close(struct bu *u, ucp_ep_h ep, int force, int timeout_ms);

/* Post a send / a receive. memh may be NULL. 0, or a UCS status (< 0) when
 * the post itself failed (r is then done with that status). */
int bu_send(struct bu *u, ucp_ep_h ep, const void *buf, size_t n, uint64_t tag, ucp_mem_h memh,
            struct bu_req *r);
int bu_recv(struct bu *u, void *buf, size_t n, uint64_t tag, uint64_t mask, ucp_mem_h memh,
            struct bu_req *r);
/* Cancel a busy request and progress until its callback has run. */
void bu_cancel(struct bu *u, struct bu_req *r);
/* Progress the worker once; returns nonzero when something happened. */
int  bu_progress(struct bu *u);
/* Sleep until the worker has events or timeout_ms passes (0: no sleep). */
void bu_wait(struct bu *u, int timeout_ms);
/* Progress until r is done or timeout_ms passes; 0 when done. */
int  bu_wait_req(struct bu *u, struct bu_req *r, int timeout_ms);

/* A memory handle covering [addr, addr+len), registered on first use and
 * kept (the bridge registers each slot once). NULL when registration is
 * not possible: UCX then registers on the fly. */
ucp_mem_h bu_memh(struct bu *u, void *addr, size_t len);

/* "tcp/lo, cma/memory": the transports the endpoint's lanes use. */
const char *bu_transports(ucp_ep_h ep, char *buf, size_t n);

int64_t bu_now_ns(void);
#endif
