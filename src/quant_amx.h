/* quant_amx.h - Intel AMX tiles for batched products (quant_amx.c): int8 tiles for Q4_0,
 * Q8_0, Q4_K and Q6_K weights, bf16 tiles for F16 and BF16 weights. Private to quant.c,
 * which calls it only when cpu.c reports amx_int8 (amx_bf16 for F16/BF16). */
#ifndef ORC_QUANT_AMX_H
#define ORC_QUANT_AMX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Batches from this many tokens go to the tiles (one tile is 16 tokens; below 32 the
 * per-panel unpacking is not repaid: measured break-even at about 32 for Q4_0/Q8_0). */
#define ORC_AMX_MIN_TOKENS 32

/* The same for F16 and BF16 weights on the bf16 tiles: below, converting each weight
 * panel (a transpose, and for F16 the hi/lo split) is not repaid. Measured break-even
 * (2048 x 2048, one core): F16 about 24 tokens (1.5x the FMA kernels at 32), BF16 about
 * 8 (its FMA kernel is half as fast; 2.2x at 16). */
#define ORC_AMX_F16_MIN_TOKENS 32
#define ORC_AMX_BF16_MIN_TOKENS 16

/* True when orc_amx_matmul computes this product (weight type, row length, tokens). Its
 * activations are then the plain 32-element blocks (blk_q8a), also for repacked weights,
 * Q8_K rows for Q4_K/Q6_K, and orc_amx_act_bf16x2 rows for F16/BF16. */
bool orc_amx_handles(uint32_t wtype, int64_t n, int64_t n_tok);

/* Same contract as orc_matmul; false (nothing written) when !orc_amx_handles. */
bool orc_amx_matmul(uint32_t wtype, const void *W, size_t ws, int64_t n, const void *X, size_t xs,
                    int64_t n_tok, float *Y, int64_t ldy, int64_t r0, int64_t r1);

/* One activation row (n floats) for the bf16 tiles, 4n bytes: per 32-element block 64
 * bytes of truncated bf16 halves then 64 bytes of the rounded remainders, each 32-bit
 * lane k holding elements k and k + 16; the last n % 32 elements as floats. Any CPU. */
void orc_amx_act_bf16x2(const float *x, void *dst, int64_t n);

#endif
