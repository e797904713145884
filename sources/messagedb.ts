/**
 * Reads categories of a MessageDB store (Eventide's PostgreSQL message store) as impel batches:
 * an adapter over the paged-tranche reader of `core/reader.ts`, which owns the start policy, the
 * announcement of each category, the tail rule, the prefetch, the tail sleep and the retries.
 *
 * - Each category is a tranche, read in pages with `get_category_messages` from its checkpoint.
 *   An event's `index` is its stream position; a batch's checkpoint position is the last global
 *   position read + 1, i.e. the next global position to read.
 * - A page (`batchSize`, default 1000 messages per query) is handed on as batches of at most
 *   `maxBatchItems` (default 100) messages, each checkpointing right after its last message, so
 *   that a slow handler completes and commits a batch long before it would complete a page.
 * - Checkpoints are kept in a {@linkcode CheckpointStore} under
 *   `{ source: "messagedb", tranche: <category>, group }`; with a consumer group the tranche is
 *   `<category>-<member>/<size>`, which no category can be (a category never contains `-`), so a
 *   member's checkpoint never shares a row with a category's. Each member has its own position,
 *   and changing the group size starts members without a checkpoint afresh per
 *   `whenNoCheckpoint`. A checkpoint left under the key of impel 0.1 (`<category>:<member>/<size>`)
 *   is not taken over silently: the source refuses to start until it is moved or removed.
 * - At start a stored checkpoint is compared with the store's head: the global-position
 *   sequence's last value + 1, or the last row's + 1 if higher (rows inserted past the sequence),
 *   so that deleting the newest messages (retention, erasure) does not lower it; the sequence
 *   never hands out a deleted position again. One beyond the head would skip the messages
 *   written next, so the source fails with {@linkcode CheckpointPastTailError} (or, with
 *   `checkpointPastTail: "warn"`, logs it and reads). A tail start reads from the head too (a
 *   write still in flight when the source starts may hold a position below it, and is not
 *   read: it began before the start). Without the privilege to read the sequence, the head is
 *   the last row's position + 1.
 * - A static split (`split: { member, size }`) uses MessageDB's own `consumer_group_member` /
 *   `consumer_group_size`, which split a category by a hash of each stream's cardinal id, so N
 *   instances share a category and every stream is handled by exactly one of them. (`group` is
 *   the consumer's name, the same for all N; the split says which share this instance reads.)
 * - Batches are marked `gapsAreFinal`: a category is read in global-position order, so a stream's
 *   message can never arrive after a later one of the same stream; a gap in a stream's positions
 *   (a deleted message) is permanent and goes to the scheduler's gap policy at once.
 * - A message whose stream name has no id (`Cat`, `Cat-`), which `write_message` accepts but the
 *   store of `stores/messagedb.ts` refuses to write, or whose data does not decode, reaches the
 *   scheduler as an item marked `invalid` ({@linkcode InvalidStreamNameError}, the JSON error):
 *   the failure policy of that stream decides, the handler never sees it, and others carry on.
 * - At the tail the reader sleeps `tailSleepMs`, or, given `notifications` and the opt-in
 *   trigger of {@linkcode installNotifyTrigger}, wakes within milliseconds of an append.
 * - Query failures that look transient (lost connections, server restarts) are logged and
 *   retried with backoff (`retry`) from the same position; other failures error the stream.
 *   A category whose reads keep failing shows in the stream's `problems()`.
 *
 * **Reliance on `write_message`'s category lock.** Reading by global position is only safe if
 * a category's rows become visible in global-position order. MessageDB's `write_message` takes an
 * advisory lock on the category (`acquire_lock`) for the rest of its transaction, which makes it
 * so. Rows written around it (a plain `INSERT`, `COPY`, a restore into a live table) can commit
 * out of order: a reader that has passed a higher position never goes back, and skips the lower
 * row for good. Write through `write_message` (as `stores/messagedb.ts` does), or stop readers
 * while loading in bulk.
 *
 * The connection's `search_path` must include `message_store` (see `stores/messagedb.ts`).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { BatchItem, ObservableSource, Position } from "../core/batch.ts";
import type { CheckpointKey, CheckpointStore } from "../core/checkpoints.ts";
import {
  checkLeaseFence,
  checkLeaseTiming,
  type LeaseSnapshot,
  type LeaseStore,
} from "../core/lease.ts";
import { leasedSource } from "../core/leased.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { type StreamEvent, utf8Length } from "../core/event.ts";
import { errorText, type RetryOptions } from "../core/failure.ts";
import { pagedSource, type ReadPage } from "../core/reader.ts";
import { checkCategory, InvalidStreamNameError } from "../core/streamName.ts";
import { retentionHorizon } from "../retention/postgres.ts";
import { classifyMessageDbError, MESSAGE_COLUMNS, messageRowToEvent } from "../stores/messagedb.ts";
import {
  isTransientSqlError,
  type NotificationSource,
  type SqlClient,
  sqlIdentifier,
  type SqlRow,
  toBigInt,
} from "../stores/sql.ts";

export { CheckpointPastTailError } from "../core/reader.ts";
export type { LeaseSnapshot, LeaseStore } from "../core/lease.ts";
export {
  type ListeningClient,
  type ListeningPool,
  type NotificationSource,
  type PoolNotificationOptions,
  type PoolNotifications,
  poolNotifications,
  type SqlClient,
} from "../stores/sql.ts";

const log = getLogger(["impel", "messagedb"]);
/** The streams sink's default stopTimeoutMs, which lease timing must leave room for. */
const SINK_STOP_TIMEOUT_MS = 10_000;

