/* test_sampler.c - sampling on hand-made logits: greedy is the arg-max, top-k/top-p/min-p
 * never pick outside their sets, temperature sharpens, penalties act on the window only,
 * the seeded generator repeats exactly, and orc_logprobs ranks and normalizes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "orchard.h"

#define NV 8

static orc_sampler *make(float temp, int top_k, float top_p, float min_p, uint64_t seed)
{
    orc_sampler_params p = orc_sampler_default_params();
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    orc_sampler *s = NULL;
    assert_int_equal(orc_sampler_new(&p, NV, &s), ORC_OK);
    return s;
}

static const float L[NV] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f, -5.0f, 0.5f};

static void test_greedy(void **state)
{
    (void)state;
    orc_sampler *s = make(0.0f, 40, 0.95f, 0.05f, 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(orc_sampler_sample(s, L), 1);
    orc_sampler_free(s);
    s = make(1.0f, 1, 1.0f, 0.0f, 1); /* top-k 1 is greedy too */
    for (int i = 0; i < 10; i++)
        assert_int_equal(orc_sampler_sample(s, L), 1);
    orc_sampler_free(s);
}

static void test_filters(void **state)
{
    (void)state;
    int seen[NV];
    /* top-k 3: only 1, 5, 2 */
    orc_sampler *s = make(1.0f, 3, 1.0f, 0.0f, 9);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 2000; i++)
        seen[orc_sampler_sample(s, L)]++;
    assert_true(seen[1] > 0 && seen[5] > 0 && seen[2] > 0);
    assert_int_equal(seen[1] + seen[5] + seen[2], 2000);
    orc_sampler_free(s);
    /* min-p 0.5: p(x)/p(max) >= 0.5 keeps 1 (1.0), 5 (0.905), 2 (0.61) */
    s = make(1.0f, 0, 1.0f, 0.5f, 9);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 2000; i++)
        seen[orc_sampler_sample(s, L)]++;
    assert_int_equal(seen[1] + seen[5] + seen[2], 2000);
    orc_sampler_free(s);
    /* top-p small: only the most likely */
    s = make(1.0f, 0, 0.2f, 0.0f, 9);
    for (int i = 0; i < 200; i++)
        assert_int_equal(orc_sampler_sample(s, L), 1);
    orc_sampler_free(s);
    /* all on, frequencies follow the softmax roughly: 1 beats 2 */
    s = make(1.0f, 0, 1.0f, 0.0f, 5);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 20000; i++)
        seen[orc_sampler_sample(s, L)]++;
    double z = 0;
    for (int i = 0; i < NV; i++)
        z += exp(L[i]);
    for (int i = 0; i < NV; i++)
        assert_true(fabs(seen[i] / 20000.0 - exp(L[i]) / z) < 0.02);
    orc_sampler_free(s);
}

static void test_seed_repeats(void **state)
{
    (void)state;
    orc_token a[64], b[64];
    orc_sampler *s = make(1.5f, 0, 1.0f, 0.0f, 77), *t = make(1.5f, 0, 1.0f, 0.0f, 77);
    for (int i = 0; i < 64; i++) {
        a[i] = orc_sampler_sample(s, L);
        b[i] = orc_sampler_sample(t, L);
    }
    assert_memory_equal(a, b, sizeof a);
    orc_sampler_reset(s);
    for (int i = 0; i < 64; i++)
        assert_int_equal(orc_sampler_sample(s, L), a[i]);
    orc_sampler_free(s);
    orc_sampler_free(t);
}

static void test_penalties(void **state)
{
    (void)state;
    orc_sampler_params p = orc_sampler_default_params();
    p.temperature = 0.0f;
    p.repeat_penalty = 10.0f;
    p.penalty_last_n = 2;
    orc_sampler *s = NULL;
    assert_int_equal(orc_sampler_new(&p, NV, &s), ORC_OK);
    orc_sampler_accept(s, 1);
    assert_int_equal(orc_sampler_sample(s, L), 5); /* 3/10 < 2.9 */
    orc_sampler_accept(s, 5);
    assert_int_equal(orc_sampler_sample(s, L), 2);
    orc_sampler_accept(s, 2); /* window of 2: token 1 falls out */
    assert_int_equal(orc_sampler_sample(s, L), 1);
    orc_sampler_free(s);

    p = orc_sampler_default_params();
    p.temperature = 0.0f;
    p.frequency_penalty = 0.3f;
    p.presence_penalty = 0.0f;
    assert_int_equal(orc_sampler_new(&p, NV, &s), ORC_OK);
    assert_int_equal(orc_sampler_sample(s, L), 1);
    orc_sampler_accept(s, 1);
    assert_int_equal(orc_sampler_sample(s, L), 5); /* 3 - 0.3 = 2.7 < 2.9 */
    orc_sampler_accept(s, 5);
    assert_int_equal(orc_sampler_sample(s, L), 1); /* 2.7 > 2.6 */
    orc_sampler_free(s);
}

