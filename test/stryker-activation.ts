import { env } from "cloudflare:workers";

// Under `npm run mutate` only: Stryker's command runner names the active mutant in an environment
// variable that code inside workerd cannot read, so vitest.config.ts passes it in as a binding and
// this sets it where Stryker's instrumented code looks for it.
const ns = ((globalThis as { __stryker__?: { activeMutant?: string } }).__stryker__ ??= {});
ns.activeMutant = (env as { STRYKER_ACTIVE_MUTANT?: string }).STRYKER_ACTIVE_MUTANT;
