/**
 * Time for workflows: a {@linkcode Clock} that tests can drive ({@linkcode manualClock}), and
 * durable timers over any {@linkcode EventStore} ({@linkcode durableTimers}).
 *
 * - **Where timers live.** A timer is `{ id, due, stream }`. It is kept in one of `shards`
 *   streams of its own category (`{category}-{k}`, `k` a hash of the timer's `stream`, so one
 *   workflow instance's timers share a shard), written by a decider with rolling snapshots: a
 *   restart reads each shard's latest snapshot and what followed, on every store.
 * - **Scheduling is durable once it resolves.** {@linkcode DurableTimers.schedule} resolves after
 *   the timer's shard append; scheduling an id the shard already holds appends nothing.
 *   Schedules and removals that arrive while a shard's append is in flight go together in the
 *   next one, so a burst costs a few appends per shard, not one per timer.
 * - **Firing is at least once.** Once the clock reaches a timer's `due`, `fire` is called with
 *   it (at most `maxConcurrentFires` at once); when `fire` resolves the timer is removed from its
 *   shard. A crash between the two fires it again after the restart, so `fire` must be
 *   idempotent by the timer's id (the workflow runner's is: the instance records the firing). A
 *   `fire` that throws is logged and tried again after a backoff (`retry`), for as long as it
 *   takes; the failure shows in {@linkcode DurableTimers.stats}.
 * - **One process or several.** Every process running `durableTimers` over the same category
 *   fires every due timer; with an idempotent `fire` that only costs duplicate calls. Timers
 *   scheduled by another process are read from the shards at start and then every
 *   `reloadIntervalMs` (default 5 s, real time; 0: only at start), so a timer another process
 *   scheduled (and then, say, died) fires here at most that long after it is due.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createCodec } from "./codec.ts";
import { createDecider, createStateCache } from "./decider.ts";
import { checkInteger, checkNumber, describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import { backoff, errorText, type RetryOptions } from "./failure.ts";
import type { EventStore } from "./store.ts";
import { checkCategory, checkStreamName, type StreamName } from "./streamName.ts";
import { sleep } from "./tranches.ts";

/**
 * What time it is, and a way to wait for it: {@linkcode systemClock} in production,
 * {@linkcode manualClock} in tests.
 *
 * @example
 * ```ts
 * import { type Clock, systemClock } from "@impel/impel/workflow";
 * const clock: Clock = systemClock;
 * const before = clock.now();
 * await clock.sleep(5);
 * console.log(clock.now() - before >= 5); // true
 * ```
 *
 * @category Workflows
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves once `ms` have passed on this clock, or at once when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * The real clock: `Date.now()` and timers.
 *
 * @example
 * ```ts
 * import { systemClock } from "@impel/impel/workflow";
 * console.log(systemClock.now() > 0); // true
 * ```
 *
 * @category Workflows
 */
export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  sleep: (ms: number, signal?: AbortSignal) => sleep(ms, signal).then(() => {}),
});

/**
 * A clock that moves only when told to: sleepers wake when {@linkcode ManualClock.advance} or
 * {@linkcode ManualClock.set} reaches their deadline.
 *
 * @example
 * ```ts
 * import { manualClock } from "@impel/impel/workflow";
 * const clock = manualClock(1_000);
 * const woken = clock.sleep(500).then(() => clock.now());
 * clock.advance(499); // not yet
 * clock.advance(1);
 * console.log(await woken); // 1500
 * ```
 *
 * @category Workflows
 */
export interface ManualClock extends Clock {
  /** Moves the clock forward by `ms` (>= 0). */
  advance(ms: number): void;
  /** Moves the clock to `time`, which must not be earlier than now. */
  set(time: number): void;
}

/**
 * Creates a {@linkcode ManualClock} that starts at `start` ms since the epoch (default 0).
 *
 * @example
 * ```ts
 * import { manualClock } from "@impel/impel/workflow";
 * const clock = manualClock(Date.parse("2026-03-01T12:00:00Z"));
 * clock.advance(15 * 60_000);
 * console.log(new Date(clock.now()).toISOString()); // "2026-03-01T12:15:00.000Z"
 * ```
 *
 * @category Workflows
 */
