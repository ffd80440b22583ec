/* test_kv.c - the KV cache features: Q8_0 storage against llama.cpp's greedy outputs,
 * mixed-sequence batches equal to sequences evaluated alone, copy and shift, state
 * save/restore (bit-identical continuation; truncated, corrupted or foreign states
 * rejected without change), and cross-layer KV sharing on a synthetic model written with
 * Orchard's own GGUF writer, checked against a plain reference forward pass. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "gguf.h"
#include "gguf_write.h"
#include "orchard.h"
#include "testutil.h"

static orc_model *stories;

static int setup(void **state)
{
    (void)state;
    return orc_model_load(tu_shared("models/stories260K.gguf"), NULL, &stories) == ORC_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    orc_model_free(stories);
    return 0;
}

static orc_context *new_ctx(orc_model *m, int n_ctx, int n_seq, orc_kv_type kv, int n_batch)
{
    orc_context_params cp = orc_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_seq = n_seq;
    cp.kv_type = kv;
    if (n_batch)
        cp.n_batch = n_batch;
    orc_context *c = NULL;
    assert_int_equal(orc_context_new(m, &cp, &c), ORC_OK);
    return c;
}

static int argmax(const float *l, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b])
            b = i;
    return b;
}

/* Q8_0 KV: greedy outputs of the reference stay identical (all 48 tokens here, at least
 * 16 required), logits within 0.05 std, and the cache takes about half the memory. */
static void test_q8_kv_cache(void **state)
{
    (void)state;
    size_t len;
    char *all = tu_read_file(tu_shared("reference/generate/stories260K.jsonl"), &len);
    assert_non_null(all);
    int nv = orc_model_n_vocab(stories);
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *pt = json_object_get(j, "prompt_tokens"), *gt = json_object_get(j, "greedy_tokens");
        json_t *ll = json_object_get(j, "last_logits");
        orc_token toks[64];
        int n = (int)json_array_size(pt);
        for (int i = 0; i < n; i++)
            toks[i] = (orc_token)json_integer_value(json_array_get(pt, (size_t)i));
        orc_context *c = new_ctx(stories, 256, 1, ORC_KV_Q8_0, 0);
        assert_int_equal(orc_eval(c, toks, n, false), ORC_OK);
        double *ref = malloc((size_t)nv * sizeof *ref);
        for (int v = 0; v < nv; v++)
            ref[v] = json_number_value(json_array_get(ll, (size_t)v));
        double rel = tu_rel_maxdiff(orc_context_logits(c, -1), ref, (size_t)nv);
        free(ref);
        assert_true(rel <= 0.05);
        int same = 0;
        bool diverged = false;
        for (size_t i = 0; i < json_array_size(gt); i++) {
            orc_token t = argmax(orc_context_logits(c, -1), nv);
            if (t != json_integer_value(json_array_get(gt, i)))
                diverged = true;
            if (!diverged)
                same++;
            assert_int_equal(orc_eval(c, &t, 1, false), ORC_OK);
        }
        printf("q8_0 KV: '%s' logits max|d|/sd %.4f, %d/48 greedy tokens identical\n",
               json_string_value(json_object_get(j, "prompt")), rel, same);
        assert_true(same >= 16);
        orc_context_free(c);
        json_decref(j);
    }
    free(all);
    orc_context *f16 = new_ctx(stories, 256, 1, ORC_KV_F16, 0);
    orc_context *q8 = new_ctx(stories, 256, 1, ORC_KV_Q8_0, 0);
    uint64_t a = orc_context_kv_bytes(f16), b = orc_context_kv_bytes(q8);
    printf("KV cache for 256 positions: f16 %llu bytes, q8_0 %llu bytes (%.3f)\n",
           (unsigned long long)a, (unsigned long long)b, (double)b / (double)a);
    assert_true(b * 100 <= a * 54); /* 34 bytes per 32 values instead of 64 */
    assert_int_equal(orc_context_kv_bytes_per_token(f16), 5 * 2 * 32 * 2);
    orc_context_free(f16);
    orc_context_free(q8);
}

