/* gguf_write.c - GGUF v3 writer (see gguf_write.h). Each metadata value is serialized
 * into its own byte buffer when it is set, so writing is one pass of copies; tensor data
 * is streamed from pointers or producer callbacks with alignment padding in between. */
#include "gguf_write.h"

#include "common.h"
#include "dtype.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW_DEFAULT_ALIGNMENT 32u
#define GW_MAX_KEY 65535u
#define GW_MAX_NAME 63u /* llama.cpp's GGML_MAX_NAME - 1 */
#define GW_MAX_DIMS 4u

typedef struct {
    uint8_t *p;
    size_t n, cap;
} gw_buf;

typedef struct {
    char *key;
    gw_buf val; /* type tag + payload, exactly as in the file */
} gw_kv;

typedef struct {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[GW_MAX_DIMS];
    size_t nbytes;
    uint64_t offset;
    const void *data;
    gguf_tensor_fill fill;
    void *user;
} gw_tensor;

struct gguf_writer {
    gw_kv *kv;
    int64_t n_kv, cap_kv;
    gw_tensor *t;
    int64_t n_t, cap_t;
    uint32_t alignment;
};

struct gguf_sink {
    FILE *f;
    const char *name;
    size_t written, limit;
    bool failed;
};

/* ---- byte buffers ------------------------------------------------------------------ */

static bool buf_put(gw_buf *b, const void *p, size_t n)
{
    if (n > SIZE_MAX - b->n)
        return false;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) {
            if (cap > SIZE_MAX / 2)
                return false;
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q)
            return false;
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    return true;
}

static bool put_u32(gw_buf *b, uint32_t v) { return buf_put(b, &v, 4); }
static bool put_u64(gw_buf *b, uint64_t v) { return buf_put(b, &v, 8); }
static bool put_str(gw_buf *b, const char *s, size_t n)
{
    return put_u64(b, n) && buf_put(b, s, n);
}

/* ---- writer and metadata --------------------------------------------------------------- */

gguf_writer *gguf_writer_new(void)
{
    gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = GW_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (int64_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

int64_t gguf_writer_n_kv(const gguf_writer *w) { return w ? w->n_kv : 0; }
int64_t gguf_writer_n_tensors(const gguf_writer *w) { return w ? w->n_t : 0; }

static int64_t find_kv(const gguf_writer *w, const char *key)
{
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key))
            return i;
    return -1;
}

/* Takes ownership of val (freed on failure). */
static bool set_kv(gguf_writer *w, const char *key, gw_buf val)
{
    if (!w || !key) {
        free(val.p);
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: NULL writer or key");
        return false;
    }
    size_t klen = strlen(key);
    if (klen == 0 || klen > GW_MAX_KEY) {
        free(val.p);
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: metadata key of %zu bytes (1 to %u)",
                 klen, GW_MAX_KEY);
        return false;
    }
    uint32_t tag;
    memcpy(&tag, val.p, 4);
    uint32_t align = 0;
    if (!strcmp(key, "general.alignment")) {
        uint32_t a = 0;
        if (tag == GGUF_T_UINT32)
            memcpy(&a, val.p + 4, 4);
        if (tag != GGUF_T_UINT32 || a == 0 || (a & (a - 1)) != 0) {
            free(val.p);
            orc_fail(ORC_ERR_INVALID_ARGUMENT,
                     "gguf writer: general.alignment must be a u32 power of two");
            return false;
        }
        align = a;
    }
    int64_t i = find_kv(w, key);
    if (i >= 0) {
        free(w->kv[i].val.p);
        w->kv[i].val = val;
    } else {
        if (w->n_kv == w->cap_kv) {
            int64_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
            gw_kv *kv = realloc(w->kv, (size_t)cap * sizeof *kv);
            if (!kv) {
                free(val.p);
                orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
                return false;
            }
            w->kv = kv;
            w->cap_kv = cap;
        }
        char *k = strdup(key);
        if (!k) {
            free(val.p);
            orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
            return false;
        }
        w->kv[w->n_kv].key = k;
        w->kv[w->n_kv].val = val;
        w->n_kv++;
    }
    if (align)
        w->alignment = align;
    return true;
}

static bool set_scalar(gguf_writer *w, const char *key, gguf_vtype t, const void *v, size_t n)
{
    gw_buf b = {0};
    if (!put_u32(&b, t) || !buf_put(&b, v, n)) {
        free(b.p);
        orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
        return false;
    }
    return set_kv(w, key, b);
}

