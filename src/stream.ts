import type { Context } from "hono";
import type { Config } from "./config";
import type { StreamOutcome } from "./log";
import { SseFramer } from "./sse";
import type { StreamDialect } from "./stream-dialects";
import type { AppEnv } from "./types";

/**
 * How often the driver looks at a silent stream. The runtime notices a departed client only when
 * a write fails, so during upstream silence a keep-alive goes out this often, which bounds the
 * time to cancel the upstream after a disconnect to well under a second.
 */
const TICK_MS = 250;
const KEEP_ALIVE = new TextEncoder().encode(": keep-alive\n\n");

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Returns a 2xx upstream event stream to the caller, whole event by whole event. When the upstream
 * breaks, ends without its terminal event or falls silent for STREAM_IDLE_TIMEOUT_MS, the
 * unfinished event is dropped and the dialect's error frames close the stream. A client that
 * leaves cancels the upstream request.
 */
export function streamResponse(
  c: Context<AppEnv>,
  upstream: Response & { body: ReadableStream<Uint8Array> },
  abort: AbortController,
  config: Config,
  dialect: StreamDialect,
): Response {
  const log = c.var.log;
  let lastByteAt = Date.now();
  let lastWriteAt = lastByteAt;
  let outcome: StreamOutcome | null = null;
  let streamEnded!: () => void;
  log.waitFor(new Promise<void>((resolve) => (streamEnded = resolve)));

  const framer = new SseFramer({
    onChunk() {
      lastByteAt = Date.now();
    },
    onEvent(event) {
      log.firstByte();
      lastWriteAt = lastByteAt;
      dialect.observe(event);
    },
    onCancel() {
      finish("client_cancelled");
      abort.abort();
    },
  });

  const ticker = setInterval(() => {
    const now = Date.now();
    if (dialect.finished || now - lastByteAt >= config.streamIdleTimeoutMs) {
      // Done or silent too long: aborting the upstream request fails the pipe below, which then
      // ends the stream (complete or interrupted).
      abort.abort();
    } else if (now - lastWriteAt >= TICK_MS) {
      framer.insert(KEEP_ALIVE);
      lastWriteAt = now;
    }
  }, TICK_MS);

  function finish(result: StreamOutcome, frames?: Uint8Array) {
    if (outcome) return;
    outcome = log.fields.stream_outcome = result;
    clearInterval(ticker);
    if (result !== "client_cancelled") framer.end(frames);
    streamEnded();
  }

  /** The upstream has ended, cleanly or not: complete the stream or mark it interrupted. */
  function settle(cleanEnd: boolean) {
    if (dialect.finished) return finish("complete");
    const tail = framer.tail;
    const ending = cleanEnd ? dialect.completeTail(tail) : null;
    if (ending) finish("complete", concat(tail, ending));
    else finish("interrupted", dialect.interruption());
  }

  // The upstream's end, clean or not, is ours to turn into frames: the pipe neither closes nor
  // aborts the framer.
  upstream.body
    .pipeTo(framer.writable, { preventClose: true, preventAbort: true })
    .then(() => settle(true), () => settle(false));

  return c.body(framer.readable, 200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
  });
}
