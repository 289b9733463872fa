import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import worker from "../src/index";
import type { Env } from "../src/types";
import {
  LOG_WAIT,
  captureLogLines,
  chat,
  expectGatewayError,
  expectNotForwarded,
  GATEWAY,
  gatewayWith,
  mockStats,
  postRaw,
  responses,
  seedTenant,
  unique,
  upstreamRequests,
  type Tenant,
} from "./helpers";
import { CHAT_FRAME } from "./sse-reference";

// What hostile callers and broken upstreams tried, and what the gateway must do instead. The plain
// contract rows they led to (duplicate keys, a byte order mark, odd statuses, stalled bodies, a
// trickling body, a revoked key answered first) run on both routes in contract.test.ts.

const linesFor = captureLogLines();

const CHAT = "/v1/chat/completions";

/** The Worker with some vars overridden, answering before its stream has been read. */
async function streamWith(
  vars: Partial<Env>,
  tenant: Tenant,
  body: Record<string, unknown>,
  requestId: string,
) {
  const ctx = createExecutionContext();
  const response = await worker.fetch(
    new Request(GATEWAY + CHAT, {
      method: "POST",
      headers: { authorization: `Bearer ${tenant.key}`, "x-request-id": requestId },
      body: JSON.stringify({
        model: tenant.model,
        messages: [{ role: "user", content: "hi" }],
        stream: true,
        ...body,
      }),
    }),
    { ...env, ...vars } as Env,
    ctx,
  );
  const text = await response.text();
  await waitOnExecutionContext(ctx);
  return { response, text };
}

/** A chat stream of exactly `raw` from the upstream, ended as `end` says. */
const rawChat = (tenant: Tenant, raw: string, requestId: string, end = "end") =>
  chat(
    tenant,
    { stream: true, mock: { raw_stream: raw, raw_stream_end: end } },
    { "x-request-id": requestId },
  );

const CHUNK =
  'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n';

describe("a renamed model", () => {
  it("renames an escaped model key's value and leaves a deeply nested body intact", async () => {
    const alias = unique("alias");
    const tenant = await seedTenant({ models: { [alias]: { upstream_model: "real" } } });
    const id = unique("rename-deep");
    const depth = 100_000;
    const nested = `${"[".repeat(depth)}${"]".repeat(depth)}`;
    const body = `{"messages":[{"role":"user","content":[${nested}]}],"mod\\u0065l":"${alias}"}`;
    const response = await postRaw(CHAT, tenant, body, id);
    expect(response.status).toBe(200);
    expect((await upstreamRequests(id))[0]!.body).toBe(body.replace(`"${alias}"`, '"real"'));
  });
});

describe("bounded buffers", () => {
  it("ends a stream whose event outgrows MAX_EVENT_BYTES with the interruption frame, and cancels the upstream", async () => {
    const tenant = await seedTenant();
    const id = unique("huge-line");
    const { response, text } = await streamWith(
      { MAX_EVENT_BYTES: "65536" },
      tenant,
      { mock: { huge_line_bytes: 64 * 1024 * 1024 } },
      id,
    );
    expect(response.status).toBe(200);
    expect(text.replaceAll(": keep-alive\n\n", "")).toBe(CHAT_FRAME);
    expect(linesFor(id)).toMatchObject([{ stream_outcome: "interrupted" }]);
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), {
      timeout: 1000,
      interval: 20,
    });
  });

  it("passes the events before the oversized one, and an event of exactly the limit", async () => {
    const tenant = await seedTenant();
    const id = unique("big-event");
    // An event's length counts its lines and the first byte of its blank line.
    const atLimit = `data: ${"y".repeat(4096 - 8)}\n\n`;
    const over = `data: ${"z".repeat(4096 - 7)}\n\n`;
    const raw = CHUNK + atLimit + over + "data: [DONE]\n\n";
    const { text } = await streamWith({ MAX_EVENT_BYTES: "4096" }, tenant, { mock: { raw_stream: raw } }, id);
    expect(text).toBe(CHUNK + atLimit + CHAT_FRAME);
  });

  for (const [what, mock, size] of [
    ["a chunked 8 MiB body", { huge_body_bytes: 8 * 1024 * 1024 }, 8 * 1024 * 1024],
    [
      "an 8 MiB body with its length",
      { huge_body_bytes: 8 * 1024 * 1024, with_length: true },
      8 * 1024 * 1024,
    ],
    ["a gzip body that expands to 8 MiB", { gzip_bomb_bytes: 8 * 1024 * 1024 }, 8 * 1024 * 1024],
  ] as const) {
    it(`passes ${what} through to the caller whole`, async () => {
      const tenant = await seedTenant();
      const response = await chat(tenant, { mock });
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toBe("application/json");
      const body = new Uint8Array(await response.arrayBuffer());
      expect(body.length).toBe(size);
      expect(new TextDecoder().decode(body.subarray(0, 8))).toBe('{"pad":"');
      expect(new TextDecoder().decode(body.subarray(-2))).toBe('"}');
    });
  }
});

