/* session_tools.c - the tool-call syntaxes of current open models: which one a chat
 * template uses, where a call starts in streamed output, how to parse calls out of the
 * model's text into {"name", "arguments"} objects, and which calls a lazy grammar can
 * constrain. Used by session.c; orc_tool_calls_parse exposes the parser. */
#include "session.h"

#include "common.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

/* How a parse reads the text. */
typedef struct {
    const json_t *tools; /* the session's tools (OpenAI form) for typed XML-style values, or NULL */
    bool partial;        /* the text may stop inside a call (streaming snapshots) */
} pctx;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
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
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static const char *find(const char *s, const char *end, const char *needle)
{
    size_t nl = strlen(needle);
    if (nl == 0)
        return s;
    for (const char *p = s; p + nl <= end; p++)
        if (*p == *needle && memcmp(p, needle, nl) == 0)
            return p;
    return NULL;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char)*p))
        p++;
    return p;
}

/* A JSON value at the start of [p, end); *next gets the byte after it. */
static json_t *json_at(const char *p, const char *end, const char **next)
{
    json_error_t je;
    json_t *v = json_loadb(p, (size_t)(end - p), JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
    if (v && next)
        *next = p + je.position;
    return v;
}

/* Arguments at the start of [p, end): a whole JSON value, or when the parse is partial,
 * what an unfinished one holds so far (then *next is end). */
static json_t *args_at(const pctx *x, const char *p, const char *end, const char **next)
{
    json_t *v = json_at(p, end, next);
    if (v || !x->partial)
        return v;
    v = partial_json_parse(p, (size_t)(end - p), NULL);
    if (v && next)
        *next = end;
    return v;
}

/* A parameter value written as plain text (XML-style syntaxes): JSON when it parses as
 * a whole, else the string itself. */
static json_t *loose_value(const char *p, size_t n)
{
    while (n && isspace((unsigned char)*p)) {
        p++;
        n--;
    }
    while (n && isspace((unsigned char)p[n - 1]))
        n--;
    json_error_t je;
    json_t *v = json_loadb(p, n, JSON_DECODE_ANY, &je);
    if (v && !json_is_string(v) && !json_is_null(v))
        return v;
    json_decref(v);
    return json_stringn(p, n);
}

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

/* The JSON Schema of parameter key of the tool called name (NULL: unknown). */
static const json_t *param_schema(const pctx *x, const char *name, size_t name_len, const char *key)
{
    while (name_len && isspace((unsigned char)*name)) {
        name++;
        name_len--;
    }
    while (name_len && isspace((unsigned char)name[name_len - 1]))
        name_len--;
    size_t i;
    json_t *t;
    json_array_foreach(x->tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        if (!fn)
            fn = t;
        const char *n = json_string_value(json_object_get(fn, "name"));
        if (n && strlen(n) == name_len && !memcmp(n, name, name_len))
            return json_object_get(json_object_get(json_object_get(fn, "parameters"), "properties"), key);
    }
    return NULL;
}

/* Length of the longest proper prefix of tag that text[0..n) ends with. */
static size_t tag_start_at_end(const char *text, size_t n, const char *tag)
{
    for (size_t k = strlen(tag) - 1; k > 0; k--)
        if (k <= n && !memcmp(text + n - k, tag, k))
            return k;
    return 0;
}

/* A value of an XML-style call. With the tools known, string parameters are the raw text
 * and the others JSON (as the tool grammar writes them); unknown parameters are JSON when
 * they parse as a non-string, else text. In a partial parse an unfinished value loses
 * what may be the start of its closing tag. */
static json_t *xml_value(const pctx *x, const char *name, size_t name_len, const char *key, const char *v, size_t n)
{
    const json_t *schema = param_schema(x, name, name_len, key);
    if (!schema)
        return loose_value(v, n);
    if (tool_xml_raw_string(schema))
        return json_stringn(v, n);
    while (n && isspace((unsigned char)*v)) {
        v++;
        n--;
    }
    while (n && isspace((unsigned char)v[n - 1]))
        n--;
    json_t *j = json_loadb(v, n, JSON_DECODE_ANY, NULL);
    if (!j && x->partial)
        j = partial_json_parse(v, n, NULL);
    return j ? j : json_stringn(v, n);
}

/* Appends {"name", "arguments"} to calls; args may be a JSON string holding an object. */
static int add_call(const pctx *x, json_t *calls, const char *name, size_t name_len, json_t *args, char *err, size_t errlen)
{
    if (json_is_string(args)) {
        json_t *inner = json_loads(json_string_value(args), 0, NULL);
        if (!inner && x->partial)
            inner = partial_json_parse(json_string_value(args), json_string_length(args), NULL);
        json_decref(args);
        args = inner;
    }
    if (!args)
        args = json_object(); /* a call without arguments */
    if (!json_is_object(args)) {
        json_decref(args);
        return fail(err, errlen, "tool call arguments are not a JSON object");
    }
    while (name_len && isspace((unsigned char)*name)) {
        name++;
        name_len--;
    }
    while (name_len && isspace((unsigned char)name[name_len - 1]))
        name_len--;
    if (name_len == 0) {
        json_decref(args);
        return fail(err, errlen, "tool call without a name");
    }
    json_t *jn = json_stringn(name, name_len);
    if (!jn) {
        json_decref(args);
        return fail(err, errlen, "tool call name is not valid UTF-8");
    }
    json_t *c = json_object();
    if (!c || json_object_set_new(c, "name", jn) || json_object_set_new(c, "arguments", args) ||
        json_array_append_new(calls, c))
        return fail(err, errlen, "out of memory");
    return 0;
}

/* {"name": .., "arguments"|"parameters": ..} */
static int add_call_object(const pctx *x, json_t *calls, json_t *obj, char *err, size_t errlen)
{
    if (!json_is_object(obj))
        return fail(err, errlen, "tool call is not a JSON object");
    json_t *fn = json_object_get(obj, "function");
    if (json_is_object(fn))
        obj = fn;
    json_t *name = json_object_get(obj, "name");
    if (!json_is_string(name) && x->partial)
        return 0; /* not written yet */
    if (!json_is_string(name))
        return fail(err, errlen, "tool call has no string \"name\"");
    json_t *args = json_object_get(obj, "arguments");
    if (!args)
        args = json_object_get(obj, "parameters");
    json_incref(args);
    return add_call(x, calls, json_string_value(name), json_string_length(name), args, err, errlen);
}

/* ---- per-syntax parsers: fill calls, append the text outside calls to content ---- */

typedef int (*parse_fn)(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err, size_t errlen);

/* Generic "<open> body <close>" sections; body parsed by fn. */
typedef int (*body_fn)(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen);

static int sections(const pctx *x, const char *s, const char *end, const char *open, const char *close, body_fn fn,
                    json_t *calls, sbuf *content, char *err, size_t errlen)
{
    const char *p = s;
    for (;;) {
        const char *o = find(p, end, open);
        if (!o) {
            sb_add(content, p, (size_t)(end - p));
            return 0;
        }
        sb_add(content, p, (size_t)(o - p));
        const char *b = o + strlen(open);
        const char *c = find(b, end, close);
        const char *be = c ? c : end;
        if (fn(x, b, be, calls, err, errlen))
            return -1;
        p = c ? c + strlen(close) : end;
    }
}

static int hermes_body(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen)
{
    const char *next;
    json_t *v = args_at(x, skip_ws(b, be), be, &next);
    if (!v)
        return fail(err, errlen, "<tool_call> does not hold a JSON object");
    int rc = add_call_object(x, calls, v, err, errlen);
    json_decref(v);
    return rc;
}

/* <tool_call>{..}</tool_call>: the JSON value is read first, so a string argument may
 * hold "</tool_call>"; an unreadable body falls back to the text up to the closing tag. */
static int parse_hermes(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err,
                        size_t errlen)
{
    const char *p = s;
    for (;;) {
        const char *o = find(p, end, "<tool_call>");
        if (!o) {
            sb_add(content, p, (size_t)(end - p));
            return 0;
        }
        sb_add(content, p, (size_t)(o - p));
        const char *b = skip_ws(o + 11, end), *next = NULL;
        json_t *v = json_at(b, end, &next);
        if (v) {
            int rc = add_call_object(x, calls, v, err, errlen);
            json_decref(v);
            if (rc)
                return -1;
            const char *c = find(next, end, "</tool_call>");
            p = c ? c + 12 : end;
            continue;
        }
        const char *c = find(b, end, "</tool_call>");
        if (hermes_body(x, b, c ? c : end, calls, err, errlen))
            return -1;
        p = c ? c + 12 : end;
    }
}

/* <function=name>\n<parameter=k>\nv\n</parameter>\n</function> */
static int qwen3_coder_body(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen)
{
    const char *f = find(b, be, "<function=");
    if (!f)
        return fail(err, errlen, "<tool_call> without <function=NAME>");
    const char *nb = f + 10, *ne = find(nb, be, ">");
    if (!ne)
        return fail(err, errlen, "unterminated <function=NAME>");
    json_t *args = json_object();
    const char *p = ne + 1;
    for (;;) {
        const char *q = find(p, be, "<parameter=");
        if (!q)
            break;
        const char *kb = q + 11, *ke = find(kb, be, ">");
        if (!ke && x->partial)
            break;
        if (!ke) {
            json_decref(args);
            return fail(err, errlen, "unterminated <parameter=NAME>");
        }
        const char *vb = ke + 1, *ve = find(vb, be, "</parameter>");
        const char *stop = ve ? ve : be;
        const char *nextp = find(vb, stop, "<parameter=");
        if (nextp)
            stop = nextp;
        const char *fe = find(vb, stop, "</function>");
        if (fe)
            stop = fe;
        char key[256];
        size_t kl = (size_t)(ke - kb) < sizeof key - 1 ? (size_t)(ke - kb) : sizeof key - 1;
        memcpy(key, kb, kl);
        key[kl] = 0;
        size_t vl = (size_t)(stop - vb);
        if (stop == be && x->partial)
            vl -= tag_start_at_end(vb, vl, "\n</parameter>");
        /* the template writes the value between newlines */
        if (vl && *vb == '\n') {
            vb++;
            vl--;
        }
        if (vl && vb[vl - 1] == '\n')
            vl--;
        if (json_object_set_new(args, key, xml_value(x, nb, (size_t)(ne - nb), key, vb, vl))) {
            json_decref(args);
            return fail(err, errlen, "tool call parameter is not valid UTF-8");
        }
        p = ve && ve == stop ? ve + 12 : stop;
    }
    return add_call(x, calls, nb, (size_t)(ne - nb), args, err, errlen);
}

static int parse_qwen3_coder(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err,
                             size_t errlen)
{
    return sections(x, s, end, "<tool_call>", "</tool_call>", qwen3_coder_body, calls, content, err, errlen);
}

/* GLM: <tool_call>name\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>...</tool_call> */
static int glm_body(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen)
{
    const char *k0 = find(b, be, "<arg_key>");
    const char *ne = k0 ? k0 : be;
    /* a JSON body is also accepted (GLM-4 style) */
    const char *nl = find(b, ne, "\n");
    const char *name_end = nl ? nl : ne;
    json_t *args = json_object();
    if (nl && !k0) {
        const char *next;
        json_t *v = args_at(x, skip_ws(nl, be), be, &next);
        if (v && json_is_object(v)) {
            json_decref(args);
            args = v;
        } else {
            json_decref(v);
        }
    }
    const char *p = k0;
    while (p) {
        const char *kb = p + 9, *ke = find(kb, be, "</arg_key>");
        const char *vo = ke ? find(ke, be, "<arg_value>") : NULL;
        if (!vo && x->partial)
            break;
        if (!ke) {
            json_decref(args);
            return fail(err, errlen, "unterminated <arg_key>");
        }
        if (!vo) {
            json_decref(args);
            return fail(err, errlen, "<arg_key> without <arg_value>");
        }
        const char *vb = vo + 11, *ve = find(vb, be, "</arg_value>");
        size_t vl = (size_t)((ve ? ve : be) - vb);
        if (!ve && x->partial)
            vl -= tag_start_at_end(vb, vl, "</arg_value>");
        if (!ve)
            ve = be;
        char key[256];
        size_t kl = (size_t)(ke - kb) < sizeof key - 1 ? (size_t)(ke - kb) : sizeof key - 1;
        memcpy(key, kb, kl);
        key[kl] = 0;
        if (json_object_set_new(args, key, xml_value(x, b, (size_t)(name_end - b), key, vb, vl))) {
            json_decref(args);
            return fail(err, errlen, "tool call argument is not valid UTF-8");
        }
        p = ve < be ? find(ve, be, "<arg_key>") : NULL;
    }
    return add_call(x, calls, b, (size_t)(name_end - b), args, err, errlen);
}

static int parse_glm(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err, size_t errlen)
{
    return sections(x, s, end, "<tool_call>", "</tool_call>", glm_body, calls, content, err, errlen);
}

/* One JSON object or an array of them. */
static int json_calls(const pctx *x, const char *p, const char *end, json_t *calls, const char **next, char *err, size_t errlen)
{
    json_t *v = args_at(x, skip_ws(p, end), end, next);
    if (!v)
        return fail(err, errlen, "tool calls are not valid JSON");
    int rc = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && !rc; i++)
            rc = add_call_object(x, calls, json_array_get(v, i), err, errlen);
    } else {
        rc = add_call_object(x, calls, v, err, errlen);
    }
    json_decref(v);
    return rc;
}

