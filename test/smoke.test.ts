import { describe, expect, it } from "vitest";
import { chat, gateway, seedTenant } from "./helpers";

describe("smoke", () => {
  it("answers /healthz", async () => {
    const res = await gateway("/healthz");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
  });
  it("proxies a chat completion", async () => {
    const tenant = await seedTenant();
    const res = await chat(tenant);
    expect(res.status).toBe(200);
    const body = await res.json<any>();
    expect(body.object).toBe("chat.completion");
  });
});
