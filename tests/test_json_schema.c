/* test_json_schema.c - JSON Schema -> grammar: hand-written valid/invalid instances per
 * keyword, random byte- and token-level walks whose outputs must parse (jansson) and
 * validate (a validator written here, and Python's jsonschema when installed), error
 * reporting with JSON pointers, and the mask-cost benchmark on the 128K Llama 3 vocab. */
#include "gguf.h"
#include "grammar.h"
#include "grammar_vocab_gguf.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

/* ---------- a small JSON Schema validator for the supported keywords ---------- */

static bool re_search(const char *pat, const char *s, size_t n)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo, NULL);
    if (!re)
        return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

static size_t utf8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static bool valid_date(const char *s)
{
    int y, m, d;
    if (strlen(s) != 10 || !re_search("^\\d{4}-\\d{2}-\\d{2}$", s, 10) ||
        sscanf(s, "%d-%d-%d", &y, &m, &d) != 3)
        return false;
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= dm[m - 1] + (m == 2 && leap);
}

static bool valid_time(const char *s)
{
    return re_search("^([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d+)?(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)$",
                     s, strlen(s));
}

static bool valid_format(const char *f, const char *s, size_t n)
{
    if (!strcmp(f, "date"))
        return valid_date(s);
    if (!strcmp(f, "time"))
        return valid_time(s);
    if (!strcmp(f, "date-time")) {
        char d[16];
        if (n < 11 || s[10] != 'T')
            return false;
        memcpy(d, s, 10);
        d[10] = 0;
        return valid_date(d) && valid_time(s + 11);
    }
    if (!strcmp(f, "email"))
        return re_search("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", s, n);
    if (!strcmp(f, "uuid"))
        return re_search("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", s, n);
    if (!strcmp(f, "ipv4")) {
        struct in_addr a;
        return re_search("^(0|[1-9]\\d*)(\\.(0|[1-9]\\d*)){3}$", s, n) && inet_pton(AF_INET, s, &a) == 1;
    }
    if (!strcmp(f, "ipv6")) {
        struct in6_addr a;
        return inet_pton(AF_INET6, s, &a) == 1;
    }
    if (!strcmp(f, "hostname"))
        return n <= 253 &&
               re_search("^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$", s, n);
    if (!strcmp(f, "uri"))
        return re_search("^[a-zA-Z][a-zA-Z0-9+.-]*:[^\\s\"<>\\\\^`{|}]*$", s, n);
    return false;
}

static json_t *v_root;

static json_t *v_resolve(const char *ref)
{
    json_t *cur = v_root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        while (*p && *p != '/' && n < 255) {
            char ch = *p++;
            if (ch == '~' && (*p == '0' || *p == '1'))
                ch = *p++ == '0' ? '~' : '/';
            tok[n++] = ch;
        }
        tok[n] = 0;
        cur = json_is_object(cur) ? json_object_get(cur, tok) : json_array_get(cur, strtoul(tok, NULL, 10));
    }
    return cur;
}

static bool is_type(json_t *v, const char *t)
{
    if (!strcmp(t, "integer"))
        return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    if (!strcmp(t, "number"))
        return json_is_number(v);
    if (!strcmp(t, "string"))
        return json_is_string(v);
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

static bool jeq(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_is_array(a) && json_is_array(b)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!jeq(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (json_is_object(a) && json_is_object(b)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !jeq(v, w))
                return false;
        }
        return true;
    }
    return json_equal(a, b);
}

static bool validate(json_t *s, json_t *x)
{
    if (json_is_boolean(s))
        return json_is_true(s);
    json_t *v;
    if ((v = json_object_get(s, "$ref")) && !validate(v_resolve(json_string_value(v)), x))
        return false;
    if ((v = json_object_get(s, "allOf"))) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!validate(json_array_get(v, i), x))
                return false;
    }
    if ((v = json_object_get(s, "anyOf"))) {
        bool any = false;
        for (size_t i = 0; i < json_array_size(v) && !any; i++)
            any = validate(json_array_get(v, i), x);
        if (!any)
            return false;
    }
    if ((v = json_object_get(s, "oneOf"))) {
        int n = 0;
        for (size_t i = 0; i < json_array_size(v); i++)
            n += validate(json_array_get(v, i), x);
        if (n != 1)
            return false;
    }
    if ((v = json_object_get(s, "const")) && !jeq(v, x))
        return false;
    if ((v = json_object_get(s, "enum"))) {
        bool in = false;
        for (size_t i = 0; i < json_array_size(v); i++)
            in |= jeq(json_array_get(v, i), x);
        if (!in)
            return false;
    }
    if ((v = json_object_get(s, "type"))) {
        bool ok = false;
        if (json_is_string(v))
            ok = is_type(x, json_string_value(v));
        for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++)
            ok |= is_type(x, json_string_value(json_array_get(v, i)));
        if (!ok)
            return false;
    }
    if (json_is_string(x)) {
        const char *str = json_string_value(x);
        size_t n = json_string_length(x), cps = utf8_count(str, n);
        if ((v = json_object_get(s, "minLength")) && (json_int_t)cps < json_integer_value(v))
            return false;
        if ((v = json_object_get(s, "maxLength")) && (json_int_t)cps > json_integer_value(v))
            return false;
        if ((v = json_object_get(s, "pattern")) && !re_search(json_string_value(v), str, n))
            return false;
        if ((v = json_object_get(s, "format")) && !valid_format(json_string_value(v), str, n))
            return false;
    }
    if (json_is_number(x)) {
        double d = json_number_value(x);
        json_t *emin = json_object_get(s, "exclusiveMinimum"), *emax = json_object_get(s, "exclusiveMaximum");
        if ((v = json_object_get(s, "minimum"))) {
            if (json_is_true(emin) ? d <= json_number_value(v) : d < json_number_value(v))
                return false;
        }
        if ((v = json_object_get(s, "maximum"))) {
            if (json_is_true(emax) ? d >= json_number_value(v) : d > json_number_value(v))
                return false;
        }
        if (json_is_number(emin) && d <= json_number_value(emin))
            return false;
        if (json_is_number(emax) && d >= json_number_value(emax))
            return false;
    }
    if (json_is_object(x)) {
        json_t *props = json_object_get(s, "properties"), *pp = json_object_get(s, "patternProperties");
        json_t *addl = json_object_get(s, "additionalProperties");
        if ((v = json_object_get(s, "required"))) {
            for (size_t i = 0; i < json_array_size(v); i++)
                if (!json_object_get(x, json_string_value(json_array_get(v, i))))
                    return false;
        }
        if ((v = json_object_get(s, "minProperties")) && (json_int_t)json_object_size(x) < json_integer_value(v))
            return false;
        if ((v = json_object_get(s, "maxProperties")) && (json_int_t)json_object_size(x) > json_integer_value(v))
            return false;
        const char *k;
        json_t *val;
        json_object_foreach(x, k, val) {
            bool matched = false;
            json_t *ps = props ? json_object_get(props, k) : NULL;
            if (ps) {
                matched = true;
                if (!validate(ps, val))
                    return false;
            }
            const char *pk;
            json_t *pv;
            if (pp) {
                json_object_foreach(pp, pk, pv) {
                    if (re_search(pk, k, strlen(k))) {
                        matched = true;
                        if (!validate(pv, val))
                            return false;
                    }
                }
            }
            if (!matched && addl && !validate(addl, val))
                return false;
        }
    }
    if (json_is_array(x)) {
        size_t n = json_array_size(x), np = 0;
        json_t *prefix = json_object_get(s, "prefixItems"), *items = json_object_get(s, "items");
        if (json_is_array(items)) {
            prefix = items;
            items = json_object_get(s, "additionalItems");
        }
        if (prefix) {
            np = json_array_size(prefix);
            for (size_t i = 0; i < n && i < np; i++)
                if (!validate(json_array_get(prefix, i), json_array_get(x, i)))
                    return false;
        }
        if (items)
            for (size_t i = np; i < n; i++)
                if (!validate(items, json_array_get(x, i)))
                    return false;
        if ((v = json_object_get(s, "minItems")) && (json_int_t)n < json_integer_value(v))
            return false;
        if ((v = json_object_get(s, "maxItems")) && (json_int_t)n > json_integer_value(v))
            return false;
    }
    return true;
}

