/* orchard.h - the public API of Orchard, an on-device runtime and framework for GGUF
 * language models. This is the only header a program needs. Handles are opaque; every
 * call that can fail returns an orc_status and leaves a message in orc_last_error().
 *
 * Ownership: strings and arrays returned by the library are owned by it and live as
 * long as the handle they came from, unless a function says otherwise. Every *_free
 * accepts NULL. */
#ifndef ORCHARD_H
#define ORCHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ORC_BUILDING_LIBRARY)
#define ORC_API __attribute__((visibility("default")))
#else
#define ORC_API
#endif

/* ---- Versions ------------------------------------------------------------------ */

#define ORC_VERSION_MAJOR 0
#define ORC_VERSION_MINOR 1
#define ORC_VERSION_PATCH 0
#define ORC_VERSION_STRING "0.1.0"
/* major * 1000000 + minor * 1000 + patch */
#define ORC_VERSION_NUMBER (ORC_VERSION_MAJOR * 1000000 + ORC_VERSION_MINOR * 1000 + ORC_VERSION_PATCH)

/* The version of the library actually linked (compare with ORC_VERSION_NUMBER). */
ORC_API int32_t orc_version_number(void);
ORC_API const char *orc_version_string(void);

/* ---- Status codes and errors --------------------------------------------------- */

typedef enum orc_status {
    ORC_OK = 0,
    ORC_ERR_INVALID_ARGUMENT = 1, /* a NULL handle, a bad parameter value */
    ORC_ERR_IO = 2,               /* a file could not be opened, read or mapped */
    ORC_ERR_FORMAT = 3,           /* a file or input is malformed or fails validation */
    ORC_ERR_UNSUPPORTED = 4,      /* well-formed, but uses something not implemented */
    ORC_ERR_NO_MEMORY = 5,
    ORC_ERR_BUFFER_TOO_SMALL = 6,
    ORC_ERR_CONTEXT_FULL = 7,     /* the context window has no room for the tokens */
    ORC_ERR_BUSY = 8,             /* the handle is already serving a request */
    ORC_ERR_CANCELLED = 9,
    ORC_ERR_NOT_FOUND = 10,
    ORC_ERR_INTERNAL = 11
} orc_status;

/* A static description of a status code ("invalid argument"). */
ORC_API const char *orc_status_string(orc_status status);

/* The message of the last failed call on this thread, e.g. "tensor blk.3.attn_q.weight:
 * data [1234, +5678) lies past the end of the 4000-byte file". Owned by the library,
 * valid until the next failing call on the same thread. "" when none. */
ORC_API const char *orc_last_error(void);

/* ---- Logging ------------------------------------------------------------------- */

typedef enum orc_log_level {
    ORC_LOG_ERROR = 0,
    ORC_LOG_WARN = 1,
    ORC_LOG_INFO = 2,
    ORC_LOG_DEBUG = 3
} orc_log_level;

typedef void (*orc_log_fn)(orc_log_level level, const char *message, void *user);

/* Replace the log sink (process-wide). NULL restores the default, which writes
 * warnings and errors to stderr. The library never writes to stdout. */
ORC_API void orc_log_set(orc_log_fn fn, void *user);
/* Messages above this level are dropped before formatting (default ORC_LOG_WARN). */
ORC_API void orc_log_set_level(orc_log_level level);

/* ---- Models -------------------------------------------------------------------- */

typedef struct orc_model orc_model;

/* Called while loading with progress in [0, 1]; return false to abort the load. */
typedef bool (*orc_progress_fn)(float progress, void *user);

typedef struct orc_model_params {
    int32_t n_threads;        /* worker threads for contexts; 0 = number of cores */
    bool use_mmap;            /* map the file instead of reading it (default true) */
    orc_progress_fn progress; /* may be NULL */
    void *progress_user;
    bool vocab_only;          /* load only metadata and the tokenizer (no contexts) */
    bool no_repack;           /* keep weights in the file's layout (default false: Q4_0,
                                 Q8_0, Q4_K and Q6_K matrices are interleaved at load for
                                 faster kernels; the pages become private to the process,
                                 so processes no longer share them through the page cache).
                                 The environment variable ORC_NO_REPACK=1 does the same. */
} orc_model_params;
#define ORC_MODEL_PARAMS_HAS_VOCAB_ONLY 1
#define ORC_MODEL_PARAMS_HAS_NO_REPACK 1

ORC_API orc_model_params orc_model_default_params(void);

