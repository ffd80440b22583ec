/* cmd_serve.c - `orchard serve`: an OpenAI-compatible HTTP server on libmicrohttpd
 * (thread per connection). Routes, API keys, limits, metrics and the SSE/JSON responses
 * live here; request validation is serve_request.c, batching is serve_engine.c. */
#include "cli.h"
#include "serve.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static const char *SERVE_HELP =
    "usage: orchard serve [-m MODEL] [--host H] [--port P] [options]\n"
    "\n"
    "Serves the model over an OpenAI-compatible HTTP API: POST /v1/chat/completions,\n"
    "POST /v1/completions, GET /v1/models, GET /health, GET /metrics (see docs/SERVER.md).\n"
    "\n"
    "  -m, --model PATH        GGUF model (default: $ORCHARD_MODEL, else the bundled stories260K)\n"
    "      --alias NAME        model id reported by the API (default: the file name)\n"
    "      --host ADDR         IPv4 address to bind (default 127.0.0.1)\n"
    "      --port P            TCP port (default 8080; 0 = any free port, printed on stderr)\n"
    "  -np, --parallel N       slots decoding at the same time (default 4)\n"
    "  -c, --ctx-size N        context positions per slot (default: training length, at most 4096)\n"
    "  -b, --batch-size N      most tokens per evaluation step (default 512)\n"
    "  -t, --threads N         threads (default: all cores)\n"
    "      --queue N           requests that may wait for a slot before 429 (default 4 x parallel)\n"
    "      --api-key-file F    accept only these Bearer keys (one per line); also $ORCHARD_API_KEY\n"
    "                          (comma-separated). Keys are never logged.\n"
    "      --max-body BYTES    largest request body (default 4194304)\n"
    "      --max-header BYTES  memory for a request's headers (default 32768)\n"
    "      --timeout S         idle connection timeout in seconds (default 60)\n"
    "      --max-connections N (default 128)\n"
    "      --cors-origin O     send Access-Control-Allow-Origin: O and answer preflights (default off)\n"
    "      --quiet             no access log on stderr\n"
    "      --tool-syntax NAME  how the model writes tool calls (tool_choice auto): hermes, llama3,\n"
    "                          mistral, functionary, granite, deepseek, kimi, glm, gpt-oss,\n"
    "                          qwen3-coder, none (default: detected from the chat template)\n"
    "      --stateless         keep no prompt or output anywhere: no access log, slot caches\n"
    "                          cleared after every request, nothing written to disk\n"
    "\n"
    "Escalation to a larger model (only with consent; see docs/SERVER.md):\n"
    "      --upstream URL      OpenAI-compatible base URL, e.g. https://host/v1\n"
    "      --upstream-key-env VAR  environment variable holding the upstream's API key\n"
    "      --policy FILE       escalation policy (JSON): consent, models, rules, redaction,\n"
    "                          fallback, timeout, audit log\n";

enum { R_CHAT, R_COMPL, R_MODELS, R_HEALTH, R_METRICS, R_OTHER, R_COUNT };
static const char *ROUTE_NAMES[R_COUNT] = {"/v1/chat/completions", "/v1/completions", "/v1/models",
                                           "/health", "/metrics", "other"};
static const int STATUSES[] = {200, 204, 400, 401, 404, 405, 413, 429, 431, 500, 503};
#define N_STATUS (int)(sizeof STATUSES / sizeof STATUSES[0])
static const double BUCKETS[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
#define N_BUCKETS (int)(sizeof BUCKETS / sizeof BUCKETS[0])

typedef struct histogram {
    uint64_t count[N_BUCKETS + 1];
    double sum;
    uint64_t n;
} histogram;

typedef struct server {
    orc_model *model;
    orc_chat_template *tmpl;
    srv_engine *engine;
    char model_id[256];
    int64_t started;
    char **keys;
    bool *key_consent;
    size_t n_keys;
    const char *upstream;
    char *upstream_key;
    srv_policy *policy;
    bool stateless;
    orc_tool_syntax tool_syntax;
    uint64_t escalations, escalation_failures;
    size_t max_body;
    const char *cors;
    bool quiet;
    atomic_bool stopping;
    atomic_uint_fast64_t next_id;
    pthread_mutex_t mlock; /* metrics */
    uint64_t requests[R_COUNT][N_STATUS + 1];
    histogram latency, ttft;
    uint64_t completion_tokens, prompt_tokens;
} server;

typedef struct conn {
    server *srv;
    int route;
    char *body;
    size_t len, cap;
    bool too_large, answered;
    int fd;
    double t0, t_first;
    srv_request req;
    bool have_req;
    srv_job *jobs[SRV_MAX_N]; /* one per choice ("n") */
    int n_jobs;
    char id[48];
    unsigned long long id_hex;
    int64_t created;
    /* streaming state */
    char *out;
    size_t out_len, out_off, out_cap;
    size_t sent[SRV_MAX_N];        /* text bytes sent per choice */
    int32_t toks_sent[SRV_MAX_N];  /* log-probability records sent per choice */
    bool fin[SRV_MAX_N];           /* the choice's final chunk went out */
    int32_t n_gen, n_prompt, n_cached; /* usage of the finished choices */
    int phase; /* 0 nothing sent, 1 role sent, 2 finished */
    int status;
    bool key_consents;
    const char *route_hdr; /* X-Orchard-Route */
    struct upstream_stream *up;
} conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- metrics ------------------------------------------------------------------------ */

static void hist_add(histogram *h, double v)
{
    int b = 0;
    while (b < N_BUCKETS && v > BUCKETS[b])
        b++;
    h->count[b]++;
    h->sum += v;
    h->n++;
}

static void count_request(server *s, int route, int status, double latency)
{
    int k = 0;
    while (k < N_STATUS && STATUSES[k] != status)
        k++;
    pthread_mutex_lock(&s->mlock);
    s->requests[route][k]++;
    if (latency >= 0)
        hist_add(&s->latency, latency);
    pthread_mutex_unlock(&s->mlock);
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void hist_print(sbuf *b, const char *name, const char *help, const histogram *h)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < N_BUCKETS; i++) {
        cum += h->count[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, BUCKETS[i], (unsigned long long)cum);
    }
    cum += h->count[N_BUCKETS];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum,
              name, h->sum, name, (unsigned long long)h->n);
}

