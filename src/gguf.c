/* gguf.c - GGUF v2/v3 reader. The whole header (metadata and tensor table) is parsed
 * and validated up front: every count, length, dimension product, offset and size read
 * from the file is checked against the bytes that remain and for integer overflow
 * before it is used, so a hostile file yields a precise error and nothing else. */
#include "gguf.h"

#include "dtype.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8
#define GGUF_MAX_DIMS 4

struct gguf_ctx {
    const uint8_t *base;
    size_t size;
    void *map;          /* mmap'd region, or NULL */
    void *owned;        /* malloc'd copy (no-mmap), or NULL */
    uint32_t version;
    uint32_t alignment;
    size_t data_offset;
    int64_t n_kv;
    gguf_kv *kv;
    int64_t n_tensors;
    gguf_tensor *tensors;
    /* open-addressing hash tables of indices+1 (0 = empty), sized to a power of two */
    uint32_t *kv_hash, *tensor_hash;
    size_t kv_hash_cap, tensor_hash_cap;
    /* allocations for string/array element tables, freed with the ctx */
    void **allocs;
    size_t n_allocs, cap_allocs;
};

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t pos;
    char *err;
    size_t errlen;
    int depth;
} reader;

static bool fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(reader *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    return false;
}

static size_t remaining(const reader *r)
{
    return r->size - r->pos;
}

static bool need(reader *r, size_t n, const char *what)
{
    if (remaining(r) < n)
        return fail(r, "truncated file: %s needs %zu bytes at offset %zu, but the file is %zu bytes",
                    what, n, r->pos, r->size);
    return true;
}

static bool rd_u32(reader *r, uint32_t *v, const char *what)
{
    if (!need(r, 4, what))
        return false;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return true;
}

static bool rd_u64(reader *r, uint64_t *v, const char *what)
{
    if (!need(r, 8, what))
        return false;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return true;
}

static bool rd_str(reader *r, gguf_str *s, const char *what)
{
    uint64_t n;
    if (!rd_u64(r, &n, what))
        return false;
    if (n > remaining(r))
        return fail(r, "%s: string length %llu at offset %zu runs past the end of the %zu-byte file",
                    what, (unsigned long long)n, r->pos - 8, r->size);
    s->p = (const char *)r->p + r->pos;
    s->n = n;
    r->pos += (size_t)n;
    return true;
}

static bool track(gguf_ctx *c, void *p)
{
    if (c->n_allocs == c->cap_allocs) {
        size_t cap = c->cap_allocs ? c->cap_allocs * 2 : 16;
        void **a = realloc(c->allocs, cap * sizeof *a);
        if (!a)
            return false;
        c->allocs = a;
        c->cap_allocs = cap;
    }
    c->allocs[c->n_allocs++] = p;
    return true;
}

static void *ctx_calloc(gguf_ctx *c, size_t n, size_t sz)
{
    if (n == 0)
        n = 1;
    void *p = calloc(n, sz);
    if (p && !track(c, p)) {
        free(p);
        return NULL;
    }
    return p;
}

