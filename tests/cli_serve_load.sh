#!/usr/bin/env bash
# tests/cli_serve_load.sh ORCHARD SHARED SOURCE - a bounded loopback load test of
# `orchard serve`: one streaming client, then N concurrent streaming clients, each for
# LOAD_SECONDS (default 6; the issue's full run is LOAD_SECONDS=60 LOAD_CLIENTS=8 with
# ORCHARD_LOAD_MODEL=a 1B model, LOAD_MIN_GAIN=2). Asserts no errors and flat memory, and
# the batching gain when LOAD_MIN_GAIN is set (a 260K model is compute-bound: batching
# cannot help it); prints aggregate generated tokens/s for both runs.
set -u
bin=$(realpath "$1") shared=$2
secs=${LOAD_SECONDS:-6} clients=${LOAD_CLIENTS:-8}
model=${ORCHARD_LOAD_MODEL:-$shared/models/stories260K.gguf}
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
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

python3 - "$PORT" "$secs" "$clients" "$spid" >"$tmp/out" 2>&1 <<'PY'
import http.client, json, sys, threading, time
port, secs, n, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
prompts = ["Once upon a time", "The little dog", "One day, Lily", "Tom and Sue went", "The sun was", "A big bear",
           "In the park", "Mom said"]
def rss():
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def run(clients, seconds):
    stop = time.time() + seconds
    toks, errs, reqs = [0] * clients, [0] * clients, [0] * clients
    def worker(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        k = 0
        while time.time() < stop:
            body = json.dumps({"prompt": prompts[(i + k) % len(prompts)], "max_tokens": int(__import__("os").environ.get("LOAD_MAX_TOKENS", "128")), "temperature": 0.8,
                               "seed": i * 1000 + k, "stream": True, "stream_options": {"include_usage": True}})
            k += 1
            try:
                c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read().decode()
                if r.status != 200 or not data.rstrip().endswith("data: [DONE]"):
                    errs[i] += 1
                    continue
                for line in data.split("\n"):
                    if line.startswith("data: {"):
                        e = json.loads(line[6:])
                        if e.get("usage"):
                            toks[i] += e["usage"]["completion_tokens"]
                reqs[i] += 1
            except Exception as ex:
                errs[i] += 1
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.time()
    th = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    [t.start() for t in th]
    [t.join() for t in th]
    return sum(toks) / (time.time() - t0), sum(errs), sum(reqs)
run(1, 1)  # warm up
m0 = rss()
one, e1, r1 = run(1, secs)
many, en, rn = run(n, secs)
m1 = rss()
print("load: 1 client %.1f tok/s (%d requests) | %d clients %.1f tok/s aggregate (%d requests) | x%.2f | RSS %d -> %d KiB"
      % (one, r1, n, many, rn, many / one if one else 0, m0, m1))
print("RESULT %d %d %.3f %d %d" % (e1 + en, r1 + rn, many / one if one else 0, m0, m1))
PY
grep -v '^RESULT' "$tmp/out"
read -r _ errs reqs ratio m0 m1 < <(grep '^RESULT' "$tmp/out" || echo "RESULT 1 0 0 1 1")
[ "$errs" -eq 0 ] && [ "$reqs" -gt 0 ] && ok || bad "$errs errors in $reqs requests"
# memory stays flat: no more than 10% + 16 MiB growth between the runs. Under ASan the
# allocator's quarantine holds freed memory on purpose, so RSS says nothing there (leaks
# are LeakSanitizer's job in that build).
if grep -q '^ORC_SANITIZE:BOOL=ON' "$(dirname "$bin")/CMakeCache.txt" 2>/dev/null; then
  echo "load: RSS check skipped under sanitizers"
else
  [ "$m1" -le $((m0 + m0 / 10 + 16384)) ] && ok || bad "RSS grew from $m0 to $m1 KiB"
fi
if [ -n "${LOAD_MIN_GAIN:-}" ]; then
  python3 -c "import sys; sys.exit(0 if float('$ratio') >= float('$LOAD_MIN_GAIN') else 1)" && ok || bad "batching gain x$ratio < x$LOAD_MIN_GAIN"
fi
kill -TERM "$spid"; wait "$spid"; [ $? -eq 0 ] && ok || bad "server exit status"
spid=""
echo "serve: $passes passed, $fails failed"
[ $fails -eq 0 ]
