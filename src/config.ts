import type { Env } from "./types";

export interface Config {
  upstreamBaseUrl: string;
  upstreamApiKey: string | undefined;
  defaultOrgRpm: number;
  defaultUserRpm: number;
  maxBodyBytes: number;
  upstreamTimeoutMs: number;
  streamIdleTimeoutMs: number;
}

/** A positive integer var, or the documented default when unset or unusable. */
function positiveInt(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return Number.isSafeInteger(n) && n > 0 ? n : fallback;
}

// One env object serves many requests of an isolate; parse it once.
const parsed = new WeakMap<Env, Config>();

/** Reads the `[vars]` and secrets of wrangler.toml (or `wrangler dev --var`) into typed settings. */
export function readConfig(env: Env): Config {
  let config = parsed.get(env);
  if (!config) parsed.set(env, (config = parse(env)));
  return config;
}

function parse(env: Env): Config {
  return {
    upstreamBaseUrl: env.UPSTREAM_BASE_URL.replace(/\/+$/, ""),
    upstreamApiKey: env.UPSTREAM_API_KEY || undefined,
    defaultOrgRpm: positiveInt(env.DEFAULT_ORG_RPM, 600),
    defaultUserRpm: positiveInt(env.DEFAULT_USER_RPM, 60),
    maxBodyBytes: positiveInt(env.MAX_BODY_BYTES, 10 * 1024 * 1024),
    upstreamTimeoutMs: positiveInt(env.UPSTREAM_TIMEOUT_MS, 60_000),
    streamIdleTimeoutMs: positiveInt(env.STREAM_IDLE_TIMEOUT_MS, 60_000),
  };
}
