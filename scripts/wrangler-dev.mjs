// Starts `wrangler dev` for the gateway and resolves once it serves: for `npm run dev` and the soak.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const wrangler = join(root, "node_modules", "wrangler", "bin", "wrangler.js");

/**
 * Runs the wrangler node process itself (not an npm wrapper), so that stopping it also stops its
 * workerd. `onOutput` sees wrangler's stdout as it comes.
 *
 * @param {{ port?: string, persistTo: string, vars: Record<string, string>, onOutput?: (text: string) => void }} options
 * @returns {Promise<{ url: string, process: import("node:child_process").ChildProcess, stop: (signal?: NodeJS.Signals) => Promise<void> }>}
 */
export function startWranglerDev({ port = "0", persistTo, vars, onOutput }) {
  const args = [wrangler, "dev", "--port", port, "--inspector-port", "0", "--persist-to", persistTo];
  for (const [name, value] of Object.entries(vars)) args.push("--var", `${name}:${value}`);
  const child = spawn(process.execPath, args, {
    cwd: root,
    // No telemetry or Cloudflare lookups from a local run.
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const stop = async (signal = "SIGTERM") => {
    if (child.exitCode === null) child.kill(signal);
    await exited;
  };
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`wrangler dev exited with ${code} before it was ready`)));
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (text) => {
      onOutput?.(text);
      const ready = /Ready on (http:\/\/\S+)/.exec(text);
      if (ready) resolve({ url: ready[1], process: child, stop });
    });
  });
}
