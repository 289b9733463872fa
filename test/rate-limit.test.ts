import { evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hashKey } from "../src/auth";
import {
  chat,
  expectGatewayError,
  expectNotForwarded,
  expectUnauthorized,
  gateway,
  seedTenant,
  unique,
  type Tenant,
} from "./helpers";

// Admission under load and over time; the 429 itself, on both routes, is in contract.test.ts.

const WINDOW_MS = 60_000;

const gate = (org: string) => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(org));

/** Real waiting: in workerd, Date.now() moves on only across I/O, a timer included. */
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A chat request and the clock just before and just after it: the gate decided in between. */
async function timedChat(tenant: Tenant, requestId = unique("timed")) {
  const before = Date.now();
  const response = await chat(tenant, {}, { "x-request-id": requestId });
  const after = Date.now();
  return { response, before, after, requestId };
}

/**
 * Asserts the contract's 429 naming `scope` and its `limit` exactly; with `expectedMs`, that
 * retry-after-ms lies in that window (computed from measured times) and Retry-After is its ceiling.
 */
async function expectRateLimited(
  response: Response,
  scope: "organization" | "user",
  limit: number,
  expectedMs?: { min: number; max: number },
) {
  expect(response.status).toBe(429);
  const seconds = response.headers.get("retry-after");
  const ms = response.headers.get("retry-after-ms");
  expect(seconds).toMatch(/^\d+$/);
  expect(ms).toMatch(/^\d+$/);
  expect(Number(seconds)).toBe(Math.max(1, Math.ceil(Number(ms) / 1000)));
  expect(Number(ms)).toBeGreaterThan(0);
  expect(Number(ms)).toBeLessThanOrEqual(WINDOW_MS);
  if (expectedMs) {
    expect(Number(ms)).toBeGreaterThanOrEqual(expectedMs.min);
    expect(Number(ms)).toBeLessThanOrEqual(expectedMs.max);
  }
  const message = await expectGatewayError(response, 429, "rate_limit_error", "rate_limit_exceeded");
  expect(message).toBe(`Rate limit reached for this ${scope}: ${limit} requests per minute.`);
}

describe("rate limits", () => {
  it("admits exactly the limit of 50 concurrent requests", async () => {
    const tenant = await seedTenant({
      orgLimits: { requests_per_minute: 10, user_requests_per_minute: 100 },
    });
    const responses = await Promise.all(Array.from({ length: 50 }, () => chat(tenant)));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(40);
    for (const response of responses) {
      if (response.status === 429) await expectRateLimited(response, "organization", 10);
      else await response.arrayBuffer();
    }
  });

  it("lets a rejected request consume nothing", async () => {
    const limits = { requests_per_minute: 3, user_requests_per_minute: 1 };
    const first = await seedTenant({ orgLimits: limits });
    const second = await seedTenant({ org: first.org, orgLimits: limits });
    const third = await seedTenant({ org: first.org, orgLimits: limits });
    expect((await chat(first)).status).toBe(200);
    for (let i = 0; i < 5; i++) await expectRateLimited(await chat(first), "user", 1);
    // Five rejections of the first user took none of the org's remaining two.
    expect((await chat(second)).status).toBe(200);
    expect((await chat(third)).status).toBe(200);
    // Now the org is full too: a user with room of its own is refused in the org's name.
    const fourth = await seedTenant({ org: first.org, orgLimits: limits });
    await expectRateLimited(await chat(fourth), "organization", 3);
  });

  it("uses DEFAULT_ORG_RPM and DEFAULT_USER_RPM when the org sets no limits", async () => {
    const tenant = await seedTenant({ orgLimits: {} });
    // wrangler.toml's DEFAULT_USER_RPM is 60.
    const responses = await Promise.all(Array.from({ length: 61 }, () => chat(tenant)));
    expect(responses.filter((r) => r.status === 200)).toHaveLength(60);
    for (const response of responses) {
      if (response.status === 429) await expectRateLimited(response, "user", 60);
      else await response.arrayBuffer();
    }
  });

  it("names the scope whose wait is longer and answers that wait, here the user's", async () => {
    // Org limit 2, user limit 1. B is admitted at t0, A at t1 > t0; A's next request waits until
    // t1 + 60 s for its user and only until t0 + 60 s for its org: the later one, the user's, applies.
    const limits = { requests_per_minute: 2, user_requests_per_minute: 1 };
    const a = await seedTenant({ orgLimits: limits });
    const b = await seedTenant({ org: a.org, orgLimits: limits });
    const atB = await timedChat(b);
    expect(atB.response.status).toBe(200);
    await atB.response.arrayBuffer();
    await sleep(1_100);
    const atA = await timedChat(a);
    expect(atA.response.status).toBe(200);
    await atA.response.arrayBuffer();
    expect(atA.before - atB.after).toBeGreaterThanOrEqual(1_000);
    const refused = await timedChat(a);
    // The user's wait: A's admission (in [atA.before, atA.after]) + 60 s - the refusal's time.
    await expectRateLimited(refused.response, "user", 1, {
      min: atA.before + WINDOW_MS - refused.after,
      max: atA.after + WINDOW_MS - refused.before,
    });
    await expectNotForwarded(refused.requestId);
  });

  it("rounds Retry-After up to whole seconds, consistent with retry-after-ms", async () => {
    const tenant = await seedTenant({
      orgLimits: { requests_per_minute: 100, user_requests_per_minute: 1 },
    });
    const admitted = await timedChat(tenant);
    expect(admitted.response.status).toBe(200);
    await admitted.response.arrayBuffer();
    // About 1.75 s later the wait is about 58.25 s: rounding would say 58, the ceiling is 59.
    await sleep(1_750);
    const refused = await timedChat(tenant);
    const window = {
      min: admitted.before + WINDOW_MS - refused.after,
      max: admitted.after + WINDOW_MS - refused.before,
    };
    // Only the measured slack separates the bounds. The test means something only if rounding and
    // the ceiling differ across the whole window (the slack is a few ms; the margin is 250 ms).
    expect(Math.ceil(window.min / 1000)).toBe(Math.ceil(window.max / 1000));
    expect(Math.round(window.max / 1000)).toBeLessThan(Math.ceil(window.min / 1000));
    const retryAfter = refused.response.headers.get("retry-after");
    await expectRateLimited(refused.response, "user", 1, window);
    expect(retryAfter).toBe(String(Math.ceil(window.min / 1000)));
  });
});

