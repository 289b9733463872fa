import { describe, expect, it } from "vitest";
import { observeFramed } from "./framed";
import {
  chatDialect,
  messagesDialect,
  responsesDialect,
  type StreamDialect,
} from "../src/streaming/dialects";

// The stream dialects on their own: which upstream events end a stream, which are content deltas,
// where usage is and which events the caller does not get. The stream tests drive them through the
// Worker with the mock's streams; these pin the spellings a real upstream may use that the mock
// does not (spaces around a colon, escaped keys, `data:` without its space, split data lines).

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Each event's verdict (kept for the caller or not), then the dialect's state. */
function observeAll(dialect: StreamDialect, events: string[]) {
  const kept = observeFramed(dialect, events);
  return { kept, finished: dialect.finished, deltas: dialect.deltas, usage: dialect.usage };
}

const chunk = (fields: object) =>
  `data: ${JSON.stringify({ object: "chat.completion.chunk", ...fields })}\n\n`;
const contentChunk = (content: unknown) => chunk({ choices: [{ index: 0, delta: { content } }] });
const usage = (input: number, output: number, cached = 0) => ({
  input_tokens: input,
  output_tokens: output,
  cached_tokens: cached,
});

describe("the chat dialect's end", () => {
  it.each([
    ["data: [DONE]\n\n"],
    ["data:[DONE]\n\n"],
    ["data: [DONE]\r\n\r\n"],
    ["data: [DONE]\r\r"],
    ["id: 7\nevent: done\n: a comment\ndata: [DONE]\n\n"],
  ])("ends at %j", (event) => {
    const dialect = chatDialect(false);
    expect(observeAll(dialect, [contentChunk("a"), event])).toEqual({
      kept: [true, true],
      finished: true,
      deltas: 1,
      usage: null,
    });
  });

  it.each([
    ["data: [DONE] \n\n"],
    ["data:  [DONE]\n\n"],
    ["data: [DONE]\ndata: more\n\n"],
    ["data: [DONE]\ndata:\n\n"],
    [": data: [DONE]\n\n"],
    ['data: {"text":"[DONE]"}\n\n'],
    ["data: [done]\n\n"],
    ["data: DONE]\n\n"],
    ["event: [DONE]\n\n"],
  ])("does not end at %j", (event) => {
    const dialect = chatDialect(false);
    expect(observeAll(dialect, [event])).toMatchObject({ kept: [true], finished: false });
  });

  it("passes everything after its end untouched and uncounted", () => {
    const dialect = chatDialect(false);
    const after = [
      contentChunk("late"),
      chunk({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 1 } }),
    ];
    expect(observeAll(dialect, ["data: [DONE]\n\n", ...after])).toEqual({
      kept: [true, true, true],
      finished: true,
      deltas: 0,
      usage: null,
    });
  });

  it("completes a tail that is its end without the blank line, with the line ending it used", () => {
    const complete = (tail: string) => {
      const bytes = chatDialect(false).completeTail(encoder.encode(tail));
      return bytes && decoder.decode(bytes);
    };
    expect(complete("data: [DONE]\n")).toBe("\n");
    expect(complete("data: [DONE]\r\n")).toBe("\r\n");
    expect(complete("data: [DONE]\r")).toBe("\r");
    expect(complete("id: 3\ndata:[DONE]\n")).toBe("\n");
    expect(complete("data: [DONE]")).toBeNull();
    // Not ended by a line ending: one more byte is not a line ending to stand in for.
    expect(complete("data: [DONE]x")).toBeNull();
    expect(complete("data: [DON")).toBeNull();
    expect(complete("data: [DONE] x\n")).toBeNull();
    expect(complete('data: {"a":"[DONE]"}\n')).toBeNull();
    expect(complete("data: [DONE]\n\n")).toBe("\n");
  });

  it("ends an interrupted stream with the contract's error frame and [DONE]", () => {
    expect(decoder.decode(chatDialect(true).interruption())).toBe(
      "event: error\n" +
        'data: {"error":{"message":"upstream stream interrupted","type":"server_error","param":null,"code":"stream_error"}}\n\n' +
        "data: [DONE]\n\n",
    );
  });
});

