import type { Context } from "hono";
import type { Config } from "../config";
import type { StreamOutcome } from "../request-log";
import { SseFramer } from "./sse";
import type { StreamDialect } from "./dialects";
import type { AppEnv } from "../types";

/**
 * How often the driver looks at a silent stream. The runtime notices a departed client only when
 * a write fails, so during upstream silence a keep-alive goes out this often, which bounds the
 * time to cancel the upstream after a disconnect to well under a second.
 */
const TICK_MS = 250;
const KEEP_ALIVE = new TextEncoder().encode(": keep-alive\n\n");
/**
 * The buffer each upstream read fills, reused from read to read. One read returns at most one
 * HTTP chunk of the upstream's, so this only needs to hold a large chunk whole: a read that has
 * to split one costs as much again.
 */
const READ_BYTES = 32 * 1024;

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
 *
 * In workerd every hop between JavaScript and the runtime's streams costs far more than looking
 * at the bytes, so the hops are kept to one read and one write per upstream chunk: the upstream
 * body is read with a BYOB reader into one reused buffer, and whole events are written to a
 * native IdentityTransformStream whose readable side is the response body. A JavaScript
 * TransformStream fed by pipeTo costs several hops per chunk and gave a fraction of the
 * events per second of a plain pipe (bench/README.md has the figures).
 *
 * @example
 * if (upstream.ok && upstream.body) return streamResponse(c, upstream, abort, config, chatDialect());
 */
export function streamResponse(
  c: Context<AppEnv>,
  upstream: Response & { body: ReadableStream<Uint8Array> },
  abort: AbortController,
  config: Config,
  dialect: StreamDialect,
): Response {
  const log = c.get("log");
  const { readable, writable } = new IdentityTransformStream();
  const writer = writable.getWriter();
  /** When the terminal event went out. */
  let finishedAt: number | undefined;
  // Nothing after the terminal event is forwarded, nothing the dialect keeps from the caller, and no
  // event longer than MAX_EVENT_BYTES is held.
  const framer = new SseFramer({
    onEvent: (event, lines) => {
      const forward = dialect.observe(event, lines);
      if (!dialect.finished) return forward ? undefined : "drop";
      finishedAt = Date.now();
      return "last";
    },
    maxEventBytes: config.maxEventBytes,
  });
  // Since when the driver has been waiting on the upstream without a byte: reset by every chunk
  // and after every write, so that a client slow to take an event never reads as upstream silence.
  let quietSince = Date.now();
  let lastWriteAt = quietSince;
  let writesInFlight = 0;
  let outcome: StreamOutcome | null = null;
  let streamEnded!: () => void;
  log.streamUntil(new Promise<void>((resolve) => (streamEnded = resolve)));

  /** Writes whole events (or a keep-alive) to the client; false when the client has left. */
  async function write(bytes: Uint8Array): Promise<boolean> {
    writesInFlight++;
    lastWriteAt = Date.now();
    try {
      await writer.write(bytes);
      return true;
    } catch {
      // The response body was cancelled: the client went away.
      finish("client_cancelled");
      return false;
    } finally {
      writesInFlight--;
    }
  }

  const ticker = setInterval(() => {
    const now = Date.now();
    // While a write is pending the driver waits on the client, not on the upstream.
    const silent = writesInFlight === 0 && now - quietSince >= config.streamIdleTimeoutMs;
    // Done, with only the `\n` of a split `\r\n` still to come: it gets a whole tick to arrive.
    const done = finishedAt !== undefined && now - finishedAt >= TICK_MS;
    if (done || silent) {
      // Aborting the upstream request fails the pending read, which then ends the stream.
      abort.abort();
    } else if (finishedAt === undefined && writesInFlight === 0 && now - lastWriteAt >= TICK_MS / 2) {
      // Half a tick: a write just before this tick must not push the next one a whole tick on.
      // A write in flight will tell of a departed client by itself.
      void write(KEEP_ALIVE);
    }
  }, TICK_MS);

  function finish(result: StreamOutcome, frames?: Uint8Array) {
    if (outcome) return;
    outcome = log.fields.stream_outcome = result;
    clearInterval(ticker);
    if (result === "client_cancelled") {
      abort.abort();
    } else {
      if (frames?.length) {
        log.firstByte();
        writer.write(frames).catch(() => {});
      }
      writer.close().catch(() => {});
    }
    streamEnded();
  }

  /**
   * The upstream has ended (cleanly, broken or silent), or the framer has stopped: complete the
   * stream or mark it interrupted. A terminal event lacking only its blank line completes the
   * stream however the upstream ended right after it. Whatever the upstream still had to send
   * is not wanted: its request is cancelled.
   */
  function settle() {
    if (outcome) return;
    if (framer.stopped) abort.abort();
    if (dialect.finished) return finish("complete");
    const tail = framer.overflowed ? null : framer.tail;
    const ending = tail && dialect.completeTail(tail);
    if (tail && ending) finish("complete", concat(tail, ending));
    else finish("interrupted", dialect.interruption());
  }

  async function forward() {
    const reader = upstream.body.getReader({ mode: "byob" });
    let buffer = new ArrayBuffer(READ_BYTES);
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) return;
      quietSince = Date.now();
      const events = framer.push(value);
      if (events) {
        log.firstByte();
        // Awaited: the events may be a view of the buffer, which the next read refills. It is
        // also the backpressure of a slow client.
        if (!(await write(events))) return;
        quietSince = Date.now();
      }
      if (framer.stopped) return;
      // The read took the buffer over (detached it); this is the same memory, given back.
      buffer = value.buffer;
    }
  }

  forward().then(settle, settle);

  return c.body(readable, 200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
  });
}
