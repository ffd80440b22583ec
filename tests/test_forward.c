/* test_forward.c - forward-pass numerics against llama.cpp: for every synthetic model the
 * logits at every position agree with ../shared/reference/logits (max |diff| over the
 * standard deviation of the reference, per position, within the type's tolerance);
 * batched and incremental evaluation agree; bad tokens and a full context are errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard.h"
#include "testutil.h"

typedef struct {
    const char *name;
    double tol;
} model_case;

/* Tolerances: F32 0.01, F16 0.02, BF16 0.05 (issue 2); other families 0.02 (issue 5).
 * Quantized files: llama.cpp quantizes activations to 8 bits inside the dot products and
 * so do we; a last-bit difference upstream flips the rounding of some 8-bit activations,
 * which moves logits by a few percent of their spread (measured: 0.05-0.08), so allow
 * 0.1 -- a wrong block layout or scale gives errors of order 1. */
static const model_case cases[] = {
    {"llama-gqa-f32", 0.01},   {"llama-gqa-f16", 0.02},   {"llama-gqa-bf16", 0.05},
    {"qwen2-f16", 0.02},       {"qwen3-f16", 0.02},       {"gemma2-f16", 0.02},
    {"gemma3-f16", 0.02},      {"qwen3moe-f16", 0.02},
    {"llama-gqa-q8_0", 0.10},  {"llama-gqa-q4_0", 0.10},  {"llama-gqa-q4_1", 0.10},
    {"llama-gqa-q5_0", 0.10},  {"llama-gqa-q5_1", 0.10},  {"llama-gqa-q2_k", 0.10},
    {"llama-gqa-q3_k_m", 0.10}, {"llama-gqa-q4_k_m", 0.10}, {"llama-gqa-q5_k_m", 0.10},
    {"llama-gqa-q6_k", 0.10},  {"llama-gqa-iq4_nl", 0.10}, {"llama-gqa-iq4_xs", 0.10},
};

static int load_ref(const char *name, json_t **root, orc_token **ids, int *n)
{
    char rel[256];
    snprintf(rel, sizeof rel, "reference/logits/%s.json", name);
    *root = tu_load_json(tu_shared(rel));
    if (!*root)
        return -1;
    json_t *tk = json_object_get(*root, "tokens");
    *n = (int)json_array_size(tk);
    *ids = malloc((size_t)*n * sizeof **ids);
    for (int i = 0; i < *n; i++)
        (*ids)[i] = (orc_token)json_integer_value(json_array_get(tk, (size_t)i));
    return 0;
}

static double compare_row(const float *got, json_t *row, int nv)
{
    double *ref = malloc((size_t)nv * sizeof *ref);
    for (int v = 0; v < nv; v++)
        ref[v] = json_number_value(json_array_get(row, (size_t)v));
    double r = tu_rel_maxdiff(got, ref, (size_t)nv);
    free(ref);
    return r;
}

static void test_reference_logits(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/synthetic/%s.gguf", cases[c].name);
        orc_model *m = NULL;
        if (orc_model_load(tu_shared(rel), NULL, &m) != ORC_OK) {
            printf("%-18s load failed: %s\n", cases[c].name, orc_last_error());
            failures++;
            continue;
        }
        json_t *root;
        orc_token *ids;
        int n;
        assert_int_equal(load_ref(cases[c].name, &root, &ids, &n), 0);
        int nv = (int)json_integer_value(json_object_get(root, "n_vocab"));
        assert_int_equal(nv, orc_model_n_vocab(m));
        orc_context_params cp = orc_context_default_params();
        cp.n_ctx = 64;
        orc_context *ctx = NULL;
        assert_int_equal(orc_context_new(m, &cp, &ctx), ORC_OK);
        assert_int_equal(orc_eval(ctx, ids, n, true), ORC_OK);
        json_t *logits = json_object_get(root, "logits");
        assert_int_equal((int)json_array_size(logits), n);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            double r = compare_row(orc_context_logits(ctx, i), json_array_get(logits, (size_t)i), nv);
            worst = r > worst ? r : worst;
        }
        bool ok = worst <= cases[c].tol;
        printf("%-18s worst max|d|/sd = %.5f (tolerance %.2f) %s\n", cases[c].name, worst,
               cases[c].tol, ok ? "ok" : "FAIL");
        failures += !ok;
        orc_context_free(ctx);
        free(ids);
        json_decref(root);
        orc_model_free(m);
    }
    assert_int_equal(failures, 0);
}

