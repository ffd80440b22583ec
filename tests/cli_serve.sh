#!/usr/bin/env bash
# tests/cli_serve.sh ORCHARD SHARED SOURCE - `orchard serve` end to end on loopback: real
# servers on free ports, checked with curl (errors, limits, keys, routes, CORS) and Python's
# standard library (OpenAI response shapes, SSE streaming, greedy output against
# `orchard run`, batching consistency, prefix reuse, guided JSON, tool calls, 429, cancel).
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
model="$shared/models/stories260K.gguf"
KEY="sk-test-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
printf '# test keys\n%s\n' "$KEY" >"$tmp/keys"

# start NAME ARGS...: runs a server on a free port; sets PORT (waits for /health, 20 s at most)
start() {
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

# status METHOD PATH [curl args...]: prints the HTTP status, body in $tmp/body, headers in $tmp/hdr
status() {
  local m=$1 p=$2
  shift 2
  curl -s --max-time 30 -X "$m" -o "$tmp/body" -D "$tmp/hdr" -w '%{http_code}' "$@" "$U$p"
}
is_error() { # is_error TYPE [PARAM]: the body is an OpenAI error object
  python3 - "$tmp/body" "$1" "${2:-}" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["error"]
assert isinstance(e["message"], str) and e["message"], e
assert e["type"] == sys.argv[2], e
assert set(e) >= {"message", "type", "param", "code"}, e
if sys.argv[3]:
    assert e["param"] == sys.argv[3], e
PY
}

start main --parallel 4 --api-key-file "$tmp/keys" --max-body 65536 --ctx-size 1024 || { echo "serve: 0 passed, 1 failed"; exit 1; }
U="http://127.0.0.1:$PORT"
AUTH=(-H "Authorization: Bearer $KEY")
J=(-H "Content-Type: application/json")

# 1. health is public; everything else needs the key
[ "$(status GET /health)" = 200 ] && grep -q '"ok"' "$tmp/body" && ok || bad "health"
[ "$(status GET /v1/models)" = 401 ] && is_error invalid_request_error && ok || bad "models without a key is not 401"
[ "$(status GET /v1/models -H 'Authorization: Bearer wrong')" = 401 ] && ok || bad "wrong key is not 401"
[ "$(status GET /v1/models -H "Authorization: Bearer ${KEY}x")" = 401 ] && ok || bad "key with a suffix accepted"
[ "$(status POST /v1/chat/completions "${J[@]}" -d '{}')" = 401 ] && ok || bad "chat without a key is not 401"
[ "$(status GET /v1/models "${AUTH[@]}")" = 200 ] && python3 - "$tmp/body" <<'PY' && ok || bad "models list"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["object"] == "list" and [m["id"] for m in d["data"]] == ["stories260K"], d
assert d["data"][0]["object"] == "model"
PY

# 2. error cases
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages": [')" = 400 ] && is_error invalid_request_error && ok || bad "malformed JSON is not 400"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '[1,2]')" = 400 ] && ok || bad "non-object body is not 400"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"model":"m"}')" = 400 ] && is_error invalid_request_error messages && ok || bad "missing messages"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"temperature":5}')" = 400 ] && is_error invalid_request_error temperature && ok || bad "temperature 5 accepted"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"wizard","content":"hi"}]}')" = 400 ] && ok || bad "bad role accepted"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"n":17}')" = 400 ] && is_error invalid_request_error n && ok || bad "n=17 accepted"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"n":0}')" = 400 ] && is_error invalid_request_error n && ok || bad "n=0 accepted"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"top_logprobs":2}')" = 400 ] && is_error invalid_request_error top_logprobs && ok || bad "top_logprobs without logprobs accepted"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":21}')" = 400 ] && is_error invalid_request_error top_logprobs && ok || bad "top_logprobs 21 accepted"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"logprobs":"yes"}')" = 400 ] && is_error invalid_request_error logprobs && ok || bad "logprobs 'yes' accepted"
[ "$(status POST /v1/completions "${AUTH[@]}" "${J[@]}" -d '{"prompt":"x","logprobs":true}')" = 400 ] && is_error invalid_request_error logprobs && ok || bad "completions logprobs true accepted"
[ "$(status POST /v1/completions "${AUTH[@]}" "${J[@]}" -d '{"prompt":"x","logprobs":21}')" = 400 ] && is_error invalid_request_error logprobs && ok || bad "completions logprobs 21 accepted"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}')" = 400 ] && ok || bad "max_tokens 0 accepted"
[ "$(status POST /v1/completions "${AUTH[@]}" "${J[@]}" -d '{"prompt":"x","stop":["a","b","c","d","e"]}')" = 400 ] && is_error invalid_request_error stop && ok || bad "5 stop strings accepted"
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"$ref":"#/nowhere"}}}}}}')" = 400 ] && is_error invalid_request_error response_format && ok || bad "unusable schema accepted"
deep=$(python3 -c 'print("{\"messages\":" + "[" * 100 + "]" * 100 + "}")')
[ "$(status POST /v1/chat/completions "${AUTH[@]}" "${J[@]}" -d "$deep")" = 400 ] && grep -q 'deeper' "$tmp/body" && ok || bad "deep nesting"
python3 -c 'import json; print(json.dumps({"prompt": "word " * 20000}))' >"$tmp/big.json"
[ "$(status POST /v1/completions "${AUTH[@]}" "${J[@]}" --data-binary @"$tmp/big.json")" = 413 ] && is_error invalid_request_error && ok || bad "oversized body is not 413"
[ "$(status POST /v1/completions "${AUTH[@]}" "${J[@]}" -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/big.json")" = 413 ] && ok || bad "oversized chunked body is not 413"
python3 -c 'import json; print(json.dumps({"prompt": "Once upon a time " * 600}))' >"$tmp/long.json"
[ "$(status POST /v1/completions "${AUTH[@]}" "${J[@]}" --data-binary @"$tmp/long.json")" = 400 ] && grep -q context_length_exceeded "$tmp/body" && ok || bad "over-long prompt is not context_length_exceeded"
[ "$(status GET /v1/nothing "${AUTH[@]}")" = 404 ] && is_error invalid_request_error && ok || bad "unknown route is not 404"
[ "$(status GET /v1/chat/completions "${AUTH[@]}")" = 405 ] && ok || bad "GET on a POST route is not 405"
code=$(status GET /health -H "X-Big: $(head -c 40000 /dev/zero | tr '\0' a)")
case $code in 413 | 431 | 400) ok ;; *) bad "a 40 KB header got $code" ;; esac
[ "$(status GET /health)" = 200 ] && ok || bad "server unhealthy after bad input"

