import type { StreamDialect } from "../src/streaming/dialects";
import { SseFramer } from "../src/streaming/sse";

const encoder = new TextEncoder();

/**
 * Hands each of `events` (whole events, blank line included) to `dialect` as a stream does:
 * through the framer, with the number of lines it counts. Returns each event's verdict.
 */
export function observeFramed(dialect: StreamDialect, events: string[]): boolean[] {
  const kept: boolean[] = [];
  const framer = new SseFramer({ onEvent: (event, lines) => void kept.push(dialect.observe(event, lines)) });
  for (const event of events) framer.push(encoder.encode(event));
  if (kept.length !== events.length) throw new Error(`${events.length} events given, ${kept.length} framed`);
  return kept;
}
