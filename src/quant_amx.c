/* quant_amx.c - batched (prefill) products of Q4_0, Q8_0, Q4_K and Q6_K weights, plain or repacked,
 * with Intel AMX int8 tiles, and of F16/BF16 weights with AMX-BF16 tiles (second half of
 * the file). Only this file is compiled for AMX (target attribute), and quant.c calls it
 * only when cpu.c found AMX usable and the batch is large enough.
 *
 * C (16 tokens x 16 weight rows, int32) = A (16 tokens x 32 int8 of one block) .
 * B (the same block of 16 weight rows, in the VNNI layout: 8 rows of 16 x 4 bytes), one
 * tdpbssd per 32-element block; each block's integer tile is then scaled by
 * d_x(token) * d_w(row) into 16 float accumulators (one zmm per token), the same
 * per-block arithmetic as the other kernels. For the K-quants, whose Q8_K activations
 * have one scale per 256 elements, the tiles of 8 blocks are scaled by the weight scales
 * only and summed, and d_x applied once per super-block. A panel of 16 weight rows is
 * unpacked to int8 once and reused for every token tile, so unpacking costs 1/ntok per
 * product. */
#include "quant_amx.h"

#include "quant.h"
#include "quant_impl.h"

#include "cpu.h"
#include "dtype.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* bf16 bits of u rounded to nearest even (NaN and overflow are the caller's) */
static inline uint32_t rne_bf16(uint32_t u)
{
    return (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
}

/* one activation element: hi = a rounded to bf16, lo = the rest (exact in fp32) rounded
 * to bf16; where hi would overflow, hi = a truncated; a NaN stays a NaN in hi and
 * infinities and NaNs have lo = 0 */
static inline void split_bf16(float a, uint16_t *hi, uint16_t *lo)
{
    uint32_t u;
    memcpy(&u, &a, 4);
    if ((u & 0x7F800000u) == 0x7F800000u) {
        *hi = (uint16_t)((u >> 16) | ((u & 0x7FFFFFu) ? 0x40u : 0u));
        *lo = 0;
        return;
    }
    uint32_t h = rne_bf16(u);
    if ((h & 0x7F800000u) == 0x7F800000u)
        h = u & 0xFFFF0000u;
    float hf;
    memcpy(&hf, &h, 4);
    float r = a - hf; /* exact */
    uint32_t v;
    memcpy(&v, &r, 4);
    *hi = (uint16_t)(h >> 16);
    *lo = (uint16_t)(rne_bf16(v) >> 16);
}

static void act_bf16x2_scalar(const float *x, uint8_t *dst, int64_t n)
{
    int64_t nb = n / 32;
    for (int64_t b = 0; b < nb; b++)
        for (int k = 0; k < 32; k++) {
            uint16_t hi, lo;
            split_bf16(x[32 * b + k], &hi, &lo);
            size_t o = (size_t)(128 * b + 2 * k);
            memcpy(dst + o, &hi, 2);
            memcpy(dst + o + 64, &lo, 2);
        }
    memcpy(dst + 128 * nb, x + 32 * nb, (size_t)(n - 32 * nb) * sizeof(float));
}

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

/* The fp32 accumulators of nt <= 16 tokens x nr <= 16 rows: loaded from Y when acc_y
 * (later K chunks), else zero; and stored back. */
AMX_TARGET static inline void acc_load(__m512 acc[16], const float *Y, int64_t ldy, int nt, int nr, bool acc_y)
{
    __mmask16 m = (__mmask16)((1u << nr) - 1);
    for (int t = 0; t < 16; t++)
        acc[t] = t < nt && acc_y ? _mm512_maskz_loadu_ps(m, Y + t * ldy) : _mm512_setzero_ps();
}

AMX_TARGET static inline void acc_store(const __m512 acc[16], float *Y, int64_t ldy, int nt, int nr)
{
    __mmask16 m = (__mmask16)((1u << nr) - 1);
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(Y + t * ldy, m, acc[t]);
}

/* The integer tiles of blocks [b0, b0 + n) (n <= 8) of the panel against the token tile,
 * stored to c[i] (16 tokens x 16 rows each). */
AMX_TARGET static inline void tiles_int(const uint8_t *panel, act_view a, int b0, int n, int32_t c[][16][16])
{
    for (int i = 0; i < n; i++) {
        _tile_zero(0);
        _tile_loadd(1, act_q(a, b0 + i), (long)a.xs);
        _tile_loadd(2, panel + 512 * (b0 + i), 64);
        _tile_dpbssd(0, 1, 2);
        _tile_stored(0, c[i], 64);
    }
}

/* nt <= 16 tokens x the panel's kb blocks of Q4_0 / Q8_0 weights against blk_q8a
 * activations, added to Y when acc_y (later K chunks), else stored. The integer tiles of
 * 8 blocks are stored together, the next 8 issued while the vector units scale these by
 * d_x(token) * d_w(row) (reading a tile store right away stalls). */
AMX_TARGET static void tile_tokens(const uint8_t *panel, const float *dw, int kb, act_view a,
                                   float *Y, int64_t ldy, int nt, int nr, bool acc_y)
{
    __m512 acc[16];
    acc_load(acc, Y, ldy, nt, nr, acc_y);
    int32_t c[2][8][16][16] __attribute__((aligned(64)));
    int ng = (kb + 7) / 8;
    tiles_int(panel, a, 0, kb < 8 ? kb : 8, c[0]);
    for (int g = 0; g < ng; g++) {
        if (g + 1 < ng)
            tiles_int(panel, a, 8 * (g + 1), kb - 8 * (g + 1) < 8 ? kb - 8 * (g + 1) : 8, c[(g + 1) & 1]);
        int n = kb - 8 * g < 8 ? kb - 8 * g : 8;
        const float *wd = dw + 16 * 8 * g;
        for (int t = 0; t < nt; t++) {
            const uint8_t *xr = a.base + (size_t)t * a.xs + (size_t)(8 * g) * sizeof(blk_q8a);
            for (int i = 0; i < n; i++) {
                float xd;
                memcpy(&xd, xr + (size_t)i * sizeof(blk_q8a), sizeof xd);
                __m512 sc = _mm512_mul_ps(_mm512_load_ps(wd + 16 * i), _mm512_set1_ps(xd));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[g & 1][i][t])), sc, acc[t]);
            }
        }
    }
    acc_store(acc, Y, ldy, nt, nr);
}

