/**
 * MessageDB (Eventide's PostgreSQL message store) as an impel {@linkcode EventStore}: appends
 * through `write_message` with an expected version, reads through `get_stream_messages`.
 *
 * The adapters take the application's client: a `pg.Pool` or an embedded PGlite database (see
 * {@linkcode SqlClient}). MessageDB's server functions name their table unqualified, so the
 * connection's `search_path` must include `message_store` (as Eventide's own deployments set on
 * the role: `ALTER ROLE … SET search_path TO message_store, public`, or on the database, or per
 * connection with the `pg` option `options: "-c search_path=message_store,public"`). A missing
 * search path is reported as {@linkcode MessageDbSetupError}.
 *
 * Mapping: an impel event's `index` is MessageDB's stream `position`; impel's expected version
 * (the stream's event count) is MessageDB's `expected_version` + 1. `correlationId` and
 * `causationId` travel in the metadata object under those names.
 *
 * @module
 */
import {
  checkKeySearch,
  IDEMPOTENCY_KEY,
  type IdempotencyKeyFinder,
  type LastEventReader,
} from "../core/decider.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { type StreamEvent, utf8Length } from "../core/event.ts";
import { storedJson } from "../core/json.ts";
import {
  type AppendResult,
  type EventData,
  type EventStore,
  type ExpectedVersion,
  type ReadStreamOptions,
  WrongExpectedVersionError,
} from "../core/store.ts";
import { checkStreamName, type StreamName } from "../core/streamName.ts";
import { errorText } from "../core/failure.ts";
import { type SqlClient, type SqlRow, sqlState } from "./sql.ts";

export {
  isTransientSqlError,
  type ListeningClient,
  type ListeningPool,
  type NotificationSource,
  type PoolNotificationOptions,
  type PoolNotifications,
  poolNotifications,
  type SqlClient,
  sqlIdentifier,
  type SqlRow,
  sqlState,
  toBigInt,
} from "./sql.ts";

/**
 * The MessageDB schema is missing or unreachable from the connection: the functions or the
 * `messages` table cannot be found (usually a `search_path` without `message_store`).
 *
 * @example
 * ```ts
 * import { MessageDbSetupError } from "@impel/impel/stores/messagedb";
 * const e = new MessageDbSetupError("relation \"messages\" does not exist");
 * console.log(e.code); // "MessageDbSetup"
 * ```
 */
export class MessageDbSetupError extends ImpelError {
  /** Creates the error from the driver's message. */
  constructor(detail: string, options?: ErrorOptions) {
    super(
      "MessageDbSetup",
      `MessageDB is not reachable through this connection (${detail}); install the schema from ` +
        `@eventide/message-db and include message_store in the search_path ` +
        `(e.g. ALTER DATABASE … SET search_path TO message_store, public)`,
      options,
    );
  }
}

/**
 * The columns impel selects from MessageDB's `message` result type. `position` arrives as a
 * float8 so that both drivers return a number; `time` as epoch milliseconds so that no driver
 * reinterprets MessageDB's zone-less UTC timestamp in the local zone.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { MESSAGE_COLUMNS, messageRowToEvent } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({
 *   connectionString: "postgres://postgres@127.0.0.1/impel_test",
 *   options: "-c search_path=message_store,public",
 * });
 * const { rows } = await pool.query(
 *   `SELECT ${MESSAGE_COLUMNS} FROM get_stream_messages($1, 0, 100)`,
 *   ["Order-1"],
 * );
 * const events = rows.map((row) => messageRowToEvent(row));
 * console.log(events.map((e) => `${e.index}:${e.type}`));
 * await pool.end();
 * ```
 */
export const MESSAGE_COLUMNS: string =
  "id, stream_name, type, position::float8 AS position, global_position::text AS global_position, " +
  "data, metadata, (extract(epoch FROM time) * 1000)::float8 AS time_ms";

/**
 * Converts a row of {@linkcode MESSAGE_COLUMNS} into an impel event. `data` and `metadata` are
 * MessageDB's JSON text, parsed here.
 *
 * @example
 * ```ts
 * import { messageRowToEvent } from "@impel/impel/stores/messagedb";
 * const e = messageRowToEvent({
 *   id: "6f1c…", stream_name: "A-1", type: "T", position: 0, global_position: "1",
 *   data: "{\"a\":1}", metadata: null, time_ms: 0,
 * });
 * console.log(e.index, e.data); // 0 { a: 1 }
 * ```
 */
