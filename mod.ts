/**
 * impel: reactive event processing for Deno and Bun. Sources read events from stores and logs,
 * the scheduler runs handlers one stream at a time and many streams at once, sinks write results
 * on, and checkpoint stores remember progress.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 *
 * const store = createMemoryStore();
 * const sink = streamsSink({
 *   handler: async (stream, events) => console.log(stream, events.map((e) => e.type)),
 * });
 * const ac = new AbortController();
 * const running = run(memorySource({ store, checkpoints: memoryCheckpoints(), group: "printer" }), sink, {
 *   signal: ac.signal,
 * });
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * ```
 *
 * @module
 */
export type { Batch, BatchItem, ObservableSource, Position, SourceProblem } from "./core/batch.ts";
export {
  type Checkpoint,
  type CheckpointFence,
  type CheckpointKey,
  type CheckpointScope,
  type CheckpointStore,
  PipelineRunningError,
  StaleCommitError,
} from "./core/checkpoints.ts";
export * from "./core/codec.ts";
export * from "./core/decider.ts";
export { ImpelError, InvalidArgumentError } from "./core/errors.ts";
export { estimateSize, type Span, type StreamEvent } from "./core/event.ts";
export {
  type DeadLetterPolicy,
  type FailurePolicy,
  InvalidHandlerResultError,
  type ParkPolicy,
  PipelineFaultError,
  type RetryOptions,
  type StreamFailure,
  StreamGapError,
  type StreamPolicy,
  type StreamRule,
} from "./core/failure.ts";
export {
  type ParkAction,
  type ParkClaim,
  type ParkClaimRequest,
  type ParkedFailure,
  type ParkedStream,
  type ParkListOptions,
  type ParkRequest,
  ParkRequestConflictError,
  type ParkRequestInput,
  type ParkResolution,
  type ParkStore,
  type ParkWrite,
  type ParkWriteOutcome,
  ParkWritesError,
  StreamNotParkedError,
} from "./core/park.ts";
export * from "./core/ownership.ts";
export * from "./core/lease.ts";
export type { LatencyTotals, Percentiles } from "./core/histogram.ts";
export type { AwaitCompletionOptions, Monitor } from "./core/monitor.ts";
export {
  type Handler,
  type HandlerContext,
  type ParkedSnapshot,
  type ParkedStatus,
  type SchedulerCounters,
  type SchedulerOptions,
  type SchedulerSnapshot,
  STREAM_STATES,
  type StreamStateName,
  type StreamStateTotals,
  type StreamStatus,
} from "./core/scheduler.ts";
export * from "./core/shutdown.ts";
export * from "./core/sink.ts";
export * from "./core/typed.ts";
export * from "./core/pipeline.ts";
export type { SinkStats, TrancheStats } from "./core/stats.ts";
export { type JsonSafe, jsonSafe } from "./core/json.ts";
export {
  consoleLogSink,
  type LogFormatter,
  logFormatter,
  type LogRecordFields,
  type LogSink,
} from "./core/logging.ts";
export * from "./core/store.ts";
export * from "./core/streamName.ts";
export { VERSION } from "./version.ts";
