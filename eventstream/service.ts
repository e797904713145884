/**
 * The event stream service (Lokad's `EventStreamService`): projections of one stream kept in
 * memory, caught up at start (from snapshots when there are valid ones), refreshed on demand
 * and, with `refreshMs`, in the background, and appends decided by a builder on the current
 * state and retried on conflict.
 *
 * Calls are serialised: a catch-up, a background refresh, a `currentState()` and an `append`
 * never interleave (one reader of the storage), so a builder always sees a state that includes
 * every event before the ones it returns (it is called again on a newer state when another
 * writer got there first).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { backoff, type RetryOptions } from "../core/failure.ts";
import { sleep } from "../core/tranches.ts";
import type { StoredEvent } from "./frame.ts";
import type { SnapshotStore } from "./snapshots.ts";
import { AppendConflictError, type EventStorage } from "./storage.ts";

const log = getLogger(["impel", "eventstream"]);

/**
 * A projection: how state follows from events. `apply` must not change `state` (return a new
 * one): state handed out by `localState` stays as it was. `name` is `Name-version` (letters,
 * digits and `-`, ending in the version): raise the version whenever `apply` changes meaning, so
 * that snapshots of the old one are ignored and the stream replayed. With `save` and `load`
 * (state to a JSON value and back) its state can be snapshotted.
 *
 * @example
 * ```ts
 * import type { Projection } from "@impel/impel/eventstream";
 * type Event = { word: string };
 * const words: Projection<Event, ReadonlyMap<string, number>> = {
 *   name: "Words-18",
 *   initial: new Map(),
 *   apply: (state, e) => new Map(state).set(e.word, (state.get(e.word) ?? 0) + 1),
 *   save: (state) => [...state],
 *   load: (json) => new Map(json as [string, number][]),
 * };
 * ```
 */
export interface Projection<E, S> {
  /** `Name-version`, e.g. `Words-18`. */
  readonly name: string;
  /** The state before the first event. */
  readonly initial: S;
  /** The state after `event` (sequence number `seq`) given the state before it. */
  apply(state: S, event: E, seq: number): S;
  /** The state as a JSON value, for a snapshot. */
  readonly save?: (state: S) => unknown;
  /** The state from what `save` returned; throws when it cannot. */
  readonly load?: (json: unknown) => S;
}

/**
 * One projection per key of the service's state.
 *
 * @example
 * ```ts
 * import type { Projections } from "@impel/impel/eventstream";
 * const projections: Projections<{ n: number }, { sum: number; count: number }> = {
 *   sum: { name: "Sum-1", initial: 0, apply: (s, e) => s + e.n },
 *   count: { name: "Count-1", initial: 0, apply: (s) => s + 1 },
 * };
 * ```
 */
export type Projections<E, S> = { readonly [K in keyof S]: Projection<E, S[K]> };

/**
 * What a builder returns when it also has a result for the caller.
 *
 * @example
 * ```ts
 * import type { Append } from "@impel/impel/eventstream";
 * const append: Append<{ word: string }, number> = { events: [{ word: "a" }], result: 2 };
 * ```
 */
export interface Append<E, R> {
  /** The events to append (none: nothing is appended). */
  readonly events: readonly E[];
  /** Handed back by `append` once the events are appended. */
  readonly result: R;
}

/**
 * Decides what to append from the current state (and its sequence number): events, or events
 * with a result. Called again, on a newer state, after a conflict.
 *
 * @example
 * ```ts
 * import type { Builder } from "@impel/impel/eventstream";
 * const count: Builder<{ word: string }, { words: Map<string, number> }, number> = (state) => {
 *   const next = (state.words.get("a") ?? 0) + 1;
 *   return { events: [{ word: "a" }], result: next };
 * };
 * ```
 */
export type Builder<E, S, R = undefined> = (
  state: S,
  seq: number,
) => readonly E[] | Append<E, R>;

/**
 * What `append` did.
 *
 * @example
 * ```ts
 * import type { Appended } from "@impel/impel/eventstream";
 * const done: Appended<number> = { result: 2, first: 8, last: 8, attempts: 1 };
 * ```
 */
