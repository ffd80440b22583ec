/* fuzz_grammar.c - libFuzzer harness for the guided-generation front ends: the first
 * byte picks GBNF, JSON Schema or regex; the rest is the text. Whatever compiles is
 * driven through a matcher for a few bytes, so parser, builder checks and matcher limits
 * are all exercised. Must never crash, leak or hang. */
#include "grammar.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

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
        if (k && !grammar_matcher_accept_bytes(m, buf, k))
            __builtin_trap(); /* forced bytes must be accepted */
        (void)grammar_matcher_is_complete(m);
        grammar_matcher_free(m);
    }
    grammar_free(g);
    return 0;
}
