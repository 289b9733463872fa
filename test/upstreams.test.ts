import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi, type MockInstance } from "vitest";
import {
  LOG_WAIT,
  captureLogLines,
  chat,
  cue,
  expectGatewayError,
  expectVerbatim,
  gateway,
  gatewayWith,
  namedUpstream,
  openai,
  responses,
  routedTenant,
  seedTenant,
  unique,
  upstreamRequests,
  type Tenant,
} from "./helpers";
import type { UpstreamRecord } from "../src/records";

// Several upstreams per model (README "Several upstreams"): each test names its own upstreams, so the
// isolate's cooldowns of one test never reach another. The mock upstream plays each of them under
// its own path (`/u/<name>/v1`), and `mock.upstreams.<name>` cues one of them alone.

const MOCK = env.UPSTREAM_BASE_URL.replace(/\/v1$/, "");
const ADMIN = { authorization: "Bearer test-admin-token", "content-type": "application/json" };
const linesFor = captureLogLines();

/** The named upstreams (`default` for the plain path) that received requests with this id, in order. */
async function calledUpstreams(requestId: string): Promise<string[]> {
  return (await upstreamRequests(requestId)).map(
    (request) => /^\/u\/([^/]+)\//.exec(request.path)?.[1] ?? "default",
  );
}

/** The request's log line, once written. */
async function logLine(requestId: string): Promise<Record<string, unknown>> {
  await vi.waitFor(() => expect(linesFor(requestId)).toHaveLength(1), LOG_WAIT);
  return linesFor(requestId)[0]!;
}

/** A frozen `Date.now`, for the cooldown tests: put back after each test (and only it: not the log's spy). */
let clock: MockInstance<typeof Date.now> | undefined;
function freezeClock(at: number) {
  clock = vi.spyOn(Date, "now").mockReturnValue(at);
  return clock;
}
afterEach(() => {
  clock?.mockRestore();
  clock = undefined;
});

/** A request whose first target, `upstream`, cannot be called: 500, nothing sent (no other target tried), the log line saying why. */
async function expectMisconfigured(tenant: Tenant, upstream: string, error: string) {
  const id = unique("misconfigured");
  await expectGatewayError(
    await chat(tenant, {}, { "x-request-id": id }),
    500,
    "server_error",
    "internal_error",
  );
  expect(await calledUpstreams(id)).toEqual([]);
  expect(await logLine(id)).toMatchObject({ attempts: 1, upstream, error });
}