describe("rate limiter durability", () => {
  it("keeps its counts across a Durable Object restart", async () => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 2 } });
    expect((await chat(tenant)).status).toBe(200);
    expect((await chat(tenant)).status).toBe(200);
    await evictDurableObject(gate(tenant.org));
    await expectRateLimited(await chat(tenant), "organization", 2);
  });

  it("keeps each user's counts across a Durable Object restart", async () => {
    const tenant = await seedTenant({
      orgLimits: { requests_per_minute: 1000, user_requests_per_minute: 2 },
    });
    expect((await chat(tenant)).status).toBe(200);
    expect((await chat(tenant)).status).toBe(200);
    await evictDurableObject(gate(tenant.org));
    const id = unique("user-after-restart");
    await expectRateLimited(await chat(tenant, {}, { "x-request-id": id }), "user", 2);
    await expectNotForwarded(id);
  });

  it("keeps its revocations across a Durable Object restart", async () => {
    const tenant = await seedTenant();
    expect((await chat(tenant)).status).toBe(200);
    // Revoked only in the gate: KV still says the key is valid, as a location it has not reached yet.
    await gate(tenant.org).revoke(tenant.keyId);
    await evictDurableObject(gate(tenant.org));
    const id = unique("revoked-after-restart");
    await expectUnauthorized(await chat(tenant, {}, { "x-request-id": id }), id);
    await expectNotForwarded(id);
    await expectUnauthorized(
      await gateway("/v1/models", { headers: { authorization: `Bearer ${tenant.key}` } }),
    );
  });

  it("has an admin revocation reach the gate, not only KV", async () => {
    const tenant = await seedTenant();
    const hash = await hashKey(tenant.key);
    const before = await env.GATEWAY_KV.get(`key:${hash}`);
    expect(before).not.toBeNull();
    expect((await chat(tenant)).status).toBe(200);
    const revoked = await gateway(`/admin/keys/${tenant.keyId}`, {
      method: "DELETE",
      headers: { authorization: "Bearer test-admin-token" },
    });
    expect(revoked.status).toBe(200);
    expect(await revoked.json()).toMatchObject({ id: tenant.keyId, revoked_at: expect.any(String) });
    // KV at a location that has not caught up still serves the unrevoked record.
    await env.GATEWAY_KV.put(`key:${hash}`, before!);
    const id = unique("admin-revoked");
    await expectUnauthorized(await chat(tenant, {}, { "x-request-id": id }), id);
    await expectNotForwarded(id);
  });
});
