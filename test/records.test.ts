import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  captureLogLines,
  chat,
  expectGatewayError,
  expectNotForwarded,
  expectUnauthorized,
  gateway,
  gatewayWith,
  seedTenant,
  unique,
  type Tenant,
} from "./helpers";

// Records an operator wrote by hand (`wrangler kv key put`) are input like any request body: each
// kind is checked where it is read, and a bad one never reads as "no limit" or "granted".

const linesFor = captureLogLines();
const ADMIN = { authorization: "Bearer test-admin-token" };

async function putRaw(key: string, value: string) {
  await env.GATEWAY_KV.put(key, value);
}

/** A chat request that must stop at a 500 naming the bad record's kind in the log, never upstream. */
async function expectInvalidRecord(tenant: Tenant, kind: string, vars = {}) {
  const id = unique("bad-record");
  const init = {
    method: "POST",
    headers: { authorization: `Bearer ${tenant.key}`, "x-request-id": id },
    body: JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "hi" }] }),
  };
  const response = await gatewayWith(vars, "/v1/chat/completions", init);
  const message = await expectGatewayError(response, 500, "server_error", "internal_error");
  expect(message).toBe("An unexpected error occurred in the gateway.");
  expect(linesFor(id)).toMatchObject([
    { status: 500, code: "internal_error", error: `InvalidRecord: invalid ${kind} record` },
  ]);
  await expectNotForwarded(id);
}

describe("org records", () => {
  for (const [what, limits] of [
    ["a negative limit", { requests_per_minute: -1 }],
    ["a zero limit", { requests_per_minute: 0 }],
    ["a fractional limit", { requests_per_minute: 1.5 }],
    ["a numeric string", { requests_per_minute: "5" }],
    ["a word", { user_requests_per_minute: "lots" }],
    ["null", { user_requests_per_minute: null }],
    ["a misspelt field", { request_per_minute: 5 }],
    ["a fractional token limit", { tokens_per_minute: 2.5 }],
    ["a token limit as a string", { user_tokens_per_minute: "1000" }],
    ["a zero budget", { monthly_budget_usd: 0 }],
    ["a budget as a string", { user_monthly_budget_usd: "5" }],
  ] as const) {
    it(`refuses every request of an org whose record has ${what}`, async () => {
      const tenant = await seedTenant();
      await putRaw(`org:${tenant.org}`, JSON.stringify(limits));
      await expectInvalidRecord(tenant, "org");
    });
  }

  for (const [what, text] of [
    ["not JSON", "{requests_per_minute: 5"],
    ["an array", "[1]"],
    ["null", "null"],
  ] as const) {
    it(`refuses every request of an org whose record is ${what}`, async () => {
      const tenant = await seedTenant();
      await putRaw(`org:${tenant.org}`, text);
      await expectInvalidRecord(tenant, "org");
    });
  }

  it("never admits more than the defaults would, whatever invalid record an org has", async () => {
    const bad = fc.oneof(
      fc.integer({ max: 0 }),
      fc.double({ noNaN: true, noDefaultInfinity: true }).filter((n) => !Number.isInteger(n)),
      fc.integer({ min: 10_000_001 }),
      fc.string(),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.nat(), { maxLength: 2 }),
      fc.dictionary(fc.string(), fc.nat(), { maxKeys: 2 }),
    );
    const record = fc.oneof(
      fc.record({ requests_per_minute: bad }),
      fc.record({ user_requests_per_minute: bad }),
      fc.record({ requests_per_minute: fc.integer({ min: 1, max: 5 }), user_requests_per_minute: bad }),
      fc.record({ requests_per_minute: fc.integer({ min: 1, max: 5 }), extra: fc.nat() }),
      fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.array(fc.nat())),
    );
    await fc.assert(
      fc.asyncProperty(record, async (value) => {
        const tenant = await seedTenant();
        await putRaw(`org:${tenant.org}`, JSON.stringify(value));
        const statuses: number[] = [];
        for (let i = 0; i < 3; i++) {
          const response = await gatewayWith(
            { DEFAULT_ORG_RPM: "1", DEFAULT_USER_RPM: "1" },
            "/v1/chat/completions",
            {
              method: "POST",
              headers: { authorization: `Bearer ${tenant.key}` },
              body: JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "hi" }] }),
            },
          );
          statuses.push(response.status);
          await response.arrayBuffer();
        }
        expect(statuses).toEqual([500, 500, 500]);
      }),
      { numRuns: 40 },
    );
  });
});

