/* cmd_quantize.c - `orchard quantize IN OUT TYPE [-t N]`: writes a copy of a GGUF model with
 * its weight matrices converted to TYPE through orc_model_quantize (public API only). */
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *QUANTIZE_HELP =
    "usage: orchard quantize IN.gguf OUT.gguf TYPE [-t THREADS]\n"
    "\n"
    "Writes OUT with the weight matrices of IN converted to TYPE, one of\n"
    "  q4_0 q4_1 q5_0 q5_1 q8_0 q4_k_m q5_k_m q6_k iq4_nl f16 bf16 f32\n"
    "following llama.cpp's recipes: norms and other 1-D tensors stay f32, the output\n"
    "matrix gets q6_k (q8_0 stays q8_0), q4_k_m/q5_k_m give attn_v and ffn_down of some\n"
    "layers q6_k. Metadata is copied; general.file_type is set. -t: threads (default: all).\n";

int cmd_quantize(int argc, char **argv)
{
    const char *C = "quantize";
    const char *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0;
    int32_t n_threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(QUANTIZE_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            n_threads = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 1024);
        } else if (a[0] == '-' && a[1]) {
            cli_usage_error(C, "unknown option '%s'", a);
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            cli_usage_error(C, "unexpected argument '%s' (usage: orchard quantize IN OUT TYPE)", a);
        }
    }
    if (n_pos < 3)
        cli_usage_error(C, "expected IN OUT TYPE (see orchard quantize --help)");
    orc_quantize_params qp = orc_quantize_default_params();
    qp.type = pos[2];
    qp.n_threads = n_threads;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    orc_status st = orc_model_quantize(pos[0], pos[1], &qp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st != ORC_OK) {
        fprintf(stderr, "orchard quantize: %s\n", orc_last_error());
        return st == ORC_ERR_INVALID_ARGUMENT ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    struct stat si, so;
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (stat(pos[0], &si) == 0 && stat(pos[1], &so) == 0)
        fprintf(stderr, "orchard quantize: %s (%.1f MiB) -> %s (%.1f MiB, %s) in %.1f s\n", pos[0],
                (double)si.st_size / 1048576.0, pos[1], (double)so.st_size / 1048576.0, pos[2], secs);
    return 0;
}
