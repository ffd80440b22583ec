/* quant.c - scalar reference kernels for float weight types (F32, F16, BF16).
 * Quantized types and SIMD paths plug in behind the same interface. */
#include "quant.h"

#include "dtype.h"

#include <string.h>

bool orc_quant_supported(uint32_t wtype)
{
    return wtype == 0 || wtype == 1 || wtype == 30;
}

void orc_dequant_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    switch (type) {
    case 0:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case 1:
        for (int64_t i = 0; i < n; i++)
            dst[i] = orc_f16_to_f32(h[i]);
        break;
    case 30:
        for (int64_t i = 0; i < n; i++)
            dst[i] = orc_bf16_to_f32(h[i]);
        break;
    default:
        memset(dst, 0, (size_t)n * sizeof(float));
    }
}

size_t orc_act_row_size(uint32_t wtype, int64_t n)
{
    (void)wtype;
    return (size_t)n * sizeof(float);
}

void orc_act_convert(uint32_t wtype, const float *x, void *dst, int64_t n)
{
    (void)wtype;
    memcpy(dst, x, (size_t)n * sizeof(float));
}

void orc_matmul(uint32_t wtype, const void *W, size_t w_stride, int64_t n,
                const void *X, size_t x_stride, int64_t n_tok,
                float *Y, int64_t ldy, int64_t r0, int64_t r1)
{
    float row[4096];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = (const uint8_t *)W + (size_t)r * w_stride;
        for (int64_t t = 0; t < n_tok; t++) {
            const float *x = (const float *)((const uint8_t *)X + (size_t)t * x_stride);
            float acc = 0.0f;
            for (int64_t i0 = 0; i0 < n; i0 += 4096) {
                int64_t m = n - i0 < 4096 ? n - i0 : 4096;
                orc_dequant_row(wtype, w + orc_dtype_row_size(wtype, i0), row, m);
                for (int64_t i = 0; i < m; i++)
                    acc += row[i] * x[i0 + i];
            }
            Y[t * ldy + r] = acc;
        }
    }
}

const char *orc_quant_isa(void)
{
    return "scalar";
}
