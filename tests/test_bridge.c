/* ndchan-bridge end to end: two real bridge processes over loopback UCX,
 * a producer feeding the near channel and a consumer on the far one.
 *
 * Every stream is checked array by array: tag = the producer's index, the
 * payload filled from that index (th_fill/th_check), dtype and shape derived
 * from it, so loss, duplication, reordering or a torn payload all fail. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "bridge_ucx.h"
#include "bridge_wire.h"
#include <ucp/api/ucp.h>

#ifndef NDC_BRIDGE_PATH
#error "meson passes the path of ndchan-bridge"
#endif

#define TLS_DEFAULT NULL
#define BIG_NONE    0

/* ---- processes ----------------------------------------------------------- */

/* A port nobody listens on right now (bound, read, released). */
static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    cr_assert(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
              getsockname(s, (struct sockaddr *)&a, &len) == 0);
    close(s);
    return ntohs(a.sin_port);
}

struct bridge { pid_t pid; char log[128]; char text[8192]; /* the log, once exited */ };

/* Start `ndchan-bridge VERB EP CHAN ARGS...` with stderr to a log file. */
static struct bridge start_bridge(const char *tls, const char *verb, int port, const char *chan,
                                  const char *extra1, const char *extra2)
{
    static int n;
    struct bridge b = { 0 };
    snprintf(b.log, sizeof b.log, "/tmp/ndc_bridge_test.%d.%d.log", (int)getpid(), n++);
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", port);
    fflush(NULL);
    b.pid = fork();
    cr_assert(b.pid >= 0);
    if (b.pid == 0) {
        /* a bridge outlives no test that timed out, and never holds the
         * test runner's output pipe */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(b.log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        setenv("UCX_NET_DEVICES", "lo", 1);   /* loopback only */
        if (tls)
            setenv("UCX_TLS", tls, 1);
        else
            unsetenv("UCX_TLS");
        const char *argv[10] = { NDC_BRIDGE_PATH, verb, ep, chan + 1, "--link-timeout", "5" };
        int k = 6;
        if (extra1)
            argv[k++] = extra1;
        if (extra2)
            argv[k++] = extra2;
        argv[k] = NULL;
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    return b;
}

static char *slurp(const char *path)
{
    static char buf[1 << 16];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose(f);
    return buf;
}

/* Wait for a bridge's exit status and check it, printing its log if not. */
static void expect_exit(struct bridge *b, int want, int timeout_ms)
{
    int st = th_wait(b->pid, timeout_ms);
    cr_expect_eq(st, want, "bridge exited %d, want %d; its log:\n%s", st, want, slurp(b->log));
    snprintf(b->text, sizeof b->text, "%s", slurp(b->log));
    if (st == want)
        unlink(b->log);   /* a failing bridge's log stays for a look */
}

/* ---- what flows --------------------------------------------------------- */

/* Array i's dtype and shape: mostly small and varied, a few big ones. */
static void shape_of(uint64_t i, const uint64_t *big, int nbig, struct ndc_array *a)
{
    uint64_t h = th_mix(i);
    int64_t shape[4];
    enum ndc_dtype t = (enum ndc_dtype)(1 + h % NDC_DTYPE_LAST);
    for (int k = 0; k < nbig; k++)
        if (big[k] && i == (uint64_t)k * 997 + 13) {   /* big arrays at fixed places */
            shape[0] = (int64_t)(big[k] / 4);
            ndc_array_init(a, NDC_F32, 1, shape, NULL);
            a->tag = i;
            return;
        }
    int ndim = (int)((h >> 8) % 4);   /* not (int)(h >> 8) % 4: negative, and init fails */
    size_t es = ndc_dtype_size(t), total = es;
    for (int d = 0; d < ndim; d++) {
        shape[d] = (int64_t)((h >> (16 + 8 * d)) % 24);
        if (total * (size_t)(shape[d] ? shape[d] : 1) > 64 * 1024)
            shape[d] = 1;
        total *= (size_t)(shape[d] ? shape[d] : 1);
    }
    if (ndc_array_init(a, t, ndim, shape, NULL))
        abort();   /* a stale header would pass for the previous array's */
    a->tag = i;
}

struct producer {
    char     name[128];
    uint64_t n, first;
    uint64_t big[4];
    int      nbig;
    uint32_t slots;
    uint64_t slot_bytes;
    int      delay_us;           /* between arrays, so kills land mid-stream */
    int      no_close;
    int      retry_dead;         /* wait out -EOWNERDEAD (a near bridge restarting) */
    int      broadcast;          /* a broadcast near channel, */
    uint32_t policy;             /* of this slow_policy, */
    uint32_t wait_subs;          /* published once it has this many subscribers */
    const char *wait_far;        /* and this far channel one */
};

/* Until ch has at least n subscribers; 0, or 13 after 30 s. */
static int wait_subscribers(ndc_chan *ch, uint32_t n)
{
    struct ndc_stat st = { 0 };
    for (int i = 0; i < 30000 && (ndc_stat(ch, &st) || st.subscribers < n); i++)
        usleep(1000);
    return st.subscribers >= n ? 0 : 13;
}

static int produce(void *arg)
{
    struct producer *p = arg;
    struct ndc_chan_opts o = { .slots = p->slots, .slot_bytes = p->slot_bytes,
                               .flags = p->broadcast ? NDC_BROADCAST : 0, .slow_policy = p->policy };
    ndc_chan *ch;
    int r = ndc_create(&ch, p->name, &o);
    CK(r == 0, 10, "create %s: %s", p->name, ndc_strerror(r));
    if (p->wait_subs && wait_subscribers(ch, p->wait_subs))
        return 13;
    if (p->wait_far) {
        ndc_chan *far;
        CK(ndc_open_wait(&far, p->wait_far, NDC_RDONLY, 30 * SEC) == 0, 14, "open far");
        if (wait_subscribers(far, 1))
            return 13;
        ndc_free(far);
    }
    for (uint64_t i = p->first; i < p->n; i++) {
        struct ndc_array a;
        shape_of(i, p->big, p->nbig, &a);
        while ((r = ndc_reserve(ch, &a, NDC_FOREVER)) == -EOWNERDEAD && p->retry_dead)
            usleep(20000);   /* the near bridge is being restarted */
        CK(r == 0, 11, "reserve %llu: %s", (unsigned long long)i, ndc_strerror(r));
        th_fill(a.data, ndc_array_nbytes(&a), i);
        r = ndc_commit(ch, &a);
        CK(r == 0, 12, "commit %llu: %s", (unsigned long long)i, ndc_strerror(r));
        if (p->delay_us)
            usleep((useconds_t)p->delay_us);
    }
    if (!p->no_close)
        ndc_close(ch);
    ndc_free(ch);
    return 0;
}

struct consumed {
    uint64_t n, dups, gaps, bad, missing, first, last;
    int      end;                /* the error that ended it */
};

/* Receive from the far channel until it ends; every array must be the next
 * one (gaps allowed only when allow_gap, and counted). */
/* A far bridge that dies is a dead sender: a receiver waiting on the empty
 * far channel gets -EOWNERDEAD until the restarted bridge attaches.
 * dead_ok_ns: how long such a receiver keeps trying. */
static int64_t dead_ok_ns;
/* NDC_SUBSCRIBE for a broadcast far channel */
static uint32_t consume_flags;

static struct consumed consume(const char *name, const struct producer *p, int64_t idle_ns,
                               void (*each)(uint64_t n, void *), void *arg)
{
    struct consumed c = { 0 };
    ndc_chan *ch;
    int r = ndc_open_wait(&ch, name, NDC_RDONLY | consume_flags, 30 * SEC);
    cr_assert_eq(r, 0, "open far %s: %s", name, ndc_strerror(r));
    uint64_t want = 0;
    for (;;) {
        struct ndc_array a;
        r = ndc_acquire(ch, &a, idle_ns);
        int64_t until = th_now_ns() + dead_ok_ns;
        while (r == -EOWNERDEAD && th_now_ns() < until) {
            usleep(10000);
            r = ndc_acquire(ch, &a, idle_ns);
        }
        if (r) {
            c.end = r;
            break;
        }
        struct ndc_array s;
        shape_of(a.tag, p->big, p->nbig, &s);
        if (s.dtype != a.dtype || s.ndim != a.ndim ||
            memcmp(s.shape, a.shape, sizeof(int64_t) * (size_t)a.ndim))
            c.bad++;
        if (a.tag < want)
            c.dups++;
        else if (a.tag > want) {
            c.gaps++;
            c.missing += a.tag - want;
        }
        if (!th_check(a.data, ndc_array_nbytes(&a), a.tag))
            c.bad++;
        want = a.tag + 1;
        if (!c.n)
            c.first = a.tag;
        c.last = a.tag;
        c.n++;
        ndc_release(ch, &a);
        if (each)
            each(c.n, arg);
    }
    ndc_free(ch);
    return c;
}

/* The dtype/shape check needs the big list: shape_of(tag, big) for both. */
static struct producer mkprod(const char *what, uint64_t n)
{
    struct producer p = { .n = n, .slots = 8, .slot_bytes = 64 * 1024 };
    snprintf(p.name, sizeof p.name, "%s", th_unique_name(what));
    return p;
}

static char far_name[160];
static const char *far_of(const char *near)
{
    snprintf(far_name, sizeof far_name, "%s.far", near);
    return far_name;
}

static void cleanup(const char *near)
{
    ndc_unlink(near);
    ndc_unlink(far_of(near));
    char st[160];
    snprintf(st, sizeof st, "%s.far.bridge", near);
    shm_unlink(st);
}

/* ---- content, order, exactly once, end of stream ------------------------------ */

static void stream(const char *tls, uint64_t n, const uint64_t *big, int nbig, uint64_t slot_bytes)
{
    struct producer p = mkprod("stream", n);
    if (nbig)
        memcpy(p.big, big, sizeof(uint64_t) * (size_t)nbig);
    p.nbig = nbig;
    p.slot_bytes = slot_bytes;
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(p.name));
    int port = free_port();
    struct bridge l = start_bridge(tls, "listen", port, far, NULL, NULL);
    pid_t prod = th_fork(produce, &p);
    struct bridge c = start_bridge(tls, "connect", port, p.name, NULL, NULL);
    struct consumed got = consume(far, &p, 30 * SEC, NULL, NULL);
    cr_expect_eq(got.end, -EPIPE, "the far stream ended with %s, not end of stream", ndc_strerror(got.end));
    cr_expect_eq(got.n, n, "%llu arrays arrived, %llu sent", (unsigned long long)got.n, (unsigned long long)n);
    cr_expect_eq(got.dups + got.gaps + got.bad, 0, "dups %llu gaps %llu bad payloads %llu",
                 (unsigned long long)got.dups, (unsigned long long)got.gaps, (unsigned long long)got.bad);
    cr_expect_eq(th_wait(prod, 30000), 0);
    expect_exit(&c, 0, 30000);
    expect_exit(&l, 0, 30000);
    cr_expect(strstr(l.text, "over tcp") || !tls, "the listen side names its transport:\n%s", l.text);
    cleanup(p.name);
}

Test(bridge, stream_of_random_arrays_over_tcp, .timeout = 120)
{
    const uint64_t big[] = { 256ull << 20, 16ull << 20, 16ull << 20 };
    stream("tcp", 3000, big, 3, 256ull << 20);
}

Test(bridge, stream_of_random_arrays_over_default_transports, .timeout = 120)
{
    const uint64_t big[] = { 64ull << 20, 1ull << 20 };
    stream(TLS_DEFAULT, 2000, big, 2, 64ull << 20);
}

Test(bridge, empty_stream_closes_the_far_channel, .timeout = 60)
{
    stream("tcp", 0, NULL, 0, 4096);
}

/* ---- backpressure -------------------------------------------------------------- */

Test(bridge, a_stopped_far_consumer_blocks_the_near_producer, .timeout = 90)
{
    struct producer p = mkprod("bp", 200);
    p.slots = 4;
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(p.name));
    int port = free_port();
    struct bridge l = start_bridge("tcp", "listen", port, far, NULL, NULL);
    pid_t prod = th_fork(produce, &p);
    struct bridge c = start_bridge("tcp", "connect", port, p.name, NULL, NULL);
    /* nobody consumes yet: what can be in flight is the far channel's
     * slots plus the near channel's, and the producer must then wait */
    ndc_chan *fch, *nch;
    th_ok(ndc_open_wait(&fch, far, NDC_RDONLY, 30 * SEC));
    th_ok(ndc_open_wait(&nch, p.name, NDC_RDONLY, 30 * SEC));
    usleep(1500 * 1000);
    struct ndc_stat fs = th_stat(fch), ns1 = th_stat(nch);
    usleep(500 * 1000);
    struct ndc_stat ns2 = th_stat(nch);
    cr_expect_eq(fs.ready, fs.slots, "the far channel is full: %u of %u ready", fs.ready, fs.slots);
    cr_expect_eq(ns1.sent, ns2.sent, "the producer keeps sending (%llu -> %llu) into a full pipeline",
                 (unsigned long long)ns1.sent, (unsigned long long)ns2.sent);
    cr_expect_leq(ns2.sent, (uint64_t)fs.slots + ns2.slots, "more in flight (%llu) than both channels hold",
                  (unsigned long long)ns2.sent);
    cr_expect_eq(waitpid(prod, NULL, WNOHANG), 0, "the producer finished though nothing was consumed");
    ndc_free(nch);
    ndc_free(fch);
    struct consumed got = consume(far, &p, 30 * SEC, NULL, NULL);
    cr_expect_eq(got.end, -EPIPE);
    cr_expect_eq(got.n, p.n, "after the stall, %llu of %llu arrived", (unsigned long long)got.n,
                 (unsigned long long)p.n);
    cr_expect_eq(got.dups + got.gaps + got.bad, 0);
    cr_expect_eq(th_wait(prod, 30000), 0);
    expect_exit(&c, 0, 30000);
    expect_exit(&l, 0, 30000);
    cleanup(p.name);
}

