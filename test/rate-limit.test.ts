import { evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { chat, seedTenant } from "./helpers";

// Admission under load and over time; the 429 itself, on both routes, is in contract.test.ts.

describe("rate limits", () => {
  it("admits exactly the limit of 50 concurrent requests", async () => {
    const tenant = await seedTenant({
      orgLimits: { requests_per_minute: 10, user_requests_per_minute: 100 },
    });
    const responses = await Promise.all(Array.from({ length: 50 }, () => chat(tenant)));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(40);
    await Promise.all(responses.map((r) => r.arrayBuffer()));
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
