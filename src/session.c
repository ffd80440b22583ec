/* session.c - the framework layer developers program against: sessions with
 * instructions, a transcript, streaming responses with stop strings and cancellation,
 * structured (JSON Schema) responses with partial-value snapshots, tool calling, context
 * window policies and prompt-cache reuse across turns. Built on the public context,
 * sampler, chat-template and grammar APIs; syntaxes live in session_tools.c. */
#include "session.h"

#include "chat.h"
#include "common.h"
#include "cpu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRANSCRIPT_VERSION 1
#define SUMMARY_MAX_TOKENS 256
/* Text cut out of a render to find the prefix shared by every continuation. */
#define CUT_MARK "\x1e\x1dorchard-cut\x1d\x1e"

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 when the bytes are not one. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    size_t len = p[0] >= 0xC2 && p[0] <= 0xDF ? 2 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : 0;
    if (!len || len > n)
        return 0;
    for (size_t k = 1; k < len; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] > 0x9F) || (p[0] == 0xF0 && p[1] < 0x90) ||
        (p[0] == 0xF4 && p[1] > 0x8F))
        return 0; /* overlong, surrogate, beyond U+10FFFF */
    return len;
}

/* Appends text with each byte that is not valid UTF-8 (and NUL) replaced by U+FFFD, so
 * model output always fits in JSON strings. */
static void sb_add_utf8(sbuf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t k = p[i] ? utf8_seq(p + i, n - i) : 0;
        if (k) {
            i += k;
            continue;
        }
        sb_add(b, s + run, i - run);
        sb_add(b, "\xef\xbf\xbd", 3);
        i++;
        run = i;
    }
    sb_add(b, s + run, n - run);
}

static bool utf8_valid(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_seq((const unsigned char *)s + i, n - i)))
            return false;
    return true;
}

static char *dupstr(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *r = malloc(n + 1);
    if (r)
        memcpy(r, s, n + 1);
    return r;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

typedef struct {
    char *name, *description;
    json_t *parameters;
    orc_tool_fn fn;
    void *user;
} tool_def;

/* Generation options with owned stop strings. */
typedef struct {
    orc_generation_options o;
    char **stop;
} owned_options;

struct orc_session {
    orc_model *model;
    orc_context *ctx;
    orc_chat_template *tpl;
    orc_tool_syntax syntax;
    int syntax_variant;          /* how the template writes calls (tool_syntax_variant) */
    tool_def *tools;
    int32_t n_tools;
    json_t *tools_json;          /* the tools as the chat template sees them */
    owned_options defaults;
    orc_context_policy policy;
    bool prefix_reuse, parallel_tools, constrain_tools;
    int32_t max_tool_rounds;
    json_t *entries;             /* the transcript (instructions first when present) */
    orc_token *kv;               /* the tokens in the KV cache, in order */
    int32_t n_kv, kv_cap;
    int64_t call_counter;
    atomic_flag busy;
    atomic_bool cancel;
    const char *const *script;   /* tests: outputs that replace generation */
    int32_t n_script, script_pos;
    const char *script_prefix;   /* tests: text the next round starts with */
};

void session_script_prefix(orc_session *s, const char *text)
{
    s->script_prefix = text;
}

void session_script(orc_session *s, const char *const *outputs, int32_t n)
{
    s->script = outputs;
    s->n_script = n;
    s->script_pos = 0;
}

/* ---- defaults ---- */

orc_generation_options orc_generation_default_options(void)
{
    orc_generation_options o = {.sampler = orc_sampler_default_params(), .max_tokens = 512};
    return o;
}

orc_session_params orc_session_default_params(void)
{
    orc_session_params p = {0};
    p.defaults = orc_generation_default_options();
    p.context = orc_context_default_params();
    p.policy = ORC_CONTEXT_FAIL;
    p.prefix_reuse = true;
    p.max_tool_rounds = 8;
    p.constrain_tool_calls = true;
    p.tool_syntax = ORC_TOOL_SYNTAX_AUTO;
    return p;
}

orc_request orc_request_default(void)
{
    orc_request r = {0};
    r.schema_in_prompt = true;
    r.use_tools = true;
    return r;
}

static void owned_options_free(owned_options *oo)
{
    for (int32_t i = 0; oo->stop && i < oo->o.n_stop; i++)
        free(oo->stop[i]);
    free(oo->stop);
    oo->stop = NULL;
}

static orc_status owned_options_set(owned_options *oo, const orc_generation_options *o)
{
    if (o->n_stop < 0 || o->n_stop > 64 || (o->n_stop > 0 && !o->stop))
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "generation options: n_stop must be in [0, 64] with stop set");
    oo->o = *o;
    oo->stop = o->n_stop ? calloc((size_t)o->n_stop, sizeof *oo->stop) : NULL;
    if (o->n_stop && !oo->stop)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    for (int32_t i = 0; i < o->n_stop; i++) {
        if (!o->stop[i] || !o->stop[i][0]) {
            oo->o.n_stop = i;
            owned_options_free(oo);
            return orc_fail(ORC_ERR_INVALID_ARGUMENT, "generation options: stop string %d is empty", i);
        }
        oo->stop[i] = dupstr(o->stop[i]);
        if (!oo->stop[i]) {
            oo->o.n_stop = i;
            owned_options_free(oo);
            return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        }
    }
    oo->o.stop = (const char *const *)oo->stop;
    return ORC_OK;
}

static bool valid_tool_name(const char *n)
{
    if (!n || !*n || strlen(n) > 128)
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-' || *p == '.'))
            return false;
    return true;
}

/* ---- lifecycle ---- */

static json_t *instructions_entry(const char *text)
{
    return json_pack("{s:s, s:s}", "type", "instructions", "text", text);
}

void orc_session_free(orc_session *s)
{
    if (!s)
        return;
    orc_context_free(s->ctx);
    orc_chat_template_free(s->tpl);
    for (int32_t i = 0; i < s->n_tools; i++) {
        free(s->tools[i].name);
        free(s->tools[i].description);
        json_decref(s->tools[i].parameters);
    }
    free(s->tools);
    json_decref(s->tools_json);
    owned_options_free(&s->defaults);
    json_decref(s->entries);
    free(s->kv);
    free(s);
}