export function messageRowToEvent(row: SqlRow): StreamEvent {
  const dataText = row.data as string | null;
  const metaText = row.metadata as string | null;
  const type = row.type as string;
  const meta = parseJson(metaText);
  const position = row.position;
  return {
    index: typeof position === "number" ? position : Number(position),
    type,
    data: parseJson(dataText),
    meta,
    id: row.id as string,
    time: new Date(row.time_ms as number),
    correlationId: metaString(meta, "correlationId"),
    causationId: metaString(meta, "causationId"),
    size: utf8Length(type) + utf8Length(dataText ?? "") + utf8Length(metaText ?? ""),
  };
}

function parseJson(text: unknown): unknown {
  if (text === null || text === undefined) return null;
  // node-postgres decodes json columns itself when a query selects them directly.
  return typeof text === "string" ? JSON.parse(text) : text;
}

function metaString(meta: unknown, key: string): string | undefined {
  if (meta === null || typeof meta !== "object") return undefined;
  const value = (meta as Record<string, unknown>)[key];
  return typeof value === "string" ? value : undefined;
}

/**
 * Wraps a driver error into {@linkcode MessageDbSetupError} when the schema is out of reach.
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite";
 * import { classifyMessageDbError, MessageDbSetupError } from "@impel/impel/stores/messagedb";
 * const db = new PGlite(); // no MessageDB schema here
 * try {
 *   await db.query("SELECT * FROM get_stream_messages($1)", ["Order-1"]);
 * } catch (error) {
 *   const classified = classifyMessageDbError(error);
 *   console.log(classified instanceof MessageDbSetupError); // true: undefined function
 * }
 * await db.close();
 * ```
 */
export function classifyMessageDbError(error: unknown): unknown {
  const state = sqlState(error);
  // 42P01 undefined table, 42883 undefined function, 3F000 invalid schema name.
  if (state === "42P01" || state === "42883" || state === "3F000") {
    return new MessageDbSetupError(errorText(error), { cause: error });
  }
  return error;
}

/**
 * Options of {@linkcode messageDbStore}.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { type MessageDbStoreOptions, messageDbStore } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({
 *   connectionString: "postgres://postgres@127.0.0.1/impel_test",
 *   options: "-c search_path=message_store,public",
 * });
 * // Long streams are read 100 events per round trip.
 * const options: MessageDbStoreOptions = { readBatchSize: 100 };
 * const store = messageDbStore(pool, options);
 * const events = await store.readStream("Order-1");
 * await pool.end();
 * ```
 */
export interface MessageDbStoreOptions {
  /** Events per `get_stream_messages` call when reading a whole stream (default 1000). */
  readonly readBatchSize?: number;
}

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const WRONG_VERSION = /Wrong expected version: (-?\d+) \(Stream: (.*), Stream Version: (-?\d+)\)/;

/**
 * An {@linkcode EventStore} over MessageDB. `append` writes all its events in one statement
 * (one transaction, holding MessageDB's category lock), so they land contiguously or not at all;
 * a version mismatch rejects with {@linkcode WrongExpectedVersionError}.
 * `readLastEvent(stream, type)` (MessageDB's `get_last_stream_message`) lets a decider with
 * rolling snapshots load from the latest snapshot; `findIdempotencyKey` lets a transact that may
 * repeat search the stream for its key in one query.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { messageDbStore } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * const store = messageDbStore(pool);
 * const { nextIndex } = await store.append("Order-1", [{ type: "Placed", data: { total: 3 } }], 0);
 * const events = await store.readStream("Order-1"); // [{ index: 0, type: "Placed", ... }]
 * ```
 */
