/**
 * Replays MessageDB categories (or a set of streams) into a handler, or into a consumer group,
 * from a global position or from a point in time, at a limited rate, with progress, pause/resume
 * and cancel. Built on the MessageDB source and {@linkcode pipeline}: the replay is that source
 * read from the replay's start, through a gate ({@linkcode throttle}) that limits the rate and
 * pauses, into a streams sink running your handler; there is no second reader.
 *
 * - **Where it starts.** `from: { position }` is a global position (the first message read is the
 *   first of the categories at or after it); `from: { time }` is found with
 *   {@linkcode positionAtTime}: a binary search on `global_position` (the primary key), about 40
 *   index lookups whatever the table's size, instead of a scan of `messages.time`, which has no
 *   index. MessageDB stamps `time` with the writing transaction's start (`now()`), so times follow
 *   positions only up to the length of concurrent write transactions: a message whose
 *   transaction started before `time` but committed after a later one may fall either side.
 * - **Where it ends.** At the head of each category when the replay starts (its newest message +
 *   1): the replay is done once every category is read that far (`total` counts the events below
 *   it). Messages written meanwhile may be replayed too when they share the last page read.
 * - **Rate.** `rate` events per second, kept over the whole run (see {@linkcode throttle});
 *   batches are made small enough (a twentieth of a second's worth) for the limit to be smooth.
 * - **Progress.** {@linkcode Replay.progress}: done / total, events per second, ETA, state; a
 *   log line (`impel.replay`) every `statsIntervalMs` beside the sink's stats line; the sink's
 *   stats; and, given `metrics`, the pipeline's series under the replay's group plus the
 *   `impel_replay_*` gauges (`ImpelMetrics.addReplay`).
 * - **Groups and checkpoints.** Without `group` nothing durable is written: progress is kept in
 *   memory under the group `"impel-replay"`. With `group` (and its `checkpoints`), the replay
 *   runs as that group: it is refused with `PipelineRunningError` while a pipeline of the group
 *   runs (the store's running mark: a shared PostgreSQL advisory lock every MessageDB source
 *   holds while it runs, the lock `impel checkpoints set` checks), and holds the mark itself while
 *   it replays. The group's stored checkpoints are not touched while the replay runs; when it
 *   completes they are set to where it ended — if the group had none (a new group, which then
 *   carries on live from there), or if `resetCheckpoint` is true. A group that has checkpoints
 *   keeps them unless `resetCheckpoint` asks. **Cancelling (the signal) leaves every checkpoint
 *   as it was**, whatever was replayed. Stores without a running mark (memory) cannot tell
 *   whether the group runs elsewhere.
 * - **Streams.** `streams` replays only those streams: their categories are read and the other
 *   streams' events are passed over (the reading costs the whole categories').
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { replayMessageDb } from "@impel/impel/replay/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const replay = replayMessageDb({
 *   client: pool,
 *   categories: ["GuestStay"],
 *   from: { time: new Date(Date.now() - 3_600_000) }, // the last hour
 *   rate: 1_000,
 *   handler: (stream, events) => console.log(stream, events.length),
 *   statsIntervalMs: 0,
 * });
 * const result = await replay.done;
 * console.log(result.state, replay.progress().done); // "completed" ...
 * await pool.end();
 * ```
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, Position } from "../core/batch.ts";
import type { CheckpointKey, CheckpointScope, CheckpointStore } from "../core/checkpoints.ts";
import { InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import { pipeline, type PipelineRegistry } from "../core/pipeline.ts";
import type { StreamsSink, StreamsSinkOptions } from "../core/sink.ts";
import { checkCategory } from "../core/streamName.ts";
import { throttle } from "../core/throttle.ts";
import { memoryCheckpoints } from "../checkpoints/memory.ts";
import { MESSAGEDB_SOURCE, messageDbCheckpointKey, messageDbSource } from "../sources/messagedb.ts";
import { classifyMessageDbError } from "../stores/messagedb.ts";
import { type SqlClient, type SqlRow, toBigInt } from "../stores/sql.ts";

export { type Throttle, throttle, type ThrottleOptions } from "../core/throttle.ts";
export type { SqlClient, SqlRow } from "../stores/sql.ts";

const log = getLogger(["impel", "replay"]);

/** The group a replay without `group` runs as (its progress is kept in memory only). */
export const REPLAY_GROUP = "impel-replay";

