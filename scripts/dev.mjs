#!/usr/bin/env node
// `npm run dev`: the gateway under `wrangler dev`, with the mock upstream as its upstream. Once it
// is up, a demo org, group, models and key are created through the admin API, and the key, the
// admin token, the console's address and a curl line are printed.
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startMockUpstream } from "../test/mock/server.mjs";
import { AdminClient } from "./admin-client.mjs";
import { startWranglerDev } from "./wrangler.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const adminToken = process.env.ADMIN_TOKEN ?? `adm-dev-${randomBytes(16).toString("hex")}`;

/** The demo tenant, written the way an operator would: through the admin API. */
async function seedDemo(url) {
  const admin = new AdminClient(url, adminToken);
  // Priced, so that `npm run admin -- usage demo` shows a cost after a request or two.
  await admin.putModel("gpt-4o-mini", {
    display_name: "GPT-4o mini (mock upstream)",
    pricing: { input_per_mtok: 0.15, output_per_mtok: 0.6, cached_input_per_mtok: 0.075 },
  });
  await admin.putModel("demo-alias", {
    display_name: "Renamed upstream",
    upstream_model: "mock-model",
    pricing: { input_per_mtok: 2.5, output_per_mtok: 10 },
  });
  await admin.putGroup("demo", ["*"]);
  await admin.putOrg("demo", {
    requests_per_minute: 600,
    user_requests_per_minute: 120,
    tokens_per_minute: 1_000_000,
    user_tokens_per_minute: 200_000,
    monthly_budget_usd: 100,
    user_monthly_budget_usd: 20,
  });
  const { key } = await admin.createKey({ org: "demo", user: "dev", group: "demo", name: "npm run dev" });
  return key;
}

function announce(url, upstream, key) {
  console.log(`
  Gateway:        ${url}  (mock upstream at ${upstream.baseUrl})
  Demo API key:   ${key}
  Admin token:    ${adminToken}
  Console:        ${url}/console/  (open it, then paste the admin token)
  Models:         gpt-4o-mini, demo-alias

  curl ${url}/v1/chat/completions \\
    -H "Authorization: Bearer ${key}" \\
    -H "Content-Type: application/json" \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

  GATEWAY_URL=${url} ADMIN_TOKEN=${adminToken} npm run admin -- keys list
  GATEWAY_URL=${url} ADMIN_TOKEN=${adminToken} npm run admin -- usage demo --by model,hour
`);
}

const upstream = await startMockUpstream();
const dev = await startWranglerDev({
  port: process.env.PORT ?? "8787",
  persistTo: join(root, ".wrangler", "state"),
  vars: {
    UPSTREAM_BASE_URL: upstream.baseUrl,
    UPSTREAM_API_KEY: "mock-upstream-key",
    ADMIN_TOKEN: adminToken,
  },
  onOutput: (text) => process.stdout.write(text),
}).catch(async (error) => {
  await upstream.close();
  throw error;
});

try {
  announce(dev.url, upstream, await seedDemo(dev.url));
} catch (error) {
  console.error(`seeding the demo tenant failed: ${error.message}`);
}

for (const signal of /** @type {const} */ (["SIGINT", "SIGTERM"])) {
  process.on(signal, async () => {
    await dev.stop(signal);
    await upstream.close();
    process.exit(0);
  });
}
dev.process.once("exit", async (code) => {
  await upstream.close();
  process.exit(code ?? 0);
});
