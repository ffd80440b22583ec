/* context.c - an evaluation context: the KV cache (F16 or Q8_0, per sequence, with
 * sliding-window layers kept as rings of the window only and cross-layer sharing),
 * scratch buffers sized once for a batch, and the transformer forward pass every
 * supported family shares (the family's orc_arch flags switch on biases, Q/K norms,
 * post-norms, soft-capping, sliding windows and mixture-of-experts FFNs). Matrix products
 * go through quant.h on the thread pool. Sequence state save/restore lives here too. */
#include "model.h"

#include "cpu.h"
#include "dtype.h"
#include "quant.h"
#include "threadpool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Below this many multiply-adds a product is not worth splitting across threads. */
#define MIN_PARALLEL_MACS (64.0 * 1024)
#define QK8 32
#define MAX_PASS 256 /* most tokens in one forward pass (see orc_context_new) */

typedef struct {
    int32_t n_past;
    int32_t ring_lo;      /* ring layers hold no position below this */
    bool has_logits;
} seq_state;

/* One layer's own cache: rows of kv width, (n_seq, cells) of them. */
typedef struct {
    uint8_t *k, *v;
    int32_t cells;        /* n_ctx, or the ring size for sliding-window layers */
    bool ring;
} kv_layer;

struct orc_context {
    orc_model *m;
    tp_pool *tp;
    int32_t n_ctx, n_batch, n_seq, n_threads;
    orc_kv_type kv_type;
    bool rot_k, rot_v;          /* Q8_0 cache stores Hadamard-rotated heads (see fwht) */
    bool smooth_k;              /* Q8_0 cache stores keys minus a per-sequence mean */
    float *kmean;               /* (n_seq, n_layer, kv_dim_k) */
    uint8_t *kmean_set;         /* (n_seq, n_layer) */
    int32_t kv_dim_k, kv_dim_v;
    size_t row_k, row_v;        /* bytes of one cached K / V row */
    kv_layer *kv;               /* per layer; sharing layers alias their source */
    seq_state *seqs;
    float *seq_logits;          /* (n_seq, n_vocab) */
    float *inv_freq_global;     /* (n_rot/2) */
    float *inv_freq_local;      /* (n_rot/2) */
    /* scratch, (n_batch, width) each */
    float *x, *xn, *q, *k, *v, *att, *tmp, *ffa, *ffb;
    float *moe_in, *moe_out, *router;   /* MoE gather/scatter buffers */
    int32_t *moe_sel, *moe_rows;
    float *moe_w;
    int32_t *tok_seq, *tok_pos;         /* (n_batch) */
    void *act;
    size_t act_row_max;
    float *scores;              /* (n_threads, group, n_ctx) */
    float *kvtmp;               /* (n_threads, kvtmp_stride) */
    size_t kvtmp_stride;
    float *logits;              /* (rows, n_vocab) */
    int32_t *logit_row;         /* batch index -> row, or -1 */
    size_t logits_cap, logit_row_cap;
    int32_t n_logits, n_batch_last, last_row;
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

/* F16 <-> F32 for n values, with F16C when the CPU has it. */
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

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n)
{
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    float r = _mm_cvtss_f32(s);
    for (; i < n; i++)
        r += a[i] * b[i];
    return r;
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(float *y, float a, const float *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}
#endif

static int cpu_f16c = -1, cpu_avx2 = -1;

static void detect_cpu(void)
{
    if (cpu_f16c >= 0)
        return;
    const orc_cpu_features *f = orc_cpu_get();
    cpu_f16c = f->f16c && f->avx;
    cpu_avx2 = f->avx2 && f->fma;
}

static void f16_to_f32(const uint16_t *src, float *dst, int n)
{
#if defined(__x86_64__)
    if (cpu_f16c) {
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
    if (cpu_f16c) {
        f32_to_f16_f16c(src, dst, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        dst[i] = orc_f32_to_f16(src[i]);
}

static float dot(const float *a, const float *b, int n)
{
#if defined(__x86_64__)
    if (cpu_avx2)
        return dot_avx2(a, b, n);
#endif
    float r = 0.0f;
    for (int i = 0; i < n; i++)
        r += a[i] * b[i];
    return r;
}

static void axpy(float *y, float a, const float *x, int n)
{
#if defined(__x86_64__)
    if (cpu_avx2) {
        axpy_avx2(y, a, x, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* In-place orthonormal Walsh-Hadamard transform of n (a power of two) values; it is its
 * own inverse. An 8-bit KV cache stores each head rotated by it: dot products are
 * unchanged (q.k = Hq.Hk), but outlier dimensions are spread over the head, so the
 * block scale is smaller and the rounding error drops (the idea behind rotated KV
 * quantization such as QuaRot). */
static void fwht(float *x, int n)
{
    for (int len = 1; len < n; len <<= 1)
        for (int i = 0; i < n; i += len << 1)
            for (int j = i; j < i + len; j++) {
                float a = x[j], b = x[j + len];
                x[j] = a + b;
                x[j + len] = a - b;
            }
    float s = 1.0f / sqrtf((float)n);
    for (int i = 0; i < n; i++)
        x[i] *= s;
}

static bool is_pow2(int n)
{
    return n > 0 && (n & (n - 1)) == 0;
}

static void fwht_heads(float *x, int heads, int hd)
{
    for (int h = 0; h < heads; h++)
        fwht(x + (size_t)h * hd, hd);
}

/* ---- KV rows: store and load in the cache's element type ---- */

static size_t kv_row_bytes(orc_kv_type t, int n)
{
    return t == ORC_KV_Q8_0 ? (size_t)(n / QK8) * 34 : (size_t)n * 2;
}

static void kv_store(orc_kv_type t, const float *x, uint8_t *dst, int n)
{
    if (t == ORC_KV_F16)
        f32_to_f16(x, (uint16_t *)dst, n);
    else
        orc_quantize_row(ORC_DT_Q8_0, x, dst, n);
}

/* Elements [off, off + len) of a cached row of width n into out; tmp holds two blocks. */
static void kv_load(orc_kv_type t, const uint8_t *row, int off, int len, float *out, float *tmp)
{
    if (t == ORC_KV_F16) {
        f16_to_f32((const uint16_t *)row + off, out, len);
        return;
    }
    int b0 = off / QK8, b1 = (off + len + QK8 - 1) / QK8;
    if (off % QK8 == 0 && len % QK8 == 0) {
        orc_dequant_row(ORC_DT_Q8_0, row + (size_t)b0 * 34, out, len);
        return;
    }
    for (int b = b0; b < b1; b++) {
        orc_dequant_row(ORC_DT_Q8_0, row + (size_t)b * 34, tmp, QK8);
        int lo = b * QK8 > off ? b * QK8 : off, hi = (b + 1) * QK8 < off + len ? (b + 1) * QK8 : off + len;
        memcpy(out + (lo - off), tmp + (lo - b * QK8), (size_t)(hi - lo) * sizeof(float));
    }
}

static uint8_t *kv_cell(const orc_context *c, int layer, bool is_v, int seq, int pos)
{
    const kv_layer *L = &c->kv[layer];
    size_t row = is_v ? c->row_v : c->row_k;
    size_t cell = (size_t)seq * L->cells + (size_t)(pos % L->cells);
    return (is_v ? L->v : L->k) + cell * row;
}

/* ---- attention kernels ----
 *
 * Attention reads the cache in blocks of ATT_BLK positions of one KV head: the rows are
 * converted to F32 once per block into a small buffer (L1-resident), then every query
 * head of the group takes its scores from that block (8 positions at a time, reduced
 * with one horizontal-add tree) and, after the softmax, accumulates the block's V rows
 * with the output kept in registers. */
#define ATT_BLK 64
/* prefill: up to ATT_QB consecutive query tokens share each converted block */
#define ATT_QB 8

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) static void q8_rows_avx2(const uint8_t *src, size_t stride,
                                                                 int n, int hd, float *dst)
{
    for (int r = 0; r < n; r++) {
        const uint8_t *b = src + (size_t)r * stride;
        float *d = dst + (size_t)r * hd;
        for (int i = 0; i < hd; i += QK8, b += 34) {
            uint16_t h;
            memcpy(&h, b, 2);
            __m256 sc = _mm256_set1_ps(orc_f16_to_f32(h));
            for (int k = 0; k < QK8; k += 8) {
                __m128i q = _mm_loadl_epi64((const __m128i *)(b + 2 + k));
                _mm256_storeu_ps(d + i + k, _mm256_mul_ps(sc, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
            }
        }
    }
}

/* out[p] = scale * dot(q, K row p) for n rows of hd (a multiple of 8) floats */
__attribute__((target("avx2,fma"))) static void qk_avx2(const float *K, int n, int hd, const float *q,
                                                       float scale, float *out)
{
    __m256 vs = _mm256_set1_ps(scale);
    int p = 0;
    for (; p + 8 <= n; p += 8) {
        const float *k = K + (size_t)p * hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int i = 0; i < hd; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + i), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + hd + i), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + 2 * hd + i), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + 3 * hd + i), a3);
            a4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + 4 * hd + i), a4);
            a5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + 5 * hd + i), a5);
            a6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + 6 * hd + i), a6);
            a7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + 7 * hd + i), a7);
        }
        /* lane j of the result: the sum of a_j */
        __m256 h01 = _mm256_hadd_ps(a0, a1), h23 = _mm256_hadd_ps(a2, a3);
        __m256 h45 = _mm256_hadd_ps(a4, a5), h67 = _mm256_hadd_ps(a6, a7);
        __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
        __m256 lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
        __m256 hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
        _mm256_storeu_ps(out + p, _mm256_mul_ps(_mm256_add_ps(lo, hi), vs));
    }
    for (; p < n; p++) {
        const float *k = K + (size_t)p * hd;
        __m256 a = _mm256_setzero_ps();
        for (int i = 0; i < hd; i += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a);
        __m128 t = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        t = _mm_hadd_ps(t, t);
        t = _mm_hadd_ps(t, t);
        out[p] = _mm_cvtss_f32(t) * scale;
    }
}

