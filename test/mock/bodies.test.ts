// The cues for memory and robustness checks, on both model routes: raw_stream (+ raw_stream_end),
// huge_line_bytes, huge_body_bytes (+ with_length), gzip_bomb_bytes and stall_body_after_bytes. The huge
// ones must cost the mock about one 64 KiB piece however large they are, a paused reader included.

import zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import { expectBytes, MiB, newRid, ROUTES, rssGrowth, sleep, useMockUpstream, waitFor } from "./client";

const mock = useMockUpstream();

/** RSS growth while the reader is paused (onPaused) and over the whole request. */
async function memoryWhile(request: (onPaused: () => Promise<void>) => Promise<void>) {
  let paused = NaN;
  const whole = await rssGrowth(() =>
    request(async () => {
      const before = process.memoryUsage().rss;
      await sleep(300);
      paused = process.memoryUsage().rss - before;
    }),
  );
  return { paused, whole };
}

describe("raw_stream", () => {
  const text = 'data: {"a":"héllo 🙂"}\n\nevent: odd\r\ndata: x\r\n\r\n: comment\rdata: no end';

  it.each(ROUTES)("%s sends exactly its bytes with stream headers, then ends cleanly", async (path) => {
    const rid = newRid("raw");
    const out = await mock.raw(path, {
      body: { model: "m", stream: true, mock: { raw_stream: text } },
      headers: { "x-request-id": rid },
    });
    expect([out.status, out.headers["content-type"], out.headers["cache-control"]]).toEqual([
      200,
      "text/event-stream",
      "no-cache",
    ]);
    expect(out.ended && !out.error).toBe(true);
    expectBytes(out.bytes, text);
    expect(await waitFor(async () => (await mock.stats()).completed.includes(rid))).toBe(true);
  });

  it("takes the content_type and headers cues", async () => {
    const typed = await mock.chat({
      model: "m",
      stream: true,
      mock: { raw_stream: "data: 1\n\n", content_type: "text/plain", headers: { "x-a": "b" } },
    });
    expect([typed.headers["content-type"], typed.headers["x-a"], typed.bytes.toString()]).toEqual([
      "text/plain",
      "b",
      "data: 1\n\n",
    ]);
  });

  it("empty sends an empty stream", async () => {
    const empty = await mock.chat({ model: "m", stream: true, mock: { raw_stream: "" } });
    expect([empty.status, empty.bytes.length, empty.ended]).toEqual([200, 0, true]);
  });

  it("is ignored without stream: true", async () => {
    const notStreaming = await mock.chat({ model: "m", mock: { raw_stream: "data: 1\n\n" } });
    expect(JSON.parse(notStreaming.bytes.toString()).object).toBe("chat.completion");
  });

  const events = Array.from({ length: 5 }, (_, i) => `data: {"i":${i},"s":"ü"}\n\n`).join("");

  it.each(ROUTES)('%s: split: "bytes" and chunk_size cut it in small reads', async (path) => {
    const split = await mock.raw(path, {
      body: { model: "m", stream: true, mock: { raw_stream: events, split: "bytes", chunk_size: 4 } },
    });
    expect(split.ended).toBe(true);
    expectBytes(split.bytes, events);
    expect(split.reads).toBeGreaterThan(events.length / 4 / 3);
  });

  it("interval_ms paces it event by event", async () => {
    const t0 = Date.now();
    const paced = await mock.chat({
      model: "m",
      stream: true,
      mock: { raw_stream: events, interval_ms: 40 },
    });
    const elapsed = Date.now() - t0;
    expect(paced.ended).toBe(true);
    expectBytes(paced.bytes, events);
    // 5 events, 4 gaps of 40 ms
    expect(elapsed).toBeGreaterThanOrEqual(150);
    expect(paced.reads).toBeGreaterThanOrEqual(4);
  });
});

