// Usage: an org's cost and tokens per day, split by model (Chart.js stacked bars), and its top
// users and keys, all from the usage report (`GET /admin/orgs/ORG/usage`).
import { byId, count, field, fillTable, usd } from "./dom.js";

/** Chart.js, loaded before this module by its own script tag (lib/chart.umd.min.js). */
const Chart = /** @type {typeof import("chart.js").Chart} */ (/** @type {any} */ (globalThis).Chart);

const DAY_MS = 24 * 60 * 60 * 1000;
const TOP = 10;

/**
 * @typedef {{ requests: number, input_tokens: number, output_tokens: number, cost_usd: number }} Counters
 * @typedef {Counters & { model?: string, day?: string, user?: string, key_id?: string }} Row
 */

/** @type {import("./console.js").Session | null} */
let session = null;
const form = byId("usage-form", HTMLFormElement);

/** `YYYY-MM-DD` of a time, in UTC (the report's days are UTC days). */
const isoDay = (/** @type {number} */ ms) => new Date(ms).toISOString().slice(0, 10);

/** Every UTC day from `from` to `to`, both included. */
function daysBetween(/** @type {string} */ from, /** @type {string} */ to) {
  const days = [];
  for (let ms = Date.parse(from); ms <= Date.parse(to); ms += DAY_MS) days.push(isoDay(ms));
  return days;
}

/**
 * A stacked bar chart on `canvasId`: one bar per day, one stack segment per model.
 *
 * @param {string} canvasId
 * @param {string[]} days
 * @param {Row[]} rows the report grouped by day and model
 * @param {(row: Row) => number} value
 * @param {(value: number) => string} format how the axis and tooltips write a value
 */
function drawChart(canvasId, days, rows, value, format) {
  const canvas = byId(canvasId, HTMLCanvasElement);
  Chart.getChart(canvas)?.destroy();
  const models = [...new Set(rows.map((row) => row.model ?? ""))].sort();
  const datasets = models.map((model) => ({
    label: model,
    data: days.map((day) =>
      rows.filter((row) => row.model === model && row.day === day).reduce((sum, row) => sum + value(row), 0),
    ),
  }));
  new Chart(canvas, {
    type: "bar",
    data: { labels: days, datasets },
    options: {
      animation: false,
      scales: {
        x: { stacked: true },
        y: { stacked: true, beginAtZero: true, ticks: { callback: (tick) => format(Number(tick)) } },
      },
      plugins: {
        tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${format(item.parsed.y ?? 0)}` } },
      },
    },
  });
}

/** The heaviest first: by cost, then by requests. */
const heaviest = (/** @type {Row[]} */ rows) =>
  [...rows].sort((a, b) => b.cost_usd - a.cost_usd || b.requests - a.requests).slice(0, TOP);

/** @type {[string, (row: Row) => string][]} */
const COUNTER_COLUMNS = [
  ["Requests", (row) => count(row.requests)],
  ["Input tokens", (row) => count(row.input_tokens)],
  ["Output tokens", (row) => count(row.output_tokens)],
  ["Cost", (row) => usd(row.cost_usd)],
];

/** Which load is the latest: an earlier one that answers later is not shown over it. */
let loads = 0;

async function load() {
  if (!session || !form.reportValidity()) return;
  const load = ++loads;
  const admin = session.admin;
  const org = field(form, "org").value;
  const from = field(form, "from").value;
  const to = field(form, "to").value;
  // The report's `to` is exclusive; the form's last day is included.
  const query = { from, to: isoDay(Date.parse(to) + DAY_MS) };
  const reports = await session.run(() =>
    Promise.all([
      admin.usage(org, { ...query, group_by: "day,model" }),
      admin.usage(org, { ...query, group_by: "user" }),
      admin.usage(org, { ...query, group_by: "key" }),
      admin.listKeys(org),
    ]),
  );
  if (!reports || load !== loads) return;
  const [byDay, byUser, byKey, keys] = reports;
  const days = daysBetween(from, to);
  drawChart("cost-chart", days, byDay.data, (row) => row.cost_usd, usd);
  drawChart("tokens-chart", days, byDay.data, (row) => row.input_tokens + row.output_tokens, count);
  const total = /** @type {Counters} */ (byDay.total);
  byId("usage-total", HTMLElement).textContent =
    `${org}, ${from} to ${to}: ${count(total.requests)} requests, ${count(total.input_tokens)} input and ` +
    `${count(total.output_tokens)} output tokens, ${usd(total.cost_usd)}`;
  fillTable(
    byId("top-users", HTMLTableElement),
    [["User", (row) => row.user], ...COUNTER_COLUMNS],
    heaviest(byUser.data),
  );
  /** @type {Map<string, { name?: string, user?: string }>} */
  const keyById = new Map(keys.data.map((/** @type {{ id: string }} */ key) => [key.id, key]));
  fillTable(
    byId("top-keys", HTMLTableElement),
    [
      ["Key", (row) => row.key_id],
      ["Name", (row) => keyById.get(row.key_id ?? "")?.name],
      ["User", (row) => keyById.get(row.key_id ?? "")?.user],
      ...COUNTER_COLUMNS,
    ],
    heaviest(byKey.data),
  );
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  void load();
});

/**
 * Opens the usage view: this UTC month up to today, for the org in the form or the first known one.
 *
 * @param {import("./console.js").Session} current
 */
export function openUsage(current) {
  session = current;
  const now = Date.now();
  if (!field(form, "from").value) field(form, "from").value = `${isoDay(now).slice(0, 8)}01`;
  if (!field(form, "to").value) field(form, "to").value = isoDay(now);
  const org = field(form, "org");
  if (!org.value) org.value = byId("known-orgs", HTMLDataListElement).options[0]?.value ?? "";
  if (org.value) void load();
}