/* ---- a bridge killed mid-stream and restarted ---------------------------------- */

struct killer { struct bridge *b; uint64_t at; int done; const char *tls, *verb, *chan; int port; };

static void kill_and_restart(uint64_t n, void *arg)
{
    struct killer *k = arg;
    if (k->done || n != k->at)
        return;
    k->done = 1;
    kill(k->b->pid, SIGKILL);
    th_wait(k->b->pid, 5000);
    unlink(k->b->log);
    usleep(200 * 1000);
    *k->b = start_bridge(k->tls, k->verb, k->port, k->chan, NULL, NULL);
}

static void killed_bridge(const char *tls, int far_side)
{
    struct producer p = mkprod(far_side ? "killfar" : "killnear", 1500);
    p.delay_us = 300;
    p.retry_dead = 1;
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(p.name));
    int port = free_port();
    struct bridge l = start_bridge(tls, "listen", port, far, NULL, NULL);
    pid_t prod = th_fork(produce, &p);
    struct bridge c = start_bridge(tls, "connect", port, p.name, NULL, NULL);
    struct killer k = { far_side ? &l : &c, 400, 0, tls, far_side ? "listen" : "connect",
                        far_side ? far : p.name, port };
    dead_ok_ns = far_side ? 15 * SEC : 0;
    struct consumed got = consume(far, &p, 30 * SEC, kill_and_restart, &k);
    dead_ok_ns = 0;
    cr_assert(k.done, "the stream ended before the kill");
    cr_expect_eq(got.end, -EPIPE, "ended with %s", ndc_strerror(got.end));
    cr_expect_eq(got.dups, 0, "%llu duplicates after the restart", (unsigned long long)got.dups);
    cr_expect_eq(got.bad, 0);
    if (far_side) {
        cr_expect_eq(got.n, p.n, "%llu of %llu arrived", (unsigned long long)got.n, (unsigned long long)p.n);
        cr_expect_eq(got.gaps, 0);
    } else {
        /* the library gives a dead receiver's loans back as free slots: what
         * the killed near bridge held (at most the far window) is lost, and
         * said so, but nothing is duplicated or reordered */
        cr_expect_leq(got.missing, 8, "%llu arrays lost, more than the bridge could hold",
                      (unsigned long long)got.missing);
        cr_expect_eq(got.n + got.missing, p.n);
    }
    cr_expect_eq(th_wait(prod, 30000), 0);
    expect_exit(&c, 0, 30000);
    expect_exit(&l, 0, 30000);
    cleanup(p.name);
}