/* As tile_tokens for Q4_K weights (with mins) against Q8_K activations, whose scale d_x is
 * one per 8 blocks (256 elements): per token, sum over the 8 blocks s_w C - m_w sum_k x_k
 * and scale by d_x once, instead of scaling every block by d_x d_w. kb is a multiple of 8. */
AMX_TARGET static void tile_tokens_q4k(const uint8_t *panel, const float *dw, const float *mw, int kb,
                                       act_view a, float *Y, int64_t ldy, int nt, int nr, bool acc_y)
{
    __m512 acc[16];
    acc_load(acc, Y, ldy, nt, nr, acc_y);
    int32_t c[2][8][16][16] __attribute__((aligned(64)));
    int nsb = kb / 8;
    tiles_int(panel, a, 0, 8, c[0]);
    for (int sb = 0; sb < nsb; sb++) {
        if (sb + 1 < nsb)
            tiles_int(panel, a, 8 * (sb + 1), 8, c[(sb + 1) & 1]);
        const float *wd = dw + 16 * 8 * sb, *wm = mw + 16 * 8 * sb;
        for (int t = 0; t < nt; t++) {
            const blk_q8_K *x = (const blk_q8_K *)(a.base + (size_t)t * a.xs) + sb;
            /* sums of the 8 blocks' 32 codes, from the 16 sums of 16 */
            __m256i s16 = _mm256_loadu_si256((const __m256i *)x->bsums);
            __m256 xsum = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
            float xs[8];
            _mm256_storeu_ps(xs, xsum);
            __m512 in = _mm512_setzero_ps();
            for (int i = 0; i < 8; i++) {
                in = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[sb & 1][i][t])),
                                     _mm512_load_ps(wd + 16 * i), in);
                in = _mm512_fnmadd_ps(_mm512_load_ps(wm + 16 * i), _mm512_set1_ps(xs[i]), in);
            }
            acc[t] = _mm512_fmadd_ps(in, _mm512_set1_ps(x->d), acc[t]);
        }
    }
    acc_store(acc, Y, ldy, nt, nr);
}

/* Q6_K weights against Q8_K activations (one d_x per 8 blocks): blocks made of two
 * 16-element groups with their own scales (dw for the first, d2 for the second), two
 * K = 16 products per block. Per token, the 8 blocks' groups scaled by their weight
 * scales are summed first and d_x applied once per super-block. kb is a multiple of 8. */
