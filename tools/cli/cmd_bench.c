/* cmd_bench.c - `orchard bench`: prompt-processing and generation speed like llama-bench.
 * ppN evaluates N random tokens as one batch from an empty cache; tgN evaluates N tokens
 * one at a time after a one-token prompt. Each test runs once to warm up, then REPS
 * times; tokens/s are reported as mean +- standard deviation. Public API only. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *BENCH_HELP =
    "usage: orchard bench [-m MODEL] [-p N_PROMPT] [-n N_GEN] [-t THREADS] [-r REPS]\n"
    "                     [--no-warmup] [--json]\n"
    "\n"
    "  -p N   prompt processing: N random tokens in one batch from an empty cache\n"
    "         (default 512; 0 skips the test)\n"
    "  -n N   generation: N single-token evaluations after a one-token prompt\n"
    "         (default 128; 0 skips the test)\n"
    "  -t N   threads (default: all cores, shown as 0)\n"
    "  -r N   repetitions after one warm-up run (default 3)\n"
    "  --json print one JSON object instead of the table\n";

typedef struct {
    char name[32];
    int32_t n_prompt, n_gen;
    double *ts; /* tokens/s per repetition */
    double mean, sd;
} bench_result;

/* llama.cpp's LLAMA_FTYPE numbers (general.file_type) as names, for the table */
static const char *ftype_name(const orc_model *m)
{
    static const struct {
        int id;
        const char *name;
    } names[] = {{0, "F32"},     {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},
                 {8, "Q5_0"},    {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"},
                 {13, "Q3_K_L"}, {14, "Q4_K_S"}, {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"},
                 {18, "Q6_K"},   {25, "IQ4_NL"}, {30, "IQ4_XS"}, {32, "BF16"}};
    char buf[32];
    if (orc_model_meta_value(m, "general.file_type", buf, sizeof buf) < 0)
        return "?";
    int id = atoi(buf);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].id == id)
            return names[i].name;
    return "?";
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* xorshift: reproducible token ids without touching the C library's rand state */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static orc_status run_pp(orc_context *ctx, const orc_token *toks, int32_t n, double *secs)
{
    orc_context_clear(ctx);
    double t0 = now_s();
    orc_status st = orc_eval(ctx, toks, n, false);
    *secs = now_s() - t0;
    return st;
}

static orc_status run_tg(orc_context *ctx, const orc_token *toks, int32_t n, double *secs)
{
    orc_context_clear(ctx);
    orc_status st = orc_eval(ctx, toks, 1, false);
    double t0 = now_s();
    for (int32_t i = 0; i < n && st == ORC_OK; i++)
        st = orc_eval(ctx, &toks[i + 1], 1, false);
    *secs = now_s() - t0;
    return st;
}

static void stats(bench_result *r, int reps)
{
    double s = 0, ss = 0;
    for (int i = 0; i < reps; i++)
        s += r->ts[i];
    r->mean = s / reps;
    for (int i = 0; i < reps; i++)
        ss += (r->ts[i] - r->mean) * (r->ts[i] - r->mean);
    r->sd = reps > 1 ? sqrt(ss / (reps - 1)) : 0.0;
}

int cmd_bench(int argc, char **argv)
{
    const char *C = "bench";
    const char *model_path = NULL;
    int32_t n_prompt = 512, n_gen = 128, n_threads = 0, reps = 3;
    bool json = false, warmup = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(BENCH_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) {
            n_prompt = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 16);
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) {
            n_gen = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 16);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            n_threads = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 1024);
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) {
            reps = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 1000);
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--no-warmup")) {
            warmup = false;
        } else {
            cli_usage_error(C, "unknown option '%s'", a);
        }
    }
    if (n_prompt == 0 && n_gen == 0)
        cli_usage_error(C, "nothing to measure: -p and -n are both 0");
    if (!model_path)
        model_path = cli_default_model();
    orc_model *m = cli_load_model(C, model_path, n_threads);

    int32_t nv = orc_model_n_vocab(m);
    int32_t n_tok = n_prompt > n_gen + 1 ? n_prompt : n_gen + 1;
    orc_token *toks = malloc((size_t)n_tok * sizeof *toks);
    bench_result res[2];
    memset(res, 0, sizeof res);
    double *ts = calloc((size_t)reps * 2, sizeof *ts);
    orc_context *ctx = NULL;
    int rc = CLI_EXIT_FAIL;
    if (!toks || !ts) {
        fprintf(stderr, "orchard bench: out of memory\n");
        goto done;
    }
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (int32_t i = 0; i < n_tok; i++)
        toks[i] = (orc_token)(rng_next(&seed) % (uint64_t)nv);

    orc_context_params cp = orc_context_default_params();
    cp.n_ctx = n_tok + 16;
    cp.n_batch = n_prompt > 0 ? n_prompt : 1;
    cp.n_threads = n_threads;
    if (orc_context_new(m, &cp, &ctx) != ORC_OK) {
        fprintf(stderr, "orchard bench: %s\n", orc_last_error());
        goto done;
    }

    int n_res = 0;
    for (int kind = 0; kind < 2; kind++) {
        int32_t n = kind == 0 ? n_prompt : n_gen;
        if (n == 0)
            continue;
        bench_result *r = &res[n_res++];
        snprintf(r->name, sizeof r->name, "%s%d", kind == 0 ? "pp" : "tg", n);
        r->n_prompt = kind == 0 ? n : 0;
        r->n_gen = kind == 0 ? 0 : n;
        r->ts = ts + (size_t)kind * (size_t)reps;
        double secs;
        orc_status st = ORC_OK;
        if (warmup)
            st = kind == 0 ? run_pp(ctx, toks, n, &secs) : run_tg(ctx, toks, n < 8 ? n : 8, &secs);
        for (int i = 0; i < reps && st == ORC_OK; i++) {
            st = kind == 0 ? run_pp(ctx, toks, n, &secs) : run_tg(ctx, toks, n, &secs);
            r->ts[i] = secs > 0 ? n / secs : 0.0;
        }
        if (st != ORC_OK) {
            fprintf(stderr, "orchard bench: %s: %s\n", r->name, orc_last_error());
            goto done;
        }
        stats(r, reps);
    }

    const char *arch = orc_model_arch(m);
    uint64_t size = orc_model_file_size(m), params = orc_model_n_params(m);
    if (json) {
        printf("{\"model\":");
        cli_print_json_string(model_path, strlen(model_path));
        printf(",\"arch\":");
        cli_print_json_string(arch, strlen(arch));
        printf(",\"type\":\"%s\"", ftype_name(m));
        printf(",\"size_bytes\":%llu,\"n_params\":%llu,\"n_threads\":%d,\"reps\":%d,\"results\":[",
               (unsigned long long)size, (unsigned long long)params, n_threads, reps);
        for (int k = 0; k < n_res; k++) {
            bench_result *r = &res[k];
            printf("%s{\"test\":\"%s\",\"n_prompt\":%d,\"n_gen\":%d,\"avg_ts\":%.4f,\"stddev_ts\":%.4f,"
                   "\"samples_ts\":[",
                   k ? "," : "", r->name, r->n_prompt, r->n_gen, r->mean, r->sd);
            for (int i = 0; i < reps; i++)
                printf(i ? ",%.4f" : "%.4f", r->ts[i]);
            printf("]}");
        }
        printf("]}\n");
    } else {
        char sz[32], np[32];
        if (size >= (1ull << 30))
            snprintf(sz, sizeof sz, "%.2f GiB", (double)size / (1024.0 * 1024.0 * 1024.0));
        else
            snprintf(sz, sizeof sz, "%.2f MiB", (double)size / (1024.0 * 1024.0));
        if (params >= 1000000000ull)
            snprintf(np, sizeof np, "%.2f B", (double)params / 1e9);
        else
            snprintf(np, sizeof np, "%.2f M", (double)params / 1e6);
        printf("| model | size | params | threads | test | t/s |\n");
        printf("| ----- | ---: | -----: | ------: | ---: | --: |\n");
        for (int k = 0; k < n_res; k++)
            printf("| %s %s | %s | %s | %d | %s | %.2f ± %.2f |\n", arch, ftype_name(m), sz, np,
                   n_threads, res[k].name, res[k].mean, res[k].sd);
    }
    rc = 0;
done:
    orc_context_free(ctx);
    orc_model_free(m);
    free(toks);
    free(ts);
    return rc;
}