/* Three sequences interleaved in one batch give the logits each gives alone. */
static void test_multi_sequence_batch(void **state)
{
    (void)state;
    const char *prompts[3] = {"Once upon a time", "The little dog", "Lily and Ben went to the park"};
    orc_token toks[3][32];
    int n[3];
    for (int s = 0; s < 3; s++)
        n[s] = orc_tokenize(stories, prompts[s], strlen(prompts[s]), toks[s], 32, true, false);
    int nv = orc_model_n_vocab(stories);
    float alone[3][512];
    for (int kv = 0; kv < 2; kv++) {
        for (int s = 0; s < 3; s++) {
            orc_context *c = new_ctx(stories, 64, 1, kv ? ORC_KV_Q8_0 : ORC_KV_F16, 0);
            assert_int_equal(orc_eval(c, toks[s], n[s], false), ORC_OK);
            memcpy(alone[s], orc_context_logits(c, -1), (size_t)nv * sizeof(float));
            orc_context_free(c);
        }
        orc_context *c = new_ctx(stories, 64, 3, kv ? ORC_KV_Q8_0 : ORC_KV_F16, 0);
        orc_batch_token batch[96];
        int nb = 0, idx[3] = {0, 0, 0}, last[3];
        /* round-robin interleave */
        for (bool more = true; more;) {
            more = false;
            for (int s = 0; s < 3; s++)
                if (idx[s] < n[s]) {
                    last[s] = nb;
                    batch[nb++] = (orc_batch_token){.token = toks[s][idx[s]], .seq = s, .logits = idx[s] == n[s] - 1};
                    idx[s]++;
                    more = true;
                }
        }
        assert_int_equal(orc_eval_batch(c, batch, nb), ORC_OK);
        for (int s = 0; s < 3; s++) {
            assert_int_equal(orc_seq_n_past(c, s), n[s]);
            const float *l = orc_context_logits(c, last[s]);
            assert_non_null(l);
            assert_ptr_not_equal(orc_seq_logits(c, s), NULL);
            for (int v = 0; v < nv; v++)
                assert_float_equal(l[v], alone[s][v], 1e-3 * (1.0 + fabs(alone[s][v])));
            assert_memory_equal(orc_seq_logits(c, s), l, (size_t)nv * sizeof(float));
        }
        assert_null(orc_context_logits(c, 0)); /* not flagged */
        /* a batch that overflows one sequence changes nothing */
        orc_batch_token big[70];
        for (int i = 0; i < 70; i++)
            big[i] = (orc_batch_token){.token = 5, .seq = 1, .logits = false};
        assert_int_equal(orc_eval_batch(c, big, 70), ORC_ERR_CONTEXT_FULL);
        assert_int_equal(orc_seq_n_past(c, 1), n[1]);
        orc_batch_token badseq = {.token = 5, .seq = 3, .logits = true};
        assert_int_equal(orc_eval_batch(c, &badseq, 1), ORC_ERR_INVALID_ARGUMENT);
        /* decode one step for all three at once, compare with one-at-a-time */
        orc_batch_token step[3];
        for (int s = 0; s < 3; s++)
            step[s] = (orc_batch_token){.token = argmax(alone[s], nv), .seq = s, .logits = true};
        assert_int_equal(orc_eval_batch(c, step, 3), ORC_OK);
        for (int s = 0; s < 3; s++) {
            orc_context *one = new_ctx(stories, 64, 1, kv ? ORC_KV_Q8_0 : ORC_KV_F16, 0);
            orc_eval(one, toks[s], n[s], false);
            orc_eval(one, &step[s].token, 1, false);
            const float *a = orc_context_logits(one, -1), *b = orc_context_logits(c, s);
            for (int v = 0; v < nv; v++)
                assert_float_equal(a[v], b[v], 1e-3 * (1.0 + fabs(a[v])));
            orc_context_free(one);
        }
        orc_context_free(c);
    }
}

