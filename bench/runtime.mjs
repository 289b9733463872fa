import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import { gatewayOptions, gatewayWorker } from "../scripts/wrangler.mjs";
import { ADMIN_TOKEN } from "./tenant.mjs";

const benchDir = fileURLToPath(new URL(".", import.meta.url));

/** The runtime's one entry socket serves both Workers: this Host header picks the baseline. */
export const BASELINE_HOST = "baseline.bench";

/**
 * One Miniflare instance (one workerd process) running the built gateway and the baseline side
 * by side, both pointed at the same upstream. The gateway is the first worker, so it answers every
 * request whose Host is not {@link BASELINE_HOST}: the admin client and the load reach it at `url`.
 *
 * With `inspect`, workerd's inspector is open to the gateway (`inspectorUrl`), for CPU profiles.
 *
 * @param {{ bundle: import("../scripts/wrangler.mjs").Bundle, upstreamBaseUrl: string, inspect?: boolean }} options
 * @example
 * const runtime = await startRuntime({ bundle, upstreamBaseUrl });
 * const tenant = await seedBenchTenant(runtime.url);
 * // POST to 127.0.0.1:runtime.port, with `host: BASELINE_HOST` for the baseline ...
 * await runtime.dispose();
 */
export async function startRuntime({ bundle, upstreamBaseUrl, inspect = false }) {
  const { compatibilityDate } = await gatewayOptions();
  // Without the console's assets: Miniflare's asset router would be one more Worker hop in front of
  // every request, which `npm run bench:assets` measures on its own (bench/README.md).
  const { assets, ...gateway } = await gatewayWorker({
    bundle,
    vars: { UPSTREAM_BASE_URL: upstreamBaseUrl, UPSTREAM_API_KEY: "sk-upstream-bench", ADMIN_TOKEN },
  });
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      port: 0,
      ...(inspect ? { inspectorPort: 0 } : {}),
      // Miniflare's own per-request log line would cost the load generator's thread time.
      logRequests: false,
      // The gateway writes one JSON line per request; drop them rather than print thousands.
      handleStructuredLogs: () => {},
      workers: [
        inspect ? { ...gateway, unsafeInspectorProxy: true } : gateway,
        {
          name: "baseline",
          modules: true,
          scriptPath: join(benchDir, "baseline.worker.mjs"),
          modulesRoot: benchDir,
          compatibilityDate,
          routes: [`${BASELINE_HOST}/*`],
          bindings: { UPSTREAM_URL: `${upstreamBaseUrl}/chat/completions` },
        },
      ],
    }),
  );
  const url = await mf.ready;
  const inspector = inspect ? await mf.getInspectorURL() : undefined;
  return {
    url: url.origin,
    inspectorUrl: inspector && new URL(`/${gateway.name}`, inspector).href.replace(/^http/, "ws"),
    port: Number(url.port),
    compatibilityDate,
    dispose: () => mf.dispose(),
  };
}
