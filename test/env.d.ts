import type { Env as GatewayEnv } from "../src/types";

// Types for `env` and `exports` from "cloudflare:workers" inside the tests.
declare global {
  namespace Cloudflare {
    interface Env extends GatewayEnv {}
    interface GlobalProps {
      mainModule: typeof import("../src/index");
      durableNamespaces: "OrgGate";
    }
  }
}
