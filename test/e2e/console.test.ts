import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AdminClient } from "../../scripts/admin-client.mjs";
import { startLocalGateway } from "../../scripts/local-gateway.mjs";
import { ADMIN_TOKEN, type LocalGateway } from "./harness";

// The console in a real browser (Debian's chromium, driven by playwright-core) against the built
// gateway under Miniflare: what an operator clicks, checked afterwards through the admin API.
// `CONSOLE_SCREENSHOTS=1` also writes the README's screenshots (docs/console-*.png).

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const SCREENSHOTS = process.env.CONSOLE_SCREENSHOTS ? join(import.meta.dirname, "..", "..", "docs") : null;

let gateway: LocalGateway;
let admin: AdminClient;
let browser: Browser;
let context: BrowserContext | undefined;
/** The page's uncaught errors and refusals under its Content-Security-Policy, and every request it made. */
let problems: string[];
let requests: { url: string; authorization: string | undefined }[];

beforeAll(async () => {
  [gateway, browser] = await Promise.all([
    startLocalGateway({ adminToken: ADMIN_TOKEN }),
    chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--headless=new", "--no-sandbox"] }),
  ]);
  admin = new AdminClient(gateway.url, ADMIN_TOKEN);
  await admin.putModel("console-model", { pricing: { input_per_mtok: 2, output_per_mtok: 8 } });
  await admin.putModel("console-model-b", { pricing: { input_per_mtok: 1, output_per_mtok: 4 } });
  await admin.putGroup("console-group", ["console-model", "console-model-b"]);
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await gateway?.close();
});
beforeEach(() => {
  problems = [];
  requests = [];
});
afterEach(async () => {
  await context?.close();
  context = undefined;
  // Every page, whatever it was made to do, ran without an error and within its policy.
  expect(problems).toEqual([]);
});

/** A fresh browser profile on the console's page, recording what the page logs and asks. */
async function openConsole(): Promise<Page> {
  const profile = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context = profile;
  // Well inside the test's own timeout, so that a failing step names itself.
  profile.setDefaultTimeout(10_000);
  await profile.grantPermissions(["clipboard-read", "clipboard-write"], { origin: gateway.url });
  const page = await profile.newPage();
  page.on("console", (message) => {
    if (message.text().includes("Content Security Policy")) problems.push(message.text());
  });
  page.on("pageerror", (error) => problems.push(`uncaught: ${error.message}`));
  page.on("request", (request) =>
    requests.push({ url: request.url(), authorization: request.headers()["authorization"] }),
  );
  await page.goto(`${gateway.url}/console/`);
  return page;
}

async function logIn(page: Page, token = ADMIN_TOKEN) {
  await page.fill("#login input[name=token]", token);
  await page.click("#login button[type=submit]");
}

async function loggedIn(): Promise<Page> {
  const page = await openConsole();
  await logIn(page);
  await page.waitForSelector("#nav:not([hidden])");
  return page;
}

const storage = (page: Page) =>
  page.evaluate(() => ({
    session: { ...sessionStorage },
    local: { ...localStorage },
    url: location.href,
  }));

/** The texts of a table's body cells, row by row. */
const rows = (page: Page, table: string) =>
  page.$$eval(`${table} tbody tr`, (trs) =>
    trs.map((tr) => Array.from(tr.querySelectorAll("td"), (td) => td.textContent)),
  );

describe("the console's token", () => {
  it("holds nothing and asks nothing before the token is given", async () => {
    const page = await openConsole();
    await page.waitForLoadState("networkidle");
    expect(await page.isVisible("#login")).toBe(true);
    expect(await page.isHidden("#nav")).toBe(true);
    expect(requests.filter((request) => request.url.includes("/admin/"))).toEqual([]);
    expect(await storage(page)).toEqual({ session: {}, local: {}, url: `${gateway.url}/console/` });
  });

  it("refuses a wrong token with the API's message and keeps nothing of it", async () => {
    const page = await openConsole();
    await logIn(page, "not-the-token");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toBe("Unauthorized");
    expect(await page.isHidden("#nav")).toBe(true);
    expect(await page.isVisible("#login")).toBe(true);
    expect(await storage(page)).toEqual({ session: {}, local: {}, url: `${gateway.url}/console/` });
  });

  it("keeps the token in sessionStorage only and sends it only as Authorization: Bearer", async () => {
    const page = await loggedIn();
    expect(await storage(page)).toEqual({
      session: { "gateway-admin-token": ADMIN_TOKEN },
      local: {},
      url: `${gateway.url}/console/`,
    });
    // Not left in the form either.
    expect(await page.inputValue("#login input[name=token]")).toBe("");
    const calls = requests.filter((request) => request.url.includes("/admin/"));
    expect(calls.length).toBeGreaterThan(0);
    for (const call of calls) expect(call.authorization).toBe(`Bearer ${ADMIN_TOKEN}`);
    expect(requests.filter((request) => request.url.includes(ADMIN_TOKEN))).toEqual([]);

    await page.click("#logout");
    expect(await storage(page)).toMatchObject({ session: {}, local: {} });
    expect(await page.isVisible("#login")).toBe(true);
  });
});

