/* test_gguf.c - the GGUF reader on real files and on hand-made hostile ones: every class
 * behind published GGUF CVEs (huge counts, overflowing dimension products, bad
 * alignment, type confusion, bad dimensions, duplicates, overlapping or misaligned
 * data, strings past EOF, truncation at every byte) must give a clear error, never a
 * crash, and the model loader must pass that error on. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "gguf.h"
#include "orchard.h"
#include "testutil.h"

/* ---- a byte builder for hand-made files ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void str(buf *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }
static void header(buf *b, uint64_t n_tensors, uint64_t n_kv)
{
    put(b, "GGUF", 4);
    u32(b, 3);
    u64(b, n_tensors);
    u64(b, n_kv);
}
static void kv_u32(buf *b, const char *k, uint32_t v) { str(b, k); u32(b, GGUF_T_UINT32); u32(b, v); }
static void kv_str(buf *b, const char *k, const char *v) { str(b, k); u32(b, GGUF_T_STRING); str(b, v); }
static void tensor(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off)
{
    str(b, name);
    u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        u64(b, ne[i]);
    u32(b, type);
    u64(b, off);
}
static void pad_to(buf *b, size_t align)
{
    static const uint8_t z[64];
    while (b->n % align)
        put(b, z, 1);
}
static void zeros(buf *b, size_t n)
{
    uint8_t *z = calloc(1, n);
    put(b, z, n);
    free(z);
}

/* Expects the buffer to be rejected with a message containing `needle`. */
static void expect_reject(buf *b, const char *needle)
{
    char err[512];
    gguf_ctx *g = gguf_open_buffer(b->p, b->n, err, sizeof err);
    if (g || !strstr(err, needle))
        fail_msg("expected an error containing '%s', got %s '%s'", needle, g ? "success" : "error", err);
    gguf_close(g);
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* A small valid file: two keys, two f32 tensors. */
static buf valid_file(void)
{
    buf b = {0};
    header(&b, 2, 2);
    kv_str(&b, "general.architecture", "llama");
    kv_u32(&b, "general.alignment", 32);
    uint64_t ne[2] = {8, 2};
    tensor(&b, "a", 2, ne, ORC_DT_F32, 0);
    tensor(&b, "b", 1, ne, ORC_DT_F32, 64);
    pad_to(&b, 32);
    zeros(&b, 64 + 32);
    return b;
}

static void test_valid_small(void **state)
{
    (void)state;
    buf b = valid_file();
    char err[256];
    gguf_ctx *g = gguf_open_buffer(b.p, b.n, err, sizeof err);
    assert_non_null(g);
    assert_int_equal(gguf_n_kv(g), 2);
    assert_int_equal(gguf_n_tensors(g), 2);
    gguf_str s;
    assert_true(gguf_get_str(g, "general.architecture", &s));
    assert_true(gguf_str_eq(s, "llama"));
    const gguf_tensor *t = gguf_find_tensor(g, "a");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 8);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->nbytes, 64);
    assert_null(gguf_find_tensor(g, "c"));
    gguf_close(g);
    free(b.p);
}

static void test_real_files(void **state)
{
    (void)state;
    char err[512];
    gguf_ctx *g = gguf_open(tu_shared("models/stories260K.gguf"), true, err, sizeof err);
    assert_non_null(g);
    uint32_t v;
    assert_true(gguf_get_u32(g, "llama.block_count", &v));
    assert_int_equal(v, 5);
    const gguf_value *toks = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_T_STRING);
    assert_non_null(toks);
    assert_int_equal(toks->v.arr.n, 512);
    assert_null(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_T_INT32)); /* no type confusion */
    gguf_close(g);
    /* the no-mmap path reads the same */
    g = gguf_open(tu_shared("models/synthetic/llama-gqa-q4_k_m.gguf"), false, err, sizeof err);
    assert_non_null(g);
    const gguf_tensor *t = gguf_find_tensor(g, "output.weight");
    assert_non_null(t);
    assert_int_equal(t->type, ORC_DT_Q6_K);
    gguf_close(g);
    assert_null(gguf_open("/nonexistent/file.gguf", true, err, sizeof err));
    assert_non_null(strstr(err, "No such file"));
}

static void test_bad_magic_version(void **state)
{
    (void)state;
    buf b = {0};
    put(&b, "GGML", 4);
    u32(&b, 3);
    u64(&b, 0);
    u64(&b, 0);
    expect_reject(&b, "not a GGUF file");
    put(&b, "GGUF", 4);
    u32(&b, 1);
    u64(&b, 0);
    u64(&b, 0);
    expect_reject(&b, "unsupported GGUF version 1");
    put(&b, "GGUF", 4);
    u32(&b, 99);
    expect_reject(&b, "unsupported GGUF version 99");
}

