import { DurableObject } from "cloudflare:workers";
import type { MiddlewareHandler } from "hono";
import { keyRecordKey } from "./auth";
import { readConfig } from "./config";
import { GatewayError } from "./errors";
import { forgetRecord, readRecord } from "./kv-cache";
import type { AppEnv, Env } from "./types";

const WINDOW_MS = 60_000;
// Long after KV has propagated a revocation everywhere and every isolate cache has expired.
const REVOCATION_MEMORY_MS = 24 * 60 * 60 * 1000;

/** `org:<id>` in GATEWAY_KV; a missing field falls back to DEFAULT_ORG_RPM / DEFAULT_USER_RPM. */
export interface OrgRecord {
  requests_per_minute?: number;
  user_requests_per_minute?: number;
}

export type Admission =
  | { admitted: true }
  | { admitted: false; revoked: true }
  | { admitted: false; revoked?: false; scope: "org" | "user"; limit: number; retryAfterMs: number };

/**
 * One instance per org counts the org and all of its users, so a request is admitted against
 * both limits in one atomic call and a rejected one consumes nothing.
 *
 * Each scope keeps a sliding log of admission times: at most `limit` admissions in any 60 s.
 * The log lives in SQLite so a restart loses no counts; memory holds the same log for speed.
 *
 * Because every request that would reach the upstream asks this object first, it also holds the
 * org's recent key revocations: a revoked key stops here at once, everywhere, while KV and the
 * isolates' caches catch up.
 */
export class RateLimiter extends DurableObject<Env> {
  private readonly logs = new Map<string, number[]>();
  private readonly revoked = new Set<string>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      const sql = ctx.storage.sql;
      sql.exec("CREATE TABLE IF NOT EXISTS admissions (scope TEXT NOT NULL, at INTEGER NOT NULL)");
      sql.exec("CREATE INDEX IF NOT EXISTS admissions_at ON admissions (at)");
      sql.exec("CREATE TABLE IF NOT EXISTS revocations (key_id TEXT PRIMARY KEY, at INTEGER NOT NULL)");
      const now = Date.now();
      sql.exec("DELETE FROM admissions WHERE at <= ?", now - WINDOW_MS);
      sql.exec("DELETE FROM revocations WHERE at <= ?", now - REVOCATION_MEMORY_MS);
      for (const row of sql.exec<{ scope: string; at: number }>("SELECT scope, at FROM admissions ORDER BY at")) {
        this.recent(row.scope, 0).push(row.at);
      }
      for (const row of sql.exec<{ key_id: string }>("SELECT key_id FROM revocations")) this.revoked.add(row.key_id);
    });
  }

  /** The scope's admissions inside the window ending at `now`, oldest first. */
  private recent(scope: string, now: number): number[] {
    let log = this.logs.get(scope);
    if (!log) this.logs.set(scope, (log = []));
    let expired = 0;
    while (expired < log.length && log[expired]! <= now - WINDOW_MS) expired++;
    if (expired) log.splice(0, expired);
    return log;
  }

  /** Milliseconds until the scope has room, or 0 if it has room now. */
  private waitFor(log: number[], limit: number, now: number): number {
    if (log.length < limit) return 0;
    // The admission that must expire before one more fits.
    return log[log.length - limit]! + WINDOW_MS - now;
  }

  /** Admits one request of `user` with key `keyId` if the key stands and both scopes have room. */
  admit(keyId: string, user: string, orgLimit: number, userLimit: number): Admission {
    if (this.revoked.has(keyId)) return { admitted: false, revoked: true };
    const now = Date.now();
    const orgLog = this.recent("org", now);
    const userScope = `user:${user}`;
    const userLog = this.recent(userScope, now);
    const orgWait = this.waitFor(orgLog, orgLimit, now);
    const userWait = this.waitFor(userLog, userLimit, now);
    if (orgWait || userWait) {
      const scope = orgWait >= userWait ? "org" : "user";
      const limit = scope === "org" ? orgLimit : userLimit;
      return { admitted: false, scope, limit, retryAfterMs: Math.max(orgWait, userWait) };
    }
    orgLog.push(now);
    userLog.push(now);
    const sql = this.ctx.storage.sql;
    sql.exec("INSERT INTO admissions (scope, at) VALUES ('org', ?), (?, ?)", now, userScope, now);
    sql.exec("DELETE FROM admissions WHERE at <= ?", now - WINDOW_MS);
    return { admitted: true };
  }

  /** Refuses `keyId` from now on. */
  revoke(keyId: string): void {
    this.revoked.add(keyId);
    this.ctx.storage.sql.exec("INSERT OR REPLACE INTO revocations (key_id, at) VALUES (?, ?)", keyId, Date.now());
  }
}

/** The org's RateLimiter. */
export const orgGate = (env: Env, org: string) => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(org));

/** Step 6: the org and user limits, counted in the org's RateLimiter, which also refuses revoked keys. */
export function rateLimit(): MiddlewareHandler<AppEnv> {
  return async function rateLimit(c, next) {
    const { id, org, user } = c.var.apiKey;
    const config = readConfig(c.env);
    const limits = await readRecord<OrgRecord>(c.env.GATEWAY_KV, `org:${org}`);
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
      forgetRecord(keyRecordKey(c.var.apiKeyHash));
      throw new GatewayError("unauthorized");
    }
    const retryAfterMs = Math.max(1, Math.ceil(admission.retryAfterMs));
    const who = admission.scope === "org" ? "organization" : "user";
    throw new GatewayError("rate_limit_exceeded", `Rate limit reached for this ${who}: ${admission.limit} requests per minute.`, {
      headers: {
        "retry-after": String(Math.max(1, Math.ceil(retryAfterMs / 1000))),
        "retry-after-ms": String(retryAfterMs),
      },
    });
  };
}