AMX_TARGET static void tile_tokens_q6k(const uint8_t *panel, const float *dw, const float *d2, int kb,
                                       act_view a, float *Y, int64_t ldy, int nt, int nr, bool acc_y)
{
    __m512 acc[16];
    acc_load(acc, Y, ldy, nt, nr, acc_y);
    int32_t c[2][8][2][16][16] __attribute__((aligned(64)));
    int nsb = kb / 8;
    for (int sb = -1; sb < nsb; sb++) {
        if (sb + 1 < nsb)
            for (int i = 0; i < 8; i++) {
                int b = 8 * (sb + 1) + i;
                const uint8_t *q = act_q(a, b);
                const uint8_t *p = panel + 512 * b;
                _tile_zero(0);
                _tile_zero(3);
                _tile_loadd(1, q, (long)a.xs);
                _tile_loadd(2, p, 64);
                _tile_loadd(4, q + 16, (long)a.xs);
                _tile_loadd(5, p + 256, 64);
                _tile_dpbssd(0, 1, 2);
                _tile_dpbssd(3, 4, 5);
                _tile_stored(0, c[(sb + 1) & 1][i][0], 64);
                _tile_stored(3, c[(sb + 1) & 1][i][1], 64);
            }
        if (sb < 0)
            continue;
        const float *w0 = dw + 16 * 8 * sb, *w1 = d2 + 16 * 8 * sb;
        for (int t = 0; t < nt; t++) {
            __m512 in = _mm512_setzero_ps();
            for (int i = 0; i < 8; i++) {
                in = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[sb & 1][i][0][t])),
                                     _mm512_load_ps(w0 + 16 * i), in);
                in = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c[sb & 1][i][1][t])),
                                     _mm512_load_ps(w1 + 16 * i), in);
            }
            float xd = ((const blk_q8_K *)(a.base + (size_t)t * a.xs) + sb)->d;
            acc[t] = _mm512_fmadd_ps(in, _mm512_set1_ps(xd), acc[t]);
        }
    }
    acc_store(acc, Y, ldy, nt, nr);
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
                /* K-quant rows are whole 256-element super-blocks, so kb % 8 == 0 there */
                if (halves)
                    tile_tokens_q6k(panel, dw, mwb, kb, a, Y + t * ldy + r, ldy, nt, nr, b0 > 0);
                else if (mw)
                    tile_tokens_q4k(panel, dw, mw, kb, a, Y + t * ldy + r, ldy, nt, nr, b0 > 0);
                else
                    tile_tokens(panel, dw, kb, a, Y + t * ldy + r, ldy, nt, nr, b0 > 0);
            }
        }
    }
    _tile_release();
}

/* ------------------------------------------------------------------------------------
 * F16 and BF16 weights on AMX-BF16 tiles (tdpbf16ps: fp32 C += bf16 A . bf16 B, A = 16
 * tokens x 32 elements, B = the same 32 elements of 16 weight rows, in pairs).
 *
 * Precision: an F16 weight w (11-bit significand) is exactly w_hi + w_lo, two bf16 (w_hi
 * w rounded to 8 bits, w_lo the rest: at most 3 bits; f16 subnormals are normal bf16);
 * an F32 activation a is a_hi + a_lo to 2^-17 (both rounded to nearest), converted once
 * per token by orc_amx_act_bf16x2. Each product is a_hi w_hi + a_hi w_lo + a_lo w_hi
 * (three tile products; the dropped a_lo w_lo is at most 2^-16 of the product, of either
 * sign, typically far less), a BF16 weight is exact and takes a_hi w + a_lo w. The tiles
 * accumulate in fp32, as the FMA kernels do.
 *
 * Data: an activation row holds, per 32-element block, its 32 hi halves then its 32 lo
 * halves (bf16, in order); the last n % 32 elements stay fp32 (4n bytes in all, the size
 * of the F32 rows). Per K chunk (KCB blocks) the rows of a token group are copied into a
 * per-thread scratch tile after tile (16 rows of 64 bytes, missing tokens zero), so the
 * tile loads read 1 KiB runs rather than 16 rows a power of two apart, which collide in
 * the caches; the next chunk is copied into a second buffer a few rows after each kernel
 * call, overlapping its reads (from L3: a product reads all its activations once per row
 * group) with the tiles' work. Weights are converted per panel of 16 rows x KCB blocks into a stack
 * scratch in the B layout (row k = elements 2k, 2k + 1 of the 16 weight rows: a 16 x 16
 * transpose of 32-bit pairs, then the hi/lo split for F16), and every token tile of the
 * group passes over the panel before the next is converted: no copy of the weights, the
 * conversion amortized over up to TG / 16 token tiles.
 *
 * Blocking: C is 2 token tiles x 2 panels (4 fp32 tiles, 32 x 32), the other four tiles
 * hold two A and two B operands. The loops run row group (RG rows) > token group (TG) >
 * K chunk > panel pair > token tile pair; the partial sums of a row group stay in a
 * per-thread fp32 scratch (tile after tile) between K chunks, and the last chunk adds
 * the fp32 tail and writes Y. Per-thread heap scratch: 1 MiB (partial sums 512 KiB, two
 * activation chunks of 256 KiB); small products use a stack scratch instead. */