static char *metrics_text(server *s)
{
    sbuf b = {0};
    srv_engine_stats st;
    srv_engine_stats_get(s->engine, &st);
    pthread_mutex_lock(&s->mlock);
    sb_printf(&b, "# HELP orchard_requests_total HTTP requests by route and status.\n"
                  "# TYPE orchard_requests_total counter\n");
    for (int r = 0; r < R_COUNT; r++)
        for (int k = 0; k <= N_STATUS; k++)
            if (s->requests[r][k])
                sb_printf(&b, "orchard_requests_total{route=\"%s\",status=\"%s%d\"} %llu\n", ROUTE_NAMES[r],
                          k < N_STATUS ? "" : "other", k < N_STATUS ? STATUSES[k] : 0,
                          (unsigned long long)s->requests[r][k]);
    hist_print(&b, "orchard_request_duration_seconds", "Time from request to last byte of generation.",
               &s->latency);
    hist_print(&b, "orchard_time_to_first_token_seconds", "Time from request to the first generated text.",
               &s->ttft);
    uint64_t esc = s->escalations, esc_fail = s->escalation_failures;
    pthread_mutex_unlock(&s->mlock);
    sb_printf(&b,
              "# HELP orchard_prompt_tokens_total Prompt tokens of started requests.\n"
              "# TYPE orchard_prompt_tokens_total counter\norchard_prompt_tokens_total %llu\n"
              "# HELP orchard_prompt_tokens_cached_total Prompt tokens reused from a slot's cache.\n"
              "# TYPE orchard_prompt_tokens_cached_total counter\norchard_prompt_tokens_cached_total %llu\n"
              "# HELP orchard_completion_tokens_total Generated tokens.\n"
              "# TYPE orchard_completion_tokens_total counter\norchard_completion_tokens_total %llu\n",
              (unsigned long long)st.prompt_tokens, (unsigned long long)st.cached_tokens,
              (unsigned long long)st.gen_tokens);
    sb_printf(&b,
              "# HELP orchard_batches_total Evaluation steps (one multi-sequence batch each).\n"
              "# TYPE orchard_batches_total counter\norchard_batches_total %llu\n"
              "# HELP orchard_batch_tokens_total Tokens evaluated in all steps.\n"
              "# TYPE orchard_batch_tokens_total counter\norchard_batch_tokens_total %llu\n"
              "# HELP orchard_requests_cancelled_total Requests cancelled by client disconnects.\n"
              "# TYPE orchard_requests_cancelled_total counter\norchard_requests_cancelled_total %llu\n",
              (unsigned long long)st.batches, (unsigned long long)st.batch_tokens,
              (unsigned long long)st.cancelled);
    sb_printf(&b,
              "# HELP orchard_queue_depth Requests waiting for a slot.\n"
              "# TYPE orchard_queue_depth gauge\norchard_queue_depth %d\n"
              "# HELP orchard_slots_busy Slots generating now.\n"
              "# TYPE orchard_slots_busy gauge\norchard_slots_busy %d\n"
              "# HELP orchard_slots_total Parallel slots.\n"
              "# TYPE orchard_slots_total gauge\norchard_slots_total %d\n"
              "# HELP orchard_escalations_total Requests answered by the upstream model.\n"
              "# TYPE orchard_escalations_total counter\norchard_escalations_total %llu\n"
              "# HELP orchard_escalation_failures_total Escalations whose upstream failed.\n"
              "# TYPE orchard_escalation_failures_total counter\norchard_escalation_failures_total %llu\n",
              st.queued, st.active, st.n_parallel, (unsigned long long)esc,
              (unsigned long long)esc_fail);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- responses ---------------------------------------------------------------------- */

static void add_common_headers(conn *c, struct MHD_Response *r)
{
    if (c->route_hdr)
        MHD_add_response_header(r, "X-Orchard-Route", c->route_hdr);
    if (c->srv->cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", c->srv->cors);
        MHD_add_response_header(r, "Vary", "Origin");
    }
}

static enum MHD_Result send_text(struct MHD_Connection *mc, conn *c, int status, const char *ctype,
                                 char *body /* freed */, const char *retry_after)
{
    if (!body) {
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
        status = 500;
        if (!body)
            return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (retry_after)
        MHD_add_response_header(r, "Retry-After", retry_after);
    add_common_headers(c, r);
    c->status = status;
    c->answered = true;
    enum MHD_Result ok = MHD_queue_response(mc, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *mc, conn *c, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return send_text(mc, c, status, "application/json", s, NULL);
}

static enum MHD_Result send_error(struct MHD_Connection *mc, conn *c, const srv_error *e)
{
    return send_text(mc, c, e->status, "application/json", srv_error_json(e),
                     e->status == 429 ? "1" : NULL);
}

static enum MHD_Result send_errorf(struct MHD_Connection *mc, conn *c, int status, const char *type,
                                   const char *code, const char *fmt, const char *arg)
{
    srv_error e;
    srv_error_set(&e, status, type, code, NULL, fmt, arg);
    return send_error(mc, c, &e);
}

/* Usage of a request: the prompt once, the completion tokens of every choice. */
static json_t *usage_json(const conn *c)
{
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", c->n_prompt, "completion_tokens", c->n_gen,
                     "total_tokens", c->n_prompt + c->n_gen, "prompt_tokens_details", "cached_tokens",
                     c->n_cached);
}

/* Adds a finished choice's counts to the request's usage. */
static void usage_add(conn *c, const srv_job_view *v)
{
    c->n_prompt = v->n_prompt;
    c->n_gen += v->n_gen;
    if (v->n_cached > c->n_cached)
        c->n_cached = v->n_cached;
}

static json_t *jstr(const char *s, size_t n)
{
    size_t ol;
    char *clean = srv_utf8_sanitize(s, n, &ol);
    json_t *j = clean ? json_stringn(clean, ol) : NULL;
    free(clean);
    return j ? j : json_string("");
}

/* A forced tool call's output {"name":..., "arguments":{...}} as an OpenAI tool_calls array
 * for choice `choice` (call ids differ between choices); NULL when the text is not a
 * complete call (cut off by max_tokens). */
static json_t *tool_calls_json(conn *c, int choice, const char *text, size_t len)
{
    json_t *call = json_loadb(text, len, 0, NULL);
    json_t *name = json_object_get(call, "name"), *args = json_object_get(call, "arguments");
    if (!json_is_string(name) || !args) {
        json_decref(call);
        return NULL;
    }
    char *args_text = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
    char id[64];
    snprintf(id, sizeof id, "call_%016llx", c->id_hex + (unsigned long long)choice);
    json_t *out = json_pack("[{s:s, s:s, s:{s:O, s:s}}]", "id", id, "type", "function", "function", "name", name,
                            "arguments", args_text ? args_text : "{}");
    free(args_text);
    json_decref(call);
    return out;
}

/* Tool calls the model wrote in its own syntax (tool_choice auto): the OpenAI tool_calls
 * array, and the remaining text in *content (malloc'd); NULL when there are none. */
static json_t *parsed_tool_calls(conn *c, int choice, const char *text, char **content)
{
    *content = NULL;
    if (!c->req.tools_auto || c->srv->tool_syntax == ORC_TOOL_SYNTAX_NONE)
        return NULL;
    char *calls_json = NULL, *rest = NULL;
    if (orc_tool_calls_parse(c->srv->tool_syntax, text, &calls_json, &rest) != ORC_OK) {
        orc_free(calls_json);
        orc_free(rest);
        return NULL;
    }
    json_t *calls = calls_json ? json_loads(calls_json, 0, NULL) : NULL;
    orc_free(calls_json);
    json_t *out = NULL;
    if (json_is_array(calls) && json_array_size(calls) > 0) {
        out = json_array();
        size_t i;
        json_t *call;
        json_array_foreach(calls, i, call) {
            json_t *name = json_object_get(call, "name"), *args = json_object_get(call, "arguments");
            char *args_text = args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            char id[64];
            snprintf(id, sizeof id, "call_%016llx_%zu", c->id_hex + (unsigned long long)choice, i);
            json_array_append_new(out, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function",
                                                 "name", json_is_string(name) ? json_string_value(name) : "",
                                                 "arguments", args_text ? args_text : "{}"));
            free(args_text);
        }
        if (rest && *rest)
            *content = strdup(rest);
    }
    json_decref(calls);
    orc_free(rest);
    return out;
}

static json_t *base_object(conn *c, const char *object)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", c->id, "object", object, "created", (json_int_t)c->created,
                     "model", c->srv->model_id, "system_fingerprint", "orchard-" ORC_VERSION_STRING);
}

/* ---- log-probabilities ------------------------------------------------------------- */

/* A logprob as JSON: OpenAI's -9999 stands for "impossible" (JSON has no -infinity). */
static json_t *jlogprob(float v)
{
    return json_real(isfinite(v) ? (double)v : -9999.0);
}

/* The bytes a token contributes (malloc'd, *n its length). */
static char *token_piece(const orc_model *m, orc_token t, size_t *n)
{
    char buf[256];
    int32_t k = orc_token_to_piece(m, t, buf, sizeof buf, false);
    char *p = NULL;
    if (k >= 0) {
        p = malloc((size_t)k + 1);
        if (p)
            memcpy(p, buf, (size_t)k);
    } else if ((p = malloc((size_t)-k + 1))) {
        k = orc_token_to_piece(m, t, p, -k + 1, false);
    }
    if (!p || k < 0) {
        free(p);
        *n = 0;
        return strdup("");
    }
    p[k] = 0;
    *n = (size_t)k;
    return p;
}

/* {"token", "logprob", "bytes"} of one token (the chat format). */
static json_t *chat_token_lp(const orc_model *m, orc_token t, float logprob)
{
    size_t n;
    char *piece = token_piece(m, t, &n);
    json_t *bytes = json_array();
    for (size_t i = 0; piece && i < n; i++)
        json_array_append_new(bytes, json_integer((unsigned char)piece[i]));
    json_t *o = json_pack("{s:o, s:o, s:o}", "token", jstr(piece ? piece : "", n), "logprob", jlogprob(logprob),
                          "bytes", bytes);
    free(piece);
    return o;
}

/* How many of the view's records belong to text already sent: those that end by byte
 * `upto`, or, once the choice is done, those that start before it. */
static int32_t records_upto(const srv_job_view *v, size_t upto, bool done)
{
    int32_t k = 0;
    while (k < v->n_toks && (done ? v->toks[k].start < upto : v->toks[k].end <= upto))
        k++;
    return k;
}

/* The choice's "logprobs" for records [0, count) of the view: chat {"content": [...],
 * "refusal": null}; completions {"tokens", "token_logprobs", "top_logprobs",
 * "text_offset"} (byte offsets in the generated text). */
