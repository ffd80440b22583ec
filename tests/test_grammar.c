/* test_grammar.c - the grammar core and its GBNF / regex front ends: llama.cpp's example
 * grammars, errors and limits, regexes checked against PCRE2 (including random walks),
 * matcher snapshots / clones / forced bytes, and token masks checked against brute force
 * on real vocabularies (Llama 3 byte-level BPE and Llama SentencePiece). */
#include "gguf.h"
#include "grammar.h"
#include "grammar_vocab_gguf.h"
#include "testutil.h"

#include <jansson.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

/* llama.cpp's grammars/json.gbnf, arithmetic.gbnf, list.gbnf and chess.gbnf as written
 * there (from memory; formatting kept: multi-line rules, comments, {m,n}). */
static const char *json_gbnf =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "\n"
    "object ::=\n"
    "  \"{\" ws (\n"
    "            string \":\" ws value\n"
    "    (\",\" ws string \":\" ws value)*\n"
    "  )? \"}\" ws\n"
    "\n"
    "array  ::=\n"
    "  \"[\" ws (\n"
    "            value\n"
    "    (\",\" ws value)*\n"
    "  )? \"]\" ws\n"
    "\n"
    "string ::=\n"
    "  \"\\\"\" (\n"
    "    [^\"\\\\\\x7F\\x00-\\x1F] |\n"
    "    \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) # escapes\n"
    "  )* \"\\\"\" ws\n"
    "\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-7]{0,1})? ws\n"
    "\n"
    "# Optional space: by convention, applied in this grammar after literal chars when allowed\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static const char *arith_gbnf =
    "root  ::= (expr \"=\" ws term \"\\n\")+\n"
    "expr  ::= term ([-+*/] term)*\n"
    "term  ::= ident | num | \"(\" ws expr \")\" ws\n"
    "ident ::= [a-z] [a-z0-9_]* ws\n"
    "num   ::= [0-9]+ ws\n"
    "ws    ::= [ \\t\\n]*\n";

static const char *list_gbnf =
    "root ::= item+\n"
    "\n"
    "# Excludes various line break characters\n"
    "item ::= \"- \" [^\\r\\n\\x0b\\x0c\\x85\\u2028\\u2029]+ \"\\n\"\n";

static const char *chess_gbnf =
    "# Specifies chess moves as a list in algebraic notation, using PGN conventions\n"
    "\n"
    "# Force first move to \"1. \", then any 1-2 digit number after, relying on model to follow the pattern\n"
    "root    ::= \"1. \" move \" \" move \"\\n\" ([1-9] [0-9]? \". \" move \" \" move \"\\n\")+\n"
    "move    ::= (pawn | nonpawn | castle) [+#]?\n"
    "\n"
    "# piece type, optional file/rank, optional capture, dest file & rank\n"
    "nonpawn ::= [NBKQR] [a-h]? [1-8]? \"x\"? [a-h] [1-8]\n"
    "\n"
    "# optional file & capture, dest file & rank, optional promotion\n"
    "pawn    ::= ([a-h] \"x\")? [a-h] [1-8] (\"=\" [NBKQR])?\n"
    "\n"
    "castle  ::= \"O-O\" \"-O\"?\n";

static grammar *gbnf(const char *text)
{
    char err[256];
    grammar *g = grammar_from_gbnf(text, strlen(text), NULL, err, sizeof err);
    if (!g)
        fail_msg("grammar failed: %s", err);
    return g;
}

static int match_state(const grammar *g, const char *text, size_t n)
{
    /* 2: complete, 1: a valid prefix, 0: rejected */
    grammar_matcher *m = grammar_matcher_new(g);
    int r = 0;
    if (grammar_matcher_accept_bytes(m, text, n))
        r = grammar_matcher_is_complete(m) ? 2 : 1;
    grammar_matcher_free(m);
    return r;
}

static bool full(const grammar *g, const char *text)
{
    return match_state(g, text, strlen(text)) == 2;
}

static void test_llama_grammars(void **state)
{
    (void)state;
    grammar *g = gbnf(json_gbnf);
    assert_true(full(g, "{}"));
    assert_true(full(g, "{\"a\": [1, -2.5e3, \"x\\u00e9\\n\", true, null, {}]}"));
    assert_true(full(g, "{\n  \"k\": \"v\",\n  \"n\": 0\n}\n"));
    assert_true(full(g, "{\"\xc3\xa9\": \"\xe2\x82\xac\xf0\x9f\x98\x80\"}"));
    assert_false(full(g, "[1]"));                    /* root is an object */
    assert_false(full(g, "{\"a\" 1}"));
    assert_false(full(g, "{\"a\": \"\x01\"}"));      /* control character */
    assert_false(full(g, "{\"a\": \"\\x\"}"));
    assert_false(full(g, "{\"a\": 01x}"));
    assert_int_equal(match_state(g, "{\"a\": [1, 2", 11), 1);
    assert_int_equal(match_state(g, "{\"a\": \"\xc3", 8), 1);  /* inside a UTF-8 sequence */
    assert_int_equal(match_state(g, "{\"a\": \"\xc3\x28\"}", 11), 0); /* invalid UTF-8 */
    assert_int_equal(match_state(g, "{\"a\": \"\xed\xa0\x80\"}", 12), 0); /* surrogate */
    grammar_free(g);

    g = gbnf(arith_gbnf);
    assert_true(full(g, "1+2=3\n"));
    assert_true(full(g, "(a +b) *c = x\ny=2\n"));
    assert_false(full(g, "1+=3\n"));
    assert_false(full(g, "1+2=3"));
    grammar_free(g);

    g = gbnf(list_gbnf);
    assert_true(full(g, "- one\n- two \xe2\x82\xac\n"));
    assert_false(full(g, "- \n"));
    assert_false(full(g, "- a\xe2\x80\xa8 b\n")); /* U+2028 excluded */
    assert_false(full(g, "one\n"));
    grammar_free(g);

    g = gbnf(chess_gbnf);
    assert_true(full(g, "1. e4 e5\n2. Nf3 Nc6\n"));
    assert_true(full(g, "1. d4 d5\n10. O-O-O Qxd8+\n"));
    assert_false(full(g, "1. e9 e5\n2. a3 a6\n"));
    assert_false(full(g, "1. e4 e5\n"));
    grammar_free(g);
}

