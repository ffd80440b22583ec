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
    spm_bigram *h;
    size_t n, cap;
} spm_heap;

static bool heap_push(spm_heap *q, spm_bigram b)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        spm_bigram *h = realloc(q->h, cap * sizeof *h);
        if (!h)
            return false;
        q->h = h;
        q->cap = cap;
    }
    size_t i = q->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &q->h[p]))
            break;
        q->h[i] = q->h[p];
        i = p;
    }
    q->h[i] = b;
    return true;
}

static spm_bigram heap_pop(spm_heap *q)
{
    spm_bigram top = q->h[0];
    spm_bigram last = q->h[--q->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= q->n)
            break;
        size_t c = l;
        if (l + 1 < q->n && before(&q->h[l + 1], &q->h[l]))
            c = l + 1;
        if (!before(&q->h[c], &last))
            break;
        q->h[i] = q->h[c];
        i = c;
    }
    if (q->n)
        q->h[i] = last;
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

bool tok_spm_fragment(const orc_vocab *v, const char *text, size_t len, tok_sink *sink)
{
    if (len == 0)
        return true;
    if (len > INT32_MAX)
        return false;
    spm_sym *s = malloc(len * sizeof *s);
    spm_heap q = {0};
    bool ok = s != NULL;
    int32_t n = 0;
    for (size_t off = 0; ok && off < len;) {
        size_t cl = tok_utf8_len((uint8_t)text[off]);
        if (cl > len - off)
            cl = len - off;
        s[n] = (spm_sym){n - 1, off + cl == len ? -1 : n + 1, (uint32_t)off, (uint32_t)cl};
        n++;
        off += cl;
    }
    for (int32_t i = 1; ok && i < n; i++)
        ok = try_bigram(v, text, s, &q, i - 1, i);
    while (ok && q.n) {
        spm_bigram b = heap_pop(&q);
        spm_sym *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = b.left;
        ok = try_bigram(v, text, s, &q, l->prev, b.left) &&
             try_bigram(v, text, s, &q, b.left, l->next);
    }
    for (int32_t i = 0; ok && n > 0 && i != -1; i = s[i].next) {
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
    free(s);
    free(q.h);
    return ok;
}
