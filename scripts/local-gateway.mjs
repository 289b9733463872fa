// The built gateway (the bundle `wrangler deploy` would ship) running under Miniflare with the mock
// upstream: for the end-to-end tests, the benchmark and the soak, which all need the real Worker
// outside vitest's pool.
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import { startMockUpstream } from "../test/mock-upstream.mjs";

const root = new URL("..", import.meta.url).pathname;
const wrangler = join(root, "node_modules", "wrangler", "bin", "wrangler.js");
// Files the dry run writes beside the bundle that are never uploaded.
const NOT_SHIPPED = new Set([".map", ".md"]);

/**
 * Builds the gateway exactly as `wrangler deploy` would ship it (`--dry-run --outdir`) and
 * measures what would be uploaded.
 *
 * @example
 * const bundle = await buildGateway();
 * // bundle.dir/bundle.mainModule is the Worker; bundle.gzipBytes is what the 30 KiB target means.
 * await bundle.remove();
 */
export async function buildGateway() {
  const dir = await mkdtemp(join(tmpdir(), "gateway-build-"));
  await promisify(execFile)(process.execPath, [wrangler, "deploy", "--dry-run", "--outdir", dir], {
    cwd: root,
    // No telemetry or Cloudflare lookups: loopback only.
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  const shipped = (await readdir(dir)).filter((name) => !NOT_SHIPPED.has(extname(name)));
  if (!shipped.includes("index.js")) throw new Error(`wrangler emitted no index.js in ${dir}: ${shipped}`);
  const contents = await Promise.all(shipped.map((name) => readFile(join(dir, name))));
  const all = Buffer.concat(contents);
  return {
    dir,
    mainModule: "index.js",
    files: shipped,
    rawBytes: all.length,
    // All modules concatenated, default level: the same figure as wrangler's "Total Upload ... gzip:".
    gzipBytes: gzipSync(all).length,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** The date the deployed Worker runs under, so local runs keep the same runtime semantics. */
export async function compatibilityDate() {
  const toml = await readFile(join(root, "wrangler.toml"), "utf8");
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)?.[1];
  if (!date) throw new Error("no compatibility_date in wrangler.toml");
  return date;
}

/**
 * The gateway's Miniflare worker options: the bundle, its bindings as wrangler.toml declares them,
 * and `vars` (strings, as `[vars]` arrive) over the defaults.
 */
export async function gatewayWorker({ bundle, vars, name = "gateway", routes }) {
  return {
    name,
    modules: true,
    scriptPath: join(bundle.dir, bundle.mainModule),
    modulesRoot: bundle.dir,
    compatibilityDate: await compatibilityDate(),
    ...(routes ? { routes } : {}),
    bindings: {
      DEFAULT_ORG_RPM: "600",
      DEFAULT_USER_RPM: "60",
      MAX_BODY_BYTES: "10485760",
      UPSTREAM_TIMEOUT_MS: "60000",
      STREAM_IDLE_TIMEOUT_MS: "60000",
      BODY_TIMEOUT_MS: "30000",
      MAX_EVENT_BYTES: "16777216",
      ...vars,
    },
    kvNamespaces: { GATEWAY_KV: `${name}-kv` },
    // wrangler.toml declares the class under new_sqlite_classes (as RateLimiter, renamed OrgGate).
    durableObjects: { RATE_LIMITER: { className: "OrgGate", useSQLite: true } },
  };
}

/**
 * Builds the gateway and runs it under Miniflare with a fresh mock upstream.
 *
 * @param {{ adminToken?: string, vars?: Record<string, string>, onLog?: (log: unknown) => void }} [options]
 * @example
 * const gateway = await startLocalGateway({ adminToken: "t" });
 * await fetch(`${gateway.url}/healthz`);
 * await gateway.close();
 */
export async function startLocalGateway({ adminToken, vars = {}, onLog } = {}) {
  const upstream = await startMockUpstream();
  let bundle;
  let mf;
  let url;
  try {
    bundle = await buildGateway();
    mf = new Miniflare(
      convertV4MiniflareOptions({
        port: 0,
        logRequests: false,
        handleStructuredLogs: onLog ?? (() => {}),
        workers: [
          await gatewayWorker({
            bundle,
            vars: {
              UPSTREAM_BASE_URL: upstream.baseUrl,
              UPSTREAM_API_KEY: "sk-upstream-local",
              ...(adminToken ? { ADMIN_TOKEN: adminToken } : {}),
              ...vars,
            },
          }),
        ],
      }),
    );
    url = (await mf.ready).origin;
  } catch (error) {
    // Nothing left running behind a failed start: a test process would otherwise hang on it.
    await mf?.dispose();
    await upstream.close();
    await bundle?.remove();
    throw error;
  }
  return {
    url,
    upstream,
    miniflare: mf,
    async close() {
      await mf.dispose();
      await upstream.close();
      await bundle.remove();
    },
  };
}
