/**
 * The in-memory event store and its source: the default backend for tests, examples and demos.
 *
 * The store keeps every stream and one global log of appends. Like the real stores it keeps data
 * and metadata as JSON text, so a read returns what MessageDB or DynamoDB would: fresh objects,
 * NaN as null, a Date as its ISO string, `undefined` fields gone; data or metadata that is not
 * JSON (a BigInt, a cycle) is refused at the append. The source reads the log from a
 * checkpoint as one tranche (`"all"`), in batches of up to `maxBatchSize`, and wakes as soon as a
 * commit lands.
 *
 * @module
 */
import type { Batch, BatchItem, ObservableSource, Position } from "../core/batch.ts";
import type { CheckpointKey, CheckpointStore } from "../core/checkpoints.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import {
  checkKeySearch,
  IDEMPOTENCY_KEY,
  type IdempotencyKeyFinder,
  type LastEventReader,
} from "../core/decider.ts";
import type { StreamEvent } from "../core/event.ts";
import { storedJson } from "../core/json.ts";
import {
  type AppendResult,
  type EventData,
  type EventStore,
  type ExpectedVersion,
  type ReadStreamOptions,
  WrongExpectedVersionError,
} from "../core/store.ts";
import { categoryOf, checkCategory, checkStreamName, type StreamName } from "../core/streamName.ts";

/**
 * One appended event with its stream, in global order.
 *
 * @example
 * ```ts
 * import { createMemoryStore, type LogEntry } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * await store.append("Invoice-7", [{ type: "Raised", data: {} }], 0);
 * const log: readonly LogEntry[] = store.readLog(0, store.head);
 * for (const { category, stream, event } of log) {
 *   console.log(category, stream, event.index, event.type);
 * } // Order Order-1 0 Placed, then Invoice Invoice-7 0 Raised
 * ```
 */
export interface LogEntry extends BatchItem {
  /** The stream's category, kept so that category filters cost no parsing. */
  readonly category: string;
}

/**
 * An in-process event store: streams with expected-version appends, plus a global log that
 * sources read and a subscription that fires on every commit.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: { total: 3 } }], 0);
 * store.head; // 1
 * ```
 */
