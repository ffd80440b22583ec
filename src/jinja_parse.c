/* jinja_parse.c - lexer and recursive-descent parser of the Jinja engine: turns template
 * source into the AST of jinja_int.h, applying jinja2's whitespace rules (-/+ markers,
 * trim_blocks, lstrip_blocks) at lex time. Errors report line and column. */
#include "jinja_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_EOF, T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP };
/* multi-character operators */
enum { O_FLOORDIV = 'F', O_POW = 'P', O_EQ = 'E', O_NE = 'N', O_LE = 'L', O_GE = 'G' };

typedef struct tok {
    uint8_t t;
    uint8_t op;
    uint32_t pos;
    const char *s;
    size_t n;
    jv val;
} tok;

typedef struct parser {
    jctx *c;
    const char *src;
    size_t len;
    jinja_options opt;
    tok *toks;
    size_t nt, capt, i;
    int depth;
    int soft; /* inside an if body or inline-if: unknown filters/tests fail only when run */
    int n_unknown;
    uint32_t unk_pos;
    const char *unk_name, *unk_kind;
} parser;

/* ---- errors ---- */
static void line_col(const char *src, size_t len, uint32_t pos, int *line, int *col)
{
    int l = 1, cl = 1;
    for (size_t i = 0; i < pos && i < len; i++) {
        if (src[i] == '\n') {
            l++;
            cl = 1;
        } else if (((unsigned char)src[i] & 0xC0) != 0x80) {
            cl++;
        }
    }
    *line = l;
    *col = cl;
}

_Noreturn void jx_fail(jctx *c, uint32_t pos, const char *kind, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->err && c->errlen) {
        if (c->parsing) {
            int l, cl;
            line_col(c->src, strlen(c->src), pos, &l, &cl);
            snprintf(c->err, c->errlen, "%s: line %d, column %d: %s", kind, l, cl, msg);
        } else if (pos > 0 && c->src && strcmp(kind, "TemplateError")) {
            /* runtime errors say where; raise_exception messages stay as the template wrote them */
            int l, cl;
            line_col(c->src, strlen(c->src), pos, &l, &cl);
            snprintf(c->err, c->errlen, "%s: %s (template line %d)", kind, msg, l);
        } else {
            snprintf(c->err, c->errlen, "%s: %s", kind, msg);
        }
    }
    longjmp(c->jb, 1);
}

#define SYNERR(p, pos, ...) jx_fail((p)->c, (pos), "TemplateSyntaxError", __VA_ARGS__)

static void *palloc(parser *p, size_t n)
{
    void *r = ja_alloc(p->c->ar, n);
    if (!r)
        jx_fail(p->c, 0, "MemoryError", "template too large");
    return r;
}

/* ---- lexer ---- */
static void push_tok(parser *p, tok t)
{
    if (p->nt == p->capt) {
        size_t nc = p->capt ? p->capt * 2 : 256;
        tok *nt = realloc(p->toks, nc * sizeof(tok));
        if (!nt)
            jx_fail(p->c, t.pos, "MemoryError", "out of memory");
        p->toks = nt;
        p->capt = nc;
    }
    p->toks[p->nt++] = t;
}

static int is_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }
static int is_alpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static void put_utf8(char *out, size_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Lexes a quoted string at s[pos] with Python escape decoding; returns end position. */
static size_t lex_string(parser *p, size_t pos, tok *t)
{
    const char *s = p->src;
    char q = s[pos];
    size_t i = pos + 1;
    while (i < p->len && s[i] != q) {
        if (s[i] == '\\' && i + 1 < p->len)
            i++;
        i++;
    }
    if (i >= p->len)
        SYNERR(p, (uint32_t)pos, "unexpected end of string");
    size_t n = i - pos - 1;
    char *out = palloc(p, n + 1);
    size_t o = 0;
    for (size_t k = pos + 1; k < i; k++) {
        char ch = s[k];
        if (ch != '\\' || k + 1 >= i) {
            out[o++] = ch;
            continue;
        }
        char e = s[++k];
        int digits = 0;
        switch (e) {
        case 'n': out[o++] = '\n'; break;
        case 't': out[o++] = '\t'; break;
        case 'r': out[o++] = '\r'; break;
        case '\\': out[o++] = '\\'; break;
        case '\'': out[o++] = '\''; break;
        case '"': out[o++] = '"'; break;
        case 'a': out[o++] = '\a'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'v': out[o++] = '\v'; break;
        case '\n': break;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = 0;
                int nd = 0;
                while (nd < 3 && k < i && s[k] >= '0' && s[k] <= '7') {
                    cp = cp * 8 + (uint32_t)(s[k] - '0');
                    k++;
                    nd++;
                }
                k--;
                put_utf8(out, &o, cp);
            } else {
                out[o++] = '\\';
                out[o++] = e;
            }
        }
        if (digits) {
            uint32_t cp = 0;
            if (k + (size_t)digits >= i)
                SYNERR(p, (uint32_t)k, "truncated \\%c escape", e);
            for (int d = 1; d <= digits; d++) {
                int h = hexval(s[k + (size_t)d]);
                if (h < 0)
                    SYNERR(p, (uint32_t)k, "invalid \\%c escape", e);
                cp = cp * 16 + (uint32_t)h;
            }
            if (cp > 0x10FFFF)
                SYNERR(p, (uint32_t)k, "illegal Unicode character");
            k += (size_t)digits;
            put_utf8(out, &o, cp);
        }
    }
    t->t = T_STR;
    t->val = jv_str(js_new(p->c, out, o));
    return i + 1;
}

