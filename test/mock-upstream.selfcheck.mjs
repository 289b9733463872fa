// Self-check for test/mock-upstream.mjs: exercises every route and cue.
// Run: node test/mock-upstream.selfcheck.mjs   (exit code 0 = all PASS)

import http from "node:http";
import zlib from "node:zlib";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import {
  startMockUpstream,
  chatStreamBytes,
  chatStreamEvents,
  responsesStreamBytes,
  responsesStreamEvents,
} from "./mock-upstream.mjs";

const results = [];
let mock;

async function check(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push(true);
    console.log(`PASS ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.push(false);
    console.log(`FAIL ${name}: ${err?.stack ?? err}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
function eq(actual, expected, msg) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${msg}: expected ${e}, got ${a}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let ridCounter = 0;
const newRid = (tag) => `rid-${tag}-${++ridCounter}`;

/**
 * One request on a fresh connection, via node:http, collecting everything:
 * status, headers, body bytes, number of reads, and how it ended.
 */
function raw(path, { method = "POST", body, headers = {}, abortAfterMs, pauseMs } = {}) {
  return new Promise((resolve) => {
    const out = { status: null, headers: null, bytes: Buffer.alloc(0), reads: 0, error: null, ended: false };
    const chunks = [];
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    const req = http.request(`${mock.url}${path}`, {
      method,
      agent: false,
      headers: { ...(payload !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    });
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      out.bytes = Buffer.concat(chunks);
      resolve(out);
    };
    if (abortAfterMs !== undefined) {
      setTimeout(() => {
        out.error ??= "client-aborted";
        req.destroy();
        finish();
      }, abortAfterMs);
    }
    req.on("error", (err) => {
      out.error ??= err.code ?? err.message;
      finish();
    });
    req.on("response", (res) => {
      out.status = res.statusCode;
      out.headers = res.headers;
      if (pauseMs) {
        res.pause();
        setTimeout(() => res.resume(), pauseMs);
      }
      res.on("data", (c) => {
        out.reads++;
        chunks.push(c);
      });
      res.on("end", () => {
        out.ended = true;
        finish();
      });
      res.on("error", (err) => {
        out.error ??= err.code ?? err.message;
        finish();
      });
      res.on("close", () => {
        if (!out.ended) out.error ??= "closed-before-end";
        finish();
      });
    });
    req.end(payload);
  });
}

const chat = (body, opts = {}) => raw("/v1/chat/completions", { body, ...opts });
const respond = (body, opts = {}) => raw("/v1/responses", { body, ...opts });
const stats = async () => (await fetch(`${mock.url}/__mock/stats`)).json();

async function waitFor(predicate, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await sleep(20);
  }
  return false;
}

const parseEvents = (text) =>
  text
    .split(/\r\n\r\n|\n\n|\r\r/)
    .filter(Boolean)
    .map((e) => e.replace(/^data: /, ""));

function assertStream(out, body, msg = "stream") {
  eq(out.status, 200, `${msg} status`);
  eq(out.headers["content-type"], "text/event-stream", `${msg} content-type`);
  eq(out.headers["cache-control"], "no-cache", `${msg} cache-control`);
  assert(out.ended && !out.error, `${msg} should end cleanly, error=${out.error}`);
  const expected = chatStreamBytes(body);
  assert(out.bytes.equals(expected), `${msg}: bytes differ from chatStreamBytes (got ${out.bytes.length}, want ${expected.length})`);
}

// ---------------------------------------------------------------------------

mock = await startMockUpstream();
console.log(`mock at ${mock.url} (baseUrl ${mock.baseUrl})`);

await check("startMockUpstream API shape", async () => {
  assert(Number.isInteger(mock.port) && mock.port > 0, "port");
  eq(mock.url, `http://127.0.0.1:${mock.port}`, "url");
  eq(mock.baseUrl, `${mock.url}/v1`, "baseUrl");
  assert(typeof mock.close === "function", "close");
});

await check("non-stream default completion", async () => {
  const res = await fetch(`${mock.baseUrl}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "m-1", messages: [{ role: "user", content: "hi there you" }] }),
  });
  eq(res.status, 200, "status");
  eq(res.headers.get("content-type"), "application/json", "content-type");
  const j = await res.json();
  assert(/^chatcmpl-mock-\d+$/.test(j.id), `id ${j.id}`);
  eq(j.object, "chat.completion", "object");
  assert(Number.isInteger(j.created) && Math.abs(j.created - Date.now() / 1000) < 5, "created");
  eq(j.model, "m-1", "model");
  eq(j.choices[0].message, { role: "assistant", content: "Hello from the mock upstream." }, "message");
  eq(j.choices[0].finish_reason, "stop", "finish_reason");
  eq(j.usage, { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 }, "usage");
});

await check("non-stream mock.reply", async () => {
  const out = await chat({ model: "m", messages: [], mock: { reply: "héllo wörld 🙂" } });
  eq(JSON.parse(out.bytes).choices[0].message.content, "héllo wörld 🙂", "content");
});

await check("stream default: bytes == chatStreamBytes, event shapes", async () => {
  const body = { model: "m-s", stream: true, messages: [{ role: "user", content: "x" }] };
  const out = await chat(body);
  assertStream(out, body);
  const events = parseEvents(out.bytes.toString());
  eq(events.at(-1), "[DONE]", "last event");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert(chunks.every((c) => c.object === "chat.completion.chunk" && c.model === "m-s"), "chunk object/model");
  eq(chunks[0].choices[0].delta, { role: "assistant", content: "" }, "first delta");
  const text = chunks.slice(1, -1).map((c) => c.choices[0].delta.content).join("");
  eq(text, "Hello from the mock upstream.", "content joins to reply");
  eq(chunks.length - 2, 5, "one chunk per word");
  eq(chunks.at(-1).choices[0], { index: 0, delta: {}, logprobs: null, finish_reason: "stop" }, "final chunk");
  eq(chatStreamEvents(body).join(""), out.bytes.toString(), "chatStreamEvents joins to the bytes");
});

await check("stream include_usage: usage chunk with choices []", async () => {
  const body = { model: "m", stream: true, stream_options: { include_usage: true }, messages: [{ role: "user", content: "a b" }] };
  const out = await chat(body);
  assertStream(out, body);
  const events = parseEvents(out.bytes.toString());
  const usage = JSON.parse(events.at(-2));
  eq(usage.choices, [], "choices");
  eq(usage.usage, { prompt_tokens: 2, completion_tokens: 5, total_tokens: 7 }, "usage");
});

await check("stream mock.reply with multi-byte UTF-8", async () => {
  const body = { model: "m", stream: true, mock: { reply: "héllo wörld 🙂" } };
  const out = await chat(body);
  assertStream(out, body);
  const chunks = parseEvents(out.bytes.toString()).slice(1, -2).map((e) => JSON.parse(e).choices[0].delta.content);
  eq(chunks, ["héllo ", "wörld ", "🙂"], "word pieces");
});

await check("stream mock.events: 2000 (and 20000 with a paused reader: backpressure)", async () => {
  const body = { model: "m", stream: true, mock: { events: 2000 } };
  const out = await chat(body);
  assertStream(out, body);
  const events = parseEvents(out.bytes.toString());
  eq(events.length, 2000 + 3, "event count");
  eq(JSON.parse(events[1]).choices[0].delta.content, "tok0 ", "first tok");
  eq(JSON.parse(events[2000]).choices[0].delta.content, "tok1999 ", "last tok");
  const big = { model: "m", stream: true, mock: { events: 20000 } };
  const out2 = await chat(big, { pauseMs: 300 });
  assertStream(out2, big, "20000 events");
});

await check("stream mock.interval_ms paces events", async () => {
  const body = { model: "m", stream: true, mock: { events: 4, interval_ms: 40 } };
  const t0 = Date.now();
  const out = await chat(body);
  const elapsed = Date.now() - t0;
  assertStream(out, body);
  // 7 events -> 6 gaps of 40 ms
  assert(elapsed >= 230, `elapsed ${elapsed} ms, want >= 240ish`);
  assert(out.reads >= 5, `events should arrive as separate reads, got ${out.reads}`);
});

await check("stream line_ending \\r\\n and \\r", async () => {
  for (const le of ["\r\n", "\r"]) {
    const body = { model: "m", stream: true, mock: { line_ending: le } };
    const out = await chat(body);
    assertStream(out, body, JSON.stringify(le));
    const text = out.bytes.toString();
    assert(text.endsWith(`data: [DONE]${le}${le}`), `ends with DONE${JSON.stringify(le)}`);
    if (le === "\r") assert(!text.includes("\n"), "no \\n with \\r endings");
    else assert(!/[^\r]\n/.test(text), "no bare \\n with \\r\\n endings");
  }
});

await check("stream split: bytes, chunk_size 5 -> many small reads", async () => {
  const body = { model: "m", stream: true, mock: { split: "bytes", chunk_size: 5 } };
  const out = await chat(body);
  assertStream(out, body);
  const pieces = Math.ceil(chatStreamBytes(body).length / 5);
  assert(out.reads > pieces / 3, `reads ${out.reads} for ${pieces} pieces`);
});

await check("stream error_event", async () => {
  const body = { model: "m", stream: true, mock: { error_event: true } };
  const out = await chat(body);
  assertStream(out, body);
  const text = out.bytes.toString();
  const events = chatStreamEvents(body);
  eq(events.length, 4, "role, 1 content, error, DONE");
  eq(
    events[2],
    'event: error\ndata: {"error":{"message":"provider error","type":"server_error","param":null,"code":"provider_error"}}\n\n',
    "error event",
  );
  assert(text.endsWith("data: [DONE]\n\n"), "DONE after error");
});

await check("stream reset_after_events: 2", async () => {
  const body = { model: "m", stream: true, mock: { reset_after_events: 2 } };
  const rid = newRid("rae");
  const out = await chat(body, { headers: { "x-request-id": rid } });
  eq(out.status, 200, "status");
  assert(out.error, "client should see an error");
  assert(!out.ended, "must not end cleanly");
  eq(out.bytes.toString(), chatStreamEvents(body).slice(0, 2).join(""), "first 2 events");
  assert(await waitFor(async () => (await stats()).reset.includes(rid)), "stats.reset has rid");
  assert(!(await stats()).aborted.includes(rid), "a mock-side cut is not a client abort");
});

await check("stream reset_after_bytes: exact prefix at many offsets (incl. mid-UTF-8)", async () => {
  const base = { model: "m", stream: true, mock: { reply: "héllo wörld 🙂" } };
  const full = chatStreamBytes(base);
  const emoji = full.indexOf(Buffer.from("🙂"));
  const e = full.indexOf(Buffer.from("é"));
  const offsets = [0, 1, 5, 6, e + 1, emoji + 1, emoji + 2, emoji + 3, full.length - 1, full.length - 7];
  for (const n of offsets) {
    const body = { ...base, mock: { ...base.mock, reset_after_bytes: n } };
    const expected = chatStreamBytes(body).subarray(0, n);
    const out = await chat(body);
    eq(out.status, 200, `status @${n}`);
    assert(out.error && !out.ended, `error expected @${n}`);
    assert(out.bytes.equals(expected), `@${n}: got ${out.bytes.length} bytes ${JSON.stringify(out.bytes.toString("latin1").slice(-20))}`);
  }
});

await check("stream end_after_bytes: exact prefix, clean end", async () => {
  const base = { model: "m", stream: true, mock: { reply: "héllo wörld 🙂" } };
  const emoji = chatStreamBytes(base).indexOf(Buffer.from("🙂"));
  for (const n of [0, 10, emoji + 2]) {
    const body = { ...base, mock: { ...base.mock, end_after_bytes: n } };
    const out = await chat(body);
    assert(out.ended && !out.error, `clean end @${n} (error ${out.error})`);
    assert(out.bytes.equals(chatStreamBytes(body).subarray(0, n)), `bytes @${n}`);
  }
});

await check("stream end_without_done", async () => {
  const body = { model: "m", stream: true, mock: { end_without_done: true } };
  const out = await chat(body);
  assert(out.ended && !out.error, "clean end");
  eq(out.bytes.toString(), chatStreamEvents(body).slice(0, -1).join(""), "all but DONE");
  assert(!out.bytes.toString().includes("[DONE]"), "no DONE");
});

await check("stream split + reset_after_bytes combine", async () => {
  const body = { model: "m", stream: true, mock: { split: "bytes", chunk_size: 3, reset_after_bytes: 50 } };
  const out = await chat(body);
  assert(out.error && !out.ended, "error");
  assert(out.bytes.equals(chatStreamBytes(body).subarray(0, 50)), `50 bytes, got ${out.bytes.length}`);
});

await check("stream stall_after_events: 2 -> silence, client abort recorded", async () => {
  const rid = newRid("stall");
  const body = { model: "m", stream: true, mock: { stall_after_events: 2 } };
  const out = await chat(body, { headers: { "x-request-id": rid }, abortAfterMs: 300 });
  eq(out.status, 200, "status");
  eq(out.bytes.toString(), chatStreamEvents(body).slice(0, 2).join(""), "first 2 events only");
  eq(out.error, "client-aborted", "still open until we aborted");
  assert(await waitFor(async () => (await stats()).aborted.includes(rid)), "stats.aborted has rid");
});

await check("hang: abort after 200 ms -> in /__mock/stats aborted", async () => {
  const rid = newRid("hang");
  const t0 = Date.now();
  const out = await chat({ model: "m", mock: { hang: true } }, { headers: { "x-request-id": rid }, abortAfterMs: 200 });
  eq(out.status, null, "no response");
  eq(out.error, "client-aborted", "aborted by client");
  assert(Date.now() - t0 >= 190, "waited");
  assert(await waitFor(async () => (await stats()).aborted.includes(rid)), "stats.aborted has rid");
});

await check("hang via fetch + AbortSignal.timeout", async () => {
  const rid = newRid("hangf");
  const err = await fetch(`${mock.baseUrl}/chat/completions`, {
    method: "POST",
    headers: { "x-request-id": rid },
    body: JSON.stringify({ model: "m", mock: { hang: true } }),
    signal: AbortSignal.timeout(200),
  }).then(
    () => null,
    (e) => e,
  );
  assert(err && (err.name === "TimeoutError" || err.name === "AbortError"), `expected abort, got ${err}`);
  assert(await waitFor(async () => (await stats()).aborted.includes(rid)), "stats.aborted has rid");
});

await check("reset: true -> socket error, no response", async () => {
  const out = await chat({ model: "m", mock: { reset: true } });
  eq(out.status, null, "no status");
  assert(["ECONNRESET", "socket hang up"].includes(out.error), `error ${out.error}`);
  const viaFetch = await fetch(`${mock.baseUrl}/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ model: "m", mock: { reset: true } }),
  }).then(
    () => null,
    (e) => e,
  );
  assert(viaFetch instanceof TypeError, `fetch should reject, got ${viaFetch}`);
});

