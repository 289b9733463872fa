// startMockUpstream itself: what it returns, its idle connections, and how it closes.

import http from "node:http";
import { describe, expect, it } from "vitest";
import { startMockUpstream } from "./server.mjs";
import { sleep, useMockUpstream } from "./client";

const mock = useMockUpstream();

describe("startMockUpstream", () => {
  it("gives the port, the url and the /v1 base url, and close()", () => {
    const { port, url, baseUrl, close } = mock.upstream;
    expect(Number.isInteger(port) && port > 0).toBe(true);
    expect(url).toBe(`http://127.0.0.1:${port}`);
    expect(baseUrl).toBe(`${url}/v1`);
    expect(typeof close).toBe("function");
  });

  it("keeps an idle keep-alive socket for 6.5 s (keepAliveTimeout = 0)", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = () =>
      new Promise<boolean | undefined>((resolve, reject) => {
        const req = http.get(`${mock.url}/v1/models`, { agent }, (res) =>
          res.resume().on("end", () => resolve(req.reusedSocket)),
        );
        req.on("error", reject);
      });
    expect(await get()).toBe(false); // the first request opens a socket
    await sleep(6500);
    expect(await get()).toBe(true); // the second reuses the idle one
    agent.destroy();
  });

  it("close() is prompt with a hanging request, a stalled stream and idle keep-alive sockets", async () => {
    const m2 = await startMockUpstream();
    const agent = new http.Agent({ keepAlive: true });
    await new Promise((resolve) =>
      http.get(`${m2.url}/v1/models`, { agent }, (res) => res.resume().on("end", resolve)),
    );
    const hanging = new Promise<string>((resolve) => {
      const req = http.request(`${m2.baseUrl}/chat/completions`, { method: "POST", agent: false });
      req.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      req.on("response", () => resolve("got a response"));
      req.end(JSON.stringify({ model: "m", mock: { hang: true } }));
    });
    const stalled = new Promise<string>((resolve) => {
      const req = http.request(`${m2.baseUrl}/chat/completions`, { method: "POST", agent: false });
      req.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      req.on("response", (res) => {
        res.resume();
        res.on("error", (e: NodeJS.ErrnoException) => resolve(`res error: ${e.code ?? e.message}`));
        res.on("end", () => resolve("ended"));
      });
      req.end(JSON.stringify({ model: "m", stream: true, mock: { stall_after_events: 1 } }));
    });
    await sleep(100);
    const t0 = Date.now();
    await m2.close();
    expect(Date.now() - t0).toBeLessThan(500);
    expect(await hanging).not.toBe("got a response");
    expect(await stalled).not.toBe("ended");
    agent.destroy();
    await m2.close(); // idempotent
  });
});
