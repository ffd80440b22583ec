/* tokenizer.c - the vocabulary: built from tokenizer.ggml.* metadata, it owns the token
 * texts, scores and attributes, the special-token rules (BOS/EOS/EOG, parsing special
 * text) and detokenizing; tokenizer_spm.c and tokenizer_bpe.c do the merges. Behaviour
 * follows llama.cpp's llama-vocab.cpp, the reference implementation for GGUF. */
#include "tokenizer_int.h"

#include "common.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Scratch buffers and hashing ------------------------------------------------ */

bool tok_buf_reserve(tok_buf *b, size_t bytes)
{
    if (bytes <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < bytes) {
        if (cap > SIZE_MAX / 2)
            return false;
        cap *= 2;
    }
    void *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static inline uint64_t mum(uint64_t a, uint64_t b)
{
    __uint128_t m = (__uint128_t)a * b;
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}

/* A wyhash-style hash: short strings are read with overlapping loads. */
uint64_t tok_hash(const char *p, size_t n)
{
    const uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull,
                   k2 = 0x8ebc6af09c88c6e3ull;
    uint64_t a, b, seed = k0 ^ n;
    if (n <= 16) {
        if (n >= 8) {
            memcpy(&a, p, 8);
            memcpy(&b, p + n - 8, 8);
        } else if (n >= 4) {
            uint32_t x, y;
            memcpy(&x, p, 4);
            memcpy(&y, p + n - 4, 4);
            a = x;
            b = y;
        } else if (n > 0) {
            a = (uint64_t)(uint8_t)p[0] << 16 | (uint64_t)(uint8_t)p[n >> 1] << 8 |
                (uint8_t)p[n - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        size_t i = n;
        while (i > 16) {
            uint64_t x, y;
            memcpy(&x, p, 8);
            memcpy(&y, p + 8, 8);
            seed = mum(x ^ k1, y ^ seed);
            p += 16;
            i -= 16;
        }
        memcpy(&a, p + i - 16, 8);
        memcpy(&b, p + i - 8, 8);
    }
    return mum(k1 ^ n, mum(a ^ k1, b ^ seed) ^ k2);
}

/* ---- String table ---------------------------------------------------------------- */

static void strtab_free(tok_strtab *t)
{
    free(t->blob);
    free(t->off);
    free(t->len);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static bool strtab_init(tok_strtab *t, int32_t n_hint, size_t blob_hint)
{
    memset(t, 0, sizeof *t);
    uint32_t cap = 16;
    while (cap < (uint64_t)n_hint * 2 && cap < (1u << 30))
        cap <<= 1;
    t->slots = malloc(sizeof *t->slots * cap);
    t->cap = n_hint > 16 ? n_hint : 16;
    t->off = malloc(sizeof *t->off * (size_t)t->cap);
    t->len = malloc(sizeof *t->len * (size_t)t->cap);
    t->blob_cap = blob_hint > 64 ? blob_hint : 64;
    t->blob = malloc(t->blob_cap);
    if (!t->slots || !t->off || !t->len || !t->blob)
        return false;
    for (uint32_t i = 0; i < cap; i++)
        t->slots[i].idx = -1;
    t->mask = cap - 1;
    return true;
}

int32_t tok_strtab_find_h(const tok_strtab *t, const char *p, size_t n, uint32_t h)
{
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const struct tok_slot *s = &t->slots[i];
        if (s->idx < 0)
            return -1;
        if (s->hash == h && s->len == n && tok_eq(t->blob + s->off, p, n))
            return s->idx;
    }
}

int32_t tok_strtab_find(const tok_strtab *t, const char *p, size_t n)
{
    return tok_strtab_find_h(t, p, n, (uint32_t)tok_hash(p, n));
}

void tok_strtab_prefetch(const tok_strtab *t, uint32_t h)
{
    __builtin_prefetch(&t->slots[h & t->mask]);
}

static bool strtab_grow_slots(tok_strtab *t)
{
    uint32_t cap = (t->mask + 1) * 2;
    if (cap == 0 || cap > (1u << 31))
        return false;
    struct tok_slot *ns = malloc(sizeof *ns * cap);
    if (!ns)
        return false;
    for (uint32_t i = 0; i < cap; i++)
        ns[i].idx = -1;
    for (uint32_t i = 0; i <= t->mask; i++) {
        if (t->slots[i].idx < 0)
            continue;
        uint32_t j = t->slots[i].hash & (cap - 1);
        while (ns[j].idx >= 0)
            j = (j + 1) & (cap - 1);
        ns[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = ns;
    t->mask = cap - 1;
    return true;
}

/* Appends a string (without indexing it). Returns its index or -1. */
static int32_t strtab_append(tok_strtab *t, const char *p, size_t n)
{
    if (n > UINT32_MAX - 1 || t->n == INT32_MAX)
        return -1;
    if (t->n == t->cap) {
        int32_t cap = t->cap > INT32_MAX / 2 ? INT32_MAX : t->cap * 2;
        uint32_t *o = realloc(t->off, sizeof *o * (size_t)cap);
        if (!o)
            return -1;
        t->off = o;
        uint32_t *l = realloc(t->len, sizeof *l * (size_t)cap);
        if (!l)
            return -1;
        t->len = l;
        t->cap = cap;
    }
    if (t->blob_len + n + 1 > t->blob_cap) {
        size_t cap = t->blob_cap;
        while (cap < t->blob_len + n + 1)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -1;
        char *b = realloc(t->blob, cap);
        if (!b)
            return -1;
        t->blob = b;
        t->blob_cap = cap;
    }
    memcpy(t->blob + t->blob_len, p, n);
    t->blob[t->blob_len + n] = 0;
    t->off[t->n] = (uint32_t)t->blob_len;
    t->len[t->n] = (uint32_t)n;
    t->blob_len += n + 1;
    return t->n++;
}

/* Points the map entry for string idx (hash h) at idx, replacing an equal string's. */
static bool strtab_index_h(tok_strtab *t, int32_t idx, uint32_t h)
{
    if ((uint64_t)(t->used + 1) * 4 > (uint64_t)(t->mask + 1) * 3 && !strtab_grow_slots(t))
        return false;
    const char *p = t->blob + t->off[idx];
    size_t n = t->len[idx];
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        struct tok_slot *s = &t->slots[i];
        if (s->idx < 0) {
            *s = (struct tok_slot){h, idx, t->off[idx], (uint32_t)n};
            t->used++;
            return true;
        }
        if (s->hash == h && s->len == n && !memcmp(t->blob + s->off, p, n)) {
            *s = (struct tok_slot){h, idx, t->off[idx], (uint32_t)n};
            return true;
        }
    }
}

int32_t tok_strtab_intern_h(tok_strtab *t, const char *p, size_t n, uint32_t h)
{
    int32_t i = tok_strtab_find_h(t, p, n, h);
    if (i >= 0)
        return i;
    i = strtab_append(t, p, n);
    if (i < 0 || !strtab_index_h(t, i, h))
        return -1;
    return i;
}

int32_t tok_strtab_intern(tok_strtab *t, const char *p, size_t n)
{
    return tok_strtab_intern_h(t, p, n, (uint32_t)tok_hash(p, n));
}

/* ---- Loading ---------------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...) ORC_PRINTF(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int32_t find_text(const orc_vocab *v, const char *s)
{
    return tok_find(v, s, strlen(s));
}

static bool text_is(const orc_vocab *v, int32_t id, const char *s)
{
    size_t n = strlen(s);
    return v->strs.len[id] == n && !memcmp(tok_str(&v->strs, id), s, n);
}

/* Reads an optional token id key; ids outside the vocabulary keep the default. */
static void read_id(const gguf_ctx *g, const orc_vocab *v, const char *key, int32_t *id)
{
    int64_t x;
    if (!gguf_get_i64(g, key, &x))
        return;
    if (x < 0 || x >= v->n_tokens) {
        orc_log(ORC_LOG_INFO, "tokenizer: %s = %lld is not a token id, using %d", key,
                (long long)x, *id);
        return;
    }
    *id = (int32_t)x;
}

/* Marks tokens found by their text as control (llama.cpp's auto-detection). */
static void force_control(orc_vocab *v, int32_t id)
{
    if (!(v->attr[id] & ORC_TATTR_CONTROL))
        v->attr[id] |= ORC_TATTR_CONTROL;
}

static void detect_by_text(orc_vocab *v)
{
    static const char *const eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>",
        "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
        "<end_of_utterance>", NULL};
    static const char *const eom_texts[] = {"<|eom_id|>", NULL};
    static const char *const pre_texts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
        "<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
    static const char *const suf_texts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
        "<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
    static const char *const mid_texts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
        "<MID>", "<|code_middle|>", "<|middle|>", NULL};
    static const char *const pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
        "[PAD]", NULL};
    static const char *const rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
        "<REPO>", "<reponame>", NULL};
    static const char *const sep_texts[] = {"<|file_sep|>", NULL};
    static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>",
        "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>",
        "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", NULL};
    struct { int32_t *id; const char *const *texts; } rules[] = {
        {&v->eot, eot_texts}, {&v->eom, eom_texts}, {&v->fim_pre, pre_texts},
        {&v->fim_suf, suf_texts}, {&v->fim_mid, mid_texts}, {&v->fim_pad, pad_texts},
        {&v->fim_rep, rep_texts}, {&v->fim_sep, sep_texts},
    };
    /* llama.cpp takes whichever match its hash map yields first; here the earlier text
     * in each list wins, so "<|im_end|>" is preferred over "<|endoftext|>" */
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        for (const char *const *t = rules[r].texts; *rules[r].id < 0 && *t; t++) {
            int32_t id = find_text(v, *t);
            if (id >= 0) {
                *rules[r].id = id;
                force_control(v, id);
            }
        }
    }
    /* control tokens named "unused" are unused */
    for (int32_t id = 0; id < v->n_tokens; id++)
        if ((v->attr[id] & ORC_TATTR_CONTROL) && strstr(tok_str(&v->strs, id), "unused"))
            v->attr[id] |= ORC_TATTR_UNUSED;

    /* end-of-generation set */
    int32_t fims[] = {v->fim_pad, v->fim_rep, v->fim_sep};
    for (int i = 0; i < 3; i++)
        if (fims[i] >= 0)
            v->attr[fims[i]] |= TOK_ATTR_EOG;
    for (const char *const *t = eog_texts; *t; t++) {
        int32_t id = find_text(v, *t);
        if (id >= 0) {
            v->attr[id] |= TOK_ATTR_EOG;
            force_control(v, id);
        }
    }
    /* gpt-oss: always render these */
    static const char *const render_texts[] = {"<|channel|>", "<|message|>", "<|start|>",
        "<|constrain|>", NULL};
    for (const char *const *t = render_texts; *t; t++) {
        int32_t id = find_text(v, *t);
        if (id >= 0)
            v->attr[id] = ORC_TATTR_USER_DEFINED | (v->attr[id] & TOK_ATTR_EOG);
    }
    int32_t musts[] = {v->eos, v->eot, v->eom};
    for (int i = 0; i < 3; i++)
        if (musts[i] >= 0)
            v->attr[musts[i]] |= TOK_ATTR_EOG;

    /* o200k_harmony / solar-open: "<|end|>" is not end-of-generation there */
    bool has_return = false, has_call = false, has_flush = false;
    int32_t end_id = -1, tool_resp = -1, s_id = -1;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        if (!(v->attr[id] & TOK_ATTR_EOG))
            continue;
        if (text_is(v, id, "<|return|>"))
            has_return = true;
        else if (text_is(v, id, "<|call|>") || text_is(v, id, "<|calls|>"))
            has_call = true;
        else if (text_is(v, id, "<|flush|>"))
            has_flush = true;
        else if (text_is(v, id, "<|end|>"))
            end_id = id;
        else if (text_is(v, id, "<|tool_response>"))
            tool_resp = id;
        else if (text_is(v, id, "</s>"))
            s_id = id;
    }
    if (end_id >= 0 && ((has_return && has_call) || (has_call && has_flush)))
        v->attr[end_id] = ORC_TATTR_USER_DEFINED;
    if (tool_resp >= 0 && s_id >= 0)
        v->attr[s_id] = ORC_TATTR_NORMAL;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const orc_vocab *v = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = v->strs.len[x], ly = v->strs.len[y];
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static bool build_special_cache(orc_vocab *v)
{
    int32_t n = 0;
    for (int32_t id = 0; id < v->n_tokens; id++)
        if (v->attr[id] & (ORC_TATTR_CONTROL | ORC_TATTR_USER_DEFINED | ORC_TATTR_UNKNOWN))
            n++;
    v->n_special = n;
    if (!n)
        return true;
    v->special = malloc(sizeof *v->special * (size_t)n);
    v->special_bytes = calloc((size_t)n, sizeof *v->special_bytes);
    if (!v->special || !v->special_bytes)
        return false;
    n = 0;
    for (int32_t id = 0; id < v->n_tokens; id++)
        if (v->attr[id] & (ORC_TATTR_CONTROL | ORC_TATTR_USER_DEFINED | ORC_TATTR_UNKNOWN))
            v->special[n++] = id;
    qsort_r(v->special, (size_t)n, sizeof *v->special, cmp_special, v);
    v->special_user = malloc(sizeof *v->special_user * (size_t)n);
    if (!v->special_user)
        return false;
    for (int32_t i = 0; i < n; i++)
        if (!(v->attr[v->special[i]] & (ORC_TATTR_CONTROL | ORC_TATTR_UNKNOWN)))
            v->special_user[v->n_special_user++] = i;
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *s = (const uint8_t *)tok_str(&v->strs, v->special[i]);
        for (uint32_t k = 0; k < v->strs.len[v->special[i]]; k++)
            v->special_bytes[i][s[k] >> 6] |= 1ull << (s[k] & 63);
    }
    for (int k = 0; k < 4; k++) {
        v->special_common[0][k] = v->special_common[1][k] = ~0ull;
        for (int32_t i = 0; i < v->n_special_user; i++)
            v->special_common[0][k] &= v->special_bytes[v->special_user[i]][k];
        for (int32_t i = 0; i < n; i++)
            v->special_common[1][k] &= v->special_bytes[i][k];
    }
    return true;
}

