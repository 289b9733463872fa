import * as v from "valibot";

/**
 * Request bodies, checked only where the gateway interprets them. Objects are loose: every
 * field the gateway does not know passes through to the upstream untouched.
 */

const model = v.pipe(v.string("model must be a string"), v.nonEmpty("model must be a non-empty string"));
const stream = v.optional(v.nullable(v.boolean("stream must be a boolean or null")));

const chatMessage = v.pipe(
  v.looseObject(
    {
      role: v.string("role must be a string"),
      content: v.optional(
        v.nullable(v.union([v.string(), v.array(v.unknown())], "content must be a string, an array or null")),
      ),
    },
    "each message must be an object",
  ),
  v.forward(
    v.check(
      (message) => message.role !== "tool" || typeof message["tool_call_id"] === "string",
      "tool messages must have a string tool_call_id",
    ),
    ["tool_call_id" as "role"],
  ),
);

export const chatCompletionBody = v.looseObject({
  model,
  messages: v.pipe(
    v.array(chatMessage, "messages must be an array"),
    v.nonEmpty("messages must not be empty"),
  ),
  stream,
  stream_options: v.optional(
    v.nullable(
      v.looseObject(
        { include_usage: v.optional(v.boolean("include_usage must be a boolean")) },
        "stream_options must be an object",
      ),
    ),
  ),
  n: v.optional(
    v.nullable(
      v.pipe(
        v.number("n must be a positive integer"),
        v.integer("n must be a positive integer"),
        v.minValue(1, "n must be a positive integer"),
      ),
    ),
  ),
});

export const responsesBody = v.looseObject({
  model,
  input: v.optional(v.union([v.string(), v.array(v.unknown())], "input must be a string or an array")),
  stream,
});

export type BodySchema = typeof chatCompletionBody | typeof responsesBody;
