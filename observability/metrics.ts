/**
 * Prometheus metrics for impel pipelines through `prom-client`, plus the pipeline registry that
 * the HTTP handler (`@impel/impel/http`) serves health and management from.
 *
 * Nothing here runs per event. Scheduler metrics are read from `sink.stats()` when Prometheus
 * scrapes (gauges with `collect` callbacks, counters set from the scheduler's running totals);
 * source metrics come from {@linkcode MeteredPipeline.observe}, which counts each batch as it
 * passes from the source to the sink (a few field updates per batch, no prom-client call unless
 * the batch reports its read time). Lag asks the backend for its head position at scrape time,
 * cached for `headCacheMs`.
 *
 * Metric names (with the default prefix `impel_`); `group` is the consumer group, `source` the
 * source's name in checkpoint keys, `tranche` the partition / category / index partition:
 *
 * | metric | type | labels | meaning |
 * | --- | --- | --- | --- |
 * | `impel_pipeline_up` | gauge | group | 1 while the pipeline runs, 0 once stopped or faulted |
 * | `impel_pipeline_faulted` | gauge | group | 1 once the failure policy faulted the pipeline |
 * | `impel_scheduler_streams` | gauge | group, state | streams by state |
 * | `impel_scheduler_events` | gauge | group, state | buffered events by state (see below) |
 * | `impel_scheduler_bytes` | gauge | group, state | buffered bytes by state (see below) |
 * | `impel_scheduler_buffered_events` | gauge | group | events buffered and not yet handled |
 * | `impel_scheduler_streams_tracked` | gauge | group | streams with buffered events or a write position |
 * | `impel_scheduler_oldest_seconds` | gauge | group, state | age of the oldest active / failing / stuck stream |
 * | `impel_scheduler_newest_seconds` | gauge | group, state | age of the newest active / failing / stuck stream |
 * | `impel_scheduler_max_attempts` | gauge | group, state | most attempts of a failing / stuck stream |
 * | `impel_scheduler_uncompleted_batches` | gauge | group | batches read and not yet complete |
 * | `impel_scheduler_read_ahead_limit` | gauge | group | `maxReadAhead` |
 * | `impel_scheduler_batches_total` | counter | group | batches ingested |
 * | `impel_scheduler_batches_completed_total` | counter | group | batches completed |
 * | `impel_scheduler_events_total` | counter | group | events ingested (duplicates included) |
 * | `impel_scheduler_events_handled_total` | counter | group | events handled |
 * | `impel_scheduler_events_duplicate_total` | counter | group | events dropped as already handled |
 * | `impel_scheduler_dead_lettered_total` | counter | group | streams handed to the dead-letter callback |
 * | `impel_parked_streams` | gauge | group | streams parked (the `park` policy) |
 * | `impel_parked_events` | gauge | group | events parked in them |
 * | `impel_parked_oldest_seconds` | gauge | group | age of the oldest parked stream |
 * | `impel_parked_store_failing_seconds` | gauge | group | how long the park store has been failing (0 while it works) |
 * | `impel_parked_total` | counter | group, outcome | streams `parked`, `released` and `skipped`, releases that failed again (`releaseFailed`; the stream parked again, also counted as `parked`), and park store operations that failed (`storeFailed`) |
 * | `impel_handler_calls_total` | counter | group, outcome | handler calls that returned (`ok`) or threw (`failed`) |
 * | `impel_handler_duration_seconds` | histogram | group, outcome | handler call durations (`_bucket`, `_sum`, `_count`; 0.5 ms to 60 s) of the calls the scheduler timed |
 * | `impel_source_batches_total` | counter | group, source, tranche | pages (batches) read |
 * | `impel_source_items_total` | counter | group, source, tranche | items read |
 * | `impel_source_position` | gauge | group, source, tranche | position of the latest batch read |
 * | `impel_source_at_tail` | gauge | group, source, tranche | 1 if the latest read reached the tail |
 * | `impel_source_last_batch_age_seconds` | gauge | group, source, tranche | time since the latest batch |
 * | `impel_source_read_ahead_batches` | gauge | group, source, tranche | batches read and not yet passed by the completed position |
 * | `impel_source_completed_position` | gauge | group, source, tranche | position up to which every batch is complete |
 * | `impel_source_committed_position` | gauge | group, source, tranche | position last committed to the checkpoint store |
 * | `impel_source_commit_failures` | gauge | group, source, tranche | consecutive failed checkpoint commits (0 after a success) |
 * | `impel_source_commit_failing_seconds` | gauge | group, source, tranche | how long commits have been failing (0 while they succeed) |
 * | `impel_source_problems` | gauge | group, source, severity | problems the source reports (`ObservableSource.problems()`), `degraded` / `failing` |
 * | `impel_source_head_position` | gauge | group, source, tranche | the backend's head (`positions.head`, or the observed source's `heads`) |
 * | `impel_source_lag` | gauge | group, source, tranche | head − completed position (see {@linkcode TrancheLag}), in the source's position units |
 * | `impel_source_read_duration_seconds` | histogram | group, source, tranche | time a read took, for sources whose batches report `readMs` |
 * | `impel_lease_held` | gauge | group, source, scope | leases this member holds and works on |
 * | `impel_lease_share` | gauge | group, source, scope | this member's fair share of the units |
 * | `impel_lease_members` | gauge | group, source, scope | live members with the same units, this one included |
 * | `impel_lease_units_unowned` | gauge | group, source, scope | units without an owner at the last heartbeat |
 * | `impel_lease_mismatched_members` | gauge | group, source, scope | live members configured with other units |
 * | `impel_lease_heartbeat_failures` | gauge | group, source, scope | heartbeats failed in a row (0 after a success) |
 * | `impel_lease_acquire_failures` | gauge | group, source, scope | acquisitions failed in a row (0 after a success) |
 * | `impel_lease_heartbeat_age_seconds` | gauge | group, source, scope | time since the last successful heartbeat |
 * | `impel_lease_oldest_seconds` | gauge | group, source, scope | age of the oldest lease held |
 * | `impel_lease_events_total` | counter | group, source, scope, event | `acquired`, `handed_over`, `lost`, `released`, `requested`, `kept` (left to expire: calls abandoned), `late_revocation`, `heartbeat_failed`, `acquire_failed` |
 * | `impel_store_writer_spans_total` | counter | group, outcome | store-writer calls ({@linkcode ImpelMetrics.addStoreWriter}) by outcome: `written`, `duplicate`, `partial`, `behind`, `filtered` |
 * | `impel_store_writer_events_total` | counter | group, outcome | their events: `written`, `duplicate` (already in the target), `behind` (a prefix missing), `filtered` |
 * | `impel_store_writer_conflicts_total` | counter | group | store-writer appends that met another version and were classified again |
 * | `impel_queue_messages` | gauge | queue, state | messages of a queue ({@linkcode ImpelMetrics.addQueue}; `queue` is its registered name) by state: `ready`, `in_flight`, `delayed` |
 * | `impel_queue_dead_letters` | gauge | queue | its dead letters |
 * | `impel_queue_oldest_seconds` | gauge | queue | age of its oldest message (0 when empty) |
 * | `impel_queue_deliveries_total` | counter | queue, outcome | its consumer's deliveries: `delivered`, `acked`, `nacked`, `lost` |
 * | `impel_queue_handler_duration_seconds` | histogram | queue | its consumer's handler call durations (every call) |
 * | `impel_replay_events` | gauge | group, kind | a replay's events ({@linkcode ImpelMetrics.addReplay}): `done`, `total` |
 * | `impel_replay_events_per_second` | gauge | group | its rate so far |
 * | `impel_replay_eta_seconds` | gauge | group | its time left at that rate |
 * | `impel_replay_running` | gauge | group | 1 while it runs, 0 paused or ended |
 *
 * States of `impel_scheduler_streams|events|bytes`, each stream in one state, the first that
 * applies: `stuck` (no progress for `stuckAfterMs`, running or stalled), `failing` (its last
 * attempt threw), `active` (a handler call is running), `ready` (waiting for a free slot),
 * `buffered` (events waiting for a gap to fill or a backoff to pass).
 *
 * Handler latency is a Prometheus histogram, so quantiles aggregate across replicas
 * (`histogram_quantile(0.99, sum by (le) (rate(impel_handler_duration_seconds_bucket[5m])))`).
 * It holds the calls the scheduler timed (the first call to start in each millisecond, and one in
 * 64 of the others), so that timing stays cheap; its `_count` is that sample, not the number of
 * calls, which `impel_handler_calls_total` counts.
 *
 * Lease series come from the `leases()` snapshot ({@linkcode LeaseSnapshot}) of each observed
 * source that has one (a MessageDB source with leases), or from `PipelineRegistration.leases`.
 *
 * Positions are exported as float64: exact up to 2^53.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Batch, ObservableSource, Position, SourceProblem } from "../core/batch.ts";
import type { LatencyTotals } from "../core/histogram.ts";
import type { CheckpointStore } from "../core/checkpoints.ts";
import type { LeaseSnapshot } from "../core/lease.ts";
import { checkNumber, describe, InvalidArgumentError } from "../core/errors.ts";
import { checkParkStore, type ParkStore } from "../core/park.ts";
import { errorText } from "../core/failure.ts";
import type { SinkStats } from "../core/stats.ts";
import { STREAM_STATES } from "../core/scheduler.ts";
import { withTimeout } from "../core/timeout.ts";
import type { StoreWriterStats } from "../sinks/store-writer.ts";
import type { PeekedMessage, QueueStats } from "../queues/queue.ts";
import type { QueueConsumerStats } from "../queues/consumer.ts";
import {
  createThroughputHistory,
  type HistoryOptions,
  type ThroughputHistory,
  type ThroughputSample,
} from "./history.ts";

export type { HistoryOptions, ThroughputSample } from "./history.ts";

const log = getLogger(["impel", "metrics"]);

/**
 * What a pipeline's sink must offer: its stats, and optionally its `done` promise.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics, type MeteredSink } from "@impel/impel/metrics";
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * // A streams sink is one: stats() feeds the scheduler gauges, done the up and faulted ones.
 * const metered: MeteredSink = sink;
 * const metrics = createMetrics({ defaultMetrics: false });
 * metrics.addPipeline({ group: "printer", source: "memory", sink: metered });
 * console.log(metered.stats().counters.handled); // 0
 * await sink.stop();
 * ```
 */
