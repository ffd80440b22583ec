#!/usr/bin/env bash
# tests/cli_serve_escalation.sh ORCHARD SHARED SOURCE - private escalation of `orchard serve`
# on loopback: local by default; escalation only with consent (policy, per request, per key);
# the upstream receives redacted text (checked by a recording stub upstream, and by a second
# orchard serve whose prompt cache matches only the redacted conversation) and the client
# gets it restored; the audit log has the record, a hash of what was sent and no content;
# a second orchard serve as the real upstream; upstream down -> local fallback (or 502);
# stateless mode leaves no files and keeps no cache.
set -u
bin=$(realpath "$1") shared=$2
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
[ -n "${KEEP_TMP:-}" ] && trap - EXIT
model="$shared/models/stories260K.gguf"

start() { # start NAME ARGS...: orchard serve on a free port -> PORT
  local name=$1
  shift
  "$bin" serve -m "$model" --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  local pid=$!
  pids+=("$pid")
  eval "PID_$name=$pid"
  PORT=""
  for _ in $(seq 200); do
    PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/$name.log")
    [ -n "$PORT" ] && curl -sf --max-time 2 "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not start:"; cat "$tmp/$name.log"
  return 1
}

# A recording upstream: stores every request body, answers with the placeholders it saw.
cat >"$tmp/stub.py" <<'PY'
import json, re, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
log = sys.argv[1]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(log, "ab") as f:
            f.write(json.dumps({"path": self.path, "auth": self.headers.get("Authorization"), "body": body.decode()}).encode() + b"\n")
        req = json.loads(body)
        text = json.dumps(req.get("messages", req.get("prompt")))
        phs = re.findall(r"\[[A-Z]+_[0-9]+\]", text)
        answer = "Noted: " + " and ".join(phs)
        if req.get("stream"):
            # small pieces, so placeholders arrive split across chunks
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(0, len(answer), 3):
                ev = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 1, "model": "stub-big",
                      "choices": [{"index": 0, "delta": {"content": answer[i:i + 3]}, "finish_reason": None}]}
                self.wfile.write(b"data: " + json.dumps(ev).encode() + b"\n\n")
                self.wfile.flush()
            ev["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
            self.wfile.write(b"data: " + json.dumps(ev).encode() + b"\n\ndata: [DONE]\n\n")
            return
        out = {"id": "chatcmpl-stub", "object": "chat.completion", "created": 1, "model": "stub-big",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
python3 "$tmp/stub.py" "$tmp/stub.jsonl" >"$tmp/stub.port" 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do [ -s "$tmp/stub.port" ] && break; sleep 0.1; done
STUB=$(cat "$tmp/stub.port")
: >"$tmp/stub.jsonl"

cat >"$tmp/policy.json" <<EOF2
{"consent": "per_request", "models": ["big"], "audit_log": "$tmp/audit.jsonl",
 "rules": [{"name": "legal", "pattern": "lawsuit"}],
 "redact": {"patterns": [{"name": "ticket", "regex": "TCK-[0-9]+"}]}, "timeout_seconds": 10}
EOF2
printf 'key-consenting escalate\nkey-plain\n' >"$tmp/keys"
export UPKEY_VAR="sk-upstream-secret"
start esc --upstream "http://127.0.0.1:$STUB/v1" --upstream-key-env UPKEY_VAR --policy "$tmp/policy.json" \
  --api-key-file "$tmp/keys" --ctx-size 256 || { echo "serve: 0 passed, 1 failed"; exit 1; }
ESC=$PORT

python3 - "$ESC" "$tmp" >"$tmp/py.out" 2>&1 <<'PY'
import hashlib, json, sys, urllib.request, urllib.error
P, T = sys.argv[1], sys.argv[2]
passes = fails = 0
def check(cond, what):
    global passes, fails
    if cond: passes += 1
    else:
        fails += 1
        print("FAIL:", what)
def post(path, body, key="key-plain"):
    req = urllib.request.Request("http://127.0.0.1:%s%s" % (P, path), data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        r = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
    return r.status, dict(r.headers), r.read().decode()
def stub():
    return [json.loads(l) for l in open(T + "/stub.jsonl")]
def audit():
    try:
        return [json.loads(l) for l in open(T + "/audit.jsonl")]
    except FileNotFoundError:
        return []
secret = "Please mail bob.smith@example.com or call +1 415 555 0100 about card 4111 1111 1111 1111 and TCK-98765."
msgs = [{"role": "user", "content": secret}]

# 1. local by default: a mapped model without consent stays here
st, h, body = post("/v1/chat/completions", {"model": "big", "messages": msgs, "max_tokens": 5})
d = json.loads(body)
check(st == 200 and d["model"] == "stories260K" and h.get("X-Orchard-Route") == "local", "no consent: %s %r" % (st, h.get("X-Orchard-Route")))
check(stub() == [] and audit() == [], "something left without consent")
# a consenting flag on a request that names a local model and matches no rule stays local too
st, h, body = post("/v1/chat/completions", {"model": "small", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "orchard": {"escalate": True}})
check(st == 200 and json.loads(body)["model"] == "stories260K" and stub() == [], "no reason, yet escalated")

# 2. per-request consent: redacted upstream, restored answer, audited without content
st, h, body = post("/v1/chat/completions", {"model": "big", "messages": msgs, "max_tokens": 5, "orchard": {"escalate": True}})
d = json.loads(body)
check(st == 200 and d["model"] == "stub-big" and h.get("X-Orchard-Route") == "upstream", "escalation: %s %r" % (st, body[:200]))
got = stub()
check(len(got) == 1, "upstream requests: %d" % len(got))
if got:
    sent = got[0]["body"]
    check(got[0]["path"] == "/v1/chat/completions" and got[0]["auth"] == "Bearer sk-upstream-secret", "upstream path/auth %r" % got[0]["path"])
    for leak in ("bob.smith", "example.com", "415 555", "4111", "TCK-98765"):
        check(leak not in sent, "upstream saw %r" % leak)
    for ph in ("[EMAIL_1]", "[PHONE_1]", "[CARD_1]", "[TICKET_1]"):
        check(ph in sent, "placeholder %s missing upstream: %s" % (ph, sent))
    check("orchard" not in json.loads(sent), "the consent flag was forwarded")
    content = d["choices"][0]["message"]["content"]
    check("bob.smith@example.com" in content and "+1 415 555 0100" in content and "4111 1111 1111 1111" in content
          and "TCK-98765" in content and "[" not in content, "answer not restored: %r" % content)
    a = audit()
    check(len(a) == 1, "audit lines: %d" % len(a))
    if a:
        r = a[0]
        check(r["route"] == "upstream" and r["reason"] == "model" and r["outcome"] == "ok" and r["status"] == 200, "audit %r" % r)
        check(r["content_sha256"] == hashlib.sha256(sent.encode()).hexdigest() and r["bytes_sent"] == len(sent.encode()),
              "audit hash/bytes do not match what was sent")
        check(r["redactions"] == {"email": 1, "phone": 1, "card": 1, "custom": 1}, "audit redactions %r" % r["redactions"])
        raw = open(T + "/audit.jsonl").read()
        check(not any(x in raw for x in ("bob", "415 555", "4111 1111", "TCK", "example", "Please", "[EMAIL")), "the audit log holds content")

# 3. per-key consent; streaming escalation; rules; context overflow
st, h, body = post("/v1/chat/completions", {"model": "big", "messages": msgs, "max_tokens": 5}, key="key-consenting")
check(st == 200 and json.loads(body)["model"] == "stub-big", "consenting key did not escalate")
st, h, body = post("/v1/chat/completions", {"model": "big", "messages": msgs, "max_tokens": 5, "stream": True, "orchard": {"escalate": True}})
ev = [json.loads(l[6:]) for l in body.split("\n") if l.startswith("data: ") and l != "data: [DONE]"]
text = "".join(e["choices"][0]["delta"].get("content") or "" for e in ev if e["choices"])
check(body.rstrip().endswith("data: [DONE]") and ev[0]["model"] == "stub-big" and
      text == "Noted: bob.smith@example.com and +1 415 555 0100 and 4111 1111 1111 1111 and TCK-98765", "streamed escalation %r" % text)
check(json.loads(stub()[-1]["body"])["stream"] is True and "bob" not in stub()[-1]["body"], "the upstream was not asked to stream, or saw content")
st, h, body = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "about the lawsuit"}], "max_tokens": 5, "orchard": {"escalate": True}})
check(st == 200 and json.loads(body)["model"] == "stub-big" and audit()[-1]["reason"] == "rule:legal", "rule did not escalate")
longp = "Once upon a time " * 200
st, h, body = post("/v1/completions", {"prompt": longp, "max_tokens": 5})
check(st == 400 and "context_length_exceeded" in body, "overflow without consent: %s" % st)
st, h, body = post("/v1/completions", {"prompt": longp, "max_tokens": 5, "orchard": {"escalate": True}})
check(st == 200 and json.loads(body)["model"] == "stub-big" and audit()[-1]["reason"] == "context", "overflow with consent: %s %s" % (st, body[:200]))
check(stub()[-1]["path"] == "/v1/completions", "completions went to %r" % stub()[-1]["path"])
raw = open(T + "/audit.jsonl").read()
check(not any(x in raw for x in ("bob", "415 555", "4111 1111", "TCK", "lawsuit", "Once upon", "Please")), "the audit log holds content")
check(all(set(r) == {"time", "route", "reason", "model", "upstream", "bytes_sent", "tokens_sent", "content_sha256", "redactions", "status", "outcome"} for r in audit()), "audit fields")
print("PY %d %d" % (passes, fails))
PY
grep -v '^PY ' "$tmp/py.out"
read -r _ pp pf < <(grep '^PY ' "$tmp/py.out" || echo "PY 0 1")
passes=$((passes + pp)) fails=$((fails + pf))
grep -q 'sk-upstream-secret\|key-consenting\|bob.smith' "$tmp/esc.log" "$tmp/esc.out" && bad "secrets or content in the server log" || ok
m=$(curl -s -H 'Authorization: Bearer key-plain' "http://127.0.0.1:$ESC/metrics")
echo "$m" | grep -q '^orchard_escalations_total 5$' && ok || bad "escalation metric: $(echo "$m" | grep escalations_total)"