describe("failover before the first byte", () => {
  const triggers: Array<[string, Record<string, unknown>, Partial<UpstreamRecord>?]> = [
    ["429", { status: 429, body: '{"error":{"message":"slow down"}}' }],
    ["500", { status: 500, body: '{"error":{"message":"boom"}}' }],
    ["502", { status: 502, body: '{"error":{"message":"bad gateway"}}' }],
    ["503", { status: 503, body: '{"error":{"message":"unavailable"}}' }],
    ["504", { status: 504, body: '{"error":{"message":"timeout"}}' }],
    ["529", { status: 529, body: '{"error":{"message":"overloaded"}}' }],
    ["an error status with an empty body (400)", { status: 400 }],
    ["an error status with an empty body (404)", { status: 404 }],
    ["a refused connection", { reset: true }],
    ["no headers within the target's timeout_ms", { hang: true }, { timeout_ms: 300 }],
  ];
  for (const [name, failure, record] of triggers) {
    it(`moves on to the next target after ${name}`, async () => {
      const a = await namedUpstream(record);
      const b = await namedUpstream();
      const tenant = await routedTenant([a, b]);
      const id = unique("failover");
      const response = await chat(
        tenant,
        { mock: { reply: "from b", upstreams: { [a]: failure } } },
        { "x-request-id": id },
      );
      expect(response.status).toBe(200);
      const body = await response.json<{ model: string; choices: Array<{ message: { content: string } }> }>();
      expect(body.model).toBe(`m-${b}`);
      expect(body.choices[0]!.message.content).toBe("from b");
      expect(await calledUpstreams(id)).toEqual([a, b]);
      const line = await logLine(id);
      expect(line).toMatchObject({ status: 200, upstream: b, attempts: 2, upstream_status: 200 });
      // An upstream's failure is not the gateway's: only a misconfigured target is logged as an error.
      expect(line).not.toHaveProperty("error");
    });
  }

  const answered = [400, 401, 403, 404, 413, 422];
  for (const status of answered) {
    it(`answers ${status} with a body at once, trying no other target`, async () => {
      const a = await namedUpstream();
      const b = await namedUpstream();
      const tenant = await routedTenant([a, b]);
      const id = unique("at-once");
      const error = `{"error":{"message":"refused with ${status}"}}`;
      const response = await chat(
        tenant,
        { mock: { upstreams: { [a]: { status, body: error } } } },
        { "x-request-id": id },
      );
      await expectVerbatim(response, status, error, "application/json", {});
      expect(await calledUpstreams(id)).toEqual([a]);
      expect(await logLine(id)).toMatchObject({ status, upstream: a, attempts: 1, upstream_status: status });
    });
  }

  it("answers the last attempt's outcome by the upstream rules when every target fails", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    const id = unique("all-fail");
    const response = await chat(
      tenant,
      {
        mock: {
          upstreams: {
            [a]: { status: 500, body: '{"error":{"message":"a failed"}}' },
            [b]: { status: 502, body: '{"error":{"message":"b failed"}}', headers: { "retry-after": "7" } },
          },
        },
      },
      { "x-request-id": id },
    );
    await expectVerbatim(response, 502, '{"error":{"message":"b failed"}}', "application/json", {
      "retry-after": "7",
    });
    expect(await calledUpstreams(id)).toEqual([a, b]);
    expect(await logLine(id)).toMatchObject({ status: 502, upstream: b, attempts: 2, upstream_status: 502 });
  });

  it("answers 502 upstream_unavailable when the last target cannot be reached", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    const id = unique("all-down");
    const response = await chat(
      tenant,
      { mock: { upstreams: { [a]: { status: 503, body: "{}" }, [b]: { reset: true } } } },
      { "x-request-id": id },
    );
    await expectGatewayError(response, 502, "server_error", "upstream_unavailable");
    expect(await calledUpstreams(id)).toEqual([a, b]);
    expect(await logLine(id)).toMatchObject({ status: 502, upstream: b, attempts: 2, upstream_status: null });
  });

  it("makes at most MAX_UPSTREAM_ATTEMPTS attempts (3 by default, or as the var says)", async () => {
    const ids = [await namedUpstream(), await namedUpstream(), await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant(ids);
    const failing = Object.fromEntries(ids.map((up) => [up, { status: 500, body: `{"from":"${up}"}` }]));
    const id = unique("max");
    const response = await chat(tenant, { mock: { upstreams: failing } }, { "x-request-id": id });
    expect(response.status).toBe(500);
    expect(await response.text()).toBe(`{"from":"${ids[2]}"}`);
    expect(await calledUpstreams(id)).toEqual(ids.slice(0, 3));

    const two = unique("max");
    const limited = await gatewayWith({ MAX_UPSTREAM_ATTEMPTS: "2" }, "/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${tenant.key}`, "x-request-id": two },
      body: JSON.stringify({
        model: tenant.model,
        messages: [{ role: "user", content: "hi" }],
        mock: { upstreams: failing },
      }),
    });
    expect(await limited.text()).toBe(`{"from":"${ids[1]}"}`);
    expect(await calledUpstreams(two)).toEqual(ids.slice(0, 2));
  });

  it("waits for each upstream's headers its own timeout_ms, not UPSTREAM_TIMEOUT_MS (1500 here)", async () => {
    const quick = await namedUpstream({ timeout_ms: 300 });
    const patient = await namedUpstream({ timeout_ms: 4_000 });
    const b = await namedUpstream();
    const slow = (up: string) => ({ mock: { upstreams: { [up]: { delay_ms: 2_000 } } } });
    const first = await chat(await routedTenant([quick, b]), slow(quick));
    expect((await first.json<{ model: string }>()).model).toBe(`m-${b}`);
    const second = await chat(await routedTenant([patient, b]), slow(patient));
    expect((await second.json<{ model: string }>()).model).toBe(`m-${patient}`);
  });

  it("streams the next target's answer to the openai SDK after the first one's 503", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    const stream = await openai(tenant.key).chat.completions.create(
      cue(
        { reply: "streamed from b", upstreams: { [a]: { status: 503, body: "{}" } } },
        { model: tenant.model, messages: [{ role: "user" as const, content: "hi" }], stream: true as const },
      ),
    );
    let text = "";
    let model = "";
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      model = chunk.model;
    }
    expect(text).toBe("streamed from b");
    expect(model).toBe(`m-${b}`);
  });

  it("fails over on /v1/responses too", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    const id = unique("responses");
    const response = await responses(
      tenant,
      { mock: { upstreams: { [a]: { status: 503, body: "{}" } } } },
      { "x-request-id": id },
    );
    expect(response.status).toBe(200);
    expect((await response.json<{ model: string }>()).model).toBe(`m-${b}`);
    expect(await calledUpstreams(id)).toEqual([a, b]);
  });

  it("never retries a stream that has started: a break after its first event is an interruption", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    const id = unique("broken");
    const response = await chat(
      tenant,
      { stream: true, mock: { upstreams: { [a]: { reset_after_events: 1 } } } },
      { "x-request-id": id },
    );
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text.startsWith("data: {")).toBe(true);
    expect(
      text.endsWith(
        'event: error\ndata: {"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\ndata: [DONE]\n\n',
      ),
    ).toBe(true);
    expect(await calledUpstreams(id)).toEqual([a]);
    expect(await logLine(id)).toMatchObject({ upstream: a, attempts: 1, stream_outcome: "interrupted" });
  });
});

