import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import {
  LOG_WAIT,
  captureLogLines,
  cue,
  expectGatewayError,
  expectNotForwarded,
  expectUnauthorized,
  expectVerbatim,
  gateway,
  gatewayWith,
  mockStats,
  postRaw,
  reserving,
  seedTenant,
  unique,
  upstreamRequests,
  usageOnce,
  type Tenant,
} from "./helpers";
import {
  CHAT_FRAME,
  MADE_UP_RESPONSE_ID,
  MESSAGES_FRAME,
  REPLY,
  RESPONSES_UPSTREAM_ID,
  eventsOf,
  referenceStream,
  responsesFrames,
  withoutKeepAlives,
} from "./sse-reference";
import type { Env } from "../src/types";

// The contract's rows for the model routes (the README's error table and its streaming sections),
// as one table: each row shared by the routes is written once and runs on every route of ROUTES. What differs between the routes (their bodies, their own
// schema refusals, their stream dialect) lives in the route's entry.

type Fields = Record<string, unknown>;

/** A gateway refusal in full: the status and the typed envelope, message included. */
interface Refusal {
  status: number;
  type: string;
  code: string;
  param: string | null;
  message: string;
}

const invalidRequest = (
  status: number,
  code: string,
  message: string,
  param: string | null = null,
): Refusal => ({
  status,
  type: "invalid_request_error",
  code,
  param,
  message,
});
const serverError = (status: number, code: string, message: string): Refusal => ({
  status,
  type: "server_error",
  code,
  param: null,
  message,
});
const invalidBody = (param: string | null, message: string) =>
  invalidRequest(400, "invalid_body", message, param);
/** The refusal of a stream flag that is no boolean: Anthropic's `stream` may not be null either. */
const streamFlag = (route: { anthropic?: true }) =>
  invalidBody("stream", `Invalid 'stream': stream must be a boolean${route.anthropic ? "" : " or null"}.`);
const duplicate = (key: string) => invalidBody(key, `Invalid body: '${key}' appears more than once.`);
const NOT_JSON = invalidBody(null, "The request body is not valid JSON.");
const NOT_AN_OBJECT = invalidBody(null, "The request body must be a JSON object.");
const TOO_LARGE = invalidRequest(413, "request_too_large", "Request body exceeds the size limit.");
const BODY_TIMEOUT = invalidRequest(408, "request_timeout", "The request body did not arrive in time.");
const notFound = (model: string) =>
  invalidRequest(400, "model_not_found", `Model '${model}' not found.`, "model");
const UPSTREAM_EMPTY = serverError(
  502,
  "upstream_empty_body",
  "The upstream returned an empty response body.",
);
const UPSTREAM_UNAVAILABLE = serverError(502, "upstream_unavailable", "The upstream could not be reached.");
const UPSTREAM_TIMEOUT = serverError(504, "upstream_timeout", "The upstream did not respond in time.");
const INTERNAL = serverError(500, "internal_error", "An unexpected error occurred in the gateway.");

/** A body only one route's schema refuses. `body` gets the tenant's (granted) model. */
interface OwnInvalidBody {
  what: string;
  body: (model: string) => string;
  refusal: Refusal;
}

interface ModelRoute {
  /** The route; the upstream gets the same path under UPSTREAM_BASE_URL. */
  path: "/v1/chat/completions" | "/v1/responses" | "/v1/messages";
  /** Anthropic's error envelope (the Messages route) rather than the typed one. */
  anthropic?: true;
  /** The route's own fields of a minimal valid body: with a `model`, one. */
  fields: Fields;
  /** Bodies the route's own schema refuses. */
  invalid: OwnInvalidBody[];
  /** Fields of a valid body using the shapes the route's schema allows, and some it does not know. */
  allowed: Fields;
  /** Asserts the mock upstream's non-streamed answer to a valid body. */
  expectAnswer(answer: unknown, model: string): void;
  /** How the route's terminal event begins, with any line ending. */
  terminal: RegExp;
  /** What reaches the caller when the upstream's stream of `events` breaks after `count` of them (`got` names a made-up id). */
  interrupted(events: string[], count: number, got: string): string;
}

const json = (value: unknown) => JSON.stringify(value);
const own = (what: string, body: (model: string) => string, refusal: Refusal): OwnInvalidBody => ({
  what,
  body,
  refusal,
});

const CHAT: ModelRoute = {
  path: "/v1/chat/completions",
  fields: { messages: [{ role: "user", content: "hi" }] },
  invalid: [
    own(
      "missing messages",
      (m) => json({ model: m }),
      invalidBody("messages", "Missing required parameter 'messages'."),
    ),
    own(
      "empty messages",
      (m) => json({ model: m, messages: [] }),
      invalidBody("messages", "Invalid 'messages': messages must not be empty."),
    ),
    own(
      "messages not an array",
      (m) => json({ model: m, messages: "hi" }),
      invalidBody("messages", "Invalid 'messages': messages must be an array."),
    ),
    own(
      "a message that is not an object",
      (m) => json({ model: m, messages: ["hi"] }),
      invalidBody("messages[0]", "Invalid 'messages[0]': each message must be an object."),
    ),
    own(
      "a role that is not a string",
      (m) =>
        json({
          model: m,
          messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }, { role: 3 }],
        }),
      invalidBody("messages[2].role", "Invalid 'messages[2].role': role must be a string."),
    ),
    own(
      "a numeric content",
      (m) => json({ model: m, messages: [{ role: "user", content: 5 }] }),
      invalidBody(
        "messages[0].content",
        "Invalid 'messages[0].content': content must be a string, an array or null.",
      ),
    ),
    own(
      "a tool message without tool_call_id",
      (m) =>
        json({
          model: m,
          messages: [
            { role: "user", content: "a" },
            { role: "tool", content: "r" },
          ],
        }),
      invalidBody(
        "messages[1].tool_call_id",
        "Invalid 'messages[1].tool_call_id': tool messages must have a string tool_call_id.",
      ),
    ),
    own(
      "a non-boolean include_usage",
      (m) =>
        json({ model: m, messages: [{ role: "user", content: "a" }], stream_options: { include_usage: 1 } }),
      invalidBody(
        "stream_options.include_usage",
        "Invalid 'stream_options.include_usage': include_usage must be a boolean.",
      ),
    ),
    own(
      "n of zero",
      (m) => json({ model: m, messages: [{ role: "user", content: "a" }], n: 0 }),
      invalidBody("n", "Invalid 'n': n must be a positive integer."),
    ),
    own(
      "a fractional n",
      (m) => json({ model: m, messages: [{ role: "user", content: "a" }], n: 1.5 }),
      invalidBody("n", "Invalid 'n': n must be a positive integer."),
    ),
    own(
      "messages twice",
      (m) => `{"model":"${m}","messages":[],"messages":[{"role":"user","content":"x"}]}`,
      duplicate("messages"),
    ),
  ],
  allowed: {
    messages: [
      { role: "user", content: [{ type: "text", text: "hi" }], extra: { a: [1] } },
      { role: "tool", tool_call_id: "t1", content: null },
    ],
    temperature: 0.2,
    stream: null,
    n: 1,
    vendor_field: { nested: true },
  },
  expectAnswer(answer, model) {
    expect(answer).toMatchObject({
      object: "chat.completion",
      model,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "Hello from the mock upstream." },
          finish_reason: "stop",
        },
      ],
    });
  },
  terminal: /^data: \[DONE\](\r\n|\r|\n)/,
  interrupted: (events, count) => events.slice(0, count).join("") + CHAT_FRAME,
};

