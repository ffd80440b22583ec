/* gguf_write.h - internal GGUF v3 writer: collect metadata and a tensor table in memory,
 * then stream the file out in one pass. Tensor bytes come from a pointer or from a
 * callback that produces them on demand, so multi-GB models never sit in memory whole.
 * Used by orc_model_quantize (src/quantize.c) and the benchmark model generator. */
#ifndef ORC_GGUF_WRITE_H
#define ORC_GGUF_WRITE_H

#include "gguf.h"
#include "orchard.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gguf_writer gguf_writer;

/* Where a tensor callback sends its bytes (opaque). */
typedef struct gguf_sink gguf_sink;

/* Appends n bytes to the tensor being produced. Returns false (with orc_last_error set)
 * on an I/O error or when the callback writes more than the tensor's size; the callback
 * should then return that failure. */
bool gguf_sink_write(gguf_sink *s, const void *data, size_t n);

/* Produces the tensor's bytes through gguf_sink_write, in any number of pieces, exactly
 * its size in total. Returns ORC_OK, or a failure status after setting orc_fail's message. */
typedef orc_status (*gguf_tensor_fill)(void *user, gguf_sink *sink);

/* NULL when out of memory. */
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);

/* Metadata setters. Keys and values are copied. Setting an existing key replaces its value
 * in place (the key keeps its position). Return false (orc_last_error set) on a NULL or
 * over-long key, a bad value (general.alignment not a power of two) or out of memory. */
bool gguf_writer_set_u8(gguf_writer *w, const char *key, uint8_t v);
bool gguf_writer_set_i8(gguf_writer *w, const char *key, int8_t v);
bool gguf_writer_set_u16(gguf_writer *w, const char *key, uint16_t v);
bool gguf_writer_set_i16(gguf_writer *w, const char *key, int16_t v);
bool gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
bool gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
bool gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
bool gguf_writer_set_i64(gguf_writer *w, const char *key, int64_t v);
bool gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
bool gguf_writer_set_f64(gguf_writer *w, const char *key, double v);
bool gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
/* len bytes of s (need not be NUL-terminated); gguf_writer_set_str takes a C string. */
bool gguf_writer_set_strn(gguf_writer *w, const char *key, const char *s, size_t len);
bool gguf_writer_set_str(gguf_writer *w, const char *key, const char *s);
/* Array of n scalars of type elem, packed as in memory (little-endian hosts only; bools
 * one byte each). elem must be a scalar type, not STRING or ARRAY. */
bool gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *data,
                         uint64_t n);
/* Array of n strings; lens may be NULL for NUL-terminated strings. */
bool gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                             const size_t *lens, uint64_t n);
/* Copies a value as the reader returns it (any type, nested arrays included). */
bool gguf_writer_set_value(gguf_writer *w, const char *key, const gguf_value *v);
/* Removes a key; false when absent. */
bool gguf_writer_remove(gguf_writer *w, const char *key);
int64_t gguf_writer_n_kv(const gguf_writer *w);

/* Adds a tensor of the given type (enum orc_dtype) and shape (ne[0] = row length, unused
 * dims ignored). Its bytes come from data (not copied: must stay valid until
 * gguf_writer_write returns) or, with the _cb variant, from fill(user, sink) at write
 * time. Fails on a duplicate or over-long name, an unknown type, a bad shape, or a row
 * length that is not a multiple of the type's block size. */
bool gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                            const int64_t *ne, const void *data);
bool gguf_writer_add_tensor_cb(gguf_writer *w, const char *name, uint32_t type,
                               uint32_t n_dims, const int64_t *ne, gguf_tensor_fill fill,
                               void *user);
int64_t gguf_writer_n_tensors(const gguf_writer *w);

/* Writes the file (header, metadata, tensor table, data aligned to general.alignment,
 * default 32). Writes to a temporary name beside path and renames it on success, so a
 * failed write never leaves a truncated file under path. */
orc_status gguf_writer_write(gguf_writer *w, const char *path);

#endif