/* Phi-3: whitespace after special tokens is dropped (llama.cpp sets it by model name). */
static void set_strip_attrs(orc_vocab *v, const gguf_ctx *g)
{
    gguf_str name;
    if (!gguf_get_str(g, "general.name", &name))
        return;
    char low[256];
    size_t n = name.n < sizeof low - 1 ? (size_t)name.n : sizeof low - 1;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)name.p[i]);
    low[n] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3"))
        return;
    for (int32_t i = 0; i < v->n_special; i++)
        v->attr[v->special[i]] |= ORC_TATTR_RSTRIP;
    int32_t id = find_text(v, "</s>");
    if (id >= 0)
        v->attr[id] |= ORC_TATTR_RSTRIP;
    const char *no[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (int i = 0; i < 3; i++)
        if ((id = find_text(v, no[i])) >= 0)
            v->attr[id] &= ~(uint32_t)ORC_TATTR_RSTRIP;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The byte of a "<0xNN>" token (llama.cpp reads characters 3 and 4 as hex). */
static int token_byte(const orc_vocab *v, int32_t id)
{
    const char *s = tok_str(&v->strs, id);
    if (v->strs.len[id] < 5)
        return 0;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    if (hi < 0)
        return 0;
    return lo < 0 ? hi : hi * 16 + lo;
}

/* The piece of every token with special = true, computed once. */
static bool build_pieces(orc_vocab *v)
{
    size_t total = 0;
    for (int32_t id = 0; id < v->n_tokens; id++)
        total += v->strs.len[id] + 1;
    if (total > UINT32_MAX)
        return false;
    v->piece_blob = malloc(total ? total : 1);
    v->piece_off = malloc(sizeof *v->piece_off * (size_t)v->n_tokens);
    v->piece_len = malloc(sizeof *v->piece_len * (size_t)v->n_tokens);
    if (!v->piece_blob || !v->piece_off || !v->piece_len)
        return false;
    size_t pos = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        const char *t = tok_str(&v->strs, id);
        size_t n = v->strs.len[id];
        uint32_t a = v->attr[id];
        char *o = v->piece_blob + pos;
        size_t m = 0;
        if (a & (ORC_TATTR_UNKNOWN | ORC_TATTR_CONTROL | ORC_TATTR_USER_DEFINED)) {
            memcpy(o, t, n);
            m = n;
        } else if (a & ORC_TATTR_NORMAL) {
            if (v->type == ORC_VOCAB_SPM) {
                for (size_t i = 0; i < n; i++) {
                    if (i + 2 < n && (uint8_t)t[i] == 0xE2 && (uint8_t)t[i + 1] == 0x96 &&
                        (uint8_t)t[i + 2] == 0x81) {
                        o[m++] = ' ';
                        i += 2;
                    } else {
                        o[m++] = t[i];
                    }
                }
            } else {
                m = tok_bpe_decode_text(v, t, n, o);
            }
        } else if (a & ORC_TATTR_BYTE) {
            o[0] = (char)token_byte(v, id);
            m = 1;
        }
        v->piece_off[id] = (uint32_t)pos;
        v->piece_len[id] = (uint32_t)m;
        pos += m;
    }
    return true;
}

