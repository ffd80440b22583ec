#!/usr/bin/env bash
# tests/cli_guided.sh ORCHARD SHARED SOURCE - guided generation from the command line:
# `orchard run --json-schema/--regex/--grammar` output parses and validates (Python's
# jsonschema, re, a GBNF-language pattern), stops by itself, fast-forwards forced text and
# honours --pretty; bad schemas, expressions and grammars exit 2 with one line naming the
# problem (the JSON pointer for schemas), unreadable files exit 1, and a -n limit reached
# before the value is complete exits 1.
set -u
bin=$1 shared=$2 src=$3
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset ORCHARD_MODEL
PY=/usr/bin/python3
$PY -c 'import jsonschema' 2>/dev/null || PY=python3
$PY -c 'import jsonschema' 2>/dev/null || { echo "FAIL: python3-jsonschema is required (scripts/install-deps)"; exit 1; }

schema='{"type":"object","properties":{"name":{"type":"string","minLength":1,"maxLength":10},"age":{"type":"integer","minimum":0,"maximum":120},"score":{"type":"number","minimum":0.5,"exclusiveMaximum":2.75},"email":{"type":"string","format":"email"},"tags":{"type":"array","items":{"enum":["a","b","c"]},"maxItems":3}},"required":["name","age","score","email"],"additionalProperties":false}'
echo "$schema" >"$tmp/schema.json"