orc_status orc_session_new(orc_model *model, const orc_session_params *params, orc_session **out)
{
    if (out)
        *out = NULL;
    if (!model || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_new: model and out are required");
    orc_session_params p = params ? *params : orc_session_default_params();
    if (p.n_tools < 0 || p.n_tools > 1024 || (p.n_tools > 0 && !p.tools))
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_new: n_tools must be in [0, 1024] with tools set");
    if ((unsigned)p.tool_syntax > ORC_TOOL_SYNTAX_NONE || (unsigned)p.policy > ORC_CONTEXT_SUMMARIZE)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_new: unknown tool syntax or context policy");
    if (p.instructions && !utf8_valid(p.instructions))
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_new: the instructions are not valid UTF-8");
    for (int32_t i = 0; i < p.n_tools; i++)
        if (p.tools[i].description && !utf8_valid(p.tools[i].description))
            return orc_fail(ORC_ERR_INVALID_ARGUMENT, "tool %d: the description is not valid UTF-8", i);
    orc_session *s = calloc(1, sizeof *s);
    if (!s)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    atomic_flag_clear(&s->busy);
    atomic_init(&s->cancel, false);
    s->model = model;
    s->policy = p.policy;
    s->prefix_reuse = p.prefix_reuse;
    s->parallel_tools = p.parallel_tool_calls;
    s->constrain_tools = p.constrain_tool_calls;
    s->max_tool_rounds = p.max_tool_rounds > 0 ? p.max_tool_rounds : 1;
    orc_status st = owned_options_set(&s->defaults, &p.defaults);
    if (st)
        goto fail;
    orc_context_params cp = p.context;
    cp.n_seq = 1;
    if ((st = orc_context_new(model, &cp, &s->ctx)))
        goto fail;
    if (p.chat_template)
        st = orc_chat_template_from_source(p.chat_template, NULL, NULL, &s->tpl);
    else
        st = orc_chat_template_from_model(model, &s->tpl);
    if (st)
        goto fail;
    if (p.chat_template) {
        /* the model's BOS/EOS strings still apply to a replacement template */
        orc_chat_template *mt = NULL;
        if (orc_chat_template_from_model(model, &mt) == ORC_OK)
            orc_chat_template_set_tokens(s->tpl, orc_chat_template_bos(mt), orc_chat_template_eos(mt));
        orc_chat_template_free(mt);
    }
    {
        /* the syntax (unless forced) and its variant follow the template's source */
        char *src = NULL;
        if (p.chat_template) {
            src = dupstr(p.chat_template);
        } else {
            int32_t n = orc_model_meta_value(model, "tokenizer.chat_template", NULL, 0);
            if (n >= 0 && (src = malloc((size_t)n + 1)))
                orc_model_meta_value(model, "tokenizer.chat_template", src, (size_t)n + 1);
        }
        s->syntax = p.tool_syntax == ORC_TOOL_SYNTAX_AUTO ? tool_syntax_detect(src) : p.tool_syntax;
        s->syntax_variant = tool_syntax_variant(s->syntax, src);
        free(src);
    }
    s->tools_json = json_array();
    s->entries = json_array();
    if (!s->tools_json || !s->entries)
        goto oom;
    if (p.n_tools) {
        s->tools = calloc((size_t)p.n_tools, sizeof *s->tools);
        if (!s->tools)
            goto oom;
    }
    for (int32_t i = 0; i < p.n_tools; i++) {
        const orc_tool *t = &p.tools[i];
        if (!valid_tool_name(t->name) || !t->fn) {
            st = orc_fail(ORC_ERR_INVALID_ARGUMENT, "tool %d: a name of [A-Za-z0-9_.-] and a callback are required", i);
            goto fail;
        }
        for (int32_t j = 0; j < i; j++)
            if (!strcmp(p.tools[j].name, t->name)) {
                st = orc_fail(ORC_ERR_INVALID_ARGUMENT, "tool %d: the name '%s' is used twice", i, t->name);
                goto fail;
            }
        tool_def *d = &s->tools[s->n_tools];
        json_error_t je;
        d->parameters = t->parameters ? json_loads(t->parameters, 0, &je) : json_pack("{s:s}", "type", "object");
        if (!d->parameters || !json_is_object(d->parameters)) {
            st = orc_fail(ORC_ERR_INVALID_ARGUMENT, "tool '%s': parameters must be a JSON Schema object", t->name);
            json_decref(d->parameters);
            d->parameters = NULL;
            goto fail;
        }
        d->name = dupstr(t->name);
        d->description = dupstr(t->description ? t->description : "");
        d->fn = t->fn;
        d->user = t->user;
        s->n_tools++;
        if (!d->name || !d->description)
            goto oom;
        json_t *fn = json_pack("{s:s, s:s, s:O}", "name", d->name, "description", d->description, "parameters",
                               d->parameters);
        if (!fn || json_array_append_new(s->tools_json, json_pack("{s:s, s:o}", "type", "function", "function", fn)))
            goto oom;
    }
    if (p.instructions && p.instructions[0] &&
        json_array_append_new(s->entries, instructions_entry(p.instructions)))
        goto oom;
    *out = s;
    return ORC_OK;
oom:
    st = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
fail:
    orc_session_free(s);
    return st;
}

static bool acquire(orc_session *s)
{
    return !atomic_flag_test_and_set(&s->busy);
}

static void release(orc_session *s)
{
    atomic_flag_clear(&s->busy);
}

#define BUSY_FAIL(fn) orc_fail(ORC_ERR_BUSY, fn ": the session is serving another request")

void orc_session_cancel(orc_session *s)
{
    if (s)
        atomic_store(&s->cancel, true);
}

int32_t orc_session_n_ctx(const orc_session *s)
{
    return s ? orc_context_n_ctx(s->ctx) : 0;
}

int32_t orc_session_n_cached(const orc_session *s)
{
    return s ? s->n_kv : 0;
}

int32_t orc_session_n_entries(const orc_session *s)
{
    return s ? (int32_t)json_array_size(s->entries) : 0;
}

const char *orc_session_tool_syntax_name(const orc_session *s)
{
    return s ? tool_syntax_name(s->syntax) : "";
}

/* ---- rendering the transcript ---- */

static const char *jstr(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

static json_t *prompt_message(const json_t *e)
{
    const char *schema = json_string_value(json_object_get(e, "schema"));
    if (!schema)
        return json_pack("{s:s, s:s}", "role", "user", "content", jstr(e, "text"));
    sbuf b = {0};
    sb_add(&b, jstr(e, "text"), strlen(jstr(e, "text")));
    const char *intro = "\n\nAnswer with a JSON value that follows this JSON Schema:\n";
    sb_add(&b, intro, strlen(intro));
    sb_add(&b, schema, strlen(schema));
    json_t *m = b.oom ? NULL : json_pack("{s:s, s:s}", "role", "user", "content", b.p);
    free(b.p);
    return m;
}

/* Templates differ: most want the arguments as an object, some (functionary, Apertus)
 * concatenate them as a string. */
static json_t *call_args(const json_t *c, bool as_string)
{
    json_t *a = json_object_get(c, "arguments");
    if (!as_string)
        return json_incref(a);
    char *txt = json_dumps(a, JSON_COMPACT);
    json_t *r = txt ? json_string(txt) : NULL;
    free(txt);
    return r;
}

static json_t *call_message(const json_t *e, const json_t *c, bool with_text, bool args_string)
{
    json_t *fn = json_pack("{s:s, s:o}", "name", jstr(c, "name"), "arguments", call_args(c, args_string));
    json_t *call = json_pack("{s:s, s:s, s:o}", "id", jstr(c, "id"), "type", "function", "function", fn);
    return json_pack("{s:s, s:s, s:[o]}", "role", "assistant", "content", with_text ? jstr(e, "text") : "",
                     "tool_calls", call);
}

static json_t *output_message(const json_t *e)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "role", "tool", "tool_call_id", jstr(e, "id"), "name", jstr(e, "name"),
                     "content", jstr(e, "output"));
}

/* The chat messages of a transcript (plus an optional extra user message). split: one
 * assistant message per tool call, each followed by its output (for templates that
 * accept a single call per message, like Llama 3.1's). */
static json_t *transcript_messages(const json_t *entries, const char *extra_user, bool split, bool args_string)
{
    json_t *msgs = json_array();
    sbuf sys = {0};
    bool have_sys = false;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *type = jstr(e, "type");
        if (!strcmp(type, "instructions")) {
            sb_add(&sys, jstr(e, "text"), strlen(jstr(e, "text")));
            have_sys = true;
        } else if (!strcmp(type, "summary")) {
            const char *h = have_sys ? "\n\nSummary of the earlier conversation:\n" : "Summary of the earlier conversation:\n";
            sb_add(&sys, h, strlen(h));
            sb_add(&sys, jstr(e, "text"), strlen(jstr(e, "text")));
            have_sys = true;
        }
    }
    if (have_sys && !sys.oom)
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", sys.p));
    free(sys.p);
    json_array_foreach(entries, i, e) {
        const char *type = jstr(e, "type");
        json_t *m = NULL;
        if (!strcmp(type, "prompt")) {
            m = prompt_message(e);
        } else if (!strcmp(type, "response")) {
            m = json_pack("{s:s, s:s}", "role", "assistant", "content", jstr(e, "text"));
        } else if (!strcmp(type, "tool_calls") && split) {
            size_t k;
            json_t *c;
            json_array_foreach(json_object_get(e, "calls"), k, c) {
                json_array_append_new(msgs, call_message(e, c, k == 0, args_string));
                for (size_t j = i + 1; j < json_array_size(entries); j++) {
                    json_t *o = json_array_get(entries, j);
                    if (!strcmp(jstr(o, "type"), "tool_output") && !strcmp(jstr(o, "id"), jstr(c, "id"))) {
                        json_array_append_new(msgs, output_message(o));
                        break;
                    }
                }
            }
            continue;
        } else if (!strcmp(type, "tool_calls")) {
            json_t *tc = json_array();
            size_t k;
            json_t *c;
            json_array_foreach(json_object_get(e, "calls"), k, c) {
                json_t *fn = json_pack("{s:s, s:o}", "name", jstr(c, "name"), "arguments", call_args(c, args_string));
                json_array_append_new(tc, json_pack("{s:s, s:s, s:o}", "id", jstr(c, "id"), "type", "function",
                                                    "function", fn));
            }
            m = json_pack("{s:s, s:s, s:o}", "role", "assistant", "content", jstr(e, "text"), "tool_calls", tc);
        } else if (!strcmp(type, "tool_output")) {
            if (split)
                continue; /* written after its call */
            m = output_message(e);
        } else {
            continue;
        }
        if (!m || json_array_append_new(msgs, m)) {
            json_decref(msgs);
            return NULL;
        }
    }
    if (extra_user && json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", extra_user))) {
        json_decref(msgs);
        return NULL;
    }
    return msgs;
}

static bool has_calls(const json_t *entries)
{
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        if (json_array_size(json_object_get(e, "calls")) > 0)
            return true;
    }
    return false;
}

static orc_status render(orc_session *s, const json_t *msgs, bool with_tools, bool gen_prompt, char **out)
{
    *out = NULL;
    if (!msgs)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    orc_chat_input in = {.messages = msgs,
                         .tools = with_tools && s->n_tools ? s->tools_json : NULL,
                         .add_generation_prompt = gen_prompt,
                         .now = -1};
    char err[1024];
    if (orc_chat_template_apply(s->tpl, &in, out, NULL, err, sizeof err))
        return orc_fail(ORC_ERR_FORMAT, "chat template: %s", err);
    return ORC_OK;
}

