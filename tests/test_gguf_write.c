/* test_gguf_write.c - the GGUF writer round-trip through the reader: every metadata value
 * type (scalars, strings, arrays of scalars and of strings, nested arrays copied from a
 * real file), replacement and removal, general.alignment, tensor bytes from pointers and
 * from streaming callbacks, and the errors for bad tensors and misbehaving producers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "gguf.h"
#include "gguf_write.h"
#include "orchard.h"
#include "testutil.h"

static char *tmp_path(const char *tag)
{
    static char buf[4][256];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 256, "/tmp/orc_test_gguf_write_%ld_%s.gguf", (long)getpid(), tag);
    return p;
}

static gguf_ctx *reopen(const char *path)
{
    char err[512];
    gguf_ctx *g = gguf_open(path, false, err, sizeof err);
    if (!g)
        fail_msg("reader rejected the written file: %s", err);
    return g;
}

static void test_metadata_types(void **state)
{
    (void)state;
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_true(gguf_writer_set_u8(w, "t.u8", 250));
    assert_true(gguf_writer_set_i8(w, "t.i8", -100));
    assert_true(gguf_writer_set_u16(w, "t.u16", 65000));
    assert_true(gguf_writer_set_i16(w, "t.i16", -32000));
    assert_true(gguf_writer_set_u32(w, "t.u32", 4000000000u));
    assert_true(gguf_writer_set_i32(w, "t.i32", -2000000000));
    assert_true(gguf_writer_set_u64(w, "t.u64", 18000000000000000000ull));
    assert_true(gguf_writer_set_i64(w, "t.i64", -9000000000000000000ll));
    assert_true(gguf_writer_set_f32(w, "t.f32", 0.15625f));
    assert_true(gguf_writer_set_f64(w, "t.f64", -1.0 / 3.0));
    assert_true(gguf_writer_set_bool(w, "t.true", true));
    assert_true(gguf_writer_set_bool(w, "t.false", false));
    assert_true(gguf_writer_set_str(w, "t.str", "héllo"));
    assert_true(gguf_writer_set_strn(w, "t.strn", "a\0b", 3));
    assert_true(gguf_writer_set_str(w, "t.empty", ""));
    int32_t ai[5] = {1, -2, 3, -4, 5};
    assert_true(gguf_writer_set_arr(w, "t.arr_i32", GGUF_T_INT32, ai, 5));
    float af[3] = {0.5f, -1.25f, 3e10f};
    assert_true(gguf_writer_set_arr(w, "t.arr_f32", GGUF_T_FLOAT32, af, 3));
    double ad[2] = {1e-300, 2.5};
    assert_true(gguf_writer_set_arr(w, "t.arr_f64", GGUF_T_FLOAT64, ad, 2));
    uint8_t ab[4] = {1, 0, 1, 1};
    assert_true(gguf_writer_set_arr(w, "t.arr_bool", GGUF_T_BOOL, ab, 4));
    uint64_t au[2] = {0, UINT64_MAX};
    assert_true(gguf_writer_set_arr(w, "t.arr_u64", GGUF_T_UINT64, au, 2));
    assert_true(gguf_writer_set_arr(w, "t.arr_empty", GGUF_T_UINT8, NULL, 0));
    const char *strs[3] = {"alpha", "", "γάμμα"};
    assert_true(gguf_writer_set_arr_str(w, "t.arr_str", strs, NULL, 3));
    const char *raw[2] = {"x\0y", "zz"};
    size_t lens[2] = {3, 1};
    assert_true(gguf_writer_set_arr_str(w, "t.arr_strn", raw, lens, 2));
    /* replacing keeps the count; removing drops the key */
    assert_true(gguf_writer_set_u32(w, "t.replaced", 1));
    assert_true(gguf_writer_set_str(w, "t.replaced", "now a string"));
    assert_true(gguf_writer_set_u32(w, "t.removed", 7));
    assert_true(gguf_writer_remove(w, "t.removed"));
    assert_false(gguf_writer_remove(w, "t.removed"));
    /* bad values */
    assert_false(gguf_writer_set_arr(w, "t.bad", GGUF_T_STRING, ai, 1));
    assert_false(gguf_writer_set_arr(w, "t.bad", GGUF_T_ARRAY, ai, 1));
    assert_false(gguf_writer_set_u32(w, "", 1));
    assert_false(gguf_writer_set_u32(w, NULL, 1));
    assert_false(gguf_writer_set_u32(w, "general.alignment", 24));
    assert_false(gguf_writer_set_u32(w, "general.alignment", 0));
    assert_false(gguf_writer_set_u64(w, "general.alignment", 64));
    assert_int_equal(gguf_writer_n_kv(w), 24);

    const char *path = tmp_path("meta");
    assert_int_equal(gguf_writer_write(w, path), ORC_OK);
    gguf_writer_free(w);

    gguf_ctx *g = reopen(path);
    assert_int_equal(gguf_version(g), 3);
    assert_int_equal(gguf_n_kv(g), 24);
    assert_int_equal(gguf_n_tensors(g), 0);
    assert_string_equal(gguf_kv_at(g, 0)->key, "t.u8"); /* order kept */
    const gguf_value *v;
    assert_non_null(v = gguf_find(g, "t.u8"));
    assert_int_equal(v->type, GGUF_T_UINT8);
    assert_int_equal(v->v.u64, 250);
    assert_non_null(v = gguf_find(g, "t.i8"));
    assert_int_equal(v->type, GGUF_T_INT8);
    assert_int_equal(v->v.i64, -100);
    assert_non_null(v = gguf_find(g, "t.u16"));
    assert_int_equal(v->type, GGUF_T_UINT16);
    assert_int_equal(v->v.u64, 65000);
    assert_non_null(v = gguf_find(g, "t.i16"));
    assert_int_equal(v->type, GGUF_T_INT16);
    assert_int_equal(v->v.i64, -32000);
    assert_non_null(v = gguf_find(g, "t.u32"));
    assert_int_equal(v->type, GGUF_T_UINT32);
    assert_int_equal(v->v.u64, 4000000000u);
    assert_non_null(v = gguf_find(g, "t.i32"));
    assert_int_equal(v->type, GGUF_T_INT32);
    assert_int_equal(v->v.i64, -2000000000);
    assert_non_null(v = gguf_find(g, "t.u64"));
    assert_int_equal(v->type, GGUF_T_UINT64);
    assert_true(v->v.u64 == 18000000000000000000ull);
    assert_non_null(v = gguf_find(g, "t.i64"));
    assert_int_equal(v->type, GGUF_T_INT64);
    assert_true(v->v.i64 == -9000000000000000000ll);
    assert_non_null(v = gguf_find(g, "t.f32"));
    assert_int_equal(v->type, GGUF_T_FLOAT32);
    assert_true(v->v.f64 == 0.15625);
    assert_non_null(v = gguf_find(g, "t.f64"));
    assert_int_equal(v->type, GGUF_T_FLOAT64);
    assert_true(v->v.f64 == -1.0 / 3.0);
    bool b = false;
    assert_true(gguf_get_bool(g, "t.true", &b) && b);
    assert_true(gguf_get_bool(g, "t.false", &b) && !b);
    gguf_str s;
    assert_true(gguf_get_str(g, "t.str", &s) && gguf_str_eq(s, "héllo"));
    assert_true(gguf_get_str(g, "t.strn", &s));
    assert_int_equal(s.n, 3);
    assert_memory_equal(s.p, "a\0b", 3);
    assert_true(gguf_get_str(g, "t.empty", &s) && s.n == 0);
    assert_true(gguf_get_str(g, "t.replaced", &s) && gguf_str_eq(s, "now a string"));
    assert_null(gguf_find(g, "t.removed"));

    const gguf_value *a;
    assert_non_null(a = gguf_get_arr(g, "t.arr_i32", GGUF_T_INT32));
    assert_int_equal(a->v.arr.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(gguf_arr_i64(a, (uint64_t)i), ai[i]);
    assert_non_null(a = gguf_get_arr(g, "t.arr_f32", GGUF_T_FLOAT32));
    for (int i = 0; i < 3; i++)
        assert_true(gguf_arr_f32(a, (uint64_t)i) == af[i]);
    assert_non_null(a = gguf_get_arr(g, "t.arr_f64", GGUF_T_FLOAT64));
    assert_int_equal(a->v.arr.n, 2);
    assert_memory_equal(a->v.arr.raw, ad, sizeof ad);
    assert_non_null(a = gguf_get_arr(g, "t.arr_bool", GGUF_T_BOOL));
    assert_memory_equal(a->v.arr.raw, ab, 4);
    assert_non_null(a = gguf_get_arr(g, "t.arr_u64", GGUF_T_UINT64));
    assert_memory_equal(a->v.arr.raw, au, sizeof au);
    assert_non_null(a = gguf_get_arr(g, "t.arr_empty", GGUF_T_UINT8));
    assert_int_equal(a->v.arr.n, 0);
    assert_non_null(a = gguf_get_arr(g, "t.arr_str", GGUF_T_STRING));
    assert_int_equal(a->v.arr.n, 3);
    for (int i = 0; i < 3; i++)
        assert_true(gguf_str_eq(a->v.arr.strs[i], strs[i]));
    assert_non_null(a = gguf_get_arr(g, "t.arr_strn", GGUF_T_STRING));
    assert_int_equal(a->v.arr.strs[0].n, 3);
    assert_memory_equal(a->v.arr.strs[0].p, "x\0y", 3);
    assert_true(a->v.arr.strs[1].n == 1 && a->v.arr.strs[1].p[0] == 'z');
    gguf_close(g);
    unlink(path);
}

