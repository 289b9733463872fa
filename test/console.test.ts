import { describe, expect, it } from "vitest";
import { gateway, gatewayWith } from "./helpers";

// The console's files as the Worker serves them (src/console.ts): only while the admin API exists,
// only the files it has, each with a request id. What the page does is in test/e2e/console.test.ts.

const NOT_FOUND = {
  error: { message: "Not found.", type: "invalid_request_error", param: null, code: "not_found" },
};

describe("the console's files", () => {
  it("are served with their security headers and the caller's request id while ADMIN_TOKEN is set", async () => {
    const response = await gateway("/console/", { headers: { "x-request-id": "console-page-1" } });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(response.headers.get("x-request-id")).toBe("console-page-1");
    expect(response.headers.get("referrer-policy")).toBe("no-referrer");
    expect(response.headers.get("content-security-policy")).toBe(
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    );
    expect(await response.text()).toContain('<script type="module" src="console.js"></script>');
  });

  it("are the typed 404 for a file the console does not have", async () => {
    const response = await gateway("/console/missing.js");
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual(NOT_FOUND);
  });

  it("are not served at all without ADMIN_TOKEN: the typed 404, as any unknown path", async () => {
    for (const path of ["/console/", "/console/console.js"]) {
      const response = await gatewayWith({ ADMIN_TOKEN: "" }, path);
      expect(response.status, path).toBe(404);
      expect(await response.json(), path).toEqual(NOT_FOUND);
    }
  });
});