/** Any JSON value that is not a list of model ids: what a hand-written `models` might hold instead. */
const notModelList = (model: string) =>
  fc.oneof(
    fc.constant(model),
    fc.constant(`${model}-and-more`),
    fc.constant("*"),
    fc.dictionary(fc.string(), fc.boolean(), { maxKeys: 2 }),
    fc.array(
      fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.constant(""), fc.constant("with space")),
      { minLength: 1, maxLength: 3 },
    ),
    fc.array(fc.constant(model), { minLength: 2, maxLength: 2 }),
    fc.integer(),
    fc.constant(null),
  );

/** Sends one chat request of the tenant through the Worker; its status. */
async function status(tenant: Tenant): Promise<number> {
  const response = await chat(tenant);
  await response.arrayBuffer();
  return response.status;
}

describe("random invalid records of every kind", () => {
  it("never grant a model through an invalid group", async () => {
    await fc.assert(
      // MODEL stands for the tenant's own model id, written in once it is known.
      fc.asyncProperty(notModelList("MODEL"), async (value) => {
        const tenant = await seedTenant();
        await putRaw(
          `group:${tenant.group}`,
          JSON.stringify({ models: value }).replaceAll("MODEL", tenant.model),
        );
        expect(await status(tenant)).toBe(500);
      }),
      { numRuns: 30 },
    );
  });

  it("never serve a model whose record is invalid", async () => {
    const badModel = fc.oneof(
      fc.record({
        upstream_model: fc.oneof(
          fc.integer(),
          fc.constant(""),
          fc.constant("has space"),
          fc.constant("*"),
          fc.constant(null),
        ),
      }),
      fc.record({
        display_name: fc.oneof(
          fc.integer(),
          fc.boolean(),
          fc.constant(null),
          fc.string({ minLength: 201, maxLength: 210 }),
        ),
      }),
      fc.record({ unknown_field: fc.nat() }),
      fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.array(fc.nat(), { maxLength: 2 })),
    );
    await fc.assert(
      fc.asyncProperty(badModel, async (value) => {
        const tenant = await seedTenant();
        await putRaw(`model:${tenant.model}`, JSON.stringify(value));
        expect(await status(tenant)).toBe(500);
      }),
      { numRuns: 30 },
    );
  });

  it("never admit a key whose record is invalid", async () => {
    const field = fc.constantFrom("id", "org", "user", "group", "created_at");
    const badValue = fc.oneof(
      fc.integer(),
      fc.constant(null),
      fc.constant(""),
      fc.constant("has space"),
      fc.constant(undefined),
    );
    await fc.assert(
      fc.asyncProperty(field, badValue, async (name, value) => {
        const tenant = await seedTenant();
        const hash = (await env.GATEWAY_KV.get<{ hash: string }>(`keyid:${tenant.keyId}`, "json"))!.hash;
        const record = (await env.GATEWAY_KV.get<Record<string, unknown>>(`key:${hash}`, "json"))!;
        await putRaw(`key:${hash}`, JSON.stringify({ ...record, [name]: value }));
        expect(await status(tenant)).toBe(500);
      }),
      { numRuns: 30 },
    );
  });
});

describe("group records", () => {
  it("does not read a string where the list belongs as a substring match", async () => {
    const model = unique("gpt");
    const tenant = await seedTenant({ models: { [model]: {} } });
    await putRaw(`group:${tenant.group}`, JSON.stringify({ models: `${model}-mini` }));
    await expectInvalidRecord(tenant, "group");
  });

  it("answers an object where the list belongs with the logged 500, not a type error", async () => {
    const tenant = await seedTenant();
    await putRaw(`group:${tenant.group}`, JSON.stringify({ models: { [tenant.model]: true } }));
    await expectInvalidRecord(tenant, "group");
  });

  it("refuses a list holding something other than model ids", async () => {
    const tenant = await seedTenant();
    await putRaw(`group:${tenant.group}`, JSON.stringify({ models: [tenant.model, 7] }));
    await expectInvalidRecord(tenant, "group");
  });
});

describe("a key whose group record is gone", () => {
  it("is granted no model: 403 on the model routes and an empty /v1/models", async () => {
    const tenant = await seedTenant();
    await env.GATEWAY_KV.delete(`group:${tenant.group}`);
    const message = await expectGatewayError(
      await chat(tenant),
      403,
      "permission_error",
      "model_access_denied",
      "model",
    );
    expect(message).toBe(`This API key may not use model '${tenant.model}'.`);
    const models = await gateway("/v1/models", { headers: { authorization: `Bearer ${tenant.key}` } });
    expect(await models.json()).toEqual({ object: "list", data: [] });
  });
});

