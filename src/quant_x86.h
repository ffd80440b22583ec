/* quant_x86.h - the x86 tile kernels, written once and compiled twice: by quant_avx2.c
 * (AVX2+FMA+F16C) and by quant_avx512.c (adds AVX-512 VL/BW/VNNI: 32 vector registers,
 * vpdpbusd/vpdpwssd). Include only from those files, after the target pragma, with
 * X86_VNNI (0/1), X86_MAXNT (tokens per tile) and X86_TABLE (the table's name) defined.
 *
 * Every kernel computes an NR x NT tile (NR, NT compile-time) over the whole row: rows
 * outer, tokens inner, so each weight block is unpacked once and reused for every token
 * while activations come from L1. Integer dot products are exact; each block's (or
 * super-block's) integer sum is scaled into float accumulators, as llama.cpp does. */
#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
/* the NR/NT/sub-block loops must unroll so accumulators live in registers, even at -O2 */
#define UNROLL _Pragma("GCC unroll 8")

AI float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* acc + sum of u8*s8 products in groups of 4 (u < 128 for the AVX2 path's int16 pairs) */
AI __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s)
{
#if X86_VNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* acc + pairwise int16 products summed to int32 */
AI __m256i madd_acc(__m256i acc, __m256i a, __m256i b)
{
#if X86_VNNI
    return _mm256_dpwssd_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

/* 32 nibbles of 16 bytes: low nibbles in bytes 0..15, high nibbles in 16..31 */
AI __m256i unpack_nibbles(const uint8_t *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

/* 32 bits -> 32 bytes, 0xFF where the bit is set (bit i -> byte i) */
AI __m256i bits_to_bytes(uint32_t x)
{
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000LL, 0x0101010101010101LL,
                                            0x0202020202020202LL, 0x0303030303030303LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfeLL));
    return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1LL));
}

AI __m256i iq4nl_table(int bias)
{
    /* codebook in both 128-bit lanes, optionally biased by +128 for u8 dot products */
    __m128i t = _mm_loadu_si128((const __m128i *)orc_iq4nl_values);
    if (bias)
        t = _mm_xor_si128(t, _mm_set1_epi8((char)0x80));
    return _mm256_set_m128i(t, t);
}

#define TILE_ARGS int64_t n, const uint8_t *W, size_t ws, const uint8_t *X, size_t xs, float *Y, int64_t ldy

/* ------------------------------------------------------------ float weights */