/* Load and validate a GGUF model. params may be NULL for defaults. On success *out
 * owns the model (free with orc_model_free). */
ORC_API orc_status orc_model_load(const char *path, const orc_model_params *params,
                                  orc_model **out);
ORC_API void orc_model_free(orc_model *model);

/* Metadata. Strings live as long as the model. */
ORC_API const char *orc_model_arch(const orc_model *model);   /* general.architecture */
ORC_API const char *orc_model_name(const orc_model *model);   /* general.name or "" */
ORC_API int32_t orc_model_n_ctx_train(const orc_model *model);
ORC_API int32_t orc_model_n_vocab(const orc_model *model);
ORC_API int32_t orc_model_n_layer(const orc_model *model);
ORC_API int32_t orc_model_n_embd(const orc_model *model);
ORC_API int32_t orc_model_n_head(const orc_model *model);
ORC_API int32_t orc_model_n_head_kv(const orc_model *model);
ORC_API int32_t orc_model_n_ff(const orc_model *model);
ORC_API uint64_t orc_model_n_params(const orc_model *model);
ORC_API uint64_t orc_model_file_size(const orc_model *model);
ORC_API uint32_t orc_model_gguf_version(const orc_model *model);

/* GGUF metadata by position and by key. orc_model_meta_value writes the value as text
 * (strings raw, numbers in decimal, arrays as JSON, long arrays truncated with "...")
 * NUL-terminated into buf; returns the full length, or -1 when the key is absent.
 * A return >= cap means the text was truncated. */
ORC_API int32_t orc_model_meta_count(const orc_model *model);
ORC_API const char *orc_model_meta_key(const orc_model *model, int32_t i);
ORC_API const char *orc_model_meta_type(const orc_model *model, int32_t i); /* "u32", "[string]"... */
ORC_API int32_t orc_model_meta_value(const orc_model *model, const char *key, char *buf,
                                     size_t cap);

typedef struct orc_tensor_info {
    const char *name;
    const char *type;    /* "f16", "q4_K", ... */
    uint32_t n_dims;
    int64_t ne[4];       /* ne[0] is the row length */
    uint64_t offset;     /* absolute offset in the file */
    uint64_t n_bytes;
} orc_tensor_info;

ORC_API int32_t orc_model_n_tensors(const orc_model *model);
ORC_API orc_status orc_model_tensor(const orc_model *model, int32_t i, orc_tensor_info *out);

/* ---- Tokens -------------------------------------------------------------------- */

typedef int32_t orc_token;

enum {
    ORC_TOKEN_ATTR_NORMAL = 1 << 0,
    ORC_TOKEN_ATTR_UNKNOWN = 1 << 1,
    ORC_TOKEN_ATTR_CONTROL = 1 << 2,
    ORC_TOKEN_ATTR_USER_DEFINED = 1 << 3,
    ORC_TOKEN_ATTR_UNUSED = 1 << 4,
    ORC_TOKEN_ATTR_BYTE = 1 << 5
};

/* Tokenize len bytes of text into tokens[0..cap). add_special adds BOS/EOS as the model's
 * metadata asks; parse_special turns special-token text ("<|im_start|>") into single
 * tokens (off for user text). Returns the number of tokens, or the negative of the
 * number needed when cap is too small. */
ORC_API int32_t orc_tokenize(const orc_model *model, const char *text, size_t len,
                             orc_token *tokens, int32_t cap, bool add_special,
                             bool parse_special);

/* The bytes of tokens[0..n) as text, with the model family's leading-space rule.
 * remove_special drops BOS/EOS; unparse_special renders control tokens as their text.
 * Returns the byte count (not NUL-terminated unless room remains), or the negative of
 * the size needed. */
ORC_API int32_t orc_detokenize(const orc_model *model, const orc_token *tokens, int32_t n,
                               char *buf, int32_t cap, bool remove_special,
                               bool unparse_special);

/* The bytes one token contributes when generated after others (byte tokens give their
 * byte; special tokens give their text only when special is true). Returns the byte
 * count or the negative of the size needed. */
ORC_API int32_t orc_token_to_piece(const orc_model *model, orc_token token, char *buf,
                                   int32_t cap, bool special);

