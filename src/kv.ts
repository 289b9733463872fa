/**
 * Reading GATEWAY_KV. Records are kept in the isolate for at most 30 s: the contract's bound on
 * cached reads. Every request reads its key, model, group and org; most of them repeat.
 * Revocation does not wait for this cache: see the org gate.
 */
const TTL_MS = 30_000;
// Enough for every key, model, group and org a busy isolate sees; bounded so it cannot grow.
const MAX_ENTRIES = 5_000;

/** A stored value after its check: usable, or why not. */
export type Checked<T> = { ok: true; value: T } | { ok: false; problem: string };

interface Entry {
  checked: Checked<unknown>;
  expires: number;
}

const entries = new Map<string, Entry>();

// KV refuses keys over 512 bytes: no record can live under a longer one.
const MAX_KEY_BYTES = 512;
const encoder = new TextEncoder();

/** Whether `key` can name a KV entry at all. */
export const isStorableKey = (key: string) => encoder.encode(key).byteLength <= MAX_KEY_BYTES;

function parseJson(text: string): Checked<unknown> {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false, problem: "not valid JSON" };
  }
}

/**
 * The JSON value stored under `key`, passed through `check`, from the isolate's cache when fresh.
 * The checked result is what is cached, so a record is validated once per fetch, not per request.
 * Absent records are not cached, so a record written a moment ago is found on the next request.
 * `fresh` skips the cache (the admin API shows what KV holds now) and refreshes it.
 */
export async function cachedRead<T>(
  kv: KVNamespace,
  key: string,
  check: (value: unknown) => Checked<T>,
  fresh: boolean,
): Promise<Checked<T> | null> {
  const now = Date.now();
  const hit = entries.get(key);
  if (hit && hit.expires > now && !fresh) return hit.checked as Checked<T>;
  const text = await kv.get(key, "text");
  // Re-inserted, so a Map's insertion order keeps the least recently fetched first.
  entries.delete(key);
  if (text === null) return null;
  const parsed = parseJson(text);
  const checked = parsed.ok ? check(parsed.value) : parsed;
  if (entries.size >= MAX_ENTRIES) entries.delete(entries.keys().next().value!);
  entries.set(key, { checked, expires: now + TTL_MS });
  return checked;
}

/** Drops `key` from this isolate's cache, after a write or a revocation. */
export function forgetCached(key: string): void {
  entries.delete(key);
}

/** Every entry under `prefix` (name and metadata), across all of KV's list pages. */
export async function listEntries<M = unknown>(
  kv: KVNamespace,
  prefix: string,
): Promise<Array<KVNamespaceListKey<M>>> {
  const entries: Array<KVNamespaceListKey<M>> = [];
  let cursor: string | undefined;
  do {
    const page = await kv.list<M>({ prefix, cursor });
    entries.push(...page.keys);
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  return entries;
}