export interface MeteredSink {
  /** The sink's stats (a `StreamsSink` has it). */
  stats(): SinkStats;
  /** Settles when the sink stops; a rejection means it faulted. */
  readonly done?: Promise<void>;
  /** The park stores of its failure policy (a `StreamsSink` has them). */
  readonly parkStores?: readonly ParkStore[];
}

/**
 * What the backend can tell about positions, for lag and for checkpoint resets.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { createMetrics, type SourcePositions } from "@impel/impel/metrics";
 * const store = createMemoryStore();
 * // A memory source's position is the index of the next log entry: its head is the log length.
 * const positions: SourcePositions = {
 *   head: () => Promise.resolve(BigInt(store.head)),
 *   start: () => Promise.resolve(0n),
 * };
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const pipeline = metrics.addPipeline({ group: "printer", source: "memory", sink, positions });
 * const ac = new AbortController();
 * const running = run(pipeline.observe(memorySource({ store })), sink, { signal: ac.signal });
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * await sink.monitor.awaitCompletion({ tail: true });
 * const lags = await pipeline.lags(sink.stats());
 * console.log(lags.tranches.get("all")); // { head: 1n, lag: 0 }
 * ac.abort();
 * await running;
 * ```
 */
export interface SourcePositions {
  /**
   * The position a checkpoint would hold once everything currently in `tranche` is handled
   * (Kafka: the high watermark; MessageDB: the highest global position of the category + 1),
   * or `undefined` if unknown.
   */
  head?(tranche: string): Promise<Position | undefined>;
  /** The position to reset a checkpoint to for "from the start" (default `0n`). */
  start?(tranche: string): Promise<Position>;
}

/**
 * Options of {@linkcode ImpelMetrics.addPipeline}.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * import { createMetrics, type PipelineRegistration } from "@impel/impel/metrics";
 * const store = createMemoryStore();
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const registration: PipelineRegistration = {
 *   group: "printer",
 *   source: "memory",
 *   sink,
 *   checkpoints: memoryCheckpoints(), // the ones the source is given
 *   positions: { head: () => Promise.resolve(BigInt(store.head)) },
 *   headCacheMs: 5000,
 * };
 * const pipeline = metrics.addPipeline(registration);
 * console.log(pipeline.state); // "running"
 * await sink.stop();
 * ```
 */
export interface PipelineRegistration {
  /** The consumer group: the pipeline's identity and the `group` label; unique per registry. */
  readonly group: string;
  /** The source's name in checkpoint keys (e.g. `messagedb`), the `source` label. */
  readonly source: string;
  /** The sink the source feeds. */
  readonly sink: MeteredSink;
  /** The pipeline's checkpoint store, for the management API. */
  readonly checkpoints?: CheckpointStore;
  /**
   * The pipeline's park store, for the management API (default: the sink's, when its failure
   * policy uses one park store).
   */
  readonly parked?: ParkStore;
  /** Head and start positions, for lag and resets. */
  readonly positions?: SourcePositions;
  /** How long a head position is reused before the backend is asked again (default 1000 ms). */
  readonly headCacheMs?: number;
  /** How long to wait for the head positions before reporting lag as unknown (default 2000 ms). */
  readonly headTimeoutMs?: number;
  /**
   * Problems of other parts the pipeline depends on, reported with the source's (e.g. a DynamoDB
   * indexer's `problems()`, which lists the records it had to park).
   */
  readonly problems?: () => readonly SourceProblem[];
  /**
   * This member's leases, when the pipeline's source shares its units through leases and is
   * not observed (an observed source's own `leases()` is read without it).
   */
  readonly leases?: () => LeaseSnapshot | undefined;
}

/**
 * Reading progress of one tranche as seen between the source and the sink.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { createMetrics, type TrancheReads } from "@impel/impel/metrics";
 * const store = createMemoryStore();
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const pipeline = metrics.addPipeline({ group: "printer", source: "memory", sink });
 * const ac = new AbortController();
 * const running = run(pipeline.observe(memorySource({ store })), sink, { signal: ac.signal });
 * await store.append("Order-1", [{ type: "Placed", data: {} }, { type: "Paid", data: {} }], 0);
 * await sink.monitor.awaitCompletion({ tail: true });
 * const reads: readonly TrancheReads[] = pipeline.reads();
 * for (const r of reads) console.log(r.tranche, r.items, r.position, r.isTail); // "all" 2 2n true
 * ac.abort();
 * await running;
 * ```
 */
export interface TrancheReads {
  /** The tranche. */
  readonly tranche: string;
  /** Batches read. */
  readonly batches: number;
  /** Items read. */
  readonly items: number;
  /** Position of the latest batch. */
  readonly position: Position;
  /** Whether the latest batch reached the tail. */
  readonly isTail: boolean;
  /** When the latest batch passed, ms since the epoch. */
  readonly lastAt: number;
}

interface Heads {
  readonly positions: ReadonlyMap<string, Position>;
  readonly error?: string;
}

/**
 * The head and lag of one tranche.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { createMetrics, type TrancheLag } from "@impel/impel/metrics";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * await store.append("Order-2", [{ type: "Placed", data: {} }], 0);
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const pipeline = metrics.addPipeline({
 *   group: "printer",
 *   source: "memory",
 *   sink,
 *   positions: { head: () => Promise.resolve(BigInt(store.head)) },
 * });
 * // The backlog is read but not handed to the sink yet.
 * const reader = pipeline.observe(memorySource({ store })).getReader();
 * await reader.read();
 * const lag: TrancheLag | undefined = (await pipeline.lags(sink.stats())).tranches.get("all");
 * console.log(lag?.head, lag?.lag); // 2n 2: nothing handled, two entries behind the head
 * await reader.cancel();
 * await sink.stop();
 * ```
 */
export interface TrancheLag {
  /** The backend's head position. */
  readonly head: Position;
  /**
   * Head minus the completed position (before anything completes: minus the stored checkpoint,
   * or the start when there is none), in the source's position units; never negative.
   */
  readonly lag: number | undefined;
}

/**
 * Lag by tranche, or why it is unknown.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { createMetrics, type Lags } from "@impel/impel/metrics";
 * const store = createMemoryStore();
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const pipeline = metrics.addPipeline({
 *   group: "printer",
 *   source: "memory",
 *   sink,
 *   positions: { head: () => Promise.reject(new Error("backend unreachable")) },
 * });
 * const ac = new AbortController();
 * const running = run(pipeline.observe(memorySource({ store })), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * const lags: Lags = await pipeline.lags(sink.stats());
 * console.log(lags.tranches.size, lags.error); // 0 "Error: backend unreachable"
 * ac.abort();
 * await running;
 * ```
 */