orc_vocab *orc_vocab_load(const gguf_ctx *g, char *err, size_t errlen)
{
    orc_vocab *v = calloc(1, sizeof *v);
    if (!v) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    v->bos = v->eos = v->eot = v->eom = v->unk = v->pad = v->sep = v->nl = -1;
    v->fim_pre = v->fim_suf = v->fim_mid = v->fim_pad = v->fim_rep = v->fim_sep = -1;

    gguf_str model, pre = {0};
    if (!gguf_get_str(g, "tokenizer.ggml.model", &model)) {
        set_err(err, errlen, "tokenizer.ggml.model is missing");
        goto fail;
    }
    bool has_pre = gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (gguf_str_eq(model, "llama")) {
        v->type = ORC_VOCAB_SPM;
        strcpy(v->model_name, "llama");
        v->bos = 1;
        v->eos = 2;
        v->unk = 0;
        v->add_space_prefix = true;
        v->add_bos = true;
    } else if (gguf_str_eq(model, "gpt2")) {
        v->type = ORC_VOCAB_BPE;
        strcpy(v->model_name, "gpt2");
        v->bos = 11;
        v->eos = 11;
        v->clean_spaces = true;
    } else {
        set_err(err, errlen, "tokenizer.ggml.model '%.*s' is not supported (only llama, gpt2)",
                (int)(model.n > 64 ? 64 : model.n), model.p);
        goto fail;
    }
    size_t pn = has_pre && pre.n > 0 ? (size_t)pre.n : 7;
    v->pre_name = malloc(pn + 1);
    if (!v->pre_name) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(v->pre_name, has_pre && pre.n > 0 ? pre.p : "default", pn);
    v->pre_name[pn] = 0;

    const gguf_value *toks = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_T_STRING);
    if (!toks) {
        set_err(err, errlen, "tokenizer.ggml.tokens is missing or not an array of strings");
        goto fail;
    }
    if (toks->v.arr.n == 0 || toks->v.arr.n > (1u << 30)) {
        set_err(err, errlen, "tokenizer.ggml.tokens has %llu entries",
                (unsigned long long)toks->v.arr.n);
        goto fail;
    }
    v->n_tokens = (int32_t)toks->v.arr.n;
    const gguf_value *scores = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_T_COUNT);
    if (scores && (scores->v.arr.elem != GGUF_T_FLOAT32 || scores->v.arr.n < toks->v.arr.n)) {
        set_err(err, errlen, "tokenizer.ggml.scores must be %d f32 values", v->n_tokens);
        goto fail;
    }
    const gguf_value *types = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_T_COUNT);
    if (types && (gguf_vtype_size(types->v.arr.elem) == 0 || types->v.arr.elem == GGUF_T_FLOAT32 ||
                  types->v.arr.elem == GGUF_T_FLOAT64 || types->v.arr.elem == GGUF_T_BOOL ||
                  types->v.arr.n < toks->v.arr.n)) {
        set_err(err, errlen, "tokenizer.ggml.token_type must be %d integers", v->n_tokens);
        goto fail;
    }

    size_t blob = 0;
    for (int32_t i = 0; i < v->n_tokens; i++)
        blob += toks->v.arr.strs[i].n + 16;
    if (!strtab_init(&v->strs, v->n_tokens, blob + 1)) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    v->scores = malloc(sizeof *v->scores * (size_t)v->n_tokens);
    v->attr = malloc(sizeof *v->attr * (size_t)v->n_tokens);
    if (!v->scores || !v->attr) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    /* in batches: hash a few texts and prefetch their slots before inserting them */
    enum { BATCH = 16 };
    for (int32_t base = 0; base < v->n_tokens; base += BATCH) {
        int32_t end = base + BATCH < v->n_tokens ? base + BATCH : v->n_tokens;
        uint32_t hs[BATCH];
        char tmp[BATCH][32];
        const char *ps[BATCH];
        size_t ns[BATCH];
        for (int32_t i = base; i < end; i++) {
            gguf_str s = toks->v.arr.strs[i];
            ps[i - base] = s.p;
            ns[i - base] = (size_t)s.n;
            if (s.n == 0) { /* llama.cpp renames empty tokens */
                ns[i - base] = (size_t)snprintf(tmp[i - base], 32, "[EMPTY_%d]", i);
                ps[i - base] = tmp[i - base];
            }
            hs[i - base] = (uint32_t)tok_hash(ps[i - base], ns[i - base]);
            tok_strtab_prefetch(&v->strs, hs[i - base]);
        }
        for (int32_t i = base; i < end; i++) {
            size_t n = ns[i - base];
            if (strtab_append(&v->strs, ps[i - base], n) != i ||
                !strtab_index_h(&v->strs, i, hs[i - base])) {
                set_err(err, errlen, "out of memory");
                goto fail;
            }
            if (n > v->max_token_len)
                v->max_token_len = (uint32_t)n;
            v->scores[i] = scores ? gguf_arr_f32(scores, (uint64_t)i) : 0.0f;
            uint32_t a = ORC_TATTR_NORMAL;
            if (types) {
                switch (gguf_arr_i64(types, (uint64_t)i)) {
                case 1: a = ORC_TATTR_NORMAL; break;
                case 2: a = ORC_TATTR_UNKNOWN; break;
                case 3: a = ORC_TATTR_CONTROL; break;
                case 4: a = ORC_TATTR_USER_DEFINED; break;
                case 5: a = ORC_TATTR_UNUSED; break;
                case 6: a = ORC_TATTR_BYTE; break;
                default: a = 0; break;
                }
            }
            v->attr[i] = a;
        }
    }

    if (v->type == ORC_VOCAB_BPE) {
        if (!tok_bpe_setup(v, g, v->pre_name, err, errlen))
            goto fail;
    }
    bool b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b))
        v->add_space_prefix = b;

    read_id(g, v, "tokenizer.ggml.bos_token_id", &v->bos);
    read_id(g, v, "tokenizer.ggml.eos_token_id", &v->eos);
    read_id(g, v, "tokenizer.ggml.eot_token_id", &v->eot);
    read_id(g, v, "tokenizer.ggml.eom_token_id", &v->eom);
    read_id(g, v, "tokenizer.ggml.unknown_token_id", &v->unk);
    read_id(g, v, "tokenizer.ggml.seperator_token_id", &v->sep);
    read_id(g, v, "tokenizer.ggml.padding_token_id", &v->pad);
    read_id(g, v, "tokenizer.ggml.fim_pre_token_id", &v->fim_pre);
    read_id(g, v, "tokenizer.ggml.fim_suf_token_id", &v->fim_suf);
    read_id(g, v, "tokenizer.ggml.fim_mid_token_id", &v->fim_mid);
    read_id(g, v, "tokenizer.ggml.fim_pad_token_id", &v->fim_pad);
    read_id(g, v, "tokenizer.ggml.fim_rep_token_id", &v->fim_rep);
    read_id(g, v, "tokenizer.ggml.fim_sep_token_id", &v->fim_sep);
    /* defaults may not exist in a small vocabulary */
    int32_t *ids[] = {&v->bos, &v->eos, &v->unk};
    for (int i = 0; i < 3; i++)
        if (*ids[i] >= v->n_tokens)
            *ids[i] = -1;
    if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b))
        v->add_bos = b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b))
        v->add_eos = b;

    detect_by_text(v);
    if (!build_special_cache(v) || !build_pieces(v)) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    set_strip_attrs(v, g);

    /* SentencePiece byte fallback: "<0xNN>", else the byte itself, else unknown */
    for (int c = 0; c < 256; c++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", c);
        int32_t id = find_text(v, hex);
        if (id < 0) {
            char one = (char)c;
            id = tok_find(v, &one, 1);
        }
        v->byte_tok[c] = id >= 0 ? id : v->unk;
    }
    if (v->type == ORC_VOCAB_SPM) {
        v->spm_pairs = calloc(1024, sizeof *v->spm_pairs);
        if (!v->spm_pairs) {
            set_err(err, errlen, "out of memory");
            goto fail;
        }
        for (int32_t id = 0; id < v->n_tokens; id++) {
            const uint8_t *t = (const uint8_t *)tok_str(&v->strs, id);
            for (uint32_t k = 0; k + 1 < v->strs.len[id]; k++) {
                uint32_t pr = (uint32_t)t[k] << 8 | t[k + 1];
                v->spm_pairs[pr >> 6] |= 1ull << (pr & 63);
            }
        }
        v->nl = v->byte_tok['\n'];
    } else {
        int32_t nl[4];
        int32_t n = orc_vocab_tokenize(v, "\n", 1, nl, 4, false, false);
        v->nl = n > 0 ? nl[0] : v->pad;
    }
    return v;

