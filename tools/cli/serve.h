/* serve.h - internal interface of `orchard serve`: the request validator (serve_request.c,
 * JSON body -> srv_request, also compiled into the fuzz harness), the batching engine
 * (serve_engine.c: slots, queue, scheduler thread) and the HTTP front end (cmd_serve.c). */
#ifndef ORC_SERVE_H
#define ORC_SERVE_H

#include "orchard.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Requests (serve_request.c; needs only jansson) ---------------------------- */

typedef enum { SRV_CHAT = 0, SRV_COMPLETION = 1 } srv_kind;
typedef enum { SRV_FMT_TEXT = 0, SRV_FMT_JSON_OBJECT, SRV_FMT_JSON_SCHEMA } srv_format;

#define SRV_MAX_STOP 4
#define SRV_MAX_STOP_LEN 256
#define SRV_MAX_JSON_DEPTH 64
#define SRV_MAX_MESSAGES 4096
#define SRV_MAX_TOOLS 128
#define SRV_MAX_N 16         /* most choices per request ("n") */
#define SRV_MAX_TOP_LOGPROBS 20

typedef struct srv_request {
    srv_kind kind;
    char *model;          /* requested model id, NULL when absent */
    char *messages_json;  /* chat: normalized [{role, content, ...}] for the template */
    char *tools_json;     /* chat: the tools array, NULL when none */
    char *prompt;         /* completion: the prompt text */
    int32_t max_tokens;   /* -1: until the context is full */
    float temperature, top_p, presence_penalty, frequency_penalty;
    bool has_seed;
    uint64_t seed;
    char *stop[SRV_MAX_STOP];
    int n_stop;
    bool stream, include_usage;
    bool escalate;        /* x-orchard "escalate": true per-request consent flag */
    srv_format format;
    char *schema_json;    /* JSON_OBJECT / JSON_SCHEMA / forced tool call: the schema */
    bool tool_call;       /* tool_choice forces a call: output is {"name":..,"arguments":..} */
    bool tools_auto;      /* tools given, tool_choice auto: parse calls the model writes */
    int32_t n_choices;    /* "n": 1 ... SRV_MAX_N */
    bool logprobs;        /* chat "logprobs": true, or completions "logprobs": k */
    int32_t top_logprobs; /* alternatives per token, 0 ... SRV_MAX_TOP_LOGPROBS */
} srv_request;

typedef struct srv_error {
    int status;            /* HTTP status */
    const char *type;      /* "invalid_request_error", ... */
    const char *code;      /* NULL or "context_length_exceeded", ... */
    char param[64];        /* "" when not about one parameter */
    char message[320];
} srv_error;

