/* tokenizer_spm.c - SentencePiece ("llama") merges, as llama.cpp's llm_tokenizer_spm does
 * them: start from UTF-8 characters, repeatedly merge the adjacent pair whose joined text
 * is the vocabulary token with the highest score (leftmost on ties), then emit tokens and
 * byte-fallback tokens for characters that formed none. */
#include "tokenizer_int.h"

#include <stdlib.h>

typedef struct {
    int32_t prev, next;
    uint32_t off, n;     /* bytes of text; n = 0 once merged into the left neighbour */
} spm_sym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
} spm_bigram;

static inline bool before(const spm_bigram *a, const spm_bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
    tok_buf *buf;
    size_t n;
} spm_heap;

static bool heap_push(spm_heap *q, spm_bigram b)
{
    if (!tok_buf_reserve(q->buf, (q->n + 1) * sizeof b))
        return false;
    spm_bigram *h = q->buf->p;
    size_t i = q->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = b;
    return true;
}

static spm_bigram heap_pop(spm_heap *q)
{
    spm_bigram *h = q->buf->p;
    spm_bigram top = h[0];
    spm_bigram last = h[--q->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= q->n)
            break;
        size_t c = l;
        if (l + 1 < q->n && before(&h[l + 1], &h[l]))
            c = l + 1;
        if (!before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (q->n)
        h[i] = last;
    return top;
}

static bool try_bigram(const orc_vocab *v, const char *text, const spm_sym *s, spm_heap *q,
                       int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return true;
    uint32_t size = s[left].n + s[right].n;
    if (size > v->max_token_len)
        return true;
    int32_t id = tok_find(v, text + s[left].off, size);
    if (id < 0)
        return true;
    return heap_push(q, (spm_bigram){v->scores[id], left, right, size});
}

/* Merges one segment (no token spans its ends) and emits its tokens. */
static bool spm_segment(const orc_vocab *v, tok_scratch *sc, const char *text, size_t len,
                        tok_sink *sink)
{
    if (!tok_buf_reserve(&sc->syms, len * sizeof(spm_sym)))
        return false;
    spm_sym *s = sc->syms.p;
    spm_heap q = {&sc->heap, 0};
    int32_t n = 0;
    for (size_t off = 0; off < len;) {
        size_t cl = tok_utf8_len((uint8_t)text[off]);
        if (cl > len - off)
            cl = len - off;
        s[n] = (spm_sym){n - 1, off + cl == len ? -1 : n + 1, (uint32_t)off, (uint32_t)cl};
        n++;
        off += cl;
    }
    for (int32_t i = 1; i < n; i++)
        if (!try_bigram(v, text, s, &q, i - 1, i))
            return false;
    while (q.n) {
        spm_bigram b = heap_pop(&q);
        spm_sym *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = b.left;
        if (!try_bigram(v, text, s, &q, l->prev, b.left) ||
            !try_bigram(v, text, s, &q, b.left, l->next))
            return false;
    }
    for (int32_t i = 0; n > 0 && i != -1; i = s[i].next) {
        int32_t id = tok_find(v, text + s[i].off, s[i].n);
        if (id >= 0) {
            tok_emit(sink, id);
            continue;
        }
        for (uint32_t k = 0; k < s[i].n; k++) {
            int32_t b = v->byte_tok[(uint8_t)text[s[i].off + k]];
            if (b >= 0)
                tok_emit(sink, b);
        }
    }
    return true;
}

bool tok_spm_split = true;

bool tok_spm_fragment(const orc_vocab *v, tok_scratch *sc, const char *text, size_t len,
                      tok_sink *sink)
{
    if (len > INT32_MAX)
        return false;
    /* Split where the byte pair across a character boundary occurs in no token: no
     * merge can cross it, so merging the segments separately gives the same result
     * (their merges never interact, and ties keep their left-to-right order). */
    const uint8_t *u = (const uint8_t *)text;
    size_t seg = 0;
    for (size_t off = 0; off < len;) {
        size_t cl = tok_utf8_len(u[off]);
        if (cl > len - off)
            cl = len - off;
        size_t next = off + cl;
        if (next < len && tok_spm_split) {
            uint32_t pr = (uint32_t)u[next - 1] << 8 | u[next];
            if (!((v->spm_pairs[pr >> 6] >> (pr & 63)) & 1)) {
                if (!spm_segment(v, sc, text + seg, next - seg, sink))
                    return false;
                seg = next;
            }
        }
        off = next;
    }
    return seg < len ? spm_segment(v, sc, text + seg, len - seg, sink) : true;
}
