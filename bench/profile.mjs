// `npm run bench:profile [-- --workload c1|c32|stream] [--seconds N]`: where the gateway's CPU time
// goes. Runs the benchmark's runtime (the shipped bundle under Miniflare, the mock upstream, the
// bench tenant) with workerd's inspector open, samples the gateway's isolate with V8's profiler
// while one workload runs, and prints its self time per source file and per function, mapped back
// through the bundle's source map. The raw profile is written to bench/profiles/ (not committed):
// Chrome's DevTools (Performance, "Load profile") opens it.
//
// The gateway's Durable Objects run in the same isolate, so the org gate's time is in the profile;
// the upstream and the load client are not. Sampling slows the isolate down a little: read shares,
// not milliseconds, and `npm run bench` for the figures.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { SourceMap } from "node:module";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { buildGateway } from "../scripts/wrangler.mjs";
import { chatRequest, closedLoop, closeTarget, createTarget, streams } from "./load.mjs";
import { startRuntime } from "./runtime.mjs";
import { seedBenchTenant } from "./tenant.mjs";
import { startUpstream } from "./upstream.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const WORKLOADS = ["c1", "c32", "stream"];
// V8's default is 1 ms; a request costs about that, so sample far more often.
const SAMPLING_INTERVAL_US = 50;

/** Chrome DevTools Protocol over the inspector's WebSocket: `send` resolves with the result. */
async function connect(url) {
  // Miniflare's inspector proxy admits only local DevTools origins.
  const socket = new WebSocket(url, { headers: { origin: "http://localhost" } });
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("error", () => reject(new Error(`cannot reach the inspector at ${url}`)), {
      once: true,
    });
  });
  const waiting = new Map();
  let nextId = 1;
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(String(event.data));
    const pending = waiting.get(message.id);
    if (!pending) return; // An event, not an answer.
    waiting.delete(message.id);
    if (message.error) pending.reject(new Error(`${message.error.message} (${message.error.code})`));
    else pending.resolve(message.result);
  });
  return {
    send(method, params = {}) {
      const id = nextId++;
      socket.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
    },
    close: () => socket.close(),
  };
}

/** Where a profile node's code came from: a file of this project or a package, and a function. */
function originOf(callFrame, map, bundleUrl) {
  const { functionName, url, lineNumber, columnNumber } = callFrame;
  // V8's own entries: "(garbage collector)", "(program)", "(idle)", and native functions.
  if (!url)
    return { file: functionName.startsWith("(") ? functionName : "(native)", name: functionName || "?" };
  if (!url.endsWith(bundleUrl)) return { file: url, name: functionName || "(anonymous)" };
  const entry = map.findEntry(lineNumber, columnNumber);
  if (!entry?.originalSource) return { file: "(bundle)", name: functionName || "(anonymous)" };
  const source = relative(root, fileURLToPath(new URL(entry.originalSource, `file://${join(root, "x")}`)));
  const file = source.replace(/^.*node_modules\/(@[^/]+\/[^/]+|[^/]+)\/.*$/, "$1");
  return {
    file,
    name: `${entry.name || functionName || "(anonymous)"} (${source}:${entry.originalLine + 1})`,
  };
}

/** Self time per source file and per function, in ms, largest first. */
function summarize(profile, map, bundleUrl) {
  const selfUs = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const byFile = new Map();
  const byFunction = new Map();
  let total = 0;
  for (const node of profile.nodes) {
    const us = selfUs.get(node.id) ?? 0;
    if (!us) continue;
    const { file, name } = originOf(node.callFrame, map, bundleUrl);
    if (file === "(idle)") continue; // Waiting for the load client or the upstream.
    total += us;
    byFile.set(file, (byFile.get(file) ?? 0) + us);
    const key = `${name}  [${file}]`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  }
  const rows = (table) =>
    [...table]
      .sort((a, b) => b[1] - a[1])
      .map(([what, us]) => ({
        what,
        ms: Math.round(us / 100) / 10,
        share: `${((100 * us) / total).toFixed(1)} %`,
      }));
  return {
    busyMs: Math.round(total / 1000),
    byFile: rows(byFile),
    byFunction: rows(byFunction).slice(0, 25),
  };
}

async function main() {
  const { values } = parseArgs({
    options: { workload: { type: "string", default: "c32" }, seconds: { type: "string", default: "10" } },
  });
  if (!WORKLOADS.includes(values.workload)) throw new Error(`--workload is one of ${WORKLOADS.join(", ")}`);
  const seconds = Number(values.seconds);
  const cleanups = [];
  try {
    const bundle = await buildGateway();
    cleanups.push(() => bundle.remove());
    const map = new SourceMap(
      JSON.parse(await readFile(join(bundle.dir, `${bundle.mainModule}.map`), "utf8")),
    );
    const upstream = await startUpstream();
    cleanups.push(() => upstream.close());
    const runtime = await startRuntime({ bundle, upstreamBaseUrl: upstream.baseUrl, inspect: true });
    cleanups.push(() => runtime.dispose());
    const target = createTarget("gateway", { port: runtime.port });
    cleanups.push(() => closeTarget(target));
    const tenant = await seedBenchTenant(runtime.url);
    const plain = chatRequest({ apiKey: tenant.apiKey, model: tenant.model });
    const stream = chatRequest({ apiKey: tenant.apiKey, model: tenant.model, stream: true, events: 2000 });
    const streamBytes = (await import("../test/mock/streams.mjs")).chatStreamBytes(stream.body).length;
    const run = (durationMs) =>
      values.workload === "stream"
        ? streams(target, stream, { durationMs, minCount: 1, expectedBytes: streamBytes })
        : closedLoop(target, plain, { durationMs, concurrency: values.workload === "c1" ? 1 : 32 });

    await run(2000); // JIT warm-up, pools filled, the gate started.
    const inspector = await connect(runtime.inspectorUrl);
    cleanups.push(() => inspector.close());
    await inspector.send("Profiler.enable");
    await inspector.send("Profiler.setSamplingInterval", { interval: SAMPLING_INTERVAL_US });
    await inspector.send("Profiler.start");
    const result = await run(seconds * 1000);
    const { profile } = await inspector.send("Profiler.stop");

    const requests = "latenciesMs" in result ? result.latenciesMs.length : result.totalMs.length;
    await mkdir(join(root, "bench", "profiles"), { recursive: true });
    const path = join(root, "bench", "profiles", `${values.workload}.cpuprofile`);
    await writeFile(path, JSON.stringify(profile));
    const summary = summarize(profile, map, bundle.mainModule);
    console.log(
      `${values.workload}: ${requests} requests in ${seconds} s; the isolate was busy ${summary.busyMs} ms`,
    );
    console.log(`(${((1000 * summary.busyMs) / requests).toFixed(0)} µs per request)`);
    console.table(summary.byFile);
    console.table(summary.byFunction);
    console.log(`profile: ${relative(process.cwd(), path)}`);
  } finally {
    for (const undo of cleanups.reverse()) await undo();
  }
}

await main();