bool gguf_writer_set_u8(gguf_writer *w, const char *key, uint8_t v) { return set_scalar(w, key, GGUF_T_UINT8, &v, 1); }
bool gguf_writer_set_i8(gguf_writer *w, const char *key, int8_t v) { return set_scalar(w, key, GGUF_T_INT8, &v, 1); }
bool gguf_writer_set_u16(gguf_writer *w, const char *key, uint16_t v) { return set_scalar(w, key, GGUF_T_UINT16, &v, 2); }
bool gguf_writer_set_i16(gguf_writer *w, const char *key, int16_t v) { return set_scalar(w, key, GGUF_T_INT16, &v, 2); }
bool gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, GGUF_T_UINT32, &v, 4); }
bool gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) { return set_scalar(w, key, GGUF_T_INT32, &v, 4); }
bool gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, GGUF_T_UINT64, &v, 8); }
bool gguf_writer_set_i64(gguf_writer *w, const char *key, int64_t v) { return set_scalar(w, key, GGUF_T_INT64, &v, 8); }
bool gguf_writer_set_f32(gguf_writer *w, const char *key, float v) { return set_scalar(w, key, GGUF_T_FLOAT32, &v, 4); }
bool gguf_writer_set_f64(gguf_writer *w, const char *key, double v) { return set_scalar(w, key, GGUF_T_FLOAT64, &v, 8); }

bool gguf_writer_set_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, GGUF_T_BOOL, &b, 1);
}

bool gguf_writer_set_strn(gguf_writer *w, const char *key, const char *s, size_t len)
{
    if (!s && len) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: NULL string for '%s'", key ? key : "");
        return false;
    }
    gw_buf b = {0};
    if (!put_u32(&b, GGUF_T_STRING) || !put_str(&b, s, len)) {
        free(b.p);
        orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
        return false;
    }
    return set_kv(w, key, b);
}

bool gguf_writer_set_str(gguf_writer *w, const char *key, const char *s)
{
    return gguf_writer_set_strn(w, key, s, s ? strlen(s) : 0);
}

bool gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *data,
                         uint64_t n)
{
    size_t es = gguf_vtype_size(elem), total;
    if (es == 0 || elem == GGUF_T_STRING || elem == GGUF_T_ARRAY) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: '%s': array element type %u is not a scalar",
                 key ? key : "", (unsigned)elem);
        return false;
    }
    if (n > SIZE_MAX || !orc_mul_ok((size_t)n, es, &total) || (!data && n)) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: '%s': bad array of %llu elements",
                 key ? key : "", (unsigned long long)n);
        return false;
    }
    gw_buf b = {0};
    if (!put_u32(&b, GGUF_T_ARRAY) || !put_u32(&b, elem) || !put_u64(&b, n) ||
        !buf_put(&b, data, total)) {
        free(b.p);
        orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
        return false;
    }
    return set_kv(w, key, b);
}

bool gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                             const size_t *lens, uint64_t n)
{
    if (!strs && n) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: NULL string array for '%s'", key ? key : "");
        return false;
    }
    gw_buf b = {0};
    bool ok = put_u32(&b, GGUF_T_ARRAY) && put_u32(&b, GGUF_T_STRING) && put_u64(&b, n);
    for (uint64_t i = 0; ok && i < n; i++) {
        const char *s = strs[i] ? strs[i] : "";
        ok = put_str(&b, s, lens ? lens[i] : strlen(s));
    }
    if (!ok) {
        free(b.p);
        orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
        return false;
    }
    return set_kv(w, key, b);
}