describe("stream endings", () => {
  it("reads an event stream whose content type carries parameters as a stream", async () => {
    const tenant = await seedTenant();
    const id = unique("sse-charset");
    const { response } = await streamWith(
      {},
      tenant,
      { mock: { content_type: "Text/Event-Stream; charset=utf-8" } },
      id,
    );
    expect(response.status).toBe(200);
    // Re-framed and metered as a stream: the usage its usage chunk reported, not an estimate.
    await vi.waitFor(
      () => expect(linesFor(id)).toMatchObject([{ stream_outcome: "complete", usage_estimated: false }]),
      LOG_WAIT,
    );
  });

  it("ends at a [DONE] event that also carries an id line and a comment", async () => {
    const tenant = await seedTenant();
    const id = unique("done-id");
    const done = `id: ${"7".repeat(60)}\n: the upstream's own note on this last event\ndata: [DONE]\n\n`;
    const response = await rawChat(tenant, CHUNK + done, id);
    expect(await response.text()).toBe(CHUNK + done);
    await vi.waitFor(() => expect(linesFor(id)).toMatchObject([{ stream_outcome: "complete" }]), LOG_WAIT);
  });

  it("waits for the \\n of a [DONE] event's \\r\\n blank line that comes in a later read", async () => {
    const tenant = await seedTenant();
    // In 60-byte pieces 200 ms apart: the second ends at the \r of [DONE]'s blank line (past the
    // driver's first 250 ms tick), and its \n comes 200 ms later, in the third.
    const raw = `data: ${"x".repeat(97)}\n\n` + "data: [DONE]\r\n\r\n";
    const mock = { raw_stream: raw, split: "bytes", chunk_size: 60, interval_ms: 200 };
    const response = await chat(tenant, { stream: true, mock });
    expect(await response.text()).toBe(raw);
  });

  it("ends at data:[DONE] without the space", async () => {
    const tenant = await seedTenant();
    const response = await rawChat(tenant, CHUNK + "data:[DONE]\n\n", unique("done-nospace"));
    expect(await response.text()).toBe(CHUNK + "data:[DONE]\n\n");
  });

  it("is not ended by [DONE] inside an event's JSON, or by a [DONE] line among other data", async () => {
    const tenant = await seedTenant();
    const quoted = 'data: {"choices":[{"index":0,"delta":{"content":"[DONE]"}}]}\n\n';
    const mixed = "data: [DONE]\ndata: more\n\n";
    const response = await rawChat(tenant, CHUNK + quoted + mixed, unique("done-quoted"));
    expect(await response.text()).toBe(CHUNK + quoted + mixed + CHAT_FRAME);
  });

  it("takes the terminal line followed by a reset as complete", async () => {
    const tenant = await seedTenant();
    const id = unique("done-reset");
    const response = await rawChat(tenant, CHUNK + "data: [DONE]\n", id, "reset");
    expect(await response.text()).toBe(CHUNK + "data: [DONE]\n\n");
    await vi.waitFor(() => expect(linesFor(id)).toMatchObject([{ stream_outcome: "complete" }]), LOG_WAIT);
  });

  it("ends a stream a tick after a terminal event ended by \\r, whose \\n may never come, though the upstream stays open", async () => {
    const tenant = await seedTenant();
    const id = unique("done-cr-open");
    const raw = CHUNK.replaceAll("\n", "\r") + "data: [DONE]\r\r";
    const started = Date.now();
    // The idle timeout far off: only the tick the gateway gives a split `\r\n` can end this stream.
    // The Worker called directly, its stream read before its waits are.
    const ctx = createExecutionContext();
    const request = new Request(`${GATEWAY}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${tenant.key}`,
        "content-type": "application/json",
        "x-request-id": id,
      },
      body: JSON.stringify({
        model: tenant.model,
        messages: [{ role: "user", content: "hi" }],
        stream: true,
        mock: { raw_stream: raw, raw_stream_end: "stall" },
      }),
    });
    const response = await worker.fetch(request, { ...env, STREAM_IDLE_TIMEOUT_MS: "15000" } as Env, ctx);
    expect(await response.text()).toBe(raw);
    await waitOnExecutionContext(ctx);
    // A tick is 250 ms; the idle timeout would have been 15 s.
    expect(Date.now() - started).toBeLessThan(7500);
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), {
      timeout: 1000,
      interval: 20,
    });
  });

  it("forwards nothing after the terminal event, and cancels an upstream that stays open", async () => {
    const tenant = await seedTenant();
    const id = unique("after-done");
    const response = await rawChat(
      tenant,
      CHUNK + "data: [DONE]\n\n" + CHUNK + "data: [DONE]\n\n",
      id,
      "stall",
    );
    expect(await response.text()).toBe(CHUNK + "data: [DONE]\n\n");
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), {
      timeout: 1000,
      interval: 20,
    });
    expect(linesFor(id)).toMatchObject([{ stream_outcome: "complete" }]);
  });

  it("does not end a Responses stream at a nested object that says response.completed", async () => {
    const tenant = await seedTenant();
    const events = [
      'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress"}}\n\n',
      'event: response.output_item.added\ndata: {"item":{"type":"response.completed","id":"x"},"type":"response.output_item.added","sequence_number":1}\n\n',
      'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":2,"delta":"Hi"}\n\n',
      'event: response.completed\ndata: {"type":"response.completed","sequence_number":3,"response":{"id":"resp_1","object":"response","status":"completed"}}\n\n',
    ].join("");
    // Paced, so that a gateway taking the nested type for the end would have stopped reading.
    const response = await responses(tenant, {
      stream: true,
      mock: { raw_stream: events, interval_ms: 300 },
    });
    expect((await response.text()).replaceAll(": keep-alive\n\n", "")).toBe(events);
  });

  it("forwards nothing after a Responses terminal event", async () => {
    const tenant = await seedTenant();
    const completed =
      'event: response.completed\ndata: {"type":"response.completed","sequence_number":0,"response":{"id":"r","object":"response","status":"completed"}}\n\n';
    const late =
      'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,"delta":"late"}\n\n';
    const response = await responses(tenant, { stream: true, mock: { raw_stream: completed + late } });
    expect(await response.text()).toBe(completed);
  });
});

