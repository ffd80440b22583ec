/* test_session.c - sessions through the public API on stories260K (ChatML fallback
 * template): transcript round-trip, one request at a time, cancellation, stop strings,
 * prefix-cache reuse and prewarm asserted from the reported counts, context overflow and
 * both policies, structured responses with snapshots, and tool round-trips with a
 * scripted model for each syntax, rendered through the real chat templates. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchard.h"
#include "session.h"
#include "testutil.h"

static orc_model *model;

static int setup(void **state)
{
    (void)state;
    return orc_model_load(tu_shared("models/stories260K.gguf"), NULL, &model) == ORC_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    orc_model_free(model);
    return 0;
}

static orc_session_params base_params(int32_t n_ctx)
{
    orc_session_params p = orc_session_default_params();
    p.instructions = "You tell short stories about animals.";
    p.context.n_ctx = n_ctx;
    p.context.n_threads = 1;
    p.defaults.sampler.temperature = 0; /* greedy */
    p.defaults.max_tokens = 24;
    return p;
}

static orc_session *new_session(const orc_session_params *p)
{
    orc_session *s = NULL;
    if (orc_session_new(model, p, &s) != ORC_OK)
        fail_msg("orc_session_new: %s", orc_last_error());
    return s;
}

__attribute__((noinline)) static char *respond(orc_session *s, const char *prompt, orc_response_stats *st)
{
    orc_request r = orc_request_default();
    r.prompt = prompt;
    char *out = NULL;
    orc_status rc = orc_session_respond_ex(s, &r, &out, st);
    if (rc != ORC_OK)
        fail_msg("respond: %s (%s)", orc_status_string(rc), orc_last_error());
    return out;
}

static json_t *transcript(orc_session *s)
{
    char *js = NULL;
    assert_int_equal(orc_session_transcript_json(s, &js), ORC_OK);
    json_t *t = json_loads(js, 0, NULL);
    orc_free(js);
    assert_non_null(t);
    return t;
}

static void test_basic_and_reuse(void **state)
{
    (void)state;
    orc_session_params p = base_params(512);
    orc_session *s = new_session(&p);
    orc_response_stats s1, s2;
    char *a = respond(s, "Once upon a time there was a cat.", &s1);
    assert_true(s1.n_generated > 0 && s1.n_generated <= 24);
    assert_int_equal(s1.n_cached, 0);
    assert_int_equal(s1.n_evaluated, s1.n_prompt);
    assert_int_equal(orc_session_n_entries(s), 3); /* instructions, prompt, response */
    /* the cache now holds the first prompt and the answer's tokens */
    int32_t kv1 = orc_session_n_cached(s);
    assert_int_equal(kv1, s1.n_prompt + s1.n_generated);
    char *b = respond(s, "What did the cat do next?", &s2);
    /* the second turn reuses all of it (stories260K's answers re-tokenize as generated):
     * only the new tokens - end of the answer, the new message, the generation header -
     * are evaluated */
    assert_int_equal(s2.n_cached, kv1);
    assert_int_equal(s2.n_evaluated, s2.n_prompt - kv1);
    /* count_tokens predicts the prompt of a request */
    int32_t n3 = 0;
    assert_int_equal(orc_session_count_tokens(s, "And then?", &n3), ORC_OK);
    orc_response_stats s3;
    char *c = respond(s, "And then?", &s3);
    assert_int_equal(n3, s3.n_prompt);

    /* the same conversation without prefix reuse: everything evaluated, same text */
    p.prefix_reuse = false;
    orc_session *u = new_session(&p);
    orc_response_stats u1, u2, u3;
    char *a2 = respond(u, "Once upon a time there was a cat.", &u1);
    char *b2 = respond(u, "What did the cat do next?", &u2);
    char *c2 = respond(u, "And then?", &u3);
    assert_int_equal(u2.n_cached, 0);
    assert_int_equal(u2.n_evaluated, u2.n_prompt);
    assert_int_equal(u2.n_prompt, s2.n_prompt);
    assert_string_equal(a, a2);
    assert_string_equal(b, b2);
    assert_string_equal(c, c2);
    json_t *t = transcript(s);
    json_t *e = json_object_get(t, "entries");
    assert_int_equal(json_array_size(e), 7);
    assert_string_equal(json_string_value(json_object_get(json_array_get(e, 0), "type")), "instructions");
    assert_string_equal(json_string_value(json_object_get(json_array_get(e, 6), "text")), c);
    json_decref(t);
    orc_free(a); orc_free(b); orc_free(c); orc_free(a2); orc_free(b2); orc_free(c2);
    orc_session_free(s);
    orc_session_free(u);
}

static void test_transcript_roundtrip(void **state)
{
    (void)state;
    orc_session_params p = base_params(512);
    p.defaults.sampler.temperature = 0.9f;
    p.defaults.sampler.seed = 1234;
    orc_session *s = new_session(&p);
    orc_free(respond(s, "Tell me about a dog.", NULL));
    orc_free(respond(s, "Was the dog happy?", NULL));
    char *js = NULL;
    assert_int_equal(orc_session_transcript_json(s, &js), ORC_OK);

    orc_session_params q = base_params(512);
    q.instructions = "something else, replaced by the transcript";
    q.defaults = p.defaults;
    orc_session *r = new_session(&q);
    assert_int_equal(orc_session_load_transcript(r, js), ORC_OK);
    char *js2 = NULL;
    assert_int_equal(orc_session_transcript_json(r, &js2), ORC_OK);
    assert_string_equal(js, js2);
    /* the same next output with the same seed */
    orc_response_stats st;
    char *x = respond(s, "What happened at night?", NULL);
    char *y = respond(r, "What happened at night?", &st);
    assert_string_equal(x, y);
    assert_int_equal(st.n_cached, 0); /* the restored session had nothing cached */
    /* malformed transcripts are rejected and change nothing */
    int32_t n = orc_session_n_entries(r);
    assert_int_equal(orc_session_load_transcript(r, "{\"version\":1,\"entries\":[{\"type\":\"bogus\"}]}"), ORC_ERR_FORMAT);
    assert_int_equal(orc_session_load_transcript(r, "{\"version\":99,\"entries\":[]}"), ORC_ERR_FORMAT);
    assert_int_equal(orc_session_load_transcript(r, "[1,"), ORC_ERR_FORMAT);
    assert_int_equal(orc_session_load_transcript(r, "{\"version\":1,\"entries\":[{\"type\":\"prompt\",\"text\":\"a\"},"
                                                    "{\"type\":\"instructions\",\"text\":\"late\"}]}"),
                     ORC_ERR_FORMAT);
    assert_int_equal(orc_session_n_entries(r), n);
    /* reset keeps the instructions */
    assert_int_equal(orc_session_reset(r), ORC_OK);
    assert_int_equal(orc_session_n_entries(r), 1);
    orc_free(js);
    orc_free(js2);
    orc_free(x);
    orc_free(y);
    orc_session_free(s);
    orc_session_free(r);
}

