import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import { chat, expectGatewayError, gateway, openai, seedTenant, upstreamRequests, unique } from "./helpers";

describe("routing", () => {
  it("answers 404 not_found for an unknown path", async () => {
    await expectGatewayError(await gateway("/v1/nothing-here"), 404, "invalid_request_error", "not_found");
  });

  it("answers 405 with Allow for a known path and the wrong method", async () => {
    const response = await gateway("/v1/chat/completions");
    expect(response.headers.get("allow")).toBe("POST");
    await expectGatewayError(response, 405, "invalid_request_error", "method_not_allowed");
  });

  it("answers 405 before 401", async () => {
    const response = await gateway("/v1/chat/completions", { method: "PUT", body: "{}" });
    expect(response.status).toBe(405);
  });

  it("answers 405 for POST /healthz", async () => {
    const response = await gateway("/healthz", { method: "POST" });
    expect(response.headers.get("allow")).toBe("GET");
    await expectGatewayError(response, 405, "invalid_request_error", "method_not_allowed");
  });

  it("is a NotFoundError to the openai client", async () => {
    const client = openai("sk-gw-whatever");
    const error = await client.get("/nothing-here").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect((error as APIError).code).toBe("not_found");
  });
});

describe("request ids", () => {
  it("keeps a well-formed x-request-id and forwards it upstream", async () => {
    const tenant = await seedTenant();
    const id = unique("rid");
    const response = await chat(tenant, {}, { "x-request-id": id });
    expect(response.headers.get("x-request-id")).toBe(id);
    const [received] = await upstreamRequests(id);
    expect(received!.headers["x-request-id"]).toBe(id);
  });

  it("replaces a malformed x-request-id", async () => {
    const tenant = await seedTenant();
    const response = await chat(tenant, {}, { "x-request-id": "bad id with spaces" });
    const id = response.headers.get("x-request-id");
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("sets one on errors too", async () => {
    const response = await gateway("/nope");
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("model catalog and access", () => {
  it("answers 400 model_not_found for a model outside the catalog", async () => {
    const tenant = await seedTenant({ grants: ["*"] });
    const id = unique("model");
    const response = await chat(tenant, { model: "unknown-model" }, { "x-request-id": id });
    const message = await expectGatewayError(response, 400, "invalid_request_error", "model_not_found", "model");
    expect(message).toBe("Model 'unknown-model' not found.");
    expect(await upstreamRequests(id)).toEqual([]);
  });

  it("answers model_not_found for a model id too long to be a KV key", async () => {
    const tenant = await seedTenant();
    await expectGatewayError(await chat(tenant, { model: "m".repeat(600) }), 400, "invalid_request_error", "model_not_found", "model");
  });

  it("answers 403 model_access_denied when the group does not grant the model", async () => {
    const other = unique("model");
    const tenant = await seedTenant({ models: { [unique("model")]: {}, [other]: {} }, grants: [] });
    const id = unique("access");
    const response = await chat(tenant, { model: other }, { "x-request-id": id });
    await expectGatewayError(response, 403, "permission_error", "model_access_denied", "model");
    expect(await upstreamRequests(id)).toEqual([]);
  });

  it('lets "*" grant every model', async () => {
    const tenant = await seedTenant({ grants: ["*"] });
    expect((await chat(tenant)).status).toBe(200);
  });

  it("renames the model to upstream_model when the catalog says so", async () => {
    const model = unique("alias");
    const tenant = await seedTenant({ models: { [model]: { upstream_model: "provider/real-model" } } });
    const id = unique("rename");
    const response = await chat(tenant, { temperature: 0.5 }, { "x-request-id": id });
    expect(response.status).toBe(200);
    const [received] = await upstreamRequests(id);
    const body = JSON.parse(received!.body);
    expect(body.model).toBe("provider/real-model");
    expect(body.temperature).toBe(0.5);
  });

  it("is a PermissionDeniedError and a BadRequestError to the openai client", async () => {
    const other = unique("model");
    const tenant = await seedTenant({ models: { [unique("model")]: {}, [other]: {} }, grants: [] });
    const client = openai(tenant.key);
    const denied = await client.chat.completions
      .create({ model: other, messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((denied as APIError).code).toBe("model_access_denied");
    const missing = await client.chat.completions
      .create({ model: "nope", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.BadRequestError);
    expect((missing as APIError).code).toBe("model_not_found");
  });
});
