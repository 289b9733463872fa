// What the mock's own tests use to talk to it: a node:http client that keeps everything a response did
// (status, headers, bytes, reads, how it ended), one that only counts bodies too big to keep, and a
// mock upstream started for the file's tests.

import http from "node:http";
import type { Transform } from "node:stream";
import { afterAll, beforeAll, expect } from "vitest";
import { startMockUpstream, type MockUpstream } from "./server.mjs";

export const MiB = 1024 * 1024;

/** Each model route, for cues that must behave the same on both. */
export const ROUTES = ["/v1/chat/completions", "/v1/responses"] as const;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let ridCounter = 0;
/** A fresh x-request-id, to find this request in /__mock/stats and /__mock/requests. */
export const newRid = (tag: string) => `rid-${tag}-${++ridCounter}`;

/** Whether `predicate` came true within `timeoutMs`, polling every 20 ms. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await sleep(20);
  }
  return false;
}

/** Largest RSS growth of this process (mock and client share it) while `during` runs. */
export async function rssGrowth(during: () => Promise<void>) {
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  try {
    await during();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, process.memoryUsage().rss) - before;
}

/** Asserts equal bytes, showing where they part rather than megabytes of both. */
export function expectBytes(actual: Buffer, expected: Buffer | string) {
  const want = typeof expected === "string" ? Buffer.from(expected, "utf8") : expected;
  if (actual.equals(want)) return;
  let at = 0;
  while (at < actual.length && at < want.length && actual[at] === want[at]) at++;
  const around = (b: Buffer) => ({ length: b.length, at, next: b.subarray(at, at + 40).toString("latin1") });
  expect(around(actual)).toEqual(around(want));
}

/** How the client saw one response; `error` is how it ended badly, "client-aborted" when we left. */
export interface RawResult {
  status: number | null;
  headers: http.IncomingHttpHeaders;
  bytes: Buffer;
  reads: number;
  error: string | null;
  ended: boolean;
}

export interface RawOptions {
  method?: string;
  body?: unknown;
  headers?: Record<string, string>;
  abortAfterMs?: number;
  /** Pause the reader this long once the response starts: backpressure. */
  pauseMs?: number;
}

/** Like RawResult, for a body counted rather than kept (see MockClient.counted). */
export interface CountedResult {
  status: number | null;
  headers: http.IncomingHttpHeaders;
  length: number;
  head: Buffer;
  tail: Buffer;
  badFill: number;
  reads: number;
  error: string | null;
  ended: boolean;
}

export interface CountedOptions {
  /** Count the bytes in [from, to) that are not `char`. */
  fill?: { char: string; from: number; to: number };
  pauseMs?: number;
  /** Runs while the reader is paused (after the first read), to watch backpressure. */
  onPaused?: () => Promise<void>;
  abortAfterMs?: number;
  /** A transform (gunzip) the body goes through first. */
  decode?: Transform;
}

const errorCode = (err: NodeJS.ErrnoException) => err.code ?? err.message;

/**
 * The one way a client request here ends: `settle` runs once, whether the response finished
 * (the caller calls the returned function), the request failed, or `abortAfterMs` ran out.
 */
function settleOnce(
  req: http.ClientRequest,
  out: { error: string | null },
  abortAfterMs: number | undefined,
  settle: () => void,
): () => void {
  let settled = false;
  const finish = () => {
    if (settled) return;
    settled = true;
    settle();
  };
  if (abortAfterMs !== undefined) {
    setTimeout(() => {
      out.error ??= "client-aborted";
      req.destroy();
      finish();
    }, abortAfterMs);
  }
  req.on("error", (err) => {
    out.error ??= errorCode(err);
    finish();
  });
  return finish;
}

