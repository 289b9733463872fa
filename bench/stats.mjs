/**
 * Nearest-rank percentile of unsorted samples; NaN when there are none.
 *
 * @param {number[]} samples
 * @param {number} p
 */
export function percentile(samples, p) {
  const sorted = Float64Array.from(samples).sort();
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

export const median = (samples) => percentile(samples, 50);

/** Latency percentiles and rate of closed-loop batches pooled together. */
export function summarizeRequests(batches) {
  const latencies = batches.flatMap((b) => b.latenciesMs);
  const elapsedMs = batches.reduce((sum, b) => sum + b.elapsedMs, 0);
  return {
    requests: latencies.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    requestsPerSec: (latencies.length / elapsedMs) * 1000,
  };
}

/** Medians of stream batches pooled together; events/s from the median stream's duration. */
export function summarizeStreams(batches, eventsPerStream) {
  const firstByte = batches.flatMap((b) => b.firstByteMs);
  const total = batches.flatMap((b) => b.totalMs);
  const totalMs = median(total);
  return {
    streams: total.length,
    firstByteMs: median(firstByte),
    totalMs,
    eventsPerSec: (eventsPerStream / totalMs) * 1000,
  };
}
