/* jinja_eval.c - the interpreter of the Jinja engine: executes the AST against frames of
 * variables, with Python jinja2 semantics for operators, filters, tests, string/dict/list
 * methods, macros and loops, inside limits on depth, iterations, memory and output. */
#include "jinja_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#define FAIL(c, pos, kind, ...) jx_fail((c), (pos), (kind), __VA_ARGS__)

enum { B_RANGE, B_NAMESPACE, B_DICT, B_RAISE, B_STRFTIME, B_CYCLER, B_JOINER, B__COUNT };
static const char *const builtin_names[] = {"range", "namespace", "dict", "raise_exception",
                                            "strftime_now", "cycler", "joiner"};

static jv eval(jctx *c, const jnode *n, jframe *f);
static void exec(jctx *c, const jnode *n, jframe *f);
struct args;
static jv apply_filter(jctx *c, const jnode *n, jv v, struct args *a, struct jframe *f);

static void *xalloc(jctx *c, size_t n)
{
    void *p = ja_alloc(c->ar, n);
    if (!p)
        FAIL(c, 0, "MemoryError", "template memory limit exceeded");
    return p;
}

static char *xfmt(jctx *c, const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 1;
    char *s = xalloc(c, n);
    snprintf(s, n, fmt, a, b ? b : "");
    return s;
}

static const char *obj_name(jv v)
{
    switch (v.t) {
    case JV_DICT: return "dict object";
    case JV_LIST: return (v.u.l->flags & JL_TUPLE) ? "tuple object" : "list object";
    case JV_STR: return "str object";
    case JV_INT: return "int object";
    case JV_FLOAT: return "float object";
    case JV_BOOL: return "bool object";
    case JV_NONE: return "None";
    case JV_NS: return "Namespace";
    default: return "object";
    }
}

static _Noreturn void undef_fail(jctx *c, uint32_t pos, jv v)
{
    FAIL(c, pos, "UndefinedError", "%s", v.u.undef ? v.u.undef : "value is undefined");
}

/* ---- frames ---- */
static jframe *frame_new(jctx *c, jframe *parent)
{
    jframe *f = xalloc(c, sizeof(jframe));
    f->parent = parent;
    return f;
}

static jv *frame_find(jframe *f, const char *name)
{
    for (; f; f = f->parent)
        for (int i = 0; i < f->n; i++)
            if (f->names[i] == name || !strcmp(f->names[i], name))
                return &f->vals[i];
    return NULL;
}

static void frame_set(jctx *c, jframe *f, const char *name, jv v)
{
    for (int i = 0; i < f->n; i++)
        if (f->names[i] == name || !strcmp(f->names[i], name)) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        int nc = f->cap ? f->cap * 2 : 8;
        const char **nn = xalloc(c, sizeof(char *) * (size_t)nc);
        jv *nv = xalloc(c, sizeof(jv) * (size_t)nc);
        if (f->n) {
            memcpy(nn, f->names, sizeof(char *) * (size_t)f->n);
            memcpy(nv, f->vals, sizeof(jv) * (size_t)f->n);
        }
        f->names = nn;
        f->vals = nv;
        f->cap = nc;
    }
    f->names[f->n] = name;
    f->vals[f->n] = v;
    f->n++;
}

/* ---- small helpers ---- */
static jv mkstr(jctx *c, const char *s, size_t n) { return jv_strn(c, s, n); }
static jv mkcstr(jctx *c, const char *s) { return jv_strn(c, s, strlen(s)); }

static jv tuple2(jctx *c, jv a, jv b)
{
    jlist *l = jl_new(c, 2);
    l->flags = JL_TUPLE;
    jl_push(c, l, a);
    jl_push(c, l, b);
    return jv_list(l);
}

static uint32_t dec_cp(const char *s, size_t n, size_t *adv)
{
    utf8proc_int32_t cp;
    utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (r <= 0) {
        *adv = 1;
        return 0xFFFD;
    }
    *adv = (size_t)r;
    return (uint32_t)cp;
}

static void put_cp(jctx *c, jbuf *b, uint32_t cp)
{
    utf8proc_uint8_t tmp[8];
    utf8proc_ssize_t n = utf8proc_encode_char((utf8proc_int32_t)cp, tmp);
    jb_put(c, b, (const char *)tmp, (size_t)n);
}

static bool py_space(uint32_t cp)
{
    return cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f) || cp == 0x85 ||
           cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* byte offsets of code points [i] for non-ASCII slicing */
static size_t *cp_offsets(jctx *c, jstr *s, size_t *ncp)
{
    size_t n = jstr_cplen(s);
    size_t *off = xalloc(c, (n + 1) * sizeof(size_t));
    size_t k = 0;
    for (size_t i = 0; i < s->len; i++)
        if (((unsigned char)s->s[i] & 0xC0) != 0x80)
            off[k++] = i;
    off[n] = s->len;
    *ncp = n;
    return off;
}

/* list of what iterating v yields (dict: keys, str: characters) */
/* A generator whose source fails when it is consumed (Python generators are lazy). */
static bool iterable(jv v) { return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF; }

static jv poisoned(jctx *c, const char *kind, const char *msg)
{
    jlist *l = jl_new(c, 0);
    l->flags = JL_GENERATOR;
    l->poison_kind = kind;
    l->poison = msg;
    return jv_list(l);
}

static jlist *iter_list(jctx *c, uint32_t pos, jv v)
{
    switch (v.t) {
    case JV_LIST:
        if (v.u.l->poison)
            FAIL(c, pos, v.u.l->poison_kind, "%s", v.u.l->poison);
        if (v.u.l->flags & JL_GENERATOR) {
            /* a Python generator is exhausted by iterating it */
            jlist *r = jl_new(c, 0);
            *r = *v.u.l;
            v.u.l->n = 0;
            v.u.l->cap = 0;
            v.u.l->v = NULL;
            return r;
        }
        return v.u.l;
    case JV_UNDEF: return jl_new(c, 0);
    case JV_DICT:
    case JV_NS: {
        jlist *l = jl_new(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++)
            jl_push(c, l, v.u.d->k[i]);
        return l;
    }
    case JV_STR: {
        jstr *s = v.u.s;
        jlist *l = jl_new(c, s->len);
        for (size_t i = 0; i < s->len;) {
            size_t adv;
            dec_cp(s->s + i, s->len - i, &adv);
            if (i + adv > s->len)
                adv = s->len - i;
            jl_push(c, l, mkstr(c, s->s + i, adv));
            i += adv;
        }
        return l;
    }
    default: FAIL(c, pos, "TypeError", "'%s' object is not iterable", jv_typename(v));
    }
}

static int64_t as_int(jctx *c, uint32_t pos, jv v, const char *what)
{
    if (v.t == JV_INT)
        return v.u.i;
    if (v.t == JV_BOOL)
        return v.u.b;
    FAIL(c, pos, "TypeError", "%s must be an integer, not '%s'", what, jv_typename(v));
}

static jstr *as_str(jctx *c, uint32_t pos, jv v, const char *what)
{
    if (v.t == JV_STR)
        return v.u.s;
    FAIL(c, pos, "TypeError", "%s must be str, not %s", what, jv_typename(v));
}

/* ---- arguments ---- */
struct args {
    int n, nk;
    jv *v;
    const char **kn;
    jv *kv;
};
typedef struct args args;

static args eval_args(jctx *c, const jnode *n, jframe *f)
{
    args a = {0};
    a.n = n->n;
    a.nk = n->n2;
    if (a.n) {
        a.v = xalloc(c, sizeof(jv) * (size_t)a.n);
        for (int i = 0; i < a.n; i++)
            a.v[i] = eval(c, n->list[i], f);
    }
    if (a.nk) {
        a.kv = xalloc(c, sizeof(jv) * (size_t)a.nk);
        a.kn = n->names;
        for (int i = 0; i < a.nk; i++)
            a.kv[i] = eval(c, n->list2[i], f);
    }
    return a;
}

/* Parameter i (positional) or named; NULL if absent. */
static jv *arg(args *a, int i, const char *name)
{
    if (i >= 0 && i < a->n)
        return &a->v[i];
    for (int k = 0; k < a->nk; k++)
        if (!strcmp(a->kn[k], name))
            return &a->kv[k];
    return NULL;
}