/* Llama 3.x: the whole response is {"name": .., "parameters": ..} (several separated by
 * ';' or whitespace), optionally after <|python_tag|>. */
static int parse_llama3(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err, size_t errlen)
{
    const char *p = skip_ws(s, end);
    const char *tag = "<|python_tag|>";
    bool tagged = (size_t)(end - p) >= strlen(tag) && memcmp(p, tag, strlen(tag)) == 0;
    if (tagged)
        p = skip_ws(p + strlen(tag), end);
    if (p >= end || *p != '{') {
        sb_add(content, s, (size_t)(end - s));
        return 0;
    }
    while (p < end && *p == '{') {
        const char *next;
        json_t *v = args_at(x, p, end, &next);
        if (!v)
            return fail(err, errlen, "tool call is not valid JSON");
        bool is_call = json_is_object(v) && json_is_string(json_object_get(v, "name")) &&
                       (json_object_get(v, "parameters") || json_object_get(v, "arguments"));
        if (!is_call && json_array_size(calls) == 0 && !tagged) {
            json_decref(v);
            sb_add(content, s, (size_t)(end - s)); /* a JSON answer, not a call */
            return 0;
        }
        int rc = add_call_object(x, calls, v, err, errlen);
        json_decref(v);
        if (rc)
            return rc;
        p = skip_ws(next, end);
        if (p < end && *p == ';')
            p = skip_ws(p + 1, end);
    }
    sb_add(content, p, (size_t)(end - p));
    return 0;
}

