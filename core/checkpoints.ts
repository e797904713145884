/**
 * The checkpoint store contract shared by every backend.
 *
 * @module
 */
import type { Position } from "./batch.ts";
import { ImpelError } from "./errors.ts";

/**
 * The key of one checkpoint: which source, which tranche, which consumer group.
 *
 * @example
 * ```ts
 * import type { CheckpointKey } from "@impel/impel";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const checkpoints = memoryCheckpoints();
 * const key: CheckpointKey = { source: "memory", tranche: "all", group: "printer" };
 * await checkpoints.reset(key, 0n); // replay the group from the start
 * const [saved] = await checkpoints.list("memory", "printer");
 * console.log(saved.tranche, saved.position); // "all" 0n
 * ```
 *
 * @category Checkpoints
 */
export interface CheckpointKey {
  /** The source's name, e.g. `messagedb:GuestStay` or `memory`. */
  readonly source: string;
  /** The tranche within the source. */
  readonly tranche: string;
  /** The consumer group. */
  readonly group: string;
}

/**
 * Remembers, per (source, tranche, group), the position from which to resume. `commit` never
 * moves a checkpoint backwards (a lower position is ignored); only `reset` may.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const store = memoryCheckpoints();
 * const key = { source: "memory", tranche: "0", group: "g" };
 * await store.commit(key, 10n);
 * await store.commit(key, 5n); // ignored: never backwards
 * await store.load(key); // 10n
 * ```
 *
 * @category Checkpoints
 */
export interface CheckpointStore {
  /** The committed position, or `undefined` if none has been recorded. */
  load(key: CheckpointKey): Promise<Position | undefined>;
  /** Records `position` unless a higher one is already recorded. */
  commit(key: CheckpointKey, position: Position): Promise<void>;
  /** Sets the position unconditionally (backwards too), or removes it when `undefined`. */
  reset(key: CheckpointKey, position: Position | undefined): Promise<void>;
  /** Every checkpoint recorded for `source` and `group` (all groups if omitted). */
  list(source: string, group?: string): Promise<Array<CheckpointKey & { position: Position }>>;
}

/**
 * Checks a checkpoint key at a store's public boundary: every part a non-empty string.
 *
 * @category Checkpoints
 */
export function checkCheckpointKey(key: CheckpointKey): CheckpointKey {
  for (const part of ["source", "tranche", "group"] as const) {
    const value = key?.[part];
    if (typeof value !== "string" || value.length === 0) {
      throw new ImpelError(
        "InvalidCheckpointKey",
        `checkpoint key ${part} must be a non-empty string, got ${JSON.stringify(value)}`,
      );
    }
  }
  return key;
}

/** Checks that a position is a non-negative bigint. */
export function checkPosition(position: Position): Position {
  if (typeof position !== "bigint" || position < 0n) {
    throw new ImpelError(
      "InvalidPosition",
      `checkpoint position must be a non-negative bigint, got ${String(position)}`,
    );
  }
  return position;
}
