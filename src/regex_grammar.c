/* regex_grammar.c - regular expressions (a PCRE-style subset) to GBNF text, for the
 * --regex input and for JSON Schema "pattern" (where the text is the inside of a JSON
 * string, so characters that need escaping come out escaped). */
#include "grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t lo, hi;
} rrange;

typedef struct {
    rrange *r;
    size_t n, cap;
} rclass;

typedef struct {
    const char *s, *p, *end;
    bool json;
    grammar_strbuf *out;
    char *err;
    size_t errlen;
    bool failed;
    int depth;
} rparser;

static bool rfail(rparser *ps, const char *msg)
{
    if (!ps->failed)
        snprintf(ps->err, ps->errlen, "regex at offset %ld: %s", (long)(ps->p - ps->s), msg);
    ps->failed = true;
    return false;
}

static bool cls_add(rparser *ps, rclass *c, uint32_t lo, uint32_t hi)
{
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 8;
        if (nc > 1u << 20)
            return rfail(ps, "character class too large");
        rrange *q = realloc(c->r, nc * sizeof *q);
        if (!q)
            return rfail(ps, "out of memory");
        c->r = q;
        c->cap = nc;
    }
    c->r[c->n++] = (rrange){lo, hi};
    return true;
}

static int cmp_rrange(const void *a, const void *b)
{
    const rrange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void cls_normalize(rclass *c)
{
    if (!c->n)
        return;
    qsort(c->r, c->n, sizeof *c->r, cmp_rrange);
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (m && c->r[i].lo <= c->r[m - 1].hi + 1) {
            if (c->r[i].hi > c->r[m - 1].hi)
                c->r[m - 1].hi = c->r[i].hi;
        } else {
            c->r[m++] = c->r[i];
        }
    }
    c->n = m;
}

/* c := complement of c over 0..0x10FFFF */
static bool cls_negate(rparser *ps, rclass *c)
{
    cls_normalize(c);
    rclass o = {0};
    uint32_t next = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (c->r[i].lo > next && !cls_add(ps, &o, next, c->r[i].lo - 1))
            goto fail;
        next = c->r[i].hi + 1;
    }
    if (next <= 0x10FFFF && !cls_add(ps, &o, next, 0x10FFFF))
        goto fail;
    free(c->r);
    *c = o;
    return true;
fail:
    free(o.r);
    return false;
}

/* Remove [lo, hi] from c. */
static bool cls_remove(rparser *ps, rclass *c, uint32_t lo, uint32_t hi)
{
    rclass o = {0};
    for (size_t i = 0; i < c->n; i++) {
        rrange r = c->r[i];
        if (r.hi < lo || r.lo > hi) {
            if (!cls_add(ps, &o, r.lo, r.hi))
                goto fail;
            continue;
        }
        if (r.lo < lo && !cls_add(ps, &o, r.lo, lo - 1))
            goto fail;
        if (r.hi > hi && !cls_add(ps, &o, hi + 1, r.hi))
            goto fail;
    }
    free(c->r);
    *c = o;
    return true;
fail:
    free(o.r);
    return false;
}

static void put_cp_escaped(grammar_strbuf *o, uint32_t c)
{
    if (c == '"' || c == '\\' || c == ']' || c == '[' || c == '-' || c == '^')
        gsb_printf(o, "\\%c", (char)c);
    else if (c < 0x20 || c == 0x7F)
        gsb_printf(o, "\\x%02X", c);
    else if (c < 0x80)
        gsb_printf(o, "%c", (char)c);
    else if (c < 0x10000)
        gsb_printf(o, "\\u%04X", c);
    else
        gsb_printf(o, "\\U%08X", c);
}

/* Print a class as a GBNF [..] (in JSON mode without the characters needing escapes). */
static bool emit_class(rparser *ps, rclass *c)
{
    cls_normalize(c);
    if (ps->json) {
        if (!cls_remove(ps, c, 0, 0x1F) || !cls_remove(ps, c, '"', '"') ||
            !cls_remove(ps, c, '\\', '\\'))
            return false;
    }
    if (!cls_remove(ps, c, 0xD800, 0xDFFF))
        return false;
    if (c->n == 0)
        return rfail(ps, "character class matches nothing (in this context)");
    gsb_puts(ps->out, "[");
    for (size_t i = 0; i < c->n; i++) {
        put_cp_escaped(ps->out, c->r[i].lo);
        if (c->r[i].hi != c->r[i].lo) {
            gsb_puts(ps->out, "-");
            put_cp_escaped(ps->out, c->r[i].hi);
        }
    }
    gsb_puts(ps->out, "]");
    return true;
}

