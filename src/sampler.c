/* sampler.c - token sampling: an optional grammar mask (guided generation), repetition/
 * presence/frequency penalties over a window of recent tokens, then greedy, or
 * temperature with top-k, top-p and min-p filtering, drawn with a seeded xoshiro256**
 * generator so the same seed gives the same output. */
#include "common.h"
#include "guided.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float logit;
    int32_t id;
} cand;

struct orc_sampler {
    orc_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    int32_t *hist;      /* ring of the last penalty_last_n tokens */
    int32_t hist_len, hist_pos;
    int32_t *counts;    /* occurrences of each token in the window */
    float *work;        /* penalized logits */
    cand *cands;
    /* guided generation */
    const orc_model *model;
    const grammar_vocab *gvocab;
    grammar_matcher *gm;
    uint32_t *mask;
};

orc_sampler_params orc_sampler_default_params(void)
{
    orc_sampler_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0x5eed,
    };
    return p;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(orc_sampler *s)
{
    uint64_t *r = s->rng;
    uint64_t result = rotl(r[1] * 5, 7) * 9;
    uint64_t t = r[1] << 17;
    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = rotl(r[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static double next_unit(orc_sampler *s)
{
    return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

orc_status orc_sampler_new(const orc_sampler_params *params, int32_t n_vocab, orc_sampler **out)
{
    if (!out || n_vocab <= 0)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_sampler_new: n_vocab must be positive");
    *out = NULL;
    orc_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    s->p = params ? *params : orc_sampler_default_params();
    if (s->p.penalty_last_n < 0)
        s->p.penalty_last_n = 0;
    if (s->p.penalty_last_n > 1 << 20)
        s->p.penalty_last_n = 1 << 20;
    s->n_vocab = n_vocab;
    s->hist = calloc((size_t)s->p.penalty_last_n + 1, sizeof *s->hist);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->work = calloc((size_t)n_vocab, sizeof *s->work);
    s->cands = calloc((size_t)n_vocab, sizeof *s->cands);
    if (!s->hist || !s->counts || !s->work || !s->cands) {
        orc_sampler_free(s);
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    }
    orc_sampler_reset(s);
    *out = s;
    return ORC_OK;
}

void orc_sampler_free(orc_sampler *s)
{
    if (!s)
        return;
    free(s->hist);
    free(s->counts);
    free(s->work);
    free(s->cands);
    grammar_matcher_free(s->gm);
    free(s->mask);
    free(s);
}

void orc_sampler_reset(orc_sampler *s)
{
    if (!s)
        return;
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    s->hist_len = s->hist_pos = 0;
    memset(s->counts, 0, (size_t)s->n_vocab * sizeof *s->counts);
    if (s->gm)
        grammar_matcher_reset(s->gm);
}

void orc_sampler_accept(orc_sampler *s, orc_token t)
{
    if (!s || t < 0 || t >= s->n_vocab)
        return;
    if (s->gm && !grammar_accept_token(s->gm, s->gvocab, t))
        orc_log(ORC_LOG_WARN, "sampler: token %d is not allowed by the grammar here; ignored by it", t);
    if (s->p.penalty_last_n == 0)
        return;
    int32_t cap = s->p.penalty_last_n;
    if (s->hist_len == cap) {
        int32_t old = s->hist[s->hist_pos];
        s->counts[old]--;
    } else {
        s->hist_len++;
    }
    s->hist[s->hist_pos] = t;
    s->hist_pos = (s->hist_pos + 1) % cap;
    s->counts[t]++;
}

static int cmp_cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* Moves the k largest candidates to the front, sorted descending. */
static void partial_sort(cand *c, int32_t n, int32_t k)
{
    if (k >= n) {
        qsort(c, (size_t)n, sizeof *c, cmp_cand_desc);
        return;
    }
    /* quickselect the k-th largest, then sort the front */
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        cand pivot = c[(lo + hi) / 2];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (cmp_cand_desc(&c[i], &pivot) < 0) i++;
            while (cmp_cand_desc(&c[j], &pivot) > 0) j--;
            if (i <= j) {
                cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
    qsort(c, (size_t)k, sizeof *c, cmp_cand_desc);
}

orc_token orc_sampler_sample(orc_sampler *s, const float *logits)
{
    if (!s || !logits)
        return -1;
    const orc_sampler_params *p = &s->p;
    float *w = s->work;
    memcpy(w, logits, (size_t)s->n_vocab * sizeof *w);
    if (s->gm) {
        int32_t allowed = grammar_fill_mask(s->gm, s->gvocab, s->mask);
        if (allowed == 0) /* terminated or stuck: only the end can come */
            return orc_token_eos(s->model) >= 0 ? orc_token_eos(s->model) : -1;
        /* branch-free: allowed bits are scattered, and a mispredicted branch per token
         * costs more than the whole mask */
        const uint32_t ninf = 0xFF800000u; /* -INFINITY */
        for (int32_t i = 0; i < s->n_vocab; i++) {
            uint32_t keep = 0u - (s->mask[i >> 5] >> (i & 31) & 1u), u;
            memcpy(&u, &w[i], 4);
            u = (u & keep) | (ninf & ~keep);
            memcpy(&w[i], &u, 4);
        }
    }
    bool penalize = p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f ||
                    p->frequency_penalty != 0.0f;
    if (penalize && s->hist_len > 0) {
        for (int32_t i = 0; i < s->hist_len; i++) {
            int32_t t = s->hist[i];
            int32_t cnt = s->counts[t];
            if (cnt <= 0)
                continue; /* already handled (duplicates in the ring) */
            if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f)
                w[t] = w[t] > 0 ? w[t] / p->repeat_penalty : w[t] * p->repeat_penalty;
            w[t] -= (float)cnt * p->frequency_penalty + p->presence_penalty;
            s->counts[t] = -cnt; /* mark done */
        }
        for (int32_t i = 0; i < s->hist_len; i++) {
            int32_t t = s->hist[i];
            if (s->counts[t] < 0)
                s->counts[t] = -s->counts[t];
        }
    }
    if (p->temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < s->n_vocab; i++)
            if (w[i] > w[best])
                best = i;
        return best;
    }
    int32_t n = 0;
    cand *c = s->cands;
    /* tokens the grammar rules out (-inf) are left out of the candidates: they could
     * never be drawn, and a 128K vocabulary narrowed to a few thousand tokens then
     * costs a few thousand entries to select from, not 128K */
    if (s->gm) {
        for (int32_t i = 0; i < s->n_vocab; i++) { /* branch-free compaction */
            c[n].logit = w[i] / p->temperature;
            c[n].id = i;
            n += w[i] != -INFINITY;
        }
    } else {
        for (int32_t i = 0; i < s->n_vocab; i++) {
            c[i].logit = w[i] / p->temperature;
            c[i].id = i;
        }
        n = s->n_vocab;
    }
    if (n == 0) { /* every allowed logit is -inf: draw as without the mask */
        for (int32_t i = 0; i < s->n_vocab; i++) {
            c[i].logit = w[i] / p->temperature;
            c[i].id = i;
        }
        n = s->n_vocab;
    }
    int32_t k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    partial_sort(c, n, k);
    n = k;
    /* softmax over the survivors */
    float mx = c[0].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        c[i].logit = expf(c[i].logit - mx);
        sum += c[i].logit;
    }
    for (int32_t i = 0; i < n; i++)
        c[i].logit = (float)(c[i].logit / sum);
    if (p->min_p > 0.0f && p->min_p < 1.0f) {
        float thr = c[0].logit * p->min_p;
        int32_t keep = 1;
        while (keep < n && c[keep].logit >= thr)
            keep++;
        n = keep;
    }
    if (p->top_p < 1.0f && p->top_p > 0.0f) {
        double cum = 0.0;
        int32_t keep = 0;
        while (keep < n) {
            cum += c[keep].logit;
            keep++;
            if (cum >= p->top_p)
                break;
        }
        n = keep;
    }
    double total = 0.0;
    for (int32_t i = 0; i < n; i++)
        total += c[i].logit;
    double r = next_unit(s) * total, acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += c[i].logit;
        if (r < acc)
            return c[i].id;
    }
    return c[n - 1].id;
}

/* ---- log-probabilities ---- */

orc_status orc_logprobs(const float *logits, int32_t n_vocab, orc_token token, float *logprob,
                        orc_token_logprob *top, int32_t k)
{
    if (!logits || n_vocab <= 0 || k < 0 || (k > 0 && !top) || token >= n_vocab)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_logprobs: bad arguments (n_vocab %d, token %d, k %d)",
                        n_vocab, token, k);
    float mx = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (isnan(logits[i]))
            return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_logprobs: logit %d is NaN", i);
        if (logits[i] > mx)
            mx = logits[i];
    }
    if (!isfinite(mx))
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_logprobs: the largest logit is %s",
                        mx > 0 ? "+inf" : "-inf (no token is possible)");
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++)
        sum += exp((double)logits[i] - mx);
    double lse = (double)mx + log(sum); /* log of the softmax's denominator */
    if (logprob && token >= 0) {
        double v = (double)logits[token] - lse;
        *logprob = v > 0.0 ? 0.0f : (float)v;
    }
    if (k > n_vocab)
        k = n_vocab;
    if (k == 0)
        return ORC_OK;
    if (k <= 64) {
        /* one pass keeping the k best in order; ids rise, so an equal value never
         * displaces an earlier id */
        int32_t n = 0;
        for (int32_t i = 0; i < n_vocab; i++) {
            float l = logits[i];
            if (n == k && !(l > top[k - 1].logprob))
                continue;
            int32_t at = n < k ? n++ : k - 1;
            while (at > 0 && l > top[at - 1].logprob) {
                top[at] = top[at - 1];
                at--;
            }
            top[at] = (orc_token_logprob){.token = i, .logprob = l};
        }
    } else {
        cand *c = malloc((size_t)n_vocab * sizeof *c);
        if (!c)
            return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
        for (int32_t i = 0; i < n_vocab; i++)
            c[i] = (cand){.logit = logits[i], .id = i};
        partial_sort(c, n_vocab, k);
        for (int32_t i = 0; i < k; i++)
            top[i] = (orc_token_logprob){.token = c[i].id, .logprob = c[i].logit};
        free(c);
    }
    for (int32_t i = 0; i < k; i++) {
        double v = (double)top[i].logprob - lse;
        top[i].logprob = v > 0.0 ? 0.0f : (float)v;
    }
    return ORC_OK;
}