Test(bridge, far_bridge_killed_and_restarted_delivers_exactly_once, .timeout = 120)
{
    killed_bridge("tcp", 1);
}

Test(bridge, far_bridge_killed_and_restarted_default_transports, .timeout = 120)
{
    killed_bridge(TLS_DEFAULT, 1);
}

Test(bridge, near_bridge_killed_and_restarted_never_duplicates, .timeout = 120)
{
    killed_bridge("tcp", 0);
}

/* ---- dead producer, dead consumer, dead link ------------------------------------ */

Test(bridge, dead_producer_is_a_dead_sender_on_the_far_side, .timeout = 90)
{
    struct producer p = mkprod("deadprod", 1000000);
    p.delay_us = 1000;
    p.no_close = 1;
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(p.name));
    int port = free_port();
    struct bridge l = start_bridge("tcp", "listen", port, far, NULL, NULL);
    pid_t prod = th_fork(produce, &p);
    struct bridge c = start_bridge("tcp", "connect", port, p.name, NULL, NULL);
    ndc_chan *ch;
    th_ok(ndc_open_wait(&ch, far, NDC_RDONLY, 30 * SEC));
    struct ndc_array a;
    for (int i = 0; i < 50; i++) {
        th_ok(ndc_acquire(ch, &a, 10 * SEC));
        th_ok(ndc_release(ch, &a));
    }
    kill(prod, SIGKILL);
    th_wait(prod, 5000);
    int r;
    while ((r = ndc_acquire(ch, &a, 10 * SEC)) == 0)
        ndc_release(ch, &a);
    cr_expect_eq(r, -EOWNERDEAD, "far receiver got %s, want -EOWNERDEAD", ndc_strerror(r));
    ndc_free(ch);
    expect_exit(&c, 4, 30000);
    expect_exit(&l, 4, 30000);
    cleanup(p.name);
}

