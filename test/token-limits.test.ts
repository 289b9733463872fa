import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { RateLimitError } from "openai";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { OrgRecord } from "../src/records";
import type { Env } from "../src/types";
import {
  expectGatewayError,
  expectNotForwarded,
  gateway,
  gatewayWith,
  jsonBytes,
  openai,
  postRaw,
  reserving,
  seedTenant,
  unique,
  until,
  upstreamRequests,
  usageOnce,
  type Tenant,
} from "./helpers";

// Tokens per minute, through the Worker's HTTP surface: what a request reserves at admission, what
// it is charged once it ends, and the 429 of a scope whose last minute of tokens is spent. Where a
// test needs time to pass it fakes Date, which the org's gate (in this isolate) reads too: its
// clock then stands still between steps, so every wait is exact.

const CHAT = "/v1/chat/completions";
const RESPONSES = "/v1/responses";
const WINDOW_MS = 60_000;
const ADMIN = { authorization: "Bearer test-admin-token", "content-type": "application/json" };

const gate = (org: string) => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(org));

afterEach(() => {
  vi.useRealTimers();
});

/** An org record with request limits that never bind, and these token limits. */
const limits = (tokens: OrgRecord): OrgRecord => ({
  requests_per_minute: 1000,
  user_requests_per_minute: 1000,
  ...tokens,
});

/** Sends exactly this body's JSON text to a route as the tenant. */
const send = (tenant: Tenant, body: unknown, path = CHAT, requestId = unique("tpm")) =>
  postRaw(path, tenant, JSON.stringify(body), requestId);

/** A chat request reserving `reserve` tokens and using `use`; its status, the body read. */
async function chatUsing(tenant: Tenant, reserve: number, use: number, extra: Record<string, unknown> = {}) {
  const response = await send(tenant, reserving("chat", tenant.model, reserve, use, extra));
  await response.arrayBuffer();
  return response.status;
}

/**
 * Starts a streamed chat that reserves 100 tokens and uses 400 (399 content pieces after a one-word
 * prompt), whose upstream answers 300 ms (real time) after it is asked. Resolves once the upstream
 * has it, so the admission has been made, with the answer still to come.
 */
async function overrunning(tenant: Tenant): Promise<{ answer: Promise<Response> }> {
  const id = unique("long");
  const body = reserving("chat", tenant.model, 100, 2, {
    stream: true,
    mock: { events: 399, delay_ms: 300 },
  });
  const answer = send(tenant, body, CHAT, id);
  await until(async () => expect(await upstreamRequests(id)).toHaveLength(1));
  return { answer };
}

/** The tokens the org's requests used, once `requests` of them are recorded (and so settled). */
async function settled(org: string, requests: number): Promise<number> {
  const total = await usageOnce(org, requests);
  return total.input_tokens + total.output_tokens;
}

/** Asserts the contract's 429 for a token limit: the scope, the limit, and (if given) the exact wait. */
async function expectTokenLimited(
  response: Response,
  scope: "organization" | "user",
  limit: number,
  retryAfterMs?: number,
) {
  expect(response.status).toBe(429);
  const ms = response.headers.get("retry-after-ms");
  expect(ms).toMatch(/^\d+$/);
  expect(response.headers.get("retry-after")).toBe(String(Math.max(1, Math.ceil(Number(ms) / 1000))));
  if (retryAfterMs === undefined) {
    expect(Number(ms)).toBeGreaterThan(0);
    expect(Number(ms)).toBeLessThanOrEqual(WINDOW_MS);
  } else {
    expect(Number(ms)).toBe(retryAfterMs);
  }
  const message = await expectGatewayError(response, 429, "rate_limit_error", "rate_limit_exceeded");
  expect(message).toBe(`Rate limit reached for this ${scope}: ${limit} tokens per minute.`);
}

/**
 * Asserts that exactly `room` more tokens fit in the scope's window now: a request reserving one
 * more gets the 429 with the exact wait, and one reserving `room` (and using 2) is admitted.
 */
async function expectRoom(
  tenant: Tenant,
  room: number,
  retryAfterMs: number,
  { scope = "organization", limit = 1000 }: { scope?: "organization" | "user"; limit?: number } = {},
) {
  await expectTokenLimited(
    await send(tenant, reserving("chat", tenant.model, room + 1, 2)),
    scope,
    limit,
    retryAfterMs,
  );
  expect(await chatUsing(tenant, room, 2)).toBe(200);
}