static bool schema_valid(json_t *schema, json_t *inst)
{
    v_root = schema;
    return validate(schema, inst);
}

/* ---------- cases: schema, instances that must be accepted / rejected ---------- */

typedef struct {
    const char *schema;
    const char *valid[8];
    const char *invalid[8];
} schema_case;

static const schema_case cases[] = {
    /* type and type arrays (nullable) */
    {"{\"type\":\"string\"}", {"\"\"", "\"abc\"", "\"\\u00e9\\n\"", "\"h\\u00e9llo w\\u00f6rld\""}, {"abc", "\"a", "1", "\"\\x\""}},
    {"{\"type\":\"integer\"}", {"0", "-5", "1234567890"}, {"01", "1.5", "\"1\"", "+1"}},
    {"{\"type\":\"number\"}", {"0", "-1.25", "3e10", "2.5E-3"}, {".5", "1.", "--1", "1e"}},
    {"{\"type\":\"boolean\"}", {"true", "false"}, {"True", "1", "null"}},
    {"{\"type\":\"null\"}", {"null"}, {"nul", "0"}},
    {"{\"type\":[\"string\",\"null\"]}", {"null", "\"x\""}, {"1", "true"}},
    {"{\"type\":[\"integer\",\"boolean\"]}", {"7", "true"}, {"\"7\"", "null"}},
    /* enum / const */
    {"{\"enum\":[\"red\",\"green\",1,null,{\"a\":[1,2]}]}", {"\"red\"", "\"green\"", "1", "null", "{\"a\":[1,2]}"}, {"\"blue\"", "2", "{\"a\":[1]}"}},
    {"{\"const\":\"fixed\"}", {"\"fixed\""}, {"\"fixe\"", "\"fixedd\""}},
    {"{\"type\":\"string\",\"enum\":[\"a\",1,\"b\"]}", {"\"a\"", "\"b\""}, {"1"}},
    /* strings */
    {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":4}", {"\"ab\"", "\"abcd\"", "\"\\u00e9\\u00e9\""}, {"\"a\"", "\"abcde\"", "\"\""}},
    {"{\"type\":\"string\",\"pattern\":\"^[a-z]+-\\\\d{2,3}$\"}", {"\"abc-12\"", "\"x-999\""}, {"\"abc-1\"", "\"ABC-12\"", "\"abc-1234\""}},
    {"{\"type\":\"string\",\"pattern\":\"ab\"}", {"\"ab\"", "\"xxabyy\""}, {"\"a\"", "\"ba\""}},
    {"{\"type\":\"string\",\"format\":\"date\"}", {"\"2024-02-29\"", "\"1999-12-31\""}, {"\"2023-02-29\"", "\"2024-13-01\"", "\"2024-04-31\"", "\"0000-01-01\""}},
    {"{\"type\":\"string\",\"format\":\"time\"}", {"\"23:59:59Z\"", "\"00:00:00.123+05:30\""}, {"\"24:00:00Z\"", "\"12:00:00\""}},
    {"{\"type\":\"string\",\"format\":\"date-time\"}", {"\"2024-01-15T10:30:00Z\""}, {"\"2024-01-15 10:30:00Z\""}},
    {"{\"type\":\"string\",\"format\":\"email\"}", {"\"john.doe@example.com\""}, {"\"john@\"", "\"@x.com\""}},
    {"{\"type\":\"string\",\"format\":\"uuid\"}", {"\"123e4567-e89b-12d3-a456-426614174000\""}, {"\"123e4567e89b12d3a456426614174000\""}},
    {"{\"type\":\"string\",\"format\":\"ipv4\"}", {"\"192.168.0.1\"", "\"255.255.255.255\""}, {"\"256.1.1.1\"", "\"01.2.3.4\"", "\"1.2.3\""}},
    {"{\"type\":\"string\",\"format\":\"ipv6\"}", {"\"::1\"", "\"2001:db8::ff00:42:8329\"", "\"1:2:3:4:5:6:7:8\""}, {"\"1:2:3:4:5:6:7:8:9\"", "\"1::2::3\"", "\"12345::\""}},
    {"{\"type\":\"string\",\"format\":\"hostname\"}", {"\"example.com\"", "\"a-b.c\""}, {"\"-a.com\"", "\"a..b\""}},
    {"{\"type\":\"string\",\"format\":\"uri\"}", {"\"https://example.com/a/b\""}, {"\"example.com\""}},
    /* integer ranges */
    {"{\"type\":\"integer\",\"minimum\":-15,\"maximum\":237}", {"-15", "-1", "0", "9", "10", "99", "100", "237"}, {"-16", "238", "300", "-100", "1000"}},
    {"{\"type\":\"integer\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":10}", {"1", "9"}, {"0", "10", "-1"}},
    {"{\"type\":\"integer\",\"minimum\":1000}", {"1000", "99999", "123456789012"}, {"999", "-1000", "0"}},
    {"{\"type\":\"integer\",\"maximum\":-3}", {"-3", "-4", "-1000"}, {"-2", "0", "5"}},
    {"{\"type\":\"integer\",\"minimum\":2.5,\"maximum\":7.5}", {"3", "7"}, {"2", "8"}},
    {"{\"type\":\"integer\",\"minimum\":5,\"exclusiveMinimum\":true}", {"6"}, {"5"}},
    /* number ranges */
    {"{\"type\":\"number\",\"minimum\":0,\"maximum\":1}", {"0", "1", "0.5", "0.999"}, {"1.5", "-0.1", "2", "1.0001"}},
    {"{\"type\":\"number\",\"exclusiveMinimum\":-2,\"maximum\":3}", {"-1.5", "-0.5", "3", "2.75", "-1"}, {"-2", "-2.5", "3.1", "4"}},
    {"{\"type\":\"number\",\"exclusiveMaximum\":100,\"exclusiveMinimum\":-5000000000}", {"99.5", "-4999999999", "0.000001"}, {"100", "99.9999999999999999", "-5000000000", "-5000000000.5"}},
    /* decimal bounds: exact, inclusive and exclusive, negative, more than 6 digits */
    {"{\"type\":\"number\",\"minimum\":0.5,\"maximum\":2.75}", {"0.5", "2.75", "1", "2", "0.500001", "2.749999", "1.125"}, {"0.499999", "0.4", "2.750001", "2.8", "3", "0", "-0.5"}},
    {"{\"type\":\"number\",\"exclusiveMinimum\":0.5,\"exclusiveMaximum\":2.75}", {"0.500001", "2.749999", "1.5", "2"}, {"0.5", "2.75", "0.4999", "2.76"}},
    {"{\"type\":\"number\",\"minimum\":-3.125,\"exclusiveMaximum\":-0.75}", {"-3.125", "-0.750001", "-1", "-3", "-0.8", "-3.124999"}, {"-3.125001", "-0.75", "-0.7", "0", "-4", "1"}},
    {"{\"type\":\"number\",\"exclusiveMinimum\":-0.001,\"maximum\":0.001}", {"-0.000999", "0", "0.001", "0.000001", "-0.0005"}, {"-0.001", "0.0011", "-1", "1"}},
    {"{\"type\":\"number\",\"minimum\":0.1234567,\"maximum\":0.3}", {"0.123457", "0.3", "0.2", "0.29"}, {"0.123456", "0.1", "0.300001", "1"}},
    {"{\"type\":\"number\",\"minimum\":1.5,\"exclusiveMinimum\":true,\"maximum\":2}", {"1.500001", "2", "1.75"}, {"1.5", "2.000001", "1"}},
    {"{\"type\":\"number\",\"exclusiveMinimum\":-1e-7,\"exclusiveMaximum\":1e-7}", {"0"}, {"0.000001", "-0.000001", "1"}},
    /* arrays */
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3}", {"[1]", "[1,2,3]"}, {"[]", "[1,2,3,4]", "[\"a\"]"}},
    {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],\"items\":false}", {"[]", "[\"a\"]", "[\"a\",1]"}, {"[1]", "[\"a\",1,2]"}},
    {"{\"type\":\"array\",\"prefixItems\":[{\"const\":1}],\"items\":{\"type\":\"boolean\"},\"minItems\":2}", {"[1,true]", "[1,false,true]"}, {"[1]", "[true]", "[1,2]"}},
    {"{\"type\":\"array\"}", {"[]", "[1,\"a\",{},[null]]"}, {"[1,]"}},
    /* objects */
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}},\"required\":[\"a\",\"b\"]}", {"{\"a\":1,\"b\":\"x\"}"}, {"{\"a\":1}", "{}", "{\"a\":\"1\",\"b\":\"x\"}"}},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"},\"c\":{\"type\":\"integer\"}}}", {"{}", "{\"a\":1}", "{\"b\":2}", "{\"a\":1,\"c\":3}", "{\"a\":1,\"b\":2,\"c\":3}"}, {"{,\"a\":1}", "{\"a\":1,}", "{\"a\":1,\"a\":\"x\"}"}},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"},\"c\":{\"type\":\"integer\"}},\"minProperties\":2,\"maxProperties\":2}", {"{\"a\":1,\"b\":2}", "{\"b\":1,\"c\":2}"}, {"{\"a\":1}", "{\"a\":1,\"b\":2,\"c\":3}", "{}"}},
    {"{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}},\"required\":[\"id\"],\"additionalProperties\":{\"type\":\"boolean\"}}", {"{\"id\":1}", "{\"id\":1,\"x\":true,\"idx\":false}", "{\"id\":1,\"i\":true}"}, {"{\"id\":1,\"x\":1}", "{\"id\":1,\"id\":true}"}},
    {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"},\"minProperties\":1,\"maxProperties\":2}", {"{\"a\":1}", "{\"a\":1,\"b\":2}"}, {"{}", "{\"a\":1,\"b\":2,\"c\":3}", "{\"a\":\"x\"}"}},
    {"{\"type\":\"object\",\"patternProperties\":{\"^x-[a-z]+$\":{\"type\":\"string\"}},\"additionalProperties\":false}", {"{}", "{\"x-ab\":\"v\"}", "{\"x-a\":\"1\",\"x-b\":\"2\"}"}, {"{\"y\":\"v\"}", "{\"x-1\":\"v\"}", "{\"x-a\":1}"}},
    {"{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\",\"extra\"]}", {"{\"q\":\"a\",\"extra\":[1]}"}, {"{\"q\":\"a\"}"}},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"additionalProperties\":true}", {"{\"a\":1,\"b\":[1]}", "{\"b\":\"x\"}", "{}"}, {"{\"a\":\"x\"}", "{\"a\":1,\"a\":2,}"}},
    {"{\"type\":\"array\",\"items\":false}", {"[]"}, {"[1]", "[null]"}},
    /* combinators */
    {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":2}]}", {"5", "\"ab\""}, {"\"abc\"", "true"}},
    {"{\"oneOf\":[{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"a\"},\"x\":{\"type\":\"integer\"}},\"required\":[\"kind\",\"x\"]},{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"b\"},\"y\":{\"type\":\"boolean\"}},\"required\":[\"kind\",\"y\"]}]}", {"{\"kind\":\"a\",\"x\":1}", "{\"kind\":\"b\",\"y\":true}"}, {"{\"kind\":\"a\",\"y\":true}", "{\"kind\":\"c\",\"x\":1}"}},
    {"{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"integer\"},{\"enum\":[true,null]}]}", {"\"s\"", "3", "true", "null"}, {"false", "1.5"}},
    {"{\"allOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":0}},\"required\":[\"a\"]},{\"properties\":{\"b\":{\"type\":\"string\"},\"a\":{\"maximum\":5}},\"required\":[\"b\"]}]}", {"{\"a\":0,\"b\":\"x\"}", "{\"a\":5,\"b\":\"\"}"}, {"{\"a\":6,\"b\":\"x\"}", "{\"a\":1}", "{\"a\":-1,\"b\":\"x\"}"}},
    {"{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"}},\"anyOf\":[{\"required\":[\"v\"]},{\"properties\":{\"w\":{\"type\":\"null\"}},\"required\":[\"w\"]}]}", {"{\"v\":1}", "{\"w\":null}"}, {"{}"}},
    /* $ref / $defs incl. recursion */
    {"{\"$defs\":{\"pos\":{\"type\":\"integer\",\"minimum\":1}},\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/pos\"}}", {"[1,2,30]", "[]"}, {"[0]", "[-1]"}},
    {"{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/node\"},{\"type\":\"null\"}]}},\"required\":[\"v\",\"next\"]}},\"$ref\":\"#/$defs/node\"}", {"{\"v\":1,\"next\":null}", "{\"v\":1,\"next\":{\"v\":2,\"next\":null}}"}, {"{\"v\":1}", "{\"v\":1,\"next\":{\"v\":2}}"}},
    {"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}},\"required\":[\"name\"]}", {"{\"name\":\"a\"}", "{\"name\":\"a\",\"children\":[{\"name\":\"b\",\"children\":[]}]}"}, {"{\"name\":\"a\",\"children\":[{}]}"}},
    {"{\"definitions\":{\"e\":{\"enum\":[\"x\",\"y\"]}},\"type\":\"object\",\"properties\":{\"e\":{\"$ref\":\"#/definitions/e\",\"description\":\"d\"}},\"required\":[\"e\"]}", {"{\"e\":\"x\"}"}, {"{\"e\":\"z\"}"}},
    /* annotations are fine; any value */
    {"{\"title\":\"t\",\"description\":\"d\",\"examples\":[1],\"default\":1}", {"1", "\"s\"", "[{}]", "{\"a\":null}"}, {"nope"}},
    {"true", {"null", "{\"k\":[1,2.5]}"}, {"[1"}},
};

