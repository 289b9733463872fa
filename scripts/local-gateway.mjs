// The built gateway (the bundle `wrangler deploy` would ship) running under Miniflare with the mock
// upstream: for the end-to-end tests, which need the real Worker outside vitest's pool.
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import { startMockUpstream } from "../test/mock/server.mjs";
import { buildGateway, gatewayWorker } from "./wrangler.mjs";

/**
 * Builds the gateway and runs it under Miniflare with a fresh mock upstream. wrangler.toml gives
 * its bindings and var defaults; `vars` and `adminToken` go over them.
 *
 * @param {{ adminToken?: string, vars?: Record<string, string>, onLog?: (log: unknown) => void }} [options]
 * @example
 * const gateway = await startLocalGateway({ adminToken: "t" });
 * await fetch(`${gateway.url}/healthz`);
 * await gateway.close();
 */
export async function startLocalGateway({ adminToken, vars = {}, onLog } = {}) {
  const upstream = await startMockUpstream();
  /** @type {import("./wrangler.mjs").Bundle | undefined} */
  let bundle;
  /** @type {Miniflare | undefined} */
  let mf;
  let url;
  try {
    bundle = await buildGateway();
    mf = new Miniflare(
      convertV4MiniflareOptions({
        port: 0,
        logRequests: false,
        handleStructuredLogs: onLog ?? (() => {}),
        workers: [
          await gatewayWorker({
            bundle,
            vars: {
              UPSTREAM_BASE_URL: upstream.baseUrl,
              UPSTREAM_API_KEY: "sk-upstream-local",
              ...(adminToken ? { ADMIN_TOKEN: adminToken } : {}),
              ...vars,
            },
          }),
        ],
      }),
    );
    url = (await mf.ready).origin;
  } catch (error) {
    // Nothing left running behind a failed start: a test process would otherwise hang on it.
    await mf?.dispose();
    await upstream.close();
    await bundle?.remove();
    throw error;
  }
  return {
    url,
    upstream,
    miniflare: mf,
    async close() {
      await mf.dispose();
      await upstream.close();
      await bundle.remove();
    },
  };
}
