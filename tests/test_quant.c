/* test_quant.c - weight formats and kernels: dequantizers against hand-built blocks and
 * against llama.cpp-quantized tensors of the synthetic models, quantize/dequantize error
 * bounds, and every SIMD path against the scalar reference on odd shapes.
 * `test_quant --bench` instead prints decode GB/s and prefill GFLOP/s (no assertions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu.h"
#include "dtype.h"
#include "quant.h"
#include "quant_amx.h"
#include "quant_impl.h"
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const uint32_t all_types[] = {
    ORC_DT_F32, ORC_DT_F16, ORC_DT_BF16, ORC_DT_Q4_0, ORC_DT_Q4_1, ORC_DT_Q5_0,
    ORC_DT_Q5_1, ORC_DT_Q8_0, ORC_DT_Q2_K, ORC_DT_Q3_K, ORC_DT_Q4_K, ORC_DT_Q5_K,
    ORC_DT_Q6_K, ORC_DT_IQ4_NL, ORC_DT_IQ4_XS,
};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) { return (float)(rnd() & 0xFFFFFF) / 16777216.0f * 2.0f - 1.0f; }
static float gauss(void)
{
    float u = ((float)(rnd() & 0xFFFFFF) + 1.0f) / 16777217.0f, v = (float)(rnd() & 0xFFFFFF) / 16777216.0f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}
static uint16_t h(float f) { return orc_f32_to_f16(f); }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* ---------------------------------------------------------- hand-built blocks */

static void expect_row(uint32_t type, const void *blk, const float *want, int n)
{
    float got[256];
    orc_dequant_row(type, blk, got, n);
    for (int i = 0; i < n; i++) {
        if (fabsf(got[i] - want[i]) > 1e-6f * (1.0f + fabsf(want[i]))) {
            fail_msg("%s element %d: got %g want %g", orc_dtype_name(type), i, got[i], want[i]);
        }
    }
}