static grammar *compile(const char *schema, bool pretty, char *err, size_t errlen)
{
    json_schema_opts o = {pretty};
    return grammar_from_json_schema(schema, strlen(schema), &o, err, errlen);
}

static bool accepts(const grammar *g, const char *text)
{
    grammar_matcher *m = grammar_matcher_new(g);
    bool ok = grammar_matcher_accept_bytes(m, text, strlen(text)) && grammar_matcher_is_complete(m);
    grammar_matcher_free(m);
    return ok;
}

static void test_instances(void **state)
{
    (void)state;
    char err[256];
    int n_checked = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const schema_case *c = &cases[i];
        grammar *g = compile(c->schema, false, err, sizeof err);
        if (!g)
            fail_msg("schema %zu failed to compile: %s\n%s", i, err, c->schema);
        json_t *sj = json_loads(c->schema, JSON_DECODE_ANY, NULL);
        assert_non_null(sj);
        for (int k = 0; k < 8 && c->valid[k]; k++) {
            /* the reference validator must agree that the instance is valid */
            json_t *x = json_loads(c->valid[k], JSON_DECODE_ANY, NULL);
            assert_non_null(x);
            if (!schema_valid(sj, x))
                fail_msg("case %zu: test validator rejects %s", i, c->valid[k]);
            json_decref(x);
            if (!accepts(g, c->valid[k]))
                fail_msg("case %zu: grammar rejects valid %s\nschema %s", i, c->valid[k], c->schema);
            n_checked++;
        }
        for (int k = 0; k < 8 && c->invalid[k]; k++) {
            json_t *x = json_loads(c->invalid[k], JSON_DECODE_ANY, NULL);
            if (x && schema_valid(sj, x) && !strstr(c->invalid[k], "\"id\":1,\"id\""))
                fail_msg("case %zu: %s is valid per the test validator", i, c->invalid[k]);
            json_decref(x);
            if (accepts(g, c->invalid[k]))
                fail_msg("case %zu: grammar accepts invalid %s\nschema %s", i, c->invalid[k], c->schema);
            n_checked++;
        }
        json_decref(sj);
        grammar_free(g);
    }
    printf("checked %d instances over %zu schemas\n", n_checked, sizeof cases / sizeof cases[0]);
}