export interface Lags {
  /** Per tranche whose head the backend could tell. */
  readonly tranches: ReadonlyMap<string, TrancheLag>;
  /** Set when asking the backend failed or timed out. */
  readonly error?: string;
}

/**
 * A registered pipeline: what metrics, health and the management API read.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { createMetrics, type MeteredPipeline } from "@impel/impel/metrics";
 * const store = createMemoryStore();
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const pipeline: MeteredPipeline = metrics.addPipeline({
 *   group: "printer",
 *   source: "memory",
 *   sink,
 * });
 * const ac = new AbortController();
 * // observe() between source and sink counts the batches read.
 * const running = run(pipeline.observe(memorySource({ store })), sink, { signal: ac.signal });
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * await sink.monitor.awaitCompletion({ tail: true });
 * console.log(pipeline.state, pipeline.tranches(pipeline.stats())); // "running" ["all"]
 * ac.abort();
 * await running;
 * console.log(pipeline.state); // "stopped"
 * pipeline.remove(); // its series leave the next scrape
 * ```
 */
export interface MeteredPipeline {
  /** The consumer group. */
  readonly group: string;
  /** The source's name in checkpoint keys. */
  readonly source: string;
  /** The checkpoint store, if given. */
  readonly checkpoints: CheckpointStore | undefined;
  /** The park store, if given or the sink has exactly one. */
  readonly parked: ParkStore | undefined;
  /**
   * Every park store of the pipeline, numbered by position for the management API: the
   * registration's `parked`, else the sink's, in the order of its failure policy.
   */
  readonly parkStores: readonly ParkStore[];
  /** Head and start positions: as registered, else the head the observed source reports (`heads`). */
  readonly positions: SourcePositions | undefined;
  /** `running` until the sink's `done` settles: `stopped` if it resolved, `faulted` if not. */
  readonly state: "running" | "stopped" | "faulted";
  /** The fault, once `state` is `faulted`. */
  readonly fault: unknown;
  /**
   * Wraps a source so that its batches are counted on their way to the sink. The wrapper
   * reads one batch per pull of the consumer, so it holds nothing back and buffers nothing; it
   * errors as soon as the source does, and its `problems()` are the source's.
   */
  observe(source: ObservableSource): ObservableSource;
  /**
   * The problems of the observed sources that have not ended (see `ObservableSource`); a
   * source whose `problems()` throws or answers malformed entries reports that as a problem. A
   * source that failed keeps its last problems plus its error as a failing problem, until the
   * next `observe()`.
   */
  problems(): readonly SourceProblem[];
  /**
   * The lease snapshots of the observed sources that have a `leases()` (see
   * {@linkcode LeaseSnapshot}) and of `PipelineRegistration.leases`; a snapshot that throws is
   * left out (and logged).
   */
  leases(): readonly LeaseSnapshot[];
  /** The sink's stats. */
  stats(): SinkStats;
  /** Reading progress per tranche. */
  reads(): readonly TrancheReads[];
  /** The tranches seen by the sink or read from the source. */
  tranches(stats: SinkStats): string[];
  /** Head and lag per tranche (none without `positions.head`); heads are cached for `headCacheMs`. */
  lags(stats: SinkStats): Promise<Lags>;
  /**
   * What the sink did in each interval of the last minutes, oldest first (see
   * `MetricsOptions.history`); with `since` (ms since the epoch), only the intervals ending after
   * it. Sampled by a timer that stops when the sink's `done` settles or the pipeline is removed.
   */
  history(since?: number): readonly ThroughputSample[];
  /** Removes the pipeline and its series from the registry. */
  remove(): void;
}

/**
 * The part of a prom-client `Registry` that impel relies on; pass a prom-client `Registry` (of
 * the same prom-client package impel loads) to share it with other metrics.
 *
 * @example
 * ```ts
 * import { Counter, Registry } from "prom-client";
 * import { createMetrics, type MetricsRegistry } from "@impel/impel/metrics";
 * const registry = new Registry();
 * const orders = new Counter({
 *   name: "orders_placed_total",
 *   help: "Orders placed",
 *   registers: [registry],
 * });
 * const shared: MetricsRegistry = registry;
 * const metrics = createMetrics({ registry: shared, defaultMetrics: false });
 * orders.inc();
 * // One scrape serves the application's metrics and impel's.
 * const text = await metrics.metrics();
 * console.log(text.includes("orders_placed_total 1"), shared.contentType.startsWith("text/plain"));
 * // true true
 * ```
 */
export interface MetricsRegistry {
  /** The exposition text of every metric registered. */
  metrics(): Promise<string>;
  /** The exposition's content type. */
  readonly contentType: string;
}

/**
 * Options of {@linkcode createMetrics}.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics, type MetricsOptions } from "@impel/impel/metrics";
 * // Left out: process metrics another library already registers.
 * const options: MetricsOptions = { prefix: "orders_impel_", defaultMetrics: false };
 * const metrics = createMetrics(options);
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * metrics.addPipeline({ group: "printer", source: "memory", sink });
 * console.log((await metrics.metrics()).includes('orders_impel_pipeline_up{group="printer"} 1'));
 * // true
 * await sink.stop();
 * ```
 */
export interface MetricsOptions {
  /** Where the metrics are registered (default: a new registry of their own). */
  readonly registry?: MetricsRegistry;
  /** Prepended to every metric name (default `impel_`). */
  readonly prefix?: string;
  /**
   * Also register prom-client's default process metrics (CPU, memory, event-loop lag) on the
   * registry (default true). They are read from `process` and `/proc`, which Deno and Bun
   * provide; where they fail to register they are left out with a warning.
   */
  readonly defaultMetrics?: boolean;
  /** How much throughput history each pipeline keeps for the status page (default: 1 s samples for 10 min). */
  readonly history?: HistoryOptions;
}

/**
 * The metrics of every pipeline in a process.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics, type ImpelMetrics } from "@impel/impel/metrics";
 * const metrics: ImpelMetrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * metrics.addPipeline({ group: "printer", source: "memory", sink });
 * console.log(metrics.pipelines().map((p) => p.group), metrics.pipeline("printer")?.state);
 * // ["printer"] "running"
 * // What a /metrics route answers (or mount createHttpHandler from @impel/impel/http):
 * const response = new Response(await metrics.metrics(), {
 *   headers: { "content-type": metrics.contentType },
 * });
 * await sink.stop();
 * ```
 */
export interface ImpelMetrics {
  /** The prom-client registry holding the metrics (a `Registry`). */
  readonly registry: MetricsRegistry;
  /** Registers a pipeline; its series appear from the next scrape. */
  addPipeline(registration: PipelineRegistration): MeteredPipeline;
  /** The registered pipelines, in registration order. */
  pipelines(): readonly MeteredPipeline[];
  /** The pipeline of `group`, if registered. */
  pipeline(group: string): MeteredPipeline | undefined;
  /** The exposition text of the whole registry. */
  metrics(): Promise<string>;
  /**
   * Counts a store writer's outcomes under `group` (the `impel_store_writer_*` series), read from
   * its `stats()` at each scrape; `remove` drops them.
   */
  addStoreWriter(group: string, writer: MeteredStoreWriter): { remove(): void };
  /**
   * Meters a queue (the `impel_queue_*` series) and has `/health` check it: its counts and oldest
   * message read from the store at each scrape or check, its consumer's counters if given.
   */
  addQueue(registration: QueueRegistration): MeteredQueue;
  /** The registered queues, in registration order. */
  queues(): readonly MeteredQueue[];
  /**
   * Exports a replay's progress under `group` (the `impel_replay_*` series), read from its
   * `progress()` at each scrape; `remove` drops them. A replay given `metrics` registers itself.
   */
  addReplay(group: string, replay: MeteredReplay): { remove(): void };
  /** The content type of {@linkcode ImpelMetrics.metrics}. */
  readonly contentType: string;
}

/**
 * What {@linkcode ImpelMetrics.addStoreWriter} reads: a store writer of
 * `@impel/impel/sinks/store-writer`.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import { storeWriter } from "@impel/impel/sinks/store-writer";
 * import { createMetrics, type MeteredStoreWriter } from "@impel/impel/metrics";
 * const writer: MeteredStoreWriter = storeWriter({ target: createMemoryStore() });
 * const metrics = createMetrics({ defaultMetrics: false });
 * metrics.addStoreWriter("replicator", writer);
 * const text = await metrics.metrics();
 * console.log(text.includes('impel_store_writer_spans_total{group="replicator",outcome="written"} 0'));
 * // true
 * ```
 */
