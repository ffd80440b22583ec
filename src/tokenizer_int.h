/* tokenizer_int.h - private layout of orc_vocab shared by tokenizer.c (loading, special
 * tokens, detokenizing), tokenizer_spm.c (SentencePiece merges) and tokenizer_bpe.c
 * (pre-tokenizer regexes and byte-level BPE merges). Not part of any API. */
#ifndef ORC_TOKENIZER_INT_H
#define ORC_TOKENIZER_INT_H

#include "tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Internal attribute bits kept beside the public ones in orc_vocab.attr. */
#define TOK_ATTR_EOG (1u << 16)
#define TOK_ATTR_PUBLIC_MASK 0xFFFFu

enum { TOK_MAX_REGEX = 6 };

/* Strings addressed by index: 0..n_tokens-1 are the vocabulary; BPE appends "extra"
 * strings that occur in merges but are not tokens. The map finds the index of a
 * string; for duplicates in the vocabulary the highest id wins, as in llama.cpp. */
typedef struct {
    char *blob;          /* NUL-terminated strings back to back */
    size_t blob_len, blob_cap;
    uint32_t *off;       /* (n) offset of each string in blob */
    uint32_t *len;       /* (n) byte length */
    int32_t n, cap;
    struct tok_slot { uint32_t hash; int32_t idx; uint32_t off, len; } *slots; /* idx -1: empty */
    uint32_t mask;
    int32_t used;
} tok_strtab;

typedef struct {
    uint64_t key;        /* left index << 32 | right index; UINT64_MAX = empty */
    int32_t rank;
    int32_t result;      /* string index of left+right */
} tok_merge_slot;

struct orc_vocab {
    int type;            /* ORC_VOCAB_SPM / ORC_VOCAB_BPE */
    int pre;             /* pre-tokenizer kind (tokenizer_bpe.c) */
    char model_name[16];
    char *pre_name;

    int32_t n_tokens;
    tok_strtab strs;
    float *scores;       /* (n_tokens) */
    uint32_t *attr;      /* (n_tokens) ORC_TATTR_* plus TOK_ATTR_* */
    uint32_t max_token_len;

    /* token_to_piece(special = true) of every token */
    char *piece_blob;
    uint32_t *piece_off, *piece_len;

    int32_t bos, eos, eot, eom, unk, pad, sep, nl;
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos, add_space_prefix, ignore_merges, clean_spaces;

    /* control, user-defined and unknown tokens, longest text first */
    int32_t *special;
    int32_t n_special;
    uint64_t (*special_bytes)[4]; /* (n_special) set of the bytes in each text */
    int32_t *special_user;        /* positions in special[] of those matched even when
                                   * special text is not parsed (user-defined) */
    int32_t n_special_user;
    uint64_t special_common[2][4];  /* bytes in every [user-defined, any] special text */

    /* SentencePiece: byte-fallback token of each byte, and the byte pairs that occur
     * inside token texts (no merge can join two characters whose boundary pair is
     * absent, so the text is merged in independent segments split there) */
    int32_t byte_tok[256];
    uint64_t *spm_pairs;       /* (1024) bitmap over (byte << 8 | next byte) */

    /* byte-level BPE */
    tok_merge_slot *merges;
    uint32_t merge_mask;
    int32_t n_merges;
    int32_t byte_sym[256];     /* string index of the byte's GPT-2 character, or -1 */
    int32_t one_byte_tok[256]; /* token whose text is exactly that one byte, or -1 */
    char byte_enc[256][2];     /* GPT-2 bytes_to_unicode, as UTF-8 */
    uint8_t byte_enc_len[256];
    int16_t byte_dec[324];     /* inverse of byte_enc by code point, -1 when none */
    int n_regex;
    void *regex[TOK_MAX_REGEX];  /* pcre2_code_8 * */
    bool regex_jit[TOK_MAX_REGEX];
};

/* Emitted token ids: written while they fit, counted always. */
typedef struct {
    int32_t *out;
    int64_t cap;
    int64_t n;
} tok_sink;

static inline void tok_emit(tok_sink *s, int32_t id)
{
    if (s->n < s->cap)
        s->out[s->n] = id;
    s->n++;
}

