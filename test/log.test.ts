import { describe, expect, it, vi } from "vitest";
import { LOG_FIELDS } from "./log-fields";
import { LOG_WAIT, captureLogLines, chat, gateway, seedTenant, unique } from "./helpers";

const FIELDS = [...LOG_FIELDS].sort();

const linesFor = captureLogLines();

describe("log line", () => {
  it("writes one line with every documented field for a proxied request", async () => {
    const tenant = await seedTenant();
    const id = unique("log");
    const prompt = `secret prompt ${unique("p")}`;
    const response = await chat(
      tenant,
      { messages: [{ role: "user", content: prompt }] },
      { "x-request-id": id },
    );
    const completion = await response.text();
    // Written once the answer has gone and been metered.
    await vi.waitFor(() => expect(linesFor(id)).toHaveLength(1), LOG_WAIT);
    const lines = linesFor(id);
    const line = lines[0]!;
    expect(Object.keys(line).sort()).toEqual(FIELDS);
    expect(line).toMatchObject({
      request_id: id,
      route: "POST /v1/chat/completions",
      status: 200,
      code: null,
      org: tenant.org,
      user: tenant.user,
      key_id: tenant.keyId,
      model: tenant.model,
      upstream_status: 200,
      stream_outcome: null,
      upstream: "default",
      attempts: 1,
      // The mock's count: three words of prompt, five of reply; the model has no pricing.
      input_tokens: 3,
      output_tokens: 5,
      cached_tokens: 0,
      cost_usd: 0,
      usage_estimated: false,
    });
    expect(line.duration_ms).toEqual(expect.any(Number));
    expect(line.ttfb_ms).toEqual(expect.any(Number));
    const text = JSON.stringify(line);
    expect(text).not.toContain(tenant.key);
    expect(text).not.toContain(prompt);
    expect(text).not.toContain(JSON.parse(completion).choices[0].message.content);
  });

  it("records the error code of a rejected request and nothing of its credentials", async () => {
    const id = unique("log");
    const key = `sk-gw-${unique("unknown")}`;
    await gateway("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "x-request-id": id },
      body: "{}",
    });
    const [line] = linesFor(id);
    expect(line).toMatchObject({ status: 401, code: "unauthorized", org: null, key_id: null });
    // `error` is written for an internal error only: a refusal is not a fault.
    expect(line).not.toHaveProperty("error");
    expect(JSON.stringify(line)).not.toContain(key);
  });

  it("records the route pattern, not a caller's path", async () => {
    const id = unique("log");
    await gateway("/v1/sk-gw-leaked-in-a-path", { headers: { "x-request-id": id } });
    const [line] = linesFor(id);
    expect(line).toMatchObject({ status: 404, code: "not_found" });
    expect(JSON.stringify(line)).not.toContain("leaked");
  });

  it("does not quote an invalid body", async () => {
    const tenant = await seedTenant();
    const id = unique("log");
    await chat(tenant, { messages: "confidential words" }, { "x-request-id": id });
    const [line] = linesFor(id);
    expect(line).toMatchObject({ status: 400, code: "invalid_body" });
    expect(JSON.stringify(line)).not.toContain("confidential");
  });
});

describe("ttfb_ms", () => {
  it("is at least the upstream's delay before a non-streaming body, and within duration_ms", async () => {
    const tenant = await seedTenant();
    const id = unique("ttfb");
    const response = await chat(tenant, { mock: { delay_ms: 300 } }, { "x-request-id": id });
    expect(response.status).toBe(200);
    await response.text();
    await vi.waitFor(() => expect(linesFor(id)).toHaveLength(1), LOG_WAIT);
    const [line] = linesFor(id);
    expect(line!.ttfb_ms).toEqual(expect.any(Number));
    expect(line!.ttfb_ms).toBeGreaterThanOrEqual(300);
    expect(line!.ttfb_ms).toBeLessThanOrEqual(line!.duration_ms as number);
  });

  it("marks a stream's first event, not its end", async () => {
    const tenant = await seedTenant();
    const id = unique("ttfb-stream");
    // The role chunk at once, then 3 content chunks, the stop chunk and [DONE], 100 ms apart: 500 ms.
    const response = await chat(
      tenant,
      { stream: true, mock: { events: 3, interval_ms: 100 } },
      { "x-request-id": id },
    );
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    await vi.waitFor(() => expect(linesFor(id)).toHaveLength(1), LOG_WAIT);
    const [line] = linesFor(id);
    expect(line).toMatchObject({ status: 200, stream_outcome: "complete" });
    expect(line!.duration_ms).toBeGreaterThanOrEqual(400);
    expect(line!.ttfb_ms).toEqual(expect.any(Number));
    expect(line!.ttfb_ms).toBeLessThan(200);
  });
});
