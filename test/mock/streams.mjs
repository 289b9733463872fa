// What the mock upstream sends, as pure builders: bytes in, bytes out, no I/O. The server (server.mjs)
// builds every body from these, so a test or the benchmark that calls them gets exactly the bytes the
// server sends. The cues they honour are listed in README.md beside this file.

/**
 * A parsed JSON request body, of any shape: the builders check what they read.
 * @typedef {any} RequestBody
 */

/**
 * The `mock` object of a request body: the cues.
 * @typedef {Record<string, any>} Cues
 */

const DEFAULT_REPLY = "Hello from the mock upstream.";
const MODEL_ID = "mock-model";
// Streams must be byte-for-byte reproducible by chatStreamBytes() and responsesStreamBytes(), so their
// ids and created timestamp are fixed unless the request overrides them (`mock.id`, `mock.created`).
const STREAM_ID = "chatcmpl-mock-stream";
const RESPONSE_STREAM_ID = "resp_mock_stream";
const MESSAGE_ID = "msg_mock_stream";
const STREAM_CREATED = 1700000000;
// Huge bodies are built from pieces of this size, all views of one reused buffer.
const FILLER_PIECE_BYTES = 64 * 1024;

/**
 * The `mock` cue object of a request body, or {} when absent or not an object.
 * @param {RequestBody} body
 * @returns {Cues}
 * @example cuesOf({ model: "m", mock: { hang: true } }) // { hang: true }
 */
export function cuesOf(body) {
  const mock = body && typeof body === "object" ? body.mock : undefined;
  return mock && typeof mock === "object" && !Array.isArray(mock) ? mock : {};
}

/**
 * The reply text: `mock.reply` when it is a string, else the default greeting.
 * @param {RequestBody} body
 */
function replyText(body) {
  const { reply } = cuesOf(body);
  return typeof reply === "string" ? reply : DEFAULT_REPLY;
}

/**
 * Content pieces of a streamed reply. Each word keeps the whitespace that follows it, so the pieces
 * concatenate back to exactly the non-streamed reply ("Hello from" -> ["Hello ", "from"]).
 * `mock.events: N` replaces them with N synthetic pieces "tok0 ".."tok<N-1> " for long streams.
 * @param {RequestBody} body
 * @returns {string[]}
 */
function contentPieces(body) {
  const { events } = cuesOf(body);
  if (Number.isInteger(events) && events >= 0) {
    return Array.from({ length: events }, (_, i) => `tok${i} `);
  }
  const text = replyText(body);
  const pieces = text.match(/\s*\S+\s*/gu) ?? [];
  // Whitespace-only replies still deserve one piece so nothing is lost.
  return pieces.length > 0 || text === "" ? pieces : [text];
}

/**
 * Rough token count: whitespace-separated words.
 * @param {string} text
 */
function countWords(text) {
  return text.split(/\s+/u).filter(Boolean).length;
}

/**
 * The text of a message `content`: a string, or parts whose `text` is a string.
 * @param {any} content
 * @returns {string}
 */
function contentText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content))
    return content.map((p) => (typeof p?.text === "string" ? p.text : "")).join(" ");
  return "";
}

/**
 * Text of all messages, for a plausible prompt_tokens figure.
 * @param {RequestBody} body
 */
function promptText(body) {
  const messages = Array.isArray(body?.messages) ? body.messages : [];
  return messages.map((/** @type {any} */ m) => contentText(m?.content)).join(" ");
}

/**
 * The `mock.cached_tokens` cue: how many input tokens to report as served from the prompt cache.
 * @param {RequestBody} body
 */
function cachedTokensOf(body) {
  const { cached_tokens } = cuesOf(body);
  return Number.isInteger(cached_tokens) && cached_tokens >= 0 ? cached_tokens : 0;
}

/**
 * Whether the `mock.no_usage` cue asks for an upstream that reports no usage at all.
 * @param {RequestBody} body
 */
const withoutUsage = (body) => cuesOf(body).no_usage === true;