/* ---------- random walks ---------- */

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* Shortest byte string completing the text from the matcher's position (BFS over
 * snapshots). Returns its length (written into out) or -1. */
static int shortest_completion(grammar_matcher *m, uint8_t *out, int cap)
{
    enum { MAXQ = 1 << 16 };
    static grammar_snapshot q[MAXQ];
    static int parent[MAXQ];
    static uint8_t via[MAXQ];
    static grammar_snapshot seen[MAXQ * 2];
    static uint8_t used[MAXQ * 2];
    memset(used, 0, sizeof used);
    grammar_snapshot start = grammar_matcher_snapshot(m);
    int head = 0, tail = 0;
    q[tail] = start;
    parent[tail++] = -1;
    int found = -1;
    while (head < tail && found < 0) {
        int cur = head++;
        grammar_matcher_restore(m, q[cur]);
        if (grammar_matcher_is_complete(m)) {
            found = cur;
            break;
        }
        uint8_t allowed[32];
        grammar_matcher_allowed_bytes(m, allowed);
        for (int b = 0; b < 256 && tail < MAXQ; b++) {
            if (!(allowed[b >> 3] & (1u << (b & 7))))
                continue;
            grammar_matcher_restore(m, q[cur]);
            if (!grammar_matcher_accept_byte(m, (uint8_t)b))
                continue;
            grammar_snapshot s = grammar_matcher_snapshot(m);
            size_t h = (size_t)(s * 0x9E3779B97F4A7C15ull >> 40) % (MAXQ * 2);
            bool dup = false;
            while (used[h]) {
                if (seen[h] == s) {
                    dup = true;
                    break;
                }
                h = (h + 1) % (MAXQ * 2);
            }
            if (dup)
                continue;
            used[h] = 1;
            seen[h] = s;
            q[tail] = s;
            parent[tail] = cur;
            via[tail++] = (uint8_t)b;
        }
    }
    grammar_matcher_restore(m, start);
    if (found < 0)
        return -1;
    int len = 0;
    for (int i = found; parent[i] >= 0; i = parent[i])
        len++;
    if (len > cap)
        return -1;
    int k = len;
    for (int i = found; parent[i] >= 0; i = parent[i])
        out[--k] = via[i];
    return len;
}

