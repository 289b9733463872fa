import * as v from "valibot";

/**
 * Admin request bodies. Unlike the model routes, these are the gateway's own API, so unknown
 * fields are refused: a typo must not silently do nothing.
 */

/** Org, user and group ids: printable, no spaces, safe inside a KV key and a URL path. */
export const entityId = v.pipe(
  v.string("must be a string"),
  v.regex(/^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$/, "must be 1-128 letters, digits or ._@:+- starting with a letter or digit"),
);

/** Model ids may hold slashes (`openai/gpt-4o`) but no whitespace, and `*` is reserved. */
export const modelId = v.pipe(
  v.string("must be a string"),
  v.regex(/^[^\s\u0000-\u001f*]{1,200}$/, "must be 1-200 characters without whitespace or '*'"),
  v.maxBytes(200, "must be at most 200 bytes"),
);

const rpm = v.pipe(
  v.number("must be a positive integer"),
  v.integer("must be a positive integer"),
  v.minValue(1, "must be a positive integer"),
  v.maxValue(10_000_000, "must be at most 10000000"),
);

export const createKeyBody = v.strictObject({
  org: entityId,
  user: entityId,
  group: entityId,
  // Bytes, not characters: the key record travels as KV metadata, which holds at most 1,024.
  name: v.optional(
    v.pipe(
      v.string("must be a string"),
      v.maxBytes(200, "must be at most 200 bytes"),
      v.regex(/^[^\p{Cc}]*$/u, "must not contain control characters"),
    ),
  ),
});

export const modelBody = v.strictObject({
  display_name: v.optional(v.pipe(v.string("must be a string"), v.maxLength(200, "must be at most 200 characters"))),
  upstream_model: v.optional(modelId),
});

export const groupBody = v.strictObject({
  models: v.pipe(
    v.array(v.union([v.literal("*"), modelId], "must be a model id or \"*\""), "must be an array of model ids"),
    v.maxLength(1000, "must list at most 1000 models"),
    v.check((models) => new Set(models).size === models.length, "must not list a model twice"),
  ),
});

export const orgBody = v.strictObject({
  requests_per_minute: v.optional(rpm),
  user_requests_per_minute: v.optional(rpm),
});