export interface MeteredStoreWriter {
  /** The writer's totals by outcome. */
  stats(): StoreWriterStats;
}

/**
 * What {@linkcode ImpelMetrics.addQueue} meters: a queue of a store, and optionally its consumer.
 *
 * @example
 * ```ts
 * import { memoryQueues, queueConsumer } from "@impel/impel/queues/memory";
 * import { createMetrics, type QueueRegistration } from "@impel/impel/metrics";
 * const store = memoryQueues();
 * const ac = new AbortController();
 * const consumer = queueConsumer({ store, queue: "emails", handler: () => {}, signal: ac.signal });
 * const registration: QueueRegistration = { store, queue: "emails", consumer };
 * const metrics = createMetrics({ defaultMetrics: false });
 * metrics.addQueue(registration);
 * console.log((await metrics.metrics()).includes('impel_queue_dead_letters{queue="emails"} 0'));
 * // true
 * ac.abort();
 * await consumer.done;
 * ```
 */
export interface QueueRegistration {
  /** The store (`postgresQueues(pool)`, `memoryQueues()`). */
  readonly store: {
    stats(queue: string): Promise<QueueStats>;
    peek(queue: string, limit?: number): Promise<PeekedMessage[]>;
  };
  /** The queue's name; also its `queue` label and its name in health unless `name` is given. */
  readonly queue: string;
  /**
   * What it is registered, labelled (`queue`) and named in health as, instead of `queue`: for
   * two stores holding a queue of the same name (two schemas), e.g. `"billing.emails"`. Each
   * registered name must be unique.
   */
  readonly name?: string;
  /** Its consumer in this process, for the delivery counters and handler durations. */
  readonly consumer?: { stats(): QueueConsumerStats };
  /**
   * Over how long dead letters count as growing for health (default 300 000 ms): the increase
   * of the dead-letter count over this window, as sampled by scrapes and checks.
   */
  readonly deadWindowMs?: number;
}

/**
 * What a metered queue looked like at its last reading.
 *
 * @example
 * ```ts
 * import type { QueueSnapshot } from "@impel/impel/metrics";
 * const line = (s: QueueSnapshot) =>
 *   `${s.queue}: ${s.stats?.ready ?? "?"} ready, ${s.deadGrowth} new dead letters`;
 * ```
 */
export interface QueueSnapshot {
  /** The queue's registered name (its `name`, or else its `queue`). */
  readonly queue: string;
  /** Its counts, unless reading them failed. */
  readonly stats?: QueueStats;
  /** Age of its oldest message, ms (undefined when empty or unread). */
  readonly oldestAgeMs?: number;
  /** Its consumer's counters, if registered. */
  readonly consumer?: QueueConsumerStats;
  /** How many dead letters were added over the registration's `deadWindowMs`. */
  readonly deadGrowth: number;
  /** The window `deadGrowth` covers, ms. */
  readonly deadWindowMs: number;
  /** Why the store could not be read. */
  readonly error?: string;
}

/**
 * A queue registered with {@linkcode ImpelMetrics.addQueue}.
 *
 * @example
 * ```ts
 * import { memoryQueues } from "@impel/impel/queues/memory";
 * import { createMetrics, type MeteredQueue } from "@impel/impel/metrics";
 * const store = memoryQueues();
 * await store.enqueue("emails", [{}]);
 * const metered: MeteredQueue = createMetrics({ defaultMetrics: false }).addQueue({ store, queue: "emails" });
 * console.log((await metered.check()).stats?.ready); // 1
 * ```
 */
export interface MeteredQueue {
  /** The queue's registered name (its `name`, or else its `queue`): its label and health name. */
  readonly queue: string;
  /** Reads the store (and consumer) now. */
  check(): Promise<QueueSnapshot>;
  /** Forgets the queue: no more series, no more health. */
  remove(): void;
}

/**
 * What {@linkcode ImpelMetrics.addReplay} reads: a replay of `@impel/impel/replay/messagedb`.
 *
 * @example
 * ```ts
 * import type { MeteredReplay } from "@impel/impel/metrics";
 * const idle: MeteredReplay = {
 *   progress: () => ({ state: "completed", done: 0, total: 0, eventsPerSecond: 0, etaMs: 0 }),
 * };
 * ```
 */
export interface MeteredReplay {
  /** Its progress now. */
  progress(): {
    readonly state: string;
    readonly done: number;
    readonly total: number | undefined;
    readonly eventsPerSecond: number;
    readonly etaMs: number | undefined;
  };
}

const PREFIX = /^[a-zA-Z_:][a-zA-Z0-9_:]*$|^$/;
const AGED_STATES = ["active", "failing", "stuck"] as const;

/**
 * Creates the metrics of a process's pipelines. Create one per process (or per registry), add
 * every pipeline to it, and serve `metrics()` (or mount `@impel/impel/http`).
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { createMetrics } from "@impel/impel/metrics";
 *
 * const metrics = createMetrics({ defaultMetrics: false });
 * const store = createMemoryStore();
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const pipeline = metrics.addPipeline({ group: "printer", source: "memory", sink });
 * const ac = new AbortController();
 * const running = run(pipeline.observe(memorySource({ store })), sink, { signal: ac.signal });
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * await sink.monitor.awaitCompletion({ tail: true });
 * console.log(await metrics.metrics()); // ... impel_scheduler_events_handled_total{group="printer"} 1 ...
 * ac.abort();
 * await running;
 * ```
 */
