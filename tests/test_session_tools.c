/* test_session_tools.c - the pieces of the session framework that work on text alone:
 * the partial-JSON parser behind structured snapshots (every prefix of a document gives
 * a valid value, ending in the document itself) and the tool-call parsers of each
 * syntax on scripted model outputs, plus syntax detection from the shared templates. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "orchard.h"
#include "grammar.h"
#include "session.h"
#include "testutil.h"

static char *dump(const json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

static void expect_partial(const char *text, const char *want)
{
    bool complete;
    json_t *v = partial_json_parse(text, strlen(text), &complete);
    char *got = dump(v);
    if (!want) {
        if (got)
            fail_msg("'%s' -> %s, want nothing", text, got);
    } else {
        if (!got || strcmp(got, want))
            fail_msg("'%s' -> %s, want %s", text, got ? got : "(null)", want);
    }
    free(got);
    json_decref(v);
}

static void test_partial_cases(void **state)
{
    (void)state;
    expect_partial("", NULL);
    expect_partial("  ", NULL);
    expect_partial("{", "{}");
    expect_partial("{\"na", "{}");
    expect_partial("{\"name\"", "{}");
    expect_partial("{\"name\":", "{}");
    expect_partial("{\"name\": \"Al", "{\"name\":\"Al\"}");
    expect_partial("{\"name\": \"Al\\", "{\"name\":\"Al\"}");
    expect_partial("{\"name\": \"Al\\u00", "{\"name\":\"Al\"}");
    expect_partial("{\"name\": \"Al\\u00e9\", \"age\": 4", "{\"name\":\"Al\xc3\xa9\",\"age\":4}");
    expect_partial("{\"a\": -", "{}");
    expect_partial("{\"a\": 1.", "{\"a\":1}");
    expect_partial("{\"a\": 1.5e", "{\"a\":1.5}");
    expect_partial("{\"a\": tr", "{}");
    expect_partial("{\"a\": true, \"b\": [1, 2, [3", "{\"a\":true,\"b\":[1,2,[3]]}");
    expect_partial("[\"x\", nul", "[\"x\"]");
    expect_partial("[\"x\", null]", "[\"x\",null]");
    expect_partial("\"caf\xc3", "\"caf\"");
    expect_partial("{\"a\" 1}", NULL);   /* not JSON */
    expect_partial("{\"a\": 1,,", NULL);
    expect_partial("hello", NULL);
}

/* Every prefix of a document parses to a value; the whole document gives itself. */
static void test_partial_prefixes(void **state)
{
    (void)state;
    const char *doc = "{\"name\": \"Ada \\\"L\\\" \\ud83d\\ude00\", \"tags\": [\"a\", \"b\"], \"n\": -12.5e-1, "
                      "\"ok\": false, \"nested\": {\"x\": [[], {}], \"y\": null}}";
    json_t *ref = json_loads(doc, 0, NULL);
    assert_non_null(ref);
    char *want = dump(ref);
    size_t n = strlen(doc);
    for (size_t i = 1; i <= n; i++) {
        bool complete;
        json_t *v = partial_json_parse(doc, i, &complete);
        if (i >= 1)
            assert_non_null(v);
        char *txt = dump(v);
        json_t *again = json_loads(txt, JSON_DECODE_ANY, NULL); /* a valid JSON value */
        assert_non_null(again);
        json_decref(again);
        if (i == n) {
            assert_true(complete);
            assert_string_equal(txt, want);
        } else {
            assert_false(complete);
        }
        free(txt);
        json_decref(v);
    }
    free(want);
    json_decref(ref);
}

/* ---- tool calls ---- */

static void expect_calls(orc_tool_syntax syn, const char *text, const char *want_calls, const char *want_content)
{
    char *calls = NULL, *content = NULL;
    orc_status st = orc_tool_calls_parse(syn, text, &calls, &content);
    if (st != ORC_OK)
        fail_msg("%s: %s", text, orc_last_error());
    json_t *got = json_loads(calls, 0, NULL), *want = json_loads(want_calls, 0, NULL);
    assert_non_null(got);
    assert_non_null(want);
    if (!json_equal(got, want))
        fail_msg("syntax %d: '%s'\n got %s\nwant %s", syn, text, calls, want_calls);
    if (want_content)
        assert_string_equal(content, want_content);
    json_decref(got);
    json_decref(want);
    orc_free(calls);
    orc_free(content);
}

