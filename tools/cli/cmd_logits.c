/* cmd_logits.c - `orchard logits`: evaluate token ids in one batch from an empty cache
 * and print the logits after every position, in the shape of the reference files. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *LOGITS_HELP =
    "usage: orchard logits [-m MODEL] --tokens ID,ID,... [-t THREADS]\n"
    "\n"
    "Evaluates the ids in one batch from an empty cache and prints\n"
    "{\"n_vocab\":N,\"tokens\":[...],\"logits\":[[...],...]} (logits after every position).\n";

int cmd_logits(int argc, char **argv)
{
    const char *C = "logits";
    const char *model_path = NULL, *list = NULL;
    int32_t n_threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(LOGITS_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--tokens")) {
            list = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            n_threads = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 1024);
        } else {
            cli_usage_error(C, "unknown option '%s'", a);
        }
    }
    if (!list)
        cli_usage_error(C, "--tokens is required");
    size_t cap = strlen(list) / 2 + 2;
    orc_token *ids = malloc(cap * sizeof *ids);
    if (!ids)
        return CLI_EXIT_FAIL;
    int32_t n = 0;
    const char *p = list;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',') || (size_t)n >= cap) {
            free(ids);
            cli_usage_error(C, "--tokens expects comma-separated non-negative ids, not '%s'", list);
        }
        ids[n++] = (orc_token)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        free(ids);
        cli_usage_error(C, "--tokens is empty");
    }
    if (!model_path)
        model_path = cli_default_model();
    orc_model *m = cli_load_model(C, model_path, n_threads);
    orc_context_params cp = orc_context_default_params();
    cp.n_ctx = n > 16 ? n : 16;
    cp.n_batch = n;
    cp.n_threads = n_threads;
    orc_context *ctx = NULL;
    int rc = CLI_EXIT_FAIL;
    if (orc_context_new(m, &cp, &ctx) != ORC_OK || orc_eval(ctx, ids, n, true) != ORC_OK) {
        fprintf(stderr, "orchard logits: %s\n", orc_last_error());
        goto done;
    }
    int32_t nv = orc_model_n_vocab(m);
    printf("{\"n_vocab\":%d,\"tokens\":[", nv);
    for (int32_t i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", ids[i]);
    printf("],\"logits\":[");
    for (int32_t i = 0; i < n; i++) {
        const float *l = orc_context_logits(ctx, i);
        printf(i ? ",[" : "[");
        for (int32_t j = 0; j < nv; j++)
            printf(j ? ",%.7g" : "%.7g", l[j]);
        putchar(']');
    }
    printf("]}\n");
    rc = 0;
done:
    free(ids);
    orc_context_free(ctx);
    orc_model_free(m);
    return rc;
}