/* ---- one request at a time ---- */

typedef struct {
    orc_session *s;
    atomic_int started, release;
    orc_status status;
    int deltas;
} busy_ctx;

static bool blocking_delta(const char *d, size_t n, void *user)
{
    (void)d;
    (void)n;
    busy_ctx *b = user;
    b->deltas++;
    atomic_store(&b->started, 1);
    while (!atomic_load(&b->release)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

static void *busy_worker(void *arg)
{
    busy_ctx *b = arg;
    orc_request r = orc_request_default();
    r.prompt = "Once upon a time";
    r.on_delta = blocking_delta;
    r.user = b;
    char *out = NULL;
    b->status = orc_session_respond_ex(b->s, &r, &out, NULL);
    orc_free(out);
    return NULL;
}

static void test_busy(void **state)
{
    (void)state;
    orc_session_params p = base_params(256);
    busy_ctx b = {.s = new_session(&p)};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, busy_worker, &b), 0);
    while (!atomic_load(&b.started)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    char *out = NULL;
    int32_t n = 0;
    assert_int_equal(orc_session_respond(b.s, "hello", &out), ORC_ERR_BUSY);
    assert_null(out);
    assert_int_equal(orc_session_count_tokens(b.s, "hello", &n), ORC_ERR_BUSY);
    assert_int_equal(orc_session_prewarm(b.s, NULL, NULL), ORC_ERR_BUSY);
    assert_int_equal(orc_session_load_transcript(b.s, "{\"version\":1,\"entries\":[]}"), ORC_ERR_BUSY);
    /* another session on the same model is independent */
    orc_session *other = new_session(&p);
    orc_free(respond(other, "A bird sang.", NULL));
    orc_session_free(other);
    atomic_store(&b.release, 1);
    pthread_join(th, NULL);
    assert_int_equal(b.status, ORC_OK);
    assert_int_equal(orc_session_n_entries(b.s), 3);
    orc_session_free(b.s);
}

/* Sessions on one model generate at the same time from their own threads, with the
 * same results as one after the other. */
typedef struct {
    orc_session *s;
    char *out[3];
} par_ctx;

static void *par_worker(void *arg)
{
    par_ctx *c = arg;
    const char *prompts[] = {"Once upon a time there was a frog.", "What did the frog eat?", "Where did it go?"};
    for (int i = 0; i < 3; i++)
        if (orc_session_respond(c->s, prompts[i], &c->out[i]) != ORC_OK)
            c->out[i] = NULL;
    return NULL;
}

static void test_parallel_sessions(void **state)
{
    (void)state;
    orc_session_params p = base_params(512);
    par_ctx ref = {.s = new_session(&p)};
    par_worker(&ref);
    par_ctx c[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        c[i] = (par_ctx){.s = new_session(&p)};
        assert_int_equal(pthread_create(&th[i], NULL, par_worker, &c[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        for (int k = 0; k < 3; k++) {
            assert_non_null(c[i].out[k]);
            assert_string_equal(c[i].out[k], ref.out[k]);
            orc_free(c[i].out[k]);
        }
        orc_session_free(c[i].s);
    }
    for (int k = 0; k < 3; k++)
        orc_free(ref.out[k]);
    orc_session_free(ref.s);
}

/* ---- cancellation ---- */

static bool cancel_after_3(const char *d, size_t n, void *user)
{
    (void)d;
    (void)n;
    int *k = user;
    return ++*k < 3;
}

static void *cancel_thread(void *arg)
{
    busy_ctx *b = arg;
    while (!atomic_load(&b->started)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    orc_session_cancel(b->s);
    atomic_store(&b->release, 1);
    return NULL;
}

static void test_cancel(void **state)
{
    (void)state;
    orc_session_params p = base_params(256);
    p.defaults.max_tokens = 200;
    orc_session *s = new_session(&p);
    orc_request r = orc_request_default();
    r.prompt = "Once upon a time";
    int k = 0;
    r.on_delta = cancel_after_3;
    r.user = &k;
    char *out = NULL;
    orc_response_stats st;
    assert_int_equal(orc_session_respond_ex(s, &r, &out, &st), ORC_ERR_CANCELLED);
    assert_int_equal(k, 3);
    assert_int_equal(st.stop_reason, ORC_STOP_CANCELLED);
    assert_true(st.n_generated < 200);
    assert_non_null(out);
    /* the partial response is in the transcript */
    json_t *t = transcript(s);
    json_t *last = json_array_get(json_object_get(t, "entries"), 2);
    assert_string_equal(json_string_value(json_object_get(last, "text")), out);
    json_decref(t);
    orc_free(out);

    /* from another thread, while the callback waits */
    busy_ctx b = {.s = s};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_thread, &b), 0);
    r.on_delta = blocking_delta;
    r.user = &b;
    assert_int_equal(orc_session_respond_ex(s, &r, &out, &st), ORC_ERR_CANCELLED);
    pthread_join(th, NULL);
    assert_int_equal(b.deltas, 1);
    assert_int_equal(st.stop_reason, ORC_STOP_CANCELLED);
    orc_free(out);
    /* the session works afterwards */
    orc_free(respond(s, "Then?", NULL));
    orc_session_free(s);
}

/* ---- stop strings, max tokens, streaming ---- */

typedef struct {
    char buf[8192];
    size_t n;
} collect;

static bool collect_delta(const char *d, size_t n, void *user)
{
    collect *c = user;
    assert_true(c->n + n < sizeof c->buf);
    memcpy(c->buf + c->n, d, n);
    c->n += n;
    c->buf[c->n] = 0;
    return true;
}

static void test_stop_strings(void **state)
{
    (void)state;
    orc_session_params p = base_params(512);
    p.defaults.max_tokens = 40;
    orc_session *s = new_session(&p);
    orc_response_stats st;
    char *full = respond(s, "Once upon a time", &st);
    assert_int_equal(st.stop_reason, ORC_STOP_MAX_TOKENS);
    assert_int_equal(st.n_generated, 40);
    size_t L = strlen(full);
    assert_true(L > 20);
    /* a stop string from the middle of the greedy text cuts the response before it */
    char stop[8];
    memcpy(stop, full + L / 2, 4);
    stop[4] = 0;
    size_t first_off = (size_t)(strstr(full, stop) - full);
    const char *stops[] = {"zzzz-never", stop};
    orc_generation_options o = p.defaults;
    o.stop = stops;
    o.n_stop = 2;
    orc_session *s2 = new_session(&p);
    orc_request r = orc_request_default();
    r.prompt = "Once upon a time";
    r.options = &o;
    collect c = {0};
    r.on_delta = collect_delta;
    r.user = &c;
    char *cut = NULL;
    assert_int_equal(orc_session_respond_ex(s2, &r, &cut, &st), ORC_OK);
    assert_int_equal(st.stop_reason, ORC_STOP_STRING);
    assert_int_equal(strlen(cut), first_off);
    assert_memory_equal(cut, full, strlen(cut));
    /* the streamed deltas are exactly the response: the stop string never leaks */
    assert_string_equal(c.buf, cut);
    orc_free(full);
    orc_free(cut);
    orc_session_free(s);
    orc_session_free(s2);
}

/* ---- prewarm ---- */

static void test_prewarm(void **state)
{
    (void)state;
    orc_session_params p = base_params(512);
    orc_session *s = new_session(&p);
    int32_t n = 0;
    assert_int_equal(orc_session_prewarm(s, NULL, &n), ORC_OK);
    assert_true(n > 5);
    assert_int_equal(orc_session_n_cached(s), n);
    orc_response_stats st;
    orc_free(respond(s, "Once upon a time", &st));
    assert_true(st.n_cached >= n);
    assert_int_equal(st.n_cached + st.n_evaluated, st.n_prompt);
    /* with a prompt prefix */
    orc_session *s2 = new_session(&p);
    int32_t n2 = 0;
    assert_int_equal(orc_session_prewarm(s2, "Once upon a time there was", &n2), ORC_OK);
    assert_true(n2 > n);
    orc_free(respond(s2, "Once upon a time there was a fox.", &st));
    assert_true(st.n_cached >= n2);
    orc_session_free(s);
    orc_session_free(s2);
}

/* ---- the context window ---- */

static void test_overflow_and_policies(void **state)
{
    (void)state;
    orc_session_params p = base_params(128);
    p.defaults.max_tokens = 16;
    orc_session *s = new_session(&p);
    assert_int_equal(orc_session_n_ctx(s), 128);
    char big[2048];
    big[0] = 0;
    for (int i = 0; i < 40; i++)
        strcat(big, "The cat sat. ");
    int32_t need = 0;
    assert_int_equal(orc_session_count_tokens(s, big, &need), ORC_OK);
    assert_true(need > 128);
    char *out = NULL;
    assert_int_equal(orc_session_respond(s, big, &out), ORC_ERR_CONTEXT_FULL);
    char want[64];
    snprintf(want, sizeof want, "needs %d tokens", need);
    assert_non_null(strstr(orc_last_error(), want));
    assert_non_null(strstr(orc_last_error(), "holds 128"));
    assert_int_equal(orc_session_n_entries(s), 1); /* nothing changed */
    /* a conversation that grows past the window fails without a policy ... */
    int turns = 0;
    orc_status rc = ORC_OK;
    while (rc == ORC_OK && turns < 20) {
        rc = orc_session_respond(s, "Tell me more about the little cat.", &out);
        orc_free(out);
        out = NULL;
        turns++;
    }
    assert_int_equal(rc, ORC_ERR_CONTEXT_FULL);
    assert_true(turns > 1);

    /* ... and keeps going with drop-oldest, keeping instructions and the latest turn */
    p.policy = ORC_CONTEXT_DROP_OLDEST;
    orc_session *d = new_session(&p);
    int dropped = 0;
    for (int i = 0; i < turns + 3; i++) {
        orc_response_stats st;
        orc_free(respond(d, "Tell me more about the little cat.", &st));
        dropped += st.n_dropped;
        assert_true(st.n_prompt < 128);
    }
    assert_true(dropped > 0);
    json_t *t = transcript(d);
    json_t *e = json_object_get(t, "entries");
    assert_string_equal(json_string_value(json_object_get(json_array_get(e, 0), "type")), "instructions");
    assert_string_equal(json_string_value(json_object_get(json_array_get(e, json_array_size(e) - 2), "type")), "prompt");
    assert_true(json_array_size(e) < (size_t)(2 * (turns + 3) + 1));
    json_decref(t);
    /* still too big alone: the policy cannot help */
    assert_int_equal(orc_session_respond(d, big, &out), ORC_ERR_CONTEXT_FULL);

    /* summarize: older turns become a summary the model wrote */
    p.policy = ORC_CONTEXT_SUMMARIZE;
    p.context.n_ctx = 256;
    orc_session *m = new_session(&p);
    int summarized = 0;
    for (int i = 0; i < 12 && !summarized; i++) {
        orc_response_stats st;
        orc_free(respond(m, "Tell me more about the little cat.", &st));
        summarized += st.n_dropped;
    }
    assert_true(summarized > 0);
    t = transcript(m);
    e = json_object_get(t, "entries");
    assert_string_equal(json_string_value(json_object_get(json_array_get(e, 0), "type")), "instructions");
    assert_string_equal(json_string_value(json_object_get(json_array_get(e, 1), "type")), "summary");
    json_decref(t);
    orc_session_free(s);
    orc_session_free(d);
    orc_session_free(m);
}

/* ---- structured responses ---- */

typedef struct {
    char *snaps[4096];
    int n;
} snaps;

static bool on_snap(const char *js, void *user)
{
    snaps *s = user;
    json_t *v = json_loads(js, JSON_DECODE_ANY, NULL);
    assert_non_null(v); /* every snapshot is valid JSON */
    json_decref(v);
    if (s->n < 4096)
        s->snaps[s->n++] = strdup(js);
    return true;
}

static void test_structured(void **state)
{
    (void)state;
    orc_session_params p = base_params(512);
    p.defaults.max_tokens = 200;
    orc_session *s = new_session(&p);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":10},"
                         "\"age\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":99},"
                         "\"pets\":{\"type\":\"array\",\"items\":{\"enum\":[\"cat\",\"dog\"]},\"maxItems\":2}},"
                         "\"required\":[\"name\",\"age\",\"pets\"],\"additionalProperties\":false}";
    for (int variant = 0; variant < 2; variant++) {
        orc_request r = orc_request_default();
        r.prompt = "Describe the girl in the story.";
        r.schema = schema;
        r.schema_in_prompt = variant == 0;
        snaps sn = {0};
        r.on_snapshot = on_snap;
        r.user = &sn;
        char *out = NULL;
        orc_response_stats st;
        orc_status rc = orc_session_respond_ex(s, &r, &out, &st);
        if (rc != ORC_OK)
            fail_msg("structured: %s", orc_last_error());
        assert_int_equal(st.stop_reason, ORC_STOP_GRAMMAR);
        json_t *v = json_loads(out, 0, NULL);
        assert_non_null(v);
        json_t *name = json_object_get(v, "name"), *age = json_object_get(v, "age"), *pets = json_object_get(v, "pets");
        assert_true(json_is_string(name) && strlen(json_string_value(name)) <= 10);
        assert_true(json_is_integer(age) && json_integer_value(age) >= 1 && json_integer_value(age) <= 99);
        assert_true(json_is_array(pets) && json_array_size(pets) <= 2);
        assert_int_equal(json_object_size(v), 3);
        json_decref(v);
        /* snapshots grow toward the final value, which comes last */
        assert_true(sn.n >= 3);
        assert_string_equal(sn.snaps[sn.n - 1], out);
        assert_true(sn.snaps[0][0] == '{');
        for (int i = 0; i < sn.n; i++)
            free(sn.snaps[i]);
        orc_free(out);
    }
    /* the prompt entry keeps the schema only when it was shown to the model */
    json_t *t = transcript(s);
    json_t *e = json_object_get(t, "entries");
    assert_non_null(json_object_get(json_array_get(e, 1), "schema"));
    assert_null(json_object_get(json_array_get(e, 3), "schema"));
    assert_true(json_is_true(json_object_get(json_array_get(e, 2), "structured")));
    json_decref(t);
    /* a bad schema is an error, not a crash */
    orc_request r = orc_request_default();
    r.prompt = "x";
    r.schema = "{\"type\": \"object\", \"properties\": ";
    char *out = NULL;
    assert_int_equal(orc_session_respond_ex(s, &r, &out, NULL), ORC_ERR_INVALID_ARGUMENT);
    orc_session_free(s);
}

/* ---- tools ---- */

typedef struct {
    int calls;
    char last_args[512];
} tool_log;

static orc_status weather_fn(const char *args, char **result, void *user)
{
    tool_log *l = user;
    l->calls++;
    snprintf(l->last_args, sizeof l->last_args, "%s", args);
    json_t *a = json_loads(args, 0, NULL);
    const char *city = json_string_value(json_object_get(a, "city"));
    char buf[256];
    snprintf(buf, sizeof buf, "{\"city\": \"%s\", \"sky\": \"sunny\", \"celsius\": 21}", city ? city : "?");
    json_decref(a);
    *result = strdup(buf);
    return ORC_OK;
}

static orc_status broken_fn(const char *args, char **result, void *user)
{
    (void)args;
    (void)user;
    *result = strdup("the clock is broken");
    return ORC_ERR_INTERNAL;
}

static const char *WEATHER_SCHEMA = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
                                    "\"days\":{\"type\":\"integer\"}},\"required\":[\"city\"]}";

/* Tool-call snapshots as a request reports them. */
typedef struct {
    int n, n_complete;
    int32_t index[512];
    char name[512][32];
    char *args[512];
    bool complete[512];
} call_snaps;

static bool on_call_snap(int32_t index, const char *name, const char *args, bool complete, void *user)
{
    call_snaps *c = user;
    if (c->n < 512) {
        c->index[c->n] = index;
        snprintf(c->name[c->n], sizeof c->name[0], "%s", name);
        c->args[c->n] = strdup(args);
        c->complete[c->n] = complete;
        c->n++;
        c->n_complete += complete;
    }
    return true;
}

static void call_snaps_free(call_snaps *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->args[i]);
}

/* Snapshots of call 0: valid JSON objects whose keys the final arguments all have, the
 * last one complete and equal to the arguments the transcript recorded. */
static void check_call_snaps(const call_snaps *c, const json_t *final_args, const char *what)
{
    int last = -1, partial = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->index[i] != 0)
            continue;
        json_t *v = json_loads(c->args[i], 0, NULL);
        if (!json_is_object(v))
            fail_msg("%s: snapshot '%s' is not an object", what, c->args[i]);
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            if (!json_object_get(final_args, k))
                fail_msg("%s: snapshot '%s' has a key the call does not", what, c->args[i]);
        }
        json_decref(v);
        if (c->complete[i])
            assert_int_equal(last < 0 || !c->complete[last], 1); /* complete once */
        else
            partial++;
        last = i;
    }
    if (last < 0 || !c->complete[last])
        fail_msg("%s: no complete snapshot of the first call", what);
    json_t *v = json_loads(c->args[last], 0, NULL);
    if (!json_equal(v, final_args))
        fail_msg("%s: last snapshot %s differs from the call's arguments", what, c->args[last]);
    json_decref(v);
    if (json_object_size(final_args) > 0 && partial == 0)
        fail_msg("%s: no partial snapshot before the complete one", what);
}

