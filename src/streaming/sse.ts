/**
 * Server-sent events re-framing: bytes in, whole events out.
 *
 * An event ends with a blank line; lines end with `\n`, `\r\n` or `\r`. The framer forwards the
 * upstream's bytes unchanged but only up to the end of the last complete event, holding back a
 * partial one. A chunk is searched once for `\n` and once for `\r`, and each held-back byte is
 * copied at most once, so a chunk costs time in proportion to its own length, never to what is
 * buffered.
 */

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = new Uint8Array(0);

/**
 * What becomes of an event: passed on (`undefined`), left out (`"drop"`: its bytes, blank line
 * included, are not returned), or passed on as the last (`"last"`: the framer stops after it).
 */
export type EventVerdict = "drop" | "last" | undefined;

export interface SseFramerOptions {
  /**
   * Called with each complete event's bytes, in order, up to the first byte of its blank line's
   * ending (so a `\r\n` split across reads changes nothing). A view of memory the caller may
   * reuse: read it, do not keep it. Its verdict says whether the event is returned, and whether
   * anything that follows it is (`"last"`: the terminal event of a stream has gone out). `lines`
   * is how many lines it has before its blank line (fields and comments): with more than one, a
   * reader of its bytes meets a line break before their end.
   */
  onEvent?: (event: Uint8Array, lines: number) => EventVerdict;
  /**
   * The longest event the framer will hold or pass, in bytes (default: no limit). An event that
   * grows past it stops the framer: the events before it are returned, it and everything after
   * are dropped, and {@link SseFramer.overflowed} becomes true.
   */
  maxEventBytes?: number;
}

/**
 * `bytes` without the `[start, end)` ranges in `dropped` (ascending, apart): a copy when there are
 * any, which is rare (one event of a stream at most), else `bytes` itself.
 */
