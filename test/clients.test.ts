import { exports } from "cloudflare:workers";
import { createOpenAI } from "@ai-sdk/openai";
import { APICallError, generateText, streamText, type LanguageModel } from "ai";
import { describe, expect, it } from "vitest";
import OpenAI, { type APIError } from "openai";
import { GATEWAY, cue, openai, seedTenant, unique, upstreamRequests } from "./helpers";
import { REPLY } from "./sse-reference";

// Stock clients, unmodified, on every model route: what each of the contract's answers is to them.

type Params = { model: string } & Record<string, unknown>;

interface ClientRoute {
  path: string;
  /** The route's own fields of minimal valid params. */
  fields: Record<string, unknown>;
  /** The route's non-streaming call on the `openai` client. */
  create(client: OpenAI, params: Params): Promise<unknown>;
  /** The reply text and output token count of its result. */
  reply(result: unknown): { text: string; outputTokens: number | undefined };
  /** Params the route's schema refuses, and the `param` the refusal names. */
  invalid: [Record<string, unknown>, string];
  /** The route's model on the Vercel AI SDK's OpenAI provider. */
  aiSdkModel(provider: ReturnType<typeof aiSdk>, model: string): LanguageModel;
  /** A cue that breaks the stream after a few text deltas. */
  interruption: Record<string, unknown>;
}

const ROUTES: ClientRoute[] = [
  {
    path: "/v1/chat/completions",
    fields: { messages: [{ role: "user", content: "x" }] },
    create: (client, params) => client.chat.completions.create(params as never),
    reply: (result) => {
      const completion = result as OpenAI.ChatCompletion;
      return {
        text: completion.choices[0]!.message.content!,
        outputTokens: completion.usage?.completion_tokens,
      };
    },
    invalid: [{ messages: [] }, "messages"],
    aiSdkModel: (provider, model) => provider.chat(model),
    interruption: { reset_after_events: 4 },
  },
  {
    path: "/v1/responses",
    fields: { input: "hi" },
    create: (client, params) => client.responses.create(params as never),
    reply: (result) => {
      const response = result as OpenAI.Responses.Response;
      return { text: response.output_text, outputTokens: response.usage?.output_tokens };
    },
    invalid: [{ input: 42 }, "input"],
    aiSdkModel: (provider, model) => provider.responses(model),
    interruption: { reset_after_events: 6 },
  },
];

/** Runs one row on every model route. */
function onEveryRoute(name: string, row: (route: ClientRoute) => Promise<void>) {
  for (const route of ROUTES) it(`${name} (${route.path})`, () => row(route));
}

/** What the call threw (or undefined). */
const failure = (call: Promise<unknown>) =>
  call.then(
    () => undefined,
    (e: unknown) => e,
  );

describe("the openai client on both routes", () => {
  onEveryRoute("returns the reply", async (route) => {
    const tenant = await seedTenant();
    const result = await route.create(openai(tenant.key), { model: tenant.model, ...route.fields });
    expect(route.reply(result)).toEqual({ text: "Hello from the mock upstream.", outputTokens: 5 });
  });

  onEveryRoute("is an AuthenticationError for an unknown key", async (route) => {
    const error = await failure(route.create(openai("sk-gw-nope"), { model: "m", ...route.fields }));
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((error as APIError).status).toBe(401);
  });

  onEveryRoute("is a BadRequestError with code and param for a body the schema refuses", async (route) => {
    const tenant = await seedTenant();
    const [params, param] = route.invalid;
    const error = await failure(
      route.create(openai(tenant.key), { model: tenant.model, ...route.fields, ...params }),
    );
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as APIError).code).toBe("invalid_body");
    expect((error as APIError).param).toBe(param);
  });

  onEveryRoute("is a BadRequestError model_not_found for a model outside the catalog", async (route) => {
    const tenant = await seedTenant();
    const error = await failure(route.create(openai(tenant.key), { model: "nope", ...route.fields }));
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as APIError).code).toBe("model_not_found");
  });

  onEveryRoute("is a PermissionDeniedError for a model the group does not grant", async (route) => {
    const other = unique("model");
    const tenant = await seedTenant({ models: { [unique("model")]: {}, [other]: {} }, grants: [] });
    const error = await failure(route.create(openai(tenant.key), { model: other, ...route.fields }));
    expect(error).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((error as APIError).code).toBe("model_access_denied");
  });

  onEveryRoute("is a RateLimitError with Retry-After once the limit is reached", async (route) => {
    const tenant = await seedTenant({ orgLimits: { requests_per_minute: 1 } });
    const client = openai(tenant.key);
    await route.create(client, { model: tenant.model, ...route.fields });
    const error = await failure(route.create(client, { model: tenant.model, ...route.fields }));
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect((error as APIError).code).toBe("rate_limit_exceeded");
    expect((error as APIError).headers?.get("retry-after")).toMatch(/^\d+$/);
  });

  onEveryRoute(
    "is an InternalServerError with the gateway's code for an empty upstream error",
    async (route) => {
      const tenant = await seedTenant();
      const error = await failure(
        route.create(openai(tenant.key), cue({ status: 503 }, { model: tenant.model, ...route.fields })),
      );
      expect(error).toBeInstanceOf(OpenAI.InternalServerError);
      expect((error as APIError).status).toBe(502);
      expect((error as APIError).code).toBe("upstream_empty_body");
    },
  );

  onEveryRoute("gets the upstream's own error", async (route) => {
    const tenant = await seedTenant();
    const gone =
      '{"error":{"message":"gone","type":"invalid_request_error","param":null,"code":"model_gone"}}';
    const params = cue(
      { status: 404, body: gone, content_type: "application/json" },
      { model: tenant.model, ...route.fields },
    );
    const error = await failure(route.create(openai(tenant.key), params));
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect((error as APIError).code).toBe("model_gone");
  });
});