fail:
    orc_vocab_free(v);
    return NULL;
}

void orc_vocab_free(orc_vocab *v)
{
    if (!v)
        return;
    tok_bpe_free(v);
    strtab_free(&v->strs);
    free(v->pre_name);
    free(v->scores);
    free(v->attr);
    free(v->piece_blob);
    free(v->piece_off);
    free(v->piece_len);
    free(v->special);
    free(v->special_bytes);
    free(v->special_user);
    free(v->spm_pairs);
    free(v);
}

/* ---- Accessors -------------------------------------------------------------------- */

int32_t orc_vocab_n_tokens(const orc_vocab *v) { return v ? v->n_tokens : 0; }

static bool in_range(const orc_vocab *v, int32_t id)
{
    return v && id >= 0 && id < v->n_tokens;
}

const char *orc_vocab_text(const orc_vocab *v, int32_t id)
{
    return in_range(v, id) ? tok_str(&v->strs, id) : NULL;
}

float orc_vocab_score(const orc_vocab *v, int32_t id)
{
    return in_range(v, id) ? v->scores[id] : 0.0f;
}

uint32_t orc_vocab_attr(const orc_vocab *v, int32_t id)
{
    return in_range(v, id) ? v->attr[id] & TOK_ATTR_PUBLIC_MASK : 0;
}