# 3. CORS is off by default
status OPTIONS /v1/chat/completions -H 'Origin: https://evil.example' >/dev/null
grep -qi 'access-control' "$tmp/hdr" && bad "CORS headers sent by default" || ok

# 4. generation, checked with Python against `orchard run`
"$bin" run -m "$model" --temp 0 -n 48 --json >"$tmp/run.json" 2>/dev/null || bad "orchard run failed"
python3 - "$U" "$KEY" "$tmp/run.json" >"$tmp/py.out" 2>&1 <<'PY'
import json, sys, threading, urllib.request, urllib.error
U, KEY, RUN = sys.argv[1], sys.argv[2], sys.argv[3]
passes = fails = 0
def check(cond, what):
    global passes, fails
    if cond: passes += 1
    else:
        fails += 1
        print("FAIL:", what)

def post(path, body, stream=False):
    req = urllib.request.Request(U + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    try:
        r = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
    return r.status, dict(r.headers), r.read().decode()

def sse(text):
    events = [l[6:] for l in text.split("\n") if l.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-3:]
    return [json.loads(e) for e in events[:-1]]

run = json.load(open(RUN))
ref = run["text"]

# completions, greedy: the same text as orchard run
st, _, body = post("/v1/completions", {"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0})
d = json.loads(body)
check(st == 200 and d["object"] == "text_completion" and d["choices"][0]["text"] == ref,
      "greedy completion differs from orchard run: %r vs %r" % (d.get("choices"), ref))
check(d["usage"] == {"prompt_tokens": 5, "completion_tokens": 48, "total_tokens": 53,
                     "prompt_tokens_details": d["usage"].get("prompt_tokens_details")}, "completion usage %r" % d["usage"])
check(d["choices"][0]["finish_reason"] == "length", "finish_reason %r" % d["choices"][0]["finish_reason"])

# streaming completion: same text in pieces
st, h, body = post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stream": True})
ev = sse(body)
check(st == 200 and h.get("Content-Type", "").startswith("text/event-stream"), "stream content type")
check("".join(e["choices"][0]["text"] for e in ev if e["choices"]) == ref, "streamed completion differs")
check(ev[-1]["choices"][0]["finish_reason"] == "length", "stream finish_reason")

# stop strings: the text ends right before the first occurrence
stop = ref[10:16]
st, _, body = post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stop": [stop, "zzzz"]})
d = json.loads(body)
check(d["choices"][0]["text"] == ref[:ref.index(stop)] and d["choices"][0]["finish_reason"] == "stop",
      "stop: %r (stop %r)" % (d["choices"][0], stop))
st, _, body = post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stop": stop, "stream": True})
check("".join(e["choices"][0]["text"] for e in sse(body) if e["choices"]) == ref[:ref.index(stop)], "streamed stop")

# chat, non-streaming and streaming agree (greedy)
msgs = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Tell me about a cat."}]
st, _, body = post("/v1/chat/completions", {"model": "x", "messages": msgs, "max_tokens": 40, "temperature": 0})
d = json.loads(body)
m = d["choices"][0]["message"]
check(st == 200 and d["object"] == "chat.completion" and d["id"].startswith("chatcmpl-") and m["role"] == "assistant"
      and isinstance(m["content"], str) and len(m["content"]) > 0, "chat shape %r" % d)
u = d["usage"]
check(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and 0 < u["completion_tokens"] <= 40, "chat usage %r" % u)
st, _, body = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 40, "temperature": 0, "stream": True,
                                            "stream_options": {"include_usage": True}})
ev = sse(body)
check(ev[0]["choices"][0]["delta"].get("role") == "assistant" and ev[0]["object"] == "chat.completion.chunk", "first chunk %r" % ev[0])
text = "".join(e["choices"][0]["delta"].get("content") or "" for e in ev if e["choices"])
check(text == m["content"], "streamed chat differs: %r vs %r" % (text, m["content"]))
check(ev[-1]["choices"] == [] and ev[-1]["usage"]["completion_tokens"] == u["completion_tokens"], "usage chunk %r" % ev[-1])
check(ev[-2]["choices"][0]["finish_reason"] == d["choices"][0]["finish_reason"], "stream finish")
check(len({e["id"] for e in ev}) == 1, "chunk ids differ")
# the same conversation again reuses the slot's cached prompt
st, _, body = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0})
u2 = json.loads(body)["usage"]
check(u2["prompt_tokens_details"]["cached_tokens"] == u2["prompt_tokens"] - 1, "prefix reuse: %r" % u2)

