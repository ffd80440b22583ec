/* grammar.c - the grammar core: builder (rules over byte sets, UTF-8 code point classes
 * lowered to byte sequences), checks (undefined rules, left recursion), the pushdown
 * matcher with hash-consed stacks and interned states (so a position is one integer and
 * transitions are memoised), and token masks computed by walking a per-vocabulary trie. */
#include "grammar.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GE_END 0xFFFFFFFFu
#define GE_RULE 0x80000000u
#define IS_RULE(e) (((e) & GE_RULE) && (e) != GE_END)

static uint64_t hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return hash64(h ^ n);
}

/* SWAR popcount: the library is built for baseline x86-64, where __builtin_popcount is
 * a libgcc call. */
static inline int popcount32(uint32_t x)
{
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0Fu;
    return (int)((x * 0x01010101u) >> 24);
}

static inline void set_range(uint32_t *mask, const int32_t *sorted, uint32_t lo, uint32_t hi)
{
    for (uint32_t i = lo; i < hi; i++)
        mask[(uint32_t)sorted[i] >> 5] |= 1u << ((uint32_t)sorted[i] & 31);
}

static bool grow(void **p, size_t *cap, size_t need, size_t elsize)
{
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elsize)
            return false;
        nc *= 2;
    }
    void *q = realloc(*p, nc * elsize);
    if (!q)
        return false;
    *p = q;
    *cap = nc;
    return true;
}

/* ---- string buffers ---- */

void gsb_put(grammar_strbuf *s, const char *p, size_t n)
{
    if (s->oom)
        return;
    if (!grow((void **)&s->p, &s->cap, s->n + n + 1, 1)) {
        s->oom = true;
        return;
    }
    memcpy(s->p + s->n, p, n);
    s->n += n;
    s->p[s->n] = 0;
}

void gsb_puts(grammar_strbuf *s, const char *p)
{
    gsb_put(s, p, strlen(p));
}