/* Lexes expression tokens from pos until the closing delimiter; returns position after it. */
static size_t lex_expr(parser *p, size_t pos, int block, bool *line_start)
{
    const char *s = p->src;
    size_t n = p->len;
    int balance = 0;
    for (;;) {
        while (pos < n && is_ws(s[pos]))
            pos++;
        if (pos >= n)
            SYNERR(p, (uint32_t)pos, "unexpected end of template, expected '%s'", block ? "%}" : "}}");
        char end = block ? '%' : '}';
        if (balance == 0) {
            size_t after = 0;
            int sign = 0;
            if ((s[pos] == '-' || s[pos] == '+') && pos + 2 < n && s[pos + 1] == end && s[pos + 2] == '}' &&
                (block || s[pos] == '-')) {
                sign = s[pos];
                after = pos + 3;
            } else if (pos + 1 < n && s[pos] == end && s[pos + 1] == '}') {
                after = pos + 2;
            }
            if (after) {
                if (sign == '-') {
                    while (after < n && is_ws(s[after]))
                        after++;
                } else if (!sign && block && p->opt.trim_blocks && after < n && s[after] == '\n') {
                    after++;
                }
                push_tok(p, (tok){.t = block ? T_BEND : T_VEND, .pos = (uint32_t)pos});
                *line_start = s[after - 1] == '\n';
                return after;
            }
        }
        tok t = {.pos = (uint32_t)pos};
        char ch = s[pos];
        if (is_alpha(ch)) {
            size_t e = pos;
            while (e < n && (is_alpha(s[e]) || is_digit(s[e])))
                e++;
            t.t = T_NAME;
            t.s = s + pos;
            t.n = e - pos;
            pos = e;
        } else if (is_digit(ch)) {
            size_t e = pos;
            bool isf = false;
            while (e < n && (is_digit(s[e]) || (s[e] == '_' && e + 1 < n && is_digit(s[e + 1]))))
                e++;
            if (e + 1 < n && s[e] == '.' && is_digit(s[e + 1])) {
                isf = true;
                e++;
                while (e < n && (is_digit(s[e]) || (s[e] == '_' && e + 1 < n && is_digit(s[e + 1]))))
                    e++;
            }
            if (e < n && (s[e] == 'e' || s[e] == 'E')) {
                size_t k = e + 1;
                if (k < n && (s[k] == '+' || s[k] == '-'))
                    k++;
                if (k < n && is_digit(s[k])) {
                    isf = true;
                    e = k;
                    while (e < n && is_digit(s[e]))
                        e++;
                }
            }
            char buf[128];
            size_t bl = 0;
            for (size_t k = pos; k < e && bl < sizeof buf - 1; k++)
                if (s[k] != '_')
                    buf[bl++] = s[k];
            buf[bl] = 0;
            if (isf) {
                t.t = T_FLOAT;
                t.val = jv_float(strtod(buf, NULL));
            } else {
                t.t = T_INT;
                char *endp;
                unsigned long long v = strtoull(buf, &endp, 10);
                if (bl > 18 && (v > INT64_MAX || bl > 19))
                    SYNERR(p, (uint32_t)pos, "integer literal too large");
                t.val = jv_int((int64_t)v);
            }
            pos = e;
        } else if (ch == '\'' || ch == '"') {
            pos = lex_string(p, pos, &t);
        } else {
            char c2 = pos + 1 < n ? s[pos + 1] : 0;
            t.t = T_OP;
            t.op = (uint8_t)ch;
            size_t w = 1;
            if (ch == '/' && c2 == '/')
                t.op = O_FLOORDIV, w = 2;
            else if (ch == '*' && c2 == '*')
                t.op = O_POW, w = 2;
            else if (ch == '=' && c2 == '=')
                t.op = O_EQ, w = 2;
            else if (ch == '!' && c2 == '=')
                t.op = O_NE, w = 2;
            else if (ch == '<' && c2 == '=')
                t.op = O_LE, w = 2;
            else if (ch == '>' && c2 == '=')
                t.op = O_GE, w = 2;
            else if (!strchr("+-/*%~<>()[]{},.:|=;", ch))
                SYNERR(p, (uint32_t)pos, "unexpected char '%c'", ch);
            if (ch == '(' || ch == '[' || ch == '{')
                balance++;
            else if (ch == ')' || ch == ']' || ch == '}') {
                if (balance == 0)
                    SYNERR(p, (uint32_t)pos, "unexpected '%c'", ch);
                balance--;
            }
            pos += w;
        }
        push_tok(p, t);
    }
}

