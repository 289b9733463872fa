import { env } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import { messagesDialect } from "../src/streaming/dialects";
import { observeFramed } from "./framed";
import {
  captureLogLines,
  gateway,
  LOG_WAIT,
  postRaw,
  seedTenant,
  unique,
  upstreamRequests,
  type Tenant,
} from "./helpers";
import {
  MESSAGES_FRAME,
  REPLY,
  completedAfterCut,
  cutsFor,
  eventEndsInBytes,
  eventsOf,
  expectedAfterCut,
  referenceStream,
  withoutKeepAlives,
} from "./sse-reference";

// POST /v1/messages and /v1/messages/count_tokens for Anthropic clients (the contract's "Messages
// API"), over raw HTTP: x-api-key, Anthropic's envelope for every gateway error, upstream errors
// converted, the headers passed on, streams complete or ended by Anthropic's interruption frame.

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// Under `npm run mutate` the "\n" sweep takes the sample the other line endings take, as in stream.test.ts.
const mutating = inject("strykerActiveMutant") !== undefined;

/** The 401 of the Messages routes, byte for byte, whatever the cause. */
const ANTHROPIC_UNAUTHORIZED =
  '{"type":"error","error":{"type":"authentication_error","message":"Unauthorized"}}';

const messagesBody = (tenant: Pick<Tenant, "model">, extra: Record<string, unknown> = {}) => ({
  model: tenant.model,
  max_tokens: 64,
  messages: [{ role: "user", content: "hi" }],
  ...extra,
});

/** POST /v1/messages as an Anthropic SDK sends it: `x-api-key` and `anthropic-version`. */
function messages(
  tenant: Pick<Tenant, "key" | "model">,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {},
  path = "/v1/messages",
) {
  return gateway(path, {
    method: "POST",
    headers: {
      "x-api-key": tenant.key,
      "anthropic-version": "2023-06-01",
      "content-type": "application/json",
      ...headers,
    },
    body: JSON.stringify(messagesBody(tenant, extra)),
  });
}

/** Asserts a gateway error in Anthropic's envelope; returns its message. */
async function expectAnthropicError(response: Response, status: number, type: string): Promise<string> {
  expect(response.status).toBe(status);
  expect(response.headers.get("content-type")).toBe("application/json");
  expect(response.headers.get("cache-control")).toBe("no-store");
  expect(response.headers.get("x-request-id")).toBeTruthy();
  const body = await response.json<{ type: string; error: { type: string; message: string } }>();
  expect(body).toEqual({ type: "error", error: { type, message: expect.any(String) } });
  return body.error.message;
}

describe("x-api-key", () => {
  it("is accepted wherever Authorization: Bearer is, on every model route", async () => {
    const tenant = await seedTenant();
    const chat = await gateway("/v1/chat/completions", {
      method: "POST",
      headers: { "x-api-key": tenant.key, "content-type": "application/json" },
      body: JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "hi" }] }),
    });
    expect(chat.status).toBe(200);
    const models = await gateway("/v1/models", { headers: { "x-api-key": tenant.key } });
    expect(models.status).toBe(200);
    expect((await messages(tenant)).status).toBe(200);
  });

  it("loses to Authorization when both are sent, and a malformed Authorization never falls back to it", async () => {
    const tenant = await seedTenant();
    const both = await messages(
      tenant,
      {},
      { authorization: `Bearer ${tenant.key}`, "x-api-key": "sk-wrong" },
    );
    expect(both.status).toBe(200);
    for (const authorization of [`Basic ${tenant.key}`, "Bearer", "Bearer sk-wrong"]) {
      const response = await messages(tenant, {}, { authorization });
      expect(response.status).toBe(401);
      expect(await response.text()).toBe(ANTHROPIC_UNAUTHORIZED);
    }
  });
});

