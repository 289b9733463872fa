import type { Config, Upstream } from "./config";
import { InternalFault } from "./errors";
import { readRecord, type ModelRecord } from "./records";
import type { Env } from "./types";

/**
 * Where a model's requests go: its targets (an upstream and the model name that upstream knows),
 * in the order they are tried, and the upstreams' connection settings. See the README's "Several
 * upstreams" for the rules.
 */

/** One place a model's requests can go. */
export interface Target {
  upstream: string;
  /** The model name sent to that upstream. */
  model: string;
  weight?: number;
}

// A checked model record is the isolate's cached object (records.ts), so its targets are worked out
// once per fetch of the record, not on every request.
const targetsOfRecord = new WeakMap<ModelRecord, readonly Target[]>();

/**
 * The model's targets in their configured order: its `upstreams`, each naming `upstream_model` or
 * the model's id when it names no model; without `upstreams`, the upstream `default` alone.
 */
export function targetsOf(model: ModelRecord, id: string): readonly Target[] {
  let targets = targetsOfRecord.get(model);
  if (!targets) {
    const fallback = model.upstream_model ?? id;
    targets = (model.upstreams ?? [{ upstream: "default" }]).map((target) => ({
      ...target,
      model: target.model ?? fallback,
    }));
    targetsOfRecord.set(model, targets);
  }
  return targets;
}

/** How long a target that answered 429 or 503 without `Retry-After`, or could not be reached, is skipped. */
export const COOLDOWN_MS = 5_000;

/** Until when each target is skipped, by `upstream model`: this isolate's own view, never shared. */
const coolingUntil = new Map<string, number>();

const targetKey = (target: Target) => `${target.upstream} ${target.model}`;

/** The target is skipped by this isolate's requests for `ms`. */
export function coolDown(target: Target, ms: number): void {
  if (ms > 0) coolingUntil.set(targetKey(target), Date.now() + ms);
}

/**
 * How long an upstream asks to be left alone: `Retry-After` in seconds or as an HTTP date, else
 * {@link COOLDOWN_MS}. Every HTTP date names its month; a value without a letter that is not whole
 * seconds ("1.5", "-5") is no date, though `Date.parse` reads it as a day in 2001.
 */
export function retryAfterMs(value: string | null): number {
  if (value === null) return COOLDOWN_MS;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const ms = /[a-z]/i.test(trimmed) ? Date.parse(trimmed) - Date.now() : NaN;
  return Number.isNaN(ms) ? COOLDOWN_MS : ms;
}

/**
 * The targets of one request in the order they are tried. Targets cooling down are left out, but
 * when every one is, the one whose cooldown ends first is tried anyway. `loadbalance` puts one
 * target first, chosen by weight (default 1); the rest follow in their order.
 */
export function attemptOrder(targets: readonly Target[], routing: ModelRecord["routing"]): readonly Target[] {
  // One target is tried whatever its state: nothing else could answer.
  if (targets.length === 1) return targets;
  const now = Date.now();
  let ready = targets.filter((target) => !((coolingUntil.get(targetKey(target)) ?? 0) > now));
  if (ready.length === 0) {
    const until = (target: Target) => coolingUntil.get(targetKey(target)) ?? 0;
    return [targets.reduce((soonest, target) => (until(target) < until(soonest) ? target : soonest))];
  }
  if (routing === "loadbalance" && ready.length > 1) {
    let pick = Math.random() * ready.reduce((sum, target) => sum + (target.weight ?? 1), 0);
    const first = ready.find((target) => (pick -= target.weight ?? 1) < 0) ?? ready[ready.length - 1]!;
    ready = [first, ...ready.filter((target) => target !== first)];
  }
  return ready;
}

/** An upstream that cannot be called as configured: that attempt fails, and the log says why. */
export class MisconfiguredUpstream extends InternalFault {
  override readonly name = "MisconfiguredUpstream";
}

/**
 * The upstream `id` ready to be sent to: `default` from the vars, any other from its
 * `upstream:<id>` record (cached like every record) with its key read from the Worker secret the
 * record names. A missing record or secret throws {@link MisconfiguredUpstream}: the gateway never
 * calls an upstream unauthenticated because its key is missing.
 */
export async function upstreamOf(env: Env, config: Config, id: string): Promise<Upstream> {
  if (id === "default") return config.upstream;
  const record = await readRecord(env.GATEWAY_KV, "upstream", id);
  if (!record) throw new MisconfiguredUpstream(`upstream '${id}' does not exist`);
  let auth: Upstream["auth"];
  const how = record.auth ?? "bearer";
  if (how !== "none") {
    const name = record.api_key_secret!;
    const secret = (env as unknown as Record<string, unknown>)[name];
    if (typeof secret !== "string" || !secret)
      throw new MisconfiguredUpstream(`upstream '${id}': secret ${name} is not set`);
    auth = how === "bearer" ? ["authorization", `Bearer ${secret}`] : [how, secret];
  }
  return {
    baseUrl: record.base_url,
    auth,
    headers: record.headers as Record<string, string> | undefined,
    timeoutMs: record.timeout_ms ?? config.upstream.timeoutMs,
  };
}
