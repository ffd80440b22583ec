/* quant_avx512.c - AVX-512 (F/BW/VL/VNNI) kernel table. Uses 256-bit vectors with the
 * AVX-512VL encodings: 32 registers allow 4x4 tiles, and vpdpbusd/vpdpwssd fuse the int8
 * and int16 dot steps (on Zen 4, 512-bit ops are double-pumped, so ymm loses nothing). */
#include "quant_impl.h"

#if defined(__x86_64__) || defined(__i386__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#endif

#define X86_VNNI 1
#define X86_MAXNT 4
#define X86_TABLE orc_kernels_avx512
#define X86_NAME "avx512"
#include "quant_x86.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else
typedef int orc_quant_avx512_unused;
#endif
