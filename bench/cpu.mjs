import { readFileSync } from "node:fs";

// Linux reports CPU time in clock ticks; USER_HZ is 100 on every mainstream build.
const TICKS_PER_SEC = 100;

/** utime + stime of one process (all its threads), in ticks. */
function processTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of proc(5), counted from after "pid (comm)".
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * The machine's busy time and this benchmark's own share of it (this process, its threads and
 * the given workerd pids), in ticks.
 */
export function cpuSnapshot(workerdPids) {
  const [, ...ticks] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
  const busy = ticks.reduce((sum, t) => sum + t, 0) - ticks[3] - ticks[4];
  const ours = processTicks("self") + workerdPids.reduce((sum, pid) => sum + processTicks(pid), 0);
  return { at: Date.now(), busy, ours };
}

/**
 * How busy the machine was between two snapshots, in cores: the benchmark's own processes and
 * everything else (on a shared machine, other work competes for the same cores and skews results).
 */
export function cpuBetween(before, after) {
  const seconds = (after.at - before.at) / 1000;
  const cores = (ticks) => Number((ticks / TICKS_PER_SEC / seconds).toFixed(2));
  const ours = after.ours - before.ours;
  return { bench_cores: cores(ours), other_cores: cores(Math.max(0, after.busy - before.busy - ours)) };
}