static void test_dequant_simple_blocks(void **state)
{
    (void)state;
    uint8_t b[64];
    float want[32];
    /* Q4_0: d=0.5; element j is the low nibble of byte j, element j+16 the high one. */
    memset(b, 0, sizeof b);
    put16(b, h(0.5f));
    for (int j = 0; j < 16; j++)
        b[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    for (int j = 0; j < 16; j++) {
        want[j] = 0.5f * (j - 8);
        want[j + 16] = 0.5f * (15 - j - 8);
    }
    expect_row(ORC_DT_Q4_0, b, want, 32);
    /* IQ4_NL: same packing through the non-linear table. */
    put16(b, h(0.25f));
    for (int j = 0; j < 16; j++) {
        want[j] = 0.25f * orc_iq4nl_values[j];
        want[j + 16] = 0.25f * orc_iq4nl_values[15 - j];
    }
    expect_row(ORC_DT_IQ4_NL, b, want, 32);
    /* Q4_1: d=2, m=-3 (x = d*q + m). */
    memset(b, 0, sizeof b);
    put16(b, h(2.0f));
    put16(b + 2, h(-3.0f));
    for (int j = 0; j < 16; j++)
        b[4 + j] = (uint8_t)(((j * 7) & 15) | (j << 4));
    for (int j = 0; j < 16; j++) {
        want[j] = 2.0f * ((j * 7) & 15) - 3.0f;
        want[j + 16] = 2.0f * j - 3.0f;
    }
    expect_row(ORC_DT_Q4_1, b, want, 32);
    /* Q5_0: qh is a little-endian 32-bit word; bit j is the 5th bit of element j. */
    memset(b, 0, sizeof b);
    put16(b, h(1.0f));
    uint32_t qh = 0xA5C3F00Fu;
    memcpy(b + 2, &qh, 4);
    for (int j = 0; j < 16; j++)
        b[6 + j] = (uint8_t)(j | ((j ^ 5) << 4));
    for (int j = 0; j < 16; j++) {
        want[j] = (float)((int)(j | (((qh >> j) & 1) << 4)) - 16);
        want[j + 16] = (float)((int)((j ^ 5) | (((qh >> (j + 16)) & 1) << 4)) - 16);
    }
    expect_row(ORC_DT_Q5_0, b, want, 32);
    /* Q5_1: same bits, scale 0.5, min 1. */
    memset(b, 0, sizeof b);
    put16(b, h(0.5f));
    put16(b + 2, h(1.0f));
    memcpy(b + 4, &qh, 4);
    for (int j = 0; j < 16; j++)
        b[8 + j] = (uint8_t)(j | ((j ^ 5) << 4));
    for (int j = 0; j < 16; j++) {
        want[j] = 0.5f * (int)(j | (((qh >> j) & 1) << 4)) + 1.0f;
        want[j + 16] = 0.5f * (int)((j ^ 5) | (((qh >> (j + 16)) & 1) << 4)) + 1.0f;
    }
    expect_row(ORC_DT_Q5_1, b, want, 32);
    /* Q8_0 */
    memset(b, 0, sizeof b);
    put16(b, h(-0.125f));
    for (int j = 0; j < 32; j++)
        b[2 + j] = (uint8_t)(int8_t)(j * 9 - 128);
    for (int j = 0; j < 32; j++)
        want[j] = -0.125f * (int8_t)(j * 9 - 128);
    expect_row(ORC_DT_Q8_0, b, want, 32);
    /* F16, BF16, F32 */
    uint16_t hh[4] = {0x3C00, 0xC000, 0x3555, 0x0001};
    float wf[4] = {1.0f, -2.0f, 0.333251953125f, 5.9604644775390625e-8f};
    expect_row(ORC_DT_F16, hh, wf, 4);
    uint16_t bb[3] = {0x3F80, 0xC040, 0x4049};
    float wb[3] = {1.0f, -3.0f, 3.140625f};
    expect_row(ORC_DT_BF16, bb, wb, 3);
    expect_row(ORC_DT_F32, wf, wf, 4);
}

static void test_dequant_kquant_blocks(void **state)
{
    (void)state;
    float want[256];
    /* Q4_K: 8 sub-blocks of 32; sub-block g has scale s[g], min m[g] (6 bits each):
     * g<4 in the low 6 bits of scales[g] / scales[g+4]; g>=4 low nibbles in byte g+4
     * (scale low, min high) and high 2 bits in bits 6-7 of bytes g-4 / g. */
    blk_q4_K k4;
    memset(&k4, 0, sizeof k4);
    int s[8] = {1, 2, 3, 63, 17, 33, 50, 7}, m[8] = {5, 0, 62, 8, 19, 40, 3, 63};
    for (int g = 0; g < 4; g++) {
        k4.scales[g] = (uint8_t)s[g];
        k4.scales[g + 4] = (uint8_t)m[g];
    }
    for (int g = 4; g < 8; g++) {
        k4.scales[g + 4] = (uint8_t)((s[g] & 15) | ((m[g] & 15) << 4));
        k4.scales[g - 4] |= (uint8_t)((s[g] >> 4) << 6);
        k4.scales[g] |= (uint8_t)((m[g] >> 4) << 6);
    }
    k4.d = h(0.5f);
    k4.dmin = h(0.25f);
    /* pair j of sub-blocks (2j, 2j+1) shares qs[32j..32j+31]: low nibble, high nibble */
    for (int i = 0; i < 128; i++)
        k4.qs[i] = (uint8_t)(i * 37 + 11);
    for (int e = 0; e < 256; e++) {
        int g = e / 32, byte = 32 * (g / 2) + e % 32;
        int q = g % 2 ? k4.qs[byte] >> 4 : k4.qs[byte] & 15;
        want[e] = 0.5f * s[g] * q - 0.25f * m[g];
    }
    expect_row(ORC_DT_Q4_K, &k4, want, 256);

    /* Q5_K: same scales; the 5th bit of element e is bit g of qh[e % 32]. */
    blk_q5_K k5;
    memset(&k5, 0, sizeof k5);
    memcpy(k5.scales, k4.scales, 12);
    memcpy(k5.qs, k4.qs, 128);
    k5.d = h(0.5f);
    k5.dmin = h(0.25f);
    for (int l = 0; l < 32; l++)
        k5.qh[l] = (uint8_t)(l * 29 + 3);
    for (int e = 0; e < 256; e++) {
        int g = e / 32, byte = 32 * (g / 2) + e % 32;
        int q = g % 2 ? k5.qs[byte] >> 4 : k5.qs[byte] & 15;
        q += ((k5.qh[e % 32] >> g) & 1) * 16;
        want[e] = 0.5f * s[g] * q - 0.25f * m[g];
    }
    expect_row(ORC_DT_Q5_K, &k5, want, 256);

    /* Q6_K: 16 int8 scales per 16 elements; element e (half hf = e/128, r = e%128,
     * quarter k = r/32, l = r%32): low 4 bits from ql[64hf + l + 32(k&1)] (nibble k>>1),
     * high 2 bits from qh[32hf + l] bits 2k..2k+1, value minus 32. */
    blk_q6_K k6;
    for (int i = 0; i < 128; i++)
        k6.ql[i] = (uint8_t)(i * 53 + 7);
    for (int i = 0; i < 64; i++)
        k6.qh[i] = (uint8_t)(i * 71 + 5);
    for (int g = 0; g < 16; g++)
        k6.scales[g] = (int8_t)(g * 17 - 128);
    k6.d = h(0.0625f);
    for (int e = 0; e < 256; e++) {
        int hf = e / 128, r = e % 128, k = r / 32, l = r % 32;
        int lo = (k6.ql[64 * hf + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 15;
        int hi = (k6.qh[32 * hf + l] >> (2 * k)) & 3;
        want[e] = 0.0625f * k6.scales[e / 16] * ((lo | (hi << 4)) - 32);
    }
    expect_row(ORC_DT_Q6_K, &k6, want, 256);

    /* Q3_K: 16 6-bit scales biased by 32: low nibbles of 0..7 in bytes 0..7, of 8..15 in
     * their high nibbles, bits 4-5 of scale j in byte 8 + j%4 at bit 2*(j/4). Element e:
     * 2 bits at qs[32(e/128) + e%32] >> 2((e%128)/32); hmask[e%32] bit 4(e/128)+(e%128)/32
     * set means +0, clear means -4. */
    blk_q3_K k3;
    memset(&k3, 0, sizeof k3);
    int s3[16];
    for (int j = 0; j < 16; j++) {
        s3[j] = (j * 13 + 5) % 64;
        if (j < 8)
            k3.scales[j] |= (uint8_t)(s3[j] & 15);
        else
            k3.scales[j - 8] |= (uint8_t)((s3[j] & 15) << 4);
        k3.scales[8 + j % 4] |= (uint8_t)((s3[j] >> 4) << (2 * (j / 4)));
    }
    for (int i = 0; i < 64; i++)
        k3.qs[i] = (uint8_t)(i * 97 + 1);
    for (int i = 0; i < 32; i++)
        k3.hmask[i] = (uint8_t)(i * 45 + 9);
    k3.d = h(0.5f);
    for (int e = 0; e < 256; e++) {
        int k = (e % 128) / 32;
        int lo = (k3.qs[32 * (e / 128) + e % 32] >> (2 * k)) & 3;
        int hb = (k3.hmask[e % 32] >> (4 * (e / 128) + k)) & 1;
        want[e] = 0.5f * (s3[e / 16] - 32) * (lo - (hb ? 0 : 4));
    }
    expect_row(ORC_DT_Q3_K, &k3, want, 256);

    /* Q2_K: scales[j] = scale (low nibble) | min (high nibble) for elements 16j..16j+15;
     * element e has 2 bits at qs[32(e/128) + e%32] >> 2((e%128)/32); x = d*s*q - dmin*m. */
    blk_q2_K k2;
    for (int j = 0; j < 16; j++)
        k2.scales[j] = (uint8_t)(j * 23 + 4);
    for (int i = 0; i < 64; i++)
        k2.qs[i] = (uint8_t)(i * 59 + 13);
    k2.d = h(0.5f);
    k2.dmin = h(0.125f);
    for (int e = 0; e < 256; e++) {
        int q = (k2.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        want[e] = 0.5f * (k2.scales[e / 16] & 15) * q - 0.125f * (k2.scales[e / 16] >> 4);
    }
    expect_row(ORC_DT_Q2_K, &k2, want, 256);

    /* IQ4_XS: sub-block g (32 elements) has scale ls = (4-bit from scales_l[g/2] nibble g%2)
     * | (2 bits of scales_h at 2g) << 4, minus 32; qs as IQ4_NL per sub-block. */
    blk_iq4_xs x4;
    int ls[8] = {0, 63, 31, 32, 1, 45, 17, 60};
    memset(&x4, 0, sizeof x4);
    for (int g = 0; g < 8; g++) {
        x4.scales_l[g / 2] |= (uint8_t)((ls[g] & 15) << (4 * (g % 2)));
        x4.scales_h |= (uint16_t)((ls[g] >> 4) << (2 * g));
    }
    for (int i = 0; i < 128; i++)
        x4.qs[i] = (uint8_t)(i * 31 + 2);
    x4.d = h(0.25f);
    for (int e = 0; e < 256; e++) {
        int g = e / 32, j = e % 32;
        uint8_t byte = x4.qs[16 * g + j % 16];
        int idx = j < 16 ? byte & 15 : byte >> 4;
        want[e] = 0.25f * (ls[g] - 32) * orc_iq4nl_values[idx];
    }
    expect_row(ORC_DT_IQ4_XS, &x4, want, 256);

    /* Q8_K (activation format): float d, int8 qs */
    blk_q8_K k8;
    memset(&k8, 0, sizeof k8);
    k8.d = 0.75f;
    for (int e = 0; e < 256; e++) {
        k8.qs[e] = (int8_t)(e - 128);
        want[e] = 0.75f * (e - 128);
    }
    expect_row(ORC_DT_Q8_K, &k8, want, 256);
}

/* ---------------------------------------------------------- llama.cpp-quantized files */

typedef struct {
    char name[96];
    uint32_t type;
    uint64_t ne[4];
    uint32_t n_dims;
    uint64_t off;
} mini_tensor;

typedef struct {
    uint8_t *buf;
    size_t len;
    size_t data;
    int n;
    mini_tensor t[64];
} mini_gguf;

static int mg_skip(const uint8_t *b, size_t len, size_t *p, uint32_t type, int depth)
{
    static const int sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type > 12 || depth > 2)
        return -1;
    if (type == 8) {
        uint64_t n;
        if (*p + 8 > len) return -1;
        memcpy(&n, b + *p, 8);
        if (n > len - *p - 8) return -1;
        *p += 8 + n;
        return 0;
    }
    if (type == 9) {
        uint32_t et;
        uint64_t n;
        if (*p + 12 > len) return -1;
        memcpy(&et, b + *p, 4);
        memcpy(&n, b + *p + 4, 8);
        *p += 12;
        for (uint64_t i = 0; i < n; i++)
            if (mg_skip(b, len, p, et, depth + 1) < 0)
                return -1;
        return 0;
    }
    if (*p + (size_t)sz[type] > len) return -1;
    *p += (size_t)sz[type];
    return 0;
}

/* Just enough GGUF to find tensors in the trusted fixtures (the real reader is gguf.c). */
static int mg_open(mini_gguf *g, const char *path)
{
    memset(g, 0, sizeof *g);
    g->buf = (uint8_t *)tu_read_file(path, &g->len);
    if (!g->buf || g->len < 24 || memcmp(g->buf, "GGUF", 4) != 0)
        return -1;
    const uint8_t *b = g->buf;
    uint64_t nt, nkv;
    memcpy(&nt, b + 8, 8);
    memcpy(&nkv, b + 16, 8);
    size_t p = 24;
    uint32_t align = 32;
    for (uint64_t i = 0; i < nkv; i++) {
        uint64_t kl;
        uint32_t vt;
        if (p + 8 > g->len) return -1;
        memcpy(&kl, b + p, 8);
        if (kl > g->len - p - 12) return -1;
        int is_align = kl == 17 && memcmp(b + p + 8, "general.alignment", 17) == 0;
        p += 8 + kl;
        memcpy(&vt, b + p, 4);
        p += 4;
        if (is_align && vt == 4 && p + 4 <= g->len)
            memcpy(&align, b + p, 4);
        if (mg_skip(b, g->len, &p, vt, 0) < 0) return -1;
    }
    if (nt > 64) return -1;
    for (uint64_t i = 0; i < nt; i++) {
        mini_tensor *t = &g->t[g->n++];
        uint64_t nl;
        if (p + 8 > g->len) return -1;
        memcpy(&nl, b + p, 8);
        if (nl >= sizeof t->name || nl > g->len - p - 8) return -1;
        memcpy(t->name, b + p + 8, nl);
        p += 8 + nl;
        if (p + 4 > g->len) return -1;
        memcpy(&t->n_dims, b + p, 4);
        p += 4;
        if (t->n_dims > 4 || p + 8 * t->n_dims + 12 > g->len) return -1;
        for (uint32_t d = 0; d < 4; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++, p += 8)
            memcpy(&t->ne[d], b + p, 8);
        memcpy(&t->type, b + p, 4);
        memcpy(&t->off, b + p + 4, 8);
        p += 12;
    }
    g->data = (p + align - 1) / align * align;
    return 0;
}

static const mini_tensor *mg_find(const mini_gguf *g, const char *name)
{
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->t[i].name, name) == 0)
            return &g->t[i];
    return NULL;
}

/* Expected dequantization error (RMS / RMS of the weights) per type, generous. */
static double type_tol(uint32_t type)
{
    switch (type) {
    case ORC_DT_F32: return 1e-7;
    case ORC_DT_F16: return 1e-3;
    case ORC_DT_BF16: return 8e-3;
    case ORC_DT_Q8_0: return 0.01;
    case ORC_DT_Q6_K: return 0.03;
    case ORC_DT_Q5_0: case ORC_DT_Q5_1: case ORC_DT_Q5_K: return 0.06;
    case ORC_DT_Q4_0: case ORC_DT_Q4_1: case ORC_DT_Q4_K: case ORC_DT_IQ4_NL: case ORC_DT_IQ4_XS: return 0.12;
    case ORC_DT_Q3_K: return 0.25;
    case ORC_DT_Q2_K: return 0.5;
    default: return 0.0;
    }
}

static void test_dequant_llamacpp_files(void **state)
{
    (void)state;
    static const char *files[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m",
                                  "q4_k_m", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs", "f16", "bf16"};
    mini_gguf ref;
    char path[256];
    assert_int_equal(mg_open(&ref, tu_shared("models/synthetic/llama-gqa-f32.gguf")), 0);
    int seen[ORC_DT_COUNT] = {0};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        mini_gguf q;
        snprintf(path, sizeof path, "models/synthetic/llama-gqa-%s.gguf", files[f]);
        assert_int_equal(mg_open(&q, tu_shared(path)), 0);
        for (int i = 0; i < q.n; i++) {
            const mini_tensor *t = &q.t[i];
            const mini_tensor *r = mg_find(&ref, t->name);
            assert_non_null(r);
            assert_int_equal(r->type, ORC_DT_F32);
            assert_true(orc_quant_supported(t->type));
            int64_t ncol = (int64_t)t->ne[0], nrow = (int64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
            size_t rs = orc_dtype_row_size(t->type, ncol);
            assert_true(rs > 0);
            assert_true(q.data + t->off + rs * (size_t)nrow <= q.len);
            float *row = malloc((size_t)ncol * sizeof(float));
            double se = 0, ss = 0;
            for (int64_t rr = 0; rr < nrow; rr++) {
                orc_dequant_row(t->type, q.buf + q.data + t->off + (size_t)rr * rs, row, ncol);
                const float *w = (const float *)(ref.buf + ref.data + r->off) + rr * ncol;
                for (int64_t c = 0; c < ncol; c++) {
                    se += (double)(row[c] - w[c]) * (row[c] - w[c]);
                    ss += (double)w[c] * w[c];
                }
            }
            free(row);
            double rel = sqrt(se / (ss > 0 ? ss : 1));
            if (rel > type_tol(t->type))
                fail_msg("%s %s (%s): relative rms error %.4f > %.4f", files[f], t->name,
                         orc_dtype_name(t->type), rel, type_tol(t->type));
            seen[t->type]++;
        }
        free(q.buf);
    }
    free(ref.buf);
    for (size_t i = 0; i < N_TYPES; i++)
        if (!seen[all_types[i]])
            fail_msg("no tensor of type %s in the fixtures", orc_dtype_name(all_types[i]));
}

/* ---------------------------------------------------------- quantizers */

static void test_quantize_roundtrip(void **state)
{
    (void)state;
    const uint32_t types[] = {ORC_DT_F16, ORC_DT_BF16, ORC_DT_Q4_0, ORC_DT_Q4_1, ORC_DT_Q5_0,
                              ORC_DT_Q5_1, ORC_DT_Q8_0, ORC_DT_Q2_K, ORC_DT_Q3_K, ORC_DT_Q4_K,
                              ORC_DT_Q5_K, ORC_DT_Q6_K, ORC_DT_Q8_K, ORC_DT_IQ4_NL, ORC_DT_IQ4_XS};
    /* gaussian data with a heavier-tailed component, as weights look */
    const int64_t n = 8192;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    uint8_t *q = malloc(orc_dtype_row_size(ORC_DT_F32, n));
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.02f * gauss() * (i % 97 == 0 ? 4.0f : 1.0f) + (i % 512 < 32 ? 0.01f : 0.0f);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        uint32_t t = types[k];
        size_t bytes = orc_quantize_row(t, x, q, n);
        assert_int_equal(bytes, orc_dtype_row_size(t, n));
        orc_dequant_row(t, q, y, n);
        double se = 0, ss = 0;
        for (int64_t i = 0; i < n; i++) {
            se += (double)(y[i] - x[i]) * (y[i] - x[i]);
            ss += (double)x[i] * x[i];
        }
        double rel = sqrt(se / ss), tol = t == ORC_DT_Q8_K ? 0.02 : type_tol(t);
        if (getenv("ORC_TEST_VERBOSE"))
            printf("quantize %-7s rel rms %.5f (bound %.4f)\n", orc_dtype_name(t), rel, tol);
        if (!(rel < tol))
            fail_msg("%s: relative rms error %.5f >= %.4f", orc_dtype_name(t), rel, tol);
        /* all zeros stay zeros */
        memset(y, 0, n * sizeof(float));
        assert_true(orc_quantize_row(t, y, q, 256) > 0);
        orc_dequant_row(t, q, x + n / 2, 256);
        for (int i = 0; i < 256; i++)
            assert_true(x[n / 2 + i] == 0.0f);
        for (int64_t i = n / 2; i < n / 2 + 256; i++)
            x[i] = 0.02f * gauss();
    }
    /* values already on the Q8_0 grid come back exactly */
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i - 16) * 0.25f;
    x[0] = -127 * 0.25f / 4;
    assert_int_equal(orc_quantize_row(ORC_DT_Q4_0, x, q, 33), 0);
    assert_int_equal(orc_quantize_row(ORC_DT_Q4_K, x, q, 32), 0);
    assert_int_equal(orc_quantize_row(ORC_DT_IQ2_XXS, x, q, 256), 0);
    free(x);
    free(y);
    free(q);
}

