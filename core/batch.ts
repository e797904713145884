/**
 * Batches: the unit that flows from a source to a sink.
 *
 * @module
 */
import type { StreamEvent } from "./event.ts";
import type { Ownership } from "./ownership.ts";
import type { StreamName } from "./streamName.ts";

/**
 * Checkpoint positions are exact 64-bit integers (offsets, global positions, epoch×1e6+offset).
 *
 * @example
 * ```ts
 * import type { Position } from "@impel/impel";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const checkpoints = memoryCheckpoints();
 * const key = { source: "memory", tranche: "all", group: "printer" };
 * await checkpoints.commit(key, 42n);
 * const position: Position | undefined = await checkpoints.load(key);
 * console.log(position); // 42n
 * ```
 *
 * @category Sources
 */
export type Position = bigint;

/**
 * One event of a batch together with the stream it belongs to.
 *
 * @example
 * ```ts
 * import type { Batch, BatchItem } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * // A custom source wraps what it read as the items of a batch.
 * const events = await store.readStream("Order-1");
 * const items: BatchItem[] = events.map((event) => ({ stream: "Order-1", event }));
 * const batch: Batch = { tranche: "all", items, position: 1n, isTail: true };
 * console.log(batch.items[0].stream, batch.items[0].event.type); // "Order-1" "Placed"
 * ```
 *
 * @category Sources
 */
export interface BatchItem<E = StreamEvent> {
  /** The stream the event belongs to. */
  readonly stream: StreamName;
  /** The event. */
  readonly event: E;
  /**
   * Set when the record could not be read as a valid event of `stream` (it does not decode,
   * breaks a limit, does not fit the stream's indexes). The handler never sees it: the
   * scheduler hands it to the failure policy of its stream as if the handler had thrown this
   * error (retried, parked or faulted), and other streams carry on. `event` still holds what
   * could be read (its index, the raw `data`), for the dead-letter callback.
   */
  readonly invalid?: Error;
}

/**
 * What a source emits: items read from one tranche, the position to checkpoint once every item
 * is handled, and whether the read reached the tail. A batch with no items is a valid way for a
 * source to say "at the tail" or to move the checkpoint past filtered-out records.
 *
 * @example
 * ```ts
 * import type { Batch } from "@impel/impel";
 * const batch: Batch = { tranche: "0", items: [], position: 0n, isTail: true };
 * ```
 *
 * @category Sources
 */
export interface Batch<E = StreamEvent> {
  /** The tranche (partition, category, range) the items were read from. */
  readonly tranche: string;
  /** The items, in the order they were read. */
  readonly items: readonly BatchItem<E>[];
  /** The position to record for `tranche` once this batch and all before it are handled. */
  readonly position: Position;
  /** True when the read that produced this batch reached the end of what was available. */
  readonly isTail: boolean;
  /**
   * Records `position` as this tranche's checkpoint. Sources set it; the sink calls it, in
   * batch order and coalesced, once the batch is complete. Omitted when there is nothing to record.
   */
  readonly commit?: (position: Position) => Promise<void>;
  /** How long the read that produced this batch took, in ms (tail sleeps and waits excluded), for metrics. */
  readonly readMs?: number;
  /**
   * Set by sources that can lose a tranche: the period of ownership this batch was read in.
   * Revoking it makes the sink let go of the tranche (see {@linkcode Ownership}).
   */
  readonly ownership?: Ownership;
  /**
   * Set by sources that read an ordered log in which a stream's events can never arrive late
   * (MessageDB by global position, a Kafka partition): a gap in a stream's indexes in such a
   * batch is permanent, so the scheduler reports it at once and applies the gap policy instead
   * of waiting for the missing events.
   */
  readonly gapsAreFinal?: boolean;
}

/**
 * Something wrong that a source knows of and a health check should report: a consumer that is
 * down, a tranche whose reads keep failing, nothing assigned.
 *
 * @example
 * ```ts
 * import type { SourceProblem } from "@impel/impel";
 * const problem: SourceProblem = {
 *   severity: "failing",
 *   reason: "kafka consumer crashed: connection refused",
 *   since: Date.now(),
 * };
 * ```
 *
 * @category Sources
 */
export interface SourceProblem {
  /** How bad it is. */
  readonly severity: "degraded" | "failing";
  /** What is wrong, for people. */
  readonly reason: string;
  /** Since when (ms since the epoch). */
  readonly since: number;
  /** The tranche concerned, if one. */
  readonly tranche?: string;
}

/**
 * A source stream that can say what is wrong with it (health checks call `problems()` when it
 * is there) and how far its tranches go (`heads()`).
 *
 * @example
 * ```ts
 * import type { Batch, ObservableSource } from "@impel/impel";
 * const source: ObservableSource = Object.assign(new ReadableStream<Batch>(), {
 *   problems: () => [],
 * });
 * console.log(source.problems?.().length); // 0
 * ```
 *
 * @category Sources
 */
export type ObservableSource = ReadableStream<Batch> & {
  /** The source's current problems; empty when all is well. */
  readonly problems?: () => readonly SourceProblem[];
  /**
   * Where each tranche it reads will be once everything written to it so far is handled: the
   * position its checkpoint then holds (MessageDB: the highest global position of the tranche's
   * messages + 1). Lag, `/health` and an exact `awaitCompletion({ tail: true })` use it.
   */
  readonly heads?: () => Promise<ReadonlyMap<string, Position>>;
  /** The consumer group it reads as (its checkpoints' `group`), so a pipeline can check it. */
  readonly group?: string;
  /** Its checkpoint keys' `source` (`"messagedb"`, `"memory"`, ...), its label in metrics. */
  readonly sourceName?: string;
};
