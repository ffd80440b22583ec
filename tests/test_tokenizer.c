/* test_tokenizer.c - tokenizer conformance against llama.cpp's test vectors
 * (../shared/vocab/X.gguf.inp/.out for SentencePiece and byte-level BPE families), the
 * stories260K prompts, detokenizing round trips, special tokens, bad vocabularies and
 * property tests on random and hostile input. */
#include "gguf.h"
#include "tokenizer.h"
#include "tokenizer_int.h"
#include "testutil.h"

#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct {
    gguf_ctx *g;
    orc_vocab *v;
} loaded;

static loaded load_vocab(const char *rel)
{
    char err[256] = "";
    loaded l = {0};
    l.g = gguf_open(tu_shared(rel), true, err, sizeof err);
    if (!l.g)
        fail_msg("%s: %s", rel, err);
    l.v = orc_vocab_load(l.g, err, sizeof err);
    if (!l.v)
        fail_msg("%s: %s", rel, err);
    return l;
}

static void unload(loaded *l)
{
    orc_vocab_free(l->v);
    gguf_close(l->g);
}

/* Tokenize into a malloc'd array (asks for the size first, as callers do). */
static int32_t *tokenize(const orc_vocab *v, const char *s, size_t n, bool add_special,
                         bool parse_special, int32_t *count)
{
    int32_t need = orc_vocab_tokenize(v, s, n, NULL, 0, add_special, parse_special);
    assert_true(need <= 0);
    int32_t cap = -need;
    int32_t *ids = malloc(sizeof *ids * (size_t)(cap + 1));
    assert_non_null(ids);
    int32_t got = orc_vocab_tokenize(v, s, n, ids, cap, add_special, parse_special);
    assert_int_equal(got, cap);
    *count = got;
    return ids;
}

/* Concatenated pieces (special = true). */
static char *pieces(const orc_vocab *v, const int32_t *ids, int32_t n, size_t *len)
{
    size_t cap = 64, m = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (int32_t i = 0; i < n; i++) {
        char buf[512];
        int32_t k = orc_vocab_piece(v, ids[i], buf, sizeof buf, true);
        assert_true(k >= 0);
        if (m + (size_t)k + 1 > cap) {
            cap = (m + (size_t)k + 1) * 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        memcpy(out + m, buf, (size_t)k);
        m += (size_t)k;
    }
    out[m] = 0;
    *len = m;
    return out;
}

static char *detokenize(const orc_vocab *v, const int32_t *ids, int32_t n, bool remove_special,
                        bool unparse, int32_t *len)
{
    int32_t need = orc_vocab_detokenize(v, ids, n, NULL, 0, remove_special, unparse);
    int32_t cap = need < 0 ? -need : need;
    char *buf = malloc((size_t)cap + 1);
    assert_non_null(buf);
    int32_t got = orc_vocab_detokenize(v, ids, n, buf, cap + 1, remove_special, unparse);
    assert_true(got >= 0 && got <= cap);
    buf[got] = 0;
    *len = got;
    return buf;
}

/* ---- conformance ------------------------------------------------------------------- */

typedef struct {
    char **text;
    size_t *len;
    int32_t **ids;
    int32_t *n_ids;
    size_t n;
} vectors;

/* X.gguf.inp: strings each followed by "\n__ggml_vocab_test__\n"; X.gguf.out: one line
 * of ids per string (as llama.cpp's test-tokenizer-0 reads them). */
static vectors read_vectors(const char *rel_gguf)
{
    char rel[256];
    vectors t = {0};
    size_t ilen, olen;
    snprintf(rel, sizeof rel, "%s.inp", rel_gguf);
    char *inp = tu_read_file(tu_shared(rel), &ilen);
    snprintf(rel, sizeof rel, "%s.out", rel_gguf);
    char *out = tu_read_file(tu_shared(rel), &olen);
    assert_non_null(inp);
    assert_non_null(out);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t cap = 64;
    t.text = malloc(cap * sizeof *t.text);
    t.len = malloc(cap * sizeof *t.len);
    for (size_t pos = 0;;) {
        const char *hit = memmem(inp + pos, ilen - pos, sep, sizeof sep - 1);
        if (!hit)
            break;
        size_t n = (size_t)(hit - (inp + pos));
        if (t.n == cap) {
            cap *= 2;
            t.text = realloc(t.text, cap * sizeof *t.text);
            t.len = realloc(t.len, cap * sizeof *t.len);
        }
        t.text[t.n] = malloc(n + 1);
        memcpy(t.text[t.n], inp + pos, n);
        t.text[t.n][n] = 0;
        t.len[t.n] = n;
        t.n++;
        pos += n + sizeof sep - 1;
    }
    t.ids = calloc(t.n, sizeof *t.ids);
    t.n_ids = calloc(t.n, sizeof *t.n_ids);
    char *line = out;
    for (size_t i = 0; i < t.n; i++) {
        assert_true(line < out + olen);
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        t.ids[i] = malloc(sizeof(int32_t) * (strlen(line) / 2 + 1));
        for (char *p = line;;) {
            char *end;
            long x = strtol(p, &end, 10);
            if (end == p)
                break;
            t.ids[i][t.n_ids[i]++] = (int32_t)x;
            p = end;
        }
        line = nl ? nl + 1 : out + olen;
    }
    free(inp);
    free(out);
    return t;
}

static void free_vectors(vectors *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->text[i]);
        free(t->ids[i]);
    }
    free(t->text);
    free(t->len);
    free(t->ids);
    free(t->n_ids);
}