describe("cooldown", () => {
  it("skips a target that answered 429 until its Retry-After has passed", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    const first = unique("cool");
    await chat(
      tenant,
      { mock: { upstreams: { [a]: { status: 429, body: "{}", headers: { "retry-after": "1" } } } } },
      { "x-request-id": first },
    );
    expect(await calledUpstreams(first)).toEqual([a, b]);

    const second = unique("cool");
    expect((await chat(tenant, {}, { "x-request-id": second })).status).toBe(200);
    expect(await calledUpstreams(second)).toEqual([b]);
    expect(await logLine(second)).toMatchObject({ upstream: b, attempts: 1 });

    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const third = unique("cool");
    expect((await chat(tenant, {}, { "x-request-id": third })).status).toBe(200);
    expect(await calledUpstreams(third)).toEqual([a]);
  });

  it("skips a target 5 s after a 503 without Retry-After, and no longer", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    const start = Date.now();
    const now = freezeClock(start);
    await chat(tenant, { mock: { upstreams: { [a]: { status: 503, body: "{}" } } } });

    now.mockReturnValue(start + 4_999);
    const during = unique("cool");
    await chat(tenant, {}, { "x-request-id": during });
    expect(await calledUpstreams(during)).toEqual([b]);

    now.mockReturnValue(start + 5_000);
    const after = unique("cool");
    await chat(tenant, {}, { "x-request-id": after });
    expect(await calledUpstreams(after)).toEqual([a]);
  });

  // An HTTP date, and values that are neither whole seconds nor a date: V8's Date.parse reads "1.5",
  // "-5" or "0.5" as a day in 2001, which would have meant no cooldown at all.
  const retryAfters: Array<[string, (start: number) => string, number]> = [
    ["an HTTP date 3 s on", (start) => new Date(start + 3_000).toUTCString(), 3_000],
    ...["1.5", "-5", "0.5", "soon"].map((value): [string, () => string, number] => [
      `${JSON.stringify(value)}, as none`,
      () => value,
      5_000,
    ]),
  ];
  for (const [name, retryAfter, ms] of retryAfters) {
    it(`skips a target after a 429 whose Retry-After is ${name}, for ${ms} ms`, async () => {
      const [a, b] = [await namedUpstream(), await namedUpstream()];
      const tenant = await routedTenant([a, b]);
      // A whole second, as an HTTP date has no milliseconds.
      const start = Math.ceil(Date.now() / 1_000) * 1_000;
      const now = freezeClock(start);
      const headers = { "retry-after": retryAfter(start) };
      await chat(tenant, { mock: { upstreams: { [a]: { status: 429, body: "{}", headers } } } });
      now.mockReturnValue(start + ms - 1);
      const during = unique("cool");
      await chat(tenant, {}, { "x-request-id": during });
      expect(await calledUpstreams(during)).toEqual([b]);
      now.mockReturnValue(start + ms);
      const after = unique("cool");
      await chat(tenant, {}, { "x-request-id": after });
      expect(await calledUpstreams(after)).toEqual([a]);
    });
  }

  it("skips a target 5 s after a connection failure", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    const start = Date.now();
    const now = freezeClock(start);
    await chat(tenant, { mock: { upstreams: { [a]: { reset: true } } } });
    now.mockReturnValue(start + 4_999);
    const during = unique("cool");
    await chat(tenant, {}, { "x-request-id": during });
    expect(await calledUpstreams(during)).toEqual([b]);
  });

  it("does not cool down a target after a 500", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([a, b]);
    await chat(tenant, { mock: { upstreams: { [a]: { status: 500, body: "{}" } } } });
    const next = unique("cool");
    await chat(tenant, {}, { "x-request-id": next });
    expect(await calledUpstreams(next)).toEqual([a]);
  });

  // Either way round: the soonest is chosen, not whichever target comes last.
  for (const [waitA, waitB] of [
    ["30", "20"],
    ["20", "30"],
  ] as const) {
    it(`tries the target whose cooldown ends first when every target is cooling down (Retry-After ${waitA} and ${waitB})`, async () => {
      const [a, b] = [await namedUpstream(), await namedUpstream()];
      const soonest = waitA < waitB ? a : b;
      const tenant = await routedTenant([a, b]);
      const first = unique("cool");
      const busy = await chat(
        tenant,
        {
          mock: {
            upstreams: {
              [a]: { status: 429, body: "{}", headers: { "retry-after": waitA } },
              [b]: { status: 429, body: '{"b":1}', headers: { "retry-after": waitB } },
            },
          },
        },
        { "x-request-id": first },
      );
      expect(busy.status).toBe(429);
      expect(await busy.text()).toBe('{"b":1}');

      const second = unique("cool");
      const response = await chat(tenant, { mock: { reply: "still served" } }, { "x-request-id": second });
      expect(response.status).toBe(200);
      expect(await calledUpstreams(second)).toEqual([soonest]);
      expect(await logLine(second)).toMatchObject({ upstream: soonest, attempts: 1 });
    });
  }
});

