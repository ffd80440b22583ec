#!/usr/bin/env node
// bench/serve-load.js - a bounded load generator for OpenAI-compatible servers (orchard serve,
// llama.cpp's llama-server) on loopback: phases of N concurrent streaming clients, each
// looping POST /v1/completions with stream + include_usage for a fixed time. Reports per
// phase: requests, errors, aggregate generated tokens/s (from the usage chunks), time to
// first token p50/p99, and the server's RSS sampled from /proc every 500 ms.
// Node's standard library only.
//
//   node bench/serve-load.js --url http://127.0.0.1:8080 --pid PID [--phases 8,1]
//        [--seconds 60] [--max-tokens 64] [--warmup 1] [--label NAME] [--json FILE]
"use strict";
const http = require("http");
const fs = require("fs");

function parseArgs(argv) {
  const a = { url: "http://127.0.0.1:8080", pid: 0, phases: "8,1", seconds: 60, maxTokens: 64, warmup: 1,
              label: "server", json: "", temperature: 0.8 };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    const take = () => { i++; if (v === undefined) throw new Error(`${k} needs a value`); return v; };
    if (k === "--url") a.url = take();
    else if (k === "--pid") a.pid = parseInt(take(), 10);
    else if (k === "--phases") a.phases = take();
    else if (k === "--seconds") a.seconds = parseFloat(take());
    else if (k === "--max-tokens") a.maxTokens = parseInt(take(), 10);
    else if (k === "--warmup") a.warmup = parseInt(take(), 10);
    else if (k === "--label") a.label = take();
    else if (k === "--json") a.json = take();
    else if (k === "--temperature") a.temperature = parseFloat(take());
    else throw new Error(`unknown option ${k}`);
  }
  a.phases = a.phases.split(",").map((x) => parseInt(x, 10));
  if (a.phases.some((n) => !(n > 0)) || !(a.seconds > 0) || !(a.maxTokens > 0))
    throw new Error("--phases, --seconds and --max-tokens must be positive");
  const u = new URL(a.url);
  if (!["127.0.0.1", "localhost", "[::1]"].includes(u.hostname))
    throw new Error("loopback only: --url must point at 127.0.0.1 or localhost");
  a.host = u.hostname === "[::1]" ? "::1" : u.hostname;
  a.port = parseInt(u.port || "80", 10);
  return a;
}

const PROMPTS = ["Once upon a time", "The little dog", "One day, Lily", "Tom and Sue went", "The sun was",
                 "A big bear", "In the park", "Mom said"];

function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? parseInt(m[1], 10) : 0;
  } catch (e) {
    return 0;
  }
}

// One streamed completion: resolves {ok, tokens, ttft, why}.
function oneRequest(a, agent, body) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let ttft = -1, buf = "", tokens = -1, chunks = 0, done = false, settled = false;
    const finish = (r) => { if (!settled) { settled = true; resolve(r); } };
    const req = http.request({ host: a.host, port: a.port, path: "/v1/completions", method: "POST", agent,
                               headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } },
      (res) => {
        res.setEncoding("utf8");
        res.on("data", (d) => {
          buf += d;
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).replace(/\r$/, "");
            buf = buf.slice(nl + 1);
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") { done = true; continue; }
            let ev;
            try { ev = JSON.parse(data); } catch (e) { continue; }
            if (ev.error) { finish({ ok: false, why: "error event: " + JSON.stringify(ev.error).slice(0, 200) }); continue; }
            const ch = ev.choices && ev.choices[0];
            if (ch && typeof ch.text === "string" && ch.text.length > 0) {
              chunks++;
              if (ttft < 0) ttft = Number(process.hrtime.bigint() - t0) / 1e6;
            }
            if (ev.usage && typeof ev.usage.completion_tokens === "number") tokens = ev.usage.completion_tokens;
          }
        });
        res.on("end", () => {
          if (res.statusCode !== 200) finish({ ok: false, why: `status ${res.statusCode}` });
          else if (!done) finish({ ok: false, why: "stream ended without [DONE]" });
          else finish({ ok: true, tokens: tokens >= 0 ? tokens : chunks, ttft, usage: tokens >= 0 });
        });
        res.on("error", (e) => finish({ ok: false, why: String(e) }));
      });
    req.setTimeout(300000, () => req.destroy(new Error("timeout")));
    req.on("error", (e) => finish({ ok: false, why: `${e} (after ${ttft < 0 ? "no text" : "text"}${done ? ", [DONE] seen" : ""})` }));
    req.end(body);
  });
}