describe("raw_stream_end", () => {
  const text = `data: ${"r".repeat(200 * 1024)}\n\ndata: tail`;

  it.each(ROUTES.flatMap((path) => [undefined, "bytes"].map((split) => ({ path, split }))))(
    '"reset" on $path (split $split) cuts once every byte was flushed, counted as reset',
    async ({ path, split }) => {
      const rid = newRid("raw-reset");
      const cues = {
        raw_stream: text,
        raw_stream_end: "reset",
        ...(split ? { split, chunk_size: 64 * 1024 } : {}),
      };
      const out = await mock.raw(path, {
        body: { model: "m", stream: true, mock: cues },
        headers: { "x-request-id": rid },
      });
      expect(out.status).toBe(200);
      expect(out.error).toBeTruthy();
      expect(out.ended).toBe(false);
      expectBytes(out.bytes, text);
      expect(await waitFor(async () => (await mock.stats()).reset.includes(rid))).toBe(true);
    },
  );

  it.each(ROUTES)('"stall" on %s keeps it open until the client aborts, counted as aborted', async (path) => {
    const rid = newRid("raw-stall");
    const stalled = await mock.raw(path, {
      body: { model: "m", stream: true, mock: { raw_stream: "data: 1\n\n", raw_stream_end: "stall" } },
      headers: { "x-request-id": rid },
      abortAfterMs: 300,
    });
    expect([stalled.status, stalled.bytes.toString(), stalled.error]).toEqual([
      200,
      "data: 1\n\n",
      "client-aborted",
    ]);
    expect(await waitFor(async () => (await mock.stats()).aborted.includes(rid))).toBe(true);
  });

  it("an unknown value ends cleanly", async () => {
    const bogus = await mock.chat({
      model: "m",
      stream: true,
      mock: { raw_stream: "data: 1\n\n", raw_stream_end: "bogus" },
    });
    expect(bogus.ended && !bogus.error).toBe(true);
  });
});

describe("huge_line_bytes", () => {
  describe.each(ROUTES)("on %s", (path) => {
    it.each([0, 1, 64 * 1024, 5 * MiB + 123])(
      "%i: `data: ` then that many x, no line ending, a clean end",
      async (n) => {
        const out = await mock.counted(
          path,
          { model: "m", stream: true, mock: { huge_line_bytes: n } },
          { fill: { char: "x", from: 6, to: 6 + n } },
        );
        expect([out.status, out.headers["content-type"], out.ended, out.error]).toEqual([
          200,
          "text/event-stream",
          true,
          null,
        ]);
        expect([out.length, out.badFill]).toEqual([6 + n, 0]);
        expect(out.head.subarray(0, 6).toString()).toBe("data: ");
      },
    );
  });

  it("200 MiB: memory stays flat, also while the reader is paused", async () => {
    const n = 200 * MiB;
    let out;
    const growth = await memoryWhile(async (onPaused) => {
      out = await mock.counted(
        "/v1/chat/completions",
        { model: "m", stream: true, mock: { huge_line_bytes: n } },
        { fill: { char: "x", from: 6, to: 6 + n }, pauseMs: 400, onPaused },
      );
    });
    expect([out!.status, out!.ended, out!.length, out!.badFill]).toEqual([200, true, 6 + n, 0]);
    expect(growth.paused).toBeLessThan(32 * MiB);
    expect(growth.whole).toBeLessThan(96 * MiB);
  });
});

describe("huge_body_bytes", () => {
  const cases = ROUTES.flatMap((path) =>
    [10, 37, 3 * MiB + 7].flatMap((n) => [false, true].map((withLength) => ({ path, n, withLength }))),
  );

  it.each(cases)(
    "$n on $path (with_length $withLength): a JSON pad of exactly that size",
    async ({ path, n, withLength }) => {
      const body = { model: "m", mock: { huge_body_bytes: n, ...(withLength ? { with_length: true } : {}) } };
      const out = await mock.counted(path, body, { fill: { char: "x", from: 8, to: n - 2 } });
      expect([out.status, out.headers["content-type"], out.ended, out.error]).toEqual([
        200,
        "application/json",
        true,
        null,
      ]);
      expect([out.length, out.badFill]).toEqual([n, 0]);
      expect([out.headers["content-length"], out.headers["transfer-encoding"]]).toEqual(
        withLength ? [String(n), undefined] : [undefined, "chunked"],
      );
      expect([out.head.subarray(0, 8).toString(), out.tail.subarray(-2).toString()]).toEqual([
        '{"pad":"',
        '"}',
      ]);
      if (n < 100) expect(JSON.parse(out.head.toString()).pad).toBe("x".repeat(n - 10));
    },
  );

  it("below 10 bytes gives the empty pad", async () => {
    const tiny = await mock.counted("/v1/chat/completions", {
      model: "m",
      mock: { huge_body_bytes: 3, with_length: true },
    });
    expect([tiny.length, tiny.head.toString()]).toEqual([10, '{"pad":""}']);
  });

  it("is ignored by a streaming request", async () => {
    const streaming = await mock.counted("/v1/chat/completions", {
      model: "m",
      stream: true,
      mock: { huge_body_bytes: 100 },
    });
    expect(streaming.headers["content-type"]).toBe("text/event-stream");
  });

  it.each([false, true])(
    "200 MiB (with_length %s): memory stays flat, also while the reader is paused",
    async (withLength) => {
      const n = 200 * MiB;
      let out;
      const growth = await memoryWhile(async (onPaused) => {
        out = await mock.counted(
          "/v1/chat/completions",
          { model: "m", mock: { huge_body_bytes: n, with_length: withLength } },
          { fill: { char: "x", from: 8, to: n - 2 }, pauseMs: 400, onPaused },
        );
      });
      expect([out!.status, out!.ended, out!.length, out!.badFill]).toEqual([200, true, n, 0]);
      expect(growth.paused).toBeLessThan(32 * MiB);
      expect(growth.whole).toBeLessThan(96 * MiB);
    },
  );
});

