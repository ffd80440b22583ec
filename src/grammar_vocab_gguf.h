/* grammar_vocab_gguf.h - grammar_vocab (token byte strings for masks) from a loaded
 * orc_vocab (the integration path), or straight from GGUF tokenizer metadata (gpt2 / llama)
 * for tests, benchmarks and tools that do not load a full tokenizer. */
#ifndef ORC_GRAMMAR_VOCAB_GGUF_H
#define ORC_GRAMMAR_VOCAB_GGUF_H

#include "gguf.h"
#include "grammar.h"
#include "tokenizer.h"

/* Token byte strings of every non-control token; EOS/EOT/EOM ids as the EOG set. NULL
 * with a message in err when the metadata is missing or the model is not gpt2/llama. */
grammar_vocab *grammar_vocab_from_gguf(const gguf_ctx *g, char *err, size_t errlen);

/* The same from a loaded tokenizer: each token's bytes are orc_vocab_piece(special=false)
 * (control, unknown and unused tokens excluded); EOG ids are those orc_vocab_is_eog says.
 * NULL on OOM. */
grammar_vocab *grammar_vocab_from_orc_vocab(const orc_vocab *v);

#endif