/* Every value of a real file (tokenizer arrays of strings, floats, ints) survives
 * gguf_writer_set_value; a nested array built by hand does too. */
static void test_copy_values(void **state)
{
    (void)state;
    const char *src = tu_shared("vocab/ggml-vocab-llama-bpe.gguf");
    char err[512];
    gguf_ctx *in = gguf_open(src, true, err, sizeof err);
    if (!in)
        fail_msg("%s: %s", src, err);
    gguf_writer *w = gguf_writer_new();
    for (int64_t i = 0; i < gguf_n_kv(in); i++)
        assert_true(gguf_writer_set_value(w, gguf_kv_at(in, i)->key, &gguf_kv_at(in, i)->val));
    /* nested: [[1,2],[3]] of u16 */
    uint16_t e0[2] = {1, 2}, e1[1] = {3};
    gguf_value inner[2] = {
        {.type = GGUF_T_ARRAY, .v.arr = {.elem = GGUF_T_UINT16, .n = 2, .raw = (const uint8_t *)e0}},
        {.type = GGUF_T_ARRAY, .v.arr = {.elem = GGUF_T_UINT16, .n = 1, .raw = (const uint8_t *)e1}},
    };
    gguf_value outer = {.type = GGUF_T_ARRAY, .v.arr = {.elem = GGUF_T_ARRAY, .n = 2, .vals = inner}};
    assert_true(gguf_writer_set_value(w, "t.nested", &outer));
    const char *path = tmp_path("copy");
    assert_int_equal(gguf_writer_write(w, path), ORC_OK);
    gguf_writer_free(w);

    gguf_ctx *out = reopen(path);
    assert_int_equal(gguf_n_kv(out), gguf_n_kv(in) + 1);
    for (int64_t i = 0; i < gguf_n_kv(in); i++) {
        const gguf_kv *a = gguf_kv_at(in, i), *b = gguf_kv_at(out, i);
        assert_string_equal(a->key, b->key);
        assert_int_equal(a->val.type, b->val.type);
        if (a->val.type == GGUF_T_STRING) {
            assert_int_equal(a->val.v.str.n, b->val.v.str.n);
            assert_memory_equal(a->val.v.str.p, b->val.v.str.p, a->val.v.str.n);
        } else if (a->val.type == GGUF_T_ARRAY) {
            assert_int_equal(a->val.v.arr.elem, b->val.v.arr.elem);
            assert_int_equal(a->val.v.arr.n, b->val.v.arr.n);
            if (a->val.v.arr.elem == GGUF_T_STRING) {
                for (uint64_t j = 0; j < a->val.v.arr.n; j++) {
                    assert_int_equal(a->val.v.arr.strs[j].n, b->val.v.arr.strs[j].n);
                    assert_memory_equal(a->val.v.arr.strs[j].p, b->val.v.arr.strs[j].p,
                                        a->val.v.arr.strs[j].n);
                }
            } else if (a->val.v.arr.elem != GGUF_T_ARRAY) {
                assert_memory_equal(a->val.v.arr.raw, b->val.v.arr.raw,
                                    a->val.v.arr.n * gguf_vtype_size(a->val.v.arr.elem));
            }
        } else if (a->val.type == GGUF_T_BOOL) {
            assert_int_equal(a->val.v.b, b->val.v.b);
        } else {
            assert_true(a->val.v.u64 == b->val.v.u64); /* f64 and i64 share the bits */
        }
    }
    const gguf_value *n = gguf_find(out, "t.nested");
    assert_non_null(n);
    assert_int_equal(n->v.arr.elem, GGUF_T_ARRAY);
    assert_int_equal(n->v.arr.n, 2);
    assert_int_equal(n->v.arr.vals[0].v.arr.n, 2);
    assert_int_equal(gguf_arr_i64(&n->v.arr.vals[0], 1), 2);
    assert_int_equal(gguf_arr_i64(&n->v.arr.vals[1], 0), 3);
    gguf_close(out);
    gguf_close(in);
    unlink(path);
}

