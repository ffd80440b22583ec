/* model.c - loading a GGUF model: the architecture table (one recipe per family), the
 * hyperparameters and per-block tensors it names, shape checks with precise errors, and
 * the public metadata and token API on top of the loaded model. */
#include "model.h"

#include "dtype.h"
#include "grammar.h"
#include "quant.h"

#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The data-driven architecture table: adding a family is one entry here plus, if it
 * needs a new kind of block part, a flag the forward pass honours. */
static const orc_arch arch_table[] = {
    {.name = "llama", .rope = ORC_ROPE_NORM, .act = ORC_ACT_SILU},
    {.name = "mistral", .rope = ORC_ROPE_NORM, .act = ORC_ACT_SILU},
    {.name = "qwen2", .rope = ORC_ROPE_NEOX, .act = ORC_ACT_SILU, .qkv_bias = true},
    {.name = "qwen3", .rope = ORC_ROPE_NEOX, .act = ORC_ACT_SILU, .qk_norm = true},
    {.name = "qwen3moe", .rope = ORC_ROPE_NEOX, .act = ORC_ACT_SILU, .qk_norm = true, .moe = true},
    {.name = "gemma2", .rope = ORC_ROPE_NEOX, .act = ORC_ACT_GELU_TANH, .post_norms = true,
     .embd_scale = true, .swa_alternate = true},
    {.name = "gemma3", .rope = ORC_ROPE_NEOX, .act = ORC_ACT_GELU_TANH, .post_norms = true,
     .embd_scale = true, .qk_norm = true, .swa_period = 6},
};

typedef struct {
    orc_model *m;
    char key[160];
} loader;

static const char *akey(loader *L, const char *suffix)
{
    snprintf(L->key, sizeof L->key, "%s.%s", L->m->arch_name, suffix);
    return L->key;
}

static orc_status req_u32(loader *L, const char *suffix, int32_t *out)
{
    uint32_t v;
    if (!gguf_get_u32(L->m->gguf, akey(L, suffix), &v) || v > INT32_MAX)
        return orc_fail(ORC_ERR_FORMAT, "missing or invalid metadata %s", L->key);
    *out = (int32_t)v;
    return ORC_OK;
}

static int32_t opt_u32(loader *L, const char *suffix, int32_t def)
{
    uint32_t v;
    if (gguf_get_u32(L->m->gguf, akey(L, suffix), &v) && v <= INT32_MAX)
        return (int32_t)v;
    return def;
}

static float opt_f32(loader *L, const char *suffix, float def)
{
    float v;
    if (gguf_get_f32(L->m->gguf, akey(L, suffix), &v) && isfinite(v))
        return v;
    return def;
}

/* Finds a tensor and checks its type is computable and its shape is [a, b, c]
 * (c = 0: 2-D or less, b = 0: 1-D). Missing required tensors are an error. */
