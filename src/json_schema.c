/* json_schema.c - JSON Schema (the draft 2020-12 subset used in practice) to GBNF text,
 * then to a grammar through gbnf.c. Every keyword either constrains the grammar exactly,
 * narrows it to a valid subset (documented in docs/guided-generation.md), or is reported
 * as unsupported with the JSON pointer of the keyword; nothing is silently ignored. */
#include "grammar.h"

#include <jansson.h>
#include <math.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JS_MAX_DEPTH 64
#define JS_MAX_COUNT 1000                 /* largest {m,n} the compiler writes */
#define JS_MAX_OUTPUT (16u << 20)         /* GBNF text */
#define JS_UNBOUNDED 999999999999999999LL /* integers stay within 18 digits */

typedef struct {
    char *ptr;  /* the $ref target pointer ("#/...") */
    char *name; /* its rule */
} js_ref;

typedef struct {
    json_t *root;
    bool pretty;
    const char *comma, *colon; /* GBNF literals */
    grammar_strbuf out;
    char *err;
    size_t errlen;
    bool failed;
    unsigned counter;
    int depth;
    js_ref *refs;
    size_t n_refs, cap_refs;
    unsigned prims;    /* emitted primitive rules */
    json_t *scratch;   /* merged schemas kept alive until the end */
} jsc;

enum {
    P_VALUE = 1 << 0, P_STRING = 1 << 1, P_CHAR = 1 << 2, P_INT = 1 << 3, P_NUMBER = 1 << 4,
    P_FRAC = 1 << 5, P_DATE = 1 << 6, P_TIME = 1 << 7, P_HOST = 1 << 8, P_IPV4 = 1 << 9,
    P_IPV6 = 1 << 10, P_UUID = 1 << 11, P_EMAIL = 1 << 12, P_URI = 1 << 13
};

static bool jfail(jsc *c, const char *path, const char *fmt, const char *arg)
{
    if (c->failed)
        return false;
    c->failed = true;
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    snprintf(c->err, c->errlen, "%s: %s", path[0] ? path : "/", msg);
    return false;
}

/* path + "/" + escaped key, into dst (truncated quietly: only used in messages) */
static void path_join(char *dst, size_t cap, const char *path, const char *key)
{
    size_t n = (size_t)snprintf(dst, cap, "%s/", path);
    for (const char *k = key; *k && n + 3 < cap; k++) {
        if (*k == '~') {
            dst[n++] = '~';
            dst[n++] = '0';
        } else if (*k == '/') {
            dst[n++] = '~';
            dst[n++] = '1';
        } else {
            dst[n++] = *k;
        }
    }
    if (n >= cap)
        n = cap - 1;
    dst[n] = 0;
}

static void path_idx(char *dst, size_t cap, const char *path, const char *key, size_t i)
{
    snprintf(dst, cap, "%s/%s/%zu", path, key, i);
}

static void new_name(jsc *c, char *dst, size_t cap, const char *hint)
{
    char h[40];
    size_t n = 0;
    for (const char *p = hint; *p && n < sizeof h - 1; p++) {
        char ch = *p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-')
            h[n++] = ch;
        else if (ch == '_' || ch == ' ')
            h[n++] = '-';
    }
    h[n] = 0;
    snprintf(dst, cap, "%s%s%u", h[0] ? h : "s", h[0] ? "-" : "", ++c->counter);
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

/* A JSON value written exactly as the output spells it. */
static bool put_json_lit(jsc *c, grammar_strbuf *o, json_t *v, const char *path)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | (c->pretty ? 0 : JSON_COMPACT));
    if (!s)
        return jfail(c, path, "cannot serialise value%s", "");
    put_lit(o, s, strlen(s));
    free(s);
    return true;
}

/* ---- primitive rules ---- */

static const char *prim(jsc *c, unsigned which)
{
    grammar_strbuf *o = &c->out;
    if (!(c->prims & which)) {
        c->prims |= which;
        switch (which) {
        case P_CHAR:
            /* one code point: unescaped, or an escape; \u escapes exclude NUL and
             * surrogates so that every json-char is exactly one code point */
            gsb_puts(o, "json-char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | "
                        "\"u\" json-uesc)\n"
                        "json-uesc ::= \"00\" (\"0\" [1-9a-fA-F] | [1-9a-fA-F] [0-9a-fA-F]) | "
                        "\"0\" [1-9a-fA-F] [0-9a-fA-F]{2} | [1-9a-cA-CeEfF] [0-9a-fA-F]{3} | "
                        "[dD] [0-7] [0-9a-fA-F]{2}\n");
            break;
        case P_STRING:
            prim(c, P_CHAR);
            gsb_puts(o, "json-string ::= \"\\\"\" json-char* \"\\\"\"\n");
            break;
        case P_INT:
            gsb_puts(o, "json-int ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n");
            break;
        case P_FRAC:
            gsb_puts(o, "json-frac-nz ::= [0-9]{0,5} [1-9]\n");
            break;
        case P_NUMBER:
            prim(c, P_INT);
            gsb_puts(o, "json-number ::= json-int (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?\n");
            break;
        case P_VALUE:
            prim(c, P_STRING);
            prim(c, P_NUMBER);
            gsb_printf(o, "json-value ::= json-object | json-array | json-string | json-number | "
                          "\"true\" | \"false\" | \"null\"\n"
                          "json-object ::= \"{\" (json-string %s json-value (%s json-string %s "
                          "json-value)*)? \"}\"\n"
                          "json-array ::= \"[\" (json-value (%s json-value)*)? \"]\"\n",
                       c->colon, c->comma, c->colon, c->comma);
            break;
        case P_DATE:
            gsb_puts(o,
                "fmt-date ::= fmt-year \"-\" fmt-md | fmt-leap \"-02-29\"\n"
                "fmt-year ::= [1-9] [0-9]{3} | \"0\" [1-9] [0-9]{2} | \"00\" [1-9] [0-9] | \"000\" [1-9]\n"
                "fmt-leap ::= [0-9]{2} (\"0\" [48] | [2468] [048] | [13579] [26]) | "
                "(\"0\" [48] | [2468] [048] | [13579] [26]) \"00\"\n"
                "fmt-md ::= (\"01\" | \"03\" | \"05\" | \"07\" | \"08\" | \"10\" | \"12\") \"-\" "
                "(\"0\" [1-9] | [12] [0-9] | \"3\" [01]) | (\"04\" | \"06\" | \"09\" | \"11\") \"-\" "
                "(\"0\" [1-9] | [12] [0-9] | \"30\") | \"02-\" (\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8])\n");
            break;
        case P_TIME:
            gsb_puts(o, "fmt-time ::= ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] "
                        "(\".\" [0-9]{1,6})? (\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])\n");
            break;
        case P_HOST:
            gsb_puts(o, "fmt-label ::= [a-zA-Z0-9] ([a-zA-Z0-9-]{0,60} [a-zA-Z0-9])?\n"
                        "fmt-hostname ::= fmt-label (\".\" fmt-label){0,3}\n");
            break;
        case P_IPV4:
            gsb_puts(o, "fmt-octet ::= \"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9]{2} | [1-9] [0-9] | [0-9]\n"
                        "fmt-ipv4 ::= fmt-octet \".\" fmt-octet \".\" fmt-octet \".\" fmt-octet\n");
            break;
        case P_IPV6:
            gsb_puts(o,
                "fmt-h16 ::= [0-9a-fA-F]{1,4}\n"
                "fmt-ipv6 ::= (fmt-h16 \":\"){6} fmt-ls32 | \"::\" (fmt-h16 \":\"){5} fmt-ls32 | "
                "fmt-h16? \"::\" (fmt-h16 \":\"){4} fmt-ls32 | "
                "((fmt-h16 \":\"){0,1} fmt-h16)? \"::\" (fmt-h16 \":\"){3} fmt-ls32 | "
                "((fmt-h16 \":\"){0,2} fmt-h16)? \"::\" (fmt-h16 \":\"){2} fmt-ls32 | "
                "((fmt-h16 \":\"){0,3} fmt-h16)? \"::\" fmt-h16 \":\" fmt-ls32 | "
                "((fmt-h16 \":\"){0,4} fmt-h16)? \"::\" fmt-ls32 | "
                "((fmt-h16 \":\"){0,5} fmt-h16)? \"::\" fmt-h16 | "
                "((fmt-h16 \":\"){0,6} fmt-h16)? \"::\"\n"
                "fmt-ls32 ::= fmt-h16 \":\" fmt-h16\n");
            break;
        case P_UUID:
            gsb_puts(o, "fmt-uuid ::= [0-9a-fA-F]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" "
                        "[0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{12}\n");
            break;
        case P_EMAIL:
            prim(c, P_HOST);
            gsb_puts(o, "fmt-email ::= [a-zA-Z0-9_+-]{1,32} (\".\" [a-zA-Z0-9_+-]{1,32}){0,3} \"@\" "
                        "fmt-label (\".\" fmt-label){1,3}\n");
            break;
        case P_URI:
            prim(c, P_HOST);
            gsb_puts(o, "fmt-uri ::= [a-zA-Z] [a-zA-Z0-9+.-]{0,15} \"://\" fmt-hostname "
                        "(\"/\" [a-zA-Z0-9._~!$&'()*+,;=:@-]*)*\n");
            break;
        }
    }
    switch (which) {
    case P_VALUE: return "json-value";
    case P_STRING: return "json-string";
    case P_CHAR: return "json-char";
    case P_INT: return "json-int";
    case P_NUMBER: return "json-number";
    case P_FRAC: return "json-frac-nz";
    case P_DATE: return "fmt-date";
    case P_TIME: return "fmt-time";
    case P_HOST: return "fmt-hostname";
    case P_IPV4: return "fmt-ipv4";
    case P_IPV6: return "fmt-ipv6";
    case P_UUID: return "fmt-uuid";
    case P_EMAIL: return "fmt-email";
    case P_URI: return "fmt-uri";
    }
    return "";
}