describe("model and key records", () => {
  it("refuses a model whose upstream_model is not a model id", async () => {
    const tenant = await seedTenant();
    await putRaw(`model:${tenant.model}`, JSON.stringify({ upstream_model: 5 }));
    await expectInvalidRecord(tenant, "model");
  });

  it("refuses a key whose record has no org", async () => {
    const tenant = await seedTenant();
    const hash = (await env.GATEWAY_KV.get<{ hash: string }>(`keyid:${tenant.keyId}`, "json"))!.hash;
    const record = await env.GATEWAY_KV.get<Record<string, unknown>>(`key:${hash}`, "json");
    delete record!.org;
    await putRaw(`key:${hash}`, JSON.stringify(record));
    await expectInvalidRecord(tenant, "key");
  });
});

describe("listings with a bad record", () => {
  it("leave the bad model out of /v1/models and show it as invalid to the operator", async () => {
    const good = unique("good");
    const broken = unique("broken");
    const wrongType = unique("wrong");
    const tenant = await seedTenant({ models: { [good]: { display_name: "Good" } }, grants: ["*"] });
    await putRaw(`model:${broken}`, "{not json");
    await putRaw(`model:${wrongType}`, JSON.stringify({ display_name: 5 }));

    const models = await gateway("/v1/models", { headers: { authorization: `Bearer ${tenant.key}` } });
    expect(models.status).toBe(200);
    const ids = (await models.json<{ data: Array<{ id: string }> }>()).data.map((m) => m.id);
    expect(ids).toContain(good);
    expect(ids).not.toContain(broken);
    expect(ids).not.toContain(wrongType);

    const listed = await gateway("/admin/models", { headers: ADMIN });
    expect(listed.status).toBe(200);
    const data = (await listed.json<{ data: Array<Record<string, unknown>> }>()).data;
    expect(data.find((m) => m.id === good)).toEqual({ id: good, display_name: "Good" });
    expect(data.find((m) => m.id === broken)).toEqual({
      id: broken,
      invalid: true,
      problem: "not valid JSON",
    });
    expect(data.find((m) => m.id === wrongType)).toEqual({
      id: wrongType,
      invalid: true,
      problem: "display_name: must be a string",
    });
  });

  it("leave an explicitly granted bad model out of /v1/models", async () => {
    const good = unique("good");
    const broken = unique("broken");
    const tenant = await seedTenant({ models: { [good]: {}, [broken]: {} } });
    await putRaw(`model:${broken}`, "[]");
    const models = await gateway("/v1/models", { headers: { authorization: `Bearer ${tenant.key}` } });
    expect((await models.json<{ data: Array<{ id: string }> }>()).data.map((m) => m.id)).toEqual([good]);
  });

  it("show a bad group, org and key to the operator", async () => {
    const tenant = await seedTenant();
    await putRaw(`group:${tenant.group}`, JSON.stringify({ models: "x" }));
    await putRaw(`org:${tenant.org}`, JSON.stringify({ requests_per_minute: -3 }));
    const hash = (await env.GATEWAY_KV.get<{ hash: string }>(`keyid:${tenant.keyId}`, "json"))!.hash;
    await putRaw(`key:${hash}`, JSON.stringify({ id: tenant.keyId }));

    const groups = (await (await gateway("/admin/groups", { headers: ADMIN })).json<{ data: unknown[] }>())
      .data;
    expect(groups).toContainEqual({
      id: tenant.group,
      invalid: true,
      problem: "models: must be an array of model ids",
    });
    const org = await gateway(`/admin/orgs/${tenant.org}`, { headers: ADMIN });
    expect(await org.json()).toEqual({
      id: tenant.org,
      invalid: true,
      problem: "requests_per_minute: must be a positive integer",
    });
    const keys = (await (await gateway("/admin/keys", { headers: ADMIN })).json<{ data: unknown[] }>()).data;
    expect(keys).toContainEqual({ hash, invalid: true, problem: "org: is missing" });
  });
});