static void print_ids(const char *what, const int32_t *ids, int32_t n)
{
    fprintf(stderr, "  %s:", what);
    for (int32_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static void conformance(const char *family)
{
    char rel[128];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", family);
    loaded l = load_vocab(rel);
    vectors t = read_vectors(rel);
    assert_true(t.n >= 40);
    bool spm = orc_vocab_type(l.v) == ORC_VOCAB_SPM;
    size_t ok = 0, rt_ok = 0, rt_n = 0;
    for (size_t i = 0; i < t.n; i++) {
        int32_t n;
        int32_t *ids = tokenize(l.v, t.text[i], t.len[i], false, false, &n);
        bool same = n == t.n_ids[i] && !memcmp(ids, t.ids[i], sizeof *ids * (size_t)n);
        if (same) {
            ok++;
        } else {
            fprintf(stderr, "%s: string %zu '%s' differs\n", family, i, t.text[i]);
            print_ids("expected", t.ids[i], t.n_ids[i]);
            print_ids("got     ", ids, n);
        }
        /* the pieces give back the text (SentencePiece adds the dummy prefix space) */
        size_t plen;
        char *p = pieces(l.v, ids, n, &plen);
        const char *want = t.text[i];
        size_t wlen = t.len[i];
        bool prefixed = spm && orc_vocab_get_add_space_prefix(l.v) && wlen > 0;
        rt_n++;
        if (plen == wlen + prefixed && (!prefixed || p[0] == ' ') &&
            !memcmp(p + prefixed, want, wlen))
            rt_ok++;
        else
            fprintf(stderr, "%s: string %zu '%s': pieces give '%s'\n", family, i, want, p);
        free(p);
        /* detokenize is exact where the family does not clean up spaces */
        int32_t dl;
        char *d = detokenize(l.v, ids, n, false, false, &dl);
        if (spm || !strcmp(family, "qwen2") || !strcmp(family, "qwen35")) {
            assert_int_equal(dl, (int32_t)wlen);
            assert_memory_equal(d, want, wlen);
        }
        free(d);
        free(ids);
    }
    fprintf(stderr, "[ conformance ] %-10s %zu/%zu strings match, %zu/%zu round trips\n",
            family, ok, t.n, rt_ok, rt_n);
    assert_int_equal(ok, t.n);
    assert_int_equal(rt_ok, rt_n);
    free_vectors(&t);
    unload(&l);
}

static void test_llama_spm(void **state) { (void)state; conformance("llama-spm"); }
static void test_phi3(void **state) { (void)state; conformance("phi-3"); }
static void test_llama_bpe(void **state) { (void)state; conformance("llama-bpe"); }
static void test_qwen2(void **state) { (void)state; conformance("qwen2"); }
static void test_qwen35(void **state) { (void)state; conformance("qwen35"); }
static void test_gpt2(void **state) { (void)state; conformance("gpt-2"); }

/* stories260K: prompt_tokens (with BOS) of the reference generations */
static void test_stories_prompts(void **state)
{
    (void)state;
    loaded l = load_vocab("models/stories260K.gguf");
    assert_int_equal(orc_vocab_n_tokens(l.v), 512);
    assert_int_equal(orc_vocab_bos(l.v), 1);
    assert_int_equal(orc_vocab_eos(l.v), 2);
    assert_int_equal(orc_vocab_pad(l.v), -1); /* 4294967295 in the file: not a token */
    assert_true(orc_vocab_get_add_bos(l.v));
    size_t len;
    char *all = tu_read_file(tu_shared("reference/generate/stories260K.jsonl"), &len);
    assert_non_null(all);
    int cases = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        assert_non_null(o);
        const char *prompt = json_string_value(json_object_get(o, "prompt"));
        json_t *want = json_object_get(o, "prompt_tokens");
        assert_non_null(prompt);
        int32_t n;
        int32_t *ids = tokenize(l.v, prompt, strlen(prompt), true, false, &n);
        assert_int_equal((size_t)n, json_array_size(want));
        for (int32_t i = 0; i < n; i++)
            assert_int_equal(ids[i], json_integer_value(json_array_get(want, (size_t)i)));
        /* llama.cpp keeps the dummy-prefix space when it removes BOS, and drops it
         * when the text starts the sequence */
        int32_t dl;
        char *d = detokenize(l.v, ids, n, true, false, &dl);
        assert_int_equal(dl, (int32_t)strlen(prompt) + 1);
        assert_true(d[0] == ' ');
        assert_string_equal(d + 1, prompt);
        free(d);
        d = detokenize(l.v, ids + 1, n - 1, true, false, &dl);
        assert_string_equal(d, prompt);
        free(d);
        free(ids);
        json_decref(o);
        cases++;
    }
    assert_true(cases >= 4);
    free(all);
    int32_t ids[8];
    assert_int_equal(orc_vocab_tokenize(l.v, "Once upon a time", 16, ids, 8, true, false), 5);
    int32_t want[] = {1, 403, 407, 261, 378};
    assert_memory_equal(ids, want, sizeof want);
    unload(&l);
}

/* ---- API contracts ------------------------------------------------------------------ */

static void test_buffer_sizes(void **state)
{
    (void)state;
    loaded l = load_vocab("vocab/ggml-vocab-llama-bpe.gguf");
    const char *s = "Hello world, this is a test";
    int32_t all[64];
    int32_t n = orc_vocab_tokenize(l.v, s, strlen(s), all, 64, true, false);
    assert_true(n > 3);
    assert_int_equal(all[0], 128000); /* llama-bpe adds BOS */
    int32_t few[2] = {-7, -7};
    assert_int_equal(orc_vocab_tokenize(l.v, s, strlen(s), few, 2, true, false), -n);
    assert_int_equal(orc_vocab_tokenize(l.v, "", 0, few, 2, false, false), 0);
    assert_int_equal(orc_vocab_tokenize(l.v, "", 0, few, 2, true, false), 1);
    assert_int_equal(few[0], 128000);

    char buf[8];
    int32_t full = orc_vocab_detokenize(l.v, all, n, NULL, 0, false, false);
    assert_true(full < 0);
    assert_int_equal(orc_vocab_detokenize(l.v, all, n, buf, sizeof buf, false, false), full);
    char big[128];
    assert_int_equal(orc_vocab_detokenize(l.v, all, n, big, sizeof big, true, false),
                     (int32_t)strlen(s));
    assert_memory_equal(big, s, strlen(s));
    /* with unparse_special the BOS text shows */
    int32_t k = orc_vocab_detokenize(l.v, all, n, big, sizeof big, false, true);
    assert_int_equal(k, (int32_t)(strlen(s) + strlen("<|begin_of_text|>")));
    assert_memory_equal(big, "<|begin_of_text|>Hello", 22);

    /* pieces: too small buffer, control tokens hidden unless special */
    int32_t id = orc_vocab_find(l.v, "Hello", 5);
    assert_true(id >= 0);
    assert_int_equal(orc_vocab_piece(l.v, id, buf, 2, false), -5);
    assert_int_equal(orc_vocab_piece(l.v, 128000, buf, sizeof buf, false), 0);
    assert_int_equal(orc_vocab_piece(l.v, 128009, big, sizeof big, true), 10);
    assert_memory_equal(big, "<|eot_id|>", 10);
    assert_int_equal(orc_vocab_piece(l.v, -1, buf, sizeof buf, true), 0);
    assert_int_equal(orc_vocab_piece(l.v, 1 << 30, buf, sizeof buf, true), 0);
    assert_null(orc_vocab_text(l.v, -1));
    assert_string_equal(orc_vocab_text(l.v, id), "Hello");
    assert_int_equal(orc_vocab_attr(l.v, 128000), ORC_TATTR_CONTROL);
    assert_int_equal(orc_vocab_attr(l.v, id), ORC_TATTR_NORMAL);
    unload(&l);
}

static void test_special_tokens(void **state)
{
    (void)state;
    loaded l = load_vocab("vocab/ggml-vocab-qwen2.gguf");
    assert_string_equal(orc_vocab_model_name(l.v), "gpt2");
    assert_string_equal(orc_vocab_pre_name(l.v), "qwen2");
    assert_false(orc_vocab_get_add_bos(l.v));
    assert_true(orc_vocab_is_eog(l.v, 151643));  /* <|endoftext|> */
    assert_true(orc_vocab_is_eog(l.v, 151645));  /* <|im_end|> */
    assert_false(orc_vocab_is_eog(l.v, 151644)); /* <|im_start|> */
    assert_false(orc_vocab_is_eog(l.v, 100));
    assert_int_equal(orc_vocab_eot(l.v), 151645);
    const char *s = "<|im_start|>user\nHi<|im_end|>";
    int32_t n;
    int32_t *ids = tokenize(l.v, s, strlen(s), false, true, &n);
    assert_true(n >= 4);
    assert_int_equal(ids[0], 151644);
    assert_int_equal(ids[n - 1], 151645);
    int32_t dl;
    char *d = detokenize(l.v, ids, n, false, true, &dl);
    assert_string_equal(d, s);
    free(d);
    d = detokenize(l.v, ids, n, false, false, &dl);
    assert_string_equal(d, "user\nHi");
    free(d);
    free(ids);
    /* not parsed: the text is tokenized as text and comes back as text */
    ids = tokenize(l.v, s, strlen(s), false, false, &n);
    for (int32_t i = 0; i < n; i++)
        assert_true(ids[i] < 151643);
    d = detokenize(l.v, ids, n, false, false, &dl);
    assert_string_equal(d, s);
    free(d);
    free(ids);
    /* user-defined tokens are matched even when special text is not parsed */
    ids = tokenize(l.v, "a[PAD151650]b", 13, false, false, &n);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 151650);
    free(ids);
    unload(&l);

    /* Phi-3: special tokens drop the whitespace after them */
    l = load_vocab("vocab/ggml-vocab-phi-3.gguf");
    s = "<|user|>\n Hi<|end|>";
    ids = tokenize(l.v, s, strlen(s), true, true, &n);
    int32_t *plain = NULL;
    int32_t pn;
    plain = tokenize(l.v, "Hi", 2, false, false, &pn);
    assert_int_equal(n, 2 + pn + 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 32010);
    assert_memory_equal(ids + 2, plain, sizeof *plain * (size_t)pn);
    assert_int_equal(ids[n - 1], 32007);
    assert_true(orc_vocab_is_eog(l.v, 32007));
    assert_true(orc_vocab_is_eog(l.v, 32000));
    free(plain);
    free(ids);
    unload(&l);
}

