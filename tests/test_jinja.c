/* test_jinja.c - conformance of the Jinja engine against Python jinja2 as Hugging Face
 * configures it: every case of every ../shared/reference/templates/NAME.json must render
 * byte-identically (or fail where the reference fails); plus unit checks of semantics,
 * hostile templates stopped by limits, and a render-time micro-benchmark. */
#include "jinja.h"
#include "testutil.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* 2026-11-22T03:48:55 UTC, what strftime_now sees in the references */
static int64_t ref_now(void)
{
    struct tm tm = {0};
    tm.tm_year = 2026 - 1900;
    tm.tm_mon = 10;
    tm.tm_mday = 22;
    tm.tm_hour = 3;
    tm.tm_min = 48;
    tm.tm_sec = 55;
    return (int64_t)timegm(&tm);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Renders src with ctx; returns malloc'd output or NULL with err set. */
static char *render(const char *src, const char *ctx_json, char *err, size_t errlen)
{
    json_error_t je;
    json_t *ctx = ctx_json ? json_loads(ctx_json, 0, &je) : NULL;
    jinja_template *t = jinja_parse(src, strlen(src), NULL, err, errlen);
    char *out = NULL;
    if (t) {
        jinja_render_options ro = jinja_default_render_options();
        ro.now = ref_now();
        if (jinja_render(t, ctx, &ro, &out, NULL, err, errlen) != 0)
            out = NULL;
    }
    jinja_free(t);
    json_decref(ctx);
    return out;
}

static void expect(const char *src, const char *ctx, const char *want)
{
    char err[512];
    char *got = render(src, ctx, err, sizeof err);
    if (!got)
        fail_msg("template %s: error %s", src, err);
    if (strcmp(got, want))
        fail_msg("template %s\n  want: [%s]\n  got:  [%s]", src, want, got);
    free(got);
}

static void expect_error(const char *src, const char *ctx, const char *needle)
{
    char err[512];
    char *got = render(src, ctx, err, sizeof err);
    if (got)
        fail_msg("template %.80s: expected an error, got [%.80s]", src, got);
    if (needle && !strstr(err, needle))
        fail_msg("template %.80s: error [%s] lacks [%s]", src, err, needle);
}

static void test_reference_templates(void **state)
{
    (void)state;
    const char *dir = tu_shared("reference/templates");
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *names[256];
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nn < 256) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".json"))
            names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nn, sizeof(char *), cmp_str);
    int ok_out = 0, ok_err = 0, n_out = 0, n_err = 0;
    int64_t now = ref_now();
    for (int i = 0; i < nn; i++) {
        char rel[512];
        snprintf(rel, sizeof rel, "reference/templates/%s", names[i]);
        json_t *ref = tu_load_json(tu_shared(rel));
        assert_non_null(ref);
        snprintf(rel, sizeof rel, "templates/%s", json_string_value(json_object_get(ref, "template")));
        size_t slen;
        char *src = tu_read_file(tu_shared(rel), &slen);
        assert_non_null(src);
        char err[1024];
        jinja_template *t = jinja_parse(src, slen, NULL, err, sizeof err);
        if (!t)
            printf("  %s: parse error: %s\n", names[i], err);
        const char *cname;
        json_t *cs;
        json_object_foreach(json_object_get(ref, "cases"), cname, cs)
        {
            json_t *want = json_object_get(cs, "output");
            bool want_err = json_object_get(cs, "error") != NULL;
            if (want_err)
                n_err++;
            else
                n_out++;
            if (!t)
                continue;
            jinja_render_options ro = jinja_default_render_options();
            ro.now = now;
            ro.bos_token = json_string_value(json_object_get(ref, "bos_token"));
            ro.eos_token = json_string_value(json_object_get(ref, "eos_token"));
            char *out = NULL;
            size_t olen = 0;
            int rc = jinja_render(t, json_object_get(cs, "context"), &ro, &out, &olen, err, sizeof err);
            if (want_err) {
                if (rc != 0)
                    ok_err++;
                else
                    printf("  %s/%s: expected error [%s], rendered fine\n", names[i], cname,
                           json_string_value(json_object_get(cs, "error")));
            } else if (rc != 0) {
                printf("  %s/%s: error: %s\n", names[i], cname, err);
            } else {
                const char *w = json_string_value(want);
                size_t wl = json_string_length(want);
                if (olen == wl && !memcmp(out, w, wl)) {
                    ok_out++;
                } else {
                    size_t k = 0;
                    while (k < olen && k < wl && out[k] == w[k])
                        k++;
                    size_t from = k > 40 ? k - 40 : 0;
                    printf("  %s/%s: differs at byte %zu (want %zu bytes, got %zu)\n    want: %.*s|\n    got:  %.*s|\n",
                           names[i], cname, k, wl, olen, (int)(wl - from < 100 ? wl - from : 100), w + from,
                           (int)(olen - from < 100 ? olen - from : 100), out + from);
                }
            }
            free(out);
        }
        jinja_free(t);
        free(src);
        json_decref(ref);
        free(names[i]);
    }
    printf("reference templates: %d/%d rendered identically, %d/%d errors raised\n", ok_out, n_out, ok_err, n_err);
    assert_int_equal(n_out, 251);
    assert_int_equal(n_err, 13);
    assert_int_equal(ok_out, n_out);
    assert_int_equal(ok_err, n_err);
}