const RESPONSES: ModelRoute = {
  path: "/v1/responses",
  fields: { input: "hi" },
  invalid: [
    own(
      "a numeric input",
      (m) => json({ model: m, input: 42 }),
      invalidBody("input", "Invalid 'input': input must be a string or an array."),
    ),
    own(
      "an object input",
      (m) => json({ model: m, input: { role: "user" } }),
      invalidBody("input", "Invalid 'input': input must be a string or an array."),
    ),
    own(
      "a null input",
      (m) => json({ model: m, input: null }),
      invalidBody("input", "Invalid 'input': input must be a string or an array."),
    ),
    own("input twice", (m) => `{"model":"${m}","input":"a","input":"b"}`, duplicate("input")),
  ],
  allowed: {
    input: [{ role: "user", content: "hi" }],
    instructions: "be brief",
    store: false,
    stream: null,
    vendor_field: { nested: true },
  },
  expectAnswer(answer, model) {
    expect(answer).toMatchObject({
      object: "response",
      status: "completed",
      model,
      output: [{ type: "message", role: "assistant", content: [{ text: "Hello from the mock upstream." }] }],
    });
    expect((answer as { id: string }).id).toMatch(/^resp_mock_\d+$/);
  },
  terminal: /^event: response\.completed(\r\n|\r|\n)data: /,
  interrupted(events, count, got) {
    // The id is the upstream's once its response.created has come; before that, one the gateway made up.
    const id = count > 0 ? RESPONSES_UPSTREAM_ID : (MADE_UP_RESPONSE_ID.exec(got)?.[1] ?? "(no made-up id)");
    // The mock numbers its events from 0: the frames go on from the last one sent.
    return events.slice(0, count).join("") + responsesFrames(count, id);
  },
};

const MESSAGES: ModelRoute = {
  path: "/v1/messages",
  anthropic: true,
  fields: { max_tokens: 64, messages: [{ role: "user", content: "hi" }] },
  invalid: [
    own(
      "missing max_tokens",
      (m) => json({ model: m, messages: [{ role: "user", content: "a" }] }),
      invalidBody("max_tokens", "Missing required parameter 'max_tokens'."),
    ),
    own(
      "a system role in messages",
      (m) => json({ model: m, max_tokens: 5, messages: [{ role: "system", content: "a" }] }),
      invalidBody("messages[0].role", "Invalid 'messages[0].role': role must be 'user' or 'assistant'."),
    ),
    own(
      "a null stream",
      (m) => json({ model: m, max_tokens: 5, messages: [{ role: "user", content: "a" }], stream: null }),
      invalidBody("stream", "Invalid 'stream': stream must be a boolean."),
    ),
    own(
      "max_tokens twice",
      (m) => `{"model":"${m}","messages":[{"role":"user","content":"x"}],"max_tokens":1,"max_tokens":2}`,
      duplicate("max_tokens"),
    ),
  ],
  allowed: {
    messages: [
      { role: "user", content: [{ type: "text", text: "hi" }] },
      { role: "assistant", content: "hello" },
      { role: "user", content: "again" },
    ],
    system: "be brief",
    max_tokens: 5,
    stream: false,
    vendor_field: { nested: true },
  },
  expectAnswer(answer, model) {
    expect(answer).toMatchObject({
      type: "message",
      role: "assistant",
      model,
      content: [{ type: "text", text: "Hello from the mock upstream." }],
    });
  },
  terminal: /^event: message_stop(\r\n|\r|\n)data: /,
  interrupted: (events, count) => events.slice(0, count).join("") + MESSAGES_FRAME,
};

const ROUTES: ModelRoute[] = [CHAT, RESPONSES, MESSAGES];

/** Runs one contract row on every model route. */
/**
 * One test per route. The routes' tests run concurrently: each seeds its own tenant and request
 * ids, and the rows that wait out a timeout then cost one wait, not two.
 */
function onEveryRoute(name: string, row: (route: ModelRoute) => Promise<void>, timeout?: number) {
  for (const route of ROUTES) it.concurrent(`${name} (${route.path})`, () => row(route), timeout);
}

/** A valid body for the route: its minimal fields with `model`, then `extra`. */
const bodyOf = (route: ModelRoute, model: string, extra: Fields = {}): Fields => ({
  model,
  ...route.fields,
  ...extra,
});

/** The route's minimal fields as JSON text, to splice into bodies written byte by byte. */
const fieldsText = (route: ModelRoute) => json(route.fields).slice(1, -1);

/** POST a valid body for the route (plus `extra`) with the tenant's key. */
const send = (
  route: ModelRoute,
  tenant: Tenant,
  extra: Fields = {},
  requestId = unique("contract"),
  headers: Record<string, string> = {},
) => postRaw(route.path, tenant, json(bodyOf(route, tenant.model, extra)), requestId, headers);

/** POST these body bytes to the Worker with some vars overridden. */
const postWith = (vars: Partial<Env>, route: ModelRoute, tenant: Tenant, body: BodyInit, requestId: string) =>
  gatewayWith(vars, route.path, {
    method: "POST",
    headers: { authorization: `Bearer ${tenant.key}`, "x-request-id": requestId },
    body,
  });

/** A streaming body for the route, with the mock upstream's cue. */
// Chat callers here ask for the usage chunk, so that the upstream's stream is the reference byte for
// byte and the rows that cut it at a byte cut the same bytes; usage.test.ts has the streams of
// callers who do not ask.
const streamBody = (route: ModelRoute, model: string, mock: Fields) =>
  bodyOf(route, model, {
    stream: true,
    ...(route.path === "/v1/chat/completions" ? { stream_options: { include_usage: true } } : {}),
    mock,
  });

/** The route's exact 401: `{"error":"Unauthorized"}`, or on the Messages route Anthropic's envelope. */
async function expectRouteUnauthorized(route: ModelRoute, response: Response, requestId?: string) {
  if (!route.anthropic) return expectUnauthorized(response, requestId);
  expect(response.status).toBe(401);
  expect(response.headers.get("content-type")).toBe("application/json");
  expect(response.headers.get("cache-control")).toBe("no-store");
  if (requestId === undefined) expect(response.headers.get("x-request-id")).toBeTruthy();
  else expect(response.headers.get("x-request-id")).toBe(requestId);
  expect(await response.text()).toBe(
    '{"type":"error","error":{"type":"authentication_error","message":"Unauthorized"}}',
  );
}

/** Anthropic's error type for a gateway refusal, as the contract's "Messages API" section lists them. */
function anthropicType({ status }: Refusal): string {
  const types: Record<number, string> = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
  };
  return types[status] ?? (status >= 500 ? "api_error" : "invalid_request_error");
}

/**
 * Asserts the refusal in full (status, the route's envelope with its exact message, headers)
 * carrying this request id. On the Messages route the envelope is Anthropic's: the refusal's
 * message, the type of its status.
 */