/** Freezes Date (the gate's clock too) at now; returns a function that moves it on. */
function freezeClock(): (ms: number) => void {
  vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
  return (ms) => vi.advanceTimersByTime(ms);
}

describe("tokens per minute under load", () => {
  it("admits exactly the tokens of each limit among 200 concurrent requests", async () => {
    // Every request reserves 200 and uses 200, so it makes no difference when each one ends.
    // Org A: 2 users of limit 10 x 200 sending 50 each, org limit 16 x 200 - 1: exactly 15 fit.
    // Org B: 2 users of limit 8 x 200 - 1 sending 50 each, org limit far above: exactly 7 each.
    const r = 200;
    const a = limits({ tokens_per_minute: 16 * r - 1, user_tokens_per_minute: 10 * r });
    const b = limits({ tokens_per_minute: 100 * r, user_tokens_per_minute: 8 * r - 1 });
    const a1 = await seedTenant({ orgLimits: a });
    const a2 = await seedTenant({ org: a1.org, orgLimits: a });
    const b1 = await seedTenant({ orgLimits: b });
    const b2 = await seedTenant({ org: b1.org, orgLimits: b });
    const sends = [a1, a2, b1, b2].flatMap((tenant) => Array.from({ length: 50 }, () => tenant));
    const answers = await Promise.all(
      sends.map(async (tenant) => {
        const response = await send(tenant, reserving("chat", tenant.model, r, r));
        return { tenant, response, text: await response.clone().text() };
      }),
    );
    const admitted = (pick: (t: Tenant) => boolean) =>
      answers.filter(({ tenant, response }) => pick(tenant) && response.status === 200).length;
    expect(admitted((t) => t.org === a1.org)).toBe(15);
    expect(admitted((t) => t === a1)).toBeLessThanOrEqual(10);
    expect(admitted((t) => t === a2)).toBeLessThanOrEqual(10);
    expect(admitted((t) => t === b1)).toBe(7);
    expect(admitted((t) => t === b2)).toBe(7);
    for (const { tenant, response, text } of answers) {
      if (response.status === 200) continue;
      const scope = JSON.parse(text).error.message.includes("organization") ? "organization" : "user";
      if (tenant.org === b1.org) await expectTokenLimited(response, "user", 8 * r - 1);
      else await expectTokenLimited(response, scope, scope === "user" ? 10 * r : 16 * r - 1);
    }
  }, 60_000);
});

