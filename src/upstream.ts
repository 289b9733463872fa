import type { Context, MiddlewareHandler } from "hono";
import { readConfig, type Config } from "./config";
import { GatewayError } from "./errors";
import { streamResponse } from "./stream";
import type { StreamDialect } from "./stream-dialects";
import type { AppEnv } from "./types";

/** The only upstream response headers a caller sees; cookies and hop-by-hop headers never pass. */
const PASSED_HEADERS = ["content-type", "retry-after"] as const;

/** The body to send: the caller's own bytes, unless the catalog renames the model. */
function upstreamBody(c: Context<AppEnv>): BodyInit {
  const rename = c.get("model").upstream_model;
  if (!rename || rename === c.get("body").model) return c.get("rawBody");
  return JSON.stringify({ ...c.get("body"), model: rename });
}

/** Only these request headers reach the upstream: never the caller's credentials or cookies. */
function upstreamHeaders(c: Context<AppEnv>, config: Config): Headers {
  const headers = new Headers({
    "content-type": "application/json",
    accept: c.req.header("accept") ?? "application/json",
    "x-request-id": c.get("requestId"),
  });
  if (config.upstreamApiKey) headers.set("authorization", `Bearer ${config.upstreamApiKey}`);
  return headers;
}

/**
 * Sends the request upstream; answers 504 when no response headers arrive within
 * UPSTREAM_TIMEOUT_MS and 502 when the upstream cannot be reached.
 */
async function send(url: string, init: RequestInit, timeoutMs: number, abort: AbortController): Promise<Response> {
  const timer = setTimeout(() => abort.abort(new GatewayError("upstream_timeout")), timeoutMs);
  try {
    return await fetch(url, { ...init, signal: abort.signal, redirect: "manual" });
  } catch (err) {
    if (abort.signal.aborted && abort.signal.reason instanceof GatewayError) throw abort.signal.reason;
    throw new GatewayError("upstream_unavailable");
  } finally {
    clearTimeout(timer);
  }
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
 * Reads a whole non-streaming body. A body the upstream breaks off counts as unreachable; one
 * still incomplete STREAM_IDLE_TIMEOUT_MS after its headers, as a timeout.
 */
async function readAll(upstream: Response, abort: AbortController, idleMs: number): Promise<ArrayBuffer> {
  const timer = setTimeout(() => abort.abort(new GatewayError("upstream_timeout")), idleMs);
  try {
    return await upstream.arrayBuffer();
  } catch {
    if (abort.signal.reason instanceof GatewayError) throw abort.signal.reason;
    throw new GatewayError("upstream_unavailable");
  } finally {
    clearTimeout(timer);
  }
}

const isEventStream = (response: Response) =>
  response.headers.get("content-type")?.toLowerCase().startsWith("text/event-stream") ?? false;

/**
 * Step 7: forwards the request to `UPSTREAM_BASE_URL` + `path` and returns the upstream's answer
 * under the contract: non-2xx bodies verbatim, empty bodies as 502, streams event by event.
 */
export function proxy(path: string, dialect: () => StreamDialect): MiddlewareHandler<AppEnv> {
  return async function proxy(c) {
    const config = readConfig(c.env);
    const abort = new AbortController();
    const upstream = await send(
      config.upstreamBaseUrl + path,
      { method: "POST", headers: upstreamHeaders(c, config), body: upstreamBody(c) },
      config.upstreamTimeoutMs,
      abort,
    );
    c.get("log").fields.upstream_status = upstream.status;

    if (upstream.ok && isEventStream(upstream) && upstream.body) {
      const body = upstream as Response & { body: ReadableStream<Uint8Array> };
      return streamResponse(c, body, abort, config, dialect());
    }
    const body = await readAll(upstream, abort, config.streamIdleTimeoutMs);
    if (body.byteLength === 0) throw new GatewayError("upstream_empty_body");
    const headers = passedHeaders(upstream);
    // Errors are never cached, the upstream's own included; the body itself stays verbatim.
    if (!upstream.ok) headers["cache-control"] = "no-store";
    return c.body(body, upstream.status as 200, headers);
  };
}