async function expectRefusal(route: ModelRoute, response: Response, requestId: string, refusal: Refusal) {
  expect(response.headers.get("x-request-id")).toBe(requestId);
  if (route.anthropic) {
    expect(response.status).toBe(refusal.status);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(response.headers.get("cache-control")).toBe("no-store");
    expect(await response.json()).toEqual({
      type: "error",
      error: { type: anthropicType(refusal), message: refusal.message },
    });
    return;
  }
  const message = await expectGatewayError(
    response,
    refusal.status,
    refusal.type,
    refusal.code,
    refusal.param,
  );
  expect(message).toBe(refusal.message);
}

/** A tenant granted one model, with a second model in the catalog that its group does not grant. */
async function tenantWithDeniedModel(orgLimits?: {
  requests_per_minute?: number;
  user_requests_per_minute?: number;
}) {
  const denied = unique("denied");
  const granted = unique("granted");
  const tenant = await seedTenant({ models: { [granted]: {}, [denied]: {} }, grants: [granted], orgLimits });
  return { tenant, denied };
}

const linesFor = captureLogLines();

describe("routing", () => {
  for (const method of ["GET", "PUT", "DELETE", "PATCH"]) {
    onEveryRoute(`answers ${method} with 405 and Allow: POST, before auth`, async (route) => {
      const id = unique("method");
      const response = await gateway(route.path, {
        method,
        headers: { "x-request-id": id },
        body: method === "GET" ? undefined : "{}",
      });
      expect(response.headers.get("allow")).toBe("POST");
      const message = `Method ${method} is not allowed here; use POST.`;
      await expectRefusal(route, response, id, invalidRequest(405, "method_not_allowed", message));
    });
  }
});

describe("auth", () => {
  onEveryRoute("accepts a known key", async (route) => {
    const tenant = await seedTenant();
    const response = await send(route, tenant);
    expect(response.status).toBe(200);
    route.expectAnswer(await response.json(), tenant.model);
  });

  const causes: Array<[string, (tenant: Tenant) => string | null]> = [
    ["a missing header", () => null],
    ["an empty header", () => ""],
    ["the Basic scheme", (tenant) => `Basic ${btoa(tenant.key)}`],
    ["another Basic credential", () => "Basic dXNlcjpwYXNz"],
    ["Bearer without a token", () => "Bearer"],
    ["Bearer and a space", () => "Bearer "],
    ["an unknown key", () => "Bearer sk-gw-00000000000000000000000000000000"],
    ["a token with a space inside", () => "Bearer sk-gw-abc def"],
    ["a token with odd characters", () => 'Bearer sk-gw-"<>{}'],
    ["a very long token", () => `Bearer ${"a".repeat(20_000)}`],
    ["the key without a scheme", (tenant) => tenant.key],
    ["a scheme that only ends in Bearer", (tenant) => `XBearer ${tenant.key}`],
    ["the key and more after it", (tenant) => `Bearer ${tenant.key} x`],
    ["an unknown key without a scheme", () => "sk-gw-00000000000000000000000000000000"],
  ];
  for (const [cause, authorization] of causes) {
    onEveryRoute(`answers the exact 401 for ${cause}, forwarding nothing`, async (route) => {
      const tenant = await seedTenant();
      const id = unique("auth");
      const headers: Record<string, string> = { "content-type": "application/json", "x-request-id": id };
      const value = authorization(tenant);
      if (value !== null) headers.authorization = value;
      const response = await gateway(route.path, {
        method: "POST",
        headers,
        body: json(bodyOf(route, tenant.model)),
      });
      await expectRouteUnauthorized(route, response, id);
      await expectNotForwarded(id);
    });
  }

  onEveryRoute("answers the exact 401 for a revoked key", async (route) => {
    const tenant = await seedTenant({ revoked: true });
    const id = unique("revoked");
    await expectRouteUnauthorized(route, await send(route, tenant, {}, id), id);
    await expectNotForwarded(id);
  });

  for (const [what, body] of [
    ["a body that is not JSON", "not json"],
    ["a body over MAX_BODY_BYTES", "x".repeat(10 * 1024 * 1024 + 1)],
  ] as const) {
    onEveryRoute(`answers 401 before looking at ${what}`, async (route) => {
      const id = unique("auth-body");
      const response = await gateway(route.path, { method: "POST", headers: { "x-request-id": id }, body });
      await expectRouteUnauthorized(route, response, id);
      await expectNotForwarded(id);
    });
  }

  onEveryRoute(
    "answers 401 to a key revoked in its org's gate, before the body, model or access refusal, while this isolate still caches its record",
    async (route) => {
      const { tenant, denied } = await tenantWithDeniedModel();
      expect((await send(route, tenant)).status).toBe(200);
      // Revoked only in the org's gate: what this isolate sees when another one made the revocation.
      await env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(tenant.org)).revoke(tenant.keyId);
      const bodies = [
        json(bodyOf(route, "no-such-model")),
        json(bodyOf(route, denied)),
        route.invalid[0]!.body(tenant.model),
        "{not json",
        json(bodyOf(route, tenant.model)),
      ];
      for (const body of bodies) {
        const id = unique("revoked-first");
        await expectRouteUnauthorized(route, await postRaw(route.path, tenant, body, id), id);
        await expectNotForwarded(id);
      }
    },
  );
});