describe("what an admission reserves", () => {
  const estimate = (body: unknown, cap: number) => Math.ceil(jsonBytes(body) / 4) + cap;
  const base = (model: string, extra: Record<string, unknown>) => ({
    model,
    messages: [{ role: "user", content: "hi" }],
    ...extra,
  });

  for (const [what, path, body, cap, vars] of [
    ["max_tokens", CHAT, (m: string) => base(m, { max_tokens: 300 }), 300, {}],
    ["max_completion_tokens", CHAT, (m: string) => base(m, { max_completion_tokens: 300 }), 300, {}],
    [
      "the larger of max_tokens and max_completion_tokens",
      CHAT,
      (m: string) => base(m, { max_tokens: 100, max_completion_tokens: 300 }),
      300,
      {},
    ],
    [
      "max_output_tokens on /v1/responses",
      RESPONSES,
      (m: string) => ({ model: m, input: "hi", max_output_tokens: 300 }),
      300,
      {},
    ],
    ["DEFAULT_MAX_OUTPUT_TOKENS (4096) without a cap", CHAT, (m: string) => base(m, {}), 4096, {}],
    [
      "the default for a cap that is not a positive integer",
      CHAT,
      (m: string) => base(m, { max_tokens: 2.5, max_completion_tokens: "300", max_output_tokens: 0 }),
      4096,
      {},
    ],
    [
      "DEFAULT_MAX_OUTPUT_TOKENS as set",
      CHAT,
      (m: string) => base(m, {}),
      200,
      { DEFAULT_MAX_OUTPUT_TOKENS: "200" },
    ],
  ] as const) {
    it(`reserves a token per 4 body bytes plus ${what}`, async () => {
      // A first request leaves 2 tokens in the window. The request under test fits a limit of
      // exactly 2 + its reservation, and not one of a token less.
      const post = (vars: Partial<Env>, tenant: Tenant, payload: unknown, route = CHAT) =>
        gatewayWith(vars, route, {
          method: "POST",
          headers: { authorization: `Bearer ${tenant.key}`, "content-type": "application/json" },
          body: JSON.stringify(payload),
        });
      for (const spare of [0, -1]) {
        const model = unique("model");
        const reserved = estimate(body(model), cap);
        const limit = 2 + reserved + spare;
        const tenant = await seedTenant({
          models: { [model]: {} },
          orgLimits: limits({ tokens_per_minute: limit }),
        });
        const first = await post(vars, tenant, reserving("chat", model, 60, 2));
        expect(first.status).toBe(200);
        expect(await settled(tenant.org, 1)).toBe(2);
        const response = await post(vars, tenant, body(model), path);
        if (spare === 0) expect(response.status).toBe(200);
        else await expectTokenLimited(response, "organization", limit);
      }
    });
  }

  it("caps a reservation at the smaller token limit, so a request larger than a limit is admitted alone", async () => {
    const orgLimits = limits({ tokens_per_minute: 1000, user_tokens_per_minute: 600 });
    const tenant = await seedTenant({ orgLimits });
    const other = await seedTenant({ org: tenant.org, orgLimits });
    // An estimate far above both limits reserves the user's 600 (and uses 600, so its end changes nothing).
    const huge = reserving("chat", tenant.model, 600, 600, { max_completion_tokens: 1_000_000 });
    expect((await send(tenant, huge)).status).toBe(200);
    await expectTokenLimited(await send(tenant, reserving("chat", tenant.model, 40, 2)), "user", 600);
    // The org has 400 left: another user's request of 401 does not fit, one of 400 does.
    await expectTokenLimited(await send(other, reserving("chat", other.model, 401, 2)), "organization", 1000);
    expect(await chatUsing(other, 400, 2)).toBe(200);
  });
});

