// `npm run bench:timeline [-- --requests N]`: where the gateway's added time falls around the
// upstream. `npm run bench` says how much later the gateway's first byte is than the pipe's; this
// says whether it is spent before the upstream is asked or after it has answered.
//
// The upstream here is a plain Node server in this process, answering from bytes made once, so it
// stamps on the load client's own clock when each request reached it and when it wrote the answer.
// Gateway and pipe take turns, one request at a time, and the medians are printed:
//   to upstream    the client's send to the request's arrival upstream (auth, body, admission, ...)
//   headers        the upstream's answer to the response headers at the client
//   first byte     the upstream's answer to the first byte of the body at the client
//   last byte      the upstream's answer to the last byte (a 2,000-event stream: the stream's own cost)
import http from "node:http";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { buildGateway } from "../scripts/wrangler.mjs";
import { chatStreamBytes } from "../test/mock/streams.mjs";
import { chatRequest, closeTarget, createTarget, send } from "./load.mjs";
import { BASELINE_HOST, startRuntime } from "./runtime.mjs";
import { median } from "./stats.mjs";
import { seedBenchTenant } from "./tenant.mjs";

const { values } = parseArgs({ options: { requests: { type: "string", default: "400" } } });
const REQUESTS = Number(values.requests);
// Not counted: JIT warm-up, pooled connections, the gate's Durable Object started.
const WARMUP = 50;
const STREAM_EVENTS = 2000;
// Written as the project's mock writes an unpaced stream (test/mock/server.mjs).
const WRITE_BYTES = 16 * 1024;

const streamBytes = chatStreamBytes({ model: "bench-model", stream: true, mock: { events: STREAM_EVENTS } });
const completionBytes = Buffer.from(
  JSON.stringify({
    id: "chatcmpl-timeline",
    object: "chat.completion",
    created: 1,
    model: "bench-model",
    choices: [{ index: 0, message: { role: "assistant", content: "Hello." }, finish_reason: "stop" }],
    usage: { prompt_tokens: 2, completion_tokens: 2, total_tokens: 4 },
  }),
);

/** When the one request in flight reached the upstream, and when its answer was written. */
const upstreamStamps = { arrived: NaN, answered: NaN };

function startUpstream() {
  const server = http.createServer((req, res) => {
    upstreamStamps.arrived = performance.now();
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      upstreamStamps.answered = performance.now();
      if (!/"stream"\s*:\s*true/.test(body)) {
        res.writeHead(200, { "content-type": "application/json", "content-length": completionBytes.length });
        res.end(completionBytes);
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (let i = 0; i < streamBytes.length; i += WRITE_BYTES)
        res.write(streamBytes.subarray(i, i + WRITE_BYTES));
      res.end();
    });
  });
  // Idle pooled sockets closed by the server while the runtime reuses them read as random 502s.
  server.keepAliveTimeout = 0;
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** One request; its times, each from the client's send or from the upstream's answer. */
async function timed(target, request) {
  const result = await send(target, request);
  if (result.status !== 200) throw new Error(`${target.name} answered ${result.status}`);
  const { arrived, answered } = upstreamStamps;
  const since = (ms) => result.startedAt + ms - answered;
  return {
    "to upstream": arrived - result.startedAt,
    headers: since(result.headersMs),
    "first byte": since(result.firstByteMs),
    "last byte": since(result.totalMs),
  };
}

const upstream = await startUpstream();
const bundle = await buildGateway();
const runtime = await startRuntime({
  bundle,
  upstreamBaseUrl: `http://127.0.0.1:${upstream.address().port}/v1`,
});
try {
  const tenant = await seedBenchTenant(runtime.url);
  const targets = [
    createTarget("gateway", { port: runtime.port }),
    createTarget("baseline", { port: runtime.port, host: BASELINE_HOST }),
  ];
  const rows = [];
  for (const stream of [false, true]) {
    const request = chatRequest({ ...tenant, stream, events: STREAM_EVENTS });
    const times = { gateway: [], baseline: [] };
    for (let i = 0; i < WARMUP + REQUESTS; i++) {
      for (const target of targets) {
        const result = await timed(target, request);
        if (i >= WARMUP) times[target.name].push(result);
      }
    }
    for (const step of ["to upstream", "headers", "first byte", "last byte"]) {
      const gateway = median(times.gateway.map((t) => t[step]));
      const baseline = median(times.baseline.map((t) => t[step]));
      rows.push({
        request: stream ? `stream (${STREAM_EVENTS} events)` : "plain",
        step,
        "gateway (ms)": gateway.toFixed(3),
        "pipe (ms)": baseline.toFixed(3),
        "added (ms)": (gateway - baseline).toFixed(3),
      });
    }
  }
  for (const target of targets) closeTarget(target);
  console.table(rows);
  console.log(
    `medians of ${REQUESTS} requests each, after ${WARMUP} not counted; one request in flight at a time`,
  );
} finally {
  await runtime.dispose();
  await bundle.remove();
  upstream.close();
}