/* Mistral: [TOOL_CALLS][{...}, ...]  or  [TOOL_CALLS]name[ARGS]{...} (repeated), with an
 * optional [CALL_ID]id before [ARGS]. */
static int parse_mistral(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err, size_t errlen)
{
    const char *open = "[TOOL_CALLS]";
    const char *o = find(s, end, open);
    if (!o) {
        sb_add(content, s, (size_t)(end - s));
        return 0;
    }
    sb_add(content, s, (size_t)(o - s));
    const char *p = o;
    while (p < end) {
        p = skip_ws(p, end);
        if ((size_t)(end - p) >= strlen(open) && memcmp(p, open, strlen(open)) == 0)
            p = skip_ws(p + strlen(open), end);
        else
            break;
        if (p < end && (*p == '[' || *p == '{')) {
            if (json_calls(x, p, end, calls, &p, err, errlen))
                return -1;
            continue;
        }
        const char *a = find(p, end, "[ARGS]");
        if (!a)
            return fail(err, errlen, "[TOOL_CALLS] without a JSON list or [ARGS]");
        const char *name_end = find(p, a, "[CALL_ID]");
        if (!name_end)
            name_end = a;
        const char *next;
        json_t *args = args_at(x, skip_ws(a + 6, end), end, &next);
        if (!args)
            return fail(err, errlen, "[ARGS] is not followed by JSON");
        if (add_call(x, calls, p, (size_t)(name_end - p), args, err, errlen))
            return -1;
        p = next;
    }
    sb_add(content, p, (size_t)(end - p));
    return 0;
}