describe("when a request ends", () => {
  const T = 2000;

  /** How each ending is brought about, and what the request is then charged (given its body). */
  const ENDINGS: Array<{
    ending: string;
    extra: Record<string, unknown>;
    charged: (body: Record<string, unknown>) => number | null;
    read?: (response: Response) => Promise<void>;
  }> = [
    { ending: "completes", extra: {}, charged: () => 6 },
    {
      ending: "completes as a stream",
      extra: { stream: true },
      charged: () => 6,
    },
    {
      // The role chunk and three content chunks, then the connection is cut: the estimate.
      ending: "is interrupted",
      extra: { stream: true, mock: { reset_after_events: 4 } },
      charged: (body) => Math.ceil(jsonBytes(body) / 4) + 3,
    },
    {
      ending: "is cancelled by its client",
      extra: { stream: true, mock: { events: 200, interval_ms: 20 } },
      // The estimate: the body's quarter-bytes and the deltas that went out, not known in advance.
      charged: () => null,
      async read(response) {
        const reader = response.body!.getReader();
        const decoder = new TextDecoder();
        let received = "";
        while (received.split('"content":"tok').length - 1 < 3) {
          const { done, value } = await reader.read();
          if (done) throw new Error(`the stream ended after ${received}`);
          received += decoder.decode(value);
        }
        await reader.cancel();
      },
    },
    {
      ending: "gets an upstream error",
      extra: { mock: { status: 500, body: '{"error":"boom"}' } },
      charged: () => 0,
    },
    { ending: "cannot reach its upstream", extra: { mock: { reset: true } }, charged: () => 0 },
  ];

  for (const { ending, extra, charged, read } of ENDINGS) {
    for (const scope of ["organization", "user"] as const) {
      it(`charges a request that ${ending} what it used, not its reservation (${scope})`, async () => {
        const orgLimits = limits(
          scope === "organization" ? { tokens_per_minute: T } : { user_tokens_per_minute: T },
        );
        const tenant = await seedTenant({ orgLimits });
        // In the org's scope, another user's requests see what is left.
        const next = scope === "organization" ? await seedTenant({ org: tenant.org, orgLimits }) : tenant;
        const body = reserving("chat", tenant.model, T, 6, extra);
        const response = await send(tenant, body);
        if (read) await read(response);
        else await response.arrayBuffer();
        const used = await settled(tenant.org, 1);
        const expected = charged(body);
        if (expected !== null) expect(used).toBe(expected);
        else expect(used).toBeGreaterThanOrEqual(Math.ceil(jsonBytes(body) / 4) + 3);
        expect(used).toBeLessThan(T);
        // Exactly what it used is left charged: a reservation of the rest fits, one token more does not.
        if (used > 0) {
          await expectTokenLimited(
            await send(next, reserving("chat", next.model, T - used + 1, 2)),
            scope,
            T,
          );
        }
        expect(await chatUsing(next, T - used, 2)).toBe(200);
      });
    }
  }

  it("charges what it used to a request admitted later in the same second as another", async () => {
    const advance = freezeClock();
    // At the start of a second, so that both admissions fall in it, 300 ms apart.
    advance(1_000 - (Date.now() % 1_000));
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    expect(await chatUsing(tenant, 200, 200)).toBe(200);
    advance(300);
    // 500 reserved, 2 used: its settlement finds its own charge in the second the two share.
    expect(await chatUsing(tenant, 500, 2)).toBe(200);
    expect(await settled(tenant.org, 2)).toBe(202);
    await expectRoom(tenant, 798, WINDOW_MS - 300);
  });

  // Its settlement finds its own charge, the oldest of three, left of the middle: among the
  // window's seconds, or among one second's milliseconds.
  for (const { later, step } of [
    { later: "in each of the next two seconds", step: 1_000 },
    { later: "300 and 600 ms later in its own second", step: 300 },
  ]) {
    it(`charges what it used to a request that ends after a charge ${later}`, async () => {
      const advance = freezeClock();
      // At the start of a second, so that 600 ms later is in it.
      advance(1_000 - (Date.now() % 1_000));
      const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
      // 500 reserved, a few used, answered 300 ms (real time) after the upstream is asked.
      const id = unique("early");
      const answer = send(
        tenant,
        reserving("chat", tenant.model, 500, 2, { mock: { delay_ms: 300 } }),
        CHAT,
        id,
      );
      await until(async () => expect(await upstreamRequests(id)).toHaveLength(1));
      for (let charge = 0; charge < 2; charge++) {
        advance(step);
        expect(await chatUsing(tenant, 100, 100)).toBe(200);
      }
      await (await answer).arrayBuffer();
      const used = (await settled(tenant.org, 3)) - 200;
      expect(used).toBeLessThan(500);
      await expectRoom(tenant, 800 - used, WINDOW_MS - 2 * step);
    });
  }

  it("charges what it used to a request admitted in the same millisecond as one already settled", async () => {
    freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    // Settled to 2 before the next is admitted, on a clock that stands still: one millisecond's
    // charge holds both, and the later request's 498 to give back exceed the 2 the first left.
    expect(await chatUsing(tenant, 200, 2)).toBe(200);
    expect(await settled(tenant.org, 1)).toBe(2);
    expect(await chatUsing(tenant, 500, 2)).toBe(200);
    expect(await settled(tenant.org, 2)).toBe(4);
    await expectRoom(tenant, 996, WINDOW_MS);
  });

  it("charges a request that used more than it reserved, pushing later admissions back", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    // A stream of 399 content pieces after a one-word prompt: 400 tokens, 100 reserved.
    expect(await chatUsing(tenant, 100, 2, { stream: true, mock: { events: 399 } })).toBe(200);
    expect(await settled(tenant.org, 1)).toBe(400);
    advance(1_000);
    // 400 are charged, not the 100 reserved: 601 must wait until the request leaves the window.
    await expectRoom(tenant, 600, WINDOW_MS - 1_000);
  });

  it("charges what a request used beyond its reservation when it ends, if its admission has left the window", async () => {
    const advance = freezeClock();
    // One request a minute for the user: the overrun is tokens, not a request of its own.
    const orgLimits = limits({ tokens_per_minute: 1000, user_requests_per_minute: 1 });
    const tenant = await seedTenant({ orgLimits });
    // As above, 400 tokens used and 100 reserved.
    const { answer } = await overrunning(tenant);
    // Its admission leaves the window while it runs.
    advance(WINDOW_MS);
    const response = await answer;
    expect(response.status).toBe(200);
    await response.arrayBuffer();
    expect(await settled(tenant.org, 1)).toBe(400);
    // Two more admissions in the same millisecond, by other users: each is stored under a key of
    // its own, not over the overrun's.
    const other = await seedTenant({ org: tenant.org, orgLimits });
    const another = await seedTenant({ org: tenant.org, orgLimits });
    expect(await chatUsing(other, 100, 100)).toBe(200);
    expect(await chatUsing(another, 100, 100)).toBe(200);
    expect(await settled(tenant.org, 3)).toBe(600);
    // Stored (the gate writes just after its answers), they outlive a restart.
    await new Promise((resolve) => setTimeout(resolve, 50));
    await evictDurableObject(gate(tenant.org));
    // The 300 beyond its reservation are charged as it ended, for a whole window from then, and the
    // other users' 200 with them.
    await expectRoom(tenant, 500, WINDOW_MS);
  });

  it("charges an overrun whose admission left the window behind an earlier second's charges", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    // A charge two seconds before the overrun's admission: the window's oldest second, which
    // leaves first. Expiry must go on past it to the overrun's second, or the settlement finds an
    // admission still "in the window" and adds the overrun to it, where it counts for nothing.
    expect(await chatUsing(tenant, 100, 100)).toBe(200);
    advance(2_000);
    // As above, 400 tokens used and 100 reserved.
    const { answer } = await overrunning(tenant);
    advance(WINDOW_MS);
    await (await answer).arrayBuffer();
    expect(await settled(tenant.org, 2)).toBe(500);
    // Both admissions have left the window; the 300 beyond the reservation are charged as it ended.
    await expectRoom(tenant, 700, WINDOW_MS);
  });

  it("gives nothing back for a request that used less than it reserved, if its admission has left the window", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    // 400 reserved, a few used, answered 300 ms (real time) after the upstream is asked.
    const id = unique("under");
    const answer = send(
      tenant,
      reserving("chat", tenant.model, 400, 2, { mock: { delay_ms: 300 } }),
      CHAT,
      id,
    );
    await until(async () => expect(await upstreamRequests(id)).toHaveLength(1));
    // Its admission leaves the window while it runs: its reservation has expired, nothing to return.
    advance(WINDOW_MS);
    const response = await answer;
    expect(response.status).toBe(200);
    await response.arrayBuffer();
    const used = await settled(tenant.org, 1);
    expect(used).toBeLessThan(400);
    // An empty window: one request of 1000 fits, and once it has used 2, 998 more and not 999.
    expect(await chatUsing(tenant, 1000, 2)).toBe(200);
    expect(await settled(tenant.org, 2)).toBe(used + 2);
    await expectRoom(tenant, 998, WINDOW_MS);
  });

  it("keeps a user's overrun through the gate's sweep of idle users", async () => {
    const advance = freezeClock();
    // One request a minute per user: the overrun is tokens, not a request.
    const orgLimits = limits({ user_tokens_per_minute: 1000, user_requests_per_minute: 1 });
    const tenant = await seedTenant({ orgLimits });
    const other = await seedTenant({ org: tenant.org, orgLimits });
    // The org's first admission (its gate sweeps then, and at most once a minute after):
    // 100 reserved, 400 used.
    const { answer } = await overrunning(tenant);
    advance(WINDOW_MS);
    await (await answer).arrayBuffer();
    expect(await settled(tenant.org, 1)).toBe(400);
    // A minute on, another user's admission sweeps the gate. The first user has no request in the
    // window, but 300 tokens charged: that user's state is not idle, and stays.
    expect(await chatUsing(other, 100, 100)).toBe(200);
    await expectRoom(tenant, 700, WINDOW_MS, { scope: "user" });
  });

  it("keeps a user's request through the gate's sweep, though it failed upstream and holds no tokens", async () => {
    const advance = freezeClock();
    const orgLimits = limits({ user_requests_per_minute: 1 });
    const tenant = await seedTenant({ orgLimits });
    const other = await seedTenant({ org: tenant.org, orgLimits });
    // The org's first admission: its gate sweeps now, and next a minute on.
    expect(await chatUsing(other, 100, 100)).toBe(200);
    advance(30_000);
    // An upstream error: its reservation becomes 0 tokens, and it is still a request.
    const failed = await send(
      tenant,
      reserving("chat", tenant.model, 100, 2, { mock: { status: 500, body: '{"error":"boom"}' } }),
    );
    expect(failed.status).toBe(500);
    await failed.arrayBuffer();
    expect(await settled(tenant.org, 2)).toBe(100);
    advance(30_000);
    // The other user's next admission sweeps the gate; the first user's request is 30 s old.
    expect(await chatUsing(other, 100, 100)).toBe(200);
    const refused = await send(tenant, reserving("chat", tenant.model, 100, 2));
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after-ms")).toBe("30000");
    expect(await expectGatewayError(refused, 429, "rate_limit_error", "rate_limit_exceeded")).toBe(
      "Rate limit reached for this user: 1 requests per minute.",
    );
  });
});

