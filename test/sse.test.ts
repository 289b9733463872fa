import { describe, expect, it } from "vitest";
import { SseFramer } from "../src/sse";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Pushes `chunks` through a framer; returns each output chunk, the events seen and the tail. */
async function frame(chunks: Array<string | Uint8Array>) {
  const events: string[] = [];
  const framer = new SseFramer({ onEvent: (e) => events.push(decoder.decode(e)) });
  const writer = framer.writable.getWriter();
  const reader = framer.readable.getReader();
  const outputs: string[] = [];
  const reading = (async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      outputs.push(decoder.decode(value));
    }
  })();
  for (const chunk of chunks) await writer.write(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
  const tail = decoder.decode(framer.tail);
  framer.end();
  await reading;
  return { outputs, events, tail, text: outputs.join("") };
}

describe("SseFramer", () => {
  it("passes whole events unchanged and holds back a partial one", async () => {
    const { outputs, events, tail } = await frame(["data: a\n\ndata: b\n\nda", "ta: c\n", "\n"]);
    expect(outputs).toEqual(["data: a\n\ndata: b\n\n", "data: c\n\n"]);
    expect(events).toEqual(["data: a\n\n", "data: b\n\n", "data: c\n\n"]);
    expect(tail).toBe("");
  });

  it("emits an event as soon as its blank line arrives, not before", async () => {
    const { outputs } = await frame(["data: a\n", "\n", "data: b\n"]);
    expect(outputs).toEqual(["data: a\n\n"]);
  });

  it("keeps multi-line events whole", async () => {
    const event = "event: message\nid: 7\ndata: one\ndata: two\n\n";
    const { events } = await frame([event.slice(0, 10), event.slice(10, 30), event.slice(30)]);
    expect(events).toEqual([event]);
  });

  it("handles \\r\\n line endings", async () => {
    const { text, events } = await frame(["data: a\r\n\r\ndata: b\r\n\r\n"]);
    expect(text).toBe("data: a\r\n\r\ndata: b\r\n\r\n");
    // An event is reported up to the first byte of its blank line's ending, however it was split.
    expect(events).toEqual(["data: a\r\n\r", "data: b\r\n\r"]);
  });

  it("handles a \\r\\n split across reads inside an event", async () => {
    const { events, text } = await frame(["data: a\r", "\n\r\n"]);
    expect(events).toEqual(["data: a\r\n\r"]);
    expect(text).toBe("data: a\r\n\r\n");
  });

  it("sends an event at the \\r of its blank line and its \\n with what follows", async () => {
    const { outputs, events } = await frame(["data: a\r\n\r", "\ndata: b\r\n\r\n"]);
    expect(outputs).toEqual(["data: a\r\n\r", "\ndata: b\r\n\r\n"]);
    expect(events).toEqual(["data: a\r\n\r", "data: b\r\n\r"]);
  });

  it("does not count a split \\r\\n as two line endings", async () => {
    // "data: a\r" + "\n" is one line ending; only the next one makes the blank line.
    const { outputs } = await frame(["data: a\r", "\n", "data: b\n\n"]);
    expect(outputs).toEqual(["data: a\r\ndata: b\n\n"]);
  });

  it("handles \\r line endings", async () => {
    const { events, tail } = await frame(["data: a\r\rdata: b\r", "\rdata: c\r"]);
    expect(events).toEqual(["data: a\r\r", "data: b\r\r"]);
    expect(tail).toBe("data: c\r");
  });

  it("keeps multi-byte UTF-8 characters split across reads intact", async () => {
    const bytes = encoder.encode("data: héllo 🙂\n\n");
    const chunks = Array.from(bytes, (b) => new Uint8Array([b]));
    const { text, events } = await frame(chunks);
    expect(text).toBe("data: héllo 🙂\n\n");
    expect(events).toEqual(["data: héllo 🙂\n\n"]);
  });

  it("gives the same output for every chunking of the same bytes", async () => {
    const stream = "data: {\"a\":1}\r\n\r\n: comment\n\nevent: x\rdata: é\r\rdata: [DONE]\n\ndata: part";
    const whole = await frame([stream]);
    for (let cut = 1; cut < stream.length; cut++) {
      const split = await frame([stream.slice(0, cut), stream.slice(cut)]);
      expect(split.text).toBe(whole.text);
      expect(split.events).toEqual(whole.events);
      expect(split.tail).toBe("data: part");
    }
  });

  it("lets the owner insert bytes and end the stream only between events", async () => {
    const framer = new SseFramer();
    const writer = framer.writable.getWriter();
    const reading = new Response(framer.readable).text();
    await writer.write(encoder.encode("data: a\n\ndata: par"));
    framer.insert(encoder.encode(": keep-alive\n\n"));
    framer.end(encoder.encode("event: error\ndata: x\n\n"));
    const text = await reading;
    expect(text).toBe("data: a\n\n: keep-alive\n\nevent: error\ndata: x\n\n");
  });
});
