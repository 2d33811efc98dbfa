/*
 * How fast a dead peer is noticed (suite detect): a receiver asleep on an
 * empty channel whose only sender is SIGKILLed gets -EOWNERDEAD, a sender
 * asleep on a full channel gets the slots of a killed receiver back or
 * -EOWNERDEAD; the median time is held to 100 ms. And without a readable
 * /proc a live peer is still live.
 *
 * With -DFAULTS_SOAK=1 (the soak_detect program): ten times the timeouts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"
#include "helpers.h"
#include "faults_helpers.h"

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- detection time ----------------------------------------------------------- */

struct det {
    _Atomic int step, waiting;
    int rc;
    int64_t t_ret;
    char err[200];
};
struct darg { ndc_chan *ch; struct det *d; };

static int wait_step(struct det *d, int want, int ms)
{
    int64_t end = th_now_ns() + (int64_t)ms * MS;
    while (atomic_load(&d->step) < want)
        if (th_now_ns() > end)
            return -1;
        else
            usleep(200);
    return 0;
}

/* Wait until pid sleeps in the kernel, steadily (beyond the spin phase). */
static int wait_asleep(pid_t pid, _Atomic int *waiting, int ms)
{
    int64_t end = th_now_ns() + (int64_t)ms * MS;
    while (th_now_ns() < end) {
        if (atomic_load(waiting) && proc_state(pid) == 'S') {
            usleep(3000);
            if (atomic_load(waiting) && proc_state(pid) == 'S')
                return 0;
        }
        usleep(500);
    }
    return -1;
}

/* A detection child's blocking call: it says it is waiting (the parent
 * kills the peer once it sleeps), makes the call, and stamps its return. */
#define TIMED_BLOCKING(d, ...)                \
    do {                                      \
        atomic_store(&(d)->waiting, 1);       \
        __VA_ARGS__;                          \
        (d)->t_ret = th_now_ns();             \
        atomic_store(&(d)->waiting, 0);       \
    } while (0)

static int d_idle_sender(void *p)          /* sends one array, then lives on idle */
{
    struct darg *m = p;
    die_with_parent();
    int rc;
    send_tag(m->ch, 1, 5 * SEC, &rc);
    CK(rc == 0, 70, "send: %s", ndc_strerror(rc));
    for (;;)
        pause();
}

static int d_blocked_receiver(void *p)     /* takes that array, then waits */
{
    struct darg *m = p;
    die_with_parent();
    struct ndc_array a;
    int r = ndc_acquire(m->ch, &a, 10 * SEC);
    CK(r == 0, 71, "first acquire: %s", ndc_strerror(r));
    CK(ndc_release(m->ch, &a) == 0, 72, "release");
    TIMED_BLOCKING(m->d, m->d->rc = ndc_acquire(m->ch, &a, 10 * SEC));
    return 0;
}

static void report_times(const char *what, int64_t *lat, int n)
{
    qsort(lat, (size_t)n, sizeof lat[0], cmp_i64);
    fprintf(stderr, "[detect] %s: median %.1f ms, min %.1f ms, max %.1f ms over %d tries\n", what,
            lat[n / 2] / 1e6, lat[0] / 1e6, lat[n - 1] / 1e6, n);
    cr_log_info("%s: median %.1f ms, max %.1f ms over %d tries", what, lat[n / 2] / 1e6, lat[n - 1] / 1e6, n);
    /* the median is held to the contract; the worst try only to a bound a
     * shared 2-vCPU VM can keep (a descheduled waiter adds its slice) */
    cr_assert_lt(lat[n / 2], 100 * MS, "%s: median %.1f ms (contract: 100 ms)", what, lat[n / 2] / 1e6);
    cr_assert_lt(lat[n - 1], SEC, "%s: worst %.1f ms", what, lat[n - 1] / 1e6);
}

#define DETECT_TRIES 10