/* out[0..hd) += sum_p w[p] * V row p, 64 columns at a time in registers */
__attribute__((target("avx2,fma"))) static void pv_avx2(const float *V, int n, int hd, const float *w,
                                                       float *out)
{
    for (int c0 = 0; c0 < hd; c0 += 64) {
        int nc = hd - c0 < 64 ? (hd - c0) / 8 : 8;
        __m256 acc[8];
        for (int j = 0; j < 8; j++)
            acc[j] = j < nc ? _mm256_loadu_ps(out + c0 + 8 * j) : _mm256_setzero_ps();
        if (nc == 8) { /* a constant trip count keeps acc[] in registers */
            for (int p = 0; p < n; p++) {
                const float *v = V + (size_t)p * hd + c0;
                __m256 s = _mm256_broadcast_ss(w + p);
                for (int j = 0; j < 8; j++)
                    acc[j] = _mm256_fmadd_ps(s, _mm256_loadu_ps(v + 8 * j), acc[j]);
            }
        } else {
            for (int p = 0; p < n; p++) {
                const float *v = V + (size_t)p * hd + c0;
                __m256 s = _mm256_broadcast_ss(w + p);
                for (int j = 0; j < nc; j++)
                    acc[j] = _mm256_fmadd_ps(s, _mm256_loadu_ps(v + 8 * j), acc[j]);
            }
        }
        for (int j = 0; j < nc; j++)
            _mm256_storeu_ps(out + c0 + 8 * j, acc[j]);
    }
}

/* x[i] = exp(x[i] - mx) for n values (all <= mx); returns their sum. exp by range
 * reduction to r in [-ln2/2, ln2/2] and a degree-6 polynomial (relative error ~2e-7). */
__attribute__((target("avx2,fma"))) static double exp_sum_avx2(float *x, int n, float mx)
{
    const __m256 vmx = _mm256_set1_ps(mx), log2e = _mm256_set1_ps(1.44269504089f);
    const __m256 ln2hi = _mm256_set1_ps(0.693359375f), ln2lo = _mm256_set1_ps(-2.12194440e-4f);
    const __m256 lowest = _mm256_set1_ps(-87.3f), one = _mm256_set1_ps(1.0f);
    const __m256 c0 = _mm256_set1_ps(1.9875691500e-4f), c1 = _mm256_set1_ps(1.3981999507e-3f);
    const __m256 c2 = _mm256_set1_ps(8.3334519073e-3f), c3 = _mm256_set1_ps(4.1665795894e-2f);
    const __m256 c4 = _mm256_set1_ps(1.6666665459e-1f), c5 = _mm256_set1_ps(5.0000001201e-1f);
    __m256 sum = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + i), vmx);
        __m256 dead = _mm256_cmp_ps(v, lowest, _CMP_LT_OQ);
        v = _mm256_max_ps(v, lowest);
        __m256 k = _mm256_round_ps(_mm256_mul_ps(v, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(k, ln2hi, v);
        r = _mm256_fnmadd_ps(k, ln2lo, r);
        __m256 p = _mm256_fmadd_ps(c0, r, c1);
        p = _mm256_fmadd_ps(p, r, c2);
        p = _mm256_fmadd_ps(p, r, c3);
        p = _mm256_fmadd_ps(p, r, c4);
        p = _mm256_fmadd_ps(p, r, c5);
        p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, one));
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
        __m256 y = _mm256_andnot_ps(dead, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
        _mm256_storeu_ps(x + i, y);
        sum = _mm256_add_ps(sum, y);
    }
    float l[8];
    _mm256_storeu_ps(l, sum);
    double s = 0.0;
    for (int j = 0; j < 8; j++)
        s += l[j];
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    return s;
}
#endif

/* Rows [p0, p0 + n) of one head (elements [off, off + hd) of each cached row) as F32 into
 * dst (n x hd); the positions must not wrap around a ring. */
