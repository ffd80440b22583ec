/* test_guided_valid.c - "never invalid", end to end through the public API. The cases of
 * tests/data/guided/cases.json (62 JSON Schemas that together use every keyword and
 * format of issue 7, regular expressions and GBNF grammars) drive generation with
 * stories260K and with random-weight models (whose output is arbitrary text: the hardest
 * case), with stochastic sampling and several seeds. Every generation must stop by itself
 * (an end-of-generation token, or the grammar complete) well before the token limit, and
 * every output is checked independently by tests/check_guided.py: parsed and validated by
 * Python's jsonschema (Draft 2020-12, formats checked), regexes fully matched by Python's
 * re, GBNF outputs parsed per language. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "orchard.h"
#include "testutil.h"

/* Far above what any case needs (the longest outputs, strings a random model has to
 * close by chance, take a few hundred tokens): reaching it is a failure. */
#define MAX_OUT_TOKENS 8000
#define N_CTX 8192

static const char *const MODELS[] = {
    "models/stories260K.gguf",
    "models/synthetic/llama-gqa-q8_0.gguf",
    "models/synthetic/qwen3-f16.gguf",
};
#define N_MODELS (sizeof MODELS / sizeof MODELS[0])

/* Sampling settings, one per seed: plain sampling from the whole distribution, hot
 * sampling, and the default filters. */
static orc_sampler_params sampling(int i)
{
    orc_sampler_params p = orc_sampler_default_params();
    p.seed = 1000 + (uint64_t)i * 7919;
    if (i == 0) {
        p.temperature = 1.0f;
        p.top_k = 0;
        p.top_p = 1.0f;
        p.min_p = 0.0f;
    } else if (i == 1) {
        p.temperature = 1.5f;
        p.top_k = 0;
        p.top_p = 1.0f;
        p.min_p = 0.0f;
    }
    return p;
}
#define N_SEEDS 2 /* ORC_GUIDED_SEEDS=N runs N settings (the third onwards: the defaults) */

typedef struct {
    orc_model *model;
    orc_context *ctx;
    float *prompt_logits;
    int32_t n_prompt, n_vocab;
} model_run;

typedef struct {
    char *text;
    size_t len, cap;
    int n_tokens, n_forced;
    const char *stop;
} gen_out;

static void append(gen_out *r, const char *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        r->cap = (r->len + n + 1) * 2;
        r->text = realloc(r->text, r->cap);
        assert_non_null(r->text);
    }
    memcpy(r->text + r->len, p, n);
    r->len += n;
    r->text[r->len] = 0;
}

/* Generates after the cached prompt under g: forced text is fast-forwarded, the rest
 * sampled, until an end-of-generation token, the grammar is done, or the limit. */
static void generate(model_run *mr, const orc_grammar *g, const orc_sampler_params *sp, gen_out *r)
{
    r->len = 0;
    r->n_tokens = r->n_forced = 0;
    r->stop = "limit";
    append(r, "", 0);
    assert_int_equal(orc_context_truncate(mr->ctx, mr->n_prompt), ORC_OK);
    orc_sampler *s = NULL;
    assert_int_equal(orc_sampler_new(sp, mr->n_vocab, &s), ORC_OK);
    assert_int_equal(orc_sampler_set_grammar(s, mr->model, g), ORC_OK);
    const float *logits = mr->prompt_logits;
    while (r->n_tokens < MAX_OUT_TOKENS) {
        orc_token next[64];
        int room = MAX_OUT_TOKENS - r->n_tokens;
        int nn = orc_sampler_forced_tokens(s, next, room < 64 ? room : 64);
        r->n_forced += nn;
        if (nn == 0) {
            orc_token t = orc_sampler_sample(s, logits);
            assert_true(t >= 0 && t < mr->n_vocab);
            if (orc_token_is_eog(mr->model, t)) {
                assert_true(orc_sampler_grammar_complete(s)); /* EOS only when complete */
                r->stop = "eos";
                break;
            }
            next[nn++] = t;
        }
        for (int k = 0; k < nn; k++) {
            orc_sampler_accept(s, next[k]);
            char piece[256];
            int32_t l = orc_token_to_piece(mr->model, next[k], piece, sizeof piece, false);
            assert_true(l >= 0 && l <= (int32_t)sizeof piece);
            append(r, piece, (size_t)l);
            r->n_tokens++;
        }
        if (orc_sampler_grammar_done(s)) {
            r->stop = "grammar";
            break;
        }
        assert_int_equal(orc_eval(mr->ctx, next, nn, false), ORC_OK);
        logits = orc_context_logits(mr->ctx, -1);
    }
    orc_sampler_free(s);
}