ORC_API const char *orc_token_text(const orc_model *model, orc_token token); /* vocab entry */
ORC_API float orc_token_score(const orc_model *model, orc_token token);
ORC_API uint32_t orc_token_attr(const orc_model *model, orc_token token);
ORC_API bool orc_token_is_eog(const orc_model *model, orc_token token); /* EOS, EOT, ... */
ORC_API orc_token orc_token_bos(const orc_model *model); /* -1 when none */
ORC_API orc_token orc_token_eos(const orc_model *model);
ORC_API orc_token orc_token_eot(const orc_model *model);
ORC_API orc_token orc_token_pad(const orc_model *model);
ORC_API orc_token orc_token_unk(const orc_model *model);
ORC_API bool orc_vocab_add_bos(const orc_model *model);
ORC_API bool orc_vocab_add_eos(const orc_model *model);

/* A streaming text decoder: feeds generated tokens and returns only complete UTF-8
 * characters, holding back the bytes of a character split across tokens. */
typedef struct orc_detok_stream orc_detok_stream;
ORC_API orc_detok_stream *orc_detok_stream_new(const orc_model *model);
/* Appends token's bytes; writes the text ready to emit (NUL-terminated) to *out, owned
 * by the stream and valid until the next call. */
ORC_API orc_status orc_detok_stream_push(orc_detok_stream *s, orc_token token,
                                         const char **out, size_t *out_len);
/* Returns whatever is held back (an incomplete sequence at the end of generation). */
ORC_API orc_status orc_detok_stream_flush(orc_detok_stream *s, const char **out,
                                          size_t *out_len);
ORC_API void orc_detok_stream_free(orc_detok_stream *s);

/* ---- Contexts: the KV cache and evaluation ---------------------------------------- */

typedef struct orc_context orc_context;

/* How the KV cache stores keys and values. Q8_0 halves the cache's memory. */
typedef enum orc_kv_type {
    ORC_KV_F16 = 0,     /* default, as llama.cpp */
    ORC_KV_Q8_0 = 1     /* 8-bit blocks of 32 with an f16 scale; needs KV width % 32 == 0 */
} orc_kv_type;

typedef struct orc_context_params {
    int32_t n_ctx;      /* positions per sequence; 0 = training length capped at 4096 and
                           at what fits in half the available RAM (logged at info level) */
    int32_t n_batch;    /* most tokens evaluated in one forward pass (default 512, at most 256 are
                           used: larger passes only add scratch memory); orc_eval_batch takes
                           any number and splits it */
    int32_t n_threads;  /* 0 = the model's setting */
    int32_t n_seq;      /* independent sequences in the cache (default 1) */
    orc_kv_type kv_type;
} orc_context_params;

ORC_API orc_context_params orc_context_default_params(void);

/* A context owns the KV cache and scratch memory for evaluation (allocated once here). */
ORC_API orc_status orc_context_new(orc_model *model, const orc_context_params *params,
                                   orc_context **out);
ORC_API void orc_context_free(orc_context *ctx);
ORC_API int32_t orc_context_n_ctx(const orc_context *ctx);
ORC_API const orc_model *orc_context_model(const orc_context *ctx);

/* Evaluate n tokens after those already in the cache. all_logits keeps the logits of
 * every position (orc_context_logits(ctx, i) for i in [0, n)); otherwise only the last.
 * Fails with ORC_ERR_CONTEXT_FULL, changing nothing, when they do not fit. */
ORC_API orc_status orc_eval(orc_context *ctx, const orc_token *tokens, int32_t n,
                            bool all_logits);
/* Logits (n_vocab floats) of position i of the last orc_eval; i = -1 is the last one.
 * NULL when not kept. Valid until the next orc_eval. */
ORC_API const float *orc_context_logits(const orc_context *ctx, int32_t i);
/* Number of tokens in sequence 0; drop every sequence, or keep only the first n tokens
 * of sequence 0 (prefix reuse). */
ORC_API int32_t orc_context_n_past(const orc_context *ctx);
ORC_API void orc_context_clear(orc_context *ctx);
ORC_API orc_status orc_context_truncate(orc_context *ctx, int32_t n);

/* Bytes the KV cache occupies (all sequences), and per token of one sequence. */
ORC_API uint64_t orc_context_kv_bytes(const orc_context *ctx);
ORC_API uint64_t orc_context_kv_bytes_per_token(const orc_context *ctx);
ORC_API int32_t orc_context_n_seq(const orc_context *ctx);

/* ---- Sequences: several independent conversations in one context ------------------ */

typedef int32_t orc_seq;

typedef struct orc_batch_token {
    orc_token token;
    orc_seq seq;        /* appended at the end of this sequence */
    bool logits;        /* keep the logits after this token */
} orc_batch_token;