static void kv_rows(const orc_context *c, int layer, bool is_v, int seq, int p0, int n, int off,
                    int hd, float *dst, float *tmp)
{
    const uint8_t *first = kv_cell(c, layer, is_v, seq, p0);
    size_t stride = is_v ? c->row_v : c->row_k;
#if defined(__x86_64__)
    if (cpu_f16c && c->kv_type == ORC_KV_F16) {
        for (int i = 0; i < n; i++)
            f16_to_f32_f16c((const uint16_t *)(first + (size_t)i * stride) + off, dst + (size_t)i * hd, hd);
        return;
    }
    if (cpu_avx2 && cpu_f16c && hd % QK8 == 0 && off % QK8 == 0 && c->kv_type == ORC_KV_Q8_0) {
        q8_rows_avx2(first + (size_t)(off / QK8) * 34, stride, n, hd, dst);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        kv_load(c->kv_type, first + (size_t)i * stride, off, hd, dst + (size_t)i * hd, tmp);
}

static void qk_scores(const float *K, int n, int hd, const float *q, float scale, float *out)
{
#if defined(__x86_64__)
    if (cpu_avx2 && hd % 8 == 0) {
        qk_avx2(K, n, hd, q, scale, out);
        return;
    }
#endif
    for (int p = 0; p < n; p++)
        out[p] = dot(q, K + (size_t)p * hd, hd) * scale;
}

static void pv_accum(const float *V, int n, int hd, const float *w, float *out)
{
#if defined(__x86_64__)
    if (cpu_avx2 && hd % 8 == 0) {
        pv_avx2(V, n, hd, w, out);
        return;
    }
#endif
    for (int p = 0; p < n; p++)
        axpy(out, w[p], V + (size_t)p * hd, hd);
}

static double exp_sum(float *x, int n, float mx)
{
#if defined(__x86_64__)
    if (cpu_avx2)
        return exp_sum_avx2(x, n, mx);
#endif
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    return s;
}

/* ---- matrix products on the thread pool ---- */

/* A job multiplies the same activations by up to three weights (Q/K/V, gate/up), whose
 * rows are handed out in chunks from an atomic counter so a thread slowed down by
 * something else on the machine does not hold the others at the barrier. */
typedef struct {
    uint32_t type;
    const uint8_t *wdata;  /* first row used (an expert slice for MoE) */
    size_t w_stride;
    int64_t n, rows;
    float *y;
    int64_t chunks;        /* chunks of this part, and of all the parts before it */
    int64_t first_chunk;
} mm_part;

typedef struct {
    mm_part part[3];
    int n_part;
    const void *act;
    size_t act_stride;
    int n_tok;
    int64_t chunk_rows, n_chunks;
    _Atomic long next;
} mm_job;

static void mm_worker(void *arg, int ith, int nth)
{
    (void)ith;
    (void)nth;
    mm_job *j = arg;
    int pi = 0;
    for (;;) {
        long ci = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (ci >= j->n_chunks)
            return;
        while (ci >= j->part[pi].first_chunk + j->part[pi].chunks)
            pi++;
        const mm_part *p = &j->part[pi];
        int64_t lo = (ci - p->first_chunk) * j->chunk_rows;
        int64_t hi = lo + j->chunk_rows < p->rows ? lo + j->chunk_rows : p->rows;
        orc_matmul(p->type, p->wdata, p->w_stride, p->n, j->act, j->act_stride, j->n_tok, p->y,
                   p->rows, lo, hi);
    }
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

/* y[i] (n_tok, rows_i) = x (n_tok, n, stride ldx) . W_i^T for the weights w[0..nw), which
 * all have row length n; expert >= 0 selects that expert of 3-D weights. Weights that
 * take the same converted activations share one conversion and one pass of the pool. */
static void matmul_n(orc_context *c, const gguf_tensor *const *w, float *const *y, int nw,
                     int expert, const float *x, int64_t ldx, int n_tok)
{
    bool done[3] = {false, false, false};
    for (int first = 0; first < nw; first++) {
        if (done[first])
            continue;
        int64_t n = w[first]->ne[0];
        uint32_t at = orc_matmul_act_type(w[first]->type, n, n_tok);
        int fmt = orc_act_format(at);
        size_t stride = orc_act_row_size(at, n);
        act_job aj = {.type = at, .x = x, .n = n, .ldx = ldx, .act = c->act,
                      .stride = stride, .n_tok = n_tok};
        if (n_tok >= 4)
            tp_run(c->tp, act_worker, &aj);
        else
            act_worker(&aj, 0, 1);
        mm_job j = {.n_part = 0, .act = c->act, .act_stride = stride, .n_tok = n_tok};
        double macs = 0.0;
        int64_t total = 0;
        for (int i = first; i < nw; i++) {
            if (done[i] || w[i]->ne[0] != n || orc_act_format(orc_matmul_act_type(w[i]->type, n, n_tok)) != fmt)
                continue;
            done[i] = true;
            mm_part *p = &j.part[j.n_part++];
            p->type = w[i]->type;
            p->n = n;
            p->rows = w[i]->ne[1];
            p->w_stride = orc_dtype_row_size(w[i]->type & 0xFF, n); /* base type of a repacked id */
            p->wdata = (const uint8_t *)w[i]->data;
            if (expert >= 0)
                p->wdata += (size_t)expert * (size_t)p->rows * p->w_stride;
            p->y = y[i];
            total += p->rows;
            macs += (double)p->rows * (double)n * n_tok;
        }
        int nth = tp_n_threads(c->tp);
        /* about eight chunks a thread, whole tiles of 16 rows */
        int64_t cr = (total + 8 * nth - 1) / (8 * nth);
        cr = cr < 16 ? 16 : (cr + 15) / 16 * 16;
        j.chunk_rows = cr;
        for (int i = 0; i < j.n_part; i++) {
            j.part[i].first_chunk = j.n_chunks;
            j.part[i].chunks = (j.part[i].rows + cr - 1) / cr;
            j.n_chunks += j.part[i].chunks;
        }
        atomic_init(&j.next, 0);
        /* waking the pool costs microseconds: small products run on the calling thread */
        if (macs < MIN_PARALLEL_MACS || nth == 1)
            mm_worker(&j, 0, 1);
        else
            tp_run(c->tp, mm_worker, &j);
    }
}

static void matmul(orc_context *c, const gguf_tensor *w, int expert, const float *x, int64_t ldx,
                   int n_tok, float *y)
{
    matmul_n(c, &w, &y, 1, expert, x, ldx, n_tok);
}

/* ---- attention ---- */

typedef struct {
    orc_context *c;
    int layer;      /* whose cache is read */
    int n_tok;
    bool sliding;
} attn_job;

/* Positions in the block starting at p0 (at most ATT_BLK, up to last; a ring's rows wrap
 * around at its end, so a block stops there). */
static int att_block(int p0, int last, int cells)
{
    int n = last + 1 - p0 < ATT_BLK ? last + 1 - p0 : ATT_BLK;
    return n < cells - p0 % cells ? n : cells - p0 % cells;
}

/* One task is (up to ATT_QB consecutive batch tokens, KV head): each cached K/V row is
 * converted once for all the query heads that share it and for all those tokens (a
 * prefill run of one sequence), a block of ATT_BLK positions at a time; each token takes
 * the part of the block inside its causal (and sliding) window. */
static void attn_worker(void *arg, int ith, int nth)
{
    attn_job *j = arg;
    orc_context *c = j->c;
    const orc_hparams *hp = &c->m->hp;
    int hdk = hp->head_dim_k, hdv = hp->head_dim_v;
    int group = hp->n_head / hp->n_head_kv;
    int cells = c->kv[j->layer].cells;
    size_t sstride = (size_t)group * c->n_ctx; /* one token's scores */
    float *scores = c->scores + (size_t)ith * ATT_QB * sstride;
    float *blk = c->kvtmp + (size_t)ith * c->kvtmp_stride;
    float *qrot = blk + 2 * QK8, *rows = qrot + (size_t)ATT_QB * group * hdk;
    long n_chunks = (j->n_tok + ATT_QB - 1) / ATT_QB, n_tasks = n_chunks * hp->n_head_kv;
    /* tasks dealt round-robin: later tokens attend to more positions */
    for (long task = ith; task < n_tasks; task += nth) {
        int kvh = (int)(task % hp->n_head_kv);
        int t0 = (int)(task / hp->n_head_kv) * ATT_QB;
        int tend = t0 + ATT_QB < j->n_tok ? t0 + ATT_QB : j->n_tok;
        /* runs of tokens of one sequence at consecutive positions share each block */
        for (int ta = t0, tb; ta < tend; ta = tb) {
            int seq = c->tok_seq[ta];
            for (tb = ta + 1; tb < tend && c->tok_seq[tb] == seq && c->tok_pos[tb] == c->tok_pos[tb - 1] + 1; tb++)
                ;
            int nq = tb - ta, start[ATT_QB] = {0}, pos[ATT_QB] = {0};
            const float *q[ATT_QB];
            for (int u = 0; u < nq; u++) {
                pos[u] = c->tok_pos[ta + u];
                start[u] = 0;
                if (j->sliding && hp->sliding_window > 0 && pos[u] - hp->sliding_window + 1 > 0)
                    start[u] = pos[u] - hp->sliding_window + 1;
                q[u] = c->q + (size_t)(ta + u) * hp->n_head * hdk + (size_t)kvh * group * hdk;
                if (c->rot_k) {
                    float *qr = qrot + (size_t)u * group * hdk;
                    memcpy(qr, q[u], (size_t)group * hdk * sizeof(float));
                    fwht_heads(qr, group, hdk);
                    q[u] = qr;
                }
            }
            int first = start[0], last = pos[nq - 1];
            for (int p0 = first, n; p0 <= last; p0 += n) {
                n = att_block(p0, last, cells);
                kv_rows(c, j->layer, false, seq, p0, n, kvh * hdk, hdk, rows, blk);
                for (int u = 0; u < nq; u++) {
                    int lo = p0 > start[u] ? p0 : start[u], hi = p0 + n < pos[u] + 1 ? p0 + n : pos[u] + 1;
                    for (int g = 0; lo < hi && g < group; g++)
                        qk_scores(rows + (size_t)(lo - p0) * hdk, hi - lo, hdk, q[u] + (size_t)g * hdk,
                                  hp->attn_scale, scores + u * sstride + (size_t)g * c->n_ctx + (lo - start[u]));
                }
            }
            for (int u = 0; u < nq; u++) {
                int span = pos[u] - start[u] + 1;
                for (int g = 0; g < group; g++) {
                    float *sc = scores + u * sstride + (size_t)g * c->n_ctx;
                    if (hp->attn_softcap > 0.0f)
                        for (int i = 0; i < span; i++)
                            sc[i] = tanhf(sc[i] / hp->attn_softcap) * hp->attn_softcap;
                    float mx = -INFINITY;
                    for (int i = 0; i < span; i++)
                        mx = sc[i] > mx ? sc[i] : mx;
                    float inv = (float)(1.0 / exp_sum(sc, span, mx));
                    for (int i = 0; i < span; i++)
                        sc[i] *= inv;
                    float *out = c->att + (size_t)(ta + u) * hp->n_head * hdv + (size_t)(kvh * group + g) * hdv;
                    memset(out, 0, (size_t)hdv * sizeof(float));
                }
            }
            for (int p0 = first, n; p0 <= last; p0 += n) {
                n = att_block(p0, last, cells);
                kv_rows(c, j->layer, true, seq, p0, n, kvh * hdv, hdv, rows, blk);
                for (int u = 0; u < nq; u++) {
                    int lo = p0 > start[u] ? p0 : start[u], hi = p0 + n < pos[u] + 1 ? p0 + n : pos[u] + 1;
                    for (int g = 0; lo < hi && g < group; g++) {
                        float *out = c->att + (size_t)(ta + u) * hp->n_head * hdv + (size_t)(kvh * group + g) * hdv;
                        pv_accum(rows + (size_t)(lo - p0) * hdv, hi - lo, hdv,
                                 scores + u * sstride + (size_t)g * c->n_ctx + (lo - start[u]), out);
                    }
                }
            }
            if (c->rot_v)
                for (int u = 0; u < nq; u++)
                    fwht_heads(c->att + (size_t)(ta + u) * hp->n_head * hdv + (size_t)kvh * group * hdv, group, hdv);
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

static const float *layer_inv_freq(const orc_context *c, const orc_layer *l)
{
    return (l->sliding && c->m->arch->swa_period > 0) ? c->inv_freq_local : c->inv_freq_global;
}

/* ---- context lifetime ---- */

orc_context_params orc_context_default_params(void)
{
    orc_context_params p = {.n_ctx = 0, .n_batch = 512, .n_threads = 0, .n_seq = 1,
                            .kv_type = ORC_KV_F16};
    return p;
}

static void *xcalloc(size_t n, size_t sz, bool *ok)
{
    size_t bytes;
    if (!orc_mul_ok(n ? n : 1, sz ? sz : 1, &bytes)) {
        *ok = false;
        return NULL;
    }
    void *p = calloc(1, bytes);
    if (!p)
        *ok = false;
    return p;
}

/* KV bytes one position of one sequence needs over all layers with their own cache
 * (ring layers counted at full size: an upper bound for sizing). */
static uint64_t kv_bytes_per_pos(const orc_model *m, size_t row_k, size_t row_v)
{
    uint64_t b = 0;
    for (int l = 0; l < m->hp.n_layer; l++)
        if (m->layers[l].kv_source < 0)
            b += row_k + row_v;
    return b;
}

orc_status orc_context_new(orc_model *m, const orc_context_params *params, orc_context **out)
{
    if (!m || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_context_new: model and out are required");
    *out = NULL;
    orc_context_params p = params ? *params : orc_context_default_params();
    const orc_hparams *hp = &m->hp;
    if (m->vocab_only)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "the model was loaded with vocab_only: no weights to evaluate");
    if (p.n_ctx < 0 || p.n_batch < 0 || p.n_threads < 0 || p.n_seq < 0 || p.n_seq > 256)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "invalid context parameters (n_seq must be 0..256, "
                        "the others not negative)");
    if (p.kv_type != ORC_KV_F16 && p.kv_type != ORC_KV_Q8_0)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "unknown KV cache type %d", (int)p.kv_type);
    int kv_dim_k = hp->n_head_kv * hp->head_dim_k, kv_dim_v = hp->n_head_kv * hp->head_dim_v;
    if (p.kv_type == ORC_KV_Q8_0 && (kv_dim_k % QK8 || kv_dim_v % QK8))
        return orc_fail(ORC_ERR_UNSUPPORTED, "a Q8_0 KV cache needs KV widths that are multiples of 32 "
                        "(this model has %d and %d)", kv_dim_k, kv_dim_v);
    if (hp->head_dim_k > 1024 || hp->head_dim_v > 1024)
        return orc_fail(ORC_ERR_UNSUPPORTED, "head dimension above 1024 is not supported");
    detect_cpu();
    orc_context *c = calloc(1, sizeof *c);
    if (!c)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    c->m = m;
    c->kv_type = p.kv_type;
    c->n_seq = p.n_seq > 0 ? p.n_seq : 1;
    c->kv_dim_k = kv_dim_k;
    c->kv_dim_v = kv_dim_v;
    c->rot_k = p.kv_type == ORC_KV_Q8_0 && is_pow2(hp->head_dim_k);
    c->rot_v = p.kv_type == ORC_KV_Q8_0 && is_pow2(hp->head_dim_v);
    /* soft-capped scores are not shift-invariant, so no smoothing there */
    c->smooth_k = p.kv_type == ORC_KV_Q8_0 && hp->attn_softcap <= 0.0f;
    c->row_k = kv_row_bytes(p.kv_type, kv_dim_k);
    c->row_v = kv_row_bytes(p.kv_type, kv_dim_v);
    uint64_t per_pos = kv_bytes_per_pos(m, c->row_k, c->row_v) * (uint64_t)c->n_seq;
    if (p.n_ctx > 0) {
        c->n_ctx = p.n_ctx;
    } else {
        c->n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
        long pages = sysconf(_SC_AVPHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
        if (pages > 0 && psize > 0 && per_pos > 0) {
            uint64_t fit = (uint64_t)pages * (uint64_t)psize / 2 / per_pos;
            if (fit < (uint64_t)c->n_ctx) {
                c->n_ctx = fit > 256 ? (int32_t)fit : 256;
                orc_log(ORC_LOG_WARN, "context: %d tokens chosen (training length %d) so the KV cache "
                        "fits in half the available memory", c->n_ctx, hp->n_ctx_train);
            }
        }
    }
    if (c->n_ctx > (1 << 24)) {
        free(c);
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "context size %d is too large", p.n_ctx);
    }
    c->n_batch = p.n_batch > 0 ? p.n_batch : 512;
    /* a pass holds (tokens x width) scratch, (tokens x n_ff) twice: passes of more than
     * MAX_PASS tokens would only add memory (prefill is as fast in 256-token passes) */
    if (c->n_batch > MAX_PASS)
        c->n_batch = MAX_PASS;
    if (c->n_batch > c->n_ctx * c->n_seq)
        c->n_batch = c->n_ctx * c->n_seq;
    int nt = p.n_threads > 0 ? p.n_threads : m->n_threads;
    c->n_threads = nt;

    size_t B = (size_t)c->n_batch, E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    size_t qd = (size_t)hp->n_head * hp->head_dim_k, od = (size_t)hp->n_head * hp->head_dim_v;
    bool ok = true;
    c->kv = xcalloc((size_t)hp->n_layer, sizeof *c->kv, &ok);
    c->seqs = xcalloc((size_t)c->n_seq, sizeof *c->seqs, &ok);
    c->seq_logits = xcalloc((size_t)c->n_seq * (size_t)hp->n_vocab, sizeof(float), &ok);
    c->kmean = xcalloc((size_t)c->n_seq * (size_t)hp->n_layer, (size_t)kv_dim_k * sizeof(float), &ok);
    c->kmean_set = xcalloc((size_t)c->n_seq, (size_t)hp->n_layer, &ok);
    for (int l = 0; ok && l < hp->n_layer; l++) {
        const orc_layer *ly = &m->layers[l];
        if (ly->kv_source >= 0) {
            c->kv[l] = c->kv[ly->kv_source];
            continue;
        }
        kv_layer *L = &c->kv[l];
        L->cells = c->n_ctx;
        if (ly->sliding && hp->sliding_window > 0 &&
            (int64_t)hp->sliding_window + c->n_batch < c->n_ctx) {
            L->cells = hp->sliding_window + c->n_batch;
            L->ring = true;
        }
        size_t rows = (size_t)c->n_seq * (size_t)L->cells;
        L->k = xcalloc(rows, c->row_k, &ok);
        L->v = xcalloc(rows, c->row_v, &ok);
    }
    c->inv_freq_global = xcalloc((size_t)hp->n_rot / 2, sizeof(float), &ok);
    c->inv_freq_local = xcalloc((size_t)hp->n_rot / 2, sizeof(float), &ok);
    c->x = xcalloc(B * E, sizeof(float), &ok);
    c->xn = xcalloc(B * E, sizeof(float), &ok);
    c->q = xcalloc(B * qd, sizeof(float), &ok);
    c->k = xcalloc(B * (size_t)kv_dim_k, sizeof(float), &ok);
    c->v = xcalloc(B * (size_t)kv_dim_v, sizeof(float), &ok);
    c->att = xcalloc(B * od, sizeof(float), &ok);
    c->tmp = xcalloc(B * E, sizeof(float), &ok);
    c->ffa = xcalloc(B * F, sizeof(float), &ok);
    c->ffb = xcalloc(B * F, sizeof(float), &ok);
    c->tok_seq = xcalloc(B, sizeof(int32_t), &ok);
    c->tok_pos = xcalloc(B, sizeof(int32_t), &ok);
    if (m->arch->moe) {
        size_t X = (size_t)hp->n_expert, K = (size_t)hp->n_expert_used;
        c->moe_in = xcalloc(B * E, sizeof(float), &ok);
        c->moe_out = xcalloc(B * E, sizeof(float), &ok);
        c->router = xcalloc(B * X, sizeof(float), &ok);
        c->moe_sel = xcalloc(B * K, sizeof(int32_t), &ok);
        c->moe_w = xcalloc(B * K, sizeof(float), &ok);
        c->moe_rows = xcalloc(B, sizeof(int32_t), &ok);
    }
    int group = hp->n_head / hp->n_head_kv;
    c->scores = xcalloc((size_t)nt * ATT_QB * (size_t)group, (size_t)c->n_ctx * sizeof(float), &ok);
    c->kvtmp_stride = (size_t)(2 * QK8) + (size_t)ATT_QB * group * hp->head_dim_k +
                      (size_t)ATT_BLK * (size_t)(hp->head_dim_k > hp->head_dim_v ? hp->head_dim_k : hp->head_dim_v);
    c->kvtmp = xcalloc((size_t)nt, c->kvtmp_stride * sizeof(float), &ok);
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
        uint64_t mb = per_pos * (uint64_t)c->n_ctx >> 20;
        int32_t n_ctx = c->n_ctx;
        orc_context_free(c);
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory for a %d-token context (%llu MB KV cache)",
                        n_ctx, (unsigned long long)mb);
    }
    init_inv_freq(c->inv_freq_global, hp, hp->rope_base, hp->rope_freq_scale);
    init_inv_freq(c->inv_freq_local, hp, hp->rope_base_local, 1.0f);
    orc_log(ORC_LOG_INFO, "context: %d tokens x %d sequences (training length %d), KV cache %.1f MB (%s), "
            "batch %d, %d threads", c->n_ctx, c->n_seq, hp->n_ctx_train,
            (double)orc_context_kv_bytes(c) / 1048576.0, c->kv_type == ORC_KV_F16 ? "f16" : "q8_0",
            c->n_batch, nt);
    *out = c;
    return ORC_OK;
}

void orc_context_free(orc_context *c)
{
    if (!c)
        return;
    tp_free(c->tp);
    if (c->kv)
        for (int l = 0; l < c->m->hp.n_layer; l++)
            if (c->m->layers[l].kv_source < 0) {
                free(c->kv[l].k);
                free(c->kv[l].v);
            }
    void *bufs[] = {c->kv, c->seqs, c->seq_logits, c->kmean, c->kmean_set, c->inv_freq_global, c->inv_freq_local, c->x,
                    c->xn, c->q, c->k, c->v, c->att, c->tmp, c->ffa, c->ffb, c->moe_in, c->moe_out,
                    c->router, c->moe_sel, c->moe_w, c->moe_rows, c->tok_seq, c->tok_pos, c->act,
                    c->scores, c->kvtmp, c->logits, c->logit_row};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(c);
}

int32_t orc_context_n_ctx(const orc_context *c) { return c ? c->n_ctx : 0; }
int32_t orc_context_n_seq(const orc_context *c) { return c ? c->n_seq : 0; }
const orc_model *orc_context_model(const orc_context *c) { return c ? c->m : NULL; }

uint64_t orc_context_kv_bytes(const orc_context *c)
{
    if (!c)
        return 0;
    uint64_t b = 0;
    for (int l = 0; l < c->m->hp.n_layer; l++)
        if (c->m->layers[l].kv_source < 0)
            b += (uint64_t)c->n_seq * (uint64_t)c->kv[l].cells * (c->row_k + c->row_v);
    return b;
}

uint64_t orc_context_kv_bytes_per_token(const orc_context *c)
{
    return c ? kv_bytes_per_pos(c->m, c->row_k, c->row_v) : 0;
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
        const gguf_tensor *w2[2] = {l->ffn_gate_exps, l->ffn_up_exps};
        float *y2[2] = {c->ffa, c->ffb};
        matmul_n(c, w2, y2, 2, e, c->moe_in, E, cnt);
        for (size_t i = 0; i < (size_t)cnt * F; i++)
            c->ffa[i] = silu(c->ffa[i]) * c->ffb[i];
        matmul(c, l->ffn_down_exps, e, c->ffa, F, cnt, c->moe_out);
        for (int i = 0; i < cnt; i++) {
            int t = c->moe_rows[i] / K;
            float w = c->moe_w[c->moe_rows[i]];
            axpy(c->tmp + (size_t)t * E, w, c->moe_out + (size_t)i * E, E);
        }
    }
}

