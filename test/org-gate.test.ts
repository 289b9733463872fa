import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { hashKey } from "../src/auth";
import type { Limits, OrgGate } from "../src/org-gate";
import { chat, expectGatewayError, expectUnauthorized, seedTenant, unique, type Tenant } from "./helpers";

// The org's gate over time and across restarts: when an admission leaves the window, what a
// restarted gate reads back from its storage, and what it forgets. Time is Date faked in this
// isolate, which the gate (in the same isolate) reads too: it stands still between steps, so every
// boundary is exact to the millisecond.

const WINDOW_MS = 60_000;
const DAY_MS = 24 * 60 * 60 * 1000;

const gate = (org: string) => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(org));

/** Freezes Date (the gate's clock too) at now; returns a function that moves it on. */
function freezeClock(): (ms: number) => void {
  vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
  return (ms) => vi.advanceTimersByTime(ms);
}
afterEach(() => void vi.useRealTimers());

/** The status of one chat request, its body read. */
async function status(tenant: Tenant): Promise<number> {
  const response = await chat(tenant);
  await response.arrayBuffer();
  return response.status;
}

/** The statuses of `count` chat requests sent together, in order (which one the gate took first is not). */
const statuses = async (tenant: Tenant, count: number) =>
  (await Promise.all(Array.from({ length: count }, () => status(tenant)))).sort();

/** The gate's stored admission keys, once its batched writes have settled. */
async function storedAdmissions(org: string): Promise<string[]> {
  await new Promise((resolve) => setTimeout(resolve, 50));
  return runInDurableObject(gate(org), async (_, state) => [
    ...(await state.storage.list({ prefix: "a:" })).keys(),
  ]);
}

describe("the window", () => {
  it("frees an admission exactly 60 s after it, not a millisecond sooner", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 2, user_requests_per_minute: 2 } });
    expect(await statuses(tenant, 2)).toEqual([200, 200]);
    advance(WINDOW_MS - 1);
    expect(await status(tenant)).toBe(429);
    advance(1);
    expect(await statuses(tenant, 3)).toEqual([200, 200, 429]);
    // Long after: the first two have left the window for good, the next two one millisecond ago.
    advance(WINDOW_MS + 1);
    expect(await statuses(tenant, 3)).toEqual([200, 200, 429]);
  });

  it("names the organization when its wait and the user's are the same", async () => {
    freezeClock();
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 1, user_requests_per_minute: 1 } });
    expect(await status(tenant)).toBe(200);
    const message = await expectGatewayError(
      await chat(tenant),
      429,
      "rate_limit_error",
      "rate_limit_exceeded",
    );
    expect(message).toBe("Rate limit reached for this organization: 1 requests per minute.");
  });

  it("forgets stored admissions once they have left the window, more than a storage batch of them", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({
      orgLimits: { requests_per_minute: 1000, user_requests_per_minute: 1000 },
    });
    expect((await statuses(tenant, 300)).every((s) => s === 200)).toBe(true);
    expect(await storedAdmissions(tenant.org)).toHaveLength(300);
    advance(WINDOW_MS);
    expect(await status(tenant)).toBe(200);
    expect(await storedAdmissions(tenant.org)).toHaveLength(1);
  });

  it("never writes back a charge that has left the window, though its settlement was waiting to be written", async () => {
    const advance = freezeClock();
    const org = unique("org");
    const limits: Limits = { requests: 10, userRequests: 10 };
    const first = await runInDurableObject(gate(org), (instance: OrgGate) =>
      instance.admit("key_a", "u", limits, 100),
    );
    expect(first.admitted).toBe(true);
    const ticket = first.admitted ? first.ticket : "";
    expect(await storedAdmissions(org)).toEqual([ticket]);
    // In one turn, before the gate's next write: the request ends (its settlement is to be written),
    // and a minute later the next admission drops the first from storage.
    const next = await runInDurableObject(gate(org), (instance: OrgGate) => {
      instance.recordUsage([], 90, [{ ticket, user: "u", reserved: 100, used: 40 }]);
      advance(WINDOW_MS);
      return instance.admit("key_a", "u", limits, 100);
    });
    expect(next.admitted).toBe(true);
    expect(await storedAdmissions(org)).toEqual([next.admitted ? next.ticket : ""]);
  });
});

