/* test_guided.c - guided generation end to end through the public API: a real model
 * (stories260K, which knows nothing of JSON) sampling under a JSON Schema, a regex and a
 * GBNF grammar always produces valid output, stops at completion, and fast-forwards
 * through forced text; bad grammars give clear errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchard.h"
#include "testutil.h"

static orc_model *model;

static int setup(void **state)
{
    (void)state;
    return orc_model_load(tu_shared("models/stories260K.gguf"), NULL, &model) == ORC_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    orc_model_free(model);
    return 0;
}

typedef struct {
    char text[4096];
    size_t len;
    int sampled, forced;
    bool stopped_by_eos, done;
} gen_result;

/* Prompt, then sample under the grammar (fast-forwarding forced tokens) until an
 * end-of-generation token, the grammar is done, or max tokens. */
static void generate(const orc_grammar *g, float temp, uint64_t seed, int max, gen_result *r)
{
    memset(r, 0, sizeof *r);
    orc_context_params cp = orc_context_default_params();
    cp.n_ctx = 512;
    orc_context *c = NULL;
    assert_int_equal(orc_context_new(model, &cp, &c), ORC_OK);
    orc_sampler_params sp = orc_sampler_default_params();
    sp.temperature = temp;
    sp.seed = seed;
    orc_sampler *s = NULL;
    assert_int_equal(orc_sampler_new(&sp, orc_model_n_vocab(model), &s), ORC_OK);
    assert_int_equal(orc_sampler_set_grammar(s, model, g), ORC_OK);
    orc_token p[32];
    int np = orc_tokenize(model, "Once upon a time", 16, p, 32, true, false);
    assert_int_equal(orc_eval(c, p, np, false), ORC_OK);
    for (int i = 0; i < max && !r->done; i++) {
        orc_token forced[64];
        int nf = orc_sampler_forced_tokens(s, forced, 64);
        orc_token next[64];
        int nn;
        if (nf > 0) {
            memcpy(next, forced, (size_t)nf * sizeof *next);
            nn = nf;
            r->forced += nf;
        } else {
            next[0] = orc_sampler_sample(s, orc_context_logits(c, -1));
            nn = 1;
            r->sampled++;
            if (orc_token_is_eog(model, next[0])) {
                r->stopped_by_eos = true;
                orc_sampler_accept(s, next[0]);
                break;
            }
        }
        for (int k = 0; k < nn; k++) {
            orc_sampler_accept(s, next[k]);
            char piece[64];
            int32_t l = orc_token_to_piece(model, next[k], piece, sizeof piece, false);
            assert_true(l >= 0 && l <= (int32_t)sizeof piece && r->len + (size_t)l < sizeof r->text);
            size_t ul = l > 0 ? (size_t)l : 0;
            memcpy(r->text + r->len, piece, ul);
            r->len += ul;
        }
        assert_int_equal(orc_eval(c, next, nn, false), ORC_OK);
        r->done = orc_sampler_grammar_done(s);
    }
    r->text[r->len] = 0;
    assert_true(orc_sampler_grammar_complete(s));
    orc_sampler_free(s);
    orc_context_free(c);
}

static const char *SCHEMA =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":12},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},"
    "\"pets\":{\"type\":\"array\",\"items\":{\"enum\":[\"cat\",\"dog\",\"bird\"]},\"maxItems\":3}},"
    "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}";

static void test_json_schema_always_valid(void **state)
{
    (void)state;
    orc_grammar_params gp = orc_grammar_default_params();
    gp.kind = ORC_GRAMMAR_JSON_SCHEMA;
    orc_grammar *g = NULL;
    assert_int_equal(orc_grammar_new(SCHEMA, strlen(SCHEMA), &gp, &g), ORC_OK);
    int total_forced = 0;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        gen_result r;
        generate(g, seed == 1 ? 0.0f : 1.2f, seed, 300, &r);
        json_error_t e;
        json_t *j = json_loadb(r.text, r.len, 0, &e);
        printf("seed %llu: %s (%d sampled, %d forced)\n", (unsigned long long)seed, r.text, r.sampled, r.forced);
        if (!j)
            fail_msg("not JSON: '%s': %s", r.text, e.text);
        assert_true(json_is_object(j));
        json_t *name = json_object_get(j, "name"), *age = json_object_get(j, "age");
        assert_true(json_is_string(name));
        size_t nl = strlen(json_string_value(name));
        assert_true(nl >= 1); /* maxLength counts characters; bytes may exceed 12 for UTF-8 */
        assert_true(json_is_integer(age));
        assert_true(json_integer_value(age) >= 0 && json_integer_value(age) <= 120);
        json_t *pets = json_object_get(j, "pets");
        if (pets) {
            assert_true(json_is_array(pets) && json_array_size(pets) <= 3);
            for (size_t i = 0; i < json_array_size(pets); i++) {
                const char *p = json_string_value(json_array_get(pets, i));
                assert_true(p && (!strcmp(p, "cat") || !strcmp(p, "dog") || !strcmp(p, "bird")));
            }
        }
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v)
            assert_true(!strcmp(key, "name") || !strcmp(key, "age") || !strcmp(key, "pets"));
        json_decref(j);
        total_forced += r.forced;
    }
    assert_true(total_forced > 0); /* '{"name":"' is forced text */
    orc_grammar_free(g);
}