typedef struct {
    FILE *py; /* JSON lines for the Python validator, or NULL */
    int n_outputs;
} walk_log;

static void check_output(const char *schema, const char *text, size_t n, walk_log *log)
{
    json_error_t e;
    json_t *x = json_loadb(text, n, JSON_DECODE_ANY, &e);
    if (!x)
        fail_msg("output does not parse (%s): %.*s\nschema %s", e.text, (int)n, text, schema);
    json_t *sj = json_loads(schema, JSON_DECODE_ANY, NULL);
    if (!schema_valid(sj, x))
        fail_msg("output does not validate: %.*s\nschema %s", (int)n, text, schema);
    if (log->py) {
        json_t *line = json_pack("{s:O,s:O}", "schema", sj, "instance", x);
        char *s = json_dumps(line, JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(log->py, "%s\n", s);
        free(s);
        json_decref(line);
    }
    log->n_outputs++;
    json_decref(x);
    json_decref(sj);
}

static void byte_walk(const grammar *g, const char *schema, int budget, walk_log *log)
{
    grammar_matcher *m = grammar_matcher_new(g);
    assert_non_null(m);
    static uint8_t text[1 << 16];
    size_t n = 0;
    while (n < (size_t)budget) {
        if (grammar_matcher_is_complete(m) && rnd() % 8 == 0)
            break;
        uint8_t allowed[32];
        grammar_matcher_allowed_bytes(m, allowed);
        int opts[256], no = 0, ascii[256], na = 0;
        for (int b = 0; b < 256; b++) {
            if (allowed[b >> 3] & (1u << (b & 7))) {
                opts[no++] = b;
                if (b < 0x80)
                    ascii[na++] = b;
            }
        }
        if (no == 0)
            break;
        int b = (na && rnd() % 8) ? ascii[rnd() % (uint32_t)na] : opts[rnd() % (uint32_t)no];
        assert_true(grammar_matcher_accept_byte(m, (uint8_t)b));
        text[n++] = (uint8_t)b;
    }
    if (!grammar_matcher_is_complete(m)) {
        int k = shortest_completion(m, text + n, (int)(sizeof text - n));
        if (k < 0)
            fail_msg("no completion found after %.*s", (int)n, (const char *)text);
        assert_true(grammar_matcher_accept_bytes(m, text + n, (size_t)k));
        n += (size_t)k;
    }
    assert_true(grammar_matcher_is_complete(m));
    check_output(schema, (const char *)text, n, log);
    grammar_matcher_free(m);
}

/* A Python with jsonschema: Debian's (python3-jsonschema) first, since python3 on PATH
 * may be another build without it. */
static const char *py_exe(void)
{
    if (system("/usr/bin/python3 -c 'import jsonschema' 2>/dev/null") == 0)
        return "/usr/bin/python3";
    return "python3";
}

static FILE *open_py_log(char *path, size_t cap)
{
    if (system("/usr/bin/python3 -c 'import jsonschema' 2>/dev/null") != 0 &&
        system("python3 -c 'import jsonschema' 2>/dev/null") != 0) {
        printf("python3 jsonschema not installed: only the built-in validator runs\n");
        return NULL;
    }
    snprintf(path, cap, "/tmp/orc_schema_walks_%d.jsonl", (int)getpid());
    return fopen(path, "w");
}

static void run_python(const char *path, int expect)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s -c \"\nimport json,sys\nfrom jsonschema import Draft202012Validator"
             "\nn=bad=0\nfor line in open('%s'):\n  d=json.loads(line); n+=1\n  "
             "v=Draft202012Validator(d['schema'], format_checker=Draft202012Validator.FORMAT_CHECKER)\n  errs=list("
             "v.iter_errors(d['instance']))\n  if errs:\n    bad+=1\n    print('INVALID', "
             "json.dumps(d['instance']), errs[0].message, json.dumps(d['schema']))\nprint('python "
             "jsonschema validated', n, 'outputs,', bad, 'invalid')\nsys.exit(1 if bad or n!=%d "
             "else 0)\"",
             py_exe(), path, expect);
    int rc = system(cmd);
    remove(path);
    assert_int_equal(rc, 0);
}

static void test_random_walks(void **state)
{
    (void)state;
    char err[256], pypath[256];
    walk_log log = {open_py_log(pypath, sizeof pypath), 0};
    for (int pretty = 0; pretty < 2; pretty++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            grammar *g = compile(cases[i].schema, pretty, err, sizeof err);
            assert_non_null(g);
            for (int seed = 0; seed < 12; seed++) {
                rng_state = (uint64_t)(i * 1000 + (size_t)seed * 7 + (size_t)pretty) + 1;
                byte_walk(g, cases[i].schema, seed % 3 == 0 ? 8 : 40 + seed * 20, &log);
            }
            grammar_free(g);
        }
    }
    printf("random byte walks: %d outputs parsed and validated\n", log.n_outputs);
    if (log.py) {
        fclose(log.py);
        run_python(pypath, log.n_outputs);
    }
}

/* ---------- decimal bounds: the grammar equals the definition near every bound ---------- */

typedef __int128 i128;

static void micro_text(i128 m, char *buf, size_t cap)
{
    bool neg = m < 0;
    i128 a = neg ? -m : m;
    long long ip = (long long)(a / 1000000);
    int fp = (int)(a % 1000000);
    if (!fp) {
        snprintf(buf, cap, "%s%lld", neg ? "-" : "", ip);
        return;
    }
    char f[16];
    snprintf(f, sizeof f, "%06d", fp);
    for (int n = 6; f[n - 1] == '0'; n--)
        f[n - 1] = 0;
    snprintf(buf, cap, "%s%lld.%s", neg ? "-" : "", ip, f);
}

/* The definition for one bound, for a decimal of at most 6 fraction digits (micro value m,
 * text t): it must hold against the bound's decimal value (micro, exact: the bounds below
 * have at most 6 fraction digits), against the bound as a double with the instance read
 * as a double (Python floats, jansson reals), and for integers read exactly against the
 * double (Python int vs float) or against an exact integer bound. */
static int cmp3(i128 a, i128 b)
{
    return a < b ? -1 : a > b;
}

/* an instance read as a double against an integer, exactly */
static int cmp_dbl_ll(double d, long long v)
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