/* One batch, token by token, and uneven chunks through a small n_batch give the same
 * logits (the KV cache and positions are handled consistently). */
static void test_batched_equals_incremental(void **state)
{
    (void)state;
    const char *names[] = {"llama-gqa-f32", "gemma2-f16", "qwen3moe-f16"};
    for (size_t k = 0; k < 3; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/synthetic/%s.gguf", names[k]);
        orc_model *m = NULL;
        assert_int_equal(orc_model_load(tu_shared(rel), NULL, &m), ORC_OK);
        json_t *root;
        orc_token *ids;
        int n;
        assert_int_equal(load_ref(names[k], &root, &ids, &n), 0);
        int nv = orc_model_n_vocab(m);
        orc_context_params cp = orc_context_default_params();
        cp.n_ctx = 64;
        orc_context *a = NULL, *b = NULL;
        assert_int_equal(orc_context_new(m, &cp, &a), ORC_OK);
        cp.n_batch = 5; /* forces chunking inside one orc_eval */
        assert_int_equal(orc_context_new(m, &cp, &b), ORC_OK);
        assert_int_equal(orc_eval(a, ids, n, true), ORC_OK);
        float *batch = malloc((size_t)n * nv * sizeof(float));
        memcpy(batch, orc_context_logits(a, 0), (size_t)n * nv * sizeof(float));
        /* token by token */
        orc_context_clear(a);
        for (int i = 0; i < n; i++) {
            assert_int_equal(orc_eval(a, &ids[i], 1, false), ORC_OK);
            const float *l = orc_context_logits(a, -1);
            for (int v = 0; v < nv; v++)
                assert_float_equal(l[v], batch[(size_t)i * nv + v], 2e-3 + 1e-3 * fabsf(l[v]));
        }
        assert_int_equal(orc_context_n_past(a), n);
        /* chunked */
        assert_int_equal(orc_eval(b, ids, n, true), ORC_OK);
        for (int i = 0; i < n; i++)
            for (int v = 0; v < nv; v++)
                assert_float_equal(orc_context_logits(b, i)[v], batch[(size_t)i * nv + v], 2e-3);
        /* prefix reuse: truncate then re-evaluate the rest. gemma2's sliding-window layers
         * keep only window + batch positions (16 + 5 here), so going back further than the
         * ring still holds is refused and changes nothing. */
        if (k == 1) {
            assert_int_equal(orc_context_truncate(b, 7), ORC_ERR_UNSUPPORTED);
            assert_int_equal(orc_context_n_past(b), n);
        }
        int keep = k == 1 ? n - 3 : 7;
        assert_int_equal(orc_context_truncate(b, keep), ORC_OK);
        assert_int_equal(orc_eval(b, ids + keep, n - keep, false), ORC_OK);
        for (int v = 0; v < nv; v++)
            assert_float_equal(orc_context_logits(b, -1)[v], batch[(size_t)(n - 1) * nv + v], 2e-3);
        free(batch);
        orc_context_free(a);
        orc_context_free(b);
        free(ids);
        json_decref(root);
        orc_model_free(m);
    }
}

/* A long prompt takes the batched kernels (on AMX machines the int8 / bf16 tiles from 32
 * tokens on), single tokens the decode kernels: for 80 tokens the logits of one batch
 * and of token-by-token evaluation agree at every position. The reference logits have
 * 24 tokens, below where the tiles start, so this is what checks those paths inside
 * the model. Without the tiles the two are bit-identical; the int8 tiles sum each block
 * exactly but scale and add the blocks in another order than the decode kernels, and a
 * last-bit difference flips the 8-bit rounding of some activations downstream: measured
 * 0.03-0.05 of the logits' spread (F16/BF16 tiles: 2-4e-4), so 0.1 as against llama.cpp;
 * a wrong tile layout or scale gives errors of order 1. */
