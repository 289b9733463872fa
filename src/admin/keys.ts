import { hashKey } from "../auth";
import { orgGate } from "../admission";
import {
  checkRecord,
  inspectRecord,
  listKeyEntries,
  readRecord,
  writeRecord,
  type ApiKeyRecord,
  type Listed,
} from "../records";
import type { Env } from "../types";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** `length` uniformly random base62 characters (bytes of 248 and above are redrawn: no bias). */
function randomBase62(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const byte of crypto.getRandomValues(new Uint8Array(length))) {
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

// KV metadata holds at most 1,024 bytes of JSON; a record that would not fit is listed by reading it.
const MAX_METADATA_BYTES = 1024;
const asMetadata = (record: ApiKeyRecord) =>
  new TextEncoder().encode(JSON.stringify(record)).byteLength <= MAX_METADATA_BYTES
    ? { metadata: record }
    : {};

export interface NewKey {
  org: string;
  user: string;
  group: string;
  name?: string;
}

/**
 * Mints an API key and stores its record; the key itself is returned here once and never stored.
 * The record also rides along as the KV entry's metadata, so keys can be listed without reading
 * each one.
 */
export async function createKey(
  kv: KVNamespace,
  fields: NewKey,
): Promise<{ key: string; record: ApiKeyRecord }> {
  const key = `sk-gw-${randomBase62(40)}`;
  const hash = await hashKey(key);
  const record: ApiKeyRecord = {
    id: `key_${randomBase62(20)}`,
    ...fields,
    created_at: new Date().toISOString(),
  };
  // The id entry first: if the second write fails, what remains points at nothing.
  await writeRecord(kv, "keyid", record.id, { hash });
  await writeRecord(kv, "key", hash, record, asMetadata(record));
  return { key, record };
}

/**
 * Every key record, optionally only one org's, oldest first. Metadata is checked like the record
 * itself; a record that fails its check is listed as invalid (by its hash), never dropped.
 */
export async function listKeys(kv: KVNamespace, org?: string): Promise<Array<Listed<ApiKeyRecord>>> {
  const listed = await Promise.all(
    (await listKeyEntries(kv)).map(async ({ hash, metadata }): Promise<Listed<ApiKeyRecord> | null> => {
      const fromMetadata = metadata === undefined ? null : checkRecord("key", metadata);
      // Keys written by hand carry no metadata; read those.
      const checked = fromMetadata?.ok ? fromMetadata : await inspectRecord(kv, "key", hash, true);
      return checked && { id: hash, ...checked };
    }),
  );
  const keys = listed.filter(
    (entry): entry is Listed<ApiKeyRecord> => !!entry && (!org || !entry.ok || entry.value.org === org),
  );
  const created = (entry: Listed<ApiKeyRecord>) => (entry.ok ? entry.value.created_at : "");
  return keys.sort((a, b) => created(a).localeCompare(created(b)));
}

/**
 * Revokes key `id`: first in its org's gate, which every request consults, so it stops working
 * at once everywhere; then in KV. Returns null for an unknown id.
 */
export async function revokeKey(env: Env, id: string): Promise<ApiKeyRecord | null> {
  const kv = env.GATEWAY_KV;
  // As KV holds them now: the isolate's copy may be up to 30 s old.
  const pointer = await readRecord(kv, "keyid", id, true);
  const record = pointer && (await readRecord(kv, "key", pointer.hash, true));
  if (!pointer || !record) return null;
  if (record.revoked_at) return record;
  await orgGate(env, record.org).revoke(record.id);
  const revoked = { ...record, revoked_at: new Date().toISOString() };
  await writeRecord(kv, "key", pointer.hash, revoked, asMetadata(revoked));
  return revoked;
}
