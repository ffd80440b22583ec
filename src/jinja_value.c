/* jinja_value.c - the Jinja engine's values: arena allocation, strings, lists and
 * insertion-ordered dicts, Python truthiness/equality/ordering, str()/repr() output
 * and json.dumps-compatible serialisation, and conversion from jansson. */
#include "jinja_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */
struct ja_chunk {
    ja_chunk *next;
    size_t size, used;
    max_align_t data[];
};

void ja_init(jarena *a, size_t limit)
{
    a->head = NULL;
    a->used = 0;
    a->limit = limit;
}

void ja_free(jarena *a)
{
    ja_chunk *c = a->head;
    while (c) {
        ja_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->used = 0;
}

void *ja_alloc(jarena *a, size_t n)
{
    size_t al = sizeof(max_align_t);
    if (n > a->limit)
        return NULL;
    n = (n + al - 1) / al * al;
    if (n == 0)
        n = al;
    ja_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t sz = 16384;
        if (n > sz / 4)
            sz = n; /* big blocks get a chunk of their own */
        if (a->used + sz > a->limit)
            return NULL;
        ja_chunk *nc = malloc(sizeof(ja_chunk) + sz);
        if (!nc)
            return NULL;
        nc->size = sz;
        nc->used = 0;
        a->used += sz;
        if (c && sz == n && c->size - c->used >= 1024) {
            /* keep allocating from the current chunk: put the big one behind it */
            nc->next = c->next;
            c->next = nc;
            nc->used = n;
            memset(nc->data, 0, n);
            return nc->data;
        }
        nc->next = c;
        a->head = nc;
        c = nc;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static void *xalloc(jctx *c, size_t n)
{
    void *p = ja_alloc(c->ar, n);
    if (!p)
        jx_fail(c, 0, "MemoryError", "template memory limit exceeded");
    return p;
}

static size_t xmul(jctx *c, size_t a, size_t b)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        jx_fail(c, 0, "MemoryError", "size overflow");
    return r;
}

/* ---- strings ---- */
jstr *js_new(jctx *c, const char *s, size_t n)
{
    if (n > (size_t)1 << 40)
        jx_fail(c, 0, "MemoryError", "string too large");
    jstr *r = xalloc(c, sizeof(jstr) + n + 1);
    r->len = n;
    r->ascii = -1;
    if (n && s)
        memcpy(r->s, s, n);
    r->s[n] = 0;
    if (s)
        jstr_is_ascii(r); /* computed now: template literals are shared by concurrent renders */
    return r;
}

jstr *js_cstr(jctx *c, const char *s) { return js_new(c, s, strlen(s)); }

bool jstr_is_ascii(jstr *s)
{
    if (s->ascii < 0) {
        int a = 1;
        for (size_t i = 0; i < s->len; i++)
            if ((unsigned char)s->s[i] >= 0x80) {
                a = 0;
                break;
            }
        s->ascii = a;
    }
    return s->ascii == 1;
}

size_t jstr_cplen(jstr *s)
{
    if (jstr_is_ascii(s))
        return s->len;
    size_t n = 0;
    for (size_t i = 0; i < s->len; i++)
        if (((unsigned char)s->s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

jv jv_str(jstr *s)
{
    jv v = {.t = JV_STR};
    v.u.s = s;
    return v;
}
jv jv_strn(jctx *c, const char *s, size_t n) { return jv_str(js_new(c, s, n)); }
jv jv_int(int64_t i)
{
    jv v = {.t = JV_INT};
    v.u.i = i;
    return v;
}
jv jv_float(double f)
{
    jv v = {.t = JV_FLOAT};
    v.u.f = f;
    return v;
}
jv jv_bool(int b)
{
    jv v = {.t = JV_BOOL};
    v.u.b = b != 0;
    return v;
}
jv jv_none(void)
{
    jv v = {.t = JV_NONE};
    return v;
}
jv jv_undef(const char *msg)
{
    jv v = {.t = JV_UNDEF};
    v.u.undef = msg;
    return v;
}

/* ---- lists and dicts ---- */
jlist *jl_new(jctx *c, size_t cap)
{
    jlist *l = xalloc(c, sizeof(jlist));
    if (cap) {
        l->v = xalloc(c, xmul(c, cap, sizeof(jv)));
        l->cap = cap;
    }
    return l;
}

void jl_push(jctx *c, jlist *l, jv v)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        jv *nv = xalloc(c, xmul(c, nc, sizeof(jv)));
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof(jv));
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = v;
}

jv jv_list(jlist *l)
{
    jv v = {.t = JV_LIST};
    v.u.l = l;
    return v;
}

jdict *jd_new(jctx *c, size_t cap)
{
    jdict *d = xalloc(c, sizeof(jdict));
    if (cap) {
        d->k = xalloc(c, xmul(c, cap, sizeof(jv)));
        d->v = xalloc(c, xmul(c, cap, sizeof(jv)));
        d->cap = cap;
    }
    return d;
}

jv *jd_gets(const jdict *d, const char *key, size_t klen)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].u.s->len == klen && !memcmp(d->k[i].u.s->s, key, klen))
            return &d->v[i];
    return NULL;
}