AI __m256 load_w8(uint32_t type, const uint8_t *w, int64_t i)
{
    if (type == ORC_DT_F32)
        return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (type == ORC_DT_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AI float load_w1(uint32_t type, const uint8_t *w, int64_t i)
{
    if (type == ORC_DT_F32)
        return ((const float *)w)[i];
    uint16_t v;
    memcpy(&v, w + 2 * i, 2);
    return type == ORC_DT_F16 ? h2f(v) : orc_bf16_to_f32(v);
}

AI void k_float(uint32_t type, int NR, int NT, TILE_ARGS)
{
    __m256 acc[4][4];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            acc[r][t] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv[4];
        UNROLL
        for (int t = 0; t < NT; t++)
            xv[t] = _mm256_loadu_ps((const float *)(X + (size_t)t * xs) + i);
        UNROLL
        for (int r = 0; r < NR; r++) {
            __m256 wv = load_w8(type, W + (size_t)r * ws, i);
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++) {
        UNROLL
        for (int t = 0; t < NT; t++) {
            float s = hsum_ps(acc[r][t]);
            for (int64_t j = i; j < n; j++)
                s += load_w1(type, W + (size_t)r * ws, j) * ((const float *)(X + (size_t)t * xs))[j];
            Y[t * ldy + r] = s;
        }
    }
}

/* ------------------------------------------------------------ 32-element blocks */

AI size_t blk32_size(uint32_t type)
{
    return type == ORC_DT_Q4_0 || type == ORC_DT_IQ4_NL ? 18
           : type == ORC_DT_Q4_1                        ? 20
           : type == ORC_DT_Q5_0                        ? 22
           : type == ORC_DT_Q5_1                        ? 24
                                                        : 34;
}

/* One 32-element block b of NR rows against NT tokens, into acc (and macc for mins). */
AI void blk32_step(uint32_t type, int NR, int NT, int64_t b, const uint8_t *W, size_t ws,
                   const uint8_t *X, size_t xs, __m256 acc[4][4], float macc[4][4], __m256i tbl)
{
    const size_t bsz = blk32_size(type);
    const bool has_min = type == ORC_DT_Q4_1 || type == ORC_DT_Q5_1;
    /* signed weights: AVX2 multiplies |w| by sign-adjusted x; VNNI adds 128 to w and
     * subtracts 128 * sum(x), which the activation block carries */
    const bool is_signed = type == ORC_DT_Q8_0 || type == ORC_DT_IQ4_NL;
    const int corr_mul = type == ORC_DT_Q4_0 ? -8 : type == ORC_DT_Q5_0 ? -16 : (is_signed && X86_VNNI) ? -128 : 0;
    UNROLL
    for (int r = 0; r < NR; r++) {
        const uint8_t *wb = W + (size_t)r * ws + (size_t)b * bsz;
        uint16_t hd, hm = 0;
        memcpy(&hd, wb, 2);
        if (has_min)
            memcpy(&hm, wb + 2, 2);
        float dw = h2f(hd), mw = has_min ? h2f(hm) : 0.0f;
        __m256i u;
        if (type == ORC_DT_Q4_0 || type == ORC_DT_IQ4_NL) {
            u = unpack_nibbles(wb + 2);
            if (type == ORC_DT_IQ4_NL)
                u = _mm256_shuffle_epi8(tbl, u);
        } else if (type == ORC_DT_Q4_1) {
            u = unpack_nibbles(wb + 4);
        } else if (type == ORC_DT_Q5_0 || type == ORC_DT_Q5_1) {
            const uint8_t *p = wb + (type == ORC_DT_Q5_0 ? 2 : 4);
            uint32_t qh;
            memcpy(&qh, p, 4);
            u = _mm256_or_si256(unpack_nibbles(p + 4),
                                _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10)));
        } else {
            u = _mm256_loadu_si256((const __m256i *)(wb + 2));
            if (X86_VNNI)
                u = _mm256_xor_si256(u, _mm256_set1_epi8((char)0x80));
        }
        __m256i ua = u;
        if (is_signed && !X86_VNNI)
            ua = _mm256_sign_epi8(u, u);
        UNROLL
        for (int t = 0; t < NT; t++) {
            const blk_q8a *xb = (const blk_q8a *)(X + (size_t)t * xs) + b;
            __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
            if (is_signed && !X86_VNNI)
                xq = _mm256_sign_epi8(xq, u);
            __m256i init = corr_mul ? _mm256_castsi128_si256(_mm_cvtsi32_si128(corr_mul * xb->sum))
                                    : _mm256_setzero_si256();
            __m256i p = dot_u8s8(init, ua, xq);
            acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * xb->d), acc[r][t]);
            if (has_min)
                macc[r][t] += mw * xb->d * (float)xb->sum;
        }
    }
}

AI void k_blk32(uint32_t type, int NR, int NT, TILE_ARGS)
{
    __m256 acc[4][4];
    float macc[4][4];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
            macc[r][t] = 0.0f;
        }
    const __m256i tbl = iq4nl_table(X86_VNNI);
    const int64_t nb = n / QK;
    for (int64_t b = 0; b < nb; b++)
        blk32_step(type, NR, NT, b, W, ws, X, xs, acc, macc, tbl);
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            Y[t * ldy + r] = hsum_ps(acc[r][t]) + macc[r][t];
}

/* Repacked Q4_0 / Q8_0 (blk_q4_0x8 / blk_q8_0x8 against blk_q8ax8): 32-bit lane k of
 * every partial sum is block k of the group, so one cvt + one fma per 8 blocks applies
 * all scales, and the zero-point correction is a vector op per group. */
