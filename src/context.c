/* context.c - an evaluation context: the F16 KV cache, scratch buffers sized once for
 * a batch, and the transformer forward pass every supported family shares (the family's
 * orc_arch flags switch on biases, Q/K norms, post-norms, soft-capping, sliding windows
 * and mixture-of-experts FFNs). Matrix products go through quant.h on the thread pool. */
#include "model.h"

#include "dtype.h"
#include "quant.h"
#include "threadpool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

struct orc_context {
    orc_model *m;
    tp_pool *tp;
    int32_t n_ctx, n_batch, n_past;
    int32_t kv_dim_k, kv_dim_v;
    uint16_t *kc, *vc;          /* (n_layer, n_ctx, kv_dim) F16 */
    float *inv_freq_global;     /* (n_rot/2) */
    float *inv_freq_local;      /* (n_rot/2) */
    /* scratch, (n_batch, width) each */
    float *x, *xn, *q, *k, *v, *att, *tmp, *ffa, *ffb;
    float *moe_in, *moe_out, *router;   /* MoE gather/scatter buffers */
    int32_t *moe_sel, *moe_rows;
    float *moe_w;
    void *act;
    size_t act_row_max;
    float *scores;              /* (n_threads, n_ctx) */
    float *logits;              /* (n_logits, n_vocab) */
    size_t logits_cap;
    int32_t n_logits;
    bool logits_all;
};

/* ---- small vector helpers ---- */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * (w ? w[i] : 1.0f);
}

static float gelu_tanh(float x)
{
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

static float silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* F16 -> F32 for n values, with F16C when the CPU has it. */
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint16_t *src, float *dst, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = orc_f16_to_f32(src[i]);
}

__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(const float *src, uint16_t *dst, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), 0));
    for (; i < n; i++)
        dst[i] = orc_f32_to_f16(src[i]);
}
#endif

static int has_f16c = -1;