static orc_status get_tensor(orc_model *m, const gguf_tensor **out, bool required, int64_t a,
                             int64_t b, int64_t c, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static orc_status get_tensor(orc_model *m, const gguf_tensor **out, bool required, int64_t a,
                             int64_t b, int64_t c, const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    *out = NULL;
    if (!t) {
        if (required)
            return orc_fail(ORC_ERR_FORMAT, "%s model is missing tensor %s", m->arch_name, name);
        return ORC_OK;
    }
    int64_t want[4] = {a, b ? b : 1, c ? c : 1, 1};
    if (t->ne[0] != want[0] || t->ne[1] != want[1] || t->ne[2] != want[2] || t->ne[3] != 1)
        return orc_fail(ORC_ERR_FORMAT,
                        "tensor %s has shape [%" PRId64 ", %" PRId64 ", %" PRId64
                        "] but the metadata implies [%" PRId64 ", %" PRId64 ", %" PRId64 "]",
                        name, t->ne[0], t->ne[1], t->ne[2], want[0], want[1], want[2]);
    if (!orc_quant_supported(t->type))
        return orc_fail(ORC_ERR_UNSUPPORTED, "tensor %s has type %s, which Orchard cannot compute yet",
                        name, orc_dtype_name(t->type));
    /* norms and biases are read as plain floats */
    if (b == 0 && t->type != 0)
        return orc_fail(ORC_ERR_UNSUPPORTED, "tensor %s: 1-D tensors must be f32, not %s", name,
                        orc_dtype_name(t->type));
    *out = t;
    return ORC_OK;
}

#define TRY(x)                          \
    do {                                \
        orc_status st_ = (x);           \
        if (st_ != ORC_OK)              \
            return st_;                 \
    } while (0)

static orc_status load_hparams(orc_model *m)
{
    loader L = {.m = m};
    orc_hparams *hp = &m->hp;
    TRY(req_u32(&L, "embedding_length", &hp->n_embd));
    TRY(req_u32(&L, "block_count", &hp->n_layer));
    TRY(req_u32(&L, "attention.head_count", &hp->n_head));
    hp->n_head_kv = opt_u32(&L, "attention.head_count_kv", hp->n_head);
    hp->n_ctx_train = opt_u32(&L, "context_length", 2048);
    hp->n_ff = opt_u32(&L, "feed_forward_length", 0);
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->n_layer > 4096 || hp->n_head > 4096 || hp->n_embd > (1 << 20))
        return orc_fail(ORC_ERR_FORMAT, "implausible hyperparameters: n_embd %d, layers %d, heads %d/%d",
                        hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv);
    if (hp->n_head % hp->n_head_kv != 0)
        return orc_fail(ORC_ERR_FORMAT, "head count %d is not a multiple of the KV head count %d",
                        hp->n_head, hp->n_head_kv);
    int32_t hd = hp->n_embd / hp->n_head;
    hp->head_dim_k = opt_u32(&L, "attention.key_length", hd);
    hp->head_dim_v = opt_u32(&L, "attention.value_length", hd);
    hp->n_rot = opt_u32(&L, "rope.dimension_count", hp->head_dim_k);
    if (hp->head_dim_k <= 0 || hp->head_dim_v <= 0 || hp->head_dim_k > 4096 ||
        hp->head_dim_v > 4096 || hp->n_rot <= 0 || hp->n_rot > hp->head_dim_k || hp->n_rot % 2)
        return orc_fail(ORC_ERR_FORMAT, "implausible head dimensions: k %d, v %d, rope %d",
                        hp->head_dim_k, hp->head_dim_v, hp->n_rot);
    hp->rms_eps = opt_f32(&L, "attention.layer_norm_rms_epsilon", 1e-5f);
    hp->rope_base = opt_f32(&L, "rope.freq_base", 10000.0f);
    hp->rope_base_local = 10000.0f;
    float factor = opt_f32(&L, "rope.scaling.factor", 0.0f);
    gguf_str stype;
    bool linear = gguf_get_str(m->gguf, akey(&L, "rope.scaling.type"), &stype) &&
                  gguf_str_eq(stype, "linear");
    hp->rope_freq_scale = (linear && factor > 0.0f) ? 1.0f / factor : 1.0f;
    hp->sliding_window = opt_u32(&L, "attention.sliding_window", 0);
    hp->attn_softcap = opt_f32(&L, "attn_logit_softcapping", 0.0f);
    hp->final_softcap = opt_f32(&L, "final_logit_softcapping", 0.0f);
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim_k);
    if (m->arch->moe) {
        TRY(req_u32(&L, "expert_count", &hp->n_expert));
        TRY(req_u32(&L, "expert_used_count", &hp->n_expert_used));
        hp->n_ff = opt_u32(&L, "expert_feed_forward_length", hp->n_ff);
        if (hp->n_expert <= 0 || hp->n_expert > 1024 || hp->n_expert_used <= 0 ||
            hp->n_expert_used > hp->n_expert)
            return orc_fail(ORC_ERR_FORMAT, "implausible expert counts: %d used of %d",
                            hp->n_expert_used, hp->n_expert);
        hp->expert_norm_weights = true;
        bool nw;
        if (gguf_get_bool(m->gguf, akey(&L, "expert_weights_norm"), &nw))
            hp->expert_norm_weights = nw;
    }
    if (hp->n_ff <= 0 || hp->n_ff > (1 << 22))
        return orc_fail(ORC_ERR_FORMAT, "missing or implausible %s.feed_forward_length", m->arch_name);
    return ORC_OK;
}

