/* fuzz_jinja.c - libFuzzer harness for the Jinja engine: arbitrary bytes are parsed as a
 * template and rendered against a small fixed chat context under tight limits. Any
 * crash, hang, leak or sanitizer report is a bug; errors are the expected outcome. */
#include "jinja.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static json_t *context(void)
{
    static json_t *ctx;
    if (!ctx) {
        json_error_t e;
        ctx = json_loads("{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
                         "{\"role\": \"user\", \"content\": \"Hi \\u00e9\"},"
                         "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"type\": \"function\","
                         "\"function\": {\"name\": \"f\", \"arguments\": {\"a\": [1, 2.5, true, null]}}}]},"
                         "{\"role\": \"tool\", \"content\": \"{}\"}],"
                         "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}],"
                         "\"add_generation_prompt\": true}",
                         0, &e);
    }
    return ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    jinja_options o = jinja_default_options();
    o.max_nesting = 128;
    jinja_template *t = jinja_parse((const char *)data, size, &o, err, sizeof err);
    if (!t)
        return 0;
    jinja_render_options ro = jinja_default_render_options();
    ro.now = 1795319335;
    ro.bos_token = "<s>";
    ro.eos_token = "</s>";
    ro.max_output = 1 << 20;
    ro.max_memory = 16 << 20;
    ro.max_iterations = 20000;
    ro.max_call_depth = 16;
    char *out = NULL;
    size_t len = 0;
    if (jinja_render(t, context(), &ro, &out, &len, err, sizeof err) == 0)
        free(out);
    jinja_free(t);
    return 0;
}
