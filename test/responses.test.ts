import { exports } from "cloudflare:workers";
import { createOpenAI } from "@ai-sdk/openai";
import { APICallError, generateText, streamText, type LanguageModel } from "ai";
import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import {
  GATEWAY,
  cued,
  expectGatewayError,
  expectVerbatim,
  gateway,
  openai,
  responses,
  seedTenant,
  unique,
  upstreamRequests,
  type Tenant,
} from "./helpers";

const UNAUTHORIZED = '{"error":"Unauthorized"}';
const cue = (mock: Record<string, unknown>) => ({ mock });
const json = (body: unknown) => JSON.stringify(body);

/** POST /v1/responses with exactly these body bytes. */
function postRaw(key: string, body: BodyInit, requestId: string) {
  return gateway("/v1/responses", {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-request-id": requestId },
    body,
  });
}

describe("POST /v1/responses: the contract's error rows", () => {
  it("answers 405 with Allow: POST for GET", async () => {
    const response = await gateway("/v1/responses");
    expect(response.headers.get("allow")).toBe("POST");
    await expectGatewayError(response, 405, "invalid_request_error", "method_not_allowed");
  });

  const unauthorized: Array<[string, (tenant: Tenant) => string | null]> = [
    ["a missing key", () => null],
    ["an unknown key", () => "Bearer sk-gw-00000000000000000000000000000000"],
    ["a Basic scheme", (tenant) => `Basic ${btoa(tenant.key)}`],
  ];
  for (const [cause, authorization] of unauthorized) {
    it(`answers the exact 401 for ${cause}, forwarding nothing`, async () => {
      const tenant = await seedTenant();
      const id = unique("auth");
      const headers: Record<string, string> = { "x-request-id": id };
      const value = authorization(tenant);
      if (value !== null) headers.authorization = value;
      const response = await gateway("/v1/responses", { method: "POST", headers, body: json({ model: tenant.model }) });
      expect(response.status).toBe(401);
      expect(response.headers.get("content-type")).toBe("application/json");
      expect(await response.text()).toBe(UNAUTHORIZED);
      expect(await upstreamRequests(id)).toEqual([]);
    });
  }

  it("answers the exact 401 for a revoked key", async () => {
    const tenant = await seedTenant({ revoked: true });
    const response = await responses(tenant);
    expect(response.status).toBe(401);
    expect(await response.text()).toBe(UNAUTHORIZED);
  });

  // invalid_request_error answers before the upstream step: nothing may reach the upstream.
  const rejected: Array<[string, (tenant: Tenant) => BodyInit, number, string, string | null]> = [
    ["a body over MAX_BODY_BYTES", () => "x".repeat(10 * 1024 * 1024 + 1), 413, "request_too_large", null],
    ["a body that is not JSON", () => "{not json", 400, "invalid_body", null],
    ["a JSON array", () => json([{ model: "m" }]), 400, "invalid_body", null],
    ["a missing model", () => json({ input: "hi" }), 400, "invalid_body", "model"],
    ["an empty model", () => json({ model: "", input: "hi" }), 400, "invalid_body", "model"],
    ["a numeric model", () => json({ model: 4, input: "hi" }), 400, "invalid_body", "model"],
    ["a numeric input", (t) => json({ model: t.model, input: 42 }), 400, "invalid_body", "input"],
    ["an object input", (t) => json({ model: t.model, input: { role: "user" } }), 400, "invalid_body", "input"],
    ["a null input", (t) => json({ model: t.model, input: null }), 400, "invalid_body", "input"],
    ["a string stream flag", (t) => json({ model: t.model, stream: "yes" }), 400, "invalid_body", "stream"],
    ["a model outside the catalog", () => json({ model: "no-such-model", input: "hi" }), 400, "model_not_found", "model"],
  ];
  for (const [what, body, status, code, param] of rejected) {
    it(`answers ${status} ${code} for ${what}`, async () => {
      const tenant = await seedTenant();
      const id = unique("rejected");
      const response = await postRaw(tenant.key, body(tenant), id);
      const message = await expectGatewayError(response, status, "invalid_request_error", code, param);
      if (code === "model_not_found") expect(message).toBe("Model 'no-such-model' not found.");
      expect(await upstreamRequests(id)).toEqual([]);
    });
  }

  it("answers 403 model_access_denied when the group does not grant the model", async () => {
    const other = unique("model");
    const tenant = await seedTenant({ models: { [unique("model")]: {}, [other]: {} }, grants: [] });
    const id = unique("denied");
    const response = await responses(tenant, { model: other }, { "x-request-id": id });
    await expectGatewayError(response, 403, "permission_error", "model_access_denied", "model");
    expect(await upstreamRequests(id)).toEqual([]);
  });

  it("answers 429 with Retry-After once the user's limit is reached, sharing it with chat", async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 100, user_requests_per_minute: 2 } });
    expect((await responses(tenant)).status).toBe(200);
    const chat = await gateway("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${tenant.key}` },
      body: json({ model: tenant.model, messages: [{ role: "user", content: "hi" }] }),
    });
    expect(chat.status).toBe(200);
    const id = unique("limited");
    const response = await responses(tenant, {}, { "x-request-id": id });
    const retryAfter = response.headers.get("retry-after");
    expect(await expectGatewayError(response, 429, "rate_limit_error", "rate_limit_exceeded")).toMatch(/user/);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toMatch(/^\d+$/);
    expect(await upstreamRequests(id)).toEqual([]);
  });

  const passthrough: Array<[number, string, string | null, Record<string, string>]> = [
    [400, '{"error":{"message":"bad input","type":"invalid_request_error","param":"input","code":null}}', "application/json", {}],
    [429, '{"error":{"message":"slow down","code":"rate_limit_exceeded"}}', "application/json", { "retry-after": "7" }],
    [503, "upstream overloaded, try later", "text/plain", { "retry-after": "3" }],
    [500, "<html>oops</html>", null, {}],
  ];
  for (const [status, body, contentType, headers] of passthrough) {
    it(`forwards an upstream ${status} ${contentType ?? "without content-type"} verbatim`, async () => {
      const tenant = await seedTenant();
      const response = await responses(tenant, cue({ status, body, content_type: contentType, headers }));
      await expectVerbatim(response, status, body, contentType, headers);
    });
  }

  const upstreamFailures: Array<[string, Record<string, unknown>, number, string]> = [
    ["an empty upstream 500", { status: 500 }, 502, "upstream_empty_body"],
    ["an empty upstream 2xx", { status: 200, body: "" }, 502, "upstream_empty_body"],
    ["a reset connection", { reset: true }, 502, "upstream_unavailable"],
    // vitest.config.ts sets UPSTREAM_TIMEOUT_MS to 1500.
    ["no upstream headers within UPSTREAM_TIMEOUT_MS", { hang: true }, 504, "upstream_timeout"],
  ];
  for (const [what, mock, status, code] of upstreamFailures) {
    it(`answers ${status} ${code} for ${what}`, async () => {
      const tenant = await seedTenant();
      const message = await expectGatewayError(await responses(tenant, cue(mock)), status, "server_error", code);
      expect(message).not.toMatch(/127\.0\.0\.1|localhost|http:/);
    });
  }
});

