/* quant_amx.c - batched (prefill) products of Q4_0, Q8_0, Q4_K and Q6_K weights, plain or repacked,
 * with Intel AMX int8 tiles. Only this file is compiled for AMX (target attribute), and
 * quant.c calls it only when cpu.c found AMX usable and the batch is large enough.
 *
 * C (16 tokens x 16 weight rows, int32) = A (16 tokens x 32 int8 of one block) .
 * B (the same block of 16 weight rows, in the VNNI layout: 8 rows of 16 x 4 bytes), one
 * tdpbssd per 32-element block; each block's integer tile is then scaled by
 * d_x(token) * d_w(row) into 16 float accumulators (one zmm per token), the same
 * per-block arithmetic as the other kernels. A panel of 16 weight rows is unpacked to
 * int8 once and reused for every token tile, so unpacking costs 1/ntok per product. */
#include "quant_amx.h"

#include "quant.h"
#include "quant_impl.h"

#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* tiles: 0 = C (nt x 16 int32), 1 = A (nt tokens x 32 bytes), 2 = B (8 x 64 bytes); with
 * halves (Q6_K's 16-element groups), 0-2 and 3-5 are two such sets with K = 16 */
AMX_TARGET static void configure(int nt, bool halves)
{
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int s = 0; s < (halves ? 2 : 1); s++) {
        cfg.rows[3 * s] = (uint8_t)nt;
        cfg.colsb[3 * s] = 64;
        cfg.rows[3 * s + 1] = (uint8_t)nt;
        cfg.colsb[3 * s + 1] = halves ? 16 : 32;
        cfg.rows[3 * s + 2] = halves ? 4 : 8;
        cfg.colsb[3 * s + 2] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* 32 int8 weights of block b of row `row` (plain or repacked layout). */
AMX_TARGET static inline __m256i block_i8(uint32_t base, bool rp, const uint8_t *row, int64_t b,
                                          int64_t nb, float *d)
{
    size_t bsz = base == ORC_DT_Q4_0 ? sizeof(blk_q4_0) : sizeof(blk_q8_0);
    int64_t ng = nb / 8;
    if (rp && b < ng * 8) {
        /* group of 8 blocks: 8 scales, then quants 4 bytes at a time, block k's bytes
         * 4s..4s+3 at qs[32s + 4k] (see quant_impl.h) */
        const uint8_t *g = row + (size_t)(b / 8) * 8 * bsz;
        int k = (int)(b % 8);
        uint16_t h;
        memcpy(&h, g + 2 * k, 2);
        *d = _cvtsh_ss(h);
        const uint8_t *qs = g + 16;
        if (base == ORC_DT_Q4_0) {
            /* 16 bytes: s = 0..3 (a wider gather would read past the group) */
            __m128i q = _mm_i32gather_epi32((const int *)(qs + 4 * k), _mm_setr_epi32(0, 8, 16, 24), 4);
            __m128i m = _mm_set1_epi8(0x0F);
            __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
            return _mm256_sub_epi8(u, _mm256_set1_epi8(8));
        }
        __m256i idx = _mm256_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56);
        return _mm256_i32gather_epi32((const int *)(qs + 4 * k), idx, 4);
    }
    const uint8_t *blk = row + (size_t)b * bsz;
    uint16_t h;
    memcpy(&h, blk, 2);
    *d = _cvtsh_ss(h);
    if (base == ORC_DT_Q4_0) {
        __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
        __m128i m = _mm_set1_epi8(0x0F);
        __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
        return _mm256_sub_epi8(u, _mm256_set1_epi8(8));
    }
    return _mm256_loadu_si256((const __m256i *)(blk + 2));
}

/* Q4_K row j of the panel: each 32-element sub-block becomes a block with codes 0..15,
 * scale d * sc and min dmin * m (weight = scale * code - min). */
AMX_TARGET static void q4k_panel_row(bool rp, const uint8_t *row, int64_t b0, int kb, int j, uint8_t *panel,
                                     float *dw, float *mw)
{
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int i = 0; i < kb; i += 8) {
        blk_q4_K sb;
        memcpy(&sb, row + (size_t)((b0 + i) / 8) * sizeof(blk_q4_K), sizeof sb);
        float d = _cvtsh_ss(sb.d), dmin = _cvtsh_ss(sb.dmin);
        for (int sub = 0; sub < 8; sub++) {
            int sc, m;
            if (sub < 4) {
                sc = sb.scales[sub] & 63;
                m = sb.scales[sub + 4] & 63;
            } else {
                sc = (sb.scales[sub + 4] & 0xF) | ((sb.scales[sub - 4] >> 6) << 4);
                m = (sb.scales[sub + 4] >> 4) | ((sb.scales[sub] >> 6) << 4);
            }
            const uint8_t *q = sb.qs + 32 * (sub / 2);
            __m128i lo, hi;
            if (rp) {
                /* repacked (quant_impl.h): sub-block k's byte 4s + i at qs[32 s + 4 k + i],
                 * low nibble = element 4s + i, high nibble = element 16 + 4s + i */
                __m128i g = _mm_i32gather_epi32((const int *)(sb.qs + 4 * sub), _mm_setr_epi32(0, 32, 64, 96), 1);
                lo = _mm_and_si128(g, m4);
                hi = _mm_and_si128(_mm_srli_epi16(g, 4), m4);
            } else {
                /* plain: sub-blocks 2j and 2j + 1 are the low and high nibbles of qs[32 j..] */
                lo = _mm_loadu_si128((const __m128i *)q);
                hi = _mm_loadu_si128((const __m128i *)(q + 16));
                int sh = (sub & 1) * 4;
                lo = _mm_and_si128(_mm_srl_epi16(lo, _mm_cvtsi32_si128(sh)), m4);
                hi = _mm_and_si128(_mm_srl_epi16(hi, _mm_cvtsi32_si128(sh)), m4);
            }
            uint32_t v[8];
            _mm_storeu_si128((__m128i *)v, lo);
            _mm_storeu_si128((__m128i *)(v + 4), hi);
            int b = i + sub;
            dw[16 * b + j] = d * (float)sc;
            mw[16 * b + j] = dmin * (float)m;
            uint32_t *dst = (uint32_t *)(panel + 512 * b) + j;
            for (int k4 = 0; k4 < 8; k4++)
                dst[16 * k4] = v[k4];
        }
    }
}

