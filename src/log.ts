import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { RequestLog } from "./request-log";
import type { AppEnv } from "./types";

/**
 * Opens the request's log record for the pipeline steps to fill in, and writes it once the
 * response (for a stream: its last byte) is done and the answer metered.
 */
export function accessLog(): MiddlewareHandler<AppEnv> {
  return async function accessLog(c, next) {
    const log = new RequestLog(c.get("requestId"));
    const write = () => log.write();
    c.set("log", log);
    await next();
    // The matched route pattern, not the raw path: a caller's path is theirs and may hold anything.
    log.fields.route = `${c.req.method} ${routePath(c, -1)}`;
    log.fields.status = c.res.status;
    if (!log.streaming) {
      log.firstByte();
      log.end();
    }
    const pending = log.pending;
    // The line is written however its wait ends: a failure there is no reason to lose it.
    if (pending) c.executionCtx.waitUntil(pending.then(write, write));
    else log.write();
  };
}
