import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import os from "node:os";

const KiB = 1024;
const MiB = 1024 * 1024;
// Other processes busier than this (in cores) make c=1 latencies visibly noisier, run to run.
const BUSY_MACHINE_CORES = 0.25;
const root = new URL("..", import.meta.url).pathname;

/** The rows of the table: where each number lives in a target's summary, and how it reads. */
const ROWS = [
  { label: "c=1   p50 (ms)", get: (s) => s.c1.p50Ms, unit: "ms" },
  { label: "c=1   p99 (ms)", get: (s) => s.c1.p99Ms, unit: "ms" },
  { label: "c=1   req/s", get: (s) => s.c1.requestsPerSec },
  { label: "c=32  p50 (ms)", get: (s) => s.c32.p50Ms, unit: "ms" },
  { label: "c=32  p99 (ms)", get: (s) => s.c32.p99Ms, unit: "ms" },
  { label: "c=32  req/s", get: (s) => s.c32.requestsPerSec },
  { label: "stream first byte (ms)", get: (s) => s.stream.firstByteMs, unit: "ms" },
  { label: "stream total (ms)", get: (s) => s.stream.totalMs, unit: "ms" },
  { label: "stream events/s", get: (s) => s.stream.eventsPerSec },
];

/**
 * The floor every change keeps (the developers' guide), each judged against the baseline measured
 * in the same run: `value` from
 * the gateway's and the baseline's summaries and the bundle, then `max` or `min` to meet.
 */
const TARGETS = [
  {
    target: "added p50 at c=1 <= 1 ms over baseline",
    unit: "ms",
    max: 1,
    value: (g, b) => g.c1.p50Ms - b.c1.p50Ms,
  },
  {
    target: "throughput at c=32 >= 0.5x baseline",
    unit: "x",
    min: 0.5,
    value: (g, b) => g.c32.requestsPerSec / b.c32.requestsPerSec,
  },
  {
    target: "stream events/s >= 0.5x baseline",
    unit: "x",
    min: 0.5,
    value: (g, b) => g.stream.eventsPerSec / b.stream.eventsPerSec,
  },
  {
    target: "stream first byte <= baseline + 1.5 ms",
    unit: "ms",
    max: 1.5,
    value: (g, b) => g.stream.firstByteMs - b.stream.firstByteMs,
  },
  {
    target: "bundle <= 30 KiB gzipped",
    unit: "KiB",
    max: 30,
    value: (g, b, bundle) => bundle.gzipBytes / KiB,
  },
];

function judgeTargets({ gateway, baseline }, bundle) {
  return TARGETS.map(({ target, unit, min, max, value }) => {
    const v = value(gateway, baseline, bundle);
    return { target, value: round(v, 3), unit, met: max !== undefined ? v <= max : v >= min };
  });
}

function packageVersion(name) {
  return JSON.parse(readFileSync(`${root}node_modules/${name}/package.json`, "utf8")).version;
}