/* Evaluate a batch that may mix sequences: each token is appended to its sequence in
 * batch order, and all of them go through the weights together. Logits of flagged tokens
 * are read with orc_context_logits(ctx, i), i the index in the batch. Fails with
 * ORC_ERR_CONTEXT_FULL (changing nothing) when a sequence would overflow. */
ORC_API orc_status orc_eval_batch(orc_context *ctx, const orc_batch_token *batch, int32_t n);

ORC_API int32_t orc_seq_n_past(const orc_context *ctx, orc_seq seq);
/* Logits after the last token of seq, if that token was evaluated with logits (or the
 * sequence was restored from a state that had them); NULL otherwise. */
ORC_API const float *orc_seq_logits(const orc_context *ctx, orc_seq seq);
ORC_API orc_status orc_seq_clear(orc_context *ctx, orc_seq seq);
/* Keep the first n tokens. On models with sliding-window layers this fails with
 * ORC_ERR_UNSUPPORTED when the window before position n was already overwritten. */
ORC_API orc_status orc_seq_truncate(orc_context *ctx, orc_seq seq, int32_t n);
/* dst becomes a copy of src (cache contents, length and logits). */
ORC_API orc_status orc_seq_copy(orc_context *ctx, orc_seq src, orc_seq dst);
/* Context shifting: remove positions [p0, p0 + n_discard) and move the later tokens back,
 * re-rotating their keys, so generation can continue past a full window. */
ORC_API orc_status orc_seq_shift(orc_context *ctx, orc_seq seq, int32_t p0, int32_t n_discard);

/* ---- Sequence state: save and restore a sequence's KV cache ------------------------ */

/* Serialize seq (versioned, checksummed, tied to the model's shape and the KV type) into
 * a buffer the caller releases with orc_free. */
ORC_API orc_status orc_seq_state_save(const orc_context *ctx, orc_seq seq, void **data,
                                      size_t *size);
/* Replace seq with a saved state. A truncated, corrupted or foreign state is rejected
 * with ORC_ERR_FORMAT and changes nothing. */
ORC_API orc_status orc_seq_state_load(orc_context *ctx, orc_seq seq, const void *data,
                                      size_t size);
ORC_API orc_status orc_seq_state_save_file(const orc_context *ctx, orc_seq seq, const char *path);
ORC_API orc_status orc_seq_state_load_file(orc_context *ctx, orc_seq seq, const char *path);
/* Releases memory the library handed to the caller. */
ORC_API void orc_free(void *p);

/* ---- Sampling ------------------------------------------------------------------ */

typedef struct orc_sampler orc_sampler;

typedef struct orc_sampler_params {
    float temperature;      /* <= 0: greedy (default 0.8) */
    int32_t top_k;          /* <= 0: off (default 40) */
    float top_p;            /* >= 1: off (default 0.95) */
    float min_p;            /* <= 0: off (default 0.05) */
    float repeat_penalty;   /* 1: off (default 1.0) */
    float presence_penalty; /* 0: off */
    float frequency_penalty;/* 0: off */
    int32_t penalty_last_n; /* window of recent tokens the penalties look at (default 64) */
    uint64_t seed;          /* same seed, same choices */
} orc_sampler_params;

ORC_API orc_sampler_params orc_sampler_default_params(void);
ORC_API orc_status orc_sampler_new(const orc_sampler_params *params, int32_t n_vocab,
                                   orc_sampler **out);
ORC_API void orc_sampler_free(orc_sampler *s);
/* Choose a token from logits (n_vocab floats, not modified). */
ORC_API orc_token orc_sampler_sample(orc_sampler *s, const float *logits);
/* Record a token as part of the history the penalties look at (prompt and output). */
ORC_API void orc_sampler_accept(orc_sampler *s, orc_token token);
ORC_API void orc_sampler_reset(orc_sampler *s);

/* One token and its log-probability (natural log). */
typedef struct orc_token_logprob {
    orc_token token;
    float logprob;
} orc_token_logprob;

/* Log-probabilities of the model's distribution: the log-softmax of logits (n_vocab
 * floats, not modified) over the whole vocabulary, before any sampler setting
 * (temperature, filters, penalties, grammar). *logprob (may be NULL) gets token's value
 * (token < 0: none is asked for); top[0..k) (may be NULL when k is 0) the min(k, n_vocab)
 * most likely tokens, most likely first, equal values by lower id first (the order greedy
 * sampling prefers). All values are <= 0; a logit of -INFINITY gives -INFINITY.
 * ORC_ERR_INVALID_ARGUMENT for a NULL logits, n_vocab <= 0, k < 0, a token outside the
 * vocabulary, or logits that are all -INFINITY or hold NaN. */