describe("vars", () => {
  for (const [name, value] of [
    ["DEFAULT_ORG_RPM", "abc"],
    ["DEFAULT_USER_RPM", "0"],
    ["MAX_BODY_BYTES", "-5"],
    ["UPSTREAM_TIMEOUT_MS", "1.5"],
    ["STREAM_IDLE_TIMEOUT_MS", ""],
    ["BODY_TIMEOUT_MS", "10s"],
    ["MAX_EVENT_BYTES", "0x10"],
    ["USAGE_RETENTION_DAYS", "90d"],
    ["DEFAULT_MAX_OUTPUT_TOKENS", "4k"],
    ["MAX_UPSTREAM_ATTEMPTS", "three"],
    ["UPSTREAM_BASE_URL", "not a url"],
  ] as const) {
    it(`stops serving, with the var named in the log, when ${name} is ${JSON.stringify(value)}`, async () => {
      const tenant = await seedTenant();
      const bodies: Record<string, string | undefined> = {
        "/v1/chat/completions": JSON.stringify({
          model: tenant.model,
          messages: [{ role: "user", content: "hi" }],
        }),
        "/v1/responses": JSON.stringify({ model: tenant.model, input: "hi" }),
        "/healthz": undefined,
      };
      for (const [path, body] of Object.entries(bodies)) {
        const id = unique("bad-var");
        const response = await gatewayWith({ [name]: value }, path, {
          method: body === undefined ? "GET" : "POST",
          headers: { authorization: `Bearer ${tenant.key}`, "x-request-id": id },
          body,
        });
        await expectGatewayError(response, 500, "server_error", "internal_error");
        const error =
          name === "UPSTREAM_BASE_URL"
            ? `${name} must be an http or https URL without query or fragment`
            : `${name} must be a positive integer`;
        expect(linesFor(id)).toMatchObject([{ error: `ConfigError: ${error}` }]);
        await expectNotForwarded(id);
      }
    });
  }

  it("serves with the documented defaults when the vars are not set at all", async () => {
    const tenant = await seedTenant();
    const response = await gatewayWith(
      {
        DEFAULT_ORG_RPM: undefined,
        MAX_BODY_BYTES: undefined,
        BODY_TIMEOUT_MS: undefined,
        MAX_EVENT_BYTES: undefined,
        USAGE_RETENTION_DAYS: undefined,
        DEFAULT_MAX_OUTPUT_TOKENS: undefined,
        MAX_UPSTREAM_ATTEMPTS: undefined,
      },
      "/v1/chat/completions",
      {
        method: "POST",
        headers: { authorization: `Bearer ${tenant.key}` },
        body: JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "hi" }] }),
      },
    );
    expect(response.status).toBe(200);
  });
});

describe("admin keys listing", () => {
  it("refuses an empty org filter instead of listing every org's keys", async () => {
    await seedTenant();
    const response = await gateway("/admin/keys?org=", { headers: ADMIN });
    await expectGatewayError(response, 400, "invalid_request_error", "invalid_body");
  });
});

describe("admin token", () => {
  for (const token of ["p@ss w0rd!\"#$%&'()*,;<=>?[\\]^`{|}", "tok%20en", "a"]) {
    it(`accepts the operator's token ${JSON.stringify(token)}, and only it`, async () => {
      const ok = await gatewayWith({ ADMIN_TOKEN: token }, "/admin/models", {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(ok.status).toBe(200);
      const wrong = await gatewayWith({ ADMIN_TOKEN: token }, "/admin/models", {
        headers: { authorization: `Bearer ${token}x` },
      });
      await expectUnauthorized(wrong);
    });
  }

  it("takes the scheme in any case and any number of spaces before the token, and nothing else", async () => {
    const call = (authorization: string) =>
      gatewayWith({ ADMIN_TOKEN: "tok" }, "/admin/models", { headers: { authorization } });
    for (const authorization of ["Bearer tok", "bearer tok", "BEARER   tok"]) {
      expect((await call(authorization)).status).toBe(200);
    }
    for (const authorization of ["XBearer tok", "Bearertok", "Bearer", "Basic tok", "tok"]) {
      await expectUnauthorized(await call(authorization));
    }
  });

  for (const token of [" padded", "trailing ", "  both  ", "tökén", "tab\there", "x\u0001"]) {
    it(`refuses to run the admin API with a token no client can send: ${JSON.stringify(token)}`, async () => {
      const id = unique("admin-token");
      const response = await gatewayWith({ ADMIN_TOKEN: token }, "/admin/models", {
        headers: { authorization: "Bearer anything", "x-request-id": id },
      });
      await expectGatewayError(response, 500, "server_error", "internal_error");
      expect(linesFor(id)).toMatchObject([
        { error: "InternalFault: ADMIN_TOKEN must be printable ASCII without spaces at either end" },
      ]);
    });
  }
});

describe("model routes after a record is fixed", () => {
  it("serves the org again once its record is rewritten through the admin API", async () => {
    const tenant = await seedTenant();
    await putRaw(`org:${tenant.org}`, JSON.stringify({ requests_per_minute: "many" }));
    expect((await chat(tenant)).status).toBe(500);
    const put = await gateway(`/admin/orgs/${tenant.org}`, {
      method: "PUT",
      headers: ADMIN,
      body: JSON.stringify({ requests_per_minute: 10 }),
    });
    expect(put.status).toBe(200);
    expect((await chat(tenant)).status).toBe(200);
  });
});