describe("loadbalance", () => {
  it("puts targets first in proportion to their weights (3:1 over 400 requests)", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await seedTenant({
      models: {
        [unique("model")]: {
          routing: "loadbalance",
          upstreams: [
            { upstream: a, model: "heavy", weight: 3 },
            { upstream: b, model: "light" },
          ],
        },
      },
    });
    const counts: Record<string, number> = { heavy: 0, light: 0 };
    for (let batch = 0; batch < 20; batch++) {
      const models = await Promise.all(
        Array.from({ length: 20 }, async () => (await (await chat(tenant)).json<{ model: string }>()).model),
      );
      for (const model of models) counts[model]!++;
    }
    // 300 expected; 40 is more than four standard deviations (sqrt(400 x 3/4 x 1/4) = 8.7).
    expect(counts.heavy! + counts.light!).toBe(400);
    expect(Math.abs(counts.heavy! - 300)).toBeLessThanOrEqual(40);
  });

  it("falls back through the other targets when the one it picked fails", async () => {
    const [a, b] = [await namedUpstream(), await namedUpstream()];
    const tenant = await seedTenant({
      models: {
        [unique("model")]: {
          routing: "loadbalance",
          upstreams: [
            { upstream: a, weight: 1_000_000 },
            { upstream: b, weight: 0.000001 },
          ],
        },
      },
    });
    const id = unique("lb");
    const response = await chat(
      tenant,
      { mock: { upstreams: { [a]: { status: 502, body: "{}" } } } },
      {
        "x-request-id": id,
      },
    );
    expect(response.status).toBe(200);
    expect(await calledUpstreams(id)).toEqual([a, b]);
  });
});