static void test_bad_params(void **state)
{
    (void)state;
    orc_sampler *s = NULL;
    assert_int_equal(orc_sampler_new(NULL, 0, &s), ORC_ERR_INVALID_ARGUMENT);
    assert_null(s);
    orc_sampler_free(NULL);
}

static void test_logprobs(void **state)
{
    (void)state;
    /* the log-softmax: exp sums to 1, differences equal logit differences */
    float all[NV];
    for (int i = 0; i < NV; i++)
        assert_int_equal(orc_logprobs(L, NV, i, &all[i], NULL, 0), ORC_OK);
    double sum = 0.0;
    for (int i = 0; i < NV; i++) {
        assert_true(all[i] <= 0.0f);
        sum += exp(all[i]);
    }
    assert_true(fabs(sum - 1.0) < 1e-5);
    assert_true(fabsf((all[1] - all[2]) - (L[1] - L[2])) < 1e-5f);
    /* top-k: sorted, the greedy choice first, its value equal to the token's */
    orc_token_logprob top[NV + 2];
    float lp = 1.0f;
    orc_sampler *g = make(0.0f, 40, 0.95f, 0.05f, 1);
    orc_token greedy = orc_sampler_sample(g, L);
    orc_sampler_free(g);
    assert_int_equal(orc_logprobs(L, NV, greedy, &lp, top, 3), ORC_OK);
    assert_int_equal(top[0].token, greedy);
    assert_true(lp == top[0].logprob);
    assert_int_equal(top[1].token, 5);
    assert_int_equal(top[2].token, 2);
    assert_true(top[0].logprob >= top[1].logprob && top[1].logprob >= top[2].logprob);
    /* k beyond the vocabulary gives the whole ranking */
    assert_int_equal(orc_logprobs(L, NV, -1, NULL, top, NV + 2), ORC_OK);
    static const orc_token order[NV] = {1, 5, 2, 0, 7, 4, 3, 6};
    for (int i = 0; i < NV; i++) {
        assert_int_equal(top[i].token, order[i]);
        assert_true(top[i].logprob == all[order[i]]);
    }
    /* ties: the lower id first; -inf stays -inf */
    const float T[4] = {1.0f, 2.0f, 2.0f, -INFINITY};
    assert_int_equal(orc_logprobs(T, 4, 3, &lp, top, 4), ORC_OK);
    assert_true(isinf(lp) && lp < 0);
    assert_int_equal(top[0].token, 1);
    assert_int_equal(top[1].token, 2);
    assert_int_equal(top[3].token, 3);
    /* the long path (k > 64) agrees with the short one */
    enum { BIG = 300 };
    float big[BIG];
    for (int i = 0; i < BIG; i++)
        big[i] = (float)((i * 37) % 101) * 0.1f - 3.0f; /* many ties */
    orc_token_logprob a[100], b[20];
    assert_int_equal(orc_logprobs(big, BIG, -1, NULL, a, 100), ORC_OK);
    assert_int_equal(orc_logprobs(big, BIG, -1, NULL, b, 20), ORC_OK);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(a[i].token, b[i].token);
        assert_true(a[i].logprob == b[i].logprob);
    }
    for (int i = 1; i < 100; i++)
        assert_true(a[i - 1].logprob > a[i].logprob ||
                    (a[i - 1].logprob == a[i].logprob && a[i - 1].token < a[i].token));
    /* bad input is an error, not a crash */
    const float N[2] = {0.0f, NAN}, I[2] = {-INFINITY, -INFINITY};
    assert_int_equal(orc_logprobs(NULL, NV, 0, &lp, NULL, 0), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_logprobs(L, 0, 0, &lp, NULL, 0), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_logprobs(L, NV, NV, &lp, NULL, 0), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_logprobs(L, NV, 0, &lp, NULL, 2), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_logprobs(L, NV, 0, &lp, top, -1), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_logprobs(N, 2, 0, &lp, NULL, 0), ORC_ERR_INVALID_ARGUMENT);
    assert_int_equal(orc_logprobs(I, 2, 0, &lp, NULL, 0), ORC_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_seed_repeats),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
