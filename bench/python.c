/* Python's multiprocessing rows: run bench/python/mp_bench.py with the same
 * CPUs, sizes and repetitions, and read the JSON object it prints per
 * measurement (flat: strings and numbers only, which is all we parse). */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The value of "key" in a flat JSON object, copied into out; 0 if present. */
static int jget(const char *line, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    size_t k = 0;
    if (*p == '"') {
        for (p++; *p && *p != '"' && k + 1 < cap; p++) {
            if (*p == '\\' && p[1])
                p++;
            out[k++] = *p;
        }
    } else {
        while (*p && *p != ',' && *p != '}' && k + 1 < cap)
            out[k++] = *p++;
    }
    out[k] = 0;
    return 0;
}

static double jnum(const char *line, const char *key)
{
    char v[64];
    return jget(line, key, v, sizeof v) ? 0 : strtod(v, NULL);
}

static void join_sizes(char *buf, size_t cap, const uint64_t *s, int n)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%llu", i ? "," : "", (unsigned long long)s[i]);
}

static struct result *grow(struct result **res, int *nres, int *cap)
{
    if (*nres == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        struct result *r = realloc(*res, (size_t)nc * sizeof *r);
        if (!r)
            return NULL;
        *res = r;
        *cap = nc;
    }
    struct result *r = &(*res)[(*nres)++];
    memset(r, 0, sizeof *r);
    return r;
}

int run_python(const struct pyopts *o, struct result **res, int *nres, int *cap, char *why)
{
    char cpus[32], reps[16], rt[32], sl[16], ts[512], ls[512];
    snprintf(cpus, sizeof cpus, "%d,%d", o->cpu[0], o->cpu[1]);
    snprintf(reps, sizeof reps, "%d", o->reps);
    snprintf(rt, sizeof rt, "%g", o->rep_time);
    snprintf(sl, sizeof sl, "%d", o->sleep_us);
    join_sizes(ts, sizeof ts, o->tput_sizes, o->ntput);
    join_sizes(ls, sizeof ls, o->lat_sizes, o->nlat);
    if (access(o->script, R_OK)) {
        snprintf(why, ERR_LEN, "%s: %s", o->script, strerror(errno));
        return -1;
    }
    const char *argv[] = { o->python, o->script, "--cpus", cpus, "--reps", reps, "--rep-time", rt,
                           "--sleep-us", sl, "--tput-sizes", ts, "--lat-sizes", ls,
                           "--sleep-sizes", o->asleep ? "8" : "", NULL };
    int pfd[2];
    if (pipe(pfd)) {
        snprintf(why, ERR_LEN, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
#ifdef BENCH_PYPATH
        /* the ndchan package of this build tree, for the py-ndchan rows */
        const char *pp = getenv("PYTHONPATH");
        char path[4096];
        snprintf(path, sizeof path, "%s%s%s", BENCH_PYPATH, pp && *pp ? ":" : "", pp && *pp ? pp : "");
        setenv("PYTHONPATH", path, 1);
#endif
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execv(o->python, (char *const *)argv);
        fprintf(stderr, "ndchan-bench: cannot run %s: %s\n", o->python, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        snprintf(why, ERR_LEN, "fork: %s", strerror(errno));
        return -1;
    }
    FILE *f = fdopen(pfd[0], "r");
    char line[4096];
    int got = 0;
    why[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (line[0] != '{')
            continue;
        char v[ERR_LEN];
        if (!jget(line, "skip", v, sizeof v)) {
            snprintf(why, ERR_LEN, "%s", v);
            continue;
        }
        struct result *r = grow(res, nres, cap);
        if (!r)
            break;
        r->from_python = 1;
        jget(line, "kind", r->kind, sizeof r->kind);
        jget(line, "transport", r->transport, sizeof r->transport);
        jget(line, "variant", r->variant, sizeof r->variant);
        jget(line, "err", r->err, sizeof r->err);
        r->bytes = (uint64_t)jnum(line, "bytes");
        r->cpu[0] = (int)jnum(line, "cpu_a");
        r->cpu[1] = (int)jnum(line, "cpu_b");
        r->ok = (int)jnum(line, "ok");
        r->nreps = (int)jnum(line, "reps");
        r->msgs = (uint64_t)jnum(line, "msgs");
        r->gbps_med = jnum(line, "gbps_med");
        r->gbps_min = jnum(line, "gbps_min");
        r->gbps_max = jnum(line, "gbps_max");
        r->nsamples = (uint64_t)jnum(line, "nsamples");
        r->p50 = jnum(line, "p50");
        r->p50_min = jnum(line, "p50_min");
        r->p50_max = jnum(line, "p50_max");
        r->p99 = jnum(line, "p99");
        r->p999 = jnum(line, "p999");
        r->lat_min = jnum(line, "lat_min");
        r->cpu_s_per_gib = jnum(line, "cpu_s_per_gib");
        r->peak_mib[0] = jnum(line, "peak_mib_a");
        r->peak_mib[1] = jnum(line, "peak_mib_b");
        double slots = jnum(line, "slots");
        r->slots = slots > 0 ? (uint32_t)slots : 0;
        got++;
    }
    if (f)
        fclose(f);
    int st = 0;
    waitpid(pid, &st, 0);
    if (!got && !why[0])
        snprintf(why, ERR_LEN, "%s %s gave no results (exit status %d)", o->python, o->script,
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return got ? 0 : -1;
}