/* The round-trip test's callbacks: answer deltas and tool-call snapshots. */
typedef struct {
    collect col;
    call_snaps calls;
} rt_user;

static bool rt_delta(const char *d, size_t n, void *user)
{
    return collect_delta(d, n, &((rt_user *)user)->col);
}

static bool rt_call(int32_t index, const char *name, const char *args, bool complete, void *user)
{
    return on_call_snap(index, name, args, complete, &((rt_user *)user)->calls);
}

typedef struct {
    const char *template_file; /* NULL: the model's (ChatML fallback) */
    orc_tool_syntax syntax;
    const char *call_text;     /* the model's scripted tool-call turn */
} syntax_case;

#define DS(x) "<\xef\xbd\x9ctool\xe2\x96\x81" x "\xef\xbd\x9c>"

static const syntax_case CASES[] = {
    {NULL, ORC_TOOL_SYNTAX_HERMES,
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"},
    {"Qwen-Qwen2.5-7B-Instruct.jinja", ORC_TOOL_SYNTAX_HERMES,
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
     "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"},
    {"meta-llama-Llama-3.1-8B-Instruct.jinja", ORC_TOOL_SYNTAX_LLAMA3,
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_time\", \"parameters\": {}}"},
    {"Mistral-Small-3.2-24B-Instruct-2506.jinja", ORC_TOOL_SYNTAX_MISTRAL,
     "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[ARGS]{}"},
    {"mistralai-Mistral-Nemo-Instruct-2407.jinja", ORC_TOOL_SYNTAX_MISTRAL,
     "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {}}]"},
    {"meetkai-functionary-medium-v3.2.jinja", ORC_TOOL_SYNTAX_FUNCTIONARY,
     "get_weather\n{\"city\": \"Paris\"}>>>get_time\n{}"},
    {"ibm-granite-granite-3.3-2B-Instruct.jinja", ORC_TOOL_SYNTAX_GRANITE,
     "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {}}]"},
    {"deepseek-ai-DeepSeek-V3.1.jinja", ORC_TOOL_SYNTAX_DEEPSEEK,
     DS("calls\xe2\x96\x81" "begin") DS("call\xe2\x96\x81" "begin") "get_weather" DS("sep") "{\"city\": \"Paris\"}"
     DS("call\xe2\x96\x81" "end") DS("call\xe2\x96\x81" "begin") "get_time" DS("sep") "{}" DS("call\xe2\x96\x81" "end")
     DS("calls\xe2\x96\x81" "end")},
    {"moonshotai-Kimi-K2.jinja", ORC_TOOL_SYNTAX_KIMI,
     "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
     "{\"city\": \"Paris\"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{}"
     "<|tool_call_end|><|tool_calls_section_end|>"},
    {"GLM-4.6.jinja", ORC_TOOL_SYNTAX_GLM,
     "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
     "<tool_call>get_time\n</tool_call>"},
    {"openai-gpt-oss-120b.jinja", ORC_TOOL_SYNTAX_GPT_OSS,
     "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>"
     "<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{}<|call|>"},
    {"meetkai-functionary-medium-v3.1.jinja", ORC_TOOL_SYNTAX_FUNCTIONARY,
     "<function=get_weather>{\"city\": \"Paris\"}</function><function=get_time>{}</function>"},
    {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", ORC_TOOL_SYNTAX_DEEPSEEK,
     DS("calls\xe2\x96\x81" "begin") DS("call\xe2\x96\x81" "begin") "function" DS("sep") "get_weather\n```json\n"
     "{\"city\": \"Paris\"}\n```" DS("call\xe2\x96\x81" "end") DS("call\xe2\x96\x81" "begin") "function" DS("sep")
     "get_time\n```json\n{}\n```" DS("call\xe2\x96\x81" "end") DS("calls\xe2\x96\x81" "end")},
    {"GLM-4.7-Flash.jinja", ORC_TOOL_SYNTAX_GLM,
     "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call><tool_call>get_time</tool_call>"},
    {"Qwen3-Coder.jinja", ORC_TOOL_SYNTAX_QWEN3_CODER,
     "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>\n"
     "<tool_call>\n<function=get_time>\n</function>\n</tool_call>"},
};

static void test_tool_roundtrips(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < sizeof CASES / sizeof CASES[0]; ci++) {
        const syntax_case *c = &CASES[ci];
        tool_log log = {0};
        orc_tool tools[2] = {
            {"get_weather", "Current weather in a city", WEATHER_SCHEMA, weather_fn, &log},
            {"get_time", "The current time", NULL, broken_fn, NULL},
        };
        orc_session_params p = base_params(4096);
        p.tools = tools;
        p.n_tools = 2;
        p.parallel_tool_calls = ci % 2 == 1;
        char *tpl = NULL;
        if (c->template_file) {
            char path[256];
            snprintf(path, sizeof path, "templates/%s", c->template_file);
            tpl = tu_read_file(tu_shared(path), NULL);
            assert_non_null(tpl);
            p.chat_template = tpl;
        }
        orc_session *s = new_session(&p);
        static const char *names[] = {"auto", "hermes", "llama3", "mistral", "functionary", "granite",
                                      "deepseek", "kimi", "glm", "gpt-oss", "qwen3-coder", "none"};
        assert_string_equal(orc_session_tool_syntax_name(s), names[c->syntax]); /* detected from the template */
        /* functionary v3.2 addresses its answer to "all" */
        const char *answer = c->syntax == ORC_TOOL_SYNTAX_FUNCTIONARY ? "all\nIt is sunny in Paris." : "It is sunny in Paris.";
        const char *script[] = {c->call_text, answer};
        session_script(s, script, 2);
        orc_request r = orc_request_default();
        r.prompt = "What's the weather in Paris?";
        rt_user u = {0};
        r.on_delta = rt_delta;
        r.on_tool_call = rt_call;
        r.user = &u;
        char *out = NULL;
        orc_response_stats st;
        orc_status rc = orc_session_respond_ex(s, &r, &out, &st);
        if (rc != ORC_OK)
            fail_msg("case %zu (%s): %s", ci, c->template_file ? c->template_file : "chatml", orc_last_error());
        assert_string_equal(out, "It is sunny in Paris.");
        assert_string_equal(u.col.buf, "It is sunny in Paris."); /* the call itself is not streamed */
        assert_int_equal(st.n_tool_calls, 2);
        assert_int_equal(st.n_tool_rounds, 1);
        assert_int_equal(log.calls, 1);
        json_t *a = json_loads(log.last_args, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(a, "city")), "Paris");
        json_decref(a);
        /* transcript: prompt, tool_calls, two outputs (one an error), response */
        json_t *t = transcript(s);
        json_t *e = json_object_get(t, "entries");
        assert_int_equal(json_array_size(e), 6);
        json_t *tc = json_array_get(e, 2);
        assert_string_equal(json_string_value(json_object_get(tc, "type")), "tool_calls");
        assert_int_equal(json_array_size(json_object_get(tc, "calls")), 2);
        json_t *o1 = json_array_get(e, 3), *o2 = json_array_get(e, 4);
        assert_non_null(strstr(json_string_value(json_object_get(o1, "output")), "sunny"));
        assert_true(json_is_false(json_object_get(o1, "error")));
        assert_true(json_is_true(json_object_get(o2, "error")));
        assert_non_null(strstr(json_string_value(json_object_get(o2, "output")), "the clock is broken"));
        /* the calls' arguments streamed as snapshots, each completed once */
        assert_int_equal(u.calls.n_complete, 2);
        check_call_snaps(&u.calls, json_object_get(json_array_get(json_object_get(tc, "calls"), 0), "arguments"),
                         c->template_file ? c->template_file : "chatml");
        call_snaps_free(&u.calls);
        json_decref(t);
        /* the next turn renders the tool turn through the template and reuses the cache */
        session_script(s, script + 1, 1);
        orc_free(respond(s, "Thanks!", &st));
        assert_true(st.n_cached > 0);
        orc_free(out);
        orc_session_free(s);
        free(tpl);
    }
}