static void lex(parser *p)
{
    const char *s = p->src;
    size_t n = p->len, pos = 0;
    bool line_start = true;
    while (pos < n) {
        size_t t = pos;
        while (t + 1 < n && !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')))
            t++;
        if (t + 1 >= n) {
            push_tok(p, (tok){.t = T_TEXT, .pos = (uint32_t)pos, .s = s + pos, .n = n - pos});
            break;
        }
        char kind = s[t + 1];
        char sign = t + 2 < n ? s[t + 2] : 0;
        if (sign != '-' && sign != '+')
            sign = 0;
        size_t tend = t;
        if (sign == '-') {
            while (tend > pos && is_ws(s[tend - 1]))
                tend--;
        } else if (!sign && kind != '{' && p->opt.lstrip_blocks) {
            size_t l = tend;
            while (l > pos && s[l - 1] != '\n')
                l--;
            if (l > pos || line_start) {
                size_t k = l;
                while (k < tend && is_ws(s[k]))
                    k++;
                if (k == tend)
                    tend = l;
            }
        }
        if (tend > pos)
            push_tok(p, (tok){.t = T_TEXT, .pos = (uint32_t)pos, .s = s + pos, .n = tend - pos});
        pos = t + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t q = pos;
            while (q + 1 < n && !(s[q] == '#' && s[q + 1] == '}'))
                q++;
            if (q + 1 >= n)
                SYNERR(p, (uint32_t)t, "missing end of comment tag");
            size_t after = q + 2;
            char es = q > pos ? s[q - 1] : 0;
            if (es == '-') {
                while (after < n && is_ws(s[after]))
                    after++;
            } else if (es != '+' && p->opt.trim_blocks && after < n && s[after] == '\n') {
                after++;
            }
            line_start = s[after - 1] == '\n';
            pos = after;
            continue;
        }
        bool block = kind == '%';
        size_t first = p->nt;
        push_tok(p, (tok){.t = block ? T_BBEGIN : T_VBEGIN, .pos = (uint32_t)t});
        pos = lex_expr(p, pos, block, &line_start);
        /* {% raw %}: everything up to {% endraw %} is text */
        if (block && p->nt == first + 3 && p->toks[first + 1].t == T_NAME && p->toks[first + 1].n == 3 &&
            !memcmp(p->toks[first + 1].s, "raw", 3)) {
            p->nt = first;
            size_t q = pos;
            for (;;) {
                while (q + 1 < n && !(s[q] == '{' && s[q + 1] == '%'))
                    q++;
                if (q + 1 >= n)
                    SYNERR(p, (uint32_t)t, "missing endraw");
                size_t k = q + 2;
                char rs = k < n && (s[k] == '-' || s[k] == '+') ? s[k++] : 0;
                while (k < n && is_ws(s[k]))
                    k++;
                if (k + 6 <= n && !memcmp(s + k, "endraw", 6)) {
                    size_t tend2 = q;
                    if (rs == '-')
                        while (tend2 > pos && is_ws(s[tend2 - 1]))
                            tend2--;
                    if (tend2 > pos)
                        push_tok(p, (tok){.t = T_TEXT, .pos = (uint32_t)pos, .s = s + pos, .n = tend2 - pos});
                    size_t save = p->nt;
                    pos = lex_expr(p, k, 1, &line_start);
                    p->nt = save;
                    break;
                }
                q += 2;
            }
        }
    }
    push_tok(p, (tok){.t = T_EOF, .pos = (uint32_t)n});
}

/* ---- parser helpers ---- */
static tok *cur(parser *p) { return &p->toks[p->i]; }
static tok *peek(parser *p, size_t k) { return &p->toks[p->i + k < p->nt ? p->i + k : p->nt - 1]; }
static bool is_name(tok *t, const char *s) { return t->t == T_NAME && t->n == strlen(s) && !memcmp(t->s, s, t->n); }
static bool is_op(tok *t, int op) { return t->t == T_OP && t->op == op; }

static const char *tok_desc(tok *t)
{
    switch (t->t) {
    case T_EOF: return "end of template";
    case T_VEND: return "end of print statement";
    case T_BEND: return "end of statement block";
    case T_NAME: return "name";
    case T_STR: return "string";
    case T_INT:
    case T_FLOAT: return "number";
    case T_OP: return "operator";
    default: return "token";
    }
}

static void expect_op(parser *p, int op)
{
    if (!is_op(cur(p), op))
        SYNERR(p, cur(p)->pos, "expected '%c', got %s", op, tok_desc(cur(p)));
    p->i++;
}

static const char *name_str(parser *p, tok *t)
{
    char *s = palloc(p, t->n + 1);
    memcpy(s, t->s, t->n);
    s[t->n] = 0;
    return s;
}

static const char *expect_name(parser *p)
{
    tok *t = cur(p);
    if (t->t != T_NAME)
        SYNERR(p, t->pos, "expected name, got %s", tok_desc(t));
    p->i++;
    return name_str(p, t);
}

static jnode *node(parser *p, int kind, uint32_t pos)
{
    jnode *n = palloc(p, sizeof(jnode));
    n->kind = (uint8_t)kind;
    n->pos = pos;
    return n;
}

/* growable node arrays built in malloc'd scratch, then copied to the arena */
typedef struct nvec {
    jnode **v;
    int n, cap;
} nvec;

static void nv_push(parser *p, nvec *v, jnode *x)
{
    if (v->n == v->cap) {
        int nc = v->cap ? v->cap * 2 : 8;
        jnode **nn = palloc(p, sizeof(jnode *) * (size_t)nc);
        if (v->n)
            memcpy(nn, v->v, sizeof(jnode *) * (size_t)v->n);
        v->v = nn;
        v->cap = nc;
    }
    v->v[v->n++] = x;
}

static void enter(parser *p)
{
    if (++p->depth > (int)p->opt.max_nesting)
        SYNERR(p, cur(p)->pos, "template nested too deeply (limit %u)", p->opt.max_nesting);
}
static void leave(parser *p) { p->depth--; }

/* ---- filter and test names ---- */
#define X(n) #n,
static const char *const filter_names[] = {JINJA_FILTERS(X) NULL};
static const char *const test_names[] = {JINJA_TESTS(X) NULL};
#undef X

static int lookup(const char *const *tab, const char *s)
{
    for (int i = 0; tab[i]; i++)
        if (!strcmp(tab[i], s))
            return i;
    return -1;
}

/* ---- expressions ---- */
static jnode *parse_expr(parser *p);
static jnode *parse_or(parser *p);
static jnode *parse_unary(parser *p, bool with_filter);
static jnode *parse_primary(parser *p);
static jnode *parse_postfix(parser *p, jnode *n);

static jnode *parse_tuple(parser *p, bool with_condexpr, bool explicit_parens);

