import type { MiddlewareHandler } from "hono";
import { GatewayError } from "./errors";
import { isStorableKey, readRecord } from "./kv";
import type { AppEnv } from "./types";

/** `model:<id>` in GATEWAY_KV; `{}` is a valid model. */
export interface ModelRecord {
  display_name?: string;
  upstream_model?: string;
}

/** `group:<id>` in GATEWAY_KV; `"*"` grants every model. */
export interface GroupRecord {
  models: string[];
}

/** Step 4: the requested model must be in the catalog. */
export function resolveModel(): MiddlewareHandler<AppEnv> {
  return async function resolveModel(c, next) {
    const id = c.get("body").model;
    const model = isStorableKey(`model:${id}`) ? await readRecord<ModelRecord>(c.env.GATEWAY_KV, `model:${id}`) : null;
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
    const group = await readRecord<GroupRecord>(c.env.GATEWAY_KV, `group:${c.get("apiKey").group}`);
    const models = group?.models ?? [];
    if (!models.includes("*") && !models.includes(id)) {
      throw new GatewayError("model_access_denied", `This API key may not use model '${id}'.`, { param: "model" });
    }
    await next();
  };
}