static int consume_then_hang(void *arg)
{
    const char *far = arg;
    ndc_chan *ch;
    CK(ndc_open_wait(&ch, far, NDC_RDONLY, 30 * SEC) == 0, 10, "open");
    struct ndc_array a;
    for (int i = 0; i < 50; i++) {
        CK(ndc_acquire(ch, &a, 10 * SEC) == 0, 11, "acquire");
        ndc_release(ch, &a);
    }
    pause();   /* killed here */
    return 0;
}

Test(bridge, dead_consumer_is_a_dead_receiver_on_the_near_side, .timeout = 90)
{
    struct producer p = mkprod("deadcons", 1000000);
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(p.name));
    int port = free_port();
    struct bridge l = start_bridge("tcp", "listen", port, far, NULL, NULL);
    /* the producer runs here, to see what ndc_reserve says */
    struct ndc_chan_opts o = { .slots = 8, .slot_bytes = 65536 };
    ndc_chan *ch;
    th_ok(ndc_create(&ch, p.name, &o));
    struct bridge c = start_bridge("tcp", "connect", port, p.name, NULL, NULL);
    pid_t cons = th_fork(consume_then_hang, far);
    int r = 0;
    for (uint64_t i = 0; i < p.n; i++) {
        struct ndc_array a;
        shape_of(i, NULL, 0, &a);
        if ((r = ndc_reserve(ch, &a, 20 * SEC)))
            break;
        th_fill(a.data, ndc_array_nbytes(&a), i);
        th_ok(ndc_commit(ch, &a));
        if (i == 30) {   /* the consumer takes 50, so it dies mid-stream */
            kill(cons, SIGKILL);
            th_wait(cons, 5000);
        }
    }
    cr_expect_eq(r, -EOWNERDEAD, "the near producer got %s, want -EOWNERDEAD", ndc_strerror(r));
    ndc_free(ch);
    expect_exit(&l, 4, 30000);
    expect_exit(&c, 4, 30000);
    cleanup(p.name);
}

