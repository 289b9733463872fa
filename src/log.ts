import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { AppEnv } from "./types";

export type StreamOutcome = "complete" | "interrupted" | "client_cancelled";

/** The one JSON line written per request. Never a key, a prompt or a completion. */
export interface LogFields {
  request_id: string;
  route: string;
  status: number;
  code: string | null;
  org: string | null;
  user: string | null;
  key_id: string | null;
  model: string | null;
  upstream_status: number | null;
  stream_outcome: StreamOutcome | null;
  duration_ms: number;
  ttfb_ms: number | null;
  /** For an internal error only: the name of what was thrown. */
  error?: string;
  /** Set by a streaming response: resolves when the stream has ended, so the line can wait for it. */
  streamDone?: Promise<void>;
}

/**
 * Opens the request's log record for the pipeline steps to fill in, and writes it once the
 * response (for a stream: its last byte) is done.
 */
export function accessLog(): MiddlewareHandler<AppEnv> {
  return async function accessLog(c, next) {
    const started = performance.now();
    const fields: LogFields = {
      request_id: c.get("requestId"),
      route: "",
      status: 0,
      code: null,
      org: null,
      user: null,
      key_id: null,
      model: null,
      upstream_status: null,
      stream_outcome: null,
      duration_ms: 0,
      ttfb_ms: null,
    };
    c.set("log", fields);
    await next();
    // The matched route pattern, not the raw path: a caller's path is theirs and may hold anything.
    fields.route = `${c.req.method} ${routePath(c, -1)}`;
    fields.status = c.res.status;
    fields.ttfb_ms ??= Math.round(performance.now() - started);
    const write = () => {
      fields.duration_ms = Math.round(performance.now() - started);
      const { streamDone: _, ...line } = fields;
      console.log(JSON.stringify(line));
    };
    if (fields.streamDone) c.executionCtx.waitUntil(fields.streamDone.then(write));
    else write();
  };
}