function without(bytes: Uint8Array, dropped: number[] | undefined): Uint8Array {
  if (!dropped) return bytes;
  const kept: Uint8Array[] = [];
  let from = 0;
  for (let i = 0; i < dropped.length; i += 2) {
    kept.push(bytes.subarray(from, Math.min(dropped[i]!, bytes.length)));
    from = dropped[i + 1]!;
  }
  kept.push(bytes.subarray(Math.min(from, bytes.length)));
  const out = new Uint8Array(kept.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of kept) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Cuts a byte stream at event boundaries. {@link push} returns the bytes of the events a chunk
 * completes, exactly as received; what the input leaves unfinished stays in {@link tail}, for
 * the owner to judge. Because everything it returns ends at an event boundary, the owner may
 * write bytes of its own (a keep-alive comment, a final error frame) between two results without
 * ever splitting an upstream event.
 *
 * The result may be a view into the pushed chunk; the bytes held back are always copied. So once
 * the result has been written, the chunk's buffer may be reused for the next read.
 *
 * @example
 * const framer = new SseFramer({ onEvent: (event) => dialect.observe(event) });
 * for (const chunk of chunks) {
 *   const events = framer.push(chunk);
 *   if (events) await send(events);
 * }
 * if (framer.tail.length > 0) {
 *   // the input ended inside an event
 * }
 */
export class SseFramer {
  readonly #onEvent: SseFramerOptions["onEvent"];
  readonly #maxEventBytes: number;
  #stopped = false;
  #overflowed = false;
  /** Told to stop at an event whose blank line is a `\r` that ended the last chunk: its `\n` may follow. */
  #stopAfterLF = false;
  /** Bytes of the event in progress, as received. */
  #held: Uint8Array[] = [];
  #heldLength = 0;
  /** No byte of the current line seen yet (so a terminator now would make a blank line). */
  #atLineStart = true;
  /** The lines the event in progress has ended so far. */
  #lines = 0;
  /** The previous byte was a `\r`: a `\n` now belongs to the same line ending. */
  #afterCR = false;
  /** That `\r` ended an event, so its `\n` belongs to the event already returned. */
  #crEndedEvent = false;
  /** ... or to an event that was dropped: the `\n` goes with it. */
  #crEndedDropped = false;

  constructor(options: SseFramerOptions = {}) {
    this.#onEvent = options.onEvent;
    this.#maxEventBytes = options.maxEventBytes ?? Infinity;
  }

  /** An event outgrew `maxEventBytes`; the framer has stopped. */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  /** The framer takes no more input: `onEvent` said so, or an event outgrew its limit. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Takes the next chunk of the stream; returns the bytes that complete events (held bytes of an
   * earlier chunk first), or null when the chunk completes none.
   */
  push(chunk: Uint8Array): Uint8Array | null {
    const length = chunk.length;
    // Nothing to look at, and nothing to forget: a `\r` at the end of the last chunk still waits
    // for the byte after it.
    if (length === 0 || this.#stopped) return null;
    if (this.#stopAfterLF) return this.#stop(chunk[0] === LF ? chunk.subarray(0, 1) : EMPTY);
    if (this.#crEndedDropped) {
      this.#crEndedDropped = false;
      if (this.#afterCR && chunk[0] === LF) {
        this.#afterCR = this.#crEndedEvent = false;
        if (length === 1) return null;
        return this.push(chunk.subarray(1));
      }
    }
    const held = this.#heldLength;
    // Offsets into the result (held bytes, then this chunk): events as (start, end, next event's
    // start, lines) quadruples, and where the bytes that may be sent end.
    const events: number[] = [];
    let sendable = -1;
    let start = 0;
    let i = 0;
    if (this.#afterCR && length > 0 && chunk[0] === LF) {
      // The `\n` of a `\r\n` split across reads. If that `\r` ended an event, which has gone
      // out already, the `\n` goes out now as the rest of it.
      if (this.#crEndedEvent) sendable = start = 1;
      i = 1;
    }
    this.#afterCR = false;
    this.#crEndedEvent = false;
    // Where the current line began while it has no byte yet, else -1: a terminator found right
    // there ends a blank line.
    let lineStart = this.#atLineStart ? i : -1;
    // Terminators are found with the typed array's own indexOf, which runs natively: events are
    // mostly long lines, and a JavaScript loop over every byte cost far more (bench/README.md).
    let lf = chunk.indexOf(LF, i);
    let cr = chunk.indexOf(CR, i);
    while (lf >= 0 || cr >= 0) {
      let at: number;
      let end: number;
      if (cr < 0 || (lf >= 0 && lf < cr)) {
        at = lf;
        end = lf + 1;
        lf = chunk.indexOf(LF, end);
      } else {
        at = cr;
        end = cr + 1;
        if (end === length) {
          this.#afterCR = true;
        } else if (chunk[end] === LF) {
          end++;
          lf = chunk.indexOf(LF, end);
        }
        cr = chunk.indexOf(CR, end);
      }
      if (at === lineStart) {
        events.push(start, held + at + 1, held + end, this.#lines);
        this.#lines = 0;
        sendable = start = held + end;
        this.#crEndedEvent = this.#afterCR;
      } else this.#lines++;
      lineStart = end;
    }
    this.#atLineStart = lineStart === length;

    if (sendable < 0) {
      this.#hold(chunk);
      return null;
    }
    const cut = sendable - held;
    const out = held ? this.#joinHeld(chunk.subarray(0, cut)) : chunk.subarray(0, cut);
    this.#held = [];
    this.#heldLength = 0;
    // Offsets of `out` to leave out, as (start, end) pairs: the dropped events.
    let dropped: number[] | undefined;
    for (let e = 0; e < events.length; e += 4) {
      const eventStart = events[e]!;
      if (events[e + 1]! - eventStart > this.#maxEventBytes)
        return this.#stop(without(out.subarray(0, eventStart), dropped), true);
      const verdict = this.#onEvent?.(out.subarray(eventStart, events[e + 1]), events[e + 3]!);
      const next = events[e + 2]!;
      if (verdict === "drop") {
        (dropped ??= []).push(eventStart, next);
        // Its blank line's `\r` ended the chunk: a `\n` that comes next is the rest of it.
        this.#crEndedDropped = this.#afterCR && next === held + length;
      } else if (verdict === "last") {
        const last = without(out.subarray(0, next), dropped);
        if (!(this.#afterCR && next === held + length)) return this.#stop(last);
        this.#stopAfterLF = true;
        this.#held = [];
        this.#heldLength = 0;
        return last.length ? last : null;
      }
    }
    if (cut < length) this.#hold(chunk.subarray(cut));
    const kept = without(out, dropped);
    return kept.length ? kept : null;
  }

  /** Ends the framer's work: `last` is what it returns, nothing is held any more. */
  #stop(last: Uint8Array, overflowed = false): Uint8Array | null {
    this.#stopped = true;
    this.#overflowed = overflowed;
    this.#held = [];
    this.#heldLength = 0;
    return last.length ? last : null;
  }

  /** The bytes of an event the input has not finished (empty if none). */
  get tail(): Uint8Array {
    return this.#heldLength ? this.#joinHeld(EMPTY) : EMPTY;
  }

  #hold(bytes: Uint8Array) {
    if (bytes.length === 0) return;
    if (this.#heldLength + bytes.length > this.#maxEventBytes) {
      // The event in progress is already longer than any event may be: stop holding it.
      this.#stop(EMPTY, true);
      return;
    }
    // Copied: the caller may reuse the chunk's buffer, and a few held bytes should not keep a
    // whole large chunk alive.
    this.#held.push(bytes.slice());
    this.#heldLength += bytes.length;
  }

  #joinHeld(last: Uint8Array): Uint8Array {
    const out = new Uint8Array(this.#heldLength + last.length);
    let offset = 0;
    for (const part of this.#held) {
      out.set(part, offset);
      offset += part.length;
    }
    out.set(last, offset);
    return out;
  }
}