static void test_clean_spaces(void **state)
{
    (void)state;
    loaded l = load_vocab("vocab/ggml-vocab-gpt-2.gguf");
    const char *s = "Hello , world ! It 's a ' quote ' .";
    int32_t n, dl;
    int32_t *ids = tokenize(l.v, s, strlen(s), false, false, &n);
    char *d = detokenize(l.v, ids, n, false, false, &dl);
    assert_string_equal(d, "Hello, world! It's a'quote '.");
    free(d);
    free(ids);
    unload(&l);
}

/* ---- bad vocabularies ---------------------------------------------------------------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} wbuf;

static void put(wbuf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void put_u32(wbuf *b, uint32_t x) { put(b, &x, 4); }
static void put_u64(wbuf *b, uint64_t x) { put(b, &x, 8); }
static void put_str(wbuf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }

/* A metadata-only GGUF v3: "model" (NULL = absent), tokens, optional scores and merges */
static wbuf make_gguf(const char *model, const char **tokens, int n_tok, int n_scores,
                      const char **merges, int n_merges, const char *pre)
{
    wbuf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    uint64_t nkv = (model != NULL) + (tokens != NULL) + (n_scores > 0) + (merges != NULL) +
                   (pre != NULL);
    put_u64(&b, nkv);
    if (model) {
        put_str(&b, "tokenizer.ggml.model");
        put_u32(&b, 8);
        put_str(&b, model);
    }
    if (pre) {
        put_str(&b, "tokenizer.ggml.pre");
        put_u32(&b, 8);
        put_str(&b, pre);
    }
    if (tokens) {
        put_str(&b, "tokenizer.ggml.tokens");
        put_u32(&b, 9);
        put_u32(&b, 8);
        put_u64(&b, (uint64_t)n_tok);
        for (int i = 0; i < n_tok; i++)
            put_str(&b, tokens[i]);
    }
    if (n_scores > 0) {
        put_str(&b, "tokenizer.ggml.scores");
        put_u32(&b, 9);
        put_u32(&b, 6);
        put_u64(&b, (uint64_t)n_scores);
        for (int i = 0; i < n_scores; i++) {
            float f = (float)-i;
            put(&b, &f, 4);
        }
    }
    if (merges) {
        put_str(&b, "tokenizer.ggml.merges");
        put_u32(&b, 9);
        put_u32(&b, 8);
        put_u64(&b, (uint64_t)n_merges);
        for (int i = 0; i < n_merges; i++)
            put_str(&b, merges[i]);
    }
    while (b.n % 32)
        put(&b, "", 1);
    return b;
}

