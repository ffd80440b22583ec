/* quant_neon.c - ARM NEON kernels; compiled only on ARM. Until dedicated kernels land the
 * table falls back to the scalar reference for every type (NULL entries). */
#include "quant_impl.h"

#if defined(__ARM_NEON)
const orc_kernels orc_kernels_neon = {.name = "neon"};
#else
typedef int orc_quant_neon_unused; /* ISO C forbids an empty translation unit */
#endif