static void test_semantics(void **state)
{
    (void)state;
    const char *ctx = "{\"x\": {\"a\": [1, 2.5, \"\\u00e9\"], \"b\": {}}, \"d\": {}, \"n\": null}";
    expect("{{ [1, 'a', None, 1.0, {'a': \"it's\"}] }}", NULL, "[1, 'a', None, 1.0, {'a': \"it's\"}]");
    expect("{{ 1e16 }} {{ 1e-5 }} {{ 10/4 }} {{ 7//2 }} {{ -7 % 3 }} {{ 0.1 + 0.2 }}", NULL,
           "1e+16 1e-05 2.5 3 2 0.30000000000000004");
    expect("{% for x in [1,2] %}[{{ y }}]{% set y = x %}{% endfor %}{{ y }}", NULL, "[][]");
    expect("{% set y = 5 %}{% for x in [1,2] %}[{{ y }}]{% set y = x %}{% endfor %}{{ y }}", NULL, "[5][5]5");
    expect("{% set ns = namespace(v=0) %}{% for x in [1,2,3] %}{% set ns.v = ns.v + x %}{% endfor %}{{ ns.v }}",
           NULL, "6");
    expect("{{ x | tojson }}", ctx, "{\"a\": [1, 2.5, \"\xc3\xa9\"], \"b\": {}}");
    expect("{{ x | tojson(indent=2) }}", ctx, "{\n  \"a\": [\n    1,\n    2.5,\n    \"\xc3\xa9\"\n  ],\n  \"b\": {}\n}");
    expect("{{ x.a[2] | tojson(ensure_ascii=true) }}", ctx, "\"\\u00e9\"");
    expect("{{ x|items|list }}", ctx, "[('a', [1, 2.5, '\xc3\xa9']), ('b', {})]");
    expect("{{ d.get('q') }}|{{ d.get('q', 'y') }}|{{ n is none }}|{{ u is defined }}", ctx, "None|y|True|False");
    expect("{% macro m(a, b=2) %}{{a}}{{b}}{{varargs}}{{kwargs}}{% endmacro %}{{ m(1) }}{{ m(1,3,4,z=5) }}", NULL,
           "12(){}13(4,){'z': 5}");
    expect("{% macro m(a) %}{{ caller(a) }}{% endmacro %}{% call(x) m(7) %}[{{x}}]{% endcall %}", NULL, "[7]");
    expect("{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}", NULL,
           "['a', 'b', '', 'c']['a', 'b']['a', 'b c']");
    expect("{{ '{} {}'.format(1, 'x') }}|{{ '%.2f'|format(1.5) }}|{{ '%s-%d' % ('a', 3) }}", NULL, "1 x|1.50|a-3");
    expect("{{ [3,1,2]|sort(reverse=true) }}{{ 'abc'|reverse }}{{ 'hello'[-3:] }}{{ [1,2,3][::-1] }}", NULL,
           "[3, 2, 1]cballo[3, 2, 1]");
    expect("{{ '  hi  '|trim }}|{{ 'hi\nthere'|indent(2) }}|{{ 'hi\nthere'|indent(2, true) }}", NULL,
           "hi|hi\n  there|  hi\n  there");
    expect("{% for a, b in {'p': 1, 'q': 2}.items() %}{{a}}={{b}}{{ loop.index }}{{ loop.revindex }}{{ loop.length }};{% endfor %}",
           NULL, "p=1122;q=2212;");
    expect("{% for i in range(5) if i is odd %}{{ i }}{% if loop.last %}!{% endif %}{% else %}none{% endfor %}", NULL,
           "13!");
    expect("{% for i in [] %}{{ i }}{% else %}none{% endfor %}", NULL, "none");
    expect("{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
           NULL, "02");
    expect("{{ 'x'.title() }}{{ 'hello world'|title }}{{ 'ab'|upper }}{{ '\xc3\x89T\xc3\x89'|lower }}", NULL,
           "XHello WorldAB\xc3\xa9t\xc3\xa9");
    expect("{{ 2.5|round }}{{ 3.14159|round(2) }}{{ '3.5'|float }}{{ 'x'|int }}{{ 3.7|int }}", NULL, "2.03.143.503");
    expect("{{ [1,2]|map('string')|join('-') }}{{ [1,2,3]|select('odd')|list }}{{ [{'a':1},{'a':2}]|selectattr('a','equalto',2)|list }}",
           NULL, "1-2[1, 3][{'a': 2}]");
    expect("{{ {'b':1,'a':2}|dictsort }}{{ [3,1]|sort }}{{ ['a','B','a']|unique|list }}", NULL,
           "[('a', 2), ('b', 1)][1, 3]['a', 'B']");
    expect("  {% if true %}\n  x\n  {% endif %}\n", NULL, "  x\n");
    expect("a {%- if true -%} b {%+ if true %}c{% endif %}{% endif %}", NULL, "ab c");
    expect("{# c #}\nx{{ 'y' -}}  \n z", NULL, "xyz");
    expect("{% set x %}a{{ 1 }}{% endset %}{{ x }}{% filter upper %}q{% endfilter %}", NULL, "a1Q");
    expect("{{ '\\u00e9\\n' }}{{ \"a\\tb\" }}", NULL, "\xc3\xa9\na\tb");
    expect("{{ strftime_now('%Y-%m-%d %H:%M') }}", NULL, "2026-11-22 03:48");
    expect("{{ 1 if false }}|{{ none|string }}|{{ true|int }}|{{ 'a' ~ 1.5 ~ none }}", NULL, "|None|1|a1.5None");
    expect("{{ 'abc'.startswith(('z', 'a')) }}{{ 'x' in 'xyz' }}{{ 1 in [1] }}{{ 'k' in {'k': 1} }}", NULL,
           "TrueTrueTrueTrue");
    expect("{% raw %}{{ x }}{% endraw %}", NULL, "{{ x }}");
    expect_error("{{ u.a }}", NULL, "'u' is undefined");
    expect_error("{{ d.a.b }}", ctx, "has no attribute 'a'");
    expect_error("{{ raise_exception('boom') }}", NULL, "TemplateError: boom");
    expect_error("{% set l = [] %}{{ l.append(1) }}", NULL, "SecurityError");
    expect_error("{{ 'a' + {} }}", NULL, "can only concatenate str");
    expect_error("{{ [1]|map('string')|tojson }}", NULL, "generator");
    expect_error("{{ 1 < 'a' }}", NULL, "TypeError");
    expect_error("{% if x %}", NULL, "line 1");
    expect_error("hello\n  {{ x + }}", NULL, "line 2, column");
    expect_error("{% for %}", NULL, "TemplateSyntaxError");
    expect_error("{{ x|nosuchfilter }}", NULL, "No filter named");
}

