/**
 * Ephemeral queues in PostgreSQL: the contract of {@linkcode QueueStore} (see
 * `queues/queue.ts`) in two tables of one schema, `queue_messages` and `queue_dead_letters`,
 * for `pg.Pool` or PGlite clients.
 *
 * - **Transactional enqueue.** Given `{ client }` inside the caller's transaction, the messages
 *   are written by that transaction: they exist exactly when the business change commits, and a
 *   rollback leaves nothing (nor any wake-up).
 * - **One holder at a time.** `dequeue` is one statement that takes rows with
 *   `FOR UPDATE SKIP LOCKED`, so concurrent consumers never take the same message, and gives each
 *   a new receipt; `ack`, `nack` and `extend` match on it.
 * - **Dead letters in the same statement.** A visible message already delivered `maxDeliveries`
 *   times is moved to `queue_dead_letters` by the dequeue that finds it, with its last error.
 * - **Wake-up.** Enqueues and immediate nacks `NOTIFY` the store's channel with the queue's name
 *   (on commit); with a `notifications` source, {@linkcode QueueStore.wait} returns on it, and
 *   otherwise (or when LISTEN fails) on its timeout, so polling is the fallback.
 * - Visibility and delays are measured by the database's clock (`now()`).
 *
 * The tables are created by {@linkcode initPostgresQueues}, never implicitly, so that an
 * application whose role may not run DDL can have them created by a migration instead.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import { sleep } from "../core/tranches.ts";
import {
  type NotificationSource,
  type SqlClient,
  sqlIdentifier,
  type SqlRow,
  sqlState,
} from "../stores/sql.ts";
import {
  checkDeliveries,
  checkDelivery,
  checkDequeue,
  checkLimit,
  checkMs,
  checkNack,
  checkPurge,
  checkQueueName,
  checkStoreOptions,
  type DeadLetter,
  type DequeueOptions,
  encodeBodies,
  type EnqueueOptions,
  EXPIRED_ERROR,
  type NackOptions,
  type PeekedMessage,
  type PurgeDeadOptions,
  type QueueMessage,
  type QueueStats,
  type QueueStore,
} from "./queue.ts";

export type {
  DeadLetter,
  DequeueOptions,
  EnqueueOptions,
  NackOptions,
  PeekedMessage,
  PurgeDeadOptions,
  QueueMessage,
  QueueStats,
  QueueStore,
} from "./queue.ts";
export { queueConsumer } from "./consumer.ts";
export type { QueueConsumer, QueueConsumerOptions, QueueConsumerStats } from "./consumer.ts";
export {
  type ListeningClient,
  type ListeningPool,
  type NotificationSource,
  type PoolNotificationOptions,
  type PoolNotifications,
  poolNotifications,
  type SqlClient,
  type SqlRow,
} from "../stores/sql.ts";
export { ImpelError, InvalidArgumentError } from "../core/errors.ts";
export type { RetryOptions } from "../core/failure.ts";

const log = getLogger(["impel", "queues"]);

/**
 * The NOTIFY channel used unless overridden.
 *
 * @example
 * ```ts
 * import { DEFAULT_QUEUE_CHANNEL } from "@impel/impel/queues/postgres";
 * console.log(DEFAULT_QUEUE_CHANNEL); // "impel_queues"
 * ```
 *
 * @category Queues
 */
export const DEFAULT_QUEUE_CHANNEL = "impel_queues";

/**
 * Where the queue tables live and how the store behaves.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import {
 *   poolNotifications,
 *   postgresQueues,
 *   type PostgresQueuesOptions,
 * } from "@impel/impel/queues/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const notifications = poolNotifications(pool);
 * const options: PostgresQueuesOptions = { schema: "jobs", maxDeliveries: 3, notifications };
 * const queues = postgresQueues(pool, options);
 * await queues.close();
 * await notifications.close();
 * await pool.end();
 * ```
 *
 * @category Queues
 */