/**
 * The checkpoint key's `source` unless overridden with `sourceName`.
 *
 * @example
 * ```ts
 * import { MESSAGEDB_SOURCE } from "@impel/impel/sources/messagedb";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const checkpoints = memoryCheckpoints();
 * const key = { source: MESSAGEDB_SOURCE, tranche: "GuestStay", group: "reactor" };
 * await checkpoints.commit(key, 8n);
 * // Every category the "reactor" group of a messageDbSource has committed:
 * const saved = await checkpoints.list(MESSAGEDB_SOURCE, "reactor");
 * console.log(saved.map((c) => `${c.tranche}@${c.position}`)); // ["GuestStay@8"]
 * ```
 */
export const MESSAGEDB_SOURCE = "messagedb";

/**
 * The NOTIFY channel used unless overridden.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { DEFAULT_NOTIFY_CHANNEL, poolNotifications } from "@impel/impel/sources/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const notifications = poolNotifications(pool);
 * // With installNotifyTrigger's default channel, each write notifies its category here.
 * const stop = await notifications.listen(DEFAULT_NOTIFY_CHANNEL, (category) => {
 *   console.log(category);
 * });
 * await stop();
 * await notifications.close();
 * await pool.end();
 * ```
 */
export const DEFAULT_NOTIFY_CHANNEL = "impel_messagedb";

/**
 * Where to start reading.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type MessageDbStart, messageDbSource } from "@impel/impel/sources/messagedb";
 * import { postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * // Skip the backlog: read only what is written from now on, whatever the checkpoint says.
 * const startFrom: MessageDbStart = "tail";
 * const batches = messageDbSource({
 *   client: pool,
 *   categories: ["GuestStay"],
 *   group: "notifier",
 *   checkpoints: postgresCheckpoints(pool),
 *   startFrom,
 * });
 * await batches.cancel();
 * await pool.end();
 * ```
 */
export type MessageDbStart = "checkpoint" | "start" | "tail";

/**
 * A static split of the categories among `size` instances of one consumer: this instance reads
 * the share of member `member` in `[0, size)` (MessageDB's consumer group member and size).
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type StaticSplit, messageDbSource } from "@impel/impel/sources/messagedb";
 * import { postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * // Instance 1 of 3 sharing the category: each stream is handled by exactly one of them.
 * const split: StaticSplit = { member: 1, size: 3 };
 * const batches = messageDbSource({
 *   client: pool,
 *   categories: ["GuestStay"],
 *   group: "reactor",
 *   checkpoints: postgresCheckpoints(pool), // kept under tranche "GuestStay-1/3"
 *   split,
 * });
 * await batches.cancel();
 * await pool.end();
 * ```
 */
export interface StaticSplit {
  /** This instance's 0-based member number. */
  readonly member: number;
  /** How many instances share the categories. */
  readonly size: number;
}

/**
 * A consumer group with leases: each category is split into `slots` hash slots (slot `s` holds
 * the streams MessageDB's `consumer_group_member = s, consumer_group_size = slots` gives), each a
 * tranche under the checkpoint key `<category>-<s>/<slots>` (the key of static member `s` of
 * `slots`, so a static group of that size can move to leases keeping its checkpoints). Members
 * of the same `group` and `sourceName` share the slots fairly, whatever their number: start or
 * stop members at any time. A slot moves only after its old owner's calls have ended and its
 * lease was released or lapsed; commits carry the lease as a fence, so a member that lost a
 * slot cannot move its checkpoint. Every member must name the same categories and `slots`.
 *
 * Timing (see `core/lease.ts`): a member that has not renewed a lease for
 * `durationMs − handoverMs` stops starting calls on the slot and revokes it, leaving
 * `handoverMs` for the calls in flight and the final commit — so `handoverMs` must be at least
 * twice the sink's `stopTimeoutMs`, which the source is told as `stopTimeoutMs` (default: the
 * sink's default, 10 s; the defaults are then 30 s / 3.3 s / 20 s). A dead member's slots are taken
 * over within `durationMs + heartbeatMs`; a stopped member's, within a heartbeat. A revocation
 * that abandoned calls still running keeps renewing the slot's lease until they end, then
 * releases it.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { run, streamsSink } from "@impel/impel";
 * import { type MessageDbLeaseOptions, messageDbSource } from "@impel/impel/sources/messagedb";
 * import { initPostgresCheckpoints, postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * import { initPostgresLeases, postgresLeases } from "@impel/impel/leases/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresCheckpoints(pool);
 * await initPostgresLeases(pool);
 * const leases: MessageDbLeaseOptions = { store: postgresLeases(pool), slots: 12, stopTimeoutMs: 2_000 };
 * const stop = new AbortController();
 * const source = messageDbSource({
 *   client: pool,
 *   categories: ["GuestStay"],
 *   group: "reactor",
 *   checkpoints: postgresCheckpoints(pool), // fenced against the lease table
 *   leases,
 *   signal: stop.signal,
 * });
 * const sink = streamsSink({ group: "reactor", handler: () => {}, stopTimeoutMs: 2_000 });
 * const running = run(source, sink, { signal: stop.signal });
 * console.log(source.leases()?.held.map((h) => h.unit)); // the slots this member holds
 * stop.abort();
 * await running;
 * await source.released; // the others take this member's slots at their next heartbeat
 * await pool.end();
 * ```
 */
