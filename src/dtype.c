/* dtype.c - the element type table and scalar half/bfloat16 conversions. */
#include "dtype.h"

#include <string.h>

static const orc_dtype_info dtype_table[ORC_DT_COUNT] = {
    [ORC_DT_F32] = {"f32", 1, 4},
    [ORC_DT_F16] = {"f16", 1, 2},
    [ORC_DT_Q4_0] = {"q4_0", 32, 18},
    [ORC_DT_Q4_1] = {"q4_1", 32, 20},
    [ORC_DT_Q5_0] = {"q5_0", 32, 22},
    [ORC_DT_Q5_1] = {"q5_1", 32, 24},
    [ORC_DT_Q8_0] = {"q8_0", 32, 34},
    [ORC_DT_Q8_1] = {"q8_1", 32, 36},
    [ORC_DT_Q2_K] = {"q2_K", 256, 84},
    [ORC_DT_Q3_K] = {"q3_K", 256, 110},
    [ORC_DT_Q4_K] = {"q4_K", 256, 144},
    [ORC_DT_Q5_K] = {"q5_K", 256, 176},
    [ORC_DT_Q6_K] = {"q6_K", 256, 210},
    [ORC_DT_Q8_K] = {"q8_K", 256, 292},
    [ORC_DT_IQ2_XXS] = {"iq2_xxs", 256, 66},
    [ORC_DT_IQ2_XS] = {"iq2_xs", 256, 74},
    [ORC_DT_IQ3_XXS] = {"iq3_xxs", 256, 98},
    [ORC_DT_IQ1_S] = {"iq1_s", 256, 50},
    [ORC_DT_IQ4_NL] = {"iq4_nl", 32, 18},
    [ORC_DT_IQ3_S] = {"iq3_s", 256, 110},
    [ORC_DT_IQ2_S] = {"iq2_s", 256, 82},
    [ORC_DT_IQ4_XS] = {"iq4_xs", 256, 136},
    [ORC_DT_I8] = {"i8", 1, 1},
    [ORC_DT_I16] = {"i16", 1, 2},
    [ORC_DT_I32] = {"i32", 1, 4},
    [ORC_DT_I64] = {"i64", 1, 8},
    [ORC_DT_F64] = {"f64", 1, 8},
    [ORC_DT_IQ1_M] = {"iq1_m", 256, 56},
    [ORC_DT_BF16] = {"bf16", 1, 2},
    [ORC_DT_TQ1_0] = {"tq1_0", 256, 54},
    [ORC_DT_TQ2_0] = {"tq2_0", 256, 66},
    [ORC_DT_MXFP4] = {"mxfp4", 32, 17},
};

const orc_dtype_info *orc_dtype_get(uint32_t type)
{
    if (type >= ORC_DT_COUNT || dtype_table[type].name == NULL)
        return NULL;
    return &dtype_table[type];
}

const char *orc_dtype_name(uint32_t type)
{
    const orc_dtype_info *t = orc_dtype_get(type);
    return t ? t->name : "unknown";
}

size_t orc_dtype_row_size(uint32_t type, int64_t n)
{
    const orc_dtype_info *t = orc_dtype_get(type);
    if (!t || n < 0 || n % t->blck != 0)
        return 0;
    uint64_t blocks = (uint64_t)n / t->blck;
    if (blocks > SIZE_MAX / t->size)
        return 0;
    return (size_t)(blocks * t->size);
}

float orc_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while ((mant & 0x400) == 0) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t orc_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (absx < 0x33000000u)
            return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    /* normal: round mantissa to nearest even */
    uint32_t r = absx - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t half = r >> 13;
    uint32_t rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        half++;
    return (uint16_t)(sign | half);
}

float orc_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t orc_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) /* nan: keep it quiet */
        return (uint16_t)((x >> 16) | 64);
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}