describe("the chat dialect's content deltas", () => {
  it.each([
    ['data: {"choices":[{"delta":{"content":"a"}}]}\n\n', 1],
    ['data: {"choices":[{"delta":{"content" : "a"}}]}\n\n', 1],
    ['data: {"choices":[{"delta":{"content":\t "a"}}]}\n\n', 1],
    ['data: {"choices":[{"delta":{"role":"assistant","content":"a","refusal":null}}]}\n\n', 1],
    ['data: {"content":"a"}\n\n', 1],
    ['data:{"choices":[{"delta":{"content":"a"}}],"x":1}\n\n', 1],
    ['data: {"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}\n\n', 1],
    ['data: {"choices":[{"delta":{"content":""}}]}\n\n', 0],
    ['data: {"choices":[{"delta":{"content":null}}]}\n\n', 0],
    ['data: {"choices":[{"delta":{"content":["a"]}}]}\n\n', 0],
    ['data: {"choices":[{"delta":{"xcontent":"a"}}]}\n\n', 0],
    ['data: {"choices":[{"delta":{"contents":"a"}}]}\n\n', 0],
    ['data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n', 0],
    ['data: {"choices":[{"delta":{"tool":"\\"content\\":\\"a\\""}}]}\n\n', 0],
    ['data: {"choices":[{"delta":{"name":"content","content":""}}]}\n\n', 0],
    [": content\n\n", 0],
  ])("counts %j as %i", (event, count) => {
    const dialect = chatDialect(false);
    expect(observeAll(dialect, [event, event])).toEqual({
      kept: [true, true],
      finished: false,
      deltas: 2 * count,
      usage: null,
    });
  });
});

describe("the chat dialect's usage", () => {
  const usageChunk = (fields: object) => chunk({ choices: [], ...fields });

  it("reads the usage chunk and keeps it from a caller who did not ask for it", () => {
    const event = usageChunk({ usage: { prompt_tokens: 9, completion_tokens: 3 } });
    expect(observeAll(chatDialect(false), [contentChunk("a"), event])).toEqual({
      kept: [true, false],
      finished: false,
      deltas: 1,
      usage: usage(9, 3),
    });
    expect(observeAll(chatDialect(true), [event])).toEqual({
      kept: [true],
      finished: false,
      deltas: 0,
      usage: usage(9, 3),
    });
  });

  it("reads usage spelled with spaces and cached tokens, and from a content chunk it keeps", () => {
    const spaced =
      'data: {"choices": [], "usage" :\t {"prompt_tokens": 9, "completion_tokens": 3,' +
      ' "prompt_tokens_details": {"cached_tokens": 4}}}\n\n';
    expect(observeAll(chatDialect(false), [spaced])).toMatchObject({ kept: [false], usage: usage(9, 3, 4) });
    const last = chunk({
      choices: [{ delta: { content: "z" } }],
      usage: { prompt_tokens: 2, completion_tokens: 1 },
    });
    expect(observeAll(chatDialect(false), [last])).toEqual({
      kept: [true],
      finished: false,
      deltas: 1,
      usage: usage(2, 1),
    });
  });

  it("keeps the last believable usage, and passes chunks whose usage is null or not an object", () => {
    const dialect = chatDialect(false);
    const events = [
      usageChunk({ usage: { prompt_tokens: 5, completion_tokens: 5 } }),
      usageChunk({ usage: { prompt_tokens: -1, completion_tokens: 5 } }),
      usageChunk({ usage: null }),
      usageChunk({ usage: [1] }),
      chunk({ choices: [{ delta: { content: "a" } }], usage: null }),
      'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":\n\n',
      chunk({ choices: [{ delta: {} }], meta: { usage: 1 }, x: { "usage ": {} } }),
    ];
    expect(observeAll(dialect, events)).toEqual({
      // An unbelievable or unreadable usage chunk is still the usage chunk: it stays out.
      kept: [false, false, true, true, true, true, true],
      finished: false,
      deltas: 1,
      usage: usage(5, 5),
    });
  });

  it("reads a chunk whose data is split over data lines as an SSE client joins them", () => {
    const events = [
      'data: {"choices":[{"delta":{"content":\ndata: "a"}}]}\n\n',
      'data: {"choices":[{"delta":{"content"\r\ndata: :"b"}}]}\r\n\r\n',
      'data: {"choices":[{"delta":{"content":\rdata:"c"}}]}\r\r',
      'data: {"choices":[{"delta":{"content":\rdata:""}}]}\r\r',
      'id: 3\nevent: chunk\ndata: {"choices":[{"delta":{"content":"d"}}]}\n\n',
      'data: {"choices":[],"usage":\ndata: {"prompt_tokens":9,"completion_tokens":3}}\n\n',
    ];
    expect(observeAll(chatDialect(false), events)).toEqual({
      kept: [true, true, true, true, true, false],
      finished: false,
      deltas: 4,
      usage: usage(9, 3),
    });
    expect(observeAll(chatDialect(true), events.slice(-1))).toMatchObject({
      kept: [true],
      usage: usage(9, 3),
    });
  });

  it("counts no delta and keeps a split chunk without content or without a usage object", () => {
    const split = (head: string, rest: string) => `data: {"choices":${head},\ndata: ${rest}}\n\n`;
    const events = [
      split('[{"index":0', '"finish_reason":"stop"}]'),
      split("[null]", '"x":1'),
      split('[{"delta":{"role":"assistant"}}]', '"x":1'),
      split('[{"delta":{"content":null}}]', '"x":1'),
      split("[]", '"usage":null'),
      split("[]", '"usage":5'),
      split("[]", '"usage":[1]'),
    ];
    expect(observeAll(chatDialect(false), events)).toEqual({
      kept: events.map(() => true),
      finished: false,
      deltas: 0,
      usage: null,
    });
  });

  it("does not take a usage object inside a string or under another key", () => {
    const events = [
      chunk({ choices: [{ delta: { content: '"usage":{"prompt_tokens":1,"completion_tokens":1}' } }] }),
      chunk({ choices: [], not_usage: { prompt_tokens: 1, completion_tokens: 1 } }),
      chunk({ choices: [], xusage: { prompt_tokens: 1, completion_tokens: 1 } }),
      // The word as a list's item, an object after it: no key.
      chunk({ choices: [], list: ["usage", { prompt_tokens: 1, completion_tokens: 1 }] }),
    ];
    expect(observeAll(chatDialect(false), events)).toEqual({
      kept: [true, true, true, true],
      finished: false,
      deltas: 1,
      usage: null,
    });
  });
});

