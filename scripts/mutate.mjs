// `npm run mutate [-- FILE...] [-- --changed]`: mutation testing of src/ (Stryker) against the
// worker tests, one source file at a time. Not in CI: a file takes minutes to an hour.
//
//   npm run mutate -- src/streaming/sse.ts     # one file (or several)
//   npm run mutate -- src/org-gate.ts:198-400  # only its lines 198 to 400 (to resume a stopped run)
//   npm run mutate -- --changed                # the src/ files this branch or the working tree changed
//   npm run mutate                             # every file in TESTS: hours
//
// Stryker's vitest runner cannot reach code inside workerd (its mutants all "survive" with no test
// run), so scripts/mutate-runner.mjs runs each mutant over the worker tests that reach it (coverage
// per test, from inside workerd) in one long-lived vitest. Each file's report is written to reports/mutation/<file>.json and a
// score table to reports/mutation/summary.json.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Stryker } from "@stryker-mutator/core";

/**
 * The worker test files (without `test/` and `.test.ts`) that exercise each module most directly:
 * they run first. Every other worker test file follows, since coverage (per test) decides which
 * tests a mutant runs, and a test elsewhere may be the only one to reach a line.
 */
const TESTS = {
  "src/auth.ts": ["keys", "contract", "admin", "records", "log", "messages"],
  "src/body.ts": ["contract", "hostile", "admin", "usage"],
  "src/json-scan.ts": ["hostile", "contract"],
  "src/schemas.ts": ["contract"],
  "src/catalog.ts": ["models", "contract", "admin", "records"],
  "src/models.ts": ["models", "records"],
  "src/records.ts": ["records", "admin", "keys", "upstreams"],
  "src/kv.ts": ["cache", "records", "admin"],
  "src/config.ts": ["records", "hostile", "upstreams"],
  "src/admission.ts": ["org-gate", "rate-limit", "hardening", "contract", "token-limits", "budgets"],
  "src/org-gate.ts": ["org-gate", "rate-limit", "hardening", "keys", "usage", "token-limits", "budgets"],
  "src/token-window.ts": ["token-limits", "org-gate"],
  "src/month-spend.ts": ["budgets"],
  "src/errors.ts": ["contract", "log", "records", "messages", "anthropic-sdk"],
  "src/routing.ts": ["contract"],
  "src/log.ts": ["log"],
  "src/request-log.ts": ["log"],
  "src/upstream.ts": ["contract", "hostile", "clients", "usage", "upstreams", "messages"],
  "src/targets.ts": ["upstreams"],
  "src/base-url.ts": ["upstreams", "records"],
  "src/console.ts": ["console"],
  "src/streaming/sse.ts": ["sse", "properties"],
  "src/streaming/stream.ts": [
    "stream",
    "contract",
    "responses-stream",
    "messages",
    "usage",
    "clients",
    "anthropic-sdk",
  ],
  "src/streaming/dialects.ts": [
    "dialects",
    "usage",
    "responses-stream",
    "messages",
    "clients",
    "contract",
    "anthropic-sdk",
  ],
  "src/admin/index.ts": ["admin", "records", "cache", "usage", "upstreams"],
  "src/admin/keys.ts": ["admin", "keys", "rate-limit"],
  "src/admin/schemas.ts": ["admin"],
  "src/admin/usage.ts": ["usage"],
  "src/usage.ts": ["usage", "token-limits"],
  "src/usage-ledger.ts": ["usage"],
  "src/metering.ts": ["usage", "hardening", "token-limits"],
  "src/apis.ts": ["usage", "contract", "messages", "anthropic-sdk"],
  "src/memo.ts": ["keys", "cache"],
  "src/index.ts": ["contract"],
};

/** Every test file of the `worker` project (vitest.config.ts: `test/*.test.ts`). */
const WORKER_TESTS = readdirSync("test")
  .filter((name) => name.endsWith(".test.ts"))
  .map((name) => `test/${name}`);

const git = (...args) => execFileSync("git", args, { encoding: "utf8" }).split("\n").filter(Boolean);

/** The src/ files changed on this branch (against main) or in the working tree. */
function changedFiles() {
  const onBranch =
    git("rev-parse", "--abbrev-ref", "HEAD")[0] === "main"
      ? []
      : git("diff", "--name-only", "main...HEAD", "--", "src");
  return [...new Set([...onBranch, ...git("diff", "--name-only", "HEAD", "--", "src")])];
}