export function createMetrics(options: MetricsOptions = {}): ImpelMetrics {
  const given = options.registry as Registry | undefined;
  if (given !== undefined && typeof given?.registerMetric !== "function") {
    throw new InvalidArgumentError("registry", "must be a prom-client Registry");
  }
  const registry = given ?? new Registry();
  const prefix = options.prefix ?? "impel_";
  if (typeof prefix !== "string" || !PREFIX.test(prefix)) {
    throw new InvalidArgumentError(
      "prefix",
      `must be a metric name prefix (letters, digits, _ and :), got ${describe(prefix)}`,
    );
  }
  if (options.defaultMetrics ?? true) {
    try {
      collectDefaultMetrics({ register: registry });
    } catch (error) {
      log.warn("default process metrics are not available on this runtime: {error}", {
        error: errorText(error),
      });
    }
  }

  const history = options.history ?? {};
  if (history === null || typeof history !== "object") {
    throw new InvalidArgumentError("history", `must be an object, got ${describe(history)}`);
  }
  const historyIntervalMs = checkNumber("history.intervalMs", history.intervalMs ?? 1000, 100);
  const historyKeepMs = checkNumber("history.keepMs", history.keepMs ?? 600_000, historyIntervalMs);
  const pipelines = new Map<string, PipelineState>();
  const writers = new Map<string, MeteredStoreWriter>();
  const queues = new Map<string, MeteredQueue>();
  const replays = new Map<string, MeteredReplay>();
  // All collect callbacks of one scrape share one pass over the pipelines.
  let scrape: Promise<void> | undefined;
  const collect = (): Promise<void> => {
    if (scrape === undefined) {
      scrape = update().finally(() => (scrape = undefined));
    }
    return scrape;
  };

  const owned: Array<Gauge<string> | Counter<string>> = [];
  const gauge = (name: string, help: string, labelNames: string[]) => {
    const g = new Gauge({ name: prefix + name, help, labelNames, registers: [registry], collect });
    owned.push(g);
    return g;
  };
  const counter = (name: string, help: string, labelNames: string[]) => {
    const c = new Counter({
      name: prefix + name,
      help,
      labelNames,
      registers: [registry],
      collect,
    });
    owned.push(c);
    return c;
  };
  const G = ["group"], GS = ["group", "state"], GST = ["group", "source", "tranche"];
  const GSC = ["group", "source", "scope"];

  const m = {
    up: gauge("pipeline_up", "1 while the pipeline runs, 0 once it stopped or faulted", G),
    faulted: gauge("pipeline_faulted", "1 once the failure policy faulted the pipeline", G),
    streams: gauge("scheduler_streams", "Streams by state", GS),
    events: gauge("scheduler_events", "Buffered events by stream state", GS),
    bytes: gauge("scheduler_bytes", "Buffered bytes by stream state", GS),
    buffered: gauge("scheduler_buffered_events", "Events buffered and not yet handled", G),
    tracked: gauge(
      "scheduler_streams_tracked",
      "Streams with buffered events or a known write position",
      G,
    ),
    oldest: gauge("scheduler_oldest_seconds", "Age of the oldest stream in the state", GS),
    newest: gauge("scheduler_newest_seconds", "Age of the newest stream in the state", GS),
    attempts: gauge("scheduler_max_attempts", "Most attempts made by a stream in the state", GS),
    uncompleted: gauge("scheduler_uncompleted_batches", "Batches read and not yet complete", G),
    readAheadLimit: gauge(
      "scheduler_read_ahead_limit",
      "Most uncompleted batches before the source is held back",
      G,
    ),
    batches: counter("scheduler_batches_total", "Batches ingested", G),
    batchesCompleted: counter("scheduler_batches_completed_total", "Batches completed", G),
    eventsIn: counter("scheduler_events_total", "Events ingested, duplicates included", G),
    handled: counter("scheduler_events_handled_total", "Events handled", G),
    duplicates: counter(
      "scheduler_events_duplicate_total",
      "Events dropped because they were already handled",
      G,
    ),
    deadLettered: counter(
      "scheduler_dead_lettered_total",
      "Streams handed to the dead-letter callback",
      G,
    ),
    parkedStreams: gauge("parked_streams", "Streams parked until released or skipped", G),
    parkedEvents: gauge("parked_events", "Events parked", G),
    parkedOldest: gauge("parked_oldest_seconds", "Age of the oldest parked stream", G),
    parkStoreFailing: gauge(
      "parked_store_failing_seconds",
      "How long the park store has been failing (0 while it works)",
      G,
    ),
    parkedTotal: counter(
      "parked_total",
      "Streams parked, released and skipped, releases that failed again (releaseFailed), and park store operations that failed (storeFailed)",
      ["group", "outcome"],
    ),
    calls: counter("handler_calls_total", "Handler calls by outcome", ["group", "outcome"]),
    sourceBatches: counter("source_batches_total", "Batches (pages) read", GST),
    sourceItems: counter("source_items_total", "Items read", GST),
    position: gauge("source_position", "Position of the latest batch read", GST),
    atTail: gauge("source_at_tail", "1 if the latest read reached the tail", GST),
    lastBatchAge: gauge(
      "source_last_batch_age_seconds",
      "Time since the latest batch was read",
      GST,
    ),
    readAhead: gauge(
      "source_read_ahead_batches",
      "Batches read and not yet passed by the completed position",
      GST,
    ),
    completed: gauge(
      "source_completed_position",
      "Position up to which every batch is complete",
      GST,
    ),
    committed: gauge(
      "source_committed_position",
      "Position last committed to the checkpoint store",
      GST,
    ),
    commitFailures: gauge(
      "source_commit_failures",
      "Consecutive failed checkpoint commits of the tranche (0 after a success)",
      GST,
    ),
    commitFailing: gauge(
      "source_commit_failing_seconds",
      "How long the tranche's checkpoint commits have been failing (0 while they succeed)",
      GST,
    ),
    problems: gauge(
      "source_problems",
      "Problems the source reports (consumer down, nothing assigned, reads failing), by severity",
      ["group", "source", "severity"],
    ),
    head: gauge("source_head_position", "The backend's head position", GST),
    lag: gauge(
      "source_lag",
      "Head position minus completed position, in the source's position units",
      GST,
    ),
    leaseHeld: gauge("lease_held", "Leases this member holds and works on", GSC),
    leaseShare: gauge("lease_share", "This member's fair share of the units", GSC),
    leaseMembers: gauge(
      "lease_members",
      "Live members with the same units, this one included",
      GSC,
    ),
    leaseUnowned: gauge("lease_units_unowned", "Units without an owner at the last heartbeat", GSC),
    leaseMismatched: gauge(
      "lease_mismatched_members",
      "Live members configured with other units than this one",
      GSC,
    ),
    leaseHeartbeatFailures: gauge(
      "lease_heartbeat_failures",
      "Lease heartbeats failed in a row (0 after a success)",
      GSC,
    ),
    leaseAcquireFailures: gauge(
      "lease_acquire_failures",
      "Lease acquisitions failed in a row (0 after a success)",
      GSC,
    ),
    leaseHeartbeatAge: gauge(
      "lease_heartbeat_age_seconds",
      "Time since the last successful lease heartbeat",
      GSC,
    ),
    leaseOldest: gauge("lease_oldest_seconds", "Age of the oldest lease held", GSC),
    leaseEvents: counter(
      "lease_events_total",
      "Lease acquisitions, hand-overs, losses, releases, requests, leases kept to expiry, late " +
        "revocations, failed heartbeats and failed acquisitions",
      [...GSC, "event"],
    ),
    writerSpans: counter(
      "store_writer_spans_total",
      "Store-writer calls by outcome (written, duplicate, partial, behind, filtered)",
      ["group", "outcome"],
    ),
    writerEvents: counter(
      "store_writer_events_total",
      "Store-writer events by outcome (written, duplicate, behind, filtered)",
      ["group", "outcome"],
    ),
    writerConflicts: counter(
      "store_writer_conflicts_total",
      "Store-writer appends that met another version and were classified again",
      G,
    ),
    queueMessages: gauge("queue_messages", "Messages of the queue by state", ["queue", "state"]),
    queueDead: gauge("queue_dead_letters", "Dead letters of the queue", ["queue"]),
    queueOldest: gauge("queue_oldest_seconds", "Age of the queue's oldest message", ["queue"]),
    queueDeliveries: counter(
      "queue_deliveries_total",
      "Deliveries of the queue's consumer: delivered, acked, nacked, lost",
      ["queue", "outcome"],
    ),
    replayEvents: gauge("replay_events", "A replay's events done and in total", ["group", "kind"]),
    replayRate: gauge("replay_events_per_second", "A replay's events per second so far", G),
    replayEta: gauge("replay_eta_seconds", "A replay's time left at its rate so far", G),
    replayRunning: gauge("replay_running", "1 while the replay runs, 0 paused or ended", G),
  };
  // Observed per batch (when sources report read times), so never reset at scrape time.
  const readDuration = new Histogram({
    name: prefix + "source_read_duration_seconds",
    help: "Time a read of the source took, for sources whose batches report readMs",
    labelNames: GST,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });

  // The scheduler keeps the buckets (its own sampled histogram, cumulative since start), so the
  // histogram is rendered from them at each scrape rather than observed here.
  const durationName = prefix + "handler_duration_seconds";
  const durationHelp =
    "Handler call duration by outcome, of the calls the scheduler timed (the first call to start in each millisecond, and one in 64 of the others)";
  let durations: Array<{ group: string; outcome: string; t: LatencyTotals }> = [];
  let queueDurations: Array<{ queue: string; t: LatencyTotals }> = [];
  const queueDurationName = prefix + "queue_handler_duration_seconds";
  const queueDurationHelp = "Queue consumer handler call durations (every call)";
  registry.registerMetric({
    name: queueDurationName,
    help: queueDurationHelp,
    type: "histogram",
    aggregator: "sum",
    reset() {},
    async get() {
      await collect();
      return {
        name: queueDurationName,
        help: queueDurationHelp,
        type: "histogram",
        aggregator: "sum",
        values: queueDurations.flatMap(({ queue, t }) =>
          histogramValues(queueDurationName, { queue }, t)
        ),
      };
    },
  } as unknown as Gauge<string>);
  registry.registerMetric({
    name: durationName,
    help: durationHelp,
    type: "histogram",
    aggregator: "sum",
    reset() {},
    async get() {
      await collect();
      const values = durations.flatMap(({ group, outcome, t }) =>
        histogramValues(durationName, { group, outcome }, t)
      );
      return {
        name: durationName,
        help: durationHelp,
        type: "histogram",
        aggregator: "sum",
        values,
      };
    },
  } as unknown as Gauge<string>);

  async function update(): Promise<void> {
    for (const metric of owned) metric.reset();
    durations = [];
    const lagging: Promise<void>[] = [];
    for (const p of pipelines.values()) {
      let stats: SinkStats;
      try {
        stats = p.stats();
      } catch (error) {
        log.warn("stats of {group} failed: {error}", { group: p.group, error: errorText(error) });
        continue;
      }
      fillScheduler(p, stats);
      fillSource(p, stats);
      fillLeases(p);
      if (p.positions?.head) lagging.push(p.lags(stats).then((lags) => fillLag(p, lags)));
    }
    for (const [group, writer] of writers) fillStoreWriter(group, writer);
    queueDurations = [];
    for (const q of queues.values()) lagging.push(q.check().then(fillQueue));
    for (const [group, replay] of replays) fillReplay(group, replay);
    await Promise.all(lagging);
  }

  function fillQueue(s: QueueSnapshot) {
    const queue = s.queue;
    if (s.stats !== undefined) {
      m.queueMessages.set({ queue, state: "ready" }, s.stats.ready);
      m.queueMessages.set({ queue, state: "in_flight" }, s.stats.inFlight);
      m.queueMessages.set({ queue, state: "delayed" }, s.stats.delayed);
      m.queueDead.set({ queue }, s.stats.dead);
      m.queueOldest.set({ queue }, (s.oldestAgeMs ?? 0) / 1000);
    }
    const c = s.consumer;
    if (c !== undefined) {
      m.queueDeliveries.inc({ queue, outcome: "delivered" }, c.delivered);
      m.queueDeliveries.inc({ queue, outcome: "acked" }, c.acked);
      m.queueDeliveries.inc({ queue, outcome: "nacked" }, c.nacked);
      m.queueDeliveries.inc({ queue, outcome: "lost" }, c.lost);
      queueDurations.push({ queue, t: c.durations });
    }
  }

  function fillReplay(group: string, replay: MeteredReplay) {
    let p: ReturnType<MeteredReplay["progress"]>;
    try {
      p = replay.progress();
    } catch (error) {
      log.warn("replay progress of {group} failed: {error}", { group, error: errorText(error) });
      return;
    }
    m.replayEvents.set({ group, kind: "done" }, p.done);
    if (p.total !== undefined) m.replayEvents.set({ group, kind: "total" }, p.total);
    m.replayRate.set({ group }, p.eventsPerSecond);
    if (p.etaMs !== undefined) m.replayEta.set({ group }, p.etaMs / 1000);
    m.replayRunning.set({ group }, p.state === "running" ? 1 : 0);
  }

  function fillScheduler(p: PipelineState, s: SinkStats) {
    const group = p.group;
    m.up.set({ group }, p.state === "running" ? 1 : 0);
    m.faulted.set({ group }, p.state === "faulted" ? 1 : 0);
    const lists = { active: s.busy, failing: s.failing, stuck: s.stuck };
    for (const state of STREAM_STATES) {
      const t = s.states[state];
      m.streams.set({ group, state }, t.streams);
      m.events.set({ group, state }, t.events);
      m.bytes.set({ group, state }, t.bytes);
    }
    m.buffered.set({ group }, s.bufferedEvents);
    for (const state of AGED_STATES) {
      const list = lists[state];
      let oldest = 0, newest = Infinity, attempts = 0;
      for (const x of list) {
        if (x.ageMs > oldest) oldest = x.ageMs;
        if (x.ageMs < newest) newest = x.ageMs;
        if (x.attempts > attempts) attempts = x.attempts;
      }
      m.oldest.set({ group, state }, oldest / 1000);
      m.newest.set({ group, state }, list.length === 0 ? 0 : newest / 1000);
      m.attempts.set({ group, state }, attempts);
    }
    m.tracked.set({ group }, s.streams);
    m.uncompleted.set({ group }, s.uncompletedBatches);
    m.readAheadLimit.set({ group }, s.maxReadAhead);
    const c = s.counters;
    m.batches.inc({ group }, c.batches);
    m.batchesCompleted.inc({ group }, c.batchesCompleted);
    m.eventsIn.inc({ group }, c.events);
    m.handled.inc({ group }, c.handled);
    m.duplicates.inc({ group }, c.duplicates);
    m.deadLettered.inc({ group }, c.deadLettered);
    const parked = s.parked;
    if (parked !== undefined) {
      m.parkedStreams.set({ group }, parked.streams);
      m.parkedEvents.set({ group }, parked.events);
      m.parkedOldest.set({ group }, parked.oldestMs / 1000);
      const since = parked.storeFailing?.since;
      m.parkStoreFailing.set({ group }, since === undefined ? 0 : (Date.now() - since) / 1000);
      m.parkedTotal.inc({ group, outcome: "parked" }, c.parked ?? 0);
      m.parkedTotal.inc({ group, outcome: "released" }, c.released ?? 0);
      m.parkedTotal.inc({ group, outcome: "skipped" }, c.skipped ?? 0);
      m.parkedTotal.inc({ group, outcome: "releaseFailed" }, c.releaseFailures ?? 0);
      m.parkedTotal.inc({ group, outcome: "storeFailed" }, c.parkFailures ?? 0);
    }
    m.calls.inc({ group, outcome: "ok" }, c.calls);
    m.calls.inc({ group, outcome: "failed" }, c.failures);
    for (const outcome of ["ok", "failed"] as const) {
      durations.push({ group, outcome, t: s.latencyTotals[outcome] });
    }
  }

  function fillSource(p: PipelineState, s: SinkStats) {
    const base = { group: p.group, source: p.source };
    const now = Date.now();
    for (const r of p.reads()) {
      const labels = { ...base, tranche: r.tranche };
      m.sourceBatches.inc(labels, r.batches);
      m.sourceItems.inc(labels, r.items);
      m.position.set(labels, Number(r.position));
      m.atTail.set(labels, r.isTail ? 1 : 0);
      m.lastBatchAge.set(labels, (now - r.lastAt) / 1000);
    }
    for (const t of s.tranches) {
      const labels = { ...base, tranche: t.tranche };
      m.readAhead.set(labels, t.readAhead);
      if (t.completed !== undefined) m.completed.set(labels, Number(t.completed));
      if (t.committed !== undefined) m.committed.set(labels, Number(t.committed));
      m.commitFailures.set(labels, t.commitFailures);
      const since = t.commitFailingSince;
      m.commitFailing.set(labels, since === undefined ? 0 : Math.max(0, now - since) / 1000);
    }
    const problems = { degraded: 0, failing: 0 };
    for (const problem of p.problems()) problems[problem.severity]++;
    for (const [severity, n] of Object.entries(problems)) m.problems.set({ ...base, severity }, n);
  }

  function fillLeases(p: PipelineState) {
    for (const l of p.leases()) {
      const labels = { group: p.group, source: p.source, scope: l.scope };
      m.leaseHeld.set(labels, l.held.filter((h) => h.state === "working").length);
      m.leaseShare.set(labels, l.share);
      m.leaseMembers.set(labels, l.members.length);
      m.leaseUnowned.set(labels, l.unowned);
      m.leaseMismatched.set(labels, l.mismatched.length);
      m.leaseHeartbeatFailures.set(labels, l.heartbeatFailures);
      m.leaseAcquireFailures.set(labels, l.acquireFailures);
      if (l.heartbeatAgoMs !== undefined) m.leaseHeartbeatAge.set(labels, l.heartbeatAgoMs / 1000);
      m.leaseOldest.set(labels, Math.max(0, ...l.held.map((h) => h.ageMs)) / 1000);
      const events: Array<[string, number]> = [
        ["acquired", l.acquired],
        ["handed_over", l.handedOver],
        ["lost", l.lost],
        ["released", l.released],
        ["requested", l.requested],
        ["kept", l.kept],
        ["late_revocation", l.lateRevocations],
        ["heartbeat_failed", l.failedHeartbeats],
        ["acquire_failed", l.failedAcquisitions],
      ];
      for (const [event, n] of events) m.leaseEvents.inc({ ...labels, event }, n);
    }
  }

  function fillStoreWriter(group: string, writer: MeteredStoreWriter) {
    let s: StoreWriterStats;
    try {
      s = writer.stats();
    } catch (error) {
      log.warn("store writer stats of {group} failed: {error}", {
        group,
        error: errorText(error),
      });
      return;
    }
    for (const [outcome, n] of Object.entries(s.spans)) m.writerSpans.inc({ group, outcome }, n);
    for (const [outcome, n] of Object.entries(s.events)) m.writerEvents.inc({ group, outcome }, n);
    m.writerConflicts.inc({ group }, s.conflicts);
  }

  function fillLag(p: PipelineState, lags: Lags) {
    const base = { group: p.group, source: p.source };
    for (const [tranche, t] of lags.tranches) {
      const labels = { ...base, tranche };
      m.head.set(labels, Number(t.head));
      if (t.lag !== undefined) m.lag.set(labels, t.lag);
    }
  }

  return {
    registry,
    addPipeline(registration) {
      const p = createPipelineState(
        registration,
        (state) => {
          pipelines.delete(state.group);
          for (const tranche of state.trancheNames()) {
            readDuration.remove({ group: state.group, source: state.source, tranche });
          }
        },
        readDuration,
        historyIntervalMs,
        historyKeepMs,
      );
      if (pipelines.has(p.group)) {
        p.stopHistory();
        throw new InvalidArgumentError(
          "group",
          `${describe(p.group)} is already registered; groups label the series and must be unique`,
        );
      }
      pipelines.set(p.group, p);
      return p;
    },
    addStoreWriter(group, writer) {
      if (typeof group !== "string" || group.length === 0) {
        throw new InvalidArgumentError(
          "group",
          `must be a non-empty string, got ${describe(group)}`,
        );
      }
      if (typeof writer?.stats !== "function") {
        throw new InvalidArgumentError("writer", "must have a stats() method (a StoreWriter)");
      }
      if (writers.has(group)) {
        throw new InvalidArgumentError(
          "group",
          `${
            describe(group)
          } already has a store writer; groups label the series and must be unique`,
        );
      }
      writers.set(group, writer);
      return { remove: () => void writers.delete(group) };
    },
    addQueue(registration) {
      const metered = meterQueue(registration, () => queues.delete(metered.queue));
      if (queues.has(metered.queue)) {
        throw new InvalidArgumentError(
          registration.name === undefined ? "queue" : "name",
          `${
            describe(metered.queue)
          } is already registered; queues label the series and must be unique (a queue of the ` +
            `same name in another store: register it with a name:, e.g. "schema.queue")`,
        );
      }
      queues.set(metered.queue, metered);
      return metered;
    },
    queues: () => [...queues.values()],
    addReplay(group, replay) {
      if (typeof group !== "string" || group.length === 0) {
        throw new InvalidArgumentError(
          "group",
          `must be a non-empty string, got ${describe(group)}`,
        );
      }
      if (typeof replay?.progress !== "function") {
        throw new InvalidArgumentError("replay", "must have a progress() method (a Replay)");
      }
      if (replays.has(group)) {
        throw new InvalidArgumentError("group", `${describe(group)} already has a replay`);
      }
      replays.set(group, replay);
      return { remove: () => void replays.delete(group) };
    },
    pipelines: () => [...pipelines.values()],
    pipeline: (group) => pipelines.get(group),
    metrics: () => registry.metrics(),
    get contentType() {
      return registry.contentType;
    },
  };
}

