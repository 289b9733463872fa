// POST /v1/responses: the response object, its stream of typed events, and the same cues as chat
// completions.

import { describe, expect, it } from "vitest";
import { responsesStreamBytes, responsesStreamEvents } from "./streams.mjs";
import { expectBytes, newRid, type RawResult, useMockUpstream, waitFor } from "./client";

const mock = useMockUpstream();

/** Each event of a Responses stream as [its event line's type, its parsed data]. */
function eventsOf(text: string, eol = "\n") {
  return text
    .split(eol + eol)
    .filter(Boolean)
    .map((event) => {
      const [eventLine = "", dataLine = "", ...rest] = event.split(eol);
      expect([eventLine.startsWith("event: "), dataLine.startsWith("data: "), rest.length]).toEqual([
        true,
        true,
        0,
      ]);
      return [eventLine.slice(7), JSON.parse(dataLine.slice(6))] as [string, any];
    });
}

/** A stream that ended cleanly with exactly responsesStreamBytes(body). */
function expectStream(out: RawResult, body: object) {
  expect(out.status).toBe(200);
  expect(out.headers["content-type"]).toBe("text/event-stream");
  expect(out.error).toBeNull();
  expect(out.ended).toBe(true);
  expectBytes(out.bytes, responsesStreamBytes(body));
}

const RATE_LIMITED = '{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}';

describe("a non-streamed response", () => {
  it("is a completed response with one assistant message and word-count usage", async () => {
    const out = await mock.respond({
      model: "m-r",
      input: [{ role: "user", content: "hi there you" }],
      instructions: "be kind",
    });
    expect(out.status).toBe(200);
    expect(out.headers["content-type"]).toBe("application/json");
    const j = JSON.parse(out.bytes.toString());
    expect(j.id).toMatch(/^resp_mock_\d+$/);
    expect([j.object, j.status, j.model, j.instructions, j.error]).toEqual([
      "response",
      "completed",
      "m-r",
      "be kind",
      null,
    ]);
    expect(Number.isInteger(j.created_at) && Math.abs(j.created_at - Date.now() / 1000) < 5).toBe(true);
    expect(j.output).toHaveLength(1);
    const [item] = j.output;
    expect([item.type, item.role, item.status]).toEqual(["message", "assistant", "completed"]);
    expect(item.id).toMatch(/^msg_mock_\d+$/);
    expect(item.content).toEqual([
      { type: "output_text", text: "Hello from the mock upstream.", annotations: [], logprobs: [] },
    ]);
    expect(j.usage).toEqual({
      input_tokens: 5,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 5,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: 10,
    });
  });

  it("mock.cached_tokens reports cached input tokens; mock.no_usage reports usage null", async () => {
    const cached = await mock.respond({ model: "m", input: "a b c", mock: { cached_tokens: 2 } });
    expect(JSON.parse(cached.bytes.toString()).usage).toMatchObject({
      input_tokens: 3,
      input_tokens_details: { cached_tokens: 2 },
      output_tokens: 5,
    });
    const none = await mock.respond({ model: "m", input: "a b c", mock: { no_usage: true } });
    expect(JSON.parse(none.bytes.toString()).usage).toBeNull();
  });

  it("mock.no_usage streams a terminal event whose response.usage is null", async () => {
    const body = { model: "m", stream: true, input: "a b", mock: { no_usage: true } };
    const events = responsesStreamEvents(body);
    const terminal = JSON.parse(events.at(-1)!.split("\n")[1]!.slice(6));
    expect([terminal.type, terminal.response.usage]).toEqual(["response.completed", null]);
    expect((await mock.respond(body)).bytes.toString()).toBe(events.join(""));
  });

  it("mock.reply replaces the text", async () => {
    const reply = JSON.parse(
      (await mock.respond({ model: "m", input: "x", mock: { reply: "héllo 🙂" } })).bytes.toString(),
    );
    expect(reply.output[0].content[0].text).toBe("héllo 🙂");
  });
});

