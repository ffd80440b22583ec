/* tool_grammar.c - the grammar that constrains a tool call while the model writes it, for
 * every tool-call syntax: GBNF text built from the tools' JSON Schemas. JSON-object
 * syntaxes (Hermes, Llama 3, Mistral's list, Granite) compile one schema of the call
 * object; the others put each tool's name literally before its arguments' grammar (each
 * schema compiled by json_schema.c, its rules renamed per tool) with the syntax's markers
 * in between; XML-style syntaxes (GLM, Qwen3-Coder) get one rule per parameter: raw text
 * for string parameters (never containing the tags that would end it), JSON for the rest.
 * Rules "root" (the lazy grammar after a trigger) and "call" (a required call) are
 * defined. Used by session.c. */
#include "session.h"

#include "grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DS_SEP "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>"
#define MAX_RAW_LENGTH 10000 /* the largest maxLength of a raw string parameter */

static bool gfail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a ? a : "", b ? b : "");
    return false;
}

static bool is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Appends GBNF text with every rule name prefixed (rule definitions and references;
 * literals, classes, repetition counts and comments are copied as they are). */
static void put_prefixed(grammar_strbuf *o, const char *g, const char *prefix)
{
    const char *p = g;
    while (*p) {
        const char *q = p;
        if (*p == '#') {
            while (*q && *q != '\n')
                q++;
        } else if (*p == '"' || *p == '[') {
            char close = *p == '"' ? '"' : ']';
            q++;
            while (*q && *q != close)
                q += q[0] == '\\' && q[1] ? 2 : 1;
            if (*q)
                q++;
        } else if (*p == '{') {
            while (*q && *q != '}')
                q++;
            if (*q)
                q++;
        } else if (is_word(*p)) {
            while (is_word(*q))
                q++;
            gsb_puts(o, prefix);
        } else {
            q++;
        }
        gsb_put(o, p, (size_t)(q - p));
        p = q;
    }
}

/* A GBNF literal for raw bytes. */
static void put_lit(grammar_strbuf *o, const char *s, size_t n)
{
    gsb_puts(o, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            gsb_printf(o, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7F)
            gsb_printf(o, "\\x%02X", ch);
        else
            gsb_put(o, (const char *)&ch, 1);
    }
    gsb_puts(o, "\"");
}

static void put_lits(grammar_strbuf *o, const char *s)
{
    put_lit(o, s, strlen(s));
}

/* The arguments of a JSON Schema compiled as rules PREFIX-root, ...; the root's $defs and
 * definitions go along when only a sub-schema is compiled (so $refs still resolve). */
