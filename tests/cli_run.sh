#!/usr/bin/env bash
# tests/cli_run.sh ORCHARD SHARED SOURCE - the orchard command end to end: default-model
# greedy story equals llama.cpp's tokens, --json shape, logits and inspect output, the
# speed report, and exit codes (2 for usage errors, 1 for files that fail to load).
set -u
bin=$1 shared=$2
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. the main job: default model, greedy, tokens identical to the reference
unset ORCHARD_MODEL
"$bin" run --temp 0 -n 48 --json >"$tmp/run.json" 2>"$tmp/run.err" || bad "run --json exited $?"
python3 - "$tmp/run.json" "$shared/reference/generate/stories260K.jsonl" <<'PY' && ok || bad "run --json tokens differ from the reference"
import json, sys
got = json.load(open(sys.argv[1]))
ref = json.loads(open(sys.argv[2]).readline())
assert ref["prompt"] == "Once upon a time"
assert got["prompt_tokens"] == ref["prompt_tokens"], (got["prompt_tokens"], ref["prompt_tokens"])
assert got["tokens"] == ref["greedy_tokens"], (got["tokens"], ref["greedy_tokens"])
assert isinstance(got["text"], str) and len(got["text"]) > 20
PY
grep -q 'tok/s' "$tmp/run.err" && ok || bad "no speed report on stderr"

# streaming text mode prints the prompt and the same story text
"$bin" run --temp 0 -n 48 >"$tmp/run.txt" 2>/dev/null || bad "run exited $?"
python3 - "$tmp/run.txt" "$tmp/run.json" <<'PY' && ok || bad "streamed text differs from --json text"
import json, sys
txt = open(sys.argv[1], encoding="utf-8").read()
j = json.load(open(sys.argv[2]))
assert txt.startswith("Once upon a time"), txt[:40]
assert j["text"].strip() in txt, (j["text"], txt)
PY

# sampling with a seed repeats
a=$("$bin" run --seed 5 --temp 1 -n 20 --json 2>/dev/null)
b=$("$bin" run --seed 5 --temp 1 -n 20 --json 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "same seed gave different output"

# 2. usage errors exit 2 with one line
for args in "run --bogus" "run -n abc" "run -n" "run --temp x" "logits" "logits --tokens 1,x" "inspect" "nosuchcommand"; do
  # shellcheck disable=SC2086
  "$bin" $args >"$tmp/out" 2>"$tmp/err"
  rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok || bad "'$args' exited $rc with $(wc -l <"$tmp/err") lines"
done

# 3. files that fail to load exit 1 with the loader's message
"$bin" run -m /nonexistent.gguf >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'nonexistent.gguf' "$tmp/err" && ok || bad "missing model"
head -c 3000 "$shared/models/stories260K.gguf" >"$tmp/trunc.gguf"
"$bin" run -m "$tmp/trunc.gguf" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'trunc.gguf: .*\(truncated\|past the end\|cannot fit\)' "$tmp/err" && ok || bad "truncated model: $(cat "$tmp/err")"
ORCHARD_MODEL="$tmp/trunc.gguf" "$bin" run >/dev/null 2>&1
[ $? -eq 1 ] && ok || bad "ORCHARD_MODEL is not honoured"

# 4. logits: the reference shape
"$bin" logits -m "$shared/models/stories260K.gguf" --tokens 1,403,407 >"$tmp/logits.json" || bad "logits exited $?"
python3 - "$tmp/logits.json" <<'PY' && ok || bad "logits output shape"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["n_vocab"] == 512 and d["tokens"] == [1, 403, 407]
assert len(d["logits"]) == 3 and all(len(r) == 512 for r in d["logits"])
PY

# 5. inspect, readable and JSON
"$bin" inspect "$shared/models/synthetic/llama-gqa-q4_k_m.gguf" >"$tmp/inspect.txt" || bad "inspect exited $?"
grep -q 'blk.0.attn_q.weight' "$tmp/inspect.txt" && grep -q 'q4_K' "$tmp/inspect.txt" && ok || bad "inspect text"
"$bin" inspect --json "$shared/models/stories260K.gguf" >"$tmp/inspect.json" || bad "inspect --json exited $?"
python3 - "$tmp/inspect.json" <<'PY' && ok || bad "inspect --json content"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["architecture"] == "llama" and d["n_layer"] == 5 and d["n_vocab"] == 512
assert any(m["key"] == "llama.block_count" and m["value"] == "5" for m in d["metadata"])
assert len(d["tensors"]) == 48
PY

# 6. help for every subcommand
for c in run logits inspect tokenize; do
  "$bin" $c --help >/dev/null 2>&1 && ok || bad "$c --help"
done

echo "cli: $passes passed, $fails failed"
[ $fails -eq 0 ]
