/* quant.c - dispatcher for the weight formats: picks the kernel table for the CPU
 * (cpu.c), converts activations, and drives the tiled matrix product over row ranges.
 * The per-type arithmetic lives in quant_ref.c (scalar) and quant_<isa>.c (SIMD). */
#include "quant.h"

#include "cpu.h"
#include "dtype.h"
#include "quant_amx.h"
#include "quant_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const orc_kernels *g_kern;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_amx_allowed;      /* the CPU has AMX-INT8 and ORC_NO_AMX is not set */
static bool g_amx_bf16_allowed; /* the CPU has AMX-BF16 and ORC_NO_AMX is not set */

static const orc_kernels *isa_by_name(const char *name)
{
    const orc_cpu_features *f = orc_cpu_get();
    if (strcmp(name, "scalar") == 0)
        return &orc_kernels_ref;
#if defined(__x86_64__) || defined(__i386__)
    if (strcmp(name, "avx2") == 0)
        return f->avx2 && f->fma && f->f16c ? &orc_kernels_avx2 : NULL;
    if (strcmp(name, "avx512") == 0)
        return f->avx512f && f->avx512bw && f->avx512vl && f->avx512vnni && f->avx2 &&
                       f->fma && f->f16c
                   ? &orc_kernels_avx512
                   : NULL;
#endif
#if defined(__ARM_NEON)
    if (strcmp(name, "neon") == 0)
        return &orc_kernels_neon;
#endif
    (void)f;
    return NULL;
}

static const orc_kernels *best_isa(void)
{
    static const char *order[] = {"avx512", "avx2", "neon", "scalar"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const orc_kernels *k = isa_by_name(order[i]);
        if (k)
            return k;
    }
    return &orc_kernels_ref;
}

static void init_isa(void)
{
    const char *na = getenv("ORC_NO_AMX");
    bool no_amx = na && *na && strcmp(na, "0") != 0;
    g_amx_allowed = orc_cpu_get()->amx_int8 && !no_amx;
    g_amx_bf16_allowed = orc_cpu_get()->amx_bf16 && !no_amx;
    const char *env = getenv("ORC_ISA");
    const orc_kernels *k = env && *env ? isa_by_name(env) : NULL;
    __atomic_store_n(&g_kern, k ? k : best_isa(), __ATOMIC_RELEASE);
}

static const orc_kernels *kern(void)
{
    pthread_once(&g_once, init_isa);
    return __atomic_load_n(&g_kern, __ATOMIC_ACQUIRE);
}

const char *orc_quant_isa(void)
{
    return kern()->name;
}

bool orc_quant_isa_available(const char *name)
{
    return name && isa_by_name(name) != NULL;
}

bool orc_quant_set_isa(const char *name)
{
    kern();
    const orc_kernels *k = !name || strcmp(name, "auto") == 0 ? best_isa() : isa_by_name(name);
    if (!k)
        return false;
    __atomic_store_n(&g_kern, k, __ATOMIC_RELEASE);
    return true;
}

bool orc_quant_amx(void)
{
#if defined(__x86_64__)
    return kern() == &orc_kernels_avx512 && g_amx_allowed;
#else
    return false;
#endif
}

bool orc_quant_amx_bf16(void)
{
#if defined(__x86_64__)
    return kern() == &orc_kernels_avx512 && g_amx_bf16_allowed;
#else
    return false;
#endif
}

/* AMX is on for this weight type (int8 or bf16 tiles) */
static bool amx_for(uint32_t wtype)
{
    return wtype == ORC_DT_F16 || wtype == ORC_DT_BF16 ? orc_quant_amx_bf16() : orc_quant_amx();
}

uint32_t orc_matmul_act_type(uint32_t wtype, int64_t n, int64_t n_tok)
{
    /* the tiles read plain activation rows: 32-element blocks (those of Q8_0), or Q8_K
     * for the K-quants (not the interleaved rows of their repacked layouts); bf16 hi + lo
     * rows for F16/BF16 */
    if (!amx_for(wtype) || !orc_amx_handles(wtype, n, n_tok))
        return wtype;
    if (wtype == ORC_DT_F16 || wtype == ORC_DT_BF16)
        return ORC_QUANT_ACT_BF16X2;
    uint32_t base = wtype & 0xFF;
    return base == ORC_DT_Q4_K || base == ORC_DT_Q6_K ? base : ORC_DT_Q8_0;
}

