/* gen-model.c - writes random-weight GGUF models with the shapes of real ones (Llama-3.2-1B,
 * Qwen2.5-0.5B) for bench/run-bench, using Orchard's GGUF writer. The tokenizer metadata
 * is copied from a real vocabulary file so Orchard and llama.cpp both load the result.
 * Weights are streamed tensor by tensor: nothing close to the model's size is held. */
#include "dtype.h"
#include "gguf.h"
#include "gguf_write.h"
#include "orchard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;     /* --shape value */
    const char *arch;     /* general.architecture */
    const char *label;    /* general.name */
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
    float rope_base, rms_eps;
    bool qkv_bias;
} shape;

static const shape SHAPES[] = {
    {"llama-1b", "llama", "bench-llama-3.2-1b-shape", 2048, 16, 32, 8, 64, 8192, 128256, 131072,
     500000.0f, 1e-5f, false},
    {"qwen2-0.5b", "qwen2", "bench-qwen2.5-0.5b-shape", 896, 24, 14, 2, 64, 4864, 151936, 32768,
     1000000.0f, 1e-6f, true},
};

/* A 64K-entry table of normal samples (std 1) indexed by 16 random bits: fast enough to
 * write gigabytes of weights in seconds and normal enough for quantizers and kernels. */
static float NORMAL[65536];

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void init_normal(void)
{
    uint64_t s = 0x2545F4914F6CDD1Dull;
    for (int i = 0; i < 65536; i += 2) {
        double u1 = ((double)(xs(&s) >> 11) + 0.5) / 9007199254740992.0;
        double u2 = (double)(xs(&s) >> 11) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u1));
        NORMAL[i] = (float)(r * cos(2.0 * M_PI * u2));
        NORMAL[i + 1] = (float)(r * sin(2.0 * M_PI * u2));
    }
}

typedef struct {
    uint32_t type;     /* ORC_DT_F16 or ORC_DT_F32 */
    int64_t n;         /* elements */
    float mean, std;   /* norm weights: mean 1, small std */
    uint64_t seed;
} fill_spec;

#define CHUNK 65536

static orc_status fill(void *user, gguf_sink *sink)
{
    const fill_spec *f = user;
    uint64_t s = f->seed ? f->seed : 1;
    float vf[CHUNK];
    uint16_t vh[CHUNK];
    for (int64_t done = 0; done < f->n; done += CHUNK) {
        int64_t k = f->n - done < CHUNK ? f->n - done : CHUNK;
        for (int64_t i = 0; i < k; i += 4) {
            uint64_t r = xs(&s);
            for (int j = 0; j < 4 && i + j < k; j++)
                vf[i + j] = f->mean + f->std * NORMAL[(r >> (16 * j)) & 0xFFFF];
        }
        bool ok;
        if (f->type == ORC_DT_F16) {
            for (int64_t i = 0; i < k; i++)
                vh[i] = orc_f32_to_f16(vf[i]);
            ok = gguf_sink_write(sink, vh, (size_t)k * 2);
        } else {
            ok = gguf_sink_write(sink, vf, (size_t)k * 4);
        }
        if (!ok)
            return ORC_ERR_IO;
    }
    return ORC_OK;
}

static uint64_t hash(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h | 1;
}

static fill_spec *SPECS;
static int N_SPECS;