#define BF16_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

#define KCB 4    /* blocks of 32 per K chunk */
#define RG 256   /* rows per row group */
#define TG 512   /* tokens per token group */

/* 16 bf16 rounded to nearest even, in the high words */
BF16_TARGET static inline __m512i rne16(__m512i u)
{
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd));
    return _mm512_and_si512(u, _mm512_set1_epi32((int)0xFFFF0000u));
}

/* the high words of a then b, in order (32 bf16) */
BF16_TARGET static inline __m512i high_words(__m512i a, __m512i b)
{
    const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29,
                                         27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(a, odd, b);
}

BF16_TARGET static void act_bf16x2_avx512(const float *x, uint8_t *dst, int64_t n)
{
    int64_t nb = n / 32;
    const __m512i mhi = _mm512_set1_epi32((int)0xFFFF0000u), mexp = _mm512_set1_epi32(0x7F800000);
    const __m512i quiet = _mm512_set1_epi32(0x00400000);
    for (int64_t b = 0; b < nb; b++) {
        __m512i h[2], l[2];
        for (int s = 0; s < 2; s++) {
            __m512 v = _mm512_loadu_ps(x + 32 * b + 16 * s);
            __m512i u = _mm512_castps_si512(v);
            __mmask16 nf = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, mexp), mexp);
            __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            __m512i hu = rne16(u);
            /* non-finite inputs, and finite ones that would round to infinity: truncated */
            __mmask16 ov = _mm512_cmpeq_epi32_mask(_mm512_and_si512(hu, mexp), mexp) | nf;
            hu = _mm512_mask_and_epi32(hu, ov, u, mhi);
            __m512 r = _mm512_maskz_sub_ps((__mmask16)~nf, v, _mm512_castsi512_ps(hu));
            h[s] = _mm512_mask_or_epi32(hu, nan, hu, quiet);
            l[s] = rne16(_mm512_castps_si512(r));
        }
        _mm512_storeu_si512(dst + 128 * b, high_words(h[0], h[1]));
        _mm512_storeu_si512(dst + 128 * b + 64, high_words(l[0], l[1]));
    }
    memcpy(dst + 128 * nb, x + 32 * nb, (size_t)(n - 32 * nb) * sizeof(float));
}

/* 16 x 16 32-bit transpose: r[j] lane k -> r[k] lane j */
BF16_TARGET static inline void transpose16(__m512i r[16])
{
    __m512i a[16], b[16];
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    /* b[4 i + c] lane L = rows 4i..4i+3 of column 4L + c */
    for (int c = 0; c < 4; c++) {
        __m512i u0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44);
        __m512i u1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
        __m512i v0 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44);
        __m512i v1 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(u0, v0, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(u0, v0, 0xDD);
        r[8 + c] = _mm512_shuffle_i32x4(u1, v1, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(u1, v1, 0xDD);
    }
}

/* Blocks [b0, b0 + kb) of rows [0, nr) of W (nr <= 16; missing rows are zero) into the B
 * layout: block i's hi tile at out + 2048 i (row k, lane j = elements 2k, 2k + 1 of
 * weight row j), its lo tile (F16 only) 1024 bytes further. */
