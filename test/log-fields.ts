/** The fields of the log line, as the README's "Logs" section documents them (the tests' copy). */
export const LOG_FIELDS = [
  "request_id",
  "route",
  "status",
  "code",
  "org",
  "user",
  "key_id",
  "model",
  "upstream_status",
  "stream_outcome",
  "duration_ms",
  "ttfb_ms",
] as const;