void gsb_printf(grammar_strbuf *s, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        s->oom = true;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        gsb_put(s, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        s->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    gsb_put(s, big, (size_t)n);
    free(big);
}

/* ---- a small open-addressing map: nonzero 64-bit key -> uint32 ---- */

typedef struct {
    uint64_t *keys; /* 0 = empty */
    uint32_t *vals;
    size_t cap, n;  /* cap is a power of two */
} u64map;

static void u64map_free(u64map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static bool u64map_rehash(u64map *m, size_t ncap)
{
    uint64_t *nk = calloc(ncap, sizeof *nk);
    uint32_t *nv = malloc(ncap * sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = hash64(m->keys[i]) & (ncap - 1);
        while (nk[j])
            j = (j + 1) & (ncap - 1);
        nk[j] = m->keys[i];
        nv[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
    return true;
}

static uint32_t *u64map_get(const u64map *m, uint64_t key)
{
    if (!m->cap)
        return NULL;
    size_t j = hash64(key) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->keys[j] == key)
            return &m->vals[j];
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

static bool u64map_put(u64map *m, uint64_t key, uint32_t val)
{
    if ((m->n + 1) * 4 >= m->cap * 3 && !u64map_rehash(m, m->cap ? m->cap * 2 : 64))
        return false;
    size_t j = hash64(key) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->keys[j] == key) {
            m->vals[j] = val;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = key;
    m->vals[j] = val;
    m->n++;
    return true;
}

static void u64map_clear(u64map *m)
{
    if (m->cap)
        memset(m->keys, 0, m->cap * sizeof *m->keys);
    m->n = 0;
}

/* ---- builder ---- */

typedef struct {
    char *name;
    uint32_t first_alt; /* linked list of alternatives through alt.next, in order */
    uint32_t last_alt;
    uint32_t n_alts;
} brule;

typedef struct {
    uint32_t off, len, next;
} balt;

struct grammar_builder {
    brule *rules;
    size_t n_rules, cap_rules;
    balt *alts;
    size_t n_alts, cap_alts;
    grammar_elem *seq;
    size_t n_seq, cap_seq;
    uint8_t (*sets)[32];
    size_t n_sets, cap_sets;
    u64map name_map;   /* hash(name) -> rule (collisions resolved by the chain below) */
    uint32_t *name_next;
    u64map set_map;    /* hash(set) -> set index (chained through set_next) */
    uint32_t *set_next;
    size_t cap_set_next, cap_name_next;
    u64map cp_map;     /* hash(code point ranges) -> element; verified by cp_keys */
    char err[256];
    uint32_t anon_counter;
};

grammar_builder *gb_new(void)
{
    return calloc(1, sizeof(grammar_builder));
}

void gb_free(grammar_builder *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_rules; i++)
        free(b->rules[i].name);
    free(b->rules);
    free(b->alts);
    free(b->seq);
    free(b->sets);
    free(b->name_next);
    free(b->set_next);
    u64map_free(&b->name_map);
    u64map_free(&b->set_map);
    u64map_free(&b->cp_map);
    free(b);
}

const char *gb_error(const grammar_builder *b)
{
    return b->err;
}

static int32_t gb_fail(grammar_builder *b, const char *msg)
{
    if (!b->err[0])
        snprintf(b->err, sizeof b->err, "%s", msg);
    return -1;
}

static uint64_t nzkey(uint64_t h)
{
    return h ? h : 1;
}

int32_t gb_rule(grammar_builder *b, const char *name, size_t n)
{
    uint64_t key = nzkey(hash_bytes(name, n));
    uint32_t *head = u64map_get(&b->name_map, key);
    for (uint32_t r = head ? *head : UINT32_MAX; r != UINT32_MAX; r = b->name_next[r]) {
        if (strlen(b->rules[r].name) == n && memcmp(b->rules[r].name, name, n) == 0)
            return (int32_t)r;
    }
    if (b->n_rules >= GRAMMAR_MAX_RULES)
        return gb_fail(b, "too many rules");
    if (!grow((void **)&b->rules, &b->cap_rules, b->n_rules + 1, sizeof *b->rules) ||
        !grow((void **)&b->name_next, &b->cap_name_next, b->n_rules + 1, sizeof *b->name_next))
        return gb_fail(b, "out of memory");
    char *copy = malloc(n + 1);
    if (!copy)
        return gb_fail(b, "out of memory");
    memcpy(copy, name, n);
    copy[n] = 0;
    uint32_t r = (uint32_t)b->n_rules++;
    b->rules[r] = (brule){copy, UINT32_MAX, UINT32_MAX, 0};
    b->name_next[r] = head ? *head : UINT32_MAX;
    if (!u64map_put(&b->name_map, key, r))
        return gb_fail(b, "out of memory");
    return (int32_t)r;
}

int32_t gb_anon_rule(grammar_builder *b, const char *base)
{
    char name[160];
    for (;;) {
        snprintf(name, sizeof name, "%.120s-%u", base, ++b->anon_counter);
        size_t n = strlen(name);
        uint32_t *head = u64map_get(&b->name_map, nzkey(hash_bytes(name, n)));
        bool taken = false;
        for (uint32_t r = head ? *head : UINT32_MAX; r != UINT32_MAX; r = b->name_next[r])
            if (strcmp(b->rules[r].name, name) == 0)
                taken = true;
        if (!taken)
            return gb_rule(b, name, n);
    }
}

bool gb_rule_defined(const grammar_builder *b, int32_t rule)
{
    return rule >= 0 && (size_t)rule < b->n_rules && b->rules[rule].n_alts > 0;
}

grammar_elem gb_elem_rule(int32_t rule)
{
    return GE_RULE | (uint32_t)rule;
}

bool gb_add_alt(grammar_builder *b, int32_t rule, const grammar_elem *seq, size_t n)
{
    if (rule < 0 || (size_t)rule >= b->n_rules)
        return gb_fail(b, "bad rule"), false;
    if (b->n_seq + b->n_alts + n + 1 > GRAMMAR_MAX_ELEMS)
        return gb_fail(b, "grammar too large (element limit)"), false;
    if (!grow((void **)&b->alts, &b->cap_alts, b->n_alts + 1, sizeof *b->alts) ||
        !grow((void **)&b->seq, &b->cap_seq, b->n_seq + n + 1, sizeof *b->seq))
        return gb_fail(b, "out of memory"), false;
    uint32_t a = (uint32_t)b->n_alts++;
    b->alts[a] = (balt){(uint32_t)b->n_seq, (uint32_t)n, UINT32_MAX};
    if (n)
        memcpy(b->seq + b->n_seq, seq, n * sizeof *seq);
    b->n_seq += n;
    brule *r = &b->rules[rule];
    if (r->last_alt == UINT32_MAX)
        r->first_alt = a;
    else
        b->alts[r->last_alt].next = a;
    r->last_alt = a;
    r->n_alts++;
    return true;
}

grammar_elem gb_elem_bytes(grammar_builder *b, const uint8_t set[32])
{
    uint64_t key = nzkey(hash_bytes(set, 32));
    uint32_t *head = u64map_get(&b->set_map, key);
    for (uint32_t s = head ? *head : UINT32_MAX; s != UINT32_MAX; s = b->set_next[s])
        if (memcmp(b->sets[s], set, 32) == 0)
            return s;
    if (b->n_sets >= GE_RULE - 1)
        return gb_fail(b, "too many byte sets"), GE_END;
    if (!grow((void **)&b->sets, &b->cap_sets, b->n_sets + 1, 32) ||
        !grow((void **)&b->set_next, &b->cap_set_next, b->n_sets + 1, sizeof *b->set_next))
        return gb_fail(b, "out of memory"), GE_END;
    uint32_t s = (uint32_t)b->n_sets++;
    memcpy(b->sets[s], set, 32);
    b->set_next[s] = head ? *head : UINT32_MAX;
    if (!u64map_put(&b->set_map, key, s))
        return gb_fail(b, "out of memory"), GE_END;
    return s;
}

static grammar_elem byte_range(grammar_builder *b, unsigned lo, unsigned hi)
{
    uint8_t set[32] = {0};
    for (unsigned c = lo; c <= hi; c++)
        set[c >> 3] |= (uint8_t)(1u << (c & 7));
    return gb_elem_bytes(b, set);
}

typedef struct {
    uint32_t lo, hi;
} cprange;

static int cmp_cprange(const void *a, const void *b)
{
    const cprange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int utf8_len(uint32_t c)
{
    return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
}

static void utf8_enc(uint32_t c, uint8_t *o)
{
    switch (utf8_len(c)) {
    case 1: o[0] = (uint8_t)c; break;
    case 2: o[0] = (uint8_t)(0xC0 | (c >> 6)); o[1] = (uint8_t)(0x80 | (c & 0x3F)); break;
    case 3:
        o[0] = (uint8_t)(0xE0 | (c >> 12));
        o[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (c & 0x3F));
        break;
    default:
        o[0] = (uint8_t)(0xF0 | (c >> 18));
        o[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        o[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        o[3] = (uint8_t)(0x80 | (c & 0x3F));
    }
}

/* Lower a code point range with one encoded length into byte-range sequences (the
 * classic split: ranges whose trailing bytes cover the whole 80..BF span are merged). */
static bool cp_lower(grammar_builder *b, int32_t rule, uint32_t lo, uint32_t hi)
{
    int n = utf8_len(lo);
    if (n == 1) {
        grammar_elem e = byte_range(b, lo, hi);
        return e != GE_END && gb_add_alt(b, rule, &e, 1);
    }
    /* Split so that lo and hi differ only in trailing bytes that span a full block. */
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0)
                return cp_lower(b, rule, lo, lo | m) && cp_lower(b, rule, (lo | m) + 1, hi);
            if ((hi & m) != m)
                return cp_lower(b, rule, lo, (hi & ~m) - 1) && cp_lower(b, rule, hi & ~m, hi);
        }
    }
    uint8_t a[4], z[4];
    utf8_enc(lo, a);
    utf8_enc(hi, z);
    grammar_elem seq[4];
    for (int i = 0; i < n; i++) {
        seq[i] = byte_range(b, a[i], z[i]);
        if (seq[i] == GE_END)
            return false;
    }
    return gb_add_alt(b, rule, seq, (size_t)n);
}

grammar_elem gb_elem_codepoints(grammar_builder *b, const uint32_t *lo, const uint32_t *hi,
                                size_t n, bool negate)
{
    cprange *r = malloc((n + 4) * sizeof *r);
    cprange *out = malloc((n + 8) * 2 * sizeof *out);
    grammar_elem result = GE_END;
    if (!r || !out) {
        gb_fail(b, "out of memory");
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = lo[i], z = hi[i];
        if (a > z || a > 0x10FFFF)
            continue;
        if (z > 0x10FFFF)
            z = 0x10FFFF;
        r[k++] = (cprange){a, z};
    }
    qsort(r, k, sizeof *r, cmp_cprange);
    size_t m = 0; /* merged */
    for (size_t i = 0; i < k; i++) {
        if (m && r[i].lo <= r[m - 1].hi + 1) {
            if (r[i].hi > r[m - 1].hi)
                r[m - 1].hi = r[i].hi;
        } else {
            r[m++] = r[i];
        }
    }
    size_t no = 0;
    if (negate) {
        uint32_t next = 0;
        for (size_t i = 0; i < m; i++) {
            if (r[i].lo > next)
                out[no++] = (cprange){next, r[i].lo - 1};
            next = r[i].hi + 1;
        }
        if (next <= 0x10FFFF)
            out[no++] = (cprange){next, 0x10FFFF};
    } else {
        memcpy(out, r, m * sizeof *r);
        no = m;
    }
    /* Drop surrogates and split at encoded-length boundaries. */
    cprange *fin = malloc((no * 2 + 8) * 4 * sizeof *fin);
    if (!fin) {
        gb_fail(b, "out of memory");
        goto done;
    }
    size_t nf = 0;
    static const uint32_t bounds[] = {0x7F, 0x7FF, 0xD7FF, 0xDFFF, 0xFFFF, 0x10FFFF};
    for (size_t i = 0; i < no; i++) {
        uint32_t a = out[i].lo;
        for (size_t j = 0; j < 6 && a <= out[i].hi; j++) {
            if (a > bounds[j])
                continue;
            uint32_t z = out[i].hi < bounds[j] ? out[i].hi : bounds[j];
            if (bounds[j] != 0xDFFF)
                fin[nf++] = (cprange){a, z};
            a = z + 1;
        }
    }
    if (nf == 0) {
        gb_fail(b, "empty character class");
        free(fin);
        goto done;
    }
    if (fin[nf - 1].hi < 0x80) {
        uint8_t set[32] = {0};
        for (size_t i = 0; i < nf; i++)
            for (uint32_t c = fin[i].lo; c <= fin[i].hi; c++)
                set[c >> 3] |= (uint8_t)(1u << (c & 7));
        result = gb_elem_bytes(b, set);
        free(fin);
        goto done;
    }
    uint64_t key = nzkey(hash_bytes(fin, nf * sizeof *fin));
    uint32_t *have = u64map_get(&b->cp_map, key);
    if (have) { /* 64-bit hash of the exact range list: collisions are not a concern */
        result = *have;
        free(fin);
        goto done;
    }
    int32_t rule = gb_anon_rule(b, "char");
    if (rule < 0) {
        free(fin);
        goto done;
    }
    /* ASCII part as one byte set alternative. */
    size_t i = 0;
    uint8_t set[32] = {0};
    bool any = false;
    for (; i < nf && fin[i].hi < 0x80; i++) {
        for (uint32_t c = fin[i].lo; c <= fin[i].hi; c++)
            set[c >> 3] |= (uint8_t)(1u << (c & 7));
        any = true;
    }
    if (any) {
        grammar_elem e = gb_elem_bytes(b, set);
        if (e == GE_END || !gb_add_alt(b, rule, &e, 1)) {
            free(fin);
            goto done;
        }
    }
    for (; i < nf; i++) {
        if (!cp_lower(b, rule, fin[i].lo, fin[i].hi)) {
            free(fin);
            goto done;
        }
    }
    free(fin);
    result = gb_elem_rule(rule);
    if (!u64map_put(&b->cp_map, key, result)) {
        gb_fail(b, "out of memory");
        result = GE_END;
    }
done:
    free(r);
    free(out);
    return result;
}

/* ---- finished grammars ---- */

struct grammar {
    uint32_t *el;       /* elements; each alternative ends with GE_END */
    size_t n_el;
    uint32_t *alt_pos;  /* start of each alternative in el */
    uint32_t *rule_alt; /* alternatives of rule r: alt_pos[rule_alt[r] .. rule_alt[r+1]) */
    uint32_t n_rules;
    uint8_t (*sets)[32];
    uint32_t n_sets;
    uint32_t root;
    char **names;
    /* bytes no byte set tells apart form one class: transitions depend only on it */
    uint8_t bclass[256];
    uint8_t brep[256];   /* a representative byte of each class (its lowest) */
    uint16_t csize[256]; /* bytes in each class */
    uint32_t n_bclass;
    /* bit pos: pos starts an alternative of a char-complete rule (see char_complete) */
    uint8_t *charstart;
    /* The matcher pool new matchers join, so that state tables and masks carry over
     * between the outputs of one grammar. Internal mutable cache behind the immutable
     * interface, guarded by mu. */
    pthread_mutex_t mu;
    bool mu_ok;
    struct gpool *shared;
};

static void pool_free(struct gpool *p);

/* Partition the bytes by their membership in every byte set of the grammar. */
static void byte_classes(grammar *g)
{
    uint64_t h[256];
    for (int b = 0; b < 256; b++) {
        uint64_t x = 1469598103934665603ull;
        for (uint32_t i = 0; i < g->n_sets; i++) {
            x ^= (uint64_t)((g->sets[i][b >> 3] >> (b & 7)) & 1) + 2 * i;
            x *= 1099511628211ull;
        }
        h[b] = x;
    }
    g->n_bclass = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t c;
        for (c = 0; c < g->n_bclass; c++) {
            int r = g->brep[c];
            if (h[r] != h[b])
                continue;
            bool same = true;
            for (uint32_t i = 0; i < g->n_sets && same; i++)
                same = ((g->sets[i][b >> 3] >> (b & 7)) & 1) == ((g->sets[i][r >> 3] >> (r & 7)) & 1);
            if (same)
                break;
        }
        if (c == g->n_bclass) {
            g->csize[c] = 0;
            g->brep[g->n_bclass++] = (uint8_t)b;
        }
        g->bclass[b] = (uint8_t)c;
        g->csize[c]++;
    }
}

/* The forms of valid multi-byte UTF-8: lead byte range, second byte range, length. */
static const struct {
    uint8_t lead_lo, lead_hi, lo, hi, n;
} utf8_forms[] = {{0xC2, 0xDF, 0x80, 0xBF, 2}, {0xE0, 0xE0, 0xA0, 0xBF, 3},
                  {0xE1, 0xEC, 0x80, 0xBF, 3}, {0xED, 0xED, 0x80, 0x9F, 3},
                  {0xEE, 0xEF, 0x80, 0xBF, 3}, {0xF0, 0xF0, 0x90, 0xBF, 4},
                  {0xF1, 0xF3, 0x80, 0xBF, 4}, {0xF4, 0xF4, 0x80, 0x8F, 4}};

/* Bytes C2..F4 of a byte set: the lead bytes of valid multi-byte characters. */
static bool has_lead_byte(const uint8_t *set)
{
    return (set[24] & 0xFC) | set[25] | set[26] | set[27] | set[28] | set[29] | (set[30] & 0x1F);
}

static inline bool set_has(const uint8_t *set, uint8_t b)
{
    return (set[b >> 3] >> (b & 7)) & 1;
}

#define CHAR_ALTS_MAX 64

/* One byte of each byte class within lo..hi (no byte set tells the others apart). */
static int class_reps(const grammar *g, unsigned lo, unsigned hi, uint8_t *out)
{
    uint64_t seen[4] = {0};
    int n = 0;
    for (unsigned b = lo; b <= hi; b++) {
        unsigned c = g->bclass[b];
        if ((seen[c >> 6] >> (c & 63)) & 1)
            continue;
        seen[c >> 6] |= 1ull << (c & 63);
        out[n++] = (uint8_t)b;
    }
    return n;
}

/* Every valid continuation, from byte k of an n-byte character on, of a prefix matched by
 * the alternatives in live (bits over alts, all n byte sets long) is matched by one of
 * them. reps[k]: one byte per class of the range of byte k. */
static bool char_alts_cover(const grammar *g, const uint32_t *alts, uint64_t live, int k, int n,
                            uint8_t (*reps)[64], const int *nreps)
{
    if (k >= n || k >= 4)
        return live != 0;
    for (int i = 0; i < nreps[k]; i++) {
        uint8_t b = reps[k][i];
        uint64_t next = 0;
        for (uint64_t m = live; m; m &= m - 1) {
            int a = __builtin_ctzll(m);
            if (set_has(g->sets[g->el[alts[a] + (uint32_t)k]], b))
                next |= 1ull << a;
        }
        if (!next || !char_alts_cover(g, alts, next, k + 1, n, reps, nreps))
            return false;
    }
    return true;
}

/* A rule is char-complete when (1) each alternative whose first element is a byte set with
 * a lead byte (C2..F4) is a plain sequence of n byte sets, n = 2..4, whose lead bytes all
 * start n-byte characters, and (2) these alternatives together match every valid multi-byte
 * character. Then, from any parse position, every stack on the first element of one of its
 * alternatives either consumes a whole valid non-ASCII character and returns to its parent
 * frame, or dies on it, and each expansion of the rule (all its alternatives, one parent)
 * returns for every character: where every stack that can take a lead byte is of this kind,
 * all valid non-ASCII characters lead to one and the same state (see utf8_uniform). This
 * is how character classes are lowered (gb_elem_codepoints), e.g. a JSON string's
 * [^"\\\x00-\x1F]. Marks the alternatives' first positions in g->charstart. */
static bool char_complete_rules(grammar *g)
{
    g->charstart = calloc(g->n_el / 8 + 1, 1);
    if (!g->charstart)
        return false;
    uint32_t alts[CHAR_ALTS_MAX];
    uint8_t reps[4][64];
    int nreps[4];
    nreps[2] = class_reps(g, 0x80, 0xBF, reps[2]);
    memcpy(reps[3], reps[2], sizeof reps[3]);
    nreps[3] = nreps[2];
    for (uint32_t r = 0; r < g->n_rules; r++) {
        size_t na = 0;
        bool ok = true;
        for (uint32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1] && ok; a++) {
            uint32_t pos = g->alt_pos[a], e = g->el[pos];
            if (e == GE_END || (e & GE_RULE) || !has_lead_byte(g->sets[e]))
                continue;
            uint32_t n = 0;
            while (n < 5 && g->el[pos + n] != GE_END && !(g->el[pos + n] & GE_RULE))
                n++;
            unsigned lo = n == 2 ? 0xC2 : n == 3 ? 0xE0 : 0xF0, hi = n == 2 ? 0xDF : n == 3 ? 0xEF : 0xF4;
            ok = n >= 2 && n <= 4 && g->el[pos + n] == GE_END && na < CHAR_ALTS_MAX;
            for (unsigned b = 0xC2; b <= 0xF4 && ok; b++)
                ok = !set_has(g->sets[e], (uint8_t)b) || (b >= lo && b <= hi);
            if (ok)
                alts[na++] = pos;
        }
        if (!ok || na == 0)
            continue;
        for (size_t f = 0; f < sizeof utf8_forms / sizeof utf8_forms[0] && ok; f++) {
            uint8_t leads[64];
            int nl = class_reps(g, utf8_forms[f].lead_lo, utf8_forms[f].lead_hi, leads);
            nreps[1] = class_reps(g, utf8_forms[f].lo, utf8_forms[f].hi, reps[1]);
            for (int i = 0; i < nl && ok; i++) {
                uint64_t live = 0;
                for (size_t a = 0; a < na; a++)
                    if (set_has(g->sets[g->el[alts[a]]], leads[i]))
                        live |= 1ull << a;
                ok = live && char_alts_cover(g, alts, live, 1, utf8_forms[f].n, reps, nreps);
            }
        }
        if (!ok)
            continue;
        for (size_t i = 0; i < na; i++)
            g->charstart[alts[i] >> 3] |= (uint8_t)(1u << (alts[i] & 7));
    }
    return true;
}

void grammar_free(grammar *g)
{
    if (!g)
        return;
    if (g->shared)
        pool_free(g->shared);
    if (g->mu_ok)
        pthread_mutex_destroy(&g->mu);
    if (g->names)
        for (uint32_t i = 0; i < g->n_rules; i++)
            free(g->names[i]);
    free(g->names);
    free(g->el);
    free(g->alt_pos);
    free(g->rule_alt);
    free(g->sets);
    free(g->charstart);
    free(g);
}

int32_t grammar_n_rules(const grammar *g)
{
    return (int32_t)g->n_rules;
}

size_t grammar_n_elems(const grammar *g)
{
    return g->n_el;
}

grammar *gb_finish(grammar_builder *b, const char *root, char *err, size_t errlen)
{
    grammar *g = NULL;
    uint8_t *nullable = NULL, *color = NULL;
    uint32_t *stk = NULL, *iter = NULL, *ipos = NULL;
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (b->err[0]) {
        snprintf(err, errlen, "%s", b->err);
        goto fail;
    }
    if (!root)
        root = "root";
    size_t nr = b->n_rules;
    int32_t root_id = -1;
    for (size_t r = 0; r < nr; r++)
        if (strcmp(b->rules[r].name, root) == 0)
            root_id = (int32_t)r;
    if (root_id < 0 || b->rules[root_id].n_alts == 0) {
        snprintf(err, errlen, "grammar has no rule '%s'", root);
        goto fail;
    }
    for (size_t r = 0; r < nr; r++) {
        if (b->rules[r].n_alts == 0) {
            snprintf(err, errlen, "undefined rule '%s'", b->rules[r].name);
            goto fail;
        }
    }
    /* Nullable rules, to a fixpoint. */
    nullable = calloc(nr, 1);
    color = calloc(nr, 1);
    stk = malloc(nr * sizeof *stk);
    iter = malloc(nr * sizeof *iter);
    ipos = malloc(nr * sizeof *ipos);
    if (!nullable || !color || !stk || !iter || !ipos) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < nr; r++) {
            if (nullable[r])
                continue;
            for (uint32_t a = b->rules[r].first_alt; a != UINT32_MAX; a = b->alts[a].next) {
                bool all = true;
                for (uint32_t i = 0; i < b->alts[a].len && all; i++) {
                    grammar_elem e = b->seq[b->alts[a].off + i];
                    all = IS_RULE(e) && nullable[e & ~GE_RULE];
                }
                if (all) {
                    nullable[r] = 1;
                    changed = true;
                    break;
                }
            }
        }
    }
    /* Left recursion: a cycle in "r can start with s" (after a nullable prefix). Iterative
     * DFS; each rule on the stack keeps a cursor (alternative iter[r], position ipos[r]) so
     * that every left edge is looked at once. */
    for (size_t s0 = 0; s0 < nr; s0++) {
        if (color[s0])
            continue;
        size_t sp = 0;
        stk[sp++] = (uint32_t)s0;
        color[s0] = 1;
        iter[s0] = b->rules[s0].first_alt;
        ipos[s0] = 0;
        while (sp) {
            uint32_t r = stk[sp - 1];
            uint32_t target = UINT32_MAX;
            while (iter[r] != UINT32_MAX && target == UINT32_MAX) {
                const balt *al = &b->alts[iter[r]];
                if (ipos[r] < al->len) {
                    grammar_elem e = b->seq[al->off + ipos[r]];
                    if (IS_RULE(e)) {
                        target = e & ~GE_RULE;
                        ipos[r] = nullable[target] ? ipos[r] + 1 : al->len;
                        continue;
                    }
                }
                iter[r] = al->next;
                ipos[r] = 0;
            }
            if (target == UINT32_MAX) {
                color[r] = 2;
                sp--;
                continue;
            }
            if (color[target] == 1) {
                snprintf(err, errlen, "rule '%s' is left-recursive (through '%s')",
                         b->rules[target].name, b->rules[r].name);
                goto fail;
            }
            if (color[target] == 0) {
                color[target] = 1;
                iter[target] = b->rules[target].first_alt;
                ipos[target] = 0;
                stk[sp++] = target;
            }
        }
    }
    g = calloc(1, sizeof *g);
    if (!g)
        goto oom;
    g->n_rules = (uint32_t)nr;
    g->n_el = b->n_seq + b->n_alts + 1;
    g->el = malloc(g->n_el * sizeof *g->el);
    g->alt_pos = malloc((b->n_alts + 1) * sizeof *g->alt_pos);
    g->rule_alt = malloc((nr + 1) * sizeof *g->rule_alt);
    g->sets = malloc((b->n_sets + 1) * 32);
    g->names = calloc(nr, sizeof *g->names);
    if (!g->el || !g->alt_pos || !g->rule_alt || !g->sets || !g->names)
        goto oom;
    if (b->n_sets)
        memcpy(g->sets, b->sets, b->n_sets * 32);
    g->n_sets = (uint32_t)b->n_sets;
    size_t pos = 0, na = 0;
    for (size_t r = 0; r < nr; r++) {
        g->rule_alt[r] = (uint32_t)na;
        for (uint32_t a = b->rules[r].first_alt; a != UINT32_MAX; a = b->alts[a].next) {
            g->alt_pos[na++] = (uint32_t)pos;
            for (uint32_t i = 0; i < b->alts[a].len; i++)
                g->el[pos++] = b->seq[b->alts[a].off + i];
            g->el[pos++] = GE_END;
        }
        g->names[r] = b->rules[r].name;
        b->rules[r].name = NULL;
    }
    g->rule_alt[nr] = (uint32_t)na;
    g->el[pos++] = GE_END;
    g->n_el = pos;
    g->root = (uint32_t)root_id;
    byte_classes(g);
    if (!char_complete_rules(g))
        goto oom;
    if (pthread_mutex_init(&g->mu, NULL) != 0)
        goto oom;
    g->mu_ok = true;
    free(nullable);
    free(color);
    free(stk);
    free(iter);
    free(ipos);
    gb_free(b);
    return g;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    grammar_free(g);
    free(nullable);
    free(color);
    free(stk);
    free(iter);
    free(ipos);
    gb_free(b);
    return NULL;
}