describe("a stream", () => {
  it("is exactly responsesStreamBytes: typed events numbered from 0, one delta per word", async () => {
    const body = { model: "m-rs", input: "hi", stream: true, mock: { reply: "héllo wörld 🙂" } };
    const out = await mock.respond(body);
    expectStream(out, body);
    expect(responsesStreamEvents(body).join("")).toBe(out.bytes.toString());
    const events = eventsOf(out.bytes.toString());
    expect(events.map(([type]) => type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    events.forEach(([type, data], i) => {
      expect(data.type).toBe(type);
      expect(data.sequence_number).toBe(i);
    });
    const data = events.map(([, d]) => d);
    expect([data[0].response.id, data[0].response.status, data[0].response.model]).toEqual([
      "resp_mock_stream",
      "in_progress",
      "m-rs",
    ]);
    expect(data.filter((d) => d.type === "response.output_text.delta").map((d) => d.delta)).toEqual([
      "héllo ",
      "wörld ",
      "🙂",
    ]);
    expect(data[7].text).toBe("héllo wörld 🙂");
    const done = data.at(-1).response;
    expect([done.id, done.status, done.output[0].content[0].text]).toEqual([
      "resp_mock_stream",
      "completed",
      "héllo wörld 🙂",
    ]);
    expect(done.usage.output_tokens).toBe(3);
  });

  it.each(["\r\n", "\r"])("line_ending %j, events, id and created shape it", async (le) => {
    const body = {
      model: "m",
      stream: true,
      mock: { line_ending: le, events: 3, id: "resp_custom", created: 1 },
    };
    const out = await mock.respond(body);
    expectStream(out, body);
    const events = eventsOf(out.bytes.toString(), le);
    expect(events).toHaveLength(3 + 8);
    expect([events[0]![1].response.id, events[0]![1].response.created_at]).toEqual(["resp_custom", 1]);
    if (le === "\r") expect(out.bytes.includes(0x0a)).toBe(false);
  });

  it("error_event sends an in-band error, then response.failed", async () => {
    const body = { model: "m", stream: true, mock: { error_event: true } };
    const out = await mock.respond(body);
    expectStream(out, body);
    const events = eventsOf(out.bytes.toString());
    expect(events.map(([type]) => type).slice(-3)).toEqual([
      "response.output_text.delta",
      "error",
      "response.failed",
    ]);
    expect(events.at(-2)![1]).toEqual({
      type: "error",
      sequence_number: 5,
      code: "provider_error",
      message: "provider error",
      param: null,
    });
    expect(events.at(-1)![1].response.error).toEqual({ code: "server_error", message: "provider error" });
  });
});

describe("a stream's transport cues", () => {
  const base = { model: "m", stream: true, mock: { reply: "héllo wörld 🙂" } };
  const all = responsesStreamEvents(base);
  const full = responsesStreamBytes(base);
  const withCue = (cue: object) => ({ ...base, mock: { ...base.mock, ...cue } });
  const offsets = [0, 7, full.indexOf(Buffer.from("🙂")) + 2, full.length - 1];

  it("end_without_done ends cleanly without response.completed", async () => {
    const out = await mock.respond(withCue({ end_without_done: true }));
    expect(out.ended && !out.error).toBe(true);
    expect(out.bytes.toString()).toBe(all.slice(0, -1).join(""));
  });

  it("reset_after_events: 3 cuts after three events", async () => {
    const out = await mock.respond(withCue({ reset_after_events: 3 }));
    expect(out.error && !out.ended).toBeTruthy();
    expect(out.bytes.toString()).toBe(all.slice(0, 3).join(""));
  });

  it.each(offsets)("reset_after_bytes: %i cuts after exactly that many bytes", async (n) => {
    const out = await mock.respond(withCue({ reset_after_bytes: n }));
    expect(out.error).toBeTruthy();
    expectBytes(out.bytes, full.subarray(0, n));
  });

  it.each(offsets)("end_after_bytes: %i ends cleanly after exactly that many bytes", async (n) => {
    const out = await mock.respond(withCue({ end_after_bytes: n }));
    expect(out.ended && !out.error).toBe(true);
    expectBytes(out.bytes, full.subarray(0, n));
  });

  it("stall_after_events: 2 goes silent after two events until the client aborts", async () => {
    const out = await mock.respond(withCue({ stall_after_events: 2 }), { abortAfterMs: 300 });
    expect([out.bytes.toString(), out.error]).toEqual([all.slice(0, 2).join(""), "client-aborted"]);
  });

  it('split: "bytes" with chunk_size 5 arrives in many small reads', async () => {
    const out = await mock.respond(withCue({ split: "bytes", chunk_size: 5 }));
    expectBytes(out.bytes, full);
    expect(out.reads).toBeGreaterThan(full.length / 15);
  });
});

describe("failure cues", () => {
  it("status, body and headers send exactly those", async () => {
    const out = await mock.respond({
      model: "m",
      mock: { status: 429, body: RATE_LIMITED, headers: { "retry-after": "7" } },
    });
    expect([out.status, out.bytes.toString(), out.headers["retry-after"]]).toEqual([429, RATE_LIMITED, "7"]);
  });

  it("content_type sets the type of a status answer, streaming or not", async () => {
    const out = await mock.respond({
      model: "m",
      stream: true,
      mock: { status: 503, body: "busy", content_type: "text/plain" },
    });
    expect([out.status, out.headers["content-type"]]).toEqual([503, "text/plain"]);
  });

  it("status without body sends an empty body", async () => {
    const out = await mock.respond({ model: "m", mock: { status: 500 } });
    expect([out.status, out.bytes.length]).toEqual([500, 0]);
  });

  it("hang: no response until the client aborts", async () => {
    const out = await mock.respond({ model: "m", mock: { hang: true } }, { abortAfterMs: 150 });
    expect([out.status, out.error]).toEqual([null, "client-aborted"]);
  });

  it("reset: true cuts the connection before any response", async () => {
    expect((await mock.respond({ model: "m", mock: { reset: true } })).status).toBeNull();
  });

  it("delay_ms waits before answering", async () => {
    const t0 = Date.now();
    expect((await mock.respond({ model: "m", mock: { delay_ms: 120 } })).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(115);
  });

  it("redirect: a 302 to that location", async () => {
    const out = await mock.respond({ model: "m", mock: { redirect: "http://example.invalid/x" } });
    expect([out.status, out.headers.location]).toEqual([302, "http://example.invalid/x"]);
  });

  it.each([false, true])("set_cookie adds set-cookie (stream: %s)", async (stream) => {
    const out = await mock.respond({ model: "m", stream, mock: { set_cookie: true } });
    expect([out.status, out.headers["set-cookie"]]).toEqual([200, ["session=secret"]]);
  });
});

describe("the route", () => {
  it("records each request and counts it as completed", async () => {
    const rid = newRid("resp-rec");
    const bodyText = JSON.stringify({ model: "m", input: "hi" });
    await fetch(`${mock.baseUrl}/responses`, {
      method: "POST",
      headers: { "x-request-id": rid },
      body: bodyText,
    }).then((r) => r.text());
    const [record] = await (await fetch(`${mock.url}/__mock/requests?request_id=${rid}`)).json();
    expect([record.method, record.path, record.body]).toEqual(["POST", "/v1/responses", bodyText]);
    expect(await waitFor(async () => (await mock.stats()).completed.includes(rid))).toBe(true);
  });

  it("GET /v1/responses is no route", async () => {
    expect((await fetch(`${mock.baseUrl}/responses`)).status).toBe(404);
  });
});
