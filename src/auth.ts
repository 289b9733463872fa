import type { MiddlewareHandler } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { timingSafeEqual } from "hono/utils/buffer";
import { GatewayError } from "./errors";
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

const unauthorized = (): never => {
  throw new GatewayError("unauthorized");
};

/**
 * hono's bearerAuth answers each failure (no header, malformed header, wrong token) with its own
 * response; these make every one of them the contract's single 401.
 */
const denyAll = {
  noAuthenticationHeader: { message: unauthorized },
  invalidAuthenticationHeader: { message: unauthorized },
  invalidToken: { message: unauthorized },
};

/**
 * Authenticates `Authorization: Bearer <key>` against GATEWAY_KV and leaves the key's record in
 * `c.get("apiKey")`.
 */
export function apiKeyAuth(): MiddlewareHandler<AppEnv> {
  return bearerAuth<AppEnv>({
    ...denyAll,
    verifyToken: async (token, c) => {
      const hash = await hashKey(token);
      const record = await readRecord(c.env.GATEWAY_KV, "key", hash);
      if (!record || record.revoked_at) return false;
      c.set("apiKey", record);
      c.set("apiKeyHash", hash);
      Object.assign(c.get("log").fields, { org: record.org, user: record.user, key_id: record.id });
      return true;
    },
  });
}

/** Drops the caller's key record from this isolate's cache: its org gate knows it is revoked. */
export const forgetRevokedKey = (hash: string) => forgetRecord("key", hash);

/**
 * What an HTTP header can carry intact: printable ASCII, no whitespace at either end (clients and
 * the runtime trim it). A token outside this could never be presented, so it is refused loudly.
 */
export const isPresentableToken = (token: string) => /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(token);

/**
 * `Authorization: Bearer <token>`, compared in constant time (both sides are hashed first). Unlike
 * hono's bearerAuth, which admits only RFC 6750 token characters, any token an operator can set
 * and send is accepted. Every failure is the contract's single 401.
 */
export function bearerToken(token: string): MiddlewareHandler<AppEnv> {
  return async function bearerToken(c, next) {
    const match = /^bearer +(.+)$/i.exec(c.req.header("authorization") ?? "");
    if (!match || !(await timingSafeEqual(token, match[1]!))) unauthorized();
    await next();
  };
}
