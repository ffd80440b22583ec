/* jinja_int.h - internals shared by the jinja_*.c files: the arena allocator, the
 * tagged value type (Python-like: None, bool, int, float, str, list, dict, ...), the AST
 * and the render state. Not part of any public API. */
#ifndef ORC_JINJA_INT_H
#define ORC_JINJA_INT_H

#include "jinja.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena: bump allocator over malloc'd chunks, with a byte limit ---- */
typedef struct ja_chunk ja_chunk;
typedef struct jarena {
    ja_chunk *head;
    size_t used, limit; /* bytes handed out in chunks so far, and the cap */
} jarena;

void ja_init(jarena *a, size_t limit);
void ja_free(jarena *a);
/* NULL when the limit is hit or malloc fails. Memory is zeroed. */
void *ja_alloc(jarena *a, size_t n);

/* ---- values ---- */
typedef enum {
    JV_UNDEF = 0, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT,
    JV_NS, JV_MACRO, JV_BUILTIN, JV_BOUND, JV_LOOP, JV_CYCLER, JV_JOINER
} jv_type;

typedef struct jstr {
    size_t len;
    int ascii;  /* 1 ascii only, 0 not, -1 unknown */
    int markup; /* jinja2 Markup (from |safe / |escape): `+` escapes plain strings */
    char s[];  /* NUL-terminated */
} jstr;

typedef struct jv jv;
typedef struct jlist jlist;
typedef struct jdict jdict;

struct jv {
    uint8_t t;
    union {
        int b;
        int64_t i;
        double f;
        jstr *s;
        jlist *l;
        jdict *d; /* JV_DICT and JV_NS */
        struct jmacro *m;
        int builtin;
        struct jbound *bound;
        struct jloop *loop;
        struct jcycler *cyc;
        const char *undef; /* message used when an undefined value is misused */
    } u;
};

#define JL_TUPLE 1u
#define JL_GENERATOR 2u /* results of map/select/...: not JSON serializable, no len() */
#define JL_RANGE 4u
#define JL_ITEMS 8u /* dict views */
#define JL_KEYS 16u
#define JL_VALUES 32u
#define JL_SPECIAL (JL_GENERATOR | JL_RANGE | JL_ITEMS | JL_KEYS | JL_VALUES)
struct jlist {
    size_t n, cap;
    unsigned flags;
    jv *v;
    const char *poison_kind, *poison; /* a lazy generator that raises when consumed */
    int64_t range_stop;               /* JL_RANGE: the stop it was created with */
};

struct jdict {
    size_t n, cap;
    jv *k, *v;
};

struct jbound {
    jv self;
    const char *name;
};

struct jcycler {
    jlist *items;
    size_t pos;
    jstr *sep;
    int used;
};

/* filter and test names, resolved to ids at parse time */
#define JINJA_FILTERS(X)                                                                         \
    X(abs) X(attr) X(batch) X(capitalize) X(center) X(count) X(d) X(default) X(dictsort) X(e)  \
    X(escape) X(first) X(float) X(forceescape) X(format) X(indent) X(int) X(items) X(join)     \
    X(last) X(length) X(list) X(lower) X(map) X(max) X(min) X(pprint) X(reject) X(rejectattr)  \
    X(replace) X(reverse) X(round) X(safe) X(select) X(selectattr) X(sort) X(string)           \
    X(striptags) X(sum) X(title) X(tojson) X(trim) X(truncate) X(unique) X(upper) X(wordcount)
#define JINJA_TESTS(X)                                                                           \
    X(boolean) X(callable) X(defined) X(divisibleby) X(eq) X(equalto) X(escaped) X(even)        \
    X(false) X(filter) X(float) X(ge) X(gt) X(greaterthan) X(in) X(integer) X(iterable) X(le)  \
    X(lower) X(lt) X(lessthan) X(mapping) X(ne) X(none) X(number) X(odd) X(sameas) X(sequence) \
    X(string) X(test) X(true) X(undefined) X(upper)
#define X(n) FI_##n,
enum { JINJA_FILTERS(X) FI__COUNT };
#undef X
#define X(n) TE_##n,
enum { JINJA_TESTS(X) TE__COUNT };
#undef X

/* ---- AST ---- */
typedef enum {
    /* expressions */
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_BIN, N_NEG, N_POS,
    N_NOT, N_AND, N_OR, N_CMP, N_CONCAT, N_COND, N_LIST, N_TUPLE, N_DICT,
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK,
    N_BREAK, N_CONTINUE, N_BODY
} jn_kind;