/* ---- guided generation ---- */

orc_status orc_sampler_set_grammar(orc_sampler *s, const orc_model *model, const orc_grammar *g)
{
    if (!s)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "sampler is NULL");
    grammar_matcher_free(s->gm);
    free(s->mask);
    s->gm = NULL;
    s->mask = NULL;
    if (!g)
        return ORC_OK;
    if (!model)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "a grammar needs the model for its vocabulary");
    if (orc_model_n_vocab(model) != s->n_vocab)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "the sampler has %d tokens but the model %d", s->n_vocab,
                        orc_model_n_vocab(model));
    const grammar_vocab *gv = orc_model_grammar_vocab(model);
    if (!gv)
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory building the vocabulary trie");
    s->gm = grammar_matcher_new(orc_grammar_internal(g));
    s->mask = calloc(grammar_vocab_mask_words(gv), sizeof *s->mask);
    if (!s->gm || !s->mask) {
        grammar_matcher_free(s->gm);
        free(s->mask);
        s->gm = NULL;
        s->mask = NULL;
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory for the grammar matcher");
    }
    s->model = model;
    s->gvocab = gv;
    return ORC_OK;
}

bool orc_sampler_grammar_complete(const orc_sampler *s)
{
    return s && s->gm && grammar_matcher_is_complete(s->gm);
}

