#!/usr/bin/env bash
# tests/cli_serve_openai.sh ORCHARD SHARED SOURCE - `orchard serve` driven by the official
# `openai` npm package (installed into a cache outside the repository; the test is skipped
# with a message when node/npm or the package are unavailable): chat non-streaming and
# streaming, a tool call and its follow-up, json_schema output validated, models, errors,
# logprobs (values, order, greedy = most likely, streamed = non-streamed) and n > 1 with a seed.
set -u
bin=$(realpath "$1") shared=$2
fails=0 passes=0
# skipped when node, npm or the package are missing, unless ORC_REQUIRE_NODE=1 (.ci/run sets it)
skip() {
  [ "${ORC_REQUIRE_NODE:-0}" = 1 ] && { echo "FAIL: $*"; echo "serve: 0 passed, 1 failed"; exit 1; }
  echo "serve: 0 passed, 0 failed (skipped: $*)"
  exit 0
}
command -v node >/dev/null && command -v npm >/dev/null || skip "node/npm not installed"
cache=${ORC_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orchard-test-npm}
if [ ! -d "$cache/node_modules/openai" ]; then
  mkdir -p "$cache" && timeout 180 npm install --prefix "$cache" openai@4 --no-audit --no-fund >"$cache/install.log" 2>&1 ||
    skip "npm install openai failed (offline?): $(tail -1 "$cache/install.log")"
fi
tmp=$(mktemp -d)
spid=""
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT
echo "sk-openai-test" >"$tmp/keys"
"$bin" serve -m "$shared/models/stories260K.gguf" --port 0 --parallel 2 --ctx-size 1024 --api-key-file "$tmp/keys" \
  >/dev/null 2>"$tmp/log" &
spid=$!
PORT=""
for _ in $(seq 200); do
  PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/log")
  [ -n "$PORT" ] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.1
done
[ -n "$PORT" ] || { cat "$tmp/log"; echo "serve: 0 passed, 1 failed"; exit 1; }