describe("an overrun whose millisecond has left the window while its second has not", () => {
  it("is charged when its request ends, and the later charges of that second stay exact", async () => {
    // The clock stands at 100 ms into a second: the two admissions below share that second.
    const start = Math.ceil(Date.now() / 1_000) * 1_000 + 100;
    vi.useFakeTimers({ toFake: ["Date"], now: start });
    const advance = (ms: number) => vi.advanceTimersByTime(ms);
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    // 100 reserved at `start`, 400 used.
    const { answer } = await overrunning(tenant);
    // 100 reserved and used at start + 10, in the same second.
    advance(10);
    expect(await chatUsing(tenant, 100, 100)).toBe(200);
    // start + 60,005: the first charge has left the window, the second (until start + 60,010) has not.
    advance(WINDOW_MS - 5);
    const response = await answer;
    expect(response.status).toBe(200);
    await response.arrayBuffer();
    expect(await settled(tenant.org, 2)).toBe(500);
    // Its 300 beyond the reservation are charged now; with the 100 still in the window, 600 fit.
    // 601 wait for that 100 to leave, 5 ms from now.
    await expectRoom(tenant, 600, 5);
    expect(await settled(tenant.org, 3)).toBe(502);
    // 5 ms on, that 100 has left. The overrun's 300 stay, charged as it ended and not to the
    // millisecond after its own, with the 2 the last request used.
    advance(5);
    await expectRoom(tenant, 698, WINDOW_MS - 5);
    // A minute on, everything has left the window, the overrun included: the whole limit fits.
    advance(WINDOW_MS);
    expect(await chatUsing(tenant, 1000, 2)).toBe(200);
  });
});