/* ---- matcher pool: hash-consed stacks and interned states shared by clones ---- */

#define SUBSET_MIN_TOKENS 8
#define NOT_CLEAN 0xFFFFu
#define BIGMASK_MIN_TOKENS 2048
#define GRAMMAR_MAX_TOKEN_BYTES 1024 /* longer tokens are excluded from masks */
#define NODE_EMPTY 0u          /* the empty stack: the root has been matched */
#define ST_DEAD UINT32_MAX
#define MAX_STACKS_PER_STATE 4096
#define MAX_NODES (1u << 25)
#define MAX_STATES (1u << 23)
#define MAX_EXPAND_STEPS 200000
#define MASK_CACHE_BYTES (64u << 20)

typedef struct gpool {
    pthread_mutex_t mu;
    int refs;
    uint32_t start;         /* the start state */
    const grammar *g;
    /* stack nodes: (pos, parent) */
    uint32_t *npos, *npar;
    size_t n_nodes, cap_nodes;
    u64map node_map;
    /* states: sorted sets of node ids */
    uint32_t *sarena;
    size_t n_sarena, cap_sarena;
    uint32_t *soff, *slen, *sloop; /* sloop: index+1 into loops, 0 = not computed */
    uint32_t *sfree;               /* dominant-run length (see free_run), UINT32_MAX: unknown */
    uint8_t (*sallow)[32];
    uint8_t *sacc;
    uint64_t *shash;
    size_t n_states, cap_states;
    uint32_t *stab; /* open addressing over state ids */
    size_t stab_cap;
    uint8_t (*loops)[32];   /* dominant-successor byte sets (see dom_info) */
    uint32_t *loop_succ;    /* the dominant successor of each entry of loops */
    uint8_t *loop_na;       /* bit 0: every valid non-ASCII character leads to loop_succ too;
                               bit 1: decided by a char-complete rule (see utf8_uniform) */
    size_t cap_loop_na;
    uint32_t *sfree_c;      /* character-level run (see free_run_chars), UINT32_MAX: unknown */
    uint32_t *sfree_end;    /* the state where that run ends */
    size_t n_loops, cap_loops, cap_loop_succ;
    uint32_t *tt;           /* per-state transition tables: 256 entries each */
    uint32_t *stt;          /* table index + 1 per state; 0: none */
    size_t n_tt;
    uint32_t **tt_chunks;   /* tables in chunks of TT_CHUNK (never moved once written) */
    size_t n_tt_chunks;
    u64map trans;   /* (state << 8 | byte) + 1 -> next state (ST_DEAD) */
    u64map mcache;  /* (vocab serial << 32 | state) + 1 -> mask slot */
    uint32_t **mask_chunks; /* cached masks in chunks of MASK_CHUNK (never moved) */
    size_t n_mask_chunks;
    int32_t *mask_counts;   /* allowed tokens of each cached mask */
    size_t n_masks, cap_mask_counts, mask_words_cached;
    /* expansion scratch */
    uint64_t *work;
    size_t cap_work;
    uint32_t *out;
    size_t cap_out;
    uint64_t *vis_keys;
    uint32_t *vis_gen;
    size_t vis_cap;
    uint32_t gen;
    const char *error;
    grammar_stats stats;
} gpool;

struct grammar_matcher {
    gpool *p;
    uint32_t state;
    uint32_t start;
    bool terminated;
};

static void pool_free(struct gpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    int left = --p->refs;
    pthread_mutex_unlock(&p->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&p->mu);
    free(p->npos);
    free(p->npar);
    u64map_free(&p->node_map);
    free(p->sarena);
    free(p->soff);
    free(p->slen);
    free(p->sloop);
    free(p->sallow);
    free(p->sacc);
    free(p->shash);
    free(p->stab);
    free(p->loops);
    free(p->loop_succ);
    free(p->loop_na);
    free(p->sfree_c);
    free(p->sfree_end);
    for (size_t i = 0; i < p->n_tt_chunks; i++)
        free(p->tt_chunks[i]);
    free(p->tt_chunks);
    free(p->stt);
    free(p->sfree);
    u64map_free(&p->trans);
    u64map_free(&p->mcache);
    for (size_t i = 0; i < p->n_mask_chunks; i++)
        free(p->mask_chunks[i]);
    free(p->mask_chunks);
    free(p->mask_counts);
    free(p->work);
    free(p->out);
    free(p->vis_keys);
    free(p->vis_gen);
    free(p);
}

static uint32_t node_intern(gpool *p, uint32_t pos, uint32_t par)
{
    uint64_t key = ((uint64_t)pos << 32 | par) + 1;
    uint32_t *v = u64map_get(&p->node_map, key);
    if (v)
        return *v;
    if (p->n_nodes >= MAX_NODES) {
        p->error = "grammar matcher: too many parse stacks (node limit)";
        return UINT32_MAX;
    }
    if (p->n_nodes >= p->cap_nodes) {
        size_t nc = p->cap_nodes ? p->cap_nodes * 2 : 256;
        uint32_t *a = realloc(p->npos, nc * sizeof *a);
        if (!a)
            goto oom;
        p->npos = a;
        a = realloc(p->npar, nc * sizeof *a);
        if (!a)
            goto oom;
        p->npar = a;
        p->cap_nodes = nc;
    }
    uint32_t id = (uint32_t)p->n_nodes++;
    p->npos[id] = pos;
    p->npar[id] = par;
    if (!u64map_put(&p->node_map, key, id))
        goto oom;
    return id;
oom:
    p->error = "grammar matcher: out of memory";
    return UINT32_MAX;
}

