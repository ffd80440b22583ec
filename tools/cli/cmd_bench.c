/* cmd_bench.c - `orchard bench`: prompt-processing and generation speed like llama-bench.
 * ppN evaluates N random tokens as one batch; tgN evaluates N tokens one at a time. With
 * -d D both are measured after D tokens already in the KV cache ("pp512 @ d4096"), and
 * --kv-type chooses how the cache is stored; -d and --kv-type take comma-separated lists
 * and every combination is measured. Each test runs once to warm up, then REPS times, the
 * repetitions interleaved across tests; tokens/s are reported as mean +- standard
 * deviation, with the KV cache's bytes per token. Public API only. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *BENCH_HELP =
    "usage: orchard bench [-m MODEL] [-p N_PROMPT] [-n N_GEN] [-d DEPTH[,DEPTH...]]\n"
    "                     [--kv-type TYPE[,TYPE...]] [-t THREADS] [-r REPS]\n"
    "                     [--no-warmup] [--json]\n"
    "\n"
    "  -p N   prompt processing: N random tokens in one batch (default 512; 0 skips it)\n"
    "  -n N   generation: N single-token evaluations (default 128; 0 skips it); from an\n"
    "         empty cache a one-token prompt comes first and is not timed\n"
    "  -d, --n-depth D[,D...]\n"
    "         measure after D random tokens already in the KV cache (default 0), like\n"
    "         llama-bench -d; the depth is filled once, untimed, and kept between runs\n"
    "  --kv-type T[,T...]   KV cache storage: f16 (default) or q8_0\n"
    "  -ctk T, -ctv T       the same (--cache-type-k/-v); Orchard stores keys and values\n"
    "                       in one type, so the two must agree\n"
    "  -t N   threads (default: all cores, shown as 0)\n"
    "  -r N   repetitions after one warm-up run (default 3)\n"
    "  --json print one JSON object instead of the table\n"
    "\n"
    "Each (KV type, depth) gets its own context of D + max(N_PROMPT, N_GEN + 1) tokens.\n"
    "After the warm-up runs the repetitions are interleaved across the tests (all tests\n"
    "once, then again in reverse order, ...), so a busy machine slows them alike; results\n"
    "are listed by KV type, depth, pp, tg.\n";

#define MAX_LIST 16

typedef struct {
    char name[48];
    int32_t n_prompt, n_gen, n_depth, n_ctx;
    orc_kv_type kv;
    orc_context *ctx; /* one per (KV type, depth); pp and tg share it */
    uint64_t kv_bytes, kv_bytes_per_token;
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

/* names as llama-bench's -ctk/-ctv spell them */
static const char *kv_name(orc_kv_type t)
{
    return t == ORC_KV_Q8_0 ? "q8_0" : "f16";
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

/* Splits a comma-separated option value into at most MAX_LIST parts (usage error on an
 * empty or overlong part, or too many). */
static int split_list(const char *cmd, const char *opt, const char *v, char parts[MAX_LIST][32])
{
    int n = 0;
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= 32)
            cli_usage_error(cmd, "%s expects a comma-separated list, not '%s'", opt, v);
        if (n == MAX_LIST)
            cli_usage_error(cmd, "%s: at most %d values", opt, MAX_LIST);
        memcpy(parts[n], p, len);
        parts[n][len] = '\0';
        n++;
        if (!comma)
            return n;
        p = comma + 1;
    }
}

static int parse_kv_list(const char *cmd, const char *opt, const char *v, orc_kv_type *out)
{
    char parts[MAX_LIST][32];
    int n = split_list(cmd, opt, v, parts);
    for (int i = 0; i < n; i++) {
        if (!strcmp(parts[i], "f16"))
            out[i] = ORC_KV_F16;
        else if (!strcmp(parts[i], "q8_0"))
            out[i] = ORC_KV_Q8_0;
        else
            cli_usage_error(cmd, "%s: unknown KV cache type '%s' (f16 or q8_0)", opt, parts[i]);
    }
    return n;
}

/* The cache always holds toks[0, n_past): tests at depth d continue from toks[d]. Brings it
 * to exactly d tokens, keeping what is already there (the depth is filled once). */
static orc_status set_depth(orc_context *ctx, const orc_token *toks, int32_t d)
{
    int32_t have = orc_context_n_past(ctx);
    if (have > d) {
        if (orc_context_truncate(ctx, d) == ORC_OK)
            return ORC_OK;
        /* e.g. a sliding window that no longer holds position d: fill again */
        orc_context_clear(ctx);
        have = 0;
    }
    return d > have ? orc_eval(ctx, toks + have, d - have, false) : ORC_OK;
}

static orc_status run_pp(orc_context *ctx, const orc_token *toks, int32_t d, int32_t n,
                         double *secs)
{
    orc_status st = set_depth(ctx, toks, d);
    if (st != ORC_OK)
        return st;
    double t0 = now_s();
    st = orc_eval(ctx, toks + d, n, false);
    *secs = now_s() - t0;
    return st;
}