static void test_gbnf_syntax(void **state)
{
    (void)state;
    grammar *g = gbnf("root ::= \"a\"{2} \"b\"{1,3} \"c\"{2,} [x-z]? (\"d\" | \"e\")+ . \"\\u00e9\" \"\\x41\"\n");
    assert_true(full(g, "aabccxd\xe2\x82\xac\xc3\xa9" "A"));
    assert_true(full(g, "aabbbccccdede!\xc3\xa9" "A"));
    assert_false(full(g, "abccd!\xc3\xa9" "A"));
    assert_false(full(g, "aabbbbccd!\xc3\xa9" "A"));
    assert_false(full(g, "aabcd!\xc3\xa9" "A"));
    grammar_free(g);

    /* a named start rule, comments, rules used before definition, CRLF */
    char err[256];
    const char *t = "# c\r\nstart ::= greet \" \" name # trailing\r\ngreet ::= \"hi\" | \"yo\"\r\nname ::= [A-Z] [a-z]*\r\n";
    g = grammar_from_gbnf(t, strlen(t), "start", err, sizeof err);
    assert_non_null(g);
    assert_true(full(g, "hi Bob"));
    assert_false(full(g, "hey Bob"));
    grammar_free(g);

    static const struct {
        const char *text, *expect;
    } bad[] = {
        {"root ::= foo\n", "undefined rule 'foo'"},
        {"root ::= expr\nexpr ::= expr \"+\" num | num\nnum ::= [0-9]\n", "left-recursive"},
        {"root ::= a\na ::= b \"x\"\nb ::= \"\" | a\n", "left-recursive"},
        {"root ::= (\"a\"?)*\n", "left-recursive"},
        {"root ::= \"abc\n", "unterminated string"},
        {"root ::= [abc\n", "unterminated character class"},
        {"root ::= (\"a\"\n", "expected ')'"},
        {"root ::= \"a\")\n", "unbalanced ')'"},
        {"root ::= \"\\q\"\n", "unknown escape"},
        {"root ::= \"a\"{3,2}\n", "n < m"},
        {"root ::= \"a\"{100000}\n", "too large"},
        {"root ::= * \"a\"\n", "quantifier without"},
        {"root ::= \"a\"\nroot ::= \"b\"\n", "defined twice"},
        {"rot ::= \"a\"\n", "no rule 'root'"},
        {"root \"a\"\n", "expected '::='"},
        {"root ::= [z-a]\n", "bad range"},
        {"root ::= \"\\u12\"\n", "bad hex"},
        {"", "no rule 'root'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        g = grammar_from_gbnf(bad[i].text, strlen(bad[i].text), NULL, err, sizeof err);
        if (g)
            fail_msg("grammar %zu compiled but should fail", i);
        if (!strstr(err, bad[i].expect))
            fail_msg("grammar %zu: '%s' lacks '%s'", i, err, bad[i].expect);
    }
    /* deep nesting is an error, not a stack overflow */
    size_t depth = 100000;
    char *deep = malloc(depth * 2 + 32);
    size_t n = (size_t)sprintf(deep, "root ::= ");
    memset(deep + n, '(', depth);
    n += depth;
    n += (size_t)sprintf(deep + n, "\"a\"");
    memset(deep + n, ')', depth);
    n += depth;
    deep[n] = 0;
    g = grammar_from_gbnf(deep, n, NULL, err, sizeof err);
    assert_null(g);
    assert_non_null(strstr(err, "nested too deeply"));
    free(deep);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void test_pathological(void **state)
{
    (void)state;
    char err[256];
    double t0 = now_s();
    grammar *g = gbnf("root ::= \"x\"{0,10000} \"y\"\n");
    assert_true(full(g, "y"));
    char buf[10002];
    memset(buf, 'x', 10000);
    buf[10000] = 'y';
    buf[10001] = 0;
    assert_true(full(g, buf));
    buf[10000] = 'x';
    assert_false(full(g, buf)); /* 10001 x */
    grammar_free(g);
    g = grammar_from_regex("x{0,10000}", 10, err, sizeof err);
    assert_non_null(g);
    grammar_free(g);
    /* an ambiguous grammar: the matcher keeps a bounded set of stacks */
    g = gbnf("root ::= a*\na ::= \"x\" | \"x\" \"x\" | \"x\" \"x\" \"x\"\n");
    memset(buf, 'x', 5000);
    assert_int_equal(match_state(g, buf, 5000), 2);
    grammar_free(g);
    /* nullable repeats: the stacks outgrow the matcher's limit. That is an error, reported
     * once, after which nothing is allowed: no byte, no token, and not EOS either (the
     * text is not known to be complete) */
    g = gbnf("root ::= x{0,100} \"b\"?\nx ::= \"a\" y{0,100}\ny ::= \"a\" | \"\"\n");
    assert_non_null(g);
    grammar_matcher *m = grammar_matcher_new(g);
    assert_non_null(m);
    assert_true(grammar_matcher_is_complete(m));
    size_t fed = 0;
    while (fed < 400 && grammar_matcher_accept_byte(m, 'a'))
        fed++;
    assert_true(fed < 400);
    assert_non_null(grammar_matcher_error(m));
    assert_false(grammar_matcher_is_complete(m));
    assert_false(grammar_matcher_can_accept(m, 'b'));
    const char *tb[] = {"a", "b", "</s>"};
    uint32_t tl[] = {1, 1, 4};
    grammar_vocab *v = grammar_vocab_new(3, tb, tl, (int32_t[]){2}, 1);
    uint32_t mask[1] = {~0u};
    assert_int_equal(grammar_fill_mask(m, v, mask), 0);
    assert_int_equal(mask[0], 0);
    for (int32_t id = 0; id < 3; id++)
        assert_false(grammar_token_allowed(m, v, id));
    assert_false(grammar_accept_token(m, v, 2));
    grammar_vocab_free(v);
    grammar_matcher_free(m);
    grammar_free(g);
    double dt = now_s() - t0;
    printf("pathological grammars: %.1f ms\n", dt * 1e3);
    assert_true(dt < 10.0);
}

/* ---------- regexes against PCRE2 ---------- */

static bool pcre_full(const char *re, const char *s, size_t n)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &ec, &eo, NULL);
    assert_non_null(c);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(c, NULL);
    int rc = pcre2_match(c, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(c);
    return rc >= 0;
}

static uint64_t rng = 1;
static uint32_t rnd(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

static void test_regex(void **state)
{
    (void)state;
    static const struct {
        const char *re;
        const char *probe[8];
        const char *pcre; /* the same pattern in PCRE2 syntax when it differs */
    } rs[] = {
        {"^\\d{3}-\\d{4}$", {"555-1234", "55-1234", "5555-123", "abc-defg"}, NULL},
        {"[A-Z][a-z]+( [A-Z][a-z]+)*", {"Hello World", "hello", "Hello world", "A"}, NULL},
        {"(cat|dog)s?", {"cat", "dogs", "cats", "cow", ""}, NULL},
        {"a.c", {"abc", "a\nc", "a\xc3\xa9" "c", "ac"}, NULL},
        {"[^a-c\\d]+", {"xyz", "xaz", "\xc3\xa9\xe2\x82\xac", "12"}, NULL},
        {"\\w+@\\w+\\.(com|org)", {"bob@ex.com", "bob@ex.net", "@ex.com"}, NULL},
        {"x{2,4}y{0,1}z*", {"xx", "xxxxyzzz", "xyz", "xxxxx"}, NULL},
        {"(?:ab)+|c", {"abab", "c", "abc", "aba"}, NULL},
        {"[\\s\\S]{3}", {"a b", "\n\t ", "ab", "abcd"}, NULL},
        {"\\(\\d+\\)\\.\\*", {"(12).*", "(12)x*", "()"}, NULL},
        {"[-+]?[0-9]*\\.?[0-9]+([eE][-+]?[0-9]+)?", {"-1.5e10", ".5", "1.", "+3"}, NULL},
        {"\\x41\\u00e9[\\x{1F600}-\\x{1F64F}]", {"A\xc3\xa9\xf0\x9f\x98\x80", "A\xc3\xa9x"}, "\\x41\\x{e9}[\\x{1F600}-\\x{1F64F}]"},
        {"(a|ab)(c|bcd)(d*)", {"abcd", "abcdd", "acd", "ab"}, NULL},
        {"[]a]+", {"]a]", "a", "b"}, NULL},
        {"a{,3}", {"a{,3}", "aaa"}, NULL},
        {"colou?r", {"color", "colour", "colouur"}, NULL},
        {"a+?b*+c??", {"aab", "abbc", "c"}, NULL},
    };
    char err[256];
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        grammar *g = grammar_from_regex(rs[i].re, strlen(rs[i].re), err, sizeof err);
        if (!g)
            fail_msg("regex %s: %s", rs[i].re, err);
        /* PCRE2 sees the pattern without our ^...$ handling, so strip them */
        char pat[256];
        snprintf(pat, sizeof pat, "%s", rs[i].pcre ? rs[i].pcre : rs[i].re);
        for (int k = 0; k < 8 && rs[i].probe[k]; k++) {
            const char *s = rs[i].probe[k];
            bool want = pcre_full(pat, s, strlen(s));
            if (full(g, s) != want)
                fail_msg("regex %s on '%s': grammar %d, pcre2 %d", rs[i].re, s, !want, want);
        }
        /* random walks: every generated string is a full match */
        for (int w = 0; w < 40; w++) {
            grammar_matcher *m = grammar_matcher_new(g);
            char out[512];
            size_t n = 0;
            for (;;) {
                bool done = grammar_matcher_is_complete(m);
                uint8_t allowed[32];
                grammar_matcher_allowed_bytes(m, allowed);
                int opts[256], no = 0;
                for (int b = 0; b < 256; b++)
                    if (allowed[b >> 3] & (1u << (b & 7)))
                        opts[no++] = b;
                if (no == 0 || (done && (rnd() % 3 == 0 || n > 200)))
                    break;
                /* prefer ASCII so that the walks finish */
                int b = opts[rnd() % (uint32_t)no];
                for (int tries = 0; tries < 4 && b >= 0x80 && n > 100; tries++)
                    b = opts[rnd() % (uint32_t)no];
                assert_true(grammar_matcher_accept_byte(m, (uint8_t)b));
                out[n++] = (char)b;
                if (n >= sizeof out - 1)
                    break;
            }
            if (grammar_matcher_is_complete(m) && !pcre_full(pat, out, n))
                fail_msg("regex %s generated non-matching '%.*s'", rs[i].re, (int)n, out);
            grammar_matcher_free(m);
        }
        grammar_free(g);
    }
    static const struct {
        const char *re, *expect;
    } bad[] = {
        {"(a", "missing )"},
        {"a)", "unbalanced"},
        {"(?=a)", "lookaround"},
        {"(a)\\1", "backreferences"},
        {"a**", "nested quantifier"},
        {"*a", "without anything"},
        {"a^b", "anchors"},
        {"[b-a]", "out of order"},
        {"\\p{L}", "property"},
        {"a{5,2}", "n < m"},
        {"[abc", "missing ]"},
        {"\\bword", "assertion"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        grammar *g = grammar_from_regex(bad[i].re, strlen(bad[i].re), err, sizeof err);
        if (g)
            fail_msg("regex %s compiled but should fail", bad[i].re);
        if (!strstr(err, bad[i].expect))
            fail_msg("regex %s: '%s' lacks '%s'", bad[i].re, err, bad[i].expect);
    }
}

/* ---------- matcher semantics ---------- */

static void test_matcher(void **state)
{
    (void)state;
    grammar *g = gbnf("root ::= \"{\\\"name\\\":\" [a-z]+ \",\\\"ok\\\":\" (\"true\" | \"false\") \"}\"\n");
    grammar_matcher *m = grammar_matcher_new(g);
    uint8_t buf[64];
    /* forced bytes at the start: the fixed prefix up to the first choice */
    size_t n = grammar_matcher_forced_bytes(m, buf, sizeof buf);
    assert_int_equal(n, 8);
    assert_memory_equal(buf, "{\"name\":", 8);
    assert_true(grammar_matcher_accept_bytes(m, buf, n));
    assert_int_equal(grammar_matcher_forced_bytes(m, buf, sizeof buf), 0);
    assert_true(grammar_matcher_can_accept(m, 'q'));
    assert_false(grammar_matcher_can_accept(m, 'Q'));
    grammar_snapshot s0 = grammar_matcher_snapshot(m);
    assert_true(grammar_matcher_accept_bytes(m, "abc", 3));
    grammar_snapshot s1 = grammar_matcher_snapshot(m);
    /* all-or-nothing */
    assert_false(grammar_matcher_accept_bytes(m, "de,X", 4));
    assert_true(grammar_matcher_snapshot(m) == s1);
    assert_true(grammar_matcher_accept_bytes(m, "de", 2));
    assert_true(grammar_matcher_snapshot(m) == s1); /* the same position inside [a-z]+ */
    /* a clone goes its own way */
    grammar_matcher *c = grammar_matcher_clone(m);
    assert_true(grammar_matcher_accept_bytes(c, ",\"ok\":t", 7));
    n = grammar_matcher_forced_bytes(c, buf, sizeof buf);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "rue}", 4);
    assert_true(grammar_matcher_accept_bytes(c, buf, n));
    assert_true(grammar_matcher_is_complete(c));
    assert_false(grammar_matcher_is_complete(m));
    assert_false(grammar_matcher_can_accept(c, ' '));
    /* rollback */
    grammar_matcher_restore(m, s0);
    assert_false(grammar_matcher_can_accept(m, ','));
    assert_true(grammar_matcher_accept_byte(m, 'z'));
    assert_true(grammar_matcher_can_accept(m, ','));
    grammar_matcher_reset(m);
    assert_true(grammar_matcher_can_accept(m, '{'));
    assert_null(grammar_matcher_error(m));
    grammar_matcher_free(m);
    grammar_matcher_free(c);
    grammar_free(g);
}

/* ---------- token masks vs brute force ---------- */

typedef struct {
    grammar_vocab *v;
    gguf_ctx *g;
    int32_t eos;
} vocab_fixture;

static vocab_fixture load_vocab(const char *rel)
{
    vocab_fixture f = {0};
    char err[256];
    f.g = gguf_open(tu_shared(rel), true, err, sizeof err);
    if (!f.g)
        fail_msg("%s: %s", rel, err);
    f.v = grammar_vocab_from_gguf(f.g, err, sizeof err);
    if (!f.v)
        fail_msg("%s: %s", rel, err);
    uint32_t eos;
    assert_true(gguf_get_u32(f.g, "tokenizer.ggml.eos_token_id", &eos));
    f.eos = (int32_t)eos;
    return f;
}

static void check_mask(grammar_matcher *m, const grammar_vocab *v, uint32_t *mask, int32_t eos)
{
    int32_t cnt = grammar_fill_mask(m, v, mask);
    int32_t brute = 0;
    for (int32_t id = 0; id < grammar_vocab_n_tokens(v); id++) {
        bool a = grammar_token_allowed(m, v, id);
        bool b = (mask[id >> 5] >> (id & 31)) & 1;
        brute += a;
        if (a != b)
            fail_msg("token %d: brute force %d, mask %d", id, a, b);
    }
    assert_int_equal(cnt, brute);
    assert_int_equal((mask[eos >> 5] >> (eos & 31)) & 1, grammar_matcher_is_complete(m));
}

static void mask_walks(const char *vocab_rel, const char *const *grammars, size_t ng)
{
    vocab_fixture f = load_vocab(vocab_rel);
    size_t W = grammar_vocab_mask_words(f.v);
    uint32_t *mask = malloc(W * 4);
    int32_t n_tok = grammar_vocab_n_tokens(f.v);
    int32_t *allowed = malloc((size_t)n_tok * sizeof *allowed);
    for (size_t gi = 0; gi < ng; gi++) {
        grammar *g = gbnf(grammars[gi]);
        for (int walk = 0; walk < 3; walk++) {
            grammar_matcher *m = grammar_matcher_new(g);
            rng = gi * 100 + (uint64_t)walk + 7;
            for (int step = 0; step < 25; step++) {
                check_mask(m, f.v, mask, f.eos);
                /* masks again from the cache must be identical */
                uint32_t *again = malloc(W * 4);
                grammar_fill_mask(m, f.v, again);
                assert_memory_equal(mask, again, W * 4);
                free(again);
                int32_t k = 0;
                for (size_t w = 0; w < W; w++)
                    for (uint32_t bits = mask[w]; bits; bits &= bits - 1)
                        allowed[k++] = (int32_t)(w * 32 + (size_t)__builtin_ctz(bits));
                if (k == 0)
                    break;
                int32_t id = allowed[rnd() % (uint32_t)k];
                if (id == f.eos) {
                    assert_true(grammar_accept_token(m, f.v, id));
                    assert_true(grammar_matcher_is_terminated(m));
                    assert_int_equal(grammar_fill_mask(m, f.v, mask), 0);
                    break;
                }
                assert_true(grammar_accept_token(m, f.v, id));
            }
            grammar_matcher_free(m);
        }
        grammar_free(g);
    }
    free(mask);
    free(allowed);
    grammar_vocab_free(f.v);
    gguf_close(f.g);
}

static void test_masks_llama3(void **state)
{
    (void)state;
    const char *gs[] = {json_gbnf, arith_gbnf, list_gbnf, chess_gbnf,
                        "root ::= \"\\\"\" [a-z ]{0,12} \"\\\"\" | [0-9]{1,3}\n"};
    mask_walks("vocab/ggml-vocab-llama-bpe.gguf", gs, sizeof gs / sizeof gs[0]);
}

/* Restricted alphabets (the restricted-alphabet index of grammar.c): counted runs over
 * small byte sets that tokens leave in the middle (email, hex, labels), bounded and
 * unbounded string bodies in character mode (non-ASCII characters in the alphabet, tokens
 * cut inside a character), non-ASCII classes in byte mode, runs whose end takes more bytes
 * of the alphabet; every mask against brute force on the 128K Llama 3 vocabulary. */
static void test_masks_restricted(void **state)
{
    (void)state;
    const char *gs[] = {
        "root ::= [a-zA-Z0-9_+-]{1,32} (\".\" [a-zA-Z0-9_+-]{1,32}){0,3} \"@\" [a-z0-9]{1,10} \".\" [a-z]{2,4}\n",
        "root ::= [0-9a-f]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9]{3}\n",
        "root ::= \"\\\"\" [^\"\\\\\\x00-\\x1F]{0,12} \"\\\",\" [0-9]\n",
        "root ::= \"\\\"\" [^\"\\\\]* \"\\\"\"\n",
        "root ::= [0-9]+ (\".\" [0-9]+)? \"e\"\n",
        "root ::= [a-z]{2,5} [a-z0-9]* \"!\"\n",
        "root ::= [α-ω]{1,8} \".\" [a-z]{0,3}\n",
        /* runs that end where more of the alphabet may follow */
        "root ::= [a-z]{3} [a-m]{2} \"!\"\n",
        "root ::= \"\\\"\" [^\"\\\\]{2} [a-zé]{0,3} \"\\\"\"\n",
    };
    mask_walks("vocab/ggml-vocab-llama-bpe.gguf", gs, sizeof gs / sizeof gs[0]);
    /* the index is what answers: a fresh mask inside the email's local part visits a few
     * hundred trie nodes, not the tens of thousands of in-alphabet prefixes */
    vocab_fixture f = load_vocab("vocab/ggml-vocab-llama-bpe.gguf");
    uint32_t *mask = malloc(grammar_vocab_mask_words(f.v) * 4);
    grammar *g = gbnf(gs[0]);
    grammar_matcher *m = grammar_matcher_new(g);
    assert_true(grammar_matcher_accept_bytes(m, "abc", 3));
    grammar_stats a, b;
    grammar_matcher_stats(m, &a);
    int32_t n = grammar_fill_mask(m, f.v, mask);
    grammar_matcher_stats(m, &b);
    printf("email local part: %d tokens allowed, %llu trie nodes visited\n", n,
           (unsigned long long)(b.trie_nodes_visited - a.trie_nodes_visited));
    assert_true(n > 10000);
    assert_true(b.trie_nodes_visited - a.trie_nodes_visited < 3000);
    grammar_matcher_free(m);
    grammar_free(g);
    free(mask);
    grammar_vocab_free(f.v);
    gguf_close(f.g);
}

/* Bounded strings in character mode. A rule holding every non-ASCII character as plain
 * byte sequences (a lowered class such as a JSON string's [^"\\\x00-\x1F]) lets one
 * character decide, at each count of char{0,40}, whether every non-ASCII character leads
 * where the ASCII bytes do (grammar.c, char-complete rules); a class missing one
 * character, a rule whose alternative goes on after a character, or a rule whose
 * alternatives do not match whole characters must be decided by trying them all. Masks of
 * fresh grammars (each analysing its whole bounded run at the string's first character)
 * against brute force at every step and against a grammar warmed by other walks; the
 * shortcut's answers against the full test. */
static void add_bytes(grammar_builder *b, int32_t rule, const uint8_t (*ranges)[2], size_t n,
                      int32_t tail)
{
    grammar_elem seq[8];
    for (size_t i = 0; i < n; i++) {
        uint8_t set[32] = {0};
        for (unsigned c = ranges[i][0]; c <= ranges[i][1]; c++)
            set[c >> 3] |= (uint8_t)(1u << (c & 7));
        seq[i] = gb_elem_bytes(b, set);
    }
    if (tail >= 0)
        seq[n++] = gb_elem_rule(tail);
    assert_true(gb_add_alt(b, rule, seq, n));
}

/* "\"" c{0,12} "\"" from raw byte sets: c is printable ASCII but '"', '\\' and 's', or
 * one multi-byte UTF-8 character, each form spelled out as a plain byte sequence, so c
 * takes every character (variant 0: char-complete). Variant 1 adds the alternative
 * C3 A9 's' (a 2-byte lead starting 3 bytes), variant 2 C3 A9 followed by a rule ('s'),
 * variant 3 leaves out the leads EC (Hangul syllables among them); none is
 * char-complete, and in each é does not lead where the other characters do. */
static grammar *raw_string_grammar(int variant)
{
    grammar_builder *b = gb_new();
    int32_t root = gb_rule(b, "root", 4), c = gb_rule(b, "c", 1), s = gb_rule(b, "s", 1);
    const uint8_t ascii[][2] = {{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x72}, {0x74, 0x7E}};
    for (size_t i = 0; i < 4; i++)
        add_bytes(b, c, &ascii[i], 1, -1);
    const uint8_t forms[][4][2] = {
        {{0xC2, 0xDF}, {0x80, 0xBF}},
        {{0xE0, 0xE0}, {0xA0, 0xBF}, {0x80, 0xBF}},
        {{0xE1, 0xEC}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xED, 0xED}, {0x80, 0x9F}, {0x80, 0xBF}},
        {{0xEE, 0xEF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF0, 0xF0}, {0x90, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF1, 0xF3}, {0x80, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF4, 0xF4}, {0x80, 0x8F}, {0x80, 0xBF}, {0x80, 0xBF}},
    };
    const size_t flen[] = {2, 3, 3, 3, 3, 4, 4, 4};
    for (size_t f = 0; f < 8; f++) {
        uint8_t r[4][2];
        memcpy(r, forms[f], sizeof r);
        if (variant == 3 && f == 2)
            r[0][1] = 0xEB;
        add_bytes(b, c, (const uint8_t (*)[2])r, flen[f], -1);
    }
    const uint8_t e_acute_s[][2] = {{0xC3, 0xC3}, {0xA9, 0xA9}, {'s', 's'}};
    if (variant == 1)
        add_bytes(b, c, e_acute_s, 3, -1);
    if (variant == 2)
        add_bytes(b, c, e_acute_s, 2, s);
    add_bytes(b, s, &e_acute_s[2], 1, -1);
    /* opt_k ::= c opt_{k-1} | ε, as the GBNF front end lowers c{0,12} */
    int32_t inner = -1;
    for (int k = 0; k < 12; k++) {
        char name[16];
        snprintf(name, sizeof name, "opt%d", k);
        int32_t r = gb_rule(b, name, strlen(name));
        grammar_elem alt[2] = {gb_elem_rule(c), inner >= 0 ? gb_elem_rule(inner) : 0};
        assert_true(gb_add_alt(b, r, alt, inner >= 0 ? 2 : 1));
        assert_true(gb_add_alt(b, r, NULL, 0));
        inner = r;
    }
    uint8_t qset[32] = {0};
    qset['"' >> 3] |= 1u << ('"' & 7);
    grammar_elem seq[3] = {gb_elem_bytes(b, qset), gb_elem_rule(inner), gb_elem_bytes(b, qset)};
    assert_true(gb_add_alt(b, root, seq, 3));
    char err[256];
    grammar *g = gb_finish(b, "root", err, sizeof err);
    if (!g)
        fail_msg("raw grammar: %s", err);
    return g;
}

