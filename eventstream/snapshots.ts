/**
 * Where the event stream service keeps snapshots of projection state: one text per projection
 * (keyed by the projection's name without its version), in memory or in files.
 *
 * @module
 */
import { mkdir, open, readFile, rename } from "node:fs/promises";
import { InvalidArgumentError } from "../core/errors.ts";

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
 * Snapshots as files `<dir>/<key>.snapshot.json`, each written to a temporary file, fsynced and
 * renamed over the old one, so that a crash leaves the old snapshot or the new one.
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
  const pathOf = (key: string) => {
    if (typeof key !== "string" || !KEY.test(key)) {
      throw new InvalidArgumentError("key", `must be letters, digits and -, got ${String(key)}`);
    }
    return `${dir}/${key}.snapshot.json`;
  };
  return {
    async load(key) {
      try {
        return await readFile(pathOf(key), "utf8");
      } catch (error) {
        if ((error as { code?: string }).code === "ENOENT") return undefined;
        throw error;
      }
    },
    async save(key, text) {
      const path = pathOf(key);
      await mkdir(dir, { recursive: true });
      const tmp = `${path}.${crypto.randomUUID()}.tmp`;
      const fh = await open(tmp, "wx");
      try {
        await fh.writeFile(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    },
  };
}
