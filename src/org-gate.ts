import { DurableObject } from "cloudflare:workers";
import * as v from "valibot";
import { MonthSpend } from "./month-spend";
import { TokenWindow, WINDOW_MS } from "./token-window";
import { UsageLedger, type ReportRow, type UsageQuery, type UsageRow } from "./usage-ledger";

// Long after KV has propagated a revocation everywhere and every isolate cache has expired.
const REVOCATION_MEMORY_MS = 24 * 60 * 60 * 1000;

/** The limits one admission is checked against; absent ones do not apply. */
export interface Limits {
  requests: number;
  userRequests: number;
  tokens?: number;
  userTokens?: number;
  /** Monthly budgets, in whole nano-dollars (see usage.ts). */
  budget?: number;
  userBudget?: number;
}

export type Scope = "org" | "user";

/** The tokens reserved for an admitted request, and the ticket that names them when it ends. */
export interface Reservation {
  ticket: string;
  tokens: number;
}

export type Admission =
  | ({ admitted: true } & Reservation)
  | { admitted: false; refused: "revoked" }
  | { admitted: false; refused: "budget"; scope: Scope }
  | {
      admitted: false;
      refused: "rate_limit";
      scope: Scope;
      unit: "requests" | "tokens";
      limit: number;
      retryAfterMs: number;
    };

/**
 * Storage keys: `a:<time>:<seq>` for each admission (and each overrun, below), `r:<key id>` → time
 * for revocations. An admission's key is also its ticket.
 */
const admissionKey = (at: number, seq: number) =>
  `a:${String(at).padStart(15, "0")}:${String(seq).padStart(9, "0")}`;
const admissionTime = (key: string) => Number(key.slice(2, 17));
// What this object wrote; anything else in its storage is not counted on trust.
const ADMISSION_KEY = /^a:\d{15}:\d{9}$/;
const isLimit = (n: number | undefined) => Number.isSafeInteger(n) && n! > 0;
const isOptionalLimit = (n: number | undefined) => n === undefined || isLimit(n);
const revocationKey = (keyId: string) => `r:${keyId}`;
// Storage puts and deletes take at most 128 keys at a time.
const STORAGE_BATCH = 128;
/**
 * How long a charge waits to be written: everything kept meanwhile goes in the same write. Each
 * write is a commit of its own, and a commit per request was the largest cost the gate added to a
 * request; one made at once also held up the answers right after it (bench/README.md).
 */
const SAVE_INTERVAL_MS = 10;

const tokenCount = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const userId = v.pipe(v.string(), v.minLength(1), v.maxLength(256));

/**
 * The value under an `a:` key: whose request it was and the tokens it is charged (its reservation,
 * then what it used). `overrun` marks tokens a request used beyond its reservation after its
 * admission had left the window: charged when it ended, and not a request of its own. A bare user
 * id is an admission stored before token limits existed: a request, no tokens.
 */
const storedCharge = v.union([
  userId,
  v.strictObject({ user: userId, tokens: tokenCount, overrun: v.optional(v.literal(true)) }),
]);
type StoredCharge = v.InferOutput<typeof storedCharge>;

/**
 * A stored charge that cannot be read is counted against the org as a request that fills any
 * token limit, until it leaves the window: what it held is unknown, and guessing low would let
 * requests through that the limits refuse. Far above any token limit, far below 2^53.
 */
const UNREADABLE_TOKENS = 2 ** 50;

/** What the metering hands back when an admitted request has ended (see metering.ts). */
export const settlement = v.strictObject({
  ticket: v.pipe(v.string(), v.regex(ADMISSION_KEY)),
  user: userId,
  /** The tokens its admission reserved. */
  reserved: tokenCount,
  /** The tokens it used: its metered or estimated usage, 0 for an upstream error. */
  used: tokenCount,
});
export type Settlement = v.InferOutput<typeof settlement>;
const settlements = v.array(settlement);

/** One scope's (the org's or a user's) admissions and tokens in the window. */
interface ScopeState {
  /** Admission times, oldest first. */
  requests: number[];
  tokens: TokenWindow;
}

/** Milliseconds until one more request fits in `requests`, or 0 if it fits now. */
function requestWait(requests: number[], limit: number, now: number): number {
  if (requests.length < limit) return 0;
  // The admission that must expire before one more fits.
  return requests[requests.length - limit]! + WINDOW_MS - now;
}