/* One bridge dies for good: the other waits --link-timeout (5 s here),
 * then reports it through its channel as a dead peer. */
static void link_down(int kill_far)
{
    struct producer p = mkprod(kill_far ? "linkfar" : "linknear", 1000000);
    p.delay_us = 1000;
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(p.name));
    int port = free_port();
    struct bridge l = start_bridge("tcp", "listen", port, far, NULL, NULL);
    pid_t prod = th_fork(produce, &p);
    struct bridge c = start_bridge("tcp", "connect", port, p.name, NULL, NULL);
    ndc_chan *ch;
    th_ok(ndc_open_wait(&ch, far, NDC_RDONLY, 30 * SEC));
    struct ndc_array a;
    for (int i = 0; i < 20; i++) {
        th_ok(ndc_acquire(ch, &a, 10 * SEC));
        th_ok(ndc_release(ch, &a));
    }
    struct bridge *dead = kill_far ? &l : &c, *alive = kill_far ? &c : &l;
    kill(dead->pid, SIGKILL);
    th_wait(dead->pid, 5000);
    unlink(dead->log);
    int64_t t0 = th_now_ns();
    expect_exit(alive, 5, 30000);
    double waited = (double)(th_now_ns() - t0) / 1e9;
    cr_expect(waited > 4, "reported after %.1f s, before the 5 s link timeout", waited);
    if (kill_far)
        cr_expect(strstr(c.text, "not delivered"), "the near side counts what it could not "
                  "deliver:\n%s", c.text);
    int r;
    while ((r = ndc_acquire(ch, &a, 10 * SEC)) == 0)
        ndc_release(ch, &a);
    cr_expect_eq(r, -EOWNERDEAD, "far receiver got %s, want -EOWNERDEAD", ndc_strerror(r));
    ndc_free(ch);
    /* the near producer sees its only receiver gone once its channel fills */
    int pst = th_wait(prod, 30000);
    cr_expect_eq(pst, 11, "the producer should fail its reserve with -EOWNERDEAD (exit 11), got %d", pst);
    cleanup(p.name);
}

