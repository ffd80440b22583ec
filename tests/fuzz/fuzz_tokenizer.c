/* fuzz_tokenizer.c - libFuzzer harness for the tokenizers: loads vocabularies once
 * (ORC_FUZZ_VOCAB, a ':'-separated list of GGUF paths, or by default the llama-spm,
 * llama-bpe and qwen35 test vocabularies under ORC_SHARED_DIR), then tokenizes each input
 * with every vocabulary and detokenizes the result; the fast paths (BPE word cache,
 * SentencePiece segments) must give the plain paths' ids. The first byte of the input
 * picks the flags; the rest is the text. */
#include "gguf.h"
#include "tokenizer.h"
#include "tokenizer_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ORC_SHARED_DIR
#define ORC_SHARED_DIR "../shared"
#endif

enum { MAX_VOCABS = 8 };
static gguf_ctx *ggufs[MAX_VOCABS];
static orc_vocab *vocabs[MAX_VOCABS];
static int n_vocabs;

static void load_one(const char *path)
{
    char err[256];
    if (n_vocabs == MAX_VOCABS)
        return;
    gguf_ctx *g = gguf_open(path, true, err, sizeof err);
    if (!g) {
        fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, err);
        abort();
    }
    orc_vocab *v = orc_vocab_load(g, err, sizeof err);
    if (!v) {
        fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, err);
        abort();
    }
    ggufs[n_vocabs] = g;
    vocabs[n_vocabs++] = v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *list = getenv("ORC_FUZZ_VOCAB");
    if (list && *list) {
        char *copy = strdup(list);
        for (char *p = strtok(copy, ":"); p; p = strtok(NULL, ":"))
            load_one(p);
        free(copy);
    } else {
        static const char *const rel[] = {"vocab/ggml-vocab-llama-spm.gguf",
            "vocab/ggml-vocab-llama-bpe.gguf", "vocab/ggml-vocab-qwen35.gguf"};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", ORC_SHARED_DIR, rel[i]);
            load_one(path);
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t flags = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    for (int k = 0; k < n_vocabs; k++) {
        const orc_vocab *v = vocabs[k];
        bool add = flags & 1, parse = flags & 2;
        int32_t need = orc_vocab_tokenize(v, text, len, NULL, 0, add, parse);
        if (need == INT32_MIN)
            abort();
        int32_t cap = need < 0 ? -need : need;
        int32_t *ids = malloc(sizeof *ids * (size_t)(cap + 1));
        if (!ids)
            return 0;
        int32_t n = orc_vocab_tokenize(v, text, len, ids, cap, add, parse);
        if (n != cap)
            abort();
        for (int32_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= orc_vocab_n_tokens(v))
                abort();
        if (flags & 16) {  /* differential: fast paths against plain paths */
            size_t saved = tok_bpe_cache_min_len;
            tok_bpe_cache_min_len = (flags & 32) ? 0 : SIZE_MAX;
            tok_spm_split = !(flags & 32);
            int32_t *alt = malloc(sizeof *alt * (size_t)(cap + 1));
            int32_t m = alt ? orc_vocab_tokenize(v, text, len, alt, cap, add, parse) : n;
            tok_bpe_cache_min_len = saved;
            tok_spm_split = true;
            if (alt && (m != n || memcmp(alt, ids, sizeof *ids * (size_t)n)))
                abort();
            free(alt);
        }
        bool rm = flags & 4, unparse = flags & 8;
        int32_t dn = orc_vocab_detokenize(v, ids, n, NULL, 0, rm, unparse);
        int32_t dcap = dn < 0 ? -dn : dn;
        char *buf = malloc((size_t)dcap + 1);
        if (buf) {
            int32_t got = orc_vocab_detokenize(v, ids, n, buf, dcap + 1, rm, unparse);
            if (got < 0 || got > dcap)
                abort();
            free(buf);
        }
        free(ids);
    }
    return 0;
}