/* Kernel table slot of a weight type id, or -1. */
static int slot_of(uint32_t wtype)
{
    if (wtype == (ORC_DT_Q4_0 | ORC_QUANT_REPACKED))
        return ORC_SLOT_Q4_0X8;
    if (wtype == (ORC_DT_Q8_0 | ORC_QUANT_REPACKED))
        return ORC_SLOT_Q8_0X8;
    if (wtype == (ORC_DT_Q4_K | ORC_QUANT_REPACKED))
        return ORC_SLOT_Q4_KX8;
    if (wtype == (ORC_DT_Q6_K | ORC_QUANT_REPACKED))
        return ORC_SLOT_Q6_KX8;
    return wtype < ORC_DT_COUNT && orc_kernels_ref.tile[wtype] ? (int)wtype : -1;
}

static int act_kind(uint32_t wtype)
{
    if (wtype == ORC_QUANT_ACT_BF16X2)
        return ORC_ACT_BF16X2;
    if (wtype & ORC_QUANT_REPACKED)
        return slot_of(wtype) < 0                          ? -1
               : wtype == (ORC_DT_Q4_K | ORC_QUANT_REPACKED) ? ORC_ACT_Q8KX8
               : wtype == (ORC_DT_Q6_K | ORC_QUANT_REPACKED) ? ORC_ACT_Q8KX8_16
                                                             : ORC_ACT_Q8AX8;
    switch (wtype) {
    case ORC_DT_F32:
    case ORC_DT_F16:
    case ORC_DT_BF16:
        return ORC_ACT_F32;
    case ORC_DT_Q4_0:
    case ORC_DT_Q4_1:
    case ORC_DT_Q5_0:
    case ORC_DT_Q5_1:
    case ORC_DT_Q8_0:
    case ORC_DT_IQ4_NL:
        return ORC_ACT_Q8A;
    case ORC_DT_Q2_K:
    case ORC_DT_Q3_K:
    case ORC_DT_Q4_K:
    case ORC_DT_Q5_K:
    case ORC_DT_Q6_K:
    case ORC_DT_IQ4_XS:
        return ORC_ACT_Q8K;
    default:
        return -1;
    }
}

bool orc_quant_supported(uint32_t wtype)
{
    return wtype != ORC_QUANT_ACT_BF16X2 && act_kind(wtype) >= 0;
}

int orc_act_format(uint32_t wtype)
{
    return act_kind(wtype);
}

void orc_dequant_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    if (type & ORC_QUANT_REPACKED) {
        uint32_t base = type & ~ORC_QUANT_REPACKED;
        if (slot_of(type) < 0) {
            memset(dst, 0, (size_t)n * sizeof(float));
            return;
        }
        if (base == ORC_DT_Q6_K) {
            const blk_q6_K *b = src;
            for (int64_t i = 0; i < n / QKK; i++) {
                blk_q6_K p;
                orc_rp_unpack_q6k(&b[i], &p);
                orc_ref_dequant(base, &p, dst + i * QKK, QKK);
            }
            return;
        }
        if (base == ORC_DT_Q4_K) {
            const blk_q4_K *b = src;
            for (int64_t i = 0; i < n / QKK; i++) {
                blk_q4_K p;
                orc_rp_unpack_q4k(&b[i], &p);
                orc_ref_dequant(base, &p, dst + i * QKK, QKK);
            }
            return;
        }
        size_t bsz = orc_dtype_get(base)->size;
        int64_t nb = n / QK, ng = nb / 8;
        uint8_t plain[8 * sizeof(blk_q8_0)];
        const uint8_t *s = src;
        for (int64_t g = 0; g < ng; g++) {
            orc_rp_unpack(s + (size_t)g * 8 * bsz, plain, bsz);
            orc_ref_dequant(base, plain, dst + g * 8 * QK, 8 * QK);
        }
        orc_ref_dequant(base, s + (size_t)ng * 8 * bsz, dst + ng * 8 * QK, (nb - ng * 8) * QK);
        return;
    }
    orc_ref_dequant(type, src, dst, n);
}