describe("body", () => {
  // Each body is refused for exactly one fault: apart from it, it is valid for the route and the tenant.
  // A refusal that differs by route is given as a function of the route.
  const invalid: Array<
    [string, (route: ModelRoute, granted: string, denied: string) => BodyInit, Refusal | typeof streamFlag]
  > = [
    ["a body that is not JSON", () => "{not json", NOT_JSON],
    ["an empty body", () => "", NOT_JSON],
    ["invalid UTF-8", () => new Uint8Array([0x7b, 0x22, 0x6d, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), NOT_JSON],
    [
      // The upstream's parser would not read it; the gateway must not check a body it reads differently.
      "a body that starts with a byte order mark",
      (route, granted) =>
        new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode(json(bodyOf(route, granted)))]),
      NOT_JSON,
    ],
    ["a JSON array", () => json([1, 2]), NOT_AN_OBJECT],
    ["a JSON array of a valid body", (route, granted) => json([bodyOf(route, granted)]), NOT_AN_OBJECT],
    ["a JSON string", () => json("hello"), NOT_AN_OBJECT],
    ["a JSON number", () => "42", NOT_AN_OBJECT],
    ["null", () => "null", NOT_AN_OBJECT],
    [
      "a missing model",
      (route) => json(route.fields),
      invalidBody("model", "Missing required parameter 'model'."),
    ],
    [
      "an empty model",
      (route) => json({ model: "", ...route.fields }),
      invalidBody("model", "Invalid 'model': model must be a non-empty string."),
    ],
    [
      "a numeric model",
      (route) => json({ model: 7, ...route.fields }),
      invalidBody("model", "Invalid 'model': model must be a string."),
    ],
    [
      "a null model",
      (route) => json({ model: null, ...route.fields }),
      invalidBody("model", "Invalid 'model': model must be a string."),
    ],
    [
      "an array model",
      (route, granted) => json({ model: [granted], ...route.fields }),
      invalidBody("model", "Invalid 'model': model must be a string."),
    ],
    ["a string stream flag", (route, granted) => json(bodyOf(route, granted, { stream: "yes" })), streamFlag],
    ["a numeric stream flag", (route, granted) => json(bodyOf(route, granted, { stream: 1 })), streamFlag],
    // A key the gateway interprets, repeated: the gateway would check one, an upstream's parser might use the other.
    [
      "model twice",
      (route, granted, denied) => `{"model":"${denied}","model":"${granted}",${fieldsText(route)}}`,
      duplicate("model"),
    ],
    [
      "model twice, once escaped",
      (route, granted, denied) => `{"model":"${granted}","mod\\u0065l":"${denied}",${fieldsText(route)}}`,
      duplicate("model"),
    ],
    [
      "model twice, the first one escaped",
      (route, granted, denied) => `{"\\u006dodel":"${denied}","model":"${granted}",${fieldsText(route)}}`,
      duplicate("model"),
    ],
    [
      "stream twice",
      (route, granted) => `{"model":"${granted}","stream":true,"stream":false,${fieldsText(route)}}`,
      duplicate("stream"),
    ],
  ];
  for (const [what, body, refusalOf] of invalid) {
    const named = typeof refusalOf === "function" ? refusalOf({}) : refusalOf;
    onEveryRoute(`answers ${named.status} ${named.code} for ${what}, forwarding nothing`, async (route) => {
      const refusal = typeof refusalOf === "function" ? refusalOf(route) : refusalOf;
      const { tenant, denied } = await tenantWithDeniedModel();
      const id = unique("body");
      await expectRefusal(
        route,
        await postRaw(route.path, tenant, body(route, tenant.model, denied), id),
        id,
        refusal,
      );
      await expectNotForwarded(id);
    });
  }

  onEveryRoute(
    "forwards a body whose repeated keys are nested or not the gateway's, byte for byte",
    async (route) => {
      const tenant = await seedTenant();
      const id = unique("dup-ok");
      const body = `{"model":"${tenant.model}","metadata":{"model":"a","model":"b"},"tools":[{"content":"model","content":"x"}],"x":1,"x":2,${fieldsText(route)}}`;
      expect((await postRaw(route.path, tenant, body, id)).status).toBe(200);
      expect((await upstreamRequests(id))[0]!.body).toBe(body);
    },
  );

  onEveryRoute("forwards a model spelled with a JSON escape as the caller spelled it", async (route) => {
    const tenant = await seedTenant();
    const id = unique("escaped-model");
    // The same model, its first letter written as \u00XX: the upstream knows it by that name, so
    // nothing in the body is the gateway's to rewrite.
    const escaped = `\\u${tenant.model.charCodeAt(0).toString(16).padStart(4, "0")}${tenant.model.slice(1)}`;
    const body = `{"model":"${escaped}",${fieldsText(route)}}`;
    expect((await postRaw(route.path, tenant, body, id)).status).toBe(200);
    expect((await upstreamRequests(id))[0]!.body).toBe(body);
  });

  onEveryRoute(
    "forwards the caller's bytes, unknown fields and values untouched, to UPSTREAM_BASE_URL + route with the upstream key",
    async (route) => {
      const tenant = await seedTenant();
      const id = unique("passthrough");
      const body = json(bodyOf(route, tenant.model, route.allowed));
      const response = await postRaw(route.path, tenant, body, id);
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toBe("application/json");
      expect(response.headers.get("x-request-id")).toBe(id);
      route.expectAnswer(await response.json(), tenant.model);
      const [received, ...more] = await upstreamRequests(id);
      expect(more).toEqual([]);
      expect(received).toMatchObject({ method: "POST", path: route.path, body });
      expect(received!.headers.authorization).toBe("Bearer sk-upstream-test-secret");
      // The caller named no type it accepts: the upstream is asked for JSON.
      expect(received!.headers.accept).toBe("application/json");
    },
  );

  onEveryRoute(
    "answers 413 for a body over MAX_BODY_BYTES with a Content-Length, forwarding nothing",
    async (route) => {
      const tenant = await seedTenant();
      const id = unique("big");
      const response = await postRaw(route.path, tenant, "x".repeat(10 * 1024 * 1024 + 1), id);
      await expectRefusal(route, response, id, TOO_LARGE);
      await expectNotForwarded(id);
    },
  );

  onEveryRoute(
    "answers 413 for a chunked body over the limit, reading no further than needed",
    async (route) => {
      const tenant = await seedTenant();
      const id = unique("chunked");
      let pulled = 0;
      const chunk = new Uint8Array(64 * 1024).fill(0x20);
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          pulled++;
          if (pulled > 1000) controller.close();
          else controller.enqueue(chunk);
        },
      });
      await expectRefusal(
        route,
        await postWith({ MAX_BODY_BYTES: "1000000" }, route, tenant, body, id),
        id,
        TOO_LARGE,
      );
      // 1,000,000 bytes is 16 chunks of 64 KiB; a little read-ahead is fine, reading it all is not.
      expect(pulled).toBeLessThanOrEqual(18);
      await expectNotForwarded(id);
    },
  );

  onEveryRoute("reads a body of exactly MAX_BODY_BYTES, and answers 413 at one byte more", async (route) => {
    const tenant = await seedTenant();
    const limit = 4096;
    const padded = (size: number) => {
      const head = json(bodyOf(route, tenant.model, { pad: "" }));
      return head.replace('"pad":""', `"pad":"${"x".repeat(size - head.length)}"`);
    };
    expect(padded(limit).length).toBe(limit);
    const at = unique("at-limit");
    expect((await postWith({ MAX_BODY_BYTES: String(limit) }, route, tenant, padded(limit), at)).status).toBe(
      200,
    );
    const over = unique("over-limit");
    await expectRefusal(
      route,
      await postWith({ MAX_BODY_BYTES: String(limit) }, route, tenant, padded(limit + 1), over),
      over,
      TOO_LARGE,
    );
    await expectNotForwarded(over);
  });

  onEveryRoute("answers 400, never 500, to a body that breaks off mid-read", async (route) => {
    const tenant = await seedTenant();
    const id = unique("broken-body");
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"model":'));
        controller.error(new Error("client went away"));
      },
    });
    await expectRefusal(
      route,
      await postWith({}, route, tenant, body, id),
      id,
      invalidBody(null, "The request body could not be read."),
    );
    await expectNotForwarded(id);
  });

  onEveryRoute("takes a body that arrives in parts within BODY_TIMEOUT_MS", async (route) => {
    const tenant = await seedTenant();
    const id = unique("slow-body");
    const encoder = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(encoder.encode(`{"model":"${tenant.model}",`));
        await scheduler.wait(150);
        controller.enqueue(encoder.encode(`${fieldsText(route)}}`));
        controller.close();
      },
    });
    const response = await postWith({ BODY_TIMEOUT_MS: "2000" }, route, tenant, body, id);
    expect(response.status).toBe(200);
    await response.text();
    expect(JSON.parse((await upstreamRequests(id))[0]!.body)).toEqual({
      model: tenant.model,
      ...route.fields,
    });
  });

  onEveryRoute(
    "answers 408 to a body that trickles in past BODY_TIMEOUT_MS, forwarding nothing",
    async (route) => {
      const tenant = await seedTenant();
      const id = unique("trickle");
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(`{"model":"${tenant.model}",`));
        },
      });
      await expectRefusal(
        route,
        await postWith({ BODY_TIMEOUT_MS: "300" }, route, tenant, body, id),
        id,
        BODY_TIMEOUT,
      );
      await expectNotForwarded(id);
    },
  );
});