export interface MessageDbLeaseOptions {
  /** Where the leases are kept (`postgresLeases(pool)` in the same database as checkpoints). */
  readonly store: LeaseStore;
  /** Hash slots per category (default 12, at most 32 767); fixed for the life of the group. */
  readonly slots?: number;
  /** This member's id (default: a random UUID per start). */
  readonly member?: string;
  /** How long a lease lasts unless renewed (default 30 000 ms: `3 × stopTimeoutMs`, at least 10 000). */
  readonly durationMs?: number;
  /**
   * How often leases are renewed (default `durationMs / 5`, at most `(durationMs − handoverMs) /
   * 3`, so that one failed or hung heartbeat loses nothing).
   */
  readonly heartbeatMs?: number;
  /**
   * How long before expiry a member that cannot renew must have let go (default the larger of
   * `durationMs / 2` and `2 × stopTimeoutMs`); less than `2 × stopTimeoutMs` is refused with a
   * `LeaseTimingError`.
   */
  readonly handoverMs?: number;
  /**
   * The `stopTimeoutMs` of the streams sink this source feeds (default 10 000, the sink's
   * default): a revocation waits that long for calls in flight and as long again for the final
   * commit, so `handoverMs` must be at least twice it.
   */
  readonly stopTimeoutMs?: number;
}

/**
 * What {@linkcode messageDbSource} returns: the batches, with `problems()` for health, and, for a
 * consumer group with leases, who holds what.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type MessageDbSource, messageDbSource } from "@impel/impel/sources/messagedb";
 * import { postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const source: MessageDbSource = messageDbSource({
 *   client: pool, categories: ["GuestStay"], group: "g", checkpoints: postgresCheckpoints(pool),
 * });
 * console.log(source.leases()); // undefined: no leases
 * await source.cancel();
 * await pool.end();
 * ```
 */
export type MessageDbSource = ObservableSource & {
  /** With leases: this member's leases, their ages, the live members, hand-overs and losses. */
  leases(): LeaseSnapshot | undefined;
  /**
   * Resolves once the source has stopped and, with leases, revoked and released every slot
   * (await it before exiting, so that the others take over at once); at once without leases.
   */
  readonly released: Promise<void>;
  /**
   * The head of each tranche it reads (with leases: each slot it holds): its newest message's
   * global position + 1, what its checkpoint holds once caught up. Metrics, health and
   * `awaitCompletion({ tail: true })` use it without being told.
   */
  heads(): Promise<ReadonlyMap<string, Position>>;
};

/**
 * Options of {@linkcode messageDbSource}.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { run, streamsSink } from "@impel/impel";
 * import {
 *   type MessageDbSourceOptions,
 *   messageDbSource,
 *   poolNotifications,
 * } from "@impel/impel/sources/messagedb";
 * import { initPostgresCheckpoints, postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({
 *   connectionString: "postgres://postgres@127.0.0.1/impel_test",
 *   options: "-c search_path=message_store,public",
 * });
 * await initPostgresCheckpoints(pool);
 * const notifications = poolNotifications(pool);
 * const stop = new AbortController();
 * const options: MessageDbSourceOptions = {
 *   client: pool,
 *   categories: ["GuestStay", "Invoice"],
 *   group: "reactor",
 *   checkpoints: postgresCheckpoints(pool),
 *   batchSize: 500,
 *   whenNoCheckpoint: "tail",
 *   notifications, // needs installNotifyTrigger(pool); else polled every tailSleepMs
 *   tailSleepMs: 2000,
 *   signal: stop.signal,
 * };
 * const sink = streamsSink({
 *   group: "reactor",
 *   handler: (stream, events) => console.log(stream, events.length),
 * });
 * const running = run(messageDbSource(options), sink, { signal: stop.signal });
 * // ... on shutdown
 * stop.abort();
 * await running;
 * await notifications.close();
 * await pool.end();
 * ```
 */
export interface MessageDbSourceOptions {
  /** A `pg.Pool` or PGlite database with the MessageDB schema on its search path. */
  readonly client: SqlClient;
  /** The categories to read, each a tranche (a category has no `-`). */
  readonly categories: readonly string[];
  /** The consumer group name the checkpoints are kept under. */
  readonly group: string;
  /** Where checkpoints are loaded from and committed to. */
  readonly checkpoints: CheckpointStore;
  /** The checkpoint key's `source` (default `"messagedb"`). */
  readonly sourceName?: string;
  /** Messages per `get_category_messages` call (default 1000). */
  readonly batchSize?: number;
  /**
   * Largest batch handed on, in messages (default 100): a page is split into batches of at most
   * this many, each checkpointing right after its last message. Smaller batches complete (and
   * commit) sooner under a slow handler; the cost is a few microseconds per batch.
   */
  readonly maxBatchItems?: number;
  /**
   * Read only this instance's share of each category, of a fixed number of instances (or see
   * `leases`). Called `consumerGroup` in 0.1, a name too close to `group`: that name is
   * refused, naming this one.
   */
  readonly split?: StaticSplit;
  /**
   * Share the categories with whichever members of `group` are running, through leases on hash
   * slots (instead of `split`); needs a `fenced` checkpoint store. See
   * {@linkcode MessageDbLeaseOptions}.
   */
  readonly leases?: MessageDbLeaseOptions;
  /**
   * `"checkpoint"` (default): resume from the stored checkpoint, or per `whenNoCheckpoint` if
   * there is none; `"start"`: from the first message, ignoring any checkpoint; `"tail"`: from
   * the current end, ignoring any checkpoint (the new position is committed straight away).
   */
  readonly startFrom?: MessageDbStart;
  /** Where `"checkpoint"` starts when nothing is stored: `"start"` (default) or `"tail"`. */
  readonly whenNoCheckpoint?: "start" | "tail";
  /**
   * A stored checkpoint beyond the store's head (set by hand, or from another database) would
   * skip the messages written next: `"error"` (default) fails the source at start with
   * {@linkcode CheckpointPastTailError}, `"warn"` logs it and reads from it. The same choice
   * applies to a consumer-group checkpoint left under impel 0.1's key.
   */
  readonly checkpointPastTail?: "error" | "warn";
  /**
   * Read the retention horizons that `postgresRetention` (`@impel/impel/retention/postgres`)
   * keeps in `schema` (default `impel`), and say what happens to a reader below one: a category
   * whose position is below the highest global position retention removed + 1 may have missed
   * events. Checked after each page, so a removal that races a read is seen. `"fail"` (default)
   * errors the source with {@linkcode BelowRetentionHorizonError}; `"warn"` logs it and reads on
   * from the oldest retained event. A reader with no checkpoint (starting from the beginning)
   * is not below the horizon: it starts from the oldest retained event either way. Without this
   * option horizons are not read.
   */
  readonly retention?: { readonly schema?: string; readonly belowHorizon?: "fail" | "warn" };
  /** How long to wait at the tail before reading again (default 1000 ms). */
  readonly tailSleepMs?: number;
  /**
   * Wake the reader as soon as messages are appended: a PGlite database, or
   * `poolNotifications(pool)` for a `pg.Pool`. Needs {@linkcode installNotifyTrigger}; the tail
   * sleep remains the fallback.
   */
  readonly notifications?: NotificationSource;
  /** The channel the trigger notifies (default `"impel_messagedb"`). */
  readonly notifyChannel?: string;
  /** Backoff between retries of a failed read (default 100 ms doubling to 5 s). */
  readonly retry?: RetryOptions;
  /** @deprecated Use `retry.initialDelayMs`; read only when `retry` is not given. */
  readonly retryMinMs?: number;
  /** @deprecated Use `retry.maxDelayMs`; read only when `retry` is not given. */
  readonly retryMaxMs?: number;
  /** Aborting stops reading and closes the stream. */
  readonly signal?: AbortSignal;
}