uint32_t orc_quant_repack(uint32_t wtype, void *data, int64_t nrows, size_t row_stride, int64_t n)
{
    if (wtype == ORC_DT_Q6_K && n > 0 && n % QKK == 0 && nrows >= 0) {
        for (int64_t r = 0; r < nrows; r++) {
            blk_q6_K *b = (blk_q6_K *)((uint8_t *)data + (size_t)r * row_stride);
            for (int64_t i = 0; i < n / QKK; i++) {
                blk_q6_K tmp;
                memcpy(&tmp, &b[i], sizeof tmp);
                orc_rp_pack_q6k(&tmp, &tmp);
                memcpy(&b[i], &tmp, sizeof tmp);
            }
        }
        return wtype | ORC_QUANT_REPACKED;
    }
    if (wtype == ORC_DT_Q4_K && n > 0 && n % QKK == 0 && nrows >= 0) {
        for (int64_t r = 0; r < nrows; r++) {
            blk_q4_K *b = (blk_q4_K *)((uint8_t *)data + (size_t)r * row_stride);
            for (int64_t i = 0; i < n / QKK; i++) {
                blk_q4_K tmp;
                memcpy(&tmp, &b[i], sizeof tmp);
                orc_rp_pack_q4k(&tmp, &tmp);
                memcpy(&b[i], &tmp, sizeof tmp);
            }
        }
        return wtype | ORC_QUANT_REPACKED;
    }
    if ((wtype != ORC_DT_Q4_0 && wtype != ORC_DT_Q8_0) || n <= 0 || n % QK || nrows < 0)
        return wtype;
    size_t bsz = orc_dtype_get(wtype)->size;
    int64_t ng = n / QK / 8;
    uint8_t plain[8 * sizeof(blk_q8_0)];
    for (int64_t r = 0; r < nrows; r++) {
        uint8_t *row = (uint8_t *)data + (size_t)r * row_stride;
        for (int64_t g = 0; g < ng; g++) {
            memcpy(plain, row + (size_t)g * 8 * bsz, 8 * bsz);
            orc_rp_pack(plain, row + (size_t)g * 8 * bsz, bsz);
        }
    }
    return wtype | ORC_QUANT_REPACKED;
}

size_t orc_quantize_row(uint32_t type, const float *src, void *dst, int64_t n)
{
    return orc_ref_quantize(type, src, dst, n);
}

size_t orc_act_row_size(uint32_t wtype, int64_t n)
{
    if (n < 0)
        return 0;
    switch (act_kind(wtype)) {
    case ORC_ACT_F32:
    case ORC_ACT_BF16X2:
        return (uint64_t)n > SIZE_MAX / 4 ? 0 : (size_t)n * 4;
    case ORC_ACT_Q8A:
    case ORC_ACT_Q8AX8:
        return n % QK ? 0 : (size_t)(n / QK) * sizeof(blk_q8a);
    case ORC_ACT_Q8K:
    case ORC_ACT_Q8KX8:
    case ORC_ACT_Q8KX8_16:
        return n % QKK ? 0 : (size_t)(n / QKK) * sizeof(blk_q8_K);
    default:
        return 0;
    }
}

void orc_act_convert(uint32_t wtype, const float *x, void *dst, int64_t n)
{
    const orc_kernels *k = kern();
    switch (act_kind(wtype)) {
    case ORC_ACT_F32:
        memcpy(dst, x, (size_t)n * sizeof(float));
        return;
    case ORC_ACT_BF16X2:
        orc_amx_act_bf16x2(x, dst, n);
        return;
    case ORC_ACT_Q8A:
        (k->quant_q8a ? k->quant_q8a : orc_ref_quantize_q8a)(x, dst, n);
        return;
    case ORC_ACT_Q8K:
        (k->quant_q8k ? k->quant_q8k : orc_ref_quantize_q8k)(x, dst, n);
        return;
    case ORC_ACT_Q8KX8: {
        blk_q8_K *y = dst;
        (k->quant_q8k ? k->quant_q8k : orc_ref_quantize_q8k)(x, y, n);
        for (int64_t i = 0; i < n / QKK; i++)
            orc_rp_pack_act_k(&y[i], &y[i]);
        return;
    }
    case ORC_ACT_Q8KX8_16: {
        blk_q8_K *y = dst;
        (k->quant_q8k ? k->quant_q8k : orc_ref_quantize_q8k)(x, y, n);
        for (int64_t i = 0; i < n / QKK; i++)
            orc_rp_pack_act_k6(&y[i], &y[i]);
        return;
    }
    case ORC_ACT_Q8AX8: {
        /* quantize a group at a time into a buffer, then interleave */
        blk_q8a tmp[8];
        int64_t nb = n / QK, ng = nb / 8;
        for (int64_t g = 0; g < ng; g++) {
            (k->quant_q8a ? k->quant_q8a : orc_ref_quantize_q8a)(x + g * 8 * QK, tmp, 8 * QK);
            orc_rp_pack_act(tmp, (blk_q8ax8 *)dst + g);
        }
        (k->quant_q8a ? k->quant_q8a : orc_ref_quantize_q8a)(x + ng * 8 * QK, (blk_q8a *)dst + ng * 8,
                                                              (nb - ng * 8) * QK);
        return;
    }
    default:
        return;
    }
}