await check("delay_ms: 150", async () => {
  const t0 = Date.now();
  const out = await chat({ model: "m", mock: { delay_ms: 150 } });
  const elapsed = Date.now() - t0;
  eq(out.status, 200, "status");
  assert(elapsed >= 145, `elapsed ${elapsed}`);
});

await check("status 429 + body + content_type + headers", async () => {
  const errBody = '{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}';
  const out = await chat({
    model: "m",
    mock: { status: 429, body: errBody, content_type: "application/json", headers: { "retry-after": "7" } },
  });
  eq(out.status, 429, "status");
  eq(out.bytes.toString(), errBody, "body");
  eq(out.headers["content-type"], "application/json", "content-type");
  eq(out.headers["retry-after"], "7", "retry-after");
});

await check("status 503 text/plain (also with stream: true)", async () => {
  for (const stream of [false, true]) {
    const out = await chat({ model: "m", stream, mock: { status: 503, body: "upstream overloaded", content_type: "text/plain" } });
    eq(out.status, 503, "status");
    eq(out.bytes.toString(), "upstream overloaded", "body");
    eq(out.headers["content-type"], "text/plain", "content-type");
  }
});

await check("status without body -> empty body, content-length 0", async () => {
  for (const status of [500, 200]) {
    const out = await chat({ model: "m", mock: { status } });
    eq(out.status, status, "status");
    eq(out.bytes.length, 0, "empty");
    eq(out.headers["content-length"], "0", "content-length");
    eq(out.headers["content-type"], undefined, "no content-type");
  }
  const out = await chat({ model: "m", mock: { status: 200, body: "" } });
  eq([out.status, out.bytes.length], [200, 0], "status 200 body ''");
});