/* ---- integer ranges as exact digit grammars ---- */

/* Same-length decimal strings x <= y. */
static void range_same(grammar_strbuf *o, const char *x, const char *y, size_t n)
{
    if (n == 0) {
        gsb_puts(o, "\"\"");
        return;
    }
    if (x[0] == y[0]) {
        gsb_printf(o, "\"%c\" ", x[0]);
        range_same(o, x + 1, y + 1, n - 1);
        return;
    }
    bool x0 = true, y9 = true;
    for (size_t i = 1; i < n; i++) {
        x0 &= x[i] == '0';
        y9 &= y[i] == '9';
    }
    char lo = x[0], hi = y[0];
    gsb_puts(o, "(");
    bool first = true;
    if (!x0) {
        char nines[24];
        memset(nines, '9', n - 1);
        gsb_printf(o, "\"%c\" (", lo);
        range_same(o, x + 1, nines, n - 1);
        gsb_puts(o, ")");
        lo++;
        first = false;
    }
    char mid_hi = y9 ? hi : (char)(hi - 1);
    if (lo <= mid_hi) {
        if (!first)
            gsb_puts(o, " | ");
        gsb_printf(o, "[%c-%c]", lo, mid_hi);
        if (n > 1)
            gsb_printf(o, " [0-9]{%zu}", n - 1);
        first = false;
    }
    if (!y9) {
        char zeros[24];
        memset(zeros, '0', n - 1);
        if (!first)
            gsb_puts(o, " | ");
        gsb_printf(o, "\"%c\" (", hi);
        range_same(o, zeros, y + 1, n - 1);
        gsb_puts(o, ")");
    }
    gsb_puts(o, ")");
}

/* 0 <= a <= b */
static void range_pos(grammar_strbuf *o, long long a, long long b)
{
    gsb_puts(o, "(");
    bool first = true;
    long long p10 = 1;
    for (int len = 1; len <= 18; len++, p10 *= 10) {
        long long lo = len == 1 ? 0 : p10, hi = p10 * 10 - 1;
        if (lo < a)
            lo = a;
        if (hi > b)
            hi = b;
        if (lo > hi)
            continue;
        char x[24], y[24];
        snprintf(x, sizeof x, "%lld", lo);
        snprintf(y, sizeof y, "%lld", hi);
        if (!first)
            gsb_puts(o, " | ");
        first = false;
        range_same(o, x, y, strlen(x));
    }
    gsb_puts(o, ")");
}

/* Integers in [lo, hi] (both within +-JS_UNBOUNDED), no leading zeros, no "-0". */
static void range_int(grammar_strbuf *o, long long lo, long long hi)
{
    gsb_puts(o, "(");
    bool first = true;
    if (lo < 0) {
        long long nh = hi < -1 ? hi : -1;
        gsb_puts(o, "\"-\" ");
        range_pos(o, -nh, -lo);
        first = false;
    }
    if (hi >= 0) {
        if (!first)
            gsb_puts(o, " | ");
        range_pos(o, lo > 0 ? lo : 0, hi);
    }
    gsb_puts(o, ")");
}

/* ---- schema resolution and merging ---- */

static json_t *resolve_ref(jsc *c, const char *ref, const char *path)
{
    if (ref[0] != '#') {
        jfail(c, path, "only local references (#/...) are supported, not '%s'", ref);
        return NULL;
    }
    json_t *cur = c->root;
    const char *p = ref + 1;
    if (*p && *p != '/') {
        jfail(c, path, "anchor references ('%s') are not supported", ref);
        return NULL;
    }
    while (*p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        while (*p && *p != '/') {
            char ch = *p++;
            if (ch == '~' && (*p == '0' || *p == '1'))
                ch = *p++ == '0' ? '~' : '/';
            else if (ch == '%' && p[0] && p[1]) {
                unsigned v;
                if (sscanf(p, "%2x", &v) == 1) {
                    ch = (char)v;
                    p += 2;
                }
            }
            if (n < sizeof tok - 1)
                tok[n++] = ch;
        }
        tok[n] = 0;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            char *end;
            unsigned long i = strtoul(tok, &end, 10);
            cur = *end || !n ? NULL : json_array_get(cur, i);
        } else {
            cur = NULL;
        }
        if (!cur) {
            jfail(c, path, "reference '%s' does not resolve", ref);
            return NULL;
        }
    }
    return cur;
}

static bool is_annotation(const char *k)
{
    static const char *const a[] = {"title", "description", "$schema", "$id", "$comment",
                                    "default", "examples", "deprecated", "readOnly",
                                    "writeOnly", "$defs", "definitions", "contentEncoding",
                                    "contentMediaType", NULL};
    for (int i = 0; a[i]; i++)
        if (strcmp(k, a[i]) == 0)
            return true;
    return false;
}

static bool json_num(json_t *v, double *out)
{
    if (!json_is_number(v))
        return false;
    *out = json_number_value(v);
    return true;
}

static json_t *keep(jsc *c, json_t *v)
{
    if (v)
        json_array_append_new(c->scratch, v);
    return v;
}

static json_t *merge(jsc *c, json_t *a, json_t *b, const char *path, int depth);

/* Resolve a schema that is (or starts with) a $ref, and flatten its allOf, into a plain
 * object schema (borrowed or kept in scratch). */
static json_t *flatten(jsc *c, json_t *s, const char *path, int depth)
{
    if (depth > JS_MAX_DEPTH) {
        jfail(c, path, "schema nested too deeply (limit %s)", "64");
        return NULL;
    }
    if (json_is_true(s))
        return keep(c, json_object());
    if (!json_is_object(s)) {
        jfail(c, path, "a schema must be an object or true%s", "");
        return NULL;
    }
    json_t *ref = json_object_get(s, "$ref");
    json_t *all = json_object_get(s, "allOf");
    if (!ref && !all)
        return s;
    json_t *rest = keep(c, json_copy(s));
    if (!rest) {
        jfail(c, path, "out of memory%s", "");
        return NULL;
    }
    json_object_del(rest, "$ref");
    json_object_del(rest, "allOf");
    json_t *acc = rest;
    if (ref) {
        if (!json_is_string(ref)) {
            jfail(c, path, "$ref must be a string%s", "");
            return NULL;
        }
        json_t *t = resolve_ref(c, json_string_value(ref), path);
        if (!t || !(t = flatten(c, t, path, depth + 1)) || !(acc = merge(c, acc, t, path, depth)))
            return NULL;
    }
    if (all) {
        if (!json_is_array(all) || json_array_size(all) == 0) {
            jfail(c, path, "allOf must be a non-empty array%s", "");
            return NULL;
        }
        size_t i;
        json_t *x;
        json_array_foreach(all, i, x) {
            char p2[512];
            path_idx(p2, sizeof p2, path, "allOf", i);
            json_t *f = flatten(c, x, p2, depth + 1);
            if (!f || !(acc = merge(c, acc, f, p2, depth)))
                return NULL;
        }
    }
    return acc;
}

static json_t *types_of(json_t *t)
{
    json_t *a = json_array();
    if (json_is_string(t))
        json_array_append(a, t);
    else if (json_is_array(t))
        json_array_extend(a, t);
    return a;
}

