// `npm run bench:assets`: what the console's static assets cost the gateway's own requests. The same
// bundle runs twice, side by side, with wrangler.toml's `[assets]` and without it (Miniflare puts the
// asset router in front of a Worker with assets), and the two are driven in alternating rounds with
// chat completions at c=1 and c=32, so that the machine's other work falls on both alike.
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import { buildGateway, gatewayWorker } from "../scripts/wrangler.mjs";
import { chatRequest, closeTarget, closedLoop, createTarget } from "./load.mjs";
import { median } from "./stats.mjs";
import { ADMIN_TOKEN, seedBenchTenant } from "./tenant.mjs";
import { startUpstream } from "./upstream.mjs";

const ROUNDS = Number(process.env.ROUNDS ?? 24);
const WARMUP_ROUNDS = 2;

const upstream = await startUpstream();
const bundle = await buildGateway();

/** The gateway under its own Miniflare, with or without the asset router in front. */
async function start(/** @type {boolean} */ withAssets) {
  const worker = await gatewayWorker({
    bundle,
    vars: { UPSTREAM_BASE_URL: upstream.baseUrl, UPSTREAM_API_KEY: "sk-upstream-bench", ADMIN_TOKEN },
  });
  if (!withAssets) delete worker.assets;
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      port: 0,
      logRequests: false,
      handleStructuredLogs: () => {},
      workers: [worker],
    }),
  );
  const url = await mf.ready;
  const name = withAssets ? "with assets" : "without";
  return {
    name,
    mf,
    target: createTarget(name, { port: Number(url.port), host: url.host }),
    request: chatRequest(await seedBenchTenant(url.origin)),
    /** Per round: the c=1 median latency and both rates. @type {{ c1: number[], c1Rate: number[], c32Rate: number[] }} */
    samples: { c1: [], c1Rate: [], c32Rate: [] },
  };
}

const runs = [await start(false), await start(true)];
for (let round = 0; round < WARMUP_ROUNDS + ROUNDS; round++) {
  // Each goes first in every other round.
  for (const run of round % 2 ? runs : [...runs].reverse()) {
    const c1 = await closedLoop(run.target, run.request, { durationMs: 500, concurrency: 1 });
    const c32 = await closedLoop(run.target, run.request, { durationMs: 1000, concurrency: 32 });
    if (round < WARMUP_ROUNDS) continue;
    run.samples.c1.push(median(c1.latenciesMs));
    run.samples.c1Rate.push(c1.latenciesMs.length / (c1.elapsedMs / 1000));
    run.samples.c32Rate.push(c32.latenciesMs.length / (c32.elapsedMs / 1000));
  }
}
console.log(`${ROUNDS} rounds, medians of the rounds:`);
for (const { name, samples } of runs) {
  console.log(
    `  ${name.padEnd(12)} c=1 p50 ${median(samples.c1).toFixed(2)} ms, ` +
      `c=1 ${median(samples.c1Rate).toFixed(0)} req/s, c=32 ${median(samples.c32Rate).toFixed(0)} req/s`,
  );
}
for (const run of runs) {
  closeTarget(run.target);
  await run.mf.dispose();
}
await upstream.close();
await bundle.remove();
