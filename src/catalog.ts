import type { MiddlewareHandler } from "hono";
import { GatewayError } from "./errors";
import { readRecord } from "./kv";
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

// KV rejects keys over 512 bytes; such a model id cannot be in the catalog.
const MAX_KV_KEY_BYTES = 512;
const isStorableKey = (key: string) => new TextEncoder().encode(key).byteLength <= MAX_KV_KEY_BYTES;

/** Step 4: the requested model must be in the catalog. */
export function resolveModel(): MiddlewareHandler<AppEnv> {
  return async function resolveModel(c, next) {
    const id = c.var.body.model;
    const model = isStorableKey(`model:${id}`) ? await readRecord<ModelRecord>(c.env.GATEWAY_KV, `model:${id}`) : null;
    if (!model) throw new GatewayError("model_not_found", `Model '${id}' not found.`, { param: "model" });
    c.set("model", model);
    await next();
  };
}

/** Step 5: the key's user group must grant the model. */
export function checkAccess(): MiddlewareHandler<AppEnv> {
  return async function checkAccess(c, next) {
    const id = c.var.body.model;
    const group = await readRecord<GroupRecord>(c.env.GATEWAY_KV, `group:${c.var.apiKey.group}`);
    const models = group?.models ?? [];
    if (!models.includes("*") && !models.includes(id)) {
      throw new GatewayError("model_access_denied", `This API key may not use model '${id}'.`, { param: "model" });
    }
    await next();
  };
}