/* Tokens of rendered text; BOS is added unless the template already wrote it. */
static orc_status tokenize_text(orc_session *s, const char *text, size_t len, bool allow_bos, orc_token **out,
                                int32_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (len > (size_t)INT32_MAX / 2)
        return orc_fail(ORC_ERR_CONTEXT_FULL, "the prompt is %zu bytes, far more than any context holds", len);
    const char *bos = orc_chat_template_bos(s->tpl);
    bool add = allow_bos && !(bos[0] && len >= strlen(bos) && !memcmp(text, bos, strlen(bos)));
    int32_t n = orc_tokenize(s->model, text, len, NULL, 0, add, true);
    if (n < 0)
        n = -n;
    orc_token *t = malloc(((size_t)n + 1) * sizeof *t);
    if (!t)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    n = orc_tokenize(s->model, text, len, t, n + 1, add, true);
    if (n < 0) {
        free(t);
        return orc_fail(ORC_ERR_INTERNAL, "tokenizer disagreed about the token count");
    }
    *out = t;
    *n_out = n;
    return ORC_OK;
}

static orc_status render_tokens(orc_session *s, const json_t *entries, bool with_tools, orc_token **toks,
                                int32_t *n)
{
    char *text = NULL;
    orc_status st = ORC_OK;
    /* tool calls: the conventional form first, then the forms some templates insist on */
    int forms = has_calls(entries) ? 4 : 1;
    for (int f = 0; f < forms; f++) {
        json_t *msgs = transcript_messages(entries, NULL, f >= 2, f % 2 == 1);
        st = render(s, msgs, with_tools, true, &text);
        json_decref(msgs);
        if (st != ORC_ERR_FORMAT)
            break;
    }
    if (st == ORC_OK)
        st = tokenize_text(s, text, strlen(text), true, toks, n);
    free(text);
    return st;
}

/* ---- the KV cache ---- */

static orc_status kv_reserve(orc_session *s, int32_t n)
{
    if (n <= s->kv_cap)
        return ORC_OK;
    int32_t cap = s->kv_cap ? s->kv_cap : 256;
    while (cap < n)
        cap = cap > INT32_MAX / 2 ? n : cap * 2;
    orc_token *k = realloc(s->kv, (size_t)cap * sizeof *k);
    if (!k)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    s->kv = k;
    s->kv_cap = cap;
    return ORC_OK;
}

static void kv_clear(orc_session *s)
{
    orc_context_clear(s->ctx);
    s->n_kv = 0;
}

/* Evaluates tokens after the cache, in n_batch chunks so cancellation is noticed. */
static orc_status kv_eval(orc_session *s, const orc_token *t, int32_t n)
{
    orc_status st = kv_reserve(s, s->n_kv + n);
    if (st)
        return st;
    const int32_t chunk = 256;
    for (int32_t i = 0; i < n; i += chunk) {
        if (atomic_load(&s->cancel))
            return orc_fail(ORC_ERR_CANCELLED, "cancelled");
        int32_t m = n - i < chunk ? n - i : chunk;
        st = orc_eval(s->ctx, t + i, m, false);
        if (st) {
            if (orc_context_n_past(s->ctx) != s->n_kv)
                kv_clear(s);
            return st;
        }
        memcpy(s->kv + s->n_kv, t + i, (size_t)m * sizeof *t);
        s->n_kv += m;
    }
    return ORC_OK;
}

/* Makes the cache hold exactly toks[0..n): keeps the common prefix (always evaluating
 * at least the last token, whose logits start generation) and evaluates the rest. */
static orc_status kv_sync(orc_session *s, const orc_token *toks, int32_t n, int32_t *n_cached, int32_t *n_eval)
{
    if (n <= 0)
        return orc_fail(ORC_ERR_INTERNAL, "the chat template rendered an empty prompt");
    int32_t p = 0;
    if (s->prefix_reuse)
        while (p < s->n_kv && p < n && s->kv[p] == toks[p])
            p++;
    if (p >= n)
        p = n - 1;
    if (p < s->n_kv) {
        if (p == 0 || orc_context_truncate(s->ctx, p) != ORC_OK) {
            kv_clear(s); /* e.g. a sliding window already overwrote what we would keep */
            p = 0;
        } else {
            s->n_kv = p;
        }
    }
    *n_cached = p;
    *n_eval = n - p;
    return kv_eval(s, toks + p, n - p);
}

/* ---- one round of generation ---- */

typedef struct {
    orc_session *s;
    const orc_generation_options *opt;
    const orc_request *req;          /* NULL for internal generations (summaries) */
    const orc_grammar *grammar;      /* whole-output grammar (structured responses) */
    const orc_grammar *tool_grammar; /* lazy grammar for tool calls (rule "root") */
    const orc_grammar *tool_call_grammar; /* a required call (rule "call") */
    bool tools_on;
    bool force_tool;                 /* this round starts inside a tool call */
    orc_response_stats *st;
    double t_start;
    bool first_token_seen;
    char *last_snapshot;
    json_t *tool_snaps;              /* the last tool-call snapshot of each call of the round */
    /* results */
    sbuf text;
    orc_stop_reason reason;
} round_ctx;

/* Length of the longest proper prefix of m that text ends with. */
static size_t partial_suffix(const char *text, size_t n, const char *m)
{
    size_t ml = strlen(m);
    for (size_t k = ml - 1; k > 0; k--)
        if (k <= n && !memcmp(text + n - k, m, k))
            return k;
    return 0;
}

static bool emit_snapshot(round_ctx *rc, bool final)
{
    if (!rc->req || !rc->req->on_snapshot || !rc->grammar)
        return true;
    json_t *v = partial_json_parse(rc->text.p ? rc->text.p : "", rc->text.n, NULL);
    if (!v)
        return true;
    char *js = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    if (!js)
        return true;
    bool changed = !rc->last_snapshot || strcmp(js, rc->last_snapshot) != 0;
    if (!changed && !final) {
        free(js);
        return true;
    }
    free(rc->last_snapshot);
    rc->last_snapshot = js;
    return rc->req->on_snapshot(js, rc->req->user);
}

static bool is_tool_name(const orc_session *s, const char *name)
{
    for (int32_t i = 0; i < s->n_tools; i++)
        if (!strcmp(s->tools[i].name, name))
            return true;
    return false;
}

/* Tool-call snapshots while the model writes calls: the calls in text parsed partially,
 * and each one (with the name of a tool) whose arguments changed since its last snapshot
 * reported to on_tool_call. False: the callback asked to cancel. */
static bool tool_snapshots(round_ctx *rc, const char *text, size_t n)
{
    orc_session *s = rc->s;
    if (!rc->req || !rc->req->on_tool_call)
        return true;
    json_t *calls = NULL;
    char err[128];
    if (tool_calls_parse_ex(s->syntax, text, n, s->tools_json, true, &calls, NULL, err, sizeof err))
        return true; /* not readable yet */
    if (!rc->tool_snaps)
        rc->tool_snaps = json_array();
    bool go_on = true;
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        if (!go_on || !rc->tool_snaps || !name || !is_tool_name(s, name))
            break; /* a name still being written, and what follows it */
        char *args = json_dumps(json_object_get(c, "arguments"), JSON_COMPACT);
        if (!args)
            break;
        json_t *prev = json_array_get(rc->tool_snaps, i);
        json_t *key = json_pack("{s:s, s:s}", "name", name, "arguments", args);
        if (key && (!prev || !json_equal(prev, key))) {
            go_on = rc->req->on_tool_call(rc->st->n_tool_calls + (int32_t)i, name, args, false, rc->req->user);
            if (prev)
                json_array_set(rc->tool_snaps, i, key);
            else
                json_array_append(rc->tool_snaps, key);
        }
        json_decref(key);
        free(args);
    }
    json_decref(calls);
    return go_on;
}

/* Tokens of text evaluated into the cache and written to the round's text, as if the
 * model had generated them (tool-call markers the session writes). */
static orc_status inject_text(round_ctx *rc, const char *text)
{
    orc_session *s = rc->s;
    orc_token *t = NULL;
    int32_t n = 0;
    if (!text[0])
        return ORC_OK;
    orc_status st = tokenize_text(s, text, strlen(text), false, &t, &n);
    if (st == ORC_OK && s->n_kv + n >= orc_context_n_ctx(s->ctx))
        st = orc_fail(ORC_ERR_CONTEXT_FULL, "no room for the tool call's markers");
    if (st == ORC_OK)
        st = kv_eval(s, t, n);
    free(t);
    if (st == ORC_OK)
        sb_add(&rc->text, text, strlen(text));
    return st;
}