/* ---------------------------------------------------------- kernels */

/* Random but valid weight rows: random bytes with sane fp16 scales. */
static void random_weights(uint32_t type, uint8_t *w, int64_t n)
{
    const orc_dtype_info *ti = orc_dtype_get(type);
    size_t bytes = orc_dtype_row_size(type, n);
    if (type == ORC_DT_F32) {
        for (int64_t i = 0; i < n; i++)
            ((float *)w)[i] = frand();
        return;
    }
    if (type == ORC_DT_F16 || type == ORC_DT_BF16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)w)[i] = type == ORC_DT_F16 ? h(frand()) : orc_f32_to_bf16(frand());
        return;
    }
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd();
    int offs[2] = {-1, -1};
    switch (type) {
    case ORC_DT_Q4_1: case ORC_DT_Q5_1: case ORC_DT_Q4_K: case ORC_DT_Q5_K: offs[0] = 0; offs[1] = 2; break;
    case ORC_DT_Q2_K: offs[0] = 80; offs[1] = 82; break;
    case ORC_DT_Q3_K: offs[0] = 108; break;
    case ORC_DT_Q6_K: offs[0] = 208; break;
    default: offs[0] = 0; break;
    }
    for (int64_t b = 0; b < n / ti->blck; b++)
        for (int k = 0; k < 2; k++)
            if (offs[k] >= 0)
                put16(w + (size_t)b * ti->size + offs[k], h(0.01f * frand()));
}

