import { afterEach, beforeEach } from "vitest";

// Loaded only under `npm run mutate` (vitest.config.ts): tells Stryker's instrumented code, which
// runs in this isolate with the Worker and its Durable Objects, which test is running, and hands
// each test's covered mutants back to the runner (scripts/mutate-runner.mjs) in the test's meta,
// so a mutant is tried only against the tests that reach it. Code run between tests (work left
// running by the test before) counts as "static": its mutants are tried against every test.

interface StrykerNamespace {
  currentTestId?: string;
  mutantCoverage?: { static: Record<string, number>; perTest: Record<string, Record<string, number>> };
}

declare module "vitest" {
  interface TaskMeta {
    /** The mutants this test reached, and those reached outside any test so far. */
    strykerCoverage?: { test: string[]; static: string[] };
  }
}

const scope = globalThis as { __stryker__?: StrykerNamespace };
const stryker = (scope.__stryker__ ??= {});

// Tests that run concurrently (`it.concurrent`) cannot be told apart while they run: their
// coverage goes into one shared bucket, and each of them is given all of it.
const CONCURRENT = "concurrent tests";
let concurrentRunning = 0;

beforeEach(({ task }) => {
  if (task.concurrent) concurrentRunning++;
  stryker.currentTestId = task.concurrent ? CONCURRENT : task.id;
});

afterEach(({ task }) => {
  if (task.concurrent) concurrentRunning--;
  stryker.currentTestId = concurrentRunning ? CONCURRENT : undefined;
  const coverage = stryker.mutantCoverage;
  task.meta.strykerCoverage = {
    test: Object.keys(coverage?.perTest[task.concurrent ? CONCURRENT : task.id] ?? {}),
    static: Object.keys(coverage?.static ?? {}),
  };
});
