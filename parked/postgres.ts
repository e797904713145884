/**
 * A park store in one PostgreSQL table, for `pg.Pool` or PGlite clients (see
 * {@linkcode SqlClient}). Each episode of a parked stream is a row with `idx = -1` (its state,
 * failure, request, claim and resolution), each parked event a row with its index and the event
 * as JSON. Every operation is one statement, so it is atomic without a transaction: a write that
 * adds events locks its episode's row, and so does a resolution, so that an event is either in a
 * resolved episode's count or handled by the writer as not parked, never lost in between.
 *
 * The table is created by {@linkcode initPostgresParkStore}, never implicitly, so that an
 * application whose role may not run DDL can have it created by a migration instead.
 *
 * @module
 */
import type { StreamEvent } from "../core/event.ts";
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import {
  checkParkName,
  checkParkRequest,
  checkParkWrites,
  decodeParkedEvent,
  encodeParkedEvent,
  newClaimToken,
  type ParkedStream,
  ParkRequestConflictError,
  type ParkStore,
  type ParkWriteOutcome,
  skipBound,
  StreamNotParkedError,
} from "../core/park.ts";
import { runDdl } from "../stores/ddl.ts";
import { type SqlClient, sqlIdentifier, type SqlRow, sqlState } from "../stores/sql.ts";

export type { SqlClient } from "../stores/sql.ts";

/**
 * Where the park table lives.
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite";
 * import {
 *   initPostgresParkStore,
 *   type PostgresParkStoreOptions,
 *   postgresParkStore,
 * } from "@impel/impel/parked/postgres";
 * const db = new PGlite(); // or a pg.Pool
 * const options: PostgresParkStoreOptions = { schema: "reactor", table: "parked" };
 * await initPostgresParkStore(db, options);
 * const store = postgresParkStore(db, options);
 * console.log(await store.list("billing")); // [], from "reactor"."parked"
 * await db.close();
 * ```
 *
 * @category Parked streams
 */
export interface PostgresParkStoreOptions {
  /** The schema (default `impel`); a plain SQL identifier. */
  readonly schema?: string;
  /** The table (default `parked`); a plain SQL identifier of at most 50 characters. */
  readonly table?: string;
}

/**
 * The park table does not exist (or is not reachable with the given schema and table).
 *
 * @example
 * ```ts
 * import { ParkTableMissingError } from "@impel/impel/parked/postgres";
 * const e = new ParkTableMissingError("\"impel\".\"parked\"");
 * console.log(e.code); // "ParkTableMissing"
 * ```
 *
 * @category Parked streams
 */
export class ParkTableMissingError extends ImpelError {
  /** Creates the error for the qualified table name. */
  constructor(table: string, options?: ErrorOptions) {
    super(
      "ParkTableMissing",
      `park table ${table} does not exist; call initPostgresParkStore first`,
      options,
    );
  }
}

function names(options: PostgresParkStoreOptions) {
  const schema = sqlIdentifier("schema", options?.schema ?? "impel");
  const bare = options?.table ?? "parked";
  const table = sqlIdentifier("table", bare);
  if (bare.length > 50) {
    throw new InvalidArgumentError(
      "table",
      `must be at most 50 characters (its indexes are named after it), got ${bare.length}`,
    );
  }
  return {
    schema,
    table: `${schema}.${table}`,
    active: sqlIdentifier("table", `${bare}_active`),
    requested: sqlIdentifier("table", `${bare}_requested`),
    // The name PostgreSQL gave the column's check when the table was made without one.
    stateCheck: sqlIdentifier("table", `${bare}_state_check`),
    stateCheckName: `${bare}_state_check`,
  };
}

const STATES = "('parked', 'released', 'skipped', 'failed')";

/**
 * Creates the schema, the park table and its indexes if they do not exist. Safe to call on every
 * start.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { initPostgresParkStore } from "@impel/impel/parked/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresParkStore(pool, { schema: "impel", table: "parked" });
 * ```
 *
 * @category Parked streams
 */