static void test_copy_and_clear(void **state)
{
    (void)state;
    orc_context *c = new_ctx(stories, 64, 2, ORC_KV_F16, 0);
    orc_token t[5] = {1, 403, 407, 261, 378};
    orc_batch_token b[5];
    for (int i = 0; i < 5; i++)
        b[i] = (orc_batch_token){.token = t[i], .seq = 0, .logits = i == 4};
    assert_int_equal(orc_eval_batch(c, b, 5), ORC_OK);
    assert_int_equal(orc_seq_copy(c, 0, 1), ORC_OK);
    assert_int_equal(orc_seq_n_past(c, 1), 5);
    orc_batch_token next[2] = {{432, 0, true}, {432, 1, true}};
    assert_int_equal(orc_eval_batch(c, next, 2), ORC_OK);
    int nv = orc_model_n_vocab(stories);
    for (int v = 0; v < nv; v++)
        assert_float_equal(orc_context_logits(c, 0)[v], orc_context_logits(c, 1)[v], 1e-5);
    assert_int_equal(orc_seq_clear(c, 1), ORC_OK);
    assert_int_equal(orc_seq_n_past(c, 1), 0);
    assert_int_equal(orc_seq_n_past(c, 0), 6);
    assert_null(orc_seq_logits(c, 1));
    assert_int_equal(orc_seq_copy(c, 0, 2), ORC_ERR_INVALID_ARGUMENT);
    orc_context_free(c);
}

/* After a shift, the kept tokens' layer-0 keys equal keys computed at their new positions
 * (layer 0's K depends only on the token and the position), and V is unchanged. The state
 * serialization exposes the rows: per layer, per position, K row then V row. */
static void test_shift(void **state)
{
    (void)state;
    orc_token seq[20], kept[15];
    for (int i = 0; i < 20; i++)
        seq[i] = (orc_token)(1 + (i * 37) % 500);
    kept[0] = seq[0];
    for (int i = 6; i < 20; i++)
        kept[i - 5] = seq[i];
    orc_context *a = new_ctx(stories, 64, 1, ORC_KV_F16, 0), *b = new_ctx(stories, 64, 1, ORC_KV_F16, 0);
    assert_int_equal(orc_eval(a, seq, 20, false), ORC_OK);
    assert_int_equal(orc_seq_shift(a, 0, 1, 5), ORC_OK);
    assert_int_equal(orc_seq_n_past(a, 0), 15);
    assert_int_equal(orc_eval(b, kept, 15, false), ORC_OK);
    void *sa, *sb;
    size_t la, lb;
    assert_int_equal(orc_seq_state_save(a, 0, &sa, &la), ORC_OK);
    assert_int_equal(orc_seq_state_save(b, 0, &sb, &lb), ORC_OK);
    assert_int_equal(la, lb - 512 * sizeof(float)); /* b still has its logits */
    const size_t hdr = 56, row = 32 * 2; /* header bytes; K and V rows of 32 f16 */
    const uint16_t *ka = (const uint16_t *)((const uint8_t *)sa + hdr);
    const uint16_t *kb = (const uint16_t *)((const uint8_t *)sb + hdr);
    double worst = 0;
    for (int p = 0; p < 15; p++)
        for (int e = 0; e < 32; e++) {
            float x = orc_f16_to_f32(ka[p * row + e]), y = orc_f16_to_f32(kb[p * row + e]);
            double d = fabs(x - y) / (1.0 + fabs(y));
            worst = d > worst ? d : worst;
            assert_int_equal(ka[p * row + 32 + e], kb[p * row + 32 + e]); /* V identical */
        }
    printf("shift: layer-0 keys re-rotated vs computed at the new positions: max rel diff %.5f\n", worst);
    assert_true(worst < 5e-3);
    orc_free(sa);
    orc_free(sb);
    /* generation continues after the shift */
    orc_token t = 300;
    assert_int_equal(orc_eval(a, &t, 1, false), ORC_OK);
    assert_int_equal(orc_seq_n_past(a, 0), 16);
    assert_int_equal(orc_seq_shift(a, 0, 10, 7), ORC_ERR_INVALID_ARGUMENT);
    /* the 8-bit cache (rotated, smoothed keys) shifts to the same result within its noise */
    orc_context *q8 = new_ctx(stories, 64, 1, ORC_KV_Q8_0, 0);
    assert_int_equal(orc_eval(q8, seq, 20, false), ORC_OK);
    assert_int_equal(orc_seq_shift(q8, 0, 1, 5), ORC_OK);
    assert_int_equal(orc_eval(q8, &t, 1, false), ORC_OK);
    double ref[512];
    for (int v = 0; v < 512; v++)
        ref[v] = orc_context_logits(a, -1)[v];
    double d = tu_rel_maxdiff(orc_context_logits(q8, -1), ref, 512);
    printf("shift with a q8_0 cache vs f16: max|d|/sd %.4f\n", d);
    assert_true(d < 0.05);
    orc_context_free(q8);
    orc_context_free(a);
    orc_context_free(b);
}