typedef enum {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN
} jn_op;

typedef struct jnode jnode;
struct jnode {
    uint8_t kind;
    uint8_t neg;  /* N_TEST: `is not`; N_FOR: recursive */
    int16_t id;   /* filter / test id */
    uint32_t pos; /* byte offset in the source, for messages */
    jnode *a, *b, *c, *d;
    jnode **list; /* args, items, body, compare operands */
    jnode **list2; /* kwarg values, else body, dict values */
    const char **names; /* kwarg names, targets, parameter names */
    uint8_t *ops; /* N_CMP operators */
    int n, n2, nnames;
    const char *name; /* N_NAME, N_ATTR, N_MACRO, N_SET */
    jv val; /* N_LIT, N_TEXT (string) */
};

struct jinja_template {
    jarena ar;
    jnode *root;
    char *src; /* normalised source, for line/column of runtime errors */
    size_t src_len;
};

struct jmacro {
    const jnode *def; /* N_MACRO node (or N_CALLBLOCK for caller) */
    struct jframe *closure;
    bool is_caller;
    jv caller; /* the `caller` bound inside this macro (undefined if none) */
};

/* ---- render state ---- */
typedef struct jframe {
    struct jframe *parent;
    int n, cap;
    const char **names;
    jv *vals;
} jframe;

typedef struct jbuf {
    char *p;
    size_t n, cap;
    bool heap; /* grown with realloc (the final output) instead of the arena */
} jbuf;

struct jloop {
    jlist *items;
    size_t idx;
    int depth;
    const jnode *node;    /* for recursive loops */
    struct jframe *frame; /* the frame the loop runs in */
};

typedef struct jctx {
    jarena *ar;
    jmp_buf jb;
    char *err;
    size_t errlen;
    const jinja_template *tpl;
    jframe *globals;
    jbuf *out;
    size_t max_output, total_output;
    uint64_t max_iter, iters;
    uint32_t max_calls, calls;
    int depth;
    int64_t now;
    int brk; /* 1 break, 2 continue pending */
    bool parsing; /* errors carry line:column */
    const char *src; /* source, for line/column */
} jctx;

/* Errors: formats "Kind: message" and longjmps out of the render. */
_Noreturn void jx_fail(jctx *c, uint32_t pos, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* value helpers (jinja_value.c) */
jstr *js_new(jctx *c, const char *s, size_t n);
jstr *js_cstr(jctx *c, const char *s);
jv jv_str(jstr *s);
jv jv_strn(jctx *c, const char *s, size_t n);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_bool(int b);
jv jv_none(void);
jv jv_undef(const char *msg);
jlist *jl_new(jctx *c, size_t cap);
void jl_push(jctx *c, jlist *l, jv v);
jv jv_list(jlist *l);
jdict *jd_new(jctx *c, size_t cap);
jv *jd_get(const jdict *d, jv key);
jv *jd_gets(const jdict *d, const char *key, size_t klen);
void jd_set(jctx *c, jdict *d, jv key, jv val);
jv jv_dict(jdict *d);

bool jv_truthy(jv v);
bool jv_equal(jv a, jv b);
/* Python-like ordering; fails (TypeError) for incomparable types. */
int jv_compare(jctx *c, uint32_t pos, jv a, jv b);
const char *jv_typename(jv v);
bool jstr_is_ascii(jstr *s);
size_t jstr_cplen(jstr *s); /* length in code points */

void jb_put(jctx *c, jbuf *b, const char *s, size_t n);
void jb_puts(jctx *c, jbuf *b, const char *s);
/* str(v) and repr(v) appended to b */
void jv_write_str(jctx *c, jbuf *b, jv v);
void jv_write_repr(jctx *c, jbuf *b, jv v);
jstr *jv_to_str(jctx *c, jv v);
void jv_write_float(jbuf *b, jctx *c, double f);
/* json.dumps(v, ensure_ascii, indent (<0 = None), separators, sort_keys) */
void jv_write_json(jctx *c, jbuf *b, jv v, bool ensure_ascii, int indent, const char *item_sep,
                   const char *key_sep, bool sort_keys, int level, uint32_t pos);
jv jv_from_json(jctx *c, const json_t *j);

#endif