export interface PostgresQueuesOptions {
  /** The schema of the tables (default `impel`); a plain SQL identifier. */
  readonly schema?: string;
  /** Deliveries before a message is dead-lettered (default 5). */
  readonly maxDeliveries?: number;
  /** The largest body, in UTF-8 bytes of its JSON (default 1 MiB). */
  readonly maxMessageBytes?: number;
  /** The NOTIFY channel (default `"impel_queues"`); a plain SQL identifier. */
  readonly notifyChannel?: string;
  /**
   * Where `wait` hears of new messages (`poolNotifications(pool)` for a `pg.Pool`, the PGlite
   * instance itself); without it `wait` always sleeps its timeout (polling).
   */
  readonly notifications?: NotificationSource;
  /**
   * Names the store's statements (`{ name, text, values }`), so that each connection parses and
   * plans them once instead of on every call; the dequeue statement's planning costs about as much
   * as its execution. Only for node-postgres clients (`pg.Pool`, `pg.Client`), which take such a
   * query object (default false). A caller's transaction client given to `enqueue` is used as is.
   */
  readonly prepare?: boolean;
}

/**
 * A {@linkcode QueueStore} in PostgreSQL, with a way to stop listening.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type PostgresQueues, postgresQueues } from "@impel/impel/queues/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const queues: PostgresQueues = postgresQueues(pool);
 * await queues.close();
 * await pool.end();
 * ```
 *
 * @category Queues
 */
export interface PostgresQueues extends QueueStore {
  /** Ends the store's LISTEN subscription (if any); pending waits return. */
  close(): Promise<void>;
}

/**
 * The queue tables do not exist (or the schema is not reachable): run
 * {@linkcode initPostgresQueues} first.
 *
 * @example
 * ```ts
 * import { QueueTablesMissingError } from "@impel/impel/queues/postgres";
 * const e = new QueueTablesMissingError('"jobs"', new Error("relation does not exist"));
 * console.log(e.code); // "QueueTablesMissing"
 * ```
 *
 * @category Queues
 */
export class QueueTablesMissingError extends ImpelError {
  /** Creates the error for the quoted `schema`; `cause` is the driver's error. */
  constructor(schema: string, cause: unknown) {
    super(
      "QueueTablesMissing",
      `the queue tables of schema ${schema} do not exist: call initPostgresQueues(client, ` +
        `{ schema }) first (${errorText(cause)})`,
      { cause },
    );
  }
}

/**
 * Creates the schema, the queue tables and their indexes if they do not exist. Safe to call on
 * every start and from several processes at once (it takes a transaction-scoped advisory lock).
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { initPostgresQueues } from "@impel/impel/queues/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresQueues(pool, { schema: "jobs" });
 * await initPostgresQueues(pool, { schema: "jobs" }); // again: nothing to do
 * await pool.end();
 * ```
 *
 * @category Queues
 */
export async function initPostgresQueues(
  client: SqlClient,
  options: { readonly schema?: string } = {},
): Promise<void> {
  const s = sqlIdentifier("schema", options.schema ?? "impel");
  // One simple-protocol string runs as one implicit transaction, so the advisory lock keeps
  // concurrent initialisations from racing on CREATE ... IF NOT EXISTS.
  await client.query(`
    SELECT pg_advisory_xact_lock(hashtext('impel_queues_init'));
    CREATE SCHEMA IF NOT EXISTS ${s};
    CREATE TABLE IF NOT EXISTS ${s}.queue_messages (
      id bigserial PRIMARY KEY,
      queue text NOT NULL,
      body json NOT NULL,
      enqueued_at timestamptz NOT NULL DEFAULT now(),
      visible_at timestamptz NOT NULL,
      deliveries integer NOT NULL DEFAULT 0,
      receipt uuid,
      last_error text
    );
    CREATE INDEX IF NOT EXISTS queue_messages_visible
      ON ${s}.queue_messages (queue, visible_at, id);
    CREATE TABLE IF NOT EXISTS ${s}.queue_dead_letters (
      id bigint PRIMARY KEY,
      queue text NOT NULL,
      body json NOT NULL,
      enqueued_at timestamptz NOT NULL,
      deliveries integer NOT NULL,
      last_error text NOT NULL,
      dead_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS queue_dead_letters_queue
      ON ${s}.queue_dead_letters (queue, dead_at, id);
  `);
}