/**
 * A source over MessageDB categories: a `ReadableStream` of batches, each with a `commit` that
 * records its position in `checkpoints`. Reading waits while the consumer is not pulling
 * (backpressure). The stream closes when `signal` aborts or the consumer cancels it.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { messageDbSource, poolNotifications } from "@impel/impel/sources/messagedb";
 * import { initPostgresCheckpoints, postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresCheckpoints(pool);
 * const controller = new AbortController();
 * const batches = messageDbSource({
 *   client: pool,
 *   categories: ["GuestStay"],
 *   group: "reactor",
 *   checkpoints: postgresCheckpoints(pool),
 *   notifications: poolNotifications(pool),
 *   signal: controller.signal,
 * });
 * for await (const batch of batches) {
 *   console.log(batch.tranche, batch.items.length, batch.position);
 *   await batch.commit?.(batch.position);
 * }
 * ```
 */
export function messageDbSource(options: MessageDbSourceOptions): MessageDbSource {
  const settings = checkOptions(options);
  const { client } = options;
  // Each tranche is a category, or one part of it: a static member's, or a leased hash slot.
  const parts = new Map<string, Part>();
  const leased = settings.slots !== undefined;
  for (const category of settings.categories) {
    if (leased) {
      for (let slot = 0; slot < settings.slots!; slot++) {
        const split = { member: slot, size: settings.slots! };
        const key = messageDbCheckpointKey(category, { ...options, split });
        parts.set(key.tranche, { category, ...split, key });
      }
    } else {
      const key = messageDbCheckpointKey(category, options);
      parts.set(key.tranche, { category, ...options.split, key });
    }
  }

  // A notification that arrives while a read is in flight must not be lost: it marks the tranche
  // pending, and the reader reads again instead of sleeping.
  const pending = new Set<string>();
  const sleepers = new Map<string, () => void>();
  const wake = (tranche: string) => {
    pending.add(tranche);
    sleepers.get(tranche)?.();
  };
  const onPayload = (payload: string) => {
    for (const [tranche, part] of parts) {
      if (payload === "" || payload === part.category) wake(tranche);
    }
  };
  const openListen = options.notifications === undefined
    ? undefined
    : () => listen(options.notifications!, settings.notifyChannel, onPayload);
  const scope = { source: settings.sourceName, group: options.group };
  const wakeup = (tranche: string, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      if (pending.has(tranche)) return resolve();
      sleepers.set(tranche, resolve);
      signal.addEventListener("abort", () => sleepers.delete(tranche), { once: true });
    });

  const text = `SELECT ${MESSAGE_COLUMNS}
                  FROM message_store.get_category_messages($1, $2::bigint, $3, NULL, $4, $5)`;
  const readPage: ReadPage = async (tranche, position) => {
    pending.delete(tranche);
    const from = position ?? 1n;
    const part = parts.get(tranche)!;
    const rows = await query(client, text, [
      part.category,
      from.toString(),
      settings.batchSize,
      part.member ?? null,
      part.size ?? null,
    ]);
    const items: BatchItem[] = new Array(rows.length);
    const positions: Position[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      positions[i] = toBigInt(rows[i].global_position) + 1n;
      items[i] = rowToItem(rows[i]);
    }
    const next = rows.length > 0 ? positions[rows.length - 1] : from;
    if (settings.retention !== undefined) await checkHorizon(tranche, part.category, position);
    return { items, positions, next, isTail: rows.length < settings.batchSize };
  };

  // Per tranche, the horizon already accounted for: at the first read (found below it, or a
  // fresh start from the beginning, which misses nothing it was promised), and after a warning.
  const accepted = new Map<string, bigint>();
  const checkHorizon = async (tranche: string, category: string, position?: Position) => {
    // Read after the page: a removal committed before the page's read shows here.
    const { schema, belowHorizon } = settings.retention!;
    const horizon = await retentionHorizon(client, category, { schema });
    if (horizon === undefined) return;
    const known = accepted.get(tranche);
    accepted.set(tranche, known === undefined || horizon > known ? horizon : known);
    if (position === undefined && known === undefined) return;
    if (position === undefined || horizon <= position) return;
    if (known !== undefined && horizon <= known) return;
    const error = new BelowRetentionHorizonError(tranche, position, horizon);
    if (belowHorizon === "fail") throw error;
    log.warn("{message}; reading on from the oldest retained event (belowHorizon: warn)", {
      message: error.message,
    });
  };

  // The newest message of each tranche, through the category index read backwards.
  const headText = `SELECT global_position FROM message_store.messages
                     WHERE message_store.category(stream_name) = $1 AND ($2::bigint IS NULL OR
                       MOD(@message_store.hash_64(message_store.cardinal_id(stream_name)), $3) = $2)
                     ORDER BY global_position DESC LIMIT 1`;
  const heads = async (tranches: readonly string[]): Promise<ReadonlyMap<string, Position>> => {
    const positions = new Map<string, Position>();
    for (const tranche of tranches) {
      const part = parts.get(tranche)!;
      const rows = await query(client, headText, [
        part.category,
        part.member ?? null,
        part.size ?? null,
      ]);
      positions.set(tranche, rows.length === 0 ? 1n : toBigInt(rows[0].global_position) + 1n);
    }
    return positions;
  };

  const reading = (
    tranches: readonly string[],
    checkpoints: CheckpointStore,
    signal: AbortSignal | undefined,
    notify: boolean,
  ) =>
    pagedSource({
      name: settings.sourceName,
      tranches,
      readPage,
      // The next global position of the whole store: a tail start reads nothing written before
      // it, and a checkpoint beyond it would skip what is written next, whatever the category.
      readTail: () => storeHead(client),
      checkpoints,
      checkpointKey: (tranche) => parts.get(tranche)!.key,
      startFrom: options.startFrom,
      whenNoCheckpoint: options.whenNoCheckpoint,
      checkpointPastTail: options.checkpointPastTail,
      tailSleepMs: settings.tailSleepMs,
      retry: settings.retry,
      isRetriable: isTransientSqlError,
      finalError: (error, tranche) =>
        error instanceof ImpelError ? error : new MessageDbReadError(tranche, error),
      wakeup: options.notifications === undefined ? undefined : wakeup,
      prefetch: true,
      maxBatchItems: settings.maxBatchItems,
      gapsAreFinal: true,
      open: notify ? () => holding(checkpoints, scope, openListen) : undefined,
      signal,
    });

  const checkpoints = options.split === undefined && !leased
    ? options.checkpoints
    : refusingLegacyKeys(options.checkpoints, settings);
  if (!leased) {
    const source = reading([...parts.keys()], checkpoints, options.signal, true);
    return Object.assign(source, {
      leases: () => undefined,
      released: Promise.resolve(),
      heads: () => heads([...parts.keys()]),
      group: options.group,
      sourceName: settings.sourceName,
    });
  }
  const source = leasedSource({
    scope: `${settings.sourceName}/${options.group}`,
    units: [...parts.keys()],
    leases: options.leases!,
    stopTimeoutMs: SINK_STOP_TIMEOUT_MS,
    checkpoints,
    reading: (tranche, fenced, signal) => reading([tranche], fenced, signal, false),
    heads,
    open: () => holding(checkpoints, scope, openListen),
    group: options.group,
    sourceName: settings.sourceName,
    signal: options.signal,
  });
  return Object.assign(source, { heads: source.heads! });
}