ORC_API orc_status orc_logprobs(const float *logits, int32_t n_vocab, orc_token token, float *logprob,
                                orc_token_logprob *top, int32_t k);

/* ---- Chat templates -------------------------------------------------------------- */

/* A parsed chat template (the model's tokenizer.chat_template, a Jinja program) with the
 * BOS/EOS strings it sees. JSON travels as text. Errors: ORC_ERR_FORMAT for syntax errors
 * ("line L, column C: ...") and templates that raise; ORC_ERR_INVALID_ARGUMENT for
 * malformed JSON. */
typedef struct orc_chat_template orc_chat_template;

/* The model's template, or the ChatML fallback when it has none. */
ORC_API orc_status orc_chat_template_from_model(const orc_model *model, orc_chat_template **out);
/* src NULL = ChatML fallback; bos/eos may be NULL (""). */
ORC_API orc_status orc_chat_template_from_source(const char *src, const char *bos, const char *eos,
                                                 orc_chat_template **out);
ORC_API orc_status orc_chat_template_set_tokens(orc_chat_template *t, const char *bos, const char *eos);
ORC_API bool orc_chat_template_is_fallback(const orc_chat_template *t);
ORC_API void orc_chat_template_free(orc_chat_template *t);
/* Render with a context object ({"messages": [...], "tools": [...],
 * "add_generation_prompt": true, ...any other variables}). now = seconds since the epoch
 * that strftime_now sees (-1: the clock). *out is released with orc_free. */
ORC_API orc_status orc_chat_template_render(const orc_chat_template *t, const char *context_json,
                                            int64_t now, char **out, size_t *out_len);
/* Render a conversation: messages_json an array of {role, content, tool_calls, ...};
 * tools_json and extra_json (more variables, e.g. {"enable_thinking": false}) may be NULL. */
ORC_API orc_status orc_chat_apply(const orc_chat_template *t, const char *messages_json,
                                  const char *tools_json, bool add_generation_prompt,
                                  const char *extra_json, char **out, size_t *out_len);

/* ---- Guided generation -------------------------------------------------------------- */

typedef struct orc_grammar orc_grammar;

typedef enum orc_grammar_kind {
    ORC_GRAMMAR_GBNF = 0,        /* llama.cpp's GBNF; root rule "root" unless params->root */
    ORC_GRAMMAR_JSON_SCHEMA = 1, /* a JSON Schema (draft 2020-12 subset); output is JSON */
    ORC_GRAMMAR_REGEX = 2        /* a PCRE-style regular expression over the whole output */
} orc_grammar_kind;

typedef struct orc_grammar_params {
    orc_grammar_kind kind;
    bool pretty;        /* JSON Schema: allow indented output (default compact) */
    const char *root;   /* GBNF: start rule (NULL = "root") */
} orc_grammar_params;

ORC_API orc_grammar_params orc_grammar_default_params(void);
/* Compiles a grammar. Unsupported schema keywords, syntax errors and limits are
 * ORC_ERR_FORMAT or ORC_ERR_UNSUPPORTED with the reason in orc_last_error(). */
ORC_API orc_status orc_grammar_new(const char *text, size_t len, const orc_grammar_params *params,
                                   orc_grammar **out);
ORC_API void orc_grammar_free(orc_grammar *g);
/* A JSON Schema as the equivalent GBNF text (released with orc_free). */
ORC_API orc_status orc_json_schema_to_gbnf(const char *schema, size_t len, bool pretty, char **out);

/* Constrains a sampler to a grammar (NULL removes it): orc_sampler_sample then only picks
 * tokens that keep the output inside the grammar, and end-of-generation tokens only when
 * the output is complete; orc_sampler_accept advances the grammar. The grammar must
 * outlive the sampler; the model is used for its vocabulary. orc_sampler_reset restarts
 * the grammar too. */
ORC_API orc_status orc_sampler_set_grammar(orc_sampler *s, const orc_model *model,
                                           const orc_grammar *g);
/* True when the text accepted so far is a complete sentence of the grammar. */
ORC_API bool orc_sampler_grammar_complete(const orc_sampler *s);
/* True when nothing but end-of-generation can follow (generation should stop). */
ORC_API bool orc_sampler_grammar_done(const orc_sampler *s);
/* Fast-forward: when the grammar allows exactly one continuation, writes tokens that
 * spell it (each checked against the grammar) without sampling; returns how many (0 when
 * the next step is a real choice). The caller evaluates them and passes each to
 * orc_sampler_accept. */
