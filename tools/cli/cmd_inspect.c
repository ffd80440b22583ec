/* cmd_inspect.c - `orchard inspect MODEL`: metadata and the tensor table, readable or
 * as JSON. Long arrays (vocabularies) are shown truncated. */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *INSPECT_HELP =
    "usage: orchard inspect MODEL [--json]\n"
    "\n"
    "Prints the model's summary, GGUF metadata and tensor table.\n";

/* The value of a key as text; malloc'd. */
static char *meta_text(const orc_model *m, const char *key)
{
    char small[256];
    int32_t n = orc_model_meta_value(m, key, small, sizeof small);
    if (n < 0)
        return NULL;
    char *buf = malloc((size_t)n + 1);
    if (buf)
        orc_model_meta_value(m, key, buf, (size_t)n + 1);
    return buf;
}

int cmd_inspect(int argc, char **argv)
{
    const char *C = "inspect";
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(INSPECT_HELP, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            path = cli_value(C, argc, argv, &i);
        } else if (argv[i][0] == '-') {
            cli_usage_error(C, "unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            cli_usage_error(C, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!path)
        cli_usage_error(C, "a model path is required");
    orc_model *m = cli_load_model(C, path, 1);
    int32_t nkv = orc_model_meta_count(m), nt = orc_model_n_tensors(m);
    if (json) {
        printf("{\"path\":");
        cli_print_json_string(path, strlen(path));
        printf(",\"architecture\":");
        cli_print_json_string(orc_model_arch(m), strlen(orc_model_arch(m)));
        printf(",\"gguf_version\":%u,\"file_size\":%" PRIu64 ",\"n_params\":%" PRIu64
               ",\"n_vocab\":%d,\"n_ctx_train\":%d,\"n_embd\":%d,\"n_layer\":%d,\"n_head\":%d,"
               "\"n_head_kv\":%d,\"n_ff\":%d,\"metadata\":[",
               orc_model_gguf_version(m), orc_model_file_size(m), orc_model_n_params(m),
               orc_model_n_vocab(m), orc_model_n_ctx_train(m), orc_model_n_embd(m),
               orc_model_n_layer(m), orc_model_n_head(m), orc_model_n_head_kv(m), orc_model_n_ff(m));
        for (int32_t i = 0; i < nkv; i++) {
            const char *k = orc_model_meta_key(m, i);
            char *v = meta_text(m, k);
            printf(i ? ",{\"key\":" : "{\"key\":");
            cli_print_json_string(k, strlen(k));
            printf(",\"type\":\"%s\",\"value\":", orc_model_meta_type(m, i));
            cli_print_json_string(v ? v : "", v ? strlen(v) : 0);
            putchar('}');
            free(v);
        }
        printf("],\"tensors\":[");
        for (int32_t i = 0; i < nt; i++) {
            orc_tensor_info ti;
            orc_model_tensor(m, i, &ti);
            printf(i ? ",{\"name\":" : "{\"name\":");
            cli_print_json_string(ti.name, strlen(ti.name));
            printf(",\"type\":\"%s\",\"shape\":[", ti.type);
            for (uint32_t d = 0; d < ti.n_dims; d++)
                printf(d ? ",%" PRId64 : "%" PRId64, ti.ne[d]);
            printf("],\"offset\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", ti.offset, ti.n_bytes);
        }
        printf("]}\n");
    } else {
        printf("model:        %s\n", path);
        printf("architecture: %s   name: %s   GGUF v%u\n", orc_model_arch(m), orc_model_name(m),
               orc_model_gguf_version(m));
        printf("file size:    %" PRIu64 " bytes, %" PRIu64 " parameters\n", orc_model_file_size(m),
               orc_model_n_params(m));
        printf("shape:        vocab %d, context %d, embd %d, layers %d, heads %d/%d kv, ffn %d\n",
               orc_model_n_vocab(m), orc_model_n_ctx_train(m), orc_model_n_embd(m), orc_model_n_layer(m),
               orc_model_n_head(m), orc_model_n_head_kv(m), orc_model_n_ff(m));
        printf("\nmetadata (%d keys):\n", nkv);
        for (int32_t i = 0; i < nkv; i++) {
            const char *k = orc_model_meta_key(m, i);
            char *v = meta_text(m, k);
            if (v && strlen(v) > 200)
                strcpy(v + 197, "...");
            printf("  %-44s %-9s %s\n", k, orc_model_meta_type(m, i), v ? v : "");
            free(v);
        }
        printf("\ntensors (%d):\n", nt);
        for (int32_t i = 0; i < nt; i++) {
            orc_tensor_info ti;
            orc_model_tensor(m, i, &ti);
            char shape[96];
            int o = 0;
            for (uint32_t d = 0; d < ti.n_dims; d++)
                o += snprintf(shape + o, sizeof shape - (size_t)o, d ? " x %" PRId64 : "%" PRId64, ti.ne[d]);
            printf("  %-36s %-8s %-24s %10" PRIu64 " bytes @ %" PRIu64 "\n", ti.name, ti.type, shape,
                   ti.n_bytes, ti.offset);
        }
    }
    orc_model_free(m);
    return 0;
}