jv *jd_get(const jdict *d, jv key)
{
    if (key.t == JV_STR)
        return jd_gets(d, key.u.s->s, key.u.s->len);
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], key))
            return &d->v[i];
    return NULL;
}

void jd_set(jctx *c, jdict *d, jv key, jv val)
{
    jv *p = jd_get(d, key);
    if (p) {
        *p = val;
        return;
    }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 4;
        jv *nk = xalloc(c, xmul(c, nc, sizeof(jv)));
        jv *nv = xalloc(c, xmul(c, nc, sizeof(jv)));
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(jv));
            memcpy(nv, d->v, d->n * sizeof(jv));
        }
        d->k = nk;
        d->v = nv;
        d->cap = nc;
    }
    d->k[d->n] = key;
    d->v[d->n] = val;
    d->n++;
}

jv jv_dict(jdict *d)
{
    jv v = {.t = JV_DICT};
    v.u.d = d;
    return v;
}

/* ---- Python semantics ---- */
bool jv_truthy(jv v)
{
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s->len > 0;
    case JV_LIST: return v.u.l->n > 0 || (v.u.l->flags & JL_GENERATOR); /* generator objects are truthy */
    case JV_DICT: return v.u.d->n > 0;
    default: return true;
    }
}

static bool is_num(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static double num_f(jv v)
{
    return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b;
}
static int64_t num_i(jv v) { return v.t == JV_INT ? v.u.i : (int64_t)v.u.b; }

bool jv_equal(jv a, jv b)
{
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT)
            return num_f(a) == num_f(b);
        return num_i(a) == num_i(b);
    }
    if (a.t != b.t)
        return false;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a.u.s->len == b.u.s->len && !memcmp(a.u.s->s, b.u.s->s, a.u.s->len);
    case JV_LIST:
        if (a.u.l == b.u.l)
            return true;
        if (a.u.l->n != b.u.l->n || (a.u.l->flags & JL_TUPLE) != (b.u.l->flags & JL_TUPLE))
            return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jv_equal(a.u.l->v[i], b.u.l->v[i]))
                return false;
        return true;
    case JV_DICT:
        if (a.u.d == b.u.d)
            return true;
        if (a.u.d->n != b.u.d->n)
            return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv *o = jd_get(b.u.d, a.u.d->k[i]);
            if (!o || !jv_equal(a.u.d->v[i], *o))
                return false;
        }
        return true;
    case JV_NS: return a.u.d == b.u.d;
    case JV_MACRO: return a.u.m == b.u.m;
    case JV_BUILTIN: return a.u.builtin == b.u.builtin;
    default: return a.u.bound == b.u.bound;
    }
}

