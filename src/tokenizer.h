/* tokenizer.h - internal vocabulary and tokenizers (SentencePiece "llama" and byte-level
 * BPE "gpt2" with the pre-tokenizers GGUF names in tokenizer.ggml.pre). Built from the
 * tokenizer.ggml.* metadata of an open GGUF file; immutable and thread-safe after load. */
#ifndef ORC_TOKENIZER_H
#define ORC_TOKENIZER_H

#include "gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct orc_vocab orc_vocab;

/* Token attributes (same bits as ORC_TOKEN_ATTR_* in orchard.h). */
enum {
    ORC_TATTR_NORMAL = 1 << 0,
    ORC_TATTR_UNKNOWN = 1 << 1,
    ORC_TATTR_CONTROL = 1 << 2,
    ORC_TATTR_USER_DEFINED = 1 << 3,
    ORC_TATTR_UNUSED = 1 << 4,
    ORC_TATTR_BYTE = 1 << 5,
    /* Not in orchard.h: when such a token is matched in text, whitespace before it
     * (LSTRIP) or after it (RSTRIP) is dropped, as llama.cpp does for Phi-3. */
    ORC_TATTR_LSTRIP = 1 << 6,
    ORC_TATTR_RSTRIP = 1 << 7
};

/* tokenizer.ggml.model */
enum { ORC_VOCAB_SPM = 1, ORC_VOCAB_BPE = 2 };

/* Build the vocabulary from metadata. NULL with a message in err on failure (missing or
 * inconsistent arrays, unsupported tokenizer model or pre-tokenizer). The vocab copies
 * what it needs: it does not reference the gguf_ctx after returning. */
orc_vocab *orc_vocab_load(const gguf_ctx *g, char *err, size_t errlen);
void orc_vocab_free(orc_vocab *v);

int32_t orc_vocab_n_tokens(const orc_vocab *v);
const char *orc_vocab_text(const orc_vocab *v, int32_t id);   /* NULL when out of range */
float orc_vocab_score(const orc_vocab *v, int32_t id);
uint32_t orc_vocab_attr(const orc_vocab *v, int32_t id);
const char *orc_vocab_model_name(const orc_vocab *v);  /* "llama", "gpt2" */
const char *orc_vocab_pre_name(const orc_vocab *v);    /* tokenizer.ggml.pre or "default" */

int32_t orc_vocab_bos(const orc_vocab *v);   /* -1 when none */
int32_t orc_vocab_eos(const orc_vocab *v);
int32_t orc_vocab_eot(const orc_vocab *v);
int32_t orc_vocab_pad(const orc_vocab *v);
int32_t orc_vocab_unk(const orc_vocab *v);
bool orc_vocab_get_add_bos(const orc_vocab *v);
bool orc_vocab_get_add_eos(const orc_vocab *v);
bool orc_vocab_is_eog(const orc_vocab *v, int32_t id);

int32_t orc_vocab_type(const orc_vocab *v);  /* ORC_VOCAB_SPM or ORC_VOCAB_BPE */
int32_t orc_vocab_eom(const orc_vocab *v);   /* -1 when none */
int32_t orc_vocab_nl(const orc_vocab *v);    /* the token "\n" becomes, or -1 */
bool orc_vocab_get_add_space_prefix(const orc_vocab *v);
/* Id of the token whose text is exactly text[0..len), or -1. */
int32_t orc_vocab_find(const orc_vocab *v, const char *text, size_t len);

/* Same contracts as orc_tokenize / orc_detokenize / orc_token_to_piece in orchard.h.
 * orc_vocab_tokenize returns INT32_MIN (message in orc_last_error) when memory runs
 * out or the result would exceed INT32_MAX tokens. orc_vocab_piece and
 * orc_vocab_detokenize give 0 bytes for ids out of range. */
int32_t orc_vocab_tokenize(const orc_vocab *v, const char *text, size_t len, int32_t *out,
                           int32_t cap, bool add_special, bool parse_special);
int32_t orc_vocab_detokenize(const orc_vocab *v, const int32_t *ids, int32_t n, char *buf,
                             int32_t cap, bool remove_special, bool unparse_special);
int32_t orc_vocab_piece(const orc_vocab *v, int32_t id, char *buf, int32_t cap, bool special);

#endif
