import type { Context, MiddlewareHandler } from "hono";
import type { ModelApi } from "./apis";
import { readConfig, type Config, type Upstream } from "./config";
import { droppedFields, withEdits, type Edit } from "./body";
import { GatewayError, InternalFault } from "./errors";
import { BodyUsage } from "./metering";
import { streamResponse } from "./streaming/stream";
import { attemptOrder, coolDown, COOLDOWN_MS, retryAfterMs, targetsOf, upstreamOf } from "./targets";
import type { Target } from "./targets";
import type { AppEnv } from "./types";

/** The only upstream response headers a caller sees; cookies and hop-by-hop headers never pass. */
const PASSED_HEADERS = ["content-type", "retry-after"] as const;

/**
 * The body to send: the caller's own bytes, with only the model's value changed when the target
 * knows the model by another name, and what the API changes (a chat stream's usage asked for).
 */
function upstreamBody(c: Context<AppEnv>, api: ModelApi, rename: string): BodyInit {
  const body = c.get("body");
  const text = c.get("bodyText");
  const places = c.get("places");
  const edits: Edit[] = [...api.edits(body, text, places), ...droppedFields(body, text)];
  const model = places.get("model");
  if (rename !== body.model && model) edits.push({ ...model, text: JSON.stringify(rename) });
  return edits.length ? withEdits(text, edits) : c.get("rawBody");
}

/**
 * Only these request headers reach the upstream: its fixed headers, then the gateway's own and the
 * upstream's key. Never the caller's credentials or cookies.
 */
function upstreamHeaders(c: Context<AppEnv>, api: ModelApi, upstream: Upstream): Headers {
  const headers = new Headers(upstream.headers);
  // The caller's own (an Anthropic client's API version and betas) over the upstream's fixed ones:
  // the caller knows what its body was written for.
  for (const name of api.headers) {
    const value = c.req.header(name);
    if (value !== undefined) headers.set(name, value);
  }
  headers.set("content-type", "application/json");
  headers.set("accept", c.req.header("accept") ?? "application/json");
  headers.set("x-request-id", c.get("requestId"));
  if (upstream.auth) headers.set(upstream.auth[0], upstream.auth[1]);
  return headers;
}

function passedHeaders(upstream: Response): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const name of PASSED_HEADERS) {
    const value = upstream.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  return headers;
}

/**
 * Non-streaming bodies up to this size, announced by an honest Content-Length (no content coding
 * the runtime would expand), are read whole and answered in one piece: the common case, and the
 * cheapest. Anything else is passed through chunk by chunk, so the gateway never holds more of a
 * body than one chunk, however large the body or its decompressed size.
 */
const WHOLE_BODY_BYTES = 1024 * 1024;

/** Runs `read`, aborting the upstream request if it takes longer than `ms`. */
async function within<T>(read: () => Promise<T>, abort: AbortController, ms: number): Promise<T> {
  const timer = setTimeout(() => abort.abort(new GatewayError("upstream_timeout")), ms);
  try {
    return await read();
  } catch {
    if (abort.signal.reason instanceof GatewayError) throw abort.signal.reason;
    throw new GatewayError("upstream_unavailable");
  } finally {
    clearTimeout(timer);
  }
}

/** The content codings the runtime decodes by itself, compared exactly as it compares them. */
const RUNTIME_DECODED = new Set(["gzip", "br"]);
/** Codings the runtime leaves encoded (other spellings included) that the gateway decodes. */
const DECODERS: Record<string, "gzip" | "deflate"> = { gzip: "gzip", "x-gzip": "gzip", deflate: "deflate" };

/**
 * The upstream's answer with a body the gateway can read: the runtime decodes `gzip` and `br`
 * itself, but not `GZIP`, `x-gzip`, `deflate` or a list such as `identity, gzip`. Those are decoded
 * here, as a stream (never holding the expanded body); a coding nobody can decode is an answer the
 * gateway cannot read: 502.
 */
