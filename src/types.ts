import type { RequestIdVariables } from "hono/request-id";
import type { Envelope } from "./errors";
import type { KeyPlace } from "./json-scan";
import type { UsageSource } from "./metering";
import type { OrgGate, Reservation } from "./org-gate";
import type { RequestLog } from "./request-log";
import type { ApiKeyRecord, ModelRecord } from "./records";

/** Bindings from wrangler.toml: `[vars]` arrive as strings, secrets may be absent. */
export interface Env {
  GATEWAY_KV: KVNamespace;
  RATE_LIMITER: DurableObjectNamespace<OrgGate>;
  /** The console's static files (`public/`), reached only through console.ts. */
  ASSETS: Fetcher;
  UPSTREAM_BASE_URL: string;
  DEFAULT_ORG_RPM?: string;
  DEFAULT_USER_RPM?: string;
  MAX_BODY_BYTES?: string;
  UPSTREAM_TIMEOUT_MS?: string;
  STREAM_IDLE_TIMEOUT_MS?: string;
  BODY_TIMEOUT_MS?: string;
  MAX_EVENT_BYTES?: string;
  USAGE_RETENTION_DAYS?: string;
  DEFAULT_MAX_OUTPUT_TOKENS?: string;
  MAX_UPSTREAM_ATTEMPTS?: string;
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
  /** The envelope of this route's errors (errors.ts); OpenAI's unless set. */
  envelope?: Envelope;
  apiKey: ApiKeyRecord;
  /** SHA-256 hex of the caller's key: how its record is found, never the key itself. */
  apiKeyHash: string;
  body: GatewayBody;
  /** The body exactly as the caller sent it, forwarded when nothing is renamed. */
  rawBody: ArrayBuffer;
  /** The body decoded, and where the values of the keys the gateway interprets lie in it. */
  bodyText: string;
  places: ReadonlyMap<string, KeyPlace>;
  model: ModelRecord;
  /** What the org's gate reserved for this request against token limits (admission.ts). */
  reservation: Reservation;
  /** Where a 2xx answer's usage will be found once it has gone (metering.ts). */
  usageSource: UsageSource | undefined;
}

export type AppEnv = { Bindings: Env; Variables: Variables };