/**
 * While a source runs it holds its scope in the checkpoint store (so `impel checkpoints set`
 * knows it runs), and listens when it was given notifications; returns what ends both.
 */
async function holding(
  checkpoints: CheckpointStore,
  scope: { readonly source: string; readonly group: string },
  open: (() => Promise<(() => Promise<void>) | undefined>) | undefined,
): Promise<() => Promise<void>> {
  // Best effort: a database down at start is the reader's to retry, not a reason to fail here.
  const unhold = await checkpoints.hold?.(scope).catch((error) => {
    log.warn("{scope} runs without its running mark (checkpoints set will not see it): {error}", {
      scope: `${scope.source}/${scope.group}`,
      error: errorText(error),
    });
    return undefined;
  });
  let close: (() => Promise<void>) | undefined;
  try {
    close = await open?.();
  } catch (error) {
    await unhold?.().catch(() => {});
    throw error;
  }
  return async () => {
    try {
      await close?.();
    } finally {
      // A lost connection has let go of the hold with its session already.
      await unhold?.().catch(() => {});
    }
  };
}

/** One tranche of a MessageDB source: a category, or one member's (or slot's) share of it. */
interface Part {
  readonly category: string;
  readonly member?: number;
  readonly size?: number;
  readonly key: CheckpointKey;
}

/** A message as a batch item; one that is not a valid event of a valid stream is marked invalid. */
function rowToItem(row: SqlRow): BatchItem {
  const stream = row.stream_name as string;
  const dash = stream.indexOf("-");
  let invalid: Error | undefined;
  if (dash <= 0 || dash === stream.length - 1) {
    invalid = new InvalidStreamNameError(
      stream,
      dash < 0 ? "missing '-' between category and id" : dash === 0 ? "empty category" : "empty id",
    );
  }
  let event: StreamEvent;
  try {
    event = messageRowToEvent(row);
  } catch (error) {
    // What could be read stays with the item, for the dead-letter callback.
    invalid ??= error instanceof Error ? error : new Error(String(error));
    const data = row.data ?? null;
    event = {
      index: Number(row.position),
      type: String(row.type),
      data,
      meta: row.metadata ?? null,
      id: String(row.id),
      time: new Date(Number(row.time_ms)),
      size: utf8Length(String(row.type)) + (typeof data === "string" ? utf8Length(data) : 0),
    };
  }
  return invalid === undefined ? { stream, event } : { stream, event, invalid };
}

