import type { Context, Handler, MiddlewareHandler } from "hono";
import { bearerToken, isPresentableToken } from "../auth";
import { parseBody, readBody } from "../body";
import { createKeyBody, entityId, groupBody, modelBody, modelId, orgBody, upstreamBody } from "./schemas";
import { readConfig } from "../config";
import { GatewayError, InternalFault } from "../errors";
import { createKey, listKeys, revokeKey } from "./keys";
import { usageReport } from "./usage";
import { deleteRecord, inspectRecord, listRecords, writeRecord, type Listed } from "../records";
import { methodNotAllowed, newApp } from "../routing";
import type { AppEnv } from "../types";
import * as v from "valibot";

const MAX_ADMIN_BODY_BYTES = 64 * 1024;

/** `'a', 'b'`: the ids of the records an in-use refusal names. */
const quotedIds = (records: readonly { id: string }[]) => records.map(({ id }) => `'${id}'`).join(", ");

/**
 * Deletes `kind:id` unless something still uses it: 404 by name when there is no such record, else
 * the refusal `inUse` finds (read from KV itself, never the isolate's copy), before anything goes.
 */
async function deleteUnused(
  c: Context<AppEnv>,
  kind: "model" | "group" | "upstream",
  id: string,
  inUse: (kv: KVNamespace, id: string) => Promise<GatewayError | undefined>,
): Promise<Response> {
  const kv = c.env.GATEWAY_KV;
  if (!(await inspectRecord(kv, kind, id, true)))
    throw new GatewayError("not_found", `${kind[0]!.toUpperCase()}${kind.slice(1)} '${id}' not found.`);
  const refusal = await inUse(kv, id);
  if (refusal) throw refusal;
  await deleteRecord(kv, kind, id);
  return c.json({ id, deleted: true });
}

/**
 * `Authorization: Bearer $ADMIN_TOKEN`, compared in constant time. Without ADMIN_TOKEN the whole
 * admin tree does not exist. A token no HTTP client could send intact (not printable ASCII, or
 * with whitespace at an end) would lock the operator out for good, so the admin API refuses to
 * run with it: 500 `internal_error`, and the log line says why.
 */
function adminAuth(): MiddlewareHandler<AppEnv> {
  return async function adminAuth(c, next) {
    const token = c.env.ADMIN_TOKEN;
    if (!token) throw new GatewayError("not_found");
    if (!isPresentableToken(token)) {
      throw new InternalFault("ADMIN_TOKEN must be printable ASCII without spaces at either end");
    }
    return bearerToken(token)(c, next);
  };
}

/** A path parameter checked like the same id in a body, so a bad one is a typed 400. */
function pathId(schema: typeof entityId | typeof modelId, value: string, what: string): string {
  const result = v.safeParse(schema, value);
  if (!result.success)
    throw new GatewayError("invalid_body", `Invalid ${what} id: ${result.issues[0].message}.`);
  return result.output;
}

/** A listed record as the operator sees it: its fields, or that it is invalid and why. */
const shown = <T extends object>(entry: Listed<T>) =>
  entry.ok ? { id: entry.id, ...entry.value } : { id: entry.id, invalid: true, problem: entry.problem };

const list = <T>(data: T[]) => ({ object: "list", data });

/** The operator's API: keys, models, groups and org limits, in exactly the README's KV layout. */
export const admin = newApp<AppEnv>();

admin.use(adminAuth());

admin.post("/keys", async (c) => {
  const fields = parseBody(createKeyBody, await readBody(c, MAX_ADMIN_BODY_BYTES));
  if (!(await inspectRecord(c.env.GATEWAY_KV, "group", fields.group, true))) {
    throw new GatewayError("group_not_found", `Group '${fields.group}' not found.`, { param: "group" });
  }
  const { key, record } = await createKey(c.env.GATEWAY_KV, fields);
  return c.json({ ...record, key }, 201);
});

admin.get("/keys", async (c) => {
  const org = c.req.query("org");
  const keys = await listKeys(c.env.GATEWAY_KV, org === undefined ? undefined : pathId(entityId, org, "org"));
  return c.json(
    list(keys.map((key) => (key.ok ? key.value : { hash: key.id, invalid: true, problem: key.problem }))),
  );
});

admin.delete("/keys/:id", async (c) => {
  const id = c.req.param("id");
  const record = await revokeKey(c.env, id);
  if (!record) throw new GatewayError("not_found", `Key '${id}' not found.`);
  return c.json(record);
});

admin.get("/models", async (c) => {
  return c.json(list((await listRecords(c.env.GATEWAY_KV, "model", true)).map(shown)));
});

admin.put("/models/:id{.+}", async (c) => {
  const id = pathId(modelId, c.req.param("id"), "model");
  const record = parseBody(modelBody, await readBody(c, MAX_ADMIN_BODY_BYTES));
  const kv = c.env.GATEWAY_KV;
  const targets = record.upstreams ?? [];
  const found = await Promise.all(
    targets.map((t) => t.upstream === "default" || inspectRecord(kv, "upstream", t.upstream, true)),
  );
  const missing = found.findIndex((upstream) => upstream === null);
  if (missing >= 0) {
    throw new GatewayError("upstream_not_found", `Upstream '${targets[missing]!.upstream}' not found.`, {
      param: `upstreams[${missing}].upstream`,
    });
  }
  await writeRecord(kv, "model", id, record);
  return c.json({ id, ...record });
});

