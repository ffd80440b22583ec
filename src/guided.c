/* guided.c - the public face of guided generation: compiling GBNF, JSON Schema and regex
 * grammars (grammar.h does the work), and the per-model token trie the sampler's masks
 * are computed against, built once on first use and shared by every sampler. */
#include "guided.h"

#include "model.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct orc_grammar {
    grammar *g;
    orc_grammar_kind kind;
};

orc_grammar_params orc_grammar_default_params(void)
{
    orc_grammar_params p = {.kind = ORC_GRAMMAR_GBNF, .pretty = false, .root = NULL};
    return p;
}

orc_status orc_grammar_new(const char *text, size_t len, const orc_grammar_params *params,
                           orc_grammar **out)
{
    if (!text || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_grammar_new: text and out are required");
    *out = NULL;
    orc_grammar_params p = params ? *params : orc_grammar_default_params();
    char err[512] = "";
    grammar *g = NULL;
    switch (p.kind) {
    case ORC_GRAMMAR_GBNF:
        g = grammar_from_gbnf(text, len, p.root, err, sizeof err);
        break;
    case ORC_GRAMMAR_JSON_SCHEMA: {
        json_schema_opts o = {.pretty = p.pretty};
        g = grammar_from_json_schema(text, len, &o, err, sizeof err);
        break;
    }
    case ORC_GRAMMAR_REGEX:
        g = grammar_from_regex(text, len, err, sizeof err);
        break;
    default:
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "unknown grammar kind %d", (int)p.kind);
    }
    if (!g)
        return orc_fail(strstr(err, "unsupported") ? ORC_ERR_UNSUPPORTED : ORC_ERR_FORMAT, "%s",
                        err[0] ? err : "grammar could not be compiled");
    orc_grammar *og = calloc(1, sizeof *og);
    if (!og) {
        grammar_free(g);
        return orc_fail(ORC_ERR_NO_MEMORY, "out of memory");
    }
    og->g = g;
    og->kind = p.kind;
    *out = og;
    return ORC_OK;
}

void orc_grammar_free(orc_grammar *g)
{
    if (!g)
        return;
    grammar_free(g->g);
    free(g);
}

const grammar *orc_grammar_internal(const orc_grammar *g)
{
    return g ? g->g : NULL;
}

orc_status orc_json_schema_to_gbnf(const char *schema, size_t len, bool pretty, char **out)
{
    if (!schema || !out)
        return orc_fail(ORC_ERR_INVALID_ARGUMENT, "orc_json_schema_to_gbnf: schema and out are required");
    char err[512] = "";
    json_schema_opts o = {.pretty = pretty};
    *out = json_schema_to_gbnf(schema, len, &o, err, sizeof err);
    if (!*out)
        return orc_fail(strstr(err, "unsupported") ? ORC_ERR_UNSUPPORTED : ORC_ERR_FORMAT, "%s", err);
    return ORC_OK;
}

static pthread_mutex_t vocab_mu = PTHREAD_MUTEX_INITIALIZER;

const grammar_vocab *orc_model_grammar_vocab(const orc_model *cm)
{
    orc_model *m = (orc_model *)cm; /* the cache is logically const: built once */
    pthread_mutex_lock(&vocab_mu);
    if (m->gvocab) {
        pthread_mutex_unlock(&vocab_mu);
        return m->gvocab;
    }
    int32_t n = orc_vocab_n_tokens(m->vocab);
    char **bytes = calloc((size_t)n, sizeof *bytes);
    uint32_t *lens = calloc((size_t)n, sizeof *lens);
    int32_t *eog = calloc((size_t)n, sizeof *eog);
    int32_t n_eog = 0;
    bool ok = bytes && lens && eog;
    for (int32_t i = 0; ok && i < n; i++) {
        if (orc_vocab_is_eog(m->vocab, i)) {
            eog[n_eog++] = i;
            continue;
        }
        uint32_t attr = orc_vocab_attr(m->vocab, i);
        if (attr & (ORC_TATTR_CONTROL | ORC_TATTR_UNUSED | ORC_TATTR_UNKNOWN))
            continue; /* never part of guided text */
        char small[64];
        int32_t len = orc_vocab_piece(m->vocab, i, small, sizeof small, false);
        if (len < 0) {
            char *big = malloc((size_t)-len);
            if (!big) {
                ok = false;
                break;
            }
            len = orc_vocab_piece(m->vocab, i, big, -len, false);
            bytes[i] = big;
        } else if (len > 0) {
            bytes[i] = malloc((size_t)len);
            if (!bytes[i]) {
                ok = false;
                break;
            }
            memcpy(bytes[i], small, (size_t)len);
        }
        lens[i] = len > 0 ? (uint32_t)len : 0;
    }
    if (ok)
        m->gvocab = grammar_vocab_new(n, (const char *const *)bytes, lens, eog, n_eog);
    if (bytes)
        for (int32_t i = 0; i < n; i++)
            free(bytes[i]);
    free(bytes);
    free(lens);
    free(eog);
    pthread_mutex_unlock(&vocab_mu);
    return m->gvocab;
}