function pct(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

async function phase(a, clients, seconds, seedBase) {
  // a fresh connection per request, outside any pool: a pooled socket can be handed to the
  // next queued request as a response ends, and llama-server closes its streamed connections
  // (the request then fails with "socket hang up" before reaching it); loopback connects
  // cost nothing next to a request
  const agent = false;
  const stopAt = Date.now() + seconds * 1000;
  const ttfts = [], errors = [];
  let tokens = 0, requests = 0, noUsage = 0;
  const rss = [];
  const sample = () => { const r = rssKiB(a.pid); if (r) rss.push(r); };
  sample();
  const timer = setInterval(sample, 500);
  const t0 = Date.now();
  async function client(i) {
    for (let k = 0; Date.now() < stopAt; k++) {
      const body = JSON.stringify({ prompt: PROMPTS[(i + k) % PROMPTS.length], max_tokens: a.maxTokens,
                                    temperature: a.temperature, seed: seedBase + i * 100000 + k, stream: true,
                                    stream_options: { include_usage: true } });
      const r = await oneRequest(a, agent, body);
      if (!r.ok) { errors.push(r.why); continue; }
      requests++;
      tokens += r.tokens;
      if (!r.usage) noUsage++;
      if (r.ttft >= 0) ttfts.push(r.ttft);
    }
  }
  await Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
  const elapsed = (Date.now() - t0) / 1000;
  clearInterval(timer);
  sample();
  ttfts.sort((x, y) => x - y);
  return { clients, seconds: elapsed, requests, errors: errors.length, error_examples: errors.slice(0, 3), tokens,
           tok_per_s: tokens / elapsed, ttft_p50_ms: pct(ttfts, 50), ttft_p99_ms: pct(ttfts, 99),
           rss_kib: { first: rss[0] || 0, min: Math.min(...rss), max: Math.max(...rss), last: rss[rss.length - 1] || 0 },
           requests_without_usage: noUsage };
}

(async () => {
  let a;
  try { a = parseArgs(process.argv); } catch (e) { console.error("serve-load: " + e.message); process.exit(2); }
  if (a.warmup > 0) await phase(a, 1, a.warmup, 7);
  const results = [];
  for (const n of a.phases) {
    const r = await phase(a, n, a.seconds, 1000 * n);
    results.push(r);
    console.error(`[${a.label}] ${n} client(s): ${r.requests} requests, ${r.errors} errors, ` +
                  `${r.tok_per_s.toFixed(2)} tok/s aggregate, TTFT p50 ${r.ttft_p50_ms.toFixed(0)} ms ` +
                  `p99 ${r.ttft_p99_ms.toFixed(0)} ms, RSS ${(r.rss_kib.min / 1024).toFixed(0)}-` +
                  `${(r.rss_kib.max / 1024).toFixed(0)} MiB` + (r.errors ? ` (${r.error_examples.join("; ")})` : ""));
  }
  const one = results.find((r) => r.clients === 1), many = results.find((r) => r.clients > 1);
  const summary = { label: a.label, max_tokens: a.maxTokens, phases: results,
                    gain: one && many && one.tok_per_s > 0 ? many.tok_per_s / one.tok_per_s : null };
  if (a.json) fs.writeFileSync(a.json, JSON.stringify(summary, null, 1) + "\n");
  console.log(JSON.stringify(summary));
  process.exit(results.some((r) => r.errors > 0) ? 1 : 0);
})();
