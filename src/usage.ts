import * as v from "valibot";
import type { Pricing } from "./records";

/**
 * The tokens of one request, as the contract's "Usage" section reads them from an upstream's
 * answer or estimates them, and what they cost.
 */
export interface Usage {
  input_tokens: number;
  output_tokens: number;
  /** Part of the input, served from the upstream's prompt cache. */
  cached_tokens: number;
}

// No single request has used a billion tokens: a larger figure is not believed (and would break the
// exact cost arithmetic below).
const MAX_TOKENS = 1e9;
const tokens = v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(MAX_TOKENS));
const details = v.optional(v.nullable(v.looseObject({ cached_tokens: v.optional(v.nullable(tokens)) })));

/** Usage as an upstream reports it; cached tokens are part of the input, so never more than it. */
const reported = (input: number, output: number, cached: number | null | undefined): Usage => ({
  input_tokens: input,
  output_tokens: output,
  cached_tokens: Math.min(cached ?? 0, input),
});

const chatUsageOf = v.pipe(
  v.looseObject({
    usage: v.looseObject({
      prompt_tokens: tokens,
      completion_tokens: tokens,
      prompt_tokens_details: details,
    }),
  }),
  v.transform(({ usage }) =>
    reported(usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details?.cached_tokens),
  ),
);

const responsesUsageOf = v.pipe(
  v.looseObject({
    usage: v.looseObject({ input_tokens: tokens, output_tokens: tokens, input_tokens_details: details }),
  }),
  v.transform(({ usage }) =>
    reported(usage.input_tokens, usage.output_tokens, usage.input_tokens_details?.cached_tokens),
  ),
);

const cacheTokens = v.optional(v.nullable(tokens));
const messagesUsageOf = v.pipe(
  v.looseObject({
    usage: v.looseObject({
      input_tokens: tokens,
      output_tokens: tokens,
      cache_read_input_tokens: cacheTokens,
      cache_creation_input_tokens: cacheTokens,
    }),
  }),
  v.transform(({ usage }) => {
    // Anthropic's input_tokens leave out the prompt cache's reads and writes: both are input too.
    const cached = usage.cache_read_input_tokens ?? 0;
    const input = usage.input_tokens + cached + (usage.cache_creation_input_tokens ?? 0);
    return reported(input, usage.output_tokens, cached);
  }),
);

/**
 * The usage of a chat completion body or of a stream's usage chunk (`usage.prompt_tokens`,
 * `completion_tokens`, `prompt_tokens_details.cached_tokens`), or null when it reports none that
 * can be believed.
 *
 * @example
 * chatUsage({ usage: { prompt_tokens: 9, completion_tokens: 3 } }); // { input_tokens: 9, output_tokens: 3, cached_tokens: 0 }
 */
export function chatUsage(value: unknown): Usage | null {
  const result = v.safeParse(chatUsageOf, value);
  return result.success ? result.output : null;
}

/** The usage of a Responses body or of a terminal event's `response`, or null (see {@link chatUsage}). */
export function responsesUsage(value: unknown): Usage | null {
  const result = v.safeParse(responsesUsageOf, value);
  return result.success ? result.output : null;
}

/**
 * The usage of a Messages body, or of a stream's `message_start` usage merged with its last
 * `message_delta`'s: cache reads and writes count as input, cache reads also as cached.
 *
 * @example
 * messagesUsage({ usage: { input_tokens: 5, cache_read_input_tokens: 4, output_tokens: 3 } }); // { input_tokens: 9, output_tokens: 3, cached_tokens: 4 }
 */
export function messagesUsage(value: unknown): Usage | null {
  const result = v.safeParse(messagesUsageOf, value);
  return result.success ? result.output : null;
}

/**
 * The contract's estimate where the upstream reported nothing: a token per 4 bytes of the request
 * body, and a token per content delta that went out.
 */
export const estimateUsage = (bodyBytes: number, deltas: number): Usage => ({
  input_tokens: Math.ceil(bodyBytes / 4),
  output_tokens: deltas,
  cached_tokens: 0,
});

// The body fields that cap a request's output, on either route.
const OUTPUT_CAPS = ["max_tokens", "max_completion_tokens", "max_output_tokens"] as const;

/**
 * The contract's estimate of what a request may use, reserved at admission against token limits:
 * a token per 4 bytes of its body, plus its output cap (the largest of `max_tokens`,
 * `max_completion_tokens` and `max_output_tokens` that is a positive integer: an upstream may
 * honour any of them), else `defaultCap` (DEFAULT_MAX_OUTPUT_TOKENS). At most a billion, like a
 * reported figure.
 *
 * @example
 * reservationEstimate({ model: "m", max_tokens: 100 }, 400, 4096); // 200
 */
export function reservationEstimate(
  body: Readonly<Record<string, unknown>>,
  bodyBytes: number,
  defaultCap: number,
): number {
  let cap = 0;
  for (const field of OUTPUT_CAPS) {
    const value = body[field];
    if (typeof value === "number" && Number.isSafeInteger(value) && value > cap) cap = value;
  }
  return Math.min(Math.ceil(bodyBytes / 4) + (cap || defaultCap), MAX_TOKENS);
}

/**
 * A budget in whole nano-dollars, the unit costs are kept in: at least one, so that a budget is
 * never nothing.
 *
 * @example
 * budgetNanos(50); // 50_000_000_000
 */
export const budgetNanos = (usd: number): number => Math.max(1, Math.round(usd * 1e9));

/**
 * What `usage` costs under `pricing`, in whole nano-dollars: an integer, so that sums over any
 * number of requests are exact (each request is rounded once, by at most half a nano-dollar). A
 * model without pricing costs nothing.
 *
 * @example
 * costNanos({ input_tokens: 1000, output_tokens: 10, cached_tokens: 0 }, { input_per_mtok: 0.15, output_per_mtok: 0.6 }); // 156000
 */
export function costNanos(usage: Usage, pricing: Pricing | undefined): number {
  if (!pricing) return 0;
  const cachedPrice = pricing.cached_input_per_mtok ?? pricing.input_per_mtok;
  const uncached = usage.input_tokens - usage.cached_tokens;
  // Dollars per million tokens x tokens = micro-dollars; x 1000 = nano-dollars.
  const micros =
    uncached * pricing.input_per_mtok +
    usage.cached_tokens * cachedPrice +
    usage.output_tokens * pricing.output_per_mtok;
  return Math.round(micros * 1000);
}
