/* test_chat.c - the chat layer: the ChatML fallback (plain turns, content parts, tool
 * calls, tools), real model templates against the jinja2 reference outputs, extra
 * template variables, input validation, and templates/tokens taken from a GGUF file. */
#include "chat.h"
#include "gguf.h"
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j)
        fail_msg("bad test JSON: %s: %s", e.text, s);
    return j;
}

static void test_chatml_fallback(void **state)
{
    (void)state;
    json_t *msgs = J("[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"},"
                     "{\"role\":\"assistant\",\"content\":\"Hello!\"},"
                     "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Part \"},{\"type\":\"image\"},"
                     "{\"type\":\"text\",\"text\":\"two\"}]}]");
    char err[256], *out = NULL;
    assert_int_equal(orc_chat_render(NULL, msgs, NULL, true, "<s>", "</s>", NULL, &out, err, sizeof err), 0);
    assert_string_equal(out, "<|im_start|>system\nBe brief.<|im_end|>\n"
                             "<|im_start|>user\nHi<|im_end|>\n"
                             "<|im_start|>assistant\nHello!<|im_end|>\n"
                             "<|im_start|>user\nPart two<|im_end|>\n"
                             "<|im_start|>assistant\n");
    free(out);
    assert_int_equal(orc_chat_render(NULL, msgs, NULL, false, NULL, NULL, NULL, &out, err, sizeof err), 0);
    assert_non_null(strstr(out, "Part two<|im_end|>\n"));
    assert_null(strstr(out + strlen(out) - 10, "assistant\n"));
    free(out);
    /* an empty template renders nothing (only NULL selects ChatML) */
    assert_int_equal(orc_chat_render("", msgs, NULL, true, NULL, NULL, NULL, &out, err, sizeof err), 0);
    assert_string_equal(out, "");
    free(out);
    json_decref(msgs);

    /* tools go into the system turn; tool calls are rendered as JSON */
    msgs = J("[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Weather?\"},"
             "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"type\":\"function\",\"function\":"
             "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Z\\u00fcrich\"}}}]},"
             "{\"role\":\"tool\",\"content\":\"{\\\"t\\\": 3}\"}]");
    json_t *tools = J("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]");
    assert_int_equal(orc_chat_render(NULL, msgs, tools, true, NULL, NULL, NULL, &out, err, sizeof err), 0);
    assert_string_equal(out,
                        "<|im_start|>system\nS\n\n# Tools\n\nYou may call one or more functions. Function "
                        "signatures:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}\n"
                        "</tools>\n\nTo call a function, reply with <tool_call>{\"name\": ..., \"arguments\": "
                        "...}</tool_call>.<|im_end|>\n"
                        "<|im_start|>user\nWeather?<|im_end|>\n"
                        "<|im_start|>assistant\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                        "{\"city\": \"Z\xc3\xbcrich\"}}\n</tool_call><|im_end|>\n"
                        "<|im_start|>tool\n{\"t\": 3}<|im_end|>\n"
                        "<|im_start|>assistant\n");
    free(out);
    json_decref(msgs);
    json_decref(tools);
}

/* Renders every case of a reference file through the chat layer. */
static void check_reference(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "reference/templates/%s.json", name);
    json_t *ref = tu_load_json(tu_shared(rel));
    assert_non_null(ref);
    snprintf(rel, sizeof rel, "templates/%s", json_string_value(json_object_get(ref, "template")));
    char *src = tu_read_file(tu_shared(rel), NULL);
    assert_non_null(src);
    char err[512];
    orc_chat_template *t = orc_chat_template_new(src, json_string_value(json_object_get(ref, "bos_token")),
                                                 json_string_value(json_object_get(ref, "eos_token")), err, sizeof err);
    if (!t)
        fail_msg("%s: %s", name, err);
    assert_false(orc_chat_template_is_fallback(t));
    const char *cname;
    json_t *cs;
    int n = 0;
    json_object_foreach(json_object_get(ref, "cases"), cname, cs)
    {
        json_t *ctx = json_object_get(cs, "context");
        orc_chat_input in = {.messages = json_object_get(ctx, "messages"),
                             .tools = json_object_get(ctx, "tools"),
                             .add_generation_prompt = json_is_true(json_object_get(ctx, "add_generation_prompt")),
                             .now = 1795319335 /* 2026-11-22T03:48:55Z */};
        char *out = NULL;
        size_t len = 0;
        int rc = orc_chat_template_apply(t, &in, &out, &len, err, sizeof err);
        json_t *want = json_object_get(cs, "output");
        if (want) {
            if (rc)
                fail_msg("%s/%s: %s", name, cname, err);
            assert_int_equal(len, json_string_length(want));
            assert_memory_equal(out, json_string_value(want), len);
        } else {
            assert_int_equal(rc, -1);
            assert_null(out);
            assert_true(strlen(err) > 0);
        }
        free(out);
        n++;
    }
    assert_true(n >= 3);
    orc_chat_template_free(t);
    free(src);
    json_decref(ref);
}

static void test_real_templates(void **state)
{
    (void)state;
    check_reference("Qwen-Qwen2.5-7B-Instruct");
    check_reference("meta-llama-Llama-3.1-8B-Instruct");
    check_reference("google-gemma-2-2b-it"); /* includes cases where the template raises */
    check_reference("openai-gpt-oss-120b");
}