static void test_hostile(void **state)
{
    (void)state;
    /* deep expression nesting */
    size_t n = 100000;
    char *deep = malloc(2 * n + 16);
    strcpy(deep, "{{ ");
    memset(deep + 3, '(', n);
    deep[3 + n] = '1';
    memset(deep + 4 + n, ')', n);
    strcpy(deep + 4 + 2 * n, " }}");
    expect_error(deep, NULL, "nested too deeply");
    /* deep block nesting */
    size_t m = 5000;
    char *blocks = malloc(m * 16 + 16);
    blocks[0] = 0;
    char *p = blocks;
    for (size_t i = 0; i < m; i++)
        p += sprintf(p, "{%% if 1 %%}");
    expect_error(blocks, NULL, "nested too deeply");
    free(deep);
    free(blocks);
    /* infinite recursion through a macro */
    expect_error("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", NULL, "maximum macro call depth");
    /* huge range and long loops */
    expect_error("{% for i in range(1000000000) %}x{% endfor %}", NULL, "range too big");
    expect_error("{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(10) %}{% endfor %}{% endfor %}{% endfor %}",
                 NULL, "iteration limit");
    /* output growth */
    expect_error("{% set s = 'xxxxxxxxxxxxxxxx' %}{% for i in range(100000) %}{{ s * 100 }}{% endfor %}", NULL,
                 "output size limit");
    expect_error("{{ 'x' * 100000000000 }}", NULL, "too large");
    /* string doubling exhausts the memory limit, not the machine */
    expect_error("{% set ns = namespace(s='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                 NULL, "Error");
    /* unterminated constructs */
    expect_error("{{ 'abc", NULL, "TemplateSyntaxError");
    expect_error("{# never closed", NULL, "comment");
    expect_error("{% for x in y %}", NULL, "endfor");
}

static void test_benchmark(void **state)
{
    (void)state;
    size_t slen;
    char *src = tu_read_file(tu_shared("templates/Qwen3-Coder.jinja"), &slen);
    if (!src)
        skip();
    char err[512];
    jinja_template *t = jinja_parse(src, slen, NULL, err, sizeof err);
    assert_non_null(t);
    json_t *ctx = json_object();
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", "You are a helpful assistant."));
    for (int i = 0; i < 19; i++) {
        char buf[256];
        snprintf(buf, sizeof buf, "Message number %d: tell me something interesting about the number %d.", i, i * 7);
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", i % 2 ? "assistant" : "user", "content", buf));
    }
    json_object_set_new(ctx, "messages", msgs);
    json_object_set_new(ctx, "add_generation_prompt", json_true());
    jinja_render_options ro = jinja_default_render_options();
    ro.bos_token = "<BOS>";
    ro.eos_token = "<EOS>";
    int iters = 200;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    size_t total = 0;
    for (int i = 0; i < iters; i++) {
        char *out = NULL;
        size_t ol;
        assert_int_equal(jinja_render(t, ctx, &ro, &out, &ol, err, sizeof err), 0);
        total += ol;
        free(out);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = ((double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3) / iters;
    printf("benchmark: Qwen3-Coder, 20 messages: %.1f us per render (%zu bytes)\n", us, total / (size_t)iters);
    json_decref(ctx);
    jinja_free(t);
    free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_semantics),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_reference_templates),
        cmocka_unit_test(test_benchmark),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