Test(bridge, far_bridge_gone_for_good_is_reported_by_the_near_side, .timeout = 90)
{
    link_down(1);
}

Test(bridge, near_bridge_gone_for_good_is_reported_by_the_far_side, .timeout = 90)
{
    link_down(0);
}

/* ---- a broadcast channel ------------------------------------------------------- */

/* A subscriber on the near host: every array, in order, to the end. */
static int near_subscriber(void *arg)
{
    const struct producer *p = arg;
    ndc_chan *ch;
    CK(ndc_open_wait(&ch, p->name, NDC_SUBSCRIBE | NDC_RDONLY, 30 * SEC) == 0, 20, "open");
    uint64_t want = 0;
    struct ndc_array a;
    int r;
    while ((r = ndc_acquire(ch, &a, 30 * SEC)) == 0) {
        CK(a.tag == want && a.seq == want && th_check(a.data, ndc_array_nbytes(&a), a.tag), 21,
           "near subscriber: array %llu, want %llu", (unsigned long long)a.tag, (unsigned long long)want);
        want++;
        ndc_release(ch, &a);
    }
    CK(r == -EPIPE && want == p->n, 22, "near subscriber: %s after %llu of %llu", ndc_strerror(r),
       (unsigned long long)want, (unsigned long long)p->n);
    ndc_free(ch);
    return 0;
}

