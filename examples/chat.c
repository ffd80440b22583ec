/* chat.c - the smallest useful program: a session with instructions, three turns, each
 * answer streamed as it is generated, then the transcript saved as JSON.
 * usage: example_chat MODEL.gguf */
#include <orchard.h>

#include <stdio.h>
#include <string.h>

static bool print_delta(const char *text, size_t len, void *user)
{
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return true; /* false would cancel */
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
    sp.instructions = "You are a storyteller for small children.";
    sp.defaults.max_tokens = 48;
    orc_session *session = NULL;
    if (orc_session_new(model, &sp, &session) != ORC_OK) {
        fprintf(stderr, "session: %s\n", orc_last_error());
        orc_model_free(model);
        return 1;
    }
    const char *prompts[] = {"Tell me about a brave little fox.", "What did the fox find?", "How did it end?"};
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        printf("> %s\n", prompts[i]);
        orc_request req = orc_request_default();
        req.prompt = prompts[i];
        req.on_delta = print_delta;
        orc_response_stats st;
        char *answer = NULL;
        if (orc_session_respond_ex(session, &req, &answer, &st) != ORC_OK) {
            fprintf(stderr, "\nrespond: %s\n", orc_last_error());
            rc = 1;
        } else {
            printf("\n[%d tokens; prompt %d = %d cached + %d evaluated]\n", st.n_generated, st.n_prompt, st.n_cached,
                   st.n_evaluated);
        }
        orc_free(answer);
    }
    char *json = NULL;
    if (rc == 0 && orc_session_transcript_json(session, &json) == ORC_OK)
        printf("transcript: %zu bytes of JSON\n", strlen(json));
    orc_free(json);
    orc_session_free(session);
    orc_model_free(model);
    return rc;
}
