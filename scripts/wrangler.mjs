// What wrangler knows about the gateway, asked the way the other scripts need it: the bundle a
// deploy would ship, `wrangler dev`, and wrangler.toml read into Miniflare's worker options. Every
// run is loopback only.
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";

const root = fileURLToPath(new URL("..", import.meta.url));
const wranglerBin = join(root, "node_modules", "wrangler", "bin", "wrangler.js");
const wranglerToml = join(root, "wrangler.toml");
// No telemetry and no Cloudflare lookups: these two remove every non-loopback request wrangler makes.
const quietEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" };
// Files the dry run writes beside the bundle that are never uploaded.
const NOT_SHIPPED = new Set([".map", ".md"]);

/**
 * @typedef {object} Bundle
 * @property {string} dir where the bundle was written (a temporary directory)
 * @property {string} mainModule the Worker's entry module, in `dir`
 * @property {string[]} files every file that would be uploaded
 * @property {number} rawBytes their size
 * @property {number} gzipBytes their size gzipped, the figure wrangler prints as "Total Upload ... gzip:"
 * @property {() => Promise<void>} remove deletes `dir`
 */

/**
 * Builds the gateway exactly as `wrangler deploy` would ship it (`--dry-run --outdir`) and
 * measures what would be uploaded.
 *
 * @returns {Promise<Bundle>}
 * @example
 * const bundle = await buildGateway();
 * // join(bundle.dir, bundle.mainModule) is the Worker; bundle.gzipBytes is what the bundle target judges.
 * await bundle.remove();
 */
export async function buildGateway() {
  const dir = await mkdtemp(join(tmpdir(), "gateway-build-"));
  await promisify(execFile)(process.execPath, [wranglerBin, "deploy", "--dry-run", "--outdir", dir], {
    cwd: root,
    env: quietEnv,
  });
  const shipped = (await readdir(dir)).filter((name) => !NOT_SHIPPED.has(extname(name)));
  if (!shipped.includes("index.js")) throw new Error(`wrangler emitted no index.js in ${dir}: ${shipped}`);
  const all = Buffer.concat(await Promise.all(shipped.map((name) => readFile(join(dir, name)))));
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

/** @typedef {import("miniflare").V4WorkerOptionsShape & { name: string, compatibilityDate: string }} DeclaredOptions */

/** @returns {Promise<DeclaredOptions>} */
async function readGatewayOptions() {
  // Loaded only when asked: wrangler takes seconds to load, and `npm run dev` only spawns it.
  const { unstable_readConfig, unstable_getMiniflareWorkerOptions } = await import("wrangler");
  const config = unstable_readConfig({ config: wranglerToml });
  // The source options go: Miniflare runs the built bundle, not src/.
  const { modulesRules, rootPath, ...options } = unstable_getMiniflareWorkerOptions(config).workerOptions;
  // wrangler types these loosely (unknown values); they are Miniflare's v4 worker options.
  return /** @type {DeclaredOptions} */ ({ ...options, name: config.name, bindings: { ...config.vars } });
}

/** @type {ReturnType<typeof readGatewayOptions> | undefined} */
let gatewayOptionsRead;

/**
 * The gateway's Miniflare worker options (v4 style) as wrangler.toml declares them, read once per
 * process by wrangler's own reader: its name, compatibility date and flags, `[vars]`, and every
 * binding, Durable Objects with their class names and SQLite storage as the migrations leave them.
 *
 * The vars are wrangler.toml's alone: a developer's `.dev.vars`, which `wrangler dev` would add,
 * stays out of the tests and benchmarks.
 *
 * @example
 * const { compatibilityDate } = await gatewayOptions();
 */
export function gatewayOptions() {
  return (gatewayOptionsRead ??= readGatewayOptions());
}

/**
 * The built gateway as one of Miniflare's workers: {@link gatewayOptions}, the bundle as its
 * script, and `vars` (strings, as `[vars]` arrive) over wrangler.toml's.
 *
 * @param {{ bundle: Bundle, vars?: Record<string, string>, routes?: string[] }} options
 * @example
 * const mf = new Miniflare(convertV4MiniflareOptions({ workers: [await gatewayWorker({ bundle, vars: { ADMIN_TOKEN } })] }));
 */
export async function gatewayWorker({ bundle, vars = {}, routes }) {
  const options = await gatewayOptions();
  return {
    ...options,
    modules: true,
    scriptPath: join(bundle.dir, bundle.mainModule),
    modulesRoot: bundle.dir,
    ...(routes ? { routes } : {}),
    bindings: { ...options.bindings, ...vars },
  };
}

/**
 * Starts `wrangler dev` for the gateway and resolves once it serves. Runs the wrangler node
 * process itself (not an npm wrapper), so that stopping it also stops its workerd. `onOutput` sees
 * wrangler's stdout as it comes.
 *
 * @param {{ port?: string, persistTo: string, vars: Record<string, string>, onOutput?: (text: string) => void }} options
 * @returns {Promise<{ url: string, process: import("node:child_process").ChildProcess, stop: (signal?: NodeJS.Signals) => Promise<void> }>}
 * @example
 * const dev = await startWranglerDev({ persistTo, vars: { UPSTREAM_BASE_URL: upstream.baseUrl } });
 * await fetch(`${dev.url}/healthz`);
 * await dev.stop();
 */
export function startWranglerDev({ port = "0", persistTo, vars, onOutput }) {
  const args = [wranglerBin, "dev", "--port", port, "--inspector-port", "0", "--persist-to", persistTo];
  for (const [name, value] of Object.entries(vars)) args.push("--var", `${name}:${value}`);
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: quietEnv,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  /** @param {NodeJS.Signals} [signal] */
  const stop = async (signal = "SIGTERM") => {
    if (child.exitCode === null) child.kill(signal);
    await exited;
  };
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`wrangler dev exited with ${code} before it was ready`)));
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (text) => {
      onOutput?.(text);
      const url = /Ready on (http:\/\/\S+)/.exec(text)?.[1];
      if (url) resolve({ url, process: child, stop });
    });
  });
}
