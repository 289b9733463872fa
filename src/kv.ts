/**
 * Reading GATEWAY_KV. Records are kept in the isolate for at most 30 s: the contract's bound on
 * cached reads. Every request reads its key, model, group and org; most of them repeat.
 * Revocation does not wait for this cache: see RateLimiter.
 */
const TTL_MS = 30_000;
// Enough for every key, model, group and org a busy isolate sees; bounded so it cannot grow.
const MAX_ENTRIES = 5_000;

interface Entry {
  value: unknown;
  expires: number;
}

const entries = new Map<string, Entry>();

// KV refuses keys over 512 bytes: no record can live under a longer one.
const MAX_KEY_BYTES = 512;
const encoder = new TextEncoder();

/** Whether `key` can name a KV entry at all. */
export const isStorableKey = (key: string) => encoder.encode(key).byteLength <= MAX_KEY_BYTES;

/**
 * The JSON record stored under `key`, from the isolate's cache when fresh. Absent records are not
 * cached, so a record written a moment ago is found on the next request.
 *
 * @example
 * const model = await readRecord<ModelRecord>(env.GATEWAY_KV, `model:${id}`);
 */
export async function readRecord<T>(kv: KVNamespace, key: string): Promise<T | null> {
  const now = Date.now();
  const hit = entries.get(key);
  if (hit && hit.expires > now) return hit.value as T;
  const value = await kv.get<T>(key, "json");
  if (value === null) {
    entries.delete(key);
  } else {
    // Re-inserted, so a Map's insertion order keeps the least recently fetched first.
    entries.delete(key);
    if (entries.size >= MAX_ENTRIES) entries.delete(entries.keys().next().value!);
    entries.set(key, { value, expires: now + TTL_MS });
  }
  return value;
}

/** Drops `key` from this isolate's cache, after a write or a revocation. */
export function forgetRecord(key: string): void {
  entries.delete(key);
}

/** Every entry under `prefix` (name and metadata), across all of KV's list pages. */
export async function listEntries<M = unknown>(kv: KVNamespace, prefix: string): Promise<Array<KVNamespaceListKey<M>>> {
  const entries: Array<KVNamespaceListKey<M>> = [];
  let cursor: string | undefined;
  do {
    const page = await kv.list<M>({ prefix, cursor });
    entries.push(...page.keys);
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  return entries;
}