describe("model and access", () => {
  onEveryRoute(
    "answers 400 model_not_found for a model outside the catalog, forwarding nothing",
    async (route) => {
      const tenant = await seedTenant({ grants: ["*"] });
      const id = unique("missing-model");
      const response = await send(route, tenant, { model: "no-such-model" }, id);
      await expectRefusal(route, response, id, notFound("no-such-model"));
      await expectNotForwarded(id);
    },
  );

  onEveryRoute("answers model_not_found for a model id too long to be a KV key", async (route) => {
    const tenant = await seedTenant();
    const id = unique("long-model");
    const model = "m".repeat(600);
    await expectRefusal(route, await send(route, tenant, { model }, id), id, notFound(model));
  });

  onEveryRoute(
    "answers 403 model_access_denied when the group does not grant the model, forwarding nothing",
    async (route) => {
      const { tenant, denied } = await tenantWithDeniedModel();
      const id = unique("denied");
      await expectRefusal(route, await send(route, tenant, { model: denied }, id), id, {
        status: 403,
        type: "permission_error",
        code: "model_access_denied",
        param: "model",
        message: `This API key may not use model '${denied}'.`,
      });
      await expectNotForwarded(id);
    },
  );

  onEveryRoute('lets "*" grant every model', async (route) => {
    const tenant = await seedTenant({ grants: ["*"] });
    expect((await send(route, tenant)).status).toBe(200);
  });

  onEveryRoute(
    "renames the model to upstream_model, changing only its value: every other byte reaches the upstream as sent",
    async (route) => {
      const alias = unique("alias");
      const tenant = await seedTenant({ models: { [alias]: { upstream_model: "real/model-1" } } });
      const id = unique("rename");
      const body = (model: string) =>
        `{ "__proto__": {"x": 1}, "constructor": 2, "prototype": 3, "model" :\t"${model}", "big": 123456789012345678901234567890,` +
        ` "one": 1.0, "e": 1E+2, "s": "caf\\u00e9 \\ud83d\\ude00", "metadata": {"model": "${model}"}, "tools": [{"model": "${model}"}], ${fieldsText(route)} }`;
      const response = await postRaw(route.path, tenant, body(alias), id);
      expect(response.status).toBe(200);
      // The mock upstream answers with the model it was asked for.
      expect((await response.json<{ model: string }>()).model).toBe("real/model-1");
      const sent = (await upstreamRequests(id))[0]!.body;
      expect(sent).toBe(body(alias).replace(`"model" :\t"${alias}"`, `"model" :\t"real/model-1"`));
    },
  );
});

describe("which refusal wins", () => {
  // 405 before 401, and 401 before everything after it, are rows of "routing" and "auth".
  onEveryRoute("answers the body's refusal before the model's", async (route) => {
    const tenant = await seedTenant();
    const id = unique("body-first");
    const response = await send(route, tenant, { model: "no-such-model", stream: "yes" }, id);
    await expectRefusal(route, response, id, streamFlag(route));
  });

  onEveryRoute("answers model_not_found before model_access_denied", async (route) => {
    const tenant = await seedTenant({ grants: [] });
    const id = unique("model-first");
    await expectRefusal(
      route,
      await send(route, tenant, { model: "no-such-model" }, id),
      id,
      notFound("no-such-model"),
    );
  });

  onEveryRoute("answers model_access_denied before the rate limit, and consumes nothing", async (route) => {
    const { tenant, denied } = await tenantWithDeniedModel({
      requests_per_minute: 100,
      user_requests_per_minute: 1,
    });
    expect((await send(route, tenant, { model: denied })).status).toBe(403);
    expect((await send(route, tenant)).status).toBe(200);
    const id = unique("access-first");
    const response = await send(route, tenant, { model: denied }, id);
    expect(response.status).toBe(403);
    const body = await response.json<{ error: { code?: string; type: string } }>();
    if (route.anthropic) expect(body.error.type).toBe("permission_error");
    else expect(body.error.code).toBe("model_access_denied");
    expect((await send(route, tenant)).status).toBe(429);
  });
});

describe("rate limits", () => {
  const expectRateLimited = async (
    route: ModelRoute,
    response: Response,
    requestId: string,
    scope: string,
  ) => {
    const seconds = Number(response.headers.get("retry-after"));
    const ms = Number(response.headers.get("retry-after-ms"));
    expect(response.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(response.headers.get("retry-after-ms")).toMatch(/^\d+$/);
    expect(seconds).toBeGreaterThanOrEqual(1);
    expect(seconds).toBeLessThanOrEqual(60);
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThanOrEqual(60_000);
    expect(seconds).toBe(Math.max(1, Math.ceil(ms / 1000)));
    await expectRefusal(route, response, requestId, {
      status: 429,
      type: "rate_limit_error",
      code: "rate_limit_exceeded",
      param: null,
      message: `Rate limit reached for this ${scope}: 2 requests per minute.`,
    });
    await expectNotForwarded(requestId);
  };

  onEveryRoute(
    "answers 429 with Retry-After and retry-after-ms once the user's limit is reached on both routes, naming the scope",
    async (route) => {
      const tenant = await seedTenant({
        orgLimits: { requests_per_minute: 100, user_requests_per_minute: 2 },
      });
      const other = ROUTES.find((r) => r !== route)!;
      expect((await send(route, tenant)).status).toBe(200);
      expect((await send(other, tenant)).status).toBe(200);
      const id = unique("user-limited");
      await expectRateLimited(route, await send(route, tenant, {}, id), id, "user");
    },
  );

  onEveryRoute(
    "answers 429 once the org's limit is reached across its users and both routes, naming the scope",
    async (route) => {
      const limits = { requests_per_minute: 2, user_requests_per_minute: 100 };
      const first = await seedTenant({ orgLimits: limits });
      const second = await seedTenant({ org: first.org, orgLimits: limits });
      const other = ROUTES.find((r) => r !== route)!;
      expect((await send(route, first)).status).toBe(200);
      expect((await send(other, second)).status).toBe(200);
      for (const tenant of [first, second]) {
        const id = unique("org-limited");
        await expectRateLimited(route, await send(route, tenant, {}, id), id, "organization");
      }
    },
  );

  const kinds = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
  } as const;
  const kind = (route: ModelRoute) => kinds[route.path];
  const sendBody = (route: ModelRoute, tenant: Tenant, body: Fields, requestId = unique("contract")) =>
    postRaw(route.path, tenant, json(body), requestId);

  onEveryRoute(
    "answers 429 with Retry-After and retry-after-ms once a scope's tokens of the last minute are spent, naming the scope and the limit",
    async (route) => {
      const orgLimits = { requests_per_minute: 100, tokens_per_minute: 1000, user_tokens_per_minute: 500 };
      const first = await seedTenant({ orgLimits });
      const second = await seedTenant({ org: first.org, orgLimits });
      const third = await seedTenant({ org: first.org, orgLimits });
      // The first user spends its 500; then the second spends the org's other 500, so the third
      // user, with room of its own, is refused in the org's name.
      for (const [spender, who, scope, limit] of [
        [first, first, "user", 500],
        [second, third, "organization", 1000],
      ] as const) {
        const admitted = await sendBody(route, spender, reserving(kind(route), spender.model, 500, 500));
        expect(admitted.status).toBe(200);
        await admitted.arrayBuffer();
        const id = unique("token-limited");
        const refused = await sendBody(route, who, reserving(kind(route), who.model, 40, 2), id);
        const ms = Number(refused.headers.get("retry-after-ms"));
        expect(refused.headers.get("retry-after-ms")).toMatch(/^\d+$/);
        expect(ms).toBeGreaterThan(0);
        expect(ms).toBeLessThanOrEqual(60_000);
        expect(refused.headers.get("retry-after")).toBe(String(Math.max(1, Math.ceil(ms / 1000))));
        await expectRefusal(route, refused, id, {
          status: 429,
          type: "rate_limit_error",
          code: "rate_limit_exceeded",
          param: null,
          message: `Rate limit reached for this ${scope}: ${limit} tokens per minute.`,
        });
        await expectNotForwarded(id);
      }
    },
  );

  onEveryRoute(
    "answers 403 budget_exceeded without Retry-After once a monthly budget is spent, before the rate limit, naming the scope",
    async (route) => {
      const model = unique("priced");
      const budgets = [
        ["organization", { monthly_budget_usd: 0.0001 }],
        ["user", { user_monthly_budget_usd: 0.0001 }],
      ] as const;
      for (const [scope, budget] of budgets) {
        const tenant = await seedTenant({
          // A request costs far more than the budget: 100 dollars per million tokens.
          models: { [model]: { pricing: { input_per_mtok: 100, output_per_mtok: 100 } } },
          orgLimits: { requests_per_minute: 1, ...budget },
        });
        expect((await send(route, tenant)).status).toBe(200);
        await usageOnce(tenant.org, 1);
        // The org's one request of the minute is spent too: the budget answers.
        const id = unique("over-budget");
        const refused = await send(route, tenant, {}, id);
        expect(refused.headers.get("retry-after")).toBeNull();
        expect(refused.headers.get("retry-after-ms")).toBeNull();
        await expectRefusal(route, refused, id, {
          status: 403,
          type: "permission_error",
          code: "budget_exceeded",
          param: null,
          message: `Budget reached for this ${scope}: 0.0001 USD per month.`,
        });
        await expectNotForwarded(id);
      }
    },
  );
});

