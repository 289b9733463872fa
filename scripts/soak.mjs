#!/usr/bin/env node
// `npm run soak`: 10,000 mixed requests (completions, streams, interruptions, cancellations,
// upstream errors, bad input) through `wrangler dev` with the mock upstream. Reports unexpected
// statuses (5xx above all), malformed streams and workerd's memory growth. Loopback only, bounded.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startMockUpstream } from "../test/mock/server.mjs";
import { AdminClient } from "./admin-client.mjs";
import { residentMemory, workerdPids } from "./proc.mjs";
import { startWranglerDev } from "./wrangler.mjs";

const TOTAL = Number(process.env.SOAK_REQUESTS ?? 10_000);
const CONCURRENCY = 16;
const DEADLINE_MS = 20 * 60_000;
const ADMIN_TOKEN = "soak-admin-token";

const ERROR_FRAME =
  'event: error\ndata: {"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\ndata: [DONE]\n\n';

/** A small deterministic generator, so that a run can be repeated. */
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/**
 * A stream is well formed when it is whole events only: each a `data:` line of JSON or `[DONE]`,
 * an `event: error` frame, or a keep-alive comment; and it ends with `[DONE]`, after the error
 * frame when `interrupted`.
 */
function wellFormed(text, interrupted) {
  if (!text.endsWith("\n\n")) return "does not end with a blank line";
  const events = text.slice(0, -2).split("\n\n");
  for (const event of events) {
    if (event === ": keep-alive" || event === "data: [DONE]") continue;
    const lines = event.split("\n");
    const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
    if (lines.some((l) => !l.startsWith("data: ") && l !== "event: error"))
      return `odd line in ${JSON.stringify(event)}`;
    try {
      JSON.parse(data.join("\n"));
    } catch {
      return `event is not JSON: ${JSON.stringify(event.slice(0, 80))}`;
    }
  }
  if (events.at(-1) !== "data: [DONE]") return "no [DONE] at the end";
  if (interrupted !== text.endsWith(ERROR_FRAME))
    return interrupted ? "no error frame" : "unexpected error frame";
  return null;
}

/** Each scenario: its share, the request, and what a correct answer looks like. */
const SCENARIOS = [
  { name: "completion", weight: 30, body: {}, expect: [200] },
  { name: "stream", weight: 20, body: { stream: true }, expect: [200], stream: "complete" },
  {
    name: "long stream",
    weight: 3,
    body: { stream: true, mock: { events: 500 } },
    expect: [200],
    stream: "complete",
  },
  {
    name: "interrupted stream",
    weight: 12,
    body: (r) => ({ stream: true, mock: { reset_after_bytes: 1 + Math.floor(r() * 900) } }),
    expect: [200],
    stream: "interrupted",
  },
  {
    name: "stream without [DONE]",
    weight: 4,
    body: { stream: true, mock: { end_without_done: true } },
    expect: [200],
    stream: "interrupted",
  },
  {
    name: "cancelled stream",
    weight: 8,
    body: { stream: true, mock: { events: 200, interval_ms: 20 } },
    expect: [200],
    cancel: true,
  },
  {
    name: "upstream 429",
    weight: 5,
    body: { mock: { status: 429, body: '{"error":{"message":"slow"}}', headers: { "retry-after": "1" } } },
    expect: [429],
  },
  {
    name: "upstream 503",
    weight: 4,
    body: { mock: { status: 503, body: "overloaded", content_type: "text/plain" } },
    expect: [503],
  },
  { name: "upstream empty", weight: 3, body: { mock: { status: 500 } }, expect: [502] },
  { name: "upstream reset", weight: 3, body: { mock: { reset: true } }, expect: [502] },
  { name: "bad body", weight: 4, raw: '{"model": 7}', expect: [400] },
  { name: "unknown model", weight: 2, body: { model: "nope" }, expect: [400] },
  { name: "bad key", weight: 2, body: {}, key: "sk-gw-wrong", expect: [401] },
];
// SOAK_ONLY="stream,completion" narrows the mix, to see which kind of request costs what.
const ONLY = process.env.SOAK_ONLY?.split(",");
const MIX = ONLY ? SCENARIOS.filter((s) => ONLY.includes(s.name)) : SCENARIOS;
const WEIGHTS = MIX.reduce((sum, s) => sum + s.weight, 0);

function pick(r) {
  let x = r() * WEIGHTS;
  const scenario = MIX.find((s) => (x -= s.weight) < 0) ?? MIX.at(-1);
  if (!scenario) throw new Error(`SOAK_ONLY=${process.env.SOAK_ONLY} names no scenario`);
  return scenario;
}

