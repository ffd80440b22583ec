/* serve_request.c - validation of OpenAI-style request bodies for `orchard serve`:
 * JSON (depth-limited) -> srv_request, with OpenAI error objects for everything wrong.
 * Pure (jansson only), so tests/fuzz/fuzz_server_request.c compiles it directly. */
#include "serve.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int srv_error_set(srv_error *err, int status, const char *type, const char *code, const char *param,
                  const char *fmt, ...)
{
    err->status = status;
    err->type = type;
    err->code = code;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

char *srv_error_json(const srv_error *err)
{
    size_t ml;
    char *msg = srv_utf8_sanitize(err->message, strlen(err->message), &ml);
    json_t *e = json_object();
    json_object_set_new(e, "message", json_stringn(msg ? msg : "error", msg ? ml : 5));
    json_object_set_new(e, "type", json_string(err->type ? err->type : "server_error"));
    json_object_set_new(e, "param", err->param[0] ? json_string(err->param) : json_null());
    json_object_set_new(e, "code", err->code ? json_string(err->code) : json_null());
    json_t *root = json_pack("{s:o}", "error", e);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    free(msg);
    return s;
}

int srv_json_depth(const char *t, size_t len, int limit)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = t[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                max = depth;
                if (max > limit)
                    return max;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return max;
}

char *srv_utf8_sanitize(const char *s, size_t len, size_t *out_len)
{
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    unsigned char *o = malloc(len * 3 + 1), *p = o;
    if (!o)
        return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = u[i];
        size_t n = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                                 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        bool ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++)
            ok = (u[i + k] & 0xC0) == 0x80;
        if (ok && n == 3) {
            ok = !(c == 0xE0 && u[i + 1] < 0xA0) && !(c == 0xED && u[i + 1] >= 0xA0);
        } else if (ok && n == 4) {
            ok = !(c == 0xF0 && u[i + 1] < 0x90) && !(c == 0xF4 && u[i + 1] >= 0x90);
        }
        if (ok && c != 0) {
            memcpy(p, u + i, n);
            p += n;
            i += n;
        } else {
            /* NUL bytes become U+FFFD too: jansson strings and C strings can hold them */
            *p++ = 0xEF, *p++ = 0xBF, *p++ = 0xBD;
            i++;
        }
    }
    *p = 0;
    if (out_len)
        *out_len = (size_t)(p - o);
    return (char *)o;
}

void srv_request_free(srv_request *r)
{
    if (!r)
        return;
    free(r->model);
    free(r->messages_json);
    free(r->tools_json);
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->schema_json);
    memset(r, 0, sizeof *r);
}

