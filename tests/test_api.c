/* test_api.c - the public API's contracts: versions, status strings, the replaceable log
 * sink, metadata queries on a real model, token helpers, NULL-safety of *_free, and the
 * streaming decoder holding back split UTF-8 characters. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "orchard.h"
#include "testutil.h"

static void test_versions_and_status(void **state)
{
    (void)state;
    assert_int_equal(orc_version_number(), ORC_VERSION_NUMBER);
    assert_string_equal(orc_version_string(), ORC_VERSION_STRING);
    for (int s = 0; s <= ORC_ERR_INTERNAL; s++)
        assert_true(strlen(orc_status_string((orc_status)s)) > 0);
    assert_string_equal(orc_status_string(ORC_ERR_CONTEXT_FULL), "context window full");
    orc_model_free(NULL);
    orc_context_free(NULL);
    orc_sampler_free(NULL);
    orc_detok_stream_free(NULL);
}

static int logged;
static char last_log[512];
static void capture(orc_log_level level, const char *msg, void *user)
{
    (void)level;
    *(int *)user += 1;
    snprintf(last_log, sizeof last_log, "%s", msg);
}

static void test_log_callback(void **state)
{
    (void)state;
    orc_log_set(capture, &logged);
    orc_log_set_level(ORC_LOG_INFO);
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(tu_shared("models/stories260K.gguf"), NULL, &m), ORC_OK);
    orc_context *c = NULL;
    assert_int_equal(orc_context_new(m, NULL, &c), ORC_OK);
    assert_true(logged > 0); /* the context reports its KV cache size at info level */
    assert_non_null(strstr(last_log, "KV cache"));
    orc_context_free(c);
    orc_model_free(m);
    orc_log_set(NULL, NULL);
    orc_log_set_level(ORC_LOG_WARN);
}

static void test_metadata(void **state)
{
    (void)state;
    orc_model *m = NULL;
    orc_model_params mp = orc_model_default_params();
    assert_true(mp.use_mmap);
    mp.use_mmap = false;
    assert_int_equal(orc_model_load(tu_shared("models/stories260K.gguf"), &mp, &m), ORC_OK);
    assert_string_equal(orc_model_arch(m), "llama");
    assert_int_equal(orc_model_n_vocab(m), 512);
    assert_int_equal(orc_model_n_layer(m), 5);
    assert_int_equal(orc_model_n_embd(m), 64);
    assert_int_equal(orc_model_n_head(m), 8);
    assert_int_equal(orc_model_n_head_kv(m), 4);
    assert_int_equal(orc_model_n_ff(m), 172);
    assert_int_equal(orc_model_n_ctx_train(m), 2048);
    assert_int_equal(orc_model_file_size(m), 1185376);
    assert_int_equal(orc_model_gguf_version(m), 3);
    assert_true(orc_model_n_params(m) > 200000 && orc_model_n_params(m) < 300000);
    char buf[64];
    assert_int_equal(orc_model_meta_value(m, "llama.block_count", buf, sizeof buf), 1);
    assert_string_equal(buf, "5");
    assert_int_equal(orc_model_meta_value(m, "no.such.key", buf, sizeof buf), -1);
    int32_t n = orc_model_meta_value(m, "tokenizer.ggml.tokens", buf, sizeof buf);
    assert_true(n >= (int32_t)sizeof buf); /* truncated, full length reported */
    assert_int_equal(strlen(buf), sizeof buf - 1);
    assert_int_equal(strncmp(buf, "[\"<unk>\", \"<s>\"", 15), 0);
    bool found = false;
    for (int32_t i = 0; i < orc_model_meta_count(m); i++)
        if (!strcmp(orc_model_meta_key(m, i), "tokenizer.ggml.scores")) {
            assert_string_equal(orc_model_meta_type(m, i), "[f32]");
            found = true;
        }
    assert_true(found);
    assert_int_equal(orc_model_n_tensors(m), 48);
    orc_tensor_info ti;
    assert_int_equal(orc_model_tensor(m, 0, &ti), ORC_OK);
    assert_string_equal(ti.name, "token_embd.weight");
    assert_string_equal(ti.type, "f32");
    assert_int_equal(ti.ne[0], 64);
    assert_int_equal(ti.ne[1], 512);
    assert_int_equal(ti.n_bytes, 64 * 512 * 4);
    assert_int_equal(orc_model_tensor(m, 48, &ti), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_token_bos(m), 1);
    assert_int_equal(orc_token_eos(m), 2);
    assert_true(orc_token_is_eog(m, 2));
    assert_false(orc_token_is_eog(m, 300));
    assert_true(orc_vocab_add_bos(m));
    orc_model_free(m);
}

static void test_tokenize_buffer_contract(void **state)
{
    (void)state;
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(tu_shared("models/stories260K.gguf"), NULL, &m), ORC_OK);
    const char *s = "Once upon a time";
    orc_token t[2];
    int32_t n = orc_tokenize(m, s, strlen(s), t, 2, true, false);
    assert_int_equal(n, -5);
    orc_token all[5];
    assert_int_equal(orc_tokenize(m, s, strlen(s), all, 5, true, false), 5);
    char small[4];
    assert_true(orc_detokenize(m, all, 5, small, sizeof small, true, false) < 0);
    char text[64];
    /* without BOS the dummy-prefix space is stripped again: an exact round trip */
    n = orc_detokenize(m, all + 1, 4, text, sizeof text, true, false);
    assert_int_equal(n, (int32_t)strlen(s));
    assert_memory_equal(text, s, strlen(s));
    /* after a removed BOS llama.cpp keeps the space; so do we */
    n = orc_detokenize(m, all, 5, text, sizeof text, true, false);
    assert_int_equal(n, (int32_t)strlen(s) + 1);
    assert_memory_equal(text, " Once", 5);
    orc_model_free(m);
}

