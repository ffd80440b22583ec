/* guided.h - internal glue between the public grammar API, the model's vocabulary and
 * the sampler (see guided.c). */
#ifndef ORC_GUIDED_H
#define ORC_GUIDED_H

#include "common.h"
#include "grammar.h"

/* The compiled grammar behind a public handle. */
const grammar *orc_grammar_internal(const orc_grammar *g);

/* The model's token trie for masks, built on first use (thread-safe); NULL on OOM. */
const grammar_vocab *orc_model_grammar_vocab(const orc_model *m);

#endif
