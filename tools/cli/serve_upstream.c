/* serve_upstream.c - private escalation for `orchard serve`: the policy file, consent,
 * redaction of e-mail addresses, phone and card numbers and custom patterns (with restore),
 * the audit log (JSON lines, a content hash but never content), SHA-256, and the libcurl
 * client that posts a request to the OpenAI-compatible upstream. */
#include "serve.h"

#include <curl/curl.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { K_EMAIL, K_PHONE, K_CARD, K_CUSTOM };

typedef struct pattern {
    regex_t re;
    char name[32];
    int kind;
} pattern;

struct srv_policy {
    enum { C_NEVER, C_PER_REQUEST, C_ALWAYS } consent;
    char **models;
    size_t n_models;
    char *upstream_model;
    bool on_overflow, fallback_local;
    long timeout_s;
    char *audit_path;
    pattern *rules, *redact;
    size_t n_rules, n_redact;
    pthread_mutex_t audit_lock;
};

static const char *RE_EMAIL = "[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}";
static const char *RE_CARD = "[0-9]{4}([ -]?[0-9]{4}){2}[ -]?[0-9]{1,7}";
static const char *RE_PHONE = "\\+?[0-9][0-9 ().-]{5,18}[0-9]";

static int add_pattern(pattern **arr, size_t *n, const char *re, const char *name, int kind, int flags,
                       char *err, size_t errlen)
{
    pattern *a = realloc(*arr, (*n + 1) * sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *arr = a;
    int rc = regcomp(&a[*n].re, re, REG_EXTENDED | flags);
    if (rc) {
        char msg[128];
        regerror(rc, &a[*n].re, msg, sizeof msg);
        snprintf(err, errlen, "pattern '%s': %s", name, msg);
        return -1;
    }
    snprintf(a[*n].name, sizeof a[*n].name, "%s", name);
    a[*n].kind = kind;
    (*n)++;
    return 0;
}

void srv_policy_free(srv_policy *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_models; i++)
        free(p->models[i]);
    free(p->models);
    free(p->upstream_model);
    free(p->audit_path);
    for (size_t i = 0; i < p->n_rules; i++)
        regfree(&p->rules[i].re);
    for (size_t i = 0; i < p->n_redact; i++)
        regfree(&p->redact[i].re);
    free(p->rules);
    free(p->redact);
    pthread_mutex_destroy(&p->audit_lock);
    free(p);
}

static bool flag(json_t *o, const char *key, bool def)
{
    json_t *x = json_object_get(o, key);
    return json_is_boolean(x) ? json_is_true(x) : def;
}