#define W1 "[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":2}}]"
#define W2 "[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":2}},{\"name\":\"time\",\"arguments\":{}}]"

static void test_tool_syntaxes(void **state)
{
    (void)state;
    expect_calls(ORC_TOOL_SYNTAX_HERMES,
                 "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>",
                 W1, "Let me check.");
    expect_calls(ORC_TOOL_SYNTAX_HERMES,
                 "<tool_call>{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\",\\\"days\\\":2}\"}</tool_call>\n"
                 "<tool_call>{\"name\":\"time\",\"arguments\":{}}</tool_call>",
                 W2, "");
    expect_calls(ORC_TOOL_SYNTAX_HERMES, "No tools needed.", "[]", "No tools needed.");
    expect_calls(ORC_TOOL_SYNTAX_HERMES,
                 "<tool_call>\n{\"name\": \"w\", \"arguments\": {\"s\": \"a</tool_call>b\"}}\n</tool_call> done",
                 "[{\"name\":\"w\",\"arguments\":{\"s\":\"a</tool_call>b\"}}]", "done");
    expect_calls(ORC_TOOL_SYNTAX_LLAMA3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 2}}", W1, "");
    expect_calls(ORC_TOOL_SYNTAX_LLAMA3,
                 "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 2}}; "
                 "{\"name\": \"time\", \"parameters\": {}}",
                 W2, "");
    expect_calls(ORC_TOOL_SYNTAX_LLAMA3, "{\"answer\": 42}", "[]", "{\"answer\": 42}");
    expect_calls(ORC_TOOL_SYNTAX_MISTRAL,
                 "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}, \"id\": \"abcdefghi\"}, "
                 "{\"name\": \"time\", \"arguments\": {}}]",
                 W2, "");
    expect_calls(ORC_TOOL_SYNTAX_MISTRAL,
                 "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\", \"days\": 2}[TOOL_CALLS]time[CALL_ID]x12345678[ARGS]{}",
                 W2, "");
    expect_calls(ORC_TOOL_SYNTAX_FUNCTIONARY, "get_weather\n{\"city\": \"Paris\", \"days\": 2}>>>time\n{}", W2, "");
    expect_calls(ORC_TOOL_SYNTAX_FUNCTIONARY, "all\nLet me look.>>>get_weather\n{\"city\": \"Paris\", \"days\": 2}", W1,
                 "Let me look.");
    expect_calls(ORC_TOOL_SYNTAX_FUNCTIONARY, "<function=get_weather>{\"city\": \"Paris\", \"days\": 2}</function>", W1, "");
    expect_calls(ORC_TOOL_SYNTAX_GRANITE,
                 "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}]", W1, "");
    expect_calls(ORC_TOOL_SYNTAX_DEEPSEEK,
                 "Weather: <\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>function"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>get_weather\n```json\n{\"city\": \"Paris\", \"days\": 2}\n```"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>",
                 W1, "Weather:");
    expect_calls(ORC_TOOL_SYNTAX_DEEPSEEK,
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>get_weather"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>{\"city\": \"Paris\", \"days\": 2}"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>time"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>{}"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
                 "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>",
                 W2, "");
    expect_calls(ORC_TOOL_SYNTAX_KIMI,
                 "Checking.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
                 "<|tool_call_argument_begin|>{\"city\": \"Paris\", \"days\": 2}<|tool_call_end|>"
                 "<|tool_call_begin|>functions.time:1<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>",
                 W2, "Checking.");
    expect_calls(ORC_TOOL_SYNTAX_GLM,
                 "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n"
                 "<arg_value>2</arg_value>\n</tool_call>",
                 W1, "");
    expect_calls(ORC_TOOL_SYNTAX_GPT_OSS,
                 "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
                 "to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\", \"days\": 2}<|call|>",
                 W1, "");
    expect_calls(ORC_TOOL_SYNTAX_GPT_OSS,
                 "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>Hi there.",
                 "[]", "Hi there.");
    expect_calls(ORC_TOOL_SYNTAX_QWEN3_CODER,
                 "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n"
                 "</parameter>\n</function>\n</tool_call>",
                 W1, "");
}

