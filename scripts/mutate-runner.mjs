// Stryker's test runner for `npm run mutate`: one vitest (the `worker` project, inside workerd)
// kept alive across mutants, each run's mutant provided to vitest.config.ts, which hands it to
// workerd as the binding Stryker's instrumented code reads from process.env.
//
// Stryker's vitest runner cannot reach code inside workerd, and its command runner pays a whole
// vitest start per mutant. A changed binding makes the workers pool restart workerd's isolates
// for the run, so every run evaluates the instrumented modules afresh with its mutant active
// from the start, static (module top level) mutants included, as `reloadEnvironment` asks.
import { declareClassPlugin, PluginKind, tokens } from "@stryker-mutator/api/plugin";
import { DryRunStatus, MutantRunStatus, TestStatus } from "@stryker-mutator/api/test-runner";
import { appendFileSync } from "node:fs";
import { createVitest } from "vitest/node";

/** The test files for this run, set by scripts/mutate.mjs (space separated, relative to the root). */
const testFiles = () => (process.env.MUTATE_TEST_FILES ?? "").split(" ").filter(Boolean);

class WorkerdVitestRunner {
  static inject = tokens();

  constructor() {
    /** @type {import("vitest/node").Vitest | undefined} */
    this.vitest = undefined;
    /** The tests failed so far in the current run. */
    this.failed = [];
  }

  capabilities() {
    return { reloadEnvironment: true };
  }

  async init() {
    // vitest's own `bail` cancels a run but leaves its tests unreported; this stops the run at
    // the first failure itself and keeps what failed, since one failure is enough to kill.
    const reporter = {
      onTestCaseResult: (test) => {
        if (test.result().state !== "failed") return;
        this.failed.push(test);
        if (this.failed.length === 1) void this.vitest?.cancelCurrentRun("test-failure");
      },
    };
    this.vitest = await createVitest("test", { watch: false, project: ["worker"], reporters: [reporter] });
  }

  /** Runs the test files with `mutant` active ("" for none): the failed tests, and how many ran. */
  async run(mutant, timeoutMs) {
    const vitest = /** @type {import("vitest/node").Vitest} */ (this.vitest);
    this.failed = [];
    // The key's type is declared for the tests (test/global-setup.ts), out of this script's sight.
    const provide = /** @type {(key: string, value: string) => void} */ (vitest.provide);
    provide("strykerActiveMutant", mutant);
    const files = testFiles().map((file) => `${process.cwd()}/${file}`);
    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const result = await Promise.race([this.inTurn(files), timedOut]);
    clearTimeout(timer);
    if (result === "timeout") {
      // A mutant that hangs the Worker may hang the pool too: start a new vitest for the next.
      await vitest.cancelCurrentRun("keyboard-input").catch(() => {});
      await vitest.close().catch(() => {});
      await this.init();
      return "timeout";
    }
    return { ...result, failed: this.failed };
  }

  /**
   * Runs the test files one after another, in the order of their list, until one fails: the
   * module's own unit tests come first and kill most mutants in a second, and the slower files
   * then run only for the mutants they are needed for. (Given all at once, vitest starts them
   * together, and a kill costs the start of the slowest.) The dry run goes the same way, so that
   * Stryker's timeouts, taken from it, fit a surviving mutant's run.
   */
  async inTurn(files) {
    const vitest = /** @type {import("vitest/node").Vitest} */ (this.vitest);
    /** @type {import("vitest/node").TestCase[]} */
    const tests = [];
    /** @type {string[]} */
    const errors = [];
    for (const file of files) {
      const result = await vitest.runTestFiles([file]);
      tests.push(...result.testModules.flatMap((module) => [...module.children.allTests()]));
      const moduleErrors = result.testModules.flatMap((module) => module.errors());
      errors.push(
        ...[...moduleErrors, ...result.unhandledErrors].map((error) =>
          String(/** @type {{ message?: string }} */ (error).message ?? error),
        ),
      );
      if (this.failed.length || errors.length) break;
    }
    return { tests, errors };
  }

  /** @returns {Promise<import("@stryker-mutator/api/test-runner").DryRunResult>} */
  async dryRun({ timeout }) {
    const outcome = await this.run("", Math.max(timeout, 300_000));
    if (outcome === "timeout") return { status: DryRunStatus.Timeout };
    if (outcome.failed.length || outcome.errors.length || !outcome.tests.length) {
      const names = outcome.failed.map((test) => `${test.fullName}: ${test.result().errors?.[0]?.message}`);
      return {
        status: DryRunStatus.Error,
        errorMessage: [...names, ...outcome.errors].join("\n") || "no tests",
      };
    }
    return {
      status: DryRunStatus.Complete,
      tests: outcome.tests.map((test) => ({
        id: test.fullName,
        name: test.fullName,
        status: TestStatus.Success,
        timeSpentMs: test.diagnostic()?.duration ?? 0,
      })),
    };
  }

  /** @returns {Promise<import("@stryker-mutator/api/test-runner").MutantRunResult>} */
  async mutantRun({ activeMutant, timeout }) {
    const outcome = await this.run(activeMutant.id, timeout);
    if (outcome === "timeout") return { status: MutantRunStatus.Timeout };
    if (outcome.failed.length || outcome.errors.length) {
      const first = outcome.failed[0];
      return {
        status: MutantRunStatus.Killed,
        killedBy: outcome.failed.map((test) => test.fullName),
        failureMessage: first?.result().errors?.[0]?.message ?? outcome.errors[0],
        nrOfTests: outcome.tests.length,
      };
    }
    return { status: MutantRunStatus.Survived, nrOfTests: outcome.tests.length };
  }

  async dispose() {
    await this.vitest?.close();
  }
}

/**
 * Appends each mutant's result to the file MUTATE_PROGRESS_FILE names, as it comes: Stryker writes
 * its reports only at the end of a run, and a run of hours that is stopped would otherwise leave
 * nothing. One JSON line per mutant: its id, status, line, mutator, replacement and killing tests.
 */
class ProgressFileReporter {
  static inject = tokens();

  /** @param {import("@stryker-mutator/api/core").MutantResult} result */
  onMutantTested(result) {
    const file = process.env.MUTATE_PROGRESS_FILE;
    if (!file) return;
    const { id, status, location, mutatorName, replacement, killedBy, statusReason } = result;
    const line = { id, status, line: location.start.line, mutatorName, replacement, killedBy, statusReason };
    appendFileSync(file, JSON.stringify(line) + "\n");
  }
}

export const strykerPlugins = [
  declareClassPlugin(PluginKind.TestRunner, "workerd-vitest", WorkerdVitestRunner),
  declareClassPlugin(PluginKind.Reporter, "progress-file", ProgressFileReporter),
];