interface Settings {
  readonly categories: readonly string[];
  readonly sourceName: string;
  readonly batchSize: number;
  readonly maxBatchItems: number;
  readonly tailSleepMs: number;
  readonly notifyChannel: string;
  readonly retry: RetryOptions;
  readonly checkpointPastTail: "error" | "warn";
  readonly retention:
    | { readonly schema: string; readonly belowHorizon: "fail" | "warn" }
    | undefined;
  /** Hash slots per category, with leases. */
  readonly slots: number | undefined;
}

function checkOptions(options: MessageDbSourceOptions): Settings {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object");
  }
  if (typeof options.client?.query !== "function") {
    throw new InvalidArgumentError(
      "client",
      "must have a query(text, params) method (a pg.Pool or PGlite)",
    );
  }
  if (typeof options.checkpoints?.load !== "function") {
    throw new InvalidArgumentError("checkpoints", "must be a CheckpointStore");
  }
  if ("consumerGroup" in options) {
    throw new InvalidArgumentError(
      "consumerGroup",
      "is now split: { member, size } (group names the consumer; split says which share of " +
        "the categories this instance reads)",
    );
  }
  if (typeof options.group !== "string" || options.group.length === 0) {
    throw new InvalidArgumentError("group", "must be a non-empty string");
  }
  if (!Array.isArray(options.categories) || options.categories.length === 0) {
    throw new InvalidArgumentError("categories", "must be a non-empty array of category names");
  }
  for (const category of options.categories) checkCategory(category);
  if (new Set(options.categories).size !== options.categories.length) {
    throw new InvalidArgumentError("categories", "must not repeat a category");
  }
  const cg = options.split;
  if (cg !== undefined) {
    checkInteger("split.size", cg.size, 1, 32767);
    checkInteger("split.member", cg.member, 0, cg.size - 1);
  }
  const startFrom = options.startFrom ?? "checkpoint";
  if (!["checkpoint", "start", "tail"].includes(startFrom)) {
    throw new InvalidArgumentError(
      "startFrom",
      `must be "checkpoint", "start" or "tail", got ${String(startFrom)}`,
    );
  }
  const leases = options.leases;
  let slots: number | undefined;
  if (leases !== undefined) {
    if (leases === null || typeof leases !== "object") {
      throw new InvalidArgumentError("leases", "must be an object with a lease store");
    }
    if (cg !== undefined) {
      throw new InvalidArgumentError("leases", "and split cannot both be given");
    }
    if (typeof leases.store?.heartbeat !== "function") {
      throw new InvalidArgumentError("leases.store", "must be a LeaseStore (postgresLeases(pool))");
    }
    if (options.checkpoints.fenced !== true) {
      throw new InvalidArgumentError(
        "checkpoints",
        "must be a fenced store with leases (postgresCheckpoints in the lease table's database)",
      );
    }
    // Fences checked against other leases than the store keeps: every commit would be stale.
    checkLeaseFence(leases.store, options.checkpoints, "leases.");
    // A slot taken over must resume where its last owner committed, never restart or skip.
    if (startFrom !== "checkpoint") {
      throw new InvalidArgumentError("startFrom", `must be "checkpoint" with leases`);
    }
    slots = checkInteger("leases.slots", leases.slots ?? 12, 1, 32767);
    checkLeaseTiming(
      { ...leases, stopTimeoutMs: leases.stopTimeoutMs ?? SINK_STOP_TIMEOUT_MS },
      "leases.",
    );
  }
  const sourceName = options.sourceName ?? MESSAGEDB_SOURCE;
  if (typeof sourceName !== "string" || sourceName.length === 0) {
    throw new InvalidArgumentError("sourceName", "must be a non-empty string");
  }
  const notifyChannel = options.notifyChannel ?? DEFAULT_NOTIFY_CHANNEL;
  sqlIdentifier("notifyChannel", notifyChannel);
  const retryMinMs = checkInteger("retryMinMs", options.retryMinMs ?? 100, 1);
  const retry = options.retry ?? {
    initialDelayMs: retryMinMs,
    maxDelayMs: checkInteger("retryMaxMs", options.retryMaxMs ?? 5000, retryMinMs),
  };
  return {
    categories: options.categories,
    sourceName,
    batchSize: checkInteger("batchSize", options.batchSize ?? 1000, 1, 1_000_000),
    maxBatchItems: checkInteger("maxBatchItems", options.maxBatchItems ?? 100, 1),
    tailSleepMs: checkInteger("tailSleepMs", options.tailSleepMs ?? 1000, 0),
    notifyChannel,
    retry,
    checkpointPastTail: options.checkpointPastTail ?? "error",
    retention: checkRetention(options.retention),
    slots,
  };
}

function checkRetention(
  retention: MessageDbSourceOptions["retention"],
): Settings["retention"] {
  if (retention === undefined) return undefined;
  if (retention === null || typeof retention !== "object") {
    throw new InvalidArgumentError(
      "retention",
      `must be { schema?, belowHorizon? }, got ${describe(retention)}`,
    );
  }
  const schema = retention.schema ?? "impel";
  sqlIdentifier("retention.schema", schema);
  const belowHorizon = retention.belowHorizon ?? "fail";
  if (belowHorizon !== "fail" && belowHorizon !== "warn") {
    throw new InvalidArgumentError(
      "retention.belowHorizon",
      `must be "fail" or "warn", got ${describe(belowHorizon)}`,
    );
  }
  return { schema, belowHorizon };
}