static void test_huge_counts(void **state)
{
    (void)state;
    buf b = {0};
    header(&b, 0, UINT64_MAX);
    expect_reject(&b, "metadata count");
    header(&b, UINT64_MAX / 2, 0);
    expect_reject(&b, "tensor count");
    header(&b, 1ull << 40, 1);
    kv_u32(&b, "x", 1);
    expect_reject(&b, "tensor count");
}

static void test_string_past_eof(void **state)
{
    (void)state;
    buf b = {0};
    header(&b, 0, 1);
    u64(&b, 1ull << 62); /* key length */
    put(&b, "abcdefgh", 8);
    expect_reject(&b, "runs past the end");
    header(&b, 0, 1);
    str(&b, "k");
    u32(&b, GGUF_T_STRING);
    u64(&b, UINT64_MAX); /* value length */
    expect_reject(&b, "runs past the end");
}

static void test_array_attacks(void **state)
{
    (void)state;
    buf b = {0};
    /* element count * element size overflows */
    header(&b, 0, 1);
    str(&b, "arr");
    u32(&b, GGUF_T_ARRAY);
    u32(&b, GGUF_T_UINT64);
    u64(&b, UINT64_MAX / 4);
    expect_reject(&b, "cannot fit");
    /* string array with more strings than bytes */
    header(&b, 0, 1);
    str(&b, "arr");
    u32(&b, GGUF_T_ARRAY);
    u32(&b, GGUF_T_STRING);
    u64(&b, 1000000);
    expect_reject(&b, "cannot fit");
    /* bad element type */
    header(&b, 0, 1);
    str(&b, "arr");
    u32(&b, GGUF_T_ARRAY);
    u32(&b, 77);
    u64(&b, 1);
    expect_reject(&b, "element type 77");
    /* arrays nested too deep */
    header(&b, 0, 1);
    str(&b, "arr");
    u32(&b, GGUF_T_ARRAY);
    for (int i = 0; i < 64; i++) {
        u32(&b, GGUF_T_ARRAY);
        u64(&b, 1);
    }
    u32(&b, GGUF_T_UINT8);
    u64(&b, 0);
    expect_reject(&b, "nested deeper");
    /* arrays of arrays within the limit are fine */
    header(&b, 0, 1);
    str(&b, "arr");
    u32(&b, GGUF_T_ARRAY);
    u32(&b, GGUF_T_ARRAY);
    u64(&b, 2);
    for (int i = 0; i < 2; i++) {
        u32(&b, GGUF_T_INT32);
        u64(&b, 3);
        for (int j = 0; j < 3; j++)
            u32(&b, (uint32_t)(i * 10 + j));
    }
    char err[256];
    gguf_ctx *g = gguf_open_buffer(b.p, b.n, err, sizeof err);
    assert_non_null(g);
    const gguf_value *a = gguf_get_arr(g, "arr", GGUF_T_ARRAY);
    assert_non_null(a);
    assert_int_equal(a->v.arr.n, 2);
    assert_int_equal(gguf_arr_i64(&a->v.arr.vals[1], 2), 12);
    gguf_close(g);
    free(b.p);
}