srv_policy *srv_policy_load(const char *path, char *err, size_t errlen)
{
    srv_policy *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->audit_lock, NULL);
    p->on_overflow = true;
    p->fallback_local = true;
    p->timeout_s = 60;
    json_t *root = NULL;
    if (path) {
        json_error_t je;
        root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (!root || !json_is_object(root)) {
            snprintf(err, errlen, "%s: %s", path, root ? "the policy must be a JSON object" : je.text);
            goto fail;
        }
    }
    json_t *x = json_object_get(root, "consent");
    if (x) {
        const char *c = json_string_value(x);
        if (c && !strcmp(c, "never"))
            p->consent = C_NEVER;
        else if (c && !strcmp(c, "per_request"))
            p->consent = C_PER_REQUEST;
        else if (c && !strcmp(c, "always"))
            p->consent = C_ALWAYS;
        else {
            snprintf(err, errlen, "%s: 'consent' must be never, per_request or always", path);
            goto fail;
        }
    }
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(root, "models"), i, v) {
        if (!json_is_string(v)) {
            snprintf(err, errlen, "%s: 'models' must be an array of strings", path);
            goto fail;
        }
        char **m = realloc(p->models, (p->n_models + 1) * sizeof *m);
        if (!m || !(m[p->n_models] = strdup(json_string_value(v)))) {
            if (m)
                p->models = m;
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        p->models = m;
        p->n_models++;
    }
    if ((x = json_object_get(root, "upstream_model")) && json_is_string(x))
        p->upstream_model = strdup(json_string_value(x));
    if ((x = json_object_get(root, "audit_log")) && json_is_string(x))
        p->audit_path = strdup(json_string_value(x));
    p->on_overflow = flag(root, "escalate_on_context_overflow", true);
    if ((x = json_object_get(root, "fallback"))) {
        const char *f = json_string_value(x);
        if (!f || (strcmp(f, "local") && strcmp(f, "error"))) {
            snprintf(err, errlen, "%s: 'fallback' must be local or error", path);
            goto fail;
        }
        p->fallback_local = !strcmp(f, "local");
    }
    if ((x = json_object_get(root, "timeout_seconds"))) {
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 3600) {
            snprintf(err, errlen, "%s: 'timeout_seconds' must be an integer in [1, 3600]", path);
            goto fail;
        }
        p->timeout_s = (long)json_integer_value(x);
    }
    json_array_foreach(json_object_get(root, "rules"), i, v) {
        json_t *name = json_object_get(v, "name"), *re = json_object_get(v, "pattern");
        if (!json_is_string(re)) {
            snprintf(err, errlen, "%s: rules[%zu] needs a 'pattern' (POSIX extended regex)", path, i);
            goto fail;
        }
        char nm[32];
        snprintf(nm, sizeof nm, "%s", json_is_string(name) ? json_string_value(name) : "rule");
        if (add_pattern(&p->rules, &p->n_rules, json_string_value(re), nm, K_CUSTOM, REG_ICASE | REG_NOSUB, err,
                        errlen))
            goto fail;
    }
    json_t *red = json_object_get(root, "redact");
    if ((flag(red, "email", true) && add_pattern(&p->redact, &p->n_redact, RE_EMAIL, "EMAIL", K_EMAIL, 0, err, errlen)) ||
        (flag(red, "card", true) && add_pattern(&p->redact, &p->n_redact, RE_CARD, "CARD", K_CARD, 0, err, errlen)) ||
        (flag(red, "phone", true) && add_pattern(&p->redact, &p->n_redact, RE_PHONE, "PHONE", K_PHONE, 0, err, errlen)))
        goto fail;
    json_array_foreach(json_object_get(red, "patterns"), i, v) {
        json_t *name = json_object_get(v, "name"), *re = json_object_get(v, "regex");
        if (!json_is_string(re) || !json_is_string(name)) {
            snprintf(err, errlen, "%s: redact.patterns[%zu] needs 'name' and 'regex'", path, i);
            goto fail;
        }
        char nm[32];
        size_t k = 0;
        for (const char *c = json_string_value(name); *c && k < sizeof nm - 1; c++)
            nm[k++] = (*c >= 'a' && *c <= 'z') ? (char)(*c - 32) : ((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')) ? *c : '_';
        nm[k] = 0;
        if (add_pattern(&p->redact, &p->n_redact, json_string_value(re), nm, K_CUSTOM, 0, err, errlen))
            goto fail;
    }
    json_decref(root);
    return p;
fail:
    json_decref(root);
    srv_policy_free(p);
    return NULL;
}

const char *srv_policy_audit_path(const srv_policy *p)
{
    return p->audit_path;
}

const char *srv_policy_upstream_model(const srv_policy *p)
{
    return p->upstream_model;
}

bool srv_policy_fallback_local(const srv_policy *p)
{
    return p->fallback_local;
}

const char *srv_policy_reason(const srv_policy *p, const srv_request *r, const char *text, bool too_long)
{
    static _Thread_local char buf[48];
    for (size_t i = 0; r->model && i < p->n_models; i++)
        if (!strcmp(r->model, p->models[i]))
            return "model";
    if (too_long && p->on_overflow)
        return "context";
    for (size_t i = 0; text && i < p->n_rules; i++)
        if (regexec(&p->rules[i].re, text, 0, NULL, 0) == 0) {
            snprintf(buf, sizeof buf, "rule:%s", p->rules[i].name);
            return buf;
        }
    return NULL;
}

bool srv_policy_consents(const srv_policy *p, const srv_request *r, bool key_consents)
{
    if (p->consent == C_ALWAYS)
        return true;
    if (p->consent == C_PER_REQUEST)
        return r->escalate || key_consents;
    return false;
}

/* ---- redaction -------------------------------------------------------------------------- */

static bool luhn_ok(const char *s, size_t n)
{
    int sum = 0, digits = 0;
    for (size_t i = n; i-- > 0;) {
        if (s[i] < '0' || s[i] > '9')
            continue;
        int d = s[i] - '0';
        if (digits++ % 2 == 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    return digits >= 13 && digits <= 19 && sum % 10 == 0;
}

static int count_digits(const char *s, size_t n)
{
    int d = 0;
    for (size_t i = 0; i < n; i++)
        d += s[i] >= '0' && s[i] <= '9';
    return d;
}

static const char *placeholder_for(srv_redaction *map, const char *name, int kind, const char *s, size_t n)
{
    for (int i = 0; i < map->n; i++)
        if (strlen(map->orig[i]) == n && !memcmp(map->orig[i], s, n))
            return map->ph[i];
    char **ph = realloc(map->ph, (size_t)(map->n + 1) * sizeof *ph);
    if (!ph)
        return NULL;
    map->ph = ph;
    char **orig = realloc(map->orig, (size_t)(map->n + 1) * sizeof *orig);
    if (!orig)
        return NULL;
    map->orig = orig;
    map->counts[kind]++;
    int same = 0;
    for (int i = 0; i < map->n; i++)
        same += !strncmp(map->ph[i] + 1, name, strlen(name)) && map->ph[i][1 + strlen(name)] == '_';
    char buf[64];
    snprintf(buf, sizeof buf, "[%s_%d]", name, same + 1);
    map->ph[map->n] = strdup(buf);
    map->orig[map->n] = strndup(s, n);
    if (!map->ph[map->n] || !map->orig[map->n]) {
        free(map->ph[map->n]);
        free(map->orig[map->n]);
        return NULL;
    }
    return map->ph[map->n++];
}

char *srv_redact(const srv_policy *p, const char *text, srv_redaction *map)
{
    char *cur = strdup(text);
    for (size_t k = 0; cur && k < p->n_redact; k++) {
        const pattern *pt = &p->redact[k];
        size_t len = strlen(cur), cap = len + 1, on = 0, at = 0;
        char *out = malloc(cap);
        if (!out) {
            free(cur);
            return NULL;
        }
        regmatch_t m;
        while (at <= len && regexec(&pt->re, cur + at, 1, &m, at ? REG_NOTBOL : 0) == 0 && m.rm_eo > m.rm_so) {
            const char *s = cur + at + m.rm_so;
            size_t n = (size_t)(m.rm_eo - m.rm_so);
            const char *ph = NULL;
            bool take = pt->kind != K_CARD || luhn_ok(s, n);
            if (pt->kind == K_PHONE)
                take = count_digits(s, n) >= 7;
            if (take && !(ph = placeholder_for(map, pt->name, pt->kind, s, n))) {
                free(out);
                free(cur);
                return NULL;
            }
            size_t pre = (size_t)m.rm_so, add = take ? strlen(ph) : n;
            if (on + pre + add + 1 > cap) {
                while (on + pre + add + 1 > cap)
                    cap *= 2;
                char *o = realloc(out, cap);
                if (!o) {
                    free(out);
                    free(cur);
                    return NULL;
                }
                out = o;
            }
            memcpy(out + on, cur + at, pre);
            on += pre;
            memcpy(out + on, take ? ph : s, add);
            on += add;
            at += (size_t)m.rm_eo;
        }
        size_t rest = len - (at < len ? at : len);
        if (on + rest + 1 > cap) {
            char *o = realloc(out, on + rest + 1);
            if (!o) {
                free(out);
                free(cur);
                return NULL;
            }
            out = o;
        }
        memcpy(out + on, cur + (at < len ? at : len), rest);
        out[on + rest] = 0;
        free(cur);
        cur = out;
    }
    return cur;
}

char *srv_restore(const srv_redaction *map, const char *text, size_t len, size_t *out_len)
{
    size_t cap = len + 1;
    for (int i = 0; i < map->n; i++)
        cap += strlen(map->orig[i]) * 4; /* grown below when needed */
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t on = 0;
    for (size_t i = 0; i < len;) {
        const char *rep = NULL;
        size_t skip = 1;
        if (text[i] == '[')
            for (int k = 0; k < map->n; k++) {
                size_t pl = strlen(map->ph[k]);
                if (pl <= len - i && !memcmp(text + i, map->ph[k], pl)) {
                    rep = map->orig[k];
                    skip = pl;
                    break;
                }
            }
        size_t add = rep ? strlen(rep) : 1;
        if (on + add + 1 > cap) {
            cap = (on + add + 1) * 2;
            char *o = realloc(out, cap);
            if (!o) {
                free(out);
                return NULL;
            }
            out = o;
        }
        memcpy(out + on, rep ? rep : text + i, add);
        on += add;
        i += skip;
    }
    out[on] = 0;
    *out_len = on;
    return out;
}

void srv_redaction_free(srv_redaction *map)
{
    for (int i = 0; i < map->n; i++) {
        free(map->ph[i]);
        free(map->orig[i]);
    }
    free(map->ph);
    free(map->orig);
    memset(map, 0, sizeof *map);
}

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------------------------- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *b)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
        hh = g, g = f, f = e, e = d + t1, d = c, c = bb, bb = a, a = t1 + t2;
    }
    h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void srv_sha256_hex(const void *data, size_t n, char out[65])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        sha256_block(h, p + i);
    unsigned char tail[128] = {0};
    size_t r = n - i;
    memcpy(tail, p + i, r);
    tail[r] = 0x80;
    size_t tl = r + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++)
        tail[tl - 1 - k] = (unsigned char)(bits >> (8 * k));
    for (size_t k = 0; k < tl; k += 64)
        sha256_block(h, tail + k);
    for (int k = 0; k < 8; k++)
        snprintf(out + 8 * k, 9, "%08x", h[k]);
}

