import { exports } from "cloudflare:workers";
import Anthropic, { type APIError } from "@anthropic-ai/sdk";
import { describe, expect, it } from "vitest";
import { GATEWAY, cue, gatewayWith, seedTenant, unique, upstreamRequests, usageOnce } from "./helpers";
import { REPLY } from "./sse-reference";
import type { Env } from "../src/types";

// The stock `@anthropic-ai/sdk`, unmodified, on the Messages routes: what each of the contract's
// answers is to it. This SDK sends its `apiKey` as `Authorization: Bearer`; Claude Code and the
// SDK's earlier majors send `x-api-key`, which the rows marked so use.

/** How the client presents its key: the SDK's default, or `x-api-key` as Claude Code sends it. */
type Auth = "bearer" | "x-api-key";
const AUTHS: Auth[] = ["bearer", "x-api-key"];

/**
 * The SDK pointed at the Worker; with `vars`, at the same Worker with those vars overridden (a
 * failing KV, a small MAX_BODY_BYTES). `sent` collects the headers of each request it makes.
 */
function anthropic(key: string, options: { auth?: Auth; vars?: Partial<Env>; sent?: Headers[] } = {}) {
  return new Anthropic({
    apiKey: key,
    baseURL: GATEWAY,
    maxRetries: 0,
    // Default headers go after the SDK's auth header: this one replaces it.
    ...(options.auth === "x-api-key" ? { defaultHeaders: { "x-api-key": key, authorization: null } } : {}),
    fetch: (url, init) => {
      const request = new Request(url, init);
      options.sent?.push(request.headers);
      if (!options.vars) return exports.default.fetch(request);
      const { pathname, search } = new URL(request.url);
      return gatewayWith(options.vars, pathname + search, request);
    },
  });
}

/** Minimal valid params for the tenant's model, then `extra`; the SDK's types know no `mock`. */
const params = (model: string, extra: Record<string, unknown> = {}) =>
  ({
    model,
    max_tokens: 64,
    messages: [{ role: "user", content: "Say hello to the gateway" }],
    ...extra,
  }) as Anthropic.MessageCreateParamsNonStreaming;

/** What the call threw (or undefined). */
const failure = (call: Promise<unknown>) =>
  call.then(
    () => undefined,
    (e: unknown) => e,
  );

/**
 * Asserts that the SDK raised exactly this class (not merely a subclass of it) for the gateway's
 * error: status, Anthropic's body as it parsed it, the type and message it read from it.
 */
function expectSdkError(
  error: unknown,
  errorClass: abstract new (...args: never[]) => APIError,
  status: number,
  type: string,
  message: string,
) {
  expect(error).toBeInstanceOf(errorClass);
  expect((error as object).constructor).toBe(errorClass);
  const apiError = error as APIError;
  const body = { type: "error", error: { type, message } };
  expect(apiError.status).toBe(status);
  expect(apiError.error).toEqual(body);
  expect(apiError.type).toBe(type);
  expect(apiError.apiMessage).toBe(message);
  expect(apiError.message).toBe(`${status} ${JSON.stringify(body)}`);
  expect(apiError.headers?.get("x-request-id")).toBeTruthy();
}

describe("@anthropic-ai/sdk: messages.create", () => {
  for (const auth of AUTHS) {
    it(`returns the whole message (${auth})`, async () => {
      const tenant = await seedTenant();
      const sent: Headers[] = [];
      const message = await anthropic(tenant.key, { auth, sent }).messages.create(
        params(tenant.model, { mock: { cached_tokens: 2 } }),
      );
      expect(message).toEqual({
        id: expect.stringMatching(/^msg_mock_\d+$/),
        type: "message",
        role: "assistant",
        model: tenant.model,
        content: [{ type: "text", text: "Hello from the mock upstream." }],
        stop_reason: "end_turn",
        stop_sequence: null,
        // Five words of prompt, five of reply; the cue reports two cache reads.
        usage: {
          input_tokens: 5,
          cache_creation_input_tokens: 0,
          cache_read_input_tokens: 2,
          output_tokens: 5,
        },
      });
      // The key went only the way this row names.
      const presented = auth === "x-api-key" ? [tenant.key, null] : [null, `Bearer ${tenant.key}`];
      expect(sent.map((headers) => [headers.get("x-api-key"), headers.get("authorization")])).toEqual([
        presented,
      ]);
    });
  }
});