export function messageDbStore(
  client: SqlClient,
  options: MessageDbStoreOptions = {},
): EventStore & LastEventReader & IdempotencyKeyFinder {
  const readBatchSize = checkInteger("readBatchSize", options.readBatchSize ?? 1000, 1);
  return {
    // A decider's cold load starts at the latest snapshot found here, not at the stream's start.
    async readLastEvent(stream: StreamName, type?: string): Promise<StreamEvent | undefined> {
      checkStreamName(stream);
      const rows = await run(
        client,
        `SELECT ${MESSAGE_COLUMNS} FROM message_store.get_last_stream_message($1, $2)`,
        [stream, type ?? null],
      );
      return rows.length === 0 ? undefined : messageRowToEvent(rows[0]);
    },

    // A transact that may repeat finds its key in one query, not by reading the whole stream.
    async findIdempotencyKey(stream, key, findOptions) {
      const { from, to } = checkKeySearch(stream, key, findOptions);
      // Text jsonb cannot hold (as no append can have stored it): the driver would send a lone
      // surrogate as U+FFFD, finding another key, and U+0000 fails as a raw driver error.
      if (!key.isWellFormed() || key.includes("\u0000")) {
        throw new InvalidArgumentError(
          "idempotencyKey",
          `must be text MessageDB can store (no U+0000, no lone surrogate), got ${describe(key)}`,
        );
      }
      // MessageDB's messages_stream index orders a stream's rows by position; the key is
      // compared as a JSON string, as the decider matches only string keys.
      const rows = await run(
        client,
        `SELECT position::float8 AS position FROM message_store.messages
          WHERE stream_name = $1 AND position >= $2 AND ($3::bigint IS NULL OR position < $3)
            AND metadata->'${IDEMPOTENCY_KEY}' = to_jsonb($4::text)
          ORDER BY position LIMIT 1`,
        [stream, from, to === Infinity ? null : to, key],
      );
      return rows.length === 0 ? undefined : Number(rows[0].position);
    },

    async readStream(
      stream: StreamName,
      readOptions: ReadStreamOptions = {},
    ): Promise<StreamEvent[]> {
      checkStreamName(stream);
      let from = checkInteger("fromIndex", readOptions.fromIndex ?? 0, 0);
      const max = readOptions.maxCount === undefined
        ? Infinity
        : checkInteger("maxCount", readOptions.maxCount, 0);
      const out: StreamEvent[] = [];
      while (out.length < max) {
        const want = Math.min(readBatchSize, max - out.length);
        const rows = await run(
          client,
          `SELECT ${MESSAGE_COLUMNS} FROM message_store.get_stream_messages($1, $2, $3)`,
          [stream, from, want],
        );
        for (const row of rows) out.push(messageRowToEvent(row));
        if (rows.length < want) break;
        from = out[out.length - 1].index + 1;
      }
      return out;
    },

    async append(
      stream: StreamName,
      events: readonly EventData[],
      expectedVersion: ExpectedVersion,
    ): Promise<AppendResult> {
      checkStreamName(stream);
      if (expectedVersion !== "any") checkInteger("expectedVersion", expectedVersion, 0);
      if (!Array.isArray(events)) throw new InvalidArgumentError("events", "must be an array");
      if (events.length === 0) {
        const version = await streamVersion(client, stream);
        if (expectedVersion !== "any" && expectedVersion !== version) {
          throw new WrongExpectedVersionError(stream, expectedVersion, version);
        }
        return { nextIndex: version };
      }
      const ids: string[] = [], types: string[] = [], data: string[] = [];
      const metas: (string | null)[] = [];
      for (const [i, e] of events.entries()) {
        if (typeof e?.type !== "string" || e.type.length === 0) {
          throw new InvalidArgumentError(
            `events[${i}].type`,
            `must be a non-empty string, got ${describe(e?.type)}`,
          );
        }
        const id = e.id ?? crypto.randomUUID();
        if (!UUID.test(id)) {
          throw new InvalidArgumentError(
            `events[${i}].id`,
            `must be a UUID (MessageDB ids are uuid), got ${describe(id)}`,
          );
        }
        ids.push(id);
        types.push(e.type);
        data.push(storedJson(`events[${i}].data`, e.data ?? null)!);
        metas.push(metadataJson(e, i));
      }
      // MessageDB counts versions from -1 (empty); impel counts events. With "any", every call
      // passes NULL and the category lock, held to the end of the statement, keeps the writes
      // contiguous.
      const first = expectedVersion === "any" ? null : expectedVersion - 1;
      try {
        const rows = await run(
          client,
          `SELECT message_store.write_message(w.id, $1, w.type, w.data::jsonb, w.meta::jsonb,
                    CASE WHEN $6::bigint IS NULL THEN NULL ELSE $6::bigint + w.ord - 1 END)::float8
                    AS position
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                  WITH ORDINALITY AS w(id, type, data, meta, ord)`,
          [stream, ids, types, data, metas, first],
        );
        const last = rows[rows.length - 1]?.position as number;
        return { nextIndex: last + 1 };
      } catch (error) {
        const match = WRONG_VERSION.exec(errorText(error));
        if (match !== null && expectedVersion !== "any") {
          throw new WrongExpectedVersionError(stream, expectedVersion, Number(match[3]) + 1);
        }
        throw classifyMessageDbError(error);
      }
    },
  };
}

function metadataJson(e: EventData, i: number): string | null {
  const ids: Record<string, string> = {};
  if (e.correlationId !== undefined) ids.correlationId = e.correlationId;
  if (e.causationId !== undefined) ids.causationId = e.causationId;
  const hasIds = Object.keys(ids).length > 0;
  if (e.meta === undefined || e.meta === null) return hasIds ? JSON.stringify(ids) : null;
  if (!hasIds) return storedJson(`events[${i}].meta`, e.meta) ?? null;
  if (typeof e.meta !== "object" || Array.isArray(e.meta)) {
    throw new InvalidArgumentError(
      `events[${i}].meta`,
      "must be an object when correlationId or causationId is given (they are stored in it)",
    );
  }
  return storedJson(`events[${i}].meta`, { ...e.meta, ...ids })!;
}

