import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import OpenAI, { type APIError } from "openai";
import { responsesDialect } from "../src/streaming/dialects";
import { captureLogLines, cued, mockStats, openai, responses, seedTenant, unique, type Tenant } from "./helpers";
import { completedAfterCut, cutsFor, eventEndsInBytes, expectedAfterCut, withoutKeepAlives } from "./sse-reference";

/** The frames that end an interrupted Responses stream, spelled out as CONTRACT.md "Streaming" has them. */
const frames = (n: number, id: string) =>
  "event: error\n" +
  `data: {"type":"error","code":"stream_error","message":"upstream stream interrupted","param":null,"sequence_number":${n},` +
  `"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\n` +
  "event: response.failed\n" +
  `data: {"type":"response.failed","sequence_number":${n + 1},"id":"${id}","object":"response","status":"failed",` +
  `"response":{"id":"${id}","object":"response","status":"failed",` +
  `"error":{"code":"stream_error","message":"upstream stream interrupted"}}}\n\n`;

/** The mock upstream's response id, and the shape of the one the gateway makes up when it saw none. */
const UPSTREAM_ID = "resp_mock_stream";
const MADE_UP_ID = /"id":"(resp_gw_[0-9a-f]{32})"/;

// 24 words, some of them multi-byte, so cuts also fall inside UTF-8 characters.
const REPLY =
  "Grüße aus dem Gateway — ein Strom von Ereignissen, ganz und unversehrt 🙂 " +
  "même quand le flux amont se coupe au milieu d'une ligne ou d'un caractère.";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** What the mock upstream streams for this body, fetched straight from it: the reference bytes. */
async function referenceStream(tenant: Tenant, mock: Record<string, unknown>): Promise<string> {
  const response = await fetch(`${env.UPSTREAM_BASE_URL}/responses`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: tenant.model, input: "hi", stream: true, mock }),
  });
  return response.text();
}

/** The reference stream's events, split on its blank lines. */
const eventsOf = (stream: string, lineEnd = "\n") =>
  stream.split(lineEnd + lineEnd).filter(Boolean).map((event) => event + lineEnd + lineEnd);

function streamResponses(tenant: Tenant, mock: Record<string, unknown>, requestId = unique("responses-stream")) {
  return responses(tenant, { stream: true, mock }, { "x-request-id": requestId });
}

