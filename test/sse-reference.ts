import { env } from "cloudflare:workers";

/**
 * What a whole-event SSE forwarder must deliver, computed independently of the gateway's framer:
 * the reference bytes the mock upstream streams, the frames that end an interrupted stream as
 * the README's "Streaming" section spells them, and what must arrive when the upstream breaks. The stream
 * rows of the contract table and the fault sweeps of both routes judge by these.
 */

// 24 words, some of them multi-byte, so cuts also fall inside UTF-8 characters.
export const REPLY =
  "Grüße aus dem Gateway — ein Strom von Ereignissen, ganz und unversehrt 🙂 " +
  "même quand le flux amont se coupe au milieu d'une ligne ou d'un caractère.";

/**
 * What the mock upstream streams for this body on this route, fetched straight from it: the
 * reference bytes a clean pass through the gateway must reproduce.
 *
 * @example
 * const reference = await referenceStream("/v1/responses", { model, input: "hi", stream: true, mock: { reply: REPLY } });
 */
export async function referenceStream(route: string, body: Record<string, unknown>): Promise<string> {
  const response = await fetch(env.UPSTREAM_BASE_URL.replace(/\/v1$/, "") + route, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.text();
}

/** A stream's events, split on its blank lines, each with its blank line. */
export const eventsOf = (stream: string, lineEnd = "\n") =>
  stream
    .split(lineEnd + lineEnd)
    .filter(Boolean)
    .map((event) => event + lineEnd + lineEnd);

/** What ends an interrupted chat stream. */
export const CHAT_FRAME =
  "event: error\n" +
  'data: {"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\n' +
  "data: [DONE]\n\n";

/** The frames that end an interrupted Responses stream, numbered from `n`, naming response `id`. */
export const responsesFrames = (n: number, id: string) =>
  "event: error\n" +
  `data: {"type":"error","code":"stream_error","message":"upstream stream interrupted","param":null,"sequence_number":${n},` +
  `"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\n` +
  "event: response.failed\n" +
  `data: {"type":"response.failed","sequence_number":${n + 1},"id":"${id}","object":"response","status":"failed",` +
  `"response":{"id":"${id}","object":"response","status":"failed",` +
  `"error":{"code":"stream_error","message":"upstream stream interrupted"}}}\n\n`;

/** The mock upstream's Responses stream id, and the shape of the one the gateway makes up when it saw none. */
/** What ends an interrupted Messages stream: Anthropic's error event, and no `[DONE]`. */
export const MESSAGES_FRAME =
  'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"upstream stream interrupted"}}\n\n';

export const RESPONSES_UPSTREAM_ID = "resp_mock_stream";
export const MADE_UP_RESPONSE_ID = /"id":"(resp_gw_[0-9a-f]{32})"/;

export interface EventEnd {
  /** Offset at which the event is complete: its blank line's ending has begun. */
  complete: number;
  /** Offset just past its blank line. */
  end: number;
}

/**
 * End offsets of each event in a stream with one kind of line ending, counted as the gateway
 * must: an event is complete once the first byte of its blank line's ending has arrived.
 */
export function eventEnds(stream: string, lineEnd: string): EventEnd[] {
  const separator = lineEnd + lineEnd;
  const ends: EventEnd[] = [];
  let from = 0;
  for (;;) {
    const at = stream.indexOf(separator, from);
    if (at < 0) return ends;
    const end = at + separator.length;
    ends.push({ complete: at + lineEnd.length + 1, end });
    from = end;
  }
}

/** {@link eventEnds} in bytes of the UTF-8 `bytes`, which is what an upstream cuts. */
export function eventEndsInBytes(bytes: Uint8Array, lineEnd: string): EventEnd[] {
  const stream = new TextDecoder().decode(bytes);
  const encoder = new TextEncoder();
  // eventEnds counts UTF-16 units.
  const inBytes = (offset: number) => encoder.encode(stream.slice(0, offset)).length;
  return eventEnds(stream, lineEnd).map(({ complete, end }) => ({
    complete: inBytes(complete),
    end: inBytes(end),
  }));
}

/** The bytes the client must get, before the error frame, when the upstream breaks after `cut` bytes. */
export function expectedAfterCut(bytes: Uint8Array, ends: EventEnd[], cut: number): Uint8Array {
  let sent = 0;
  for (const { complete, end } of ends) {
    if (complete > cut) break;
    sent = Math.min(end, cut);
  }
  return bytes.subarray(0, sent);
}

/**
 * What the client must get when the upstream ends (cleanly or broken) after `cut` bytes: when
 * the terminal event's last line has arrived whole but its blank line has not, the stream up to
 * the cut with the blank line the gateway adds; otherwise null. Only the `\r` of a final `\r\n`
 * still ends the line, as nothing can follow it any more.
 */
export function completedAfterCut(
  bytes: Uint8Array,
  ends: EventEnd[],
  lineEnd: string,
  cut: number,
): string | null {
  const terminal = ends.at(-1)!;
  const lineEndAt = terminal.complete - 1 - lineEnd.length;
  if (cut <= lineEndAt || cut >= terminal.complete) return null;
  return (
    new TextDecoder().decode(bytes.subarray(0, cut)) + (cut - lineEndAt === lineEnd.length ? lineEnd : "\r")
  );
}

/**
 * Where to cut a stream: every byte offset, or (to keep the suite quick) every offset within four
 * bytes of a line ending, which covers every event boundary and split line ending, plus every
 * `stride`-th offset, which covers the inside of every line kind and of multi-byte characters.
 */
export function cutsFor(bytes: Uint8Array, everyOffset: boolean, stride = 5): number[] {
  const cuts: number[] = [];
  let lastLineEnd = -Infinity;
  for (let i = 0; i <= bytes.length; i++) {
    if (bytes[i] === 0x0a || bytes[i] === 0x0d) lastLineEnd = i;
    const nearLineEnd =
      i - lastLineEnd <= 4 || [1, 2, 3, 4].some((d) => bytes[i + d] === 0x0a || bytes[i + d] === 0x0d);
    if (everyOffset || nearLineEnd || i % stride === 0 || i === bytes.length) cuts.push(i);
  }
  return cuts;
}

/** `: keep-alive` comments at the start or right after an event's blank line (`\r\n\r` is complete too). */
const KEEP_ALIVES = /(^|\n\n|\r\r|\r\n\r\n?)(?:: keep-alive\n\n)+/g;

/**
 * The stream without the gateway's `: keep-alive` comments between events. The gateway writes one
 * whenever the upstream has been silent for a tick (250 ms), which on a loaded machine happens
 * even with a mock that sends everything at once; the contract allows them there. A keep-alive
 * anywhere else (inside an event) stays, for the comparison to catch.
 */
export const withoutKeepAlives = (stream: string) => stream.replace(KEEP_ALIVES, "$1");
