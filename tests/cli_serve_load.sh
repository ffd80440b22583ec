#!/usr/bin/env bash
# tests/cli_serve_load.sh ORCHARD SHARED SOURCE - a bounded loopback load test of
# `orchard serve` driven by bench/serve-load.js (Node): N concurrent streaming clients, then
# one, each phase for LOAD_SECONDS (default 6; the issue's full run is LOAD_SECONDS=60
# LOAD_CLIENTS=8 LOAD_THREADS=2 LOAD_MIN_GAIN=2 ORCHARD_LOAD_MODEL=a 1B model, see
# bench/run-serve-load). Asserts no errors, every request's usage reported, flat memory, and
# the batching gain when LOAD_MIN_GAIN is set (a 260K model is compute-bound: batching
# cannot help it); prints aggregate generated tokens/s and TTFT for both phases.
# Skipped without node unless ORC_REQUIRE_NODE=1 (.ci/run sets it).
set -u
bin=$(realpath "$1") shared=$2 src=$3
secs=${LOAD_SECONDS:-6} clients=${LOAD_CLIENTS:-8}
model=${ORCHARD_LOAD_MODEL:-$shared/models/stories260K.gguf}
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
if ! command -v node >/dev/null; then
  [ "${ORC_REQUIRE_NODE:-0}" = 1 ] && { echo "FAIL: node is not installed"; echo "serve: 0 passed, 1 failed"; exit 1; }
  echo "serve: 0 passed, 0 failed (skipped: node not installed)"
  exit 0
fi
tmp=$(mktemp -d)
spid=""
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT
"$bin" serve -m "$model" --port 0 --parallel "$clients" --ctx-size 1024 --quiet ${LOAD_THREADS:+-t $LOAD_THREADS} >/dev/null 2>"$tmp/log" &
spid=$!
PORT=""
for _ in $(seq 600); do
  PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/log")
  [ -n "$PORT" ] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.1
done
[ -n "$PORT" ] || { cat "$tmp/log"; echo "serve: 0 passed, 1 failed"; exit 1; }

node "$src/bench/serve-load.js" --url "http://127.0.0.1:$PORT" --pid "$spid" --phases "$clients,1" \
  --seconds "$secs" --max-tokens "${LOAD_MAX_TOKENS:-128}" --label load --json "$tmp/r.json" >/dev/null 2>"$tmp/err"
cat "$tmp/err"
# memory stays flat: no more than 10% + 16 MiB above the RSS after the warm-up. Under ASan the
# allocator's quarantine holds freed memory on purpose, so RSS says nothing there (leaks are
# LeakSanitizer's job in that build).
asan=0
grep -q '^ORC_SANITIZE:BOOL=ON' "$(dirname "$bin")/CMakeCache.txt" 2>/dev/null && asan=1
python3 - "$tmp/r.json" "$asan" "${LOAD_MIN_GAIN:-}" >"$tmp/out" 2>&1 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
asan, min_gain = sys.argv[2] == "1", sys.argv[3]
passes = fails = 0
def check(cond, what):
    global passes, fails
    if cond: passes += 1
    else:
        fails += 1
        print("FAIL:", what)
ph = d["phases"]
check(all(p["errors"] == 0 and p["requests"] > 0 for p in ph), "errors/requests %r" % [(p["errors"], p["requests"], p["error_examples"]) for p in ph])
check(all(p["requests_without_usage"] == 0 for p in ph), "requests without a usage chunk")
m0 = ph[0]["rss_kib"]["first"]
top = max(p["rss_kib"]["max"] for p in ph)
if asan:
    print("load: RSS check skipped under sanitizers")
else:
    check(m0 > 0 and top <= m0 + m0 // 10 + 16384, "RSS grew from %d to %d KiB" % (m0, top))
print("load: %d clients %.1f tok/s aggregate | 1 client %.1f tok/s | x%.2f | RSS %d -> %d KiB (max %d)"
      % (ph[0]["clients"], ph[0]["tok_per_s"], ph[1]["tok_per_s"], d["gain"] or 0, m0, ph[-1]["rss_kib"]["last"], top))
if min_gain:
    check((d["gain"] or 0) >= float(min_gain), "batching gain x%.2f < x%s" % (d["gain"] or 0, min_gain))
print("PY %d %d" % (passes, fails))
PY
grep -v '^PY ' "$tmp/out"
read -r _ pp pf < <(grep '^PY ' "$tmp/out" || echo "PY 0 1")
passes=$((passes + pp)) fails=$((fails + pf))
kill -TERM "$spid"; wait "$spid"; [ $? -eq 0 ] && ok || bad "server exit status"
spid=""
echo "serve: $passes passed, $fails failed"
[ $fails -eq 0 ]