/* ---- attributes and items ---- */
static const char *const str_methods[] = {"startswith", "endswith", "split", "rsplit", "strip", "lstrip",
                                          "rstrip", "upper", "lower", "title", "capitalize", "replace",
                                          "format", "find", "rfind", "index", "count", "join", "isdigit",
                                          "isalpha", "isalnum", "isspace", "isupper", "islower",
                                          "splitlines", "swapcase", "zfill", "center", "ljust", "rjust",
                                          "partition", "rpartition", "casefold", "isnumeric", "isdecimal",
                                          "removeprefix", "removesuffix", "expandtabs", "istitle", NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", "copy", NULL};
static const char *const dict_unsafe[] = {"pop", "popitem", "update", "setdefault", "clear", NULL};
static const char *const list_methods[] = {"index", "count", "copy", NULL};
static const char *const list_unsafe[] = {"append", "pop", "insert", "extend", "remove", "clear",
                                          "sort", "reverse", NULL};

static bool in_tab(const char *const *tab, const char *s)
{
    for (int i = 0; tab[i]; i++)
        if (!strcmp(tab[i], s))
            return true;
    return false;
}

static jv bound(jctx *c, jv self, const char *name)
{
    struct jbound *b = xalloc(c, sizeof *b);
    b->self = self;
    b->name = name;
    jv v = {.t = JV_BOUND};
    v.u.bound = b;
    return v;
}

static jv loop_attr(jctx *c, uint32_t pos, struct jloop *l, const char *name);

/* obj.name; method names become bound methods (Python's getattr comes before items) */
static jv get_attr(jctx *c, uint32_t pos, jv obj, const char *name, bool item_first)
{
    switch (obj.t) {
    case JV_UNDEF: undef_fail(c, pos, obj);
    case JV_DICT: {
        if (item_first) {
            jv *p = jd_gets(obj.u.d, name, strlen(name));
            if (p)
                return *p;
        }
        if (in_tab(dict_methods, name))
            return bound(c, obj, name);
        if (in_tab(dict_unsafe, name))
            FAIL(c, pos, "SecurityError", "access to attribute '%s' of 'dict' object is unsafe.", name);
        jv *p = jd_gets(obj.u.d, name, strlen(name));
        if (p)
            return *p;
        break;
    }
    case JV_NS: {
        jv *p = jd_gets(obj.u.d, name, strlen(name));
        if (p)
            return *p;
        break;
    }
    case JV_STR:
        if (in_tab(str_methods, name))
            return bound(c, obj, name);
        break;
    case JV_LIST:
        if (in_tab(list_methods, name))
            return bound(c, obj, name);
        if (in_tab(list_unsafe, name))
            FAIL(c, pos, "SecurityError", "access to attribute '%s' of '%s' object is unsafe.", name,
                 jv_typename(obj));
        break;
    case JV_LOOP: return loop_attr(c, pos, obj.u.loop, name);
    case JV_CYCLER:
        if (!strcmp(name, "next") || !strcmp(name, "reset"))
            return bound(c, obj, name);
        if (!strcmp(name, "current"))
            return obj.u.cyc->items->n ? obj.u.cyc->items->v[obj.u.cyc->pos] : jv_none();
        break;
    default: break;
    }
    return jv_undef(xfmt(c, "'%s' has no attribute '%s'", obj_name(obj), name));
}

static jv slice_val(jctx *c, uint32_t pos, jv obj, jv *st, jv *sp, jv *se)
{
    int64_t step = se && se->t != JV_NONE ? as_int(c, pos, *se, "slice step") : 1;
    if (step == 0)
        FAIL(c, pos, "ValueError", "slice step cannot be zero");
    size_t ncp = 0;
    size_t *off = NULL;
    if (obj.t == JV_STR) {
        if (jstr_is_ascii(obj.u.s))
            ncp = obj.u.s->len;
        else
            off = cp_offsets(c, obj.u.s, &ncp);
    } else if (obj.t == JV_LIST) {
        if (obj.u.l->flags & JL_SPECIAL & ~JL_RANGE)
            FAIL(c, pos, "TypeError", "'%s' object is not subscriptable", jv_typename(obj));
        ncp = obj.u.l->n;
    } else if (obj.t == JV_UNDEF) {
        undef_fail(c, pos, obj);
    } else if (obj.t == JV_DICT) {
        /* jinja2 compiles slices to a plain Python subscript, so errors propagate */
        FAIL(c, pos, "TypeError", "unhashable type: 'slice'");
    } else {
        FAIL(c, pos, "TypeError", "'%s' object is not subscriptable", jv_typename(obj));
    }
    int64_t len = (int64_t)ncp, a, b;
    bool has_a = st && st->t != JV_NONE, has_b = sp && sp->t != JV_NONE;
    if (step > 0) {
        a = has_a ? as_int(c, pos, *st, "slice index") : 0;
        b = has_b ? as_int(c, pos, *sp, "slice index") : len;
        if (a < 0)
            a = a + len < 0 ? 0 : a + len;
        if (a > len)
            a = len;
        if (b < 0)
            b = b + len < 0 ? 0 : b + len;
        if (b > len)
            b = len;
    } else {
        a = has_a ? as_int(c, pos, *st, "slice index") : len - 1;
        b = has_b ? as_int(c, pos, *sp, "slice index") : -1;
        if (has_a) {
            if (a < 0)
                a = a + len < 0 ? -1 : a + len;
            if (a >= len)
                a = len - 1;
        }
        if (has_b) {
            if (b < 0)
                b = b + len < 0 ? -1 : b + len;
            if (b >= len)
                b = len - 1;
        }
    }
    if (obj.t == JV_LIST) {
        jlist *r = jl_new(c, 0);
        r->flags = obj.u.l->flags & JL_TUPLE;
        for (int64_t i = a; step > 0 ? i < b : i > b; i += step)
            jl_push(c, r, obj.u.l->v[i]);
        return jv_list(r);
    }
    jbuf out = {0};
    if (step == 1) {
        if (b <= a)
            return mkstr(c, "", 0);
        size_t s0 = off ? off[a] : (size_t)a, s1 = off ? off[b] : (size_t)b;
        return mkstr(c, obj.u.s->s + s0, s1 - s0);
    }
    for (int64_t i = a; step > 0 ? i < b : i > b; i += step) {
        size_t s0 = off ? off[i] : (size_t)i, s1 = off ? off[i + 1] : (size_t)i + 1;
        jb_put(c, &out, obj.u.s->s + s0, s1 - s0);
    }
    return mkstr(c, out.p ? out.p : "", out.n);
}

static jv get_item(jctx *c, uint32_t pos, jv obj, jv key)
{
    switch (obj.t) {
    case JV_UNDEF: undef_fail(c, pos, obj);
    case JV_DICT:
    case JV_NS: {
        jv *p = jd_get(obj.u.d, key);
        if (p)
            return *p;
        if (key.t == JV_STR && obj.t == JV_DICT)
            return get_attr(c, pos, obj, key.u.s->s, false);
        break;
    }
    case JV_LIST:
    case JV_STR:
        if (obj.t == JV_LIST && (obj.u.l->flags & JL_SPECIAL & ~JL_RANGE))
            return jv_undef(xfmt(c, "'%s' object is not subscriptable", jv_typename(obj), NULL));
        if (key.t == JV_INT || key.t == JV_BOOL) {
            int64_t i = key.t == JV_INT ? key.u.i : key.u.b;
            size_t len = obj.t == JV_LIST ? obj.u.l->n : jstr_cplen(obj.u.s);
            if (i < 0)
                i += (int64_t)len;
            if (i < 0 || (size_t)i >= len)
                return jv_undef(xfmt(c, "'%s' has no element %s", obj_name(obj), "(index out of range)"));
            if (obj.t == JV_LIST)
                return obj.u.l->v[i];
            if (jstr_is_ascii(obj.u.s))
                return mkstr(c, obj.u.s->s + i, 1);
            size_t ncp;
            size_t *off = cp_offsets(c, obj.u.s, &ncp);
            return mkstr(c, obj.u.s->s + off[i], off[i + 1] - off[i]);
        }
        if (key.t == JV_STR)
            return get_attr(c, pos, obj, key.u.s->s, false);
        break;
    case JV_LOOP:
        if (key.t == JV_STR)
            return loop_attr(c, pos, obj.u.loop, key.u.s->s);
        break;
    default: break;
    }
    if (key.t == JV_STR)
        return jv_undef(xfmt(c, "'%s' has no attribute '%s'", obj_name(obj), key.u.s->s));
    return jv_undef(xfmt(c, "'%s' has no element %s", obj_name(obj), "(key)"));
}

/* ---- loop object ---- */
static jv loop_attr(jctx *c, uint32_t pos, struct jloop *l, const char *name)
{
    int64_t n = (int64_t)l->items->n, i = (int64_t)l->idx;
    if (!strcmp(name, "index"))
        return jv_int(i + 1);
    if (!strcmp(name, "index0"))
        return jv_int(i);
    if (!strcmp(name, "revindex"))
        return jv_int(n - i);
    if (!strcmp(name, "revindex0"))
        return jv_int(n - i - 1);
    if (!strcmp(name, "first"))
        return jv_bool(i == 0);
    if (!strcmp(name, "last"))
        return jv_bool(i == n - 1);
    if (!strcmp(name, "length"))
        return jv_int(n);
    if (!strcmp(name, "depth"))
        return jv_int(l->depth);
    if (!strcmp(name, "depth0"))
        return jv_int(l->depth - 1);
    if (!strcmp(name, "previtem"))
        return i > 0 ? l->items->v[i - 1] : jv_undef("there is no previous item");
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? l->items->v[i + 1] : jv_undef("there is no next item");
    if (!strcmp(name, "cycle") || !strcmp(name, "changed")) {
        jv self = {.t = JV_LOOP};
        self.u.loop = l;
        return bound(c, self, name);
    }
    (void)pos;
    return jv_undef(xfmt(c, "'LoopContext' has no attribute '%s'", name, NULL));
}

/* ---- arithmetic ---- */
static bool isnum(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static double fnum(jv v) { return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b; }
static int64_t inum(jv v) { return v.t == JV_INT ? v.u.i : (int64_t)v.u.b; }

static const char *opsym(int op)
{
    static const char *s[] = {"+", "-", "*", "/", "//", "%", "**"};
    return op <= OP_POW ? s[op] : "?";
}

static jv str_percent(jctx *c, uint32_t pos, jstr *fmt, jv args);

static jv repeat(jctx *c, uint32_t pos, jv seq, int64_t k)
{
    if (k < 0)
        k = 0;
    size_t unit = seq.t == JV_STR ? seq.u.s->len : seq.u.l->n * sizeof(jv);
    size_t tot;
    if (__builtin_mul_overflow(unit, (size_t)k, &tot) || tot > c->max_output)
        FAIL(c, pos, "MemoryError", "repetition result too large");
    if (seq.t == JV_STR) {
        jstr *r = js_new(c, NULL, 0);
        jbuf b = {0};
        for (int64_t i = 0; i < k; i++)
            jb_put(c, &b, seq.u.s->s, seq.u.s->len);
        (void)r;
        return mkstr(c, b.p ? b.p : "", b.n);
    }
    jlist *l = jl_new(c, 0);
    l->flags = seq.u.l->flags & JL_TUPLE;
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < seq.u.l->n; j++)
            jl_push(c, l, seq.u.l->v[j]);
    return jv_list(l);
}

static jv arith(jctx *c, uint32_t pos, int op, jv a, jv b)
{
    if (a.t == JV_UNDEF)
        undef_fail(c, pos, a);
    if (b.t == JV_UNDEF)
        undef_fail(c, pos, b);
    if (isnum(a) && isnum(b)) {
        bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
        if (!fl) {
            int64_t x = inum(a), y = inum(b), r;
            switch (op) {
            case OP_ADD:
                if (!__builtin_add_overflow(x, y, &r))
                    return jv_int(r);
                break;
            case OP_SUB:
                if (!__builtin_sub_overflow(x, y, &r))
                    return jv_int(r);
                break;
            case OP_MUL:
                if (!__builtin_mul_overflow(x, y, &r))
                    return jv_int(r);
                break;
            case OP_DIV:
                if (y == 0)
                    FAIL(c, pos, "ZeroDivisionError", "division by zero");
                return jv_float((double)x / (double)y);
            case OP_FLOORDIV:
            case OP_MOD: {
                if (y == 0)
                    FAIL(c, pos, "ZeroDivisionError", "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1)
                    break;
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    q--;
                    m += y;
                }
                return jv_int(op == OP_MOD ? m : q);
            }
            case OP_POW:
                if (y >= 0) {
                    int64_t res = 1, base = x;
                    bool ovf = false;
                    for (int64_t e = y; e > 0 && !ovf; e >>= 1) {
                        if (e & 1)
                            ovf |= __builtin_mul_overflow(res, base, &res);
                        if (e > 1)
                            ovf |= __builtin_mul_overflow(base, base, &base);
                    }
                    if (!ovf)
                        return jv_int(res);
                }
                return jv_float(pow((double)x, (double)y));
            }
            FAIL(c, pos, "OverflowError", "integer overflow in '%s'", opsym(op));
        }
        double x = fnum(a), y = fnum(b);
        switch (op) {
        case OP_ADD: return jv_float(x + y);
        case OP_SUB: return jv_float(x - y);
        case OP_MUL: return jv_float(x * y);
        case OP_DIV:
            if (y == 0)
                FAIL(c, pos, "ZeroDivisionError", "float division by zero");
            return jv_float(x / y);
        case OP_FLOORDIV:
            if (y == 0)
                FAIL(c, pos, "ZeroDivisionError", "float floor division by zero");
            {
                /* CPython's float_floor_div: exact on the remainder, not floor(x / y) */
                double mod = fmod(x, y), div = (x - mod) / y, fd;
                if (mod != 0 && ((y < 0) != (mod < 0)))
                    div -= 1.0;
                if (div != 0) {
                    fd = floor(div);
                    if (div - fd > 0.5)
                        fd += 1.0;
                } else {
                    fd = copysign(0.0, x / y);
                }
                return jv_float(fd);
            }
        case OP_MOD: {
            if (y == 0)
                FAIL(c, pos, "ZeroDivisionError", "float modulo");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0)))
                m += y;
            return jv_float(m);
        }
        case OP_POW: return jv_float(pow(x, y));
        }
    }
    if (op == OP_ADD) {
        if (a.t == JV_STR && b.t == JV_STR && a.u.s->markup != b.u.s->markup) {
            /* Markup + str escapes the plain side */
            args none = {0};
            jnode en = {.kind = N_FILTER, .id = FI_escape, .pos = pos};
            if (!a.u.s->markup)
                a = apply_filter(c, &en, a, &none, NULL);
            else
                b = apply_filter(c, &en, b, &none, NULL);
        }
        if (a.t == JV_STR && b.t == JV_STR) {
            jstr *r = js_new(c, NULL, a.u.s->len + b.u.s->len);
            memcpy(r->s, a.u.s->s, a.u.s->len);
            memcpy(r->s + a.u.s->len, b.u.s->s, b.u.s->len);
            r->markup = a.u.s->markup;
            return jv_str(r);
        }
        if (a.t == JV_LIST && b.t == JV_LIST && !((a.u.l->flags ^ b.u.l->flags) & JL_TUPLE) &&
            !((a.u.l->flags | b.u.l->flags) & JL_SPECIAL)) {
            jlist *l = jl_new(c, a.u.l->n + b.u.l->n);
            l->flags = a.u.l->flags & JL_TUPLE;
            for (size_t i = 0; i < a.u.l->n; i++)
                jl_push(c, l, a.u.l->v[i]);
            for (size_t i = 0; i < b.u.l->n; i++)
                jl_push(c, l, b.u.l->v[i]);
            return jv_list(l);
        }
        if (a.t == JV_STR)
            FAIL(c, pos, "TypeError", "can only concatenate str (not \"%s\") to str", jv_typename(b));
        if (a.t == JV_LIST)
            FAIL(c, pos, "TypeError", "can only concatenate list (not \"%s\") to list", jv_typename(b));
    }
    if (op == OP_MUL) {
        if ((a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))
            return repeat(c, pos, a, inum(b));
        if ((b.t == JV_STR || b.t == JV_LIST) && (a.t == JV_INT || a.t == JV_BOOL))
            return repeat(c, pos, b, inum(a));
    }
    if (op == OP_MOD && a.t == JV_STR)
        return str_percent(c, pos, a.u.s, b);
    FAIL(c, pos, "TypeError", "unsupported operand type(s) for %s: '%s' and '%s'", opsym(op),
         jv_typename(a), jv_typename(b));
}

static bool contains(jctx *c, uint32_t pos, jv item, jv seq)
{
    switch (seq.t) {
    case JV_STR:
        if (item.t != JV_STR)
            FAIL(c, pos, "TypeError", "'in <string>' requires string as left operand, not %s", jv_typename(item));
        if (item.u.s->len == 0)
            return true;
        return memmem(seq.u.s->s, seq.u.s->len, item.u.s->s, item.u.s->len) != NULL;
    case JV_LIST:
        for (size_t i = 0; i < seq.u.l->n; i++)
            if (jv_equal(seq.u.l->v[i], item))
                return true;
        return false;
    case JV_DICT:
    case JV_NS:
        if ((item.t == JV_LIST && !(item.u.l->flags & JL_TUPLE)) || item.t == JV_DICT)
            FAIL(c, pos, "TypeError", "unhashable type: '%s'", jv_typename(item));
        return jd_get(seq.u.d, item) != NULL;
    case JV_UNDEF: return false;
    default: FAIL(c, pos, "TypeError", "argument of type '%s' is not iterable", jv_typename(seq));
    }
}

static bool compare_op(jctx *c, uint32_t pos, int op, jv a, jv b)
{
    switch (op) {
    case OP_EQ: return jv_equal(a, b);
    case OP_NE: return !jv_equal(a, b);
    case OP_IN: return contains(c, pos, a, b);
    case OP_NOTIN: return !contains(c, pos, a, b);
    default: break;
    }
    if (a.t == JV_UNDEF)
        undef_fail(c, pos, a);
    if (b.t == JV_UNDEF)
        undef_fail(c, pos, b);
    if (!((isnum(a) && isnum(b)) || (a.t == JV_STR && b.t == JV_STR) ||
          (a.t == JV_LIST && b.t == JV_LIST && (a.u.l->flags & (JL_TUPLE | JL_SPECIAL)) == (b.u.l->flags & (JL_TUPLE | JL_SPECIAL)) &&
           !(a.u.l->flags & (JL_GENERATOR | JL_ITEMS | JL_KEYS | JL_VALUES | JL_RANGE))))) {
        static const char *s[] = {"<", "<=", ">", ">="};
        FAIL(c, pos, "TypeError", "'%s' not supported between instances of '%s' and '%s'",
             s[op - OP_LT], jv_typename(a), jv_typename(b));
    }
    int r = jv_compare(c, pos, a, b);
    switch (op) {
    case OP_LT: return r < 0;
    case OP_LE: return r <= 0;
    case OP_GT: return r > 0;
    default: return r >= 0;
    }
}

/* ---- string utilities ---- */
/* Unconditional full case mappings (Unicode SpecialCasing) Python applies beyond the
 * simple ones utf8proc gives. kind: 0 lower, 1 upper, 2 title. */