/* A literal character: in JSON mode written the way JSON spells it. */
static void emit_literal(rparser *ps, uint32_t c)
{
    grammar_strbuf *o = ps->out;
    gsb_puts(o, "\"");
    if (ps->json && (c == '"' || c == '\\')) {
        gsb_printf(o, "\\\\\\%c", (char)c);
    } else if (ps->json && c < 0x20) {
        gsb_printf(o, "\\\\u%04X", c);
    } else if (c == '"' || c == '\\') {
        gsb_printf(o, "\\%c", (char)c);
    } else if (c < 0x20 || c == 0x7F) {
        gsb_printf(o, "\\x%02X", c);
    } else if (c < 0x80) {
        gsb_printf(o, "%c", (char)c);
    } else if (c < 0x10000) {
        gsb_printf(o, "\\u%04X", c);
    } else {
        gsb_printf(o, "\\U%08X", c);
    }
    gsb_puts(o, "\"");
}

static uint32_t decode_cp(rparser *ps)
{
    const unsigned char *p = (const unsigned char *)ps->p;
    size_t left = (size_t)(ps->end - ps->p);
    unsigned c = p[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || (size_t)n > left) {
        rfail(ps, "invalid UTF-8");
        return UINT32_MAX;
    }
    uint32_t v = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            rfail(ps, "invalid UTF-8");
            return UINT32_MAX;
        }
        v = v << 6 | (p[i] & 0x3F);
    }
    ps->p += n;
    return v;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* After a backslash: either a single code point (returned) or a class escape added to
 * cls (returns UINT32_MAX - 1). UINT32_MAX on error. */
static uint32_t parse_escape(rparser *ps, rclass *cls)
{
    if (ps->p >= ps->end) {
        rfail(ps, "trailing backslash");
        return UINT32_MAX;
    }
    char c = *ps->p++;
    bool neg = false;
    rclass tmp = {0};
    switch (c) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'f': return '\f';
    case 'v': return '\v';
    case 'a': return 7;
    case 'e': return 27;
    case '0': return 0;
    case 'x': case 'u': {
        int n = c == 'x' ? 2 : 4;
        uint32_t v = 0;
        if (c == 'x' && ps->p < ps->end && *ps->p == '{') {
            ps->p++;
            while (ps->p < ps->end && *ps->p != '}') {
                int h = hexv(*ps->p++);
                if (h < 0 || v > 0x10FFFF) {
                    rfail(ps, "bad \\x{...} escape");
                    return UINT32_MAX;
                }
                v = v << 4 | (uint32_t)h;
            }
            if (ps->p >= ps->end || v > 0x10FFFF) {
                rfail(ps, "bad \\x{...} escape");
                return UINT32_MAX;
            }
            ps->p++;
            return v;
        }
        for (int i = 0; i < n; i++) {
            int h = ps->p < ps->end ? hexv(*ps->p) : -1;
            if (h < 0) {
                rfail(ps, "bad hex escape");
                return UINT32_MAX;
            }
            v = v << 4 | (uint32_t)h;
            ps->p++;
        }
        return v;
    }
    case 'D': neg = true; /* fall through */
    case 'd':
        if (!cls_add(ps, &tmp, '0', '9'))
            goto fail;
        break;
    case 'W': neg = true; /* fall through */
    case 'w':
        if (!cls_add(ps, &tmp, '0', '9') || !cls_add(ps, &tmp, 'A', 'Z') ||
            !cls_add(ps, &tmp, 'a', 'z') || !cls_add(ps, &tmp, '_', '_'))
            goto fail;
        break;
    case 'S': neg = true; /* fall through */
    case 's':
        if (!cls_add(ps, &tmp, ' ', ' ') || !cls_add(ps, &tmp, '\t', '\r'))
            goto fail;
        break;
    case 'b': case 'B': case 'A': case 'z': case 'Z': case 'G':
        rfail(ps, "assertion escapes (\\b, \\B, \\A, \\z, \\Z, \\G) are not supported");
        return UINT32_MAX;
    case 'p': case 'P':
        rfail(ps, "unicode property escapes (\\p, \\P) are not supported");
        return UINT32_MAX;
    default:
        if ((c >= '1' && c <= '9') || c == 'k' || c == 'g') {
            rfail(ps, "backreferences are not supported");
            return UINT32_MAX;
        }
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            rfail(ps, "unknown escape");
            return UINT32_MAX;
        }
        ps->p--;
        return decode_cp(ps);
    }
    if (neg && !cls_negate(ps, &tmp))
        goto fail;
    for (size_t i = 0; i < tmp.n; i++)
        if (!cls_add(ps, cls, tmp.r[i].lo, tmp.r[i].hi))
            goto fail;
    free(tmp.r);
    return UINT32_MAX - 1;