describe("keys", () => {
  it("mints a key through the page, shows it once with a copy button, and the API has it", async () => {
    const page = await loggedIn();
    await page.click("#nav [data-view=keys]");
    await page.waitForSelector("#group-select option[value=console-group]", { state: "attached" });
    await page.fill("#mint-form input[name=org]", "console-org");
    await page.fill("#mint-form input[name=user]", "carol");
    await page.selectOption("#mint-form select[name=group]", "console-group");
    await page.fill("#mint-form input[name=name]", "minted in the console");
    await page.click("#mint-form button[type=submit]");
    await page.waitForSelector("#minted:not([hidden])");
    const key = (await page.textContent("#minted-key"))!;
    expect(key).toMatch(/^sk-gw-[0-9A-Za-z]{32,}$/);

    await page.click("#copy-key");
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(key);

    const { data } = await admin.listKeys("console-org");
    expect(data).toEqual([
      expect.objectContaining({
        org: "console-org",
        user: "carol",
        group: "console-group",
        name: "minted in the console",
      }),
    ]);
    const works = await fetch(`${gateway.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    expect(works.status).toBe(200);
    // Listed, never with the key.
    await page.waitForSelector(`#keys-table td:text-is("${data[0].id}")`);
    expect(await page.textContent("#keys-table")).not.toContain(key);

    if (SCREENSHOTS) {
      await mkdir(SCREENSHOTS, { recursive: true });
      await page.screenshot({ path: join(SCREENSHOTS, "console-keys.png"), fullPage: true });
    }
    await page.click("#dismiss-key");
    expect(await page.isHidden("#minted")).toBe(true);
    expect(await page.textContent("#minted-key")).toBe("");
  });

  it("revokes a key after a confirmation, and not without one", async () => {
    const created = await admin.createKey({
      org: "revoke-org",
      user: "dan",
      group: "console-group",
      name: "old",
    });
    const page = await loggedIn();
    await page.click("#nav [data-view=keys]");
    const revoke = page
      .locator("#keys-table tr", { hasText: created.id })
      .getByRole("button", { name: "Revoke" });

    page.once("dialog", (dialog) => void dialog.dismiss());
    await revoke.click();
    await page.waitForLoadState("networkidle");
    expect((await admin.listKeys("revoke-org")).data[0].revoked_at).toBeUndefined();

    let asked = "";
    page.once("dialog", (dialog) => {
      asked = dialog.message();
      void dialog.accept();
    });
    await revoke.click();
    await page
      .locator("#keys-table tr", { hasText: created.id })
      .getByRole("button")
      .waitFor({ state: "detached" });
    expect(asked).toBe(
      `Revoke key ${created.id} (dan, old)? Its next request gets 401; this cannot be undone.`,
    );
    const [record] = (await admin.listKeys("revoke-org")).data;
    expect(record.revoked_at).toEqual(expect.any(String));
    expect(await rows(page, "#keys-table")).toContainEqual([
      created.id,
      "revoke-org",
      "dan",
      "console-group",
      "old",
      created.created_at,
      record.revoked_at,
      "",
    ]);
    const refused = await fetch(`${gateway.url}/v1/models`, {
      headers: { authorization: `Bearer ${created.key}` },
    });
    expect(refused.status).toBe(401);
  });
});

describe("usage", () => {
  it("shows requests just sent in the chart, split by model, and the top users and keys, to the token and cent", async () => {
    const bo = await admin.createKey({ org: "usage-org", user: "bo", group: "console-group", name: "bo's" });
    const eve = await admin.createKey({ org: "usage-org", user: "eve", group: "console-group" });
    const sent: [string, string, string][] = [
      [bo.key, "console-model", "a b c"],
      [bo.key, "console-model", "d"],
      [eve.key, "console-model-b", "e f g h"],
    ];
    for (const [key, model, content] of sent) {
      const response = await fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model, messages: [{ role: "user", content }] }),
      });
      expect(response.status).toBe(200);
      await response.text();
    }
    // Metering is batched after the answers (within 5 s): wait until the API shows them all.
    for (let tries = 0; (await admin.usage("usage-org")).total.requests < sent.length; tries++) {
      expect(tries).toBeLessThan(50);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }

    const page = await loggedIn();
    await page.fill("#usage-form input[name=org]", "usage-org");
    await page.click("#usage-form button[type=submit]");
    await page.waitForSelector("#top-keys tbody tr");
    const today = new Date().toISOString().slice(0, 10);
    const monthStart = `${today.slice(0, 8)}01`;

    // The mock counts a word as a token and replies with 5. bo: 4 prompt and 10 reply tokens at
    // $2 and $8 per million; eve: 4 and 5 at $1 and $4.
    expect(await page.textContent("#usage-total")).toBe(
      `usage-org, ${monthStart} to ${today}: 3 requests, 8 input and 15 output tokens, $0.000112`,
    );
    expect(await rows(page, "#top-users")).toEqual([
      ["bo", "2", "4", "10", "$0.000088"],
      ["eve", "1", "4", "5", "$0.000024"],
    ]);
    expect(await rows(page, "#top-keys")).toEqual([
      [bo.id, "bo's", "bo", "2", "4", "10", "$0.000088"],
      [eve.id, "", "eve", "1", "4", "5", "$0.000024"],
    ]);

    const chart = (canvas: string) =>
      page.evaluate((selector) => {
        const { Chart } = globalThis as unknown as { Chart: typeof import("chart.js").Chart };
        const { data } = Chart.getChart(document.querySelector(selector) as HTMLCanvasElement)!;
        return { labels: data.labels, datasets: data.datasets.map(({ label, data }) => ({ label, data })) };
      }, canvas);
    // One bar per day of the month so far, today's stacked by model.
    const days = Number(today.slice(8, 10));
    const onlyToday = (value: number) => Array.from({ length: days }, (_, i) => (i === days - 1 ? value : 0));
    const cost = await chart("#cost-chart");
    expect(cost.labels).toHaveLength(days);
    expect(cost.labels?.[0]).toBe(monthStart);
    expect(cost.labels?.at(-1)).toBe(today);
    expect(cost.datasets).toEqual([
      { label: "console-model", data: onlyToday(0.000088) },
      { label: "console-model-b", data: onlyToday(0.000024) },
    ]);
    expect((await chart("#tokens-chart")).datasets).toEqual([
      { label: "console-model", data: onlyToday(14) },
      { label: "console-model-b", data: onlyToday(9) },
    ]);
    if (SCREENSHOTS) await page.screenshot({ path: join(SCREENSHOTS, "console-usage.png"), fullPage: true });
  });
});