static const char *special_case(uint32_t cp, int kind)
{
    static const struct {
        uint32_t cp;
        const char *lower, *upper, *title;
    } tab[] = {
        {0x00DF, NULL, "SS", "Ss"},       {0x0130, "i\xcc\x87", NULL, NULL}, {0x0149, NULL, "\xca\xbcN", "\xca\xbcN"},
        {0xFB00, NULL, "FF", "Ff"},       {0xFB01, NULL, "FI", "Fi"},       {0xFB02, NULL, "FL", "Fl"},
        {0xFB03, NULL, "FFI", "Ffi"},     {0xFB04, NULL, "FFL", "Ffl"},     {0xFB05, NULL, "ST", "St"},
        {0xFB06, NULL, "ST", "St"},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (tab[i].cp == cp)
            return kind == 0 ? tab[i].lower : kind == 1 ? tab[i].upper : tab[i].title;
    return NULL;
}

static bool is_cased(uint32_t cp)
{
    const utf8proc_property_t *pr = utf8proc_get_property((utf8proc_int32_t)cp);
    return pr->category == UTF8PROC_CATEGORY_LU || pr->category == UTF8PROC_CATEGORY_LL ||
           pr->category == UTF8PROC_CATEGORY_LT || utf8proc_tolower((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp ||
           utf8proc_toupper((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp;
}

static jv str_case(jctx *c, jstr *s, int mode) /* 0 lower 1 upper 2 capitalize 3 title(py) 4 swapcase */
{
    jbuf b = {0};
    bool prev_cased = false;
    size_t idx = 0;
    for (size_t i = 0; i < s->len; idx++) {
        size_t adv;
        uint32_t cp = dec_cp(s->s + i, s->len - i, &adv);
        uint32_t r = cp;
        int kind = -1; /* which full mapping applies */
        switch (mode) {
        case 0: kind = 0; break;
        case 1: kind = 1; break;
        case 2: kind = idx == 0 ? 2 : 0; break;
        case 3: {
            kind = prev_cased ? 0 : 2;
            prev_cased = is_cased(cp);
            break;
        }
        default: kind = utf8proc_tolower((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp ? 0 : 1;
        }
        if (cp >= 0x80) {
            const char *sp = special_case(cp, kind);
            if (sp) {
                jb_puts(c, &b, sp);
                i += adv;
                continue;
            }
        }
        if (cp == 0x03A3 && kind == 0 && idx > 0 && i > 0) {
            /* final sigma: after a cased letter and not before one */
            size_t k = i - 1, padv;
            while (k > 0 && ((unsigned char)s->s[k] & 0xC0) == 0x80)
                k--;
            uint32_t prev = dec_cp(s->s + k, s->len - k, &padv);
            uint32_t next = 0;
            if (i + adv < s->len) {
                size_t nadv;
                next = dec_cp(s->s + i + adv, s->len - i - adv, &nadv);
            }
            if (is_cased(prev) && !is_cased(next)) {
                put_cp(c, &b, 0x03C2);
                i += adv;
                continue;
            }
        }
        switch (kind) {
        case 0: r = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp); break;
        case 1: r = (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp); break;
        case 2: r = (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp); break;
        }
        put_cp(c, &b, r);
        i += adv;
    }
    return mkstr(c, b.p ? b.p : "", b.n);
}

/* jinja's title filter: words start after whitespace, '-', '(', '{', '[', '<' */
static jv title_filter(jctx *c, jstr *s)
{
    jbuf b = {0};
    bool start = true;
    for (size_t i = 0; i < s->len;) {
        size_t adv;
        uint32_t cp = dec_cp(s->s + i, s->len - i, &adv);
        bool sep = py_space(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
        uint32_t r;
        const char *sp = !sep && start && cp >= 0x80 ? special_case(cp, 1) : !sep && cp >= 0x80 ? special_case(cp, 0) : NULL;
        if (sp) {
            jb_puts(c, &b, sp);
            start = false;
            i += adv;
            continue;
        }
        if (sep)
            r = cp;
        else if (start)
            r = (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp);
        else
            r = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
        start = sep;
        put_cp(c, &b, r);
        i += adv;
    }
    return mkstr(c, b.p ? b.p : "", b.n);
}

static bool in_chars(jstr *chars, const char *p, size_t n)
{
    for (size_t i = 0; i < chars->len;) {
        size_t adv;
        dec_cp(chars->s + i, chars->len - i, &adv);
        if (adv == n && !memcmp(chars->s + i, p, n))
            return true;
        i += adv;
    }
    return false;
}

static size_t cp_len_at(const char *s, size_t n)
{
    size_t adv;
    dec_cp(s, n, &adv);
    return adv > n ? n : adv;
}

static size_t cp_start_before(const char *s, size_t end)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

/* strip: which 1 left, 2 right, 3 both; chars NULL = whitespace */
static jv str_strip(jctx *c, jstr *s, jstr *chars, int which)
{
    size_t a = 0, b = s->len;
    if (which & 1)
        while (a < b) {
            size_t k = cp_len_at(s->s + a, b - a);
            bool hit;
            if (chars)
                hit = in_chars(chars, s->s + a, k);
            else {
                size_t adv;
                hit = py_space(dec_cp(s->s + a, b - a, &adv));
            }
            if (!hit)
                break;
            a += k;
        }
    if (which & 2)
        while (b > a) {
            size_t st = cp_start_before(s->s, b);
            if (st < a)
                st = a;
            bool hit;
            if (chars)
                hit = in_chars(chars, s->s + st, b - st);
            else {
                size_t adv;
                hit = py_space(dec_cp(s->s + st, b - st, &adv));
            }
            if (!hit)
                break;
            b = st;
        }
    if (a == 0 && b == s->len)
        return jv_str(s);
    return mkstr(c, s->s + a, b - a);
}

static jv str_replace(jctx *c, jstr *s, jstr *old, jstr *new_, int64_t count)
{
    jbuf b = {0};
    if (old->len == 0) {
        /* Python inserts new_ between every character */
        int64_t k = 0;
        for (size_t i = 0; i <= s->len;) {
            if (count < 0 || k < count) {
                jb_put(c, &b, new_->s, new_->len);
                k++;
            }
            if (i == s->len)
                break;
            size_t adv = cp_len_at(s->s + i, s->len - i);
            jb_put(c, &b, s->s + i, adv);
            i += adv;
        }
        return mkstr(c, b.p ? b.p : "", b.n);
    }
    size_t i = 0;
    int64_t k = 0;
    while (i < s->len) {
        const char *p = (count < 0 || k < count) ? memmem(s->s + i, s->len - i, old->s, old->len) : NULL;
        if (!p) {
            jb_put(c, &b, s->s + i, s->len - i);
            break;
        }
        jb_put(c, &b, s->s + i, (size_t)(p - (s->s + i)));
        jb_put(c, &b, new_->s, new_->len);
        i = (size_t)(p - s->s) + old->len;
        k++;
    }
    return mkstr(c, b.p ? b.p : "", b.n);
}

static jv str_split(jctx *c, jstr *s, jstr *sep, int64_t maxsplit, bool right)
{
    jlist *l = jl_new(c, 0);
    if (!sep) {
        /* whitespace split, runs collapse, no empty strings */
        if (!right) {
            size_t i = 0;
            int64_t k = 0;
            for (;;) {
                while (i < s->len) {
                    size_t adv;
                    if (!py_space(dec_cp(s->s + i, s->len - i, &adv)))
                        break;
                    i += adv;
                }
                if (i >= s->len)
                    break;
                if (maxsplit >= 0 && k >= maxsplit) {
                    size_t e = s->len;
                    while (e > i) {
                        size_t st = cp_start_before(s->s, e), adv;
                        if (!py_space(dec_cp(s->s + st, e - st, &adv)))
                            break;
                        e = st;
                    }
                    jl_push(c, l, mkstr(c, s->s + i, e - i));
                    break;
                }
                size_t j = i;
                while (j < s->len) {
                    size_t adv;
                    if (py_space(dec_cp(s->s + j, s->len - j, &adv)))
                        break;
                    j += adv;
                }
                jl_push(c, l, mkstr(c, s->s + i, j - i));
                k++;
                i = j;
            }
            return jv_list(l);
        }
        /* rsplit() without sep: split fully, then join the leftmost pieces back */
        jv all = str_split(c, s, NULL, -1, false);
        if (maxsplit < 0 || (int64_t)all.u.l->n <= maxsplit + 1)
            return all;
        size_t keep = all.u.l->n - (size_t)maxsplit;
        /* leftmost part: from first piece's start to end of piece keep-1 in the original */
        jstr *last = all.u.l->v[keep - 1].u.s;
        const char *st = s->s;
        while (st < s->s + s->len && py_space((unsigned char)*st))
            st++;
        const char *en = NULL;
        size_t off = 0;
        for (size_t q = 0; q < keep; q++) {
            jstr *pc = all.u.l->v[q].u.s;
            const char *f = memmem(s->s + off, s->len - off, pc->s, pc->len);
            off = (size_t)(f - s->s) + pc->len;
            en = s->s + off;
        }
        (void)last;
        jl_push(c, l, mkstr(c, st, (size_t)(en - st)));
        for (size_t q = keep; q < all.u.l->n; q++)
            jl_push(c, l, all.u.l->v[q]);
        return jv_list(l);
    }
    if (sep->len == 0)
        FAIL(c, 0, "ValueError", "empty separator");
    if (!right) {
        size_t i = 0;
        int64_t k = 0;
        for (;;) {
            const char *p = (maxsplit < 0 || k < maxsplit) ? memmem(s->s + i, s->len - i, sep->s, sep->len) : NULL;
            if (!p) {
                jl_push(c, l, mkstr(c, s->s + i, s->len - i));
                break;
            }
            jl_push(c, l, mkstr(c, s->s + i, (size_t)(p - (s->s + i))));
            i = (size_t)(p - s->s) + sep->len;
            k++;
        }
        return jv_list(l);
    }
    /* rsplit with separator: collect from the right, then reverse */
    jlist *tmp = jl_new(c, 0);
    size_t e = s->len;
    int64_t k = 0;
    for (;;) {
        const char *found = NULL;
        if ((maxsplit < 0 || k < maxsplit) && e >= sep->len) {
            for (size_t q = e - sep->len + 1; q-- > 0;)
                if (!memcmp(s->s + q, sep->s, sep->len)) {
                    found = s->s + q;
                    break;
                }
        }
        if (!found) {
            jl_push(c, tmp, mkstr(c, s->s, e));
            break;
        }
        size_t after = (size_t)(found - s->s) + sep->len;
        jl_push(c, tmp, mkstr(c, s->s + after, e - after));
        e = (size_t)(found - s->s);
        k++;
    }
    for (size_t q = tmp->n; q-- > 0;)
        jl_push(c, l, tmp->v[q]);
    return jv_list(l);
}

static bool prefix_match(jstr *s, jv pre, bool end)
{
    if (pre.t != JV_STR)
        return false;
    jstr *p = pre.u.s;
    if (p->len > s->len)
        return false;
    return !memcmp(end ? s->s + s->len - p->len : s->s, p->s, p->len);
}

/* Python's format(value, spec) for str, int and float: [[fill]align][sign][0][width][,][.prec][type] */
static void format_spec(jctx *c, uint32_t pos, jbuf *b, jv v, const char *spec, size_t sl)
{
    if (sl == 0) {
        jv_write_str(c, b, v);
        return;
    }
    char fill = ' ', align = 0, sign = '-', type = 0;
    bool zero = false, group = false;
    long width = -1, prec = -1;
    size_t i = 0;
    if (sl >= 2 && strchr("<>^=", spec[1])) {
        fill = spec[0];
        align = spec[1];
        i = 2;
    } else if (strchr("<>^=", spec[0])) {
        align = spec[0];
        i = 1;
    }
    if (i < sl && strchr("+- ", spec[i]))
        sign = spec[i++];
    if (i < sl && spec[i] == '#')
        i++;
    if (i < sl && spec[i] == '0') {
        zero = true;
        i++;
    }
    while (i < sl && spec[i] >= '0' && spec[i] <= '9' && width < 100000)
        width = (width < 0 ? 0 : width * 10) + (spec[i++] - '0');
    if (i < sl && (spec[i] == ',' || spec[i] == '_')) {
        group = spec[i] == ',';
        i++;
    }
    if (i < sl && spec[i] == '.') {
        i++;
        prec = 0;
        while (i < sl && spec[i] >= '0' && spec[i] <= '9' && prec < 1000)
            prec = prec * 10 + (spec[i++] - '0');
    }
    if (i < sl)
        type = spec[i++];
    if (i != sl || width > 10000)
        FAIL(c, pos, "ValueError", "Invalid format specifier '%.*s'", (int)sl, spec);
    jbuf body = {0};
    bool numeric = false, neg = false;
    if (v.t == JV_STR || v.t == JV_NONE || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF) {
        if (type && type != 's')
            FAIL(c, pos, "ValueError", "Unknown format code '%c' for object of type '%s'", type, jv_typename(v));
        jstr *str = jv_to_str(c, v);
        size_t n = str->len;
        if (prec >= 0) {
            size_t k = 0, cp = 0;
            while (k < str->len && cp < (size_t)prec) {
                k += cp_len_at(str->s + k, str->len - k);
                cp++;
            }
            n = k;
        }
        jb_put(c, &body, str->s, n);
    } else if (isnum(v)) {
        numeric = true;
        bool isint = v.t != JV_FLOAT && (!type || strchr("dxXobnc", type));
        char tmp[2048];
        if (isint) {
            int64_t x = inum(v);
            neg = x < 0;
            uint64_t ux = neg ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
            if (type == 'x' || type == 'X' || type == 'o')
                snprintf(tmp, sizeof tmp, type == 'x' ? "%llx" : type == 'X' ? "%llX" : "%llo", (unsigned long long)ux);
            else if (type == 'b') {
                int k = 0;
                char rev[70];
                do {
                    rev[k++] = (char)('0' + (ux & 1));
                    ux >>= 1;
                } while (ux);
                for (int q = 0; q < k; q++)
                    tmp[q] = rev[k - 1 - q];
                tmp[k] = 0;
            } else if (type == 'c') {
                jbuf cb = {0};
                put_cp(c, &cb, (uint32_t)ux);
                snprintf(tmp, sizeof tmp, "%.*s", (int)cb.n, cb.p);
                numeric = false;
            } else
                snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)ux);
        } else {
            double x = fnum(v);
            if (v.t == JV_FLOAT && type && strchr("dxXobc", type))
                FAIL(c, pos, "ValueError", "Unknown format code '%c' for object of type 'float'", type);
            neg = signbit(x);
            x = fabs(x);
            int p = prec < 0 ? 6 : (int)prec;
            if (!type && prec < 0) {
                jbuf fb = {0};
                jv_write_float(&fb, c, x);
                snprintf(tmp, sizeof tmp, "%.*s", (int)fb.n, fb.p);
            } else if (type == '%') {
                snprintf(tmp, sizeof tmp, "%.*f%%", p, x * 100.0);
            } else if (!type || type == 'n') {
                snprintf(tmp, sizeof tmp, "%.*g", p ? p : 1, x);
                if (!strpbrk(tmp, ".einf") && strlen(tmp) + 3 <= sizeof tmp)
                    strcat(tmp, ".0");
            } else {
                char f[8] = {'%', '.', '*', type, 0};
                snprintf(tmp, sizeof tmp, f, p, x);
            }
        }
        if (group) {
            char *dot = strpbrk(tmp, ".e");
            size_t intlen = dot ? (size_t)(dot - tmp) : strlen(tmp);
            for (size_t q = 0; q < intlen; q++) {
                if (q && (intlen - q) % 3 == 0)
                    jb_put(c, &body, ",", 1);
                jb_put(c, &body, tmp + q, 1);
            }
            jb_puts(c, &body, tmp + intlen);
        } else {
            jb_puts(c, &body, tmp);
        }
    } else {
        jv_write_str(c, &body, v);
    }
    const char *sg = numeric ? (neg ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : "") : "";
    if (zero && !align) {
        fill = '0';
        align = '=';
    }
    if (!align)
        align = numeric ? '>' : '<';
    size_t blen = 0;
    for (size_t q = 0; q < body.n; q++)
        if (((unsigned char)body.p[q] & 0xC0) != 0x80)
            blen++;
    long pad = width - (long)(blen + strlen(sg));
    if (pad < 0)
        pad = 0;
    long left = align == '<' ? 0 : align == '^' ? pad / 2 : pad;
    if (align == '=') {
        jb_puts(c, b, sg);
        for (long q = 0; q < pad; q++)
            jb_put(c, b, &fill, 1);
        jb_put(c, b, body.p ? body.p : "", body.n);
        return;
    }
    for (long q = 0; q < left; q++)
        jb_put(c, b, &fill, 1);
    jb_puts(c, b, sg);
    jb_put(c, b, body.p ? body.p : "", body.n);
    for (long q = left; q < pad; q++)
        jb_put(c, b, &fill, 1);
}

/* str.format: {}, {0}, {name}, {0.attr}, {0[key]}, !r/!s conversions, format specs, {{ }} */
static jv str_format(jctx *c, uint32_t pos, jstr *fmt, args *a)
{
    jbuf b = {0};
    int auto_idx = 0;
    for (size_t i = 0; i < fmt->len; i++) {
        char ch = fmt->s[i];
        if (ch == '{' && i + 1 < fmt->len && fmt->s[i + 1] == '{') {
            jb_put(c, &b, "{", 1);
            i++;
        } else if (ch == '}' && i + 1 < fmt->len && fmt->s[i + 1] == '}') {
            jb_put(c, &b, "}", 1);
            i++;
        } else if (ch == '}') {
            FAIL(c, pos, "ValueError", "Single '}' encountered in format string");
        } else if (ch == '{') {
            size_t j = i + 1;
            while (j < fmt->len && fmt->s[j] != '}')
                j++;
            if (j >= fmt->len)
                FAIL(c, pos, "ValueError", "Single '{' encountered in format string");
            const char *field = fmt->s + i + 1;
            size_t fl = j - i - 1;
            const char *colon = memchr(field, ':', fl);
            size_t headlen = colon ? (size_t)(colon - field) : fl;
            const char *bang = memchr(field, '!', headlen);
            size_t namelen = bang ? (size_t)(bang - field) : headlen;
            size_t keylen = 0;
            while (keylen < namelen && field[keylen] != '.' && field[keylen] != '[')
                keylen++;
            jv v;
            bool found = false;
            if (keylen == 0) {
                if (auto_idx < a->n) {
                    v = a->v[auto_idx];
                    found = true;
                }
                auto_idx++;
            } else if (field[0] >= '0' && field[0] <= '9') {
                int idx = atoi(field);
                if (idx < a->n) {
                    v = a->v[idx];
                    found = true;
                }
            } else {
                for (int k = 0; k < a->nk; k++)
                    if (strlen(a->kn[k]) == keylen && !memcmp(a->kn[k], field, keylen)) {
                        v = a->kv[k];
                        found = true;
                    }
                if (!found)
                    FAIL(c, pos, "KeyError", "'%.*s'", (int)keylen, field);
            }
            if (!found)
                FAIL(c, pos, "IndexError", "Replacement index %d out of range for positional args tuple", auto_idx - 1);
            /* .attr and [key] chains */
            size_t q = keylen;
            while (q < namelen) {
                if (field[q] == '.') {
                    size_t e = q + 1;
                    while (e < namelen && field[e] != '.' && field[e] != '[')
                        e++;
                    char *nm = xalloc(c, e - q);
                    memcpy(nm, field + q + 1, e - q - 1);
                    v = get_attr(c, pos, v, nm, true);
                    q = e;
                } else {
                    size_t e = q + 1;
                    while (e < namelen && field[e] != ']')
                        e++;
                    bool digits = e > q + 1;
                    for (size_t d = q + 1; d < e; d++)
                        digits &= field[d] >= '0' && field[d] <= '9';
                    jv key = digits ? jv_int(strtoll(field + q + 1, NULL, 10)) : mkstr(c, field + q + 1, e - q - 1);
                    v = get_item(c, pos, v, key);
                    q = e + 1;
                }
                if (v.t == JV_UNDEF)
                    undef_fail(c, pos, v);
            }
            if (bang && bang + 1 < field + headlen && bang[1] == 'r') {
                jbuf rb = {0};
                jv_write_repr(c, &rb, v);
                v = mkstr(c, rb.p ? rb.p : "", rb.n);
            } else if (bang) {
                v = jv_str(jv_to_str(c, v));
            }
            if (colon)
                format_spec(c, pos, &b, v, colon + 1, fl - headlen - 1);
            else
                jv_write_str(c, &b, v);
            i = j;
        } else {
            jb_put(c, &b, &ch, 1);
        }
    }
    return mkstr(c, b.p ? b.p : "", b.n);
}

/* printf-style "fmt % args" */
static jv str_percent(jctx *c, uint32_t pos, jstr *fmt, jv argv)
{
    jbuf b = {0};
    size_t ai = 0;
    jlist *tl = (argv.t == JV_LIST && (argv.u.l->flags & JL_TUPLE)) ? argv.u.l : NULL;
    for (size_t i = 0; i < fmt->len; i++) {
        char ch = fmt->s[i];
        if (ch != '%') {
            jb_put(c, &b, &ch, 1);
            continue;
        }
        if (++i >= fmt->len)
            FAIL(c, pos, "ValueError", "incomplete format");
        if (fmt->s[i] == '%') {
            jb_put(c, &b, "%", 1);
            continue;
        }
        char spec[32];
        size_t sl = 0;
        spec[sl++] = '%';
        while (i < fmt->len && strchr("-+ #0123456789.", fmt->s[i]) && sl < 20)
            spec[sl++] = fmt->s[i++];
        if (i >= fmt->len)
            FAIL(c, pos, "ValueError", "incomplete format");
        char conv = fmt->s[i];
        jv v;
        if (tl) {
            if (ai >= tl->n)
                FAIL(c, pos, "TypeError", "not enough arguments for format string");
            v = tl->v[ai++];
        } else {
            if (ai++ > 0)
                FAIL(c, pos, "TypeError", "not enough arguments for format string");
            v = argv;
        }
        char tmp[128];
        switch (conv) {
        case 's':
        case 'r': {
            jbuf sb = {0};
            if (conv == 's')
                jv_write_str(c, &sb, v);
            else
                jv_write_repr(c, &sb, v);
            spec[sl++] = 's';
            spec[sl] = 0;
            if (sl == 2) {
                jb_put(c, &b, sb.p ? sb.p : "", sb.n);
            } else {
                char *t2 = xalloc(c, sb.n + 256);
                snprintf(t2, sb.n + 256, spec, sb.p ? sb.p : "");
                jb_puts(c, &b, t2);
            }
            break;
        }
        case 'd':
        case 'i':
        case 'x':
        case 'X':
        case 'o':
            if (!isnum(v))
                FAIL(c, pos, "TypeError", "%%%c format: a real number is required, not %s", conv, jv_typename(v));
            spec[sl++] = 'l';
            spec[sl++] = 'l';
            spec[sl++] = conv == 'i' ? 'd' : conv;
            spec[sl] = 0;
            snprintf(tmp, sizeof tmp, spec, (long long)(v.t == JV_FLOAT ? (int64_t)v.u.f : inum(v)));
            jb_puts(c, &b, tmp);
            break;
        case 'f':
        case 'F':
        case 'e':
        case 'E':
        case 'g':
        case 'G':
            if (!isnum(v))
                FAIL(c, pos, "TypeError", "must be real number, not %s", jv_typename(v));
            spec[sl++] = conv;
            spec[sl] = 0;
            snprintf(tmp, sizeof tmp, spec, fnum(v));
            jb_puts(c, &b, tmp);
            break;
        default: FAIL(c, pos, "ValueError", "unsupported format character '%c'", conv);
        }
    }
    /* a mapping (or a list, which Python treats like one here) may go unused */
    if (tl ? ai < tl->n : (ai == 0 && argv.t != JV_DICT && argv.t != JV_LIST))
        FAIL(c, pos, "TypeError", "not all arguments converted during string formatting");
    return mkstr(c, b.p ? b.p : "", b.n);
}

/* ---- method calls ---- */
static jv call_value(jctx *c, uint32_t pos, jv fn, args *a, jv caller);

static jv call_method(jctx *c, uint32_t pos, jv self, const char *m, args *a)
{
    if (self.t == JV_STR) {
        jstr *s = self.u.s;
        jv *x0 = arg(a, 0, "__0"), *x1 = arg(a, 1, "__1");
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            bool end = m[0] == 'e';
            if (!x0)
                FAIL(c, pos, "TypeError", "%s() takes at least 1 argument", m);
            if (x0->t == JV_LIST) {
                for (size_t i = 0; i < x0->u.l->n; i++)
                    if (prefix_match(s, x0->u.l->v[i], end))
                        return jv_bool(1);
                return jv_bool(0);
            }
            if (x0->t != JV_STR)
                FAIL(c, pos, "TypeError", "%s first arg must be str or a tuple of str, not %s", m, jv_typename(*x0));
            return jv_bool(prefix_match(s, *x0, end));
        }
        if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
            jstr *chars = x0 && x0->t != JV_NONE ? as_str(c, pos, *x0, "strip arg") : NULL;
            return str_strip(c, s, chars, m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3);
        }
        if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
            jv *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
            jstr *sp = sep && sep->t != JV_NONE ? as_str(c, pos, *sep, "separator") : NULL;
            return str_split(c, s, sp, mx ? as_int(c, pos, *mx, "maxsplit") : -1, m[0] == 'r');
        }
        if (!strcmp(m, "upper"))
            return str_case(c, s, 1);
        if (!strcmp(m, "lower") || !strcmp(m, "casefold"))
            return str_case(c, s, 0);
        if (!strcmp(m, "capitalize"))
            return str_case(c, s, 2);
        if (!strcmp(m, "title"))
            return str_case(c, s, 3);
        if (!strcmp(m, "swapcase"))
            return str_case(c, s, 4);
        if (!strcmp(m, "replace")) {
            if (!x0 || !x1)
                FAIL(c, pos, "TypeError", "replace() takes at least 2 arguments");
            jv *cnt = arg(a, 2, "count");
            return str_replace(c, s, as_str(c, pos, *x0, "replace arg"), as_str(c, pos, *x1, "replace arg"),
                               cnt ? as_int(c, pos, *cnt, "count") : -1);
        }
        if (!strcmp(m, "format"))
            return str_format(c, pos, s, a);
        if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "index") || !strcmp(m, "count")) {
            if (!x0)
                FAIL(c, pos, "TypeError", "%s() takes at least 1 argument", m);
            jstr *sub = as_str(c, pos, *x0, "argument");
            if (!strcmp(m, "count")) {
                if (sub->len == 0)
                    return jv_int((int64_t)jstr_cplen(s) + 1);
                int64_t k = 0;
                for (size_t i = 0; i + sub->len <= s->len;) {
                    const char *p = memmem(s->s + i, s->len - i, sub->s, sub->len);
                    if (!p)
                        break;
                    k++;
                    i = (size_t)(p - s->s) + sub->len;
                }
                return jv_int(k);
            }
            const char *p = NULL;
            if (m[0] == 'r') {
                for (size_t q = s->len >= sub->len ? s->len - sub->len + 1 : 0; q-- > 0;)
                    if (!memcmp(s->s + q, sub->s, sub->len)) {
                        p = s->s + q;
                        break;
                    }
            } else {
                p = sub->len ? memmem(s->s, s->len, sub->s, sub->len) : s->s;
            }
            if (!p) {
                if (m[0] == 'i')
                    FAIL(c, pos, "ValueError", "substring not found");
                return jv_int(-1);
            }
            /* convert byte offset to code point index */
            int64_t idx = 0;
            for (const char *q = s->s; q < p; q++)
                if (((unsigned char)*q & 0xC0) != 0x80)
                    idx++;
            return jv_int(idx);
        }
        if (!strcmp(m, "join")) {
            if (!x0)
                FAIL(c, pos, "TypeError", "join() takes exactly one argument");
            jlist *l = iter_list(c, pos, *x0);
            jbuf b = {0};
            for (size_t i = 0; i < l->n; i++) {
                if (i)
                    jb_put(c, &b, s->s, s->len);
                if (l->v[i].t != JV_STR)
                    FAIL(c, pos, "TypeError", "sequence item %zu: expected str instance, %s found", i,
                         jv_typename(l->v[i]));
                jb_put(c, &b, l->v[i].u.s->s, l->v[i].u.s->len);
            }
            return mkstr(c, b.p ? b.p : "", b.n);
        }
        if (!strncmp(m, "is", 2)) {
            if (s->len == 0)
                return jv_bool(0);
            bool ok = true, any_cased = false;
            for (size_t i = 0; i < s->len && ok;) {
                size_t adv;
                uint32_t cp = dec_cp(s->s + i, s->len - i, &adv);
                const utf8proc_property_t *pr = utf8proc_get_property((utf8proc_int32_t)cp);
                bool alpha = pr->category >= UTF8PROC_CATEGORY_LU && pr->category <= UTF8PROC_CATEGORY_LO;
                bool digit = pr->category == UTF8PROC_CATEGORY_ND;
                bool lower = utf8proc_toupper((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp;
                bool upper = utf8proc_tolower((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp;
                if (!strcmp(m, "isdigit") || !strcmp(m, "isnumeric") || !strcmp(m, "isdecimal"))
                    ok = digit;
                else if (!strcmp(m, "isalpha"))
                    ok = alpha;
                else if (!strcmp(m, "isalnum"))
                    ok = alpha || digit;
                else if (!strcmp(m, "isspace"))
                    ok = py_space(cp);
                else if (!strcmp(m, "islower")) {
                    ok = !upper;
                    any_cased |= lower;
                } else if (!strcmp(m, "isupper")) {
                    ok = !lower;
                    any_cased |= upper;
                } else {
                    return jv_bool(0);
                }
                i += adv;
            }
            if (!strcmp(m, "islower") || !strcmp(m, "isupper"))
                return jv_bool(ok && any_cased);
            return jv_bool(ok);
        }
        if (!strcmp(m, "splitlines")) {
            jlist *l = jl_new(c, 0);
            size_t st = 0;
            for (size_t i = 0; i < s->len; i++) {
                char ch = s->s[i];
                if (ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f' || (ch >= 0x1c && ch <= 0x1e)) {
                    jl_push(c, l, mkstr(c, s->s + st, i - st));
                    if (ch == '\r' && i + 1 < s->len && s->s[i + 1] == '\n')
                        i++;
                    st = i + 1;
                }
            }
            if (st < s->len)
                jl_push(c, l, mkstr(c, s->s + st, s->len - st));
            return jv_list(l);
        }
        if (!strcmp(m, "removeprefix") || !strcmp(m, "removesuffix")) {
            if (!x0)
                FAIL(c, pos, "TypeError", "%s() takes exactly one argument", m);
            bool end = m[6] == 's';
            if (prefix_match(s, *x0, end)) {
                size_t k = x0->u.s->len;
                return end ? mkstr(c, s->s, s->len - k) : mkstr(c, s->s + k, s->len - k);
            }
            return self;
        }
        if (!strcmp(m, "partition") || !strcmp(m, "rpartition")) {
            jstr *sep = as_str(c, pos, x0 ? *x0 : jv_none(), "separator");
            jv parts = str_split(c, s, sep, 1, m[0] == 'r');
            jlist *l = jl_new(c, 3);
            l->flags = JL_TUPLE;
            if (parts.u.l->n == 2) {
                jl_push(c, l, parts.u.l->v[0]);
                jl_push(c, l, jv_str(sep));
                jl_push(c, l, parts.u.l->v[1]);
            } else if (m[0] == 'r') {
                jl_push(c, l, mkstr(c, "", 0));
                jl_push(c, l, mkstr(c, "", 0));
                jl_push(c, l, self);
            } else {
                jl_push(c, l, self);
                jl_push(c, l, mkstr(c, "", 0));
                jl_push(c, l, mkstr(c, "", 0));
            }
            return jv_list(l);
        }
        if (!strcmp(m, "center") || !strcmp(m, "ljust") || !strcmp(m, "rjust") || !strcmp(m, "zfill")) {
            int64_t w = x0 ? as_int(c, pos, *x0, "width") : 0;
            int64_t len = (int64_t)jstr_cplen(s);
            if (w <= len)
                return self;
            if (w > (int64_t)c->max_output)
                FAIL(c, pos, "MemoryError", "width too large");
            const char *fill = m[0] == 'z' ? "0" : (x1 && x1->t == JV_STR) ? x1->u.s->s : " ";
            int64_t pad = w - len, left = m[0] == 'c' ? pad / 2 + (pad & w & 1) : m[0] == 'r' || m[0] == 'z' ? pad : 0;
            jbuf b = {0};
            for (int64_t i = 0; i < left; i++)
                jb_puts(c, &b, fill);
            jb_put(c, &b, s->s, s->len);
            for (int64_t i = left; i < pad; i++)
                jb_puts(c, &b, fill);
            return mkstr(c, b.p, b.n);
        }
        FAIL(c, pos, "AttributeError", "'str' object has no attribute '%s'", m);
    }
    if (self.t == JV_DICT) {
        jdict *d = self.u.d;
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            jlist *l = jl_new(c, d->n);
            for (size_t i = 0; i < d->n; i++)
                jl_push(c, l, m[0] == 'i' ? tuple2(c, d->k[i], d->v[i]) : m[0] == 'k' ? d->k[i] : d->v[i]);
            l->flags = m[0] == 'i' ? JL_ITEMS : m[0] == 'k' ? JL_KEYS : JL_VALUES;
            return jv_list(l);
        }
        if (!strcmp(m, "get")) {
            jv *k = arg(a, 0, "key"), *def = arg(a, 1, "default");
            if (!k)
                FAIL(c, pos, "TypeError", "get expected at least 1 argument, got 0");
            jv *p = jd_get(d, *k);
            return p ? *p : def ? *def : jv_none();
        }
        if (!strcmp(m, "copy")) {
            jdict *nd = jd_new(c, d->n);
            for (size_t i = 0; i < d->n; i++)
                jd_set(c, nd, d->k[i], d->v[i]);
            return jv_dict(nd);
        }
    }
    if (self.t == JV_LIST) {
        jlist *l = self.u.l;
        jv *x0 = arg(a, 0, "x");
        if (!strcmp(m, "index") || !strcmp(m, "count")) {
            if (!x0)
                FAIL(c, pos, "TypeError", "%s() takes exactly one argument", m);
            int64_t k = 0;
            for (size_t i = 0; i < l->n; i++)
                if (jv_equal(l->v[i], *x0)) {
                    if (m[0] == 'i')
                        return jv_int((int64_t)i);
                    k++;
                }
            if (m[0] == 'i')
                FAIL(c, pos, "ValueError", "value is not in list");
            return jv_int(k);
        }
        if (!strcmp(m, "copy")) {
            jlist *nl = jl_new(c, l->n);
            for (size_t i = 0; i < l->n; i++)
                jl_push(c, nl, l->v[i]);
            return jv_list(nl);
        }
    }
    if (self.t == JV_CYCLER) {
        struct jcycler *cy = self.u.cyc;
        if (!strcmp(m, "reset")) {
            cy->pos = 0;
            return jv_none();
        }
        if (!cy->items->n)
            return jv_none();
        jv r = cy->items->v[cy->pos];
        cy->pos = (cy->pos + 1) % cy->items->n;
        return r;
    }
    if (self.t == JV_LOOP) {
        struct jloop *l = self.u.loop;
        if (!strcmp(m, "cycle")) {
            if (a->n == 0)
                FAIL(c, pos, "TypeError", "no items for cycling given");
            return a->v[l->idx % (size_t)a->n];
        }
        return jv_bool(1);
    }
    FAIL(c, pos, "TypeError", "'%s' object has no method '%s'", jv_typename(self), m);
}

/* ---- filters and tests ---- */
static jv apply_filter(jctx *c, const jnode *n, jv v, args *a, jframe *f);
static bool apply_test(jctx *c, uint32_t pos, int id, const char *name, jv v, args *a);

static int test_id(const char *name)
{
#define X(n) #n,
    static const char *const names[] = {JINJA_TESTS(X) NULL};
#undef X
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], name))
            return i;
    if (!strcmp(name, "==")) return TE_eq;
    if (!strcmp(name, "!=")) return TE_ne;
    if (!strcmp(name, "<")) return TE_lt;
    if (!strcmp(name, ">")) return TE_gt;
    if (!strcmp(name, "<=")) return TE_le;
    if (!strcmp(name, ">=")) return TE_ge;
    return -1;
}