static void test_tool_round_limit(void **state)
{
    (void)state;
    tool_log log = {0};
    orc_tool tools[1] = {{"get_weather", "Weather", WEATHER_SCHEMA, weather_fn, &log}};
    orc_session_params p = base_params(2048);
    p.tools = tools;
    p.n_tools = 1;
    p.max_tool_rounds = 2;
    orc_session *s = new_session(&p);
    const char *call = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>";
    const char *script[] = {call, call, call, call};
    session_script(s, script, 4);
    char *out = NULL;
    orc_response_stats st;
    orc_request r = orc_request_default();
    r.prompt = "Weather?";
    assert_int_equal(orc_session_respond_ex(s, &r, &out, &st), ORC_OK);
    assert_int_equal(st.stop_reason, ORC_STOP_TOOL_ROUNDS);
    assert_int_equal(st.n_tool_rounds, 2);
    assert_int_equal(log.calls, 2);
    orc_free(out);
    /* an unknown tool becomes an error output */
    const char *bad[] = {"<tool_call>{\"name\": \"nope\", \"arguments\": {}}</tool_call>", "Sorry."};
    session_script(s, bad, 2);
    r.prompt = "Again?";
    assert_int_equal(orc_session_respond_ex(s, &r, &out, &st), ORC_OK);
    assert_string_equal(out, "Sorry.");
    json_t *t = transcript(s);
    json_t *e = json_object_get(t, "entries");
    json_t *o = json_array_get(e, json_array_size(e) - 2);
    assert_true(json_is_true(json_object_get(o, "error")));
    assert_non_null(strstr(json_string_value(json_object_get(o, "output")), "no tool named 'nope'"));
    json_decref(t);
    orc_free(out);
    orc_session_free(s);
}