static void test_tool_errors(void **state)
{
    (void)state;
    char *calls = NULL, *content = NULL;
    assert_int_equal(orc_tool_calls_parse(ORC_TOOL_SYNTAX_HERMES, "<tool_call>{\"name\": </tool_call>", &calls, &content),
                     ORC_ERR_FORMAT);
    assert_null(calls);
    assert_int_equal(orc_tool_calls_parse(ORC_TOOL_SYNTAX_HERMES, "<tool_call>{\"arguments\": {}}</tool_call>", &calls, NULL),
                     ORC_ERR_FORMAT);
    assert_int_equal(orc_tool_calls_parse(ORC_TOOL_SYNTAX_MISTRAL, "[TOOL_CALLS]oops", &calls, NULL), ORC_ERR_FORMAT);
    assert_int_equal(orc_tool_calls_parse(ORC_TOOL_SYNTAX_AUTO, "x", &calls, NULL), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_tool_calls_parse(ORC_TOOL_SYNTAX_HERMES, "<tool_call>{\"name\":\"f\",\"arguments\":[1]}</tool_call>",
                                          &calls, NULL),
                     ORC_ERR_FORMAT);
}

static orc_tool_syntax detect_file(const char *name)
{
    size_t len;
    char path[512];
    snprintf(path, sizeof path, "templates/%s", name);
    char *src = tu_read_file(tu_shared(path), &len);
    assert_non_null(src);
    orc_tool_syntax s = tool_syntax_detect(src);
    free(src);
    return s;
}

static void test_detect(void **state)
{
    (void)state;
    assert_int_equal(tool_syntax_detect(NULL), ORC_TOOL_SYNTAX_HERMES);
    assert_int_equal(detect_file("Qwen-Qwen2.5-7B-Instruct.jinja"), ORC_TOOL_SYNTAX_HERMES);
    assert_int_equal(detect_file("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja"), ORC_TOOL_SYNTAX_HERMES);
    assert_int_equal(detect_file("meta-llama-Llama-3.1-8B-Instruct.jinja"), ORC_TOOL_SYNTAX_LLAMA3);
    assert_int_equal(detect_file("meta-llama-Llama-3.3-70B-Instruct.jinja"), ORC_TOOL_SYNTAX_LLAMA3);
    assert_int_equal(detect_file("Mistral-Small-3.2-24B-Instruct-2506.jinja"), ORC_TOOL_SYNTAX_MISTRAL);
    assert_int_equal(detect_file("mistralai-Mistral-Nemo-Instruct-2407.jinja"), ORC_TOOL_SYNTAX_MISTRAL);
    assert_int_equal(detect_file("meetkai-functionary-medium-v3.2.jinja"), ORC_TOOL_SYNTAX_FUNCTIONARY);
    assert_int_equal(detect_file("meetkai-functionary-medium-v3.1.jinja"), ORC_TOOL_SYNTAX_FUNCTIONARY);
    assert_int_equal(detect_file("ibm-granite-granite-3.3-2B-Instruct.jinja"), ORC_TOOL_SYNTAX_GRANITE);
    assert_int_equal(detect_file("deepseek-ai-DeepSeek-V3.1.jinja"), ORC_TOOL_SYNTAX_DEEPSEEK);
    assert_int_equal(detect_file("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"), ORC_TOOL_SYNTAX_DEEPSEEK);
    assert_int_equal(detect_file("Kimi-K2-Instruct.jinja"), ORC_TOOL_SYNTAX_KIMI);
    assert_int_equal(detect_file("moonshotai-Kimi-K2.jinja"), ORC_TOOL_SYNTAX_KIMI);
    assert_int_equal(detect_file("GLM-4.6.jinja"), ORC_TOOL_SYNTAX_GLM);
    assert_int_equal(detect_file("openai-gpt-oss-120b.jinja"), ORC_TOOL_SYNTAX_GPT_OSS);
    assert_int_equal(detect_file("Qwen3-Coder.jinja"), ORC_TOOL_SYNTAX_QWEN3_CODER);
}

