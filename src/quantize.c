/* quantize.c - orc_model_quantize: rewrite a GGUF model with its weight matrices in another
 * type. Reads the input with the GGUF reader (mmap), picks each tensor's type with a
 * llama.cpp-style recipe, converts rows in parallel (dequantize -> quantize) and streams
 * the result through the GGUF writer, so memory stays at a few chunks of rows. */
#include "common.h"
#include "dtype.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"
#include "threadpool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One accepted type string: the default type of weight matrices, llama.cpp's LLAMA_FTYPE
 * number for general.file_type, and the recipe family. */
typedef enum { R_PLAIN, R_K_M } recipe_kind;

typedef struct {
    const char *name;
    uint32_t type;
    uint32_t ftype;
    recipe_kind kind;
} qtype;

static const qtype QTYPES[] = {
    {"f32", ORC_DT_F32, 0, R_PLAIN},       {"f16", ORC_DT_F16, 1, R_PLAIN},
    {"bf16", ORC_DT_BF16, 32, R_PLAIN},    {"q4_0", ORC_DT_Q4_0, 2, R_PLAIN},
    {"q4_1", ORC_DT_Q4_1, 3, R_PLAIN},     {"q5_0", ORC_DT_Q5_0, 8, R_PLAIN},
    {"q5_1", ORC_DT_Q5_1, 9, R_PLAIN},     {"q8_0", ORC_DT_Q8_0, 7, R_PLAIN},
    {"q4_k_m", ORC_DT_Q4_K, 15, R_K_M},    {"q5_k_m", ORC_DT_Q5_K, 17, R_K_M},
    {"q6_k", ORC_DT_Q6_K, 18, R_PLAIN},    {"iq4_nl", ORC_DT_IQ4_NL, 25, R_PLAIN},
};
#define N_QTYPES (sizeof QTYPES / sizeof QTYPES[0])

#define CHUNK_ELEMS (4 << 20) /* elements converted per parallel step */

orc_quantize_params orc_quantize_default_params(void)
{
    orc_quantize_params p = {.type = "q4_k_m", .n_threads = 0};
    return p;
}

static const qtype *find_qtype(const char *s)
{
    for (size_t i = 0; i < N_QTYPES; i++)
        if (!strcasecmp(s, QTYPES[i].name))
            return &QTYPES[i];
    return NULL;
}