static bool vis_test_set(gpool *p, uint64_t key)
{
    size_t j = hash64(key) & (p->vis_cap - 1);
    while (p->vis_gen[j] == p->gen) {
        if (p->vis_keys[j] == key)
            return true;
        j = (j + 1) & (p->vis_cap - 1);
    }
    p->vis_gen[j] = p->gen;
    p->vis_keys[j] = key;
    return false;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static bool states_grow(gpool *p)
{
    if (p->n_states < p->cap_states)
        return true;
    size_t nc = p->cap_states ? p->cap_states * 2 : 64;
    void *a = realloc(p->soff, nc * sizeof *p->soff);
    if (!a) return false;
    p->soff = a;
    a = realloc(p->slen, nc * sizeof *p->slen);
    if (!a) return false;
    p->slen = a;
    a = realloc(p->sloop, nc * sizeof *p->sloop);
    if (!a) return false;
    p->sloop = a;
    a = realloc(p->stt, nc * sizeof *p->stt);
    if (!a) return false;
    p->stt = a;
    a = realloc(p->sfree, nc * sizeof *p->sfree);
    if (!a) return false;
    p->sfree = a;
    a = realloc(p->sfree_c, nc * sizeof *p->sfree_c);
    if (!a) return false;
    p->sfree_c = a;
    a = realloc(p->sfree_end, nc * sizeof *p->sfree_end);
    if (!a) return false;
    p->sfree_end = a;
    a = realloc(p->sallow, nc * 32);
    if (!a) return false;
    p->sallow = a;
    a = realloc(p->sacc, nc);
    if (!a) return false;
    p->sacc = a;
    a = realloc(p->shash, nc * sizeof *p->shash);
    if (!a) return false;
    p->shash = a;
    p->cap_states = nc;
    return true;
}

static bool stab_insert(gpool *p, uint32_t id)
{
    size_t j = p->shash[id] & (p->stab_cap - 1);
    while (p->stab[j] != UINT32_MAX)
        j = (j + 1) & (p->stab_cap - 1);
    p->stab[j] = id;
    return true;
}

/* Intern the (sorted, unique) node set out[0..n). */
static uint32_t state_intern(gpool *p, const uint32_t *nodes, size_t n)
{
    uint64_t h = hash_bytes(nodes, n * sizeof *nodes);
    if (p->stab_cap) {
        size_t j = h & (p->stab_cap - 1);
        for (uint32_t s; (s = p->stab[j]) != UINT32_MAX; j = (j + 1) & (p->stab_cap - 1)) {
            if (p->shash[s] == h && p->slen[s] == n &&
                memcmp(p->sarena + p->soff[s], nodes, n * sizeof *nodes) == 0)
                return s;
        }
    }
    if (p->n_states >= MAX_STATES) {
        p->error = "grammar matcher: too many parser states";
        return ST_DEAD;
    }
    if ((p->n_states + 1) * 2 >= p->stab_cap) {
        size_t nc = p->stab_cap ? p->stab_cap * 2 : 256;
        uint32_t *t = malloc(nc * sizeof *t);
        if (!t)
            goto oom;
        memset(t, 0xFF, nc * sizeof *t);
        free(p->stab);
        p->stab = t;
        p->stab_cap = nc;
        for (size_t s = 0; s < p->n_states; s++)
            stab_insert(p, (uint32_t)s);
    }
    if (!states_grow(p) ||
        !grow((void **)&p->sarena, &p->cap_sarena, p->n_sarena + n + 1, sizeof *p->sarena))
        goto oom;
    uint32_t id = (uint32_t)p->n_states++;
    p->soff[id] = (uint32_t)p->n_sarena;
    p->slen[id] = (uint32_t)n;
    memcpy(p->sarena + p->n_sarena, nodes, n * sizeof *nodes);
    p->n_sarena += n;
    p->shash[id] = h;
    p->sloop[id] = 0;
    p->stt[id] = 0;
    p->sfree[id] = UINT32_MAX;
    p->sfree_c[id] = UINT32_MAX;
    p->sfree_end[id] = ST_DEAD;
    p->sacc[id] = n > 0 && nodes[0] == NODE_EMPTY;
    uint8_t *allow = p->sallow[id];
    memset(allow, 0, 32);
    const grammar *g = p->g;
    for (size_t i = 0; i < n; i++) {
        if (nodes[i] == NODE_EMPTY)
            continue;
        const uint8_t *set = g->sets[g->el[p->npos[nodes[i]]]];
        for (int k = 0; k < 32; k++)
            allow[k] |= set[k];
    }
    stab_insert(p, id);
    p->stats.n_states = (uint32_t)p->n_states;
    return id;
oom:
    p->error = "grammar matcher: out of memory";
    return ST_DEAD;
}

static bool work_push(gpool *p, size_t *nw, uint32_t pos, uint32_t rest)
{
    if (!grow((void **)&p->work, &p->cap_work, *nw + 1, sizeof *p->work)) {
        p->error = "grammar matcher: out of memory";
        return false;
    }
    p->work[(*nw)++] = (uint64_t)pos << 32 | rest;
    return true;
}

/* Close the pending work list into a state: follow rule references and returns until
 * every stack has a byte set on top (or is empty). */
static uint32_t expand(gpool *p, size_t nw)
{
    const grammar *g = p->g;
    size_t no = 0, steps = 0;
    if (++p->gen == 0) {
        memset(p->vis_gen, 0, p->vis_cap * sizeof *p->vis_gen);
        p->gen = 1;
    }
    size_t n_vis = 0;
    while (nw) {
        uint64_t w = p->work[--nw];
        uint32_t pos = (uint32_t)(w >> 32), rest = (uint32_t)w;
        if (++steps > MAX_EXPAND_STEPS) {
            p->error = "grammar matcher: expansion limit (grammar too ambiguous)";
            return ST_DEAD;
        }
        if ((n_vis + 1) * 2 >= p->vis_cap) {
            /* grow the visited set, keeping this generation's entries */
            size_t nc = p->vis_cap ? p->vis_cap * 4 : 1024;
            uint64_t *nk = malloc(nc * sizeof *nk);
            uint32_t *ng = calloc(nc, sizeof *ng);
            if (!nk || !ng) {
                free(nk);
                free(ng);
                p->error = "grammar matcher: out of memory";
                return ST_DEAD;
            }
            for (size_t i = 0; i < p->vis_cap; i++) {
                if (p->vis_gen[i] != p->gen)
                    continue;
                size_t j = hash64(p->vis_keys[i]) & (nc - 1);
                while (ng[j] == p->gen)
                    j = (j + 1) & (nc - 1);
                ng[j] = p->gen;
                nk[j] = p->vis_keys[i];
            }
            free(p->vis_keys);
            free(p->vis_gen);
            p->vis_keys = nk;
            p->vis_gen = ng;
            p->vis_cap = nc;
        }
        if (vis_test_set(p, w))
            continue;
        n_vis++;
        uint32_t e = g->el[pos];
        if (e == GE_END) {
            if (rest == NODE_EMPTY) {
                if (!grow((void **)&p->out, &p->cap_out, no + 1, sizeof *p->out))
                    goto oom;
                p->out[no++] = NODE_EMPTY;
            } else if (!work_push(p, &nw, p->npos[rest], p->npar[rest])) {
                return ST_DEAD;
            }
        } else if (e & GE_RULE) {
            uint32_t r = e & ~GE_RULE;
            uint32_t ret = rest;
            if (g->el[pos + 1] != GE_END) {
                ret = node_intern(p, pos + 1, rest);
                if (ret == UINT32_MAX)
                    return ST_DEAD;
            }
            for (uint32_t a = g->rule_alt[r + 1]; a-- > g->rule_alt[r];)
                if (!work_push(p, &nw, g->alt_pos[a], ret))
                    return ST_DEAD;
        } else {
            uint32_t id = node_intern(p, pos, rest);
            if (id == UINT32_MAX)
                return ST_DEAD;
            if (no >= MAX_STACKS_PER_STATE) {
                p->error = "grammar matcher: too many parse stacks (grammar too ambiguous)";
                return ST_DEAD;
            }
            if (!grow((void **)&p->out, &p->cap_out, no + 1, sizeof *p->out))
                goto oom;
            p->out[no++] = id;
        }
    }
    if (no == 0)
        return ST_DEAD;
    qsort(p->out, no, sizeof *p->out, cmp_u32);
    size_t u = 1;
    for (size_t i = 1; i < no; i++)
        if (p->out[i] != p->out[u - 1])
            p->out[u++] = p->out[i];
    return state_intern(p, p->out, u);
oom:
    p->error = "grammar matcher: out of memory";
    return ST_DEAD;
}

#define TT_UNKNOWN 0xFFFFFFFEu
#define TT_CHUNK 1024
#define MASK_CHUNK 32

static inline uint32_t *tt_row(gpool *p, uint32_t t)
{
    return p->tt_chunks[t / TT_CHUNK] + (size_t)(t % TT_CHUNK) * p->g->n_bclass;
}
#define MAX_TABLE_ENTRIES (4u << 20) /* 16 MiB of transition tables per matcher family */

static uint32_t advance_slow(gpool *p, uint32_t s, uint8_t byte)
{
    const grammar *g = p->g;
    size_t nw = 0;
    const uint32_t *nodes = p->sarena + p->soff[s];
    /* push in reverse so that the expansion order follows the node order */
    for (size_t i = p->slen[s]; i-- > 0;) {
        uint32_t n = nodes[i];
        if (n == NODE_EMPTY)
            continue;
        uint32_t pos = p->npos[n];
        const uint8_t *set = g->sets[g->el[pos]];
        if (set[byte >> 3] & (1u << (byte & 7)))
            if (!work_push(p, &nw, pos + 1, p->npar[n]))
                return ST_DEAD;
    }
    uint32_t next = expand(p, nw);
    return p->error ? ST_DEAD : next;
}

/* The state after byte from state s (ST_DEAD: rejected). Memoised in a per-state table
 * over byte classes (or, past MAX_TABLE_ENTRIES, a hash map). */
static uint32_t advance(gpool *p, uint32_t s, uint8_t byte)
{
    if (s == ST_DEAD || p->error)
        return ST_DEAD;
    if (!(p->sallow[s][byte >> 3] & (1u << (byte & 7))))
        return ST_DEAD;
    uint32_t t = p->stt[s];
    if (t) {
        uint32_t v = tt_row(p, t - 1)[p->g->bclass[byte]];
        if (v != TT_UNKNOWN)
            return v;
    } else if ((p->n_tt + 1) * p->g->n_bclass <= MAX_TABLE_ENTRIES) {
        bool ok = true;
        if (p->n_tt % TT_CHUNK == 0) {
            uint32_t **cq = realloc(p->tt_chunks, (p->n_tt_chunks + 1) * sizeof *cq);
            uint32_t *chunk = malloc((size_t)TT_CHUNK * p->g->n_bclass * sizeof *chunk);
            if (cq)
                p->tt_chunks = cq;
            if (cq && chunk)
                p->tt_chunks[p->n_tt_chunks++] = chunk;
            else {
                free(chunk);
                ok = false;
            }
        }
        if (ok) {
            t = p->stt[s] = (uint32_t)++p->n_tt;
            uint32_t *row = tt_row(p, t - 1);
            for (uint32_t i = 0; i < p->g->n_bclass; i++)
                row[i] = TT_UNKNOWN;
        }
    }
    byte = p->g->brep[p->g->bclass[byte]];
    uint64_t key = ((uint64_t)s << 8 | byte) + 1;
    if (!t) {
        uint32_t *v = u64map_get(&p->trans, key);
        if (v)
            return *v;
    }
    p->stats.expansions++;
    uint32_t next = advance_slow(p, s, byte);
    if (p->error)
        return ST_DEAD;
    if (t) {
        tt_row(p, t - 1)[p->g->bclass[byte]] = next;
    } else if (!u64map_put(&p->trans, key, next)) {
        p->error = "grammar matcher: out of memory";
        return ST_DEAD;
    }
    return next;
}

static gpool *pool_new(const grammar *g)
{
    gpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->refs = 1;
    p->g = g;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    /* id 0 is the empty stack; it is never looked up through the node map */
    p->npos = malloc(256 * sizeof *p->npos);
    p->npar = malloc(256 * sizeof *p->npar);
    if (!p->npos || !p->npar) {
        pool_free(p);
        return NULL;
    }
    p->cap_nodes = 256;
    p->npos[0] = p->npar[0] = UINT32_MAX;
    p->n_nodes = 1;
    return p;
}

static uint32_t start_state(gpool *p)
{
    const grammar *g = p->g;
    size_t nw = 0;
    for (uint32_t a = g->rule_alt[g->root + 1]; a-- > g->rule_alt[g->root];)
        if (!work_push(p, &nw, g->alt_pos[a], NODE_EMPTY))
            return ST_DEAD;
    return expand(p, nw);
}

/* A grammar's shared pool is replaced by a fresh one (for new matchers) once it holds
 * this many states, which bounds its growth in long-running servers. */
#define SHARED_POOL_MAX_STATES (1u << 20)

grammar_matcher *grammar_matcher_new(const grammar *cg)
{
    if (!cg)
        return NULL;
    grammar *g = (grammar *)cg; /* only the guarded pool cache is written */
    grammar_matcher *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_lock(&g->mu);
    gpool *p = g->shared;
    bool fresh = !p;
    if (p) {
        pthread_mutex_lock(&p->mu);
        fresh = p->n_states >= SHARED_POOL_MAX_STATES || p->error;
        pthread_mutex_unlock(&p->mu);
    }
    if (fresh) {
        gpool *np = pool_new(g);
        uint32_t start = np ? start_state(np) : ST_DEAD;
        if (start == ST_DEAD) {
            pool_free(np);
            pthread_mutex_unlock(&g->mu);
            free(m);
            return NULL;
        }
        np->start = start;
        if (g->shared)
            pool_free(g->shared);
        g->shared = np; /* the grammar holds the pool's first reference */
    }
    p = g->shared;
    pthread_mutex_lock(&p->mu);
    p->refs++;
    m->start = p->start;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&g->mu);
    m->p = p;
    m->state = m->start;
    return m;
}

/* Every entry point that reads or grows the shared pool holds its mutex, so clones may
 * be used from different threads (each clone by one thread at a time). */
#define LOCK(p) pthread_mutex_lock(&(p)->mu)
#define UNLOCK(p) pthread_mutex_unlock(&(p)->mu)

grammar_matcher *grammar_matcher_clone(const grammar_matcher *m)
{
    grammar_matcher *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    *c = *m;
    LOCK(c->p);
    c->p->refs++;
    UNLOCK(c->p);
    return c;
}

void grammar_matcher_free(grammar_matcher *m)
{
    if (!m)
        return;
    pool_free(m->p);
    free(m);
}

void grammar_matcher_reset(grammar_matcher *m)
{
    m->state = m->start;
    m->terminated = false;
}

grammar_snapshot grammar_matcher_snapshot(const grammar_matcher *m)
{
    return (uint64_t)m->state | (uint64_t)m->terminated << 32;
}

void grammar_matcher_restore(grammar_matcher *m, grammar_snapshot s)
{
    uint32_t st = (uint32_t)s;
    LOCK(m->p);
    bool ok = st < m->p->n_states;
    UNLOCK(m->p);
    if (!ok)
        return;
    m->state = st;
    m->terminated = (s >> 32) & 1;
}

const char *grammar_matcher_error(const grammar_matcher *m)
{
    LOCK(m->p);
    const char *e = m->p->error;
    UNLOCK(m->p);
    return e;
}

static bool accept_bytes_nl(grammar_matcher *m, const uint8_t *s, size_t n)
{
    if (m->terminated)
        return false;
    uint32_t st = m->state;
    for (size_t i = 0; i < n; i++) {
        st = advance(m->p, st, s[i]);
        if (st == ST_DEAD)
            return false;
    }
    m->state = st;
    return true;
}

bool grammar_matcher_accept_byte(grammar_matcher *m, uint8_t b)
{
    LOCK(m->p);
    bool ok = accept_bytes_nl(m, &b, 1);
    UNLOCK(m->p);
    return ok;
}

bool grammar_matcher_accept_bytes(grammar_matcher *m, const void *bytes, size_t n)
{
    LOCK(m->p);
    bool ok = accept_bytes_nl(m, bytes, n);
    UNLOCK(m->p);
    return ok;
}

bool grammar_matcher_can_accept(grammar_matcher *m, uint8_t b)
{
    LOCK(m->p);
    bool ok = !m->terminated && !m->p->error && (m->p->sallow[m->state][b >> 3] & (1u << (b & 7)));
    UNLOCK(m->p);
    return ok;
}

