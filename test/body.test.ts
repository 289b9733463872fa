import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import { gateway, gatewayWith, envelope, openai, seedTenant, upstreamRequests, unique, type Tenant } from "./helpers";

function postRaw(tenant: Tenant, body: BodyInit, requestId: string, extra: RequestInit = {}) {
  return gateway("/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${tenant.key}`, "content-type": "application/json", "x-request-id": requestId },
    body,
    ...extra,
  });
}

async function expectInvalid(response: Response, requestId: string, param: string | null) {
  expect(response.status).toBe(400);
  expect(response.headers.get("content-type")).toBe("application/json");
  expect(response.headers.get("cache-control")).toBe("no-store");
  const body = await response.json<{ error: { message: string } }>();
  expect(body).toEqual(envelope("invalid_request_error", "invalid_body", param));
  expect(body.error.message.length).toBeGreaterThan(10);
  expect(await upstreamRequests(requestId)).toEqual([]);
  return body.error.message;
}

describe("request body", () => {
  it("rejects a body that is not JSON", async () => {
    const tenant = await seedTenant();
    const id = unique("body");
    const message = await expectInvalid(await postRaw(tenant, "{not json", id), id, null);
    expect(message).toMatch(/not valid JSON/);
  });

  it("rejects an empty body", async () => {
    const tenant = await seedTenant();
    const id = unique("body");
    await expectInvalid(await postRaw(tenant, "", id), id, null);
  });

  it("rejects invalid UTF-8", async () => {
    const tenant = await seedTenant();
    const id = unique("body");
    const bytes = new Uint8Array([0x7b, 0x22, 0x6d, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]);
    await expectInvalid(await postRaw(tenant, bytes, id), id, null);
  });

  const cases: Array<[string, unknown, string | null]> = [
    ["a JSON array", [1, 2], null],
    ["a JSON string", "hello", null],
    ["null", null, null],
    ["a missing model", { messages: [{ role: "user", content: "x" }] }, "model"],
    ["an empty model", { model: "", messages: [{ role: "user", content: "x" }] }, "model"],
    ["a numeric model", { model: 7, messages: [{ role: "user", content: "x" }] }, "model"],
    ["missing messages", { model: "m" }, "messages"],
    ["empty messages", { model: "m", messages: [] }, "messages"],
    ["messages not an array", { model: "m", messages: "hi" }, "messages"],
    ["a message that is not an object", { model: "m", messages: ["hi"] }, "messages[0]"],
    [
      "a role that is not a string",
      { model: "m", messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }, { role: 3 }] },
      "messages[2].role",
    ],
    ["a numeric content", { model: "m", messages: [{ role: "user", content: 5 }] }, "messages[0].content"],
    [
      "a tool message without tool_call_id",
      { model: "m", messages: [{ role: "user", content: "a" }, { role: "tool", content: "r" }] },
      "messages[1].tool_call_id",
    ],
    ["a string stream flag", { model: "m", messages: [{ role: "user", content: "a" }], stream: "yes" }, "stream"],
    [
      "a non-boolean include_usage",
      { model: "m", messages: [{ role: "user", content: "a" }], stream_options: { include_usage: 1 } },
      "stream_options.include_usage",
    ],
    ["n of zero", { model: "m", messages: [{ role: "user", content: "a" }], n: 0 }, "n"],
    ["a fractional n", { model: "m", messages: [{ role: "user", content: "a" }], n: 1.5 }, "n"],
  ];
  for (const [what, body, param] of cases) {
    it(`rejects ${what} with param ${param}`, async () => {
      const tenant = await seedTenant();
      const id = unique("body");
      await expectInvalid(await postRaw(tenant, JSON.stringify(body), id), id, param);
    });
  }

  it("passes unknown fields and values through untouched", async () => {
    const tenant = await seedTenant();
    const id = unique("body");
    const body = JSON.stringify({
      model: tenant.model,
      messages: [{ role: "user", content: [{ type: "text", text: "hi" }], extra: { a: [1] } }, { role: "tool", tool_call_id: "t1", content: null }],
      temperature: 0.2,
      stream: null,
      n: 1,
      vendor_field: { nested: true },
    });
    const response = await postRaw(tenant, body, id);
    expect(response.status).toBe(200);
    const [received] = await upstreamRequests(id);
    expect(received!.body).toBe(body);
  });

  it("answers 413 for a body over MAX_BODY_BYTES with a Content-Length", async () => {
    const tenant = await seedTenant();
    const id = unique("big");
    const response = await postRaw(tenant, "x".repeat(10 * 1024 * 1024 + 1), id);
    expect(response.status).toBe(413);
    expect(await response.json()).toEqual(envelope("invalid_request_error", "request_too_large"));
    expect(await upstreamRequests(id)).toEqual([]);
  });

  it("answers 413 for a chunked body over the limit, reading no further than needed", async () => {
    const tenant = await seedTenant();
    const id = unique("chunked");
    let pulled = 0;
    const chunk = new Uint8Array(64 * 1024).fill(0x20);
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        if (pulled > 1000) controller.close();
        else controller.enqueue(chunk);
      },
    });
    const response = await gatewayWith({ MAX_BODY_BYTES: "1000000" }, "/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${tenant.key}`, "x-request-id": id },
      body,
    });
    expect(response.status).toBe(413);
    expect(await response.json()).toEqual(envelope("invalid_request_error", "request_too_large"));
    // 1,000,000 bytes is 16 chunks of 64 KiB; a little read-ahead is fine, reading it all is not.
    expect(pulled).toBeLessThanOrEqual(18);
    expect(await upstreamRequests(id)).toEqual([]);
  });

  it("is a BadRequestError with code and param to the openai client", async () => {
    const tenant = await seedTenant();
    const error = await openai(tenant.key)
      .chat.completions.create({ model: tenant.model, messages: [] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as APIError).code).toBe("invalid_body");
    expect((error as APIError).param).toBe("messages");
  });
});