static json_t *logprobs_json(conn *c, const srv_job_view *v, int32_t count)
{
    const orc_model *m = c->srv->model;
    if (c->req.kind == SRV_CHAT) {
        json_t *content = json_array();
        for (int32_t i = 0; i < count; i++) {
            const srv_tok *r = &v->toks[i];
            json_t *e = chat_token_lp(m, r->token, r->logprob);
            json_t *top = json_array();
            for (int32_t k = 0; k < c->req.top_logprobs && v->top; k++) {
                const orc_token_logprob *a = &v->top[(size_t)i * (size_t)v->top_k + (size_t)k];
                json_array_append_new(top, chat_token_lp(m, a->token, a->logprob));
            }
            json_object_set_new(e, "top_logprobs", top);
            json_array_append_new(content, e);
        }
        return json_pack("{s:o, s:n}", "content", content, "refusal");
    }
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (int32_t i = 0; i < count; i++) {
        const srv_tok *r = &v->toks[i];
        size_t n;
        char *piece = token_piece(m, r->token, &n);
        json_array_append_new(tokens, jstr(piece, n));
        free(piece);
        json_array_append_new(lps, jlogprob(r->logprob));
        json_array_append_new(offs, json_integer((json_int_t)r->start));
        json_t *alt = json_object();
        for (int32_t k = 0; k < c->req.top_logprobs && v->top; k++) {
            const orc_token_logprob *a = &v->top[(size_t)i * (size_t)v->top_k + (size_t)k];
            piece = token_piece(m, a->token, &n);
            json_t *key = jstr(piece, n);
            free(piece);
            if (!json_object_get(alt, json_string_value(key))) /* equal texts: the likelier one */
                json_object_set_new(alt, json_string_value(key), jlogprob(a->logprob));
            json_decref(key);
        }
        json_array_append_new(tops, alt);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

/* One finished choice of a non-streamed answer (the view holds the whole text and every
 * record). */
static json_t *final_choice(conn *c, int index, const srv_job_view *v)
{
    const char *finish = v->finish ? v->finish : "stop";
    json_t *lp = c->req.logprobs ? logprobs_json(c, v, records_upto(v, v->ready, true)) : json_null();
    if (c->req.kind != SRV_CHAT)
        return json_pack("{s:i, s:o, s:o, s:s}", "index", index, "text", jstr(v->text, v->ready), "logprobs", lp,
                         "finish_reason", finish);
    json_t *msg = json_pack("{s:s}", "role", "assistant");
    char *rest = NULL;
    json_t *calls = c->req.tool_call ? tool_calls_json(c, index, v->text, v->ready)
                                     : parsed_tool_calls(c, index, v->text, &rest);
    if (calls) {
        json_object_set_new(msg, "content", rest ? jstr(rest, strlen(rest)) : json_null());
        free(rest);
        json_object_set_new(msg, "tool_calls", calls);
        finish = "tool_calls";
    } else {
        json_object_set_new(msg, "content", jstr(v->text, v->ready));
    }
    json_object_set_new(msg, "refusal", json_null());
    return json_pack("{s:i, s:o, s:o, s:s}", "index", index, "message", msg, "logprobs", lp, "finish_reason",
                     finish);
}

static json_t *final_response(conn *c, const srv_job_view *views, int n)
{
    json_t *choices = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(choices, final_choice(c, i, &views[i]));
    json_t *o = base_object(c, c->req.kind == SRV_CHAT ? "chat.completion" : "text_completion");
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", usage_json(c));
    return o;
}

/* ---- streaming ------------------------------------------------------------------------ */

static bool client_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void out_event(conn *c, json_t *obj /* consumed */)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    sbuf b = {c->out, c->out_len, c->out_cap, false};
    sb_put(&b, "data: ", 6);
    if (s)
        sb_put(&b, s, strlen(s));
    sb_put(&b, "\n\n", 2);
    free(s);
    c->out = b.p;
    c->out_len = b.n;
    c->out_cap = b.cap;
}

/* A chunk for choice `index`; logprobs (consumed) may be NULL. */
static json_t *chunk_lp(conn *c, int index, json_t *delta_or_text, const char *finish, json_t *logprobs)
{
    json_t *o = base_object(c, c->req.kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion");
    json_t *choice = json_pack("{s:i, s:o}", "index", index, c->req.kind == SRV_CHAT ? "delta" : "text",
                               delta_or_text);
    json_object_set_new(choice, "logprobs", logprobs ? logprobs : json_null());
    json_object_set_new(choice, "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    return o;
}

static json_t *chunk(conn *c, json_t *delta_or_text, const char *finish)
{
    return chunk_lp(c, 0, delta_or_text, finish, NULL);
}

static void finish_metrics(conn *c)
{
    server *s = c->srv;
    pthread_mutex_lock(&s->mlock);
    if (c->t_first > 0)
        hist_add(&s->ttft, c->t_first - c->t0);
    s->completion_tokens += (uint64_t)c->n_gen;
    s->prompt_tokens += (uint64_t)c->n_prompt;
    pthread_mutex_unlock(&s->mlock);
}

static void cancel_jobs(conn *c)
{
    for (int i = 0; i < c->n_jobs; i++)
        srv_job_cancel(c->srv->engine, c->jobs[i]);
}

/* The last chunks of a finished choice: the text not yet sent (or the tool calls) with
 * the remaining log-probabilities, then the finish reason. v holds the choice's text from
 * byte c->sent[i] on (from 0 when tool calls are parsed). */
static void stream_finish_choice(conn *c, int i, const srv_job_view *v)
{
    bool chat = c->req.kind == SRV_CHAT;
    const char *finish = v->finish ? v->finish : "stop";
    json_t *lp = c->req.logprobs ? logprobs_json(c, v, records_upto(v, v->ready, true)) : NULL;
    json_t *delta = json_object();
    if (chat && (c->req.tool_call || c->req.tools_auto)) {
        /* nothing of the text went out: v holds all of it */
        char *rest = NULL;
        json_t *calls = c->req.tool_call ? tool_calls_json(c, i, v->text, v->ready) : parsed_tool_calls(c, i, v->text, &rest);
        if (rest)
            json_object_set_new(delta, "content", jstr(rest, strlen(rest)));
        free(rest);
        if (calls) {
            size_t k;
            json_t *call;
            json_array_foreach(calls, k, call)
                json_object_set_new(call, "index", json_integer((json_int_t)k));
            json_object_set_new(delta, "tool_calls", calls);
            finish = "tool_calls";
        } else {
            json_object_set_new(delta, "content", jstr(v->text, v->ready));
        }
        out_event(c, chunk_lp(c, i, delta, finish, lp));
    } else {
        if (v->ready > v->from) {
            /* text held back for a possible stop string, released at the end */
            if (c->t_first == 0)
                c->t_first = now_s();
            json_t *text = jstr(v->text, v->ready - v->from);
            out_event(c, chunk_lp(c, i, chat ? json_pack("{s:o}", "content", text) : text, NULL, lp));
            lp = NULL;
        }
        out_event(c, chunk_lp(c, i, chat ? delta : (json_decref(delta), json_string("")), finish, lp));
    }
    c->sent[i] = v->ready;
    c->fin[i] = true;
}

/* Produces the next SSE events into c->out; false when the stream must end with an error
 * (client gone, server stopping). */
static bool stream_produce(conn *c)
{
    server *s = c->srv;
    bool chat = c->req.kind == SRV_CHAT;
    bool text_mode = !c->req.tool_call && !c->req.tools_auto; /* text goes out as it comes */
    if (c->phase == 0) {
        c->phase = 1;
        if (chat) {
            for (int i = 0; i < c->n_jobs; i++)
                out_event(c, chunk_lp(c, i, json_pack("{s:s, s:s, s:n}", "role", "assistant", "content", "", "refusal"),
                                      NULL, NULL));
            return true;
        }
    }
    for (;;) {
        if (atomic_load(&s->stopping))
            return false;
        srv_job *waiting[SRV_MAX_N];
        size_t have[SRV_MAX_N];
        for (int i = 0; i < c->n_jobs; i++) {
            waiting[i] = c->fin[i] ? NULL : c->jobs[i];
            /* tool calls are sent whole at the end: only completion matters */
            have[i] = text_mode ? c->sent[i] : SIZE_MAX;
        }
        srv_jobs_wait_any(s->engine, waiting, have, c->n_jobs, 200);
        if (client_gone(c->fd)) {
            cancel_jobs(c);
            return false;
        }
        bool produced = false, all_done = true;
        for (int i = 0; i < c->n_jobs; i++) {
            if (c->fin[i])
                continue;
            srv_job_view v;
            srv_job_wait(s->engine, c->jobs[i], text_mode ? c->sent[i] : 0, c->toks_sent[i], 0, &v);
            if (v.err_status) {
                srv_error e;
                srv_error_set(&e, v.err_status, "server_error", NULL, NULL, "%s", v.err_msg);
                char *ej = srv_error_json(&e);
                json_t *o = ej ? json_loads(ej, 0, NULL) : NULL;
                free(ej);
                if (o)
                    out_event(c, o);
                srv_job_view_free(&v);
                cancel_jobs(c);
                c->phase = 2;
                sbuf b = {c->out, c->out_len, c->out_cap, false};
                sb_put(&b, "data: [DONE]\n\n", 14);
                c->out = b.p;
                c->out_len = b.n;
                c->out_cap = b.cap;
                count_request(s, c->route, v.err_status, now_s() - c->t0);
                return true;
            }
            if (v.done) {
                usage_add(c, &v);
                stream_finish_choice(c, i, &v);
                produced = true;
            } else {
                all_done = false;
                if (text_mode && v.ready > c->sent[i]) {
                    if (c->t_first == 0)
                        c->t_first = now_s();
                    json_t *lp = NULL;
                    if (c->req.logprobs) {
                        int32_t k = records_upto(&v, v.ready, false);
                        if (k > 0)
                            lp = logprobs_json(c, &v, k);
                        c->toks_sent[i] += k;
                    }
                    json_t *text = jstr(v.text, v.ready - v.from);
                    c->sent[i] = v.ready;
                    out_event(c, chunk_lp(c, i, chat ? json_pack("{s:o}", "content", text) : text, NULL, lp));
                    produced = true;
                }
            }
            srv_job_view_free(&v);
        }
        if (!all_done) {
            if (produced)
                return true;
            continue;
        }
        c->phase = 2;
        if (c->req.include_usage) {
            json_t *o = base_object(c, chat ? "chat.completion.chunk" : "text_completion");
            json_object_set_new(o, "choices", json_array());
            json_object_set_new(o, "usage", usage_json(c));
            out_event(c, o);
        }
        sbuf b = {c->out, c->out_len, c->out_cap, false};
        sb_put(&b, "data: [DONE]\n\n", 14);
        c->out = b.p;
        c->out_len = b.n;
        c->out_cap = b.cap;
        finish_metrics(c);
        count_request(s, c->route, 200, now_s() - c->t0);
        return true;
    }
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    conn *c = cls;
    for (;;) {
        if (c->out_off < c->out_len) {
            size_t n = c->out_len - c->out_off;
            if (n > max)
                n = max;
            memcpy(buf, c->out + c->out_off, n);
            c->out_off += n;
            return (ssize_t)n;
        }
        c->out_len = c->out_off = 0;
        if (c->phase == 2)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!stream_produce(c))
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

/* ---- generation requests ---------------------------------------------------------------- */

/* Renders and tokenizes the prompt; *toks is malloc'd. */
static int build_prompt(server *s, const srv_request *r, orc_token **toks, int32_t *n, char **text_out,
                        srv_error *err)
{
    char *text = NULL;
    size_t len = 0;
    bool chat = r->kind == SRV_CHAT;
    if (chat) {
        if (orc_chat_apply(s->tmpl, r->messages_json, r->tools_json, true, NULL, &text, &len) != ORC_OK)
            return srv_error_set(err, 400, "invalid_request_error", NULL, "messages",
                                 "the chat template failed on these messages: %s", orc_last_error());
    } else {
        text = r->prompt;
        len = strlen(r->prompt);
    }
    /* a template that writes the BOS text itself gets no second BOS */
    bool add_special = true;
    orc_token bos = orc_token_bos(s->model);
    const char *bos_text = bos >= 0 ? orc_token_text(s->model, bos) : NULL;
    if (chat && bos_text && *bos_text && !strncmp(text, bos_text, strlen(bos_text)))
        add_special = false;
    int rc = 0;
    int32_t need = orc_tokenize(s->model, text, len, NULL, 0, add_special, chat);
    if (need < 0)
        need = -need;
    *toks = malloc(((size_t)need + 1) * sizeof(orc_token));
    if (!*toks) {
        rc = srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    } else {
        *n = orc_tokenize(s->model, text, len, *toks, need + 1, add_special, chat);
        if (*n <= 0)
            rc = srv_error_set(err, 400, "invalid_request_error", NULL, chat ? "messages" : "prompt",
                               "the prompt produced no tokens");
    }
    if (text_out && chat)
        *text_out = text;
    else if (text_out)
        *text_out = strdup(text);
    else if (chat)
        orc_free(text);
    return rc;
}

/* ---- escalation ------------------------------------------------------------------------ */

/* Redacts one JSON string value in place. */
static void redact_value(server *s, json_t *parent, const char *key, json_t *arr, size_t idx, srv_redaction *map)
{
    json_t *v = parent ? json_object_get(parent, key) : json_array_get(arr, idx);
    if (!json_is_string(v))
        return;
    char *r = srv_redact(s->policy, json_string_value(v), map);
    if (!r)
        return;
    if (parent)
        json_object_set_new(parent, key, json_string(r));
    else
        json_array_set_new(arr, idx, json_string(r));
    free(r);
}

/* Puts redacted originals back into one JSON string value. */
static void restore_value(json_t *parent, const char *key, const srv_redaction *map)
{
    json_t *v = json_object_get(parent, key);
    if (!json_is_string(v) || !map->n)
        return;
    size_t n;
    char *r = srv_restore(map, json_string_value(v), json_string_length(v), &n);
    if (r)
        json_object_set_new(parent, key, jstr(r, n));
    free(r);
}

/* ---- relaying the upstream's server-sent events ------------------------------------- */

typedef struct upstream_stream {
    conn *c;
    CURLM *multi;
    CURL *easy;
    srv_upstream_bufs bufs;
    char *body;            /* what was sent (libcurl reads it during the transfer) */
    srv_redaction map;
    sbuf line;             /* a partial SSE line */
    sbuf out;              /* events ready for the client */
    size_t out_off;
    char *carry;           /* text held back: it may be the start of a placeholder */
    size_t carry_len;
    bool got_data, finished, saw_done;
    CURLcode result;
} upstream_stream;

static void upstream_free(upstream_stream *u)
{
    if (!u)
        return;
    if (u->multi && u->easy)
        curl_multi_remove_handle(u->multi, u->easy);
    curl_easy_cleanup(u->easy);
    curl_multi_cleanup(u->multi);
    srv_upstream_bufs_free(&u->bufs);
    if (u->body) {
        memset(u->body, 0, strlen(u->body));
        free(u->body);
    }
    srv_redaction_free(&u->map);
    free(u->line.p);
    free(u->out.p);
    free(u->carry);
    free(u);
}

/* How many trailing bytes of text could begin a placeholder. */
static size_t placeholder_holdback(const srv_redaction *map, const char *t, size_t n)
{
    const char *open = NULL;
    for (size_t i = n; i-- > 0 && n - i <= 40;)
        if (t[i] == '[') {
            open = t + i;
            break;
        } else if (t[i] == ']') {
            break;
        }
    if (!open)
        return 0;
    size_t k = (size_t)(t + n - open);
    for (int i = 0; i < map->n; i++)
        if (strlen(map->ph[i]) > k && !memcmp(map->ph[i], open, k))
            return k;
    return 0;
}

/* Rewrites one string field of a chunk: carry + text, restored, minus a new holdback. */
static void relay_text(upstream_stream *u, json_t *parent, const char *key, bool final)
{
    json_t *v = json_object_get(parent, key);
    if (!json_is_string(v) && !(final && u->carry_len))
        return;
    size_t add = json_is_string(v) ? json_string_length(v) : 0;
    char *all = malloc(u->carry_len + add + 1);
    if (!all)
        return;
    memcpy(all, u->carry ? u->carry : "", u->carry_len);
    if (add)
        memcpy(all + u->carry_len, json_string_value(v), add);
    size_t n = u->carry_len + add;
    all[n] = 0;
    size_t hold = final ? 0 : placeholder_holdback(&u->map, all, n);
    free(u->carry);
    u->carry = hold ? strndup(all + n - hold, hold) : NULL;
    u->carry_len = u->carry ? hold : 0;
    size_t rl;
    char *r = srv_restore(&u->map, all, n - hold, &rl);
    if (r)
        json_object_set_new(parent, key, jstr(r, rl));
    free(r);
    free(all);
}

static void relay_event(upstream_stream *u, const char *data, size_t n)
{
    if (n == 6 && !memcmp(data, "[DONE]", 6)) {
        if (u->carry_len) { /* text still held back: one more chunk */
            json_t *o = chunk(u->c, u->c->req.kind == SRV_CHAT ? json_object() : json_string(""), NULL);
            json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
            relay_text(u, u->c->req.kind == SRV_CHAT ? json_object_get(ch, "delta") : ch,
                       u->c->req.kind == SRV_CHAT ? "content" : "text", true);
            char *t = json_dumps(o, JSON_COMPACT);
            json_decref(o);
            if (t) {
                sb_put(&u->out, "data: ", 6);
                sb_put(&u->out, t, strlen(t));
                sb_put(&u->out, "\n\n", 2);
                free(t);
            }
        }
        sb_put(&u->out, "data: [DONE]\n\n", 14);
        u->saw_done = true;
        return;
    }
    json_t *o = json_loadb(data, n, 0, NULL);
    if (!o)
        return;
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(o, "choices"), i, ch) {
        bool final = !json_is_null(json_object_get(ch, "finish_reason")) && json_object_get(ch, "finish_reason");
        json_t *delta = json_object_get(ch, "delta");
        if (delta) {
            relay_text(u, delta, "content", final);
            size_t k;
            json_t *call;
            json_array_foreach(json_object_get(delta, "tool_calls"), k, call)
                restore_value(json_object_get(call, "function"), "arguments", &u->map);
        } else {
            relay_text(u, ch, "text", final);
        }
    }
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (t) {
        sb_put(&u->out, "data: ", 6);
        sb_put(&u->out, t, strlen(t));
        sb_put(&u->out, "\n\n", 2);
        free(t);
    }
}

static size_t upstream_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    upstream_stream *u = user;
    size_t n = size * nmemb;
    if (u->line.n + n > (1u << 20))
        return 0; /* a line over 1 MiB: not an SSE stream we can relay */
    u->got_data = true;
    sb_put(&u->line, ptr, n);
    if (u->line.oom)
        return 0;
    char *start = u->line.p, *nl;
    while ((nl = memchr(start, '\n', u->line.n - (size_t)(start - u->line.p)))) {
        size_t len = (size_t)(nl - start);
        if (len && start[len - 1] == '\r')
            len--;
        if (len >= 6 && !memcmp(start, "data: ", 6))
            relay_event(u, start + 6, len - 6);
        else if (len >= 5 && !memcmp(start, "data:", 5))
            relay_event(u, start + 5, len - 5);
        start = nl + 1;
    }
    size_t rest = u->line.n - (size_t)(start - u->line.p);
    memmove(u->line.p, start, rest);
    u->line.n = rest;
    u->line.p[rest] = 0;
    return n;
}

/* Runs the transfer for up to timeout_ms. */
static void upstream_pump(upstream_stream *u, int timeout_ms)
{
    int running = 0;
    curl_multi_perform(u->multi, &running);
    if (!running) {
        int left;
        CURLMsg *m;
        while ((m = curl_multi_info_read(u->multi, &left)))
            if (m->msg == CURLMSG_DONE)
                u->result = m->data.result;
        u->finished = true;
        return;
    }
    curl_multi_poll(u->multi, NULL, 0, timeout_ms, NULL);
}

static ssize_t upstream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    conn *c = cls;
    upstream_stream *u = c->up;
    for (;;) {
        if (u->out_off < u->out.n) {
            size_t n = u->out.n - u->out_off;
            if (n > max)
                n = max;
            memcpy(buf, u->out.p + u->out_off, n);
            u->out_off += n;
            return (ssize_t)n;
        }
        u->out.n = u->out_off = 0;
        if (u->saw_done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (u->finished) { /* the upstream ended without [DONE] */
            srv_error e;
            srv_error_set(&e, 502, "upstream_error", NULL, NULL, "the upstream stream ended early: %s",
                          curl_easy_strerror(u->result));
            char *ej = srv_error_json(&e);
            sb_put(&u->out, "data: ", 6);
            if (ej)
                sb_put(&u->out, ej, strlen(ej));
            sb_put(&u->out, "\n\ndata: [DONE]\n\n", 16);
            free(ej);
            u->saw_done = true;
            continue;
        }
        if (atomic_load(&c->srv->stopping) || client_gone(c->fd))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        upstream_pump(u, 200);
    }
}

/* Starts a streaming request upstream and waits for its status. Returns the stream when
 * the upstream answered 2xx (the caller sends it on), else NULL with *status set. */
static upstream_stream *upstream_stream_start(conn *c, char *body /* owned */, srv_redaction *map, long *status)
{
    server *s = c->srv;
    upstream_stream *u = calloc(1, sizeof *u);
    *status = 0;
    if (!u) {
        free(body);
        return NULL;
    }
    u->c = c;
    u->body = body;
    u->map = *map;
    memset(map, 0, sizeof *map);
    u->multi = curl_multi_init();
    u->easy = srv_upstream_easy(s->policy, s->upstream, s->upstream_key,
                                c->req.kind == SRV_CHAT ? "/chat/completions" : "/completions", body, strlen(body),
                                upstream_write, u, &u->bufs);
    if (!u->multi || !u->easy || curl_multi_add_handle(u->multi, u->easy) != CURLM_OK)
        goto fail;
    while (!u->finished && !u->got_data) {
        long code = 0;
        curl_easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 300 || (code >= 200 && u->got_data))
            break;
        if (atomic_load(&s->stopping) || client_gone(c->fd))
            goto fail;
        upstream_pump(u, 200);
    }
    curl_easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, status);
    if (*status < 200 || *status >= 300 || (u->finished && u->result != CURLE_OK))
        goto fail;
    return u;
fail:
    *map = u->map; /* the caller still reports the redaction counts */
    memset(&u->map, 0, sizeof u->map);
    upstream_free(u);
    return NULL;
}

