import { requestId } from "hono/request-id";
import { admin } from "./admin";
import { apiKeyAuth } from "./auth";
import { jsonBody } from "./body";
import { checkAccess, resolveModel } from "./catalog";
import { requireConfig } from "./config";
import { consoleAssets } from "./console";
import { errorEnvelope, GatewayError, handleError } from "./errors";
import { accessLog } from "./log";
import { listModels } from "./models";
import { admitRequest, refuseRevoked, revokedFirst } from "./admission";
import { meterUsage } from "./metering";
import { methodNotAllowed, newApp } from "./routing";
import { CHAT, COUNT_TOKENS, MESSAGES, RESPONSES, type ModelApi } from "./apis";
import { proxy } from "./upstream";
import type { AppEnv } from "./types";

export { OrgGate } from "./org-gate";

const app = newApp<AppEnv>();

app.use(requestId(), accessLog());
// Anthropic clients read every error of their routes, the gateway's own included, in Anthropic's envelope.
app.use("/v1/messages/*", errorEnvelope("anthropic"));
app.use(requireConfig());

app.get("/healthz", (c) => c.json({ status: "ok" }));

// The pipeline, in contract order: auth, body, model, access, admission (limits), metering, upstream.
// Every model route runs it; they differ only in their API (apis.ts): body schema, upstream path,
// stream conventions, where usage is reported and the caller's headers passed on. Counting tokens
// is neither admitted nor metered; it only refuses a revoked key.
const pipeline = (api: ModelApi) =>
  [
    apiKeyAuth(),
    revokedFirst(),
    jsonBody(api.schema),
    resolveModel(),
    checkAccess(),
    ...(api.admitted ? [admitRequest(), meterUsage()] : [refuseRevoked()]),
    proxy(api),
  ] as const;

app.post("/v1/chat/completions", ...pipeline(CHAT));
app.post("/v1/responses", ...pipeline(RESPONSES));
app.post("/v1/messages", ...pipeline(MESSAGES));
app.post("/v1/messages/count_tokens", ...pipeline(COUNT_TOKENS));
app.get("/v1/models", apiKeyAuth(), refuseRevoked(), listModels);

app.route("/admin", admin);
// The admin API's page for operators: static files, there only while the admin API is.
app.get("/console/*", consoleAssets());

app.all("/healthz", methodNotAllowed("GET"));
app.all("/v1/chat/completions", methodNotAllowed("POST"));
app.all("/v1/responses", methodNotAllowed("POST"));
app.all("/v1/messages", methodNotAllowed("POST"));
app.all("/v1/messages/count_tokens", methodNotAllowed("POST"));
app.all("/v1/models", methodNotAllowed("GET"));

app.notFound((c) => handleError(new GatewayError("not_found"), c));
app.onError(handleError);

export default app;
