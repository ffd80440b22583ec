/* api.c - versions, status strings, the thread-local last error and the log sink. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static _Thread_local char last_error[1024];

int32_t orc_version_number(void)
{
    return ORC_VERSION_NUMBER;
}

const char *orc_version_string(void)
{
    return ORC_VERSION_STRING;
}

const char *orc_status_string(orc_status status)
{
    switch (status) {
    case ORC_OK: return "ok";
    case ORC_ERR_INVALID_ARGUMENT: return "invalid argument";
    case ORC_ERR_IO: return "input/output error";
    case ORC_ERR_FORMAT: return "malformed input";
    case ORC_ERR_UNSUPPORTED: return "unsupported";
    case ORC_ERR_NO_MEMORY: return "out of memory";
    case ORC_ERR_BUFFER_TOO_SMALL: return "buffer too small";
    case ORC_ERR_CONTEXT_FULL: return "context window full";
    case ORC_ERR_BUSY: return "busy";
    case ORC_ERR_CANCELLED: return "cancelled";
    case ORC_ERR_NOT_FOUND: return "not found";
    case ORC_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *orc_last_error(void)
{
    return last_error;
}

void orc_clear_error(void)
{
    last_error[0] = 0;
}

orc_status orc_fail(orc_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

static orc_log_fn log_fn;
static void *log_user;
static orc_log_level log_level = ORC_LOG_WARN;

void orc_log_set(orc_log_fn fn, void *user)
{
    log_fn = fn;
    log_user = user;
}

void orc_log_set_level(orc_log_level level)
{
    log_level = level;
}

void orc_log(orc_log_level level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_fn) {
        log_fn(level, msg, log_user);
        return;
    }
    static const char *names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "orchard %s: %s\n", names[level], msg);
}

int orc_n_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