/* Key smoothing for the 8-bit cache: softmax is unchanged when the same vector is
 * subtracted from every key a query sees (q.(k - m) = q.k - q.m, a constant per query),
 * and keys have large per-channel offsets that are the same at every position. Each
 * sequence takes m from the keys of its first evaluated chunk and keeps it (it is saved
 * with the state); storing k - m leaves a much smaller range for the 8-bit blocks. */
static void set_key_means(orc_context *c, int il, int n)
{
    const orc_hparams *hp = &c->m->hp;
    int kd = c->kv_dim_k;
    for (int t = 0; t < n; t++) {
        int seq = c->tok_seq[t];
        uint8_t *set = &c->kmean_set[(size_t)seq * hp->n_layer + il];
        if (*set)
            continue;
        float *mk = c->kmean + ((size_t)seq * hp->n_layer + il) * kd;
        int cnt = 0;
        memset(mk, 0, (size_t)kd * sizeof(float));
        for (int u = t; u < n; u++)
            if (c->tok_seq[u] == seq) {
                const float *k = c->k + (size_t)u * kd;
                for (int i = 0; i < kd; i++)
                    mk[i] += k[i];
                cnt++;
            }
        for (int i = 0; i < kd; i++)
            mk[i] /= (float)cnt;
        *set = 1;
    }
}