/**
 * The Vercel AI SDK's OpenAI provider pointed at the Worker. The SDK builds its own request
 * bodies, so the mock upstream's cue is added on the way out, as an extra field the gateway
 * passes through.
 */
function aiSdk(key: string, mock?: Record<string, unknown>) {
  return createOpenAI({
    apiKey: key,
    baseURL: `${GATEWAY}/v1`,
    fetch: async (url, init) => {
      const body =
        mock && typeof init?.body === "string"
          ? JSON.stringify(cue(mock, JSON.parse(init.body)))
          : init?.body;
      return exports.default.fetch(new Request(url, { ...init, body }));
    },
  });
}

/** Runs streamText to its end; returns the text and the error parts it reported. */
async function streamAll(model: LanguageModel) {
  const errors: unknown[] = [];
  const result = streamText({
    model,
    prompt: "hi",
    maxRetries: 0,
    onError: ({ error }) => void errors.push(error),
  });
  let text = "";
  for await (const part of result.fullStream) {
    if (part.type === "text-delta") text += part.text;
  }
  return { text, errors, finishReason: await result.finishReason };
}

describe("the Vercel AI SDK on both routes", () => {
  onEveryRoute("generateText returns the reply", async (route) => {
    const tenant = await seedTenant();
    const id = unique("ai-generate");
    const { text, finishReason } = await generateText({
      model: route.aiSdkModel(aiSdk(tenant.key), tenant.model),
      prompt: "hi",
      maxRetries: 0,
      headers: { "x-request-id": id },
    });
    expect(text).toBe("Hello from the mock upstream.");
    expect(finishReason).toBe("stop");
    expect((await upstreamRequests(id))[0]!.path).toBe(route.path);
  });

  onEveryRoute("generateText surfaces a gateway error as an APICallError", async (route) => {
    const tenant = await seedTenant();
    const error = await failure(
      generateText({ model: route.aiSdkModel(aiSdk(tenant.key), "nope"), prompt: "hi", maxRetries: 0 }),
    );
    expect(APICallError.isInstance(error)).toBe(true);
    expect((error as APICallError).statusCode).toBe(400);
    expect((error as APICallError).responseBody).toContain('"model_not_found"');
  });

  onEveryRoute("streamText yields the whole reply of a clean stream", async (route) => {
    const tenant = await seedTenant();
    const { text, errors, finishReason } = await streamAll(
      route.aiSdkModel(aiSdk(tenant.key, { reply: REPLY }), tenant.model),
    );
    expect(errors).toEqual([]);
    expect(text).toBe(REPLY);
    expect(finishReason).toBe("stop");
  });

  onEveryRoute("streamText reports an interrupted stream as an error", async (route) => {
    const tenant = await seedTenant();
    const { text, errors, finishReason } = await streamAll(
      route.aiSdkModel(aiSdk(tenant.key, { reply: REPLY, ...route.interruption }), tenant.model),
    );
    expect(REPLY.startsWith(text)).toBe(true);
    expect(text.length).toBeLessThan(REPLY.length);
    expect(errors).toHaveLength(1);
    expect(JSON.stringify(errors[0])).toContain("upstream stream interrupted");
    expect(finishReason).toBe("error");
  });
});
