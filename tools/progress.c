#include "progress.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct progress {
    ndc_chan *ch;
    enum progress_side side;
    size_t total;
    double t0;
    atomic_int done;
    pthread_t thread;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void draw(struct progress *p, int final)
{
    struct ndc_stat st;
    if (ndc_stat(p->ch, &st) != 0)
        return;
    double dt = now() - p->t0;
    /* The channel counts bytes as sent only: a receiver shows the sent
     * bytes scaled by received/sent, exact once the stream ends. */
    unsigned long long n = p->side == PROGRESS_SENDING ? st.sent : st.received;
    double mib = p->side == PROGRESS_SENDING ? (double)st.bytes_sent / (1 << 20)
                 : st.sent ? (double)st.bytes_sent * st.received / st.sent / (1 << 20) : 0;
    char of[32] = "";
    if (p->total)
        snprintf(of, sizeof of, "/%zu", p->total);
    fprintf(stderr, "\r%llu%s arrays  %.1f MiB  %.1f MiB/s   %s", n, of, mib,
            dt > 0 ? mib / dt : 0.0, final ? "\n" : "");
}

static void *loop(void *arg)
{
    struct progress *p = arg;
    while (!atomic_load(&p->done)) {
        draw(p, 0);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

struct progress *progress_start(ndc_chan *ch, enum progress_side side, size_t total, int quiet)
{
    if (quiet || !isatty(STDERR_FILENO))
        return NULL;
    struct progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    *p = (struct progress){.ch = ch, .side = side, .total = total, .t0 = now()};
    if (pthread_create(&p->thread, NULL, loop, p) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

void progress_stop(struct progress *p)
{
    if (!p)
        return;
    atomic_store(&p->done, 1);
    pthread_join(p->thread, NULL);
    draw(p, 1);
    free(p);
}