describe("@anthropic-ai/sdk: messages.stream", () => {
  for (const auth of AUTHS) {
    it(`gives exactly the text the upstream sent, and the final message with its usage (${auth})`, async () => {
      const tenant = await seedTenant();
      const stream = anthropic(tenant.key, { auth }).messages.stream(
        params(tenant.model, { mock: { reply: REPLY } }),
      );
      let text = "";
      stream.on("text", (delta) => (text += delta));
      const message = await stream.finalMessage();
      expect(text).toBe(REPLY);
      expect(await stream.finalText()).toBe(REPLY);
      expect(message).toMatchObject({
        type: "message",
        role: "assistant",
        model: tenant.model,
        content: [{ type: "text", text: REPLY }],
        stop_reason: "end_turn",
        // message_start's input, message_delta's output: the reply's 27 words.
        usage: {
          input_tokens: 5,
          cache_creation_input_tokens: 0,
          cache_read_input_tokens: 0,
          output_tokens: 27,
        },
      });
    });
  }

  // The gateway ends each of these with Anthropic's `error` event, which the SDK raises as a plain
  // APIError (no status: it arrived inside a 200) carrying the event's body. Without that event,
  // iterating either stream ends quietly after the last event that came, and finalMessage() rejects
  // only with a generic "stream ended without producing a Message".
  const interruptions: Array<[string, Record<string, unknown>, string]> = [
    ["a break after the first delta", { reset_after_events: 4 }, "Grüße "],
    ["silence after the first delta", { stall_after_events: 4 }, "Grüße "],
    ["an end without message_stop", { end_without_done: true }, REPLY],
  ];
  for (const [what, mock, before] of interruptions) {
    it(`raises an APIError for ${what}: in finalMessage(), and iterating messages.stream() or create({ stream: true })`, async () => {
      const tenant = await seedTenant();
      const client = anthropic(tenant.key);
      const body = params(tenant.model, { mock: { reply: REPLY, ...mock } });
      const lastEvent = before === REPLY ? "message_delta" : "content_block_delta";
      const frame = { type: "error", error: { type: "api_error", message: "upstream stream interrupted" } };
      const expectInterrupted = (error: unknown) => {
        expect((error as object).constructor).toBe(Anthropic.APIError);
        const apiError = error as APIError;
        expect(apiError.status).toBeUndefined();
        expect(apiError.error).toEqual(frame);
        expect(apiError.type).toBe("api_error");
        expect(apiError.apiMessage).toBe("upstream stream interrupted");
        expect(apiError.message).toBe(JSON.stringify(frame));
      };
      /** Iterates the events to their end; returns the error it raised and the events' types. */
      const iterate = async (events: AsyncIterable<{ type: string }>) => {
        const types: string[] = [];
        const error = await failure(
          (async () => {
            for await (const event of events) types.push(event.type);
          })(),
        );
        return { error, last: types.at(-1) };
      };

      const stream = client.messages.stream(body);
      let text = "";
      stream.on("text", (delta) => (text += delta));
      expectInterrupted(await failure(stream.finalMessage()));
      expect(text).toBe(before);

      const iterated = await iterate(client.messages.stream(body));
      expectInterrupted(iterated.error);
      expect(iterated.last).toBe(lastEvent);

      const raw = await iterate(await client.messages.create({ ...body, stream: true }));
      expectInterrupted(raw.error);
      expect(raw.last).toBe(lastEvent);
    });
  }
});

describe("@anthropic-ai/sdk: messages.countTokens", () => {
  for (const auth of AUTHS) {
    it(`returns the upstream's count, through its /messages/count_tokens (${auth})`, async () => {
      const tenant = await seedTenant();
      const id = unique("sdk-count");
      const count = await anthropic(tenant.key, { auth }).messages.countTokens(
        { model: tenant.model, messages: [{ role: "user", content: "count these four words" }] },
        { headers: { "x-request-id": id } },
      );
      expect(count).toEqual({ input_tokens: 4 });
      expect((await upstreamRequests(id)).map((request) => request.path)).toEqual([
        "/v1/messages/count_tokens",
      ]);
    });
  }
});