static void test_masks_bounded_strings(void **state)
{
    (void)state;
    const char *gs[] = {
        /* the records benchmark's title: json-char{0,40} */
        "root ::= \"\\\"\" char{0,40} \"\\\",\" [0-9]\n"
        "char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n",
        /* a class missing one character (é) */
        "root ::= \"\\\"\" [^\"\\\\\\x00-\\x1F\\u00e9]{0,20} \"\\\"\"\n",
        /* é may go on with x */
        "root ::= \"\\\"\" c{0,20} \"\\\"\"\nc ::= [^\"\\\\\\x00-\\x1F] | \"\\u00e9x\"\n",
        /* two bounded runs alive at once (two parents) and any character (.) */
        "root ::= \"\\\"\" ([^\"]{0,6} \"a\" | [^\"]{0,3} \"b\" | .{2,30} \"!\") \"\\\"\"\n",
        /* every non-ASCII character leads to one state, not where the letters lead */
        "root ::= \"\\\"\" ([a-z ] | [^\\x00-\\x7F] \"!\"){0,10} \"\\\"\"\n",
        /* raw_string_grammar variants 0-3 */
        NULL, NULL, NULL, NULL,
    };
    const size_t first_raw = 5;
    vocab_fixture f = load_vocab("vocab/ggml-vocab-llama-bpe.gguf");
    size_t W = grammar_vocab_mask_words(f.v);
    uint32_t *mask = malloc(W * 4), *warm = malloc(W * 4);
    int32_t *allowed = malloc((size_t)grammar_vocab_n_tokens(f.v) * sizeof *allowed);
    uint32_t checked = 0;
    for (size_t gi = 0; gi < sizeof gs / sizeof gs[0]; gi++) {
        bool raw = gs[gi] == NULL;
        int variant = (int)gi - (int)first_raw;
        grammar *gw = raw ? raw_string_grammar(variant) : gbnf(gs[gi]);
        /* warm gw up with walks of other seeds */
        for (int walk = 0; walk < 2; walk++) {
            grammar_matcher *m = grammar_matcher_new(gw);
            rng = gi * 100 + (uint64_t)walk + 50;
            for (int step = 0; step < 30; step++) {
                int32_t k = 0;
                grammar_fill_mask(m, f.v, mask);
                for (size_t w = 0; w < W; w++)
                    for (uint32_t bits = mask[w]; bits; bits &= bits - 1)
                        allowed[k++] = (int32_t)(w * 32 + (size_t)__builtin_ctz(bits));
                int32_t id = k ? allowed[rnd() % (uint32_t)k] : f.eos;
                if (id == f.eos)
                    break;
                assert_true(grammar_accept_token(m, f.v, id));
            }
            grammar_matcher_free(m);
        }
        for (int walk = 0; walk < 3; walk++) {
            grammar *g = raw ? raw_string_grammar(variant) : gbnf(gs[gi]);
            grammar_matcher *m = grammar_matcher_new(g), *mw = grammar_matcher_new(gw);
            rng = gi * 100 + (uint64_t)walk + 7;
            grammar_stats mstats = {0};
            for (int step = 0; step < 30; step++) {
                if (gi == 0 && walk == 0 && step < 2) {
                    /* the masks before the string and at its first character: the 40
                     * counts are analysed at once (for tokens such as "\"abc"), each by
                     * the shortcut (some 3 700 transitions without it); the brute force
                     * of check_mask computes transitions of its own */
                    grammar_stats a, b;
                    grammar_matcher_stats(m, &a);
                    grammar_fill_mask(m, f.v, mask);
                    grammar_matcher_stats(m, &b);
                    mstats.expansions += b.expansions - a.expansions;
                    mstats.chars_shortcut += b.chars_shortcut - a.chars_shortcut;
                    mstats.chars_full += b.chars_full - a.chars_full;
                }
                if (gi == 0 && walk == 0 && step == 2) {
                    printf("json-char{0,40}, masks up to its first character: %llu transitions, "
                           "%llu positions by the shortcut, %llu by the full test\n",
                           (unsigned long long)mstats.expansions,
                           (unsigned long long)mstats.chars_shortcut,
                           (unsigned long long)mstats.chars_full);
                    assert_true(mstats.chars_shortcut >= 40);
                    assert_true(mstats.expansions < 1500);
                }
                check_mask(m, f.v, mask, f.eos);
                grammar_fill_mask(mw, f.v, warm);
                assert_memory_equal(mask, warm, W * 4);
                int32_t k = 0;
                for (size_t w = 0; w < W; w++)
                    for (uint32_t bits = mask[w]; bits; bits &= bits - 1)
                        allowed[k++] = (int32_t)(w * 32 + (size_t)__builtin_ctz(bits));
                if (k == 0)
                    break;
                /* the first walk of the first grammar opens the string alone */
                int32_t id = gi == 0 && walk == 0 && step == 0 ? f.eos : allowed[rnd() % (uint32_t)k];
                if (id == f.eos) {
                    if (gi == 0 && walk == 0 && step == 0) {
                        assert_true(grammar_matcher_accept_bytes(m, "\"", 1));
                        assert_true(grammar_matcher_accept_bytes(mw, "\"", 1));
                        continue;
                    }
                    break;
                }
                assert_true(grammar_accept_token(m, f.v, id));
                assert_true(grammar_accept_token(mw, f.v, id));
            }
            uint32_t n = 0;
            assert_true(grammar_matcher_check_chars(m, &n));
            checked += n;
            grammar_stats st;
            grammar_matcher_stats(m, &st);
            /* inside the string: never char-complete / always (walks may end early) */
            if ((gi >= 1 && gi <= 2) || (raw && variant > 0))
                assert_true(st.chars_full > 0);
            if (raw && variant == 0)
                assert_true(st.chars_full == 0 && st.chars_shortcut > 0);
            grammar_matcher_free(m);
            grammar_matcher_free(mw);
            grammar_free(g);
        }
        grammar_free(gw);
    }
    printf("char-complete shortcut: %u answers confirmed by the full test\n", checked);
    assert_true(checked >= 40);
    free(mask);
    free(warm);
    free(allowed);
    grammar_vocab_free(f.v);
    gguf_close(f.g);
}