AI void k_x8(uint32_t type, int NR, int NT, TILE_ARGS)
{
    const size_t gsz = type == ORC_DT_Q4_0 ? sizeof(blk_q4_0x8) : sizeof(blk_q8_0x8);
    __m256 acc[4][4];
    float macc[4][4];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
            macc[r][t] = 0.0f;
        }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const int64_t nb = n / QK, ng = nb / 8;
    for (int64_t g = 0; g < ng; g++) {
        const blk_q8ax8 *xg[4];
        UNROLL
        for (int t = 0; t < NT; t++)
            xg[t] = (const blk_q8ax8 *)(X + (size_t)t * xs) + g;
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *wg = W + (size_t)r * ws + (size_t)g * gsz;
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)wg));
            /* with few tokens, split each sum over C chains: VNNI's latency would bind */
            const int C = X86_VNNI ? (NT == 1 ? 4 : NT == 2 ? 2 : 1) : 1;
            __m256i p[4], pc[4][4];
            UNROLL
            for (int t = 0; t < NT; t++)
                UNROLL
                for (int c = 0; c < C; c++)
                    pc[t][c] = _mm256_setzero_si256();
            if (type == ORC_DT_Q4_0) {
                UNROLL
                for (int s4 = 0; s4 < 4; s4++) {
                    __m256i w = _mm256_loadu_si256((const __m256i *)(wg + 16 + 32 * s4));
                    __m256i lo = _mm256_and_si256(w, m4);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                    UNROLL
                    for (int t = 0; t < NT; t++) {
                        pc[t][(2 * s4) % C] = dot_u8s8(pc[t][(2 * s4) % C], lo, _mm256_loadu_si256((const __m256i *)(xg[t]->qs + 32 * s4)));
                        pc[t][(2 * s4 + 1) % C] = dot_u8s8(pc[t][(2 * s4 + 1) % C], hi, _mm256_loadu_si256((const __m256i *)(xg[t]->qs + 32 * (s4 + 4))));
                    }
                }
            } else {
                UNROLL
                for (int s8 = 0; s8 < 8; s8++) {
                    __m256i w = _mm256_loadu_si256((const __m256i *)(wg + 16 + 32 * s8));
#if X86_VNNI
                    __m256i u = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));
#else
                    __m256i u = _mm256_sign_epi8(w, w);
#endif
                    UNROLL
                    for (int t = 0; t < NT; t++) {
                        __m256i xv = _mm256_loadu_si256((const __m256i *)(xg[t]->qs + 32 * s8));
#if !X86_VNNI
                        xv = _mm256_sign_epi8(xv, w);
#endif
                        pc[t][s8 % C] = dot_u8s8(pc[t][s8 % C], u, xv);
                    }
                }
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                p[t] = pc[t][0];
                UNROLL
                for (int c = 1; c < C; c++)
                    p[t] = _mm256_add_epi32(p[t], pc[t][c]);
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                __m256i sums = _mm256_loadu_si256((const __m256i *)xg[t]->sum);
                if (type == ORC_DT_Q4_0)
                    p[t] = _mm256_sub_epi32(p[t], _mm256_slli_epi32(sums, 3));
                else if (X86_VNNI)
                    p[t] = _mm256_sub_epi32(p[t], _mm256_slli_epi32(sums, 7));
                __m256 sc = _mm256_mul_ps(dw, _mm256_loadu_ps(xg[t]->d));
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p[t]), sc, acc[r][t]);
            }
        }
    }
    const __m256i tbl = iq4nl_table(X86_VNNI);
    for (int64_t b = ng * 8; b < nb; b++)
        blk32_step(type, NR, NT, b, W, ws, X, xs, acc, macc, tbl);
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            Y[t * ldy + r] = hsum_ps(acc[r][t]);
}

/* ------------------------------------------------------------ K-quants */

/* Q4_K/Q5_K 6-bit scales and mins -> sc[0..7], mn[0..7] */
AI void k4_scales(const uint8_t *s, uint8_t *sc, uint8_t *mn)
{
    uint32_t u[3], a, b, c, d;
    memcpy(u, s, 12);
    a = u[0] & 0x3f3f3f3fu;
    b = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    c = u[1] & 0x3f3f3f3fu;
    d = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    memcpy(sc, &a, 4);
    memcpy(sc + 4, &b, 4);
    memcpy(mn, &c, 4);
    memcpy(mn + 4, &d, 4);
}

