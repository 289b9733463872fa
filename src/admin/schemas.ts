import * as v from "valibot";
import { entityId, groupRecord, modelId, modelRecord, orgRecord, upstreamRecord } from "../records";

/**
 * Admin request bodies. Unlike the model routes, these are the gateway's own API, so unknown
 * fields are refused: a typo must not silently do nothing. Models, groups and orgs are written
 * exactly as their records' schemas say, the same schemas every read checks.
 */

export { entityId, modelId };

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

export const modelBody = modelRecord;
export const groupBody = groupRecord;
export const orgBody = orgRecord;
export const upstreamBody = upstreamRecord;