cat >"$tmp/t.js" <<'JS'
const OpenAI = require("openai");
const base = process.argv[2];
const client = new OpenAI({ baseURL: base, apiKey: "sk-openai-test", maxRetries: 0, timeout: 60000 });
let passes = 0, fails = 0;
function check(cond, what) { if (cond) passes++; else { fails++; console.log("FAIL: " + what); } }
(async () => {
  const messages = [{ role: "system", content: "You tell stories." }, { role: "user", content: "Tell me about a cat." }];
  // chat, non-streaming
  const r = await client.chat.completions.create({ model: "stories260K", messages, max_tokens: 30, temperature: 0 });
  const text = r.choices[0].message.content;
  check(r.object === "chat.completion" && typeof text === "string" && text.length > 0, "chat: " + JSON.stringify(r));
  check(r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens && r.usage.completion_tokens <= 30, "usage");
  // streaming: the same greedy text
  const stream = await client.chat.completions.create({ model: "stories260K", messages, max_tokens: 30, temperature: 0,
                                                        stream: true, stream_options: { include_usage: true } });
  let streamed = "", finish = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) {
      streamed += chunk.choices[0].delta.content || "";
      finish = chunk.choices[0].finish_reason || finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  check(streamed === text, "streamed text differs: " + JSON.stringify([streamed, text]));
  check(finish === r.choices[0].finish_reason && usage && usage.completion_tokens === r.usage.completion_tokens, "stream finish/usage");
  // tools: a forced call, then the follow-up with the result
  const tools = [{ type: "function", function: { name: "get_weather", description: "weather for a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 20 } }, required: ["city"] } } }];
  const ask = [{ role: "user", content: "What is the weather in Paris?" }];
  const t1 = await client.chat.completions.create({ model: "stories260K", messages: ask, tools, max_tokens: 60,
    tool_choice: { type: "function", function: { name: "get_weather" } } });
  const calls = t1.choices[0].message.tool_calls || [];
  let args = null;
  try { args = JSON.parse(calls[0].function.arguments); } catch (e) {}
  check(t1.choices[0].finish_reason === "tool_calls" && calls.length === 1 && calls[0].function.name === "get_weather" &&
        args && typeof args.city === "string", "tool call: " + JSON.stringify(t1.choices[0]));
  if (calls.length) {
    const t2 = await client.chat.completions.create({ model: "stories260K", tools, max_tokens: 20, messages: ask.concat([
      t1.choices[0].message, { role: "tool", tool_call_id: calls[0].id, content: JSON.stringify({ temp_c: 21 }) }]) });
    check(typeof t2.choices[0].message.content === "string", "tool follow-up");
  }
  // response_format json_schema: the output validates
  const schema = { type: "object", properties: { name: { type: "string", maxLength: 12 },
                   age: { type: "integer", minimum: 0, maximum: 120 } }, required: ["name", "age"], additionalProperties: false };
  const j = await client.chat.completions.create({ model: "stories260K", messages, max_tokens: 80, temperature: 0.7, seed: 2,
    response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } } });
  let o = null;
  try { o = JSON.parse(j.choices[0].message.content); } catch (e) {}
  check(o && Object.keys(o).sort().join() === "age,name" && typeof o.name === "string" && o.name.length <= 12 &&
        Number.isInteger(o.age) && o.age >= 0 && o.age <= 120, "json_schema: " + j.choices[0].message.content);
  // models
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  check(models.length === 1 && models[0] === "stories260K", "models: " + JSON.stringify(models));
  // completions
  const c = await client.completions.create({ model: "stories260K", prompt: "Once upon a time", max_tokens: 10, temperature: 0 });
  check(c.choices[0].text.length > 0 && c.usage.completion_tokens === 10, "completions");
  // errors surface as typed API errors
  async function status(p) { try { await p; return 200; } catch (e) { return e.status; } }
  check(await status(client.chat.completions.create({ model: "x", messages: [], max_tokens: 5 })) === 400, "empty messages");
  check(await status(client.chat.completions.create({ model: "x", messages, temperature: 9 })) === 400, "bad temperature");
  const bad = new OpenAI({ baseURL: base, apiKey: "wrong", maxRetries: 0 });
  check(await status(bad.models.list()) === 401, "wrong key");
  try { await client.chat.completions.create({ model: "x", messages, n: 17 }); check(false, "n=17 accepted"); }
  catch (e) { check(e instanceof OpenAI.BadRequestError && e.param === "n", "error object: " + e); }
  // logprobs: values <= 0, alternatives sorted, greedy picks the most likely, bytes spell the text
  const lp = await client.chat.completions.create({ model: "x", messages, max_tokens: 30, temperature: 0, logprobs: true,
                                                    top_logprobs: 4 });
  const recs = (lp.choices[0].logprobs && lp.choices[0].logprobs.content) || [];
  check(lp.choices[0].message.content === text && recs.length === lp.usage.completion_tokens, "logprobs count/text");
  check(Buffer.from(recs.flatMap((r) => r.bytes)).toString("utf8") === text, "logprob bytes spell the text");
  check(recs.every((r) => r.logprob <= 0 && r.top_logprobs.length === 4 &&
                          r.top_logprobs.every((t, i, a) => t.logprob <= 0 && (i === 0 || a[i - 1].logprob >= t.logprob)) &&
                          r.top_logprobs[0].token === r.token && r.top_logprobs[0].logprob === r.logprob),
        "logprob values: " + JSON.stringify(recs.slice(0, 2)));
  const lps = await client.chat.completions.create({ model: "x", messages, max_tokens: 30, temperature: 0, logprobs: true,
                                                     top_logprobs: 4, stream: true });
  const srecs = [];
  for await (const chunk of lps)
    for (const ch of chunk.choices) if (ch.logprobs && ch.logprobs.content) srecs.push(...ch.logprobs.content);
  check(JSON.stringify(srecs) === JSON.stringify(recs), "streamed logprobs differ");
  const cl = await client.completions.create({ model: "x", prompt: "Once upon a time", max_tokens: 10, temperature: 0, logprobs: 2 });
  check(cl.choices[0].logprobs.tokens.join("") === cl.choices[0].text &&
        cl.choices[0].logprobs.token_logprobs.every((v) => v <= 0), "completion logprobs");
  // n > 1 with a seed: deterministic choices, usage summed
  const nreq = { model: "x", messages, max_tokens: 15, temperature: 1, seed: 21, n: 2 };
  const n1 = await client.chat.completions.create(nreq), n2 = await client.chat.completions.create(nreq);
  check(n1.choices.length === 2 && n1.choices.map((c) => c.index).join() === "0,1" &&
        n1.choices.map((c) => c.message.content).join("|") === n2.choices.map((c) => c.message.content).join("|"),
        "n=2: " + JSON.stringify(n1.choices));
  const ns = await client.chat.completions.create({ ...nreq, stream: true });
  const parts = ["", ""];
  for await (const chunk of ns) for (const ch of chunk.choices) parts[ch.index] += ch.delta.content || "";
  check(parts.join("|") === n1.choices.map((c) => c.message.content).join("|"), "streamed n=2: " + JSON.stringify(parts));
  console.log("JS " + passes + " " + fails);
})().catch((e) => { console.log("FAIL: " + (e.stack || e)); console.log("JS 0 1"); });
JS
NODE_PATH="$cache/node_modules" timeout 300 node "$tmp/t.js" "http://127.0.0.1:$PORT/v1" >"$tmp/out" 2>&1
grep -v '^JS ' "$tmp/out"
read -r _ passes fails < <(grep '^JS ' "$tmp/out" || echo "JS 0 1")
echo "serve: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