/* Sends the request, redacted, to the upstream. Returns true when the client has been
 * answered (*res); false to fall back to the local model. */
static bool escalate(struct MHD_Connection *mc, conn *c, const char *reason, int32_t n_tokens,
                     enum MHD_Result *res)
{
    server *s = c->srv;
    bool chat = c->req.kind == SRV_CHAT;
    json_t *root = json_loadb(c->body, c->len, 0, NULL);
    srv_redaction map = {0};
    char *out = NULL, *resp = NULL;
    json_t *ans = NULL;
    bool answered = false;
    char err[256] = "";
    long status = 0;
    size_t resp_len = 0;
    if (!root)
        goto failed;
    if (chat) {
        size_t i, k;
        json_t *m, *part;
        json_array_foreach(json_object_get(root, "messages"), i, m) {
            json_t *content = json_object_get(m, "content");
            if (json_is_string(content))
                redact_value(s, m, "content", NULL, 0, &map);
            else
                json_array_foreach(content, k, part)
                    redact_value(s, part, "text", NULL, 0, &map);
            json_array_foreach(json_object_get(m, "tool_calls"), k, part)
                redact_value(s, json_object_get(part, "function"), "arguments", NULL, 0, &map);
        }
    } else {
        json_t *p = json_object_get(root, "prompt");
        if (json_is_array(p))
            redact_value(s, NULL, NULL, p, 0, &map);
        else
            redact_value(s, root, "prompt", NULL, 0, &map);
    }
    json_object_del(root, "orchard");
    if (!c->req.stream)
        json_object_del(root, "stream_options");
    json_object_set_new(root, "stream", json_boolean(c->req.stream));
    const char *um = c->req.model;
    if (srv_policy_upstream_model(s->policy))
        um = srv_policy_upstream_model(s->policy);
    if (um)
        json_object_set_new(root, "model", json_string(um));
    out = json_dumps(root, JSON_COMPACT);
    if (!out)
        goto failed;
    size_t out_len = strlen(out);
    char sha[65];
    srv_sha256_hex(out, out_len, sha);
    if (c->req.stream) {
        char *sent = out;
        out = NULL;
        upstream_stream *u = upstream_stream_start(c, sent, &map, &status);
        if (u) {
            srv_audit(s->policy, "upstream", reason, um, s->upstream, out_len, n_tokens, sha, &u->map, status, "ok");
            pthread_mutex_lock(&s->mlock);
            s->escalations++;
            pthread_mutex_unlock(&s->mlock);
            c->up = u;
            c->route_hdr = "upstream";
            struct MHD_Response *r =
                MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, upstream_reader, c, NULL);
            if (!r) {
                *res = MHD_NO;
            } else {
                MHD_add_response_header(r, "Content-Type", "text/event-stream");
                MHD_add_response_header(r, "Cache-Control", "no-cache");
                add_common_headers(c, r);
                c->status = 200;
                c->answered = true;
                *res = MHD_queue_response(mc, 200, r);
                MHD_destroy_response(r);
            }
            answered = true;
            goto done;
        }
        snprintf(err, sizeof err, "upstream answered %ld", status);
        goto upstream_failed;
    }
    int rc = srv_upstream_post(s->policy, s->upstream, s->upstream_key, chat ? "/chat/completions" : "/completions",
                               out, out_len, &resp, &resp_len, &status, err, sizeof err);
    ans = rc == 0 && status >= 200 && status < 300 ? json_loadb(resp, resp_len, 0, NULL) : NULL;
    json_t *choices = json_object_get(ans, "choices");
    if (!json_is_array(choices) || json_array_size(choices) == 0) {
upstream_failed:
        srv_audit(s->policy, "upstream", reason, um, s->upstream, out_len, n_tokens, sha, &map, status,
                  srv_policy_fallback_local(s->policy) ? "fallback" : "error");
        pthread_mutex_lock(&s->mlock);
        s->escalation_failures++;
        pthread_mutex_unlock(&s->mlock);
        if (!srv_policy_fallback_local(s->policy)) {
            srv_error e;
            srv_error_set(&e, 502, "upstream_error", NULL, NULL, "the upstream model failed: %s",
                          err[0] ? err : "no valid answer");
            c->route_hdr = "upstream";
            *res = send_error(mc, c, &e);
            answered = true;
        }
        goto done;
    }
    size_t i;
    json_t *ch;
    json_array_foreach(choices, i, ch) {
        json_t *msg = json_object_get(ch, "message");
        restore_value(ch, "text", &map);
        restore_value(msg, "content", &map);
        size_t k;
        json_t *call;
        json_array_foreach(json_object_get(msg, "tool_calls"), k, call)
            restore_value(json_object_get(call, "function"), "arguments", &map);
    }
    srv_audit(s->policy, "upstream", reason, um, s->upstream, out_len, n_tokens, sha, &map, status, "ok");
    pthread_mutex_lock(&s->mlock);
    s->escalations++;
    pthread_mutex_unlock(&s->mlock);
    c->route_hdr = "upstream";
    *res = send_json(mc, c, 200, json_incref(ans));
    answered = true;
    goto done;
