import type { MiddlewareHandler } from "hono";
import { GatewayError } from "./errors";
import { Memo } from "./memo";
import { forgetRecord, readRecord } from "./records";
import type { AppEnv } from "./types";

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** SHA-256 hex of the whole key: the only form in which a key is ever stored or looked up. */
export async function hashKey(key: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)));
  let hex = "";
  for (const byte of digest) hex += HEX[byte];
  return hex;
}

/**
 * The hashes of the keys this isolate has seen lately. A digest per request cost the gateway a
 * tenth of its own time (bench/README.md); a key's hash never changes, and whether the key still
 * stands is asked of its record, after this. The keys stay in this isolate's memory only, as they
 * are during their requests anyway.
 */
const hashes = new Memo<string>(1000);

const unauthorized = (): never => {
  throw new GatewayError("unauthorized");
};

/**
 * `Bearer <key>`, spelled as RFC 6750 allows (any case, the key in its token characters): what
 * hono's bearerAuth admits, without the response machinery of its own that every failure here
 * replaces with the contract's single 401.
 */
const BEARER_KEY = /^bearer \s*([A-Za-z0-9._~+/-]+=*)$/i;

/**
 * Authenticates `Authorization: Bearer <key>`, else `x-api-key: <key>` (Anthropic clients), against
 * GATEWAY_KV and leaves the key's record in `c.get("apiKey")`. An `Authorization` header that is
 * there wins, malformed or not: it never falls back to `x-api-key`. Missing, malformed, unknown or
 * revoked: the same 401.
 */
export function apiKeyAuth(): MiddlewareHandler<AppEnv> {
  return async function apiKeyAuth(c, next) {
    const authorization = c.req.header("authorization");
    const key = authorization === undefined ? c.req.header("x-api-key") : BEARER_KEY.exec(authorization)?.[1];
    if (!key) unauthorized();
    const hash = hashes.get(key!) ?? hashes.set(key!, await hashKey(key!));
    const record = await readRecord(c.env.GATEWAY_KV, "key", hash);
    if (!record || record.revoked_at) unauthorized();
    c.set("apiKey", record!);
    c.set("apiKeyHash", hash);
    Object.assign(c.get("log").fields, { org: record!.org, user: record!.user, key_id: record!.id });
    await next();
  };
}

/** Drops the caller's key record from this isolate's cache: its org gate knows it is revoked. */
export const forgetRevokedKey = (hash: string) => forgetRecord("key", hash);

/**
 * What an HTTP header can carry intact: printable ASCII, no whitespace at either end (clients and
 * the runtime trim it). A token outside this could never be presented, so it is refused loudly.
 */
export const isPresentableToken = (token: string) => /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(token);

const sha256 = (text: string) => crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));

/** Whether two secrets are equal, in a time that tells nothing of either: their digests are compared. */
async function sameSecret(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([sha256(a), sha256(b)]);
  return crypto.subtle.timingSafeEqual(x, y);
}

/**
 * `Authorization: Bearer <token>`, compared in constant time (both sides are hashed first). Unlike
 * hono's bearerAuth, which admits only RFC 6750 token characters, any token an operator can set
 * and send is accepted. Every failure is the contract's single 401.
 */
export function bearerToken(token: string): MiddlewareHandler<AppEnv> {
  return async function bearerToken(c, next) {
    const match = /^bearer +(.+)$/i.exec(c.req.header("authorization") ?? "");
    if (!match || !(await sameSecret(token, match[1]!))) unauthorized();
    await next();
  };
}