ORC_API int32_t orc_sampler_forced_tokens(orc_sampler *s, orc_token *out, int32_t cap);

/* ---- Sessions: conversations, streaming, structured output, tools ----------------- */

/* A session is one conversation on a loaded model: developer instructions (the system
 * prompt, always first), optional tools, generation defaults and a transcript. It owns
 * one context (KV cache) and reuses the cached prefix between turns. Many sessions may
 * share one model. A session serves one request at a time: a second concurrent call
 * returns ORC_ERR_BUSY. All JSON travels as UTF-8 text. */
typedef struct orc_session orc_session;

/* What a session does when the conversation no longer fits the context window. */
typedef enum orc_context_policy {
    ORC_CONTEXT_FAIL = 0,        /* ORC_ERR_CONTEXT_FULL with the numbers in orc_last_error() */
    ORC_CONTEXT_DROP_OLDEST = 1, /* drop the oldest turns, keeping the instructions and the
                                    latest prompt */
    ORC_CONTEXT_SUMMARIZE = 2    /* replace the oldest turns by a summary the model writes */
} orc_context_policy;

/* How the model writes tool calls. AUTO picks from the chat template. */
typedef enum orc_tool_syntax {
    ORC_TOOL_SYNTAX_AUTO = 0,
    ORC_TOOL_SYNTAX_HERMES = 1,      /* <tool_call>{"name":..,"arguments":..}</tool_call> (Qwen, Hermes, ChatML) */
    ORC_TOOL_SYNTAX_LLAMA3 = 2,      /* {"name":..,"parameters":..} (optionally after <|python_tag|>) */
    ORC_TOOL_SYNTAX_MISTRAL = 3,     /* [TOOL_CALLS][{"name":..,"arguments":..}] or [TOOL_CALLS]name[ARGS]{..} */
    ORC_TOOL_SYNTAX_FUNCTIONARY = 4, /* >>>name\n{..} (v3.2) or <function=name>{..}</function> (v3.1) */
    ORC_TOOL_SYNTAX_GRANITE = 5,     /* <|tool_call|>[{"name":..,"arguments":..}] */
    ORC_TOOL_SYNTAX_DEEPSEEK = 6,    /* <｜tool▁calls▁begin｜>...<｜tool▁sep｜>... (V3, R1 and V3.1 forms) */
    ORC_TOOL_SYNTAX_KIMI = 7,        /* <|tool_calls_section_begin|><|tool_call_begin|>functions.name:0... */
    ORC_TOOL_SYNTAX_GLM = 8,         /* <tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call> */
    ORC_TOOL_SYNTAX_GPT_OSS = 9,     /* harmony: <|channel|>commentary to=functions.name ...<|message|>{..}<|call|> */
    ORC_TOOL_SYNTAX_QWEN3_CODER = 10,/* <tool_call><function=name><parameter=k>v</parameter></function></tool_call> */
    ORC_TOOL_SYNTAX_NONE = 11        /* never parse tool calls */
} orc_tool_syntax;

/* A tool's implementation. args_json: the call's arguments (a JSON object, already checked
 * against the tool's schema when the grammar constrained it). On success set *result to a
 * malloc'd NUL-terminated string (the library frees it with free()) and return ORC_OK; any
 * other status (with an optional malloc'd message in *result) is entered into the
 * transcript as an error output and the model continues. May run on a worker thread,
 * concurrently with the session's other tools when parallel_tool_calls is set. */
typedef orc_status (*orc_tool_fn)(const char *args_json, char **result, void *user);

typedef struct orc_tool {
    const char *name;        /* [A-Za-z0-9_.-]+ */
    const char *description; /* one line */
    const char *parameters;  /* JSON Schema of the arguments object (NULL: {"type":"object"}) */
    orc_tool_fn fn;
    void *user;
} orc_tool;

/* Sampling and stopping for one response. */
typedef struct orc_generation_options {
    orc_sampler_params sampler;  /* temperature <= 0 is greedy; seed makes runs repeat */
    int32_t max_tokens;          /* most response tokens; <= 0: until the context is full */
    const char *const *stop;     /* n_stop strings that end the response (not included) */
    int32_t n_stop;
} orc_generation_options;

ORC_API orc_generation_options orc_generation_default_options(void);

