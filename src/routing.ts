import type { Env as HonoEnv, MiddlewareHandler } from "hono";
import { HonoBase } from "hono/hono-base";
import { RegExpRouter } from "hono/router/reg-exp-router";
import { GatewayError } from "./errors";
import type { AppEnv } from "./types";

/**
 * A Hono app routed by RegExpRouter alone. Stock `Hono` ships a SmartRouter that also carries a
 * TrieRouter for paths RegExpRouter cannot take; every path here is one it takes, so the other
 * router would only weigh on the bundle's size limit (bench/README.md).
 */
export const newApp = <E extends HonoEnv>() => new HonoBase<E>({ router: new RegExpRouter() });

/** A known path asked with a method it does not serve: 405 with `Allow`. */
export function methodNotAllowed(...allowed: string[]): MiddlewareHandler<AppEnv> {
  const allow = allowed.join(", ");
  return async function methodNotAllowed(c) {
    throw new GatewayError(
      "method_not_allowed",
      `Method ${c.req.method} is not allowed here; use ${allow}.`,
      {
        headers: { allow },
      },
    );
  };
}