/* Mutated model outputs through every parser and the partial-JSON parser: a clear
 * result or error, never a crash (run under ASan in CI), and parsed calls always have a
 * string name and object arguments. */
static void test_mutations(void **state)
{
    (void)state;
    static const char *seeds[] = {
        "Hi <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1, 2.5, \"x\\u00e9\"]}}</tool_call>",
        "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"a\": null}}; {\"name\": \"g\", \"parameters\": {}}",
        "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}][TOOL_CALLS]g[CALL_ID]abc123456[ARGS]{\"b\": true}",
        "f\n{\"a\": 1}>>>all\ntext>>>g\n{}<function=h>{\"x\": 2}</function>",
        "<|tool_call|>[{\"name\": \"f\", \"arguments\": {\"k\": \"v\"}}]",
        "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>function<\xef\xbd\x9ctool\xe2\x96\x81"
        "sep\xef\xbd\x9c>f\n```json\n{}\n```",
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{}<|tool_call_end|>",
        "<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>[1]</arg_value><arg_key>x</arg_key><arg_value>3</arg_value></tool_call>",
        "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": 1}<|call|>",
        "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n<parameter=x>\n-2\n</parameter>\n</function>\n</tool_call>",
        "{\"a\": {\"b\": [true, false, null, -1e5, \"\\ud83d\\ude00\"]}}",
    };
    const char alphabet[] = "{}[]\":,<>|\\/ntfu0123456789.-eE _=\n";
    json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
                               "\"object\",\"properties\":{\"a\":{\"type\":\"string\"},\"x\":{\"type\":\"integer\"}}}}}]",
                               0, NULL);
    uint64_t r = 0x9e3779b97f4a7c15ull;
    char buf[512];
    for (int it = 0; it < 30000; it++) {
        const char *seed = seeds[it % (sizeof seeds / sizeof seeds[0])];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        int edits = 1 + it % 4;
        for (int e = 0; e < edits; e++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            size_t pos = n ? (size_t)(r % n) : 0;
            switch ((r >> 32) % 4) {
            case 0: /* truncate */
                n = pos;
                break;
            case 1: /* replace */
                if (n)
                    buf[pos] = alphabet[(r >> 40) % (sizeof alphabet - 1)];
                break;
            case 2: /* insert */
                if (n + 1 < sizeof buf) {
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = alphabet[(r >> 40) % (sizeof alphabet - 1)];
                    n++;
                }
                break;
            default: /* random byte */
                if (n)
                    buf[pos] = (char)(1 + (r >> 48) % 255);
            }
        }
        buf[n] = 0;
        json_t *v = partial_json_parse(buf, n, NULL);
        json_decref(v);
        for (int syn = ORC_TOOL_SYNTAX_HERMES; syn <= ORC_TOOL_SYNTAX_NONE; syn++) {
            json_t *calls = NULL;
            char *content = NULL, err[128];
            if (tool_calls_parse((orc_tool_syntax)syn, buf, strlen(buf), &calls, &content, err, sizeof err) == 0) {
                size_t i;
                json_t *c;
                json_array_foreach(calls, i, c) {
                    assert_true(json_is_string(json_object_get(c, "name")));
                    assert_true(json_is_object(json_object_get(c, "arguments")));
                }
                assert_non_null(content);
            } else {
                assert_null(calls);
                assert_true(strlen(err) > 0);
            }
            json_decref(calls);
            free(content);
            (void)tool_call_start((orc_tool_syntax)syn, buf, strlen(buf));
            /* typed and partial reads of the same text */
            for (int partial = 0; partial < 2; partial++) {
                calls = NULL;
                if (tool_calls_parse_ex((orc_tool_syntax)syn, buf, strlen(buf), tools, partial, &calls, NULL, err,
                                        sizeof err) == 0) {
                    size_t i;
                    json_t *c;
                    json_array_foreach(calls, i, c) {
                        assert_true(json_is_string(json_object_get(c, "name")));
                        assert_true(json_is_object(json_object_get(c, "arguments")));
                    }
                }
                json_decref(calls);
            }
        }
    }
    json_decref(tools);
}

