// Mock OpenAI-compatible upstream for tests, `npm run dev` and benchmarks.
//
// It answers POST /v1/chat/completions and POST /v1/responses like a
// well-behaved provider, unless the request body carries a `mock` object with
// cues telling it how to misbehave (error status, delay, hang, reset, broken
// stream, ...). Both routes take the same cues; on /v1/responses
// `end_without_done` drops the terminal `response.completed` event. The gateway
// forwards unknown body fields untouched, so cues survive the trip through it.
//
// Inspection routes (/__mock/*) let tests see what the gateway actually sent
// and whether it cancelled an upstream request.
//
// Cues for memory and robustness checks (see planRawStream, sendHugeLine,
// sendHugeBody, sendGzipBomb and sendStalledBody): `raw_stream` (+
// `raw_stream_end`), `huge_line_bytes`, `huge_body_bytes` (+ `with_length`),
// `gzip_bomb_bytes`, `stall_body_after_bytes`. The huge ones never hold their
// full size in memory: they write one reused 64 KiB piece, honouring backpressure.
//
// Plain Node ESM, no dependencies. Run directly: node test/mock-upstream.mjs [--port N] [--host H] [--log]

import http from "node:http";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";

const DEFAULT_REPLY = "Hello from the mock upstream.";
const MODEL_ID = "mock-model";
// Streams must be byte-for-byte reproducible by chatStreamBytes() and
// responsesStreamBytes(), so their ids and created timestamp are fixed unless
// the request overrides them (`mock.id`, `mock.created`).
const STREAM_ID = "chatcmpl-mock-stream";
const RESPONSE_STREAM_ID = "resp_mock_stream";
const MESSAGE_ID = "msg_mock_stream";
const STREAM_CREATED = 1700000000;
const MAX_RECORDS = 1000;
const MAX_STAT_IDS = 1000;
// Pause between pieces in `split: "bytes"` mode, so each piece reaches the
// client as its own read rather than being coalesced by the kernel.
const SPLIT_PAUSE_MS = 1;
// After the last write before a deliberate socket cut, give the kernel a
// moment to hand the bytes to the peer so the client really receives them.
const FLUSH_GRACE_MS = 10;
// Unpaced streams are written in pieces of about this size.
const WRITE_BATCH_BYTES = 16 * 1024;
// Huge bodies (huge_line_bytes, huge_body_bytes, gzip_bomb_bytes) are written,
// or compressed, in pieces of this size, all views of one reused buffer.
const FILLER_PIECE_BYTES = 64 * 1024;
// How a `raw_stream` may end, as planStream's `ending`.
const RAW_STREAM_ENDINGS = ["end", "reset", "stall"];

// ---------------------------------------------------------------------------
// Pure helpers: the serialized stream. The server builds its stream from these,
// so tests that call them get exactly the bytes the server sends.
// ---------------------------------------------------------------------------

/** The `mock` cue object of a request body, or {} when absent / not an object. */
function cuesOf(body) {
  const mock = body && typeof body === "object" ? body.mock : undefined;
  return mock && typeof mock === "object" && !Array.isArray(mock) ? mock : {};
}

/** The reply text: `mock.reply` when it is a string, else the default greeting. */
function replyText(body) {
  const { reply } = cuesOf(body);
  return typeof reply === "string" ? reply : DEFAULT_REPLY;
}

/**
 * Content pieces of a streamed reply. Each word keeps the whitespace that
 * follows it, so the pieces concatenate back to exactly the non-streamed reply
 * ("Hello from" -> ["Hello ", "from"]). `mock.events: N` replaces them with
 * N synthetic pieces "tok0 ".."tok<N-1> " for long streams.
 */
function contentPieces(body) {
  const { events } = cuesOf(body);
  if (Number.isInteger(events) && events >= 0) {
    return Array.from({ length: events }, (_, i) => `tok${i} `);
  }
  const text = replyText(body);
  const pieces = text.match(/\s*\S+\s*/gu) ?? [];
  // Whitespace-only replies still deserve one piece so nothing is lost.
  return pieces.length > 0 || text === "" ? pieces : [text];
}

/** Rough token count: whitespace-separated words. */
function countWords(text) {
  return text.split(/\s+/u).filter(Boolean).length;
}

