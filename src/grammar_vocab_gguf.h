/* grammar_vocab_gguf.h - grammar_vocab straight from a GGUF tokenizer (gpt2 byte-level
 * BPE or llama SentencePiece metadata), for tests, benchmarks and tools that do not load
 * a full tokenizer. */
#ifndef ORC_GRAMMAR_VOCAB_GGUF_H
#define ORC_GRAMMAR_VOCAB_GGUF_H

#include "gguf.h"
#include "grammar.h"

/* Token byte strings of every non-control token; EOS/EOT/EOM ids as the EOG set. NULL
 * with a message in err when the metadata is missing or the model is not gpt2/llama. */
grammar_vocab *grammar_vocab_from_gguf(const gguf_ctx *g, char *err, size_t errlen);

#endif
