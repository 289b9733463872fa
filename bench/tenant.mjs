import { randomBytes } from "node:crypto";
import { AdminClient } from "../scripts/admin-client.mjs";

/** The gateway's ADMIN_TOKEN for a benchmark run: new every run, known only to it. */
export const ADMIN_TOKEN = `adm-bench-${randomBytes(16).toString("hex")}`;
// Far above what a benchmark run can send in a minute, and the most the admin API accepts: rate
// limiting counts, but admits everything.
const UNLIMITED = 10_000_000;
// The same for tokens (each request reserves about 4,100: its body and the default output cap) and
// for money (the bench model has no pricing): token limits and budgets are checked on every
// request, reservations made and settled, and nothing is refused.
const UNLIMITED_TOKENS = 10_000_000_000;
const UNLIMITED_USD = 1_000_000;
const MODEL = "bench-model";

/**
 * Makes the benchmark's tenant through the admin API, as an operator would: a catalog model, a
 * group granting every model, an org whose request and token limits and budgets admit all the run
 * sends (but are all checked), and a key.
 *
 * @param {string} gatewayUrl a gateway started with {@link ADMIN_TOKEN}
 * @returns {Promise<{ apiKey: string, model: string }>}
 * @example
 * const tenant = await seedBenchTenant(runtime.url);
 * // then: Authorization: Bearer ${tenant.apiKey}, body { model: tenant.model, ... }
 */
export async function seedBenchTenant(gatewayUrl) {
  const admin = new AdminClient(gatewayUrl, ADMIN_TOKEN);
  await admin.putModel(MODEL, {});
  await admin.putGroup("bench", ["*"]);
  await admin.putOrg("bench", {
    requests_per_minute: UNLIMITED,
    user_requests_per_minute: UNLIMITED,
    tokens_per_minute: UNLIMITED_TOKENS,
    user_tokens_per_minute: UNLIMITED_TOKENS,
    monthly_budget_usd: UNLIMITED_USD,
    user_monthly_budget_usd: UNLIMITED_USD,
  });
  const { key } = await admin.createKey({ org: "bench", user: "bench", group: "bench", name: "bench" });
  return { apiKey: key, model: MODEL };
}
