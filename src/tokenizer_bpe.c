/* tokenizer_bpe.c - byte-level BPE ("gpt2" vocabularies): the pre-tokenizer regexes that
 * tokenizer.ggml.pre selects (run with PCRE2, UTF mode, JIT), GPT-2's byte-to-character
 * alphabet, and rank-ordered merges from tokenizer.ggml.merges kept in a hash table keyed
 * by the pair of string indices. Mirrors llama.cpp's llm_tokenizer_bpe and unicode.cpp. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer_int.h"

#include "common.h"

#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Pre-tokenizers ----------------------------------------------------------------- */

/* llama.cpp's regexes, with \s and \S meaning its whitespace set (Unicode White_Space):
 * translate_regex() spells them out so PCRE2 agrees with it exactly. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3 RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN35 RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}" \
    "| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_SEED_CODER RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}" \
    "| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_BAILING "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+" \
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"
#define RE_TEKKEN "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" \
    "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT4O "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" \
    RE_CONTRACTIONS "?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" \
    RE_CONTRACTIONS "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_PORO " ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+"

enum { F_IGNORE_MERGES = 1, F_ADD_BOS = 2, F_NO_CLEAN = 4, F_NO_BOS = 8 };

typedef struct {
    const char *names;        /* '|'-separated tokenizer.ggml.pre values */
    unsigned flags;
    const char *re[4];
} pre_def;

static const pre_def PRE_DEFS[] = {
    {"default", 0, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2",
     F_IGNORE_MERGES | F_ADD_BOS, {RE_LLAMA3}},
    {"dbrx|smaug-bpe", 0, {RE_LLAMA3}},
    {"glm4|chatglm-bpe", F_NO_BOS, {RE_LLAMA3}},
    {"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|a.x-4.0|mellum|jina-v1-en|"
     "jina-v2-code|roberta-bpe|mpt|olmo|jais|exaone4", 0, {RE_GPT2}},
    {"trillion|granite-docling", F_NO_CLEAN, {RE_GPT2}},
    {"starcoder|refact|codeshell|exaone|minerva-7b", 0, {"\\p{N}", RE_GPT2}},
    {"command-r|smollm", F_NO_CLEAN, {"\\p{N}", RE_GPT2}},
    {"falcon", 0, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}},
    {"qwen2|deepseek-r1-qwen|kormo|hunyuan|grok-2", F_NO_CLEAN, {RE_QWEN2}},
    {"megrez|stablelm2", 0, {RE_QWEN2}},
    {"qwen35", F_NO_CLEAN, {RE_QWEN35}},
    {"seed-coder", F_NO_CLEAN, {RE_SEED_CODER}},
    {"bailingmoe|bailingmoe2|llada-moe", F_NO_CLEAN, {RE_BAILING}},
    {"tekken", F_NO_CLEAN | F_IGNORE_MERGES | F_ADD_BOS, {RE_TEKKEN}},
    {"gpt-4o|llama4|minimax-m2", F_NO_CLEAN, {RE_GPT4O}},
    {"poro-chat", F_NO_CLEAN, {RE_PORO}},
    {"bloom|gpt3-finnish", 0, {RE_PORO}},
    {"viking", F_NO_CLEAN, {RE_PORO, "\\p{N}"}},
};

/* Pre-tokenizers llama.cpp knows that this file does not implement. */
static const char *const PRE_UNSUPPORTED =
    "deepseek-llm|deepseek-coder|deepseek-v3|hunyuan-dense|chameleon|superbpe|kimi-k2|afmoe";

static bool name_in(const char *name, const char *list)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *bar = strchr(p, '|');
        size_t m = bar ? (size_t)(bar - p) : strlen(p);
        if (m == n && !memcmp(p, name, n))
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

#define WS_CLASS "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
    "\\x{202F}\\x{205F}\\x{3000}"

/* Code points assigned in Unicode 15.0 and 15.1, after the Unicode 14 tables of PCRE2
 * 10.42, by the class llama.cpp's tables (Unicode 15.1) give them; added to \p{L}, \p{N},
 * \p{M} and \p{P} so both agree (harmless where PCRE2 already knows them). */
