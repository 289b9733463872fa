import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import * as v from "valibot";
import { readConfig } from "./config";
import { GatewayError } from "./errors";
import type { BodySchema } from "./schemas";
import type { AppEnv, GatewayBody } from "./types";

/**
 * Enforces `maxBytes` (default MAX_BODY_BYTES) while the body is read (a chunked body has no Content-Length to trust),
 * so an oversized body is never buffered past the limit.
 */
export function limitBody(maxBytes?: number): MiddlewareHandler<AppEnv> {
  return async function limitBody(c, next) {
    const limit = bodyLimitOf(maxBytes ?? readConfig(c.env).maxBodyBytes);
    try {
      return await limit(c, next);
    } catch (err) {
      // Later steps answer through the app's error handler; what reaches here is the body itself
      // failing to arrive (a client that went away, a length that lied).
      if (err instanceof GatewayError) throw err;
      throw unreadableBody();
    }
  };
}

// One hono bodyLimit per size, built once rather than on every request.
const limiters = new Map<number, MiddlewareHandler>();
function bodyLimitOf(maxSize: number): MiddlewareHandler {
  let limiter = limiters.get(maxSize);
  if (!limiter) {
    limiter = bodyLimit({
      maxSize,
      onError: () => {
        throw new GatewayError("request_too_large", "Request body exceeds the size limit.");
      },
    });
    limiters.set(maxSize, limiter);
  }
  return limiter;
}

const unreadableBody = () => new GatewayError("invalid_body", "The request body could not be read.");

/** `messages[2].role` from valibot's issue path, as OpenAI names a `param`. */
function paramOf(issue: v.BaseIssue<unknown>): string | null {
  let param = "";
  for (const item of issue.path ?? []) {
    const key = item.key;
    param += typeof key === "number" ? `[${key}]` : param ? `.${String(key)}` : String(key);
  }
  return param || null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

function parseJsonObject(bytes: ArrayBuffer): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(utf8.decode(bytes));
  } catch {
    // The parser's own message quotes the body; the caller gets a plain reason instead.
    throw new GatewayError("invalid_body", "The request body is not valid JSON.");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new GatewayError("invalid_body", "The request body must be a JSON object.");
  }
  return json as Record<string, unknown>;
}

function describeIssue(issue: v.BaseIssue<unknown>, param: string | null): string {
  if (!param) return `Invalid body: ${issue.message}.`;
  // valibot reports a missing key with the enclosing object's message; say what is missing.
  if (issue.input === undefined) return `Missing required parameter '${param}'.`;
  return `Invalid '${param}': ${issue.message}.`;
}

/**
 * Parses a JSON object body and checks it against `schema`: the first failing field becomes a
 * 400 `invalid_body` naming it in `param`.
 *
 * @example
 * const limits = parseBody(orgLimitsBody, await c.req.arrayBuffer());
 */
export function parseBody<S extends v.GenericSchema>(schema: S, raw: ArrayBuffer): v.InferOutput<S> {
  const result = v.safeParse(schema, parseJsonObject(raw), { abortEarly: true });
  if (result.success) return result.output;
  const issue = result.issues[0];
  const param = paramOf(issue);
  throw new GatewayError("invalid_body", describeIssue(issue, param), { param });
}

/**
 * Parses the JSON body and checks it against `schema`, leaving the parsed body and the original
 * bytes for the next steps.
 */
export function jsonBody(schema: BodySchema): MiddlewareHandler<AppEnv> {
  return async function jsonBody(c, next) {
    const raw = await c.req.arrayBuffer().catch(() => {
      throw unreadableBody();
    });
    const body: GatewayBody = parseBody(schema, raw);
    c.set("rawBody", raw);
    c.set("body", body);
    await next();
  };
}