/* Growable scratch owned by one tokenize call; freed at its end. */
typedef struct {
    void *p;
    size_t cap;   /* bytes */
} tok_buf;

bool tok_buf_reserve(tok_buf *b, size_t bytes);

/* Everything one tokenize call allocates, reused across its fragments and words. */
typedef struct {
    tok_buf fa, fb, esc;                 /* fragments, escaped SentencePiece text */
    tok_buf syms, heap;                  /* merge symbols and priority queue */
    tok_buf subj, pay, pa, pb, enc, tmp; /* BPE: sanitized text, pieces, encoded word */
    void *md;                            /* pcre2_match_data_8 * */
    /* BPE word cache: word bytes -> token ids, for long texts */
    tok_buf wc_slots, wc_words, wc_toks;
    size_t wc_words_len, wc_toks_len;
    uint32_t wc_mask, wc_used;
} tok_scratch;

void tok_scratch_free(tok_scratch *s);

/* Tuning knobs, changed only by tests to check the fast paths against the plain ones:
 * BPE caches words within calls on fragments at least this long; SentencePiece merges
 * segments split where no token can span. */
extern size_t tok_bpe_cache_min_len;
extern bool tok_spm_split;

uint64_t tok_hash(const char *p, size_t n);

/* memcmp(a, b, n) == 0, with overlapping word loads for short strings */
static inline bool tok_eq(const char *a, const char *b, size_t n)
{
    if (n >= 8 && n <= 16) {
        uint64_t x0, x1, y0, y1;
        memcpy(&x0, a, 8);
        memcpy(&y0, b, 8);
        memcpy(&x1, a + n - 8, 8);
        memcpy(&y1, b + n - 8, 8);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n >= 4 && n < 8) {
        uint32_t x0, x1, y0, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, b, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y1, b + n - 4, 4);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n < 4) {
        for (size_t i = 0; i < n; i++)
            if (a[i] != b[i])
                return false;
        return true;
    }
    return memcmp(a, b, n) == 0;
}
int32_t tok_strtab_find(const tok_strtab *t, const char *p, size_t n);
/* The same with the string's hash ((uint32_t)tok_hash) already computed. */
int32_t tok_strtab_find_h(const tok_strtab *t, const char *p, size_t n, uint32_t h);
int32_t tok_strtab_intern_h(tok_strtab *t, const char *p, size_t n, uint32_t h);
void tok_strtab_prefetch(const tok_strtab *t, uint32_t h);
/* Index of the string, adding it when absent; -1 on allocation failure. */
int32_t tok_strtab_intern(tok_strtab *t, const char *p, size_t n);
static inline const char *tok_str(const tok_strtab *t, int32_t i)
{
    return t->blob + t->off[i];
}

/* Token id for text, -1 when it is not in the vocabulary. */
static inline int32_t tok_find(const orc_vocab *v, const char *p, size_t n)
{
    int32_t i = tok_strtab_find(&v->strs, p, n);
    return i < v->n_tokens ? i : -1;
}

/* Length of the UTF-8 sequence a lead byte announces, llama.cpp's way: continuation
 * and invalid lead bytes count as one byte, 0xF8..0xFF as four. */
static inline size_t tok_utf8_len(uint8_t c)
{
    static const uint8_t lut[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lut[c >> 4];
}

/* tokenizer_spm.c: SentencePiece merges of one raw-text fragment (already prefixed and
 * with spaces escaped to U+2581). false on allocation failure. */
bool tok_spm_fragment(const orc_vocab *v, tok_scratch *sc, const char *text, size_t len,
                      tok_sink *sink);

/* tokenizer_bpe.c */
bool tok_bpe_setup(orc_vocab *v, const gguf_ctx *g, const char *pre, char *err, size_t errlen);
void tok_bpe_free(orc_vocab *v);
bool tok_bpe_fragment(const orc_vocab *v, tok_scratch *sc, const char *text, size_t len,
                      tok_sink *sink);
/* GPT-2 byte decoding of a token text into out (at most len bytes): each character of
 * the byte alphabet gives its byte; any other character is copied as UTF-8. */
size_t tok_bpe_decode_text(const orc_vocab *v, const char *text, size_t len, char *out);

#endif