/* ---- libcurl client ----------------------------------------------------------------------- */

typedef struct rbuf {
    char *p;
    size_t n;
    bool overflow;
} rbuf;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user)
{
    rbuf *b = user;
    size_t n = size * nmemb;
    if (b->n + n > (16u << 20)) {
        b->overflow = true;
        return 0;
    }
    char *q = realloc(b->p, b->n + n + 1);
    if (!q)
        return 0;
    b->p = q;
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

void *srv_upstream_easy(const srv_policy *p, const char *base_url, const char *key, const char *path,
                        const char *body, size_t len, size_t (*write)(char *, size_t, size_t, void *), void *user,
                        srv_upstream_bufs *bufs)
{
    memset(bufs, 0, sizeof *bufs);
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    size_t ul = strlen(base_url);
    bufs->url = malloc(ul + strlen(path) + 1);
    if (!bufs->url)
        goto fail;
    memcpy(bufs->url, base_url, ul);
    strcpy(bufs->url + ul - (ul && base_url[ul - 1] == '/'), path);
    bufs->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (key && *key) {
        if (!(bufs->auth = malloc(strlen(key) + 32)))
            goto fail;
        sprintf(bufs->auth, "Authorization: Bearer %s", key);
        bufs->headers = curl_slist_append(bufs->headers, bufs->auth);
    }
    if (!bufs->headers)
        goto fail;
    curl_easy_setopt(c, CURLOPT_URL, bufs->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, bufs->headers);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, user);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, p->timeout_s);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, p->timeout_s < 10 ? p->timeout_s : 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    return c;
