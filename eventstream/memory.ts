/**
 * In-memory event stream storage for tests (Lokad's `Testing.Initialize` / `GetEvents`): the
 * same frames as the other backends, checksums verified on every read, nothing persisted.
 *
 * @module
 */
import { checkInteger, InvalidArgumentError } from "../core/errors.ts";
import { decodeFrames, DEFAULT_MAX_PAYLOAD, encodeFrames, type StoredEvent } from "./frame.ts";
import { AppendConflictError, type EventStorage, StorageClosedError } from "./storage.ts";
import { memorySnapshots, type SnapshotStore } from "./snapshots.ts";

/**
 * Options of {@linkcode memoryStorage}.
 *
 * @example
 * ```ts
 * import { memoryStorage, type MemoryStorageOptions } from "@impel/impel/eventstream";
 * const options: MemoryStorageOptions = { name: "words", events: [{ word: "a" }] };
 * console.log(await memoryStorage(options).last()); // 1
 * ```
 */
export interface MemoryStorageOptions {
  /** Named in errors (default `memory`). */
  readonly name?: string;
  /** The stream's initial events, as sequence numbers 1, 2, ... */
  readonly events?: readonly unknown[];
  /** The largest event payload in bytes (default 4 MiB). */
  readonly maxPayload?: number;
}

/**
 * Memory storage with its test helpers.
 *
 * @example
 * ```ts
 * import { memoryStorage, type MemoryStorage } from "@impel/impel/eventstream";
 * const storage: MemoryStorage = memoryStorage({ events: ["a"] });
 * await storage.append(1, ["b"]);
 * console.log(storage.events()); // ["a", "b"]
 * ```
 */
export interface MemoryStorage extends EventStorage {
  /** Every event of the stream, in order (decoded, checksums verified). */
  events(): unknown[];
  /** The stream's bytes: the frames of every append, concatenated (a backup's content). */
  bytes(): Uint8Array;
  /** Snapshots kept with the stream, in memory (`texts` holds them by key). */
  readonly snapshots: SnapshotStore & { readonly texts: Map<string, string> };
}

/**
 * Creates memory storage, empty or holding `options.events`.
 *
 * @example
 * ```ts
 * import { memoryStorage } from "@impel/impel/eventstream";
 * const storage = memoryStorage({ events: [{ word: "a" }, { word: "b" }] });
 * console.log((await storage.read(1)).map((e) => e.seq)); // [2]
 * ```
 */
export function memoryStorage(options: MemoryStorageOptions = {}): MemoryStorage {
  const name = options.name ?? "memory";
  const maxPayload = checkInteger("maxPayload", options.maxPayload ?? DEFAULT_MAX_PAYLOAD, 1);
  if (options.events !== undefined && !Array.isArray(options.events)) {
    throw new InvalidArgumentError("events", "must be an array of events");
  }
  // One chunk of frames per append, with the sequence number of its first event, so that a read
  // decodes only the appends it needs.
  const chunks: { first: number; bytes: Uint8Array }[] = [];
  let last = 0;
  let closed = false;
  const open = () => {
    if (closed) throw new StorageClosedError(name);
  };
  const push = (events: readonly unknown[]) => {
    const bytes = encodeFrames(last + 1, events, maxPayload);
    chunks.push({ first: last + 1, bytes });
    last += events.length;
  };
  if (options.events?.length) push(options.events);
  const chunkOf = (seq: number) => {
    let lo = 0, hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (chunks[mid].first <= seq) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  const read = (after: number, maxCount: number): StoredEvent[] => {
    const out: StoredEvent[] = [];
    if (after >= last) return out;
    for (let i = chunkOf(after + 1); i < chunks.length && out.length < maxCount; i++) {
      const { first, bytes } = chunks[i];
      const { events } = decodeFrames(bytes, { where: name, expectedSeq: first, maxPayload });
      for (const e of events) if (e.seq > after && out.length < maxCount) out.push(e);
    }
    return out;
  };
  return {
    name,
    read(after, maxCount = 1000) {
      try {
        open();
        checkInteger("after", after, 0);
        checkInteger("maxCount", maxCount, 1);
        return Promise.resolve(read(after, maxCount));
      } catch (error) {
        return Promise.reject(error);
      }
    },
    last() {
      try {
        open();
        return Promise.resolve(last);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    append(after, events) {
      try {
        open();
        checkInteger("after", after, 0);
        if (!Array.isArray(events)) throw new InvalidArgumentError("events", "must be an array");
        if (after !== last) throw new AppendConflictError(name, after, last);
        if (events.length > 0) push(events);
        return Promise.resolve(last);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    close() {
      closed = true;
      return Promise.resolve();
    },
    snapshots: memorySnapshots(),
    events() {
      return read(0, Infinity).map((e) => e.event);
    },
    bytes() {
      const out = new Uint8Array(chunks.reduce((n, c) => n + c.bytes.length, 0));
      let at = 0;
      for (const c of chunks) out.set(c.bytes, at), at += c.bytes.length;
      return out;
    },
  };
}
