/* cmd_tokenize.c - `orchard tokenize`: the token ids of a text (from -p or stdin) as the
 * model's tokenizer produces them, optionally as JSON and with each token's text. A
 * client of the public API only (orc_model_load, orc_tokenize, orc_token_to_piece). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *TOKENIZE_HELP =
    "usage: orchard tokenize [-m MODEL] [-p TEXT] [--no-bos] [--parse-special] [--json]\n"
    "                        [--pieces]\n"
    "\n"
    "Prints the token ids of TEXT (or of standard input, byte for byte, when -p is not\n"
    "given) on one line, separated by spaces.\n"
    "\n"
    "  -m, --model MODEL   GGUF model whose vocabulary to use\n"
    "  -p, --prompt TEXT   the text to tokenize\n"
    "  --no-bos            do not add BOS/EOS even when the model's metadata asks for them\n"
    "  --parse-special     turn special-token text such as <|im_start|> into single tokens\n"
    "                      (off by default: user text is never read as control tokens)\n"
    "  --json              print {\"tokens\":[...]} (with --pieces also \"pieces\":[...])\n"
    "  --pieces            show the text of every token (one \"ID -> 'TEXT'\" per line)\n"
    "  -h, --help          this help\n";

/* The piece of a token in a malloc'd buffer (special tokens show their text). */
static char *piece_of(const orc_model *m, orc_token id, int32_t *len)
{
    int32_t cap = 64;
    char *buf = malloc((size_t)cap);
    if (!buf)
        return NULL;
    int32_t n = orc_token_to_piece(m, id, buf, cap, true);
    if (n < 0) {
        cap = -n;
        char *b = realloc(buf, (size_t)cap);
        if (!b) {
            free(buf);
            return NULL;
        }
        buf = b;
        n = orc_token_to_piece(m, id, buf, cap, true);
        if (n < 0) {
            free(buf);
            return NULL;
        }
    }
    *len = n;
    return buf;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *C = "tokenize";
    const char *model_path = NULL, *prompt = NULL;
    bool add_special = true, parse_special = false, json = false, show_pieces = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(TOKENIZE_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--no-bos")) {
            add_special = false;
        } else if (!strcmp(a, "--parse-special")) {
            parse_special = true;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--pieces")) {
            show_pieces = true;
        } else {
            cli_usage_error(C, "unknown option '%s'", a);
        }
    }
    if (!model_path)
        model_path = cli_default_model();

    char *owned = NULL;
    size_t len;
    if (prompt) {
        len = strlen(prompt);
    } else {
        owned = cli_read_stdin(&len);
        if (!owned) {
            fprintf(stderr, "orchard %s: cannot read standard input\n", C);
            return CLI_EXIT_FAIL;
        }
        prompt = owned;
    }

    /* Only the vocabulary is needed: with the proposed orc_model_params.vocab_only the
     * weights are not loaded (and vocabulary-only GGUF files work). */
    orc_model_params mp = orc_model_default_params();
    mp.n_threads = 1;
#ifdef ORC_MODEL_PARAMS_HAS_VOCAB_ONLY
    mp.vocab_only = true;
#endif
    orc_model *m = NULL;
    if (orc_model_load(model_path, &mp, &m) != ORC_OK) {
        fprintf(stderr, "orchard %s: %s\n", C, orc_last_error());
        free(owned);
        return CLI_EXIT_FAIL;
    }
    int rc = CLI_EXIT_FAIL;
    orc_token *ids = NULL;
    int32_t n = orc_tokenize(m, prompt, len, NULL, 0, add_special, parse_special);
    if (n == INT32_MIN) {
        fprintf(stderr, "orchard %s: %s\n", C, orc_last_error());
        goto done;
    }
    int32_t cap = n < 0 ? -n : n;
    ids = malloc(sizeof *ids * (size_t)(cap ? cap : 1));
    if (!ids) {
        fprintf(stderr, "orchard %s: out of memory\n", C);
        goto done;
    }
    n = orc_tokenize(m, prompt, len, ids, cap, add_special, parse_special);
    if (n < 0) {
        fprintf(stderr, "orchard %s: %s\n", C, orc_last_error());
        goto done;
    }

    if (json) {
        printf("{\"tokens\":[");
        for (int32_t i = 0; i < n; i++)
            printf(i ? ",%d" : "%d", ids[i]);
        putchar(']');
        if (show_pieces) {
            printf(",\"pieces\":[");
            for (int32_t i = 0; i < n; i++) {
                int32_t pl;
                char *p = piece_of(m, ids[i], &pl);
                if (!p)
                    goto done;
                if (i)
                    putchar(',');
                cli_print_json_string(p, (size_t)pl);
                free(p);
            }
            putchar(']');
        }
        printf("}\n");
    } else if (show_pieces) {
        for (int32_t i = 0; i < n; i++) {
            int32_t pl;
            char *p = piece_of(m, ids[i], &pl);
            if (!p)
                goto done;
            printf("%6d -> '", ids[i]);
            fwrite(p, 1, (size_t)pl, stdout);
            printf("'\n");
            free(p);
        }
    } else {
        for (int32_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    }
    rc = fflush(stdout) == 0 ? 0 : CLI_EXIT_FAIL;
done:
    free(ids);
    free(owned);
    orc_model_free(m);
    return rc;
}