describe("Messages errors: Anthropic's envelope for every gateway error", () => {
  it("answers 401 with exactly the contract's body for every cause, on both routes, and forwards nothing", async () => {
    const tenant = await seedTenant();
    const revoked = await seedTenant({ revoked: true });
    for (const path of ["/v1/messages", "/v1/messages/count_tokens"]) {
      for (const headers of <Array<Record<string, string>>>[
        { "x-api-key": "" },
        { "x-api-key": "sk-unknown" },
        { "x-api-key": revoked.key },
        { authorization: "Bearer sk-unknown" },
      ]) {
        const id = unique("msg-401");
        const response = await gateway(path, {
          method: "POST",
          headers: { "content-type": "application/json", "x-request-id": id, ...headers },
          body: JSON.stringify(messagesBody(tenant)),
        });
        expect(response.status).toBe(401);
        expect(response.headers.get("content-type")).toBe("application/json");
        expect(response.headers.get("cache-control")).toBe("no-store");
        expect(response.headers.get("x-request-id")).toBe(id);
        expect(await response.text()).toBe(ANTHROPIC_UNAUTHORIZED);
        expect(await upstreamRequests(id)).toEqual([]);
      }
    }
  });

  it("refuses on count_tokens a key revoked in its org's gate while KV still serves its old record", async () => {
    const tenant = await seedTenant();
    expect((await messages(tenant, {}, {}, "/v1/messages/count_tokens")).status).toBe(200);
    await env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(tenant.org)).revoke(tenant.keyId);
    for (const path of ["/v1/messages/count_tokens", "/v1/messages"]) {
      const response = await messages(tenant, {}, {}, path);
      expect(response.status).toBe(401);
      expect(await response.text()).toBe(ANTHROPIC_UNAUTHORIZED);
    }
  });

  it("names the failing path of a bad body: 400 invalid_request_error", async () => {
    const tenant = await seedTenant();
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ max_tokens: undefined }, "max_tokens"],
      [{ max_tokens: 0 }, "max_tokens"],
      [{ max_tokens: 1.5 }, "max_tokens"],
      [{ messages: [{ role: "system", content: "x" }] }, "messages[0].role"],
      [{ messages: [] }, "messages"],
      [{ stream: null }, "stream"],
      [{ model: "" }, "model"],
    ];
    for (const [extra, path] of cases) {
      const message = await expectAnthropicError(await messages(tenant, extra), 400, "invalid_request_error");
      expect(message).toContain(path);
    }
    // count_tokens takes no max_tokens.
    expect((await messages(tenant, { max_tokens: undefined }, {}, "/v1/messages/count_tokens")).status).toBe(
      200,
    );
  });

  it("answers an unknown model, a model not granted, a wrong method and an unknown path in the envelope", async () => {
    const tenant = await seedTenant({ models: { [unique("m")]: {}, [unique("other")]: {} } });
    const granted = await seedTenant({ models: { [unique("m")]: {} } });
    expect(
      await expectAnthropicError(await messages({ ...tenant, model: "nope" }), 400, "invalid_request_error"),
    ).toBe("Model 'nope' not found.");
    await expectAnthropicError(await messages({ ...tenant, model: granted.model }), 403, "permission_error");
    const get = await gateway("/v1/messages", { headers: { "x-api-key": tenant.key } });
    await expectAnthropicError(get, 405, "invalid_request_error");
    expect(get.headers.get("allow")).toBe("POST");
    await expectAnthropicError(
      await gateway("/v1/messages/count_tokens", { method: "GET" }),
      405,
      "invalid_request_error",
    );
    await expectAnthropicError(
      await gateway("/v1/messages/batches", { method: "POST" }),
      404,
      "not_found_error",
    );
  });

  it("answers a rate limit with 429 rate_limit_error, Retry-After and retry-after-ms; count_tokens is never limited", async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 1, user_requests_per_minute: 1 } });
    expect((await messages(tenant)).status).toBe(200);
    const limited = await messages(tenant);
    await expectAnthropicError(limited, 429, "rate_limit_error");
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(limited.headers.get("retry-after-ms")).toBeTruthy();
    for (let i = 0; i < 3; i++) {
      const counted = await messages(tenant, {}, {}, "/v1/messages/count_tokens");
      expect(counted.status).toBe(200);
      expect(await counted.json()).toEqual({ input_tokens: 1 });
    }
  });

  it("answers the upstream's failures as api_error (502) and timeout_error (504)", async () => {
    const tenant = await seedTenant();
    await expectAnthropicError(await messages(tenant, { mock: { status: 500 } }), 502, "api_error");
    await expectAnthropicError(await messages(tenant, { mock: { reset: true } }), 502, "api_error");
    await expectAnthropicError(await messages(tenant, { mock: { hang: true } }), 504, "timeout_error");
  });
});