static void test_masks_spm(void **state)
{
    (void)state;
    const char *gs[] = {json_gbnf, list_gbnf};
    mask_walks("vocab/ggml-vocab-llama-spm.gguf", gs, sizeof gs / sizeof gs[0]);
}

static void test_vocab_edge_cases(void **state)
{
    (void)state;
    /* tokens: "a", "ab", "", NULL (control), "b", "abc", "a" again, EOS */
    const char *bytes[] = {"a", "ab", "", NULL, "b", "abc", "a", "</s>"};
    uint32_t lens[] = {1, 2, 0, 0, 1, 3, 1, 4};
    int32_t eog[] = {7};
    grammar_vocab *v = grammar_vocab_new(8, bytes, lens, eog, 1);
    assert_non_null(v);
    assert_null(grammar_vocab_new(0, bytes, lens, NULL, 0));
    assert_null(grammar_vocab_new(8, bytes, lens, (int32_t[]){9}, 1));
    grammar *g = gbnf("root ::= \"ab\" \"c\"?\n");
    grammar_matcher *m = grammar_matcher_new(g);
    uint32_t mask[1];
    assert_int_equal(grammar_fill_mask(m, v, mask), 4);
    assert_int_equal(mask[0], (1u << 0) | (1u << 1) | (1u << 5) | (1u << 6));
    assert_true(grammar_accept_token(m, v, 1));
    assert_int_equal(grammar_fill_mask(m, v, mask), 1); /* only EOS: "c" is no token */
    assert_int_equal(mask[0], 1u << 7);
    assert_false(grammar_accept_token(m, v, 3));
    assert_true(grammar_accept_token(m, v, 7));
    assert_false(grammar_accept_token(m, v, 0));
    grammar_matcher_free(m);
    grammar_free(g);
    grammar_vocab_free(v);
}

