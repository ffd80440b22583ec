/* gbnf.c - parser for GBNF, the grammar notation llama.cpp uses (rule ::= alternatives,
 * "literals", [classes], [^negated], ., groups, * + ? {m,n}, # comments), lowered into the
 * grammar core's builder. The regex and JSON Schema front ends also emit GBNF text. */
#include "grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s, *end, *p;
    grammar_builder *b;
    char *err;
    size_t errlen;
    bool failed;
    int depth;
} gparser;

typedef struct {
    grammar_elem *v;
    size_t n, cap;
} evec;

static bool perr(gparser *ps, const char *at, const char *msg)
{
    if (ps->failed)
        return false;
    ps->failed = true;
    int line = 1, col = 1;
    for (const char *q = ps->s; q < at && q < ps->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(ps->err, ps->errlen, "%d:%d: %s", line, col, msg);
    return false;
}

static bool evec_push(gparser *ps, evec *e, grammar_elem x)
{
    if (e->n == e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 16;
        if (nc > GRAMMAR_MAX_ELEMS)
            return perr(ps, ps->p, "grammar too large");
        grammar_elem *q = realloc(e->v, nc * sizeof *q);
        if (!q)
            return perr(ps, ps->p, "out of memory");
        e->v = q;
        e->cap = nc;
    }
    e->v[e->n++] = x;
    return true;
}

static bool is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

static void skip_space(gparser *ps, bool newline_ok)
{
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == ' ' || c == '\t') {
            ps->p++;
        } else if (c == '#') {
            while (ps->p < ps->end && *ps->p != '\n' && *ps->p != '\r')
                ps->p++;
        } else if (newline_ok && (c == '\n' || c == '\r')) {
            ps->p++;
        } else {
            break;
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode one UTF-8 code point of the grammar text (invalid bytes decode as themselves,
 * as llama.cpp does). */
static uint32_t decode_utf8(gparser *ps)
{
    const unsigned char *p = (const unsigned char *)ps->p;
    size_t left = (size_t)(ps->end - ps->p);
    unsigned c = p[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if ((size_t)n > left)
        n = 1;
    uint32_t v = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            ps->p += 1;
            return c;
        }
        v = v << 6 | (p[i] & 0x3F);
    }
    ps->p += n;
    return v;
}

/* One character of a literal or class, with escapes. UINT32_MAX on error. */
static uint32_t parse_char(gparser *ps)
{
    if (ps->p >= ps->end) {
        perr(ps, ps->p, "unexpected end of input");
        return UINT32_MAX;
    }
    if (*ps->p != '\\')
        return decode_utf8(ps);
    const char *at = ps->p++;
    if (ps->p >= ps->end) {
        perr(ps, at, "unfinished escape");
        return UINT32_MAX;
    }
    char c = *ps->p++;
    int nhex = 0;
    switch (c) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case '0': return 0;
    case 'x': nhex = 2; break;
    case 'u': nhex = 4; break;
    case 'U': nhex = 8; break;
    case '\\': case '"': case '[': case ']': case '-': case '^': case '/': case '\'':
    case '.': case '(': case ')': case '|': case '*': case '+': case '?': case '{': case '}':
        return (unsigned char)c;
    default:
        perr(ps, at, "unknown escape");
        return UINT32_MAX;
    }
    uint32_t v = 0;
    for (int i = 0; i < nhex; i++) {
        int h = ps->p < ps->end ? hexval(*ps->p) : -1;
        if (h < 0) {
            perr(ps, at, "bad hex escape");
            return UINT32_MAX;
        }
        v = v << 4 | (uint32_t)h;
        ps->p++;
    }
    if (v > 0x10FFFF) {
        perr(ps, at, "code point out of range");
        return UINT32_MAX;
    }
    return v;
}