static void f16_to_f32(const uint16_t *src, float *dst, int n)
{
#if defined(__x86_64__)
    if (has_f16c) {
        f16_to_f32_f16c(src, dst, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        dst[i] = orc_f16_to_f32(src[i]);
}

static void f32_to_f16(const float *src, uint16_t *dst, int n)
{
#if defined(__x86_64__)
    if (has_f16c) {
        f32_to_f16_f16c(src, dst, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        dst[i] = orc_f32_to_f16(src[i]);
}

/* ---- matrix products on the thread pool ---- */

/* Below this many multiply-adds a product is not worth splitting across threads. */
#define MIN_PARALLEL_MACS (64.0 * 1024)

typedef struct {
    const gguf_tensor *w;
    const uint8_t *wdata;  /* first row used (an expert slice for MoE) */
    int64_t rows;
    const void *act;
    size_t act_stride;
    int n_tok;
    float *y;
    int64_t ldy;
} mm_job;

static void mm_worker(void *arg, int ith, int nth)
{
    mm_job *j = arg;
    long lo, hi;
    tp_split((long)j->rows, ith, nth, 16, &lo, &hi);
    if (lo < hi)
        orc_matmul(j->w->type, j->wdata, orc_dtype_row_size(j->w->type, j->w->ne[0]), j->w->ne[0],
                   j->act, j->act_stride, j->n_tok, j->y, j->ldy, lo, hi);
}

typedef struct {
    uint32_t type;
    const float *x;
    int64_t n;
    int64_t ldx;
    void *act;
    size_t stride;
    int n_tok;
} act_job;

static void act_worker(void *arg, int ith, int nth)
{
    act_job *j = arg;
    long lo, hi;
    tp_split(j->n_tok, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++)
        orc_act_convert(j->type, j->x + t * j->ldx, (uint8_t *)j->act + t * j->stride, j->n);
}

/* y (n_tok, rows) = x (n_tok, w.ne[0], stride ldx) . W^T, for expert `expert` of a 3-D
 * weight (or the whole 2-D weight when expert < 0). */
static void matmul(orc_context *c, const gguf_tensor *w, int expert, const float *x, int64_t ldx,
                   int n_tok, float *y)
{
    int64_t n = w->ne[0], rows = w->ne[1];
    size_t stride = orc_act_row_size(w->type, n);
    act_job aj = {.type = w->type, .x = x, .n = n, .ldx = ldx, .act = c->act, .stride = stride,
                  .n_tok = n_tok};
    if (n_tok >= 4)
        tp_run(c->tp, act_worker, &aj);
    else
        act_worker(&aj, 0, 1);
    const uint8_t *wdata = w->data;
    if (expert >= 0)
        wdata += (size_t)expert * (size_t)rows * orc_dtype_row_size(w->type, n);
    mm_job j = {.w = w, .wdata = wdata, .rows = rows, .act = c->act, .act_stride = stride,
                .n_tok = n_tok, .y = y, .ldy = rows};
    /* waking the pool costs microseconds: small products run on the calling thread */
    if ((double)rows * (double)n * n_tok < MIN_PARALLEL_MACS)
        mm_worker(&j, 0, 1);
    else
        tp_run(c->tp, mm_worker, &j);
}

/* ---- attention ---- */

typedef struct {
    orc_context *c;
    int layer;
    int n_tok;
    bool sliding;
} attn_job;

static void attn_worker(void *arg, int ith, int nth)
{
    attn_job *j = arg;
    orc_context *c = j->c;
    const orc_hparams *hp = &c->m->hp;
    int hdk = hp->head_dim_k, hdv = hp->head_dim_v;
    int group = hp->n_head / hp->n_head_kv;
    float *scores = c->scores + (size_t)ith * c->n_ctx;
    float kbuf[1024], vbuf[1024];
    const uint16_t *kc = c->kc + (size_t)j->layer * c->n_ctx * c->kv_dim_k;
    const uint16_t *vc = c->vc + (size_t)j->layer * c->n_ctx * c->kv_dim_v;
    long lo, hi;
    tp_split((long)j->n_tok * hp->n_head, ith, nth, 1, &lo, &hi);
    for (long task = lo; task < hi; task++) {
        int t = (int)(task / hp->n_head), h = (int)(task % hp->n_head);
        int kvh = h / group;
        int pos = c->n_past + t;
        int start = 0;
        if (j->sliding && hp->sliding_window > 0 && pos - hp->sliding_window + 1 > 0)
            start = pos - hp->sliding_window + 1;
        const float *q = c->q + (size_t)t * hp->n_head * hdk + (size_t)h * hdk;
        float maxs = -INFINITY;
        for (int p = start; p <= pos; p++) {
            f16_to_f32(kc + (size_t)p * c->kv_dim_k + (size_t)kvh * hdk, kbuf, hdk);
            float s = 0.0f;
            for (int d = 0; d < hdk; d++)
                s += q[d] * kbuf[d];
            s *= hp->attn_scale;
            if (hp->attn_softcap > 0.0f)
                s = tanhf(s / hp->attn_softcap) * hp->attn_softcap;
            scores[p] = s;
            if (s > maxs)
                maxs = s;
        }
        double sum = 0.0;
        for (int p = start; p <= pos; p++) {
            scores[p] = expf(scores[p] - maxs);
            sum += scores[p];
        }
        float inv = (float)(1.0 / sum);
        float *out = c->att + (size_t)t * hp->n_head * hdv + (size_t)h * hdv;
        memset(out, 0, (size_t)hdv * sizeof(float));
        for (int p = start; p <= pos; p++) {
            f16_to_f32(vc + (size_t)p * c->kv_dim_v + (size_t)kvh * hdv, vbuf, hdv);
            float w = scores[p] * inv;
            for (int d = 0; d < hdv; d++)
                out[d] += w * vbuf[d];
        }
    }
}

/* ---- RoPE ---- */

static void rope(float *x, int n_heads, int head_dim, int n_rot, int pos, const float *inv_freq,
                 enum orc_rope_type type)
{
    int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        float theta = (float)pos * inv_freq[i];
        float cs = cosf(theta), sn = sinf(theta);
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)h * head_dim;
            int a = type == ORC_ROPE_NEOX ? i : 2 * i;
            int b = type == ORC_ROPE_NEOX ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * cs - x1 * sn;
            v[b] = x0 * sn + x1 * cs;
        }
    }
}

static void init_inv_freq(float *f, const orc_hparams *hp, float base, float freq_scale)
{
    int half = hp->n_rot / 2;
    for (int i = 0; i < half; i++) {
        float v = powf(base, -2.0f * (float)i / (float)hp->n_rot) * freq_scale;
        if (hp->rope_freqs)
            v /= hp->rope_freqs[i];
        f[i] = v;
    }
}

/* ---- context lifetime ---- */

orc_context_params orc_context_default_params(void)
{
    orc_context_params p = {.n_ctx = 0, .n_batch = 512, .n_threads = 0};
    return p;
}

static void *xcalloc(size_t n, size_t sz, bool *ok)
{
    size_t bytes;
    if (!orc_mul_ok(n ? n : 1, sz, &bytes)) {
        *ok = false;
        return NULL;
    }
    void *p = calloc(1, bytes);
    if (!p)
        *ok = false;
    return p;
}

orc_status orc_context_new(orc_model *m, const orc_context_params *params, orc_context **out)
{
    if (!m || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_context_new: model and out are required");
    *out = NULL;
    orc_context_params p = params ? *params : orc_context_default_params();
    const orc_hparams *hp = &m->hp;
    if (p.n_ctx < 0 || p.n_batch < 0 || p.n_threads < 0)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "context parameters must not be negative");
    if (has_f16c < 0) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        has_f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
        has_f16c = 0;
#endif
    }
    orc_context *c = calloc(1, sizeof *c);
    if (!c)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    c->m = m;
    c->n_ctx = p.n_ctx > 0 ? p.n_ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    if (c->n_ctx > (1 << 24)) {
        int32_t n_ctx = c->n_ctx;
        free(c);
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "context size %d is too large", n_ctx);
    }
    c->n_batch = p.n_batch > 0 ? p.n_batch : 512;
    if (c->n_batch > c->n_ctx)
        c->n_batch = c->n_ctx;
    int nt = p.n_threads > 0 ? p.n_threads : m->n_threads;
    c->kv_dim_k = hp->n_head_kv * hp->head_dim_k;
    c->kv_dim_v = hp->n_head_kv * hp->head_dim_v;
    if (hp->head_dim_k > 1024 || hp->head_dim_v > 1024) {
        free(c);
        return orc_fail(ORC_ERR_UNSUPPORTED, "head dimension above 1024 is not supported");
    }

    size_t B = (size_t)c->n_batch, E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    size_t qd = (size_t)hp->n_head * hp->head_dim_k, od = (size_t)hp->n_head * hp->head_dim_v;
    size_t kv_cells = (size_t)hp->n_layer * (size_t)c->n_ctx;
    bool ok = true;
    c->kc = xcalloc(kv_cells, (size_t)c->kv_dim_k * 2, &ok);
    c->vc = xcalloc(kv_cells, (size_t)c->kv_dim_v * 2, &ok);
    c->inv_freq_global = xcalloc((size_t)hp->n_rot / 2, sizeof(float), &ok);
    c->inv_freq_local = xcalloc((size_t)hp->n_rot / 2, sizeof(float), &ok);
    c->x = xcalloc(B * E, sizeof(float), &ok);
    c->xn = xcalloc(B * E, sizeof(float), &ok);
    c->q = xcalloc(B * qd, sizeof(float), &ok);
    c->k = xcalloc(B * (size_t)c->kv_dim_k, sizeof(float), &ok);
    c->v = xcalloc(B * (size_t)c->kv_dim_v, sizeof(float), &ok);
    c->att = xcalloc(B * od, sizeof(float), &ok);
    c->tmp = xcalloc(B * E, sizeof(float), &ok);
    c->ffa = xcalloc(B * F, sizeof(float), &ok);
    c->ffb = xcalloc(B * F, sizeof(float), &ok);
    if (m->arch->moe) {
        size_t X = (size_t)hp->n_expert, K = (size_t)hp->n_expert_used;
        c->moe_in = xcalloc(B * E, sizeof(float), &ok);
        c->moe_out = xcalloc(B * E, sizeof(float), &ok);
        c->router = xcalloc(B * X, sizeof(float), &ok);
        c->moe_sel = xcalloc(B * K, sizeof(int32_t), &ok);
        c->moe_w = xcalloc(B * K, sizeof(float), &ok);
        c->moe_rows = xcalloc(B, sizeof(int32_t), &ok);
    }
    c->scores = xcalloc((size_t)nt * (size_t)c->n_ctx, sizeof(float), &ok);
    /* the activation buffer must hold a batch converted for any weight in the model */
    size_t widest = E > F ? E : F;
    if (od > widest)
        widest = od;
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->gguf, i);
        if (t->n_dims >= 2 && orc_quant_supported(t->type)) {
            size_t r = orc_act_row_size(t->type, t->ne[0]);
            if (r > c->act_row_max)
                c->act_row_max = r;
        }
    }
    if (c->act_row_max < widest * sizeof(float))
        c->act_row_max = widest * sizeof(float);
    c->act = xcalloc(B, c->act_row_max, &ok);
    c->tp = ok ? tp_new(nt) : NULL;
    if (!ok || !c->tp) {
        orc_context_free(c);
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory for a %d-token context (%zu MB KV cache)",
                        p.n_ctx > 0 ? p.n_ctx : c->n_ctx,
                        kv_cells * (size_t)(c->kv_dim_k + c->kv_dim_v) * 2 >> 20);
    }
    init_inv_freq(c->inv_freq_global, hp, hp->rope_base, hp->rope_freq_scale);
    init_inv_freq(c->inv_freq_local, hp, hp->rope_base_local, 1.0f);
    orc_log(ORC_LOG_INFO, "context: %d tokens, KV cache %zu MB (f16), batch %d, %d threads", c->n_ctx,
            kv_cells * (size_t)(c->kv_dim_k + c->kv_dim_v) * 2 >> 20, c->n_batch, nt);
    *out = c;
    return ORC_OK;
}

