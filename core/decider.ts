/**
 * The write side: a decider loads a stream's state by folding its events, runs a decision that
 * yields new events, and appends them with the version it read, re-deciding on conflict. It
 * works over any {@linkcode EventStore} (memory, MessageDB, DynamoDB).
 *
 * - **Consistency.** Every append names the version the decision was made on; if another writer
 *   got there first, the decider waits a jittered backoff (`retry`), reads the events it missed
 *   (from the version it knows, not from the start), folds them, and decides again, up to
 *   `maxAttempts` times, after which it rejects with {@linkcode MaxAttemptsExceededError}.
 *   Within a process, transacts on one stream of one store object take turns, so they do not
 *   conflict with each other. A turn is held at most `maxTurnMs` (1 s): a `decide` that
 *   transacts on its own stream, or on a stream whose transact waits for this one, delays the
 *   next transact by that much and then both go ahead on optimistic concurrency, never waiting
 *   forever.
 * - **What is folded is what is read.** Decided events go through the codec's
 *   {@linkcode Codec.roundTrip}: an event no reader could decode is refused with
 *   {@linkcode EventEncodeError} before anything is appended, and the state kept (and cached) is
 *   folded from the events as readers will decode them, so it is the state every other reader
 *   folds.
 * - **Cache.** With a {@linkcode StateCache}, folded states are kept per stream with their
 *   version, so a load reads only the events written since (or nothing, with
 *   `load: "allowStale"`). Deciders share an entry only when built over the same store object
 *   from the same codec, fold, initial state, snapshot rule (by reference) and idempotency
 *   window: the decider's identity. A stream keeps at most `maxPerStream` (4) entries, the
 *   least recently used going first, and the cache at most `maxEntries` in all.
 * - **Stale loads.** With `load: "allowStale"` a decision that appends events is still checked
 *   by the expected version; a decision that appends nothing is not: its result may rest on a
 *   stale state unless the transact passes `requireFresh: true`, which reads what was missed
 *   and decides again before returning such a result.
 * - **Idempotency.** A transact with an `idempotencyKey` records the key in the metadata of its
 *   first appended event; a later transact with the same key on the same stream (a caller's
 *   retry after a crash or a lost reply) finds it among the stream's recent keys and appends
 *   nothing (`duplicate: true`). The decider remembers the last `idempotencyWindow` keys per
 *   stream (snapshots carry them), so a retry must come within that many keyed appends. A
 *   snapshot also records its window, and a decider that loads it keeps the larger of its own
 *   and that one, so deciders with a smaller window never trim the keys a larger one needs
 *   (once a snapshot with the larger window exists). A transact that may repeat one from longer
 *   ago (`mayRepeat: true`, as a workflow's re-send after a crash passes, whatever the traffic of
 *   other senders in between) searches the whole stream for its key when older keys were
 *   dropped (the recent keys are full, or came full from a snapshot with a smaller window): in
 *   one query where the store can find a key itself ({@linkcode IdempotencyKeyFinder}),
 *   otherwise by reading the stream page by page.
 * - **Rolling snapshots.** With `snapshot`, an append that leaves `every` or more events after
 *   the latest snapshot also appends a snapshot event (the folded state, as an event of the
 *   stream's own union) in the same atomic write. A store that can find the last event of a
 *   type ({@linkcode LastEventReader}) lets a cold load start at the snapshot instead of reading
 *   the whole stream; otherwise the stream is read in full and folded from its last snapshot.
 *
 * States handed to `render` and `decide` may be shared with the cache: treat them as immutable.
 *
 * @module
 */
