import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import OpenAI from "openai";
import { afterAll, beforeAll, expect } from "vitest";
import { hashKey } from "../src/auth";
import worker from "../src/index";
import { onLogLine } from "./log-tap";
import type { ModelRecord, OrgRecord, UpstreamRecord } from "../src/records";
import type { Env } from "../src/types";

export const GATEWAY = "https://gateway.test";

let counter = 0;
/** A name no other test uses, so each test has its own org, Durable Object and KV records. */
export const unique = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}`;

export interface Tenant {
  key: string;
  keyId: string;
  org: string;
  user: string;
  group: string;
  model: string;
}

/**
 * Writes an org, a group granting `models`, the models and an API key into GATEWAY_KV, exactly
 * in the documented layout.
 */
export async function seedTenant(
  options: {
    models?: Record<string, ModelRecord>;
    grants?: string[];
    orgLimits?: OrgRecord;
    org?: string;
    revoked?: boolean;
  } = {},
): Promise<Tenant> {
  const org = options.org ?? unique("org");
  const user = unique("user");
  const group = unique("group");
  const models = options.models ?? { [unique("model")]: {} };
  const model = Object.keys(models)[0]!;
  const key = `sk-gw-${crypto.randomUUID().replaceAll("-", "")}`;
  const keyId = unique("key");
  for (const [id, record] of Object.entries(models))
    await env.GATEWAY_KV.put(`model:${id}`, JSON.stringify(record));
  await env.GATEWAY_KV.put(
    `group:${group}`,
    JSON.stringify({ models: options.grants ?? Object.keys(models) }),
  );
  await env.GATEWAY_KV.put(
    `org:${org}`,
    JSON.stringify(options.orgLimits ?? { requests_per_minute: 1000, user_requests_per_minute: 1000 }),
  );
  const hash = await hashKey(key);
  const record = {
    id: keyId,
    org,
    user,
    group,
    created_at: new Date().toISOString(),
    ...(options.revoked ? { revoked_at: new Date().toISOString() } : {}),
  };
  await env.GATEWAY_KV.put(`key:${hash}`, JSON.stringify(record));
  await env.GATEWAY_KV.put(`keyid:${keyId}`, JSON.stringify({ hash }));
  return { key, keyId, org, user, group, model };
}

/**
 * A named upstream on the mock (which plays it under `/u/<id>/v1`), written to KV as an operator
 * would; returns its id.
 */
export async function namedUpstream(record: Partial<UpstreamRecord> = {}): Promise<string> {
  const id = unique("up");
  const stored = {
    base_url: `${env.UPSTREAM_BASE_URL.replace(/\/v1$/, "")}/u/${id}/v1`,
    api_key_secret: "UPSTREAM_A_KEY",
    ...record,
  };
  await env.GATEWAY_KV.put(`upstream:${id}`, JSON.stringify(stored));
  return id;
}

/** A tenant whose one model routes to `targets`; each target's model is named `m-<upstream>`. */
export async function routedTenant(ids: string[], extra: Partial<ModelRecord> = {}): Promise<Tenant> {
  const upstreams = ids.map((upstream) => ({ upstream, model: `m-${upstream}` }));
  return seedTenant({ models: { [unique("model")]: { upstreams, ...extra } } });
}

/** A request to the Worker over its HTTP surface. */
export function gateway(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(GATEWAY + path, init));
}

/** The same Worker with some vars overridden, as `wrangler dev --var` would. */
export async function gatewayWith(
  vars: Partial<Env>,
  path: string,
  init: RequestInit = {},
): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await worker.fetch(new Request(GATEWAY + path, init), { ...env, ...vars } as Env, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

export interface ChatRequestOptions {
  key?: string;
  body?: unknown;
  headers?: Record<string, string>;
}

/** POST /v1/chat/completions with a JSON body and the tenant's key. */
export function chat(
  tenant: Tenant,
  body: Record<string, unknown> = {},
  headers: Record<string, string> = {},
) {
  return gateway("/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${tenant.key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ model: tenant.model, messages: [{ role: "user", content: "hi" }], ...body }),
  });
}

/** The stock `openai` client pointed at the Worker. */
export function openai(key: string, options: { maxRetries?: number } = {}): OpenAI {
  return new OpenAI({
    apiKey: key,
    baseURL: `${GATEWAY}/v1`,
    maxRetries: options.maxRetries ?? 0,
    fetch: (url, init) => exports.default.fetch(new Request(url, init)),
  });
}

const MOCK = env.UPSTREAM_BASE_URL.replace(/\/v1$/, "");

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  request_id: string | null;
}

/** What the mock upstream received for requests carrying this `x-request-id`. */
export async function upstreamRequests(requestId: string): Promise<RecordedRequest[]> {
  const response = await fetch(`${MOCK}/__mock/requests?request_id=${encodeURIComponent(requestId)}`);
  return response.json();
}

export async function mockStats(): Promise<{
  aborted: string[];
  completed: string[];
  open_connections: number;
}> {
  return (await fetch(`${MOCK}/__mock/stats`)).json();
}

/** The envelope every gateway error uses, for `toEqual`. */
export const envelope = (type: string, code: string, param: string | null = null) => ({
  error: { message: expect.any(String), type, param, code },
});

/**
 * The mock upstream's cue: an extra body field telling it how to answer this one request, which
 * the gateway passes through like any unknown field. With `params`, those request params plus the
 * cue, typed as the params (for the `openai` client, whose types know no `mock`).
 *
 * @example
 * await chat(tenant, cue({ status: 503 }));
 * await client.chat.completions.create(cue({ reply: "hi" }, params));
 */
export function cue(mock: Record<string, unknown>): { mock: Record<string, unknown> };
export function cue<T extends object>(mock: Record<string, unknown>, params: T): T;
export function cue(mock: Record<string, unknown>, params: object = {}) {
  return { ...params, mock };
}

/**
 * POST exactly these body bytes to a route with the tenant's key and the given `x-request-id`
 * (so the mock upstream's record of the request can be looked up).
 *
 * @example
 * const response = await postRaw("/v1/responses", tenant, "{not json", id);
 */
export function postRaw(
  path: string,
  tenant: Pick<Tenant, "key">,
  body: BodyInit,
  requestId: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  return gateway(path, {
    method: "POST",
    headers: {
      authorization: `Bearer ${tenant.key}`,
      "content-type": "application/json",
      "x-request-id": requestId,
      ...headers,
    },
    body,
  });
}

/** The one body every API-key (and admin token) failure answers with, whatever its cause. */
export const UNAUTHORIZED = '{"error":"Unauthorized"}';

/** Asserts the contract's 401: exactly {@link UNAUTHORIZED}, JSON, not cached, with a request id (this one, if given). */
export async function expectUnauthorized(response: Response, requestId?: string) {
  expect(response.status).toBe(401);
  expect(response.headers.get("content-type")).toBe("application/json");
  expect(response.headers.get("cache-control")).toBe("no-store");
  if (requestId === undefined) expect(response.headers.get("x-request-id")).toBeTruthy();
  else expect(response.headers.get("x-request-id")).toBe(requestId);
  expect(await response.text()).toBe(UNAUTHORIZED);
}

/** Asserts that no request with this `x-request-id` reached the mock upstream. */
export async function expectNotForwarded(requestId: string) {
  expect(await upstreamRequests(requestId)).toEqual([]);
}

/** POST /v1/responses with a JSON body and the tenant's key. */
export function responses(
  tenant: Tenant,
  body: Record<string, unknown> = {},
  headers: Record<string, string> = {},
) {
  return gateway("/v1/responses", {
    method: "POST",
    headers: { authorization: `Bearer ${tenant.key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ model: tenant.model, input: "hi", ...body }),
  });
}