/* A receiver asleep on an empty channel whose only sender is SIGKILLed. */
Test(detect, receiver_eownerdead_after_sender_killed, .timeout = TMO(90))
{
    int64_t lat[DETECT_TRIES];
    struct det *d = th_shared(sizeof *d);
    for (int i = 0; i < DETECT_TRIES; i++) {
        memset(d, 0, sizeof *d);
        ndc_chan *ch = th_chan(2, 4096);
        struct darg m = { ch, d };
        pid_t ps = th_fork(d_idle_sender, &m);
        pid_t pr = th_fork(d_blocked_receiver, &m);
        cr_assert_eq(wait_asleep(pr, &d->waiting, 10000), 0, "the receiver never went to sleep");
        int64_t t_kill = th_now_ns();
        kill(ps, SIGKILL);
        waitpid(ps, NULL, 0);
        int st = th_wait(pr, 10000);
        cr_assert_eq(st, 0, "receiver exited with %d", st);
        cr_assert_eq(d->rc, -EOWNERDEAD, "blocked acquire with its only sender killed: %d (%s)", d->rc,
                     ndc_strerror(d->rc));
        lat[i] = d->t_ret - t_kill;
        ndc_free(ch);
    }
    report_times("SIGKILLed sender -> blocked receiver gets -EOWNERDEAD", lat, DETECT_TRIES);
}

static int d_idle_receiver(void *p)        /* receives once (a receiver), then idles */
{
    struct darg *m = p;
    die_with_parent();
    struct ndc_array a;
    int r = ndc_acquire(m->ch, &a, 10 * SEC);
    CK(r == 0, 80, "acquire: %s", ndc_strerror(r));
    CK(ndc_release(m->ch, &a) == 0, 81, "release");
    atomic_store(&m->d->step, 1);
    for (;;)
        pause();
}

static int d_hoarder(void *p)              /* takes every slot on loan and keeps them */
{
    struct darg *m = p;
    die_with_parent();
    struct ndc_array a[8];
    for (int i = 0; i < 4; i++) {
        int r = ndc_acquire(m->ch, &a[i], 10 * SEC);
        CK(r == 0, 82, "acquire %d: %s", i, ndc_strerror(r));
    }
    atomic_store(&m->d->step, 3);
    for (;;)
        pause();
}

static int d_full_sender(void *p)
{
    struct darg *m = p;
    die_with_parent();
    int rc;
    send_tag(m->ch, 1, 5 * SEC, &rc);
    CK(rc == 0, 83, "send 1: %s", ndc_strerror(rc));
    CK(wait_step(m->d, 2, 10000) == 0, 84, "step 2");
    for (uint64_t t = 2; t < 6; t++) {
        send_tag(m->ch, t, 5 * SEC, &rc);
        CK(rc == 0, 85, "send %llu: %s", (unsigned long long)t, ndc_strerror(rc));
    }
    CK(wait_step(m->d, 3, 10000) == 0, 86, "step 3");
    TIMED_BLOCKING(m->d, send_tag(m->ch, 6, 10 * SEC, &m->d->rc));
    return 0;
}

/* A sender asleep on a full channel: every slot is on loan to a receiver
 * that is SIGKILLed; another receiver lives on. The slots come back and the
 * blocked send goes through. */
Test(detect, slot_back_after_hoarding_receiver_killed, .timeout = TMO(90))
{
    int64_t lat[DETECT_TRIES];
    struct det *d = th_shared(sizeof *d);
    for (int i = 0; i < DETECT_TRIES; i++) {
        memset(d, 0, sizeof *d);
        ndc_chan *ch = th_chan(4, 4096);
        struct darg m = { ch, d };
        pid_t ps = th_fork(d_full_sender, &m);
        pid_t pr2 = th_fork(d_idle_receiver, &m);
        cr_assert_eq(wait_step(d, 1, 10000), 0, "the live receiver never received");
        pid_t pr1 = th_fork(d_hoarder, &m);
        atomic_store(&d->step, 2);
        cr_assert_eq(wait_asleep(ps, &d->waiting, 10000), 0, "the sender never went to sleep");
        struct ndc_stat st = th_stat(ch);
        cr_assert(st.loaned == 4 && st.free == 0, "before the kill: free %u loaned %u", st.free, st.loaned);
        int64_t t_kill = th_now_ns();
        kill(pr1, SIGKILL);
        waitpid(pr1, NULL, 0);
        int s = th_wait(ps, 10000);
        cr_assert_eq(s, 0, "sender exited with %d", s);
        cr_assert_eq(d->rc, 0, "blocked send after the hoarder died: %d (%s)", d->rc, ndc_strerror(d->rc));
        lat[i] = d->t_ret - t_kill;
        st = th_stat(ch);
        cr_assert(st.free == 3 && st.ready == 1 && st.loaned == 0,
                  "after: free %u ready %u loaned %u (want 3/1/0: the 4 loans returned, 1 array sent)",
                  st.free, st.ready, st.loaned);
        kill(pr2, SIGKILL);
        waitpid(pr2, NULL, 0);
        ndc_free(ch);
    }
    report_times("SIGKILLed receiver holding every loan -> blocked sender gets a slot", lat, DETECT_TRIES);
}

