import type { Env as GatewayEnv } from "../src/types";

// Types for `env` and `exports` from "cloudflare:workers" inside the tests.
declare global {
  namespace Cloudflare {
    interface Env extends GatewayEnv {
      /** Secrets of the named upstreams in test/upstreams.test.ts. */
      UPSTREAM_A_KEY: string;
      UPSTREAM_B_KEY: string;
    }
    interface GlobalProps {
      mainModule: typeof import("../src/index");
      durableNamespaces: "OrgGate";
    }
  }
}
