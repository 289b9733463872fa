// `npm run bench`: the gateway against a pipe-only baseline Worker and against the upstream itself,
// in one run, interleaved, on this machine. Prints a table and writes bench/results.json.
//
// Setup: the gateway bundle exactly as `wrangler deploy` would ship it, and bench/baseline.worker.mjs,
// both in one Miniflare instance (one workerd), both calling the mock upstream (test/mock/). The load
// generator, Node's http client with keep-alive, is the same for all three targets.
import os from "node:os";
import { performance } from "node:perf_hooks";
import { residentMemory, workerdPids } from "../scripts/proc.mjs";
import { buildGateway } from "../scripts/wrangler.mjs";
import { chatStreamBytes, chatStreamEvents } from "../test/mock/streams.mjs";
import { cpuBetween, cpuSnapshot } from "./cpu.mjs";
import { chatRequest, closedLoop, closeTarget, createTarget, streams } from "./load.mjs";
import { buildReport, formatReport, writeReport } from "./report.mjs";
import { BASELINE_HOST, startRuntime } from "./runtime.mjs";
import { summarizeRequests, summarizeStreams } from "./stats.mjs";
import { seedBenchTenant } from "./tenant.mjs";
import { startUpstream } from "./upstream.mjs";

const RESULTS_PATH = new URL("./results.json", import.meta.url).pathname;

// Wall time each target gets per workload per round, sized so that the ratios repeat from run to
// run (bench/README.md, "How a run is sized").
const ROUND = { c1Ms: 500, c32Ms: 1500, streamMs: 400, minStreams: 3 };
// Not recorded: JIT warm-up, connection pools filled, the rate limiter's Durable Object started.
const WARMUP = { c1Ms: 300, c32Ms: 800, streamMs: 200, minStreams: 2 };
const ROUNDS = 14;
// No new round starts past this, which bounds the whole run.
const MEASURE_BUDGET_MS = 105_000;
const STREAM_EVENTS = 2000;
const TARGET_NAMES = ["direct", "baseline", "gateway"];

/**
 * One round: each workload on each target, back to back. The target order rotates with the round
 * so that no target always runs first (on a cold cache) or last (after the others' garbage).
 */
async function runRound(index, targets, requests, sizes) {
  const shift = index % TARGET_NAMES.length;
  const order = [...TARGET_NAMES.slice(shift), ...TARGET_NAMES.slice(0, shift)];
  const round = { c1: {}, c32: {}, stream: {} };
  for (const name of order) {
    round.c1[name] = await closedLoop(targets[name], requests.plain, {
      durationMs: sizes.c1Ms,
      concurrency: 1,
    });
  }
  for (const name of order) {
    round.c32[name] = await closedLoop(targets[name], requests.plain, {
      durationMs: sizes.c32Ms,
      concurrency: 32,
    });
  }
  for (const name of order) {
    round.stream[name] = await streams(targets[name], requests.stream, {
      durationMs: sizes.streamMs,
      minCount: sizes.minStreams,
      expectedBytes: requests.streamBytes,
    });
  }
  return round;
}

/** Pools every round's batches per target into one summary per target. */
function summarize(rounds, eventsPerStream) {
  return Object.fromEntries(
    TARGET_NAMES.map((name) => [
      name,
      {
        c1: summarizeRequests(rounds.map((r) => r.c1[name])),
        c32: summarizeRequests(rounds.map((r) => r.c32[name])),
        stream: summarizeStreams(
          rounds.map((r) => r.stream[name]),
          eventsPerStream,
        ),
      },
    ]),
  );
}

/** Each round on its own, compactly: shows how much the numbers drift within a run. */
function perRound(rounds, eventsPerStream) {
  return rounds.map((round) =>
    Object.fromEntries(
      Object.entries(summarize([round], eventsPerStream)).map(([name, s]) => [
        name,
        {
          c1_p50_ms: s.c1.p50Ms,
          c32_rps: Math.round(s.c32.requestsPerSec),
          stream_events_per_s: Math.round(s.stream.eventsPerSec),
        },
      ]),
    ),
  );
}

