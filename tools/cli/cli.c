/* cli.c - argument parsing helpers and model loading shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "orchard %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'orchard %s --help')\n", cmd);
    exit(CLI_EXIT_USAGE);
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        cli_usage_error(cmd, "option %s needs a value", argv[*i]);
    return argv[++*i];
}

int64_t cli_int(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        cli_usage_error(cmd, "%s expects an integer in [%lld, %lld], not '%s'", opt, (long long)lo,
                        (long long)hi, s);
    return v;
}

double cli_float(const char *cmd, const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        cli_usage_error(cmd, "%s expects a number, not '%s'", opt, s);
    return v;
}

const char *cli_default_model(void)
{
    const char *env = getenv("ORCHARD_MODEL");
    if (env && *env)
        return env;
    return ORC_SOURCE_DIR "/../shared/models/stories260K.gguf";
}

orc_model *cli_load_model(const char *cmd, const char *path, int32_t n_threads)
{
    orc_model_params mp = orc_model_default_params();
    mp.n_threads = n_threads;
    orc_model *m = NULL;
    orc_status st = orc_model_load(path, &mp, &m);
    if (st != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", cmd, orc_last_error());
        exit(CLI_EXIT_FAIL);
    }
    return m;
}

char *cli_read_stdin(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, stdin);
        if (got == 0)
            break;
        n += got;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

void cli_print_json_string(const char *s, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (c < 0x20)
                printf("\\u%04x", c);
            else
                putchar(c);
        }
    }
    putchar('"');
}
