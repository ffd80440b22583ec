/* quant_impl.h - private to the quant_*.c files: GGUF block layouts, the activation
 * formats the dot products consume, the scalar reference routines (quant_ref.c) and the
 * per-ISA kernel table that quant.c dispatches through. */
#ifndef ORC_QUANT_IMPL_H
#define ORC_QUANT_IMPL_H

#include "dtype.h"

#include <stddef.h>
#include <stdint.h>

#define QK 32     /* elements per block of the simple formats */
#define QKK 256   /* elements per K-quant super-block */

/* Weight blocks exactly as GGUF stores them (ggml-common.h layouts); all fields are
 * byte-aligned so the structs have no padding. Halves are IEEE binary16 bits. */
typedef struct { uint16_t d; uint8_t qs[16]; } blk_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } blk_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } blk_q8_0;
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } blk_q2_K;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } blk_q3_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } blk_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } blk_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } blk_q6_K;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } blk_q8_K;
typedef struct { uint16_t d; uint8_t qs[16]; } blk_iq4_nl;
typedef struct { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } blk_iq4_xs;

_Static_assert(sizeof(blk_q4_0) == 18, "q4_0");
_Static_assert(sizeof(blk_q4_1) == 20, "q4_1");
_Static_assert(sizeof(blk_q5_0) == 22, "q5_0");
_Static_assert(sizeof(blk_q5_1) == 24, "q5_1");
_Static_assert(sizeof(blk_q8_0) == 34, "q8_0");
_Static_assert(sizeof(blk_q2_K) == 84, "q2_K");
_Static_assert(sizeof(blk_q3_K) == 110, "q3_K");
_Static_assert(sizeof(blk_q4_K) == 144, "q4_K");
_Static_assert(sizeof(blk_q5_K) == 176, "q5_K");
_Static_assert(sizeof(blk_q6_K) == 210, "q6_K");
_Static_assert(sizeof(blk_q8_K) == 292, "q8_K");
_Static_assert(sizeof(blk_iq4_nl) == 18, "iq4_nl");
_Static_assert(sizeof(blk_iq4_xs) == 136, "iq4_xs");

/* Activation block for the 32-element formats (Q4_0..Q8_0, IQ4_NL): llama.cpp's Q8_0 /
 * Q8_1 quantization (d rounded through fp16 exactly as ggml stores it) with d widened
 * to float and the integer sum of qs kept, so zero-point corrections stay exact. */
typedef struct { float d; int32_t sum; int8_t qs[32]; } blk_q8a;
_Static_assert(sizeof(blk_q8a) == 40, "q8a");

/* Repacked (load-time) layouts, ORC_QUANT_REPACKED in quant.h: each run of 8 blocks of a
 * row becomes one group with the 8 scales first and the quants interleaved 4 bytes at a
 * time (byte 4s+i of block k at qs[32s + 4k + i]), so one 32-byte load feeds 8 blocks and
 * a dot-product step leaves block k's partial sum in 32-bit lane k. Groups are the same
 * size as the 8 blocks they replace; a row's last n/32 % 8 blocks stay plain. */
typedef struct { uint16_t d[8]; uint8_t qs[128]; } blk_q4_0x8;
typedef struct { uint16_t d[8]; int8_t qs[256]; } blk_q8_0x8;
/* activations for repacked weights, same interleave: 8 blk_q8a in 320 bytes */
typedef struct { float d[8]; int32_t sum[8]; int8_t qs[256]; } blk_q8ax8;
_Static_assert(sizeof(blk_q4_0x8) == 8 * sizeof(blk_q4_0), "q4_0x8");
_Static_assert(sizeof(blk_q8_0x8) == 8 * sizeof(blk_q8_0), "q8_0x8");
_Static_assert(sizeof(blk_q8ax8) == 8 * sizeof(blk_q8a), "q8ax8");

/* Repacked Q4_K: d, dmin and scales stay; qs is re-ordered so 32-bit lane k of each
 * 32-byte step holds sub-block k: byte qs[32s + 4k + i] = code(k, 4s+i) | code(k, 16+4s+i)
 * << 4. The matching activations are blk_q8_K with qs[32v + 4k + i] = x[32k + 4v + i]. */