# 4. a real orchard serve as the larger tier
start big --alias big-tier || bad "upstream server"
BIG=$PORT
printf '{"consent": "always", "models": ["big"]}\n' >"$tmp/always.json"
start front --upstream "http://127.0.0.1:$BIG/v1" --policy "$tmp/always.json" || bad "front server"
r=$(curl -s -D "$tmp/hdr" "http://127.0.0.1:$PORT/v1/chat/completions" -d '{"model":"big","messages":[{"role":"user","content":"Tell a story"}],"max_tokens":8,"temperature":0}')
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["model"]=="big-tier" and d["usage"]["completion_tokens"]==8, d' "$r" && grep -qi '^x-orchard-route: upstream' "$tmp/hdr" && ok || bad "orchard upstream: $r"
grep -q '/v1/chat/completions 200' "$tmp/big.log" && ok || bad "the upstream server saw no request"
curl -sN "http://127.0.0.1:$PORT/v1/chat/completions" -d '{"model":"big","stream":true,"messages":[{"role":"user","content":"Tell a story"}],"max_tokens":8,"temperature":0}' >"$tmp/relay.sse"
python3 - "$tmp/relay.sse" "$r" <<'PY' && ok || bad "streaming through the orchard upstream: $(head -c 300 "$tmp/relay.sse")"
import json, sys
lines = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert lines[-1] == "[DONE]", lines[-2:]
ev = [json.loads(l) for l in lines[:-1]]
assert all(e["model"] == "big-tier" for e in ev)
text = "".join(e["choices"][0]["delta"].get("content") or "" for e in ev if e["choices"])
assert len(ev) >= 3 and text == json.loads(sys.argv[2])["choices"][0]["message"]["content"], (text, sys.argv[2])
PY
# the orchard upstream itself saw only the redacted text: its slot cache is primed with the
# redacted conversation, then the original is escalated; the upstream reports the whole
# prompt but its last token as reused from its cache only when it received exactly the
# redacted text (the original, sent directly, is not)
red='{"model":"big","messages":[{"role":"user","content":"Mail [EMAIL_1] or call [PHONE_1] about the cat"}],"max_tokens":6,"temperature":0}'
orig='{"model":"big","messages":[{"role":"user","content":"Mail bob.smith@example.com or call +1 415 555 0100 about the cat"}],"max_tokens":6,"temperature":0}'
r1=$(curl -s "http://127.0.0.1:$BIG/v1/chat/completions" -d "$red")
r2=$(curl -s -D "$tmp/hdr" "http://127.0.0.1:$PORT/v1/chat/completions" -d "$orig")
r3=$(curl -s "http://127.0.0.1:$BIG/v1/chat/completions" -d "$orig")
python3 - "$r1" "$r2" "$r3" <<'PY' && grep -qi '^x-orchard-route: upstream' "$tmp/hdr" && ok || bad "upstream-side redaction: $r1 / $r2 / $r3"
import json, sys
direct, esc, plain = (json.loads(a) for a in sys.argv[1:4])
p = direct["usage"]["prompt_tokens"]
assert esc["model"] == "big-tier" and esc["usage"]["prompt_tokens"] == p, (esc, p)
assert esc["usage"]["prompt_tokens_details"]["cached_tokens"] == p - 1, esc["usage"]
assert esc["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
assert plain["usage"]["prompt_tokens_details"]["cached_tokens"] < plain["usage"]["prompt_tokens"] - 1, plain["usage"]
PY

# 5. upstream down: local fallback names the local model; with fallback "error": 502
kill "$PID_big"; wait "$PID_big" 2>/dev/null
printf '{"consent": "always", "models": ["big"], "audit_log": "%s/audit2.jsonl", "timeout_seconds": 3}\n' "$tmp" >"$tmp/fb.json"
start fb --upstream "http://audituser:auditpw@127.0.0.1:$BIG/v1" --policy "$tmp/fb.json" || bad "fallback server"
r=$(curl -s -D "$tmp/hdr" "http://127.0.0.1:$PORT/v1/chat/completions" -d '{"model":"big","messages":[{"role":"user","content":"hi"}],"max_tokens":4}')
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["model"]=="stories260K" and d["choices"][0]["message"]["content"], d' "$r" &&
  grep -qi '^x-orchard-route: local-fallback' "$tmp/hdr" && ok || bad "fallback: $r"
grep -q '"outcome":"fallback"' "$tmp/audit2.jsonl" && ok || bad "fallback not audited"
grep -q 'auditpw\|audituser' "$tmp/audit2.jsonl" && bad "URL credentials in the audit log" || ok
printf '{"consent": "always", "models": ["big"], "fallback": "error", "timeout_seconds": 3}\n' >"$tmp/err.json"
start noFb --upstream "http://127.0.0.1:$BIG/v1" --policy "$tmp/err.json" || bad "no-fallback server"
code=$(curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$PORT/v1/chat/completions" -d '{"model":"big","messages":[{"role":"user","content":"hi"}],"max_tokens":4}')
[ "$code" = 502 ] && grep -q '"upstream_error"' "$tmp/body" && ok || bad "no fallback gave $code"

# 6. without a policy, consent is "never"
start never --upstream "http://127.0.0.1:$STUB/v1" || bad "never server"
n0=$(wc -l <"$tmp/stub.jsonl")
r=$(curl -s "http://127.0.0.1:$PORT/v1/chat/completions" -d '{"model":"big","orchard":{"escalate":true},"messages":[{"role":"user","content":"hi"}],"max_tokens":4}')
[ "$(wc -l <"$tmp/stub.jsonl")" = "$n0" ] && echo "$r" | grep -q '"stories260K"' && ok || bad "escalated without a policy"

# 7. stateless: no files anywhere we can see, no access log, no cache kept
mkdir -p "$tmp/sl/home" "$tmp/sl/cwd"
(cd "$tmp/sl/cwd" && HOME="$tmp/sl/home" TMPDIR="$tmp/sl/home" exec "$bin" serve -m "$model" --port 0 --stateless >"$tmp/sl.out" 2>"$tmp/sl.log") &
slp=$!
pids+=("$slp")
for _ in $(seq 100); do
  PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/sl.log")
  [ -n "$PORT" ] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.1
done
body='{"messages":[{"role":"user","content":"A secret story"}],"max_tokens":6}'
curl -s "http://127.0.0.1:$PORT/v1/chat/completions" -d "$body" >/dev/null
r=$(curl -s "http://127.0.0.1:$PORT/v1/chat/completions" -d "$body")
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["usage"]["prompt_tokens_details"]["cached_tokens"]==0, d' "$r" && ok || bad "stateless kept a cache: $r"
curl -sN "http://127.0.0.1:$PORT/v1/chat/completions" -d '{"messages":[{"role":"user","content":"x"}],"max_tokens":4,"stream":true}' | grep -q 'DONE' && ok || bad "stateless stream"
kill -TERM "$slp"; wait "$slp" 2>/dev/null
[ -z "$(find "$tmp/sl" -mindepth 2)" ] && ok || bad "stateless mode wrote files: $(find "$tmp/sl" -mindepth 2)"
grep -q '/v1/chat' "$tmp/sl.log" && bad "stateless mode logged requests" || ok
[ ! -s "$tmp/sl.out" ] && ok || bad "stateless stdout not empty"

# 8. bad policies are rejected at start
echo '{"consent": "sometimes"}' >"$tmp/bad.json"
"$bin" serve -m "$model" --port 0 --upstream http://127.0.0.1:1/v1 --policy "$tmp/bad.json" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q consent "$tmp/err" && ok || bad "bad consent value accepted ($rc)"
echo '{"rules": [{"name": "x", "pattern": "(("}]}' >"$tmp/bad.json"
"$bin" serve -m "$model" --port 0 --upstream http://127.0.0.1:1/v1 --policy "$tmp/bad.json" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && ok || bad "bad rule regex accepted ($rc)"
"$bin" serve -m "$model" --upstream ftp://x >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "ftp upstream accepted"
"$bin" serve -m "$model" --upstream http://x --upstream-key-env NO_SUCH_VAR_ORC >/dev/null 2>&1; [ $? -eq 1 ] && ok || bad "missing key variable accepted"

# every server stopped by SIGTERM; none reported a sanitizer error or leak (ASan builds)
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()
grep -l 'Sanitizer\|runtime error:' "$tmp"/*.log 2>/dev/null && bad "sanitizer reports above" || ok
echo "serve: $passes passed, $fails failed"
[ $fails -eq 0 ]