/* allOf of two flattened object schemas as one schema. */
static json_t *merge(jsc *c, json_t *a, json_t *b, const char *path, int depth)
{
    if (depth > JS_MAX_DEPTH) {
        jfail(c, path, "schema nested too deeply (limit %s)", "64");
        return NULL;
    }
    json_t *m = keep(c, json_copy(a));
    if (!m) {
        jfail(c, path, "out of memory%s", "");
        return NULL;
    }
    const char *k;
    json_t *bv;
    json_object_foreach(b, k, bv) {
        json_t *av = json_object_get(m, k);
        if (is_annotation(k) && strcmp(k, "$defs") && strcmp(k, "definitions"))
            continue;
        if (!av) {
            json_object_set(m, k, bv);
            continue;
        }
        if (json_equal(av, bv))
            continue;
        double x, y;
        if (!strcmp(k, "minimum") || !strcmp(k, "minLength") || !strcmp(k, "minItems") ||
            !strcmp(k, "minProperties") ||
            (!strcmp(k, "exclusiveMinimum") && json_is_number(av) && json_is_number(bv))) {
            if (json_num(av, &x) && json_num(bv, &y)) {
                json_object_set(m, k, y > x ? bv : av);
                continue;
            }
        } else if (!strcmp(k, "maximum") || !strcmp(k, "maxLength") || !strcmp(k, "maxItems") ||
                   !strcmp(k, "maxProperties") ||
                   (!strcmp(k, "exclusiveMaximum") && json_is_number(av) && json_is_number(bv))) {
            if (json_num(av, &x) && json_num(bv, &y)) {
                json_object_set(m, k, y < x ? bv : av);
                continue;
            }
        } else if (!strcmp(k, "type")) {
            json_t *ta = types_of(av), *tb = types_of(bv), *r = json_array();
            size_t i, j;
            json_t *u, *w;
            json_array_foreach(ta, i, u) {
                json_array_foreach(tb, j, w) {
                    const char *s1 = json_string_value(u), *s2 = json_string_value(w);
                    if (!s1 || !s2)
                        continue;
                    if (!strcmp(s1, s2))
                        json_array_append(r, u);
                    else if ((!strcmp(s1, "integer") && !strcmp(s2, "number")) ||
                             (!strcmp(s1, "number") && !strcmp(s2, "integer")))
                        json_array_append_new(r, json_string("integer"));
                }
            }
            json_decref(ta);
            json_decref(tb);
            if (json_array_size(r) == 0) {
                json_decref(r);
                jfail(c, path, "allOf: the types do not intersect%s", "");
                return NULL;
            }
            json_object_set_new(m, k, r);
            continue;
        } else if (!strcmp(k, "required")) {
            json_t *r = json_copy(av);
            size_t i, j;
            json_t *u, *w;
            json_array_foreach(bv, i, u) {
                bool have = false;
                json_array_foreach(r, j, w) have |= json_equal(u, w);
                if (!have)
                    json_array_append(r, u);
            }
            json_object_set_new(m, k, r);
            continue;
        } else if (!strcmp(k, "properties") || !strcmp(k, "$defs") ||
                   !strcmp(k, "definitions") || !strcmp(k, "patternProperties")) {
            if (!json_is_object(av) || !json_is_object(bv)) {
                jfail(c, path, "allOf: '%s' must be objects", k);
                return NULL;
            }
            json_t *r = json_copy(av);
            const char *pk;
            json_t *pv;
            json_object_foreach(bv, pk, pv) {
                json_t *old = json_object_get(r, pk);
                if (!old || json_equal(old, pv)) {
                    json_object_set(r, pk, pv);
                } else {
                    json_t *both = json_pack("{s:[O,O]}", "allOf", old, pv);
                    json_object_set_new(r, pk, both);
                }
            }
            json_object_set_new(m, k, r);
            continue;
        } else if (!strcmp(k, "additionalProperties") || !strcmp(k, "items")) {
            if (json_is_false(av) || json_is_false(bv)) {
                json_object_set_new(m, k, json_false());
            } else if (json_is_true(av)) {
                json_object_set(m, k, bv);
            } else if (!json_is_true(bv)) {
                json_object_set_new(m, k, json_pack("{s:[O,O]}", "allOf", av, bv));
            }
            continue;
        } else if (!strcmp(k, "enum")) {
            json_t *r = json_array();
            size_t i, j;
            json_t *u, *w;
            json_array_foreach(av, i, u) {
                json_array_foreach(bv, j, w) {
                    if (json_equal(u, w)) {
                        json_array_append(r, u);
                        break;
                    }
                }
            }
            if (json_array_size(r) == 0) {
                json_decref(r);
                jfail(c, path, "allOf: the enums do not intersect%s", "");
                return NULL;
            }
            json_object_set_new(m, k, r);
            continue;
        } else if (!strcmp(k, "anyOf") || !strcmp(k, "oneOf")) {
            /* (A1|A2) and (B1|B2): distribute */
            if (!json_is_array(av) || !json_is_array(bv)) {
                jfail(c, path, "allOf: '%s' must be arrays", k);
                return NULL;
            }
            if (!strcmp(k, "oneOf")) {
                jfail(c, path, "allOf of two oneOf lists is not supported%s", "");
                return NULL;
            }
            json_t *r = json_array();
            size_t i, j;
            json_t *u, *w;
            json_array_foreach(av, i, u) {
                json_array_foreach(bv, j, w) json_array_append_new(r, json_pack("{s:[O,O]}", "allOf", u, w));
            }
            json_object_set_new(m, k, r);
            continue;
        } else if (!strcmp(k, "const")) {
            jfail(c, path, "allOf: conflicting const values%s", "");
            return NULL;
        }
        jfail(c, path, "allOf: cannot merge different values of '%s'", k);
        return NULL;
    }
    return m;
}

/* ---- generation ---- */

static bool gen(jsc *c, json_t *s, const char *name, const char *path);

/* A rule for sub-schema s; its name is written to dst. */
static bool sub(jsc *c, json_t *s, const char *hint, const char *path, char *dst, size_t cap)
{
    if (json_is_true(s) || (json_is_object(s) && json_object_size(s) == 0)) {
        snprintf(dst, cap, "%s", prim(c, P_VALUE));
        return true;
    }
    json_t *ref = json_is_object(s) ? json_object_get(s, "$ref") : NULL;
    if (ref && json_is_string(ref)) {
        /* a plain reference (only annotations beside it) gets a shared rule */
        bool plain = true;
        const char *k;
        json_t *v;
        json_object_foreach(s, k, v) if (strcmp(k, "$ref") && !is_annotation(k)) plain = false;
        if (plain) {
            const char *r = json_string_value(ref);
            for (size_t i = 0; i < c->n_refs; i++) {
                if (!strcmp(c->refs[i].ptr, r)) {
                    snprintf(dst, cap, "%s", c->refs[i].name);
                    return true;
                }
            }
            json_t *t = resolve_ref(c, r, path);
            if (!t)
                return false;
            if (c->n_refs == c->cap_refs) {
                size_t nc = c->cap_refs ? c->cap_refs * 2 : 8;
                js_ref *q = realloc(c->refs, nc * sizeof *q);
                if (!q)
                    return jfail(c, path, "out of memory%s", "");
                c->refs = q;
                c->cap_refs = nc;
            }
            char nm[64];
            const char *slash = strrchr(r, '/');
            new_name(c, nm, sizeof nm, slash ? slash + 1 : "ref");
            c->refs[c->n_refs].ptr = strdup(r);
            c->refs[c->n_refs].name = strdup(nm);
            if (!c->refs[c->n_refs].ptr || !c->refs[c->n_refs].name) {
                free(c->refs[c->n_refs].ptr);
                free(c->refs[c->n_refs].name);
                return jfail(c, path, "out of memory%s", "");
            }
            c->n_refs++;
            snprintf(dst, cap, "%s", nm);
            char p2[512];
            snprintf(p2, sizeof p2, "%s", r + 1);
            return gen(c, t, nm, p2);
        }
    }
    new_name(c, dst, cap, hint);
    return gen(c, s, dst, path);
}

/* k items separated by commas, kmin <= k <= kmax (kmax < 0: unbounded); after_prev: an
 * item was already written, so each item is preceded by a comma. */
static void list_rep(jsc *c, grammar_strbuf *o, const char *item, bool after_prev, long kmin,
                     long kmax)
{
    if (kmax == 0) {
        gsb_puts(o, "\"\"");
        return;
    }
    char bounds[64];
    if (after_prev) {
        if (kmax < 0)
            snprintf(bounds, sizeof bounds, "{%ld,}", kmin);
        else
            snprintf(bounds, sizeof bounds, "{%ld,%ld}", kmin, kmax);
        gsb_printf(o, "(%s %s)%s", c->comma, item, bounds);
        return;
    }
    long m1 = kmin > 0 ? kmin - 1 : 0;
    if (kmax < 0)
        snprintf(bounds, sizeof bounds, "{%ld,}", m1);
    else
        snprintf(bounds, sizeof bounds, "{%ld,%ld}", m1, kmax - 1);
    gsb_printf(o, "(%s (%s %s)%s)%s", item, c->comma, item, bounds, kmin > 0 ? "" : "?");
}