/**
 * Creates a {@linkcode QueueStore} over the tables {@linkcode initPostgresQueues} made.
 *
 * @example
 * ```ts
 * // @ts-types="@types/pg"
 * import pg from "pg";
 * import { initPostgresQueues, postgresQueues } from "@impel/impel/queues/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresQueues(pool, { schema: "jobs" });
 * const queues = postgresQueues(pool, { schema: "jobs" });
 * // Enqueue in the same transaction as the business change:
 * const client = await pool.connect();
 * try {
 *   await client.query("BEGIN");
 *   // ... UPDATE orders SET ... ;
 *   await queues.enqueue("emails", [{ order: 42 }], { client });
 *   await client.query("COMMIT");
 * } catch (error) {
 *   await client.query("ROLLBACK");
 *   throw error;
 * } finally {
 *   client.release();
 * }
 * const [m] = await queues.dequeue("emails", { visibilityTimeoutMs: 30_000 });
 * if (m) await queues.ack(m);
 * await queues.close();
 * await pool.end();
 * ```
 *
 * @category Queues
 */
export function postgresQueues(
  client: SqlClient,
  options: PostgresQueuesOptions = {},
): PostgresQueues {
  const { maxDeliveries, maxMessageBytes } = checkStoreOptions(options);
  const schema = sqlIdentifier("schema", options.schema ?? "impel");
  const channel = options.notifyChannel ?? DEFAULT_QUEUE_CHANNEL;
  sqlIdentifier("notifyChannel", channel);
  const notifications = options.notifications;
  if (notifications !== undefined && typeof notifications?.listen !== "function") {
    throw new InvalidArgumentError(
      "notifications",
      "must be a NotificationSource (poolNotifications(pool), or a PGlite instance)",
    );
  }
  const messages = `${schema}.queue_messages`;
  const deadTable = `${schema}.queue_dead_letters`;

  if (options.prepare !== undefined && typeof options.prepare !== "boolean") {
    throw new InvalidArgumentError(
      "prepare",
      `must be a boolean, got ${describe(options.prepare)}`,
    );
  }
  // Statement names: one per distinct text (the schema and table names are part of it).
  const names = new Map<string, string>();
  const named = (text: string) => {
    let name = names.get(text);
    if (name === undefined) names.set(text, name = `impel_queues_${hash(text)}`);
    return name;
  };
  const run = async (text: string, params: unknown[], via?: SqlClient) => {
    try {
      if (via === undefined && options.prepare === true) {
        const query = client.query as unknown as (
          config: { name: string; text: string; values: unknown[] },
        ) => Promise<{ rows: SqlRow[] }>;
        return (await query.call(client, { name: named(text), text, values: params })).rows;
      }
      return (await (via ?? client).query(text, params)).rows;
    } catch (error) {
      const state = sqlState(error);
      if (state === "42P01" || state === "3F000") throw new QueueTablesMissingError(schema, error);
      throw error;
    }
  };

  // Wake-ups: one LISTEN for the store, opened by the first dequeue or wait. Notifications are
  // counted per queue and each dequeue remembers the count it saw, so a wait that follows an
  // empty dequeue returns at once if a notification came in between.
  const wakes = new Map<string, number>();
  const seen = new Map<string, number>();
  const waiters = new Map<string, Set<() => void>>();
  let listening: Promise<(() => Promise<void>) | undefined> | undefined;
  let closed = false;
  const onPayload = (payload: string) => {
    // An empty payload: notifications may have been missed (a reconnect); wake every queue.
    const names = payload === "" ? [...new Set([...waiters.keys(), ...seen.keys()])] : [payload];
    for (const q of names) {
      wakes.set(q, (wakes.get(q) ?? 0) + 1);
      for (const fn of waiters.get(q) ?? []) fn();
    }
  };
  const listen = () => {
    if (notifications === undefined || closed) return;
    listening ??= notifications.listen(channel, onPayload).catch((error) => {
      log.warn("LISTEN {channel} failed; queues poll instead: {message}", {
        channel,
        message: errorText(error),
      });
      return undefined;
    });
  };

  const toMessage = (queue: string, r: SqlRow): QueueMessage => ({
    id: String(r.id),
    queue,
    body: JSON.parse(String(r.body)),
    deliveries: Number(r.deliveries),
    receipt: String(r.receipt),
    enqueuedAt: new Date(r.enqueued_at as string),
    visibleUntil: new Date(r.visible_at as string),
    ...(r.previous_error === null || r.previous_error === undefined
      ? {}
      : { lastError: String(r.previous_error) }),
  });

  // A visible row that still holds a receipt was not settled within its visibility: that
  // delivery timed out, and its last error becomes the expiry now (written ahead at delivery,
  // it would hide the real previous error, a nack's, while the message is in flight).
  const dequeueSql = `
    WITH picked AS (
      SELECT id, deliveries,
             CASE WHEN receipt IS NOT NULL THEN $5::text || deliveries ELSE last_error END
               AS last_error
        FROM ${messages}
       WHERE queue = $1 AND visible_at <= now()
       ORDER BY visible_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
    ), dead AS (
      DELETE FROM ${messages} m USING picked
       WHERE m.id = picked.id AND picked.deliveries >= $4
      RETURNING m.id, m.queue, m.body, m.enqueued_at, m.deliveries, picked.last_error
    ), moved AS (
      INSERT INTO ${deadTable} (id, queue, body, enqueued_at, deliveries, last_error)
      SELECT id, queue, body, enqueued_at, deliveries, coalesce(last_error, '') FROM dead
      RETURNING id
    ), delivered AS (
      UPDATE ${messages} m
         SET deliveries = m.deliveries + 1, receipt = gen_random_uuid(),
             visible_at = now() + $3::integer * interval '1 millisecond',
             last_error = picked.last_error
        FROM picked
       WHERE m.id = picked.id AND picked.deliveries < $4
      RETURNING m.id, m.body::text AS body, m.deliveries, m.receipt::text AS receipt,
                m.enqueued_at, m.visible_at, picked.last_error AS previous_error
    )
    SELECT id::text, body, deliveries, receipt, enqueued_at, visible_at, previous_error,
           false AS dead
      FROM delivered
    UNION ALL
    SELECT id::text, NULL, NULL, NULL, NULL, NULL, NULL, true FROM moved`;

  return {
    maxDeliveries,
    async enqueue(queue: string, bodies: readonly unknown[], opts: EnqueueOptions = {}) {
      checkQueueName(queue);
      const texts = encodeBodies(bodies, maxMessageBytes);
      const delayMs = checkMs("delayMs", opts.delayMs ?? 0, 0);
      const via = opts.client;
      if (via !== undefined && typeof via?.query !== "function") {
        throw new InvalidArgumentError(
          "client",
          "must be a client inside the caller's transaction (with a query method)",
        );
      }
      if (texts.length === 0) return [];
      const rows = await run(
        `WITH ins AS (
           INSERT INTO ${messages} (queue, body, visible_at)
           SELECT $1, b::json, now() + $3::integer * interval '1 millisecond'
             FROM unnest($2::text[]) WITH ORDINALITY AS t(b, n) ORDER BY n
           RETURNING id
         )
         SELECT id::text, (SELECT pg_notify($4, $1) WHERE $3::integer = 0) AS notified
           FROM ins ORDER BY ins.id`,
        [queue, texts, delayMs, channel],
        via as SqlClient | undefined,
      );
      return rows.map((r) => String(r.id));
    },
    async dequeue(queue: string, opts: DequeueOptions) {
      checkQueueName(queue);
      const { visibilityMs, max } = checkDequeue(opts);
      listen();
      seen.set(queue, wakes.get(queue) ?? 0);
      const out: QueueMessage[] = [];
      // Rows moved to the dead letters take places of the LIMIT: try again while some were.
      for (;;) {
        const rows = await run(dequeueSql, [
          queue,
          max - out.length,
          visibilityMs,
          maxDeliveries,
          EXPIRED_ERROR,
        ]);
        let moved = 0;
        for (const r of rows) {
          if (r.dead === true) moved++;
          else out.push(toMessage(queue, r));
        }
        if (moved > 0) {
          log.warn("{count} messages of queue {queue} moved to the dead letters", {
            count: moved,
            queue,
          });
        }
        if (moved === 0 || out.length === max) break;
      }
      return out.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
    },
    async ack(message: QueueMessage) {
      checkDelivery(message);
      const rows = await run(
        `DELETE FROM ${messages} WHERE id = $1::bigint AND receipt = $2::uuid RETURNING id`,
        [message.id, checkReceipt(message.receipt)],
      );
      return rows.length > 0;
    },
    async ackMany(list: readonly QueueMessage[]) {
      checkDeliveries(list);
      if (list.length === 0) return [];
      const rows = await run(
        `DELETE FROM ${messages} m USING unnest($1::bigint[], $2::uuid[]) AS t(id, receipt)
          WHERE m.id = t.id AND m.receipt = t.receipt RETURNING m.id::text`,
        [list.map((m) => m.id), list.map((m) => checkReceipt(m.receipt))],
      );
      const acked = new Set(rows.map((r) => String(r.id)));
      // A message listed twice is acked by its first entry only, as in memory.
      return list.map((m) => acked.delete(m.id));
    },
    async nack(message: QueueMessage, opts?: NackOptions) {
      checkDelivery(message);
      const { delayMs, error } = checkNack(opts);
      const rows = await run(
        `WITH u AS (
           UPDATE ${messages}
              SET receipt = NULL, last_error = $3,
                  visible_at = now() + $4::integer * interval '1 millisecond'
            WHERE id = $1::bigint AND receipt = $2::uuid
           RETURNING queue
         )
         SELECT queue, CASE WHEN $4::integer = 0 THEN pg_notify($5, queue) END AS notified FROM u`,
        [message.id, checkReceipt(message.receipt), error, delayMs, channel],
      );
      return rows.length > 0;
    },
    async extend(message: QueueMessage, visibilityTimeoutMs: number) {
      checkDelivery(message);
      const ms = checkMs("visibilityTimeoutMs", visibilityTimeoutMs, 1);
      const rows = await run(
        `UPDATE ${messages} SET visible_at = now() + $3::integer * interval '1 millisecond'
          WHERE id = $1::bigint AND receipt = $2::uuid RETURNING id`,
        [message.id, checkReceipt(message.receipt), ms],
      );
      return rows.length > 0;
    },
    async stats(queue: string) {
      checkQueueName(queue);
      const [r] = await run(
        `SELECT count(*) FILTER (WHERE visible_at <= now()) AS ready,
                count(*) FILTER (WHERE visible_at > now() AND receipt IS NOT NULL) AS in_flight,
                count(*) FILTER (WHERE visible_at > now() AND receipt IS NULL) AS delayed,
                (SELECT count(*) FROM ${deadTable} WHERE queue = $1) AS dead
           FROM ${messages} WHERE queue = $1`,
        [queue],
      );
      const stats: QueueStats = {
        ready: Number(r.ready),
        inFlight: Number(r.in_flight),
        delayed: Number(r.delayed),
        dead: Number(r.dead),
      };
      return stats;
    },
    async peek(queue: string, limit = 100) {
      checkQueueName(queue);
      checkLimit(limit);
      const rows = await run(
        `SELECT id::text, body::text AS body, deliveries, enqueued_at, visible_at,
                CASE WHEN receipt IS NOT NULL AND visible_at <= now() THEN $3::text || deliveries
                     ELSE last_error END AS last_error,
                CASE WHEN visible_at <= now() THEN 'ready'
                     WHEN receipt IS NOT NULL THEN 'inFlight' ELSE 'delayed' END AS state
           FROM ${messages} WHERE queue = $1 ORDER BY enqueued_at, id LIMIT $2`,
        [queue, limit, EXPIRED_ERROR],
      );
      return rows.map((r): PeekedMessage => ({
        id: String(r.id),
        queue,
        body: JSON.parse(String(r.body)),
        state: r.state as PeekedMessage["state"],
        deliveries: Number(r.deliveries),
        enqueuedAt: new Date(r.enqueued_at as string),
        visibleAt: new Date(r.visible_at as string),
        ...(r.last_error === null ? {} : { lastError: String(r.last_error) }),
      }));
    },
    async deadLetters(queue: string, limit = 100) {
      checkQueueName(queue);
      checkLimit(limit);
      const rows = await run(
        `SELECT id::text, body::text AS body, deliveries, enqueued_at, dead_at, last_error
           FROM ${deadTable} WHERE queue = $1 ORDER BY dead_at, id LIMIT $2`,
        [queue, limit],
      );
      return rows.map((r): DeadLetter => ({
        id: String(r.id),
        queue,
        body: JSON.parse(String(r.body)),
        deliveries: Number(r.deliveries),
        enqueuedAt: new Date(r.enqueued_at as string),
        deadAt: new Date(r.dead_at as string),
        lastError: String(r.last_error),
      }));
    },
    async requeueDead(queue: string, limit = 1000) {
      checkQueueName(queue);
      checkLimit(limit);
      const rows = await run(
        `WITH picked AS (
           SELECT id FROM ${deadTable} WHERE queue = $1 ORDER BY dead_at, id LIMIT $2
           FOR UPDATE SKIP LOCKED
         ), moved AS (
           DELETE FROM ${deadTable} d USING picked WHERE d.id = picked.id
           RETURNING d.id, d.queue, d.body, d.enqueued_at, d.last_error
         ), back AS (
           INSERT INTO ${messages} (id, queue, body, enqueued_at, visible_at, last_error)
           SELECT id, queue, body, enqueued_at, now(), last_error FROM moved RETURNING id
         )
         SELECT count(*)::integer AS n, CASE WHEN count(*) > 0 THEN pg_notify($3, $1) END AS woken
           FROM back`,
        [queue, limit, channel],
      );
      return Number(rows[0].n);
    },
    async purgeDead(queue: string, opts: PurgeDeadOptions) {
      checkQueueName(queue);
      const { olderThanMs, limit } = checkPurge(opts);
      const rows = await run(
        `WITH gone AS (
           DELETE FROM ${deadTable} WHERE id IN (
             SELECT id FROM ${deadTable}
              WHERE queue = $1 AND dead_at <= now() - $2::bigint * interval '1 millisecond'
              ORDER BY dead_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
           RETURNING id
         )
         SELECT count(*)::integer AS n FROM gone`,
        [queue, olderThanMs, limit],
      );
      return Number(rows[0].n);
    },
    async wait(queue: string, timeoutMs: number, signal?: AbortSignal) {
      checkQueueName(queue);
      checkMs("timeoutMs", timeoutMs, 0);
      listen();
      const woken = wakes.get(queue) ?? 0;
      if (woken !== (seen.get(queue) ?? 0)) return void seen.set(queue, woken);
      const inner = new AbortController();
      const stop = () => inner.abort();
      signal?.addEventListener("abort", stop, { once: true });
      if (signal?.aborted || closed) inner.abort();
      let set = waiters.get(queue);
      if (set === undefined) waiters.set(queue, set = new Set());
      set.add(stop);
      try {
        await sleep(timeoutMs, inner.signal);
      } finally {
        set.delete(stop);
        if (set.size === 0) waiters.delete(queue);
        signal?.removeEventListener("abort", stop);
      }
    },
    async close() {
      closed = true;
      for (const set of waiters.values()) for (const fn of set) fn();
      const unlisten = await listening;
      listening = undefined;
      await unlisten?.();
    },
  };
}

/** A short, stable digest of a statement's text, for its name (FNV-1a, 32 bits, hex). */
function hash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A receipt this store never gave out is bad input, not a lost delivery. */
function checkReceipt(receipt: string): string {
  if (!UUID.test(receipt)) {
    throw new InvalidArgumentError(
      "message.receipt",
      `is not a receipt of a PostgreSQL queue delivery: ${JSON.stringify(receipt.slice(0, 80))}`,
    );
  }
  return receipt;
}
