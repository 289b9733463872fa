import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { PermissionDeniedError } from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { OrgRecord, Pricing } from "../src/records";
import {
  chat,
  cue,
  expectGatewayError,
  expectNotForwarded,
  gateway,
  openai,
  seedTenant,
  unique,
  until,
  usageOnce,
  type Tenant,
} from "./helpers";

// Monthly budgets through the Worker's HTTP surface: a scope is admitted while what it has spent
// this calendar month (UTC) is below its budget. Where a test needs the month to turn it fakes Date,
// which the org's gate (in this isolate) reads too.

const ADMIN = { authorization: "Bearer test-admin-token", "content-type": "application/json" };
const PRICING: Pricing = { input_per_mtok: 2, output_per_mtok: 8 };
/**
 * What `chat` costs with PRICING: a one-word prompt and the mock's five-word reply, 2 + 40
 * micro-dollars.
 */
const REQUEST_USD = 0.000042;

const gate = (org: string) => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(org));

afterEach(() => {
  vi.useRealTimers();
});

/** A tenant of a priced model in an org with these limits (request limits that never bind). */
const pricedTenant = (limits: OrgRecord, org?: string) =>
  seedTenant({
    org,
    models: { [unique("priced")]: { pricing: PRICING } },
    orgLimits: { requests_per_minute: 1000, user_requests_per_minute: 1000, ...limits },
  });

/** A chat request's status, its body read. */
async function status(tenant: Tenant, body: Record<string, unknown> = {}) {
  const response = await chat(tenant, body);
  await response.arrayBuffer();
  return response.status;
}

/** Asserts the contract's 403 naming `scope`: no Retry-After, not forwarded. */
async function expectBudgetSpent(tenant: Tenant, scope: "organization" | "user", usd: number) {
  const id = unique("over-budget");
  const response = await chat(tenant, {}, { "x-request-id": id });
  expect(response.headers.get("retry-after")).toBeNull();
  expect(response.headers.get("retry-after-ms")).toBeNull();
  const message = await expectGatewayError(response, 403, "permission_error", "budget_exceeded");
  expect(message).toBe(`Budget reached for this ${scope}: ${usd} USD per month.`);
  await expectNotForwarded(id);
}

describe("monthly budgets", () => {
  it("admit an org's requests while its month's cost is below its budget, then refuse every user", async () => {
    const budget = 2 * REQUEST_USD;
    const tenant = await pricedTenant({ monthly_budget_usd: budget });
    const other = await pricedTenant({ monthly_budget_usd: budget }, tenant.org);
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 1);
    expect(await status(other)).toBe(200);
    expect((await usageOnce(tenant.org, 2)).cost_usd).toBe(budget);
    // Spent exactly: not below the budget any more.
    await expectBudgetSpent(tenant, "organization", budget);
    await expectBudgetSpent(other, "organization", budget);
  });

  it("refuse a user whose month's cost reached the user budget, and only that user", async () => {
    const limits = { user_monthly_budget_usd: REQUEST_USD, monthly_budget_usd: 1 };
    const spender = await pricedTenant(limits);
    const other = await pricedTenant(limits, spender.org);
    expect(await status(spender)).toBe(200);
    await usageOnce(spender.org, 1);
    await expectBudgetSpent(spender, "user", REQUEST_USD);
    expect(await status(other)).toBe(200);
    await usageOnce(spender.org, 2);
    await expectBudgetSpent(other, "user", REQUEST_USD);
  });

  it("win over the request limits, and a refusal consumes none of them", async () => {
    const limits = { requests_per_minute: 2, user_monthly_budget_usd: REQUEST_USD };
    const tenant = await pricedTenant(limits);
    const other = await pricedTenant(limits, tenant.org);
    const third = await pricedTenant(limits, tenant.org);
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 1);
    await expectBudgetSpent(tenant, "user", REQUEST_USD);
    await expectBudgetSpent(tenant, "user", REQUEST_USD);
    // The org's second request of the minute: the refusals took none.
    expect(await status(other)).toBe(200);
    // Now the org's requests are spent too, and the budget still answers.
    await expectBudgetSpent(tenant, "user", REQUEST_USD);
    const limited = await chat(third);
    expect(await expectGatewayError(limited, 429, "rate_limit_error", "rate_limit_exceeded")).toBe(
      "Rate limit reached for this organization: 2 requests per minute.",
    );
  });

  it("let requests already admitted finish: the overshoot is what was in flight", async () => {
    const tenant = await pricedTenant({ monthly_budget_usd: REQUEST_USD });
    // Three at once, each answered 200 ms after it was admitted: none has cost anything yet.
    const statuses = await Promise.all([1, 2, 3].map(() => status(tenant, cue({ delay_ms: 200 }))));
    expect(statuses).toEqual([200, 200, 200]);
    expect((await usageOnce(tenant.org, 3)).cost_usd).toBeCloseTo(3 * REQUEST_USD, 12);
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
  });

  it("reach the openai client as a PermissionDeniedError with code budget_exceeded", async () => {
    const tenant = await pricedTenant({ monthly_budget_usd: REQUEST_USD });
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 1);
    const error = await openai(tenant.key)
      .chat.completions.create({ model: tenant.model, messages: [{ role: "user", content: "hi" }] })
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(PermissionDeniedError);
    const denied = error as PermissionDeniedError;
    expect(denied.status).toBe(403);
    expect(denied.code).toBe("budget_exceeded");
    expect(denied.type).toBe("permission_error");
    expect(denied.message).toBe(`403 Budget reached for this organization: ${REQUEST_USD} USD per month.`);
  });
});

