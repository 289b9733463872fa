export type StreamOutcome = "complete" | "interrupted" | "client_cancelled";

/** The one JSON line written per request. Never a key, a prompt or a completion. */
export interface LogFields {
  request_id: string;
  route: string;
  status: number;
  code: string | null;
  org: string | null;
  user: string | null;
  key_id: string | null;
  model: string | null;
  upstream_status: number | null;
  stream_outcome: StreamOutcome | null;
  duration_ms: number;
  ttfb_ms: number | null;
  /** The upstream that answered (the last one tried), and how many attempts were made. */
  upstream: string | null;
  attempts: number | null;
  /** The metered usage of an answered request (see usage.ts); null where no upstream answered 2xx. */
  input_tokens: number | null;
  output_tokens: number | null;
  cached_tokens: number | null;
  cost_usd: number | null;
  usage_estimated: boolean | null;
  /** For an internal error, or an upstream skipped as misconfigured: what went wrong, never a value. */
  error?: string;
}

/** A request's log record, filled in by the pipeline steps and written once at its very end. */
export class RequestLog {
  readonly fields: LogFields;
  readonly #started = performance.now();
  #streaming = false;
  #endedAt: number | undefined;
  /** What the line waits for: a streaming body's end, the metering of the answer. */
  #pending: Promise<unknown> | undefined;

  constructor(requestId: string) {
    this.fields = {
      request_id: requestId,
      route: "",
      status: 0,
      code: null,
      org: null,
      user: null,
      key_id: null,
      model: null,
      upstream_status: null,
      stream_outcome: null,
      duration_ms: 0,
      ttfb_ms: null,
      upstream: null,
      attempts: null,
      input_tokens: null,
      output_tokens: null,
      cached_tokens: null,
      cost_usd: null,
      usage_estimated: null,
    };
  }

  /** Milliseconds since the request arrived. */
  elapsed(): number {
    return Math.round(performance.now() - this.#started);
  }

  /** Marks the first byte of the response body: for a stream, its first event. */
  firstByte(): void {
    this.fields.ttfb_ms ??= this.elapsed();
  }

  /** The request has ended: its answer (for a stream, its last byte) has gone. */
  end(): void {
    this.#endedAt ??= this.elapsed();
  }

  /** The response is a stream, which ends when `done` settles: the line waits for it. */
  streamUntil(done: Promise<unknown>): void {
    this.#streaming = true;
    this.#pending = done.then(() => this.end());
  }

  get streaming(): boolean {
    return this.#streaming;
  }

  /** Holds the line back until `task` has run, after anything it already waits for. */
  after(task: () => unknown): void {
    this.#pending = (this.#pending ?? Promise.resolve()).then(task);
  }

  /** What the line waits for, if anything. */
  get pending(): Promise<unknown> | undefined {
    return this.#pending;
  }

  write(): void {
    this.fields.duration_ms = this.#endedAt ?? this.elapsed();
    console.log(JSON.stringify(this.fields));
  }
}
