/**
 * Periodic stats: a structured view of a sink, and a summary line through LogTape.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Position } from "./batch.ts";
import { errorText } from "./failure.ts";
import type { LatencyTotals, Percentiles } from "./histogram.ts";
import { jsonSafe } from "./json.ts";
import type {
  ParkedSnapshot,
  Scheduler,
  SchedulerCounters,
  SchedulerSnapshot,
} from "./scheduler.ts";

/**
 * Progress of one tranche as the sink sees it.
 *
 * @example
 * ```ts
 * import { run, streamsSink, type TrancheStats } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }, { type: "Paid", data: {} }], 0);
 * const sink = streamsSink({ handler: () => {} });
 * const ac = new AbortController();
 * const running = run(memorySource({ store, checkpoints: memoryCheckpoints() }), sink, {
 *   signal: ac.signal,
 * });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running; // the final commit has landed
 * const [t]: readonly TrancheStats[] = sink.stats().tranches;
 * console.log(t.tranche, t.isTail, t.completed, t.committed, t.readAhead); // all true 2n 2n 0
 * ```
 *
 * @category Stats
 */
export interface TrancheStats {
  /** The tranche. */
  readonly tranche: string;
  /** Whether its latest batch reached the tail. */
  readonly isTail: boolean;
  /** The highest position whose batch and all before it are complete. */
  readonly completed: Position | undefined;
  /** The last position committed to the checkpoint store. */
  readonly committed: Position | undefined;
  /** Batches read and not yet passed by `completed`. */
  readonly readAhead: number;
  /** Consecutive failed commits of this tranche (0 once a commit succeeds). */
  readonly commitFailures: number;
  /** When the current run of failed commits began (ms since the epoch), if one is going on. */
  readonly commitFailingSince: number | undefined;
  /** The last commit error while commits are failing. */
  readonly commitError: unknown;
}

/**
 * Everything a stats line, a metrics exporter or a health check needs. `JSON.stringify` renders
 * it as {@linkcode jsonSafe} does: positions as decimal strings, errors as `{ name, message }`.
 *
 * @example
 * ```ts
 * import { run, type SinkStats, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const summary = (s: SinkStats) =>
 *   `${s.group}: ${s.counters.handled} handled in ${s.latency.ok.count} timed calls, ` +
 *   `${s.failing.length} failing, ${s.stuck.length} stuck, ` +
 *   `read-ahead ${s.tranches.reduce((n, t) => n + t.readAhead, 0)}/${s.maxReadAhead}`;
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const sink = streamsSink({ group: "billing", handler: () => {} });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * console.log(summary(sink.stats()));
 * // billing: 1 handled in 1 timed calls, 0 failing, 0 stuck, read-ahead 0/16
 * ac.abort();
 * await running;
 * ```
 *
 * @category Stats
 */
export interface SinkStats extends SchedulerSnapshot {
  /** The consumer group (a label). */
  readonly group: string;
  /** Running totals since start. */
  readonly counters: Readonly<SchedulerCounters>;
  /** Handler latency since the last stats interval, by outcome (sampled when calls are frequent). */
  readonly latency: { readonly ok: Percentiles; readonly failed: Percentiles };
  /** The same samples since start, in fixed buckets (the metrics' histogram), by outcome. */
  readonly latencyTotals: { readonly ok: LatencyTotals; readonly failed: LatencyTotals };
  /** Per tranche progress. */
  readonly tranches: readonly TrancheStats[];
  /** The read-ahead limit. */
  readonly maxReadAhead: number;
}

/** A tranche whose commits are failing, as the sink tracks it. */
export interface CommitTrouble {
  /** Consecutive failures. */
  failures: number;
  /** When the first of them happened (ms since the epoch). */
  since: number;
  /** The last error. */
  error: unknown;
}

/**
 * Builds the stats view of a sink from its scheduler and committed positions; `parkTrouble` is
 * the sink's own trouble reading its park stores (at start, polling for requests), `unclaimed`
 * the park requests its polls found waiting unclaimed past a claim's lease.
 */
