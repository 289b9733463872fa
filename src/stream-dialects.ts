/**
 * What "finished" and "interrupted" mean for each API's event stream. The stream driver asks its
 * dialect whether the upstream's terminal event has been seen and what to write when it has not.
 */
export interface StreamDialect {
  /** Sees each complete upstream event, in order. */
  observe(event: Uint8Array): void;
  /** The upstream has sent its terminal event. */
  readonly finished: boolean;
  /**
   * If the unfinished `tail` is the terminal event lacking only its blank line, the bytes that
   * complete it; otherwise null.
   */
  completeTail(tail: Uint8Array): Uint8Array | null;
  /** The frames that end an interrupted stream. */
  interruption(): Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The line ending a tail finishes with, if it finishes a line at all. */
function trailingLineEnd(text: string): string | null {
  if (text.endsWith("\r\n")) return "\r\n";
  if (text.endsWith("\n")) return "\n";
  // At the end of the stream a lone `\r` ends its line: no `\n` can follow any more.
  if (text.endsWith("\r")) return "\r";
  return null;
}

const linesOf = (text: string) => text.split(/\r\n|\r|\n/);

// `data: [DONE]` with room for an `id:` or `event:` line; longer events are never the terminator,
// so most events are rejected by their length alone.
const MAX_DONE_EVENT_BYTES = 64;
const isDoneLine = (line: string) => line === "data: [DONE]" || line === "data:[DONE]";

const CHAT_INTERRUPTION = encoder.encode(
  "event: error\n" +
    'data: {"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\n' +
    "data: [DONE]\n\n",
);

/** Chat completions: finished by `data: [DONE]`. */
export function chatDialect(): StreamDialect {
  let finished = false;
  return {
    observe(event) {
      if (!finished && event.length <= MAX_DONE_EVENT_BYTES) {
        finished = linesOf(decoder.decode(event)).some(isDoneLine);
      }
    },
    get finished() {
      return finished;
    },
    completeTail(tail) {
      const text = decoder.decode(tail);
      const lineEnd = trailingLineEnd(text);
      if (!lineEnd || tail.length > MAX_DONE_EVENT_BYTES) return null;
      return linesOf(text.slice(0, -lineEnd.length)).some(isDoneLine) ? encoder.encode(lineEnd) : null;
    },
    interruption: () => CHAT_INTERRUPTION,
  };
}

/** Responses API: finished by `response.completed`, `response.failed` or `response.incomplete`. */
export function responsesDialect(): StreamDialect {
  // Until the Responses conventions land, its streams are judged like chat streams.
  return chatDialect();
}