describe("POST /v1/responses: forwarding", () => {
  it("sends the caller's bytes to UPSTREAM_BASE_URL/responses with the upstream key", async () => {
    const tenant = await seedTenant();
    const id = unique("forward");
    const input = [{ role: "user", content: "hi" }];
    const body = json({ model: tenant.model, input, instructions: "be brief", store: false });
    const response = await postRaw(tenant.key, body, id);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json");
    const result = await response.json<{ id: string; object: string; status: string; model: string }>();
    expect(result).toMatchObject({ object: "response", status: "completed", model: tenant.model });
    expect(result.id).toMatch(/^resp_mock_\d+$/);
    const [received] = await upstreamRequests(id);
    expect(received).toMatchObject({ method: "POST", path: "/v1/responses", body });
    expect(received!.headers.authorization).toBe("Bearer sk-upstream-test-secret");
  });

  it("renames the model to upstream_model", async () => {
    const model = unique("alias");
    const tenant = await seedTenant({ models: { [model]: { upstream_model: "provider/real-model" } } });
    const id = unique("rename");
    const response = await responses(tenant, { temperature: 0.3 }, { "x-request-id": id });
    expect((await response.json<{ model: string }>()).model).toBe("provider/real-model");
    const [received] = await upstreamRequests(id);
    expect(JSON.parse(received!.body)).toEqual({ model: "provider/real-model", input: "hi", temperature: 0.3 });
  });
});