/**
 * Where a replay starts: a global position, or the first message written at or after a time.
 *
 * @example
 * ```ts
 * import type { ReplayStart } from "@impel/impel/replay/messagedb";
 * const fromPosition: ReplayStart = { position: 1_200n };
 * const fromTime: ReplayStart = { time: new Date("2026-12-01T00:00:00Z") };
 * ```
 */
export type ReplayStart = { readonly position: Position } | { readonly time: Date };

/**
 * Options of {@linkcode replayMessageDb}: what to replay, from where, how fast, and the sink's
 * options (`handler`, concurrency, failure policy, ...).
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type MessageDbReplayOptions } from "@impel/impel/replay/messagedb";
 * import { postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * // Rebuild the "projector" group from position 1: its checkpoint moves to the end once done.
 * const options: MessageDbReplayOptions = {
 *   client: pool,
 *   categories: ["GuestStay"],
 *   from: { position: 1n },
 *   group: "projector",
 *   checkpoints: postgresCheckpoints(pool),
 *   resetCheckpoint: true,
 *   handler: () => {},
 * };
 * await pool.end();
 * ```
 */
export interface MessageDbReplayOptions extends Omit<StreamsSinkOptions, "group"> {
  /** A `pg.Pool` (or PGlite) with the MessageDB schema on its search path. */
  readonly client: SqlClient;
  /** The categories to replay (or give `streams`). */
  readonly categories?: readonly string[];
  /** Only these streams (their categories are read, other streams' events passed over). */
  readonly streams?: readonly string[];
  /** Where to start. */
  readonly from: ReplayStart;
  /** The consumer group to replay as (see the module's documentation); needs `checkpoints`. */
  readonly group?: string;
  /** Where `group`'s checkpoints are kept (`postgresCheckpoints(pool)`). */
  readonly checkpoints?: CheckpointStore;
  /** Set `group`'s existing checkpoints to where the replay ended, once it completes. */
  readonly resetCheckpoint?: boolean;
  /** Events per second at most (default: as fast as the handler goes). */
  readonly rate?: number;
  /** Messages per read (default 1000). */
  readonly batchSize?: number;
  /** The checkpoint key's `source` (default `"messagedb"`), as the group's source names it. */
  readonly sourceName?: string;
  /** Registers the replay's pipeline (and its progress gauges, if it can) there. */
  readonly metrics?: PipelineRegistry;
  /** Aborting it cancels the replay: stop, leave every checkpoint as it was. */
  readonly signal?: AbortSignal;
}

/**
 * How far a replay is.
 *
 * @example
 * ```ts
 * import type { ReplayProgress } from "@impel/impel/replay/messagedb";
 * const line = (p: ReplayProgress) =>
 *   `${p.done}/${p.total ?? "?"} ${(p.fraction * 100).toFixed(1)}% eta ${p.etaMs ?? "?"} ms`;
 * ```
 */
export interface ReplayProgress {
  /** `starting` (finding the start and the end), `running`, `paused`, or how it ended. */
  readonly state: "starting" | "running" | "paused" | "completed" | "cancelled" | "failed";
  /** Events handled so far. */
  readonly done: number;
  /** Events to replay (known once started). */
  readonly total: number | undefined;
  /** `done / total`, from 0 to 1 (1 once completed). */
  readonly fraction: number;
  /** Events per second so far, pauses excluded. */
  readonly eventsPerSecond: number;
  /** Time left at the rate so far, in ms (unknown before the first event). */
  readonly etaMs: number | undefined;
  /** Time replaying so far, pauses excluded, in ms. */
  readonly elapsedMs: number;
  /** The global position the replay starts from (known once started). */
  readonly from: Position | undefined;
  /** Where each category's replay ends (its head at the start). */
  readonly ends: ReadonlyMap<string, Position>;
}

