import { describe, expect, it } from "vitest";
import { SseFramer } from "../src/streaming/sse";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Pushes `chunks` through a framer; returns each non-empty result, the events seen and the tail. */
function frame(chunks: Array<string | Uint8Array>) {
  const events: string[] = [];
  const framer = new SseFramer({ onEvent: (e) => void events.push(decoder.decode(e)) });
  const outputs: string[] = [];
  for (const chunk of chunks) {
    const out = framer.push(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
    if (out) outputs.push(decoder.decode(out));
  }
  const tail = decoder.decode(framer.tail);
  return { outputs, events, tail, text: outputs.join("") };
}

describe("SseFramer", () => {
  it("passes whole events unchanged and holds back a partial one", () => {
    const { outputs, events, tail } = frame(["data: a\n\ndata: b\n\nda", "ta: c\n", "\n"]);
    expect(outputs).toEqual(["data: a\n\ndata: b\n\n", "data: c\n\n"]);
    expect(events).toEqual(["data: a\n\n", "data: b\n\n", "data: c\n\n"]);
    expect(tail).toBe("");
  });

  it("emits an event as soon as its blank line arrives, not before", () => {
    const { outputs } = frame(["data: a\n", "\n", "data: b\n"]);
    expect(outputs).toEqual(["data: a\n\n"]);
  });

  it("keeps multi-line events whole", () => {
    const event = "event: message\nid: 7\ndata: one\ndata: two\n\n";
    const { events } = frame([event.slice(0, 10), event.slice(10, 30), event.slice(30)]);
    expect(events).toEqual([event]);
  });

  it("counts each event's lines before its blank line, whatever their endings, split anywhere", () => {
    const stream =
      "data: a\n\nevent: x\r\nid: 7\r\ndata: one\rdata: two\n\n: note\ndata: b\r\rdata: c\r\n\r\n";
    for (let cut = 0; cut <= stream.length; cut++) {
      const lines: number[] = [];
      const framer = new SseFramer({ onEvent: (_, count) => void lines.push(count) });
      framer.push(encoder.encode(stream.slice(0, cut)));
      framer.push(encoder.encode(stream.slice(cut)));
      expect(lines, `cut at ${cut}`).toEqual([1, 4, 2, 1]);
    }
  });

  it("handles \\r\\n line endings", () => {
    const { text, events } = frame(["data: a\r\n\r\ndata: b\r\n\r\n"]);
    expect(text).toBe("data: a\r\n\r\ndata: b\r\n\r\n");
    // An event is reported up to the first byte of its blank line's ending, however it was split.
    expect(events).toEqual(["data: a\r\n\r", "data: b\r\n\r"]);
  });

  it("handles a \\r\\n split across reads inside an event", () => {
    const { events, text } = frame(["data: a\r", "\n\r\n"]);
    expect(events).toEqual(["data: a\r\n\r"]);
    expect(text).toBe("data: a\r\n\r\n");
  });

  it("sends an event at the \\r of its blank line and its \\n with what follows", () => {
    const { outputs, events } = frame(["data: a\r\n\r", "\ndata: b\r\n\r\n"]);
    expect(outputs).toEqual(["data: a\r\n\r", "\ndata: b\r\n\r\n"]);
    expect(events).toEqual(["data: a\r\n\r", "data: b\r\n\r"]);
  });

  it("does not count a split \\r\\n as two line endings", () => {
    // "data: a\r" + "\n" is one line ending; only the next one makes the blank line.
    const { outputs } = frame(["data: a\r", "\n", "data: b\n\n"]);
    expect(outputs).toEqual(["data: a\r\ndata: b\n\n"]);
  });

  it("lets an empty chunk between a \\r and its \\n change nothing", () => {
    const { outputs, tail } = frame(["data: a\r", "", "\n", "data: b\n"]);
    expect(outputs).toEqual([]);
    expect(tail).toBe("data: a\r\ndata: b\n");
  });

  it("handles \\r line endings", () => {
    const { events, tail } = frame(["data: a\r\rdata: b\r", "\rdata: c\r"]);
    expect(events).toEqual(["data: a\r\r", "data: b\r\r"]);
    expect(tail).toBe("data: c\r");
  });

  it("keeps multi-byte UTF-8 characters split across reads intact", () => {
    const bytes = encoder.encode("data: héllo 🙂\n\n");
    const chunks = Array.from(bytes, (b) => new Uint8Array([b]));
    const { text, events } = frame(chunks);
    expect(text).toBe("data: héllo 🙂\n\n");
    expect(events).toEqual(["data: héllo 🙂\n\n"]);
  });

  it("gives the same output for every chunking of the same bytes", () => {
    const stream = 'data: {"a":1}\r\n\r\n: comment\n\nevent: x\rdata: é\r\rdata: [DONE]\n\ndata: part';
    const whole = frame([stream]);
    for (let cut = 1; cut < stream.length; cut++) {
      const split = frame([stream.slice(0, cut), stream.slice(cut)]);
      expect(split.text).toBe(whole.text);
      expect(split.events).toEqual(whole.events);
      expect(split.tail).toBe("data: part");
    }
  });

  it("returns null for a chunk that completes no event", () => {
    const framer = new SseFramer();
    expect(framer.push(encoder.encode("data: a\n"))).toBeNull();
    expect(framer.push(new Uint8Array(0))).toBeNull();
    expect(decoder.decode(framer.push(encoder.encode("\n"))!)).toBe("data: a\n\n");
  });

  it("copies what it holds back, so the caller may refill a chunk's buffer once it has sent the result", () => {
    // The stream driver reads every upstream chunk into the same buffer.
    const buffer = new Uint8Array(32);
    const read = (text: string) => {
      const bytes = encoder.encode(text);
      buffer.fill(0x78);
      buffer.set(bytes);
      return buffer.subarray(0, bytes.length);
    };
    const framer = new SseFramer();
    const first = framer.push(read("data: a\n\ndata: par"));
    expect(decoder.decode(first!)).toBe("data: a\n\n");
    expect(first!.buffer).toBe(buffer.buffer);
    // Nothing completes in the next two reads, and what is held survives each refill.
    expect(framer.push(read("tial\r"))).toBeNull();
    expect(framer.push(read("\n"))).toBeNull();
    expect(decoder.decode(framer.tail)).toBe("data: partial\r\n");
    expect(decoder.decode(framer.push(read("\ndata: b"))!)).toBe("data: partial\r\n\n");
    expect(decoder.decode(framer.tail)).toBe("data: b");
  });
});

describe("SseFramer dropping events", () => {
  /** Pushes `chunks`, dropping each event whose text includes `drop`; returns what came out. */
  function framedWithout(chunks: string[], drop: string) {
    const framer = new SseFramer({
      onEvent: (e) => (decoder.decode(e).includes(drop) ? "drop" : undefined),
    });
    return chunks.map((chunk) => framer.push(encoder.encode(chunk))).map((out) => out && decoder.decode(out));
  }

  it("leaves a dropped event out, blank line and all, and returns the others byte for byte", () => {
    expect(framedWithout(["data: a\n\ndata: usage\n\ndata: b\n\n"], "usage")).toEqual([
      "data: a\n\ndata: b\n\n",
    ]);
    expect(framedWithout(["data: us", "age\r\n\r\ndata: b\r\n\r\n"], "usage")).toEqual([
      null,
      "data: b\r\n\r\n",
    ]);
  });

  it("returns null for a chunk that completes only a dropped event", () => {
    expect(framedWithout(["data: a\n\n", "data: usage\n\n", "data: b\n\n"], "usage")).toEqual([
      "data: a\n\n",
      null,
      "data: b\n\n",
    ]);
  });

  it("drops the \\n of a dropped event's \\r\\n blank line split across reads", () => {
    expect(framedWithout(["data: a\r\n\r\ndata: usage\r\n\r", "\ndata: b\r\n\r\n"], "usage")).toEqual([
      "data: a\r\n\r\n",
      "data: b\r\n\r\n",
    ]);
    expect(framedWithout(["data: usage\r\n\r", "\n", "data: b\r\n\r\n"], "usage")).toEqual([
      null,
      null,
      "data: b\r\n\r\n",
    ]);
  });

  it("sends the \\n of a kept event's split \\r\\n after a dropped event's was dropped", () => {
    // Each split `\r\n` decides its `\n` by the event its `\r` ended, not by one dropped earlier.
    expect(framedWithout(["data: usage\r\n\r", "\ndata: b\r\n\r", "\ndata: c\r\n\r\n"], "usage")).toEqual([
      null,
      "data: b\r\n\r",
      "\ndata: c\r\n\r\n",
    ]);
    expect(framedWithout(["data: usage\n\ndata: b\r\r", "\ndata: c\n\n"], "usage")).toEqual([
      "data: b\r\r",
      "\ndata: c\n\n",
    ]);
  });

  it("reads a blank line right after a dropped event's split \\r\\n as an event of its own", () => {
    const events: string[] = [];
    const framer = new SseFramer({
      onEvent: (e) => {
        events.push(decoder.decode(e));
        return events.at(-1)!.includes("usage") ? "drop" : undefined;
      },
    });
    expect(framer.push(encoder.encode("data: usage\r\n\r"))).toBeNull();
    expect(decoder.decode(framer.push(encoder.encode("\n\ndata: b\n\n"))!)).toBe("\ndata: b\n\n");
    expect(events).toEqual(["data: usage\r\n\r", "\n", "data: b\n\n"]);
  });

  it("keeps what follows a dropped event ending in a lone \\r", () => {
    expect(framedWithout(["data: usage\r\r", "data: b\r\r"], "usage")).toEqual([null, "data: b\r\r"]);
  });

  it("stops after the last event, leaving out one dropped before it in the same chunk", () => {
    const framer = new SseFramer({
      onEvent: (e) => {
        const text = decoder.decode(e);
        return text.includes("usage") ? "drop" : text.includes("[DONE]") ? "last" : undefined;
      },
    });
    const out = framer.push(encoder.encode("data: a\n\ndata: usage\n\ndata: [DONE]\n\ndata: late\n\n"));
    expect(decoder.decode(out!)).toBe("data: a\n\ndata: [DONE]\n\n");
    expect(framer.stopped).toBe(true);
  });
});

describe("SseFramer stopping", () => {
  /** A framer whose event holding `[DONE]` is the last, and what each push returned. */
  function framedUntilDone(chunks: string[]) {
    const framer = new SseFramer({
      onEvent: (e) => (decoder.decode(e).includes("[DONE]") ? "last" : undefined),
    });
    const outputs = chunks
      .map((chunk) => framer.push(encoder.encode(chunk)))
      .map((out) => out && decoder.decode(out));
    return { framer, outputs };
  }

  it("returns nothing after the last event, and has not overflowed", () => {
    const { framer, outputs } = framedUntilDone([
      "data: a\n\ndata: [DONE]\n\ndata: late\n\n",
      "data: later\n\n",
    ]);
    expect(outputs).toEqual(["data: a\n\ndata: [DONE]\n\n", null]);
    expect(framer.stopped).toBe(true);
    expect(framer.overflowed).toBe(false);
    expect(framer.tail.length).toBe(0);
  });

  it("stops at once after a last event that ends its chunk with \\n", () => {
    const { framer, outputs } = framedUntilDone(["data: a\n\ndata: [DONE]\n\n", "\n", "data: late\n\n"]);
    expect(outputs).toEqual(["data: a\n\ndata: [DONE]\n\n", null, null]);
    expect(framer.stopped).toBe(true);
  });

  it("after a last event whose blank line ended a chunk with \\r, returns only its \\n", () => {
    expect(framedUntilDone(["data: [DONE]\r\n\r", "\ndata: late\r\n\r\n", "\n"]).outputs).toEqual([
      "data: [DONE]\r\n\r",
      "\n",
      null,
    ]);
    // Not a `\n`: the `\r` was the whole line ending, and nothing more goes out.
    const { framer, outputs } = framedUntilDone(["data: [DONE]\r\r", "data: late\r\r"]);
    expect(outputs).toEqual(["data: [DONE]\r\r", null]);
    expect(framer.stopped).toBe(true);
  });

  it("stops at once after a last event followed in its chunk by more that ends with \\r", () => {
    // The chunk's closing `\r` is not the last event's: a `\n` after it is the late event's.
    const { framer, outputs } = framedUntilDone(["data: [DONE]\n\ndata: late\r", "\n\r\n"]);
    expect(outputs).toEqual(["data: [DONE]\n\n", null]);
    expect(framer.stopped).toBe(true);
  });

  it("is not stopped, overflowed or holding anything before its first chunk", () => {
    const framer = new SseFramer();
    expect([framer.stopped, framer.overflowed, framer.tail.length]).toEqual([false, false, 0]);
  });

  it("reads a stream that starts with a blank line or a lone \\n as the line endings they are", () => {
    expect(frame(["\ndata: a\n\n"]).outputs).toEqual(["\ndata: a\n\n"]);
    expect(frame(["\n", "\r\ndata: a\r\n\r\n"]).outputs).toEqual(["\n", "\r\ndata: a\r\n\r\n"]);
  });
});

describe("SseFramer's longest event", () => {
  /** A framer holding events of at most `max` bytes, and what each push returned. */
  function framedAtMost(max: number, chunks: string[]) {
    const framer = new SseFramer({ maxEventBytes: max });
    const outputs = chunks
      .map((chunk) => framer.push(encoder.encode(chunk)))
      .map((out) => out && decoder.decode(out));
    return { framer, outputs };
  }

  it("passes an event of exactly maxEventBytes, in one chunk or held across several", () => {
    // "data: abc\n\n" is 11 bytes.
    expect(framedAtMost(11, ["data: abc\n\ndata: xyz\n\n"]).outputs).toEqual(["data: abc\n\ndata: xyz\n\n"]);
    const held = framedAtMost(11, ["data: ", "abc\n", "\n"]);
    expect(held.outputs).toEqual([null, null, "data: abc\n\n"]);
    expect(held.framer.overflowed).toBe(false);
  });

  it("stops at an event one byte longer, returning the events before it and nothing after", () => {
    const { framer, outputs } = framedAtMost(11, ["data: a\n\ndata: abcd\n\ndata: b\n\n", "data: c\n\n"]);
    expect(outputs).toEqual(["data: a\n\n", null]);
    expect([framer.stopped, framer.overflowed]).toEqual([true, true]);
  });

  it("stops as soon as a held event outgrows it, before its end arrives", () => {
    // Its end never comes: the framer must not hold an ever longer event.
    const { framer, outputs } = framedAtMost(11, ["data: a\n\ndata: ab", "cdef"]);
    expect(outputs).toEqual(["data: a\n\n", null]);
    expect([framer.stopped, framer.overflowed]).toEqual([true, true]);
    expect(framer.tail.length).toBe(0);
  });
});
