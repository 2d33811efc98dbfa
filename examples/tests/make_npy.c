/* make_npy DIR N: N float64 .npy files of varying shapes, as test input for
 * the examples (written with ndc_npy_write, read back by np.load alike). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "ndchan.h"

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int n = atoi(argv[2]);
    mkdir(argv[1], 0755);
    for (int i = 0; i < n; i++) {
        int64_t shape[2] = { 10 + i, 100 + 7 * i };
        static double x[40 * 400];
        for (int k = 0; k < shape[0] * shape[1]; k++)
            x[k] = i + k * 0.5;
        struct ndc_array a;
        char path[4096];
        snprintf(path, sizeof path, "%s/in%d.npy", argv[1], i);
        int r = ndc_array_init(&a, NDC_F64, 2, shape, x);
        if (r || (r = ndc_npy_write(&a, path))) {
            fprintf(stderr, "make_npy: %s: %s\n", path, ndc_strerror(r));
            return 1;
        }
    }
    return 0;
}