static bool get_count(jsc *c, json_t *s, const char *key, long *out, const char *path)
{
    json_t *v = json_object_get(s, key);
    if (!v)
        return true;
    char p2[512];
    path_join(p2, sizeof p2, path, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return jfail(c, p2, "must be a non-negative integer%s", "");
    json_int_t x = json_integer_value(v);
    if (!strncmp(key, "min", 3) && x > JS_MAX_COUNT)
        return jfail(c, p2, "values above %s are not supported", "1000");
    /* a smaller maximum keeps every output valid */
    *out = x > JS_MAX_COUNT ? JS_MAX_COUNT : (long)x;
    return true;
}

static bool gen_string(jsc *c, json_t *s, const char *name, const char *path)
{
    grammar_strbuf *o = &c->out;
    long lo = 0, hi = -1;
    if (!get_count(c, s, "minLength", &lo, path) || !get_count(c, s, "maxLength", &hi, path))
        return false;
    if (hi >= 0 && hi < lo)
        return jfail(c, path, "maxLength < minLength%s", "");
    json_t *fmt = json_object_get(s, "format");
    json_t *pat = json_object_get(s, "pattern");
    bool lens = json_object_get(s, "minLength") || json_object_get(s, "maxLength");
    if (fmt) {
        char p2[512];
        path_join(p2, sizeof p2, path, "format");
        if (!json_is_string(fmt))
            return jfail(c, p2, "must be a string%s", "");
        if (pat || lens)
            return jfail(c, p2, "format combined with pattern/minLength/maxLength is not "
                                "supported%s", "");
        const char *f = json_string_value(fmt);
        static const struct {
            const char *name;
            unsigned prim;
        } fm[] = {{"date", P_DATE}, {"time", P_TIME}, {"hostname", P_HOST}, {"ipv4", P_IPV4},
                  {"ipv6", P_IPV6}, {"uuid", P_UUID}, {"email", P_EMAIL}, {"uri", P_URI}};
        if (!strcmp(f, "date-time")) {
            prim(c, P_DATE);
            prim(c, P_TIME);
            gsb_printf(o, "%s ::= \"\\\"\" fmt-date \"T\" fmt-time \"\\\"\"\n", name);
            return true;
        }
        for (size_t i = 0; i < sizeof fm / sizeof fm[0]; i++) {
            if (!strcmp(f, fm[i].name)) {
                gsb_printf(o, "%s ::= \"\\\"\" %s \"\\\"\"\n", name, prim(c, fm[i].prim));
                return true;
            }
        }
        return jfail(c, p2, "unsupported format '%s'", f);
    }
    if (pat) {
        char p2[512];
        path_join(p2, sizeof p2, path, "pattern");
        if (!json_is_string(pat))
            return jfail(c, p2, "must be a string%s", "");
        if (lens)
            return jfail(c, p2, "pattern combined with minLength/maxLength is not supported%s", "");
        char rn[64], rerr[200];
        new_name(c, rn, sizeof rn, "pattern");
        grammar_strbuf tmp = {0};
        if (regex_to_gbnf(json_string_value(pat), json_string_length(pat), rn, true, &tmp, rerr,
                          sizeof rerr) != 0) {
            free(tmp.p);
            return jfail(c, p2, "%s", rerr);
        }
        gsb_put(o, tmp.p, tmp.n);
        free(tmp.p);
        gsb_printf(o, "%s ::= \"\\\"\" %s \"\\\"\"\n", name, rn);
        return true;
    }
    prim(c, P_CHAR);
    if (hi < 0)
        gsb_printf(o, "%s ::= \"\\\"\" json-char{%ld,} \"\\\"\"\n", name, lo);
    else
        gsb_printf(o, "%s ::= \"\\\"\" json-char{%ld,%ld} \"\\\"\"\n", name, lo, hi);
    return true;
}

/* ---- numeric bounds, exact for decimal values ----
 *
 * Bounded numbers are written as decimals with at most 6 fraction digits (no exponent),
 * held here as micro-units (value * 10^6) in 128-bit integers. Each bound becomes the
 * smallest (lower) or largest (upper) such decimal that satisfies it under every reading
 * a validator may use: against the bound's decimal text (the exact integer, or the
 * shortest text that reads back as the same double), the instance read as a double
 * against the bound read as a double, and, for integer bounds, the instance read as a
 * double against the exact integer (Python's float-vs-int comparison). Each reading is
 * monotone in the instance, so every decimal on the right side of the limit satisfies
 * all of them and none beyond it does: the grammar is exact, not an approximation. */
typedef __int128 js_i128;
#define MICRO 1000000
#define NUM_MAX ((js_i128)JS_UNBOUNDED * MICRO + (MICRO - 1)) /* largest |value| written */

/* canonical JSON text of a micro value: no trailing fraction zeros, no "-0" */
static void micro_str(js_i128 m, char *buf, size_t cap)
{
    bool neg = m < 0;
    js_i128 a = neg ? -m : m;
    long long ip = (long long)(a / MICRO);
    int fp = (int)(a % MICRO);
    if (fp == 0) {
        snprintf(buf, cap, "%s%lld", neg ? "-" : "", ip);
        return;
    }
    char f[16];
    snprintf(f, sizeof f, "%06d", fp);
    size_t n = 6;
    while (f[n - 1] == '0')
        n--;
    f[n] = 0;
    snprintf(buf, cap, "%s%lld.%s", neg ? "-" : "", ip, f);
}

/* exact comparison of a double with an integer: -1, 0, 1 */
static int cmp_double_ll(double d, long long v)
{
    if (d >= 9223372036854775808.0)
        return 1;
    if (d < -9223372036854775808.0)
        return -1;
    double fl = floor(d);
    long long fi = (long long)fl;
    if (fi != v)
        return fi < v ? -1 : 1;
    return d > fl;
}

typedef struct {
    bool is_int; /* a JSON integer: iv is exact */
    long long iv;
    double dv;   /* the bound as a double */
    bool ex;     /* exclusive */
    bool lower;
} nbound;

/* floor and ceiling of bound * 10^6 taken from the bound's decimal text; magnitudes
 * beyond the written range saturate at +-2 * NUM_MAX */
static void bound_micro(const nbound *b, js_i128 *fl, js_i128 *ce)
{
    const js_i128 lim = 2 * NUM_MAX;
    if (b->is_int) {
        *fl = *ce = (js_i128)b->iv * MICRO;
        return;
    }
    double x = b->dv;
    if (x >= 1e19 || x <= -1e19) {
        *fl = *ce = x > 0 ? lim : -lim;
        return;
    }
    if (x == floor(x)) {
        *fl = *ce = (js_i128)(long long)x * MICRO;
        return;
    }
    /* shortest round-trip text, d.ddde[+-]x: non-integral, so |x| < 2^52 and at most 17
     * digits */
    char t[48];
    for (int p = 1; p <= 17; p++) {
        snprintf(t, sizeof t, "%.*e", p - 1, x);
        if (strtod(t, NULL) == x)
            break;
    }
    const char *q = t + (t[0] == '-');
    js_i128 digits = 0;
    int nd = 0;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9') {
            digits = digits * 10 + (*q - '0');
            nd++;
        }
    int shift = (*q == 'e' ? atoi(q + 1) : 0) - (nd - 1) + 6; /* |x| * 1e6 = digits * 10^shift */
    js_i128 f, c;
    if (shift >= 0) {
        f = digits;
        for (int i = 0; i < shift; i++)
            f *= 10;
        c = f;
    } else if (shift < -36) {
        f = 0;
        c = digits != 0;
    } else {
        js_i128 p10 = 1;
        for (int i = 0; i < -shift; i++)
            p10 *= 10;
        f = digits / p10;
        c = f + (digits % p10 != 0);
    }
    if (x < 0) {
        js_i128 t2 = f;
        f = -c;
        c = -t2;
    }
    *fl = f;
    *ce = c;
}

/* Does micro value m satisfy b when read as a double (against the double bound, and
 * against an integer bound exactly)? */
static bool bound_holds_double(const nbound *b, js_i128 m)
{
    char t[64];
    micro_str(m, t, sizeof t);
    double d = strtod(t, NULL);
    int c1 = d < b->dv ? -1 : d > b->dv;
    int c2 = b->is_int ? cmp_double_ll(d, b->iv) : c1;
    if (b->lower)
        return b->ex ? c1 > 0 && c2 > 0 : c1 >= 0 && c2 >= 0;
    return b->ex ? c1 < 0 && c2 < 0 : c1 <= 0 && c2 <= 0;
}

/* The limit a bound puts on micro values: the smallest allowed (lower) or the largest
 * (upper); beyond +-NUM_MAX means nothing (or everything) is allowed. */
static js_i128 bound_limit(const nbound *b)
{
    js_i128 fl, ce;
    bound_micro(b, &fl, &ce);
    int dir = b->lower ? 1 : -1;
    /* the decimal reading */
    js_i128 start = b->lower ? (b->ex ? fl + 1 : ce) : (b->ex ? ce - 1 : fl);
    if (start * dir > NUM_MAX)
        return start; /* nothing satisfies it within the written range */
    if (start * dir < -NUM_MAX)
        start = -NUM_MAX * dir;
    if (bound_holds_double(b, start))
        return start;
    /* the double readings: exponential then binary search (monotone predicate) */
    js_i128 bad = start, ok = start, step = 1;
    for (;;) {
        ok = start + dir * step;
        if (ok * dir > NUM_MAX)
            return ok;
        if (bound_holds_double(b, ok))
            break;
        bad = ok;
        step *= 2;
    }
    while ((ok - bad) * dir > 1) {
        js_i128 mid = bad + (ok - bad) / 2;
        if (bound_holds_double(b, mid))
            ok = mid;
        else
            bad = mid;
    }
    return ok;
}

/* The allowed micro range [*lo, *hi] from minimum/maximum/exclusive* (draft-4 boolean
 * exclusives included); *any tells whether any bound was given. */
