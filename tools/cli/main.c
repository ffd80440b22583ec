/* main.c - the orchard command: dispatches to subcommands. */
#include "orchard.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--version")) {
        printf("orchard %s\n", orc_version_string());
        return 0;
    }
    fprintf(stderr, "orchard: unknown command '%s'\n", argv[1]);
    return 2;
}