describe("the catalog and the limits", () => {
  it("sets an org's limits and budgets and a model's prices through the page, as the API then shows", async () => {
    await admin.putModel("priced-later", { upstreams: [{ upstream: "default", model: "mock-model" }] });
    const page = await loggedIn();
    await page.click("#nav [data-view=orgs]");
    await page.fill("#org-load input[name=org]", "limited-org");
    await page.click("#org-load button[type=submit]");
    await page.waitForSelector("#org-form:not([hidden])");
    await page.fill("#org-form input[name=requests_per_minute]", "300");
    await page.fill("#org-form input[name=tokens_per_minute]", "50000");
    await page.fill("#org-form input[name=monthly_budget_usd]", "12.5");
    await page.click("#org-form button[type=submit]");
    await expect
      .poll(() => admin.getOrg("limited-org"))
      .toEqual({
        id: "limited-org",
        requests_per_minute: 300,
        tokens_per_minute: 50000,
        monthly_budget_usd: 12.5,
      });

    await page.click("#nav [data-view=models]");
    const row = page.locator("#models-table tr", { hasText: "priced-later" });
    await row.getByRole("button", { name: "Edit" }).click();
    await page.fill("#model-form input[name=input_per_mtok]", "3");
    await page.fill("#model-form input[name=output_per_mtok]", "15");
    await page.click("#model-form button[type=submit]");
    // The form changed the prices; the model's upstreams stayed as they were.
    await expect
      .poll(async () => (await admin.listModels()).data.find((m: { id: string }) => m.id === "priced-later"))
      .toEqual({
        id: "priced-later",
        upstreams: [{ upstream: "default", model: "mock-model" }],
        pricing: { input_per_mtok: 3, output_per_mtok: 15 },
      });
    await expect.poll(() => row.textContent()).toContain("default:mock-model");
  });

  it("lists the upstreams by the names of their secrets, never a key", async () => {
    await admin.putUpstream("console-up", {
      base_url: "https://upstream.example/v1",
      auth: "x-api-key",
      api_key_secret: "CONSOLE_UP_KEY",
    });
    const page = await loggedIn();
    await page.click("#nav [data-view=upstreams]");
    await page.waitForSelector("#upstreams-table td:text-is('console-up')");
    expect(await rows(page, "#upstreams-table")).toContainEqual([
      "console-up",
      "https://upstream.example/v1",
      "x-api-key",
      "CONSOLE_UP_KEY",
      "",
      "",
    ]);
    // The default upstream's key is the gateway's UPSTREAM_API_KEY (scripts/local-gateway.mjs).
    expect(await page.textContent("body")).not.toContain("sk-upstream-local");
  });
});

