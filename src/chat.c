/* chat.c - the chat layer: validates a conversation, builds the template context
 * (messages, tools, add_generation_prompt, bos/eos, extra variables) and renders it with
 * the model's chat template through the Jinja engine, or with the ChatML fallback.
 * Also implements the public chat-template API of orchard.h. */
#include "chat.h"

#include "common.h"
#include "jinja.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct orc_chat_template {
    jinja_template *tpl;
    char *bos, *eos;
    bool fallback;
};

/* ChatML as Hugging Face's default, extended for content parts, tool calls and tools
 * (announced in the system turn the way Qwen/Hermes-style templates do). */
static const char chatml_src[] =
    "{%- if tools -%}\n"
    "{{- '<|im_start|>system\\n' -}}\n"
    "{%- if messages and messages[0].role == 'system' and messages[0].content is string -%}\n"
    "{{- messages[0].content + '\\n\\n' -}}\n"
    "{%- endif -%}\n"
    "{{- '# Tools\\n\\nYou may call one or more functions. Function signatures:\\n<tools>' -}}\n"
    "{%- for tool in tools -%}{{- '\\n' + tool | tojson -}}{%- endfor -%}\n"
    "{{- '\\n</tools>\\n\\nTo call a function, reply with <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>.<|im_end|>\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- for message in messages -%}\n"
    "{%- if not (tools and loop.first and message.role == 'system' and message.content is string) -%}\n"
    "{{- '<|im_start|>' + message.role + '\\n' -}}\n"
    "{%- if message.content is string -%}{{- message.content -}}\n"
    "{%- elif message.content is iterable -%}\n"
    "{%- for part in message.content -%}\n"
    "{%- if part is string -%}{{- part -}}{%- elif part.type == 'text' -%}{{- part.text -}}{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- endif -%}\n"
    "{%- if message.tool_calls is defined and message.tool_calls -%}\n"
    "{%- for tc in message.tool_calls -%}\n"
    "{%- set fn = tc.function if tc.function is defined else tc -%}\n"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' -}}\n"
    "{{- (fn.arguments if fn.arguments is string else fn.arguments | tojson) + '}\\n</tool_call>' -}}\n"
    "{%- endfor -%}\n"
    "{%- endif -%}\n"
    "{{- '<|im_end|>\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n";

const char *orc_chat_chatml_template(void) { return chatml_src; }

static char *dupstr(const char *s)
{
    size_t n = strlen(s ? s : "");
    char *r = malloc(n + 1);
    if (r)
        memcpy(r, s ? s : "", n + 1);
    return r;
}

orc_chat_template *orc_chat_template_new(const char *src, const char *bos, const char *eos, char *err,
                                         size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    orc_chat_template *t = calloc(1, sizeof *t);
    if (!t)
        goto oom;
    t->fallback = !src;
    if (t->fallback)
        src = chatml_src;
    jinja_options o = jinja_default_options();
    t->tpl = jinja_parse(src, strlen(src), &o, err, errlen);
    if (!t->tpl)
        goto fail;
    t->bos = dupstr(bos);
    t->eos = dupstr(eos);
    if (!t->bos || !t->eos)
        goto oom;
    return t;
oom:
    if (err && errlen)
        snprintf(err, errlen, "out of memory");
fail:
    orc_chat_template_free(t);
    return NULL;
}

/* The text of token `key` (a token id) in tokenizer.ggml.tokens, or "" */
static void token_text(const gguf_ctx *g, const char *key, char *buf, size_t cap)
{
    buf[0] = 0;
    int64_t id;
    if (!gguf_get_i64(g, key, &id) || id < 0)
        return;
    const gguf_value *toks = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_T_STRING);
    if (!toks || (uint64_t)id >= toks->v.arr.n)
        return;
    gguf_str s = toks->v.arr.strs[id];
    size_t n = s.n < cap - 1 ? (size_t)s.n : cap - 1;
    memcpy(buf, s.p, n);
    buf[n] = 0;
}

