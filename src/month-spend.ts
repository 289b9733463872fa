import * as v from "valibot";
import { HOUR_MS, type UsageRow } from "./usage-ledger";

/** Months since January 1970, UTC: the calendar month a budget runs for. */
const monthOf = (ms: number) => {
  const date = new Date(ms);
  return date.getUTCFullYear() * 12 + date.getUTCMonth() - 1970 * 12;
};
const monthStart = (month: number) => Date.UTC(1970, month, 1);

const spendRow = v.strictObject({
  user_id: v.pipe(v.string(), v.minLength(1), v.maxLength(256)),
  cost_nanos: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
});

/**
 * What an org and each of its users have spent this calendar month (UTC), in whole nano-dollars:
 * what monthly budgets are checked against, at every admission, from memory.
 *
 * It is kept beside the usage ledger rather than summed from it: the ledger keeps only
 * USAGE_RETENTION_DAYS, which may be shorter than a month, and summing it per admission would cost
 * a query each. One row per month and user, written in the same call as the ledger's rows; a
 * restart reads the current month's rows back, and a new month starts from what has been written
 * for it (nothing, usually). Older months are dropped when a new one starts.
 */
export class MonthSpend {
  #month = -1;
  #monthStarts = 0;
  #monthEnds = 0;
  #org = 0;
  readonly #users = new Map<string, number>();

  constructor(private readonly storage: DurableObjectStorage) {
    storage.sql.exec(`CREATE TABLE IF NOT EXISTS spend (
      month INTEGER NOT NULL,
      user_id TEXT NOT NULL,
      cost_nanos INTEGER NOT NULL CHECK (cost_nanos >= 0),
      PRIMARY KEY (month, user_id)
    )`);
  }

  /** The org's spend in the month of `now`. */
  org(now: number): number {
    this.#current(now);
    return this.#org;
  }

  /** The user's spend in the month of `now`. */
  user(user: string, now: number): number {
    this.#current(now);
    return this.#users.get(user) ?? 0;
  }

  /** Adds the cost of metered `rows` (already checked) to the months they belong to. */
  add(rows: readonly UsageRow[], now: number): void {
    this.#current(now);
    for (const row of rows) {
      if (row.cost_nanos === 0) continue;
      const month = monthOf(row.hour * HOUR_MS);
      this.storage.sql.exec(
        `INSERT INTO spend (month, user_id, cost_nanos) VALUES (?, ?, ?)
         ON CONFLICT (month, user_id) DO UPDATE SET cost_nanos = cost_nanos + excluded.cost_nanos`,
        month,
        row.user,
        row.cost_nanos,
      );
      if (month !== this.#month) continue;
      this.#org += row.cost_nanos;
      this.#users.set(row.user, (this.#users.get(row.user) ?? 0) + row.cost_nanos);
    }
  }

  /** Loads the month of `now` once it has begun: at the first use, and at each month's turn. */
  #current(now: number): void {
    if (now < this.#monthEnds && now >= this.#monthStarts) return;
    this.#month = monthOf(now);
    this.#monthStarts = monthStart(this.#month);
    this.#monthEnds = monthStart(this.#month + 1);
    this.#org = 0;
    this.#users.clear();
    this.storage.sql.exec("DELETE FROM spend WHERE month < ?", this.#month);
    const rows = this.storage.sql.exec("SELECT user_id, cost_nanos FROM spend WHERE month = ?", this.#month);
    for (const stored of rows) {
      const result = v.safeParse(spendRow, stored);
      if (!result.success) {
        // What this object wrote cannot be read back: the org's spend is unknown, so no budget of
        // it has room (never a made-up figure that would let requests through).
        console.error(JSON.stringify({ message: "month spend unreadable", month: this.#month }));
        this.#org = Infinity;
        const user = (stored as { user_id?: unknown }).user_id;
        if (typeof user === "string") this.#users.set(user, Infinity);
        continue;
      }
      this.#org += result.output.cost_nanos;
      this.#users.set(result.output.user_id, result.output.cost_nanos);
    }
  }
}