describe("POST /v1/responses with the openai client", () => {
  it("returns a response whose output_text is the reply", async () => {
    const tenant = await seedTenant();
    const response = await openai(tenant.key).responses.create({ model: tenant.model, input: "hi" });
    expect(response.output_text).toBe("Hello from the mock upstream.");
    expect(response.usage?.output_tokens).toBe(5);
  });

  it("is a typed error with the gateway's code", async () => {
    const tenant = await seedTenant();
    const client = openai(tenant.key);
    const missing = await client.responses.create({ model: "nope", input: "hi" }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.BadRequestError);
    expect((missing as APIError).code).toBe("model_not_found");
    const empty = await client.responses
      .create(cued({ model: tenant.model, input: "hi" }, { status: 503 }))
      .catch((e: unknown) => e);
    expect(empty).toBeInstanceOf(OpenAI.InternalServerError);
    expect((empty as APIError).code).toBe("upstream_empty_body");
  });
});

/**
 * The Vercel AI SDK's OpenAI provider pointed at the Worker. The SDK builds its own request
 * bodies, so the mock upstream's cue is added on the way out, as an extra field the gateway
 * passes through.
 */
function aiSdk(key: string, mock?: Record<string, unknown>) {
  return createOpenAI({
    apiKey: key,
    baseURL: `${GATEWAY}/v1`,
    fetch: async (url, init) => {
      const body = mock && typeof init?.body === "string" ? json({ ...JSON.parse(init.body), mock }) : init?.body;
      return exports.default.fetch(new Request(url, { ...init, body }));
    },
  });
}

const REPLY = "Grüße über das Gateway, ganz und unversehrt 🙂";

/** Runs streamText to its end; returns the text and the error parts it reported. */
async function streamAll(model: LanguageModel) {
  const errors: unknown[] = [];
  const result = streamText({ model, prompt: "hi", maxRetries: 0, onError: ({ error }) => void errors.push(error) });
  let text = "";
  for await (const part of result.fullStream) {
    if (part.type === "text-delta") text += part.text;
  }
  return { text, errors, finishReason: await result.finishReason };
}

describe("the Vercel AI SDK on both routes", () => {
  type ModelOf = (provider: ReturnType<typeof aiSdk>, model: string) => LanguageModel;
  const routes: Array<[string, ModelOf, Record<string, unknown>]> = [
    ["/v1/chat/completions", (provider, model) => provider.chat(model), { reset_after_events: 4 }],
    ["/v1/responses", (provider, model) => provider.responses(model), { reset_after_events: 6 }],
  ];
  for (const [route, modelOf, interruption] of routes) {
    it(`generateText returns the reply (${route})`, async () => {
      const tenant = await seedTenant();
      const id = unique("ai-generate");
      const { text, finishReason } = await generateText({
        model: modelOf(aiSdk(tenant.key), tenant.model),
        prompt: "hi",
        maxRetries: 0,
        headers: { "x-request-id": id },
      });
      expect(text).toBe("Hello from the mock upstream.");
      expect(finishReason).toBe("stop");
      expect((await upstreamRequests(id))[0]!.path).toBe(route);
    });

    it(`generateText surfaces a gateway error as an APICallError (${route})`, async () => {
      const tenant = await seedTenant();
      const error = await generateText({ model: modelOf(aiSdk(tenant.key), "nope"), prompt: "hi", maxRetries: 0 }).catch(
        (e: unknown) => e,
      );
      expect(APICallError.isInstance(error)).toBe(true);
      expect((error as APICallError).statusCode).toBe(400);
      expect((error as APICallError).responseBody).toContain('"model_not_found"');
    });

    it(`streamText yields the whole reply of a clean stream (${route})`, async () => {
      const tenant = await seedTenant();
      const { text, errors, finishReason } = await streamAll(modelOf(aiSdk(tenant.key, { reply: REPLY }), tenant.model));
      expect(errors).toEqual([]);
      expect(text).toBe(REPLY);
      expect(finishReason).toBe("stop");
    });

    it(`streamText reports an interrupted stream as an error (${route})`, async () => {
      const tenant = await seedTenant();
      const { text, errors, finishReason } = await streamAll(
        modelOf(aiSdk(tenant.key, { reply: REPLY, ...interruption }), tenant.model),
      );
      expect(REPLY.startsWith(text)).toBe(true);
      expect(text.length).toBeLessThan(REPLY.length);
      expect(errors).toHaveLength(1);
      expect(JSON.stringify(errors[0])).toContain("upstream stream interrupted");
      expect(finishReason).toBe("error");
    });
  }
});