describe("a token window over minutes of traffic", () => {
  it("keeps exact counts as its per-second sums expire and are cut off, and settles after that", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 6000 }) });
    // A request of 100 every second for 130 s: the window's seconds expire and are cut off twice.
    for (let second = 0; second < 130; second++) {
      expect(await chatUsing(tenant, 100, 100)).toBe(200);
      advance(1_000);
    }
    // The last 59 are in the window: 5900. One more of 101 waits for the oldest, a second away.
    await expectTokenLimited(
      await send(tenant, reserving("chat", tenant.model, 101, 2)),
      "organization",
      6000,
      1_000,
    );
    // One that reserves 100 and uses 50 leaves 5950 charged.
    expect(await chatUsing(tenant, 100, 50)).toBe(200);
    await settled(tenant.org, 131);
    await expectRoom(tenant, 50, 1_000, { limit: 6000 });
    // A minute later all of it has left the window at once: the whole limit is free.
    advance(WINDOW_MS);
    expect(await chatUsing(tenant, 6000, 2)).toBe(200);
  }, 60_000);
});

describe("Retry-After of a token limit", () => {
  it("is the exact time until enough of the window has expired, and a request sent then is admitted", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    expect(await chatUsing(tenant, 600, 600)).toBe(200);
    advance(10_000);
    expect(await chatUsing(tenant, 300, 300)).toBe(200);
    await settled(tenant.org, 2);
    advance(5_000);
    // 900 charged; 500 more need the first 600 gone: 45 s from now.
    const waiting = reserving("chat", tenant.model, 500, 500);
    const id = unique("waits");
    await expectTokenLimited(await send(tenant, waiting, CHAT, id), "organization", 1000, 45_000);
    await expectNotForwarded(id);
    advance(44_999);
    const early = await send(tenant, waiting);
    expect(early.headers.get("retry-after")).toBe("1");
    await expectTokenLimited(early, "organization", 1000, 1);
    advance(1);
    expect((await send(tenant, waiting)).status).toBe(200);
    // Now 300 + 500 are charged; 201 more need the 300 gone, charged 50 s ago.
    await expectRoom(tenant, 200, 10_000);
  });

  it("walks past the oldest charges that are not enough to the one that makes room", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    expect(await chatUsing(tenant, 200, 200)).toBe(200);
    advance(10_000);
    expect(await chatUsing(tenant, 300, 300)).toBe(200);
    await settled(tenant.org, 2);
    advance(5_000);
    // 500 charged; 900 more need both charges gone, the second made 10 s after the first.
    const waiting = reserving("chat", tenant.model, 900, 900);
    await expectTokenLimited(await send(tenant, waiting), "organization", 1000, 55_000);
    advance(54_999);
    await expectTokenLimited(await send(tenant, waiting), "organization", 1000, 1);
    advance(1);
    expect((await send(tenant, waiting)).status).toBe(200);
  });

  it("walks the charges of one second millisecond by millisecond to the one that makes room", async () => {
    const advance = freezeClock();
    // At the start of a second, so that both charges fall in it.
    advance(1_000 - (Date.now() % 1_000));
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    expect(await chatUsing(tenant, 200, 200)).toBe(200);
    advance(300);
    expect(await chatUsing(tenant, 300, 300)).toBe(200);
    await settled(tenant.org, 2);
    advance(10_000);
    // 500 charged; 900 more need both gone: the later one, made 300 ms after the first, leaves 50 s from now.
    await expectTokenLimited(
      await send(tenant, reserving("chat", tenant.model, 900, 900)),
      "organization",
      1000,
      50_000,
    );
  });

  it("reaches the openai client as a RateLimitError with the contract's code and headers", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ user_tokens_per_minute: 500 }) });
    expect(await chatUsing(tenant, 500, 500)).toBe(200);
    advance(2_500);
    const error = await openai(tenant.key)
      .chat.completions.create({ model: tenant.model, messages: [{ role: "user", content: "hi" }] })
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(RateLimitError);
    const limited = error as RateLimitError;
    expect(limited.status).toBe(429);
    expect(limited.code).toBe("rate_limit_exceeded");
    expect(limited.type).toBe("rate_limit_error");
    expect(limited.message).toBe("429 Rate limit reached for this user: 500 tokens per minute.");
    expect(limited.headers.get("retry-after-ms")).toBe("57500");
    expect(limited.headers.get("retry-after")).toBe("58");
  });
});