static const struct { char cls; const char *extra; } UCD_NEWER[] = {
    {'L', "\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}"
          "\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{1B132}"
          "\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"
          "\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}"
          "\\x{31350}-\\x{323AF}"},
    {'N', "\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"},
    {'M', "\\x{0CF3}\\x{0ECE}\\x{10EFD}-\\x{10EFF}\\x{11241}\\x{11F00}-\\x{11F01}"
          "\\x{11F03}\\x{11F34}-\\x{11F3A}\\x{11F3E}-\\x{11F42}\\x{13440}"
          "\\x{13447}-\\x{13455}\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}"},
    {'P', "\\x{11B00}-\\x{11B09}\\x{11F43}-\\x{11F4F}"},
};

static const char *newer_extra(char cls)
{
    for (size_t i = 0; i < sizeof UCD_NEWER / sizeof UCD_NEWER[0]; i++)
        if (UCD_NEWER[i].cls == cls)
            return UCD_NEWER[i].extra;
    return NULL;
}

/* Rewrites \s and \S as explicit classes and widens \p{L}, \p{N}, \p{M}, \p{P} by the
 * newer code points. Returns a malloc'd pattern or NULL. */
static char *translate_regex(const char *re)
{
    size_t n_esc = 0;
    for (const char *p = re; *p; p++)
        n_esc += *p == '\\';
    size_t cap = strlen(re) + n_esc * 640 + 16;
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    bool inside = false;
    for (const char *p = re; *p; p++) {
        if (*p == '\\' && p[1]) {
            const char *extra = NULL;
            if (p[1] == 's' || p[1] == 'S') {
                bool neg = p[1] == 'S';
                if (inside) {
                    if (neg) {  /* not expressible inside a class; never used */
                        free(out);
                        return NULL;
                    }
                    o += sprintf(o, "%s", WS_CLASS);
                } else {
                    o += sprintf(o, "[%s%s]", neg ? "^" : "", WS_CLASS);
                }
            } else if (p[1] == 'p' && p[2] == '{' && p[3] && p[4] == '}' &&
                       (extra = newer_extra(p[3])) != NULL) {
                o += sprintf(o, inside ? "\\p{%c}%s" : "[\\p{%c}%s]", p[3], extra);
                p += 3;
            } else {
                *o++ = p[0];
                *o++ = p[1];
            }
            p++;
            continue;
        }
        if (*p == '[' && !inside)
            inside = true;
        else if (*p == ']' && inside)
            inside = false;
        *o++ = *p;
    }
    *o = 0;
    return out;
}

/* ---- GPT-2 byte alphabet ------------------------------------------------------------- */