# seeds repeat; content arrays of text parts equal plain strings
a = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 30, "temperature": 1.0, "seed": 7})[2]
b = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 30, "temperature": 1.0, "seed": 7})[2]
ca, cb = (json.loads(x)["choices"][0]["message"]["content"] for x in (a, b))
check(ca == cb, "same seed, different text")
parts = [msgs[0], {"role": "user", "content": [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "about a cat."}]}]
c = json.loads(post("/v1/chat/completions", {"messages": parts, "max_tokens": 40, "temperature": 0})[2])
check(c["choices"][0]["message"]["content"] == m["content"], "content parts differ from a string")

# continuous batching: concurrent greedy requests give exactly what they give alone
prompts = ["Once upon a time", "The little dog", "One day, Lily", "Tom and Sue went"]
alone = [json.loads(post("/v1/completions", {"prompt": p, "max_tokens": 40, "temperature": 0})[2])["choices"][0]["text"] for p in prompts]
before = urllib.request.urlopen(urllib.request.Request(U + "/metrics", headers={"Authorization": "Bearer " + KEY})).read().decode()
res = [None] * 8
def worker(i):
    st, _, body = post("/v1/completions", {"prompt": prompts[i % 4], "max_tokens": 40, "temperature": 0, "stream": i % 2 == 1})
    if i % 2:
        res[i] = "".join(e["choices"][0]["text"] for e in sse(body) if e["choices"])
    else:
        res[i] = json.loads(body)["choices"][0]["text"]
th = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
[t.start() for t in th]
[t.join() for t in th]
check(all(res[i] == alone[i % 4] for i in range(8)), "concurrent results differ from single ones: %r vs %r" % (res, alone))
after = urllib.request.urlopen(urllib.request.Request(U + "/metrics", headers={"Authorization": "Bearer " + KEY})).read().decode()
def metric(text, name):
    for line in text.split("\n"):
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)
nb = metric(after, "orchard_batches_total") - metric(before, "orchard_batches_total")
nt = metric(after, "orchard_batch_tokens_total") - metric(before, "orchard_batch_tokens_total")
check(nb > 0 and nt / nb > 1.5, "no batching across requests: %d tokens in %d steps" % (nt, nb))