Test(bridge, broadcast_channel_forwarded_by_a_subscribing_bridge, .timeout = 90)
{
    struct producer p = mkprod("bcast", 1000);
    p.broadcast = 1;
    p.wait_subs = 2;   /* the bridge and the near subscriber */
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(p.name));
    p.wait_far = far;
    int port = free_port();
    pid_t prod = th_fork(produce, &p);
    /* without --subscribe, the bridge says what to do and takes nothing */
    struct bridge refused = start_bridge("tcp", "connect", port, p.name, "--wait", "10");
    expect_exit(&refused, 1, 30000);
    cr_expect(strstr(refused.text, "is a broadcast channel") && strstr(refused.text, "--subscribe"),
              "the refusal says to use --subscribe:\n%s", refused.text);
    pid_t sub = th_fork(near_subscriber, &p);
    /* the far channel a broadcast one too, consumed by a subscriber there */
    struct bridge l = start_bridge("tcp", "listen", port, far, "--broadcast", NULL);
    struct bridge c = start_bridge("tcp", "connect", port, p.name, "--subscribe", NULL);
    consume_flags = NDC_SUBSCRIBE;
    struct consumed got = consume(far, &p, 30 * SEC, NULL, NULL);
    consume_flags = 0;
    cr_expect_eq(got.end, -EPIPE, "the far stream ended with %s", ndc_strerror(got.end));
    cr_expect_eq(got.n, p.n, "%llu arrays arrived, %llu published", (unsigned long long)got.n,
                 (unsigned long long)p.n);
    cr_expect_eq(got.dups + got.gaps + got.bad, 0, "dups %llu gaps %llu bad %llu", (unsigned long long)got.dups,
                 (unsigned long long)got.gaps, (unsigned long long)got.bad);
    cr_expect_eq(th_wait(sub, 30000), 0, "the near subscriber missed arrays");
    cr_expect_eq(th_wait(prod, 30000), 0);
    expect_exit(&c, 0, 30000);
    expect_exit(&l, 0, 30000);
    cr_expect(strstr(c.text, "subscribed to broadcast channel"), "connect: %s", c.text);
    cr_expect(strstr(l.text, "broadcast"), "the far channel was created as a broadcast one:\n%s", l.text);
    cleanup(p.name);
}

/* Latest policy: the bridge forwards the newest array each time; the far
 * side sees gaps, counts them as skipped by a subscriber, never as a loss. */
Test(bridge, latest_policy_broadcast_forwards_the_newest, .timeout = 90)
{
    struct producer p = mkprod("bcastl", 3000);
    p.broadcast = 1;
    p.policy = NDC_SLOW_LATEST;
    p.wait_subs = 1;
    p.delay_us = 50;
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(p.name));
    int port = free_port();
    struct bridge l = start_bridge("tcp", "listen", port, far, "--window", "2");
    pid_t prod = th_fork(produce, &p);
    struct bridge c = start_bridge("tcp", "connect", port, p.name, "--subscribe", NULL);
    struct consumed got = consume(far, &p, 30 * SEC, NULL, NULL);
    cr_expect_eq(got.end, -EPIPE, "the far stream ended with %s", ndc_strerror(got.end));
    cr_expect_eq(got.dups + got.bad, 0, "dups %llu bad %llu", (unsigned long long)got.dups,
                 (unsigned long long)got.bad);
    cr_expect_eq(got.last, p.n - 1, "the last array forwarded is %llu, not the newest", (unsigned long long)got.last);
    cr_expect_eq(th_wait(prod, 30000), 0, "the publisher was held back or failed");
    expect_exit(&c, 0, 30000);
    expect_exit(&l, 0, 30000);
    cr_expect(!strstr(l.text, "never reached"), "skipped arrays reported as lost:\n%s", l.text);
    /* the near side counts from its subscription on; the far side from
     * the first array it got */
    if (got.n < p.n)
        cr_expect(strstr(c.text, "skipped as a latest-policy"), "near: %s", c.text);
    if (got.missing > got.first)
        cr_expect(strstr(l.text, "skipped by the near side"), "far: %s", l.text);
    cleanup(p.name);
}

Test(bridge, subscribe_on_a_work_queue_is_refused, .timeout = 30)
{
    struct producer p = mkprod("bcastq", 1);
    struct ndc_chan_opts o = { .slots = 4, .slot_bytes = 4096 };
    ndc_chan *ch;
    th_ok(ndc_create(&ch, p.name, &o));
    struct bridge c = start_bridge("tcp", "connect", free_port(), p.name, "--subscribe", NULL);
    expect_exit(&c, 1, 20000);
    cr_expect(strstr(c.text, "not a broadcast channel"), "%s", c.text);
    ndc_free(ch);
    cleanup(p.name);
}

/* ---- peers that are not bridges ------------------------------------------------- */

static void on_err(void *arg, ucp_ep_h ep, ucs_status_t s) { (void)arg; (void)ep; (void)s; }