#define DSM(x) "<\xef\xbd\x9ctool\xe2\x96\x81" x "\xef\xbd\x9c>"

/* Every syntax with a grammar: its template, and the text a model writes up to the
 * trigger (the lazy path). */
typedef struct {
    const char *template_file;
    const char *syntax;
    const char *lazy_prefix;
} grammar_case;

static const grammar_case GRAMMAR_CASES[] = {
    {NULL, "hermes", "Let me check.\n<tool_call>\n"},
    {"meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3", "{"},
    {"mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral", "[TOOL_CALLS]"},
    {"Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral", "[TOOL_CALLS]"},
    {"meetkai-functionary-medium-v3.2.jinja", "functionary", "all\nLet me check.>>>"},
    {"meetkai-functionary-medium-v3.1.jinja", "functionary", "Let me check.<function="},
    {"ibm-granite-granite-3.3-2B-Instruct.jinja", "granite", "<|tool_call|>"},
    {"deepseek-ai-DeepSeek-V3.1.jinja", "deepseek", DSM("calls\xe2\x96\x81" "begin") DSM("call\xe2\x96\x81" "begin")},
    {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek",
     DSM("calls\xe2\x96\x81" "begin") DSM("call\xe2\x96\x81" "begin")},
    {"moonshotai-Kimi-K2.jinja", "kimi", "<|tool_calls_section_begin|><|tool_call_begin|>"},
    {"GLM-4.6.jinja", "glm", "<tool_call>"},
    {"openai-gpt-oss-120b.jinja", "gpt-oss",
     "<|channel|>analysis<|message|>I need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions."},
    {"Qwen3-Coder.jinja", "qwen3-coder", "Let me check.\n<tool_call>\n"},
};

