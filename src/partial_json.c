/* partial_json.c - parses the JSON value a model has begun writing, for streaming
 * snapshots of structured responses: whatever is open when the text ends is closed, so
 * each snapshot is a valid JSON value that grows toward the final one. */
#include "session.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PJ_MAX_DEPTH 512

typedef struct {
    const char *s;
    size_t n, i;
    bool eof;   /* the text ended inside the value being parsed */
    bool bad;   /* not JSON */
} pj;

static void skip_ws(pj *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the longest prefix of b[0..n) that does not end inside a UTF-8 sequence. */
static size_t utf8_complete(const char *b, size_t n)
{
    size_t k = n, back = 0;
    while (k > 0 && back < 4 && ((unsigned char)b[k - 1] & 0xC0) == 0x80) {
        k--;
        back++;
    }
    if (k == 0)
        return n;
    unsigned char lead = (unsigned char)b[k - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return need > back + 1 ? k - 1 : n;
}

/* Parses a string starting at the quote; returns a new json string (closed if cut). */
static json_t *parse_string(pj *p)
{
    p->i++; /* opening quote */
    char *buf = malloc(p->n - p->i + 4);
    if (!buf) {
        p->bad = true;
        return NULL;
    }
    size_t o = 0;
    bool closed = false;
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == '"') {
            p->i++;
            closed = true;
            break;
        }
        if ((unsigned char)c < 0x20) {
            p->bad = true;
            free(buf);
            return NULL;
        }
        if (c != '\\') {
            buf[o++] = c;
            p->i++;
            continue;
        }
        if (p->i + 1 >= p->n)
            break; /* a lone backslash at the end: drop it */
        char e = p->s[p->i + 1];
        const char *map = "\"\"\\\\//b\bf\fn\nr\rt\t";
        const char *m = NULL;
        for (const char *q = map; *q; q += 2)
            if (*q == e) {
                m = q;
                break;
            }
        if (m) {
            buf[o++] = m[1];
            p->i += 2;
            continue;
        }
        if (e != 'u') {
            p->bad = true;
            free(buf);
            return NULL;
        }
        if (p->i + 6 > p->n)
            break; /* unfinished \u escape */
        uint32_t cp = 0;
        for (int k = 0; k < 4; k++) {
            int h = hexval(p->s[p->i + 2 + k]);
            if (h < 0) {
                p->bad = true;
                free(buf);
                return NULL;
            }
            cp = cp * 16 + (uint32_t)h;
        }
        size_t adv = 6;
        if (cp >= 0xD800 && cp < 0xDC00) {
            if (p->i + 12 > p->n)
                break; /* the low surrogate has not arrived */
            uint32_t lo = 0;
            bool ok = p->s[p->i + 6] == '\\' && p->s[p->i + 7] == 'u';
            for (int k = 0; ok && k < 4; k++) {
                int h = hexval(p->s[p->i + 8 + k]);
                ok = h >= 0;
                lo = lo * 16 + (uint32_t)(h < 0 ? 0 : h);
            }
            if (!ok || lo < 0xDC00 || lo > 0xDFFF) {
                p->bad = true;
                free(buf);
                return NULL;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            adv = 12;
        } else if (cp >= 0xDC00 && cp < 0xE000) {
            p->bad = true;
            free(buf);
            return NULL;
        }
        o += put_utf8(buf + o, cp);
        p->i += adv;
    }
    if (!closed) {
        p->eof = true;
        o = utf8_complete(buf, o);
    }
    json_t *r = json_stringn_nocheck(buf, o);
    free(buf);
    if (!r)
        p->bad = true;
    return r;
}

/* A number; when cut, its longest valid prefix (NULL when there is none yet). */
static json_t *parse_number(pj *p)
{
    size_t st = p->i, i = p->i;
    const char *s = p->s;
    size_t valid = 0; /* end of the longest valid prefix */
    bool is_int = true;
    if (i < p->n && s[i] == '-')
        i++;
    if (i < p->n && s[i] == '0') {
        i++;
        valid = i;
    } else if (i < p->n && s[i] >= '1' && s[i] <= '9') {
        while (i < p->n && s[i] >= '0' && s[i] <= '9')
            i++;
        valid = i;
    } else if (i < p->n) {
        p->bad = true;
        return NULL;
    }
    if (valid && i < p->n && s[i] == '.') {
        i++;
        size_t d = i;
        while (i < p->n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i > d) {
            valid = i;
            is_int = false;
        } else if (i < p->n) {
            p->bad = true;
            return NULL;
        }
    }
    if (valid == i && i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < p->n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i > d) {
            valid = i;
            is_int = false;
        } else if (i < p->n) {
            p->bad = true;
            return NULL;
        }
    }
    p->i = i;
    if (i >= p->n)
        p->eof = true; /* more digits may follow */
    if (!valid)
        return NULL;
    char tmp[64];
    size_t len = valid - st;
    if (len >= sizeof tmp) {
        is_int = false;
        len = sizeof tmp - 1;
    }
    memcpy(tmp, s + st, len);
    tmp[len] = 0;
    if (is_int) {
        char *end;
        long long v = strtoll(tmp, &end, 10);
        if (*end == 0 && v != LLONG_MAX && v != LLONG_MIN)
            return json_integer((json_int_t)v);
    }
    return json_real(strtod(tmp, NULL));
}

