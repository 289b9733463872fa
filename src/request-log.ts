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
  /** For an internal error only: the name of what was thrown. */
  error?: string;
}

/** A request's log record, filled in by the pipeline steps and written once at its very end. */
export class RequestLog {
  readonly fields: LogFields;
  readonly #started = performance.now();
  #streamDone: Promise<unknown> | undefined;

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

  /** Holds the line back until a streaming body has ended. */
  waitFor(streamDone: Promise<unknown>): void {
    this.#streamDone = streamDone;
  }

  get streamDone(): Promise<unknown> | undefined {
    return this.#streamDone;
  }

  write(): void {
    this.fields.duration_ms = this.elapsed();
    console.log(JSON.stringify(this.fields));
  }
}
