/**
 * Batches: the unit that flows from a source to a sink.
 *
 * @module
 */
import type { StreamEvent } from "./event.ts";
import type { StreamName } from "./streamName.ts";

/** Checkpoint positions are exact 64-bit integers (offsets, global positions, epoch×1e6+offset). */
export type Position = bigint;

/** One event of a batch together with the stream it belongs to. */
export interface BatchItem<E = StreamEvent> {
  /** The stream the event belongs to. */
  readonly stream: StreamName;
  /** The event. */
  readonly event: E;
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
}