static void test_state_roundtrip(void **state)
{
    (void)state;
    int nv = orc_model_n_vocab(stories);
    for (int kv = 0; kv < 2; kv++) {
        orc_kv_type kt = kv ? ORC_KV_Q8_0 : ORC_KV_F16;
        orc_context *a = new_ctx(stories, 128, 2, kt, 0);
        orc_token p[5] = {1, 403, 407, 261, 378}, cont[3] = {432, 383, 286};
        assert_int_equal(orc_eval(a, p, 5, false), ORC_OK);
        void *st;
        size_t sz;
        assert_int_equal(orc_seq_state_save(a, 0, &st, &sz), ORC_OK);
        float *want_first = malloc((size_t)nv * sizeof(float));
        memcpy(want_first, orc_seq_logits(a, 0), (size_t)nv * sizeof(float));
        assert_int_equal(orc_eval(a, cont, 3, false), ORC_OK);
        float *want = malloc((size_t)nv * sizeof(float));
        memcpy(want, orc_context_logits(a, -1), (size_t)nv * sizeof(float));

        /* restore into another sequence of another context, continue: bit-identical */
        orc_context *b = new_ctx(stories, 64, 3, kt, 0);
        assert_int_equal(orc_seq_state_load(b, 2, st, sz), ORC_OK);
        assert_int_equal(orc_seq_n_past(b, 2), 5);
        assert_memory_equal(orc_seq_logits(b, 2), want_first, (size_t)nv * sizeof(float));
        orc_batch_token bt[3];
        for (int i = 0; i < 3; i++)
            bt[i] = (orc_batch_token){.token = cont[i], .seq = 2, .logits = i == 2};
        assert_int_equal(orc_eval_batch(b, bt, 3), ORC_OK);
        assert_memory_equal(orc_context_logits(b, 2), want, (size_t)nv * sizeof(float));

        /* through a file */
        char path[] = "/tmp/orc_state_XXXXXX";
        int fd = mkstemp(path);
        close(fd);
        assert_int_equal(orc_seq_state_save_file(a, 0, path), ORC_OK);
        orc_context *c = new_ctx(stories, 128, 1, kt, 0);
        assert_int_equal(orc_seq_state_load_file(c, 0, path), ORC_OK);
        assert_int_equal(orc_seq_n_past(c, 0), 8);

        /* truncated, corrupted, foreign: rejected, nothing changes */
        uint8_t *bad = malloc(sz);
        for (size_t cut = 0; cut < sz; cut += (cut < 128 ? 1 : 97)) {
            assert_int_equal(orc_seq_state_load(c, 0, st, cut), ORC_ERR_FORMAT);
            assert_int_equal(orc_seq_n_past(c, 0), 8);
        }
        for (size_t pos = 0; pos < sz; pos += 13) {
            memcpy(bad, st, sz);
            bad[pos] ^= 0x40;
            assert_int_equal(orc_seq_state_load(c, 0, bad, sz), ORC_ERR_FORMAT);
            assert_int_equal(orc_seq_n_past(c, 0), 8);
        }
        FILE *f = fopen(path, "wb");
        fwrite(st, 1, sz / 2, f);
        fclose(f);
        assert_int_equal(orc_seq_state_load_file(c, 0, path), ORC_ERR_FORMAT);
        assert_non_null(strstr(orc_last_error(), path));
        unlink(path);
        orc_context *other = new_ctx(stories, 128, 1, kv ? ORC_KV_F16 : ORC_KV_Q8_0, 0);
        assert_int_equal(orc_seq_state_load(other, 0, st, sz), ORC_ERR_FORMAT);
        assert_non_null(strstr(orc_last_error(), "KV cache"));
        orc_context_free(other);
        orc_model *gq = NULL;
        assert_int_equal(orc_model_load(tu_shared("models/synthetic/llama-gqa-f32.gguf"), NULL, &gq), ORC_OK);
        orc_context *g = new_ctx(gq, 64, 1, kt, 0);
        assert_int_equal(orc_seq_state_load(g, 0, st, sz), ORC_ERR_FORMAT);
        assert_non_null(strstr(orc_last_error(), "another shape"));
        orc_context_free(g);
        orc_model_free(gq);
        free(bad);
        free(want);
        free(want_first);
        orc_free(st);
        orc_context_free(a);
        orc_context_free(b);
        orc_context_free(c);
    }
}

