import { afterAll, expect } from "vitest";
import { LOG_FIELDS } from "./log-fields";
import { onLogLine } from "./log-tap";

// Every log line the Worker writes during a test file, checked once the file is done: each is one
// JSON object of the documented fields, and none carries a credential, whatever the test sent.

// Plus `error`, written for an internal error only.
const FIELDS = new Set<string>([...LOG_FIELDS, "error"]);
const SECRETS = [/sk-gw-/, /sk-upstream/, /test-admin-token/, /bearer/i, /authorization/i, /cookie/i];

const lines: string[] = [];
const stop = onLogLine((line) => lines.push(line));

afterAll(() => {
  stop();
  for (const line of lines) {
    const record = JSON.parse(line) as Record<string, unknown>;
    for (const key of Object.keys(record)) expect(FIELDS).toContain(key);
    for (const secret of SECRETS) expect(line).not.toMatch(secret);
  }
});
