// The cues that make POST /v1/chat/completions fail before any stream (hang, reset, delay, status and
// body, content type, redirect, hostile headers), and the mock's own 400s.

import { describe, expect, it } from "vitest";
import { newRid, ROUTES, useMockUpstream, waitFor } from "./client";

const mock = useMockUpstream();

const RATE_LIMITED = '{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}';

describe("waits and cuts", () => {
  it("hang: no response until the client aborts, counted as aborted", async () => {
    const rid = newRid("hang");
    const t0 = Date.now();
    const out = await mock.chat(
      { model: "m", mock: { hang: true } },
      { headers: { "x-request-id": rid }, abortAfterMs: 200 },
    );
    expect(out.status).toBeNull();
    expect(out.error).toBe("client-aborted");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    expect(await waitFor(async () => (await mock.stats()).aborted.includes(rid))).toBe(true);
  });

  it("hang: a fetch given up by AbortSignal.timeout is counted as aborted", async () => {
    const rid = newRid("hangf");
    const err = await fetch(`${mock.baseUrl}/chat/completions`, {
      method: "POST",
      headers: { "x-request-id": rid },
      body: JSON.stringify({ model: "m", mock: { hang: true } }),
      signal: AbortSignal.timeout(200),
    }).then(
      () => null,
      (e: Error) => e,
    );
    expect(["TimeoutError", "AbortError"]).toContain(err?.name);
    expect(await waitFor(async () => (await mock.stats()).aborted.includes(rid))).toBe(true);
  });

  it("reset: true cuts the connection before any response", async () => {
    const out = await mock.chat({ model: "m", mock: { reset: true } });
    expect(out.status).toBeNull();
    expect(["ECONNRESET", "socket hang up"]).toContain(out.error);
  });

  it("reset: true makes fetch reject", async () => {
    const viaFetch = await fetch(`${mock.baseUrl}/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "m", mock: { reset: true } }),
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(viaFetch).toBeInstanceOf(TypeError);
  });

  it("delay_ms: 150 answers after 150 ms", async () => {
    const t0 = Date.now();
    const out = await mock.chat({ model: "m", mock: { delay_ms: 150 } });
    const elapsed = Date.now() - t0;
    expect(out.status).toBe(200);
    expect(elapsed).toBeGreaterThanOrEqual(145);
  });
});

describe("status and body", () => {
  it("status 429 with body, content_type and headers sends exactly those", async () => {
    const out = await mock.chat({
      model: "m",
      mock: {
        status: 429,
        body: RATE_LIMITED,
        content_type: "application/json",
        headers: { "retry-after": "7" },
      },
    });
    expect(out.status).toBe(429);
    expect(out.bytes.toString()).toBe(RATE_LIMITED);
    expect(out.headers["content-type"]).toBe("application/json");
    expect(out.headers["retry-after"]).toBe("7");
  });

  it.each([false, true])(
    "status 503 text/plain takes the place of the answer (stream: %s)",
    async (stream) => {
      const out = await mock.chat({
        model: "m",
        stream,
        mock: { status: 503, body: "upstream overloaded", content_type: "text/plain" },
      });
      expect(out.status).toBe(503);
      expect(out.bytes.toString()).toBe("upstream overloaded");
      expect(out.headers["content-type"]).toBe("text/plain");
    },
  );

  it.each([500, 200])(
    "status %i without body: an empty body, content-length 0, no content type",
    async (status) => {
      const out = await mock.chat({ model: "m", mock: { status } });
      expect(out.status).toBe(status);
      expect(out.bytes.length).toBe(0);
      expect(out.headers["content-length"]).toBe("0");
      expect(out.headers["content-type"]).toBeUndefined();
    },
  );

  it.each([
    ["a long body", 503, "e".repeat(40_000), ["chunked", undefined]],
    ["an empty body", 200, "", ["chunked", undefined]],
    // No body may follow a 204, so Node sends it with neither a length nor chunking.
    ["a 204", 204, "", [undefined, undefined]],
  ] as const)("chunked: true sends %s without a content-length", async (_, status, body, framing) => {
    const out = await mock.chat({ model: "m", mock: { status, body, chunked: true } });
    expect([out.status, out.bytes.toString(), out.ended]).toEqual([status, body, true]);
    expect([out.headers["transfer-encoding"], out.headers["content-length"]]).toEqual(framing);
  });

  it('status 200 with body "": an empty body', async () => {
    const out = await mock.chat({ model: "m", mock: { status: 200, body: "" } });
    expect([out.status, out.bytes.length]).toEqual([200, 0]);
  });

  it.each(ROUTES)("status 700 (outside 100-599) goes out as is on %s", async (path) => {
    const out = await mock.raw(path, { body: { model: "m", mock: { status: 700, body: '{"odd":true}' } } });
    expect([out.status, out.bytes.toString(), out.ended]).toEqual([700, '{"odd":true}', true]);
  });

  it("content_type: null omits the header", async () => {
    const out = await mock.chat({
      model: "m",
      mock: { status: 502, body: "<html>bad gateway</html>", content_type: null },
    });
    expect(out.status).toBe(502);
    expect(out.headers["content-type"]).toBeUndefined();
    expect(out.bytes.toString()).toBe("<html>bad gateway</html>");
  });

  it("redirect: a 302 to that location, with a small body", async () => {
    const out = await mock.chat({ model: "m", mock: { redirect: "http://example.invalid/elsewhere" } });
    expect(out.status).toBe(302);
    expect(out.headers.location).toBe("http://example.invalid/elsewhere");
    expect(out.bytes.length).toBeGreaterThan(0);
    const res = await fetch(`${mock.baseUrl}/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "m", mock: { redirect: "http://example.invalid/x" } }),
      redirect: "manual",
    });
    expect(res.status).toBe(302);
  });
});

describe("headers", () => {
  it.each([false, true])("set_cookie adds set-cookie and hop-by-hop headers (stream: %s)", async (stream) => {
    const out = await mock.chat({ model: "m", stream, mock: { set_cookie: true } });
    expect(out.status).toBe(200);
    expect(out.headers["set-cookie"]).toEqual(["session=secret"]);
    expect(out.headers["keep-alive"]).toBe("timeout=5");
    expect(out.headers.connection).toBe("keep-alive, x-secret-hop");
    expect(out.headers["x-secret-hop"]).toBe("secret");
  });

  it.each([false, true])("headers adds each, its name lowercased (stream: %s)", async (stream) => {
    const out = await mock.chat({
      model: "m",
      stream,
      mock: { headers: { "x-ratelimit-remaining": "3", "X-Upper": "Y" } },
    });
    expect(out.headers["x-ratelimit-remaining"]).toBe("3");
    expect(out.headers["x-upper"]).toBe("Y");
  });
});

describe("the mock's own refusals", () => {
  it.each(["{not json", "[1,2]", "null"])(
    "a body that is not a JSON object (%s) gets a 400 envelope",
    async (body) => {
      const out = await mock.chat(body);
      expect(out.status).toBe(400);
      const j = JSON.parse(out.bytes.toString());
      expect(j.error.type).toBe("invalid_request_error");
      expect([j.error.param, j.error.code]).toEqual([null, null]);
      expect((await fetch(`${mock.url}/v1/models`)).status).toBe(200);
    },
  );
});