/* Serializes v's payload (no type tag) into b. */
static bool put_value(gw_buf *b, const gguf_value *v, int depth)
{
    if (depth > 8)
        return false;
    switch (v->type) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: {
        uint8_t x = v->type == GGUF_T_BOOL ? (uint8_t)v->v.b : (uint8_t)v->v.u64;
        return buf_put(b, &x, 1);
    }
    case GGUF_T_UINT16: case GGUF_T_INT16: {
        uint16_t x = (uint16_t)v->v.u64;
        return buf_put(b, &x, 2);
    }
    case GGUF_T_UINT32: case GGUF_T_INT32: {
        uint32_t x = (uint32_t)v->v.u64;
        return buf_put(b, &x, 4);
    }
    case GGUF_T_UINT64: case GGUF_T_INT64:
        return buf_put(b, &v->v.u64, 8);
    case GGUF_T_FLOAT32: {
        float x = (float)v->v.f64;
        return buf_put(b, &x, 4);
    }
    case GGUF_T_FLOAT64:
        return buf_put(b, &v->v.f64, 8);
    case GGUF_T_STRING:
        return put_str(b, v->v.str.p, v->v.str.n);
    case GGUF_T_ARRAY: {
        gguf_vtype e = v->v.arr.elem;
        uint64_t n = v->v.arr.n;
        if (!put_u32(b, e) || !put_u64(b, n))
            return false;
        if (e == GGUF_T_STRING) {
            for (uint64_t i = 0; i < n; i++)
                if (!put_str(b, v->v.arr.strs[i].p, v->v.arr.strs[i].n))
                    return false;
            return true;
        }
        if (e == GGUF_T_ARRAY) {
            for (uint64_t i = 0; i < n; i++)
                if (!put_value(b, &v->v.arr.vals[i], depth + 1))
                    return false;
            return true;
        }
        size_t es = gguf_vtype_size(e), total;
        if (es == 0 || n > SIZE_MAX || !orc_mul_ok((size_t)n, es, &total))
            return false;
        return buf_put(b, v->v.arr.raw, total);
    }
    default:
        return false;
    }
}

bool gguf_writer_set_value(gguf_writer *w, const char *key, const gguf_value *v)
{
    if (!v) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: NULL value for '%s'", key ? key : "");
        return false;
    }
    gw_buf b = {0};
    if (!put_u32(&b, v->type) || !put_value(&b, v, 0)) {
        free(b.p);
        orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: cannot copy the value of '%s'", key ? key : "");
        return false;
    }
    return set_kv(w, key, b);
}

bool gguf_writer_remove(gguf_writer *w, const char *key)
{
    int64_t i = w && key ? find_kv(w, key) : -1;
    if (i < 0)
        return false;
    free(w->kv[i].key);
    free(w->kv[i].val.p);
    memmove(&w->kv[i], &w->kv[i + 1], (size_t)(w->n_kv - i - 1) * sizeof *w->kv);
    w->n_kv--;
    if (!strcmp(key, "general.alignment"))
        w->alignment = GW_DEFAULT_ALIGNMENT;
    return true;
}

/* ---- tensors ------------------------------------------------------------------------ */

static bool add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                       const int64_t *ne, const void *data, gguf_tensor_fill fill, void *user)
{
    if (!w || !name || !ne) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: NULL writer, name or shape");
        return false;
    }
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > GW_MAX_NAME) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: tensor name '%.80s' has %zu bytes (1 to %u)",
                 name, nlen, GW_MAX_NAME);
        return false;
    }
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) {
            orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: tensor '%s' added twice", name);
            return false;
        }
    const orc_dtype_info *ti = orc_dtype_get(type);
    if (!ti || !ti->name) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: tensor '%s': unknown type %u", name, type);
        return false;
    }
    if (n_dims == 0 || n_dims > GW_MAX_DIMS) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: tensor '%s': %u dimensions (1 to %u)",
                 name, n_dims, GW_MAX_DIMS);
        return false;
    }
    gw_tensor t = {.type = type, .n_dims = n_dims, .data = data, .fill = fill, .user = user};
    size_t rows = 1;
    for (uint32_t d = 0; d < GW_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] <= 0 || (d > 0 && !orc_mul_ok(rows, (size_t)t.ne[d], &rows))) {
            orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: tensor '%s': bad dimension %u (%lld)",
                     name, d, (long long)t.ne[d]);
            return false;
        }
    }
    if (t.ne[0] % ti->blck != 0) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT,
                 "gguf writer: tensor '%s': row length %lld is not a multiple of the %s block size %u",
                 name, (long long)t.ne[0], ti->name, ti->blck);
        return false;
    }
    size_t row = orc_dtype_row_size(type, t.ne[0]);
    if (row == 0 || !orc_mul_ok(row, rows, &t.nbytes)) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: tensor '%s': size overflows", name);
        return false;
    }
    if (!data && !fill) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: tensor '%s' has no data", name);
        return false;
    }
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? w->cap_t * 2 : 64;
        gw_tensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) {
            orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
            return false;
        }
        w->t = nt;
        w->cap_t = cap;
    }
    if (!(t.name = strdup(name))) {
        orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
        return false;
    }
    w->t[w->n_t++] = t;
    return true;
}

