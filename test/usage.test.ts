import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { Pricing } from "../src/records";
import type { UsageRow } from "../src/usage-ledger";
import { chatStreamEvents, responsesStreamEvents } from "./mock/streams.mjs";
import {
  LOG_WAIT,
  captureLogLines,
  chat,
  cue,
  expectGatewayError,
  gateway,
  gatewayWith,
  openai,
  postRaw,
  responses,
  seedTenant,
  unique,
  upstreamRequests,
  type Tenant,
} from "./helpers";

// Metering through the Worker's HTTP surface: what a request used, as the report and the log line
// show it. Rows in other hours are written through the gate's own RPC (recordUsage): a row carries
// its hour, so the gate needs no clock seam, and the Worker's side is what the other tests drive.

const ADMIN = { authorization: "Bearer test-admin-token" };
const HOUR = 3_600_000;
const gate = (org: string) => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(org));
const linesFor = captureLogLines();

interface Counters {
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cost_usd: number;
  estimated_requests: number;
  upstream_errors: number;
}
interface Report {
  object: string;
  org: string;
  from: string;
  to: string;
  group_by: string[];
  data: Array<Record<string, unknown> & Counters>;
  total: Counters;
}

const PRICING: Pricing = { input_per_mtok: 2, output_per_mtok: 8, cached_input_per_mtok: 0.5 };

/** The contract's cost of one request in nano-dollars, rounded once, as the gateway keeps it. */
const nanos = (input: number, output: number, cached: number, p: Pricing = PRICING) =>
  Math.round(
    ((input - cached) * p.input_per_mtok + cached * p.cached_input_per_mtok! + output * p.output_per_mtok) *
      1000,
  );

const report = (org: string, query = "") =>
  gateway(`/admin/orgs/${org}/usage${query ? `?${query}` : ""}`, { headers: ADMIN });

async function reportOf(org: string, query = ""): Promise<Report> {
  const response = await report(org, query);
  expect(response.status).toBe(200);
  return response.json<Report>();
}

/** The report once it counts `requests` requests (metering runs after the answers). */
async function reportWhen(org: string, requests: number, query = ""): Promise<Report> {
  let last: Report | undefined;
  await vi.waitFor(
    async () => {
      last = await reportOf(org, query);
      expect(last.total.requests).toBe(requests);
    },
    { timeout: 5000, interval: 50 },
  );
  return last!;
}

const counters = (c: Partial<Counters>): Counters => ({
  requests: 0,
  input_tokens: 0,
  output_tokens: 0,
  cached_tokens: 0,
  cost_usd: 0,
  estimated_requests: 0,
  upstream_errors: 0,
  ...c,
});

const pricedTenant = () => seedTenant({ models: { [unique("priced")]: { pricing: PRICING } } });

const chatBody = (tenant: Tenant, content: string, extra: Record<string, unknown> = {}) => ({
  model: tenant.model,
  messages: [{ role: "user", content }],
  ...extra,
});