static char *dup_str(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

#define BAD(param, ...) srv_error_set(err, 400, "invalid_request_error", NULL, param, __VA_ARGS__)
#define OOM() srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory")

/* A number field in [lo, hi]; absent or null leaves *v. */
static int get_number(json_t *root, const char *key, double lo, double hi, float *v, srv_error *err)
{
    json_t *x = json_object_get(root, key);
    if (!x || json_is_null(x))
        return 0;
    if (!json_is_number(x))
        return BAD(key, "'%s' must be a number", key);
    double d = json_number_value(x);
    if (!isfinite(d) || d < lo || d > hi)
        return BAD(key, "'%s' must be between %g and %g", key, lo, hi);
    *v = (float)d;
    return 0;
}

/* content: a string, null, or an array of {"type":"text","text":...} parts (joined). */
static int message_content(json_t *c, size_t idx, json_t **out, srv_error *err)
{
    char param[48];
    snprintf(param, sizeof param, "messages[%zu].content", idx);
    if (!c || json_is_null(c)) {
        *out = json_null();
        return 0;
    }
    if (json_is_string(c)) {
        *out = json_incref(c);
        return 0;
    }
    if (!json_is_array(c))
        return BAD(param, "'%s' must be a string or an array of text parts", param);
    size_t total = 0, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            return BAD(param, "'%s[%zu]': only parts of type 'text' are supported", param, i);
        if (!json_is_string(text))
            return BAD(param, "'%s[%zu].text' must be a string", param, i);
        total += json_string_length(text);
    }
    char *buf = malloc(total + 1);
    if (!buf)
        return OOM();
    size_t at = 0;
    json_array_foreach(c, i, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(buf + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    *out = json_stringn_nocheck(buf, at);
    free(buf);
    return *out ? 0 : OOM();
}

static int parse_messages(json_t *root, srv_request *r, srv_error *err)
{
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs)
        return BAD("messages", "'messages' is required");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return BAD("messages", "'messages' must be a non-empty array");
    if (json_array_size(msgs) > SRV_MAX_MESSAGES)
        return BAD("messages", "'messages' has more than %d entries", SRV_MAX_MESSAGES);
    json_t *norm = json_array();
    size_t i;
    json_t *m;
    int rc = 0;
    json_array_foreach(msgs, i, m) {
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(m)) {
            rc = BAD(param, "'%s' must be an object", param);
            break;
        }
        json_t *role = json_object_get(m, "role");
        const char *rs = json_is_string(role) ? json_string_value(role) : NULL;
        if (!rs || (strcmp(rs, "system") && strcmp(rs, "developer") && strcmp(rs, "user") &&
                    strcmp(rs, "assistant") && strcmp(rs, "tool"))) {
            rc = BAD(param, "'%s.role' must be one of system, developer, user, assistant, tool", param);
            break;
        }
        json_t *content = NULL;
        if ((rc = message_content(json_object_get(m, "content"), i, &content, err)) != 0)
            break;
        json_t *tool_calls = json_object_get(m, "tool_calls");
        if (json_is_null(content) && strcmp(rs, "assistant") != 0) {
            json_decref(content);
            rc = BAD(param, "'%s.content' is required for role '%s'", param, rs);
            break;
        }
        json_t *nm = json_object();
        json_object_set_new(nm, "role", json_string(strcmp(rs, "developer") ? rs : "system"));
        json_object_set_new(nm, "content", json_is_null(content) ? json_string("") : content);
        if (json_is_null(content))
            json_decref(content);
        if (tool_calls && !json_is_null(tool_calls)) {
            if (!json_is_array(tool_calls)) {
                json_decref(nm);
                rc = BAD(param, "'%s.tool_calls' must be an array", param);
                break;
            }
            /* templates expect arguments as objects; the API sends them as JSON text */
            json_t *tc = json_deep_copy(tool_calls), *call;
            size_t k;
            json_array_foreach(tc, k, call) {
                json_t *fn = json_object_get(call, "function");
                json_t *args = json_object_get(fn, "arguments");
                if (json_is_string(args)) {
                    json_t *parsed = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
                    if (parsed)
                        json_object_set_new(fn, "arguments", parsed);
                }
            }
            json_object_set_new(nm, "tool_calls", tc);
        }
        json_t *tcid = json_object_get(m, "tool_call_id"), *name = json_object_get(m, "name");
        if (json_is_string(tcid))
            json_object_set(nm, "tool_call_id", tcid);
        if (json_is_string(name))
            json_object_set(nm, "name", name);
        json_array_append_new(norm, nm);
    }
    if (rc == 0) {
        r->messages_json = json_dumps(norm, JSON_COMPACT);
        if (!r->messages_json)
            rc = OOM();
    }
    json_decref(norm);
    return rc;
}

static char *schema_text(json_t *schema)
{
    return json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* tools + tool_choice: a forced call ("required" or a named function) becomes a schema
 * {"name": const, "arguments": parameters} per allowed tool. */
static int parse_tools(json_t *root, srv_request *r, srv_error *err)
{
    json_t *tools = json_object_get(root, "tools");
    json_t *choice = json_object_get(root, "tool_choice");
    if (!tools || json_is_null(tools)) {
        if (choice && !json_is_null(choice) &&
            !(json_is_string(choice) && !strcmp(json_string_value(choice), "none")))
            return BAD("tool_choice", "'tool_choice' needs 'tools'");
        return 0;
    }
    if (!json_is_array(tools) || json_array_size(tools) > SRV_MAX_TOOLS)
        return BAD("tools", "'tools' must be an array of at most %d tools", SRV_MAX_TOOLS);
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
        if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0 || !json_is_object(fn))
            return BAD("tools", "tools[%zu] must be {\"type\":\"function\",\"function\":{...}}", i);
        json_t *name = json_object_get(fn, "name"), *params = json_object_get(fn, "parameters");
        if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 64)
            return BAD("tools", "tools[%zu].function.name must be a string of 1 to 64 characters", i);
        if (params && !json_is_object(params))
            return BAD("tools", "tools[%zu].function.parameters must be an object", i);
    }
    if (json_array_size(tools) > 0) {
        r->tools_json = json_dumps(tools, JSON_COMPACT);
        if (!r->tools_json)
            return OOM();
    }
    const char *forced = NULL;
    bool required = false;
    if (choice && !json_is_null(choice)) {
        if (json_is_string(choice)) {
            const char *c = json_string_value(choice);
            if (!strcmp(c, "required"))
                required = true;
            else if (strcmp(c, "auto") && strcmp(c, "none"))
                return BAD("tool_choice", "'tool_choice' must be none, auto, required or a function");
        } else {
            json_t *fn = json_object_get(choice, "function");
            json_t *name = json_object_get(fn, "name");
            if (!json_is_string(name))
                return BAD("tool_choice", "'tool_choice' must be none, auto, required or {\"type\":\"function\",\"function\":{\"name\":...}}");
            forced = json_string_value(name);
        }
    }
    if (!required && !forced) {
        bool none = json_is_string(choice) && !strcmp(json_string_value(choice), "none");
        r->tools_auto = !none && json_array_size(tools) > 0;
        return 0;
    }
    json_t *any = json_array();
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (forced && strcmp(forced, name) != 0)
            continue;
        json_t *params = json_object_get(fn, "parameters");
        json_t *args = params ? json_incref(params)
                              : json_pack("{s:s,s:b}", "type", "object", "additionalProperties", 1);
        json_t *branch = json_pack("{s:s, s:{s:{s:s}, s:o}, s:[s,s], s:b}", "type", "object", "properties",
                                   "name", "const", name, "arguments", args, "required", "name",
                                   "arguments", "additionalProperties", 0);
        if (branch)
            json_array_append_new(any, branch);
    }
    if (json_array_size(any) == 0) {
        json_decref(any);
        return BAD("tool_choice", "'tool_choice' names a function that is not in 'tools'");
    }
    json_t *schema = json_array_size(any) == 1 ? json_incref(json_array_get(any, 0))
                                               : json_pack("{s:O}", "anyOf", any);
    json_decref(any);
    r->schema_json = schema_text(schema);
    json_decref(schema);
    r->tool_call = true;
    return r->schema_json ? 0 : OOM();
}

