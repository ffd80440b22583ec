/* cmd_run.c - `orchard run`: tokenize a prompt, evaluate it, then sample and stream the
 * continuation token by token (whole UTF-8 characters only), reporting speed on stderr.
 * --json-schema, --regex and --grammar constrain the output (guided generation): forced
 * text is fast-forwarded without sampling and generation stops when the value is
 * complete. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *RUN_HELP =
    "usage: orchard run [-m MODEL] [-p PROMPT] [-n N] [options]\n"
    "\n"
    "Generates a continuation of PROMPT and streams it to stdout.\n"
    "\n"
    "  -m, --model PATH        GGUF model (default: $ORCHARD_MODEL, else the bundled stories260K)\n"
    "  -p, --prompt TEXT       prompt (default \"Once upon a time\")\n"
    "  -n, --n-predict N       tokens to generate (default 128; stops early at end of text)\n"
    "  -c, --ctx-size N        context window (default: training length, at most 4096)\n"
    "  -t, --threads N         threads (default: all cores)\n"
    "      --temp T            temperature; 0 = greedy (default 0.8)\n"
    "      --top-k K           (default 40; 0 = off)\n"
    "      --top-p P           (default 0.95; 1 = off)\n"
    "      --min-p P           (default 0.05; 0 = off)\n"
    "      --repeat-penalty F  (default 1.0 = off)\n"
    "      --presence-penalty F, --frequency-penalty F   (default 0 = off)\n"
    "      --repeat-last-n N   window the penalties look at (default 64)\n"
    "      --seed S            random seed (default: fixed, so runs repeat)\n"
    "      --no-echo           do not print the prompt before the continuation\n"
    "      --json              print {\"prompt_tokens\":[...],\"tokens\":[...],\"text\":\"...\",\n"
    "                          \"stop\":\"eos|grammar|length|context\"} instead\n"
    "\n"
    "Guided generation (at most one; the output is then always valid and generation stops\n"
    "by itself when it is complete; the prompt is not echoed; -n defaults to the context):\n"
    "      --json-schema S     a JSON Schema, inline ('{...}') or a file name: the output is\n"
    "                          one JSON value valid under it\n"
    "      --pretty            with --json-schema: allow spaced-out JSON (default compact)\n"
    "      --regex RE          the whole output matches the regular expression RE\n"
    "      --grammar FILE      a GBNF grammar (llama.cpp's format), start rule 'root'\n"
    "Schemas, expressions and grammars that do not compile are usage errors (exit 2, with\n"
    "the JSON pointer of the offending keyword); a file that cannot be read exits 1, as\n"
    "does a -n limit reached before the value is complete.\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Reads a whole file (NUL-terminated); NULL with errno set on failure. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n + 1 < cap) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            errno = ENOMEM;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int e = errno;
    fclose(f);
    errno = e;
    if (!buf)
        return NULL;
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Compiles the --json-schema/--regex/--grammar argument; exits 2 when it does not
 * compile and 1 when its file cannot be read. */
static orc_grammar *compile_grammar(const char *C, const char *opt, orc_grammar_kind kind,
                                    const char *arg, bool pretty)
{
    const char *text = arg;
    size_t len = strlen(arg);
    char *file = NULL;
    const char *p = arg;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    bool inline_text = kind == ORC_GRAMMAR_REGEX || (kind == ORC_GRAMMAR_JSON_SCHEMA && *p == '{');
    if (!inline_text) {
        file = read_file(arg, &len);
        if (!file) {
            fprintf(stderr, "orchard %s: %s: cannot read '%s': %s\n", C, opt, arg, strerror(errno));
            exit(CLI_EXIT_FAIL);
        }
        text = file;
    }
    orc_grammar_params gp = orc_grammar_default_params();
    gp.kind = kind;
    gp.pretty = pretty;
    orc_grammar *g = NULL;
    if (orc_grammar_new(text, len, &gp, &g) != ORC_OK) {
        free(file);
        cli_usage_error(C, "%s: %s", opt, orc_last_error());
    }
    free(file);
    return g;
}