describe("a restarted gate", () => {
  it("counts every admission of a burst larger than a storage batch", async () => {
    freezeClock();
    const tenant = await seedTenant({
      orgLimits: { requests_per_minute: 301, user_requests_per_minute: 1000 },
    });
    expect((await statuses(tenant, 300)).every((s) => s === 200)).toBe(true);
    await storedAdmissions(tenant.org);
    await evictDurableObject(gate(tenant.org));
    expect(await statuses(tenant, 2)).toEqual([200, 429]);
  });

  it("numbers its new admissions after the stored ones of the same millisecond", async () => {
    // The clock stands still: every admission here has the same time, told apart by its number.
    freezeClock();
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 4, user_requests_per_minute: 4 } });
    expect(await statuses(tenant, 2)).toEqual([200, 200]);
    await storedAdmissions(tenant.org);
    await evictDurableObject(gate(tenant.org));
    expect(await statuses(tenant, 2)).toEqual([200, 200]);
    expect(await storedAdmissions(tenant.org)).toHaveLength(4);
    await evictDurableObject(gate(tenant.org));
    expect(await status(tenant)).toBe(429);
  });

  it("does not count stored admissions that have left the window, and drops them", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 2, user_requests_per_minute: 2 } });
    expect(await statuses(tenant, 2)).toEqual([200, 200]);
    await storedAdmissions(tenant.org);
    advance(WINDOW_MS);
    await evictDurableObject(gate(tenant.org));
    expect(await storedAdmissions(tenant.org)).toEqual([]);
    expect(await statuses(tenant, 3)).toEqual([200, 200, 429]);
  });

  it("does not count, and drops, a stored key it never writes", async () => {
    freezeClock();
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 1, user_requests_per_minute: 1 } });
    const foreign = `a:${String(Date.now()).padStart(15, "0")}:000000001x`;
    await runInDurableObject(gate(tenant.org), (_, state) =>
      state.storage.put(foreign, { user: tenant.user, tokens: 1 }),
    );
    await evictDurableObject(gate(tenant.org));
    expect(await status(tenant)).toBe(200);
    expect(await storedAdmissions(tenant.org)).toEqual([expect.stringMatching(/^a:\d{15}:\d{9}$/)]);
  });

  it("counts an admission stored before token limits (a bare user id) as a request of that user", async () => {
    freezeClock();
    const orgLimits = { requests_per_minute: 5, user_requests_per_minute: 1 };
    const tenant = await seedTenant({ orgLimits });
    const other = await seedTenant({ org: tenant.org, orgLimits });
    const stored = `a:${String(Date.now()).padStart(15, "0")}:000000000`;
    await runInDurableObject(gate(tenant.org), (_, state) => state.storage.put(stored, tenant.user));
    await evictDurableObject(gate(tenant.org));
    expect(await status(tenant)).toBe(429);
    expect(await status(other)).toBe(200);
  });

  it("keeps a revocation for a day, through any number of restarts, then leaves it to KV", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant();
    const hash = await hashKey(tenant.key);
    const record = (await env.GATEWAY_KV.get(`key:${hash}`))!;
    expect((await env.GATEWAY_KV.list({ prefix: `key:${hash}` })).keys).toHaveLength(1);
    expect(await status(tenant)).toBe(200);
    // Revoked only in the gate: KV still says the key is valid, as a location it has not reached yet.
    await gate(tenant.org).revoke(tenant.keyId);
    advance(DAY_MS - 1);
    await evictDurableObject(gate(tenant.org));
    await expectUnauthorized(await chat(tenant));
    await evictDurableObject(gate(tenant.org));
    await expectUnauthorized(await chat(tenant));
    advance(1);
    await evictDurableObject(gate(tenant.org));
    expect(await env.GATEWAY_KV.get(`key:${hash}`)).toBe(record);
    expect(await status(tenant)).toBe(200);
  });

  it("keeps a revocation whose stored time it cannot read", async () => {
    freezeClock();
    const tenant = await seedTenant();
    await runInDurableObject(gate(tenant.org), (_, state) =>
      state.storage.put(`r:${tenant.keyId}`, "yesterday"),
    );
    await evictDurableObject(gate(tenant.org));
    await expectUnauthorized(await chat(tenant));
  });
});

describe("the gate's own checks", () => {
  const valid: Limits = {
    requests: 10,
    userRequests: 10,
    tokens: 10,
    userTokens: 10,
    budget: 10,
    userBudget: 10,
  };

  it.each([[0], [-1], [1.5], [Number.NaN], [2 ** 53]])(
    "refuses a limit or an estimate of %d, admitting nothing",
    async (bad) => {
      // Called inside the object: limits reach it from checked records, so only a bug sends these.
      await runInDurableObject(gate(unique("org")), (instance: OrgGate) => {
        for (const field of Object.keys(valid) as Array<keyof Limits>) {
          expect(() => instance.admit("key_a", "u", { ...valid, [field]: bad }, 1)).toThrow(
            new RangeError("limits must be positive integers"),
          );
        }
        expect(() => instance.admit("key_a", "u", valid, bad)).toThrow(
          new RangeError("an estimate must be a positive integer"),
        );
        expect(instance.admit("key_a", "u", { requests: 1, userRequests: 1 }, 1)).toEqual({
          admitted: true,
          ticket: expect.stringMatching(/^a:\d{15}:\d{9}$/),
          tokens: 1,
        });
      });
    },
  );
});