bool orc_sampler_grammar_done(const orc_sampler *s)
{
    if (!s || !s->gm)
        return false;
    if (grammar_matcher_is_terminated(s->gm) || grammar_matcher_error(s->gm))
        return true;
    /* complete, and no byte can extend it */
    if (!grammar_matcher_is_complete(s->gm))
        return false;
    uint8_t set[32];
    grammar_matcher_allowed_bytes(s->gm, set);
    for (int i = 0; i < 32; i++)
        if (set[i])
            return false;
    return true;
}

int32_t orc_sampler_forced_tokens(orc_sampler *s, orc_token *out, int32_t cap)
{
    if (!s || !s->gm || !out || cap <= 0)
        return 0;
    uint8_t bytes[256];
    size_t nb = grammar_matcher_forced_bytes(s->gm, bytes, sizeof bytes);
    if (nb == 0)
        return 0;
    /* Spell the forced bytes greedily with the longest allowed token that is a prefix of
     * what remains (the allowed set is tiny here: only prefixes of the forced text), then
     * roll the matcher back: the caller accepts the tokens as it evaluates them. */
    grammar_snapshot snap = grammar_matcher_snapshot(s->gm);
    size_t used = 0;
    int32_t k = 0;
    while (used < nb && k < cap) {
        if (grammar_fill_mask(s->gm, s->gvocab, s->mask) == 0)
            break;
        int32_t best = -1, best_len = 0;
        size_t words = grammar_vocab_mask_words(s->gvocab);
        for (size_t w = 0; w < words; w++) {
            for (uint32_t bits = s->mask[w]; bits; bits &= bits - 1) {
                int32_t id = (int32_t)(w * 32 + (size_t)__builtin_ctz(bits));
                char piece[256];
                int32_t len = orc_token_to_piece(s->model, id, piece, sizeof piece, false);
                if (len > best_len && (size_t)len <= nb - used && memcmp(piece, bytes + used, (size_t)len) == 0) {
                    best = id;
                    best_len = len;
                }
            }
        }
        if (best < 0 || !grammar_accept_token(s->gm, s->gvocab, best))
            break;
        out[k++] = best;
        used += (size_t)best_len;
    }
    grammar_matcher_restore(s->gm, snap);
    return k;
}