/* from 16 int16 scales: scale 2c in the low 128 bits, 2c+1 in the high (2 ops) */
AI __m256i sc_pair_v(__m256i sc16, int c)
{
    __m256i d = _mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(c));
    const __m256i m = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                       2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    return _mm256_shuffle_epi8(d, m);
}


AI void k_kquant(uint32_t type, int NR, int NT, TILE_ARGS)
{
    const size_t bsz = type == ORC_DT_Q2_K ? 84 : type == ORC_DT_Q3_K ? 110 : type == ORC_DT_Q4_K ? 144
                     : type == ORC_DT_Q5_K ? 176 : type == ORC_DT_Q6_K ? 210 : 136;
    __m256 acc[4][4];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            acc[r][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    const __m256i tbl = iq4nl_table(0);
    const int64_t nb = n / QKK;
    for (int64_t i = 0; i < nb; i++) {
        const blk_q8_K *xb[4];
        __m256i bs[4];
        UNROLL
        for (int t = 0; t < NT; t++) {
            xb[t] = (const blk_q8_K *)(X + (size_t)t * xs) + i;
            bs[t] = _mm256_loadu_si256((const __m256i *)xb[t]->bsums);
        }
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *wb = W + (size_t)r * ws + (size_t)i * bsz;
            const int C = X86_VNNI ? (NT == 1 ? 4 : NT == 2 ? 2 : 1) : 1;
            __m256i iacc[4], ic[4][4];
            UNROLL
            for (int t = 0; t < NT; t++)
                UNROLL
                for (int c = 0; c < C; c++)
                    ic[t][c] = _mm256_setzero_si256();
            float d, dmin = 0.0f;
            __m256i corr16 = _mm256_setzero_si256(); /* per-16 int16 weights for bsums */
            if (type == ORC_DT_Q4_K || type == ORC_DT_Q5_K) {
                uint16_t hd, hm;
                memcpy(&hd, wb, 2);
                memcpy(&hm, wb + 2, 2);
                d = h2f(hd);
                dmin = h2f(hm);
                uint8_t sc[8], mn[8];
                k4_scales(wb + 4, sc, mn);
                __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);
                corr16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
                const uint8_t *qs = wb + (type == ORC_DT_Q4_K ? 16 : 48);
                __m256i qh = type == ORC_DT_Q5_K ? _mm256_loadu_si256((const __m256i *)(wb + 16))
                                                 : _mm256_setzero_si256();
                UNROLL
                for (int j = 0; j < 4; j++) {
                    __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
                    __m256i lo = _mm256_and_si256(q, m4);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    if (type == ORC_DT_Q5_K) {
                        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), m1), 4));
                        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), m1), 4));
                    }
                    __m256i s0 = _mm256_set1_epi16(sc[2 * j]), s1 = _mm256_set1_epi16(sc[2 * j + 1]);
                    UNROLL
                    for (int t = 0; t < NT; t++) {
                        __m256i x0 = _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 64 * j));
                        __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 64 * j + 32));
                        ic[t][(2 * j) % C] = madd_acc(ic[t][(2 * j) % C], _mm256_maddubs_epi16(lo, x0), s0);
                        ic[t][(2 * j + 1) % C] = madd_acc(ic[t][(2 * j + 1) % C], _mm256_maddubs_epi16(hi, x1), s1);
                    }
                }
            } else if (type == ORC_DT_Q6_K) {
                const blk_q6_K *b = (const blk_q6_K *)wb;
                d = h2f(b->d);
                __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
                corr16 = _mm256_slli_epi16(sc16, 5); /* 32 * scale: the -32 offset */
                dmin = d;
                UNROLL
                for (int h = 0; h < 2; h++) {
                    __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
                    __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
                    __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
                    __m256i q[4];
                    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
                    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
                    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
                    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
                    UNROLL
                    for (int k = 0; k < 4; k++) {
                        __m256i s = sc_pair_v(sc16, 4 * h + k);
                        UNROLL
                        for (int t = 0; t < NT; t++) {
                            __m256i xv = _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 128 * h + 32 * k));
                            ic[t][(4 * h + k) % C] = madd_acc(ic[t][(4 * h + k) % C], _mm256_maddubs_epi16(q[k], xv), s);
                        }
                    }
                }
            } else if (type == ORC_DT_Q3_K) {
                const blk_q3_K *b = (const blk_q3_K *)wb;
                d = h2f(b->d);
                int16_t sc[16];
                for (int j = 0; j < 16; j++) {
                    int lo = j < 8 ? b->scales[j] & 0xF : b->scales[j - 8] >> 4;
                    int hb = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;
                    sc[j] = (int16_t)((lo | (hb << 4)) - 32);
                }
                __m256i sc16 = _mm256_loadu_si256((const __m256i *)sc);
                corr16 = _mm256_slli_epi16(sc16, 2); /* 4 * scale: the -4 offset */
                dmin = d;
                __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
                UNROLL
                for (int h = 0; h < 2; h++) {
                    __m256i qv = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
                    UNROLL
                    for (int k = 0; k < 4; k++) {
                        __m256i u = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * k), m3);
                        __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), m1);
                        u = _mm256_or_si256(u, _mm256_slli_epi16(hb, 2));
                        __m256i s = sc_pair_v(sc16, 4 * h + k);
                        UNROLL
                        for (int t = 0; t < NT; t++) {
                            __m256i xv = _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 128 * h + 32 * k));
                            ic[t][(4 * h + k) % C] = madd_acc(ic[t][(4 * h + k) % C], _mm256_maddubs_epi16(u, xv), s);
                        }
                    }
                }
            } else if (type == ORC_DT_Q2_K) {
                const blk_q2_K *b = (const blk_q2_K *)wb;
                d = h2f(b->d);
                dmin = h2f(b->dmin);
                __m128i s8 = _mm_loadu_si128((const __m128i *)b->scales);
                corr16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), _mm_set1_epi8(0x0F)));
                __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(s8, _mm_set1_epi8(0x0F)));
                UNROLL
                for (int h = 0; h < 2; h++) {
                    __m256i qv = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
                    UNROLL
                    for (int k = 0; k < 4; k++) {
                        __m256i u = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * k), m3);
                        __m256i s = sc_pair_v(sc16, 4 * h + k);
                        UNROLL
                        for (int t = 0; t < NT; t++) {
                            __m256i xv = _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 128 * h + 32 * k));
                            ic[t][(4 * h + k) % C] = madd_acc(ic[t][(4 * h + k) % C], _mm256_maddubs_epi16(u, xv), s);
                        }
                    }
                }
            } else { /* IQ4_XS */
                const blk_iq4_xs *b = (const blk_iq4_xs *)wb;
                d = h2f(b->d);
                UNROLL
                for (int g = 0; g < 8; g++) {
                    int ls = ((b->scales_l[g / 2] >> (4 * (g % 2))) & 0xF) | (((b->scales_h >> (2 * g)) & 3) << 4);
                    __m256i v = _mm256_shuffle_epi8(tbl, unpack_nibbles(b->qs + 16 * g));
                    __m256i va = _mm256_sign_epi8(v, v);
                    __m256i s = _mm256_set1_epi16((short)(ls - 32));
                    UNROLL
                    for (int t = 0; t < NT; t++) {
                        __m256i xv = _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 32 * g));
                        ic[t][g % C] = madd_acc(ic[t][g % C], _mm256_maddubs_epi16(va, _mm256_sign_epi8(xv, v)), s);
                    }
                }
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                iacc[t] = ic[t][0];
                UNROLL
                for (int c = 1; c < C; c++)
                    iacc[t] = _mm256_add_epi32(iacc[t], ic[t][c]);
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                float dx = xb[t]->d;
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[t]), _mm256_set1_ps(d * dx), acc[r][t]);
                if (type != ORC_DT_IQ4_XS) {
                    __m256i c = _mm256_madd_epi16(bs[t], corr16);
                    acc[r][t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(c), _mm256_set1_ps(dmin * dx), acc[r][t]);
                }
            }
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            Y[t * ldy + r] = hsum_ps(acc[r][t]);
}