static bool ok_side(int c, bool lower, bool ex)
{
    return lower ? (ex ? c > 0 : c >= 0) : (ex ? c < 0 : c <= 0);
}

static void test_decimal_bounds(void **state)
{
    (void)state;
    static const struct {
        const char *key, *text; /* bound keyword and its JSON text */
        long long micro_hi, micro_lo; /* exact value * 10^6 = hi * 10^6 + lo */
    } b[] = {
        {"minimum", "0.5", 0, 500000},
        {"exclusiveMinimum", "0.5", 0, 500000},
        {"maximum", "2.75", 2, 750000},
        {"exclusiveMaximum", "2.75", 2, 750000},
        {"minimum", "-1.25", -1, -250000},
        {"exclusiveMaximum", "-0.1", 0, -100000},
        {"exclusiveMinimum", "0.1", 0, 100000},
        {"maximum", "0.3", 0, 300000},
        {"minimum", "0.000001", 0, 1},
        {"exclusiveMaximum", "-0.000001", 0, -1},
        {"exclusiveMinimum", "123456.789", 123456, 789000},
        {"maximum", "-98765.4321", -98765, -432100},
        {"exclusiveMinimum", "7", 7, 0},
        {"exclusiveMaximum", "-7", -7, 0},
        {"minimum", "1000000000000000.5", 1000000000000000LL, 500000},
        {"exclusiveMinimum", "1000000000000000.5", 1000000000000000LL, 500000},
        {"exclusiveMaximum", "4503599627370495.5", 4503599627370495LL, 500000},
        {"exclusiveMinimum", "9007199254740993", 9007199254740993LL, 0},
        {"maximum", "9007199254740993", 9007199254740993LL, 0},
        {"exclusiveMaximum", "-9007199254740993", -9007199254740993LL, 0},
        {"exclusiveMinimum", "5000000000.25", 5000000000LL, 250000},
    };
    char err[256], schema[256], t[64];
    int checked = 0, accepted = 0;
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        for (int ty = 0; ty < 2; ty++) {
            snprintf(schema, sizeof schema, "{\"type\":\"%s\",\"%s\":%s}", ty ? "integer" : "number",
                     b[i].key, b[i].text);
            grammar *g = compile(schema, false, err, sizeof err);
            if (!g)
                fail_msg("%s: %s", schema, err);
            bool lower = strstr(b[i].key, "inimum") != NULL, ex = b[i].key[0] == 'e';
            bool is_int = !strchr(b[i].text, '.');
            double dv = strtod(b[i].text, NULL);
            i128 D = (i128)b[i].micro_hi * 1000000 + b[i].micro_lo;
            /* candidates: every micro value near the bound, and steps of about an eighth
             * of the double spacing there (so the rounding zone is crossed) */
            double ulp = nextafter(fabs(dv), INFINITY) - fabs(dv);
            i128 step = (i128)(ulp * 1e6 / 8) + 1;
            for (int pass = 0; pass < 2; pass++) {
                i128 s = pass ? step : 1;
                for (int k = -3000; k <= 3000; k++) {
                    i128 m = D + s * k;
                    if (pass == 1 && s == 1)
                        break;
                    if (ty == 1)
                        m = (m / 1000000) * 1000000; /* integers only for type integer */
                    micro_text(m, t, sizeof t);
                    double d = strtod(t, NULL);
                    bool want = ok_side(cmp3(m, D), lower, ex) &&
                                ok_side(d < dv ? -1 : d > dv, lower, ex);
                    if (is_int) /* a double instance against the exact integer bound */
                        want = want && ok_side(cmp_dbl_ll(d, b[i].micro_hi), lower, ex);
                    if (!is_int && m % 1000000 == 0) /* an integer instance against the double */
                        want = want && ok_side(-cmp_dbl_ll(dv, (long long)(m / 1000000)), lower, ex);
                    bool got = accepts(g, t);
                    if (got != want)
                        fail_msg("%s: '%s' %s but should %s", schema, t, got ? "accepted" : "rejected",
                                 want ? "be accepted" : "not");
                    checked++;
                    accepted += got;
                }
            }
            /* more than 6 fraction digits and exponents are never written */
            micro_text(D, t, sizeof t);
            char longer[80];
            snprintf(longer, sizeof longer, "%s%s1", t, strchr(t, '.') ? "00000000" : ".00000001");
            assert_false(accepts(g, longer));
            assert_false(accepts(g, "1e3"));
            grammar_free(g);
        }
    }
    printf("decimal bounds: %d candidates checked, %d accepted\n", checked, accepted);
    assert_true(accepted > checked / 4 && accepted < checked);
}

/* ---------- errors ---------- */

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *schema, *expect;
    } bad[] = {
        {"{\"type\":\"string\",\"foo\":1}", "/foo: unsupported keyword"},
        {"{\"properties\":{\"a\":{\"type\":\"string\",\"uniqueItems\":true}}}", "/properties/a/uniqueItems"},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"multipleOf\":3}}", "/items/multipleOf"},
        {"{\"type\":\"string\",\"format\":\"bogus\"}", "/format: unsupported format"},
        {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "no integer"},
        {"{\"$ref\":\"#/$defs/missing\"}", "does not resolve"},
        {"{\"$ref\":\"http://x/y.json\"}", "only local references"},
        {"{\"type\":\"string\",\"pattern\":\"(a\"}", "/pattern: regex"},
        {"{\"type\":\"string\",\"pattern\":\"(?=x)\"}", "lookaround"},
        {"{\"allOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", "do not intersect"},
        {"{\"type\":\"object\",\"required\":[\"a\"],\"additionalProperties\":false}", "forbidden"},
        {"{\"type\":\"number\",\"minimum\":0.5,\"exclusiveMaximum\":0.5}", "no number satisfies"},
        {"{\"type\":\"number\",\"exclusiveMinimum\":0.1234561,\"maximum\":0.1234569}", "no number satisfies"},
        {"{\"type\":\"integer\",\"minimum\":2.25,\"maximum\":2.75}", "no integer satisfies"},
        {"{\"type\":\"number\",\"minimum\":\"1\"}", "/minimum: must be a number"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{},\"b\":{}},\"required\":[\"a\",\"b\"],\"maxProperties\":1}", "maxProperties"},
        {"{\"type\":\"tuple\"}", "unknown type"},
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", "/oneOf: branches 0 and 1 may both match"},
        {"{\"oneOf\":[{\"type\":\"object\",\"properties\":{\"a\":{}}},{\"type\":\"object\"}]}", "may both match"},
        {"{\"type\":\"object\",\"additionalProperties\":true,\"minProperties\":2}", "could repeat"},
        {"{\"not\":{\"type\":\"string\"}}", "/not: unsupported keyword"},
        {"{\"if\":{},\"then\":{}}", "unsupported keyword 'if'"},
        {"{\"type\":\"array\",\"contains\":{}}", "/contains"},
        {"{\"type\":\"object\",\"dependentRequired\":{}}", "/dependentRequired"},
        {"false", "matches nothing"},
        {"{\"type\":", "not valid JSON"},
        {"{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "nested too deeply"},
        {"{\"type\":\"string\",\"minLength\":5000}", "/minLength"},
        {"{\"type\":\"object\",\"patternProperties\":{\"^a\":{\"type\":\"string\"}},\"properties\":{\"abc\":{}}}", "matches a declared property"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        grammar *g = compile(bad[i].schema, false, err, sizeof err);
        if (g)
            fail_msg("schema %s compiled but should fail", bad[i].schema);
        if (!strstr(err, bad[i].expect))
            fail_msg("schema %s: error '%s' lacks '%s'", bad[i].schema, err, bad[i].expect);
    }
    /* deeply nested schemas finish quickly with an error */
    size_t depth = 5000;
    char *deep = malloc(depth * 40 + 64);
    size_t n = 0;
    for (size_t i = 0; i < depth; i++)
        n += (size_t)sprintf(deep + n, "{\"type\":\"array\",\"items\":");
    n += (size_t)sprintf(deep + n, "true");
    for (size_t i = 0; i < depth; i++)
        deep[n++] = '}';
    deep[n] = 0;
    grammar *g = compile(deep, false, err, sizeof err);
    assert_null(g);
    free(deep);
}