/* Evaluates n <= n_batch tokens whose sequences and positions are in tok_seq/tok_pos,
 * and writes logits for the rows listed in want[0..n_want) (batch indices, ascending). */
static void forward(orc_context *c, const orc_token *tok, int n, const int32_t *want, int n_want,
                    float *logits_out)
{
    orc_model *m = c->m;
    const orc_hparams *hp = &m->hp;
    const orc_arch *a = m->arch;
    int E = hp->n_embd, F = hp->n_ff;
    int qd = hp->n_head * hp->head_dim_k, od = hp->n_head * hp->head_dim_v;
    int kd = c->kv_dim_k, vd = c->kv_dim_v;
    size_t erow = orc_dtype_row_size(m->tok_embd->type & 0xFF, E); /* base type of a repacked id */

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
        bool own_kv = l->kv_source < 0;
        for (int t = 0; t < n; t++)
            rmsnorm(c->xn + (size_t)t * E, c->x + (size_t)t * E, fdata(l->attn_norm), E, hp->rms_eps);
        {
            const gguf_tensor *w3[3] = {l->wq, l->wk, l->wv};
            float *y3[3] = {c->q, c->k, c->v};
            matmul_n(c, w3, y3, own_kv ? 3 : 1, -1, c->xn, E, n);
        }
        const float *inv_freq = layer_inv_freq(c, l);
        for (int t = 0; t < n; t++) {
            float *q = c->q + (size_t)t * qd, *k = c->k + (size_t)t * kd, *v = c->v + (size_t)t * vd;
            if (l->bq)
                for (int i = 0; i < qd; i++) q[i] += fdata(l->bq)[i];
            if (l->q_norm)
                for (int h = 0; h < hp->n_head; h++)
                    rmsnorm(q + (size_t)h * hp->head_dim_k, q + (size_t)h * hp->head_dim_k,
                            fdata(l->q_norm), hp->head_dim_k, hp->rms_eps);
            int pos = c->tok_pos[t];
            rope(q, hp->n_head, hp->head_dim_k, hp->n_rot, pos, inv_freq, a->rope);
            if (!own_kv)
                continue;
            if (l->bk) {
                for (int i = 0; i < kd; i++) k[i] += fdata(l->bk)[i];
                for (int i = 0; i < vd; i++) v[i] += fdata(l->bv)[i];
            }
            if (l->k_norm)
                for (int h = 0; h < hp->n_head_kv; h++)
                    rmsnorm(k + (size_t)h * hp->head_dim_k, k + (size_t)h * hp->head_dim_k,
                            fdata(l->k_norm), hp->head_dim_k, hp->rms_eps);
            rope(k, hp->n_head_kv, hp->head_dim_k, hp->n_rot, pos, inv_freq, a->rope);
        }
        if (own_kv && c->smooth_k)
            set_key_means(c, il, n);
        for (int t = 0; own_kv && t < n; t++) {
            float *k = c->k + (size_t)t * kd, *v = c->v + (size_t)t * vd;
            int seq = c->tok_seq[t], pos = c->tok_pos[t];
            if (c->smooth_k) {
                const float *mk = c->kmean + ((size_t)seq * hp->n_layer + il) * kd;
                for (int i = 0; i < kd; i++)
                    k[i] -= mk[i];
            }
            if (c->rot_k)
                fwht_heads(k, hp->n_head_kv, hp->head_dim_k);
            if (c->rot_v)
                fwht_heads(v, hp->n_head_kv, hp->head_dim_v);
            kv_store(c->kv_type, k, kv_cell(c, il, false, seq, pos), kd);
            kv_store(c->kv_type, v, kv_cell(c, il, true, seq, pos), vd);
        }
        attn_job aj = {.c = c, .layer = own_kv ? il : l->kv_source, .n_tok = n, .sliding = l->sliding};
        double attn_macs = (double)n * hp->n_head * (c->tok_pos[n - 1] + 1) * (hp->head_dim_k + hp->head_dim_v);
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
            const gguf_tensor *w2[2] = {l->ffn_gate, l->ffn_up};
            float *y2[2] = {c->ffa, c->ffb};
            matmul_n(c, w2, y2, 2, -1, c->xn, E, n);
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

    if (n_want == 0)
        return;
    for (int r = 0; r < n_want; r++)
        rmsnorm(c->xn + (size_t)r * E, c->x + (size_t)want[r] * E, fdata(m->output_norm), E, hp->rms_eps);
    matmul(c, m->output, -1, c->xn, E, n_want, logits_out);
    if (hp->final_softcap > 0.0f) {
        size_t tot = (size_t)n_want * hp->n_vocab;
        float cap = hp->final_softcap;
        for (size_t i = 0; i < tot; i++)
            logits_out[i] = tanhf(logits_out[i] / cap) * cap;
    }
}

