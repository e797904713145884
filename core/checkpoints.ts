/**
 * The checkpoint store contract shared by every backend.
 *
 * @module
 */
import type { Position } from "./batch.ts";
import { ImpelError, InvalidArgumentError } from "./errors.ts";

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
  /**
   * Records `position` unless a higher one is already recorded. With `fence`, a store whose
   * `fenced` is true records it only while that lease is current and unexpired, in the same
   * atomic step, and rejects with {@linkcode StaleCommitError} otherwise; a store without
   * `fenced` cannot check a fence and must not be given one.
   */
  commit(key: CheckpointKey, position: Position, fence?: CheckpointFence): Promise<void>;
  /** Sets the position unconditionally (backwards too), or removes it when `undefined`. */
  reset(key: CheckpointKey, position: Position | undefined): Promise<void>;
  /** Every checkpoint recorded for `source` and `group` (all groups if omitted). */
  list(source: string, group?: string): Promise<Array<CheckpointKey & { position: Position }>>;
  /** True when `commit` honours a {@linkcode CheckpointFence} (consumer groups with leases). */
  readonly fenced?: boolean;
  /**
   * With `fenced`: where the leases that fences are checked against are kept, named as the
   * lease store names it (`LeaseStore.location`), so that a source can refuse a checkpoint store
   * that checks other leases than its lease store keeps (`checkLeaseFence`). Optional.
   */
  readonly fenceLocation?: string;
  /**
   * True when the store keeps an opaque resume token with each position
   * ({@linkcode CheckpointStore.loadCheckpoint}, {@linkcode CheckpointStore.commitCheckpoint}):
   * sources whose resume point is not a number (a Cosmos change-feed continuation) need one.
   */
  readonly tokens?: boolean;
  /** With `tokens`: the committed position and its token, or `undefined` if none is recorded. */
  loadCheckpoint?(key: CheckpointKey): Promise<Checkpoint | undefined>;
  /**
   * With `tokens`: records the position and the token together, on the same terms as
   * {@linkcode CheckpointStore.commit} (unless a higher position is recorded; `fence` as there).
   * `commit` and `reset` record a position without a token.
   */
  commitCheckpoint?(
    key: CheckpointKey,
    checkpoint: Checkpoint,
    fence?: CheckpointFence,
  ): Promise<void>;
  /**
   * Marks a source's consumer group as running here until the returned function is called, so
   * that {@linkcode CheckpointStore.running} elsewhere sees it. Sources that commit to the store
   * hold it while they run.
   */
  hold?(scope: CheckpointScope): Promise<() => Promise<void>>;
  /**
   * {@linkcode CheckpointStore.reset}, refused with {@linkcode PipelineRunningError} while any
   * process holds `scope` (its commits would overwrite the change); checked and done in one
   * step, so that no pipeline starts in between.
   */
  resetUnlessRunning?(
    scope: CheckpointScope,
    key: CheckpointKey,
    position: Position | undefined,
  ): Promise<void>;
}

/**
 * A checkpoint with an opaque resume token, for sources whose resume point cannot be held as a
 * number without losing information (a Cosmos change-feed continuation names an LSN per
 * physical partition of the range, which splits change). `position` orders checkpoints (never
 * backwards, as for every checkpoint) and counts what was read; `token` is where the source
 * resumes. Stores with `tokens` keep both in one record.
 *
 * @example
 * ```ts
 * import type { Checkpoint } from "@impel/impel";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const store = memoryCheckpoints();
 * const key = { source: "cosmos:events", tranche: "0", group: "g" };
 * const checkpoint: Checkpoint = { position: 120n, token: '{"Continuation":[]}' };
 * await store.commitCheckpoint?.(key, checkpoint);
 * console.log((await store.loadCheckpoint?.(key))?.token); // {"Continuation":[]}
 * ```
 *
 * @category Checkpoints
 */
export interface Checkpoint {
  /** The position: orders checkpoints and says how far the tranche was read. */
  readonly position: Position;
  /** The source's opaque resume token at that position, if it has one. */
  readonly token?: string;
}

/** The longest token a checkpoint may carry, in characters. */
export const MAX_CHECKPOINT_TOKEN_LENGTH = 65_536;

/**
 * Checks a {@linkcode Checkpoint} at a store's public boundary: a valid position and, if given, a
 * non-empty token of at most {@linkcode MAX_CHECKPOINT_TOKEN_LENGTH} characters.
 *
 * @category Checkpoints
 */