fail:
    free(tmp.r);
    return UINT32_MAX;
}

static bool parse_class(rparser *ps)
{
    rclass c = {0};
    bool neg = false;
    if (ps->p < ps->end && *ps->p == '^') {
        neg = true;
        ps->p++;
    }
    bool first = true;
    while (ps->p < ps->end && (*ps->p != ']' || first)) {
        first = false;
        uint32_t a;
        if (*ps->p == '[' && ps->p + 1 < ps->end && ps->p[1] == ':') {
            rfail(ps, "POSIX classes [:name:] are not supported");
            goto fail;
        }
        if (*ps->p == '\\') {
            ps->p++;
            a = parse_escape(ps, &c);
            if (a == UINT32_MAX)
                goto fail;
            if (a == UINT32_MAX - 1)
                continue;
        } else {
            a = decode_cp(ps);
            if (a == UINT32_MAX)
                goto fail;
        }
        uint32_t z = a;
        if (ps->p + 1 < ps->end && *ps->p == '-' && ps->p[1] != ']') {
            ps->p++;
            if (*ps->p == '\\') {
                ps->p++;
                rclass dummy = {0};
                z = parse_escape(ps, &dummy);
                free(dummy.r);
                if (z == UINT32_MAX - 1) {
                    rfail(ps, "class escape as range end");
                    goto fail;
                }
            } else {
                z = decode_cp(ps);
            }
            if (z == UINT32_MAX)
                goto fail;
            if (z < a) {
                rfail(ps, "range out of order in character class");
                goto fail;
            }
        }
        if (!cls_add(ps, &c, a, z))
            goto fail;
    }
    if (ps->p >= ps->end) {
        rfail(ps, "missing ]");
        goto fail;
    }
    ps->p++;
    if (neg && !cls_negate(ps, &c))
        goto fail;
    bool ok = emit_class(ps, &c);
    free(c.r);
    return ok;
fail:
    free(c.r);
    return false;
}

static bool parse_alt(rparser *ps);

static bool parse_count(rparser *ps, long *out)
{
    long v = 0;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return rfail(ps, "expected a number in {m,n}");
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        v = v * 10 + (*ps->p++ - '0');
        if (v > GRAMMAR_MAX_REPEAT)
            return rfail(ps, "repetition bound too large");
    }
    *out = v;
    return true;
}