describe("smaller defects", () => {
  it("answers 408 to a trickling admin body too", async () => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"requests_per_minute":'));
      },
    });
    const response = await gatewayWith({ BODY_TIMEOUT_MS: "300" }, `/admin/orgs/${unique("org")}`, {
      method: "PUT",
      headers: { authorization: "Bearer test-admin-token" },
      body,
    });
    await expectGatewayError(response, 408, "invalid_request_error", "request_timeout");
  });
});

// Variants of the same classes, found by a second round of hostile probes.

describe("more variants: bodies", () => {
  it("forwards a valid 9 MB body of 4.5 million escapes untouched", async () => {
    const tenant = await seedTenant();
    const id = unique("escapes");
    const body = `{"model":"${tenant.model}","messages":[{"role":"user","content":"${"\\n".repeat(4_500_000)}"}]}`;
    const response = await postRaw(CHAT, tenant, body, id);
    expect(response.status).toBe(200);
    const sent = (await upstreamRequests(id))[0]!.body;
    expect(sent.length).toBe(body.length);
    expect(sent === body).toBe(true);
  });

  for (const base of ["/v1 ", "/v1?a=1", "/v1#frag"]) {
    it(`refuses to serve with UPSTREAM_BASE_URL ending ${JSON.stringify(base)}`, async () => {
      const tenant = await seedTenant();
      const id = unique("base-url");
      const url = env.UPSTREAM_BASE_URL.replace(/\/v1$/, base);
      const { response } = await streamWith({ UPSTREAM_BASE_URL: url }, tenant, { stream: false }, id);
      expect(response.status).toBe(500);
      expect(linesFor(id)).toMatchObject([
        {
          code: "internal_error",
          error: "ConfigError: UPSTREAM_BASE_URL must be an http or https URL without query or fragment",
        },
      ]);
      await expectNotForwarded(id);
    });
  }
});

