import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hashKey } from "../src/auth";
import {
  chat,
  envelope,
  expectGatewayError,
  expectUnauthorized,
  gateway,
  gatewayWith,
  namedUpstream,
  routedTenant,
  seedTenant,
  unique,
  upstreamRequests,
} from "./helpers";

const ADMIN = { authorization: "Bearer test-admin-token", "content-type": "application/json" };

function adminCall(method: string, path: string, body?: unknown, headers: Record<string, string> = ADMIN) {
  return gateway(`/admin${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function expectTyped(response: Response, status: number, code: string, param: string | null = null) {
  expect(response.status).toBe(status);
  const body = await response.json<{ error: { message: string } }>();
  expect(body).toEqual(envelope(expect.any(String), code, param));
  return body.error.message;
}

/** A model and a group granting it, written through the admin API. */
async function catalog() {
  const model = unique("model");
  const group = unique("group");
  expect((await adminCall("PUT", `/models/${model}`, { display_name: "Test model" })).status).toBe(200);
  expect((await adminCall("PUT", `/groups/${group}`, { models: [model] })).status).toBe(200);
  return { model, group };
}

describe("admin auth", () => {
  it("does not exist without ADMIN_TOKEN", async () => {
    const response = await gatewayWith({ ADMIN_TOKEN: undefined }, "/admin/models", { headers: ADMIN });
    await expectTyped(response, 404, "not_found");
  });

  for (const [cause, authorization] of [
    ["no token", null],
    ["a wrong token", "Bearer wrong-admin-token"],
    ["a longer wrong token", "Bearer test-admin-token-and-more"],
    ["an API key", "Bearer sk-gw-0000000000000000000000000000000000000000"],
  ] as const) {
    it(`answers the plain 401 to ${cause}`, async () => {
      const headers: Record<string, string> = authorization ? { authorization } : {};
      await expectUnauthorized(await adminCall("GET", "/models", undefined, headers));
    });
  }

  it("answers 404 for an unknown admin path and 405 for a wrong method", async () => {
    await expectTyped(await adminCall("GET", "/nothing"), 404, "not_found");
    const response = await adminCall("POST", "/models");
    expect(response.headers.get("allow")).toBe("GET");
    await expectTyped(response, 405, "method_not_allowed");
  });
});

describe("admin keys", () => {
  it("creates a key that works at once, returned once, stored only by hash", async () => {
    const { model, group } = await catalog();
    const org = unique("org");
    const response = await adminCall("POST", "/keys", { org, user: "alice", group, name: "ci" });
    expect(response.status).toBe(201);
    const created = await response.json<{ id: string; key: string; org: string; created_at: string }>();
    expect(created.key).toMatch(/^sk-gw-[0-9A-Za-z]{40}$/);
    expect(created).toMatchObject({ org, user: "alice", group, name: "ci" });
    const hash = await hashKey(created.key);
    const stored = await env.GATEWAY_KV.get(`key:${hash}`, "json");
    expect(stored).toEqual({
      id: created.id,
      org,
      user: "alice",
      group,
      name: "ci",
      created_at: created.created_at,
    });
    expect(await env.GATEWAY_KV.get(`keyid:${created.id}`, "json")).toEqual({ hash });
    const tenant = { key: created.key, model, org, user: "alice", group, keyId: created.id };
    expect((await chat(tenant)).status).toBe(200);
  });

  it("lists an org's keys without the key or its hash", async () => {
    const { group } = await catalog();
    const org = unique("org");
    const first = await (
      await adminCall("POST", "/keys", { org, user: "a", group })
    ).json<{ id: string; key: string }>();
    const second = await (
      await adminCall("POST", "/keys", { org, user: "b", group })
    ).json<{ id: string; key: string }>();
    await adminCall("POST", "/keys", { org: unique("other"), user: "c", group });
    const listed = await (
      await adminCall("GET", `/keys?org=${org}`)
    ).json<{ data: Array<Record<string, unknown>> }>();
    expect(listed.data.map((k) => k.id).sort()).toEqual([first.id, second.id].sort());
    const text = JSON.stringify(listed);
    for (const { key } of [first, second]) {
      expect(text).not.toContain(key);
      expect(text).not.toContain(await hashKey(key));
    }
  });

  it("revokes a key so that its very next request answers 401", async () => {
    const { model, group } = await catalog();
    const org = unique("org");
    const created = await (
      await adminCall("POST", "/keys", { org, user: "u", group })
    ).json<{ id: string; key: string }>();
    const tenant = { key: created.key, model, org, user: "u", group, keyId: created.id };
    expect((await chat(tenant)).status).toBe(200);
    const revoked = await adminCall("DELETE", `/keys/${created.id}`);
    expect(revoked.status).toBe(200);
    expect(await revoked.json()).toMatchObject({ id: created.id, revoked_at: expect.any(String) });
    await expectUnauthorized(await chat(tenant));
  });

  it("refuses a revoked key even while KV still serves its old record", async () => {
    const tenant = await seedTenant();
    expect((await chat(tenant)).status).toBe(200);
    // Revoke in the org's RateLimiter only, as if KV had not caught up in this location yet.
    await env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(tenant.org)).revoke(tenant.keyId);
    await expectUnauthorized(await chat(tenant));
    await expectUnauthorized(
      await gateway("/v1/models", { headers: { authorization: `Bearer ${tenant.key}` } }),
    );
  });

  it("revokes and lists a key with the longest ids and name there can be", async () => {
    const { group } = await catalog();
    const org = "o".repeat(128);
    const name = "€".repeat(66);
    const created = await (
      await adminCall("POST", "/keys", { org, user: "u".repeat(128), group, name })
    ).json<{ id: string }>();
    expect((await adminCall("DELETE", `/keys/${created.id}`)).status).toBe(200);
    const listed = await (
      await adminCall("GET", `/keys?org=${org}`)
    ).json<{ data: Array<{ id: string; revoked_at?: string }> }>();
    expect(listed.data).toEqual([
      expect.objectContaining({ id: created.id, revoked_at: expect.any(String) }),
    ]);
  });

  it("mints keys of 40 and ids of 20 base62 characters, drawn from the whole alphabet", async () => {
    const { group } = await catalog();
    const org = unique("org");
    const created = await Promise.all(
      Array.from({ length: 20 }, async () =>
        (await adminCall("POST", "/keys", { org, user: "u", group })).json<{ id: string; key: string }>(),
      ),
    );
    for (const { id, key } of created) {
      expect(key).toMatch(/^sk-gw-[0-9A-Za-z]{40}$/);
      expect(id).toMatch(/^key_[0-9A-Za-z]{20}$/);
    }
    // 800 characters from 62: all but a handful appear, whatever the draw.
    const seen = new Set(created.flatMap(({ key }) => [...key.slice("sk-gw-".length)]));
    expect(seen.size).toBeGreaterThan(50);
  });

  it("keeps the key record as its KV entry's metadata, so a listing reads no record", async () => {
    const { group } = await catalog();
    const created = await (
      await adminCall("POST", "/keys", { org: unique("org"), user: "u", group, name: "ci" })
    ).json<{ key: string } & Record<string, unknown>>();
    const { key, ...record } = created;
    const hash = await hashKey(key);
    const stored = await env.GATEWAY_KV.getWithMetadata(`key:${hash}`, "json");
    expect(stored).toEqual({ value: record, metadata: record, cacheStatus: null });
    await adminCall("DELETE", `/keys/${record.id}`);
    const revoked = await env.GATEWAY_KV.getWithMetadata<Record<string, unknown>>(`key:${hash}`, "json");
    expect(revoked.metadata).toEqual(revoked.value);
    expect(revoked.value).toHaveProperty("revoked_at");
  });

  it("lists keys written by hand as KV holds them now, oldest first, a broken one first of all", async () => {
    const org = unique("org");
    const tenant = await seedTenant({ org });
    const hashOf = async (id: string) =>
      (await env.GATEWAY_KV.get<{ hash: string }>(`keyid:${id}`, "json"))!.hash;
    // Hashes in the reverse order of their creation times: KV lists by name, the admin API by age.
    const hand = (i: number) => ({
      id: `key_hand${i}`,
      org,
      user: "u",
      group: tenant.group,
      created_at: `2020-01-0${i}T00:00:00.000Z`,
    });
    const prefix = `f${unique("hand")}`;
    for (const i of [1, 2, 3]) await env.GATEWAY_KV.put(`key:${prefix}${4 - i}`, JSON.stringify(hand(i)));
    const broken = `${"0".repeat(60)}${unique("x")}`;
    await env.GATEWAY_KV.put(`key:${broken}`, "not json");
    try {
      // Cached by a request, then revoked by hand: the listing must show KV's record.
      expect((await chat(tenant)).status).toBe(200);
      const hash = await hashOf(tenant.keyId);
      const record = (await env.GATEWAY_KV.get<Record<string, unknown>>(`key:${hash}`, "json"))!;
      const revoked_at = "2030-01-01T00:00:00.000Z";
      await env.GATEWAY_KV.put(`key:${hash}`, JSON.stringify({ ...record, revoked_at }));
      const listed = await (
        await adminCall("GET", `/keys?org=${org}`)
      ).json<{ data: Array<{ id?: string; hash?: string; revoked_at?: string }> }>();
      const mine = listed.data.filter(
        (entry) => entry.id?.startsWith("key_hand") || entry.hash === broken || entry.id === tenant.keyId,
      );
      expect(mine.map((entry) => entry.id ?? entry.hash)).toEqual([
        broken,
        "key_hand1",
        "key_hand2",
        "key_hand3",
        tenant.keyId,
      ]);
      expect(mine[0]).toEqual({ hash: broken, invalid: true, problem: "not valid JSON" });
      expect(mine[4]).toMatchObject({ id: tenant.keyId, revoked_at });
    } finally {
      await env.GATEWAY_KV.delete(`key:${broken}`);
    }
  });

  it("keeps a key's first revocation time: revoked twice, or revoked by hand in KV first", async () => {
    const { group } = await catalog();
    const org = unique("org");
    const create = async () =>
      (await adminCall("POST", "/keys", { org, user: "u", group })).json<{ id: string; key: string }>();
    const twice = await create();
    const first = await (await adminCall("DELETE", `/keys/${twice.id}`)).json<{ revoked_at: string }>();
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await (await adminCall("DELETE", `/keys/${twice.id}`)).json()).toMatchObject(first);

    const byHand = await create();
    const hash = await hashKey(byHand.key);
    const tenant = { key: byHand.key, model: "", org, user: "u", group, keyId: byHand.id };
    // The isolate caches the record on this request; KV then changes behind its back.
    await chat(tenant);
    const record = (await env.GATEWAY_KV.get<Record<string, unknown>>(`key:${hash}`, "json"))!;
    const revoked_at = "2020-01-01T00:00:00.000Z";
    await env.GATEWAY_KV.put(`key:${hash}`, JSON.stringify({ ...record, revoked_at }));
    expect(await (await adminCall("DELETE", `/keys/${byHand.id}`)).json()).toMatchObject({ revoked_at });
  });

  it("answers 404 for revoking a key whose record is gone", async () => {
    const tenant = await seedTenant();
    const { hash } = (await env.GATEWAY_KV.get<{ hash: string }>(`keyid:${tenant.keyId}`, "json"))!;
    await env.GATEWAY_KV.delete(`key:${hash}`);
    await expectTyped(await adminCall("DELETE", `/keys/${tenant.keyId}`), 404, "not_found");
  });

  it("answers 404, not 500, for a key id too long to exist", async () => {
    await expectTyped(await adminCall("DELETE", `/keys/${"k".repeat(600)}`), 404, "not_found");
  });

  it("refuses a model id over 200 bytes", async () => {
    await expectTyped(await adminCall("PUT", `/models/${"模".repeat(190)}`, {}), 400, "invalid_body");
  });

  it("answers 404 naming an unknown key to revoke", async () => {
    expect(await expectTyped(await adminCall("DELETE", "/keys/key_nope"), 404, "not_found")).toBe(
      "Key 'key_nope' not found.",
    );
  });

  // Each refusal's exact message: the operator reads it to fix the request.
  const bad: Array<[string, unknown, string, string | null, string]> = [
    [
      "an unknown group",
      { org: "o", user: "u", group: "no-such-group" },
      "group_not_found",
      "group",
      "Group 'no-such-group' not found.",
    ],
    [
      "a missing user",
      { org: "o", group: "g" },
      "invalid_body",
      "user",
      "Missing required parameter 'user'.",
    ],
    [
      "an org id with spaces",
      { org: "a b", user: "u", group: "g" },
      "invalid_body",
      "org",
      "Invalid 'org': must be 1-128 letters, digits or ._@:+- starting with a letter or digit.",
    ],
    [
      "an unknown field",
      { org: "o", user: "u", group: "g", admin: true },
      "invalid_body",
      "admin",
      "Unknown parameter 'admin'.",
    ],
    [
      "a name that is not a string",
      { org: "o", user: "u", group: "g", name: 7 },
      "invalid_body",
      "name",
      "Invalid 'name': must be a string.",
    ],
    [
      "a name over 200 bytes",
      { org: "o", user: "u", group: "g", name: "€".repeat(67) },
      "invalid_body",
      "name",
      "Invalid 'name': must be at most 200 bytes.",
    ],
    [
      "a name with control characters",
      { org: "o", user: "u", group: "g", name: "a\u0001b" },
      "invalid_body",
      "name",
      "Invalid 'name': must not contain control characters.",
    ],
  ];
  for (const [what, body, code, param, message] of bad) {
    it(`refuses a key with ${what}, writing nothing`, async () => {
      const before = (await env.GATEWAY_KV.list({ prefix: "keyid:" })).keys.length;
      expect(await expectTyped(await adminCall("POST", "/keys", body), 400, code, param)).toBe(message);
      expect((await env.GATEWAY_KV.list({ prefix: "keyid:" })).keys.length).toBe(before);
    });
  }

  it("refuses an oversized body with 413", async () => {
    const response = await adminCall("POST", "/keys", {
      org: "o",
      user: "u",
      group: "g",
      name: "x".repeat(70_000),
    });
    await expectTyped(response, 413, "request_too_large");
  });
});

describe("admin models and groups", () => {
  it("puts, lists and deletes models, including ids with slashes", async () => {
    const id = `${unique("provider")}/gpt-x`;
    const put = await adminCall("PUT", `/models/${id}`, {
      display_name: "GPT X",
      upstream_model: "gpt-x-2025",
    });
    expect(await put.json()).toEqual({ id, display_name: "GPT X", upstream_model: "gpt-x-2025" });
    expect(await env.GATEWAY_KV.get(`model:${id}`, "json")).toEqual({
      display_name: "GPT X",
      upstream_model: "gpt-x-2025",
    });
    const listed = await (await adminCall("GET", "/models")).json<{ data: Array<{ id: string }> }>();
    expect(listed.data).toContainEqual({ id, display_name: "GPT X", upstream_model: "gpt-x-2025" });
    expect((await adminCall("DELETE", `/models/${id}`)).status).toBe(200);
    expect(await env.GATEWAY_KV.get(`model:${id}`)).toBeNull();
  });

  it("puts a model's pricing, which every request is then costed with", async () => {
    const id = unique("priced");
    const pricing = { input_per_mtok: 0.15, output_per_mtok: 0.6, cached_input_per_mtok: 0.075 };
    expect(await (await adminCall("PUT", `/models/${id}`, { pricing })).json()).toEqual({ id, pricing });
    expect(await env.GATEWAY_KV.get(`model:${id}`, "json")).toEqual({ pricing });
  });

  for (const [what, pricing, param, message] of [
    [
      "a negative price",
      { input_per_mtok: -1, output_per_mtok: 1 },
      "pricing.input_per_mtok",
      "must be a number from 0 to 10000",
    ],
    [
      "a price as text",
      { input_per_mtok: 1, output_per_mtok: "2" },
      "pricing.output_per_mtok",
      "must be a number",
    ],
    ["no output price", { input_per_mtok: 1 }, "pricing.output_per_mtok", null],
    [
      "an unknown price",
      { input_per_mtok: 1, output_per_mtok: 1, reasoning_per_mtok: 1 },
      "pricing.reasoning_per_mtok",
      null,
    ],
  ] as const) {
    it(`refuses pricing with ${what}, writing nothing`, async () => {
      const id = unique("bad-price");
      const response = await adminCall("PUT", `/models/${id}`, { pricing });
      const text = await expectGatewayError(response, 400, "invalid_request_error", "invalid_body", param);
      if (message) expect(text).toBe(`Invalid '${param}': ${message}.`);
      expect(await env.GATEWAY_KV.get(`model:${id}`)).toBeNull();
    });
  }

  it("accepts {} as a model", async () => {
    const id = unique("bare");
    expect((await adminCall("PUT", `/models/${id}`, {})).status).toBe(200);
    expect(await env.GATEWAY_KV.get(`model:${id}`, "json")).toEqual({});
  });

  it("refuses a group naming an unknown model, writing nothing", async () => {
    const { model } = await catalog();
    const group = unique("group");
    await expectTyped(
      await adminCall("PUT", `/groups/${group}`, { models: [model, "ghost"] }),
      400,
      "model_not_found",
      "models[1]",
    );
    expect(await env.GATEWAY_KV.get(`group:${group}`)).toBeNull();
  });

  it("refuses a group listing a model twice", async () => {
    const { model } = await catalog();
    await expectTyped(
      await adminCall("PUT", `/groups/${unique("g")}`, { models: [model, model] }),
      400,
      "invalid_body",
      "models",
    );
  });

  it('grants every model with "*", models added after the group too', async () => {
    const group = unique("group");
    expect(await (await adminCall("PUT", `/groups/${group}`, { models: ["*"] })).json()).toEqual({
      id: group,
      models: ["*"],
    });
    const org = unique("org");
    const created = await (
      await adminCall("POST", "/keys", { org, user: "u", group })
    ).json<{ id: string; key: string }>();
    // Added to the catalog only now, after the group was written.
    const model = unique("later-model");
    expect((await adminCall("PUT", `/models/${model}`, { display_name: "Later" })).status).toBe(200);
    const tenant = { key: created.key, model, org, user: "u", group, keyId: created.id };
    expect((await chat(tenant)).status).toBe(200);
    const listed = await gateway("/v1/models", { headers: { authorization: `Bearer ${created.key}` } });
    expect(listed.status).toBe(200);
    const ids = (await listed.json<{ data: Array<{ id: string }> }>()).data.map((m) => m.id);
    expect(ids).toContain(model);
  });

  it("refuses to delete a model a group grants, or a group a key uses", async () => {
    const { model, group } = await catalog();
    await expectTyped(await adminCall("DELETE", `/models/${model}`), 409, "model_in_use");
    const created = await (
      await adminCall("POST", "/keys", { org: unique("org"), user: "u", group })
    ).json<{ id: string }>();
    await expectTyped(await adminCall("DELETE", `/groups/${group}`), 409, "group_in_use");
    await adminCall("DELETE", `/keys/${created.id}`);
    expect((await adminCall("DELETE", `/groups/${group}`)).status).toBe(200);
    expect((await adminCall("DELETE", `/models/${model}`)).status).toBe(200);
  });

  it("deletes an unused group or upstream though KV holds a key or model record that cannot be read", async () => {
    // Written by hand, and broken: they hold nothing.
    await env.GATEWAY_KV.put(`key:${await hashKey(unique("sk-broken"))}`, "{}");
    await env.GATEWAY_KV.put(`model:${unique("model")}`, JSON.stringify({ upstreams: 5 }));
    const group = unique("group");
    expect((await adminCall("PUT", `/groups/${group}`, { models: [] })).status).toBe(200);
    const deletedGroup = await adminCall("DELETE", `/groups/${group}`);
    expect([deletedGroup.status, await deletedGroup.json()]).toEqual([200, { id: group, deleted: true }]);
    const upstream = unique("up");
    const record = { base_url: "https://x.example/v1", auth: "none" };
    expect((await adminCall("PUT", `/upstreams/${upstream}`, record)).status).toBe(200);
    const deletedUpstream = await adminCall("DELETE", `/upstreams/${upstream}`);
    expect([deletedUpstream.status, await deletedUpstream.json()]).toEqual([
      200,
      { id: upstream, deleted: true },
    ]);
  });

  it("names what holds a model or group in use, and deletes what nothing holds", async () => {
    // An active key of another group, which holds nothing here.
    await seedTenant();
    const { model, group } = await catalog();
    const second = unique("group");
    await adminCall("PUT", `/groups/${second}`, { models: [model] });
    const [first, last] = [group, second].sort();
    expect(await expectTyped(await adminCall("DELETE", `/models/${model}`), 409, "model_in_use")).toBe(
      `Model '${model}' is granted by group '${first}', '${last}'; remove it there first.`,
    );
    const org = unique("org");
    const keys = await Promise.all(
      [1, 2, 3].map(async () =>
        (await adminCall("POST", "/keys", { org, user: "u", group })).json<{ id: string }>(),
      ),
    );
    await adminCall("DELETE", `/keys/${keys[0]!.id}`);
    expect(await expectTyped(await adminCall("DELETE", `/groups/${group}`), 409, "group_in_use")).toBe(
      `Group '${group}' is used by 2 active key(s); revoke them first.`,
    );
    for (const key of keys.slice(1)) await adminCall("DELETE", `/keys/${key.id}`);
    const deleted = await adminCall("DELETE", `/groups/${group}`);
    expect(await deleted.json()).toEqual({ id: group, deleted: true });
    expect(await env.GATEWAY_KV.get(`group:${group}`)).toBeNull();
    await adminCall("DELETE", `/groups/${second}`);
    expect(await (await adminCall("DELETE", `/models/${model}`)).json()).toEqual({
      id: model,
      deleted: true,
    });
  });

  it("answers 404 naming an unknown model or group to delete, and 400 for a bad id", async () => {
    expect(await expectTyped(await adminCall("DELETE", "/models/ghost-model"), 404, "not_found")).toBe(
      "Model 'ghost-model' not found.",
    );
    expect(await expectTyped(await adminCall("DELETE", "/groups/ghost-group"), 404, "not_found")).toBe(
      "Group 'ghost-group' not found.",
    );
    expect(
      await expectTyped(await adminCall("PUT", "/groups/a%20b", { models: [] }), 400, "invalid_body"),
    ).toBe("Invalid group id: must be 1-128 letters, digits or ._@:+- starting with a letter or digit.");
  });

  for (const [path, allow] of [
    ["/keys", "GET, POST"],
    ["/keys/key_x", "DELETE"],
    ["/models", "GET"],
    ["/models/a/b", "PUT, DELETE"],
    ["/groups", "GET"],
    ["/groups/g", "PUT, DELETE"],
    ["/orgs/o", "GET, PUT"],
    ["/orgs/o/usage", "GET"],
    ["/upstreams", "GET"],
    ["/upstreams/u", "PUT, DELETE"],
  ] as const) {
    it(`answers 405 with Allow: ${allow} for a wrong method on ${path}`, async () => {
      const response = await adminCall("PATCH", path, {});
      expect(response.headers.get("allow")).toBe(allow);
      await expectTyped(response, 405, "method_not_allowed");
    });
  }

  for (const [method, path, what] of [
    ["PUT", "/models/", "model"],
    ["DELETE", "/models/", "model"],
    ["DELETE", "/groups/", "group"],
    ["GET", "/orgs/", "org"],
    ["PUT", "/orgs/", "org"],
    ["GET", "/keys?org=", "org"],
  ] as const) {
    it(`names the ${what} id it refuses on ${method} ${path}`, async () => {
      const id = what === "model" ? "m".repeat(201) : "a%20b";
      const tail = path.endsWith("=") ? id : `${id}`;
      const message = await expectTyped(
        await adminCall(method, `${path}${tail}`, method === "PUT" ? {} : undefined),
        400,
        "invalid_body",
      );
      expect(message).toMatch(new RegExp(`^Invalid ${what} id: must `));
    });
  }

  it("names the org id it refuses on the usage report", async () => {
    const message = await expectTyped(await adminCall("GET", "/orgs/a%20b/usage"), 400, "invalid_body");
    expect(message).toMatch(/^Invalid org id: must /);
  });

  it("refuses a group whose first model is unknown", async () => {
    await expectTyped(
      await adminCall("PUT", `/groups/${unique("group")}`, { models: ["ghost"] }),
      400,
      "model_not_found",
      "models[0]",
    );
  });

  it("reads KV itself, not this isolate's cached copy, for every check and listing", async () => {
    const tenant = await seedTenant({ org: unique("org") });
    // Cached by a request: key, model, group and org.
    expect((await chat(tenant)).status).toBe(200);
    await env.GATEWAY_KV.put(`org:${tenant.org}`, JSON.stringify({ requests_per_minute: 7 }));
    expect(await (await adminCall("GET", `/orgs/${tenant.org}`)).json()).toEqual({
      id: tenant.org,
      requests_per_minute: 7,
    });
    const other = unique("model");
    await env.GATEWAY_KV.put(`model:${other}`, "{}");
    await env.GATEWAY_KV.put(`group:${tenant.group}`, JSON.stringify({ models: [other] }));
    const groups = await (await adminCall("GET", "/groups")).json<{ object: string; data: unknown[] }>();
    expect(groups.object).toBe("list");
    expect(groups.data).toContainEqual({ id: tenant.group, models: [other] });
    // The group no longer grants the cached model, so it can go; then it is gone for the admin API too.
    expect((await adminCall("DELETE", `/models/${tenant.model}`)).status).toBe(200);
    await expectTyped(await adminCall("DELETE", `/models/${tenant.model}`), 404, "not_found");
    await expectTyped(
      await adminCall("PUT", `/groups/${unique("group")}`, { models: [tenant.model] }),
      400,
      "model_not_found",
      "models[0]",
    );
    // A group deleted by hand: no new key may name it.
    await env.GATEWAY_KV.delete(`group:${tenant.group}`);
    await expectTyped(
      await adminCall("POST", "/keys", { org: tenant.org, user: "u", group: tenant.group }),
      400,
      "group_not_found",
      "group",
    );
    await expectTyped(await adminCall("DELETE", `/groups/${tenant.group}`), 404, "not_found");
  });

  describe("each check reads KV itself, the first read after a record changed by hand in KV, though a request has just cached it", () => {
    /** A tenant whose model routes to a named upstream; a request has cached all their records. */
    async function cachedTenant() {
      const upstream = await namedUpstream();
      const tenant = await routedTenant([upstream]);
      expect((await chat(tenant)).status).toBe(200);
      return { ...tenant, upstream };
    }

    it("deleting a model deleted by hand: 404", async () => {
      const { model } = await cachedTenant();
      await env.GATEWAY_KV.delete(`model:${model}`);
      expect(await expectTyped(await adminCall("DELETE", `/models/${model}`), 404, "not_found")).toBe(
        `Model '${model}' not found.`,
      );
    });

    it("deleting a model its group no longer grants (changed by hand): deleted", async () => {
      const { model, group } = await cachedTenant();
      await env.GATEWAY_KV.put(`group:${group}`, JSON.stringify({ models: [] }));
      const response = await adminCall("DELETE", `/models/${model}`);
      expect([response.status, await response.json()]).toEqual([200, { id: model, deleted: true }]);
    });

    it("granting a model deleted by hand: 400 model_not_found", async () => {
      const { model } = await cachedTenant();
      await env.GATEWAY_KV.delete(`model:${model}`);
      const response = await adminCall("PUT", `/groups/${unique("group")}`, { models: [model] });
      expect(await expectTyped(response, 400, "model_not_found", "models[0]")).toBe(
        `Model '${model}' not found.`,
      );
    });

    it("routing a model to an upstream deleted by hand: 400 upstream_not_found", async () => {
      const { upstream } = await cachedTenant();
      await env.GATEWAY_KV.delete(`upstream:${upstream}`);
      const response = await adminCall("PUT", `/models/${unique("model")}`, {
        upstreams: [{ upstream, model: "m" }],
      });
      expect(await expectTyped(response, 400, "upstream_not_found", "upstreams[0].upstream")).toBe(
        `Upstream '${upstream}' not found.`,
      );
    });
  });

  it("lists groups", async () => {
    const { model, group } = await catalog();
    const listed = await (await adminCall("GET", "/groups")).json<{ data: unknown[] }>();
    expect(listed.data).toContainEqual({ id: group, models: [model] });
  });
});

describe("admin orgs", () => {
  it("shows an org without a record as no fields (the defaults apply), and a bad record as invalid", async () => {
    const org = unique("org");
    expect(await (await adminCall("GET", `/orgs/${org}`)).json()).toEqual({ id: org });
    await env.GATEWAY_KV.put(`org:${org}`, JSON.stringify({ requests_per_minute: "many" }));
    expect(await (await adminCall("GET", `/orgs/${org}`)).json()).toEqual({
      id: org,
      invalid: true,
      problem: expect.stringContaining("requests_per_minute"),
    });
  });

  it("puts and gets limits that the rate limiter then applies", async () => {
    const { model, group } = await catalog();
    const org = unique("org");
    const put = await adminCall("PUT", `/orgs/${org}`, {
      requests_per_minute: 5,
      user_requests_per_minute: 1,
    });
    expect(await put.json()).toEqual({ id: org, requests_per_minute: 5, user_requests_per_minute: 1 });
    expect(await (await adminCall("GET", `/orgs/${org}`)).json()).toEqual({
      id: org,
      requests_per_minute: 5,
      user_requests_per_minute: 1,
    });
    const created = await (
      await adminCall("POST", "/keys", { org, user: "u", group })
    ).json<{ id: string; key: string }>();
    const tenant = { key: created.key, model, org, user: "u", group, keyId: created.id };
    expect((await chat(tenant)).status).toBe(200);
    expect((await chat(tenant)).status).toBe(429);
  });

  it("puts and gets token limits and budgets, fractions of a dollar included", async () => {
    const org = unique("org");
    const record = {
      tokens_per_minute: 50_000,
      user_tokens_per_minute: 10_000,
      monthly_budget_usd: 12.5,
      user_monthly_budget_usd: 0.01,
    };
    expect(await (await adminCall("PUT", `/orgs/${org}`, record)).json()).toEqual({ id: org, ...record });
    expect(await (await adminCall("GET", `/orgs/${org}`)).json()).toEqual({ id: org, ...record });
    expect(JSON.parse((await env.GATEWAY_KV.get(`org:${org}`))!)).toEqual(record);
  });

  for (const [what, body, param, message] of [
    [
      "a negative limit",
      { requests_per_minute: -1 },
      "requests_per_minute",
      "Invalid 'requests_per_minute': must be a positive integer.",
    ],
    [
      "a zero limit",
      { user_requests_per_minute: 0 },
      "user_requests_per_minute",
      "Invalid 'user_requests_per_minute': must be a positive integer.",
    ],
    [
      "a fractional limit",
      { requests_per_minute: 1.5 },
      "requests_per_minute",
      "Invalid 'requests_per_minute': must be a positive integer.",
    ],
    [
      "a string limit",
      { requests_per_minute: "10" },
      "requests_per_minute",
      "Invalid 'requests_per_minute': must be a positive integer.",
    ],
    [
      "a limit over 10,000,000",
      { requests_per_minute: 10_000_001 },
      "requests_per_minute",
      "Invalid 'requests_per_minute': must be at most 10000000.",
    ],
    [
      "a fractional token limit",
      { tokens_per_minute: 1.5 },
      "tokens_per_minute",
      "Invalid 'tokens_per_minute': must be a positive integer.",
    ],
    [
      "a zero user token limit",
      { user_tokens_per_minute: 0 },
      "user_tokens_per_minute",
      "Invalid 'user_tokens_per_minute': must be a positive integer.",
    ],
    [
      "a token limit over 10,000,000,000",
      { tokens_per_minute: 10_000_000_001 },
      "tokens_per_minute",
      "Invalid 'tokens_per_minute': must be at most 10000000000.",
    ],
    [
      "a string budget",
      { monthly_budget_usd: "5" },
      "monthly_budget_usd",
      "Invalid 'monthly_budget_usd': must be a positive number.",
    ],
    [
      "a zero budget",
      { monthly_budget_usd: 0 },
      "monthly_budget_usd",
      "Invalid 'monthly_budget_usd': must be a positive number.",
    ],
    [
      "a negative user budget",
      { user_monthly_budget_usd: -1 },
      "user_monthly_budget_usd",
      "Invalid 'user_monthly_budget_usd': must be a positive number.",
    ],
    [
      "a budget over 1,000,000",
      { monthly_budget_usd: 1_000_001 },
      "monthly_budget_usd",
      "Invalid 'monthly_budget_usd': must be at most 1000000.",
    ],
  ] as const) {
    it(`refuses ${what}, writing nothing`, async () => {
      const org = unique("org");
      const response = await adminCall("PUT", `/orgs/${org}`, body);
      expect(await expectTyped(response, 400, "invalid_body", param)).toBe(message);
      expect(await env.GATEWAY_KV.get(`org:${org}`)).toBeNull();
    });
  }
});

describe("admin writes take effect at the very next request in this isolate", () => {
  /** A key of a fresh org, in a group granting a fresh model, all through the admin API. */
  async function adminTenant(orgLimits: { requests_per_minute?: number } = { requests_per_minute: 100 }) {
    const { model, group } = await catalog();
    const org = unique("org");
    expect((await adminCall("PUT", `/orgs/${org}`, orgLimits)).status).toBe(200);
    const created = await (
      await adminCall("POST", "/keys", { org, user: "u", group })
    ).json<{ id: string; key: string }>();
    return { key: created.key, model, org, user: "u", group, keyId: created.id };
  }

  it("a model's new upstream_model is what the very next request sends upstream", async () => {
    const tenant = await adminTenant();
    const before = unique("before");
    // This request puts the model's record into the isolate's cache.
    expect((await chat(tenant, {}, { "x-request-id": before })).status).toBe(200);
    expect(JSON.parse((await upstreamRequests(before))[0]!.body).model).toBe(tenant.model);
    const renamed = unique("upstream-name");
    expect((await adminCall("PUT", `/models/${tenant.model}`, { upstream_model: renamed })).status).toBe(200);
    const after = unique("after");
    expect((await chat(tenant, {}, { "x-request-id": after })).status).toBe(200);
    const sent = await upstreamRequests(after);
    expect(sent).toHaveLength(1);
    expect(JSON.parse(sent[0]!.body).model).toBe(renamed);
  });

  it("a group's removed grant refuses the very next request with 403 model_access_denied", async () => {
    const tenant = await adminTenant();
    // This request puts the group's record into the isolate's cache.
    expect((await chat(tenant)).status).toBe(200);
    expect((await adminCall("PUT", `/groups/${tenant.group}`, { models: [] })).status).toBe(200);
    await expectTyped(await chat(tenant), 403, "model_access_denied", "model");
  });

  it("an org's lowered requests_per_minute limits the very next request with 429", async () => {
    const tenant = await adminTenant({ requests_per_minute: 5 });
    // These requests put the org's record into the isolate's cache, and use 2 of its minute.
    expect((await chat(tenant)).status).toBe(200);
    expect((await chat(tenant)).status).toBe(200);
    expect((await adminCall("PUT", `/orgs/${tenant.org}`, { requests_per_minute: 2 })).status).toBe(200);
    await expectTyped(await chat(tenant), 429, "rate_limit_exceeded");
  });
});