interface PipelineState extends MeteredPipeline {
  trancheNames(): string[];
  stopHistory(): void;
}

interface ReadState {
  tranche: string;
  batches: number;
  items: number;
  position: Position;
  isTail: boolean;
  lastAt: number;
}

function checkRegistration(r: PipelineRegistration) {
  if (r === null || typeof r !== "object") {
    throw new InvalidArgumentError("registration", "must be an object");
  }
  for (const field of ["group", "source"] as const) {
    if (typeof r[field] !== "string" || r[field].length === 0) {
      throw new InvalidArgumentError(
        field,
        `must be a non-empty string, got ${describe(r[field])}`,
      );
    }
  }
  if (typeof r.sink?.stats !== "function") {
    throw new InvalidArgumentError("sink", "must have a stats() method (a StreamsSink)");
  }
  if (r.problems !== undefined && typeof r.problems !== "function") {
    throw new InvalidArgumentError("problems", `must be a function, got ${describe(r.problems)}`);
  }
  if (r.leases !== undefined && typeof r.leases !== "function") {
    throw new InvalidArgumentError("leases", `must be a function, got ${describe(r.leases)}`);
  }
  if (r.checkpoints !== undefined && typeof r.checkpoints.list !== "function") {
    throw new InvalidArgumentError("checkpoints", "must be a CheckpointStore");
  }
  if (r.parked !== undefined) checkParkStore("parked", r.parked);
  if (r.positions !== undefined) {
    for (const fn of ["head", "start"] as const) {
      if (r.positions[fn] !== undefined && typeof r.positions[fn] !== "function") {
        throw new InvalidArgumentError(`positions.${fn}`, "must be a function");
      }
    }
  }
}

