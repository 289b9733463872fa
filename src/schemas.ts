import * as v from "valibot";

/**
 * Request bodies, checked only where the gateway interprets them. Objects are loose: every
 * field the gateway does not know passes through to the upstream untouched.
 */

const model = v.pipe(v.string("model must be a string"), v.nonEmpty("model must be a non-empty string"));
const stream = v.optional(v.nullable(v.boolean("stream must be a boolean or null")));
const positiveInteger = (name: string) => {
  const message = `${name} must be a positive integer`;
  return v.pipe(v.number(message), v.integer(message), v.minValue(1, message));
};

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
  n: v.optional(v.nullable(positiveInteger("n"))),
});

export const responsesBody = v.looseObject({
  model,
  input: v.optional(v.union([v.string(), v.array(v.unknown())], "input must be a string or an array")),
  stream,
});

const anthropicMessages = v.pipe(
  v.array(
    v.looseObject(
      { role: v.picklist(["user", "assistant"], "role must be 'user' or 'assistant'") },
      "each message must be an object",
    ),
    "messages must be an array",
  ),
  v.nonEmpty("messages must not be empty"),
);

/** `POST /v1/messages/count_tokens`: the model and its messages. */
export const countTokensBody = v.looseObject({ model, messages: anthropicMessages });

/** `POST /v1/messages`: Anthropic's Messages API, whose stream flag may not be null. */
export const messagesBody = v.looseObject({
  model,
  messages: anthropicMessages,
  max_tokens: positiveInteger("max_tokens"),
  stream: v.optional(v.boolean("stream must be a boolean")),
});

export type BodySchema =
  typeof chatCompletionBody | typeof responsesBody | typeof messagesBody | typeof countTokensBody;