failed:
    srv_audit(s->policy, "upstream", reason, NULL, s->upstream, 0, n_tokens, NULL, &map, 0, "error");
done:
    if (out) {
        memset(out, 0, strlen(out));
        free(out);
    }
    if (resp) {
        memset(resp, 0, resp_len);
        free(resp);
    }
    json_decref(ans);
    json_decref(root);
    srv_redaction_free(&map);
    return answered;
}

static enum MHD_Result handle_generate(struct MHD_Connection *mc, conn *c)
{
    server *s = c->srv;
    srv_error err;
    srv_kind kind = c->route == R_CHAT ? SRV_CHAT : SRV_COMPLETION;
    if (srv_request_parse(c->body ? c->body : "", c->len, kind, &c->req, &err))
        return send_error(mc, c, &err);
    c->have_req = true;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = ci ? ci->connect_fd : -1;
    c->id_hex = (unsigned long long)(atomic_fetch_add(&s->next_id, 1) + 1) * 0x9E3779B97F4A7C15ull ^
                (unsigned long long)s->started;
    snprintf(c->id, sizeof c->id, "%s%016llx", kind == SRV_CHAT ? "chatcmpl-" : "cmpl-", c->id_hex);
    c->created = (int64_t)time(NULL);
    orc_token *toks = NULL;
    int32_t n = 0;
    char *text = NULL;
    if (build_prompt(s, &c->req, &toks, &n, &text, &err)) {
        free(toks);
        if (c->req.kind == SRV_CHAT)
            orc_free(text);
        else
            free(text);
        return send_error(mc, c, &err);
    }
    if (s->upstream) {
        const char *reason = srv_policy_reason(s->policy, &c->req, text, n >= srv_engine_n_ctx(s->engine));
        if (reason && srv_policy_consents(s->policy, &c->req, c->key_consents)) {
            enum MHD_Result res;
            if (escalate(mc, c, reason, n, &res)) {
                free(toks);
                if (c->req.kind == SRV_CHAT)
                    orc_free(text);
                else
                    free(text);
                return res;
            }
            c->route_hdr = "local-fallback";
        } else {
            c->route_hdr = "local";
        }
    }
    if (c->req.kind == SRV_CHAT)
        orc_free(text);
    else
        free(text);
    orc_grammar *g = NULL;
    if (c->req.schema_json) {
        orc_grammar_params gp = orc_grammar_default_params();
        gp.kind = ORC_GRAMMAR_JSON_SCHEMA;
        if (orc_grammar_new(c->req.schema_json, strlen(c->req.schema_json), &gp, &g) != ORC_OK) {
            free(toks);
            srv_error_set(&err, 400, "invalid_request_error", NULL,
                          c->req.tool_call ? "tools" : "response_format", "the JSON schema cannot be used: %s",
                          orc_last_error());
            return send_error(mc, c, &err);
        }
    }
    orc_sampler_params sp = orc_sampler_default_params();
    sp.temperature = c->req.temperature;
    sp.top_p = c->req.top_p;
    sp.presence_penalty = c->req.presence_penalty;
    sp.frequency_penalty = c->req.frequency_penalty;
    uint64_t seed = c->req.has_seed ? c->req.seed
                                    : (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull + atomic_fetch_add(&s->next_id, 1);
    /* one job per choice; choice i samples with seed + i (a request's seed fixes all of them) */
    for (int i = 0; i < c->req.n_choices; i++) {
        orc_grammar *gi = NULL;
        if (i + 1 == c->req.n_choices) { /* the last job takes the grammar compiled above */
            gi = g;
            g = NULL;
        } else if (g) { /* each job owns its grammar */
            orc_grammar_params gp = orc_grammar_default_params();
            gp.kind = ORC_GRAMMAR_JSON_SCHEMA;
            if (orc_grammar_new(c->req.schema_json, strlen(c->req.schema_json), &gp, &gi) != ORC_OK) {
                srv_error_set(&err, 500, "server_error", NULL, NULL, "cannot compile the schema again: %s",
                              orc_last_error());
                orc_grammar_free(g);
                free(toks);
                cancel_jobs(c); /* released, with the connection, in completed() */
                return send_error(mc, c, &err);
            }
        }
        sp.seed = seed + (uint64_t)i;
        srv_job_spec spec = {.prompt = toks, .n_prompt = n, .max_tokens = c->req.max_tokens, .sampling = sp,
                             .grammar = gi, .stop = c->req.stop, .n_stop = c->req.n_stop,
                             .logprobs = c->req.logprobs, .top_logprobs = c->req.top_logprobs};
        srv_job *j = srv_engine_submit(s->engine, &spec, &err);
        if (!j) {
            orc_grammar_free(gi);
            orc_grammar_free(g);
            free(toks);
            cancel_jobs(c);
            return send_error(mc, c, &err);
        }
        c->jobs[c->n_jobs++] = j;
    }
    free(toks);

    if (c->req.stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, c, NULL);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        add_common_headers(c, r);
        c->status = 200;
        c->answered = true;
        enum MHD_Result ok = MHD_queue_response(mc, 200, r);
        MHD_destroy_response(r);
        return ok;
    }
    srv_job_view views[SRV_MAX_N];
    for (int i = 0; i < c->n_jobs; i++) {
        srv_job_view v;
        for (;;) {
            srv_job_wait(s->engine, c->jobs[i], SIZE_MAX, INT32_MAX, 200, &v);
            bool done = v.done;
            if (c->t_first == 0 && v.n_gen > 0)
                c->t_first = now_s();
            srv_job_view_free(&v);
            if (done)
                break;
            if (atomic_load(&s->stopping) || client_gone(c->fd)) {
                cancel_jobs(c);
                for (int k = 0; k < i; k++)
                    srv_job_view_free(&views[k]);
                return MHD_NO; /* closes the connection */
            }
        }
        /* done: the text and records no longer change */
        srv_job_wait(s->engine, c->jobs[i], 0, 0, 0, &views[i]);
        if (views[i].err_status || !views[i].text) {
            if (views[i].err_status)
                srv_error_set(&err, views[i].err_status, "server_error", NULL, NULL, "%s", views[i].err_msg);
            else
                srv_error_set(&err, 500, "server_error", NULL, NULL, "out of memory");
            cancel_jobs(c);
            for (int k = 0; k <= i; k++)
                srv_job_view_free(&views[k]);
            return send_error(mc, c, &err);
        }
        usage_add(c, &views[i]);
    }
    if (c->t_first == 0 && c->n_gen > 0)
        c->t_first = now_s();
    finish_metrics(c);
    enum MHD_Result res = send_json(mc, c, 200, final_response(c, views, c->n_jobs));
    for (int i = 0; i < c->n_jobs; i++)
        srv_job_view_free(&views[i]);
    return res;
}