describe("Messages: upstream error bodies", () => {
  it("forwards an Anthropic envelope verbatim, its request id included", async () => {
    const tenant = await seedTenant();
    // As Anthropic sends it: rebuilt from its message and status, it would lose the request id.
    const body =
      '{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}';
    const response = await messages(tenant, { mock: { status: 400, body } });
    expect(response.status).toBe(400);
    expect(await response.text()).toBe(body);
    expect(response.headers.get("cache-control")).toBe("no-store");
  });

  it("converts a chunked error body too, reading at most its first 64 KiB", async () => {
    const tenant = await seedTenant();
    const small = await messages(tenant, {
      mock: { status: 400, body: '{"error":{"message":"bad thing"}}', chunked: true },
    });
    expect(small.status).toBe(400);
    expect(await small.json()).toEqual({
      type: "error",
      error: { type: "invalid_request_error", message: "bad thing" },
    });
    // Longer than one chunk but within 64 KiB: read to its end, it is JSON with a message.
    const middling = `{"error":{"message":"${"z".repeat(20_000)}"}}`;
    const middle = await messages(tenant, { mock: { status: 429, body: middling, chunked: true } });
    expect(await middle.json()).toEqual({
      type: "error",
      error: { type: "rate_limit_error", message: "z".repeat(500) },
    });
    // Read whole, this would be JSON with a message; its first 64 KiB are not, so its text is quoted.
    const long = `{"error":{"message":"${"y".repeat(100_000)}"}}`;
    const big = await messages(tenant, { mock: { status: 503, body: long, chunked: true } });
    expect(big.status).toBe(503);
    expect(await big.json()).toEqual({
      type: "error",
      error: { type: "api_error", message: long.slice(0, 500) },
    });
  });

  it("converts any other body into the envelope: its message, the type of its status, retry-after kept", async () => {
    const tenant = await seedTenant();
    const rows: Array<[number, string, string, string]> = [
      [
        400,
        '{"error":{"message":"bad thing","type":"invalid_request_error"}}',
        "invalid_request_error",
        "bad thing",
      ],
      [401, '{"message":"no key"}', "authentication_error", "no key"],
      [403, "forbidden here", "permission_error", "forbidden here"],
      [404, '{"detail":"x"}', "not_found_error", '{"detail":"x"}'],
      [413, '{"error":{"message":"big"}}', "request_too_large", "big"],
      [429, '{"error":{"message":"slow down"}}', "rate_limit_error", "slow down"],
      [529, '{"error":{"message":"busy"}}', "overloaded_error", "busy"],
      [503, "x".repeat(600), "api_error", "x".repeat(500)],
      [422, '{"error":{"message":"odd"}}', "invalid_request_error", "odd"],
    ];
    for (const [status, body, type, message] of rows) {
      const response = await messages(tenant, {
        mock: { status, body, content_type: "text/plain", headers: { "retry-after": "7" } },
      });
      expect(response.status, body).toBe(status);
      expect(response.headers.get("content-type")).toBe("application/json");
      expect(response.headers.get("retry-after")).toBe("7");
      expect(response.headers.get("cache-control")).toBe("no-store");
      expect(await response.json()).toEqual({ type: "error", error: { type, message } });
    }
  });
});

