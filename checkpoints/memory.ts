/**
 * An in-process checkpoint store, for tests and single-process runs that need no persistence.
 *
 * @module
 */
import type { Position } from "../core/batch.ts";
import {
  checkCheckpointKey,
  type CheckpointKey,
  type CheckpointStore,
  checkPosition,
} from "../core/checkpoints.ts";

/**
 * Creates an in-memory {@linkcode CheckpointStore}.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const checkpoints = memoryCheckpoints();
 * await checkpoints.commit({ source: "memory", tranche: "0", group: "g" }, 42n);
 * ```
 */
export function memoryCheckpoints(): CheckpointStore {
  const positions = new Map<string, { key: CheckpointKey; position: Position }>();
  const id = (k: CheckpointKey) => JSON.stringify([k.source, k.tranche, k.group]);
  return {
    load(key) {
      checkCheckpointKey(key);
      return Promise.resolve(positions.get(id(key))?.position);
    },
    commit(key, position) {
      checkCheckpointKey(key);
      checkPosition(position);
      const current = positions.get(id(key));
      if (current === undefined || current.position < position) {
        positions.set(id(key), { key: { ...key }, position });
      }
      return Promise.resolve();
    },
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
