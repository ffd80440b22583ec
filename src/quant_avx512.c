/* quant_avx512.c - AVX-512 kernels (placeholder table until the SIMD kernels land). */
#include "quant_impl.h"

#if defined(__x86_64__) || defined(__i386__)
const orc_kernels orc_kernels_avx512 = {.name = "avx512"};
#endif