static orc_status gen_round(round_ctx *rc, const orc_token *prompt, int32_t n_prompt)
{
    orc_session *s = rc->s;
    const orc_generation_options *opt = rc->opt;
    orc_response_stats *st = rc->st;
    orc_sampler *smp = NULL;
    orc_detok_stream *ds = NULL;
    orc_token *forced = NULL;
    orc_status status = ORC_OK;
    rc->text.n = 0;
    rc->reason = ORC_STOP_EOS;

    double t0 = now_ms();
    int32_t n_cached = 0, n_eval = 0;
    status = kv_sync(s, prompt, n_prompt, &n_cached, &n_eval);
    st->n_prompt = n_prompt;
    st->n_cached += n_cached;
    st->n_evaluated += n_eval;
    st->prompt_ms += now_ms() - t0;
    if (status == ORC_ERR_CANCELLED) {
        rc->reason = ORC_STOP_CANCELLED;
        return status;
    }
    if (status)
        return status;

    double tg0 = now_ms();
    if (s->script_pos < s->n_script) {
        /* a scripted model: its text is evaluated as if it had been generated */
        const char *out = s->script[s->script_pos++];
        orc_token *t = NULL;
        int32_t nt = 0;
        status = tokenize_text(s, out, strlen(out), false, &t, &nt);
        if (status == ORC_OK && s->n_kv + nt > orc_context_n_ctx(s->ctx))
            status = orc_fail(ORC_ERR_CONTEXT_FULL, "scripted output does not fit");
        if (status == ORC_OK)
            status = kv_eval(s, t, nt);
        free(t);
        sb_add_utf8(&rc->text, out, strlen(out));
        st->n_generated += nt;
        if (status == ORC_OK && rc->tools_on && rc->req && rc->req->on_tool_call) {
            /* the calls as they would stream, a character at a time */
            for (size_t k = 1; k <= rc->text.n; k++)
                if ((k == rc->text.n || ((unsigned char)rc->text.p[k] & 0xC0) != 0x80) &&
                    !tool_snapshots(rc, rc->text.p, k)) {
                    atomic_store(&s->cancel, true);
                    break;
                }
        }
        if (status == ORC_OK && rc->req && rc->req->on_delta) {
            long cs = rc->tools_on ? tool_call_start(s->syntax, out, strlen(out)) : -1;
            size_t n = cs >= 0 ? (size_t)cs : strlen(out), from = 0;
            if (rc->tools_on && s->syntax == ORC_TOOL_SYNTAX_FUNCTIONARY && !strncmp(out, "all\n", 4))
                from = 4; /* the recipient line, as in live streaming */
            if (n > from)
                rc->req->on_delta(out + from, n - from, rc->req->user);
        }
        st->generate_ms += now_ms() - tg0;
        return status;
    }
    if ((status = orc_sampler_new(&opt->sampler, orc_model_n_vocab(s->model), &smp)))
        goto done;
    if (rc->grammar) {
        if ((status = orc_sampler_set_grammar(smp, s->model, rc->grammar)))
            goto done;
    } else {
        int32_t from = n_prompt > opt->sampler.penalty_last_n ? n_prompt - opt->sampler.penalty_last_n : 0;
        for (int32_t i = from; i < n_prompt; i++)
            orc_sampler_accept(smp, prompt[i]);
    }
    ds = orc_detok_stream_new(s->model);
    forced = malloc(64 * sizeof *forced);
    if (!ds || !forced) {
        status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    /* stop strings: the request's plus the fallback template's turn markers */
    const char *stops[66];
    int32_t n_stops = 0;
    for (int32_t i = 0; i < opt->n_stop && n_stops < 64; i++)
        stops[n_stops++] = opt->stop[i];
    if (orc_chat_template_is_fallback(s->tpl)) {
        stops[n_stops++] = "<|im_end|>";
        stops[n_stops++] = "<|im_start|>";
    }
    const char *const *markers = rc->tools_on ? tool_syntax_markers(s->syntax) : NULL;
    const tool_grammar_spec *tgs = rc->tool_grammar ? tool_grammar_for(s->syntax, s->syntax_variant) : NULL;
    bool tool_gram_on = false;   /* the lazy tool grammar constrains the sampler now */
    size_t tool_scan = 0;        /* where to look for the next trigger */
    if (rc->force_tool && tgs) {
        /* the round opens with the call's opening, as if the model had written it */
        if (!tgs->trigger_in_body && (status = inject_text(rc, tgs->force ? tgs->force : tgs->trigger)))
            goto done;
        if ((status = orc_sampler_set_grammar(smp, s->model, rc->tool_call_grammar)))
            goto done;
        tool_gram_on = true;
        tool_scan = rc->text.n;
    } else if (tgs && tgs->from_start && !s->script_prefix) {
        /* the output starts inside the grammar (functionary's recipient line) */
        if ((status = orc_sampler_set_grammar(smp, s->model, rc->tool_grammar)))
            goto done;
        tool_gram_on = true;
    }
    size_t emitted = 0;
    int32_t n_gen = 0;
    int32_t n_ctx = orc_context_n_ctx(s->ctx);
    bool holding = false;        /* a tool call started: stop streaming text */
    if (s->script_prefix) {
        /* tests: the round starts with this text as if the model had written it */
        orc_token *pt = NULL;
        int32_t npt = 0;
        status = tokenize_text(s, s->script_prefix, strlen(s->script_prefix), false, &pt, &npt);
        if (status == ORC_OK)
            status = kv_eval(s, pt, npt);
        free(pt);
        sb_add_utf8(&rc->text, s->script_prefix, strlen(s->script_prefix));
        s->script_prefix = NULL;
        if (status)
            goto done;
    }

    for (;;) {
        if (atomic_load(&s->cancel)) {
            rc->reason = ORC_STOP_CANCELLED;
            break;
        }
        if (opt->max_tokens > 0 && n_gen >= opt->max_tokens) {
            rc->reason = ORC_STOP_MAX_TOKENS;
            break;
        }
        if (rc->grammar && orc_sampler_grammar_done(smp)) {
            rc->reason = ORC_STOP_GRAMMAR;
            break;
        }
        /* lazy tool grammar: a trigger in the text so far turns it on */
        if (tgs && !tool_gram_on) {
            const char *tp = NULL;
            if (tgs->at_start) {
                if (tool_scan == 0) {
                    size_t w = 0;
                    while (w < rc->text.n && (rc->text.p[w] == ' ' || rc->text.p[w] == '\n'))
                        w++;
                    if (w < rc->text.n) {
                        if (!strncmp(rc->text.p + w, tgs->trigger, strlen(tgs->trigger)))
                            tp = rc->text.p + w;
                        tool_scan = rc->text.n; /* decided */
                    }
                }
            } else if (rc->text.n > tool_scan) {
                tp = memmem(rc->text.p + tool_scan, rc->text.n - tool_scan, tgs->trigger, strlen(tgs->trigger));
            }
            if (tp) {
                const char *body = tp + (tgs->trigger_in_body ? 0 : strlen(tgs->trigger));
                while (!tgs->trigger_in_body && body < rc->text.p + rc->text.n && (*body == ' ' || *body == '\n'))
                    body++; /* JSON may follow after whitespace */
                size_t left = (size_t)(rc->text.p + rc->text.n - body);
                orc_token *lt = NULL;
                int32_t nl = 0;
                bool ok = orc_sampler_set_grammar(smp, s->model, rc->tool_grammar) == ORC_OK;
                if (ok && left > 0) {
                    /* the rest of the token that completed the trigger starts the body: feed
                     * it to the grammar when its tokens spell it exactly (a tokenizer's
                     * dummy space prefix would not), else drop it and let the grammar
                     * write the body from its start */
                    ok = tokenize_text(s, body, left, false, &lt, &nl) == ORC_OK;
                    sbuf spelled = {0};
                    for (int32_t k = 0; ok && k < nl; k++) {
                        char piece[256];
                        int32_t pl = orc_token_to_piece(s->model, lt[k], piece, sizeof piece, true);
                        if (pl > 0)
                            sb_add(&spelled, piece, (size_t)pl);
                    }
                    if (ok && spelled.n == left && !memcmp(spelled.p, body, left)) {
                        for (int32_t k = 0; k < nl; k++)
                            orc_sampler_accept(smp, lt[k]);
                    } else if (ok) {
                        rc->text.n = (size_t)(body - rc->text.p);
                        rc->text.p[rc->text.n] = 0;
                    }
                    free(spelled.p);
                    free(lt);
                }
                if (ok)
                    tool_gram_on = true;
                else
                    orc_sampler_set_grammar(smp, s->model, NULL);
                tool_scan = rc->text.n;
            }
        } else if (tool_gram_on && orc_sampler_grammar_done(smp)) {
            /* the call is complete: close it and let the model go on freely */
            tool_gram_on = false;
            orc_sampler_set_grammar(smp, s->model, NULL);
            if (tgs->closing[0]) {
                status = inject_text(rc, tgs->closing);
                if (status == ORC_ERR_CONTEXT_FULL) {
                    status = ORC_OK;
                    rc->reason = ORC_STOP_CONTEXT_FULL;
                    break;
                }
                if (status)
                    break;
            }
            tool_scan = rc->text.n;
            if (tgs->end_round) {
                if (!tool_snapshots(rc, rc->text.p, rc->text.n))
                    atomic_store(&s->cancel, true);
                rc->reason = ORC_STOP_EOS;
                break;
            }
        }
        /* the next tokens: forced by the grammar, or sampled */
        int32_t nt = 0;
        if (rc->grammar || tool_gram_on) {
            int32_t room = opt->max_tokens > 0 ? opt->max_tokens - n_gen : 64;
            nt = orc_sampler_forced_tokens(smp, forced, room < 64 ? room : 64);
            if (nt < 0)
                nt = 0;
        }
        bool sampled = nt == 0;
        if (sampled) {
            const float *logits = orc_context_logits(s->ctx, -1);
            if (!logits) {
                status = orc_fail(ORC_ERR_INTERNAL, "no logits to sample from");
                break;
            }
            orc_token t = orc_sampler_sample(smp, logits);
            if (t < 0) {
                status = orc_fail(ORC_ERR_INTERNAL, "the sampler found no admissible token");
                break;
            }
            if (!rc->first_token_seen) {
                rc->first_token_seen = true;
                st->first_token_ms = now_ms() - rc->t_start;
            }
            if (orc_token_is_eog(s->model, t)) {
                if (tool_gram_on) {
                    tool_gram_on = false;
                    orc_sampler_set_grammar(smp, s->model, NULL);
                }
                rc->reason = ORC_STOP_EOS;
                break;
            }
            forced[0] = t;
            nt = 1;
        }
        bool stop_now = false;
        size_t scan_from = rc->text.n;
        for (int32_t k = 0; k < nt; k++) {
            orc_sampler_accept(smp, forced[k]);
            const char *piece;
            size_t plen;
            if (orc_detok_stream_push(ds, forced[k], &piece, &plen) == ORC_OK)
                sb_add_utf8(&rc->text, piece, plen);
        }
        n_gen += nt;
        st->n_generated += nt;
        if (rc->text.oom) {
            status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
            break;
        }
        /* stop strings */
        size_t limit = rc->text.n;
        for (int32_t k = 0; k < n_stops; k++) {
            size_t sl = strlen(stops[k]);
            size_t from = scan_from >= sl ? scan_from - sl + 1 : 0;
            const char *hit = rc->text.n >= sl ? memmem(rc->text.p + from, rc->text.n - from, stops[k], sl) : NULL;
            if (hit && (size_t)(hit - rc->text.p) < limit) {
                limit = (size_t)(hit - rc->text.p);
                stop_now = true;
            }
        }
        if (stop_now) {
            rc->text.n = limit;
            rc->text.p[limit] = 0;
            rc->reason = ORC_STOP_STRING;
        }
        /* what can be streamed: nothing that may still become a stop string or a call */
        if (rc->req && (rc->req->on_delta || rc->req->on_snapshot || rc->req->on_tool_call)) {
            size_t safe = rc->text.n;
            if (!stop_now)
                for (int32_t k = 0; k < n_stops; k++) {
                    size_t ps = partial_suffix(rc->text.p, rc->text.n, stops[k]);
                    if (rc->text.n - ps < safe)
                        safe = rc->text.n - ps;
                }
            if (markers) {
                long cs = tool_call_start(s->syntax, rc->text.p, rc->text.n);
                if (cs >= 0)
                    holding = true;
                if (cs >= 0 && (size_t)cs < safe)
                    safe = (size_t)cs;
                for (const char *const *m = markers; *m; m++) {
                    size_t ps = partial_suffix(rc->text.p, rc->text.n, *m);
                    if (rc->text.n - ps < safe)
                        safe = rc->text.n - ps;
                }
                if (s->syntax == ORC_TOOL_SYNTAX_LLAMA3) {
                    size_t w = 0;
                    while (w < rc->text.n && (rc->text.p[w] == ' ' || rc->text.p[w] == '\n'))
                        w++;
                    if (w == rc->text.n)
                        safe = 0;
                }
            }
            if (markers && s->syntax == ORC_TOOL_SYNTAX_FUNCTIONARY) {
                /* v3.2: a first line "all" addresses the user; it is not part of the text */
                if (rc->text.n < 4 && !memcmp(rc->text.p, "all\n", rc->text.n))
                    safe = 0;
                else if (!strncmp(rc->text.p, "all\n", 4) && emitted < 4)
                    emitted = 4;
            }
            if (holding && emitted > safe)
                safe = emitted;
            if (holding && !tool_snapshots(rc, rc->text.p, rc->text.n))
                atomic_store(&s->cancel, true);
            if (safe > emitted && rc->req->on_delta) {
                if (!rc->req->on_delta(rc->text.p + emitted, safe - emitted, rc->req->user)) {
                    atomic_store(&s->cancel, true);
                }
                emitted = safe;
            } else if (safe > emitted) {
                emitted = safe;
            }
            if (!emit_snapshot(rc, false))
                atomic_store(&s->cancel, true);
        }
        if (stop_now)
            break;
        if (nt > 0) {
            if (s->n_kv + nt > n_ctx) {
                rc->reason = ORC_STOP_CONTEXT_FULL;
                break;
            }
            status = kv_eval(s, forced, nt);
            if (status == ORC_ERR_CANCELLED) {
                status = ORC_OK;
                rc->reason = ORC_STOP_CANCELLED;
                break;
            }
            if (status)
                break;
        }
    }
    if (status == ORC_OK) {
        /* whatever the detokenizer held back, then the rest of the text */
        const char *piece;
        size_t plen;
        if (rc->reason != ORC_STOP_STRING && orc_detok_stream_flush(ds, &piece, &plen) == ORC_OK)
            sb_add_utf8(&rc->text, piece, plen);
        if (!rc->text.p)
            sb_add(&rc->text, "", 0);
        if (rc->req && rc->req->on_delta && !holding && rc->text.n > emitted &&
            !(markers && tool_call_start(s->syntax, rc->text.p, rc->text.n) >= 0))
            rc->req->on_delta(rc->text.p + emitted, rc->text.n - emitted, rc->req->user);
        if (rc->text.oom)
            status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    }
done:
    st->generate_ms += now_ms() - tg0;
    free(forced);
    orc_detok_stream_free(ds);
    orc_sampler_free(smp);
    return status;
}

/* ---- context window policies ---- */

/* Index of the first entry of the oldest droppable turn and one past its end, or false
 * when only the latest turn is left. A turn runs from a prompt to the next prompt. */
static bool oldest_turn(const json_t *entries, size_t *b, size_t *e)
{
    size_t n = json_array_size(entries), first = n, second = n;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(jstr(json_array_get(entries, i), "type"), "prompt")) {
            if (first == n)
                first = i;
            else {
                second = i;
                break;
            }
        }
    if (second == n)
        return false;
    *b = first;
    *e = second;
    return true;
}