/** One request on a fresh connection, collecting status, headers, bytes, reads and how it ended. */
function rawRequest(
  url: string,
  { method = "POST", body, headers = {}, abortAfterMs, pauseMs }: RawOptions = {},
): Promise<RawResult> {
  return new Promise((resolve) => {
    const out: RawResult = {
      status: null,
      headers: {},
      bytes: Buffer.alloc(0),
      reads: 0,
      error: null,
      ended: false,
    };
    const chunks: Buffer[] = [];
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    const req = http.request(url, {
      method,
      agent: false,
      headers: { ...(payload !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    });
    const finish = settleOnce(req, out, abortAfterMs, () => {
      out.bytes = Buffer.concat(chunks);
      resolve(out);
    });
    req.on("response", (res) => {
      out.status = res.statusCode ?? null;
      out.headers = res.headers;
      if (pauseMs) {
        res.pause();
        setTimeout(() => res.resume(), pauseMs);
      }
      res.on("data", (c: Buffer) => {
        out.reads++;
        chunks.push(c);
      });
      res.on("end", () => {
        out.ended = true;
        finish();
      });
      res.on("error", (err) => {
        out.error ??= errorCode(err);
        finish();
      });
      res.on("close", () => {
        if (!out.ended) out.error ??= "closed-before-end";
        finish();
      });
    });
    req.end(payload);
  });
}

const FILL_CHECK_BYTES = 1024 * 1024;
const fillBuffers = new Map<string, Buffer>();

/** Bytes in `piece` that are not `char`. */
function notChar(piece: Buffer, char: string) {
  let fill = fillBuffers.get(char);
  if (!fill) fillBuffers.set(char, (fill = Buffer.alloc(FILL_CHECK_BYTES, char)));
  let bad = 0;
  for (let i = 0; i < piece.length; i += fill.length) {
    const part = piece.subarray(i, i + fill.length);
    if (part.equals(fill.subarray(0, part.length))) continue;
    for (const b of part) if (b !== fill[0]) bad++;
  }
  return bad;
}

/**
 * Like rawRequest, for bodies too big to keep: counts the bytes, keeps the first and last 64, and
 * counts bytes in [fill.from, fill.to) that are not fill.char.
 */
function countedRequest(
  url: string,
  body: unknown,
  { fill, pauseMs, onPaused, abortAfterMs, decode }: CountedOptions = {},
): Promise<CountedResult> {
  return new Promise((resolve) => {
    const out: CountedResult = {
      status: null,
      headers: {},
      length: 0,
      head: Buffer.alloc(0),
      tail: Buffer.alloc(0),
      badFill: 0,
      reads: 0,
      error: null,
      ended: false,
    };
    const req = http.request(url, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json" },
    });
    const finish = settleOnce(req, out, abortAfterMs, () => resolve(out));
    req.on("response", (res) => {
      out.status = res.statusCode ?? null;
      out.headers = res.headers;
      const source = decode ? res.pipe(decode) : res;
      let paused = false;
      source.on("data", (chunk: Buffer) => {
        const offset = out.length;
        out.reads++;
        out.length += chunk.length;
        if (out.head.length < 64) out.head = Buffer.concat([out.head, chunk]).subarray(0, 64);
        out.tail = Buffer.concat([out.tail, chunk.subarray(-64)]).subarray(-64);
        if (fill) {
          const from = Math.max(fill.from, offset);
          const to = Math.min(fill.to, out.length);
          if (to > from) out.badFill += notChar(chunk.subarray(from - offset, to - offset), fill.char);
        }
        if (pauseMs && !paused) {
          paused = true;
          source.pause();
          void Promise.all([sleep(pauseMs), onPaused?.()]).then(() => source.resume());
        }
      });
      source.on("end", () => {
        out.ended = true;
        finish();
      });
      source.on("error", (err: NodeJS.ErrnoException) => {
        out.error ??= errorCode(err);
        finish();
      });
      res.on("close", () => {
        if (!res.complete) out.error ??= "closed-before-end";
        if (!decode) finish();
      });
    });
    req.end(JSON.stringify(body));
  });
}

export interface MockStats {
  open_connections: number;
  aborted: (string | null)[];
  completed: (string | null)[];
  reset: (string | null)[];
}

/** A mock upstream for one test file, and the ways its tests talk to it. */
export interface MockClient {
  readonly upstream: MockUpstream;
  readonly url: string;
  readonly baseUrl: string;
  raw(path: string, options?: RawOptions): Promise<RawResult>;
  /** POST /v1/chat/completions with this body. */
  chat(body: unknown, options?: Omit<RawOptions, "body">): Promise<RawResult>;
  /** POST /v1/responses with this body. */
  respond(body: unknown, options?: Omit<RawOptions, "body">): Promise<RawResult>;
  counted(path: string, body: unknown, options?: CountedOptions): Promise<CountedResult>;
  stats(): Promise<MockStats>;
}

/** Starts a mock upstream before the file's tests and closes it after them. */
export function useMockUpstream(): MockClient {
  let started: MockUpstream | undefined;
  beforeAll(async () => {
    started = await startMockUpstream();
  });
  afterAll(async () => {
    await started?.close();
  });
  const upstream = () => {
    if (!started) throw new Error("the mock upstream starts in beforeAll");
    return started;
  };
  return {
    get upstream() {
      return upstream();
    },
    get url() {
      return upstream().url;
    },
    get baseUrl() {
      return upstream().baseUrl;
    },
    raw: (path, options) => rawRequest(`${upstream().url}${path}`, options),
    chat: (body, options) => rawRequest(`${upstream().url}/v1/chat/completions`, { ...options, body }),
    respond: (body, options) => rawRequest(`${upstream().url}/v1/responses`, { ...options, body }),
    counted: (path, body, options) => countedRequest(`${upstream().url}${path}`, body, options),
    stats: async () => (await fetch(`${upstream().url}/__mock/stats`)).json() as Promise<MockStats>,
  };
}