/* ---- routing -------------------------------------------------------------------------- */

static bool key_ok(server *s, struct MHD_Connection *mc, bool *consents)
{
    *consents = false;
    if (!s->n_keys)
        return true;
    const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    size_t hl = strlen(h);
    bool ok = false;
    for (size_t i = 0; i < s->n_keys; i++) {
        /* constant time for keys of the same length */
        size_t kl = strlen(s->keys[i]);
        unsigned diff = (unsigned)(kl ^ hl);
        for (size_t k = 0; k < kl; k++)
            diff |= (unsigned char)s->keys[i][k] ^ (unsigned char)(k < hl ? h[k] : 0);
        ok |= diff == 0;
        *consents |= diff == 0 && s->key_consent[i];
    }
    return ok;
}

static int route_of(const char *url)
{
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions"))
        return R_CHAT;
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/completions"))
        return R_COMPL;
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models"))
        return R_MODELS;
    if (!strcmp(url, "/health"))
        return R_HEALTH;
    if (!strcmp(url, "/metrics"))
        return R_METRICS;
    return R_OTHER;
}

/* Everything decided from the headers alone; answers and returns true when the request
 * is settled before its body is read. */
static bool precheck(struct MHD_Connection *mc, conn *c, const char *url, const char *method,
                     enum MHD_Result *res)
{
    server *s = c->srv;
    c->route = route_of(url);
    bool post = c->route == R_CHAT || c->route == R_COMPL;
    if (!strcmp(method, "OPTIONS") && s->cors && c->route != R_OTHER) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        add_common_headers(c, r);
        MHD_add_response_header(r, "Access-Control-Allow-Methods", post ? "POST, OPTIONS" : "GET, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
        c->status = 204;
        c->answered = true;
        *res = MHD_queue_response(mc, 204, r);
        MHD_destroy_response(r);
        return true;
    }
    if (c->route == R_OTHER) {
        *res = send_errorf(mc, c, 404, "invalid_request_error", "not_found", "unknown route '%s'", url);
        return true;
    }
    if (c->route != R_HEALTH && !key_ok(s, mc, &c->key_consents)) {
        *res = send_errorf(mc, c, 401, "invalid_request_error", "invalid_api_key",
                           "%s", "missing or incorrect API key (send 'Authorization: Bearer KEY')");
        return true;
    }
    if (strcmp(method, post ? "POST" : "GET") != 0 && !(strcmp(method, "HEAD") == 0 && !post)) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s needs %s, not %.16s", ROUTE_NAMES[c->route], post ? "POST" : "GET", method);
        *res = send_errorf(mc, c, 405, "invalid_request_error", "method_not_allowed", "%s", msg);
        return true;
    }
    const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > s->max_body) {
        char msg[96];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", s->max_body);
        *res = send_errorf(mc, c, 413, "invalid_request_error", "request_too_large", "%s", msg);
        return true;
    }
    return false;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    server *s = cls;
    conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        c->srv = s;
        c->fd = -1;
        c->t0 = now_s();
        *con_cls = c;
        enum MHD_Result res;
        if (precheck(mc, c, url, method, &res))
            return res;
        return MHD_YES;
    }
    if (c->answered) { /* a body after an early answer: discard it */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (c->too_large || c->len + n > s->max_body) {
            c->too_large = true;
            return MHD_YES;
        }
        if (c->len + n + 1 > c->cap) {
            size_t cap = c->cap ? c->cap : 4096;
            while (cap < c->len + n + 1)
                cap *= 2;
            char *b = realloc(c->body, cap);
            if (!b)
                return MHD_NO;
            c->body = b;
            c->cap = cap;
        }
        memcpy(c->body + c->len, upload, n);
        c->len += n;
        return MHD_YES;
    }
    if (c->too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", s->max_body);
        return send_errorf(mc, c, 413, "invalid_request_error", "request_too_large", "%s", msg);
    }
    switch (c->route) {
    case R_HEALTH:
        return send_text(mc, c, 200, "application/json", strdup("{\"status\":\"ok\"}"), NULL);
    case R_METRICS:
        return send_text(mc, c, 200, "text/plain; version=0.0.4", metrics_text(s), NULL);
    case R_MODELS:
        return send_json(mc, c, 200,
                         json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:{s:I, s:I}}]}", "object", "list", "data", "id",
                                   s->model_id, "object", "model", "created", (json_int_t)s->started, "owned_by",
                                   "orchard", "meta", "n_ctx", (json_int_t)srv_engine_n_ctx(s->engine), "n_params",
                                   (json_int_t)orc_model_n_params(s->model)));
    default:
        return handle_generate(mc, c);
    }
}

