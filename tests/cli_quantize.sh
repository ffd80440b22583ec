#!/usr/bin/env bash
# tests/cli_quantize.sh ORCHARD SHARED SOURCE - `orchard quantize` and `orchard bench` end to
# end on the small synthetic models: the quantized files load and evaluate, tensor types and
# general.file_type are what the recipe says, bench --json has the documented shape with
# positive rates, and bad input exits 2 (usage) or 1 (files) with a one-line message.
set -u
bin=$1 shared=$2
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src="$shared/models/synthetic/llama-gqa-f32.gguf"
ref="$shared/reference/logits/llama-gqa-f32.json"
tokens=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["tokens"])))' "$ref")

# 1. quantize to three types; inspect shows the recipe; the logits stay close to F32
for t in q8_0 q4_0 q4_k_m; do
  if "$bin" quantize "$src" "$tmp/$t.gguf" "$t" -t 2 2>"$tmp/q.err"; then ok; else bad "quantize $t exited $?: $(cat "$tmp/q.err")"; continue; fi
  grep -q "$t" "$tmp/q.err" && ok || bad "quantize $t printed no summary"
  "$bin" inspect "$tmp/$t.gguf" --json >"$tmp/$t.json" 2>/dev/null || bad "inspect $t exited $?"
  "$bin" logits -m "$tmp/$t.gguf" --tokens "$tokens" >"$tmp/$t.logits" 2>/dev/null || bad "logits $t exited $?"
  python3 - "$t" "$tmp/$t.json" "$tmp/$t.logits" "$ref" <<'PY' && ok || bad "$t: types or logits wrong"
import json, sys, statistics
t, info, logits, ref = sys.argv[1:]
want = {"q8_0": ("7", "q8_0", "q8_0"), "q4_0": ("2", "q4_0", "q6_K"), "q4_k_m": ("15", "q4_K", "q6_K")}[t]
text = open(info).read()
j = json.loads(text)
def find(o, key):
    """first value of key anywhere in the inspect JSON"""
    if isinstance(o, dict):
        if key in o: return o[key]
        o = list(o.values())
    if isinstance(o, list):
        for v in o:
            r = find(v, key)
            if r is not None: return r
    return None
tensors = find(j, "tensors")
assert isinstance(tensors, list) and tensors, "no tensor table"
types = {x["name"]: x["type"] for x in tensors}
assert types["output.weight"] == want[2], types["output.weight"]
assert types["blk.0.attn_q.weight"] == want[1], types["blk.0.attn_q.weight"]
assert all(v == "f32" for k, v in types.items() if k.endswith("norm.weight")), types
meta = {x["key"]: x["value"] for x in j["metadata"]}
assert meta["general.file_type"] == want[0], meta["general.file_type"]
got = json.load(open(logits))["logits"]
exp = json.load(open(ref))["logits"]
bound = {"q8_0": 0.1, "q4_0": 0.9, "q4_k_m": 0.9}[t]
errs = []
for g, e in zip(got, exp):
    sd = statistics.pstdev(e)
    errs.append(max(abs(a - b) for a, b in zip(g, e)) / sd)
m = sum(errs) / len(errs)
assert m <= bound, (t, m)
PY
done

# 2. bench --json: shape and positive rates; the table mode prints both tests
"$bin" bench -m "$tmp/q4_0.gguf" -p 32 -n 8 -r 2 -t 2 --json >"$tmp/bench.json" 2>"$tmp/bench.err" || bad "bench --json exited $?"
python3 - "$tmp/bench.json" <<'PY' && ok || bad "bench --json output wrong: $(head -c 300 "$tmp/bench.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["n_threads"] == 2 and j["reps"] == 2 and j["type"] == "Q4_0" and j["arch"] == "llama"
assert j["size_bytes"] > 0 and j["n_params"] > 0
r = {x["test"]: x for x in j["results"]}
assert set(r) == {"pp32", "tg8"}, r.keys()
assert r["pp32"]["n_prompt"] == 32 and r["tg8"]["n_gen"] == 8
for x in r.values():
    assert len(x["samples_ts"]) == 2 and all(s > 0 for s in x["samples_ts"])
    assert abs(x["avg_ts"] - sum(x["samples_ts"]) / 2) < 1e-3 * x["avg_ts"] + 1e-3
    assert x["stddev_ts"] >= 0
PY
"$bin" bench -m "$tmp/q4_k_m.gguf" -p 16 -n 4 -r 1 >"$tmp/bench.txt" 2>/dev/null || bad "bench exited $?"
grep -q '| pp16 |' "$tmp/bench.txt" && grep -q '| tg4 |' "$tmp/bench.txt" && grep -q 'Q4_K_M' "$tmp/bench.txt" && ok || bad "bench table: $(cat "$tmp/bench.txt")"
"$bin" bench -m "$tmp/q8_0.gguf" -p 0 -n 4 -r 1 --json >"$tmp/tg.json" 2>/dev/null && python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert [x["test"] for x in j["results"]]==["tg4"]' "$tmp/tg.json" && ok || bad "bench -p 0 should run only tg"

# 3. usage errors exit 2 with one line; files that fail exit 1 with one line
for args in "quantize" "quantize a b" "quantize $src $tmp/x.gguf q9_9" "quantize $src $tmp/x.gguf q4_0 -t 0" \
            "quantize $src $tmp/x.gguf q4_0 --bogus" "bench --bogus" "bench -p x" "bench -p 0 -n 0" "bench -r 0"; do
  # shellcheck disable=SC2086
  "$bin" $args >"$tmp/out" 2>"$tmp/err"
  rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok || bad "'$args' exited $rc with $(wc -l <"$tmp/err") lines: $(cat "$tmp/err")"
done
[ ! -e "$tmp/x.gguf" ] && ok || bad "a failed quantize left an output file"
for args in "quantize /nonexistent.gguf $tmp/y.gguf q4_0" "quantize $shared/README.md $tmp/y.gguf q4_0" \
            "quantize $src /nonexistent-dir/y.gguf q4_0" "bench -m /nonexistent.gguf"; do
  # shellcheck disable=SC2086
  "$bin" $args >"$tmp/out" 2>"$tmp/err"
  rc=$?
  [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok || bad "'$args' exited $rc with $(wc -l <"$tmp/err") lines: $(cat "$tmp/err")"
done

echo "quantize: $passes passed, $fails failed"
[ $fails -eq 0 ]