describe("the Responses dialect", () => {
  const event = (type: string, fields: object = {}) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n`;
  const interruption = (dialect: StreamDialect) => {
    const text = decoder.decode(dialect.interruption());
    const [error, failed] = text
      .split("\n\n")
      .filter(Boolean)
      .map((frame) => JSON.parse(frame.split("\ndata: ")[1]!));
    return { text, error, failed };
  };

  it.each(["response.completed", "response.failed", "response.incomplete"])(
    "ends at %s, reading the usage of its response",
    (type) => {
      const dialect = responsesDialect();
      const usageOf = { input_tokens: 8, output_tokens: 2, input_tokens_details: { cached_tokens: 3 } };
      expect(
        observeAll(dialect, [
          event("response.output_text.delta", { delta: "a" }),
          event(type, { response: { id: "resp_1", usage: usageOf } }),
          event("response.output_text.delta", { delta: "late" }),
        ]),
      ).toEqual({ kept: [true, true, true], finished: true, deltas: 1, usage: usage(8, 2, 3) });
    },
  );

  it("judges an event by its own type, however it is spelled or split", () => {
    const split = 'data: {"type":\ndata: "response.completed", "response": {}}\n\n';
    expect(observeAll(responsesDialect(), [split])).toMatchObject({ finished: true, usage: null });
    const escaped = 'data:{"type":"response.complet\\u0065d"}\n\n';
    expect(observeAll(responsesDialect(), [escaped])).toMatchObject({ finished: true });
    for (const notTerminal of [
      event("response.in_progress", { response: { metadata: { type: "response.completed" } } }),
      event("response.completed.x"),
      'event: response.completed\ndata: {"type":"response.completed"\n\n',
      "event: response.completed\ndata: [DONE]\n\n",
      'data: ["response.completed"]\n\n',
      ": response.completed\n\n",
    ]) {
      expect(observeAll(responsesDialect(), [notTerminal]).finished, notTerminal).toBe(false);
    }
  });

  it("counts output text deltas only", () => {
    const events = [
      event("response.output_text.delta", { delta: "a" }),
      event("response.output_text.delta", { delta: "" }),
      event("response.output_text.done", { text: "a" }),
      event("response.function_call_arguments.delta", { delta: "{" }),
    ];
    expect(observeAll(responsesDialect(), events)).toEqual({
      kept: [true, true, true, true],
      finished: false,
      deltas: 2,
      usage: null,
    });
  });

  it("numbers its frames after the last sequence number seen and names the announced response", () => {
    const dialect = responsesDialect();
    observeAll(dialect, [
      event("response.created", { sequence_number: 0, response: { id: "resp_A" } }),
      event("response.in_progress", { sequence_number: 1, response: { id: "resp_B" } }),
      event("response.output_text.delta", { sequence_number: 2, response: { id: "resp_C" } }),
      event("response.output_text.delta", { sequence_number: 3.5 }),
      event("response.output_text.delta", { sequence_number: "9" }),
      event("response.output_text.delta"),
    ]);
    const { text, error, failed } = interruption(dialect);
    expect(text.startsWith("event: error\ndata: ")).toBe(true);
    expect(text).toContain("\n\nevent: response.failed\ndata: ");
    expect(text.endsWith("\n\n")).toBe(true);
    expect(error).toEqual({
      type: "error",
      code: "stream_error",
      message: "upstream stream interrupted",
      param: null,
      sequence_number: 3,
      error: {
        message: "upstream stream interrupted",
        type: "server_error",
        param: null,
        code: "stream_error",
      },
    });
    expect(failed).toEqual({
      type: "response.failed",
      sequence_number: 4,
      id: "resp_A",
      object: "response",
      status: "failed",
      response: {
        id: "resp_A",
        object: "response",
        status: "failed",
        error: { code: "stream_error", message: "upstream stream interrupted" },
      },
    });
  });

  it("takes the id of response.in_progress when response.created gave none", () => {
    const dialect = responsesDialect();
    observeAll(dialect, [
      event("response.created", { sequence_number: 4, response: { id: 5 } }),
      event("response.in_progress", { sequence_number: 5, response: { id: "resp_B" } }),
    ]);
    expect(interruption(dialect).failed).toMatchObject({ sequence_number: 7, id: "resp_B" });
  });

  it("starts at 0 and makes up a response id when the upstream gave neither", () => {
    const dialect = responsesDialect();
    // An event whose data is no JSON object still goes to the caller.
    const { kept } = observeAll(dialect, [
      "data: not json\n\n",
      event("response.created", { response: null }),
    ]);
    expect(kept).toEqual([true, true]);
    const { error, failed } = interruption(dialect);
    expect(error.sequence_number).toBe(0);
    expect(failed.sequence_number).toBe(1);
    expect(failed.id).toMatch(/^resp_gw_[0-9a-f]{32}$/);
    expect(failed.response.id).toBe(failed.id);
  });

  it("completes a tail that is a whole terminal event without its blank line", () => {
    const complete = (tail: string) => {
      const bytes = responsesDialect().completeTail(encoder.encode(tail));
      return bytes && decoder.decode(bytes);
    };
    const done = 'event: response.completed\ndata: {"type":"response.completed"}';
    expect(complete(`${done}\n`)).toBe("\n");
    expect(complete(`${done}\r\n`)).toBe("\r\n");
    expect(complete(`${done}\r`)).toBe("\r");
    expect(complete(done)).toBeNull();
    expect(complete(`${done}}`)).toBeNull();
    expect(complete('data: {"type":"response.completed"\n')).toBeNull();
    expect(complete('data: {"type":"response.output_text.delta"}\n')).toBeNull();
  });
});

describe("the Messages dialect", () => {
  const anthropic = (type: string, fields: object = {}) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n`;
  const delta = (text: string) =>
    anthropic("content_block_delta", { index: 0, delta: { type: "text_delta", text } });

  it("reads usage only from a message_delta's usage object, and ends at message_stop whatever it carries", () => {
    const events = [
      anthropic("message_start", { message: null }),
      anthropic("message_start", { message: { usage: { input_tokens: 5, output_tokens: 1 } } }),
      anthropic("message_delta", { usage: null }),
      anthropic("message_delta", { usage: 5 }),
      anthropic("message_stop", { usage: { output_tokens: 9 } }),
    ];
    expect(observeAll(messagesDialect(), events)).toEqual({
      kept: events.map(() => true),
      finished: true,
      deltas: 0,
      usage: null,
    });
  });

  it("passes an event without data, and everything after message_stop, untouched and uncounted", () => {
    const dialect = messagesDialect();
    const events = [
      anthropic("message_start", { message: { usage: { input_tokens: 5, output_tokens: 1 } } }),
      "event: ping\n\n",
      ": a comment\n\n",
      delta("a"),
      anthropic("message_delta", { usage: { output_tokens: 2 } }),
      anthropic("message_stop"),
      delta("late"),
      anthropic("message_delta", { usage: { output_tokens: 90 } }),
    ];
    expect(observeAll(dialect, events)).toEqual({
      kept: events.map(() => true),
      finished: true,
      deltas: 1,
      usage: usage(5, 2),
    });
  });
});
