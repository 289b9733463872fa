import type { MiddlewareHandler } from "hono";
import { upstreamBase } from "./base-url";
import { InternalFault } from "./errors";
import type { AppEnv, Env } from "./types";

/** An upstream as a request is sent to it: `default` from the vars, others from their records (targets.ts). */
export interface Upstream {
  /** The base URL, without a trailing slash; the API's path is appended. */
  baseUrl: string;
  /** The header carrying the upstream's key, if one is sent. */
  auth: readonly [name: string, value: string] | undefined;
  /** Fixed headers of the upstream record. */
  headers: Record<string, string> | undefined;
  timeoutMs: number;
}

export interface Config {
  /** The upstream `default`: UPSTREAM_BASE_URL with UPSTREAM_API_KEY as bearer. */
  upstream: Upstream;
  maxUpstreamAttempts: number;
  defaultOrgRpm: number;
  defaultUserRpm: number;
  maxBodyBytes: number;
  streamIdleTimeoutMs: number;
  bodyTimeoutMs: number;
  maxEventBytes: number;
  usageRetentionDays: number;
  /** A request's output cap, for its token reservation, when its body sets none. */
  defaultMaxOutputTokens: number;
}

/** A var that cannot be used. The Worker serves nothing until it is fixed: no silent default. */
export class ConfigError extends InternalFault {
  override readonly name = "ConfigError";
}

/** The var's positive integer, or `fallback` when it is not set at all. */
function positiveInt(env: Env, name: keyof Env, fallback: number): number {
  const value = env[name];
  if (value === undefined) return fallback;
  const n = typeof value === "string" && /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new ConfigError(`${name} must be a positive integer`);
  return n;
}

// One env object serves many requests of an isolate; parse it once (a bad var fails every time).
const parsed = new WeakMap<Env, Config | ConfigError>();

/**
 * Reads the `[vars]` and secrets of wrangler.toml (or `wrangler dev --var`) into typed settings.
 * Throws {@link ConfigError} naming the first var that is set but unusable.
 */
export function readConfig(env: Env): Config {
  let config = parsed.get(env);
  if (!config) {
    try {
      config = parse(env);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      config = err;
    }
    parsed.set(env, config);
  }
  if (config instanceof ConfigError) throw config;
  return config;
}

function parse(env: Env): Config {
  const upstreamBaseUrl = upstreamBase(env.UPSTREAM_BASE_URL);
  if (!upstreamBaseUrl)
    throw new ConfigError("UPSTREAM_BASE_URL must be an http or https URL without query or fragment");
  const upstreamTimeoutMs = positiveInt(env, "UPSTREAM_TIMEOUT_MS", 60_000);
  const key = env.UPSTREAM_API_KEY;
  return {
    upstream: {
      baseUrl: upstreamBaseUrl,
      auth: key ? ["authorization", `Bearer ${key}`] : undefined,
      headers: undefined,
      timeoutMs: upstreamTimeoutMs,
    },
    maxUpstreamAttempts: positiveInt(env, "MAX_UPSTREAM_ATTEMPTS", 3),
    defaultOrgRpm: positiveInt(env, "DEFAULT_ORG_RPM", 600),
    defaultUserRpm: positiveInt(env, "DEFAULT_USER_RPM", 60),
    maxBodyBytes: positiveInt(env, "MAX_BODY_BYTES", 10 * 1024 * 1024),
    streamIdleTimeoutMs: positiveInt(env, "STREAM_IDLE_TIMEOUT_MS", 60_000),
    bodyTimeoutMs: positiveInt(env, "BODY_TIMEOUT_MS", 30_000),
    maxEventBytes: positiveInt(env, "MAX_EVENT_BYTES", 16 * 1024 * 1024),
    usageRetentionDays: positiveInt(env, "USAGE_RETENTION_DAYS", 90),
    defaultMaxOutputTokens: positiveInt(env, "DEFAULT_MAX_OUTPUT_TOKENS", 4096),
  };
}

/**
 * Refuses to serve anything while a var is unusable: every request gets 500 `internal_error` and
 * the log line names the var, so a typo in wrangler.toml is seen at once rather than defaulted.
 */
export function requireConfig(): MiddlewareHandler<AppEnv> {
  return async function requireConfig(c, next) {
    readConfig(c.env);
    await next();
  };
}
