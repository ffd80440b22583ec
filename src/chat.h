/* chat.h - the chat layer: renders a conversation (messages, tools, generation prompt)
 * into the prompt text a model expects, with the model's own Jinja chat template
 * (tokenizer.chat_template) and BOS/EOS strings, or a ChatML fallback. Built on jinja.h. */
#ifndef ORC_CHAT_H
#define ORC_CHAT_H

#include "gguf.h"
#include "orchard.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct orc_chat_template orc_chat_template;

/* Parses a chat template once for many renders. src NULL selects the ChatML fallback. bos/eos may be NULL (then `bos_token`/`eos_token` are ""); they are copied.
 * Returns NULL with a message ("line L, column C: ...") in err on a syntax error. */
orc_chat_template *orc_chat_template_new(const char *src, const char *bos, const char *eos, char *err,
                                         size_t errlen);

/* From a model file: tokenizer.chat_template (ChatML when absent) and the BOS/EOS token
 * strings looked up through tokenizer.ggml.{bos,eos}_token_id in tokenizer.ggml.tokens. */
orc_chat_template *orc_chat_template_from_gguf(const gguf_ctx *g, char *err, size_t errlen);

void orc_chat_template_free(orc_chat_template *t);

/* True when the template is the built-in ChatML fallback. */
bool orc_chat_template_is_fallback(const orc_chat_template *t);

/* The BOS / EOS strings the template sees (never NULL; valid until the template is freed). */
const char *orc_chat_template_bos(const orc_chat_template *t);
const char *orc_chat_template_eos(const orc_chat_template *t);

typedef struct orc_chat_input {
    const json_t *messages;      /* array of {role, content, [tool_calls], [tool_call_id], ...}; required */
    const json_t *tools;         /* array of tool definitions, or NULL */
    bool add_generation_prompt;  /* end with the assistant turn header */
    const json_t *extra_context; /* object of further template variables (enable_thinking, ...), or NULL */
    int64_t now;                 /* seconds since the epoch (UTC) for strftime_now; -1 = real clock */
} orc_chat_input;

/* Renders. On success returns 0, *out is malloc'd (free()) and NUL-terminated, *out_len
 * (may be NULL) its length. On error (bad messages, template raised, limits) returns -1
 * with *out NULL and the message in err. */
int orc_chat_template_apply(const orc_chat_template *t, const orc_chat_input *in, char **out, size_t *out_len,
                            char *err, size_t errlen);

/* One-shot: parse template_src (NULL = ChatML), render, free. */
int orc_chat_render(const char *template_src, const json_t *messages, const json_t *tools,
                    bool add_generation_prompt, const char *bos, const char *eos,
                    const json_t *extra_context, char **out, char *err, size_t errlen);

/* The ChatML fallback template source. */
const char *orc_chat_chatml_template(void);

/* The public entry points (orc_chat_template_from_model/from_source/set_tokens/render,
 * orc_chat_apply) are declared in orchard.h and implemented in chat.c. */

#endif
