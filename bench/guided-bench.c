/* guided-bench.c - what guided generation costs on a real-sized vocabulary (driven by
 * bench/run-guided-bench): JSON Schema compile time, token-mask computation per token
 * (p50/p99/max), and generation speed with a schema vs without on the same model, prompt
 * and seeds. Generation uses the public API (sampler + grammar, fast-forward of forced
 * tokens). Mask times come from replaying each generated output on a freshly compiled
 * grammar through the internal matcher — the very masks the sampler computed, timed
 * alone — and from uniform random walks over the allowed tokens (no model: the hardest
 * inputs, every string full of novel multilingual tokens). Mask times are thread CPU time
 * (the figures are meant for shared machines, where wall time measures other work), and
 * so is the sampling + grammar work per generated token; generation speed is wall time,
 * each constrained output followed by an unconstrained one of as many tokens.
 * Prints one JSON object on stdout.
 *
 *   guided-bench -m MODEL -s SCHEMAS.json [-p PROMPT] [-n MAX_TOKENS] [-o OUTPUTS]
 *                [-w WALKS] [-t THREADS]
 */
#include "grammar.h"
#include "guided.h"
#include "orchard.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double wall_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double *v;
    size_t n, cap;
} series;

static void push(series *s, double x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) {
            fprintf(stderr, "guided-bench: out of memory\n");
            exit(1);
        }
    }
    s->v[s->n++] = x;
}

/* {n, mean, p50, p99, max} in the given unit */
static json_t *stats(series *s, double unit)
{
    if (s->n == 0)
        return json_pack("{s:i}", "n", 0);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    qsort(s->v, s->n, sizeof *s->v, cmp_d);
    return json_pack("{s:i, s:f, s:f, s:f, s:f}", "n", (int)s->n, "mean", sum / (double)s->n * unit, "p50",
                     s->v[s->n / 2] * unit, "p99", s->v[s->n * 99 / 100] * unit, "max", s->v[s->n - 1] * unit);
}

static orc_grammar *compile(const char *text)
{
    orc_grammar_params gp = orc_grammar_default_params();
    gp.kind = ORC_GRAMMAR_JSON_SCHEMA;
    orc_grammar *g = NULL;
    if (orc_grammar_new(text, strlen(text), &gp, &g) != ORC_OK) {
        fprintf(stderr, "guided-bench: %s\n", orc_last_error());
        exit(1);
    }
    return g;
}

typedef struct {
    orc_token *tok;
    int n, n_forced, sampled_steps;
    bool complete;
    double wall, eval_s;         /* total and model evaluation, wall time */
    double host_s;               /* sampling + grammar work, thread CPU time */
    series step;                 /* wall time of each single-token step (sample + eval) */
} run_out;

/* One generation after the prompt (already evaluated, logits given): with g, fast-forward
 * and sample under the grammar until done; without, sample exactly `fixed` tokens. */
static void generate(orc_model *m, orc_context *ctx, int32_t n_prompt, const float *prompt_logits,
                     const orc_grammar *g, uint64_t seed, int max_tokens, int fixed, run_out *r)
{
    r->n = r->n_forced = r->sampled_steps = 0;
    r->complete = false;
    r->wall = r->eval_s = r->host_s = 0;
    r->step.n = 0;
    orc_context_truncate(ctx, n_prompt);
    orc_sampler_params sp = orc_sampler_default_params();
    sp.seed = seed;
    orc_sampler *s = NULL;
    if (orc_sampler_new(&sp, orc_model_n_vocab(m), &s) != ORC_OK ||
        (g && orc_sampler_set_grammar(s, m, g) != ORC_OK)) {
        fprintf(stderr, "guided-bench: %s\n", orc_last_error());
        exit(1);
    }
    const float *logits = prompt_logits;
    int limit = g ? max_tokens : fixed;
    double t_start = wall_s();
    while (r->n < limit) {
        double t0 = wall_s(), c0 = cpu_s();
        orc_token next[64];
        int nn = 0;
        if (g) {
            int room = limit - r->n;
            nn = orc_sampler_forced_tokens(s, next, room < 64 ? room : 64);
            r->n_forced += nn;
        }
        bool sampled = nn == 0;
        if (sampled) {
            orc_token t = orc_sampler_sample(s, logits);
            if (g && orc_token_is_eog(m, t)) {
                r->complete = true;
                r->host_s += cpu_s() - c0;
                break;
            }
            next[nn++] = t;
            r->sampled_steps++;
        }
        for (int k = 0; k < nn; k++) {
            orc_sampler_accept(s, next[k]);
            r->tok[r->n++] = next[k];
        }
        double t1 = wall_s();
        r->host_s += cpu_s() - c0;
        if (g && orc_sampler_grammar_done(s)) {
            r->complete = true;
            break;
        }
        if (orc_eval(ctx, next, nn, false) != ORC_OK) {
            fprintf(stderr, "guided-bench: %s\n", orc_last_error());
            exit(1);
        }
        double t2 = wall_s();
        r->eval_s += t2 - t1;
        if (sampled)
            push(&r->step, t2 - t0);
        logits = orc_context_logits(ctx, -1);
    }
    if (g && !r->complete && orc_sampler_grammar_complete(s))
        r->complete = true;
    r->wall = wall_s() - t_start;
    orc_sampler_free(s);
}

