/* quant_amx.h - Intel AMX int8 tiles for batched products of Q4_0, Q8_0, Q4_K and Q6_K weights
 * (quant_amx.c). Private to quant.c, which calls it only when cpu.c reports amx_int8. */
#ifndef ORC_QUANT_AMX_H
#define ORC_QUANT_AMX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Batches from this many tokens go to the tiles (one tile is 16 tokens; below 32 the
 * per-panel unpacking is not repaid: measured break-even at about 32 for Q4_0/Q8_0). */
#define ORC_AMX_MIN_TOKENS 32

/* True when orc_amx_matmul computes this product (weight type, row length, tokens). Its
 * activations are then the plain 32-element blocks (blk_q8a), also for repacked weights. */
bool orc_amx_handles(uint32_t wtype, int64_t n, int64_t n_tok);

/* Same contract as orc_matmul; false (nothing written) when !orc_amx_handles. */
bool orc_amx_matmul(uint32_t wtype, const void *W, size_t ws, int64_t n, const void *X, size_t xs,
                    int64_t n_tok, float *Y, int64_t ldy, int64_t r0, int64_t r1);

#endif