const char *jv_typename(jv v)
{
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST:
        if (v.u.l->flags & JL_GENERATOR)
            return "generator";
        if (v.u.l->flags & JL_RANGE)
            return "range";
        if (v.u.l->flags & JL_ITEMS)
            return "dict_items";
        if (v.u.l->flags & JL_KEYS)
            return "dict_keys";
        if (v.u.l->flags & JL_VALUES)
            return "dict_values";
        return (v.u.l->flags & JL_TUPLE) ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_MACRO: return "Macro";
    case JV_LOOP: return "LoopContext";
    default: return "function";
    }
}

int jv_compare(jctx *c, uint32_t pos, jv a, jv b)
{
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) {
            double x = num_f(a), y = num_f(b);
            return x < y ? -1 : x > y ? 1 : 0;
        }
        int64_t x = num_i(a), y = num_i(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
        int r = memcmp(a.u.s->s, b.u.s->s, n);
        if (r)
            return r < 0 ? -1 : 1;
        return a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len ? 1 : 0;
    }
    if (a.t == JV_LIST && b.t == JV_LIST) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i]))
                continue;
            return jv_compare(c, pos, a.u.l->v[i], b.u.l->v[i]);
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n ? 1 : 0;
    }
    jx_fail(c, pos, "TypeError", "'<' not supported between instances of '%s' and '%s'",
            jv_typename(a), jv_typename(b));
}

/* ---- output buffers ---- */
void jb_put(jctx *c, jbuf *b, const char *s, size_t n)
{
    if (!n)
        return;
    if (b->cap - b->n <= n) {
        size_t need;
        if (__builtin_add_overflow(b->n, n + 1, &need) || need > c->max_output + 1)
            jx_fail(c, 0, "MemoryError", "output size limit (%zu bytes) exceeded", c->max_output);
        size_t nc = b->cap ? b->cap : 64;
        while (nc < need)
            nc *= 2;
        if (b->heap) {
            char *np = realloc(b->p, nc);
            if (!np)
                jx_fail(c, 0, "MemoryError", "out of memory");
            b->p = np;
        } else {
            char *np = xalloc(c, nc);
            if (b->n)
                memcpy(np, b->p, b->n);
            b->p = np;
        }
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void jb_puts(jctx *c, jbuf *b, const char *s) { jb_put(c, b, s, strlen(s)); }

/* Python float repr: shortest round-trip digits, fixed for 1e-4 <= |x| < 1e16. */
void jv_write_float(jbuf *b, jctx *c, double f)
{
    if (isnan(f)) {
        jb_puts(c, b, "nan");
        return;
    }
    if (isinf(f)) {
        jb_puts(c, b, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    /* tmp: [-]d[.ddd]e[+-]XX */
    char digits[32];
    int nd = 0;
    const char *p = tmp;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    int e = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    char out[64];
    int o = 0;
    if (neg)
        out[o++] = '-';
    if (e >= -5 + 1 && e < 16) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++)
                out[o++] = i < nd ? digits[i] : '0';
            out[o++] = '.';
            if (nd > e + 1)
                for (int i = e + 1; i < nd; i++)
                    out[o++] = digits[i];
            else
                out[o++] = '0';
        } else {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -e - 1; i++)
                out[o++] = '0';
            for (int i = 0; i < nd; i++)
                out[o++] = digits[i];
        }
        out[o] = 0;
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++)
                out[o++] = digits[i];
        }
        snprintf(out + o, sizeof out - (size_t)o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    jb_puts(c, b, out);
}

static void write_int(jctx *c, jbuf *b, int64_t i)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", (long long)i);
    jb_puts(c, b, tmp);
}