static void run_matmul(uint32_t type, const uint8_t *w, size_t ws, int64_t n, const float *x,
                       int64_t n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    uint32_t at = orc_matmul_act_type(type, n, n_tok); /* plain blocks for AMX tiles */
    size_t as = orc_act_row_size(at, n);
    uint8_t *xa = malloc(as * (size_t)n_tok);
    for (int64_t t = 0; t < n_tok; t++)
        orc_act_convert(at, x + t * n, xa + (size_t)t * as, n);
    orc_matmul(type, w, ws, n, xa, as, n_tok, y, ldy, r0, r1);
    free(xa);
}

/* The scalar integer dot products agree with a float dot of the dequantized weights and
 * the (8-bit) activations, so the reference dot and the dequantizers cross-check. */
static void test_ref_dot_vs_dequant(void **state)
{
    (void)state;
    assert_true(orc_quant_set_isa("scalar"));
    const int64_t n = 512;
    uint8_t *w = malloc(orc_dtype_row_size(ORC_DT_F32, n));
    float *wf = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float));
    for (size_t k = 0; k < N_TYPES; k++) {
        uint32_t t = all_types[k];
        for (int rep = 0; rep < 5; rep++) {
            random_weights(t, w, n);
            for (int64_t i = 0; i < n; i++)
                x[i] = frand();
            float y = 0;
            run_matmul(t, w, 0, n, x, 1, &y, 1, 0, 1);
            orc_dequant_row(t, w, wf, n);
            double want = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                want += (double)wf[i] * x[i];
                mag += fabs((double)wf[i] * x[i]);
            }
            /* 8-bit activations: about 1/254 relative error per element, averaging out */
            double tol = t == ORC_DT_F32 || t == ORC_DT_F16 || t == ORC_DT_BF16 ? 1e-5 * mag : 0.01 * mag;
            if (fabs(y - want) > tol + 1e-6)
                fail_msg("%s: dot %g, dequantized dot %g (tol %g)", orc_dtype_name(t), y, want, tol);
        }
    }
    free(w);
    free(wf);
    free(x);
}

/* |y - x.w| <= 1% of sum |w_i x_i| against the float dot of the dequantized weights: for
 * products whose activations are rounded differently from the scalar reference. */
static void check_vs_float(const char *what, uint32_t t, const uint8_t *w, size_t ws, int64_t n,
                           const float *x, int64_t nt, const float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    float *wf = malloc(sizeof(float) * n);
    for (int64_t r = r0; r < r1; r++) {
        orc_dequant_row(t, w + r * ws, wf, n);
        for (int64_t tt = 0; tt < nt; tt++) {
            double want = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                want += (double)wf[i] * x[tt * n + i];
                mag += fabs((double)wf[i] * x[tt * n + i]);
            }
            double got = y[tt * ldy + r];
            if (!(fabs(got - want) <= 0.01 * mag + 1e-6))
                fail_msg("%s %s n=%lld n_tok=%lld row %lld tok %lld: %g, float dot %g (tol %g)", what,
                         orc_dtype_name(t), (long long)n, (long long)nt, (long long)r, (long long)tt, got,
                         want, 0.01 * mag);
        }
    }
    free(wf);
}

