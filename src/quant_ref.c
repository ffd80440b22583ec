/* quant_ref.c - the scalar reference for every weight format: dequantizers written after
 * ggml's dequantize_row_* semantics, quantizers (used by `orchard quantize` and tests),
 * the 8-bit activation quantizers and integer dot products the SIMD kernels must match. */
#include "quant_impl.h"

#include <math.h>
#include <string.h>

const int8_t orc_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1, 13, 25, 38, 53, 69, 89, 113};

static inline float h2f(uint16_t h) { return orc_f16_to_f32(h); }
static inline uint16_t f2h(float f) { return orc_f32_to_f16(f); }

/* Rounds a float that may be huge or NaN (user data) without overflowing the int trick. */
static inline int qround(float v, int lo, int hi)
{
    if (!(v > (float)lo))
        return lo;
    if (v > (float)hi)
        return hi;
    return orc_nearest_int(v);
}

/* K-quant 6-bit scale/min packing: scales j<4 in the low 6 bits of bytes j / j+4; the
 * rest split into a nibble in bytes 8..11 and two high bits on top of bytes 0..7. */
static inline void get_scale_min_k4(int j, const uint8_t *q, int *d, int *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void put_scale_min_k4(uint8_t *q, const int *ls, const int *lm)
{
    memset(q, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            q[j] = (uint8_t)ls[j];
            q[j + 4] = (uint8_t)lm[j];
        } else {
            q[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            q[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            q[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Q3_K: sixteen 6-bit scales (biased by 32) packed into 12 bytes: low nibbles of
 * scales 0..7 in bytes 0..7, of 8..15 in the high nibbles, 2 high bits in bytes 8..11. */
static void q3k_scales(const uint8_t *raw, int *sc)
{
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? raw[j] & 0xF : raw[j - 8] >> 4;
        int hi = (raw[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (lo | (hi << 4)) - 32;
    }
}

/* ------------------------------------------------------------------ dequantize */

static void deq_q4_0(const blk_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK) {
        float d = h2f(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * ((b[i].qs[j] & 0xF) - 8);
            y[j + 16] = d * ((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void deq_q4_1(const blk_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK) {
        float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (b[i].qs[j] & 0xF) + m;
            y[j + 16] = d * (b[i].qs[j] >> 4) + m;
        }
    }
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void deq_q5_0(const blk_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK) {
        float d = h2f(b[i].d);
        uint32_t qh = le32(b[i].qh);
        for (int j = 0; j < 16; j++) {
            int x0 = (b[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int x1 = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (x0 - 16);
            y[j + 16] = d * (x1 - 16);
        }
    }
}

static void deq_q5_1(const blk_q5_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK) {
        float d = h2f(b[i].d), m = h2f(b[i].m);
        uint32_t qh = le32(b[i].qh);
        for (int j = 0; j < 16; j++) {
            int x0 = (b[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int x1 = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * x0 + m;
            y[j + 16] = d * x1 + m;
        }
    }
}

static void deq_q8_0(const blk_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK) {
        float d = h2f(b[i].d);
        for (int j = 0; j < 32; j++)
            y[j] = d * b[i].qs[j];
    }
}

static void deq_q2_K(const blk_q2_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const uint8_t *q = b[i].qs;
        int is = 0;
        for (int h = 0; h < 2; h++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    uint8_t sc = b[i].scales[is++];
                    float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
        }
    }
}

static void deq_q3_K(const blk_q3_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = h2f(b[i].d);
        int sc[16];
        q3k_scales(b[i].scales, sc);
        const uint8_t *q = b[i].qs;
        uint8_t m = 1;
        int is = 0;
        for (int h = 0; h < 2; h++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int half = 0; half < 2; half++) {
                    float dl = d * sc[is++];
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        int v = ((q[l] >> shift) & 3) - ((b[i].hmask[l] & m) ? 0 : 4);
                        *y++ = dl * v;
                    }
                }
            }
        }
    }
}

static void deq_q4_K(const blk_q4_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int j = 0; j < 4; j++, q += 32) {
            int s0, m0, s1, m1;
            get_scale_min_k4(2 * j, b[i].scales, &s0, &m0);
            get_scale_min_k4(2 * j + 1, b[i].scales, &s1, &m1);
            for (int l = 0; l < 32; l++)
                *y++ = d * s0 * (q[l] & 0xF) - dmin * m0;
            for (int l = 0; l < 32; l++)
                *y++ = d * s1 * (q[l] >> 4) - dmin * m1;
        }
    }
}

static void deq_q5_K(const blk_q5_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int j = 0; j < 4; j++, q += 32) {
            int s0, m0, s1, m1;
            get_scale_min_k4(2 * j, b[i].scales, &s0, &m0);
            get_scale_min_k4(2 * j + 1, b[i].scales, &s1, &m1);
            for (int l = 0; l < 32; l++)
                *y++ = d * s0 * ((q[l] & 0xF) + (((b[i].qh[l] >> (2 * j)) & 1) << 4)) - dmin * m0;
            for (int l = 0; l < 32; l++)
                *y++ = d * s1 * ((q[l] >> 4) + (((b[i].qh[l] >> (2 * j + 1)) & 1) << 4)) - dmin * m1;
        }
    }
}

static void deq_q6_K(const blk_q6_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = h2f(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

static void deq_q8_K(const blk_q8_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++)
        for (int j = 0; j < QKK; j++)
            *y++ = b[i].d * b[i].qs[j];
}

static void deq_iq4_nl(const blk_iq4_nl *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK) {
        float d = h2f(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * orc_iq4nl_values[b[i].qs[j] & 0xF];
            y[j + 16] = d * orc_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

static void deq_iq4_xs(const blk_iq4_xs *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = h2f(b[i].d);
        const uint8_t *qs = b[i].qs;
        for (int ib = 0; ib < 8; ib++, y += 32, qs += 16) {
            int ls = ((b[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) |
                     (((b[i].scales_h >> (2 * ib)) & 3) << 4);
            float dl = d * (ls - 32);
            for (int j = 0; j < 16; j++) {
                y[j] = dl * orc_iq4nl_values[qs[j] & 0xF];
                y[j + 16] = dl * orc_iq4nl_values[qs[j] >> 4];
            }
        }
    }
}

void orc_ref_dequant(uint32_t type, const void *src, float *y, int64_t n)
{
    const orc_dtype_info *ti = orc_dtype_get(type);
    int64_t nb = ti ? n / ti->blck : 0;
    const uint16_t *h = src;
    switch (type) {
    case ORC_DT_F32: memcpy(y, src, (size_t)n * sizeof(float)); return;
    case ORC_DT_F16: for (int64_t i = 0; i < n; i++) y[i] = h2f(h[i]); return;
    case ORC_DT_BF16: for (int64_t i = 0; i < n; i++) y[i] = orc_bf16_to_f32(h[i]); return;
    case ORC_DT_Q4_0: deq_q4_0(src, y, nb); return;
    case ORC_DT_Q4_1: deq_q4_1(src, y, nb); return;
    case ORC_DT_Q5_0: deq_q5_0(src, y, nb); return;
    case ORC_DT_Q5_1: deq_q5_1(src, y, nb); return;
    case ORC_DT_Q8_0: deq_q8_0(src, y, nb); return;
    case ORC_DT_Q2_K: deq_q2_K(src, y, nb); return;
    case ORC_DT_Q3_K: deq_q3_K(src, y, nb); return;
    case ORC_DT_Q4_K: deq_q4_K(src, y, nb); return;
    case ORC_DT_Q5_K: deq_q5_K(src, y, nb); return;
    case ORC_DT_Q6_K: deq_q6_K(src, y, nb); return;
    case ORC_DT_Q8_K: deq_q8_K(src, y, nb); return;
    case ORC_DT_IQ4_NL: deq_iq4_nl(src, y, nb); return;
    case ORC_DT_IQ4_XS: deq_iq4_xs(src, y, nb); return;
    default: memset(y, 0, (size_t)n * sizeof(float)); return;
    }
}

/* ------------------------------------------------------------------ quantize */

static void amax_signed(const float *x, int n, float *amax, float *max)
{
    *amax = 0.0f;
    *max = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > *amax) {
            *amax = a;
            *max = x[i];
        }
    }
}

static void q_q4_0(const float *x, blk_q4_0 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK) {
        float amax, max;
        amax_signed(x, QK, &amax, &max);
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        for (int j = 0; j < 16; j++) {
            int a = qround(x[j] * id + 8.0f, 0, 15), b = qround(x[j + 16] * id + 8.0f, 0, 15);
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

static void minmax(const float *x, int n, float *mn, float *mx)
{
    *mn = x[0];
    *mx = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < *mn) *mn = x[i];
        if (x[i] > *mx) *mx = x[i];
    }
}

static void q_q4_1(const float *x, blk_q4_1 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK) {
        float mn, mx;
        minmax(x, QK, &mn, &mx);
        float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        y[i].m = f2h(mn);
        for (int j = 0; j < 16; j++) {
            int a = qround((x[j] - mn) * id, 0, 15), b = qround((x[j + 16] - mn) * id, 0, 15);
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

static void q_q5_0(const float *x, blk_q5_0 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK) {
        float amax, max;
        amax_signed(x, QK, &amax, &max);
        float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int a = qround(x[j] * id + 16.0f, 0, 31), b = qround(x[j + 16] * id + 16.0f, 0, 31);
            y[i].qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= (uint32_t)(a >> 4) << j | (uint32_t)(b >> 4) << (j + 16);
        }
        for (int k = 0; k < 4; k++)
            y[i].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

static void q_q5_1(const float *x, blk_q5_1 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK) {
        float mn, mx;
        minmax(x, QK, &mn, &mx);
        float d = (mx - mn) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        y[i].m = f2h(mn);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int a = qround((x[j] - mn) * id, 0, 31), b = qround((x[j + 16] - mn) * id, 0, 31);
            y[i].qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= (uint32_t)(a >> 4) << j | (uint32_t)(b >> 4) << (j + 16);
        }
        for (int k = 0; k < 4; k++)
            y[i].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

static void q_q8_0(const float *x, blk_q8_0 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK) {
        float amax, max;
        amax_signed(x, QK, &amax, &max);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        for (int j = 0; j < 32; j++)
            y[i].qs[j] = (int8_t)qround(x[j] * id, -127, 127);
    }
}

/* Least-squares fit x ~ a*L - m with L in [0, nmax] and m >= 0, trying a few grid
 * spacings around the min/max one (a small version of ggml's make_qkx2_quants). */
static void fit_min_scale(const float *x, int n, int nmax, float *scale, float *min)
{
    float mn, mx;
    minmax(x, n, &mn, &mx);
    if (mn > 0.0f)
        mn = 0.0f;
    if (mx <= mn) {
        *scale = 0.0f;
        *min = -mn;
        return;
    }
    float best_err = INFINITY, best_a = (mx - mn) / nmax, best_b = mn;
    for (int k = -4; k <= 4; k++) {
        float iscale = (nmax + 0.1f * k) / (mx - mn);
        float sl = 0, sx = 0, sll = 0, slx = 0;
        int L[QKK];
        for (int i = 0; i < n; i++) {
            L[i] = qround((x[i] - mn) * iscale, 0, nmax);
            sl += L[i];
            sx += x[i];
            sll += (float)L[i] * L[i];
            slx += L[i] * x[i];
        }
        float den = n * sll - sl * sl, a, b;
        if (den <= 0.0f)
            continue;
        a = (n * slx - sl * sx) / den;
        b = (sx - a * sl) / n;
        if (b > 0.0f) {
            b = 0.0f;
            a = sll > 0 ? slx / sll : 0.0f;
        }
        if (a < 0.0f)
            continue;
        float err = 0;
        for (int i = 0; i < n; i++) {
            float e = a * L[i] + b - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_a = a;
            best_b = b;
        }
    }
    *scale = best_a;
    *min = -best_b;
}

/* Symmetric fit x ~ s*L, L in [-nmax, nmax-1]; returns s (sign carries the orientation). */
static float fit_sym(const float *x, int n, int nmax)
{
    float amax, max;
    amax_signed(x, n, &amax, &max);
    if (amax == 0.0f)
        return 0.0f;
    float best_err = INFINITY, best = max / -nmax;
    for (int k = -4; k <= 4; k++) {
        float iscale = -(nmax + 0.1f * k) / max;
        float sll = 0, slx = 0;
        int L[32];
        for (int i = 0; i < n; i++) {
            L[i] = qround(x[i] * iscale, -nmax, nmax - 1);
            sll += (float)L[i] * L[i];
            slx += L[i] * x[i];
        }
        if (sll <= 0.0f)
            continue;
        float s = slx / sll, err = 0;
        for (int i = 0; i < n; i++) {
            float e = s * L[i] - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best = s;
        }
    }
    return best;
}

static void q_q2_K(const float *x, blk_q2_K *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QKK) {
        float sc[16], mn[16], msc = 0, mmn = 0;
        for (int g = 0; g < 16; g++) {
            fit_min_scale(x + 16 * g, 16, 3, &sc[g], &mn[g]);
            if (sc[g] > msc) msc = sc[g];
            if (mn[g] > mmn) mmn = mn[g];
        }
        float d = msc / 15.0f, dmin = mmn / 15.0f;
        y[i].d = f2h(d);
        y[i].dmin = f2h(dmin);
        d = h2f(y[i].d);
        dmin = h2f(y[i].dmin);
        memset(y[i].qs, 0, sizeof y[i].qs);
        for (int g = 0; g < 16; g++) {
            int ls = d > 0 ? qround(sc[g] / d, 0, 15) : 0;
            int lm = dmin > 0 ? qround(mn[g] / dmin, 0, 15) : 0;
            y[i].scales[g] = (uint8_t)(ls | (lm << 4));
            float dl = d * ls, ml = dmin * lm;
            for (int k = 0; k < 16; k++) {
                int e = 16 * g + k;
                int L = dl > 0 ? qround((x[e] + ml) / dl, 0, 3) : 0;
                /* element e: byte 32*(e/128) + e%32, bit pair (e%128)/32 */
                y[i].qs[32 * (e / 128) + e % 32] |= (uint8_t)(L << (2 * ((e % 128) / 32)));
            }
        }
    }
}

static void q_q3_K(const float *x, blk_q3_K *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QKK) {
        float sc[16], amax = 0, max = 0;
        for (int g = 0; g < 16; g++) {
            sc[g] = fit_sym(x + 16 * g, 16, 4);
            if (fabsf(sc[g]) > amax) {
                amax = fabsf(sc[g]);
                max = sc[g];
            }
        }
        memset(y[i].scales, 0, 12);
        memset(y[i].hmask, 0, 32);
        memset(y[i].qs, 0, 64);
        float d = max / -32.0f;
        y[i].d = f2h(d);
        d = h2f(y[i].d);
        for (int g = 0; g < 16; g++) {
            int l = d != 0.0f ? qround(sc[g] / d, -32, 31) : 0;
            int u = l + 32;
            if (g < 8)
                y[i].scales[g] |= (uint8_t)(u & 0xF);
            else
                y[i].scales[g - 8] |= (uint8_t)((u & 0xF) << 4);
            y[i].scales[8 + g % 4] |= (uint8_t)((u >> 4) << (2 * (g / 4)));
            float dl = d * l;
            for (int k = 0; k < 16; k++) {
                int e = 16 * g + k;
                int L = dl != 0.0f ? qround(x[e] / dl, -4, 3) + 4 : 4;
                int j = (e % 128) / 32;
                y[i].qs[32 * (e / 128) + e % 32] |= (uint8_t)((L & 3) << (2 * j));
                if (L & 4)
                    y[i].hmask[e % 32] |= (uint8_t)(1 << (4 * (e / 128) + j));
            }
        }
    }
}

/* Q4_K / Q5_K: eight sub-blocks of 32 with 6-bit scales and mins under fp16 d/dmin. */
static void q_k45(const float *x, blk_q4_K *y4, blk_q5_K *y5, int64_t nb)
{
    int nmax = y4 ? 15 : 31;
    for (int64_t i = 0; i < nb; i++, x += QKK) {
        float sc[8], mn[8], msc = 0, mmn = 0;
        for (int g = 0; g < 8; g++) {
            fit_min_scale(x + 32 * g, 32, nmax, &sc[g], &mn[g]);
            if (sc[g] > msc) msc = sc[g];
            if (mn[g] > mmn) mmn = mn[g];
        }
        uint16_t hd = f2h(msc / 63.0f), hm = f2h(mmn / 63.0f);
        float d = h2f(hd), dmin = h2f(hm);
        int ls[8], lm[8];
        uint8_t L[QKK];
        for (int g = 0; g < 8; g++) {
            ls[g] = d > 0 ? qround(sc[g] / d, 0, 63) : 0;
            lm[g] = dmin > 0 ? qround(mn[g] / dmin, 0, 63) : 0;
            float dl = d * ls[g], ml = dmin * lm[g];
            for (int k = 0; k < 32; k++)
                L[32 * g + k] = (uint8_t)(dl > 0 ? qround((x[32 * g + k] + ml) / dl, 0, nmax) : 0);
        }
        uint8_t *scales = y4 ? y4[i].scales : y5[i].scales;
        uint8_t *qs = y4 ? y4[i].qs : y5[i].qs;
        put_scale_min_k4(scales, ls, lm);
        if (y4) {
            y4[i].d = hd;
            y4[i].dmin = hm;
        } else {
            y5[i].d = hd;
            y5[i].dmin = hm;
            memset(y5[i].qh, 0, 32);
        }
        for (int j = 0; j < 4; j++) {
            for (int l = 0; l < 32; l++) {
                uint8_t a = L[64 * j + l], b = L[64 * j + 32 + l];
                qs[32 * j + l] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
                if (y5)
                    y5[i].qh[l] |= (uint8_t)(((a >> 4) << (2 * j)) | ((b >> 4) << (2 * j + 1)));
            }
        }
    }
}

/* 256 unsigned 6-bit codes -> Q6_K ql/qh */
static void q6_pack_plain(const uint8_t *L, blk_q6_K *y)
{
    for (int h = 0; h < 2; h++) {
        const uint8_t *Lh = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            y->ql[64 * h + l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
            y->ql[64 * h + l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
            y->qh[32 * h + l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                          ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
        }
    }
}

static void q6_codes_plain(const blk_q6_K *b, uint8_t *L)
{
    for (int e = 0; e < QKK; e++) {
        int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
        int lo = (b->ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF;
        int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
        L[e] = (uint8_t)(lo | hi << 4);
    }
}

/* Repacked Q6_K: per half h, lane k of each 32-byte step is group (16 elements) 8h+k:
 * ql[64h + 32j + 4k + i] = low4(e=4j+i) | low4(e=4(j+2)+i) << 4, and
 * qh[32h + 4k + i] = sum over s of high2(e=4s+i) << 2s, e counted inside the group. */
void orc_rp_pack_q6k(const blk_q6_K *plain, blk_q6_K *out)
{
    uint8_t L[QKK];
    q6_codes_plain(plain, L);
    blk_q6_K o = *plain;
    memset(o.qh, 0, sizeof o.qh);
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 4; i++) {
                const uint8_t *g = L + 16 * (8 * h + k);
                for (int j = 0; j < 2; j++)
                    o.ql[64 * h + 32 * j + 4 * k + i] = (uint8_t)((g[4 * j + i] & 0xF) | ((g[4 * (j + 2) + i] & 0xF) << 4));
                for (int s4 = 0; s4 < 4; s4++)
                    o.qh[32 * h + 4 * k + i] |= (uint8_t)((g[4 * s4 + i] >> 4) << (2 * s4));
            }
    *out = o;
}

void orc_rp_unpack_q6k(const blk_q6_K *rp, blk_q6_K *out)
{
    uint8_t L[QKK];
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 4; i++) {
                uint8_t *g = L + 16 * (8 * h + k);
                for (int s4 = 0; s4 < 4; s4++) {
                    uint8_t b = rp->ql[64 * h + 32 * (s4 % 2) + 4 * k + i];
                    int lo = s4 < 2 ? b & 0xF : b >> 4;
                    int hi = (rp->qh[32 * h + 4 * k + i] >> (2 * s4)) & 3;
                    g[4 * s4 + i] = (uint8_t)(lo | hi << 4);
                }
            }
    blk_q6_K o = *rp;
    q6_pack_plain(L, &o);
    *out = o;
}

/* activations for repacked Q6_K: qs[128h + 32s + 4k + i] = x[128h + 16k + 4s + i] */
void orc_rp_pack_act_k6(const blk_q8_K *plain, blk_q8_K *out)
{
    blk_q8_K o = *plain;
    for (int h = 0; h < 2; h++)
        for (int s4 = 0; s4 < 4; s4++)
            for (int k = 0; k < 8; k++)
                memcpy(o.qs + 128 * h + 32 * s4 + 4 * k, plain->qs + 128 * h + 16 * k + 4 * s4, 4);
    *out = o;
}

void orc_rp_unpack_act_k6(const blk_q8_K *rp, blk_q8_K *out)
{
    blk_q8_K o = *rp;
    for (int h = 0; h < 2; h++)
        for (int s4 = 0; s4 < 4; s4++)
            for (int k = 0; k < 8; k++)
                memcpy(o.qs + 128 * h + 16 * k + 4 * s4, rp->qs + 128 * h + 32 * s4 + 4 * k, 4);
    *out = o;
}

static void q_q6_K(const float *x, blk_q6_K *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QKK) {
        float sc[16], amax = 0, max = 0;
        for (int g = 0; g < 16; g++) {
            sc[g] = fit_sym(x + 16 * g, 16, 32);
            if (fabsf(sc[g]) > amax) {
                amax = fabsf(sc[g]);
                max = sc[g];
            }
        }
        float d = max / -128.0f;
        y[i].d = f2h(d);
        d = h2f(y[i].d);
        uint8_t L[QKK];
        for (int g = 0; g < 16; g++) {
            int l = d != 0.0f ? qround(sc[g] / d, -128, 127) : 0;
            y[i].scales[g] = (int8_t)l;
            float dl = d * l;
            for (int k = 0; k < 16; k++)
                L[16 * g + k] = (uint8_t)(dl != 0.0f ? qround(x[16 * g + k] / dl, -32, 31) + 32 : 32);
        }
        q6_pack_plain(L, &y[i]);
    }
}

static int iq4_index(float v)
{
    int best = 0;
    float be = fabsf(v - orc_iq4nl_values[0]);
    for (int k = 1; k < 16; k++) {
        float e = fabsf(v - orc_iq4nl_values[k]);
        if (e < be) {
            be = e;
            best = k;
        }
    }
    return best;
}

/* Best scale for a 32-value group on the IQ4_NL codebook (signed: may flip the table). */
static float fit_iq4(const float *x, int n)
{
    float amax, max;
    amax_signed(x, n, &amax, &max);
    if (amax == 0.0f)
        return 0.0f;
    float best_err = INFINITY, best = max / orc_iq4nl_values[0];
    for (int k = -7; k <= 7; k++) {
        float id = (orc_iq4nl_values[0] + k) / max;
        float svx = 0, svv = 0;
        int L[32];
        for (int i = 0; i < n; i++) {
            L[i] = iq4_index(x[i] * id);
            float v = orc_iq4nl_values[L[i]];
            svx += v * x[i];
            svv += v * v;
        }
        float s = svx / svv, err = 0;
        for (int i = 0; i < n; i++) {
            float e = s * orc_iq4nl_values[L[i]] - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best = s;
        }
    }
    return best;
}

static void q_iq4_nl(const float *x, blk_iq4_nl *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK) {
        y[i].d = f2h(fit_iq4(x, QK));
        float d = h2f(y[i].d), id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < 16; j++)
            y[i].qs[j] = (uint8_t)(iq4_index(x[j] * id) | (iq4_index(x[j + 16] * id) << 4));
    }
}

static void q_iq4_xs(const float *x, blk_iq4_xs *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QKK) {
        float sc[8], amax = 0, max = 0;
        for (int g = 0; g < 8; g++) {
            sc[g] = fit_iq4(x + 32 * g, 32);
            if (fabsf(sc[g]) > amax) {
                amax = fabsf(sc[g]);
                max = sc[g];
            }
        }
        float d = max / -32.0f;
        y[i].d = f2h(d);
        d = h2f(y[i].d);
        y[i].scales_h = 0;
        memset(y[i].scales_l, 0, 4);
        for (int g = 0; g < 8; g++) {
            int l = d != 0.0f ? qround(sc[g] / d, -32, 31) : 0;
            int u = l + 32;
            y[i].scales_l[g / 2] |= (uint8_t)((u & 0xF) << (4 * (g % 2)));
            y[i].scales_h |= (uint16_t)((u >> 4) << (2 * g));
            float dl = d * l, id = dl != 0.0f ? 1.0f / dl : 0.0f;
            const float *xg = x + 32 * g;
            for (int j = 0; j < 16; j++)
                y[i].qs[16 * g + j] = (uint8_t)(iq4_index(xg[j] * id) | (iq4_index(xg[j + 16] * id) << 4));
        }
    }
}

