/**
 * The write side: a decider loads a stream's state by folding its events, runs a decision that
 * yields new events, and appends them with the version it read, re-deciding on conflict. It
 * works over any {@linkcode EventStore} (memory, MessageDB, DynamoDB).
 *
 * - **Consistency.** Every append names the version the decision was made on; if another writer
 *   got there first, the decider reads the events it missed (from the version it knows, not
 *   from the start), folds them, and decides again, up to `maxAttempts` times, after which it
 *   rejects with {@linkcode MaxAttemptsExceededError}.
 * - **Cache.** With a {@linkcode StateCache}, folded states are kept per stream with their
 *   version, so a load reads only the events written since (or nothing, with
 *   `load: "allowStale"`: the expected-version append still catches a stale decision).
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
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import type { StreamEvent } from "./event.ts";
import { type EventData, type EventStore, WrongExpectedVersionError } from "./store.ts";
import { checkStreamName, type StreamName } from "./streamName.ts";

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
 */
export interface LastEventReader {
  /** The last event of `stream` (of type `type`, if given), or `undefined` if there is none. */
  readLastEvent(stream: StreamName, type?: string): Promise<StreamEvent | undefined>;
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
 * const entry: CachedState | undefined = cache.get("Account-1");
 * console.log(entry?.version, entry?.state); // 1 5
 * ```
 */
export interface CachedState {
  /** The stream's event count when the state was folded. */
  readonly version: number;
  /** The folded state. */
  readonly state: unknown;
  /** Events after the latest snapshot (or since the start) that the state includes. */
  readonly sinceSnapshot: number;
  /** Identifies the fold that produced `state`, so that deciders with different folds never share. */
  readonly owner: unknown;
}

/**
 * An in-process cache of folded states by stream name, shared by any number of deciders.
 * Deciders that use the same `fold` function share entries; others keep to their own.
 *
 * @example
 * ```ts
 * import { createStateCache } from "@impel/impel";
 * const cache = createStateCache({ maxEntries: 1000 });
 * console.log(cache.size); // 0
 * ```
 */
export interface StateCache {
  /** The entry for `stream`, if present (marks it recently used). */
  get(stream: StreamName): CachedState | undefined;
  /** Stores `entry` unless the cache holds a newer version from the same fold. */
  set(stream: StreamName, entry: CachedState): void;
  /** Forgets `stream`. */
  delete(stream: StreamName): void;
  /** Entries held. */
  readonly size: number;
}

/**
 * Options of {@linkcode createStateCache}.
 *
 * @example
 * ```ts
 * import { createStateCache, type StateCacheOptions } from "@impel/impel";
 * const options: StateCacheOptions = { maxEntries: 50_000 };
 * const cache = createStateCache(options);
 * ```
 */
export interface StateCacheOptions {
  /** Most streams kept; the least recently used go first (default 10 000). */
  readonly maxEntries?: number;
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
 */
export function createStateCache(options: StateCacheOptions = {}): StateCache {
  const maxEntries = checkInteger("maxEntries", options.maxEntries ?? 10_000, 1);
  const entries = new Map<StreamName, CachedState>();
  return {
    get(stream) {
      const entry = entries.get(stream);
      if (entry !== undefined) {
        entries.delete(stream);
        entries.set(stream, entry);
      }
      return entry;
    },
    set(stream, entry) {
      const current = entries.get(stream);
      if (
        current !== undefined && current.owner === entry.owner && current.version > entry.version
      ) return;
      entries.delete(stream);
      entries.set(stream, entry);
      if (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
    },
    delete(stream) {
      entries.delete(stream);
    },
    get size() {
      return entries.size;
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
 *   cache: createStateCache(),
 * };
 * const decider = createDecider(options);
 * ```
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
  /** Keep folded states in memory between calls. */
  readonly cache?: StateCache;
  /** Write and use rolling snapshots. */
  readonly snapshot?: SnapshotOptions<E, S>;
}

/**
 * How much a load may rely on the cache: `"requireLoad"` (default) reads the events written
 * since the cached version; `"allowStale"` uses a cached state as it is (a transact still
 * detects and resolves a conflict through the expected version).
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
 *   context: { meta: { user: "ann" }, correlationId: "req-17" },
 * };
 * await decider.transact("Account-1", () => [{ type: "Charged", data: { amount: 5 } }], options);
 * ```
 */
