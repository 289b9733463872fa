import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import { chat, cued, envelope, expectVerbatim, gatewayWith, openai, seedTenant, upstreamRequests, unique } from "./helpers";

/** Tells the mock upstream how to answer this one request. */
const cue = (mock: Record<string, unknown>) => ({ mock });

describe("upstream passthrough", () => {
  const bodies: Array<[number, string, string | null, Record<string, string>]> = [
    [400, '{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}', "application/json", {}],
    [404, '{"error":{"message":"no such model upstream","type":"invalid_request_error","code":"model_not_found"}}', "application/json", {}],
    [429, '{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}', "application/json", { "retry-after": "7" }],
    [500, '{"detail":"internal upstream failure"}', "application/json; charset=utf-8", {}],
    [503, "upstream overloaded, try later", "text/plain", { "retry-after": "3" }],
    [400, "<html><body>Bad Request</body></html>", "text/html", {}],
    [404, "Not Found", "text/plain; charset=utf-8", {}],
    [429, "too many", null, {}],
    [500, "Internal Server Error", "text/plain", {}],
    [503, '{"error":"Service Unavailable"}', "application/json", {}],
  ];
  for (const [status, body, contentType, headers] of bodies) {
    it(`forwards an upstream ${status} ${contentType ?? "without content-type"} verbatim`, async () => {
      const tenant = await seedTenant();
      const response = await chat(tenant, cue({ status, body, content_type: contentType, headers }));
      await expectVerbatim(response, status, body, contentType, headers);
    });
  }

  it("returns a 2xx body with the upstream's status, bytes and content type", async () => {
    const tenant = await seedTenant();
    const body = '{"id":"x","object":"chat.completion","choices":[]}';
    const response = await chat(tenant, cue({ status: 201, body, content_type: "application/json" }));
    expect(response.status).toBe(201);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(await response.text()).toBe(body);
  });

  it("gives the openai client the upstream's own error", async () => {
    const tenant = await seedTenant();
    const gone = '{"error":{"message":"gone","type":"invalid_request_error","param":null,"code":"model_gone"}}';
    const params = { model: tenant.model, messages: [{ role: "user" as const, content: "x" }] };
    const error = await openai(tenant.key)
      .chat.completions.create(cued(params, { status: 404, body: gone, content_type: "application/json" }))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect((error as APIError).code).toBe("model_gone");
  });

  it("returns a completion to the openai client", async () => {
    const tenant = await seedTenant();
    const completion = await openai(tenant.key).chat.completions.create({
      model: tenant.model,
      messages: [{ role: "user", content: "x" }],
    });
    expect(completion.choices[0]!.message.content).toBe("Hello from the mock upstream.");
  });
});

