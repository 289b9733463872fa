import type { MiddlewareHandler } from "hono";
import { forgetRevokedKey } from "./auth";
import { readConfig } from "./config";
import { GatewayError, handleError, type ErrorCode } from "./errors";
import type { Admission } from "./org-gate";
import { readRecord } from "./records";
import type { AppEnv, Env } from "./types";

/** The gate of `org`: the Durable Object that admits its requests and knows its revoked keys. */
export const orgGate = (env: Env, org: string) => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(org));

/**
 * For routes that reach no upstream and so are not admitted (`/v1/models`): a revoked key is
 * refused even while KV and this isolate's cache still hold its old record.
 */
export function refuseRevoked(): MiddlewareHandler<AppEnv> {
  return async function refuseRevoked(c, next) {
    const { id, org } = c.get("apiKey");
    if (await orgGate(c.env, org).isRevoked(id)) {
      forgetRevokedKey(c.get("apiKeyHash"));
      throw new GatewayError("unauthorized");
    }
    await next();
  };
}

/** The refusals of the steps between auth and admission (body, model, access). */
const BEFORE_ADMISSION: ReadonlySet<ErrorCode> = new Set([
  "request_too_large",
  "request_timeout",
  "invalid_body",
  "model_not_found",
  "model_access_denied",
]);

/**
 * A revoked key gets 401 before any later check's refusal, also in an isolate whose cache still
 * holds its record (the revocation was made elsewhere): when the body, model or access step refuses
 * the request, the org's gate is asked about the key before the refusal goes out. An admitted
 * request asks the gate anyway, so this costs a call only on those refusals.
 */
export function revokedFirst(): MiddlewareHandler<AppEnv> {
  return async function revokedFirst(c, next) {
    await next();
    if (!(c.error instanceof GatewayError) || !BEFORE_ADMISSION.has(c.error.code)) return;
    const { id, org } = c.get("apiKey");
    if (!(await orgGate(c.env, org).isRevoked(id))) return;
    forgetRevokedKey(c.get("apiKeyHash"));
    c.res = handleError(new GatewayError("unauthorized"), c);
  };
}

/**
 * Admission: the org's gate admits the request against the org and user limits (from `org:<id>`, or
 * DEFAULT_ORG_RPM / DEFAULT_USER_RPM), and refuses a revoked key.
 */
export function admitRequest(): MiddlewareHandler<AppEnv> {
  return async function admitRequest(c, next) {
    const { id, org, user } = c.get("apiKey");
    const config = readConfig(c.env);
    const limits = await readRecord(c.env.GATEWAY_KV, "org", org);
    const orgLimit = limits?.requests_per_minute ?? config.defaultOrgRpm;
    const userLimit = limits?.user_requests_per_minute ?? config.defaultUserRpm;
    const admit = async (): Promise<Admission> => orgGate(c.env, org).admit(id, user, orgLimit, userLimit);
    // A Durable Object error marked retryable (and not overloaded) may succeed on a fresh stub;
    // retrying an overloaded object would only add to its load.
    const admission = await admit().catch((err: { retryable?: boolean; overloaded?: boolean }) => {
      if (err?.retryable && !err.overloaded) return admit();
      throw err;
    });
    if (admission.admitted) return next();
    if (admission.revoked) {
      forgetRevokedKey(c.get("apiKeyHash"));
      throw new GatewayError("unauthorized");
    }
    const retryAfterMs = Math.max(1, Math.ceil(admission.retryAfterMs));
    const who = admission.scope === "org" ? "organization" : "user";
    throw new GatewayError(
      "rate_limit_exceeded",
      `Rate limit reached for this ${who}: ${admission.limit} requests per minute.`,
      {
        headers: {
          "retry-after": String(Math.max(1, Math.ceil(retryAfterMs / 1000))),
          "retry-after-ms": String(retryAfterMs),
        },
      },
    );
  };
}