typedef struct {
    int64_t rows, cols;
    int chunk;      /* rows per gguf_sink_write */
    int extra;      /* bytes written past the end (to test the overrun check) */
    int short_by;   /* bytes left out */
} gen_state;

static float gen_value(int64_t r, int64_t c) { return (float)(r * 1000 + c) * 0.25f - 7.0f; }

static orc_status gen_fill(void *user, gguf_sink *s)
{
    gen_state *g = user;
    float *row = malloc((size_t)(g->cols * g->chunk) * sizeof *row);
    for (int64_t r0 = 0; r0 < g->rows; r0 += g->chunk) {
        int64_t nr = g->rows - r0 < g->chunk ? g->rows - r0 : g->chunk;
        for (int64_t r = 0; r < nr; r++)
            for (int64_t c = 0; c < g->cols; c++)
                row[r * g->cols + c] = gen_value(r0 + r, c);
        size_t n = (size_t)(nr * g->cols) * sizeof *row;
        if (r0 + nr == g->rows)
            n -= (size_t)g->short_by;
        if (!gguf_sink_write(s, row, n)) {
            free(row);
            return ORC_ERR_IO;
        }
    }
    uint8_t pad[8] = {0};
    bool ok = g->extra == 0 || gguf_sink_write(s, pad, (size_t)g->extra);
    free(row);
    return ok ? ORC_OK : ORC_ERR_INTERNAL;
}