/* ---- cross-layer KV sharing on a synthetic model ---- */

enum { SL = 4, SE = 64, SH = 4, SKV = 2, SHD = 16, SF = 128 };
static const int32_t share[SL] = {-1, -1, 0, 1};

typedef struct {
    float *tok, *out_norm, *attn_norm[SL], *wq[SL], *wk[SL], *wv[SL], *wo[SL], *ffn_norm[SL],
        *gate[SL], *up[SL], *down[SL];
    int nv;
} synth;

static float *randm(size_t n, float scale, unsigned *seed)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        p[i] = ((float)((*seed >> 8) & 0xffff) / 65536.0f - 0.5f) * 2.0f * scale;
    }
    return p;
}

static float *ones_ish(size_t n, unsigned *seed)
{
    float *p = randm(n, 0.1f, seed);
    for (size_t i = 0; i < n; i++)
        p[i] += 1.0f;
    return p;
}

static void write_synth(const char *path, synth *s, bool with_share, const int32_t *share_map)
{
    gguf_ctx *voc = gguf_open(tu_shared("models/stories260K.gguf"), true, NULL, 0);
    assert_non_null(voc);
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, "llama.context_length", 256);
    gguf_writer_set_u32(w, "llama.embedding_length", SE);
    gguf_writer_set_u32(w, "llama.block_count", SL);
    gguf_writer_set_u32(w, "llama.feed_forward_length", SF);
    gguf_writer_set_u32(w, "llama.attention.head_count", SH);
    gguf_writer_set_u32(w, "llama.attention.head_count_kv", SKV);
    gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (with_share)
        gguf_writer_set_arr(w, "llama.attention.shared_kv_layers", GGUF_T_INT32, share_map, SL);
    for (int64_t i = 0; i < gguf_n_kv(voc); i++) {
        const gguf_kv *kv = gguf_kv_at(voc, i);
        if (!strncmp(kv->key, "tokenizer.", 10))
            assert_true(gguf_writer_set_value(w, kv->key, &kv->val));
    }
    s->nv = 512;
    int64_t ne_tok[2] = {SE, s->nv}, ne_e[1] = {SE};
    gguf_writer_add_tensor(w, "token_embd.weight", ORC_DT_F32, 2, ne_tok, s->tok);
    gguf_writer_add_tensor(w, "output_norm.weight", ORC_DT_F32, 1, ne_e, s->out_norm);
    char name[64];
    for (int l = 0; l < SL; l++) {
        int64_t q[2] = {SE, SH * SHD}, k[2] = {SE, SKV * SHD}, o[2] = {SH * SHD, SE}, g[2] = {SE, SF}, d[2] = {SF, SE};
#define ADD(fmt, nd, ne, data)                                        \
    do {                                                              \
        snprintf(name, sizeof name, fmt, l);                          \
        assert_true(gguf_writer_add_tensor(w, name, ORC_DT_F32, nd, ne, data)); \
    } while (0)
        ADD("blk.%d.attn_norm.weight", 1, ne_e, s->attn_norm[l]);
        ADD("blk.%d.attn_q.weight", 2, q, s->wq[l]);
        if (!with_share || share_map[l] < 0) {
            ADD("blk.%d.attn_k.weight", 2, k, s->wk[l]);
            ADD("blk.%d.attn_v.weight", 2, k, s->wv[l]);
        }
        ADD("blk.%d.attn_output.weight", 2, o, s->wo[l]);
        ADD("blk.%d.ffn_norm.weight", 1, ne_e, s->ffn_norm[l]);
        ADD("blk.%d.ffn_gate.weight", 2, g, s->gate[l]);
        ADD("blk.%d.ffn_up.weight", 2, g, s->up[l]);
        ADD("blk.%d.ffn_down.weight", 2, d, s->down[l]);
#undef ADD
    }
    assert_int_equal(gguf_writer_write(w, path), ORC_OK);
    gguf_writer_free(w);
    gguf_close(voc);
}