function filesToMutate(args) {
  if (args.includes("--changed")) return changedFiles();
  const named = args.filter((arg) => !arg.startsWith("--"));
  return named.length ? named : Object.keys(TESTS);
}

/** Mutation score of one file's results, Stryker's way: detected / (detected + undetected). */
function score(results) {
  const count = (...statuses) => results.filter((r) => statuses.includes(r.status)).length;
  const killed = count("Killed", "Timeout");
  const survived = count("Survived", "NoCoverage");
  return {
    killed,
    survived,
    errors: count("RuntimeError", "CompileError"),
    score: Math.round((1000 * killed) / (killed + survived || 1)) / 10,
  };
}

const files = filesToMutate(process.argv.slice(2));
/** The source file of a Stryker pattern, which may end in a line range (`src/x.ts:10-40`). */
const sourceOf = (pattern) => pattern.replace(/:\d+-\d+$/, "");
const unknown = files.filter((file) => !TESTS[sourceOf(file)]);
if (unknown.length) {
  console.error(`no test files known for ${unknown.join(", ")}: add them to TESTS in scripts/mutate.mjs`);
  process.exit(2);
}
if (!files.length) {
  console.log("nothing to mutate: no src/ file changed");
  process.exit(0);
}

mkdirSync("reports/mutation", { recursive: true });
const summaryPath = "reports/mutation/summary.json";
/**
 * The scores so far, read afresh before each write: two runs over different files may share it.
 * @returns {Record<string, ReturnType<typeof score>>}
 */
function readSummary() {
  try {
    return JSON.parse(readFileSync(summaryPath, "utf8"));
  } catch {
    return {}; // The first run.
  }
}
for (const file of files) {
  // Read by scripts/mutate-runner.mjs and vitest.config.ts in Stryker's runner process.
  const first = TESTS[sourceOf(file)].map((name) => `test/${name}.test.ts`);
  const rest = WORKER_TESTS.filter((path) => !first.includes(path));
  process.env.MUTATE_TEST_FILES = [...first, ...rest].join(" ");
  // Each mutant's result as it comes (scripts/mutate-runner.mjs): what a stopped run leaves.
  const name = file.replaceAll("/", "_").replace(":", "@");
  process.env.MUTATE_PROGRESS_FILE = `reports/mutation/${name}.progress.jsonl`;
  writeFileSync(process.env.MUTATE_PROGRESS_FILE, "");
  // The dry run's times, for a test runner that Stryker starts afresh after a timeout.
  process.env.MUTATE_DRY_RUN_FILE = `reports/mutation/${name}.dry-run.json`;
  rmSync(process.env.MUTATE_DRY_RUN_FILE, { force: true });
  const stryker = new Stryker({
    plugins: ["./scripts/mutate-runner.mjs"],
    testRunner: "workerd-vitest",
    mutate: [file],
    // Each test's coverage comes from inside workerd (test/mutate-coverage.ts); a mutant reached
    // outside any test ("static") runs every test.
    coverageAnalysis: "perTest",
    // Each vitest run keeps a core busy; more runners than cores make timing tests flaky.
    concurrency: Number(process.env.MUTATE_CONCURRENCY ?? 1),
    // A mutant "times out" after 3 times the dry run's time plus 10 s; a timeout restarts vitest.
    // Stryker counts a timeout as detected, but on a busy machine a surviving mutant's run can
    // outlast 1.5 times a quiet dry run (four such false timeouts were seen): check each timeout
    // by hand before counting it, and run on a quiet machine.
    timeoutFactor: 3,
    timeoutMS: 10_000,
    reporters: ["clear-text", "json", "progress-append-only", "progress-file"],
    jsonReporter: { fileName: `reports/mutation/${name}.json` },
    // No incremental reruns: Stryker reuses a survivor's result unless it sees the tests change,
    // and this runner cannot show it which tests changed, so a reused survivor may be stale.
    incremental: false,
  });
  const result = score(await stryker.runMutationTest());
  writeFileSync(summaryPath, JSON.stringify({ ...readSummary(), [file]: result }, null, 2) + "\n");
}
console.table(readSummary());
