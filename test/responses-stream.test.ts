import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import { responsesDialect } from "../src/streaming/dialects";
import { observeFramed } from "./framed";
import { cue, openai, responses, seedTenant, unique, type Tenant } from "./helpers";
import {
  MADE_UP_RESPONSE_ID,
  REPLY,
  RESPONSES_UPSTREAM_ID,
  completedAfterCut,
  cutsFor,
  eventEndsInBytes,
  eventsOf,
  expectedAfterCut,
  referenceStream,
  responsesFrames,
  withoutKeepAlives,
} from "./sse-reference";

// Responses streams broken at every byte, the Responses dialect as a unit, and the openai client's
// Responses streams. The stream rows shared with chat (clean, interrupted, idle, cancelled, split)
// are in contract.test.ts.

const decoder = new TextDecoder();
const encoder = new TextEncoder();

function streamResponses(
  tenant: Tenant,
  mock: Record<string, unknown>,
  requestId = unique("responses-stream"),
) {
  return responses(tenant, { stream: true, mock }, { "x-request-id": requestId });
}

describe("Responses fault sweep", () => {
  it('gives exactly the complete events, then the two frames, at every cut of a dense sample ("\\r\\n")', async () => {
    const tenant = await seedTenant({
      orgLimits: { requests_per_minute: 100_000, user_requests_per_minute: 100_000 },
    });
    const mock = { reply: REPLY, line_ending: "\r\n" };
    const stream = await referenceStream("/v1/responses", {
      model: tenant.model,
      input: "hi",
      stream: true,
      mock,
    });
    const bytes = encoder.encode(stream);
    const ends = eventEndsInBytes(bytes, "\r\n");
    const sequenceNumbers = eventsOf(stream, "\r\n").map(
      (event) => JSON.parse(event.split("data: ")[1]!).sequence_number,
    );
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
      const id =
        complete > 0 ? RESPONSES_UPSTREAM_ID : (MADE_UP_RESPONSE_ID.exec(got)?.[1] ?? "(no made-up id)");
      // Once the terminal event's data line is complete the stream is finished, whatever the upstream does next.
      const ending =
        cut >= terminalAt ? "" : responsesFrames(complete > 0 ? sequenceNumbers[complete - 1]! + 1 : 0, id);
      const want =
        completedAfterCut(bytes, ends, "\r\n", cut) ??
        decoder.decode(expectedAfterCut(bytes, ends, cut)) + ending;
      if (response.status !== 200 || got !== want) {
        let at = 0;
        while (at < got.length && got[at] === want[at]) at++;
        const [gotHere, wantHere] = [got, want].map((text) => JSON.stringify(text.slice(at, at + 80)));
        failures.push(
          `cut ${cut}: status ${response.status}, from char ${at} got ${gotHere}, want ${wantHere}`,
        );
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
    observeFramed(dialect, events);
    return dialect;
  };
  const interruption = (...events: string[]) => decoder.decode(observed(...events).interruption());

  it("is finished by each terminal type, with or without an event line, whatever the key order and spacing", () => {
    for (const type of ["response.completed", "response.failed", "response.incomplete"]) {
      expect(
        observed(`event: ${type}\ndata: {"type":"${type}","sequence_number":3,"response":{}}\n\n`).finished,
      ).toBe(true);
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
    expect(observed('data: {"type":"error","sequence_number":1,"code":"x","message":"y"}\n\n').finished).toBe(
      false,
    );
  });

  it("numbers its frames after the last upstream sequence_number, or from 0", () => {
    const created = 'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_abc"}}\n\n';
    expect(interruption(created)).toBe(responsesFrames(1, "resp_abc"));
    expect(
      interruption(
        created,
        'data: {"delta":"x","sequence_number" : 41,"type":"response.output_text.delta"}\n\n',
      ),
    ).toBe(responsesFrames(42, "resp_abc"));
    // An event without one (an upstream keep-alive comment) keeps the last one seen.
    expect(
      interruption(
        created,
        'data: {"type":"response.output_text.delta","sequence_number":7}\n\n',
        ": ping\n\n",
      ),
    ).toBe(responsesFrames(8, "resp_abc"));
    // With no upstream event at all: numbered from 0, one made-up id in both frames.
    const none = interruption();
    const id = MADE_UP_RESPONSE_ID.exec(none)?.[1];
    expect(id).toBeDefined();
    expect(none).toBe(responsesFrames(0, id!));
  });

  it("names the response of response.created, else of response.in_progress", () => {
    const inProgress =
      'event: response.in_progress\ndata: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_2"}}\n\n';
    expect(interruption(inProgress)).toBe(responsesFrames(2, "resp_2"));
    const created = 'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}\n\n';
    expect(interruption(created, inProgress)).toBe(responsesFrames(2, "resp_1"));
  });

  it("completes a tail that is a whole terminal event lacking only its blank line", () => {
    const dialect = responsesDialect();
    const data = 'data: {"type":"response.completed","sequence_number":9,"response":{"id":"r"}}';
    for (const lineEnd of ["\n", "\r\n", "\r"]) {
      expect(dialect.completeTail(event(`event: response.completed${lineEnd}${data}${lineEnd}`))).toEqual(
        event(lineEnd),
      );
    }
    // Data split over two lines is whole only once both have come.
    const split =
      'event: response.incomplete\ndata: {"type":"response.incomplete",\ndata: "sequence_number":9}\n';
    expect(dialect.completeTail(event(split))).toEqual(event("\n"));
    expect(dialect.completeTail(event(split.slice(0, split.indexOf('data: "sequence'))))).toBeNull();
    expect(dialect.completeTail(event(`event: response.completed\n${data}`))).toBeNull();
    expect(dialect.completeTail(event("event: response.completed\n"))).toBeNull();
    expect(
      dialect.completeTail(event('data: {"type":"response.output_text.done","sequence_number":9}\n')),
    ).toBeNull();
  });
});

describe("Responses streams with the openai client", () => {
  it("responses.create({ stream: true }) yields every event of a clean stream", async () => {
    const tenant = await seedTenant();
    const params = { model: tenant.model, input: "hi", stream: true as const };
    const stream = await openai(tenant.key).responses.create(cue({ reply: REPLY }, params));
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
    const stream = openai(tenant.key).responses.stream(
      cue({ reply: REPLY }, { model: tenant.model, input: "hi" }),
    );
    const final = await stream.finalResponse();
    expect(final.output_text).toBe(REPLY);
    expect(final.status).toBe("completed");
  });

  it("responses.create({ stream: true }) yields the complete events of an interrupted stream, then throws", async () => {
    const tenant = await seedTenant();
    const stream = await openai(tenant.key).responses.create(
      cue(
        { reply: REPLY, reset_after_events: 6 },
        { model: tenant.model, input: "hi", stream: true as const },
      ),
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
    const stream = openai(tenant.key).responses.stream(cue({ reply: REPLY, reset_after_events: 8 }, params));
    const deltas: string[] = [];
    stream.on("response.output_text.delta", (event) => deltas.push(event.delta));
    const error = await stream.finalResponse().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as APIError).code).toBe("stream_error");
    expect(deltas.join("")).toBe(REPLY.split(" ").slice(0, 4).join(" ") + " ");
  });
});