const char *orc_vocab_model_name(const orc_vocab *v) { return v->model_name; }
const char *orc_vocab_pre_name(const orc_vocab *v) { return v->pre_name; }
int32_t orc_vocab_type(const orc_vocab *v) { return v->type; }
int32_t orc_vocab_bos(const orc_vocab *v) { return v->bos; }
int32_t orc_vocab_eos(const orc_vocab *v) { return v->eos; }
int32_t orc_vocab_eot(const orc_vocab *v) { return v->eot; }
int32_t orc_vocab_eom(const orc_vocab *v) { return v->eom; }
int32_t orc_vocab_pad(const orc_vocab *v) { return v->pad; }
int32_t orc_vocab_unk(const orc_vocab *v) { return v->unk; }
int32_t orc_vocab_nl(const orc_vocab *v) { return v->nl; }
bool orc_vocab_get_add_bos(const orc_vocab *v) { return v->add_bos; }
bool orc_vocab_get_add_eos(const orc_vocab *v) { return v->add_eos; }
bool orc_vocab_get_add_space_prefix(const orc_vocab *v) { return v->add_space_prefix; }

bool orc_vocab_is_eog(const orc_vocab *v, int32_t id)
{
    return in_range(v, id) && (v->attr[id] & TOK_ATTR_EOG);
}

