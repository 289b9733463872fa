import type { Edit } from "./body";
import { valueEnd, type KeyPlace } from "./json-scan";
import { chatCompletionBody, responsesBody, type BodySchema } from "./schemas";
import { chatDialect, responsesDialect, type StreamDialect } from "./streaming/dialects";
import { chatUsage, responsesUsage, type Usage } from "./usage";
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
}

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
};

export const RESPONSES: ModelApi = {
  schema: responsesBody,
  path: "/responses",
  bodyUsage: responsesUsage,
  dialect: () => responsesDialect(),
  edits: () => [],
};