orc_status orc_eval_batch(orc_context *c, const orc_batch_token *batch, int32_t n)
{
    if (!c || (!batch && n > 0) || n < 0)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_eval_batch: invalid arguments");
    if (n == 0)
        return ORC_OK;
    const orc_hparams *hp = &c->m->hp;
    /* validate everything before touching the cache */
    int32_t *add = calloc((size_t)c->n_seq, sizeof *add);
    if (!add)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    int32_t n_want = 0;
    for (int32_t i = 0; i < n; i++) {
        const orc_batch_token *b = &batch[i];
        if (b->token < 0 || b->token >= hp->n_vocab) {
            free(add);
            return orc_fail(ORC_ERR_INVALID_ARGUMENT, "token %d at index %d is outside the vocabulary (%d)",
                            b->token, i, hp->n_vocab);
        }
        if (b->seq < 0 || b->seq >= c->n_seq) {
            free(add);
            return orc_fail(ORC_ERR_INVALID_ARGUMENT, "sequence %d at index %d does not exist (%d sequences)",
                            b->seq, i, c->n_seq);
        }
        add[b->seq]++;
        n_want += b->logits;
    }
    for (int s = 0; s < c->n_seq; s++)
        if (add[s] > c->n_ctx - c->seqs[s].n_past) {
            int32_t a = add[s];
            free(add);
            return orc_fail(ORC_ERR_CONTEXT_FULL, "%d tokens do not fit in sequence %d: %d of %d positions are used",
                            a, s, c->seqs[s].n_past, c->n_ctx);
        }
    free(add);
    size_t need = (size_t)(n_want ? n_want : 1) * (size_t)hp->n_vocab;
    if (need > c->logits_cap) {
        float *l = realloc(c->logits, need * sizeof(float));
        if (!l)
            return orc_fail(ORC_ERR_NO_MEMORY, "out of memory for %zu logits", need);
        c->logits = l;
        c->logits_cap = need;
    }
    if ((size_t)n > c->logit_row_cap) {
        int32_t *r = realloc(c->logit_row, (size_t)n * sizeof *r);
        if (!r)
            return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        c->logit_row = r;
        c->logit_row_cap = (size_t)n;
    }
    orc_token *toks = malloc((size_t)c->n_batch * sizeof *toks);
    int32_t *want = malloc((size_t)c->n_batch * sizeof *want);
    if (!toks || !want) {
        free(toks);
        free(want);
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    }
    int32_t row = 0;
    c->last_row = -1;
    for (int32_t done = 0; done < n;) {
        int chunk = n - done < c->n_batch ? n - done : c->n_batch;
        int nw = 0;
        for (int t = 0; t < chunk; t++) {
            const orc_batch_token *b = &batch[done + t];
            seq_state *s = &c->seqs[b->seq];
            toks[t] = b->token;
            c->tok_seq[t] = b->seq;
            c->tok_pos[t] = s->n_past++;
            s->has_logits = false;
            c->logit_row[done + t] = b->logits ? row + nw : -1;
            if (b->logits)
                want[nw++] = t;
        }
        forward(c, toks, chunk, want, nw, c->logits + (size_t)row * hp->n_vocab);
        /* the last flagged token of a sequence leaves its logits with the sequence */
        for (int t = 0; t < chunk; t++) {
            const orc_batch_token *b = &batch[done + t];
            if (b->logits && c->tok_pos[t] == c->seqs[b->seq].n_past - 1) {
                memcpy(c->seq_logits + (size_t)b->seq * hp->n_vocab,
                       c->logits + (size_t)c->logit_row[done + t] * hp->n_vocab,
                       (size_t)hp->n_vocab * sizeof(float));
                c->seqs[b->seq].has_logits = true;
            }
        }
        row += nw;
        done += chunk;
    }
    free(toks);
    free(want);
    c->n_logits = row;
    c->n_batch_last = n;
    c->last_row = row - 1;
    return ORC_OK;
}

orc_status orc_eval(orc_context *c, const orc_token *tokens, int32_t n, bool all_logits)
{
    if (!c || (!tokens && n > 0) || n < 0)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_eval: invalid arguments");
    if (n == 0)
        return ORC_OK;
    orc_batch_token *b = malloc((size_t)n * sizeof *b);
    if (!b)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    for (int32_t i = 0; i < n; i++)
        b[i] = (orc_batch_token){.token = tokens[i], .seq = 0, .logits = all_logits || i == n - 1};
    orc_status st = orc_eval_batch(c, b, n);
    free(b);
    return st;
}

const float *orc_context_logits(const orc_context *c, int32_t i)
{
    if (!c || c->n_logits == 0)
        return NULL;
    if (i == -1)
        return c->last_row >= 0 ? c->logits + (size_t)c->last_row * c->m->hp.n_vocab : NULL;
    if (i < 0 || i >= c->n_batch_last || c->logit_row[i] < 0)
        return NULL;
    return c->logits + (size_t)c->logit_row[i] * c->m->hp.n_vocab;
}

/* ---- sequences ---- */

static orc_status check_seq(const orc_context *c, orc_seq s)
{
    if (!c)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "context is NULL");
    if (s < 0 || s >= c->n_seq)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "sequence %d does not exist (%d sequences)", s, c->n_seq);
    return ORC_OK;
}

int32_t orc_seq_n_past(const orc_context *c, orc_seq s)
{
    return check_seq(c, s) == ORC_OK ? c->seqs[s].n_past : 0;
}

const float *orc_seq_logits(const orc_context *c, orc_seq s)
{
    if (check_seq(c, s) != ORC_OK || !c->seqs[s].has_logits)
        return NULL;
    return c->seq_logits + (size_t)s * c->m->hp.n_vocab;
}

int32_t orc_context_n_past(const orc_context *c)
{
    return c ? c->seqs[0].n_past : 0;
}

orc_status orc_seq_clear(orc_context *c, orc_seq s)
{
    orc_status st = check_seq(c, s);
    if (st == ORC_OK) {
        c->seqs[s] = (seq_state){0};
        memset(c->kmean_set + (size_t)s * c->m->hp.n_layer, 0, (size_t)c->m->hp.n_layer);
    }
    return st;
}

void orc_context_clear(orc_context *c)
{
    if (!c)
        return;
    for (int s = 0; s < c->n_seq; s++)
        c->seqs[s] = (seq_state){0};
    memset(c->kmean_set, 0, (size_t)c->n_seq * (size_t)c->m->hp.n_layer);
    c->n_logits = 0;
}

/* Smallest position still held by the ring layers of a sequence. */
static int32_t ring_low(const orc_context *c, const seq_state *s)
{
    int32_t lo = s->ring_lo;
    for (int l = 0; l < c->m->hp.n_layer; l++)
        if (c->kv[l].ring) {
            int32_t r = s->n_past - c->kv[l].cells;
            lo = r > lo ? r : lo;
            break; /* all rings have the same size */
        }
    return lo < 0 ? 0 : lo;
}

static bool has_rings(const orc_context *c)
{
    for (int l = 0; l < c->m->hp.n_layer; l++)
        if (c->kv[l].ring)
            return true;
    return false;
}