void grammar_matcher_allowed_bytes(grammar_matcher *m, uint8_t out[32])
{
    LOCK(m->p);
    if (m->terminated || m->p->error)
        memset(out, 0, 32);
    else
        memcpy(out, m->p->sallow[m->state], 32);
    UNLOCK(m->p);
}

/* Complete = the text so far is a whole sentence. After a matcher error (a resource limit)
 * nothing is allowed, EOS included: the mask is empty too, and the caller reports it. */
static bool complete_nl(const grammar_matcher *m)
{
    return !m->terminated && !m->p->error && m->p->sacc[m->state];
}

bool grammar_matcher_is_complete(const grammar_matcher *m)
{
    LOCK(m->p);
    bool ok = complete_nl(m);
    UNLOCK(m->p);
    return ok;
}

bool grammar_matcher_is_terminated(const grammar_matcher *m)
{
    return m->terminated;
}

size_t grammar_matcher_forced_bytes(grammar_matcher *m, uint8_t *buf, size_t cap)
{
    if (m->terminated)
        return 0;
    gpool *p = m->p;
    LOCK(p);
    uint32_t s = m->state;
    size_t n = 0;
    while (n < cap && s != ST_DEAD && !p->sacc[s]) {
        int cnt = 0, only = -1;
        for (int k = 0; k < 32; k++) {
            uint8_t v = p->sallow[s][k];
            if (!v)
                continue;
            cnt += popcount32(v);
            only = k * 8 + __builtin_ctz(v);
        }
        if (cnt != 1)
            break;
        buf[n++] = (uint8_t)only;
        s = advance(p, s, (uint8_t)only);
    }
    UNLOCK(p);
    return n;
}

void grammar_matcher_stats(const grammar_matcher *m, grammar_stats *out)
{
    LOCK(m->p);
    *out = m->p->stats;
    out->n_stack_nodes = (uint32_t)m->p->n_nodes;
    out->n_states = (uint32_t)m->p->n_states;
    UNLOCK(m->p);
}

static bool utf8_uniform_all(gpool *p, uint32_t s, uint32_t target);

bool grammar_matcher_check_chars(grammar_matcher *m, uint32_t *n_checked)
{
    gpool *p = m->p;
    LOCK(p);
    bool ok = true;
    uint32_t n = 0;
    /* the full test interns states of its own: loop over the states analysed before it */
    size_t n_states = p->n_states;
    for (size_t s = 0; s < n_states && ok && !p->error; s++) {
        if (!p->sloop[s])
            continue;
        uint32_t l = p->sloop[s] - 1;
        if (!(p->loop_na[l] & 2))
            continue;
        uint32_t succ = p->loop_succ[l];
        bool all = succ != ST_DEAD && utf8_uniform_all(p, (uint32_t)s, succ);
        ok = all == (p->loop_na[l] & 1);
        n++;
    }
    ok = ok && !p->error;
    UNLOCK(p);
    if (n_checked)
        *n_checked = n;
    return ok;
}


/* ---- vocabulary tries ---- */

typedef struct {
    uint32_t lo, ehi, hi;  /* tokens (sorted order) in the subtree; [lo, ehi) end here */
    uint32_t child;        /* first child node; children are contiguous */
    uint32_t sub;          /* index+1 into subtree byte sets (0: none, small subtree) */
    uint32_t big;          /* index+1 into bigmasks (0: none) */
    uint32_t bylen;        /* offset into bylen (clean nodes; hi - ehi entries) */
    uint16_t n_child;
    uint16_t maxdep;       /* longest token in the subtree minus this node's depth */
    uint16_t maxchars;     /* the same in UTF-8 characters when every token continues with
                              valid UTF-8 from here (a last character may be cut short);
                              NOT_CLEAN otherwise */
    uint8_t byte;
    uint8_t need;          /* continuation bytes still missing from the character the node's
                              prefix ends inside (0: at a character boundary) */
    uint8_t need_lo, need_hi; /* allowed range of the first missing byte */
} tnode;

struct grammar_vocab {
    int32_t n_tokens;
    uint32_t serial;
    char **bytes;
    uint32_t *len;
    uint8_t *is_eog;
    int32_t *eog;
    int32_t n_eog;
    int32_t *sorted;       /* token ids in lexicographic order of their bytes */
    uint32_t n_sorted;
    tnode *nodes;
    size_t n_nodes, cap_nodes;
    uint8_t (*subsets)[32];
    size_t n_subsets, cap_subsets;
    uint32_t *bigmasks;    /* token masks of the subtrees of BIGMASK_MIN_TOKENS or more */
    size_t n_bigmasks;
    /* for clean nodes (see tnode.maxchars): the subtree's tokens ordered by their number
     * of characters below the node, as (id, chars) pairs */
    uint32_t (*bylen)[2];
    size_t n_bylen, cap_bylen;
    /* restricted-alphabet indexes (see dindex), built on demand: the only mutable part of
     * a vocabulary, guarded by dmu; an index never changes once published */
    pthread_mutex_t dmu;
    bool dmu_ok;
    struct dindex **dix;   /* open addressing over (node, byte set) */
    size_t dix_cap, dix_n, dix_bytes;
};


static atomic_uint vocab_serial = 1;

typedef struct {
    const char *p;
    uint32_t len;
    int32_t id;
} tokref;

static int cmp_tok(const void *a, const void *b)
{
    const tokref *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Number of UTF-8 characters in s[0..n) when it is valid UTF-8 (no surrogates or
 * overlong forms; the last character may be incomplete), else NOT_CLEAN. */
static uint32_t utf8_chars(const uint8_t *s, uint32_t n)
{
    uint32_t i = 0, chars = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint32_t len;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80)
            len = 1;
        else if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else
            return NOT_CLEAN;
        for (uint32_t k = 1; k < len && i + k < n; k++) {
            uint8_t d = s[i + k];
            if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF))
                return NOT_CLEAN;
        }
        i += len;
        chars++;
    }
    return chars >= NOT_CLEAN ? NOT_CLEAN : chars;
}

/* The prefix p[0..d) ends inside a UTF-8 character: how many continuation bytes are
 * missing, and the allowed range of the next one. need = 0 otherwise. */
static void char_in_progress(const uint8_t *p, uint32_t d, uint8_t *need, uint8_t *lo,
                             uint8_t *hi)
{
    *need = 0;
    *lo = 0x80;
    *hi = 0xBF;
    for (uint32_t back = 1; back <= 3 && back <= d; back++) {
        uint8_t c = p[d - back];
        if (c >= 0x80 && c <= 0xBF)
            continue; /* a continuation byte: look further back */
        uint32_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                     : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (len > back) {
            *need = (uint8_t)(len - back);
            if (back == 1) {
                if (c == 0xE0)
                    *lo = 0xA0;
                else if (c == 0xED)
                    *hi = 0x9F;
                else if (c == 0xF0)
                    *lo = 0x90;
                else if (c == 0xF4)
                    *hi = 0x8F;
            }
        }
        return;
    }
}

/* Characters in s[0..n) that first completes a character missing `need` continuation
 * bytes (the first in lo..hi) and then is valid UTF-8 (see utf8_chars); the completed
 * character counts as one. NOT_CLEAN when invalid. */
static uint32_t rest_chars(const uint8_t *s, uint32_t n, uint8_t need, uint8_t lo, uint8_t hi)
{
    if (need == 0)
        return utf8_chars(s, n);
    uint32_t k = 0;
    for (; k < need && k < n; k++) {
        uint8_t c = s[k];
        if (k == 0 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF))
            return NOT_CLEAN;
    }
    uint32_t rest = utf8_chars(s + k, n - k);
    return rest == NOT_CLEAN || rest + 1 >= NOT_CLEAN ? NOT_CLEAN : rest + 1;
}