static void completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode tc)
{
    (void)mc;
    server *s = cls;
    conn *c = *con_cls;
    if (!c)
        return;
    *con_cls = NULL;
    bool counted_in_stream = c->req.stream && c->phase == 2;
    if (!counted_in_stream) {
        int status = c->answered ? c->status : 499;
        if (c->req.stream && c->answered)
            status = 499; /* a stream that did not finish */
        count_request(s, c->route, status, c->route <= R_COMPL ? now_s() - c->t0 : -1);
    }
    if (!s->quiet && !s->stateless)
        fprintf(stderr, "orchard serve: %s %d %.3fs%s\n", ROUTE_NAMES[c->route],
                c->answered ? c->status : 499, now_s() - c->t0,
                tc == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    for (int i = 0; i < c->n_jobs; i++)
        srv_job_release(s->engine, c->jobs[i]);
    upstream_free(c->up);
    if (c->have_req)
        srv_request_free(&c->req);
    free(c->body);
    free(c->out);
    free(c);
}

/* ---- setup ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    orc_tool_syntax syntax;
    const char *marker; /* text in a chat template that uses the syntax */
} SYNTAXES[] = {
    {"gpt-oss", ORC_TOOL_SYNTAX_GPT_OSS, "<|channel|>"},
    {"kimi", ORC_TOOL_SYNTAX_KIMI, "<|tool_calls_section_begin|>"},
    {"deepseek", ORC_TOOL_SYNTAX_DEEPSEEK, "tool\xe2\x96\x81" "calls\xe2\x96\x81" "begin"},
    {"glm", ORC_TOOL_SYNTAX_GLM, "<arg_key>"},
    {"qwen3-coder", ORC_TOOL_SYNTAX_QWEN3_CODER, "<parameter="},
    {"granite", ORC_TOOL_SYNTAX_GRANITE, "<|tool_call|>"},
    {"mistral", ORC_TOOL_SYNTAX_MISTRAL, "[TOOL_CALLS]"},
    {"functionary", ORC_TOOL_SYNTAX_FUNCTIONARY, ">>>"},
    {"llama3", ORC_TOOL_SYNTAX_LLAMA3, "<|python_tag|>"},
    {"hermes", ORC_TOOL_SYNTAX_HERMES, "<tool_call>"},
    {"none", ORC_TOOL_SYNTAX_NONE, NULL},
};

/* The tool-call syntax a model's chat template uses (ChatML/Hermes when unsure). */
static orc_tool_syntax detect_tool_syntax(const orc_model *m)
{
    int32_t n = orc_model_meta_value(m, "tokenizer.chat_template", NULL, 0);
    if (n <= 0)
        return ORC_TOOL_SYNTAX_HERMES;
    char *src = malloc((size_t)n + 1);
    orc_tool_syntax found = ORC_TOOL_SYNTAX_HERMES;
    if (src && orc_model_meta_value(m, "tokenizer.chat_template", src, (size_t)n + 1) >= 0) {
        for (size_t i = 0; i < sizeof SYNTAXES / sizeof SYNTAXES[0]; i++)
            if (SYNTAXES[i].marker && strstr(src, SYNTAXES[i].marker)) {
                found = SYNTAXES[i].syntax;
                break;
            }
    }
    free(src);
    return found;
}