static void load_model(model_run *mr, const char *rel)
{
    memset(mr, 0, sizeof *mr);
    assert_int_equal(orc_model_load(tu_shared(rel), NULL, &mr->model), ORC_OK);
    orc_context_params cp = orc_context_default_params();
    cp.n_ctx = N_CTX;
    cp.n_threads = 1;
    assert_int_equal(orc_context_new(mr->model, &cp, &mr->ctx), ORC_OK);
    const char *prompt = "Once upon a time";
    orc_token p[64];
    mr->n_prompt = orc_tokenize(mr->model, prompt, strlen(prompt), p, 64, true, false);
    assert_true(mr->n_prompt > 0);
    assert_int_equal(orc_eval(mr->ctx, p, mr->n_prompt, false), ORC_OK);
    mr->n_vocab = orc_model_n_vocab(mr->model);
    mr->prompt_logits = malloc((size_t)mr->n_vocab * sizeof *mr->prompt_logits);
    assert_non_null(mr->prompt_logits);
    memcpy(mr->prompt_logits, orc_context_logits(mr->ctx, -1), (size_t)mr->n_vocab * sizeof(float));
}

static void free_model(model_run *mr)
{
    free(mr->prompt_logits);
    orc_context_free(mr->ctx);
    orc_model_free(mr->model);
}

typedef struct {
    const char *kind, *name;
    json_t *schema; /* schema cases: for the log */
    orc_grammar *g;
    int max_tokens; /* longest output over models and seeds */
} gcase;

/* Python with jsonschema: Debian's first (python3 on PATH may be another build). */
static const char *python(void)
{
    if (system("/usr/bin/python3 -c 'import jsonschema' 2>/dev/null") == 0)
        return "/usr/bin/python3";
    if (system("python3 -c 'import jsonschema' 2>/dev/null") == 0)
        return "python3";
    return NULL;
}