bool gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                            const int64_t *ne, const void *data)
{
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

bool gguf_writer_add_tensor_cb(gguf_writer *w, const char *name, uint32_t type,
                               uint32_t n_dims, const int64_t *ne, gguf_tensor_fill fill,
                               void *user)
{
    if (!fill) {
        orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: tensor '%s': NULL callback", name ? name : "");
        return false;
    }
    return add_tensor(w, name, type, n_dims, ne, NULL, fill, user);
}

/* ---- output ------------------------------------------------------------------------- */

bool gguf_sink_write(gguf_sink *s, const void *data, size_t n)
{
    if (s->failed)
        return false;
    if (n > s->limit - s->written) {
        s->failed = true;
        orc_fail(ORC_ERR_INTERNAL, "gguf writer: tensor '%s': producer wrote more than its %zu bytes",
                 s->name, s->limit);
        return false;
    }
    if (n && fwrite(data, 1, n, s->f) != n) {
        s->failed = true;
        orc_fail(ORC_ERR_IO, "gguf writer: write failed: %s", strerror(errno));
        return false;
    }
    s->written += n;
    return true;
}

static bool write_zeros(FILE *f, size_t n)
{
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (fwrite(zeros, 1, k, f) != k)
            return false;
        n -= k;
    }
    return true;
}

orc_status gguf_writer_write(gguf_writer *w, const char *path)
{
    if (!w || !path)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "gguf writer: NULL writer or path");
    uint64_t align = w->alignment;

    /* header, metadata and tensor table in memory; offsets first */
    gw_buf h = {0};
    uint64_t off = 0;
    bool ok = buf_put(&h, "GGUF", 4) && put_u32(&h, 3) && put_u64(&h, (uint64_t)w->n_t) &&
              put_u64(&h, (uint64_t)w->n_kv);
    for (int64_t i = 0; ok && i < w->n_kv; i++)
        ok = put_str(&h, w->kv[i].key, strlen(w->kv[i].key)) &&
             buf_put(&h, w->kv[i].val.p, w->kv[i].val.n);
    for (int64_t i = 0; ok && i < w->n_t; i++) {
        gw_tensor *t = &w->t[i];
        t->offset = off;
        ok = put_str(&h, t->name, strlen(t->name)) && put_u32(&h, t->n_dims);
        for (uint32_t d = 0; ok && d < t->n_dims; d++)
            ok = put_u64(&h, (uint64_t)t->ne[d]);
        ok = ok && put_u32(&h, t->type) && put_u64(&h, t->offset);
        uint64_t end = off + t->nbytes;
        off = (end + align - 1) / align * align;
    }
    if (!ok) {
        free(h.p);
        return orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory for the header");
    }

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) {
        free(h.p);
        return orc_fail(ORC_ERR_NO_MEMORY, "gguf writer: out of memory");
    }
    snprintf(tmp, plen + 32, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        orc_status st = orc_fail(ORC_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        free(h.p);
        free(tmp);
        return st;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    orc_status st = ORC_OK;
    size_t pad = (size_t)((align - h.n % align) % align);
    if (fwrite(h.p, 1, h.n, f) != h.n || (w->n_t > 0 && !write_zeros(f, pad))) {
        st = orc_fail(ORC_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    for (int64_t i = 0; i < w->n_t; i++) {
        gw_tensor *t = &w->t[i];
        gguf_sink s = {.f = f, .name = t->name, .limit = t->nbytes};
        if (t->data) {
            if (!gguf_sink_write(&s, t->data, t->nbytes)) {
                st = ORC_ERR_IO;
                goto fail;
            }
        } else {
            st = t->fill(t->user, &s);
            if (st == ORC_OK && s.failed)
                st = orc_fail(ORC_ERR_INTERNAL, "gguf writer: tensor '%s': write failed", t->name);
            if (st != ORC_OK)
                goto fail;
            if (s.written != t->nbytes) {
                st = orc_fail(ORC_ERR_INTERNAL,
                              "gguf writer: tensor '%s': producer wrote %zu of %zu bytes",
                              t->name, s.written, t->nbytes);
                goto fail;
            }
        }
        if (i + 1 < w->n_t) {
            size_t tp = (size_t)((align - t->nbytes % align) % align);
            if (!write_zeros(f, tp)) {
                st = orc_fail(ORC_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
                goto fail;
            }
        }
    }
    if (fflush(f) != 0 || ferror(f)) {
        st = orc_fail(ORC_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    if (fclose(f) != 0) {
        f = NULL;
        st = orc_fail(ORC_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        st = orc_fail(ORC_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto fail;
    }
    free(h.p);
    free(tmp);
    return ORC_OK;

fail:
    if (f)
        fclose(f);
    remove(tmp);
    free(h.p);
    free(tmp);
    return st;
}