static bool is_float_type(uint32_t t)
{
    return t == ORC_DT_F32 || t == ORC_DT_F16 || t == ORC_DT_BF16;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Layer number of "blk.N.*", or -1. */
static int layer_of(const char *name)
{
    if (strncmp(name, "blk.", 4))
        return -1;
    char *end;
    long v = strtol(name + 4, &end, 10);
    return (end != name + 4 && *end == '.' && v >= 0 && v < 1 << 20) ? (int)v : -1;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and every third one
 * in between get more bits. */
static bool use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* Whether a tensor is a weight matrix the recipe converts at all (llama.cpp's rules:
 * names ending in "weight", at least 2-D, not the MoE router). */
static bool is_weight_matrix(const gguf_tensor *t)
{
    return t->n_dims >= 2 && ends_with(t->name, "weight") && !strstr(t->name, "ffn_gate_inp") &&
           !strstr(t->name, "_norm");
}

/* The type a weight matrix that the recipe wants as `want` actually gets when its row
 * length does not fit want's block: llama.cpp's fallbacks, then F16. */
static uint32_t fit_type(uint32_t want, int64_t ne0)
{
    const orc_dtype_info *ti = orc_dtype_get(want);
    if (ne0 % ti->blck == 0)
        return want;
    uint32_t alt;
    switch (want) {
    case ORC_DT_Q4_K: alt = ORC_DT_Q5_0; break;
    case ORC_DT_Q5_K: alt = ORC_DT_Q5_1; break;
    case ORC_DT_Q6_K: alt = ORC_DT_Q8_0; break;
    case ORC_DT_Q2_K: case ORC_DT_Q3_K: case ORC_DT_IQ4_XS: alt = ORC_DT_IQ4_NL; break;
    default: alt = ORC_DT_F16; break;
    }
    if (ne0 % orc_dtype_get(alt)->blck == 0)
        return alt;
    return ORC_DT_F16;
}

typedef struct {
    int n_attn_v, n_ffn_down; /* counts of those tensors, for use_more_bits */
    int n_head, n_head_kv;
    bool has_output;
} model_shape;

/* The recipe: the target type of one tensor. */
static uint32_t pick_type(const qtype *q, const gguf_tensor *t, const model_shape *ms)
{
    if (!is_weight_matrix(t))
        return is_float_type(t->type) ? ORC_DT_F32 : t->type;
    uint32_t want = q->type;
    bool quantized = !is_float_type(q->type);
    bool is_output = !strcmp(t->name, "output.weight") ||
                     (!ms->has_output && !strcmp(t->name, "token_embd.weight"));
    if (quantized && is_output) {
        /* llama.cpp: Q6_K for the output matrix unless the type is Q8_0 already; Q8_0 when
         * rows do not fit 256-element blocks */
        if (want != ORC_DT_Q8_0)
            want = t->ne[0] % 256 == 0 ? ORC_DT_Q6_K : ORC_DT_Q8_0;
    } else if (q->kind == R_K_M) {
        int il = layer_of(t->name);
        if (strstr(t->name, "attn_v.weight") && il >= 0 && use_more_bits(il, ms->n_attn_v))
            want = ORC_DT_Q6_K;
        else if (strstr(t->name, "ffn_down") && il >= 0 && use_more_bits(il, ms->n_ffn_down))
            want = ORC_DT_Q6_K;
    } else if (q->type == ORC_DT_IQ4_NL && strstr(t->name, "attn_v.weight") && ms->n_head_kv > 0 &&
               ms->n_head / ms->n_head_kv >= 4) {
        want = ORC_DT_Q5_K;
    }
    return fit_type(want, t->ne[0]);
}

/* ---- conversion ------------------------------------------------------------------------ */

typedef struct {
    const gguf_tensor *src;
    uint32_t dst_type;
    size_t src_row, dst_row;
    int64_t n_rows;
    tp_pool *pool;
    uint8_t *buf;     /* dst rows of one chunk */
    float **scratch;  /* one row of floats per thread */
    int64_t r0, r1;   /* rows of the current chunk */
    bool bad;         /* a quantizer refused a row (should not happen after fit_type) */
} conv_job;

static void conv_rows(void *arg, int ith, int nth)
{
    conv_job *j = arg;
    long lo, hi;
    tp_split((long)(j->r1 - j->r0), ith, nth, 1, &lo, &hi);
    int64_t n = j->src->ne[0];
    float *row = j->scratch[ith];
    for (long r = lo; r < hi; r++) {
        const uint8_t *s = (const uint8_t *)j->src->data + (size_t)(j->r0 + r) * j->src_row;
        if (j->src->type == ORC_DT_F32)
            memcpy(row, s, (size_t)n * sizeof *row);
        else
            orc_dequant_row(j->src->type, s, row, n);
        if (orc_quantize_row(j->dst_type, row, j->buf + (size_t)r * j->dst_row, n) != j->dst_row)
            j->bad = true;
    }
}

static orc_status conv_fill(void *user, gguf_sink *sink)
{
    conv_job *j = user;
    if (j->src->type == j->dst_type)
        return gguf_sink_write(sink, j->src->data, j->src->nbytes) ? ORC_OK : ORC_ERR_IO;
    int64_t per = CHUNK_ELEMS / j->src->ne[0];
    if (per < 1)
        per = 1;
    if (per > j->n_rows)
        per = j->n_rows;
    for (int64_t r0 = 0; r0 < j->n_rows; r0 += per) {
        j->r0 = r0;
        j->r1 = r0 + per < j->n_rows ? r0 + per : j->n_rows;
        if (j->r1 - j->r0 >= 4 * tp_n_threads(j->pool))
            tp_run(j->pool, conv_rows, j);
        else
            conv_rows(j, 0, 1);
        if (j->bad)
            return orc_fail(ORC_ERR_INTERNAL, "%s: quantizing to %s failed", j->src->name,
                            orc_dtype_name(j->dst_type));
        if (!gguf_sink_write(sink, j->buf, (size_t)(j->r1 - j->r0) * j->dst_row))
            return ORC_ERR_IO;
    }
    return ORC_OK;
}

orc_status orc_model_quantize(const char *in_path, const char *out_path,
                              const orc_quantize_params *params)
{
    orc_quantize_params p = params ? *params : orc_quantize_default_params();
    if (!in_path || !out_path)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_model_quantize: in_path and out_path are required");
    const char *tname = p.type ? p.type : "q4_k_m";
    const qtype *q = find_qtype(tname);
    if (!q) {
        char list[256] = "";
        for (size_t i = 0; i < N_QTYPES; i++) {
            strcat(list, i ? ", " : "");
            strcat(list, QTYPES[i].name);
        }
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "unknown quantization type '%.64s' (expected one of: %s)",
                        tname, list);
    }
    if (p.n_threads < 0 || p.n_threads > 1024)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_model_quantize: n_threads %d out of range",
                        p.n_threads);
    int nt = p.n_threads > 0 ? p.n_threads : orc_n_cpus();

    FILE *probe = fopen(in_path, "rb");
    if (!probe)
        return orc_fail(ORC_ERR_IO, "cannot open '%s': %s", in_path, strerror(errno));
    fclose(probe);
    char err[512];
    gguf_ctx *g = gguf_open(in_path, true, err, sizeof err);
    if (!g)
        return orc_fail(ORC_ERR_FORMAT, "%s", err);

    orc_status st = ORC_OK;
    gguf_writer *w = gguf_writer_new();
    tp_pool *pool = tp_new(nt);
    int64_t n_t = gguf_n_tensors(g);
    conv_job *jobs = calloc((size_t)(n_t > 0 ? n_t : 1), sizeof *jobs);
    float **scratch = calloc((size_t)nt, sizeof *scratch);
    uint8_t *buf = NULL;
    if (!w || !pool || !jobs || !scratch) {
        st = orc_fail(ORC_ERR_NO_MEMORY, "orc_model_quantize: out of memory");
        goto done;
    }

    model_shape ms = {0};
    int64_t max_ne0 = 1;
    size_t max_chunk = 0;
    for (int64_t i = 0; i < n_t; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        ms.n_attn_v += strstr(t->name, "attn_v.weight") != NULL;
        ms.n_ffn_down += strstr(t->name, "ffn_down") != NULL && ends_with(t->name, "weight");
        ms.has_output |= !strcmp(t->name, "output.weight");
    }
    gguf_str arch;
    if (gguf_get_str(g, "general.architecture", &arch) && arch.n < 64) {
        char key[128];
        uint32_t v;
        snprintf(key, sizeof key, "%.*s.attention.head_count", (int)arch.n, arch.p);
        ms.n_head = gguf_get_u32(g, key, &v) ? (int)v : 0;
        snprintf(key, sizeof key, "%.*s.attention.head_count_kv", (int)arch.n, arch.p);
        ms.n_head_kv = gguf_get_u32(g, key, &v) ? (int)v : ms.n_head;
    }

    /* metadata: everything, then the file type */
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const gguf_kv *kv = gguf_kv_at(g, i);
        if (!gguf_writer_set_value(w, kv->key, &kv->val)) {
            st = ORC_ERR_NO_MEMORY;
            goto done;
        }
    }
    if (!gguf_writer_set_u32(w, "general.file_type", q->ftype) ||
        (!is_float_type(q->type) && !gguf_writer_set_u32(w, "general.quantization_version", 2))) {
        st = ORC_ERR_NO_MEMORY;
        goto done;
    }

    for (int64_t i = 0; i < n_t; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        conv_job *j = &jobs[i];
        j->src = t;
        j->dst_type = pick_type(q, t, &ms);
        j->n_rows = (int64_t)(t->nbytes / orc_dtype_row_size(t->type, t->ne[0]));
        j->src_row = orc_dtype_row_size(t->type, t->ne[0]);
        j->dst_row = orc_dtype_row_size(j->dst_type, t->ne[0]);
        j->pool = pool;
        j->scratch = scratch;
        if (j->dst_type != t->type) {
            if (!orc_quant_supported(t->type)) {
                st = orc_fail(ORC_ERR_UNSUPPORTED, "%s: cannot convert from type %s", t->name,
                              orc_dtype_name(t->type));
                goto done;
            }
            int64_t per = CHUNK_ELEMS / t->ne[0];
            per = per < 1 ? 1 : (per > j->n_rows ? j->n_rows : per);
            size_t c = (size_t)per * j->dst_row;
            max_chunk = c > max_chunk ? c : max_chunk;
            max_ne0 = t->ne[0] > max_ne0 ? t->ne[0] : max_ne0;
        }
        if (!gguf_writer_add_tensor_cb(w, t->name, j->dst_type, t->n_dims, t->ne, conv_fill, j)) {
            st = ORC_ERR_INVALID_ARGUMENT;
            goto done;
        }
    }
    buf = malloc(max_chunk ? max_chunk : 1);
    if (!buf) {
        st = orc_fail(ORC_ERR_NO_MEMORY, "orc_model_quantize: out of memory for %zu bytes", max_chunk);
        goto done;
    }
    for (int k = 0; k < nt; k++)
        if (!(scratch[k] = malloc((size_t)max_ne0 * sizeof(float)))) {
            st = orc_fail(ORC_ERR_NO_MEMORY, "orc_model_quantize: out of memory");
            goto done;
        }
    for (int64_t i = 0; i < n_t; i++)
        jobs[i].buf = buf;
    st = gguf_writer_write(w, out_path);

done:
    if (scratch)
        for (int k = 0; k < nt; k++)
            free(scratch[k]);
    free(scratch);
    free(buf);
    free(jobs);
    tp_free(pool);
    gguf_writer_free(w);
    gguf_close(g);
    return st;
}
