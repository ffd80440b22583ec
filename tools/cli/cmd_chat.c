/* cmd_chat.c - `orchard chat`: an interactive conversation with a model through the
 * session API (orc_session): streamed answers, token speed, /reset, /save and /load of
 * the transcript, multi-line input, structured answers with --schema. On a terminal,
 * lines are edited with libedit (arrow keys, history recall with up/down); from a pipe
 * it reads scripts just as well (one message per line, no prompts). */
#include "cli.h"

#include <editline/readline.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *CHAT_HELP =
    "usage: orchard chat [-m MODEL] [--system TEXT] [--schema FILE] [options]\n"
    "\n"
    "Talks with a model. Each line is a message; end a line with \\ to continue it on the\n"
    "next, or enclose several lines between two lines of \"\"\". Ctrl-C stops an answer.\n"
    "On a terminal, lines can be edited (arrow keys, Ctrl-A/E...) and up/down recall\n"
    "earlier lines (libedit; settings in ~/.editrc).\n"
    "Commands: /reset  /save FILE  /load FILE  /history  /tokens TEXT  /help  /quit\n"
    "\n"
    "  -m, --model PATH        GGUF model (default: $ORCHARD_MODEL, else the bundled stories260K)\n"
    "  -s, --system TEXT       instructions (the system prompt)\n"
    "      --schema FILE       answer every message with JSON following this JSON Schema\n"
    "  -c, --ctx-size N        context window (default: training length, at most 4096)\n"
    "  -n, --max-tokens N      most tokens per answer (default 512)\n"
    "  -t, --threads N         threads (default: all cores)\n"
    "      --temp T            temperature; 0 = greedy (default 0.8)\n"
    "      --top-k K, --top-p P, --min-p P, --seed S\n"
    "      --stop TEXT         a stop string (repeatable)\n"
    "      --policy P          when the window is full: fail (default), drop, summarize\n"
    "      --load FILE         start from a saved transcript\n"
    "      --quiet             no banner or statistics\n";

static orc_session *g_session;

static void on_sigint(int sig)
{
    (void)sig;
    if (g_session)
        orc_session_cancel(g_session);
}

static bool print_delta(const char *d, size_t n, void *user)
{
    (void)user;
    fwrite(d, 1, n, stdout);
    fflush(stdout);
    return true;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    if (b)
        b[n] = 0;
    return b;
}

/* The next input line without its line end (malloc'd), NULL at the end of the input. On
 * a terminal the line is edited with libedit and, when not empty, added to the history
 * that up/down recall. */
static char *next_line(bool tty, const char *prompt)
{
    if (tty) {
        static bool ready;
        if (!ready) {
            rl_readline_name = "orchard";
            rl_instream = stdin;
            rl_outstream = stderr; /* stdout holds only the answers */
            using_history();
            ready = true;
        }
        char *l = readline(prompt);
        if (l && l[0])
            add_history(l);
        return l;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, stdin);
    if (len < 0) {
        free(line);
        return NULL;
    }
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = 0;
    return line;
}

/* One message: a line, lines joined by trailing backslashes, or a """ block. NULL at EOF. */
static char *read_message(bool tty)
{
    size_t cap = 256, n = 0;
    char *msg = malloc(cap);
    if (!msg)
        return NULL;
    msg[0] = 0;
    bool block = false, any = false;
    char *line = NULL;
    for (;;) {
        free(line);
        line = next_line(tty, n || block ? "... " : "> ");
        if (!line)
            break;
        any = true;
        size_t len = strlen(line);
        bool fence = !strcmp(line, "\"\"\"");
        if (fence && !block && n == 0) {
            block = true;
            continue;
        }
        if (fence && block)
            break;
        bool cont = !block && len > 0 && line[len - 1] == '\\';
        if (cont)
            line[--len] = 0;
        if (n + (size_t)len + 2 > cap) {
            while (n + (size_t)len + 2 > cap)
                cap *= 2;
            char *nm = realloc(msg, cap);
            if (!nm)
                break;
            msg = nm;
        }
        if (n)
            msg[n++] = '\n';
        memcpy(msg + n, line, (size_t)len);
        n += (size_t)len;
        msg[n] = 0;
        if (!block && !cont)
            break;
    }
    free(line);
    if (!any) {
        free(msg);
        return NULL;
    }
    return msg;
}