fail:
    curl_easy_cleanup(c);
    srv_upstream_bufs_free(bufs);
    return NULL;
}

void srv_upstream_bufs_free(srv_upstream_bufs *bufs)
{
    free(bufs->url);
    if (bufs->auth) {
        memset(bufs->auth, 0, strlen(bufs->auth)); /* the key does not linger on the heap */
        free(bufs->auth);
    }
    curl_slist_free_all(bufs->headers);
    memset(bufs, 0, sizeof *bufs);
}

int srv_upstream_post(const srv_policy *p, const char *base_url, const char *key, const char *path,
                      const char *body, size_t len, char **resp, size_t *resp_len, long *status, char *err,
                      size_t errlen)
{
    *resp = NULL;
    *resp_len = 0;
    *status = 0;
    rbuf b = {0};
    srv_upstream_bufs bufs;
    CURL *c = srv_upstream_easy(p, base_url, key, path, body, len, on_data, &b, &bufs);
    if (!c) {
        snprintf(err, errlen, "libcurl could not start");
        return -1;
    }
    int rc = -1;
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "upstream: %s", b.overflow ? "answer larger than 16 MiB" : curl_easy_strerror(cc));
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        *resp = b.p ? b.p : strdup("");
        *resp_len = b.n;
        b.p = NULL;
        rc = *resp ? 0 : -1;
        if (rc)
            snprintf(err, errlen, "out of memory");
    }
    free(b.p);
    srv_upstream_bufs_free(&bufs);
    curl_easy_cleanup(c);
    return rc;
}

/* ---- audit log ------------------------------------------------------------------------------ */

void srv_audit(const srv_policy *p, const char *route, const char *reason, const char *model,
               const char *upstream, size_t bytes_sent, int32_t tokens_sent, const char *sha256_hex,
               const srv_redaction *map, long status, const char *outcome)
{
    if (!p->audit_path)
        return;
    /* credentials in the URL (https://user:secret@host/v1) never reach the log */
    char url[512] = "";
    if (upstream) {
        snprintf(url, sizeof url, "%s", upstream);
        char *host = strstr(url, "://");
        host = host ? host + 3 : url;
        char *at = strchr(host, '@'), *slash = strchr(host, '/');
        if (at && (!slash || at < slash))
            memmove(host, at + 1, strlen(at + 1) + 1);
        upstream = url;
    }
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:I, s:i, s:s?, s:{s:i, s:i, s:i, s:i}, s:I, s:s}", "time",
                          when, "route", route, "reason", reason ? reason : "", "model", model, "upstream", upstream,
                          "bytes_sent", (json_int_t)bytes_sent, "tokens_sent", tokens_sent, "content_sha256",
                          sha256_hex, "redactions", "email", map ? map->counts[K_EMAIL] : 0, "phone",
                          map ? map->counts[K_PHONE] : 0, "card", map ? map->counts[K_CARD] : 0, "custom",
                          map ? map->counts[K_CUSTOM] : 0, "status", (json_int_t)status, "outcome", outcome);
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!line)
        return;
    pthread_mutex_lock((pthread_mutex_t *)&p->audit_lock);
    FILE *f = fopen(p->audit_path, "a");
    if (f) {
        fprintf(f, "%s\n", line);
        fclose(f);
    } else {
        fprintf(stderr, "orchard serve: cannot append to the audit log '%s'\n", p->audit_path);
    }
    pthread_mutex_unlock((pthread_mutex_t *)&p->audit_lock);
    free(line);
}