/**
 * Chat usage: a word of the messages' text is a prompt token (at least 1).
 * @param {RequestBody} body
 * @param {number} completionTokens
 */
function usageFor(body, completionTokens) {
  const prompt_tokens = Math.max(1, countWords(promptText(body)));
  return {
    prompt_tokens,
    completion_tokens: completionTokens,
    total_tokens: prompt_tokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokensOf(body) },
  };
}

/**
 * The `mock.line_ending` of the stream: "\n" (default), "\r\n" or "\r".
 * @param {RequestBody} body
 * @returns {string}
 */
function lineEndingOf(body) {
  const { line_ending } = cuesOf(body);
  return line_ending === "\r\n" || line_ending === "\r" || line_ending === "\n" ? line_ending : "\n";
}

// ---- chat completions -------------------------------------------------------------------------------------

/**
 * The events of a streamed completion, each a string including its terminating blank line. Reflects
 * the cues that shape the content (reply, events, line_ending, error_event, id, created) and
 * stream_options.include_usage, but not transport faults (reset_*, end_*, stall_*, split, interval_ms,
 * end_without_done).
 *
 * The `model` field echoes body.model: when the gateway renames the model, compute expectations from
 * the body the mock recorded, not the client's.
 * @param {RequestBody} body
 * @returns {string[]}
 * @example chatStreamEvents({ model: "m", stream: true }).at(-1) // "data: [DONE]\n\n"
 */
export function chatStreamEvents(body) {
  const cues = cuesOf(body);
  const eol = lineEndingOf(body);
  /** @param {object | string} payload */
  const dataEvent = (payload) =>
    `data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}${eol}${eol}`;
  const base = {
    id: typeof cues.id === "string" ? cues.id : STREAM_ID,
    object: "chat.completion.chunk",
    created: Number.isInteger(cues.created) ? cues.created : STREAM_CREATED,
    model: body?.model ?? MODEL_ID,
  };
  /**
   * @param {object} delta
   * @param {string | null} finish_reason
   */
  const chunk = (delta, finish_reason = null) => ({
    ...base,
    choices: [{ index: 0, delta, logprobs: null, finish_reason }],
  });

  const pieces = contentPieces(body);
  const events = [dataEvent(chunk({ role: "assistant", content: "" }))];

  if (cues.error_event) {
    // A provider that fails mid-stream: one content chunk, then an in-band error.
    if (pieces.length > 0) events.push(dataEvent(chunk({ content: pieces[0] })));
    const error = {
      error: { message: "provider error", type: "server_error", param: null, code: "provider_error" },
    };
    events.push(`event: error${eol}data: ${JSON.stringify(error)}${eol}${eol}`);
    events.push(dataEvent("[DONE]"));
    return events;
  }

  for (const content of pieces) events.push(dataEvent(chunk({ content })));
  events.push(dataEvent(chunk({}, "stop")));
  if (body?.stream_options?.include_usage && !withoutUsage(body)) {
    events.push(dataEvent({ ...base, choices: [], usage: usageFor(body, pieces.length) }));
  }
  events.push(dataEvent("[DONE]"));
  return events;
}

/**
 * The full serialized chat stream (no transport faults) as one Buffer.
 * @param {RequestBody} body
 * @returns {Buffer}
 */
export function chatStreamBytes(body) {
  return Buffer.from(chatStreamEvents(body).join(""), "utf8");
}

/**
 * The non-streamed chat.completion object; `n` numbers its id.
 * @param {RequestBody} body
 * @param {number} n
 */