/**
 * How a replay ended.
 *
 * @example
 * ```ts
 * import type { ReplayResult } from "@impel/impel/replay/messagedb";
 * const summary = (r: ReplayResult) => `${r.state}: ${r.done} events, checkpoints ${r.checkpoints}`;
 * ```
 */
export interface ReplayResult {
  /** `completed`: every category replayed to its end; `cancelled`: the signal stopped it. */
  readonly state: "completed" | "cancelled";
  /** Events handled. */
  readonly done: number;
  /**
   * What happened to the group's checkpoints: `none` (no group), `unchanged` (cancelled, or
   * existing and `resetCheckpoint` not asked), `created` (a new group), `reset`.
   */
  readonly checkpoints: "none" | "unchanged" | "created" | "reset";
  /** Where each category's replay ended (the group's checkpoints if `created` or `reset`). */
  readonly positions: ReadonlyMap<string, Position>;
}

/**
 * A running replay.
 *
 * @example
 * ```ts
 * import type { Replay } from "@impel/impel/replay/messagedb";
 * const pauseBriefly = async (r: Replay) => {
 *   r.pause();
 *   await new Promise((ok) => setTimeout(ok, 1000));
 *   r.resume();
 * };
 * ```
 */
export interface Replay {
  /** The group it runs as. */
  readonly group: string;
  /** Its sink: stats, monitor. */
  readonly sink: StreamsSink;
  /** Resolves when it completed or was cancelled; rejects if it failed. */
  readonly done: Promise<ReplayResult>;
  /** How far it is. */
  progress(): ReplayProgress;
  /** Stops letting events through (reading waits behind it) until `resume`. */
  pause(): void;
  /** Carries on after `pause`. */
  resume(): void;
}

/**
 * Replays MessageDB categories or streams; see the module's documentation.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { replayMessageDb } from "@impel/impel/replay/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const cancel = new AbortController();
 * const replay = replayMessageDb({
 *   client: pool,
 *   streams: ["GuestStay-42"],
 *   from: { position: 1n },
 *   handler: () => {},
 *   signal: cancel.signal,
 *   statsIntervalMs: 0,
 * });
 * cancel.abort(); // stops it; nothing durable was written
 * console.log((await replay.done).state); // "cancelled"
 * await pool.end();
 * ```
 */