/* The stories vocabulary has byte tokens <0xE2> <0x80> <0x94> ("—" split in three). */
static void test_stream_holds_partial_utf8(void **state)
{
    (void)state;
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(tu_shared("models/stories260K.gguf"), NULL, &m), ORC_OK);
    orc_token bytes[3] = {-1, -1, -1};
    const char *want[3] = {"<0xE2>", "<0x80>", "<0x94>"};
    for (int32_t id = 0; id < orc_model_n_vocab(m); id++)
        for (int k = 0; k < 3; k++)
            if (!strcmp(orc_token_text(m, id), want[k]))
                bytes[k] = id;
    for (int k = 0; k < 3; k++)
        assert_true(bytes[k] >= 0);
    orc_detok_stream *ds = orc_detok_stream_new(m);
    const char *out;
    size_t len;
    assert_int_equal(orc_detok_stream_push(ds, bytes[0], &out, &len), ORC_OK);
    assert_int_equal(len, 0);
    assert_int_equal(orc_detok_stream_push(ds, bytes[1], &out, &len), ORC_OK);
    assert_int_equal(len, 0);
    assert_int_equal(orc_detok_stream_push(ds, bytes[2], &out, &len), ORC_OK);
    assert_int_equal(len, 3);
    assert_string_equal(out, "\xE2\x80\x94");
    /* an incomplete sequence at the end comes out on flush */
    assert_int_equal(orc_detok_stream_push(ds, bytes[0], &out, &len), ORC_OK);
    assert_int_equal(len, 0);
    assert_int_equal(orc_detok_stream_flush(ds, &out, &len), ORC_OK);
    assert_int_equal(len, 1);
    assert_int_equal((unsigned char)out[0], 0xE2);
    orc_detok_stream_free(ds);
    orc_model_free(m);
}

static bool stop_at_start(float p, void *user)
{
    (void)user;
    return p > 0.5f;
}

static void test_progress_cancel(void **state)
{
    (void)state;
    orc_model_params mp = orc_model_default_params();
    mp.progress = stop_at_start;
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(tu_shared("models/stories260K.gguf"), &mp, &m), ORC_ERR_CANCELLED);
    assert_null(m);
    assert_int_equal(orc_model_load(NULL, NULL, &m), ORC_ERR_INVALID_ARGUMENT);
}

/* Resident memory of this process in bytes (from /proc/self/statm). */
static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident * 4096;
}

/* Loading maps the file: resident memory after load is not a second copy of the weights.
 * Reading it instead (use_mmap = false) costs the whole file, which shows the measurement
 * is real. */
static void test_mmap_no_copy(void **state)
{
    (void)state;
    const char *path = tu_shared("models/synthetic/qwen3moe-f16.gguf");
    long before = rss_bytes();
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(path, NULL, &m), ORC_OK);
    long mapped = rss_bytes() - before;
    uint64_t size = orc_model_file_size(m);
    orc_model_free(m);
    printf("file %llu bytes: resident growth with mmap %ld bytes\n", (unsigned long long)size, mapped);
    assert_true(mapped < (long)(size / 4));

    orc_model_params mp = orc_model_default_params();
    mp.use_mmap = false;
    before = rss_bytes();
    assert_int_equal(orc_model_load(path, &mp, &m), ORC_OK);
    long copied = rss_bytes() - before;
    printf("file %llu bytes: resident growth when read %ld bytes\n", (unsigned long long)size, copied);
    assert_true(copied > (long)(size * 9 / 10));
    orc_model_free(m);
}

/* vocab_only: a vocabulary-only file tokenizes, but cannot be evaluated. */
static void test_vocab_only(void **state)
{
    (void)state;
    orc_model_params mp = orc_model_default_params();
    orc_model *m = NULL;
    assert_int_not_equal(orc_model_load(tu_shared("vocab/ggml-vocab-qwen2.gguf"), &mp, &m), ORC_OK);
    mp.vocab_only = true;
    assert_int_equal(orc_model_load(tu_shared("vocab/ggml-vocab-qwen2.gguf"), &mp, &m), ORC_OK);
    orc_token t[8];
    assert_int_equal(orc_tokenize(m, "Hello world", 11, t, 8, false, false), 2);
    assert_true(orc_model_n_vocab(m) > 150000);
    orc_context *c = NULL;
    assert_int_equal(orc_context_new(m, NULL, &c), ORC_ERR_INVALID_ARGUMENT);
    assert_null(c);
    orc_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions_and_status),
        cmocka_unit_test(test_log_callback),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_tokenize_buffer_contract),
        cmocka_unit_test(test_stream_holds_partial_utf8),
        cmocka_unit_test(test_progress_cancel),
        cmocka_unit_test(test_mmap_no_copy),
        cmocka_unit_test(test_vocab_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
