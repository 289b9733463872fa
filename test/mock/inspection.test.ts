// GET /v1/models, the 404 for anything else, and the inspection routes /__mock/requests and
// /__mock/stats.

import http from "node:http";
import { describe, expect, it } from "vitest";
import { newRid, sleep, useMockUpstream } from "./client";

const mock = useMockUpstream();

interface RequestRecord {
  method: string;
  path: string;
  url: string;
  headers: Record<string, string>;
  body: string;
  request_id: string | null;
  time: number;
}

const requests = async (query = ""): Promise<RequestRecord[]> =>
  (await fetch(`${mock.url}/__mock/requests${query}`)).json() as Promise<RequestRecord[]>;
const clearRequests = () => fetch(`${mock.url}/__mock/requests`, { method: "DELETE" });

describe("routes", () => {
  it("plays named upstreams under /u/<name>/v1, each with its own cues over the shared ones", async () => {
    const rid = newRid("named");
    const cues = { reply: "shared", upstreams: { a: { status: 503, body: '{"a":1}' }, b: { reply: "own" } } };
    const post = (path: string) =>
      fetch(`${mock.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": rid },
        body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], mock: cues }),
      });
    const a = await post("/u/a/v1/chat/completions");
    expect(a.status).toBe(503);
    expect(await a.text()).toBe('{"a":1}');
    const b = await (await post("/u/b/v1/chat/completions")).json();
    expect(b.choices[0].message.content).toBe("own");
    const c = await (await post("/u/c/v1/chat/completions")).json();
    expect(c.choices[0].message.content).toBe("shared");
    // The plain route takes the cues as they are: `upstreams` is no cue there.
    const plain = await (await post("/v1/chat/completions")).json();
    expect(plain.choices[0].message.content).toBe("shared");
    expect((await requests(`?request_id=${rid}`)).map((r) => r.path)).toEqual([
      "/u/a/v1/chat/completions",
      "/u/b/v1/chat/completions",
      "/u/c/v1/chat/completions",
      "/v1/chat/completions",
    ]);
  });

  it("GET /v1/models lists the one mock model", async () => {
    const j = await (await fetch(`${mock.baseUrl}/models`)).json();
    expect(j.object).toBe("list");
    expect(j.data.map((m: { id: string }) => m.id)).toEqual(["mock-model"]);
  });

  it.each([
    ["GET", "/nope"],
    ["GET", "/v1/chat/completions"],
    ["POST", "/v1/models"],
  ])("%s %s is no route: a 404 envelope", async (method, path) => {
    const res = await fetch(`${mock.url}${path}`, { method });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({
      error: { message: "mock: no route", type: "invalid_request_error", param: null, code: null },
    });
  });
});

describe("/__mock/requests", () => {
  it("DELETE answers 204 with no body and empties the list", async () => {
    const del = await clearRequests();
    expect(del.status).toBe(204);
    expect(await del.text()).toBe("");
    expect(await requests()).toEqual([]);
  });

  it("GET lists each request as received, ?request_id= filters them", async () => {
    await clearRequests();
    const rid = newRid("rec");
    const bodyText = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], extra: 1 });
    await fetch(`${mock.baseUrl}/chat/completions`, {
      method: "POST",
      headers: { "X-Request-Id": rid, Authorization: "Bearer up-key", "content-type": "application/json" },
      body: bodyText,
    }).then((r) => r.text());
    await fetch(`${mock.baseUrl}/chat/completions`, { method: "POST", body: "{}" }).then((r) => r.text());
    const all = await requests();
    expect(all).toHaveLength(2);
    expect(all[1]!.request_id).toBeNull();
    const mine = await requests(`?request_id=${rid}`);
    expect(mine).toHaveLength(1);
    const r = mine[0]!;
    expect([r.method, r.path, r.body, r.request_id]).toEqual(["POST", "/v1/chat/completions", bodyText, rid]);
    expect(r.headers.authorization).toBe("Bearer up-key");
    expect(typeof r.time === "number" && Math.abs(r.time - Date.now()) < 5000).toBe(true);
  });

  it("keeps at most the last 1000", async () => {
    await clearRequests();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const get = (i: number) =>
      new Promise((resolve, reject) => {
        http
          .get(`${mock.url}/v1/models`, { agent, headers: { "x-request-id": `bulk-${i}` } }, (res) => {
            res.resume();
            res.on("end", resolve);
          })
          .on("error", reject);
      });
    for (let i = 0; i < 1010; i += 50) {
      await Promise.all(Array.from({ length: Math.min(50, 1010 - i) }, (_, k) => get(i + k)));
    }
    agent.destroy();
    const all = await requests();
    expect(all).toHaveLength(1000);
    expect(all.some((r) => r.request_id === "bulk-0")).toBe(false);
    await clearRequests();
  });
});

describe("/__mock/stats", () => {
  it("counts a response that finished as completed", async () => {
    const rid = newRid("done");
    await mock.chat({ model: "m" }, { headers: { "x-request-id": rid } });
    const s = await mock.stats();
    expect(s.completed).toContain(rid);
    expect(s.aborted).not.toContain(rid);
  });

  it("open_connections counts the connections open now", async () => {
    const s = await mock.stats();
    expect(Number.isInteger(s.open_connections) && s.open_connections >= 1).toBe(true);
    const hanging = mock.chat({ model: "m", mock: { hang: true } }, { abortAfterMs: 400 });
    await sleep(100);
    expect((await mock.stats()).open_connections).toBeGreaterThanOrEqual(2);
    await hanging;
  });
});