static bool num_range(jsc *c, json_t *s, const char *path, js_i128 *lo, js_i128 *hi, bool *any)
{
    static const char *keys[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
    *lo = -NUM_MAX;
    *hi = NUM_MAX;
    *any = false;
    for (int i = 0; i < 4; i++) {
        json_t *v = json_object_get(s, keys[i]);
        if (!v || (i >= 2 && json_is_boolean(v))) /* draft-4 flags apply to minimum/maximum */
            continue;
        char p2[512];
        path_join(p2, sizeof p2, path, keys[i]);
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return jfail(c, p2, "must be a number%s", "");
        nbound b = {.is_int = json_is_integer(v),
                    .iv = json_is_integer(v) ? (long long)json_integer_value(v) : 0,
                    .dv = json_number_value(v),
                    .lower = i == 0 || i == 2,
                    .ex = i >= 2 || json_is_true(json_object_get(s, keys[i + 2]))};
        js_i128 x = bound_limit(&b);
        if (b.lower && x > *lo)
            *lo = x;
        if (!b.lower && x < *hi)
            *hi = x;
        *any = true;
    }
    return true;
}

static js_i128 div_floor(js_i128 a, js_i128 b)
{
    js_i128 q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static js_i128 div_ceil(js_i128 a, js_i128 b)
{
    js_i128 q = a / b;
    return (a % b != 0 && a > 0) ? q + 1 : q;
}

/* canonical continuations of 1..n more fraction digits (the last one nonzero) */
static void frac_tail(grammar_strbuf *o, int n)
{
    if (n == 1)
        gsb_puts(o, "[1-9]");
    else
        gsb_printf(o, "[0-9]{0,%d} [1-9]", n - 1);
}

/* Fraction digit strings s (1-6 digits, last nonzero) whose value padded to 6 digits lies
 * in [U, V], from position i on; lt/ht: the digits so far equal U's/V's. */
static void frac_digits(grammar_strbuf *o, const char *U, const char *V, int i, bool lt, bool ht)
{
    int k = 6 - i; /* positions left, this one included */
    if (!lt && !ht) {
        frac_tail(o, k);
        return;
    }
    char dlo = lt ? U[i] : '0', dhi = ht ? V[i] : '9';
    gsb_puts(o, "(");
    bool first = true;
    for (char d = dlo; d <= dhi; d++) {
        bool tl = lt && d == U[i], th = ht && d == V[i];
        if (!tl && !th) {
            /* the free run [d, e]: any continuation */
            char e = ht ? (char)(dhi - 1) : dhi;
            if (d == '0' && k > 1) {
                gsb_puts(o, first ? "\"0\" " : " | \"0\" ");
                frac_tail(o, k - 1);
                first = false;
            }
            char s = d > '1' ? d : '1';
            if (s <= e) {
                gsb_puts(o, first ? "" : " | ");
                if (s == e)
                    gsb_printf(o, "\"%c\"", s);
                else
                    gsb_printf(o, "[%c-%c]", s, e);
                if (k > 1) {
                    gsb_puts(o, " (");
                    frac_tail(o, k - 1);
                    gsb_puts(o, ")?");
                }
                first = false;
            }
            d = e;
            continue;
        }
        bool can_end = d != '0';
        if (tl)
            for (int j = i + 1; j < 6; j++)
                can_end &= U[j] == '0';
        bool can_cont = false;
        if (k > 1) {
            /* continuations: nonempty when V' is not zero and V' >= U' */
            const char *u2 = tl ? U + i + 1 : "00000", *v2 = th ? V + i + 1 : "99999";
            bool vz = true;
            for (int j = 0; j < k - 1; j++)
                vz &= v2[j] == '0';
            can_cont = !vz && strncmp(v2, u2, (size_t)(k - 1)) >= 0;
        }
        if (!can_end && !can_cont)
            continue;
        gsb_printf(o, "%s\"%c\"", first ? "" : " | ", d);
        first = false;
        if (can_cont) {
            gsb_puts(o, can_end ? " (" : " ");
            frac_digits(o, U, V, i + 1, tl, th);
            if (can_end)
                gsb_puts(o, ")?");
        }
    }
    gsb_puts(o, ")");
}

/* an optional or required fraction whose 6-digit value lies in [u, v] */
static void frac_range(grammar_strbuf *o, int u, int v)
{
    if (v == 0)
        return; /* integer only */
    if (u == 0 && v == MICRO - 1) {
        gsb_puts(o, " (\".\" json-frac-nz)?");
        return;
    }
    char U[16], V[16];
    snprintf(U, sizeof U, "%06d", u ? u : 1);
    snprintf(V, sizeof V, "%06d", v);
    gsb_puts(o, u == 0 ? " (\".\" " : " \".\" ");
    frac_digits(o, U, V, 0, true, true);
    if (u == 0)
        gsb_puts(o, ")?");
}

/* nonnegative decimals in micro range [a, b] */
static void nonneg_range(grammar_strbuf *o, js_i128 a, js_i128 b)
{
    long long ia = (long long)(a / MICRO), ib = (long long)(b / MICRO);
    int fa = (int)(a % MICRO), fb = (int)(b % MICRO);
    if (ia == ib) {
        gsb_printf(o, "(\"%lld\"", ia);
        frac_range(o, fa, fb);
        gsb_puts(o, ")");
        return;
    }
    /* partial first and last integers on their own, whole ones in between */
    long long first = ia, last = ib;
    bool alt = false;
    gsb_puts(o, "(");
    if (fa != 0) {
        gsb_printf(o, "\"%lld\"", ia);
        frac_range(o, fa, MICRO - 1);
        first++;
        alt = true;
    }
    if (first <= last - (fb != MICRO - 1)) {
        gsb_puts(o, alt ? " | " : "");
        range_pos(o, first, last - (fb != MICRO - 1));
        frac_range(o, 0, MICRO - 1);
        alt = true;
    }
    if (fb != MICRO - 1) {
        gsb_printf(o, "%s\"%lld\"", alt ? " | " : "", ib);
        frac_range(o, 0, fb);
    }
    gsb_puts(o, ")");
}

static bool gen_integer(jsc *c, json_t *s, const char *name, const char *path)
{
    js_i128 lo, hi;
    bool any;
    if (!num_range(c, s, path, &lo, &hi, &any))
        return false;
    if (!any) {
        gsb_printf(&c->out, "%s ::= %s\n", name, prim(c, P_INT));
        return true;
    }
    js_i128 L = div_ceil(lo, MICRO), H = div_floor(hi, MICRO);
    if (L < -JS_UNBOUNDED)
        L = -JS_UNBOUNDED;
    if (H > JS_UNBOUNDED)
        H = JS_UNBOUNDED;
    if (L > H)
        return jfail(c, path, "no integer satisfies the bounds%s", "");
    gsb_printf(&c->out, "%s ::= ", name);
    range_int(&c->out, (long long)L, (long long)H);
    gsb_puts(&c->out, "\n");
    return true;
}

static bool gen_number(jsc *c, json_t *s, const char *name, const char *path)
{
    js_i128 lo, hi;
    bool any;
    if (!num_range(c, s, path, &lo, &hi, &any))
        return false;
    if (!any) {
        gsb_printf(&c->out, "%s ::= %s\n", name, prim(c, P_NUMBER));
        return true;
    }
    if (lo > hi)
        return jfail(c, path, "no number satisfies the bounds%s", "");
    prim(c, P_FRAC); /* before this rule's text starts */
    grammar_strbuf *o = &c->out;
    gsb_printf(o, "%s ::= ", name);
    bool alt = false;
    if (hi >= 0) {
        nonneg_range(o, lo > 0 ? lo : 0, hi);
        alt = true;
    }
    if (lo < 0) { /* magnitudes of the negative part; never "-0" */
        gsb_puts(o, alt ? " | \"-\" " : "\"-\" ");
        nonneg_range(o, hi < 0 ? -hi : 1, -lo);
    }
    gsb_puts(o, "\n");
    return true;
}

static bool gen_array(jsc *c, json_t *s, const char *name, const char *path)
{
    grammar_strbuf *o = &c->out;
    long lo = 0, hi = -1;
    if (!get_count(c, s, "minItems", &lo, path) || !get_count(c, s, "maxItems", &hi, path))
        return false;
    json_t *prefix = json_object_get(s, "prefixItems");
    json_t *items = json_object_get(s, "items");
    json_t *additional = json_object_get(s, "additionalItems");
    char p2[512];
    if (json_is_array(items)) { /* draft 4-7 tuple form */
        if (prefix) {
            path_join(p2, sizeof p2, path, "items");
            return jfail(c, p2, "array-form items together with prefixItems%s", "");
        }
        prefix = items;
        items = additional;
    } else if (additional) {
        path_join(p2, sizeof p2, path, "additionalItems");
        return jfail(c, p2, "additionalItems without array-form items%s", "");
    }
    if (prefix && !json_is_array(prefix)) {
        path_join(p2, sizeof p2, path, "prefixItems");
        return jfail(c, p2, "must be an array%s", "");
    }
    size_t np = prefix ? json_array_size(prefix) : 0;
    if (np > JS_MAX_COUNT)
        return jfail(c, path, "too many prefixItems%s", "");
    bool no_more = items && json_is_false(items);
    /* items absent after prefixItems: any value is valid; we add some only when minItems
     * asks for them */
    long hmax = hi;
    if (no_more && (hmax < 0 || hmax > (long)np))
        hmax = (long)np;
    if (hmax >= 0 && lo > hmax)
        return jfail(c, path, "minItems cannot be satisfied%s", "");
    char *pnames = NULL;
    if (np) {
        pnames = malloc(np * 64);
        if (!pnames)
            return jfail(c, path, "out of memory%s", "");
        for (size_t i = 0; i < np; i++) {
            path_idx(p2, sizeof p2, path, "prefixItems", i);
            if (!sub(c, json_array_get(prefix, i), "item", p2, pnames + i * 64, 64)) {
                free(pnames);
                return false;
            }
        }
    }
    char iname[64] = "";
    bool rest_items = !no_more && (hmax < 0 || hmax > (long)np);
    if (rest_items) {
        if (items && !json_is_true(items)) {
            path_join(p2, sizeof p2, path, "items");
            if (!sub(c, items, "item", p2, iname, sizeof iname)) {
                free(pnames);
                return false;
            }
        } else {
            snprintf(iname, sizeof iname, "%s", prim(c, P_VALUE));
        }
        if (prefix && !items && lo <= (long)np)
            rest_items = false; /* optional extras after a tuple: leave them out */
    }
    /* "[" A(0) "]" with A(k) nested for the prefix items */
    gsb_printf(o, "%s ::= \"[\" ", name);
    size_t open = 0;
    for (size_t k = 0; k < np; k++) {
        if (hmax >= 0 && (long)k >= hmax)
            break;
        bool optional = (long)k >= lo;
        if (optional) {
            gsb_puts(o, "(");
            open++;
        }
        if (k)
            gsb_printf(o, "%s ", c->comma);
        gsb_printf(o, "%s ", pnames + k * 64);
    }
    if (rest_items) {
        long kmin = lo > (long)np ? lo - (long)np : 0;
        long kmax = hmax < 0 ? -1 : hmax - (long)np;
        list_rep(c, o, iname, np > 0, kmin, kmax);
    }
    for (size_t i = 0; i < open; i++)
        gsb_puts(o, ")?");
    gsb_puts(o, " \"]\"\n");
    free(pnames);
    return true;
}

/* Does a declared property name match a patternProperties regex? (then the value would
 * have to satisfy both schemas: reported as unsupported) */
static int pattern_matches(const char *pat, const char *s)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo, NULL);
    if (!re)
        return -1;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = md ? pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL) : -1;
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

/* Any JSON string content except the given names (keys of extra properties): a trie over
 * the names' code points; leaving the trie at any point with another character gives a
 * different key. Such keys are written without escapes, so names containing characters
 * that need escaping can never be produced and need no exclusion. */
static uint32_t cp_at(const char *s, size_t *i)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned ch = p[*i];
    int n = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : 4;
    uint32_t v = n == 1 ? ch : n == 2 ? (ch & 0x1Fu) : n == 3 ? (ch & 0x0Fu) : (ch & 0x07u);
    for (int k = 1; k < n && p[*i + (size_t)k]; k++)
        v = v << 6 | (p[*i + (size_t)k] & 0x3Fu);
    *i += (size_t)n;
    return v;
}

static void put_cp_class(grammar_strbuf *o, uint32_t cp)
{
    if (cp < 0x80 && cp >= 0x20 && !strchr("[]^-\\\"", (int)cp))
        gsb_printf(o, "%c", (char)cp);
    else if (cp < 0x10000)
        gsb_printf(o, "\\u%04X", cp);
    else
        gsb_printf(o, "\\U%08X", cp);
}

static void put_cp_lit(grammar_strbuf *o, uint32_t cp)
{
    if (cp < 0x80 && cp >= 0x20 && cp != '"' && cp != '\\')
        gsb_printf(o, "\"%c\"", (char)cp);
    else if (cp < 0x10000)
        gsb_printf(o, "\"\\u%04X\"", cp);
    else
        gsb_printf(o, "\"\\U%08X\"", cp);
}