export function manualClock(start = 0): ManualClock {
  let now = checkNumber("start", start, 0);
  const sleepers = new Set<{ at: number; wake: () => void }>();
  const moved = () => {
    for (const s of sleepers) if (s.at <= now) s.wake();
  };
  return {
    now: () => now,
    sleep(ms, signal) {
      checkNumber("ms", ms, 0);
      return new Promise<void>((resolve) => {
        if (signal?.aborted) return resolve();
        const sleeper = {
          at: now + ms,
          wake: () => {
            sleepers.delete(sleeper);
            signal?.removeEventListener("abort", sleeper.wake);
            resolve();
          },
        };
        if (sleeper.at <= now) return resolve();
        sleepers.add(sleeper);
        signal?.addEventListener("abort", sleeper.wake, { once: true });
      });
    },
    advance(ms) {
      now += checkNumber("ms", ms, 0);
      moved();
    },
    set(time) {
      now = checkNumber("time", time, now);
      moved();
    },
  };
}

/**
 * A durable timer: fire `id` for `stream` once the clock reaches `due`.
 *
 * @example
 * ```ts
 * import type { DurableTimer } from "@impel/impel/workflow";
 * const timer: DurableTimer = { id: "Fulfilment-o1#2", due: Date.now() + 60_000, stream: "Fulfilment-o1" };
 * ```
 *
 * @category Workflows
 */
export interface DurableTimer {
  /** Unique over everything the timers' category holds. */
  readonly id: string;
  /** When it is due, ms since the epoch. */
  readonly due: number;
  /** The stream it belongs to (which also picks its shard). */
  readonly stream: StreamName;
}

/**
 * Options of {@linkcode durableTimers}.
 *
 * @example
 * ```ts
 * import { durableTimers, type DurableTimersOptions, manualClock } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const options: DurableTimersOptions = {
 *   store: createMemoryStore(),
 *   category: "FulfilmentTimers",
 *   fire: (timer) => console.log("due:", timer.id),
 *   clock: manualClock(),
 *   shards: 8,
 *   maxConcurrentFires: 4,
 *   retry: { initialDelayMs: 500, maxDelayMs: 30_000 },
 * };
 * await durableTimers(options).stop();
 * ```
 *
 * @category Workflows
 */
export interface DurableTimersOptions {
  /** Where the shard streams are kept. */
  readonly store: EventStore;
  /** The shard streams' category (no `-`). */
  readonly category: string;
  /**
   * Called with each due timer; must be idempotent by `timer.id`. Returning `false` says the
   * timer was no longer wanted (cancelled or replaced meanwhile): it is counted as `stale`, not
   * `fired`.
   */
  readonly fire: (timer: DurableTimer) => Promise<void | boolean> | void | boolean;
  /** The clock due times are read on (default {@linkcode systemClock}). */
  readonly clock?: Clock;
  /**
   * Shard streams (default 16). Fixed for the life of the category: a timer's shard is a hash
   * of its stream modulo this. Each shard's state holds its pending timers, so raise it when
   * many are pending at once.
   */
  readonly shards?: number;
  /** Fires in flight at once (default 16). */
  readonly maxConcurrentFires?: number;
  /** Backoff between attempts of a failing `fire`, shard append or load (default 100 ms to 30 s). */
  readonly retry?: RetryOptions;
  /** Events between a shard's rolling snapshots (default 100). */
  readonly snapshotEvery?: number;
  /**
   * How often the shards are read again for timers other processes scheduled (default 5 000 ms
   * of real time; 0: only at start, so such a timer fires here only after a restart).
   */
  readonly reloadIntervalMs?: number;
}

