import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { chat, gateway, unique } from "./helpers";

// A key written by hand and its SHA-256 hex computed outside the code under test
// (`printf %s 'sk-gw-N4bT…' | sha256sum`), not with the gateway's own hashKey: a hash that drifts
// from plain SHA-256 hex (a byte without its leading zero, upper case) would still agree with itself.
// Two of its bytes are below 0x10 (`06`, `0b`), so a hex without zero-padding differs.
const HAND_KEY = "sk-gw-N4bT8qLz2XcV6mRk0PwY3sJh9DfG5aUe7HiO1nKt";
const HAND_KEY_SHA256 = "41ca426c92611c63d51a06b069290bde3783331263e91196a4ab6d33ce6911f2";

describe("API keys as the README's KV layout stores them", () => {
  it("accepts a key stored by hand under the SHA-256 hex of the whole key", async () => {
    expect(HAND_KEY).toMatch(/^sk-gw-[0-9A-Za-z]{40}$/);
    expect(HAND_KEY_SHA256).toMatch(/^[0-9a-f]{64}$/);
    expect(HAND_KEY_SHA256.match(/../g)!.some((byte) => byte < "10")).toBe(true);

    const org = unique("org");
    const user = unique("user");
    const group = unique("group");
    const model = unique("model");
    const keyId = unique("key");
    // Exactly the README's layout, written by hand as `wrangler kv key put` would.
    await env.GATEWAY_KV.put(`model:${model}`, "{}");
    await env.GATEWAY_KV.put(`group:${group}`, JSON.stringify({ models: [model] }));
    await env.GATEWAY_KV.put(`org:${org}`, JSON.stringify({ requests_per_minute: 100 }));
    await env.GATEWAY_KV.put(
      `key:${HAND_KEY_SHA256}`,
      JSON.stringify({ id: keyId, org, user, group, created_at: new Date().toISOString() }),
    );
    await env.GATEWAY_KV.put(`keyid:${keyId}`, JSON.stringify({ hash: HAND_KEY_SHA256 }));

    const response = await chat({ key: HAND_KEY, keyId, org, user, group, model });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ object: "chat.completion" });

    const listed = await gateway("/v1/models", { headers: { authorization: `Bearer ${HAND_KEY}` } });
    expect(listed.status).toBe(200);
    expect((await listed.json<{ data: Array<{ id: string }> }>()).data.map((m) => m.id)).toEqual([model]);
  });
});