describe("usage of answered requests", () => {
  it("totals exact tokens and cost over chat and Responses, streamed or not, with and without include_usage", async () => {
    const tenant = await pricedTenant();
    const ids = Array.from({ length: 6 }, () => unique("mix"));

    // Chat, not streamed: 3 prompt words (1 cached), 5 reply words.
    await (
      await chat(tenant, chatBody(tenant, "one two three", cue({ cached_tokens: 1 })), {
        "x-request-id": ids[0]!,
      })
    ).text();

    // Chat streams whose callers did not ask for usage: it is asked for upstream, and left out.
    const unasked = chatBody(tenant, "a b", { stream: true });
    const plain = await chat(tenant, unasked, { "x-request-id": ids[1]! });
    expect(await plain.text()).toBe(chatStreamEvents(unasked).join(""));
    const declined = chatBody(tenant, "c d e f", { stream: true, stream_options: { include_usage: false } });
    const declinedText = await (await chat(tenant, declined, { "x-request-id": ids[2]! })).text();
    expect(declinedText).toBe(chatStreamEvents(declined).join(""));

    // A chat stream whose caller asked: its usage chunk, unchanged.
    const asked = chatBody(tenant, "g h", { stream: true, stream_options: { include_usage: true } });
    const askedText = await (await chat(tenant, asked, { "x-request-id": ids[3]! })).text();
    expect(askedText).toBe(chatStreamEvents(asked).join(""));
    expect(askedText).toContain('"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":5');

    // Responses, not streamed (4 input words) and streamed (2 input words, 1 cached).
    await (await responses(tenant, { input: "p q r s" }, { "x-request-id": ids[4]! })).text();
    const streamed = { model: tenant.model, input: "t u", stream: true, ...cue({ cached_tokens: 1 }) };
    const streamedText = await (await responses(tenant, streamed, { "x-request-id": ids[5]! })).text();
    expect(streamedText).toBe(responsesStreamEvents(streamed).join(""));

    // What the upstream was sent: the caller's bytes, with only the stream options asked for.
    const [sent] = await upstreamRequests(ids[1]!);
    expect(sent!.body).toBe(`{"stream_options":{"include_usage":true},${JSON.stringify(unasked).slice(1)}`);
    const [sentDeclined] = await upstreamRequests(ids[2]!);
    expect(sentDeclined!.body).toBe(
      JSON.stringify(declined).replace('"include_usage":false', '"include_usage":true'),
    );
    expect((await upstreamRequests(ids[3]!))[0]!.body).toBe(JSON.stringify(asked));

    const usage: Array<[number, number, number]> = [
      [3, 5, 1],
      [2, 5, 0],
      [4, 5, 0],
      [2, 5, 0],
      [4, 5, 0],
      [2, 5, 1],
    ];
    const sum = (i: 0 | 1 | 2) => usage.reduce((total, u) => total + u[i], 0);
    const cost = usage.reduce((total, [i, o, c]) => total + nanos(i, o, c), 0) / 1e9;
    const expected = counters({
      requests: 6,
      input_tokens: sum(0),
      output_tokens: sum(1),
      cached_tokens: sum(2),
      cost_usd: cost,
    });
    const result = await reportWhen(tenant.org, 6);
    expect(result.total).toEqual(expected);
    expect(result.data).toEqual([{ model: tenant.model, ...expected }]);
    expect(result).toMatchObject({ object: "usage_report", org: tenant.org, group_by: ["model"] });

    // Each log line carries its own request's figures.
    for (const [n, id] of ids.entries()) {
      const [input, output, cached] = usage[n]!;
      await vi.waitFor(
        () =>
          expect(linesFor(id)).toMatchObject([
            {
              input_tokens: input,
              output_tokens: output,
              cached_tokens: cached,
              cost_usd: nanos(input, output, cached) / 1e9,
              usage_estimated: false,
            },
          ]),
        LOG_WAIT,
      );
    }
  });

  it("asks for usage inside the body's object when the body starts with whitespace", async () => {
    const tenant = await seedTenant();
    const id = unique("usage-space");
    const object = `{"model": "${tenant.model}", "messages": [{"role": "user", "content": "a"}], "stream": true}`;
    const response = await postRaw("/v1/chat/completions", tenant, ` \n\t${object}`, id);
    expect(response.status).toBe(200);
    await response.text();
    expect((await upstreamRequests(id))[0]!.body).toBe(
      ` \n\t{"stream_options":{"include_usage":true},${object.slice(1)}`,
    );
  });

  it("rewrites a renamed model and the caller's stream_options after it in one body, each value in place", async () => {
    const alias = unique("alias");
    const tenant = await seedTenant({ models: { [alias]: { upstream_model: "real/model-2" } } });
    const id = unique("rename-usage");
    // The usage edit comes after the model's in the text but is made first: the edits are sorted.
    const body = (model: string, options: string) =>
      `{"model": "${model}", "messages": [{"role": "user", "content": "a b"}], "stream": true,` +
      ` "stream_options": ${options}, "n": 1}`;
    const response = await postRaw(
      "/v1/chat/completions",
      tenant,
      body(alias, '{"include_usage": false}'),
      id,
    );
    expect(response.status).toBe(200);
    await response.text();
    expect((await upstreamRequests(id))[0]!.body).toBe(body("real/model-2", '{"include_usage":true}'));
  });

  it("gives the openai client its usage chunk when it asks, and none when it does not", async () => {
    const tenant = await seedTenant();
    const params = {
      model: tenant.model,
      messages: [{ role: "user" as const, content: "how are you" }],
      stream: true as const,
    };
    const client = openai(tenant.key);
    const chunks = [];
    for await (const chunk of await client.chat.completions.create({
      ...params,
      stream_options: { include_usage: true },
    }))
      chunks.push(chunk);
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage).toEqual({
      prompt_tokens: 3,
      completion_tokens: 5,
      total_tokens: 8,
      prompt_tokens_details: { cached_tokens: 0 },
    });
    const unasked = [];
    for await (const chunk of await client.chat.completions.create(params)) unasked.push(chunk);
    expect(unasked).toHaveLength(chunks.length - 1);
    expect(unasked.filter((chunk) => chunk.usage !== undefined || chunk.choices.length === 0)).toEqual([]);
    expect((await reportWhen(tenant.org, 2)).total).toMatchObject({ input_tokens: 6, output_tokens: 10 });
  });
});

