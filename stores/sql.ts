/**
 * The small SQL surface impel's PostgreSQL adapters need, satisfied structurally by both a
 * `pg.Pool` (node-postgres) and an embedded PGlite database, plus identifier validation and
 * LISTEN/NOTIFY over a pool.
 *
 * Neither `pg` nor PGlite is imported here: the adapters take the application's client, so only
 * the application decides which driver is loaded.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";

const log = getLogger(["impel", "postgres"]);

/**
 * A result row: column name to value, as the driver decoded it.
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite";
 * import type { SqlClient, SqlRow } from "@impel/impel/stores/messagedb";
 * const db = new PGlite();
 * const client: SqlClient = db;
 * const { rows } = await client.query("SELECT 1 AS one, 'a' AS letter");
 * const row: SqlRow = rows[0];
 * console.log(row.one, row.letter); // 1 "a"
 * await db.close();
 * ```
 */
export type SqlRow = Record<string, unknown>;

/**
 * The one method the adapters call: run a parameterised statement and return its rows.
 * `pg.Pool`, `pg.Client` and PGlite all satisfy it as they are.
 *
 * @example
 * ```ts
 * import type { SqlClient } from "@impel/impel/stores/messagedb";
 * const client: SqlClient = {
 *   query: (_text, _params) => Promise.resolve({ rows: [{ one: 1 }] }),
 * };
 * const { rows } = await client.query("SELECT 1 AS one", []);
 * ```
 */
export interface SqlClient {
  /** Runs `text` with positional parameters `$1..$n` and resolves with the returned rows. */
  query(text: string, params?: unknown[]): Promise<{ rows: SqlRow[] }>;
}

/**
 * A way to receive PostgreSQL notifications. PGlite satisfies it as it is; for a `pg.Pool` use
 * {@linkcode poolNotifications}. `listen` resolves once the subscription is active and returns a
 * function that ends it.
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite";
 * import type { NotificationSource } from "@impel/impel/stores/messagedb";
 * const db = new PGlite();
 * const notifications: NotificationSource = db;
 * const stop = await notifications.listen("ch", (payload) => console.log(payload));
 * await stop();
 * ```
 */