describe("Responses streams", () => {
  it("returns a clean stream unchanged as text/event-stream", async () => {
    const tenant = await seedTenant();
    const reference = await referenceStream(tenant, { reply: REPLY });
    expect(eventsOf(reference).length).toBeGreaterThanOrEqual(20);
    const response = await streamResponses(tenant, { reply: REPLY });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream");
    expect(response.headers.get("cache-control")).toBe("no-cache");
    expect(await response.text()).toBe(reference);
  });

  it("forwards the upstream's own error event and response.failed as they are", async () => {
    const tenant = await seedTenant();
    const reference = await referenceStream(tenant, { error_event: true });
    expect(reference).toContain("event: error\n");
    expect(reference).toContain("provider_error");
    expect(await (await streamResponses(tenant, { error_event: true })).text()).toBe(reference);
  });

  it("ends a stream without its terminal event with the two frames, numbered on from the upstream's", async () => {
    const tenant = await seedTenant();
    const events = eventsOf(await referenceStream(tenant, { reply: REPLY }));
    const text = await (await streamResponses(tenant, { reply: REPLY, end_without_done: true })).text();
    // The mock numbers its events from 0: the last one it sent is events.length - 2.
    expect(text).toBe(events.slice(0, -1).join("") + frames(events.length - 1, UPSTREAM_ID));
  });

  it("names a made-up response, numbered from 0, when the upstream broke before any event", async () => {
    const tenant = await seedTenant();
    const text = await (await streamResponses(tenant, { reset_after_bytes: 30 })).text();
    const id = MADE_UP_ID.exec(text)?.[1];
    expect(id).toBeDefined();
    expect(text).toBe(frames(0, id!));
  });

  it("completes a terminal event whose blank line never came, adding no frames", async () => {
    const tenant = await seedTenant();
    for (const lineEnd of ["\n", "\r\n", "\r"]) {
      const reference = await referenceStream(tenant, { reply: REPLY, line_ending: lineEnd });
      expect(eventsOf(reference, lineEnd).at(-1)).toMatch(/^event: response\.completed(\r\n|\r|\n)data: /);
      const cut = encoder.encode(reference).length - lineEnd.length;
      const text = await (await streamResponses(tenant, { reply: REPLY, line_ending: lineEnd, end_after_bytes: cut })).text();
      expect(text).toBe(reference);
    }
  });

  it("does not complete a terminal event cut inside its data line", async () => {
    const tenant = await seedTenant();
    const reference = await referenceStream(tenant, { reply: REPLY });
    const events = eventsOf(reference);
    const cut = encoder.encode(reference).length - 5;
    const text = await (await streamResponses(tenant, { reply: REPLY, end_after_bytes: cut })).text();
    expect(text).toBe(events.slice(0, -1).join("") + frames(events.length - 1, UPSTREAM_ID));
  });

  it("gives the same stream when events arrive split at arbitrary byte boundaries", async () => {
    const tenant = await seedTenant();
    const mock = { reply: REPLY, line_ending: "\r\n" };
    const reference = await referenceStream(tenant, mock);
    const response = await streamResponses(tenant, { ...mock, split: "bytes", chunk_size: 7 });
    // A slow trickle of bytes gets keep-alives between events; they are the only addition.
    expect(withoutKeepAlives(await response.text())).toBe(reference);
  });
});

describe("Responses fault sweep", () => {
  it('gives exactly the complete events, then the two frames, at every cut of a dense sample ("\\r\\n")', async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 100_000, user_requests_per_minute: 100_000 } });
    const mock = { reply: REPLY, line_ending: "\r\n" };
    const stream = await referenceStream(tenant, mock);
    const bytes = encoder.encode(stream);
    const ends = eventEndsInBytes(bytes, "\r\n");
    const sequenceNumbers = eventsOf(stream, "\r\n").map((event) => JSON.parse(event.split("data: ")[1]!).sequence_number);
    expect(ends.length).toBe(sequenceNumbers.length);
    expect(ends.length).toBeGreaterThanOrEqual(20);

    // Every offset near a line ending, and every 10th: about 1,600 cuts for this 9 KB stream.
    const cuts = cutsFor(bytes, false, 10);
    expect(cuts.length).toBeGreaterThanOrEqual(1000);
    const terminalAt = ends.at(-1)!.complete;
    const failures: string[] = [];
    const run = async (cut: number) => {
      const response = await streamResponses(tenant, { ...mock, reset_after_bytes: cut });
      const got = withoutKeepAlives(await response.text());
      const complete = ends.filter(({ complete }) => complete <= cut).length;
      const id = complete > 0 ? UPSTREAM_ID : (MADE_UP_ID.exec(got)?.[1] ?? "(no made-up id)");
      // Once the terminal event's data line is complete the stream is finished, whatever the upstream does next.
      const ending = cut >= terminalAt ? "" : frames(complete > 0 ? sequenceNumbers[complete - 1]! + 1 : 0, id);
      const want = completedAfterCut(bytes, ends, "\r\n", cut) ?? decoder.decode(expectedAfterCut(bytes, ends, cut)) + ending;
      if (response.status !== 200 || got !== want) {
        let at = 0;
        while (at < got.length && got[at] === want[at]) at++;
        const [gotHere, wantHere] = [got, want].map((text) => JSON.stringify(text.slice(at, at + 80)));
        failures.push(`cut ${cut}: status ${response.status}, from char ${at} got ${gotHere}, want ${wantHere}`);
      }
    };
    for (let i = 0; i < cuts.length; i += 16) await Promise.all(cuts.slice(i, i + 16).map(run));
    expect(failures.slice(0, 5)).toEqual([]);
  }, 180_000);
});

