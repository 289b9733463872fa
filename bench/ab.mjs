// `npm run bench:ab [-- --base REF] [--rounds N] [--only c1,c32,stream]`: what one change does.
// Builds the gateway twice, at REF (default HEAD) and from the working tree, runs each in its own
// Miniflare beside the pipe baseline, and drives both with the same load, interleaved request by
// request at c=1 and round by round otherwise. Prints each side's figures and their ratio.
//
// Why not two `npm run bench` runs: on this shared 2-core machine the speed of the whole machine
// drifts by a third from one minute to the next, far more than most changes move a figure. Two
// builds measured in the same minutes drift together, so their ratio shows the change. The same
// build on both sides gave ratios within about 6 % of 1 at c=1, 3 % at c=32 and 5 % for streams
// (three runs of 8 rounds): a change smaller than that needs several runs to be told from noise.
import { execFile } from "node:child_process";
import { mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { cpuTicks, workerdPids } from "../scripts/proc.mjs";
import { buildGateway } from "../scripts/wrangler.mjs";
import { chatStreamBytes } from "../test/mock/streams.mjs";
import { chatRequest, closedLoop, closeTarget, createTarget, send, streams } from "./load.mjs";
import { BASELINE_HOST, startRuntime } from "./runtime.mjs";
import { median } from "./stats.mjs";
import { seedBenchTenant } from "./tenant.mjs";
import { startUpstream } from "./upstream.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const git = (...args) => promisify(execFile)("git", args, { cwd: root });

const { values } = parseArgs({
  options: {
    base: { type: "string", default: "HEAD" },
    rounds: { type: "string", default: "8" },
    only: { type: "string", default: "c1,c32,stream" },
  },
});
const ROUNDS = Number(values.rounds);
const only = new Set(values.only.split(","));

/** The gateway as REF has it: a worktree of REF (sharing node_modules) built by its own script. */
async function buildAt(ref) {
  const dir = await mkdtemp(join(tmpdir(), "gateway-ab-"));
  await git("worktree", "add", "--detach", dir, ref);
  try {
    await symlink(join(root, "node_modules"), join(dir, "node_modules"));
    const { buildGateway: buildThere } = await import(join(dir, "scripts", "wrangler.mjs"));
    return await buildThere();
  } finally {
    await git("worktree", "remove", "--force", dir);
  }
}

/** One side: a runtime of its own, its tenant, and what it measured. */
async function startSide(name, bundle, upstream) {
  const before = new Set(workerdPids());
  const runtime = await startRuntime({ bundle, upstreamBaseUrl: upstream.baseUrl });
  const tenant = await seedBenchTenant(runtime.url);
  return {
    name,
    bundle,
    runtime,
    pids: workerdPids().filter((pid) => !before.has(pid)),
    gateway: createTarget(name, { port: runtime.port }),
    baseline: createTarget(`${name} baseline`, { port: runtime.port, host: BASELINE_HOST }),
    plain: chatRequest({ apiKey: tenant.apiKey, model: tenant.model }),
    stream: chatRequest({ apiKey: tenant.apiKey, model: tenant.model, stream: true, events: 2000 }),
    c1: [],
    c1Baseline: [],
    c32: { requests: 0, ms: 0, ticks: 0 },
    firstByte: [],
    total: [],
  };
}

const cpuOf = (side) => side.pids.reduce((sum, pid) => sum + cpuTicks(pid), 0);

async function round(index, sides, streamBytes) {
  // Alternate which side goes first, so neither always runs on a cache the other warmed.
  const order = index % 2 ? sides : [...sides].reverse();
  const record = index >= 0;
  if (only.has("c1")) {
    const end = performance.now() + 1500;
    while (performance.now() < end) {
      for (const side of order) {
        const gateway = await send(side.gateway, side.plain);
        const baseline = await send(side.baseline, side.plain);
        if (!record) continue;
        side.c1.push(gateway.totalMs);
        side.c1Baseline.push(baseline.totalMs);
      }
    }
  }
  if (only.has("c32")) {
    for (const side of order) {
      const ticks = cpuOf(side);
      const batch = await closedLoop(side.gateway, side.plain, { durationMs: 1000, concurrency: 32 });
      if (!record) continue;
      side.c32.requests += batch.latenciesMs.length;
      side.c32.ms += batch.elapsedMs;
      side.c32.ticks += cpuOf(side) - ticks;
    }
  }
  if (only.has("stream")) {
    for (const side of order) {
      const batch = await streams(side.gateway, side.stream, {
        durationMs: 400,
        minCount: 3,
        expectedBytes: streamBytes,
      });
      if (!record) continue;
      side.firstByte.push(...batch.firstByteMs);
      side.total.push(...batch.totalMs);
    }
  }
}

const figures = (side) => ({
  "c=1 p50 (ms)": median(side.c1),
  "c=1 added over its baseline (ms)": median(side.c1) - median(side.c1Baseline),
  "c=32 req/s": (side.c32.requests / side.c32.ms) * 1000,
  // workerd's CPU time (user and system, 10 ms ticks) over its requests.
  "c=32 workerd CPU per request (µs)": (side.c32.ticks * 10_000) / side.c32.requests,
  "stream total (ms)": median(side.total),
  "stream first byte (ms)": median(side.firstByte),
  "bundle gzip (bytes)": side.bundle.gzipBytes,
});

const cleanups = [];
try {
  const { stdout } = await git("rev-parse", "--short", values.base);
  const upstream = await startUpstream();
  cleanups.push(() => upstream.close());
  const baseBundle = await buildAt(values.base);
  cleanups.push(() => baseBundle.remove());
  const treeBundle = await buildGateway();
  cleanups.push(() => treeBundle.remove());
  const base = await startSide(`base ${stdout.trim()}`, baseBundle, upstream);
  const tree = await startSide("working tree", treeBundle, upstream);
  for (const side of [base, tree]) {
    cleanups.push(() => side.runtime.dispose());
    cleanups.push(() => [side.gateway, side.baseline].forEach(closeTarget));
  }
  const streamBytes = chatStreamBytes(base.stream.body).length;
  for (let i = -1; i < ROUNDS; i++) await round(i, [base, tree], streamBytes);
  const [a, b] = [figures(base), figures(tree)];
  /** @type {Record<string, Record<string, number>>} */
  const table = {};
  for (const [metric, value] of Object.entries(a)) {
    if (Number.isNaN(value)) continue;
    const other = b[/** @type {keyof typeof b} */ (metric)];
    table[metric] = {
      [base.name]: Number(value.toFixed(3)),
      [tree.name]: Number(other.toFixed(3)),
      ratio: Number((other / value).toFixed(3)),
    };
  }
  console.table(table);
} finally {
  for (const undo of cleanups.reverse()) await undo();
}