import type { Codec, EncodeContext, TypedEvent } from "./codec.ts";
import { checkInteger, checkNumber, describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import type { StreamEvent } from "./event.ts";
import { backoff, type RetryOptions } from "./failure.ts";
import { type EventData, type EventStore, WrongExpectedVersionError } from "./store.ts";
import { checkStreamName, type StreamName } from "./streamName.ts";
import { sleep } from "./tranches.ts";

/**
 * The metadata key under which a keyed transact records its idempotency key (on its first
 * appended event).
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, IDEMPOTENCY_KEY } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * type Event = { type: "Charged"; data: { amount: number } };
 * const store = createMemoryStore();
 * const decider = createDecider<Event, number>({
 *   store,
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 * });
 * await decider.transact("Account-1", () => [{ type: "Charged", data: { amount: 5 } }], {
 *   idempotencyKey: "cmd-1",
 * });
 * const [event] = await store.readStream("Account-1");
 * console.log((event.meta as Record<string, unknown>)[IDEMPOTENCY_KEY]); // "cmd-1"
 * ```
 *
 * @category Write side
 */
export const IDEMPOTENCY_KEY = "idempotencyKey";

// The metadata keys of a snapshot event listing the stream's recent idempotency keys, and how
// many of them the stream's deciders keep (the largest window that wrote a snapshot).
const IDEMPOTENCY_KEYS = "idempotencyKeys";
const IDEMPOTENCY_WINDOW = "idempotencyWindow";
// Events read per page when a transact that may repeat searches its stream for its key.
const SEARCH_PAGE = 1_000;

/**
 * A store capability used by rolling snapshots: the last event of a stream, optionally only
 * among events of one type. Stores that have it let a cold load skip everything before the
 * latest snapshot.
 *
 * @example
 * ```ts
 * import type { LastEventReader } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const reader: LastEventReader = {
 *   async readLastEvent(stream, type) {
 *     const events = await store.readStream(stream);
 *     return events.findLast((e) => type === undefined || e.type === type);
 *   },
 * };
 * ```
 *
 * @category Write side
 */
export interface LastEventReader {
  /** The last event of `stream` (of type `type`, if given), or `undefined` if there is none. */
  readLastEvent(stream: StreamName, type?: string): Promise<StreamEvent | undefined>;
}

/**
 * A store capability that serves a cold load with snapshots in one read: the events from the
 * last event of `type` to the end of the stream, or the whole stream if it has none. Preferred
 * over {@linkcode LastEventReader} where a store has both (DynamoDB reads backwards from the end).
 *
 * @example
 * ```ts
 * import type { SnapshotReader } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const reader: SnapshotReader = {
 *   async readFromLast(stream, type) {
 *     const events = await store.readStream(stream);
 *     return events.slice(Math.max(0, events.findLastIndex((e) => e.type === type)));
 *   },
 * };
 * ```
 *
 * @category Write side
 */
export interface SnapshotReader {
  /** The events of `stream` from its last event of type `type` on (all of them if none). */
  readFromLast(stream: StreamName, type: string): Promise<StreamEvent[]>;
}

/**
 * Options of {@linkcode IdempotencyKeyFinder.findIdempotencyKey}: the range of indexes searched,
 * `[fromIndex, toIndex)`.
 *
 * @example
 * ```ts
 * import type { FindIdempotencyKeyOptions } from "@impel/impel";
 * // The events a decider at version 250 has not searched yet, if it searched up to 200.
 * const range: FindIdempotencyKeyOptions = { fromIndex: 200, toIndex: 250 };
 * ```
 *
 * @category Write side
 */
export interface FindIdempotencyKeyOptions {
  /** The first index searched (default 0). */
  readonly fromIndex?: number;
  /** The index the search stops before (default: the end of the stream). */
  readonly toIndex?: number;
}

/**
 * A store capability used by a transact that may repeat (`mayRepeat`) when the stream's recent
 * keys were trimmed: the index of the first event of `stream` in `[fromIndex, toIndex)` whose
 * metadata records idempotency key `key` (a string under {@linkcode IDEMPOTENCY_KEY}), or
 * `undefined` if none does. The store searches itself (MessageDB: one SQL query), so a busy
 * target stream is not read into the process on every possible re-send; a store without it is
 * searched page by page through `readStream`. Bad arguments reject with
 * {@linkcode InvalidArgumentError}.
 *
 * @example
 * ```ts
 * import { IDEMPOTENCY_KEY, type IdempotencyKeyFinder } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * await store.append("Counter-1", [
 *   { type: "Incremented", data: {}, meta: { [IDEMPOTENCY_KEY]: "cmd-1" } },
 *   { type: "Incremented", data: {}, meta: { [IDEMPOTENCY_KEY]: "cmd-2" } },
 * ], 0);
 * const finder: IdempotencyKeyFinder = store;
 * console.log(await finder.findIdempotencyKey("Counter-1", "cmd-2")); // 1
 * console.log(await finder.findIdempotencyKey("Counter-1", "cmd-2", { toIndex: 1 })); // undefined
 * ```
 *
 * @category Write side
 */
export interface IdempotencyKeyFinder {
  /** The index of the first event in the range recording `key`, or `undefined`. */
  findIdempotencyKey(
    stream: StreamName,
    key: string,
    options?: FindIdempotencyKeyOptions,
  ): Promise<number | undefined>;
}

/**
 * Checks the arguments of {@linkcode IdempotencyKeyFinder.findIdempotencyKey} at a store's
 * boundary: a valid stream name, a non-empty string key, integer bounds of at least 0. Returns
 * the range, `to` being `Infinity` when open; throws {@linkcode InvalidArgumentError} naming
 * what was wrong.
 *
 * @example
 * ```ts
 * import { checkKeySearch } from "@impel/impel";
 * console.log(checkKeySearch("Counter-1", "cmd-1", { fromIndex: 5 })); // { from: 5, to: Infinity }
 * try {
 *   checkKeySearch("Counter-1", "", {});
 * } catch (e) {
 *   console.log((e as Error).message); // names idempotencyKey
 * }
 * ```
 *
 * @category Write side
 */
export function checkKeySearch(
  stream: StreamName,
  key: string,
  options: FindIdempotencyKeyOptions | undefined,
): { from: number; to: number } {
  checkStreamName(stream);
  if (typeof key !== "string" || key.length === 0) {
    throw new InvalidArgumentError(
      "idempotencyKey",
      `must be a non-empty string, got ${describe(key)}`,
    );
  }
  if (options !== undefined && (options === null || typeof options !== "object")) {
    throw new InvalidArgumentError("options", `must be an object, got ${describe(options)}`);
  }
  const from = checkInteger("fromIndex", options?.fromIndex ?? 0, 0);
  const to = options?.toIndex === undefined
    ? Infinity
    : checkInteger("toIndex", options.toIndex, 0);
  return { from, to };
}

/**
 * A folded state with the version (event count) it reflects.
 *
 * @example
 * ```ts
 * import { type CachedState, createCodec, createDecider, createStateCache } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const cache = createStateCache();
 * const decider = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 *   cache,
 * });
 * await decider.transact("Account-1", () => [{ type: "Charged", data: { amount: 5 } }]);
 * await decider.transact("Account-1", () => [{ type: "Charged", data: { amount: 5 } }]);
 * const entry: CachedState | undefined = cache.entries("Account-1")[0];
 * console.log(entry?.version, entry?.state); // 2 10
 * ```
 *
 * @category Write side
 */
export interface CachedState {
  /** The stream's event count when the state was folded. */
  readonly version: number;
  /** The folded state. */
  readonly state: unknown;
  /** Events after the latest snapshot (or since the start) that the state includes. */
  readonly sinceSnapshot: number;
  /** The stream's recent idempotency keys, oldest first. */
  readonly keys: readonly string[];
  /**
   * How many idempotency keys are kept: the decider's `idempotencyWindow`, or the larger window
   * a snapshot of the stream was written with (absent: the decider's).
   */
  readonly window?: number;
  /**
   * Keys older than `keys` were dropped (by the window, or by the smaller window of the snapshot
   * they came from), so a `mayRepeat` transact searches the stream (absent: when `keys` is full).
   */
  readonly trimmed?: boolean;
  /**
   * The identity of the deciders that produced `state` (one per combination of store object,
   * codec, fold, initial state, snapshot rule and idempotency window), so that deciders that
   * would fold differently, or read another store, never share.
   */
  readonly owner: object;
}

/**
 * An in-process cache of folded states by stream name and decider identity, shared by any
 * number of deciders. Deciders built over the same store object from the same codec, fold,
 * initial state, snapshot rule and idempotency window share entries; others keep to their own.
 *
 * @example
 * ```ts
 * import { createStateCache } from "@impel/impel";
 * const cache = createStateCache({ maxEntries: 1000 });
 * console.log(cache.size); // 0
 * ```
 *
 * @category Write side
 */
export interface StateCache {
  /** The entry for `stream` made by deciders of identity `owner` (marks the stream recently used). */
  get(stream: StreamName, owner: object): CachedState | undefined;
  /** Stores `entry` unless the cache holds a newer version from the same owner. */
  set(stream: StreamName, entry: CachedState): void;
  /** Every owner's entry for `stream`. */
  entries(stream: StreamName): readonly CachedState[];
  /** Forgets `stream` (for every owner). */
  delete(stream: StreamName): void;
  /** Streams held. */
  readonly size: number;
  /** Entries held, over all streams and owners (at most `maxEntries`). */
  readonly entryCount: number;
}

/**
 * Options of {@linkcode createStateCache}.
 *
 * @example
 * ```ts
 * import { createStateCache, type StateCacheOptions } from "@impel/impel";
 * const options: StateCacheOptions = { maxEntries: 50_000, maxPerStream: 2 };
 * const cache = createStateCache(options);
 * ```
 *
 * @category Write side
 */
export interface StateCacheOptions {
  /**
   * Most entries kept over all streams (a stream holds one per decider identity that used it);
   * the least recently used streams go first (default 10 000).
   */
  readonly maxEntries?: number;
  /**
   * Most entries kept for one stream (default 4): beyond it, the entry used least recently is
   * dropped, so deciders built per call with a new identity each time cannot grow a stream's
   * list without bound.
   */
  readonly maxPerStream?: number;
}

/**
 * Creates a least-recently-used {@linkcode StateCache}.
 *
 * @example
 * ```ts
 * import { createDecider, createStateCache } from "@impel/impel";
 * const cache = createStateCache({ maxEntries: 50_000 });
 * // createDecider({ ..., cache })
 * ```
 *
 * @category Write side
 */
export function createStateCache(options: StateCacheOptions = {}): StateCache {
  const maxEntries = checkInteger("maxEntries", options.maxEntries ?? 10_000, 1);
  const maxPerStream = checkInteger("maxPerStream", options.maxPerStream ?? 4, 1);
  // Per stream, one entry per decider identity, least recently used first: a stream rarely has
  // more than one or two.
  const streams = new Map<StreamName, CachedState[]>();
  let count = 0;
  const touch = (stream: StreamName): CachedState[] | undefined => {
    const held = streams.get(stream);
    if (held !== undefined) {
      streams.delete(stream);
      streams.set(stream, held);
    }
    return held;
  };
  const evict = (keep: StreamName) => {
    for (const [stream, held] of streams) {
      if (count <= maxEntries) return;
      if (stream === keep) continue;
      streams.delete(stream);
      count -= held.length;
    }
    // Only `keep` is left: trim its oldest entries.
    const held = streams.get(keep);
    while (count > maxEntries && held !== undefined && held.length > 1) {
      held.shift();
      count--;
    }
  };
  return {
    get(stream, owner) {
      const held = touch(stream);
      const k = held?.findIndex((e) => e.owner === owner) ?? -1;
      if (k < 0) return undefined;
      const [entry] = held!.splice(k, 1);
      held!.push(entry);
      return entry;
    },
    set(stream, entry) {
      const held = touch(stream);
      if (held === undefined) {
        streams.set(stream, [entry]);
        count++;
      } else {
        const k = held.findIndex((e) => e.owner === entry.owner);
        if (k >= 0) {
          const [known] = held.splice(k, 1);
          held.push(known.version <= entry.version ? entry : known);
        } else {
          held.push(entry);
          count++;
          if (held.length > maxPerStream) {
            held.shift();
            count--;
          }
        }
      }
      if (count > maxEntries) evict(stream);
    },
    entries(stream) {
      return streams.get(stream) ?? [];
    },
    delete(stream) {
      count -= streams.get(stream)?.length ?? 0;
      streams.delete(stream);
    },
    get size() {
      return streams.size;
    },
    get entryCount() {
      return count;
    },
  };
}

/**
 * Rolling snapshots: a state event written into the stream every so often.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, type SnapshotOptions } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event =
 *   | { type: "Charged"; data: { amount: number } }
 *   | { type: "Totalled"; data: { total: number } };
 *
 * const snapshot: SnapshotOptions<Event, number> = {
 *   isOrigin: (e) => e.type === "Totalled",
 *   toSnapshot: (total) => ({ type: "Totalled", data: { total } }),
 *   every: 2,
 * };
 * const store = createMemoryStore();
 * const decider = createDecider<Event, number>({
 *   store,
 *   codec: createCodec<Event>({ Charged: {}, Totalled: {} }),
 *   initial: 0,
 *   fold: (total, events) =>
 *     events.reduce((t, e) => e.type === "Totalled" ? e.data.total : t + e.data.amount, total),
 *   snapshot,
 * });
 * const charge = { type: "Charged", data: { amount: 5 } } as const;
 * await decider.transact("Account-1", () => [charge, charge]);
 * const written = await store.readStream("Account-1");
 * console.log(written.map((e) => e.type)); // ["Charged", "Charged", "Totalled"]
 * ```
 *
 * @category Write side
 */
export interface SnapshotOptions<E extends TypedEvent, S> {
  /** Whether `event` is a snapshot (folding it must replace the state entirely). */
  isOrigin(event: E): boolean;
  /**
   * The snapshot event for `state`. Its stored type is what a cold load looks for: the decider
   * learns it once, at creation, by encoding the snapshot of the initial state.
   */
  toSnapshot(state: S): E;
  /** Write a snapshot when an append leaves at least this many events after the last one. */
  readonly every: number;
}

/**
 * Options of {@linkcode createDecider}.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, createStateCache, type DeciderOptions } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const options: DeciderOptions<Event, number> = {
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 *   maxAttempts: 5,
 *   retry: { initialDelayMs: 20, maxDelayMs: 1_000, jitter: 1 },
 *   cache: createStateCache(),
 *   maxTurnMs: 500,
 * };
 * const decider = createDecider(options);
 * ```
 *
 * @category Write side
 */
export interface DeciderOptions<E extends TypedEvent, S> {
  /** Where the streams live. */
  readonly store: EventStore;
  /** Typed events ↔ stored events. */
  readonly codec: Codec<E>;
  /** The state of an empty stream. */
  readonly initial: S;
  /** Applies events to a state, returning the new state (without mutating the old one). */
  readonly fold: (state: S, events: readonly E[]) => S;
  /** Decisions tried per transact before {@linkcode MaxAttemptsExceededError} (default 3). */
  readonly maxAttempts?: number;
  /**
   * The wait after a conflict before reading what was missed and deciding again (default
   * 50 ms doubling to at most 1 s, jitter 1: each wait is spread over 0.5–1.5 times the delay,
   * so contending writers fall out of step; with 8 writers on one MessageDB stream this cut
   * failed transacts from about a third to about a tenth). `{ initialDelayMs: 0 }` re-decides
   * at once. A default gives way to the other bound: `{ maxDelayMs: 20 }` starts at 20 ms,
   * `{ initialDelayMs: 2_000 }` stays at 2 s.
   */
  readonly retry?: RetryOptions;
  /** Keep folded states in memory between calls. */
  readonly cache?: StateCache;
  /** Write and use rolling snapshots. */
  readonly snapshot?: SnapshotOptions<E, S>;
  /**
   * Idempotency keys remembered per stream (default 100): a keyed retry must come within them.
   * A snapshot records the window it was written with and a decider loading it keeps the larger
   * of the two, so a small-window decider never trims what a larger-window one needs; deciders
   * with different windows keep separate cache entries.
   */
  readonly idempotencyWindow?: number;
  /**
   * How long a transact keeps its stream's in-process turn (default 1 000 ms; 0: no turns).
   * Transacts on one stream of one store object take turns so that they do not conflict with
   * each other; past this the next one starts anyway, relying on the expected version, so a
   * `decide` that transacts on its own stream, or two that transact on each other's, delay each
   * other by at most this much instead of waiting forever.
   */
  readonly maxTurnMs?: number;
}

/**
 * How much a load may rely on the cache: `"requireLoad"` (default) reads the events written
 * since the cached version; `"allowStale"` uses a cached state as it is. A transact that then
 * appends events still detects and resolves a stale state through the expected version; one
 * whose decision appends nothing returns a result that nothing checked, unless it passes
 * `requireFresh: true`.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, createStateCache, type LoadOption } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const decider = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 *   cache: createStateCache(),
 * });
 * await decider.transact("Account-1", () => [{ type: "Charged", data: { amount: 5 } }]);
 * // A dashboard can live with a slightly old total and save the read.
 * const load: LoadOption = "allowStale";
 * await decider.query("Account-1", (total) => total, { load }); // 5, from the cache
 * ```
 *
 * @category Write side
 */
export type LoadOption = "requireLoad" | "allowStale";

/**
 * What `render` and `decide` are told besides the state.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, type DecideContext } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const decider = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 * });
 * await decider.transact("Account-1", (total, context: DecideContext) => {
 *   console.log(context.stream, context.version, context.attempt); // "Account-1" 0 1
 *   return total < 100 ? [{ type: "Charged", data: { amount: 5 } }] : [];
 * });
 * ```
 *
 * @category Write side
 */
export interface DecideContext {
  /** The stream. */
  readonly stream: StreamName;
  /** The stream's version (event count) the state reflects. */
  readonly version: number;
  /** 1 for the first decision, higher after conflicts. */
  readonly attempt: number;
}

/**
 * What a decision yields: the events to append, or the events with a result to return to the
 * caller. An empty list appends nothing.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, type Decision } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const decider = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 * });
 * const charge = (amount: number) => (total: number): Decision<Event, boolean> =>
 *   total + amount > 100
 *     ? { events: [], result: false }
 *     : { events: [{ type: "Charged", data: { amount } }], result: true };
 * await decider.transact("Account-1", charge(30)); // true
 * await decider.transact("Account-1", charge(80)); // false: nothing appended
 * ```
 *
 * @category Write side
 */
export type Decision<E, R> = readonly E[] | { readonly events: readonly E[]; readonly result: R };

/**
 * Options of {@linkcode Decider.transact}.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, type TransactOptions } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const decider = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 * });
 * const options: TransactOptions = {
 *   load: "requireLoad",
 *   idempotencyKey: "charge-7",
 *   context: { meta: { user: "ann" }, correlationId: "req-17" },
 * };
 * await decider.transact("Account-1", () => [{ type: "Charged", data: { amount: 5 } }], options);
 * // The caller retries (its reply was lost): the charge is not applied twice.
 * const again = await decider.transactEx(
 *   "Account-1",
 *   () => [{ type: "Charged", data: { amount: 5 } }],
 *   options,
 * );
 * console.log(again.duplicate, again.state); // true 5
 * ```
 *
 * @category Write side
 */
export interface TransactOptions {
  /** How much the initial load may rely on the cache (default `"requireLoad"`). */
  readonly load?: LoadOption;
  /**
   * With `load: "allowStale"`: before returning the result of a decision that appends nothing,
   * read what the cached state missed and, if the stream moved, decide again on the fresh state
   * (default false: such a result may rest on a stale state).
   */
  readonly requireFresh?: boolean;
  /**
   * A key naming this command (e.g. a command id from the caller). If the stream's recent
   * appends already carry it, nothing is appended and the outcome says `duplicate: true`; else
   * it is recorded in the first appended event's metadata under {@linkcode IDEMPOTENCY_KEY}.
   * A decision that appends nothing records nothing.
   */
  readonly idempotencyKey?: string;
  /**
   * The command may repeat one applied earlier than the stream's recent keys reach (a re-send
   * after a crash, while other writers kept appending): when `idempotencyKey` is not among them
   * and the stream has had at least `idempotencyWindow` keyed appends, the stream is searched
   * from its start for the key before deciding (by the store, in one query, where it is an
   * {@linkcode IdempotencyKeyFinder}; else read in pages), so the repeat appends nothing however
   * many appends came between. A cost paid only by transacts that set it; default false.
   */
  readonly mayRepeat?: boolean;
  /** Metadata and tracing ids recorded on every appended event. */
  readonly context?: EncodeContext;
}

/**
 * Options of {@linkcode Decider.query}.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, createStateCache, type QueryOptions } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const decider = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 *   cache: createStateCache(),
 * });
 * const options: QueryOptions = { load: "allowStale" };
 * await decider.query("Account-1", (total) => total, options); // 0
 * ```
 *
 * @category Write side
 */
export interface QueryOptions {
  /** How much the load may rely on the cache (default `"requireLoad"`). */
  readonly load?: LoadOption;
}

/**
 * The full outcome of {@linkcode Decider.transactEx}.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, type TransactOutcome } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const decider = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 * });
 * const outcome: TransactOutcome<number, void> = await decider.transactEx("Account-1", () => [
 *   { type: "Charged", data: { amount: 5 } },
 *   { type: "Charged", data: { amount: 7 } },
 * ]);
 * console.log(outcome.state, outcome.version, outcome.appended, outcome.attempts); // 12 2 2 1
 * console.log(outcome.duplicate); // false
 * ```
 *
 * @category Write side
 */
export interface TransactOutcome<S, R> {
  /** The decision's result (`undefined` for a decision that returned just events). */
  readonly result: R;
  /** The state after the append. */
  readonly state: S;
  /** The stream's version after the append: the index the next event will get. */
  readonly version: number;
  /** Events appended (including a snapshot event, if one was written). */
  readonly appended: number;
  /** Decisions made: 1 unless conflicts forced re-deciding. */
  readonly attempts: number;
  /**
   * The transact's idempotency key was already in the stream: nothing was appended, and
   * `result` is the decision on the current state (which already includes the command).
   */
  readonly duplicate: boolean;
}

/**
 * Loads, decides and appends for the streams of one aggregate.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const decider = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 * });
 * await decider.transact("Account-1", () => [{ type: "Charged", data: { amount: 5 } }]);
 * await decider.query("Account-1", (total) => total); // 5
 * ```
 *
 * @category Write side
 */
export interface Decider<E extends TypedEvent, S> {
  /** Loads the state of `stream` and returns what `render` makes of it. */
  query<T>(
    stream: StreamName,
    render: (state: S, context: DecideContext) => T,
    options?: QueryOptions,
  ): Promise<T>;
  /**
   * Loads the state of `stream`, decides, appends the decided events with the loaded version
   * and returns the decision's result. On a conflict, reads what was missed and decides again.
   */
  transact<R = void>(
    stream: StreamName,
    decide: (state: S, context: DecideContext) => Decision<E, R> | Promise<Decision<E, R>>,
    options?: TransactOptions,
  ): Promise<R>;
  /** As {@linkcode Decider.transact}, returning the state and version after the append too. */
  transactEx<R = void>(
    stream: StreamName,
    decide: (state: S, context: DecideContext) => Decision<E, R> | Promise<Decision<E, R>>,
    options?: TransactOptions,
  ): Promise<TransactOutcome<S, R>>;
}

/**
 * Every decision of a transact met a conflict: other writers kept appending to the stream.
 *
 * @example
 * ```ts
 * import { MaxAttemptsExceededError } from "@impel/impel";
 * const e = new MaxAttemptsExceededError("GuestStay-1", 3);
 * console.log(e.code); // "MaxAttemptsExceeded"
 * ```
 *
 * @category Write side
 */
export class MaxAttemptsExceededError extends ImpelError {
  /** The contended stream. */
  readonly stream: StreamName;
  /** Decisions made. */
  readonly attempts: number;
  /** Creates the error; `cause` is the last conflict. */
  constructor(stream: StreamName, attempts: number, options?: ErrorOptions) {
    super(
      "MaxAttemptsExceeded",
      `transact on ${stream} met a conflicting write on each of ${attempts} attempts`,
      options,
    );
    this.stream = stream;
    this.attempts = attempts;
  }
}

/**
 * The events of a stream did not continue from the version the decider asked for: the store
 * returned a different index first (a store that ignores `fromIndex`, or a stream rewritten
 * underneath a cached state).
 *
 * @example
 * ```ts
 * import { StreamReadGapError } from "@impel/impel";
 * const e = new StreamReadGapError("GuestStay-1", 4, 0);
 * console.log(e.code); // "StreamReadGap"
 * ```
 *
 * @category Write side
 */
export class StreamReadGapError extends ImpelError {
  /** The stream read. */
  readonly stream: StreamName;
  /** Creates the error. */
  constructor(stream: StreamName, expected: number, got: number) {
    super("StreamReadGap", `reading ${stream} from index ${expected} returned index ${got} first`);
    this.stream = stream;
  }
}

interface Loaded<S> {
  readonly version: number;
  readonly state: S;
  readonly sinceSnapshot: number;
  /** Recent idempotency keys, oldest first, at most `window`. */
  readonly keys: readonly string[];
  /** How many keys are kept: the decider's window, or a larger one a snapshot was written with. */
  readonly window: number;
  /**
   * Older keys were dropped: by this window, or by the smaller one of the snapshot the keys came
   * from (whose list was full), so a key not among `keys` may still be in the stream.
   */
  readonly trimmed?: boolean;
}

function hasSnapshotReader(store: EventStore): store is EventStore & SnapshotReader {
  return typeof (store as Partial<SnapshotReader>).readFromLast === "function";
}

function hasKeyFinder(store: EventStore): store is EventStore & IdempotencyKeyFinder {
  return typeof (store as Partial<IdempotencyKeyFinder>).findIdempotencyKey === "function";
}

function hasLastEventReader(store: EventStore): store is EventStore & LastEventReader {
  return typeof (store as Partial<LastEventReader>).readLastEvent === "function";
}

function checkFunction(field: string, value: unknown): void {
  if (typeof value !== "function") {
    throw new InvalidArgumentError(field, `must be a function, got ${describe(value)}`);
  }
}

function checkLoadOption(value: unknown): LoadOption {
  if (value !== "requireLoad" && value !== "allowStale") {
    throw new InvalidArgumentError(
      "load",
      `must be "requireLoad" or "allowStale", got ${describe(value)}`,
    );
  }
  return value;
}

function metaField(meta: unknown, key: string): unknown {
  return meta !== null && typeof meta === "object" && !Array.isArray(meta)
    ? (meta as Record<string, unknown>)[key]
    : undefined;
}

/** The identity of the deciders built from `parts` (compared by reference), interned. */
interface IdentityNode {
  readonly objects: WeakMap<object, IdentityNode>;
  readonly values: Map<unknown, IdentityNode>;
  identity?: object;
}
const newNode = (): IdentityNode => ({ objects: new WeakMap(), values: new Map() });
const identities = newNode();

function identityOf(parts: readonly unknown[]): object {
  let node = identities;
  for (const part of parts) {
    const isObject = (typeof part === "object" && part !== null) || typeof part === "function";
    let next = isObject ? node.objects.get(part as object) : node.values.get(part);
    if (next === undefined) {
      next = newNode();
      if (isObject) node.objects.set(part as object, next);
      else node.values.set(part, next);
    }
    node = next;
  }
  return node.identity ??= Object.freeze({});
}

// The turns of transacts per store object and stream: each stream's latest turn, which resolves
// when its transact is done or has held it for `maxTurnMs`. Keyed by the store object so that
// deciders of different stores never wait for each other.
const turns = new WeakMap<EventStore, Map<StreamName, Promise<void>>>();

/**
 * Runs `fn` once every earlier call for the same store and stream has settled or held its turn
 * for `maxTurnMs`, whichever comes first. A turn is a courtesy that saves conflicts, never a
 * lock: a transact whose `decide` transacts on its own stream, or on one whose transact is
 * waiting for this one, would otherwise wait forever; past the limit the next one goes ahead and
 * the expected version keeps both correct.
 */
function inTurn<T>(
  store: EventStore,
  stream: StreamName,
  maxTurnMs: number,
  fn: () => Promise<T>,
): Promise<T> {
  if (maxTurnMs === 0) return fn();
  let byStream = turns.get(store);
  if (byStream === undefined) turns.set(store, byStream = new Map());
  const streams = byStream;
  const previous = streams.get(stream);
  let release!: () => void;
  const turn = new Promise<void>((resolve) => release = resolve);
  streams.set(stream, turn);
  const run = async (): Promise<T> => {
    const timer = setTimeout(release, maxTurnMs);
    try {
      return await fn();
    } finally {
      clearTimeout(timer);
      release();
      if (streams.get(stream) === turn) streams.delete(stream);
    }
  };
  return previous === undefined ? run() : previous.then(run);
}

/**
 * Creates a {@linkcode Decider} over `options.store` for streams whose events are the union `E`
 * and whose folded state is `S`.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider, createStateCache } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event =
 *   | { type: "Added"; data: { item: string } }
 *   | { type: "Snapshotted"; data: { items: string[] } };
 * type State = readonly string[];
 *
 * const decider = createDecider<Event, State>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Added: {}, Snapshotted: {} }),
 *   initial: [],
 *   fold: (state, events) =>
 *     events.reduce<State>((s, e) => e.type === "Added" ? [...s, e.data.item] : e.data.items, state),
 *   cache: createStateCache(),
 *   snapshot: {
 *     isOrigin: (e) => e.type === "Snapshotted",
 *     toSnapshot: (items) => ({ type: "Snapshotted", data: { items: [...items] } }),
 *     every: 50,
 *   },
 * });
 *
 * const added = await decider.transact("Cart-1", (items) =>
 *   items.includes("tea")
 *     ? { events: [], result: false }
 *     : { events: [{ type: "Added", data: { item: "tea" } }], result: true });
 * console.log(added); // true
 * ```
 *
 * @category Write side
 */
export function createDecider<E extends TypedEvent, S>(
  options: DeciderOptions<E, S>,
): Decider<E, S> {
  const { store, codec, initial, fold, cache, snapshot } = options;
  if (typeof store?.readStream !== "function" || typeof store.append !== "function") {
    throw new InvalidArgumentError("store", "must be an EventStore (readStream and append)");
  }
  if (
    typeof codec?.encode !== "function" || typeof codec.decode !== "function" ||
    typeof codec.roundTrip !== "function"
  ) {
    throw new InvalidArgumentError("codec", "must be a Codec (from createCodec)");
  }
  checkFunction("fold", fold);
  const maxAttempts = checkInteger("maxAttempts", options.maxAttempts ?? 3, 1);
  const retry = options.retry ?? {};
  // The default initial delay gives way to a smaller maxDelayMs (and the default maximum to a
  // larger initialDelayMs): only delays the caller gave are checked against each other.
  const conflictBackoff = backoff({
    factor: 2,
    jitter: 1,
    ...retry,
    initialDelayMs: retry.initialDelayMs ??
      (typeof retry.maxDelayMs === "number" ? Math.min(50, retry.maxDelayMs) : 50),
    maxDelayMs: retry.maxDelayMs ??
      (typeof retry.initialDelayMs === "number" ? Math.max(1_000, retry.initialDelayMs) : 1_000),
  });
  const maxTurnMs = checkNumber("maxTurnMs", options.maxTurnMs ?? 1_000, 0);
  const window = checkInteger("idempotencyWindow", options.idempotencyWindow ?? 100, 0);
  let snapshotType: string | undefined;
  if (snapshot !== undefined) {
    checkFunction("snapshot.isOrigin", snapshot.isOrigin);
    checkFunction("snapshot.toSnapshot", snapshot.toSnapshot);
    checkInteger("snapshot.every", snapshot.every, 1);
    // The stored type of a snapshot is whatever the codec names the snapshot event.
    snapshotType = codec.encode(snapshot.toSnapshot(initial)).type;
  }
  // Everything that shapes the folded state and the keys kept with it, and the store it was read
  // from: deciders agreeing on all of it may share entries.
  const owner = identityOf([store, codec, fold, initial, snapshot?.isOrigin, window]);
  const empty: Loaded<S> = { version: 0, state: initial, sinceSnapshot: 0, keys: [], window };

  function remember(stream: StreamName, loaded: Loaded<S>): void {
    cache?.set(stream, { ...loaded, owner });
  }

  function cached(stream: StreamName): Loaded<S> | undefined {
    const entry = cache?.get(stream, owner) as Loaded<S> | undefined;
    // A cache of another making may not keep the window: then it is this decider's.
    return entry === undefined || typeof entry.window === "number" ? entry : { ...entry, window };
  }

  function withKey(keys: readonly string[], key: string, kept: number): readonly string[] {
    const next = [...keys, key];
    return next.length > kept ? next.slice(next.length - kept) : next;
  }

  /**
   * The keys a snapshot carries, and how many to keep from then on: this decider's window or the
   * one the snapshot was written with, whichever is larger, so that a decider with a small
   * window never trims the keys a reader with a larger one needs.
   */
  function snapshotKeys(
    meta: unknown,
  ): { keys: readonly string[]; window: number; trimmed: boolean } {
    const recorded = metaField(meta, IDEMPOTENCY_WINDOW);
    const raw = metaField(meta, IDEMPOTENCY_KEYS);
    const keys = Array.isArray(raw) ? raw.filter((k): k is string => typeof k === "string") : [];
    const kept = Math.max(
      window,
      Number.isSafeInteger(recorded) && (recorded as number) > 0 ? recorded as number : 0,
      keys.length,
    );
    // A full list lost older keys, even when this decider would keep more of them.
    const writtenWith = Number.isSafeInteger(recorded) ? recorded as number : kept;
    return {
      keys: keys.slice(keys.length - Math.min(kept, keys.length)),
      window: kept,
      trimmed: keys.length >= writtenWith,
    };
  }

  /** Reads the events after `base` and folds them in, restarting at the last snapshot among them. */
  function readForward(stream: StreamName, base: Loaded<S>): Promise<Loaded<S>> {
    return store.readStream(stream, { fromIndex: base.version }).then((stored) =>
      absorb(stream, base, stored)
    );
  }

  /** Folds `stored` (which must continue from `base`) into it and caches the result. */
  function absorb(stream: StreamName, base: Loaded<S>, stored: StreamEvent[]): Loaded<S> {
    if (stored.length === 0) return base;
    if (stored[0].index !== base.version) {
      throw new StreamReadGapError(stream, base.version, stored[0].index);
    }
    const decoded: E[] = [];
    let state = base.state;
    let keys = base.keys;
    let kept = base.window;
    let trimmed = base.trimmed === true;
    let sinceSnapshot = base.sinceSnapshot + stored.length;
    for (let i = 0; i < stored.length; i++) {
      const key = metaField(stored[i].meta, IDEMPOTENCY_KEY);
      if (typeof key === "string") {
        trimmed ||= keys.length >= kept;
        keys = withKey(keys, key, kept);
      }
      const event = codec.decode(stored[i]);
      if (event === undefined) continue;
      if (snapshot?.isOrigin(event)) {
        // Everything folded so far is superseded by the snapshot.
        decoded.length = 0;
        state = initial;
        ({ keys, window: kept, trimmed } = snapshotKeys(stored[i].meta));
        sinceSnapshot = stored.length - 1 - i;
      }
      decoded.push(event);
    }
    state = fold(state, decoded);
    const version = stored[stored.length - 1].index + 1;
    const loaded = { version, state, sinceSnapshot, keys, window: kept, trimmed };
    remember(stream, loaded);
    return loaded;
  }

  /** The state to decide on, and whether it was read from the store just now. */
  async function load(
    stream: StreamName,
    option: LoadOption,
  ): Promise<{ loaded: Loaded<S>; fresh: boolean }> {
    const known = cached(stream);
    if (known !== undefined) {
      return option === "allowStale"
        ? { loaded: known, fresh: false }
        : { loaded: await readForward(stream, known), fresh: true };
    }
    if (snapshotType !== undefined && hasSnapshotReader(store)) {
      const stored = await store.readFromLast(stream, snapshotType);
      const first = stored[0];
      const origin = first === undefined || first.index === 0 ? undefined : codec.decode(first);
      // Not from the start: it must open with a snapshot this decider folds as one.
      if (first === undefined || first.index === 0 || (origin && snapshot!.isOrigin(origin))) {
        const base = first === undefined ? empty : { ...empty, version: first.index };
        return { loaded: absorb(stream, base, stored), fresh: true };
      }
    } else if (snapshotType !== undefined && hasLastEventReader(store)) {
      const last = await store.readLastEvent(stream, snapshotType);
      const event = last === undefined ? undefined : codec.decode(last);
      if (last !== undefined && event !== undefined && snapshot!.isOrigin(event)) {
        const base = {
          version: last.index + 1,
          state: fold(initial, [event]),
          sinceSnapshot: 0,
          ...snapshotKeys(last.meta),
        };
        return { loaded: await readForward(stream, base), fresh: true };
      }
    }
    return { loaded: await readForward(stream, empty), fresh: true };
  }

  /**
   * Whether an event of `stream` in [from, to) records idempotency key `key`: asked of the
   * store where it can search itself, else read in pages, so a long stream is not held in
   * memory at once.
   */
  async function keyedBefore(
    stream: StreamName,
    key: string,
    from: number,
    to: number,
  ): Promise<boolean> {
    if (hasKeyFinder(store)) {
      const found = await store.findIdempotencyKey(stream, key, { fromIndex: from, toIndex: to });
      return found !== undefined;
    }
    for (let index = from; index < to;) {
      const page = await store.readStream(stream, {
        fromIndex: index,
        maxCount: Math.min(SEARCH_PAGE, to - index),
      });
      if (page.length === 0) return false;
      for (const e of page) {
        if (e.index < to && metaField(e.meta, IDEMPOTENCY_KEY) === key) return true;
      }
      index = page[page.length - 1].index + 1;
    }
    return false;
  }

  function decisionOf<R>(decision: Decision<E, R>): { events: readonly E[]; result: R } {
    const events = Array.isArray(decision)
      ? decision as readonly E[]
      : (decision as { events?: readonly E[] })?.events;
    if (!Array.isArray(events)) {
      throw new InvalidArgumentError(
        "decide",
        `must return an array of events or { events, result }, got ${describe(decision)}`,
      );
    }
    const result = (Array.isArray(decision) ? undefined : (decision as { result: R }).result) as R;
    return { events, result };
  }

  async function attempt<R>(
    stream: StreamName,
    decide: (state: S, context: DecideContext) => Decision<E, R> | Promise<Decision<E, R>>,
    transactOptions: TransactOptions,
    option: LoadOption,
  ): Promise<TransactOutcome<S, R>> {
    const key = transactOptions.idempotencyKey;
    const context = transactOptions.context;
    let { loaded: current, fresh } = await load(stream, option);
    // The key was found beyond the recent keys, or searched for up to this version.
    let found = false;
    let searchedTo = transactOptions.mayRepeat === true ? 0 : Infinity;
    for (let attempt = 1;; attempt++) {
      if (
        key !== undefined && !found && searchedTo < current.version &&
        (current.trimmed === true || current.keys.length >= current.window) &&
        !current.keys.includes(key)
      ) {
        found = await keyedBefore(stream, key, searchedTo, current.version);
        searchedTo = current.version;
      }
      const duplicate = key !== undefined && (found || current.keys.includes(key));
      const { events, result } = decisionOf(
        await decide(current.state, { stream, version: current.version, attempt }),
      );
      const unchanged = {
        result,
        state: current.state,
        version: current.version,
        appended: 0,
        attempts: attempt,
        duplicate,
      };
      if (duplicate) return unchanged;
      if (events.length === 0) {
        if (fresh || transactOptions.requireFresh !== true) return unchanged;
        const before = current.version;
        current = await readForward(stream, current);
        fresh = true;
        if (current.version === before) return unchanged;
        continue;
      }

      // Encode first: an event no reader could decode is refused before anything is written,
      // and the state is folded from the events as readers will decode them.
      const toWrite: EventData[] = [];
      const readBack: E[] = [];
      for (const e of events) {
        const { stored, decoded } = codec.roundTrip(e, context);
        toWrite.push(stored);
        readBack.push(decoded);
      }
      let keys = current.keys;
      let trimmed = current.trimmed === true;
      if (key !== undefined) {
        trimmed ||= keys.length >= current.window;
        toWrite[0] = {
          ...toWrite[0],
          meta: { ...(toWrite[0].meta as object), [IDEMPOTENCY_KEY]: key },
        };
        keys = withKey(keys, key, current.window);
      }
      let state = fold(current.state, readBack);
      let sinceSnapshot = current.sinceSnapshot + events.length;
      if (snapshot !== undefined && sinceSnapshot >= snapshot.every) {
        const { stored, decoded } = codec.roundTrip(snapshot.toSnapshot(state), context);
        toWrite.push({
          ...stored,
          meta: {
            ...(stored.meta as object),
            [IDEMPOTENCY_KEYS]: keys,
            [IDEMPOTENCY_WINDOW]: current.window,
          },
        });
        // Every later reader restarts at the snapshot: so does the state kept here.
        state = fold(initial, [decoded]);
        sinceSnapshot = 0;
      }
      try {
        const { nextIndex } = await store.append(stream, toWrite, current.version);
        remember(stream, {
          version: nextIndex,
          state,
          sinceSnapshot,
          keys,
          window: current.window,
          trimmed,
        });
        return {
          result,
          state,
          version: nextIndex,
          appended: toWrite.length,
          attempts: attempt,
          duplicate: false,
        };
      } catch (error) {
        if (!(error instanceof WrongExpectedVersionError)) throw error;
        if (attempt >= maxAttempts) {
          throw new MaxAttemptsExceededError(stream, attempt, { cause: error });
        }
        await sleep(conflictBackoff.delay(attempt));
        current = await readForward(stream, current);
        fresh = true;
      }
    }
  }

  function transactEx<R>(
    stream: StreamName,
    decide: (state: S, context: DecideContext) => Decision<E, R> | Promise<Decision<E, R>>,
    transactOptions: TransactOptions = {},
  ): Promise<TransactOutcome<S, R>> {
    try {
      return start(stream, decide, transactOptions ?? {});
    } catch (error) {
      // Bad arguments reject like every other failure of a transact.
      return Promise.reject(error);
    }
  }

  function start<R>(
    stream: StreamName,
    decide: (state: S, context: DecideContext) => Decision<E, R> | Promise<Decision<E, R>>,
    transactOptions: TransactOptions,
  ): Promise<TransactOutcome<S, R>> {
    checkStreamName(stream);
    checkFunction("decide", decide);
    const option = checkLoadOption(transactOptions.load ?? "requireLoad");
    const key = transactOptions.idempotencyKey;
    if (key !== undefined && (typeof key !== "string" || key.length === 0)) {
      throw new InvalidArgumentError(
        "idempotencyKey",
        `must be a non-empty string, got ${describe(key)}`,
      );
    }
    return inTurn(store, stream, maxTurnMs, () => attempt(stream, decide, transactOptions, option));
  }

  return {
    async query(stream, render, queryOptions = {}) {
      checkStreamName(stream);
      checkFunction("render", render);
      const { loaded } = await load(stream, checkLoadOption(queryOptions.load ?? "requireLoad"));
      return render(loaded.state, { stream, version: loaded.version, attempt: 1 });
    },
    async transact(stream, decide, transactOptions) {
      return (await transactEx(stream, decide, transactOptions)).result;
    },
    transactEx,
  };
}