void orc_ref_quantize_q8k(const float *x, blk_q8_K *y, int64_t n)
{
    for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
        float amax, max;
        amax_signed(x, QKK, &amax, &max);
        if (amax == 0.0f || !isfinite(amax)) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < QKK; j++)
            y[i].qs[j] = (int8_t)qround(iscale * x[j], -127, 127);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int k = 0; k < 16; k++)
                s += y[i].qs[16 * g + k];
            y[i].bsums[g] = (int16_t)s;
        }
        y[i].d = 1.0f / iscale;
    }
}

void orc_ref_quantize_q8a(const float *x, blk_q8a *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int s = 0;
        for (int j = 0; j < QK; j++) {
            y[i].qs[j] = (int8_t)qround(x[j] * id, -127, 127);
            s += y[i].qs[j];
        }
        y[i].d = h2f(f2h(d));
        y[i].sum = s;
    }
}

size_t orc_ref_quantize(uint32_t type, const float *x, void *dst, int64_t n)
{
    size_t bytes = orc_dtype_row_size(type, n);
    if (bytes == 0 || n == 0)
        return 0;
    const orc_dtype_info *ti = orc_dtype_get(type);
    int64_t nb = n / ti->blck;
    uint16_t *h = dst;
    switch (type) {
    case ORC_DT_F32: memcpy(dst, x, bytes); break;
    case ORC_DT_F16: for (int64_t i = 0; i < n; i++) h[i] = f2h(x[i]); break;
    case ORC_DT_BF16: for (int64_t i = 0; i < n; i++) h[i] = orc_f32_to_bf16(x[i]); break;
    case ORC_DT_Q4_0: q_q4_0(x, dst, nb); break;
    case ORC_DT_Q4_1: q_q4_1(x, dst, nb); break;
    case ORC_DT_Q5_0: q_q5_0(x, dst, nb); break;
    case ORC_DT_Q5_1: q_q5_1(x, dst, nb); break;
    case ORC_DT_Q8_0: q_q8_0(x, dst, nb); break;
    case ORC_DT_Q2_K: q_q2_K(x, dst, nb); break;
    case ORC_DT_Q3_K: q_q3_K(x, dst, nb); break;
    case ORC_DT_Q4_K: q_k45(x, dst, NULL, nb); break;
    case ORC_DT_Q5_K: q_k45(x, NULL, dst, nb); break;
    case ORC_DT_Q6_K: q_q6_K(x, dst, nb); break;
    case ORC_DT_Q8_K: orc_ref_quantize_q8k(x, dst, n); break;
    case ORC_DT_IQ4_NL: q_iq4_nl(x, dst, nb); break;
    case ORC_DT_IQ4_XS: q_iq4_xs(x, dst, nb); break;
    default: return 0;
    }
    return bytes;
}

