/* dtype.h - tensor element types as GGUF numbers them (ggml_type), with block sizes.
 * Every quantized type stores rows as a sequence of fixed-size blocks; this table is
 * what the loader uses to check tensor sizes and what the kernels dispatch on. */
#ifndef ORC_DTYPE_H
#define ORC_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum orc_dtype {
    ORC_DT_F32 = 0,
    ORC_DT_F16 = 1,
    ORC_DT_Q4_0 = 2,
    ORC_DT_Q4_1 = 3,
    ORC_DT_Q5_0 = 6,
    ORC_DT_Q5_1 = 7,
    ORC_DT_Q8_0 = 8,
    ORC_DT_Q8_1 = 9,
    ORC_DT_Q2_K = 10,
    ORC_DT_Q3_K = 11,
    ORC_DT_Q4_K = 12,
    ORC_DT_Q5_K = 13,
    ORC_DT_Q6_K = 14,
    ORC_DT_Q8_K = 15,
    ORC_DT_IQ2_XXS = 16,
    ORC_DT_IQ2_XS = 17,
    ORC_DT_IQ3_XXS = 18,
    ORC_DT_IQ1_S = 19,
    ORC_DT_IQ4_NL = 20,
    ORC_DT_IQ3_S = 21,
    ORC_DT_IQ2_S = 22,
    ORC_DT_IQ4_XS = 23,
    ORC_DT_I8 = 24,
    ORC_DT_I16 = 25,
    ORC_DT_I32 = 26,
    ORC_DT_I64 = 27,
    ORC_DT_F64 = 28,
    ORC_DT_IQ1_M = 29,
    ORC_DT_BF16 = 30,
    ORC_DT_TQ1_0 = 34,
    ORC_DT_TQ2_0 = 35,
    ORC_DT_MXFP4 = 39,
    ORC_DT_COUNT = 40
};

typedef struct {
    const char *name;   /* "q4_K"-style name as llama.cpp prints it; NULL if unknown */
    uint32_t blck;      /* elements per block */
    uint32_t size;      /* bytes per block */
} orc_dtype_info;

/* Table entry for a type id, or NULL when the id is not a known type. */
const orc_dtype_info *orc_dtype_get(uint32_t type);
const char *orc_dtype_name(uint32_t type);

/* Bytes taken by one row of n elements; 0 when n is not a multiple of the block size,
 * the type is unknown, or the size would overflow. */
size_t orc_dtype_row_size(uint32_t type, int64_t n);

/* IEEE half and bfloat16 conversions (scalar, exact). */
float orc_f16_to_f32(uint16_t h);
uint16_t orc_f32_to_f16(float f);
float orc_bf16_to_f32(uint16_t h);
uint16_t orc_f32_to_bf16(float f);

#endif