admin.delete("/models/:id{.+}", (c) =>
  deleteUnused(c, "model", pathId(modelId, c.req.param("id"), "model"), async (kv, id) => {
    const granting = (await listRecords(kv, "group", true)).filter(
      (group) => group.ok && group.value.models.includes(id),
    );
    if (!granting.length) return undefined;
    return new GatewayError(
      "model_in_use",
      `Model '${id}' is granted by group ${quotedIds(granting)}; remove it there first.`,
    );
  }),
);

admin.get("/groups", async (c) => {
  return c.json(list((await listRecords(c.env.GATEWAY_KV, "group", true)).map(shown)));
});

admin.put("/groups/:id", async (c) => {
  const id = pathId(entityId, c.req.param("id"), "group");
  const record = parseBody(groupBody, await readBody(c, MAX_ADMIN_BODY_BYTES));
  const kv = c.env.GATEWAY_KV;
  const found = await Promise.all(
    record.models.map((m) => (m === "*" ? "*" : inspectRecord(kv, "model", m, true))),
  );
  const missing = found.findIndex((model) => model === null);
  if (missing >= 0) {
    throw new GatewayError("model_not_found", `Model '${record.models[missing]}' not found.`, {
      param: `models[${missing}]`,
    });
  }
  await writeRecord(kv, "group", id, record);
  return c.json({ id, ...record });
});

admin.delete("/groups/:id", (c) =>
  deleteUnused(c, "group", pathId(entityId, c.req.param("id"), "group"), async (kv, id) => {
    const users = (await listKeys(kv)).filter(
      (key) => key.ok && key.value.group === id && !key.value.revoked_at,
    );
    if (!users.length) return undefined;
    return new GatewayError(
      "group_in_use",
      `Group '${id}' is used by ${users.length} active key(s); revoke them first.`,
    );
  }),
);

admin.get("/orgs/:id", async (c) => {
  const id = pathId(entityId, c.req.param("id"), "org");
  const found = await inspectRecord(c.env.GATEWAY_KV, "org", id, true);
  return c.json(shown({ id, ...(found ?? { ok: true, value: {} }) }));
});

admin.put("/orgs/:id", async (c) => {
  const id = pathId(entityId, c.req.param("id"), "org");
  const record = parseBody(orgBody, await readBody(c, MAX_ADMIN_BODY_BYTES));
  await writeRecord(c.env.GATEWAY_KV, "org", id, record);
  return c.json({ id, ...record });
});

/** The built-in upstream, as the operator sees it: where the vars point, never the key. */
const defaultUpstream = (c: Parameters<Handler<AppEnv>>[0]) => ({
  id: "default",
  base_url: readConfig(c.env).upstream.baseUrl,
  auth: "bearer",
  api_key_secret: "UPSTREAM_API_KEY",
});

/** `default` is the vars' upstream: it is changed in wrangler.toml, never through KV. */
function upstreamId(value: string): string {
  const id = pathId(entityId, value, "upstream");
  if (id === "default") throw new GatewayError("invalid_body", "Upstream 'default' is set by the vars.");
  return id;
}

admin.get("/upstreams", async (c) => {
  const stored = (await listRecords(c.env.GATEWAY_KV, "upstream", true)).map(shown);
  return c.json(list([defaultUpstream(c), ...stored]));
});

admin.put("/upstreams/:id", async (c) => {
  const id = upstreamId(c.req.param("id"));
  const record = parseBody(upstreamBody, await readBody(c, MAX_ADMIN_BODY_BYTES));
  await writeRecord(c.env.GATEWAY_KV, "upstream", id, record);
  return c.json({ id, ...record });
});

admin.delete("/upstreams/:id", (c) =>
  deleteUnused(c, "upstream", upstreamId(c.req.param("id")), async (kv, id) => {
    const routing = (await listRecords(kv, "model", true)).filter(
      (model) => model.ok && model.value.upstreams?.some((target) => target.upstream === id),
    );
    if (!routing.length) return undefined;
    return new GatewayError(
      "upstream_in_use",
      `Upstream '${id}' is used by model ${quotedIds(routing)}; remove it there first.`,
    );
  }),
);

admin.get("/orgs/:id/usage", (c) => usageReport(c, pathId(entityId, c.req.param("id"), "org")));

admin.all("/keys", methodNotAllowed("GET", "POST"));
admin.all("/keys/:id", methodNotAllowed("DELETE"));
admin.all("/models", methodNotAllowed("GET"));
admin.all("/models/:id{.+}", methodNotAllowed("PUT", "DELETE"));
admin.all("/groups", methodNotAllowed("GET"));
admin.all("/groups/:id", methodNotAllowed("PUT", "DELETE"));
admin.all("/orgs/:id", methodNotAllowed("GET", "PUT"));
admin.all("/upstreams", methodNotAllowed("GET"));
admin.all("/upstreams/:id", methodNotAllowed("PUT", "DELETE"));
admin.all("/orgs/:id/usage", methodNotAllowed("GET"));