/* ------------------------------------------------------------------ dot products */

/* Unpacks one 32-element weight block to signed ints plus its scale (and additive min,
 * for the Q4_1/Q5_1 types); the activation side is a blk_q8a. */
static void dec32(uint32_t type, const uint8_t *blk, int8_t *q, float *d, float *m)
{
    *m = 0.0f;
    switch (type) {
    case ORC_DT_Q4_0: {
        const blk_q4_0 *b = (const blk_q4_0 *)blk;
        *d = h2f(b->d);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)((b->qs[j] & 0xF) - 8);
            q[j + 16] = (int8_t)((b->qs[j] >> 4) - 8);
        }
        return;
    }
    case ORC_DT_Q4_1: {
        const blk_q4_1 *b = (const blk_q4_1 *)blk;
        *d = h2f(b->d);
        *m = h2f(b->m);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)(b->qs[j] & 0xF);
            q[j + 16] = (int8_t)(b->qs[j] >> 4);
        }
        return;
    }
    case ORC_DT_Q5_0:
    case ORC_DT_Q5_1: {
        int off = type == ORC_DT_Q5_0 ? 16 : 0;
        const uint8_t *qh = type == ORC_DT_Q5_0 ? ((const blk_q5_0 *)blk)->qh : ((const blk_q5_1 *)blk)->qh;
        const uint8_t *qs = type == ORC_DT_Q5_0 ? ((const blk_q5_0 *)blk)->qs : ((const blk_q5_1 *)blk)->qs;
        if (type == ORC_DT_Q5_0) {
            *d = h2f(((const blk_q5_0 *)blk)->d);
        } else {
            *d = h2f(((const blk_q5_1 *)blk)->d);
            *m = h2f(((const blk_q5_1 *)blk)->m);
        }
        uint32_t h = le32(qh);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)(((qs[j] & 0xF) | ((h >> j) & 1) << 4) - off);
            q[j + 16] = (int8_t)(((qs[j] >> 4) | ((h >> (j + 16)) & 1) << 4) - off);
        }
        return;
    }
    case ORC_DT_Q8_0: {
        const blk_q8_0 *b = (const blk_q8_0 *)blk;
        *d = h2f(b->d);
        memcpy(q, b->qs, 32);
        return;
    }
    case ORC_DT_IQ4_NL: {
        const blk_iq4_nl *b = (const blk_iq4_nl *)blk;
        *d = h2f(b->d);
        for (int j = 0; j < 16; j++) {
            q[j] = orc_iq4nl_values[b->qs[j] & 0xF];
            q[j + 16] = orc_iq4nl_values[b->qs[j] >> 4];
        }
        return;
    }
    default:
        *d = 0.0f;
        memset(q, 0, 32);
    }
}