static void test_alignment(void **state)
{
    (void)state;
    buf b = {0};
    header(&b, 0, 1);
    kv_u32(&b, "general.alignment", 0);
    expect_reject(&b, "not a power of two");
    header(&b, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    expect_reject(&b, "not a power of two");
    header(&b, 0, 1);
    kv_str(&b, "general.alignment", "32");
    expect_reject(&b, "expected u32");
}

static void test_duplicates(void **state)
{
    (void)state;
    buf b = {0};
    header(&b, 0, 2);
    kv_u32(&b, "k", 1);
    kv_u32(&b, "k", 2);
    expect_reject(&b, "appears twice");
    uint64_t ne[1] = {8};
    header(&b, 2, 0);
    tensor(&b, "t", 1, ne, ORC_DT_F32, 0);
    tensor(&b, "t", 1, ne, ORC_DT_F32, 32);
    pad_to(&b, 32);
    zeros(&b, 64);
    expect_reject(&b, "appears twice");
    /* a NUL inside a key would let two different keys look alike */
    header(&b, 0, 1);
    u64(&b, 3);
    put(&b, "a\0b", 3);
    u32(&b, GGUF_T_UINT8);
    put(&b, "x", 1);
    expect_reject(&b, "NUL byte");
}

static void test_dimensions(void **state)
{
    (void)state;
    buf b = {0};
    uint64_t ne[5] = {8, 8, 8, 8, 8};
    header(&b, 1, 0);
    tensor(&b, "t", 0, ne, ORC_DT_F32, 0);
    zeros(&b, 64);
    expect_reject(&b, "0 dimensions");
    header(&b, 1, 0);
    tensor(&b, "t", 5, ne, ORC_DT_F32, 0);
    zeros(&b, 64);
    expect_reject(&b, "5 dimensions");
    uint64_t zero[2] = {8, 0};
    header(&b, 1, 0);
    tensor(&b, "t", 2, zero, ORC_DT_F32, 0);
    zeros(&b, 64);
    expect_reject(&b, "dimension 1 is zero");
    uint64_t big[4] = {1ull << 32, 1ull << 32, 4, 1};
    header(&b, 1, 0);
    tensor(&b, "t", 3, big, ORC_DT_F32, 0);
    zeros(&b, 64);
    expect_reject(&b, "overflows");
    uint64_t neg[1] = {UINT64_MAX};
    header(&b, 1, 0);
    tensor(&b, "t", 1, neg, ORC_DT_F32, 0);
    zeros(&b, 64);
    expect_reject(&b, "overflows");
    /* byte size overflows even though the element count fits */
    uint64_t huge[2] = {1ull << 31, 1ull << 31};
    header(&b, 1, 0);
    tensor(&b, "t", 2, huge, ORC_DT_F64, 0);
    zeros(&b, 64);
    expect_reject(&b, "byte size overflows");
    /* fits in 64 bits but not in the file */
    uint64_t large[2] = {1ull << 20, 1ull << 20};
    header(&b, 1, 0);
    tensor(&b, "t", 2, large, ORC_DT_F32, 0);
    pad_to(&b, 32);
    zeros(&b, 64);
    expect_reject(&b, "lies past the end");
    uint64_t odd[1] = {33};
    header(&b, 1, 0);
    tensor(&b, "t", 1, odd, ORC_DT_Q4_0, 0);
    zeros(&b, 64);
    expect_reject(&b, "block size");
    header(&b, 1, 0);
    tensor(&b, "t", 1, ne, 4 /* removed type */, 0);
    zeros(&b, 64);
    expect_reject(&b, "unknown tensor type 4");
}

static void test_data_placement(void **state)
{
    (void)state;
    buf b = {0};
    uint64_t ne[1] = {16};
    header(&b, 1, 0);
    tensor(&b, "t", 1, ne, ORC_DT_F32, 8);
    pad_to(&b, 32);
    zeros(&b, 128);
    expect_reject(&b, "not a multiple of the alignment");
    header(&b, 2, 0);
    tensor(&b, "a", 1, ne, ORC_DT_F32, 0);
    tensor(&b, "b", 1, ne, ORC_DT_F32, 32);
    pad_to(&b, 32);
    zeros(&b, 128);
    expect_reject(&b, "overlaps");
    header(&b, 1, 0);
    tensor(&b, "blk.3.attn_q.weight", 1, ne, ORC_DT_F32, 0);
    pad_to(&b, 32);
    zeros(&b, 10);
    expect_reject(&b, "tensor blk.3.attn_q.weight: data [");
    header(&b, 1, 0);
    tensor(&b, "t", 1, ne, ORC_DT_F32, UINT64_MAX - 31);
    pad_to(&b, 32);
    zeros(&b, 64);
    expect_reject(&b, "past the end");
}

/* Every proper prefix of a valid file is rejected cleanly. */
static void test_truncation_everywhere(void **state)
{
    (void)state;
    buf b = valid_file();
    char err[256];
    for (size_t n = 0; n < b.n; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b.p, n);
        gguf_ctx *g = gguf_open_buffer(copy, n, err, sizeof err);
        if (g)
            fail_msg("prefix of %zu bytes was accepted", n);
        assert_true(strlen(err) > 0);
        free(copy);
    }
    free(b.p);
    /* and the real model's header: every prefix up to the first tensor's data */
    size_t len;
    char *whole = tu_read_file(tu_shared("models/stories260K.gguf"), &len);
    assert_non_null(whole);
    gguf_ctx *g = gguf_open_buffer(whole, len, err, sizeof err);
    assert_non_null(g);
    size_t data_off = gguf_data_offset(g);
    gguf_close(g);
    for (size_t n = 0; n < data_off + 64; n += (n < 256 ? 1 : 7)) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, whole, n);
        g = gguf_open_buffer(copy, n, err, sizeof err);
        if (g)
            fail_msg("stories260K prefix of %zu bytes was accepted", n);
        free(copy);
    }
    free(whole);
}

