/* npy_rate: the issue's .npy targets on this machine, medians of R runs.
 *
 *   npy_rate [DIR] [FILES] [RUNS]      (defaults: /tmp/npy_rate 6 7)
 *
 * Writes FILES files of 64 MiB (float64) into DIR, then measures:
 *   memcpy      one 64 MiB memcpy into warm memory: the ceiling
 *   load        ndc_npy_load of the cached files into a channel (a receiver
 *               thread acquires and releases each array without touching it)
 *   read+send   read() into a reused buffer, then ndc_send (one extra copy)
 *   cold load   the same after POSIX_FADV_DONTNEED on every file,
 *               buffered and with NDC_NPY_DIRECT
 *   cold dd     dd if=FILE of=/dev/null bs=1M over the same dropped files
 * Not a unit test: build it by hand against the build dir's static library.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ndchan.h"

#define MIB (1u << 20)
#define FILE_BYTES (64u * MIB)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static ndc_chan *ch;
static atomic_int stop;
static atomic_long got;

static void *receiver(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        struct ndc_array a;
        int r = ndc_acquire(ch, &a, 50 * 1000 * 1000);
        if (r == 0) {
            ndc_release(ch, &a);
            atomic_fetch_add(&got, 1);
        } else if (r != -ETIMEDOUT && r != -EAGAIN) {
            fprintf(stderr, "acquire: %s\n", ndc_strerror(r));
            break;
        }
    }
    return NULL;
}

static void wait_all(long want)
{
    while (atomic_load(&got) < want)
        usleep(50);
}

static void drop(char **paths, int n)
{
    sync();
    for (int i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp/npy_rate";
    int nf = argc > 2 ? atoi(argv[2]) : 6, runs = argc > 3 ? atoi(argv[3]) : 7;
    mkdir(dir, 0755);
    char **paths = calloc((size_t)nf, sizeof *paths);
    double *src = malloc(FILE_BYTES);
    for (size_t i = 0; i < FILE_BYTES / 8; i++)
        src[i] = (double)i;
    for (int i = 0; i < nf; i++) {
        paths[i] = malloc(512);
        snprintf(paths[i], 512, "%s/f%02d.npy", dir, i);
        struct ndc_array a;
        int64_t shape[2] = { 1024, FILE_BYTES / 8 / 1024 };
        ndc_array_init(&a, NDC_F64, 2, shape, src);
        int r = ndc_npy_write(&a, paths[i]);
        if (r) {
            fprintf(stderr, "write %s: %s (%s)\n", paths[i], ndc_strerror(r), ndc_last_error());
            return 1;
        }
    }
    double *t = calloc((size_t)runs, sizeof *t);
    double bytes = (double)nf * FILE_BYTES;

    /* memcpy ceiling: 64 MiB into warm memory */
    double *dst = malloc(FILE_BYTES);
    memset(dst, 1, FILE_BYTES);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        memcpy(dst, src, FILE_BYTES);
        t[r] = now() - t0;
    }
    __asm__ volatile("" : : "r"(dst) : "memory");
    double memcpy_gbs = FILE_BYTES / median(t, runs) / 1e9;
    printf("memcpy 64 MiB           %6.2f GB/s\n", memcpy_gbs);

    struct ndc_chan_opts co;
    memset(&co, 0, sizeof co);
    co.slots = 4;
    co.slot_bytes = FILE_BYTES;
    co.flags = NDC_POPULATE;               /* first touch is not what we measure */
    int err = ndc_create(&ch, NULL, &co);
    if (err) {
        fprintf(stderr, "create: %s (%s)\n", ndc_strerror(err), ndc_last_error());
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, receiver, NULL);
    long sent = 0;

    /* warm the page cache and the slots */
    for (int i = 0; i < nf; i++) {
        int fd = open(paths[i], O_RDONLY);
        while (read(fd, dst, FILE_BYTES) > 0)
            ;
        close(fd);
    }
    struct ndc_npy_opts o;
    memset(&o, 0, sizeof o);
    sent += ndc_npy_load(ch, (const char *const *)paths, (size_t)nf, &o);
    wait_all(sent);

    for (int r = 0; r < runs; r++) {
        double t0 = now();
        int k = ndc_npy_load(ch, (const char *const *)paths, (size_t)nf, &o);
        if (k != nf) {
            fprintf(stderr, "load: %s (%s)\n", ndc_strerror(k), ndc_last_error());
            return 1;
        }
        sent += k;
        wait_all(sent);
        t[r] = now() - t0;
    }
    double load_gbs = bytes / median(t, runs) / 1e9;
    printf("load (page cache)       %6.2f GB/s  = %3.0f%% of memcpy\n", load_gbs,
           100 * load_gbs / memcpy_gbs);

    void *buf = malloc(FILE_BYTES + 4096);
    memset(buf, 0, FILE_BYTES + 4096);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        for (int i = 0; i < nf; i++) {
            int fd = open(paths[i], O_RDONLY);
            ssize_t n, got_ = 0;
            while ((n = read(fd, (char *)buf + got_, FILE_BYTES + 4096 - (size_t)got_)) > 0)
                got_ += n;
            close(fd);
            struct ndc_array a;
            int64_t shape[2] = { 1024, FILE_BYTES / 8 / 1024 };
            ndc_array_init(&a, NDC_F64, 2, shape, (char *)buf + 128);   /* past the header */
            if ((err = ndc_send(ch, &a, NDC_FOREVER))) {
                fprintf(stderr, "send: %s\n", ndc_strerror(err));
                return 1;
            }
            sent++;
        }
        wait_all(sent);
        t[r] = now() - t0;
    }
    double rs_gbs = bytes / median(t, runs) / 1e9;
    printf("read()+ndc_send         %6.2f GB/s  load is %.2fx faster\n", rs_gbs, load_gbs / rs_gbs);

    int cruns = runs < 5 ? runs : 5;
    for (int direct = 0; direct < 2; direct++) {
        o.flags = direct ? NDC_NPY_DIRECT : 0;
        for (int r = 0; r < cruns; r++) {
            drop(paths, nf);
            double t0 = now();
            int k = ndc_npy_load(ch, (const char *const *)paths, (size_t)nf, &o);
            sent += k;
            wait_all(sent);
            t[r] = now() - t0;
        }
        printf("cold load%s  %6.2f GB/s\n", direct ? " (O_DIRECT)" : "           ",
               bytes / median(t, cruns) / 1e9);
    }
    for (int r = 0; r < cruns; r++) {
        drop(paths, nf);
        double t0 = now();
        for (int i = 0; i < nf; i++) {
            char cmd[700];
            snprintf(cmd, sizeof cmd, "dd if=%s of=/dev/null bs=1M status=none", paths[i]);
            if (system(cmd) != 0)
                return 1;
        }
        t[r] = now() - t0;
    }
    printf("cold dd bs=1M           %6.2f GB/s\n", bytes / median(t, cruns) / 1e9);

    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    ndc_free(ch);
    for (int i = 0; i < nf; i++)
        unlink(paths[i]);
    return 0;
}