/**
 * The number of events in `stream` (MessageDB's `stream_version` + 1).
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { messageDbStore, streamVersion } from "@impel/impel/stores/messagedb";
 * const pool = new pg.Pool({
 *   connectionString: "postgres://postgres@127.0.0.1/impel_test",
 *   options: "-c search_path=message_store,public",
 * });
 * const stream = `Order-${crypto.randomUUID()}`;
 * const version = await streamVersion(pool, stream); // 0: no messages yet
 * await messageDbStore(pool).append(stream, [{ type: "Placed", data: {} }], version);
 * console.log(await streamVersion(pool, stream)); // 1
 * await pool.end();
 * ```
 */
export async function streamVersion(client: SqlClient, stream: StreamName): Promise<number> {
  const rows = await run(client, "SELECT message_store.stream_version($1)::float8 AS v", [stream]);
  const v = rows[0]?.v;
  return v === null || v === undefined ? 0 : Number(v) + 1;
}

async function run(client: SqlClient, text: string, params: unknown[]): Promise<SqlRow[]> {
  try {
    return (await client.query(text, params)).rows;
  } catch (error) {
    throw classifyMessageDbError(error);
  }
}

/**
 * The SQL scripts of MessageDB's installer in the order its `install.sh` runs them, derived from
 * the package's own shell scripts (`$base/….sql` references, following `source $base/….sh`).
 * `readFile` reads a path relative to the package's `database` folder.
 *
 * @example
 * ```ts ignore
 * import { messageDbInstallScripts } from "@impel/impel/stores/messagedb";
 * const dir = "node_modules/@eventide/message-db/database/";
 * const scripts = await messageDbInstallScripts((path) => Deno.readTextFile(dir + path));
 * console.log(scripts[0].path); // "roles/message-store.sql"
 * ```
 */
export async function messageDbInstallScripts(
  readFile: (path: string) => Promise<string>,
): Promise<Array<{ path: string; sql: string }>> {
  const paths: string[] = [];
  const visit = async (script: string) => {
    const text = await readFile(script);
    for (const m of text.matchAll(/\$base\/([\w./-]+\.(?:sql|sh))\b/g)) {
      const line = text.slice(text.lastIndexOf("\n", m.index) + 1, text.indexOf("\n", m.index));
      if (line.trimStart().startsWith("#")) continue;
      if (m[1].endsWith(".sh")) await visit(m[1]);
      else paths.push(m[1]);
    }
  };
  await visit("install.sh");
  if (paths.length === 0) {
    throw new ImpelError("MessageDbSetup", "no SQL scripts found in MessageDB's install.sh");
  }
  return Promise.all(paths.map(async (path) => ({ path, sql: await readFile(path) })));
}

/**
 * A client that can run several statements in one call (PGlite's `exec`).
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite";
 * import type { ScriptClient } from "@impel/impel/stores/messagedb";
 * const db = new PGlite();
 * // What installMessageDbSchema(client, readFile) runs each installer script with.
 * const client: ScriptClient = db;
 * await client.exec("CREATE SCHEMA message_store; SET search_path TO message_store, public");
 * await db.close();
 * ```
 */
export interface ScriptClient {
  /** Runs a script of one or more statements without parameters. */
  exec(sql: string): Promise<unknown>;
}

/**
 * Installs the MessageDB schema into a database that has no `psql` to run MessageDB's
 * `install.sh` (an embedded PGlite): runs the package's scripts in the installer's order, then
 * sets the search path for the session. PGlite needs the `pgcrypto` extension loaded
 * (`@electric-sql/pglite/contrib/pgcrypto`) for MessageDB's extension script.
 *
 * @example
 * ```ts ignore
 * import { PGlite } from "@electric-sql/pglite";
 * import { pgcrypto } from "@electric-sql/pglite/contrib/pgcrypto";
 * import { installMessageDbSchema } from "@impel/impel/stores/messagedb";
 * const db = await PGlite.create({ extensions: { pgcrypto } });
 * const dir = "node_modules/@eventide/message-db/database/";
 * await installMessageDbSchema(db, (path) => Deno.readTextFile(dir + path));
 * ```
 */
export async function installMessageDbSchema(
  client: ScriptClient,
  readFile: (path: string) => Promise<string>,
): Promise<void> {
  for (const { path, sql } of await messageDbInstallScripts(readFile)) {
    try {
      await client.exec(sql);
    } catch (error) {
      throw new ImpelError(
        "MessageDbSetup",
        `MessageDB script ${path} failed: ${errorText(error)}`,
        {
          cause: error,
        },
      );
    }
  }
  await client.exec("SET search_path TO message_store, public");
}