describe("Messages: what reaches the upstream", () => {
  it("passes the Anthropic headers on, never the caller's key, and drops litellm_metadata and proxy_server_request", async () => {
    const tenant = await seedTenant();
    const id = unique("msg-headers");
    const response = await messages(
      tenant,
      { litellm_metadata: { team: "x" }, proxy_server_request: { a: 1 }, metadata: { user_id: "u" } },
      {
        "x-request-id": id,
        "anthropic-beta": "prompt-caching-2024-07-31",
        "x-claude-code-session-id": "session-1",
      },
    );
    expect(response.status).toBe(200);
    const [sent] = await upstreamRequests(id);
    expect(sent!.path).toBe("/v1/messages");
    expect(sent!.headers["anthropic-version"]).toBe("2023-06-01");
    expect(sent!.headers["anthropic-beta"]).toBe("prompt-caching-2024-07-31");
    expect(sent!.headers["x-claude-code-session-id"]).toBe("session-1");
    expect(sent!.headers["x-api-key"]).toBeUndefined();
    expect(sent!.headers["authorization"]).toBe("Bearer sk-upstream-test-secret");
    expect(JSON.parse(sent!.body)).toEqual(messagesBody(tenant, { metadata: { user_id: "u" } }));
  });

  it("drops litellm_metadata and proxy_server_request on the chat route too, wherever they stand, leaving valid JSON", async () => {
    const tenant = await seedTenant();
    const texts = [
      `{"litellm_metadata":{"a":[1,"}"]},"model":"${tenant.model}","messages":[{"role":"user","content":"hi"}]}`,
      `{"model":"${tenant.model}", "proxy_server_request" : 1 , "litellm_metadata":null,"messages":[{"role":"user","content":"hi"}]}`,
      `{"model":"${tenant.model}","messages":[{"role":"user","content":"hi"}],"litellm_metadata":{},"proxy_server_request":"x"}`,
      `{"model":"${tenant.model}","messages":[{"role":"user","content":"hi"}] ,\n\t "litellm_metadata":{}}`,
      `{"proxy_server_request":{},"model":"${tenant.model}","messages":[{"role":"user","content":"hi"}]}`,
      `{"litellm_metadata":1,"model":"${tenant.model}","messages":[{"role":"user","content":"hi"}],"proxy_server_request":2}`,
    ];
    for (const text of texts) {
      const id = unique("chat-dropped");
      const response = await postRaw("/v1/chat/completions", tenant, text, id);
      expect(response.status, text).toBe(200);
      const [sent] = await upstreamRequests(id);
      expect(JSON.parse(sent!.body), text).toEqual({
        model: tenant.model,
        messages: [{ role: "user", content: "hi" }],
      });
    }
  });

  it("drops a first member where a streamed chat's stream_options goes in, and asks for usage there", async () => {
    const tenant = await seedTenant();
    const text = `{"litellm_metadata":{"a":1},"model":"${tenant.model}","messages":[{"role":"user","content":"hi"}],"stream":true}`;
    const id = unique("chat-dropped-stream");
    const response = await postRaw("/v1/chat/completions", tenant, text, id);
    expect(response.status).toBe(200);
    await response.arrayBuffer();
    const [sent] = await upstreamRequests(id);
    expect(sent!.body).toBe(
      `{"stream_options":{"include_usage":true},"model":"${tenant.model}","messages":[{"role":"user","content":"hi"}],"stream":true}`,
    );
  });

  it("reaches an Anthropic-style upstream with its own x-api-key, the caller's version over its fixed one, failing over on 529", async () => {
    const mock = env.UPSTREAM_BASE_URL.replace(/\/v1$/, "");
    const [a, b] = [unique("up"), unique("up")];
    for (const id of [a, b]) {
      const record = {
        base_url: `${mock}/u/${id}/v1`,
        auth: "x-api-key",
        api_key_secret: "UPSTREAM_B_KEY",
        headers: { "anthropic-version": "2023-01-01", "anthropic-beta": "fixed-beta", "x-fixed": "kept" },
      };
      await env.GATEWAY_KV.put(`upstream:${id}`, JSON.stringify(record));
    }
    const tenant = await seedTenant({
      models: { [unique("model")]: { upstreams: [{ upstream: a }, { upstream: b }] } },
    });
    const id = unique("msg-upstreams");
    const response = await messages(
      tenant,
      {
        mock: {
          upstreams: {
            [a]: {
              status: 529,
              body: '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            },
          },
        },
      },
      { "x-request-id": id },
    );
    expect(response.status).toBe(200);
    const sent = await upstreamRequests(id);
    expect(sent.map((request) => request.path)).toEqual([`/u/${a}/v1/messages`, `/u/${b}/v1/messages`]);
    for (const request of sent) {
      expect(request.headers["x-api-key"]).toBe("sk-upstream-b-secret");
      expect(request.headers["anthropic-version"]).toBe("2023-06-01");
      // The caller sent none of this name: the upstream's own stays.
      expect(request.headers["anthropic-beta"]).toBe("fixed-beta");
      expect(request.headers["x-fixed"]).toBe("kept");
      expect(request.headers.authorization).toBeUndefined();
    }
  });

  it("proxies count_tokens to the upstream's /messages/count_tokens", async () => {
    const tenant = await seedTenant();
    const id = unique("count");
    const response = await messages(
      tenant,
      { messages: [{ role: "user", content: "three words here" }] },
      { "x-request-id": id },
      "/v1/messages/count_tokens",
    );
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ input_tokens: 3 });
    expect((await upstreamRequests(id))[0]!.path).toBe("/v1/messages/count_tokens");
  });
});

