/**
 * Server-sent events re-framing: bytes in, whole events out.
 *
 * An event ends with a blank line; lines end with `\n`, `\r\n` or `\r`. The framer forwards the
 * upstream's bytes unchanged but only up to the end of the last complete event, holding back a
 * partial one. Each byte is scanned once and each held-back byte copied at most once, so a
 * chunk costs time in proportion to its own length, never to what is buffered.
 */

const LF = 0x0a;
const CR = 0x0d;

export interface SseFramerOptions {
  /** Called with each complete event's bytes (including its blank line), in order. */
  onEvent?: (event: Uint8Array) => void;
  /** Called with each chunk as it arrives, before it is framed. */
  onChunk?: (chunk: Uint8Array) => void;
  /** Called when the reader of the framed stream goes away (for a response: the client). */
  onCancel?: (reason: unknown) => void;
}

/**
 * A TransformStream that emits only whole SSE events. Because everything it has emitted ends at
 * an event boundary, its owner can {@link insert} bytes of its own (a keep-alive comment) or
 * {@link end} the stream with a final frame without ever splitting an upstream event. What the
 * input left unfinished stays in {@link tail}, for the owner to judge.
 *
 * @example
 * const framer = new SseFramer({ onEvent: (event) => inspect(event) });
 * upstream.body.pipeTo(framer.writable, { preventClose: true, preventAbort: true })
 *   .then(() => framer.end(), () => framer.end(errorFrame));
 * return new Response(framer.readable);
 */
export class SseFramer extends TransformStream<Uint8Array, Uint8Array> {
  readonly #scanner: EventScanner;
  readonly #controller: TransformStreamDefaultController<Uint8Array>;

  constructor(options: SseFramerOptions = {}) {
    const scanner = new EventScanner(options.onEvent);
    const { onChunk, onCancel } = options;
    let controller: TransformStreamDefaultController<Uint8Array> | undefined;
    super({
      start(c) {
        controller = c;
      },
      transform(chunk, c) {
        onChunk?.(chunk);
        const events = scanner.push(chunk);
        if (events) c.enqueue(events);
      },
      cancel: onCancel,
    });
    this.#scanner = scanner;
    this.#controller = controller!;
  }

  /** The bytes of an event the input has not finished (empty if none). */
  get tail(): Uint8Array {
    return this.#scanner.tail();
  }

  /** Writes `bytes` between two events. */
  insert(bytes: Uint8Array): void {
    this.#controller.enqueue(bytes);
  }

  /** Drops any unfinished event, writes `bytes` if given, and closes the output. */
  end(bytes?: Uint8Array): void {
    if (bytes?.length) this.#controller.enqueue(bytes);
    this.#controller.terminate();
  }
}

/** The state machine behind {@link SseFramer}, kept apart so it has no stream machinery. */
export class EventScanner {
  /** Bytes of the event in progress, as received. */
  #held: Uint8Array[] = [];
  #heldLength = 0;
  /** No byte of the current line seen yet (so a terminator now would make a blank line). */
  #atLineStart = true;
  /** The previous byte was a `\r`: a `\n` now belongs to the same line ending. */
  #afterCR = false;
  /** That `\r` ended an event, so its `\n` belongs to the event just emitted. */
  #crEndedEvent = false;

  constructor(private readonly onEvent?: (event: Uint8Array) => void) {}

  /**
   * Takes one chunk; returns the bytes that complete events (as sent), or null. Each event is
   * reported up to the first byte of its blank line's ending, so a `\r\n` split across reads
   * changes neither what is reported nor, in sum, what is sent.
   */
  push(chunk: Uint8Array): Uint8Array | null {
    const held = this.#heldLength;
    // Offsets into `out` (held bytes, then this chunk): events to report as [start, end) pairs,
    // and where the bytes that may be sent end.
    const events: number[] | null = this.onEvent ? [] : null;
    let sendable = -1;
    let start = 0;
    let i = 0;
    if (this.#afterCR && chunk.length > 0 && chunk[0] === LF) {
      // The `\n` of a `\r\n` split across reads. If that `\r` ended an event, which has gone
      // out already, the `\n` goes out now as the rest of it.
      if (this.#crEndedEvent) sendable = start = 1;
      i = 1;
    }
    this.#afterCR = false;
    this.#crEndedEvent = false;
    for (const length = chunk.length; i < length; i++) {
      const byte = chunk[i]!;
      if (byte !== LF && byte !== CR) {
        this.#atLineStart = false;
        continue;
      }
      const lineEndStart = i;
      if (byte === CR) {
        if (i + 1 < length) {
          if (chunk[i + 1] === LF) i++;
        } else {
          this.#afterCR = true;
        }
      }
      if (this.#atLineStart) {
        events?.push(start, held + lineEndStart + 1);
        sendable = start = held + i + 1;
        this.#crEndedEvent = this.#afterCR;
      }
      this.#atLineStart = true;
    }
    if (sendable < 0) {
      this.#hold(chunk);
      return null;
    }
    const cut = sendable - held;
    const out = held ? this.#joinHeld(chunk.subarray(0, cut)) : chunk.subarray(0, cut);
    this.#held = [];
    this.#heldLength = 0;
    if (cut < chunk.length) this.#hold(chunk.subarray(cut));
    if (events) for (let e = 0; e < events.length; e += 2) this.onEvent!(out.subarray(events[e], events[e + 1]));
    return out;
  }

  /** What is left when the input ends: an unfinished event, or nothing. */
  tail(): Uint8Array {
    return this.#heldLength ? this.#joinHeld(new Uint8Array(0)) : new Uint8Array(0);
  }

  #hold(bytes: Uint8Array) {
    if (bytes.length === 0) return;
    // Copied, so that a few held bytes do not keep a whole large chunk alive.
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