/* A '{' that does not start a valid {m}, {m,}, {m,n} is a literal, as in PCRE. */
static bool is_quant_brace(const char *p, const char *end)
{
    if (p >= end || *p != '{')
        return false;
    p++;
    if (p >= end || *p < '0' || *p > '9')
        return false;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if (p < end && *p == ',') {
        p++;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    return p < end && *p == '}';
}

static bool parse_seq(rparser *ps)
{
    bool any = false;
    gsb_puts(ps->out, "(");
    while (ps->p < ps->end && *ps->p != '|' && *ps->p != ')') {
        char c = *ps->p;
        if (any)
            gsb_puts(ps->out, " ");
        if (c == '(') {
            ps->p++;
            if (++ps->depth > GRAMMAR_MAX_DEPTH)
                return rfail(ps, "groups nested too deeply");
            if (ps->p < ps->end && *ps->p == '?') {
                if (ps->p + 1 < ps->end && ps->p[1] == ':')
                    ps->p += 2;
                else if (ps->p + 1 < ps->end && ps->p[1] == '<' && ps->p + 2 < ps->end &&
                         ps->p[2] != '=' && ps->p[2] != '!') {
                    while (ps->p < ps->end && *ps->p != '>') /* named group */
                        ps->p++;
                    if (ps->p >= ps->end)
                        return rfail(ps, "unterminated group name");
                    ps->p++;
                } else
                    return rfail(ps, "lookaround and inline flags are not supported");
            }
            if (!parse_alt(ps))
                return false;
            if (ps->p >= ps->end || *ps->p != ')')
                return rfail(ps, "missing )");
            ps->p++;
            ps->depth--;
        } else if (c == '[') {
            ps->p++;
            if (!parse_class(ps))
                return false;
        } else if (c == '.') {
            ps->p++;
            rclass cl = {0};
            bool ok = cls_add(ps, &cl, '\n', '\n') && cls_negate(ps, &cl) && emit_class(ps, &cl);
            free(cl.r);
            if (!ok)
                return false;
        } else if (c == '\\') {
            ps->p++;
            rclass cl = {0};
            uint32_t cp = parse_escape(ps, &cl);
            bool ok = cp != UINT32_MAX;
            if (ok && cp == UINT32_MAX - 1)
                ok = emit_class(ps, &cl);
            else if (ok)
                emit_literal(ps, cp);
            free(cl.r);
            if (!ok)
                return false;
        } else if (c == '^' || c == '$') {
            return rfail(ps, "anchors are only supported at the start and end");
        } else if (c == '*' || c == '+' || c == '?' || is_quant_brace(ps->p, ps->end)) {
            return rfail(ps, "quantifier without anything to repeat");
        } else {
            uint32_t cp = decode_cp(ps);
            if (cp == UINT32_MAX)
                return false;
            emit_literal(ps, cp);
        }
        any = true;
        /* quantifiers */
        if (ps->p < ps->end && (*ps->p == '*' || *ps->p == '+' || *ps->p == '?')) {
            gsb_printf(ps->out, "%c", *ps->p);
            ps->p++;
        } else if (is_quant_brace(ps->p, ps->end)) {
            ps->p++;
            long m, n;
            if (!parse_count(ps, &m))
                return false;
            n = m;
            if (*ps->p == ',') {
                ps->p++;
                n = -1;
                if (*ps->p != '}' && !parse_count(ps, &n))
                    return false;
            }
            ps->p++; /* '}' */
            if (n >= 0 && n < m)
                return rfail(ps, "repetition {m,n} with n < m");
            if (n < 0)
                gsb_printf(ps->out, "{%ld,}", m);
            else
                gsb_printf(ps->out, "{%ld,%ld}", m, n);
        } else {
            continue;
        }
        if (ps->p < ps->end && (*ps->p == '?' || *ps->p == '+'))
            ps->p++; /* lazy / possessive: the same language */
        if (ps->p < ps->end && (*ps->p == '*' || *ps->p == '+' || *ps->p == '?' ||
                                is_quant_brace(ps->p, ps->end)))
            return rfail(ps, "nested quantifier");
    }
    if (!any)
        gsb_puts(ps->out, "\"\"");
    gsb_puts(ps->out, ")");
    return true;
}

static bool parse_alt(rparser *ps)
{
    gsb_puts(ps->out, "(");
    for (;;) {
        if (!parse_seq(ps))
            return false;
        if (ps->p < ps->end && *ps->p == '|') {
            ps->p++;
            gsb_puts(ps->out, " | ");
            continue;
        }
        break;
    }
    gsb_puts(ps->out, ")");
    return true;
}

int regex_to_gbnf(const char *re, size_t len, const char *prefix, bool json_string,
                  grammar_strbuf *out, char *err, size_t errlen)
{
    rparser ps = {re, re, re + len, json_string, out, err, errlen, false, 0};
    bool anchored_start = false, anchored_end = false;
    if (ps.p < ps.end && *ps.p == '^') {
        anchored_start = true;
        ps.p++;
    }
    /* a final unescaped '$' */
    if (ps.end > ps.p && ps.end[-1] == '$') {
        size_t bs = 0;
        for (const char *q = ps.end - 2; q >= ps.p && *q == '\\'; q--)
            bs++;
        if (bs % 2 == 0) {
            anchored_end = true;
            ps.end--;
        }
    }
    gsb_printf(out, "%s ::= ", prefix);
    const char *any = json_string ? "[^\"\\\\\\x00-\\x1F]*" : "[^\\n]*";
    if (json_string && !anchored_start)
        gsb_printf(out, "%s ", any);
    if (!parse_alt(&ps))
        return -1;
    if (ps.p < ps.end)
        return rfail(&ps, *ps.p == ')' ? "unbalanced )" : "unexpected character"), -1;
    if (json_string && !anchored_end)
        gsb_printf(out, " %s", any);
    gsb_puts(out, "\n");
    if (out->oom) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

grammar *grammar_from_regex(const char *re, size_t len, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (!re) {
        snprintf(err, errlen, "no regex");
        return NULL;
    }
    grammar_strbuf sb = {0};
    if (regex_to_gbnf(re, len, "root", false, &sb, err, errlen) != 0) {
        free(sb.p);
        return NULL;
    }
    grammar *g = grammar_from_gbnf(sb.p, sb.n, "root", err, errlen);
    free(sb.p);
    return g;
}
