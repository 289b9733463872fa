import { randomBytes } from "node:crypto";
import { AdminClient } from "../scripts/admin-client.mjs";

/** The gateway's ADMIN_TOKEN for a benchmark run: new every run, known only to it. */
export const ADMIN_TOKEN = `adm-bench-${randomBytes(16).toString("hex")}`;
// Far above what a benchmark run can send in a minute, and the most the admin API accepts: rate
// limiting counts, but admits everything.
const UNLIMITED = 10_000_000;
const MODEL = "bench-model";

/**
 * Makes the benchmark's tenant through the admin API, as an operator would: a catalog model, a
 * group granting every model, an org whose limits admit all the run sends, and a key.
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
  await admin.putOrg("bench", { requests_per_minute: UNLIMITED, user_requests_per_minute: UNLIMITED });
  const { key } = await admin.createKey({ org: "bench", user: "bench", group: "bench", name: "bench" });
  return { apiKey: key, model: MODEL };
}
