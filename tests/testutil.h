/* testutil.h - small helpers shared by the tests: fixture paths and file/JSON loading. */
#ifndef ORC_TESTUTIL_H
#define ORC_TESTUTIL_H

#include <jansson.h>
#include <stddef.h>

/* ORC_SHARED_DIR "/" rel, in a static buffer rotated over 8 slots. */
const char *tu_shared(const char *rel);
/* Whole file, NUL-terminated, malloc'd; NULL when unreadable. */
char *tu_read_file(const char *path, size_t *len);
/* Parsed JSON file, or NULL (and a message on stderr). */
json_t *tu_load_json(const char *path);
/* Max |a-b| over n floats divided by the standard deviation of ref. */
double tu_rel_maxdiff(const float *got, const double *ref, size_t n);

#endif
