import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import * as v from "valibot";
import { readConfig } from "./config";
import { GatewayError } from "./errors";
import { skipSpace, topLevelKeys, valueEnd, type KeyPlace } from "./json-scan";
import type { BodySchema } from "./schemas";
import type { AppEnv, GatewayBody } from "./types";

const tooLarge = (): never => {
  throw new GatewayError("request_too_large");
};

const unreadableBody = () => new GatewayError("invalid_body", "The request body could not be read.");

/**
 * The request body's bytes, within `maxBytes` (default MAX_BODY_BYTES: counted while reading, as a
 * chunked body has no Content-Length to trust) and within BODY_TIMEOUT_MS of the request's start,
 * so a body that trickles in cannot hold a request open as long as its sender likes.
 *
 * @example
 * const limits = parseBody(orgBody, await readBody(c, 64 * 1024));
 */
export async function readBody(c: Context<AppEnv>, maxBytes?: number): Promise<ArrayBuffer> {
  const config = readConfig(c.env);
  const limit = bodyLimit({ maxSize: maxBytes ?? config.maxBodyBytes, onError: tooLarge });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new GatewayError("request_timeout")),
      Math.max(0, config.bodyTimeoutMs - c.get("log").elapsed()),
    );
  });
  // hono's bodyLimit reads a chunked body whole before it calls next; a sized one is read after.
  const read = async () => {
    await limit(c, async () => {});
    return c.req.arrayBuffer();
  };
  try {
    return await Promise.race([read(), deadline]);
  } catch (err) {
    // What is not the size or the deadline is the body failing to arrive (a client that went
    // away, a length that lied).
    if (err instanceof GatewayError) throw err;
    throw unreadableBody();
  } finally {
    clearTimeout(timer);
  }
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

// A byte order mark is kept, so that JSON.parse refuses it: the gateway must not check a body the
// upstream's parser would read differently.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function decode(bytes: ArrayBuffer): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new GatewayError("invalid_body", "The request body is not valid JSON.");
  }
}

function parseJsonObject(text: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // The parser's own message quotes the body; the caller gets a plain reason instead.
    throw new GatewayError("invalid_body", "The request body is not valid JSON.");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new GatewayError("invalid_body", "The request body must be a JSON object.");
  }
  return json as Record<string, unknown>;
}

function describeIssue(issue: v.BaseIssue<unknown>, param: string | null): string {
  if (!param) return `Invalid body: ${issue.message}.`;
  // valibot reports a missing key with the enclosing object's message; say what is missing.
  if (issue.input === undefined) return `Missing required parameter '${param}'.`;
  // A strict object's key it does not know: valibot's "Expected never" would puzzle an operator.
  if (issue.type === "strict_object") return `Unknown parameter '${param}'.`;
  return `Invalid '${param}': ${issue.message}.`;
}

/**
 * Checks `value` (a parsed body, or a query's parameters) against `schema`: the first failing field
 * becomes a 400 `invalid_body` naming it in `param`.
 *
 * @example
 * const query = checkFields(usageQuery, c.req.query());
 */
export function checkFields<S extends v.GenericSchema>(schema: S, value: unknown): v.InferOutput<S> {
  const result = v.safeParse(schema, value, { abortEarly: true });
  if (result.success) return result.output;
  const issue = result.issues[0];
  const param = paramOf(issue);
  throw new GatewayError("invalid_body", describeIssue(issue, param), { param });
}

/**
 * Parses a JSON object body and checks it against `schema`: the first failing field becomes a
 * 400 `invalid_body` naming it in `param`.
 *
 * @example
 * const limits = parseBody(orgLimitsBody, await readBody(c, 64 * 1024));
 */
export function parseBody<S extends v.GenericSchema>(schema: S, raw: ArrayBuffer): v.InferOutput<S> {
  return checkFields(schema, parseJsonObject(decode(raw)));
}

/** Text `[start, end)` of a body to be replaced by `text` (an insertion when `start === end`). */
export interface Edit {
  start: number;
  end: number;
  text: string;
}

/**
 * The caller's body with `edits` made (a renamed model, a stream's usage asked for): the caller's
 * own text, with only those values rewritten, so every other byte (key order, `__proto__` keys,
 * numbers beyond 2^53, `1.0`) reaches the upstream as sent. Edits must not overlap.
 */
export function withEdits(text: string, edits: Edit[]): Uint8Array {
  let out = "";
  let from = 0;
  // An insertion sorts before a removal that starts at the same place.
  for (const edit of [...edits].sort((a, b) => a.start - b.start || a.end - b.end)) {
    out += text.slice(from, edit.start) + edit.text;
    from = edit.end;
  }
  return new TextEncoder().encode(out + text.slice(from));
}

/** Fields that would steer an upstream proxy's own accounting: never forwarded, on any route. */
const DROPPED_FIELDS: ReadonlySet<string> = new Set(["litellm_metadata", "proxy_server_request"]);

/**
 * The edits that remove {@link DROPPED_FIELDS} (every occurrence) from the body text, each with a
 * comma beside it so the rest stays valid JSON: the one after it, or for the last member the one
 * before it. Members removed side by side are removed as one.
 *
 * @example
 * withEdits('{"model":"m","litellm_metadata":{}}', droppedFields(body, text)); // '{"model":"m"}'
 */
export function droppedFields(body: GatewayBody, text: string): Edit[] {
  if (!("litellm_metadata" in body || "proxy_server_request" in body)) return [];
  const edits: Edit[] = [];
  for (const place of topLevelKeys(text, DROPPED_FIELDS)) {
    const end = valueEnd(text, place.start);
    const after = skipSpace(text, end);
    const previous = edits.at(-1);
    let start = place.keyStart;
    if (previous && skipSpace(text, previous.end) === start) start = edits.pop()!.start;
    if (text[after] === ",") {
      edits.push({ start, end: after + 1, text: "" });
      continue;
    }
    let before = start - 1;
    while (/\s/.test(text[before]!)) before--;
    edits.push({ start: text[before] === "," ? before : start, end, text: "" });
  }
  return edits;
}

/**
 * Reads the body, parses it as a JSON object and checks it against `schema`, leaving the parsed
 * body, the original bytes and where the values of the keys it interprets lie for the next steps. A key the schema
 * interprets may appear only once at the top level: with two `model` keys the gateway would check
 * one while an upstream's parser might use the other.
 */
export function jsonBody(schema: BodySchema): MiddlewareHandler<AppEnv> {
  const interpreted: ReadonlySet<string> = new Set(Object.keys(schema.entries));
  return async function jsonBody(c, next) {
    const raw = await readBody(c);
    const text = decode(raw);
    const body: GatewayBody = checkFields(schema, parseJsonObject(text));
    const places = new Map<string, KeyPlace>();
    for (const place of topLevelKeys(text, interpreted)) {
      if (places.has(place.key)) {
        throw new GatewayError("invalid_body", `Invalid body: '${place.key}' appears more than once.`, {
          param: place.key,
        });
      }
      places.set(place.key, place);
    }
    c.set("rawBody", raw);
    c.set("bodyText", text);
    c.set("places", places);
    c.set("body", body);
    await next();
  };
}
