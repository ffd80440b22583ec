/* threadpool.c - persistent workers with a generation counter: the caller publishes a
 * job by bumping the generation, workers spin on it for a while and then block on a
 * condition variable; completion is an atomic count the caller spins on. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPIN_ROUNDS 20000

typedef struct {
    tp_pool *pool;
    int ith;
    pthread_t thread;
} worker;

struct tp_pool {
    int n;
    worker *workers;
    tp_fn fn;
    void *arg;
    atomic_uint gen;
    atomic_int done;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *worker_main(void *p)
{
    worker *w = p;
    tp_pool *pool = w->pool;
    unsigned seen = 0; /* the generation at creation: a job published before this thread ran is not missed */
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&pool->stop, memory_order_relaxed) && spins < SPIN_ROUNDS) {
            if (++spins % 256 == 0)
                sched_yield();
            else
                CPU_RELAX();
        }
        if (g == seen && !atomic_load(&pool->stop)) {
            pthread_mutex_lock(&pool->mu);
            while ((g = atomic_load(&pool->gen)) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cv, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->stop))
            break;
        seen = g;
        pool->fn(pool->arg, w->ith, pool->n);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
    }
    return NULL;
}

tp_pool *tp_new(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    tp_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads, sizeof *p->workers);
        if (!p->workers)
            goto fail;
        for (int i = 1; i < n_threads; i++) {
            p->workers[i].pool = p;
            p->workers[i].ith = i;
            if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
                p->n = i; /* join the ones started */
                goto fail;
            }
        }
    }
    return p;
fail:
    tp_free(p);
    return NULL;
}

void tp_free(tp_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->workers)
        for (int i = 1; i < p->n; i++)
            pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->workers);
    free(p);
}

int tp_n_threads(const tp_pool *p)
{
    return p->n;
}

void tp_run(tp_pool *p, tp_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    /* spin briefly, then yield: on a loaded machine a worker may be waiting for our core */
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) != p->n - 1) {
        if (++spins < 2000)
            CPU_RELAX();
        else
            sched_yield();
    }
}

void tp_split(long n, int ith, int nth, long align, long *lo, long *hi)
{
    if (align < 1)
        align = 1;
    long units = (n + align - 1) / align;
    long per = units / nth, extra = units % nth;
    long u0 = ith * per + (ith < extra ? ith : extra);
    long u1 = u0 + per + (ith < extra ? 1 : 0);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}
