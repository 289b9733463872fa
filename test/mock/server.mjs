// The mock upstream's HTTP server: POST /v1/chat/completions and POST /v1/responses answered as a
// well-behaved provider would, unless the body's `mock` object cues a misbehaviour, and the /__mock/*
// routes that let tests see what the gateway sent and how each request ended. README.md beside this
// file lists the cues; the bytes come from streams.mjs.

import http from "node:http";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import {
  chatCompletion,
  chatStreamEvents,
  countTokensResult,
  cuesOf,
  fillerPieces,
  messagesResult,
  messagesStreamEvents,
  modelList,
  padJsonLength,
  padJsonPieces,
  rawStreamEvents,
  responsesResult,
  responsesStreamEvents,
} from "./streams.mjs";

/** @typedef {import("./streams.mjs").Cues} Cues */
/** @typedef {import("./streams.mjs").RequestBody} RequestBody */
/** @typedef {import("node:http").IncomingMessage} IncomingMessage */
/** @typedef {import("node:http").ServerResponse} ServerResponse */
/** @typedef {Record<string, string | number>} HeaderMap */

/**
 * A running mock upstream.
 * @typedef {object} MockUpstream
 * @property {number} port
 * @property {string} url  `http://host:port`, for the /__mock/* routes
 * @property {string} baseUrl  `${url}/v1`, what the gateway's UPSTREAM_BASE_URL is set to
 * @property {() => Promise<void>} close  ends every connection too; calling it again is harmless
 */

/**
 * One request as the mock received it, for GET /__mock/requests.
 * @typedef {object} RequestRecord
 * @property {string | undefined} method
 * @property {string} path
 * @property {string | undefined} url
 * @property {import("node:http").IncomingHttpHeaders} headers
 * @property {string} body
 * @property {string | string[] | null} request_id  the x-request-id header
 * @property {number} time
 */

/**
 * What one server keeps between requests.
 * @typedef {object} MockState
 * @property {RequestRecord[]} records  the last MAX_RECORDS requests, oldest first
 * @property {Record<"aborted" | "completed" | "reset", (string | string[] | null)[]>} stats
 *   request ids of model responses by how they ended, the last MAX_STAT_IDS of each
 * @property {Set<import("node:net").Socket>} sockets  every open connection
 * @property {number} completions  complete non-streamed bodies built so far, which number their ids
 * @property {boolean} closing  close() has begun: connections ending now are not outcomes
 * @property {(...args: unknown[]) => void} say  the --log output
 */

/**
 * One model request in flight.
 * @typedef {object} RequestContext
 * @property {AbortController} abort  aborted when the response closes, waking any pending wait
 * @property {AbortSignal} signal
 * @property {boolean} cutByMock  the connection was cut on purpose by a cue, not by the client
 */

/**
 * How a model route streams and what it answers when not streaming.
 * @typedef {object} ModelApi
 * @property {(body: RequestBody) => string[]} streamEvents
 * @property {(body: RequestBody, n: number) => object} result
 */

/**
 * How a stream is written: its pieces, the pause between them, and how it ends.
 * @typedef {{ pieces: Buffer[], pauseMs: number, ending: "end" | "reset" | "stall" }} StreamPlan
 */

const MAX_RECORDS = 1000;
const MAX_STAT_IDS = 1000;
// Pause between pieces in `split: "bytes"` mode, so each piece reaches the client as its own read
// rather than being coalesced by the kernel.
const SPLIT_PAUSE_MS = 1;
// After the last write before a deliberate socket cut, give the kernel a moment to hand the bytes to
// the peer so the client really receives them.
const FLUSH_GRACE_MS = 10;
// Unpaced streams are written in pieces of about this size.
const WRITE_BATCH_BYTES = 16 * 1024;
/** How a `raw_stream` may end, as a StreamPlan's `ending`. */
const RAW_STREAM_ENDINGS = ["end", "reset", "stall"];

/**
 * The model routes by path.
 * @type {Record<string, ModelApi>}
 */
const MODEL_APIS = {
  "/v1/chat/completions": { streamEvents: chatStreamEvents, result: chatCompletion },
  "/v1/responses": { streamEvents: responsesStreamEvents, result: responsesResult },
  "/v1/messages": { streamEvents: messagesStreamEvents, result: messagesResult },
  "/v1/messages/count_tokens": { streamEvents: messagesStreamEvents, result: countTokensResult },
};

/**
 * A non-negative integer, as count cues must be.
 * @param {unknown} v
 * @returns {v is number}
 */