/* The real model under the tool-call grammar of every syntax: whatever stories260K
 * writes, the call parses, names a tool and carries arguments that follow the tool's
 * schema; the argument snapshots grow into the executed arguments. */
static void test_tool_grammar(void **state)
{
    (void)state;
    size_t n_cases = sizeof GRAMMAR_CASES / sizeof GRAMMAR_CASES[0];
    for (size_t kk = 0; kk < 2 * n_cases; kk++) {
        const grammar_case *gc = &GRAMMAR_CASES[kk / 2];
        int pass = (int)(kk % 2);
        tool_log log = {0};
        const char *schema = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8},"
                             "\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":7}},"
                             "\"required\":[\"city\",\"days\"],\"additionalProperties\":false}";
        orc_tool tools[2] = {
            {"get_weather", "Current weather in a city", schema, weather_fn, &log},
            {"get_time", "The current time", "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}",
             broken_fn, NULL},
        };
        orc_session_params p = base_params(2048);
        p.tools = tools;
        p.n_tools = pass == 0 ? 1 : 2; /* a required call of the one tool writes its arguments */
        p.max_tool_rounds = 1;
        p.defaults.max_tokens = 300;
        char *tpl = NULL;
        if (gc->template_file) {
            char path[256];
            snprintf(path, sizeof path, "templates/%s", gc->template_file);
            tpl = tu_read_file(tu_shared(path), NULL);
            assert_non_null(tpl);
            p.chat_template = tpl;
        }
        orc_session *s = new_session(&p);
        assert_string_equal(orc_session_tool_syntax_name(s), gc->syntax);
        char what[160];
        snprintf(what, sizeof what, "%s (%s)", gc->template_file ? gc->template_file : "chatml",
                 pass ? "lazy" : "required");
        orc_request r = orc_request_default();
        r.prompt = "What is the weather in Paris?";
        /* pass 0: a call of get_weather is required from the first token; pass 1: the model
         * (scripted) writes up to the trigger and the lazy grammar, choosing between both
         * tools, takes over from there */
        r.require_tool_call = (pass == 0);
        if (pass == 1)
            session_script_prefix(s, gc->lazy_prefix);
        call_snaps cs = {0};
        r.on_tool_call = on_call_snap;
        r.user = &cs;
        char *out = NULL;
        orc_response_stats st;
        orc_status rc = orc_session_respond_ex(s, &r, &out, &st);
        if (rc != ORC_OK)
            fail_msg("%s: %s", what, orc_last_error());
        if (st.n_tool_calls < 1)
            fail_msg("%s: no tool call", what);
        json_t *t = transcript(s);
        json_t *tc = json_array_get(json_object_get(t, "entries"), 2);
        assert_string_equal(json_string_value(json_object_get(tc, "type")), "tool_calls");
        json_t *call = json_array_get(json_object_get(tc, "calls"), 0);
        const char *name = json_string_value(json_object_get(call, "name"));
        json_t *args = json_object_get(call, "arguments");
        if (!strcmp(name, "get_weather")) {
            json_t *city = json_object_get(args, "city"), *days = json_object_get(args, "days");
            if (!(json_is_string(city) && strlen(json_string_value(city)) <= 8 && json_is_integer(days) &&
                  json_integer_value(days) >= 1 && json_integer_value(days) <= 7 && json_object_size(args) == 2))
                fail_msg("%s: arguments %s break the schema", what, json_dumps(args, JSON_COMPACT));
            assert_true(log.calls >= 1);
        } else {
            assert_string_equal(name, "get_time");
            assert_int_equal(json_object_size(args), 0);
        }
        if (getenv("ORC_TEST_VERBOSE")) {
            char *dbg = json_dumps(tc, JSON_COMPACT);
            fprintf(stderr, "%s: %s [%d snapshots]\n", what, dbg, cs.n);
            free(dbg);
        }
        check_call_snaps(&cs, args, what);
        assert_int_equal(cs.n_complete, st.n_tool_calls);
        call_snaps_free(&cs);
        json_decref(t);
        orc_free(out);
        orc_session_free(s);
        free(tpl);
    }
    /* a schema an XML-style syntax cannot write raw is not constrained: no promise of a call */
    orc_tool tool = {"get_weather", "w", "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\","
                                        "\"pattern\":\"^[A-Z]\"}}}", weather_fn, NULL};
    orc_session_params p = base_params(512);
    p.tools = &tool;
    p.n_tools = 1;
    p.tool_syntax = ORC_TOOL_SYNTAX_GLM;
    orc_session *s = new_session(&p);
    orc_request r = orc_request_default();
    r.prompt = "x";
    r.require_tool_call = true;
    char *out = NULL;
    assert_int_equal(orc_session_respond_ex(s, &r, &out, NULL), ORC_ERR_UNSUPPORTED);
    orc_session_free(s);
    /* nor can a session without tool grammars */
    p.tool_syntax = ORC_TOOL_SYNTAX_HERMES;
    p.constrain_tool_calls = false;
    s = new_session(&p);
    assert_int_equal(orc_session_respond_ex(s, &r, &out, NULL), ORC_ERR_UNSUPPORTED);
    orc_session_free(s);
}