/** Text of all messages, for a plausible prompt_tokens figure. */
function promptText(body) {
  const messages = Array.isArray(body?.messages) ? body.messages : [];
  return messages
    .map((m) => {
      if (typeof m?.content === "string") return m.content;
      if (Array.isArray(m?.content)) return m.content.map((p) => (typeof p?.text === "string" ? p.text : "")).join(" ");
      return "";
    })
    .join(" ");
}

function usageFor(body, completionTokens) {
  const prompt_tokens = Math.max(1, countWords(promptText(body)));
  return { prompt_tokens, completion_tokens: completionTokens, total_tokens: prompt_tokens + completionTokens };
}

function lineEndingOf(body) {
  const { line_ending } = cuesOf(body);
  return line_ending === "\r\n" || line_ending === "\r" || line_ending === "\n" ? line_ending : "\n";
}

/**
 * The events of a streamed completion, each a string including its terminating
 * blank line. Reflects the cues that shape the content (reply, events,
 * line_ending, error_event, stream_options.include_usage) but not transport
 * faults (reset_*, end_*, stall_*, split, interval_ms, end_without_done).
 *
 * The `model` field echoes body.model: when the gateway renames the model,
 * compute expectations from the body the mock recorded, not the client's.
 */
export function chatStreamEvents(body) {
  const cues = cuesOf(body);
  const eol = lineEndingOf(body);
  const dataEvent = (payload) => `data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}${eol}${eol}`;
  const base = {
    id: typeof cues.id === "string" ? cues.id : STREAM_ID,
    object: "chat.completion.chunk",
    created: Number.isInteger(cues.created) ? cues.created : STREAM_CREATED,
    model: body?.model ?? MODEL_ID,
  };
  const chunk = (delta, finish_reason = null) => ({
    ...base,
    choices: [{ index: 0, delta, logprobs: null, finish_reason }],
  });

  const pieces = contentPieces(body);
  const events = [dataEvent(chunk({ role: "assistant", content: "" }))];

  if (cues.error_event) {
    // A provider that fails mid-stream: one content chunk, then an in-band error.
    if (pieces.length > 0) events.push(dataEvent(chunk({ content: pieces[0] })));
    const error = { error: { message: "provider error", type: "server_error", param: null, code: "provider_error" } };
    events.push(`event: error${eol}data: ${JSON.stringify(error)}${eol}${eol}`);
    events.push(dataEvent("[DONE]"));
    return events;
  }

  for (const content of pieces) events.push(dataEvent(chunk({ content })));
  events.push(dataEvent(chunk({}, "stop")));
  if (body?.stream_options?.include_usage) {
    events.push(dataEvent({ ...base, choices: [], usage: usageFor(body, pieces.length) }));
  }
  events.push(dataEvent("[DONE]"));
  return events;
}

/** The full serialized stream (no transport faults) as one Buffer. */
export function chatStreamBytes(body) {
  return Buffer.from(chatStreamEvents(body).join(""), "utf8");
}

// ---------------------------------------------------------------------------
// The Responses API, shaped as the openai SDK and the Vercel AI SDK expect.
// ---------------------------------------------------------------------------

/** Text of `instructions` and `input` (a string, or items with string or part content). */
function inputText(body) {
  const input = body?.input;
  const items = typeof input === "string" ? [input] : Array.isArray(input) ? input : [];
  const texts = items.map((item) => {
    if (typeof item === "string") return item;
    if (typeof item?.content === "string") return item.content;
    if (Array.isArray(item?.content)) return item.content.map((p) => (typeof p?.text === "string" ? p.text : "")).join(" ");
    return "";
  });
  if (typeof body?.instructions === "string") texts.unshift(body.instructions);
  return texts.join(" ");
}

function responsesUsage(body, outputTokens) {
  const input_tokens = Math.max(1, countWords(inputText(body)));
  return {
    input_tokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: input_tokens + outputTokens,
  };
}

const outputText = (text) => ({ type: "output_text", text, annotations: [], logprobs: [] });

/** An assistant message output item; `text` undefined means no content part yet. */
function messageItem(id, status, text) {
  return { id, type: "message", status, role: "assistant", content: text === undefined ? [] : [outputText(text)] };
}