const isCount = (v) => Number.isInteger(v) && /** @type {number} */ (v) >= 0;

// ---- waits that end early ---------------------------------------------------------------------------------
// Every wait rejects with Aborted when the request is aborted (client left or server closing), so
// nothing keeps the process alive.

class Aborted extends Error {}

/**
 * @param {number} ms
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
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

/**
 * Settles only when the request is aborted (hang, stall).
 * @param {AbortSignal} signal
 * @returns {Promise<never>}
 */
function untilAborted(signal) {
  return new Promise((_, reject) => {
    if (signal.aborted) return reject(new Aborted());
    signal.addEventListener("abort", () => reject(new Aborted()), { once: true });
  });
}

/**
 * Wait for 'drain' after res.write returned false; give up if aborted.
 * @param {ServerResponse} res
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
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

/**
 * Write and wait until the bytes were handed to the kernel (the write callback).
 * @param {ServerResponse} res
 * @param {Buffer} chunk
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
function writeFlushed(res, chunk, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Aborted());
    res.write(chunk, (err) => (err ? reject(new Aborted()) : resolve()));
  });
}

/**
 * Write every piece, waiting for 'drain' whenever the socket's buffer is full.
 * @param {ServerResponse} res
 * @param {Iterable<Buffer>} pieces
 * @param {RequestContext} ctx
 */
async function writePieces(res, pieces, ctx) {
  for (const piece of pieces) {
    if (ctx.signal.aborted) throw new Aborted();
    if (!res.write(piece)) await drained(res, ctx.signal);
  }
}

/**
 * The whole request body as text; rejects with Aborted when the client leaves mid-body.
 * @param {IncomingMessage} req
 * @returns {Promise<string>}
 */