describe("upstream keys and names", () => {
  it("sends each upstream its own key as its auth says, its fixed headers and its model name, and no other's key", async () => {
    const a = await namedUpstream();
    const b = await namedUpstream({
      auth: "x-api-key",
      api_key_secret: "UPSTREAM_B_KEY",
      headers: { "anthropic-version": "2023-06-01" },
    });
    const tenant = await routedTenant([a, b]);
    const id = unique("keys");
    const response = await chat(
      tenant,
      { mock: { upstreams: { [a]: { status: 503, body: "{}" } } } },
      { "x-request-id": id },
    );
    expect(response.status).toBe(200);
    const text = await response.text();
    const [toA, toB] = await upstreamRequests(id);
    expect(toA!.headers.authorization).toBe("Bearer sk-upstream-a-secret");
    expect(toA!.headers["x-api-key"]).toBeUndefined();
    expect(JSON.parse(toA!.body).model).toBe(`m-${a}`);
    expect(toB!.headers["x-api-key"]).toBe("sk-upstream-b-secret");
    expect(toB!.headers.authorization).toBeUndefined();
    expect(toB!.headers["anthropic-version"]).toBe("2023-06-01");
    expect(JSON.parse(toB!.body).model).toBe(`m-${b}`);
    for (const secret of ["sk-upstream-a-secret", "sk-upstream-b-secret", "sk-upstream-test-secret"]) {
      expect(JSON.stringify(toB!.headers).includes(secret)).toBe(secret === "sk-upstream-b-secret");
      expect(JSON.stringify(toA!.headers).includes(secret)).toBe(secret === "sk-upstream-a-secret");
      expect(text).not.toContain(secret);
      expect([...response.headers].join()).not.toContain(secret);
      expect(JSON.stringify(await logLine(id))).not.toContain(secret);
    }
  });

  it("sends the key as api-key, or none at all, as the record says", async () => {
    const a = await namedUpstream({ auth: "api-key" });
    const b = await namedUpstream({ auth: "none", api_key_secret: undefined });
    for (const [up, expected] of [
      [a, { "api-key": "sk-upstream-a-secret" }],
      [b, {}],
    ] as const) {
      const tenant = await routedTenant([up]);
      const id = unique("auth");
      expect((await chat(tenant, {}, { "x-request-id": id })).status).toBe(200);
      const [sent] = await upstreamRequests(id);
      const auth = Object.fromEntries(
        Object.entries(sent!.headers).filter(([name]) => /authorization|api-key/.test(name)),
      );
      expect(auth).toEqual(expected);
    }
  });

  it("answers 500 for an upstream whose record is gone, naming it in the log line", async () => {
    // Written by hand (the admin API refuses a model naming an unknown upstream), or deleted since.
    const ghost = unique("ghost");
    await expectMisconfigured(
      await routedTenant([ghost]),
      ghost,
      `MisconfiguredUpstream: upstream '${ghost}' does not exist`,
    );
  });

  it("never sends a binding that is not a secret (GATEWAY_KV) as an upstream's key", async () => {
    // The name is a valid secret name; what it names is the KV namespace, an object.
    const kv = await namedUpstream({ api_key_secret: "GATEWAY_KV" });
    await expectMisconfigured(
      await routedTenant([kv]),
      kv,
      `MisconfiguredUpstream: upstream '${kv}': secret GATEWAY_KV is not set`,
    );
  });

  it("never calls an upstream whose secret is missing: a 500 for that attempt, then the next target", async () => {
    const missing = await namedUpstream({ api_key_secret: "UPSTREAM_NOT_SET_KEY" });
    const b = await namedUpstream();
    await expectMisconfigured(
      await routedTenant([missing]),
      missing,
      `MisconfiguredUpstream: upstream '${missing}': secret UPSTREAM_NOT_SET_KEY is not set`,
    );

    const withFallback = await routedTenant([missing, b]);
    const second = unique("secret");
    expect((await chat(withFallback, {}, { "x-request-id": second })).status).toBe(200);
    expect(await calledUpstreams(second)).toEqual([b]);
    expect(await logLine(second)).toMatchObject({
      attempts: 2,
      upstream: b,
      error: `MisconfiguredUpstream: upstream '${missing}': secret UPSTREAM_NOT_SET_KEY is not set`,
    });
  });

  it("answers 500 for a hand-written upstream record that fails its schema, never calling it", async () => {
    const bad = unique("up");
    await env.GATEWAY_KV.put(`upstream:${bad}`, JSON.stringify({ base_url: `${MOCK}/u/${bad}/v1` }));
    await expectMisconfigured(await routedTenant([bad]), bad, "InvalidRecord: invalid upstream record");
  });

  it("answers 500 when KV fails reading a target's record, trying no other target", async () => {
    // A KV failure is the gateway's, not the upstream's: the contract's 500, never failover.
    const a = await namedUpstream();
    const b = await namedUpstream();
    const tenant = await routedTenant([a, b]);
    const read = env.GATEWAY_KV.get.bind(env.GATEWAY_KV) as (
      key: string,
      type: "text",
    ) => Promise<string | null>;
    const get = vi.spyOn(env.GATEWAY_KV, "get").mockImplementation((async (key: string) => {
      if (key === `upstream:${a}`) throw new Error("KV GET failed");
      return read(key, "text");
    }) as typeof env.GATEWAY_KV.get);
    try {
      await expectMisconfigured(tenant, a, "Error");
    } finally {
      get.mockRestore();
    }
  });

  it("reads no upstream record for a model on the default upstream", async () => {
    const tenant = await seedTenant();
    const get = vi.spyOn(env.GATEWAY_KV, "get");
    try {
      const id = unique("hot");
      expect((await chat(tenant, {}, { "x-request-id": id })).status).toBe(200);
      const keys = get.mock.calls.map(([key]) => String(key));
      // The spy sees the Worker's reads: the model's record is one of them.
      expect(keys).toContain(`model:${tenant.model}`);
      expect(keys.filter((key) => key.startsWith("upstream:"))).toEqual([]);
      expect(await logLine(id)).toMatchObject({ upstream: "default", attempts: 1 });
    } finally {
      get.mockRestore();
    }
  });

  it("routes a model to the default upstream by name, with its own upstream model", async () => {
    const tenant = await seedTenant({
      models: { [unique("model")]: { upstreams: [{ upstream: "default", model: "renamed" }] } },
    });
    const id = unique("default");
    const response = await chat(tenant, {}, { "x-request-id": id });
    expect((await response.json<{ model: string }>()).model).toBe("renamed");
    expect(await calledUpstreams(id)).toEqual(["default"]);
    expect((await upstreamRequests(id))[0]!.headers.authorization).toBe("Bearer sk-upstream-test-secret");
    expect(await logLine(id)).toMatchObject({ upstream: "default", attempts: 1 });
  });
});

