import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";

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
  const dir = await mkdtemp(join(tmpdir(), "gateway-bench-"));
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    await promisify(execFile)(process.execPath, [wrangler, "deploy", "--dry-run", "--outdir", dir], {
      cwd: root,
      // No telemetry or Cloudflare lookups: loopback only.
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
    });
  } catch (err) {
    await remove();
    throw err;
  }
  const shipped = (await readdir(dir)).filter((name) => !NOT_SHIPPED.has(extname(name)));
  if (!shipped.includes("index.js")) throw new Error(`wrangler emitted no index.js in ${dir}: ${shipped}`);
  const contents = await Promise.all(shipped.map((name) => readFile(join(dir, name))));
  const all = Buffer.concat(contents);
  return {
    dir,
    mainModule: "index.js",
    files: shipped,
    rawBytes: all.length,
    // Names the exact code measured: src/ may change between two runs.
    sha256: createHash("sha256").update(all).digest("hex"),
    // All modules concatenated, default level: the same figure as wrangler's "Total Upload ... gzip:".
    gzipBytes: gzipSync(all).length,
    remove,
  };
}