static int filter_id(const char *name)
{
#define X(n) #n,
    static const char *const names[] = {JINJA_FILTERS(X) NULL};
#undef X
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

static jv attr_path(jctx *c, uint32_t pos, jv v, jstr *path)
{
    /* "a.b.0" dotted lookups as jinja's make_attrgetter */
    const char *s = path->s;
    size_t n = path->len, i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && s[j] != '.')
            j++;
        jv key;
        bool digits = j > i;
        for (size_t k = i; k < j; k++)
            if (s[k] < '0' || s[k] > '9')
                digits = false;
        if (digits)
            key = jv_int(strtoll(s + i, NULL, 10));
        else
            key = mkstr(c, s + i, j - i);
        if (v.t == JV_UNDEF)
            return v;
        v = get_item(c, pos, v, key);
        i = j + 1;
    }
    return v;
}

static int sort_cmp_ci(jctx *c, uint32_t pos, jv a, jv b, bool cs)
{
    if (!cs && a.t == JV_STR && b.t == JV_STR) {
        a = str_case(c, a.u.s, 0);
        b = str_case(c, b.u.s, 0);
    }
    return jv_compare(c, pos, a, b);
}

/* stable merge sort over keys (Python's sort is stable) */
static void msort(jctx *c, uint32_t pos, jv *keys, jv *vals, size_t n, bool cs, bool rev, jv *tk, jv *tv)
{
    if (n < 2)
        return;
    size_t m = n / 2;
    msort(c, pos, keys, vals, m, cs, rev, tk, tv);
    msort(c, pos, keys + m, vals + m, n - m, cs, rev, tk, tv);
    size_t i = 0, j = m, k = 0;
    while (i < m && j < n) {
        int r = sort_cmp_ci(c, pos, keys[j], keys[i], cs);
        bool take_right = rev ? r > 0 : r < 0;
        if (take_right) {
            tk[k] = keys[j];
            tv[k++] = vals[j++];
        } else {
            tk[k] = keys[i];
            tv[k++] = vals[i++];
        }
    }
    while (i < m) {
        tk[k] = keys[i];
        tv[k++] = vals[i++];
    }
    while (j < n) {
        tk[k] = keys[j];
        tv[k++] = vals[j++];
    }
    memcpy(keys, tk, n * sizeof(jv));
    memcpy(vals, tv, n * sizeof(jv));
}