/* ---- tool-call grammars ---- */

#define DSEP "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>"
#define DCALL(x) "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" x "\xef\xbd\x9c>"
#define DCALLS(x) "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" x "\xef\xbd\x9c>"

static const char *GRAMMAR_TOOLS =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"w\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8},"
    "\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":7},\"unit\":{\"enum\":[\"C\",\"F\"]}},"
    "\"required\":[\"city\",\"days\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"description\":\"t\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{}}}}]";

/* One syntax: the call as the model writes it after the trigger (what the grammar
 * covers; NAME, CITY and DAYS are filled in), and around it for the parser. */
typedef struct {
    orc_tool_syntax syntax;
    int variant;
    const char *before; /* the trigger (or what precedes the grammar) */
    const char *body;
    const char *after;  /* the closing the session appends */
} grammar_form;

static const grammar_form FORMS[] = {
    {ORC_TOOL_SYNTAX_HERMES, 0, "<tool_call>", "{\"name\":\"NAME\",\"arguments\":{\"city\":\"CITY\",\"days\":DAYS}}",
     "\n</tool_call>"},
    {ORC_TOOL_SYNTAX_LLAMA3, 0, "", "{\"name\":\"NAME\",\"parameters\":{\"city\":\"CITY\",\"days\":DAYS}}", ""},
    {ORC_TOOL_SYNTAX_MISTRAL, 0, "[TOOL_CALLS]", "[{\"name\":\"NAME\",\"arguments\":{\"city\":\"CITY\",\"days\":DAYS}}]",
     ""},
    {ORC_TOOL_SYNTAX_MISTRAL, TOOL_VARIANT_MISTRAL_NAME_ARGS, "[TOOL_CALLS]", "NAME[ARGS]{\"city\":\"CITY\",\"days\":DAYS}",
     ""},
    {ORC_TOOL_SYNTAX_FUNCTIONARY, 0, ">>>", "NAME\n{\"city\":\"CITY\",\"days\":DAYS}", ""},
    {ORC_TOOL_SYNTAX_FUNCTIONARY, TOOL_VARIANT_FUNCTIONARY_V31, "<function=", "NAME>{\"city\":\"CITY\",\"days\":DAYS}",
     "</function>"},
    {ORC_TOOL_SYNTAX_GRANITE, 0, "<|tool_call|>", "[{\"name\":\"NAME\",\"arguments\":{\"city\":\"CITY\",\"days\":DAYS}}]",
     ""},
    {ORC_TOOL_SYNTAX_DEEPSEEK, 0, DCALLS("begin") DCALL("begin"), "NAME" DSEP "{\"city\":\"CITY\",\"days\":DAYS}",
     DCALL("end") DCALLS("end")},
    {ORC_TOOL_SYNTAX_DEEPSEEK, TOOL_VARIANT_DEEPSEEK_R1, DCALLS("begin") DCALL("begin"),
     "function" DSEP "NAME\n```json\n{\"city\":\"CITY\",\"days\":DAYS}", "\n```" DCALL("end") DCALLS("end")},
    {ORC_TOOL_SYNTAX_KIMI, 0, "<|tool_calls_section_begin|><|tool_call_begin|>",
     "functions.NAME:0<|tool_call_argument_begin|>{\"city\":\"CITY\",\"days\":DAYS}",
     "<|tool_call_end|><|tool_calls_section_end|>"},
    {ORC_TOOL_SYNTAX_GLM, 0, "<tool_call>",
     "NAME\n<arg_key>city</arg_key>\n<arg_value>CITY</arg_value>\n<arg_key>days</arg_key>\n<arg_value>DAYS</arg_value>\n"
     "</tool_call>",
     ""},
    {ORC_TOOL_SYNTAX_GLM, 0, "<tool_call>",
     "NAME<arg_key>city</arg_key><arg_value>CITY</arg_value><arg_key>days</arg_key><arg_value>DAYS</arg_value></tool_call>",
     ""},
    {ORC_TOOL_SYNTAX_GPT_OSS, 0, "<|channel|>commentary to=functions.",
     "NAME <|constrain|>json<|message|>{\"city\":\"CITY\",\"days\":DAYS}", "<|call|>"},
    {ORC_TOOL_SYNTAX_GPT_OSS, 0, "<|start|>assistant to=functions.",
     "NAME<|channel|>commentary json<|message|>{\"city\":\"CITY\",\"days\":DAYS}", "<|call|>"},
    {ORC_TOOL_SYNTAX_QWEN3_CODER, 0, "<tool_call>",
     "\n<function=NAME>\n<parameter=city>\nCITY\n</parameter>\n<parameter=days>\nDAYS\n</parameter>\n</function>",
     "\n</tool_call>"},
};