static void byte_alphabet(uint32_t cp_of[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool direct = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp_of[b] = direct ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

static size_t utf8_encode(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* llama.cpp's unicode_cpt_from_utf8: lead-bit patterns and continuation bytes are
 * checked, overlong forms and surrogates are accepted; anything else is one invalid
 * byte (reported as U+FFFD). Code points past U+10FFFF are invalid here too. */
static size_t decode_cp(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    if (!(c & 0x80)) {
        *cp = c;
        return 1;
    }
    if ((c & 0x40) && !(c & 0x20)) {
        if (n >= 2 && (s[1] & 0xC0) == 0x80) {
            *cp = (uint32_t)(c & 0x1F) << 6 | (s[1] & 0x3F);
            return 2;
        }
    } else if ((c & 0x40) && !(c & 0x10)) {
        if (n >= 3 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
            *cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
            return 3;
        }
    } else if ((c & 0x40) && !(c & 0x08)) {
        if (n >= 4 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) {
            uint32_t x = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                         (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
            if (x <= 0x10FFFF) {
                *cp = x;
                return 4;
            }
        }
    }
    *cp = 0xFFFD;
    return 0;  /* invalid: one byte consumed */
}

size_t tok_bpe_decode_text(const orc_vocab *v, const char *text, size_t len, char *out)
{
    size_t m = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = decode_cp((const uint8_t *)text + i, len - i, &cp);
        if (k == 0) {
            out[m++] = text[i++];
            continue;
        }
        if (cp < 324 && v->byte_dec[cp] >= 0) {
            out[m++] = (char)v->byte_dec[cp];
        } else {
            memcpy(out + m, text + i, k);
            m += k;
        }
        i += k;
    }
    return m;
}

/* ---- Merges ------------------------------------------------------------------------ */

static inline uint64_t pair_key(int32_t a, int32_t b)
{
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static inline uint32_t pair_hash(uint64_t k)
{
    k ^= k >> 31;
    k *= 0x7fb5d329728ea185ull;
    k ^= k >> 27;
    k *= 0x81dadef4bc2dd44dull;
    k ^= k >> 33;
    return (uint32_t)k;
}

static const tok_merge_slot *merge_find(const orc_vocab *v, int32_t a, int32_t b)
{
    uint64_t key = pair_key(a, b);
    for (uint32_t i = pair_hash(key) & v->merge_mask;; i = (i + 1) & v->merge_mask) {
        const tok_merge_slot *s = &v->merges[i];
        if (s->key == key)
            return s;
        if (s->key == UINT64_MAX)
            return NULL;
    }
}

static bool load_merges(orc_vocab *v, const gguf_value *arr, char *err, size_t errlen)
{
    uint64_t n = arr->v.arr.n;
    if (n > (1u << 28)) {
        snprintf(err, errlen, "tokenizer.ggml.merges has %llu entries", (unsigned long long)n);
        return false;
    }
    uint32_t cap = 64;
    while (cap < n + n / 2 + 1)
        cap <<= 1;
    v->merges = malloc(sizeof *v->merges * cap);
    if (!v->merges)
        goto oom;
    for (uint32_t i = 0; i < cap; i++)
        v->merges[i].key = UINT64_MAX;
    v->merge_mask = cap - 1;
    /* In batches: hash the parts and prefetch their slots, intern them, then prefetch
     * and fill the merge slots, so the cache misses overlap. */
    enum { BATCH = 16 };
    char *cat = NULL;
    size_t cat_cap = 0;
    for (uint64_t base = 0; base < n; base += BATCH) {
        uint64_t end = base + BATCH < n ? base + BATCH : n;
        struct {
            const char *l, *r;
            size_t ln, rn, coff;
            uint32_t hl, hr, hc;
            uint64_t key;
            int32_t res;
        } b[BATCH];
        size_t need = 0;
        for (uint64_t i = base; i < end; i++)
            need += (size_t)arr->v.arr.strs[i].n;
        if (need > cat_cap) {
            cat_cap = need * 2 + 256;
            char *c = realloc(cat, cat_cap);
            if (!c) {
                free(cat);
                goto oom;
            }
            cat = c;
        }
        size_t cpos = 0;
        for (uint64_t i = base; i < end; i++) {
            gguf_str s = arr->v.arr.strs[i];
            const char *sp = s.n > 1 ? memchr(s.p + 1, ' ', (size_t)s.n - 1) : NULL;
            int k = (int)(i - base);
            b[k].l = NULL;
            if (!sp)
                continue;  /* llama.cpp keeps an ("", "") pair that can never match */
            b[k].l = s.p;
            b[k].ln = (size_t)(sp - s.p);
            b[k].r = sp + 1;
            b[k].rn = (size_t)s.n - b[k].ln - 1;
            b[k].coff = cpos;
            memcpy(cat + cpos, b[k].l, b[k].ln);
            memcpy(cat + cpos + b[k].ln, b[k].r, b[k].rn);
            cpos += b[k].ln + b[k].rn;
            b[k].hl = (uint32_t)tok_hash(b[k].l, b[k].ln);
            b[k].hr = (uint32_t)tok_hash(b[k].r, b[k].rn);
            b[k].hc = (uint32_t)tok_hash(cat + b[k].coff, b[k].ln + b[k].rn);
            tok_strtab_prefetch(&v->strs, b[k].hl);
            tok_strtab_prefetch(&v->strs, b[k].hr);
            tok_strtab_prefetch(&v->strs, b[k].hc);
        }
        for (uint64_t i = base; i < end; i++) {
            int k = (int)(i - base);
            if (!b[k].l)
                continue;
            int32_t a = tok_strtab_intern_h(&v->strs, b[k].l, b[k].ln, b[k].hl);
            int32_t c = a >= 0 ? tok_strtab_intern_h(&v->strs, b[k].r, b[k].rn, b[k].hr) : -1;
            b[k].res = c >= 0 ? tok_strtab_intern_h(&v->strs, cat + b[k].coff,
                                                    b[k].ln + b[k].rn, b[k].hc) : -1;
            if (b[k].res < 0) {
                free(cat);
                goto oom;
            }
            b[k].key = pair_key(a, c);
            __builtin_prefetch(&v->merges[pair_hash(b[k].key) & v->merge_mask]);
        }
        for (uint64_t i = base; i < end; i++) {
            int k = (int)(i - base);
            if (!b[k].l)
                continue;
            uint64_t key = b[k].key;
            uint32_t j = pair_hash(key) & v->merge_mask;
            while (v->merges[j].key != UINT64_MAX && v->merges[j].key != key)
                j = (j + 1) & v->merge_mask;
            if (v->merges[j].key == UINT64_MAX) {  /* the first rank of a pair wins */
                v->merges[j] = (tok_merge_slot){key, (int32_t)i, b[k].res};
                v->n_merges++;
            }
        }
    }
    free(cat);
    return true;
oom:
    snprintf(err, errlen, "out of memory");
    return false;
}

bool tok_bpe_setup(orc_vocab *v, const gguf_ctx *g, const char *pre, char *err, size_t errlen)
{
    const pre_def *def = NULL;
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0] && !def; i++)
        if (name_in(pre, PRE_DEFS[i].names))
            def = &PRE_DEFS[i];
    if (!def && name_in(pre, PRE_UNSUPPORTED)) {
        snprintf(err, errlen, "pre-tokenizer '%s' is not supported", pre);
        return false;
    }
    if (!def) {
        orc_log(ORC_LOG_WARN, "tokenizer: unknown pre-tokenizer '%s', using 'default'", pre);
        def = &PRE_DEFS[0];
    }
    v->pre = (int)(def - PRE_DEFS);
    v->ignore_merges = def->flags & F_IGNORE_MERGES;
    if (def->flags & F_ADD_BOS)
        v->add_bos = true;
    if (def->flags & F_NO_CLEAN)
        v->clean_spaces = false;
    if (def->flags & F_NO_BOS)
        v->bos = -1;

    const gguf_value *merges = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_T_STRING);
    if (!merges) {
        snprintf(err, errlen, "tokenizer.ggml.merges is missing or not an array of strings");
        return false;
    }
    if (!load_merges(v, merges, err, errlen))
        return false;

    uint32_t cp_of[256];
    byte_alphabet(cp_of);
    for (int i = 0; i < 324; i++)
        v->byte_dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        v->byte_dec[cp_of[b]] = (int16_t)b;
        v->byte_enc_len[b] = (uint8_t)utf8_encode(cp_of[b], v->byte_enc[b]);
        v->byte_sym[b] = tok_strtab_find(&v->strs, v->byte_enc[b], v->byte_enc_len[b]);
        char one = (char)b;
        v->one_byte_tok[b] = tok_find(v, &one, 1);
    }

    for (int i = 0; i < 4 && def->re[i]; i++) {
        char *pat = translate_regex(def->re[i]);
        if (!pat) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code,
                                       &at, NULL);
        free(pat);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof msg);
            snprintf(err, errlen, "pre-tokenizer '%s': regex %d: %s at %zu", pre, i,
                     (const char *)msg, (size_t)at);
            return false;
        }
        v->regex_jit[i] = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
        v->regex[i] = re;
        v->n_regex = i + 1;
    }
    return true;
}