describe("Messages streams", () => {
  const logLines = captureLogLines();

  it("are forwarded whole and complete at message_stop, with usage from message_start and message_delta", async () => {
    const tenant = await seedTenant();
    const id = unique("msg-stream");
    const mock = { reply: "one two three", cached_tokens: 1 };
    const want = await referenceStream("/v1/messages", messagesBody(tenant, { stream: true, mock }));
    const response = await messages(tenant, { stream: true, mock }, { "x-request-id": id });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream");
    expect(withoutKeepAlives(await response.text())).toBe(want);
    await expect.poll(() => logLines(id)[0], LOG_WAIT).toBeTruthy();
    expect(logLines(id)[0]).toMatchObject({
      stream_outcome: "complete",
      // 1 word of prompt + 1 cache read; 3 output tokens.
      input_tokens: 2,
      cached_tokens: 1,
      output_tokens: 3,
      usage_estimated: false,
    });
  });

  it("end with Anthropic's frame and no [DONE] on a break, an end without message_stop, or silence", async () => {
    const tenant = await seedTenant();
    const mock = { reply: "one two three" };
    const events = eventsOf(
      await referenceStream("/v1/messages", messagesBody(tenant, { stream: true, mock })),
    );
    for (const cues of [{ reset_after_events: 4 }, { stall_after_events: 4 }, { end_without_done: true }]) {
      const id = unique("msg-interrupted");
      const response = await messages(
        tenant,
        { stream: true, mock: { ...mock, ...cues } },
        { "x-request-id": id },
      );
      const kept = "end_without_done" in cues ? events.slice(0, -1) : events.slice(0, 4);
      expect(withoutKeepAlives(await response.text())).toBe(kept.join("") + MESSAGES_FRAME);
      await expect.poll(() => logLines(id)[0], LOG_WAIT).toBeTruthy();
      // Without message_stop the last message_delta has still told the usage: nothing is estimated.
      const estimated = !("end_without_done" in cues);
      expect(logLines(id)[0]).toMatchObject({ stream_outcome: "interrupted", usage_estimated: estimated });
    }
  });

  it("forward the upstream's own error event as it is, and add nothing after it", async () => {
    const tenant = await seedTenant();
    const mock = { reply: "one two", error_event: true };
    const want = await referenceStream("/v1/messages", messagesBody(tenant, { stream: true, mock }));
    expect(want).toContain("event: error");
    const response = await messages(tenant, { stream: true, mock });
    expect(withoutKeepAlives(await response.text())).toBe(want);
  });

  // As the chat sweep (stream.test.ts): every byte offset with "\n"; with "\r\n" and "\r", every
  // cut near a line end and every 5th byte elsewhere. The frame is always written with "\n".
  for (const lineEnd of ["\n", "\r\n", "\r"]) {
    it(`give exactly the complete events, then the frame, at every cut of a stream (${JSON.stringify(lineEnd)})`, async () => {
      const tenant = await seedTenant({
        orgLimits: { requests_per_minute: 100_000, user_requests_per_minute: 100_000 },
      });
      const mock = { reply: REPLY.slice(0, 40), line_ending: lineEnd };
      const body = messagesBody(tenant, { stream: true, mock });
      const stream = await referenceStream("/v1/messages", body);
      const bytes = encoder.encode(stream);
      const ends = eventEndsInBytes(bytes, lineEnd);
      expect(ends.length).toBe(eventsOf(stream, lineEnd).length);
      expect(ends.length).toBeGreaterThanOrEqual(10);
      const terminalAt = ends.at(-1)!.complete;
      const everyOffset = lineEnd === "\n" && !mutating;
      const cuts = cutsFor(bytes, everyOffset);
      if (everyOffset) expect(cuts.length).toBe(bytes.length + 1);
      else expect(cuts.length).toBeGreaterThanOrEqual(500);
      const failures: string[] = [];
      const run = async (cut: number) => {
        const response = await messages(tenant, { stream: true, mock: { ...mock, reset_after_bytes: cut } });
        const got = withoutKeepAlives(await response.text());
        const want =
          completedAfterCut(bytes, ends, lineEnd, cut) ??
          decoder.decode(expectedAfterCut(bytes, ends, cut)) + (cut >= terminalAt ? "" : MESSAGES_FRAME);
        if (response.status !== 200 || got !== want)
          failures.push(`cut ${cut}: ${JSON.stringify(got.slice(-120))}`);
      };
      for (let i = 0; i < cuts.length; i += 16) await Promise.all(cuts.slice(i, i + 16).map(run));
      expect(failures.slice(0, 5)).toEqual([]);
    }, 180_000);
  }
});