static bool put_schema(grammar_strbuf *o, const json_t *schema, const json_t *root, const char *prefix,
                       const char *what, char *err, size_t errlen)
{
    json_t *s = json_is_object(schema) ? json_copy((json_t *)schema) : json_incref((json_t *)schema);
    if (json_is_object(s) && root && root != schema) {
        static const char *const defs[] = {"$defs", "definitions"};
        for (int k = 0; k < 2; k++) {
            json_t *d = json_object_get(root, defs[k]);
            if (d && !json_object_get(s, defs[k]))
                json_object_set(s, defs[k], d);
        }
    }
    char *txt = s ? json_dumps(s, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(s);
    if (!txt)
        return gfail(err, errlen, "out of memory%s%s", NULL, NULL);
    char e[384] = "";
    json_schema_opts jo = {.pretty = false};
    char *g = json_schema_to_gbnf(txt, strlen(txt), &jo, e, sizeof e);
    free(txt);
    if (!g)
        return gfail(err, errlen, "%s: %s", what, e);
    put_prefixed(o, g, prefix);
    free(g);
    if (o->n && o->p[o->n - 1] != '\n')
        gsb_puts(o, "\n");
    return true;
}

/* ---- raw text values of XML-style syntaxes ---- */

/* Rules NAME-K: any text (no NUL) that contains none of the words, as the states of the
 * automaton that tracks how much of a word the text ends with (state 0: none). The text
 * may stop in any state; the words are ASCII. */
static void put_avoiding(grammar_strbuf *o, const char *name, const char *const *words, int n_words)
{
    /* states: the distinct proper prefixes of the words, "" first */
    char states[64][32];
    int n_states = 1;
    states[0][0] = 0;
    char alphabet[64] = "";
    for (int w = 0; w < n_words; w++) {
        size_t wl = strlen(words[w]);
        for (size_t k = 0; k < wl; k++) {
            if (!strchr(alphabet, words[w][k])) {
                size_t al = strlen(alphabet);
                alphabet[al] = words[w][k];
                alphabet[al + 1] = 0;
            }
            if (k == 0)
                continue;
            bool seen = false;
            for (int s = 0; s < n_states && !seen; s++)
                seen = strlen(states[s]) == k && !memcmp(states[s], words[w], k);
            if (!seen && n_states < 64) {
                memcpy(states[n_states], words[w], k);
                states[n_states++][k] = 0;
            }
        }
    }
    for (int s = 0; s < n_states; s++) {
        gsb_printf(o, "%s-%d ::= (", name, s);
        for (const char *c = alphabet; *c; c++) {
            char t[40];
            size_t tl = strlen(states[s]);
            memcpy(t, states[s], tl);
            t[tl++] = *c;
            t[tl] = 0;
            /* a word ending here: this character is not allowed */
            bool banned = false;
            for (int w = 0; w < n_words && !banned; w++) {
                size_t wl = strlen(words[w]);
                banned = wl <= tl && !memcmp(t + tl - wl, words[w], wl);
            }
            if (banned)
                continue;
            /* the longest suffix of t that is a state */
            int next = 0;
            size_t best = 0;
            for (int k = 1; k < n_states; k++) {
                size_t kl = strlen(states[k]);
                if (kl > best && kl <= tl && !memcmp(t + tl - kl, states[k], kl)) {
                    best = kl;
                    next = k;
                }
            }
            put_lit(o, c, 1);
            gsb_printf(o, " %s-%d | ", name, next);
        }
        gsb_puts(o, "[^\\x00");
        for (const char *c = alphabet; *c; c++) {
            if (*c == ']' || *c == '\\' || *c == '^' || *c == '-')
                gsb_puts(o, "\\");
            gsb_put(o, c, 1);
        }
        gsb_printf(o, "] %s-0)?\n", name);
    }
}

static bool all_strings(const json_t *arr)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_string(v))
            return false;
    }
    return true;
}

bool tool_xml_raw_string(const json_t *schema)
{
    if (!json_is_object(schema))
        return false;
    json_t *type = json_object_get(schema, "type");
    if (type)
        return json_is_string(type) && !strcmp(json_string_value(type), "string");
    json_t *c = json_object_get(schema, "const");
    if (c)
        return json_is_string(c);
    return all_strings(json_object_get(schema, "enum"));
}

/* A string parameter written raw: its enum/const literally, or text without the words
 * (length limits: any text without '<'). */
static bool put_raw_value(grammar_strbuf *o, const char *rule, const json_t *schema, const char *key,
                          const char *const *words, int n_words, char *err, size_t errlen)
{
    static const char *const ignored[] = {"type", "description", "title", "default", "examples", "$comment",
                                          "deprecated", "readOnly", "writeOnly", "enum", "const", "minLength",
                                          "maxLength", NULL};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)schema, k, v) {
        bool known = false;
        for (int i = 0; ignored[i] && !known; i++)
            known = !strcmp(k, ignored[i]);
        if (!known)
            return gfail(err, errlen, "parameter '%s': '%s' cannot constrain a value written as raw text", key, k);
    }
    json_t *c = json_object_get(schema, "const");
    json_t *en = json_object_get(schema, "enum");
    if (c || en) {
        json_t *vals = c ? json_pack("[O]", c) : json_incref(en);
        if (!all_strings(vals)) {
            json_decref(vals);
            return gfail(err, errlen, "parameter '%s': a string parameter with non-string enum values%s", key, NULL);
        }
        gsb_printf(o, "%s ::= ", rule);
        size_t i;
        json_t *x;
        json_array_foreach(vals, i, x) {
            const char *s = json_string_value(x);
            for (int w = 0; w < n_words; w++)
                if (strstr(s, words[w])) {
                    json_decref(vals);
                    return gfail(err, errlen, "parameter '%s': the value '%s' holds a closing tag", key, s);
                }
            if (i)
                gsb_puts(o, " | ");
            put_lit(o, s, json_string_length(x));
        }
        gsb_puts(o, "\n");
        json_decref(vals);
        return true;
    }
    json_t *mn = json_object_get(schema, "minLength"), *mx = json_object_get(schema, "maxLength");
    if (mn || mx) {
        json_int_t lo = json_is_integer(mn) ? json_integer_value(mn) : 0;
        json_int_t hi = json_is_integer(mx) ? json_integer_value(mx) : -1;
        if ((mn && (!json_is_integer(mn) || lo < 0)) || (mx && (!json_is_integer(mx) || hi < lo)) ||
            lo > MAX_RAW_LENGTH || hi > MAX_RAW_LENGTH)
            return gfail(err, errlen, "parameter '%s': minLength/maxLength must be integers in [0, 10000]%s", key, NULL);
        if (hi >= 0)
            gsb_printf(o, "%s ::= [^<\\x00]{%lld,%lld}\n", rule, (long long)lo, (long long)hi);
        else
            gsb_printf(o, "%s ::= [^<\\x00]{%lld,}\n", rule, (long long)lo);
        return true;
    }
    char name[128];
    size_t rl = strlen(rule) < sizeof name - 5 ? strlen(rule) : sizeof name - 5;
    memcpy(name, rule, rl);
    memcpy(name + rl, "-raw", 5);
    gsb_printf(o, "%s ::= %s-0\n", rule, name);
    put_avoiding(o, name, words, n_words);
    return true;
}

