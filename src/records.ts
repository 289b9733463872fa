import * as v from "valibot";
import { upstreamBase } from "./base-url";
import { InternalFault } from "./errors";
import { cachedRead, forgetCached, isStorableKey, listEntries, type Checked } from "./kv";

/**
 * The records of GATEWAY_KV: one schema per kind, the key each lives under, and typed reads and
 * writes. The README's "KV layout" table describes the same thing for operators.
 *
 * A record is validated wherever it is read, exactly like a request body: an operator can write
 * one by hand (`wrangler kv key put`), and a limit that is negative, fractional or a string must
 * never read as "no limit". The admin API writes through the same schemas, so what it accepts and
 * what the pipeline trusts cannot drift apart.
 */

/** Org, user and group ids: printable, no spaces, safe inside a KV key and a URL path. */
export const entityId = v.pipe(
  v.string("must be a string"),
  v.regex(
    /^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$/,
    "must be 1-128 letters, digits or ._@:+- starting with a letter or digit",
  ),
);

/** Model ids may hold slashes (`openai/gpt-4o`) but no whitespace, and `*` is reserved. */
export const modelId = v.pipe(
  v.string("must be a string"),
  v.regex(/^[^\s\u0000-\u001f*]{1,200}$/, "must be 1-200 characters without whitespace or '*'"),
  v.maxBytes(200, "must be at most 200 bytes"),
);

const requestsPerMinute = v.pipe(
  v.number("must be a positive integer"),
  v.integer("must be a positive integer"),
  v.minValue(1, "must be a positive integer"),
  v.maxValue(10_000_000, "must be at most 10000000"),
);

const text = (maxBytes: number) =>
  v.pipe(
    v.string("must be a string"),
    v.maxBytes(maxBytes, `must be at most ${maxBytes} bytes`),
    v.regex(/^[^\p{Cc}]*$/u, "must not contain control characters"),
  );

const isoTime = v.pipe(v.string("must be a string"), v.isoTimestamp("must be an ISO timestamp"));

/** `key:<sha256 hex of the key>`: who a key belongs to. */
export const apiKeyRecord = v.strictObject({
  id: v.pipe(
    v.string("must be a string"),
    v.regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 letters, digits, _ or -"),
  ),
  org: entityId,
  user: entityId,
  group: entityId,
  // Bytes, not characters: the key record travels as KV metadata, which holds at most 1,024.
  name: v.optional(text(200)),
  created_at: isoTime,
  revoked_at: v.optional(isoTime),
});