static void test_bad_params(void **state)
{
    (void)state;
    orc_session *s = NULL;
    orc_session_params p = base_params(256);
    orc_tool t = {"bad name!", "x", NULL, weather_fn, NULL};
    p.tools = &t;
    p.n_tools = 1;
    assert_int_equal(orc_session_new(model, &p, &s), ORC_ERR_INVALID_ARGUMENT);
    assert_null(s);
    orc_tool t2 = {"ok", "x", "[1]", weather_fn, NULL};
    p.tools = &t2;
    assert_int_equal(orc_session_new(model, &p, &s), ORC_ERR_INVALID_ARGUMENT);
    p = base_params(256);
    const char *stops[] = {""};
    p.defaults.stop = stops;
    p.defaults.n_stop = 1;
    assert_int_equal(orc_session_new(model, &p, &s), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_session_respond(NULL, "x", NULL), ORC_ERR_INVALID_ARGUMENT);
    p = base_params(256);
    p.instructions = "bad \xff bytes";
    assert_int_equal(orc_session_new(model, &p, &s), ORC_ERR_INVALID_ARGUMENT);
    p.instructions = NULL;
    s = new_session(&p);
    assert_int_equal(orc_session_respond(s, "caf\xc3", NULL), ORC_ERR_INVALID_ARGUMENT);
    orc_session_free(s);
    orc_session_free(NULL);
}

/* A random-weight model writes arbitrary byte tokens: the text, the deltas and the
 * transcript stay valid UTF-8 (invalid bytes become U+FFFD). */
static void test_synthetic_bytes(void **state)
{
    (void)state;
    orc_model *syn = NULL;
    assert_int_equal(orc_model_load(tu_shared("models/synthetic/llama-gqa-f32.gguf"), NULL, &syn), ORC_OK);
    orc_session_params p = base_params(1024);
    p.defaults.max_tokens = 64;
    p.defaults.sampler.temperature = 1.5f;
    p.defaults.sampler.top_k = 0;
    p.defaults.sampler.top_p = 1;
    p.defaults.sampler.min_p = 0;
    orc_session *s = NULL;
    assert_int_equal(orc_session_new(syn, &p, &s), ORC_OK);
    for (int i = 0; i < 4; i++) {
        orc_request r = orc_request_default();
        r.prompt = "Hello there";
        collect c = {0};
        r.on_delta = collect_delta;
        r.user = &c;
        char *out = NULL;
        orc_response_stats st;
        assert_int_equal(orc_session_respond_ex(s, &r, &out, &st), ORC_OK);
        assert_string_equal(c.buf, out);
        json_t *v = json_string(out); /* jansson accepts only valid UTF-8 */
        assert_non_null(v);
        json_decref(v);
        orc_free(out);
    }
    json_t *t = transcript(s);
    assert_int_equal(json_array_size(json_object_get(t, "entries")), 9);
    json_decref(t);
    orc_session_free(s);
    orc_model_free(syn);
}

static bool cancel_after_2(const char *d, size_t n, void *user)
{
    (void)d;
    (void)n;
    return ++*(int *)user < 2;
}

/* Each part on every synthetic architecture (random weights, the stories260K vocabulary,
 * the ChatML fallback template): prefix reuse and its counts (sliding-window models may
 * have to start over), the transcript round trip with a seed, cancellation, a structured
 * response with snapshots, a required tool call under the grammar, overflow with and
 * without the drop policy, prewarm. */