static void test_prefill_matches_decode(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        double tol;
    } cs[] = {{"llama-gqa-f16", 1e-3}, {"llama-gqa-bf16", 1e-3}, {"llama-gqa-q4_0", 0.1},
              {"llama-gqa-q8_0", 0.1}, {"llama-gqa-q4_k_m", 0.1}, {"llama-gqa-q6_k", 0.1}};
    enum { N = 80 };
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/synthetic/%s.gguf", cs[k].name);
        orc_model *m = NULL;
        assert_int_equal(orc_model_load(tu_shared(rel), NULL, &m), ORC_OK);
        int nv = orc_model_n_vocab(m);
        orc_token ids[N];
        for (int i = 0; i < N; i++)
            ids[i] = i == 0 ? 1 : (orc_token)(3 + (i * 37 + (i / 7) * 11) % (nv - 3));
        orc_context_params cp = orc_context_default_params();
        cp.n_ctx = 128;
        orc_context *a = NULL, *b = NULL;
        assert_int_equal(orc_context_new(m, &cp, &a), ORC_OK);
        assert_int_equal(orc_context_new(m, &cp, &b), ORC_OK);
        assert_int_equal(orc_eval(a, ids, N, true), ORC_OK);
        double worst = 0.0;
        double *ref = malloc((size_t)nv * sizeof *ref);
        for (int i = 0; i < N; i++) {
            assert_int_equal(orc_eval(b, &ids[i], 1, false), ORC_OK);
            const float *l = orc_context_logits(b, -1);
            for (int v = 0; v < nv; v++)
                ref[v] = l[v];
            double d = tu_rel_maxdiff(orc_context_logits(a, i), ref, (size_t)nv);
            worst = d > worst ? d : worst;
        }
        printf("%-18s prefill vs decode, %d tokens: worst max|d|/sd = %.2e (tolerance %.0e)\n",
               cs[k].name, N, worst, cs[k].tol);
        assert_true(worst <= cs[k].tol);
        free(ref);
        orc_context_free(a);
        orc_context_free(b);
        orc_model_free(m);
    }
}

static void test_eval_errors(void **state)
{
    (void)state;
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(tu_shared("models/stories260K.gguf"), NULL, &m), ORC_OK);
    orc_context_params cp = orc_context_default_params();
    cp.n_ctx = 8;
    orc_context *c = NULL;
    assert_int_equal(orc_context_new(m, &cp, &c), ORC_OK);
    assert_int_equal(orc_context_n_ctx(c), 8);
    orc_token bad[2] = {1, 512};
    assert_int_equal(orc_eval(c, bad, 2, false), ORC_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(orc_last_error(), "outside the vocabulary"));
    assert_int_equal(orc_context_n_past(c), 0); /* nothing changed */
    orc_token ok[6] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(orc_eval(c, ok, 6, false), ORC_OK);
    assert_int_equal(orc_eval(c, ok, 3, false), ORC_ERR_CONTEXT_FULL);
    assert_int_equal(orc_context_n_past(c), 6);
    assert_int_equal(orc_eval(c, ok, 2, false), ORC_OK);
    assert_int_equal(orc_context_truncate(c, 9), ORC_ERR_INVALID_ARGUMENT);
    assert_null(orc_context_logits(c, 0)); /* only the last row was kept */
    assert_non_null(orc_context_logits(c, -1));
    orc_context_free(c);
    orc_model_free(m);
}

/* Different thread counts give the same result. */
static void test_threads_agree(void **state)
{
    (void)state;
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(tu_shared("models/synthetic/llama-gqa-q4_k_m.gguf"), NULL, &m), ORC_OK);
    orc_token ids[12] = {1, 50, 100, 200, 300, 400, 500, 7, 8, 9, 260, 261};
    float *first = NULL;
    int nv = orc_model_n_vocab(m);
    for (int nt = 1; nt <= 3; nt++) {
        orc_context_params cp = orc_context_default_params();
        cp.n_ctx = 32;
        cp.n_threads = nt;
        orc_context *c = NULL;
        assert_int_equal(orc_context_new(m, &cp, &c), ORC_OK);
        assert_int_equal(orc_eval(c, ids, 12, false), ORC_OK);
        const float *l = orc_context_logits(c, -1);
        if (!first) {
            first = malloc((size_t)nv * sizeof *first);
            memcpy(first, l, (size_t)nv * sizeof *first);
        } else {
            for (int v = 0; v < nv; v++)
                assert_float_equal(l[v], first[v], 1e-4);
        }
        orc_context_free(c);
    }
    free(first);
    orc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_logits),
        cmocka_unit_test(test_batched_equals_incremental),
        cmocka_unit_test(test_prefill_matches_decode),
        cmocka_unit_test(test_eval_errors),
        cmocka_unit_test(test_threads_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