/* the integration path (orc_vocab) sees the same token bytes as the GGUF reader here */
static void test_vocab_from_tokenizer(void **state)
{
    (void)state;
    static const char *files[] = {"vocab/ggml-vocab-llama-bpe.gguf", "vocab/ggml-vocab-llama-spm.gguf"};
    for (int f = 0; f < 2; f++) {
        char err[256];
        gguf_ctx *g = gguf_open(tu_shared(files[f]), true, err, sizeof err);
        assert_non_null(g);
        orc_vocab *ov = orc_vocab_load(g, err, sizeof err);
        if (!ov)
            fail_msg("orc_vocab_load: %s", err);
        grammar_vocab *a = grammar_vocab_from_orc_vocab(ov);
        grammar_vocab *b = grammar_vocab_from_gguf(g, err, sizeof err);
        assert_non_null(a);
        assert_non_null(b);
        int32_t n = grammar_vocab_n_tokens(a), differ = 0;
        assert_int_equal(n, grammar_vocab_n_tokens(b));
        for (int32_t id = 0; id < n; id++) {
            uint32_t la, lb;
            const char *pa = grammar_vocab_token(a, id, &la);
            const char *pb = grammar_vocab_token(b, id, &lb);
            if (la != lb || (la && memcmp(pa, pb, la) != 0))
                differ++;
        }
        if (differ)
            fail_msg("%s: %d of %d tokens differ between orc_vocab and GGUF decoding", files[f],
                     differ, n);
        grammar_vocab_free(a);
        grammar_vocab_free(b);
        orc_vocab_free(ov);
        gguf_close(g);
    }
}