/* form->body with NAME, CITY and DAYS replaced. */
static char *fill(const char *body, const char *name, const char *city, const char *days)
{
    static char buf[1024];
    size_t n = 0;
    for (const char *p = body; *p && n < sizeof buf - 64;) {
        const char *rep = NULL;
        size_t skip = 0;
        if (!strncmp(p, "NAME", 4))
            rep = name, skip = 4;
        else if (!strncmp(p, "CITY", 4))
            rep = city, skip = 4;
        else if (!strncmp(p, "DAYS", 4))
            rep = days, skip = 4;
        if (rep) {
            size_t rl = strlen(rep) < sizeof buf - 64 - n ? strlen(rep) : sizeof buf - 64 - n;
            memcpy(buf + n, rep, rl);
            n += rl;
            p += skip;
        } else {
            buf[n++] = *p++;
        }
    }
    buf[n] = 0;
    return buf;
}

/* Whether the grammar accepts text as a complete call. */
static bool accepts(const grammar *g, const char *text)
{
    grammar_matcher *m = grammar_matcher_new(g);
    assert_non_null(m);
    bool ok = grammar_matcher_accept_bytes(m, text, strlen(text)) && grammar_matcher_is_complete(m);
    grammar_matcher_free(m);
    return ok;
}

/* For each syntax: the grammar built from the tools accepts a call with valid arguments
 * (which the parser reads back as those arguments) and rejects invalid ones: a value out
 * of range, a string too long, an unknown tool, a missing required argument. */