/* 16 signed codes (q - 32) of group g (0..15) of a Q6_K super-block, plain or repacked. */
AMX_TARGET static inline __m128i q6k_group(const blk_q6_K *sb, int g, bool rp)
{
    int h = g / 8, k = g % 8;
    __m128i lo, hi;
    if (rp) {
        /* quant_impl.h: element 4 s4 + i: low nibble of ql[64h + 32 (s4 % 2) + 4k + i]
         * (high nibble when s4 >= 2), high bits (qh[32h + 4k + i] >> 2 s4) & 3 */
        uint32_t d0, d1, q;
        memcpy(&d0, sb->ql + 64 * h + 4 * k, 4);
        memcpy(&d1, sb->ql + 64 * h + 32 + 4 * k, 4);
        memcpy(&q, sb->qh + 32 * h + 4 * k, 4);
        __m128i v = _mm_setr_epi32((int)d0, (int)d1, (int)d0, (int)d1);
        lo = _mm_and_si128(_mm_srlv_epi64(v, _mm_set_epi64x(4, 0)), _mm_set1_epi8(0x0F));
        hi = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32((int)q), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
    } else {
        /* plain: element e = 32 qq + l of half h: low 4 bits from ql[64h + 32 (qq & 1) + l]
         * (>> 4 when qq >= 2), high 2 bits (qh[32h + l] >> 2 qq) & 3 */
        int qq = k / 2, l = 16 * (k & 1);
        lo = _mm_loadu_si128((const __m128i *)(sb->ql + 64 * h + 32 * (qq & 1) + l));
        lo = _mm_and_si128(_mm_srl_epi16(lo, _mm_cvtsi32_si128(4 * (qq >> 1))), _mm_set1_epi8(0x0F));
        hi = _mm_loadu_si128((const __m128i *)(sb->qh + 32 * h + l));
        hi = _mm_and_si128(_mm_srl_epi16(hi, _mm_cvtsi32_si128(2 * qq)), _mm_set1_epi8(3));
    }
    return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
}

/* Q6_K row j: 32-element block b = groups 2b', 2b' + 1 of its super-block, each 16 codes
 * in a 4 x 64 byte half-panel (panel + 512 b + 256 half), scales in dw (first group) and
 * d2 (second). */