static void test_never_invalid(void **state)
{
    (void)state;
    const char *py = python();
    int n_seeds = getenv("ORC_GUIDED_SEEDS") ? atoi(getenv("ORC_GUIDED_SEEDS")) : N_SEEDS;
    if (n_seeds < 1)
        n_seeds = N_SEEDS;
    if (!py)
        fail_msg("the jsonschema Python package is required (apt install python3-jsonschema, "
                 "or scripts/install-deps)");
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/tests/data/guided", ORC_SOURCE_DIR);
    snprintf(path, sizeof path, "%s/cases.json", dir);
    json_t *cases = tu_load_json(path);
    assert_non_null(cases);

    /* compile everything once */
    gcase *gc = NULL;
    size_t n_cases = 0, cap = 0;
    const char *sections[] = {"schemas", "regexes", "grammars"};
    for (int sec = 0; sec < 3; sec++) {
        json_t *arr = json_object_get(cases, sections[sec]);
        assert_true(json_is_array(arr));
        size_t i;
        json_t *c;
        json_array_foreach(arr, i, c) {
            if (n_cases == cap) {
                cap = cap ? cap * 2 : 64;
                gc = realloc(gc, cap * sizeof *gc);
                assert_non_null(gc);
            }
            gcase *x = &gc[n_cases++];
            memset(x, 0, sizeof *x);
            orc_grammar_params gp = orc_grammar_default_params();
            char *text = NULL;
            size_t len = 0;
            if (sec == 0) {
                x->kind = "schema";
                x->name = json_string_value(json_object_get(c, "name"));
                x->schema = json_object_get(c, "schema");
                gp.kind = ORC_GRAMMAR_JSON_SCHEMA;
                gp.pretty = json_is_true(json_object_get(c, "pretty"));
                text = json_dumps(x->schema, JSON_COMPACT | JSON_ENCODE_ANY);
                len = strlen(text);
            } else if (sec == 1) {
                x->kind = "regex";
                x->name = json_string_value(c);
                gp.kind = ORC_GRAMMAR_REGEX;
                text = strdup(x->name);
                len = strlen(text);
            } else {
                x->kind = "gbnf";
                x->name = json_string_value(json_object_get(c, "name"));
                char gpath[1200];
                snprintf(gpath, sizeof gpath, "%s/%s", dir, json_string_value(json_object_get(c, "file")));
                text = tu_read_file(gpath, &len);
                gp.kind = ORC_GRAMMAR_GBNF;
            }
            assert_non_null(x->name);
            assert_non_null(text);
            if (orc_grammar_new(text, len, &gp, &x->g) != ORC_OK)
                fail_msg("%s %s does not compile: %s", x->kind, x->name, orc_last_error());
            free(text);
        }
    }

    char out_path[256];
    snprintf(out_path, sizeof out_path, "/tmp/orc_guided_valid_%d.jsonl", (int)getpid());
    FILE *log = fopen(out_path, "w");
    assert_non_null(log);
    gen_out r = {0};
    int total = 0, max_tokens = 0, tokens = 0, forced = 0, limit_hits = 0;
    const char *max_case = "";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        model_run mr;
        load_model(&mr, MODELS[mi]);
        for (size_t ci = 0; ci < n_cases; ci++) {
            for (int si = 0; si < n_seeds; si++) {
                orc_sampler_params sp = sampling(si);
                generate(&mr, gc[ci].g, &sp, &r);
                total++;
                tokens += r.n_tokens;
                forced += r.n_forced;
                if (r.n_tokens > gc[ci].max_tokens)
                    gc[ci].max_tokens = r.n_tokens;
                if (r.n_tokens > max_tokens) {
                    max_tokens = r.n_tokens;
                    max_case = gc[ci].name;
                }
                if (!strcmp(r.stop, "limit")) {
                    limit_hits++;
                    printf("LIMIT: %s %s, model %s, seed %d: %.200s...\n", gc[ci].kind, gc[ci].name,
                           MODELS[mi], si, r.text);
                }
                json_t *o = json_stringn(r.text, r.len);
                if (!o)
                    fail_msg("%s %s: output is not UTF-8: %.200s", gc[ci].kind, gc[ci].name, r.text);
                json_t *line = json_pack("{s:s, s:s, s:s, s:i, s:o, s:s, s:i}", "kind", gc[ci].kind, "name",
                                         gc[ci].name, "model", MODELS[mi], "seed", si, "output", o, "stop",
                                         r.stop, "tokens", r.n_tokens);
                assert_non_null(line);
                char *s = json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII);
                fprintf(log, "%s\n", s);
                free(s);
                json_decref(line);
            }
        }
        free_model(&mr);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fclose(log);
    printf("%d generations (%zu cases x %zu models x %d seeds) in %.1f s: %d tokens (%d forced), "
           "longest %d tokens (%s), limit %d\n",
           total, n_cases, N_MODELS, n_seeds,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9, tokens, forced,
           max_tokens, max_case, MAX_OUT_TOKENS);
    /* the longest cases: how far each is from the limit */
    for (int k = 0; k < 5; k++) {
        size_t best = 0;
        for (size_t i = 1; i < n_cases; i++)
            if (gc[i].max_tokens > gc[best].max_tokens)
                best = i;
        printf("  longest: %s %s, %d tokens\n", gc[best].kind, gc[best].name, gc[best].max_tokens);
        gc[best].max_tokens = -gc[best].max_tokens - 1;
    }
    fflush(stdout);

    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s/tests/check_guided.py %s %s", py, ORC_SOURCE_DIR, out_path, dir);
    int rc = system(cmd);
    if (rc == 0)
        remove(out_path);
    else
        printf("outputs kept in %s\n", out_path);
    assert_int_equal(limit_hits, 0);
    assert_int_equal(rc, 0);

    free(r.text);
    for (size_t i = 0; i < n_cases; i++)
        orc_grammar_free(gc[i].g);
    free(gc);
    json_decref(cases);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