size_t gguf_vtype_size(gguf_vtype t)
{
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_vtype_name(gguf_vtype t)
{
    static const char *names[GGUF_T_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                              "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < GGUF_T_COUNT ? names[t] : "unknown";
}

/* Reads one scalar of type t from raw little-endian bytes into a gguf_value. */
static void decode_scalar(gguf_vtype t, const uint8_t *b, gguf_value *v)
{
    v->type = t;
    switch (t) {
    case GGUF_T_UINT8: v->v.u64 = b[0]; break;
    case GGUF_T_INT8: v->v.i64 = (int8_t)b[0]; break;
    case GGUF_T_BOOL: v->v.b = b[0] != 0; break;
    case GGUF_T_UINT16: { uint16_t x; memcpy(&x, b, 2); v->v.u64 = x; break; }
    case GGUF_T_INT16: { int16_t x; memcpy(&x, b, 2); v->v.i64 = x; break; }
    case GGUF_T_UINT32: { uint32_t x; memcpy(&x, b, 4); v->v.u64 = x; break; }
    case GGUF_T_INT32: { int32_t x; memcpy(&x, b, 4); v->v.i64 = x; break; }
    case GGUF_T_FLOAT32: { float x; memcpy(&x, b, 4); v->v.f64 = x; break; }
    case GGUF_T_UINT64: { uint64_t x; memcpy(&x, b, 8); v->v.u64 = x; break; }
    case GGUF_T_INT64: { int64_t x; memcpy(&x, b, 8); v->v.i64 = x; break; }
    case GGUF_T_FLOAT64: { double x; memcpy(&x, b, 8); v->v.f64 = x; break; }
    default: break;
    }
}

static bool rd_value(gguf_ctx *c, reader *r, gguf_vtype t, gguf_value *v, const char *what);

static bool rd_array(gguf_ctx *c, reader *r, gguf_value *v, const char *what)
{
    uint32_t et;
    uint64_t n;
    if (!rd_u32(r, &et, what) || !rd_u64(r, &n, what))
        return false;
    if (et >= GGUF_T_COUNT)
        return fail(r, "%s: array element type %u is not a GGUF value type", what, et);
    if (++r->depth > GGUF_MAX_ARRAY_DEPTH)
        return fail(r, "%s: arrays nested deeper than %d levels", what, GGUF_MAX_ARRAY_DEPTH);
    v->type = GGUF_T_ARRAY;
    v->v.arr.elem = (gguf_vtype)et;
    v->v.arr.n = n;
    size_t esz = gguf_vtype_size((gguf_vtype)et);
    /* the smallest encoding of one element bounds how many can fit in what remains */
    size_t min_elem = esz ? esz : (et == GGUF_T_STRING ? 8 : 12);
    if (n > remaining(r) / min_elem)
        return fail(r, "%s: array of %llu %s elements at offset %zu cannot fit in the %zu bytes left",
                    what, (unsigned long long)n, gguf_vtype_name((gguf_vtype)et), r->pos,
                    remaining(r));
    if (esz) {
        v->v.arr.raw = r->p + r->pos;
        r->pos += (size_t)n * esz;
    } else if (et == GGUF_T_STRING) {
        gguf_str *s = ctx_calloc(c, (size_t)n, sizeof *s);
        if (!s)
            return fail(r, "%s: out of memory for %llu strings", what, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++)
            if (!rd_str(r, &s[i], what))
                return false;
        v->v.arr.strs = s;
    } else {
        gguf_value *vals = ctx_calloc(c, (size_t)n, sizeof *vals);
        if (!vals)
            return fail(r, "%s: out of memory for %llu arrays", what, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++)
            if (!rd_value(c, r, GGUF_T_ARRAY, &vals[i], what))
                return false;
        v->v.arr.vals = vals;
    }
    r->depth--;
    return true;
}

static bool rd_value(gguf_ctx *c, reader *r, gguf_vtype t, gguf_value *v, const char *what)
{
    if (t == GGUF_T_STRING) {
        v->type = t;
        return rd_str(r, &v->v.str, what);
    }
    if (t == GGUF_T_ARRAY)
        return rd_array(c, r, v, what);
    size_t sz = gguf_vtype_size(t);
    if (sz == 0)
        return fail(r, "%s: unknown value type %u", what, (unsigned)t);
    if (!need(r, sz, what))
        return false;
    decode_scalar(t, r->p + r->pos, v);
    r->pos += sz;
    return true;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    while (*s) {
        h ^= (uint8_t)*s++;
        h *= 1099511628211ull;
    }
    return h;
}

static size_t table_cap(int64_t n)
{
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap <<= 1;
    return cap;
}

/* Inserts index i (name names[i]) and returns the index of an earlier equal name, or -1. */
static int64_t hash_insert(uint32_t *tab, size_t cap, const char *name, uint32_t i,
                           const char *(*name_of)(const gguf_ctx *, uint32_t), const gguf_ctx *c)
{
    size_t h = (size_t)hash_str(name) & (cap - 1);
    while (tab[h]) {
        if (strcmp(name_of(c, tab[h] - 1), name) == 0)
            return tab[h] - 1;
        h = (h + 1) & (cap - 1);
    }
    tab[h] = i + 1;
    return -1;
}

static const char *kv_name(const gguf_ctx *c, uint32_t i)
{
    return c->kv[i].key;
}

static const char *tensor_name(const gguf_ctx *c, uint32_t i)
{
    return c->tensors[i].name;
}

static int64_t hash_find(const uint32_t *tab, size_t cap, const char *name,
                         const char *(*name_of)(const gguf_ctx *, uint32_t), const gguf_ctx *c)
{
    if (!tab)
        return -1;
    size_t h = (size_t)hash_str(name) & (cap - 1);
    while (tab[h]) {
        if (strcmp(name_of(c, tab[h] - 1), name) == 0)
            return tab[h] - 1;
        h = (h + 1) & (cap - 1);
    }
    return -1;
}

/* A NUL-terminated copy of a name; names with embedded NULs are rejected. */
static char *copy_name(gguf_ctx *c, reader *r, gguf_str s, const char *what)
{
    if (memchr(s.p, 0, (size_t)s.n)) {
        fail(r, "%s contains a NUL byte", what);
        return NULL;
    }
    char *out = ctx_calloc(c, (size_t)s.n + 1, 1);
    if (!out) {
        fail(r, "%s: out of memory", what);
        return NULL;
    }
    memcpy(out, s.p, (size_t)s.n);
    return out;
}

static int cmp_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static bool parse(gguf_ctx *c, reader *r)
{
    char what[384];
    uint32_t magic;
    if (!need(r, 4, "magic"))
        return false;
    memcpy(&magic, r->p, 4);
    if (memcmp(r->p, "GGUF", 4) != 0)
        return fail(r, "not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", r->p[0],
                    r->p[1], r->p[2], r->p[3]);
    r->pos = 4;
    if (!rd_u32(r, &c->version, "version"))
        return false;
    if (c->version != 2 && c->version != 3)
        return fail(r, "unsupported GGUF version %u (supported: 2, 3)", c->version);
    uint64_t n_tensors, n_kv;
    if (!rd_u64(r, &n_tensors, "tensor count") || !rd_u64(r, &n_kv, "metadata count"))
        return false;
    /* each key/value takes at least 12 bytes, each tensor info at least 32 */
    if (n_kv > remaining(r) / 12)
        return fail(r, "metadata count %llu cannot fit in a %zu-byte file",
                    (unsigned long long)n_kv, r->size);
    if (n_tensors > remaining(r) / 32)
        return fail(r, "tensor count %llu cannot fit in a %zu-byte file",
                    (unsigned long long)n_tensors, r->size);
    c->n_kv = (int64_t)n_kv;
    c->n_tensors = (int64_t)n_tensors;
    c->kv = ctx_calloc(c, (size_t)n_kv, sizeof *c->kv);
    c->tensors = ctx_calloc(c, (size_t)n_tensors, sizeof *c->tensors);
    c->kv_hash_cap = table_cap(c->n_kv);
    c->tensor_hash_cap = table_cap(c->n_tensors);
    c->kv_hash = ctx_calloc(c, c->kv_hash_cap, sizeof(uint32_t));
    c->tensor_hash = ctx_calloc(c, c->tensor_hash_cap, sizeof(uint32_t));
    if (!c->kv || !c->tensors || !c->kv_hash || !c->tensor_hash)
        return fail(r, "out of memory for %llu keys and %llu tensors", (unsigned long long)n_kv,
                    (unsigned long long)n_tensors);

    c->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &c->kv[i];
        gguf_str key;
        snprintf(what, sizeof what, "metadata key %llu", (unsigned long long)i);
        if (!rd_str(r, &key, what))
            return false;
        if (!(kv->key = copy_name(c, r, key, what)))
            return false;
        snprintf(what, sizeof what, "metadata '%.*s'", (int)(key.n > 256 ? 256 : key.n), key.p);
        uint32_t t;
        if (!rd_u32(r, &t, what))
            return false;
        if (t >= GGUF_T_COUNT)
            return fail(r, "%s: unknown value type %u", what, t);
        if (!rd_value(c, r, (gguf_vtype)t, &kv->val, what))
            return false;
        int64_t dup = hash_insert(c->kv_hash, c->kv_hash_cap, kv->key, (uint32_t)i, kv_name, c);
        if (dup >= 0)
            return fail(r, "%s appears twice (keys %lld and %llu)", what, (long long)dup,
                        (unsigned long long)i);
        if (strcmp(kv->key, "general.alignment") == 0) {
            if (kv->val.type != GGUF_T_UINT32)
                return fail(r, "general.alignment has type %s, expected u32",
                            gguf_vtype_name(kv->val.type));
            uint64_t a = kv->val.v.u64;
            if (a == 0 || (a & (a - 1)) != 0)
                return fail(r, "general.alignment %llu is not a power of two",
                            (unsigned long long)a);
            c->alignment = (uint32_t)a;
        }
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor *t = &c->tensors[i];
        gguf_str name;
        snprintf(what, sizeof what, "tensor %llu name", (unsigned long long)i);
        if (!rd_str(r, &name, what))
            return false;
        if (!(t->name = copy_name(c, r, name, what)))
            return false;
        snprintf(what, sizeof what, "tensor %s", t->name);
        if (!rd_u32(r, &t->n_dims, what))
            return false;
        if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
            return fail(r, "%s: %u dimensions (must be 1 to %d)", what, t->n_dims, GGUF_MAX_DIMS);
        uint64_t nel = 1;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
            uint64_t ne = 1;
            if (d < t->n_dims && !rd_u64(r, &ne, what))
                return false;
            if (ne == 0)
                return fail(r, "%s: dimension %u is zero", what, d);
            if (ne > (uint64_t)INT64_MAX || __builtin_mul_overflow(nel, ne, &nel) ||
                nel > (uint64_t)INT64_MAX)
                return fail(r, "%s: element count overflows (dimension %u is %llu)", what, d,
                            (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
        }
        if (!rd_u32(r, &t->type, what) || !rd_u64(r, &t->offset, what))
            return false;
        const orc_dtype_info *ti = orc_dtype_get(t->type);
        if (!ti)
            return fail(r, "%s: unknown tensor type %u", what, t->type);
        if (t->ne[0] % ti->blck != 0)
            return fail(r, "%s: row length %lld is not a multiple of the %s block size %u", what,
                        (long long)t->ne[0], ti->name, ti->blck);
        size_t row = orc_dtype_row_size(t->type, t->ne[0]);
        uint64_t rows = nel / (uint64_t)t->ne[0];
        uint64_t nbytes;
        if (row == 0 || __builtin_mul_overflow((uint64_t)row, rows, &nbytes) || nbytes > SIZE_MAX)
            return fail(r, "%s: byte size overflows", what);
        t->nbytes = (size_t)nbytes;
        if (t->offset % c->alignment != 0)
            return fail(r, "%s: data offset %llu is not a multiple of the alignment %u", what,
                        (unsigned long long)t->offset, c->alignment);
        if (hash_insert(c->tensor_hash, c->tensor_hash_cap, t->name, (uint32_t)i, tensor_name, c) >= 0)
            return fail(r, "%s appears twice in the tensor table", what);
    }

    /* the data section starts at the next multiple of the alignment */
    size_t data = r->pos;
    size_t pad = (c->alignment - data % c->alignment) % c->alignment;
    if (n_tensors > 0 && (data > SIZE_MAX - pad || data + pad > r->size))
        return fail(r, "data section at offset %zu lies past the end of the %zu-byte file",
                    data + pad, r->size);
    c->data_offset = data + pad;

    gguf_tensor **order = n_tensors ? malloc((size_t)n_tensors * sizeof *order) : NULL;
    if (n_tensors && !order)
        return fail(r, "out of memory");
    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor *t = &c->tensors[i];
        uint64_t start, end;
        if (__builtin_add_overflow((uint64_t)c->data_offset, t->offset, &start) ||
            __builtin_add_overflow(start, (uint64_t)t->nbytes, &end) || end > r->size) {
            free(order);
            return fail(r, "tensor %s: data [%llu, +%zu) lies past the end of the %zu-byte file",
                        t->name, (unsigned long long)(c->data_offset + t->offset), t->nbytes,
                        r->size);
        }
        t->data = r->p + start;
        order[i] = t;
    }
    if (n_tensors > 1) {
        qsort(order, (size_t)n_tensors, sizeof *order, cmp_offset);
        for (uint64_t i = 1; i < n_tensors; i++) {
            const gguf_tensor *a = order[i - 1], *b = order[i];
            if (a->offset + a->nbytes > b->offset) {
                bool ok = fail(r, "tensor %s: data [%llu, +%zu) overlaps tensor %s at %llu", b->name,
                               (unsigned long long)b->offset, b->nbytes, a->name,
                               (unsigned long long)a->offset);
                free(order);
                return ok;
            }
        }
    }
    free(order);
    return true;
}

static gguf_ctx *open_common(gguf_ctx *c, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    reader r = {.p = c->base, .size = c->size, .err = err, .errlen = errlen};
    if (!parse(c, &r)) {
        gguf_close(c);
        return NULL;
    }
    return c;
}

gguf_ctx *gguf_open_buffer(const void *data, size_t size, char *err, size_t errlen)
{
    gguf_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->base = data;
    c->size = size;
    return open_common(c, err, errlen);
}

gguf_ctx *gguf_open(const char *path, bool use_mmap, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) {
        snprintf(err, errlen, "%s: empty file", path);
        close(fd);
        return NULL;
    }
    gguf_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    c->size = (size_t)st.st_size;
    if (use_mmap) {
        void *m = mmap(NULL, c->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            snprintf(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
            close(fd);
            free(c);
            return NULL;
        }
        c->map = m;
        c->base = m;
    } else {
        void *buf = NULL;
        if (posix_memalign(&buf, 64, c->size) != 0) {
            snprintf(err, errlen, "%s: out of memory for %zu bytes", path, c->size);
            close(fd);
            free(c);
            return NULL;
        }
        size_t got = 0;
        while (got < c->size) {
            ssize_t n = read(fd, (char *)buf + got, c->size - got);
            if (n <= 0) {
                snprintf(err, errlen, "%s: read failed: %s", path, n < 0 ? strerror(errno) : "short read");
                close(fd);
                free(buf);
                free(c);
                return NULL;
            }
            got += (size_t)n;
        }
        c->owned = buf;
        c->base = buf;
    }
    close(fd);
    gguf_ctx *res = open_common(c, err, errlen);
    if (!res) {
        /* prefix the path so the message stands alone */
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "%s: %s", path, tmp);
    }
    return res;
}