/* Repacked Q4_K against interleaved Q8_K: lane k of the partial sums is sub-block k, so
 * the 6-bit scales and mins apply as one vector each per super-block. */
AI void k_q4kx8(uint32_t type, int NR, int NT, TILE_ARGS)
{
    (void)type;
    __m256 acc[4][4];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            acc[r][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const int64_t nb = n / QKK;
    const int C = X86_VNNI ? (NT == 1 ? 4 : NT == 2 ? 2 : 1) : 1;
    for (int64_t i = 0; i < nb; i++) {
        const blk_q8_K *xb[4];
        __m256 xmin[4]; /* per sub-block activation sums, as float, times dx */
        float dx[4];
        UNROLL
        for (int t = 0; t < NT; t++) {
            xb[t] = (const blk_q8_K *)(X + (size_t)t * xs) + i;
            dx[t] = xb[t]->d;
            __m256i bs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)xb[t]->bsums), _mm256_set1_epi16(1));
            xmin[t] = _mm256_mul_ps(_mm256_cvtepi32_ps(bs), _mm256_set1_ps(dx[t]));
        }
        UNROLL
        for (int r = 0; r < NR; r++) {
            const blk_q4_K *b = (const blk_q4_K *)(W + (size_t)r * ws) + i;
            uint8_t sc[8], mn[8];
            k4_scales(b->scales, sc, mn);
            __m256 fs = _mm256_mul_ps(_mm256_set1_ps(h2f(b->d)),
                                      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sc))));
            __m256 fm = _mm256_mul_ps(_mm256_set1_ps(h2f(b->dmin)),
                                      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)mn))));
            __m256i pc[4][4];
            UNROLL
            for (int t = 0; t < NT; t++)
                UNROLL
                for (int c = 0; c < C; c++)
                    pc[t][c] = _mm256_setzero_si256();
            UNROLL
            for (int s4 = 0; s4 < 4; s4++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * s4));
                __m256i lo = _mm256_and_si256(w, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                UNROLL
                for (int t = 0; t < NT; t++) {
                    pc[t][(2 * s4) % C] = dot_u8s8(pc[t][(2 * s4) % C], lo, _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 32 * s4)));
                    pc[t][(2 * s4 + 1) % C] = dot_u8s8(pc[t][(2 * s4 + 1) % C], hi, _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 32 * (s4 + 4))));
                }
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                __m256i p = pc[t][0];
                UNROLL
                for (int c = 1; c < C; c++)
                    p = _mm256_add_epi32(p, pc[t][c]);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(fs, _mm256_set1_ps(dx[t])), acc[r][t]);
                acc[r][t] = _mm256_fnmadd_ps(xmin[t], fm, acc[r][t]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            Y[t * ldy + r] = hsum_ps(acc[r][t]);
}