/* below the smallest of the AMX minimums, no product goes to the tiles */
#define AMX_MIN2(a, b) ((a) < (b) ? (a) : (b))
#define AMX_MIN_ANY AMX_MIN2(ORC_AMX_MIN_TOKENS, AMX_MIN2(ORC_AMX_F16_MIN_TOKENS, ORC_AMX_BF16_MIN_TOKENS))

/* Tiles of 4 rows x 4 tokens over the whole row length. For prefill the rows are taken
 * in panels small enough to stay in L2 while every token tile streams past them, so each
 * weight byte comes from DRAM once per call. */
#define TILE_R 4
#define TILE_T 4
#define PANEL_BYTES (192 * 1024)
#define DECODE_PF_BYTES 3072

void orc_matmul(uint32_t wtype, const void *W, size_t w_stride, int64_t n,
                const void *X, size_t x_stride, int64_t n_tok,
                float *Y, int64_t ldy, int64_t r0, int64_t r1)
{
    const orc_kernels *k = kern();
    int slot = slot_of(wtype);
    if (slot < 0 || r1 <= r0 || n_tok <= 0)
        return;
    if (n_tok >= AMX_MIN_ANY && amx_for(wtype) &&
        orc_amx_matmul(wtype, W, w_stride, n, X, x_stride, n_tok, Y, ldy, r0, r1))
        return;
    orc_tile_fn tile = k->tile[slot] ? k->tile[slot] : orc_kernels_ref.tile[slot];
    const uint8_t *w = W;
    const uint8_t *x = X;
    if (n_tok == 1) {
        /* Decode reads every weight byte once, from DRAM: quantized rows are taken one at
         * a time, so the rows a thread reads form one sequential stream (four rows side
         * by side are four short streams, which the hardware prefetchers serve worse),
         * and each row's bytes are requested into L2 DECODE_PF_BYTES ahead (the
         * prefetchers stop at every 4 KiB boundary). +25-30% Q4_0/Q4_K_M tokens/s on
         * the Xeon here; float rows are compute-heavier and stay four at a time. */
        uint32_t base = wtype & 0xFF;
        bool fl = base == ORC_DT_F32 || base == ORC_DT_F16 || base == ORC_DT_BF16;
        int step = fl ? TILE_R : 1;
        const uint8_t *end = w + (size_t)r1 * w_stride;
        for (int64_t r = r0; r < r1; r += step) {
            int nr = r1 - r < step ? (int)(r1 - r) : step;
            const uint8_t *cur = w + (size_t)r * w_stride;
            if (!fl)
                for (const uint8_t *pf = cur + DECODE_PF_BYTES, *pe = pf + w_stride; pf < pe && pf < end; pf += 64)
                    __builtin_prefetch(pf, 0, 2);
            tile(n, cur, w_stride, x, x_stride, Y + r, ldy, nr, 1);
        }
        return;
    }
    int64_t panel = w_stride ? (int64_t)(PANEL_BYTES / w_stride) : TILE_R;
    panel = panel < TILE_R ? TILE_R : panel - panel % TILE_R;
    for (int64_t p0 = r0; p0 < r1; p0 += panel) {
        int64_t p1 = r1 - p0 < panel ? r1 : p0 + panel;
        for (int64_t t = 0; t < n_tok; t += TILE_T) {
            int nt = n_tok - t < TILE_T ? (int)(n_tok - t) : TILE_T;
            for (int64_t r = p0; r < p1; r += TILE_R) {
                int nr = p1 - r < TILE_R ? (int)(p1 - r) : TILE_R;
                tile(n, w + (size_t)r * w_stride, w_stride, x + (size_t)t * x_stride, x_stride,
                     Y + t * ldy + r, ldy, nr, nt);
            }
        }
    }
}