/** Asserts a gateway error: status, the typed envelope, its headers. Returns the message. */
export async function expectGatewayError(
  response: Response,
  status: number,
  type: string,
  code: string,
  param: string | null = null,
): Promise<string> {
  expect(response.status).toBe(status);
  expect(response.headers.get("content-type")).toBe("application/json");
  expect(response.headers.get("cache-control")).toBe("no-store");
  expect(response.headers.get("x-request-id")).toBeTruthy();
  const body = await response.json<{ error: { message: string } }>();
  expect(body).toEqual(envelope(type, code, param));
  return body.error.message;
}

/**
 * How long to wait for a request's log line: it is written once the answer has gone (and, for a
 * model route, its usage been read), which on a loaded machine can take more than vi.waitFor's 1 s.
 */
export const LOG_WAIT = { timeout: 5_000 };

/**
 * Captures the Worker's log lines during the calling block; the returned function gives the lines
 * written for one request id. One spy for the whole block, so tests running concurrently (each
 * with its own request ids) never restore it under each other.
 */
export function captureLogLines(): (requestId: string) => Array<Record<string, unknown>> {
  const lines: string[] = [];
  let stop: (() => void) | undefined;
  beforeAll(() => {
    stop = onLogLine((line) => lines.push(line));
  });
  afterAll(() => stop?.());
  return (requestId) =>
    lines
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.request_id === requestId);
}

