import { createHash, randomInt } from "node:crypto";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
// Far above what a benchmark run can send in a minute (and the most an org record may hold): rate
// limiting counts, but admits everything.
const UNLIMITED = 10_000_000;

/**
 * One org, group, model and API key, in the README's KV layout.
 *
 * @example
 * const tenant = benchTenant();
 * await runtime.seedKv(tenant.records);
 * // then: Authorization: Bearer ${tenant.apiKey}, body { model: tenant.model, ... }
 */
export function benchTenant() {
  const apiKey = "sk-gw-" + Array.from({ length: 40 }, () => BASE62[randomInt(62)]).join("");
  const hash = createHash("sha256").update(apiKey).digest("hex");
  const model = "bench-model";
  return {
    apiKey,
    model,
    records: [
      [`key:${hash}`, { id: "key_bench", org: "bench", user: "bench", group: "bench", created_at: new Date().toISOString() }],
      [`model:${model}`, {}],
      ["group:bench", { models: ["*"] }],
      ["org:bench", { requests_per_minute: UNLIMITED, user_requests_per_minute: UNLIMITED }],
    ],
  };
}