export function replayMessageDb(options: MessageDbReplayOptions): Replay {
  const settings = checkOptions(options);
  const {
    client,
    categories: _c,
    streams: _s,
    from: _f,
    group: _g,
    checkpoints: store,
    resetCheckpoint,
    rate,
    batchSize: _b,
    sourceName: _n,
    metrics,
    signal,
    ...sinkOptions
  } = options;
  const { group, categories, sourceName } = settings;
  const stop = new AbortController();
  const runSignal = signal === undefined ? stop.signal : AbortSignal.any([signal, stop.signal]);
  const gate = throttle({ rate, signal: runSignal });
  const ends = new Map<string, Position>();
  let state: ReplayProgress["state"] = "starting";
  let from: Position | undefined;
  let total: number | undefined;
  let startedAt: number | undefined;
  let pausedAt: number | undefined;
  let pausedMs = 0;
  const progressMemory = memoryCheckpoints();
  let finished = () => false;
  // Small batches keep the rate smooth: a batch waits for the whole of its items' budget.
  const maxBatchItems = rate === undefined
    ? 100
    : Math.max(1, Math.min(100, Math.floor(rate / 20)));
  // The sink reads batches ahead of its calls (up to maxReadAhead of them), so a pause at the gate
  // alone would let those run on: each call waits for a pause too, and a cancel while paused
  // calls nothing more.
  const handle = (sinkOptions as { handler: (...args: unknown[]) => unknown }).handler;
  const handler = (...args: unknown[]) =>
    gate.paused
      ? gate.whilePaused().then(() => {
        if (runSignal.aborted) throw runSignal.reason;
        return handle(...args);
      })
      : handle(...args);
  const p = pipeline(
    {
      ...sinkOptions,
      handler,
      name: group,
      sourceName,
      metrics,
      checkpoints: progressMemory,
      source: ({ group, signal }) => {
        const source = messageDbSource({
          client,
          categories,
          group,
          sourceName,
          checkpoints: progressMemory,
          startFrom: "checkpoint",
          batchSize: settings.batchSize,
          maxBatchItems,
          tailSleepMs: 100,
          signal,
        });
        const until = untilEnds(ends, from!, settings.streams);
        finished = until.finished;
        const gated = source.pipeThrough(until.transform).pipeThrough(gate.transform);
        return Object.assign(gated, {
          heads: () => Promise.resolve(ends as ReadonlyMap<string, Position>),
          problems: () => source.problems?.() ?? [],
          group,
          sourceName,
        });
      },
    } as Parameters<typeof pipeline>[0],
  );

  // Progress gauges where the registry has them (createMetrics() does).
  const replays = metrics as
    | { addReplay?(group: string, replay: { progress(): ReplayProgress }): unknown }
    | undefined;
  if (typeof replays?.addReplay === "function") {
    replays.addReplay(group, { progress: () => progress() });
  }

  const elapsed = () =>
    startedAt === undefined ? 0 : (pausedAt ?? performance.now()) - startedAt - pausedMs;
  const progress = (): ReplayProgress => {
    const done = p.sink.stats().counters.handled;
    const ms = elapsed();
    const perSecond = ms > 0 ? (done / ms) * 1000 : 0;
    const fraction = state === "completed"
      ? 1
      : total === undefined || total === 0
      ? 0
      : Math.min(1, done / total);
    return {
      state,
      done,
      total,
      fraction,
      eventsPerSecond: perSecond,
      etaMs: total === undefined || perSecond === 0
        ? undefined
        : Math.max(0, ((total - done) / perSecond) * 1000),
      elapsedMs: ms,
      from,
      ends,
    };
  };

  const keys = categories.map((category) =>
    messageDbCheckpointKey(category, { group, sourceName })
  );
  const scope: CheckpointScope = { source: sourceName, group };
  const done = (async (): Promise<ReplayResult> => {
    let unhold: (() => Promise<void>) | undefined;
    let ticker: ReturnType<typeof setInterval> | undefined;
    try {
      from = "position" in options.from
        ? options.from.position
        : (await positionAtTime(client, options.from.time)).position;
      const existing = new Map<string, Position>();
      if (store !== undefined) {
        for (const key of keys) {
          const position = await store.load(key);
          if (position !== undefined) existing.set(key.tranche, position);
          // Rewrites what is there, refused while a pipeline of the group runs: the check.
          await store.resetUnlessRunning?.(scope, key, position);
        }
        unhold = await store.hold?.(scope);
      }
      for (const [category, head] of await categoryHeads(client, categories)) {
        ends.set(category, head);
      }
      total = await countEvents(client, categories, settings.streams, from, ends);
      for (const key of keys) await progressMemory.commit(key, from);
      if (runSignal.aborted) {
        await p.sink.stop();
        return await finish("cancelled", existing);
      }
      startedAt = performance.now();
      state = gate.paused ? "paused" : "running";
      if (gate.paused) pausedAt = startedAt;
      // Progress in the log at the sink's stats interval (0: none), beside its stats line.
      const every = sinkOptions.statsIntervalMs ?? 60_000;
      if (every > 0) {
        ticker = setInterval(() => {
          const p = progress();
          log.info(
            "replay {group}: {done}/{total} events ({percent}%), {rate}/s, ETA {eta} s{paused}",
            {
              group,
              done: p.done,
              total: p.total,
              percent: (p.fraction * 100).toFixed(1),
              rate: Math.round(p.eventsPerSecond),
              eta: p.etaMs === undefined ? "?" : Math.round(p.etaMs / 1000),
              paused: p.state === "paused" ? " (paused)" : "",
            },
          );
        }, every);
      }
      log.info("replaying {categories} as {group} from {from}: {total} events", {
        categories: categories.join(","),
        group,
        from: from.toString(),
        total,
      });
      await p.run({ signal: runSignal });
      if (runSignal.aborted || !finished()) return await finish("cancelled", existing);
      if (pausedAt !== undefined) pausedMs += performance.now() - pausedAt;
      pausedAt = undefined;
      // Our own mark would refuse our own reset: let go of it first.
      await unhold?.();
      unhold = undefined;
      return await finish("completed", existing);
    } catch (error) {
      state = "failed";
      await p.sink.stop().catch(() => {});
      throw error;
    } finally {
      clearInterval(ticker);
      await unhold?.().catch((error) =>
        log.warn("releasing the running mark of {group} failed: {error}", {
          group,
          error: errorText(error),
        })
      );
    }
  })();

  async function finish(
    how: "completed" | "cancelled",
    existing: ReadonlyMap<string, Position>,
  ): Promise<ReplayResult> {
    state = how;
    const positions = new Map<string, Position>();
    for (const key of keys) {
      const position = await progressMemory.load(key);
      if (position !== undefined) positions.set(key.tranche, position);
    }
    let checkpoints: ReplayResult["checkpoints"] = store === undefined ? "none" : "unchanged";
    if (how === "completed" && store !== undefined) {
      const created = existing.size === 0;
      if (created || resetCheckpoint === true) {
        for (const key of keys) {
          const position = positions.get(key.tranche) ?? from!;
          await writeCheckpoint(store, scope, key, position);
        }
        checkpoints = created ? "created" : "reset";
      }
    }
    return { state: how, done: p.sink.stats().counters.handled, checkpoints, positions };
  }

  return {
    group,
    sink: p.sink,
    done,
    progress,
    pause() {
      if (gate.paused) return;
      gate.pause();
      if (state === "running") {
        state = "paused";
        pausedAt = performance.now();
      }
    },
    resume() {
      if (!gate.paused) return;
      gate.resume();
      if (state === "paused") {
        state = "running";
        if (pausedAt !== undefined) pausedMs += performance.now() - pausedAt;
        pausedAt = undefined;
      }
    },
  };
}

