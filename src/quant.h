/* quant.h - dequantization, quantization and matrix kernels for every supported weight
 * type. Weights stay in their GGUF block format; activations are first converted to the
 * format the weight type's dot product consumes (8-bit blocks for quantized types, as
 * llama.cpp does), then rows of W are dotted with rows of X. SIMD paths (AVX2, AVX-512,
 * NEON, scalar) are chosen at run time; docs/kernels.md describes the design. */
#ifndef ORC_QUANT_H
#define ORC_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when orc_matmul and orc_dequant_row handle weights of this type: F32, F16, BF16,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS. */
bool orc_quant_supported(uint32_t wtype);

/* Dequantize n elements (a multiple of the block size) of a row into floats. Also
 * accepts Q8_K. Unsupported types write zeros. */
void orc_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

/* Quantize n floats (a multiple of the block size) into dst, which must hold
 * orc_dtype_row_size(type, n) bytes. Returns the bytes written, or 0 when the type has no
 * quantizer (IQ2/IQ3/IQ1/TQ/MXFP4) or n is not a multiple of its block size. Types: F32,
 * F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL,
 * IQ4_XS. Scalar and deterministic; non-finite inputs give unspecified (but in-range)
 * codes. */
size_t orc_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

/* Bytes of one activation row of n elements converted for weight type wtype; 0 when n
 * is not a multiple of wtype's block size or the type is unsupported. F32/F16/BF16
 * weights take F32 activations (4n bytes); 32-element types take 8-bit blocks of 40 bytes
 * per 32; K-quants and IQ4_XS take Q8_K blocks (292 bytes per 256). */
size_t orc_act_row_size(uint32_t wtype, int64_t n);

/* Convert one activation row (n floats) to the format wtype's dot product consumes. */
void orc_act_convert(uint32_t wtype, const float *x, void *dst, int64_t n);

/* Y[t * ldy + r] = dot(row r of W, row t of X) for r in [r0, r1), t in [0, n_tok).
 * W holds rows of n elements of type wtype, w_stride bytes apart; X holds n_tok rows
 * converted by orc_act_convert, x_stride bytes apart. Thread-safe for disjoint ranges.
 * n_tok > 1 runs tiled (4 rows x 4 tokens per weight load). */
void orc_matmul(uint32_t wtype, const void *W, size_t w_stride, int64_t n,
                const void *X, size_t x_stride, int64_t n_tok,
                float *Y, int64_t ldy, int64_t r0, int64_t r1);

/* Load-time repacking (optional; see docs/kernels.md). Flag on a weight type id: the rows
 * are in the interleaved layout orc_quant_repack produced. Such ids are accepted by
 * orc_quant_supported, orc_dequant_row, orc_act_row_size, orc_act_convert, orc_matmul
 * and orc_act_format, with the same row sizes as the plain type. */
#define ORC_QUANT_REPACKED 0x100u

/* Rewrites nrows rows (n elements of wtype each, row_stride bytes apart) in place into
 * the interleaved layout, when wtype has one (Q4_0, Q8_0, Q4_K, Q6_K; see docs/kernels.md
 * for when it pays).
 * Returns the type id to use from then on: wtype | ORC_QUANT_REPACKED when repacked,
 * wtype unchanged (and the data untouched) otherwise. Activations for a repacked tensor
 * must be converted with the returned id. */
uint32_t orc_quant_repack(uint32_t wtype, void *data, int64_t nrows, size_t row_stride, int64_t n);

/* Activation format id of a weight type: two weight types with the same id accept the
 * same converted activation rows (so the forward pass can convert x once for Q, K, V);
 * -1 when unsupported. */
int orc_act_format(uint32_t wtype);

/* Activation-only type id (not a weight type: orc_quant_supported says false): F32 rows
 * split into bf16 hi + lo halves for the AMX-BF16 tiles, 4n bytes a row. Accepted by
 * orc_act_row_size, orc_act_convert and orc_act_format. */
#define ORC_QUANT_ACT_BF16X2 (ORC_DT_BF16 | 0x200u)

/* The weight type id whose activation format orc_matmul consumes for this product: wtype,
 * or a plain type (Q8_0's 32-element blocks; Q8_K rows for K-quants) when the batch goes
 * to AMX int8 tiles (Q4_0/Q8_0/Q4_K/Q6_K, >= 32 tokens, on CPUs with AMX-INT8 while the
 * avx512 path is selected), or ORC_QUANT_ACT_BF16X2 when an F16/BF16 batch goes to the
 * AMX-BF16 tiles (F16 >= 32 tokens, BF16 >= 16, rows of >= 32 elements, CPUs with
 * AMX-BF16, avx512 path);
 * ORC_NO_AMX=1 turns both off. Convert activations with
 * orc_act_convert(orc_matmul_act_type(...)). */
uint32_t orc_matmul_act_type(uint32_t wtype, int64_t n, int64_t n_tok);

/* True when batched Q4_0/Q8_0/Q4_K/Q6_K products use AMX int8 tiles. */
bool orc_quant_amx(void);

/* True when batched F16/BF16 products use AMX-BF16 tiles. */
bool orc_quant_amx_bf16(void);

/* Name of the SIMD path in use ("avx512", "avx2", "neon", "scalar"). The default is the
 * best the CPU supports; the environment variable ORC_ISA (same names) overrides it. */
const char *orc_quant_isa(void);

/* Selects a SIMD path by name (NULL or "auto": the best available). Returns false, and
 * changes nothing, when this build or CPU lacks it. Not thread-safe against running
 * kernels: meant for tests and benchmarks. */
bool orc_quant_set_isa(const char *name);

/* True when the named path can run here. */
bool orc_quant_isa_available(const char *name);

#endif