describe("admin API for upstreams", () => {
  const admin = (path: string, init: RequestInit = {}) =>
    gateway(`/admin${path}`, { ...init, headers: ADMIN });

  it("writes, lists and deletes an upstream; lists `default` first; never shows a key", async () => {
    const id = unique("up");
    const record = {
      // Every trailing slash goes, not only the last.
      base_url: "https://api.example.com/v1//",
      auth: "x-api-key",
      api_key_secret: "ANTHROPIC_API_KEY",
      headers: { "anthropic-version": "2023-06-01" },
      timeout_ms: 30000,
    };
    const put = await admin(`/upstreams/${id}`, { method: "PUT", body: JSON.stringify(record) });
    expect(put.status).toBe(200);
    expect(await put.json()).toEqual({ id, ...record, base_url: "https://api.example.com/v1" });
    expect(JSON.parse((await env.GATEWAY_KV.get(`upstream:${id}`))!)).toEqual({
      ...record,
      base_url: "https://api.example.com/v1",
    });

    const listed = await (await admin("/upstreams")).json<{ data: Array<{ id: string }> }>();
    expect(listed.data[0]).toEqual({
      id: "default",
      base_url: env.UPSTREAM_BASE_URL,
      auth: "bearer",
      api_key_secret: "UPSTREAM_API_KEY",
    });
    expect(listed.data.find((u) => u.id === id)).toEqual({
      id,
      ...record,
      base_url: "https://api.example.com/v1",
    });
    expect(JSON.stringify(listed)).not.toContain("sk-upstream");

    const deleted = await admin(`/upstreams/${id}`, { method: "DELETE" });
    expect(await deleted.json()).toEqual({ id, deleted: true });
    expect(await env.GATEWAY_KV.get(`upstream:${id}`)).toBeNull();
  });

  it("refuses to delete an upstream a model routes to (409 upstream_in_use)", async () => {
    const id = await namedUpstream();
    // One of its model's two targets.
    const tenant = await routedTenant([id, await namedUpstream()]);
    const response = await admin(`/upstreams/${id}`, { method: "DELETE" });
    const message = await expectGatewayError(response, 409, "invalid_request_error", "upstream_in_use");
    expect(message).toBe(`Upstream '${id}' is used by model '${tenant.model}'; remove it there first.`);
    expect(await env.GATEWAY_KV.get(`upstream:${id}`)).not.toBeNull();
  });

  it("deletes an upstream no model routes to, whatever other models route to", async () => {
    const id = await namedUpstream();
    // A model routed to another upstream, and one sent to `default` (no targets of its own).
    await routedTenant([await namedUpstream()]);
    await seedTenant();
    const deleted = await admin(`/upstreams/${id}`, { method: "DELETE" });
    expect(await deleted.json()).toEqual({ id, deleted: true });
  });

  it("reads KV itself for the models that route to an upstream, and for the listing", async () => {
    const [id, other] = [await namedUpstream(), await namedUpstream()];
    const tenant = await routedTenant([id]);
    // A request caches the model's and the upstream's records; both are then changed by hand.
    expect((await chat(tenant)).status).toBe(200);
    await env.GATEWAY_KV.put(`model:${tenant.model}`, JSON.stringify({ upstreams: [{ upstream: other }] }));
    const moved = { base_url: "https://moved.example/v1", api_key_secret: "UPSTREAM_A_KEY" };
    await env.GATEWAY_KV.put(`upstream:${id}`, JSON.stringify(moved));
    const listed = await (await admin("/upstreams")).json<{ data: Array<{ id: string }> }>();
    expect(listed.data.find((u) => u.id === id)).toEqual({ id, ...moved });
    const deleted = await admin(`/upstreams/${id}`, { method: "DELETE" });
    expect(await deleted.json()).toEqual({ id, deleted: true });
  });

  it("refuses an upstream id that is not one, naming the rule", async () => {
    const body = JSON.stringify({ base_url: "https://x.example/v1", auth: "none" });
    const response = await admin("/upstreams/a%20b", { method: "PUT", body });
    expect(await expectGatewayError(response, 400, "invalid_request_error", "invalid_body")).toBe(
      "Invalid upstream id: must be 1-128 letters, digits or ._@:+- starting with a letter or digit.",
    );
  });

  it("answers 404 for deleting an upstream that does not exist", async () => {
    await expectGatewayError(
      await admin(`/upstreams/${unique("none")}`, { method: "DELETE" }),
      404,
      "invalid_request_error",
      "not_found",
    );
  });

  it("never writes or deletes `default`", async () => {
    const body = JSON.stringify({ base_url: "https://evil.example/v1", auth: "none" });
    const refusal = "Upstream 'default' is set by the vars.";
    const put = await admin("/upstreams/default", { method: "PUT", body });
    expect(await expectGatewayError(put, 400, "invalid_request_error", "invalid_body")).toBe(refusal);
    const deleted = await admin("/upstreams/default", { method: "DELETE" });
    expect(await expectGatewayError(deleted, 400, "invalid_request_error", "invalid_body")).toBe(refusal);
    expect(await env.GATEWAY_KV.get("upstream:default")).toBeNull();
  });

  const invalid: Array<[string, Record<string, unknown>, string]> = [
    ["an ftp base URL", { base_url: "ftp://x/v1", auth: "none" }, "base_url"],
    ["a base URL with a query", { base_url: "https://x/v1?a=1", auth: "none" }, "base_url"],
    [
      "ADMIN_TOKEN as the secret",
      { base_url: "https://x/v1", api_key_secret: "ADMIN_TOKEN" },
      "api_key_secret",
    ],
    ["a lowercase secret name", { base_url: "https://x/v1", api_key_secret: "my_key" }, "api_key_secret"],
    ["no secret for a bearer upstream", { base_url: "https://x/v1" }, "api_key_secret"],
    [
      "a secret with auth none",
      { base_url: "https://x/v1", auth: "none", api_key_secret: "K" },
      "api_key_secret",
    ],
    ["an unknown auth", { base_url: "https://x/v1", auth: "basic", api_key_secret: "K" }, "auth"],
    [
      "an auth header",
      { base_url: "https://x/v1", auth: "none", headers: { Authorization: "x" } },
      "headers",
    ],
    [
      "an x-api-key header",
      { base_url: "https://x/v1", auth: "none", headers: { "x-api-key": "x" } },
      "headers",
    ],
    [
      "a header value with a newline",
      { base_url: "https://x/v1", auth: "none", headers: { a: "1\n2" } },
      "headers",
    ],
    ["a zero timeout", { base_url: "https://x/v1", auth: "none", timeout_ms: 0 }, "timeout_ms"],
    ["an unknown field", { base_url: "https://x/v1", auth: "none", key: "sk-1" }, "key"],
  ];
  for (const [name, body, param] of invalid) {
    it(`refuses ${name} (400 invalid_body, param ${param})`, async () => {
      const id = unique("up");
      const response = await admin(`/upstreams/${id}`, { method: "PUT", body: JSON.stringify(body) });
      await expectGatewayError(response, 400, "invalid_request_error", "invalid_body", param);
      expect(await env.GATEWAY_KV.get(`upstream:${id}`)).toBeNull();
    });
  }

  it("writes a model's upstreams and routing, and refuses an unknown upstream with its param", async () => {
    const known = await namedUpstream();
    const model = unique("model");
    const record = {
      upstreams: [{ upstream: known, model: "gpt-4o", weight: 2 }, { upstream: "default" }],
      routing: "loadbalance",
    };
    const put = await admin(`/models/${model}`, { method: "PUT", body: JSON.stringify(record) });
    expect(await put.json()).toEqual({ id: model, ...record });

    const missing = unique("none");
    const refused = await admin(`/models/${model}`, {
      method: "PUT",
      body: JSON.stringify({ upstreams: [{ upstream: known }, { upstream: missing }] }),
    });
    const message = await expectGatewayError(
      refused,
      400,
      "invalid_request_error",
      "upstream_not_found",
      "upstreams[1].upstream",
    );
    expect(message).toBe(`Upstream '${missing}' not found.`);
    expect(JSON.parse((await env.GATEWAY_KV.get(`model:${model}`))!)).toEqual(record);
  });

  it("refuses a routing other than fallback or loadbalance, and an empty upstreams list", async () => {
    const model = unique("model");
    for (const [body, param] of [
      [{ routing: "random" }, "routing"],
      [{ upstreams: [] }, "upstreams"],
      [{ upstreams: [{ upstream: "default", weight: 0 }] }, "upstreams[0].weight"],
    ] as const) {
      const response = await admin(`/models/${model}`, { method: "PUT", body: JSON.stringify(body) });
      await expectGatewayError(response, 400, "invalid_request_error", "invalid_body", param);
    }
  });
});
