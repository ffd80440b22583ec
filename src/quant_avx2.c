/* quant_avx2.c - AVX2+FMA+F16C kernel table. Only this file is compiled for that ISA
 * (target pragma), so the library runs on any x86-64; quant.c picks the table at run
 * time. The kernels themselves live in quant_x86.h, shared with the AVX-512 table. */
#include "quant_impl.h"

#if defined(__x86_64__) || defined(__i386__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define X86_VNNI 0
#define X86_MAXNT 2 /* 16 ymm registers: 4 rows x 2 tokens of accumulators */
#define X86_TABLE orc_kernels_avx2
#define X86_NAME "avx2"
#include "quant_x86.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else
typedef int orc_quant_avx2_unused;
#endif