/** An observed source; `failed` once it errored: its last problems and the error. */
interface Watched {
  readonly source: ObservableSource;
  failed?: readonly SourceProblem[];
}

const SEVERITIES: ReadonlySet<unknown> = new Set(["degraded", "failing"]);

/**
 * A source's problems, checked: a source that cannot say what is wrong with it is a problem
 * too, and a malformed entry is kept (as failing) rather than dropped.
 */
function problemsOf(source: ObservableSource): SourceProblem[] {
  if (typeof source.problems !== "function") return [];
  let given: unknown;
  try {
    given = source.problems();
  } catch (error) {
    return [{
      severity: "degraded",
      reason: `its problems() threw ${errorText(error)}`,
      since: Date.now(),
    }];
  }
  if (!Array.isArray(given)) {
    return [{
      severity: "degraded",
      reason: `its problems() answered ${describe(given)}, not an array`,
      since: Date.now(),
    }];
  }
  return given.map((p: Partial<SourceProblem> | null | undefined) => {
    const valid = SEVERITIES.has(p?.severity) && typeof p?.reason === "string" &&
      Number.isFinite(p?.since);
    if (valid) return p as SourceProblem;
    return {
      severity: "failing",
      reason: `a malformed problem (needs severity "degraded" or "failing", a reason and since): ${
        shown(p)
      }`,
      since: Number.isFinite(p?.since) ? p!.since! : Date.now(),
    };
  });
}

function shown(value: unknown): string {
  try {
    return JSON.stringify(value)?.slice(0, 200) ?? describe(value);
  } catch {
    return describe(value);
  }
}

/** One tranche's head from a source's `heads()`, asked once for all tranches of a scrape. */
function headOfSource(
  heads: () => Promise<ReadonlyMap<string, Position>>,
): (tranche: string) => Promise<Position | undefined> {
  let last: { at: number; value: Promise<ReadonlyMap<string, Position>> } | undefined;
  return async (tranche) => {
    if (last === undefined || Date.now() - last.at > 100) last = { at: Date.now(), value: heads() };
    return (await last.value).get(tranche);
  };
}

