import type { MiddlewareHandler } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { GatewayError } from "./errors";
import { readRecord } from "./kv";
import type { AppEnv } from "./types";

/** `key:<sha256 hex>` in GATEWAY_KV. See the README's KV layout. */
export interface ApiKeyRecord {
  id: string;
  org: string;
  user: string;
  group: string;
  name?: string;
  created_at: string;
  revoked_at?: string;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** SHA-256 hex of the whole key: the only form in which a key is ever stored or looked up. */
export async function hashKey(key: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)));
  let hex = "";
  for (const byte of digest) hex += HEX[byte];
  return hex;
}

/** The KV key under which an API key's record lives. */
export const keyRecordKey = (hash: string) => `key:${hash}`;

/**
 * hono's bearerAuth answers each failure (no header, malformed header, wrong token) with its own
 * response; these make every one of them the contract's single 401.
 */
export const denyAll = (() => {
  const deny = (): never => {
    throw new GatewayError("unauthorized");
  };
  return { noAuthenticationHeader: { message: deny }, invalidAuthenticationHeader: { message: deny }, invalidToken: { message: deny } };
})();

/**
 * Authenticates `Authorization: Bearer <key>` against GATEWAY_KV and leaves the key's record in
 * `c.get("apiKey")`.
 */
export function apiKeyAuth(): MiddlewareHandler<AppEnv> {
  return bearerAuth<AppEnv>({
    ...denyAll,
    verifyToken: async (token, c) => {
      const hash = await hashKey(token);
      const record = await readRecord<ApiKeyRecord>(c.env.GATEWAY_KV, keyRecordKey(hash));
      if (!record || record.revoked_at) return false;
      c.set("apiKey", record);
      c.set("apiKeyHash", hash);
      Object.assign(c.get("log").fields, { org: record.org, user: record.user, key_id: record.id });
      return true;
    },
  });
}