static json_t *parse_value(pj *p, int depth);

static json_t *parse_container(pj *p, int depth, bool obj)
{
    p->i++;
    json_t *v = obj ? json_object() : json_array();
    if (!v) {
        p->bad = true;
        return NULL;
    }
    for (;;) {
        skip_ws(p);
        if (p->i >= p->n) {
            p->eof = true;
            return v;
        }
        if (p->s[p->i] == (obj ? '}' : ']')) {
            p->i++;
            return v;
        }
        if ((obj ? json_object_size(v) : json_array_size(v)) > 0) {
            if (p->s[p->i] != ',') {
                p->bad = true;
                break;
            }
            p->i++;
            skip_ws(p);
            if (p->i >= p->n) {
                p->eof = true;
                return v;
            }
        }
        json_t *key = NULL;
        if (obj) {
            if (p->s[p->i] != '"') {
                p->bad = true;
                break;
            }
            key = parse_string(p);
            if (!key || p->eof) { /* an unfinished key is left out */
                json_decref(key);
                if (p->bad)
                    break;
                return v;
            }
            skip_ws(p);
            if (p->i >= p->n) {
                p->eof = true;
                json_decref(key);
                return v;
            }
            if (p->s[p->i] != ':') {
                json_decref(key);
                p->bad = true;
                break;
            }
            p->i++;
            skip_ws(p);
            if (p->i >= p->n) {
                p->eof = true;
                json_decref(key);
                return v;
            }
        }
        json_t *item = parse_value(p, depth + 1);
        if (p->bad) {
            json_decref(key);
            json_decref(item);
            break;
        }
        if (item) {
            if (obj)
                json_object_setn_new_nocheck(v, json_string_value(key), json_string_length(key), item);
            else
                json_array_append_new(v, item);
        }
        json_decref(key);
        if (p->eof)
            return v;
    }
    json_decref(v);
    return NULL;
}

static json_t *parse_value(pj *p, int depth)
{
    if (depth > PJ_MAX_DEPTH) {
        p->bad = true;
        return NULL;
    }
    skip_ws(p);
    if (p->i >= p->n) {
        p->eof = true;
        return NULL;
    }
    char c = p->s[p->i];
    if (c == '{' || c == '[')
        return parse_container(p, depth, c == '{');
    if (c == '"')
        return parse_string(p);
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number(p);
    static const char *lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t L = strlen(lits[k]);
        size_t have = p->n - p->i < L ? p->n - p->i : L;
        if (memcmp(p->s + p->i, lits[k], have) == 0) {
            p->i += have;
            if (have < L) {
                p->eof = true; /* an unfinished literal is left out */
                return NULL;
            }
            return k == 0 ? json_true() : k == 1 ? json_false() : json_null();
        }
    }
    p->bad = true;
    return NULL;
}

json_t *partial_json_parse(const char *text, size_t len, bool *complete)
{
    if (complete)
        *complete = false;
    if (!text)
        return NULL;
    pj p = {.s = text, .n = len};
    json_t *v = parse_value(&p, 0);
    if (p.bad) {
        json_decref(v);
        return NULL;
    }
    if (v && !p.eof && complete) {
        skip_ws(&p);
        *complete = p.i == p.n;
    }
    return v;
}
