/**
 * Reads categories of a MessageDB store (Eventide's PostgreSQL message store) as impel batches.
 *
 * - Each category is a tranche, read in pages with `get_category_messages` from its checkpoint.
 *   An event's `index` is its stream position; a batch's checkpoint position is the last global
 *   position read + 1, i.e. the next global position to read.
 * - Checkpoints are kept in a {@linkcode CheckpointStore} under
 *   `{ source: "messagedb", tranche: <category>, group }`; with a consumer group the tranche is
 *   `<category>:<member>/<size>` (each member has its own position, and changing the group size
 *   starts members without a checkpoint afresh per `whenNoCheckpoint`).
 * - Consumer groups use MessageDB's own `consumer_group_member` / `consumer_group_size`, which
 *   split a category by a hash of each stream's cardinal id, so N instances share a category
 *   and every stream is handled by exactly one of them.
 * - At the tail the reader sleeps `tailSleepMs`, or, given `notifications` and the opt-in
 *   trigger of {@linkcode installNotifyTrigger}, wakes within milliseconds of an append.
 * - Query failures that look transient (lost connections, server restarts) are logged and
 *   retried with backoff from the same position; other failures error the stream.
 *
 * The connection's `search_path` must include `message_store` (see `stores/messagedb.ts`).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, BatchItem, Position } from "../core/batch.ts";
import type { CheckpointKey, CheckpointStore } from "../core/checkpoints.ts";
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { checkCategory } from "../core/streamName.ts";
import { sleep, trancheStream } from "../core/tranches.ts";
import { classifyMessageDbError, MESSAGE_COLUMNS, messageRowToEvent } from "../stores/messagedb.ts";
import {
  errorMessage,
  isTransientSqlError,
  type NotificationSource,
  type SqlClient,
  sqlIdentifier,
  type SqlRow,
  toBigInt,
} from "../stores/sql.ts";

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
 * One member of a consumer group: `member` in `[0, size)`.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type ConsumerGroupMember, messageDbSource } from "@impel/impel/sources/messagedb";
 * import { postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * // Instance 1 of 3 sharing the category: each stream is handled by exactly one of them.
 * const consumerGroup: ConsumerGroupMember = { member: 1, size: 3 };
 * const batches = messageDbSource({
 *   client: pool,
 *   categories: ["GuestStay"],
 *   group: "reactor",
 *   checkpoints: postgresCheckpoints(pool), // kept under tranche "GuestStay:1/3"
 *   consumerGroup,
 * });
 * await batches.cancel();
 * await pool.end();
 * ```
 */
export interface ConsumerGroupMember {
  /** This instance's 0-based member number. */
  readonly member: number;
  /** How many instances share the categories. */
  readonly size: number;
}

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
  /** Read only this member's share of each category. */
  readonly consumerGroup?: ConsumerGroupMember;
  /**
   * `"checkpoint"` (default): resume from the stored checkpoint, or per `whenNoCheckpoint` if
   * there is none; `"start"`: from the first message, ignoring any checkpoint; `"tail"`: from
   * the current end, ignoring any checkpoint (the new position is committed straight away).
   */
  readonly startFrom?: MessageDbStart;
  /** Where `"checkpoint"` starts when nothing is stored: `"start"` (default) or `"tail"`. */
  readonly whenNoCheckpoint?: "start" | "tail";
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
  /** First delay before retrying a failed read (default 100 ms); doubles up to `retryMaxMs`. */
  readonly retryMinMs?: number;
  /** Longest delay between retries of a failed read (default 5000 ms). */
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
export function messageDbSource(options: MessageDbSourceOptions): ReadableStream<Batch> {
  const settings = checkOptions(options);
  return trancheStream(async ({ signal, enqueue, spawn }) => {
    const wakers = new Map<string, () => void>();
    const unlisten = options.notifications === undefined
      ? undefined
      : await listen(options.notifications, settings.notifyChannel, (payload) => {
        if (payload === "") { for (const wake of wakers.values()) wake(); }
        else wakers.get(payload)?.();
      });
    await Promise.all(settings.categories.map((category) =>
      spawn(() =>
        readCategory(
          category,
          settings,
          options,
          signal,
          enqueue,
          (wake) => wakers.set(category, wake),
        )
      )
    ));
    await unlisten?.().catch(() => {});
  }, { signal: options.signal });
}