AMX_TARGET static void q6k_panel_row(bool rp, const uint8_t *row, int64_t b0, int kb, int j, uint8_t *panel,
                                     float *dw, float *d2)
{
    for (int i = 0; i < kb; i += 8) {
        const blk_q6_K *sb = (const blk_q6_K *)(row + (size_t)((b0 + i) / 8) * sizeof(blk_q6_K));
        float d = _cvtsh_ss(sb->d);
        for (int g = 0; g < 16; g++) {
            uint32_t v[4];
            _mm_storeu_si128((__m128i *)v, q6k_group(sb, g, rp));
            int b = i + g / 2, half = g & 1;
            (half ? d2 : dw)[16 * b + j] = d * (float)sb->scales[g];
            uint32_t *dst = (uint32_t *)(panel + 512 * b + 256 * half) + j;
            for (int k4 = 0; k4 < 4; k4++)
                dst[16 * k4] = v[k4];
        }
    }
}

/* Unpacks blocks [b0, b0 + kb) of rows [0, nr) of W (nr <= 16; missing rows are zero)
 * into the VNNI panel: block b0 + i at panel + 512 i, byte 64 k4 + 4 j + q = weight (row
 * j, element 32 (b0 + i) + 4 k4 + q); scales at dw[16 i + j]. */
AMX_TARGET static void unpack_panel(uint32_t base, bool rp, const uint8_t *W, size_t ws, int64_t nb,
                                    int64_t b0, int kb, int nr, uint8_t *panel, float *dw, float *mw,
                                    const uint8_t *pf, size_t pf_bytes)
{
    if (nr < 16) {
        memset(panel, 0, (size_t)kb * 512);
        memset(dw, 0, (size_t)kb * 16 * sizeof(float));
        memset(mw, 0, (size_t)kb * 16 * sizeof(float));
    }
    for (int j = 0; j < nr; j++) {
        const uint8_t *row = W + (size_t)j * ws;
        if (pf) /* the next panel's weights arrive while the tokens pass over this one */
            for (size_t o = 0; o < pf_bytes; o += 64)
                _mm_prefetch((const char *)pf + (size_t)j * ws + o, _MM_HINT_T1);
        if (base == ORC_DT_Q4_K) {
            q4k_panel_row(rp, row, b0, kb, j, panel, dw, mw);
            continue;
        }
        if (base == ORC_DT_Q6_K) {
            q6k_panel_row(rp, row, b0, kb, j, panel, dw, mw);
            continue;
        }
        for (int i = 0; i < kb; i++) {
            float d;
            __m256i v = block_i8(base, rp, row, b0 + i, nb, &d);
            dw[16 * i + j] = d;
            uint32_t q[8];
            _mm256_storeu_si256((__m256i *)q, v);
            uint32_t *dst = (uint32_t *)(panel + 512 * i) + j;
            for (int k4 = 0; k4 < 8; k4++)
                dst[16 * k4] = q[k4];
        }
    }
}

/* Where a token tile's activations are (rows xs bytes apart). Blocks of the 32-element
 * formats are blk_q8a; K-quant weights take the Q8_K rows their other kernels take (one
 * scale per 256, sums per 16), as llama.cpp does, so every path rounds x the same way. */
typedef struct {
    const uint8_t *base; /* token 0, block 0 of the K chunk */
    size_t xs;
    bool q8k;
} act_view;

AMX_TARGET static inline const uint8_t *act_q(act_view a, int b)
{
    return a.q8k ? a.base + (size_t)(b / 8) * sizeof(blk_q8_K) + offsetof(blk_q8_K, qs) + 32 * (b % 8)
                 : a.base + (size_t)b * sizeof(blk_q8a) + offsetof(blk_q8a, qs);
}

/* scale of block b for token t, and (with sum) the sum of its 32 codes */
AMX_TARGET static inline float act_d(act_view a, int b, int t, float *sum)
{
    const uint8_t *p = a.base + (size_t)t * a.xs;
    float d;
    if (a.q8k) {
        p += (size_t)(b / 8) * sizeof(blk_q8_K);
        memcpy(&d, p, sizeof d);
        if (sum) {
            int16_t s2[2];
            memcpy(s2, p + offsetof(blk_q8_K, bsums) + 4 * (b % 8), sizeof s2);
            *sum = (float)(s2[0] + s2[1]);
        }
        return d;
    }
    p += (size_t)b * sizeof(blk_q8a);
    memcpy(&d, p, sizeof d);
    if (sum) {
        int32_t s;
        memcpy(&s, p + offsetof(blk_q8a, sum), sizeof s);
        *sum = (float)s;
    }
    return d;
}

/* nt <= 16 tokens x the panel's kb blocks, added to Y when acc_y (later K chunks), else
 * stored. */
