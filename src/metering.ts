import type { Context, MiddlewareHandler } from "hono";
import { orgGate } from "./admission";
import type { Settlement } from "./org-gate";
import { readConfig } from "./config";
import { costNanos, estimateUsage, type Usage } from "./usage";
import { HOUR_MS, type UsageRow } from "./usage-ledger";
import type { AppEnv, Env } from "./types";

/**
 * Metering: every admitted request becomes usage in its org's gate, after its answer has gone.
 *
 * The usage of an answer is read only once the caller has it (a stream's when it ends, a body's in
 * a later task), then added to this isolate's pending rows. Those are handed to the orgs' gates a
 * moment later, one call per org for everything the isolate answered meanwhile: under load, one
 * write carries many requests, and no answer ever waits for one.
 */

/** Where an answer's usage is found once it has gone: a stream's dialect, or {@link BodyUsage}. */
export interface UsageSource {
  /** What the upstream reported, or null. */
  readonly usage: Usage | null;
  /** Content deltas that went out, for the estimate. */
  readonly deltas: number;
}

// Non-streaming bodies larger than this are not kept for their usage: they are estimated.
const MAX_KEPT_BYTES = 1024 * 1024;
const decoder = new TextDecoder();

/**
 * The usage a non-streaming JSON body reports, read from the bytes kept as they went out (a copy
 * of at most 1 MiB) and parsed only when asked for.
 */
export class BodyUsage implements UsageSource {
  readonly deltas = 0;
  #parts: Uint8Array[] = [];
  #bytes = 0;

  constructor(private readonly read: (json: unknown) => Usage | null) {}

  /** Keeps a copy of `chunk`: the caller may reuse or hand over its memory. */
  keep(chunk: Uint8Array): void {
    this.#bytes += chunk.byteLength;
    if (this.#bytes > MAX_KEPT_BYTES) this.#parts = [];
    else this.#parts.push(chunk.slice());
  }

  get usage(): Usage | null {
    if (this.#bytes > MAX_KEPT_BYTES || this.#parts.length === 0) return null;
    const body = new Uint8Array(this.#bytes);
    let offset = 0;
    for (const part of this.#parts) {
      body.set(part, offset);
      offset += part.byteLength;
    }
    try {
      return this.read(JSON.parse(decoder.decode(body)));
    } catch {
      return null;
    }
  }
}

/** What one org's gate is to be handed: rows by hour, key, user and model, and ended reservations. */
interface Batch {
  rows: Map<string, UsageRow>;
  ended: Settlement[];
}

/** Batches not yet handed to the gates, by org. */
let pending = new Map<string, Batch>();
let flushScheduled = false;
/** How long rows gather before they go; well within the contract's 5 s to show in a report. */
const FLUSH_DELAY_MS = 50;

function add(org: string, row: UsageRow, ended: Settlement) {
  let batch = pending.get(org);
  if (!batch) pending.set(org, (batch = { rows: new Map(), ended: [] }));
  batch.ended.push(ended);
  const rows = batch.rows;
  const id = `${row.hour}\n${row.key_id}\n${row.user}\n${row.model}`;
  const sum = rows.get(id);
  if (!sum) return void rows.set(id, row);
  sum.requests += row.requests;
  sum.input_tokens += row.input_tokens;
  sum.output_tokens += row.output_tokens;
  sum.cached_tokens += row.cached_tokens;
  sum.cost_nanos += row.cost_nanos;
  sum.estimated_requests += row.estimated_requests;
  sum.upstream_errors += row.upstream_errors;
}

/**
 * Hands every pending batch to its org's gate. A write that fails is logged and lost, never retried:
 * its requests' reservations then stay charged until they leave the window.
 */
async function flush(env: Env, retentionDays: number) {
  await new Promise((resolve) => setTimeout(resolve, FLUSH_DELAY_MS));
  const batch = pending;
  pending = new Map();
  flushScheduled = false;
  await Promise.all(
    [...batch].map(([org, { rows, ended }]) =>
      // Async, so that a failure of any kind (a binding that throws at once too) lands in the catch.
      (async () => orgGate(env, org).recordUsage([...rows.values()], retentionDays, ended))().catch(
        (err: unknown) => {
          const error = err instanceof Error ? err.name : typeof err;
          // Not a request's line (log.ts): this one speaks for every request in the batch.
          console.error(JSON.stringify({ message: "usage write failed", org, rows: rows.size, error }));
        },
      ),
    ),
  );
}

/** Queues one request's usage; the request whose row starts a batch keeps the isolate up for it. */
function record(c: Context<AppEnv>, org: string, row: UsageRow, ended: Settlement) {
  add(org, row, ended);
  if (flushScheduled) return;
  flushScheduled = true;
  c.executionCtx.waitUntil(flush(c.env, readConfig(c.env).usageRetentionDays));
}

/** The next task: what runs there runs after the answer has been handed to the runtime. */
const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * The metering step, between admission and the upstream: everything after it reached (or tried to
 * reach) an upstream and is metered. An answer that is not 2xx counts as an upstream error with no
 * tokens; a 2xx answer counts what its upstream reported, or else the contract's estimate. The
 * log line gets the same figures, and the request's token reservation becomes them (nothing for an
 * upstream error) in the same call to the gate.
 */
export function meterUsage(): MiddlewareHandler<AppEnv> {
  return async function meterUsage(c, next) {
    await next();
    const log = c.get("log");
    const source = c.get("usageSource");
    const answered = c.res.ok && source !== undefined;
    log.after(async () => {
      if (!log.streaming) await nextTask();
      const { id: keyId, org, user } = c.get("apiKey");
      const row: UsageRow = {
        hour: Math.floor(Date.now() / HOUR_MS),
        key_id: keyId,
        user,
        model: c.get("body").model,
        requests: 1,
        input_tokens: 0,
        output_tokens: 0,
        cached_tokens: 0,
        cost_nanos: 0,
        estimated_requests: 0,
        upstream_errors: answered ? 0 : 1,
      };
      if (answered) {
        const reported = source.usage;
        const usage = reported ?? estimateUsage(c.get("rawBody").byteLength, source.deltas);
        const cost = costNanos(usage, c.get("model").pricing);
        Object.assign(row, usage, { cost_nanos: cost, estimated_requests: reported ? 0 : 1 });
        Object.assign(log.fields, usage, { cost_usd: cost / 1e9, usage_estimated: !reported });
      }
      const { ticket, tokens } = c.get("reservation");
      const used = row.input_tokens + row.output_tokens;
      record(c, org, row, { ticket, user, reserved: tokens, used });
    });
  };
}
