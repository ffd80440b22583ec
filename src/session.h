/* session.h - internals shared by the session framework files: the partial-JSON parser
 * behind structured-response snapshots (partial_json.c) and the tool-call syntaxes
 * (session_tools.c: detection from a chat template, parsing, lazy-grammar triggers).
 * The public side is the "Sessions" section of orchard.h, implemented in session.c. */
#ifndef ORC_SESSION_H
#define ORC_SESSION_H

#include "orchard.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The JSON value that the first len bytes of text have begun: unfinished strings,
 * arrays and objects are closed, an unfinished number is cut to its valid prefix, and
 * an unfinished key, literal or member without a value is left out. Returns a new
 * reference, or NULL when no value has started yet (or the text is not JSON). *complete
 * (may be NULL) says whether the value was finished in the text. */
json_t *partial_json_parse(const char *text, size_t len, bool *complete);

/* Guess the tool-call syntax from a chat template's source (NULL: the ChatML fallback,
 * which uses Hermes-style <tool_call> tags). */
orc_tool_syntax tool_syntax_detect(const char *template_src);
const char *tool_syntax_name(orc_tool_syntax syntax);

/* Parse the tool calls in model output. On success returns 0 with *calls a new array of
 * {"name": string, "arguments": object} (empty when the text holds no call) and *content
 * (malloc'd, may be NULL to skip) the text outside them, trimmed. Returns -1 with a
 * message in err when a call has started but is malformed. */
int tool_calls_parse(orc_tool_syntax syntax, const char *text, size_t len, json_t **calls,
                     char **content, char *err, size_t errlen);

/* Where a tool call begins in text (byte offset), or -1. For streaming: text before it
 * is the answer, text after it is withheld. */
long tool_call_start(orc_tool_syntax syntax, const char *text, size_t len);

/* The opening markers of a syntax (NULL-terminated list) - partial matches at the end of
 * streamed text are held back until they resolve. */
const char *const *tool_syntax_markers(orc_tool_syntax syntax);

/* Lazy grammar for tool calls: after `trigger` appears in the output, the text that
 * follows must match the JSON Schema built by tool_grammar_schema (an object per call, or
 * an array of them when `array`), then `closing` is appended. NULL trigger: no grammar
 * for this syntax. */
typedef struct tool_grammar_spec {
    const char *trigger;   /* text that opens a call */
    bool at_start;         /* the trigger counts only at the start of the response */
    bool trigger_in_body;  /* the trigger's text is the first character of the body ("{") */
    const char *args_key;  /* "arguments" or "parameters" */
    bool array;            /* the body is an array of calls */
    const char *closing;   /* text appended after the body (may be "") */
} tool_grammar_spec;
const tool_grammar_spec *tool_grammar_for(orc_tool_syntax syntax);

/* Tests: the next n generation rounds of s produce outputs[i] (evaluated into the cache
 * as if generated) instead of sampling - a scripted model. outputs must outlive them. */
void session_script(orc_session *s, const char *const *outputs, int32_t n);
/* Tests: the next sampled round starts with text as if the model had written it, then
 * the model goes on (through the lazy tool-grammar trigger, stop strings...). */
void session_script_prefix(orc_session *s, const char *text);

#endif