/* Repacked Q6_K against interleaved Q8_K: per half, lane k of the partial sums is the
 * 16-element group 8h+k, so its int8 scale and the -32 offset apply as vectors. */
AI void k_q6kx8(uint32_t type, int NR, int NT, TILE_ARGS)
{
    (void)type;
    __m256 acc[4][4];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            acc[r][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const int64_t nb = n / QKK;
    const int C = X86_VNNI ? (NT == 1 ? 2 : 1) : 1;
    for (int64_t i = 0; i < nb; i++) {
        const blk_q8_K *xb[4];
        __m256 xs32[4][2]; /* 32 * dx * group sums, per half */
        float dx[4];
        UNROLL
        for (int t = 0; t < NT; t++) {
            xb[t] = (const blk_q8_K *)(X + (size_t)t * xs) + i;
            dx[t] = xb[t]->d;
            UNROLL
            for (int h = 0; h < 2; h++) {
                __m256i bs = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(xb[t]->bsums + 8 * h)));
                xs32[t][h] = _mm256_mul_ps(_mm256_cvtepi32_ps(bs), _mm256_set1_ps(32.0f * dx[t]));
            }
        }
        UNROLL
        for (int r = 0; r < NR; r++) {
            const blk_q6_K *b = (const blk_q6_K *)(W + (size_t)r * ws) + i;
            __m256 d = _mm256_set1_ps(h2f(b->d));
            UNROLL
            for (int h = 0; h < 2; h++) {
                __m256 fs = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                                 _mm_loadl_epi64((const __m128i *)(b->scales + 8 * h)))));
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
                UNROLL
                for (int t = 0; t < NT; t++) {
                    __m256i pc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
                    UNROLL
                    for (int s4 = 0; s4 < 4; s4++)
                        pc[s4 % C] = dot_u8s8(pc[s4 % C], q[s4],
                                              _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 128 * h + 32 * s4)));
                    __m256i p = C > 1 ? _mm256_add_epi32(pc[0], pc[1]) : pc[0];
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(fs, _mm256_set1_ps(dx[t])), acc[r][t]);
                    acc[r][t] = _mm256_fnmadd_ps(xs32[t][h], fs, acc[r][t]);
                }
            }
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            Y[t * ldy + r] = hsum_ps(acc[r][t]);
}