# validate FILE_WITH_VALUE SCHEMA_FILE: the file holds one JSON value (and a newline)
validate() {
  $PY - "$1" "$2" <<'PY'
import json, sys, jsonschema
v = json.load(open(sys.argv[1], encoding="utf-8"))
s = json.load(open(sys.argv[2]))
jsonschema.Draft202012Validator(s, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(v)
PY
}

# 1. inline schema, default model (stories260K), several seeds, --json: valid, stopped by itself
for seed in 1 2 3; do
  "$bin" run --json-schema "$schema" --seed $seed --temp 1.2 --json >"$tmp/r.json" 2>"$tmp/r.err"
  rc=$?
  $PY - "$tmp/r.json" "$tmp/schema.json" <<'PY' && [ $rc -eq 0 ] && ok || bad "seed $seed: rc $rc, $(cat "$tmp/r.json") $(cat "$tmp/r.err")"
import json, sys, jsonschema
r = json.load(open(sys.argv[1], encoding="utf-8"))
assert r["stop"] in ("grammar", "eos"), r["stop"]
v = json.loads(r["text"])
s = json.load(open(sys.argv[2]))
jsonschema.Draft202012Validator(s, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(v)
assert 0.5 <= v["score"] < 2.75
PY
done
grep -q 'stop: \(grammar\|eos\)' "$tmp/r.err" && grep -q 'forced' "$tmp/r.err" && ok || bad "no stop reason on stderr: $(cat "$tmp/r.err")"

# 2. schema file, random-weight model, streamed text mode: stdout is the value alone
"$bin" run -m "$shared/models/synthetic/llama-gqa-q4_k_m.gguf" --json-schema "$tmp/schema.json" --seed 7 \
  >"$tmp/out.txt" 2>"$tmp/err.txt"
[ $? -eq 0 ] && validate "$tmp/out.txt" "$tmp/schema.json" && ok || bad "schema file on a random model: $(cat "$tmp/out.txt")"

# 3. --pretty: spaced-out JSON, still valid
"$bin" run --json-schema '{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer","minimum":0,"maximum":9},"minItems":2,"maxItems":2}},"required":["a"],"additionalProperties":false}' \
  --pretty --seed 3 >"$tmp/p.txt" 2>/dev/null
echo '{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer","minimum":0,"maximum":9},"minItems":2,"maxItems":2}},"required":["a"],"additionalProperties":false}' >"$tmp/p.schema"
validate "$tmp/p.txt" "$tmp/p.schema" && grep -q '"a": \[[0-9], [0-9]\]' "$tmp/p.txt" && ok || bad "--pretty: $(cat "$tmp/p.txt")"

# 4. a const is forced text: written without sampling, identical for any seed
"$bin" run --json-schema '{"const":{"k":[1,"two",null]}}' --seed 9 >"$tmp/c.txt" 2>"$tmp/c.err"
[ "$(cat "$tmp/c.txt")" = '{"k":[1,"two",null]}' ] && grep -q '(\([1-9][0-9]*\) forced)' "$tmp/c.err" && ok || bad "const: $(cat "$tmp/c.txt") $(cat "$tmp/c.err")"

# 5. --regex: the whole output matches
re='[A-Z][a-z]{2,6}-[0-9]{2,4}'
for seed in 1 2; do
  "$bin" run --regex "$re" --seed $seed --temp 1.0 >"$tmp/re.txt" 2>/dev/null
  $PY - "$tmp/re.txt" "$re" <<'PY' && ok || bad "--regex seed $seed: $(cat "$tmp/re.txt")"
import re, sys
out = open(sys.argv[1], encoding="utf-8").read()
assert out.endswith("\n")
assert re.fullmatch(sys.argv[2], out[:-1], re.ASCII), out
PY
done

# 6. --grammar FILE (GBNF)
"$bin" run -m "$shared/models/synthetic/qwen3-f16.gguf" --grammar "$src/tests/data/guided/csv.gbnf" --seed 4 \
  --json >"$tmp/g.json" 2>/dev/null
$PY - "$tmp/g.json" <<'PY' && ok || bad "--grammar: $(cat "$tmp/g.json")"
import json, re, sys
r = json.load(open(sys.argv[1], encoding="utf-8"))
f = r'([a-z0-9]{1,6}|"[a-z ]{0,8}")'
assert r["stop"] in ("grammar", "eos"), r
assert re.fullmatch(r"(%s(,%s){2}\n){1,3}" % (f, f), r["text"]), r["text"]
PY

# 7. errors: usage errors exit 2 with one line that says what is wrong
check_err() { # expected-rc pattern args...
  local want=$1 pat=$2
  shift 2
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [ $rc -eq "$want" ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q -- "$pat" "$tmp/err" && ok ||
    bad "'$*' exited $rc (want $want) with: $(cat "$tmp/err")"
}
check_err 2 '/properties/age/minimum: must be a number' run --json-schema '{"type":"object","properties":{"age":{"type":"integer","minimum":"x"}}}'
check_err 2 '/properties/a/not: unsupported keyword' run --json-schema '{"properties":{"a":{"not":{}}}}'
check_err 2 '/format: unsupported format' run --json-schema '{"type":"string","format":"bogus"}'
check_err 2 'no number satisfies' run --json-schema '{"type":"number","minimum":2.5,"exclusiveMaximum":2.5}'
check_err 2 'not valid JSON' run --json-schema '{"type":'
check_err 2 -- '--regex: .*missing )' run --regex '(ab'
check_err 2 -- '--regex: .*backreference' run --regex '(a)\1'
printf 'root ::= item\n' >"$tmp/bad.gbnf"
check_err 2 'item' run --grammar "$tmp/bad.gbnf"
check_err 2 'at most one of' run --regex a --json-schema '{}'
check_err 2 'pretty' run --regex a --pretty
check_err 1 'cannot read' run --grammar "$tmp/missing.gbnf"
check_err 1 'cannot read' run --json-schema "$tmp/missing.json"

# 8. a -n limit that cuts the value short is a failure, not silent invalid output
"$bin" run --json-schema "$schema" -n 3 >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'incomplete' "$tmp/err" && ok || bad "-n 3 with a schema: $(cat "$tmp/err")"

"$bin" run --help | grep -q -- '--json-schema' && ok || bad "help lacks --json-schema"

echo "cli_guided: $passes passed, $fails failed"
[ $fails -eq 0 ]