/**
 * What {@linkcode DurableTimers.stats} reports.
 *
 * @example
 * ```ts
 * import { durableTimers, type TimerStats } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const timers = durableTimers({ store: createMemoryStore(), category: "T", fire: () => {} });
 * const stats: TimerStats = timers.stats();
 * console.log(stats.pending, stats.fired); // 0 0
 * await timers.stop();
 * ```
 *
 * @category Workflows
 */
export interface TimerStats {
  /** Timers known and not yet fired. */
  readonly pending: number;
  /** Fires in flight. */
  readonly firing: number;
  /** Fires that completed since the start (not counting `stale` ones). */
  readonly fired: number;
  /** Fires whose callback said the timer was no longer wanted (cancelled or replaced). */
  readonly stale?: number;
  /** Timers whose last fire failed and waits to be tried again. */
  readonly failing: number;
  /** The last error of a fire, shard append or load, if any failed. */
  readonly lastError?: unknown;
  /** Whether the shards have been loaded (timers set before the start fire only after). */
  readonly loaded: boolean;
  /** The earliest due time pending, if any. */
  readonly nextDue?: number;
}

/**
 * Running durable timers.
 *
 * @example
 * ```ts
 * import { durableTimers, manualClock } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const clock = manualClock();
 * const fired: string[] = [];
 * const timers = durableTimers({
 *   store: createMemoryStore(),
 *   category: "Reminders",
 *   clock,
 *   fire: (timer) => void fired.push(timer.id),
 * });
 * await timers.schedule({ id: "r1", due: 60_000, stream: "Invoice-7" });
 * clock.advance(60_000);
 * await timers.idle();
 * console.log(fired); // ["r1"]
 * await timers.stop();
 * ```
 *
 * @category Workflows
 */
export interface DurableTimers {
  /**
   * Records `timer` in its shard (nothing if the shard holds its id already) and resolves once
   * that is durable; it fires when due. Rejects if the shard append fails.
   */
  schedule(timer: DurableTimer): Promise<void>;
  /**
   * Forgets `timer` (by its `id`; its `stream` picks the shard) and removes it from its shard, so
   * a timer cancelled or replaced long before it is due holds no memory or shard space until
   * then; resolves once the removal is durable. Rejects if the shard append fails (the removal
   * is then tried again after a backoff). A fire already in flight is not stopped, so `fire`
   * must still tolerate a timer its owner no longer holds. Nothing for an unknown id.
   */
  cancel(timer: Pick<DurableTimer, "id" | "stream">): Promise<void>;
  /**
   * Resolves once the shards are loaded and no timer that is due on the clock now is waiting or
   * being fired (a timer whose fire failed is due again after its backoff).
   */
  idle(): Promise<void>;
  /** What is pending, firing and failing. */
  stats(): TimerStats;
  /** Stops firing; waits for fires in flight and the removals they queued. */
  stop(): Promise<void>;
}

type Shard =
  | { type: "TimersAdded"; data: { timers: DurableTimer[] } }
  | { type: "TimersRemoved"; data: { ids: string[] } }
  | { type: "TimersSnapshot"; data: { timers: DurableTimer[] } };

type ShardState = ReadonlyMap<string, DurableTimer>;

function parseTimer(value: unknown): DurableTimer {
  const t = value as Partial<DurableTimer> | null;
  if (
    typeof t?.id !== "string" || t.id.length === 0 || typeof t.stream !== "string" ||
    typeof t.due !== "number" || !Number.isFinite(t.due)
  ) {
    throw new TypeError(`a timer must be { id, due, stream }, got ${describe(value)}`);
  }
  return { id: t.id, due: t.due, stream: t.stream };
}

function listField(data: unknown, key: string): unknown[] {
  const value = (data as Record<string, unknown> | null)?.[key];
  if (!Array.isArray(value)) throw new TypeError(`${key} must be an array`);
  return value;
}

const shardCodec = createCodec<Shard>({
  TimersAdded: { parse: (d) => ({ timers: listField(d, "timers").map(parseTimer) }) },
  TimersRemoved: {
    parse: (d) => ({
      ids: listField(d, "ids").map((id) => {
        if (typeof id !== "string") throw new TypeError("ids must be strings");
        return id;
      }),
    }),
  },
  TimersSnapshot: { parse: (d) => ({ timers: listField(d, "timers").map(parseTimer) }) },
});

