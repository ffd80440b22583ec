/* main.c - the orchard command: dispatches to subcommands (orchard SUBCOMMAND --help). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "generate text from a prompt (default: a story from the bundled model)"},
    {"chat", cmd_chat, "talk with a model: streamed answers, /save, /load, /reset, --schema"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"logits", cmd_logits, "evaluate token ids and print the logits at every position"},
    {"inspect", cmd_inspect, "print a model's metadata and tensor table"},
    {"template", cmd_template, "render a chat template with a JSON context"},
    {"quantize", cmd_quantize, "convert a model's weights to another type (q4_0, q8_0, q4_k_m...)"},
    {"bench", cmd_bench, "measure prompt-processing and generation speed (like llama-bench)"},
    {"serve", cmd_serve, "serve the model over an OpenAI-compatible HTTP API"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: orchard SUBCOMMAND [OPTIONS]   (orchard SUBCOMMAND --help for details)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "version", "print the version");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("orchard %s (library %s)\n", ORC_VERSION_STRING, orc_version_string());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "orchard: unknown subcommand '%s' (see 'orchard --help')\n", cmd);
    return CLI_EXIT_USAGE;
}
