import http from "node:http";
import { performance } from "node:perf_hooks";

/**
 * Something to send requests to. Every target gets the same client: node:http with its own
 * keep-alive pool, so connection setup is paid once and never measured.
 *
 * @example
 * const direct = createTarget("direct", { port: upstream.port });
 * const baseline = createTarget("baseline", { port: runtime.port, host: BASELINE_HOST });
 *
 * @param {string} name
 * @param {{ port: number, host?: string }} address `host` is sent as the Host header
 */
export function createTarget(name, { port, host }) {
  return { name, port, host, agent: new http.Agent({ keepAlive: true, maxSockets: 64 }) };
}

export function closeTarget(target) {
  target.agent.destroy();
}

/**
 * A ready-to-send chat completion request: body bytes and headers built once, so the client does
 * the same small amount of work for every request and every target.
 *
 * @param {{ apiKey: string, model: string, stream?: boolean, events?: number }} request `events` of a stream, the mock's cue
 */
export function chatRequest({ apiKey, model, stream = false, events }) {
  const body = { model, messages: [{ role: "user", content: "Say hello." }] };
  if (stream) Object.assign(body, { stream: true, mock: { events } });
  const bytes = Buffer.from(JSON.stringify(body));
  return {
    body,
    bytes,
    headers: {
      authorization: `Bearer ${apiKey}`,
      "content-type": "application/json",
      "content-length": String(bytes.length),
    },
  };
}

/**
 * POSTs `request` to the target's chat completions route and drains the answer. Times are from
 * `startedAt`, on this process's `performance.now()` clock.
 * @returns {Promise<{status: number | undefined, startedAt: number, headersMs: number, firstByteMs: number, totalMs: number, bytes: number}>}
 */
export function send(target, request) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const headers = target.host ? { ...request.headers, host: target.host } : request.headers;
    const req = http.request(
      {
        host: "127.0.0.1",
        port: target.port,
        path: "/v1/chat/completions",
        method: "POST",
        headers,
        agent: target.agent,
      },
      (res) => {
        const headersMs = performance.now() - started;
        let firstByteMs = NaN;
        let bytes = 0;
        res.on("data", (chunk) => {
          if (bytes === 0) firstByteMs = performance.now() - started;
          bytes += chunk.length;
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode,
            startedAt: started,
            headersMs,
            firstByteMs,
            totalMs: performance.now() - started,
            bytes,
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(request.bytes);
  });
}

/** Throws unless the answer is a 200: a benchmark of error responses would measure nothing useful. */
function expectOk(target, result) {
  if (result.status !== 200) throw new Error(`${target.name} answered ${result.status}`);
}

/**
 * Requests through `concurrency` connections for `durationMs`, each connection sending its next
 * request as soon as its previous answer is in (a closed loop, so the target's own speed sets the
 * rate). Time-boxed rather than counted, so every target is exposed to the same stretch of drift.
 * @returns {Promise<{latenciesMs: number[], elapsedMs: number}>}
 */
export async function closedLoop(target, request, { durationMs, concurrency }) {
  const latenciesMs = [];
  const started = performance.now();
  const deadline = started + durationMs;
  async function connection() {
    while (performance.now() < deadline) {
      const result = await send(target, request);
      expectOk(target, result);
      latenciesMs.push(result.totalMs);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, connection));
  return { latenciesMs, elapsedMs: performance.now() - started };
}

/**
 * Streams one after another for `durationMs` (at least `minCount`); checks each arrives whole
 * (`expectedBytes`).
 * @returns {Promise<{firstByteMs: number[], totalMs: number[]}>}
 */
export async function streams(target, request, { durationMs, minCount, expectedBytes }) {
  const firstByteMs = [];
  const totalMs = [];
  const deadline = performance.now() + durationMs;
  while (totalMs.length < minCount || performance.now() < deadline) {
    const result = await send(target, request);
    expectOk(target, result);
    if (result.bytes !== expectedBytes) {
      throw new Error(`${target.name} streamed ${result.bytes} bytes, expected ${expectedBytes}`);
    }
    firstByteMs.push(result.firstByteMs);
    totalMs.push(result.totalMs);
  }
  return { firstByteMs, totalMs };
}
