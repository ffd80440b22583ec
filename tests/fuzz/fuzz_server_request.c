/* fuzz_server_request.c - libFuzzer harness for `orchard serve`'s request validator
 * (tools/cli/serve_request.c, compiled in here): the first byte picks chat or completion,
 * the rest is the body. Accepted requests must satisfy the validator's invariants; rejected
 * ones must carry a well-formed OpenAI error object. Must never crash, leak or hang. */
#include "../../tools/cli/serve_request.c"

#include <stddef.h>
#include <stdint.h>

static void must(bool cond)
{
    if (!cond)
        abort();
}

static bool valid_json(const char *s, size_t flags)
{
    json_t *j = s ? json_loads(s, flags, NULL) : NULL;
    json_decref(j);
    return j != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 20)
        return 0;
    srv_kind kind = (data[0] & 1) ? SRV_COMPLETION : SRV_CHAT;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    srv_request r;
    srv_error err;
    memset(&err, 0, sizeof err);
    if (srv_request_parse(body, len, kind, &r, &err) == 0) {
        must(r.kind == kind);
        must(r.n_stop >= 0 && r.n_stop <= SRV_MAX_STOP);
        for (int i = 0; i < r.n_stop; i++)
            must(r.stop[i] && strlen(r.stop[i]) > 0 && strlen(r.stop[i]) <= SRV_MAX_STOP_LEN);
        must(r.max_tokens == -1 || (r.max_tokens >= 1 && r.max_tokens <= 1 << 24));
        must(r.temperature >= 0 && r.temperature <= 2 && r.top_p >= 0 && r.top_p <= 1);
        if (kind == SRV_CHAT) {
            must(valid_json(r.messages_json, 0));
            must(!r.prompt);
        } else {
            must(r.prompt && !r.messages_json);
        }
        must(!r.tools_json || valid_json(r.tools_json, 0));
        must(!r.schema_json || valid_json(r.schema_json, JSON_DECODE_ANY));
        must(!r.tool_call || r.schema_json);
        must(!(r.tool_call && r.tools_auto) && (!r.tools_auto || r.tools_json));
        must(r.format == SRV_FMT_TEXT || r.schema_json);
        must(r.n_choices >= 1 && r.n_choices <= SRV_MAX_N);
        must(r.top_logprobs >= 0 && r.top_logprobs <= SRV_MAX_TOP_LOGPROBS && (r.logprobs || !r.top_logprobs));
        must(srv_json_depth(body, len, SRV_MAX_JSON_DEPTH) <= SRV_MAX_JSON_DEPTH);
        srv_request_free(&r);
    } else {
        must(err.status == 400 || err.status == 500);
        must(err.type && err.message[0]);
        char *e = srv_error_json(&err);
        must(valid_json(e, 0));
        free(e);
    }
    /* sanitizing is idempotent and its output is valid UTF-8 jansson accepts */
    size_t n1, n2;
    char *a = srv_utf8_sanitize(body, len, &n1);
    if (a) {
        char *b = srv_utf8_sanitize(a, n1, &n2);
        must(b && n1 == n2 && !memcmp(a, b, n1));
        json_t *s = json_stringn(a, n1);
        must(s != NULL);
        json_decref(s);
        free(b);
    }
    free(a);
    return 0;
}
