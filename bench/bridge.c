/*
 * ndchan-bench, part "bridge": two ndchan-bridge processes against raw UCX
 * between two processes over the same transport, in the same run.
 *
 *   raw UCX     a ucp tag stream (sender -> receiver, registered buffers,
 *               as many messages in flight as the bridge's channels have
 *               slots) and an 8-byte tag ping-pong
 *   bridge      producer -> channel -> connect bridge -> UCX -> listen bridge
 *               -> channel -> consumer; the round trip crosses two bridge
 *               pairs (ping -> pong over one, back over the other)
 *
 * The transport is UCX_TLS when set, else tcp; network devices are
 * loopback unless UCX_NET_DEVICES says otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "bridge_ucx.h"

#define REPS 3
#define RT_ITERS 400

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    return port;
}

static uint64_t count_for(uint64_t bytes)
{
    uint64_t n = (1ull << 30) / bytes;   /* about 1 GiB per repetition */
    return n < 4 ? 4 : n;
}

/* Arrays in flight: what the bridge's channels hold (pair_up's slots), so
 * raw UCX streams with the same window. */
static int window_for(uint64_t bytes)
{
    return bytes > 64 * MiB ? 2 : bytes ? 4 : 1;
}

/* ---- raw UCX ------------------------------------------------------------- */

static ucp_conn_request_h pending;
static void on_conn(ucp_conn_request_h r, void *arg) { (void)arg; pending = r; }
static void on_err(void *arg, ucp_ep_h ep, ucs_status_t s) { (void)arg; (void)ep; (void)s; }

/* Child: listen, accept one peer, then per repetition receive `n` messages
 * of `bytes` and answer with 8 bytes; for the ping-pong, echo RT_ITERS. */
static int raw_server(int port, uint64_t bytes, uint64_t n, int ready_fd)
{
    struct bu u;
    char err[256];
    uint16_t bound;
    if (bu_init(&u, err, sizeof err) || bu_listen(&u, "127.0.0.1", (uint16_t)port, &bound, on_conn, NULL, err, sizeof err))
        return 1;
    if (write(ready_fd, "", 1) != 1)   /* listening: the client may connect */
        return 1;
    close(ready_fd);
    while (!pending)
        if (!bu_progress(&u))
            bu_wait(&u, 10);
    ucp_ep_h ep;
    if (bu_accept(&u, pending, &ep, on_err, NULL, err, sizeof err))
        return 1;
    size_t len = bytes ? bytes : 8;
    int w = window_for(bytes);
    void *bufs[4];
    ucp_mem_h mhs[4];
    struct bu_req rs[4], r;
    for (int k = 0; k < w; k++) {
        bufs[k] = alloc_buf(len);
        mhs[k] = bu_memh(&u, bufs[k], len);
    }
    void *buf = bufs[0];
    for (int rep = 0; rep < (bytes ? REPS : 1); rep++) {
        uint64_t m = bytes ? n : RT_ITERS + 50;
        if (bytes) {
            /* as many receives posted as the bridge has slots in flight */
            for (uint64_t i = 0; i < m + (uint64_t)w; i++) {
                struct bu_req *q = &rs[i % (uint64_t)w];
                if (i >= (uint64_t)w && bu_wait_req(&u, q, 60000))
                    return 2;
                if (i < m)
                    bu_recv(&u, bufs[i % (uint64_t)w], len, 1, ~0ull, mhs[i % (uint64_t)w], q);
            }
        }
        for (uint64_t i = 0; i < m && !bytes; i++) {
            bu_recv(&u, buf, len, 1, ~0ull, NULL, &r);
            if (bu_wait_req(&u, &r, 60000))
                return 2;
            bu_send(&u, ep, buf, 8, 2, NULL, &r);
            if (bu_wait_req(&u, &r, 60000))
                return 2;
        }
        if (bytes) {
            bu_send(&u, ep, buf, 8, 2, NULL, &r);
            if (bu_wait_req(&u, &r, 60000))
                return 2;
        }
    }
    bu_recv(&u, buf, 8, 3, ~0ull, NULL, &r);   /* the client's goodbye */
    bu_wait_req(&u, &r, 10000);
    bu_close(&u, ep, 0, 1000);
    bu_fini(&u);
    return 0;
}

