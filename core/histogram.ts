/**
 * A fixed-size latency histogram with logarithmic buckets: constant memory, O(1) record, and
 * percentiles within about 10% — enough for stats lines and health checks.
 *
 * @module
 */

const PER_OCTAVE = 8;
const MIN_US = 1;
const BUCKETS = PER_OCTAVE * 40;

/**
 * Latency percentiles in milliseconds.
 *
 * @example
 * ```ts
 * import { type Percentiles, run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const sink = streamsSink({ handler: () => {} });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * const ok: Percentiles = sink.stats().latency.ok; // handler calls that returned
 * const ms = (x: number) => x.toFixed(2);
 * console.log(`${ok.count} calls: p50 ${ms(ok.p50)} p95 ${ms(ok.p95)} p99 ${ms(ok.p99)} ms`);
 * console.log(`slowest ${ms(ok.max)} ms`);
 * ac.abort();
 * await running;
 * ```
 */
export interface Percentiles {
  /** Number of samples. */
  readonly count: number;
  /** Median. */
  readonly p50: number;
  /** 95th percentile. */
  readonly p95: number;
  /** 99th percentile. */
  readonly p99: number;
  /** Largest sample. */
  readonly max: number;
}

/**
 * Every sample since start, counted in fixed buckets: what a Prometheus histogram exports
 * (`_bucket`, `_sum`, `_count`), which adds up across replicas and never restarts.
 *
 * @example
 * ```ts
 * import type { LatencyTotals } from "@impel/impel";
 * // The share of calls under 10 ms, from the cumulative buckets.
 * const under10ms = (t: LatencyTotals) =>
 *   t.counts.slice(0, t.boundsMs.indexOf(10) + 1).reduce((a, b) => a + b, 0) / (t.count || 1);
 * ```
 *
 * @category Stats
 */
export interface LatencyTotals {
  /** Samples since start. */
  readonly count: number;
  /** Their sum, ms. */
  readonly sumMs: number;
  /** The buckets' upper bounds, ms, ascending (a sample equal to a bound is in its bucket). */
  readonly boundsMs: readonly number[];
  /** Samples per bucket (not cumulative); one more entry than bounds: those above the last. */
  readonly counts: readonly number[];
}

/** A latency histogram; `record` takes milliseconds. */
export interface Histogram {
  /** Records one sample, in milliseconds. */
  record(ms: number): void;
  /** The percentiles of the samples recorded since the last `reset`. */
  percentiles(): Percentiles;
  /** Every sample since the histogram was made, `reset` or not. */
  totals(): LatencyTotals;
  /** Forgets the samples `percentiles` covers (an interval ends); the totals stay. */
  reset(): void;
}

/** Prometheus-style bounds, ms: 0.5 ms to 60 s. */
const TOTAL_BOUNDS_MS: readonly number[] = [
  0.5,
  1,
  2.5,
  5,
  10,
  25,
  50,
  100,
  250,
  500,
  1000,
  2500,
  5000,
  10000,
  30000,
  60000,
];

/**
 * Creates an empty {@linkcode Histogram}.
 *
 * @example
 * ```ts
 * import { createHistogram } from "./histogram.ts";
 * const h = createHistogram();
 * h.record(1.5);
 * h.percentiles().count; // 1
 * ```
 */
export function createHistogram(): Histogram {
  const counts = new Float64Array(BUCKETS);
  let count = 0;
  let max = 0;
  const upper = (i: number) => MIN_US * 2 ** ((i + 1) / PER_OCTAVE) / 1000;
  const at = (q: number) => {
    const rank = Math.ceil(q * count);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += counts[i];
      if (seen >= rank) return Math.min(upper(i), max);
    }
    return max;
  };
  const totalCounts = new Array<number>(TOTAL_BOUNDS_MS.length + 1).fill(0);
  let totalCount = 0;
  let totalMs = 0;
  return {
    record(ms) {
      let b = 0;
      while (b < TOTAL_BOUNDS_MS.length && ms > TOTAL_BOUNDS_MS[b]) b++;
      totalCounts[b]++;
      totalCount++;
      totalMs += ms;
      const us = ms * 1000;
      const i = us <= MIN_US
        ? 0
        : Math.min(BUCKETS - 1, Math.floor(Math.log2(us / MIN_US) * PER_OCTAVE));
      counts[i]++;
      count++;
      if (ms > max) max = ms;
    },
    percentiles() {
      if (count === 0) return { count: 0, p50: 0, p95: 0, p99: 0, max: 0 };
      return { count, p50: at(0.5), p95: at(0.95), p99: at(0.99), max };
    },
    totals() {
      return {
        count: totalCount,
        sumMs: totalMs,
        boundsMs: TOTAL_BOUNDS_MS,
        counts: totalCounts.slice(),
      };
    },
    reset() {
      counts.fill(0);
      count = 0;
      max = 0;
    },
  };
}