static int cmp_bylen(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* Build the subtree of node idx covering sorted[lo, hi) at the given depth. The recursion
 * depth is bounded by GRAMMAR_MAX_TOKEN_BYTES. */
static bool trie_build(grammar_vocab *v, size_t idx, uint32_t lo, uint32_t hi, uint32_t depth)
{
    uint32_t e = lo;
    while (e < hi && v->len[v->sorted[e]] == depth)
        e++;
    v->nodes[idx].lo = lo;
    v->nodes[idx].ehi = e;
    v->nodes[idx].hi = hi;
    /* count children */
    uint32_t nch = 0;
    for (uint32_t i = e; i < hi;) {
        uint8_t c = (uint8_t)v->bytes[v->sorted[i]][depth];
        nch++;
        while (i < hi && (uint8_t)v->bytes[v->sorted[i]][depth] == c)
            i++;
    }
    size_t first = v->n_nodes;
    if (nch) {
        if (!grow((void **)&v->nodes, &v->cap_nodes, v->n_nodes + nch, sizeof *v->nodes))
            return false;
        v->n_nodes += nch;
    }
    v->nodes[idx].child = (uint32_t)first;
    v->nodes[idx].n_child = (uint16_t)nch;
    v->nodes[idx].sub = 0;
    uint32_t maxlen = depth;
    for (uint32_t i = e; i < hi; i++)
        if (v->len[v->sorted[i]] > maxlen)
            maxlen = v->len[v->sorted[i]];
    v->nodes[idx].maxdep = (uint16_t)(maxlen - depth);
    if (hi - e >= SUBSET_MIN_TOKENS) {
        if (!grow((void **)&v->subsets, &v->cap_subsets, v->n_subsets + 1, 32))
            return false;
        uint8_t *set = v->subsets[v->n_subsets];
        memset(set, 0, 32);
        for (uint32_t i = e; i < hi; i++) {
            const uint8_t *s = (const uint8_t *)v->bytes[v->sorted[i]];
            for (uint32_t k = depth; k < v->len[v->sorted[i]]; k++)
                set[s[k] >> 3] |= (uint8_t)(1u << (s[k] & 7));
        }
        v->nodes[idx].sub = (uint32_t)++v->n_subsets;
        uint8_t need, nlo, nhi;
        char_in_progress((const uint8_t *)v->bytes[v->sorted[lo]], depth, &need, &nlo, &nhi);
        v->nodes[idx].need = need;
        v->nodes[idx].need_lo = nlo;
        v->nodes[idx].need_hi = nhi;
        uint32_t maxc = 0;
        for (uint32_t i = e; i < hi && maxc != NOT_CLEAN; i++) {
            uint32_t c = rest_chars((const uint8_t *)v->bytes[v->sorted[i]] + depth,
                                    v->len[v->sorted[i]] - depth, need, nlo, nhi);
            maxc = c > maxc ? c : maxc;
        }
        v->nodes[idx].maxchars = (uint16_t)maxc;
        if (maxc != NOT_CLEAN) {
            size_t cnt = hi - e;
            if (!grow((void **)&v->bylen, &v->cap_bylen, v->n_bylen + cnt, sizeof *v->bylen))
                return false;
            uint32_t (*bl)[2] = v->bylen + v->n_bylen;
            for (uint32_t i = e; i < hi; i++) {
                bl[i - e][0] = (uint32_t)v->sorted[i];
                bl[i - e][1] = rest_chars((const uint8_t *)v->bytes[v->sorted[i]] + depth,
                                          v->len[v->sorted[i]] - depth, need, nlo, nhi);
            }
            qsort(bl, cnt, sizeof *bl, cmp_bylen);
            v->nodes[idx].bylen = (uint32_t)v->n_bylen;
            v->n_bylen += cnt;
        }
    } else {
        v->nodes[idx].maxchars = NOT_CLEAN;
    }
    uint32_t k = 0;
    for (uint32_t i = e; i < hi; k++) {
        uint8_t c = (uint8_t)v->bytes[v->sorted[i]][depth];
        uint32_t j = i;
        while (j < hi && (uint8_t)v->bytes[v->sorted[j]][depth] == c)
            j++;
        v->nodes[first + k].byte = c;
        if (!trie_build(v, first + k, i, j, depth + 1))
            return false;
        i = j;
    }
    return true;
}

static void dindex_free(struct dindex *d);

void grammar_vocab_free(grammar_vocab *v)
{
    if (!v)
        return;
    if (v->bytes)
        for (int32_t i = 0; i < v->n_tokens; i++)
            free(v->bytes[i]);
    free(v->bytes);
    free(v->len);
    free(v->is_eog);
    free(v->eog);
    free(v->sorted);
    free(v->nodes);
    free(v->subsets);
    free(v->bigmasks);
    free(v->bylen);
    for (size_t i = 0; i < v->dix_cap; i++)
        dindex_free(v->dix[i]);
    free(v->dix);
    if (v->dmu_ok)
        pthread_mutex_destroy(&v->dmu);
    free(v);
}

grammar_vocab *grammar_vocab_new(int32_t n_tokens, const char *const *tok_bytes,
                                 const uint32_t *tok_len, const int32_t *eog, int32_t n_eog)
{
    if (n_tokens <= 0 || !tok_bytes || !tok_len || n_eog < 0 || (n_eog && !eog))
        return NULL;
    grammar_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->n_tokens = n_tokens;
    v->serial = atomic_fetch_add(&vocab_serial, 1);
    if (pthread_mutex_init(&v->dmu, NULL) != 0) {
        free(v);
        return NULL;
    }
    v->dmu_ok = true;
    v->bytes = calloc((size_t)n_tokens, sizeof *v->bytes);
    v->len = calloc((size_t)n_tokens, sizeof *v->len);
    v->is_eog = calloc((size_t)n_tokens, 1);
    v->sorted = malloc((size_t)n_tokens * sizeof *v->sorted);
    v->eog = malloc(((size_t)n_eog + 1) * sizeof *v->eog);
    if (!v->bytes || !v->len || !v->is_eog || !v->sorted || !v->eog)
        goto fail;
    for (int32_t i = 0; i < n_eog; i++) {
        if (eog[i] < 0 || eog[i] >= n_tokens)
            goto fail;
        if (!v->is_eog[eog[i]])
            v->eog[v->n_eog++] = eog[i];
        v->is_eog[eog[i]] = 1;
    }
    for (int32_t i = 0; i < n_tokens; i++) {
        if (v->is_eog[i] || !tok_bytes[i] || tok_len[i] == 0 || tok_len[i] > GRAMMAR_MAX_TOKEN_BYTES)
            continue;
        v->bytes[i] = malloc(tok_len[i]);
        if (!v->bytes[i])
            goto fail;
        memcpy(v->bytes[i], tok_bytes[i], tok_len[i]);
        v->len[i] = tok_len[i];
        v->sorted[v->n_sorted++] = i;
    }
    tokref *refs = malloc(((size_t)v->n_sorted + 1) * sizeof *refs);
    if (!refs)
        goto fail;
    for (uint32_t i = 0; i < v->n_sorted; i++)
        refs[i] = (tokref){v->bytes[v->sorted[i]], v->len[v->sorted[i]], v->sorted[i]};
    qsort(refs, v->n_sorted, sizeof *refs, cmp_tok);
    for (uint32_t i = 0; i < v->n_sorted; i++)
        v->sorted[i] = refs[i].id;
    free(refs);
    if (!grow((void **)&v->nodes, &v->cap_nodes, 1, sizeof *v->nodes))
        goto fail;
    v->n_nodes = 1;
    memset(v->nodes, 0, sizeof *v->nodes);
    if (!trie_build(v, 0, 0, v->n_sorted, 0))
        goto fail;
    /* Whole-subtree masks for big subtrees: setting 50K scattered bits one by one costs
     * more than OR-ing a precomputed mask. */
    size_t words = grammar_vocab_mask_words(v);
    for (size_t i = 0; i < v->n_nodes; i++) {
        tnode *nd = &v->nodes[i];
        nd->big = 0;
        if (nd->hi - nd->ehi < BIGMASK_MIN_TOKENS)
            continue;
        uint32_t *q = realloc(v->bigmasks, (v->n_bigmasks + 1) * words * sizeof *q);
        if (!q)
            goto fail;
        v->bigmasks = q;
        q += v->n_bigmasks * words;
        memset(q, 0, words * sizeof *q);
        set_range(q, v->sorted, nd->ehi, nd->hi);
        nd->big = (uint32_t)++v->n_bigmasks;
    }
    return v;
fail:
    grammar_vocab_free(v);
    return NULL;
}

int32_t grammar_vocab_n_tokens(const grammar_vocab *v)
{
    return v->n_tokens;
}

size_t grammar_vocab_mask_words(const grammar_vocab *v)
{
    return ((size_t)v->n_tokens + 31) / 32;
}

size_t grammar_vocab_trie_nodes(const grammar_vocab *v)
{
    return v->n_nodes;
}

const char *grammar_vocab_token(const grammar_vocab *v, int32_t id, uint32_t *len)
{
    if (id < 0 || id >= v->n_tokens) {
        *len = 0;
        return NULL;
    }
    *len = v->len[id];
    return v->bytes[id];
}

/* The rest of a multi-byte character from s (left bytes, the first in lo..hi) always
 * ends in target. Continuation bytes are tried once per byte class. */
static bool utf8_step(gpool *p, uint32_t s, uint32_t left, uint8_t lo, uint8_t hi,
                      uint32_t target)
{
    if (left == 0)
        return s == target;
    const grammar *g = p->g;
    uint8_t seen[256] = {0};
    for (unsigned b = lo; b <= hi; b++) {
        uint8_t c = g->bclass[b];
        if (seen[c])
            continue;
        seen[c] = 1;
        uint32_t t = advance(p, s, (uint8_t)b);
        if (t == ST_DEAD || !utf8_step(p, t, left - 1, 0x80, 0xBF, target))
            return false;
    }
    return true;
}

/* Every valid multi-byte UTF-8 character leads from s to target, by trying every character
 * form, once per byte class of each byte: some 45 transitions through states of their own
 * inside a JSON string. */
static bool utf8_uniform_all(gpool *p, uint32_t s, uint32_t target)
{
    const grammar *g = p->g;
    for (size_t f = 0; f < sizeof utf8_forms / sizeof utf8_forms[0]; f++) {
        uint8_t seen[256] = {0};
        for (unsigned b = utf8_forms[f].lead_lo; b <= utf8_forms[f].lead_hi; b++) {
            if (seen[g->bclass[b]])
                continue;
            seen[g->bclass[b]] = 1;
            uint32_t t = advance(p, s, (uint8_t)b);
            /* the second byte has the form's own range, later ones 80..BF */
            if (t == ST_DEAD ||
                !utf8_step(p, t, utf8_forms[f].n - 1u, utf8_forms[f].lo, utf8_forms[f].hi, target))
                return false;
        }
    }
    return !p->error;
}

/* Every valid multi-byte UTF-8 character leads from s to target (*shortcut: decided by
 * the rule below).
 *
 * When every stack of s that can take a lead byte (C2..F4) sits on the first element of
 * an alternative of a char-complete rule (char_complete_rules: a lowered character class
 * that contains every non-ASCII character, such as a JSON string's), all valid non-ASCII
 * characters provably lead to one state, so one character (U+0080) decides: two
 * transitions. Otherwise utf8_uniform_all tries them all (~45 transitions), which is what
 * made the first mask of a maxLength string (40 positions analysed at once) cost ~1 ms. */
static bool utf8_uniform(gpool *p, uint32_t s, uint32_t target, bool *shortcut)
{
    const grammar *g = p->g;
    bool fast = true;
    const uint32_t *nodes = p->sarena + p->soff[s];
    for (uint32_t i = 0; i < p->slen[s] && fast; i++) {
        uint32_t n = nodes[i];
        if (n == NODE_EMPTY)
            continue;
        uint32_t pos = p->npos[n];
        fast = !has_lead_byte(g->sets[g->el[pos]]) || ((g->charstart[pos >> 3] >> (pos & 7)) & 1);
    }
    *shortcut = fast;
    if (fast) {
        p->stats.chars_shortcut++;
        uint32_t t = advance(p, advance(p, s, 0xC2), 0x80);
        return t != ST_DEAD && t == target && !p->error;
    }
    p->stats.chars_full++;
    return utf8_uniform_all(p, s, target);
}

/* The successors of s on every byte class (cx[class]). Bytes taken by the same stacks of
 * s lead to the same state, so each distinct set of stacks is expanded once and the other
 * classes' table entries are filled from it: inside a records title the ~50 classes of
 * the schema's grammar fall into 11 such sets (one per stack). */
static void advance_classes(gpool *p, uint32_t s, uint32_t *cx)
{
    const grammar *g = p->g;
    uint32_t n = p->slen[s];
    if (n > 64) {
        for (uint32_t c = 0; c < g->n_bclass; c++)
            cx[c] = advance(p, s, g->brep[c]);
        return;
    }
    uint64_t sig[256] = {0};
    const uint32_t *nodes = p->sarena + p->soff[s];
    for (uint32_t i = 0; i < n; i++) {
        if (nodes[i] == NODE_EMPTY)
            continue;
        const uint8_t *set = g->sets[g->el[p->npos[nodes[i]]]];
        for (uint32_t c = 0; c < g->n_bclass; c++)
            sig[c] |= (uint64_t)set_has(set, g->brep[c]) << i;
    }
    /* nodes may move once advance interns states: only sig is used from here on */
    uint64_t usig[256];
    uint32_t ucx[256], nu = 0;
    for (uint32_t c = 0; c < g->n_bclass; c++) {
        if (!sig[c]) {
            cx[c] = ST_DEAD;
            continue;
        }
        uint32_t u = 0;
        while (u < nu && usig[u] != sig[c])
            u++;
        if (u == nu) {
            usig[nu] = sig[c];
            ucx[nu++] = advance(p, s, g->brep[c]);
        } else if (p->stt[s]) {
            uint32_t *row = tt_row(p, p->stt[s] - 1);
            if (row[c] == TT_UNKNOWN)
                row[c] = ucx[u];
        }
        cx[c] = ucx[u];
    }
}

/* The dominant successor of state s: the state most allowed bytes lead to, and the set of
 * those bytes (computed once per state, on demand). Inside a string most bytes lead to
 * the same state (itself, or the next count of a bounded repetition), which lets a mask
 * walk accept whole trie subtrees at once. NULL on error. */
static const uint8_t *dom_info(gpool *p, uint32_t s, uint32_t *succ)
{
    if (p->sloop[s]) {
        *succ = p->loop_succ[p->sloop[s] - 1];
        return p->loops[p->sloop[s] - 1];
    }
    uint32_t cx[256], ux[256], un[256], nu = 0;
    uint32_t best = ST_DEAD, best_n = 0;
    const grammar *g = p->g;
    advance_classes(p, s, cx);
    if (p->error)
        return NULL;
    /* bytes per successor; classes are numbered in the order of their first byte, so the
     * first successor to reach the largest count is that of the lowest byte */
    for (uint32_t c = 0; c < g->n_bclass; c++) {
        if (cx[c] == ST_DEAD)
            continue;
        uint32_t u = 0;
        while (u < nu && ux[u] != cx[c])
            u++;
        if (u == nu) {
            ux[nu] = cx[c];
            un[nu++] = 0;
        }
        un[u] += g->csize[c];
    }
    for (uint32_t u = 0; u < nu; u++) {
        if (un[u] > best_n) {
            best_n = un[u];
            best = ux[u];
        }
    }
    uint8_t set[32] = {0};
    for (int b = 0; b < 256 && best != ST_DEAD; b++)
        if (cx[g->bclass[b]] == best)
            set[b >> 3] |= (uint8_t)(1u << (b & 7));
    bool shortcut = false;
    bool na = best != ST_DEAD && utf8_uniform(p, s, best, &shortcut);
    if (p->error)
        return NULL;
    if (!grow((void **)&p->loops, &p->cap_loops, p->n_loops + 1, 32) ||
        !grow((void **)&p->loop_succ, &p->cap_loop_succ, p->n_loops + 1, sizeof *p->loop_succ) ||
        !grow((void **)&p->loop_na, &p->cap_loop_na, p->n_loops + 1, 1)) {
        p->error = "grammar matcher: out of memory";
        return NULL;
    }
    memcpy(p->loops[p->n_loops], set, 32);
    p->loop_succ[p->n_loops] = best;
    p->loop_na[p->n_loops] = (uint8_t)(na | shortcut << 1);
    p->sloop[s] = (uint32_t)++p->n_loops;
    *succ = best;
    return p->loops[p->n_loops - 1];
}

static bool subset_of(const uint8_t *a, const uint8_t *b)
{
    uint64_t x[4], y[4];
    memcpy(x, a, 32);
    memcpy(y, b, 32);
    return !((x[0] & ~y[0]) | (x[1] & ~y[1]) | (x[2] & ~y[2]) | (x[3] & ~y[3]));
}

/* How many steps the dominant chain s -> s* -> s** ... keeps accepting every byte of
 * the dominant set of s (GRAMMAR_MAX_TOKEN_BYTES when it loops): any string over a subset
 * of that set no longer than this is accepted. Computed once per state. */
static uint32_t free_run(gpool *p, uint32_t s)
{
    if (p->sfree[s] != UINT32_MAX)
        return p->sfree[s];
    uint32_t succ;
    const uint8_t *u0 = dom_info(p, s, &succ);
    if (!u0)
        return 0;
    uint8_t base[32];
    memcpy(base, u0, 32);
    uint32_t run = 1, t = succ;
    if (t == s)
        run = GRAMMAR_MAX_TOKEN_BYTES;
    while (run < GRAMMAR_MAX_TOKEN_BYTES && t != ST_DEAD) {
        uint32_t next;
        const uint8_t *u = dom_info(p, t, &next);
        if (!u || !subset_of(base, u))
            break;
        run++;
        if (next == t) {
            run = GRAMMAR_MAX_TOKEN_BYTES;
            break;
        }
        t = next;
    }
    p->sfree[s] = run;
    return run;
}

/* Like free_run, in characters: how many steps the dominant chain keeps taking every
 * ASCII byte of the dominant set of s and every valid non-ASCII character to the next
 * state of the chain. */
static uint32_t free_run_chars(gpool *p, uint32_t s)
{
    if (p->sfree_c[s] != UINT32_MAX)
        return p->sfree_c[s];
    uint32_t succ;
    const uint8_t *u0 = dom_info(p, s, &succ);
    uint32_t run = 0, t = s;
    if (u0 && (p->loop_na[p->sloop[s] - 1] & 1)) {
        uint8_t base[32] = {0};
        memcpy(base, u0, 16); /* the ASCII half */
        run = 1;
        t = succ;
        if (t == s)
            run = GRAMMAR_MAX_TOKEN_BYTES;
        while (run < GRAMMAR_MAX_TOKEN_BYTES && t != ST_DEAD) {
            uint32_t next;
            const uint8_t *u = dom_info(p, t, &next);
            if (!u || !subset_of(base, u) || !(p->loop_na[p->sloop[t] - 1] & 1))
                break;
            run++;
            if (next == t) {
                run = GRAMMAR_MAX_TOKEN_BYTES;
                break;
            }
            t = next;
        }
    }
    p->sfree_c[s] = run;
    p->sfree_end[s] = t;
    return run;
}

enum { ACC_NONE, ACC_ALL, ACC_UPTO };

/* All continuation sequences of `need` bytes (the first in lo..hi) from s are accepted and
 * end in the same state (*target; pass UINT32_MAX - 1 as "not yet known"). */
static bool completes(gpool *p, uint32_t s, uint32_t need, uint8_t lo, uint8_t hi,
                      uint32_t *target)
{
    if (need == 0) {
        if (*target == UINT32_MAX - 1)
            *target = s;
        return *target == s;
    }
    const grammar *g = p->g;
    uint8_t seen[256] = {0};
    for (unsigned b = lo; b <= hi; b++) {
        if (seen[g->bclass[b]])
            continue;
        seen[g->bclass[b]] = 1;
        uint32_t t = advance(p, s, (uint8_t)b);
        if (t == ST_DEAD || !completes(p, t, need - 1, 0x80, 0xBF, target))
            return false;
    }
    return true;
}

/* Which tokens of trie subtree c (from c's depth on) are accepted from s, when that can
 * be decided without walking: all of them, those of at most *upto characters (the rest
 * die at their next character), or "walk the subtree" (ACC_NONE). */
static int all_accepted(gpool *p, uint32_t s, const grammar_vocab *v, const tnode *c,
                        uint32_t *upto)
{
    const uint8_t *set = v->subsets[c->sub - 1];
    uint32_t succ;
    if (subset_of(set, p->sallow[s])) {
        const uint8_t *dom = dom_info(p, s, &succ);
        if (dom && subset_of(set, dom) && c->maxdep <= free_run(p, s))
            return ACC_ALL;
    }
    if (c->maxchars == NOT_CLEAN)
        return ACC_NONE;
    uint32_t chars = c->maxchars;
    if (c->need) {
        /* finish the character in progress first: every completion must reach one state */
        uint32_t t = UINT32_MAX - 1;
        if (!completes(p, s, c->need, c->need_lo, c->need_hi, &t) || t == ST_DEAD)
            return ACC_NONE;
        if (chars == 1)
            return ACC_ALL;
        s = t;
        chars--;
    }
    /* valid UTF-8 below c: ASCII bytes must be dominant, other characters uniform */
    uint8_t ascii[32] = {0};
    memcpy(ascii, set, 16);
    if (!subset_of(ascii, p->sallow[s]))
        return ACC_NONE;
    const uint8_t *dom = dom_info(p, s, &succ);
    if (!dom || !subset_of(ascii, dom))
        return ACC_NONE;
    uint32_t run = free_run_chars(p, s);
    if (run == 0)
        return ACC_NONE;
    if (chars <= run)
        return ACC_ALL;
    /* longer tokens: decided if no character of the subtree can follow the run */
    uint32_t end = p->sfree_end[s];
    if (end == ST_DEAD)
        return ACC_NONE;
    const uint8_t *allow = p->sallow[end];
    bool has_na = false;
    for (int i = 24; i < 32; i++) /* lead bytes C0..FF */
        has_na |= set[i] != 0;
    for (int i = 0; i < 16; i++)
        if (ascii[i] & allow[i])
            return ACC_NONE;
    if (has_na)
        for (int b = 0xC2; b <= 0xF4; b++)
            if (allow[b >> 3] & (1u << (b & 7)))
                return ACC_NONE;
    *upto = run + (c->need ? 1 : 0);
    return ACC_UPTO;
}

/* ---- restricted alphabets ----
 *
 * Inside a counted repetition over a small alphabet (the email format's
 * [a-zA-Z0-9_+-]{1,32}, hex digits of a uuid, a hostname label) nearly every trie subtree
 * holds some token that leaves the alphabet ("abc," or "abc\""), so the subtree tests
 * above fail and the walk visits every in-alphabet prefix of the vocabulary: tens of
 * thousands of nodes per mask. A restricted-alphabet index of a trie node for a byte set D
 * splits its subtree once per (node, D): the "pure" tokens, whose remaining bytes all lie
 * in D, by length; and the "exits", the nodes where a path of D bytes first leaves D,
 * grouped by depth and byte. From a state whose dominant set is D with a free run of R
 * (free_run), pure tokens of at most R bytes are all accepted, and a token that leaves D
 * after d bytes is decided at chain state t_d by one test of its exit byte, so only the
 * exit groups whose byte is allowed there are walked. In character mode (string bodies,
 * where every valid non-ASCII character leads where the dominant ASCII bytes lead) whole
 * UTF-8 characters are in the alphabet, lengths count characters (a character cut short
 * by the token's end counts as one) and the run is free_run_chars. */

#ifndef DWALK_MIN_TOKENS
#define DWALK_MIN_TOKENS 256    /* smaller subtrees are walked (lower it to stress the index) */
#endif
#ifndef DINDEX_CUM_MIN
#define DINDEX_CUM_MIN 2048     /* pure tokens from which cumulative masks pay off */
#endif
#define DINDEX_CUM_MAXLEN 48    /* cumulative masks cover pure lengths 1..48 */
#define DINDEX_MAX_BYTES (256u << 20)

typedef struct dindex {
    uint8_t set[32];
    uint32_t node;
    bool chars;           /* character mode: D is ASCII, any valid non-ASCII character is in
                             the alphabet too, and lengths count characters */
    uint32_t n_pure, pure_maxlen;
    uint32_t (*pure)[2];  /* (token id, bytes below the node), by length */
    uint32_t *cum;        /* ncum masks: pure tokens of at most 1, 2, ... ncum bytes */
    uint32_t ncum;
    uint32_t maxd;        /* deepest exit: an exit at depth d follows d bytes of D */
    uint8_t (*xset)[32];  /* per depth 0..maxd: the bytes with exits */
    uint32_t *goff;       /* group (d, byte) is gnodes[goff[d*256+b] .. goff[d*256+b+1]) */
    uint32_t *gnodes;     /* trie node indices */
    size_t bytes;
} dindex;

static void dindex_free(dindex *d)
{
    if (!d)
        return;
    free(d->pure);
    free(d->cum);
    free(d->xset);
    free(d->goff);
    free(d->gnodes);
    free(d);
}

static int cmp_pair1(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    if (x[1] != y[1])
        return x[1] < y[1] ? -1 : 1;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Every path below node c within the rest of a UTF-8 character (need more bytes, the
 * next in lo..hi, later ones 80..BF) is a valid continuation. */
static bool char_clean(const grammar_vocab *v, const tnode *c, uint32_t need, uint8_t lo, uint8_t hi)
{
    if (need == 0)
        return true;
    for (uint32_t k = 0; k < c->n_child; k++) {
        const tnode *x = &v->nodes[c->child + k];
        if (x->byte < lo || x->byte > hi || !char_clean(v, x, need - 1, 0x80, 0xBF))
            return false;
    }
    return true;
}

/* The continuation bytes a lead byte needs and the range of the first; 0: not a lead */
static uint32_t utf8_lead(uint8_t b, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        return 1;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0)
            *lo = 0xA0;
        if (b == 0xED)
            *hi = 0x9F;
        return 2;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0)
            *lo = 0x90;
        if (b == 0xF4)
            *hi = 0x8F;
        return 3;
    }
    return 0;
}