static jlist *sorted(jctx *c, uint32_t pos, jlist *src, jv *keys, bool cs, bool rev)
{
    size_t n = src->n;
    jlist *out = jl_new(c, n ? n : 1);
    jv *k = xalloc(c, sizeof(jv) * (n ? n : 1));
    jv *tk = xalloc(c, sizeof(jv) * (n ? n : 1));
    jv *tv = xalloc(c, sizeof(jv) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        k[i] = keys ? keys[i] : src->v[i];
        out->v[i] = src->v[i];
    }
    out->n = n;
    msort(c, pos, k, out->v, n, cs, rev, tk, tv);
    return out;
}

static bool truthy_arg(args *a, int i, const char *name, bool def)
{
    jv *p = arg(a, i, name);
    return p ? jv_truthy(*p) : def;
}

static jv indent_filter(jctx *c, jstr *s, jstr *ind, bool first, bool blank)
{
    jbuf b = {0};
    /* s + "\n" split by lines */
    jlist *lines = jl_new(c, 0);
    size_t st = 0;
    for (size_t i = 0; i < s->len; i++) {
        char ch = s->s[i];
        if (ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f' || (ch >= 0x1c && ch <= 0x1e)) {
            jl_push(c, lines, mkstr(c, s->s + st, i - st));
            if (ch == '\r' && i + 1 < s->len && s->s[i + 1] == '\n')
                i++;
            st = i + 1;
        }
    }
    jl_push(c, lines, mkstr(c, s->s + st, s->len - st)); /* the line the appended "\n" closes */
    if (first)
        jb_put(c, &b, ind->s, ind->len);
    for (size_t i = 0; i < lines->n; i++) {
        jstr *ln = lines->v[i].u.s;
        if (i) {
            jb_puts(c, &b, "\n");
            if (blank || ln->len)
                jb_put(c, &b, ind->s, ind->len);
        }
        jb_put(c, &b, ln->s, ln->len);
    }
    return mkstr(c, b.p ? b.p : "", b.n);
}

static jv select_reject(jctx *c, const jnode *n, jv v, args *a, bool attr_mode, bool select)
{
    if (jv_truthy(v) && !iterable(v))
        return poisoned(c, "TypeError", xfmt(c, "'%s' object is not iterable", jv_typename(v), NULL));
    jlist *src = jv_truthy(v) ? iter_list(c, n->pos, v) : jl_new(c, 0);
    jlist *out = jl_new(c, 0);
    out->flags = JL_GENERATOR;
    int base = attr_mode ? 1 : 0;
    jstr *attr = NULL;
    if (attr_mode) {
        if (a->n < 1)
            FAIL(c, n->pos, "TypeError", "missing attribute argument");
        attr = as_str(c, n->pos, a->v[0], "attribute");
    }
    int tid = -1;
    const char *tname = NULL;
    if (a->n > base) {
        jstr *tn = as_str(c, n->pos, a->v[base], "test name");
        tname = tn->s;
        tid = test_id(tname);
        if (tid < 0)
            FAIL(c, n->pos, "TemplateRuntimeError", "No test named '%s'.", tname);
    }
    args ta = {0};
    if (a->n > base + 1) {
        ta.n = a->n - base - 1;
        ta.v = a->v + base + 1;
    }
    for (size_t i = 0; i < src->n; i++) {
        jv item = src->v[i];
        jv x = attr ? attr_path(c, n->pos, item, attr) : item;
        bool r = tid < 0 ? jv_truthy(x) : apply_test(c, n->pos, tid, tname, x, &ta);
        if (r == select)
            jl_push(c, out, item);
    }
    return jv_list(out);
}

static jv call_filter_by_name(jctx *c, const jnode *n, const char *name, jv v, args *a, jframe *f)
{
    int id = filter_id(name);
    if (id < 0)
        FAIL(c, n->pos, "TemplateRuntimeError", "No filter named '%s'.", name);
    jnode tmp = *n;
    tmp.id = (int16_t)id;
    tmp.name = name;
    return apply_filter(c, &tmp, v, a, f);
}

static double to_float(jv v, bool *ok)
{
    *ok = true;
    if (isnum(v))
        return fnum(v);
    if (v.t == JV_STR) {
        char *end;
        const char *s = v.u.s->s;
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        double d = strtod(s, &end);
        while (*end == ' ' || *end == '\t' || *end == '\n')
            end++;
        if (end != s && *end == 0)
            return d;
    }
    *ok = false;
    return 0;
}