export interface Appended<R> {
  /** The builder's result (of its last call). */
  readonly result: R;
  /** The sequence number of the first appended event (`undefined` when none were). */
  readonly first: number | undefined;
  /** The stream's last sequence number after the append. */
  readonly last: number;
  /** How many times the builder was called. */
  readonly attempts: number;
}

/**
 * Options of {@linkcode eventStream}.
 *
 * @example
 * ```ts
 * import { eventStream, type EventStreamOptions, memorySnapshots, memoryStorage } from "@impel/impel/eventstream";
 * const options: EventStreamOptions<number, { sum: number }> = {
 *   storage: memoryStorage(),
 *   projections: { sum: { name: "Sum-1", initial: 0, apply: (s, e) => s + e } },
 *   snapshots: memorySnapshots(),
 *   maxAttempts: 10,
 *   pageSize: 1000,
 * };
 * const service = eventStream(options);
 * await service.ready;
 * await service.close();
 * ```
 */
export interface EventStreamOptions<E, S> {
  /** The stream. */
  readonly storage: EventStorage;
  /** The projections, one per key of the state. */
  readonly projections: Projections<E, S>;
  /**
   * Where snapshots are loaded from at start and saved by `saveSnapshots()`: a store of your
   * own (`fileSnapshots(dir)`, ...) or `"storage"`, the stream's own storage (`storage.snapshots`:
   * files beside the segments, block blobs beside the stream's blobs).
   */
  readonly snapshots?: SnapshotStore | "storage";
  /** Most builder calls per `append` (default 10). */
  readonly maxAttempts?: number;
  /**
   * The wait after a conflict, before the new events are read and the builder called again:
   * jittered and growing, so that writers racing for the end of the stream take turns rather
   * than one losing every race (default 2 ms doubling to at most 50 ms, jitter 1).
   */
  readonly retry?: RetryOptions;
  /** Events per read (default 1000). */
  readonly pageSize?: number;
  /** Told of each warning (an ignored snapshot), besides the log. */
  readonly onWarning?: (message: string) => void;
  /**
   * Reads what other writers appended every `refreshMs` milliseconds once ready, so that
   * `localState` follows them without a `currentState()` call (Lokad's background refresh).
   * Each refresh waits for the previous one and for any append (one reader); `close()` stops it.
   * A refresh that fails makes `localState` throw {@linkcode StreamRefreshError} (and sets
   * `refreshError`) until a later refresh, `currentState()` or append reads the stream again.
   * Default: no background refresh.
   */
  readonly refreshMs?: number;
}

/**
 * A running service.
 *
 * @example
 * ```ts
 * import { eventStream, memoryStorage } from "@impel/impel/eventstream";
 * const service = eventStream({
 *   storage: memoryStorage({ events: [1, 2, 3] }),
 *   projections: { sum: { name: "Sum-1", initial: 0, apply: (s: number, e: number) => s + e } },
 * });
 * await service.ready;
 * console.log(service.isReady, service.localState.sum, service.sequence); // true 6 3
 * ```
 */
export interface EventStreamService<E, S> {
  /** Resolves when the catch-up reached the end of the stream; rejects if it failed. */
  readonly ready: Promise<void>;
  /** True once `ready` has resolved. */
  readonly isReady: boolean;
  /** The state now, without reading the stream (throws {@linkcode StreamNotReadyError} before ready). */
  readonly localState: S;
  /** The sequence number of the last event in `localState`. */
  readonly sequence: number;
  /** The state after reading what other writers appended. */
  currentState(): Promise<S>;
  /** Appends what `builder` decides, retrying on conflict (see {@linkcode Builder}). */
  append<R = undefined>(builder: Builder<E, S, R>): Promise<Appended<R>>;
  /** Saves every projection with `save` to the snapshot store, at the current sequence number. */
  saveSnapshots(): Promise<void>;
  /** How many events the projections were given since the start (the tail after snapshots). */
  readonly applied: number;
  /**
   * Why the last background refresh (`refreshMs`) failed, while no read since succeeded;
   * `undefined` when it is fine.
   */
  readonly refreshError: unknown;
  /** Stops the service and closes the storage. */
  close(): Promise<void>;
}