function decodable(upstream: Response): Response {
  const coding = upstream.headers.get("content-encoding");
  if (coding === null || RUNTIME_DECODED.has(coding)) return upstream;
  const codings = coding
    .split(",")
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name && name !== "identity");
  if (codings.length === 0) return upstream;
  const format = codings.length === 1 ? DECODERS[codings[0]!] : undefined;
  if (!format) throw new GatewayError("upstream_unavailable");
  const headers = new Headers(upstream.headers);
  headers.delete("content-encoding");
  headers.delete("content-length");
  // The identity stream gives the stream driver the byte reader it reads with.
  const body = upstream.body
    ?.pipeThrough(new DecompressionStream(format))
    .pipeThrough(new IdentityTransformStream());
  return new Response(body ?? null, { status: upstream.status, headers });
}

const readsWhole = (upstream: Response) => {
  const length = Number(upstream.headers.get("content-length") ?? NaN);
  const coding = upstream.headers.get("content-encoding");
  return length <= WHOLE_BODY_BYTES && (!coding || coding.toLowerCase() === "identity");
};

/**
 * A non-streaming upstream body for the caller: 502 when it is empty; 504 when no byte of it
 * arrives within STREAM_IDLE_TIMEOUT_MS of the headers. Once the first byte has gone out the status
 * cannot change: an upstream that then falls silent that long, or breaks, has its body cut short.
 */
async function forwardBody(
  upstream: Response,
  abort: AbortController,
  idleMs: number,
  usage: BodyUsage,
): Promise<ArrayBuffer | ReadableStream> {
  if (readsWhole(upstream)) {
    const body = await within(() => upstream.arrayBuffer(), abort, idleMs);
    if (body.byteLength === 0) throw new GatewayError("upstream_empty_body");
    usage.keep(new Uint8Array(body));
    return body;
  }
  // A null-body status (204, 304) sent without a Content-Length has no body at all.
  if (!upstream.body) throw new GatewayError("upstream_empty_body");
  const reader = upstream.body.getReader();
  const first = await within(
    async () => {
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done || chunk.value.byteLength > 0) return chunk;
      }
    },
    abort,
    idleMs,
  );
  if (first.done) throw new GatewayError("upstream_empty_body");
  const { readable, writable } = new IdentityTransformStream();
  const writer = writable.getWriter();
  (async () => {
    usage.keep(first.value);
    await writer.write(first.value);
    for (;;) {
      const chunk = await within(() => reader.read(), abort, idleMs);
      if (chunk.done) break;
      usage.keep(chunk.value);
      await writer.write(chunk.value);
    }
    await writer.close();
  })().catch((err) => {
    abort.abort();
    writer.abort(err).catch(() => {});
  });
  return readable;
}

/** Of an upstream's error body, what is read to convert it: the first 64 KiB at most. */
const ERROR_BODY_BYTES = 64 * 1024;

/**
 * An error body's bytes, for {@link ModelApi.errorBody}. A streamed one is read up to
 * ERROR_BODY_BYTES and the rest cancelled: a longer one is no envelope to keep, and its message is
 * quoted only in part anyway.
 */
async function errorBytes(body: ArrayBuffer | ReadableStream<Uint8Array>): Promise<ArrayBuffer> {
  if (body instanceof ArrayBuffer) return body;
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    chunks.push(chunk.value);
    length += chunk.value.byteLength;
    if (length >= ERROR_BODY_BYTES) {
      await reader.cancel();
      break;
    }
  }
  // A read may return more than was asked for: what is kept is cut at the limit too.
  return new Blob(chunks).slice(0, ERROR_BODY_BYTES).arrayBuffer();
}

/**
 * Sends the request upstream; answers 504 when no response headers arrive within
 * UPSTREAM_TIMEOUT_MS and 502 when the upstream cannot be reached.
 */
const send = (url: string, init: RequestInit, timeoutMs: number, abort: AbortController) =>
  within(() => fetch(url, { ...init, signal: abort.signal, redirect: "manual" }), abort, timeoutMs);

const isEventStream = (response: Response) =>
  response.headers.get("content-type")?.toLowerCase().startsWith("text/event-stream") ?? false;

/** Statuses after which the next target is tried: the upstream is busy or failing, not refusing. */
const FAILS_OVER = new Set([429, 500, 502, 503, 504, 529]);
/** Statuses that put a target in cooldown: the upstream asked to be left alone. */
const COOLS_DOWN = new Set([429, 503]);