/** `keyid:<key id>`: finds a key's record by its id. */
export const keyIdRecord = v.strictObject({
  hash: v.pipe(v.string("must be a string"), v.regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits")),
});

// Dollars per million tokens. Bounded so that a request's cost in whole nano-dollars stays an exact
// integer (usage.ts): tokens are at most 1e9, 1e9 x 10,000 x 1,000 < 2^53.
const pricePerMtok = v.pipe(
  v.number("must be a number"),
  v.minValue(0, "must be a number from 0 to 10000"),
  v.maxValue(10_000, "must be a number from 0 to 10000"),
);

/** A model's prices in US dollars per million tokens; cached input costs the input price unless set. */
export const pricingRecord = v.strictObject(
  {
    input_per_mtok: pricePerMtok,
    output_per_mtok: pricePerMtok,
    cached_input_per_mtok: v.optional(pricePerMtok),
  },
  "must be an object",
);

/** One place a model's requests can go: an upstream, the model name it knows, a share of the traffic. */
const upstreamTarget = v.strictObject(
  {
    upstream: entityId,
    model: v.optional(modelId),
    weight: v.optional(
      v.pipe(
        v.number("must be a positive number"),
        v.gtValue(0, "must be a positive number"),
        v.maxValue(1_000_000, "must be at most 1000000"),
      ),
    ),
  },
  "must be an object",
);

/** `model:<id>`: a catalog model; `{}` is a valid one (served by the upstream `default`). */
export const modelRecord = v.strictObject({
  display_name: v.optional(
    v.pipe(v.string("must be a string"), v.maxLength(200, "must be at most 200 characters")),
  ),
  upstream_model: v.optional(modelId),
  pricing: v.optional(pricingRecord),
  upstreams: v.optional(
    v.pipe(
      v.array(upstreamTarget, "must be an array of upstreams"),
      v.minLength(1, "must list at least one upstream"),
      v.maxLength(20, "must list at most 20 upstreams"),
    ),
  ),
  routing: v.optional(
    v.union([v.literal("fallback"), v.literal("loadbalance")], 'must be "fallback" or "loadbalance"'),
  ),
});

/**
 * Headers an upstream record may not fix: credentials (the key goes only as `auth` says, from a
 * secret), and what the gateway itself sets or the runtime owns.
 */
const RESERVED_HEADER =
  /^(authorization|proxy-authorization|x-api-key|api-key|cookie|host|content-length|content-type|accept|x-request-id|connection|keep-alive|transfer-encoding|te|trailer|upgrade)$/i;

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$/;
const headerValueBytes = new TextEncoder();

/** Fixed headers an upstream may carry: a few, named as HTTP names, none reserved, values printable. */
function fixedHeaders(headers: Record<string, unknown>): headers is Record<string, string> {
  const entries = Object.entries(headers);
  return (
    entries.length <= 20 &&
    entries.every(
      ([name, value]) =>
        HEADER_NAME.test(name) &&
        !RESERVED_HEADER.test(name) &&
        typeof value === "string" &&
        /^[^\p{Cc}]*$/u.test(value) &&
        headerValueBytes.encode(value).byteLength <= 1000,
    )
  );
}

/**
 * `upstream:<id>`: where an upstream is, how its key is sent and under which Worker secret it is
 * kept (the key itself never is in KV). A key is sent unless `auth` is `none`, so a secret name is
 * required exactly then.
 */
export const upstreamRecord = v.pipe(
  v.strictObject({
    base_url: v.pipe(
      v.string("must be a string"),
      v.check(
        (url) => upstreamBase(url) !== undefined,
        "must be an http or https URL without credentials, query or fragment",
      ),
      v.transform((url) => upstreamBase(url)!),
    ),
    auth: v.optional(
      v.picklist(
        ["bearer", "x-api-key", "api-key", "none"],
        'must be "bearer", "x-api-key", "api-key" or "none"',
      ),
    ),
    api_key_secret: v.optional(
      v.pipe(
        v.string("must be a string"),
        v.regex(/^[A-Z][A-Z0-9_]{0,127}$/, "must be a secret name: A-Z, 0-9 and _, starting with a letter"),
        v.check((name) => name !== "ADMIN_TOKEN", "must not be ADMIN_TOKEN"),
      ),
    ),
    headers: v.optional(
      v.pipe(
        v.looseObject({}, "must be an object"),
        v.check(
          fixedHeaders,
          "must map at most 20 header names (not auth or the gateway's own) to values of at most 1000 bytes without control characters",
        ),
      ),
    ),
    timeout_ms: v.optional(
      v.pipe(
        v.number("must be a positive integer"),
        v.integer("must be a positive integer"),
        v.minValue(1, "must be a positive integer"),
        v.maxValue(3_600_000, "must be at most 3600000"),
      ),
    ),
  }),
  v.forward(
    v.check(
      (record) => (record.auth === "none") === (record.api_key_secret === undefined),
      'must name the secret holding the key, unless auth is "none" (then nothing)',
    ),
    ["api_key_secret"],
  ),
);

/** `group:<id>`: the models a group grants; `"*"` grants every model. */
export const groupRecord = v.strictObject({
  models: v.pipe(
    v.array(v.union([v.literal("*"), modelId], 'must be a model id or "*"'), "must be an array of model ids"),
    v.maxLength(1000, "must list at most 1000 models"),
    v.check((models) => new Set(models).size === models.length, "must not list a model twice"),
  ),
});

/** The most a token limit may be: far above any one org, and sums of it stay exact integers. */
export const MAX_TOKENS_PER_MINUTE = 10_000_000_000;

const tokensPerMinute = v.pipe(
  v.number("must be a positive integer"),
  v.integer("must be a positive integer"),
  v.minValue(1, "must be a positive integer"),
  v.maxValue(MAX_TOKENS_PER_MINUTE, `must be at most ${MAX_TOKENS_PER_MINUTE}`),
);

// US dollars. Bounded so that a budget in whole nano-dollars (usage.ts) is an exact integer.
const monthlyBudget = v.pipe(
  v.number("must be a positive number"),
  v.gtValue(0, "must be a positive number"),
  v.maxValue(1_000_000, "must be at most 1000000"),
);

/**
 * `org:<id>`: an org's limits. A missing request limit falls back to DEFAULT_ORG_RPM /
 * DEFAULT_USER_RPM; a missing token limit or budget means there is none.
 */
export const orgRecord = v.strictObject({
  requests_per_minute: v.optional(requestsPerMinute),
  user_requests_per_minute: v.optional(requestsPerMinute),
  tokens_per_minute: v.optional(tokensPerMinute),
  user_tokens_per_minute: v.optional(tokensPerMinute),
  monthly_budget_usd: v.optional(monthlyBudget),
  user_monthly_budget_usd: v.optional(monthlyBudget),
});

const SCHEMAS = {
  key: apiKeyRecord,
  keyid: keyIdRecord,
  model: modelRecord,
  group: groupRecord,
  org: orgRecord,
  upstream: upstreamRecord,
};

export type RecordKind = keyof typeof SCHEMAS;
export type RecordOf<K extends RecordKind> = v.InferOutput<(typeof SCHEMAS)[K]>;
export type ApiKeyRecord = RecordOf<"key">;
export type ModelRecord = RecordOf<"model">;
export type GroupRecord = RecordOf<"group">;
export type OrgRecord = RecordOf<"org">;
export type UpstreamRecord = RecordOf<"upstream">;
export type Pricing = v.InferOutput<typeof pricingRecord>;

/** The KV key of a record: `<kind>:<id>`. Nothing else spells one. */
export const recordKey = (kind: RecordKind, id: string) => `${kind}:${id}`;

/**
 * A stored record that fails its schema. The caller sees a plain 500 `internal_error`; the log
 * names the kind, never the content (which may be anything an operator typed).
 */
export class InvalidRecord extends InternalFault {
  override readonly name = "InvalidRecord";
  constructor(readonly kind: RecordKind) {
    super(`invalid ${kind} record`);
  }
}

/** `messages[2].role: must be a string`: where a value fails its schema, and why. */
function describe(issue: v.BaseIssue<unknown>): string {
  const path = v.getDotPath(issue);
  // valibot reports a missing key with the enclosing object's message; say what is missing.
  if (path && issue.input === undefined) return `${path}: is missing`;
  return path ? `${path}: ${issue.message}` : issue.message;
}

/** Checks a stored value against its kind's schema. */
export function checkRecord<K extends RecordKind>(kind: K, value: unknown): Checked<RecordOf<K>> {
  // valibot's object schemas take an array for an object with no keys.
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return { ok: false, problem: "must be a JSON object" };
  const result = v.safeParse(SCHEMAS[kind], value, { abortEarly: true });
  return result.success
    ? { ok: true, value: result.output as RecordOf<K> }
    : { ok: false, problem: describe(result.issues[0]) };
}

/**
 * The record `kind:id`, checked, or null when there is none; from the isolate's cache when that is
 * fresh, or (`fresh`) as KV holds it now. Throws {@link InvalidRecord} when the stored value fails
 * its schema.
 *
 * @example
 * const org = await readRecord(env.GATEWAY_KV, "org", "acme");
 */
export async function readRecord<K extends RecordKind>(
  kv: KVNamespace,
  kind: K,
  id: string,
  fresh = false,
): Promise<RecordOf<K> | null> {
  const found = await inspectRecord(kv, kind, id, fresh);
  if (found && !found.ok) throw new InvalidRecord(kind);
  return found && found.value;
}

/**
 * Like {@link readRecord}, but an invalid record is returned with its problem, and `fresh` reads
 * past the isolate's cache: for the admin API, which shows operators what KV holds now.
 */
export function inspectRecord<K extends RecordKind>(
  kv: KVNamespace,
  kind: K,
  id: string,
  fresh = false,
): Promise<Checked<RecordOf<K>> | null> {
  const key = recordKey(kind, id);
  // KV refuses keys over 512 bytes: no record can live under a longer one.
  if (!isStorableKey(key)) return Promise.resolve(null);
  return cachedRead(kv, key, (value) => checkRecord(kind, value), fresh);
}

/** Writes a record (already checked by the caller's schema) and drops this isolate's copy. */
export async function writeRecord<K extends RecordKind>(
  kv: KVNamespace,
  kind: K,
  id: string,
  record: RecordOf<K>,
  options?: KVNamespacePutOptions,
): Promise<void> {
  const key = recordKey(kind, id);
  await kv.put(key, JSON.stringify(record), options);
  forgetCached(key);
}

/** Deletes a record and drops this isolate's copy. */
export async function deleteRecord(kv: KVNamespace, kind: RecordKind, id: string): Promise<void> {
  const key = recordKey(kind, id);
  await kv.delete(key);
  forgetCached(key);
}

/** Drops this isolate's copy of a record, so the next read goes to KV (after a revocation). */
export const forgetRecord = (kind: RecordKind, id: string) => forgetCached(recordKey(kind, id));

/** One entry of a listing: the record, or why it could not be used. */
export type Listed<T> = { id: string } & Checked<T>;

/**
 * Every record of `kind`, in key order, each checked. One bad record does not hide the others:
 * callers skip it, operators are shown it.
 */
export async function listRecords<K extends RecordKind>(
  kv: KVNamespace,
  kind: K,
  fresh = false,
): Promise<Array<Listed<RecordOf<K>>>> {
  const ids = await listIds(kv, kind);
  const found = await Promise.all(ids.map((id) => inspectRecord(kv, kind, id, fresh)));
  return ids.flatMap((id, i) => (found[i] ? [{ id, ...found[i] }] : []));
}

/** Every id of `kind`, without reading the records. */
export async function listIds(kv: KVNamespace, kind: RecordKind): Promise<string[]> {
  const prefix = recordKey(kind, "");
  return (await listEntries(kv, prefix)).map(({ name }) => name.slice(prefix.length));
}

/** Every `key:` entry: its hash and the record its metadata carries, unchecked (see keys.ts). */
export async function listKeyEntries(kv: KVNamespace): Promise<Array<{ hash: string; metadata: unknown }>> {
  const prefix = recordKey("key", "");
  return (await listEntries<unknown>(kv, prefix)).map(({ name, metadata }) => ({
    hash: name.slice(prefix.length),
    metadata,
  }));
}