async function writeCheckpoint(
  store: CheckpointStore,
  scope: CheckpointScope,
  key: CheckpointKey,
  position: Position,
): Promise<void> {
  if (store.resetUnlessRunning !== undefined) {
    await store.resetUnlessRunning(scope, key, position);
  } else await store.reset(key, position);
}

/**
 * Passes batches on until every category has been read to its end (or to the tail, should its
 * newest messages be deleted meanwhile), then closes, which stops the source; keeps only the
 * items of `streams` when given.
 */
function untilEnds(
  ends: ReadonlyMap<string, Position>,
  from: Position,
  streams: ReadonlySet<string> | undefined,
): { readonly transform: TransformStream<Batch, Batch>; finished(): boolean } {
  // ends is filled before the pipeline makes its source, so before this is made.
  const open = new Set([...ends].filter(([, end]) => end > from).map(([category]) => category));
  const transform = new TransformStream<Batch, Batch>({
    start(controller) {
      if (open.size === 0) controller.terminate();
    },
    transform(batch, controller) {
      const end = ends.get(batch.tranche);
      // A category already read to its end (or with nothing to replay) is still read by the
      // source while others go on: what is written to it meanwhile is not part of the replay.
      if (end !== undefined && !open.has(batch.tranche)) return;
      controller.enqueue(
        streams === undefined
          ? batch
          : { ...batch, items: batch.items.filter((item) => streams.has(item.stream)) },
      );
      if (end !== undefined && (batch.position >= end || batch.isTail)) open.delete(batch.tranche);
      if (open.size === 0) controller.terminate();
    },
  }, { highWaterMark: 16 });
  return { transform, finished: () => open.size === 0 };
}