describe("Messages: usage of a whole body", () => {
  const logLines = captureLogLines();

  it("counts cache reads and writes as input and cache reads as cached", async () => {
    const tenant = await seedTenant();
    const id = unique("msg-usage");
    const response = await messages(
      tenant,
      { mock: { reply: "a b", cached_tokens: 4 } },
      { "x-request-id": id },
    );
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      type: "message",
      content: [{ type: "text", text: "a b" }],
    });
    await expect.poll(() => logLines(id)[0], LOG_WAIT).toBeTruthy();
    expect(logLines(id)[0]).toMatchObject({ input_tokens: 5, cached_tokens: 4, output_tokens: 2 });
  });
});

describe("messagesDialect", () => {
  const observed = (...events: string[]) => {
    const dialect = messagesDialect();
    observeFramed(dialect, events);
    return dialect;
  };

  it("is finished by message_stop or the upstream's error, judged by the data's own type", () => {
    expect(observed('event: message_stop\ndata: {"type":"message_stop"}\n\n').finished).toBe(true);
    expect(observed('data: {"type":"error","error":{"type":"api_error","message":"x"}}\n\n').finished).toBe(
      true,
    );
    expect(observed('event: message_stop\ndata: {"type":"ping"}\n\n').finished).toBe(false);
    expect(
      observed('data: {"type":"content_block_delta","delta":{"text":"message_stop"}}\n\n').finished,
    ).toBe(false);
  });

  it("reads usage only once a message_delta has told the output, the last one winning", () => {
    const start =
      'data: {"type":"message_start","message":{"usage":{"input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":1}}}\n\n';
    expect(observed(start).usage).toBeNull();
    const delta = (n: number) => `data: {"type":"message_delta","usage":{"output_tokens":${n}}}\n\n`;
    expect(observed(start, delta(3), delta(9)).usage).toEqual({
      input_tokens: 7,
      output_tokens: 9,
      cached_tokens: 0,
    });
  });

  it("completes a message_stop lacking only its blank line, and nothing else", () => {
    const dialect = messagesDialect();
    expect(decoder.decode(dialect.completeTail(encoder.encode('data: {"type":"message_stop"}\n'))!)).toBe(
      "\n",
    );
    expect(dialect.completeTail(encoder.encode('data: {"type":"message_stop"}'))).toBeNull();
    expect(dialect.completeTail(encoder.encode('data: {"type":"ping"}\n'))).toBeNull();
  });
});
