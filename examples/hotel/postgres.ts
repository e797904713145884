/**
 * The hotel backends on PostgreSQL with the MessageDB schema: an embedded PGlite database
 * (in memory, or kept in a directory) and a real server through `pg`. Both use the same store,
 * source, checkpoint table and NOTIFY trigger, so the reactor wakes within milliseconds of an
 * append instead of polling.
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
import { pgcrypto } from "@electric-sql/pglite/contrib/pgcrypto";
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { ImpelError } from "../../core/errors.ts";
import type { StreamsSink } from "../../core/sink.ts";
import { installNotifyTrigger, messageDbSource } from "../../sources/messagedb.ts";
import {
  installMessageDbSchema,
  messageDbStore,
  type NotificationSource,
  poolNotifications,
  type SqlClient,
  toBigInt,
} from "../../stores/messagedb.ts";
import { GROUP_CHECKOUT } from "./groupCheckout.ts";
import { REACTOR_GROUP } from "./reactor.ts";
import type { HotelBackend } from "./wiring.ts";

/** Options shared by the PostgreSQL backends. */
export interface PostgresBackendOptions {
  /** The reactor's consumer group (default {@linkcode REACTOR_GROUP}). */
  readonly group?: string;
  /**
   * Where a consumer group without a checkpoint starts: `"start"` (default) or `"tail"` (a test
   * sharing a database with earlier runs handles only what it writes).
   */
  readonly whenNoCheckpoint?: "start" | "tail";
}

function backend(
  name: string,
  client: SqlClient,
  notifications: NotificationSource,
  options: PostgresBackendOptions,
  close: () => Promise<void>,
): HotelBackend {
  const checkpoints = postgresCheckpoints(client);
  const head = async (): Promise<bigint> => {
    const { rows } = await client.query(
      `SELECT coalesce(max(global_position), 0)::text AS head FROM message_store.messages
        WHERE message_store.category(stream_name) = $1`,
      [GROUP_CHECKOUT],
    );
    return toBigInt(rows[0].head);
  };
  return {
    name,
    store: messageDbStore(client),
    source: (signal) =>
      messageDbSource({
        client,
        categories: [GROUP_CHECKOUT],
        group: options.group ?? REACTOR_GROUP,
        checkpoints,
        notifications,
        whenNoCheckpoint: options.whenNoCheckpoint,
        signal,
      }),
    async settle(sink: StreamsSink, timeoutMs = 30_000) {
      // The feed reaches the reactor through the server, so the monitor cannot know about
      // appends the source has not read yet: wait until the reactor is past the category's
      // head, and check that the head did not move meanwhile (the reactor's own writes).
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const before = await head();
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          throw new ImpelError("Timeout", `the reactor did not catch up within ${timeoutMs} ms`);
        }
        await sink.monitor.awaitCompletion({ tail: true, timeoutMs: remaining });
        const completed = sink.stats().tranches.find((t) => t.tranche === GROUP_CHECKOUT)
          ?.completed;
        if (completed !== undefined && completed > before && (await head()) === before) return;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
    close,
  };
}

async function prepare(client: SqlClient): Promise<void> {
  await installNotifyTrigger(client);
  await initPostgresCheckpoints(client);
}

/** Reads a file of the `@eventide/message-db` package's `database` folder. */
function readSchemaFile(path: string): Promise<string> {
  const dir = new URL("../../node_modules/@eventide/message-db/database/", import.meta.url);
  return Deno.readTextFile(new URL(path, dir));
}

/**
 * An embedded PGlite database with the MessageDB schema, in memory or kept in `dir` (created
 * and set up on first use, reopened afterwards). No server needed.
 *
 * @example
 * ```ts ignore
 * import { pgliteBackend } from "./postgres.ts";
 * const backend = await pgliteBackend("./hotel-data");
 * await backend.close();
 * ```
 */
export async function pgliteBackend(
  dir?: string,
  options: PostgresBackendOptions = {},
): Promise<HotelBackend> {
  const db = await PGlite.create({ dataDir: dir, extensions: { pgcrypto } });
  try {
    const { rows } = await db.query<{ installed: boolean }>(
      "SELECT to_regclass('message_store.messages') IS NOT NULL AS installed",
    );
    if (rows[0].installed) await db.exec("SET search_path TO message_store, public");
    else await installMessageDbSchema(db, readSchemaFile);
    await prepare(db);
  } catch (error) {
    await db.close();
    throw error;
  }
  return backend(`pglite (${dir ?? "in memory"})`, db, db, options, () => db.close());
}

/**
 * A PostgreSQL server with the MessageDB schema installed (e.g. by `tools/postgres.sh`). The
 * connection puts `message_store` on the search path itself, so the database needs no setting.
 *
 * @example
 * ```ts ignore
 * import { messageDbBackend } from "./postgres.ts";
 * const backend = await messageDbBackend("postgres://postgres@127.0.0.1:5432/impel_test");
 * await backend.close();
 * ```
 */
export async function messageDbBackend(
  url: string,
  options: PostgresBackendOptions = {},
): Promise<HotelBackend> {
  const pool = new pg.Pool({
    connectionString: url,
    max: 8,
    options: "-c search_path=message_store,public",
  });
  pool.on("error", () => {}); // an idle connection dropped by the server is replaced on next use
  const notifications = poolNotifications(pool);
  try {
    await prepare(pool);
  } catch (error) {
    await notifications.close();
    await pool.end();
    throw error;
  }
  const shown = url.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@"); // never print a password
  return backend(`messagedb (${shown})`, pool, notifications, options, async () => {
    await notifications.close();
    await pool.end();
  });
}