static void test_extra_context(void **state)
{
    (void)state;
    char *src = tu_read_file(tu_shared("templates/Qwen-Qwen3-0.6B.jinja"), NULL);
    assert_non_null(src);
    json_t *msgs = J("[{\"role\":\"user\",\"content\":\"Hi\"}]");
    json_t *extra = J("{\"enable_thinking\": false, \"add_generation_prompt\": false, \"messages\": []}");
    char err[256], *with = NULL, *without = NULL;
    /* the conversation arguments win over same-named extra variables */
    assert_int_equal(orc_chat_render(src, msgs, NULL, true, NULL, NULL, extra, &with, err, sizeof err), 0);
    assert_int_equal(orc_chat_render(src, msgs, NULL, true, NULL, NULL, NULL, &without, err, sizeof err), 0);
    size_t lw = strlen(without);
    assert_int_equal(strncmp(with, without, lw), 0);
    assert_string_equal(with + lw, "<think>\n\n</think>\n\n");
    free(with);
    free(without);
    json_decref(msgs);
    json_decref(extra);
    free(src);
}

static void test_bad_input(void **state)
{
    (void)state;
    char err[256], *out = (char *)1;
    json_t *bad[] = {J("{\"role\":\"user\"}"), J("[1]"), J("[{\"content\":\"x\"}]"),
                     J("[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":5}]")};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(orc_chat_render(NULL, bad[i], NULL, true, NULL, NULL, NULL, &out, err, sizeof err), -1);
        assert_null(out);
        assert_true(strlen(err) > 0);
        json_decref(bad[i]);
    }
    json_t *msgs = J("[{\"role\":\"user\",\"content\":\"x\"}]");
    assert_int_equal(orc_chat_render("{% if %}", msgs, NULL, true, NULL, NULL, NULL, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 1"));
    assert_int_equal(orc_chat_render("{{ raise_exception('nope') }}", msgs, NULL, true, NULL, NULL, NULL, &out, err,
                                     sizeof err),
                     -1);
    assert_non_null(strstr(err, "nope"));
    json_decref(msgs);
}

static void test_from_gguf(void **state)
{
    (void)state;
    char err[256];
    gguf_ctx *g = gguf_open(tu_shared("models/stories260K.gguf"), false, err, sizeof err);
    if (!g)
        fail_msg("gguf_open: %s", err);
    orc_chat_template *t = orc_chat_template_from_gguf(g, err, sizeof err);
    assert_non_null(t);
    gguf_str s;
    bool has = gguf_get_str(g, "tokenizer.chat_template", &s);
    assert_int_equal(orc_chat_template_is_fallback(t), !has);
    /* stories260K is a Llama 2 SentencePiece vocabulary: BOS <s>, EOS </s> */
    assert_string_equal(orc_chat_template_bos(t), "<s>");
    assert_string_equal(orc_chat_template_eos(t), "</s>");
    orc_chat_template_free(t);
    gguf_close(g);
}

/* the proposed public entry points (JSON as text, status + orc_last_error) */
static void test_public_api(void **state)
{
    (void)state;
    orc_chat_template *t = NULL;
    assert_int_equal(orc_chat_template_from_source("{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]"
                                                   "{% endfor %}{{ eos_token if not add_generation_prompt }}"
                                                   "{{ strftime_now('%Y') }}{{ extra }}",
                                                   "<s>", "</s>", &t),
                     ORC_OK);
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(orc_chat_template_render(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
                                              1795319335, &out, &len),
                     ORC_OK);
    assert_string_equal(out, "<s>[user:hi]</s>2026");
    assert_int_equal(len, strlen(out));
    orc_free(out);
    assert_int_equal(orc_chat_template_set_tokens(t, "B", NULL), ORC_OK);
    assert_int_equal(orc_chat_apply(t, "[{\"role\": \"user\", \"content\": \"x\"}]", NULL, true, "{\"extra\": 5}",
                                    &out, &len),
                     ORC_OK);
    assert_int_equal(strncmp(out, "B[user:x]", 9), 0);
    assert_string_equal(out + strlen(out) - 1, "5");
    orc_free(out);
    /* malformed JSON and template errors carry a message */
    assert_int_equal(orc_chat_apply(t, "[{", NULL, true, NULL, &out, &len), ORC_ERR_INVALID_ARGUMENT);
    assert_null(out);
    assert_non_null(strstr(orc_last_error(), "invalid JSON"));
    assert_int_equal(orc_chat_template_render(t, "[1]", -1, &out, &len), ORC_ERR_INVALID_ARGUMENT);
    orc_chat_template_free(t);
    assert_int_equal(orc_chat_template_from_source("{{ raise_exception('no') }}", NULL, NULL, &t), ORC_OK);
    assert_int_equal(orc_chat_apply(t, "[]", NULL, false, NULL, &out, &len), ORC_ERR_FORMAT);
    assert_non_null(strstr(orc_last_error(), "TemplateError: no"));
    orc_chat_template_free(t);
    assert_int_equal(orc_chat_template_from_source("{% for %}", NULL, NULL, &t), ORC_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(orc_last_error(), "line 1, column"));
    /* from a model: stories260K has no template, so ChatML with its <s>/</s> */
    orc_model *m = NULL;
    orc_model_params mp = orc_model_default_params();
    assert_int_equal(orc_model_load(tu_shared("models/stories260K.gguf"), &mp, &m), ORC_OK);
    assert_int_equal(orc_chat_template_from_model(m, &t), ORC_OK);
    assert_true(orc_chat_template_is_fallback(t));
    assert_int_equal(orc_chat_apply(t, "[{\"role\": \"user\", \"content\": \"Once\"}]", NULL, true, NULL, &out, NULL),
                     ORC_OK);
    assert_string_equal(out, "<|im_start|>user\nOnce<|im_end|>\n<|im_start|>assistant\n");
    orc_free(out);
    orc_chat_template_free(t);
    orc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml_fallback), cmocka_unit_test(test_real_templates),
        cmocka_unit_test(test_extra_context),   cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_from_gguf),       cmocka_unit_test(test_public_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
