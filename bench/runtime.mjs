import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import { compatibilityDate, gatewayWorker } from "../scripts/local-gateway.mjs";

const benchDir = new URL(".", import.meta.url).pathname;

/** Both Workers share the runtime's one entry socket; the Host header picks the Worker. */
export const HOSTS = { gateway: "gateway.bench", baseline: "baseline.bench" };

/**
 * One Miniflare instance (one workerd process) running the built gateway and the baseline side
 * by side, both pointed at the same upstream.
 *
 * @example
 * const runtime = await startRuntime({ bundle, upstreamBaseUrl });
 * await runtime.seedKv([["model:m", {}]]);
 * // POST to 127.0.0.1:runtime.port with `host: HOSTS.gateway` ...
 * await runtime.dispose();
 */
export async function startRuntime({ bundle, upstreamBaseUrl }) {
  const date = await compatibilityDate();
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      port: 0,
      // Miniflare's own per-request log line would cost the load generator's thread time.
      logRequests: false,
      // The gateway writes one JSON line per request; drop them rather than print thousands.
      handleStructuredLogs: () => {},
      workers: [
        await gatewayWorker({
          bundle,
          routes: [`${HOSTS.gateway}/*`],
          // Limits far above anything the load reaches.
          vars: {
            UPSTREAM_BASE_URL: upstreamBaseUrl,
            UPSTREAM_API_KEY: "sk-upstream-bench",
            DEFAULT_ORG_RPM: "1000000000",
            DEFAULT_USER_RPM: "1000000000",
          },
        }),
        {
          name: "baseline",
          modules: true,
          scriptPath: join(benchDir, "baseline.worker.mjs"),
          modulesRoot: benchDir,
          compatibilityDate: date,
          routes: [`${HOSTS.baseline}/*`],
          bindings: { UPSTREAM_URL: `${upstreamBaseUrl}/chat/completions` },
        },
      ],
    }),
  );
  const url = await mf.ready;
  return {
    port: Number(url.port),
    compatibilityDate: date,
    /** Writes `[key, value]` pairs, values as JSON, into the gateway's GATEWAY_KV. */
    async seedKv(records) {
      const kv = await mf.getKVNamespace("GATEWAY_KV", "gateway");
      for (const [key, value] of records) await kv.put(key, JSON.stringify(value));
    },
    dispose: () => mf.dispose(),
  };
}

/** The pids of workerd processes this Node process started (Miniflare spawns workerd directly). */
export function workerdPids() {
  const pids = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited while we looked
    }
    // "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid === process.pid && comm === "workerd") pids.push(Number(entry));
  }
  return pids;
}

/** VmRSS and VmHWM (peak RSS) of `pid`, in bytes, from /proc/<pid>/status. */
export function residentMemory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { rssBytes: kib("VmRSS"), peakRssBytes: kib("VmHWM") };
}
