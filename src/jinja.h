/* jinja.h - a sandboxed Jinja2 template engine for chat templates: parses a template
 * once into an AST, then renders it against a JSON context with Python jinja2 semantics
 * as Hugging Face configures them (trim_blocks, lstrip_blocks, loop controls). */
#ifndef ORC_JINJA_H
#define ORC_JINJA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jinja_template jinja_template;

typedef struct jinja_options {
    bool trim_blocks;           /* drop the first newline after a block/comment tag */
    bool lstrip_blocks;         /* strip spaces/tabs before a block/comment tag at line start */
    bool keep_trailing_newline; /* false (jinja2 default): one trailing newline is removed */
    uint32_t max_nesting;       /* parse nesting limit (expressions + blocks); 0 = 256 */
} jinja_options;

/* Hugging Face's settings: trim_blocks and lstrip_blocks on. */
jinja_options jinja_default_options(void);

typedef struct jinja_render_options {
    int64_t now;               /* seconds since the epoch (UTC) that strftime_now sees; -1 = real clock */
    const char *bos_token;     /* if non-NULL, defines `bos_token` (the context may override) */
    const char *eos_token;     /* if non-NULL, defines `eos_token` */
    size_t max_output;         /* bytes of output; 0 = 64 MiB */
    size_t max_memory;         /* bytes of scratch memory for values; 0 = 256 MiB */
    uint64_t max_iterations;   /* total loop iterations and range() length; 0 = 1,000,000 */
    uint32_t max_call_depth;   /* nested macro calls; 0 = 64 */
} jinja_render_options;

jinja_render_options jinja_default_render_options(void);

/* Parses template source (len bytes, need not be NUL-terminated). opt NULL = defaults.
 * Returns NULL on error and writes "line L, column C: message" into err (if errlen > 0).
 * The result is immutable and may be rendered from several threads at once. */
jinja_template *jinja_parse(const char *src, size_t len, const jinja_options *opt,
                            char *err, size_t errlen);

/* Renders with the variables of `context` (a JSON object, may be NULL) plus the globals
 * range, namespace, dict, raise_exception, strftime_now, cycler, joiner.
 * On success returns 0 and sets *out to a malloc'd NUL-terminated string (free() it)
 * and *out_len (may be NULL) to its length. On error returns -1, *out = NULL, and err
 * holds a message such as "TemplateError: ..." or "UndefinedError: ...". */
int jinja_render(const jinja_template *t, const json_t *context, const jinja_render_options *ro,
                 char **out, size_t *out_len, char *err, size_t errlen);

/* Frees a template; NULL is a no-op. */
void jinja_free(jinja_template *t);

#endif