static void check_tensors(uint32_t alignment)
{
    gguf_writer *w = gguf_writer_new();
    if (alignment)
        assert_true(gguf_writer_set_u32(w, "general.alignment", alignment));
    assert_true(gguf_writer_set_str(w, "general.architecture", "test"));
    /* odd sizes so that every tensor needs padding */
    float v1[3] = {1.5f, -2.0f, 3.25f};
    int64_t ne1[1] = {3};
    assert_true(gguf_writer_add_tensor(w, "one", ORC_DT_F32, 1, ne1, v1));
    uint16_t h[2 * 5];
    for (int i = 0; i < 10; i++)
        h[i] = orc_f32_to_f16((float)i - 4.5f);
    int64_t ne2[2] = {5, 2};
    assert_true(gguf_writer_add_tensor(w, "two", ORC_DT_F16, 2, ne2, h));
    gen_state gs = {.rows = 37, .cols = 11, .chunk = 5};
    int64_t ne3[3] = {11, 37, 1};
    assert_true(gguf_writer_add_tensor_cb(w, "streamed", ORC_DT_F32, 3, ne3, gen_fill, &gs));
    uint8_t q8[34 * 2]; /* two Q8_0 blocks: one row of 64 */
    for (int i = 0; i < (int)sizeof q8; i++)
        q8[i] = (uint8_t)(i * 7 + 1);
    int64_t ne4[2] = {64, 1};
    assert_true(gguf_writer_add_tensor(w, "q8", ORC_DT_Q8_0, 2, ne4, q8));
    assert_int_equal(gguf_writer_n_tensors(w), 4);
    const char *path = tmp_path("tensors");
    assert_int_equal(gguf_writer_write(w, path), ORC_OK);
    gguf_writer_free(w);

    gguf_ctx *g = reopen(path);
    uint32_t a = alignment ? alignment : 32;
    assert_int_equal(gguf_alignment(g), a);
    assert_int_equal(gguf_data_offset(g) % a, 0);
    assert_int_equal(gguf_n_tensors(g), 4);
    const gguf_tensor *t;
    assert_non_null(t = gguf_find_tensor(g, "one"));
    assert_int_equal(t->n_dims, 1);
    assert_int_equal(t->type, ORC_DT_F32);
    assert_int_equal(t->nbytes, sizeof v1);
    assert_memory_equal(t->data, v1, sizeof v1);
    assert_non_null(t = gguf_find_tensor(g, "two"));
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 5);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->offset % a, 0);
    assert_memory_equal(t->data, h, sizeof h);
    assert_non_null(t = gguf_find_tensor(g, "streamed"));
    assert_int_equal(t->n_dims, 3);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->offset % a, 0);
    assert_int_equal(t->nbytes, 37 * 11 * 4);
    for (int64_t r = 0; r < 37; r++)
        for (int64_t c = 0; c < 11; c++) {
            float f; /* alignment 1 leaves the data unaligned */
            memcpy(&f, (const uint8_t *)t->data + (size_t)(r * 11 + c) * 4, 4);
            assert_true(f == gen_value(r, c));
        }
    assert_non_null(t = gguf_find_tensor(g, "q8"));
    assert_int_equal(t->type, ORC_DT_Q8_0);
    assert_int_equal(t->offset % a, 0);
    assert_memory_equal(t->data, q8, sizeof q8);
    gguf_close(g);
    unlink(path);
}