/* Unpacks one K-quant super-block (or IQ4_XS) to signed ints q[256], an integer scale
 * and min per 16 elements, and the float super-scales: x = d*sc*q - dmin*mn. */
static void dec256(uint32_t type, const uint8_t *blk, int8_t *q, int *sc, int *mn,
                   float *d, float *dmin)
{
    *dmin = 0.0f;
    memset(mn, 0, 16 * sizeof(int));
    switch (type) {
    case ORC_DT_Q2_K: {
        const blk_q2_K *b = (const blk_q2_K *)blk;
        *d = h2f(b->d);
        *dmin = h2f(b->dmin);
        for (int g = 0; g < 16; g++) {
            sc[g] = b->scales[g] & 0xF;
            mn[g] = b->scales[g] >> 4;
        }
        for (int e = 0; e < QKK; e++)
            q[e] = (int8_t)((b->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3);
        return;
    }
    case ORC_DT_Q3_K: {
        const blk_q3_K *b = (const blk_q3_K *)blk;
        *d = h2f(b->d);
        q3k_scales(b->scales, sc);
        for (int e = 0; e < QKK; e++) {
            int j = (e % 128) / 32;
            int lo = (b->qs[32 * (e / 128) + e % 32] >> (2 * j)) & 3;
            int hi = (b->hmask[e % 32] >> (4 * (e / 128) + j)) & 1;
            q[e] = (int8_t)(lo + 4 * hi - 4);
        }
        return;
    }
    case ORC_DT_Q4_K:
    case ORC_DT_Q5_K: {
        const uint8_t *scales, *qs, *qh = NULL;
        if (type == ORC_DT_Q4_K) {
            const blk_q4_K *b = (const blk_q4_K *)blk;
            *d = h2f(b->d);
            *dmin = h2f(b->dmin);
            scales = b->scales;
            qs = b->qs;
        } else {
            const blk_q5_K *b = (const blk_q5_K *)blk;
            *d = h2f(b->d);
            *dmin = h2f(b->dmin);
            scales = b->scales;
            qs = b->qs;
            qh = b->qh;
        }
        for (int g = 0; g < 8; g++) {
            int s, m;
            get_scale_min_k4(g, scales, &s, &m);
            sc[2 * g] = sc[2 * g + 1] = s;
            mn[2 * g] = mn[2 * g + 1] = m;
        }
        for (int e = 0; e < QKK; e++) {
            int j = e / 64, hi = (e % 64) >= 32, l = e % 32;
            int v = hi ? qs[32 * j + l] >> 4 : qs[32 * j + l] & 0xF;
            if (qh)
                v |= ((qh[l] >> (2 * j + hi)) & 1) << 4;
            q[e] = (int8_t)v;
        }
        return;
    }
    case ORC_DT_Q6_K: {
        const blk_q6_K *b = (const blk_q6_K *)blk;
        *d = h2f(b->d);
        for (int g = 0; g < 16; g++)
            sc[g] = b->scales[g];
        for (int e = 0; e < QKK; e++) {
            int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
            int lo = (b->ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF;
            int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
            q[e] = (int8_t)((lo | hi << 4) - 32);
        }
        return;
    }
    case ORC_DT_IQ4_XS: {
        const blk_iq4_xs *b = (const blk_iq4_xs *)blk;
        *d = h2f(b->d);
        for (int g = 0; g < 8; g++) {
            int ls = ((b->scales_l[g / 2] >> (4 * (g % 2))) & 0xF) | (((b->scales_h >> (2 * g)) & 3) << 4);
            sc[2 * g] = sc[2 * g + 1] = ls - 32;
            for (int j = 0; j < 16; j++) {
                q[32 * g + j] = orc_iq4nl_values[b->qs[16 * g + j] & 0xF];
                q[32 * g + j + 16] = orc_iq4nl_values[b->qs[16 * g + j] >> 4];
            }
        }
        return;
    }
    default:
        *d = 0.0f;
        memset(q, 0, QKK);
        memset(sc, 0, 16 * sizeof(int));
    }
}

static float dot_f32(int64_t n, const float *x, const void *w, uint32_t type)
{
    const uint16_t *h = w;
    const float *f = w;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float v = type == ORC_DT_F32 ? f[i] : type == ORC_DT_F16 ? h2f(h[i]) : orc_bf16_to_f32(h[i]);
        acc += (double)v * x[i];
    }
    return (float)acc;
}

/* not inlined: callers pass fixed types, and gcc -O3 then warns about the other type's
 * (dead) path reading past their small buffers */
__attribute__((noinline)) float orc_ref_vec_dot(uint32_t type, int64_t n, const void *w, const void *xv)
{
    const orc_dtype_info *ti = orc_dtype_get(type);
    if (type == ORC_DT_F32 || type == ORC_DT_F16 || type == ORC_DT_BF16)
        return dot_f32(n, xv, w, type);
    if (!ti)
        return 0.0f;
    const uint8_t *wb = w;
    float acc = 0.0f;
    if (ti->blck == QK) {
        const blk_q8a *x = xv;
        for (int64_t i = 0; i < n / QK; i++, wb += ti->size) {
            int8_t q[32];
            float d, m;
            dec32(type, wb, q, &d, &m);
            int s = 0;
            for (int j = 0; j < 32; j++)
                s += q[j] * x[i].qs[j];
            acc += d * x[i].d * (float)s + m * x[i].d * (float)x[i].sum;
        }
        return acc;
    }
    const blk_q8_K *x = xv;
    for (int64_t i = 0; i < n / QKK; i++, wb += ti->size) {
        int8_t q[QKK];
        int sc[16], mn[16];
        float d, dmin;
        dec256(type, wb, q, sc, mn, &d, &dmin);
        int32_t s = 0, sm = 0;
        for (int g = 0; g < 16; g++) {
            int sg = 0;
            for (int k = 0; k < 16; k++)
                sg += q[16 * g + k] * x[i].qs[16 * g + k];
            s += sc[g] * sg;
            sm += mn[g] * x[i].bsums[g];
        }
        acc += d * x[i].d * (float)s - dmin * x[i].d * (float)sm;
    }
    return acc;
}

/* ------------------------------------------------------------------ repacked layouts */

void orc_rp_pack(const uint8_t *plain, uint8_t *grp, size_t bsz)
{
    size_t nq = bsz - 2; /* 16 (Q4_0) or 32 (Q8_0) quant bytes per block */
    for (int k = 0; k < 8; k++) {
        memcpy(grp + 2 * k, plain + k * bsz, 2);
        for (size_t s = 0; s < nq / 4; s++)
            memcpy(grp + 16 + 32 * s + 4 * k, plain + k * bsz + 2 + 4 * s, 4);
    }
}

void orc_rp_unpack(const uint8_t *grp, uint8_t *plain, size_t bsz)
{
    size_t nq = bsz - 2;
    for (int k = 0; k < 8; k++) {
        memcpy(plain + k * bsz, grp + 2 * k, 2);
        for (size_t s = 0; s < nq / 4; s++)
            memcpy(plain + k * bsz + 2 + 4 * s, grp + 16 + 32 * s + 4 * k, 4);
    }
}

void orc_rp_pack_act(const blk_q8a *plain, blk_q8ax8 *grp)
{
    blk_q8ax8 g;
    for (int k = 0; k < 8; k++) {
        g.d[k] = plain[k].d;
        g.sum[k] = plain[k].sum;
        for (int s = 0; s < 8; s++)
            memcpy(g.qs + 32 * s + 4 * k, plain[k].qs + 4 * s, 4);
    }
    memcpy(grp, &g, sizeof g);
}

void orc_rp_unpack_act(const blk_q8ax8 *grp, blk_q8a *plain)
{
    for (int k = 0; k < 8; k++) {
        plain[k].d = grp->d[k];
        plain[k].sum = grp->sum[k];
        for (int s = 0; s < 8; s++)
            memcpy(plain[k].qs + 4 * s, grp->qs + 32 * s + 4 * k, 4);
    }
}

void orc_rp_pack_q4k(const blk_q4_K *plain, blk_q4_K *out)
{
    blk_q4_K o = *plain;
    for (int k = 0; k < 8; k++) {
        for (int e = 0; e < 16; e++) {
            uint8_t b0 = plain->qs[32 * (k / 2) + e], b1 = plain->qs[32 * (k / 2) + e + 16];
            int lo = k % 2 ? b0 >> 4 : b0 & 0xF, hi = k % 2 ? b1 >> 4 : b1 & 0xF;
            o.qs[32 * (e / 4) + 4 * k + e % 4] = (uint8_t)(lo | (hi << 4));
        }
    }
    *out = o;
}

void orc_rp_unpack_q4k(const blk_q4_K *rp, blk_q4_K *out)
{
    blk_q4_K o = *rp;
    memset(o.qs, 0, sizeof o.qs);
    for (int k = 0; k < 8; k++) {
        for (int e = 0; e < 16; e++) {
            uint8_t b = rp->qs[32 * (e / 4) + 4 * k + e % 4];
            int sh = k % 2 ? 4 : 0;
            o.qs[32 * (k / 2) + e] |= (uint8_t)((b & 0xF) << sh);
            o.qs[32 * (k / 2) + e + 16] |= (uint8_t)((b >> 4) << sh);
        }
    }
    *out = o;
}

void orc_rp_pack_act_k(const blk_q8_K *plain, blk_q8_K *out)
{
    blk_q8_K o = *plain;
    for (int k = 0; k < 8; k++)
        for (int v = 0; v < 8; v++)
            memcpy(o.qs + 32 * v + 4 * k, plain->qs + 32 * k + 4 * v, 4);
    *out = o;
}

void orc_rp_unpack_act_k(const blk_q8_K *rp, blk_q8_K *out)
{
    blk_q8_K o = *rp;
    for (int k = 0; k < 8; k++)
        for (int v = 0; v < 8; v++)
            memcpy(o.qs + 32 * k + 4 * v, rp->qs + 32 * v + 4 * k, 4);
    *out = o;
}

static void ref_tile_q4_Kx8(int64_t n, const void *W, size_t ws, const void *X, size_t xs,
                            float *Y, int64_t ldy, int nr, int nt)
{
    for (int t = 0; t < nt; t++) {
        for (int r = 0; r < nr; r++) {
            const blk_q4_K *w = (const blk_q4_K *)((const uint8_t *)W + (size_t)r * ws);
            const blk_q8_K *x = (const blk_q8_K *)((const uint8_t *)X + (size_t)t * xs);
            float acc = 0.0f;
            for (int64_t i = 0; i < n / QKK; i++) {
                blk_q4_K pw = {0};
                blk_q8_K px = {0};
                orc_rp_unpack_q4k(&w[i], &pw);
                orc_rp_unpack_act_k(&x[i], &px);
                acc += orc_ref_vec_dot(ORC_DT_Q4_K, QKK, &pw, &px);
            }
            Y[t * ldy + r] = acc;
        }
    }
}

static void ref_tile_q6_Kx8(int64_t n, const void *W, size_t ws, const void *X, size_t xs,
                            float *Y, int64_t ldy, int nr, int nt)
{
    for (int t = 0; t < nt; t++) {
        for (int r = 0; r < nr; r++) {
            const blk_q6_K *w = (const blk_q6_K *)((const uint8_t *)W + (size_t)r * ws);
            const blk_q8_K *x = (const blk_q8_K *)((const uint8_t *)X + (size_t)t * xs);
            float acc = 0.0f;
            for (int64_t i = 0; i < n / QKK; i++) {
                blk_q6_K pw = {0};
                blk_q8_K px = {0};
                orc_rp_unpack_q6k(&w[i], &pw);
                orc_rp_unpack_act_k6(&x[i], &px);
                acc += orc_ref_vec_dot(ORC_DT_Q6_K, QKK, &pw, &px);
            }
            Y[t * ldy + r] = acc;
        }
    }
}

/* Repacked rows through the plain reference: de-interleave a group at a time. */
static float ref_dot_x8(uint32_t base, int64_t n, const uint8_t *w, const uint8_t *x)
{
    size_t bsz = base == ORC_DT_Q4_0 ? sizeof(blk_q4_0) : sizeof(blk_q8_0);
    int64_t nb = n / QK, ng = nb / 8;
    float acc = 0.0f;
    uint8_t pw[8 * sizeof(blk_q8_0)] = {0};
    blk_q8a px[8] = {{0}};
    for (int64_t g = 0; g < ng; g++) {
        orc_rp_unpack(w + (size_t)g * 8 * bsz, pw, bsz);
        orc_rp_unpack_act((const blk_q8ax8 *)(x + (size_t)g * sizeof(blk_q8ax8)), px);
        acc += orc_ref_vec_dot(base, 8 * QK, pw, px);
    }
    if (nb > ng * 8)
        acc += orc_ref_vec_dot(base, (nb - ng * 8) * QK, w + (size_t)ng * 8 * bsz,
                               x + (size_t)ng * sizeof(blk_q8ax8));
    return acc;
}

static void ref_tile_x8(uint32_t base, int64_t n, const void *W, size_t ws, const void *X, size_t xs,
                        float *Y, int64_t ldy, int nr, int nt)
{
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++)
            Y[t * ldy + r] = ref_dot_x8(base, n, (const uint8_t *)W + (size_t)r * ws,
                                        (const uint8_t *)X + (size_t)t * xs);
}

