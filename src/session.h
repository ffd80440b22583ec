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
/* The same with the session's tools (OpenAI form, may be NULL), which decide how values of
 * XML-style syntaxes (GLM, Qwen3-Coder) are read: string parameters as the raw text, the
 * others as JSON. partial: the text may stop inside a call (streaming) - an unfinished
 * JSON value counts as far as it goes (partial_json_parse), an unfinished XML value loses
 * a half-written closing tag, and a call whose name has not started is left out. */
int tool_calls_parse_ex(orc_tool_syntax syntax, const char *text, size_t len, const json_t *tools,
                        bool partial, json_t **calls, char **content, char *err, size_t errlen);

/* Whether a parameter of an XML-style call is written as raw text: its schema has type
 * "string", or no type and a string const or an enum of strings. */
bool tool_xml_raw_string(const json_t *schema);

/* Where a tool call begins in text (byte offset), or -1. For streaming: text before it
 * is the answer, text after it is withheld. */
long tool_call_start(orc_tool_syntax syntax, const char *text, size_t len);

/* The opening markers of a syntax (NULL-terminated list) - partial matches at the end of
 * streamed text are held back until they resolve. */
const char *const *tool_syntax_markers(orc_tool_syntax syntax);

/* Variants of a syntax that write calls differently: the parsers read every variant,
 * the grammars follow the one the chat template uses. */
enum {
    TOOL_VARIANT_DEFAULT = 0,
    TOOL_VARIANT_MISTRAL_NAME_ARGS = 1, /* [TOOL_CALLS]name[ARGS]{..} (Small 3.2, Devstral, Ministral 3) */
    TOOL_VARIANT_FUNCTIONARY_V31 = 1,   /* <function=name>{..}</function> */
    TOOL_VARIANT_DEEPSEEK_R1 = 1        /* function<｜tool▁sep｜>name\n```json\n{..}\n``` (V3, R1) */
};
int tool_syntax_variant(orc_tool_syntax syntax, const char *template_src);

/* Lazy grammar for tool calls: generation is free until `trigger` appears in the output;
 * then the text that follows must match the grammar of tool_grammar_gbnf (rule "root"),
 * and `closing` is appended when it is complete. A required call writes `force` (NULL:
 * the trigger) and follows rule "call". NULL spec: no grammar for this syntax. */
typedef struct tool_grammar_spec {
    const char *trigger;   /* text that opens a call */
    bool at_start;         /* the trigger counts only at the start of the response */
    bool trigger_in_body;  /* the trigger's text is the first character of the body ("{") */
    bool from_start;       /* the grammar also applies from the first token (functionary v3.2's
                              recipient line: a tool name or "all") */
    const char *force;     /* what a required call starts with (NULL: the trigger) */
    const char *closing;   /* text appended after the body (may be "") */
    bool end_round;        /* a call ends the model's turn (gpt-oss <|call|>) */
} tool_grammar_spec;
const tool_grammar_spec *tool_grammar_for(orc_tool_syntax syntax, int variant);

/* The GBNF that constrains the calls of a syntax to the tools (OpenAI form: [{"type":
 * "function", "function": {"name", "description", "parameters"}}]): rule "root" for the
 * text after the trigger, rule "call" for a required call. Arguments follow each tool's
 * JSON Schema (XML-style syntaxes: string parameters as raw text that never holds a
 * closing tag, the others as JSON). NULL with a message when a schema has no such form. */
char *tool_grammar_gbnf(orc_tool_syntax syntax, int variant, const json_t *tools, char *err,
                        size_t errlen);

/* Tests: the next n generation rounds of s produce outputs[i] (evaluated into the cache
 * as if generated) instead of sampling - a scripted model. outputs must outlive them. */
void session_script(orc_session *s, const char *const *outputs, int32_t n);
/* Tests: the next sampled round starts with text as if the model had written it, then
 * the model goes on (through the lazy tool-grammar trigger, stop strings...). */
void session_script_prefix(orc_session *s, const char *text);

#endif