describe("gzip_bomb_bytes", () => {
  const cases = ROUTES.flatMap((path) => [10, 25, 50 * MiB + 3].map((n) => ({ path, n })));

  it.each(cases)("$n on $path: gzip inflating to a JSON pad of exactly that size", async ({ path, n }) => {
    const compressed = await mock.counted(path, { model: "m", mock: { gzip_bomb_bytes: n } });
    expect([
      compressed.status,
      compressed.headers["content-type"],
      compressed.headers["content-encoding"],
      compressed.ended,
    ]).toEqual([200, "application/json", "gzip", true]);
    // content-length is the compressed size
    expect(compressed.headers["content-length"]).toBe(String(compressed.length));
    const inflated = await mock.counted(
      path,
      { model: "m", mock: { gzip_bomb_bytes: n } },
      { decode: zlib.createGunzip(), fill: { char: "0", from: 8, to: n - 2 } },
    );
    expect([inflated.ended, inflated.error, inflated.length, inflated.badFill]).toEqual([true, null, n, 0]);
    expect([inflated.head.subarray(0, 8).toString(), inflated.tail.subarray(-2).toString()]).toEqual([
      '{"pad":"',
      '"}',
    ]);
    if (n > MiB) expect(compressed.length).toBeLessThan(n / 500);
  });

  it("fetch inflates it to the JSON", async () => {
    const viaFetch = await fetch(`${mock.baseUrl}/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "m", mock: { gzip_bomb_bytes: 30 } }),
    });
    expect(await viaFetch.json()).toEqual({ pad: "0".repeat(20) });
  });

  it("200 MiB: compressed once (memory stays flat), cached for the next request", async () => {
    const n = 200 * MiB + 1;
    const times: number[] = [];
    const growth = await rssGrowth(async () => {
      for (let i = 0; i < 2; i++) {
        const t0 = Date.now();
        const out = await mock.counted("/v1/responses", { model: "m", mock: { gzip_bomb_bytes: n } });
        times.push(Date.now() - t0);
        expect([out.status, out.ended]).toEqual([200, true]);
        expect(out.length).toBeLessThan(400 * 1024);
      }
    });
    const [first = 0, second = 0] = times;
    expect(second < 100 && second < first, `second request from the cache: ${times} ms`).toBe(true);
    expect(growth).toBeLessThan(96 * MiB);
  });
});

describe("stall_body_after_bytes", () => {
  const cases = (
    [
      ["/v1/chat/completions", '{"id":"chatcmpl-mock-'],
      ["/v1/responses", '{"id":"resp_mock_'],
    ] as const
  ).flatMap(([path, prefix]) => [0, 20, 1e9].map((n) => ({ path, prefix, n })));

  it.each(cases)(
    "$n on $path: the whole body's content-length, at most that many bytes, then silence",
    async ({ path, prefix, n }) => {
      const rid = newRid("stall-body");
      const t0 = Date.now();
      const out = await mock.raw(path, {
        body: { model: "m", mock: { stall_body_after_bytes: n } },
        headers: { "x-request-id": rid },
        abortAfterMs: 300,
      });
      expect([out.status, out.headers["content-type"], out.error, out.ended]).toEqual([
        200,
        "application/json",
        "client-aborted",
        false,
      ]);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      const length = Number(out.headers["content-length"]);
      expect(length).toBeGreaterThan(100);
      expect(out.bytes.length).toBe(Math.min(n, length - 1));
      const sent = out.bytes.toString();
      expect(prefix.startsWith(sent) || sent.startsWith(prefix), sent.slice(0, 40)).toBe(true);
      expect(await waitFor(async () => (await mock.stats()).aborted.includes(rid))).toBe(true);
    },
  );

  it.each(ROUTES)("20 with chunked: true on %s: chunked, 20 bytes, then silence", async (path) => {
    const out = await mock.raw(path, {
      body: { model: "m", mock: { stall_body_after_bytes: 20, chunked: true } },
      abortAfterMs: 300,
    });
    expect([out.status, out.error, out.ended, out.bytes.length]).toEqual([200, "client-aborted", false, 20]);
    expect([out.headers["transfer-encoding"], out.headers["content-length"]]).toEqual(["chunked", undefined]);
  });
});
