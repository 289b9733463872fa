import { anthropicEnvelope } from "../errors";
import { chatUsage, messagesUsage, responsesUsage, type Usage } from "../usage";

/**
 * What "finished" and "interrupted" mean for each API's event stream, and where its usage is. The
 * stream driver asks its dialect whether the upstream's terminal event has been seen, what to write
 * when it has not, and whether an event goes to the caller at all.
 */
export interface StreamDialect {
  /**
   * Sees each complete upstream event, in order, until the terminal one, with the number of its
   * lines (the framer counts them); false: not for the caller.
   */
  observe(event: Uint8Array, lines: number): boolean;
  /** The upstream has sent its terminal event. */
  readonly finished: boolean;
  /** The usage the upstream reported in the stream, if it has. */
  readonly usage: Usage | null;
  /** The content-delta events seen: what the estimate counts as output tokens. */
  readonly deltas: number;
  /**
   * If the unfinished `tail` is the terminal event lacking only its blank line, the bytes that
   * complete it; otherwise null.
   */
  completeTail(tail: Uint8Array): Uint8Array | null;
  /** The frames that end an interrupted stream. */
  interruption(): Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The line ending a tail finishes with, if it finishes a line at all. */
function trailingLineEnd(text: string): string | null {
  if (text.endsWith("\r\n")) return "\r\n";
  if (text.endsWith("\n")) return "\n";
  // At the end of the stream a lone `\r` ends its line: no `\n` can follow any more.
  if (text.endsWith("\r")) return "\r";
  return null;
}

const linesOf = (text: string) => text.split(/\r\n|\r|\n/);

/** The event's data: its `data:` lines joined, as an SSE client sees it. */
function dataOf(text: string): string {
  const data: string[] = [];
  for (const line of linesOf(text)) {
    if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
  }
  return data.join("\n");
}

/**
 * Whether the bytes hold `DONE]`: a native search for `]` and a look at the bytes before it, so
 * the JSON chunks that make up almost every event are passed over without being decoded.
 */
function mentionsDone(bytes: Uint8Array): boolean {
  for (let i = bytes.indexOf(0x5d, 4); i >= 0; i = bytes.indexOf(0x5d, i + 1)) {
    // "E", "N", "O", "D" before the bracket.
    if (bytes[i - 1] === 0x45 && bytes[i - 2] === 0x4e && bytes[i - 3] === 0x4f && bytes[i - 4] === 0x44)
      return true;
  }
  return false;
}

/**
 * The chat terminator: an event whose data is `[DONE]`, whatever other fields (`id:`, `event:`,
 * comments) it carries. Judged by the event's fields, not by its length or a pattern in its text.
 */
const isDoneEvent = (bytes: Uint8Array, text = decoder.decode(bytes)) =>
  mentionsDone(bytes) && dataOf(text) === "[DONE]";

const CHAT_INTERRUPTION = encoder.encode(
  "event: error\n" +
    'data: {"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\n' +
    "data: [DONE]\n\n",
);

// Chat chunks are not decoded: a native search for each `:` and a look at the bytes around it find
// the two keys that matter, and a chunk is parsed only when it holds a usage object (the usage
// chunk, or a provider's last content chunk). Looking for `"usage"` alone would parse every chunk of
// providers that send `"usage":null` in each. Escaped quotes (`\"content\":`) inside a string
// never match: the byte before such a quote is a backslash.
const COLON = 0x3a;
const QUOTE = 0x22;
const OPEN_BRACE = 0x7b;
const CONTENT_KEY = encoder.encode('"content"');
const USAGE_KEY = encoder.encode('"usage"');
// JSON's whitespace within one line: an event searched here is one data line (see chatDialect).
const isSpace = (byte: number | undefined) => byte === 0x20 || byte === 0x09;

/** Whether `key` (quotes included) ends right before `end`, whitespace aside. */
function keyBefore(bytes: Uint8Array, end: number, key: Uint8Array): boolean {
  let i = end - 1;
  while (isSpace(bytes[i])) i--;
  if (i + 1 < key.length) return false;
  for (let k = key.length - 1; k >= 0; k--, i--) if (bytes[i] !== key[k]) return false;
  return true;
}

/** Where the last byte before `end` that is not whitespace is. */
function lastByteBefore(bytes: Uint8Array, end: number): number {
  let i = end - 1;
  while (isSpace(bytes[i])) i--;
  return i;
}

/**
 * Whether a chat chunk holds a `content` key with a non-empty string (in a chat chunk, only a
 * delta's content). Searched from the end, where a delta's content sits, near `finish_reason`.
 */
function hasContentDelta(bytes: Uint8Array): boolean {
  for (let i = bytes.lastIndexOf(COLON); i > 0; i = bytes.lastIndexOf(COLON, i - 1)) {
    let v = i + 1;
    while (isSpace(bytes[v])) v++;
    // A non-empty string value: `""` is no delta.
    if (bytes[v] === QUOTE && bytes[v + 1] !== QUOTE && keyBefore(bytes, i, CONTENT_KEY)) return true;
  }
  return false;
}

/** Whether a chat chunk holds a `usage` key whose value is an object: found by its `{`, of which there are few. */
function hasUsageObject(bytes: Uint8Array): boolean {
  for (let i = bytes.indexOf(OPEN_BRACE, 1); i > 0; i = bytes.indexOf(OPEN_BRACE, i + 1)) {
    const colon = lastByteBefore(bytes, i);
    if (bytes[colon] === COLON && keyBefore(bytes, colon, USAGE_KEY)) return true;
  }
  return false;
}

/** Whether parsed chat data holds a delta with non-empty string content. */
const hasParsedDelta = (data: EventData | undefined) =>
  Array.isArray(data?.choices) &&
  data.choices.some((choice: { delta?: { content?: unknown } } | null) => {
    const content = choice?.delta?.content;
    return typeof content === "string" && content !== "";
  });

/**
 * Chat completions: finished by `data: [DONE]`. The gateway asks every chat stream for its usage
 * chunk (`choices: []`); unless the caller asked for it too (`forwardUsage`), it is read and left out.
 */
export function chatDialect(forwardUsage: boolean): StreamDialect {
  let finished = false;
  let usage: Usage | null = null;
  let deltas = 0;
  return {
    observe(event, lines) {
      if (finished) return true;
      if (mentionsDone(event) && (finished = isDoneEvent(event))) return true;
      let data: EventData | undefined;
      if (lines > 1) {
        // Its data split over lines, or other fields beside it: the searches below would meet a
        // field's name in the middle of its JSON. Judged by its data as an SSE client joins it.
        data = parseData(decoder.decode(event));
        if (hasParsedDelta(data)) deltas++;
        const found = data?.usage;
        if (!found || typeof found !== "object" || Array.isArray(found)) return true;
      } else {
        if (hasContentDelta(event)) deltas++;
        if (!hasUsageObject(event)) return true;
        data = parseData(decoder.decode(event));
      }
      usage = chatUsage(data) ?? usage;
      const usageOnly = Array.isArray(data?.choices) && data.choices.length === 0;
      return forwardUsage || !usageOnly;
    },
    get finished() {
      return finished;
    },
    get usage() {
      return usage;
    },
    get deltas() {
      return deltas;
    },
    completeTail(tail) {
      if (!mentionsDone(tail)) return null;
      const text = decoder.decode(tail);
      const lineEnd = trailingLineEnd(text);
      return lineEnd && isDoneEvent(tail, text.slice(0, -lineEnd.length)) ? encoder.encode(lineEnd) : null;
    },
    interruption: () => CHAT_INTERRUPTION,
  };
}

// Responses API events are judged by their parsed data: the event's own top-level `type` and
// `sequence_number`, whatever the key order, JSON escapes (`"response.complet\u0065d"`) or
// `data:` lines they are split over, and never a nested object (an echoed `metadata` can hold
// anything a caller sent). Parsing every event costs a little more than searching its text
// (bench/README.md has the figures); a search was fooled by each of those spellings.

const TERMINAL_TYPES = new Set(["response.completed", "response.failed", "response.incomplete"]);
/** The events that carry the response id. */
const ANNOUNCING_TYPES = new Set(["response.created", "response.in_progress"]);

interface EventData {
  type?: unknown;
  sequence_number?: unknown;
  response?: { id?: unknown } | null;
  choices?: unknown;
  message?: { usage?: unknown } | null;
  usage?: unknown;
}

/** The parsed data of an event, or undefined when it is not a JSON object. */
function parseData(text: string): EventData | undefined {
  try {
    const data: unknown = JSON.parse(dataOf(text));
    return data && typeof data === "object" ? data : undefined;
  } catch {
    return undefined;
  }
}

const isTerminal = (data: EventData | undefined) =>
  typeof data?.type === "string" && TERMINAL_TYPES.has(data.type);

/**
 * The line ending that completes `tail` when it is a whole event whose parsed data ends the stream
 * (`isEnd`), lacking only its blank line; otherwise null. Only whole JSON completes it: a data line
 * may still be missing.
 */
function completeParsedTail(tail: Uint8Array, isEnd: (data: EventData | undefined) => boolean) {
  const text = decoder.decode(tail);
  const lineEnd = trailingLineEnd(text);
  return lineEnd && isEnd(parseData(text.slice(0, -lineEnd.length))) ? encoder.encode(lineEnd) : null;
}

const INTERRUPTED = "upstream stream interrupted";

/** The `event: error` and `event: response.failed` frames that end an interrupted Responses stream. */
function responsesInterruption(sequenceNumber: number, id: string): Uint8Array {
  const error = {
    type: "error",
    code: "stream_error",
    message: INTERRUPTED,
    param: null,
    sequence_number: sequenceNumber,
    error: { message: INTERRUPTED, type: "server_error", param: null, code: "stream_error" },
  };
  const failed = {
    type: "response.failed",
    sequence_number: sequenceNumber + 1,
    id,
    object: "response",
    status: "failed",
    response: {
      id,
      object: "response",
      status: "failed",
      error: { code: "stream_error", message: INTERRUPTED },
    },
  };
  return encoder.encode(
    `event: error\ndata: ${JSON.stringify(error)}\n\nevent: response.failed\ndata: ${JSON.stringify(failed)}\n\n`,
  );
}

/**
 * Responses API: finished by `response.completed`, `response.failed` or `response.incomplete`.
 * Each event's data is parsed (see above) for its type and sequence number, and the announcing
 * event (`response.created`, else `response.in_progress`) for the response id. When no id was
 * seen the frames name a made-up `resp_gw_<32 hex>` response. The usage is the terminal event's
 * `response.usage`.
 */
export function responsesDialect(): StreamDialect {
  let finished = false;
  let lastSequenceNumber: number | undefined;
  let responseId: string | undefined;
  let usage: Usage | null = null;
  let deltas = 0;
  return {
    observe(event) {
      if (finished) return true;
      const data = parseData(decoder.decode(event));
      if (!data) return true;
      if (Number.isSafeInteger(data.sequence_number)) lastSequenceNumber = data.sequence_number as number;
      if (data.type === "response.output_text.delta") deltas++;
      else if (isTerminal(data)) {
        finished = true;
        usage = responsesUsage(data.response);
      } else if (responseId === undefined && ANNOUNCING_TYPES.has(data.type as string)) {
        const id = data.response?.id;
        if (typeof id === "string") responseId = id;
      }
      return true;
    },
    get finished() {
      return finished;
    },
    get usage() {
      return usage;
    },
    get deltas() {
      return deltas;
    },
    completeTail: (tail) => completeParsedTail(tail, isTerminal),
    interruption() {
      const sequenceNumber = lastSequenceNumber === undefined ? 0 : lastSequenceNumber + 1;
      const id = responseId ?? `resp_gw_${crypto.randomUUID().replaceAll("-", "")}`;
      return responsesInterruption(sequenceNumber, id);
    },
  };
}

// Messages events are judged by their parsed data's own `type`, as Responses events are (see above).

/** The events after which an Anthropic stream has nothing more to say: its end, or its own error. */
const MESSAGES_TERMINAL_TYPES = new Set(["message_stop", "error"]);

const isMessagesTerminal = (data: EventData | undefined) =>
  typeof data?.type === "string" && MESSAGES_TERMINAL_TYPES.has(data.type);

const MESSAGES_INTERRUPTION = encoder.encode(
  `event: error\ndata: ${anthropicEnvelope("api_error", INTERRUPTED)}\n\n`,
);

/**
 * Anthropic's Messages API: finished by `message_stop`, or by an `error` event of the upstream's
 * own (Anthropic ends its stream there, and the caller already has an error). No `[DONE]`. The usage
 * is `message_start`'s `message.usage` with the last `message_delta`'s `usage` over it, once a
 * `message_delta` has told the output.
 */
export function messagesDialect(): StreamDialect {
  let finished = false;
  let started: object | undefined;
  let usage: Usage | null = null;
  let deltas = 0;
  return {
    observe(event) {
      if (finished) return true;
      const data = parseData(decoder.decode(event));
      if (!data) return true;
      if (data.type === "content_block_delta") deltas++;
      else if (data.type === "message_start") started = data.message?.usage ?? undefined;
      else if (data.type === "message_delta" && data.usage && typeof data.usage === "object") {
        usage = messagesUsage({ usage: { ...started, ...data.usage } }) ?? usage;
      } else finished = isMessagesTerminal(data);
      return true;
    },
    get finished() {
      return finished;
    },
    get usage() {
      return usage;
    },
    get deltas() {
      return deltas;
    },
    completeTail: (tail) => completeParsedTail(tail, isMessagesTerminal),
    interruption: () => MESSAGES_INTERRUPTION,
  };
}