describe("responsesDialect", () => {
  const event = (text: string) => encoder.encode(text);
  const observed = (...events: string[]) => {
    const dialect = responsesDialect();
    for (const text of events) dialect.observe(event(text));
    return dialect;
  };
  const interruption = (...events: string[]) => decoder.decode(observed(...events).interruption());

  it("is finished by each terminal type, with or without an event line, whatever the key order and spacing", () => {
    for (const type of ["response.completed", "response.failed", "response.incomplete"]) {
      expect(observed(`event: ${type}\ndata: {"type":"${type}","sequence_number":3,"response":{}}\n\n`).finished).toBe(true);
      const pythonStyle = `data: {"response": {"status": "x"}, "sequence_number": 3, "type": "${type}"}\r\n\r\n`;
      expect(observed(pythonStyle).finished).toBe(true);
    }
  });

  it("is not finished by other events, an event line alone, or a terminal type quoted in output text", () => {
    const delta = '"type":"response.completed"';
    const quoted = JSON.stringify({ type: "response.output_text.delta", sequence_number: 4, delta });
    expect(quoted).toContain('\\"type\\":\\"response.completed\\"');
    expect(observed(`event: response.output_text.delta\ndata: ${quoted}\n\n`).finished).toBe(false);
    expect(observed("event: response.completed\n\n").finished).toBe(false);
    expect(observed('data: {"type":"response.in_progress","sequence_number":1}\n\n').finished).toBe(false);
    expect(observed('data: {"type":"error","sequence_number":1,"code":"x","message":"y"}\n\n').finished).toBe(false);
  });

  it("numbers its frames after the last upstream sequence_number, or from 0", () => {
    const created = 'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_abc"}}\n\n';
    expect(interruption(created)).toBe(frames(1, "resp_abc"));
    expect(interruption(created, 'data: {"delta":"x","sequence_number" : 41,"type":"response.output_text.delta"}\n\n')).toBe(
      frames(42, "resp_abc"),
    );
    // An event without one (an upstream keep-alive comment) keeps the last one seen.
    expect(interruption(created, 'data: {"type":"response.output_text.delta","sequence_number":7}\n\n', ": ping\n\n")).toBe(
      frames(8, "resp_abc"),
    );
    // With no upstream event at all: numbered from 0, one made-up id in both frames.
    const none = interruption();
    const id = MADE_UP_ID.exec(none)?.[1];
    expect(id).toBeDefined();
    expect(none).toBe(frames(0, id!));
  });

  it("names the response of response.created, else of response.in_progress", () => {
    const inProgress =
      'event: response.in_progress\ndata: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_2"}}\n\n';
    expect(interruption(inProgress)).toBe(frames(2, "resp_2"));
    const created = 'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}\n\n';
    expect(interruption(created, inProgress)).toBe(frames(2, "resp_1"));
  });

  it("completes a tail that is a whole terminal event lacking only its blank line", () => {
    const dialect = responsesDialect();
    const data = 'data: {"type":"response.completed","sequence_number":9,"response":{"id":"r"}}';
    for (const lineEnd of ["\n", "\r\n", "\r"]) {
      expect(dialect.completeTail(event(`event: response.completed${lineEnd}${data}${lineEnd}`))).toEqual(event(lineEnd));
    }
    // Data split over two lines is whole only once both have come.
    const split = 'event: response.incomplete\ndata: {"type":"response.incomplete",\ndata: "sequence_number":9}\n';
    expect(dialect.completeTail(event(split))).toEqual(event("\n"));
    expect(dialect.completeTail(event(split.slice(0, split.indexOf("data: \"sequence"))))).toBeNull();
    expect(dialect.completeTail(event(`event: response.completed\n${data}`))).toBeNull();
    expect(dialect.completeTail(event("event: response.completed\n"))).toBeNull();
    expect(dialect.completeTail(event('data: {"type":"response.output_text.done","sequence_number":9}\n'))).toBeNull();
  });
});