describe("@anthropic-ai/sdk: every gateway error as the SDK's class", () => {
  for (const auth of AUTHS) {
    it(`401 AuthenticationError for an unknown key, on both routes (${auth})`, async () => {
      const client = anthropic("sk-gw-00000000000000000000000000000000", { auth });
      const calls = [
        () => client.messages.create(params("m")),
        () => client.messages.countTokens({ model: "m", messages: [{ role: "user", content: "x" }] }),
      ];
      for (const call of calls)
        expectSdkError(
          await failure(call()),
          Anthropic.AuthenticationError,
          401,
          "authentication_error",
          "Unauthorized",
        );
    });
  }

  it("400 BadRequestError naming the failing path of a body the schema refuses", async () => {
    const tenant = await seedTenant();
    const error = await failure(
      anthropic(tenant.key).messages.create(
        params(tenant.model, { messages: [{ role: "system", content: "x" }] }),
      ),
    );
    expectSdkError(
      error,
      Anthropic.BadRequestError,
      400,
      "invalid_request_error",
      "Invalid 'messages[0].role': role must be 'user' or 'assistant'.",
    );
  });

  it("400 BadRequestError for a model outside the catalog, on both routes", async () => {
    const tenant = await seedTenant();
    const client = anthropic(tenant.key);
    const calls = [
      () => client.messages.create(params("nope")),
      () => client.messages.countTokens({ model: "nope", messages: [{ role: "user", content: "x" }] }),
    ];
    for (const call of calls)
      expectSdkError(
        await failure(call()),
        Anthropic.BadRequestError,
        400,
        "invalid_request_error",
        "Model 'nope' not found.",
      );
  });

  it("403 PermissionDeniedError for a model the group does not grant", async () => {
    const denied = unique("denied");
    const tenant = await seedTenant({ models: { [unique("granted")]: {}, [denied]: {} }, grants: [] });
    expectSdkError(
      await failure(anthropic(tenant.key).messages.create(params(denied))),
      Anthropic.PermissionDeniedError,
      403,
      "permission_error",
      `This API key may not use model '${denied}'.`,
    );
  });

  it("403 PermissionDeniedError once the monthly budget is spent", async () => {
    const model = unique("priced");
    const tenant = await seedTenant({
      // A request costs far more than the budget: 100 dollars per million tokens.
      models: { [model]: { pricing: { input_per_mtok: 100, output_per_mtok: 100 } } },
      orgLimits: { requests_per_minute: 100, monthly_budget_usd: 0.0001 },
    });
    const client = anthropic(tenant.key);
    await client.messages.create(params(model));
    await usageOnce(tenant.org, 1);
    expectSdkError(
      await failure(client.messages.create(params(model))),
      Anthropic.PermissionDeniedError,
      403,
      "permission_error",
      "Budget reached for this organization: 0.0001 USD per month.",
    );
  });

  it("404 NotFoundError for a path the gateway does not serve (message batches)", async () => {
    const tenant = await seedTenant();
    const error = await failure(
      anthropic(tenant.key).messages.batches.create({
        requests: [{ custom_id: "a", params: params(tenant.model) }],
      }),
    );
    expectSdkError(error, Anthropic.NotFoundError, 404, "not_found_error", "Not found.");
  });

  it("405 APIError for another method, which the SDK's generic get() can send", async () => {
    const tenant = await seedTenant();
    const error = await failure(anthropic(tenant.key).get("/v1/messages"));
    // The SDK has no class of its own for 405.
    expectSdkError(
      error,
      Anthropic.APIError,
      405,
      "invalid_request_error",
      "Method GET is not allowed here; use POST.",
    );
    expect((error as APIError).headers?.get("allow")).toBe("POST");
  });

  it("413 ContentTooLargeError for a body over MAX_BODY_BYTES", async () => {
    const tenant = await seedTenant();
    const client = anthropic(tenant.key, { vars: { MAX_BODY_BYTES: "64" } });
    expectSdkError(
      await failure(client.messages.create(params(tenant.model, { system: "x".repeat(64) }))),
      Anthropic.ContentTooLargeError,
      413,
      "request_too_large",
      "Request body exceeds the size limit.",
    );
  });

  it("429 RateLimitError with Retry-After and retry-after-ms once the limit is reached", async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 1, user_requests_per_minute: 100 } });
    const client = anthropic(tenant.key);
    await client.messages.create(params(tenant.model));
    const error = await failure(client.messages.create(params(tenant.model)));
    expectSdkError(
      error,
      Anthropic.RateLimitError,
      429,
      "rate_limit_error",
      "Rate limit reached for this organization: 1 requests per minute.",
    );
    const headers = (error as APIError).headers!;
    expect(headers.get("retry-after")).toMatch(/^\d+$/);
    expect(headers.get("retry-after-ms")).toMatch(/^\d+$/);
    expect(Number(headers.get("retry-after"))).toBe(
      Math.max(1, Math.ceil(Number(headers.get("retry-after-ms")) / 1000)),
    );
  });

  it("500 InternalServerError api_error, revealing nothing, when KV fails", async () => {
    const tenant = await seedTenant();
    const failingKv = {
      get: async () => {
        throw new Error("KV GET failed: 503 kv-internal.example sk-gw-secret");
      },
    } as unknown as KVNamespace;
    const client = anthropic(tenant.key, { vars: { GATEWAY_KV: failingKv } });
    expectSdkError(
      await failure(client.messages.create(params(tenant.model))),
      Anthropic.InternalServerError,
      500,
      "api_error",
      "An unexpected error occurred in the gateway.",
    );
  });

  it("502 InternalServerError api_error for an empty upstream error and an unreachable upstream", async () => {
    const tenant = await seedTenant();
    const client = anthropic(tenant.key);
    const rows: Array<[Record<string, unknown>, string]> = [
      [{ status: 503 }, "The upstream returned an empty response body."],
      [{ reset: true }, "The upstream could not be reached."],
    ];
    for (const [mock, message] of rows)
      expectSdkError(
        await failure(client.messages.create(cue(mock, params(tenant.model)))),
        Anthropic.InternalServerError,
        502,
        "api_error",
        message,
      );
  });

  it("504 GatewayTimeoutError timeout_error for an upstream that never answers", async () => {
    const tenant = await seedTenant();
    expectSdkError(
      await failure(anthropic(tenant.key).messages.create(cue({ hang: true }, params(tenant.model)))),
      Anthropic.GatewayTimeoutError,
      504,
      "timeout_error",
      "The upstream did not respond in time.",
    );
  });
});