static orc_status load_tensors(orc_model *m)
{
    const orc_arch *a = m->arch;
    orc_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, V = hp->n_vocab;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim_k;
    int64_t k_dim = (int64_t)hp->n_head_kv * hp->head_dim_k;
    int64_t v_dim = (int64_t)hp->n_head_kv * hp->head_dim_v;
    int64_t o_dim = (int64_t)hp->n_head * hp->head_dim_v;
    int64_t F = hp->n_ff;

    TRY(get_tensor(m, &m->tok_embd, true, E, V, 0, "token_embd.weight"));
    TRY(get_tensor(m, &m->output_norm, true, E, 0, 0, "output_norm.weight"));
    TRY(get_tensor(m, &m->output, false, E, V, 0, "output.weight"));
    if (!m->output)
        m->output = m->tok_embd; /* tied embeddings */
    const gguf_tensor *rf = NULL;
    TRY(get_tensor(m, &rf, false, hp->n_rot / 2, 0, 0, "rope_freqs.weight"));
    hp->rope_freqs = rf ? rf->data : NULL;

    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory for %d layers", hp->n_layer);
    /* Cross-layer KV sharing, declared by the model: entry i is -1 when layer i computes
     * its own K/V, else the earlier layer whose cache it reads (no K/V weights needed). */
    char key[160];
    snprintf(key, sizeof key, "%s.attention.shared_kv_layers", m->arch_name);
    const gguf_value *kv_share = gguf_find(m->gguf, key);
    if (kv_share) {
        gguf_vtype et = kv_share->type == GGUF_T_ARRAY ? kv_share->v.arr.elem : GGUF_T_COUNT;
        if (kv_share->type != GGUF_T_ARRAY || gguf_vtype_size(et) == 0 || et == GGUF_T_FLOAT32 ||
            et == GGUF_T_FLOAT64 || et == GGUF_T_BOOL || kv_share->v.arr.n != (uint64_t)hp->n_layer)
            return orc_fail(ORC_ERR_FORMAT, "%s must be an integer array with one entry per layer (%d)",
                            key, hp->n_layer);
    }
    for (int i = 0; i < hp->n_layer; i++) {
        orc_layer *l = &m->layers[i];
        TRY(get_tensor(m, &l->attn_norm, true, E, 0, 0, "blk.%d.attn_norm.weight", i));
        TRY(get_tensor(m, &l->wq, true, E, q_dim, 0, "blk.%d.attn_q.weight", i));
        l->kv_source = -1;
        if (kv_share) {
            int64_t src = gguf_arr_i64(kv_share, (uint64_t)i);
            if (src >= i || src < -1 || (src >= 0 && m->layers[src].kv_source >= 0))
                return orc_fail(ORC_ERR_FORMAT, "%s.attention.shared_kv_layers: layer %d cannot read "
                                "the KV of layer %lld (it must be an earlier layer with its own KV)",
                                m->arch_name, i, (long long)src);
            l->kv_source = (int32_t)src;
        }
        bool own_kv = l->kv_source < 0;
        TRY(get_tensor(m, &l->wk, own_kv, E, k_dim, 0, "blk.%d.attn_k.weight", i));
        TRY(get_tensor(m, &l->wv, own_kv, E, v_dim, 0, "blk.%d.attn_v.weight", i));
        TRY(get_tensor(m, &l->wo, true, o_dim, E, 0, "blk.%d.attn_output.weight", i));
        TRY(get_tensor(m, &l->bq, a->qkv_bias, q_dim, 0, 0, "blk.%d.attn_q.bias", i));
        TRY(get_tensor(m, &l->bk, a->qkv_bias && own_kv, k_dim, 0, 0, "blk.%d.attn_k.bias", i));
        TRY(get_tensor(m, &l->bv, a->qkv_bias && own_kv, v_dim, 0, 0, "blk.%d.attn_v.bias", i));
        TRY(get_tensor(m, &l->q_norm, a->qk_norm, hp->head_dim_k, 0, 0, "blk.%d.attn_q_norm.weight", i));
        TRY(get_tensor(m, &l->k_norm, a->qk_norm && own_kv, hp->head_dim_k, 0, 0, "blk.%d.attn_k_norm.weight", i));
        TRY(get_tensor(m, &l->attn_post_norm, a->post_norms, E, 0, 0, "blk.%d.post_attention_norm.weight", i));
        TRY(get_tensor(m, &l->ffn_norm, true, E, 0, 0, "blk.%d.ffn_norm.weight", i));
        TRY(get_tensor(m, &l->ffn_post_norm, a->post_norms, E, 0, 0, "blk.%d.post_ffw_norm.weight", i));
        if (a->moe) {
            int64_t X = hp->n_expert;
            TRY(get_tensor(m, &l->ffn_gate_inp, true, E, X, 0, "blk.%d.ffn_gate_inp.weight", i));
            TRY(get_tensor(m, &l->ffn_gate_exps, true, E, F, X, "blk.%d.ffn_gate_exps.weight", i));
            TRY(get_tensor(m, &l->ffn_up_exps, true, E, F, X, "blk.%d.ffn_up_exps.weight", i));
            TRY(get_tensor(m, &l->ffn_down_exps, true, F, E, X, "blk.%d.ffn_down_exps.weight", i));
        } else {
            TRY(get_tensor(m, &l->ffn_gate, true, E, F, 0, "blk.%d.ffn_gate.weight", i));
            TRY(get_tensor(m, &l->ffn_up, true, E, F, 0, "blk.%d.ffn_up.weight", i));
            TRY(get_tensor(m, &l->ffn_down, true, F, E, 0, "blk.%d.ffn_down.weight", i));
        }
        l->rope_base = hp->rope_base;
        if (hp->sliding_window > 0) {
            if (a->swa_alternate)
                l->sliding = i % 2 == 0;
            else if (a->swa_period > 0)
                l->sliding = i % a->swa_period < a->swa_period - 1;
            else
                l->sliding = true; /* Mistral-style: every layer */
        }
        if (l->sliding && a->swa_period > 0)
            l->rope_base = hp->rope_base_local;
        if (l->kv_source >= 0 && m->layers[l->kv_source].sliding != l->sliding)
            return orc_fail(ORC_ERR_FORMAT, "layer %d shares the KV of layer %d but only one of them "
                            "uses the sliding window", i, l->kv_source);
    }
    return ORC_OK;
}