typedef struct orc_session_params {
    const char *instructions;        /* system prompt, may be NULL; copied */
    const orc_tool *tools;           /* n_tools tools, copied (names, schemas, callbacks) */
    int32_t n_tools;
    orc_generation_options defaults; /* used when a request gives no options; copied */
    orc_context_params context;      /* the session's context (n_seq is forced to 1) */
    orc_context_policy policy;       /* default ORC_CONTEXT_FAIL */
    bool prefix_reuse;               /* reuse the KV cache of the common prefix (default true) */
    int32_t max_tool_rounds;         /* tool rounds per request before giving up (default 8) */
    bool parallel_tool_calls;        /* run a turn's calls on threads (default false) */
    bool constrain_tool_calls;       /* grammar-constrain tool calls to the tools' names and
                                        argument schemas (default true) */
    orc_tool_syntax tool_syntax;     /* default AUTO */
    const char *chat_template;       /* Jinja source overriding the model's; NULL: the model's */
} orc_session_params;

ORC_API orc_session_params orc_session_default_params(void);

/* Creates a session on model (which must outlive it). params may be NULL. */
ORC_API orc_status orc_session_new(orc_model *model, const orc_session_params *params,
                                   orc_session **out);
ORC_API void orc_session_free(orc_session *s);

/* Called with each piece of response text as it is generated (whole UTF-8 characters;
 * stop strings are held back and never delivered). Return false to cancel. */
typedef bool (*orc_delta_fn)(const char *delta, size_t len, void *user);
/* Called with the structured value parsed so far (JSON text, unfinished strings, arrays
 * and objects closed), each time it changes, and last with the final value. Return false
 * to cancel. */
typedef bool (*orc_snapshot_fn)(const char *json, void *user);
/* Called while the model writes a tool call: index (the call's number in the request,
 * from 0), the tool's name and its arguments parsed so far (a JSON object; unfinished
 * strings, arrays and objects closed, as for structured snapshots), each time they change
 * with complete false; then once per call with the complete arguments and complete true,
 * just before the tool runs. Return false to cancel. */
typedef bool (*orc_tool_call_fn)(int32_t index, const char *name, const char *arguments_json,
                                 bool complete, void *user);

typedef enum orc_stop_reason {
    ORC_STOP_EOS = 0,          /* the model ended its turn */
    ORC_STOP_MAX_TOKENS = 1,
    ORC_STOP_STRING = 2,       /* a stop string */
    ORC_STOP_GRAMMAR = 3,      /* the structured value is complete */
    ORC_STOP_CONTEXT_FULL = 4, /* the window filled during generation */
    ORC_STOP_CANCELLED = 5,
    ORC_STOP_TOOL_ROUNDS = 6   /* max_tool_rounds reached with the model still calling tools */
} orc_stop_reason;

/* What one request cost, summed over its tool rounds. */
typedef struct orc_response_stats {
    int32_t n_prompt;          /* prompt tokens of the last round (the rendered transcript) */
    int32_t n_cached;          /* prompt tokens reused from the KV cache (all rounds) */
    int32_t n_evaluated;       /* prompt tokens evaluated (all rounds) */
    int32_t n_generated;       /* response tokens sampled or forced (all rounds) */
    int32_t n_tool_calls;
    int32_t n_tool_rounds;
    int32_t n_dropped;         /* transcript entries dropped or summarized by the policy */
    double prompt_ms;          /* time evaluating prompts */
    double first_token_ms;     /* from the call to the first response token */
    double generate_ms;        /* time generating */
    orc_stop_reason stop_reason;
} orc_response_stats;

typedef struct orc_request {
    const char *prompt;                     /* the user's message (required) */
    const orc_generation_options *options;  /* NULL: the session's defaults */
    orc_delta_fn on_delta;                  /* may be NULL */
    orc_snapshot_fn on_snapshot;            /* structured responses; may be NULL */
    orc_tool_call_fn on_tool_call;          /* tool-call argument snapshots; may be NULL */
    void *user;                             /* passed to the callbacks */
    const char *schema;                     /* JSON Schema: the response is a JSON value of it
                                               (tools are not offered in such a request) */
    bool schema_in_prompt;                  /* also show the schema to the model (default true) */
    bool use_tools;                         /* offer the session's tools (default true) */
    bool require_tool_call;                 /* the first round must call a tool: the tool-call
                                               grammar applies from its first token (every
                                               syntax but "none"; needs constrain_tool_calls) */
} orc_request;

ORC_API orc_request orc_request_default(void);