void tok_bpe_free(orc_vocab *v)
{
    for (int i = 0; i < v->n_regex; i++)
        pcre2_code_free(v->regex[i]);
    v->n_regex = 0;
    free(v->merges);
    v->merges = NULL;
}

/* ---- Tokenizing ---------------------------------------------------------------------- */

typedef struct {
    int32_t prev, next;
    int32_t id;          /* string index of the symbol's text, -1 when none */
    uint32_t off, n;     /* raw bytes of the word; n = 0 once merged away */
} bpe_sym;

typedef struct {
    int32_t rank, left, right;
    uint32_t size;
    int32_t result;
} bpe_bigram;

static inline bool bg_before(const bpe_bigram *a, const bpe_bigram *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

typedef tok_scratch bpe_scratch;

static bool heap_push(bpe_scratch *sc, size_t *n, bpe_bigram b)
{
    if (!tok_buf_reserve(&sc->heap, (*n + 1) * sizeof b))
        return false;
    bpe_bigram *h = sc->heap.p;
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_before(&b, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = b;
    return true;
}

static bpe_bigram heap_pop(bpe_scratch *sc, size_t *n)
{
    bpe_bigram *h = sc->heap.p;
    bpe_bigram top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n)
            break;
        size_t c = (l + 1 < *n && bg_before(&h[l + 1], &h[l])) ? l + 1 : l;
        if (!bg_before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static bool add_bigram(const orc_vocab *v, bpe_scratch *sc, size_t *hn, const bpe_sym *s,
                       int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || s[l].id < 0 || s[r].id < 0)
        return true;
    const tok_merge_slot *m = merge_find(v, s[l].id, s[r].id);
    if (!m)
        return true;
    return heap_push(sc, hn, (bpe_bigram){m->rank, l, r, s[l].n + s[r].n, m->result});
}

static void emit_fallback(const orc_vocab *v, const uint8_t *w, uint32_t n, tok_sink *sink)
{
    for (uint32_t k = 0; k < n; k++) {
        uint8_t b = w[k];
        for (int e = 0; e < v->byte_enc_len[b]; e++) {
            int32_t id = v->one_byte_tok[(uint8_t)v->byte_enc[b][e]];
            if (id >= 0)
                tok_emit(sink, id);
        }
    }
}

/* BPE of one pre-token (raw bytes; the GPT-2 alphabet is applied implicitly). */
static bool bpe_word(const orc_vocab *v, bpe_scratch *sc, const uint8_t *w, size_t n,
                     tok_sink *sink)
{
    if (n == 1) {
        int32_t id = v->byte_sym[w[0]];
        if (id >= 0 && id < v->n_tokens)
            tok_emit(sink, id);
        else
            emit_fallback(v, w, 1, sink);
        return true;
    }
    if (v->ignore_merges && n <= v->max_token_len) {
        if (!tok_buf_reserve(&sc->enc, n * 2))
            return false;
        char *e = sc->enc.p;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(e + m, v->byte_enc[w[i]], 2);
            m += v->byte_enc_len[w[i]];
        }
        int32_t id = tok_find(v, e, m);
        if (id >= 0) {
            tok_emit(sink, id);
            return true;
        }
    }
    if (n > INT32_MAX || !tok_buf_reserve(&sc->syms, n * sizeof(bpe_sym)))
        return false;
    bpe_sym *s = sc->syms.p;
    for (size_t i = 0; i < n; i++)
        s[i] = (bpe_sym){(int32_t)i - 1, i + 1 == n ? -1 : (int32_t)i + 1, v->byte_sym[w[i]],
                         (uint32_t)i, 1};
    size_t hn = 0;
    for (size_t i = 1; i < n; i++)
        if (!add_bigram(v, sc, &hn, s, (int32_t)i - 1, (int32_t)i))
            return false;
    while (hn) {
        bpe_bigram b = heap_pop(sc, &hn);
        bpe_sym *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        l->n += r->n;
        l->id = b.result;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = b.left;
        if (!add_bigram(v, sc, &hn, s, l->prev, b.left) ||
            !add_bigram(v, sc, &hn, s, b.left, l->next))
            return false;
    }
    for (int32_t i = 0; i != -1; i = s[i].next) {
        if (s[i].id >= 0 && s[i].id < v->n_tokens)
            tok_emit(sink, s[i].id);
        else
            emit_fallback(v, w + s[i].off, s[i].n, sink);
    }
    return true;
}

/* Builds the regex subject: llama.cpp decodes the text to code points (invalid bytes
 * become U+FFFD) and re-encodes them. pay gets those bytes (what BPE encodes); subj is
 * the same except that surrogates, which PCRE2 rejects, become U+E000, a code point of
 * the same class and length. Returns false on allocation failure. */
static bool sanitize(bpe_scratch *sc, const char *text, size_t len, const char **subj,
                     const char **pay, size_t *out_len)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {  /* fast path: already canonical UTF-8 without surrogates */
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = decode_cp(s + i, len - i, &cp);
        char tmp[4];
        if (k == 0 || (cp >= 0xD800 && cp <= 0xDFFF) || utf8_encode(cp, tmp) != k)
            break;
        i += k;
    }
    if (i == len) {
        *subj = *pay = text;
        *out_len = len;
        return true;
    }
    size_t cap;
    if (!orc_mul_ok(len, 3, &cap) || !tok_buf_reserve(&sc->subj, cap) ||
        !tok_buf_reserve(&sc->pay, cap))
        return false;
    char *o = sc->subj.p, *p = sc->pay.p;
    memcpy(o, text, i);
    memcpy(p, text, i);
    size_t m = i;
    while (i < len) {
        uint32_t cp;
        size_t k = decode_cp(s + i, len - i, &cp);
        i += k ? k : 1;
        size_t e = utf8_encode(cp, p + m);
        if (cp >= 0xD800 && cp <= 0xDFFF)
            utf8_encode(0xE000, o + m);
        else
            memcpy(o + m, p + m, e);
        m += e;
    }
    *subj = sc->subj.p;
    *pay = sc->pay.p;
    *out_len = m;
    return true;
}