/**
 * State or an append was asked for before the catch-up ended (or after it failed: `cause`).
 *
 * @example
 * ```ts
 * import { eventStream, memoryStorage, StreamNotReadyError } from "@impel/impel/eventstream";
 * const service = eventStream({
 *   storage: memoryStorage(),
 *   projections: { n: { name: "N-1", initial: 0, apply: (s: number) => s + 1 } },
 * });
 * try {
 *   service.localState;
 * } catch (e) {
 *   console.log(e instanceof StreamNotReadyError); // true
 * }
 * await service.ready;
 * ```
 */
export class StreamNotReadyError extends ImpelError {
  /** Creates the error. */
  constructor(storage: string, cause?: unknown) {
    super(
      "StreamNotReady",
      cause === undefined
        ? `the event stream ${storage} is still catching up: await service.ready first`
        : `the event stream ${storage} failed to catch up: ${cause}`,
      { cause },
    );
  }
}

/**
 * `localState` while the last background refresh failed: the state may lag behind the stream.
 * `cause` is the storage's error; `currentState()` tries the read again.
 *
 * @example
 * ```ts
 * import { StreamRefreshError } from "@impel/impel/eventstream";
 * const e = new StreamRefreshError("memory", new Error("disk gone"));
 * console.log(e.code); // StreamRefresh
 * ```
 */
export class StreamRefreshError extends ImpelError {
  /** Creates the error. */
  constructor(storage: string, cause: unknown) {
    super(
      "StreamRefresh",
      `the event stream ${storage} failed to refresh in the background (its state may be behind ` +
        `the stream): ${cause}`,
      { cause },
    );
  }
}

/**
 * Every builder call of an append met a conflict.
 *
 * @example
 * ```ts
 * import { AppendAttemptsExhaustedError } from "@impel/impel/eventstream";
 * const e = new AppendAttemptsExhaustedError("memory", 10);
 * console.log(e.attempts); // 10
 * ```
 */
export class AppendAttemptsExhaustedError extends ImpelError {
  /** How many times the builder was called. */
  readonly attempts: number;
  /** Creates the error. */
  constructor(storage: string, attempts: number, cause?: unknown) {
    super(
      "AppendAttemptsExhausted",
      `append to ${storage} conflicted ${attempts} times: other writers keep appending first`,
      { cause },
    );
    this.attempts = attempts;
  }
}

