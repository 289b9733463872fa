import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, inject, it, vi } from "vitest";
import worker from "../src/index";
import type { Env } from "../src/types";
import OpenAI, { type APIError } from "openai";
import { GATEWAY, chat, cue, openai, seedTenant, unique, type Tenant } from "./helpers";
import {
  CHAT_FRAME,
  REPLY,
  completedAfterCut,
  cutsFor,
  eventEnds,
  expectedAfterCut,
  referenceStream,
  withoutKeepAlives,
} from "./sse-reference";

// Chat streams broken at every byte, and read by the openai client. The stream rows shared with
// /v1/responses (clean, interrupted, idle, cancelled, split) are in contract.test.ts.

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// Under `npm run mutate` a surviving mutant costs a whole run of this file: the "\n" sweep then takes
// the dense sample the other line endings take (every cut near a line end, every 5th byte elsewhere).
const mutating = inject("strykerActiveMutant") !== undefined;

// The caller asks for the usage chunk, so the upstream streams exactly the reference and every cut
// falls on the same bytes (usage.test.ts has the streams of callers who do not ask).
const USAGE_ASKED = { stream_options: { include_usage: true } };

async function streamChat(tenant: Tenant, mock: Record<string, unknown>, requestId = unique("stream")) {
  return chat(tenant, { stream: true, ...USAGE_ASKED, mock }, { "x-request-id": requestId });
}

describe("fault sweep", () => {
  for (const lineEnd of ["\n", "\r\n", "\r"]) {
    it(`gives exactly the complete events, then the error frame, at every cut (${JSON.stringify(lineEnd)})`, async () => {
      const tenant = await seedTenant({
        orgLimits: { requests_per_minute: 100_000, user_requests_per_minute: 100_000 },
      });
      const mock = { reply: REPLY, line_ending: lineEnd };
      const stream = await referenceStream("/v1/chat/completions", {
        model: tenant.model,
        messages: [{ role: "user", content: "hi" }],
        stream: true,
        ...USAGE_ASKED,
        mock,
      });
      const bytes = encoder.encode(stream);
      const ends = eventEnds(decoder.decode(bytes), lineEnd).map(({ complete, end }) => ({
        // eventEnds counts UTF-16 units; the mock cuts bytes.
        complete: encoder.encode(stream.slice(0, complete)).length,
        end: encoder.encode(stream.slice(0, end)).length,
      }));
      expect(ends.length).toBeGreaterThanOrEqual(20);

      const cuts = cutsFor(bytes, lineEnd === "\n" && !mutating);
      expect(cuts.length).toBeGreaterThanOrEqual(1000);
      const doneAt = ends.at(-1)!.complete;
      const failures: string[] = [];
      const run = async (cut: number) => {
        const response = await streamChat(tenant, { ...mock, reset_after_bytes: cut });
        // A keep-alive between events (a slow machine) is allowed; anything else must match exactly.
        const got = withoutKeepAlives(await response.text());
        // Once the [DONE] line is complete the stream is finished, whatever the upstream does next.
        const want =
          completedAfterCut(bytes, ends, lineEnd, cut) ??
          decoder.decode(expectedAfterCut(bytes, ends, cut)) + (cut >= doneAt ? "" : CHAT_FRAME);
        if (response.status !== 200 || got !== want)
          failures.push(`cut ${cut}: ${JSON.stringify(got.slice(-80))}`);
      };
      for (let i = 0; i < cuts.length; i += 16) await Promise.all(cuts.slice(i, i + 16).map(run));
      expect(failures.slice(0, 5)).toEqual([]);
    }, 180_000);
  }
});

describe("streaming with the openai client", () => {
  it("yields every chunk of a clean stream", async () => {
    const tenant = await seedTenant();
    const params = {
      model: tenant.model,
      messages: [{ role: "user" as const, content: "hi" }],
      stream: true as const,
    };
    const stream = await openai(tenant.key).chat.completions.create(cue({ reply: REPLY }, params));
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text).toBe(REPLY);
  });

  it("yields the complete chunks of an interrupted stream, then throws stream_error", async () => {
    const tenant = await seedTenant();
    const params = {
      model: tenant.model,
      messages: [{ role: "user" as const, content: "hi" }],
      stream: true as const,
    };
    const stream = await openai(tenant.key).chat.completions.create(
      cue({ reply: REPLY, reset_after_events: 6 }, params),
    );
    const chunks: unknown[] = [];
    const error = await (async () => {
      for await (const chunk of stream) chunks.push(chunk);
    })().catch((e: unknown) => e);
    expect(chunks).toHaveLength(6);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as APIError).code).toBe("stream_error");
  });
});

describe("keep-alives, on a clock the test moves", () => {
  const KEEP_ALIVE = ": keep-alive\n\n";
  // Lines ended by `\r`: a terminal event ended so may still get the `\n` of a `\r\n`, so the gateway
  // waits a tick for it before it ends the stream, and that tick must write nothing.
  const delta = (content: string) =>
    `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"${content}"}}]}\r\r`;
  const DONE = "data: [DONE]\r\r";

  afterEach(() => {
    vi.useRealTimers();
  });

  it("go out every tick (250 ms) of silence, not within half a tick of an event, and never after the terminal event", async () => {
    // The gateway's ticker and clock are this isolate's: faked, each tick comes when the test says.
    // The upstream paces its events in real time (800 ms apart), and the clock is moved only
    // between them, so each event is written at a known time on it.
    vi.useFakeTimers({ toFake: ["Date", "setInterval", "clearInterval"], now: Date.now() });
    // A write's promise settles a turn of the runtime after the read that took it: a real pause lets
    // it, so that the tick does not find the write still in flight.
    const tick = async (ms: number) => {
      await new Promise((resolve) => setTimeout(resolve, 30));
      vi.advanceTimersByTime(ms);
    };
    const tenant = await seedTenant();
    const raw = delta("a") + delta("b") + DONE;
    // The Worker called directly, so that its stream is this test's I/O, which the ticks (run by
    // the test's own calls) may write to.
    const ctx = createExecutionContext();
    const request = new Request(`${GATEWAY}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${tenant.key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: tenant.model,
        messages: [{ role: "user", content: "hi" }],
        stream: true,
        mock: { raw_stream: raw, raw_stream_end: "stall", interval_ms: 800 },
      }),
    });
    const response = await worker.fetch(request, env as Env, ctx);
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let text = "";
    /** Reads until the stream holds as many characters as `expected`, and compares. */
    const expectText = async (expected: string) => {
      while (text.length < expected.length) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      expect(text).toBe(expected);
    };
    let expected = delta("a");
    await expectText(expected); // at 0 ms
    // Silence: a keep-alive at each tick.
    await tick(250);
    await expectText((expected += KEEP_ALIVE));
    await tick(250);
    await expectText((expected += KEEP_ALIVE));
    await tick(200);
    await expectText((expected += delta("b"))); // at 700 ms
    // The tick at 750 ms comes 50 ms after an event: no keep-alive. Then the clock is at 850 ms
    // when the terminal event comes.
    await tick(50);
    await tick(100);
    await expectText((expected += DONE));
    // The tick at 1000 ms waits for the `\n` that could still come; the one at 1250 ms, a tick after
    // the terminal event, ends the stream. Neither writes a keep-alive.
    await tick(250);
    await tick(250);
    const { done } = await reader.read();
    expect([done, text]).toEqual([true, expected]);
    await waitOnExecutionContext(ctx);
  });
});