# guided generation: json_schema output validates
schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
          "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"],
          "additionalProperties": False}
for stream in (False, True):
    st, _, body = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 100, "temperature": 0.8, "seed": 3, "stream": stream,
                                                "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema, "strict": True}}})
    if stream:
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in sse(body) if e["choices"])
    else:
        text = json.loads(body)["choices"][0]["message"]["content"]
    try:
        o = json.loads(text)
        good = (set(o) == {"name", "age"} and isinstance(o["name"], str) and len(o["name"]) <= 12
                and isinstance(o["age"], int) and 0 <= o["age"] <= 120)
    except ValueError:
        good = False
    check(good, "json_schema output %r (stream %s)" % (text, stream))
st, _, body = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 300, "temperature": 0.5, "seed": 1,
                                            "response_format": {"type": "json_object"}})
d = json.loads(body)
t = d["choices"][0]["message"]["content"]
check(t.startswith("{") and (d["choices"][0]["finish_reason"] != "stop" or isinstance(json.loads(t), dict)), "json_object %r" % t)

# tools: a forced call, then the follow-up with the tool's result
tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
st, _, body = post("/v1/chat/completions", {"messages": ask, "tools": tools, "max_tokens": 80, "temperature": 0,
                                            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
d = json.loads(body)
ch = d["choices"][0]
calls = ch["message"].get("tool_calls") or []
good = ch["finish_reason"] == "tool_calls" and ch["message"]["content"] is None and len(calls) == 1
if good:
    call = calls[0]
    args = json.loads(call["function"]["arguments"])
    good = call["type"] == "function" and call["function"]["name"] == "get_weather" and isinstance(args.get("city"), str) and call["id"]
check(good, "forced tool call %r" % ch)
if good:
    follow = ask + [{"role": "assistant", "content": None, "tool_calls": calls},
                    {"role": "tool", "tool_call_id": calls[0]["id"], "content": "{\"temp_c\": 21}"}]
    st, _, body = post("/v1/chat/completions", {"messages": follow, "tools": tools, "max_tokens": 20, "temperature": 0})
    d2 = json.loads(body)
    check(st == 200 and isinstance(d2["choices"][0]["message"]["content"], str), "tool follow-up %r" % d2)
st, _, body = post("/v1/chat/completions", {"messages": ask, "tools": tools, "max_tokens": 80, "temperature": 0, "stream": True,
                                            "tool_choice": "required"})
ev = sse(body)
fin = [e for e in ev if e["choices"] and e["choices"][0]["finish_reason"]]
check(fin and fin[0]["choices"][0]["finish_reason"] == "tool_calls" and
      fin[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] in ("get_weather", "get_time"), "streamed tool call %r" % fin)
st, _, body = post("/v1/chat/completions", {"messages": ask, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}})
check(st == 400, "unknown forced tool accepted")
# several choices of a forced call: each a call of its own, with its own id and logprobs
st, _, body = post("/v1/chat/completions", {"messages": ask, "tools": tools, "max_tokens": 80, "temperature": 1, "seed": 5,
                                            "n": 2, "logprobs": True, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
chs = json.loads(body)["choices"]
ids = [c["message"]["tool_calls"][0]["id"] for c in chs if c["finish_reason"] == "tool_calls"]
check(len(ids) == 2 and ids[0] != ids[1] and all(len(c["logprobs"]["content"]) > 0 for c in chs), "n=2 forced calls %r" % chs)

# logprobs: every value <= 0, alternatives sorted, the greedy token the most likely one, the
# tokens' bytes spell the text, streamed records equal non-streamed ones
def lp_ok(content, k, greedy=True):
    for e in content:
        tl = e["top_logprobs"]
        if not (e["logprob"] <= 0 and len(tl) == k and all(t["logprob"] <= 0 for t in tl)):
            return "values/size %r" % e
        if any(tl[i]["logprob"] < tl[i + 1]["logprob"] for i in range(k - 1)):
            return "unsorted %r" % tl
        if any(bytes(t["bytes"]).decode("utf-8", "replace") != t["token"] for t in tl + [e]):
            return "bytes/token %r" % e
        if k and greedy and (tl[0]["token"] != e["token"] or tl[0]["logprob"] != e["logprob"]):
            return "greedy token is not the most likely %r" % e
        if k and not greedy and e["logprob"] > tl[0]["logprob"]:
            return "sampled token above the top %r" % e
    return None
st, _, body = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 40, "temperature": 0, "logprobs": True,
                                            "top_logprobs": 3})
d = json.loads(body)
c0 = d["choices"][0]
content = c0["logprobs"]["content"]
check(c0["message"]["content"] == m["content"], "logprobs changed the text")
check(len(content) == d["usage"]["completion_tokens"], "%d records for %d tokens" % (len(content), d["usage"]["completion_tokens"]))
check(b"".join(bytes(e["bytes"]) for e in content).decode() == m["content"], "token bytes do not spell the text")
why = lp_ok(content, 3)
check(why is None, "chat logprobs: %s" % why)
check(any(e["logprob"] < 0 for e in content) and all(e["logprob"] > -100 for e in content), "implausible logprobs")
st, _, body = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 40, "temperature": 0, "logprobs": True,
                                            "top_logprobs": 3, "stream": True})
