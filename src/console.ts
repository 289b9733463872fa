import type { Handler } from "hono";
import { GatewayError } from "./errors";
import type { AppEnv } from "./types";

/**
 * The operators' console (`/console/`), which is static assets (`public/console/`) reached only
 * through the Worker (wrangler.toml `run_worker_first`), so that it exists exactly while the admin
 * API does: without ADMIN_TOKEN, or for a file it does not have, it is the same 404 as any unknown
 * path. Its security headers come with the assets themselves (`public/_headers`).
 *
 * @example
 * app.get("/console/*", consoleAssets());
 */
export function consoleAssets(): Handler<AppEnv> {
  return async function consoleAssets(c) {
    if (!c.env.ADMIN_TOKEN) throw new GatewayError("not_found");
    const asset = await c.env.ASSETS.fetch(c.req.raw);
    if (asset.status === 404) throw new GatewayError("not_found");
    // Every response carries its request id; the asset's own headers are immutable.
    const response = new Response(asset.body, asset);
    response.headers.set("x-request-id", c.get("requestId"));
    return response;
  };
}