/**
 * The gate of one org (a Durable Object, binding RATE_LIMITER, one instance per org): every request
 * that would reach an upstream passes it first, in one atomic call that checks the key, the
 * monthly budgets and the request and token limits.
 *
 * It counts the org and all of its users, so a request is admitted against every limit at once
 * and a rejected one consumes nothing. Each scope keeps a sliding log of admission times (at most
 * `limit` admissions in any 60 s) and a window of the tokens charged in the last 60 s
 * (token-window.ts). An admitted request is charged its reservation at once, in both scopes; when
 * it ends, the metering hands back what it used (with the usage rows, in the same call) and the
 * charge becomes that, where it was made. Budgets are checked against this month's spend
 * (month-spend.ts), which the same usage rows add to.
 *
 * Memory holds the logs and windows and decides; storage keeps a copy of every charge so a restart
 * loses no counts. Charges are written {@link SAVE_INTERVAL_MS} after they are made, in batches and
 * without waiting for confirmation: the answer does not depend on them, and a write per answer was
 * most of the gateway's added latency (bench/README.md has the figures). Only a crash within that
 * time of a charge can lose it.
 *
 * Because every such request asks this object first, it also holds the org's recent key
 * revocations: a revoked key stops here at once, everywhere, while KV and the isolates' caches
 * catch up.
 *
 * It also keeps the org's usage (tokens and cost per hour, key, user and model) in its SQLite
 * storage: see usage-ledger.ts.
 */