static int d_full_sender2(void *p)
{
    struct darg *m = p;
    die_with_parent();
    int rc;
    CK(wait_step(m->d, 1, 10000) == 0, 90, "step 1");
    for (uint64_t t = 2; t < 4; t++) {
        send_tag(m->ch, t, 5 * SEC, &rc);
        CK(rc == 0, 91, "send %llu: %s", (unsigned long long)t, ndc_strerror(rc));
    }
    TIMED_BLOCKING(m->d, send_tag(m->ch, 9, 10 * SEC, &m->d->rc));
    return 0;
}

/* A sender asleep on a full channel whose only receiver is SIGKILLed. */
Test(detect, sender_eownerdead_after_receiver_killed, .timeout = TMO(90))
{
    int64_t lat[DETECT_TRIES];
    struct det *d = th_shared(sizeof *d);
    for (int i = 0; i < DETECT_TRIES; i++) {
        memset(d, 0, sizeof *d);
        ndc_chan *ch = th_chan(2, 4096);
        int rc;
        send_tag(ch, 1, SEC, &rc);
        th_ok(rc);
        struct darg m = { ch, d };
        pid_t pr = th_fork(d_idle_receiver, &m);
        pid_t ps = th_fork(d_full_sender2, &m);
        ndc_free(ch);   /* the test process was a sender: leave only the two children */
        cr_assert_eq(wait_asleep(ps, &d->waiting, 10000), 0, "the sender never went to sleep");
        int64_t t_kill = th_now_ns();
        kill(pr, SIGKILL);
        waitpid(pr, NULL, 0);
        int s = th_wait(ps, 10000);
        cr_assert_eq(s, 0, "sender exited with %d", s);
        cr_assert_eq(d->rc, -EOWNERDEAD, "send on a full channel, its only receiver killed: %d (%s)", d->rc,
                     ndc_strerror(d->rc));
        lat[i] = d->t_ret - t_kill;
    }
    report_times("SIGKILLed receiver -> sender blocked on a full channel gets -EOWNERDEAD", lat, DETECT_TRIES);
}

/* ---- without /proc -------------------------------------------------------- */

/* Without a readable /proc (chroots, sandboxes), ENOENT for every pid made
 * every peer and lock holder look dead. In a private mount namespace with an
 * empty /proc, a live sender must still be a live sender. */
static int noproc_scenario(void *arg)
{
    (void)arg;
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("none", "/proc", "tmpfs", 0, NULL) != 0)
        return 77;   /* not allowed here: skip */
    ndc_chan *ch;
    CK(ndc_create(&ch, NULL, &(struct ndc_chan_opts){.slots = 2, .slot_bytes = 64}) == 0, 1, "create");
    pid_t pid = fork();
    if (pid == 0) {
        struct ndc_array a = {.dtype = NDC_U8, .ndim = 1, .shape = {8}, .tag = 42};
        CK(ndc_reserve(ch, &a, 0) == 0, 2, "reserve");
        usleep(200 * 1000);   /* alive and holding a reservation while the parent waits */
        CK(ndc_commit(ch, &a) == 0, 3, "commit by a live sender");
        usleep(300 * 1000);
        _exit(0);
    }
    struct ndc_array a;
    int r = ndc_acquire(ch, &a, 2 * SEC);
    CK(r == 0 && a.tag == 42, 4, "acquire: %d (%s)", r, ndc_strerror(r));
    struct ndc_stat st;
    CK(ndc_stat(ch, &st) == 0 && st.attached == 2, 5, "attached %u, want 2", st.attached);
    int status;
    waitpid(pid, &status, 0);
    CK(WIFEXITED(status) && WEXITSTATUS(status) == 0, 6, "sender exit %d", status);
    return 0;
}

Test(detect, no_proc_means_ask_kill_not_presume_death, .timeout = 30)
{
    int rc = th_wait(th_fork(noproc_scenario, NULL), 20000);
    if (rc == 77)
        cr_skip_test("cannot make a mount namespace with an empty /proc here (needs root)");
    cr_assert_eq(rc, 0, "scenario failed with code %d (see stderr)", rc);
}