static void add(gguf_writer *w, const char *name, uint32_t type, int64_t ne0, int64_t ne1,
                float mean, float std, uint64_t seed)
{
    fill_spec *f = &SPECS[N_SPECS++];
    f->type = type;
    f->n = ne0 * (ne1 > 0 ? ne1 : 1);
    f->mean = mean;
    f->std = std;
    f->seed = hash(name, seed);
    int64_t ne[2] = {ne0, ne1};
    if (!gguf_writer_add_tensor_cb(w, name, type, ne1 > 0 ? 2 : 1, ne, fill, f)) {
        fprintf(stderr, "gen-model: %s\n", orc_last_error());
        exit(1);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: gen-model --shape llama-1b|qwen2-0.5b --vocab VOCAB.gguf --out OUT.gguf\n"
                    "                 [--type f16|f32] [--layers N] [--seed N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *shape_name = NULL, *vocab = NULL, *out = NULL, *type = "f16";
    int layers = 0;
    uint64_t seed = 42;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--shape"))
            shape_name = argv[++i];
        else if (!strcmp(argv[i], "--vocab"))
            vocab = argv[++i];
        else if (!strcmp(argv[i], "--out"))
            out = argv[++i];
        else if (!strcmp(argv[i], "--type"))
            type = argv[++i];
        else if (!strcmp(argv[i], "--layers"))
            layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed"))
            seed = strtoull(argv[++i], NULL, 10);
        else
            usage();
    }
    const shape *sh = NULL;
    for (size_t i = 0; shape_name && i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        if (!strcmp(shape_name, SHAPES[i].name))
            sh = &SHAPES[i];
    if (!sh || !vocab || !out || (strcmp(type, "f16") && strcmp(type, "f32")) || layers < 0 ||
        layers > 1000)
        usage();
    uint32_t wt = !strcmp(type, "f16") ? ORC_DT_F16 : ORC_DT_F32;
    int n_layer = layers ? layers : sh->n_layer;
    init_normal();

    char err[512];
    gguf_ctx *v = gguf_open(vocab, true, err, sizeof err);
    if (!v) {
        fprintf(stderr, "gen-model: %s\n", err);
        return 1;
    }
    const gguf_value *toks = gguf_get_arr(v, "tokenizer.ggml.tokens", GGUF_T_STRING);
    if (!toks || toks->v.arr.n != (uint64_t)sh->n_vocab) {
        fprintf(stderr, "gen-model: %s has %llu tokens, the %s shape needs %d\n", vocab,
                toks ? (unsigned long long)toks->v.arr.n : 0ull, sh->name, sh->n_vocab);
        return 1;
    }

    gguf_writer *w = gguf_writer_new();
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, sh->arch), key)
    bool ok = gguf_writer_set_str(w, "general.architecture", sh->arch) &&
              gguf_writer_set_str(w, "general.name", sh->label) &&
              gguf_writer_set_u32(w, "general.file_type", wt == ORC_DT_F16 ? 1 : 0) &&
              gguf_writer_set_u32(w, K("context_length"), (uint32_t)sh->n_ctx) &&
              gguf_writer_set_u32(w, K("embedding_length"), (uint32_t)sh->n_embd) &&
              gguf_writer_set_u32(w, K("block_count"), (uint32_t)n_layer) &&
              gguf_writer_set_u32(w, K("feed_forward_length"), (uint32_t)sh->n_ff) &&
              gguf_writer_set_u32(w, K("attention.head_count"), (uint32_t)sh->n_head) &&
              gguf_writer_set_u32(w, K("attention.head_count_kv"), (uint32_t)sh->n_head_kv) &&
              gguf_writer_set_u32(w, K("rope.dimension_count"), (uint32_t)sh->head_dim) &&
              gguf_writer_set_f32(w, K("rope.freq_base"), sh->rope_base) &&
              gguf_writer_set_f32(w, K("attention.layer_norm_rms_epsilon"), sh->rms_eps) &&
              gguf_writer_set_u32(w, K("vocab_size"), (uint32_t)sh->n_vocab);
#undef K
    for (int64_t i = 0; ok && i < gguf_n_kv(v); i++) {
        const gguf_kv *kv = gguf_kv_at(v, i);
        if (!strncmp(kv->key, "tokenizer.", 10))
            ok = gguf_writer_set_value(w, kv->key, &kv->val);
    }
    if (!ok) {
        fprintf(stderr, "gen-model: %s\n", orc_last_error());
        return 1;
    }

    SPECS = calloc((size_t)(n_layer * 16 + 8), sizeof *SPECS);
    int64_t E = sh->n_embd, Q = (int64_t)sh->n_head * sh->head_dim;
    int64_t KV = (int64_t)sh->n_head_kv * sh->head_dim, F = sh->n_ff;
    /* std 0.02 keeps every projection's output O(1) for unit-RMS inputs: activations stay
     * finite through all layers (the output is tied to the embedding, as in both models) */
    const float sd = 0.02f;
    add(w, "token_embd.weight", wt, E, sh->n_vocab, 0, sd, seed);
    add(w, "output_norm.weight", ORC_DT_F32, E, 0, 1.0f, 0.05f, seed);
    for (int l = 0; l < n_layer; l++) {
        char n[64];
#define T(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, l), n)
        add(w, T("attn_norm.weight"), ORC_DT_F32, E, 0, 1.0f, 0.05f, seed);
        add(w, T("attn_q.weight"), wt, E, Q, 0, sd, seed);
        add(w, T("attn_k.weight"), wt, E, KV, 0, sd, seed);
        add(w, T("attn_v.weight"), wt, E, KV, 0, sd, seed);
        if (sh->qkv_bias) {
            add(w, T("attn_q.bias"), ORC_DT_F32, Q, 0, 0, sd, seed);
            add(w, T("attn_k.bias"), ORC_DT_F32, KV, 0, 0, sd, seed);
            add(w, T("attn_v.bias"), ORC_DT_F32, KV, 0, 0, sd, seed);
        }
        add(w, T("attn_output.weight"), wt, Q, E, 0, sd, seed);
        add(w, T("ffn_norm.weight"), ORC_DT_F32, E, 0, 1.0f, 0.05f, seed);
        add(w, T("ffn_gate.weight"), wt, E, F, 0, sd, seed);
        add(w, T("ffn_up.weight"), wt, E, F, 0, sd, seed);
        add(w, T("ffn_down.weight"), wt, F, E, 0, sd, seed);
#undef T
    }
    orc_status st = gguf_writer_write(w, out);
    if (st != ORC_OK) {
        fprintf(stderr, "gen-model: %s\n", orc_last_error());
        return 1;
    }
    gguf_writer_free(w);
    gguf_close(v);
    free(SPECS);
    return 0;
}