function foldShard(state: ShardState, events: readonly Shard[]): ShardState {
  if (events.length === 0) return state;
  const next = new Map(state);
  for (const e of events) {
    if (e.type === "TimersSnapshot") next.clear();
    if (e.type === "TimersRemoved") { for (const id of e.data.ids) next.delete(id); }
    else for (const t of e.data.timers) next.set(t.id, t);
  }
  return next;
}

const emptyShard: ShardState = new Map();

/** FNV-1a over UTF-16 code units: stable across processes and runtimes. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A min-heap of (at, timer) entries. */
interface Entry {
  readonly at: number;
  readonly timer: DurableTimer;
}

function push(heap: Entry[], entry: Entry): void {
  heap.push(entry);
  for (let i = heap.length - 1; i > 0;) {
    const parent = (i - 1) >> 1;
    if (heap[parent].at <= heap[i].at) break;
    [heap[parent], heap[i]] = [heap[i], heap[parent]];
    i = parent;
  }
}

function pop(heap: Entry[]): Entry | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length === 0 || last === undefined) return top;
  heap[0] = last;
  for (let i = 0;;) {
    const l = 2 * i + 1, r = l + 1;
    let m = i;
    if (l < heap.length && heap[l].at < heap[m].at) m = l;
    if (r < heap.length && heap[r].at < heap[m].at) m = r;
    if (m === i) break;
    [heap[m], heap[i]] = [heap[i], heap[m]];
    i = m;
  }
  return top;
}

// The system clock's loop re-checks at least this often, so a long wait never overflows a timer.
const MAX_SLEEP_MS = 60_000;

/**
 * Starts durable timers over `options.store`: loads the pending timers of every shard, then
 * fires each when due. See the module documentation for the guarantees.
 *
 * @example
 * ```ts
 * import { durableTimers } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const timers = durableTimers({
 *   store,
 *   category: "Reminders",
 *   fire: (timer) => console.log("remind", timer.stream),
 * });
 * await timers.schedule({ id: "r1", due: Date.now() + 10, stream: "Invoice-7" });
 * await timers.stop();
 * // A later process with the same store and category fires r1 when it is due.
 * ```
 *
 * @category Workflows
 */