describe("the month of a budget", () => {
  it("starts afresh at the turn of the UTC month, and what was spent survives a restart on either side", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.UTC(2030, 0, 31, 23, 59, 0) });
    const tenant = await pricedTenant({ monthly_budget_usd: REQUEST_USD });
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 1);
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
    await evictDurableObject(gate(tenant.org));
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
    vi.advanceTimersByTime(59_999);
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
    // February 1st, 00:00:00.000 UTC.
    vi.advanceTimersByTime(1);
    expect(await status(tenant)).toBe(200);
    // The report's default range is this month: February's one request.
    await usageOnce(tenant.org, 1);
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
    await evictDurableObject(gate(tenant.org));
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
  });

  it("charges a request that ended in the old month to it, though its usage is written in the new one", async () => {
    // 20 ms before the turn: the request's usage is read at its end and written about 50 ms later.
    vi.useFakeTimers({ toFake: ["Date"], now: Date.UTC(2030, 2, 31, 23, 59, 59, 980) });
    const tenant = await pricedTenant({ monthly_budget_usd: REQUEST_USD });
    expect(await status(tenant)).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 20));
    vi.setSystemTime(Date.UTC(2030, 3, 1));
    // Written, as March's: the report of March's last hour has it.
    await until(async () => {
      const range = "from=2030-03-31T23:00:00.000Z&to=2030-04-01T00:00:00.000Z";
      const response = await gateway(`/admin/orgs/${tenant.org}/usage?${range}`, { headers: ADMIN });
      expect((await response.json<{ total: { requests: number } }>()).total.requests).toBe(1);
    });
    // April has spent nothing.
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 1);
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
  });
});

describe("budget changes", () => {
  const putOrg = (org: string, record: OrgRecord) =>
    gateway(`/admin/orgs/${org}`, { method: "PUT", headers: ADMIN, body: JSON.stringify(record) });

  it("take effect at the very next request where the admin API was called", async () => {
    const tenant = await pricedTenant({ monthly_budget_usd: REQUEST_USD });
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 1);
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
    expect((await putOrg(tenant.org, { monthly_budget_usd: 3 * REQUEST_USD })).status).toBe(200);
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 2);
    expect((await putOrg(tenant.org, { user_monthly_budget_usd: 2 * REQUEST_USD })).status).toBe(200);
    await expectBudgetSpent(tenant, "user", 2 * REQUEST_USD);
  });

  it("take effect within 30 s where KV was written elsewhere", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const tenant = await pricedTenant({ monthly_budget_usd: REQUEST_USD });
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 1);
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
    // As another location's admin call (or `wrangler kv key put`) would: this isolate's copy stays.
    await env.GATEWAY_KV.put(`org:${tenant.org}`, JSON.stringify({ monthly_budget_usd: 1 }));
    vi.advanceTimersByTime(29_900);
    await expectBudgetSpent(tenant, "organization", REQUEST_USD);
    vi.advanceTimersByTime(200);
    expect(await status(tenant)).toBe(200);
  });
});

describe("the gate's stored spend", () => {
  it("counts a month's row it cannot read as a spent budget, and changes nothing without a budget", async () => {
    const tenant = await pricedTenant({ monthly_budget_usd: 1 });
    expect(await status(tenant)).toBe(200);
    await usageOnce(tenant.org, 1);
    const now = new Date();
    const month = (now.getUTCFullYear() - 1970) * 12 + now.getUTCMonth();
    await runInDurableObject(gate(tenant.org), (_, state) => {
      // A fraction where the gate only ever writes whole nano-dollars.
      state.storage.sql.exec("INSERT INTO spend VALUES (?, 'someone', 0.5)", month);
    });
    await evictDurableObject(gate(tenant.org));
    const errors = vi.spyOn(console, "error");
    try {
      await expectBudgetSpent(tenant, "organization", 1);
      // The operator's one sign of it, naming the month.
      expect(errors.mock.calls).toEqual([[JSON.stringify({ message: "month spend unreadable", month })]]);
    } finally {
      errors.mockRestore();
    }
    // Only user budgets: the unreadable row is someone else's.
    const put = await gateway(`/admin/orgs/${tenant.org}`, {
      method: "PUT",
      headers: ADMIN,
      body: JSON.stringify({ user_monthly_budget_usd: 1 }),
    });
    expect(put.status).toBe(200);
    expect(await status(tenant)).toBe(200);
    // Until the user's own row cannot be read.
    await runInDurableObject(gate(tenant.org), (_, state) => {
      state.storage.sql.exec(
        "UPDATE spend SET cost_nanos = 0.5 WHERE month = ? AND user_id = ?",
        month,
        tenant.user,
      );
    });
    await evictDurableObject(gate(tenant.org));
    await expectBudgetSpent(tenant, "user", 1);
  });
});