describe("a refused request", () => {
  it("reserves nothing in either scope when a token limit refuses it", async () => {
    // Org: 1000 tokens, 3 requests; each user 600 tokens.
    const orgLimits: OrgRecord = {
      requests_per_minute: 3,
      user_requests_per_minute: 100,
      tokens_per_minute: 1000,
      user_tokens_per_minute: 600,
    };
    const first = await seedTenant({ orgLimits });
    const second = await seedTenant({ org: first.org, orgLimits });
    const third = await seedTenant({ org: first.org, orgLimits });
    expect(await chatUsing(first, 600, 600)).toBe(200);
    // Refused for the user's tokens, three times: none of it reaches the org's tokens or requests.
    for (let i = 0; i < 3; i++)
      await expectTokenLimited(await send(first, reserving("chat", first.model, 100, 2)), "user", 600);
    expect(await chatUsing(second, 400, 400)).toBe(200);
    // Had the refusals taken any of the org's 3 requests, this would be refused too.
    await expectTokenLimited(await send(third, reserving("chat", third.model, 600, 2)), "organization", 1000);
  });

  it("reserves no tokens when a request limit refuses it", async () => {
    const orgLimits: OrgRecord = {
      requests_per_minute: 100,
      user_requests_per_minute: 1,
      tokens_per_minute: 1000,
    };
    const first = await seedTenant({ orgLimits });
    const second = await seedTenant({ org: first.org, orgLimits });
    expect(await chatUsing(first, 100, 100)).toBe(200);
    const refused = await send(first, reserving("chat", first.model, 900, 2));
    expect(await expectGatewayError(refused, 429, "rate_limit_error", "rate_limit_exceeded")).toBe(
      "Rate limit reached for this user: 1 requests per minute.",
    );
    expect(await chatUsing(second, 900, 900)).toBe(200);
  });
});