describe("upstream answers", () => {
  const verbatim: Array<[number, string, string | null, Record<string, string>]> = [
    [
      400,
      '{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}',
      "application/json",
      {},
    ],
    [
      400,
      '{"error":{"message":"bad input","type":"invalid_request_error","param":"input","code":null}}',
      "application/json",
      {},
    ],
    [
      404,
      '{"error":{"message":"no such model upstream","type":"invalid_request_error","code":"model_not_found"}}',
      "application/json",
      {},
    ],
    [
      429,
      '{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}',
      "application/json",
      { "retry-after": "7" },
    ],
    [
      429,
      '{"error":{"message":"slow down","code":"rate_limit_exceeded"}}',
      "application/json",
      { "retry-after": "7" },
    ],
    [500, '{"detail":"internal upstream failure"}', "application/json; charset=utf-8", {}],
    [503, "upstream overloaded, try later", "text/plain", { "retry-after": "3" }],
    [400, "<html><body>Bad Request</body></html>", "text/html", {}],
    [404, "Not Found", "text/plain; charset=utf-8", {}],
    [429, "too many", null, {}],
    [500, "Internal Server Error", "text/plain", {}],
    [500, "<html>oops</html>", null, {}],
    [503, '{"error":"Service Unavailable"}', "application/json", {}],
    // The last status a response can carry on to the caller.
    [599, '{"error":"network connect timeout"}', "application/json", {}],
  ];
  for (const [status, body, contentType, headers] of verbatim) {
    onEveryRoute(
      `forwards an upstream ${status} ${contentType ?? "without content-type"}${headers["retry-after"] ? " with retry-after" : ""} verbatim: ${body.slice(0, 30)}`,
      async (route) => {
        const tenant = await seedTenant();
        const id = unique("verbatim");
        const response = await send(
          route,
          tenant,
          cue({ status, body, content_type: contentType, headers }),
          id,
        );
        expect(response.headers.get("x-request-id")).toBe(id);
        if (!route.anthropic) return expectVerbatim(response, status, body, contentType, headers);
        // Anthropic clients get none of these verbatim: each is converted into their envelope.
        expect(response.status).toBe(status);
        expect(response.headers.get("content-type")).toBe("application/json");
        expect(response.headers.get("retry-after")).toBe(headers["retry-after"] ?? null);
        expect(response.headers.get("cache-control")).toBe("no-store");
        let message = body;
        try {
          const parsed = JSON.parse(body);
          if (typeof parsed.error?.message === "string") message = parsed.error.message;
        } catch {}
        const type = { 400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error" }[
          status as 400
        ];
        expect(await response.json()).toEqual({
          type: "error",
          error: { type: type ?? "api_error", message },
        });
      },
    );
  }

  onEveryRoute("returns a 2xx body with the upstream's status, bytes and content type", async (route) => {
    const tenant = await seedTenant();
    const body = '{"id":"x","object":"whatever","choices":[]}';
    const response = await send(route, tenant, cue({ status: 201, body, content_type: "application/json" }));
    expect(response.status).toBe(201);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(await response.text()).toBe(body);
  });

  const failures: Array<[string, Fields, Refusal]> = [
    ["an empty upstream 400", { status: 400 }, UPSTREAM_EMPTY],
    ["an empty upstream 429", { status: 429 }, UPSTREAM_EMPTY],
    ["an empty upstream 500", { status: 500 }, UPSTREAM_EMPTY],
    ["an empty upstream 503", { status: 503 }, UPSTREAM_EMPTY],
    ["an empty upstream 2xx", { status: 200, body: "" }, UPSTREAM_EMPTY],
    // Without a content-length the body is read as it comes, not whole.
    ["an empty chunked upstream 2xx", { status: 200, body: "", chunked: true }, UPSTREAM_EMPTY],
    ["an upstream 204 with no length", { status: 204, chunked: true }, UPSTREAM_EMPTY],
    ["a reset connection", { reset: true }, UPSTREAM_UNAVAILABLE],
    ["an upstream status of 101", { status: 101, body: '{"error":"odd"}' }, UPSTREAM_UNAVAILABLE],
    ["an upstream status of 600", { status: 600, body: '{"error":"odd"}' }, UPSTREAM_UNAVAILABLE],
    ["an upstream status of 700", { status: 700, body: '{"error":"odd"}' }, UPSTREAM_UNAVAILABLE],
    ["an upstream status of 999", { status: 999, body: '{"error":"odd"}' }, UPSTREAM_UNAVAILABLE],
    // vitest.config.ts sets UPSTREAM_TIMEOUT_MS to 1500 and STREAM_IDLE_TIMEOUT_MS to 1000.
    ["no upstream headers within UPSTREAM_TIMEOUT_MS", { hang: true }, UPSTREAM_TIMEOUT],
    [
      "a non-streaming body that stalls right after its headers",
      { stall_body_after_bytes: 0 },
      UPSTREAM_TIMEOUT,
    ],
    ["a non-streaming body that stalls halfway", { stall_body_after_bytes: 20 }, UPSTREAM_TIMEOUT],
    [
      "a chunked body that stalls right after its headers",
      { stall_body_after_bytes: 0, chunked: true },
      UPSTREAM_TIMEOUT,
    ],
  ];
  for (const [what, mock, refusal] of failures) {
    onEveryRoute(`answers ${refusal.status} ${refusal.code} for ${what}`, async (route) => {
      const tenant = await seedTenant();
      const id = unique("upstream-failure");
      await expectRefusal(route, await send(route, tenant, cue(mock), id), id, refusal);
    });
  }

  // Its first bytes have gone out with a 200, so the status can no longer change: the body is cut.
  onEveryRoute("cuts short a chunked body that stalls after its first bytes", async (route) => {
    const tenant = await seedTenant();
    const response = await send(route, tenant, cue({ stall_body_after_bytes: 20, chunked: true }));
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let received = "";
    const decoder = new TextDecoder();
    const read = async () => {
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read())
        received += decoder.decode(chunk.value, { stream: true });
    };
    await expect(read()).rejects.toThrow();
    expect(received).toHaveLength(20);
    expect(received.startsWith('{"id":"')).toBe(true);
  });

  onEveryRoute("answers 502 upstream_unavailable when the upstream refuses connections", async (route) => {
    const tenant = await seedTenant();
    const id = unique("refused");
    const response = await postWith(
      { UPSTREAM_BASE_URL: "http://127.0.0.1:9/v1" },
      route,
      tenant,
      json(bodyOf(route, tenant.model)),
      id,
    );
    await expectRefusal(route, response, id, UPSTREAM_UNAVAILABLE);
  });

  onEveryRoute("waits for an upstream that answers within UPSTREAM_TIMEOUT_MS", async (route) => {
    const tenant = await seedTenant();
    const response = await send(route, tenant, cue({ delay_ms: 500 }));
    expect(response.status).toBe(200);
    route.expectAnswer(await response.json(), tenant.model);
  });

  onEveryRoute("answers 500 internal_error, revealing nothing, when KV fails", async (route) => {
    const tenant = await seedTenant();
    const failingKv = {
      get: async () => {
        throw new Error("KV GET failed: 503 kv-internal.example sk-gw-secret");
      },
    } as unknown as KVNamespace;
    const id = unique("kv-fails");
    await expectRefusal(
      route,
      await postWith({ GATEWAY_KV: failingKv }, route, tenant, json(bodyOf(route, tenant.model)), id),
      id,
      INTERNAL,
    );
  });
});

