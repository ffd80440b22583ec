/* quant_avx2.c - AVX2+FMA kernels (placeholder table until the SIMD kernels land). */
#include "quant_impl.h"

#if defined(__x86_64__) || defined(__i386__)
const orc_kernels orc_kernels_avx2 = {.name = "avx2"};
#endif
