import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWithTenant, type LocalGateway } from "./harness";

// A real TCP client leaving mid-stream: the runtime only notices when a write to it fails, which
// is what the gateway's keep-alives are for. (Inside vitest's pool the client is in-process.)

let gateway: LocalGateway;
let key: string;
beforeAll(async () => {
  ({ gateway, key } = await startWithTenant());
}, 60_000);
afterAll(() => gateway?.close());

async function aborted(requestId: string): Promise<boolean> {
  const stats = await (await fetch(`${gateway.upstream.url}/__mock/stats`)).json();
  return stats.aborted.includes(requestId);
}

/** Opens a stream, waits for its first event, then drops the connection; resolves at the drop. */
function streamAndLeave(requestId: string, mock: Record<string, unknown>): Promise<number> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      mock,
    });
    const req = request(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${key}`,
        "content-type": "application/json",
        "x-request-id": requestId,
      },
    });
    req.on("response", (res) => {
      expect(res.statusCode).toBe(200);
      res.once("data", () => {
        req.destroy();
        resolve(Date.now());
      });
    });
    req.on("error", (error) => {
      if (!req.destroyed) reject(error);
    });
    req.end(body);
  });
}

async function expectUpstreamCancelledWithin(requestId: string, left: number, ms: number) {
  while (!(await aborted(requestId))) {
    expect(Date.now() - left).toBeLessThan(ms);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - left;
}

describe("a client that leaves mid-stream", () => {
  it("cancels an upstream that is still sending within 1 s", async () => {
    const id = `leave-flowing-${Date.now()}`;
    const left = await streamAndLeave(id, { events: 400, interval_ms: 50 });
    expect(await expectUpstreamCancelledWithin(id, left, 1000)).toBeLessThan(1000);
  });

  it("cancels a silent upstream within 1 s", async () => {
    const id = `leave-silent-${Date.now()}`;
    const left = await streamAndLeave(id, { stall_after_events: 1 });
    expect(await expectUpstreamCancelledWithin(id, left, 1000)).toBeLessThan(1000);
  });
});