describe("request ids", () => {
  onEveryRoute("keeps a well-formed x-request-id and forwards it upstream", async (route) => {
    const tenant = await seedTenant();
    const id = unique("rid");
    const response = await send(route, tenant, {}, id);
    expect(response.headers.get("x-request-id")).toBe(id);
    const [received] = await upstreamRequests(id);
    expect(received!.headers["x-request-id"]).toBe(id);
  });

  onEveryRoute("replaces a malformed x-request-id, and sends the one it made upstream", async (route) => {
    const tenant = await seedTenant();
    const response = await send(route, tenant, {}, "bad id with spaces");
    const id = response.headers.get("x-request-id");
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(await upstreamRequests(id!)).toHaveLength(1);
  });

  onEveryRoute("makes one for a refusal that came without one", async (route) => {
    const response = await gateway(route.path, { method: "POST", body: "{}" });
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    await expectRouteUnauthorized(route, response);
  });
});

describe("upstream hygiene", () => {
  onEveryRoute(
    "sends the upstream key, never the caller's credentials, cookies or hop-by-hop headers",
    async (route) => {
      const tenant = await seedTenant();
      const id = unique("hygiene");
      const response = await send(route, tenant, {}, id, {
        cookie: "session=caller-secret",
        "proxy-authorization": "Basic Y2FsbGVyOnNlY3JldA==",
        "x-api-key": "caller-other-key",
        te: "trailers",
        upgrade: "h2c",
        connection: "x-foo, keep-alive",
        "x-foo": "named-by-connection",
        "keep-alive": "timeout=5",
        forwarded: "for=10.0.0.1",
        "x-forwarded-for": "10.0.0.1",
        accept: "application/json; q=1, */*; q=0.1",
      });
      expect(response.status).toBe(200);
      const [received] = await upstreamRequests(id);
      expect(received!.headers.authorization).toBe("Bearer sk-upstream-test-secret");
      expect(JSON.stringify(received!.headers)).not.toContain(tenant.key);
      const names = Object.keys(received!.headers);
      for (const name of [
        "cookie",
        "proxy-authorization",
        "x-api-key",
        "te",
        "upgrade",
        "x-foo",
        "keep-alive",
        "forwarded",
        "x-forwarded-for",
      ]) {
        expect(names).not.toContain(name);
      }
      expect(received!.headers["content-type"]).toBe("application/json");
      expect(received!.headers.accept).toBe("application/json; q=1, */*; q=0.1");
    },
  );

  onEveryRoute("returns no upstream cookies or hop-by-hop headers", async (route) => {
    const tenant = await seedTenant();
    const response = await send(route, tenant, cue({ set_cookie: true }));
    expect(response.status).toBe(200);
    for (const name of ["set-cookie", "keep-alive", "x-secret-hop"])
      expect(response.headers.get(name)).toBeNull();
    await response.arrayBuffer();
  });

  onEveryRoute("sends a 2xx answer without cache-control: no-store is for errors", async (route) => {
    const tenant = await seedTenant();
    const response = await send(route, tenant);
    expect(response.status).toBe(200);
    expect(response.headers.get("cache-control")).toBeNull();
    await response.arrayBuffer();
  });

  onEveryRoute("does not follow an upstream redirect", async (route) => {
    const tenant = await seedTenant();
    const id = unique("redirect");
    const target = env.UPSTREAM_BASE_URL.replace(/\/v1$/, "") + route.path;
    const response = await send(route, tenant, cue({ redirect: target }), id);
    expect(response.status).toBe(302);
    expect(response.headers.get("location")).toBeNull();
    await response.arrayBuffer();
    expect(await upstreamRequests(id)).toHaveLength(1);
  });
});

