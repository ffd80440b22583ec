/* test_sampler.c - sampling on hand-made logits: greedy is the arg-max, top-k/top-p/min-p
 * never pick outside their sets, temperature sharpens, penalties act on the window only,
 * and the seeded generator repeats exactly. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_seed_repeats),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