int32_t orc_vocab_find(const orc_vocab *v, const char *text, size_t len)
{
    return v && text ? tok_find(v, text, len) : -1;
}

/* ---- Tokenizing ------------------------------------------------------------------- */

typedef struct {
    int32_t tok;   /* -1: raw text */
    size_t off, len;
} fragment;

static inline bool is_space_byte(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Text summaries that rule special tokens out cheaply: the set of bytes present, and for
 * long texts the byte pairs and (hashed) 4-byte sequences present. */
typedef struct {
    uint64_t bytes[4];
    uint64_t *pairs;   /* 65536 bits, or NULL */
    uint64_t *quads;   /* 1 << QUAD_BITS bits, or NULL */
} text_filter;

enum { QUAD_BITS = 19 };

static inline uint32_t quad_hash(const uint8_t *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return (w * 0x9E3779B1u) >> (32 - QUAD_BITS);
}

static inline bool bit_has(const uint64_t *b, uint32_t i)
{
    return (b[i >> 6] >> (i & 63)) & 1;
}

/* Could special token i occur in the text? */
static bool may_occur(const orc_vocab *v, int32_t i, const text_filter *tf)
{
    for (int k = 0; k < 4; k++)
        if (v->special_bytes[i][k] & ~tf->bytes[k])
            return false;
    if (!tf->pairs)
        return true;
    const uint8_t *s = (const uint8_t *)tok_str(&v->strs, v->special[i]);
    uint32_t n = v->strs.len[v->special[i]];
    for (uint32_t k = 0; k + 1 < n; k++)
        if (!bit_has(tf->pairs, (uint32_t)s[k] << 8 | s[k + 1]))
            return false;
    for (uint32_t k = 0; k + 3 < n; k++)
        if (!bit_has(tf->quads, quad_hash(s + k)))
            return false;
    return true;
}

/* Splits text into raw fragments and special-token fragments (llama.cpp's
 * tokenizer_st_partition: longest tokens first, each splitting what is still raw). */
static bool partition(const orc_vocab *v, const char *text, size_t len, bool parse_special,
                      tok_scratch *sc, fragment **out, size_t *n_out)
{
    tok_buf *fa = &sc->fa, *fb = &sc->fb;
    if (!tok_buf_reserve(fa, sizeof(fragment) * 4))
        return false;
    fragment *cur = fa->p;
    size_t n = 0;
    if (len > 0)
        cur[n++] = (fragment){-1, 0, len};
    int32_t n_cand = parse_special ? v->n_special : v->n_special_user;
    if (n == 0 || n_cand == 0) {
        *out = cur;
        *n_out = n;
        return true;
    }
    text_filter tf = {{0}, NULL, NULL};
    const uint8_t *u = (const uint8_t *)text;
    for (size_t i = 0; i < len; i++)
        tf.bytes[u[i] >> 6] |= 1ull << (u[i] & 63);
    /* bytes that every candidate contains but the text lacks rule them all out */
    const uint64_t *common = v->special_common[parse_special];
    for (int k = 0; k < 4; k++) {
        if (common[k] & ~tf.bytes[k]) {
            *out = cur;
            *n_out = n;
            return true;
        }
    }
    uint64_t *bits = NULL;
    if (len > 4096) {
        bits = calloc(1024 + ((size_t)1 << QUAD_BITS) / 64, sizeof *bits);
        if (!bits)
            return false;
        tf.pairs = bits;
        tf.quads = bits + 1024;
        for (size_t i = 0; i + 1 < len; i++) {
            uint32_t pr = (uint32_t)u[i] << 8 | u[i + 1];
            tf.pairs[pr >> 6] |= 1ull << (pr & 63);
        }
        for (size_t i = 0; i + 3 < len; i++) {
            uint32_t q = quad_hash(u + i);
            tf.quads[q >> 6] |= 1ull << (q & 63);
        }
    }
    bool ok = true;
    for (int32_t ci = 0; ci < n_cand && ok; ci++) {
        int32_t si = parse_special ? ci : v->special_user[ci];
        int32_t id = v->special[si];
        uint32_t a = v->attr[id];
        if (!may_occur(v, si, &tf))
            continue;
        const char *s = tok_str(&v->strs, id);
        size_t sl = v->strs.len[id];
        /* first, is it anywhere in a raw fragment? */
        bool found = false;
        for (size_t f = 0; f < n && !found; f++)
            if (cur[f].tok < 0 && memmem(text + cur[f].off, cur[f].len, s, sl))
                found = true;
        if (!found)
            continue;
        fragment *nxt = NULL;
        size_t m = 0, cap = 0;
        for (size_t f = 0; f < n; f++) {
            /* worst case each raw fragment splits into 2 per match + 1 */
            size_t need = m + 3;
            if (need > cap) {
                cap = need * 2 + n;
                if (!tok_buf_reserve(fb, cap * sizeof(fragment))) {
                    ok = false;
                    break;
                }
                nxt = fb->p;
            }
            if (cur[f].tok >= 0) {
                nxt[m++] = cur[f];
                continue;
            }
            size_t b = cur[f].off, e = cur[f].off + cur[f].len;
            while (b < e) {
                const char *hit = memmem(text + b, e - b, s, sl);
                if (!hit)
                    break;
                size_t at = (size_t)(hit - text);
                size_t ll = at - b;
                if (a & ORC_TATTR_LSTRIP)
                    while (ll > 0 && is_space_byte(text[b + ll - 1]))
                        ll--;
                if (m + 3 > cap) {
                    cap = (m + 3) * 2;
                    if (!tok_buf_reserve(fb, cap * sizeof(fragment))) {
                        ok = false;
                        break;
                    }
                    nxt = fb->p;
                }
                if (ll > 0)
                    nxt[m++] = (fragment){-1, b, ll};
                nxt[m++] = (fragment){id, 0, 0};
                b = at + sl;
                if (a & ORC_TATTR_RSTRIP)
                    while (b < e && is_space_byte(text[b]))
                        b++;
            }
            if (!ok)
                break;
            if (b < e)
                nxt[m++] = (fragment){-1, b, e - b};
        }
        if (!ok)
            break;
        tok_buf t = *fa;
        *fa = *fb;
        *fb = t;
        cur = fa->p;
        n = m;
    }
    free(bits);
    *out = cur;
    *n_out = n;
    return ok;
}

int32_t orc_vocab_tokenize(const orc_vocab *v, const char *text, size_t len, int32_t *out,
                           int32_t cap, bool add_special, bool parse_special)
{
    if (!v || (!text && len) || cap < 0 || (!out && cap > 0)) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "tokenize: invalid argument");
        return INT32_MIN;
    }
    tok_sink sink = {out, cap, 0};
    tok_scratch sc = {0};
    tok_buf *esc = &sc.esc;
    fragment *frags;
    size_t nf;
    bool ok = partition(v, text, len, parse_special, &sc, &frags, &nf);
    if (!ok)
        goto done;

    if (add_special && v->add_bos && v->bos >= 0)
        tok_emit(&sink, v->bos);
    if (v->type == ORC_VOCAB_SPM) {
        bool prev_special = true;
        for (size_t f = 0; f < nf && ok; f++) {
            if (frags[f].tok >= 0) {
                tok_emit(&sink, frags[f].tok);
                prev_special = true;
                continue;
            }
            /* prefix a space after a special token, then spaces -> U+2581 */
            const char *src = text + frags[f].off;
            size_t n = frags[f].len;
            bool prefix = v->add_space_prefix && prev_special;
            size_t need;
            if (!orc_mul_ok(n + 1, 3, &need) || !tok_buf_reserve(esc, need)) {
                ok = false;
                break;
            }
            char *e = esc->p;
            size_t m = 0;
            if (prefix) {
                memcpy(e, "\xE2\x96\x81", 3);
                m = 3;
            }
            for (size_t i = 0; i < n; i++) {
                if (src[i] == ' ') {
                    memcpy(e + m, "\xE2\x96\x81", 3);
                    m += 3;
                } else {
                    e[m++] = src[i];
                }
            }
            ok = tok_spm_fragment(v, &sc, e, m, &sink);
            prev_special = false;
        }
    } else {
        for (size_t f = 0; f < nf && ok; f++) {
            if (frags[f].tok >= 0)
                tok_emit(&sink, frags[f].tok);
            else
                ok = tok_bpe_fragment(v, &sc, text + frags[f].off, frags[f].len, &sink);
        }
    }
    if (ok && add_special && v->add_eos && v->eos >= 0)
        tok_emit(&sink, v->eos);
