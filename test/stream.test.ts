import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import OpenAI, { type APIError } from "openai";
import { captureLogLines, chat, cued, mockStats, openai, seedTenant, unique, type Tenant } from "./helpers";
import { completedAfterCut, cutsFor, eventEnds, expectedAfterCut, withoutKeepAlives } from "./sse-reference";

const ERROR_FRAME =
  "event: error\n" +
  'data: {"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\n' +
  "data: [DONE]\n\n";

// 24 words, some of them multi-byte, so cuts also fall inside UTF-8 characters.
const REPLY =
  "Grüße aus dem Gateway — ein Strom von Ereignissen, ganz und unversehrt 🙂 " +
  "même quand le flux amont se coupe au milieu d'une ligne ou d'un caractère.";

const MOCK = env.UPSTREAM_BASE_URL;

/** What the mock upstream streams for this body, fetched straight from it: the reference bytes. */
async function referenceStream(body: Record<string, unknown>): Promise<string> {
  const response = await fetch(`${MOCK}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.text();
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

async function streamChat(tenant: Tenant, mock: Record<string, unknown>, requestId = unique("stream")) {
  return chat(tenant, { stream: true, mock }, { "x-request-id": requestId });
}

describe("streaming", () => {
  it("returns a clean stream unchanged as text/event-stream", async () => {
    const tenant = await seedTenant();
    const body = { model: tenant.model, messages: [{ role: "user", content: "hi" }], stream: true, mock: { reply: REPLY } };
    const reference = await referenceStream(body);
    const response = await chat(tenant, body);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream");
    expect(response.headers.get("cache-control")).toBe("no-cache");
    expect(response.headers.get("x-request-id")).toBeTruthy();
    expect(await response.text()).toBe(reference);
  });

  it("forwards an in-band error event the upstream sent, as it is", async () => {
    const tenant = await seedTenant();
    const body = { model: tenant.model, messages: [{ role: "user", content: "hi" }], stream: true, mock: { error_event: true } };
    const reference = await referenceStream(body);
    expect(reference).toContain("provider_error");
    expect(await (await chat(tenant, body)).text()).toBe(reference);
  });

  it("ends a stream that closes without [DONE] with the error frame", async () => {
    const tenant = await seedTenant();
    const body = { model: tenant.model, messages: [{ role: "user", content: "hi" }], stream: true, mock: { reply: REPLY } };
    const reference = await referenceStream(body);
    const text = await (await streamChat(tenant, { reply: REPLY, end_without_done: true })).text();
    expect(text).toBe(reference.replace("data: [DONE]\n\n", "") + ERROR_FRAME);
  });

  it("completes a [DONE] whose blank line never came, adding no error frame", async () => {
    const tenant = await seedTenant();
    const body = { model: tenant.model, messages: [{ role: "user", content: "hi" }], stream: true, mock: { reply: REPLY } };
    const reference = await referenceStream(body);
    for (const lineEnd of ["\n", "\r\n", "\r"]) {
      const withEndings = await referenceStream({ ...body, mock: { reply: REPLY, line_ending: lineEnd } });
      const cut = encoder.encode(withEndings).length - lineEnd.length;
      const text = await (await streamChat(tenant, { reply: REPLY, line_ending: lineEnd, end_after_bytes: cut })).text();
      expect(text).toBe(withEndings);
    }
    expect(reference.endsWith("data: [DONE]\n\n")).toBe(true);
  });
});

describe("fault sweep", () => {
  for (const lineEnd of ["\n", "\r\n", "\r"]) {
    it(`gives exactly the complete events, then the error frame, at every cut (${JSON.stringify(lineEnd)})`, async () => {
      const tenant = await seedTenant({ orgLimits: { requests_per_minute: 100_000, user_requests_per_minute: 100_000 } });
      const mock = { reply: REPLY, line_ending: lineEnd };
      const stream = await referenceStream({ model: tenant.model, messages: [{ role: "user", content: "hi" }], stream: true, mock });
      const bytes = encoder.encode(stream);
      const ends = eventEnds(decoder.decode(bytes), lineEnd).map(({ complete, end }) => ({
        // eventEnds counts UTF-16 units; the mock cuts bytes.
        complete: encoder.encode(stream.slice(0, complete)).length,
        end: encoder.encode(stream.slice(0, end)).length,
      }));
      expect(ends.length).toBeGreaterThanOrEqual(20);

      const cuts = cutsFor(bytes, lineEnd === "\n");
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
          decoder.decode(expectedAfterCut(bytes, ends, cut)) + (cut >= doneAt ? "" : ERROR_FRAME);
        if (response.status !== 200 || got !== want) failures.push(`cut ${cut}: ${JSON.stringify(got.slice(-80))}`);
      };
      for (let i = 0; i < cuts.length; i += 16) await Promise.all(cuts.slice(i, i + 16).map(run));
      expect(failures.slice(0, 5)).toEqual([]);
    }, 180_000);
  }

  it("gives the same answer when events arrive split at arbitrary byte boundaries", async () => {
    const tenant = await seedTenant();
    const body = { model: tenant.model, messages: [{ role: "user", content: "hi" }], stream: true, mock: { reply: REPLY, line_ending: "\r\n" } };
    const reference = await referenceStream(body);
    for (const size of [1, 7]) {
      const response = await streamChat(tenant, { reply: REPLY, line_ending: "\r\n", split: "bytes", chunk_size: size });
      // A slow trickle of bytes gets keep-alives between events; they are the only addition.
      expect((await response.text()).replaceAll(": keep-alive\n\n", "")).toBe(reference);
    }
  });
});

describe("streaming with the openai client", () => {
  it("yields every chunk of a clean stream", async () => {
    const tenant = await seedTenant();
    const params = { model: tenant.model, messages: [{ role: "user" as const, content: "hi" }], stream: true as const };
    const stream = await openai(tenant.key).chat.completions.create(cued(params, { reply: REPLY }));
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text).toBe(REPLY);
  });

  it("yields the complete chunks of an interrupted stream, then throws stream_error", async () => {
    const tenant = await seedTenant();
    const params = { model: tenant.model, messages: [{ role: "user" as const, content: "hi" }], stream: true as const };
    const stream = await openai(tenant.key).chat.completions.create(cued(params, { reply: REPLY, reset_after_events: 6 }));
    const chunks: unknown[] = [];
    const error = await (async () => {
      for await (const chunk of stream) chunks.push(chunk);
    })().catch((e: unknown) => e);
    expect(chunks).toHaveLength(6);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as APIError).code).toBe("stream_error");
  });
});

describe("idle upstreams and departed clients", () => {
  const linesFor = captureLogLines();
  const lineFor = (id: string) => linesFor(id)[0];

  it("ends a silent stream after STREAM_IDLE_TIMEOUT_MS, with keep-alives meanwhile, and closes the upstream", async () => {
    const tenant = await seedTenant();
    const id = unique("idle");
    const started = Date.now();
    const text = await (await streamChat(tenant, { stall_after_events: 2 }, id)).text();
    const elapsed = Date.now() - started;
    // vitest.config.ts sets STREAM_IDLE_TIMEOUT_MS to 1000.
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(text.endsWith(ERROR_FRAME)).toBe(true);
    const body = text.slice(0, -ERROR_FRAME.length);
    const events = body.split("\n\n").filter(Boolean);
    expect(events.filter((e) => e.startsWith("data: "))).toHaveLength(2);
    expect(events.filter((e) => e === ": keep-alive").length).toBeGreaterThanOrEqual(2);
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), { timeout: 1000 });
    await vi.waitFor(() => expect(lineFor(id)).toMatchObject({ stream_outcome: "interrupted", status: 200 }));
  });

  it("does not take a client slow to read for a silent upstream", async () => {
    const tenant = await seedTenant();
    const response = await streamChat(tenant, { events: 300 });
    const reader = response.body!.getReader();
    let text = new TextDecoder().decode((await reader.read()).value);
    // Longer than STREAM_IDLE_TIMEOUT_MS (1000 in vitest.config.ts) without reading.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += new TextDecoder().decode(chunk.value);
    expect(text).not.toContain("stream_error");
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
  });

  it("cancels the upstream within a second of the client leaving", async () => {
    const tenant = await seedTenant();
    const id = unique("cancel");
    const response = await streamChat(tenant, { events: 200, interval_ms: 50 }, id);
    const reader = response.body!.getReader();
    await reader.read();
    await reader.read();
    const left = Date.now();
    await reader.cancel();
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), { timeout: 1000, interval: 20 });
    expect(Date.now() - left).toBeLessThan(1000);
    await vi.waitFor(() => expect(lineFor(id)).toMatchObject({ stream_outcome: "client_cancelled" }));
  });

  it("cancels a silent upstream when the client leaves", async () => {
    const tenant = await seedTenant();
    const id = unique("cancel-silent");
    const response = await streamChat(tenant, { stall_after_events: 1 }, id);
    const reader = response.body!.getReader();
    await reader.read();
    await reader.cancel();
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), { timeout: 1000, interval: 20 });
  });

  it("logs a complete stream with its time to first byte", async () => {
    const tenant = await seedTenant();
    const id = unique("logged");
    await (await streamChat(tenant, { reply: REPLY }, id)).text();
    await vi.waitFor(() =>
      expect(lineFor(id)).toMatchObject({ stream_outcome: "complete", status: 200, ttfb_ms: expect.any(Number) }),
    );
  });
});
