#!/usr/bin/env bash
# tests/cli_bench.sh ORCHARD SHARED SOURCE - `orchard bench` with a KV cache type and a depth
# (like llama-bench -ctk/-ctv and -d) on stories260K: every (type, depth, pp/tg) combination
# is measured, the JSON names the depth, context size and KV type, a Q8_0 cache takes at most
# 0.56x the bytes per token of F16, the table shows the same, and bad values exit 2.
set -u
bin=$1 shared=$2
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model="$shared/models/stories260K.gguf"

# 1. both KV types at two depths in one run
"$bin" bench -m "$model" -p 16 -n 8 -d 0,48 --kv-type f16,q8_0 -r 2 -t 2 --json >"$tmp/b.json" 2>"$tmp/b.err" \
  || bad "bench --kv-type f16,q8_0 -d 0,48 exited $?: $(cat "$tmp/b.err")"
python3 - "$tmp/b.json" <<'PY' && ok || bad "bench JSON wrong: $(head -c 400 "$tmp/b.json")"
import json, sys
j = json.load(open(sys.argv[1]))
res = j["results"]
want = [(kv, d, t) for kv in ("f16", "q8_0") for d in (0, 48) for t in ("pp", "tg")]
got = [(r["type_k"], r["n_depth"], "pp" if r["n_prompt"] else "tg") for r in res]
assert got == want, got
names = [r["test"] for r in res]
assert names[:4] == ["pp16", "tg8", "pp16 @ d48", "tg8 @ d48"], names
for r in res:
    assert r["type_v"] == r["type_k"], r
    assert r["n_ctx"] >= r["n_depth"] + max(r["n_prompt"], r["n_gen"]), r  # depth + test fits
    assert r["kv_bytes_per_token"] > 0 and r["kv_bytes"] >= r["kv_bytes_per_token"] * r["n_ctx"], r
    assert len(r["samples_ts"]) == 2 and all(s > 0 for s in r["samples_ts"]), r
    assert abs(r["avg_ts"] - sum(r["samples_ts"]) / 2) < 1e-3 * r["avg_ts"] + 1e-3, r
per = {r["type_k"]: r["kv_bytes_per_token"] for r in res}
assert len({r["kv_bytes_per_token"] for r in res if r["type_k"] == "f16"}) == 1
# stories260K: 5 layers, K and V 32 wide: F16 2 bytes/value, Q8_0 34 bytes per 32 values
assert per["f16"] == 5 * 2 * 32 * 2, per
ratio = per["q8_0"] / per["f16"]
assert 0.5 <= ratio <= 0.56, ratio
PY

# 2. llama-bench spellings: -ctk/-ctv q8_0 with -d, generation only
"$bin" bench -m "$model" -p 0 -n 8 -ctk q8_0 -ctv q8_0 -d 100 -r 1 -t 2 --json >"$tmp/q.json" 2>"$tmp/q.err" \
  || bad "bench -ctk q8_0 -ctv q8_0 -d 100 exited $?: $(cat "$tmp/q.err")"
python3 - "$tmp/q.json" <<'PY' && ok || bad "bench -ctk JSON wrong: $(head -c 400 "$tmp/q.json")"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
assert len(r) == 1, r
r = r[0]
assert r["test"] == "tg8 @ d100" and r["n_gen"] == 8 and r["n_depth"] == 100, r
assert r["type_k"] == "q8_0" and r["type_v"] == "q8_0" and r["kv_bytes_per_token"] == 340, r
assert r["n_ctx"] >= 108, r
PY

# 3. the table shows the KV type, bytes per token and the depth
"$bin" bench -m "$model" -p 8 -n 4 -d 32 --kv-type q8_0 -r 1 -t 2 >"$tmp/t.txt" 2>/dev/null || bad "bench table exited $?"
grep -q 'KV bytes/token' "$tmp/t.txt" && grep -q '| q8_0 | 340 | tg4 @ d32 |' "$tmp/t.txt" \
  && grep -q '| q8_0 | 340 | pp8 @ d32 |' "$tmp/t.txt" && ok || bad "bench table: $(cat "$tmp/t.txt")"

# 4. bad values: usage errors, one line, exit 2
for args in "--kv-type q4_0" "--kv-type" "-ctk q8_0 -ctv f16" "-ctv q8_0" "-d -1" "-d 1,,2" "-d x" \
            "--kv-type f16,"; do
  # shellcheck disable=SC2086
  "$bin" bench -m "$model" $args >"$tmp/out" 2>"$tmp/err"
  rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok || bad "'bench $args' exited $rc with $(wc -l <"$tmp/err") lines: $(cat "$tmp/err")"
done

echo "bench: $passes passed, $fails failed"
[ $fails -eq 0 ]
