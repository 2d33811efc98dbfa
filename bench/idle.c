/* The idle cost: CPU used by a receiver asleep on an empty channel while a
 * live sender stays attached (so it keeps waiting rather than getting
 * -EOWNERDEAD). What it pays is the spin before sleeping and the wake-ups
 * that check its peers are alive. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

double bench_idle_cpu_percent(double seconds)
{
    ndc_chan *ch;
    struct ndc_chan_opts o = {.slots = 2, .slot_bytes = 4096, .spin_ns = bench_spin_ns};
    if (ndc_create(&ch, NULL, &o))
        return -1;
    struct ndc_array a = {.dtype = NDC_U8, .ndim = 1, .shape = {8}};
    if (ndc_reserve(ch, &a, 0) || ndc_commit(ch, &a)) {   /* this process is now a sender */
        ndc_free(ch);
        return -1;
    }
    int fd[2];
    if (pipe(fd)) {
        ndc_free(ch);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct ndc_array b;
        double pct = -1;
        if (ndc_acquire(ch, &b, 0) == 0 && ndc_release(ch, &b) == 0) {
            double c0 = cpu_seconds();
            int r = ndc_acquire(ch, &b, (int64_t)(seconds * 1e9));   /* nothing will come */
            if (r == -ETIMEDOUT)
                pct = (cpu_seconds() - c0) / seconds * 100;
        }
        ssize_t w = write(fd[1], &pct, sizeof pct);
        _exit(w == sizeof pct ? 0 : 1);
    }
    double pct = -1;
    if (pid > 0 && read(fd[0], &pct, sizeof pct) != sizeof pct)
        pct = -1;
    if (pid > 0)
        waitpid(pid, NULL, 0);
    close(fd[0]);
    close(fd[1]);
    ndc_free(ch);
    return pct;
}