describe("more variants: content codings the runtime leaves encoded", () => {
  for (const [coding, decoded] of [
    ["GZIP", true],
    ["x-gzip", true],
    ["identity, gzip", true],
    ["gzip, identity", true],
    [" gzip", true],
    ["deflate", false],
    ["br", false],
    ["compress", false],
    ["gzip, br", false],
  ] as const) {
    it(`${decoded ? "decodes" : "answers 502 to"} a gzip body labelled ${JSON.stringify(coding)}`, async () => {
      const tenant = await seedTenant();
      const response = await chat(tenant, {
        mock: { gzip_bomb_bytes: 2000, headers: { "content-encoding": coding } },
      });
      if (!decoded)
        return void (await expectGatewayError(response, 502, "server_error", "upstream_unavailable"));
      expect(response.status).toBe(200);
      expect(response.headers.get("content-encoding")).toBeNull();
      expect(response.headers.get("content-type")).toBe("application/json");
      const text = await response.text();
      expect(text).toBe(`{"pad":"${"0".repeat(2000 - 10)}"}`);
    });
  }

  for (const coding of ["identity", "IDENTITY", "identity, identity"]) {
    it(`passes a body labelled ${JSON.stringify(coding)} as it is`, async () => {
      const tenant = await seedTenant();
      const response = await chat(tenant, { mock: { headers: { "content-encoding": coding } } });
      expect(response.status).toBe(200);
      const body = (await response.json()) as { choices: Array<{ message: { content: string } }> };
      expect(body.choices[0]!.message.content).toBe("Hello from the mock upstream.");
    });
  }

  it("answers 502 upstream_empty_body to a 204 labelled x-gzip, which has no body to decode", async () => {
    const tenant = await seedTenant();
    const response = await chat(tenant, { mock: { status: 204, headers: { "content-encoding": "x-gzip" } } });
    await expectGatewayError(response, 502, "server_error", "upstream_empty_body");
  });
});

