import { hashKey, keyRecordKey, type ApiKeyRecord } from "./auth";
import { forgetRecord, isStorableKey, listEntries } from "./kv";
import { orgGate } from "./rate-limiter";
import type { Env } from "./types";

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

const keyIdKey = (id: string) => `keyid:${id}`;

// KV metadata holds at most 1,024 bytes of JSON; a record that would not fit is listed by reading it.
const MAX_METADATA_BYTES = 1024;
const asMetadata = (record: ApiKeyRecord) =>
  new TextEncoder().encode(JSON.stringify(record)).byteLength <= MAX_METADATA_BYTES ? { metadata: record } : {};

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
export async function createKey(kv: KVNamespace, fields: NewKey): Promise<{ key: string; record: ApiKeyRecord }> {
  const key = `sk-gw-${randomBase62(40)}`;
  const hash = await hashKey(key);
  const record: ApiKeyRecord = { id: `key_${randomBase62(20)}`, ...fields, created_at: new Date().toISOString() };
  // The id entry first: if the second write fails, what remains points at nothing.
  await kv.put(keyIdKey(record.id), JSON.stringify({ hash }));
  await kv.put(keyRecordKey(hash), JSON.stringify(record), asMetadata(record));
  return { key, record };
}

/** Every key record, optionally only one org's, oldest first. */
export async function listKeys(kv: KVNamespace, org?: string): Promise<ApiKeyRecord[]> {
  const records: ApiKeyRecord[] = [];
  for (const { name, metadata } of await listEntries<ApiKeyRecord>(kv, "key:")) {
    // Keys written by hand carry no metadata; read those.
    const record = metadata ?? (await kv.get<ApiKeyRecord>(name, "json"));
    if (record && (!org || record.org === org)) records.push(record);
  }
  return records.sort((a, b) => a.created_at.localeCompare(b.created_at));
}

/**
 * Revokes key `id`: first in its org's RateLimiter, which every request consults, so it stops
 * working at once everywhere; then in KV. Returns null for an unknown id.
 */
export async function revokeKey(env: Env, id: string): Promise<ApiKeyRecord | null> {
  if (!isStorableKey(keyIdKey(id))) return null;
  const kv = env.GATEWAY_KV;
  const pointer = await kv.get<{ hash: string }>(keyIdKey(id), "json");
  const record = pointer && (await kv.get<ApiKeyRecord>(keyRecordKey(pointer.hash), "json"));
  if (!pointer || !record) return null;
  if (record.revoked_at) return record;
  await orgGate(env, record.org).revoke(record.id);
  const revoked = { ...record, revoked_at: new Date().toISOString() };
  await kv.put(keyRecordKey(pointer.hash), JSON.stringify(revoked), asMetadata(revoked));
  forgetRecord(keyRecordKey(pointer.hash));
  return revoked;
}