static int parse_response_format(json_t *root, srv_request *r, srv_error *err)
{
    json_t *rf = json_object_get(root, "response_format");
    if (!rf || json_is_null(rf))
        return 0;
    json_t *type = json_object_get(rf, "type");
    if (!json_is_object(rf) || !json_is_string(type))
        return BAD("response_format", "'response_format' must be an object with a 'type'");
    const char *ts = json_string_value(type);
    if (!strcmp(ts, "text"))
        return 0;
    if (r->tool_call)
        return BAD("response_format", "'response_format' cannot be combined with a forced tool call");
    if (!strcmp(ts, "json_object")) {
        r->format = SRV_FMT_JSON_OBJECT;
        r->schema_json = strdup("{\"type\":\"object\",\"additionalProperties\":true}");
        return r->schema_json ? 0 : OOM();
    }
    if (!strcmp(ts, "json_schema")) {
        json_t *js = json_object_get(rf, "json_schema");
        if (!json_is_object(js))
            return BAD("response_format", "'response_format.json_schema' must be an object");
        json_t *schema = json_object_get(js, "schema");
        if (schema && !json_is_object(schema) && !json_is_boolean(schema))
            return BAD("response_format", "'response_format.json_schema.schema' must be a JSON Schema object");
        r->format = SRV_FMT_JSON_SCHEMA;
        r->schema_json = schema ? schema_text(schema)
                                : strdup("{\"type\":\"object\",\"additionalProperties\":true}");
        return r->schema_json ? 0 : OOM();
    }
    return BAD("response_format", "'response_format.type' must be text, json_object or json_schema");
}

static int parse_stop(json_t *root, srv_request *r, srv_error *err)
{
    json_t *stop = json_object_get(root, "stop");
    if (!stop || json_is_null(stop))
        return 0;
    json_t *one[1] = {stop};
    size_t n = 1;
    if (json_is_array(stop)) {
        n = json_array_size(stop);
        if (n > SRV_MAX_STOP)
            return BAD("stop", "'stop' has at most %d sequences", SRV_MAX_STOP);
    } else if (!json_is_string(stop)) {
        return BAD("stop", "'stop' must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(stop) ? json_array_get(stop, i) : one[0];
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > SRV_MAX_STOP_LEN ||
            strlen(json_string_value(s)) != json_string_length(s))
            return BAD("stop", "each stop sequence must be a non-empty string of at most %d bytes",
                       SRV_MAX_STOP_LEN);
        r->stop[r->n_stop] = dup_str(json_string_value(s), json_string_length(s));
        if (!r->stop[r->n_stop])
            return OOM();
        r->n_stop++;
    }
    return 0;
}