/* Functionary v3.2: ">>>name\n{args}" segments (the prompt ends with ">>>", so the first
 * recipient has no marker; "all" is text for the user). v3.1: <function=name>{..}</function>. */
static int functionary_v31_body(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen)
{
    const char *gt = find(b, be, ">");
    if (!gt)
        return fail(err, errlen, "unterminated <function=NAME>");
    const char *next;
    json_t *args = args_at(x, skip_ws(gt + 1, be), be, &next);
    if (!args)
        return fail(err, errlen, "<function=NAME> is not followed by JSON");
    return add_call(x, calls, b, (size_t)(gt - b), args, err, errlen);
}

static bool ident_line(const char *p, const char *end, const char **nl)
{
    const char *q = p;
    while (q < end && (isalnum((unsigned char)*q) || *q == '_' || *q == '-' || *q == '.'))
        q++;
    if (q == p || q >= end || *q != '\n')
        return false;
    *nl = q;
    return true;
}

static int parse_functionary(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err,
                             size_t errlen)
{
    if (find(s, end, "<function="))
        return sections(x, s, end, "<function=", "</function>", functionary_v31_body, calls, content, err, errlen);
    const char *p = s;
    bool first = true;
    while (p < end) {
        bool marked = (size_t)(end - p) >= 3 && memcmp(p, ">>>", 3) == 0;
        if (marked)
            p += 3;
        const char *nl;
        if ((!marked && !first) || !ident_line(p, end, &nl)) {
            if (marked)
                p -= 3;
            sb_add(content, p, (size_t)(end - p));
            return 0;
        }
        first = false;
        const char *next_seg = find(nl + 1, end, ">>>");
        const char *seg_end = next_seg ? next_seg : end;
        if ((size_t)(nl - p) == 3 && memcmp(p, "all", 3) == 0) {
            sb_add(content, nl + 1, (size_t)(seg_end - nl - 1));
        } else {
            const char *next;
            json_t *args = args_at(x, skip_ws(nl + 1, seg_end), seg_end, &next);
            if (!args)
                return fail(err, errlen, "functionary call is not followed by JSON");
            if (add_call(x, calls, p, (size_t)(nl - p), args, err, errlen))
                return -1;
        }
        p = seg_end;
    }
    return 0;
}

