/**
 * The storage contract of the event stream: what the service, the source and the tests need
 * from a backend (memory, local files, append blobs), and the errors every backend raises.
 *
 * @module
 */
import { ImpelError } from "../core/errors.ts";
import type { StoredEvent } from "./frame.ts";
import type { SnapshotStore } from "./snapshots.ts";

/**
 * Append-only storage of one stream of events. Sequence numbers start at 1 and have no gaps;
 * `append` is conditional on the last sequence number (optimistic concurrency), so that an
 * event is only ever decided on a state that includes every event before it.
 *
 * @example
 * ```ts
 * import { memoryStorage, type EventStorage } from "@impel/impel/eventstream";
 * const storage: EventStorage = memoryStorage();
 * console.log(await storage.append(0, [{ word: "a" }])); // 1
 * console.log(await storage.read(0)); // [{ seq: 1, event: { word: "a" } }]
 * ```
 */
export interface EventStorage {
  /** Named in logs and errors, and the source's checkpoint key by default. */
  readonly name: string;
  /**
   * The events after sequence number `after` (0 for all), at most `maxCount` (default 1000),
   * in order: those this storage knows of (its own appends, what it saw at the last `last()`),
   * looking for more first when it knows of none after `after`. So a read can end short of what
   * another writer appended meanwhile; `last()` then a read sees it. Every frame's checksum is
   * verified: a corrupt one rejects with `CorruptFrameError`, never yields a misread event.
   */
  read(after: number, maxCount?: number): Promise<StoredEvent[]>;
  /** The sequence number of the last event now (0 when empty), as other writers left it. */
  last(): Promise<number>;
  /**
   * Appends `events` (whole or not at all) as sequence numbers `after + 1`, ...; rejects with
   * {@linkcode AppendConflictError} when the stream's last sequence number is not `after`.
   * Resolves with the new last sequence number once the events are durable as the backend
   * promises. An empty `events` appends nothing and resolves with `after` if it is current.
   */
  append(after: number, events: readonly unknown[]): Promise<number>;
  /** Releases what the storage holds (file handles, the lock). Later calls reject. */
  close(): Promise<void>;
  /**
   * A place for the service's snapshots in the stream's own storage (files beside the segments,
   * block blobs beside the append blobs, memory), used with `eventStream({ snapshots:
   * "storage" })`. Absent when the backend has none.
   */
  readonly snapshots?: SnapshotStore;
}

/**
 * An append was refused because the stream moved on: its last sequence number is not the one
 * the append was decided on. `actual` is the last sequence number when the backend knows it.
 *
 * @example
 * ```ts
 * import { AppendConflictError, memoryStorage } from "@impel/impel/eventstream";
 * const storage = memoryStorage({ events: ["a"] });
 * await storage.append(0, ["b"]).catch((e) => {
 *   if (e instanceof AppendConflictError) console.log(e.expected, e.actual); // 0 1
 * });
 * ```
 */
export class AppendConflictError extends ImpelError {
  /** The last sequence number the append expected. */
  readonly expected: number;
  /** The last sequence number found, if known. */
  readonly actual: number | undefined;
  /** Creates the error for `storage`. */
  constructor(storage: string, expected: number, actual: number | undefined) {
    super(
      "AppendConflict",
      `append to ${storage} after ${expected} refused: the stream ` +
        (actual === undefined ? "has moved on" : `is at ${actual}`),
    );
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * A call on storage that was closed.
 *
 * @example
 * ```ts
 * import { memoryStorage, StorageClosedError } from "@impel/impel/eventstream";
 * const storage = memoryStorage();
 * await storage.close();
 * await storage.read(0).catch((e) => console.log(e instanceof StorageClosedError)); // true
 * ```
 */
export class StorageClosedError extends ImpelError {
  /** Creates the error for `storage`. */
  constructor(storage: string) {
    super("StorageClosed", `${storage} is closed`);
  }
}