static bool cp_safe(uint32_t cp)
{
    return cp >= 0x20 && cp != '"' && cp != '\\';
}

static void key_not_in(jsc *c, const char *name, const char **names, size_t n,
                       const char *prefix, size_t plen, int depth)
{
    grammar_strbuf *o = &c->out;
    const char *safe = "[^\"\\\\\\x00-\\x1F]";
    bool is_name = false;
    uint32_t kids[256];
    int nk = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (len < plen || memcmp(names[i], prefix, plen))
            continue;
        if (len == plen) {
            is_name = true;
            continue;
        }
        size_t at = plen;
        uint32_t cp = cp_at(names[i], &at);
        if (!cp_safe(cp))
            continue;
        bool have = false;
        for (int k = 0; k < nk; k++)
            have |= kids[k] == cp;
        if (!have && nk < 256)
            kids[nk++] = cp;
    }
    gsb_printf(o, "%s ::= ", name);
    if (!is_name)
        gsb_puts(o, "\"\" | ");
    gsb_puts(o, "[^\"\\\\\\x00-\\x1F");
    for (int k = 0; k < nk; k++)
        put_cp_class(o, kids[k]);
    gsb_printf(o, "] %s*", safe);
    char kn[256][48];
    for (int k = 0; k < nk && depth < 256; k++) {
        new_name(c, kn[k], sizeof kn[k], "key");
        gsb_puts(o, " | ");
        put_cp_lit(o, kids[k]);
        gsb_printf(o, " %s", kn[k]);
    }
    gsb_puts(o, "\n");
    if (depth >= 256)
        return;
    for (int k = 0; k < nk; k++) {
        char pre[1024];
        if (plen + 4 >= sizeof pre)
            continue;
        memcpy(pre, prefix, plen);
        /* the prefix plus this code point, taken from a name that has it */
        for (size_t i = 0; i < n; i++) {
            size_t at = plen;
            if (strlen(names[i]) > plen && !memcmp(names[i], prefix, plen) &&
                cp_at(names[i], &at) == kids[k]) {
                memcpy(pre + plen, names[i] + plen, at - plen);
                key_not_in(c, kn[k], names, n, pre, at, depth + 1);
                break;
            }
        }
    }
}

typedef struct {
    char key[600]; /* GBNF literal for "\"name\"" + colon */
    char val[64];
    bool required;
} oprop;

static bool gen_object(jsc *c, json_t *s, const char *name, const char *path)
{
    grammar_strbuf *o = &c->out;
    char p2[512];
    json_t *props = json_object_get(s, "properties");
    json_t *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    json_t *pprops = json_object_get(s, "patternProperties");
    long lo = 0, hi = -1;
    if (!get_count(c, s, "minProperties", &lo, path) || !get_count(c, s, "maxProperties", &hi, path))
        return false;
    if (props && !json_is_object(props)) {
        path_join(p2, sizeof p2, path, "properties");
        return jfail(c, p2, "must be an object%s", "");
    }
    if (req && !json_is_array(req)) {
        path_join(p2, sizeof p2, path, "required");
        return jfail(c, p2, "must be an array%s", "");
    }
    if (addl && !json_is_boolean(addl) && !json_is_object(addl)) {
        path_join(p2, sizeof p2, path, "additionalProperties");
        return jfail(c, p2, "must be a boolean or a schema%s", "");
    }
    if (pprops && !json_is_object(pprops)) {
        path_join(p2, sizeof p2, path, "patternProperties");
        return jfail(c, p2, "must be an object%s", "");
    }
    size_t n = (props ? json_object_size(props) : 0) + (req ? json_array_size(req) : 0);
    if (n > JS_MAX_COUNT)
        return jfail(c, path, "too many properties%s", "");
    oprop *pp = calloc(n ? n : 1, sizeof *pp);
    const char **names = calloc(n ? n : 1, sizeof *names);
    bool ok = false;
    if (!pp || !names) {
        jfail(c, path, "out of memory%s", "");
        goto done;
    }
    size_t np = 0;
    const char *k;
    json_t *v;
    if (props) {
        json_object_foreach(props, k, v) {
            char pp2[512];
            path_join(p2, sizeof p2, path, "properties");
            path_join(pp2, sizeof pp2, p2, k);
            grammar_strbuf kb = {0};
            json_t *ks = json_string(k);
            char *kj = ks ? json_dumps(ks, JSON_ENCODE_ANY) : NULL;
            json_decref(ks);
            if (!kj) {
                jfail(c, pp2, "bad property name%s", "");
                goto done;
            }
            size_t kjl = strlen(kj);
            if (kjl > 200) {
                free(kj);
                jfail(c, pp2, "property name too long%s", "");
                goto done;
            }
            put_lit(&kb, kj, kjl);
            free(kj);
            snprintf(pp[np].key, sizeof pp[np].key, "%s %s", kb.p ? kb.p : "\"\"", c->colon);
            free(kb.p);
            names[np] = k;
            if (!sub(c, v, k, pp2, pp[np].val, sizeof pp[np].val))
                goto done;
            np++;
        }
    }
    size_t i;
    json_array_foreach(req, i, v) {
        path_idx(p2, sizeof p2, path, "required", i);
        if (!json_is_string(v)) {
            jfail(c, p2, "must be a string%s", "");
            goto done;
        }
        size_t j;
        for (j = 0; j < np; j++)
            if (!strcmp(names[j], json_string_value(v)))
                break;
        if (j < np) {
            pp[j].required = true;
            continue;
        }
        /* required but not declared: its value follows additionalProperties */
        if (json_is_false(addl)) {
            jfail(c, p2, "required property '%s' is forbidden by additionalProperties",
                  json_string_value(v));
            goto done;
        }
        if (pprops && json_object_size(pprops)) {
            jfail(c, p2, "required property '%s' not in properties, with patternProperties",
                  json_string_value(v));
            goto done;
        }
        grammar_strbuf kb = {0};
        char *kj = json_dumps(v, JSON_ENCODE_ANY);
        if (!kj || strlen(kj) > 200) {
            free(kj);
            jfail(c, p2, "bad property name%s", "");
            goto done;
        }
        put_lit(&kb, kj, strlen(kj));
        free(kj);
        snprintf(pp[np].key, sizeof pp[np].key, "%s %s", kb.p ? kb.p : "\"\"", c->colon);
        free(kb.p);
        names[np] = json_string_value(v);
        pp[np].required = true;
        if (addl && json_is_object(addl)) {
            path_join(p2, sizeof p2, path, "additionalProperties");
            if (!sub(c, addl, names[np], p2, pp[np].val, sizeof pp[np].val))
                goto done;
        } else {
            snprintf(pp[np].val, sizeof pp[np].val, "%s", prim(c, P_VALUE));
        }
        np++;
    }
    /* extra properties */
    char extra[64] = "";
    if (pprops && json_object_size(pprops)) {
        json_t *first = NULL;
        const char *pk;
        json_t *pv;
        path_join(p2, sizeof p2, path, "patternProperties");
        grammar_strbuf alts = {0};
        json_object_foreach(pprops, pk, pv) {
            char pp2[512];
            path_join(pp2, sizeof pp2, p2, pk);
            if (first && !json_equal(first, pv)) {
                free(alts.p);
                jfail(c, pp2, "several patternProperties with different schemas are not "
                              "supported%s", "");
                goto done;
            }
            first = pv;
            for (size_t j = 0; j < np; j++) {
                int m = pattern_matches(pk, names[j]);
                if (m != 0) {
                    free(alts.p);
                    jfail(c, pp2, m < 0 ? "invalid pattern%s"
                                        : "pattern also matches a declared property ('%s')",
                          names[j]);
                    goto done;
                }
            }
            char rn[64], rerr[200];
            new_name(c, rn, sizeof rn, "keypat");
            if (regex_to_gbnf(pk, strlen(pk), rn, true, o, rerr, sizeof rerr) != 0) {
                free(alts.p);
                jfail(c, pp2, "%s", rerr);
                goto done;
            }
            gsb_printf(&alts, "%s%s", alts.n ? " | " : "", rn);
        }
        char vn[64], kn[64];
        char pp2[512];
        path_join(pp2, sizeof pp2, p2, "*");
        if (!sub(c, first, "patval", pp2, vn, sizeof vn)) {
            free(alts.p);
            goto done;
        }
        new_name(c, kn, sizeof kn, "patkey");
        gsb_printf(o, "%s ::= \"\\\"\" (%s) \"\\\"\" %s %s\n", kn, alts.p ? alts.p : "\"\"",
                   c->colon, vn);
        free(alts.p);
        snprintf(extra, sizeof extra, "%s", kn);
    } else if (addl && !json_is_false(addl)) {
        char vn[64], kn[64], kc[64];
        path_join(p2, sizeof p2, path, "additionalProperties");
        if (json_is_true(addl)) {
            snprintf(vn, sizeof vn, "%s", prim(c, P_VALUE));
        } else if (!sub(c, addl, "extra", p2, vn, sizeof vn)) {
            goto done;
        }
        new_name(c, kc, sizeof kc, "extrakey");
        key_not_in(c, kc, names, np, "", 0, 0);
        new_name(c, kn, sizeof kn, "extra");
        gsb_printf(o, "%s ::= \"\\\"\" %s \"\\\"\" %s %s\n", kn, kc, c->colon, vn);
        snprintf(extra, sizeof extra, "%s", kn);
    }
    /* T(i, cnt): properties i.. with cnt written so far; cnt saturates at C */
    size_t nreq_after[JS_MAX_COUNT + 2];
    nreq_after[np] = 0;
    for (size_t j = np; j-- > 0;)
        nreq_after[j] = nreq_after[j + 1] + (pp[j].required ? 1 : 0);
    long C = hi >= 0 ? hi : (lo > 1 ? lo : 1);
    if ((size_t)(np + 1) * (size_t)(C + 1) > 100000) {
        jfail(c, path, "too many properties for the count constraints%s", "");
        goto done;
    }
    /* Extra keys may repeat (no grammar can keep an unbounded set of keys distinct), and a
     * repeated key counts once: reaching minProperties must never need two extras. */
    if (extra[0] && lo - (long)nreq_after[0] >= 2) {
        jfail(c, path, "minProperties that needs two or more additional properties is not "
                       "supported (their keys could repeat)%s", "");
        goto done;
    }
    if (hi >= 0 && (long)nreq_after[0] > hi) {
        jfail(c, path, "more required properties than maxProperties%s", "");
        goto done;
    }
    /* feasibility, bottom up */
    size_t W = (size_t)C + 1;
    uint8_t *feas = calloc((np + 1) * W, 1);
    if (!feas) {
        jfail(c, path, "out of memory%s", "");
        goto done;
    }
    for (long cnt = 0; cnt <= C; cnt++) {
        bool f;
        if (extra[0])
            f = hi < 0 || cnt <= hi;
        else
            f = cnt >= lo || (hi < 0 && cnt == C && C >= lo);
        feas[np * W + (size_t)cnt] = f;
    }
    for (size_t j = np; j-- > 0;) {
        for (long cnt = 0; cnt <= C; cnt++) {
            long nc = cnt + 1 > C ? C : cnt + 1;
            bool inc = (hi < 0 || cnt < hi) && feas[(j + 1) * W + (size_t)nc];
            bool skip = !pp[j].required && feas[(j + 1) * W + (size_t)cnt];
            feas[j * W + (size_t)cnt] = inc || skip;
        }
    }
    if (!feas[0]) {
        free(feas);
        jfail(c, path, "the property count constraints cannot be satisfied%s", "");
        goto done;
    }
    char base[64];
    new_name(c, base, sizeof base, "obj");
    gsb_printf(o, "%s ::= \"{\" %s-0-0 \"}\"\n", name, base);
    for (size_t j = 0; j <= np; j++) {
        for (long cnt = 0; cnt <= C; cnt++) {
            if (!feas[j * W + (size_t)cnt])
                continue;
            gsb_printf(o, "%s-%zu-%ld ::= ", base, j, cnt);
            if (j == np) {
                if (extra[0]) {
                    long kmin = lo > cnt ? lo - cnt : 0;
                    long kmax = hi < 0 ? -1 : hi - cnt;
                    if (hi < 0 && cnt == C) /* saturated: count unknown but >= C >= lo */
                        kmin = 0;
                    list_rep(c, o, extra, cnt > 0, kmin, kmax);
                } else {
                    gsb_puts(o, "\"\"");
                }
                gsb_puts(o, "\n");
                continue;
            }
            long nc = cnt + 1 > C ? C : cnt + 1;
            bool any = false;
            if ((hi < 0 || cnt < hi) && feas[(j + 1) * W + (size_t)nc]) {
                if (cnt > 0)
                    gsb_printf(o, "%s ", c->comma);
                gsb_printf(o, "%s %s %s-%zu-%ld", pp[j].key, pp[j].val, base, j + 1, nc);
                any = true;
            }
            if (!pp[j].required && feas[(j + 1) * W + (size_t)cnt])
                gsb_printf(o, "%s%s-%zu-%ld", any ? " | " : "", base, j + 1, cnt);
            gsb_puts(o, "\n");
        }
    }
    free(feas);
    ok = true;
done:
    free(pp);
    free(names);
    return ok;
}

