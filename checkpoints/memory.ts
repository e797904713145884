/**
 * An in-process checkpoint store, for tests and single-process runs that need no persistence.
 *
 * @module
 */
import type { Position } from "../core/batch.ts";
import {
  checkCheckpoint,
  checkCheckpointKey,
  checkFence,
  type Checkpoint,
  type CheckpointFence,
  type CheckpointKey,
  type CheckpointStore,
  checkPosition,
  StaleCommitError,
} from "../core/checkpoints.ts";
import { InvalidArgumentError } from "../core/errors.ts";

/**
 * Options of {@linkcode memoryCheckpoints}.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints, type MemoryCheckpointOptions } from "@impel/impel/checkpoints/memory";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const options: MemoryCheckpointOptions = { leases: memoryLeases() };
 * const checkpoints = memoryCheckpoints(options); // checkpoints.fenced === true
 * ```
 */
export interface MemoryCheckpointOptions {
  /**
   * Checks the fences of fenced commits: the memory lease store the members use (its
   * `location` becomes the store's `fenceLocation`).
   */
  readonly leases?: { holds(fence: CheckpointFence): boolean; readonly location?: string };
}

/**
 * Creates an in-memory {@linkcode CheckpointStore}; given `leases`, it is `fenced`: a commit
 * with a fence is recorded only while {@linkcode MemoryCheckpointOptions.leases} holds it.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const checkpoints = memoryCheckpoints();
 * await checkpoints.commit({ source: "memory", tranche: "0", group: "g" }, 42n);
 * ```
 */
export function memoryCheckpoints(options: MemoryCheckpointOptions = {}): CheckpointStore {
  const positions = new Map<string, { key: CheckpointKey; position: Position; token?: string }>();
  const id = (k: CheckpointKey) => JSON.stringify([k.source, k.tranche, k.group]);
  const leases = options.leases;
  if (leases !== undefined && typeof leases.holds !== "function") {
    throw new InvalidArgumentError("leases", "must have a holds(fence) method (memoryLeases())");
  }
  function commitCheckpoint(
    key: CheckpointKey,
    checkpoint: Checkpoint,
    fence?: CheckpointFence,
  ): Promise<void> {
    checkCheckpointKey(key);
    checkCheckpoint(checkpoint);
    const { position, token } = checkpoint;
    if (fence !== undefined) {
      checkFence(fence);
      if (leases === undefined) {
        throw new InvalidArgumentError("fence", "needs memoryCheckpoints({ leases })");
      }
      // A fence is the lease of the tranche committed: another unit's lease proves nothing.
      if (fence.unit !== key.tranche) {
        return Promise.reject(
          new InvalidArgumentError(
            "fence.unit",
            `must be the tranche committed (${key.tranche}), got ${fence.unit}`,
          ),
        );
      }
      if (!leases.holds(fence)) return Promise.reject(new StaleCommitError(key, position, fence));
    }
    const current = positions.get(id(key));
    if (current === undefined || current.position < position) {
      positions.set(id(key), {
        key: { ...key },
        position,
        ...(token === undefined ? {} : { token }),
      });
    }
    return Promise.resolve();
  }
  return {
    fenced: leases !== undefined,
    ...(typeof leases?.location === "string" ? { fenceLocation: leases.location } : {}),
    tokens: true,
    load(key) {
      checkCheckpointKey(key);
      return Promise.resolve(positions.get(id(key))?.position);
    },
    loadCheckpoint(key) {
      checkCheckpointKey(key);
      const kept = positions.get(id(key));
      return Promise.resolve(
        kept === undefined
          ? undefined
          : { position: kept.position, ...(kept.token === undefined ? {} : { token: kept.token }) },
      );
    },
    commit(key, position, fence) {
      return commitCheckpoint(key, { position }, fence);
    },
    commitCheckpoint,
    reset(key, position) {
      checkCheckpointKey(key);
      if (position === undefined) positions.delete(id(key));
      else positions.set(id(key), { key: { ...key }, position: checkPosition(position) });
      return Promise.resolve();
    },
    list(source, group) {
      const out = [];
      for (const { key, position } of positions.values()) {
        if (key.source === source && (group === undefined || key.group === group)) {
          out.push({ ...key, position });
        }
      }
      return Promise.resolve(out);
    },
  };
}