static bool push_codepoint(gparser *ps, evec *seq, uint32_t c)
{
    uint8_t buf[4];
    int n;
    if (c < 0x80) {
        buf[0] = (uint8_t)c;
        n = 1;
    } else if (c < 0x800) {
        buf[0] = (uint8_t)(0xC0 | (c >> 6));
        buf[1] = (uint8_t)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) {
        buf[0] = (uint8_t)(0xE0 | (c >> 12));
        buf[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        buf[2] = (uint8_t)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        buf[0] = (uint8_t)(0xF0 | (c >> 18));
        buf[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        buf[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        buf[3] = (uint8_t)(0x80 | (c & 0x3F));
        n = 4;
    }
    for (int i = 0; i < n; i++) {
        uint8_t set[32] = {0};
        set[buf[i] >> 3] = (uint8_t)(1u << (buf[i] & 7));
        grammar_elem e = gb_elem_bytes(ps->b, set);
        if (e == UINT32_MAX)
            return perr(ps, ps->p, gb_error(ps->b));
        if (!evec_push(ps, seq, e))
            return false;
    }
    return true;
}

static bool parse_alternates(gparser *ps, int32_t rule, bool nested);

/* Make the elements seq[from..] one element (a fresh rule when more than one). */
static bool wrap_tail(gparser *ps, evec *seq, size_t from, grammar_elem *out)
{
    if (seq->n - from == 1) {
        *out = seq->v[from];
        return true;
    }
    int32_t r = gb_anon_rule(ps->b, "seq");
    if (r < 0 || !gb_add_alt(ps->b, r, seq->v + from, seq->n - from))
        return perr(ps, ps->p, gb_error(ps->b));
    *out = gb_elem_rule(r);
    return true;
}

/* Apply x{min,max} (max < 0: unbounded) to the last symbol seq[from..]. */
static bool repeat(gparser *ps, evec *seq, size_t from, long min, long max)
{
    grammar_elem x;
    if (!wrap_tail(ps, seq, from, &x))
        return false;
    seq->n = from;
    for (long i = 0; i < min; i++)
        if (!evec_push(ps, seq, x))
            return false;
    grammar_builder *b = ps->b;
    if (max < 0) {
        /* star ::= x star | ε */
        int32_t r = gb_anon_rule(b, "star");
        grammar_elem alt[2] = {x, gb_elem_rule(r)};
        if (r < 0 || !gb_add_alt(b, r, alt, 2) || !gb_add_alt(b, r, NULL, 0))
            return perr(ps, ps->p, gb_error(b));
        return evec_push(ps, seq, gb_elem_rule(r));
    }
    /* (x (x (x)?)?)? built inside out */
    int32_t inner = -1;
    for (long i = 0; i < max - min; i++) {
        int32_t r = gb_anon_rule(b, "opt");
        grammar_elem alt[2] = {x, inner >= 0 ? gb_elem_rule(inner) : 0};
        if (r < 0 || !gb_add_alt(b, r, alt, inner >= 0 ? 2 : 1) || !gb_add_alt(b, r, NULL, 0))
            return perr(ps, ps->p, gb_error(b));
        inner = r;
    }
    if (inner >= 0)
        return evec_push(ps, seq, gb_elem_rule(inner));
    return true;
}

static bool parse_int(gparser *ps, long *out)
{
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return perr(ps, ps->p, "expected a number");
    long v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        v = v * 10 + (*ps->p++ - '0');
        if (v > GRAMMAR_MAX_REPEAT)
            return perr(ps, ps->p, "repetition bound too large");
    }
    *out = v;
    return true;
}

static bool parse_sequence(gparser *ps, evec *seq, bool nested)
{
    size_t last = SIZE_MAX; /* start of the last symbol, for quantifiers */
    for (;;) {
        skip_space(ps, nested);
        if (ps->failed)
            return false;
        if (ps->p >= ps->end)
            return true;
        char c = *ps->p;
        const char *at = ps->p;
        if (c == '"') {
            ps->p++;
            last = seq->n;
            while (ps->p < ps->end && *ps->p != '"') {
                uint32_t cp = parse_char(ps);
                if (cp == UINT32_MAX || !push_codepoint(ps, seq, cp))
                    return false;
            }
            if (ps->p >= ps->end)
                return perr(ps, at, "unterminated string literal");
            ps->p++;
            if (seq->n == last) { /* "" is the empty string: nothing to quantify */
                last = SIZE_MAX;
            }
        } else if (c == '[') {
            ps->p++;
            bool neg = ps->p < ps->end && *ps->p == '^';
            if (neg)
                ps->p++;
            uint32_t *lo = NULL, *hi = NULL;
            size_t n = 0, cap = 0;
            while (ps->p < ps->end && *ps->p != ']') {
                uint32_t a = parse_char(ps), z;
                if (a == UINT32_MAX)
                    goto class_fail;
                z = a;
                if (ps->p + 1 < ps->end && *ps->p == '-' && ps->p[1] != ']') {
                    ps->p++;
                    z = parse_char(ps);
                    if (z == UINT32_MAX)
                        goto class_fail;
                    if (z < a) {
                        perr(ps, at, "bad range in character class");
                        goto class_fail;
                    }
                }
                if (n == cap) {
                    cap = cap ? cap * 2 : 8;
                    if (cap > GRAMMAR_MAX_ELEMS) {
                        perr(ps, at, "character class too large");
                        goto class_fail;
                    }
                    uint32_t *nl = realloc(lo, cap * sizeof *nl);
                    if (nl)
                        lo = nl;
                    uint32_t *nh = realloc(hi, cap * sizeof *nh);
                    if (nh)
                        hi = nh;
                    if (!nl || !nh) {
                        perr(ps, at, "out of memory");
                        goto class_fail;
                    }
                }
                lo[n] = a;
                hi[n] = z;
                n++;
            }
            if (ps->p >= ps->end) {
                perr(ps, at, "unterminated character class");
                goto class_fail;
            }
            ps->p++;
            grammar_elem e = gb_elem_codepoints(ps->b, lo, hi, n, neg);
            free(lo);
            free(hi);
            if (e == UINT32_MAX)
                return perr(ps, at, gb_error(ps->b));
            last = seq->n;
            if (!evec_push(ps, seq, e))
                return false;
            continue;
        class_fail:
            free(lo);
            free(hi);
            return false;
        } else if (c == '.') {
            ps->p++;
            grammar_elem e = gb_elem_codepoints(ps->b, NULL, NULL, 0, true);
            if (e == UINT32_MAX)
                return perr(ps, at, gb_error(ps->b));
            last = seq->n;
            if (!evec_push(ps, seq, e))
                return false;
        } else if (is_word(c)) {
            const char *s = ps->p;
            while (ps->p < ps->end && is_word(*ps->p))
                ps->p++;
            /* "name ::=" starts the next rule: only possible after a newline, which ended
             * this sequence unless we are nested, where it is an error. */
            const char *save = ps->p;
            skip_space(ps, false);
            if (ps->end - ps->p >= 3 && memcmp(ps->p, "::=", 3) == 0)
                return perr(ps, s, "missing newline before rule definition");
            ps->p = save;
            int32_t r = gb_rule(ps->b, s, (size_t)(ps->p - s));
            if (r < 0)
                return perr(ps, s, gb_error(ps->b));
            last = seq->n;
            if (!evec_push(ps, seq, gb_elem_rule(r)))
                return false;
        } else if (c == '(') {
            ps->p++;
            if (++ps->depth > GRAMMAR_MAX_DEPTH)
                return perr(ps, at, "groups nested too deeply");
            int32_t r = gb_anon_rule(ps->b, "group");
            if (r < 0)
                return perr(ps, at, gb_error(ps->b));
            if (!parse_alternates(ps, r, true))
                return false;
            ps->depth--;
            if (ps->p >= ps->end || *ps->p != ')')
                return perr(ps, at, "expected ')'");
            ps->p++;
            last = seq->n;
            if (!evec_push(ps, seq, gb_elem_rule(r)))
                return false;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == SIZE_MAX)
                return perr(ps, at, "quantifier without a preceding symbol");
            ps->p++;
            long min = 0, max = -1;
            if (c == '+')
                min = 1;
            else if (c == '?')
                max = 1;
            else if (c == '{') {
                skip_space(ps, nested);
                if (!parse_int(ps, &min))
                    return false;
                skip_space(ps, nested);
                max = min;
                if (ps->p < ps->end && *ps->p == ',') {
                    ps->p++;
                    skip_space(ps, nested);
                    max = -1;
                    if (ps->p < ps->end && *ps->p != '}' && !parse_int(ps, &max))
                        return false;
                    skip_space(ps, nested);
                }
                if (ps->p >= ps->end || *ps->p != '}')
                    return perr(ps, at, "expected '}'");
                ps->p++;
                if (max >= 0 && max < min)
                    return perr(ps, at, "repetition {m,n} with n < m");
            }
            if (!repeat(ps, seq, last, min, max))
                return false;
            last = SIZE_MAX; /* llama.cpp rejects x** too */
        } else {
            return true; /* '|', ')', newline or something the caller reports */
        }
    }
}

static bool parse_alternates(gparser *ps, int32_t rule, bool nested)
{
    evec seq = {0};
    for (;;) {
        seq.n = 0;
        if (!parse_sequence(ps, &seq, nested))
            goto fail;
        if (!gb_add_alt(ps->b, rule, seq.v, seq.n)) {
            perr(ps, ps->p, gb_error(ps->b));
            goto fail;
        }
        if (ps->p < ps->end && *ps->p == '|') {
            ps->p++;
            skip_space(ps, true);
            continue;
        }
        break;
    }
    free(seq.v);
    return true;
fail:
    free(seq.v);
    return false;
}

grammar *grammar_from_gbnf(const char *text, size_t len, const char *root, char *err,
                           size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (!text) {
        snprintf(err, errlen, "no grammar text");
        return NULL;
    }
    gparser ps = {text, text + len, text, gb_new(), err, errlen, false, 0};
    if (!ps.b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (;;) {
        skip_space(&ps, true);
        if (ps.p >= ps.end)
            break;
        const char *s = ps.p;
        while (ps.p < ps.end && is_word(*ps.p))
            ps.p++;
        if (ps.p == s) {
            perr(&ps, s, "expected a rule name");
            break;
        }
        int32_t r = gb_rule(ps.b, s, (size_t)(ps.p - s));
        if (r < 0) {
            perr(&ps, s, gb_error(ps.b));
            break;
        }
        if (gb_rule_defined(ps.b, r)) {
            perr(&ps, s, "rule defined twice");
            break;
        }
        skip_space(&ps, false);
        if (ps.end - ps.p < 3 || memcmp(ps.p, "::=", 3) != 0) {
            perr(&ps, ps.p, "expected '::='");
            break;
        }
        ps.p += 3;
        skip_space(&ps, true);
        if (!parse_alternates(&ps, r, false))
            break;
        if (ps.p < ps.end && *ps.p != '\n' && *ps.p != '\r') {
            perr(&ps, ps.p, *ps.p == ')' ? "unbalanced ')'" : "unexpected character");
            break;
        }
    }
    if (ps.failed) {
        gb_free(ps.b);
        return NULL;
    }
    char ferr[256];
    grammar *g = gb_finish(ps.b, root, ferr, sizeof ferr);
    if (!g)
        snprintf(err, errlen, "%s", ferr);
    return g;
}
