import type { Handler } from "hono";
import { granted } from "./catalog";
import { inspectRecord, listRecords, readRecord, type ModelRecord } from "./records";
import type { AppEnv } from "./types";

/**
 * `GET /v1/models`: the OpenAI models list of exactly the catalog models the key's group may use.
 * The catalog keeps no creation time, so `created` is 0; `display_name` is added where set. A
 * model whose record is invalid is left out (the operator sees it in `GET /admin/models`).
 */
export const listModels: Handler<AppEnv> = async (c) => {
  const kv = c.env.GATEWAY_KV;
  const grant = granted(await readRecord(kv, "group", c.get("apiKey").group));
  let models: Array<[string, ModelRecord]>;
  if (grant === "all") {
    models = (await listRecords(kv, "model")).flatMap((m) =>
      m.ok ? [[m.id, m.value] as [string, ModelRecord]] : [],
    );
  } else {
    const found = await Promise.all(grant.map((id) => inspectRecord(kv, "model", id)));
    models = grant.flatMap((id, i) => {
      const model = found[i];
      return model?.ok ? [[id, model.value] as [string, ModelRecord]] : [];
    });
  }
  const data = models.map(([id, record]) => {
    const model = { id, object: "model", created: 0, owned_by: "gateway" };
    return record.display_name ? { ...model, display_name: record.display_name } : model;
  });
  return c.json({ object: "list", data });
};