static uint32_t utf8_dec(const unsigned char *s, size_t n, size_t *adv)
{
    unsigned char c0 = s[0];
    uint32_t cp;
    size_t k;
    if (c0 < 0x80) {
        *adv = 1;
        return c0;
    } else if ((c0 & 0xE0) == 0xC0) {
        cp = c0 & 0x1F;
        k = 1;
    } else if ((c0 & 0xF0) == 0xE0) {
        cp = c0 & 0x0F;
        k = 2;
    } else if ((c0 & 0xF8) == 0xF0) {
        cp = c0 & 0x07;
        k = 3;
    } else {
        *adv = 1;
        return 0xFFFD;
    }
    if (k >= n) {
        *adv = 1;
        return 0xFFFD;
    }
    for (size_t i = 1; i <= k; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *adv = 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *adv = k + 1;
    return cp;
}

static void write_repr_str(jctx *c, jbuf *b, jstr *s)
{
    bool has_sq = memchr(s->s, '\'', s->len) != NULL;
    bool has_dq = memchr(s->s, '"', s->len) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    jb_put(c, b, &q, 1);
    size_t start = 0;
    for (size_t i = 0; i < s->len;) {
        unsigned char ch = (unsigned char)s->s[i];
        const char *esc = NULL;
        char tmp[8];
        size_t adv = 1;
        if (ch == '\\')
            esc = "\\\\";
        else if (ch == (unsigned char)q)
            esc = q == '\'' ? "\\'" : "\\\"";
        else if (ch == '\n')
            esc = "\\n";
        else if (ch == '\r')
            esc = "\\r";
        else if (ch == '\t')
            esc = "\\t";
        else if (ch < 0x20 || ch == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", ch);
            esc = tmp;
        } else if (ch >= 0x80) {
            uint32_t cp = utf8_dec((const unsigned char *)s->s + i, s->len - i, &adv);
            if (cp >= 0x80 && cp < 0xA0) {
                snprintf(tmp, sizeof tmp, "\\x%02x", (unsigned)cp);
                esc = tmp;
            }
        }
        if (esc) {
            jb_put(c, b, s->s + start, i - start);
            jb_puts(c, b, esc);
            start = i + adv;
        }
        i += adv;
    }
    jb_put(c, b, s->s + start, s->len - start);
    jb_put(c, b, &q, 1);
}

static void write_any(jctx *c, jbuf *b, jv v, bool repr, int depth)
{
    if (depth > 200)
        jx_fail(c, 0, "RecursionError", "value nested too deeply");
    switch (v.t) {
    case JV_UNDEF:
        if (repr)
            jb_puts(c, b, "Undefined");
        return;
    case JV_NONE: jb_puts(c, b, "None"); return;
    case JV_BOOL: jb_puts(c, b, v.u.b ? "True" : "False"); return;
    case JV_INT: write_int(c, b, v.u.i); return;
    case JV_FLOAT: jv_write_float(b, c, v.u.f); return;
    case JV_STR:
        if (repr)
            write_repr_str(c, b, v.u.s);
        else
            jb_put(c, b, v.u.s->s, v.u.s->len);
        return;
    case JV_LIST: {
        if (v.u.l->flags & JL_GENERATOR) {
            jb_puts(c, b, "<generator object>");
            return;
        }
        if (v.u.l->flags & JL_RANGE) {
            jlist *l = v.u.l;
            int64_t st = l->n ? l->v[0].u.i : 0, step = l->n > 1 ? l->v[1].u.i - l->v[0].u.i : 1;
            int64_t stop = l->range_stop;
            char tmp[96];
            if (step == 1)
                snprintf(tmp, sizeof tmp, "range(%lld, %lld)", (long long)st, (long long)stop);
            else
                snprintf(tmp, sizeof tmp, "range(%lld, %lld, %lld)", (long long)st, (long long)stop, (long long)step);
            jb_puts(c, b, tmp);
            return;
        }
        if (v.u.l->flags & (JL_ITEMS | JL_KEYS | JL_VALUES)) {
            jb_puts(c, b, jv_typename(v));
            jb_puts(c, b, "(");
            jlist tmp = *v.u.l;
            tmp.flags = 0;
            jv inner = {.t = JV_LIST};
            inner.u.l = &tmp;
            write_any(c, b, inner, true, depth + 1);
            jb_puts(c, b, ")");
            return;
        }
        bool tup = v.u.l->flags & JL_TUPLE;
        jb_puts(c, b, tup ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                jb_puts(c, b, ", ");
            write_any(c, b, v.u.l->v[i], true, depth + 1);
        }
        if (tup && v.u.l->n == 1)
            jb_puts(c, b, ",");
        jb_puts(c, b, tup ? ")" : "]");
        return;
    }
    case JV_NS:
        jb_puts(c, b, "<Namespace ");
        /* fallthrough */
    case JV_DICT:
        jb_puts(c, b, "{");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i)
                jb_puts(c, b, ", ");
            write_any(c, b, v.u.d->k[i], true, depth + 1);
            jb_puts(c, b, ": ");
            write_any(c, b, v.u.d->v[i], true, depth + 1);
        }
        jb_puts(c, b, "}");
        if (v.t == JV_NS)
            jb_puts(c, b, ">");
        return;
    case JV_MACRO: jb_puts(c, b, "<Macro>"); return;
    case JV_LOOP: jb_puts(c, b, "<LoopContext>"); return;
    default: jb_puts(c, b, "<function>"); return;
    }
}