describe("upstream failures", () => {
  async function expectGatewayError(response: Response, status: number, code: string) {
    expect(response.status).toBe(status);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(response.headers.get("cache-control")).toBe("no-store");
    const body = await response.json<{ error: { message: string } }>();
    expect(body).toEqual(envelope("server_error", code));
    expect(body.error.message).not.toMatch(/127\.0\.0\.1|localhost|http:/);
  }

  for (const status of [400, 429, 500, 503]) {
    it(`answers 502 upstream_empty_body for an empty upstream ${status}`, async () => {
      const tenant = await seedTenant();
      await expectGatewayError(await chat(tenant, cue({ status })), 502, "upstream_empty_body");
    });
  }

  it("answers 502 upstream_empty_body for an empty 2xx", async () => {
    const tenant = await seedTenant();
    await expectGatewayError(await chat(tenant, cue({ status: 200, body: "" })), 502, "upstream_empty_body");
  });

  it("answers 502 upstream_unavailable when the upstream resets the connection", async () => {
    const tenant = await seedTenant();
    await expectGatewayError(await chat(tenant, cue({ reset: true })), 502, "upstream_unavailable");
  });

  it("answers 502 upstream_unavailable when the upstream refuses connections", async () => {
    const tenant = await seedTenant();
    const response = await gatewayWith({ UPSTREAM_BASE_URL: "http://127.0.0.1:9/v1" }, "/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${tenant.key}` },
      body: JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "x" }] }),
    });
    await expectGatewayError(response, 502, "upstream_unavailable");
  });

  it("answers 504 upstream_timeout when no headers arrive within UPSTREAM_TIMEOUT_MS", async () => {
    const tenant = await seedTenant();
    // vitest.config.ts sets UPSTREAM_TIMEOUT_MS to 1500.
    await expectGatewayError(await chat(tenant, cue({ hang: true })), 504, "upstream_timeout");
  });

  it("waits for an upstream that answers within UPSTREAM_TIMEOUT_MS", async () => {
    const tenant = await seedTenant();
    expect((await chat(tenant, cue({ delay_ms: 500 }))).status).toBe(200);
  });

  it("is an InternalServerError with the code to the openai client", async () => {
    const tenant = await seedTenant();
    const params = { model: tenant.model, messages: [{ role: "user" as const, content: "x" }] };
    const error = await openai(tenant.key)
      .chat.completions.create(cued(params, { status: 503 }))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.InternalServerError);
    expect((error as APIError).status).toBe(502);
    expect((error as APIError).code).toBe("upstream_empty_body");
  });

  it("answers 500 internal_error, revealing nothing, when KV fails", async () => {
    const tenant = await seedTenant();
    const failingKv = {
      get: async () => {
        throw new Error("KV GET failed: 503 kv-internal.example sk-gw-secret");
      },
    } as unknown as KVNamespace;
    const response = await gatewayWith({ GATEWAY_KV: failingKv }, "/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${tenant.key}` },
      body: JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "x" }] }),
    });
    expect(response.status).toBe(500);
    const body = await response.json<{ error: { message: string } }>();
    expect(body).toEqual(envelope("server_error", "internal_error"));
    expect(body.error.message).not.toMatch(/KV|kv-internal|sk-gw|503/);
  });
});

describe("upstream hygiene", () => {
  it("sends the upstream key, never the caller's credentials or cookies", async () => {
    const tenant = await seedTenant();
    const id = unique("hygiene");
    await chat(tenant, {}, {
      "x-request-id": id,
      cookie: "session=caller-secret",
      "proxy-authorization": "Basic Y2FsbGVyOnNlY3JldA==",
      "x-api-key": "caller-other-key",
      connection: "x-foo",
      "x-foo": "hop",
      accept: "application/json",
    });
    const [received] = await upstreamRequests(id);
    expect(received!.headers.authorization).toBe("Bearer sk-upstream-test-secret");
    expect(JSON.stringify(received!.headers)).not.toContain(tenant.key);
    for (const name of ["cookie", "proxy-authorization", "x-api-key", "x-foo"]) expect(received!.headers[name]).toBeUndefined();
    expect(received!.headers["content-type"]).toBe("application/json");
    expect(received!.headers.accept).toBe("application/json");
  });

  it("returns no upstream cookies or hop-by-hop headers", async () => {
    const tenant = await seedTenant();
    const response = await chat(tenant, cue({ set_cookie: true }));
    expect(response.status).toBe(200);
    expect(response.headers.get("set-cookie")).toBeNull();
    expect(response.headers.get("keep-alive")).toBeNull();
    await response.arrayBuffer();
  });

  it("does not follow an upstream redirect", async () => {
    const tenant = await seedTenant();
    const id = unique("redirect");
    const target = `${(await upstreamRequestsBase())}/v1/chat/completions`;
    const response = await chat(tenant, cue({ redirect: target }), { "x-request-id": id });
    expect(response.status).toBe(302);
    expect(response.headers.get("location")).toBeNull();
    await response.arrayBuffer();
    expect(await upstreamRequests(id)).toHaveLength(1);
  });
});

async function upstreamRequestsBase() {
  const { env } = await import("cloudflare:workers");
  return env.UPSTREAM_BASE_URL.replace(/\/v1$/, "");
}
