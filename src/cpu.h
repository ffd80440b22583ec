/* cpu.h - run-time CPU feature detection (cpuid + xgetbv on x86, compile-time on ARM).
 * The kernel dispatcher in quant.c asks this once which SIMD paths it may use; features
 * are reported only when the OS also saves the matching register state. */
#ifndef ORC_CPU_H
#define ORC_CPU_H

#include <stdbool.h>

typedef struct {
    bool avx, avx2, fma, f16c;
    bool avx512f, avx512dq, avx512bw, avx512vl, avx512vnni, avx512bf16, avx512vbmi;
    bool avxvnni;
    bool amx_int8;   /* AMX tiles with int8 dot products, and the OS let this process use them */
    bool amx_bf16;   /* the same tiles with bf16 dot products (fp32 accumulation) */
    bool neon, dotprod;
} orc_cpu_features;

/* Features of the running CPU; computed on first call, then cached (thread-safe). */
const orc_cpu_features *orc_cpu_get(void);

/* Space-separated list of the detected features, for logs ("avx2 fma f16c ..."). */
const char *orc_cpu_describe(void);

#endif