/* ---------- pretty output ---------- */

static void test_pretty(void **state)
{
    (void)state;
    char err[256];
    const char *s = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"}},\"b\":{\"enum\":[{\"x\":1}]}},\"required\":[\"a\",\"b\"]}";
    grammar *g = compile(s, true, err, sizeof err);
    assert_non_null(g);
    assert_true(accepts(g, "{\"a\": [1, 2], \"b\": {\"x\": 1}}"));
    assert_false(accepts(g, "{\"a\":[1,2],\"b\":{\"x\":1}}"));
    grammar_free(g);
    g = compile(s, false, err, sizeof err);
    assert_true(accepts(g, "{\"a\":[1,2],\"b\":{\"x\":1}}"));
    assert_false(accepts(g, "{\"a\": [1, 2], \"b\": {\"x\": 1}}"));
    grammar_free(g);
}

/* ---------- token level: masks on the Llama 3 vocabulary, and the benchmark ---------- */

static grammar_vocab *vocab;
static gguf_ctx *vocab_gguf;

static int setup_vocab(void **state)
{
    (void)state;
    char err[256];
    vocab_gguf = gguf_open(tu_shared("vocab/ggml-vocab-llama-bpe.gguf"), true, err, sizeof err);
    if (!vocab_gguf) {
        fprintf(stderr, "vocab: %s\n", err);
        return -1;
    }
    vocab = grammar_vocab_from_gguf(vocab_gguf, err, sizeof err);
    return vocab ? 0 : -1;
}

static int teardown_vocab(void **state)
{
    (void)state;
    grammar_vocab_free(vocab);
    gguf_close(vocab_gguf);
    return 0;
}

/* Thread CPU time: the development machines are shared, and wall time there mostly
 * measures other processes. */
static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Generate with random allowed tokens until the EOS token is allowed and picked (or the
 * budget is spent, then the shortest completion is fed byte by byte). */
static void token_walk(const grammar *g, const grammar_matcher *base, const char *schema,
                       int budget, bool brute, double *times, int *n_times, walk_log *log,
                       uint64_t seed)
{
    int32_t n_tok = grammar_vocab_n_tokens(vocab);
    size_t W = grammar_vocab_mask_words(vocab);
    uint32_t *mask = malloc(W * 4);
    int32_t *allowed = malloc((size_t)n_tok * sizeof *allowed);
    grammar_matcher *m = base ? grammar_matcher_clone(base) : grammar_matcher_new(g);
    static char text[1 << 16];
    size_t n = 0;
    uint32_t eos = 128001; /* <|end_of_text|> in Llama 3 */
    rng_state = seed;
    int steps = 0;
    for (;;) {
        double t0 = now_s();
        int32_t cnt = grammar_fill_mask(m, vocab, mask);
        double dt = now_s() - t0;
        if (times)
            times[(*n_times)++] = dt;
        if (times && getenv("ORC_GRAMMAR_SLOW") && dt > 3e-4)
            printf("slow mask %.2f ms state %llu allowed %d last bytes: %.*s\n", dt * 1e3,
                   (unsigned long long)grammar_matcher_snapshot(m), cnt, n > 12 ? 12 : (int)n, text + (n > 12 ? n - 12 : 0));
        bool eos_ok = (mask[eos >> 5] >> (eos & 31)) & 1;
        assert_int_equal(eos_ok, grammar_matcher_is_complete(m));
        if (brute && steps % 3 == 0) {
            for (int32_t id = 0; id < n_tok; id++) {
                bool a = grammar_token_allowed(m, vocab, id);
                bool b = (mask[id >> 5] >> (id & 31)) & 1;
                if (a != b)
                    fail_msg("mask disagrees with brute force for token %d at %.*s", id, (int)n, text);
            }
        }
        assert_true(cnt > 0);
        if (steps >= budget || (eos_ok && rnd() % 4 == 0))
            break;
        int32_t k = 0;
        for (size_t w = 0; w < W; w++)
            for (uint32_t bits = mask[w]; bits; bits &= bits - 1)
                allowed[k++] = (int32_t)(w * 32 + (size_t)__builtin_ctz(bits));
        assert_int_equal(k, cnt);
        int32_t id = allowed[rnd() % (uint32_t)k];
        if ((uint32_t)id == eos)
            break;
        assert_true(grammar_accept_token(m, vocab, id));
        /* append the token's bytes (re-derived from the vocab file for an independent check) */
        char piece[1024];
        uint32_t pl = 0;
        const gguf_value *toks = gguf_get_arr(vocab_gguf, "tokenizer.ggml.tokens", GGUF_T_STRING);
        gguf_str s = toks->v.arr.strs[id];
        /* decode GPT-2 byte-level unicode */
        for (uint64_t i = 0; i < s.n;) {
            unsigned char ch = (unsigned char)s.p[i];
            uint32_t cp;
            int l = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : 3;
            cp = l == 1 ? ch : l == 2 ? (uint32_t)(ch & 0x1F) << 6 | (s.p[i + 1] & 0x3F)
                                      : (uint32_t)(ch & 0x0F) << 12 | (uint32_t)(s.p[i + 1] & 0x3F) << 6 | (s.p[i + 2] & 0x3F);
            i += (uint64_t)l;
            int b = -1;
            if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
                b = (int)cp;
            else {
                int idx = 0;
                for (int x = 0; x < 256; x++) {
                    if ((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))
                        continue;
                    if ((uint32_t)(256 + idx) == cp)
                        b = x;
                    idx++;
                }
            }
            assert_true(b >= 0);
            piece[pl++] = (char)b;
        }
        memcpy(text + n, piece, pl);
        n += pl;
        steps++;
    }
    if (!grammar_matcher_is_complete(m)) {
        uint8_t rest[4096];
        int k = shortest_completion(m, rest, sizeof rest);
        assert_true(k >= 0);
        assert_true(grammar_matcher_accept_bytes(m, rest, (size_t)k));
        memcpy(text + n, rest, (size_t)k);
        n += (size_t)k;
    }
    assert_true(grammar_matcher_is_complete(m));
    assert_true(grammar_accept_token(m, vocab, (int32_t)eos));
    assert_true(grammar_matcher_is_terminated(m));
    assert_int_equal(grammar_fill_mask(m, vocab, mask), 0);
    check_output(schema, text, n, log);
    grammar_matcher_free(m);
    free(mask);
    free(allowed);
}