int cmd_chat(int argc, char **argv)
{
    const char *C = "chat";
    const char *model_path = NULL, *system = NULL, *schema_path = NULL, *load_path = NULL;
    int32_t n_ctx = 0, n_threads = 0;
    bool quiet = false;
    const char *stops[16];
    int32_t n_stops = 0;
    orc_session_params p = orc_session_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(CHAT_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "-s") || !strcmp(a, "--system")) {
            system = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--schema")) {
            schema_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--load")) {
            load_path = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            n_ctx = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 24);
        } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            p.defaults.max_tokens = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 24);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            n_threads = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 1, 1024);
        } else if (!strcmp(a, "--temp")) {
            p.defaults.sampler.temperature = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--top-k")) {
            p.defaults.sampler.top_k = (int32_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, 1 << 24);
        } else if (!strcmp(a, "--top-p")) {
            p.defaults.sampler.top_p = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--min-p")) {
            p.defaults.sampler.min_p = (float)cli_float(C, a, cli_value(C, argc, argv, &i));
        } else if (!strcmp(a, "--seed")) {
            p.defaults.sampler.seed = (uint64_t)cli_int(C, a, cli_value(C, argc, argv, &i), 0, INT64_MAX);
        } else if (!strcmp(a, "--stop")) {
            if (n_stops == 16)
                cli_usage_error(C, "at most 16 --stop strings");
            stops[n_stops++] = cli_value(C, argc, argv, &i);
        } else if (!strcmp(a, "--policy")) {
            const char *v = cli_value(C, argc, argv, &i);
            if (!strcmp(v, "fail"))
                p.policy = ORC_CONTEXT_FAIL;
            else if (!strcmp(v, "drop"))
                p.policy = ORC_CONTEXT_DROP_OLDEST;
            else if (!strcmp(v, "summarize"))
                p.policy = ORC_CONTEXT_SUMMARIZE;
            else
                cli_usage_error(C, "--policy must be fail, drop or summarize");
        } else if (!strcmp(a, "--quiet")) {
            quiet = true;
        } else {
            cli_usage_error(C, "unknown option '%s'", a);
        }
    }
    char *schema = NULL;
    if (schema_path && !(schema = read_file(schema_path))) {
        fprintf(stderr, "orchard chat: cannot read %s\n", schema_path);
        return CLI_EXIT_FAIL;
    }
    if (!model_path)
        model_path = cli_default_model();
    orc_model *m = cli_load_model(C, model_path, n_threads);
    p.instructions = system;
    p.context.n_ctx = n_ctx;
    p.context.n_threads = n_threads;
    p.defaults.stop = stops;
    p.defaults.n_stop = n_stops;
    orc_session *s = NULL;
    int rc = CLI_EXIT_FAIL;
    if (orc_session_new(m, &p, &s) != ORC_OK) {
        fprintf(stderr, "orchard chat: %s\n", orc_last_error());
        goto done;
    }
    if (load_path) {
        char *t = read_file(load_path);
        orc_status st = t ? orc_session_load_transcript(s, t) : ORC_ERR_IO;
        free(t);
        if (st != ORC_OK) {
            fprintf(stderr, "orchard chat: cannot load %s: %s\n", load_path, t ? orc_last_error() : "unreadable");
            goto done;
        }
    }
    g_session = s;
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    bool tty = isatty(0) && isatty(2);
    if (tty && !quiet)
        fprintf(stderr, "orchard chat: %s, context %d tokens. /help for commands, Ctrl-D to leave.\n",
                orc_model_name(m)[0] ? orc_model_name(m) : orc_model_arch(m), orc_session_n_ctx(s));
    rc = 0;
    char *msg;
    while ((msg = read_message(tty))) {
        if (!msg[0]) {
            free(msg);
            continue;
        }
        if (msg[0] == '/') {
            char *arg = strchr(msg, ' ');
            if (arg)
                *arg++ = 0;
            if (!strcmp(msg, "/quit") || !strcmp(msg, "/exit")) {
                free(msg);
                break;
            } else if (!strcmp(msg, "/help")) {
                fputs(CHAT_HELP, stderr);
            } else if (!strcmp(msg, "/reset")) {
                orc_session_reset(s);
                fprintf(stderr, "(conversation cleared)\n");
            } else if (!strcmp(msg, "/save") || !strcmp(msg, "/load") || !strcmp(msg, "/history")) {
                char *js = NULL;
                if (!strcmp(msg, "/load")) {
                    char *t = arg ? read_file(arg) : NULL;
                    if (!t)
                        fprintf(stderr, "(cannot read '%s')\n", arg ? arg : "");
                    else if (orc_session_load_transcript(s, t) != ORC_OK)
                        fprintf(stderr, "(not a transcript: %s)\n", orc_last_error());
                    else
                        fprintf(stderr, "(loaded %d entries)\n", orc_session_n_entries(s));
                    free(t);
                } else if (orc_session_transcript_json(s, &js) == ORC_OK) {
                    if (!strcmp(msg, "/history")) {
                        fputs(js, stdout);
                        fputc('\n', stdout);
                    } else {
                        FILE *f = arg ? fopen(arg, "w") : NULL;
                        if (!f || fputs(js, f) < 0 || fclose(f) != 0)
                            fprintf(stderr, "(cannot write '%s')\n", arg ? arg : "");
                        else
                            fprintf(stderr, "(saved to %s)\n", arg);
                    }
                    orc_free(js);
                }
            } else if (!strcmp(msg, "/tokens")) {
                int32_t n = 0;
                if (orc_session_count_tokens(s, arg ? arg : "", &n) == ORC_OK)
                    fprintf(stderr, "(a request with that message would use %d of %d tokens)\n", n, orc_session_n_ctx(s));
            } else {
                fprintf(stderr, "(unknown command %s; /help lists them)\n", msg);
            }
            free(msg);
            continue;
        }
        orc_request r = orc_request_default();
        r.prompt = msg;
        r.schema = schema;
        r.on_delta = print_delta;
        char *out = NULL;
        orc_response_stats st;
        orc_status status = orc_session_respond_ex(s, &r, &out, &st);
        fputc('\n', stdout);
        fflush(stdout);
        if (status != ORC_OK && status != ORC_ERR_CANCELLED) {
            fprintf(stderr, "orchard chat: %s\n", orc_last_error());
            if (!tty)
                rc = CLI_EXIT_FAIL;
        } else if (!quiet) {
            double gen_s = st.generate_ms / 1000.0;
            fprintf(stderr, "[%d tokens, %.1f tok/s, prompt %d (%d cached, %d evaluated in %.0f ms)%s]\n",
                    st.n_generated, gen_s > 0 ? st.n_generated / gen_s : 0.0, st.n_prompt, st.n_cached,
                    st.n_evaluated, st.prompt_ms, status == ORC_ERR_CANCELLED ? ", stopped" : "");
        }
        orc_free(out);
        free(msg);
    }
done:
    g_session = NULL;
    orc_session_free(s);
    orc_model_free(m);
    free(schema);
    return rc;
}
