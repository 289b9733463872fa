import { requestId } from "hono/request-id";
import { admin } from "./admin";
import { apiKeyAuth } from "./auth";
import { jsonBody } from "./body";
import { checkAccess, resolveModel } from "./catalog";
import { requireConfig } from "./config";
import { GatewayError, handleError } from "./errors";
import { accessLog } from "./log";
import { listModels } from "./models";
import { admitRequest, refuseRevoked, revokedFirst } from "./admission";
import { meterUsage } from "./metering";
import { methodNotAllowed, newApp } from "./routing";
import { CHAT, RESPONSES, type ModelApi } from "./apis";
import { proxy } from "./upstream";
import type { AppEnv } from "./types";

export { OrgGate } from "./org-gate";

const app = newApp<AppEnv>();

app.use(requestId(), accessLog(), requireConfig());

app.get("/healthz", (c) => c.json({ status: "ok" }));

// The pipeline, in contract order: auth, body, model, access, admission (limits), metering, upstream.
// Both model routes run it; they differ only in their API (apis.ts): body schema, upstream path,
// stream conventions and where usage is reported.
const pipeline = (api: ModelApi) =>
  [
    apiKeyAuth(),
    revokedFirst(),
    jsonBody(api.schema),
    resolveModel(),
    checkAccess(),
    admitRequest(),
    meterUsage(),
    proxy(api),
  ] as const;

app.post("/v1/chat/completions", ...pipeline(CHAT));
app.post("/v1/responses", ...pipeline(RESPONSES));
app.get("/v1/models", apiKeyAuth(), refuseRevoked(), listModels);

app.route("/admin", admin);

app.all("/healthz", methodNotAllowed("GET"));
app.all("/v1/chat/completions", methodNotAllowed("POST"));
app.all("/v1/responses", methodNotAllowed("POST"));
app.all("/v1/models", methodNotAllowed("GET"));

app.notFound((c) => handleError(new GatewayError("not_found"), c));
app.onError(handleError);

export default app;