static void ref_rmsnorm(float *o, const float *x, const float *w, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float sc = (float)(1.0 / sqrt(ss / n + 1e-5));
    for (int i = 0; i < n; i++)
        o[i] = x[i] * sc * w[i];
}

/* y[r] = sum_c W[r * n + c] x[c] (GGUF row-major: ne[0] = n is the row length) */
static void ref_mv(float *y, const float *W, const float *x, int n, int rows)
{
    for (int r = 0; r < rows; r++) {
        double a = 0;
        for (int c = 0; c < n; c++)
            a += (double)W[(size_t)r * n + c] * x[c];
        y[r] = (float)a;
    }
}

static void ref_rope(float *v, int heads, int pos)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < SHD / 2; i++) {
            double th = pos * pow(10000.0, -2.0 * i / SHD);
            float *p = v + h * SHD + 2 * i, a = p[0], b = p[1];
            p[0] = (float)(a * cos(th) - b * sin(th));
            p[1] = (float)(a * sin(th) + b * cos(th));
        }
}

/* A plain forward pass of the synthetic model with sharing: layer l reads layer
 * share[l]'s keys and values. Returns logits for every position (n, nv). */
static float *ref_forward(const synth *s, const orc_token *toks, int n)
{
    static float K[SL][64][SKV * SHD], V[SL][64][SKV * SHD];
    float *logits = malloc((size_t)n * s->nv * sizeof(float));
    for (int t = 0; t < n; t++) {
        float x[SE], xn[SE], q[SH * SHD], att[SH * SHD], tmp[SE], g[SF], u[SF];
        memcpy(x, s->tok + (size_t)toks[t] * SE, sizeof x);
        for (int l = 0; l < SL; l++) {
            ref_rmsnorm(xn, x, s->attn_norm[l], SE);
            ref_mv(q, s->wq[l], xn, SE, SH * SHD);
            ref_rope(q, SH, t);
            int src = share[l] < 0 ? l : share[l];
            if (share[l] < 0) {
                ref_mv(K[l][t], s->wk[l], xn, SE, SKV * SHD);
                ref_mv(V[l][t], s->wv[l], xn, SE, SKV * SHD);
                ref_rope(K[l][t], SKV, t);
            }
            for (int h = 0; h < SH; h++) {
                int kh = h / (SH / SKV);
                double sc[64], mx = -1e30, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double d = 0;
                    for (int e = 0; e < SHD; e++)
                        d += q[h * SHD + e] * K[src][p][kh * SHD + e];
                    sc[p] = d / sqrt((double)SHD);
                    mx = sc[p] > mx ? sc[p] : mx;
                }
                for (int p = 0; p <= t; p++)
                    sum += (sc[p] = exp(sc[p] - mx));
                for (int e = 0; e < SHD; e++) {
                    double a = 0;
                    for (int p = 0; p <= t; p++)
                        a += sc[p] / sum * V[src][p][kh * SHD + e];
                    att[h * SHD + e] = (float)a;
                }
            }
            ref_mv(tmp, s->wo[l], att, SH * SHD, SE);
            for (int i = 0; i < SE; i++)
                x[i] += tmp[i];
            ref_rmsnorm(xn, x, s->ffn_norm[l], SE);
            ref_mv(g, s->gate[l], xn, SE, SF);
            ref_mv(u, s->up[l], xn, SE, SF);
            for (int i = 0; i < SF; i++)
                g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
            ref_mv(tmp, s->down[l], g, SF, SE);
            for (int i = 0; i < SE; i++)
                x[i] += tmp[i];
        }
        ref_rmsnorm(xn, x, s->out_norm, SE);
        ref_mv(logits + (size_t)t * s->nv, s->tok, xn, SE, s->nv); /* tied output */
    }
    return logits;
}