await check("content_type: null omits the header", async () => {
  const out = await chat({ model: "m", mock: { status: 502, body: "<html>bad gateway</html>", content_type: null } });
  eq(out.status, 502, "status");
  eq(out.headers["content-type"], undefined, "no content-type");
  eq(out.bytes.toString(), "<html>bad gateway</html>", "body");
});

await check("redirect: 302 with location", async () => {
  const out = await chat({ model: "m", mock: { redirect: "http://example.invalid/elsewhere" } });
  eq(out.status, 302, "status");
  eq(out.headers.location, "http://example.invalid/elsewhere", "location");
  assert(out.bytes.length > 0, "small body");
  const res = await fetch(`${mock.baseUrl}/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ model: "m", mock: { redirect: "http://example.invalid/x" } }),
    redirect: "manual",
  });
  eq(res.status, 302, "fetch manual status");
});

await check("set_cookie: set-cookie + hop-by-hop headers", async () => {
  for (const stream of [false, true]) {
    const out = await chat({ model: "m", stream, mock: { set_cookie: true } });
    eq(out.status, 200, "status");
    eq(out.headers["set-cookie"], ["session=secret"], "set-cookie");
    eq(out.headers["keep-alive"], "timeout=5", "keep-alive");
    eq(out.headers.connection, "keep-alive, x-secret-hop", "connection");
    eq(out.headers["x-secret-hop"], "secret", "x-secret-hop");
  }
});

await check("headers cue on a normal completion and a stream", async () => {
  for (const stream of [false, true]) {
    const out = await chat({ model: "m", stream, mock: { headers: { "x-ratelimit-remaining": "3", "X-Upper": "Y" } } });
    eq(out.headers["x-ratelimit-remaining"], "3", "custom");
    eq(out.headers["x-upper"], "Y", "case-insensitive");
  }
});

await check("bad JSON -> 400 JSON; non-object -> 400", async () => {
  for (const body of ["{not json", "[1,2]", "null"]) {
    const out = await chat(body);
    eq(out.status, 400, `status for ${body}`);
    const j = JSON.parse(out.bytes);
    eq(j.error.type, "invalid_request_error", "type");
    eq([j.error.param, j.error.code], [null, null], "param/code");
  }
  const res = await fetch(`${mock.url}/v1/models`);
  eq(res.status, 200, "server still alive");
});

await check("GET /v1/models", async () => {
  const j = await (await fetch(`${mock.baseUrl}/models`)).json();
  eq(j.object, "list", "object");
  eq(j.data.map((m) => m.id), ["mock-model"], "ids");
});

await check("404 no route", async () => {
  for (const [method, path] of [["GET", "/nope"], ["GET", "/v1/chat/completions"], ["POST", "/v1/models"]]) {
    const res = await fetch(`${mock.url}${path}`, { method });
    eq(res.status, 404, `${method} ${path}`);
    eq(await res.json(), { error: { message: "mock: no route", type: "invalid_request_error", param: null, code: null } }, "body");
  }
});

await check("/__mock/requests: record, filter, clear", async () => {
  const del = await fetch(`${mock.url}/__mock/requests`, { method: "DELETE" });
  eq(del.status, 204, "DELETE status");
  eq(await del.text(), "", "DELETE body");
  eq(await (await fetch(`${mock.url}/__mock/requests`)).json(), [], "empty after clear");
  const rid = newRid("rec");
  const bodyText = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], extra: 1 });
  await fetch(`${mock.baseUrl}/chat/completions`, {
    method: "POST",
    headers: { "X-Request-Id": rid, Authorization: "Bearer up-key", "content-type": "application/json" },
    body: bodyText,
  }).then((r) => r.text());
  await fetch(`${mock.baseUrl}/chat/completions`, { method: "POST", body: "{}" }).then((r) => r.text());
  const all = await (await fetch(`${mock.url}/__mock/requests`)).json();
  eq(all.length, 2, "two records");
  eq(all[1].request_id, null, "no x-request-id -> null");
  const mine = await (await fetch(`${mock.url}/__mock/requests?request_id=${rid}`)).json();
  eq(mine.length, 1, "filtered");
  const r = mine[0];
  eq([r.method, r.path, r.body, r.request_id], ["POST", "/v1/chat/completions", bodyText, rid], "fields");
  eq(r.headers.authorization, "Bearer up-key", "lowercased headers");
  assert(typeof r.time === "number" && Math.abs(r.time - Date.now()) < 5000, "time");
});

await check("/__mock/requests keeps at most 1000", async () => {
  await fetch(`${mock.url}/__mock/requests`, { method: "DELETE" });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const get = (i) =>
    new Promise((resolve, reject) => {
      http
        .get(`${mock.url}/v1/models`, { agent, headers: { "x-request-id": `bulk-${i}` } }, (res) => {
          res.resume();
          res.on("end", resolve);
        })
        .on("error", reject);
    });
  for (let i = 0; i < 1010; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, 1010 - i) }, (_, k) => get(i + k)));
  }
  agent.destroy();
  const all = await (await fetch(`${mock.url}/__mock/requests`)).json();
  eq(all.length, 1000, "bounded");
  assert(!all.some((r) => r.request_id === "bulk-0"), "oldest dropped");
  await fetch(`${mock.url}/__mock/requests`, { method: "DELETE" });
});

await check("/__mock/stats: completed + open_connections", async () => {
  const rid = newRid("done");
  await chat({ model: "m" }, { headers: { "x-request-id": rid } });
  const s = await stats();
  assert(s.completed.includes(rid), "completed has rid");
  assert(!s.aborted.includes(rid), "not aborted");
  assert(Number.isInteger(s.open_connections) && s.open_connections >= 1, `open_connections ${s.open_connections}`);
  const hanging = chat({ model: "m", mock: { hang: true } }, { abortAfterMs: 400 });
  await sleep(100);
  const during = await stats();
  assert(during.open_connections >= 2, `open while hanging: ${during.open_connections}`);
  await hanging;
});

await check("idle keep-alive socket survives 6.5 s (keepAliveTimeout = 0)", async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const get = () =>
    new Promise((resolve, reject) => {
      const req = http.get(`${mock.url}/v1/models`, { agent }, (res) => res.resume().on("end", () => resolve(req.reusedSocket)));
      req.on("error", reject);
    });
  eq(await get(), false, "first request opens a socket");
  await sleep(6500);
  eq(await get(), true, "second request reuses the idle socket");
  agent.destroy();
});

// ---- the Responses API ------------------------------------------------------

/** Each event of a Responses stream as [event line's type, parsed data]. */
const responsesEventsOf = (text, eol = "\n") =>
  text
    .split(eol + eol)
    .filter(Boolean)
    .map((event) => {
      const [eventLine, dataLine, ...rest] = event.split(eol);
      assert(eventLine.startsWith("event: ") && dataLine.startsWith("data: ") && rest.length === 0, `event shape: ${event}`);
      return [eventLine.slice(7), JSON.parse(dataLine.slice(6))];
    });

function assertResponsesStream(out, body, msg = "responses stream") {
  eq(out.status, 200, `${msg} status`);
  eq(out.headers["content-type"], "text/event-stream", `${msg} content-type`);
  assert(out.ended && !out.error, `${msg} should end cleanly, error=${out.error}`);
  assert(out.bytes.equals(responsesStreamBytes(body)), `${msg}: bytes differ from responsesStreamBytes`);
}

await check("responses: non-stream response object", async () => {
  const out = await respond({ model: "m-r", input: [{ role: "user", content: "hi there you" }], instructions: "be kind" });
  eq(out.status, 200, "status");
  eq(out.headers["content-type"], "application/json", "content-type");
  const j = JSON.parse(out.bytes);
  assert(/^resp_mock_\d+$/.test(j.id), `id ${j.id}`);
  eq([j.object, j.status, j.model, j.instructions, j.error], ["response", "completed", "m-r", "be kind", null], "fields");
  assert(Number.isInteger(j.created_at) && Math.abs(j.created_at - Date.now() / 1000) < 5, "created_at");
  eq(j.output.length, 1, "one output item");
  const [item] = j.output;
  eq([item.type, item.role, item.status], ["message", "assistant", "completed"], "message item");
  assert(/^msg_mock_\d+$/.test(item.id), `item id ${item.id}`);
  eq(item.content, [{ type: "output_text", text: "Hello from the mock upstream.", annotations: [], logprobs: [] }], "content");
  eq(
    j.usage,
    { input_tokens: 5, input_tokens_details: { cached_tokens: 0 }, output_tokens: 5, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 10 },
    "usage",
  );
  const reply = JSON.parse((await respond({ model: "m", input: "x", mock: { reply: "héllo 🙂" } })).bytes);
  eq(reply.output[0].content[0].text, "héllo 🙂", "mock.reply");
});

await check("responses: stream events, types, sequence numbers and text", async () => {
  const body = { model: "m-rs", input: "hi", stream: true, mock: { reply: "héllo wörld 🙂" } };
  const out = await respond(body);
  assertResponsesStream(out, body);
  eq(responsesStreamEvents(body).join(""), out.bytes.toString(), "responsesStreamEvents joins to the bytes");
  const events = responsesEventsOf(out.bytes.toString());
  eq(
    events.map(([type]) => type),
    [
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ],
    "event types",
  );
  events.forEach(([type, data], i) => {
    eq(data.type, type, `data.type of event ${i}`);
    eq(data.sequence_number, i, `sequence_number of event ${i}`);
  });
  const data = events.map(([, d]) => d);
  eq([data[0].response.id, data[0].response.status, data[0].response.model], ["resp_mock_stream", "in_progress", "m-rs"], "created");
  eq(data.filter((d) => d.type === "response.output_text.delta").map((d) => d.delta), ["héllo ", "wörld ", "🙂"], "deltas");
  eq(data[7].text, "héllo wörld 🙂", "output_text.done");
  const done = data.at(-1).response;
  eq([done.id, done.status, done.output[0].content[0].text], ["resp_mock_stream", "completed", "héllo wörld 🙂"], "completed");
  eq(done.usage.output_tokens, 3, "usage");
});

await check("responses: stream line_ending, events, id and created cues", async () => {
  for (const le of ["\r\n", "\r"]) {
    const body = { model: "m", stream: true, mock: { line_ending: le, events: 3, id: "resp_custom", created: 1 } };
    const out = await respond(body);
    assertResponsesStream(out, body, JSON.stringify(le));
    const events = responsesEventsOf(out.bytes.toString(), le);
    eq(events.length, 3 + 8, "3 deltas and 8 other events");
    eq([events[0][1].response.id, events[0][1].response.created_at], ["resp_custom", 1], "id and created");
    if (le === "\r") assert(!out.bytes.includes(0x0a), "no \\n with \\r endings");
  }
});

await check("responses: error_event sends an in-band error, then response.failed", async () => {
  const body = { model: "m", stream: true, mock: { error_event: true } };
  const out = await respond(body);
  assertResponsesStream(out, body);
  const events = responsesEventsOf(out.bytes.toString());
  eq(events.map(([type]) => type).slice(-3), ["response.output_text.delta", "error", "response.failed"], "last events");
  eq(events.at(-2)[1], { type: "error", sequence_number: 5, code: "provider_error", message: "provider error", param: null }, "error");
  eq(events.at(-1)[1].response.error, { code: "server_error", message: "provider error" }, "failure");
});

await check("responses: transport cues (end_without_done, reset_*, end_after_bytes, stall, split)", async () => {
  const base = { model: "m", stream: true, mock: { reply: "héllo wörld 🙂" } };
  const all = responsesStreamEvents(base);
  const cued = (mock) => ({ ...base, mock: { ...base.mock, ...mock } });

  const noDone = await respond(cued({ end_without_done: true }));
  assert(noDone.ended && !noDone.error, "end_without_done ends cleanly");
  eq(noDone.bytes.toString(), all.slice(0, -1).join(""), "all but response.completed");

  const reset = await respond(cued({ reset_after_events: 3 }));
  assert(reset.error && !reset.ended, "reset_after_events errors");
  eq(reset.bytes.toString(), all.slice(0, 3).join(""), "first 3 events");

  const full = responsesStreamBytes(base);
  for (const n of [0, 7, full.indexOf(Buffer.from("🙂")) + 2, full.length - 1]) {
    const cut = await respond(cued({ reset_after_bytes: n }));
    assert(cut.error && cut.bytes.equals(full.subarray(0, n)), `reset_after_bytes ${n}`);
    const ended = await respond(cued({ end_after_bytes: n }));
    assert(ended.ended && !ended.error && ended.bytes.equals(full.subarray(0, n)), `end_after_bytes ${n}`);
  }

  const stalled = await respond(cued({ stall_after_events: 2 }), { abortAfterMs: 300 });
  eq([stalled.bytes.toString(), stalled.error], [all.slice(0, 2).join(""), "client-aborted"], "stall_after_events");

  const split = await respond(cued({ split: "bytes", chunk_size: 5 }));
  assert(split.bytes.equals(full) && split.reads > full.length / 15, `split: ${split.reads} reads`);
});

await check("responses: failure cues (status, body, headers, hang, reset, delay, redirect, set_cookie)", async () => {
  const errBody = '{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}';
  const limited = await respond({ model: "m", mock: { status: 429, body: errBody, headers: { "retry-after": "7" } } });
  eq([limited.status, limited.bytes.toString(), limited.headers["retry-after"]], [429, errBody, "7"], "status/body/headers");
  const plain = await respond({ model: "m", stream: true, mock: { status: 503, body: "busy", content_type: "text/plain" } });
  eq([plain.status, plain.headers["content-type"]], [503, "text/plain"], "content_type");
  const empty = await respond({ model: "m", mock: { status: 500 } });
  eq([empty.status, empty.bytes.length], [500, 0], "empty body");
  const hang = await respond({ model: "m", mock: { hang: true } }, { abortAfterMs: 150 });
  eq([hang.status, hang.error], [null, "client-aborted"], "hang");
  const reset = await respond({ model: "m", mock: { reset: true } });
  eq(reset.status, null, "reset");
  const t0 = Date.now();
  eq((await respond({ model: "m", mock: { delay_ms: 120 } })).status, 200, "delay status");
  assert(Date.now() - t0 >= 115, "delay_ms waits");
  const moved = await respond({ model: "m", mock: { redirect: "http://example.invalid/x" } });
  eq([moved.status, moved.headers.location], [302, "http://example.invalid/x"], "redirect");
  for (const stream of [false, true]) {
    const cookie = await respond({ model: "m", stream, mock: { set_cookie: true } });
    eq([cookie.status, cookie.headers["set-cookie"]], [200, ["session=secret"]], `set_cookie (stream ${stream})`);
  }
});

await check("responses: requests are recorded; GET /v1/responses is no route", async () => {
  const rid = newRid("resp-rec");
  const bodyText = JSON.stringify({ model: "m", input: "hi" });
  await fetch(`${mock.baseUrl}/responses`, { method: "POST", headers: { "x-request-id": rid }, body: bodyText }).then((r) => r.text());
  const [record] = await (await fetch(`${mock.url}/__mock/requests?request_id=${rid}`)).json();
  eq([record.method, record.path, record.body], ["POST", "/v1/responses", bodyText], "record");
  assert(await waitFor(async () => (await stats()).completed.includes(rid)), "stats.completed has rid");
  eq((await fetch(`${mock.baseUrl}/responses`)).status, 404, "GET");
});

// ---- huge, raw and stalled bodies ---------------------------------------------

/** Each model route, for cues that must behave the same on both. */
const ROUTES = ["/v1/chat/completions", "/v1/responses"];
const FILL_CHECK_BYTES = 1024 * 1024;
const fillBuffers = new Map();

/** Bytes in `piece` that are not `char`. */
function notChar(piece, char) {
  let fill = fillBuffers.get(char);
  if (!fill) fillBuffers.set(char, (fill = Buffer.alloc(FILL_CHECK_BYTES, char)));
  let bad = 0;
  for (let i = 0; i < piece.length; i += fill.length) {
    const part = piece.subarray(i, i + fill.length);
    if (part.equals(fill.subarray(0, part.length))) continue;
    for (const b of part) if (b !== fill[0]) bad++;
  }
  return bad;
}

/**
 * Like raw(), but for bodies too big to keep: counts the bytes, keeps the first
 * and last 64, and counts bytes in [fill.from, fill.to) that are not fill.char.
 * `onPaused` runs while the reader is paused (after the first read), to watch
 * backpressure; `decode` pipes the body through a transform (gunzip) first.
 */
function counted(path, body, { fill, pauseMs, onPaused, abortAfterMs, decode } = {}) {
  return new Promise((resolve) => {
    const out = { status: null, headers: null, length: 0, head: Buffer.alloc(0), tail: Buffer.alloc(0), badFill: 0, reads: 0, error: null, ended: false };
    const req = http.request(`${mock.url}${path}`, { method: "POST", agent: false, headers: { "content-type": "application/json" } });
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      resolve(out);
    };
    if (abortAfterMs !== undefined) {
      setTimeout(() => {
        out.error ??= "client-aborted";
        req.destroy();
        finish();
      }, abortAfterMs);
    }
    req.on("error", (err) => {
      out.error ??= err.code ?? err.message;
      finish();
    });
    req.on("response", (res) => {
      out.status = res.statusCode;
      out.headers = res.headers;
      const source = decode ? res.pipe(decode) : res;
      let paused = false;
      source.on("data", (chunk) => {
        const offset = out.length;
        out.reads++;
        out.length += chunk.length;
        if (out.head.length < 64) out.head = Buffer.concat([out.head, chunk]).subarray(0, 64);
        out.tail = Buffer.concat([out.tail, chunk.subarray(-64)]).subarray(-64);
        if (fill) {
          const from = Math.max(fill.from, offset);
          const to = Math.min(fill.to, out.length);
          if (to > from) out.badFill += notChar(chunk.subarray(from - offset, to - offset), fill.char);
        }
        if (pauseMs && !paused) {
          paused = true;
          source.pause();
          Promise.all([sleep(pauseMs), onPaused?.()]).then(() => source.resume());
        }
      });
      source.on("end", () => {
        out.ended = true;
        finish();
      });
      source.on("error", (err) => {
        out.error ??= err.code ?? err.message;
        finish();
      });
      res.on("close", () => {
        if (!res.complete) out.error ??= "closed-before-end";
        if (!decode) finish();
      });
    });
    req.end(JSON.stringify(body));
  });
}

/** Largest RSS growth of this process (mock and client share it) while `during` runs. */
async function rssGrowth(during) {
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  try {
    await during();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, process.memoryUsage().rss) - before;
}

const MiB = 1024 * 1024;

await check("status 700 (outside 100-599) goes out through writeHead", async () => {
  for (const path of ROUTES) {
    const out = await raw(path, { body: { model: "m", mock: { status: 700, body: '{"odd":true}' } } });
    eq([out.status, out.bytes.toString(), out.ended], [700, '{"odd":true}', true], path);
  }
});

await check("raw_stream: exactly these bytes, stream headers, clean end, both routes", async () => {
  const text = 'data: {"a":"héllo 🙂"}\n\nevent: odd\r\ndata: x\r\n\r\n: comment\rdata: no end';
  for (const path of ROUTES) {
    const rid = newRid("raw");
    const out = await raw(path, { body: { model: "m", stream: true, mock: { raw_stream: text } }, headers: { "x-request-id": rid } });
    eq([out.status, out.headers["content-type"], out.headers["cache-control"]], [200, "text/event-stream", "no-cache"], `${path} headers`);
    assert(out.ended && !out.error, `${path} clean end, error=${out.error}`);
    assert(out.bytes.equals(Buffer.from(text, "utf8")), `${path} bytes: ${JSON.stringify(out.bytes.toString())}`);
    assert(await waitFor(async () => (await stats()).completed.includes(rid)), "stats.completed has rid");
  }
  const typed = await chat({ model: "m", stream: true, mock: { raw_stream: "data: 1\n\n", content_type: "text/plain", headers: { "x-a": "b" } } });
  eq([typed.headers["content-type"], typed.headers["x-a"], typed.bytes.toString()], ["text/plain", "b", "data: 1\n\n"], "content_type + headers cues");
  const empty = await chat({ model: "m", stream: true, mock: { raw_stream: "" } });
  eq([empty.status, empty.bytes.length, empty.ended], [200, 0, true], "empty raw_stream");
  const notStreaming = await chat({ model: "m", mock: { raw_stream: "data: 1\n\n" } });
  eq(JSON.parse(notStreaming.bytes).object, "chat.completion", "ignored without stream: true");
});

await check("raw_stream: split bytes + chunk_size, and interval_ms paces it event by event", async () => {
  const text = Array.from({ length: 5 }, (_, i) => `data: {"i":${i},"s":"ü"}\n\n`).join("");
  for (const path of ROUTES) {
    const split = await raw(path, { body: { model: "m", stream: true, mock: { raw_stream: text, split: "bytes", chunk_size: 4 } } });
    assert(split.ended && split.bytes.equals(Buffer.from(text)), `${path} split bytes`);
    assert(split.reads > text.length / 4 / 3, `${path} split: ${split.reads} reads`);
  }
  const t0 = Date.now();
  const paced = await chat({ model: "m", stream: true, mock: { raw_stream: text, interval_ms: 40 } });
  const elapsed = Date.now() - t0;
  assert(paced.ended && paced.bytes.equals(Buffer.from(text)), "paced bytes");
  assert(elapsed >= 150, `5 events, 4 gaps of 40 ms: elapsed ${elapsed}`);
  assert(paced.reads >= 4, `events as separate reads: ${paced.reads}`);
});

await check("raw_stream_end: reset (all bytes flushed, then cut) and stall (until the client aborts)", async () => {
  const text = `data: ${"r".repeat(200 * 1024)}\n\ndata: tail`;
  for (const path of ROUTES) {
    for (const split of [undefined, "bytes"]) {
      const rid = newRid("raw-reset");
      const mockCues = { raw_stream: text, raw_stream_end: "reset", ...(split ? { split, chunk_size: 64 * 1024 } : {}) };
      const out = await raw(path, { body: { model: "m", stream: true, mock: mockCues }, headers: { "x-request-id": rid } });
      eq(out.status, 200, "status");
      assert(out.error && !out.ended, `${path} reset must not end cleanly (split ${split})`);
      assert(out.bytes.equals(Buffer.from(text)), `${path} all ${text.length} bytes before the cut, got ${out.bytes.length}`);
      assert(await waitFor(async () => (await stats()).reset.includes(rid)), "stats.reset has rid");
    }
    const rid = newRid("raw-stall");
    const stalled = await raw(path, {
      body: { model: "m", stream: true, mock: { raw_stream: "data: 1\n\n", raw_stream_end: "stall" } },
      headers: { "x-request-id": rid },
      abortAfterMs: 300,
    });
    eq([stalled.status, stalled.bytes.toString(), stalled.error], [200, "data: 1\n\n", "client-aborted"], `${path} stall`);
    assert(await waitFor(async () => (await stats()).aborted.includes(rid)), "stats.aborted has rid");
  }
  const bogus = await chat({ model: "m", stream: true, mock: { raw_stream: "data: 1\n\n", raw_stream_end: "bogus" } });
  assert(bogus.ended && !bogus.error, "an unknown raw_stream_end ends cleanly");
});

await check("huge_line_bytes: `data: ` then N x, no line ending, clean end, both routes", async () => {
  for (const path of ROUTES) {
    for (const n of [0, 1, 64 * 1024, 5 * MiB + 123]) {
      const out = await counted(path, { model: "m", stream: true, mock: { huge_line_bytes: n } }, { fill: { char: "x", from: 6, to: 6 + n } });
      eq([out.status, out.headers["content-type"], out.ended, out.error], [200, "text/event-stream", true, null], `${path} @${n}`);
      eq([out.length, out.badFill], [6 + n, 0], `${path} @${n} length and filler`);
      eq(out.head.subarray(0, 6).toString(), "data: ", "starts with data: ");
    }
  }
});

await check("huge_line_bytes 200 MiB: memory stays flat, also while the reader is paused", async () => {
  const n = 200 * MiB;
  let out;
  let pausedGrowth = NaN;
  const growth = await rssGrowth(async () => {
    out = await counted("/v1/chat/completions", { model: "m", stream: true, mock: { huge_line_bytes: n } }, {
      fill: { char: "x", from: 6, to: 6 + n },
      pauseMs: 400,
      onPaused: async () => {
        const before = process.memoryUsage().rss;
        await sleep(300);
        pausedGrowth = process.memoryUsage().rss - before;
      },
    });
  });
  eq([out.status, out.ended, out.length, out.badFill], [200, true, 6 + n, 0], "whole line");
  assert(pausedGrowth < 32 * MiB, `RSS grew ${(pausedGrowth / MiB).toFixed(1)} MiB while the reader was paused`);
  assert(growth < 96 * MiB, `RSS grew ${(growth / MiB).toFixed(1)} MiB for a 200 MiB line`);
});

await check("huge_body_bytes: exact JSON size, chunked or with_length, both routes", async () => {
  for (const path of ROUTES) {
    for (const n of [10, 37, 3 * MiB + 7]) {
      for (const withLength of [false, true]) {
        const body = { model: "m", mock: { huge_body_bytes: n, ...(withLength ? { with_length: true } : {}) } };
        const out = await counted(path, body, { fill: { char: "x", from: 8, to: n - 2 } });
        const what = `${path} @${n} with_length ${withLength}`;
        eq([out.status, out.headers["content-type"], out.ended, out.error], [200, "application/json", true, null], what);
        eq([out.length, out.badFill], [n, 0], `${what}: length and filler`);
        eq(
          [out.headers["content-length"], out.headers["transfer-encoding"]],
          withLength ? [String(n), undefined] : [undefined, "chunked"],
          `${what}: framing`,
        );
        eq([out.head.subarray(0, 8).toString(), out.tail.subarray(-2).toString()], ['{"pad":"', '"}'], `${what}: JSON frame`);
        if (n < 100) eq(JSON.parse(out.head).pad, "x".repeat(n - 10), `${what}: parses`);
      }
    }
  }
  const tiny = await counted("/v1/chat/completions", { model: "m", mock: { huge_body_bytes: 3, with_length: true } });
  eq([tiny.length, tiny.head.toString()], [10, '{"pad":""}'], "below 10 bytes gives the empty pad");
  const streaming = await counted("/v1/chat/completions", { model: "m", stream: true, mock: { huge_body_bytes: 100 } });
  eq(streaming.headers["content-type"], "text/event-stream", "a streaming request ignores huge_body_bytes");
});

await check("huge_body_bytes 200 MiB: memory stays flat, also while the reader is paused", async () => {
  for (const withLength of [false, true]) {
    const n = 200 * MiB;
    let out;
    let pausedGrowth = NaN;
    const growth = await rssGrowth(async () => {
      out = await counted("/v1/chat/completions", { model: "m", mock: { huge_body_bytes: n, with_length: withLength } }, {
        fill: { char: "x", from: 8, to: n - 2 },
        pauseMs: 400,
        onPaused: async () => {
          const before = process.memoryUsage().rss;
          await sleep(300);
          pausedGrowth = process.memoryUsage().rss - before;
        },
      });
    });
    eq([out.status, out.ended, out.length, out.badFill], [200, true, n, 0], `whole body (with_length ${withLength})`);
    assert(pausedGrowth < 32 * MiB, `RSS grew ${(pausedGrowth / MiB).toFixed(1)} MiB while the reader was paused`);
    assert(growth < 96 * MiB, `RSS grew ${(growth / MiB).toFixed(1)} MiB for a 200 MiB body`);
  }
});

await check("gzip_bomb_bytes: gzip body inflating to exact JSON, content-length compressed, both routes", async () => {
  for (const path of ROUTES) {
    for (const n of [10, 25, 50 * MiB + 3]) {
      const compressed = await counted(path, { model: "m", mock: { gzip_bomb_bytes: n } });
      const what = `${path} @${n}`;
      eq(
        [compressed.status, compressed.headers["content-type"], compressed.headers["content-encoding"], compressed.ended],
        [200, "application/json", "gzip", true],
        what,
      );
      eq(compressed.headers["content-length"], String(compressed.length), `${what}: content-length is the compressed size`);
      const inflated = await counted(path, { model: "m", mock: { gzip_bomb_bytes: n } }, { decode: zlib.createGunzip(), fill: { char: "0", from: 8, to: n - 2 } });
      eq([inflated.ended, inflated.error, inflated.length, inflated.badFill], [true, null, n, 0], `${what}: inflated`);
      eq([inflated.head.subarray(0, 8).toString(), inflated.tail.subarray(-2).toString()], ['{"pad":"', '"}'], `${what}: JSON frame`);
      if (n > MiB) assert(compressed.length < n / 500, `${what}: ${compressed.length} compressed bytes`);
    }
  }
  const viaFetch = await fetch(`${mock.baseUrl}/chat/completions`, { method: "POST", body: JSON.stringify({ model: "m", mock: { gzip_bomb_bytes: 30 } }) });
  eq(await viaFetch.json(), { pad: "0".repeat(20) }, "fetch inflates it to the JSON");
});

await check("gzip_bomb_bytes 200 MiB: compressed once (memory stays flat), cached for the next request", async () => {
  const n = 200 * MiB + 1;
  const times = [];
  const growth = await rssGrowth(async () => {
    for (let i = 0; i < 2; i++) {
      const t0 = Date.now();
      const out = await counted("/v1/responses", { model: "m", mock: { gzip_bomb_bytes: n } });
      times.push(Date.now() - t0);
      eq([out.status, out.ended], [200, true], `request ${i}`);
      assert(out.length < 400 * 1024, `compressed ${out.length}`);
    }
  });
  assert(times[1] < 100 && times[1] < times[0], `second request should be served from the cache: ${times} ms`);
  assert(growth < 96 * MiB, `RSS grew ${(growth / MiB).toFixed(1)} MiB while compressing 200 MiB`);
});

await check("stall_body_after_bytes: headers with the full content-length, first N bytes, then silence", async () => {
  for (const [path, prefix] of [["/v1/chat/completions", '{"id":"chatcmpl-mock-'], ["/v1/responses", '{"id":"resp_mock_']]) {
    for (const n of [0, 20, 1e9]) {
      const rid = newRid("stall-body");
      const t0 = Date.now();
      const out = await raw(path, { body: { model: "m", mock: { stall_body_after_bytes: n } }, headers: { "x-request-id": rid }, abortAfterMs: 300 });
      const what = `${path} @${n}`;
      eq([out.status, out.headers?.["content-type"], out.error, out.ended], [200, "application/json", "client-aborted", false], what);
      assert(Date.now() - t0 >= 290, `${what}: stayed open`);
      const length = Number(out.headers["content-length"]);
      assert(length > 100, `${what}: content-length ${length}`);
      eq(out.bytes.length, Math.min(n, length - 1), `${what}: bytes before the stall`);
      assert(prefix.startsWith(out.bytes.toString()) || out.bytes.toString().startsWith(prefix), `${what}: ${out.bytes.toString().slice(0, 40)}`);
      assert(await waitFor(async () => (await stats()).aborted.includes(rid)), `${what}: stats.aborted has rid`);
    }
  }
});

await check("pure helpers agree with each other", async () => {
  const body = { model: "x", stream: true, stream_options: { include_usage: true }, mock: { events: 3, line_ending: "\r\n" } };
  const events = chatStreamEvents(body);
  assert(events.every((e) => e.endsWith("\r\n\r\n")), "each event ends with a blank line");
  assert(chatStreamBytes(body).equals(Buffer.from(events.join(""))), "bytes == joined events");
  assert(Buffer.isBuffer(chatStreamBytes(body)), "Buffer");
  const responsesEvents = responsesStreamEvents(body);
  assert(responsesEvents.every((e) => e.endsWith("\r\n\r\n")), "each Responses event ends with a blank line");
  assert(responsesStreamBytes(body).equals(Buffer.from(responsesEvents.join(""))), "Responses bytes == joined events");
});

await check("close() is prompt with a hanging request and idle keep-alive sockets", async () => {
  const m2 = await startMockUpstream();
  const agent = new http.Agent({ keepAlive: true });
  await new Promise((resolve) => http.get(`${m2.url}/v1/models`, { agent }, (res) => res.resume().on("end", resolve)));
  const hanging = new Promise((resolve) => {
    const req = http.request(`${m2.baseUrl}/chat/completions`, { method: "POST", agent: false });
    req.on("error", (e) => resolve(e.code ?? e.message));
    req.on("response", () => resolve("got a response"));
    req.end(JSON.stringify({ model: "m", mock: { hang: true } }));
  });
  const stalled = new Promise((resolve) => {
    const req = http.request(`${m2.baseUrl}/chat/completions`, { method: "POST", agent: false });
    req.on("error", (e) => resolve(e.code ?? e.message));
    req.on("response", (res) => {
      res.resume();
      res.on("error", (e) => resolve(`res error: ${e.code ?? e.message}`));
      res.on("end", () => resolve("ended"));
    });
    req.end(JSON.stringify({ model: "m", stream: true, mock: { stall_after_events: 1 } }));
  });
  await sleep(100);
  const t0 = Date.now();
  await m2.close();
  const took = Date.now() - t0;
  assert(took < 500, `close took ${took} ms`);
  const h = await hanging;
  assert(h !== "got a response", `hanging client: ${h}`);
  const s = await stalled;
  assert(s !== "ended", `stalled client: ${s}`);
  agent.destroy();
  await m2.close(); // idempotent
});

await check("CLI: node test/mock-upstream.mjs --port 0 prints URL, serves, exits on SIGTERM", async () => {
  const file = fileURLToPath(new URL("./mock-upstream.mjs", import.meta.url));
  const child = spawn(process.execPath, [file, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  child.stdout.on("data", (d) => (stdout += d));
  const ok = await waitFor(() => /listening on http:\/\/127\.0\.0\.1:\d+/.test(stdout), 5000);
  assert(ok, `no banner: ${stdout}`);
  const url = stdout.match(/http:\/\/127\.0\.0\.1:\d+/)[0];
  eq(stdout.trim(), `mock upstream listening on ${url}`, "banner");
  const j = await (await fetch(`${url}/v1/models`)).json();
  eq(j.data[0].id, "mock-model", "serves");
  const exit = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  child.kill("SIGTERM");
  eq(await exit, { code: 0, signal: null }, "exit");
});

const t0 = Date.now();
await mock.close();
console.log(`closed in ${Date.now() - t0} ms`);

const failed = results.filter((r) => !r).length;
console.log(`\n${results.length - failed}/${results.length} passed${failed ? `, ${failed} FAILED` : ""}`);
process.exit(failed ? 1 : 0);
