import type { Context } from "hono";
import * as v from "valibot";
import { orgGate } from "../admission";
import { checkFields } from "../body";
import { readConfig } from "../config";
import { GatewayError } from "../errors";
import { GROUPINGS, HOUR_MS, type Grouping, type ReportRow, type UsageCounters } from "../usage-ledger";
import type { AppEnv } from "../types";

const GROUPING_NAMES = Object.keys(GROUPINGS) as Grouping[];
const GROUPING_LIST = GROUPING_NAMES.join(", ");

const isoDate = v.pipe(v.string(), v.isoDate());
const isoTimestamp = v.pipe(v.string(), v.isoTimestamp());
/** An ISO 8601 date (UTC midnight) or timestamp with its offset: an instant, whatever the reader's zone. */
const instant = v.pipe(
  v.string("must be a string"),
  v.check(
    (text) => (v.is(isoDate, text) || v.is(isoTimestamp, text)) && Number.isFinite(Date.parse(text)),
    "must be an ISO 8601 date (2026-12-01) or timestamp with an offset (2026-12-01T10:00:00Z)",
  ),
  v.transform((text) => Math.floor(Date.parse(text) / HOUR_MS)),
);

/** The report's query parameters; any other is refused, as in every admin body. */
const usageQuery = v.strictObject({
  from: v.optional(instant),
  to: v.optional(instant),
  group_by: v.optional(
    v.pipe(
      v.string(),
      v.transform((text) => text.split(",")),
      v.check(
        (names) =>
          names.every((name) => (GROUPING_NAMES as string[]).includes(name)) &&
          new Set(names).size === names.length,
        `must be a comma list of ${GROUPING_LIST}, each at most once`,
      ),
      v.transform((names) => names as Grouping[]),
    ),
    "model",
  ),
});

/** Where each grouping goes in a report row, and how its stored value reads there. */
const SHOWN: Record<Grouping, [field: string, show: (value: string | number) => string]> = {
  model: ["model", String],
  user: ["user", String],
  key: ["key_id", String],
  day: ["day", (day) => new Date(Number(day) * 24 * HOUR_MS).toISOString().slice(0, 10)],
  hour: ["hour", (hour) => new Date(Number(hour) * HOUR_MS).toISOString()],
};

const iso = (hour: number) => new Date(hour * HOUR_MS).toISOString();

/** The contract's counters of a report row: cost in dollars, as it is billed. */
const counters = (sum: UsageCounters) => ({
  requests: sum.requests,
  input_tokens: sum.input_tokens,
  output_tokens: sum.output_tokens,
  cached_tokens: sum.cached_tokens,
  cost_usd: sum.cost_nanos / 1e9,
  estimated_requests: sum.estimated_requests,
  upstream_errors: sum.upstream_errors,
});

function totalOf(rows: ReportRow[]): UsageCounters {
  const total: UsageCounters = {
    requests: 0,
    input_tokens: 0,
    output_tokens: 0,
    cached_tokens: 0,
    cost_nanos: 0,
    estimated_requests: 0,
    upstream_errors: 0,
  };
  for (const row of rows)
    for (const name of Object.keys(total) as Array<keyof UsageCounters>) total[name] += row[name];
  return total;
}

/**
 * `GET /admin/orgs/<org>/usage?from&to&group_by`: the org's usage between two hours (`from`
 * inclusive, default the start of this UTC month; `to` exclusive, default the end of this hour so
 * that the current hour shows), summed per group, with the total.
 */
export async function usageReport(c: Context<AppEnv>, org: string): Promise<Response> {
  const query = checkFields(usageQuery, c.req.query());
  const now = new Date();
  const from = query.from ?? Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / HOUR_MS;
  const to = query.to ?? Math.floor(now.getTime() / HOUR_MS) + 1;
  if (to <= from) {
    throw new GatewayError(
      "invalid_body",
      "Invalid 'to': must be at least an hour after 'from' (both are truncated to the hour).",
      { param: "to" },
    );
  }
  const groupBy = query.group_by;
  const rows = await orgGate(c.env, org).usageReport(
    { from, to, groupBy },
    readConfig(c.env).usageRetentionDays,
  );
  const data = rows.map((row) => ({
    ...Object.fromEntries(
      groupBy.map((grouping, i) => {
        const [field, show] = SHOWN[grouping];
        return [field, show(row.groups[i]!)];
      }),
    ),
    ...counters(row),
  }));
  return c.json({
    object: "usage_report",
    org,
    from: iso(from),
    to: iso(to),
    group_by: groupBy,
    data,
    total: counters(totalOf(rows)),
  });
}
