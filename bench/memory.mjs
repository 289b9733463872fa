// `npm run bench:memory`: how much memory workerd needs while an upstream sends the gateway
// something huge. Prints a table and writes bench/memory-results.json. bench/README.md ("Memory")
// has the options, the cases and what is measured.
//
// Setup, shared with the other benchmarks: the bundle `wrangler deploy` would ship and the
// gateway's Miniflare options from wrangler.toml (scripts/wrangler.mjs), the mock upstream on its
// own thread (bench/upstream.mjs), a tenant made through the admin API (bench/tenant.mjs),
// workerd's pids and memory from /proc (scripts/proc.mjs).
import { writeFile } from "node:fs/promises";
import http from "node:http";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import { residentMemory, resetPeakMemory, workerdPids } from "../scripts/proc.mjs";
import { buildGateway, gatewayOptions, gatewayWorker } from "../scripts/wrangler.mjs";
import { machineFacts, sourceState } from "./report.mjs";
import { ADMIN_TOKEN, seedBenchTenant } from "./tenant.mjs";
import { startUpstream } from "./upstream.mjs";

const RESULTS_PATH = new URL("./memory-results.json", import.meta.url).pathname;
const MiB = 1024 * 1024;
const SAMPLE_MS = 25;
// Before "RSS before" and "RSS after": let the runtime finish what the request left behind.
const SETTLE_MS = 1000;
const HEAD_BYTES = 256;
const TAIL_BYTES = 4096;
const START_TIMEOUT_MS = 30_000;
const DISPOSE_TIMEOUT_MS = 15_000;

/** The mock cues and request shape of each case, for `bytes` of payload. */
const CASES = {
  line: { stream: true, mock: (bytes) => ({ huge_line_bytes: bytes }) },
  body: { stream: false, mock: (bytes) => ({ huge_body_bytes: bytes }) },
  "body-length": { stream: false, mock: (bytes) => ({ huge_body_bytes: bytes, with_length: true }) },
  gzip: { stream: false, mock: (bytes) => ({ gzip_bomb_bytes: bytes }) },
};

