/* cmd_template.c - `orchard template`: renders a chat template (a model's own, or a file)
 * with a JSON context, printing the exact prompt text. A client of the public API only
 * (orc_chat_template_*, orc_free). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *TEMPLATE_HELP =
    "usage: orchard template [-m MODEL | --template FILE] --context CONTEXT.json\n"
    "                        [--bos S] [--eos S] [--now 2026-11-22T03:48:55]\n"
    "\n"
    "Renders a chat template and prints the text exactly (no newline is added).\n"
    "CONTEXT.json is an object whose keys become template variables: messages, tools,\n"
    "add_generation_prompt, and any others the template reads (\"-\" = standard input).\n"
    "\n"
    "  -m, --model MODEL   use the model's tokenizer.chat_template (ChatML when it has\n"
    "                      none) and its BOS/EOS strings\n"
    "  --template FILE     use the Jinja template in FILE instead\n"
    "  --context FILE      the JSON context (required)\n"
    "  --bos S, --eos S    the strings bos_token / eos_token stand for\n"
    "  --now TIME          what strftime_now sees, as YYYY-MM-DDTHH:MM:SS (UTC)\n"
    "  -h, --help          this help\n";

static char *read_file(const char *path, size_t *len)
{
    size_t dummy;
    if (!len)
        len = &dummy;
    if (!strcmp(path, "-"))
        return cli_read_stdin(len);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (n < cap - 1)
            break;
        char *nb = cap > ((size_t)1 << 30) ? NULL : realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int64_t parse_now(const char *C, const char *s)
{
    struct tm tm = {0};
    char sep = 0, extra = 0;
    int n = sscanf(s, "%d-%d-%d%c%d:%d:%d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &sep, &tm.tm_hour, &tm.tm_min,
                   &tm.tm_sec, &extra);
    if (n != 7 || (sep != 'T' && sep != ' ') || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 ||
        tm.tm_sec > 60 || tm.tm_year < 1 || tm.tm_year > 9999)
        cli_usage_error(C, "--now wants YYYY-MM-DDTHH:MM:SS, got '%s'", s);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

int cmd_template(int argc, char **argv)
{
    const char *C = "template";
    const char *model_path = NULL, *tpl_path = NULL, *ctx_path = NULL, *bos = NULL, *eos = NULL;
    int64_t now = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(TEMPLATE_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--template")) {
            tpl_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--context")) {
            ctx_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--bos")) {
            bos = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--eos")) {
            eos = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--now")) {
            now = parse_now(C, cli_value(C, argc, argv, &i));
        } else {
            cli_usage_error(C, "unknown option '%s'", a);
        }
    }
    if (!ctx_path)
        cli_usage_error(C, "--context CONTEXT.json is required");
    if (model_path && tpl_path)
        cli_usage_error(C, "give either -m MODEL or --template FILE, not both");

    int rc = CLI_EXIT_FAIL;
    orc_model *model = NULL;
    orc_chat_template *t = NULL;
    char *src = NULL, *ctx = NULL, *out = NULL;
    size_t out_len = 0;
    ctx = read_file(ctx_path, NULL);
    if (!ctx) {
        fprintf(stderr, "orchard %s: cannot read '%s'\n", C, ctx_path);
        goto done;
    }
    orc_status st;
    if (tpl_path) {
        src = read_file(tpl_path, NULL);
        if (!src) {
            fprintf(stderr, "orchard %s: cannot read '%s'\n", C, tpl_path);
            goto done;
        }
        st = orc_chat_template_from_source(src, bos, eos, &t);
    } else {
        model = cli_load_model(C, model_path ? model_path : cli_default_model(), 1);
        st = orc_chat_template_from_model(model, &t);
        if (st == ORC_OK)
            st = orc_chat_template_set_tokens(t, bos, eos);
    }
    if (st == ORC_OK)
        st = orc_chat_template_render(t, ctx, now, &out, &out_len);
    if (st != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", C, orc_last_error());
        goto done;
    }
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout)) {
        fprintf(stderr, "orchard %s: write error\n", C);
        goto done;
    }
    rc = 0;
done:
    orc_free(out);
    orc_chat_template_free(t);
    orc_model_free(model);
    free(src);
    free(ctx);
    return rc;
}