/** A `response` object as the API returns it, streamed or not. */
function responseObject(body, { id, created_at, status, output = [], usage = null, error = null }) {
  return {
    id,
    object: "response",
    created_at,
    status,
    error,
    incomplete_details: null,
    instructions: typeof body?.instructions === "string" ? body.instructions : null,
    max_output_tokens: null,
    model: body?.model ?? MODEL_ID,
    output,
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    service_tier: "default",
    store: true,
    temperature: 1,
    text: { format: { type: "text" } },
    tool_choice: "auto",
    tools: [],
    top_p: 1,
    truncation: "disabled",
    usage,
    user: null,
    metadata: {},
  };
}

/**
 * The events of a streamed response, each a string including its terminating
 * blank line: `event: <type>` then `data: <json>` whose `type` repeats it and
 * whose `sequence_number` counts from 0. Reflects the same content cues as
 * chatStreamEvents (reply, events, line_ending, error_event, id, created);
 * error_event sends one delta, an `error` event and `response.failed`.
 */
export function responsesStreamEvents(body) {
  const cues = cuesOf(body);
  const eol = lineEndingOf(body);
  const events = [];
  const emit = (type, fields) => {
    const data = { type, sequence_number: events.length, ...fields };
    events.push(`event: ${type}${eol}data: ${JSON.stringify(data)}${eol}${eol}`);
  };
  const id = typeof cues.id === "string" ? cues.id : RESPONSE_STREAM_ID;
  const created_at = Number.isInteger(cues.created) ? cues.created : STREAM_CREATED;
  const response = (fields) => responseObject(body, { id, created_at, ...fields });
  const at = { item_id: MESSAGE_ID, output_index: 0, content_index: 0 };

  const pieces = contentPieces(body);
  emit("response.created", { response: response({ status: "in_progress" }) });
  emit("response.in_progress", { response: response({ status: "in_progress" }) });
  emit("response.output_item.added", { output_index: 0, item: messageItem(MESSAGE_ID, "in_progress") });
  emit("response.content_part.added", { ...at, part: outputText("") });

  if (cues.error_event) {
    // A provider that fails mid-stream: one delta, an in-band error, then the terminal failure.
    if (pieces.length > 0) emit("response.output_text.delta", { ...at, delta: pieces[0], logprobs: [] });
    emit("error", { code: "provider_error", message: "provider error", param: null });
    emit("response.failed", {
      response: response({ status: "failed", error: { code: "server_error", message: "provider error" } }),
    });
    return events;
  }

  for (const delta of pieces) emit("response.output_text.delta", { ...at, delta, logprobs: [] });
  const text = pieces.join("");
  const item = messageItem(MESSAGE_ID, "completed", text);
  emit("response.output_text.done", { ...at, text, logprobs: [] });
  emit("response.content_part.done", { ...at, part: outputText(text) });
  emit("response.output_item.done", { output_index: 0, item });
  emit("response.completed", {
    response: response({ status: "completed", output: [item], usage: responsesUsage(body, pieces.length) }),
  });
  return events;
}

/** The full serialized Responses stream (no transport faults) as one Buffer. */
export function responsesStreamBytes(body) {
  return Buffer.from(responsesStreamEvents(body).join(""), "utf8");
}

/** The non-streamed `response` object. */
function responsesResult(body, n) {
  const text = replyText(body);
  return responseObject(body, {
    id: `resp_mock_${n}`,
    created_at: Math.floor(Date.now() / 1000),
    status: "completed",
    output: [messageItem(`msg_mock_${n}`, "completed", text)],
    usage: responsesUsage(body, countWords(text)),
  });
}