static jv apply_filter(jctx *c, const jnode *n, jv v, args *a, jframe *f)
{
    uint32_t pos = n->pos;
    if (n->id < 0)
        FAIL(c, pos, "TemplateRuntimeError", "No filter named '%s' found.", n->name);
    switch (n->id) {
    case FI_safe: {
        if (v.t == JV_STR && v.u.s->markup)
            return v;
        jstr *s = jv_to_str(c, v);
        jstr *r = js_new(c, s->s, s->len);
        r->markup = 1;
        return jv_str(r);
    }
    case FI_string: return v.t == JV_STR ? v : jv_str(jv_to_str(c, v));
    case FI_length:
    case FI_count:
        switch (v.t) {
        case JV_STR: return jv_int((int64_t)jstr_cplen(v.u.s));
        case JV_LIST:
            if (v.u.l->flags & JL_GENERATOR)
                FAIL(c, pos, "TypeError", "object of type 'generator' has no len()");
            return jv_int((int64_t)v.u.l->n);
        case JV_DICT: return jv_int((int64_t)v.u.d->n);
        case JV_UNDEF: return jv_int(0);
        default: FAIL(c, pos, "TypeError", "object of type '%s' has no len()", jv_typename(v));
        }
    case FI_d:
    case FI_default: {
        jv *def = arg(a, 0, "default_value");
        bool boolean = truthy_arg(a, 1, "boolean", false);
        if (v.t == JV_UNDEF || (boolean && !jv_truthy(v)))
            return def ? *def : mkstr(c, "", 0);
        return v;
    }
    case FI_tojson: {
        jv *ea = arg(a, 0, "ensure_ascii"), *ind = arg(a, 1, "indent"), *sep = arg(a, 2, "separators"),
           *sk = arg(a, 3, "sort_keys");
        int indent = -1;
        if (ind && ind->t != JV_NONE) {
            if (ind->t == JV_INT)
                indent = (int)(ind->u.i < 0 ? 0 : ind->u.i > 64 ? 64 : ind->u.i);
            else
                FAIL(c, pos, "TypeError", "indent must be an integer");
        }
        const char *is = indent >= 0 ? "," : ", ", *ks = ": ";
        if (sep && sep->t == JV_LIST && sep->u.l->n == 2 && sep->u.l->v[0].t == JV_STR &&
            sep->u.l->v[1].t == JV_STR) {
            is = sep->u.l->v[0].u.s->s;
            ks = sep->u.l->v[1].u.s->s;
        }
        jbuf b = {0};
        jv_write_json(c, &b, v, ea && jv_truthy(*ea), indent, is, ks, sk && jv_truthy(*sk), 0, pos);
        return mkstr(c, b.p ? b.p : "", b.n);
    }
    case FI_trim: {
        jv *ch = arg(a, 0, "chars");
        jstr *s = jv_to_str(c, v);
        return str_strip(c, s, ch && ch->t != JV_NONE ? as_str(c, pos, *ch, "chars") : NULL, 3);
    }
    case FI_upper: return str_case(c, jv_to_str(c, v), 1);
    case FI_lower: return str_case(c, jv_to_str(c, v), 0);
    case FI_capitalize: return str_case(c, jv_to_str(c, v), 2);
    case FI_title: return title_filter(c, jv_to_str(c, v));
    case FI_replace: {
        jv *o = arg(a, 0, "old"), *nw = arg(a, 1, "new"), *cnt = arg(a, 2, "count");
        if (!o || !nw)
            FAIL(c, pos, "TypeError", "replace filter needs old and new");
        return str_replace(c, jv_to_str(c, v), jv_to_str(c, *o), jv_to_str(c, *nw),
                           cnt && cnt->t != JV_NONE ? as_int(c, pos, *cnt, "count") : -1);
    }
    case FI_join: {
        jv *d = arg(a, 0, "d"), *at = arg(a, 1, "attribute");
        jstr *sep = d ? jv_to_str(c, *d) : js_new(c, "", 0);
        jlist *l = iter_list(c, pos, v);
        jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                jb_put(c, &b, sep->s, sep->len);
            jv x = l->v[i];
            if (at && at->t == JV_STR)
                x = attr_path(c, pos, x, at->u.s);
            jv_write_str(c, &b, x);
        }
        return mkstr(c, b.p ? b.p : "", b.n);
    }
    case FI_first:
    case FI_last: {
        if (v.t == JV_STR) {
            if (!v.u.s->len)
                return jv_undef("No first item, sequence was empty.");
            if (n->id == FI_first)
                return mkstr(c, v.u.s->s, cp_len_at(v.u.s->s, v.u.s->len));
            size_t st = cp_start_before(v.u.s->s, v.u.s->len);
            return mkstr(c, v.u.s->s + st, v.u.s->len - st);
        }
        if (n->id == FI_last && v.t == JV_LIST && (v.u.l->flags & JL_GENERATOR))
            FAIL(c, pos, "TypeError", "'generator' object is not reversible");
        if (n->id == FI_first && v.t == JV_LIST && (v.u.l->flags & JL_GENERATOR)) {
            /* next(): takes one item off the generator */
            jlist *g = v.u.l;
            if (!g->n)
                return jv_undef("No first item, sequence was empty.");
            jv r = g->v[0];
            g->v++;
            g->n--;
            g->cap--;
            return r;
        }
        jlist *l = iter_list(c, pos, v);
        if (!l->n)
            return jv_undef(n->id == FI_first ? "No first item, sequence was empty."
                                              : "No last item, sequence was empty.");
        return n->id == FI_first ? l->v[0] : l->v[l->n - 1];
    }
    case FI_list: {
        jlist *src = iter_list(c, pos, v);
        jlist *l = jl_new(c, src->n);
        for (size_t i = 0; i < src->n; i++)
            jl_push(c, l, src->v[i]);
        return jv_list(l);
    }
    case FI_items: {
        if (v.t == JV_UNDEF) {
            jlist *l = jl_new(c, 0);
            l->flags = JL_GENERATOR;
            return jv_list(l);
        }
        if (v.t != JV_DICT)
            return poisoned(c, "TypeError", "Can only get item pairs from a mapping.");
        args none = {0};
        jv r = call_method(c, pos, v, "items", &none);
        r.u.l->flags = JL_GENERATOR;
        return r;
    }
    case FI_dictsort: {
        if (v.t != JV_DICT)
            FAIL(c, pos, "TypeError", "dictsort filter needs a mapping");
        bool cs = truthy_arg(a, 0, "case_sensitive", false);
        jv *by = arg(a, 1, "by");
        bool rev = truthy_arg(a, 2, "reverse", false);
        bool byval = by && by->t == JV_STR && !strcmp(by->u.s->s, "value");
        args none = {0};
        jlist *items = call_method(c, pos, v, "items", &none).u.l;
        jv *keys = xalloc(c, sizeof(jv) * (items->n + 1));
        for (size_t i = 0; i < items->n; i++)
            keys[i] = items->v[i].u.l->v[byval ? 1 : 0];
        return jv_list(sorted(c, pos, items, keys, cs, rev));
    }
    case FI_sort: {
        bool rev = truthy_arg(a, 0, "reverse", false);
        bool cs = truthy_arg(a, 1, "case_sensitive", false);
        jv *at = arg(a, 2, "attribute");
        jlist *src = iter_list(c, pos, v);
        jv *keys = NULL;
        if (at && at->t == JV_STR) {
            keys = xalloc(c, sizeof(jv) * (src->n + 1));
            for (size_t i = 0; i < src->n; i++)
                keys[i] = attr_path(c, pos, src->v[i], at->u.s);
        }
        return jv_list(sorted(c, pos, src, keys, cs, rev));
    }
    case FI_reverse: {
        if (v.t == JV_STR) {
            jbuf b = {0};
            jstr *s = v.u.s;
            for (size_t e = s->len; e > 0;) {
                size_t st = cp_start_before(s->s, e);
                jb_put(c, &b, s->s + st, e - st);
                e = st;
            }
            return mkstr(c, b.p ? b.p : "", b.n);
        }
        jlist *src = iter_list(c, pos, v);
        jlist *l = jl_new(c, src->n);
        for (size_t i = src->n; i-- > 0;)
            jl_push(c, l, src->v[i]);
        l->flags = JL_GENERATOR;
        return jv_list(l);
    }
    case FI_unique: {
        if (!iterable(v))
            return poisoned(c, "TypeError", xfmt(c, "'%s' object is not iterable", jv_typename(v), NULL));
        bool cs = truthy_arg(a, 0, "case_sensitive", false);
        jv *at = arg(a, 1, "attribute");
        jlist *src = iter_list(c, pos, v);
        jlist *l = jl_new(c, 0), *seen = jl_new(c, 0);
        l->flags = JL_GENERATOR;
        for (size_t i = 0; i < src->n; i++) {
            jv k = src->v[i];
            if (at && at->t == JV_STR)
                k = attr_path(c, pos, k, at->u.s);
            if (!cs && k.t == JV_STR)
                k = str_case(c, k.u.s, 0);
            bool dup = false;
            for (size_t j = 0; j < seen->n && !dup; j++)
                dup = jv_equal(seen->v[j], k);
            if (!dup) {
                jl_push(c, seen, k);
                jl_push(c, l, src->v[i]);
            }
        }
        return jv_list(l);
    }
    case FI_map: {
        if (jv_truthy(v) && !iterable(v))
            return poisoned(c, "TypeError", xfmt(c, "'%s' object is not iterable", jv_typename(v), NULL));
        jlist *src = jv_truthy(v) ? iter_list(c, pos, v) : jl_new(c, 0);
        jlist *l = jl_new(c, src->n);
        l->flags = JL_GENERATOR;
        jv *at = NULL;
        for (int k = 0; k < a->nk; k++)
            if (!strcmp(a->kn[k], "attribute"))
                at = &a->kv[k];
        if (at) {
            jv *def = NULL;
            for (int k = 0; k < a->nk; k++)
                if (!strcmp(a->kn[k], "default"))
                    def = &a->kv[k];
            jstr *path = jv_to_str(c, *at);
            for (size_t i = 0; i < src->n; i++) {
                jv x = attr_path(c, pos, src->v[i], path);
                if (x.t == JV_UNDEF && def)
                    x = *def;
                jl_push(c, l, x);
            }
            return jv_list(l);
        }
        if (a->n < 1)
            return jv_list(l);
        jstr *fname = as_str(c, pos, a->v[0], "filter name");
        args fa = {0};
        fa.n = a->n - 1;
        fa.v = a->v + 1;
        fa.nk = a->nk;
        fa.kn = a->kn;
        fa.kv = a->kv;
        for (size_t i = 0; i < src->n; i++)
            jl_push(c, l, call_filter_by_name(c, n, fname->s, src->v[i], &fa, f));
        return jv_list(l);
    }
    case FI_select: return select_reject(c, n, v, a, false, true);
    case FI_reject: return select_reject(c, n, v, a, false, false);
    case FI_selectattr: return select_reject(c, n, v, a, true, true);
    case FI_rejectattr: return select_reject(c, n, v, a, true, false);
    case FI_int: {
        if (v.t == JV_UNDEF)
            undef_fail(c, pos, v);
        jv *def = arg(a, 0, "default");
        jv *base = arg(a, 1, "base");
        if (v.t == JV_INT)
            return v;
        if (v.t == JV_BOOL)
            return jv_int(v.u.b);
        if (v.t == JV_FLOAT) {
            if (isfinite(v.u.f) && fabs(v.u.f) < 9.2e18)
                return jv_int((int64_t)v.u.f);
        } else if (v.t == JV_STR) {
            char *end;
            const char *s = v.u.s->s;
            int b = base ? (int)as_int(c, pos, *base, "base") : 10;
            while (py_space((unsigned char)*s))
                s++;
            long long r = strtoll(s, &end, b);
            const char *e = end;
            while (py_space((unsigned char)*e))
                e++;
            if (end != s && *e == 0)
                return jv_int(r);
            bool ok;
            double d = to_float(v, &ok);
            if (ok && isfinite(d) && fabs(d) < 9.2e18)
                return jv_int((int64_t)d);
        }
        return def ? *def : jv_int(0);
    }
    case FI_float: {
        if (v.t == JV_UNDEF)
            undef_fail(c, pos, v);
        jv *def = arg(a, 0, "default");
        bool ok;
        double d = to_float(v, &ok);
        if (ok)
            return jv_float(d);
        return def ? *def : jv_float(0.0);
    }
    case FI_abs:
        if (v.t == JV_INT)
            return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.t == JV_FLOAT)
            return jv_float(fabs(v.u.f));
        if (v.t == JV_BOOL)
            return jv_int(v.u.b);
        FAIL(c, pos, "TypeError", "bad operand type for abs(): '%s'", jv_typename(v));
    case FI_round: {
        jv *pr = arg(a, 0, "precision"), *meth = arg(a, 1, "method");
        int64_t p = pr ? as_int(c, pos, *pr, "precision") : 0;
        if (!isnum(v))
            FAIL(c, pos, "TypeError", "round filter needs a number");
        if ((v.t == JV_INT || v.t == JV_BOOL) && !(meth && meth->t == JV_STR && strcmp(meth->u.s->s, "common")))
            return p >= 0 ? jv_int(inum(v)) : jv_int((int64_t)nearbyint((double)inum(v) / pow(10.0, (double)-p)) *
                                                     (int64_t)pow(10.0, (double)-p));
        double x = fnum(v), m = pow(10.0, (double)p), r;
        const char *md = meth && meth->t == JV_STR ? meth->u.s->s : "common";
        if (!strcmp(md, "ceil"))
            r = ceil(x * m) / m;
        else if (!strcmp(md, "floor"))
            r = floor(x * m) / m;
        else {
            /* Python round(): half to even on the decimal value */
            char buf[64];
            snprintf(buf, sizeof buf, "%.*f", (int)(p < 0 ? 0 : p > 30 ? 30 : p), x);
            r = p >= 0 ? strtod(buf, NULL) : nearbyint(x * m) / m;
        }
        return jv_float(r);
    }
    case FI_sum: {
        jv *at = arg(a, 0, "attribute"), *start = arg(a, 1, "start");
        jlist *src = iter_list(c, pos, v);
        jv acc = start ? *start : jv_int(0);
        for (size_t i = 0; i < src->n; i++) {
            jv x = src->v[i];
            if (at && at->t == JV_STR)
                x = attr_path(c, pos, x, at->u.s);
            acc = arith(c, pos, OP_ADD, acc, x);
        }
        return acc;
    }
    case FI_min:
    case FI_max: {
        bool cs = truthy_arg(a, 0, "case_sensitive", false);
        jv *at = arg(a, 1, "attribute");
        jlist *src = iter_list(c, pos, v);
        if (!src->n)
            return jv_undef("No aggregated item, sequence was empty.");
        jv best = src->v[0], bk = at && at->t == JV_STR ? attr_path(c, pos, best, at->u.s) : best;
        for (size_t i = 1; i < src->n; i++) {
            jv k = at && at->t == JV_STR ? attr_path(c, pos, src->v[i], at->u.s) : src->v[i];
            int r = sort_cmp_ci(c, pos, k, bk, cs);
            if (n->id == FI_min ? r < 0 : r > 0) {
                best = src->v[i];
                bk = k;
            }
        }
        return best;
    }
    case FI_indent: {
        if (v.t == JV_UNDEF)
            undef_fail(c, pos, v);
        if (v.t != JV_STR)
            FAIL(c, pos, "TypeError", "unsupported operand type(s) for +=: '%s' and 'str'", jv_typename(v));
        jv *w = arg(a, 0, "width");
        bool first = truthy_arg(a, 1, "first", false), blank = truthy_arg(a, 2, "blank", false);
        jstr *ind;
        if (w && w->t == JV_STR)
            ind = w->u.s;
        else {
            int64_t k = w ? as_int(c, pos, *w, "width") : 4;
            if (k < 0)
                k = 0;
            if (k > 4096)
                FAIL(c, pos, "ValueError", "indent width too large");
            char *sp = xalloc(c, (size_t)k + 1);
            memset(sp, ' ', (size_t)k);
            ind = js_new(c, sp, (size_t)k);
        }
        return indent_filter(c, jv_to_str(c, v), ind, first, blank);
    }
    case FI_wordcount: {
        jstr *s = jv_to_str(c, v);
        int64_t k = 0;
        bool in = false;
        for (size_t i = 0; i < s->len;) {
            size_t adv;
            uint32_t cp = dec_cp(s->s + i, s->len - i, &adv);
            const utf8proc_property_t *pr = utf8proc_get_property((utf8proc_int32_t)cp);
            bool w = cp == '_' || (pr->category >= UTF8PROC_CATEGORY_LU && pr->category <= UTF8PROC_CATEGORY_LO) ||
                     (pr->category >= UTF8PROC_CATEGORY_ND && pr->category <= UTF8PROC_CATEGORY_NO);
            if (w && !in)
                k++;
            in = w;
            i += adv;
        }
        return jv_int(k);
    }
    case FI_e:
    case FI_escape:
    case FI_forceescape: {
        if (n->id != FI_forceescape && v.t == JV_STR && v.u.s->markup)
            return v;
        jstr *s = jv_to_str(c, v);
        jbuf b = {0};
        for (size_t i = 0; i < s->len; i++) {
            char ch = s->s[i];
            switch (ch) {
            case '&': jb_puts(c, &b, "&amp;"); break;
            case '<': jb_puts(c, &b, "&lt;"); break;
            case '>': jb_puts(c, &b, "&gt;"); break;
            case '"': jb_puts(c, &b, "&#34;"); break;
            case '\'': jb_puts(c, &b, "&#39;"); break;
            default: jb_put(c, &b, &ch, 1);
            }
        }
        jv r = mkstr(c, b.p ? b.p : "", b.n);
        r.u.s->markup = 1;
        return r;
    }
    case FI_format: {
        jstr *s = jv_to_str(c, v);
        jv tv;
        if (a->n == 1 && a->v[0].t != JV_LIST) {
            tv = a->v[0];
            if (tv.t == JV_LIST) {
                jlist *l = jl_new(c, 1);
                l->flags = JL_TUPLE;
                jl_push(c, l, tv);
                tv = jv_list(l);
            }
        } else {
            jlist *l = jl_new(c, (size_t)a->n);
            l->flags = JL_TUPLE;
            for (int i = 0; i < a->n; i++)
                jl_push(c, l, a->v[i]);
            tv = jv_list(l);
        }
        return str_percent(c, pos, s, tv);
    }
    case FI_center: {
        args m = *a;
        return call_method(c, pos, jv_str(jv_to_str(c, v)), "center", &m);
    }
    case FI_attr: {
        jv *nm = arg(a, 0, "name");
        if (!nm || nm->t != JV_STR)
            FAIL(c, pos, "TypeError", "attr filter needs a name");
        return get_attr(c, pos, v, nm->u.s->s, false);
    }
    case FI_batch: {
        jv *sz = arg(a, 0, "linecount"), *fill = arg(a, 1, "fill_with");
        int64_t k = sz ? as_int(c, pos, *sz, "linecount") : 1;
        if (k <= 0)
            FAIL(c, pos, "ValueError", "batch size must be positive");
        if (!iterable(v))
            return poisoned(c, "TypeError", xfmt(c, "'%s' object is not iterable", jv_typename(v), NULL));
        jlist *src = iter_list(c, pos, v), *out = jl_new(c, 0), *cur = NULL;
        out->flags = JL_GENERATOR;
        for (size_t i = 0; i < src->n; i++) {
            if (!cur || (int64_t)cur->n == k) {
                cur = jl_new(c, 0);
                jl_push(c, out, jv_list(cur));
            }
            jl_push(c, cur, src->v[i]);
        }
        if (cur && fill)
            while ((int64_t)cur->n < k)
                jl_push(c, cur, *fill);
        return jv_list(out);
    }
    case FI_pprint: {
        jbuf b = {0};
        jv_write_repr(c, &b, v);
        return mkstr(c, b.p ? b.p : "", b.n);
    }
    case FI_striptags: {
        jstr *s = jv_to_str(c, v);
        jbuf b = {0};
        bool tag = false, sp = false, any = false;
        for (size_t i = 0; i < s->len; i++) {
            char ch = s->s[i];
            if (ch == '<')
                tag = true;
            else if (ch == '>' && tag)
                tag = false;
            else if (!tag) {
                if (py_space((unsigned char)ch)) {
                    sp = any;
                } else {
                    if (sp)
                        jb_puts(c, &b, " ");
                    sp = false;
                    any = true;
                    jb_put(c, &b, &ch, 1);
                }
            }
        }
        return mkstr(c, b.p ? b.p : "", b.n);
    }
    case FI_truncate: {
        jstr *s = jv_to_str(c, v);
        jv *ln = arg(a, 0, "length"), *kw = arg(a, 1, "killwords"), *end = arg(a, 2, "end"),
           *lee = arg(a, 3, "leeway");
        int64_t length = ln ? as_int(c, pos, *ln, "length") : 255;
        int64_t leeway = lee ? as_int(c, pos, *lee, "leeway") : 5;
        jstr *e = end ? jv_to_str(c, *end) : js_cstr(c, "...");
        if (length < (int64_t)jstr_cplen(e))
            FAIL(c, pos, "AssertionError", "expected length >= %zu, got %lld", jstr_cplen(e), (long long)length);
        if (leeway < 0)
            FAIL(c, pos, "AssertionError", "expected leeway >= 0, got %lld", (long long)leeway);
        size_t ncp;
        size_t *off = cp_offsets(c, s, &ncp);
        if ((int64_t)ncp <= length + leeway)
            return jv_str(s);
        int64_t keep = length - (int64_t)jstr_cplen(e);
        if (keep < 0)
            keep = 0;
        size_t cut = off[keep];
        if (!(kw && jv_truthy(*kw))) {
            size_t sp = cut;
            while (sp > 0 && s->s[sp - 1] != ' ')
                sp--;
            if (sp > 0)
                cut = sp - 1;
        }
        jbuf b = {0};
        jb_put(c, &b, s->s, cut);
        jb_put(c, &b, e->s, e->len);
        return mkstr(c, b.p, b.n);
    }
    default: FAIL(c, pos, "TemplateRuntimeError", "filter '%s' is not implemented", n->name);
    }
}

