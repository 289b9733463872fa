import type { MiddlewareHandler } from "hono";
import { GatewayError } from "./errors";
import { readRecord, type GroupRecord } from "./records";
import type { AppEnv } from "./types";

/** Whether `group` grants model `id`; `"*"` grants every model, a missing group none. */
export const grants = (group: GroupRecord | null, id: string) =>
  !!group && (group.models.includes("*") || group.models.includes(id));

/** Step 4: the requested model must be in the catalog. */
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

/** Step 5: the key's user group must grant the model. */
export function checkAccess(): MiddlewareHandler<AppEnv> {
  return async function checkAccess(c, next) {
    const id = c.get("body").model;
    const group = await readRecord(c.env.GATEWAY_KV, "group", c.get("apiKey").group);
    if (!grants(group, id)) {
      throw new GatewayError("model_access_denied", `This API key may not use model '${id}'.`, { param: "model" });
    }
    await next();
  };
}