export interface MemoryStore extends EventStore, LastEventReader, IdempotencyKeyFinder {
  /** Number of events in the global log. */
  readonly head: number;
  /** Entries of the global log from `from` (inclusive) to `to` (exclusive). */
  readLog(from: number, to: number): readonly LogEntry[];
  /** Calls `listener` after every commit; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void;
}

function checkEventData(stream: string, e: EventData, i: number) {
  if (e === null || typeof e !== "object" || typeof e.type !== "string" || e.type.length === 0) {
    throw new InvalidArgumentError(
      `events[${i}] of ${stream}`,
      `must be an object with a non-empty string type, got ${describe(e)}`,
    );
  }
}

/** `value` as JSON text, as the real stores keep it (`null` for nothing). */
function jsonOf(field: string, value: unknown): string {
  return storedJson(field, value ?? null) ?? "null";
}

/** A stored event whose data and metadata are parsed afresh from the JSON text kept. */
interface Kept {
  readonly event: Omit<StreamEvent, "data" | "meta">;
  readonly data: string;
  readonly meta: string;
}

// The size estimate every source uses (core/event.ts estimateSize), from the text already made.
function textSize(value: unknown, text: string): number {
  if (value === undefined || value === null) return 0;
  return typeof value === "string" ? value.length : text.length;
}

function thaw(kept: Kept): StreamEvent {
  return { ...kept.event, data: JSON.parse(kept.data), meta: JSON.parse(kept.meta) };
}

/** Checks an expected version at a store's public boundary. */
function checkExpectedVersion(expected: ExpectedVersion): ExpectedVersion {
  if (expected === "any") return expected;
  return checkInteger("expectedVersion", expected, 0);
}

/**
 * Creates an empty {@linkcode MemoryStore}.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import { WrongExpectedVersionError } from "@impel/impel";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0).catch((e) => {
 *   console.log(e instanceof WrongExpectedVersionError); // true
 * });
 * ```
 */
export function createMemoryStore(): MemoryStore {
  // Each event is parsed once for the global log (what sources hand to handlers) and again for
  // every readStream, so that no reader can change what another one reads.
  const streams = new Map<StreamName, Kept[]>();
  const log: LogEntry[] = [];
  const listeners = new Set<() => void>();
  return {
    get head() {
      return log.length;
    },
    readLog(from, to) {
      return log.slice(from, to);
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    // deno-lint-ignore require-await
    async readStream(stream: StreamName, options: ReadStreamOptions = {}): Promise<StreamEvent[]> {
      checkStreamName(stream);
      const from = checkInteger("fromIndex", options.fromIndex ?? 0, 0);
      const max = checkInteger("maxCount", options.maxCount ?? Number.MAX_SAFE_INTEGER, 0);
      return (streams.get(stream) ?? []).slice(from, from + max).map(thaw);
    },
    // deno-lint-ignore require-await
    async findIdempotencyKey(stream, key, options) {
      const { from, to } = checkKeySearch(stream, key, options);
      const kept = streams.get(stream) ?? [];
      // The metadata is kept as JSON.stringify's text, where the key appears as this: only
      // metadata that mentions it is parsed.
      const quoted = JSON.stringify(key);
      for (let i = from; i < Math.min(to, kept.length); i++) {
        if (!kept[i].meta.includes(quoted)) continue;
        const meta = JSON.parse(kept[i].meta);
        if (
          meta !== null && typeof meta === "object" && !Array.isArray(meta) &&
          meta[IDEMPOTENCY_KEY] === key
        ) return i;
      }
      return undefined;
    },
    // deno-lint-ignore require-await
    async readLastEvent(stream: StreamName, type?: string): Promise<StreamEvent | undefined> {
      checkStreamName(stream);
      const kept = streams.get(stream)?.findLast((k) =>
        type === undefined || k.event.type === type
      );
      return kept === undefined ? undefined : thaw(kept);
    },
    // deno-lint-ignore require-await
    async append(
      stream: StreamName,
      events: readonly EventData[],
      expectedVersion: ExpectedVersion,
    ): Promise<AppendResult> {
      const category = categoryOf(stream);
      if (!Array.isArray(events)) {
        throw new InvalidArgumentError("events", `must be an array, got ${describe(events)}`);
      }
      events.forEach((e, i) => checkEventData(stream, e, i));
      checkExpectedVersion(expectedVersion);
      let existing = streams.get(stream);
      const version = existing?.length ?? 0;
      if (expectedVersion !== "any" && expectedVersion !== version) {
        throw new WrongExpectedVersionError(stream, expectedVersion, version);
      }
      if (events.length === 0) return { nextIndex: version };
      // Serialise everything before keeping anything: an append lands whole or not at all.
      const texts = events.map((e, i) => [
        jsonOf(`events[${i}].data of ${stream}`, e.data),
        jsonOf(`events[${i}].meta of ${stream}`, e.meta),
      ]);
      if (existing === undefined) streams.set(stream, existing = []);
      const time = new Date();
      for (const [k, e] of events.entries()) {
        const [data, meta] = texts[k];
        const kept: Kept = {
          event: {
            index: existing.length,
            type: e.type,
            id: e.id ?? crypto.randomUUID(),
            time,
            correlationId: e.correlationId,
            causationId: e.causationId,
            size: textSize(e.data, data) + textSize(e.meta, meta),
          },
          data,
          meta,
        };
        existing.push(kept);
        log.push({ stream, event: thaw(kept), category });
      }
      for (const listener of listeners) listener();
      return { nextIndex: existing.length };
    },
  };
}

/**
 * Where a source starts when it has no checkpoint, or regardless of one.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource, type StartFrom } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const startFrom: StartFrom = "tail"; // skip the history, handle only what comes next
 * const seen: string[] = [];
 * const sink = streamsSink({ handler: (stream) => void seen.push(stream) });
 * const ac = new AbortController();
 * const running = run(memorySource({ store, startFrom }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * await store.append("Order-2", [{ type: "Placed", data: {} }], 0);
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * console.log(seen); // ["Order-2"]
 * ```
 */
export type StartFrom = "checkpoint" | "start" | "tail";

/**
 * Options of {@linkcode memorySource}.
 *
 * @example
 * ```ts
 * import {
 *   createMemoryStore,
 *   memorySource,
 *   type MemorySourceOptions,
 * } from "@impel/impel/sources/memory";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 *
 * const options: MemorySourceOptions = {
 *   store: createMemoryStore(),
 *   checkpoints: memoryCheckpoints(),
 *   group: "billing",
 *   name: "orders",
 *   categories: ["Order", "Refund"],
 *   maxBatchSize: 100,
 *   startFrom: "checkpoint",
 * };
 * const source = memorySource(options);
 * await source.cancel();
 * ```
 */
export interface MemorySourceOptions {
  /** The store to read. */
  readonly store: MemoryStore;
  /** Where to load and commit checkpoints (none: start per `startFrom`, commit nothing). */
  readonly checkpoints?: CheckpointStore;
  /** The consumer group for checkpoints (default `"default"`). */
  readonly group?: string;
  /** The source's name in checkpoint keys (default `"memory"`). */
  readonly name?: string;
  /** Only events of these categories (default: all). */
  readonly categories?: readonly string[];
  /** Most log entries per batch (default 1000). */
  readonly maxBatchSize?: number;
  /**
   * `"checkpoint"` (default): resume from the checkpoint, or the start if there is none;
   * `"start"`: from the beginning; `"tail"`: only what is appended from now on.
   */
  readonly startFrom?: StartFrom;
}

/**
 * The one tranche of the memory source: its batches' `tranche` and its checkpoints' key.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * import { createMemoryStore, MEMORY_TRANCHE, memorySource } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * const checkpoints = memoryCheckpoints();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const sink = streamsSink({ handler: () => {} });
 * const ac = new AbortController();
 * const running = run(memorySource({ store, checkpoints, group: "billing" }), sink, {
 *   signal: ac.signal,
 * });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * const key = { source: "memory", tranche: MEMORY_TRANCHE, group: "billing" };
 * console.log(await checkpoints.load(key)); // 1n
 * await checkpoints.reset(key, undefined); // the next run of "billing" starts over
 * ```
 */
export const MEMORY_TRANCHE = "all";

/**
 * A source over a {@linkcode MemoryStore}: batches of the global log from the checkpoint, then
 * each new commit as soon as it lands. Position = log index of the next entry.
 *
 * @example
 * ```ts
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const source = memorySource({ store: createMemoryStore(), checkpoints: memoryCheckpoints(), group: "g" });
 * await source.cancel();
 * ```
 */
export function memorySource(options: MemorySourceOptions): ObservableSource {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with a store");
  }
  const { store, checkpoints } = options;
  if (typeof store?.readLog !== "function" || typeof store.subscribe !== "function") {
    throw new InvalidArgumentError("store", "must be a MemoryStore (from createMemoryStore())");
  }
  const maxBatchSize = checkInteger("maxBatchSize", options.maxBatchSize ?? 1000, 1);
  const startFrom = options.startFrom ?? "checkpoint";
  if (!["checkpoint", "start", "tail"].includes(startFrom)) {
    throw new InvalidArgumentError(
      "startFrom",
      `must be "checkpoint", "start" or "tail", got ${describe(startFrom)}`,
    );
  }
  if (options.categories !== undefined && !Array.isArray(options.categories)) {
    throw new InvalidArgumentError(
      "categories",
      `must be an array of categories, got ${describe(options.categories)}`,
    );
  }
  const categories = options.categories
    ? new Set(options.categories.map(checkCategory))
    : undefined;
  const key: CheckpointKey = {
    source: options.name ?? "memory",
    tranche: MEMORY_TRANCHE,
    group: options.group ?? "default",
  };
  const commit = checkpoints ? (p: Position) => checkpoints.commit(key, p) : undefined;

  let position = 0;
  let toldTail = false;
  let wake: (() => void) | undefined;
  let cancelled = false;
  let unsubscribe: (() => void) | undefined;

  const stream = new ReadableStream<Batch>({
    async start() {
      if (startFrom === "tail") position = store.head;
      else if (startFrom === "checkpoint" && checkpoints) {
        const saved = await checkpoints.load(key);
        if (saved !== undefined) {
          // A checkpoint past the log belongs to another store (or a reset one): starting there
          // would silently skip what gets appended up to it.
          if (saved < 0n || saved > BigInt(store.head)) {
            throw new ImpelError(
              "InvalidCheckpoint",
              `checkpoint ${saved} of ${key.source}/${key.group} is beyond the log (${store.head} entries)`,
            );
          }
          position = Number(saved);
        }
      }
      // Subscribed only once started, so that a source whose start failed leaves no listener.
      unsubscribe = store.subscribe(() => {
        const w = wake;
        wake = undefined;
        w?.();
      });
    },
    async pull(controller) {
      while (!cancelled) {
        const head = store.head;
        if (position < head) {
          const to = Math.min(head, position + maxBatchSize);
          let items: readonly BatchItem[] = store.readLog(position, to);
          if (categories) items = items.filter((e) => categories.has((e as LogEntry).category));
          position = to;
          toldTail = to === head;
          controller.enqueue({
            tranche: MEMORY_TRANCHE,
            items,
            position: BigInt(to),
            isTail: toldTail,
            commit,
          });
          return;
        }
        if (!toldTail) {
          toldTail = true;
          controller.enqueue({
            tranche: MEMORY_TRANCHE,
            items: [],
            position: BigInt(position),
            isTail: true,
            commit,
          });
          return;
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
    cancel() {
      cancelled = true;
      unsubscribe?.();
      wake?.();
    },
  }, { highWaterMark: 1 });
  // Without a group given it reads as no group in particular: nothing of it is kept per group.
  return Object.assign(stream, { group: options.group, sourceName: key.source });
}