static bool push_piece(tok_buf *b, size_t *n, size_t s, size_t e)
{
    if (!tok_buf_reserve(b, (*n + 1) * 2 * sizeof(size_t)))
        return false;
    size_t *p = b->p;
    p[2 * *n] = s;
    p[2 * *n + 1] = e;
    (*n)++;
    return true;
}

static int run_match(const orc_vocab *v, int ri, const char *subj, size_t end, size_t pos,
                     pcre2_match_data *md)
{
    int rc = pcre2_match(v->regex[ri], (PCRE2_SPTR)subj, end, pos, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && v->regex_jit[ri])
        rc = pcre2_match(v->regex[ri], (PCRE2_SPTR)subj, end, pos,
                         PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    return rc;
}

/* Splits every piece with one regex: matches and the gaps between them both become
 * pieces (llama.cpp's unicode_regex_split). */
static bool split_pieces(const orc_vocab *v, int ri, bpe_scratch *sc, const char *subj,
                         size_t *np)
{
    size_t n_in = *np, n_out = 0;
    for (size_t k = 0; k < n_in; k++) {
        const size_t *in = sc->pa.p;
        size_t s = in[2 * k], e = in[2 * k + 1];
        size_t pos = s, last = s;
        while (pos < e) {
            int rc = run_match(v, ri, subj, e, pos, (pcre2_match_data *)sc->md);
            if (rc < 0)
                break;  /* no match, or a match error: the rest stays one piece */
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer((pcre2_match_data *)sc->md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) {  /* empty match: step one character */
                pos = ms + 1;
                while (pos < e && ((uint8_t)subj[pos] & 0xC0) == 0x80)
                    pos++;
                continue;
            }
            if (ms > last && !push_piece(&sc->pb, &n_out, last, ms))
                return false;
            if (!push_piece(&sc->pb, &n_out, ms, me))
                return false;
            last = pos = me;
        }
        if (last < e && !push_piece(&sc->pb, &n_out, last, e))
            return false;
    }
    tok_buf t = sc->pa;
    sc->pa = sc->pb;
    sc->pb = t;
    *np = n_out;
    return true;
}

/* ---- Word cache: within one call, a repeated pre-token reuses its tokens ---------- */

typedef struct {
    uint64_t hash;
    uint32_t woff, wlen;   /* bytes in wc_words */
    uint32_t toff, tn;     /* ids in wc_toks */
} wc_slot;

enum { WC_MAX_WORD = 48, WC_MAX_ENTRIES = 1 << 16 };

size_t tok_bpe_cache_min_len = 2048;

static bool wc_init(bpe_scratch *sc)
{
    uint32_t cap = 4096;
    if (!tok_buf_reserve(&sc->wc_slots, cap * sizeof(wc_slot)))
        return false;
    memset(sc->wc_slots.p, 0xFF, cap * sizeof(wc_slot));
    sc->wc_mask = cap - 1;
    return true;
}

static const wc_slot *wc_find(const bpe_scratch *sc, const uint8_t *w, size_t n, uint64_t h)
{
    const wc_slot *t = sc->wc_slots.p;
    const char *words = sc->wc_words.p;
    for (uint32_t i = (uint32_t)h & sc->wc_mask;; i = (i + 1) & sc->wc_mask) {
        if (t[i].wlen == UINT32_MAX)
            return NULL;
        if (t[i].hash == h && t[i].wlen == n && !memcmp(words + t[i].woff, w, n))
            return &t[i];
    }
}

static bool wc_grow(bpe_scratch *sc)
{
    uint32_t cap = (sc->wc_mask + 1) * 2;
    tok_buf nb = {0};
    if (!tok_buf_reserve(&nb, cap * sizeof(wc_slot)))
        return false;
    wc_slot *ns = nb.p, *os = sc->wc_slots.p;
    memset(ns, 0xFF, cap * sizeof(wc_slot));
    for (uint32_t i = 0; i <= sc->wc_mask; i++) {
        if (os[i].wlen == UINT32_MAX)
            continue;
        uint32_t j = (uint32_t)os[i].hash & (cap - 1);
        while (ns[j].wlen != UINT32_MAX)
            j = (j + 1) & (cap - 1);
        ns[j] = os[i];
    }
    free(sc->wc_slots.p);
    sc->wc_slots = nb;
    sc->wc_mask = cap - 1;
    return true;
}

/* Remembers a word's tokens (silently skipped when the cache is full). */
static bool wc_add(bpe_scratch *sc, const uint8_t *w, size_t n, uint64_t h, const int32_t *ids,
                   size_t k)
{
    if (sc->wc_used >= WC_MAX_ENTRIES)
        return true;
    if ((sc->wc_used + 1) * 2 > sc->wc_mask + 1 && !wc_grow(sc))
        return false;
    if (!tok_buf_reserve(&sc->wc_words, sc->wc_words_len + n) ||
        !tok_buf_reserve(&sc->wc_toks, (sc->wc_toks_len + k) * sizeof(int32_t)))
        return false;
    memcpy((char *)sc->wc_words.p + sc->wc_words_len, w, n);
    memcpy((int32_t *)sc->wc_toks.p + sc->wc_toks_len, ids, k * sizeof(int32_t));
    wc_slot *t = sc->wc_slots.p;
    uint32_t i = (uint32_t)h & sc->wc_mask;
    while (t[i].wlen != UINT32_MAX)
        i = (i + 1) & sc->wc_mask;
    t[i] = (wc_slot){h, (uint32_t)sc->wc_words_len, (uint32_t)n, (uint32_t)sc->wc_toks_len,
                     (uint32_t)k};
    sc->wc_words_len += n;
    sc->wc_toks_len += k;
    sc->wc_used++;
    return true;
}

static bool cached_word(const orc_vocab *v, bpe_scratch *sc, const uint8_t *w, size_t n,
                        tok_sink *sink)
{
    uint64_t h = tok_hash((const char *)w, n);
    const wc_slot *hit = wc_find(sc, w, n, h);
    if (hit) {
        const int32_t *ids = (const int32_t *)sc->wc_toks.p + hit->toff;
        for (uint32_t i = 0; i < hit->tn; i++)
            tok_emit(sink, ids[i]);
        return true;
    }
    /* at most two fallback tokens per byte */
    if (!tok_buf_reserve(&sc->tmp, 2 * n * sizeof(int32_t)))
        return false;
    tok_sink local = {sc->tmp.p, (int64_t)(2 * n), 0};
    if (!bpe_word(v, sc, w, n, &local))
        return false;
    const int32_t *ids = sc->tmp.p;
    for (int64_t i = 0; i < local.n; i++)
        tok_emit(sink, ids[i]);
    return wc_add(sc, w, n, h, sc->tmp.p, (size_t)local.n);
}

void tok_scratch_free(tok_scratch *sc)
{
    pcre2_match_data_free((pcre2_match_data *)sc->md);
    tok_buf *bufs[] = {&sc->fa, &sc->fb, &sc->esc, &sc->syms, &sc->heap, &sc->subj, &sc->pay,
        &sc->pa, &sc->pb, &sc->enc, &sc->tmp, &sc->wc_slots, &sc->wc_words, &sc->wc_toks};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]->p);
    memset(sc, 0, sizeof *sc);
}