static void parse_call_args(parser *p, jnode *n)
{
    /* at '(' */
    expect_op(p, '(');
    nvec args = {0}, kwv = {0};
    const char **kwn = NULL;
    int nk = 0, capk = 0;
    while (!is_op(cur(p), ')')) {
        if (args.n || nk)
            expect_op(p, ',');
        if (is_op(cur(p), ')'))
            break;
        if (is_op(cur(p), '*'))
            SYNERR(p, cur(p)->pos, "*args / **kwargs calls are not supported");
        if (cur(p)->t == T_NAME && is_op(peek(p, 1), '=')) {
            const char *k = name_str(p, cur(p));
            p->i += 2;
            if (nk == capk) {
                int nc = capk ? capk * 2 : 4;
                const char **nn = palloc(p, sizeof(char *) * (size_t)nc);
                if (nk)
                    memcpy(nn, kwn, sizeof(char *) * (size_t)nk);
                kwn = nn;
                capk = nc;
            }
            kwn[nk++] = k;
            nv_push(p, &kwv, parse_expr(p));
        } else {
            if (nk)
                SYNERR(p, cur(p)->pos, "positional argument follows keyword argument");
            nv_push(p, &args, parse_expr(p));
        }
    }
    expect_op(p, ')');
    n->list = args.v;
    n->n = args.n;
    n->list2 = kwv.v;
    n->n2 = kwv.n;
    n->names = kwn;
    n->nnames = nk;
}

static jnode *parse_filter(parser *p, jnode *subject, bool start_inline)
{
    /* after '|' (or at the name for filter blocks) */
    (void)start_inline;
    tok *t = cur(p);
    const char *name = expect_name(p);
    while (is_op(cur(p), '.')) {
        /* dotted filter names exist in jinja2; none of ours has a dot */
        p->i++;
        const char *part = expect_name(p);
        size_t l1 = strlen(name), l2 = strlen(part);
        char *full = palloc(p, l1 + l2 + 2);
        memcpy(full, name, l1);
        full[l1] = '.';
        memcpy(full + l1 + 1, part, l2 + 1);
        name = full;
    }
    int id = lookup(filter_names, name);
    if (id < 0 && !p->soft)
        jx_fail(p->c, t->pos, "TemplateAssertionError", "No filter named '%s'.", name);
    if (id < 0) {
        p->n_unknown++;
        p->unk_pos = t->pos;
        p->unk_name = name;
        p->unk_kind = "filter";
    }
    jnode *n = node(p, N_FILTER, t->pos);
    n->a = subject;
    n->id = (int16_t)id;
    n->name = name;
    if (is_op(cur(p), '('))
        parse_call_args(p, n);
    return n;
}

static jnode *parse_test(parser *p, jnode *subject)
{
    tok *t = cur(p);
    p->i++; /* 'is' */
    jnode *n = node(p, N_TEST, t->pos);
    n->a = subject;
    if (is_name(cur(p), "not")) {
        n->neg = 1;
        p->i++;
    }
    tok *nt = cur(p);
    const char *name;
    if (nt->t == T_NAME) {
        name = expect_name(p);
    } else {
        SYNERR(p, nt->pos, "expected test name");
    }
    int id = lookup(test_names, name);
    if (id < 0 && !p->soft)
        jx_fail(p->c, nt->pos, "TemplateAssertionError", "No test named '%s'.", name);
    if (id < 0) {
        p->n_unknown++;
        p->unk_pos = nt->pos;
        p->unk_name = name;
        p->unk_kind = "test";
    }
    n->id = (int16_t)id;
    n->name = name;
    tok *a = cur(p);
    if (is_op(a, '(')) {
        parse_call_args(p, n);
    } else if ((a->t == T_NAME || a->t == T_STR || a->t == T_INT || a->t == T_FLOAT || is_op(a, '[') ||
                is_op(a, '{')) &&
               !is_name(a, "else") && !is_name(a, "or") && !is_name(a, "and")) {
        if (is_name(a, "is"))
            SYNERR(p, a->pos, "You cannot chain multiple tests with is");
        jnode *arg = parse_postfix(p, parse_primary(p));
        n->list = palloc(p, sizeof(jnode *));
        n->list[0] = arg;
        n->n = 1;
    }
    return n;
}