export function durableTimers(options: DurableTimersOptions): DurableTimers {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with store, category and fire");
  }
  const { store, fire } = options;
  if (typeof store?.readStream !== "function" || typeof store.append !== "function") {
    throw new InvalidArgumentError("store", "must be an EventStore (readStream and append)");
  }
  if (typeof fire !== "function") {
    throw new InvalidArgumentError("fire", `must be a function, got ${describe(fire)}`);
  }
  const category = checkCategory(options.category);
  const clock = checkClock(options.clock ?? systemClock);
  const shards = checkInteger("shards", options.shards ?? 16, 1, 4096);
  const maxConcurrentFires = checkInteger(
    "maxConcurrentFires",
    options.maxConcurrentFires ?? 16,
    1,
  );
  const every = checkInteger("snapshotEvery", options.snapshotEvery ?? 100, 1);
  const reloadIntervalMs = checkNumber("reloadIntervalMs", options.reloadIntervalMs ?? 5_000, 0);
  const retry = backoff(options.retry);
  const log = getLogger(["impel", "timers", category]);
  const decider = createDecider<Shard, ShardState>({
    store,
    codec: shardCodec,
    initial: emptyShard,
    fold: foldShard,
    cache: createStateCache({ maxEntries: shards * 2 }),
    snapshot: {
      isOrigin: (e) => e.type === "TimersSnapshot",
      toSnapshot: (state) => ({ type: "TimersSnapshot", data: { timers: [...state.values()] } }),
      every,
    },
    // Shards are hot: a burst of appends from other processes must not fail a schedule.
    maxAttempts: 10,
  });
  const shardStream = (k: number): StreamName => `${category}-${k}`;
  const shardOf = (stream: StreamName) => hash(stream) % shards;

  const heap: Entry[] = [];
  const known = new Map<string, DurableTimer>(); // pending: scheduled or loaded, not yet fired
  const durable = new Set<string>(); // in their shard, as far as this process knows
  const firing = new Set<string>();
  const removing = new Set<string>(); // cancelled, their removal not yet appended
  let stale = 0; // heap entries of timers cancelled meanwhile
  const attempts = new Map<string, number>(); // failed fires per timer id
  const inFlight = new Set<Promise<void>>();
  let fired = 0;
  let staleFires = 0;
  let lastError: unknown;
  let loaded = false;
  let stopped = false;
  const stopSignal = new AbortController();
  let wake = new AbortController();
  const idleWaiters = new Set<() => void>();

  interface Queue {
    adds: Map<string, DurableTimer>;
    removes: Set<string>;
    waiters: { resolve: () => void; reject: (error: unknown) => void }[];
    running?: Promise<void>;
    failures: number;
  }
  const queues = new Map<number, Queue>();

  function enqueue(k: number, op: { add?: DurableTimer; remove?: string }): Promise<void> {
    let q = queues.get(k);
    if (q === undefined) {
      queues.set(k, q = { adds: new Map(), removes: new Set(), waiters: [], failures: 0 });
    }
    // The later of an add and a removal of one id wins.
    if (op.add) {
      q.adds.set(op.add.id, op.add);
      q.removes.delete(op.add.id);
    }
    if (op.remove !== undefined) {
      q.removes.add(op.remove);
      q.adds.delete(op.remove);
    }
    const queue = q;
    const done = new Promise<void>((resolve, reject) => queue.waiters.push({ resolve, reject }));
    queue.running ??= drain(k, queue);
    return done;
  }

  /** Appends what `q` holds, and what arrives meanwhile, until it is empty. */
  async function drain(k: number, q: Queue): Promise<void> {
    try {
      while (q.waiters.length > 0 || q.removes.size > 0) {
        const adds = [...q.adds.values()], removes = [...q.removes], waiters = q.waiters;
        q.adds = new Map();
        q.removes = new Set();
        q.waiters = [];
        try {
          let added: DurableTimer[] = [];
          await decider.transact(shardStream(k), (held) => {
            added = adds.filter((t) => !held.has(t.id));
            const fresh = new Set(added.map((t) => t.id));
            const ids = removes.filter((id) => held.has(id) || fresh.has(id));
            const events: Shard[] = [];
            if (added.length > 0) events.push({ type: "TimersAdded", data: { timers: added } });
            if (ids.length > 0) events.push({ type: "TimersRemoved", data: { ids } });
            return events;
          });
          q.failures = 0;
          for (const t of adds) durable.add(t.id);
          for (const id of removes) removing.delete(id);
          for (const t of added) {
            log.debug("timer {id} of {stream} scheduled, due {due}", {
              id: t.id,
              stream: t.stream,
              due: dueText(t.due),
              dueMs: t.due,
            });
          }
          for (const w of waiters) w.resolve();
        } catch (error) {
          lastError = error;
          q.failures++;
          for (const w of waiters) w.reject(error);
          log.warn("timer shard {shard} append failed (attempt {attempts}): {error}", {
            shard: shardStream(k),
            attempts: q.failures,
            error: errorText(error),
          });
          if (stopped) break;
          // Removals have no caller waiting: they go again after a backoff.
          for (const id of removes) q.removes.add(id);
          await sleep(retry.delay(q.failures), stopSignal.signal);
        }
      }
    } finally {
      // In the same synchronous step as the loop's last check: an enqueue after it starts anew.
      q.running = undefined;
    }
  }

  function remember(timer: DurableTimer, at = timer.due): void {
    known.set(timer.id, timer);
    push(heap, { at, timer });
    if (heap[0].timer === timer) wake.abort();
  }

  /** Reads every shard and remembers the timers this process does not know yet. */
  async function readShards(): Promise<void> {
    const all = await Promise.all(
      Array.from({ length: shards }, (_, k) => decider.query(shardStream(k), (s) => s)),
    );
    for (const shard of all) {
      for (const t of shard.values()) {
        durable.add(t.id);
        if (!known.has(t.id) && !firing.has(t.id) && !removing.has(t.id)) remember(t);
      }
    }
  }

  /** Pops the top entry, of a timer no longer pending. */
  function drop(): void {
    pop(heap);
    if (stale > 0) stale--;
  }

  /** Rebuilds the heap without the entries of timers no longer pending, once they are many. */
  function compact(): void {
    if (stale < 64 || stale * 2 < heap.length) return;
    const live = heap.filter((e) => known.get(e.timer.id) === e.timer);
    heap.length = 0;
    for (const e of live) push(heap, e);
    stale = 0;
  }

  async function load(): Promise<void> {
    for (let attempt = 1; !stopped; attempt++) {
      try {
        await readShards();
        loaded = true;
        return;
      } catch (error) {
        lastError = error;
        log.warn("loading timers of {category} failed (attempt {attempt}): {error}", {
          category,
          attempt,
          error: errorText(error),
        });
        await sleep(retry.delay(attempt), stopSignal.signal);
      }
    }
  }

  function start(entry: Entry): void {
    const { timer } = entry;
    firing.add(timer.id);
    const p = (async () => {
      try {
        if ((await fire(timer)) === false) staleFires++;
        else fired++;
        attempts.delete(timer.id);
        if (known.get(timer.id) === timer) known.delete(timer.id);
        durable.delete(timer.id);
        enqueue(shardOf(timer.stream), { remove: timer.id }).catch(() => {});
      } catch (error) {
        lastError = error;
        const attempt = (attempts.get(timer.id) ?? 0) + 1;
        attempts.set(timer.id, attempt);
        log.warn("timer {id} of {stream} failed to fire (attempt {attempt}): {error}", {
          id: timer.id,
          stream: timer.stream,
          attempt,
          error: errorText(error),
        });
        if (known.get(timer.id) === timer) {
          push(heap, { at: clock.now() + retry.delay(attempt), timer });
        }
      } finally {
        firing.delete(timer.id);
        wake.abort();
      }
    })();
    inFlight.add(p);
    p.finally(() => inFlight.delete(p));
  }

  function isIdle(): boolean {
    if (!loaded || firing.size > 0) return false;
    const now = clock.now();
    // Entries of timers fired or superseded meanwhile are left in the heap until they surface.
    while (heap.length > 0 && known.get(heap[0].timer.id) !== heap[0].timer) drop();
    return heap.length === 0 || heap[0].at > now;
  }

  function notifyIdle(): void {
    if (idleWaiters.size === 0 || !isIdle()) return;
    for (const resolve of idleWaiters) resolve();
    idleWaiters.clear();
  }

  const loop = (async () => {
    await load();
    while (!stopped) {
      const now = clock.now();
      while (heap.length > 0 && heap[0].at <= now && firing.size < maxConcurrentFires) {
        if (known.get(heap[0].timer.id) !== heap[0].timer) {
          drop();
          continue;
        }
        const entry = pop(heap)!;
        if (firing.has(entry.timer.id)) continue;
        start(entry);
      }
      notifyIdle();
      if (stopped) break;
      wake = new AbortController();
      const next = firing.size >= maxConcurrentFires ? undefined : heap[0]?.at;
      const wait = next === undefined ? MAX_SLEEP_MS : Math.min(MAX_SLEEP_MS, next - now);
      await clock.sleep(Math.max(0, wait), AbortSignal.any([wake.signal, stopSignal.signal]));
    }
  })();
  loop.catch((error) => log.error("timers of {category} stopped: {error}", { category, error }));

  // Timers other processes schedule after this one loaded reach it here.
  const reloader = reloadIntervalMs === 0 ? Promise.resolve() : (async () => {
    while (!stopped) {
      await sleep(reloadIntervalMs, stopSignal.signal);
      if (stopped) break;
      if (!loaded) continue;
      try {
        await readShards();
      } catch (error) {
        lastError = error;
        log.warn("reloading timers of {category} failed: {error}", {
          category,
          error: errorText(error),
        });
      }
    }
  })();
  reloader.catch(() => {});

  return {
    async schedule(timer) {
      const t = checkTimer(timer);
      if (stopped) {
        throw new ImpelError("TimersStopped", `timers of ${category}: schedule() after stop()`);
      }
      if (!known.has(t.id) && !firing.has(t.id)) remember(t);
      if (durable.has(t.id)) return;
      await enqueue(shardOf(t.stream), { add: t });
    },
    async cancel(timer) {
      if (timer === null || typeof timer !== "object") {
        throw new InvalidArgumentError("timer", `must be { id, stream }, got ${describe(timer)}`);
      }
      if (typeof timer.id !== "string" || timer.id.length === 0) {
        throw new InvalidArgumentError(
          "timer.id",
          `must be a non-empty string, got ${describe(timer.id)}`,
        );
      }
      const stream = checkStreamName(timer.stream);
      if (stopped) {
        throw new ImpelError("TimersStopped", `timers of ${category}: cancel() after stop()`);
      }
      if (known.delete(timer.id)) {
        stale++;
        compact();
      }
      attempts.delete(timer.id);
      durable.delete(timer.id);
      removing.add(timer.id);
      wake.abort(); // the loop's next wait may now be later
      await enqueue(shardOf(stream), { remove: timer.id });
    },
    idle() {
      if (isIdle()) return Promise.resolve();
      return new Promise<void>((resolve) => {
        idleWaiters.add(resolve);
        wake.abort();
      });
    },
    stats() {
      isIdle(); // drops the superseded entries at the top, so nextDue is a pending timer's
      return {
        pending: known.size,
        firing: firing.size,
        fired,
        ...(staleFires === 0 ? {} : { stale: staleFires }),
        failing: attempts.size,
        ...(lastError === undefined ? {} : { lastError }),
        loaded,
        ...(heap.length === 0 ? {} : { nextDue: heap[0].at }),
      };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      stopSignal.abort();
      await loop.catch(() => {});
      await reloader.catch(() => {});
      await Promise.all(inFlight);
      // The removals the last fires queued go out once; a timer whose removal fails fires again
      // after the next start, which its idempotent fire absorbs.
      await Promise.all([...queues.values()].map((q) => q.running));
    },
  };
}

