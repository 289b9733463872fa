// The pure builders of streams.mjs: what a test or the benchmark reproduces the server's bytes with.

import { describe, expect, it } from "vitest";
import {
  chatStreamBytes,
  chatStreamEvents,
  countTokensResult,
  cuesOf,
  messagesResult,
  messagesStreamBytes,
  messagesStreamEvents,
  padJsonLength,
  padJsonPieces,
  rawStreamEvents,
  responsesStreamBytes,
  responsesStreamEvents,
} from "./streams.mjs";

const BUILDERS = [
  { api: "chat", events: chatStreamEvents, bytes: chatStreamBytes },
  { api: "Responses", events: responsesStreamEvents, bytes: responsesStreamBytes },
  { api: "Messages", events: messagesStreamEvents, bytes: messagesStreamBytes },
];

describe.each(BUILDERS)("$api stream builders", ({ events, bytes }) => {
  const body = {
    model: "x",
    stream: true,
    stream_options: { include_usage: true },
    mock: { events: 3, line_ending: "\r\n" },
  };

  it("end each event with a blank line in the cued line ending", () => {
    expect(events(body).every((e) => e.endsWith("\r\n\r\n"))).toBe(true);
  });

  it("give as bytes a Buffer of the joined events", () => {
    expect(Buffer.isBuffer(bytes(body))).toBe(true);
    expect(bytes(body).equals(Buffer.from(events(body).join("")))).toBe(true);
  });
});

describe("chatStreamEvents", () => {
  it("error_event: the role chunk, one content chunk, an in-band error event, then [DONE]", () => {
    const events = chatStreamEvents({ model: "m", stream: true, mock: { error_event: true } });
    expect(events).toHaveLength(4);
    expect(events[2]).toBe(
      'event: error\ndata: {"error":{"message":"provider error","type":"server_error","param":null,"code":"provider_error"}}\n\n',
    );
    expect(events[3]).toBe("data: [DONE]\n\n");
  });
});

describe("rawStreamEvents", () => {
  it("cuts after each blank line of any line ending, and joins back to the text", () => {
    const text = 'data: {"a":"héllo"}\n\nevent: odd\r\ndata: x\r\n\r\n: comment\r\rdata: no end';
    const events = rawStreamEvents(text);
    expect(events).toEqual([
      'data: {"a":"héllo"}\n\n',
      "event: odd\r\ndata: x\r\n\r\n",
      ": comment\r\r",
      "data: no end",
    ]);
    expect(events.join("")).toBe(text);
  });
});

describe("padJsonPieces", () => {
  it("join to a JSON pad of exactly the size asked for, at least the 10 bytes of an empty pad", () => {
    const join = (total: number) => Buffer.concat([...padJsonPieces("x", total)]).toString();
    expect(join(13)).toBe('{"pad":"xxx"}');
    expect(join(padJsonLength(3))).toBe('{"pad":""}');
    expect(Buffer.byteLength(join(200 * 1024 + 1))).toBe(200 * 1024 + 1);
  });
});

describe("cuesOf", () => {
  it("is the mock object, or {} when it is absent or not an object", () => {
    expect(cuesOf({ mock: { hang: true } })).toEqual({ hang: true });
    for (const body of [undefined, null, {}, { mock: "hang" }, { mock: [1] }, { mock: null }, "text"]) {
      expect(cuesOf(body)).toEqual({});
    }
  });
});

describe("messagesStreamEvents", () => {
  /** Each event as [its event line's type, its data's type]. */
  const types = (events: string[]) =>
    events.map((event) => {
      const [eventLine = "", dataLine = ""] = event.split("\n");
      return [eventLine.slice(7), JSON.parse(dataLine.slice(6)).type];
    });

  it("is Anthropic's sequence, each event's line naming its data's type, message_stop last", () => {
    const events = messagesStreamEvents({ model: "m", stream: true, mock: { reply: "a b" } });
    expect(types(events).map(([event]) => event)).toEqual([
      "message_start",
      "content_block_start",
      "ping",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    expect(types(events).every(([event, type]) => event === type)).toBe(true);
  });

  it("reports usage in message_start and message_delta, cached tokens as cache reads; none with no_usage", () => {
    const body = { model: "m", messages: [{ role: "user", content: "x y z" }], mock: { cached_tokens: 2 } };
    const data = messagesStreamEvents(body).map((event) => JSON.parse(event.split("data: ")[1]!));
    expect(data[0].message.usage).toMatchObject({ input_tokens: 3, cache_read_input_tokens: 2 });
    expect(data.at(-2).usage).toEqual({ output_tokens: 5 });
    expect((messagesResult(body, 1) as { usage?: object }).usage).toMatchObject({
      input_tokens: 3,
      output_tokens: 5,
    });
    const none = messagesStreamEvents({ model: "m", mock: { no_usage: true } }).join("");
    expect(none).not.toContain("usage");
    expect(countTokensResult(body)).toEqual({ input_tokens: 3 });
  });

  it("error_event: one delta, then Anthropic's error event, and nothing after it", () => {
    const events = messagesStreamEvents({ model: "m", mock: { error_event: true } });
    expect(types(events).slice(-2)).toEqual([
      ["content_block_delta", "content_block_delta"],
      ["error", "error"],
    ]);
  });
});
