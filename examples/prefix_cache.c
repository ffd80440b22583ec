/* prefix_cache.c - what the prompt cache buys: a five-turn conversation run twice, with
 * prefix reuse (each turn evaluates only the new tokens) and without (each turn evaluates
 * the whole transcript), printing prompt tokens, evaluated tokens and the time to the
 * first token of every turn. usage: example_prefix_cache MODEL.gguf [N_CTX] */
#include <orchard.h>

#include <stdio.h>
#include <stdlib.h>

static int run(orc_model *model, bool reuse, int32_t n_ctx, double *ttft5, int32_t *eval5)
{
    orc_session_params sp = orc_session_default_params();
    sp.instructions = "You are a patient storyteller. You answer every question with a short story about "
                      "animals who live in a big forest near a river, and you always give the animals names.";
    sp.prefix_reuse = reuse;
    sp.context.n_ctx = n_ctx;
    sp.defaults.max_tokens = 32;
    sp.defaults.sampler.temperature = 0;
    orc_session *s = NULL;
    if (orc_session_new(model, &sp, &s) != ORC_OK) {
        fprintf(stderr, "session: %s\n", orc_last_error());
        return 1;
    }
    const char *turns[] = {"Tell me about the fox.", "And the owl?", "What did they eat?", "Where did they sleep?",
                           "How did the story end?"};
    printf("prefix reuse %s\n turn  prompt  cached  evaluated  first token (ms)\n", reuse ? "on" : "off");
    for (int i = 0; i < 5; i++) {
        orc_request req = orc_request_default();
        req.prompt = turns[i];
        orc_response_stats st;
        char *out = NULL;
        if (orc_session_respond_ex(s, &req, &out, &st) != ORC_OK) {
            fprintf(stderr, "respond: %s\n", orc_last_error());
            orc_session_free(s);
            return 1;
        }
        orc_free(out);
        printf(" %4d  %6d  %6d  %9d  %16.2f\n", i + 1, st.n_prompt, st.n_cached, st.n_evaluated, st.first_token_ms);
        *ttft5 = st.first_token_ms;
        *eval5 = st.n_evaluated;
    }
    orc_session_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [N_CTX]\n", argv[0]);
        return 2;
    }
    orc_model *model = NULL;
    if (orc_model_load(argv[1], NULL, &model) != ORC_OK) {
        fprintf(stderr, "load: %s\n", orc_last_error());
        return 1;
    }
    int32_t n_ctx = argc > 2 ? atoi(argv[2]) : 2048;
    double t_on = 0, t_off = 0;
    int32_t e_on = 0, e_off = 0;
    int rc = run(model, true, n_ctx, &t_on, &e_on) || run(model, false, n_ctx, &t_off, &e_off);
    if (!rc)
        printf("turn 5: %d vs %d tokens evaluated, first token after %.2f vs %.2f ms (%.1fx)\n", e_on, e_off, t_on,
               t_off, t_on > 0 ? t_off / t_on : 0.0);
    orc_model_free(model);
    return rc || e_on >= e_off;
}
