/* gguf.h - internal GGUF reader: validates a whole file (v2/v3) against its size before
 * anything uses it, then answers metadata and tensor look-ups. Strings and tensor data
 * point into the mapped (or read) file and live as long as the gguf_ctx. */
#ifndef ORC_GGUF_H
#define ORC_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    GGUF_T_UINT8 = 0,
    GGUF_T_INT8 = 1,
    GGUF_T_UINT16 = 2,
    GGUF_T_INT16 = 3,
    GGUF_T_UINT32 = 4,
    GGUF_T_INT32 = 5,
    GGUF_T_FLOAT32 = 6,
    GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8,
    GGUF_T_ARRAY = 9,
    GGUF_T_UINT64 = 10,
    GGUF_T_INT64 = 11,
    GGUF_T_FLOAT64 = 12,
    GGUF_T_COUNT
} gguf_vtype;

/* A string inside the file: not NUL-terminated. */
typedef struct {
    const char *p;
    uint64_t n;
} gguf_str;

typedef struct gguf_value gguf_value;
struct gguf_value {
    gguf_vtype type;
    union {
        uint64_t u64;   /* any unsigned integer type, widened */
        int64_t i64;    /* any signed integer type, widened */
        double f64;     /* FLOAT32 / FLOAT64, widened */
        bool b;
        gguf_str str;
        struct {
            gguf_vtype elem;        /* element type */
            uint64_t n;             /* element count */
            const uint8_t *raw;     /* scalar elements: packed little-endian in the file */
            gguf_str *strs;         /* STRING elements (owned by the ctx) */
            gguf_value *vals;       /* ARRAY elements: nested arrays (owned by the ctx) */
        } arr;
    } v;
};

typedef struct {
    char *key;          /* NUL-terminated copy */
    gguf_value val;
} gguf_kv;

typedef struct {
    char *name;         /* NUL-terminated copy */
    uint32_t n_dims;    /* 1..4 */
    int64_t ne[4];      /* elements per dimension, ne[0] = row length; unused dims are 1 */
    uint32_t type;      /* enum orc_dtype */
    uint64_t offset;    /* relative to the data section */
    size_t nbytes;
    const void *data;   /* into the file */
} gguf_tensor;

typedef struct gguf_ctx gguf_ctx;

/* Open and validate a file. use_mmap=false reads it into memory instead.
 * On failure returns NULL and writes a precise message into err. */
gguf_ctx *gguf_open(const char *path, bool use_mmap, char *err, size_t errlen);

/* Validate a buffer already in memory (not copied: must outlive the ctx). */
gguf_ctx *gguf_open_buffer(const void *data, size_t size, char *err, size_t errlen);

void gguf_close(gguf_ctx *ctx);

uint32_t gguf_version(const gguf_ctx *ctx);
size_t gguf_file_size(const gguf_ctx *ctx);
uint32_t gguf_alignment(const gguf_ctx *ctx);
size_t gguf_data_offset(const gguf_ctx *ctx);
const uint8_t *gguf_base(const gguf_ctx *ctx);

int64_t gguf_n_kv(const gguf_ctx *ctx);
const gguf_kv *gguf_kv_at(const gguf_ctx *ctx, int64_t i);
const gguf_value *gguf_find(const gguf_ctx *ctx, const char *key);

/* Typed getters: return false when the key is missing or cannot be represented. Integer
 * getters accept any integer type whose value fits. */
bool gguf_get_u32(const gguf_ctx *ctx, const char *key, uint32_t *out);
bool gguf_get_i64(const gguf_ctx *ctx, const char *key, int64_t *out);
bool gguf_get_f32(const gguf_ctx *ctx, const char *key, float *out);
bool gguf_get_bool(const gguf_ctx *ctx, const char *key, bool *out);
bool gguf_get_str(const gguf_ctx *ctx, const char *key, gguf_str *out);
/* Array of the given element type (GGUF_T_COUNT: any); NULL when absent or other type. */
const gguf_value *gguf_get_arr(const gguf_ctx *ctx, const char *key, gguf_vtype elem);

/* Element readers for scalar arrays (i < arr->v.arr.n is the caller's job). */
float gguf_arr_f32(const gguf_value *arr, uint64_t i);
int64_t gguf_arr_i64(const gguf_value *arr, uint64_t i);

/* Size in bytes of one scalar element type; 0 for STRING/ARRAY/unknown. */
size_t gguf_vtype_size(gguf_vtype t);
const char *gguf_vtype_name(gguf_vtype t);

/* Compare a gguf_str with a C string. */
bool gguf_str_eq(gguf_str s, const char *c);

int64_t gguf_n_tensors(const gguf_ctx *ctx);
const gguf_tensor *gguf_tensor_at(const gguf_ctx *ctx, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_ctx *ctx, const char *name);

/* A writable pointer to tensor t's data (for load-time repacking), or NULL when it
 * cannot be made writable. For a mapped file the pages become private copies (the file
 * is never written); a file read into memory is writable as it is. */
void *gguf_tensor_data_writable(gguf_ctx *ctx, const gguf_tensor *t);

/* True when the tensor data is a mapping of the file (not a copy in memory). */
bool gguf_is_mapped(const gguf_ctx *ctx);

/* Tell the kernel that the whole pages inside [p, p + n) of the mapped data will not be
 * read again (the weights were copied elsewhere): they leave the process's resident set.
 * A later read still sees the file's bytes. No-op for a file read into memory. */
void gguf_data_drop(gguf_ctx *ctx, const void *p, size_t n);

#endif