/* Granite 3.x: <|tool_call|>[{"name":..,"arguments":..}] */
static int parse_granite(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err, size_t errlen)
{
    const char *o = find(s, end, "<|tool_call|>");
    if (!o)
        return parse_hermes(x, s, end, calls, content, err, errlen); /* Granite 4 uses <tool_call> */
    sb_add(content, s, (size_t)(o - s));
    const char *next;
    if (json_calls(x, o + 13, end, calls, &next, err, errlen))
        return -1;
    sb_add(content, next, (size_t)(end - next));
    return 0;
}

/* DeepSeek: <｜tool▁call▁begin｜>function<｜tool▁sep｜>name\n```json\n{..}\n```<｜tool▁call▁end｜> (V3, R1)
 * or <｜tool▁call▁begin｜>name<｜tool▁sep｜>{..}<｜tool▁call▁end｜> (V3.1) inside
 * <｜tool▁calls▁begin｜> ... <｜tool▁calls▁end｜>. */
#define DS_CALLS_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALLS_END "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_CALL_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALL_END "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_SEP "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>"

static int deepseek_call(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen)
{
    const char *sep = find(b, be, DS_SEP);
    if (!sep)
        return fail(err, errlen, "DeepSeek tool call without <\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>");
    const char *r = sep + strlen(DS_SEP);
    const char *name = b, *name_end = sep, *astart = r;
    if ((size_t)(sep - b) == 8 && memcmp(b, "function", 8) == 0) {
        const char *nl = find(r, be, "\n");
        name = r;
        name_end = nl ? nl : be;
        const char *fence = find(name_end, be, "```");
        astart = name_end;
        if (fence) {
            const char *fnl = find(fence, be, "\n");
            astart = fnl ? fnl + 1 : fence + 3;
        }
    }
    const char *next;
    json_t *args = args_at(x, skip_ws(astart, be), be, &next);
    if (!args)
        return fail(err, errlen, "DeepSeek tool call arguments are not JSON");
    return add_call(x, calls, name, (size_t)(name_end - name), args, err, errlen);
}

static int deepseek_section(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen)
{
    sbuf ignore = {0};
    int rc = sections(x, b, be, DS_CALL_BEGIN, DS_CALL_END, deepseek_call, calls, &ignore, err, errlen);
    free(ignore.p);
    return rc;
}

static int parse_deepseek(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err, size_t errlen)
{
    if (!find(s, end, DS_CALLS_BEGIN)) /* a lone call without the section markers */
        return sections(x, s, end, DS_CALL_BEGIN, DS_CALL_END, deepseek_call, calls, content, err, errlen);
    return sections(x, s, end, DS_CALLS_BEGIN, DS_CALLS_END, deepseek_section, calls, content, err, errlen);
}

/* Kimi K2: <|tool_call_begin|>functions.name:0<|tool_call_argument_begin|>{..}<|tool_call_end|> */
static int kimi_call(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen)
{
    const char *a = find(b, be, "<|tool_call_argument_begin|>");
    if (!a)
        return fail(err, errlen, "Kimi tool call without <|tool_call_argument_begin|>");
    const char *nb = skip_ws(b, a), *ne = a;
    if ((size_t)(ne - nb) > 10 && memcmp(nb, "functions.", 10) == 0)
        nb += 10;
    for (const char *q = ne; q > nb; q--)
        if (q[-1] == ':') {
            ne = q - 1;
            break;
        }
    const char *next;
    json_t *args = args_at(x, skip_ws(a + 28, be), be, &next);
    if (!args)
        return fail(err, errlen, "Kimi tool call arguments are not JSON");
    return add_call(x, calls, nb, (size_t)(ne - nb), args, err, errlen);
}

static int kimi_section(const pctx *x, const char *b, const char *be, json_t *calls, char *err, size_t errlen)
{
    sbuf ignore = {0};
    int rc = sections(x, b, be, "<|tool_call_begin|>", "<|tool_call_end|>", kimi_call, calls, &ignore, err, errlen);
    free(ignore.p);
    return rc;
}

static int parse_kimi(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err, size_t errlen)
{
    if (!find(s, end, "<|tool_calls_section_begin|>"))
        return sections(x, s, end, "<|tool_call_begin|>", "<|tool_call_end|>", kimi_call, calls, content, err, errlen);
    return sections(x, s, end, "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", kimi_section, calls,
                    content, err, errlen);
}