orc_chat_template *orc_chat_template_from_gguf(const gguf_ctx *g, char *err, size_t errlen)
{
    char bos[256], eos[256];
    token_text(g, "tokenizer.ggml.bos_token_id", bos, sizeof bos);
    token_text(g, "tokenizer.ggml.eos_token_id", eos, sizeof eos);
    gguf_str s;
    char *src = NULL;
    if (gguf_get_str(g, "tokenizer.chat_template", &s) && s.n > 0) {
        if (s.n > ((uint64_t)1 << 26)) {
            if (err && errlen)
                snprintf(err, errlen, "chat template too large");
            return NULL;
        }
        src = malloc((size_t)s.n + 1);
        if (!src) {
            if (err && errlen)
                snprintf(err, errlen, "out of memory");
            return NULL;
        }
        memcpy(src, s.p, (size_t)s.n);
        src[s.n] = 0;
        if (strlen(src) != (size_t)s.n) {
            free(src);
            if (err && errlen)
                snprintf(err, errlen, "chat template contains a NUL byte");
            return NULL;
        }
    }
    orc_chat_template *t = orc_chat_template_new(src, bos, eos, err, errlen);
    free(src);
    return t;
}

void orc_chat_template_free(orc_chat_template *t)
{
    if (!t)
        return;
    jinja_free(t->tpl);
    free(t->bos);
    free(t->eos);
    free(t);
}

bool orc_chat_template_is_fallback(const orc_chat_template *t) { return t && t->fallback; }
const char *orc_chat_template_bos(const orc_chat_template *t) { return t ? t->bos : ""; }
const char *orc_chat_template_eos(const orc_chat_template *t) { return t ? t->eos : ""; }

static int check_messages(const json_t *messages, char *err, size_t errlen)
{
    if (!json_is_array(messages)) {
        snprintf(err, errlen, "messages must be a JSON array");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(messages); i++) {
        const json_t *m = json_array_get(messages, i);
        if (!json_is_object(m)) {
            snprintf(err, errlen, "message %zu is not an object", i);
            return -1;
        }
        if (!json_is_string(json_object_get(m, "role"))) {
            snprintf(err, errlen, "message %zu has no string 'role'", i);
            return -1;
        }
        const json_t *tc = json_object_get(m, "tool_calls");
        if (tc && !json_is_array(tc) && !json_is_null(tc)) {
            snprintf(err, errlen, "message %zu: 'tool_calls' must be an array", i);
            return -1;
        }
    }
    return 0;
}

int orc_chat_template_apply(const orc_chat_template *t, const orc_chat_input *in, char **out, size_t *out_len,
                            char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!t || !in || !out) {
        snprintf(err, errlen, "invalid arguments");
        return -1;
    }
    if (check_messages(in->messages, err, errlen))
        return -1;
    if (in->tools && !json_is_array(in->tools) && !json_is_null(in->tools)) {
        snprintf(err, errlen, "tools must be a JSON array");
        return -1;
    }
    if (in->extra_context && !json_is_object(in->extra_context)) {
        snprintf(err, errlen, "extra context must be a JSON object");
        return -1;
    }
    json_t *ctx = json_object();
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* extra variables first: the conversation itself takes precedence */
    if (in->extra_context)
        json_object_update(ctx, (json_t *)in->extra_context);
    json_object_set(ctx, "messages", (json_t *)in->messages);
    if (in->tools && json_is_array(in->tools))
        json_object_set(ctx, "tools", (json_t *)in->tools);
    json_object_set_new(ctx, "add_generation_prompt", json_boolean(in->add_generation_prompt));
    jinja_render_options ro = jinja_default_render_options();
    ro.now = in->now;
    ro.bos_token = t->bos;
    ro.eos_token = t->eos;
    int rc = jinja_render(t->tpl, ctx, &ro, out, out_len, err, errlen);
    json_decref(ctx);
    return rc;
}

int orc_chat_render(const char *template_src, const json_t *messages, const json_t *tools,
                    bool add_generation_prompt, const char *bos, const char *eos,
                    const json_t *extra_context, char **out, char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    orc_chat_template *t = orc_chat_template_new(template_src, bos, eos, err, errlen);
    if (!t)
        return -1;
    orc_chat_input in = {.messages = messages,
                         .tools = tools,
                         .add_generation_prompt = add_generation_prompt,
                         .extra_context = extra_context,
                         .now = -1};
    int rc = orc_chat_template_apply(t, &in, out, NULL, err, errlen);
    orc_chat_template_free(t);
    return rc;
}

