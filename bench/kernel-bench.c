/* kernel-bench.c - single-thread throughput of Orchard's matrix kernels (orc_matmul) for one
 * weight type and shape, plain and load-time repacked, as weight GB/s and GOP/s. Used to
 * tune the kernels against the memory-bandwidth limit (docs/PERFORMANCE.md).
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/kernel-bench.c build/liborchard.a -lm -lpthread
 *   ./a.out TYPE [ROWS] [COLS] [NTOK] [SECONDS]      TYPE: q4_0 q8_0 q4_k q6_k f16 ...  */
#include "dtype.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the machine is shared */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int type_by_name(const char *name)
{
    for (uint32_t t = 0; t < ORC_DT_COUNT; t++) {
        const char *n = orc_dtype_name(t);
        if (n && strcasecmp(n, name) == 0)
            return (int)t;
    }
    return -1;
}

static double run(uint32_t type, const void *w, size_t ws, int64_t rows, int64_t cols,
                  const void *x, size_t xs, int64_t ntok, float *y, double secs)
{
    int iters = 0;
    double t0 = now(), t1;
    do {
        orc_matmul(type, w, ws, cols, x, xs, ntok, y, rows, 0, rows);
        iters++;
        t1 = now();
    } while (t1 - t0 < secs);
    return (t1 - t0) / iters;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: kernel-bench TYPE [ROWS] [COLS] [NTOK] [SECONDS]\n");
        return 2;
    }
    int type = type_by_name(argv[1]);
    int64_t rows = argc > 2 ? atoll(argv[2]) : 8192, cols = argc > 3 ? atoll(argv[3]) : 2048;
    int64_t ntok = argc > 4 ? atoll(argv[4]) : 1;
    double secs = argc > 5 ? atof(argv[5]) : 1.0;
    if (type < 0 || !orc_quant_supported((uint32_t)type) || rows <= 0 || cols <= 0 || ntok <= 0) {
        fprintf(stderr, "kernel-bench: bad type or shape\n");
        return 2;
    }
    size_t ws = orc_dtype_row_size((uint32_t)type, cols);
    uint8_t *w = malloc(ws * (size_t)rows);
    float *row = malloc((size_t)cols * sizeof(float));
    float *xf = malloc((size_t)(cols * ntok) * sizeof(float));
    float *y = malloc((size_t)(rows * ntok) * sizeof(float));
    srand(1);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < cols; i++)
            row[i] = (float)rand() / RAND_MAX - 0.5f;
        orc_quantize_row((uint32_t)type, row, w + (size_t)r * ws, cols);
    }
    for (int64_t i = 0; i < cols * ntok; i++)
        xf[i] = (float)rand() / RAND_MAX - 0.5f;
    printf("isa %s, %s %lldx%lld, %lld token(s), %.1f MiB of weights\n", orc_quant_isa(), argv[1],
           (long long)rows, (long long)cols, (long long)ntok, ws * (double)rows / 1048576.0);
    for (int pass = 0; pass < 2; pass++) {
        uint32_t t = (uint32_t)type;
        if (pass == 1) {
            t = orc_quant_repack(t, w, rows, ws, cols);
            if (t == (uint32_t)type)
                break;
        }
        uint32_t at = orc_matmul_act_type(t, cols, ntok);
        size_t xs = orc_act_row_size(at, cols);
        uint8_t *x = malloc(xs * (size_t)ntok);
        double tc = now();
        for (int64_t k = 0; k < ntok; k++)
            orc_act_convert(at, xf + k * cols, x + (size_t)k * xs, cols);
        tc = now() - tc;
        double dt = run(t, w, ws, rows, cols, x, xs, ntok, y, secs);
        printf("%-9s %8.1f us/call  %6.2f GB/s weights  %7.1f GOP/s  (act convert %.1f us)\n",
               pass ? "repacked" : "plain", dt * 1e6, ws * (double)rows / dt / 1e9,
               2.0 * rows * cols * ntok / dt / 1e9, tc * 1e6);
        free(x);
    }
    free(w);
    free(row);
    free(xf);
    free(y);
    return 0;
}
