#!/usr/bin/env node
// `npm run dev`: the gateway under `wrangler dev`, with the mock upstream as its upstream and a
// demo org, group, model and key seeded into the local KV. Prints the key and a curl line.
import { spawn, execFileSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startMockUpstream } from "../test/mock-upstream.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const wrangler = join(root, "node_modules", "wrangler", "bin", "wrangler.js");
const persistTo = join(root, ".wrangler", "state");
const port = process.env.PORT ?? "8787";
// No telemetry or Cloudflare lookups from a local run.
const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" };

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const newKey = () => "sk-gw-" + Array.from({ length: 40 }, () => BASE62[randomInt(62)]).join("");
const sha256 = (text) => createHash("sha256").update(text).digest("hex");

/** The demo tenant, in exactly the KV layout the README documents. */
function demoRecords(key) {
  const hash = sha256(key);
  const id = "key_dev";
  return [
    ["model:gpt-4o-mini", { display_name: "GPT-4o mini (mock upstream)" }],
    ["model:demo-alias", { display_name: "Renamed upstream", upstream_model: "mock-model" }],
    ["group:demo", { models: ["*"] }],
    ["org:demo", { requests_per_minute: 600, user_requests_per_minute: 120 }],
    [`key:${hash}`, { id, org: "demo", user: "dev", group: "demo", name: "npm run dev", created_at: new Date().toISOString() }],
    [`keyid:${id}`, { hash }],
  ].map(([k, value]) => ({ key: k, value: JSON.stringify(value) }));
}

function seed(key) {
  const dir = mkdtempSync(join(tmpdir(), "gateway-seed-"));
  const file = join(dir, "seed.json");
  writeFileSync(file, JSON.stringify(demoRecords(key)));
  try {
    execFileSync(process.execPath, [wrangler, "kv", "bulk", "put", file, "--binding", "GATEWAY_KV", "--local", "--persist-to", persistTo], {
      cwd: root,
      env,
      stdio: ["ignore", "ignore", "inherit"],
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const upstream = await startMockUpstream();
const key = newKey();
seed(key);

// The wrangler node process itself, so that stopping it also stops its workerd.
const dev = spawn(
  process.execPath,
  [
    wrangler, "dev",
    "--port", port,
    "--inspector-port", "0",
    "--persist-to", persistTo,
    "--var", `UPSTREAM_BASE_URL:${upstream.baseUrl}`,
    "--var", "UPSTREAM_API_KEY:mock-upstream-key",
  ],
  { cwd: root, env, stdio: ["inherit", "pipe", "inherit"] },
);

dev.stdout.setEncoding("utf8");
dev.stdout.on("data", (text) => {
  process.stdout.write(text);
  const ready = /Ready on (http:\/\/\S+)/.exec(text);
  if (ready) announce(ready[1]);
});

function announce(url) {
  console.log(`
  Gateway:        ${url}  (mock upstream at ${upstream.baseUrl})
  Demo API key:   ${key}
  Models:         gpt-4o-mini, demo-alias

  curl ${url}/v1/chat/completions \\
    -H "Authorization: Bearer ${key}" \\
    -H "Content-Type: application/json" \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
`);
}

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  dev.kill(signal);
  await upstream.close();
}
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));
dev.on("exit", async (code) => {
  await upstream.close();
  process.exit(code ?? 0);
});