done:
    tok_scratch_free(&sc);
    if (!ok) {
        orc_fail(ORC_ERR_NO_MEMORY, "tokenize: out of memory (or a text fragment over 2 GiB)");
        return INT32_MIN;
    }
    if (sink.n > INT32_MAX) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "tokenize: more than INT32_MAX tokens");
        return INT32_MIN;
    }
    return sink.n <= cap ? (int32_t)sink.n : -(int32_t)sink.n;
}

/* ---- Pieces and detokenizing ------------------------------------------------------- */

/* llama.cpp's token_to_piece: skips up to lstrip leading spaces. */
static int32_t piece_impl(const orc_vocab *v, int32_t id, char *buf, int32_t cap, int lstrip,
                          bool special)
{
    if (!in_range(v, id))
        return 0;
    if (!special && (v->attr[id] & (ORC_TATTR_UNKNOWN | ORC_TATTR_CONTROL)))
        return 0;
    const char *p = v->piece_blob + v->piece_off[id];
    uint32_t n = v->piece_len[id];
    for (int i = 0; i < lstrip && n && *p == ' '; i++) {
        p++;
        n--;
    }
    if ((int64_t)n > cap)
        return -(int32_t)n;
    if (n)
        memcpy(buf, p, n);
    return (int32_t)n;
}