function readBody(req) {
  return new Promise((resolve, reject) => {
    /** @type {Buffer[]} */
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

// ---- pieces -----------------------------------------------------------------------------------------------

/**
 * @param {Buffer} buf
 * @param {number} size
 */
function splitBuffer(buf, size) {
  const pieces = [];
  for (let i = 0; i < buf.length; i += size) pieces.push(buf.subarray(i, i + size));
  return pieces;
}

/**
 * Merge consecutive small buffers into buffers of about `target` bytes.
 * @param {Buffer[]} pieces
 * @param {number} target
 */
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

/**
 * Keep only the first `limit` bytes of a list of buffers, cutting the last one kept.
 * @param {Buffer[]} pieces
 * @param {number} limit
 */
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

/**
 * Plan a stream: which bytes to write, in which pieces, and how it ends.
 * @param {ModelApi} api
 * @param {RequestBody} body
 * @param {Cues} cues
 * @returns {StreamPlan}
 */
function planStream(api, body, cues) {
  if (typeof cues.raw_stream === "string") return planRawStream(cues);
  return planEvents(api.streamEvents(body), cues);
}

/**
 * Plan the writing of these events as the transport cues say.
 * @param {string[]} texts
 * @param {Cues} cues
 * @returns {StreamPlan}
 */
function planEvents(texts, cues) {
  let events = texts.map((e) => Buffer.from(e, "utf8"));
  if (cues.end_without_done) events = events.slice(0, -1);

  /** @type {StreamPlan["ending"]} */
  let ending = "end";
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
    // Unpaced: the client cannot tell event writes apart anyway, and one write per event (each with its
    // own chunked framing and syscall) would make the mock, not the gateway, the bottleneck of
    // long-stream benchmarks.
    pieces = batchPieces(pieces, WRITE_BATCH_BYTES);
  }
  return { pieces, pauseMs, ending };
}

/**
 * `raw_stream`: exactly its bytes, paced by planEvents like generated events (split, chunk_size,
 * interval_ms) and ended as `raw_stream_end` says; the other transport cues do not apply.
 * @param {Cues} cues
 * @returns {StreamPlan}
 */
function planRawStream(cues) {
  const { split, chunk_size, interval_ms } = cues;
  const plan = planEvents(rawStreamEvents(cues.raw_stream), { split, chunk_size, interval_ms });
  const ending = RAW_STREAM_ENDINGS.includes(cues.raw_stream_end) ? cues.raw_stream_end : "end";
  return { ...plan, ending };
}

/** Compressed gzip bombs by uncompressed size, as promises so concurrent requests share one run. */
const gzipBombs = new Map();

/**
 * `{"pad":"000...0"}` of `total` bytes, gzipped at level 9 while it is generated: only the compressed
 * bytes (about total / 1000) are ever held. Cached per size.
 * @param {number} total
 * @returns {Promise<Buffer>}
 */
function gzipBomb(total) {
  let bomb = gzipBombs.get(total);
  if (!bomb) {
    /** @type {Buffer[]} */
    const chunks = [];
    bomb = pipeline(padJsonPieces("0", total), createGzip({ level: 9 }), async (gzipped) => {
      for await (const chunk of gzipped) chunks.push(chunk);
    }).then(() => Buffer.concat(chunks));
    bomb.catch(() => gzipBombs.delete(total)); // a failure is not cached
    gzipBombs.set(total, bomb);
  }
  return bomb;
}

// ---- responses --------------------------------------------------------------------------------------------

/**
 * @param {ServerResponse} res
 * @param {number} status
 * @param {unknown} value
 */
function sendJson(res, status, value) {
  const text = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The OpenAI error envelope, as the mock's own refusals (bad JSON, no route, internal error).
 * @param {ServerResponse} res
 * @param {number} status
 * @param {string} message
 */
function sendError(res, status, message, type = "invalid_request_error") {
  sendJson(res, status, { error: { message, type, param: null, code: null } });
}

/**
 * @param {ServerResponse} res
 */
function sendNoContent(res) {
  res.writeHead(204);
  res.end();
}

/**
 * Headers every model response carries, from the `headers` and `set_cookie` cues.
 * @param {Cues} cues
 * @returns {HeaderMap}
 */
function cueHeaders(cues) {
  /** @type {HeaderMap} */
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

/**
 * Apply the content_type cue: absent -> fallback, null -> no header at all.
 * @param {HeaderMap} headers
 * @param {Cues} cues
 * @param {string | undefined} fallback
 * @returns {HeaderMap}
 */
function withContentType(headers, cues, fallback) {
  if (cues.content_type === null) return headers;
  const type = typeof cues.content_type === "string" ? cues.content_type : fallback;
  return type ? { "content-type": type, ...headers } : headers;
}

/**
 * The 200 that starts every stream, sent at once so a client sees the response start even if no event
 * follows.
 * @param {ServerResponse} res
 * @param {Cues} cues
 */
function startStream(res, cues) {
  const headers = withContentType(
    { "cache-control": "no-cache", ...cueHeaders(cues) },
    cues,
    "text/event-stream",
  );
  res.writeHead(200, headers);
  res.flushHeaders();
}

/**
 * `status` / `body`: exactly these bytes, status and headers.
 * @param {ServerResponse} res
 * @param {Cues} cues
 */
function sendRaw(res, cues) {
  const status = isCount(cues.status) ? cues.status : 200;
  const bytes = Buffer.from(typeof cues.body === "string" ? cues.body : "", "utf8");
  const chunked = cues.chunked === true;
  const headers = { ...cueHeaders(cues), ...(chunked ? {} : { "content-length": bytes.length }) };
  // An empty body gets no content type unless one is asked for.
  res.writeHead(status, withContentType(headers, cues, bytes.length > 0 ? "application/json" : undefined));
  // Chunked: one chunk per WRITE_BATCH_BYTES, so a long body arrives in several reads.
  if (chunked) for (const piece of splitBuffer(bytes, WRITE_BATCH_BYTES)) res.write(piece);
  res.end(chunked ? undefined : bytes);
}

/**
 * `redirect`: a 302 to that location.
 * @param {ServerResponse} res
 * @param {Cues} cues
 */
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

/**
 * Cut the connection on purpose; the close is not a client abort.
 * @param {ServerResponse} res
 * @param {RequestContext} ctx
 */
function cutConnection(res, ctx, { rst = false } = {}) {
  ctx.cutByMock = true;
  const socket = res.socket;
  if (!socket) return;
  // A true RST for `reset: true`. Mid-stream cuts use a plain close (FIN) instead, because an RST can
  // make the peer discard bytes it has not read yet, and tests need exactly the sent bytes to arrive.
  if (rst && typeof socket.resetAndDestroy === "function") socket.resetAndDestroy();
  else socket.destroy();
}

/**
 * A stream as planStream says: its pieces, paced, then a clean end, a cut or a stall.
 * @param {ServerResponse} res
 * @param {ModelApi} api
 * @param {RequestBody} body
 * @param {Cues} cues
 * @param {RequestContext} ctx
 */
async function sendStream(res, api, body, cues, ctx) {
  const { pieces, pauseMs, ending } = planStream(api, body, cues);
  startStream(res, cues);

  const needsFlush = ending !== "end";
  for (let i = 0; i < pieces.length; i++) {
    if (i > 0 && pauseMs > 0) await sleep(pauseMs, ctx.signal);
    if (ctx.signal.aborted) throw new Aborted();
    const piece = /** @type {Buffer} */ (pieces[i]);
    if (i === pieces.length - 1 && needsFlush) await writeFlushed(res, piece, ctx.signal);
    else if (!res.write(piece)) await drained(res, ctx.signal);
  }

  if (ending === "end") return void res.end();
  if (ending === "stall") return untilAborted(ctx.signal);
  // ending === "reset": let the flushed bytes reach the peer, then cut.
  await new Promise((r) => setImmediate(r));
  await sleep(FLUSH_GRACE_MS, ctx.signal);
  cutConnection(res, ctx);
}

/**
 * `huge_line_bytes: N`: `data: ` then N bytes of `x`, no line ending ever, then a clean end.
 * @param {ServerResponse} res
 * @param {Cues} cues
 * @param {RequestContext} ctx
 */
async function sendHugeLine(res, cues, ctx) {
  startStream(res, cues);
  await writePieces(res, [Buffer.from("data: ")], ctx);
  await writePieces(res, fillerPieces("x", cues.huge_line_bytes), ctx);
  res.end();
}

/**
 * `huge_body_bytes: N`: a 200 whose JSON body `{"pad":"xx..x"}` is exactly N bytes (at least 10),
 * chunked, or with content-length: N when `with_length: true`.
 * @param {ServerResponse} res
 * @param {Cues} cues
 * @param {RequestContext} ctx
 */
async function sendHugeBody(res, cues, ctx) {
  const total = padJsonLength(cues.huge_body_bytes);
  /** @type {HeaderMap} */
  const length = cues.with_length === true ? { "content-length": total } : {};
  res.writeHead(200, withContentType({ ...length, ...cueHeaders(cues) }, cues, "application/json"));
  await writePieces(res, padJsonPieces("x", total), ctx);
  res.end();
}

/**
 * `gzip_bomb_bytes: N`: a 200 with content-encoding: gzip whose body inflates to `{"pad":"00..0"}` of
 * exactly N bytes (at least 10); the content-length is the compressed size.
 * @param {ServerResponse} res
 * @param {Cues} cues
 * @param {RequestContext} ctx
 */
async function sendGzipBomb(res, cues, ctx) {
  const gzipped = await gzipBomb(padJsonLength(cues.gzip_bomb_bytes));
  if (ctx.signal.aborted) throw new Aborted();
  const headers = { "content-encoding": "gzip", "content-length": gzipped.length, ...cueHeaders(cues) };
  res.writeHead(200, withContentType(headers, cues, "application/json"));
  res.end(gzipped);
}

/**
 * `stall_body_after_bytes: N`: the complete body's headers (content-length of the whole body, or
 * chunked with `chunked: true`) and its first N bytes, then silence until the client aborts. N is capped at the body's length minus one, so
 * the body never completes.
 * @param {ServerResponse} res
 * @param {object} completion
 * @param {Cues} cues
 * @param {RequestContext} ctx
 */
async function sendStalledBody(res, completion, cues, ctx) {
  const bytes = Buffer.from(JSON.stringify(completion), "utf8");
  const sent = Math.min(cues.stall_body_after_bytes, bytes.length - 1);
  /** @type {HeaderMap} */
  const length = cues.chunked === true ? {} : { "content-length": bytes.length };
  const headers = { ...length, ...cueHeaders(cues) };
  res.writeHead(200, withContentType(headers, cues, "application/json"));
  res.flushHeaders();
  if (sent > 0) await writeFlushed(res, bytes.subarray(0, sent), ctx.signal);
  return untilAborted(ctx.signal);
}

/**
 * The well-behaved answer: the complete JSON body.
 * @param {ServerResponse} res
 * @param {object} completion
 * @param {Cues} cues
 */
function sendCompletion(res, completion, cues) {
  const text = JSON.stringify(completion);
  const headers = { "content-length": Buffer.byteLength(text), ...cueHeaders(cues) };
  res.writeHead(200, withContentType(headers, cues, "application/json"));
  res.end(text);
}

// ---- state ------------------------------------------------------------------------------------------------

/**
 * A fresh server's state; `log` sends each request to stderr.
 * @param {boolean} log
 * @returns {MockState}
 */
function createState(log) {
  return {
    records: [],
    stats: { aborted: [], completed: [], reset: [] },
    sockets: new Set(),
    completions: 0,
    closing: false,
    say: (...args) => {
      if (log) console.error("[mock-upstream]", ...args);
    },
  };
}

/**
 * Append, dropping the oldest items beyond `max`.
 * @template T
 * @param {T[]} list
 * @param {T} item
 * @param {number} max
 */
function pushBounded(list, item, max) {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

/**
 * The number of the next complete non-streamed body.
 * @param {MockState} state
 */
function nextCompletion(state) {
  return ++state.completions;
}

/**
 * Keep this request for GET /__mock/requests.
 * @param {MockState} state
 * @param {IncomingMessage} req
 * @param {string} pathname
 * @param {string} rawBody
 */
function record(state, req, pathname, rawBody) {
  const entry = {
    method: req.method,
    path: pathname,
    url: req.url,
    headers: { ...req.headers },
    body: rawBody,
    request_id: req.headers["x-request-id"] ?? null,
    time: Date.now(),
  };
  pushBounded(state.records, entry, MAX_RECORDS);
}

/**
 * The context of a model request, whose outcome goes to state.stats when its response closes.
 * @param {MockState} state
 * @param {IncomingMessage} req
 * @param {ServerResponse} res
 * @returns {RequestContext}
 */
function trackRequest(state, req, res) {
  const abort = new AbortController();
  const ctx = { abort, signal: abort.signal, cutByMock: false };
  const requestId = req.headers["x-request-id"] ?? null;
  res.on("close", () => {
    ctx.abort.abort(); // wake any pending wait in the handler
    if (state.closing) return;
    if (res.writableFinished) pushBounded(state.stats.completed, requestId, MAX_STAT_IDS);
    else if (ctx.cutByMock) pushBounded(state.stats.reset, requestId, MAX_STAT_IDS);
    else pushBounded(state.stats.aborted, requestId, MAX_STAT_IDS);
  });
  return ctx;
}

// ---- routes -----------------------------------------------------------------------------------------------

/**
 * POST /v1/chat/completions or /v1/responses: `api` says how this route answers.
 * @param {MockState} state
 * @param {IncomingMessage} req
 * @param {ServerResponse} res
 * @param {string} pathname
 * @param {ModelApi} api
 * @param {string | undefined} upstream  the named upstream the request was sent to, if any
 */
async function handleModel(state, req, res, pathname, api, upstream) {
  const ctx = trackRequest(state, req, res);
  const raw = await readBody(req);
  record(state, req, pathname, raw);

  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    return sendError(res, 400, "mock: request body is not valid JSON");
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    return sendError(res, 400, "mock: request body must be a JSON object");
  }
  if (upstream !== undefined) body.mock = upstreamCues(cuesOf(body), upstream);
  return answerModel(state, res, api, body, ctx);
}

/**
 * The cues of the named upstream `name`: `mock.upstreams[name]` over the request's other cues, so
 * that one request can fail on one upstream and succeed on another.
 * @param {Record<string, unknown>} cues
 * @param {string} name
 */
function upstreamCues(cues, name) {
  const { upstreams, ...shared } = cues;
  const own = upstreams && typeof upstreams === "object" ? /** @type {any} */ (upstreams)[name] : undefined;
  return own && typeof own === "object" && !Array.isArray(own) ? { ...shared, ...own } : shared;
}

/** A named upstream's model routes: `/u/<name>/v1/...`. */
const NAMED_UPSTREAM = /^\/u\/([A-Za-z0-9._-]+)(\/v1\/.*)$/;

/**
 * Answer a model request as its cues say, the first that applies in this order.
 * @param {MockState} state
 * @param {ServerResponse} res
 * @param {ModelApi} api
 * @param {RequestBody} body
 * @param {RequestContext} ctx
 */
async function answerModel(state, res, api, body, ctx) {
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
  const completion = api.result(body, nextCompletion(state));
  if (isCount(cues.stall_body_after_bytes)) return sendStalledBody(res, completion, cues, ctx);
  sendCompletion(res, completion, cues);
}

/**
 * The inspection routes, by `${method} ${pathname}`.
 * @type {Map<string, (state: MockState, res: ServerResponse, url: URL) => void>}
 */
const INSPECTION_ROUTES = new Map([
  [
    "GET /__mock/requests",
    (state, res, url) => {
      const id = url.searchParams.get("request_id");
      sendJson(res, 200, id === null ? state.records : state.records.filter((r) => r.request_id === id));
    },
  ],
  [
    "DELETE /__mock/requests",
    (state, res) => {
      state.records.length = 0;
      sendNoContent(res);
    },
  ],
  [
    "GET /__mock/stats",
    (state, res) => {
      const { aborted, completed, reset } = state.stats;
      sendJson(res, 200, { open_connections: state.sockets.size, aborted, completed, reset });
    },
  ],
  [
    "DELETE /__mock/stats",
    (state, res) => {
      state.stats.aborted.length = state.stats.completed.length = state.stats.reset.length = 0;
      sendNoContent(res);
    },
  ],
]);

/**
 * Every request that is not a model request: the inspection routes, GET /v1/models, else a 404.
 * @param {MockState} state
 * @param {IncomingMessage} req
 * @param {ServerResponse} res
 * @param {URL} url
 */
async function handleOther(state, req, res, url) {
  const raw = await readBody(req);
  const inspect = INSPECTION_ROUTES.get(`${req.method} ${url.pathname}`);
  if (inspect) return inspect(state, res, url);

  // Everything below is traffic a gateway might send: record it.
  record(state, req, url.pathname, raw);
  if (url.pathname === "/v1/models" && req.method === "GET") return sendJson(res, 200, modelList());
  sendError(res, 404, "mock: no route");
}

/**
 * @param {MockState} state
 * @param {IncomingMessage} req
 * @param {ServerResponse} res
 */
async function handle(state, req, res) {
  // Writes racing a departed client must never surface as uncaught errors.
  res.on("error", () => {});
  req.on("error", () => {});
  const url = new URL(req.url ?? "/", "http://mock.invalid");
  state.say(req.method, req.url, req.headers["x-request-id"] ?? "");
  try {
    const named = NAMED_UPSTREAM.exec(url.pathname);
    const api = MODEL_APIS[named?.[2] ?? url.pathname];
    if (api && req.method === "POST") await handleModel(state, req, res, url.pathname, api, named?.[1]);
    else await handleOther(state, req, res, url);
  } catch (err) {
    if (err instanceof Aborted) return; // client left or server closing: nothing to answer
    state.say("handler error:", err);
    if (!res.headersSent && !res.destroyed) {
      sendError(
        res,
        500,
        `mock: internal error: ${/** @type {any} */ (err)?.message ?? err}`,
        "server_error",
      );
    } else res.destroy();
  }
}

// ---- lifecycle --------------------------------------------------------------------------------------------

/**
 * @param {MockState} state
 */
function createServer(state) {
  const server = http.createServer((req, res) => void handle(state, req, res));
  // Node's default keep-alive timeout closes idle pooled sockets that the client (workerd) then reuses,
  // causing random "Network connection lost". 0 = never time idle sockets out; close() ends them.
  server.keepAliveTimeout = 0;
  server.on("connection", (socket) => {
    state.sockets.add(socket);
    socket.on("close", () => state.sockets.delete(socket));
    socket.on("error", () => {});
  });
  server.on("clientError", (err, socket) => {
    state.say("client error:", err.message);
    socket.destroy();
  });
  server.on("error", (err) => state.say("server error:", err));
  return server;
}

/**
 * @param {http.Server} server
 * @param {number} port
 * @param {string} host
 * @returns {Promise<void>}
 */
function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/**
 * Stop listening and end every connection, those that never carried HTTP too.
 * @param {MockState} state
 * @param {http.Server} server
 * @returns {Promise<void>}
 */
function closeServer(state, server) {
  return new Promise((resolve) => {
    state.closing = true;
    server.close(() => resolve());
    server.closeAllConnections();
    for (const socket of state.sockets) socket.destroy();
  });
}

/**
 * Start a mock upstream; port 0 picks a free one.
 * @param {{ port?: number, host?: string, log?: boolean }} [options]  log: each request on stderr
 * @returns {Promise<MockUpstream>}
 * @example
 * const upstream = await startMockUpstream();
 * // UPSTREAM_BASE_URL = upstream.baseUrl; then, when done:
 * await upstream.close();
 */
export async function startMockUpstream({ port = 0, host = "127.0.0.1", log = false } = {}) {
  const state = createState(log);
  const server = createServer(state);
  await listen(server, port, host);

  const actualPort = /** @type {import("node:net").AddressInfo} */ (server.address()).port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${actualPort}`;
  /** @type {Promise<void> | undefined} */
  let closed;
  const close = () => (closed ??= closeServer(state, server));
  return { port: actualPort, url, baseUrl: `${url}/v1`, close };
}