static void check_isa(const char *isa)
{
    static const int64_t sizes[] = {32, 256, 288, 4096 + 256, 4096 + 32 * 7, 37};
    static const int64_t toks[] = {1, 2, 3, 5, 17};
    const int64_t rows = 13, r0 = 1, r1 = 12;
    for (size_t k = 0; k < N_TYPES; k++) {
        uint32_t t = all_types[k];
        const orc_dtype_info *ti = orc_dtype_get(t);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int64_t n = sizes[si];
            if (n % ti->blck)
                continue;
            size_t ws = orc_dtype_row_size(t, n) + (si & 1) * ti->size; /* padded stride too */
            uint8_t *w = malloc(ws * rows);
            for (int64_t r = 0; r < rows; r++)
                random_weights(t, w + r * ws, n);
            float *x = malloc(sizeof(float) * n * 17);
            for (int64_t i = 0; i < n * 17; i++)
                x[i] = frand() * (i % 7 == 0 ? 3.0f : 1.0f);
            for (size_t ti2 = 0; ti2 < sizeof toks / sizeof toks[0]; ti2++) {
                int64_t nt = toks[ti2], ldy = rows + 3;
                float *yr = calloc((size_t)(ldy * nt), sizeof(float));
                float *yi = calloc((size_t)(ldy * nt), sizeof(float));
                assert_true(orc_quant_set_isa("scalar"));
                run_matmul(t, w, ws, n, x, nt, yr, ldy, r0, r1);
                assert_true(orc_quant_set_isa(isa));
                /* activations converted by this ISA must equal the reference conversion */
                size_t as = orc_act_row_size(t, n);
                uint8_t *a1 = malloc(as), *a2 = malloc(as);
                orc_act_convert(t, x + n, a1, n);
                assert_true(orc_quant_set_isa("scalar"));
                orc_act_convert(t, x + n, a2, n);
                if (memcmp(a1, a2, as) != 0)
                    fail_msg("%s: %s activation conversion differs from scalar (n=%lld)", isa,
                             orc_dtype_name(t), (long long)n);
                free(a1);
                free(a2);
                assert_true(orc_quant_set_isa(isa));
                run_matmul(t, w, ws, n, x, nt, yi, ldy, r0, r1);
                if (t == ORC_DT_Q4_0 || t == ORC_DT_Q8_0 || t == ORC_DT_Q4_K || t == ORC_DT_Q6_K) {
                    /* the repacked layout must give the same products on this path */
                    uint8_t *w2 = malloc(ws * rows);
                    memcpy(w2, w, ws * rows);
                    uint32_t rt = orc_quant_repack(t, w2, rows, ws, n);
                    assert_int_equal(rt, t | ORC_QUANT_REPACKED);
                    float *yp = calloc((size_t)(ldy * nt), sizeof(float));
                    double ymax = 0;
                    for (int64_t i = 0; i < ldy * nt; i++)
                        ymax = fmax(ymax, fabs(yi[i]));
                    run_matmul(rt, w2, ws, n, x, nt, yp, ldy, r0, r1);
                    for (int64_t i = 0; i < ldy * nt; i++)
                        if (!(fabsf(yp[i] - yi[i]) <= 2e-5 * ymax + 1e-4f * fabsf(yi[i]) + 1e-7f))
                            fail_msg("%s repacked %s n=%lld n_tok=%lld [%lld]: %g vs %g", isa,
                                     orc_dtype_name(t), (long long)n, (long long)nt, (long long)i, yp[i], yi[i]);
                    free(yp);
                    free(w2);
                }
                double mx = 0;
                for (int64_t i = 0; i < ldy * nt; i++)
                    mx = fmax(mx, fabs(yr[i]));
                /* a path that rounds the activations differently from the reference (none
                 * today: the AMX tiles take the same blocks) is checked against the float dot */
                bool other_act = orc_act_format(orc_matmul_act_type(t, n, nt)) != orc_act_format(t);
                double tol_abs = 2e-5 * mx;
                if (other_act)
                    check_vs_float(isa, t, w, ws, n, x, nt, yi, ldy, r0, r1);
                for (int64_t tt = 0; tt < nt && !other_act; tt++) {
                    for (int64_t r = 0; r < ldy; r++) {
                        float a = yr[tt * ldy + r], b = yi[tt * ldy + r];
                        bool inside = r >= r0 && r < r1;
                        if (!inside && b != 0.0f)
                            fail_msg("%s %s: wrote outside the row range (row %lld)", isa,
                                     orc_dtype_name(t), (long long)r);
                        if (inside && !(fabs(a - b) <= tol_abs + 1e-4 * fabs(a) + 1e-7))
                            fail_msg("%s %s n=%lld n_tok=%lld row %lld tok %lld: %.7g vs scalar %.7g",
                                     isa, orc_dtype_name(t), (long long)n, (long long)nt,
                                     (long long)r, (long long)tt, b, a);
                    }
                }
                free(yr);
                free(yi);
            }
            free(w);
            free(x);
        }
    }
    assert_true(orc_quant_set_isa("auto"));
}

static void test_repack_scalar(void **state)
{
    (void)state;
    const uint32_t types[] = {ORC_DT_Q4_0, ORC_DT_Q8_0, ORC_DT_Q4_K, ORC_DT_Q6_K};
    assert_true(orc_quant_set_isa("scalar"));
    for (size_t k = 0; k < 4; k++) {
        uint32_t t = types[k];
        const int64_t n = orc_dtype_get(t)->blck == 256 ? 256 * 3 : 256 * 3 + 32 * 5, rows = 5;
        size_t ws = orc_dtype_row_size(t, n);
        uint8_t *w = malloc(ws * rows), *w2 = malloc(ws * rows);
        for (int64_t r = 0; r < rows; r++)
            random_weights(t, w + r * ws, n);
        memcpy(w2, w, ws * rows);
        uint32_t rt = orc_quant_repack(t, w2, rows, ws, n);
        assert_int_equal(rt, t | ORC_QUANT_REPACKED);
        assert_true(orc_quant_supported(rt));
        assert_int_equal(orc_act_row_size(rt, n), orc_act_row_size(t, n));
        assert_int_not_equal(orc_act_format(rt), orc_act_format(t));
        assert_true(memcmp(w, w2, ws * rows) != 0);
        float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
        for (int64_t r = 0; r < rows; r++) {
            orc_dequant_row(t, w + r * ws, a, n);
            orc_dequant_row(rt, w2 + r * ws, b, n);
            assert_memory_equal(a, b, sizeof(float) * n);
        }
        float *x = malloc(sizeof(float) * n * 3), y1[15], y2[15];
        for (int64_t i = 0; i < n * 3; i++)
            x[i] = frand();
        run_matmul(t, w, ws, n, x, 3, y1, rows, 0, rows);
        run_matmul(rt, w2, ws, n, x, 3, y2, rows, 0, rows);
        for (int i = 0; i < 15; i++)
            assert_true(fabsf(y1[i] - y2[i]) <= 1e-5f * (fabsf(y1[i]) + 1.0f));
        free(w);
        free(w2);
        free(a);
        free(b);
        free(x);
    }
    assert_int_equal(orc_quant_repack(ORC_DT_Q5_K, NULL, 1, 176, 256), ORC_DT_Q5_K);
    assert_false(orc_quant_supported(ORC_DT_Q5_K | ORC_QUANT_REPACKED));
    assert_true(orc_quant_set_isa("auto"));
}

static void test_kernels_avx2(void **state)
{
    (void)state;
    if (!orc_quant_isa_available("avx2"))
        skip();
    check_isa("avx2");
}

static void test_kernels_avx512(void **state)
{
    (void)state;
    if (!orc_quant_isa_available("avx512"))
        skip();
    check_isa("avx512");
}

/* AMX tiles (Q4_0/Q8_0/Q4_K/Q6_K, plain and repacked, >= 32 tokens): panels of 16 rows with a
 * partial last one, several K chunks of 64 blocks, partial token tiles, a padded row
 * stride; against the scalar reference. */