/** Enough about the machine to tell whether two results files are comparable. */
export function machineFacts() {
  const cpus = os.cpus();
  return {
    cpu_model: cpus[0]?.model ?? "unknown",
    cores: os.availableParallelism(),
    memory_gib: round(os.totalmem() / 1024 ** 3, 1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    miniflare: packageVersion("miniflare"),
    workerd: packageVersion("workerd"),
    wrangler: packageVersion("wrangler"),
  };
}

/**
 * Which gateway source was measured: the commit, and the files under src/ that differ from it
 * (the bundle is built from the working tree). Null outside a git checkout.
 */
export function sourceState() {
  const git = (...args) =>
    execFileSync("git", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  try {
    // Porcelain lines are "XY path": two status columns, a space, the path.
    const changed = git("status", "--porcelain", "--", "src", "wrangler.toml").split("\n").filter(Boolean);
    return { commit: git("rev-parse", "HEAD").trim(), uncommitted: changed.map((line) => line.slice(3)) };
  } catch {
    return null;
  }
}

const round = (n, digits) => (Number.isFinite(n) ? Number(n.toFixed(digits)) : null);

/**
 * Everything the run found, in the shape written to the results file.
 * `summaries` maps target name (direct, baseline, gateway) to its pooled summary.
 */
export function buildReport({ summaries, rounds, bundle, memory, cpu, config, startedAt, durationMs }) {
  const { gateway, baseline } = summaries;
  const ratios = Object.fromEntries(
    ROWS.map(({ label, get, unit }) => {
      const entry = { gateway_over_baseline: round(get(gateway) / get(baseline), 3) };
      if (unit === "ms") entry.added_ms = round(get(gateway) - get(baseline), 3);
      return [label, entry];
    }),
  );
  return {
    date: startedAt.toISOString(),
    duration_s: round(durationMs / 1000, 1),
    machine: machineFacts(),
    source: sourceState(),
    // Other processes on the machine during the measured rounds; compare runs only when this is low.
    cpu_during_rounds: cpu,
    config,
    results: summaries,
    ratios,
    bundle: {
      files: bundle.files,
      raw_bytes: bundle.rawBytes,
      gzip_bytes: bundle.gzipBytes,
      raw_kib: round(bundle.rawBytes / KiB, 2),
      gzip_kib: round(bundle.gzipBytes / KiB, 2),
    },
    workerd_memory: memory,
    targets: judgeTargets(summaries, bundle),
    per_round: rounds,
  };
}

const fmt = (n) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const pad = (text, width) => String(text).padStart(width);

/** The report as the table the terminal shows. */
export function formatReport(report) {
  const { results } = report;
  const lines = [];
  const head = [
    "metric".padEnd(24),
    pad("direct", 9),
    pad("baseline", 9),
    pad("gateway", 9),
    pad("gw/base", 8),
    pad("added", 10),
  ];
  lines.push(head.join(" "), "-".repeat(74));
  for (const { label, get, unit } of ROWS) {
    const [d, b, g] = ["direct", "baseline", "gateway"].map((name) => get(results[name]));
    const added = unit === "ms" ? `${g - b >= 0 ? "+" : ""}${(g - b).toFixed(2)} ms` : "";
    lines.push(
      [
        label.padEnd(24),
        pad(fmt(d), 9),
        pad(fmt(b), 9),
        pad(fmt(g), 9),
        pad(`${(g / b).toFixed(2)}x`, 8),
        pad(added, 10),
      ].join(" "),
    );
  }
  const { bundle, workerd_memory: memory } = report;
  lines.push(
    "",
    `gateway bundle: ${bundle.raw_kib} KiB raw, ${bundle.gzip_kib} KiB gzip (${bundle.files.join(", ")})`,
    `workerd RSS (gateway + baseline + local KV/DO): ${(memory.startup_rss_bytes / MiB).toFixed(1)} MiB at start, ` +
      `${(memory.after_load_rss_bytes / MiB).toFixed(1)} MiB after load, peak ${(memory.peak_rss_bytes / MiB).toFixed(1)} MiB`,
    "",
    "targets:",
  );
  for (const t of report.targets) {
    lines.push(`  ${t.met ? "met   " : "MISSED"}  ${t.target.padEnd(42)} ${t.value} ${t.unit}`);
  }
  const m = report.machine;
  const cpu = report.cpu_during_rounds;
  lines.push(
    "",
    `${m.cpu_model}, ${m.cores} cores, node ${m.node}, workerd ${m.workerd}; ${report.config.rounds} rounds in ${report.duration_s} s`,
    `CPU during the rounds: this benchmark ${cpu.bench_cores} cores, other processes ${cpu.other_cores} cores`,
  );
  if (cpu.other_cores > BUSY_MACHINE_CORES) {
    lines.push(
      `warning: other processes competed for the cores; latencies (c=1 above all) read high. Re-run on a quiet machine.`,
    );
  }
  return lines.join("\n");
}

/** Writes the report as JSON, fractions cut to 3 decimals: more would be noise. */
export async function writeReport(report, path) {
  const trim = (_, value) =>
    typeof value === "number" && !Number.isInteger(value) ? Number(value.toFixed(3)) : value;
  await writeFile(path, JSON.stringify(report, trim, 2) + "\n");
}