/* Runs one request: appends the prompt to the transcript, generates (calling tools as the
 * model asks), appends the response, and sets *response (may be NULL; release with
 * orc_free) to the response text or, with a schema, the JSON value. stats may be NULL.
 * Errors: ORC_ERR_BUSY (another request is running; nothing changes), ORC_ERR_CONTEXT_FULL
 * (the prompt does not fit and the policy could not make room; nothing changes),
 * ORC_ERR_CANCELLED (the partial response is returned and kept in the transcript),
 * ORC_ERR_FORMAT (a structured response that is not valid JSON, e.g. cut by max_tokens). */
ORC_API orc_status orc_session_respond_ex(orc_session *s, const orc_request *req,
                                          char **response, orc_response_stats *stats);
/* Shorthand: respond to prompt with the session's defaults. */
ORC_API orc_status orc_session_respond(orc_session *s, const char *prompt, char **response);

/* Asks the running request to stop (thread-safe, from any thread or a callback). The
 * flag is cleared when the next request starts. */
ORC_API void orc_session_cancel(orc_session *s);

/* Evaluates the instructions (and, when prefix is not NULL, the start of the next user
 * message) ahead of the first request so it starts with a warm cache. *n_evaluated (may
 * be NULL) gets the tokens evaluated. ORC_ERR_BUSY while a request runs. */
ORC_API orc_status orc_session_prewarm(orc_session *s, const char *prefix, int32_t *n_evaluated);

/* The context window, the tokens in the KV cache, and the tokens the prompt of a request
 * with this user message would take (transcript + message + generation header). */
ORC_API int32_t orc_session_n_ctx(const orc_session *s);
ORC_API int32_t orc_session_n_cached(const orc_session *s);
ORC_API orc_status orc_session_count_tokens(orc_session *s, const char *prompt, int32_t *n_tokens);

/* The transcript as JSON ({"version":1,"entries":[{"type":"instructions"|"prompt"|
 * "response"|"tool_calls"|"tool_output"|"summary", ...}]}); release with orc_free. */
ORC_API orc_status orc_session_transcript_json(orc_session *s, char **json);
/* Replaces the session's transcript (instructions included) with a serialized one; the
 * next request re-evaluates what differs from the cache. ORC_ERR_FORMAT on a malformed
 * transcript (nothing changes). */
ORC_API orc_status orc_session_load_transcript(orc_session *s, const char *json);
/* Forgets the conversation, keeping the instructions. */
ORC_API orc_status orc_session_reset(orc_session *s);
ORC_API int32_t orc_session_n_entries(const orc_session *s);
/* The tool-call syntax in use: "hermes", "llama3", "mistral", "functionary", "granite",
 * "deepseek", "kimi", "glm", "gpt-oss", "qwen3-coder" or "none". */
ORC_API const char *orc_session_tool_syntax_name(const orc_session *s);

/* Parses tool calls in model output text for a syntax (never AUTO). *calls_json gets a
 * JSON array [{"name":..,"arguments":{..}}] (release with orc_free), *content (may be
 * NULL) the text outside the calls. Returns ORC_ERR_FORMAT for a call that is malformed. */
ORC_API orc_status orc_tool_calls_parse(orc_tool_syntax syntax, const char *text,
                                        char **calls_json, char **content);

/* Whether a model file can run on this machine with a context of n_ctx positions (0: the
 * default): ORC_OK, or ORC_ERR_UNSUPPORTED (architecture, CPU feature) / ORC_ERR_NO_MEMORY
 * (weights + KV cache exceed available memory) / ORC_ERR_IO / ORC_ERR_FORMAT, with the
 * reason written to why (NUL-terminated, may be NULL). */
ORC_API orc_status orc_model_check(const char *path, int32_t n_ctx, char *why, size_t why_cap);

/* ---- Quantization --------------------------------------------------------------- */

typedef struct orc_quantize_params {
    const char *type;   /* "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k_m", "q5_k_m",
                           "q6_k", "iq4_nl", "f16", "bf16", "f32" (default "q4_k_m") */
    int32_t n_threads;  /* 0 = all cores */
} orc_quantize_params;

ORC_API orc_quantize_params orc_quantize_default_params(void);

/* Writes a copy of the GGUF model at in_path to out_path with its weight matrices
 * converted to params->type (norms, biases and other 1-D tensors stay f32; mixed
 * recipes like q4_k_m keep some tensors at higher precision, as llama.cpp does).
 * Metadata is copied, with general.file_type updated. */
ORC_API orc_status orc_model_quantize(const char *in_path, const char *out_path,
                                      const orc_quantize_params *params);

#ifdef __cplusplus
}
#endif

#endif
