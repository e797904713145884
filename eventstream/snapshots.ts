/**
 * Where the event stream service keeps snapshots of projection state: one text per projection
 * (keyed by the projection's name without its version), in memory or in files; the stream's own
 * storage offers one too (`storage.snapshots`: files beside the segments, blobs beside the
 * stream's blobs).
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { InvalidArgumentError } from "../core/errors.ts";
import { writeFileAtomic } from "../core/localfile.ts";

/**
 * A place for snapshots. `save` replaces the text of `key` whole (a reader never sees half of
 * one); `load` gives the last saved text, or `undefined`.
 *
 * @example
 * ```ts
 * import { memorySnapshots, type SnapshotStore } from "@impel/impel/eventstream";
 * const snapshots: SnapshotStore = memorySnapshots();
 * await snapshots.save("Words", "{}");
 * console.log(await snapshots.load("Words")); // "{}"
 * ```
 */
export interface SnapshotStore {
  /** The text last saved under `key`, or `undefined`. */
  load(key: string): Promise<string | undefined>;
  /** Replaces the text under `key`. */
  save(key: string, text: string): Promise<void>;
}

/**
 * Snapshots in memory (tests; a restart of the same process).
 *
 * @example
 * ```ts
 * import { memorySnapshots } from "@impel/impel/eventstream";
 * const snapshots = memorySnapshots();
 * console.log(await snapshots.load("Words")); // undefined
 * ```
 */
export function memorySnapshots(): SnapshotStore & { readonly texts: Map<string, string> } {
  const texts = new Map<string, string>();
  return {
    texts,
    load: (key) => Promise.resolve(texts.get(key)),
    save: (key, text) => {
      texts.set(key, text);
      return Promise.resolve();
    },
  };
}

const KEY = /^[A-Za-z0-9][A-Za-z0-9-]*$/;

/**
 * Checks a snapshot key (a projection's name without its version: letters, digits and `-`), so
 * that it is safe in a file or blob name; throws {@linkcode InvalidArgumentError} otherwise.
 *
 * @example
 * ```ts
 * import { checkSnapshotKey } from "@impel/impel/eventstream";
 * console.log(checkSnapshotKey("Words")); // Words
 * ```
 */
export function checkSnapshotKey(key: string): string {
  if (typeof key !== "string" || !KEY.test(key)) {
    throw new InvalidArgumentError("key", `must be letters, digits and -, got ${String(key)}`);
  }
  return key;
}

/**
 * Snapshots as files `<dir>/<key>.snapshot.json`, each replaced atomically (a temporary file,
 * fsynced, renamed over the old one), so that a crash leaves the old snapshot or the new one.
 * `fileStorage(dir).snapshots` keeps them beside the stream's segments.
 *
 * @example
 * ```ts
 * import { fileSnapshots } from "@impel/impel/eventstream";
 * const snapshots = fileSnapshots(await Deno.makeTempDir());
 * await snapshots.save("Words", '{"name":"Words-1"}');
 * console.log(await snapshots.load("Words")); // '{"name":"Words-1"}'
 * ```
 */
export function fileSnapshots(dir: string): SnapshotStore {
  if (typeof dir !== "string" || dir.length === 0) {
    throw new InvalidArgumentError("dir", "must be a non-empty path");
  }
  const pathOf = (key: string) => `${dir}/${checkSnapshotKey(key)}.snapshot.json`;
  return {
    async load(key) {
      try {
        return await readFile(pathOf(key), "utf8");
      } catch (error) {
        if ((error as { code?: string }).code === "ENOENT") return undefined;
        throw error;
      }
    },
    save: (key, text) => writeFileAtomic(pathOf(key), text),
  };
}