/**
 * Returns `clock` if it has `now` and `sleep`; else throws {@linkcode InvalidArgumentError}.
 *
 * @example
 * ```ts
 * import { checkClock, systemClock } from "./timers.ts";
 * console.log(checkClock(systemClock) === systemClock); // true
 * ```
 */
export function checkClock(clock: Clock): Clock {
  if (typeof clock?.now !== "function" || typeof clock.sleep !== "function") {
    throw new InvalidArgumentError("clock", "must be a Clock ({ now(), sleep(ms, signal) })");
  }
  return clock;
}

function checkTimer(timer: DurableTimer): DurableTimer {
  if (timer === null || typeof timer !== "object") {
    throw new InvalidArgumentError("timer", `must be { id, due, stream }, got ${describe(timer)}`);
  }
  if (typeof timer.id !== "string" || timer.id.length === 0) {
    throw new InvalidArgumentError(
      "timer.id",
      `must be a non-empty string, got ${describe(timer.id)}`,
    );
  }
  checkNumber("timer.due", timer.due, 0);
  checkStreamName(timer.stream);
  return { id: timer.id, due: timer.due, stream: timer.stream };
}

/** A due time for logs: ISO 8601 when it is a date, else the number (a manual clock's). */
function dueText(due: number): string {
  const date = new Date(due);
  return Number.isNaN(date.getTime()) ? String(due) : date.toISOString();
}
