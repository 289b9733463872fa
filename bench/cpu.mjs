import { TICKS_PER_SEC, cpuTicks, machineBusyTicks } from "../scripts/proc.mjs";

/**
 * The machine's busy time and this benchmark's own share of it (this process, its threads and
 * the given workerd pids), in ticks.
 *
 * @param {number[]} workerdPids
 */
export function cpuSnapshot(workerdPids) {
  const ours = cpuTicks("self") + workerdPids.reduce((sum, pid) => sum + cpuTicks(pid), 0);
  return { at: Date.now(), busy: machineBusyTicks(), ours };
}

/**
 * How busy the machine was between two snapshots, in cores: the benchmark's own processes and
 * everything else (on a shared machine, other work competes for the same cores and skews results).
 *
 * @param {ReturnType<typeof cpuSnapshot>} before
 * @param {ReturnType<typeof cpuSnapshot>} after
 */
export function cpuBetween(before, after) {
  const seconds = (after.at - before.at) / 1000;
  const cores = (/** @type {number} */ ticks) => Number((ticks / TICKS_PER_SEC / seconds).toFixed(2));
  const ours = after.ours - before.ours;
  return { bench_cores: cores(ours), other_cores: cores(Math.max(0, after.busy - before.busy - ours)) };
}