export function checkCheckpoint(checkpoint: Checkpoint): Checkpoint {
  if (checkpoint === null || typeof checkpoint !== "object") {
    throw new ImpelError(
      "InvalidCheckpoint",
      `a checkpoint must be an object with a position, got ${String(checkpoint)}`,
    );
  }
  checkPosition(checkpoint.position);
  const token = checkpoint.token;
  if (
    token !== undefined &&
    (typeof token !== "string" || token.length === 0 || token.length > MAX_CHECKPOINT_TOKEN_LENGTH)
  ) {
    throw new ImpelError(
      "InvalidCheckpoint",
      `a checkpoint token must be a string of 1 to ${MAX_CHECKPOINT_TOKEN_LENGTH} characters, got ${
        typeof token === "string" ? `${token.length} characters` : typeof token
      }`,
    );
  }
  return checkpoint;
}

/**
 * A checkpoint reset refused because a pipeline of that source and group runs.
 *
 * @example
 * ```ts
 * import { PipelineRunningError } from "@impel/impel";
 * const e = new PipelineRunningError({ source: "messagedb", group: "printer" });
 * console.log(e.code, e.scope.group); // PipelineRunning printer
 * ```
 *
 * @category Checkpoints
 */
export class PipelineRunningError extends ImpelError {
  /** The running source and group. */
  readonly scope: CheckpointScope;
  /** Creates the error. */
  constructor(scope: CheckpointScope) {
    super(
      "PipelineRunning",
      `${scope.source}/${scope.group} is running (a process holds its checkpoints): stop it first`,
    );
    this.scope = scope;
  }
}

/**
 * A source and consumer group: what a running pipeline holds in its checkpoint store.
 *
 * @example
 * ```ts
 * import type { CheckpointScope } from "@impel/impel";
 * const scope: CheckpointScope = { source: "messagedb", group: "order-printer" };
 * ```
 *
 * @category Checkpoints
 */
export interface CheckpointScope {
  /** The checkpoint keys' `source`. */
  readonly source: string;
  /** The consumer group. */
  readonly group: string;
}

/**
 * The lease a commit is conditional on: a member commits a leased tranche's checkpoint only
 * while the lease it acquired (this generation) is still its own and unexpired, so that a
 * member that lost the lease (paused, cut off) cannot move the checkpoint after the next owner
 * has loaded it.
 *
 * @example
 * ```ts
 * import type { CheckpointFence } from "@impel/impel";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const leases = memoryLeases();
 * const checkpoints = memoryCheckpoints({ leases });
 * const lease = await leases.acquire("messagedb/reactor", "Order-0/4", "a", 10_000);
 * const fence: CheckpointFence = {
 *   scope: "messagedb/reactor", unit: "Order-0/4", owner: "a", generation: lease!.generation,
 * };
 * await checkpoints.commit({ source: "messagedb", tranche: "Order-0/4", group: "reactor" }, 7n, fence);
 * ```
 *
 * @category Checkpoints
 */
export interface CheckpointFence {
  /** The lease scope. */
  readonly scope: string;
  /** The leased unit. */
  readonly unit: string;
  /** The member committing. */
  readonly owner: string;
  /** The generation it acquired. */
  readonly generation: bigint;
}

/**
 * A fenced commit was refused: the committer's lease is no longer current (expired, released,
 * or taken by another member since). Nothing was recorded.
 *
 * @example
 * ```ts
 * import { StaleCommitError } from "@impel/impel";
 * const key = { source: "messagedb", tranche: "Order-0/4", group: "reactor" };
 * const fence = { scope: "messagedb/reactor", unit: "Order-0/4", owner: "a", generation: 3n };
 * const e = new StaleCommitError(key, 42n, fence);
 * console.log(e.code, e.fence.generation); // "StaleCommit" 3n
 * ```
 *
 * @category Checkpoints
 */
export class StaleCommitError extends ImpelError {
  /** The checkpoint that was not moved. */
  readonly key: CheckpointKey;
  /** The position refused. */
  readonly position: Position;
  /** The lease the commit was made under. */
  readonly fence: CheckpointFence;
  /** Creates the error. */
  constructor(key: CheckpointKey, position: Position, fence: CheckpointFence) {
    super(
      "StaleCommit",
      `commit of ${key.source}/${key.tranche}/${key.group} at ${position} refused: ${fence.owner} ` +
        `no longer holds lease ${fence.scope}/${fence.unit} generation ${fence.generation}`,
    );
    this.key = key;
    this.position = position;
    this.fence = fence;
  }
}

/**
 * Checks a commit's fence at a store's public boundary.
 *
 * @category Checkpoints
 */
export function checkFence(fence: CheckpointFence): CheckpointFence {
  for (const part of ["scope", "unit", "owner"] as const) {
    const value = fence?.[part];
    if (typeof value !== "string" || value.length === 0) {
      throw new InvalidArgumentError(`fence.${part}`, `must be a non-empty string`);
    }
  }
  if (typeof fence.generation !== "bigint" || fence.generation < 0n) {
    throw new InvalidArgumentError("fence.generation", "must be a non-negative bigint");
  }
  return fence;
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