static void turn_text(const json_t *entries, size_t b, size_t e, sbuf *out)
{
    for (size_t i = b; i < e; i++) {
        const json_t *x = json_array_get(entries, i);
        const char *type = jstr(x, "type");
        const char *who = NULL, *text = NULL;
        if (!strcmp(type, "prompt"))
            who = "User", text = jstr(x, "text");
        else if (!strcmp(type, "response"))
            who = "Assistant", text = jstr(x, "text");
        else if (!strcmp(type, "tool_output"))
            who = "Tool", text = jstr(x, "output");
        if (!who)
            continue;
        sb_add(out, who, strlen(who));
        sb_add(out, ": ", 2);
        sb_add(out, text, strlen(text));
        sb_add(out, "\n", 1);
    }
}

/* Asks the model to condense text (the dropped turns) into a few sentences. */
static orc_status summarize(orc_session *s, const char *previous, const char *text, orc_response_stats *st,
                            char **out)
{
    *out = NULL;
    int32_t n_ctx = orc_context_n_ctx(s->ctx);
    int32_t max_new = SUMMARY_MAX_TOKENS < n_ctx / 4 ? SUMMARY_MAX_TOKENS : n_ctx / 4;
    if (max_new < 1)
        max_new = 1;
    size_t len = strlen(text);
    orc_status status = ORC_OK;
    for (int attempt = 0; attempt < 12; attempt++) {
        sbuf u = {0};
        const char *ask = "Summarize this conversation in a few sentences, keeping names, facts and decisions.\n\n";
        sb_add(&u, ask, strlen(ask));
        if (previous && previous[0]) {
            sb_add(&u, "Earlier summary: ", 17);
            sb_add(&u, previous, strlen(previous));
            sb_add(&u, "\n", 1);
        }
        sb_add(&u, text + (strlen(text) - len), len);
        json_t *msgs = u.oom ? NULL : json_pack("[{s:s, s:s}]", "role", "user", "content", u.p);
        free(u.p);
        char *rendered = NULL;
        orc_token *toks = NULL;
        int32_t n = 0;
        status = render(s, msgs, false, true, &rendered);
        json_decref(msgs);
        if (status == ORC_OK)
            status = tokenize_text(s, rendered, strlen(rendered), true, &toks, &n);
        free(rendered);
        if (status)
            return status;
        if (n + max_new > n_ctx) {
            free(toks);
            len /= 2; /* keep the most recent half of the text */
            while (len > 0 && ((unsigned char)text[strlen(text) - len] & 0xC0) == 0x80)
                len--;
            continue;
        }
        orc_generation_options o = orc_generation_default_options();
        o.sampler.temperature = 0;
        o.max_tokens = max_new;
        round_ctx rc = {.s = s, .opt = &o, .st = st, .t_start = now_ms(), .first_token_seen = true};
        orc_response_stats scratch = {0};
        rc.st = &scratch;
        status = gen_round(&rc, toks, n);
        free(toks);
        if (status == ORC_OK) {
            *out = rc.text.p ? rc.text.p : dupstr("");
            return *out ? ORC_OK : orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        }
        free(rc.text.p);
        return status;
    }
    return orc_fail(ORC_ERR_CONTEXT_FULL, "the context window (%d) is too small to summarize the conversation", n_ctx);
}