static orc_vocab *load_buf(wbuf *b, char *err, size_t errlen, gguf_ctx **g)
{
    *g = gguf_open_buffer(b->p, b->n, err, errlen);
    assert_non_null(*g);
    return orc_vocab_load(*g, err, errlen);
}

static void test_bad_vocab(void **state)
{
    (void)state;
    const char *toks[] = {"a", "b", "ab", "", "a"};
    char err[256];
    gguf_ctx *g;
    struct {
        const char *model;
        const char **toks;
        int n_tok, n_scores;
        const char **merges;
        int n_merges;
        const char *pre;
        const char *msg;
    } cases[] = {
        {NULL, toks, 3, 3, NULL, 0, NULL, "tokenizer.ggml.model"},
        {"bert", toks, 3, 3, NULL, 0, NULL, "not supported"},
        {"llama", NULL, 0, 0, NULL, 0, NULL, "tokenizer.ggml.tokens"},
        {"llama", toks, 3, 2, NULL, 0, NULL, "scores"},
        {"gpt2", toks, 3, 0, NULL, 0, NULL, "merges"},
        {"gpt2", toks, 3, 0, toks, 1, "deepseek-llm", "not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wbuf b = make_gguf(cases[i].model, cases[i].toks, cases[i].n_tok, cases[i].n_scores,
                           cases[i].merges, cases[i].n_merges, cases[i].pre);
        err[0] = 0;
        orc_vocab *v = load_buf(&b, err, sizeof err, &g);
        assert_null(v);
        if (!strstr(err, cases[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].msg);
        gguf_close(g);
        free(b.p);
    }
    /* a tiny SentencePiece vocabulary with an empty and a duplicate token loads, and the
     * later duplicate wins as in llama.cpp; bytes without a byte token become <unk>=0 */
    wbuf b = make_gguf("llama", toks, 5, 5, NULL, 0, NULL);
    orc_vocab *v = load_buf(&b, err, sizeof err, &g);
    assert_non_null(v);
    assert_string_equal(orc_vocab_text(v, 3), "[EMPTY_3]");
    assert_int_equal(orc_vocab_find(v, "a", 1), 4);
    assert_int_equal(orc_vocab_bos(v), 1);
    int32_t ids[8];
    /* "▁ab": the three bytes of U+2581 have no token and no byte token: unknown */
    assert_int_equal(orc_vocab_tokenize(v, "ab", 2, ids, 8, false, false), 4);
    int32_t want[] = {0, 0, 0, 2};
    assert_memory_equal(ids, want, sizeof want);
    orc_vocab_free(v);
    gguf_close(g);
    free(b.p);
    /* a tiny BPE vocabulary with an unknown pre-tokenizer falls back to the default */
    const char *bt[] = {"a", "b", "ab", "abab"};
    const char *bm[] = {"a b", "ab ab", "nospace"};
    b = make_gguf("gpt2", bt, 4, 0, bm, 3, "no-such-pre");
    v = load_buf(&b, err, sizeof err, &g);
    assert_non_null(v);
    assert_string_equal(orc_vocab_pre_name(v), "no-such-pre");
    assert_int_equal(orc_vocab_tokenize(v, "ababa", 5, ids, 8, false, false), 2);
    assert_int_equal(ids[0], 3);
    assert_int_equal(ids[1], 0);
    orc_vocab_free(v);
    gguf_close(g);
    free(b.p);
    orc_vocab_free(NULL);
}

/* ---- properties ---------------------------------------------------------------------- */

static uint64_t rng_state = 0x1234567887654321ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* random text mixing ASCII, valid multi-byte characters, invalid bytes, surrogates
 * encoded as bytes, overlong forms and NUL */
static size_t random_text(char *out, size_t max, bool valid)
{
    static const char *const parts[] = {"a", "Z", " ", "  ", "\n", "\r\n", "\t", "'s", "'LL",
        "0", "123", "!", "...", "\xC3\xA9", "e\xCC\x81", "\xE4\xBD\xA0", "\xF0\x9F\x98\x81",
        "\xE2\x96\x81", "\xC2\xA0", "\xE3\x80\x80", "\xEF\xB8\x8F", "<|im_start|>", "<s>",
        "\xD9\x85", "\xE0\xB8\x81", "\xE1\x9E\x80"};
    static const char *const bad[] = {"\x80", "\xFF", "\xC3", "\xED\xA0\x80", "\xC0\x80",
        "\xF4\x90\x80\x80", "\xE0\x80", "\xF8\x88\x80\x80\x80", "\x00"};
    size_t n = 0;
    size_t target = rnd() % max;
    while (n < target) {
        const char *p;
        size_t pl;
        if (!valid && rnd() % 6 == 0) {
            int k = (int)(rnd() % (sizeof bad / sizeof bad[0]));
            p = bad[k];
            pl = k == 8 ? 1 : strlen(p);
        } else {
            p = parts[rnd() % (sizeof parts / sizeof parts[0])];
            pl = strlen(p);
        }
        if (n + pl > max)
            break;
        memcpy(out + n, p, pl);
        n += pl;
    }
    return n;
}

static void property_family(const char *rel, int rounds)
{
    loaded l = load_vocab(rel);
    bool spm = orc_vocab_type(l.v) == ORC_VOCAB_SPM;
    char text[600];
    for (int r = 0; r < rounds; r++) {
        bool valid = r % 2 == 0;
        size_t n = random_text(text, sizeof text, valid);
        int32_t cnt;
        int32_t *ids = tokenize(l.v, text, n, r % 3 == 0, r % 5 == 0, &cnt);
        for (int32_t i = 0; i < cnt; i++)
            assert_true(ids[i] >= 0 && ids[i] < orc_vocab_n_tokens(l.v));
        size_t pl;
        char *p = pieces(l.v, ids, cnt, &pl);
        /* lossless: BPE for valid UTF-8; SPM for any bytes except U+2581 (it means space) */
        bool special_text = memmem(text, n, "<|im_start|>", 12) || memmem(text, n, "<s>", 3);
        if (!special_text && (spm ? !memmem(text, n, "\xE2\x96\x81", 3) : valid)) {
            size_t skip_bos = 0;
            if (r % 3 == 0 && orc_vocab_get_add_bos(l.v))
                skip_bos = strlen(orc_vocab_text(l.v, orc_vocab_bos(l.v)));
            size_t skip = 0;
            if (spm && orc_vocab_get_add_space_prefix(l.v) && n > 0) {
                assert_true(pl > skip_bos && p[skip_bos] == ' ');
                skip = 1;
            }
            if (pl != n + skip + skip_bos || memcmp(p + skip + skip_bos, text, n))
                fail_msg("%s round %d: round trip lost bytes", rel, r);
        }
        free(p);
        free(ids);
    }
    /* 1 MB of hostile bytes, and 1 MB of one repeated character, never crash */
    size_t big = 1 << 20;
    char *buf = malloc(big);
    assert_non_null(buf);
    for (size_t i = 0; i < big; i++)
        buf[i] = (char)rnd();
    int32_t need = orc_vocab_tokenize(l.v, buf, big, NULL, 0, true, true);
    assert_true(need < 0);
    memset(buf, 'a', big);
    need = orc_vocab_tokenize(l.v, buf, big, NULL, 0, false, false);
    assert_true(need < 0);
    memset(buf, ' ', big);
    need = orc_vocab_tokenize(l.v, buf, big, NULL, 0, false, false);
    assert_true(need < 0);
    free(buf);
    unload(&l);
}

static void test_properties_spm(void **state)
{
    (void)state;
    property_family("vocab/ggml-vocab-llama-spm.gguf", 300);
}

static void test_properties_bpe(void **state)
{
    (void)state;
    property_family("vocab/ggml-vocab-llama-bpe.gguf", 300);
    property_family("vocab/ggml-vocab-qwen35.gguf", 300);
}

/* invalid UTF-8 in BPE becomes U+FFFD like llama.cpp; surrogates pass through */
static void test_bpe_invalid_utf8(void **state)
{
    (void)state;
    loaded l = load_vocab("vocab/ggml-vocab-qwen2.gguf");
    int32_t a, b;
    int32_t *x = tokenize(l.v, "a\xFF" "b", 3, false, false, &a);
    int32_t *y = tokenize(l.v, "a\xEF\xBF\xBD" "b", 5, false, false, &b);
    assert_int_equal(a, b);
    assert_memory_equal(x, y, sizeof *x * (size_t)a);
    free(x);
    free(y);
    x = tokenize(l.v, "\xC0\x80", 2, false, false, &a); /* overlong NUL is NUL */
    y = tokenize(l.v, "\0", 1, false, false, &b);
    assert_int_equal(a, b);
    assert_memory_equal(x, y, sizeof *x * (size_t)a);
    free(x);
    free(y);
    x = tokenize(l.v, "\xED\xA0\x80", 3, false, false, &a);
    size_t pl;
    char *p = pieces(l.v, x, a, &pl);
    assert_int_equal(pl, 3);
    assert_memory_equal(p, "\xED\xA0\x80", 3);
    free(p);
    free(x);
    unload(&l);
}

/* The fast paths (BPE word cache, SentencePiece segments) give the plain paths' ids on a
 * long mixed text: all test strings joined together, four times. */
static void fast_paths_family(const char *family)
{
    char rel[128];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", family);
    loaded l = load_vocab(rel);
    vectors t = read_vectors("vocab/ggml-vocab-qwen35.gguf");
    size_t total = 0;
    for (size_t i = 0; i < t.n; i++)
        total += t.len[i] + 1;
    char *big = malloc(4 * total + 1);
    size_t m = 0;
    for (int rep = 0; rep < 4; rep++)
        for (size_t i = 0; i < t.n; i++) {
            memcpy(big + m, t.text[i], t.len[i]);
            m += t.len[i];
            big[m++] = rep % 2 ? ' ' : '\n';
        }
    assert_true(m > 4096);
    size_t saved_min = tok_bpe_cache_min_len;
    int32_t n1, n2;
    tok_bpe_cache_min_len = SIZE_MAX;
    tok_spm_split = false;
    int32_t *plain = tokenize(l.v, big, m, true, false, &n1);
    tok_bpe_cache_min_len = 0;
    tok_spm_split = true;
    int32_t *fast = tokenize(l.v, big, m, true, false, &n2);
    tok_bpe_cache_min_len = saved_min;
    assert_int_equal(n1, n2);
    assert_memory_equal(plain, fast, sizeof *plain * (size_t)n1);
    free(plain);
    free(fast);
    free(big);
    free_vectors(&t);
    unload(&l);
}

static void test_fast_paths(void **state)
{
    (void)state;
    fast_paths_family("llama-spm");
    fast_paths_family("phi-3");
    fast_paths_family("llama-bpe");
    fast_paths_family("qwen2");
}

/* One vocabulary used from several threads at once gives the reference ids. */
typedef struct {
    const orc_vocab *v;
    const vectors *t;
    int failures;
} thread_job;

static void *thread_main(void *arg)
{
    thread_job *j = arg;
    for (int rep = 0; rep < 20; rep++) {
        for (size_t i = 0; i < j->t->n; i++) {
            int32_t ids[2048];
            int32_t n = orc_vocab_tokenize(j->v, j->t->text[i], j->t->len[i], ids, 2048, false,
                                           false);
            if (n != j->t->n_ids[i] || memcmp(ids, j->t->ids[i], sizeof *ids * (size_t)n))
                j->failures++;
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    const char *families[] = {"vocab/ggml-vocab-qwen35.gguf", "vocab/ggml-vocab-llama-spm.gguf"};
    for (int f = 0; f < 2; f++) {
        loaded l = load_vocab(families[f]);
        vectors t = read_vectors(families[f]);
        pthread_t th[4];
        thread_job jobs[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (thread_job){l.v, &t, 0};
            assert_int_equal(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            assert_int_equal(jobs[i].failures, 0);
        }
        free_vectors(&t);
        unload(&l);
    }
}

/* ---- differential against llama.cpp itself ---------------------------------------- */

/* With ORC_LLAMA_LIB naming a libllama.so (e.g. from the npm package
 * @node-llama-cpp/linux-x64), random texts and all test strings are tokenized and
 * detokenized by both and must agree. llama_model_params is passed as an opaque blob
 * from llama_model_default_params(); the offset of its vocab_only flag is found by
 * trying candidates in child processes. */
typedef struct { unsigned char b[1024]; } ll_params;
static struct {
    ll_params (*defaults)(void);
    void (*backend_init)(void);
    void (*log_set)(void (*)(int, const char *, void *), void *);
    void *(*load)(const char *, ll_params);
    void (*model_free)(void *);
    void *(*vocab)(void *);
    int32_t (*tokenize)(void *, const char *, int32_t, int32_t *, int32_t, bool, bool);
    int32_t (*detokenize)(void *, const int32_t *, int32_t, char *, int32_t, bool, bool);
    int vocab_only;
} ll;

static void ll_quiet(int level, const char *text, void *user)
{
    (void)level;
    (void)text;
    (void)user;
}

static void *ll_load(const char *path)
{
    ll_params p = ll.defaults();
    p.b[ll.vocab_only] = 1;
    return ll.load(path, p);
}

static bool ll_open(void)
{
    const char *lib = getenv("ORC_LLAMA_LIB");
    if (!lib || !*lib)
        return false;
    void *h = dlopen(lib, RTLD_NOW);
    if (!h)
        fail_msg("ORC_LLAMA_LIB: %s", dlerror());
    *(void **)&ll.defaults = dlsym(h, "llama_model_default_params");
    *(void **)&ll.backend_init = dlsym(h, "llama_backend_init");
    *(void **)&ll.log_set = dlsym(h, "llama_log_set");
    *(void **)&ll.load = dlsym(h, "llama_model_load_from_file");
    *(void **)&ll.model_free = dlsym(h, "llama_model_free");
    *(void **)&ll.vocab = dlsym(h, "llama_model_get_vocab");
    *(void **)&ll.tokenize = dlsym(h, "llama_tokenize");
    *(void **)&ll.detokenize = dlsym(h, "llama_detokenize");
    if (!ll.defaults || !ll.backend_init || !ll.log_set || !ll.load || !ll.model_free ||
        !ll.vocab || !ll.tokenize || !ll.detokenize)
        fail_msg("ORC_LLAMA_LIB lacks the llama_* functions this test needs");
    ll.log_set(ll_quiet, NULL);
    ll.backend_init();
    ll_params d = ll.defaults();
    const char *probe = tu_shared("vocab/ggml-vocab-gpt-2.gguf");
    int order[256], n = 0;
    int likely[] = {72, 64, 56, 80, 48};
    for (int i = 0; i < 5; i++)
        order[n++] = likely[i];
    for (int off = 16; off < 256; off++)
        if (off != 72 && off != 64 && off != 56 && off != 80 && off != 48)
            order[n++] = off;
    for (int i = 0; i < n; i++) {
        if (d.b[order[i]] != 0)
            continue;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            ll.vocab_only = order[i];
            void *m = ll_load(probe);
            _exit(m ? 0 : 1);
        }
        int st;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            ll.vocab_only = order[i];
            return true;
        }
    }
    fail_msg("ORC_LLAMA_LIB: cannot find llama_model_params.vocab_only");
    return false;
}

static void differential_family(const char *family, int rounds)
{
    char rel[128];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", family);
    loaded l = load_vocab(rel);
    void *m = ll_load(tu_shared(rel));
    assert_non_null(m);
    void *lv = ll.vocab(m);
    vectors t = read_vectors(rel);
    enum { CAP = 8192 };
    int32_t *a = malloc(sizeof *a * CAP), *b = malloc(sizeof *b * CAP);
    char *da = malloc(CAP * 4), *db = malloc(CAP * 4), text[600];
    int bad = 0;
    for (int r = 0; r < rounds + (int)t.n; r++) {
        const char *s = text;
        size_t n;
        if (r < (int)t.n) {
            s = t.text[r];
            n = t.len[r];
        } else {
            n = random_text(text, sizeof text, r % 2 == 0);
            /* llama.cpp aborts (uncaught std::invalid_argument) on code points past
             * U+10FFFF in BPE vocabularies; Orchard reads them as U+FFFD */
            if (memmem(text, n, "\xF4\x90\x80\x80", 4))
                continue;
        }
        bool add = r & 1, parse = r & 2, rm = r & 4, unparse = r & 8;
        int32_t na = ll.tokenize(lv, s, (int32_t)n, a, CAP, add, parse);
        int32_t nb = orc_vocab_tokenize(l.v, s, n, b, CAP, add, parse);
        if (na != nb || memcmp(a, b, sizeof *a * (size_t)(na > 0 ? na : 0))) {
            if (bad++ < 3) {
                fprintf(stderr, "%s: round %d differs from llama.cpp\n", family, r);
                print_ids("llama.cpp", a, na);
                print_ids("orchard  ", b, nb);
            }
            continue;
        }
        int32_t la = ll.detokenize(lv, a, na, da, CAP * 4, rm, unparse);
        int32_t lb = orc_vocab_detokenize(l.v, b, nb, db, CAP * 4, rm, unparse);
        if (la != lb || memcmp(da, db, (size_t)(la > 0 ? la : 0))) {
            if (bad++ < 3)
                fprintf(stderr, "%s: round %d detokenizes differently\n", family, r);
        }
    }
    fprintf(stderr, "[ llama.cpp ] %-10s %d texts, %d differences\n", family, rounds + (int)t.n,
            bad);
    assert_int_equal(bad, 0);
    free(a);
    free(b);
    free(da);
    free(db);
    free_vectors(&t);
    ll.model_free(m);
    unload(&l);
}

static void test_llama_cpp_differential(void **state)
{
    (void)state;
    if (!ll_open()) {
        fprintf(stderr, "[ SKIPPED ] set ORC_LLAMA_LIB=/path/to/libllama.so to compare with "
                        "llama.cpp\n");
        skip();
    }
    const char *families[] = {"llama-spm", "phi-3", "llama-bpe", "qwen2", "qwen35", "gpt-2"};
    for (int i = 0; i < 6; i++)
        differential_family(families[i], 2000);
}

static void test_load_speed(void **state)
{
    (void)state;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    loaded l = load_vocab("vocab/ggml-vocab-llama-bpe.gguf");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    fprintf(stderr, "[ load ] llama-bpe (128K tokens, 280K merges): %.1f ms\n", ms);
    unload(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_spm),
        cmocka_unit_test(test_phi3),
        cmocka_unit_test(test_llama_bpe),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_qwen35),
        cmocka_unit_test(test_gpt2),
        cmocka_unit_test(test_stories_prompts),
        cmocka_unit_test(test_buffer_sizes),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_clean_spaces),
        cmocka_unit_test(test_bad_vocab),
        cmocka_unit_test(test_bpe_invalid_utf8),
        cmocka_unit_test(test_properties_spm),
        cmocka_unit_test(test_properties_bpe),
        cmocka_unit_test(test_fast_paths),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_llama_cpp_differential),
        cmocka_unit_test(test_load_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