static void ref_tile_q4_0x8(int64_t n, const void *W, size_t ws, const void *X, size_t xs,
                            float *Y, int64_t ldy, int nr, int nt)
{
    ref_tile_x8(ORC_DT_Q4_0, n, W, ws, X, xs, Y, ldy, nr, nt);
}

static void ref_tile_q8_0x8(int64_t n, const void *W, size_t ws, const void *X, size_t xs,
                            float *Y, int64_t ldy, int nr, int nt)
{
    ref_tile_x8(ORC_DT_Q8_0, n, W, ws, X, xs, Y, ldy, nr, nt);
}

static void ref_tile(uint32_t type, int64_t n, const void *W, size_t ws, const void *X, size_t xs,
                     float *Y, int64_t ldy, int nr, int nt)
{
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++)
            Y[t * ldy + r] = orc_ref_vec_dot(type, n, (const uint8_t *)W + (size_t)r * ws,
                                             (const uint8_t *)X + (size_t)t * xs);
}

#define REF_TILE(T)                                                                      \
    static void ref_tile_##T(int64_t n, const void *W, size_t ws, const void *X, size_t xs, \
                             float *Y, int64_t ldy, int nr, int nt)                     \
    {                                                                                    \
        ref_tile(ORC_DT_##T, n, W, ws, X, xs, Y, ldy, nr, nt);                           \
    }
REF_TILE(F32) REF_TILE(F16) REF_TILE(BF16) REF_TILE(Q4_0) REF_TILE(Q4_1) REF_TILE(Q5_0)
REF_TILE(Q5_1) REF_TILE(Q8_0) REF_TILE(Q2_K) REF_TILE(Q3_K) REF_TILE(Q4_K) REF_TILE(Q5_K)
REF_TILE(Q6_K) REF_TILE(IQ4_NL) REF_TILE(IQ4_XS)

const orc_kernels orc_kernels_ref = {
    .name = "scalar",
    .tile = {
        [ORC_DT_F32] = ref_tile_F32, [ORC_DT_F16] = ref_tile_F16, [ORC_DT_BF16] = ref_tile_BF16,
        [ORC_DT_Q4_0] = ref_tile_Q4_0, [ORC_DT_Q4_1] = ref_tile_Q4_1,
        [ORC_DT_Q5_0] = ref_tile_Q5_0, [ORC_DT_Q5_1] = ref_tile_Q5_1,
        [ORC_DT_Q8_0] = ref_tile_Q8_0, [ORC_DT_Q2_K] = ref_tile_Q2_K,
        [ORC_DT_Q3_K] = ref_tile_Q3_K, [ORC_DT_Q4_K] = ref_tile_Q4_K,
        [ORC_DT_Q5_K] = ref_tile_Q5_K, [ORC_DT_Q6_K] = ref_tile_Q6_K,
        [ORC_DT_IQ4_NL] = ref_tile_IQ4_NL, [ORC_DT_IQ4_XS] = ref_tile_IQ4_XS,
        [ORC_SLOT_Q4_0X8] = ref_tile_q4_0x8, [ORC_SLOT_Q8_0X8] = ref_tile_q8_0x8,
        [ORC_SLOT_Q4_KX8] = ref_tile_q4_Kx8, [ORC_SLOT_Q6_KX8] = ref_tile_q6_Kx8,
    },
    .quant_q8a = orc_ref_quantize_q8a,
    .quant_q8k = orc_ref_quantize_q8k,
};