export async function initPostgresParkStore(
  client: SqlClient,
  options: PostgresParkStoreOptions = {},
): Promise<void> {
  const n = names(options);
  const regclass = n.table.replace(/'/g, "''");
  // Members start together: each statement is retried while it loses a race with a concurrent
  // creator (runDdl), one at a time so that it works on a pool.
  await runDdl(client, [
    `CREATE SCHEMA IF NOT EXISTS ${n.schema}`,
    `CREATE TABLE IF NOT EXISTS ${n.table} (
       consumer_group text NOT NULL,
       stream text NOT NULL,
       episode bigint NOT NULL,
       idx bigint NOT NULL CHECK (idx >= -1),
       event text,
       state text CONSTRAINT ${n.stateCheck} CHECK (state IN ${STATES}),
       first_index bigint,
       next_index bigint,
       event_count bigint,
       error text,
       attempts integer,
       first_failed_at timestamptz,
       last_failed_at timestamptz,
       parked_at timestamptz,
       request_action text CHECK (request_action IN ('release', 'skip')),
       request_by text,
       request_reason text,
       requested_at timestamptz,
       claim_by text,
       claim_until timestamptz,
       claim_token text,
       tranche text,
       request_to bigint,
       resolved_at timestamptz,
       applied_by text,
       resolved_events bigint,
       PRIMARY KEY (consumer_group, stream, episode, idx),
       CHECK ((idx = -1) = (state IS NOT NULL) AND (idx >= 0) = (event IS NOT NULL))
     )`,
    // Tables made before claims had tokens (fenced claims) get the column.
    `ALTER TABLE ${n.table} ADD COLUMN IF NOT EXISTS claim_token text`,
    `ALTER TABLE ${n.table} ADD COLUMN IF NOT EXISTS tranche text`,
    // A skip's bound (ParkRequest.upTo), on the request and on the skip's history row.
    `ALTER TABLE ${n.table} ADD COLUMN IF NOT EXISTS request_to bigint`,
    // Tables made before failed releases were recorded (state 'failed') take the new state, once:
    // the check is replaced unvalidated (the rows are valid), so it costs no scan.
    `DO $$ BEGIN
       IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = '${regclass}'::regclass
                   AND contype = 'c' AND conname = '${n.stateCheckName}'
                   AND pg_get_constraintdef(oid) NOT LIKE '%failed%') THEN
         ALTER TABLE ${n.table} DROP CONSTRAINT IF EXISTS ${n.stateCheck},
           ADD CONSTRAINT ${n.stateCheck} CHECK (state IN ${STATES}) NOT VALID;
       END IF;
     END $$`,
    `CREATE UNIQUE INDEX IF NOT EXISTS ${n.active} ON ${n.table} (consumer_group, stream)
      WHERE idx = -1 AND state = 'parked'`,
    `CREATE INDEX IF NOT EXISTS ${n.requested} ON ${n.table} (consumer_group)
      WHERE idx = -1 AND state = 'parked' AND request_action IS NOT NULL`,
  ]);
}

const ms = (column: string) => `round(extract(epoch FROM ${column}) * 1000)::float8`;
const COLUMNS = `consumer_group, stream, episode::text AS episode, state,
  first_index::text AS first_index, next_index::text AS next_index, event_count::text AS event_count,
  error, attempts, ${ms("first_failed_at")} AS first_failed_at,
  ${ms("last_failed_at")} AS last_failed_at, ${ms("parked_at")} AS parked_at,
  request_action, request_by, request_reason, ${ms("requested_at")} AS requested_at,
  claim_by, ${ms("claim_until")} AS claim_until, claim_token, tranche, ${
  ms("resolved_at")
} AS resolved_at,
  applied_by, resolved_events::text AS resolved_events, request_to::text AS request_to`;

function entryOf(r: SqlRow): ParkedStream {
  const state = r.state as ParkedStream["state"];
  const reason = r.request_reason === null ? {} : { reason: r.request_reason as string };
  const upTo = r.request_to === null || r.request_to === undefined
    ? {}
    : { upTo: Number(r.request_to) };
  const base = {
    group: r.consumer_group as string,
    stream: r.stream as string,
    ...(r.tranche === null || r.tranche === undefined ? {} : { tranche: r.tranche as string }),
    episode: r.episode as string,
    state,
    first: Number(r.first_index),
    next: Number(r.next_index),
    events: Number(r.event_count),
    error: r.error as string,
    attempts: Number(r.attempts),
    firstFailedAt: Number(r.first_failed_at),
    lastFailedAt: Number(r.last_failed_at),
    parkedAt: Number(r.parked_at),
  };
  if (state !== "parked") {
    return {
      ...base,
      resolution: {
        action: state === "skipped" ? "skip" : "release",
        by: r.request_by as string,
        ...reason,
        at: Number(r.resolved_at),
        appliedBy: r.applied_by as string,
        events: Number(r.resolved_events),
        ...(state === "skipped" ? upTo : {}),
      },
    };
  }
  return {
    ...base,
    ...(r.request_action === null ? {} : {
      request: {
        action: r.request_action as "release" | "skip",
        by: r.request_by as string,
        ...reason,
        at: Number(r.requested_at),
        ...(r.request_action === "skip" ? upTo : {}),
      },
    }),
    ...(r.claim_by === null ? {} : {
      claim: {
        by: r.claim_by as string,
        until: Number(r.claim_until),
        token: (r.claim_token ?? "") as string,
      },
    }),
  };
}

/**
 * A {@linkcode ParkStore} over a PostgreSQL table created by {@linkcode initPostgresParkStore}.
 * Times are kept as `timestamptz` (to the millisecond), events as JSON text.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { streamsSink } from "@impel/impel";
 * import { initPostgresParkStore, postgresParkStore } from "@impel/impel/parked/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresParkStore(pool);
 * const sink = streamsSink({
 *   group: "billing",
 *   handler: () => {},
 *   failure: { kind: "park", maxAttempts: 3, store: postgresParkStore(pool) },
 * });
 * ```
 *
 * @category Parked streams
 */
export function postgresParkStore(
  client: SqlClient,
  options: PostgresParkStoreOptions = {},
): ParkStore {
  const { table: T } = names(options);
  const run = async (text: string, params: unknown[]): Promise<SqlRow[]> => {
    try {
      return (await client.query(text, params)).rows;
    } catch (error) {
      if (sqlState(error) === "42P01" || sqlState(error) === "3F000") {
        throw new ParkTableMissingError(T, { cause: error });
      }
      throw error;
    }
  };
  const episodeId = (episode: string) => /^\d{1,18}$/.test(episode) ? episode : undefined;

  const parkSql = `
    WITH w AS (
      SELECT * FROM unnest($2::text[], $3::bool[], $4::text[], $5::int[], $6::float8[],
        $7::float8[], $8::bigint[], $9::bigint[], $10::bigint[], $15::text[])
        AS w(stream, failed, error, attempts, first_failed, last_failed, handled_to, ev_first, ev_next,
             tranche)
    ), e AS (
      SELECT * FROM unnest($11::text[], $12::bigint[], $13::text[]) AS e(stream, idx, event)
    ), cur AS (
      -- The active episodes written to, locked. Rows are looked up by stream = ANY($2) here and
      -- below, so that no plan scans a whole group however stale the table's statistics are (a
      -- table that grows fast from empty).
      SELECT h.stream, h.episode, h.first_index, h.next_index, h.request_action, h.request_by,
             h.request_reason, h.requested_at, h.claim_by, h.parked_at, h.first_failed_at,
             h.tranche
        FROM ${T} h JOIN w ON w.stream = h.stream
       WHERE h.consumer_group = $1 AND h.stream = ANY($2::text[]) AND h.idx = -1
         AND h.state = 'parked'
         FOR UPDATE OF h
    ), created AS (
      INSERT INTO ${T} (consumer_group, stream, episode, idx, state, first_index, next_index,
        event_count, error, attempts, first_failed_at, last_failed_at, parked_at, tranche)
      SELECT $1, w.stream,
        coalesce((SELECT max(p.episode) FROM ${T} p
                   WHERE p.consumer_group = $1 AND p.stream = w.stream AND p.idx = -1), 0) + 1,
        -1, 'parked', coalesce(w.ev_first, w.handled_to, 0),
        coalesce(w.ev_next, w.handled_to, 0),
        (SELECT count(*) FROM e WHERE e.stream = w.stream), w.error, w.attempts,
        to_timestamp(w.first_failed / 1000), to_timestamp(w.last_failed / 1000),
        to_timestamp($14::float8 / 1000), w.tranche
        FROM w WHERE w.failed AND NOT EXISTS (SELECT 1 FROM cur WHERE cur.stream = w.stream)
      RETURNING stream, episode, first_index
    ), target AS (
      SELECT cur.stream, cur.episode,
             CASE WHEN w.failed AND w.handled_to > cur.first_index THEN w.handled_to
                  ELSE cur.first_index END AS first_index
        FROM cur JOIN w ON w.stream = cur.stream
      UNION ALL SELECT stream, episode, first_index FROM created
    ), inserted AS (
      -- What is not stored yet, at or above the first event still parked.
      INSERT INTO ${T} (consumer_group, stream, episode, idx, event)
      SELECT $1, e.stream, t.episode, e.idx, e.event FROM e JOIN target t ON t.stream = e.stream
       WHERE e.idx >= t.first_index
      ON CONFLICT DO NOTHING
      RETURNING stream
    ), added AS (
      SELECT stream, count(*) AS n FROM inserted GROUP BY stream
    ), x AS MATERIALIZED (
      -- One row per episode to update, with what was added: scanned once per updated row.
      SELECT cur.stream, cur.episode, coalesce(added.n, 0) AS added, w.failed, w.error,
             w.attempts, w.last_failed, w.handled_to, w.ev_next, w.tranche
        FROM cur JOIN w ON w.stream = cur.stream LEFT JOIN added ON added.stream = cur.stream
    ), updated AS (
      UPDATE ${T} h SET
        tranche = coalesce(x.tranche, h.tranche),
        error = CASE WHEN x.failed THEN x.error ELSE h.error END,
        attempts = CASE WHEN x.failed THEN x.attempts ELSE h.attempts END,
        last_failed_at = CASE WHEN x.failed THEN to_timestamp(x.last_failed / 1000)
                         ELSE h.last_failed_at END,
        request_action = CASE WHEN x.failed THEN NULL ELSE h.request_action END,
        request_by = CASE WHEN x.failed THEN NULL ELSE h.request_by END,
        request_reason = CASE WHEN x.failed THEN NULL ELSE h.request_reason END,
        requested_at = CASE WHEN x.failed THEN NULL ELSE h.requested_at END,
        claim_by = CASE WHEN x.failed THEN NULL ELSE h.claim_by END,
        claim_until = CASE WHEN x.failed THEN NULL ELSE h.claim_until END,
        claim_token = CASE WHEN x.failed THEN NULL ELSE h.claim_token END,
        first_index = CASE WHEN x.failed AND x.handled_to > h.first_index THEN x.handled_to
                      ELSE h.first_index END,
        next_index = greatest(h.next_index, coalesce(x.ev_next, 0),
                       CASE WHEN x.failed THEN coalesce(x.handled_to, 0) ELSE 0 END),
        event_count = h.event_count + x.added
          - CASE WHEN x.failed AND x.handled_to > h.first_index
              THEN (SELECT count(*) FROM ${T} d
                     WHERE d.consumer_group = $1 AND d.stream = x.stream AND d.episode = h.episode
                       AND d.idx >= 0 AND d.idx < x.handled_to)
              ELSE 0 END
        FROM x
       WHERE h.consumer_group = $1 AND h.stream = ANY($2::text[]) AND h.idx = -1
         AND h.state = 'parked' AND h.stream = x.stream AND h.episode = x.episode
      RETURNING h.stream
    ), failed_release AS (
      -- A release being applied failed again: recorded in the history as a row of its own.
      INSERT INTO ${T} (consumer_group, stream, episode, idx, state, first_index, next_index,
        event_count, error, attempts, first_failed_at, last_failed_at, parked_at, request_by,
        request_reason, requested_at, tranche, resolved_at, applied_by, resolved_events)
      SELECT $1, cur.stream,
        (SELECT max(p.episode) FROM ${T} p
          WHERE p.consumer_group = $1 AND p.stream = cur.stream AND p.idx = -1) + 1,
        -1, 'failed', cur.first_index, cur.next_index, 0, w.error, w.attempts,
        cur.first_failed_at, to_timestamp(w.last_failed / 1000), cur.parked_at, cur.request_by,
        cur.request_reason, cur.requested_at, cur.tranche, to_timestamp($14::float8 / 1000),
        cur.claim_by,
        (SELECT count(*) FROM ${T} d
          WHERE d.consumer_group = $1 AND d.stream = cur.stream AND d.episode = cur.episode
            AND d.idx >= 0 AND d.idx < coalesce(w.handled_to, 0))
        FROM cur JOIN w ON w.stream = cur.stream
       WHERE w.failed AND cur.request_action = 'release' AND cur.claim_by IS NOT NULL
    ), dropped AS (
      DELETE FROM ${T} d USING cur JOIN w ON w.stream = cur.stream
       WHERE w.failed AND w.handled_to IS NOT NULL AND d.consumer_group = $1
         AND d.stream = ANY($2::text[]) AND d.stream = cur.stream AND d.episode = cur.episode
         AND d.idx >= 0
         AND d.idx < w.handled_to
    )
    SELECT stream FROM target`;

  // The latest resolution by time: a bounded skip's history row has a higher episode number than
  // the episode it came from, which may be resolved later.
  const getSql = `SELECT ${COLUMNS} FROM ${T}
    WHERE consumer_group = $1 AND stream = $2 AND idx = -1
    ORDER BY (state = 'parked') DESC, (state = 'failed'), resolved_at DESC NULLS LAST, episode DESC
    LIMIT 1`;

  // A bounded skip of an episode with events at or above its bound: the events below it leave,
  // the episode stays active from the bound on, and the skip gets a history row of its own.
  const partialSkipSql = `
    WITH old AS (
      SELECT request_to AS o_to, first_index AS o_first, error AS o_error,
             attempts AS o_attempts, first_failed_at AS o_ff, last_failed_at AS o_lf,
             parked_at AS o_pa, request_by AS o_by, request_reason AS o_reason,
             requested_at AS o_at, tranche AS o_tranche
        FROM ${T}
       WHERE consumer_group = $1 AND stream = $2 AND episode = $3::bigint AND idx = -1
         AND state = 'parked' AND request_action = 'skip' AND request_to IS NOT NULL
         AND next_index > request_to AND claim_token = $6::text
         AND claim_until > to_timestamp($5::float8 / 1000)
       FOR UPDATE
    ), n AS (
      SELECT count(*) AS dropped FROM ${T} d, old
       WHERE d.consumer_group = $1 AND d.stream = $2 AND d.episode = $3::bigint AND d.idx >= 0
         AND d.idx < old.o_to
    ), h AS (
      UPDATE ${T} SET first_index = greatest(first_index, old.o_to),
             event_count = event_count - n.dropped, request_action = NULL, request_by = NULL,
             request_reason = NULL, requested_at = NULL, request_to = NULL, claim_by = NULL,
             claim_until = NULL, claim_token = NULL
        FROM old, n
       WHERE consumer_group = $1 AND stream = $2 AND episode = $3::bigint AND idx = -1
      RETURNING ${COLUMNS}
    ), rec AS (
      INSERT INTO ${T} (consumer_group, stream, episode, idx, state, first_index, next_index,
        event_count, error, attempts, first_failed_at, last_failed_at, parked_at, request_by,
        request_reason, requested_at, request_to, tranche, resolved_at, applied_by,
        resolved_events)
      SELECT $1, $2,
        (SELECT max(p.episode) FROM ${T} p
          WHERE p.consumer_group = $1 AND p.stream = $2 AND p.idx = -1) + 1,
        -1, 'skipped', old.o_first, old.o_to, 0, old.o_error, old.o_attempts, old.o_ff,
        old.o_lf, old.o_pa, old.o_by, old.o_reason, old.o_at, old.o_to, old.o_tranche,
        to_timestamp($5::float8 / 1000), $4, n.dropped
        FROM old, n
    ), gone AS (
      DELETE FROM ${T} x USING old
       WHERE x.consumer_group = $1 AND x.stream = $2 AND x.episode = $3::bigint AND x.idx >= 0
         AND x.idx < old.o_to
    )
    SELECT h.*, n.dropped::text AS dropped, old.o_by AS old_by, old.o_reason AS old_reason,
           old.o_to::text AS old_to
      FROM h, n, old`;

  /**
   * Deletes the event rows an episode no longer holds (resolved, or below its first). A separate
   * statement, so that it sees rows a park write committed while the resolution or claim waited
   * for the episode's lock (a statement's own DELETE runs on its snapshot and would miss them).
   */
  async function sweep(group: string, stream: string, id: string) {
    await run(
      `DELETE FROM ${T} x USING ${T} h
        WHERE h.consumer_group = $1 AND h.stream = $2 AND h.episode = $3::bigint AND h.idx = -1
          AND x.consumer_group = $1 AND x.stream = $2 AND x.episode = $3::bigint AND x.idx >= 0
          AND (h.state <> 'parked' OR x.idx < h.first_index)`,
      [group, stream, id],
    );
  }

  async function get(group: string, stream: string): Promise<ParkedStream | undefined> {
    const rows = await run(getSql, [group, stream]);
    return rows.length === 0 ? undefined : entryOf(rows[0]);
  }

  return {
    async park(group, writes) {
      checkParkWrites(group, writes);
      if (writes.length === 0) return [];
      const nullable = <T>(v: T | undefined) => v === undefined ? null : v;
      const events = writes.flatMap((w) => w.events.map((e) => ({ stream: w.stream, e })));
      const rows = await run(parkSql, [
        group,
        writes.map((w) => w.stream),
        writes.map((w) => w.failure !== undefined),
        writes.map((w) => nullable(w.failure?.error)),
        writes.map((w) => nullable(w.failure?.attempts)),
        writes.map((w) => nullable(w.failure?.firstFailedAt)),
        writes.map((w) => nullable(w.failure?.lastFailedAt)),
        writes.map((w) => nullable(w.handledTo)),
        writes.map((w) => nullable(w.events[0]?.index)),
        writes.map((w) => w.events.length === 0 ? null : w.events[w.events.length - 1].index + 1),
        events.map((x) => x.stream),
        events.map((x) => x.e.index),
        events.map((x) => encodeParkedEvent(x.e)),
        Date.now(),
        writes.map((w) => nullable(w.tranche)),
      ]);
      const parked = new Set(rows.map((r) => r.stream as string));
      return writes.map((w): ParkWriteOutcome => parked.has(w.stream) ? "parked" : "notParked");
    },

    async list(group, options = {}) {
      if (group !== undefined) checkParkName("group", group);
      const rows = await run(
        `SELECT ${COLUMNS} FROM ${T}
          WHERE idx = -1 AND ($1::text IS NULL OR consumer_group = $1::text)
            AND (state = 'parked' OR ($2::bool AND NOT $3::bool))
            AND (NOT $3::bool OR request_action IS NOT NULL)
          ORDER BY consumer_group, stream, (state = 'parked') DESC,
            coalesce(resolved_at, parked_at) DESC, (state = 'failed'), episode DESC`,
        [group ?? null, options.resolved === true, options.requested === true],
      );
      return rows.map(entryOf);
    },

    async get(group, stream) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      return await get(group, stream);
    },

    async events(group, stream, episode, from, limit) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      checkInteger("from", from, 0);
      checkInteger("limit", limit, 1);
      const id = episodeId(episode);
      if (id === undefined) return [];
      const rows = await run(
        `SELECT e.event FROM ${T} e JOIN ${T} h
            ON h.consumer_group = e.consumer_group AND h.stream = e.stream
           AND h.episode = e.episode AND h.idx = -1 AND h.state = 'parked'
          WHERE e.consumer_group = $1 AND e.stream = $2 AND e.episode = $3::bigint
            AND e.idx >= greatest($4::bigint, h.first_index, 0)
          ORDER BY e.idx LIMIT $5`,
        [group, stream, id, from, limit],
      );
      return rows.map((r): StreamEvent => decodeParkedEvent(r.event as string));
    },

    async request(group, stream, request) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      checkParkRequest(request);
      // Read, decide, then change only if nothing changed in between; else decide again.
      for (let attempt = 0;; attempt++) {
        const current = await get(group, stream);
        if (current === undefined || current.state !== "parked") {
          if (current?.resolution?.action === request.action) return current;
          throw new StreamNotParkedError(group, stream);
        }
        const pending = current.request;
        if (pending?.action === request.action) return current;
        const now = Date.now();
        if (pending !== undefined && current.claim !== undefined && current.claim.until > now) {
          throw new ParkRequestConflictError(group, stream, pending.action, request.action);
        }
        const upTo = skipBound(current, request);
        const rows = await run(
          `UPDATE ${T} SET request_action = $4, request_by = $5, request_reason = $6,
                  requested_at = to_timestamp($7::float8 / 1000), claim_by = NULL,
                  claim_until = NULL, claim_token = NULL, request_to = $10::bigint
            WHERE consumer_group = $1 AND stream = $2 AND episode = $3::bigint AND idx = -1
              AND state = 'parked' AND request_action IS NOT DISTINCT FROM $8::text
              AND claim_by IS NOT DISTINCT FROM $9::text
              AND ($10::bigint IS NULL OR next_index >= $10::bigint)
          RETURNING ${COLUMNS}`,
          [
            group,
            stream,
            current.episode,
            request.action,
            request.by,
            request.reason ?? null,
            now,
            pending?.action ?? null,
            current.claim?.by ?? null,
            upTo ?? null,
          ],
        );
        if (rows.length > 0) return entryOf(rows[0]);
        if (attempt >= 10) {
          throw new ImpelError(
            "ParkRequestContended",
            `stream ${stream} of group ${group} kept changing while a ${request.action} was asked`,
          );
        }
      }
    },

    async claim(group, stream, episode, claim) {
      checkParkName("by", claim?.by);
      checkInteger("until", claim.until, 0);
      if (claim.handledTo !== undefined) checkInteger("handledTo", claim.handledTo, 0);
      if (claim.token !== undefined) checkParkName("token", claim.token);
      const id = episodeId(episode);
      if (id === undefined) return undefined;
      // A new claim ($8 NULL) only where none is held; a renewal only of its own live claim.
      const rows = await run(
        `WITH h AS (
           UPDATE ${T} SET claim_by = $4, claim_until = to_timestamp($5::float8 / 1000),
                  claim_token = coalesce($8::text, $9::text),
                  first_index = greatest(first_index, coalesce($6::bigint, 0)),
                  next_index = greatest(next_index, coalesce($6::bigint, 0)),
                  event_count = event_count - (SELECT count(*) FROM ${T} d
                    WHERE d.consumer_group = $1 AND d.stream = $2 AND d.episode = $3::bigint
                      AND d.idx >= 0 AND d.idx < coalesce($6::bigint, 0))
            WHERE consumer_group = $1 AND stream = $2 AND episode = $3::bigint AND idx = -1
              AND state = 'parked' AND request_action IS NOT NULL
              AND CASE WHEN $8::text IS NULL
                   THEN claim_by IS NULL OR claim_until <= to_timestamp($7::float8 / 1000)
                   ELSE claim_token = $8::text AND claim_until > to_timestamp($7::float8 / 1000)
                   END
           RETURNING ${COLUMNS}
         ), d AS (
           DELETE FROM ${T} x USING h
            WHERE x.consumer_group = $1 AND x.stream = $2 AND x.episode = $3::bigint
              AND x.idx >= 0 AND x.idx < coalesce($6::bigint, 0)
         )
         SELECT * FROM h`,
        [
          group,
          stream,
          id,
          claim.by,
          claim.until,
          claim.handledTo ?? null,
          Date.now(),
          claim.token ?? null,
          newClaimToken(),
        ],
      );
      if (rows.length > 0 && claim.handledTo !== undefined) await sweep(group, stream, id);
      return rows.length === 0 ? undefined : entryOf(rows[0]);
    },

    async resolve(group, stream, episode, resolution) {
      checkParkName("by", resolution?.by);
      checkParkName("token", resolution.token);
      if (resolution.expectedNext !== undefined) {
        checkInteger("expectedNext", resolution.expectedNext, 0);
      }
      const id = episodeId(episode);
      if (id === undefined) return undefined;
      const partial = await run(partialSkipSql, [
        group,
        stream,
        id,
        resolution.by,
        Date.now(),
        resolution.token,
      ]);
      if (partial.length > 0) {
        await sweep(group, stream, id);
        const r = partial[0];
        const entry = entryOf(r);
        return {
          ...entry,
          resolution: {
            action: "skip",
            by: r.old_by as string,
            ...(r.old_reason === null ? {} : { reason: r.old_reason as string }),
            at: Date.now(),
            appliedBy: resolution.by,
            events: Number(r.dropped),
            upTo: Number(r.old_to),
          },
        };
      }
      const rows = await run(
        `WITH h AS (
           UPDATE ${T} SET state = CASE WHEN request_action = 'release' THEN 'released'
                                   ELSE 'skipped' END,
                  resolved_at = to_timestamp($6::float8 / 1000), applied_by = $4,
                  resolved_events = event_count, event_count = 0, claim_by = NULL,
                  claim_until = NULL, claim_token = NULL
            WHERE consumer_group = $1 AND stream = $2 AND episode = $3::bigint AND idx = -1
              AND state = 'parked' AND request_action IS NOT NULL AND claim_token = $7::text
              AND claim_until > to_timestamp($6::float8 / 1000)
              AND (request_action <> 'release' OR $5::bigint IS NULL OR next_index = $5::bigint)
              AND (request_action <> 'skip' OR request_to IS NULL OR next_index <= request_to)
           RETURNING ${COLUMNS}
         ), d AS (
           DELETE FROM ${T} x USING h
            WHERE x.consumer_group = $1 AND x.stream = $2 AND x.episode = $3::bigint
              AND x.idx >= 0
         )
         SELECT * FROM h`,
        [
          group,
          stream,
          id,
          resolution.by,
          resolution.expectedNext ?? null,
          Date.now(),
          resolution.token,
        ],
      );
      if (rows.length > 0) await sweep(group, stream, id);
      return rows.length === 0 ? undefined : entryOf(rows[0]);
    },
  };
}
