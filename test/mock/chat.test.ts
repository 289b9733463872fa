// POST /v1/chat/completions: the well-behaved completion and stream, and the cues that shape or break
// the stream.

import { describe, expect, it } from "vitest";
import { chatStreamBytes, chatStreamEvents } from "./streams.mjs";
import { expectBytes, newRid, type RawResult, useMockUpstream, waitFor } from "./client";

const mock = useMockUpstream();

/** The events of a stream, each without its `data: ` prefix. */
const parseEvents = (text: string) =>
  text
    .split(/\r\n\r\n|\n\n|\r\r/)
    .filter(Boolean)
    .map((e) => e.replace(/^data: /, ""));

/** A stream that ended cleanly with exactly chatStreamBytes(body). */
function expectStream(out: RawResult, body: object) {
  expect(out.status).toBe(200);
  expect(out.headers["content-type"]).toBe("text/event-stream");
  expect(out.headers["cache-control"]).toBe("no-cache");
  expect(out.error).toBeNull();
  expect(out.ended).toBe(true);
  expectBytes(out.bytes, chatStreamBytes(body));
}

describe("a non-streamed completion", () => {
  it("is a chat.completion with the default reply, the request's model and word-count usage", async () => {
    const res = await fetch(`${mock.baseUrl}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "m-1", messages: [{ role: "user", content: "hi there you" }] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    const j = await res.json();
    expect(j.id).toMatch(/^chatcmpl-mock-\d+$/);
    expect(j.object).toBe("chat.completion");
    expect(Number.isInteger(j.created) && Math.abs(j.created - Date.now() / 1000) < 5).toBe(true);
    expect(j.model).toBe("m-1");
    expect(j.choices[0].message).toEqual({ role: "assistant", content: "Hello from the mock upstream." });
    expect(j.choices[0].finish_reason).toBe("stop");
    expect(j.usage).toEqual({
      prompt_tokens: 3,
      completion_tokens: 5,
      total_tokens: 8,
      prompt_tokens_details: { cached_tokens: 0 },
    });
  });

  it("mock.cached_tokens reports that many prompt tokens as cached; mock.no_usage reports no usage", async () => {
    const messages = [{ role: "user", content: "one two three four" }];
    const cached = await mock.chat({ model: "m", messages, mock: { cached_tokens: 3 } });
    expect(JSON.parse(cached.bytes.toString()).usage).toEqual({
      prompt_tokens: 4,
      completion_tokens: 5,
      total_tokens: 9,
      prompt_tokens_details: { cached_tokens: 3 },
    });
    const none = JSON.parse(
      (await mock.chat({ model: "m", messages, mock: { no_usage: true } })).bytes.toString(),
    );
    expect(none.choices[0].message.content).toBe("Hello from the mock upstream.");
    expect("usage" in none).toBe(false);
  });

  it("mock.reply replaces the reply", async () => {
    const out = await mock.chat({ model: "m", messages: [], mock: { reply: "héllo wörld 🙂" } });
    expect(JSON.parse(out.bytes.toString()).choices[0].message.content).toBe("héllo wörld 🙂");
  });
});

describe("a stream", () => {
  it("is exactly chatStreamBytes: a role chunk, one chunk per word, a stop chunk, then [DONE]", async () => {
    const body = { model: "m-s", stream: true, messages: [{ role: "user", content: "x" }] };
    const out = await mock.chat(body);
    expectStream(out, body);
    const events = parseEvents(out.bytes.toString());
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks.every((c) => c.object === "chat.completion.chunk" && c.model === "m-s")).toBe(true);
    expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" });
    const text = chunks
      .slice(1, -1)
      .map((c) => c.choices[0].delta.content)
      .join("");
    expect(text).toBe("Hello from the mock upstream.");
    expect(chunks.length - 2).toBe(5);
    expect(chunks.at(-1).choices[0]).toEqual({ index: 0, delta: {}, logprobs: null, finish_reason: "stop" });
    expect(chatStreamEvents(body).join("")).toBe(out.bytes.toString());
  });

  it("stream_options.include_usage adds a usage chunk with choices []", async () => {
    const body = {
      model: "m",
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "a b" }],
    };
    const out = await mock.chat(body);
    expectStream(out, body);
    const usage = JSON.parse(parseEvents(out.bytes.toString()).at(-2)!);
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual({
      prompt_tokens: 2,
      completion_tokens: 5,
      total_tokens: 7,
      prompt_tokens_details: { cached_tokens: 0 },
    });
  });

  it("mock.no_usage sends no usage chunk even when asked, and nothing else changes", async () => {
    const body = { model: "m", stream: true, stream_options: { include_usage: true }, messages: [] };
    const cued = { ...body, mock: { no_usage: true } };
    const out = await mock.chat(cued);
    expectStream(out, cued);
    expect(out.bytes.toString()).toBe(chatStreamEvents({ ...body, stream_options: {} }).join(""));
  });

  it("mock.reply with multi-byte UTF-8 streams word by word", async () => {
    const body = { model: "m", stream: true, mock: { reply: "héllo wörld 🙂" } };
    const out = await mock.chat(body);
    expectStream(out, body);
    const pieces = parseEvents(out.bytes.toString())
      .slice(1, -2)
      .map((e) => JSON.parse(e).choices[0].delta.content);
    expect(pieces).toEqual(["héllo ", "wörld ", "🙂"]);
  });

  it("mock.events: 2000 sends tok0 .. tok1999", async () => {
    const body = { model: "m", stream: true, mock: { events: 2000 } };
    const out = await mock.chat(body);
    expectStream(out, body);
    const events = parseEvents(out.bytes.toString());
    expect(events).toHaveLength(2000 + 3);
    expect(JSON.parse(events[1]!).choices[0].delta.content).toBe("tok0 ");
    expect(JSON.parse(events[2000]!).choices[0].delta.content).toBe("tok1999 ");
  });

  it("mock.events: 20000 arrives whole past a paused reader (backpressure)", async () => {
    const body = { model: "m", stream: true, mock: { events: 20000 } };
    expectStream(await mock.chat(body, { pauseMs: 300 }), body);
  });

  it("mock.interval_ms paces the events as separate reads", async () => {
    const body = { model: "m", stream: true, mock: { events: 4, interval_ms: 40 } };
    const t0 = Date.now();
    const out = await mock.chat(body);
    const elapsed = Date.now() - t0;
    expectStream(out, body);
    // 7 events -> 6 gaps of 40 ms
    expect(elapsed).toBeGreaterThanOrEqual(230);
    expect(out.reads).toBeGreaterThanOrEqual(5);
  });

  it.each(["\r\n", "\r"])("mock.line_ending %j ends every line so", async (le) => {
    const body = { model: "m", stream: true, mock: { line_ending: le } };
    const out = await mock.chat(body);
    expectStream(out, body);
    const text = out.bytes.toString();
    expect(text.endsWith(`data: [DONE]${le}${le}`)).toBe(true);
    if (le === "\r") expect(text.includes("\n")).toBe(false);
    else expect(/[^\r]\n/.test(text)).toBe(false);
  });

  it('split: "bytes" with chunk_size 5 arrives in many small reads', async () => {
    const body = { model: "m", stream: true, mock: { split: "bytes", chunk_size: 5 } };
    const out = await mock.chat(body);
    expectStream(out, body);
    const pieces = Math.ceil(chatStreamBytes(body).length / 5);
    expect(out.reads).toBeGreaterThan(pieces / 3);
  });

  it("error_event sends an in-band error, then [DONE]", async () => {
    const body = { model: "m", stream: true, mock: { error_event: true } };
    const out = await mock.chat(body);
    expectStream(out, body);
    expect(out.bytes.toString().endsWith("data: [DONE]\n\n")).toBe(true);
  });
});

describe("a stream's transport cues", () => {
  const reply = { model: "m", stream: true, mock: { reply: "héllo wörld 🙂" } };
  const full = chatStreamBytes(reply);
  const emoji = full.indexOf(Buffer.from("🙂"));
  const withCue = (cue: object) => ({ ...reply, mock: { ...reply.mock, ...cue } });

  it("reset_after_events: 2 cuts after two events, counted as reset, not aborted", async () => {
    const body = { model: "m", stream: true, mock: { reset_after_events: 2 } };
    const rid = newRid("rae");
    const out = await mock.chat(body, { headers: { "x-request-id": rid } });
    expect(out.status).toBe(200);
    expect(out.error).toBeTruthy();
    expect(out.ended).toBe(false);
    expect(out.bytes.toString()).toBe(chatStreamEvents(body).slice(0, 2).join(""));
    expect(await waitFor(async () => (await mock.stats()).reset.includes(rid))).toBe(true);
    expect((await mock.stats()).aborted.includes(rid)).toBe(false);
  });

  const resetOffsets = [
    0,
    1,
    5,
    6,
    full.indexOf(Buffer.from("é")) + 1,
    emoji + 1,
    emoji + 2,
    emoji + 3,
    full.length - 1,
    full.length - 7,
  ];
  it.each(resetOffsets)(
    "reset_after_bytes: %i cuts after exactly that many bytes, mid-UTF-8 too",
    async (n) => {
      const body = withCue({ reset_after_bytes: n });
      const out = await mock.chat(body);
      expect(out.status).toBe(200);
      expect(out.error).toBeTruthy();
      expect(out.ended).toBe(false);
      expectBytes(out.bytes, chatStreamBytes(body).subarray(0, n));
    },
  );

  it.each([0, 10, emoji + 2])("end_after_bytes: %i ends cleanly after exactly that many bytes", async (n) => {
    const body = withCue({ end_after_bytes: n });
    const out = await mock.chat(body);
    expect(out.ended).toBe(true);
    expect(out.error).toBeNull();
    expectBytes(out.bytes, chatStreamBytes(body).subarray(0, n));
  });

  it("end_without_done ends cleanly without [DONE]", async () => {
    const body = { model: "m", stream: true, mock: { end_without_done: true } };
    const out = await mock.chat(body);
    expect(out.ended).toBe(true);
    expect(out.error).toBeNull();
    expect(out.bytes.toString()).toBe(chatStreamEvents(body).slice(0, -1).join(""));
    expect(out.bytes.toString().includes("[DONE]")).toBe(false);
  });

  it("split and reset_after_bytes combine", async () => {
    const body = { model: "m", stream: true, mock: { split: "bytes", chunk_size: 3, reset_after_bytes: 50 } };
    const out = await mock.chat(body);
    expect(out.error).toBeTruthy();
    expect(out.ended).toBe(false);
    expectBytes(out.bytes, chatStreamBytes(body).subarray(0, 50));
  });

  it("stall_after_events: 2 goes silent after two events until the client aborts, counted as aborted", async () => {
    const rid = newRid("stall");
    const body = { model: "m", stream: true, mock: { stall_after_events: 2 } };
    const out = await mock.chat(body, { headers: { "x-request-id": rid }, abortAfterMs: 300 });
    expect(out.status).toBe(200);
    expect(out.bytes.toString()).toBe(chatStreamEvents(body).slice(0, 2).join(""));
    expect(out.error).toBe("client-aborted");
    expect(await waitFor(async () => (await mock.stats()).aborted.includes(rid))).toBe(true);
  });
});