static void print_ids(const orc_token *ids, int32_t n)
{
    putchar('[');
    for (int32_t i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", ids[i]);
    putchar(']');
}

int cmd_run(int argc, char **argv)
{
    const char *C = "run";
    const char *model_path = NULL, *prompt = "Once upon a time";
    int32_t n_predict = 128, n_ctx = 0, n_threads = 0;
    bool json = false, echo = true, n_given = false, pretty = false;
    const char *g_opt = NULL, *g_arg = NULL;
    orc_grammar_kind g_kind = ORC_GRAMMAR_GBNF;
    orc_sampler_params sp = orc_sampler_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(RUN_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            n_predict = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 24);
            n_given = true;
        } else if (!strcmp(a, "--json-schema") || !strcmp(a, "--regex") || !strcmp(a, "--grammar")) {
            if (g_opt)
                cli_usage_error(C, "%s and %s: give at most one of --json-schema, --regex and --grammar",
                                g_opt, a);
            g_opt = a;
            g_arg = cli_value(C, argc, argv, &i);
            g_kind = a[2] == 'j' ? ORC_GRAMMAR_JSON_SCHEMA : a[2] == 'r' ? ORC_GRAMMAR_REGEX : ORC_GRAMMAR_GBNF;
        } else if (!strcmp(a, "--pretty")) {
            pretty = true;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            n_ctx = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 24);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            n_threads = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 1024);
        } else if (!strcmp(a, "--temp")) {
            sp.temperature = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--top-k")) {
            sp.top_k = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 24);
        } else if (!strcmp(a, "--top-p")) {
            sp.top_p = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--min-p")) {
            sp.min_p = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--repeat-penalty")) {
            sp.repeat_penalty = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--presence-penalty")) {
            sp.presence_penalty = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--frequency-penalty")) {
            sp.frequency_penalty = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--repeat-last-n")) {
            sp.penalty_last_n = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 20);
        } else if (!strcmp(a, "--seed")) {
            sp.seed = (uint64_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, INT64_MAX);
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--no-echo")) {
            echo = false;
        } else {
            cli_usage_error(C, "unknown option '%s'", a);
        }
    }
    if (pretty && g_kind != ORC_GRAMMAR_JSON_SCHEMA)
        cli_usage_error(C, "--pretty applies to --json-schema only");
    /* the grammar first: a bad schema is reported before the model is loaded */
    orc_grammar *g = g_opt ? compile_grammar(C, g_opt, g_kind, g_arg, pretty) : NULL;
    if (g)
        echo = false; /* stdout is the value alone */
    if (!model_path)
        model_path = cli_default_model();
    orc_model *m = cli_load_model(C, model_path, n_threads);
    int rc = CLI_EXIT_FAIL;
    orc_context *ctx = NULL;
    orc_sampler *smp = NULL;
    orc_detok_stream *ds = NULL;
    orc_token *ptoks = NULL, *out = NULL;
    char *text = NULL;
    size_t text_len = 0;

    size_t plen = strlen(prompt);
    int32_t np = orc_tokenize(m, prompt, plen, NULL, 0, true, false);
    if (np < 0)
        np = -np;
    ptoks = malloc(((size_t)np + 1) * sizeof *ptoks);
    if (!ptoks) {
        fprintf(stderr, "orchard run: out of memory\n");
        goto done;
    }
    np = orc_tokenize(m, prompt, plen, ptoks, np + 1, true, false);
    if (np <= 0) {
        fprintf(stderr, "orchard run: the prompt produced no tokens\n");
        goto done;
    }
    orc_context_params cp = orc_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = n_threads;
    if (orc_context_new(m, &cp, &ctx) != ORC_OK || orc_sampler_new(&sp, orc_model_n_vocab(m), &smp) != ORC_OK ||
        !(ds = orc_detok_stream_new(m))) {
        fprintf(stderr, "orchard run: %s\n", orc_last_error());
        goto done;
    }
    if (np >= orc_context_n_ctx(ctx)) {
        fprintf(stderr, "orchard run: the prompt has %d tokens but the context holds %d\n", np,
                orc_context_n_ctx(ctx));
        goto done;
    }
    bool ctx_cap = false;
    if (!n_given && g)
        n_predict = orc_context_n_ctx(ctx) - np; /* the grammar ends it */
    if (n_predict >= orc_context_n_ctx(ctx) - np) {
        n_predict = orc_context_n_ctx(ctx) - np;
        ctx_cap = true;
    }
    out = malloc(((size_t)n_predict + 1) * sizeof *out);
    if (!out) {
        fprintf(stderr, "orchard run: out of memory\n");
        goto done;
    }
    if (echo && !json) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    double t0 = now_s();
    if (orc_eval(ctx, ptoks, np, false) != ORC_OK) {
        fprintf(stderr, "orchard run: %s\n", orc_last_error());
        goto done;
    }
    for (int32_t i = 0; i < np; i++)
        orc_sampler_accept(smp, ptoks[i]);
    /* after the prompt: the grammar constrains only the continuation */
    if (g && orc_sampler_set_grammar(smp, m, g) != ORC_OK) {
        fprintf(stderr, "orchard run: %s\n", orc_last_error());
        goto done;
    }
    double t1 = now_s();
    int32_t n_out = 0, n_forced = 0;
    const char *stop = ctx_cap ? "context" : "length";
    while (n_out < n_predict) {
        orc_token next[64];
        int32_t nn = 0;
        if (g) { /* fast-forward: text the grammar forces is not sampled */
            int32_t room = n_predict - n_out;
            nn = orc_sampler_forced_tokens(smp, next, room < 64 ? room : 64);
            n_forced += nn;
        }
        if (nn == 0) {
            orc_token t = orc_sampler_sample(smp, orc_context_logits(ctx, -1));
            if (t < 0) {
                fprintf(stderr, "orchard run: sampling failed\n");
                goto done;
            }
            if (orc_token_is_eog(m, t)) {
                stop = "eos";
                break;
            }
            next[nn++] = t;
        }
        for (int32_t k = 0; k < nn; k++) {
            out[n_out++] = next[k];
            orc_sampler_accept(smp, next[k]);
            const char *piece;
            size_t len;
            orc_detok_stream_push(ds, next[k], &piece, &len);
            if (json) {
                char *nt = realloc(text, text_len + len + 1);
                if (!nt)
                    goto done;
                text = nt;
                memcpy(text + text_len, piece, len);
                text_len += len;
            } else {
                fwrite(piece, 1, len, stdout);
                fflush(stdout);
            }
        }
        if (g && orc_sampler_grammar_done(smp)) {
            stop = "grammar";
            break;
        }
        if (n_out == n_predict)
            break;
        if (orc_eval(ctx, next, nn, false) != ORC_OK) {
            fprintf(stderr, "orchard run: %s\n", orc_last_error());
            goto done;
        }
    }
    double t2 = now_s();
    const char *rest;
    size_t rest_len;
    orc_detok_stream_flush(ds, &rest, &rest_len);
    if (json) {
        char *nt = realloc(text, text_len + rest_len + 1);
        if (!nt)
            goto done;
        text = nt;
        memcpy(text + text_len, rest, rest_len);
        text_len += rest_len;
        printf("{\"prompt_tokens\":");
        print_ids(ptoks, np);
        printf(",\"tokens\":");
        print_ids(out, n_out);
        printf(",\"text\":");
        cli_print_json_string(text ? text : "", text_len);
        printf(",\"stop\":\"%s\"}\n", stop);
    } else {
        fwrite(rest, 1, rest_len, stdout);
        putchar('\n');
    }
    fflush(stdout);
    fprintf(stderr, "\norchard: prompt %d tokens, %.1f tok/s | generated %d tokens, %.1f tok/s", np,
            np / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_out, n_out / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    if (g)
        fprintf(stderr, " (%d forced) | stop: %s", n_forced, stop);
    fputc('\n', stderr);
    rc = 0;
    if (g && strcmp(stop, "eos") && strcmp(stop, "grammar") && !orc_sampler_grammar_complete(smp)) {
        fprintf(stderr, "orchard run: the output is incomplete: %s reached after %d tokens before the "
                        "grammar was satisfied\n", strcmp(stop, "context") ? "the -n limit" : "the context",
                n_out);
        rc = CLI_EXIT_FAIL;
    }
done:
    free(text);
    free(ptoks);
    free(out);
    orc_detok_stream_free(ds);
    orc_sampler_free(smp);
    orc_context_free(ctx);
    orc_model_free(m);
    orc_grammar_free(g);
    return rc;
}
