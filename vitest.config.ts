import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Set by `npm run mutate`, whose runner (scripts/mutate-runner.mjs) provides each run's mutant.
const mutating = Boolean(process.env.MUTATE_TEST_FILES);

export default defineConfig({
  test: {
    // Every request writes a log line; show them only for failing tests.
    silent: "passed-only",
    projects: [
      {
        // The Worker inside workerd, driven over its HTTP surface.
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            // workerd's own report of every upstream connection the fault sweeps break (thousands,
            // each handled by the gateway) would bury the test output.
            verbose: false,
            miniflare: {
              ...(mutating ? { compatibilityFlags: ["nodejs_compat"] } : {}),
              bindings: {
                // The real local mock upstream that test/global-setup.ts starts.
                UPSTREAM_BASE_URL: inject<string>("upstreamBaseUrl"),
                UPSTREAM_API_KEY: "sk-upstream-test-secret",
                // The keys of the named upstreams test/upstreams.test.ts writes (Worker secrets).
                UPSTREAM_A_KEY: "sk-upstream-a-secret",
                UPSTREAM_B_KEY: "sk-upstream-b-secret",
                ADMIN_TOKEN: "test-admin-token",
                UPSTREAM_TIMEOUT_MS: "1500",
                STREAM_IDLE_TIMEOUT_MS: "1000",
                // Stryker's instrumented code finds the active mutant in process.env, which bindings
                // populate under nodejs_compat, in the Worker's isolate and the tests' alike.
                ...(mutating ? { __STRYKER_ACTIVE_MUTANT__: inject<string>("strykerActiveMutant") } : {}),
              },
            },
          })),
        ],
        test: {
          name: "worker",
          include: ["test/*.test.ts"],
          globalSetup: ["./test/global-setup.ts"],
          // Under `npm run mutate`, each test's covered mutants go back to the runner.
          setupFiles: ["./test/log-audit.ts", ...(mutating ? ["./test/mutate-coverage.ts"] : [])],
          testTimeout: 20_000,
        },
      },
      {
        // The built bundle under Miniflare, used from outside as operators and clients do.
        test: {
          name: "e2e",
          include: ["test/e2e/*.test.ts"],
          environment: "node",
          testTimeout: 30_000,
        },
      },
      {
        // The mock upstream on its own: its stream builders and every cue of its server.
        test: {
          name: "mock",
          include: ["test/mock/*.test.ts"],
          environment: "node",
          testTimeout: 30_000,
        },
      },
    ],
  },
});