/* GB/s per repetition (bytes) or round-trip microseconds sorted (bytes 0). */
static int raw_ucx(uint64_t bytes, double *out)
{
    int port = free_port();
    uint64_t n = bytes ? count_for(bytes) : 0;
    int pfd[2];
    char c;
    if (pipe(pfd))
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(raw_server(port, bytes, n, pfd[1]));
    close(pfd[1]);
    struct bu u;
    char err[256];
    ucp_ep_h ep = NULL;
    int ready = read(pfd[0], &c, 1) == 1;
    close(pfd[0]);
    if (!ready || bu_init(&u, err, sizeof err) || bu_connect(&u, "127.0.0.1", (uint16_t)port, &ep, on_err, NULL, err, sizeof err)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    size_t len = bytes ? bytes : 8;
    void *buf = alloc_buf(len);
    ucp_mem_h mh = bu_memh(&u, buf, len);
    struct bu_req s, r;
    int rc = 0;
    if (bytes) {
        for (int rep = 0; rep < REPS && !rc; rep++) {
            int64_t t0 = now_ns();
            int w = window_for(bytes);
            struct bu_req ss[4];
            for (uint64_t i = 0; i < n + (uint64_t)w && !rc; i++) {
                struct bu_req *q = &ss[i % (uint64_t)w];
                if (i >= (uint64_t)w)
                    rc = bu_wait_req(&u, q, 60000) || q->status != UCS_OK;
                if (i < n && !rc)
                    bu_send(&u, ep, buf, len, 1, mh, q);
            }
            bu_recv(&u, buf, 8, 2, ~0ull, NULL, &r);
            rc = rc || bu_wait_req(&u, &r, 60000);
            out[rep] = (double)(n * bytes) / (double)(now_ns() - t0);
        }
    } else {
        double *lat = malloc(sizeof(double) * RT_ITERS);
        for (int i = 0; i < RT_ITERS + 50 && !rc; i++) {
            int64_t t0 = now_ns();
            bu_recv(&u, buf, 8, 2, ~0ull, NULL, &r);
            bu_send(&u, ep, buf, 8, 1, NULL, &s);
            rc = bu_wait_req(&u, &s, 60000) || bu_wait_req(&u, &r, 60000);
            if (i >= 50)
                lat[i - 50] = (double)(now_ns() - t0) / 1e3;
        }
        qsort(lat, RT_ITERS, sizeof *lat, cmp_double);
        out[0] = lat[RT_ITERS / 2];
        free(lat);
    }
    bu_send(&u, ep, buf, 8, 3, NULL, &s);
    bu_wait_req(&u, &s, 1000);
    bu_close(&u, ep, 0, 1000);
    bu_fini(&u);
    free_buf(buf, len);
    int st;
    waitpid(pid, &st, 0);
    return rc || !WIFEXITED(st) || WEXITSTATUS(st) ? -1 : 0;
}

/* ---- through two bridges ------------------------------------------------- */

static pid_t spawn(const char *verb, int port, const char *chan)
{
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", port);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        execl(BENCH_BRIDGE_PATH, BENCH_BRIDGE_PATH, verb, ep, chan, "-q", (char *)NULL);
        _exit(127);
    }
    return pid;
}

struct pair { pid_t l, c; char near[64], far[64]; };

static int pair_up(struct pair *p, const char *what, uint64_t slot_bytes, ndc_chan **near)
{
    snprintf(p->near, sizeof p->near, "ndcbench.%s.%d", what, (int)getpid());
    snprintf(p->far, sizeof p->far, "ndcbench.%s.%d.far", what, (int)getpid());
    ndc_unlink(p->near);
    ndc_unlink(p->far);
    struct ndc_chan_opts o = { .slots = (uint32_t)window_for(slot_bytes), .slot_bytes = slot_bytes,
                               .spin_ns = bench_spin_ns };
    int r = ndc_create(near, p->near, &o);
    if (r)
        return r;
    int port = free_port();
    p->l = spawn("listen", port, p->far);
    usleep(200000);
    p->c = spawn("connect", port, p->near);
    return 0;
}

static void pair_down(struct pair *p)
{
    int st;
    waitpid(p->c, &st, 0);
    waitpid(p->l, &st, 0);
    ndc_unlink(p->near);
    ndc_unlink(p->far);
    char s[96];
    snprintf(s, sizeof s, "/%s.bridge", p->far);
    shm_unlink(s);
}