void orc_context_free(orc_context *c)
{
    if (!c)
        return;
    tp_free(c->tp);
    void *bufs[] = {c->kc, c->vc, c->inv_freq_global, c->inv_freq_local, c->x, c->xn, c->q, c->k,
                    c->v, c->att, c->tmp, c->ffa, c->ffb, c->moe_in, c->moe_out, c->router,
                    c->moe_sel, c->moe_w, c->moe_rows, c->act, c->scores, c->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(c);
}

int32_t orc_context_n_ctx(const orc_context *c) { return c ? c->n_ctx : 0; }
const orc_model *orc_context_model(const orc_context *c) { return c ? c->m : NULL; }
int32_t orc_context_n_past(const orc_context *c) { return c ? c->n_past : 0; }

void orc_context_clear(orc_context *c)
{
    if (c)
        c->n_past = 0;
}

orc_status orc_context_truncate(orc_context *c, int32_t n)
{
    if (!c || n < 0 || n > c->n_past)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "cannot truncate the context to %d tokens", n);
    c->n_past = n;
    return ORC_OK;
}

/* ---- the forward pass ---- */

static const float *fdata(const gguf_tensor *t)
{
    return t ? (const float *)t->data : NULL;
}

static void moe_ffn(orc_context *c, const orc_layer *l, int n)
{
    const orc_hparams *hp = &c->m->hp;
    int E = hp->n_embd, X = hp->n_expert, K = hp->n_expert_used;
    matmul(c, l->ffn_gate_inp, -1, c->xn, E, n, c->router);
    for (int t = 0; t < n; t++) {
        float *r = c->router + (size_t)t * X;
        float mx = -INFINITY, sum = 0.0f;
        for (int e = 0; e < X; e++)
            mx = r[e] > mx ? r[e] : mx;
        for (int e = 0; e < X; e++) {
            r[e] = expf(r[e] - mx);
            sum += r[e];
        }
        for (int e = 0; e < X; e++)
            r[e] /= sum;
        /* top-k by repeated selection (k is small) */
        float wsum = 0.0f;
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < X; e++) {
                bool taken = false;
                for (int j = 0; j < k; j++)
                    taken |= c->moe_sel[t * K + j] == e;
                if (!taken && (best < 0 || r[e] > r[best]))
                    best = e;
            }
            c->moe_sel[t * K + k] = best;
            c->moe_w[t * K + k] = r[best];
            wsum += r[best];
        }
        if (hp->expert_norm_weights && wsum > 0.0f)
            for (int k = 0; k < K; k++)
                c->moe_w[t * K + k] /= wsum;
    }
    memset(c->tmp, 0, (size_t)n * E * sizeof(float));
    int F = hp->n_ff;
    /* batched per expert: gather the tokens routed to e, run its FFN once, scatter-add */
    for (int e = 0; e < X; e++) {
        int cnt = 0;
        for (int t = 0; t < n; t++)
            for (int k = 0; k < K; k++)
                if (c->moe_sel[t * K + k] == e) {
                    c->moe_rows[cnt] = t * K + k;
                    memcpy(c->moe_in + (size_t)cnt * E, c->xn + (size_t)t * E, (size_t)E * sizeof(float));
                    cnt++;
                }
        if (!cnt)
            continue;
        matmul(c, l->ffn_gate_exps, e, c->moe_in, E, cnt, c->ffa);
        matmul(c, l->ffn_up_exps, e, c->moe_in, E, cnt, c->ffb);
        for (size_t i = 0; i < (size_t)cnt * F; i++)
            c->ffa[i] = silu(c->ffa[i]) * c->ffb[i];
        matmul(c, l->ffn_down_exps, e, c->ffa, F, cnt, c->moe_out);
        for (int i = 0; i < cnt; i++) {
            int t = c->moe_rows[i] / K;
            float w = c->moe_w[c->moe_rows[i]];
            float *dst = c->tmp + (size_t)t * E;
            const float *src = c->moe_out + (size_t)i * E;
            for (int d = 0; d < E; d++)
                dst[d] += w * src[d];
        }
    }
}