orc_status orc_seq_truncate(orc_context *c, orc_seq s, int32_t n)
{
    orc_status st = check_seq(c, s);
    if (st != ORC_OK)
        return st;
    seq_state *q = &c->seqs[s];
    if (n < 0 || n > q->n_past)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "cannot truncate sequence %d of %d tokens to %d", s,
                        q->n_past, n);
    if (n == q->n_past)
        return ORC_OK;
    if (has_rings(c)) {
        int32_t lo = ring_low(c, q);
        int32_t need = n - c->m->hp.sliding_window + 1;
        if (need < 0)
            need = 0;
        if (need < lo)
            return orc_fail(ORC_ERR_UNSUPPORTED, "cannot truncate sequence %d to %d tokens: the "
                            "sliding-window cache no longer holds positions %d..%d", s, n, need, lo - 1);
        q->ring_lo = lo;
    }
    q->n_past = n;
    q->has_logits = false;
    return ORC_OK;
}

orc_status orc_context_truncate(orc_context *c, int32_t n)
{
    return orc_seq_truncate(c, 0, n);
}

orc_status orc_seq_copy(orc_context *c, orc_seq src, orc_seq dst)
{
    orc_status st = check_seq(c, src);
    if (st == ORC_OK)
        st = check_seq(c, dst);
    if (st != ORC_OK || src == dst)
        return st;
    const orc_hparams *hp = &c->m->hp;
    for (int l = 0; l < hp->n_layer; l++) {
        if (c->m->layers[l].kv_source >= 0)
            continue;
        kv_layer *L = &c->kv[l];
        size_t cells = (size_t)L->cells;
        memcpy(L->k + (size_t)dst * cells * c->row_k, L->k + (size_t)src * cells * c->row_k, cells * c->row_k);
        memcpy(L->v + (size_t)dst * cells * c->row_v, L->v + (size_t)src * cells * c->row_v, cells * c->row_v);
    }
    c->seqs[dst] = c->seqs[src];
    memcpy(c->seq_logits + (size_t)dst * hp->n_vocab, c->seq_logits + (size_t)src * hp->n_vocab,
           (size_t)hp->n_vocab * sizeof(float));
    size_t nm = (size_t)hp->n_layer * (size_t)c->kv_dim_k;
    memcpy(c->kmean + (size_t)dst * nm, c->kmean + (size_t)src * nm, nm * sizeof(float));
    memcpy(c->kmean_set + (size_t)dst * hp->n_layer, c->kmean_set + (size_t)src * hp->n_layer,
           (size_t)hp->n_layer);
    return ORC_OK;
}

/* Rotates a stored K row (all KV heads) of layer il, sequence seq, by delta positions,
 * undoing and redoing the 8-bit cache's Hadamard rotation and key smoothing around it. */
static void rerotate_k(orc_context *c, int il, int seq, uint8_t *row, int delta, float *buf)
{
    const orc_hparams *hp = &c->m->hp;
    const float *mk = c->kmean + ((size_t)seq * hp->n_layer + il) * c->kv_dim_k;
    float blk[QK8];
    kv_load(c->kv_type, row, 0, c->kv_dim_k, buf, blk);
    if (c->rot_k)
        fwht_heads(buf, hp->n_head_kv, hp->head_dim_k);
    if (c->smooth_k)
        for (int i = 0; i < c->kv_dim_k; i++)
            buf[i] += mk[i];
    rope(buf, hp->n_head_kv, hp->head_dim_k, hp->n_rot, delta, layer_inv_freq(c, &c->m->layers[il]),
         c->m->arch->rope);
    if (c->smooth_k)
        for (int i = 0; i < c->kv_dim_k; i++)
            buf[i] -= mk[i];
    if (c->rot_k)
        fwht_heads(buf, hp->n_head_kv, hp->head_dim_k);
    kv_store(c->kv_type, buf, row, c->kv_dim_k);
}

orc_status orc_seq_shift(orc_context *c, orc_seq s, int32_t p0, int32_t nd)
{
    orc_status st = check_seq(c, s);
    if (st != ORC_OK)
        return st;
    seq_state *q = &c->seqs[s];
    if (p0 < 0 || nd < 0 || p0 > q->n_past || nd > q->n_past - p0)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "cannot remove positions [%d, %d) from sequence %d of "
                        "%d tokens", p0, p0 + nd, s, q->n_past);
    if (nd == 0)
        return ORC_OK;
    const orc_hparams *hp = &c->m->hp;
    int32_t new_past = q->n_past - nd;
    int32_t lo = ring_low(c, q);
    bool rings = has_rings(c);
    /* ring layers: new position r comes from old r (< p0) or r + nd; all positions the
     * window will still look at must be available */
    int32_t new_lo = 0, ring_cells = 0;
    for (int l = 0; l < hp->n_layer; l++)
        if (c->kv[l].ring)
            ring_cells = c->kv[l].cells;
    if (rings) {
        new_lo = new_past;
        while (new_lo > 0) {
            int32_t r = new_lo - 1, old = r < p0 ? r : r + nd;
            if (old < lo || new_past - r > ring_cells)
                break;
            new_lo--;
        }
        int32_t need = new_past - hp->sliding_window + 1;
        if (need < 0)
            need = 0;
        for (int l = 0; l < hp->n_layer; l++)
            if (c->kv[l].ring && need < new_lo)
                return orc_fail(ORC_ERR_UNSUPPORTED, "cannot shift sequence %d: the sliding-window "
                                "cache no longer holds the positions the window needs", s);
    }
    if (p0 < lo && rings)
        return orc_fail(ORC_ERR_UNSUPPORTED, "cannot shift sequence %d at %d: the sliding-window cache "
                        "starts at %d", s, p0, lo);
    float *buf = malloc((size_t)c->kv_dim_k * sizeof(float));
    uint8_t *tk = NULL, *tv = NULL;
    if (!buf)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    for (int l = 0; l < hp->n_layer; l++) {
        const orc_layer *ly = &c->m->layers[l];
        if (ly->kv_source >= 0)
            continue;
        kv_layer *L = &c->kv[l];
        if (!L->ring) {
            for (int32_t r = p0; r < new_past; r++) {
                uint8_t *dk = kv_cell(c, l, false, s, r), *dv = kv_cell(c, l, true, s, r);
                memmove(dk, kv_cell(c, l, false, s, r + nd), c->row_k);
                memmove(dv, kv_cell(c, l, true, s, r + nd), c->row_v);
                rerotate_k(c, l, s, dk, -nd, buf);
            }
            continue;
        }
        /* ring: gather the new window into a temporary copy, then write it back */
        size_t cnt = (size_t)(new_past - new_lo);
        free(tk);
        free(tv);
        tk = malloc(cnt * c->row_k + 1);
        tv = malloc(cnt * c->row_v + 1);
        if (!tk || !tv) {
            free(tk);
            free(tv);
            free(buf);
            return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        }
        for (int32_t r = new_lo; r < new_past; r++) {
            int32_t old = r < p0 ? r : r + nd;
            memcpy(tk + (size_t)(r - new_lo) * c->row_k, kv_cell(c, l, false, s, old), c->row_k);
            memcpy(tv + (size_t)(r - new_lo) * c->row_v, kv_cell(c, l, true, s, old), c->row_v);
            if (old != r)
                rerotate_k(c, l, s, tk + (size_t)(r - new_lo) * c->row_k, -nd, buf);
        }
        for (int32_t r = new_lo; r < new_past; r++) {
            memcpy(kv_cell(c, l, false, s, r), tk + (size_t)(r - new_lo) * c->row_k, c->row_k);
            memcpy(kv_cell(c, l, true, s, r), tv + (size_t)(r - new_lo) * c->row_v, c->row_v);
        }
    }
    free(tk);
    free(tv);
    free(buf);
    q->n_past = new_past;
    q->ring_lo = rings ? new_lo : 0;
    q->has_logits = false;
    return ORC_OK;
}

/* ---- sequence state ---- */

#define STATE_MAGIC "ORCKVST\0"
#define STATE_VERSION 1u

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t kv_type;
    uint64_t fingerprint;   /* the model's shape: a state only fits the same shape */
    int32_t n_layer, kv_dim_k, kv_dim_v, n_vocab;
    int32_t n_past, lo;     /* ring layers hold [lo, n_past) */
    int32_t has_logits, reserved;
} state_header;

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t model_fingerprint(const orc_model *m)
{
    const orc_hparams *hp = &m->hp;
    uint64_t h = fnv1a(1469598103934665603ull, m->arch_name, strlen(m->arch_name));
    int32_t dims[] = {hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim_k,
                      hp->head_dim_v, hp->n_vocab, hp->n_rot, hp->sliding_window};
    h = fnv1a(h, dims, sizeof dims);
    for (int l = 0; l < hp->n_layer; l++)
        h = fnv1a(h, &m->layers[l].kv_source, sizeof m->layers[l].kv_source);
    return h;
}

