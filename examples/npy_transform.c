/* npy_transform: a directory of .npy files streamed through a transform
 * into another directory, three stages in three processes:
 *
 *   load       ndc_npy_load reads each file straight into a slot (io_uring)
 *   transform  reads an array in place, writes (x - mean) / std as float32
 *              straight into a slot of the next channel
 *   save       ndc_npy_drain writes each result to OUT_DIR/<seq>.npy
 *
 * Each stage ends the stream it feeds with ndc_close, so the end of the
 * input travels down the pipeline. Inputs must be float32 or float64.
 *
 *   npy_transform IN_DIR OUT_DIR
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ndchan.h"

static int is_npy(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 4 && strcmp(e->d_name + n - 4, ".npy") == 0;
}

static double get(const struct ndc_array *a, int64_t k)
{
    return a->dtype == NDC_F32 ? ((const float *)a->data)[k] : ((const double *)a->data)[k];
}

static int transform(ndc_chan *in, ndc_chan *out)
{
    int r;
    struct ndc_array a;
    while ((r = ndc_acquire(in, &a, NDC_FOREVER)) == 0) {
        struct ndc_array b;
        ndc_array_init(&b, NDC_F32, a.ndim, a.shape, NULL);
        b.tag = a.tag;
        if (a.dtype != NDC_F32 && a.dtype != NDC_F64) {
            fprintf(stderr, "transform: array %llu is %s, not a float\n",
                    (unsigned long long)a.seq, ndc_dtype_name(a.dtype));
            return 1;
        }
        if ((r = ndc_reserve(out, &b, NDC_FOREVER)))
            break;
        int64_t n = (int64_t)(ndc_array_nbytes(&a) / ndc_dtype_size(a.dtype));
        double sum = 0, sq = 0;
        for (int64_t k = 0; k < n; k++) {
            sum += get(&a, k);
            sq += get(&a, k) * get(&a, k);
        }
        double mean = n ? sum / (double)n : 0, var = n ? sq / (double)n - mean * mean : 0;
        double sd = var > 0 ? sqrt(var) : 1;
        float *y = b.data;
        for (int64_t k = 0; k < n; k++)
            y[k] = (float)((get(&a, k) - mean) / sd);
        ndc_release(in, &a);
        if ((r = ndc_commit(out, &b)))
            break;
    }
    ndc_close(out);                                /* pass the end of stream on */
    if (r != -EPIPE)
        fprintf(stderr, "transform: %s\n", ndc_strerror(r));
    return r == -EPIPE ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: npy_transform IN_DIR OUT_DIR\n");
        return 2;
    }
    struct dirent **list;
    int n = scandir(argv[1], &list, is_npy, versionsort);
    if (n <= 0) {
        fprintf(stderr, "npy_transform: %s: no .npy files\n", argv[1]);
        return 1;
    }
    /* Size the slots from the headers: the largest input, and its float32 result. */
    char **paths = calloc((size_t)n, sizeof *paths);
    uint64_t biggest = 4096;
    for (int i = 0; i < n; i++) {
        struct ndc_array a;
        paths[i] = malloc(strlen(argv[1]) + strlen(list[i]->d_name) + 2);
        sprintf(paths[i], "%s/%s", argv[1], list[i]->d_name);
        int r = ndc_npy_peek(paths[i], &a);
        if (r) {
            fprintf(stderr, "npy_transform: %s\n", ndc_last_error());
            return 1;
        }
        if (ndc_array_nbytes(&a) > biggest)
            biggest = ndc_array_nbytes(&a);
    }
    struct ndc_chan_opts o = { .slots = 6, .slot_bytes = biggest };
    ndc_chan *in, *out;
    if (ndc_create(&in, NULL, &o) || ndc_create(&out, NULL, &o)) {
        fprintf(stderr, "ndc_create: %s\n", ndc_last_error());
        return 1;
    }
    mkdir(argv[2], 0755);
    pid_t loader = fork();
    if (loader == 0) {
        int r = ndc_npy_load(in, (const char *const *)paths, (size_t)n, NULL);
        ndc_close(in);
        if (r < 0)
            fprintf(stderr, "load: %s (%s)\n", ndc_strerror(r), ndc_last_error());
        _exit(r < 0);
    }
    pid_t worker = fork();
    if (worker == 0)
        _exit(transform(in, out));
    int saved = ndc_npy_drain(out, argv[2], NULL);
    int s1, s2;
    waitpid(loader, &s1, 0);
    waitpid(worker, &s2, 0);
    if (saved < 0)
        fprintf(stderr, "save: %s (%s)\n", ndc_strerror(saved), ndc_last_error());
    else
        printf("npy_transform: %d files from %s standardized into %s\n", saved, argv[1], argv[2]);
    ndc_free(in);
    ndc_free(out);
    for (int i = 0; i < n; i++) {
        free(paths[i]);
        free(list[i]);
    }
    free(paths);
    free(list);
    int ok = saved == n && WIFEXITED(s1) && !WEXITSTATUS(s1) && WIFEXITED(s2) && !WEXITSTATUS(s2);
    return ok ? 0 : 1;
}
