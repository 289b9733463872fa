import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SseFramer } from "../src/streaming/sse";
import { expectNotForwarded, expectUnauthorized, gateway, seedTenant, unique } from "./helpers";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Runs bytes through a framer in the given pieces: the output text, the events and the tail. */
function frame(pieces: Uint8Array[]) {
  const events: string[] = [];
  const framer = new SseFramer({ onEvent: (e) => void events.push(decoder.decode(e)) });
  let text = "";
  for (const piece of pieces) {
    const out = framer.push(piece);
    // A result always ends at a line ending, so it never splits a UTF-8 character.
    if (out) text += decoder.decode(out);
  }
  return { text, events, tail: decoder.decode(framer.tail) };
}

/** `bytes` split at the given offsets. */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let from = 0;
  for (const point of [...points, bytes.length]) {
    pieces.push(bytes.subarray(from, point));
    from = point;
  }
  return pieces;
}

// Lines without line breaks, each ended by any of the three line endings; events of 1-4 lines;
// the stream a run of events with an optional unfinished one at the end.
const lineEnding = fc.constantFrom("\n", "\r\n", "\r");
const line = fc.tuple(
  fc.string({ unit: "grapheme", maxLength: 30 }).map((s) => s.replace(/[\r\n]/g, "")),
  lineEnding,
);
const event = fc
  .tuple(fc.array(line, { minLength: 1, maxLength: 4 }), lineEnding)
  .map(([lines, blank]) => lines.map(([text, end]) => text + end).join("") + blank);
const stream = fc.tuple(fc.array(event, { maxLength: 8 }), fc.string({ maxLength: 20 }));

describe("properties", () => {
  it("the SSE framer gives the same events for any chunking of the same bytes", async () => {
    await fc.assert(
      fc.asyncProperty(stream, fc.array(fc.nat(), { maxLength: 12 }), async ([events, partial], cuts) => {
        const bytes = encoder.encode(events.join("") + partial);
        const whole = await frame([bytes]);
        const pieces = await frame(split(bytes, cuts));
        expect(pieces.text).toBe(whole.text);
        expect(pieces.events).toEqual(whole.events);
        expect(pieces.tail).toBe(whole.tail);
        // The output is always a prefix of the input, and the input is output plus tail.
        expect(decoder.decode(bytes).startsWith(pieces.text)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it("random JSON bodies never get a 5xx, and invalid ones never reach the upstream", async () => {
    const tenant = await seedTenant({
      grants: ["*"],
      orgLimits: { requests_per_minute: 100_000, user_requests_per_minute: 100_000 },
    });
    const body = fc.oneof(
      fc.json(),
      fc
        .record(
          { model: fc.oneof(fc.constant(tenant.model), fc.json()), messages: fc.json() },
          { requiredKeys: [] },
        )
        .map((b) => JSON.stringify(b)),
      fc
        .record(
          {
            model: fc.constant(tenant.model),
            messages: fc.array(
              fc.record(
                {
                  role: fc.oneof(fc.string(), fc.integer()),
                  content: fc.oneof(fc.string(), fc.constant(null), fc.integer()),
                },
                { requiredKeys: [] },
              ),
            ),
            stream: fc.oneof(fc.boolean(), fc.constant(null), fc.string()),
            n: fc.oneof(fc.integer(), fc.double()),
          },
          { requiredKeys: [] },
        )
        .map((b) => JSON.stringify(b)),
    );
    await fc.assert(
      fc.asyncProperty(body, async (text) => {
        const id = unique("fuzz");
        const response = await gateway("/v1/chat/completions", {
          method: "POST",
          headers: { authorization: `Bearer ${tenant.key}`, "x-request-id": id },
          body: text,
        });
        const answer = await response.text();
        expect(response.status).toBeLessThan(500);
        if (response.status !== 200) {
          expect([400]).toContain(response.status);
          expect(JSON.parse(answer).error.code).toMatch(/^(invalid_body|model_not_found)$/);
          await expectNotForwarded(id);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("random byte bodies never get a 5xx and never reach the upstream", async () => {
    const tenant = await seedTenant();
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        const id = unique("bytes");
        const response = await gateway("/v1/chat/completions", {
          method: "POST",
          headers: { authorization: `Bearer ${tenant.key}`, "x-request-id": id },
          body: bytes,
        });
        await response.arrayBuffer();
        expect(response.status).toBe(400);
        await expectNotForwarded(id);
      }),
      { numRuns: 200 },
    );
  });

  it("random Authorization values never authenticate and always get the exact 401", async () => {
    // Header values: visible ASCII and spaces, as a client can send them.
    const value = fc.oneof(
      fc.string({
        unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
        maxLength: 80,
      }),
      fc.string({ maxLength: 60 }).map((s) => `Bearer ${s.replace(/[^\x20-\x7e]/g, "")}`),
      fc.stringMatching(/^Bearer sk-gw-[A-Za-z0-9]{0,50}$/),
    );
    await fc.assert(
      fc.asyncProperty(value, async (authorization) => {
        const id = unique("authz");
        const response = await gateway("/v1/chat/completions", {
          method: "POST",
          headers: { authorization, "x-request-id": id },
          body: '{"model":"m","messages":[{"role":"user","content":"x"}]}',
        });
        await expectUnauthorized(response, id);
      }),
      { numRuns: 300 },
    );
  });
});