void gguf_close(gguf_ctx *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_allocs; i++)
        free(c->allocs[i]);
    free(c->allocs);
    if (c->map)
        munmap(c->map, c->size);
    free(c->owned);
    free(c);
}

uint32_t gguf_version(const gguf_ctx *c) { return c->version; }
size_t gguf_file_size(const gguf_ctx *c) { return c->size; }
uint32_t gguf_alignment(const gguf_ctx *c) { return c->alignment; }
size_t gguf_data_offset(const gguf_ctx *c) { return c->data_offset; }
const uint8_t *gguf_base(const gguf_ctx *c) { return c->base; }
int64_t gguf_n_kv(const gguf_ctx *c) { return c->n_kv; }
int64_t gguf_n_tensors(const gguf_ctx *c) { return c->n_tensors; }

const gguf_kv *gguf_kv_at(const gguf_ctx *c, int64_t i)
{
    return i >= 0 && i < c->n_kv ? &c->kv[i] : NULL;
}

const gguf_tensor *gguf_tensor_at(const gguf_ctx *c, int64_t i)
{
    return i >= 0 && i < c->n_tensors ? &c->tensors[i] : NULL;
}

const gguf_value *gguf_find(const gguf_ctx *c, const char *key)
{
    int64_t i = hash_find(c->kv_hash, c->kv_hash_cap, key, kv_name, c);
    return i >= 0 ? &c->kv[i].val : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_ctx *c, const char *name)
{
    int64_t i = hash_find(c->tensor_hash, c->tensor_hash_cap, name, tensor_name, c);
    return i >= 0 ? &c->tensors[i] : NULL;
}