static jnode *parse_filter_expr(parser *p, jnode *n)
{
    for (;;) {
        tok *t = cur(p);
        if (is_op(t, '|')) {
            p->i++;
            n = parse_filter(p, n, false);
        } else if (is_name(t, "is")) {
            n = parse_test(p, n);
        } else if (is_op(t, '(')) {
            jnode *c = node(p, N_CALL, t->pos);
            c->a = n;
            parse_call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static jnode *parse_subscript(parser *p, jnode *n)
{
    tok *t = cur(p);
    if (is_op(t, '.')) {
        p->i++;
        tok *a = cur(p);
        if (a->t == T_NAME) {
            jnode *r = node(p, N_ATTR, t->pos);
            r->a = n;
            r->name = expect_name(p);
            return r;
        }
        if (a->t == T_INT) {
            p->i++;
            jnode *r = node(p, N_ITEM, t->pos);
            r->a = n;
            r->b = node(p, N_LIT, a->pos);
            r->b->val = a->val;
            return r;
        }
        SYNERR(p, a->pos, "expected name or number");
    }
    /* '[' */
    p->i++;
    jnode *parts[3] = {NULL, NULL, NULL};
    int np = 0;
    bool slice = false;
    for (;;) {
        if (is_op(cur(p), ']'))
            break;
        if (is_op(cur(p), ':')) {
            slice = true;
            if (np >= 2)
                SYNERR(p, cur(p)->pos, "too many ':' in slice");
            np++;
            p->i++;
            continue;
        }
        if (parts[np])
            SYNERR(p, cur(p)->pos, "expected ']'");
        parts[np] = parse_expr(p);
        if (is_op(cur(p), ',')) {
            /* tuple subscripts are not used by templates */
            SYNERR(p, cur(p)->pos, "tuple subscripts are not supported");
        }
    }
    expect_op(p, ']');
    if (slice) {
        jnode *r = node(p, N_SLICE, t->pos);
        r->a = n;
        r->b = parts[0];
        r->c = parts[1];
        r->d = parts[2];
        return r;
    }
    if (!parts[0])
        SYNERR(p, t->pos, "expected subscript expression");
    jnode *r = node(p, N_ITEM, t->pos);
    r->a = n;
    r->b = parts[0];
    return r;
}

static jnode *parse_postfix(parser *p, jnode *n)
{
    for (;;) {
        tok *t = cur(p);
        if (is_op(t, '.') || is_op(t, '['))
            n = parse_subscript(p, n);
        else if (is_op(t, '(')) {
            jnode *c = node(p, N_CALL, t->pos);
            c->a = n;
            parse_call_args(p, c);
            n = c;
        } else
            return n;
    }
}

static jnode *parse_primary(parser *p)
{
    tok *t = cur(p);
    enter(p);
    jnode *n;
    switch (t->t) {
    case T_NAME:
        p->i++;
        if (is_name(t, "true") || is_name(t, "True")) {
            n = node(p, N_LIT, t->pos);
            n->val = jv_bool(1);
        } else if (is_name(t, "false") || is_name(t, "False")) {
            n = node(p, N_LIT, t->pos);
            n->val = jv_bool(0);
        } else if (is_name(t, "none") || is_name(t, "None")) {
            n = node(p, N_LIT, t->pos);
            n->val = jv_none();
        } else {
            n = node(p, N_NAME, t->pos);
            n->name = name_str(p, t);
        }
        break;
    case T_STR: {
        p->i++;
        n = node(p, N_LIT, t->pos);
        n->val = t->val;
        /* adjacent string literals concatenate */
        while (cur(p)->t == T_STR) {
            jstr *a = n->val.u.s, *b = cur(p)->val.u.s;
            jstr *r = js_new(p->c, NULL, a->len + b->len);
            memcpy(r->s, a->s, a->len);
            memcpy(r->s + a->len, b->s, b->len);
            jstr_is_ascii(r);
            n->val = jv_str(r);
            p->i++;
        }
        break;
    }
    case T_INT:
    case T_FLOAT:
        p->i++;
        n = node(p, N_LIT, t->pos);
        n->val = t->val;
        break;
    case T_OP:
        if (t->op == '(') {
            p->i++;
            n = parse_tuple(p, true, true);
            expect_op(p, ')');
        } else if (t->op == '[') {
            p->i++;
            nvec items = {0};
            while (!is_op(cur(p), ']')) {
                if (items.n)
                    expect_op(p, ',');
                if (is_op(cur(p), ']'))
                    break;
                nv_push(p, &items, parse_expr(p));
            }
            expect_op(p, ']');
            n = node(p, N_LIST, t->pos);
            n->list = items.v;
            n->n = items.n;
        } else if (t->op == '{') {
            p->i++;
            nvec ks = {0}, vs = {0};
            while (!is_op(cur(p), '}')) {
                if (ks.n)
                    expect_op(p, ',');
                if (is_op(cur(p), '}'))
                    break;
                nv_push(p, &ks, parse_expr(p));
                expect_op(p, ':');
                nv_push(p, &vs, parse_expr(p));
            }
            expect_op(p, '}');
            n = node(p, N_DICT, t->pos);
            n->list = ks.v;
            n->list2 = vs.v;
            n->n = ks.n;
        } else {
            SYNERR(p, t->pos, "unexpected '%c'", t->op < 'A' ? t->op : '?');
        }
        break;
    default:
        SYNERR(p, t->pos, "unexpected %s", tok_desc(t));
    }
    leave(p);
    return n;
}

static jnode *parse_unary(parser *p, bool with_filter)
{
    tok *t = cur(p);
    jnode *n;
    enter(p);
    if (is_op(t, '-') || is_op(t, '+')) {
        p->i++;
        n = node(p, t->op == '-' ? N_NEG : N_POS, t->pos);
        n->a = parse_unary(p, false);
    } else {
        n = parse_postfix(p, parse_primary(p));
    }
    if (with_filter)
        n = parse_filter_expr(p, n);
    leave(p);
    return n;
}

static jnode *binop(parser *p, int op, jnode *l, jnode *r, uint32_t pos)
{
    jnode *n = node(p, N_BIN, pos);
    n->id = (int16_t)op;
    n->a = l;
    n->b = r;
    return n;
}

static jnode *parse_pow(parser *p)
{
    jnode *l = parse_unary(p, true);
    while (is_op(cur(p), O_POW)) {
        uint32_t pos = cur(p)->pos;
        p->i++;
        l = binop(p, OP_POW, l, parse_unary(p, true), pos);
    }
    return l;
}

static jnode *parse_math2(parser *p)
{
    jnode *l = parse_pow(p);
    for (;;) {
        tok *t = cur(p);
        int op;
        if (is_op(t, '*'))
            op = OP_MUL;
        else if (is_op(t, '/'))
            op = OP_DIV;
        else if (is_op(t, O_FLOORDIV))
            op = OP_FLOORDIV;
        else if (is_op(t, '%'))
            op = OP_MOD;
        else
            return l;
        p->i++;
        l = binop(p, op, l, parse_pow(p), t->pos);
    }
}

static jnode *parse_concat(parser *p)
{
    jnode *l = parse_math2(p);
    if (!is_op(cur(p), '~'))
        return l;
    nvec parts = {0};
    nv_push(p, &parts, l);
    uint32_t pos = cur(p)->pos;
    while (is_op(cur(p), '~')) {
        p->i++;
        nv_push(p, &parts, parse_math2(p));
    }
    jnode *n = node(p, N_CONCAT, pos);
    n->list = parts.v;
    n->n = parts.n;
    return n;
}

static jnode *parse_math1(parser *p)
{
    jnode *l = parse_concat(p);
    for (;;) {
        tok *t = cur(p);
        int op;
        if (is_op(t, '+'))
            op = OP_ADD;
        else if (is_op(t, '-'))
            op = OP_SUB;
        else
            return l;
        p->i++;
        l = binop(p, op, l, parse_concat(p), t->pos);
    }
}

static jnode *parse_compare(parser *p)
{
    uint32_t pos = cur(p)->pos;
    jnode *l = parse_math1(p);
    nvec ops = {0};
    uint8_t opbuf[64];
    int nops = 0;
    for (;;) {
        tok *t = cur(p);
        int op = -1;
        if (is_op(t, O_EQ))
            op = OP_EQ;
        else if (is_op(t, O_NE))
            op = OP_NE;
        else if (is_op(t, '<'))
            op = OP_LT;
        else if (is_op(t, O_LE))
            op = OP_LE;
        else if (is_op(t, '>'))
            op = OP_GT;
        else if (is_op(t, O_GE))
            op = OP_GE;
        else if (is_name(t, "in"))
            op = OP_IN;
        else if (is_name(t, "not") && is_name(peek(p, 1), "in")) {
            op = OP_NOTIN;
            p->i++;
        }
        if (op < 0)
            break;
        p->i++;
        if (nops >= 64)
            SYNERR(p, t->pos, "too many chained comparisons");
        opbuf[nops++] = (uint8_t)op;
        if (!ops.n)
            nv_push(p, &ops, l);
        nv_push(p, &ops, parse_math1(p));
    }
    if (!nops)
        return l;
    jnode *n = node(p, N_CMP, pos);
    n->list = ops.v;
    n->n = ops.n;
    n->ops = palloc(p, (size_t)nops);
    memcpy(n->ops, opbuf, (size_t)nops);
    return n;
}

static jnode *parse_not(parser *p)
{
    tok *t = cur(p);
    if (is_name(t, "not")) {
        p->i++;
        enter(p);
        jnode *n = node(p, N_NOT, t->pos);
        n->a = parse_not(p);
        leave(p);
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(parser *p)
{
    jnode *l = parse_not(p);
    while (is_name(cur(p), "and")) {
        jnode *n = node(p, N_AND, cur(p)->pos);
        p->i++;
        n->a = l;
        n->b = parse_not(p);
        l = n;
    }
    return l;
}

static jnode *parse_or(parser *p)
{
    jnode *l = parse_and(p);
    while (is_name(cur(p), "or")) {
        jnode *n = node(p, N_OR, cur(p)->pos);
        p->i++;
        n->a = l;
        n->b = parse_and(p);
        l = n;
    }
    return l;
}

static jnode *parse_condexpr(parser *p)
{
    enter(p);
    /* the branches of an inline if are soft: unknown filters there fail only when run */
    int unk = p->n_unknown;
    p->soft++;
    jnode *e1 = parse_or(p);
    p->soft--;
    if (!p->soft && p->n_unknown > unk && !is_name(cur(p), "if"))
        jx_fail(p->c, p->unk_pos, "TemplateAssertionError", "No %s named '%s'.", p->unk_kind, p->unk_name);
    while (is_name(cur(p), "if")) {
        jnode *n = node(p, N_COND, cur(p)->pos);
        p->i++;
        p->soft++;
        n->a = parse_or(p); /* condition */
        n->b = e1;
        if (is_name(cur(p), "else")) {
            p->i++;
            n->c = parse_condexpr(p);
        }
        p->soft--;
        e1 = n;
        /* unknown names in these branches are legitimately deferred to run time */
        p->n_unknown = unk;
    }
    leave(p);
    return e1;
}

static jnode *parse_expr(parser *p) { return parse_condexpr(p); }

/* Comma-separated expressions; a single one without a trailing comma is itself. */
static jnode *parse_tuple(parser *p, bool with_condexpr, bool explicit_parens)
{
    uint32_t pos = cur(p)->pos;
    nvec items = {0};
    bool is_tuple = false;
    for (;;) {
        if (items.n) {
            if (!is_op(cur(p), ','))
                break;
            p->i++;
            is_tuple = true;
        }
        tok *t = cur(p);
        if (t->t == T_VEND || t->t == T_BEND || is_op(t, ')') || is_name(t, "in") ||
            (items.n && is_op(t, '=')))
            break;
        nv_push(p, &items, with_condexpr ? parse_expr(p) : parse_or(p));
    }
    if (!is_tuple) {
        if (items.n == 1)
            return items.v[0];
        if (!explicit_parens)
            SYNERR(p, pos, "expected an expression");
    }
    jnode *n = node(p, N_TUPLE, pos);
    n->list = items.v;
    n->n = items.n;
    return n;
}

/* ---- statements ---- */
static jnode *parse_body(parser *p, const char *const *ends, int *which);

static void expect_bend(parser *p)
{
    if (cur(p)->t != T_BEND)
        SYNERR(p, cur(p)->pos, "expected end of statement block, got %s", tok_desc(cur(p)));
    p->i++;
}

/* Consumes `{% name` already seen as the end tag, and the block end. */
static void end_tag(parser *p)
{
    p->i++; /* the name */
    if (cur(p)->t == T_NAME)
        p->i++; /* `endmacro name` etc. */
    expect_bend(p);
}

/* Which of varargs (1) / kwargs (2) a macro body refers to; nested macros are their own. */
static int scan_special(const jnode *n, int depth)
{
    if (!n || depth > 2000)
        return 0;
    int r = 0;
    if (n->kind == N_NAME) {
        if (!strcmp(n->name, "varargs"))
            r |= 1;
        else if (!strcmp(n->name, "kwargs"))
            r |= 2;
        else if (!strcmp(n->name, "caller"))
            r |= 4;
        return r;
    }
    if (n->kind == N_MACRO)
        return 0;
    r |= scan_special(n->a, depth + 1) | scan_special(n->b, depth + 1) | scan_special(n->c, depth + 1) |
         scan_special(n->d, depth + 1);
    for (int i = 0; i < n->n; i++)
        r |= scan_special(n->list[i], depth + 1);
    int n2 = (n->kind == N_DICT) ? n->n : (n->kind == N_CALL || n->kind == N_FILTER || n->kind == N_TEST) ? n->n2 : 0;
    if (n->kind == N_CALLBLOCK)
        n2 = n->nnames;
    for (int i = 0; i < n2; i++)
        r |= scan_special(n->list2[i], depth + 1);
    return r;
}

static const char **targets(parser *p, int *n)
{
    const char *buf[16];
    int k = 0;
    bool paren = is_op(cur(p), '(');
    if (paren)
        p->i++;
    for (;;) {
        if (k >= 16)
            SYNERR(p, cur(p)->pos, "too many loop targets");
        buf[k++] = expect_name(p);
        if (!is_op(cur(p), ','))
            break;
        p->i++;
    }
    if (paren)
        expect_op(p, ')');
    const char **r = palloc(p, sizeof(char *) * (size_t)k);
    memcpy(r, buf, sizeof(char *) * (size_t)k);
    *n = k;
    return r;
}

static void parse_params(parser *p, jnode *n)
{
    /* (a, b=1, ...) into names / list2 (defaults, NULL when none) */
    const char *buf[64];
    jnode *defs[64];
    int k = 0;
    expect_op(p, '(');
    while (!is_op(cur(p), ')')) {
        if (k)
            expect_op(p, ',');
        if (k >= 64)
            SYNERR(p, cur(p)->pos, "too many macro parameters");
        buf[k] = expect_name(p);
        defs[k] = NULL;
        if (is_op(cur(p), '=')) {
            p->i++;
            defs[k] = parse_expr(p);
        }
        k++;
    }
    expect_op(p, ')');
    n->names = palloc(p, sizeof(char *) * (size_t)(k ? k : 1));
    n->list2 = palloc(p, sizeof(jnode *) * (size_t)(k ? k : 1));
    memcpy(n->names, buf, sizeof(char *) * (size_t)k);
    memcpy(n->list2, defs, sizeof(jnode *) * (size_t)k);
    n->nnames = k;
}

static jnode *parse_stmt(parser *p)
{
    tok *bt = cur(p); /* T_BBEGIN */
    p->i++;
    tok *t = cur(p);
    if (t->t != T_NAME)
        SYNERR(p, t->pos, "tag name expected");
    enter(p);
    jnode *n;
    if (is_name(t, "if")) {
        p->i++;
        n = node(p, N_IF, bt->pos);
        n->a = parse_tuple(p, true, false);
        expect_bend(p);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        int w;
        p->soft++;
        n->b = parse_body(p, ends, &w);
        jnode *tail = n;
        for (;;) {
            if (w == 0) {
                uint32_t pos = cur(p)->pos;
                p->i++;
                jnode *e = node(p, N_IF, pos);
                p->soft--;
                e->a = parse_tuple(p, true, false);
                p->soft++;
                expect_bend(p);
                e->b = parse_body(p, ends, &w);
                tail->c = e;
                tail = e;
            } else if (w == 1) {
                p->i++;
                expect_bend(p);
                static const char *const ends2[] = {"endif", NULL};
                tail->c = parse_body(p, ends2, &w);
                end_tag(p);
                break;
            } else {
                end_tag(p);
                break;
            }
        }
        p->soft--;
    } else if (is_name(t, "for")) {
        p->i++;
        n = node(p, N_FOR, bt->pos);
        n->names = targets(p, &n->nnames);
        if (!is_name(cur(p), "in"))
            SYNERR(p, cur(p)->pos, "expected 'in'");
        p->i++;
        n->a = parse_tuple(p, false, false);
        if (is_name(cur(p), "if")) {
            p->i++;
            n->d = parse_expr(p);
        }
        if (is_name(cur(p), "recursive")) {
            p->i++;
            n->neg = 1;
        }
        expect_bend(p);
        static const char *const ends[] = {"endfor", "else", NULL};
        int w;
        n->b = parse_body(p, ends, &w);
        if (w == 1) {
            p->i++;
            expect_bend(p);
            static const char *const ends2[] = {"endfor", NULL};
            n->c = parse_body(p, ends2, &w);
        }
        end_tag(p);
    } else if (is_name(t, "set")) {
        p->i++;
        tok *nt = cur(p);
        if (nt->t == T_NAME && is_op(peek(p, 1), '.')) {
            /* namespace attribute: set ns.attr = expr */
            n = node(p, N_SET, bt->pos);
            n->name = expect_name(p);
            p->i++;
            n->a = node(p, N_LIT, nt->pos);
            n->a->val = jv_str(js_cstr(p->c, expect_name(p)));
            expect_op(p, '=');
            n->b = parse_tuple(p, true, false);
            expect_bend(p);
        } else {
            int nn;
            const char **names = targets(p, &nn);
            if (is_op(cur(p), '=')) {
                p->i++;
                n = node(p, N_SET, bt->pos);
                n->names = names;
                n->nnames = nn;
                n->b = parse_tuple(p, true, false);
                expect_bend(p);
            } else {
                if (nn != 1)
                    SYNERR(p, cur(p)->pos, "expected '='");
                n = node(p, N_SETBLOCK, bt->pos);
                n->names = names;
                n->nnames = 1;
                jnode *f = NULL;
                while (is_op(cur(p), '|')) {
                    p->i++;
                    f = parse_filter(p, f, false);
                }
                n->d = f;
                expect_bend(p);
                static const char *const ends[] = {"endset", NULL};
                int w;
                n->b = parse_body(p, ends, &w);
                end_tag(p);
            }
        }
    } else if (is_name(t, "macro")) {
        p->i++;
        n = node(p, N_MACRO, bt->pos);
        n->name = expect_name(p);
        parse_params(p, n);
        expect_bend(p);
        static const char *const ends[] = {"endmacro", NULL};
        int w;
        n->b = parse_body(p, ends, &w);
        end_tag(p);
        n->neg = (uint8_t)scan_special(n->b, 0);
    } else if (is_name(t, "call")) {
        p->i++;
        n = node(p, N_CALLBLOCK, bt->pos);
        if (is_op(cur(p), '('))
            parse_params(p, n);
        n->name = "caller";
        n->a = parse_expr(p);
        if (n->a->kind != N_CALL)
            SYNERR(p, n->a->pos, "expected call");
        expect_bend(p);
        static const char *const ends[] = {"endcall", NULL};
        int w;
        n->b = parse_body(p, ends, &w);
        end_tag(p);
    } else if (is_name(t, "filter")) {
        p->i++;
        n = node(p, N_FILTERBLOCK, bt->pos);
        jnode *f = parse_filter(p, NULL, true);
        while (is_op(cur(p), '|')) {
            p->i++;
            f = parse_filter(p, f, false);
        }
        n->d = f;
        expect_bend(p);
        static const char *const ends[] = {"endfilter", NULL};
        int w;
        n->b = parse_body(p, ends, &w);
        end_tag(p);
    } else if (is_name(t, "break") || is_name(t, "continue")) {
        p->i++;
        n = node(p, is_name(t, "break") ? N_BREAK : N_CONTINUE, bt->pos);
        expect_bend(p);
    } else if (is_name(t, "generation")) {
        /* Hugging Face's AssistantTracker tag: renders its body unchanged */
        p->i++;
        expect_bend(p);
        static const char *const ends[] = {"endgeneration", NULL};
        int w;
        n = parse_body(p, ends, &w);
        end_tag(p);
    } else {
        SYNERR(p, t->pos, "Encountered unknown tag '%.*s'.", (int)(t->n > 64 ? 64 : t->n), t->s);
    }
    leave(p);
    return n;
}

static jnode *parse_body(parser *p, const char *const *ends, int *which)
{
    nvec items = {0};
    uint32_t pos = cur(p)->pos;
    for (;;) {
        tok *t = cur(p);
        if (t->t == T_EOF) {
            if (ends)
                SYNERR(p, t->pos, "Unexpected end of template. Jinja was looking for '%s'.", ends[0]);
            break;
        }
        if (t->t == T_TEXT) {
            jnode *n = node(p, N_TEXT, t->pos);
            n->val = jv_str(js_new(p->c, t->s, t->n));
            nv_push(p, &items, n);
            p->i++;
        } else if (t->t == T_VBEGIN) {
            p->i++;
            jnode *n = node(p, N_OUT, t->pos);
            n->a = parse_tuple(p, true, false);
            if (cur(p)->t != T_VEND)
                SYNERR(p, cur(p)->pos, "expected end of print statement, got %s", tok_desc(cur(p)));
            p->i++;
            nv_push(p, &items, n);
        } else if (t->t == T_BBEGIN) {
            tok *nt = peek(p, 1);
            if (ends && nt->t == T_NAME) {
                for (int k = 0; ends[k]; k++)
                    if (is_name(nt, ends[k])) {
                        p->i++; /* leave the name current */
                        *which = k;
                        goto done;
                    }
            }
            if (nt->t == T_NAME && nt->n > 3 && !memcmp(nt->s, "end", 3))
                SYNERR(p, nt->pos, "Encountered unknown tag '%.*s'.", (int)(nt->n > 64 ? 64 : nt->n), nt->s);
            if (is_name(nt, "elif") || is_name(nt, "else"))
                SYNERR(p, nt->pos, "Encountered unknown tag '%.*s'.", (int)nt->n, nt->s);
            nv_push(p, &items, parse_stmt(p));
        } else {
            SYNERR(p, t->pos, "unexpected %s", tok_desc(t));
        }
    }
done:;
    jnode *b = node(p, N_BODY, pos);
    b->list = items.v;
    b->n = items.n;
    return b;
}

/* ---- entry points ---- */
jinja_options jinja_default_options(void)
{
    jinja_options o = {.trim_blocks = true, .lstrip_blocks = true, .keep_trailing_newline = false,
                       .max_nesting = 256};
    return o;
}

jinja_template *jinja_parse(const char *src, size_t len, const jinja_options *opt, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (!src && len)
        return NULL;
    if (len > ((size_t)1 << 30)) {
        if (err && errlen)
            snprintf(err, errlen, "template too large");
        return NULL;
    }
    jinja_template *t = calloc(1, sizeof *t);
    if (!t) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ja_init(&t->ar, (size_t)1 << 31);
    /* normalise newlines (\r\n and \r become \n) and drop one trailing newline */
    t->src = malloc(len + 1);
    if (!t->src) {
        free(t);
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            t->src[o++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            t->src[o++] = src[i];
        }
    }
    jinja_options op = opt ? *opt : jinja_default_options();
    if (!op.max_nesting)
        op.max_nesting = 256;
    if (!op.keep_trailing_newline && o > 0 && t->src[o - 1] == '\n')
        o--;
    t->src[o] = 0;
    t->src_len = o;

    jctx c;
    memset(&c, 0, sizeof c);
    c.ar = &t->ar;
    c.err = err;
    c.errlen = errlen;
    c.parsing = true;
    c.src = t->src;
    c.max_output = (size_t)1 << 30;
    parser *volatile pp = calloc(1, sizeof(parser));
    if (!pp) {
        jinja_free(t);
        return NULL;
    }
    pp->c = &c;
    pp->src = t->src;
    pp->len = o;
    pp->opt = op;
    if (setjmp(c.jb)) {
        free(pp->toks);
        free(pp);
        jinja_free(t);
        return NULL;
    }
    lex(pp);
    t->root = parse_body(pp, NULL, NULL);
    free(pp->toks);
    free(pp);
    return t;
}

void jinja_free(jinja_template *t)
{
    if (!t)
        return;
    ja_free(&t->ar);
    free(t->src);
    free(t);
}