static int parse_fields(json_t *root, srv_kind kind, srv_request *r, srv_error *err)
{
    json_t *x;
    if ((x = json_object_get(root, "model")) && !json_is_null(x)) {
        if (!json_is_string(x))
            return BAD("model", "'model' must be a string");
        if (!(r->model = dup_str(json_string_value(x), json_string_length(x))))
            return OOM();
    }
    if (kind == SRV_CHAT) {
        if (parse_messages(root, r, err) || parse_tools(root, r, err))
            return -1;
    } else {
        x = json_object_get(root, "prompt");
        if (json_is_array(x) && json_array_size(x) == 1)
            x = json_array_get(x, 0);
        if (!x)
            return BAD("prompt", "'prompt' is required");
        if (!json_is_string(x))
            return BAD("prompt", "'prompt' must be a string (arrays of several prompts and token arrays are not supported)");
        if (!(r->prompt = dup_str(json_string_value(x), json_string_length(x))))
            return OOM();
        if (strlen(r->prompt) != json_string_length(x))
            return BAD("prompt", "'prompt' must not contain NUL characters");
        if ((x = json_object_get(root, "echo")) && json_is_true(x))
            return BAD("echo", "'echo' is not supported");
        if ((x = json_object_get(root, "suffix")) && !json_is_null(x))
            return BAD("suffix", "'suffix' is not supported");
    }
    r->max_tokens = -1;
    const char *mt_keys[2] = {"max_completion_tokens", "max_tokens"};
    for (int k = 0; k < 2; k++) {
        x = json_object_get(root, mt_keys[k]);
        if (!x || json_is_null(x))
            continue;
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > (1 << 24))
            return BAD(mt_keys[k], "'%s' must be an integer between 1 and %d", mt_keys[k], 1 << 24);
        r->max_tokens = (int32_t)json_integer_value(x);
        break;
    }
    r->temperature = 1.0f;
    r->top_p = 1.0f;
    if (get_number(root, "temperature", 0, 2, &r->temperature, err) ||
        get_number(root, "top_p", 0, 1, &r->top_p, err) ||
        get_number(root, "presence_penalty", -2, 2, &r->presence_penalty, err) ||
        get_number(root, "frequency_penalty", -2, 2, &r->frequency_penalty, err))
        return -1;
    r->n_choices = 1;
    if ((x = json_object_get(root, "n")) && !json_is_null(x)) {
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > SRV_MAX_N)
            return BAD("n", "'n' must be an integer between 1 and %d", SRV_MAX_N);
        r->n_choices = (int32_t)json_integer_value(x);
    }
    if ((x = json_object_get(root, "seed")) && !json_is_null(x)) {
        if (!json_is_integer(x))
            return BAD("seed", "'seed' must be an integer");
        r->has_seed = true;
        r->seed = (uint64_t)json_integer_value(x);
    }
    if (kind == SRV_CHAT) {
        /* chat: "logprobs": bool, "top_logprobs": 0..20 (only with logprobs) */
        if ((x = json_object_get(root, "logprobs")) && !json_is_null(x)) {
            if (!json_is_boolean(x))
                return BAD("logprobs", "'logprobs' must be a boolean");
            r->logprobs = json_is_true(x);
        }
        if ((x = json_object_get(root, "top_logprobs")) && !json_is_null(x)) {
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > SRV_MAX_TOP_LOGPROBS)
                return BAD("top_logprobs", "'top_logprobs' must be an integer between 0 and %d",
                           SRV_MAX_TOP_LOGPROBS);
            if (!r->logprobs)
                return BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
            r->top_logprobs = (int32_t)json_integer_value(x);
        }
    } else if ((x = json_object_get(root, "logprobs")) && !json_is_null(x)) {
        /* completions: "logprobs": k, the number of alternatives per token */
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > SRV_MAX_TOP_LOGPROBS)
            return BAD("logprobs", "'logprobs' must be an integer between 0 and %d", SRV_MAX_TOP_LOGPROBS);
        r->logprobs = true;
        r->top_logprobs = (int32_t)json_integer_value(x);
    }
    if ((x = json_object_get(root, "stream")) && !json_is_null(x)) {
        if (!json_is_boolean(x))
            return BAD("stream", "'stream' must be a boolean");
        r->stream = json_is_true(x);
    }
    if ((x = json_object_get(root, "stream_options")) && !json_is_null(x)) {
        if (!json_is_object(x))
            return BAD("stream_options", "'stream_options' must be an object");
        r->include_usage = json_is_true(json_object_get(x, "include_usage"));
    }
    if ((x = json_object_get(root, "orchard")) && json_is_object(x))
        r->escalate = json_is_true(json_object_get(x, "escalate"));
    if (parse_stop(root, r, err))
        return -1;
    return kind == SRV_CHAT ? parse_response_format(root, r, err) : 0;
}

int srv_request_parse(const char *body, size_t len, srv_kind kind, srv_request *out, srv_error *err)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    if (srv_json_depth(body, len, SRV_MAX_JSON_DEPTH) > SRV_MAX_JSON_DEPTH)
        return BAD(NULL, "the request body nests deeper than %d levels", SRV_MAX_JSON_DEPTH);
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return BAD(NULL, "the request body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                   je.column);
    int rc = 0;
    if (!json_is_object(root))
        rc = BAD(NULL, "the request body must be a JSON object");
    else
        rc = parse_fields(root, kind, out, err);
    json_decref(root);
    if (rc) {
        srv_request_free(out);
        out->kind = kind;
    }
    return rc;
}