/* Random single-byte corruptions of a real header never crash the reader or loader. */
static void test_corruption_model_loader(void **state)
{
    (void)state;
    size_t len;
    char *whole = tu_read_file(tu_shared("models/stories260K.gguf"), &len);
    assert_non_null(whole);
    char path[] = "/tmp/orc_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    srand(1234);
    int rejected = 0;
    for (int iter = 0; iter < 200; iter++) {
        char *copy = malloc(len);
        memcpy(copy, whole, len);
        size_t pos = (size_t)rand() % 12000; /* the header region */
        copy[pos] = (char)rand();
        FILE *f = fopen(path, "wb");
        fwrite(copy, 1, len, f);
        fclose(f);
        orc_model *m = NULL;
        orc_status st = orc_model_load(path, NULL, &m);
        if (st != ORC_OK) {
            assert_null(m);
            assert_true(strlen(orc_last_error()) > 0);
            rejected++;
        }
        orc_model_free(m);
        free(copy);
    }
    unlink(path);
    free(whole);
    assert_true(rejected > 0);
}

/* Hostile files reach the public loader with the reader's message and a status. */
static void test_loader_messages(void **state)
{
    (void)state;
    char path[] = "/tmp/orc_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    buf b = {0};
    uint64_t ne[1] = {16};
    header(&b, 1, 1);
    kv_str(&b, "general.architecture", "llama");
    tensor(&b, "blk.3.attn_q.weight", 1, ne, ORC_DT_F32, 0);
    pad_to(&b, 32);
    zeros(&b, 10);
    assert_int_equal(write(fd, b.p, b.n), (ssize_t)b.n);
    close(fd);
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(path, NULL, &m), ORC_ERR_FORMAT);
    assert_null(m);
    assert_non_null(strstr(orc_last_error(), "tensor blk.3.attn_q.weight: data ["));
    assert_non_null(strstr(orc_last_error(), "lies past the end of the"));
    free(b.p);

    /* well-formed but an unknown architecture */
    b = (buf){0};
    header(&b, 0, 1);
    kv_str(&b, "general.architecture", "nonesuch");
    FILE *f = fopen(path, "wb");
    fwrite(b.p, 1, b.n, f);
    fclose(f);
    assert_int_equal(orc_model_load(path, NULL, &m), ORC_ERR_UNSUPPORTED);
    assert_non_null(strstr(orc_last_error(), "nonesuch"));
    free(b.p);

    /* a llama file whose tokens array has the wrong element type */
    b = (buf){0};
    header(&b, 0, 2);
    kv_str(&b, "general.architecture", "llama");
    str(&b, "tokenizer.ggml.tokens");
    u32(&b, GGUF_T_ARRAY);
    u32(&b, GGUF_T_UINT32);
    u64(&b, 2);
    u32(&b, 1);
    u32(&b, 2);
    f = fopen(path, "wb");
    fwrite(b.p, 1, b.n, f);
    fclose(f);
    assert_int_not_equal(orc_model_load(path, NULL, &m), ORC_OK);
    assert_null(m);
    free(b.p);

    assert_int_equal(orc_model_load("/nonexistent.gguf", NULL, &m), ORC_ERR_IO);
    unlink(path);
}

/* A model missing one tensor names it. */
static void test_missing_tensor(void **state)
{
    (void)state;
    size_t len;
    char *whole = tu_read_file(tu_shared("models/stories260K.gguf"), &len);
    assert_non_null(whole);
    /* rename blk.2.ffn_up.weight to blk.2.ffn_uq.weight in place */
    char *p = memmem(whole, len, "blk.2.ffn_up.weight", 19);
    assert_non_null(p);
    p[11] = 'q';
    char path[] = "/tmp/orc_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, whole, len), (ssize_t)len);
    close(fd);
    orc_model *m = NULL;
    assert_int_equal(orc_model_load(path, NULL, &m), ORC_ERR_FORMAT);
    assert_non_null(strstr(orc_last_error(), "missing tensor blk.2.ffn_up.weight"));
    unlink(path);
    free(whole);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_small),
        cmocka_unit_test(test_real_files),
        cmocka_unit_test(test_bad_magic_version),
        cmocka_unit_test(test_huge_counts),
        cmocka_unit_test(test_string_past_eof),
        cmocka_unit_test(test_array_attacks),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_dimensions),
        cmocka_unit_test(test_data_placement),
        cmocka_unit_test(test_truncation_everywhere),
        cmocka_unit_test(test_corruption_model_loader),
        cmocka_unit_test(test_loader_messages),
        cmocka_unit_test(test_missing_tensor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