static void test_token_walks_brute(void **state)
{
    (void)state;
    char err[256], pypath[256];
    walk_log log = {open_py_log(pypath, sizeof pypath), 0};
    static const size_t pick[] = {0, 7, 10, 13, 22, 29, 31, 35, 37, 40, 42, 44, 46};
    for (size_t i = 0; i < sizeof pick / sizeof pick[0]; i++) {
        const char *s = cases[pick[i]].schema;
        grammar *g = compile(s, false, err, sizeof err);
        assert_non_null(g);
        token_walk(g, NULL, s, 12, true, NULL, NULL, &log, pick[i] + 1);
        grammar_free(g);
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        grammar *g = compile(cases[i].schema, i % 2 == 1, err, sizeof err);
        grammar_matcher *base = grammar_matcher_new(g);
        for (int seed = 0; seed < 3; seed++)
            token_walk(g, base, cases[i].schema, 60, false, NULL, NULL, &log, i * 31 + (size_t)seed + 5);
        grammar_matcher_free(base);
        grammar_free(g);
    }
    printf("token walks: %d outputs parsed and validated\n", log.n_outputs);
    if (log.py) {
        fclose(log.py);
        run_python(pypath, log.n_outputs);
    }
}

static const char *bench_schemas[] = {
    /* a typical extraction schema */
    ("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":5},"
    "\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":\"string\"},\"city\":{\"type\":\"string\"},\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},"
    "\"required\":[\"street\",\"city\"]},\"active\":{\"type\":\"boolean\"}},\"required\":[\"name\",\"age\",\"email\",\"address\",\"active\"]}"),
    /* tool call with enums and nested arrays */
    ("{\"type\":\"object\",\"properties\":{\"tool\":{\"enum\":[\"search\",\"calculator\",\"weather\"]},\"arguments\":{\"type\":\"object\","
    "\"properties\":{\"query\":{\"type\":\"string\"},\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100},\"units\":{\"enum\":[\"metric\",\"imperial\"]}},"
    "\"required\":[\"query\"]},\"confidence\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1}},\"required\":[\"tool\",\"arguments\",\"confidence\"]}"),
    /* an array of records with bounded strings */
    ("{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"format\":\"uuid\"},\"title\":{\"type\":\"string\",\"maxLength\":40},"
    "\"date\":{\"type\":\"string\",\"format\":\"date\"},\"score\":{\"type\":\"number\"}},\"required\":[\"id\",\"title\",\"date\",\"score\"]},\"minItems\":1,\"maxItems\":3}"),
};

static void test_benchmark(void **state)
{
    (void)state;
    char err[256];
    walk_log log = {NULL, 0};
    double *times = malloc(sizeof(double) * 200000);
    for (size_t i = 0; i < sizeof bench_schemas / sizeof bench_schemas[0]; i++) {
        double t0 = now_s();
        grammar *g = compile(bench_schemas[i], false, err, sizeof err);
        double tc = now_s() - t0;
        assert_non_null(g);
        /* cold: the schema compiled afresh for every output (nothing cached); warm: one
         * compiled grammar, a new matcher per output (its matchers share state tables and
         * the mask cache, the serving setup when compiled schemas are kept) */
        for (int warm = 0; warm < 2; warm++) {
            int nt = 0;
            for (int seed = 0; seed < 8; seed++) {
                grammar *gs = warm ? g : compile(bench_schemas[i], false, err, sizeof err);
                assert_non_null(gs);
                token_walk(gs, NULL, bench_schemas[i], 400, false, times, &nt, &log,
                           1000 + (uint64_t)seed);
                if (!warm)
                    grammar_free(gs);
            }
            double sum = 0;
            for (int k = 0; k < nt; k++)
                sum += times[k];
            qsort(times, (size_t)nt, sizeof *times, cmp_d);
            printf("benchmark schema %zu (%s): compile %.2f ms; %d masks: mean %.1f us, p50 %.1f us, "
                   "p99 %.1f us, max %.1f us\n",
                   i, warm ? "warm" : "cold", tc * 1e3, nt, sum / nt * 1e6, times[nt / 2] * 1e6,
                   times[nt * 99 / 100] * 1e6, times[nt - 1] * 1e6);
            if (warm) {
                grammar_matcher *m = grammar_matcher_new(g);
                grammar_stats st;
                grammar_matcher_stats(m, &st);
                printf("  cache hits %llu / %llu, trie nodes visited %llu, transitions computed "
                       "%llu, states %u\n",
                       (unsigned long long)st.mask_cache_hits, (unsigned long long)st.mask_calls,
                       (unsigned long long)st.trie_nodes_visited,
                       (unsigned long long)st.expansions, st.n_states);
                grammar_matcher_free(m);
            }
        }
        grammar_free(g);
    }
    free(times);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instances),
        cmocka_unit_test(test_decimal_bounds),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_pretty),
        cmocka_unit_test(test_random_walks),
    };
    const struct CMUnitTest vocab_tests[] = {
        cmocka_unit_test(test_token_walks_brute),
        cmocka_unit_test(test_benchmark),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rc |= cmocka_run_group_tests(vocab_tests, setup_vocab, teardown_vocab);
    return rc;
}