void jv_write_str(jctx *c, jbuf *b, jv v) { write_any(c, b, v, false, 0); }
void jv_write_repr(jctx *c, jbuf *b, jv v) { write_any(c, b, v, true, 0); }

jstr *jv_to_str(jctx *c, jv v)
{
    if (v.t == JV_STR)
        return v.u.s;
    jbuf b = {0};
    jv_write_str(c, &b, v);
    return js_new(c, b.p ? b.p : "", b.n);
}

/* ---- json.dumps ---- */
static void json_str(jctx *c, jbuf *b, const char *s, size_t n, bool ensure_ascii)
{
    jb_puts(c, b, "\"");
    size_t start = 0;
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[16];
        size_t adv = 1;
        switch (ch) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (ch < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", ch);
                esc = tmp;
            } else if (ch >= 0x80 && ensure_ascii) {
                uint32_t cp = utf8_dec((const unsigned char *)s + i, n - i, &adv);
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
                } else {
                    snprintf(tmp, sizeof tmp, "\\u%04x", cp);
                }
                esc = tmp;
            }
        }
        if (esc) {
            jb_put(c, b, s + start, i - start);
            jb_puts(c, b, esc);
            start = i + adv;
        }
        i += adv;
    }
    jb_put(c, b, s + start, n - start);
    jb_puts(c, b, "\"");
}

static void json_nl(jctx *c, jbuf *b, int indent, int level)
{
    jb_puts(c, b, "\n");
    for (int i = 0; i < indent * level; i++)
        jb_puts(c, b, " ");
}

static int cmp_keys(const void *x, const void *y, void *ctx)
{
    const jv *a = x, *b = y;
    (void)ctx;
    if (a->t == JV_STR && b->t == JV_STR) {
        size_t n = a->u.s->len < b->u.s->len ? a->u.s->len : b->u.s->len;
        int r = memcmp(a->u.s->s, b->u.s->s, n);
        if (r)
            return r;
        return a->u.s->len < b->u.s->len ? -1 : a->u.s->len > b->u.s->len;
    }
    return 0;
}