interface Settings {
  readonly categories: readonly string[];
  readonly sourceName: string;
  readonly batchSize: number;
  readonly tailSleepMs: number;
  readonly notifyChannel: string;
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
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
  const cg = options.consumerGroup;
  if (cg !== undefined) {
    checkInteger("consumerGroup.size", cg.size, 1, 32767);
    checkInteger("consumerGroup.member", cg.member, 0, cg.size - 1);
  }
  const startFrom = options.startFrom ?? "checkpoint";
  if (!["checkpoint", "start", "tail"].includes(startFrom)) {
    throw new InvalidArgumentError(
      "startFrom",
      `must be "checkpoint", "start" or "tail", got ${String(startFrom)}`,
    );
  }
  const whenNoCheckpoint = options.whenNoCheckpoint ?? "start";
  if (!["start", "tail"].includes(whenNoCheckpoint)) {
    throw new InvalidArgumentError(
      "whenNoCheckpoint",
      `must be "start" or "tail", got ${String(whenNoCheckpoint)}`,
    );
  }
  const sourceName = options.sourceName ?? MESSAGEDB_SOURCE;
  if (typeof sourceName !== "string" || sourceName.length === 0) {
    throw new InvalidArgumentError("sourceName", "must be a non-empty string");
  }
  const notifyChannel = options.notifyChannel ?? DEFAULT_NOTIFY_CHANNEL;
  sqlIdentifier("notifyChannel", notifyChannel);
  const retryMinMs = checkInteger("retryMinMs", options.retryMinMs ?? 100, 1);
  return {
    categories: options.categories,
    sourceName,
    batchSize: checkInteger("batchSize", options.batchSize ?? 1000, 1, 1_000_000),
    tailSleepMs: checkInteger("tailSleepMs", options.tailSleepMs ?? 1000, 0),
    notifyChannel,
    retryMinMs,
    retryMaxMs: checkInteger("retryMaxMs", options.retryMaxMs ?? 5000, retryMinMs),
  };
}

/**
 * The checkpoint key of one category for a source's options: `tranche` is the category, or
 * `<category>:<member>/<size>` for a consumer-group member.
 *
 * @example
 * ```ts
 * import { messageDbCheckpointKey } from "@impel/impel/sources/messagedb";
 * messageDbCheckpointKey("GuestStay", { group: "reactor", consumerGroup: { member: 1, size: 3 } });
 * // { source: "messagedb", tranche: "GuestStay:1/3", group: "reactor" }
 * ```
 */
export function messageDbCheckpointKey(
  category: string,
  options: Pick<MessageDbSourceOptions, "group" | "consumerGroup" | "sourceName">,
): CheckpointKey {
  const cg = options.consumerGroup;
  return {
    source: options.sourceName ?? MESSAGEDB_SOURCE,
    tranche: cg === undefined ? category : `${category}:${cg.member}/${cg.size}`,
    group: options.group,
  };
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
      message: errorMessage(error),
    });
    return undefined;
  }
}

