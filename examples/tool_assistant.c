/* tool_assistant.c - a tool-using assistant: two tools with JSON Schema arguments and C
 * callbacks. require_tool_call makes even the tiny test model call one (the tool grammar
 * keeps the arguments valid); the arguments stream as snapshots while the model writes
 * them; the outputs enter the transcript and the model answers.
 * usage: example_tool_assistant MODEL.gguf */
#include <orchard.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *copy(const char *s)
{
    char *r = malloc(strlen(s) + 1);
    if (r)
        strcpy(r, s);
    return r;
}

static orc_status get_weather(const char *args_json, char **result, void *user)
{
    int *calls = user;
    ++*calls;
    printf("  [get_weather called with %s]\n", args_json);
    *result = copy("{\"sky\": \"sunny\", \"celsius\": 21}");
    return *result ? ORC_OK : ORC_ERR_NO_MEMORY;
}

static orc_status get_time(const char *args_json, char **result, void *user)
{
    int *calls = user;
    ++*calls;
    printf("  [get_time called with %s]\n", args_json);
    *result = copy("the clock is broken");
    return ORC_ERR_INTERNAL; /* reported to the model as an error output */
}

/* The arguments so far, each time they grow, then once complete before the tool runs. */
static bool on_tool_call(int32_t index, const char *name, const char *arguments_json, bool complete, void *user)
{
    int *snapshots = user;
    ++*snapshots;
    printf("  call %d %s%s %s\n", index, name, complete ? " (complete)" : "", arguments_json);
    return true;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    orc_model *model = NULL;
    if (orc_model_load(argv[1], NULL, &model) != ORC_OK) {
        fprintf(stderr, "load: %s\n", orc_last_error());
        return 1;
    }
    int calls = 0;
    orc_tool tools[] = {
        {"get_weather", "Current weather in a city",
         "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":12}},"
         "\"required\":[\"city\"],\"additionalProperties\":false}",
         get_weather, &calls},
        {"get_time", "The current time", "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}",
         get_time, &calls},
    };
    orc_session_params sp = orc_session_default_params();
    sp.instructions = "You help with the weather.";
    sp.tools = tools;
    sp.n_tools = 2;
    sp.max_tool_rounds = 2;
    sp.defaults.max_tokens = 96;
    sp.defaults.sampler.temperature = 0;
    orc_session *session = NULL;
    int rc = 1;
    if (orc_session_new(model, &sp, &session) != ORC_OK) {
        fprintf(stderr, "session: %s\n", orc_last_error());
        goto out;
    }
    printf("tool syntax: %s\n", orc_session_tool_syntax_name(session));
    orc_request req = orc_request_default();
    req.prompt = "What is the weather in Paris?";
    req.require_tool_call = true;
    int snapshots = 0;
    req.on_tool_call = on_tool_call;
    req.user = &snapshots;
    orc_response_stats st;
    char *answer = NULL;
    if (orc_session_respond_ex(session, &req, &answer, &st) != ORC_OK) {
        fprintf(stderr, "respond: %s\n", orc_last_error());
        goto out;
    }
    printf("answer: %s\n[%d tool calls in %d rounds]\n", answer, st.n_tool_calls, st.n_tool_rounds);
    orc_free(answer);
    rc = calls >= 1 && st.n_tool_calls >= 1 && snapshots > st.n_tool_calls ? 0 : 1;
out:
    orc_session_free(session);
    orc_model_free(model);
    return rc;
}