/* Replays tokens on matcher mt, timing each mask (thread CPU time). */
static void replay(grammar_matcher *mt, const grammar_vocab *gv, uint32_t *mask, const orc_token *tok, int n,
                   series *out)
{
    for (int i = 0; i < n; i++) {
        double t0 = cpu_s();
        grammar_fill_mask(mt, gv, mask);
        push(out, cpu_s() - t0);
        if (!grammar_accept_token(mt, gv, tok[i])) {
            fprintf(stderr, "guided-bench: replay rejected token %d at %d\n", tok[i], i);
            exit(1);
        }
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A uniform random walk over the allowed tokens (EOS only when nothing else is allowed
 * or at the end), timing each mask. */
static void walk(const grammar *gi, const grammar_vocab *gv, uint32_t *mask, int max_tokens, series *out)
{
    grammar_matcher *mt = grammar_matcher_new(gi);
    size_t words = grammar_vocab_mask_words(gv);
    for (int i = 0; i < max_tokens; i++) {
        double t0 = cpu_s();
        int32_t allowed = grammar_fill_mask(mt, gv, mask);
        push(out, cpu_s() - t0);
        if (allowed <= 0 || grammar_matcher_is_terminated(mt))
            break;
        /* pick the r-th allowed token; prefer text over EOS while text is possible */
        int32_t r = (int32_t)(rng() % (uint64_t)allowed), id = -1;
        for (size_t w = 0; w < words && id < 0; w++) {
            uint32_t bits = mask[w];
            int c = __builtin_popcount(bits);
            if (r >= c) {
                r -= c;
                continue;
            }
            for (; bits; bits &= bits - 1)
                if (r-- == 0) {
                    id = (int32_t)(w * 32 + (size_t)__builtin_ctz(bits));
                    break;
                }
        }
        if (id < 0 || !grammar_accept_token(mt, gv, id))
            break;
    }
    grammar_matcher_free(mt);
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *schemas_path = NULL, *prompt = "Here is the record as JSON:";
    int max_tokens = 160, outputs = 3, walks = 8, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "guided-bench: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "-m"))
            model_path = v;
        else if (!strcmp(a, "-s"))
            schemas_path = v;
        else if (!strcmp(a, "-p"))
            prompt = v;
        else if (!strcmp(a, "-n"))
            max_tokens = atoi(v);
        else if (!strcmp(a, "-o"))
            outputs = atoi(v);
        else if (!strcmp(a, "-w"))
            walks = atoi(v);
        else if (!strcmp(a, "-t"))
            threads = atoi(v);
        else {
            fprintf(stderr, "guided-bench: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!model_path || !schemas_path || max_tokens <= 0 || outputs < 0 || walks < 0) {
        fprintf(stderr, "usage: guided-bench -m MODEL -s SCHEMAS.json [-p PROMPT] [-n MAX_TOKENS] "
                        "[-o OUTPUTS] [-w WALKS] [-t THREADS]\n");
        return 2;
    }
    json_error_t je;
    json_t *schemas = json_load_file(schemas_path, 0, &je);
    if (!json_is_array(schemas)) {
        fprintf(stderr, "guided-bench: %s: %s\n", schemas_path, je.text);
        return 1;
    }
    orc_model_params mp = orc_model_default_params();
    mp.n_threads = threads;
    orc_model *m = NULL;
    if (orc_model_load(model_path, &mp, &m) != ORC_OK) {
        fprintf(stderr, "guided-bench: %s\n", orc_last_error());
        return 1;
    }
    double tv = wall_s();
    const grammar_vocab *gv = orc_model_grammar_vocab(m);
    double vocab_s = wall_s() - tv;
    if (!gv) {
        fprintf(stderr, "guided-bench: no vocabulary trie\n");
        return 1;
    }
    int32_t n_vocab = orc_model_n_vocab(m);
    orc_token ptok[512];
    int32_t np = orc_tokenize(m, prompt, strlen(prompt), ptok, 512, true, false);
    if (np <= 0) {
        fprintf(stderr, "guided-bench: prompt does not tokenize\n");
        return 1;
    }
    orc_context_params cp = orc_context_default_params();
    cp.n_ctx = np + max_tokens + 64;
    cp.n_threads = threads;
    orc_context *ctx = NULL;
    if (orc_context_new(m, &cp, &ctx) != ORC_OK || orc_eval(ctx, ptok, np, false) != ORC_OK) {
        fprintf(stderr, "guided-bench: %s\n", orc_last_error());
        return 1;
    }
    float *plog = malloc((size_t)n_vocab * sizeof *plog);
    uint32_t *mask = calloc(grammar_vocab_mask_words(gv), sizeof *mask);
    run_out rc = {.tok = malloc((size_t)max_tokens * sizeof(orc_token))};
    run_out ru = {.tok = malloc((size_t)max_tokens * sizeof(orc_token))};
    orc_token **kept = calloc((size_t)outputs + 1, sizeof *kept);
    int *kept_n = calloc((size_t)outputs + 1, sizeof *kept_n);
    if (!plog || !mask || !rc.tok || !ru.tok || !kept || !kept_n)
        return 1;
    memcpy(plog, orc_context_logits(ctx, -1), (size_t)n_vocab * sizeof *plog);

    json_t *res = json_pack("{s:s, s:i, s:i, s:f, s:s, s:i, s:i}", "model", model_path, "n_vocab", n_vocab,
                            "trie_nodes", (int)grammar_vocab_trie_nodes(gv), "vocab_trie_ms", vocab_s * 1e3,
                            "prompt", prompt, "max_tokens", max_tokens, "outputs", outputs);
    json_t *arr = json_array();
    json_object_set_new(res, "schemas", arr);
    size_t si;
    json_t *sc;
    json_array_foreach(schemas, si, sc) {
        const char *name = json_string_value(json_object_get(sc, "name"));
        char *text = json_dumps(json_object_get(sc, "schema"), JSON_COMPACT);
        fprintf(stderr, "guided-bench: %s\n", name);
        /* compile time: the first compile, then the median of 30 */
        series comp = {0};
        double first = 0;
        for (int k = 0; k < 31; k++) {
            double t0 = wall_s();
            orc_grammar *g = compile(text);
            double dt = wall_s() - t0;
            orc_grammar_free(g);
            if (k == 0)
                first = dt;
            else
                push(&comp, dt);
        }
        json_t *o = json_pack("{s:s, s:f, s:o}", "name", name, "compile_first_ms", first * 1e3, "compile_ms",
                              stats(&comp, 1e3));
        free(comp.v);
        /* generation: constrained and unconstrained interleaved, same seeds */
        series step_c = {0}, step_u = {0};
        double wall_c = 0, wall_u = 0, host_c = 0, host_u = 0, eval_c = 0, eval_u = 0;
        int tok_c = 0, tok_u = 0, forced = 0, complete = 0, steps_c = 0;
        json_t *samples = json_array();
        for (int k = 0; k < outputs; k++) {
            orc_grammar *g = compile(text); /* cold: nothing cached */
            generate(m, ctx, np, plog, g, 1 + (uint64_t)k, max_tokens, 0, &rc);
            wall_c += rc.wall;
            host_c += rc.host_s;
            eval_c += rc.eval_s;
            tok_c += rc.n;
            forced += rc.n_forced;
            steps_c += rc.sampled_steps;
            complete += rc.complete;
            for (size_t q = 0; q < rc.step.n; q++)
                push(&step_c, rc.step.v[q]);
            kept[k] = malloc((size_t)rc.n * sizeof(orc_token) + 1);
            memcpy(kept[k], rc.tok, (size_t)rc.n * sizeof(orc_token));
            kept_n[k] = rc.n;
            /* right after: as many single-token steps as the constrained output has tokens */
            generate(m, ctx, np, plog, NULL, 1 + (uint64_t)k, max_tokens, rc.n > 0 ? rc.n : 1, &ru);
            wall_u += ru.wall;
            host_u += ru.host_s;
            eval_u += ru.eval_s;
            tok_u += ru.n;
            for (size_t q = 0; q < ru.step.n; q++)
                push(&step_u, ru.step.v[q]);
            orc_grammar_free(g);
            char buf[4096];
            int32_t bl = orc_detokenize(m, kept[k], kept_n[k], buf, sizeof buf - 1, true, false);
            if (bl < 0)
                bl = 0;
            buf[bl] = 0;
            json_array_append_new(samples, json_stringn(buf, (size_t)bl));
        }
        /* masks: the generated outputs replayed, each on a fresh grammar (cold) and all on
         * one grammar (warm, as a server that keeps compiled schemas) */
        series mc = {0}, mw = {0}, mr = {0};
        orc_grammar *gw = compile(text);
        for (int k = 0; k < outputs; k++) {
            orc_grammar *g = compile(text);
            grammar_matcher *mt = grammar_matcher_new(orc_grammar_internal(g));
            replay(mt, gv, mask, kept[k], kept_n[k], &mc);
            grammar_matcher_free(mt);
            orc_grammar_free(g);
            mt = grammar_matcher_new(orc_grammar_internal(gw));
            replay(mt, gv, mask, kept[k], kept_n[k], &mw);
            grammar_matcher_free(mt);
            free(kept[k]);
        }
        orc_grammar_free(gw);
        for (int k = 0; k < walks; k++) {
            orc_grammar *g = compile(text);
            walk(orc_grammar_internal(g), gv, mask, 400, &mr);
            orc_grammar_free(g);
        }
        json_object_set_new(o, "mask_model_cold_us", stats(&mc, 1e6));
        json_object_set_new(o, "mask_model_warm_us", stats(&mw, 1e6));
        json_object_set_new(o, "mask_walk_cold_us", stats(&mr, 1e6));
        json_t *st_c = stats(&step_c, 1e3), *st_u = stats(&step_u, 1e3);
        json_object_set_new(o, "gen", json_pack("{s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:o, s:i, s:f, s:f, s:f, s:o}",
                                                "outputs_complete", complete, "tokens", tok_c, "forced", forced,
                                                "sampled_steps", steps_c, "wall_s", wall_c, "eval_s", eval_c,
                                                "host_s", host_c, "step_ms", st_c,
                                                "unconstrained_tokens", tok_u, "unconstrained_wall_s", wall_u,
                                                "unconstrained_eval_s", eval_u, "unconstrained_host_s", host_u,
                                                "unconstrained_step_ms", st_u));
        json_object_set_new(o, "samples", samples);
        free(step_c.v);
        free(step_u.v);
        free(mc.v);
        free(mw.v);
        free(mr.v);
        free(text);
        json_array_append_new(arr, o);
    }
    char *out = json_dumps(res, JSON_INDENT(1));
    puts(out);
    free(out);
    json_decref(res);
    json_decref(schemas);
    free(kept);
    free(kept_n);
    free(rc.tok);
    free(ru.tok);
    free(rc.step.v);
    free(ru.step.v);
    free(plog);
    free(mask);
    orc_context_free(ctx);
    orc_model_free(m);
    return 0;
}
