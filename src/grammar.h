/* grammar.h - internal grammar core for guided generation: a byte-level context-free
 * grammar, an incremental pushdown matcher over it (cheap snapshots), and per-vocabulary
 * token tries that turn a matcher state into a token mask. GBNF, regex and JSON Schema
 * front ends (gbnf.c, regex_grammar.c, json_schema.c) all compile into this form. */
#ifndef ORC_GRAMMAR_H
#define ORC_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- compiled grammars (immutable, shareable between threads) ---- */

typedef struct grammar grammar;

/* Limits that keep untrusted inputs from exhausting time or memory. */
#define GRAMMAR_MAX_ELEMS (1u << 22)    /* total grammar elements after expansion */
#define GRAMMAR_MAX_RULES (1u << 20)
#define GRAMMAR_MAX_DEPTH 256           /* nesting of groups / schemas while parsing */
#define GRAMMAR_MAX_REPEAT 10000        /* bound of {m,n} repetitions */

/* GBNF as llama.cpp writes it. root names the start rule (NULL: "root"). On failure
 * returns NULL and writes "line:col: message" into err. */
grammar *grammar_from_gbnf(const char *text, size_t len, const char *root, char *err,
                           size_t errlen);

/* A PCRE-style regular expression, matched against the whole output (an unanchored
 * pattern still has to match everything generated; ^ and $ are accepted at the ends).
 * Supported: literals, escapes (\d \w \s \D \W \S \n \t \xHH \uHHHH ...), . (any
 * character except newline), [classes] with ranges and negation, groups (…), (?:…),
 * alternation, * + ? {m} {m,} {m,n} (lazy/possessive suffixes accepted, same language).
 * NULL with a message on failure (backreferences, lookaround: unsupported). */
grammar *grammar_from_regex(const char *re, size_t len, char *err, size_t errlen);

/* Translate a regex into GBNF rules (named prefix, prefix-1, ...), appended to out.
 * json_string: the text is the content of a JSON string, so characters that need
 * escaping are written escaped and classes never produce them unescaped. When !anchored
 * the pattern may be preceded/followed by any text (JSON Schema "pattern" semantics,
 * only meaningful with json_string). Returns 0, or -1 with a message in err. */
typedef struct grammar_strbuf {
    char *p;
    size_t n, cap;
    bool oom;
} grammar_strbuf;
int regex_to_gbnf(const char *re, size_t len, const char *prefix, bool json_string,
                  grammar_strbuf *out, char *err, size_t errlen);

/* JSON Schema -> grammar. */
typedef struct {
    bool pretty;    /* false: compact {"a":1,"b":[1,2]}; true: {"a": 1, "b": [1, 2]} */
} json_schema_opts;
/* Compile a JSON schema (text). Errors name the JSON pointer of the offending keyword:
 * "/properties/age/minimum: ...". Unsupported keywords are errors, never ignored. */
grammar *grammar_from_json_schema(const char *schema, size_t len, const json_schema_opts *opts,
                                  char *err, size_t errlen);
/* Same, producing the GBNF text (malloc'd, caller frees) instead; NULL on error. */
char *json_schema_to_gbnf(const char *schema, size_t len, const json_schema_opts *opts,
                          char *err, size_t errlen);

void grammar_free(grammar *g);
int32_t grammar_n_rules(const grammar *g);
size_t grammar_n_elems(const grammar *g);

/* ---- matchers: the incremental parse state of one output ---- */

typedef struct grammar_matcher grammar_matcher;

/* A new matcher at the start of the grammar. g must outlive it. NULL on OOM or when the
 * grammar's start state exceeds the matcher limits. Matchers of one grammar share its
 * state tables and mask cache (so later outputs of a grammar are cheaper); the sharing is
 * thread-safe, and a pool that grew past 1M states is replaced for new matchers. */
grammar_matcher *grammar_matcher_new(const grammar *g);
/* A copy at the same position (O(1), shares the caches). Any matcher may be used from any
 * thread, one thread per matcher at a time. */
grammar_matcher *grammar_matcher_clone(const grammar_matcher *m);
void grammar_matcher_free(grammar_matcher *m);
/* Back to the start of the grammar. */
void grammar_matcher_reset(grammar_matcher *m);

/* The whole position as one number, valid for matchers sharing a pool: restore()
 * returns to it in O(1) (rollback of speculative or rejected tokens). Equal positions of
 * the same matcher family have equal snapshots, so it also serves as a state key. */
typedef uint64_t grammar_snapshot;
grammar_snapshot grammar_matcher_snapshot(const grammar_matcher *m);
void grammar_matcher_restore(grammar_matcher *m, grammar_snapshot s);

/* Feed one byte / a byte string. Returns false and leaves the matcher unchanged when the
 * grammar does not allow it (accept_bytes is all-or-nothing). */
bool grammar_matcher_accept_byte(grammar_matcher *m, uint8_t b);
bool grammar_matcher_accept_bytes(grammar_matcher *m, const void *bytes, size_t n);
/* Whether b may come next. */
bool grammar_matcher_can_accept(grammar_matcher *m, uint8_t b);
/* The set of bytes that may come next, as a 256-bit set (bit b of out[b >> 3]). */
void grammar_matcher_allowed_bytes(grammar_matcher *m, uint8_t out[32]);
/* The text so far is a complete sentence of the grammar (EOS may come now). */
bool grammar_matcher_is_complete(const grammar_matcher *m);
/* EOS was accepted: nothing more may come. */
bool grammar_matcher_is_terminated(const grammar_matcher *m);
/* Bytes forced next: while the text is not complete and exactly one byte may follow,
 * that byte is appended to buf (up to cap). Does not advance the matcher. Returns the
 * number of forced bytes written (0: a real choice, or completion, comes next). */