static bool apply_test(jctx *c, uint32_t pos, int id, const char *name, jv v, args *a)
{
    jv *x = arg(a, 0, "other");
    if (id < 0)
        FAIL(c, pos, "TemplateRuntimeError", "No test named '%s' found.", name);
    switch (id) {
    case TE_defined: return v.t != JV_UNDEF;
    case TE_undefined: return v.t == JV_UNDEF;
    case TE_none: return v.t == JV_NONE;
    case TE_boolean: return v.t == JV_BOOL;
    case TE_false: return v.t == JV_BOOL && !v.u.b;
    case TE_true: return v.t == JV_BOOL && v.u.b;
    case TE_integer: return v.t == JV_INT;
    case TE_float: return v.t == JV_FLOAT;
    case TE_number: return isnum(v);
    case TE_string: return v.t == JV_STR;
    case TE_mapping: return v.t == JV_DICT;
    case TE_iterable: return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
    case TE_sequence:
        return v.t == JV_STR || v.t == JV_UNDEF || (v.t == JV_LIST && !(v.u.l->flags & (JL_GENERATOR | JL_ITEMS | JL_KEYS | JL_VALUES))) ||
               v.t == JV_DICT;
    case TE_callable: return v.t == JV_UNDEF || v.t == JV_MACRO || v.t == JV_BUILTIN || v.t == JV_BOUND || v.t == JV_CYCLER;
    case TE_escaped: return false;
    case TE_lower:
    case TE_upper: {
        args none = {0};
        return jv_truthy(call_method(c, pos, jv_str(jv_to_str(c, v)), id == TE_lower ? "islower" : "isupper", &none));
    }
    case TE_even:
    case TE_odd: {
        jv r = arith(c, pos, OP_MOD, v, jv_int(2));
        return jv_equal(r, jv_int(id == TE_odd ? 1 : 0));
    }
    case TE_divisibleby: {
        if (!x)
            FAIL(c, pos, "TypeError", "divisibleby needs an argument");
        jv r = arith(c, pos, OP_MOD, v, *x);
        return !jv_truthy(r);
    }
    case TE_filter:
    case TE_test:
        return v.t == JV_STR && (id == TE_filter ? filter_id(v.u.s->s) : test_id(v.u.s->s)) >= 0;
    default: break;
    }
    if (!x)
        FAIL(c, pos, "TypeError", "test '%s' needs an argument", name);
    switch (id) {
    case TE_eq:
    case TE_equalto: return jv_equal(v, *x);
    case TE_ne: return !jv_equal(v, *x);
    case TE_sameas:
        if (v.t != x->t)
            return false;
        if (v.t == JV_NONE || v.t == JV_UNDEF)
            return true;
        if (v.t == JV_BOOL || v.t == JV_INT)
            return jv_equal(v, *x);
        if (v.t == JV_STR)
            return v.u.s == x->u.s;
        return v.u.l == x->u.l;
    case TE_lt:
    case TE_lessthan: return compare_op(c, pos, OP_LT, v, *x);
    case TE_le: return compare_op(c, pos, OP_LE, v, *x);
    case TE_gt:
    case TE_greaterthan: return compare_op(c, pos, OP_GT, v, *x);
    case TE_ge: return compare_op(c, pos, OP_GE, v, *x);
    case TE_in: return contains(c, pos, v, *x);
    default: FAIL(c, pos, "TemplateRuntimeError", "test '%s' is not implemented", name);
    }
}

/* ---- macros and calls ---- */
static void capture_begin(jctx *c, jbuf **saved, jbuf *nb)
{
    *saved = c->out;
    memset(nb, 0, sizeof *nb);
    c->out = nb;
}

static jv capture_end(jctx *c, jbuf *saved, jbuf *nb)
{
    c->out = saved;
    return mkstr(c, nb->p ? nb->p : "", nb->n);
}

static jv call_macro(jctx *c, uint32_t pos, struct jmacro *m, args *a, jv caller)
{
    const jnode *def = m->def;
    if (++c->calls > c->max_calls)
        FAIL(c, pos, "RecursionError", "maximum macro call depth (%u) exceeded", c->max_calls);
    /* calls count against the same work budget as loop iterations: a branching
     * recursion stays shallow but would otherwise run for ever */
    if (++c->iters > c->max_iter)
        FAIL(c, pos, "LimitError", "work limit (%llu loop iterations and macro calls) exceeded",
             (unsigned long long)c->max_iter);
    jframe *f = frame_new(c, m->closure);
    int np = def->nnames;
    jlist *varargs = jl_new(c, 0);
    varargs->flags = JL_TUPLE;
    if (a->n > np && !m->is_caller && !(def->neg & 1))
        FAIL(c, pos, "TypeError", "macro '%s' takes not more than %d argument(s)", def->name, np);
    for (int i = 0; i < a->n; i++) {
        if (i < np)
            frame_set(c, f, def->names[i], a->v[i]);
        else
            jl_push(c, varargs, a->v[i]);
    }
    jdict *kw = jd_new(c, 0);
    for (int k = 0; k < a->nk; k++) {
        int i;
        for (i = 0; i < np; i++)
            if (!strcmp(def->names[i], a->kn[k]))
                break;
        if (i < np) {
            if (i < a->n)
                FAIL(c, pos, "TypeError", "macro '%s' got multiple values for argument '%s'",
                     def->name ? def->name : "caller", a->kn[k]);
            frame_set(c, f, def->names[i], a->kv[k]);
        } else if (!strcmp(a->kn[k], "caller") && !m->is_caller) {
            caller = a->kv[k];
        } else {
            if (!m->is_caller && !(def->neg & 2))
                FAIL(c, pos, "TypeError", "macro '%s' takes no keyword argument '%s'", def->name, a->kn[k]);
            jd_set(c, kw, mkcstr(c, a->kn[k]), a->kv[k]);
        }
    }
    for (int i = a->n; i < np; i++) {
        bool given = false;
        for (int k = 0; k < f->n; k++)
            if (!strcmp(f->names[k], def->names[i]))
                given = true;
        if (given)
            continue;
        if (def->list2[i])
            frame_set(c, f, def->names[i], eval(c, def->list2[i], f));
        else
            frame_set(c, f, def->names[i],
                      jv_undef(xfmt(c, "parameter '%s' was not provided", def->names[i], NULL)));
    }
    if (m->is_caller || (def->neg & 1))
        frame_set(c, f, "varargs", jv_list(varargs));
    if (m->is_caller || (def->neg & 2))
        frame_set(c, f, "kwargs", jv_dict(kw));
    if (!m->is_caller) {
        if (caller.t && !(def->neg & 4))
            FAIL(c, pos, "TypeError", "macro '%s' was invoked with two values for the special caller argument.",
                 def->name);
        frame_set(c, f, "caller", caller.t ? caller : jv_undef("'caller' is undefined"));
    }
    jbuf *saved, nb;
    capture_begin(c, &saved, &nb);
    int brk = c->brk;
    exec(c, def->b, f);
    c->brk = brk;
    c->calls--;
    return capture_end(c, saved, &nb);
}

static jv run_for(jctx *c, const jnode *n, jframe *f, jv iterable, int depth);