/** Resident memory summed over this process's workerd children (Miniflare starts one). */
function workerdMemory() {
  const pids = workerdPids();
  if (pids.length === 0) throw new Error("found no workerd child process");
  const { rssBytes, peakRssBytes } = residentMemory(pids);
  return { pids, rssBytes, peakRssBytes };
}

async function main() {
  const startedAt = new Date();
  const t0 = performance.now();
  const log = (text) => console.error(`[bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${text}`);
  // Undone in reverse order whatever happens, so a failed run leaves no workerd, thread or temp dir.
  const cleanups = [];
  try {
    const bundle = await buildGateway();
    cleanups.push(() => bundle.remove());
    log(`built gateway: ${bundle.files.join(", ")} in ${bundle.dir}`);
    const upstream = await startUpstream();
    cleanups.push(() => upstream.close());
    const runtime = await startRuntime({ bundle, upstreamBaseUrl: upstream.baseUrl });
    cleanups.push(() => runtime.dispose());
    const targets = {
      direct: createTarget("direct", { port: upstream.port }),
      baseline: createTarget("baseline", { port: runtime.port, host: BASELINE_HOST }),
      gateway: createTarget("gateway", { port: runtime.port }),
    };
    cleanups.push(() => Object.values(targets).forEach(closeTarget));

    const tenant = await seedBenchTenant(runtime.url);
    const startup = workerdMemory();

    const streamRequest = chatRequest({
      apiKey: tenant.apiKey,
      model: tenant.model,
      stream: true,
      events: STREAM_EVENTS,
    });
    const requests = {
      plain: chatRequest({ apiKey: tenant.apiKey, model: tenant.model }),
      stream: streamRequest,
      // The gateway forwards a complete stream byte for byte, so every target must deliver exactly these.
      streamBytes: chatStreamBytes(streamRequest.body).length,
    };
    // Every SSE event of the stream: the role chunk, the content chunks, the stop chunk and [DONE].
    const eventsPerStream = chatStreamEvents(streamRequest.body).length;

    log(`runtime on 127.0.0.1:${runtime.port}, upstream on 127.0.0.1:${upstream.port}; warming up`);
    await runRound(0, targets, requests, WARMUP);

    const rounds = [];
    const loadBefore = os.loadavg()[0];
    const cpuBefore = cpuSnapshot(startup.pids);
    const measureStart = performance.now();
    while (rounds.length < ROUNDS) {
      const spent = performance.now() - measureStart;
      if (rounds.length > 0 && spent + spent / rounds.length > MEASURE_BUDGET_MS) break;
      rounds.push(await runRound(rounds.length, targets, requests, ROUND));
      log(`round ${rounds.length}/${ROUNDS}`);
    }
    const afterLoad = workerdMemory();
    const cpu = {
      ...cpuBetween(cpuBefore, cpuSnapshot(afterLoad.pids)),
      loadavg_1m_before: loadBefore,
      loadavg_1m_after: os.loadavg()[0],
    };

    const report = buildReport({
      summaries: summarize(rounds, eventsPerStream),
      rounds: perRound(rounds, eventsPerStream),
      bundle,
      memory: {
        pids: afterLoad.pids,
        startup_rss_bytes: startup.rssBytes,
        after_load_rss_bytes: afterLoad.rssBytes,
        peak_rss_bytes: afterLoad.peakRssBytes,
      },
      config: {
        rounds: rounds.length,
        per_round: ROUND,
        warmup: WARMUP,
        stream_events: STREAM_EVENTS,
        events_per_stream: eventsPerStream,
        compatibility_date: runtime.compatibilityDate,
      },
      cpu,
      startedAt,
      durationMs: performance.now() - t0,
    });
    console.log(formatReport(report));
    await writeReport(report, RESULTS_PATH);
    log(`wrote ${RESULTS_PATH}`);
  } finally {
    for (const undo of cleanups.reverse()) await undo();
  }
}

await main();
