// workerd's processes as Linux's /proc shows them (proc(5)): which they are, their memory and their
// CPU time. For the soak and the benchmarks, which watch the runtime from outside.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";

/** Linux reports CPU time in clock ticks; USER_HZ is 100 on every mainstream build. */
export const TICKS_PER_SEC = 100;

/**
 * The fields of `/proc/<pid>/stat` after "pid (comm)", and comm itself. comm may hold spaces and
 * parentheses, so the fields start after its last closing parenthesis.
 *
 * @param {number | "self"} pid
 * @returns {{ comm: string, fields: string[] }}
 */
function stat(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  const close = text.lastIndexOf(")");
  return { comm: text.slice(text.indexOf("(") + 1, close), fields: text.slice(close + 2).split(" ") };
}

/**
 * The workerd processes below `ancestor` (children, grandchildren, ...): Miniflare starts workerd
 * itself, `wrangler dev` one level further down.
 *
 * @param {number} [ancestor] defaults to this process
 * @returns {number[]}
 * @example
 * const pids = workerdPids(dev.process.pid);
 * const { rssBytes } = residentMemory(pids);
 */
export function workerdPids(ancestor = process.pid) {
  /** @type {Map<number, { comm: string, pid: number }[]>} */
  const children = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let entryStat;
    try {
      entryStat = stat(Number(entry));
    } catch {
      continue; // exited while we looked
    }
    // Field 4 of proc(5), "ppid", is the second after comm.
    const ppid = Number(entryStat.fields[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), { comm: entryStat.comm, pid: Number(entry) }]);
  }
  /** @type {number[]} */
  const found = [];
  const below = [...(children.get(ancestor) ?? [])];
  for (let child = below.shift(); child; child = below.shift()) {
    if (child.comm === "workerd") found.push(child.pid);
    below.push(...(children.get(child.pid) ?? []));
  }
  return found;
}

/**
 * Resident memory summed over `pids`, in bytes: now (VmRSS) and at its peak (VmHWM), from
 * `/proc/<pid>/status`. A pid that has exited, or is a zombie without VmRSS, is listed in `gone`
 * and counts nothing.
 *
 * @param {number[]} pids
 * @returns {{ rssBytes: number, peakRssBytes: number, gone: number[] }}
 */
export function residentMemory(pids) {
  let rssBytes = 0;
  let peakRssBytes = 0;
  /** @type {number[]} */
  const gone = [];
  for (const pid of pids) {
    let status;
    try {
      status = readFileSync(`/proc/${pid}/status`, "utf8");
    } catch {
      gone.push(pid);
      continue;
    }
    const kib = (/** @type {string} */ field) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    const rss = kib("VmRSS");
    if (!Number.isFinite(rss)) {
      gone.push(pid);
      continue;
    }
    rssBytes += rss * 1024;
    peakRssBytes += kib("VmHWM") * 1024;
  }
  return { rssBytes, peakRssBytes, gone };
}

/**
 * Resets each pid's VmHWM to its current RSS (proc(5): `clear_refs` "5"), so the next peak is the
 * next request's. False where the kernel refuses.
 *
 * @param {number[]} pids
 */
export function resetPeakMemory(pids) {
  try {
    for (const pid of pids) writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * CPU time of one process, all its threads, in ticks: utime + stime (fields 14 and 15 of proc(5)).
 *
 * @param {number | "self"} pid
 */
export function cpuTicks(pid) {
  const { fields } = stat(pid);
  return Number(fields[11]) + Number(fields[12]);
}

/** The whole machine's busy time since boot, in ticks: every state of `/proc/stat` but idle and iowait. */
export function machineBusyTicks() {
  // The first line: "cpu" and the ticks spent in user nice system idle iowait irq softirq steal ...
  const [, ...ticks] =
    readFileSync("/proc/stat", "utf8").split("\n", 1)[0]?.trim().split(/\s+/).map(Number) ?? [];
  const [, , , idle = 0, iowait = 0] = ticks;
  return ticks.reduce((sum, t) => sum + t, 0) - idle - iowait;
}
