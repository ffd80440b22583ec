/* bench/membw.c - the read bandwidth a decode step can hope for: T threads each stream
 * their share of a buffer much larger than the last-level cache (anonymous memory with
 * transparent huge pages, as Orchard's repacked weights), summing it with 256-bit loads;
 * best of R passes, in GB/s. Decode reads every weight byte once per token, so
 * tokens/s <= GB/s / model bytes.
 *
 *   cc -O2 -mavx2 -pthread bench/membw.c -o /tmp/membw && /tmp/membw [MiB] [threads] [passes]
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef struct {
    const uint8_t *p;
    size_t n;
    pthread_barrier_t *bar;
    double sum;
} job;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *reader(void *arg)
{
    job *j = arg;
    pthread_barrier_wait(j->bar);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= j->n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(j->p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(j->p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(j->p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(j->p + i + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    int64_t v[4];
    memcpy(v, &a0, sizeof v);
    j->sum = (double)(v[0] + v[1] + v[2] + v[3]);
    pthread_barrier_wait(j->bar);
    return NULL;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    int nt = argc > 2 ? atoi(argv[2]) : 2, passes = argc > 3 ? atoi(argv[3]) : 5;
    if (mib < 1 || nt < 1 || nt > 64 || passes < 1)
        return 2;
    size_t n = mib << 20;
    uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 1;
    madvise(p, n, MADV_HUGEPAGE);
    memset(p, 1, n);
    double best = 0.0, chk = 0.0;
    for (int r = 0; r < passes; r++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)nt + 1);
        pthread_t th[64];
        job jobs[64];
        size_t per = n / (size_t)nt / 128 * 128;
        for (int t = 0; t < nt; t++) {
            jobs[t] = (job){p + (size_t)t * per, per, &bar, 0.0};
            pthread_create(&th[t], NULL, reader, &jobs[t]);
        }
        pthread_barrier_wait(&bar);
        double t0 = now();
        pthread_barrier_wait(&bar);
        double dt = now() - t0;
        for (int t = 0; t < nt; t++) {
            pthread_join(th[t], NULL);
            chk += jobs[t].sum;
        }
        pthread_barrier_destroy(&bar);
        double gbs = (double)per * nt / dt / 1e9;
        best = gbs > best ? gbs : best;
    }
    printf("%zu MiB, %d thread(s): best of %d passes %.1f GB/s (checksum %.0f)\n", mib, nt, passes,
           best, chk);
    munmap(p, n);
    return 0;
}
