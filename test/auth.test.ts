import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import { chat, gateway, openai, seedTenant, upstreamRequests, unique } from "./helpers";

const UNAUTHORIZED = '{"error":"Unauthorized"}';

async function expectUnauthorized(response: Response, requestId: string) {
  expect(response.status).toBe(401);
  expect(response.headers.get("content-type")).toBe("application/json");
  expect(response.headers.get("x-request-id")).toBe(requestId);
  expect(response.headers.get("cache-control")).toBe("no-store");
  expect(await response.text()).toBe(UNAUTHORIZED);
  expect(await upstreamRequests(requestId)).toEqual([]);
}

function post(authorization: string | null, requestId: string) {
  const headers: Record<string, string> = { "content-type": "application/json", "x-request-id": requestId };
  if (authorization !== null) headers.authorization = authorization;
  return gateway("/v1/chat/completions", {
    method: "POST",
    headers,
    body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
  });
}

describe("API key auth", () => {
  it("accepts a known key", async () => {
    const tenant = await seedTenant();
    expect((await chat(tenant)).status).toBe(200);
  });

  const odd: Array<[string, string | null]> = [
    ["missing header", null],
    ["empty header", ""],
    ["Basic scheme", "Basic dXNlcjpwYXNz"],
    ["Bearer without a token", "Bearer"],
    ["Bearer and a space", "Bearer "],
    ["unknown key", "Bearer sk-gw-00000000000000000000000000000000"],
    ["token with a space inside", "Bearer sk-gw-abc def"],
    ["token with odd characters", 'Bearer sk-gw-"<>{}'],
    ["a very long token", `Bearer ${"a".repeat(20_000)}`],
    ["no scheme", "sk-gw-00000000000000000000000000000000"],
  ];
  for (const [cause, header] of odd) {
    it(`answers the exact 401 for ${cause}`, async () => {
      const id = unique("auth");
      await expectUnauthorized(await post(header, id), id);
    });
  }

  it("answers the exact 401 for a revoked key", async () => {
    const tenant = await seedTenant({ revoked: true });
    const id = unique("revoked");
    await expectUnauthorized(await chat(tenant, {}, { "x-request-id": id }), id);
  });

  it("answers 401 before looking at the body", async () => {
    const id = unique("auth-body");
    const response = await gateway("/v1/chat/completions", {
      method: "POST",
      headers: { "x-request-id": id },
      body: "not json",
    });
    await expectUnauthorized(response, id);
  });

  it("is an AuthenticationError to the openai client", async () => {
    const error = await openai("sk-gw-nope")
      .chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((error as APIError).status).toBe(401);
  });
});