function createPipelineState(
  r: PipelineRegistration,
  onRemove: (p: PipelineState) => void,
  readDuration: Histogram<string>,
  historyIntervalMs: number,
  historyKeepMs: number,
): PipelineState {
  checkRegistration(r);
  const headCacheMs = checkNumber("headCacheMs", r.headCacheMs ?? 1000, 0);
  const headTimeoutMs = checkNumber("headTimeoutMs", r.headTimeoutMs ?? 2000, 1);
  const reads = new Map<string, ReadState>();
  // The observed sources still running, for their problems; a source that failed stays, with
  // its problems as they were and its error, until the next observe() starts another run.
  const observed = new Set<Watched>();
  let state: MeteredPipeline["state"] = "running";
  let fault: unknown;
  const history: ThroughputHistory = createThroughputHistory(
    () => r.sink.stats(),
    historyIntervalMs,
    historyKeepMs,
  );
  r.sink.done?.then(
    () => {
      state = "stopped";
      history.stop();
    },
    (error) => {
      state = "faulted";
      fault = error;
      history.stop();
    },
  );
  let cached: { at: number; key: string; value: Promise<Heads> } | undefined;
  // The registration's, else the head the observed source reports of its tranches.
  let positions = r.positions;
  // Where each tranche began, for lag before anything completes; fixed once known.
  const starts = new Map<string, Promise<Position | undefined>>();

  function record(batch: Batch) {
    let t = reads.get(batch.tranche);
    if (t === undefined) {
      t = {
        tranche: batch.tranche,
        batches: 0,
        items: 0,
        position: batch.position,
        isTail: false,
        lastAt: 0,
      };
      reads.set(batch.tranche, t);
    }
    t.batches++;
    t.items += batch.items.length;
    t.position = batch.position;
    t.isTail = batch.isTail;
    t.lastAt = Date.now();
    const readMs = (batch as { readonly readMs?: unknown }).readMs;
    if (typeof readMs === "number" && readMs >= 0) {
      readDuration.observe(
        { group: r.group, source: r.source, tranche: batch.tranche },
        readMs / 1000,
      );
    }
  }

  function headsOf(tranches: readonly string[]): Promise<Heads> {
    const key = tranches.join("\u0000");
    const now = Date.now();
    if (cached && cached.key === key && now - cached.at < headCacheMs) return cached.value;
    const value = askHeads(tranches);
    cached = { at: now, key, value };
    return value;
  }

  function startOf(tranche: string): Promise<Position | undefined> {
    let start = starts.get(tranche);
    if (start === undefined) {
      start = (async () => {
        const stored = await r.checkpoints?.load({ source: r.source, tranche, group: r.group });
        return stored ?? await positions?.start?.(tranche) ?? 0n;
      })().catch((error) => {
        starts.delete(tranche); // ask again next time
        log.warn("start position of {group}/{tranche} is unknown: {error}", {
          group: r.group,
          tranche,
          error: errorText(error),
        });
        return undefined;
      });
      starts.set(tranche, start);
    }
    return start;
  }

  async function askHeads(tranches: readonly string[]): Promise<Heads> {
    const head = positions?.head;
    if (!head || tranches.length === 0) return { positions: new Map() };
    try {
      const values = await withTimeout(
        Promise.all(tranches.map((t) => head(t))),
        headTimeoutMs,
        "asking for the head positions",
        "HeadTimeout",
      );
      const positions = new Map<string, Position>();
      values.forEach((v, i) => {
        if (typeof v === "bigint") positions.set(tranches[i], v);
      });
      return { positions };
    } catch (error) {
      log.warn("head positions of {group} are unknown: {error}", {
        group: r.group,
        error: errorText(error),
      });
      return { positions: new Map(), error: errorText(error) };
    }
  }

  const sinkStores = r.sink.parkStores;
  const self: PipelineState = {
    group: r.group,
    source: r.source,
    checkpoints: r.checkpoints,
    parked: r.parked ?? (sinkStores?.length === 1 ? sinkStores[0] : undefined),
    parkStores: r.parked !== undefined ? [r.parked] : [...(sinkStores ?? [])],
    get positions() {
      return positions;
    },
    get state() {
      return state;
    },
    get fault() {
      return fault;
    },
    observe(source) {
      if (typeof source?.getReader !== "function") {
        throw new InvalidArgumentError("source", "must be a ReadableStream of batches");
      }
      const reader = source.getReader();
      for (const w of observed) if (w.failed) observed.delete(w);
      const watched: Watched = { source };
      observed.add(watched);
      if (r.positions?.head === undefined && typeof source.heads === "function") {
        positions = { ...r.positions, head: headOfSource(source.heads.bind(source)) };
      }
      const forget = () => void observed.delete(watched);
      const stream = new ReadableStream<Batch>({
        start(controller) {
          // run() stops the sink as soon as its source errors, even while a write waits for
          // room: pass the error on without waiting for the next pull.
          reader.closed.then(forget, (error) => {
            watched.failed = [...problemsOf(source), {
              severity: "failing",
              reason: `stopped reading: ${errorText(error)}`,
              since: Date.now(),
            }];
            try {
              controller.error(error);
            } catch {
              // already closed or errored
            }
          });
        },
        async pull(controller) {
          const { done, value } = await reader.read();
          if (done) return controller.close();
          record(value);
          controller.enqueue(value);
        },
        cancel(reason) {
          forget();
          return reader.cancel(reason);
        },
      }, { highWaterMark: 0 });
      return Object.assign(stream, {
        problems: () => problemsOf(source),
        heads: source.heads?.bind(source),
      });
    },
    problems: () => [
      ...[...observed].flatMap((w) => w.failed ?? problemsOf(w.source)),
      ...(r.problems ? problemsOf({ problems: r.problems } as ObservableSource) : []),
    ],
    leases() {
      const out: LeaseSnapshot[] = [];
      // A source with leases (messageDbSource) says so with a leases() method of its own.
      const sources = [...observed].map((w) => w.source as { leases?: unknown });
      if (r.leases) sources.push({ leases: r.leases });
      for (const source of sources) {
        if (typeof source.leases !== "function") continue;
        try {
          const snapshot = source.leases() as LeaseSnapshot | undefined;
          if (snapshot !== undefined && snapshot !== null) out.push(snapshot);
        } catch (error) {
          log.warn("lease snapshot of {group} failed: {error}", {
            group: r.group,
            error: errorText(error),
          });
        }
      }
      return out;
    },
    stats: () => r.sink.stats(),
    reads: () => [...reads.values()].map((t) => ({ ...t })),
    tranches(stats) {
      const names = new Set(stats.tranches.map((t) => t.tranche));
      for (const t of reads.keys()) names.add(t);
      return [...names].sort();
    },
    async lags(stats) {
      const heads = await headsOf(self.tranches(stats));
      const tranches = new Map<string, TrancheLag>();
      const completed = new Map(stats.tranches.map((t) => [t.tranche, t.completed]));
      for (const [tranche, head] of heads.positions) {
        const base = completed.get(tranche) ?? await startOf(tranche);
        const lag = base === undefined ? undefined : head > base ? Number(head - base) : 0;
        tranches.set(tranche, { head, lag });
      }
      return heads.error === undefined ? { tranches } : { tranches, error: heads.error };
    },
    history: (since) => history.samples(since),
    remove() {
      history.stop();
      onRemove(self);
    },
    trancheNames: () => [...reads.keys()],
    stopHistory: () => history.stop(),
  };
  return self;
}

/** A histogram's exposition values from cumulative totals (bounds in ms, exported in s). */
function histogramValues(
  name: string,
  labels: Record<string, string>,
  t: LatencyTotals,
): Array<{ labels: Record<string, string | number>; value: number; metricName: string }> {
  const values: Array<
    { labels: Record<string, string | number>; value: number; metricName: string }
  > = [];
  let cumulative = 0;
  t.boundsMs.forEach((bound, i) => {
    cumulative += t.counts[i];
    values.push({
      labels: { le: bound / 1000, ...labels },
      value: cumulative,
      metricName: `${name}_bucket`,
    });
  });
  values.push(
    { labels: { le: "+Inf", ...labels }, value: t.count, metricName: `${name}_bucket` },
    { labels, value: t.sumMs / 1000, metricName: `${name}_sum` },
    { labels, value: t.count, metricName: `${name}_count` },
  );
  return values;
}

/** A metered queue: reads the store and consumer, keeping dead-letter counts over the window. */
function meterQueue(r: QueueRegistration, remove: () => void): MeteredQueue {
  if (r === null || typeof r !== "object") {
    throw new InvalidArgumentError("registration", "must be an object with a store and a queue");
  }
  if (typeof r.queue !== "string" || r.queue.length === 0) {
    throw new InvalidArgumentError("queue", `must be a non-empty string, got ${describe(r.queue)}`);
  }
  if (typeof r.store?.stats !== "function" || typeof r.store?.peek !== "function") {
    throw new InvalidArgumentError("store", "must be a QueueStore (postgresQueues, memoryQueues)");
  }
  if (r.consumer !== undefined && typeof r.consumer?.stats !== "function") {
    throw new InvalidArgumentError("consumer", "must have a stats() method (a QueueConsumer)");
  }
  if (r.name !== undefined && (typeof r.name !== "string" || r.name.length === 0)) {
    throw new InvalidArgumentError("name", `must be a non-empty string, got ${describe(r.name)}`);
  }
  const name = r.name ?? r.queue;
  const windowMs = checkNumber("deadWindowMs", r.deadWindowMs ?? 300_000, 1);
  const samples: Array<{ at: number; dead: number }> = [];
  let reading: Promise<QueueSnapshot> | undefined;
  const read = async (): Promise<QueueSnapshot> => {
    const consumer = r.consumer?.stats();
    try {
      const [stats, [oldest]] = await Promise.all([
        r.store.stats(r.queue),
        r.store.peek(r.queue, 1),
      ]);
      const now = Date.now();
      samples.push({ at: now, dead: stats.dead });
      while (samples.length > 1 && samples[0].at < now - windowMs) samples.shift();
      // Requeued dead letters lower the count: growth is over the lowest count in the window.
      const low = Math.min(...samples.map((x) => x.dead));
      return {
        queue: name,
        stats,
        ...(oldest === undefined
          ? {}
          : { oldestAgeMs: Math.max(0, now - oldest.enqueuedAt.getTime()) }),
        ...(consumer === undefined ? {} : { consumer }),
        deadGrowth: stats.dead - low,
        deadWindowMs: windowMs,
      };
    } catch (error) {
      log.warn("queue {queue} could not be read: {error}", {
        queue: name,
        error: errorText(error),
      });
      return {
        queue: name,
        ...(consumer === undefined ? {} : { consumer }),
        deadGrowth: 0,
        deadWindowMs: windowMs,
        error: errorText(error),
      };
    }
  };
  return {
    queue: name,
    // A scrape and a health check at once share one reading.
    check: () => (reading ??= read().finally(() => (reading = undefined))),
    remove,
  };
}
