/**
 * Throughput history of a pipeline: what its sink did in each interval of the last minutes
 * (events in, events handled, handler calls and failures, handler latency), kept in a ring of
 * fixed size for the status page's charts. Built from the sink's running totals, so it resets
 * nothing that the stats logger or the metrics read.
 *
 * @module
 */
import type { LatencyTotals } from "../core/histogram.ts";
import type { SinkStats } from "../core/stats.ts";

/**
 * What a pipeline did in one interval of its history.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics, type ThroughputSample } from "@impel/impel/metrics";
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const pipeline = metrics.addPipeline({ group: "printer", source: "memory", sink });
 * const rate = (s: ThroughputSample) => s.handled / (s.ms / 1000);
 * console.log(pipeline.history().map(rate)); // one rate per interval so far
 * await sink.stop();
 * ```
 *
 * @category Metrics
 */
export interface ThroughputSample {
  /** The end of the interval, ms since the epoch. */
  readonly at: number;
  /** The interval's length, ms. */
  readonly ms: number;
  /** Events ingested (duplicates included). */
  readonly events: number;
  /** Events handled. */
  readonly handled: number;
  /** Handler calls that returned. */
  readonly calls: number;
  /** Handler calls that threw. */
  readonly failures: number;
  /**
   * Latency of the calls that returned and that the scheduler timed in the interval, ms (null
   * when none was timed). Quantiles are interpolated within the metrics' histogram buckets
   * (0.5, 1, 2.5, 5, 10, 25 … ms), so they are as coarse as a Prometheus `histogram_quantile`;
   * the mean is exact.
   */
  readonly latency: {
    readonly mean: number;
    readonly p50: number;
    readonly p99: number;
  } | null;
  /** Events buffered at the end of the interval. */
  readonly bufferedEvents: number;
}

/**
 * How much history each pipeline keeps.
 *
 * @example
 * ```ts
 * import { createMetrics, type HistoryOptions } from "@impel/impel/metrics";
 * // Half an hour at one sample every 5 s: 360 samples per pipeline.
 * const history: HistoryOptions = { intervalMs: 5_000, keepMs: 30 * 60_000 };
 * const metrics = createMetrics({ defaultMetrics: false, history });
 * ```
 *
 * @category Metrics
 */
export interface HistoryOptions {
  /** One sample per this many ms (default 1 000, at least 100). */
  readonly intervalMs?: number;
  /** Samples older than this are dropped (default 600 000: ten minutes; at most 1 440 samples). */
  readonly keepMs?: number;
}

/** A pipeline's history: sampled by its own timer, read by the status page. */
export interface ThroughputHistory {
  /** The samples, oldest first; with `since`, only those that end after it. */
  samples(since?: number): ThroughputSample[];
  /** Stops the timer; the samples stay readable. */
  stop(): void;
}

const MAX_SAMPLES = 1440;

/**
 * Starts sampling `read()` every `intervalMs`. The timer does not keep the process alive; stop
 * it when the sink stops.
 */
export function createThroughputHistory(
  read: () => SinkStats,
  intervalMs: number,
  keepMs: number,
): ThroughputHistory {
  const size = Math.min(MAX_SAMPLES, Math.max(1, Math.ceil(keepMs / intervalMs)));
  const ring: ThroughputSample[] = [];
  let start = 0; // index of the oldest sample once the ring is full
  let last = totalsOf(read());
  let timer: ReturnType<typeof setInterval> | undefined;

  // Only the timer samples, so that every interval has about the same length (a sample taken
  // between two ticks would make a short interval whose rate spikes).
  function sample() {
    const now = Date.now();
    let stats: SinkStats;
    try {
      stats = read();
    } catch {
      return; // a sink whose stats fail shows a gap; the metrics log the failure
    }
    const next = totalsOf(stats, now);
    const s: ThroughputSample = {
      at: now,
      ms: Math.max(1, now - last.at),
      events: next.events - last.events,
      handled: next.handled - last.handled,
      calls: next.calls - last.calls,
      failures: next.failures - last.failures,
      latency: latencyBetween(last.latency, next.latency),
      bufferedEvents: stats.bufferedEvents,
    };
    last = next;
    if (ring.length < size) ring.push(s);
    else {
      ring[start] = s;
      start = (start + 1) % size;
    }
  }

  timer = setInterval(sample, intervalMs);
  unrefTimer(timer);
  return {
    samples(since) {
      const ordered = ring.length < size ? ring.slice() : [
        ...ring.slice(start),
        ...ring.slice(0, start),
      ];
      const oldest = Date.now() - keepMs;
      return ordered.filter((s) => s.at > oldest && (since === undefined || s.at > since));
    },
    stop() {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    },
  };
}

interface Totals {
  readonly at: number;
  readonly events: number;
  readonly handled: number;
  readonly calls: number;
  readonly failures: number;
  readonly latency: LatencyTotals;
}

function totalsOf(stats: SinkStats, at = Date.now()): Totals {
  const c = stats.counters;
  return {
    at,
    events: c.events,
    handled: c.handled,
    calls: c.calls,
    failures: c.failures,
    latency: stats.latencyTotals.ok,
  };
}

/** Mean and quantiles of the samples two cumulative histograms differ by. */
export function latencyBetween(
  before: LatencyTotals,
  after: LatencyTotals,
): ThroughputSample["latency"] {
  const count = after.count - before.count;
  if (count <= 0) return null;
  const counts = after.counts.map((n, i) => n - (before.counts[i] ?? 0));
  const bounds = after.boundsMs;
  const quantile = (q: number) => {
    const rank = q * count;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      if (counts[i] > 0 && seen + counts[i] >= rank) {
        // Past the last bound there is no upper edge: answer the last bound, as Prometheus does.
        if (i >= bounds.length) return bounds[bounds.length - 1];
        const lower = i === 0 ? 0 : bounds[i - 1];
        return lower + (bounds[i] - lower) * ((rank - seen) / counts[i]);
      }
      seen += counts[i];
    }
    return bounds[bounds.length - 1];
  };
  const round = (ms: number) => Math.round(ms * 1000) / 1000;
  return {
    mean: round((after.sumMs - before.sumMs) / count),
    p50: round(quantile(0.5)),
    p99: round(quantile(0.99)),
  };
}

/** Lets a timer run without keeping the process alive (Deno numbers, Bun and Node objects). */
function unrefTimer(timer: ReturnType<typeof setInterval>): void {
  if (typeof timer === "number") {
    (globalThis as { Deno?: { unrefTimer?(id: number): void } }).Deno?.unrefTimer?.(timer);
  } else {
    (timer as { unref?(): void }).unref?.();
  }
}
