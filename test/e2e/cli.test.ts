import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLocalGateway } from "../../scripts/local-gateway.mjs";
import { ADMIN_TOKEN, type LocalGateway } from "./harness";

const CLI = join(import.meta.dirname, "..", "..", "scripts", "admin.mjs");

let gateway: LocalGateway;
beforeAll(async () => {
  gateway = await startLocalGateway({ adminToken: ADMIN_TOKEN });
}, 60_000);
afterAll(() => gateway?.close());

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `npm run admin -- ...args` as an operator would: a separate Node process. */
async function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [CLI, ...args], {
      env: { ...process.env, GATEWAY_URL: gateway.url, ADMIN_TOKEN, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

async function json(args: string[]) {
  const result = await cli([...args, "--json"]);
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout);
}

describe("npm run admin", () => {
  it("prints help", async () => {
    const result = await cli(["--help"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("keys create --org ORG --user USER --group GROUP");
  });

  it("runs an operator's whole day: catalog, group, org, key, use, list, revoke", async () => {
    expect(
      await json([
        "models",
        "put",
        "acme/model-a",
        "--display-name",
        "Model A",
        "--upstream-model",
        "mock-model",
      ]),
    ).toEqual({
      id: "acme/model-a",
      display_name: "Model A",
      upstream_model: "mock-model",
    });
    expect(await json(["groups", "put", "team", "--models", "acme/model-a"])).toEqual({
      id: "team",
      models: ["acme/model-a"],
    });
    expect(await json(["orgs", "put", "acme", "--rpm", "100", "--user-rpm", "10"])).toEqual({
      id: "acme",
      requests_per_minute: 100,
      user_requests_per_minute: 10,
    });
    expect(await json(["orgs", "get", "acme"])).toMatchObject({ requests_per_minute: 100 });

    const created = await json([
      "keys",
      "create",
      "--org",
      "acme",
      "--user",
      "alice",
      "--group",
      "team",
      "--name",
      "laptop",
    ]);
    expect(created.key).toMatch(/^sk-gw-/);
    const call = () =>
      fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${created.key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "acme/model-a", messages: [{ role: "user", content: "hi" }] }),
      });
    expect((await call()).status).toBe(200);

    const table = await cli(["keys", "list", "--org", "acme"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(created.id);
    expect(table.stdout).toContain("laptop");
    expect(table.stdout).not.toContain(created.key);

    expect((await json(["models", "list"])).data).toContainEqual({
      id: "acme/model-a",
      display_name: "Model A",
      upstream_model: "mock-model",
    });
    expect((await json(["groups", "list"])).data).toContainEqual({ id: "team", models: ["acme/model-a"] });

    expect((await json(["keys", "revoke", created.id])).revoked_at).toEqual(expect.any(String));
    const after = await call();
    expect(after.status).toBe(401);
    expect(await after.text()).toBe('{"error":"Unauthorized"}');

    expect((await cli(["groups", "delete", "team"])).code).toBe(0);
    expect((await cli(["models", "delete", "acme/model-a"])).code).toBe(0);
  });

  it("prices a model, and reports an org's usage as a table with totals or as JSON", async () => {
    const prices = ["--input-price", "2", "--output-price", "8", "--cached-input-price", "0.5"];
    expect(await json(["models", "put", "priced-model", ...prices])).toEqual({
      id: "priced-model",
      pricing: { input_per_mtok: 2, output_per_mtok: 8, cached_input_per_mtok: 0.5 },
    });
    await json(["groups", "put", "billed", "--models", "priced-model"]);
    const { key } = await json(["keys", "create", "--org", "billed", "--user", "bo", "--group", "billed"]);
    for (const content of ["a b c", "d"]) {
      const response = await fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "priced-model", messages: [{ role: "user", content }] }),
      });
      expect(response.status).toBe(200);
      await response.text();
    }
    // 4 prompt and 10 reply words: 4 x $2 + 10 x $8 per million tokens.
    const total = {
      requests: 2,
      input_tokens: 4,
      output_tokens: 10,
      cached_tokens: 0,
      cost_usd: 0.000088,
      estimated_requests: 0,
      upstream_errors: 0,
    };
    let report: { data: unknown[]; total: unknown } | undefined;
    for (let tries = 0; tries < 50 && (report?.total as { requests?: number })?.requests !== 2; tries++) {
      report = await json(["usage", "billed", "--by", "model,user"]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(report).toMatchObject({
      group_by: ["model", "user"],
      data: [{ model: "priced-model", user: "bo", ...total }],
      total,
    });
    const table = await cli(["usage", "billed", "--by", "user"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/│\s*0\s*│\s*'bo'\s*│\s*2\s*│\s*4\s*│\s*10\s*│\s*0\s*│\s*0\.000088\s*│/);
    expect(table.stdout).toMatch(/│\s*1\s*│\s*'total'\s*│\s*2\s*│\s*4\s*│\s*10\s*│/);
    const refused = await cli(["usage", "billed", "--by", "team"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("(invalid_body, param group_by)");
  });

  it("explains API errors with their code and param, exiting 1", async () => {
    const result = await cli(["groups", "put", "broken", "--models", "no-such-model"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("Model 'no-such-model' not found. (model_not_found, param models[0])");
  });

  it("refuses bad limits with the API's message", async () => {
    const result = await cli(["orgs", "put", "acme", "--rpm", "1.5"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("requests_per_minute");
    const tokens = await cli(["orgs", "put", "acme", "--tpm", "1.5"]);
    expect(tokens.code).toBe(1);
    expect(tokens.stderr).toContain(
      "Invalid 'tokens_per_minute': must be a positive integer. (invalid_body, param tokens_per_minute)",
    );
    const budget = await cli(["orgs", "put", "acme", "--user-budget", "0"]);
    expect(budget.code).toBe(1);
    expect(budget.stderr).toContain(
      "Invalid 'user_monthly_budget_usd': must be a positive number. (invalid_body, param user_monthly_budget_usd)",
    );
  });

  it("sets an org's token limits and monthly budgets, and shows them", async () => {
    const limits = {
      id: "budgeted",
      tokens_per_minute: 50_000,
      user_tokens_per_minute: 10_000,
      monthly_budget_usd: 12.5,
      user_monthly_budget_usd: 2,
    };
    const args = ["--tpm", "50000", "--user-tpm", "10000", "--budget", "12.5", "--user-budget", "2"];
    expect(await json(["orgs", "put", "budgeted", ...args])).toEqual(limits);
    expect(await json(["orgs", "get", "budgeted"])).toEqual(limits);
    const table = await cli(["orgs", "get", "budgeted"]);
    expect(table.stdout).toContain("monthly_budget_usd");
    expect(table.stdout).toContain("12.5");
  });

  it("puts, lists and deletes upstreams, and routes a model through them", async () => {
    expect((await cli(["--help"])).stdout).toContain("upstreams put ID --base-url URL");
    const anthropic = {
      id: "anthropic",
      base_url: "https://api.anthropic.com/v1",
      auth: "x-api-key",
      api_key_secret: "ANTHROPIC_API_KEY",
      headers: { "anthropic-version": "2023-06-01" },
      timeout_ms: 20000,
    };
    expect(
      await json([
        "upstreams",
        "put",
        "anthropic",
        "--base-url",
        "https://api.anthropic.com/v1/",
        "--auth",
        "x-api-key",
        "--secret",
        "ANTHROPIC_API_KEY",
        "--header",
        "anthropic-version=2023-06-01",
        "--timeout-ms",
        "20000",
      ]),
    ).toEqual(anthropic);
    const listed = await json(["upstreams", "list"]);
    expect(listed.data[0]).toMatchObject({ id: "default", api_key_secret: "UPSTREAM_API_KEY" });
    expect(listed.data).toContainEqual(anthropic);

    expect(
      await json([
        "models",
        "put",
        "routed",
        "--upstreams",
        "anthropic:claude-x,default",
        "--routing",
        "loadbalance",
      ]),
    ).toEqual({
      id: "routed",
      upstreams: [{ upstream: "anthropic", model: "claude-x" }, { upstream: "default" }],
      routing: "loadbalance",
    });
    const table = await cli(["models", "list"]);
    expect(table.stdout).toContain("anthropic:claude-x, default");

    const refused = await cli(["upstreams", "delete", "anthropic"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("upstream_in_use");
    const unknown = await cli(["models", "put", "routed", "--upstreams", "nowhere"]);
    expect(unknown.stderr).toContain("(upstream_not_found, param upstreams[0].upstream)");

    expect(await json(["models", "delete", "routed"])).toEqual({ id: "routed", deleted: true });
    expect(await json(["upstreams", "delete", "anthropic"])).toEqual({ id: "anthropic", deleted: true });
    const noHeader = await cli([
      "upstreams",
      "put",
      "x",
      "--base-url",
      "https://x/v1",
      "--header",
      "novalue",
    ]);
    expect(noHeader.code).toBe(2);
    expect(noHeader.stderr).toContain("--header takes NAME=VALUE");
  });

  it("says what is missing, exiting 2", async () => {
    const result = await cli(["keys", "create", "--org", "acme"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--user is required");
    expect((await cli(["frobnicate"])).stderr).toContain("unknown command");
  });

  it("reports a wrong token and an unreachable gateway", async () => {
    expect((await cli(["models", "list"], { ADMIN_TOKEN: "wrong" })).stderr).toContain("error: Unauthorized");
    const unreachable = await cli(["models", "list"], { GATEWAY_URL: "http://127.0.0.1:9" });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain("cannot reach the gateway");
  });
});
