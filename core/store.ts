/**
 * The event store contract shared by the memory, MessageDB and DynamoDB stores, used by the
 * decider and by store-writing sinks.
 *
 * @module
 */
import type { StreamEvent } from "./event.ts";
import { ImpelError } from "./errors.ts";
import type { StreamName } from "./streamName.ts";

/**
 * An event to append: what the application supplies; the store assigns index and time.
 *
 * @example
 * ```ts
 * import type { EventData } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const placed: EventData<{ total: number }> = {
 *   type: "Placed",
 *   data: { total: 3 },
 *   meta: { user: "ann" },
 *   correlationId: "req-17",
 * };
 * await createMemoryStore().append("Order-1", [placed], 0);
 * ```
 *
 * @category Write side
 */
export interface EventData<Data = unknown, Meta = unknown> {
  /** The event type. */
  readonly type: string;
  /** The event body. */
  readonly data: Data;
  /** Metadata, if any. */
  readonly meta?: Meta;
  /** A unique id; the store generates a UUID if omitted. */
  readonly id?: string;
  /** Correlation id to record. */
  readonly correlationId?: string;
  /** Causation id to record. */
  readonly causationId?: string;
}

/**
 * The version a writer expects the stream to be at: the number of events it holds (so `0` means
 * "empty or absent"), or `"any"` to append unconditionally.
 *
 * @example
 * ```ts
 * import type { ExpectedVersion } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const onlyIfNew: ExpectedVersion = 0;
 * await store.append("Order-1", [{ type: "Placed", data: {} }], onlyIfNew);
 * const whatever: ExpectedVersion = "any";
 * await store.append("Order-1", [{ type: "Noted", data: {} }], whatever);
 * ```
 *
 * @category Write side
 */
export type ExpectedVersion = number | "any";

/**
 * What an append reports: the stream's version (event count) after the write.
 *
 * @example
 * ```ts
 * import type { AppendResult } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const result: AppendResult = await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * console.log(result.nextIndex); // 1
 * // The next write expects the version this one left.
 * await store.append("Order-1", [{ type: "Paid", data: {} }], result.nextIndex);
 * ```
 *
 * @category Write side
 */
export interface AppendResult {
  /** The index the next event of the stream will get. */
  readonly nextIndex: number;
}

/**
 * An append found the stream at a different version than expected.
 *
 * @example
 * ```ts
 * import { WrongExpectedVersionError } from "@impel/impel";
 * const e = new WrongExpectedVersionError("Order-1", 0, 3);
 * console.log(e.actual); // 3
 * ```
 *
 * @category Write side
 */
export class WrongExpectedVersionError extends ImpelError {
  /** The stream written to. */
  readonly stream: StreamName;
  /** The version the writer expected. */
  readonly expected: number;
  /** The version found, if the store reports it. */
  readonly actual: number | undefined;
  /** Creates the error; `actual` is the stream's version when known. */
  constructor(stream: StreamName, expected: number, actual: number | undefined) {
    super(
      "WrongExpectedVersion",
      `append to ${stream} expected version ${expected} but found ${
        actual ?? "a different version"
      }`,
    );
    this.stream = stream;
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * Reading and appending to single streams.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: { total: 3 } }], 0);
 * const events = await store.readStream("Order-1"); // one event at index 0
 * ```
 *
 * @category Write side
 */
export interface EventStore {
  /** Reads events of `stream` from `fromIndex` (default 0), at most `maxCount` of them. */
  readStream(stream: StreamName, options?: ReadStreamOptions): Promise<StreamEvent[]>;
  /**
   * Appends `events` if the stream is at `expectedVersion`, else rejects with
   * {@linkcode WrongExpectedVersionError}.
   */
  append(
    stream: StreamName,
    events: readonly EventData[],
    expectedVersion: ExpectedVersion,
  ): Promise<AppendResult>;
}

/**
 * Options of {@linkcode EventStore.readStream}.
 *
 * @example
 * ```ts
 * import type { ReadStreamOptions } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const events = ["Placed", "Paid", "Packed", "Shipped"].map((type) => ({ type, data: {} }));
 * await store.append("Order-1", events, 0);
 * const options: ReadStreamOptions = { fromIndex: 1, maxCount: 2 };
 * const read = await store.readStream("Order-1", options);
 * console.log(read.map((e) => e.type)); // ["Paid", "Packed"]
 * ```
 *
 * @category Write side
 */
export interface ReadStreamOptions {
  /** The first index to read (default 0). */
  readonly fromIndex?: number;
  /** The most events to return (default: all). */
  readonly maxCount?: number;
}