/* Renders entries into tokens that fit the window, applying the policy to entries (a
 * working copy). */
static orc_status fit_prompt(orc_session *s, json_t *entries, const orc_generation_options *opt, bool tools,
                             orc_response_stats *st, orc_token **toks, int32_t *n)
{
    int32_t n_ctx = orc_context_n_ctx(s->ctx);
    int32_t reserve = opt->max_tokens > 0 ? opt->max_tokens : n_ctx / 4;
    if (reserve > n_ctx / 2)
        reserve = n_ctx / 2;
    for (;;) {
        orc_status status = render_tokens(s, entries, tools, toks, n);
        if (status)
            return status;
        bool fits = *n < n_ctx;
        if (fits && (s->policy == ORC_CONTEXT_FAIL || *n + reserve <= n_ctx))
            return ORC_OK;
        size_t b, e;
        if (s->policy == ORC_CONTEXT_FAIL || !oldest_turn(entries, &b, &e)) {
            if (fits)
                return ORC_OK;
            free(*toks);
            *toks = NULL;
            return orc_fail(ORC_ERR_CONTEXT_FULL,
                            "the conversation needs %d tokens but the context window holds %d%s", *n, n_ctx,
                            s->policy == ORC_CONTEXT_FAIL ? "" : " (even with only the latest turn kept)");
        }
        free(*toks);
        *toks = NULL;
        if (s->policy == ORC_CONTEXT_SUMMARIZE) {
            sbuf t = {0};
            turn_text(entries, b, e, &t);
            size_t si = json_array_size(entries);
            for (size_t k = 0; k < json_array_size(entries); k++)
                if (!strcmp(jstr(json_array_get(entries, k), "type"), "summary")) {
                    si = k;
                    break;
                }
            const char *prev = si < json_array_size(entries) ? jstr(json_array_get(entries, si), "text") : NULL;
            char *sum = NULL;
            status = t.oom ? orc_fail(ORC_ERR_NO_MEMORY, "out of memory") : summarize(s, prev, t.p ? t.p : "", st, &sum);
            free(t.p);
            if (status)
                return status;
            for (size_t k = b; k < e; k++)
                json_array_remove(entries, b);
            st->n_dropped += (int32_t)(e - b);
            json_t *se = json_pack("{s:s, s:s}", "type", "summary", "text", sum);
            free(sum);
            if (!se)
                return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
            if (si < json_array_size(entries) && si < b) {
                json_array_set_new(entries, si, se);
            } else {
                size_t at = json_array_size(entries) && !strcmp(jstr(json_array_get(entries, 0), "type"), "instructions") ? 1 : 0;
                json_array_insert_new(entries, at, se);
            }
        } else {
            for (size_t k = b; k < e; k++)
                json_array_remove(entries, b);
            st->n_dropped += (int32_t)(e - b);
        }
    }
}

/* ---- tools ---- */

typedef struct {
    const tool_def *tool;
    char *args;
    char *result;
    orc_status status;
} tool_job;

static void *run_tool(void *arg)
{
    tool_job *j = arg;
    j->result = NULL;
    j->status = j->tool->fn(j->args, &j->result, j->tool->user);
    return NULL;
}

/* Runs the calls (array of {name, arguments}) and appends the tool_calls and tool_output
 * entries to entries. */