/* ---- XML-style parameters ---- */

/* GBNF fragments around a parameter's name and value. */
typedef struct {
    const char *key_open, *key_close, *value_close;
    const char *const *words; /* what a raw value never contains */
    int n_words;
} xml_form;

static const char *const GLM_WORDS[] = {"</arg_value>", "</tool_call>"};
static const xml_form GLM_FORM = {"\"<arg_key>\"", "\"</arg_key>\" \"\\n\"? \"<arg_value>\"",
                                  "\"</arg_value>\" \"\\n\"?", GLM_WORDS, 2};
static const char *const QWEN_WORDS[] = {"</parameter>", "<parameter=", "</function>", "</tool_call>"};
static const xml_form QWEN_FORM = {"\"<parameter=\"", "\">\\n\"", "\"\\n</parameter>\\n\"", QWEN_WORDS, 4};

/* Rules PREFIX-args: the parameters of one tool in the order of its schema's
 * "properties", required ones always, the others optionally. */
static bool put_xml_args(grammar_strbuf *o, const json_t *params, const char *prefix, const xml_form *f,
                         const char *tool, char *err, size_t errlen)
{
    static const char *const allowed[] = {"type", "properties", "required", "additionalProperties", "description",
                                          "title", "$defs", "definitions", "$schema", "$id", "$comment",
                                          "examples", "default", NULL};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)params, k, v) {
        bool ok = false;
        for (int i = 0; allowed[i] && !ok; i++)
            ok = !strcmp(k, allowed[i]);
        if (!ok)
            return gfail(err, errlen, "tool '%s': '%s' in the parameters schema has no XML-style form", tool, k);
    }
    json_t *type = json_object_get(params, "type");
    if (type && !(json_is_string(type) && !strcmp(json_string_value(type), "object")))
        return gfail(err, errlen, "tool '%s': the parameters schema must be of type object%s", tool, NULL);
    json_t *props = json_object_get(params, "properties");
    json_t *req = json_object_get(params, "required");
    if ((props && !json_is_object(props)) || (req && !json_is_array(req)))
        return gfail(err, errlen, "tool '%s': malformed properties or required%s", tool, NULL);
    /* the parameters: declared ones in order, then required ones that are not declared */
    json_t *keys = json_array();
    json_object_foreach(props, k, v) json_array_append_new(keys, json_string(k));
    size_t i;
    json_array_foreach(req, i, v) {
        if (!json_is_string(v))
            continue;
        if (!json_object_get(props, json_string_value(v)))
            json_array_append(keys, v);
    }
    grammar_strbuf seq = {0};
    bool ok = true;
    json_array_foreach(keys, i, v) {
        const char *key = json_string_value(v);
        if (!key[0] || strlen(key) > 200 || strpbrk(key, "<>\n")) {
            ok = gfail(err, errlen, "tool '%s': the parameter name '%s' cannot be written in XML-style tags", tool, key);
            break;
        }
        bool required = false;
        size_t j;
        json_t *r;
        json_array_foreach(req, j, r) {
            if (json_is_string(r) && !strcmp(json_string_value(r), key))
                required = true;
        }
        json_t *ps = json_object_get(props, key);
        char rule[96];
        snprintf(rule, sizeof rule, "%sv%zu", prefix, i);
        if (ps && tool_xml_raw_string(ps)) {
            ok = put_raw_value(o, rule, ps, key, f->words, f->n_words, err, errlen);
        } else {
            char pp[96];
            snprintf(pp, sizeof pp, "%sp%zu-", prefix, i);
            json_t *any = json_object();
            ok = put_schema(o, ps ? ps : any, params, pp, key, err, errlen);
            json_decref(any);
            if (ok)
                gsb_printf(o, "%s ::= %sroot\n", rule, pp);
        }
        if (!ok)
            break;
        gsb_printf(o, "%sa%zu ::= ", prefix, i);
        gsb_printf(o, "%s ", f->key_open);
        put_lits(o, key);
        gsb_printf(o, " %s %s %s\n", f->key_close, rule, f->value_close);
        gsb_printf(&seq, " %sa%zu%s", prefix, i, required ? "" : "?");
    }
    json_decref(keys);
    if (ok)
        gsb_printf(o, "%sargs ::= \"\"%s\n", prefix, seq.p ? seq.p : "");
    free(seq.p);
    return ok;
}