bool tok_bpe_fragment(const orc_vocab *v, tok_scratch *sc, const char *text, size_t len,
                      tok_sink *sink)
{
    if (len == 0)
        return true;
    const char *subj, *pay;
    size_t n;
    if (!sc->md && !(sc->md = pcre2_match_data_create(1, NULL)))
        return false;
    if (!sanitize(sc, text, len, &subj, &pay, &n))
        return false;
    size_t np = 0;
    if (!push_piece(&sc->pa, &np, 0, n))
        return false;
    for (int ri = 0; ri < v->n_regex; ri++)
        if (!split_pieces(v, ri, sc, subj, &np))
            return false;
    /* the cache pays off on long texts only */
    bool use_cache = len >= tok_bpe_cache_min_len && (sc->wc_mask || wc_init(sc));
    for (size_t k = 0; k < np; k++) {
        const size_t *pc = sc->pa.p;
        const uint8_t *w = (const uint8_t *)pay + pc[2 * k];
        size_t wn = pc[2 * k + 1] - pc[2 * k];
        bool ok = use_cache && wn >= 2 && wn <= WC_MAX_WORD ? cached_word(v, sc, w, wn, sink)
                                                           : bpe_word(v, sc, w, wn, sink);
        if (!ok)
            return false;
    }
    return true;
}