/* Evaluates n <= n_batch tokens at positions n_past.. and writes logits for the rows
 * flagged in want (or none). */
static void forward(orc_context *c, const orc_token *tok, int n, bool want_all, bool want_last,
                    float *logits_out)
{
    orc_model *m = c->m;
    const orc_hparams *hp = &m->hp;
    const orc_arch *a = m->arch;
    int E = hp->n_embd, F = hp->n_ff;
    int qd = hp->n_head * hp->head_dim_k, od = hp->n_head * hp->head_dim_v;
    int kd = c->kv_dim_k, vd = c->kv_dim_v;
    size_t erow = orc_dtype_row_size(m->tok_embd->type, E);

    for (int t = 0; t < n; t++) {
        float *x = c->x + (size_t)t * E;
        orc_dequant_row(m->tok_embd->type, (const uint8_t *)m->tok_embd->data + (size_t)tok[t] * erow, x, E);
        if (a->embd_scale) {
            float s = sqrtf((float)E);
            for (int i = 0; i < E; i++)
                x[i] *= s;
        }
    }

    for (int il = 0; il < hp->n_layer; il++) {
        const orc_layer *l = &m->layers[il];
        for (int t = 0; t < n; t++)
            rmsnorm(c->xn + (size_t)t * E, c->x + (size_t)t * E, fdata(l->attn_norm), E, hp->rms_eps);
        matmul(c, l->wq, -1, c->xn, E, n, c->q);
        matmul(c, l->wk, -1, c->xn, E, n, c->k);
        matmul(c, l->wv, -1, c->xn, E, n, c->v);
        const float *inv_freq = (l->sliding && a->swa_period > 0) ? c->inv_freq_local : c->inv_freq_global;
        for (int t = 0; t < n; t++) {
            float *q = c->q + (size_t)t * qd, *k = c->k + (size_t)t * kd, *v = c->v + (size_t)t * vd;
            if (l->bq) {
                for (int i = 0; i < qd; i++) q[i] += fdata(l->bq)[i];
                for (int i = 0; i < kd; i++) k[i] += fdata(l->bk)[i];
                for (int i = 0; i < vd; i++) v[i] += fdata(l->bv)[i];
            }
            if (l->q_norm) {
                for (int h = 0; h < hp->n_head; h++)
                    rmsnorm(q + (size_t)h * hp->head_dim_k, q + (size_t)h * hp->head_dim_k,
                            fdata(l->q_norm), hp->head_dim_k, hp->rms_eps);
                for (int h = 0; h < hp->n_head_kv; h++)
                    rmsnorm(k + (size_t)h * hp->head_dim_k, k + (size_t)h * hp->head_dim_k,
                            fdata(l->k_norm), hp->head_dim_k, hp->rms_eps);
            }
            int pos = c->n_past + t;
            rope(q, hp->n_head, hp->head_dim_k, hp->n_rot, pos, inv_freq, a->rope);
            rope(k, hp->n_head_kv, hp->head_dim_k, hp->n_rot, pos, inv_freq, a->rope);
            size_t cell = (size_t)il * c->n_ctx + (size_t)pos;
            f32_to_f16(k, c->kc + cell * kd, kd);
            f32_to_f16(v, c->vc + cell * vd, vd);
        }
        attn_job aj = {.c = c, .layer = il, .n_tok = n, .sliding = l->sliding};
        double attn_macs = (double)n * hp->n_head * (c->n_past + n) * (hp->head_dim_k + hp->head_dim_v);
        if (attn_macs < MIN_PARALLEL_MACS)
            attn_worker(&aj, 0, 1);
        else
            tp_run(c->tp, attn_worker, &aj);
        matmul(c, l->wo, -1, c->att, od, n, c->tmp);
        for (int t = 0; t < n; t++) {
            float *tmp = c->tmp + (size_t)t * E, *x = c->x + (size_t)t * E;
            if (l->attn_post_norm)
                rmsnorm(tmp, tmp, fdata(l->attn_post_norm), E, hp->rms_eps);
            for (int i = 0; i < E; i++)
                x[i] += tmp[i];
            rmsnorm(c->xn + (size_t)t * E, x, fdata(l->ffn_norm), E, hp->rms_eps);
        }
        if (a->moe) {
            moe_ffn(c, l, n);
        } else {
            matmul(c, l->ffn_gate, -1, c->xn, E, n, c->ffa);
            matmul(c, l->ffn_up, -1, c->xn, E, n, c->ffb);
            size_t tot = (size_t)n * F;
            if (a->act == ORC_ACT_GELU_TANH)
                for (size_t i = 0; i < tot; i++)
                    c->ffa[i] = gelu_tanh(c->ffa[i]) * c->ffb[i];
            else
                for (size_t i = 0; i < tot; i++)
                    c->ffa[i] = silu(c->ffa[i]) * c->ffb[i];
            matmul(c, l->ffn_down, -1, c->ffa, F, n, c->tmp);
        }
        for (int t = 0; t < n; t++) {
            float *tmp = c->tmp + (size_t)t * E, *x = c->x + (size_t)t * E;
            if (l->ffn_post_norm)
                rmsnorm(tmp, tmp, fdata(l->ffn_post_norm), E, hp->rms_eps);
            for (int i = 0; i < E; i++)
                x[i] += tmp[i];
        }
    }

    if (!want_all && !want_last)
        return;
    int first = want_all ? 0 : n - 1, cnt = n - first;
    for (int t = 0; t < cnt; t++)
        rmsnorm(c->xn + (size_t)t * E, c->x + (size_t)(first + t) * E, fdata(m->output_norm), E,
                hp->rms_eps);
    matmul(c, m->output, -1, c->xn, E, cnt, logits_out);
    if (hp->final_softcap > 0.0f) {
        size_t tot = (size_t)cnt * hp->n_vocab;
        float cap = hp->final_softcap;
        for (size_t i = 0; i < tot; i++)
            logits_out[i] = tanhf(logits_out[i] / cap) * cap;
    }
}