/* Load-time repacking: the matrices the forward pass multiplies get the interleaved
 * layouts of quant.h (ORC_QUANT_REPACKED) when their type has one, and every pointer to
 * such a tensor is redirected to a copy of its entry that carries the new type id. For a
 * mapped file the repacked rows go to one anonymous region with transparent huge pages
 * (decode streams every weight once per token: 2 MiB pages spare the TLB misses and let
 * the hardware prefetchers run across what would be 4 KiB page boundaries), and the file
 * pages they came from are dropped, so the weights stay resident once. Otherwise (a file
 * read into memory, or no region) the rows are rewritten in place. The work runs on the
 * model's threads, in chunks of rows. */
static const gguf_tensor *repack_one(orc_model *m, const gguf_tensor *t)
{
    if (!t || t->n_dims < 2)
        return t;
    for (int64_t i = 0; i < m->n_wcopy; i++)
        if (m->wcopy[i].data == t->data)
            return &m->wcopy[i];
    if (t->type != ORC_DT_Q4_0 && t->type != ORC_DT_Q8_0 && t->type != ORC_DT_Q4_K &&
        t->type != ORC_DT_Q6_K)
        return t;
    if (!orc_dtype_row_size(t->type, t->ne[0]))
        return t;
    gguf_tensor *c = &m->wcopy[m->n_wcopy++];
    *c = *t;
    c->type = t->type | ORC_QUANT_REPACKED; /* the rows are rewritten by repack_rows */
    return c;
}

#define REPACK_CHUNK 256 /* rows */
#define HUGE_PAGE ((size_t)2 << 20)

typedef struct {
    orc_model *m;
    const uint8_t **src;  /* per copy: where its rows are read from (== data: in place) */
    int64_t n_units;      /* chunks over all copies */
    _Atomic int64_t next;
} repack_job;

static void *repack_rows(void *arg)
{
    repack_job *j = arg;
    for (;;) {
        int64_t u = atomic_fetch_add(&j->next, 1);
        if (u >= j->n_units)
            return NULL;
        for (int64_t i = 0; i < j->m->n_wcopy; i++) {
            gguf_tensor *c = &j->m->wcopy[i];
            int64_t rows = c->ne[1] * c->ne[2] * c->ne[3];
            int64_t chunks = (rows + REPACK_CHUNK - 1) / REPACK_CHUNK;
            if (u >= chunks) {
                u -= chunks;
                continue;
            }
            uint32_t base = c->type & 0xFF;
            size_t rs = orc_dtype_row_size(base, c->ne[0]);
            int64_t r0 = u * REPACK_CHUNK, nr = rows - r0 < REPACK_CHUNK ? rows - r0 : REPACK_CHUNK;
            uint8_t *dst = (uint8_t *)(uintptr_t)c->data + (size_t)r0 * rs;
            const uint8_t *src = j->src[i] + (size_t)r0 * rs;
            if (src != dst) {
                memcpy(dst, src, (size_t)nr * rs);
                /* the file pages leave as their rows are copied, so the peak resident set
                 * does not hold the weights twice */
                gguf_data_drop(j->m->gguf, src, (size_t)nr * rs);
            }
            orc_quant_repack(base, dst, nr, rs, c->ne[0]);
            break;
        }
    }
}

/* Where the repacked rows go: one anonymous region for all copies (mapped files), or the
 * tensors' own pages made writable. False when neither is possible (nothing repacked). */