/**
 * Whether an attempt that threw may be followed by the next target: nothing has reached the caller,
 * and what went wrong is the upstream's (unreachable, no headers in time, an empty or unreadable
 * answer) or its configuration's (a missing record or secret).
 */
const failsOver = (err: unknown) =>
  err instanceof InternalFault || (err instanceof GatewayError && err.code.startsWith("upstream_"));

/**
 * One attempt at one target. Returns the caller's answer, or undefined when the target answered
 * with a status the next target should be tried after (unless this is the `last` attempt). Throws
 * when it could not answer at all.
 */
async function attempt(
  c: Context<AppEnv>,
  api: ModelApi,
  config: Config,
  target: Target,
  last: boolean,
): Promise<Response | undefined> {
  const upstream = await upstreamOf(c.env, config, target.upstream);
  const abort = new AbortController();
  let answer: Response;
  try {
    answer = await send(
      upstream.baseUrl + api.path,
      {
        method: "POST",
        headers: upstreamHeaders(c, api, upstream),
        body: upstreamBody(c, api, target.model),
      },
      upstream.timeoutMs,
      abort,
    );
  } catch (err) {
    coolDown(target, COOLDOWN_MS);
    throw err;
  }
  c.get("log").fields.upstream_status = answer.status;
  if (COOLS_DOWN.has(answer.status)) coolDown(target, retryAfterMs(answer.headers.get("retry-after")));
  // No response can carry such a status on to the caller: the upstream's answer is unusable.
  if (answer.status < 200 || answer.status > 599) {
    abort.abort();
    throw new GatewayError("upstream_unavailable");
  }
  if (!last && FAILS_OVER.has(answer.status)) {
    abort.abort();
    return undefined;
  }
  const response = decodable(answer);

  if (response.ok && isEventStream(response) && response.body) {
    const body = response as Response & { body: ReadableStream<Uint8Array> };
    const dialect = api.dialect(c.get("body"));
    c.set("usageSource", dialect);
    return streamResponse(c, body, abort, config, dialect);
  }
  const usage = new BodyUsage(api.bodyUsage);
  let body = await forwardBody(response, abort, config.streamIdleTimeoutMs, usage);
  if (response.ok) c.set("usageSource", usage);
  const headers = passedHeaders(response);
  // Errors are never cached, the upstream's own included; the body stays verbatim unless the
  // caller's API wants it in its own envelope.
  if (!response.ok) headers["cache-control"] = "no-store";
  if (!response.ok && api.errorBody) {
    body = await errorBytes(body);
    const converted = api.errorBody(response.status, new TextDecoder().decode(body));
    if (converted !== null) {
      headers["content-type"] = "application/json";
      return c.body(converted, response.status as 200, headers);
    }
  }
  return c.body(body, response.status as 200, headers);
}

/**
 * The upstream step: forwards the request to the model's targets (the upstream `default` unless the
 * catalog lists others) and returns the first usable answer under the contract: non-2xx bodies
 * verbatim, empty bodies as 502, streams event by event. Until an answer has begun to reach the
 * caller, a failing target is followed by the next, at most MAX_UPSTREAM_ATTEMPTS in all; once it
 * has, nothing is retried. Where a 2xx answer's usage will be found is left for metering.
 */
export function proxy(api: ModelApi): MiddlewareHandler<AppEnv> {
  return async function proxy(c) {
    const config = readConfig(c.env);
    const model = c.get("model");
    const log = c.get("log").fields;
    const targets = attemptOrder(targetsOf(model, c.get("body").model), model.routing);
    const last = Math.min(targets.length, config.maxUpstreamAttempts) - 1;
    for (let i = 0; ; i++) {
      log.upstream = targets[i]!.upstream;
      log.attempts = i + 1;
      log.upstream_status = null;
      try {
        const answer = await attempt(c, api, config, targets[i]!, i === last);
        if (answer) return answer;
      } catch (err) {
        if (i === last || !failsOver(err)) throw err;
        // The last attempt's failure is what the caller sees; an earlier misconfiguration is logged.
        if (err instanceof InternalFault) log.error = `${err.name}: ${err.message}`;
      }
    }
  };
}