/* Connect with UCX, send `msg` as a HELLO, return the HELLO_ACK's status. */
static int say_hello(int port, const unsigned char *msg, size_t n, struct bw_hello_ack *ack)
{
    struct bu u;
    char err[256];
    cr_assert_eq(bu_init(&u, err, sizeof err), 0, "%s", err);
    ucp_ep_h ep;
    cr_assert_eq(bu_connect(&u, "127.0.0.1", (uint16_t)port, &ep, on_err, NULL, err, sizeof err), 0, "%s", err);
    unsigned char buf[BW_MAX_MSG];
    struct bu_req rr, rs;
    bu_recv(&u, buf, sizeof buf, bw_tag(BW_HELLO_ACK, 7, 0), BW_MASK_CONN, NULL, &rr);
    bu_send(&u, ep, msg, n, bw_tag(BW_HELLO, 7, 0), NULL, &rs);
    int r = bu_wait_req(&u, &rr, 10000);
    cr_assert_eq(r, 0, "no HELLO_ACK within 10 s");
    cr_assert_eq(rr.status, UCS_OK, "%s", ucs_status_string(rr.status));
    char why[200];
    cr_assert_eq(bw_hello_ack_decode(buf, rr.length, ack, why, sizeof why), 0, "%s", why);
    bu_wait_req(&u, &rs, 1000);
    bu_close(&u, ep, 1, 1000);
    bu_fini(&u);
    return ack->status;
}

Test(bridge, garbage_and_old_versions_are_refused_and_nothing_is_committed, .timeout = 90)
{
    const char *near = th_unique_name("garbage");
    char far[160];
    snprintf(far, sizeof far, "%s", far_of(near));
    int port = free_port();
    setenv("UCX_NET_DEVICES", "lo", 1);
    setenv("UCX_TLS", "tcp", 1);
    struct bridge l = start_bridge("tcp", "listen", port, far, NULL, NULL);
    usleep(500 * 1000);
    struct bw_hello h = { .conn = 7, .slots = 4, .slot_bytes = 4096 };
    snprintf(h.chan, sizeof h.chan, "%s", near);
    unsigned char m[BW_HELLO_SIZE];
    struct bw_hello_ack ack;

    bw_hello_encode(m, &h);
    m[4] = 99;   /* a version from the future (or the past) */
    cr_expect_eq(say_hello(port, m, sizeof m, &ack), -EPROTONOSUPPORT, "%s", ack.text);
    cr_expect(strstr(ack.text, "version 99"), "the refusal names the version: %s", ack.text);

    unsigned char junk[100];
    th_fill(junk, sizeof junk, 42);
    cr_expect_eq(say_hello(port, junk, sizeof junk, &ack), -EPROTO, "%s", ack.text);

    bw_hello_encode(m, &h);
    m[24] = m[25] = m[26] = m[27] = m[28] = m[29] = m[30] = m[31] = 0xff;   /* slot_bytes 2^64-1 */
    cr_expect_eq(say_hello(port, m, sizeof m, &ack), -EBADMSG, "%s", ack.text);

    ndc_chan *ch;
    cr_expect_eq(ndc_open(&ch, far, NDC_RDONLY), -ENOENT, "a refused peer must not create the far channel");
    cr_expect_eq(waitpid(l.pid, NULL, WNOHANG), 0, "the listener died of a bad peer:\n%s", slurp(l.log));
    const char *log = slurp(l.log);
    cr_expect(strstr(log, "refused a connection") && strstr(log, "version 99"),
              "the listener says why it refused:\n%s", log);

    /* and a real bridge is still served afterwards */
    struct producer p = { .n = 100, .slots = 4, .slot_bytes = 65536 };
    snprintf(p.name, sizeof p.name, "%s", near);
    pid_t prod = th_fork(produce, &p);
    struct bridge c = start_bridge("tcp", "connect", port, near, NULL, NULL);
    struct consumed got = consume(far, &p, 30 * SEC, NULL, NULL);
    cr_expect_eq(got.n, 100);
    cr_expect_eq(got.end, -EPIPE);
    cr_expect_eq(th_wait(prod, 30000), 0);
    expect_exit(&c, 0, 30000);
    expect_exit(&l, 0, 30000);
    cleanup(near);
}