static void test_tool_grammars(void **state)
{
    (void)state;
    json_t *tools = json_loads(GRAMMAR_TOOLS, 0, NULL);
    assert_non_null(tools);
    for (size_t i = 0; i < sizeof FORMS / sizeof FORMS[0]; i++) {
        const grammar_form *f = &FORMS[i];
        char err[512];
        char *gbnf = tool_grammar_gbnf(f->syntax, f->variant, tools, err, sizeof err);
        if (!gbnf)
            fail_msg("form %zu (%s): %s", i, tool_syntax_name(f->syntax), err);
        grammar *root = grammar_from_gbnf(gbnf, strlen(gbnf), "root", err, sizeof err);
        grammar *call = grammar_from_gbnf(gbnf, strlen(gbnf), "call", err, sizeof err);
        if (!root || !call)
            fail_msg("form %zu (%s): %s\n%s", i, tool_syntax_name(f->syntax), err, gbnf);
        const char *good = fill(f->body, "get_weather", "Paris", "2");
        if (!accepts(root, good) || !accepts(call, good))
            fail_msg("form %zu (%s) rejects a valid call: %s\n%s", i, tool_syntax_name(f->syntax), good, gbnf);
        /* the parser reads what the grammar writes */
        char text[2048];
        snprintf(text, sizeof text, "%s%s%s", f->before, good, f->after);
        json_t *calls = NULL;
        assert_int_equal(tool_calls_parse_ex(f->syntax, text, strlen(text), tools, false, &calls, NULL, err, sizeof err), 0);
        json_t *want = json_loads("[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":2}}]", 0, NULL);
        if (!json_equal(calls, want))
            fail_msg("form %zu (%s): '%s' parsed as %s", i, tool_syntax_name(f->syntax), text, json_dumps(calls, 0));
        json_decref(calls);
        json_decref(want);
        /* invalid arguments and names */
        const char *bad[][3] = {{"get_weather", "Paris", "9"},   {"get_weather", "Paris", "0"},
                                {"get_weather", "Parisienne", "2"}, {"get_wether", "Paris", "2"},
                                {"get_weather", "Paris", "2.5"}, {"get_weather", "Paris", "\"2\""}};
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            const char *t = fill(f->body, bad[b][0], bad[b][1], bad[b][2]);
            if (accepts(root, t))
                fail_msg("form %zu (%s) accepts an invalid call: %s", i, tool_syntax_name(f->syntax), t);
        }
        /* a tool without arguments, and a required argument left out */
        if (f->syntax == ORC_TOOL_SYNTAX_GLM || f->syntax == ORC_TOOL_SYNTAX_QWEN3_CODER) {
            const char *t = f->syntax == ORC_TOOL_SYNTAX_GLM ? "get_time</tool_call>" : "<function=get_time>\n</function>";
            assert_true(accepts(root, t));
            t = f->syntax == ORC_TOOL_SYNTAX_GLM ? "get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
                                                 : "<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>";
            assert_false(accepts(root, t));
            /* optional enum parameter, raw */
            t = f->syntax == ORC_TOOL_SYNTAX_GLM
                    ? "get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>days</arg_key><arg_value>2"
                      "</arg_value><arg_key>unit</arg_key><arg_value>C</arg_value></tool_call>"
                    : "<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n"
                      "<parameter=unit>\nC\n</parameter>\n</function>";
            assert_true(accepts(root, t));
        }
        grammar_free(root);
        grammar_free(call);
        free(gbnf);
    }
    json_decref(tools);
}

/* Raw string values of XML-style syntaxes: any text (markup and '<' included, long) that
 * does not hold a tag ending the value; string parameters read back verbatim, others as
 * JSON. */
static void test_xml_raw_values(void **state)
{
    (void)state;
    json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"run\",\"parameters\":{\"type\":\"object\","
                               "\"properties\":{\"code\":{\"type\":\"string\"},\"n\":{\"type\":\"number\"}},"
                               "\"required\":[\"code\"]}}}]",
                               0, NULL);
    char err[512];
    char *gbnf = tool_grammar_gbnf(ORC_TOOL_SYNTAX_QWEN3_CODER, 0, tools, err, sizeof err);
    assert_non_null(gbnf);
    grammar *g = grammar_from_gbnf(gbnf, strlen(gbnf), "root", err, sizeof err);
    if (!g)
        fail_msg("%s\n%s", err, gbnf);
    const char *pre = "<function=run>\n<parameter=code>\n", *post = "\n</parameter>\n</function>";
    const char *good[] = {"if a < b: print('</para')\n", "42", "x = \"<parameter\" + '</function' # </tool_call", ""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char t[1024];
        snprintf(t, sizeof t, "%s%s%s", pre, good[i], post);
        if (!accepts(g, t))
            fail_msg("rejects '%s'", good[i]);
        char full[1200];
        snprintf(full, sizeof full, "<tool_call>\n%s\n</tool_call>", t);
        json_t *calls = NULL;
        assert_int_equal(tool_calls_parse_ex(ORC_TOOL_SYNTAX_QWEN3_CODER, full, strlen(full), tools, false, &calls, NULL,
                                             err, sizeof err),
                         0);
        const char *code = json_string_value(json_object_get(json_object_get(json_array_get(calls, 0), "arguments"), "code"));
        assert_non_null(code); /* "42" stays a string: the schema says so */
        assert_string_equal(code, good[i]);
        json_decref(calls);
    }
    const char *bad[] = {"a </parameter> b", "<parameter=n>", "x</function>", "</tool_call>"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char t[1024];
        snprintf(t, sizeof t, "%s%s%s", pre, bad[i], post);
        if (accepts(g, t))
            fail_msg("accepts '%s'", bad[i]);
    }
    /* a long value: the automaton does not nest */
    size_t n = 20000;
    char *big = malloc(n + 128);
    strcpy(big, pre);
    size_t at = strlen(big);
    for (size_t i = 0; i < n; i++)
        big[at + i] = "ab<c/ \n"[i % 7];
    strcpy(big + at + n, post);
    assert_true(accepts(g, big));
    free(big);
    /* a number parameter is JSON */
    const char *body = "<function=run>\n<parameter=code>\nx\n</parameter>\n<parameter=n>\n1.5\n</parameter>\n</function>";
    assert_true(accepts(g, body));
    char t[512];
    snprintf(t, sizeof t, "<tool_call>\n%s\n</tool_call>", body);
    json_t *calls = NULL;
    assert_int_equal(tool_calls_parse_ex(ORC_TOOL_SYNTAX_QWEN3_CODER, t, strlen(t), tools, false, &calls, NULL, err,
                                         sizeof err),
                     0);
    assert_true(json_is_real(json_object_get(json_object_get(json_array_get(calls, 0), "arguments"), "n")));
    json_decref(calls);
    grammar_free(g);
    free(gbnf);
    /* schemas with no raw form are reported */
    json_t *pat = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\","
                             "\"properties\":{\"s\":{\"type\":\"string\",\"format\":\"date\"}}}}}]",
                             0, NULL);
    assert_null(tool_grammar_gbnf(ORC_TOOL_SYNTAX_GLM, 0, pat, err, sizeof err));
    assert_non_null(strstr(err, "format"));
    json_decref(pat);
    json_t *any = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"anyOf\":[{}]}}}]", 0, NULL);
    assert_null(tool_grammar_gbnf(ORC_TOOL_SYNTAX_QWEN3_CODER, 0, any, err, sizeof err));
    char *js = tool_grammar_gbnf(ORC_TOOL_SYNTAX_HERMES, 0, any, err, sizeof err); /* JSON syntaxes take it */
    assert_non_null(js);
    free(js);
    json_decref(any);
    json_decref(tools);
}