/**
 * A MessageDB reader's position is below its category's retention horizon: retention removed
 * events at or above it that the reader had not read (a checkpoint older than the retention, or a
 * reader that fell behind the cleanup job). Raised under `retention: { belowHorizon: "fail" }`
 * (the default); `"warn"` logs the same text and reads on from the oldest retained event.
 *
 * @example
 * ```ts
 * import { BelowRetentionHorizonError } from "@impel/impel/sources/messagedb";
 * const e = new BelowRetentionHorizonError("Order", 10n, 250n);
 * console.log(e.code, e.horizon); // "BelowRetentionHorizon" 250n
 * ```
 *
 * @category Sources
 */
export class BelowRetentionHorizonError extends ImpelError {
  /** The tranche (category, or its member's or slot's part). */
  readonly tranche: string;
  /** The reader's position (the next global position it reads). */
  readonly position: bigint;
  /** The horizon: the highest global position retention removed + 1. */
  readonly horizon: bigint;
  /** Creates the error. */
  constructor(tranche: string, position: bigint, horizon: bigint) {
    super(
      "BelowRetentionHorizon",
      `${tranche}: the reader is at global position ${position}, below the retention horizon ` +
        `${horizon}: events from ${position} to ${horizon - 1n} may have been removed unread ` +
        `(retention.belowHorizon "warn" reads on from the oldest retained event)`,
    );
    this.tranche = tranche;
    this.position = position;
    this.horizon = horizon;
  }
}

/**
 * The checkpoint key of one category for a source's options: `tranche` is the category, or
 * `<category>-<member>/<size>` for a consumer-group member (it contains `-`, so it can never be
 * a category's key).
 *
 * @example
 * ```ts
 * import { messageDbCheckpointKey } from "@impel/impel/sources/messagedb";
 * messageDbCheckpointKey("GuestStay", { group: "reactor", split: { member: 1, size: 3 } });
 * // { source: "messagedb", tranche: "GuestStay-1/3", group: "reactor" }
 * ```
 */
export function messageDbCheckpointKey(
  category: string,
  options: Pick<MessageDbSourceOptions, "group" | "split" | "sourceName">,
): CheckpointKey {
  const cg = options.split;
  return {
    source: options.sourceName ?? MESSAGEDB_SOURCE,
    tranche: cg === undefined ? category : `${category}-${cg.member}/${cg.size}`,
    group: options.group,
  };
}

/**
 * The checkpoints of a consumer-group member, refusing to start afresh while a checkpoint sits
 * under impel 0.1's key `<category>:<member>/<size>`: it may be this member's progress (taking
 * it over silently could be wrong, since it may as well be a real category's), and starting
 * afresh from the tail would skip what lies between.
 */
function refusingLegacyKeys(checkpoints: CheckpointStore, settings: Settings): CheckpointStore {
  return {
    ...checkpoints,
    commit: (key, position, fence) => checkpoints.commit(key, position, fence),
    reset: (key, position) => checkpoints.reset(key, position),
    list: (source, group) => checkpoints.list(source, group),
    async load(key) {
      const stored = await checkpoints.load(key);
      if (stored !== undefined) return stored;
      // `<category>-<member>/<size>` was `<category>:<member>/<size>` (a category has no `-`).
      const legacy = { ...key, tranche: key.tranche.replace("-", ":") };
      const old = await checkpoints.load(legacy);
      if (old === undefined) return undefined;
      const error = new LegacyCheckpointKeyError(key, legacy, old);
      if (settings.checkpointPastTail === "error") throw error;
      log.warn("{message}; starting afresh as checkpointPastTail says", { message: error.message });
      return undefined;
    },
  };
}

/**
 * A consumer-group member found no checkpoint under its key but one under impel 0.1's key
 * `<category>:<member>/<size>`, which could also be a real category's. Nothing is taken over
 * silently: move the checkpoint to the new key (`checkpoints.reset(newKey, position)`, then
 * `checkpoints.reset(oldKey, undefined)`), or remove it, or start with
 * `checkpointPastTail: "warn"`.
 *
 * @example
 * ```ts
 * import { LegacyCheckpointKeyError } from "@impel/impel/sources/messagedb";
 * const key = { source: "messagedb", tranche: "Order-0/2", group: "g" };
 * const e = new LegacyCheckpointKeyError(key, { ...key, tranche: "Order:0/2" }, 42n);
 * console.log(e.code, e.legacy.tranche, e.position); // "MessageDbLegacyCheckpointKey" "Order:0/2" 42n
 * ```
 */
export class LegacyCheckpointKeyError extends ImpelError {
  /** The key the member reads and commits under. */
  readonly key: CheckpointKey;
  /** The old key where a checkpoint was found. */
  readonly legacy: CheckpointKey;
  /** The position stored under the old key. */
  readonly position: Position;
  /** Creates the error. */
  constructor(key: CheckpointKey, legacy: CheckpointKey, position: Position) {
    super(
      "MessageDbLegacyCheckpointKey",
      `no checkpoint under ${key.source}/${key.tranche}/${key.group}, but one (${position}) under ` +
        `impel 0.1's key ${legacy.tranche}, which may be this member's or a category's; move it ` +
        `to the new key or remove it (or pass checkpointPastTail: "warn" to start afresh)`,
    );
    this.key = key;
    this.legacy = legacy;
    this.position = position;
  }
}

async function listen(
  notifications: NotificationSource,
  channel: string,
  onPayload: (payload: string) => void,
): Promise<(() => Promise<void>) | undefined> {
  try {
    return await notifications.listen(channel, onPayload);
  } catch (error) {
    log.warn("LISTEN {channel} failed; relying on the tail sleep: {message}", {
      channel,
      message: errorText(error),
    });
    return undefined;
  }
}

