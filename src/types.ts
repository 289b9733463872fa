import type { RequestIdVariables } from "hono/request-id";
import type { OrgGate } from "./org-gate";
import type { RequestLog } from "./request-log";
import type { ApiKeyRecord, ModelRecord } from "./records";

/** Bindings from wrangler.toml: `[vars]` arrive as strings, secrets may be absent. */
export interface Env {
  GATEWAY_KV: KVNamespace;
  RATE_LIMITER: DurableObjectNamespace<OrgGate>;
  UPSTREAM_BASE_URL: string;
  DEFAULT_ORG_RPM?: string;
  DEFAULT_USER_RPM?: string;
  MAX_BODY_BYTES?: string;
  UPSTREAM_TIMEOUT_MS?: string;
  STREAM_IDLE_TIMEOUT_MS?: string;
  BODY_TIMEOUT_MS?: string;
  MAX_EVENT_BYTES?: string;
  UPSTREAM_API_KEY?: string;
  ADMIN_TOKEN?: string;
}

/** The fields of a request body the gateway itself interprets; the rest passes through. */
export interface GatewayBody {
  model: string;
  stream?: boolean | null;
  [field: string]: unknown;
}

/** What each pipeline step leaves for the next one. */
export interface Variables extends RequestIdVariables {
  log: RequestLog;
  apiKey: ApiKeyRecord;
  /** SHA-256 hex of the caller's key: how its record is found, never the key itself. */
  apiKeyHash: string;
  body: GatewayBody;
  /** The body exactly as the caller sent it, forwarded when nothing is renamed. */
  rawBody: ArrayBuffer;
  /** The body decoded, and where the model's string value lies in it (for a rename). */
  bodyText: string;
  modelPlace: { start: number; end: number };
  model: ModelRecord;
}

export type AppEnv = { Bindings: Env; Variables: Variables };