int32_t orc_vocab_piece(const orc_vocab *v, int32_t id, char *buf, int32_t cap, bool special)
{
    if (cap < 0 || (!buf && cap > 0))
        return 0;
    return piece_impl(v, id, buf, cap, 0, special);
}

/* clean_up_tokenization_spaces as llama.cpp does it, in place; returns the new length */
static int32_t clean_spaces(char *text, int32_t total)
{
    int32_t t1 = total;
    total = total ? 1 : 0;
    for (int32_t i = 1; i < t1; i++) {
        char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
            total--;
        text[total++] = x;
    }
    int32_t t2 = total;
    total = total ? 1 : 0;
    for (int32_t i = 1; i < t2; i++) {
        char x = text[i];
        if (x == '\'' && i + 1 < t2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            total--;
            text[++i] = '\0';
        }
        text[total++] = x;
    }
    int32_t t3 = total;
    total = total ? 1 : 0;
    for (int32_t i = 1; i < t3; i++) {
        char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < t3) {
            char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm')
                total--;
            else if (i + 2 < t3 && ((x1 == 'r' && text[i + 2] == 'e') ||
                                    (x1 == 'v' && text[i + 2] == 'e')))
                total--;
        }
        text[total++] = x;
    }
    return total;
}

int32_t orc_vocab_detokenize(const orc_vocab *v, const int32_t *ids, int32_t n, char *buf,
                             int32_t cap, bool remove_special, bool unparse_special)
{
    if (!v || n < 0 || (!ids && n > 0) || cap < 0 || (!buf && cap > 0))
        return 0;
    int32_t avail = cap;
    int64_t total = 0;
    char *text = buf;
    bool remove_space = v->add_space_prefix;
    if (remove_special && v->add_bos && n > 0 && ids[0] == v->bos) {
        remove_space = false;
        n--;
        ids++;
    }
    if (remove_special && v->add_eos && n > 0 && ids[n - 1] == v->eos)
        n--;
    for (int32_t i = 0; i < n; i++) {
        int32_t c = piece_impl(v, ids[i], text, avail, remove_space, unparse_special);
        remove_space = false;
        if (c < 0) {
            avail = 0;
            total -= c;
        } else if (c > 0) {
            avail -= c;
            text += c;
            total += c;
        }
        if (total > INT32_MAX)
            return INT32_MIN;
    }
    if (total > cap)
        return -(int32_t)total;
    if (v->clean_spaces)
        total = clean_spaces(buf, (int32_t)total);
    if (total < cap)
        buf[total] = 0;
    return (int32_t)total;
}
