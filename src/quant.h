/* quant.h - dequantization and matrix kernels for every supported weight type.
 * Weights stay in their GGUF block format; activations are first converted to the
 * format the weight type's dot product consumes (e.g. 8-bit blocks for Q4_0), then
 * rows of W are dotted with rows of X. SIMD paths are chosen at run time. */
#ifndef ORC_QUANT_H
#define ORC_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when orc_matmul and orc_dequant_row handle weights of this type. */
bool orc_quant_supported(uint32_t wtype);

/* Dequantize n elements (a multiple of the block size) of a row into floats. */
void orc_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

/* Bytes of one activation row of n elements converted for weight type wtype. */
size_t orc_act_row_size(uint32_t wtype, int64_t n);

/* Convert one activation row (n floats) to the format wtype's dot product consumes. */
void orc_act_convert(uint32_t wtype, const float *x, void *dst, int64_t n);

/* Y[t * ldy + r] = dot(row r of W, row t of X) for r in [r0, r1), t in [0, n_tok).
 * W holds rows of n elements of type wtype, w_stride bytes apart; X holds n_tok rows
 * converted by orc_act_convert, x_stride bytes apart. Thread-safe for disjoint ranges. */
void orc_matmul(uint32_t wtype, const void *W, size_t w_stride, int64_t n,
                const void *X, size_t x_stride, int64_t n_tok,
                float *Y, int64_t ldy, int64_t r0, int64_t r1);

/* Name of the SIMD path in use ("avx512", "avx2", "scalar", ...). */
const char *orc_quant_isa(void);

#endif