/**
 * The first global position at or after which every message was written at or after `time`
 * (MessageDB's `messages.time`), found by a binary search on `global_position`: one primary-key
 * lookup per step, about 40 for a trillion positions; exact when `time` grows with the
 * position (see the module's note on concurrent writers). Past the newest message it is the
 * store's next position; before the oldest, the oldest's.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { positionAtTime } from "@impel/impel/replay/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const { position, lookups } = await positionAtTime(pool, new Date(Date.now() - 86_400_000));
 * console.log(position, lookups); // e.g. 1042n 11
 * await pool.end();
 * ```
 */
export async function positionAtTime(
  client: SqlClient,
  time: Date,
): Promise<{ readonly position: Position; readonly lookups: number }> {
  if (!(time instanceof Date) || Number.isNaN(time.getTime())) {
    throw new InvalidArgumentError("from.time", "must be a valid Date");
  }
  const bounds = await query(
    client,
    `SELECT min(global_position)::text AS lo, max(global_position)::text AS hi
       FROM message_store.messages`,
    [],
  );
  if (bounds[0].lo === null) return { position: 1n, lookups: 1 };
  // The smallest x whose first message at or after x was written at or after `time`.
  let lo = toBigInt(bounds[0].lo), hi = toBigInt(bounds[0].hi) + 1n;
  let lookups = 1;
  const at = `SELECT time >= ($2::timestamptz AT TIME ZONE 'UTC') AS after
                FROM message_store.messages WHERE global_position >= $1::bigint
               ORDER BY global_position LIMIT 1`;
  const iso = time.toISOString();
  while (lo < hi) {
    const mid = lo + (hi - lo) / 2n;
    const rows = await query(client, at, [mid.toString(), iso]);
    lookups++;
    // No message at or after mid (deleted meanwhile) counts as after: nothing to replay there.
    if (rows.length === 0 || rows[0].after === true) hi = mid;
    else lo = mid + 1n;
  }
  return { position: lo, lookups };
}

/** Each category's newest message + 1 (1 when it has none), through the category index. */
async function categoryHeads(
  client: SqlClient,
  categories: readonly string[],
): Promise<Map<string, Position>> {
  const heads = new Map<string, Position>();
  for (const category of categories) {
    const rows = await query(
      client,
      `SELECT global_position::text AS p FROM message_store.messages
        WHERE message_store.category(stream_name) = $1 ORDER BY global_position DESC LIMIT 1`,
      [category],
    );
    heads.set(category, rows.length === 0 ? 1n : toBigInt(rows[0].p) + 1n);
  }
  return heads;
}

/** The events to replay: of `categories` (or only `streams`) from `from` below each end. */
async function countEvents(
  client: SqlClient,
  categories: readonly string[],
  streams: ReadonlySet<string> | undefined,
  from: Position,
  ends: ReadonlyMap<string, Position>,
): Promise<number> {
  let total = 0;
  for (const category of categories) {
    const end = ends.get(category)!;
    if (end <= from) continue;
    const rows = streams === undefined
      ? await query(
        client,
        `SELECT count(*)::text AS n FROM message_store.messages
          WHERE message_store.category(stream_name) = $1
            AND global_position >= $2::bigint AND global_position < $3::bigint`,
        [category, from.toString(), end.toString()],
      )
      : await query(
        client,
        `SELECT count(*)::text AS n FROM message_store.messages
          WHERE stream_name = ANY($1::text[])
            AND global_position >= $2::bigint AND global_position < $3::bigint`,
        [
          [...streams].filter((s) => s.slice(0, s.indexOf("-")) === category),
          from.toString(),
          end
            .toString(),
        ],
      );
    total += Number(rows[0].n);
  }
  return total;
}