export function chatCompletion(body, n) {
  const content = replyText(body);
  const completion = {
    id: `chatcmpl-mock-${n}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: body?.model ?? MODEL_ID,
    choices: [{ index: 0, message: { role: "assistant", content }, logprobs: null, finish_reason: "stop" }],
  };
  return withoutUsage(body) ? completion : { ...completion, usage: usageFor(body, countWords(content)) };
}

// ---- the Responses API, shaped as the openai SDK and the Vercel AI SDK expect -----------------------------

/**
 * Text of `instructions` and `input` (a string, or items with string or part content).
 * @param {RequestBody} body
 */
function inputText(body) {
  const input = body?.input;
  const items = typeof input === "string" ? [input] : Array.isArray(input) ? input : [];
  const texts = items.map((/** @type {any} */ item) =>
    typeof item === "string" ? item : contentText(item?.content),
  );
  if (typeof body?.instructions === "string") texts.unshift(body.instructions);
  return texts.join(" ");
}

/**
 * Responses usage: a word of the instructions and input is an input token (at least 1); null for
 * an upstream that reports none (`mock.no_usage`).
 * @param {RequestBody} body
 * @param {number} outputTokens
 */
function responsesUsage(body, outputTokens) {
  if (withoutUsage(body)) return null;
  const input_tokens = Math.max(1, countWords(inputText(body)));
  return {
    input_tokens,
    input_tokens_details: { cached_tokens: cachedTokensOf(body) },
    output_tokens: outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: input_tokens + outputTokens,
  };
}

/** @param {string} text */
const outputText = (text) => ({ type: "output_text", text, annotations: [], logprobs: [] });

/**
 * An assistant message output item; `text` undefined means no content part yet.
 * @param {string} id
 * @param {string} status
 * @param {string} [text]
 */
function messageItem(id, status, text) {
  return {
    id,
    type: "message",
    status,
    role: "assistant",
    content: text === undefined ? [] : [outputText(text)],
  };
}

/**
 * A `response` object as the API returns it, streamed or not.
 * @param {RequestBody} body
 * @param {{ id: string, created_at: number, status: string, output?: object[], usage?: object | null,
 *   error?: object | null }} fields
 */
function responseObject(body, { id, created_at, status, output = [], usage = null, error = null }) {
  return {
    id,
    object: "response",
    created_at,
    status,
    error,
    incomplete_details: null,
    instructions: typeof body?.instructions === "string" ? body.instructions : null,
    max_output_tokens: null,
    model: body?.model ?? MODEL_ID,
    output,
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    service_tier: "default",
    store: true,
    temperature: 1,
    text: { format: { type: "text" } },
    tool_choice: "auto",
    tools: [],
    top_p: 1,
    truncation: "disabled",
    usage,
    user: null,
    metadata: {},
  };
}

/**
 * The events of a streamed response, each a string including its terminating blank line:
 * `event: <type>` then `data: <json>` whose `type` repeats it and whose `sequence_number` counts from 0.
 * Reflects the same content cues as chatStreamEvents (reply, events, line_ending, error_event, id,
 * created); error_event sends one delta, an `error` event and `response.failed`.
 * @param {RequestBody} body
 * @returns {string[]}
 * @example responsesStreamEvents({ model: "m", stream: true })[0].startsWith("event: response.created\n")
 */
export function responsesStreamEvents(body) {
  const cues = cuesOf(body);
  const eol = lineEndingOf(body);
  /** @type {string[]} */
  const events = [];
  /**
   * @param {string} type
   * @param {object} fields
   */
  const emit = (type, fields) => {
    const data = { type, sequence_number: events.length, ...fields };
    events.push(`event: ${type}${eol}data: ${JSON.stringify(data)}${eol}${eol}`);
  };
  const id = typeof cues.id === "string" ? cues.id : RESPONSE_STREAM_ID;
  const created_at = Number.isInteger(cues.created) ? cues.created : STREAM_CREATED;
  /** @param {{ status: string, output?: object[], usage?: object | null, error?: object }} fields */
  const response = (fields) => responseObject(body, { id, created_at, ...fields });
  const at = { item_id: MESSAGE_ID, output_index: 0, content_index: 0 };

  const pieces = contentPieces(body);
  emit("response.created", { response: response({ status: "in_progress" }) });
  emit("response.in_progress", { response: response({ status: "in_progress" }) });
  emit("response.output_item.added", { output_index: 0, item: messageItem(MESSAGE_ID, "in_progress") });
  emit("response.content_part.added", { ...at, part: outputText("") });

  if (cues.error_event) {
    // A provider that fails mid-stream: one delta, an in-band error, then the terminal failure.
    if (pieces.length > 0) emit("response.output_text.delta", { ...at, delta: pieces[0], logprobs: [] });
    emit("error", { code: "provider_error", message: "provider error", param: null });
    emit("response.failed", {
      response: response({ status: "failed", error: { code: "server_error", message: "provider error" } }),
    });
    return events;
  }

  for (const delta of pieces) emit("response.output_text.delta", { ...at, delta, logprobs: [] });
  const text = pieces.join("");
  const item = messageItem(MESSAGE_ID, "completed", text);
  emit("response.output_text.done", { ...at, text, logprobs: [] });
  emit("response.content_part.done", { ...at, part: outputText(text) });
  emit("response.output_item.done", { output_index: 0, item });
  emit("response.completed", {
    response: response({ status: "completed", output: [item], usage: responsesUsage(body, pieces.length) }),
  });
  return events;
}

/**
 * The full serialized Responses stream (no transport faults) as one Buffer.
 * @param {RequestBody} body
 * @returns {Buffer}
 */
export function responsesStreamBytes(body) {
  return Buffer.from(responsesStreamEvents(body).join(""), "utf8");
}

/**
 * The non-streamed `response` object; `n` numbers its id and its message's.
 * @param {RequestBody} body
 * @param {number} n
 */
export function responsesResult(body, n) {
  const text = replyText(body);
  return responseObject(body, {
    id: `resp_mock_${n}`,
    created_at: Math.floor(Date.now() / 1000),
    status: "completed",
    output: [messageItem(`msg_mock_${n}`, "completed", text)],
    usage: responsesUsage(body, countWords(text)),
  });
}

// ---- the rest ---------------------------------------------------------------------------------------------

/** The GET /v1/models list: the one mock model. */
export function modelList() {
  return {
    object: "list",
    data: [{ id: MODEL_ID, object: "model", created: STREAM_CREATED, owned_by: "mock" }],
  };
}

/**
 * A `raw_stream` text cut after each blank line (`\n\n`, `\r\n\r\n`, `\r\r`), so that `interval_ms`
 * paces it event by event like a generated stream. The pieces join back to exactly the text (cuts
 * fall on ASCII bytes only).
 * @param {string} text
 * @returns {string[]}
 * @example rawStreamEvents("data: 1\n\ndata: 2") // ["data: 1\n\n", "data: 2"]
 */
export function rawStreamEvents(text) {
  const events = [];
  let start = 0;
  for (const match of text.matchAll(/\r\n\r\n|\n\n|\r\r/gu)) {
    const end = match.index + match[0].length;
    events.push(text.slice(start, end));
    start = end;
  }
  if (start < text.length) events.push(text.slice(start));
  return events;
}

/** One FILLER_PIECE_BYTES buffer per filler character, allocated once and reused. */
const fillerBuffers = new Map();

/**
 * `count` bytes of the ASCII character `char` as views of one shared buffer, so a 200 MB body costs
 * 64 KiB of memory however it is written. The views must not be written to.
 * @param {string} char
 * @param {number} count
 * @returns {Generator<Buffer>}
 */
export function* fillerPieces(char, count) {
  let piece = fillerBuffers.get(char);
  if (!piece) fillerBuffers.set(char, (piece = Buffer.alloc(FILLER_PIECE_BYTES, char)));
  for (let left = count; left > 0; left -= piece.length) {
    yield left >= piece.length ? piece : piece.subarray(0, left);
  }
}

/** Prefix and suffix around a JSON string pad: `{"pad":"` + pad + `"}` (10 bytes without the pad). */
const PAD_JSON_PREFIX = Buffer.from('{"pad":"');
const PAD_JSON_SUFFIX = Buffer.from('"}');
const PAD_JSON_OVERHEAD = PAD_JSON_PREFIX.length + PAD_JSON_SUFFIX.length;

/**
 * The size of the pad JSON asked for as `requested` bytes: at least the 10 bytes of an empty pad.
 * @param {number} requested
 */
export function padJsonLength(requested) {
  return Math.max(PAD_JSON_OVERHEAD, requested);
}

/**
 * The pieces of `{"pad":"<char>...<char>"}` of exactly `total` bytes (at least the 10 bytes of an empty
 * pad: smaller totals give that).
 * @param {string} char
 * @param {number} total
 * @returns {Generator<Buffer>}
 */
export function* padJsonPieces(char, total) {
  yield PAD_JSON_PREFIX;
  yield* fillerPieces(char, Math.max(0, total - PAD_JSON_OVERHEAD));
  yield PAD_JSON_SUFFIX;
}

// ---- the Messages API, shaped as Anthropic's SDKs expect --------------------------------------------------

/**
 * Anthropic usage: a word of the messages' text is an input token (at least 1); `cached_tokens`
 * are reported as cache reads, apart from the input as Anthropic reports them.
 * @param {RequestBody} body
 * @param {number} outputTokens
 */
function messagesUsage(body, outputTokens) {
  return {
    input_tokens: Math.max(1, countWords(promptText(body))),
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: cachedTokensOf(body),
    output_tokens: outputTokens,
  };
}

/**
 * A Messages API stream as its events (`event:` + `data:`), ending with `message_stop`; with
 * `no_usage`, no `usage` in `message_start` or `message_delta`. `error_event`: one delta, then
 * Anthropic's in-band `error` event, and the stream ends.
 * @param {RequestBody} body
 * @returns {string[]}
 * @example messagesStreamEvents({ model: "m", stream: true }).at(-1) // 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
 */
export function messagesStreamEvents(body) {
  const cues = cuesOf(body);
  const eol = lineEndingOf(body);
  /** @type {string[]} */
  const events = [];
  /**
   * @param {string} type
   * @param {object} [fields]
   */
  const emit = (type, fields = {}) =>
    events.push(`event: ${type}${eol}data: ${JSON.stringify({ type, ...fields })}${eol}${eol}`);
  const pieces = contentPieces(body);
  const usage = withoutUsage(body) ? {} : { usage: messagesUsage(body, 1) };
  emit("message_start", {
    message: {
      id: typeof cues.id === "string" ? cues.id : MESSAGE_ID,
      type: "message",
      role: "assistant",
      model: body?.model ?? MODEL_ID,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      ...usage,
    },
  });
  emit("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
  emit("ping");
  /** @param {string} text */
  const delta = (text) => emit("content_block_delta", { index: 0, delta: { type: "text_delta", text } });
  if (cues.error_event) {
    if (pieces.length > 0) delta(/** @type {string} */ (pieces[0]));
    emit("error", { error: { type: "overloaded_error", message: "Overloaded" } });
    return events;
  }
  for (const text of pieces) delta(text);
  emit("content_block_stop", { index: 0 });
  emit("message_delta", {
    delta: { stop_reason: "end_turn", stop_sequence: null },
    ...(withoutUsage(body) ? {} : { usage: { output_tokens: pieces.length } }),
  });
  emit("message_stop");
  return events;
}

/**
 * The full serialized Messages stream (no transport faults) as one Buffer.
 * @param {RequestBody} body
 * @returns {Buffer}
 */
export function messagesStreamBytes(body) {
  return Buffer.from(messagesStreamEvents(body).join(""), "utf8");
}

/**
 * The non-streamed Messages API message; `n` numbers its id.
 * @param {RequestBody} body
 * @param {number} n
 */
export function messagesResult(body, n) {
  const text = replyText(body);
  const message = {
    id: `msg_mock_${n}`,
    type: "message",
    role: "assistant",
    model: body?.model ?? MODEL_ID,
    content: [{ type: "text", text }],
    stop_reason: "end_turn",
    stop_sequence: null,
  };
  return withoutUsage(body) ? message : { ...message, usage: messagesUsage(body, countWords(text)) };
}

/**
 * The count_tokens answer: the messages' words.
 * @param {RequestBody} body
 */
export function countTokensResult(body) {
  return { input_tokens: Math.max(1, countWords(promptText(body))) };
}