export interface NotificationSource {
  /**
   * Subscribes `onPayload` to `channel`. An empty payload means "notifications may have been
   * missed" (sent after a lost connection is re-established); listeners should re-read.
   */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Returns `name` double-quoted for use as a SQL identifier after checking it is a plain
 * identifier (letters, digits, `_`, not starting with a digit, at most 63 bytes). Anything else
 * is rejected with {@linkcode InvalidArgumentError}; names are never escaped and interpolated.
 *
 * @example
 * ```ts
 * import { sqlIdentifier } from "@impel/impel/stores/messagedb";
 * sqlIdentifier("schema", "impel"); // "\"impel\""
 * ```
 */
export function sqlIdentifier(field: string, name: string): string {
  if (typeof name !== "string" || !IDENTIFIER.test(name) || name.length > 63) {
    throw new InvalidArgumentError(
      field,
      `must be a SQL identifier of at most 63 characters matching ${IDENTIFIER.source}, got ${
        describe(name)
      }`,
    );
  }
  return `"${name}"`;
}

/**
 * Reads a `bigint` column, which node-postgres returns as a string and PGlite as a number or
 * bigint.
 *
 * @example
 * ```ts
 * import { toBigInt } from "@impel/impel/stores/messagedb";
 * toBigInt("9007199254740993"); // 9007199254740993n
 * toBigInt(42); // 42n
 * ```
 */
export function toBigInt(value: unknown): bigint {
  switch (typeof value) {
    case "bigint":
      return value;
    case "number":
      if (Number.isInteger(value)) return BigInt(value);
      break;
    case "string":
      if (/^-?\d+$/.test(value)) return BigInt(value);
      break;
  }
  throw new ImpelError(
    "UnexpectedColumnValue",
    `expected an integer column, got ${describe(value)}`,
  );
}

/**
 * A `pg.PoolClient` as far as {@linkcode poolNotifications} uses it.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import type { ListeningClient } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const client: ListeningClient = await pool.connect();
 * client.on("notification", (message) => console.log(message));
 * await client.query("LISTEN impel_messagedb");
 * client.release();
 * await pool.end();
 * ```
 */
export interface ListeningClient {
  /** Runs a statement. */
  query(text: string): Promise<unknown>;
  /** Subscribes to connection events (`notification`, `error`). */
  on(event: "notification" | "error", listener: (arg: unknown) => void): unknown;
  /** Unsubscribes from connection events. */
  removeListener(event: "notification" | "error", listener: (arg: unknown) => void): unknown;
  /** Returns the connection to its pool; `true` or an error destroys it. */
  release(destroy?: Error | boolean): void;
}

/**
 * A `pg.Pool` as far as {@linkcode poolNotifications} uses it.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type ListeningPool, poolNotifications } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const listening: ListeningPool = pool;
 * const notifications = poolNotifications(listening);
 * await notifications.close();
 * await pool.end();
 * ```
 */
export interface ListeningPool {
  /** Checks out a dedicated connection. */
  connect(): Promise<ListeningClient>;
}

/**
 * Options of {@linkcode poolNotifications}.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type PoolNotificationOptions, poolNotifications } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * // Reconnect quickly after a failover, and keep trying at least every 2 s.
 * const options: PoolNotificationOptions = { minRetryMs: 50, maxRetryMs: 2000 };
 * const notifications = poolNotifications(pool, options);
 * await notifications.close();
 * await pool.end();
 * ```
 */
export interface PoolNotificationOptions {
  /** First delay before reconnecting after the connection is lost (default 100 ms). */
  readonly minRetryMs?: number;
  /** Longest delay between reconnection attempts (default 5000 ms). */
  readonly maxRetryMs?: number;
}

/**
 * A {@linkcode NotificationSource} over a pool, with a way to release its connection.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type PoolNotifications, poolNotifications } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const notifications: PoolNotifications = poolNotifications(pool);
 * const stop = await notifications.listen("impel_messagedb", (category) => console.log(category));
 * await stop();
 * await notifications.close(); // returns the listening connection to the pool
 * await pool.end();
 * ```
 */
export interface PoolNotifications extends NotificationSource {
  /** Ends every subscription and returns the connection to the pool. */
  close(): Promise<void>;
}

/**
 * Receives notifications through one dedicated connection checked out of a `pg.Pool`,
 * LISTENing to every channel subscribed. If the connection fails (server restart, terminated
 * backend) it is destroyed and re-established with backoff; once listening again every
 * subscriber gets an empty payload, since notifications sent meanwhile are lost.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { poolNotifications } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const notifications = poolNotifications(pool);
 * const stop = await notifications.listen("impel_messagedb", (category) => console.log(category));
 * await stop();
 * await notifications.close();
 * ```
 */
export function poolNotifications(
  pool: ListeningPool,
  options: PoolNotificationOptions = {},
): PoolNotifications {
  const minRetryMs = options.minRetryMs ?? 100;
  const maxRetryMs = options.maxRetryMs ?? 5000;
  const subscribers = new Map<string, Set<(payload: string) => void>>();
  let client: ListeningClient | undefined;
  let connecting: Promise<ListeningClient> | undefined;
  let closed = false;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let retryMs = minRetryMs;

  const onNotification = (message: { channel: string; payload?: string }) => {
    for (const fn of subscribers.get(message.channel) ?? []) fn(message.payload ?? "");
  };
  const onError = (error: Error) => {
    log.warn("notification connection lost: {message}", { message: error.message });
    drop(error);
    scheduleReconnect();
  };
  const drop = (error?: Error) => {
    const c = client;
    client = undefined;
    if (c === undefined) return;
    c.removeListener("notification", onNotification as (arg: unknown) => void);
    c.removeListener("error", onError as (arg: unknown) => void);
    // A listener must not stay attached while the connection sits in the pool, and a broken
    // connection must not go back into it.
    c.on("error", () => {});
    try {
      c.release(error ?? true);
    } catch {
      // already released by a failed connection
    }
  };
  const connect = (): Promise<ListeningClient> => {
    if (client !== undefined) return Promise.resolve(client);
    connecting ??= (async () => {
      const c = await pool.connect();
      try {
        c.on("error", onError as (arg: unknown) => void);
        c.on("notification", onNotification as (arg: unknown) => void);
        for (const channel of subscribers.keys()) await c.query(`LISTEN ${quote(channel)}`);
      } catch (error) {
        c.removeListener("error", onError as (arg: unknown) => void);
        c.removeListener("notification", onNotification as (arg: unknown) => void);
        c.on("error", () => {});
        c.release(true);
        throw error;
      }
      client = c;
      retryMs = minRetryMs;
      return c;
    })().finally(() => connecting = undefined);
    return connecting;
  };
  const scheduleReconnect = () => {
    if (closed || retryTimer !== undefined || subscribers.size === 0) return;
    retryTimer = setTimeout(async () => {
      retryTimer = undefined;
      try {
        await connect();
        log.info("notification connection re-established");
        for (const set of subscribers.values()) for (const fn of set) fn("");
      } catch (error) {
        log.debug("notification reconnect failed: {message}", { message: errorText(error) });
        retryMs = Math.min(retryMs * 2, maxRetryMs);
        scheduleReconnect();
      }
    }, retryMs);
  };

  return {
    async listen(channel, onPayload) {
      if (closed) throw new ImpelError("NotificationsClosed", "poolNotifications was closed");
      sqlIdentifier("channel", channel);
      let set = subscribers.get(channel);
      const first = set === undefined;
      if (set === undefined) subscribers.set(channel, set = new Set());
      set.add(onPayload);
      try {
        const c = await connect();
        if (first && client === c) await c.query(`LISTEN ${quote(channel)}`);
      } catch (error) {
        // The subscription stays registered: it becomes active when the connection comes back.
        log.warn("LISTEN {channel} failed, will retry: {message}", {
          channel,
          message: errorText(error),
        });
        drop();
        scheduleReconnect();
      }
      return async () => {
        set.delete(onPayload);
        if (set.size > 0 || subscribers.get(channel) !== set) return;
        subscribers.delete(channel);
        try {
          await client?.query(`UNLISTEN ${quote(channel)}`);
        } catch {
          // the connection is gone, and with it the LISTEN
        }
      };
    },
    close() {
      closed = true;
      if (retryTimer !== undefined) clearTimeout(retryTimer);
      retryTimer = undefined;
      subscribers.clear();
      drop();
      return Promise.resolve();
    },
  };
}

function quote(identifier: string): string {
  return sqlIdentifier("channel", identifier);
}

/**
 * The SQLSTATE of a driver error (`code` on both node-postgres and PGlite errors), if any.
 *
 * @example
 * ```ts
 * import { sqlState } from "@impel/impel/stores/messagedb";
 * sqlState({ code: "42P01" }); // "42P01"
 * sqlState(new Error("x")); // undefined
 * ```
 */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * Whether an error from a query is worth retrying: connection failures, server shutdowns,
 * serialization failures and the like. Errors in the statement itself (syntax, undefined
 * objects, privileges, raised exceptions) are not.
 *
 * @example
 * ```ts
 * import { isTransientSqlError } from "@impel/impel/stores/messagedb";
 * isTransientSqlError({ code: "57P01" }); // true: admin shutdown
 * isTransientSqlError({ code: "42P01" }); // false: undefined table
 * ```
 */
export function isTransientSqlError(error: unknown): boolean {
  const state = sqlState(error);
  if (state === undefined) return !(error instanceof ImpelError); // socket errors carry no SQLSTATE
  return /^(08|40|53|57|58)/.test(state) || state === "55P03" || state === "55006";
}