static void test_regex_and_gbnf(void **state)
{
    (void)state;
    orc_grammar_params gp = orc_grammar_default_params();
    gp.kind = ORC_GRAMMAR_REGEX;
    const char *re = "[0-9]{3}-[0-9]{4}";
    orc_grammar *g = NULL;
    assert_int_equal(orc_grammar_new(re, strlen(re), &gp, &g), ORC_OK);
    int err;
    PCRE2_SIZE off;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR) "^[0-9]{3}-[0-9]{4}$", PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    for (uint64_t seed = 1; seed <= 4; seed++) {
        gen_result r;
        generate(g, 1.0f, seed, 50, &r);
        printf("regex: %s\n", r.text);
        assert_true(pcre2_match(code, (PCRE2_SPTR)r.text, r.len, 0, 0, md, NULL) >= 0);
    }
    pcre2_match_data_free(md);
    pcre2_code_free(code);
    orc_grammar_free(g);

    const char *gbnf = "root ::= answer \".\"\nanswer ::= \"yes\" | \"no\" | \"maybe later\"\n";
    gp.kind = ORC_GRAMMAR_GBNF;
    assert_int_equal(orc_grammar_new(gbnf, strlen(gbnf), &gp, &g), ORC_OK);
    for (uint64_t seed = 1; seed <= 4; seed++) {
        gen_result r;
        generate(g, 1.0f, seed, 50, &r);
        printf("gbnf: %s\n", r.text);
        assert_true(!strcmp(r.text, "yes.") || !strcmp(r.text, "no.") || !strcmp(r.text, "maybe later."));
        assert_true(r.done || r.stopped_by_eos);
    }
    orc_grammar_free(g);
}

static void test_bad_grammars(void **state)
{
    (void)state;
    orc_grammar_params gp = orc_grammar_default_params();
    orc_grammar *g = NULL;
    const char *bad = "root ::= \"unterminated";
    assert_int_not_equal(orc_grammar_new(bad, strlen(bad), &gp, &g), ORC_OK);
    assert_null(g);
    assert_true(strlen(orc_last_error()) > 0);
    gp.kind = ORC_GRAMMAR_JSON_SCHEMA;
    const char *unsup = "{\"type\":\"object\",\"if\":{\"required\":[\"a\"]},\"then\":{}}";
    assert_int_not_equal(orc_grammar_new(unsup, strlen(unsup), &gp, &g), ORC_OK);
    printf("unsupported keyword: %s\n", orc_last_error());
    assert_non_null(strstr(orc_last_error(), "if"));
    const char *notjson = "{\"type\":";
    assert_int_not_equal(orc_grammar_new(notjson, strlen(notjson), &gp, &g), ORC_OK);
    char *text = NULL;
    assert_int_equal(orc_json_schema_to_gbnf(SCHEMA, strlen(SCHEMA), false, &text), ORC_OK);
    assert_non_null(strstr(text, "root"));
    orc_free(text);
    orc_grammar_free(NULL);
    orc_sampler *s = NULL;
    assert_int_equal(orc_sampler_new(NULL, 100, &s), ORC_OK);
    assert_int_equal(orc_grammar_new("root ::= \"a\"", 12, NULL, &g), ORC_OK);
    assert_int_equal(orc_sampler_set_grammar(s, model, g), ORC_ERR_INVALID_ARGUMENT); /* vocab size */
    orc_sampler_free(s);
    orc_grammar_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_schema_always_valid),
        cmocka_unit_test(test_regex_and_gbnf),
        cmocka_unit_test(test_bad_grammars),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
