/* stream_snapshots.c - a structured response streamed as snapshots: each callback gets
 * the JSON value parsed so far (open strings, arrays and objects closed), so a UI can show
 * the object filling in; the last snapshot is the final value.
 * usage: example_stream_snapshots MODEL.gguf */
#include <orchard.h>

#include <stdio.h>
#include <string.h>

typedef struct {
    int count;
    char last[1024];
} progress;

static bool on_snapshot(const char *json, void *user)
{
    progress *p = user;
    p->count++;
    printf("snapshot %2d: %s\n", p->count, json);
    snprintf(p->last, sizeof p->last, "%s", json);
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
    orc_session_params sp = orc_session_default_params();
    sp.defaults.max_tokens = 200;
    sp.defaults.sampler.seed = 7;
    orc_session *session = NULL;
    int rc = 1;
    if (orc_session_new(model, &sp, &session) != ORC_OK) {
        fprintf(stderr, "session: %s\n", orc_last_error());
        goto out;
    }
    progress pr = {0};
    orc_request req = orc_request_default();
    req.prompt = "Write a tiny story with a title and three characters.";
    req.schema = "{\"type\":\"object\",\"properties\":{"
                 "\"title\":{\"type\":\"string\",\"maxLength\":24},"
                 "\"characters\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":10},"
                 "\"minItems\":3,\"maxItems\":3}},"
                 "\"required\":[\"title\",\"characters\"],\"additionalProperties\":false}";
    req.on_snapshot = on_snapshot;
    req.user = &pr;
    char *json = NULL;
    if (orc_session_respond_ex(session, &req, &json, NULL) != ORC_OK) {
        fprintf(stderr, "respond: %s\n", orc_last_error());
        goto out;
    }
    printf("final: %s\n", json);
    rc = pr.count > 1 && !strcmp(pr.last, json) ? 0 : 1;
    orc_free(json);
out:
    orc_session_free(session);
    orc_model_free(model);
    return rc;
}