static void test_kv_sharing(void **state)
{
    (void)state;
    unsigned seed = 99;
    synth s;
    s.tok = randm((size_t)SE * 512, 1.0f, &seed);
    s.out_norm = ones_ish(SE, &seed);
    for (int l = 0; l < SL; l++) {
        s.attn_norm[l] = ones_ish(SE, &seed);
        s.ffn_norm[l] = ones_ish(SE, &seed);
        s.wq[l] = randm((size_t)SE * SH * SHD, 0.25f, &seed);
        s.wk[l] = randm((size_t)SE * SKV * SHD, 0.25f, &seed);
        s.wv[l] = randm((size_t)SE * SKV * SHD, 0.25f, &seed);
        s.wo[l] = randm((size_t)SH * SHD * SE, 0.25f, &seed);
        s.gate[l] = randm((size_t)SE * SF, 0.25f, &seed);
        s.up[l] = randm((size_t)SE * SF, 0.25f, &seed);
        s.down[l] = randm((size_t)SF * SE, 0.18f, &seed);
    }
    char path[] = "/tmp/orc_share_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    write_synth(path, &s, true, share);
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(path, NULL, &m), ORC_OK);
    orc_token toks[24];
    for (int i = 0; i < 24; i++)
        toks[i] = (orc_token)((i * 53 + 7) % 512);
    orc_context *c = new_ctx(m, 64, 1, ORC_KV_F16, 0);
    assert_int_equal(orc_eval(c, toks, 24, true), ORC_OK);
    float *ref = ref_forward(&s, toks, 24);
    double worst = 0;
    for (int t = 0; t < 24; t++) {
        double r[512];
        for (int v = 0; v < 512; v++)
            r[v] = ref[(size_t)t * 512 + v];
        double d = tu_rel_maxdiff(orc_context_logits(c, t), r, 512);
        worst = d > worst ? d : worst;
    }
    uint64_t shared_bytes = orc_context_kv_bytes_per_token(c);
    printf("KV sharing: logits vs reference forward max|d|/sd %.5f; KV bytes/token %llu\n", worst,
           (unsigned long long)shared_bytes);
    assert_true(worst < 0.01);
    orc_context_free(c);
    orc_model_free(m);

    /* the same weights without sharing need twice the cache (2 of 4 layers share here) */
    write_synth(path, &s, false, share);
    assert_int_equal(orc_model_load(path, NULL, &m), ORC_OK);
    c = new_ctx(m, 64, 1, ORC_KV_F16, 0);
    printf("without sharing: KV bytes/token %llu\n", (unsigned long long)orc_context_kv_bytes_per_token(c));
    assert_int_equal(orc_context_kv_bytes_per_token(c), 2 * shared_bytes);
    orc_context_free(c);
    orc_model_free(m);

    /* a layer may only read an earlier layer that has its own cache */
    static const int32_t bad[SL] = {-1, 2, -1, 1};
    write_synth(path, &s, true, bad);
    assert_int_equal(orc_model_load(path, NULL, &m), ORC_ERR_FORMAT);
    assert_non_null(strstr(orc_last_error(), "shared_kv_layers"));
    unlink(path);
    free(ref);
    free(s.tok);
    free(s.out_norm);
    for (int l = 0; l < SL; l++) {
        float *p[] = {s.attn_norm[l], s.ffn_norm[l], s.wq[l], s.wk[l], s.wv[l], s.wo[l], s.gate[l], s.up[l], s.down[l]};
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
            free(p[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_kv_cache),
        cmocka_unit_test(test_multi_sequence_batch),
        cmocka_unit_test(test_copy_and_clear),
        cmocka_unit_test(test_shift),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_kv_sharing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