streamed = [r for e in sse(body) if e["choices"] and e["choices"][0]["logprobs"] for r in e["choices"][0]["logprobs"]["content"]]
check(streamed == content, "streamed logprobs differ: %d vs %d records" % (len(streamed), len(content)))
st, _, body = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 12, "temperature": 1, "seed": 4, "logprobs": True})
c = json.loads(body)["choices"][0]["logprobs"]["content"]
check(len(c) > 0 and lp_ok(c, 0) is None, "logprobs without alternatives %r" % c[:2])
st, _, body = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 12, "temperature": 1.5, "seed": 4, "logprobs": True,
                                            "top_logprobs": 20})
why = lp_ok(json.loads(body)["choices"][0]["logprobs"]["content"], 20, greedy=False)
check(why is None, "sampled logprobs: %s" % why)
# completions: the legacy format; with a stop string only the records of the kept text
st, _, body = post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "logprobs": 2})
c = json.loads(body)["choices"][0]
lp = c["logprobs"]
check(c["text"] == ref and "".join(lp["tokens"]) == ref, "completion tokens %r" % lp["tokens"][:5])
off = [sum(len(t.encode()) for t in lp["tokens"][:i]) for i in range(len(lp["tokens"]))]
check(lp["text_offset"] == off and len(lp["token_logprobs"]) == 48 and len(lp["top_logprobs"]) == 48, "completion offsets/sizes")
check(all(v <= 0 and 1 <= len(t) <= 2 and max(t.values()) == v and t.get(tok) == v
          for v, t, tok in zip(lp["token_logprobs"], lp["top_logprobs"], lp["tokens"])), "completion logprob values")
st, _, body = post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "logprobs": 1, "stop": stop})
c = json.loads(body)["choices"][0]
cut = ref[:ref.index(stop)]
check(c["text"] == cut and "".join(c["logprobs"]["tokens"]).startswith(cut) and
      "".join(c["logprobs"]["tokens"][:-1]) == cut[:len("".join(c["logprobs"]["tokens"][:-1]))] and
      len("".join(c["logprobs"]["tokens"][:-1])) < len(cut), "logprobs with a stop string %r" % c)

# n > 1: several choices; a seed fixes them all (choice i uses seed + i)
req = {"messages": msgs, "max_tokens": 20, "temperature": 1.0, "seed": 11, "n": 3, "logprobs": True}
d1, d2 = (json.loads(post("/v1/chat/completions", req)[2]) for _ in range(2))
texts = [ch["message"]["content"] for ch in d1["choices"]]
check([ch["index"] for ch in d1["choices"]] == [0, 1, 2] and texts == [ch["message"]["content"] for ch in d2["choices"]],
      "n=3 not deterministic: %r / %r" % (texts, d2["choices"]))
check(len(set(texts)) > 1, "n=3 gave identical samples %r" % texts)
check(d1["usage"]["completion_tokens"] == sum(len(ch["logprobs"]["content"]) for ch in d1["choices"]), "n=3 usage %r" % d1["usage"])
one = json.loads(post("/v1/chat/completions", dict(req, n=1))[2])["choices"][0]["message"]["content"]
check(one == texts[0], "choice 0 differs from the n=1 answer with the same seed")
st, _, body = post("/v1/chat/completions", dict(req, stream=True, stream_options={"include_usage": True}))
ev = sse(body)
got = {}
fins = {}
for e in ev:
    for ch in e["choices"]:
        got[ch["index"]] = got.get(ch["index"], "") + (ch["delta"].get("content") or "")
        if ch["finish_reason"]:
            fins[ch["index"]] = ch["finish_reason"]