/* from an empty cache, one untimed token first (as before depths existed) */
static orc_status run_tg(orc_context *ctx, const orc_token *toks, int32_t d, int32_t n,
                         double *secs)
{
    int32_t start = d > 0 ? d : 1;
    orc_status st = set_depth(ctx, toks, start);
    double t0 = now_s();
    for (int32_t i = 0; i < n && st == ORC_OK; i++)
        st = orc_eval(ctx, &toks[start + i], 1, false);
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

static void print_json(const char *model_path, const orc_model *m, int32_t n_threads, int reps,
                       const bench_result *res, int n_res)
{
    const char *arch = orc_model_arch(m);
    printf("{\"model\":");
    cli_print_json_string(model_path, strlen(model_path));
    printf(",\"arch\":");
    cli_print_json_string(arch, strlen(arch));
    printf(",\"type\":\"%s\"", ftype_name(m));
    printf(",\"size_bytes\":%llu,\"n_params\":%llu,\"n_threads\":%d,\"reps\":%d,\"results\":[",
           (unsigned long long)orc_model_file_size(m), (unsigned long long)orc_model_n_params(m),
           n_threads, reps);
    for (int k = 0; k < n_res; k++) {
        const bench_result *r = &res[k];
        printf("%s{\"test\":\"%s\",\"n_prompt\":%d,\"n_gen\":%d,\"n_depth\":%d,\"n_ctx\":%d,"
               "\"type_k\":\"%s\",\"type_v\":\"%s\",\"kv_bytes\":%llu,\"kv_bytes_per_token\":%llu,"
               "\"avg_ts\":%.4f,\"stddev_ts\":%.4f,\"samples_ts\":[",
               k ? "," : "", r->name, r->n_prompt, r->n_gen, r->n_depth, r->n_ctx, kv_name(r->kv),
               kv_name(r->kv), (unsigned long long)r->kv_bytes,
               (unsigned long long)r->kv_bytes_per_token, r->mean, r->sd);
        for (int i = 0; i < reps; i++)
            printf(i ? ",%.4f" : "%.4f", r->ts[i]);
        printf("]}");
    }
    printf("]}\n");
}

static void print_table(const orc_model *m, int32_t n_threads, const bench_result *res, int n_res)
{
    char sz[32], np[32];
    uint64_t size = orc_model_file_size(m), params = orc_model_n_params(m);
    if (size >= (1ull << 30))
        snprintf(sz, sizeof sz, "%.2f GiB", (double)size / (1024.0 * 1024.0 * 1024.0));
    else
        snprintf(sz, sizeof sz, "%.2f MiB", (double)size / (1024.0 * 1024.0));
    if (params >= 1000000000ull)
        snprintf(np, sizeof np, "%.2f B", (double)params / 1e9);
    else
        snprintf(np, sizeof np, "%.2f M", (double)params / 1e6);
    printf("| model | size | params | threads | type_kv | KV bytes/token | test | t/s |\n");
    printf("| ----- | ---: | -----: | ------: | ------: | -------------: | ---: | --: |\n");
    for (int k = 0; k < n_res; k++)
        printf("| %s %s | %s | %s | %d | %s | %llu | %s | %.2f ± %.2f |\n", orc_model_arch(m),
               ftype_name(m), sz, np, n_threads, kv_name(res[k].kv),
               (unsigned long long)res[k].kv_bytes_per_token, res[k].name, res[k].mean, res[k].sd);
}

int cmd_bench(int argc, char **argv)
{
    const char *C = "bench";
    const char *model_path = NULL;
    int32_t n_prompt = 512, n_gen = 128, n_threads = 0, reps = 3;
    int32_t depths[MAX_LIST] = {0};
    int n_depths = 1;
    orc_kv_type kvs[MAX_LIST] = {ORC_KV_F16}, kvs_v[MAX_LIST];
    int n_kvs = 1, n_kvs_v = 0; /* -ctv's list, checked against -ctk's at the end */
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
        } else if (!strcmp(a, "-d") || !strcmp(a, "--n-depth") || !strcmp(a, "--depth")) {
            char parts[MAX_LIST][32];
            n_depths = split_list(C, a, cli_value(C, argc, argv, &i), parts);
            for (int k = 0; k < n_depths; k++)
                depths[k] = (int32_t)cli_int(C, a, parts[k], 0, 1 << 20);
        } else if (!strcmp(a, "--kv-type") || !strcmp(a, "-ctk") || !strcmp(a, "--cache-type-k")) {
            n_kvs = parse_kv_list(C, a, cli_value(C, argc, argv, &i), kvs);
        } else if (!strcmp(a, "-ctv") || !strcmp(a, "--cache-type-v")) {
            n_kvs_v = parse_kv_list(C, a, cli_value(C, argc, argv, &i), kvs_v);
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
    if (n_kvs_v > 0) {
        bool same = n_kvs_v == n_kvs;
        for (int k = 0; same && k < n_kvs; k++)
            same = kvs[k] == kvs_v[k];
        if (!same)
            cli_usage_error(C, "-ctk and -ctv differ: Orchard stores keys and values in one type "
                               "(use --kv-type)");
    }
    if (!model_path)
        model_path = cli_default_model();
    orc_model *m = cli_load_model(C, model_path, n_threads);

    int32_t d_max = 0;
    for (int k = 0; k < n_depths; k++)
        d_max = depths[k] > d_max ? depths[k] : d_max;
    int32_t nv = orc_model_n_vocab(m);
    int32_t n_after = n_prompt > n_gen + 1 ? n_prompt : n_gen + 1;
    int32_t n_tok = d_max + n_after;
    int n_max = n_kvs * n_depths * 2;
    orc_token *toks = malloc((size_t)n_tok * sizeof *toks);
    bench_result *res = calloc((size_t)n_max, sizeof *res);
    double *ts = calloc((size_t)reps * (size_t)n_max, sizeof *ts);
    orc_context **ctxs = calloc((size_t)n_kvs * (size_t)n_depths, sizeof *ctxs);
    int rc = CLI_EXIT_FAIL, n_res = 0;
    if (!toks || !res || !ts || !ctxs) {
        fprintf(stderr, "orchard bench: out of memory\n");
        goto done;
    }
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (int32_t i = 0; i < n_tok; i++)
        toks[i] = (orc_token)(rng_next(&seed) % (uint64_t)nv);

    /* one context per (KV type, depth), sized for that depth, as llama-bench does */
    for (int ik = 0; ik < n_kvs; ik++) {
        for (int id = 0; id < n_depths; id++) {
            int32_t d = depths[id];
            orc_context_params cp = orc_context_default_params();
            cp.n_ctx = d + n_after;
            /* pp is one batch; the depth is filled in batches of up to 512 */
            int32_t fill = d < 512 ? d : 512;
            cp.n_batch = n_prompt > fill ? n_prompt : (fill > 0 ? fill : 1);
            cp.n_threads = n_threads;
            cp.kv_type = kvs[ik];
            orc_context **ctx = &ctxs[ik * n_depths + id];
            if (orc_context_new(m, &cp, ctx) != ORC_OK) {
                fprintf(stderr, "orchard bench: %s\n", orc_last_error());
                goto done;
            }
            for (int kind = 0; kind < 2; kind++) {
                int32_t n = kind == 0 ? n_prompt : n_gen;
                if (n == 0)
                    continue;
                bench_result *r = &res[n_res];
                r->ts = ts + (size_t)n_res * (size_t)reps;
                r->ctx = *ctx;
                n_res++;
                int len = snprintf(r->name, sizeof r->name, "%s%d", kind == 0 ? "pp" : "tg", n);
                if (d > 0)
                    snprintf(r->name + len, sizeof r->name - (size_t)len, " @ d%d", d);
                r->n_prompt = kind == 0 ? n : 0;
                r->n_gen = kind == 0 ? 0 : n;
                r->n_depth = d;
                r->n_ctx = orc_context_n_ctx(*ctx);
                r->kv = kvs[ik];
                r->kv_bytes = orc_context_kv_bytes(*ctx);
                r->kv_bytes_per_token = orc_context_kv_bytes_per_token(*ctx);
            }
        }
    }

    /* warm-up (and the untimed depth fills), then the repetitions interleaved across the
     * tests, forwards and backwards in turn, so load changes on a shared machine fall on
     * all of them alike */
    for (int pass = warmup ? -1 : 0; pass < reps; pass++) {
        for (int k = 0; k < n_res; k++) {
            bench_result *r = &res[pass % 2 ? n_res - 1 - k : k];
            int32_t n = r->n_prompt > 0 ? r->n_prompt : r->n_gen;
            double secs = 0;
            orc_status st;
            if (r->n_prompt > 0)
                st = run_pp(r->ctx, toks, r->n_depth, n, &secs);
            else
                st = run_tg(r->ctx, toks, r->n_depth, pass < 0 && n > 8 ? 8 : n, &secs);
            if (st != ORC_OK) {
                fprintf(stderr, "orchard bench: %s (kv %s): %s\n", r->name, kv_name(r->kv),
                        orc_last_error());
                goto done;
            }
            if (pass >= 0)
                r->ts[pass] = secs > 0 ? n / secs : 0.0;
        }
    }
    for (int k = 0; k < n_res; k++)
        stats(&res[k], reps);

    if (json)
        print_json(model_path, m, n_threads, reps, res, n_res);
    else
        print_table(m, n_threads, res, n_res);
    rc = 0;
done:
    for (int k = 0; ctxs && k < n_kvs * n_depths; k++)
        orc_context_free(ctxs[k]);
    free(ctxs);
    orc_model_free(m);
    free(toks);
    free(res);
    free(ts);
    return rc;
}