size_t grammar_matcher_forced_bytes(grammar_matcher *m, uint8_t *buf, size_t cap);
/* A limit was hit (too many parse stacks: a highly ambiguous grammar). Nothing further is
 * accepted; the message says which limit. NULL when fine. */
const char *grammar_matcher_error(const grammar_matcher *m);

/* ---- vocabularies and token masks ---- */

typedef struct grammar_vocab grammar_vocab;

/* Precompute the byte trie over the token strings of one vocabulary (once per tokenizer;
 * immutable afterwards, shareable between threads and matchers). tok_bytes[i]/tok_len[i]
 * are the bytes token i produces when detokenized; a NULL or empty entry excludes the
 * token (control/special tokens: pass NULL). eog lists the end-of-generation ids (EOS,
 * EOT, ...): they are allowed exactly when the matcher is complete. The strings are
 * copied. NULL on OOM or bad arguments. */
grammar_vocab *grammar_vocab_new(int32_t n_tokens, const char *const *tok_bytes,
                                 const uint32_t *tok_len, const int32_t *eog, int32_t n_eog);
void grammar_vocab_free(grammar_vocab *v);
int32_t grammar_vocab_n_tokens(const grammar_vocab *v);
/* Number of uint32 words of a mask: (n_tokens + 31) / 32. */
size_t grammar_vocab_mask_words(const grammar_vocab *v);
size_t grammar_vocab_trie_nodes(const grammar_vocab *v);
/* The bytes of token id as the masks see them (NULL, *len = 0: excluded or EOG). */
const char *grammar_vocab_token(const grammar_vocab *v, int32_t id, uint32_t *len);

/* Write the set of tokens allowed next into bitmask (bit id of word id/32): a token is
 * allowed when all its bytes are accepted from the current position; EOG ids when the
 * text is complete. After termination (or a matcher error) the mask is empty. Masks of
 * repeated positions come from a cache. Returns the number of allowed tokens. */
int32_t grammar_fill_mask(grammar_matcher *m, const grammar_vocab *v, uint32_t *bitmask);
/* Advance by one token. EOG: accepted only when complete, then the matcher is
 * terminated. false (matcher unchanged) when the token is not allowed. */
bool grammar_accept_token(grammar_matcher *m, const grammar_vocab *v, int32_t id);
/* Whether token id is allowed next (without a mask). */
bool grammar_token_allowed(grammar_matcher *m, const grammar_vocab *v, int32_t id);

/* Statistics of one matcher family (for benchmarks and tests). */
typedef struct {
    uint64_t mask_calls, mask_cache_hits;
    uint64_t trie_nodes_visited;
    uint64_t expansions;      /* transitions computed (not found in the tables) */
    /* positions whose non-ASCII characters were found to lead to one state by a
     * char-complete rule (two transitions) / by trying every character form */
    uint64_t chars_shortcut, chars_full;
    uint32_t n_stack_nodes, n_states;
} grammar_stats;
void grammar_matcher_stats(const grammar_matcher *m, grammar_stats *out);
/* For tests: decide again, by trying every character form, each position of the matcher
 * family whose non-ASCII characters were judged by the char-complete shortcut; false on
 * any disagreement. *n_checked (may be NULL): how many were checked. */
bool grammar_matcher_check_chars(grammar_matcher *m, uint32_t *n_checked);

/* ---- construction (used by the front ends) ---- */

typedef struct grammar_builder grammar_builder;
typedef uint32_t grammar_elem;   /* opaque element: a byte set or a rule reference */

grammar_builder *gb_new(void);
void gb_free(grammar_builder *b);
/* The rule with that name, created on first use (referenced before defined is fine).
 * -1 when the limits are hit. */
int32_t gb_rule(grammar_builder *b, const char *name, size_t n);
/* A fresh rule named after base (base_1, base_2, ...). */
int32_t gb_anon_rule(grammar_builder *b, const char *base);
bool gb_rule_defined(const grammar_builder *b, int32_t rule);
/* Add one alternative (a sequence; n == 0 is the empty string) to rule. false on limits. */
bool gb_add_alt(grammar_builder *b, int32_t rule, const grammar_elem *seq, size_t n);
grammar_elem gb_elem_rule(int32_t rule);
/* An element matching one byte of the 256-bit set. */
grammar_elem gb_elem_bytes(grammar_builder *b, const uint8_t set[32]);
/* An element matching one UTF-8 encoded code point from the set given as sorted or unsorted
 * inclusive ranges (lo[i]..hi[i]), complemented when negate. Surrogates and values above
 * U+10FFFF never match. Returns an element (a byte set for single-byte sets, otherwise a
 * rule) or UINT32_MAX on limits / an empty set (err says which). */
grammar_elem gb_elem_codepoints(grammar_builder *b, const uint32_t *lo, const uint32_t *hi,
                                size_t n, bool negate);
/* The builder's error message after a failure. */
const char *gb_error(const grammar_builder *b);
/* Finish: checks that every referenced rule is defined and that no rule is left-recursive
 * (directly or through rules that can be empty). NULL with a message in err on failure.
 * The builder is consumed either way. */
grammar *gb_finish(grammar_builder *b, const char *root, char *err, size_t errlen);

/* strbuf helpers for the front ends. */
void gsb_put(grammar_strbuf *s, const char *p, size_t n);
void gsb_puts(grammar_strbuf *s, const char *p);
void gsb_printf(grammar_strbuf *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
