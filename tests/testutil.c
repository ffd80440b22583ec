/* testutil.c - fixture paths and file/JSON loading for the tests. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

const char *tu_shared(const char *rel)
{
    static char bufs[8][4096];
    static int slot;
    char *b = bufs[slot++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", ORC_SHARED_DIR, rel);
    return b;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    rewind(f);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

json_t *tu_load_json(const char *path)
{
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j)
        fprintf(stderr, "%s:%d: %s\n", path, e.line, e.text);
    return j;
}

double tu_rel_maxdiff(const float *got, const double *ref, size_t n)
{
    double mean = 0, var = 0, maxd = 0;
    for (size_t i = 0; i < n; i++)
        mean += ref[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) {
        var += (ref[i] - mean) * (ref[i] - mean);
        double d = fabs((double)got[i] - ref[i]);
        if (d > maxd || isnan(d))
            maxd = isnan(d) ? INFINITY : d;
    }
    double sd = sqrt(var / (double)n);
    return maxd / (sd > 0 ? sd : 1);
}
