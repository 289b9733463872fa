import type { MiddlewareHandler } from "hono";
import { GatewayError } from "./errors";
import type { AppEnv } from "./types";

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