static orc_status execute_calls(orc_session *s, json_t *entries, const char *content, json_t *calls,
                                orc_response_stats *st)
{
    size_t n = json_array_size(calls);
    tool_job *jobs = calloc(n ? n : 1, sizeof *jobs);
    pthread_t *th = calloc(n ? n : 1, sizeof *th);
    bool *started = calloc(n ? n : 1, sizeof *started);
    json_t *ce = json_pack("{s:s, s:s, s:[]}", "type", "tool_calls", "text", content ? content : "", "calls");
    orc_status status = ORC_OK;
    if (!jobs || !th || !started || !ce) {
        status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    json_t *list = json_object_get(ce, "calls");
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(calls, i);
        char id[32];
        snprintf(id, sizeof id, "call%05lld", (long long)(++s->call_counter % 100000));
        json_t *call = json_pack("{s:s, s:s, s:O}", "id", id, "name", jstr(c, "name"), "arguments",
                                 json_object_get(c, "arguments"));
        if (!call || json_array_append_new(list, call)) {
            status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
        for (int32_t k = 0; k < s->n_tools; k++)
            if (!strcmp(s->tools[k].name, jstr(c, "name")))
                jobs[i].tool = &s->tools[k];
        jobs[i].args = json_dumps(json_object_get(c, "arguments"), JSON_COMPACT);
        if (!jobs[i].args) {
            status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!jobs[i].tool)
            continue;
        if (s->parallel_tools && n > 1 && pthread_create(&th[i], NULL, run_tool, &jobs[i]) == 0)
            started[i] = true;
        else
            run_tool(&jobs[i]);
    }
    for (size_t i = 0; i < n; i++)
        if (started[i])
            pthread_join(th[i], NULL);
    if (json_array_append(entries, ce)) {
        status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *call = json_array_get(list, i);
        bool err = !jobs[i].tool || jobs[i].status != ORC_OK;
        char msg[512];
        sbuf clean = {0};
        if (jobs[i].result)
            sb_add_utf8(&clean, jobs[i].result, strlen(jobs[i].result));
        free(jobs[i].result);
        jobs[i].result = clean.oom ? NULL : clean.p;
        if (clean.oom)
            free(clean.p);
        const char *out = jobs[i].result ? jobs[i].result : "";
        if (!jobs[i].tool) {
            snprintf(msg, sizeof msg, "error: there is no tool named '%s'", jstr(call, "name"));
            out = msg;
        } else if (err) {
            snprintf(msg, sizeof msg, "error: %s%s%s", orc_status_string(jobs[i].status),
                     jobs[i].result ? ": " : "", jobs[i].result ? jobs[i].result : "");
            out = msg;
        }
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "tool_output", "id", jstr(call, "id"), "name",
                              jstr(call, "name"), "output", out, "error", err);
        if (!o || json_array_append_new(entries, o)) {
            status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
        st->n_tool_calls++;
    }
done:
    for (size_t i = 0; jobs && i < n; i++) {
        free(jobs[i].args);
        free(jobs[i].result);
    }
    free(jobs);
    free(th);
    free(started);
    json_decref(ce);
    return status;
}

/* ---- requests ---- */

static void stats_init(orc_response_stats *st)
{
    memset(st, 0, sizeof *st);
}

orc_status orc_session_respond_ex(orc_session *s, const orc_request *req, char **response, orc_response_stats *stats)
{
    if (response)
        *response = NULL;
    orc_response_stats local;
    orc_response_stats *st = stats ? stats : &local;
    stats_init(st);
    if (!s || !req || !req->prompt)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_respond: session, request and prompt are required");
    if (!utf8_valid(req->prompt))
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_respond: the prompt is not valid UTF-8");
    if (!acquire(s))
        return BUSY_FAIL("orc_session_respond");
    atomic_store(&s->cancel, false);
    double t_start = now_ms();
    owned_options ropt = {0};
    orc_grammar *grammar = NULL, *tool_grammar = NULL, *tool_call_grammar = NULL;
    json_t *work = NULL, *calls = NULL;
    orc_token *toks = NULL;
    char *content = NULL, *schema_text = NULL, *result = NULL;
    round_ctx rc = {0};
    orc_status status = owned_options_set(&ropt, req->options ? req->options : &s->defaults.o);
    if (status)
        goto done;
    bool tools_on = req->use_tools && s->n_tools > 0 && !req->schema && s->syntax != ORC_TOOL_SYNTAX_NONE;
    if (req->schema) {
        json_error_t je;
        json_t *sj = json_loads(req->schema, JSON_DECODE_ANY, &je);
        if (!sj) {
            status = orc_fail(ORC_ERR_INVALID_ARGUMENT, "schema: invalid JSON at line %d: %s", je.line, je.text);
            goto done;
        }
        schema_text = json_dumps(sj, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(sj);
        orc_grammar_params gp = orc_grammar_default_params();
        gp.kind = ORC_GRAMMAR_JSON_SCHEMA;
        if (!schema_text) {
            status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
        if ((status = orc_grammar_new(schema_text, strlen(schema_text), &gp, &grammar)))
            goto done;
    }
    const tool_grammar_spec *tgs =
        tools_on && s->constrain_tools ? tool_grammar_for(s->syntax, s->syntax_variant) : NULL;
    if (tgs) {
        char gerr[512];
        char *gbnf = tool_grammar_gbnf(s->syntax, s->syntax_variant, s->tools_json, gerr, sizeof gerr);
        orc_grammar_params gp = orc_grammar_default_params();
        gp.kind = ORC_GRAMMAR_GBNF;
        if (gbnf) {
            gp.root = "root";
            if (orc_grammar_new(gbnf, strlen(gbnf), &gp, &tool_grammar) != ORC_OK) {
                snprintf(gerr, sizeof gerr, "%s", orc_last_error());
            } else {
                gp.root = "call";
                if (orc_grammar_new(gbnf, strlen(gbnf), &gp, &tool_call_grammar) != ORC_OK) {
                    snprintf(gerr, sizeof gerr, "%s", orc_last_error());
                    orc_grammar_free(tool_grammar);
                    tool_grammar = NULL;
                }
            }
        }
        if (!tool_grammar)
            orc_log(ORC_LOG_WARN, "session: %s tool calls are not constrained: %s", tool_syntax_name(s->syntax), gerr);
        free(gbnf);
    }
    if (req->require_tool_call && !tool_grammar) {
        status = orc_fail(ORC_ERR_UNSUPPORTED,
                          "require_tool_call needs tools, constrain_tool_calls and tool schemas the %s grammar can "
                          "express",
                          tool_syntax_name(s->syntax));
        goto done;
    }
    work = json_deep_copy(s->entries);
    json_t *pe = json_pack("{s:s, s:s}", "type", "prompt", "text", req->prompt);
    if (pe && schema_text && req->schema_in_prompt)
        json_object_set_new(pe, "schema", json_string(schema_text));
    if (!work || !pe || json_array_append_new(work, pe)) {
        status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    rc.s = s;
    rc.opt = &ropt.o;
    rc.req = req;
    rc.grammar = grammar;
    rc.tool_grammar = tool_grammar;
    rc.tool_call_grammar = tool_call_grammar;
    rc.tools_on = tools_on;
    rc.st = st;
    rc.t_start = t_start;
    for (int32_t round = 0;; round++) {
        int32_t n = 0;
        free(toks);
        toks = NULL;
        if ((status = fit_prompt(s, work, &ropt.o, tools_on, st, &toks, &n)))
            goto done;
        rc.force_tool = round == 0 && req->require_tool_call && tool_grammar;
        json_decref(rc.tool_snaps);
        rc.tool_snaps = NULL;
        status = gen_round(&rc, toks, n);
        if (status == ORC_ERR_CANCELLED) {
            status = ORC_OK; /* the partial response is kept */
            rc.reason = ORC_STOP_CANCELLED;
        }
        if (status)
            goto done;
        const char *text = rc.text.p ? rc.text.p : "";
        if (tools_on && rc.reason != ORC_STOP_CANCELLED) {
            char err[256];
            json_decref(calls);
            calls = NULL;
            free(content);
            content = NULL;
            if (tool_calls_parse_ex(s->syntax, text, rc.text.n, s->tools_json, false, &calls, &content, err,
                                    sizeof err)) {
                orc_log(ORC_LOG_WARN, "session: unparsable tool call kept as text: %s", err);
            } else if (json_array_size(calls) > 0) {
                if (round >= s->max_tool_rounds) {
                    rc.reason = ORC_STOP_TOOL_ROUNDS;
                    result = dupstr(content);
                    break;
                }
                st->n_tool_rounds++;
                if (req->on_tool_call) {
                    /* the complete arguments, once per call, before the tools run */
                    size_t k;
                    json_t *c;
                    json_array_foreach(calls, k, c) {
                        char *args = json_dumps(json_object_get(c, "arguments"), JSON_COMPACT);
                        if (args && !req->on_tool_call(st->n_tool_calls + (int32_t)k, jstr(c, "name"), args, true,
                                                       req->user))
                            atomic_store(&s->cancel, true);
                        free(args);
                    }
                    if (atomic_load(&s->cancel)) {
                        rc.reason = ORC_STOP_CANCELLED;
                        result = dupstr(content);
                        break;
                    }
                }
                if ((status = execute_calls(s, work, content, calls, st)))
                    goto done;
                continue;
            }
        }
        /* recipient/channel syntaxes wrap even plain answers: keep the answer only */
        bool wrapped = s->syntax == ORC_TOOL_SYNTAX_FUNCTIONARY || s->syntax == ORC_TOOL_SYNTAX_GPT_OSS;
        result = tools_on && content && wrapped ? dupstr(content) : dupstr(text);
        if (!result) {
            status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
        break;
    }
    if (grammar && rc.reason != ORC_STOP_CANCELLED) {
        json_error_t je;
        json_t *v = json_loads(result, JSON_DECODE_ANY, &je);
        if (!v) {
            status = orc_fail(ORC_ERR_FORMAT, "the structured response is not complete JSON (%s after %d tokens): %s",
                              rc.reason == ORC_STOP_MAX_TOKENS ? "max_tokens reached" : "stopped", st->n_generated,
                              je.text);
        } else {
            char *canon = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            json_decref(v);
            if (canon) {
                free(result);
                result = canon;
            }
            emit_snapshot(&rc, true);
        }
    }
    {
        json_t *re = json_pack("{s:s, s:s}", "type", "response", "text", result ? result : "");
        if (re && grammar)
            json_object_set_new(re, "structured", json_true());
        if (!re || json_array_append_new(work, re)) {
            status = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
    }
    if (status == ORC_OK || status == ORC_ERR_FORMAT) {
        json_decref(s->entries);
        s->entries = work;
        work = NULL;
    }
    if (status == ORC_OK && rc.reason == ORC_STOP_CANCELLED)
        status = orc_fail(ORC_ERR_CANCELLED, "the request was cancelled");
    if (response) {
        *response = result;
        result = NULL;
    }
done:
    st->stop_reason = rc.reason;
    free(rc.text.p);
    free(rc.last_snapshot);
    free(result);
    free(content);
    free(schema_text);
    free(toks);
    json_decref(calls);
    json_decref(work);
    orc_grammar_free(grammar);
    orc_grammar_free(tool_grammar);
    orc_grammar_free(tool_call_grammar);
    json_decref(rc.tool_snaps);
    owned_options_free(&ropt);
    release(s);
    return status;
}

orc_status orc_session_respond(orc_session *s, const char *prompt, char **response)
{
    orc_request r = orc_request_default();
    r.prompt = prompt;
    return orc_session_respond_ex(s, &r, response, NULL);
}

/* ---- prewarm, counting ---- */

/* Tokens of the transcript followed by a user message that starts with prefix: the part
 * of the render before a cut mark, which every later request shares. */
orc_status orc_session_prewarm(orc_session *s, const char *prefix, int32_t *n_evaluated)
{
    if (n_evaluated)
        *n_evaluated = 0;
    if (!s)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_prewarm: NULL session");
    if (prefix && !utf8_valid(prefix))
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_prewarm: the prefix is not valid UTF-8");
    if (!acquire(s))
        return BUSY_FAIL("orc_session_prewarm");
    atomic_store(&s->cancel, false);
    sbuf u = {0};
    if (prefix)
        sb_add(&u, prefix, strlen(prefix));
    sb_add(&u, CUT_MARK, strlen(CUT_MARK));
    json_t *msgs = u.oom ? NULL : transcript_messages(s->entries, u.p, false, false);
    free(u.p);
    char *text = NULL;
    orc_token *toks = NULL;
    int32_t n = 0, n_cached = 0, n_eval = 0;
    orc_status st = render(s, msgs, s->n_tools > 0, false, &text);
    json_decref(msgs);
    if (st == ORC_OK) {
        char *cut = strstr(text, CUT_MARK);
        if (!cut) {
            st = orc_fail(ORC_ERR_UNSUPPORTED, "the chat template does not show the user's message verbatim");
        } else {
            st = tokenize_text(s, text, (size_t)(cut - text), true, &toks, &n);
            /* the last token may merge with what the user writes: leave it out */
            if (st == ORC_OK && n > 1)
                n--;
        }
    }
    if (st == ORC_OK && n >= orc_context_n_ctx(s->ctx))
        st = orc_fail(ORC_ERR_CONTEXT_FULL, "prewarm needs %d tokens but the context window holds %d", n,
                      orc_context_n_ctx(s->ctx));
    if (st == ORC_OK && n > 0)
        st = kv_sync(s, toks, n, &n_cached, &n_eval);
    if (st == ORC_OK && n_evaluated)
        *n_evaluated = n_eval;
    free(text);
    free(toks);
    release(s);
    return st;
}

orc_status orc_session_count_tokens(orc_session *s, const char *prompt, int32_t *n_tokens)
{
    if (n_tokens)
        *n_tokens = 0;
    if (!s || !prompt || !n_tokens)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_count_tokens: NULL argument");
    if (!utf8_valid(prompt))
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_count_tokens: the prompt is not valid UTF-8");
    if (!acquire(s))
        return BUSY_FAIL("orc_session_count_tokens");
    json_t *work = json_deep_copy(s->entries);
    orc_token *toks = NULL;
    int32_t n = 0;
    orc_status st = ORC_OK;
    if (!work || json_array_append_new(work, json_pack("{s:s, s:s}", "type", "prompt", "text", prompt)))
        st = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    if (st == ORC_OK)
        st = render_tokens(s, work, s->n_tools > 0, &toks, &n);
    if (st == ORC_OK)
        *n_tokens = n;
    free(toks);
    json_decref(work);
    release(s);
    return st;
}

/* ---- transcript ---- */

orc_status orc_session_transcript_json(orc_session *s, char **json)
{
    if (json)
        *json = NULL;
    if (!s || !json)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_transcript_json: NULL argument");
    if (!acquire(s))
        return BUSY_FAIL("orc_session_transcript_json");
    json_t *t = json_pack("{s:i, s:O}", "version", TRANSCRIPT_VERSION, "entries", s->entries);
    *json = t ? json_dumps(t, JSON_INDENT(1)) : NULL;
    json_decref(t);
    release(s);
    return *json ? ORC_OK : orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
}

static orc_status check_entry(const json_t *e, size_t i)
{
#define BAD(...) orc_fail(ORC_ERR_FORMAT, __VA_ARGS__)
    if (!json_is_object(e))
        return BAD("transcript entry %zu is not an object", i);
    const char *type = json_string_value(json_object_get(e, "type"));
    if (!type)
        return BAD("transcript entry %zu has no string \"type\"", i);
    if (!strcmp(type, "instructions") || !strcmp(type, "prompt") || !strcmp(type, "response") ||
        !strcmp(type, "summary")) {
        if (!json_is_string(json_object_get(e, "text")))
            return BAD("transcript entry %zu (%s) needs a string \"text\"", i, type);
        json_t *sc = json_object_get(e, "schema");
        if (sc && !json_is_string(sc))
            return BAD("transcript entry %zu: \"schema\" must be a string", i);
        if (!strcmp(type, "instructions") && i != 0)
            return BAD("transcript entry %zu: instructions must come first", i);
        return ORC_OK;
    }
    if (!strcmp(type, "tool_calls")) {
        json_t *calls = json_object_get(e, "calls");
        if (!json_is_array(calls))
            return BAD("transcript entry %zu: \"calls\" must be an array", i);
        size_t k;
        json_t *c;
        json_array_foreach(calls, k, c) {
            if (!json_is_string(json_object_get(c, "name")) || !json_is_string(json_object_get(c, "id")) ||
                !json_is_object(json_object_get(c, "arguments")))
                return BAD("transcript entry %zu, call %zu: needs string id and name and an object arguments", i, k);
        }
        return ORC_OK;
    }
    if (!strcmp(type, "tool_output")) {
        if (!json_is_string(json_object_get(e, "id")) || !json_is_string(json_object_get(e, "name")) ||
            !json_is_string(json_object_get(e, "output")))
            return BAD("transcript entry %zu (tool_output) needs string id, name and output", i);
        return ORC_OK;
    }
    return BAD("transcript entry %zu: unknown type '%s'", i, type);
#undef BAD
}

orc_status orc_session_load_transcript(orc_session *s, const char *json)
{
    if (!s || !json)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_load_transcript: NULL argument");
    json_error_t je;
    json_t *t = json_loads(json, 0, &je);
    if (!t)
        return orc_fail(ORC_ERR_FORMAT, "transcript: invalid JSON at line %d, column %d: %s", je.line, je.column,
                        je.text);
    orc_status st = ORC_OK;
    json_t *entries = json_object_get(t, "entries");
    json_t *ver = json_object_get(t, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) != TRANSCRIPT_VERSION)
        st = orc_fail(ORC_ERR_FORMAT, "transcript: unsupported or missing version (expected %d)", TRANSCRIPT_VERSION);
    else if (!json_is_array(entries))
        st = orc_fail(ORC_ERR_FORMAT, "transcript: \"entries\" must be an array");
    for (size_t i = 0; st == ORC_OK && i < json_array_size(entries); i++)
        st = check_entry(json_array_get(entries, i), i);
    if (st == ORC_OK && !acquire(s))
        st = BUSY_FAIL("orc_session_load_transcript");
    else if (st == ORC_OK) {
        json_decref(s->entries);
        s->entries = json_incref(entries);
        long long maxid = 0;
        size_t i, k;
        json_t *e, *c;
        json_array_foreach(entries, i, e) {
            json_array_foreach(json_object_get(e, "calls"), k, c) {
                long long v = 0;
                if (sscanf(jstr(c, "id"), "call%lld", &v) == 1 && v > maxid)
                    maxid = v;
            }
        }
        s->call_counter = maxid;
        release(s);
    }
    json_decref(t);
    return st;
}

orc_status orc_session_reset(orc_session *s)
{
    if (!s)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_session_reset: NULL session");
    if (!acquire(s))
        return BUSY_FAIL("orc_session_reset");
    json_t *keep = json_array();
    orc_status st = ORC_OK;
    json_t *first = json_array_get(s->entries, 0);
    if (!keep || (first && !strcmp(jstr(first, "type"), "instructions") && json_array_append(keep, first))) {
        json_decref(keep);
        st = orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    } else {
        json_decref(s->entries);
        s->entries = keep;
        s->call_counter = 0;
    }
    release(s);
    return st;
}

/* ---- availability ---- */

static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", (unsigned long long *)&kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

orc_status orc_model_check(const char *path, int32_t n_ctx, char *why, size_t why_cap)
{
    char dummy[8];
    if (!why || !why_cap) {
        why = dummy;
        why_cap = sizeof dummy;
    }
    why[0] = 0;
    if (!path || n_ctx < 0) {
        snprintf(why, why_cap, "invalid arguments");
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_model_check: path is required and n_ctx must be >= 0");
    }
#if !defined(__x86_64__) && !defined(__aarch64__)
    snprintf(why, why_cap, "this CPU architecture has no kernels (x86-64 or AArch64 needed)");
    return orc_fail(ORC_ERR_UNSUPPORTED, "%s", why);
#endif
    orc_model_params mp = orc_model_default_params();
    mp.use_mmap = true;
    orc_model *m = NULL;
    orc_status st = orc_model_load(path, &mp, &m);
    if (st) {
        snprintf(why, why_cap, "%s", orc_last_error());
        return st;
    }
    int32_t ctx = n_ctx ? n_ctx : orc_model_n_ctx_train(m);
    if (!n_ctx && ctx > 4096)
        ctx = 4096;
    if (ctx <= 0)
        ctx = 512;
    uint64_t hd = orc_model_n_head(m) > 0 ? (uint64_t)orc_model_n_embd(m) / (uint64_t)orc_model_n_head(m) : 0;
    uint64_t kv = 2ull * 2ull * (uint64_t)orc_model_n_layer(m) * (uint64_t)orc_model_n_head_kv(m) * hd * (uint64_t)ctx;
    uint64_t weights = orc_model_file_size(m);
    uint64_t need = weights + kv + weights / 16 + (64ull << 20);
    uint64_t avail = mem_available();
    const char *cpu = orc_cpu_describe();
    if (avail && need > avail) {
        snprintf(why, why_cap,
                 "not enough memory: %.1f MiB weights + %.1f MiB KV cache for %d positions (+ scratch) exceed the "
                 "%.1f MiB available",
                 weights / 1048576.0, kv / 1048576.0, ctx, avail / 1048576.0);
        st = orc_fail(ORC_ERR_NO_MEMORY, "%s", why);
    } else {
        snprintf(why, why_cap, "ok: %s, %.1f MiB weights + %.1f MiB KV cache for %d positions; %.1f MiB available; CPU: %s",
                 orc_model_arch(m), weights / 1048576.0, kv / 1048576.0, ctx, avail / 1048576.0, cpu[0] ? cpu : "baseline");
    }
    orc_model_free(m);
    return st;
}
