/* threadpool.h - a persistent pool of worker threads for the forward pass. tp_run calls
 * fn(arg, ith, nth) on every thread (the caller is thread 0) and returns when all have
 * finished; workers spin briefly between jobs, then sleep, so back-to-back jobs in a
 * forward pass start in microseconds without burning idle cores. */
#ifndef ORC_THREADPOOL_H
#define ORC_THREADPOOL_H

typedef struct tp_pool tp_pool;
typedef void (*tp_fn)(void *arg, int ith, int nth);

/* n_threads counts the caller; 1 means no worker threads. NULL on failure. */
tp_pool *tp_new(int n_threads);
void tp_free(tp_pool *p);
int tp_n_threads(const tp_pool *p);
void tp_run(tp_pool *p, tp_fn fn, void *arg);

/* Split [0, n) into nth parts aligned to `align`; returns thread ith's [*lo, *hi). */
void tp_split(long n, int ith, int nth, long align, long *lo, long *hi);

#endif