static const char *const js_keywords[] = {
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "required",
    "additionalProperties", "patternProperties", "minProperties", "maxProperties", "items",
    "prefixItems", "additionalItems", "minItems", "maxItems", "minLength", "maxLength",
    "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};

static bool known_keyword(const char *k)
{
    for (int i = 0; js_keywords[i]; i++)
        if (!strcmp(k, js_keywords[i]))
            return true;
    return is_annotation(k);
}

static bool value_has_type(json_t *v, const char *t)
{
    if (!strcmp(t, "string"))
        return json_is_string(v);
    if (!strcmp(t, "number"))
        return json_is_number(v);
    if (!strcmp(t, "integer"))
        return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    if (!strcmp(t, "boolean"))
        return json_is_boolean(v);
    if (!strcmp(t, "null"))
        return json_is_null(v);
    if (!strcmp(t, "object"))
        return json_is_object(v);
    if (!strcmp(t, "array"))
        return json_is_array(v);
    return false;
}

static bool gen_type(jsc *c, json_t *s, const char *t, const char *name, const char *path)
{
    if (!strcmp(t, "string"))
        return gen_string(c, s, name, path);
    if (!strcmp(t, "integer"))
        return gen_integer(c, s, name, path);
    if (!strcmp(t, "number"))
        return gen_number(c, s, name, path);
    if (!strcmp(t, "object"))
        return gen_object(c, s, name, path);
    if (!strcmp(t, "array"))
        return gen_array(c, s, name, path);
    if (!strcmp(t, "boolean")) {
        gsb_printf(&c->out, "%s ::= \"true\" | \"false\"\n", name);
        return true;
    }
    if (!strcmp(t, "null")) {
        gsb_printf(&c->out, "%s ::= \"null\"\n", name);
        return true;
    }
    char p2[512];
    path_join(p2, sizeof p2, path, "type");
    return jfail(c, p2, "unknown type '%s'", t);
}

static bool has_any(json_t *s, const char *const *keys)
{
    for (int i = 0; keys[i]; i++)
        if (json_object_get(s, keys[i]))
            return true;
    return false;
}

/* ---- oneOf: branches must be provably disjoint ---- */

/* Bit set of the JSON types a flattened schema can match (integer counts as number). */
enum { T_NULL = 1, T_BOOL = 2, T_INT = 4, T_FRAC = 8, T_STR = 16, T_ARR = 32, T_OBJ = 64 };

static unsigned type_bit(const char *t)
{
    if (!strcmp(t, "null")) return T_NULL;
    if (!strcmp(t, "boolean")) return T_BOOL;
    if (!strcmp(t, "integer")) return T_INT;
    if (!strcmp(t, "number")) return T_INT | T_FRAC;
    if (!strcmp(t, "string")) return T_STR;
    if (!strcmp(t, "array")) return T_ARR;
    if (!strcmp(t, "object")) return T_OBJ;
    return 0;
}

static unsigned value_bits(json_t *v)
{
    if (json_is_null(v)) return T_NULL;
    if (json_is_boolean(v)) return T_BOOL;
    if (json_is_integer(v)) return T_INT;
    if (json_is_real(v)) return json_real_value(v) == floor(json_real_value(v)) ? T_INT : T_FRAC;
    if (json_is_string(v)) return T_STR;
    if (json_is_array(v)) return T_ARR;
    return T_OBJ;
}

/* The values a schema is limited to by const/enum, or NULL (borrowed / kept). */
static json_t *value_set(jsc *c, json_t *s)
{
    if (!json_is_object(s))
        return NULL;
    json_t *cn = json_object_get(s, "const"), *en = json_object_get(s, "enum");
    if (cn)
        return keep(c, json_pack("[O]", cn));
    return json_is_array(en) ? en : NULL;
}

static unsigned schema_types(jsc *c, json_t *s)
{
    json_t *vals = value_set(c, s);
    if (vals) {
        unsigned t = 0;
        size_t i;
        json_t *v;
        json_array_foreach(vals, i, v) t |= value_bits(v);
        return t;
    }
    json_t *t = json_is_object(s) ? json_object_get(s, "type") : NULL;
    if (json_is_string(t))
        return type_bit(json_string_value(t));
    if (json_is_array(t)) {
        unsigned b = 0;
        size_t i;
        json_t *v;
        json_array_foreach(t, i, v) b |= json_is_string(v) ? type_bit(json_string_value(v)) : 0;
        return b;
    }
    return 0x7F;
}

static bool values_disjoint(json_t *a, json_t *b)
{
    size_t i, j;
    json_t *x, *y;
    json_array_foreach(a, i, x) {
        json_array_foreach(b, j, y) if (json_equal(x, y)) return false;
    }
    return true;
}

static bool in_required(json_t *s, const char *k)
{
    json_t *r = json_object_get(s, "required");
    size_t i;
    json_t *v;
    json_array_foreach(r, i, v) if (json_is_string(v) && !strcmp(json_string_value(v), k)) return true;
    return false;
}

/* A sufficient test that no instance matches both flattened schemas: different types,
 * disjoint const/enum values, or a required property with disjoint const/enum values. */
static bool disjoint(jsc *c, json_t *a, json_t *b)
{
    if (!(schema_types(c, a) & schema_types(c, b)))
        return true;
    json_t *va = value_set(c, a), *vb = value_set(c, b);
    if (va && vb && values_disjoint(va, vb))
        return true;
    json_t *pa = json_is_object(a) ? json_object_get(a, "properties") : NULL;
    json_t *pb = json_is_object(b) ? json_object_get(b, "properties") : NULL;
    if (!json_is_object(pa) || !json_is_object(pb))
        return false;
    const char *k;
    json_t *x;
    json_object_foreach(pa, k, x) {
        json_t *y = json_object_get(pb, k);
        if (!y || !in_required(a, k) || !in_required(b, k))
            continue;
        json_t *fx = flatten(c, x, "", 0), *fy = flatten(c, y, "", 0);
        if (!fx || !fy)
            return false;
        json_t *vx = value_set(c, fx), *vy = value_set(c, fy);
        if (vx && vy && values_disjoint(vx, vy))
            return true;
        if (!(schema_types(c, fx) & schema_types(c, fy)))
            return true;
    }
    return false;
}

static bool gen(jsc *c, json_t *s, const char *name, const char *path)
{
    if (c->failed)
        return false;
    if (c->out.n > JS_MAX_OUTPUT)
        return jfail(c, path, "schema produces too large a grammar%s", "");
    if (++c->depth > JS_MAX_DEPTH)
        return jfail(c, path, "schema nested too deeply (limit %s)", "64");
    bool ok = false;
    if (json_is_true(s) || (json_is_object(s) && json_object_size(s) == 0)) {
        gsb_printf(&c->out, "%s ::= %s\n", name, prim(c, P_VALUE));
        ok = true;
        goto out;
    }
    if (json_is_false(s)) {
        jfail(c, path, "schema false matches nothing%s", "");
        goto out;
    }
    if (!json_is_object(s)) {
        jfail(c, path, "a schema must be an object or a boolean%s", "");
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (!known_keyword(k)) {
            char p2[512];
            path_join(p2, sizeof p2, path, k);
            jfail(c, p2, "unsupported keyword '%s'", k);
            goto out;
        }
    }
    if (json_object_get(s, "$ref") || json_object_get(s, "allOf")) {
        json_t *f = flatten(c, s, path, 0);
        if (!f)
            goto out;
        json_object_foreach(f, k, v) {
            if (!known_keyword(k) || !strcmp(k, "$ref") || !strcmp(k, "allOf")) {
                char p2[512];
                path_join(p2, sizeof p2, path, k);
                jfail(c, p2, "unsupported keyword '%s' (after merging allOf/$ref)", k);
                goto out;
            }
        }
        ok = gen(c, f, name, path);
        goto out;
    }
    json_t *any = json_object_get(s, "anyOf");
    json_t *one = json_object_get(s, "oneOf");
    if (any && one) {
        jfail(c, path, "anyOf together with oneOf is not supported%s", "");
        goto out;
    }
    if (any || one) {
        const char *kw = any ? "anyOf" : "oneOf";
        json_t *list = any ? any : one;
        char p2[512];
        path_join(p2, sizeof p2, path, kw);
        if (!json_is_array(list) || json_array_size(list) == 0) {
            jfail(c, p2, "must be a non-empty array%s", "");
            goto out;
        }
        json_t *rest = keep(c, json_copy(s));
        json_object_del(rest, kw);
        bool plain = true;
        json_object_foreach(rest, k, v) if (!is_annotation(k)) plain = false;
        if (one) {
            /* generated like anyOf, so the branches must not overlap */
            size_t n = json_array_size(list);
            json_t *flat = keep(c, json_array());
            for (size_t i = 0; i < n; i++) {
                char p3[512];
                path_idx(p3, sizeof p3, path, kw, i);
                json_t *fb = flatten(c, json_array_get(list, i), p3, 0);
                if (fb && !plain)
                    fb = merge(c, rest, fb, p3, 0);
                if (!fb)
                    goto out;
                json_array_append(flat, fb);
                for (size_t j = 0; j < i; j++) {
                    if (!disjoint(c, json_array_get(flat, j), fb)) {
                        char msg[80];
                        snprintf(msg, sizeof msg, "%zu and %zu", j, i);
                        jfail(c, p2, "branches %s may both match; only oneOf branches with "
                                     "different types or const/enum discriminators are "
                                     "supported (or use anyOf)", msg);
                        goto out;
                    }
                }
            }
        }
        grammar_strbuf alts = {0};
        size_t i;
        json_t *b;
        json_array_foreach(list, i, b) {
            char p3[512], rn[64];
            path_idx(p3, sizeof p3, path, kw, i);
            json_t *branch = b;
            if (!plain) {
                json_t *fb = flatten(c, b, p3, 0);
                if (!fb || !(branch = merge(c, rest, fb, p3, 0))) {
                    free(alts.p);
                    goto out;
                }
            }
            if (!sub(c, branch, "alt", p3, rn, sizeof rn)) {
                free(alts.p);
                goto out;
            }
            gsb_printf(&alts, "%s%s", i ? " | " : "", rn);
        }
        gsb_printf(&c->out, "%s ::= %s\n", name, alts.p ? alts.p : "\"\"");
        free(alts.p);
        ok = !c->failed;
        goto out;
    }
    json_t *type = json_object_get(s, "type");
    json_t *types = NULL;
    if (type) {
        char p2[512];
        path_join(p2, sizeof p2, path, "type");
        if (!json_is_string(type) && !json_is_array(type)) {
            jfail(c, p2, "must be a string or an array of strings%s", "");
            goto out;
        }
        types = keep(c, types_of(type));
        size_t i;
        json_array_foreach(types, i, v) {
            if (!json_is_string(v)) {
                jfail(c, p2, "must be a string or an array of strings%s", "");
                goto out;
            }
        }
        if (json_array_size(types) == 0) {
            jfail(c, p2, "empty type list%s", "");
            goto out;
        }
    }
    json_t *en = json_object_get(s, "enum");
    json_t *cn = json_object_get(s, "const");
    if (en || cn) {
        json_object_foreach(s, k, v) {
            if (strcmp(k, "enum") && strcmp(k, "const") && strcmp(k, "type") && !is_annotation(k)) {
                char p2[512];
                path_join(p2, sizeof p2, path, k);
                jfail(c, p2, "'%s' beside enum/const is not supported", k);
                goto out;
            }
        }
        json_t *vals = keep(c, json_array());
        if (cn) {
            json_array_append(vals, cn);
        } else if (json_is_array(en)) {
            json_array_extend(vals, en);
        } else {
            char p2[512];
            path_join(p2, sizeof p2, path, "enum");
            jfail(c, p2, "must be an array%s", "");
            goto out;
        }
        if (en && cn) {
            size_t i;
            bool in = false;
            json_array_foreach(en, i, v) in |= json_equal(v, cn);
            if (!in) {
                jfail(c, path, "const is not one of enum%s", "");
                goto out;
            }
        }
        gsb_printf(&c->out, "%s ::= ", name);
        size_t i, n = 0;
        json_array_foreach(vals, i, v) {
            bool fits = !types;
            size_t j;
            json_t *t;
            if (types)
                json_array_foreach(types, j, t) fits |= value_has_type(v, json_string_value(t));
            if (!fits)
                continue;
            if (n++)
                gsb_puts(&c->out, " | ");
            if (!put_json_lit(c, &c->out, v, path))
                goto out;
        }
        gsb_puts(&c->out, "\n");
        if (!n) {
            jfail(c, path, "no enum/const value has the given type%s", "");
            goto out;
        }
        ok = true;
        goto out;
    }
    if (!types) {
        static const char *const okw[] = {"properties", "required", "additionalProperties",
                                          "patternProperties", "minProperties",
                                          "maxProperties", NULL};
        static const char *const akw[] = {"items", "prefixItems", "additionalItems",
                                          "minItems", "maxItems", NULL};
        static const char *const skw[] = {"minLength", "maxLength", "pattern", "format", NULL};
        static const char *const nkw[] = {"minimum", "maximum", "exclusiveMinimum",
                                          "exclusiveMaximum", NULL};
        types = keep(c, json_array());
        if (has_any(s, okw))
            json_array_append_new(types, json_string("object"));
        if (has_any(s, akw))
            json_array_append_new(types, json_string("array"));
        if (has_any(s, skw))
            json_array_append_new(types, json_string("string"));
        if (has_any(s, nkw))
            json_array_append_new(types, json_string("number"));
        if (json_array_size(types) == 0) {
            gsb_printf(&c->out, "%s ::= %s\n", name, prim(c, P_VALUE));
            ok = true;
            goto out;
        }
    }
    if (json_array_size(types) == 1) {
        ok = gen_type(c, s, json_string_value(json_array_get(types, 0)), name, path);
        goto out;
    }
    {
        grammar_strbuf alts = {0};
        size_t i;
        json_array_foreach(types, i, v) {
            char rn[64];
            new_name(c, rn, sizeof rn, json_string_value(v));
            if (!gen_type(c, s, json_string_value(v), rn, path)) {
                free(alts.p);
                goto out;
            }
            gsb_printf(&alts, "%s%s", i ? " | " : "", rn);
        }
        gsb_printf(&c->out, "%s ::= %s\n", name, alts.p);
        free(alts.p);
        ok = true;
    }
out:
    c->depth--;
    return ok && !c->failed;
}

char *json_schema_to_gbnf(const char *schema, size_t len, const json_schema_opts *opts,
                          char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (!schema) {
        snprintf(err, errlen, "no schema");
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(schema, len, JSON_DECODE_ANY, &je);
    if (!root) {
        snprintf(err, errlen, "schema is not valid JSON: line %d column %d: %s", je.line,
                 je.column, je.text);
        return NULL;
    }
    jsc c = {0};
    c.root = root;
    c.pretty = opts && opts->pretty;
    c.comma = c.pretty ? "\", \"" : "\",\"";
    c.colon = c.pretty ? "\": \"" : "\":\"";
    c.err = err;
    c.errlen = errlen;
    c.scratch = json_array();
    char *res = NULL;
    if (!c.scratch) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (gen(&c, root, "root", "")) {
        if (c.out.oom)
            snprintf(err, errlen, "out of memory");
        else
            res = c.out.p;
    }
done:
    if (!res)
        free(c.out.p);
    for (size_t i = 0; i < c.n_refs; i++) {
        free(c.refs[i].ptr);
        free(c.refs[i].name);
    }
    free(c.refs);
    json_decref(c.scratch);
    json_decref(root);
    return res;
}

grammar *grammar_from_json_schema(const char *schema, size_t len, const json_schema_opts *opts,
                                  char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    char *text = json_schema_to_gbnf(schema, len, opts, err, errlen);
    if (!text)
        return NULL;
    char gerr[256];
    grammar *g = grammar_from_gbnf(text, strlen(text), "root", gerr, sizeof gerr);
    if (!g)
        snprintf(err, errlen, "schema grammar: %s", gerr);
    free(text);
    return g;
}