describe("token limit changes", () => {
  const putOrg = (org: string, record: OrgRecord) =>
    gateway(`/admin/orgs/${org}`, { method: "PUT", headers: ADMIN, body: JSON.stringify(record) });

  it("take effect at the very next request where the admin API was called", async () => {
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    expect(await chatUsing(tenant, 300, 300)).toBe(200);
    expect((await putOrg(tenant.org, limits({ tokens_per_minute: 600 }))).status).toBe(200);
    await expectTokenLimited(
      await send(tenant, reserving("chat", tenant.model, 301, 2)),
      "organization",
      600,
    );
    const lowered = limits({ tokens_per_minute: 600, user_tokens_per_minute: 500 });
    expect((await putOrg(tenant.org, lowered)).status).toBe(200);
    await expectTokenLimited(await send(tenant, reserving("chat", tenant.model, 201, 2)), "user", 500);
    expect(await chatUsing(tenant, 200, 2)).toBe(200);
  });

  it("take effect within 30 s where KV was written elsewhere, with the wait the new limit sets", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    expect(await chatUsing(tenant, 500, 500)).toBe(200);
    // As another location's admin call (or `wrangler kv key put`) would: this isolate's copy stays.
    await env.GATEWAY_KV.put(`org:${tenant.org}`, JSON.stringify(limits({ tokens_per_minute: 600 })));
    advance(29_900);
    expect(await chatUsing(tenant, 200, 200)).toBe(200);
    advance(200);
    await expectTokenLimited(
      await send(tenant, reserving("chat", tenant.model, 40, 2)),
      "organization",
      600,
      WINDOW_MS - 30_100,
    );
  });
});

describe("token windows across a Durable Object restart", () => {
  it("keep what was charged, reservations still open included, and settle those after it", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    expect(await chatUsing(tenant, 400, 400)).toBe(200);
    await settled(tenant.org, 1);
    // A stream in flight across the restart, 500 reserved: its upstream stalls after the first event.
    const stalled = reserving("chat", tenant.model, 500, 6, {
      stream: true,
      mock: { stall_after_events: 1 },
    });
    const inFlight = await send(tenant, stalled);
    expect(inFlight.status).toBe(200);
    await evictDurableObject(gate(tenant.org));
    await expectTokenLimited(
      await send(tenant, reserving("chat", tenant.model, 101, 2)),
      "organization",
      1000,
      WINDOW_MS,
    );
    expect(await chatUsing(tenant, 100, 100)).toBe(200);
    // A second later the stream is idle past STREAM_IDLE_TIMEOUT_MS (1 s in the tests) and ends,
    // interrupted, after the restart: its 500 become the estimate, its body's quarter-bytes (no
    // content delta went out).
    advance(1_000);
    expect(await inFlight.text()).toContain("stream_error");
    const used = Math.ceil(jsonBytes(stalled) / 4);
    expect(await settled(tenant.org, 3)).toBe(500 + used);
    await evictDurableObject(gate(tenant.org));
    const left = 1000 - 500 - used;
    await expectRoom(tenant, left, WINDOW_MS - 1_000);
  });
});

describe("the gate's stored charges", () => {
  it("count one it cannot read as filling the org's token limit until it leaves the window", async () => {
    const advance = freezeClock();
    const tenant = await seedTenant({ orgLimits: limits({ tokens_per_minute: 1000 }) });
    expect(await chatUsing(tenant, 100, 100)).toBe(200);
    const at = Date.now();
    await runInDurableObject(gate(tenant.org), async (_, state) => {
      await state.storage.put(`a:${String(at).padStart(15, "0")}:000999999`, { user: 7, tokens: "many" });
    });
    await evictDurableObject(gate(tenant.org));
    advance(1_000);
    await expectTokenLimited(
      await send(tenant, reserving("chat", tenant.model, 40, 2)),
      "organization",
      1000,
      WINDOW_MS - 1_000,
    );
    advance(WINDOW_MS - 1_000);
    expect(await chatUsing(tenant, 1000, 2)).toBe(200);
  });
});
