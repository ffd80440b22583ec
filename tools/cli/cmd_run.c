/* cmd_run.c - `orchard run`: tokenize a prompt, evaluate it, then sample and stream the
 * continuation token by token (whole UTF-8 characters only), reporting speed on stderr. */
#include "cli.h"

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
    "      --json              print {\"prompt_tokens\":[...],\"tokens\":[...],\"text\":\"...\"} instead\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
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
    bool json = false, echo = true;
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
    out = malloc(((size_t)n_predict + 1) * sizeof *out);
    if (!ptoks || !out) {
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
    if (n_predict > orc_context_n_ctx(ctx) - np)
        n_predict = orc_context_n_ctx(ctx) - np;
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
    double t1 = now_s();
    int32_t n_out = 0;
    while (n_out < n_predict) {
        orc_token t = orc_sampler_sample(smp, orc_context_logits(ctx, -1));
        if (orc_token_is_eog(m, t))
            break;
        out[n_out++] = t;
        orc_sampler_accept(smp, t);
        const char *piece;
        size_t len;
        orc_detok_stream_push(ds, t, &piece, &len);
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
        if (n_out == n_predict)
            break;
        if (orc_eval(ctx, &t, 1, false) != ORC_OK) {
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
        printf("}\n");
    } else {
        fwrite(rest, 1, rest_len, stdout);
        putchar('\n');
    }
    fflush(stdout);
    fprintf(stderr, "\norchard: prompt %d tokens, %.1f tok/s | generated %d tokens, %.1f tok/s\n", np,
            np / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_out, n_out / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    rc = 0;
done:
    free(text);
    free(ptoks);
    free(out);
    orc_detok_stream_free(ds);
    orc_sampler_free(smp);
    orc_context_free(ctx);
    orc_model_free(m);
    return rc;
}