describe("errors from the API", () => {
  it("are shown with their message, and nothing is written", async () => {
    const page = await loggedIn();
    await page.click("#nav [data-view=groups]");
    await page.fill("#group-form input[name=id]", "half-made");
    await page.fill("#group-form input[name=models]", "console-model, no-such-model");
    await page.click("#group-form button[type=submit]");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toBe(
      "Model 'no-such-model' not found. (model_not_found, param models[1])",
    );
    expect((await admin.listGroups()).data.map((group: { id: string }) => group.id)).not.toContain(
      "half-made",
    );
    // The form keeps what was typed, to be corrected.
    expect(await page.inputValue("#group-form input[name=models]")).toBe("console-model, no-such-model");
  });
});

describe("the console's responses", () => {
  it("carry the security headers and the request id, the redirect to /console/ included", async () => {
    for (const path of ["/console", "/console/", "/console/console.js", "/console/lib/chart.umd.min.js"]) {
      const requestId = `console${path.replace(/[^a-z]/g, "-")}`;
      const response = await fetch(`${gateway.url}${path}`, {
        redirect: "manual",
        headers: { "x-request-id": requestId },
      });
      expect(response.status, path).toBe(path === "/console" ? 307 : 200);
      expect(response.headers.get("x-request-id"), path).toBe(requestId);
      expect(response.headers.get("content-security-policy"), path).toBe(CSP);
      expect(response.headers.get("referrer-policy"), path).toBe("no-referrer");
      expect(response.headers.get("x-frame-options"), path).toBe("DENY");
      expect(response.headers.get("x-content-type-options"), path).toBe("nosniff");
    }
  });

  it("are the typed 404 for a file the console does not have", async () => {
    const response = await fetch(`${gateway.url}/console/tsconfig.json`);
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({
      error: { message: "Not found.", type: "invalid_request_error", param: null, code: "not_found" },
    });
  });
});

describe("without ADMIN_TOKEN", () => {
  it("the console is not served: the typed 404, as any unknown path", async () => {
    const bare = await startLocalGateway();
    try {
      for (const path of ["/console", "/console/", "/console/console.js", "/console/lib/chart.umd.min.js"]) {
        const response = await fetch(`${bare.url}${path}`, { redirect: "manual" });
        expect(response.status, path).toBe(404);
        expect(response.headers.get("content-type"), path).toBe("application/json");
        expect(await response.json(), path).toEqual({
          error: { message: "Not found.", type: "invalid_request_error", param: null, code: "not_found" },
        });
      }
    } finally {
      await bare.close();
    }
  }, 60_000);
});