describe("more variants: Responses terminal events", () => {
  const created =
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress"}}\n\n';
  const completed = (data: string) => `event: response.completed\ndata: ${data}\n\n`;
  for (const [what, terminal] of [
    [
      "an escaped value",
      completed(
        '{"type":"response.complet\\u0065d","sequence_number":1,"response":{"id":"resp_1","status":"completed"}}',
      ),
    ],
    [
      "an escaped key",
      completed(
        '{"typ\\u0065":"response.completed","sequence_number":1,"response":{"id":"resp_1","status":"completed"}}',
      ),
    ],
    [
      "an escaped dot",
      completed(
        '{"type":"response\\u002ecompleted","sequence_number":1,"response":{"id":"resp_1","status":"completed"}}',
      ),
    ],
    [
      "its key and value on two data lines",
      completed('{"type":\ndata: "response.completed","sequence_number":1,"response":{"id":"resp_1"}}'),
    ],
    [
      "a nested type before its own (caller metadata)",
      completed(
        '{"sequence_number":1,"response":{"id":"resp_1","metadata":{"type":"response.in_progress"}},"type":"response.completed"}',
      ),
    ],
  ] as const) {
    it(`ends at a terminal event with ${what}, adding nothing`, async () => {
      const tenant = await seedTenant();
      const id = unique("resp-variant");
      const response = await responses(
        tenant,
        { stream: true, mock: { raw_stream: created + terminal } },
        { "x-request-id": id },
      );
      expect(await response.text()).toBe(created + terminal);
      await vi.waitFor(() => expect(linesFor(id)).toMatchObject([{ stream_outcome: "complete" }]), LOG_WAIT);
    });

    it(`completes a terminal event with ${what} whose blank line never came`, async () => {
      const tenant = await seedTenant();
      const raw = created + terminal.slice(0, -1);
      const response = await responses(tenant, { stream: true, mock: { raw_stream: raw } });
      expect(await response.text()).toBe(raw + "\n");
    });
  }

  it("numbers the error frame after the last sequence_number, however it was spelled", async () => {
    const tenant = await seedTenant();
    const raw =
      created +
      'data: {"type":"response.output_text.delta","sequence_numb\\u0065r":1,"delta":"a"}\n\n' +
      'data: {"type":"response.output_text.delta","sequence_number":\ndata: 2,"delta":"b"}\n\n';
    const response = await responses(tenant, { stream: true, mock: { raw_stream: raw } });
    const frames = (await response.text()).slice(raw.length);
    expect(JSON.parse(frames.split("\n")[1]!.slice("data: ".length))).toMatchObject({
      type: "error",
      sequence_number: 3,
    });
  });
});

describe("more variants: event limits and endings at every chunk size", () => {
  const first = 'data: {"a":1}\n\n';
  for (const eol of ["\n", "\r\n", "\r"]) {
    const payload = 20;
    const event = `data: ${"y".repeat(payload)}${eol}${eol}`;
    // Its line, and the first byte of its blank line.
    const counted = 6 + payload + eol.length + 1;
    for (const size of [1, 2, 3, 5, 8, 13]) {
      it(`passes an event of exactly MAX_EVENT_BYTES and interrupts at one more (${JSON.stringify(eol)}, ${size}-byte reads)`, async () => {
        const tenant = await seedTenant();
        const raw = first + event + `data: [DONE]${eol}${eol}`;
        const mock = { raw_stream: raw, split: "bytes", chunk_size: size };
        const strip = (text: string) => text.replaceAll(": keep-alive\n\n", "");
        const at = await streamWith(
          { MAX_EVENT_BYTES: String(counted) },
          tenant,
          { mock },
          unique("at-limit"),
        );
        expect(strip(at.text)).toBe(raw);
        const over = await streamWith(
          { MAX_EVENT_BYTES: String(counted - 1) },
          tenant,
          { mock },
          unique("over-limit"),
        );
        expect(strip(over.text)).toBe(first + CHAT_FRAME);
      });
    }
  }

  for (const [what, raw, expected] of [
    [
      "\\r\\r\\n after [DONE], then more",
      'data: {"a":1}\r\n\r\ndata: [DONE]\r\r\ndata: extra\r\n\r\n',
      'data: {"a":1}\r\n\r\ndata: [DONE]\r\r\n',
    ],
    [
      "\\r\\n\\r\\n after [DONE], then more",
      'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\ndata: extra\r\n\r\n',
      'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n',
    ],
    ["\\r\\r at the end", 'data: {"a":1}\r\rdata: [DONE]\r\r', 'data: {"a":1}\r\rdata: [DONE]\r\r'],
    ["a lone \\r at the end", 'data: {"a":1}\r\rdata: [DONE]\r', 'data: {"a":1}\r\rdata: [DONE]\r\r'],
    [
      "\\r\\n\\r at the end",
      'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r',
      'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r',
    ],
  ] as const) {
    for (const size of [1, 2, 3, 4, 7]) {
      it(`ends exactly at [DONE] with ${what} (${size}-byte reads)`, async () => {
        const tenant = await seedTenant();
        const response = await chat(tenant, {
          stream: true,
          mock: { raw_stream: raw, split: "bytes", chunk_size: size },
        });
        expect((await response.text()).replaceAll(": keep-alive\n\n", "")).toBe(expected);
      });
    }
  }
});
