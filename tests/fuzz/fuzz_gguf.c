/* fuzz_gguf.c - libFuzzer harness for the GGUF reader: arbitrary bytes are parsed as a
 * model file; whatever validates is walked completely (every key, array element and
 * tensor byte range) so a size the reader failed to check shows up as an ASan report. */
#include "gguf.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t walk_value(const gguf_value *v)
{
    uint64_t h = (uint64_t)v->type;
    if (v->type == GGUF_T_STRING) {
        for (uint64_t i = 0; i < v->v.str.n; i++)
            h += (uint8_t)v->v.str.p[i];
    } else if (v->type == GGUF_T_ARRAY) {
        for (uint64_t i = 0; i < v->v.arr.n; i++) {
            if (v->v.arr.elem == GGUF_T_STRING) {
                gguf_str s = v->v.arr.strs[i];
                h += s.n ? (uint8_t)s.p[s.n - 1] : 0;
            } else if (v->v.arr.elem == GGUF_T_ARRAY) {
                h += walk_value(&v->v.arr.vals[i]);
            } else {
                h += (uint64_t)gguf_arr_i64(v, i);
            }
        }
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    gguf_ctx *g = gguf_open_buffer(data, size, err, sizeof err);
    if (!g)
        return 0;
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        sink += walk_value(&gguf_kv_at(g, i)->val);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const uint8_t *p = t->data;
        if (t->nbytes)
            sink += p[0] + p[t->nbytes - 1];
        sink += gguf_find_tensor(g, t->name) == t;
    }
    gguf_close(g);
    (void)sink;
    return 0;
}