BF16_TARGET static void convert_panel(bool f16, const uint8_t *W, size_t ws, int nr, int64_t b0, int kb,
                                      uint8_t *out)
{
    for (int i = 0; i < kb; i++) {
        __m512i r[16];
        for (int j = 0; j < 16; j++)
            r[j] = j < nr ? _mm512_loadu_si512(W + (size_t)j * ws + (size_t)(b0 + i) * 64) : _mm512_setzero_si512();
        /* pairs of 16-bit weights move as 32-bit lanes: row k = pair k of every row */
        transpose16(r);
        uint8_t *o = out + 2048 * i;
        if (!f16) {
            for (int k = 0; k < 16; k++)
                _mm512_store_si512(o + 64 * k, r[k]);
            continue;
        }
        for (int k = 0; k < 16; k++) {
            __m512 v0 = _mm512_cvtph_ps(_mm512_castsi512_si256(r[k]));
            __m512 v1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(r[k], 1));
            /* hi = w rounded to bf16; w - hi is exact, at most 3 significant bits (a
             * multiple of w's f16 ulp, at most 4 of them), so its bf16 is exact */
            __m512i h0 = rne16(_mm512_castps_si512(v0)), h1 = rne16(_mm512_castps_si512(v1));
            __m512i l0 = _mm512_castps_si512(_mm512_sub_ps(v0, _mm512_castsi512_ps(h0)));
            __m512i l1 = _mm512_castps_si512(_mm512_sub_ps(v1, _mm512_castsi512_ps(h1)));
            _mm512_store_si512(o + 64 * k, high_words(h0, h1));
            _mm512_store_si512(o + 1024 + 64 * k, high_words(l0, l1));
        }
    }
}

/* One token's blocks [b0, b0 + kb) (row at x; NULL: zeros) into row r of the packed
 * tiles at out: block i's hi tile at out + 2048 i, its lo tile 1024 further. */
BF16_TARGET static inline void pack_row(const uint8_t *x, int64_t b0, int kb, uint8_t *out, int r)
{
    for (int i = 0; i < kb; i++) {
        __m512i h = _mm512_setzero_si512(), l = h;
        if (x) {
            h = _mm512_loadu_si512(x + (size_t)(b0 + i) * 128);
            l = _mm512_loadu_si512(x + (size_t)(b0 + i) * 128 + 64);
        }
        _mm512_store_si512(out + 2048 * i + 64 * r, h);
        _mm512_store_si512(out + 2048 * i + 1024 + 64 * r, l);
    }
}

/* A K chunk of a token group to pack: tokens [t0, t1), blocks [b0, b0 + kb); rows are
 * packed in order, `done` of the 16-row-rounded count so far. */
typedef struct {
    int64_t t0, t1, b0;
    int kb, rows, done;
    uint8_t *out;
} pack_job;

BF16_TARGET static void pack_some(pack_job *j, const uint8_t *X, size_t xs, int count)
{
    for (; count > 0 && j->done < j->rows; count--, j->done++) {
        int64_t t = j->t0 + j->done;
        pack_row(t < j->t1 ? X + (size_t)t * xs : NULL, j->b0, j->kb, j->out + (size_t)(j->done / 16) * KCB * 2048,
                 j->done % 16);
    }
}

/* tiles: 0-3 = C (token tile q, panel p at 2q + p), 4-5 = A (token tile q), 6-7 = B
 * (panel p); all 16 x 64 bytes */
BF16_TARGET static void configure_bf16(void)
{
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    /* not _tile_loadconfig: its asm operand is the first 8 bytes only, and gcc dropped
     * the stores of colsb as dead */
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
}

#define DP(NP, NQ)                                                                                           \
    do {                                                                                                     \
        _tile_dpbf16ps(0, 4, 6);                                                                             \
        if (NP == 2)                                                                                         \
            _tile_dpbf16ps(1, 4, 7);                                                                         \
        if (NQ == 2) {                                                                                       \
            _tile_dpbf16ps(2, 5, 6);                                                                         \
            if (NP == 2)                                                                                     \
                _tile_dpbf16ps(3, 5, 7);                                                                     \
        }                                                                                                    \
    } while (0)

/* C tiles of NQ token tiles (packed at A, A + KCB * 2048) x NP panels (B, B + KCB * 2048)
 * over kb blocks; C starts from zero (first) or from c[2q + p] (1 KiB each) and is
 * stored back there. */