void jv_write_json(jctx *c, jbuf *b, jv v, bool ensure_ascii, int indent, const char *item_sep,
                   const char *key_sep, bool sort_keys, int level, uint32_t pos)
{
    if (level > 200)
        jx_fail(c, pos, "RecursionError", "value nested too deeply for tojson");
    switch (v.t) {
    case JV_NONE: jb_puts(c, b, "null"); return;
    case JV_BOOL: jb_puts(c, b, v.u.b ? "true" : "false"); return;
    case JV_INT: write_int(c, b, v.u.i); return;
    case JV_FLOAT:
        if (isnan(v.u.f))
            jb_puts(c, b, "NaN");
        else if (isinf(v.u.f))
            jb_puts(c, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else
            jv_write_float(b, c, v.u.f);
        return;
    case JV_STR: json_str(c, b, v.u.s->s, v.u.s->len, ensure_ascii); return;
    case JV_LIST:
        if (!(v.u.l->flags & JL_SPECIAL)) {
            if (v.u.l->n == 0) {
                jb_puts(c, b, "[]");
                return;
            }
            jb_puts(c, b, "[");
            for (size_t i = 0; i < v.u.l->n; i++) {
                if (i)
                    jb_puts(c, b, item_sep);
                if (indent >= 0)
                    json_nl(c, b, indent, level + 1);
                jv_write_json(c, b, v.u.l->v[i], ensure_ascii, indent, item_sep, key_sep, sort_keys,
                              level + 1, pos);
            }
            if (indent >= 0)
                json_nl(c, b, indent, level);
            jb_puts(c, b, "]");
            return;
        }
        break;
    case JV_DICT: {
        jdict *d = v.u.d;
        if (d->n == 0) {
            jb_puts(c, b, "{}");
            return;
        }
        size_t *order = NULL;
        jv *keys = d->k;
        if (sort_keys) {
            keys = ja_alloc(c->ar, d->n * sizeof(jv));
            if (!keys)
                jx_fail(c, pos, "MemoryError", "template memory limit exceeded");
            memcpy(keys, d->k, d->n * sizeof(jv));
            qsort_r(keys, d->n, sizeof(jv), cmp_keys, NULL);
        }
        (void)order;
        jb_puts(c, b, "{");
        for (size_t i = 0; i < d->n; i++) {
            jv k = keys[i];
            jv val = sort_keys ? *jd_get(d, k) : d->v[i];
            if (i)
                jb_puts(c, b, item_sep);
            if (indent >= 0)
                json_nl(c, b, indent, level + 1);
            if (k.t == JV_STR) {
                json_str(c, b, k.u.s->s, k.u.s->len, ensure_ascii);
            } else if (k.t == JV_INT || k.t == JV_FLOAT || k.t == JV_BOOL || k.t == JV_NONE) {
                jbuf kb = {0};
                jv_write_json(c, &kb, k, ensure_ascii, -1, ", ", ": ", false, level + 1, pos);
                json_str(c, b, kb.p, kb.n, ensure_ascii);
            } else {
                jx_fail(c, pos, "TypeError", "keys must be str, int, float, bool or None, not %s",
                        jv_typename(k));
            }
            jb_puts(c, b, key_sep);
            jv_write_json(c, b, val, ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1, pos);
        }
        if (indent >= 0)
            json_nl(c, b, indent, level);
        jb_puts(c, b, "}");
        return;
    }
    default: break;
    }
    jx_fail(c, pos, "TypeError", "Object of type %s is not JSON serializable", jv_typename(v));
}

/* ---- jansson -> values ---- */
static jv from_json_rec(jctx *c, const json_t *j, int depth)
{
    if (depth > 512)
        jx_fail(c, 0, "RecursionError", "context nested too deeply");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jdict *d = jd_new(c, json_object_size(j));
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)j, k, val)
        {
            jd_set(c, d, jv_str(js_cstr(c, k)), from_json_rec(c, val, depth + 1));
        }
        return jv_dict(d);
    }
    case JSON_ARRAY: {
        jlist *l = jl_new(c, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++)
            jl_push(c, l, from_json_rec(c, json_array_get(j, i), depth + 1));
        return jv_list(l);
    }
    case JSON_STRING: return jv_strn(c, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return jv_int(json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_TRUE: return jv_bool(1);
    case JSON_FALSE: return jv_bool(0);
    default: return jv_none();
    }
}

jv jv_from_json(jctx *c, const json_t *j) { return from_json_rec(c, j, 0); }