static void test_kernels_amx(void **state)
{
    (void)state;
    if (!orc_quant_set_isa("avx512") || !orc_quant_amx()) {
        orc_quant_set_isa("auto");
        skip();
    }
    static const int64_t sizes[] = {32, 288, 256 * 3, 2048 + 256, 4096 + 32 * 7, 256 * 70};
    static const int64_t toks[] = {32, 33, 47, 64};
    static const uint32_t types[] = {ORC_DT_Q4_0, ORC_DT_Q8_0, ORC_DT_Q4_K, ORC_DT_Q6_K};
    const int64_t rows = 37, r0 = 1, r1 = 36;
    for (size_t k = 0; k < 4; k++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            uint32_t t = types[k];
            int64_t n = sizes[si];
            if (n % orc_dtype_get(t)->blck)
                continue;
            size_t ws = orc_dtype_row_size(t, n) + (si & 1) * orc_dtype_get(t)->size;
            uint8_t *w = malloc(ws * rows), *w2 = malloc(ws * rows);
            for (int64_t r = 0; r < rows; r++)
                random_weights(t, w + r * ws, n);
            memcpy(w2, w, ws * rows);
            uint32_t rt = orc_quant_repack(t, w2, rows, ws, n);
            float *x = malloc(sizeof(float) * n * 64);
            for (int64_t i = 0; i < n * 64; i++)
                x[i] = frand() * (i % 5 == 0 ? 3.0f : 1.0f);
            for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++) {
                int64_t nt = toks[ti], ldy = rows + 2;
                uint32_t want_at = t == ORC_DT_Q4_K || t == ORC_DT_Q6_K ? t : ORC_DT_Q8_0;
                assert_int_equal(orc_matmul_act_type(t, n, nt), want_at);
                assert_int_equal(orc_matmul_act_type(rt, n, nt), want_at);
                float *yr = calloc((size_t)(ldy * nt), sizeof(float));
                float *ya = calloc((size_t)(ldy * nt), sizeof(float));
                float *yp = calloc((size_t)(ldy * nt), sizeof(float));
                assert_true(orc_quant_set_isa("scalar"));
                run_matmul(t, w, ws, n, x, nt, yr, ldy, r0, r1);
                assert_true(orc_quant_set_isa("avx512"));
                run_matmul(t, w, ws, n, x, nt, ya, ldy, r0, r1);
                run_matmul(rt, w2, ws, n, x, nt, yp, ldy, r0, r1);
                double mx = 0;
                for (int64_t i = 0; i < ldy * nt; i++)
                    mx = fmax(mx, fabs(yr[i]));
                double tol_abs = 2e-5 * mx;
                for (int64_t tt = 0; tt < nt; tt++)
                    for (int64_t r = 0; r < ldy; r++) {
                        size_t i = (size_t)(tt * ldy + r);
                        bool inside = r >= r0 && r < r1;
                        if (!inside && (ya[i] != 0.0f || yp[i] != 0.0f))
                            fail_msg("amx %s: wrote outside the row range (row %lld)", orc_dtype_name(t),
                                     (long long)r);
                        if (inside && (!(fabs(ya[i] - yr[i]) <= tol_abs + 1e-4 * fabs(yr[i]) + 1e-7) ||
                                       !(fabs(yp[i] - yr[i]) <= tol_abs + 1e-4 * fabs(yr[i]) + 1e-7)))
                            fail_msg("amx %s n=%lld n_tok=%lld row %lld tok %lld: %.7g / repacked %.7g vs "
                                     "scalar %.7g", orc_dtype_name(t), (long long)n, (long long)nt,
                                     (long long)r, (long long)tt, ya[i], yp[i], yr[i]);
                    }
                free(yr);
                free(ya);
                free(yp);
            }
            free(w);
            free(w2);
            free(x);
        }
    assert_true(orc_quant_set_isa("auto"));
}

/* F16/BF16 products of >= 32 tokens on the path the given ISA takes (AMX-BF16 tiles with
 * hi + lo bf16 halves where the CPU has them, isa is avx512 and the batch is large
 * enough (F16 from 32 tokens, BF16 from 16), else the FMA kernels):
 * every output against the scalar reference (double accumulation) within tol of
 * sum_i |w_i x_i|. Odd row counts and ranges (partial panels, small products on the
 * stack scratch, two row groups of 256), row lengths that are multiples of 32 and not
 * (fp32 tail), several K chunks, token counts 16..100 and 530 (two token groups, partial
 * token tiles), a padded row stride; rows outside [r0, r1) untouched. Returns the worst
 * error / sum |w x| seen. */
static double check_f16_batched(const char *isa, bool amx, double tol)
{
    static const struct {
        int64_t rows, r0, r1, n, pad, ntok;
    } cases[] = {
        {37, 1, 36, 32, 0, 0},       {37, 1, 36, 96, 1, 0},  {37, 0, 37, 256 + 32 * 3, 0, 0},
        {21, 2, 19, 37, 1, 0},       {37, 1, 36, 300, 0, 0}, {37, 1, 36, 4096 + 17, 1, 0},
        {300, 3, 297, 64 + 5, 0, 530}, {40, 0, 40, 512, 0, 0},
    };
    static const int64_t toks[] = {16, 17, 32, 33, 47, 64, 100};
    static const uint32_t types[] = {ORC_DT_F16, ORC_DT_BF16};
    double worst = 0;
    for (size_t k = 0; k < 2; k++)
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            uint32_t t = types[k];
            int64_t rows = cases[ci].rows, r0 = cases[ci].r0, r1 = cases[ci].r1, n = cases[ci].n;
            size_t ws = orc_dtype_row_size(t, n) + (size_t)cases[ci].pad * 2;
            uint8_t *w = malloc(ws * (size_t)rows);
            for (int64_t r = 0; r < rows; r++)
                random_weights(t, w + (size_t)r * ws, n);
            float *wf = malloc(sizeof(float) * (size_t)(n * rows));
            for (int64_t r = 0; r < rows; r++)
                orc_dequant_row(t, w + (size_t)r * ws, wf + r * n, n);
            int64_t maxt = cases[ci].ntok ? cases[ci].ntok : 100;
            float *x = malloc(sizeof(float) * (size_t)(n * maxt));
            for (int64_t i = 0; i < n * maxt; i++)
                x[i] = frand() * (i % 5 == 0 ? 3.0f : 1.0f);
            for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++) {
                int64_t nt = cases[ci].ntok ? cases[ci].ntok : toks[ti], ldy = rows + 2;
                if (cases[ci].ntok && ti > 0)
                    break;
                float *yr = calloc((size_t)(ldy * nt), sizeof(float));
                float *ya = calloc((size_t)(ldy * nt), sizeof(float));
                assert_true(orc_quant_set_isa("scalar"));
                run_matmul(t, w, ws, n, x, nt, yr, ldy, r0, r1);
                assert_true(orc_quant_set_isa(isa));
                uint32_t at = orc_matmul_act_type(t, n, nt);
                int64_t min_tok = t == ORC_DT_F16 ? ORC_AMX_F16_MIN_TOKENS : ORC_AMX_BF16_MIN_TOKENS;
                assert_int_equal(at, amx && n >= 32 && nt >= min_tok ? ORC_QUANT_ACT_BF16X2 : t);
                assert_int_equal(orc_act_row_size(at, n), (size_t)n * 4);
                run_matmul(t, w, ws, n, x, nt, ya, ldy, r0, r1);
                for (int64_t tt = 0; tt < nt; tt++)
                    for (int64_t r = 0; r < ldy; r++) {
                        size_t i = (size_t)(tt * ldy + r);
                        if (r < r0 || r >= r1) {
                            if (ya[i] != 0.0f)
                                fail_msg("%s %s: wrote outside the row range (row %lld)", isa,
                                         orc_dtype_name(t), (long long)r);
                            continue;
                        }
                        double mag = 0;
                        for (int64_t e = 0; e < n; e++)
                            mag += fabs((double)wf[r * n + e] * x[tt * n + e]);
                        double err = fabs((double)ya[i] - yr[i]) / (mag + 1e-30);
                        worst = fmax(worst, err);
                        if (!(err <= tol))
                            fail_msg("%s%s %s n=%lld n_tok=%lld row %lld tok %lld: %.9g vs scalar %.9g "
                                     "(error %.3g of sum |w x|)", isa, amx ? "+amx" : "", orc_dtype_name(t),
                                     (long long)n, (long long)nt, (long long)r, (long long)tt, ya[i], yr[i], err);
                    }
                free(yr);
                free(ya);
            }
            free(w);
            free(wf);
            free(x);
        }
    assert_true(orc_quant_set_isa("auto"));
    return worst;
}

/* Inputs whose products and sums are exact in fp32 must come out exact: F16 weights with
 * all 11 significand bits (normal and subnormal) times 8-bit activations, and 4-bit
 * weights times 12-bit activations (both halves of the activation split). */
