/* common.h - internal helpers every component uses: error reporting into the
 * thread-local last-error buffer, logging through the host's callback, and checked
 * size arithmetic for sizes that come from untrusted input. */
#ifndef ORC_COMMON_H
#define ORC_COMMON_H

#include "orchard.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define ORC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ORC_PRINTF(a, b)
#endif

/* Sets the thread's last error message and returns status (for `return orc_fail(...)`). */
orc_status orc_fail(orc_status status, const char *fmt, ...) ORC_PRINTF(2, 3);
void orc_clear_error(void);

void orc_log(orc_log_level level, const char *fmt, ...) ORC_PRINTF(2, 3);

/* Overflow-checked arithmetic: false when the result does not fit. */
static inline bool orc_mul_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool orc_add_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Number of online CPUs (at least 1). */
int orc_n_cpus(void);

#endif