static jv call_builtin(jctx *c, uint32_t pos, int id, args *a)
{
    switch (id) {
    case B_RANGE: {
        int64_t st = 0, sp, step = 1;
        if (a->n == 1) {
            sp = as_int(c, pos, a->v[0], "range() argument");
        } else if (a->n >= 2) {
            st = as_int(c, pos, a->v[0], "range() argument");
            sp = as_int(c, pos, a->v[1], "range() argument");
            if (a->n >= 3)
                step = as_int(c, pos, a->v[2], "range() argument");
        } else {
            FAIL(c, pos, "TypeError", "range expected at least 1 argument, got 0");
        }
        if (step == 0)
            FAIL(c, pos, "ValueError", "range() arg 3 must not be zero");
        double cnt = step > 0 ? ceil(((double)sp - (double)st) / (double)step)
                              : ceil(((double)st - (double)sp) / (double)-step);
        if (cnt < 0)
            cnt = 0;
        /* jinja2's sandbox caps range() at MAX_RANGE = 100000 items */
        if (cnt > 100000.0)
            FAIL(c, pos, "OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        if (cnt > (double)c->max_iter)
            FAIL(c, pos, "OverflowError", "range too big, maximum size is %llu", (unsigned long long)c->max_iter);
        jlist *l = jl_new(c, (size_t)cnt);
        for (int64_t i = 0; i < (int64_t)cnt; i++)
            jl_push(c, l, jv_int(st + i * step));
        l->flags = JL_RANGE;
        l->range_stop = sp;
        return jv_list(l);
    }
    case B_NAMESPACE:
    case B_DICT: {
        jdict *d = jd_new(c, 0);
        for (int i = 0; i < a->n; i++) {
            if (a->v[i].t == JV_DICT || a->v[i].t == JV_NS)
                for (size_t k = 0; k < a->v[i].u.d->n; k++)
                    jd_set(c, d, a->v[i].u.d->k[k], a->v[i].u.d->v[k]);
            else
                FAIL(c, pos, "TypeError", "%s() positional arguments must be mappings",
                     builtin_names[id]);
        }
        for (int k = 0; k < a->nk; k++)
            jd_set(c, d, mkcstr(c, a->kn[k]), a->kv[k]);
        jv v = {.t = id == B_NAMESPACE ? JV_NS : JV_DICT};
        v.u.d = d;
        return v;
    }
    case B_RAISE: {
        jstr *m = a->n ? jv_to_str(c, a->v[0]) : js_cstr(c, "");
        FAIL(c, pos, "TemplateError", "%s", m->s);
    }
    case B_STRFTIME: {
        if (a->n < 1 || a->v[0].t != JV_STR)
            FAIL(c, pos, "TypeError", "strftime_now() needs a format string");
        time_t t = c->now >= 0 ? (time_t)c->now : time(NULL);
        struct tm tm;
        if (c->now >= 0)
            gmtime_r(&t, &tm);
        else
            localtime_r(&t, &tm);
        char buf[512];
        size_t r = strftime(buf, sizeof buf, a->v[0].u.s->s, &tm);
        if (r == 0 && a->v[0].u.s->len)
            FAIL(c, pos, "ValueError", "strftime format too long");
        return mkstr(c, buf, r);
    }
    case B_CYCLER: {
        struct jcycler *cy = xalloc(c, sizeof *cy);
        cy->items = jl_new(c, (size_t)a->n);
        for (int i = 0; i < a->n; i++)
            jl_push(c, cy->items, a->v[i]);
        jv v = {.t = JV_CYCLER};
        v.u.cyc = cy;
        return v;
    }
    case B_JOINER: {
        struct jcycler *cy = xalloc(c, sizeof *cy);
        jv *sep = arg(a, 0, "sep");
        cy->sep = sep ? jv_to_str(c, *sep) : js_cstr(c, ", ");
        jv v = {.t = JV_JOINER};
        v.u.cyc = cy;
        return v;
    }
    }
    FAIL(c, pos, "TypeError", "unknown builtin");
}

static jv call_value(jctx *c, uint32_t pos, jv fn, args *a, jv caller)
{
    switch (fn.t) {
    case JV_MACRO: return call_macro(c, pos, fn.u.m, a, caller);
    case JV_BUILTIN: return call_builtin(c, pos, fn.u.builtin, a);
    case JV_BOUND: return call_method(c, pos, fn.u.bound->self, fn.u.bound->name, a);
    case JV_CYCLER: FAIL(c, pos, "TypeError", "'Cycler' object is not callable");
    case JV_JOINER:
        if (!fn.u.cyc->used) {
            fn.u.cyc->used = 1;
            return mkstr(c, "", 0);
        }
        return jv_str(fn.u.cyc->sep);
    case JV_LOOP: {
        struct jloop *l = fn.u.loop;
        if (!l->node->neg)
            FAIL(c, pos, "TypeError", "Tried to call non recursive loop.");
        if (a->n != 1)
            FAIL(c, pos, "TypeError", "loop() takes exactly one argument");
        return run_for(c, l->node, l->frame, a->v[0], l->depth + 1);
    }
    case JV_UNDEF: undef_fail(c, pos, fn);
    default: FAIL(c, pos, "TypeError", "'%s' object is not callable", jv_typename(fn));
    }
}

static jv eval_call(jctx *c, const jnode *n, jframe *f, jv caller)
{
    const jnode *callee = n->a;
    if (callee->kind == N_ATTR) {
        jv self = eval(c, callee->a, f);
        jv fn = get_attr(c, callee->pos, self, callee->name, false);
        args a = eval_args(c, n, f);
        return call_value(c, n->pos, fn, &a, caller);
    }
    jv fn = eval(c, callee, f);
    args a = eval_args(c, n, f);
    return call_value(c, n->pos, fn, &a, caller);
}

/* ---- expressions ---- */
static jv eval_filter_chain(jctx *c, const jnode *n, jframe *f, jv hole)
{
    jv v = n->a ? (n->a->kind == N_FILTER ? eval_filter_chain(c, n->a, f, hole) : eval(c, n->a, f)) : hole;
    args a = eval_args(c, n, f);
    return apply_filter(c, n, v, &a, f);
}

static jv eval(jctx *c, const jnode *n, jframe *f)
{
    if (++c->depth > 1000)
        FAIL(c, n->pos, "RecursionError", "expression nested too deeply");
    jv r;
    switch (n->kind) {
    case N_LIT: r = n->val; break;
    case N_NAME: {
        jv *p = frame_find(f, n->name);
        r = p ? *p : jv_undef(xfmt(c, "'%s' is undefined", n->name, NULL));
        break;
    }
    case N_ATTR: r = get_attr(c, n->pos, eval(c, n->a, f), n->name, true); break;
    case N_ITEM: {
        jv o = eval(c, n->a, f);
        r = get_item(c, n->pos, o, eval(c, n->b, f));
        break;
    }
    case N_SLICE: {
        jv o = eval(c, n->a, f);
        jv a, b, d;
        if (n->b)
            a = eval(c, n->b, f);
        if (n->c)
            b = eval(c, n->c, f);
        if (n->d)
            d = eval(c, n->d, f);
        r = slice_val(c, n->pos, o, n->b ? &a : NULL, n->c ? &b : NULL, n->d ? &d : NULL);
        break;
    }
    case N_CALL: r = eval_call(c, n, f, jv_undef(NULL)); break;
    case N_FILTER: r = eval_filter_chain(c, n, f, jv_undef(NULL)); break;
    case N_TEST: {
        jv v = eval(c, n->a, f);
        args a = eval_args(c, n, f);
        r = jv_bool(apply_test(c, n->pos, n->id, n->name, v, &a) != (n->neg != 0));
        break;
    }
    case N_BIN: {
        jv a = eval(c, n->a, f);
        r = arith(c, n->pos, n->id, a, eval(c, n->b, f));
        break;
    }
    case N_NEG:
    case N_POS: {
        jv v = eval(c, n->a, f);
        if (v.t == JV_UNDEF)
            undef_fail(c, n->pos, v);
        if (!isnum(v))
            FAIL(c, n->pos, "TypeError", "bad operand type for unary %c: '%s'", n->kind == N_NEG ? '-' : '+',
                 jv_typename(v));
        if (n->kind == N_POS)
            r = v.t == JV_BOOL ? jv_int(v.u.b) : v;
        else if (v.t == JV_FLOAT)
            r = jv_float(-v.u.f);
        else {
            int64_t i = inum(v);
            if (i == INT64_MIN)
                FAIL(c, n->pos, "OverflowError", "integer overflow");
            r = jv_int(-i);
        }
        break;
    }
    case N_NOT: r = jv_bool(!jv_truthy(eval(c, n->a, f))); break;
    case N_AND: {
        jv a = eval(c, n->a, f);
        r = jv_truthy(a) ? eval(c, n->b, f) : a;
        break;
    }
    case N_OR: {
        jv a = eval(c, n->a, f);
        r = jv_truthy(a) ? a : eval(c, n->b, f);
        break;
    }
    case N_CMP: {
        jv a = eval(c, n->list[0], f);
        r = jv_bool(1);
        for (int i = 1; i < n->n; i++) {
            jv b = eval(c, n->list[i], f);
            if (!compare_op(c, n->pos, n->ops[i - 1], a, b)) {
                r = jv_bool(0);
                break;
            }
            a = b;
        }
        break;
    }
    case N_CONCAT: {
        jbuf b = {0};
        for (int i = 0; i < n->n; i++)
            jv_write_str(c, &b, eval(c, n->list[i], f));
        r = mkstr(c, b.p ? b.p : "", b.n);
        break;
    }
    case N_COND:
        if (jv_truthy(eval(c, n->a, f)))
            r = eval(c, n->b, f);
        else
            r = n->c ? eval(c, n->c, f) : jv_undef("the inline if-expression evaluated to false and no else section was defined.");
        break;
    case N_LIST:
    case N_TUPLE: {
        jlist *l = jl_new(c, (size_t)n->n);
        if (n->kind == N_TUPLE)
            l->flags = JL_TUPLE;
        for (int i = 0; i < n->n; i++)
            jl_push(c, l, eval(c, n->list[i], f));
        r = jv_list(l);
        break;
    }
    case N_DICT: {
        jdict *d = jd_new(c, (size_t)n->n);
        for (int i = 0; i < n->n; i++) {
            jv k = eval(c, n->list[i], f);
            if (k.t == JV_LIST && !(k.u.l->flags & JL_TUPLE))
                FAIL(c, n->pos, "TypeError", "unhashable type: 'list'");
            if (k.t == JV_DICT)
                FAIL(c, n->pos, "TypeError", "unhashable type: 'dict'");
            jd_set(c, d, k, eval(c, n->list2[i], f));
        }
        r = jv_dict(d);
        break;
    }
    default: FAIL(c, n->pos, "TemplateRuntimeError", "cannot evaluate node");
    }
    c->depth--;
    return r;
}

/* ---- statements ---- */
static void assign(jctx *c, uint32_t pos, jframe *f, const char **names, int nn, jv v)
{
    if (nn == 1) {
        frame_set(c, f, names[0], v);
        return;
    }
    if (v.t == JV_UNDEF)
        undef_fail(c, pos, v);
    jlist *l = iter_list(c, pos, v);
    if ((int)l->n != nn)
        FAIL(c, pos, "ValueError", "%s values to unpack (expected %d, got %zu)",
             (int)l->n > nn ? "too many" : "not enough", nn, l->n);
    for (int i = 0; i < nn; i++)
        frame_set(c, f, names[i], l->v[i]);
}

static jv run_for(jctx *c, const jnode *n, jframe *f, jv iterable, int depth)
{
    jlist *src = iter_list(c, n->pos, iterable);
    jlist *items = src;
    jframe *bf = NULL;
    if (n->d) {
        items = jl_new(c, 0);
        jframe *tf = frame_new(c, f);
        for (size_t i = 0; i < src->n; i++) {
            if (++c->iters > c->max_iter)
                FAIL(c, n->pos, "LimitError", "loop iteration limit (%llu) exceeded", (unsigned long long)c->max_iter);
            tf->n = 0;
            assign(c, n->pos, tf, n->names, n->nnames, src->v[i]);
            if (jv_truthy(eval(c, n->d, tf)))
                jl_push(c, items, src->v[i]);
        }
    }
    struct jloop *lp = xalloc(c, sizeof *lp);
    lp->items = items;
    lp->depth = depth;
    lp->node = n;
    lp->frame = f;
    jv lv = {.t = JV_LOOP};
    lv.u.loop = lp;
    jbuf *saved = NULL, nb;
    if (depth > 1) {
        if (++c->calls > c->max_calls)
            FAIL(c, n->pos, "RecursionError", "maximum recursion depth (%u) exceeded", c->max_calls);
        capture_begin(c, &saved, &nb);
    }
    for (size_t i = 0; i < items->n; i++) {
        if (++c->iters > c->max_iter)
            FAIL(c, n->pos, "LimitError", "loop iteration limit (%llu) exceeded", (unsigned long long)c->max_iter);
        lp->idx = i;
        /* one frame per loop, emptied every iteration: assignments are per iteration */
        if (!bf)
            bf = frame_new(c, f);
        bf->n = 0;
        assign(c, n->pos, bf, n->names, n->nnames, items->v[i]);
        frame_set(c, bf, "loop", lv);
        exec(c, n->b, bf);
        if (c->brk == 1) {
            c->brk = 0;
            break;
        }
        c->brk = 0;
    }
    if (!items->n && n->c)
        exec(c, n->c, f);
    if (depth > 1) {
        c->calls--;
        return capture_end(c, saved, &nb);
    }
    return jv_none();
}

static void exec(jctx *c, const jnode *n, jframe *f)
{
    if (++c->depth > 1000)
        FAIL(c, n->pos, "RecursionError", "template nested too deeply");
    switch (n->kind) {
    case N_BODY:
        for (int i = 0; i < n->n && !c->brk; i++)
            exec(c, n->list[i], f);
        break;
    case N_TEXT: jb_put(c, c->out, n->val.u.s->s, n->val.u.s->len); break;
    case N_OUT: jv_write_str(c, c->out, eval(c, n->a, f)); break;
    case N_IF:
        if (jv_truthy(eval(c, n->a, f)))
            exec(c, n->b, f);
        else if (n->c)
            exec(c, n->c, f);
        break;
    case N_FOR: run_for(c, n, f, eval(c, n->a, f), 1); break;
    case N_SET:
        if (n->name) {
            jv *ns = frame_find(f, n->name);
            if (!ns || ns->t != JV_NS)
                FAIL(c, n->pos, "TemplateRuntimeError", "cannot assign attribute on non-namespace object");
            jd_set(c, ns->u.d, n->a->val, eval(c, n->b, f));
        } else {
            assign(c, n->pos, f, n->names, n->nnames, eval(c, n->b, f));
        }
        break;
    case N_SETBLOCK: {
        jbuf *saved, nb;
        capture_begin(c, &saved, &nb);
        exec(c, n->b, f);
        jv v = capture_end(c, saved, &nb);
        if (n->d)
            v = eval_filter_chain(c, n->d, f, v);
        frame_set(c, f, n->names[0], v);
        break;
    }
    case N_MACRO: {
        struct jmacro *m = xalloc(c, sizeof *m);
        m->def = n;
        m->closure = f;
        jv v = {.t = JV_MACRO};
        v.u.m = m;
        frame_set(c, f, n->name, v);
        break;
    }
    case N_CALLBLOCK: {
        struct jmacro *m = xalloc(c, sizeof *m);
        m->def = n;
        m->closure = f;
        m->is_caller = true;
        jv cv = {.t = JV_MACRO};
        cv.u.m = m;
        jv_write_str(c, c->out, eval_call(c, n->a, f, cv));
        break;
    }
    case N_FILTERBLOCK: {
        jbuf *saved, nb;
        capture_begin(c, &saved, &nb);
        exec(c, n->b, f);
        jv v = capture_end(c, saved, &nb);
        jv_write_str(c, c->out, eval_filter_chain(c, n->d, f, v));
        break;
    }
    case N_BREAK: c->brk = 1; break;
    case N_CONTINUE: c->brk = 2; break;
    default: FAIL(c, n->pos, "TemplateRuntimeError", "cannot execute node");
    }
    c->depth--;
}

/* ---- entry point ---- */
jinja_render_options jinja_default_render_options(void)
{
    jinja_render_options o = {.now = -1,
                              .bos_token = NULL,
                              .eos_token = NULL,
                              .max_output = (size_t)64 << 20,
                              .max_memory = (size_t)256 << 20,
                              .max_iterations = 1000000,
                              .max_call_depth = 64};
    return o;
}

int jinja_render(const jinja_template *t, const json_t *context, const jinja_render_options *ro, char **out,
                 size_t *out_len, char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (err && errlen)
        err[0] = 0;
    if (!t || !out) {
        if (err && errlen)
            snprintf(err, errlen, "invalid arguments");
        return -1;
    }
    jinja_render_options o = ro ? *ro : jinja_default_render_options();
    jarena ar;
    ja_init(&ar, o.max_memory ? o.max_memory : (size_t)256 << 20);
    jctx *c = calloc(1, sizeof(jctx));
    if (!c) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->ar = &ar;
    c->err = err;
    c->errlen = errlen;
    c->tpl = t;
    c->src = t->src;
    c->max_output = o.max_output ? o.max_output : (size_t)64 << 20;
    c->max_iter = o.max_iterations ? o.max_iterations : 1000000;
    c->max_calls = o.max_call_depth ? o.max_call_depth : 64;
    c->now = o.now;
    jbuf *volatile ob = calloc(1, sizeof(jbuf));
    if (!ob) {
        free(c);
        return -1;
    }
    ob->heap = true;
    if (setjmp(c->jb)) {
        free(ob->p);
        free(ob);
        ja_free(&ar);
        free(c);
        return -1;
    }
    jframe *g = frame_new(c, NULL);
    for (int i = 0; i < B__COUNT; i++) {
        jv v = {.t = JV_BUILTIN};
        v.u.builtin = i;
        frame_set(c, g, builtin_names[i], v);
    }
    jframe *root = frame_new(c, g);
    if (o.bos_token)
        frame_set(c, root, "bos_token", mkcstr(c, o.bos_token));
    if (o.eos_token)
        frame_set(c, root, "eos_token", mkcstr(c, o.eos_token));
    if (context && json_is_object(context)) {
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)context, k, val)
        {
            frame_set(c, root, js_cstr(c, k)->s, jv_from_json(c, val));
        }
    }
    c->out = ob;
    exec(c, t->root, root);
    char *res = ob->p;
    if (!res)
        res = calloc(1, 1);
    if (!res) {
        ja_free(&ar);
        free(ob);
        free(c);
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = res;
    if (out_len)
        *out_len = ob->n;
    free(ob);
    ja_free(&ar);
    free(c);
    return 0;
}