void *gguf_tensor_data_writable(gguf_ctx *c, const gguf_tensor *t)
{
    if (!c || !t || !t->data)
        return NULL;
    if (c->map) {
        /* MAP_PRIVATE: writes go to copy-on-write pages, never to the file */
        long pg = sysconf(_SC_PAGESIZE);
        uintptr_t lo = (uintptr_t)t->data, hi = lo + t->nbytes;
        uintptr_t a = lo & ~(uintptr_t)(pg - 1);
        if (mprotect((void *)a, hi - a, PROT_READ | PROT_WRITE) != 0)
            return NULL;
    }
    return (void *)(uintptr_t)t->data;
}

bool gguf_is_mapped(const gguf_ctx *c)
{
    return c && c->map;
}

void gguf_data_drop(gguf_ctx *c, const void *p, size_t n)
{
    if (!c || !c->map)
        return;
    uintptr_t base = (uintptr_t)c->map;
    if ((uintptr_t)p < base || n > c->size || (uintptr_t)p - base > c->size - n)
        return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + pg - 1) & ~(pg - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(pg - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static bool is_unsigned(gguf_vtype t)
{
    return t == GGUF_T_UINT8 || t == GGUF_T_UINT16 || t == GGUF_T_UINT32 || t == GGUF_T_UINT64;
}

static bool is_signed(gguf_vtype t)
{
    return t == GGUF_T_INT8 || t == GGUF_T_INT16 || t == GGUF_T_INT32 || t == GGUF_T_INT64;
}

bool gguf_get_i64(const gguf_ctx *c, const char *key, int64_t *out)
{
    const gguf_value *v = gguf_find(c, key);
    if (!v)
        return false;
    if (is_unsigned(v->type)) {
        if (v->v.u64 > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v->v.u64;
        return true;
    }
    if (is_signed(v->type)) {
        *out = v->v.i64;
        return true;
    }
    return false;
}

bool gguf_get_u32(const gguf_ctx *c, const char *key, uint32_t *out)
{
    int64_t x;
    if (!gguf_get_i64(c, key, &x) || x < 0 || x > (int64_t)UINT32_MAX)
        return false;
    *out = (uint32_t)x;
    return true;
}

bool gguf_get_f32(const gguf_ctx *c, const char *key, float *out)
{
    const gguf_value *v = gguf_find(c, key);
    if (!v)
        return false;
    if (v->type == GGUF_T_FLOAT32 || v->type == GGUF_T_FLOAT64) {
        *out = (float)v->v.f64;
        return true;
    }
    int64_t x;
    if (gguf_get_i64(c, key, &x)) {
        *out = (float)x;
        return true;
    }
    return false;
}

bool gguf_get_bool(const gguf_ctx *c, const char *key, bool *out)
{
    const gguf_value *v = gguf_find(c, key);
    if (!v || v->type != GGUF_T_BOOL)
        return false;
    *out = v->v.b;
    return true;
}

bool gguf_get_str(const gguf_ctx *c, const char *key, gguf_str *out)
{
    const gguf_value *v = gguf_find(c, key);
    if (!v || v->type != GGUF_T_STRING)
        return false;
    *out = v->v.str;
    return true;
}

const gguf_value *gguf_get_arr(const gguf_ctx *c, const char *key, gguf_vtype elem)
{
    const gguf_value *v = gguf_find(c, key);
    if (!v || v->type != GGUF_T_ARRAY)
        return NULL;
    if (elem != GGUF_T_COUNT && v->v.arr.elem != elem)
        return NULL;
    return v;
}

float gguf_arr_f32(const gguf_value *a, uint64_t i)
{
    gguf_value v = {0};
    size_t sz = gguf_vtype_size(a->v.arr.elem);
    if (!sz)
        return 0.0f;
    decode_scalar(a->v.arr.elem, a->v.arr.raw + i * sz, &v);
    if (v.type == GGUF_T_FLOAT32 || v.type == GGUF_T_FLOAT64)
        return (float)v.v.f64;
    if (is_unsigned(v.type))
        return (float)v.v.u64;
    if (is_signed(v.type))
        return (float)v.v.i64;
    return v.v.b ? 1.0f : 0.0f;
}

int64_t gguf_arr_i64(const gguf_value *a, uint64_t i)
{
    gguf_value v = {0};
    size_t sz = gguf_vtype_size(a->v.arr.elem);
    if (!sz)
        return 0;
    decode_scalar(a->v.arr.elem, a->v.arr.raw + i * sz, &v);
    if (v.type == GGUF_T_FLOAT32 || v.type == GGUF_T_FLOAT64)
        return v.v.f64 > -9.2e18 && v.v.f64 < 9.2e18 ? (int64_t)v.v.f64 : 0;
    if (is_unsigned(v.type))
        return v.v.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v.v.u64;
    if (is_signed(v.type))
        return v.v.i64;
    return v.v.b;
}

bool gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.n == n && memcmp(s.p, c, n) == 0;
}