check([got.get(i) for i in range(3)] == texts and sorted(fins) == [0, 1, 2], "streamed n=3: %r vs %r" % (got, texts))
check(ev[-1]["usage"]["completion_tokens"] == d1["usage"]["completion_tokens"], "streamed n=3 usage")
st, _, body = post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "n": 2})
check([ch["text"] for ch in json.loads(body)["choices"]] == [ref, ref], "greedy n=2 completions")

print("PY %d %d" % (passes, fails))
PY
grep -v '^PY ' "$tmp/py.out"
read -r _ pp pf < <(grep '^PY ' "$tmp/py.out" || echo "PY 0 1")
passes=$((passes + pp)) fails=$((fails + pf))

# 5. metrics: Prometheus text with the counters this run produced
[ "$(status GET /metrics "${AUTH[@]}")" = 200 ] && python3 - "$tmp/body" <<'PY' && ok || bad "metrics"
import re, sys
t = open(sys.argv[1]).read()
def val(pat):
    m = re.search("^" + pat + r" ([0-9.e+]+)$", t, re.M)
    assert m, pat
    return float(m.group(1))
assert val(r'orchard_requests_total\{route="/v1/chat/completions",status="200"\}') >= 8
assert val(r'orchard_requests_total\{route="/v1/chat/completions",status="400"\}') >= 10
assert val(r'orchard_requests_total\{route="/v1/completions",status="413"\}') >= 1
assert val(r'orchard_requests_total\{route="other",status="404"\}') >= 1
assert val("orchard_completion_tokens_total") > 400
assert val("orchard_prompt_tokens_cached_total") > 0
n = val("orchard_request_duration_seconds_count")
assert val(r'orchard_request_duration_seconds_bucket\{le="\+Inf"\}') == n and n >= 20
assert val("orchard_queue_depth") == 0 and val("orchard_slots_total") == 4
assert "# TYPE orchard_time_to_first_token_seconds histogram" in t
PY
grep -q -- "$KEY" "$tmp/main.log" "$tmp/main.out" && bad "the API key appears in the server's output" || ok

# 6. a full queue answers 429 with Retry-After; a client that goes away frees its slot
start busy --parallel 1 --queue 0 --ctx-size 2048 || bad "second server"
U="http://127.0.0.1:$PORT"
LONG='{"messages":[{"role":"user","content":"Write."}],"max_tokens":1500,"temperature":1,"stream":true,"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"string","minLength":1000,"maxLength":1000}}}}'
# seconds of work in any build: six 1000-character strings, cut at 1900 tokens
LONGER='{"messages":[{"role":"user","content":"Write."}],"max_tokens":1900,"temperature":1,"stream":true,"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"array","minItems":6,"maxItems":6,"items":{"type":"string","minLength":1000,"maxLength":1000}}}}}'
curl -s -N --max-time 120 "${J[@]}" -d "$LONGER" "$U/v1/chat/completions" >"$tmp/longer.sse" &
lp=$!
for _ in $(seq 100); do [ -s "$tmp/longer.sse" ] && break; sleep 0.05; done
code=$(status POST /v1/chat/completions "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}')
[ "$code" = 429 ] && grep -qi '^retry-after: *[0-9]' "$tmp/hdr" && is_error rate_limit_exceeded && ok || bad "full queue gave $code"
# the client goes away: its generation stops and the slot is free again
kill "$lp"
wait "$lp" 2>/dev/null
for _ in $(seq 100); do
  curl -s "$U/metrics" >"$tmp/m2"
  grep -q '^orchard_requests_cancelled_total 1$' "$tmp/m2" && grep -q '^orchard_slots_busy 0$' "$tmp/m2" && break
  sleep 0.1
done
grep -q '^orchard_requests_cancelled_total 1$' "$tmp/m2" && grep -q '^orchard_slots_busy 0$' "$tmp/m2" && ok || bad "disconnect did not cancel: $(grep -E 'cancelled|busy' "$tmp/m2")"
gen_before=$(sed -n 's/^orchard_completion_tokens_total //p' "$tmp/m2")
sleep 0.3
gen_after=$(curl -s "$U/metrics" | sed -n 's/^orchard_completion_tokens_total //p')
[ "$gen_before" = "$gen_after" ] && [ "${gen_before:-0}" -lt 1900 ] && ok || bad "generation continued after the client left ($gen_before -> $gen_after)"
# a long guided stream completes whole
curl -s -N --max-time 120 "${J[@]}" -d "$LONG" "$U/v1/chat/completions" >"$tmp/long.sse"
python3 - "$tmp/long.sse" <<'PY' && ok || bad "the long stream did not complete"
import json, sys
ev = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert ev[-1] == "[DONE]"
text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in ev[:-1] if json.loads(e)["choices"])
assert len(json.loads(text)) == 1000
PY
[ "$(status POST /v1/completions "${J[@]}" -d '{"prompt":"Once","max_tokens":3}')" = 200 ] && ok || bad "slot not usable after a cancel"

