import type { Edit } from "./body";
import { anthropicUpstreamError } from "./errors";
import { valueEnd, type KeyPlace } from "./json-scan";
import { countTokensBody, chatCompletionBody, messagesBody, responsesBody, type BodySchema } from "./schemas";
import { chatDialect, messagesDialect, responsesDialect, type StreamDialect } from "./streaming/dialects";
import { chatUsage, messagesUsage, responsesUsage, type Usage } from "./usage";
import type { GatewayBody } from "./types";

/** What the pipeline needs to know of each API it serves: the rest is the same for all. */
export interface ModelApi {
  schema: BodySchema;
  /** Appended to the upstream base URL. */
  path: string;
  /** The usage a JSON body of this API reports, or null. */
  bodyUsage(json: unknown): Usage | null;
  /** The stream conventions of one request. */
  dialect(body: GatewayBody): StreamDialect;
  /** What to change in the caller's body text before it goes upstream (besides a renamed model). */
  edits(body: GatewayBody, text: string, places: ReadonlyMap<string, KeyPlace>): Edit[];
  /** The caller's request headers that reach the upstream. */
  headers: readonly string[];
  /** Counted against the org's limits and budgets, and metered. */
  admitted: boolean;
  /** An upstream's error body as the caller gets it, null to forward it verbatim; absent: always verbatim. */
  errorBody?(status: number, text: string): string | null;
}

const noEdits = () => [];

type StreamOptions = { include_usage?: boolean } | null | undefined;
const askedForUsage = (body: GatewayBody) => (body.stream_options as StreamOptions)?.include_usage === true;

/**
 * A chat stream reports its usage only when asked to, so every one is asked:
 * `stream_options.include_usage` is set to true, the caller's other stream options kept.
 */
function askForUsage(body: GatewayBody, text: string, places: ReadonlyMap<string, KeyPlace>): Edit[] {
  if (body.stream !== true || askedForUsage(body)) return [];
  const options = JSON.stringify({ ...(body.stream_options as StreamOptions), include_usage: true });
  const place = places.get("stream_options");
  if (place) return [{ start: place.start, end: valueEnd(text, place.start), text: options }];
  const opened = text.indexOf("{") + 1;
  return [{ start: opened, end: opened, text: `"stream_options":${options},` }];
}

export const CHAT: ModelApi = {
  schema: chatCompletionBody,
  path: "/chat/completions",
  bodyUsage: chatUsage,
  dialect: (body) => chatDialect(askedForUsage(body)),
  edits: askForUsage,
  headers: [],
  admitted: true,
};

export const RESPONSES: ModelApi = {
  schema: responsesBody,
  path: "/responses",
  bodyUsage: responsesUsage,
  dialect: () => responsesDialect(),
  edits: noEdits,
  headers: [],
  admitted: true,
};

/** What Anthropic clients send that the upstream needs to read their request as they meant it. */
const ANTHROPIC_HEADERS = ["anthropic-version", "anthropic-beta", "x-claude-code-session-id"];

export const MESSAGES: ModelApi = {
  schema: messagesBody,
  path: "/messages",
  bodyUsage: messagesUsage,
  dialect: () => messagesDialect(),
  edits: noEdits,
  headers: ANTHROPIC_HEADERS,
  admitted: true,
  errorBody: anthropicUpstreamError,
};

/** Counting a prompt's tokens spends none: it is checked and proxied, but not admitted or metered. */
export const COUNT_TOKENS: ModelApi = {
  ...MESSAGES,
  schema: countTokensBody,
  path: "/messages/count_tokens",
  admitted: false,
};