/* gpt-oss (harmony): messages "<|start|>assistant<|channel|>C[ to=R][ <|constrain|>json]
 * <|message|>BODY<|end|>|<|call|>|<|return|>"; a recipient "functions.NAME" makes a call,
 * the "final" channel is the answer. The first message's header may be implicit. */
static int parse_gpt_oss(const pctx *x, const char *s, const char *end, json_t *calls, sbuf *content, char *err, size_t errlen)
{
    if (!find(s, end, "<|message|>")) {
        sb_add(content, s, (size_t)(end - s));
        return 0;
    }
    const char *p = s;
    bool saw_final = false;
    sbuf other = {0};
    while (p < end) {
        const char *m = find(p, end, "<|message|>");
        if (!m)
            break;
        const char *hb = p, *he = m; /* header */
        const char *b = m + 11;
        const char *e1 = find(b, end, "<|end|>"), *e2 = find(b, end, "<|call|>"), *e3 = find(b, end, "<|return|>");
        const char *be = end;
        if (e1 && e1 < be) be = e1;
        if (e2 && e2 < be) be = e2;
        if (e3 && e3 < be) be = e3;
        const char *to = find(hb, he, "to=functions.");
        if (to) {
            const char *nb = to + 13, *ne = nb;
            while (ne < he && (isalnum((unsigned char)*ne) || *ne == '_' || *ne == '-' || *ne == '.'))
                ne++;
            const char *next;
            json_t *args = args_at(x, skip_ws(b, be), be, &next);
            if (!args) {
                free(other.p);
                return fail(err, errlen, "gpt-oss tool call arguments are not JSON");
            }
            if (add_call(x, calls, nb, (size_t)(ne - nb), args, err, errlen)) {
                free(other.p);
                return -1;
            }
        } else if (find(hb, he, "final")) {
            saw_final = true;
            sb_add(content, b, (size_t)(be - b));
        } else {
            sb_add(&other, b, (size_t)(be - b));
        }
        p = be;
        const char *tags[] = {"<|end|>", "<|call|>", "<|return|>"};
        for (int k = 0; k < 3; k++)
            if ((size_t)(end - p) >= strlen(tags[k]) && memcmp(p, tags[k], strlen(tags[k])) == 0) {
                p += strlen(tags[k]);
                break;
            }
    }
    (void)saw_final; /* analysis text is reasoning, not the answer */
    free(other.p);
    return 0;
}

static const parse_fn parsers[] = {
    [ORC_TOOL_SYNTAX_HERMES] = parse_hermes,       [ORC_TOOL_SYNTAX_LLAMA3] = parse_llama3,
    [ORC_TOOL_SYNTAX_MISTRAL] = parse_mistral,     [ORC_TOOL_SYNTAX_FUNCTIONARY] = parse_functionary,
    [ORC_TOOL_SYNTAX_GRANITE] = parse_granite,     [ORC_TOOL_SYNTAX_DEEPSEEK] = parse_deepseek,
    [ORC_TOOL_SYNTAX_KIMI] = parse_kimi,           [ORC_TOOL_SYNTAX_GLM] = parse_glm,
    [ORC_TOOL_SYNTAX_GPT_OSS] = parse_gpt_oss,     [ORC_TOOL_SYNTAX_QWEN3_CODER] = parse_qwen3_coder,
};

static char *trimmed_copy(const char *p, size_t n)
{
    while (n && isspace((unsigned char)*p)) {
        p++;
        n--;
    }
    while (n && isspace((unsigned char)p[n - 1]))
        n--;
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, p, n);
        r[n] = 0;
    }
    return r;
}

int tool_calls_parse(orc_tool_syntax syntax, const char *text, size_t len, json_t **calls, char **content,
                     char *err, size_t errlen)
{
    return tool_calls_parse_ex(syntax, text, len, NULL, false, calls, content, err, errlen);
}

int tool_calls_parse_ex(orc_tool_syntax syntax, const char *text, size_t len, const json_t *tools, bool partial,
                        json_t **calls, char **content, char *err, size_t errlen)
{
    const pctx x = {.tools = tools, .partial = partial};
    *calls = NULL;
    if (content)
        *content = NULL;
    if (err && errlen)
        err[0] = 0;
    json_t *arr = json_array();
    if (!arr)
        return fail(err, errlen, "out of memory");
    sbuf c = {0};
    int rc = 0;
    if ((int)syntax > 0 && (size_t)syntax < sizeof parsers / sizeof parsers[0] && parsers[syntax])
        rc = parsers[syntax](&x, text, text + len, arr, &c, err, errlen);
    else
        sb_add(&c, text, len);
    if (rc == 0 && c.oom)
        rc = fail(err, errlen, "out of memory");
    if (rc == 0 && content) {
        *content = trimmed_copy(c.p ? c.p : "", c.n);
        if (!*content)
            rc = fail(err, errlen, "out of memory");
    }
    free(c.p);
    if (rc) {
        json_decref(arr);
        return -1;
    }
    *calls = arr;
    return 0;
}