export class OrgGate extends DurableObject {
  private readonly scopes = new Map<string, ScopeState>();
  private readonly revoked = new Set<string>();
  /** Storage keys of the charges still in the window, oldest first. */
  private readonly stored: string[] = [];
  private seq = 0;
  /** Charges not yet handed to storage, by storage key. */
  private unsaved: Record<string, StoredCharge> = {};
  private saving = false;
  private lastSweep = 0;
  /** The latest time this object has seen: its clock never goes back, so windows stay in order. */
  private latest = 0;
  private readonly usage: UsageLedger;
  private readonly spend: MonthSpend;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    this.usage = new UsageLedger(ctx.storage);
    this.spend = new MonthSpend(ctx.storage);
    ctx.blockConcurrencyWhile(async () => {
      const now = this.clock();
      const stale: string[] = [];
      for (const [key, value] of await ctx.storage.list<unknown>({ prefix: "a:" })) {
        const at = admissionTime(key);
        if (!ADMISSION_KEY.test(key) || at <= now - WINDOW_MS) {
          stale.push(key);
          continue;
        }
        this.latest = Math.max(this.latest, at);
        this.stored.push(key);
        this.seq = Math.max(this.seq, Number(key.slice(18)) + 1);
        const charge = v.safeParse(storedCharge, value);
        if (!charge.success) {
          const org = this.scope("org");
          org.requests.push(at);
          org.tokens.charge(at, UNREADABLE_TOKENS);
          continue;
        }
        const { user, tokens, overrun } =
          typeof charge.output === "string"
            ? { user: charge.output, tokens: 0, overrun: false }
            : charge.output;
        this.charge(at, user, tokens, !overrun);
      }
      for (const [key, at] of await ctx.storage.list<unknown>({ prefix: "r:" })) {
        // A revocation whose time cannot be read is kept: forgetting it would revive the key.
        if (typeof at === "number" && at <= now - REVOCATION_MEMORY_MS) stale.push(key);
        else this.revoked.add(key.slice(2));
      }
      await this.forget(stale);
    });
  }

  /** Now, or the latest time seen if the system clock has gone back. */
  private clock(): number {
    const now = Date.now();
    if (now > this.latest) this.latest = now;
    return this.latest;
  }

  /** The state of `scope` (`org` or `user:<id>`); with `now`, as of then. */
  private scope(scope: string, now?: number): ScopeState {
    let state = this.scopes.get(scope);
    if (!state) this.scopes.set(scope, (state = { requests: [], tokens: new TokenWindow() }));
    if (now === undefined) return state;
    const { requests } = state;
    let expired = 0;
    while (expired < requests.length && requests[expired]! <= now - WINDOW_MS) expired++;
    if (expired) requests.splice(0, expired);
    state.tokens.expire(now);
    return state;
  }

  /** Charges `tokens` (and, for an admission, a request) at `at` to the org and the user. */
  private charge(at: number, user: string, tokens: number, request: boolean) {
    const org = this.scope("org");
    const own = this.scope(`user:${user}`);
    if (request) {
      org.requests.push(at);
      own.requests.push(at);
    }
    org.tokens.charge(at, tokens);
    own.tokens.charge(at, tokens);
  }

  /** Keeps a charge to be written {@link SAVE_INTERVAL_MS} from now, with all kept meanwhile. */
  private keep(key: string, charge: StoredCharge) {
    this.unsaved[key] = charge;
    if (this.saving) return;
    this.saving = true;
    setTimeout(() => this.save(), SAVE_INTERVAL_MS);
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

  /** Drops stored charges that left the window and, now and then, the state of idle users. */
  private prune(now: number) {
    let expired = 0;
    while (expired < this.stored.length && admissionTime(this.stored[expired]!) <= now - WINDOW_MS) expired++;
    if (expired) {
      const gone = this.stored.splice(0, expired);
      // A settlement still waiting to be written would bring a dropped charge back for good.
      for (const key of gone) delete this.unsaved[key];
      this.forget(gone).catch(() => {});
    }
    if (now - this.lastSweep < WINDOW_MS) return;
    this.lastSweep = now;
    // A scope with tokens still charged may have a reservation to settle: it stays.
    for (const [name, state] of this.scopes) {
      this.scope(name, now);
      if (state.requests.length === 0 && state.tokens.total === 0) this.scopes.delete(name);
    }
  }

  /**
   * Admits one request of `user` with key `keyId` if the key stands, neither monthly budget is
   * spent, and both scopes have room for one more request and for its reservation: `estimate`
   * tokens, capped at the smaller token limit. A refusal changes nothing.
   */
  admit(keyId: string, user: string, limits: Limits, estimate: number): Admission {
    if (this.revoked.has(keyId)) return { admitted: false, refused: "revoked" };
    // A limit that is not a count would make every wait NaN, and NaN reads as "room".
    if (
      !isLimit(limits.requests) ||
      !isLimit(limits.userRequests) ||
      !isOptionalLimit(limits.tokens) ||
      !isOptionalLimit(limits.userTokens) ||
      !isOptionalLimit(limits.budget) ||
      !isOptionalLimit(limits.userBudget)
    )
      throw new RangeError("limits must be positive integers");
    if (!isLimit(estimate)) throw new RangeError("an estimate must be a positive integer");
    const now = this.clock();
    // Budgets first: a spent budget is not a matter of waiting.
    if (limits.budget !== undefined && this.spend.org(now) >= limits.budget)
      return { admitted: false, refused: "budget", scope: "org" };
    if (limits.userBudget !== undefined && this.spend.user(user, now) >= limits.userBudget)
      return { admitted: false, refused: "budget", scope: "user" };

    const org = this.scope("org", now);
    const own = this.scope(`user:${user}`, now);
    const tokens = Math.min(estimate, limits.tokens ?? estimate, limits.userTokens ?? estimate);
    // The longest wait answers; on a tie the org's, and requests before tokens.
    let refusal: Extract<Admission, { refused: "rate_limit" }> | undefined;
    const consider = (retryAfterMs: number, scope: Scope, unit: "requests" | "tokens", limit: number) => {
      if (retryAfterMs > (refusal?.retryAfterMs ?? 0))
        refusal = { admitted: false, refused: "rate_limit", scope, unit, limit, retryAfterMs };
    };
    consider(requestWait(org.requests, limits.requests, now), "org", "requests", limits.requests);
    if (limits.tokens !== undefined)
      consider(org.tokens.waitFor(tokens, limits.tokens, now), "org", "tokens", limits.tokens);
    consider(requestWait(own.requests, limits.userRequests, now), "user", "requests", limits.userRequests);
    if (limits.userTokens !== undefined)
      consider(own.tokens.waitFor(tokens, limits.userTokens, now), "user", "tokens", limits.userTokens);
    if (refusal) return refusal;

    org.requests.push(now);
    own.requests.push(now);
    org.tokens.charge(now, tokens);
    own.tokens.charge(now, tokens);
    const ticket = admissionKey(now, this.seq++);
    this.stored.push(ticket);
    this.keep(ticket, { user, tokens });
    this.prune(now);
    return { admitted: true, ticket, tokens };
  }

  /**
   * An admitted request has ended: its reservation becomes what it used, where it was charged. If
   * its admission has already left the window, what it used beyond its reservation is charged now
   * instead (nothing is given back: the reservation has expired anyway).
   */
  private settle({ ticket, user, reserved, used }: Settlement, now: number) {
    const delta = used - reserved;
    if (delta === 0) return;
    const at = admissionTime(ticket);
    const org = this.scope("org", now);
    const own = this.scope(`user:${user}`, now);
    if (org.tokens.adjust(at, delta)) {
      own.tokens.adjust(at, delta);
      this.keep(ticket, { user, tokens: used });
    } else if (delta > 0) {
      const key = admissionKey(now, this.seq++);
      this.charge(now, user, delta, false);
      this.stored.push(key);
      this.keep(key, { user, tokens: delta, overrun: true });
    }
  }

  /** Whether `keyId` has been revoked (for routes that count nothing). */
  isRevoked(keyId: string): boolean {
    return this.revoked.has(keyId);
  }

  /**
   * Adds a batch of metered usage (see metering.ts) to the ledger and this month's spend, drops
   * hours older than `retentionDays`, and settles the reservations of the requests that ended.
   * Nothing is recorded if anything in the batch is not what the metering sends.
   */
  recordUsage(rows: UsageRow[], retentionDays: number, ended: Settlement[] = []): void {
    const checked = v.parse(settlements, ended);
    const recorded = this.usage.record(rows, retentionDays);
    const now = this.clock();
    this.spend.add(recorded, now);
    for (const ending of checked) this.settle(ending, now);
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