static dindex *dindex_build(const grammar_vocab *v, uint32_t node, const uint8_t set[32], bool chars)
{
    dindex *d = calloc(1, sizeof *d);
    /* DFS entries (node, depth, continuation bytes still needed); exits (node, d*256+b) */
    uint32_t (*stack)[3] = NULL, (*ex)[2] = NULL;
    size_t n_stack = 0, cap_stack = 0, n_ex = 0, cap_ex = 0, cap_pure = 0;
    if (!d)
        return NULL;
    memcpy(d->set, set, 32);
    d->node = node;
    d->chars = chars;
    if (!grow((void **)&stack, &cap_stack, 1, sizeof *stack))
        goto fail;
    stack[n_stack][0] = node;
    stack[n_stack][1] = 0;
    stack[n_stack++][2] = 0;
    while (n_stack) {
        n_stack--;
        uint32_t ui = stack[n_stack][0], depth = stack[n_stack][1], need = stack[n_stack][2];
        const tnode *u = &v->nodes[ui];
        if (ui != node && u->ehi > u->lo) {
            if (!grow((void **)&d->pure, &cap_pure, d->n_pure + (u->ehi - u->lo), sizeof *d->pure))
                goto fail;
            for (uint32_t i = u->lo; i < u->ehi; i++) {
                d->pure[d->n_pure][0] = (uint32_t)v->sorted[i];
                d->pure[d->n_pure++][1] = depth;
            }
            if (depth > d->pure_maxlen)
                d->pure_maxlen = depth;
        }
        for (uint32_t k = 0; k < u->n_child; k++) {
            uint32_t ci = u->child + k;
            uint8_t b = v->nodes[ci].byte;
            uint32_t nd = depth + 1, nneed = 0;
            bool in = false;
            if (need) { /* inside a character: checked clean at its lead byte */
                in = true;
                nd = depth;
                nneed = need - 1;
            } else if (b < 0x80 || !chars) {
                in = (set[b >> 3] & (1u << (b & 7))) != 0;
            } else {
                uint8_t lo, hi;
                nneed = utf8_lead(b, &lo, &hi);
                in = nneed && char_clean(v, &v->nodes[ci], nneed, lo, hi);
            }
            if (in) {
                if (!grow((void **)&stack, &cap_stack, n_stack + 1, sizeof *stack))
                    goto fail;
                stack[n_stack][0] = ci;
                stack[n_stack][1] = nd;
                stack[n_stack++][2] = nneed;
            } else {
                if (!grow((void **)&ex, &cap_ex, n_ex + 1, sizeof *ex))
                    goto fail;
                ex[n_ex][0] = ci;
                ex[n_ex++][1] = depth * 256 + b;
                if (depth > d->maxd)
                    d->maxd = depth;
            }
        }
    }
    if (d->n_pure)
        qsort(d->pure, d->n_pure, sizeof *d->pure, cmp_pair1);
    if (n_ex)
        qsort(ex, n_ex, sizeof *ex, cmp_pair1);
    size_t ng = ((size_t)d->maxd + 1) * 256;
    d->goff = calloc(ng + 1, sizeof *d->goff);
    d->gnodes = malloc((n_ex + 1) * sizeof *d->gnodes);
    d->xset = calloc((size_t)d->maxd + 1, sizeof *d->xset);
    if (!d->goff || !d->gnodes || !d->xset)
        goto fail;
    for (size_t i = 0; i < n_ex; i++) {
        d->gnodes[i] = ex[i][0];
        d->goff[ex[i][1] + 1]++;
        d->xset[ex[i][1] >> 8][(ex[i][1] & 255) >> 3] |= (uint8_t)(1u << (ex[i][1] & 7));
    }
    for (size_t g = 0; g < ng; g++)
        d->goff[g + 1] += d->goff[g];
    size_t words = grammar_vocab_mask_words(v);
    if (d->n_pure >= DINDEX_CUM_MIN) {
        d->ncum = d->pure_maxlen < DINDEX_CUM_MAXLEN ? d->pure_maxlen : DINDEX_CUM_MAXLEN;
        d->cum = calloc((size_t)d->ncum * words, sizeof *d->cum);
        if (!d->cum)
            goto fail;
        uint32_t i = 0;
        for (uint32_t L = 1; L <= d->ncum; L++) {
            uint32_t *m = d->cum + (size_t)(L - 1) * words;
            if (L > 1)
                memcpy(m, m - words, words * sizeof *m);
            for (; i < d->n_pure && d->pure[i][1] <= L; i++)
                m[d->pure[i][0] >> 5] |= 1u << (d->pure[i][0] & 31);
        }
    }
    d->bytes = sizeof *d + (size_t)d->n_pure * sizeof *d->pure + (size_t)d->ncum * words * 4 +
               (ng + 1) * 4 + n_ex * 4 + ((size_t)d->maxd + 1) * 32;
    free(stack);
    free(ex);
    return d;
fail:
    free(stack);
    free(ex);
    dindex_free(d);
    return NULL;
}

static uint64_t dindex_key(uint32_t node, const uint8_t set[32], bool chars)
{
    return hash64(hash_bytes(set, 32) ^ ((uint64_t)node * 0x9E3779B97F4A7C15ull) ^ chars);
}