static void check_f16_exact(const char *isa)
{
    const int64_t rows = 19, n = 96, nt = 40;
    for (int kind = 0; kind < 3; kind++) {
        uint32_t t = kind == 2 ? ORC_DT_BF16 : ORC_DT_F16;
        size_t ws = (size_t)n * 2;
        uint16_t *w = malloc(ws * rows);
        float *x = malloc(sizeof(float) * (size_t)(n * nt));
        double *want = calloc((size_t)(rows * nt), sizeof(double));
        for (int64_t i = 0; i < rows * n; i++) {
            /* kind 0: 11-bit integers in units of 2^-24 (f16 subnormals below 1024 units)
             * or 2^-12 (normal), one unit per row so that every partial sum is exact */
            int k = (int)(rnd() % 4095) - 2047;
            float v = kind == 0 ? ldexpf((float)k, (i / n) % 2 ? -12 : -24) : (float)((int)(rnd() % 31) - 15);
            w[i] = t == ORC_DT_F16 ? h(v) : orc_f32_to_bf16(v);
            if (t == ORC_DT_F16 && kind == 0)
                assert_true(orc_f16_to_f32(w[i]) == v); /* exact in f16 */
        }
        for (int64_t i = 0; i < n * nt; i++)
            x[i] = kind == 0 ? (float)((int)(rnd() % 15) - 7) : ldexpf((float)((int)(rnd() % 8191) - 4095), -20);
        float *wf = malloc(sizeof(float) * (size_t)n);
        for (int64_t r = 0; r < rows; r++) {
            orc_dequant_row(t, (uint8_t *)w + (size_t)r * ws, wf, n);
            for (int64_t tt = 0; tt < nt; tt++)
                for (int64_t e = 0; e < n; e++)
                    want[tt * rows + r] += (double)wf[e] * x[tt * n + e];
        }
        float *y = calloc((size_t)(rows * nt), sizeof(float));
        assert_true(orc_quant_set_isa(isa));
        run_matmul(t, (uint8_t *)w, ws, n, x, nt, y, rows, 0, rows);
        for (int64_t i = 0; i < rows * nt; i++)
            if ((double)y[i] != want[i])
                fail_msg("%s %s exact case %d [%lld]: %.9g, want %.9g", isa, orc_dtype_name(t), kind, (long long)i,
                         y[i], want[i]);
        free(w);
        free(x);
        free(wf);
        free(want);
        free(y);
    }
    assert_true(orc_quant_set_isa("auto"));
}

/* The bf16 activation rows: per 32-element block, the first 64 bytes hold the elements
 * rounded to bf16 (nearest even; truncated where that would overflow), the next 64 bytes
 * their remainders rounded to bf16, together within 2^-17 of the element; a NaN stays a NaN, infinities keep lo = 0; the n % 32 tail stays fp32. */
static void check_act_bf16x2(void)
{
    const int64_t n = 32 * 5 + 7;
    float x[32 * 5 + 7];
    for (int64_t i = 0; i < n; i++)
        x[i] = gauss() * ldexpf(1.0f, (int)(rnd() % 40) - 20);
    x[3] = INFINITY;
    x[20] = -INFINITY;
    x[40] = NAN;
    x[41] = 0.0f;
    x[42] = -0.0f;
    x[43] = 1e-40f; /* fp32 subnormal */
    x[44] = 3.4e38f; /* rounds to infinity in bf16 */
    x[45] = 1.0f + 1.0f / 256.0f + 1.0f / 65536.0f; /* hi rounds up (tie to even), lo negative */
    const uint32_t nan_bits[2] = {0xFFFFDA5Du, 0x7F80FFFFu}; /* rounding would carry out of / into NaN */
    memcpy(&x[46], &nan_bits[0], 4);
    memcpy(&x[47], &nan_bits[1], 4);
    uint8_t out[4 * (32 * 5 + 7)];
    assert_int_equal(orc_act_row_size(ORC_QUANT_ACT_BF16X2, n), sizeof out);
    orc_act_convert(ORC_QUANT_ACT_BF16X2, x, out, n);
    for (int64_t b = 0; b < n / 32; b++)
        for (int k = 0; k < 32; k++) {
            float a = x[32 * b + k];
            size_t o = (size_t)(128 * b + 2 * k);
            uint16_t hi, lo;
            memcpy(&hi, out + o, 2);
            memcpy(&lo, out + o + 64, 2);
            uint32_t u;
            memcpy(&u, &a, 4);
            if (isnan(a)) {
                assert_true(isnan(orc_bf16_to_f32(hi)));
                continue;
            }
            if (isinf(a)) {
                assert_int_equal(hi, u >> 16);
                assert_int_equal(lo, 0);
                continue;
            }
            uint16_t want_hi = orc_f32_to_bf16(a);
            if (isinf(orc_bf16_to_f32(want_hi)))
                want_hi = (uint16_t)(u >> 16);
            assert_int_equal(hi, want_hi);
            float rest = a - orc_bf16_to_f32(hi);
            assert_int_equal(lo, orc_f32_to_bf16(rest));
            if (fabsf(a) > 1e-37f && !(fabs((double)a - orc_bf16_to_f32(hi) - orc_bf16_to_f32(lo)) <= ldexp(fabs(a), -17)))
                fail_msg("bf16 split of %.9g: %.9g + %.9g", a, orc_bf16_to_f32(hi), orc_bf16_to_f32(lo));
        }
    assert_memory_equal(out + 128 * (n / 32), x + 32 * (n / 32), sizeof(float) * (size_t)(n % 32));
    assert_false(orc_quant_supported(ORC_QUANT_ACT_BF16X2));
    assert_int_not_equal(orc_act_format(ORC_QUANT_ACT_BF16X2), orc_act_format(ORC_DT_F16));
}

static void test_kernels_f16_batched(void **state)
{
    (void)state;
    /* the FMA kernels on the same shapes (ORC_ISA=avx2, or avx512 without AMX-BF16) */
    check_act_bf16x2();
    const char *isas[] = {"avx2", "avx512", "neon"};
    for (size_t i = 0; i < 3; i++)
        if (orc_quant_isa_available(isas[i])) {
            bool amx = strcmp(isas[i], "avx512") == 0 && orc_quant_set_isa("avx512") && orc_quant_amx_bf16();
            if (amx)
                continue;
            double worst = check_f16_batched(isas[i], false, 1e-6);
            printf("f16/bf16 batched on %s: worst error %.3g of sum |w x|\n", isas[i], worst);
            check_f16_exact(isas[i]);
        }
    orc_quant_set_isa("auto");
}

/* The same on the AMX-BF16 tiles; skipped without them. Each term a w is computed as
 * a_hi w_hi + a_hi w_lo + a_lo w_hi with a = a_hi + a_lo to 2^-17 and the dropped a_lo w_lo
 * at most 2^-16 of a w (both halves rounded to nearest, of either sign), so the error is
 * at most 3 * 2^-17 of sum |w x| plus the fp32 accumulation (about 1e-7 here, as on the
 * FMA path). The exact cases must still come out exact. */
static void test_kernels_amx_bf16(void **state)
{
    (void)state;
    if (!orc_quant_set_isa("avx512") || !orc_quant_amx_bf16()) {
        orc_quant_set_isa("auto");
        skip();
    }
    assert_int_equal(orc_matmul_act_type(ORC_DT_F16, 64, ORC_AMX_F16_MIN_TOKENS - 1), ORC_DT_F16);
    assert_int_equal(orc_matmul_act_type(ORC_DT_F16, 64, ORC_AMX_F16_MIN_TOKENS), ORC_QUANT_ACT_BF16X2);
    assert_int_equal(orc_matmul_act_type(ORC_DT_BF16, 64, ORC_AMX_BF16_MIN_TOKENS - 1), ORC_DT_BF16);
    assert_int_equal(orc_matmul_act_type(ORC_DT_BF16, 64, ORC_AMX_BF16_MIN_TOKENS), ORC_QUANT_ACT_BF16X2);
    assert_int_equal(orc_matmul_act_type(ORC_DT_F16, 31, 64), ORC_DT_F16);
    assert_int_equal(orc_matmul_act_type(ORC_DT_F32, 64, 64), ORC_DT_F32);
    double worst = check_f16_batched("avx512", true, 3 * ldexp(1.0, -17) + 1e-6);
    printf("f16/bf16 batched on AMX-BF16: worst error %.3g of sum |w x|\n", worst);
    check_f16_exact("avx512");
}