/* Rows of one layer a state stores: full layers [0, n_past), ring layers [lo, n_past). */
static int32_t state_first(const orc_context *c, int l, int32_t lo)
{
    return c->kv[l].ring ? lo : 0;
}

static size_t state_size(const orc_context *c, int32_t n_past, int32_t lo, bool logits)
{
    size_t sz = sizeof(state_header);
    for (int l = 0; l < c->m->hp.n_layer; l++)
        if (c->m->layers[l].kv_source < 0)
            sz += (size_t)(n_past - state_first(c, l, lo)) * (c->row_k + c->row_v);
    if (logits)
        sz += (size_t)c->m->hp.n_vocab * sizeof(float);
    if (c->smooth_k)
        sz += (size_t)c->m->hp.n_layer * ((size_t)c->kv_dim_k * sizeof(float) + 1);
    return sz + sizeof(uint64_t);
}

void orc_free(void *p)
{
    free(p);
}

orc_status orc_seq_state_save(const orc_context *c, orc_seq s, void **data, size_t *size)
{
    orc_status st = check_seq(c, s);
    if (st != ORC_OK)
        return st;
    if (!data || !size)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_seq_state_save: data and size are required");
    const seq_state *q = &c->seqs[s];
    int32_t lo = has_rings(c) ? ring_low(c, q) : 0;
    size_t sz = state_size(c, q->n_past, lo, q->has_logits);
    uint8_t *buf = malloc(sz), *p = buf;
    if (!buf)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory for a %zu-byte state", sz);
    state_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, STATE_MAGIC, 8);
    h.version = STATE_VERSION;
    h.kv_type = (uint32_t)c->kv_type;
    h.fingerprint = model_fingerprint(c->m);
    h.n_layer = c->m->hp.n_layer;
    h.kv_dim_k = c->kv_dim_k;
    h.kv_dim_v = c->kv_dim_v;
    h.n_vocab = c->m->hp.n_vocab;
    h.n_past = q->n_past;
    h.lo = lo;
    h.has_logits = q->has_logits;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    for (int l = 0; l < c->m->hp.n_layer; l++) {
        if (c->m->layers[l].kv_source >= 0)
            continue;
        for (int32_t pos = state_first(c, l, lo); pos < q->n_past; pos++) {
            memcpy(p, kv_cell(c, l, false, s, pos), c->row_k);
            p += c->row_k;
            memcpy(p, kv_cell(c, l, true, s, pos), c->row_v);
            p += c->row_v;
        }
    }
    if (q->has_logits) {
        memcpy(p, c->seq_logits + (size_t)s * c->m->hp.n_vocab, (size_t)c->m->hp.n_vocab * sizeof(float));
        p += (size_t)c->m->hp.n_vocab * sizeof(float);
    }
    if (c->smooth_k) {
        size_t nl = (size_t)c->m->hp.n_layer, nm = nl * (size_t)c->kv_dim_k;
        memcpy(p, c->kmean + (size_t)s * nm, nm * sizeof(float));
        p += nm * sizeof(float);
        memcpy(p, c->kmean_set + (size_t)s * nl, nl);
        p += nl;
    }
    uint64_t sum = fnv1a(1469598103934665603ull, buf, (size_t)(p - buf));
    memcpy(p, &sum, sizeof sum);
    *data = buf;
    *size = sz;
    return ORC_OK;
}

orc_status orc_seq_state_load(orc_context *c, orc_seq s, const void *data, size_t size)
{
    orc_status st = check_seq(c, s);
    if (st != ORC_OK)
        return st;
    if (!data)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_seq_state_load: data is NULL");
    state_header h;
    if (size < sizeof h + sizeof(uint64_t))
        return orc_fail(ORC_ERR_FORMAT, "state of %zu bytes is truncated (the header alone is %zu)", size,
                        sizeof h + sizeof(uint64_t));
    memcpy(&h, data, sizeof h);
    if (memcmp(h.magic, STATE_MAGIC, 8) != 0)
        return orc_fail(ORC_ERR_FORMAT, "not an Orchard sequence state (bad magic)");
    if (h.version != STATE_VERSION)
        return orc_fail(ORC_ERR_FORMAT, "sequence state version %u is not supported (expected %u)",
                        h.version, STATE_VERSION);
    if (h.fingerprint != model_fingerprint(c->m) || h.n_layer != c->m->hp.n_layer ||
        h.kv_dim_k != c->kv_dim_k || h.kv_dim_v != c->kv_dim_v || h.n_vocab != c->m->hp.n_vocab)
        return orc_fail(ORC_ERR_FORMAT, "the state was saved from a model of another shape");
    if (h.kv_type != (uint32_t)c->kv_type)
        return orc_fail(ORC_ERR_FORMAT, "the state holds a %s KV cache but this context uses %s",
                        h.kv_type == ORC_KV_Q8_0 ? "q8_0" : "f16", c->kv_type == ORC_KV_Q8_0 ? "q8_0" : "f16");
    if (h.n_past < 0 || h.n_past > c->n_ctx || h.lo < 0 || h.lo > h.n_past || (h.has_logits != 0 && h.has_logits != 1))
        return orc_fail(ORC_ERR_FORMAT, "the state holds %d positions but this context has %d", h.n_past, c->n_ctx);
    for (int l = 0; l < c->m->hp.n_layer; l++)
        if (c->kv[l].ring && h.n_past - h.lo > c->kv[l].cells)
            return orc_fail(ORC_ERR_FORMAT, "the state's sliding window (%d positions) does not fit this "
                            "context's ring of %d", h.n_past - h.lo, c->kv[l].cells);
    size_t want = state_size(c, h.n_past, h.lo, h.has_logits);
    if (size != want)
        return orc_fail(ORC_ERR_FORMAT, "state is %zu bytes but its header implies %zu (truncated or padded)",
                        size, want);
    uint64_t sum;
    memcpy(&sum, (const uint8_t *)data + size - sizeof sum, sizeof sum);
    if (sum != fnv1a(1469598103934665603ull, data, size - sizeof sum))
        return orc_fail(ORC_ERR_FORMAT, "sequence state checksum mismatch (corrupted)");
    /* valid: only now change the sequence */
    const uint8_t *p = (const uint8_t *)data + sizeof h;
    for (int l = 0; l < c->m->hp.n_layer; l++) {
        if (c->m->layers[l].kv_source >= 0)
            continue;
        for (int32_t pos = state_first(c, l, h.lo); pos < h.n_past; pos++) {
            memcpy(kv_cell(c, l, false, s, pos), p, c->row_k);
            p += c->row_k;
            memcpy(kv_cell(c, l, true, s, pos), p, c->row_v);
            p += c->row_v;
        }
    }
    if (h.has_logits) {
        memcpy(c->seq_logits + (size_t)s * c->m->hp.n_vocab, p, (size_t)c->m->hp.n_vocab * sizeof(float));
        p += (size_t)c->m->hp.n_vocab * sizeof(float);
    }
    if (c->smooth_k) {
        size_t nl = (size_t)c->m->hp.n_layer, nm = nl * (size_t)c->kv_dim_k;
        memcpy(c->kmean + (size_t)s * nm, p, nm * sizeof(float));
        p += nm * sizeof(float);
        memcpy(c->kmean_set + (size_t)s * nl, p, nl);
    }
    c->seqs[s] = (seq_state){.n_past = h.n_past, .ring_lo = h.lo, .has_logits = h.has_logits};
    return ORC_OK;
}

orc_status orc_seq_state_save_file(const orc_context *c, orc_seq s, const char *path)
{
    if (!path)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "path is NULL");
    void *data;
    size_t size;
    orc_status st = orc_seq_state_save(c, s, &data, &size);
    if (st != ORC_OK)
        return st;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(data);
        return orc_fail(ORC_ERR_IO, "%s: cannot open for writing", path);
    }
    bool ok = fwrite(data, 1, size, f) == size;
    ok = fclose(f) == 0 && ok;
    free(data);
    return ok ? ORC_OK : orc_fail(ORC_ERR_IO, "%s: write failed", path);
}

orc_status orc_seq_state_load_file(orc_context *c, orc_seq s, const char *path)
{
    if (!path)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f)
        return orc_fail(ORC_ERR_IO, "%s: cannot open", path);
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return orc_fail(ORC_ERR_IO, "%s: cannot seek", path);
    }
    long n = ftell(f);
    rewind(f);
    void *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (n <= 0 || !buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return n <= 0 ? orc_fail(ORC_ERR_FORMAT, "%s: empty state file", path)
                      : orc_fail(ORC_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    orc_status st = orc_seq_state_load(c, s, buf, (size_t)n);
    free(buf);
    if (st != ORC_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", orc_last_error());
        orc_fail(st, "%s: %s", path, msg);
    }
    return st;
}