orc_status orc_eval(orc_context *c, const orc_token *tokens, int32_t n, bool all_logits)
{
    if (!c || (!tokens && n > 0) || n < 0)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_eval: invalid arguments");
    if (n == 0)
        return ORC_OK;
    const orc_hparams *hp = &c->m->hp;
    if (n > c->n_ctx - c->n_past)
        return orc_fail(ORC_ERR_CONTEXT_FULL, "%d tokens do not fit: %d of %d context positions are used",
                        n, c->n_past, c->n_ctx);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return orc_fail(ORC_ERR_INVALID_ARGUMENT, "token %d at index %d is outside the vocabulary (%d)",
                            tokens[i], i, hp->n_vocab);
    size_t rows = all_logits ? (size_t)n : 1;
    size_t need = rows * (size_t)hp->n_vocab;
    if (need > c->logits_cap) {
        float *l = realloc(c->logits, need * sizeof(float));
        if (!l)
            return orc_fail(ORC_ERR_NO_MEMORY, "out of memory for %zu logits", need);
        c->logits = l;
        c->logits_cap = need;
    }
    for (int32_t done = 0; done < n;) {
        int chunk = n - done < c->n_batch ? n - done : c->n_batch;
        bool last = done + chunk == n;
        float *dst = all_logits ? c->logits + (size_t)done * hp->n_vocab : c->logits;
        forward(c, tokens + done, chunk, all_logits, last, dst);
        c->n_past += chunk;
        done += chunk;
    }
    c->n_logits = (int32_t)rows;
    c->logits_all = all_logits;
    return ORC_OK;
}

const float *orc_context_logits(const orc_context *c, int32_t i)
{
    if (!c || c->n_logits == 0)
        return NULL;
    if (i == -1)
        return c->logits + (size_t)(c->n_logits - 1) * c->m->hp.n_vocab;
    if (!c->logits_all || i < 0 || i >= c->n_logits)
        return NULL;
    return c->logits + (size_t)i * c->m->hp.n_vocab;
}