const NAME = /^([A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)-(\d+)$/;

interface Reified<E> {
  readonly key: string;
  readonly projection: Projection<E, unknown>;
  /** The name without its version: the snapshot's key. */
  readonly base: string;
  state: unknown;
  seq: number;
}

/**
 * Starts a service: loads snapshots, catches up in the background (`ready`).
 *
 * @example
 * ```ts
 * import { eventStream, memoryStorage } from "@impel/impel/eventstream";
 * type Event = { word: string; count: number };
 * const service = eventStream({
 *   storage: memoryStorage(),
 *   projections: {
 *     words: {
 *       name: "Words-1",
 *       initial: {} as Readonly<Record<string, number>>,
 *       apply: (s, e: Event) => ({ ...s, [e.word]: e.count }),
 *     },
 *   },
 * });
 * await service.ready;
 * const { result } = await service.append((state) => {
 *   const count = (state.words["hi"] ?? 0) + 1;
 *   return { events: [{ word: "hi", count }], result: count };
 * });
 * console.log(result); // 1
 * ```
 */
export function eventStream<E, S extends Record<string, unknown>>(
  options: EventStreamOptions<E, S>,
): EventStreamService<E, S> {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with storage and projections");
  }
  const { storage } = options;
  if (typeof storage?.read !== "function" || typeof storage.append !== "function") {
    throw new InvalidArgumentError("storage", "must be EventStorage (memoryStorage, fileStorage)");
  }
  const snapshots = options.snapshots === "storage" ? storage.snapshots : options.snapshots;
  if (options.snapshots === "storage" && snapshots === undefined) {
    throw new InvalidArgumentError(
      "snapshots",
      `is "storage", but ${storage.name} keeps no snapshots (it has no snapshots store)`,
    );
  }
  if (
    snapshots !== undefined &&
    (typeof snapshots?.load !== "function" || typeof snapshots.save !== "function")
  ) {
    throw new InvalidArgumentError("snapshots", 'must be "storage" or { load, save }');
  }
  const maxAttempts = checkInteger("maxAttempts", options.maxAttempts ?? 10, 1);
  const pageSize = checkInteger("pageSize", options.pageSize ?? 1000, 1);
  const conflictBackoff = backoff({
    initialDelayMs: 2,
    maxDelayMs: 50,
    jitter: 1,
    ...options.retry,
  });
  const refreshMs = options.refreshMs === undefined
    ? undefined
    : checkInteger("refreshMs", options.refreshMs, 1);
  if (options.projections === null || typeof options.projections !== "object") {
    throw new InvalidArgumentError("projections", "must be an object of projections");
  }
  const reified: Reified<E>[] = Object.entries(options.projections).map(([key, p]) => {
    const projection = p as Projection<E, unknown>;
    const m = NAME.exec(projection?.name);
    if (!m) {
      throw new InvalidArgumentError(
        `projections.${key}.name`,
        `must be Name-version (letters, digits, -), got ${JSON.stringify(projection?.name)}`,
      );
    }
    if (typeof projection.apply !== "function") {
      throw new InvalidArgumentError(`projections.${key}.apply`, "must be a function");
    }
    return { key, projection, base: m[1], state: projection.initial, seq: 0 };
  });
  const bases = new Set(reified.map((r) => r.base));
  if (bases.size !== reified.length) {
    throw new InvalidArgumentError("projections", "must have distinct names (without version)");
  }

  let sequence = 0;
  let isReady = false;
  let failed: unknown;
  let closed = false;
  let applied = 0;
  let refreshError: unknown;
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  let view: S | undefined;
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => {});
    return next;
  };

  const warn = (message: string) => {
    log.warn("{storage}: {message}", { storage: storage.name, message });
    options.onWarning?.(message);
  };

  const loadSnapshot = async (r: Reified<E>, last: number) => {
    const { projection } = r;
    if (!snapshots || !projection.load) return;
    const text = await snapshots.load(r.base);
    if (text === undefined) return;
    const ignore = (why: string) =>
      warn(`snapshot of ${projection.name} ignored (${why}): replaying the stream`);
    let parsed: { name?: unknown; seq?: unknown; state?: unknown };
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      return ignore(`it is not JSON: ${error}`);
    }
    if (parsed?.name !== projection.name) {
      return ignore(`it is of ${JSON.stringify(parsed?.name)}, another version`);
    }
    const seq = parsed.seq;
    if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0 || seq > last) {
      return ignore(`its sequence number ${seq} is not in the stream (at ${last})`);
    }
    try {
      r.state = projection.load(parsed.state);
      r.seq = seq;
    } catch (error) {
      return ignore(`load failed: ${error}`);
    }
  };

  const applyAll = (events: readonly StoredEvent[]) => {
    for (const { seq, event } of events) {
      for (const r of reified) {
        if (seq > r.seq) {
          r.state = r.projection.apply(r.state, event as E, seq);
          r.seq = seq;
        }
      }
      sequence = seq;
      applied++;
    }
    view = undefined;
  };

  /**
   * Reads up to the stream's end as of now (not until a read comes back empty, which another
   * writer that keeps appending could put off for ever).
   */
  const catchUp = async () => {
    const end = await storage.last();
    while (sequence < end) {
      const page = await storage.read(sequence, pageSize);
      if (page.length === 0) {
        throw new ImpelError(
          "StreamShrank",
          `${storage.name} ended at ${sequence} after saying its last event is ${end}`,
        );
      }
      applyAll(page);
    }
    refreshError = undefined;
  };

  // The next refresh is timed from the end of the last one, and goes through `serial` like every
  // other read, so refreshes never pile up nor overlap an append's catch-up.
  const scheduleRefresh = () => {
    if (refreshMs === undefined || closed) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = undefined;
      serial(async () => {
        if (!closed) await catchUp();
      }).catch((error) => {
        if (closed) return;
        refreshError = error;
        log.error("{storage}: background refresh failed: {error}", {
          storage: storage.name,
          error,
        });
      }).finally(scheduleRefresh);
    }, refreshMs);
  };

  const ready = serial(async () => {
    const last = await storage.last();
    for (const r of reified) await loadSnapshot(r, last);
    sequence = Math.min(...reified.map((r) => r.seq));
    await catchUp();
    isReady = true;
    scheduleRefresh();
  });
  ready.catch((error) => {
    failed = error;
    log.error("{storage}: catch-up failed: {error}", { storage: storage.name, error });
  });

  const state = (): S => {
    if (closed) throw new ImpelError("StreamClosed", `the event stream ${storage.name} is closed`);
    if (!isReady) throw new StreamNotReadyError(storage.name, failed);
    if (view === undefined) {
      view = Object.fromEntries(reified.map((r) => [r.key, r.state])) as S;
    }
    return view;
  };

  return {
    ready,
    get isReady() {
      return isReady;
    },
    get localState() {
      const current = state();
      if (refreshError !== undefined) throw new StreamRefreshError(storage.name, refreshError);
      return current;
    },
    get refreshError() {
      return refreshError;
    },
    get sequence() {
      return sequence;
    },
    get applied() {
      return applied;
    },
    currentState() {
      try {
        state();
      } catch (error) {
        return Promise.reject(error);
      }
      return serial(async () => {
        await catchUp();
        return state();
      });
    },
    append<R>(builder: Builder<E, S, R>): Promise<Appended<R>> {
      try {
        state();
        if (typeof builder !== "function") {
          throw new InvalidArgumentError("builder", "must be a function (state) => events");
        }
      } catch (error) {
        return Promise.reject(error);
      }
      return serial(async () => {
        let conflict: unknown;
        for (let attempt = 1; attempt <= maxAttempts; attempt++) {
          const decided = builder(state(), sequence);
          const events = Array.isArray(decided) ? decided : (decided as Append<E, R>)?.events;
          if (!Array.isArray(events)) {
            throw new InvalidArgumentError(
              "builder",
              "must return an array of events or { events, result }",
            );
          }
          const result =
            (Array.isArray(decided) ? undefined : (decided as Append<E, R>).result) as R;
          if (events.length === 0) {
            return { result, first: undefined, last: sequence, attempts: attempt };
          }
          // The events as every reader will decode them, so this state equals theirs.
          const copies = JSON.parse(JSON.stringify(events)) as unknown[];
          try {
            const last = await storage.append(sequence, events);
            const first = sequence + 1;
            applyAll(copies.map((event, i) => ({ seq: first + i, event })));
            // Appended right after `sequence`: the state is the stream's, whatever a refresh said.
            refreshError = undefined;
            return { result, first, last, attempts: attempt };
          } catch (error) {
            if (!(error instanceof AppendConflictError)) throw error;
            conflict = error;
            if (attempt < maxAttempts) await sleep(conflictBackoff.delay(attempt));
            await catchUp();
          }
        }
        throw new AppendAttemptsExhaustedError(storage.name, maxAttempts, conflict);
      });
    },
    saveSnapshots() {
      try {
        state();
      } catch (error) {
        return Promise.reject(error);
      }
      return serial(async () => {
        if (!snapshots) throw new InvalidArgumentError("snapshots", "no snapshot store was given");
        for (const r of reified) {
          if (!r.projection.save) continue;
          const text = JSON.stringify({
            name: r.projection.name,
            seq: r.seq,
            state: r.projection.save(r.state),
          });
          await snapshots.save(r.base, text);
        }
      });
    },
    close() {
      return serial(async () => {
        if (closed) return;
        closed = true;
        clearTimeout(refreshTimer);
        await storage.close();
      });
    },
  };
}