describe("a usage chunk split over data lines", () => {
  it("is read, and kept from a caller who did not ask for it, as an SSE client would join it", async () => {
    const tenant = await seedTenant();
    const content = 'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n';
    const usage = 'data: {"choices":[],"usage":\ndata: {"prompt_tokens":7,"completion_tokens":2}}\n\n';
    const done = "data: [DONE]\n\n";
    const response = await chat(tenant, { stream: true, ...cue({ raw_stream: content + usage + done }) });
    expect(await response.text()).toBe(content + done);
    expect((await reportWhen(tenant.org, 1)).total).toMatchObject({
      input_tokens: 7,
      output_tokens: 2,
      estimated_requests: 0,
    });
  });
});

describe("estimated usage", () => {
  it("estimates an interrupted stream on both routes: a token per 4 body bytes, one per content delta sent", async () => {
    const tenant = await pricedTenant();
    const chatRequest = chatBody(tenant, "hello there", { stream: true, ...cue({ reset_after_events: 4 }) });
    const chatId = unique("interrupted");
    const chatText = await (await chat(tenant, chatRequest, { "x-request-id": chatId })).text();
    expect(chatText).toContain("stream_error");
    const responsesRequest = {
      model: tenant.model,
      input: "hi",
      stream: true,
      ...cue({ reset_after_events: 6 }),
    };
    const responsesId = unique("interrupted");
    await (await responses(tenant, responsesRequest, { "x-request-id": responsesId })).text();

    // The role chunk and three content chunks; four announcing events and two deltas.
    const chatInput = Math.ceil(JSON.stringify(chatRequest).length / 4);
    const responsesInput = Math.ceil(JSON.stringify(responsesRequest).length / 4);
    const result = await reportWhen(tenant.org, 2);
    expect(result.total).toEqual(
      counters({
        requests: 2,
        input_tokens: chatInput + responsesInput,
        output_tokens: 3 + 2,
        cost_usd: (nanos(chatInput, 3, 0) + nanos(responsesInput, 2, 0)) / 1e9,
        estimated_requests: 2,
      }),
    );
    await vi.waitFor(
      () =>
        expect(linesFor(chatId)).toMatchObject([
          { stream_outcome: "interrupted", input_tokens: chatInput, output_tokens: 3, usage_estimated: true },
        ]),
      LOG_WAIT,
    );
  });

  it("estimates a stream whose client left, counting the deltas that went out", async () => {
    const tenant = await seedTenant();
    const body = chatBody(tenant, "x", { stream: true, ...cue({ events: 200, interval_ms: 20 }) });
    const id = unique("left");
    const reader = (await chat(tenant, body, { "x-request-id": id })).body!.getReader();
    const decoder = new TextDecoder();
    let received = "";
    while (received.split('"content":"tok').length - 1 < 3) {
      const { done, value } = await reader.read();
      // A stream that ends before three deltas would otherwise be read for ever.
      expect(done).toBe(false);
      received += decoder.decode(value);
    }
    await reader.cancel();
    const result = await reportWhen(tenant.org, 1);
    await vi.waitFor(
      () => expect(linesFor(id)).toMatchObject([{ stream_outcome: "client_cancelled" }]),
      LOG_WAIT,
    );
    const [line] = linesFor(id);
    expect(line).toMatchObject({
      input_tokens: Math.ceil(JSON.stringify(body).length / 4),
      usage_estimated: true,
    });
    // At least what the client read; at most what the upstream had sent before it was cancelled.
    expect(line!.output_tokens).toBeGreaterThanOrEqual(3);
    expect(line!.output_tokens).toBeLessThan(200);
    expect(result.total).toEqual(
      counters({
        requests: 1,
        input_tokens: line!.input_tokens as number,
        output_tokens: line!.output_tokens as number,
        estimated_requests: 1,
      }),
    );
  });

  it("estimates the answers of an upstream that reports no usage, streamed or not", async () => {
    const tenant = await seedTenant();
    const bodyOnly = chatBody(tenant, "a b c", cue({ no_usage: true }));
    await (await chat(tenant, bodyOnly)).text();
    const streamed = chatBody(tenant, "a b c", { stream: true, ...cue({ no_usage: true }) });
    expect(await (await chat(tenant, streamed)).text()).toBe(chatStreamEvents(streamed).join(""));
    const answered = { model: tenant.model, input: "x", ...cue({ no_usage: true }) };
    await (await responses(tenant, answered)).text();
    const input = [bodyOnly, streamed, answered].reduce(
      (sum, b) => sum + Math.ceil(JSON.stringify(b).length / 4),
      0,
    );
    // A body has no content-delta events; the stream had five.
    expect((await reportWhen(tenant.org, 3)).total).toEqual(
      counters({ requests: 3, input_tokens: input, output_tokens: 5, estimated_requests: 3 }),
    );
  });
});