AMX_TARGET static void tile_tokens(const uint8_t *panel, const float *dw, const float *mw, int kb, act_view a,
                                   float *Y, int64_t ldy, int nt, int nr, bool acc_y)
{
    __mmask16 m = (__mmask16)((1u << nr) - 1);
    __m512 acc[16];
    for (int t = 0; t < 16; t++)
        acc[t] = t < nt && acc_y ? _mm512_maskz_loadu_ps(m, Y + t * ldy) : _mm512_setzero_ps();
    /* software-pipelined: the tiles compute block b + 1 and store it while the vector
     * units scale block b, whose integer tile was stored an iteration earlier (reading a
     * tile store right away stalls) */
    int32_t c[2][16][16] __attribute__((aligned(64)));
    _tile_zero(0);
    _tile_loadd(1, act_q(a, 0), (long)a.xs);
    _tile_loadd(2, panel, 64);
    _tile_dpbssd(0, 1, 2);
    _tile_stored(0, c[0], 64);
    for (int b = 0; b < kb; b++) {
        if (b + 1 < kb) {
            _tile_zero(0);
            _tile_loadd(1, act_q(a, b + 1), (long)a.xs);
            _tile_loadd(2, panel + 512 * (b + 1), 64);
            _tile_dpbssd(0, 1, 2);
            _tile_stored(0, c[(b + 1) & 1], 64);
        }
        __m512 wd = _mm512_loadu_ps(dw + 16 * b);
        const int32_t(*cb)[16] = c[b & 1];
        if (mw) {
            /* weights with mins: sum_k (s q_k - m) d_x x_k = d_x (s C - m sum_k x_k) */
            __m512 wm = _mm512_loadu_ps(mw + 16 * b);
            for (int t = 0; t < nt; t++) {
                float xsum, xd = act_d(a, b, t, &xsum);
                __m512 s = _mm512_mul_ps(wd, _mm512_set1_ps(xd));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb[t])), s, acc[t]);
                acc[t] = _mm512_fnmadd_ps(wm, _mm512_set1_ps(xd * xsum), acc[t]);
            }
            continue;
        }
        for (int t = 0; t < nt; t++) {
            float xd = act_d(a, b, t, NULL);
            __m512 s = _mm512_mul_ps(wd, _mm512_set1_ps(xd));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb[t])), s, acc[t]);
        }
    }
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(Y + t * ldy, m, acc[t]);
}

/* As tile_tokens, for blocks made of two 16-element groups with their own scales (dw for
 * the first, d2 for the second): two K = 16 products per block. */
AMX_TARGET static void tile_tokens_halves(const uint8_t *panel, const float *dw, const float *d2, int kb,
                                          act_view a, float *Y, int64_t ldy, int nt, int nr, bool acc_y)
{
    __mmask16 m = (__mmask16)((1u << nr) - 1);
    __m512 acc[16];
    for (int t = 0; t < 16; t++)
        acc[t] = t < nt && acc_y ? _mm512_maskz_loadu_ps(m, Y + t * ldy) : _mm512_setzero_ps();
    int32_t c[2][2][16][16] __attribute__((aligned(64)));
    for (int b = -1; b < kb; b++) {
        if (b + 1 < kb) {
            const uint8_t *q = act_q(a, b + 1);
            const uint8_t *p = panel + 512 * (b + 1);
            _tile_zero(0);
            _tile_zero(3);
            _tile_loadd(1, q, (long)a.xs);
            _tile_loadd(2, p, 64);
            _tile_loadd(4, q + 16, (long)a.xs);
            _tile_loadd(5, p + 256, 64);
            _tile_dpbssd(0, 1, 2);
            _tile_dpbssd(3, 4, 5);
            _tile_stored(0, c[(b + 1) & 1][0], 64);
            _tile_stored(3, c[(b + 1) & 1][1], 64);
        }
        if (b < 0)
            continue;
        __m512 w0 = _mm512_loadu_ps(dw + 16 * b), w1 = _mm512_loadu_ps(d2 + 16 * b);
        for (int t = 0; t < nt; t++) {
            float xd = act_d(a, b, t, NULL);
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[b & 1][0][t])), w0);
            v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[b & 1][1][t])), w1, v);
            acc[t] = _mm512_fmadd_ps(v, _mm512_set1_ps(xd), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(Y + t * ldy, m, acc[t]);
}

/* K is taken in chunks of KCH blocks so the unpacked panel (16 rows x KCH blocks) stays
 * on the stack and in L1/L2 while every token tile passes over it. */
#define KCH 64