/* ---- the grammar of each syntax ---- */

static const json_t *tool_fn(const json_t *t)
{
    const json_t *fn = json_object_get(t, "function");
    return fn ? fn : t;
}

/* JSON-object syntaxes: {"name": const, ARGS_KEY: schema} per tool (an array of up to 4
 * calls when array). */
static char *json_call_grammar(const json_t *tools, const char *args_key, bool array, char *err, size_t errlen)
{
    json_t *any = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const json_t *fn = tool_fn(t);
        json_t *o = json_pack("{s:s, s:{s:{s:s}, s:O}, s:[s, s], s:b}", "type", "object", "properties", "name",
                              "const", json_string_value(json_object_get(fn, "name")), args_key,
                              json_object_get(fn, "parameters"), "required", "name", args_key,
                              "additionalProperties", 0);
        json_array_append_new(any, o);
    }
    json_t *call = json_array_size(any) == 1 ? json_incref(json_array_get(any, 0)) : json_pack("{s:O}", "anyOf", any);
    json_decref(any);
    json_t *schema = array ? json_pack("{s:s, s:o, s:i, s:i}", "type", "array", "items", call, "minItems", 1,
                                       "maxItems", 4)
                           : call;
    grammar_strbuf o = {0};
    bool ok = schema && put_schema(&o, schema, NULL, "c-", "tool calls", err, errlen);
    json_decref(schema);
    if (ok)
        gsb_puts(&o, "root ::= c-root\ncall ::= c-root\n");
    if (!ok || o.oom) {
        if (ok)
            gfail(err, errlen, "out of memory%s%s", NULL, NULL);
        free(o.p);
        return NULL;
    }
    return o.p;
}