/* ------------------------------------------------------------ activation quantizers */

AI int hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

AI float hmax_ps(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 32 int32 (four vectors, in order) -> 32 int8 in order */
AI __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i v = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Same results as orc_ref_quantize_q8a for finite input (round to nearest even). */
static void quant_q8a(const float *x, blk_q8a *y, int64_t n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / QK; b++, x += QK) {
        __m256 v[4], am = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            am = _mm256_max_ps(am, _mm256_andnot_ps(sign, v[k]));
        }
        float amax = hmax_ps(am);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)y[b].qs, pack32(q[0], q[1], q[2], q[3]));
        y[b].sum = hsum_epi32(s);
        y[b].d = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
    }
}

static void quant_q8k(const float *x, blk_q8_K *y, int64_t n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / QKK; b++, x += QKK) {
        __m256 am = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++)
            am = _mm256_max_ps(am, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)));
        float amax = hmax_ps(am);
        if (amax == 0.0f || !(amax <= 3.4e38f)) {
            orc_ref_quantize_q8k(x, &y[b], QKK);
            continue;
        }
        float max = 0.0f;
        __m256 va = _mm256_set1_ps(amax);
        for (int k = 0; k < 32; k++) {
            int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)), va, _CMP_EQ_OQ));
            if (m) {
                max = x[8 * k + __builtin_ctz((unsigned)m)];
                break;
            }
        }
        float iscale = -127.0f / max;
        __m256 vs = _mm256_set1_ps(iscale);
        for (int g = 0; g < 8; g++) {
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 8 * k), vs));
            _mm256_storeu_si256((__m256i *)(y[b].qs + 32 * g), pack32(q[0], q[1], q[2], q[3]));
            y[b].bsums[2 * g] = (int16_t)hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            y[b].bsums[2 * g + 1] = (int16_t)hsum_epi32(_mm256_add_epi32(q[2], q[3]));
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ------------------------------------------------------------ tile entry points */

#define CASES(K, TY)                                                      \
    switch (nr * 8 + m) {                                                 \
    case 9: K(TY, 1, 1, n, w, ws, x, xs, y, ldy); break;                  \
    case 10: K(TY, 1, 2, n, w, ws, x, xs, y, ldy); break;                 \
    case 11: K(TY, 1, 3, n, w, ws, x, xs, y, ldy); break;                 \
    case 12: K(TY, 1, 4, n, w, ws, x, xs, y, ldy); break;                 \
    case 17: K(TY, 2, 1, n, w, ws, x, xs, y, ldy); break;                 \
    case 18: K(TY, 2, 2, n, w, ws, x, xs, y, ldy); break;                 \
    case 19: K(TY, 2, 3, n, w, ws, x, xs, y, ldy); break;                 \
    case 20: K(TY, 2, 4, n, w, ws, x, xs, y, ldy); break;                 \
    case 25: K(TY, 3, 1, n, w, ws, x, xs, y, ldy); break;                 \
    case 26: K(TY, 3, 2, n, w, ws, x, xs, y, ldy); break;                 \
    case 27: K(TY, 3, 3, n, w, ws, x, xs, y, ldy); break;                 \
    case 28: K(TY, 3, 4, n, w, ws, x, xs, y, ldy); break;                 \
    case 33: K(TY, 4, 1, n, w, ws, x, xs, y, ldy); break;                 \
    case 34: K(TY, 4, 2, n, w, ws, x, xs, y, ldy); break;                 \
    case 35: K(TY, 4, 3, n, w, ws, x, xs, y, ldy); break;                 \
    case 36: K(TY, 4, 4, n, w, ws, x, xs, y, ldy); break;                 \
    default: break;                                                       \
    }

