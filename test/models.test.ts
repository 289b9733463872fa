import { describe, expect, it } from "vitest";
import { expectUnauthorized, gateway, openai, seedTenant, unique } from "./helpers";

describe("GET /v1/models", () => {
  it("lists exactly the models the key's group grants, with display_name where set", async () => {
    const shown = unique("shown");
    const plain = unique("plain");
    const hidden = unique("hidden");
    const tenant = await seedTenant({
      models: { [shown]: { display_name: "Shown model" }, [plain]: {}, [hidden]: {} },
      grants: [shown, plain],
    });
    const response = await gateway("/v1/models", { headers: { authorization: `Bearer ${tenant.key}` } });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      object: "list",
      data: [
        { id: shown, object: "model", created: 0, owned_by: "gateway", display_name: "Shown model" },
        { id: plain, object: "model", created: 0, owned_by: "gateway" },
      ],
    });
  });

  it('lists the whole catalog for "*"', async () => {
    const model = unique("star");
    const tenant = await seedTenant({ models: { [model]: {} }, grants: ["*"] });
    const ids = (await openai(tenant.key).models.list()).data.map((m) => m.id);
    expect(ids).toContain(model);
  });

  it("works with the openai client's models.list()", async () => {
    const tenant = await seedTenant();
    const page = await openai(tenant.key).models.list();
    expect(page.data.map((m) => m.id)).toEqual([tenant.model]);
  });

  it("answers the exact 401 without a valid key", async () => {
    await expectUnauthorized(await gateway("/v1/models"));
  });
});