static void test_tensors_default_alignment(void **state) { (void)state; check_tensors(0); }
static void test_tensors_alignment_64(void **state) { (void)state; check_tensors(64); }
static void test_tensors_alignment_1(void **state) { (void)state; check_tensors(1); }

static void test_tensor_errors(void **state)
{
    (void)state;
    gguf_writer *w = gguf_writer_new();
    float d[64] = {0};
    int64_t ne[2] = {33, 1};
    assert_false(gguf_writer_add_tensor(w, "q", ORC_DT_Q8_0, 2, ne, d)); /* 33 % 32 */
    assert_non_null(strstr(orc_last_error(), "block size"));
    ne[0] = 32;
    assert_false(gguf_writer_add_tensor(w, "q", 9999, 2, ne, d));
    assert_false(gguf_writer_add_tensor(w, "q", ORC_DT_F32, 0, ne, d));
    assert_false(gguf_writer_add_tensor(w, "q", ORC_DT_F32, 5, ne, d));
    assert_false(gguf_writer_add_tensor(w, "q", ORC_DT_F32, 2, ne, NULL));
    ne[1] = 0;
    assert_false(gguf_writer_add_tensor(w, "q", ORC_DT_F32, 2, ne, d));
    ne[1] = -3;
    assert_false(gguf_writer_add_tensor(w, "q", ORC_DT_F32, 2, ne, d));
    ne[1] = 1;
    char longname[80];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_false(gguf_writer_add_tensor(w, longname, ORC_DT_F32, 2, ne, d));
    assert_true(gguf_writer_add_tensor(w, "q", ORC_DT_F32, 2, ne, d));
    assert_false(gguf_writer_add_tensor(w, "q", ORC_DT_F32, 2, ne, d)); /* duplicate */
    assert_non_null(strstr(orc_last_error(), "twice"));
    int64_t big[4] = {INT64_MAX / 2, 4, 4, 4};
    assert_false(gguf_writer_add_tensor(w, "big", ORC_DT_F32, 4, big, d));
    assert_int_equal(gguf_writer_n_tensors(w), 1);
    gguf_writer_free(w);

    /* a producer that writes too much or too little fails the write and leaves no file */
    for (int k = 0; k < 2; k++) {
        w = gguf_writer_new();
        gen_state gs = {.rows = 4, .cols = 8, .chunk = 3, .extra = k == 0 ? 4 : 0,
                        .short_by = k == 1 ? 4 : 0};
        int64_t ne2[2] = {8, 4};
        assert_true(gguf_writer_add_tensor_cb(w, "s", ORC_DT_F32, 2, ne2, gen_fill, &gs));
        const char *path = tmp_path("bad");
        unlink(path);
        assert_int_not_equal(gguf_writer_write(w, path), ORC_OK);
        assert_non_null(strstr(orc_last_error(), "'s'"));
        assert_int_equal(access(path, F_OK), -1);
        gguf_writer_free(w);
    }

    /* an unwritable path is an I/O error */
    w = gguf_writer_new();
    assert_int_equal(gguf_writer_write(w, "/nonexistent-dir/x.gguf"), ORC_ERR_IO);
    assert_non_null(strstr(orc_last_error(), "/nonexistent-dir"));
    gguf_writer_free(w);
    gguf_writer_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata_types),
        cmocka_unit_test(test_copy_values),
        cmocka_unit_test(test_tensors_default_alignment),
        cmocka_unit_test(test_tensors_alignment_64),
        cmocka_unit_test(test_tensors_alignment_1),
        cmocka_unit_test(test_tensor_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
