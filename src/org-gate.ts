import { DurableObject } from "cloudflare:workers";
import { UsageLedger, type ReportRow, type UsageQuery, type UsageRow } from "./usage-ledger";

const WINDOW_MS = 60_000;
// Long after KV has propagated a revocation everywhere and every isolate cache has expired.
const REVOCATION_MEMORY_MS = 24 * 60 * 60 * 1000;

export type Admission =
  | { admitted: true }
  | { admitted: false; revoked: true }
  | { admitted: false; revoked?: false; scope: "org" | "user"; limit: number; retryAfterMs: number };

/** Storage keys: `a:<time>:<seq>` → user for each admission, `r:<key id>` → time for revocations. */
const admissionKey = (at: number, seq: number) =>
  `a:${String(at).padStart(15, "0")}:${String(seq).padStart(9, "0")}`;
const admissionTime = (key: string) => Number(key.slice(2, 17));
// What this object wrote; anything else in its storage is not counted on trust.
const ADMISSION_KEY = /^a:\d{15}:\d{9}$/;
const isLimit = (n: number) => Number.isSafeInteger(n) && n > 0;
const revocationKey = (keyId: string) => `r:${keyId}`;
// Storage puts and deletes take at most 128 keys at a time.
const STORAGE_BATCH = 128;

/**
 * The gate of one org (a Durable Object, binding RATE_LIMITER, one instance per org): every request
 * that would reach an upstream passes it first, in one atomic call.
 *
 * It counts the org and all of its users, so a request is admitted against both limits at once
 * and a rejected one consumes nothing. Each scope keeps a sliding log of admission times: at most
 * `limit` admissions in any 60 s. Memory holds the logs and decides; storage keeps a copy of every
 * admission so a restart loses no counts. Admissions are written just after the answer, in batches
 * and without waiting for confirmation: the answer does not depend on them, and a write per answer
 * was most of the gateway's added latency (bench/README.md has the figures). Only a crash within
 * the same instant can lose an admission.
 *
 * Because every such request asks this object first, it also holds the org's recent key
 * revocations: a revoked key stops here at once, everywhere, while KV and the isolates' caches
 * catch up.
 *
 * It also keeps the org's usage (tokens and cost per hour, key, user and model) in its SQLite
 * storage: see usage-ledger.ts.
 */
export class OrgGate extends DurableObject {
  private readonly logs = new Map<string, number[]>();
  private readonly revoked = new Set<string>();
  /** Storage keys of the admissions still in the window, oldest first. */
  private readonly stored: string[] = [];
  private seq = 0;
  /** Admissions not yet handed to storage, by storage key. */
  private unsaved: Record<string, string> = {};
  private saving = false;
  private lastSweep = 0;
  private readonly usage: UsageLedger;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    this.usage = new UsageLedger(ctx.storage);
    ctx.blockConcurrencyWhile(async () => {
      const now = Date.now();
      const stale: string[] = [];
      for (const [key, user] of await ctx.storage.list<unknown>({ prefix: "a:" })) {
        const at = admissionTime(key);
        if (!ADMISSION_KEY.test(key) || typeof user !== "string" || at <= now - WINDOW_MS) {
          stale.push(key);
          continue;
        }
        this.recent("org", 0).push(at);
        this.recent(`user:${user}`, 0).push(at);
        this.stored.push(key);
        this.seq = Math.max(this.seq, Number(key.slice(18)) + 1);
      }
      for (const [key, at] of await ctx.storage.list<unknown>({ prefix: "r:" })) {
        // A revocation whose time cannot be read is kept: forgetting it would revive the key.
        if (typeof at === "number" && at <= now - REVOCATION_MEMORY_MS) stale.push(key);
        else this.revoked.add(key.slice(2));
      }
      await this.forget(stale);
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

  private save() {
    const entries = Object.entries(this.unsaved);
    this.unsaved = {};
    this.saving = false;
    for (let i = 0; i < entries.length; i += STORAGE_BATCH) {
      // A failed write resets the object; there is nothing to add here.
      this.ctx.storage
        .put(Object.fromEntries(entries.slice(i, i + STORAGE_BATCH)), { allowUnconfirmed: true })
        .catch(() => {});
    }
  }

  private async forget(keys: string[]) {
    for (let i = 0; i < keys.length; i += STORAGE_BATCH) {
      await this.ctx.storage.delete(keys.slice(i, i + STORAGE_BATCH), { allowUnconfirmed: true });
    }
  }

  /** Drops stored admissions that left the window and, now and then, the logs of idle users. */
  private prune(now: number) {
    let expired = 0;
    while (expired < this.stored.length && admissionTime(this.stored[expired]!) <= now - WINDOW_MS) expired++;
    if (expired) this.forget(this.stored.splice(0, expired)).catch(() => {});
    if (now - this.lastSweep < WINDOW_MS) return;
    this.lastSweep = now;
    for (const scope of this.logs.keys()) if (this.recent(scope, now).length === 0) this.logs.delete(scope);
  }

  /** Admits one request of `user` with key `keyId` if the key stands and both scopes have room. */
  admit(keyId: string, user: string, orgLimit: number, userLimit: number): Admission {
    if (this.revoked.has(keyId)) return { admitted: false, revoked: true };
    // A limit that is not a count would make every wait NaN, and NaN reads as "room".
    if (!isLimit(orgLimit) || !isLimit(userLimit)) throw new RangeError("limits must be positive integers");
    const now = Date.now();
    const orgLog = this.recent("org", now);
    const userLog = this.recent(`user:${user}`, now);
    const orgWait = this.waitFor(orgLog, orgLimit, now);
    const userWait = this.waitFor(userLog, userLimit, now);
    if (orgWait || userWait) {
      const scope = orgWait >= userWait ? "org" : "user";
      const limit = scope === "org" ? orgLimit : userLimit;
      return { admitted: false, scope, limit, retryAfterMs: Math.max(orgWait, userWait) };
    }
    orgLog.push(now);
    userLog.push(now);
    const key = admissionKey(now, this.seq++);
    this.stored.push(key);
    this.unsaved[key] = user;
    if (!this.saving) {
      this.saving = true;
      // After this answer has gone: under load one write carries many admissions.
      setTimeout(() => this.save(), 0);
    }
    this.prune(now);
    return { admitted: true };
  }

  /** Whether `keyId` has been revoked (for routes that count nothing). */
  isRevoked(keyId: string): boolean {
    return this.revoked.has(keyId);
  }

  /** Adds a batch of metered usage (see metering.ts); drops hours older than `retentionDays`. */
  recordUsage(rows: UsageRow[], retentionDays: number): void {
    this.usage.record(rows, retentionDays);
  }

  /** The org's usage over `query`'s hours, summed per group. */
  usageReport(query: UsageQuery, retentionDays: number): ReportRow[] {
    return this.usage.report(query, retentionDays);
  }

  /** Refuses `keyId` from now on; durable before it returns. */
  async revoke(keyId: string): Promise<void> {
    this.revoked.add(keyId);
    await this.ctx.storage.put(revocationKey(keyId), Date.now());
  }
}
