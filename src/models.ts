import type { Handler } from "hono";
import type { GroupRecord, ModelRecord } from "./catalog";
import { listEntries, readRecord } from "./kv";
import type { AppEnv } from "./types";

/** The ids of every model in the catalog. */
async function catalogIds(kv: KVNamespace): Promise<string[]> {
  return (await listEntries(kv, "model:")).map(({ name }) => name.slice("model:".length));
}

/**
 * `GET /v1/models`: the OpenAI models list of exactly the catalog models the key's group may use.
 * The catalog keeps no creation time, so `created` is 0; `display_name` is added where set.
 */
export const listModels: Handler<AppEnv> = async (c) => {
  const kv = c.env.GATEWAY_KV;
  const group = await readRecord<GroupRecord>(kv, `group:${c.get("apiKey").group}`);
  const granted = group?.models ?? [];
  const ids = granted.includes("*") ? await catalogIds(kv) : granted;
  const records = await Promise.all(ids.map((id) => readRecord<ModelRecord>(kv, `model:${id}`)));
  const data = ids.flatMap((id, i) => {
    const record = records[i];
    if (!record) return [];
    const model = { id, object: "model", created: 0, owned_by: "gateway" };
    return [record.display_name ? { ...model, display_name: record.display_name } : model];
  });
  return c.json({ object: "list", data });
};