/* clones used from two threads at once share the pool safely */
typedef struct {
    const grammar_matcher *base;
    const grammar *g;
    int ok;
} thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    a->ok = 1;
    for (int i = 0; i < 200; i++) {
        /* clones and new matchers of one grammar share the pool */
        grammar_matcher *m = i % 2 ? grammar_matcher_clone(a->base)
                                   : grammar_matcher_new(a->g);
        const char *t = "{\"k\": [1, 2, {\"x\": \"y\"}], \"z\": null}";
        if (!grammar_matcher_accept_bytes(m, t, strlen(t)) || !grammar_matcher_is_complete(m))
            a->ok = 0;
        grammar_matcher_free(m);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    grammar *g = gbnf(json_gbnf);
    grammar_matcher *base = grammar_matcher_new(g);
    pthread_t t[4];
    thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].base = base;
        a[i].g = g;
        pthread_create(&t[i], NULL, thr_main, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].ok, 1);
    }
    grammar_matcher_free(base);
    grammar_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_grammars),
        cmocka_unit_test(test_gbnf_syntax),
        cmocka_unit_test(test_pathological),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_matcher),
        cmocka_unit_test(test_vocab_edge_cases),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_vocab_from_tokenizer),
        cmocka_unit_test(test_masks_llama3),
        cmocka_unit_test(test_masks_spm),
        cmocka_unit_test(test_masks_restricted),
        cmocka_unit_test(test_masks_bounded_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