async function readCategory(
  category: string,
  settings: Settings,
  options: MessageDbSourceOptions,
  signal: AbortSignal,
  enqueue: (batch: Batch) => Promise<void>,
  registerWake: (wake: () => void) => void,
): Promise<void> {
  const key = messageDbCheckpointKey(category, options);
  const tranche = key.tranche;
  const commit = (position: Position) => options.checkpoints.commit(key, position);
  const cg = options.consumerGroup;
  const retry = <T>(what: string, fn: () => Promise<T>) =>
    retrying(what, tranche, settings, signal, fn);

  // A notification that arrives while a read is in flight must not be lost: it sets `pending`,
  // and the reader reads again instead of sleeping.
  let pending = false;
  let wakeSleeper: (() => void) | undefined;
  registerWake(() => {
    pending = true;
    wakeSleeper?.();
  });
  const sleepAtTail = () =>
    new Promise<void>((resolve) => {
      if (pending || signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        wakeSleeper = undefined;
        resolve();
      };
      const timer = setTimeout(done, settings.tailSleepMs);
      signal.addEventListener("abort", done, { once: true });
      wakeSleeper = done;
    });

  const start = await retry("load the start position", () => startPosition(key, options));
  if (start === undefined) return;
  let position = start.position;
  log.info("reading {tranche} from global position {position} ({how})", {
    tranche,
    position: String(position),
    how: start.how,
  });
  let atTail = false;
  if (start.how === "tail") {
    await enqueue({ tranche, items: [], position, isTail: true, commit });
    atTail = true;
    await sleepAtTail();
  } else {
    // Make the category known to the sink before its first read returns, so that waiting for
    // every tranche to reach its tail includes the slow ones. Nothing to commit yet.
    await enqueue({ tranche, items: [], position, isTail: false });
  }
  const text = `SELECT ${MESSAGE_COLUMNS}
                  FROM message_store.get_category_messages($1, $2::bigint, $3, NULL, $4, $5)`;
  const read = (from: Position) => {
    pending = false;
    const params = [
      category,
      from.toString(),
      settings.batchSize,
      cg?.member ?? null,
      cg?.size ?? null,
    ];
    const started = performance.now();
    const rows = retry("read", () => query(options.client, text, params)).then((r) => {
      readMs = performance.now() - started;
      return r;
    });
    rows.catch(() => {}); // awaited below; an abandoned read-ahead must not be an unhandled rejection
    return rows;
  };
  let readMs = 0;
  let next = read(position);
  while (!signal.aborted) {
    const rows = await next;
    if (rows === undefined) return;
    const isTail = rows.length < settings.batchSize;
    if (rows.length > 0) {
      position = toBigInt(rows[rows.length - 1].global_position) + 1n;
      // Catching up, the next page is fetched while this one is decoded and handed on, so that
      // the server and this process work at the same time (one page ahead, no more).
      if (!isTail) next = read(position);
      const items: BatchItem[] = new Array(rows.length);
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i];
        items[i] = { stream: row.stream_name as string, event: messageRowToEvent(row) };
      }
      await enqueue({ tranche, items, position, isTail, commit, readMs });
    } else if (!atTail) {
      // Say "at the tail" once, so that monitors waiting for the tail see it; repeating it on
      // every idle poll would only churn the pipeline.
      await enqueue({ tranche, items: [], position, isTail: true, commit });
    }
    atTail = isTail;
    if (isTail) {
      await sleepAtTail();
      if (signal.aborted) return;
      next = read(position);
    }
  }
}

async function startPosition(
  key: CheckpointKey,
  options: MessageDbSourceOptions,
): Promise<{ position: Position; how: "checkpoint" | "start" | "tail" }> {
  const startFrom = options.startFrom ?? "checkpoint";
  if (startFrom === "checkpoint") {
    const stored = await options.checkpoints.load(key);
    if (stored !== undefined) return { position: stored, how: "checkpoint" };
  }
  const how = startFrom === "checkpoint" ? options.whenNoCheckpoint ?? "start" : startFrom;
  if (how === "start") return { position: 1n, how };
  const rows = await query(
    options.client,
    "SELECT coalesce(max(global_position), 0)::text AS max FROM message_store.messages",
    [],
  );
  return { position: toBigInt(rows[0].max) + 1n, how };
}

async function query(client: SqlClient, text: string, params: unknown[]): Promise<SqlRow[]> {
  try {
    return (await client.query(text, params)).rows;
  } catch (error) {
    throw classifyMessageDbError(error);
  }
}

/** Runs `fn`, retrying transient failures with backoff; `undefined` once `signal` aborts. */
async function retrying<T>(
  what: string,
  tranche: string,
  settings: Settings,
  signal: AbortSignal,
  fn: () => Promise<T>,
): Promise<T | undefined> {
  let delay = settings.retryMinMs;
  for (let attempt = 1; !signal.aborted; attempt++) {
    try {
      const result = await fn();
      if (attempt > 1) {
        log.info("{tranche}: {what} succeeded after {attempt} attempts", {
          tranche,
          what,
          attempt,
        });
      }
      return result;
    } catch (error) {
      if (signal.aborted) return undefined;
      if (!isTransientSqlError(error)) {
        throw error instanceof ImpelError ? error : new MessageDbReadError(tranche, error);
      }
      log.warn("{tranche}: {what} failed (attempt {attempt}), retrying in {delay} ms: {message}", {
        tranche,
        what,
        attempt,
        delay,
        message: errorMessage(error),
      });
      await sleep(delay, signal);
      delay = Math.min(delay * 2, settings.retryMaxMs);
    }
  }
  return undefined;
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
    super("MessageDbRead", `reading MessageDB tranche ${tranche} failed: ${errorMessage(cause)}`, {
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