describe("what is not metered as usage", () => {
  it("counts nothing for requests refused before the upstream, and an upstream error without tokens", async () => {
    const orgLimits = { requests_per_minute: 3, user_requests_per_minute: 3 };
    const tenant = await seedTenant({ orgLimits });
    const other = await seedTenant({ org: tenant.org, orgLimits, grants: [] });
    expect((await chat(tenant, { messages: [] })).status).toBe(400);
    expect((await chat(tenant, { model: "no-such-model" })).status).toBe(400);
    expect((await chat(other, { model: tenant.model })).status).toBe(403);
    const failedId = unique("upstream-500");
    const failed = await chat(tenant, cue({ status: 500, body: '{"error":"boom"}' }), {
      "x-request-id": failedId,
    });
    expect(failed.status).toBe(500);
    expect((await chat(tenant)).status).toBe(200);
    expect((await chat(tenant)).status).toBe(200);
    expect((await chat(tenant)).status).toBe(429);
    const result = await reportWhen(tenant.org, 3);
    expect(result.total).toEqual(
      counters({ requests: 3, input_tokens: 2, output_tokens: 10, upstream_errors: 1 }),
    );
    await vi.waitFor(
      () =>
        expect(linesFor(failedId)).toMatchObject([
          { status: 500, input_tokens: null, output_tokens: null, cost_usd: null, usage_estimated: null },
        ]),
      LOG_WAIT,
    );
    // Later batches add nothing for the refusals either.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await reportOf(tenant.org)).total.requests).toBe(3);
  });
});