/** Asserts an upstream error forwarded verbatim: status, body bytes, content-type and retry-after. */
export async function expectVerbatim(
  response: Response,
  status: number,
  body: string,
  contentType: string | null,
  headers: Record<string, string>,
) {
  expect(response.status).toBe(status);
  expect(await response.text()).toBe(body);
  expect(response.headers.get("content-type")).toBe(contentType);
  expect(response.headers.get("retry-after")).toBe(headers["retry-after"] ?? null);
  expect(response.headers.get("cache-control")).toBe("no-store");
  expect(response.headers.get("x-request-id")).toBeTruthy();
}

const encoder = new TextEncoder();

/** The size in bytes of `body` sent as its JSON text: what a reservation counts a token per 4 of. */
export const jsonBytes = (body: unknown) => encoder.encode(JSON.stringify(body)).byteLength;

/**
 * A body for `route` that reserves exactly `reserve` tokens at admission (a token per 4 bytes of
 * its JSON text, plus its output cap) and that the mock upstream answers with a usage of exactly
 * `use` tokens (a one-word prompt, a reply of `use - 1` words). `extra` adds fields (a `mock` cue
 * is merged with the reply's); send it as `JSON.stringify(body)`.
 *
 * @example
 * await postRaw("/v1/chat/completions", tenant, JSON.stringify(reserving("chat", tenant.model, 500, 6)), id);
 */
export function reserving(
  route: "chat" | "responses" | "messages",
  model: string,
  reserve: number,
  use: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const mock = { reply: Array.from({ length: use - 1 }, () => "w").join(" "), ...(extra.mock as object) };
  const cap = route === "responses" ? "max_output_tokens" : "max_tokens";
  for (let output = reserve - 1; output >= 1; output--) {
    // Spaces after the prompt's word add bytes, not words.
    const prompt = (pad: number) => `hi${" ".repeat(pad)}`;
    const body = (pad: number) => ({
      model,
      ...(route === "responses"
        ? { input: prompt(pad) }
        : { messages: [{ role: "user", content: prompt(pad) }] }),
      [cap]: output,
      ...extra,
      mock,
    });
    // The body's quarter-bytes must come to what `output` leaves of the reservation.
    const room = 4 * (reserve - output) - jsonBytes(body(0));
    if (room >= 0) return body(room);
  }
  throw new Error(`no ${route} body reserves ${reserve} tokens`);
}

/**
 * Polls `check` until it passes (5 s at most). Not vi.waitFor, which under fake timers moves Date on
 * by its interval at every try: the tests that freeze the org gate's clock count every millisecond.
 */
export async function until<T>(check: () => Promise<T>): Promise<T> {
  for (let tries = 0; ; tries++) {
    try {
      return await check();
    } catch (err) {
      if (tries >= 100) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

export interface UsageTotal {
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
}

/**
 * The org's usage this month once it counts `requests` requests. The gate call that records usage
 * also settles the requests' token reservations and adds to the month's spend, so those are done.
 */
export function usageOnce(org: string, requests: number): Promise<UsageTotal> {
  return until(async () => {
    const response = await gateway(`/admin/orgs/${org}/usage`, {
      headers: { authorization: "Bearer test-admin-token" },
    });
    const { total } = await response.json<{ total: UsageTotal }>();
    expect(total.requests).toBe(requests);
    return total;
  });
}
