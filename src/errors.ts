import type { Context, MiddlewareHandler } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { RequestLog } from "./request-log";

/**
 * Every error the gateway itself answers with: its public status, type and default message.
 * Internal causes map onto these codes; nothing else reaches a caller.
 */
const ERRORS = {
  not_found: [404, "invalid_request_error", "Not found."],
  method_not_allowed: [405, "invalid_request_error", "Method not allowed."],
  unauthorized: [401, "invalid_request_error", "Unauthorized"],
  request_too_large: [413, "invalid_request_error", "Request body exceeds the size limit."],
  request_timeout: [408, "invalid_request_error", "The request body did not arrive in time."],
  invalid_body: [400, "invalid_request_error", "Request body is invalid."],
  model_not_found: [400, "invalid_request_error", "Model not found."],
  group_not_found: [400, "invalid_request_error", "Group not found."],
  model_in_use: [409, "invalid_request_error", "The model is still granted by a group."],
  group_in_use: [409, "invalid_request_error", "The group is still used by a key."],
  upstream_not_found: [400, "invalid_request_error", "Upstream not found."],
  upstream_in_use: [409, "invalid_request_error", "The upstream is still used by a model."],
  model_access_denied: [403, "permission_error", "This API key may not use this model."],
  budget_exceeded: [403, "permission_error", "Monthly budget reached."],
  rate_limit_exceeded: [429, "rate_limit_error", "Rate limit exceeded."],
  upstream_empty_body: [502, "server_error", "The upstream returned an empty response body."],
  upstream_unavailable: [502, "server_error", "The upstream could not be reached."],
  upstream_timeout: [504, "server_error", "The upstream did not respond in time."],
  internal_error: [500, "server_error", "An unexpected error occurred in the gateway."],
} as const satisfies Record<string, readonly [ContentfulStatusCode, string, string]>;

export type ErrorCode = keyof typeof ERRORS;

export interface GatewayErrorOptions {
  param?: string | null;
  headers?: Record<string, string>;
}

/**
 * The one error type pipeline steps throw. `app.onError` renders it with {@link errorResponse}.
 *
 * @example
 * throw new GatewayError("model_not_found", `Model '${id}' not found.`);
 */
export class GatewayError extends Error {
  override readonly name = "GatewayError";
  readonly status: ContentfulStatusCode;
  readonly type: string;
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(
    readonly code: ErrorCode,
    message: string = ERRORS[code][2],
    options: GatewayErrorOptions = {},
  ) {
    super(message);
    [this.status, this.type] = ERRORS[code];
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }
}

/**
 * A failure of the gateway's own setup or data (a var that is not a number, a stored record that
 * fails its schema). The caller sees a plain 500 `internal_error`; the message, which names what
 * is wrong and never its value, goes to the log for the operator.
 */
export class InternalFault extends Error {
  override name = "InternalFault";
}

/** Which envelope a route's errors are written in: OpenAI's typed one, or Anthropic's on the Messages routes. */
export type Envelope = "openai" | "anthropic";

/** Anthropic's error type for an HTTP status, as its own API answers. */
const ANTHROPIC_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
  529: "overloaded_error",
};
const anthropicType = (status: number) =>
  ANTHROPIC_TYPES[status] ?? (status >= 500 ? "api_error" : "invalid_request_error");

/**
 * Anthropic's error envelope, as text.
 *
 * @example
 * anthropicEnvelope("api_error", "upstream stream interrupted"); // '{"type":"error","error":{"type":"api_error",...}}'
 */
export const anthropicEnvelope = (type: string, message: string) =>
  JSON.stringify({ type: "error", error: { type, message } });

const MAX_UPSTREAM_MESSAGE = 500;

/**
 * An upstream's error body for an Anthropic client: null when it already is Anthropic's envelope (it
 * goes verbatim), else that envelope with the upstream's `error.message`, `message` or text (at most
 * 500 characters) and the type of its status.
 *
 * @example
 * anthropicUpstreamError(429, '{"error":{"message":"slow down"}}'); // '{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
 */
export function anthropicUpstreamError(status: number, text: string): string | null {
  let json: { type?: unknown; message?: unknown; error?: { message?: unknown } } | undefined;
  try {
    json = JSON.parse(text);
  } catch {}
  if (json?.type === "error") return null;
  const message = [json?.error?.message, json?.message].find((m) => typeof m === "string") ?? text;
  return anthropicEnvelope(anthropicType(status), (message as string).slice(0, MAX_UPSTREAM_MESSAGE));
}

/**
 * Routes whose callers are Anthropic clients get every gateway error in Anthropic's envelope.
 *
 * @example
 * app.use("/v1/messages/*", errorEnvelope("anthropic"));
 */
export function errorEnvelope(envelope: Envelope): MiddlewareHandler<{ Variables: { envelope?: Envelope } }> {
  return async function errorEnvelope(c, next) {
    c.set("envelope", envelope);
    await next();
  };
}

/** Maps anything thrown inside the pipeline to the error the caller sees. */
function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError("internal_error");
}

/**
 * Builds every error response of the gateway: on the Messages routes Anthropic's envelope;
 * elsewhere the typed envelope with all four keys, or the plain `{"error":"Unauthorized"}` that the
 * contract requires for API-key failures.
 */
function errorResponse(c: Context, err: GatewayError, envelope: Envelope): Response {
  c.header("cache-control", "no-store");
  for (const [name, value] of Object.entries(err.headers)) c.header(name, value);
  if (envelope === "anthropic") {
    const type = err.code === "upstream_timeout" ? "timeout_error" : anthropicType(err.status);
    c.header("content-type", "application/json");
    return c.body(anthropicEnvelope(type, err.message), err.status);
  }
  if (err.code === "unauthorized") return c.json({ error: "Unauthorized" }, 401);
  return c.json(
    { error: { message: err.message, type: err.type, param: err.param, code: err.code } },
    err.status,
  );
}

/** What the log says of an internal error: a fault's own message, else only the thrown thing's name. */
function describeFault(err: unknown): string {
  if (err instanceof InternalFault) return `${err.name}: ${err.message}`;
  return err instanceof Error ? err.name : typeof err;
}

/**
 * The app's error handler: whatever a pipeline step threw becomes the contract's error response,
 * and the log line records its code (and, for a bug, only the error's name: its message may quote
 * caller data).
 */
export function handleError<E extends { Variables: { log: RequestLog; envelope?: Envelope } }>(
  err: unknown,
  c: Context<E>,
): Response {
  const error = toGatewayError(err);
  const log = c.get("log").fields;
  log.code = error.code;
  if (error.code === "internal_error") log.error = describeFault(err);
  return errorResponse(c, error, c.get("envelope") ?? "openai");
}