/* Kernel table slots: the ggml type ids, then the repacked layouts. */
enum { ORC_SLOT_Q4_0X8 = ORC_DT_COUNT, ORC_SLOT_Q8_0X8, ORC_SLOT_Q4_KX8, ORC_SLOT_Q6_KX8, ORC_SLOT_COUNT };

/* Which activation format a weight type consumes. */
enum { ORC_ACT_F32, ORC_ACT_Q8A, ORC_ACT_Q8K, ORC_ACT_Q8AX8, ORC_ACT_Q8KX8, ORC_ACT_Q8KX8_16, ORC_ACT_BF16X2 };

void orc_rp_pack_q4k(const blk_q4_K *plain, blk_q4_K *out);
void orc_rp_unpack_q4k(const blk_q4_K *rp, blk_q4_K *out);
void orc_rp_pack_act_k(const blk_q8_K *plain, blk_q8_K *out);
void orc_rp_unpack_act_k(const blk_q8_K *rp, blk_q8_K *out);
/* Repacked Q6_K (see quant_ref.c): lane k = 16-element group 8h+k of half h. */
void orc_rp_pack_q6k(const blk_q6_K *plain, blk_q6_K *out);
void orc_rp_unpack_q6k(const blk_q6_K *rp, blk_q6_K *out);
void orc_rp_pack_act_k6(const blk_q8_K *plain, blk_q8_K *out);
void orc_rp_unpack_act_k6(const blk_q8_K *rp, blk_q8_K *out);

/* Interleave / de-interleave one group (bsz = plain block size, 18 or 34). */
void orc_rp_pack(const uint8_t *plain, uint8_t *grp, size_t bsz);
void orc_rp_unpack(const uint8_t *grp, uint8_t *plain, size_t bsz);
void orc_rp_pack_act(const blk_q8a *plain, blk_q8ax8 *grp);
void orc_rp_unpack_act(const blk_q8ax8 *grp, blk_q8a *plain);

extern const int8_t orc_iq4nl_values[16];

/* ---- scalar reference (quant_ref.c) ---- */
void orc_ref_dequant(uint32_t type, const void *src, float *dst, int64_t n);
size_t orc_ref_quantize(uint32_t type, const float *src, void *dst, int64_t n);
void orc_ref_quantize_q8a(const float *x, blk_q8a *y, int64_t n);
void orc_ref_quantize_q8k(const float *x, blk_q8_K *y, int64_t n);
/* dot of one weight row (n elements of type) with one converted activation row */
float orc_ref_vec_dot(uint32_t type, int64_t n, const void *w, const void *x);

/* Kernel computing an nr x nt tile (nr, nt <= 4): Y[t*ldy + r] = dot(W row r, X row t)
 * over all n elements; W and Y already point at the tile's first row/token. */
typedef void (*orc_tile_fn)(int64_t n, const void *W, size_t ws, const void *X, size_t xs,
                            float *Y, int64_t ldy, int nr, int nt);

typedef struct {
    const char *name;
    orc_tile_fn tile[ORC_SLOT_COUNT];        /* NULL: use the scalar reference */
    void (*quant_q8a)(const float *x, blk_q8a *y, int64_t n);   /* NULL: reference */
    void (*quant_q8k)(const float *x, blk_q8_K *y, int64_t n);
} orc_kernels;

extern const orc_kernels orc_kernels_ref;
#if defined(__x86_64__) || defined(__i386__)
extern const orc_kernels orc_kernels_avx2;
extern const orc_kernels orc_kernels_avx512;
#endif
#if defined(__ARM_NEON)
extern const orc_kernels orc_kernels_neon;
#endif

static inline int orc_nearest_int(float v)
{
    /* round half away from zero is what roundf does; ggml uses round-to-nearest-even via
     * the 1.5*2^23 trick. Match ggml so quantized activations agree bit for bit. */
    float t = v + 12582912.0f;
    int32_t i;
    __builtin_memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

#endif