/** The non-streamed chat.completion object. */
function chatCompletion(body, n) {
  const content = replyText(body);
  return {
    id: `chatcmpl-mock-${n}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: body?.model ?? MODEL_ID,
    choices: [{ index: 0, message: { role: "assistant", content }, logprobs: null, finish_reason: "stop" }],
    usage: usageFor(body, countWords(content)),
  };
}

// ---------------------------------------------------------------------------
// Small async utilities. Every wait ends early when the request is aborted
// (client left or server closing), so nothing keeps the process alive.
// ---------------------------------------------------------------------------

class Aborted extends Error {}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Aborted());
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Aborted());
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Resolves only when the request is aborted (hang / stall). */
function untilAborted(signal) {
  return new Promise((_, reject) => {
    if (signal.aborted) return reject(new Aborted());
    signal.addEventListener("abort", () => reject(new Aborted()), { once: true });
  });
}

/** Wait for 'drain' after res.write returned false; give up if aborted. */
function drained(res, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Aborted());
    const onDrain = () => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    };
    const onAbort = () => {
      res.off("drain", onDrain);
      reject(new Aborted());
    };
    res.once("drain", onDrain);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Write and wait until the bytes were handed to the kernel (write callback). */
function writeFlushed(res, chunk, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Aborted());
    res.write(chunk, (err) => (err ? reject(new Aborted()) : resolve()));
  });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
    // A client that leaves mid-body never sends 'end'.
    req.on("close", () => {
      if (!req.complete) reject(new Aborted());
    });
  });
}

function splitBuffer(buf, size) {
  const pieces = [];
  for (let i = 0; i < buf.length; i += size) pieces.push(buf.subarray(i, i + size));
  return pieces;
}

/** Merge consecutive small buffers into buffers of about `target` bytes. */
function batchPieces(pieces, target) {
  const out = [];
  let batch = [];
  let size = 0;
  for (const p of pieces) {
    batch.push(p);
    size += p.length;
    if (size >= target) {
      out.push(Buffer.concat(batch));
      batch = [];
      size = 0;
    }
  }
  if (batch.length > 0) out.push(Buffer.concat(batch));
  return out;
}

/** Keep only the first `limit` bytes of a list of buffers, cutting the last one kept. */
function truncatePieces(pieces, limit) {
  const out = [];
  let left = limit;
  for (const p of pieces) {
    if (left <= 0) break;
    out.push(p.length <= left ? p : p.subarray(0, left));
    left -= p.length;
  }
  return out;
}

const isCount = (v) => Number.isInteger(v) && v >= 0;

// ---------------------------------------------------------------------------
// Huge and raw bodies, built piece by piece.
// ---------------------------------------------------------------------------

/** One FILLER_PIECE_BYTES buffer per filler character, allocated once and reused. */
const fillerBuffers = new Map();

/**
 * `count` bytes of the ASCII character `char` as views of one shared buffer, so
 * a 200 MB body costs 64 KiB of memory however it is written.
 */
function* fillerPieces(char, count) {
  let piece = fillerBuffers.get(char);
  if (!piece) fillerBuffers.set(char, (piece = Buffer.alloc(FILLER_PIECE_BYTES, char)));
  for (let left = count; left > 0; left -= piece.length) yield left >= piece.length ? piece : piece.subarray(0, left);
}

/** Prefix and suffix around a JSON string pad: `{"pad":"` + pad + `"}` (10 bytes without the pad). */
const PAD_JSON_PREFIX = Buffer.from('{"pad":"');
const PAD_JSON_SUFFIX = Buffer.from('"}');
const PAD_JSON_OVERHEAD = PAD_JSON_PREFIX.length + PAD_JSON_SUFFIX.length;

/**
 * The pieces of `{"pad":"<char>...<char>"}` of exactly `total` bytes (at least
 * the 10 bytes of an empty pad: smaller totals give that).
 */
function* padJsonPieces(char, total) {
  yield PAD_JSON_PREFIX;
  yield* fillerPieces(char, Math.max(0, total - PAD_JSON_OVERHEAD));
  yield PAD_JSON_SUFFIX;
}

/** Compressed gzip bombs by uncompressed size, as promises so concurrent requests share one run. */
const gzipBombs = new Map();

/**
 * `{"pad":"000...0"}` of `total` bytes, gzipped at level 9 while it is
 * generated: only the compressed bytes (about total / 1000) are ever held.
 * Cached per size.
 * @returns {Promise<Buffer>}
 */
function gzipBomb(total) {
  let bomb = gzipBombs.get(total);
  if (!bomb) {
    const chunks = [];
    bomb = pipeline(padJsonPieces("0", total), createGzip({ level: 9 }), async (gzipped) => {
      for await (const chunk of gzipped) chunks.push(chunk);
    }).then(() => Buffer.concat(chunks));
    bomb.catch(() => gzipBombs.delete(total)); // a failure is not cached
    gzipBombs.set(total, bomb);
  }
  return bomb;
}

/**
 * A `raw_stream` text cut after each blank line (`\n\n`, `\r\n\r\n`, `\r\r`),
 * so that `interval_ms` paces it event by event like a generated stream. The
 * pieces join back to exactly the text (cuts fall on ASCII bytes only).
 */
function rawStreamEvents(text) {
  const events = [];
  let start = 0;
  for (const match of text.matchAll(/\r\n\r\n|\n\n|\r\r/gu)) {
    const end = match.index + match[0].length;
    events.push(text.slice(start, end));
    start = end;
  }
  if (start < text.length) events.push(text.slice(start));
  return events;
}

/** The model routes: how each streams and what it answers when not streaming. */
const MODEL_APIS = {
  "/v1/chat/completions": { streamEvents: chatStreamEvents, result: chatCompletion },
  "/v1/responses": { streamEvents: responsesStreamEvents, result: responsesResult },
};

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/**
 * Start the mock upstream.
 * @returns {Promise<{port:number,url:string,baseUrl:string,close:()=>Promise<void>}>}
 */
export async function startMockUpstream({ port = 0, host = "127.0.0.1", log = false } = {}) {
  const records = [];
  const stats = { aborted: [], completed: [], reset: [] };
  const sockets = new Set();
  let completionCounter = 0;
  let closing = false;

  const say = (...args) => {
    if (log) console.error("[mock-upstream]", ...args);
  };

  const pushBounded = (list, item, max) => {
    list.push(item);
    if (list.length > max) list.splice(0, list.length - max);
  };

  // ---- responses -----------------------------------------------------------

  function sendJson(res, status, value, extraHeaders = {}) {
    const text = JSON.stringify(value);
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
      ...extraHeaders,
    });
    res.end(text);
  }

  function sendError(res, status, message, type = "invalid_request_error") {
    sendJson(res, status, { error: { message, type, param: null, code: null } });
  }

  /** Headers every model response carries, from the `headers`, `set_cookie` cues. */
  function cueHeaders(cues) {
    const headers = {};
    if (cues.set_cookie) {
      // Things a gateway must not pass through to its callers.
      headers["set-cookie"] = "session=secret";
      headers["connection"] = "keep-alive, x-secret-hop";
      headers["x-secret-hop"] = "secret";
      headers["keep-alive"] = "timeout=5";
    }
    if (cues.headers && typeof cues.headers === "object") {
      for (const [name, value] of Object.entries(cues.headers)) headers[name.toLowerCase()] = String(value);
    }
    return headers;
  }

  /** Apply the content_type cue: absent -> fallback, null -> no header at all. */
  function withContentType(headers, cues, fallback) {
    if (cues.content_type === null) return headers;
    const type = typeof cues.content_type === "string" ? cues.content_type : fallback;
    return type ? { "content-type": type, ...headers } : headers;
  }

  /** `status` / `body` cues: exactly these bytes, status and headers. */
  function sendRaw(res, cues) {
    const status = isCount(cues.status) ? cues.status : 200;
    const bytes = Buffer.from(typeof cues.body === "string" ? cues.body : "", "utf8");
    let headers = { ...cueHeaders(cues), "content-length": bytes.length };
    // An empty body gets no content type unless one is asked for.
    headers = withContentType(headers, cues, bytes.length > 0 ? "application/json" : undefined);
    res.writeHead(status, headers);
    res.end(bytes);
  }

  function sendRedirect(res, cues) {
    const text = "mock: redirected\n";
    res.writeHead(302, {
      ...cueHeaders(cues),
      location: String(cues.redirect),
      "content-type": "text/plain",
      "content-length": Buffer.byteLength(text),
    });
    res.end(text);
  }

  /** Cut the connection on purpose; the close is not a client abort. */
  function cutConnection(res, ctx, { rst = false } = {}) {
    ctx.cutByMock = true;
    const socket = res.socket;
    if (!socket) return;
    // A true RST for `reset: true`. Mid-stream cuts use a plain close (FIN)
    // instead, because an RST can make the peer discard bytes it has not
    // read yet, and tests need exactly the sent bytes to arrive.
    if (rst && typeof socket.resetAndDestroy === "function") socket.resetAndDestroy();
    else socket.destroy();
  }

  /** Plan the stream: which bytes to write, in which pieces, and how it ends. */
  function planStream(api, body, cues) {
    if (typeof cues.raw_stream === "string") return planRawStream(cues);
    let events = api.streamEvents(body).map((e) => Buffer.from(e, "utf8"));
    if (cues.end_without_done) events = events.slice(0, -1);

    let ending = "end"; // "end" | "reset" | "stall"
    let byteLimit = Infinity;
    if (isCount(cues.reset_after_events)) {
      events = events.slice(0, cues.reset_after_events);
      ending = "reset";
    } else if (isCount(cues.stall_after_events)) {
      events = events.slice(0, cues.stall_after_events);
      ending = "stall";
    } else if (isCount(cues.reset_after_bytes)) {
      byteLimit = cues.reset_after_bytes;
      ending = "reset";
    } else if (isCount(cues.end_after_bytes)) {
      byteLimit = cues.end_after_bytes;
    }

    let pieces = truncatePieces(events, byteLimit);
    let pauseMs = isCount(cues.interval_ms) ? cues.interval_ms : 0;
    if (cues.split === "bytes") {
      const size = Number.isInteger(cues.chunk_size) && cues.chunk_size > 0 ? cues.chunk_size : 7;
      pieces = splitBuffer(Buffer.concat(pieces), size);
      pauseMs = Math.max(pauseMs, SPLIT_PAUSE_MS);
    } else if (pauseMs === 0) {
      // Unpaced: the client cannot tell event writes apart anyway, and one
      // write per event (each with its own chunked framing and syscall) would
      // make the mock, not the gateway, the bottleneck of long-stream benchmarks.
      pieces = batchPieces(pieces, WRITE_BATCH_BYTES);
    }
    return { pieces, pauseMs, ending };
  }

  async function sendStream(res, api, body, cues, ctx) {
    const { pieces, pauseMs, ending } = planStream(api, body, cues);
    const headers = withContentType({ "cache-control": "no-cache", ...cueHeaders(cues) }, cues, "text/event-stream");
    res.writeHead(200, headers);
    // Headers go out now, so a client sees the response start even if
    // no event follows (stall_after_events: 0, reset_after_bytes: 0).
    res.flushHeaders();

    const needsFlush = ending !== "end";
    for (let i = 0; i < pieces.length; i++) {
      if (i > 0 && pauseMs > 0) await sleep(pauseMs, ctx.signal);
      if (ctx.signal.aborted) throw new Aborted();
      const last = i === pieces.length - 1;
      if (last && needsFlush) await writeFlushed(res, pieces[i], ctx.signal);
      else if (!res.write(pieces[i])) await drained(res, ctx.signal);
    }

    if (ending === "end") return void res.end();
    if (ending === "stall") return untilAborted(ctx.signal);
    // ending === "reset": let the flushed bytes reach the peer, then cut.
    await new Promise((r) => setImmediate(r));
    await sleep(FLUSH_GRACE_MS, ctx.signal);
    cutConnection(res, ctx);
  }

  /**
   * `raw_stream: string` (streaming requests): exactly these UTF-8 bytes instead
   * of the generated events, paced by planStream's own machinery (`split:
   * "bytes"` + `chunk_size`, `interval_ms` between events), then ended as
   * `raw_stream_end` says: "end" (default), "reset" (socket cut once the bytes
   * were flushed) or "stall" (open until the client aborts). Other transport
   * cues (reset_after_*, end_after_bytes, stall_after_events) do not apply.
   */
  function planRawStream(cues) {
    const { split, chunk_size, interval_ms } = cues;
    const api = { streamEvents: () => rawStreamEvents(cues.raw_stream) };
    const plan = planStream(api, undefined, { split, chunk_size, interval_ms });
    const ending = RAW_STREAM_ENDINGS.includes(cues.raw_stream_end) ? cues.raw_stream_end : "end";
    return { ...plan, ending };
  }

  /** Write every piece, waiting for 'drain' whenever the socket's buffer is full. */
  async function writePieces(res, pieces, ctx) {
    for (const piece of pieces) {
      if (ctx.signal.aborted) throw new Aborted();
      if (!res.write(piece)) await drained(res, ctx.signal);
    }
  }

  /**
   * `huge_line_bytes: N` (streaming requests): stream headers, `data: `, then N
   * bytes of `x` with no line ending ever, then a clean end.
   */
  async function sendHugeLine(res, cues, ctx) {
    const headers = withContentType({ "cache-control": "no-cache", ...cueHeaders(cues) }, cues, "text/event-stream");
    res.writeHead(200, headers);
    res.flushHeaders();
    await writePieces(res, [Buffer.from("data: ")], ctx);
    await writePieces(res, fillerPieces("x", cues.huge_line_bytes), ctx);
    res.end();
  }

  /**
   * `huge_body_bytes: N` (non-streaming): a 200 whose JSON body `{"pad":"xx..x"}`
   * is exactly N bytes (at least 10), chunked, or with content-length: N when
   * `with_length: true`.
   */
  async function sendHugeBody(res, cues, ctx) {
    const total = Math.max(PAD_JSON_OVERHEAD, cues.huge_body_bytes);
    const length = cues.with_length === true ? { "content-length": total } : {};
    res.writeHead(200, withContentType({ ...length, ...cueHeaders(cues) }, cues, "application/json"));
    await writePieces(res, padJsonPieces("x", total), ctx);
    res.end();
  }

  /**
   * `gzip_bomb_bytes: N` (non-streaming): a 200 with content-encoding: gzip whose
   * body inflates to `{"pad":"00..0"}` of exactly N bytes (at least 10); the
   * content-length is the compressed size. Compressed once per N, then cached.
   */
  async function sendGzipBomb(res, cues, ctx) {
    const gzipped = await gzipBomb(Math.max(PAD_JSON_OVERHEAD, cues.gzip_bomb_bytes));
    if (ctx.signal.aborted) throw new Aborted();
    const headers = { "content-encoding": "gzip", "content-length": gzipped.length, ...cueHeaders(cues) };
    res.writeHead(200, withContentType(headers, cues, "application/json"));
    res.end(gzipped);
  }

  /**
   * `stall_body_after_bytes: N` (non-streaming): the normal completion's headers
   * (content-length of the whole body) and its first N bytes, then silence
   * until the client aborts. N is capped at the body's length minus one, so the
   * body never completes.
   */
  async function sendStalledBody(res, api, body, cues, ctx) {
    const bytes = Buffer.from(JSON.stringify(api.result(body, ++completionCounter)), "utf8");
    const sent = Math.min(cues.stall_body_after_bytes, bytes.length - 1);
    res.writeHead(200, withContentType({ "content-length": bytes.length, ...cueHeaders(cues) }, cues, "application/json"));
    res.flushHeaders();
    if (sent > 0) await writeFlushed(res, bytes.subarray(0, sent), ctx.signal);
    return untilAborted(ctx.signal);
  }

  // ---- routes --------------------------------------------------------------

  function record(req, pathname, rawBody) {
    const requestId = req.headers["x-request-id"] ?? null;
    pushBounded(
      records,
      {
        method: req.method,
        path: pathname,
        url: req.url,
        headers: { ...req.headers },
        body: rawBody,
        request_id: requestId,
        time: Date.now(),
      },
      MAX_RECORDS,
    );
  }

  /** Track how a model response ended, for GET /__mock/stats. */
  function trackOutcome(req, res, ctx) {
    const requestId = req.headers["x-request-id"] ?? null;
    res.on("close", () => {
      ctx.abort.abort(); // wake any pending wait in the handler
      if (closing) return;
      if (res.writableFinished) pushBounded(stats.completed, requestId, MAX_STAT_IDS);
      else if (ctx.cutByMock) pushBounded(stats.reset, requestId, MAX_STAT_IDS);
      else pushBounded(stats.aborted, requestId, MAX_STAT_IDS);
    });
  }

  /** POST /v1/chat/completions or /v1/responses: `api` says how this route answers. */
  async function handleModel(req, res, pathname, api) {
    const abort = new AbortController();
    const ctx = { abort, signal: abort.signal, cutByMock: false };
    trackOutcome(req, res, ctx);

    const raw = await readBody(req);
    record(req, pathname, raw);

    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      return sendError(res, 400, "mock: request body is not valid JSON");
    }
    if (!body || typeof body !== "object" || Array.isArray(body)) {
      return sendError(res, 400, "mock: request body must be a JSON object");
    }

    const cues = cuesOf(body);
    if (isCount(cues.delay_ms) && cues.delay_ms > 0) await sleep(cues.delay_ms, ctx.signal);
    if (cues.hang) return untilAborted(ctx.signal);
    if (cues.reset) return cutConnection(res, ctx, { rst: true });
    if (typeof cues.redirect === "string") return sendRedirect(res, cues);
    if (cues.status !== undefined || cues.body !== undefined) return sendRaw(res, cues);
    if (body.stream === true && isCount(cues.huge_line_bytes)) return sendHugeLine(res, cues, ctx);
    if (body.stream === true) return sendStream(res, api, body, cues, ctx);
    if (isCount(cues.huge_body_bytes)) return sendHugeBody(res, cues, ctx);
    if (isCount(cues.gzip_bomb_bytes)) return sendGzipBomb(res, cues, ctx);
    if (isCount(cues.stall_body_after_bytes)) return sendStalledBody(res, api, body, cues, ctx);

    const completion = api.result(body, ++completionCounter);
    const text = JSON.stringify(completion);
    res.writeHead(
      200,
      withContentType({ "content-length": Buffer.byteLength(text), ...cueHeaders(cues) }, cues, "application/json"),
    );
    res.end(text);
  }

  async function handleOther(req, res, url) {
    const { pathname } = url;
    const raw = await readBody(req);
    if (pathname === "/__mock/requests") {
      if (req.method === "GET") {
        const id = url.searchParams.get("request_id");
        return sendJson(res, 200, id === null ? records : records.filter((r) => r.request_id === id));
      }
      if (req.method === "DELETE") {
        records.length = 0;
        res.writeHead(204);
        return res.end();
      }
    }
    if (pathname === "/__mock/stats") {
      if (req.method === "GET") {
        return sendJson(res, 200, {
          open_connections: sockets.size,
          aborted: stats.aborted,
          completed: stats.completed,
          reset: stats.reset,
        });
      }
      if (req.method === "DELETE") {
        stats.aborted.length = stats.completed.length = stats.reset.length = 0;
        res.writeHead(204);
        return res.end();
      }
    }

    // Everything below is traffic a gateway might send: record it.
    record(req, pathname, raw);
    if (pathname === "/v1/models" && req.method === "GET") {
      return sendJson(res, 200, {
        object: "list",
        data: [{ id: MODEL_ID, object: "model", created: STREAM_CREATED, owned_by: "mock" }],
      });
    }
    sendError(res, 404, "mock: no route");
  }

  async function handle(req, res) {
    // Writes racing a departed client must never surface as uncaught errors.
    res.on("error", () => {});
    req.on("error", () => {});
    const url = new URL(req.url ?? "/", "http://mock.invalid");
    say(req.method, req.url, req.headers["x-request-id"] ?? "");
    try {
      const api = MODEL_APIS[url.pathname];
      if (api && req.method === "POST") await handleModel(req, res, url.pathname, api);
      else await handleOther(req, res, url);
    } catch (err) {
      if (err instanceof Aborted) return; // client left or server closing: nothing to answer
      say("handler error:", err);
      if (!res.headersSent && !res.destroyed) sendError(res, 500, `mock: internal error: ${err?.message ?? err}`, "server_error");
      else res.destroy();
    }
  }

  // ---- lifecycle -------------------------------------------------------------

  const server = http.createServer((req, res) => void handle(req, res));
  // Node's default keep-alive timeout closes idle pooled sockets that the
  // client (workerd) then reuses, causing random "Network connection lost".
  // 0 = never time idle sockets out; close() ends them explicitly.
  server.keepAliveTimeout = 0;
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  server.on("clientError", (err, socket) => {
    say("client error:", err.message);
    socket.destroy();
  });
  server.on("error", (err) => say("server error:", err));

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });

  const actualPort = server.address().port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${actualPort}`;

  let closed;
  function close() {
    closed ??= new Promise((resolve) => {
      closing = true;
      server.close(() => resolve());
      server.closeAllConnections();
      // closeAllConnections only knows sockets that carried HTTP; end the rest too.
      for (const socket of sockets) socket.destroy();
    });
    return closed;
  }

  return { port: actualPort, url, baseUrl: `${url}/v1`, close };
}

// ---------------------------------------------------------------------------
// CLI: node test/mock-upstream.mjs [--port N] [--host H] [--log]
// ---------------------------------------------------------------------------

function isMain() {
  if (!process.argv[1]) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

function parseArgs(argv) {
  const opts = { port: 0, host: "127.0.0.1", log: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--port") opts.port = Number(argv[++i]);
    else if (arg.startsWith("--port=")) opts.port = Number(arg.slice(7));
    else if (arg === "--host") opts.host = argv[++i];
    else if (arg.startsWith("--host=")) opts.host = arg.slice(7);
    else if (arg === "--log") opts.log = true;
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error(`invalid --port: ${opts.port}`);
  }
  return opts;
}

if (isMain()) {
  const mock = await startMockUpstream(parseArgs(process.argv.slice(2)));
  console.log(`mock upstream listening on ${mock.url}`);
  const stop = async () => {
    await mock.close();
    process.exit(0);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