/** The store's head: the next global position, per the sequence and the rows (see the module). */
async function storeHead(client: SqlClient): Promise<Position> {
  const max = "coalesce((SELECT max(global_position) FROM message_store.messages), 0)";
  let rows: SqlRow[];
  try {
    rows = await query(
      client,
      `SELECT greatest(${max}, coalesce(pg_sequence_last_value(
         pg_get_serial_sequence('message_store.messages', 'global_position')::regclass), 0))::text
         AS last`,
      [],
    );
  } catch (error) {
    // 42501: no privilege on the sequence; the rows alone then.
    if ((error as { code?: unknown })?.code !== "42501") throw error;
    rows = await query(client, `SELECT ${max}::text AS last`, []);
  }
  return toBigInt(rows[0].last) + 1n;
}

async function query(client: SqlClient, text: string, params: unknown[]): Promise<SqlRow[]> {
  try {
    return (await client.query(text, params)).rows;
  } catch (error) {
    throw classifyMessageDbError(error);
  }
}

/**
 * Reading a category failed with an error that retrying cannot fix.
 *
 * @example
 * ```ts
 * import { MessageDbReadError } from "@impel/impel/sources/messagedb";
 * const e = new MessageDbReadError("GuestStay", new Error("permission denied"));
 * console.log(e.code, e.tranche); // "MessageDbRead" "GuestStay"
 * ```
 */
export class MessageDbReadError extends ImpelError {
  /** The tranche being read. */
  readonly tranche: string;
  /** Creates the error; `cause` is the driver's error. */
  constructor(tranche: string, cause: unknown) {
    super("MessageDbRead", `reading MessageDB tranche ${tranche} failed: ${errorText(cause)}`, {
      cause,
    });
    this.tranche = tranche;
  }
}

/**
 * Options of {@linkcode installNotifyTrigger}.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import {
 *   installNotifyTrigger,
 *   messageDbSource,
 *   type NotifyTriggerOptions,
 *   poolNotifications,
 * } from "@impel/impel/sources/messagedb";
 * import { postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const trigger: NotifyTriggerOptions = { channel: "orders_written" };
 * await installNotifyTrigger(pool, trigger);
 * // The source listens on the same channel.
 * const notifications = poolNotifications(pool);
 * const batches = messageDbSource({
 *   client: pool,
 *   categories: ["Order"],
 *   group: "reactor",
 *   checkpoints: postgresCheckpoints(pool),
 *   notifications,
 *   notifyChannel: trigger.channel,
 * });
 * await batches.cancel();
 * await notifications.close();
 * await pool.end();
 * ```
 */
export interface NotifyTriggerOptions {
  /** The channel to notify (default `"impel_messagedb"`); a plain SQL identifier. */
  readonly channel?: string;
}

/**
 * Installs the opt-in trigger that lets {@linkcode messageDbSource} wake within milliseconds of
 * an append instead of after its tail sleep. After each statement inserting into
 * `message_store.messages` (each `write_message` call) it sends `NOTIFY <channel>, <category>`
 * once per category written. Notifications are delivered on commit and cost the writer a few
 * microseconds; the trigger is named `impel_notify_<channel>` and replaced if it exists.
 * Requires the right to create functions in the `message_store` schema and triggers on its
 * table (the schema owner); remove it with {@linkcode uninstallNotifyTrigger}.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { installNotifyTrigger, messageDbSource, poolNotifications } from "@impel/impel/sources/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await installNotifyTrigger(pool);
 * // then: messageDbSource({ ..., notifications: poolNotifications(pool) })
 * ```
 */
export async function installNotifyTrigger(
  client: SqlClient,
  options: NotifyTriggerOptions = {},
): Promise<void> {
  const channel = options.channel ?? DEFAULT_NOTIFY_CHANNEL;
  const trigger = sqlIdentifier("channel", `impel_notify_${sqlName("channel", channel)}`);
  try {
    await client.query(
      `CREATE OR REPLACE FUNCTION message_store.impel_notify_categories() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         PERFORM pg_notify(TG_ARGV[0], c.category)
            FROM (SELECT DISTINCT message_store.category(n.stream_name) AS category
                    FROM impel_new_messages n) c;
         RETURN NULL;
       END $$`,
    );
    await client.query(`DROP TRIGGER IF EXISTS ${trigger} ON message_store.messages`);
    // The channel is a checked identifier, so it is safe inside the literal argument.
    await client.query(
      `CREATE TRIGGER ${trigger} AFTER INSERT ON message_store.messages
         REFERENCING NEW TABLE AS impel_new_messages
         FOR EACH STATEMENT EXECUTE FUNCTION message_store.impel_notify_categories('${channel}')`,
    );
  } catch (error) {
    throw classifyMessageDbError(error);
  }
}

/**
 * Removes the trigger installed by {@linkcode installNotifyTrigger} for `channel`.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { uninstallNotifyTrigger } from "@impel/impel/sources/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await uninstallNotifyTrigger(pool);
 * ```
 */
export async function uninstallNotifyTrigger(
  client: SqlClient,
  options: NotifyTriggerOptions = {},
): Promise<void> {
  const channel = options.channel ?? DEFAULT_NOTIFY_CHANNEL;
  const trigger = sqlIdentifier("channel", `impel_notify_${sqlName("channel", channel)}`);
  await client.query(`DROP TRIGGER IF EXISTS ${trigger} ON message_store.messages`);
}

function sqlName(field: string, name: string): string {
  sqlIdentifier(field, name);
  return name;
}