/* Fills err (status, type, code, formatted message). Returns -1 for convenience. */
int srv_error_set(srv_error *err, int status, const char *type, const char *code,
                  const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The OpenAI error object {"error":{"message","type","param","code"}} (malloc'd). */
char *srv_error_json(const srv_error *err);

/* Deepest nesting of arrays/objects in len bytes of JSON-ish text (strings skipped);
 * stops counting past limit + 1. */
int srv_json_depth(const char *text, size_t len, int limit);

/* Validates a request body for kind. Returns 0 and fills *out (release with
 * srv_request_free), or -1 with *err set (400 for malformed JSON and invalid
 * parameters). Never reads past len; the body need not be NUL-terminated. */
int srv_request_parse(const char *body, size_t len, srv_kind kind, srv_request *out,
                      srv_error *err);
void srv_request_free(srv_request *r);

/* Copies len bytes replacing invalid UTF-8 with U+FFFD (malloc'd, NUL-terminated). */
char *srv_utf8_sanitize(const char *s, size_t len, size_t *out_len);

/* ---- Engine (serve_engine.c) ----------------------------------------------------- */

typedef struct srv_engine srv_engine;
typedef struct srv_job srv_job;

typedef struct srv_engine_params {
    int32_t n_parallel;   /* slots = sequences of the one context */
    int32_t n_ctx;        /* positions per slot */
    int32_t n_batch;      /* most tokens per batch step */
    int32_t n_threads;
    int32_t queue_max;    /* waiting jobs beyond the busy slots before 429 */
    bool keep_cache;      /* false: clear a slot's sequence after every job (stateless) */
} srv_engine_params;

/* A generation to run: prompt tokens and sampling settings. The engine copies what it
 * keeps; grammar (may be NULL) is owned by the job from submission on. */
typedef struct srv_job_spec {
    const orc_token *prompt;
    int32_t n_prompt;
    int32_t max_tokens;       /* -1: until the context is full */
    orc_sampler_params sampling;
    orc_grammar *grammar;
    char *const *stop;
    int n_stop;
    bool logprobs;            /* record each generated token's log-probability */
    int32_t top_logprobs;     /* ... and this many most likely alternatives */
} srv_job_spec;

/* One generated token with its log-probability (orc_logprobs) and the bytes of the job's
 * text it produced, [start, end) (empty while the detokenizer holds back a split UTF-8
 * character; past the final length when a stop string cut it off). */
typedef struct srv_tok {
    orc_token token;
    float logprob;
    uint32_t start, end;
} srv_tok;

/* What a job has produced so far: a snapshot copied under the engine lock, released with
 * srv_job_view_free. */
typedef struct srv_job_view {
    char *text;              /* copy of the text's bytes [from, ready), NUL-terminated */
    size_t from, ready;      /* ready: bytes safe to send (stop-string holdback) */
    srv_tok *toks;           /* copies of the token records [toks_from, toks_from + n_toks) */
    orc_token_logprob *top;  /* top_k alternatives per record (when logprobs were asked) */
    int32_t toks_from, n_toks, top_k;
    bool done;
    const char *finish;      /* "stop", "length" (when done) */
    int32_t n_prompt, n_gen, n_cached;
    int err_status;          /* non-zero: failed, err_msg says why */
    const char *err_msg;     /* valid while the job lives */
} srv_job_view;

orc_status srv_engine_new(orc_model *model, const srv_engine_params *p, srv_engine **out);
void srv_engine_free(srv_engine *e);
int32_t srv_engine_n_ctx(const srv_engine *e);

/* Queues a job. Returns NULL with *err set (429 when the queue is full). The caller
 * holds one reference: srv_job_release drops it (and cancels the job if unfinished). */
srv_job *srv_engine_submit(srv_engine *e, const srv_job_spec *spec, srv_error *err);
/* Waits until the job has more than `have` ready bytes, finishes, or timeout_ms passes;
 * fills *view with the text from byte min(have, ready) on (have SIZE_MAX: no text) and the
 * token records from index toks_have on (INT32_MAX: none). Returns true when something
 * changed. */
bool srv_job_wait(srv_engine *e, srv_job *j, size_t have, int32_t toks_have, int timeout_ms,
                  srv_job_view *view);
void srv_job_view_free(srv_job_view *view);
/* Waits until one of jobs[0..n) (NULL entries are skipped) has more than have[i] ready
 * bytes or is done, or timeout_ms passes. Returns true when one has. */
bool srv_jobs_wait_any(srv_engine *e, srv_job *const *jobs, const size_t *have, int n, int timeout_ms);
void srv_job_cancel(srv_engine *e, srv_job *j);
void srv_job_release(srv_engine *e, srv_job *j);

typedef struct srv_engine_stats {
    int32_t queued, active, n_parallel;
    uint64_t prompt_tokens, cached_tokens, gen_tokens, batches, batch_tokens, cancelled;
} srv_engine_stats;
void srv_engine_stats_get(srv_engine *e, srv_engine_stats *out);

#endif

/* ---- Escalation (serve_upstream.c): policy, redaction, audit, the libcurl client ---- */

typedef struct srv_policy srv_policy;

/* Loads a policy file (JSON, see docs/SERVER.md); path NULL gives the defaults (consent
 * "never"). NULL with a message in err on failure. */
srv_policy *srv_policy_load(const char *path, char *err, size_t errlen);
void srv_policy_free(srv_policy *p);
/* Where audit lines go (NULL: none) and the upstream's answer deadline. */
const char *srv_policy_audit_path(const srv_policy *p);

/* Why a request should leave the device, or NULL: a model name mapped to the upstream
 * ("model"), a prompt longer than the local context ("context"), or a matching rule
 * ("rule:NAME"). text is the rendered prompt. */
const char *srv_policy_reason(const srv_policy *p, const srv_request *r, const char *text, bool too_long);
/* Whether consent allows escalation: server-wide "always", or "per_request" with the
 * request's flag or a consenting API key. */
bool srv_policy_consents(const srv_policy *p, const srv_request *r, bool key_consents);
bool srv_policy_fallback_local(const srv_policy *p);
/* The model name sent upstream instead of the request's, or NULL. */
const char *srv_policy_upstream_model(const srv_policy *p);

/* Placeholder <-> original pairs of one request. */
typedef struct srv_redaction {
    char **ph, **orig;
    int n;
    int counts[4]; /* email, phone, card, custom */
} srv_redaction;
/* Replaces configured patterns in text with placeholders like [EMAIL_1] (the same value
 * gets the same placeholder); malloc'd. */
char *srv_redact(const srv_policy *p, const char *text, srv_redaction *map);
/* Puts the originals back (malloc'd). */
char *srv_restore(const srv_redaction *map, const char *text, size_t len, size_t *out_len);
void srv_redaction_free(srv_redaction *map);

void srv_sha256_hex(const void *data, size_t n, char out[65]);

/* POSTs body to base_url + path with libcurl (TLS verification on, policy timeout).
 * Returns 0 with the response (malloc'd) and its status, or -1 with err. */
int srv_upstream_post(const srv_policy *p, const char *base_url, const char *key, const char *path,
                      const char *body, size_t len, char **resp, size_t *resp_len, long *status,
                      char *err, size_t errlen);

struct curl_slist;
/* What a libcurl handle from srv_upstream_easy points into (freed after the transfer). */
typedef struct srv_upstream_bufs {
    char *url, *auth;
    struct curl_slist *headers;
} srv_upstream_bufs;
/* A configured libcurl easy handle (CURL *) for a POST of body (which must outlive it) to
 * base_url + path whose answer goes to write(user); NULL on failure. */
void *srv_upstream_easy(const srv_policy *p, const char *base_url, const char *key, const char *path,
                        const char *body, size_t len, size_t (*write)(char *, size_t, size_t, void *),
                        void *user, srv_upstream_bufs *bufs);
void srv_upstream_bufs_free(srv_upstream_bufs *bufs);

/* Appends one JSON line to the audit log (no content ever). */
void srv_audit(const srv_policy *p, const char *route, const char *reason, const char *model,
               const char *upstream, size_t bytes_sent, int32_t tokens_sent, const char *sha256_hex,
               const srv_redaction *map, long status, const char *outcome);