function usage(message) {
  console.error(
    `${message}\nusage: node bench/memory.mjs [--var NAME=value]... [--case ${Object.keys(CASES).join(",")}] [--mb N] [--timeout-s N] [--rss-limit-mb N]`,
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { vars: {}, cases: Object.keys(CASES), mb: 200, timeoutS: 120, rssLimitMb: 3072 };
  const number = (name, text) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0) usage(`${name} wants a positive number, got ${text}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    // --flag value, or --flag=value
    const split = argv[i].startsWith("--") ? argv[i].indexOf("=") : -1;
    const flag = split > 0 ? argv[i].slice(0, split) : argv[i];
    const value = () =>
      split > 0 ? argv[i].slice(split + 1) : (argv[++i] ?? usage(`${flag} needs a value`));
    if (flag === "--var") {
      const text = value();
      const eq = text.indexOf("=");
      if (eq <= 0) usage(`--var wants NAME=value, got ${text}`);
      opts.vars[text.slice(0, eq)] = text.slice(eq + 1);
    } else if (flag === "--case") {
      opts.cases = value().split(",").filter(Boolean);
      for (const name of opts.cases) if (!CASES[name]) usage(`unknown case ${name}`);
    } else if (flag === "--mb") opts.mb = number(flag, value());
    else if (flag === "--timeout-s") opts.timeoutS = number(flag, value());
    else if (flag === "--rss-limit-mb") opts.rssLimitMb = number(flag, value());
    else usage(`unknown argument ${argv[i]}`);
  }
  return opts;
}

/** Rejects after `ms` unless `promise` settles first. */
async function withTimeout(promise, ms, what) {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise(
        (_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms)),
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What the client got: the status, how many bytes, the first and last few, whether the answer
 * ended and how long it took. `error` is the client's reason for an early end.
 *
 * @typedef {object} Received
 * @property {number | null} status
 * @property {string | null} [contentType]
 * @property {number} bytes
 * @property {Buffer} head
 * @property {Buffer} tail
 * @property {boolean} ended
 * @property {string | null} error
 * @property {number} durationMs
 */

/**
 * One POST, reading the answer as it arrives and keeping only its size, head and tail.
 * `abort(reason)` ends it early from outside (timeout, RSS limit).
 *
 * @returns {{ done: Promise<Received>, abort: (reason: string) => void }}
 */
function request({ port, path, headers, body }) {
  let abortWith;
  const done = new Promise((resolve) => {
    const started = performance.now();
    /** @type {Received} */
    const out = {
      status: null,
      bytes: 0,
      head: Buffer.alloc(0),
      tail: Buffer.alloc(0),
      ended: false,
      error: null,
      durationMs: NaN,
    };
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      out.durationMs = performance.now() - started;
      resolve(out);
    };
    const payload = Buffer.from(JSON.stringify(body));
    const req = http.request({
      host: "127.0.0.1",
      port,
      path,
      method: "POST",
      agent: false,
      headers: { ...headers, "content-type": "application/json", "content-length": payload.length },
    });
    abortWith = (reason) => {
      out.error ??= reason;
      req.destroy();
      finish();
    };
    req.on("error", (/** @type {NodeJS.ErrnoException} */ err) => {
      out.error ??= err.code ?? err.message;
      finish();
    });
    req.on("response", (res) => {
      out.status = res.statusCode ?? null;
      out.contentType = res.headers["content-type"] ?? null;
      res.on("data", (chunk) => {
        out.bytes += chunk.length;
        if (out.head.length < HEAD_BYTES)
          out.head = Buffer.concat([out.head, chunk.subarray(0, HEAD_BYTES)]).subarray(0, HEAD_BYTES);
        out.tail = Buffer.concat([out.tail, chunk.subarray(-TAIL_BYTES)]).subarray(-TAIL_BYTES);
      });
      res.on("end", () => {
        out.ended = true;
        finish();
      });
      res.on("error", (/** @type {NodeJS.ErrnoException} */ err) => {
        out.error ??= err.code ?? err.message;
        finish();
      });
      res.on("close", () => {
        if (!res.complete) out.error ??= "closed-before-end";
        finish();
      });
    });
    req.end(payload);
  });
  return { done, abort: (reason) => abortWith(reason) };
}

const EOL = String.raw`(?:\r\n|\n|\r)`;
// An `event: error` frame (after a blank line, or at the very start) right before `data: [DONE]`.
const ERROR_THEN_DONE = new RegExp(
  `(^|${EOL}${EOL})(event: error${EOL}(?:[^\\r\\n]*${EOL})*?)${EOL}data: \\[DONE\\]${EOL}${EOL}$`,
);

/**
 * For a stream: did it end with an `event: error` frame and then `data: [DONE]`?
 *
 * @param {Received} out
 */
function streamEnding(out) {
  const match = ERROR_THEN_DONE.exec(out.tail.toString("utf8"));
  // A match at ^ only counts when the tail is the whole stream.
  const frame = match && (match[1] !== "" || out.bytes <= TAIL_BYTES) ? match[2] : undefined;
  return { error_then_done: frame !== undefined, error_frame: frame?.trim().slice(0, 400) ?? null };
}

/** A short printable view of bytes: long runs of one character are folded. */
function preview(buf, max = 200) {
  return buf
    .toString("utf8")
    .replace(/(.)\1{15,}/gsu, (run, c) => `[${run.length} × ${JSON.stringify(c)}]`)
    .slice(0, max);
}

/** The gateway under Miniflare, with its own workerd, pointed at the upstream, and its tenant. */
async function startGateway({ bundle, upstream, vars, logs }) {
  const existing = new Set(workerdPids());
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      port: 0,
      logRequests: false,
      // Kept (the last few) so a case's table row can say what the gateway logged.
      handleStructuredLogs: (log) => {
        logs.push(`${log.level}: ${String(log.message).slice(0, 1000)}`);
        if (logs.length > 8) logs.shift();
      },
      workers: [
        await gatewayWorker({
          bundle,
          vars: {
            UPSTREAM_BASE_URL: upstream.baseUrl,
            UPSTREAM_API_KEY: "sk-upstream-bench",
            ADMIN_TOKEN,
            ...vars,
          },
        }),
      ],
    }),
  );
  /** @type {{ mf: Miniflare, pids: number[] }} */
  const started = { mf, pids: [] };
  try {
    const url = await withTimeout(mf.ready, START_TIMEOUT_MS, "Miniflare start");
    started.pids = workerdPids().filter((pid) => !existing.has(pid));
    if (started.pids.length === 0) throw new Error("found no new workerd child process");
    return { ...started, port: Number(url.port), tenant: await seedBenchTenant(url.origin) };
  } catch (error) {
    await stopGateway(started);
    throw error;
  }
}

/**
 * Disposes Miniflare; a workerd that outlives a stuck dispose is killed by its pid.
 *
 * @param {{ mf: Miniflare, pids: number[] }} gateway
 */
async function stopGateway(gateway) {
  try {
    await withTimeout(gateway.mf.dispose(), DISPOSE_TIMEOUT_MS, "Miniflare dispose");
  } catch (error) {
    console.error(`[memory] ${error.message}; killing workerd ${gateway.pids.join(", ")}`);
    for (const pid of gateway.pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

/**
 * One case's entry in memory-results.json. The fields after `notes` are there once the case got
 * that far; `error_then_done` and `error_frame` only for a stream.
 *
 * @typedef {object} CaseResult
 * @property {string} case
 * @property {number} payload_bytes
 * @property {string[]} notes
 * @property {boolean} [workerd_exited]
 * @property {boolean} [rss_limit_hit]
 * @property {number | null} [status]
 * @property {string | null} [content_type]
 * @property {number} [bytes_received]
 * @property {boolean} [ended_cleanly]
 * @property {string | null} [client_error]
 * @property {boolean} [error_then_done]
 * @property {string | null} [error_frame]
 * @property {number} [duration_ms]
 * @property {number} [rss_before_bytes]
 * @property {number} [rss_peak_sampled_bytes]
 * @property {number | null} [rss_peak_hwm_bytes]
 * @property {number | null} [rss_after_bytes]
 * @property {string} [head]
 * @property {string} [tail]
 * @property {string[]} [gateway_logs]
 */

/**
 * One case on a fresh runtime: warm up, settle, measure the huge request, settle, measure.
 *
 * @returns {Promise<CaseResult>}
 */
async function runCase(name, { bundle, upstream, opts, log, track }) {
  const spec = CASES[name];
  const bytes = Math.round(opts.mb * MiB);
  /** @type {string[]} */
  const logs = [];
  /** @type {CaseResult} */
  const result = { case: name, payload_bytes: bytes, notes: [] };
  let gateway;
  let untrack;
  let sampler;
  try {
    gateway = await startGateway({ bundle, upstream, vars: opts.vars, logs });
    untrack = track(() => stopGateway(gateway));
    const { tenant } = gateway;
    const send = (body) =>
      request({
        port: gateway.port,
        path: "/v1/chat/completions",
        headers: { authorization: `Bearer ${tenant.apiKey}` },
        body: { model: tenant.model, messages: [{ role: "user", content: "Say hello." }], ...body },
      });
    // Warm-up: the isolate loaded, KV and the rate limiter's Durable Object touched.
    const warm = await withTimeout(send({}).done, 30_000, "warm-up request");
    if (warm.status !== 200) throw new Error(`warm-up answered ${warm.status}: ${preview(warm.head)}`);
    if (name === "gzip") {
      // The mock compresses each size once: do it now, outside the measured request.
      const direct = request({
        port: upstream.port,
        path: "/v1/chat/completions",
        headers: {},
        body: { model: "m", mock: spec.mock(bytes) },
      });
      await withTimeout(direct.done, 60_000, "gzip warm-up on the mock");
    }
    await sleep(SETTLE_MS);

    const before = residentMemory(gateway.pids);
    const hwmReset = resetPeakMemory(gateway.pids);
    let peak = before.rssBytes;
    const call = send({ ...(spec.stream ? { stream: true } : {}), mock: spec.mock(bytes) });
    const limitBytes = opts.rssLimitMb * MiB;
    sampler = setInterval(() => {
      const now = residentMemory(gateway.pids);
      if (now.gone.length > 0) {
        if (!result.workerd_exited) {
          result.workerd_exited = true;
          result.notes.push(`workerd ${now.gone.join(",")} exited during the request`);
        }
        return;
      }
      peak = Math.max(peak, now.rssBytes);
      if (now.rssBytes > limitBytes && !result.rss_limit_hit) {
        result.rss_limit_hit = true;
        result.notes.push(`RSS passed ${opts.rssLimitMb} MiB: client aborted`);
        call.abort("rss-limit");
      }
    }, SAMPLE_MS);
    const timer = setTimeout(() => {
      result.notes.push(`no end within ${opts.timeoutS} s: client aborted`);
      call.abort("timeout");
    }, opts.timeoutS * 1000);
    const out = await call.done;
    clearTimeout(timer);
    // Sampling goes on while the runtime settles: what it still does for the request counts too.
    await sleep(SETTLE_MS);
    clearInterval(sampler);
    const after = residentMemory(gateway.pids);
    if (after.gone.length === 0) peak = Math.max(peak, after.rssBytes);
    else if (!result.workerd_exited) {
      result.workerd_exited = true;
      result.notes.push(`workerd ${after.gone.join(",")} exited`);
    }

    Object.assign(result, {
      status: out.status,
      content_type: out.contentType ?? null,
      bytes_received: out.bytes,
      ended_cleanly: out.ended && !out.error,
      client_error: out.error,
      ...(spec.stream ? streamEnding(out) : {}),
      duration_ms: Math.round(out.durationMs),
      rss_before_bytes: before.rssBytes,
      rss_peak_sampled_bytes: peak,
      // VmHWM catches a spike between two samples; only meaningful when the reset worked.
      rss_peak_hwm_bytes: hwmReset && after.gone.length === 0 ? after.peakRssBytes : null,
      rss_after_bytes: after.gone.length === 0 ? after.rssBytes : null,
      head: preview(out.head),
      tail: preview(out.tail.subarray(-300)),
      gateway_logs: logs.slice(-4),
    });
    log(
      `${name}: ${out.status} ${out.bytes} bytes in ${Math.round(out.durationMs)} ms, peak ${(peak / MiB).toFixed(0)} MiB`,
    );
  } catch (error) {
    result.notes.push(`failed: ${error.message}`);
    result.gateway_logs = logs.slice(-4);
    log(`${name}: failed: ${error.message}`);
  } finally {
    clearInterval(sampler);
    untrack?.();
    if (gateway) await stopGateway(gateway);
  }
  return result;
}

const mib = (b) => (Number.isFinite(b) ? (b / MiB).toFixed(0) : "-");

/** @param {CaseResult[]} results */
function formatTable(results) {
  const rows = results.map((r) => [
    r.case,
    r.status ?? "-",
    r.bytes_received === undefined ? "-" : r.bytes_received.toLocaleString("en-US"),
    r.error_then_done === undefined
      ? r.ended_cleanly === undefined
        ? "-"
        : r.ended_cleanly
          ? "clean"
          : r.client_error
      : r.error_then_done
        ? "error+DONE"
        : `no (${r.ended_cleanly ? "clean" : r.client_error})`,
    r.duration_ms === undefined ? "-" : (r.duration_ms / 1000).toFixed(2),
    mib(r.rss_before_bytes),
    mib(r.rss_peak_sampled_bytes),
    mib(r.rss_peak_hwm_bytes),
    mib(r.rss_after_bytes),
    r.notes.join("; "),
  ]);
  const header = [
    "case",
    "status",
    "bytes received",
    "ending",
    "time s",
    "RSS before MiB",
    "peak MiB",
    "HWM MiB",
    "after MiB",
    "notes",
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => String(row[i]).length)));
  const line = (cells) =>
    cells
      .map((c, i) => String(c).padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = new Date();
  const t0 = performance.now();
  const log = (text) => console.error(`[memory ${((performance.now() - t0) / 1000).toFixed(1)}s] ${text}`);
  // Undone in reverse order whatever happens (also on Ctrl-C): no workerd, thread or temp dir left.
  const cleanups = [];
  const track = (undo) => {
    cleanups.push(undo);
    return () => cleanups.splice(cleanups.indexOf(undo), 1);
  };
  let cleaning;
  const cleanUp = () =>
    (cleaning ??= (async () => {
      for (const undo of cleanups.reverse()) {
        try {
          await undo();
        } catch (error) {
          console.error(`[memory] cleanup: ${error.message}`);
        }
      }
    })());
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.once(signal, () => {
      console.error(`[memory] ${signal}: cleaning up`);
      void cleanUp().finally(() => process.exit(130));
    });
  }

  let failed = false;
  try {
    const bundle = await buildGateway();
    track(() => bundle.remove());
    log(`built gateway: ${bundle.files.join(", ")}`);
    const upstream = await startUpstream();
    track(() => upstream.close());
    log(
      `upstream on 127.0.0.1:${upstream.port}; cases ${opts.cases.join(", ")} at ${opts.mb} MiB; vars ${JSON.stringify(opts.vars)}`,
    );

    const results = [];
    for (const name of opts.cases) results.push(await runCase(name, { bundle, upstream, opts, log, track }));

    const report = {
      started_at: startedAt.toISOString(),
      duration_ms: Math.round(performance.now() - t0),
      config: {
        payload_bytes: Math.round(opts.mb * MiB),
        vars: opts.vars,
        timeout_s: opts.timeoutS,
        rss_limit_bytes: opts.rssLimitMb * MiB,
        sample_ms: SAMPLE_MS,
        settle_ms: SETTLE_MS,
        compatibility_date: (await gatewayOptions()).compatibilityDate,
      },
      machine: machineFacts(),
      source: sourceState(),
      cases: results,
    };
    console.log(formatTable(results));
    await writeFile(RESULTS_PATH, `${JSON.stringify(report, null, 2)}\n`);
    log(`wrote ${RESULTS_PATH}`);
  } catch (error) {
    failed = true;
    console.error(`[memory] ${error.stack ?? error}`);
  } finally {
    await cleanUp();
  }
  // No process.exit(): the process ends by itself only if nothing was left running.
  process.exitCode = failed ? 1 : 0;
}

await main();