describe("Responses streams with the openai client", () => {
  it("responses.create({ stream: true }) yields every event of a clean stream", async () => {
    const tenant = await seedTenant();
    const params = { model: tenant.model, input: "hi", stream: true as const };
    const stream = await openai(tenant.key).responses.create(cued(params, { reply: REPLY }));
    const types: string[] = [];
    let text = "";
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "response.output_text.delta") text += event.delta;
    }
    expect(text).toBe(REPLY);
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
  });

  it("responses.stream() assembles the final response of a clean stream", async () => {
    const tenant = await seedTenant();
    const stream = openai(tenant.key).responses.stream(cued({ model: tenant.model, input: "hi" }, { reply: REPLY }));
    const final = await stream.finalResponse();
    expect(final.output_text).toBe(REPLY);
    expect(final.status).toBe("completed");
  });

  it("responses.create({ stream: true }) yields the complete events of an interrupted stream, then throws", async () => {
    const tenant = await seedTenant();
    const stream = await openai(tenant.key).responses.create(
      cued({ model: tenant.model, input: "hi", stream: true as const }, { reply: REPLY, reset_after_events: 6 }),
    );
    const sequenceNumbers: number[] = [];
    const error = await (async () => {
      for await (const event of stream) sequenceNumbers.push(event.sequence_number);
    })().catch((e: unknown) => e);
    expect(sequenceNumbers).toEqual([0, 1, 2, 3, 4, 5]);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as APIError).code).toBe("stream_error");
    expect((error as APIError).message).toContain("upstream stream interrupted");
  });

  it("responses.stream() rejects with stream_error when the stream is interrupted", async () => {
    const tenant = await seedTenant();
    const params = { model: tenant.model, input: "hi" };
    const stream = openai(tenant.key).responses.stream(cued(params, { reply: REPLY, reset_after_events: 8 }));
    const deltas: string[] = [];
    stream.on("response.output_text.delta", (event) => deltas.push(event.delta));
    const error = await stream.finalResponse().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as APIError).code).toBe("stream_error");
    expect(deltas.join("")).toBe(REPLY.split(" ").slice(0, 4).join(" ") + " ");
  });
});

describe("Responses streams that fall silent or lose their client", () => {
  const linesFor = captureLogLines();
  const lineFor = (id: string) => linesFor(id)[0];

  it("ends a silent stream after STREAM_IDLE_TIMEOUT_MS with the frames, and closes the upstream", async () => {
    const tenant = await seedTenant();
    const id = unique("responses-idle");
    const events = eventsOf(await referenceStream(tenant, {}));
    const text = await (await streamResponses(tenant, { stall_after_events: 5 }, id)).text();
    expect(withoutKeepAlives(text)).toBe(events.slice(0, 5).join("") + frames(5, UPSTREAM_ID));
    expect(text).toContain(": keep-alive\n\n");
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), { timeout: 1000 });
    await vi.waitFor(() =>
      expect(lineFor(id)).toMatchObject({ route: "POST /v1/responses", stream_outcome: "interrupted", status: 200 }),
    );
  });

  it("logs a complete stream as complete", async () => {
    const tenant = await seedTenant();
    const id = unique("responses-logged");
    await (await streamResponses(tenant, {}, id)).text();
    await vi.waitFor(() => expect(lineFor(id)).toMatchObject({ stream_outcome: "complete", ttfb_ms: expect.any(Number) }));
  });

  it("cancels the upstream within a second of the client leaving", async () => {
    const tenant = await seedTenant();
    const id = unique("responses-cancel");
    const reader = (await streamResponses(tenant, { events: 200, interval_ms: 50 }, id)).body!.getReader();
    await reader.read();
    const left = Date.now();
    await reader.cancel();
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), { timeout: 1000, interval: 20 });
    expect(Date.now() - left).toBeLessThan(1000);
  });
});