static int bridged(uint64_t bytes, double *out)
{
    struct pair a, b;
    ndc_chan *an, *af, *bn = NULL, *bf = NULL;
    size_t len = bytes ? bytes : 8;
    if (pair_up(&a, "a", len, &an))
        return -1;
    if (!bytes && pair_up(&b, "b", len, &bn))
        return -1;
    int rc = ndc_open_wait(&af, a.far, NDC_RDONLY, 30 * 1000000000LL);
    uint64_t n = bytes ? count_for(bytes) : RT_ITERS + 50;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* the producer (throughput) or the ponger (round trip) */
        int e = 0;
        if (!bytes && ndc_open_wait(&bf, b.far, NDC_RDONLY, 30 * 1000000000LL))
            _exit(1);
        for (uint64_t i = 0; i < (bytes ? n * REPS + 2 : n) && !e; i++) {
            struct ndc_array x = { .dtype = NDC_U8, .ndim = 1, .shape = { (int64_t)len } };
            if (bytes) {
                e = ndc_reserve(an, &x, NDC_FOREVER) || ndc_commit(an, &x);
            } else {
                struct ndc_array y;
                e = ndc_acquire(af, &y, NDC_FOREVER) || ndc_release(af, &y) ||
                    ndc_reserve(bn, &x, NDC_FOREVER) || ndc_commit(bn, &x);
            }
        }
        _exit(e);
    }
    if (!bytes)
        rc = rc || ndc_open_wait(&bf, b.far, NDC_RDONLY, 30 * 1000000000LL);
    struct ndc_array x, y;
    if (bytes) {
        for (int w = 0; w < 2 && !rc; w++)
            rc = ndc_acquire(af, &y, 60 * 1000000000LL) || ndc_release(af, &y);
        for (int rep = 0; rep < REPS && !rc; rep++) {
            int64_t t0 = now_ns();
            for (uint64_t i = 0; i < n && !rc; i++)
                rc = ndc_acquire(af, &y, 60 * 1000000000LL) || ndc_release(af, &y);
            out[rep] = (double)(n * bytes) / (double)(now_ns() - t0);
        }
    } else {
        double *lat = malloc(sizeof(double) * RT_ITERS);
        /* ping on a's near channel, pong back on b's far one */
        ndc_chan *bfar = bf;
        for (uint64_t i = 0; i < n && !rc; i++) {
            int64_t t0 = now_ns();
            x = (struct ndc_array){ .dtype = NDC_U8, .ndim = 1, .shape = { 8 } };
            rc = ndc_reserve(an, &x, NDC_FOREVER) || ndc_commit(an, &x) ||
                 ndc_acquire(bfar, &y, 30 * 1000000000LL) || ndc_release(bfar, &y);
            if (i >= 50)
                lat[i - 50] = (double)(now_ns() - t0) / 1e3;
        }
        qsort(lat, RT_ITERS, sizeof *lat, cmp_double);
        out[0] = lat[RT_ITERS / 2];
        free(lat);
    }
    int st;
    if (rc)
        kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    ndc_close(an);
    ndc_free(an);
    ndc_free(af);
    if (!bytes) {
        ndc_close(bn);
        ndc_free(bn);
        ndc_free(bf);
        pair_down(&b);
    }
    pair_down(&a);
    return rc || !WIFEXITED(st) || WEXITSTATUS(st) ? -1 : 0;
}

static double median3(double *v)
{
    qsort(v, REPS, sizeof *v, cmp_double);
    return v[REPS / 2];
}

int bench_bridge(void)
{
    if (!getenv("UCX_TLS"))
        setenv("UCX_TLS", "tcp", 1);
    if (!getenv("UCX_NET_DEVICES"))
        setenv("UCX_NET_DEVICES", "lo", 1);
    printf("\nBridge: two ndchan-bridge processes vs raw UCX between two processes "
           "(UCX_TLS=%s, UCX_NET_DEVICES=%s)\n", getenv("UCX_TLS"), getenv("UCX_NET_DEVICES"));
    printf("%-28s %10s %10s %10s %8s\n", "throughput, GB/s (median)", "raw UCX", "bridge", "ratio", "target");
    static const uint64_t sizes[] = { 1 * MiB, 16 * MiB, 256 * MiB };
    int fails = 0;
    for (int i = 0; i < 3; i++) {
        double raw[REPS] = { 0 }, br[REPS] = { 0 };
        char sz[32];
        int e1 = raw_ucx(sizes[i], raw), e2 = bridged(sizes[i], br);
        if (e1 || e2) {
            printf("%-28s failed (%s)\n", fmt_size(sizes[i], sz), e1 ? "raw UCX" : "bridge");
            fails++;
            continue;
        }
        double r = median3(raw), b = median3(br);
        const char *t = sizes[i] >= 16 * MiB ? (b >= 0.8 * r ? "PASS" : "MISS") : "";
        printf("%-28s %10.3f %10.3f %9.0f%% %8s\n", fmt_size(sizes[i], sz), r, b, 100 * b / r, t);
    }
    double rr[REPS], br[REPS];
    double raw_rt = 0, br_rt = 0;
    int ok = 1;
    for (int k = 0; k < REPS && ok; k++) {
        if (raw_ucx(0, &rr[k]))
            ok = 0, printf("8 B round trip: raw UCX failed\n");
        else if (bridged(0, &br[k]))
            ok = 0, printf("8 B round trip: bridge failed\n");
    }
    if (ok) {
        raw_rt = median3(rr);
        br_rt = median3(br);
        printf("%-28s %10.1f %10.1f %+9.1f %8s\n", "8 B round trip p50, us", raw_rt, br_rt, br_rt - raw_rt,
               br_rt <= raw_rt + 10 ? "PASS" : "MISS");
    } else {
        fails++;
    }
    printf("targets: throughput >= 80%% of raw UCX at 16 and 256 MiB; round trip <= raw UCX + 10 us\n"
           "(the bridge round trip crosses two bridge pairs: ping -> pong over one, back over the other)\n");
    return fails ? -1 : 0;
}
