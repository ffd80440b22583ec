/* fuzz_grammar.c - libFuzzer harness for the guided-generation front ends: the first
 * byte picks GBNF, JSON Schema or regex; the rest is the text. Whatever compiles is
 * driven through a matcher for a few bytes, and its token mask over a small synthetic
 * vocabulary is checked against brute force. Must never crash, leak, hang or disagree. */
#include "grammar.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* All single bytes plus pseudo-random strings of 2-12 bytes (mostly JSON-ish ASCII, some
 * UTF-8 and stray bytes), built once. */
static grammar_vocab *fuzz_vocab(void)
{
    static grammar_vocab *v;
    if (v)
        return v;
    enum { N = 1024 };
    static char store[N][12];
    static const char *p[N + 1];
    static uint32_t len[N + 1];
    static const char alphabet[] = "{}[]\":,. -+0123456789abcdeftrunlsxyzAEZ\\\n\t@/";
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        if (i < 256) {
            store[i][0] = (char)i;
            len[i] = 1;
        } else {
            x = x * 1103515245u + 12345u;
            len[i] = 2 + (x >> 16) % 11;
            for (uint32_t k = 0; k < len[i]; k++) {
                x = x * 1103515245u + 12345u;
                uint32_t r = x >> 16;
                store[i][k] = r % 8 == 0 ? (char)(0x80 + r % 0x80)
                                         : alphabet[r % (sizeof alphabet - 1)];
            }
        }
        p[i] = store[i];
    }
    p[N] = "<eos>";
    len[N] = 5;
    int32_t eog = N;
    v = grammar_vocab_new(N + 1, p, len, &eog, 1);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    char err[256];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    grammar *g = NULL;
    switch (data[0] % 3) {
    case 0:
        g = grammar_from_gbnf(text, n, NULL, err, sizeof err);
        break;
    case 1: {
        json_schema_opts o = {(data[0] >> 2) & 1};
        g = grammar_from_json_schema(text, n, &o, err, sizeof err);
        break;
    }
    default:
        g = grammar_from_regex(text, n, err, sizeof err);
        break;
    }
    if (!g)
        return 0;
    grammar_matcher *m = grammar_matcher_new(g);
    if (m) {
        /* feed the input's own bytes (up to 64) and the forced continuation */
        for (size_t i = 0; i < n && i < 64; i++)
            if (!grammar_matcher_accept_byte(m, (uint8_t)text[i]))
                break;
        uint8_t buf[64];
        size_t k = grammar_matcher_forced_bytes(m, buf, sizeof buf);
        if (k && !grammar_matcher_accept_bytes(m, buf, k) && !grammar_matcher_error(m))
            __builtin_trap(); /* forced bytes must be accepted, unless a limit was hit */
        grammar_vocab *v = fuzz_vocab();
        uint32_t mask[(1025 + 31) / 32];
        int32_t cnt = grammar_fill_mask(m, v, mask), brute = 0;
        for (int32_t id = 0; id < 1025; id++) {
            bool a = grammar_token_allowed(m, v, id);
            brute += a;
            if (a != (bool)((mask[id >> 5] >> (id & 31)) & 1))
                __builtin_trap(); /* mask disagrees with brute force */
        }
        if (cnt != brute)
            __builtin_trap();
        if (grammar_matcher_error(m) && cnt != 0)
            __builtin_trap(); /* after an error nothing is allowed, EOS included */
        grammar_matcher_free(m);
    }
    grammar_free(g);
    return 0;
}