char *tool_grammar_gbnf(orc_tool_syntax syntax, int variant, const json_t *tools, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (!json_is_array(tools) || json_array_size(tools) == 0) {
        gfail(err, errlen, "no tools%s%s", NULL, NULL);
        return NULL;
    }
    switch (syntax) {
    case ORC_TOOL_SYNTAX_HERMES: return json_call_grammar(tools, "arguments", false, err, errlen);
    case ORC_TOOL_SYNTAX_LLAMA3: return json_call_grammar(tools, "parameters", false, err, errlen);
    case ORC_TOOL_SYNTAX_GRANITE: return json_call_grammar(tools, "arguments", true, err, errlen);
    case ORC_TOOL_SYNTAX_MISTRAL:
        if (variant != TOOL_VARIANT_MISTRAL_NAME_ARGS)
            return json_call_grammar(tools, "arguments", true, err, errlen);
        break;
    case ORC_TOOL_SYNTAX_FUNCTIONARY:
    case ORC_TOOL_SYNTAX_DEEPSEEK:
    case ORC_TOOL_SYNTAX_KIMI:
    case ORC_TOOL_SYNTAX_GLM:
    case ORC_TOOL_SYNTAX_GPT_OSS:
    case ORC_TOOL_SYNTAX_QWEN3_CODER: break;
    default: gfail(err, errlen, "the syntax '%s' has no tool grammar%s", tool_syntax_name(syntax), NULL); return NULL;
    }
    /* name + markers + arguments, one alternative per tool */
    grammar_strbuf o = {0};
    const xml_form *xf = syntax == ORC_TOOL_SYNTAX_GLM ? &GLM_FORM : syntax == ORC_TOOL_SYNTAX_QWEN3_CODER ? &QWEN_FORM : NULL;
    size_t i;
    json_t *t;
    bool ok = true;
    json_array_foreach(tools, i, t) {
        const json_t *fn = tool_fn(t);
        const char *name = json_string_value(json_object_get(fn, "name"));
        const json_t *params = json_object_get(fn, "parameters");
        json_t *empty = json_object();
        if (!params)
            params = empty;
        char prefix[32];
        snprintf(prefix, sizeof prefix, "t%zu-", i);
        if (!name)
            ok = gfail(err, errlen, "a tool without a name%s%s", NULL, NULL);
        else if (xf)
            ok = put_xml_args(&o, params, prefix, xf, name, err, errlen);
        else
            ok = put_schema(&o, params, NULL, prefix, name, err, errlen);
        json_decref(empty);
        if (!ok)
            break;
        gsb_printf(&o, "t%zu-call ::= ", i);
        put_lits(&o, name);
        switch (syntax) {
        case ORC_TOOL_SYNTAX_MISTRAL: gsb_printf(&o, " \"[ARGS]\" t%zu-root\n", i); break;
        case ORC_TOOL_SYNTAX_FUNCTIONARY:
            gsb_printf(&o, " \"%s\" t%zu-root\n", variant == TOOL_VARIANT_FUNCTIONARY_V31 ? ">" : "\\n", i);
            break;
        case ORC_TOOL_SYNTAX_DEEPSEEK:
            if (variant == TOOL_VARIANT_DEEPSEEK_R1)
                gsb_printf(&o, " \"\\n```json\\n\" t%zu-root\n", i);
            else
                gsb_printf(&o, " \"%s\" t%zu-root\n", DS_SEP, i);
            break;
        case ORC_TOOL_SYNTAX_KIMI: gsb_printf(&o, " \":\" [0-9]{1,3} \"<|tool_call_argument_begin|>\" t%zu-root\n", i); break;
        case ORC_TOOL_SYNTAX_GPT_OSS: gsb_printf(&o, " oss-header \"<|message|>\" t%zu-root\n", i); break;
        case ORC_TOOL_SYNTAX_GLM: gsb_printf(&o, " \"\\n\"? t%zu-args \"</tool_call>\"\n", i); break;
        case ORC_TOOL_SYNTAX_QWEN3_CODER: gsb_printf(&o, " \">\\n\" t%zu-args \"</function>\"\n", i); break;
        default: break;
        }
    }
    if (ok) {
        gsb_puts(&o, "calls ::= ");
        for (size_t k = 0; k < json_array_size(tools); k++)
            gsb_printf(&o, "%st%zu-call", k ? " | " : "", k);
        gsb_puts(&o, "\n");
        switch (syntax) {
        case ORC_TOOL_SYNTAX_FUNCTIONARY:
            if (variant == TOOL_VARIANT_FUNCTIONARY_V31) {
                gsb_puts(&o, "call ::= calls\nroot ::= calls\n");
            } else {
                /* the recipient line: a tool, or "all" for text to the user */
                gsb_puts(&o, "call ::= calls\nroot ::= \"all\\n\" | calls\n");
            }
            break;
        case ORC_TOOL_SYNTAX_DEEPSEEK:
            if (variant == TOOL_VARIANT_DEEPSEEK_R1)
                gsb_printf(&o, "call ::= \"function%s\" calls\nroot ::= call\n", DS_SEP);
            else
                gsb_puts(&o, "call ::= calls\nroot ::= call\n");
            break;
        case ORC_TOOL_SYNTAX_KIMI: gsb_puts(&o, "call ::= \"functions.\" calls\nroot ::= call\n"); break;
        case ORC_TOOL_SYNTAX_GPT_OSS:
            /* the header after the recipient, as the model writes it or as the template does */
            gsb_puts(&o, "oss-header ::= (\" <|constrain|>json\" | \"<|channel|>commentary\" (\" json\" | \" <|constrain|>json\")?)?\n"
                         "call ::= calls\nroot ::= call\n");
            break;
        case ORC_TOOL_SYNTAX_QWEN3_CODER: gsb_puts(&o, "call ::= \"\\n\"? \"<function=\" calls\nroot ::= call\n"); break;
        default: gsb_puts(&o, "call ::= calls\nroot ::= call\n"); break;
        }
    }
    if (ok && o.oom)
        ok = gfail(err, errlen, "out of memory%s%s", NULL, NULL);
    if (!ok) {
        free(o.p);
        return NULL;
    }
    return o.p;
}
