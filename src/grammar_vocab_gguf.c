/* grammar_vocab_gguf.c - builds a grammar_vocab (token byte strings for masks) from a
 * loaded orc_vocab, or straight from a GGUF file's tokenizer.ggml.* metadata: byte-level
 * BPE ("gpt2": GPT-2's bytes_to_unicode mapping undone) and SentencePiece ("llama": U+2581
 * as space, <0xXX> byte tokens). Control tokens are excluded; EOS/EOT ids become EOG. */
#include "grammar.h"
#include "grammar_vocab_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPT-2 bytes_to_unicode: printable bytes map to themselves; the other 68 bytes map to
 * U+0100 + n in byte order. Returns the byte for code point cp, or -1. */
static int gpt2_unbyte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp < 256 || cp >= 256 + 68)
        return -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
            continue;
        if ((uint32_t)(256 + n) == cp)
            return b;
        n++;
    }
    return -1;
}

/* Next UTF-8 code point of s[*i..n); invalid sequences yield the byte with bit 31 set. */
static uint32_t next_cp(const uint8_t *s, size_t n, size_t *i)
{
    uint8_t c = s[*i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || *i + (size_t)len > n) {
        (*i)++;
        return 0x80000000u | c;
    }
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (int k = 1; k < len; k++) {
        if ((s[*i + (size_t)k] & 0xC0) != 0x80) {
            (*i)++;
            return 0x80000000u | c;
        }
        v = v << 6 | (s[*i + (size_t)k] & 0x3Fu);
    }
    *i += (size_t)len;
    return v;
}

grammar_vocab *grammar_vocab_from_gguf(const gguf_ctx *g, char *err, size_t errlen)
{
    const gguf_value *toks = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_T_STRING);
    const gguf_value *types = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_T_COUNT);
    gguf_str model;
    if (!toks || !gguf_get_str(g, "tokenizer.ggml.model", &model)) {
        snprintf(err, errlen, "no tokenizer.ggml.tokens / tokenizer.ggml.model");
        return NULL;
    }
    bool bpe = gguf_str_eq(model, "gpt2");
    bool spm = gguf_str_eq(model, "llama");
    if (!bpe && !spm) {
        snprintf(err, errlen, "unsupported tokenizer model '%.*s'", (int)model.n, model.p);
        return NULL;
    }
    uint64_t n = toks->v.arr.n;
    if (n == 0 || n > INT32_MAX || (types && types->v.arr.n != n)) {
        snprintf(err, errlen, "bad token arrays");
        return NULL;
    }
    char **bytes = calloc(n, sizeof *bytes);
    uint32_t *lens = calloc(n, sizeof *lens);
    grammar_vocab *v = NULL;
    if (!bytes || !lens)
        goto oom;
    for (uint64_t i = 0; i < n; i++) {
        int64_t type = types ? gguf_arr_i64(types, i) : 1;
        gguf_str s = toks->v.arr.strs[i];
        if (type == 3 || type == 2 || type == 5) /* control, unknown, unused */
            continue;
        char *out = malloc(s.n + 1);
        if (!out)
            goto oom;
        size_t o = 0;
        const uint8_t *p = (const uint8_t *)s.p;
        if (spm && type == 6 && s.n == 6 && memcmp(p, "<0x", 3) == 0) {
            unsigned x;
            if (sscanf((const char *)p + 3, "%2x", &x) == 1)
                out[o++] = (char)x;
        } else if (bpe && type != 4) {
            for (size_t k = 0; k < s.n;) {
                uint32_t cp = next_cp(p, s.n, &k);
                int b = gpt2_unbyte(cp);
                if (b < 0) { /* not a mapped token: keep nothing */
                    o = 0;
                    break;
                }
                out[o++] = (char)b;
            }
        } else if (spm) {
            for (size_t k = 0; k < s.n;) {
                if (k + 3 <= s.n && p[k] == 0xE2 && p[k + 1] == 0x96 && p[k + 2] == 0x81) {
                    out[o++] = ' ';
                    k += 3;
                } else {
                    out[o++] = (char)p[k++];
                }
            }
        } else {
            memcpy(out, p, s.n);
            o = s.n;
        }
        if (o == 0) {
            free(out);
            continue;
        }
        bytes[i] = out;
        lens[i] = (uint32_t)o;
    }
    int32_t eog[4];
    int32_t n_eog = 0;
    static const char *keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                 "tokenizer.ggml.eom_token_id"};
    for (int k = 0; k < 3; k++) {
        uint32_t id;
        if (gguf_get_u32(g, keys[k], &id) && id < n)
            eog[n_eog++] = (int32_t)id;
    }
    v = grammar_vocab_new((int32_t)n, (const char *const *)bytes, lens, eog, n_eog);
    if (!v)
        goto oom;
    goto done;
oom:
    snprintf(err, errlen, "out of memory");
done:
    if (bytes)
        for (uint64_t i = 0; i < n; i++)
            free(bytes[i]);
    free(bytes);
    free(lens);
    return v;
}

grammar_vocab *grammar_vocab_from_orc_vocab(const orc_vocab *v)
{
    int32_t n = v ? orc_vocab_n_tokens(v) : 0;
    if (n <= 0)
        return NULL;
    char **bytes = calloc((size_t)n, sizeof *bytes);
    uint32_t *lens = calloc((size_t)n, sizeof *lens);
    int32_t *eog = malloc((size_t)n * sizeof *eog);
    int32_t n_eog = 0;
    grammar_vocab *gv = NULL;
    if (!bytes || !lens || !eog)
        goto done;
    for (int32_t i = 0; i < n; i++) {
        if (orc_vocab_is_eog(v, i)) {
            eog[n_eog++] = i;
            continue;
        }
        if (orc_vocab_attr(v, i) & (ORC_TATTR_CONTROL | ORC_TATTR_UNKNOWN | ORC_TATTR_UNUSED))
            continue;
        char small[256];
        int32_t len = orc_vocab_piece(v, i, small, (int32_t)sizeof small, false);
        char *buf = small;
        if (len < 0) {
            buf = malloc((size_t)-len);
            if (!buf)
                goto done;
            len = orc_vocab_piece(v, i, buf, -len, false);
        }
        if (len > 0) {
            bytes[i] = malloc((size_t)len);
            if (!bytes[i]) {
                if (buf != small)
                    free(buf);
                goto done;
            }
            memcpy(bytes[i], buf, (size_t)len);
            lens[i] = (uint32_t)len;
        }
        if (buf != small)
            free(buf);
    }
    gv = grammar_vocab_new(n, (const char *const *)bytes, lens, eog, n_eog);
done:
    if (bytes)
        for (int32_t i = 0; i < n; i++)
            free(bytes[i]);
    free(bytes);
    free(lens);
    free(eog);
    return gv;
}
