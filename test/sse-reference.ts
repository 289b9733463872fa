/**
 * What a whole-event SSE forwarder must deliver when its upstream breaks, computed independently
 * of the gateway's framer: the fault sweeps of chat and Responses streams both judge by these.
 */

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
  return eventEnds(stream, lineEnd).map(({ complete, end }) => ({ complete: inBytes(complete), end: inBytes(end) }));
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
export function completedAfterCut(bytes: Uint8Array, ends: EventEnd[], lineEnd: string, cut: number): string | null {
  const terminal = ends.at(-1)!;
  const lineEndAt = terminal.complete - 1 - lineEnd.length;
  if (cut <= lineEndAt || cut >= terminal.complete) return null;
  return new TextDecoder().decode(bytes.subarray(0, cut)) + (cut - lineEndAt === lineEnd.length ? lineEnd : "\r");
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
    const nearLineEnd = i - lastLineEnd <= 4 || [1, 2, 3, 4].some((d) => bytes[i + d] === 0x0a || bytes[i + d] === 0x0d);
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
