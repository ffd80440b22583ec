#!/usr/bin/env bash
# tests/cli_chat.sh ORCHARD SHARED SOURCE - `orchard chat` end to end: a scripted session
# from a pipe (answers, multi-line input, /save, /reset, /load, schema answers, exit
# codes) and an interactive one under a pseudo-terminal (line editing and history recall
# with arrow keys, multi-line input, /save, /reset, /load, speed line, /quit).
set -u
bin=$1 shared=$2
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model="$shared/models/stories260K.gguf"

# 1. scripted from a pipe: one answer line per message, the transcript saved and reloaded
printf 'Once upon a time\nTell me \\\nmore\n"""\nline one\nline two\n"""\n/save %s\n/reset\n/load %s\n' \
    "$tmp/t.json" "$tmp/t.json" |
    "$bin" chat -m "$model" -n 12 --temp 0 -s "Be kind." >"$tmp/out.txt" 2>"$tmp/err.txt" || bad "chat exited $?"
[ "$(wc -l <"$tmp/out.txt")" -eq 3 ] && ok || bad "expected 3 answer lines, got: $(cat "$tmp/out.txt")"
python3 - "$tmp/t.json" "$tmp/out.txt" <<'PY' && ok || bad "saved transcript is wrong"
import json, sys
t = json.load(open(sys.argv[1]))
answers = open(sys.argv[2]).read().split("\n")[:3]
e = t["entries"]
assert t["version"] == 1
assert [x["type"] for x in e] == ["instructions"] + ["prompt", "response"] * 3, e
assert e[0]["text"] == "Be kind."
assert e[3]["text"] == "Tell me \nmore" and e[5]["text"] == "line one\nline two"
assert [e[2]["text"], e[4]["text"], e[6]["text"]] == answers, (answers, e)
PY
grep -q '(loaded 7 entries)' "$tmp/err.txt" && ok || bad "/load did not report the entries"
grep -Eq '\[12 tokens, [0-9.]+ tok/s, prompt [0-9]+ \([1-9][0-9]* cached' "$tmp/err.txt" && ok ||
    bad "no speed line with cached tokens: $(cat "$tmp/err.txt")"

# 2. the same conversation continued from the saved file answers like the original would
printf 'What next?\n' | "$bin" chat -m "$model" -n 12 --temp 0 --load "$tmp/t.json" --quiet >"$tmp/a.txt" 2>/dev/null
printf 'Once upon a time\nTell me \\\nmore\n"""\nline one\nline two\n"""\nWhat next?\n' |
    "$bin" chat -m "$model" -n 12 --temp 0 -s "Be kind." --quiet >"$tmp/b.txt" 2>/dev/null
[ "$(cat "$tmp/a.txt")" = "$(tail -n +4 "$tmp/b.txt")" ] && ok || bad "restored session answered differently"

# 3. structured answers
echo '{"type":"object","properties":{"name":{"type":"string","maxLength":8}},"required":["name"]}' >"$tmp/s.json"
printf 'Who is the girl?\n' | "$bin" chat -m "$model" --schema "$tmp/s.json" --temp 0 --quiet >"$tmp/j.txt" 2>/dev/null
python3 -c 'import json,sys; v=json.loads(open(sys.argv[1]).read()); assert isinstance(v["name"], str) and len(v["name"]) <= 8' \
    "$tmp/j.txt" && ok || bad "schema answer is not valid: $(cat "$tmp/j.txt")"

# 4. errors: usage 2, unreadable model 1, context overflow reported (exit 1 when scripted)
"$bin" chat --bogus </dev/null >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "unknown option should exit 2"
"$bin" chat -m "$tmp/none.gguf" </dev/null >/dev/null 2>&1; [ $? -eq 1 ] && ok || bad "missing model should exit 1"
python3 -c 'print("The cat sat. " * 200)' | "$bin" chat -m "$model" -c 64 >/dev/null 2>"$tmp/e.txt"
[ $? -eq 1 ] && grep -q 'needs [0-9]* tokens but the context window holds 64' "$tmp/e.txt" && ok ||
    bad "overflow not reported: $(cat "$tmp/e.txt")"

# 5. interactive, under a pseudo-terminal: libedit line editing and history recall,
#    multi-line input, /save, /reset, /load, the speed line, /quit
python3 - "$bin" "$model" "$tmp" <<'PY' && ok || bad "pseudo-terminal session failed"
import json, os, pty, select, subprocess, sys, time
bin, model, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
master, slave = pty.openpty()
p = subprocess.Popen([bin, "chat", "-m", model, "-n", "8", "--temp", "0"], stdin=slave, stdout=slave, stderr=slave,
                     close_fds=True, env=dict(os.environ, TERM="xterm"))
os.close(slave)
buf = b""
def until(pat, timeout=30):
    """Reads the terminal up to pat; returns what came before it and drops it."""
    global buf
    end = time.time() + timeout
    while pat not in buf:
        r, _, _ = select.select([master], [], [], max(0, end - time.time()))
        if not r:
            raise SystemExit("timed out waiting for %r; got %r" % (pat, buf[-500:]))
        try:
            chunk = os.read(master, 4096)
        except OSError:
            raise SystemExit("closed while waiting for %r; got %r" % (pat, buf[-500:]))
        buf += chunk
    i = buf.index(pat) + len(pat)
    seen, buf = buf[:i], buf[i:]
    return seen
UP, DOWN, LEFT, BACKSPACE = b"\x1b[A", b"\x1b[B", b"\x1b[D", b"\x7f"
def send(keys, answered=True):
    os.write(master, keys)
    if answered:
        until(b"tok/s")
        until(b"> ")
until(b"/help for commands")
until(b"> ")
send(b"Once upon a time\r")
send(UP + b"\r")                         # history: the same message again
send(b"Hllo" + LEFT * 3 + b"e\r")        # left arrow, insertion: "Hello"
send(b"Bx" + BACKSPACE + b"ig dog\r")    # backspace: "Big dog"
send(UP * 3 + DOWN + b"\r")              # up, up, up, down: "Hello"
os.write(master, b"Tell me \\\r")        # a continued line
until(b"... ")
send(b"more\r")
os.write(master, b'"""\r')               # a block
for line in (b"line one\r", b"line two\r"):
    until(b"... ")
    os.write(master, line)
until(b"... ")
send(b'"""\r')
send(b"/save %s/pty.json\r" % tmp.encode(), answered=False)
until(b"(saved to")
send(b"/reset\r", answered=False)
until(b"(conversation cleared)")
send(b"/load %s/pty.json\r" % tmp.encode(), answered=False)
until(b"(loaded 14 entries)")
send(b"/save %s/pty2.json\r" % tmp.encode(), answered=False)
until(b"(saved to")
send(b"/quit\r", answered=False)
assert p.wait(timeout=30) == 0
t = json.load(open(tmp + "/pty.json"))
prompts = [e["text"] for e in t["entries"] if e["type"] == "prompt"]
want = ["Once upon a time", "Once upon a time", "Hello", "Big dog", "Hello", "Tell me \nmore", "line one\nline two"]
assert prompts == want, prompts
assert json.load(open(tmp + "/pty2.json")) == t  # /reset then /load restored the transcript
PY
echo "cli_chat: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