export function sinkStats(
  group: string,
  scheduler: Scheduler,
  committed: ReadonlyMap<string, Position>,
  commitTrouble: ReadonlyMap<string, CommitTrouble>,
  maxReadAhead: number,
  parkTrouble?: { readonly since: number; readonly error: unknown },
  unclaimed?: ParkedSnapshot["unclaimed"],
): SinkStats {
  const tranches: TrancheStats[] = [];
  for (const t of scheduler.tranches.values()) {
    const trouble = commitTrouble.get(t.name);
    const stats: TrancheStats = {
      tranche: t.name,
      isTail: t.isTail,
      completed: t.completed,
      committed: committed.get(t.name),
      readAhead: t.readAhead,
      commitFailures: trouble?.failures ?? 0,
      commitFailingSince: trouble?.since,
      commitError: trouble?.error,
    };
    // Each part of the stats stringifies on its own too (a tranche list, a spread copy).
    Object.defineProperty(stats, "toJSON", { value: () => jsonSafe({ ...stats }) });
    tranches.push(stats);
  }
  const snapshot = scheduler.snapshot();
  const writes = snapshot.parked.storeFailing;
  // The older of the two troubles, with its error: either means parked streams are not in hand.
  const storeFailing = writes === undefined || (parkTrouble && parkTrouble.since < writes.since)
    ? parkTrouble
    : writes;
  const stats: SinkStats = {
    ...snapshot,
    parked: storeFailing === undefined && unclaimed === undefined ? snapshot.parked : {
      ...snapshot.parked,
      ...(storeFailing === undefined ? {} : { storeFailing }),
      ...(unclaimed === undefined ? {} : { unclaimed }),
    },
    group,
    counters: { ...scheduler.counters },
    latency: {
      ok: scheduler.latency.ok.percentiles(),
      failed: scheduler.latency.failed.percentiles(),
    },
    latencyTotals: {
      ok: scheduler.latency.ok.totals(),
      failed: scheduler.latency.failed.totals(),
    },
    tranches,
    maxReadAhead,
  };
  // Not enumerable, so spreading or comparing stats sees only the data.
  Object.defineProperty(stats, "toJSON", { value: () => jsonSafe({ ...stats }) });
  return stats;
}

const fmt = (ms: number) => ms < 10 ? ms.toFixed(2) : ms.toFixed(0);
const ages = (list: SchedulerSnapshot["busy"]) =>
  list.slice(0, 3).map((s) => `${s.stream} ${(s.ageMs / 1000).toFixed(1)}s×${s.attempts}`).join(
    ", ",
  );

/**
 * Returns a function that logs one summary line per call: rates since the previous call,
 * latency percentiles by outcome, busy / failing / stuck streams with ages, read-ahead use.
 * Resets the latency histograms so each line covers one interval.
 *
 * @category Stats
 */
export function statsLogger(group: string, read: () => SinkStats, reset: () => void): () => void {
  const logger = getLogger(["impel", "stats"]);
  let last = { at: performance.now(), events: 0, handled: 0, batches: 0, calls: 0, failures: 0 };
  return () => {
    const s = read();
    const now = performance.now();
    const secs = Math.max(1e-3, (now - last.at) / 1000);
    const c = s.counters;
    const readAhead = s.tranches.reduce((n, t) => n + t.readAhead, 0);
    logger.info(
      "{group}: {eventsPerSec} events/s in, {handledPerSec} handled/s, {batchesPerSec} batches/s; " +
        "{calls} calls: p50 {okP50} p99 {okP99} ms; {failures} failed: p50 {failedP50} ms; " +
        "busy {busy} [{busyAges}], failing {failing} [{failingAges}], stuck {stuck} [{stuckAges}]; " +
        "read-ahead {readAhead}/{maxReadAhead}, buffered {buffered}, streams {streams}; " +
        "parked {parked} ({parkedEvents} events, oldest {parkedAge} s)",
      {
        group,
        eventsPerSec: Math.round((c.events - last.events) / secs),
        handledPerSec: Math.round((c.handled - last.handled) / secs),
        batchesPerSec: Math.round((c.batches - last.batches) / secs),
        okP50: fmt(s.latency.ok.p50),
        okP99: fmt(s.latency.ok.p99),
        calls: c.calls - last.calls,
        failedP50: fmt(s.latency.failed.p50),
        failures: c.failures - last.failures,
        busy: s.busy.length,
        busyAges: ages(s.busy),
        failing: s.failing.length,
        failingAges: ages(s.failing) +
          (s.failing[0] ? ` last: ${errorText(s.failing[0].error)}` : ""),
        stuck: s.stuck.length,
        stuckAges: ages(s.stuck),
        readAhead,
        maxReadAhead: s.maxReadAhead,
        buffered: s.bufferedEvents,
        streams: s.streams,
        parked: s.parked.streams,
        parkedEvents: s.parked.events,
        parkedAge: (s.parked.oldestMs / 1000).toFixed(0),
        stats: s,
      },
    );
    last = {
      at: now,
      events: c.events,
      handled: c.handled,
      batches: c.batches,
      calls: c.calls,
      failures: c.failures,
    };
    reset();
  };
}
