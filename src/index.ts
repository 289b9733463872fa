import { Hono } from "hono";
import { requestId } from "hono/request-id";
import { apiKeyAuth } from "./auth";
import { jsonBody, limitBody } from "./body";
import { checkAccess, resolveModel } from "./catalog";
import { GatewayError, handleError } from "./errors";
import { accessLog } from "./log";
import { rateLimit } from "./rate-limiter";
import { methodNotAllowed } from "./routing";
import { chatCompletionBody } from "./schemas";
import { chatDialect } from "./stream-dialects";
import { proxy } from "./upstream";
import type { AppEnv } from "./types";

export { RateLimiter } from "./rate-limiter";

const app = new Hono<AppEnv>();

app.use(requestId(), accessLog());

app.get("/healthz", (c) => c.json({ status: "ok" }));

// The pipeline, in contract order: auth, body, model, access, rate limit, upstream.
app.post(
  "/v1/chat/completions",
  apiKeyAuth(),
  limitBody(),
  jsonBody(chatCompletionBody),
  resolveModel(),
  checkAccess(),
  rateLimit(),
  proxy("/chat/completions", chatDialect),
);

app.all("/healthz", methodNotAllowed("GET"));
app.all("/v1/chat/completions", methodNotAllowed("POST"));

app.notFound((c) => handleError(new GatewayError("not_found"), c));
app.onError(handleError);

export default app;