async function query(client: SqlClient, text: string, params: unknown[]): Promise<SqlRow[]> {
  try {
    return (await client.query(text, params)).rows;
  } catch (error) {
    throw classifyMessageDbError(error);
  }
}

interface Settings {
  readonly group: string;
  readonly categories: readonly string[];
  readonly streams: ReadonlySet<string> | undefined;
  readonly sourceName: string;
  readonly batchSize: number;
}

function checkOptions(options: MessageDbReplayOptions): Settings {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object");
  }
  if (typeof options.client?.query !== "function") {
    throw new InvalidArgumentError("client", "must have a query(text, params) method (a pg.Pool)");
  }
  const from = options.from as Partial<{ position: unknown; time: unknown }> | undefined;
  if (from === null || typeof from !== "object" || ("position" in from) === ("time" in from)) {
    throw new InvalidArgumentError("from", "must be { position } or { time }");
  }
  if ("position" in from && (typeof from.position !== "bigint" || from.position < 0n)) {
    throw new InvalidArgumentError("from.position", "must be a non-negative bigint");
  }
  if ("time" in from && (!(from.time instanceof Date) || Number.isNaN(from.time.getTime()))) {
    throw new InvalidArgumentError("from.time", "must be a valid Date");
  }
  let categories: string[];
  let streams: Set<string> | undefined;
  if (options.streams !== undefined) {
    if (options.categories !== undefined) {
      throw new InvalidArgumentError("streams", "and categories cannot both be given");
    }
    if (!Array.isArray(options.streams) || options.streams.length === 0) {
      throw new InvalidArgumentError("streams", "must be a non-empty array of stream names");
    }
    streams = new Set();
    for (const stream of options.streams) {
      const dash = typeof stream === "string" ? stream.indexOf("-") : -1;
      if (dash <= 0 || dash === stream.length - 1) {
        throw new InvalidArgumentError(
          "streams",
          `must hold stream names {category}-{id}, got ${JSON.stringify(stream)}`,
        );
      }
      streams.add(stream);
    }
    categories = [...new Set([...streams].map((s) => s.slice(0, s.indexOf("-"))))];
  } else {
    if (!Array.isArray(options.categories) || options.categories.length === 0) {
      throw new InvalidArgumentError("categories", "must be a non-empty array (or give streams)");
    }
    for (const category of options.categories) {
      try {
        checkCategory(category);
      } catch (error) {
        throw new InvalidArgumentError("categories", `must hold categories: ${errorText(error)}`);
      }
    }
    categories = [...new Set(options.categories)];
  }
  const group = options.group ?? REPLAY_GROUP;
  if (typeof group !== "string" || group.length === 0) {
    throw new InvalidArgumentError("group", "must be a non-empty string");
  }
  if (options.group !== undefined && typeof options.checkpoints?.load !== "function") {
    throw new InvalidArgumentError(
      "checkpoints",
      "must be the group's CheckpointStore when group is given (postgresCheckpoints(pool))",
    );
  }
  if (options.group === undefined && options.checkpoints !== undefined) {
    throw new InvalidArgumentError("checkpoints", "is only used with group");
  }
  if (options.resetCheckpoint !== undefined && options.group === undefined) {
    throw new InvalidArgumentError("resetCheckpoint", "needs group");
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new InvalidArgumentError("signal", "must be an AbortSignal");
  }
  const batchSize = options.batchSize ?? 1000;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1_000_000) {
    throw new InvalidArgumentError("batchSize", "must be an integer from 1 to 1 000 000");
  }
  const sourceName = options.sourceName ?? MESSAGEDB_SOURCE;
  if (typeof sourceName !== "string" || sourceName.length === 0) {
    throw new InvalidArgumentError("sourceName", "must be a non-empty string");
  }
  return { group, categories, streams, sourceName, batchSize };
}
