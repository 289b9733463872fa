import { evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import { chat, envelope, openai, seedTenant, upstreamRequests, unique } from "./helpers";

async function expect429(response: Response, scope: RegExp) {
  expect(response.status).toBe(429);
  expect(response.headers.get("content-type")).toBe("application/json");
  const body = await response.json<{ error: { message: string } }>();
  expect(body).toEqual(envelope("rate_limit_error", "rate_limit_exceeded"));
  expect(body.error.message).toMatch(scope);
  const seconds = Number(response.headers.get("retry-after"));
  const ms = Number(response.headers.get("retry-after-ms"));
  expect(Number.isInteger(seconds)).toBe(true);
  expect(seconds).toBeGreaterThanOrEqual(1);
  expect(seconds).toBeLessThanOrEqual(60);
  expect(ms).toBeGreaterThan(0);
  expect(ms).toBeLessThanOrEqual(60_000);
  expect(seconds).toBe(Math.max(1, Math.ceil(ms / 1000)));
}

describe("rate limits", () => {
  it("admits exactly the limit of 50 concurrent requests", async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 10, user_requests_per_minute: 100 } });
    const responses = await Promise.all(Array.from({ length: 50 }, () => chat(tenant)));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(40);
    await Promise.all(responses.map((r) => r.arrayBuffer()));
  });

  it("limits a user below the org and names the scope", async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 100, user_requests_per_minute: 2 } });
    expect((await chat(tenant)).status).toBe(200);
    expect((await chat(tenant)).status).toBe(200);
    const id = unique("limited");
    await expect429(await chat(tenant, {}, { "x-request-id": id }), /user/);
    expect(await upstreamRequests(id)).toEqual([]);
  });

  it("limits the org across its users and names the scope", async () => {
    const first = await seedTenant({ orgLimits: { requests_per_minute: 2, user_requests_per_minute: 100 } });
    const second = await seedTenant({ org: first.org, orgLimits: { requests_per_minute: 2, user_requests_per_minute: 100 } });
    expect((await chat(first)).status).toBe(200);
    expect((await chat(second)).status).toBe(200);
    await expect429(await chat(first), /organization/);
    await expect429(await chat(second), /organization/);
  });

  it("lets a rejected request consume nothing", async () => {
    const limits = { requests_per_minute: 3, user_requests_per_minute: 1 };
    const first = await seedTenant({ orgLimits: limits });
    const second = await seedTenant({ org: first.org, orgLimits: limits });
    const third = await seedTenant({ org: first.org, orgLimits: limits });
    expect((await chat(first)).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await chat(first)).status).toBe(429);
    // Five rejections of the first user took none of the org's remaining two.
    expect((await chat(second)).status).toBe(200);
    expect((await chat(third)).status).toBe(200);
  });

  it("uses DEFAULT_ORG_RPM and DEFAULT_USER_RPM when the org sets no limits", async () => {
    const tenant = await seedTenant({ orgLimits: {} });
    // wrangler.toml's DEFAULT_USER_RPM is 60.
    const responses = await Promise.all(Array.from({ length: 61 }, () => chat(tenant)));
    expect(responses.filter((r) => r.status === 200)).toHaveLength(60);
    await Promise.all(responses.map((r) => r.arrayBuffer()));
  });

  it("is a RateLimitError to the openai client", async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 1 } });
    const client = openai(tenant.key);
    await client.chat.completions.create({ model: tenant.model, messages: [{ role: "user", content: "x" }] });
    const error = await client.chat.completions
      .create({ model: tenant.model, messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect((error as APIError).code).toBe("rate_limit_exceeded");
    expect((error as APIError).headers?.get("retry-after")).toMatch(/^\d+$/);
  });
});

describe("rate limiter durability", () => {
  it("keeps its counts across a Durable Object restart", async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 2 } });
    expect((await chat(tenant)).status).toBe(200);
    expect((await chat(tenant)).status).toBe(200);
    await evictDurableObject(env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(tenant.org)));
    expect((await chat(tenant)).status).toBe(429);
  });
});
