import { describe, expect, it } from "vitest";
import type { Admission } from "../src/org-gate";
import {
  chat,
  envelope,
  expectNotForwarded,
  gatewayWith,
  postRaw,
  seedTenant,
  upstreamRequests,
  unique,
  type Tenant,
} from "./helpers";

const CHAT = "/v1/chat/completions";

describe("hostile bodies", () => {
  it("forwards 100,000 levels of nesting untouched", async () => {
    const tenant = await seedTenant();
    const id = unique("deep");
    const depth = 100_000;
    const body = `{"model":"${tenant.model}","messages":[{"role":"user","content":[${"[".repeat(depth)}${"]".repeat(depth)}]}]}`;
    const response = await postRaw(CHAT, tenant, body, id);
    expect(response.status).toBe(200);
    const [received] = await upstreamRequests(id);
    expect(received!.body).toBe(body);
  });

  it("renames the model of a deeply nested body, changing nothing else", async () => {
    const model = unique("alias");
    const tenant = await seedTenant({ models: { [model]: { upstream_model: "real" } } });
    const id = unique("deep-rename");
    const depth = 100_000;
    const body = `{"model":"${model}","messages":[{"role":"user","content":[${"[".repeat(depth)}${"]".repeat(depth)}]}]}`;
    const response = await postRaw(CHAT, tenant, body, id);
    expect(response.status).toBe(200);
    const [received] = await upstreamRequests(id);
    expect(received!.body).toBe(body.replace(`"model":"${model}"`, '"model":"real"'));
  });

  it("handles an object of 100,000 keys", async () => {
    const tenant = await seedTenant();
    const id = unique("wide");
    const extra = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, i]));
    const response = await postRaw(
      CHAT,
      tenant,
      JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "x" }], extra }),
      id,
    );
    expect(response.status).toBe(200);
  });

  it("refuses a messages array of 100,000 non-objects with the first bad index", async () => {
    const tenant = await seedTenant();
    const id = unique("many");
    const response = await postRaw(
      CHAT,
      tenant,
      JSON.stringify({ model: tenant.model, messages: Array(100_000).fill(1) }),
      id,
    );
    expect(await response.json()).toEqual(envelope("invalid_request_error", "invalid_body", "messages[0]"));
    await expectNotForwarded(id);
  });
});

describe("failing dependencies", () => {
  /** A RATE_LIMITER whose `admit` runs `behaviour`, counting the calls. */
  function limiter(behaviour: (call: number) => Admission) {
    let calls = 0;
    const namespace = {
      idFromName: (name: string) => name,
      get: () => ({
        admit: async () => behaviour(++calls),
        revoke: async () => {},
      }),
    };
    return { namespace: namespace as unknown as DurableObjectNamespace, calls: () => calls };
  }

  const request = (tenant: Tenant) => ({
    method: "POST",
    headers: { authorization: `Bearer ${tenant.key}` },
    body: JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "x" }] }),
  });

  it("retries a retryable Durable Object error once", async () => {
    const tenant = await seedTenant();
    const fake = limiter((call) => {
      if (call === 1) throw Object.assign(new Error("Network connection lost."), { retryable: true });
      return { admitted: true, ticket: "a:000000000000001:000000000", tokens: 1 };
    });
    const response = await gatewayWith(
      { RATE_LIMITER: fake.namespace as never },
      "/v1/chat/completions",
      request(tenant),
    );
    expect(response.status).toBe(200);
    expect(fake.calls()).toBe(2);
  });

  it("answers 500 internal_error for an overloaded Durable Object, without retrying", async () => {
    const tenant = await seedTenant();
    const fake = limiter(() => {
      throw Object.assign(new Error("Durable Object is overloaded. Too many requests queued."), {
        retryable: true,
        overloaded: true,
      });
    });
    const response = await gatewayWith(
      { RATE_LIMITER: fake.namespace as never },
      "/v1/chat/completions",
      request(tenant),
    );
    expect(response.status).toBe(500);
    const body = await response.json<{ error: { message: string } }>();
    expect(body).toEqual(envelope("server_error", "internal_error"));
    expect(body.error.message).not.toMatch(/Durable|overloaded|queued/);
    expect(fake.calls()).toBe(1);
  });

  it("answers 500 when a retryable error repeats", async () => {
    const tenant = await seedTenant();
    const fake = limiter(() => {
      throw Object.assign(new Error("Network connection lost."), { retryable: true });
    });
    const response = await gatewayWith(
      { RATE_LIMITER: fake.namespace as never },
      "/v1/chat/completions",
      request(tenant),
    );
    expect(response.status).toBe(500);
    expect(fake.calls()).toBe(2);
  });
});

describe("limits under load", () => {
  it("admits exactly the expected numbers for 500 concurrent requests from 10 users in 2 orgs", async () => {
    // Org A: 5 users of limit 30 sending 50 each (user caps 150 > org 120): exactly 120, none over 30.
    // Org B: 5 users of limit 15 sending 50 each (user caps 75 < org 100): exactly 15 each.
    const a = { requests_per_minute: 120, user_requests_per_minute: 30 };
    const b = { requests_per_minute: 100, user_requests_per_minute: 15 };
    const first = await seedTenant({ orgLimits: a });
    const second = await seedTenant({ orgLimits: b });
    const users = [first, second];
    for (let i = 0; i < 4; i++) {
      users.push(await seedTenant({ org: first.org, orgLimits: a }));
      users.push(await seedTenant({ org: second.org, orgLimits: b }));
    }
    const sends = users.flatMap((tenant) => Array.from({ length: 50 }, () => tenant));
    const responses = await Promise.all(
      sends.map((tenant) => chat(tenant).then(async (r) => ({ tenant, r, body: await r.text() }))),
    );
    const admitted = (pick: (t: Tenant) => boolean) =>
      responses.filter(({ tenant, r }) => pick(tenant) && r.status === 200).length;
    expect(admitted((t) => t.org === first.org)).toBe(120);
    expect(admitted((t) => t.org === second.org)).toBe(75);
    for (const tenant of users) {
      const own = admitted((t) => t === tenant);
      if (tenant.org === first.org) expect(own).toBeLessThanOrEqual(30);
      else expect(own).toBe(15);
    }
    for (const { r } of responses) {
      expect([200, 429]).toContain(r.status);
      if (r.status !== 429) continue;
      const seconds = Number(r.headers.get("retry-after"));
      const ms = Number(r.headers.get("retry-after-ms"));
      expect(seconds).toBe(Math.max(1, Math.ceil(ms / 1000)));
      expect(seconds).toBeGreaterThanOrEqual(1);
      expect(seconds).toBeLessThanOrEqual(60);
    }
  }, 60_000);
});
