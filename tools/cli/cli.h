/* cli.h - shared pieces of the orchard command: argument parsing helpers that turn bad
 * input into one-line usage errors (exit 2), the default model path, and the
 * subcommand entry points. Subcommands use only the public API (orchard.h). */
#ifndef ORC_CLI_H
#define ORC_CLI_H

#include "orchard.h"

#include <stdbool.h>
#include <stdint.h>

#define CLI_EXIT_USAGE 2
#define CLI_EXIT_FAIL 1

/* Prints "orchard CMD: message" to stderr and exits with status 2. */
_Noreturn void cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The value after option argv[*i] (advancing *i), or a usage error when absent. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);
int64_t cli_int(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi);
double cli_float(const char *cmd, const char *opt, const char *s);

/* -m value, else $ORCHARD_MODEL, else ../shared/models/stories260K.gguf beside the
 * repository the binary was built from. */
const char *cli_default_model(void);

/* Loads a model or prints the loader's message and exits 1. */
orc_model *cli_load_model(const char *cmd, const char *path, int32_t n_threads);

/* Reads all of stdin into a malloc'd NUL-terminated buffer. */
char *cli_read_stdin(size_t *len);

/* Writes s as a JSON string literal (with quotes) to stdout. */
void cli_print_json_string(const char *s, size_t len);

int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_chat(int argc, char **argv);

#endif