__attribute__((always_inline)) BF16_TARGET static inline void
bf16_kernel(int NP, int NQ, bool f16, const uint8_t *A, const uint8_t *B, int kb, float *const c[4], bool first)
{
    if (first) {
        _tile_zero(0);
        if (NP == 2)
            _tile_zero(1);
        if (NQ == 2) {
            _tile_zero(2);
            if (NP == 2)
                _tile_zero(3);
        }
    } else {
        _tile_loadd(0, c[0], 64);
        if (NP == 2)
            _tile_loadd(1, c[1], 64);
        if (NQ == 2) {
            _tile_loadd(2, c[2], 64);
            if (NP == 2)
                _tile_loadd(3, c[3], 64);
        }
    }
    const uint8_t *A1 = A + KCB * 2048, *B1 = B + KCB * 2048;
    for (int i = 0; i < kb; i++) {
        /* a_lo w_hi, a_hi w_hi, then a_hi w_lo (F16) */
        _tile_loadd(4, A + 2048 * i + 1024, 64);
        if (NQ == 2)
            _tile_loadd(5, A1 + 2048 * i + 1024, 64);
        _tile_loadd(6, B + 2048 * i, 64);
        if (NP == 2)
            _tile_loadd(7, B1 + 2048 * i, 64);
        DP(NP, NQ);
        _tile_loadd(4, A + 2048 * i, 64);
        if (NQ == 2)
            _tile_loadd(5, A1 + 2048 * i, 64);
        DP(NP, NQ);
        if (f16) {
            _tile_loadd(6, B + 2048 * i + 1024, 64);
            if (NP == 2)
                _tile_loadd(7, B1 + 2048 * i + 1024, 64);
            DP(NP, NQ);
        }
    }
    _tile_stored(0, c[0], 64);
    if (NP == 2)
        _tile_stored(1, c[1], 64);
    if (NQ == 2) {
        _tile_stored(2, c[2], 64);
        if (NP == 2)
            _tile_stored(3, c[3], 64);
    }
}

BF16_TARGET static void bf16_kernel_any(int np, int nq, bool f16, const uint8_t *A, const uint8_t *B, int kb,
                                        float *const c[4], bool first)
{
    if (np == 2 && nq == 2)
        bf16_kernel(2, 2, f16, A, B, kb, c, first);
    else if (np == 2)
        bf16_kernel(2, 1, f16, A, B, kb, c, first);
    else if (nq == 2)
        bf16_kernel(1, 2, f16, A, B, kb, c, first);
    else
        bf16_kernel(1, 1, f16, A, B, kb, c, first);
}

/* Y rows [row, row + nr) of nt tokens = the finished tile c (16 x 16) plus the fp32 tail
 * (m < 32 elements: activations at X + 128 nb of each token row, weights wt[i][16]) */
BF16_TARGET static void bf16_epilogue(const float *c, int nt, int nr, const uint8_t *X, size_t xs, int64_t nb,
                                      int m, const float *wt, float *Y, int64_t ldy)
{
    __mmask16 mk = (__mmask16)((1u << nr) - 1);
    for (int t = 0; t < nt; t++) {
        __m512 v = _mm512_load_ps(c + 16 * t);
        const float *xt = (const float *)(X + (size_t)t * xs + 128 * (size_t)nb);
        for (int i = 0; i < m; i++)
            v = _mm512_fmadd_ps(_mm512_set1_ps(xt[i]), _mm512_load_ps(wt + 16 * i), v);
        _mm512_mask_storeu_ps(Y + t * ldy, mk, v);
    }
}

/* per-thread scratch, freed at thread exit: the partial sums (RG x TG floats) and the
 * packed activations of two K chunks (TG / 16 x KCB tiles of 2 KiB each) */
#define ACC_BYTES ((size_t)RG * TG * sizeof(float))
#define APACK_BYTES ((size_t)(TG / 16) * KCB * 2048)
static pthread_key_t g_scr_key;
static pthread_once_t g_scr_once = PTHREAD_ONCE_INIT;
static bool g_scr_key_ok;
static _Thread_local uint8_t *t_scr;

static void scr_make_key(void)
{
    g_scr_key_ok = pthread_key_create(&g_scr_key, free) == 0;
}

static uint8_t *bf16_scratch(void)
{
    if (t_scr)
        return t_scr;
    pthread_once(&g_scr_once, scr_make_key);
    if (!g_scr_key_ok)
        return NULL;
    uint8_t *p = aligned_alloc(64, ACC_BYTES + 2 * APACK_BYTES);
    if (p && pthread_setspecific(g_scr_key, p) != 0) {
        free(p);
        p = NULL;
    }
    return t_scr = p;
}