/* The index of (node, set), built on first use; NULL when out of memory or past the cache
 * limit (the caller walks instead). */
static const dindex *vocab_dindex(grammar_vocab *v, uint32_t node, const uint8_t set[32], bool chars)
{
    pthread_mutex_lock(&v->dmu);
    uint64_t h = dindex_key(node, set, chars);
    dindex *found = NULL;
    if (v->dix_cap) {
        for (size_t i = h & (v->dix_cap - 1);; i = (i + 1) & (v->dix_cap - 1)) {
            dindex *d = v->dix[i];
            if (!d)
                break;
            if (d->node == node && d->chars == chars && !memcmp(d->set, set, 32)) {
                found = d;
                break;
            }
        }
    }
    if (!found && v->dix_bytes < DINDEX_MAX_BYTES) {
        if ((v->dix_n + 1) * 2 > v->dix_cap) {
            size_t ncap = v->dix_cap ? v->dix_cap * 2 : 64;
            dindex **nt = calloc(ncap, sizeof *nt);
            if (nt) {
                for (size_t i = 0; i < v->dix_cap; i++) {
                    dindex *d = v->dix[i];
                    if (!d)
                        continue;
                    size_t j = dindex_key(d->node, d->set, d->chars) & (ncap - 1);
                    while (nt[j])
                        j = (j + 1) & (ncap - 1);
                    nt[j] = d;
                }
                free(v->dix);
                v->dix = nt;
                v->dix_cap = ncap;
            }
        }
        if ((v->dix_n + 1) * 2 <= v->dix_cap && (found = dindex_build(v, node, set, chars))) {
            size_t j = h & (v->dix_cap - 1);
            while (v->dix[j])
                j = (j + 1) & (v->dix_cap - 1);
            v->dix[j] = found;
            v->dix_n++;
            v->dix_bytes += found->bytes;
        }
    }
    pthread_mutex_unlock(&v->dmu);
    return found;
}

static void walk(gpool *p, const grammar_vocab *v, const tnode *nd, uint32_t s, uint32_t *mask);
static void visit(gpool *p, const grammar_vocab *v, const tnode *c, uint32_t s2, uint32_t *mask);

/* The tokens of node n's subtree accepted from s (the state after n's bytes), by the
 * restricted-alphabet index of s's dominant set. False, with the mask untouched, when it
 * does not apply (then the caller walks). */
static bool dwalk(gpool *p, const grammar_vocab *v, const tnode *n, uint32_t s, uint32_t *mask)
{
    uint32_t succ;
    const uint8_t *dom = dom_info(p, s, &succ);
    if (!dom || succ == ST_DEAD)
        return false;
    uint8_t D[32];
    memcpy(D, dom, 32);
    /* character mode when every valid non-ASCII character follows the dominant bytes */
    bool chars = (p->loop_na[p->sloop[s] - 1] & 1) != 0;
    if (chars)
        memset(D + 16, 0, 16);
    int nd = 0;
    for (int i = 0; i < 32; i++)
        nd += popcount32(D[i]);
    if (nd < (chars ? 1 : 2))
        return false;
    uint32_t R = chars ? free_run_chars(p, s) : free_run(p, s);
    if (R == 0 || p->error)
        return false;
    const dindex *ix = vocab_dindex((grammar_vocab *)v, (uint32_t)(n - v->nodes), D, chars);
    if (!ix)
        return false;
    /* the chain t_0 = s, t_1, ... along which D bytes lead */
    uint32_t need = ix->maxd > ix->pure_maxlen ? ix->maxd : ix->pure_maxlen;
    uint32_t K = R < need ? R : need;
    uint32_t chain_small[64], *chain = K < 64 ? chain_small : malloc(((size_t)K + 1) * sizeof *chain);
    if (!chain)
        return false;
    chain[0] = s;
    for (uint32_t i = 1; i <= K; i++) {
        uint32_t nx;
        if (!dom_info(p, chain[i - 1], &nx) || nx == ST_DEAD) {
            if (chain != chain_small)
                free(chain);
            return false;
        }
        chain[i] = nx;
    }
    /* paths longer than the run: decided only when the run's end takes no byte of D */
    if (need > R) {
        uint32_t tR = chain[K];
        bool open = false;
        for (int i = 0; i < 32; i++)
            open |= (D[i] & p->sallow[tR][i]) != 0;
        for (int b = 0xC2; chars && b <= 0xF4; b++) /* a character could start there */
            open |= (p->sallow[tR][b >> 3] & (1u << (b & 7))) != 0;
        if (open) {
            if (chain != chain_small)
                free(chain);
            return false;
        }
    }
    /* pure tokens of at most R bytes */
    uint32_t i = 0;
    if (ix->cum) {
        uint32_t L = R < ix->ncum ? R : ix->ncum;
        size_t words = grammar_vocab_mask_words(v);
        const uint32_t *cm = ix->cum + (size_t)(L - 1) * words;
        for (size_t w = 0; w < words; w++)
            mask[w] |= cm[w];
        /* skip those (binary search: character-mode indexes hold ~100 000 pure tokens) */
        uint32_t hi = ix->n_pure;
        while (i < hi) {
            uint32_t mid = i + (hi - i) / 2;
            if (ix->pure[mid][1] <= L)
                i = mid + 1;
            else
                hi = mid;
        }
    }
    for (; i < ix->n_pure && ix->pure[i][1] <= R; i++)
        mask[ix->pure[i][0] >> 5] |= 1u << (ix->pure[i][0] & 31);
    /* exits: a token leaving D after d bytes goes on from chain state t_d */
    uint32_t dmax = ix->maxd < K ? ix->maxd : K;
    for (uint32_t dd = 0; dd <= dmax && !p->error; dd++) {
        uint32_t td = chain[dd];
        for (int w = 0; w < 32; w++) {
            uint8_t bits = ix->xset[dd][w] & p->sallow[td][w];
            for (; bits; bits &= (uint8_t)(bits - 1)) {
                uint8_t b = (uint8_t)(w * 8 + __builtin_ctz(bits));
                uint32_t s3 = advance(p, td, b);
                if (s3 == ST_DEAD)
                    continue;
                uint32_t g = dd * 256 + b;
                for (uint32_t q = ix->goff[g]; q < ix->goff[g + 1] && !p->error; q++) {
                    p->stats.trie_nodes_visited++;
                    visit(p, v, &v->nodes[ix->gnodes[q]], s3, mask);
                }
            }
        }
    }
    if (chain != chain_small)
        free(chain);
    return true;
}

/* Tokens of subtree c accepted from s2, the state after c's bytes. */
static void visit(gpool *p, const grammar_vocab *v, const tnode *c, uint32_t s2, uint32_t *mask)
{
    set_range(mask, v->sorted, c->lo, c->ehi);
    if (!c->n_child)
        return;
    uint32_t upto = 0;
    int acc = c->sub ? all_accepted(p, s2, v, c, &upto) : ACC_NONE;
    if (acc == ACC_UPTO) {
        const uint32_t (*bl)[2] = (const uint32_t (*)[2])v->bylen + c->bylen;
        uint32_t n = c->hi - c->ehi;
        for (uint32_t i = 0; i < n && bl[i][1] <= upto; i++)
            mask[bl[i][0] >> 5] |= 1u << (bl[i][0] & 31);
        return;
    }
    if (acc == ACC_ALL) {
        if (c->big) {
            size_t words = grammar_vocab_mask_words(v);
            const uint32_t *bm = v->bigmasks + (size_t)(c->big - 1) * words;
            for (size_t w = 0; w < words; w++)
                mask[w] |= bm[w];
        } else {
            set_range(mask, v->sorted, c->ehi, c->hi);
        }
        return;
    }
    if (c->hi - c->ehi >= DWALK_MIN_TOKENS && dwalk(p, v, c, s2, mask))
        return;
    walk(p, v, c, s2, mask);
}

static void walk(gpool *p, const grammar_vocab *v, const tnode *nd, uint32_t s, uint32_t *mask)
{
    const tnode *ch = v->nodes + nd->child;
    for (uint32_t k = 0; k < nd->n_child; k++) {
        const tnode *c = &ch[k];
        uint8_t b = c->byte;
        /* re-read each time: interning new states may move the state arrays */
        if (!(p->sallow[s][b >> 3] & (1u << (b & 7))))
            continue;
        p->stats.trie_nodes_visited++;
        uint32_t s2 = advance(p, s, b);
        if (s2 == ST_DEAD)
            continue;
        visit(p, v, c, s2, mask);
        if (p->error)
            return;
    }
}

static int32_t fill_mask_nl(grammar_matcher *m, const grammar_vocab *v, uint32_t *bitmask)
{
    size_t words = grammar_vocab_mask_words(v);
    gpool *p = m->p;
    if (m->terminated || p->error) {
        memset(bitmask, 0, words * sizeof *bitmask);
        return 0;
    }
    p->stats.mask_calls++;
    uint64_t key = ((uint64_t)v->serial << 32 | m->state) + 1;
    uint32_t *slot = u64map_get(&p->mcache, key);
    if (slot && p->mask_words_cached == words) {
        p->stats.mask_cache_hits++;
        const uint32_t *cm = p->mask_chunks[*slot / MASK_CHUNK] + (size_t)(*slot % MASK_CHUNK) * words;
        memcpy(bitmask, cm, words * sizeof *bitmask);
        return p->mask_counts[*slot];
    }
    memset(bitmask, 0, words * sizeof *bitmask);
    const tnode *root = &v->nodes[0];
    if (root->hi - root->ehi < DWALK_MIN_TOKENS || !dwalk(p, v, root, m->state, bitmask))
        walk(p, v, root, m->state, bitmask);
    if (p->error) {
        memset(bitmask, 0, words * sizeof *bitmask);
        return 0;
    }
    if (p->sacc[m->state])
        for (int32_t i = 0; i < v->n_eog; i++)
            bitmask[(uint32_t)v->eog[i] >> 5] |= 1u << ((uint32_t)v->eog[i] & 31);
    int32_t cnt = 0;
    for (size_t i = 0; i < words; i++)
        cnt += popcount32(bitmask[i]);
    /* cache it (the cache is flushed when full or when the mask size changes) */
    if (p->mask_words_cached != words) {
        for (size_t i = 0; i < p->n_mask_chunks; i++)
            free(p->mask_chunks[i]);
        p->n_mask_chunks = 0;
        u64map_clear(&p->mcache);
        p->n_masks = 0;
        p->mask_words_cached = words;
    }
    if ((p->n_masks + 1) * words * 4 > MASK_CACHE_BYTES) { /* full: start over */
        u64map_clear(&p->mcache);
        p->n_masks = 0;
    }
    size_t chunk = p->n_masks / MASK_CHUNK;
    if (chunk == p->n_mask_chunks) {
        uint32_t **cq = realloc(p->mask_chunks, (chunk + 1) * sizeof *cq);
        uint32_t *mem = malloc((size_t)MASK_CHUNK * words * sizeof *mem);
        if (cq)
            p->mask_chunks = cq;
        if (cq && mem)
            p->mask_chunks[p->n_mask_chunks++] = mem;
        else
            free(mem);
    }
    if (chunk < p->n_mask_chunks &&
        grow((void **)&p->mask_counts, &p->cap_mask_counts, p->n_masks + 1,
             sizeof *p->mask_counts)) {
        memcpy(p->mask_chunks[chunk] + (p->n_masks % MASK_CHUNK) * words, bitmask,
               words * sizeof *bitmask);
        p->mask_counts[p->n_masks] = cnt;
        if (u64map_put(&p->mcache, key, (uint32_t)p->n_masks))
            p->n_masks++;
    }
    return cnt;
}

int32_t grammar_fill_mask(grammar_matcher *m, const grammar_vocab *v, uint32_t *bitmask)
{
    LOCK(m->p);
    int32_t n = fill_mask_nl(m, v, bitmask);
    UNLOCK(m->p);
    return n;
}

bool grammar_token_allowed(grammar_matcher *m, const grammar_vocab *v, int32_t id)
{
    if (id < 0 || id >= v->n_tokens || m->terminated)
        return false;
    LOCK(m->p);
    bool ok;
    if (m->p->error) {
        ok = false;
    } else if (v->is_eog[id]) {
        ok = complete_nl(m);
    } else if (!v->bytes[id]) {
        ok = false;
    } else {
        uint32_t s = m->state;
        for (uint32_t i = 0; i < v->len[id] && s != ST_DEAD; i++)
            s = advance(m->p, s, (uint8_t)v->bytes[id][i]);
        ok = s != ST_DEAD;
    }
    UNLOCK(m->p);
    return ok;
}

bool grammar_accept_token(grammar_matcher *m, const grammar_vocab *v, int32_t id)
{
    if (id < 0 || id >= v->n_tokens || m->terminated)
        return false;
    LOCK(m->p);
    bool ok = false;
    if (v->is_eog[id]) {
        if (complete_nl(m)) {
            m->terminated = true;
            ok = true;
        }
    } else if (v->bytes[id]) {
        ok = accept_bytes_nl(m, (const uint8_t *)v->bytes[id], v->len[id]);
    }
    UNLOCK(m->p);
    return ok;
}
