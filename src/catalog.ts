import type { MiddlewareHandler } from "hono";
import { GatewayError } from "./errors";
import { readRecord, type GroupRecord } from "./records";
import type { AppEnv } from "./types";

/** What a group grants: every model of the catalog (its list holds `"*"`), or the models it lists. */
export const granted = (group: GroupRecord | null): "all" | readonly string[] =>
  group?.models.includes("*") ? "all" : (group?.models ?? []);

/** Whether `group` grants model `id`; a missing group grants none. */
const grants = (group: GroupRecord | null, id: string) => {
  const models = granted(group);
  return models === "all" || models.includes(id);
};

/** The model check: the requested model must be in the catalog. */
export function resolveModel(): MiddlewareHandler<AppEnv> {
  return async function resolveModel(c, next) {
    const id = c.get("body").model;
    const model = await readRecord(c.env.GATEWAY_KV, "model", id);
    if (!model) throw new GatewayError("model_not_found", `Model '${id}' not found.`, { param: "model" });
    // Only a catalog id is logged: before this point the string is the caller's, and could be anything.
    c.get("log").fields.model = id;
    c.set("model", model);
    await next();
  };
}

/** The access check: the key's user group must grant the model. */
export function checkAccess(): MiddlewareHandler<AppEnv> {
  return async function checkAccess(c, next) {
    const id = c.get("body").model;
    const group = await readRecord(c.env.GATEWAY_KV, "group", c.get("apiKey").group);
    if (!grants(group, id)) {
      throw new GatewayError("model_access_denied", `This API key may not use model '${id}'.`, {
        param: "model",
      });
    }
    await next();
  };
}
