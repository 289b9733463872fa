import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import { expectGatewayError, gateway, openai } from "./helpers";

// The routing rows outside the model routes; those are in contract.test.ts.

describe("routing", () => {
  it("answers 404 not_found for an unknown path", async () => {
    await expectGatewayError(await gateway("/v1/nothing-here"), 404, "invalid_request_error", "not_found");
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
  it("sets one on errors too", async () => {
    const response = await gateway("/nope");
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});