#define DEFINE_TILE(NAME, K, TY)                                                          \
    static void NAME(int64_t n, const void *W, size_t ws, const void *X, size_t xs,       \
                     float *Y, int64_t ldy, int nr, int nt)                               \
    {                                                                                     \
        const uint8_t *w = W;                                                             \
        for (int t0 = 0; t0 < nt; t0 += X86_MAXNT) {                                      \
            int m = nt - t0 < X86_MAXNT ? nt - t0 : X86_MAXNT;                            \
            const uint8_t *x = (const uint8_t *)X + (size_t)t0 * xs;                      \
            float *y = Y + (int64_t)t0 * ldy;                                             \
            CASES(K, TY)                                                                  \
        }                                                                                 \
    }

DEFINE_TILE(tile_f32, k_float, ORC_DT_F32)
DEFINE_TILE(tile_f16, k_float, ORC_DT_F16)
DEFINE_TILE(tile_bf16, k_float, ORC_DT_BF16)
DEFINE_TILE(tile_q4_0, k_blk32, ORC_DT_Q4_0)
DEFINE_TILE(tile_q4_1, k_blk32, ORC_DT_Q4_1)
DEFINE_TILE(tile_q5_0, k_blk32, ORC_DT_Q5_0)
DEFINE_TILE(tile_q5_1, k_blk32, ORC_DT_Q5_1)
DEFINE_TILE(tile_q8_0, k_blk32, ORC_DT_Q8_0)
DEFINE_TILE(tile_iq4_nl, k_blk32, ORC_DT_IQ4_NL)
DEFINE_TILE(tile_q4_0x8, k_x8, ORC_DT_Q4_0)
DEFINE_TILE(tile_q8_0x8, k_x8, ORC_DT_Q8_0)
DEFINE_TILE(tile_q4_Kx8, k_q4kx8, ORC_DT_Q4_K)
DEFINE_TILE(tile_q6_Kx8, k_q6kx8, ORC_DT_Q6_K)
DEFINE_TILE(tile_q2_K, k_kquant, ORC_DT_Q2_K)
DEFINE_TILE(tile_q3_K, k_kquant, ORC_DT_Q3_K)
DEFINE_TILE(tile_q4_K, k_kquant, ORC_DT_Q4_K)
DEFINE_TILE(tile_q5_K, k_kquant, ORC_DT_Q5_K)
DEFINE_TILE(tile_q6_K, k_kquant, ORC_DT_Q6_K)
DEFINE_TILE(tile_iq4_xs, k_kquant, ORC_DT_IQ4_XS)

const orc_kernels X86_TABLE = {
    .name = X86_NAME,
    .tile = {
        [ORC_DT_F32] = tile_f32, [ORC_DT_F16] = tile_f16, [ORC_DT_BF16] = tile_bf16,
        [ORC_DT_Q4_0] = tile_q4_0, [ORC_DT_Q4_1] = tile_q4_1, [ORC_DT_Q5_0] = tile_q5_0,
        [ORC_DT_Q5_1] = tile_q5_1, [ORC_DT_Q8_0] = tile_q8_0, [ORC_DT_IQ4_NL] = tile_iq4_nl,
        [ORC_DT_Q2_K] = tile_q2_K, [ORC_DT_Q3_K] = tile_q3_K, [ORC_DT_Q4_K] = tile_q4_K,
        [ORC_DT_Q5_K] = tile_q5_K, [ORC_DT_Q6_K] = tile_q6_K, [ORC_DT_IQ4_XS] = tile_iq4_xs,
        [ORC_SLOT_Q4_0X8] = tile_q4_0x8, [ORC_SLOT_Q8_0X8] = tile_q8_0x8,
        [ORC_SLOT_Q4_KX8] = tile_q4_Kx8, [ORC_SLOT_Q6_KX8] = tile_q6_Kx8,
    },
    .quant_q8a = quant_q8a,
    .quant_q8k = quant_q8k,
};
