import type { Context } from "hono";
import type { Config } from "./config";
import type { AppEnv } from "./types";

/** Returns a 2xx upstream event stream to the caller. */
export function streamResponse(
  c: Context<AppEnv>,
  upstream: Response & { body: ReadableStream<Uint8Array> },
  _abort: AbortController,
  _config: Config,
): Response {
  return c.body(upstream.body, 200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
  });
}
