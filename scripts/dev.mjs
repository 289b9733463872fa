#!/usr/bin/env node
// `npm run dev`: the gateway under `wrangler dev`, with the mock upstream as its upstream. Once it
// is up, a demo org, group, models and key are created through the admin API, and the key, the
// admin token and a curl line are printed.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startMockUpstream } from "../test/mock-upstream.mjs";
import { AdminClient } from "./admin-client.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const wrangler = join(root, "node_modules", "wrangler", "bin", "wrangler.js");
const port = process.env.PORT ?? "8787";
const adminToken = process.env.ADMIN_TOKEN ?? `adm-dev-${randomBytes(16).toString("hex")}`;
// No telemetry or Cloudflare lookups from a local run.
const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" };

/** The demo tenant, written the way an operator would: through the admin API. */
async function seedDemo(url) {
  const admin = new AdminClient(url, adminToken);
  await admin.putModel("gpt-4o-mini", { display_name: "GPT-4o mini (mock upstream)" });
  await admin.putModel("demo-alias", { display_name: "Renamed upstream", upstream_model: "mock-model" });
  await admin.putGroup("demo", ["*"]);
  await admin.putOrg("demo", { requests_per_minute: 600, user_requests_per_minute: 120 });
  const { key } = await admin.createKey({ org: "demo", user: "dev", group: "demo", name: "npm run dev" });
  return key;
}

const upstream = await startMockUpstream();

// The wrangler node process itself, so that stopping it also stops its workerd.
const dev = spawn(
  process.execPath,
  [
    wrangler, "dev",
    "--port", port,
    "--inspector-port", "0",
    "--persist-to", join(root, ".wrangler", "state"),
    "--var", `UPSTREAM_BASE_URL:${upstream.baseUrl}`,
    "--var", "UPSTREAM_API_KEY:mock-upstream-key",
    "--var", `ADMIN_TOKEN:${adminToken}`,
  ],
  { cwd: root, env, stdio: ["inherit", "pipe", "inherit"] },
);

dev.stdout.setEncoding("utf8");
dev.stdout.on("data", (text) => {
  process.stdout.write(text);
  const ready = /Ready on (http:\/\/\S+)/.exec(text);
  if (ready) seedDemo(ready[1]).then((key) => announce(ready[1], key), (error) => console.error(`seeding the demo tenant failed: ${error.message}`));
});

function announce(url, key) {
  console.log(`
  Gateway:        ${url}  (mock upstream at ${upstream.baseUrl})
  Demo API key:   ${key}
  Admin token:    ${adminToken}
  Models:         gpt-4o-mini, demo-alias

  curl ${url}/v1/chat/completions \\
    -H "Authorization: Bearer ${key}" \\
    -H "Content-Type: application/json" \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

  GATEWAY_URL=${url} ADMIN_TOKEN=${adminToken} npm run admin -- keys list
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