/* ---- detection, markers, grammars ---- */

orc_tool_syntax tool_syntax_detect(const char *src)
{
    if (!src)
        return ORC_TOOL_SYNTAX_HERMES;
    if (strstr(src, "[TOOL_CALLS]"))
        return ORC_TOOL_SYNTAX_MISTRAL;
    if (strstr(src, "<|tool_calls_section_begin|>") || strstr(src, "<|tool_call_begin|>"))
        return ORC_TOOL_SYNTAX_KIMI;
    if (strstr(src, "tool\xe2\x96\x81" "call\xe2\x96\x81" "begin"))
        return ORC_TOOL_SYNTAX_DEEPSEEK;
    if (strstr(src, "<arg_key>"))
        return ORC_TOOL_SYNTAX_GLM;
    if (strstr(src, "<function=") && strstr(src, "<parameter="))
        return ORC_TOOL_SYNTAX_QWEN3_CODER;
    if (strstr(src, "<|tool_call|>"))
        return ORC_TOOL_SYNTAX_GRANITE;
    if (strstr(src, ">>>all") || strstr(src, "<function="))
        return ORC_TOOL_SYNTAX_FUNCTIONARY;
    if (strstr(src, "<|channel|>"))
        return ORC_TOOL_SYNTAX_GPT_OSS;
    if (strstr(src, "<tool_call>"))
        return ORC_TOOL_SYNTAX_HERMES;
    if (strstr(src, "<|python_tag|>") || (strstr(src, "\"parameters\"") && strstr(src, "<|start_header_id|>")))
        return ORC_TOOL_SYNTAX_LLAMA3;
    return ORC_TOOL_SYNTAX_HERMES;
}