export interface TransactOptions {
  /** How much the initial load may rely on the cache (default `"requireLoad"`). */
  readonly load?: LoadOption;
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
 * ```
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
 */
export function createDecider<E extends TypedEvent, S>(
  options: DeciderOptions<E, S>,
): Decider<E, S> {
  const { store, codec, initial, fold, cache, snapshot } = options;
  if (typeof store?.readStream !== "function" || typeof store.append !== "function") {
    throw new InvalidArgumentError("store", "must be an EventStore (readStream and append)");
  }
  if (typeof codec?.encode !== "function" || typeof codec.decode !== "function") {
    throw new InvalidArgumentError("codec", "must be a Codec (from createCodec)");
  }
  checkFunction("fold", fold);
  const maxAttempts = checkInteger("maxAttempts", options.maxAttempts ?? 3, 1);
  let snapshotType: string | undefined;
  if (snapshot !== undefined) {
    checkFunction("snapshot.isOrigin", snapshot.isOrigin);
    checkFunction("snapshot.toSnapshot", snapshot.toSnapshot);
    checkInteger("snapshot.every", snapshot.every, 1);
    // The stored type of a snapshot is whatever the codec names the snapshot event.
    snapshotType = codec.encode(snapshot.toSnapshot(initial)).type;
  }
  const owner = fold; // deciders folding the same way may share cached states
  const empty: Loaded<S> = { version: 0, state: initial, sinceSnapshot: 0 };

  function remember(stream: StreamName, loaded: Loaded<S>): void {
    cache?.set(stream, { ...loaded, owner });
  }

  function cached(stream: StreamName): Loaded<S> | undefined {
    const entry = cache?.get(stream);
    if (entry === undefined || entry.owner !== owner) return undefined;
    return entry as Loaded<S> & CachedState;
  }

  /** Reads the events after `base` and folds them in, restarting at the last snapshot among them. */
  async function readForward(stream: StreamName, base: Loaded<S>): Promise<Loaded<S>> {
    const stored = await store.readStream(stream, { fromIndex: base.version });
    if (stored.length === 0) return base;
    if (stored[0].index !== base.version) {
      throw new StreamReadGapError(stream, base.version, stored[0].index);
    }
    const decoded: E[] = [];
    let state = base.state;
    let sinceSnapshot = base.sinceSnapshot + stored.length;
    for (let i = 0; i < stored.length; i++) {
      const event = codec.decode(stored[i]);
      if (event === undefined) continue;
      if (snapshot?.isOrigin(event)) {
        // Everything folded so far is superseded by the snapshot.
        decoded.length = 0;
        state = initial;
        sinceSnapshot = stored.length - 1 - i;
      }
      decoded.push(event);
    }
    state = fold(state, decoded);
    const loaded = { version: stored[stored.length - 1].index + 1, state, sinceSnapshot };
    remember(stream, loaded);
    return loaded;
  }

  async function load(stream: StreamName, option: LoadOption): Promise<Loaded<S>> {
    const known = cached(stream);
    if (known !== undefined) return option === "allowStale" ? known : readForward(stream, known);
    if (snapshotType !== undefined && hasLastEventReader(store)) {
      const last = await store.readLastEvent(stream, snapshotType);
      const event = last === undefined ? undefined : codec.decode(last);
      if (last !== undefined && event !== undefined && snapshot!.isOrigin(event)) {
        return readForward(stream, {
          version: last.index + 1,
          state: fold(initial, [event]),
          sinceSnapshot: 0,
        });
      }
    }
    return readForward(stream, empty);
  }

  async function transactEx<R>(
    stream: StreamName,
    decide: (state: S, context: DecideContext) => Decision<E, R> | Promise<Decision<E, R>>,
    transactOptions: TransactOptions = {},
  ): Promise<TransactOutcome<S, R>> {
    checkStreamName(stream);
    checkFunction("decide", decide);
    const option = checkLoadOption(transactOptions.load ?? "requireLoad");
    let current = await load(stream, option);
    for (let attempt = 1;; attempt++) {
      const decision = await decide(current.state, { stream, version: current.version, attempt });
      const events = Array.isArray(decision)
        ? decision as readonly E[]
        : (decision as { events: readonly E[] }).events;
      const result =
        (Array.isArray(decision) ? undefined : (decision as { result: R }).result) as R;
      if (!Array.isArray(events)) {
        throw new InvalidArgumentError(
          "decide",
          `must return an array of events or { events, result }, got ${describe(decision)}`,
        );
      }
      if (events.length === 0) {
        return {
          result,
          state: current.state,
          version: current.version,
          appended: 0,
          attempts: attempt,
        };
      }

      const state = fold(current.state, events);
      const toWrite: EventData[] = events.map((e) => codec.encode(e, transactOptions.context));
      let sinceSnapshot = current.sinceSnapshot + events.length;
      if (snapshot !== undefined && sinceSnapshot >= snapshot.every) {
        toWrite.push(codec.encode(snapshot.toSnapshot(state), transactOptions.context));
        sinceSnapshot = 0;
      }
      try {
        const { nextIndex } = await store.append(stream, toWrite, current.version);
        const written = { version: nextIndex, state, sinceSnapshot };
        remember(stream, written);
        return { result, state, version: nextIndex, appended: toWrite.length, attempts: attempt };
      } catch (error) {
        if (!(error instanceof WrongExpectedVersionError)) throw error;
        if (attempt >= maxAttempts) {
          throw new MaxAttemptsExceededError(stream, attempt, { cause: error });
        }
        current = await readForward(stream, current);
      }
    }
  }

  return {
    async query(stream, render, queryOptions = {}) {
      checkStreamName(stream);
      checkFunction("render", render);
      const loaded = await load(stream, checkLoadOption(queryOptions.load ?? "requireLoad"));
      return render(loaded.state, { stream, version: loaded.version, attempt: 1 });
    },
    async transact(stream, decide, transactOptions) {
      return (await transactEx(stream, decide, transactOptions)).result;
    },
    transactEx,
  };
}
