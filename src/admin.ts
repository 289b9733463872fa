import { Hono, type MiddlewareHandler } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { denyAll } from "./auth";
import { limitBody, parseBody } from "./body";
import type { GroupRecord, ModelRecord } from "./catalog";
import { GatewayError } from "./errors";
import { createKeyBody, entityId, groupBody, modelBody, modelId, orgBody } from "./admin-schemas";
import { createKey, listKeys, revokeKey } from "./keys";
import { forgetRecord, listEntries } from "./kv";
import type { OrgRecord } from "./rate-limiter";
import { methodNotAllowed } from "./routing";
import type { AppEnv } from "./types";
import * as v from "valibot";

const MAX_ADMIN_BODY_BYTES = 64 * 1024;

/**
 * `Authorization: Bearer $ADMIN_TOKEN`, compared in constant time (hono hashes both sides before
 * comparing). Without ADMIN_TOKEN the whole admin tree does not exist.
 */
function adminAuth(): MiddlewareHandler<AppEnv> {
  return async function adminAuth(c, next) {
    const token = c.env.ADMIN_TOKEN;
    if (!token) throw new GatewayError("not_found");
    const check = bearerAuth<AppEnv>({ token, ...denyAll });
    return check(c, next);
  };
}

/** A path parameter checked like the same id in a body, so a bad one is a typed 400. */
function pathId(schema: typeof entityId | typeof modelId, value: string, what: string): string {
  const result = v.safeParse(schema, value);
  if (!result.success) throw new GatewayError("invalid_body", `Invalid ${what} id: ${result.issues[0].message}.`);
  return result.output;
}

/** Every record under `prefix`, as `[id, record]`, in key order. */
async function listRecords<T>(kv: KVNamespace, prefix: string): Promise<Array<[string, T]>> {
  const names = (await listEntries(kv, prefix)).map(({ name }) => name);
  const records = await Promise.all(names.map((name) => kv.get<T>(name, "json")));
  return names.flatMap((name, i) => (records[i] ? [[name.slice(prefix.length), records[i]] as [string, T]] : []));
}

async function put(kv: KVNamespace, key: string, record: unknown) {
  await kv.put(key, JSON.stringify(record));
  forgetRecord(key);
}

async function remove(kv: KVNamespace, key: string) {
  await kv.delete(key);
  forgetRecord(key);
}

const list = <T>(data: T[]) => ({ object: "list", data });

/** The operator's API: keys, models, groups and org limits, in exactly the README's KV layout. */
export const admin = new Hono<AppEnv>();

admin.use(adminAuth(), limitBody(MAX_ADMIN_BODY_BYTES));

admin.post("/keys", async (c) => {
  const fields = parseBody(createKeyBody, await c.req.arrayBuffer());
  if (!(await c.env.GATEWAY_KV.get(`group:${fields.group}`))) {
    throw new GatewayError("group_not_found", `Group '${fields.group}' not found.`, { param: "group" });
  }
  const { key, record } = await createKey(c.env.GATEWAY_KV, fields);
  return c.json({ ...record, key }, 201);
});

admin.get("/keys", async (c) => {
  const org = c.req.query("org");
  return c.json(list(await listKeys(c.env.GATEWAY_KV, org && pathId(entityId, org, "org"))));
});

admin.delete("/keys/:id", async (c) => {
  const id = c.req.param("id");
  const record = await revokeKey(c.env, id);
  if (!record) throw new GatewayError("not_found", `Key '${id}' not found.`);
  return c.json(record);
});

admin.get("/models", async (c) => {
  const models = await listRecords<ModelRecord>(c.env.GATEWAY_KV, "model:");
  return c.json(list(models.map(([id, record]) => ({ id, ...record }))));
});

admin.put("/models/:id{.+}", async (c) => {
  const id = pathId(modelId, c.req.param("id"), "model");
  const record = parseBody(modelBody, await c.req.arrayBuffer());
  await put(c.env.GATEWAY_KV, `model:${id}`, record);
  return c.json({ id, ...record });
});

admin.delete("/models/:id{.+}", async (c) => {
  const id = pathId(modelId, c.req.param("id"), "model");
  const kv = c.env.GATEWAY_KV;
  if (!(await kv.get(`model:${id}`))) throw new GatewayError("not_found", `Model '${id}' not found.`);
  const granting = (await listRecords<GroupRecord>(kv, "group:")).filter(([, g]) => g.models.includes(id));
  if (granting.length) {
    const names = granting.map(([name]) => `'${name}'`).join(", ");
    throw new GatewayError("model_in_use", `Model '${id}' is granted by group ${names}; remove it there first.`);
  }
  await remove(kv, `model:${id}`);
  return c.json({ id, deleted: true });
});

admin.get("/groups", async (c) => {
  const groups = await listRecords<GroupRecord>(c.env.GATEWAY_KV, "group:");
  return c.json(list(groups.map(([id, record]) => ({ id, ...record }))));
});

admin.put("/groups/:id", async (c) => {
  const id = pathId(entityId, c.req.param("id"), "group");
  const record = parseBody(groupBody, await c.req.arrayBuffer());
  const kv = c.env.GATEWAY_KV;
  const found = await Promise.all(record.models.map((m) => (m === "*" ? "*" : kv.get(`model:${m}`))));
  const missing = found.findIndex((model) => model === null);
  if (missing >= 0) {
    throw new GatewayError("model_not_found", `Model '${record.models[missing]}' not found.`, { param: `models[${missing}]` });
  }
  await put(kv, `group:${id}`, record);
  return c.json({ id, ...record });
});

admin.delete("/groups/:id", async (c) => {
  const id = pathId(entityId, c.req.param("id"), "group");
  const kv = c.env.GATEWAY_KV;
  if (!(await kv.get(`group:${id}`))) throw new GatewayError("not_found", `Group '${id}' not found.`);
  const users = (await listKeys(kv)).filter((key) => key.group === id && !key.revoked_at);
  if (users.length) {
    throw new GatewayError("group_in_use", `Group '${id}' is used by ${users.length} active key(s); revoke them first.`);
  }
  await remove(kv, `group:${id}`);
  return c.json({ id, deleted: true });
});

admin.get("/orgs/:id", async (c) => {
  const id = pathId(entityId, c.req.param("id"), "org");
  const record = (await c.env.GATEWAY_KV.get<OrgRecord>(`org:${id}`, "json")) ?? {};
  return c.json({ id, ...record });
});

admin.put("/orgs/:id", async (c) => {
  const id = pathId(entityId, c.req.param("id"), "org");
  const record = parseBody(orgBody, await c.req.arrayBuffer());
  await put(c.env.GATEWAY_KV, `org:${id}`, record);
  return c.json({ id, ...record });
});

admin.all("/keys", methodNotAllowed("GET", "POST"));
admin.all("/keys/:id", methodNotAllowed("DELETE"));
admin.all("/models", methodNotAllowed("GET"));
admin.all("/models/:id{.+}", methodNotAllowed("PUT", "DELETE"));
admin.all("/groups", methodNotAllowed("GET"));
admin.all("/groups/:id", methodNotAllowed("PUT", "DELETE"));
admin.all("/orgs/:id", methodNotAllowed("GET", "PUT"));