/** @typedef {{ status?: number, problem?: string, malformed?: boolean }} Outcome */

/** @returns {Promise<Outcome>} */
async function run(url, key, scenario, r) {
  const body = typeof scenario.body === "function" ? scenario.body(r) : scenario.body;
  const payload =
    scenario.raw ??
    JSON.stringify({ model: "soak-model", messages: [{ role: "user", content: "hi" }], ...body });
  const abort = new AbortController();
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${scenario.key ?? key}`, "content-type": "application/json" },
    body: payload,
    signal: abort.signal,
  });
  if (!scenario.expect.includes(response.status)) {
    const text = await response.text();
    return {
      problem: `${scenario.name}: status ${response.status} ${text.slice(0, 120)}`,
      status: response.status,
    };
  }
  if (scenario.cancel) {
    await response.body?.getReader().read();
    abort.abort();
    return { status: response.status };
  }
  const text = await response.text();
  if (scenario.stream) {
    const problem = wellFormed(text, scenario.stream === "interrupted");
    if (problem)
      return {
        problem: `${scenario.name}: malformed stream: ${problem}`,
        status: response.status,
        malformed: true,
      };
  }
  return { status: response.status };
}

/** Resident memory of wrangler's workerd (a grandchild of this process), in MiB. */
const workerdMemory = () => residentMemory(workerdPids()).rssBytes / 1024 / 1024;

const persistTo = mkdtempSync(join(tmpdir(), "gateway-soak-"));
const upstream = await startMockUpstream();
const dev = await startWranglerDev({
  persistTo,
  vars: {
    UPSTREAM_BASE_URL: upstream.baseUrl,
    UPSTREAM_API_KEY: "soak",
    ADMIN_TOKEN,
    STREAM_IDLE_TIMEOUT_MS: "5000",
  },
});
try {
  const admin = new AdminClient(dev.url, ADMIN_TOKEN);
  await admin.putModel("soak-model", {});
  await admin.putGroup("soak", ["*"]);
  await admin.putOrg("soak", { requests_per_minute: 10_000_000, user_requests_per_minute: 10_000_000 });
  const { key } = await admin.createKey({ org: "soak", user: "soak", group: "soak" });

  const r = random(20261125);
  const counts = new Map();
  const problems = [];
  let statuses5xxUnexpected = 0;
  let malformed = 0;
  let sent = 0;
  const started = Date.now();
  const memoryBefore = workerdMemory();
  // Set by a worker below, so typed here rather than narrowed to null.
  let memoryAfterWarmup = /** @type {number | null} */ (null);

  async function worker() {
    while (sent < TOTAL && Date.now() - started < DEADLINE_MS) {
      const n = ++sent;
      const scenario = pick(r);
      counts.set(scenario.name, (counts.get(scenario.name) ?? 0) + 1);
      /** @type {Outcome} */
      const result = await run(dev.url, key, scenario, r).catch((error) => ({
        problem: `${scenario.name}: ${error.message}`,
      }));
      if (result.problem) {
        problems.push(result.problem);
        if ((result.status ?? 0) >= 500) statuses5xxUnexpected++;
        if (result.malformed) malformed++;
      }
      if (n === 1000) memoryAfterWarmup = workerdMemory();
      if (n % 1000 === 0)
        console.log(
          `[soak] ${n} requests, ${problems.length} problems, ${((Date.now() - started) / 1000).toFixed(0)} s`,
        );
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const memoryAfter = workerdMemory();

  console.log("\nscenario counts:");
  for (const [name, count] of [...counts].sort((a, b) => b[1] - a[1]))
    console.log(`  ${name.padEnd(24)} ${count}`);
  console.log(
    `\nrequests: ${sent} in ${((Date.now() - started) / 1000).toFixed(1)} s at concurrency ${CONCURRENCY}`,
  );
  console.log(`unexpected statuses: ${problems.length - malformed} (of them 5xx: ${statuses5xxUnexpected})`);
  console.log(`malformed streams: ${malformed}`);
  console.log(
    `workerd RSS: ${memoryBefore.toFixed(1)} MiB at start, ${memoryAfterWarmup?.toFixed(1)} MiB after 1,000, ${memoryAfter.toFixed(1)} MiB at the end`,
  );
  for (const problem of problems.slice(0, 20)) console.log(`  ${problem}`);
  process.exitCode = problems.length ? 1 : 0;
} finally {
  await dev.stop();
  await upstream.close();
  rmSync(persistTo, { recursive: true, force: true });
}
