import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { chat, gateway, seedTenant, unique } from "./helpers";

// The isolate's cache of KV records (src/kv.ts): the contract allows reads up to 30 s old, never
// older; the operator's listings read KV itself and every page of it.

const ADMIN = { authorization: "Bearer test-admin-token" };

afterEach(() => {
  vi.useRealTimers();
});

describe("the isolate's record cache", () => {
  it("serves a record for 30 s, then reads KV again", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const tenant = await seedTenant();
    expect((await chat(tenant)).status).toBe(200);
    // Written behind the gateway's back (as `wrangler kv key put` would): no cache eviction.
    await env.GATEWAY_KV.put(`group:${tenant.group}`, JSON.stringify({ models: [] }));
    vi.advanceTimersByTime(29_900);
    expect((await chat(tenant)).status).toBe(200);
    vi.advanceTimersByTime(200);
    expect((await chat(tenant)).status).toBe(403);
  });

  it("does not remember that a record was missing", async () => {
    const tenant = await seedTenant({ grants: ["*"] });
    const model = unique("later");
    expect((await chat(tenant, { model })).status).toBe(400);
    await env.GATEWAY_KV.put(`model:${model}`, "{}");
    expect((await chat(tenant, { model })).status).toBe(200);
  });

  it("shows the operator what KV holds now, not the cached copy", async () => {
    const tenant = await seedTenant({ models: { [unique("model")]: { display_name: "Before" } } });
    expect((await chat(tenant)).status).toBe(200);
    await env.GATEWAY_KV.put(`model:${tenant.model}`, JSON.stringify({ display_name: "After" }));
    const listed = await (
      await gateway("/admin/models", { headers: ADMIN })
    ).json<{
      data: Array<{ id: string; display_name?: string }>;
    }>();
    expect(listed.data.find((model) => model.id === tenant.model)).toEqual({
      id: tenant.model,
      display_name: "After",
    });
  });
});

describe("listings", () => {
  it("list every entry across KV's pages of 1,000", async () => {
    const org = unique("big-org");
    const created_at = new Date().toISOString();
    const hashes = Array.from({ length: 1_001 }, (_, i) => `${org}-${String(i).padStart(4, "0")}`);
    const record = (i: number) => ({ id: `key_${i}`, org, user: "u", group: "g", created_at });
    await Promise.all(
      hashes.map((hash, i) =>
        env.GATEWAY_KV.put(`key:${hash}`, JSON.stringify(record(i)), { metadata: record(i) }),
      ),
    );
    try {
      const listed = await (
        await gateway(`/admin/keys?org=${org}`, { headers: ADMIN })
      ).json<{
        data: Array<{ id: string }>;
      }>();
      expect(listed.data.length).toBe(1_001);
      expect(new Set(listed.data.map((key) => key.id)).size).toBe(1_001);
    } finally {
      await Promise.all(hashes.map((hash) => env.GATEWAY_KV.delete(`key:${hash}`)));
    }
  });
});