describe("streams", () => {
  /** POST a streaming body with this cue. */
  const sendStream = (route: ModelRoute, tenant: Tenant, mock: Fields, requestId = unique("stream")) =>
    postRaw(route.path, tenant, json(streamBody(route, tenant.model, mock)), requestId);
  /** The mock upstream's events for this cue, as a clean stream would bring them. */
  const referenceEvents = async (route: ModelRoute, tenant: Tenant, mock: Fields, lineEnd = "\n") =>
    eventsOf(await referenceStream(route.path, streamBody(route, tenant.model, mock)), lineEnd);

  onEveryRoute("returns a clean stream unchanged as text/event-stream", async (route) => {
    const tenant = await seedTenant();
    const reference = await referenceStream(route.path, streamBody(route, tenant.model, { reply: REPLY }));
    expect(eventsOf(reference).length).toBeGreaterThanOrEqual(20);
    expect(eventsOf(reference).at(-1)).toMatch(route.terminal);
    const id = unique("clean");
    const response = await sendStream(route, tenant, { reply: REPLY }, id);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream");
    expect(response.headers.get("cache-control")).toBe("no-cache");
    expect(response.headers.get("x-request-id")).toBe(id);
    expect(await response.text()).toBe(reference);
  });

  onEveryRoute("forwards an in-band error event the upstream sent, as it is", async (route) => {
    const tenant = await seedTenant();
    const reference = await referenceStream(
      route.path,
      streamBody(route, tenant.model, { error_event: true }),
    );
    expect(reference).toContain("event: error\n");
    expect(reference).toContain(route.anthropic ? "overloaded_error" : "provider_error");
    expect(await (await sendStream(route, tenant, { error_event: true })).text()).toBe(reference);
  });

  onEveryRoute(
    "ends a stream that closes without its terminal event with the interruption frames",
    async (route) => {
      const tenant = await seedTenant();
      const events = await referenceEvents(route, tenant, { reply: REPLY });
      const text = await (await sendStream(route, tenant, { reply: REPLY, end_without_done: true })).text();
      expect(text).toBe(route.interrupted(events, events.length - 1, text));
    },
  );

  onEveryRoute(
    "ends a stream that broke before its first event with the interruption frames alone",
    async (route) => {
      const tenant = await seedTenant();
      const events = await referenceEvents(route, tenant, {});
      const text = await (await sendStream(route, tenant, { reset_after_bytes: 30 })).text();
      expect(text).toBe(route.interrupted(events, 0, text));
    },
  );

  onEveryRoute("completes a terminal event whose blank line never came, adding no frames", async (route) => {
    const tenant = await seedTenant();
    for (const lineEnd of ["\n", "\r\n", "\r"]) {
      const mock = { reply: REPLY, line_ending: lineEnd };
      const reference = await referenceStream(route.path, streamBody(route, tenant.model, mock));
      expect(eventsOf(reference, lineEnd).at(-1)).toMatch(route.terminal);
      const cut = new TextEncoder().encode(reference).length - lineEnd.length;
      expect(await (await sendStream(route, tenant, { ...mock, end_after_bytes: cut })).text()).toBe(
        reference,
      );
    }
  });

  onEveryRoute("does not complete a terminal event cut inside its data line", async (route) => {
    const tenant = await seedTenant();
    const reference = await referenceStream(route.path, streamBody(route, tenant.model, { reply: REPLY }));
    const events = eventsOf(reference);
    const cut = new TextEncoder().encode(reference).length - 5;
    const text = await (await sendStream(route, tenant, { reply: REPLY, end_after_bytes: cut })).text();
    expect(text).toBe(route.interrupted(events, events.length - 1, text));
  });

  onEveryRoute(
    "gives the same stream when events arrive split at arbitrary byte boundaries",
    async (route) => {
      const tenant = await seedTenant();
      // Byte by byte, a short reply with 2-, 3- and 4-byte characters reaches every kind of cut
      // (inside a field, a UTF-8 character, a \r\n) at a paced byte each; the whole reply in 7s.
      const pieces = [
        { reply: "Grüße — 🙂", line_ending: "\r\n", split: "bytes", chunk_size: 1 },
        { reply: REPLY, line_ending: "\r\n", split: "bytes", chunk_size: 7 },
      ];
      const results = await Promise.all(
        pieces.map(async ({ split, chunk_size, ...mock }) => {
          const reference = await referenceStream(route.path, streamBody(route, tenant.model, mock));
          const response = await sendStream(route, tenant, { ...mock, split, chunk_size });
          return { reference, text: await response.text() };
        }),
      );
      // A slow trickle of bytes gets keep-alives between events; they are the only addition.
      for (const { reference, text } of results) expect(withoutKeepAlives(text)).toBe(reference);
    },
    60_000,
  );

  onEveryRoute(
    "ends a silent stream after STREAM_IDLE_TIMEOUT_MS with the frames, keep-alives meanwhile, and closes the upstream",
    async (route) => {
      const tenant = await seedTenant();
      const id = unique("idle");
      const events = await referenceEvents(route, tenant, {});
      const started = Date.now();
      const text = await (await sendStream(route, tenant, { stall_after_events: 3 }, id)).text();
      // vitest.config.ts sets STREAM_IDLE_TIMEOUT_MS to 1000.
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      expect(withoutKeepAlives(text)).toBe(route.interrupted(events, 3, text));
      expect(text.split(": keep-alive\n\n").length - 1).toBeGreaterThanOrEqual(2);
      await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), { timeout: 1000 });
      await vi.waitFor(
        () =>
          expect(linesFor(id)).toMatchObject([
            { route: `POST ${route.path}`, stream_outcome: "interrupted", status: 200 },
          ]),
        LOG_WAIT,
      );
    },
  );

  onEveryRoute("does not take a client slow to read for a silent upstream", async (route) => {
    const tenant = await seedTenant();
    const reference = await referenceStream(route.path, streamBody(route, tenant.model, { events: 300 }));
    const reader = (await sendStream(route, tenant, { events: 300 })).body!.getReader();
    const decoder = new TextDecoder();
    let text = decoder.decode((await reader.read()).value, { stream: true });
    // Longer than STREAM_IDLE_TIMEOUT_MS (1000 in vitest.config.ts) without reading.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read())
      text += decoder.decode(chunk.value, { stream: true });
    expect(withoutKeepAlives(text)).toBe(reference);
  });

  onEveryRoute("cancels the upstream within a second of the client leaving, and logs it", async (route) => {
    const tenant = await seedTenant();
    const id = unique("cancel");
    const reader = (await sendStream(route, tenant, { events: 200, interval_ms: 50 }, id)).body!.getReader();
    await reader.read();
    await reader.read();
    const left = Date.now();
    await reader.cancel();
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), {
      timeout: 1000,
      interval: 20,
    });
    expect(Date.now() - left).toBeLessThan(1000);
    await vi.waitFor(
      () =>
        expect(linesFor(id)).toMatchObject([
          { route: `POST ${route.path}`, stream_outcome: "client_cancelled" },
        ]),
      LOG_WAIT,
    );
  });

  onEveryRoute("cancels a silent upstream when the client leaves", async (route) => {
    const tenant = await seedTenant();
    const id = unique("cancel-silent");
    const reader = (await sendStream(route, tenant, { stall_after_events: 1 }, id)).body!.getReader();
    await reader.read();
    await reader.cancel();
    await vi.waitFor(async () => expect((await mockStats()).aborted).toContain(id), {
      timeout: 1000,
      interval: 20,
    });
  });

  onEveryRoute("logs a complete stream with its time to first byte", async (route) => {
    const tenant = await seedTenant();
    const id = unique("logged");
    await (await sendStream(route, tenant, { reply: REPLY }, id)).text();
    await vi.waitFor(
      () =>
        expect(linesFor(id)).toMatchObject([
          {
            route: `POST ${route.path}`,
            stream_outcome: "complete",
            status: 200,
            ttfb_ms: expect.any(Number),
          },
        ]),
      LOG_WAIT,
    );
  });
});

for (const route of ROUTES) {
  describe(`${route.path}: its own schema`, () => {
    for (const { what, body, refusal } of route.invalid) {
      it(`answers ${refusal.status} ${refusal.code} for ${what} with param ${refusal.param}, forwarding nothing`, async () => {
        const tenant = await seedTenant();
        const id = unique("own-schema");
        await expectRefusal(route, await postRaw(route.path, tenant, body(tenant.model), id), id, refusal);
        await expectNotForwarded(id);
      });
    }
  });
}
