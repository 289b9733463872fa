// Stryker's test runner for `npm run mutate`: one vitest (the `worker` project, inside workerd)
// kept alive across mutants, each run's mutant provided to vitest.config.ts, which hands it to
// workerd as the binding Stryker's instrumented code reads from process.env.
//
// Stryker's vitest runner cannot reach code inside workerd, and its command runner pays a whole
// vitest start per mutant. A changed binding makes the workers pool restart workerd's isolates
// for the run, so every run evaluates the instrumented modules afresh with its mutant active
// from the start, static (module top level) mutants included, as `reloadEnvironment` asks.
//
// Coverage is per test (test/mutate-coverage.ts reports it from inside workerd): a mutant runs
// only the tests that reached it, in their files' order. A kill counts only once the killing test
// fails again with the mutant, run alone (and passing alone without it), or else in a second run
// of the same tests: a timing test that missed once on a loaded machine kills nothing.
import { declareClassPlugin, PluginKind, tokens } from "@stryker-mutator/api/plugin";
import { DryRunStatus, MutantRunStatus, TestStatus } from "@stryker-mutator/api/test-runner";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { createVitest } from "vitest/node";
import { cpuTicks, TICKS_PER_SEC, workerdPids } from "./proc.mjs";

/**
 * The longest a mutant's run may take when this runner did not time a dry run itself. Stryker's
 * timeout is the covering tests' summed durations times 3: for a line every test reaches, hours,
 * though the files run in under 4 minutes. A mutant that spins (a loop made endless) holds workerd
 * at 100 % and must not hold the run that long.
 */
const MAX_RUN_MS = 10 * 60_000;

/**
 * A mutant spins when workerd burns most of a core while no test finishes for this long, or for
 * twice the dry-run time of the longest test still running if that is longer (a sweep of every
 * cut of a stream burns a core for tens of seconds). A spin is a timeout, called in seconds: the
 * timeout itself, 3 times a dry run of minutes, cost 5 to 10 minutes for each of the endless
 * loops that `sse.ts`'s line-end search gives.
 */
const SPIN_MS = 30_000;
/** How often workerd's CPU time is sampled while a mutant's tests run. */
const SPIN_SAMPLE_MS = 2_000;
/** The share of one core that counts as burning it. */
const SPIN_BUSY = 0.8;

/** The test files for this run, set by scripts/mutate.mjs (space separated, relative to the root). */
const testFiles = () => (process.env.MUTATE_TEST_FILES ?? "").split(" ").filter(Boolean);

// A test's id for Stryker carries its file, since Stryker may hand a mutant to a runner other than
// the one that ran the dry run: `<file path> <vitest's test id>`.
/** @param {import("vitest/node").TestCase} test */
const strykerId = (test) => `${test.module.moduleId} ${test.id}`;
/** The vitest ids of the tests of `file` among the Stryker ids in `filter`. */
const idsIn = (filter, file) =>
  filter.filter((id) => id.startsWith(`${file} `)).map((id) => id.slice(file.length + 1));

/** Kills the workerd processes below this one: one that spins never yields to a gentler end. */
function killWorkerd() {
  for (const pid of workerdPids()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Exited since it was listed.
    }
  }
}

class WorkerdVitestRunner {
  static inject = tokens();

  constructor() {
    /** @type {import("vitest/node").Vitest | undefined} */
    this.vitest = undefined;
    /** The tests failed so far in the current run. */
    this.failed = [];
    /** Whether a filtered run (key: its test ids) passes without a mutant. */
    this.passes = new Map();
    /** How long this runner's dry run took, in ms (0 until it has made one). */
    this.dryRunMs = 0;
    /** Each test's time in the dry run, by Stryker id: how long it may burn a core. */
    this.durations = new Map();
    /** The tests of the current run that have started and not finished, by vitest id. */
    this.running = new Map();
    /** When a test of the current run last finished. */
    this.lastResultAt = 0;
    /** Whether a run timed out: its workerd was killed and this vitest can run nothing more. */
    this.spent = false;
  }

  capabilities() {
    return { reloadEnvironment: true };
  }

  async init() {
    // Stryker starts a new runner after each timeout: the dry run's times come from its file.
    if (!this.dryRunMs && process.env.MUTATE_DRY_RUN_FILE) {
      try {
        const saved = JSON.parse(readFileSync(process.env.MUTATE_DRY_RUN_FILE, "utf8"));
        this.dryRunMs = saved.dryRunMs;
        this.durations = new Map(saved.durations);
      } catch {
        // No dry run yet: this runner makes it.
      }
    }
    // vitest's own `bail` cancels a run but leaves its tests unreported; this stops the run at
    // the first failure itself and keeps what failed, since one failure is enough to kill.
    const reporter = {
      onTestCaseReady: (test) => {
        this.running.set(test.id, strykerId(test));
      },
      onTestCaseResult: (test) => {
        this.running.delete(test.id);
        this.lastResultAt = performance.now();
        if (test.result().state !== "failed") return;
        this.failed.push(test);
        if (this.failed.length === 1) void this.vitest?.cancelCurrentRun("test-failure");
      },
    };
    this.vitest = await createVitest("test", { watch: false, project: ["worker"], reporters: [reporter] });
  }