describe("the report", () => {
  // Midnight UTC of yesterday, in hours since the epoch: rows on both sides of a day boundary.
  const midnight = Math.floor(Date.now() / (24 * HOUR)) * 24 - 24;
  const iso = (hour: number) => new Date(hour * HOUR).toISOString();
  const row = (hour: number, key: string, user: string, model: string, requests: number): UsageRow => ({
    hour,
    key_id: key,
    user,
    model,
    requests,
    input_tokens: 10 * requests,
    output_tokens: requests,
    cached_tokens: 0,
    cost_nanos: 1000 * requests,
    estimated_requests: 0,
    upstream_errors: 0,
  });
  const sums = (requests: number) =>
    counters({ requests, input_tokens: 10 * requests, output_tokens: requests, cost_usd: requests / 1e6 });

  async function seeded() {
    const org = unique("org");
    await gate(org).recordUsage(
      [
        row(midnight - 1, "key_a", "alice", "m1", 1),
        row(midnight, "key_a", "alice", "m1", 2),
        row(midnight, "key_b", "bob", "m2", 4),
        row(midnight + 1, "key_b", "bob", "m1", 8),
      ],
      90,
    );
    return org;
  }

  it("groups by day and model, split at midnight UTC", async () => {
    const org = await seeded();
    const query = `from=${iso(midnight - 1)}&to=${iso(midnight + 2)}&group_by=day,model`;
    const result = await reportOf(org, query);
    const day = (hour: number) => iso(hour).slice(0, 10);
    expect(result).toEqual({
      object: "usage_report",
      org,
      from: iso(midnight - 1),
      to: iso(midnight + 2),
      group_by: ["day", "model"],
      data: [
        { day: day(midnight - 1), model: "m1", ...sums(1) },
        { day: day(midnight), model: "m1", ...sums(10) },
        { day: day(midnight), model: "m2", ...sums(4) },
      ],
      total: sums(15),
    });
  });

  it("groups by hour, user and key, each in group_by order", async () => {
    const org = await seeded();
    const range = `from=${iso(midnight - 1)}&to=${iso(midnight + 2)}`;
    expect((await reportOf(org, `${range}&group_by=hour`)).data).toEqual([
      { hour: iso(midnight - 1), ...sums(1) },
      { hour: iso(midnight), ...sums(6) },
      { hour: iso(midnight + 1), ...sums(8) },
    ]);
    expect((await reportOf(org, `${range}&group_by=user,key`)).data).toEqual([
      { user: "alice", key_id: "key_a", ...sums(3) },
      { user: "bob", key_id: "key_b", ...sums(12) },
    ]);
    expect((await reportOf(org, `${range}&group_by=model,user`)).data).toEqual([
      { model: "m1", user: "alice", ...sums(3) },
      { model: "m1", user: "bob", ...sums(8) },
      { model: "m2", user: "bob", ...sums(4) },
    ]);
  });

  it("takes from inclusive and to exclusive, both truncated to the hour", async () => {
    const org = await seeded();
    // 00:59:59 is the midnight hour; 01:30 ends before the 01:00 hour.
    const from = new Date(midnight * HOUR + HOUR - 1000).toISOString();
    const to = new Date((midnight + 1) * HOUR + HOUR / 2).toISOString();
    const result = await reportOf(org, `from=${from}&to=${to}&group_by=hour`);
    expect([result.from, result.to]).toEqual([iso(midnight), iso(midnight + 1)]);
    expect(result.data).toEqual([{ hour: iso(midnight), ...sums(6) }]);
    // A date alone is its UTC midnight.
    const days = await reportOf(org, `from=${iso(midnight).slice(0, 10)}&group_by=day`);
    expect(days.from).toBe(iso(midnight));
    expect(days.total).toEqual(sums(14));
  });

  it("shows nothing older than USAGE_RETENTION_DAYS, and drops it", async () => {
    const org = unique("org");
    const now = Math.floor(Date.now() / HOUR);
    await gate(org).recordUsage(
      [row(now - 2 * 24, "k", "u", "m", 1), row(now - 4 * 24, "k", "u", "m", 2)],
      90,
    );
    const query = `from=${iso(now - 10 * 24)}&group_by=model`;
    expect((await reportOf(org, query)).total.requests).toBe(3);
    const shortened = await gatewayWith({ USAGE_RETENTION_DAYS: "3" }, `/admin/orgs/${org}/usage?${query}`, {
      headers: ADMIN,
    });
    expect((await shortened.json<Report>()).total.requests).toBe(1);
    expect((await reportOf(org, query)).total.requests).toBe(1);
  });

  it("survives a Durable Object restart", async () => {
    const tenant = await seedTenant();
    await (await chat(tenant)).text();
    const before = await reportWhen(tenant.org, 1, "group_by=key,user,model");
    await evictDurableObject(gate(tenant.org));
    expect(await reportOf(tenant.org, "group_by=key,user,model")).toEqual(before);
    expect(before.data).toEqual([
      {
        key_id: tenant.keyId,
        user: tenant.user,
        model: tenant.model,
        ...counters({ requests: 1, input_tokens: 1, output_tokens: 5 }),
      },
    ]);
  });

  it("defaults to the start of this UTC month until the end of this hour, grouped by model", async () => {
    const org = unique("org");
    const now = new Date();
    const result = await reportOf(org);
    expect(result).toEqual({
      object: "usage_report",
      org,
      from: new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString(),
      to: iso(Math.floor(now.getTime() / HOUR) + 1),
      group_by: ["model"],
      data: [],
      total: counters({}),
    });
  });

  for (const [what, query, param, message] of [
    [
      "a from that is not a date",
      "from=yesterday",
      "from",
      "Invalid 'from': must be an ISO 8601 date (2026-12-01) or timestamp with an offset (2026-12-01T10:00:00Z).",
    ],
    [
      "a to without an offset",
      "to=2026-12-01T10:00:00",
      "to",
      "Invalid 'to': must be an ISO 8601 date (2026-12-01) or timestamp with an offset (2026-12-01T10:00:00Z).",
    ],
    [
      "a to before from",
      "from=2026-12-02&to=2026-12-01",
      "to",
      "Invalid 'to': must be at least an hour after 'from' (both are truncated to the hour).",
    ],
    [
      "a to in from's hour",
      "from=2026-12-01T10:10:00Z&to=2026-12-01T10:50:00Z",
      "to",
      "Invalid 'to': must be at least an hour after 'from' (both are truncated to the hour).",
    ],
    [
      "an unknown grouping",
      "group_by=model,team",
      "group_by",
      "Invalid 'group_by': must be a comma list of model, user, key, day, hour, each at most once.",
    ],
    [
      "a grouping twice",
      "group_by=day,day",
      "group_by",
      "Invalid 'group_by': must be a comma list of model, user, key, day, hour, each at most once.",
    ],
    [
      "an empty group_by",
      "group_by=",
      "group_by",
      "Invalid 'group_by': must be a comma list of model, user, key, day, hour, each at most once.",
    ],
    ["an unknown parameter", "form=2026-12-01", "form", "Unknown parameter 'form'."],
  ] as const) {
    it(`answers 400 invalid_body for ${what}`, async () => {
      const response = await report(unique("org"), query);
      expect(await expectGatewayError(response, 400, "invalid_request_error", "invalid_body", param)).toBe(
        message,
      );
    });
  }

  it("answers 405 to another method, and 401 without the admin token", async () => {
    const org = unique("org");
    const post = await gateway(`/admin/orgs/${org}/usage`, { method: "POST", headers: ADMIN });
    await expectGatewayError(post, 405, "invalid_request_error", "method_not_allowed");
    expect(post.headers.get("allow")).toBe("GET");
    expect((await gateway(`/admin/orgs/${org}/usage`)).status).toBe(401);
  });

  it("answers 500, never a made-up figure, when the stored usage is not what the gate writes", async () => {
    const org = unique("org");
    await gate(org).recordUsage([], 90);
    await runInDurableObject(gate(org), (_, state) => {
      state.storage.sql.exec(
        // A fraction where the gate only ever writes whole nano-dollars.
        "INSERT INTO usage VALUES (?, 'k', 'u', 'm', 1, 1, 1, 0, 0.5, 0, 0)",
        Math.floor(Date.now() / HOUR),
      );
    });
    await expectGatewayError(await report(org), 500, "server_error", "internal_error");
  });

  it("refuses rows that are not usage rows, writing none", async () => {
    const org = unique("org");
    const now = Math.floor(Date.now() / HOUR);
    const bad = { ...row(now, "k", "u", "m", 1), requests: -1 };
    await runInDurableObject(gate(org), (instance) => {
      expect(() => instance.recordUsage([row(now, "k", "u", "m", 1), bad], 90)).toThrow(
        "Invalid value: Expected >=0 but received -1",
      );
    });
    expect((await reportOf(org)).total.requests).toBe(0);
  });
});
