import type { MiddlewareHandler } from "hono";
import { forgetRevokedKey } from "./auth";
import { readConfig, type Config } from "./config";
import { GatewayError, handleError, type ErrorCode } from "./errors";
import { Memo } from "./memo";
import type { Admission, Limits, Scope } from "./org-gate";
import { readRecord, type OrgRecord } from "./records";
import { budgetNanos, reservationEstimate } from "./usage";
import type { AppEnv, Env } from "./types";

/**
 * The ids of the orgs' gates, by namespace. A stub cannot outlive its request (the runtime refuses
 * I/O through it from another), but an id is a plain value, and deriving one is a digest. The
 * admin API may ask about any org name, so the ids kept are bounded.
 */
const gateIds = new WeakMap<Env["RATE_LIMITER"], Memo<DurableObjectId>>();

/** The gate of `org`: the Durable Object that admits its requests and knows its revoked keys. */
export function orgGate(env: Env, org: string) {
  const namespace = env.RATE_LIMITER;
  let ids = gateIds.get(namespace);
  if (!ids) gateIds.set(namespace, (ids = new Memo(10_000)));
  return namespace.get(ids.get(org) ?? ids.set(org, namespace.idFromName(org)));
}

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

/** The limits of `org:<id>` (or the default request limits), in the units the gate counts. */
function limitsOf(record: OrgRecord | null, config: Config): Limits {
  return {
    requests: record?.requests_per_minute ?? config.defaultOrgRpm,
    userRequests: record?.user_requests_per_minute ?? config.defaultUserRpm,
    tokens: record?.tokens_per_minute,
    userTokens: record?.user_tokens_per_minute,
    budget: record?.monthly_budget_usd === undefined ? undefined : budgetNanos(record.monthly_budget_usd),
    userBudget:
      record?.user_monthly_budget_usd === undefined ? undefined : budgetNanos(record.user_monthly_budget_usd),
  };
}

const scopeName = (scope: Scope) => (scope === "org" ? "organization" : "user");

/**
 * Admission: the org's gate admits the request against the org's and the user's monthly budgets,
 * request limits (from `org:<id>`, or DEFAULT_ORG_RPM / DEFAULT_USER_RPM) and token limits, and
 * refuses a revoked key. An admitted request holds a reservation of tokens (usage.ts estimates it)
 * until the metering hands back what it used.
 */
export function admitRequest(): MiddlewareHandler<AppEnv> {
  return async function admitRequest(c, next) {
    const { id, org, user } = c.get("apiKey");
    const config = readConfig(c.env);
    const record = await readRecord(c.env.GATEWAY_KV, "org", org);
    const limits = limitsOf(record, config);
    const estimate = reservationEstimate(
      c.get("body"),
      c.get("rawBody").byteLength,
      config.defaultMaxOutputTokens,
    );
    const admit = async (): Promise<Admission> => orgGate(c.env, org).admit(id, user, limits, estimate);
    // A Durable Object error marked retryable (and not overloaded) may succeed on a fresh stub;
    // retrying an overloaded object would only add to its load.
    const admission = await admit().catch((err: { retryable?: boolean; overloaded?: boolean }) => {
      if (err?.retryable && !err.overloaded) return admit();
      throw err;
    });
    if (admission.admitted) {
      c.set("reservation", { ticket: admission.ticket, tokens: admission.tokens });
      return next();
    }
    if (admission.refused === "revoked") {
      forgetRevokedKey(c.get("apiKeyHash"));
      throw new GatewayError("unauthorized");
    }
    const who = scopeName(admission.scope);
    if (admission.refused === "budget") {
      const usd = admission.scope === "org" ? record?.monthly_budget_usd : record?.user_monthly_budget_usd;
      throw new GatewayError("budget_exceeded", `Budget reached for this ${who}: ${usd} USD per month.`);
    }
    const retryAfterMs = Math.max(1, Math.ceil(admission.retryAfterMs));
    throw new GatewayError(
      "rate_limit_exceeded",
      `Rate limit reached for this ${who}: ${admission.limit} ${admission.unit} per minute.`,
      {
        headers: {
          "retry-after": String(Math.max(1, Math.ceil(retryAfterMs / 1000))),
          "retry-after-ms": String(retryAfterMs),
        },
      },
    );
  };
}