static int add_key(server *s, const char *k, size_t n)
{
    while (n && (k[n - 1] == ' ' || k[n - 1] == '\t' || k[n - 1] == '\r'))
        n--;
    while (n && (*k == ' ' || *k == '\t'))
        k++, n--;
    if (!n || *k == '#')
        return 0;
    /* "KEY escalate": this key's requests consent to escalation */
    bool consent = false;
    const char *sp = memchr(k, ' ', n);
    if (sp) {
        const char *f = sp;
        while (f < k + n && *f == ' ')
            f++;
        consent = (size_t)(k + n - f) == 8 && !memcmp(f, "escalate", 8);
        n = (size_t)(sp - k);
    }
    char **keys = realloc(s->keys, (s->n_keys + 1) * sizeof *keys);
    if (!keys)
        return -1;
    s->keys = keys;
    bool *kc = realloc(s->key_consent, (s->n_keys + 1) * sizeof *kc);
    if (!kc)
        return -1;
    s->key_consent = kc;
    if (!(s->keys[s->n_keys] = strndup(k, n)))
        return -1;
    s->key_consent[s->n_keys] = consent;
    s->n_keys++;
    return 0;
}

static int load_keys(server *s, const char *file)
{
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f) {
            fprintf(stderr, "orchard serve: cannot open the API key file '%s'\n", file);
            return -1;
        }
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            size_t n = strcspn(line, "\n");
            if (add_key(s, line, n)) {
                fclose(f);
                return -1;
            }
        }
        fclose(f);
        if (!s->n_keys) {
            fprintf(stderr, "orchard serve: the API key file '%s' holds no keys\n", file);
            return -1;
        }
    }
    const char *env = getenv("ORCHARD_API_KEY");
    while (env && *env) {
        size_t n = strcspn(env, ",");
        if (add_key(s, env, n))
            return -1;
        env += n + (env[n] == ',');
    }
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    const char *C = "serve";
    const char *model_path = NULL, *host = "127.0.0.1", *alias = NULL, *key_file = NULL;
    const char *policy_file = NULL, *upstream_key_env = NULL, *tool_syntax = NULL;
    int64_t port = 8080, timeout = 60, max_header = 32768, max_conn = 128;
    srv_engine_params ep = {.n_parallel = 4, .n_ctx = 0, .n_batch = 512, .n_threads = 0, .queue_max = -1};
    static server S;
    server *s = &S;
    s->max_body = 4 << 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(SERVE_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--alias")) {
            alias = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--host")) {
            host = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--port")) {
            port = cli_int(C, a, cli_value(C, argc, argv, &i), 0, 65535);
        } else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) {
            ep.n_parallel = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 256);
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            ep.n_ctx = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 24);
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) {
            ep.n_batch = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 1 << 16);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            ep.n_threads = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 1024);
        } else if (!strcmp(a, "--queue")) {
            ep.queue_max = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 20);
        } else if (!strcmp(a, "--api-key-file")) {
            key_file = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--max-body")) {
            s->max_body = (size_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1024, (int64_t)1 << 32);
        } else if (!strcmp(a, "--max-header")) {
            max_header = cli_int(C, a, cli_value(C, argc, argv, &i), 4096, 1 << 24);
        } else if (!strcmp(a, "--timeout")) {
            timeout = cli_int(C, a, cli_value(C, argc, argv, &i), 1, 86400);
        } else if (!strcmp(a, "--max-connections")) {
            max_conn = cli_int(C, a, cli_value(C, argc, argv, &i), 1, 65536);
        } else if (!strcmp(a, "--cors-origin")) {
            s->cors = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--quiet")) {
            s->quiet = true;
        } else if (!strcmp(a, "--stateless")) {
            s->stateless = true;
        } else if (!strcmp(a, "--upstream")) {
            s->upstream = cli_value(C, argc, argv, &i);
            if (strncmp(s->upstream, "http://", 7) && strncmp(s->upstream, "https://", 8))
                cli_usage_error(C, "--upstream expects an http:// or https:// URL, not '%s'", s->upstream);
        } else if (!strcmp(a, "--upstream-key-env")) {
            upstream_key_env = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--tool-syntax")) {
            tool_syntax = cli_value(C, argc, argv, &i);
            size_t k = 0;
            while (k < sizeof SYNTAXES / sizeof SYNTAXES[0] && strcmp(SYNTAXES[k].name, tool_syntax))
                k++;
            if (k == sizeof SYNTAXES / sizeof SYNTAXES[0])
                cli_usage_error(C, "--tool-syntax expects hermes, llama3, mistral, functionary, granite, deepseek, "
                                   "kimi, glm, gpt-oss, qwen3-coder or none, not '%s'", tool_syntax);
            s->tool_syntax = SYNTAXES[k].syntax;
        } else if (!strcmp(a, "--policy")) {
            policy_file = cli_value(C, argc, argv, &i);
        } else {
            cli_usage_error(C, "unknown option '%s'", a);
        }
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        cli_usage_error(C, "--host expects an IPv4 address, not '%s'", host);
    if (load_keys(s, key_file))
        return CLI_EXIT_FAIL;
    if (upstream_key_env) {
        const char *v = getenv(upstream_key_env);
        if (!v || !*v) {
            fprintf(stderr, "orchard serve: $%s (the upstream key) is not set\n", upstream_key_env);
            return CLI_EXIT_FAIL;
        }
        s->upstream_key = strdup(v);
    }
    char perr[320] = "";
    if ((policy_file || s->upstream) && !(s->policy = srv_policy_load(policy_file, perr, sizeof perr))) {
        fprintf(stderr, "orchard serve: %s\n", perr);
        return CLI_EXIT_FAIL;
    }
    if (s->upstream && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "orchard serve: libcurl failed to initialise\n");
        return CLI_EXIT_FAIL;
    }
    ep.keep_cache = !s->stateless;
    if (!model_path)
        model_path = cli_default_model();

    /* signals are taken by sigwait below; every thread inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    s->model = cli_load_model(C, model_path, ep.n_threads);
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    snprintf(s->model_id, sizeof s->model_id, "%s", alias ? alias : base);
    if (!alias) {
        size_t l = strlen(s->model_id);
        if (l > 5 && !strcmp(s->model_id + l - 5, ".gguf"))
            s->model_id[l - 5] = 0;
    }
    s->started = (int64_t)time(NULL);
    if (!tool_syntax)
        s->tool_syntax = detect_tool_syntax(s->model);
    pthread_mutex_init(&s->mlock, NULL);
    int rc = CLI_EXIT_FAIL;
    struct MHD_Daemon *d = NULL;
    if (orc_chat_template_from_model(s->model, &s->tmpl) != ORC_OK ||
        srv_engine_new(s->model, &ep, &s->engine) != ORC_OK) {
        fprintf(stderr, "orchard serve: %s\n", orc_last_error());
        goto done;
    }
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                             MHD_USE_ERROR_LOG,
                         (uint16_t)port, NULL, NULL, handler, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned)timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)max_header,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)max_conn, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "orchard serve: cannot listen on %s:%lld (in use, or not permitted)\n", host,
                (long long)port);
        goto done;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr, "orchard serve: model '%s', %d slots of %d positions%s%s%s\n", s->model_id, ep.n_parallel,
            srv_engine_n_ctx(s->engine), s->n_keys ? ", API keys required" : "",
            s->upstream ? ", escalation upstream configured" : "", s->stateless ? ", stateless" : "");
    fprintf(stderr, "orchard serve: listening on http://%s:%u\n", host, di ? di->port : (unsigned)port);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "orchard serve: stopping (signal %d)\n", sig);
    atomic_store(&s->stopping, true);
    rc = 0;
done:
    if (d)
        MHD_stop_daemon(d);
    srv_engine_free(s->engine);
    orc_chat_template_free(s->tmpl);
    orc_model_free(s->model);
    for (size_t i = 0; i < s->n_keys; i++)
        free(s->keys[i]);
    free(s->keys);
    free(s->key_consent);
    if (s->upstream_key) {
        memset(s->upstream_key, 0, strlen(s->upstream_key));
        free(s->upstream_key);
    }
    srv_policy_free(s->policy);
    if (s->upstream)
        curl_global_cleanup();
    pthread_mutex_destroy(&s->mlock);
    return rc;
}