/* Partial parses (streaming snapshots): every prefix of a call gives calls whose
 * arguments are valid objects, ending in the whole call's arguments. */
static void test_partial_calls(void **state)
{
    (void)state;
    json_t *tools = json_loads(GRAMMAR_TOOLS, 0, NULL);
    for (size_t i = 0; i < sizeof FORMS / sizeof FORMS[0]; i++) {
        const grammar_form *f = &FORMS[i];
        char text[2048];
        snprintf(text, sizeof text, "%s%s%s", f->before, fill(f->body, "get_weather", "Paris", "2"), f->after);
        size_t n = strlen(text);
        json_t *last = NULL;
        for (size_t k = 0; k <= n; k++) {
            json_t *calls = NULL;
            char err[256];
            if (tool_calls_parse_ex(f->syntax, text, k, tools, true, &calls, NULL, err, sizeof err))
                continue;
            size_t j;
            json_t *c;
            json_array_foreach(calls, j, c) {
                assert_true(json_is_string(json_object_get(c, "name")));
                assert_true(json_is_object(json_object_get(c, "arguments")));
            }
            json_decref(last);
            last = calls;
        }
        json_t *want = json_loads("[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":2}}]", 0, NULL);
        if (!json_equal(last, want))
            fail_msg("form %zu: the last partial parse is %s", i, json_dumps(last, 0));
        json_decref(want);
        json_decref(last);
    }
    /* an unfinished XML value loses a half-written closing tag */
    json_t *calls = NULL;
    char err[128];
    const char *t = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_va";
    assert_int_equal(tool_calls_parse_ex(ORC_TOOL_SYNTAX_GLM, t, strlen(t), tools, true, &calls, NULL, err, sizeof err), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(calls, 0), "arguments"), "city")),
                        "Paris");
    json_decref(calls);
    json_decref(tools);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partial_cases),
        cmocka_unit_test(test_partial_prefixes),
        cmocka_unit_test(test_tool_syntaxes),
        cmocka_unit_test(test_tool_errors),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_tool_grammars),
        cmocka_unit_test(test_xml_raw_values),
        cmocka_unit_test(test_partial_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