/* the chunk after (g0, t0, b0) in loop order, for a group of rg_rows x tg_toks; false
 * when it is the last */
static bool next_chunk(int64_t g0, int64_t t0, int64_t b0, int64_t r1, int64_t n_tok, int64_t nb, int64_t rg_rows,
                       int64_t tg_toks, pack_job *j)
{
    if (b0 + KCB < nb) {
        j->b0 = b0 + KCB;
    } else if (t0 + tg_toks < n_tok) {
        t0 += tg_toks;
        j->b0 = 0;
    } else if (g0 + rg_rows < r1) {
        t0 = 0;
        j->b0 = 0;
    } else {
        return false;
    }
    j->t0 = t0;
    j->t1 = n_tok - t0 < tg_toks ? n_tok : t0 + tg_toks;
    j->kb = nb - j->b0 < KCB ? (int)(nb - j->b0) : KCB;
    j->rows = (int)((j->t1 - j->t0 + 15) / 16 * 16);
    j->done = 0;
    return true;
}

BF16_TARGET static void bf16_matmul(bool f16, const uint8_t *W, size_t ws, int64_t n, const uint8_t *X, size_t xs,
                                    int64_t n_tok, float *Y, int64_t ldy, int64_t r0, int64_t r1)
{
    int64_t nb = n / 32;
    int m = (int)(n % 32);
    /* small products (and a failed allocation of the heap scratch): groups of at most
     * 32 rows x 32 tokens in a stack scratch */
    enum { SRG = 32, STG = 32 };
    uint8_t stack_scr[SRG * STG * sizeof(float) + 2 * (STG / 16) * KCB * 2048] __attribute__((aligned(64)));
    uint8_t *scr = r1 - r0 <= SRG && n_tok <= STG ? NULL : bf16_scratch();
    int64_t rg_rows = RG, tg_toks = TG;
    float *acc;
    uint8_t *apack[2];
    if (scr) {
        acc = (float *)scr;
        apack[0] = scr + ACC_BYTES;
        apack[1] = scr + ACC_BYTES + APACK_BYTES;
    } else {
        rg_rows = SRG;
        tg_toks = STG;
        acc = (float *)stack_scr;
        apack[0] = stack_scr + SRG * STG * sizeof(float);
        apack[1] = apack[0] + (STG / 16) * KCB * 2048;
    }
    uint8_t panel[2 * KCB * 2048] __attribute__((aligned(64)));
    float wt[2][31 * 16] __attribute__((aligned(64)));
    configure_bf16();
    /* the activations of the first chunk now; each later chunk's are packed into the
     * other buffer a few rows after each kernel call of the chunk before, so their
     * loads from L3 overlap the tiles' work */
    pack_job pj = {.t0 = 0, .t1 = n_tok < tg_toks ? n_tok : tg_toks, .b0 = 0, .kb = nb < KCB ? (int)nb : KCB};
    pj.rows = (int)((pj.t1 + 15) / 16 * 16);
    pj.out = apack[0];
    pack_some(&pj, X, xs, pj.rows);
    int cur = 0;
    for (int64_t g0 = r0; g0 < r1; g0 += rg_rows) {
        int64_t g1 = r1 - g0 < rg_rows ? r1 : g0 + rg_rows;
        int npan = (int)((g1 - g0 + 15) / 16);
        for (int64_t t0 = 0; t0 < n_tok; t0 += tg_toks) {
            int64_t t1 = n_tok - t0 < tg_toks ? n_tok : t0 + tg_toks;
            int ntt = (int)((t1 - t0 + 15) / 16);
            for (int64_t b0 = 0; b0 < nb; b0 += KCB) {
                int kb = nb - b0 < KCB ? (int)(nb - b0) : KCB;
                bool first = b0 == 0, last = b0 + kb >= nb;
                const uint8_t *A = apack[cur];
                bool more = next_chunk(g0, t0, b0, r1, n_tok, nb, rg_rows, tg_toks, &pj);
                pj.out = apack[cur ^ 1];
                int calls = (npan + 1) / 2 * ((ntt + 1) / 2);
                int pack_per_call = more ? (pj.rows + calls - 1) / calls : 0;
                for (int p = 0; p < npan; p += 2) {
                    int np = npan - p < 2 ? 1 : 2;
                    int nr[2];
                    for (int i = 0; i < np; i++) {
                        int64_t row = g0 + 16 * (p + i);
                        nr[i] = g1 - row < 16 ? (int)(g1 - row) : 16;
                        const uint8_t *wr = W + (size_t)row * ws;
                        convert_panel(f16, wr, ws, nr[i], b0, kb, panel + i * KCB * 2048);
                        if (last && m)
                            for (int e = 0; e < m; e++)
                                for (int jr = 0; jr < 16; jr++) {
                                    float v = 0.0f;
                                    if (jr < nr[i]) {
                                        uint16_t hv;
                                        memcpy(&hv, wr + (size_t)jr * ws + 2 * (size_t)(32 * nb + e), 2);
                                        v = f16 ? _cvtsh_ss(hv) : orc_bf16_to_f32(hv);
                                    }
                                    wt[i][16 * e + jr] = v;
                                }
                    }
                    /* the next panel pair's weights (or the next chunk's first) come in
                     * while the tokens pass over this one, spread over the kernel calls */
                    int64_t prow = -1, pb = b0, pkb = kb;
                    if (p + 2 < npan)
                        prow = g0 + 16 * (p + 2);
                    else if (!last) {
                        prow = g0;
                        pb = b0 + KCB;
                        pkb = nb - pb < KCB ? nb - pb : KCB;
                    }
                    int64_t prows = prow < 0 ? 0 : (g1 - prow < 32 ? g1 - prow : 32);
                    int64_t pf_lines = prows * pkb, pf_done = 0;
                    int64_t pf_per_call = (pf_lines + (ntt + 1) / 2 - 1) / ((ntt + 1) / 2);
                    for (int q = 0; q < ntt; q += 2) {
                        int nq = ntt - q < 2 ? 1 : 2;
                        float *c[4];
                        for (int k = 0; k < 4; k++)
                            c[k] = acc + (size_t)((p + (k & 1)) * ntt + q + (k >> 1)) * 256;
                        bf16_kernel_any(np, nq, f16, A + (size_t)q * KCB * 2048, panel, kb, c, first);
                        pack_some(&pj, X, xs, pack_per_call);
                        for (int64_t e = 0; e < pf_per_call && pf_done < pf_lines; e++, pf_done++)
                            _mm_prefetch((const char *)W + (size_t)(prow + pf_done / pkb) * ws +
                                             (size_t)(pb + pf_done % pkb) * 64,
                                         _MM_HINT_T1);
                        if (!last)
                            continue;
                        for (int k = 0; k < 4; k++) {
                            int pi = k & 1, qi = k >> 1;
                            if (pi >= np || qi >= nq)
                                continue;
                            int64_t tok = t0 + 16 * (q + qi);
                            int nt = t1 - tok < 16 ? (int)(t1 - tok) : 16;
                            bf16_epilogue(c[k], nt, nr[pi], X + (size_t)tok * xs, xs, nb, m, wt[pi],
                                          Y + tok * ldy + g0 + 16 * (p + pi), ldy);
                        }
                    }
                }
                if (more)
                    pack_some(&pj, X, xs, pj.rows);
                cur ^= 1;
            }
        }
    }
    _tile_release();
}

void orc_amx_act_bf16x2(const float *x, void *dst, int64_t n)
{
    if (orc_cpu_get()->avx512f && orc_cpu_get()->avx512bw && orc_cpu_get()->avx512dq)
        act_bf16x2_avx512(x, dst, n);
    else
        act_bf16x2_scalar(x, dst, n);
}

bool orc_amx_handles(uint32_t wtype, int64_t n, int64_t n_tok)
{
    if (wtype == ORC_DT_F16 || wtype == ORC_DT_BF16)
        return n_tok >= (wtype == ORC_DT_F16 ? ORC_AMX_F16_MIN_TOKENS : ORC_AMX_BF16_MIN_TOKENS) && n >= 32;
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
    if (wtype == ORC_DT_F16 || wtype == ORC_DT_BF16)
        bf16_matmul(wtype == ORC_DT_F16, W, ws, n, X, xs, n_tok, Y, ldy, r0, r1);
    else
        amx_matmul(wtype, W, ws, n, X, xs, n_tok, Y, ldy, r0, r1);
    return true;
}

#else

void orc_amx_act_bf16x2(const float *x, void *dst, int64_t n)
{
    act_bf16x2_scalar(x, dst, n);
}

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
