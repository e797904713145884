/**
 * A checkpoint store in one local JSON file, for local runs of any source: each change is
 * written to a temporary file, fsynced and renamed over the store (the directory fsynced too), so that a crash leaves the
 * old checkpoints or the new ones, never half of a file. A commit never moves a checkpoint
 * backwards; only `reset` does. One process at a time (commits are serialised in-process).
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import type { Position } from "../core/batch.ts";
import {
  checkCheckpointKey,
  type CheckpointKey,
  type CheckpointStore,
  checkPosition,
} from "../core/checkpoints.ts";
import { ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { writeFileAtomic } from "../core/localfile.ts";

/**
 * The checkpoint file could not be read as one this store wrote.
 *
 * @example
 * ```ts
 * import { CorruptCheckpointFileError } from "@impel/impel/checkpoints/file";
 * const e = new CorruptCheckpointFileError("/tmp/c.json", "not JSON");
 * console.log(e.path); // "/tmp/c.json"
 * ```
 */
export class CorruptCheckpointFileError extends ImpelError {
  /** The file. */
  readonly path: string;
  /** Creates the error. */
  constructor(path: string, problem: string) {
    super("CorruptCheckpointFile", `checkpoint file ${path}: ${problem}`);
    this.path = path;
  }
}

interface Entry {
  source: string;
  tranche: string;
  group: string;
  position: string;
}

// Stores over one path in this process share one queue: two of them must not interleave a read
// and a replace, or one's commit is lost.
const queues = new Map<string, Promise<unknown>>();

/**
 * Creates a {@linkcode CheckpointStore} kept in the file `path` (created on the first commit).
 * It is not `fenced`: a commit with a fence is an {@linkcode InvalidArgumentError}.
 *
 * @example
 * ```ts
 * import { fileCheckpoints } from "@impel/impel/checkpoints/file";
 * const path = `${await Deno.makeTempDir()}/checkpoints.json`;
 * const checkpoints = fileCheckpoints(path);
 * const key = { source: "eventstream:words", tranche: "all", group: "printer" };
 * await checkpoints.commit(key, 42n);
 * await checkpoints.commit(key, 7n); // ignored: never backwards
 * console.log(await fileCheckpoints(path).load(key)); // 42n
 * ```
 */
export function fileCheckpoints(path: string): CheckpointStore {
  if (typeof path !== "string" || path.length === 0) {
    throw new InvalidArgumentError("path", "must be a non-empty file path");
  }
  const id = (k: CheckpointKey) => JSON.stringify([k.source, k.tranche, k.group]);
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = (queues.get(path) ?? Promise.resolve()).then(fn, fn);
    queues.set(path, next.catch(() => {}));
    return next;
  };

  const readAll = async (): Promise<Map<string, Entry>> => {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if ((error as { code?: string }).code === "ENOENT") return new Map();
      throw error;
    }
    let entries: unknown;
    try {
      entries = JSON.parse(text).checkpoints;
    } catch (error) {
      throw new CorruptCheckpointFileError(path, `not JSON (${error})`);
    }
    if (!Array.isArray(entries)) {
      throw new CorruptCheckpointFileError(path, "no checkpoints array");
    }
    const out = new Map<string, Entry>();
    for (const e of entries as Entry[]) {
      if (
        typeof e?.source !== "string" || typeof e.tranche !== "string" ||
        typeof e.group !== "string" || typeof e.position !== "string" ||
        !/^\d+$/.test(e.position)
      ) {
        throw new CorruptCheckpointFileError(path, `bad entry ${JSON.stringify(e)}`);
      }
      out.set(id(e), e);
    }
    return out;
  };

  const writeAll = (entries: Map<string, Entry>) =>
    writeFileAtomic(path, JSON.stringify({ checkpoints: [...entries.values()] }, null, 1));

  const set = (entries: Map<string, Entry>, key: CheckpointKey, position: Position) =>
    entries.set(id(key), {
      source: key.source,
      tranche: key.tranche,
      group: key.group,
      position: String(position),
    });

  return {
    fenced: false,
    load(key) {
      return serial(async () => {
        checkCheckpointKey(key);
        const e = (await readAll()).get(id(key));
        return e === undefined ? undefined : BigInt(e.position);
      });
    },
    commit(key, position, fence) {
      return serial(async () => {
        checkCheckpointKey(key);
        checkPosition(position);
        if (fence !== undefined) {
          throw new InvalidArgumentError("fence", "fileCheckpoints cannot check a lease fence");
        }
        const entries = await readAll();
        const current = entries.get(id(key));
        if (current !== undefined && BigInt(current.position) >= position) return;
        set(entries, key, position);
        await writeAll(entries);
      });
    },
    reset(key, position) {
      return serial(async () => {
        checkCheckpointKey(key);
        const entries = await readAll();
        if (position === undefined) entries.delete(id(key));
        else set(entries, key, checkPosition(position));
        await writeAll(entries);
      });
    },
    list(source, group) {
      return serial(async () => {
        const out = [];
        for (const e of (await readAll()).values()) {
          if (e.source === source && (group === undefined || e.group === group)) {
            out.push({
              source: e.source,
              tranche: e.tranche,
              group: e.group,
              position: BigInt(e.position),
            });
          }
        }
        return out;
      });
    },
  };
}