/* ---- public API ---- */
orc_status orc_chat_template_from_model(const orc_model *model, orc_chat_template **out)
{
    if (out)
        *out = NULL;
    if (!model || !out || !model->gguf)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_chat_template_from_model: NULL argument");
    char err[512];
    *out = orc_chat_template_from_gguf(model->gguf, err, sizeof err);
    if (!*out)
        return orc_fail(ORC_ERR_FORMAT, "chat template: %s", err);
    return ORC_OK;
}

orc_status orc_chat_template_from_source(const char *src, const char *bos, const char *eos,
                                         orc_chat_template **out)
{
    if (out)
        *out = NULL;
    if (!out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_chat_template_from_source: NULL out");
    char err[512];
    *out = orc_chat_template_new(src, bos, eos, err, sizeof err);
    if (!*out)
        return orc_fail(ORC_ERR_FORMAT, "chat template: %s", err);
    return ORC_OK;
}

orc_status orc_chat_template_set_tokens(orc_chat_template *t, const char *bos, const char *eos)
{
    if (!t)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_chat_template_set_tokens: NULL template");
    char *nb = bos ? dupstr(bos) : NULL, *ne = eos ? dupstr(eos) : NULL;
    if ((bos && !nb) || (eos && !ne)) {
        free(nb);
        free(ne);
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    }
    if (nb) {
        free(t->bos);
        t->bos = nb;
    }
    if (ne) {
        free(t->eos);
        t->eos = ne;
    }
    return ORC_OK;
}

static json_t *parse_json_arg(const char *what, const char *text, orc_status *st)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j)
        *st = orc_fail(ORC_ERR_INVALID_ARGUMENT, "%s: invalid JSON at line %d, column %d: %s", what, je.line,
                       je.column, je.text);
    return j;
}

orc_status orc_chat_template_render(const orc_chat_template *t, const char *context_json, int64_t now,
                                    char **out, size_t *out_len)
{
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!t || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_chat_template_render: NULL argument");
    orc_status st = ORC_OK;
    json_t *ctx = context_json ? parse_json_arg("context", context_json, &st) : json_object();
    if (!ctx)
        return st ? st : orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    if (!json_is_object(ctx)) {
        json_decref(ctx);
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "context must be a JSON object");
    }
    jinja_render_options ro = jinja_default_render_options();
    ro.now = now;
    ro.bos_token = t->bos;
    ro.eos_token = t->eos;
    char err[1024];
    int rc = jinja_render(t->tpl, ctx, &ro, out, out_len, err, sizeof err);
    json_decref(ctx);
    if (rc)
        return orc_fail(ORC_ERR_FORMAT, "%s", err);
    return ORC_OK;
}

orc_status orc_chat_apply(const orc_chat_template *t, const char *messages_json, const char *tools_json,
                          bool add_generation_prompt, const char *extra_json, char **out, size_t *out_len)
{
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!t || !messages_json || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_chat_apply: NULL argument");
    orc_status st = ORC_OK;
    json_t *msgs = NULL, *tools = NULL, *extra = NULL;
    msgs = parse_json_arg("messages", messages_json, &st);
    if (msgs && tools_json)
        tools = parse_json_arg("tools", tools_json, &st);
    if (msgs && (!tools_json || tools) && extra_json)
        extra = parse_json_arg("extra context", extra_json, &st);
    if (st == ORC_OK) {
        orc_chat_input in = {.messages = msgs,
                             .tools = tools,
                             .add_generation_prompt = add_generation_prompt,
                             .extra_context = extra,
                             .now = -1};
        char err[1024];
        if (orc_chat_template_apply(t, &in, out, out_len, err, sizeof err))
            st = orc_fail(strstr(err, "Error: ") ? ORC_ERR_FORMAT : ORC_ERR_INVALID_ARGUMENT, "%s", err);
    }
    json_decref(msgs);
    json_decref(tools);
    json_decref(extra);
    return st;
}
