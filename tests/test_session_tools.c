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
        "<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>[1]</arg_value></tool_call>",
        "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": 1}<|call|>",
        "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n</function>\n</tool_call>",
        "{\"a\": {\"b\": [true, false, null, -1e5, \"\\ud83d\\ude00\"]}}",
    };
    const char alphabet[] = "{}[]\":,<>|\\/ntfu0123456789.-eE _=\n";
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
        }
    }
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