# 6b. tool_choice auto: calls the model writes in its syntax become tool_calls (here the
# output is steered into the llama3 form {"name":..,"parameters":..} with a schema)
start tools --tool-syntax llama3 || bad "tools server"
U="http://127.0.0.1:$PORT"
python3 - "$U" <<'PY' && ok || bad "tool_choice auto parsing"
import json, sys, urllib.request
U = sys.argv[1]
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
schema = {"type": "object", "properties": {"name": {"const": "get_weather"}, "parameters": {"type": "object",
          "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"], "additionalProperties": False}},
          "required": ["name", "parameters"], "additionalProperties": False}
def post(body):
    req = urllib.request.Request(U + "/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=60).read().decode()
base = {"messages": [{"role": "user", "content": "weather?"}], "max_tokens": 80, "tools": tools, "seed": 1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}
d = json.loads(post(base))
ch = d["choices"][0]
call = ch["message"]["tool_calls"][0]
assert ch["finish_reason"] == "tool_calls" and ch["message"]["content"] is None, ch
assert call["function"]["name"] == "get_weather" and isinstance(json.loads(call["function"]["arguments"])["city"], str), call
ev = [json.loads(l[6:]) for l in post(dict(base, stream=True)).split("\n") if l.startswith("data: {")]
fin = ev[-1]["choices"][0]
assert fin["finish_reason"] == "tool_calls" and fin["delta"]["tool_calls"][0]["function"]["name"] == "get_weather", fin
assert not any(e["choices"][0]["delta"].get("content") for e in ev), "call text leaked as content"
# tool_choice none: the same output stays text
d = json.loads(post(dict(base, tool_choice="none")))
assert d["choices"][0]["finish_reason"] == "stop" and json.loads(d["choices"][0]["message"]["content"])["name"] == "get_weather", d
PY

# 7. CORS when configured; SIGTERM stops cleanly
start cors --cors-origin https://app.example || bad "cors server"
U="http://127.0.0.1:$PORT"
[ "$(status OPTIONS /v1/chat/completions -H 'Origin: https://app.example' -H 'Access-Control-Request-Method: POST')" = 204 ] &&
  grep -qi '^access-control-allow-origin: https://app.example' "$tmp/hdr" && grep -qi '^access-control-allow-headers:.*authorization' "$tmp/hdr" && ok || bad "CORS preflight"
status GET /v1/models >/dev/null
grep -qi '^access-control-allow-origin: https://app.example' "$tmp/hdr" && ok || bad "CORS header on responses"
for name in main busy tools cors; do
  eval "pid=\$PID_$name"
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then bad "$name did not stop on SIGTERM"; else wait "$pid"; [ $? -eq 0 ] && ok || bad "$name exit status"; fi
done

# 8. usage errors
"$bin" serve --port 99999 >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--port 99999 is not a usage error"
"$bin" serve --host nowhere >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--host nowhere is not a usage error"
"$bin" serve --api-key-file /nonexistent >/dev/null 2>&1; [ $? -eq 1 ] && ok || bad "missing key file"
"$bin" serve --help | grep -q -- '--parallel' && ok || bad "serve --help"

# every server stopped by SIGTERM; none reported a sanitizer error or leak (ASan builds)
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()
grep -l 'Sanitizer\|runtime error:' "$tmp"/*.log 2>/dev/null && bad "sanitizer reports above" || ok
echo "serve: $passes passed, $fails failed"
[ $fails -eq 0 ]