static bool repack_place(orc_model *m, const uint8_t **src)
{
    size_t total = 0;
    for (int64_t i = 0; i < m->n_wcopy; i++) {
        src[i] = m->wcopy[i].data;
        size_t nb = (m->wcopy[i].nbytes + 63) & ~(size_t)63;
        if (nb < m->wcopy[i].nbytes || total > SIZE_MAX - nb - 2 * HUGE_PAGE)
            return false;
        total += nb;
    }
    if (gguf_is_mapped(m->gguf) && total > 0) {
        size_t size = (total + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
        uint8_t *r = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r != MAP_FAILED) {
            /* align to a huge page and give back the slack at both ends */
            uint8_t *a = (uint8_t *)(((uintptr_t)r + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
            if (a > r)
                munmap(r, (size_t)(a - r));
            if (a + size < r + size + HUGE_PAGE)
                munmap(a + size, (size_t)(r + size + HUGE_PAGE - (a + size)));
#ifdef MADV_HUGEPAGE
            (void)madvise(a, size, MADV_HUGEPAGE);
#endif
            m->wregion = a;
            m->wregion_size = size;
            size_t off = 0;
            for (int64_t i = 0; i < m->n_wcopy; i++) {
                m->wcopy[i].data = a + off;
                off += (m->wcopy[i].nbytes + 63) & ~(size_t)63;
            }
            return true;
        }
    }
    for (int64_t i = 0; i < m->n_wcopy; i++) {
        void *d = gguf_tensor_data_writable(m->gguf, &m->wcopy[i]);
        if (!d)
            return false;
        m->wcopy[i].data = d;
    }
    return true;
}

static orc_status repack_weights(orc_model *m, int n_threads)
{
    m->wcopy = calloc((size_t)gguf_n_tensors(m->gguf) + 1, sizeof *m->wcopy);
    if (!m->wcopy)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    /* the entries to redirect, and their copies: restored when nothing can be repacked */
    const gguf_tensor *embd = m->tok_embd, *out0 = m->output;
    m->output = repack_one(m, m->output);
    if (m->output != out0 && out0->data == embd->data)
        m->tok_embd = m->output; /* tied: the embedding rows are read through the new type */
    for (int i = 0; i < m->hp.n_layer; i++) {
        orc_layer *l = &m->layers[i];
        const gguf_tensor **w[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->ffn_gate, &l->ffn_up,
                                   &l->ffn_down, &l->ffn_gate_exps, &l->ffn_up_exps, &l->ffn_down_exps};
        for (size_t k = 0; k < sizeof w / sizeof w[0]; k++)
            *w[k] = repack_one(m, *w[k]);
    }
    const uint8_t **src = calloc((size_t)m->n_wcopy + 1, sizeof *src);
    if (!src)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    if (!repack_place(m, src)) {
        free(src);
        return orc_fail(ORC_ERR_NO_MEMORY, "cannot make the weights writable for repacking "
                        "(load with no_repack / ORC_NO_REPACK=1)");
    }
    repack_job j = {.m = m, .src = src};
    for (int64_t i = 0; i < m->n_wcopy; i++) {
        const gguf_tensor *c = &m->wcopy[i];
        j.n_units += (c->ne[1] * c->ne[2] * c->ne[3] + REPACK_CHUNK - 1) / REPACK_CHUNK;
    }
    atomic_init(&j.next, 0);
    pthread_t th[15];
    int nt = n_threads > 16 ? 16 : n_threads, started = 0;
    for (int i = 1; i < nt; i++)
        if (pthread_create(&th[started], NULL, repack_rows, &j) == 0)
            started++;
    repack_rows(&j); /* also alone, when no thread could be started */
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (m->wregion) {
        /* the file's pages of the moved tensors are not read again */
        for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
            const gguf_tensor *t = gguf_tensor_at(m->gguf, i);
            for (int64_t k = 0; k < m->n_wcopy; k++)
                if (src[k] == t->data) {
                    gguf_data_drop(m->gguf, t->data, t->nbytes);
                    break;
                }
        }
    }
    free(src);
    return ORC_OK;
}

orc_model_params orc_model_default_params(void)
{
    orc_model_params p = {.n_threads = 0, .use_mmap = true, .progress = NULL, .progress_user = NULL};
    return p;
}

orc_status orc_model_load(const char *path, const orc_model_params *params, orc_model **out)
{
    if (!path || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_model_load: path and out are required");
    *out = NULL;
    orc_model_params p = params ? *params : orc_model_default_params();
    char err[1024];
    orc_model *m = calloc(1, sizeof *m);
    if (!m)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    orc_status st = ORC_OK;
    if (p.progress && !p.progress(0.0f, p.progress_user)) {
        st = orc_fail(ORC_ERR_CANCELLED, "load cancelled by the progress callback");
        goto fail;
    }
    m->gguf = gguf_open(path, p.use_mmap, err, sizeof err);
    if (!m->gguf) {
        FILE *f = fopen(path, "rb");
        st = f ? ORC_ERR_FORMAT : ORC_ERR_IO;
        if (f)
            fclose(f);
        orc_fail(st, "%s", err);
        goto fail;
    }
    gguf_str s;
    if (p.vocab_only && !gguf_find(m->gguf, "general.architecture")) {
        s.p = "unknown";
        s.n = 7;
    } else if (!gguf_get_str(m->gguf, "general.architecture", &s) || s.n == 0 || s.n >= sizeof m->arch_name) {
        st = orc_fail(ORC_ERR_FORMAT, "%s: missing or invalid general.architecture", path);
        goto fail;
    }
    memcpy(m->arch_name, s.p, (size_t)s.n);
    if (memchr(m->arch_name, 0, (size_t)s.n)) {
        st = orc_fail(ORC_ERR_FORMAT, "%s: general.architecture contains a NUL byte", path);
        goto fail;
    }
    if (gguf_get_str(m->gguf, "general.name", &s)) {
        size_t n = s.n < sizeof m->name - 1 ? (size_t)s.n : sizeof m->name - 1;
        memcpy(m->name, s.p, n);
    }
    for (size_t i = 0; i < sizeof arch_table / sizeof arch_table[0]; i++)
        if (strcmp(arch_table[i].name, m->arch_name) == 0)
            m->arch = &arch_table[i];
    if (!m->arch && !p.vocab_only) {
        st = orc_fail(ORC_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (supported: llama, "
                      "mistral, qwen2, qwen3, qwen3moe, gemma2, gemma3)", path, m->arch_name);
        goto fail;
    }
    m->vocab = orc_vocab_load(m->gguf, err, sizeof err);
    if (!m->vocab) {
        st = orc_fail(ORC_ERR_FORMAT, "%s: %s", path, err);
        goto fail;
    }
    m->hp.n_vocab = orc_vocab_n_tokens(m->vocab);
    m->vocab_only = p.vocab_only;
    const char *nr = getenv("ORC_NO_REPACK");
    bool repack = !p.no_repack && !(nr && *nr && strcmp(nr, "0") != 0);
    if (!p.vocab_only && ((st = load_hparams(m)) != ORC_OK || (st = load_tensors(m)) != ORC_OK ||
                          (repack && (st = repack_weights(m, p.n_threads > 0 ? p.n_threads : orc_n_cpus())) != ORC_OK))) {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s", orc_last_error());
        orc_fail(st, "%s: %s", path, tmp);
        goto fail;
    }
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->gguf, i);
        m->n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    m->n_threads = p.n_threads > 0 ? p.n_threads : orc_n_cpus();
    if (p.progress && !p.progress(1.0f, p.progress_user)) {
        st = orc_fail(ORC_ERR_CANCELLED, "load cancelled by the progress callback");
        goto fail;
    }
    *out = m;
    return ORC_OK;
fail:
    orc_model_free(m);
    return st;
}

void orc_model_free(orc_model *m)
{
    if (!m)
        return;
    grammar_vocab_free(m->gvocab);
    orc_vocab_free(m->vocab);
    gguf_close(m->gguf);
    free(m->layers);
    free(m->wcopy);
    if (m->wregion)
        munmap(m->wregion, m->wregion_size);
    free(m);
}

const char *orc_model_arch(const orc_model *m) { return m ? m->arch_name : ""; }
const char *orc_model_name(const orc_model *m) { return m ? m->name : ""; }
int32_t orc_model_n_ctx_train(const orc_model *m) { return m ? m->hp.n_ctx_train : 0; }
int32_t orc_model_n_vocab(const orc_model *m) { return m ? m->hp.n_vocab : 0; }
int32_t orc_model_n_layer(const orc_model *m) { return m ? m->hp.n_layer : 0; }
int32_t orc_model_n_embd(const orc_model *m) { return m ? m->hp.n_embd : 0; }
int32_t orc_model_n_head(const orc_model *m) { return m ? m->hp.n_head : 0; }
int32_t orc_model_n_head_kv(const orc_model *m) { return m ? m->hp.n_head_kv : 0; }
int32_t orc_model_n_ff(const orc_model *m) { return m ? m->hp.n_ff : 0; }
uint64_t orc_model_n_params(const orc_model *m) { return m ? m->n_params : 0; }
uint64_t orc_model_file_size(const orc_model *m) { return m ? gguf_file_size(m->gguf) : 0; }
uint32_t orc_model_gguf_version(const orc_model *m) { return m ? gguf_version(m->gguf) : 0; }

int32_t orc_model_meta_count(const orc_model *m)
{
    return m ? (int32_t)gguf_n_kv(m->gguf) : 0;
}

const char *orc_model_meta_key(const orc_model *m, int32_t i)
{
    const gguf_kv *kv = m ? gguf_kv_at(m->gguf, i) : NULL;
    return kv ? kv->key : NULL;
}

const char *orc_model_meta_type(const orc_model *m, int32_t i)
{
    const gguf_kv *kv = m ? gguf_kv_at(m->gguf, i) : NULL;
    if (!kv)
        return NULL;
    if (kv->val.type != GGUF_T_ARRAY)
        return gguf_vtype_name(kv->val.type);
    static const char *arr_names[GGUF_T_COUNT] = {"[u8]", "[i8]", "[u16]", "[i16]", "[u32]",
                                                  "[i32]", "[f32]", "[bool]", "[string]", "[array]",
                                                  "[u64]", "[i64]", "[f64]"};
    return arr_names[kv->val.v.arr.elem];
}

/* A growing text buffer that counts what it could not store. */
typedef struct {
    char *buf;
    size_t cap, len;
} textbuf;

static void tb_put(textbuf *tb, const char *s, size_t n)
{
    if (tb->len < tb->cap) {
        size_t room = tb->cap - tb->len;
        memcpy(tb->buf + tb->len, s, n < room ? n : room);
    }
    tb->len += n;
}

static void tb_printf(textbuf *tb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(textbuf *tb, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        tb_put(tb, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void tb_json_str(textbuf *tb, gguf_str s)
{
    tb_put(tb, "\"", 1);
    for (uint64_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            tb_put(tb, e, 2);
        } else if (c < 0x20) {
            tb_printf(tb, "\\u%04x", c);
        } else {
            tb_put(tb, (const char *)&s.p[i], 1);
        }
    }
    tb_put(tb, "\"", 1);
}

static void tb_scalar(textbuf *tb, const gguf_value *v)
{
    switch (v->type) {
    case GGUF_T_UINT8: case GGUF_T_UINT16: case GGUF_T_UINT32: case GGUF_T_UINT64:
        tb_printf(tb, "%" PRIu64, v->v.u64);
        break;
    case GGUF_T_INT8: case GGUF_T_INT16: case GGUF_T_INT32: case GGUF_T_INT64:
        tb_printf(tb, "%" PRId64, v->v.i64);
        break;
    case GGUF_T_FLOAT32: case GGUF_T_FLOAT64:
        tb_printf(tb, "%.9g", v->v.f64);
        break;
    case GGUF_T_BOOL:
        tb_printf(tb, "%s", v->v.b ? "true" : "false");
        break;
    default:
        break;
    }
}

#define META_ARRAY_SHOWN 16

static void tb_value(textbuf *tb, const gguf_value *v, bool top)
{
    if (v->type == GGUF_T_STRING) {
        if (top)
            tb_put(tb, v->v.str.p, (size_t)v->v.str.n);
        else
            tb_json_str(tb, v->v.str);
        return;
    }
    if (v->type != GGUF_T_ARRAY) {
        tb_scalar(tb, v);
        return;
    }
    tb_put(tb, "[", 1);
    uint64_t n = v->v.arr.n;
    for (uint64_t i = 0; i < n && i < META_ARRAY_SHOWN; i++) {
        if (i)
            tb_put(tb, ", ", 2);
        if (v->v.arr.elem == GGUF_T_STRING) {
            tb_json_str(tb, v->v.arr.strs[i]);
        } else if (v->v.arr.elem == GGUF_T_ARRAY) {
            tb_value(tb, &v->v.arr.vals[i], false);
        } else {
            gguf_value e = {0};
            size_t sz = gguf_vtype_size(v->v.arr.elem);
            e.type = v->v.arr.elem;
            if (e.type == GGUF_T_FLOAT32 || e.type == GGUF_T_FLOAT64)
                e.v.f64 = gguf_arr_f32(v, i);
            else if (e.type == GGUF_T_BOOL)
                e.v.b = v->v.arr.raw[i * sz] != 0;
            else
                e.v.i64 = gguf_arr_i64(v, i);
            if (e.type == GGUF_T_UINT64) {
                uint64_t u;
                memcpy(&u, v->v.arr.raw + i * sz, 8);
                e.v.u64 = u;
            }
            tb_scalar(tb, &e);
        }
    }
    if (n > META_ARRAY_SHOWN)
        tb_printf(tb, ", ... (%" PRIu64 " total)", n);
    tb_put(tb, "]", 1);
}

int32_t orc_model_meta_value(const orc_model *m, const char *key, char *buf, size_t cap)
{
    if (!m || !key)
        return -1;
    const gguf_value *v = gguf_find(m->gguf, key);
    if (!v)
        return -1;
    textbuf tb = {.buf = buf, .cap = cap ? cap - 1 : 0};
    tb_value(&tb, v, true);
    if (cap)
        buf[tb.len < cap - 1 ? tb.len : cap - 1] = 0;
    return tb.len > INT32_MAX ? INT32_MAX : (int32_t)tb.len;
}

int32_t orc_model_n_tensors(const orc_model *m)
{
    return m ? (int32_t)gguf_n_tensors(m->gguf) : 0;
}

orc_status orc_model_tensor(const orc_model *m, int32_t i, orc_tensor_info *out)
{
    const gguf_tensor *t = m ? gguf_tensor_at(m->gguf, i) : NULL;
    if (!t || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "tensor index %d out of range", i);
    out->name = t->name;
    out->type = orc_dtype_name(t->type);
    out->n_dims = t->n_dims;
    memcpy(out->ne, t->ne, sizeof out->ne);
    out->offset = gguf_data_offset(m->gguf) + t->offset;
    out->n_bytes = t->nbytes;
    return ORC_OK;
}

/* ---- tokens: the public API over the model's vocabulary ---- */

int32_t orc_tokenize(const orc_model *m, const char *text, size_t len, orc_token *tokens,
                     int32_t cap, bool add_special, bool parse_special)
{
    if (!m || (!text && len))
        return 0;
    return orc_vocab_tokenize(m->vocab, text ? text : "", len, tokens, cap, add_special, parse_special);
}

int32_t orc_detokenize(const orc_model *m, const orc_token *tokens, int32_t n, char *buf,
                       int32_t cap, bool remove_special, bool unparse_special)
{
    if (!m || n < 0)
        return 0;
    return orc_vocab_detokenize(m->vocab, tokens, n, buf, cap, remove_special, unparse_special);
}

int32_t orc_token_to_piece(const orc_model *m, orc_token token, char *buf, int32_t cap, bool special)
{
    if (!m)
        return 0;
    return orc_vocab_piece(m->vocab, token, buf, cap, special);
}

const char *orc_token_text(const orc_model *m, orc_token t) { return m ? orc_vocab_text(m->vocab, t) : NULL; }
float orc_token_score(const orc_model *m, orc_token t) { return m ? orc_vocab_score(m->vocab, t) : 0.0f; }
uint32_t orc_token_attr(const orc_model *m, orc_token t) { return m ? orc_vocab_attr(m->vocab, t) & 0x3Fu : 0; }
bool orc_token_is_eog(const orc_model *m, orc_token t) { return m && orc_vocab_is_eog(m->vocab, t); }
orc_token orc_token_bos(const orc_model *m) { return m ? orc_vocab_bos(m->vocab) : -1; }
orc_token orc_token_eos(const orc_model *m) { return m ? orc_vocab_eos(m->vocab) : -1; }
orc_token orc_token_eot(const orc_model *m) { return m ? orc_vocab_eot(m->vocab) : -1; }
orc_token orc_token_pad(const orc_model *m) { return m ? orc_vocab_pad(m->vocab) : -1; }
orc_token orc_token_unk(const orc_model *m) { return m ? orc_vocab_unk(m->vocab) : -1; }
bool orc_vocab_add_bos(const orc_model *m) { return m && orc_vocab_get_add_bos(m->vocab); }
bool orc_vocab_add_eos(const orc_model *m) { return m && orc_vocab_get_add_eos(m->vocab); }

/* ---- streaming detokenizer ---- */

struct orc_detok_stream {
    const orc_model *m;
    char *buf;     /* pending bytes followed by the text handed out */
    size_t cap;
    size_t pending;
};

orc_detok_stream *orc_detok_stream_new(const orc_model *m)
{
    if (!m) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_detok_stream_new: model is NULL");
        return NULL;
    }
    orc_detok_stream *s = calloc(1, sizeof *s);
    if (!s) {
        orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        return NULL;
    }
    s->m = m;
    return s;
}

static bool stream_reserve(orc_detok_stream *s, size_t need)
{
    if (need <= s->cap)
        return true;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < need)
        cap *= 2;
    char *b = realloc(s->buf, cap);
    if (!b)
        return false;
    s->buf = b;
    s->cap = cap;
    return true;
}

/* Length of the longest prefix of b[0..n) that ends on a character boundary: a trailing
 * lead byte with fewer continuation bytes than it announces is held back. Invalid bytes
 * are passed through (they will never complete). */
static size_t utf8_complete_prefix(const unsigned char *b, size_t n)
{
    size_t i = n;
    int back = 0;
    while (i > 0 && back < 4) {
        unsigned char c = b[i - 1];
        if ((c & 0xC0) != 0x80) {
            int want = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
            if (c >= 0xF8)
                want = 1;
            return (back + 1 < want) ? i - 1 : n;
        }
        i--;
        back++;
    }
    return n;
}

orc_status orc_detok_stream_push(orc_detok_stream *s, orc_token token, const char **out, size_t *out_len)
{
    if (!s || !out || !out_len)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_detok_stream_push: NULL argument");
    char piece[256];
    int32_t n = orc_vocab_piece(s->m->vocab, token, piece, sizeof piece, false);
    char *big = NULL;
    if (n < 0) {
        big = malloc((size_t)-n);
        if (!big)
            return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        n = orc_vocab_piece(s->m->vocab, token, big, -n, false);
    }
    if (!stream_reserve(s, (s->pending + (size_t)(n > 0 ? n : 0)) * 2 + 8)) {
        free(big);
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    }
    if (n > 0)
        memcpy(s->buf + s->pending, big ? big : piece, (size_t)n);
    free(big);
    size_t total = s->pending + (size_t)(n > 0 ? n : 0);
    size_t ready = utf8_complete_prefix((const unsigned char *)s->buf, total);
    /* hand out the ready part from the upper half; keep the rest at the front */
    char *outp = s->buf + total;
    memcpy(outp, s->buf, ready);
    outp[ready] = 0;
    memmove(s->buf, s->buf + ready, total - ready);
    s->pending = total - ready;
    *out = outp;
    *out_len = ready;
    return ORC_OK;
}

orc_status orc_detok_stream_flush(orc_detok_stream *s, const char **out, size_t *out_len)
{
    if (!s || !out || !out_len)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_detok_stream_flush: NULL argument");
    if (!stream_reserve(s, s->pending * 2 + 8))
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    char *outp = s->buf + s->pending;
    memcpy(outp, s->buf, s->pending);
    outp[s->pending] = 0;
    *out = outp;
    *out_len = s->pending;
    s->pending = 0;
    return ORC_OK;
}

void orc_detok_stream_free(orc_detok_stream *s)
{
    if (!s)
        return;
    free(s->buf);
    free(s);
}
