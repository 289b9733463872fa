import * as v from "valibot";

/**
 * An org's usage, kept in its gate's SQLite storage: one row per UTC hour x key x user x gateway
 * model, holding the contract's counters. Cost is kept in whole nano-dollars (see usage.ts), so
 * sums are exact; reports show it in dollars.
 */

export const HOUR_MS = 3_600_000;

const count = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const name = v.pipe(v.string(), v.minLength(1), v.maxLength(256));

const COUNTERS = {
  requests: count,
  input_tokens: count,
  output_tokens: count,
  cached_tokens: count,
  cost_nanos: count,
  estimated_requests: count,
  upstream_errors: count,
};

export type UsageCounters = { [K in keyof typeof COUNTERS]: number };

/** One hour's usage of one key with one model: what the Worker hands over, and a stored row. */
export const usageRow = v.strictObject({
  /** Hours since the epoch (UTC). */
  hour: count,
  key_id: name,
  user: name,
  model: name,
  ...COUNTERS,
});
export type UsageRow = v.InferOutput<typeof usageRow>;

const usageRows = v.array(usageRow);

/** How a report may group its rows, and the stored column (or expression) each groups by. */
export const GROUPINGS = {
  model: "model",
  user: "user_id",
  key: "key_id",
  day: "hour / 24",
  hour: "hour",
} as const;
export type Grouping = keyof typeof GROUPINGS;

export interface UsageQuery {
  /** Hours since the epoch: `from` inclusive, `to` exclusive. */
  from: number;
  to: number;
  groupBy: Grouping[];
}

/** A report row: the values of its groups (in `groupBy` order) and its summed counters. */
export type ReportRow = { groups: Array<string | number> } & UsageCounters;

const counterColumns = Object.keys(COUNTERS) as Array<keyof UsageCounters>;

// What the sums read back must be; anything else is storage that cannot be trusted.
const reportRow = (groups: number) =>
  v.strictObject({
    ...Object.fromEntries(Array.from({ length: groups }, (_, i) => [`g${i}`, v.union([name, count])])),
    ...COUNTERS,
  });

/**
 * The usage table of one org's gate. Writes come in batches (metering.ts gathers an isolate's
 * requests for a moment); expired hours are dropped at most once an hour of wall time.
 */
export class UsageLedger {
  #lastPrune = 0;

  constructor(private readonly storage: DurableObjectStorage) {
    storage.sql.exec(`CREATE TABLE IF NOT EXISTS usage (
      hour INTEGER NOT NULL,
      key_id TEXT NOT NULL,
      user_id TEXT NOT NULL,
      model TEXT NOT NULL,
      ${counterColumns.map((column) => `${column} INTEGER NOT NULL CHECK (${column} >= 0)`).join(",\n      ")},
      PRIMARY KEY (hour, key_id, user_id, model)
    )`);
  }

  /** Adds `rows` to the stored hours, and drops hours older than `retentionDays`. Returns them, checked. */
  record(rows: unknown, retentionDays: number): UsageRow[] {
    const checked = v.parse(usageRows, rows);
    const columns = counterColumns.join(", ");
    const placeholders = counterColumns.map(() => "?").join(", ");
    const sums = counterColumns.map((column) => `${column} = ${column} + excluded.${column}`).join(", ");
    this.storage.transactionSync(() => {
      for (const row of checked) {
        this.storage.sql.exec(
          `INSERT INTO usage (hour, key_id, user_id, model, ${columns}) VALUES (?, ?, ?, ?, ${placeholders})
           ON CONFLICT (hour, key_id, user_id, model) DO UPDATE SET ${sums}`,
          row.hour,
          row.key_id,
          row.user,
          row.model,
          ...counterColumns.map((column) => row[column]),
        );
      }
    });
    const now = Date.now();
    if (now - this.#lastPrune >= HOUR_MS) this.prune(retentionDays, now);
    return checked;
  }

  /** Drops the hours that have left the retention period. */
  prune(retentionDays: number, now = Date.now()): void {
    this.#lastPrune = now;
    this.storage.sql.exec("DELETE FROM usage WHERE hour < ?", oldestKept(retentionDays, now));
  }

  /** The summed counters of `query`'s hours, one row per group, sorted by the groups. */
  report(query: UsageQuery, retentionDays: number): ReportRow[] {
    this.prune(retentionDays);
    const groups = query.groupBy.map((grouping, i) => `${GROUPINGS[grouping]} AS g${i}`);
    const order = query.groupBy.map((_, i) => `g${i}`).join(", ");
    const sums = counterColumns.map((column) => `SUM(${column}) AS ${column}`);
    const cursor = this.storage.sql.exec(
      `SELECT ${[...groups, ...sums].join(", ")} FROM usage WHERE hour >= ? AND hour < ?
       GROUP BY ${order} ORDER BY ${order}`,
      query.from,
      query.to,
    );
    const schema = reportRow(query.groupBy.length);
    return cursor.toArray().map((stored) => {
      const result = v.safeParse(schema, stored);
      if (!result.success) throw new Error("usage storage holds a row that is not a usage row");
      const row = result.output as Record<string, string | number>;
      return {
        groups: query.groupBy.map((_, i) => row[`g${i}`]!),
        ...(Object.fromEntries(counterColumns.map((column) => [column, row[column]])) as UsageCounters),
      };
    });
  }
}

/** The first hour still kept at `now`: the current hour is the last of `retentionDays` x 24. */
function oldestKept(retentionDays: number, now: number): number {
  // Days that are not a count would keep everything (NaN) or nothing.
  if (!Number.isSafeInteger(retentionDays) || retentionDays <= 0)
    throw new RangeError("retention must be a positive number of days");
  return Math.floor(now / HOUR_MS) - retentionDays * 24 + 1;
}