static void test_kernels_neon(void **state)
{
    (void)state;
    if (!orc_quant_isa_available("neon"))
        skip();
    check_isa("neon");
}

static void test_sizes_and_isa_api(void **state)
{
    (void)state;
    assert_int_equal(orc_act_row_size(ORC_DT_Q4_0, 64), 80);
    assert_int_equal(orc_act_row_size(ORC_DT_Q4_K, 512), 584);
    assert_int_equal(orc_act_row_size(ORC_DT_F16, 10), 40);
    assert_int_equal(orc_act_row_size(ORC_DT_Q4_K, 32), 0);
    assert_int_equal(orc_act_row_size(ORC_DT_IQ2_XXS, 256), 0);
    assert_false(orc_quant_supported(ORC_DT_IQ2_XXS));
    assert_false(orc_quant_supported(999));
    assert_false(orc_quant_set_isa("no-such-isa"));
    assert_true(orc_quant_set_isa("scalar"));
    assert_string_equal(orc_quant_isa(), "scalar");
    assert_true(orc_quant_set_isa(NULL));
    assert_non_null(orc_cpu_describe());
}

/* ---------------------------------------------------------- benchmark mode */

/* Single-thread runs are timed in thread CPU time: the build machine is shared, and
 * wall time there mostly measures the other processes. */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    uint32_t type;
    const uint8_t *w;
    size_t ws;
    int64_t n;
    const void *x;
    size_t xs;
    int64_t n_tok;
    float *y;
    int64_t ldy, r0, r1;
} bench_job;

static void *bench_worker(void *arg)
{
    bench_job *j = arg;
    orc_matmul(j->type, j->w, j->ws, j->n, j->x, j->xs, j->n_tok, j->y, j->ldy, j->r0, j->r1);
    return NULL;
}

/* Runs one matmul split over nth threads (rows halves); returns seconds. */
static double bench_call(bench_job base, int nth)
{
    pthread_t th[8];
    bench_job jobs[8];
    int64_t rows = base.r1;
    bench_clock = nth == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
    double t0 = now_s();
    for (int i = 0; i < nth; i++) {
        jobs[i] = base;
        jobs[i].r0 = rows * i / nth;
        jobs[i].r1 = rows * (i + 1) / nth;
        if (nth > 1)
            pthread_create(&th[i], NULL, bench_worker, &jobs[i]);
        else
            bench_worker(&jobs[i]);
    }
    if (nth > 1)
        for (int i = 0; i < nth; i++)
            pthread_join(th[i], NULL);
    return now_s() - t0;
}

static int run_bench(const char *filter)
{
    const int64_t rows = 2048, n = 8192;
    const uint32_t types[] = {ORC_DT_Q4_0, ORC_DT_Q8_0, ORC_DT_Q4_K, ORC_DT_Q6_K, ORC_DT_F16};
    const char *isas[] = {"avx512", "avx2", "neon"};
    printf("cpu: %s\n", orc_cpu_describe());
    float *src = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++)
        src[i] = 0.02f * gauss();
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        uint32_t t = types[k];
        if (filter && strcmp(filter, orc_dtype_name(t)) != 0)
            continue;
        size_t ws = orc_dtype_row_size(t, n), mat = ws * rows;
        int copies = getenv("ORC_BENCH_HOT") ? 1 : (int)((512u << 20) / mat) + 1;
        uint8_t *w = malloc(mat * copies);
        for (int64_t r = 0; r < rows; r++)
            orc_quantize_row(t, src, w + r * ws, n);
        for (int c = 1; c < copies; c++)
            memcpy(w + mat * c, w, mat);
        int64_t ntok = 512;
        size_t as = orc_act_row_size(t, n);
        uint8_t *xa = malloc(as * ntok);
        float *xf = malloc(sizeof(float) * n * ntok);
        for (int64_t i = 0; i < n * ntok; i++)
            xf[i] = gauss();
        for (int64_t i = 0; i < ntok; i++)
            orc_act_convert(t, xf + i * n, xa + i * as, n);
        float *y = malloc(sizeof(float) * rows * ntok);
        for (int rp = 0; rp < 2; rp++) {
        if (rp) {
            uint32_t rt = orc_quant_repack(t, w, rows * copies, ws, n);
            if (rt == t)
                break;
            t = rt;
            for (int64_t i = 0; i < ntok; i++)
                orc_act_convert(t, xf + i * n, xa + i * as, n);
        }
        for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
            if (!orc_quant_set_isa(isas[ii]))
                continue;
            for (int nth = 1; nth <= 2; nth++) {
                bench_job b = {t, NULL, ws, n, xa, as, 1, y, rows, 0, rows};
                double best = 1e9;
                for (int rep = 0; rep < 3; rep++) {
                    double tt = 0;
                    for (int c = 0; c < copies; c++) {
                        b.w = w + mat * c;
                        tt += bench_call(b, nth);
                    }
                    best = fmin(best, tt / copies);
                }
                printf("%-6s %-5s%s decode  %dT  %2lldx%lld: %7.1f GB/s  (%.3f ms)\n", isas[ii],
                       orc_dtype_name(t & 0xFF), t & ORC_QUANT_REPACKED ? "x8" : "  ", nth, (long long)rows, (long long)n, mat / best / 1e9, best * 1e3);
            }
            for (int nth = 1; nth <= 2; nth++) {
                bench_job b = {t, w, ws, n, xa, as, ntok, y, rows, 0, rows};
                double tc = now_s();
                for (int i = 0; i < ntok; i++)
                    orc_act_convert(t, xf + i * n, xa + i * as, n);
                tc = now_s() - tc;
                double best = 1e9;
                for (int rep = 0; rep < 2; rep++)
                    best = fmin(best, bench_call(b, nth));
                printf("%-6s %-5s%s prefill %dT  512 tok: %7.1f GFLOP/s (%.1f ms; act convert %.2f ms)\n",
                       isas[ii], orc_dtype_name(t & 0xFF), t & ORC_QUANT_REPACKED ? "x8" : "  ", nth,
                       2.0 * rows * n * ntok / best / 1e9, best * 1e3, tc * 1e3);
            }
        }
        }
        free(w);
        free(xa);
        free(xf);
        free(y);
    }
    free(src);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return run_bench(argc > 2 ? argv[2] : NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_isa_api),
        cmocka_unit_test(test_dequant_simple_blocks),
        cmocka_unit_test(test_dequant_kquant_blocks),
        cmocka_unit_test(test_dequant_llamacpp_files),
        cmocka_unit_test(test_quantize_roundtrip),
        cmocka_unit_test(test_ref_dot_vs_dequant),
        cmocka_unit_test(test_repack_scalar),
        cmocka_unit_test(test_kernels_avx2),
        cmocka_unit_test(test_kernels_avx512),
        cmocka_unit_test(test_kernels_amx),
        cmocka_unit_test(test_kernels_f16_batched),
        cmocka_unit_test(test_kernels_amx_bf16),
        cmocka_unit_test(test_kernels_neon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
