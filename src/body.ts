import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import * as v from "valibot";
import { readConfig } from "./config";
import { GatewayError } from "./errors";
import type { BodySchema } from "./schemas";
import type { AppEnv, GatewayBody } from "./types";

/**
 * Enforces MAX_BODY_BYTES while the body is read (a chunked body has no Content-Length to trust),
 * so an oversized body is never buffered past the limit.
 */
export function limitBody(): MiddlewareHandler<AppEnv> {
  return async function limitBody(c, next) {
    const limit = bodyLimit({
      maxSize: readConfig(c.env).maxBodyBytes,
      onError: () => {
        throw new GatewayError("request_too_large", "Request body exceeds the size limit.");
      },
    });
    return limit(c, next);
  };
}

/** `messages[2].role` from valibot's issue path, as OpenAI names a `param`. */
function paramOf(issue: v.BaseIssue<unknown>): string | null {
  let param = "";
  for (const item of issue.path ?? []) {
    const key = item.key;
    param += typeof key === "number" ? `[${key}]` : param ? `.${String(key)}` : String(key);
  }
  return param || null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

function parseJson(bytes: ArrayBuffer): unknown {
  try {
    return JSON.parse(utf8.decode(bytes));
  } catch {
    // The parser's own message quotes the body; the caller gets a plain reason instead.
    throw new GatewayError("invalid_body", "The request body is not valid JSON.");
  }
}

/**
 * Parses the JSON body and checks it against `schema`, leaving the parsed body and the original
 * bytes for the next steps.
 */
export function jsonBody(schema: BodySchema): MiddlewareHandler<AppEnv> {
  return async function jsonBody(c, next) {
    const raw = await c.req.arrayBuffer();
    const result = v.safeParse(schema, parseJson(raw), { abortEarly: true });
    if (!result.success) {
      const issue = result.issues[0];
      const param = paramOf(issue);
      throw new GatewayError("invalid_body", param ? `Invalid '${param}': ${issue.message}.` : `Invalid body: ${issue.message}.`, {
        param,
      });
    }
    c.set("rawBody", raw);
    c.set("body", result.output as GatewayBody);
    c.var.log.model = result.output.model;
    await next();
  };
}