AMX_TARGET static void amx_matmul(uint32_t wtype, const void *W, size_t ws, int64_t n, const void *X,
                                  size_t xs, int64_t n_tok, float *Y, int64_t ldy, int64_t r0, int64_t r1)
{
    uint32_t base = wtype & 0xFF;
    bool rp = (wtype & ORC_QUANT_REPACKED) != 0;
    int64_t nb = n / QK;
    uint8_t panel[KCH * 512] __attribute__((aligned(64)));
    float dw[KCH * 16] __attribute__((aligned(64)));
    float mwb[KCH * 16] __attribute__((aligned(64)));
    float *mw = base == ORC_DT_Q4_K ? mwb : NULL;
    bool halves = base == ORC_DT_Q6_K;
    int cur = 16;
    configure(cur, halves);
    for (int64_t r = r0; r < r1; r += 16) {
        int nr = r1 - r < 16 ? (int)(r1 - r) : 16;
        for (int64_t b0 = 0; b0 < nb; b0 += KCH) {
            int kb = nb - b0 < KCH ? (int)(nb - b0) : KCH;
            /* prefetch the next K chunk of these rows, or the first chunk of the next rows */
            size_t bsz = base == ORC_DT_Q8_0   ? sizeof(blk_q8_0) /* bytes per 32 elements */
                         : base == ORC_DT_Q6_K ? sizeof(blk_q6_K) / 8
                                               : sizeof(blk_q4_0);
            const uint8_t *pf = NULL;
            size_t pf_bytes = 0;
            if (b0 + kb < nb) {
                pf = (const uint8_t *)W + (size_t)r * ws + (size_t)(b0 + kb) * bsz;
                pf_bytes = (size_t)(nb - b0 - kb < KCH ? nb - b0 - kb : KCH) * bsz;
            } else if (r + 16 + nr <= r1) {
                pf = (const uint8_t *)W + (size_t)(r + 16) * ws;
                pf_bytes = (size_t)(nb < KCH ? nb : KCH) * bsz;
            }
            unpack_panel(base, rp, (const uint8_t *)W + (size_t)r * ws, ws, nb, b0, kb, nr, panel, dw,
                         mw ? mw : mwb, pf, pf_bytes);
            for (int64_t t = 0; t < n_tok; t += 16) {
                int nt = n_tok - t < 16 ? (int)(n_tok - t) : 16;
                if (nt != cur)
                    configure(cur = nt, halves);
                bool q8k = base == ORC_DT_Q4_K || base == ORC_DT_Q6_K;
                act_view a = {.base = (const uint8_t *)X + (size_t)t * xs +
                                      (q8k ? (size_t)(b0 / 8) * sizeof(blk_q8_K) : (size_t)b0 * sizeof(blk_q8a)),
                              .xs = xs, .q8k = q8k};
                if (halves)
                    tile_tokens_halves(panel, dw, mwb, kb, a, Y + t * ldy + r, ldy, nt, nr, b0 > 0);
                else
                    tile_tokens(panel, dw, mw, kb, a, Y + t * ldy + r, ldy, nt, nr, b0 > 0);
            }
        }
    }
    _tile_release();
}

bool orc_amx_handles(uint32_t wtype, int64_t n, int64_t n_tok)
{
    uint32_t base = wtype & 0xFF;
    bool kq = base == ORC_DT_Q4_K || base == ORC_DT_Q6_K;
    return n_tok >= ORC_AMX_MIN_TOKENS && n > 0 && n % (kq ? QKK : QK) == 0 &&
           (base == ORC_DT_Q4_0 || base == ORC_DT_Q8_0 || kq) &&
           (wtype == base || wtype == (base | ORC_QUANT_REPACKED));
}

bool orc_amx_matmul(uint32_t wtype, const void *W, size_t ws, int64_t n, const void *X, size_t xs,
                    int64_t n_tok, float *Y, int64_t ldy, int64_t r0, int64_t r1)
{
    if (!orc_amx_handles(wtype, n, n_tok) || r1 <= r0)
        return false;
    amx_matmul(wtype, W, ws, n, X, xs, n_tok, Y, ldy, r0, r1);
    return true;
}

#else

bool orc_amx_handles(uint32_t wtype, int64_t n, int64_t n_tok)
{
    (void)wtype;
    (void)n;
    (void)n_tok;
    return false;
}

bool orc_amx_matmul(uint32_t wtype, const void *W, size_t ws, int64_t n, const void *X, size_t xs,
                    int64_t n_tok, float *Y, int64_t ldy, int64_t r0, int64_t r1)
{
    (void)wtype, (void)W, (void)ws, (void)n, (void)X, (void)xs, (void)n_tok, (void)Y, (void)ldy;
    (void)r0, (void)r1;
    return false;
}

#endif