static void test_synthetic_models(void **state)
{
    (void)state;
    static const char *files[] = {"llama-gqa-f32", "llama-gqa-q4_k_m", "qwen2-f16", "qwen3-f16",
                                  "gemma2-f16",    "gemma3-f16",       "qwen3moe-f16"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[256];
        snprintf(path, sizeof path, "models/synthetic/%s.gguf", files[f]);
        orc_model *m = NULL;
        assert_int_equal(orc_model_load(tu_shared(path), NULL, &m), ORC_OK);
        bool sliding = !strncmp(files[f], "gemma", 5);
        orc_session_params p = base_params(2048);
        p.defaults.max_tokens = 10;
        orc_session *s = NULL, *r = NULL;
        assert_int_equal(orc_session_new(m, &p, &s), ORC_OK);
        /* prefix reuse: turn 2 keeps turn 1's prompt (or, with a sliding window that
         * overwrote it, evaluates everything) */
        orc_response_stats s1, s2;
        orc_free(respond(s, "Hello there", &s1));
        orc_free(respond(s, "And then?", &s2));
        assert_int_equal(s2.n_cached + s2.n_evaluated, s2.n_prompt);
        if (!sliding && s2.n_cached < s1.n_prompt)
            fail_msg("%s: turn 2 reused %d of %d prompt tokens", files[f], s2.n_cached, s1.n_prompt);
        /* transcript round trip: the same next answer with a seed. Both sessions evaluate
         * the whole prompt at once (reuse off): prefill and single-token decode may round
         * differently (quantized kernels), which a random-weight model's flat distribution
         * would turn into different samples */
        orc_generation_options o = p.defaults;
        o.sampler.temperature = 0.9f;
        o.sampler.seed = 77;
        orc_session_params fp = p;
        fp.prefix_reuse = false;
        orc_session *orig = NULL;
        assert_int_equal(orc_session_new(m, &fp, &orig), ORC_OK);
        orc_free(respond(orig, "Hello there", NULL));
        orc_free(respond(orig, "And then?", NULL));
        char *js = NULL;
        assert_int_equal(orc_session_transcript_json(orig, &js), ORC_OK);
        assert_int_equal(orc_session_new(m, &fp, &r), ORC_OK);
        assert_int_equal(orc_session_load_transcript(r, js), ORC_OK);
        orc_request q = orc_request_default();
        q.prompt = "Go on.";
        q.options = &o;
        char *x = NULL, *y = NULL;
        assert_int_equal(orc_session_respond_ex(orig, &q, &x, NULL), ORC_OK);
        assert_int_equal(orc_session_respond_ex(r, &q, &y, NULL), ORC_OK);
        orc_session_free(orig);
        if (strcmp(x, y))
            fail_msg("%s: restored session answered '%s', the original '%s'", files[f], y, x);
        orc_free(x);
        orc_free(y);
        orc_free(js);
        /* cancellation from the callback */
        q = orc_request_default();
        q.prompt = "More.";
        int k = 0;
        q.on_delta = cancel_after_2;
        q.user = &k;
        orc_generation_options longer = p.defaults;
        longer.max_tokens = 100;
        q.options = &longer;
        orc_response_stats st;
        assert_int_equal(orc_session_respond_ex(r, &q, &x, &st), ORC_ERR_CANCELLED);
        assert_int_equal(st.stop_reason, ORC_STOP_CANCELLED);
        assert_true(st.n_generated < 100);
        orc_free(x);
        /* structured response: valid, the snapshots end in it */
        q = orc_request_default();
        q.prompt = "A number, please.";
        q.schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":99},"
                   "\"w\":{\"type\":\"string\",\"maxLength\":5}},\"required\":[\"n\",\"w\"],\"additionalProperties\":false}";
        orc_generation_options so = p.defaults;
        so.max_tokens = 64;
        q.options = &so;
        snaps sn = {0};
        q.on_snapshot = on_snap;
        q.user = &sn;
        if (orc_session_respond_ex(r, &q, &x, &st) != ORC_OK)
            fail_msg("%s: structured: %s", files[f], orc_last_error());
        json_t *v = json_loads(x, 0, NULL);
        assert_true(json_is_integer(json_object_get(v, "n")) && json_is_string(json_object_get(v, "w")));
        json_decref(v);
        assert_true(sn.n >= 1);
        assert_string_equal(sn.snaps[sn.n - 1], x);
        for (int i = 0; i < sn.n; i++)
            free(sn.snaps[i]);
        orc_free(x);
        orc_session_free(r);
        r = NULL;
        /* a required tool call: schema-valid arguments */
        tool_log log = {0};
        orc_tool tool = {"get_weather", "Weather",
                         "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":6}},"
                         "\"required\":[\"city\"],\"additionalProperties\":false}",
                         weather_fn, &log};
        orc_session_params tp = base_params(2048);
        tp.tools = &tool;
        tp.n_tools = 1;
        tp.max_tool_rounds = 1;
        tp.defaults.max_tokens = 60;
        assert_int_equal(orc_session_new(m, &tp, &r), ORC_OK);
        q = orc_request_default();
        q.prompt = "Weather?";
        q.require_tool_call = true;
        if (orc_session_respond_ex(r, &q, &x, &st) != ORC_OK)
            fail_msg("%s: tool call: %s", files[f], orc_last_error());
        assert_int_equal(log.calls, 1);
        v = json_loads(log.last_args, 0, NULL);
        const char *city = json_string_value(json_object_get(v, "city"));
        size_t chars = 0; /* maxLength counts code points */
        for (const char *c = city; c && *c; c++)
            chars += ((unsigned char)*c & 0xC0) != 0x80;
        if (!city || chars > 6 || json_object_size(v) != 1)
            fail_msg("%s: arguments %s break the schema", files[f], log.last_args);
        json_decref(v);
        orc_free(x);
        orc_session_free(r);
        r = NULL;
        /* overflow: an error with the numbers, then the drop policy makes room */
        orc_session_params op = base_params(192);
        op.defaults.max_tokens = 8;
        assert_int_equal(orc_session_new(m, &op, &r), ORC_OK);
        char big[1024] = "";
        for (int i = 0; i < 60; i++)
            strcat(big, "The cat sat. ");
        q = orc_request_default();
        q.prompt = big;
        assert_int_equal(orc_session_respond_ex(r, &q, &x, NULL), ORC_ERR_CONTEXT_FULL);
        assert_non_null(strstr(orc_last_error(), "context window holds 192"));
        orc_session_free(r);
        op.policy = ORC_CONTEXT_DROP_OLDEST;
        assert_int_equal(orc_session_new(m, &op, &r), ORC_OK);
        int dropped = 0;
        for (int i = 0; i < 6; i++) {
            if (orc_session_respond_ex(r, &(orc_request){.prompt = "The cat sat on the mat.", .use_tools = true}, &x,
                                       &st) != ORC_OK)
                fail_msg("%s: drop-oldest turn %d: %s", files[f], i, orc_last_error());
            dropped += st.n_dropped;
            orc_free(x);
        }
        assert_true(dropped > 0 && st.n_prompt < 192);
        orc_session_free(r);
        /* prewarm: the next request finds the instructions cached */
        assert_int_equal(orc_session_new(m, &p, &r), ORC_OK);
        int32_t n = 0;
        assert_int_equal(orc_session_prewarm(r, NULL, &n), ORC_OK);
        assert_true(n > 5);
        orc_free(respond(r, "Hi", &st));
        if (!sliding)
            assert_true(st.n_cached >= n);
        orc_session_free(r);
        orc_session_free(s);
        orc_model_free(m);
    }
}

static void test_model_check(void **state)
{
    (void)state;
    char why[512];
    assert_int_equal(orc_model_check(tu_shared("models/stories260K.gguf"), 0, why, sizeof why), ORC_OK);
    assert_non_null(strstr(why, "llama"));
    /* a context far too large for this machine's memory */
    assert_int_equal(orc_model_check(tu_shared("models/stories260K.gguf"), 2000000000, why, sizeof why), ORC_ERR_NO_MEMORY);
    assert_non_null(strstr(why, "not enough memory"));
    assert_int_equal(orc_model_check("/nonexistent.gguf", 0, why, sizeof why), ORC_ERR_IO);
    assert_true(strlen(why) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_and_reuse),
        cmocka_unit_test(test_transcript_roundtrip),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_parallel_sessions),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_prewarm),
        cmocka_unit_test(test_overflow_and_policies),
        cmocka_unit_test(test_structured),
        cmocka_unit_test(test_tool_roundtrips),
        cmocka_unit_test(test_tool_round_limit),
        cmocka_unit_test(test_tool_grammar),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_synthetic_bytes),
        cmocka_unit_test(test_synthetic_models),
        cmocka_unit_test(test_model_check),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