  /**
   * Runs the test files with `mutant` active ("" for none), only the tests `filter` names if
   * given: the failed tests, and how many ran.
   */
  async run(mutant, timeoutMs, filter, files = testFiles().map((file) => `${process.cwd()}/${file}`)) {
    if (this.spent) return "timeout";
    const vitest = /** @type {import("vitest/node").Vitest} */ (this.vitest);
    this.failed = [];
    // The key's type is declared for the tests (test/global-setup.ts), out of this script's sight.
    const provide = /** @type {(key: string, value: string) => void} */ (vitest.provide);
    provide("strykerActiveMutant", mutant);
    let timer;
    let watch;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
      watch = this.watchForSpin(() => resolve("timeout"));
    });
    const result = await Promise.race([this.inTurn(files, filter), timedOut]);
    clearTimeout(timer);
    clearInterval(watch);
    if (result === "timeout") {
      // One that spins never yields to workerd's own shutdown: it is killed outright. The pool
      // then waits for it for good (cancelling or closing vitest hangs, and a new vitest beside it
      // leaks the old one's, which restarts its workerd), so this runner is spent: the next
      // mutant's run asks Stryker for a new one.
      killWorkerd();
      this.spent = true;
      return "timeout";
    }
    return { ...result, failed: this.failed };
  }

  /**
   * Calls `spun` once workerd has burnt at least {@link SPIN_BUSY} of a core while no test
   * finished, for longer than {@link SPIN_MS} or twice the dry-run time of a test still running: a
   * loop the mutant made endless, which no test timeout inside workerd can end. In the dry run
   * (no times yet) it never calls. The caller clears the returned interval.
   */
  watchForSpin(spun) {
    this.running.clear();
    this.lastResultAt = performance.now();
    /** workerd's CPU ticks, sampled over the last {@link MAX_RUN_MS}. */
    const samples = [];
    return setInterval(() => {
      if (!this.durations.size) return;
      const at = performance.now();
      let ticks = 0;
      for (const pid of workerdPids()) {
        try {
          ticks += cpuTicks(pid);
        } catch {
          // Exited since it was listed.
        }
      }
      samples.push({ at, ticks });
      while (at - /** @type {{ at: number }} */ (samples[0]).at > MAX_RUN_MS) samples.shift();
      let allowed = SPIN_MS;
      for (const id of this.running.values()) allowed = Math.max(allowed, 2 * (this.durations.get(id) ?? 0));
      if (at - this.lastResultAt < allowed) return;
      // The newest sample at least `allowed` old: workerd's CPU time since then.
      const since = samples.findLast((sample) => at - sample.at >= allowed);
      if (since && (ticks - since.ticks) * (1000 / TICKS_PER_SEC) >= SPIN_BUSY * (at - since.at)) spun();
    }, SPIN_SAMPLE_MS);
  }

  /**
   * Runs the test files one after another, in the order of their list, until one fails: the
   * module's own unit tests come first and kill most mutants in a second, and the slower files
   * then run only for the mutants they are needed for. (Given all at once, vitest starts them
   * together, and a kill costs the start of the slowest.) The dry run goes the same way, so that
   * Stryker's timeouts, taken from it, fit a surviving mutant's run.
   */
  async inTurn(files, filter) {
    const vitest = /** @type {import("vitest/node").Vitest} */ (this.vitest);
    const project = /** @type {import("vitest/node").TestProject} */ (
      vitest.projects.find((candidate) => candidate.name === "worker")
    );
    /** @type {import("vitest/node").TestCase[]} */
    const tests = [];
    /** @type {string[]} */
    const errors = [];
    for (const file of files) {
      const testIds = filter && idsIn(filter, file);
      if (testIds && !testIds.length) continue;
      const result = testIds
        ? await vitest.runTestSpecifications([project.createSpecification(file, { testIds })])
        : await vitest.runTestFiles([file]);
      // The tests a filter left out are in the result too, as skipped.
      const ran = result.testModules.flatMap((module) => [...module.children.allTests()]);
      tests.push(...ran.filter((test) => test.result().state !== "skipped"));
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
    let started = performance.now();
    let outcome = await this.run("", Math.max(timeout, 300_000));
    // One more try for a test that missed its timing on a loaded machine.
    if (outcome !== "timeout" && outcome.failed.length) {
      started = performance.now();
      outcome = await this.run("", Math.max(timeout, 300_000));
    }
    /** A mutant's run of every covering file takes at most about this (see mutantRun). */
    this.dryRunMs = performance.now() - started;
    if (outcome === "timeout") return { status: DryRunStatus.Timeout };
    for (const test of outcome.tests) this.durations.set(strykerId(test), test.diagnostic()?.duration ?? 0);
    if (process.env.MUTATE_DRY_RUN_FILE) {
      const saved = { dryRunMs: this.dryRunMs, durations: [...this.durations] };
      writeFileSync(process.env.MUTATE_DRY_RUN_FILE, JSON.stringify(saved));
    }
    if (outcome.failed.length || outcome.errors.length || !outcome.tests.length) {
      const names = outcome.failed.map((test) => `${test.fullName}: ${test.result().errors?.[0]?.message}`);
      return {
        status: DryRunStatus.Error,
        errorMessage: [...names, ...outcome.errors].join("\n") || "no tests",
      };
    }
    /** @type {import("@stryker-mutator/api/core").MutantCoverage} */
    const mutantCoverage = { static: {}, perTest: {} };
    for (const test of outcome.tests) {
      const coverage = test.meta().strykerCoverage ?? { test: [], static: [] };
      mutantCoverage.perTest[strykerId(test)] = Object.fromEntries(coverage.test.map((id) => [id, 1]));
      for (const id of coverage.static) mutantCoverage.static[id] = 1;
    }
    return {
      status: DryRunStatus.Complete,
      tests: outcome.tests.map((test) => ({
        id: strykerId(test),
        name: test.fullName,
        status: TestStatus.Success,
        timeSpentMs: test.diagnostic()?.duration ?? 0,
      })),
      mutantCoverage,
    };
  }

  /** Whether the tests `filter` names pass without a mutant (remembered: asked once per filter). */
  async passWithout(filter, timeoutMs) {
    const key = filter.join(" ");
    if (!this.passes.has(key)) {
      const outcome = await this.run("", timeoutMs, filter);
      this.passes.set(key, outcome !== "timeout" && !outcome.failed.length && !outcome.errors.length);
    }
    return this.passes.get(key);
  }

  /**
   * Whether `test`'s failure is the mutant's doing, and not the machine's load (a timing test that
   * missed) or a filter that left out tests it needs: it must fail again with the mutant, run
   * alone, and pass alone without it. A test that cannot pass alone is tried in its whole file.
   */
  async failsForMutant(mutant, test, timeoutMs) {
    const file = test.module.moduleId;
    const alone = [strykerId(test)];
    const filter = (await this.passWithout(alone, timeoutMs)) ? alone : undefined;
    const again = await this.run(mutant, timeoutMs, filter, [file]);
    return again === "timeout" || again.failed.some((failed) => failed.id === test.id);
  }

  /**
   * @param {import("@stryker-mutator/api/test-runner").MutantRunOptions} options
   * @returns {Promise<import("@stryker-mutator/api/test-runner").MutantRunResult>}
   */
  async mutantRun({ activeMutant, timeout, testFilter }) {
    // Stryker answers a rejected run with a new runner (a new process), and runs the mutant there.
    if (this.spent) throw new Error("this runner's workerd was killed: a new runner runs the mutant");
    // Stryker's timeout is made from the tests' own times, which leave out workerd's restart, and
    // sums them though they overlap: at least a minute, at most 3 times the dry run (plus 10 s).
    const ceiling = this.dryRunMs ? 3 * this.dryRunMs + 10_000 : MAX_RUN_MS;
    const timeoutMs = Math.min(Math.max(timeout, 60_000), ceiling);
    /** The tests that failed, and then passed alone with the mutant. */
    const unconfirmed = [];
    for (let attempt = 0; attempt < 2; attempt++) {
      const outcome = await this.run(activeMutant.id, timeoutMs, testFilter);
      if (outcome === "timeout") return { status: MutantRunStatus.Timeout };
      const first = outcome.failed[0];
      // Confirmed: the test fails alone with the mutant, or failed again in the same run (a test
      // that fails only beside others, say while concurrent streams split each other's chunks).
      const again = outcome.failed.find((test) => unconfirmed.includes(test.fullName));
      if (
        again ||
        (first ? await this.failsForMutant(activeMutant.id, first, timeoutMs) : outcome.errors.length)
      ) {
        return {
          status: MutantRunStatus.Killed,
          killedBy: outcome.failed.map((test) => test.fullName),
          failureMessage: (again ?? first)?.result().errors?.[0]?.message ?? outcome.errors[0],
          nrOfTests: outcome.tests.length,
        };
      }
      if (first) {
        unconfirmed.push(first.fullName);
        continue; // Perhaps a failure the mutant did not cause: the run is tried once more.
      }
      // A survivor is a claim about the tests that ran: a run of none proves nothing.
      if (!outcome.tests.length) return { status: MutantRunStatus.Error, errorMessage: "no test ran" };
      return { status: MutantRunStatus.Survived, nrOfTests: outcome.tests.length };
    }
    return {
      status: MutantRunStatus.Error,
      errorMessage: `twice a test failed that passes alone with the mutant: ${unconfirmed.join("; ")}`,
    };
  }

  async dispose() {
    if (this.spent) killWorkerd();
    // A spent runner's vitest may never finish closing; Stryker then ends its process.
    const gaveUp = new Promise((resolve) => setTimeout(resolve, 10_000).unref());
    await Promise.race([this.vitest?.close(), gaveUp]);
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