const char *tool_syntax_name(orc_tool_syntax s)
{
    static const char *names[] = {"auto", "hermes", "llama3", "mistral", "functionary", "granite",
                                  "deepseek", "kimi", "glm", "gpt-oss", "qwen3-coder", "none"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

const char *const *tool_syntax_markers(orc_tool_syntax s)
{
    static const char *const hermes[] = {"<tool_call>", NULL};
    static const char *const llama3[] = {"<|python_tag|>", NULL};
    static const char *const mistral[] = {"[TOOL_CALLS]", NULL};
    static const char *const functionary[] = {">>>", "<function=", NULL};
    static const char *const granite[] = {"<|tool_call|>", "<tool_call>", NULL};
    static const char *const deepseek[] = {DS_CALLS_BEGIN, DS_CALL_BEGIN, NULL};
    static const char *const kimi[] = {"<|tool_calls_section_begin|>", "<|tool_call_begin|>", NULL};
    static const char *const gpt_oss[] = {"<|channel|>commentary", " to=functions.", "<|start|>", NULL};
    static const char *const none[] = {NULL};
    switch (s) {
    case ORC_TOOL_SYNTAX_HERMES:
    case ORC_TOOL_SYNTAX_GLM:
    case ORC_TOOL_SYNTAX_QWEN3_CODER: return hermes;
    case ORC_TOOL_SYNTAX_LLAMA3: return llama3;
    case ORC_TOOL_SYNTAX_MISTRAL: return mistral;
    case ORC_TOOL_SYNTAX_FUNCTIONARY: return functionary;
    case ORC_TOOL_SYNTAX_GRANITE: return granite;
    case ORC_TOOL_SYNTAX_DEEPSEEK: return deepseek;
    case ORC_TOOL_SYNTAX_KIMI: return kimi;
    case ORC_TOOL_SYNTAX_GPT_OSS: return gpt_oss;
    default: return none;
    }
}

long tool_call_start(orc_tool_syntax s, const char *text, size_t len)
{
    const char *end = text + len;
    if (s == ORC_TOOL_SYNTAX_LLAMA3) {
        const char *p = skip_ws(text, end);
        if (p < end && *p == '{')
            return (long)(p - text);
    }
    if (s == ORC_TOOL_SYNTAX_FUNCTIONARY) {
        /* v3.2 answers start with a recipient line: a tool name, or "all" for text */
        const char *nl;
        if (ident_line(text, end, &nl) && !((size_t)(nl - text) == 3 && !memcmp(text, "all", 3)))
            return 0;
    }
    long best = -1;
    for (const char *const *m = tool_syntax_markers(s); *m; m++) {
        const char *f = find(text, end, *m);
        if (f && (best < 0 || f - text < best))
            best = (long)(f - text);
    }
    return best;
}

int tool_syntax_variant(orc_tool_syntax s, const char *src)
{
    if (!src)
        return TOOL_VARIANT_DEFAULT;
    if (s == ORC_TOOL_SYNTAX_MISTRAL && strstr(src, "[ARGS]"))
        return TOOL_VARIANT_MISTRAL_NAME_ARGS;
    if (s == ORC_TOOL_SYNTAX_FUNCTIONARY && !strstr(src, ">>>") && strstr(src, "<function="))
        return TOOL_VARIANT_FUNCTIONARY_V31;
    if (s == ORC_TOOL_SYNTAX_DEEPSEEK && strstr(src, "```json"))
        return TOOL_VARIANT_DEEPSEEK_R1;
    return TOOL_VARIANT_DEFAULT;
}

const tool_grammar_spec *tool_grammar_for(orc_tool_syntax s, int variant)
{
    /* trigger, at_start, trigger_in_body, from_start, force, closing, end_round */
    static const tool_grammar_spec hermes = {"<tool_call>", false, false, false, NULL, "\n</tool_call>", false};
    static const tool_grammar_spec llama3 = {"{", true, true, false, NULL, "", false};
    static const tool_grammar_spec mistral = {"[TOOL_CALLS]", false, false, false, NULL, "", false};
    static const tool_grammar_spec functionary = {">>>", false, false, true, "", "", false};
    static const tool_grammar_spec functionary31 = {"<function=", false, false, false, NULL, "</function>", false};
    static const tool_grammar_spec granite = {"<|tool_call|>", false, false, false, NULL, "", false};
    static const tool_grammar_spec deepseek = {DS_CALL_BEGIN, false, false, false, DS_CALLS_BEGIN DS_CALL_BEGIN,
                                               DS_CALL_END, false};
    static const tool_grammar_spec deepseek_r1 = {DS_CALL_BEGIN, false, false, false, DS_CALLS_BEGIN DS_CALL_BEGIN,
                                                  "\n```" DS_CALL_END, false};
    static const tool_grammar_spec kimi = {"<|tool_call_begin|>", false, false, false,
                                           "<|tool_calls_section_begin|><|tool_call_begin|>", "<|tool_call_end|>", false};
    static const tool_grammar_spec glm = {"<tool_call>", false, false, false, NULL, "", false};
    static const tool_grammar_spec gpt_oss = {"to=functions.", false, false, false, "<|channel|>commentary to=functions.",
                                              "<|call|>", true};
    static const tool_grammar_spec qwen3_coder = {"<tool_call>", false, false, false, "<tool_call>\n",
                                                  "\n</tool_call>", false};
    switch (s) {
    case ORC_TOOL_SYNTAX_HERMES: return &hermes;
    case ORC_TOOL_SYNTAX_LLAMA3: return &llama3;
    case ORC_TOOL_SYNTAX_MISTRAL: return &mistral;
    case ORC_TOOL_SYNTAX_FUNCTIONARY: return variant == TOOL_VARIANT_FUNCTIONARY_V31 ? &functionary31 : &functionary;
    case ORC_TOOL_SYNTAX_GRANITE: return &granite;
    case ORC_TOOL_SYNTAX_DEEPSEEK: return variant == TOOL_VARIANT_DEEPSEEK_R1 ? &deepseek_r1 : &deepseek;
    case ORC_TOOL_SYNTAX_KIMI: return &kimi;
    case ORC_TOOL_SYNTAX_GLM: return &glm;
    case ORC_TOOL_SYNTAX_GPT_OSS: return &gpt_oss;
    case ORC_TOOL_SYNTAX_QWEN3_CODER: return &qwen3_coder;
    default: return NULL;
    }
}

orc_status orc_tool_calls_parse(orc_tool_syntax syntax, const char *text, char **calls_json, char **content)
{
    if (calls_json)
        *calls_json = NULL;
    if (content)
        *content = NULL;
    if (!text || !calls_json || syntax == ORC_TOOL_SYNTAX_AUTO || (unsigned)syntax > ORC_TOOL_SYNTAX_NONE)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_tool_calls_parse: invalid arguments");
    json_t *calls;
    char err[256];
    if (tool_calls_parse(syntax, text, strlen(text), &calls, content, err, sizeof err))
        return orc_fail(ORC_ERR_FORMAT, "tool call: %s", err);
    *calls_json = json_dumps(calls, JSON_COMPACT);
    json_decref(calls);
    if (!*calls_json) {
        if (content) {
            free(*content);
            *content = NULL;
        }
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    }
    return ORC_OK;
}
