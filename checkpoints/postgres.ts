/**
 * A checkpoint store in a PostgreSQL table, for `pg.Pool` or PGlite clients (see
 * {@linkcode SqlClient}). One row per (source, tranche, group); `commit` is an upsert that only
 * ever raises the position, `reset` sets it unconditionally.
 *
 * The table is created by {@linkcode initPostgresCheckpoints}, never implicitly, so that an
 * application whose role may not run DDL can have it created by a migration instead.
 *
 * The store is `fenced`: a commit with a {@linkcode CheckpointFence} (consumer groups with
 * leases) checks the lease row in the lease table of `leases/postgres.ts` (option `leases`) with
 * `FOR SHARE` in the same statement as the upsert, so it is recorded only while that lease is
 * the member's, with that generation, unexpired on the database's clock; an acquisition of the
 * lease waits for a commit in flight, so the next owner loads what was committed.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Position } from "../core/batch.ts";
import {
  checkCheckpointKey,
  checkFence,
  type CheckpointFence,
  type CheckpointKey,
  type CheckpointScope,
  type CheckpointStore,
  checkPosition,
  PipelineRunningError,
  StaleCommitError,
} from "../core/checkpoints.ts";
import { leaseTable, type PostgresLeaseOptions } from "../leases/postgres.ts";
import { runDdl } from "../stores/ddl.ts";
import { ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import { type SqlClient, sqlIdentifier, type SqlRow, sqlState, toBigInt } from "../stores/sql.ts";

export type { SqlClient } from "../stores/sql.ts";

const log = getLogger(["impel", "checkpoints", "postgres"]);
/**
 * Where the checkpoint table lives.
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite";
 * import {
 *   initPostgresCheckpoints,
 *   type PostgresCheckpointOptions,
 *   postgresCheckpoints,
 * } from "@impel/impel/checkpoints/postgres";
 * const db = new PGlite(); // or a pg.Pool
 * const options: PostgresCheckpointOptions = { schema: "reactor", table: "positions" };
 * await initPostgresCheckpoints(db, options);
 * const checkpoints = postgresCheckpoints(db, options);
 * const key = { source: "messagedb", tranche: "GuestStay", group: "reactor" };
 * await checkpoints.commit(key, 42n);
 * console.log(await checkpoints.load(key)); // 42n, in "reactor"."positions"
 * await db.close();
 * ```
 */
export interface PostgresCheckpointOptions {
  /** The schema (default `impel`); a plain SQL identifier. */
  readonly schema?: string;
  /** The table (default `checkpoints`); a plain SQL identifier. */
  readonly table?: string;
  /** Where the lease table of fenced commits is (default `impel.leases`). */
  readonly leases?: PostgresLeaseOptions;
}

/**
 * The checkpoint table does not exist (or is not reachable with the given schema and table).
 *
 * @example
 * ```ts
 * import { CheckpointTableMissingError } from "@impel/impel/checkpoints/postgres";
 * const e = new CheckpointTableMissingError("\"impel\".\"checkpoints\"");
 * console.log(e.code); // "CheckpointTableMissing"
 * ```
 */
export class CheckpointTableMissingError extends ImpelError {
  /** Creates the error for the qualified table name. */
  constructor(table: string, options?: ErrorOptions) {
    super(
      "CheckpointTableMissing",
      `checkpoint table ${table} does not exist; call initPostgresCheckpoints first`,
      options,
    );
  }
}

const MAX_POSITION = (1n << 63n) - 1n;

function qualifiedTable(options: PostgresCheckpointOptions): string {
  return `${sqlIdentifier("schema", options.schema ?? "impel")}.${
    sqlIdentifier("table", options.table ?? "checkpoints")
  }`;
}

/**
 * Creates the schema and checkpoint table if they do not exist. Safe to call on every start, and
 * from every member at once.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { initPostgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresCheckpoints(pool, { schema: "impel", table: "checkpoints" });
 * ```
 */
export async function initPostgresCheckpoints(
  client: SqlClient,
  options: PostgresCheckpointOptions = {},
): Promise<void> {
  const schema = sqlIdentifier("schema", options.schema ?? "impel");
  const table = qualifiedTable(options);
  // Members start together: runDdl survives a concurrent creator of the same schema or table.
  await runDdl(client, [
    `CREATE SCHEMA IF NOT EXISTS ${schema}`,
    `CREATE TABLE IF NOT EXISTS ${table} (
       source text NOT NULL,
       tranche text NOT NULL,
       consumer_group text NOT NULL,
       position bigint NOT NULL CHECK (position >= 0),
       updated_at timestamptz NOT NULL DEFAULT now(),
       PRIMARY KEY (source, tranche, consumer_group)
     )`,
  ]);
}

/**
 * A {@linkcode CheckpointStore} over a PostgreSQL table created by
 * {@linkcode initPostgresCheckpoints}. Positions are stored as `bigint` (at most 2^63 − 1).
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { initPostgresCheckpoints, postgresCheckpoints } from "@impel/impel/checkpoints/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresCheckpoints(pool);
 * const checkpoints = postgresCheckpoints(pool);
 * const key = { source: "messagedb", tranche: "GuestStay", group: "reactor" };
 * await checkpoints.commit(key, 42n);
 * await checkpoints.load(key); // 42n
 * ```
 */
export function postgresCheckpoints(
  client: SqlClient,
  options: PostgresCheckpointOptions = {},
): CheckpointStore {
  const table = qualifiedTable(options);
  const run = async (text: string, params: unknown[]): Promise<SqlRow[]> => {
    try {
      return (await client.query(text, params)).rows;
    } catch (error) {
      if (sqlState(error) === "42P01" || sqlState(error) === "3F000") {
        throw new CheckpointTableMissingError(table, { cause: error });
      }
      throw error;
    }
  };
  const checkStorable = (position: Position): string => {
    checkPosition(position);
    if (position > MAX_POSITION) {
      throw new InvalidArgumentError("position", `must fit a PostgreSQL bigint, got ${position}n`);
    }
    return position.toString();
  };
  const upsert = (onlyForward: boolean) =>
    `INSERT INTO ${table} AS t (source, tranche, consumer_group, position)
     VALUES ($1, $2, $3, $4::bigint)
     ON CONFLICT (source, tranche, consumer_group)
     DO UPDATE SET position = EXCLUDED.position, updated_at = now()` +
    (onlyForward ? " WHERE t.position < EXCLUDED.position" : "");
  const commitSql = upsert(true);
  const resetSql = upsert(false);
  const leases = leaseTable(options.leases);
  const fencedSql = `
    WITH lease AS (
      SELECT 1 FROM ${leases}
       WHERE scope = $5 AND kind = 'unit' AND name = $6 AND owner = $7
         AND generation = $8::bigint AND expires_at > clock_timestamp()
       FOR SHARE),
    up AS (
      INSERT INTO ${table} AS t (source, tranche, consumer_group, position)
      SELECT $1, $2, $3, $4::bigint FROM lease
      ON CONFLICT (source, tranche, consumer_group)
      DO UPDATE SET position = EXCLUDED.position, updated_at = now()
      WHERE t.position < EXCLUDED.position
      RETURNING 1)
    SELECT count(*)::int AS held FROM lease`;
  const commitFenced = async (key: CheckpointKey, position: Position, fence: CheckpointFence) => {
    checkFence(fence);
    // A fence is the lease of the tranche committed: another unit's lease proves nothing.
    if (fence.unit !== key.tranche) {
      throw new InvalidArgumentError(
        "fence.unit",
        `must be the tranche committed (${key.tranche}), got ${fence.unit}`,
      );
    }
    const params = [key.source, key.tranche, key.group, checkStorable(position)];
    const rows = await run(fencedSql, [
      ...params,
      fence.scope,
      fence.unit,
      fence.owner,
      fence.generation.toString(),
    ]).catch((error) => {
      if (error instanceof CheckpointTableMissingError) {
        throw new CheckpointTableMissingError(`${table} (or the lease table ${leases})`, {
          cause: error.cause,
        });
      }
      throw error;
    });
    if (rows[0].held === 0) throw new StaleCommitError(key, position, fence);
  };

  // A running pipeline holds a shared session lock per scope on a connection of its own (one
  // more connection of the pool while it runs); a reset by hand takes the lock exclusively in
  // its own transaction, which it gets only when none is held, so no pipeline starts meanwhile.
  const lockName = (scope: CheckpointScope) => `impel ${table} ${scope.source}/${scope.group}`;
  type Session = SqlClient & {
    release(error?: Error): void;
    on?(event: "error", listener: (error: Error) => void): unknown;
  };
  // A pool (pg.Pool) lends a connection; anything else (a pg.Client, PGlite) is one session.
  const session = async (): Promise<{ client: Session; pooled: boolean }> => {
    const pool = client as SqlClient & { connect?: () => Promise<Session>; totalCount?: unknown };
    if (typeof pool.connect !== "function" || typeof pool.totalCount !== "number") {
      return {
        client: { query: (text, params) => client.query(text, params), release() {} },
        pooled: false,
      };
    }
    return { client: await pool.connect(), pooled: true };
  };
  return {
    fenced: true,
    // As postgresLeases names its table: a leased source refuses a pair that differ.
    fenceLocation: `postgresql ${leases}`,
    async hold(scope: CheckpointScope): Promise<() => Promise<void>> {
      // The hold keeps one connection for the run: a pool of one would have none left to read.
      const max = (client as { options?: { max?: unknown } }).options?.max;
      if (typeof max === "number" && max < 2) {
        log.warn(
          "{scope} runs without its running mark: the pool has {max} connection (it needs 2)",
          { scope: `${scope.source}/${scope.group}`, max },
        );
        return () => Promise.resolve();
      }
      const s = await session();
      let lost = false;
      // An idle held connection can be cut (a restart, a timeout): the hold is gone with it, and
      // an unhandled error event would end the process.
      s.client.on?.("error", (error) => {
        lost = true;
        log.warn("lost the running mark of {scope} (checkpoints set will not see it): {error}", {
          scope: `${scope.source}/${scope.group}`,
          error: errorText(error),
        });
        if (s.pooled) s.client.release(error);
      });
      try {
        await s.client.query("SELECT pg_advisory_lock_shared(hashtext($1))", [lockName(scope)]);
      } catch (error) {
        if (!lost) s.client.release(error as Error);
        throw error;
      }
      return async () => {
        if (lost) return;
        try {
          await s.client.query("SELECT pg_advisory_unlock_shared(hashtext($1))", [lockName(scope)]);
        } finally {
          s.client.release();
        }
      };
    },
    async resetUnlessRunning(
      scope: CheckpointScope,
      key: CheckpointKey,
      position: Position | undefined,
    ) {
      checkCheckpointKey(key);
      const s = await session();
      let failed: Error | undefined;
      try {
        await s.client.query("BEGIN");
        try {
          const { rows } = await s.client.query(
            "SELECT pg_try_advisory_xact_lock(hashtext($1)) AS free",
            [lockName(scope)],
          );
          if (rows[0].free !== true) throw new PipelineRunningError(scope);
          if (position === undefined) {
            await s.client.query(
              `DELETE FROM ${table} WHERE source = $1 AND tranche = $2 AND consumer_group = $3`,
              [key.source, key.tranche, key.group],
            );
          } else {
            await s.client.query(resetSql, [
              key.source,
              key.tranche,
              key.group,
              checkStorable(position),
            ]);
          }
          await s.client.query("COMMIT");
        } catch (error) {
          await s.client.query("ROLLBACK").catch(() => {});
          if (sqlState(error) === "42P01" || sqlState(error) === "3F000") {
            throw new CheckpointTableMissingError(table, { cause: error });
          }
          throw error;
        }
      } catch (error) {
        failed = error as Error;
        throw error;
      } finally {
        s.client.release(failed instanceof PipelineRunningError ? undefined : failed);
      }
    },
    async load(key: CheckpointKey): Promise<Position | undefined> {
      checkCheckpointKey(key);
      const rows = await run(
        `SELECT position::text AS position FROM ${table}
          WHERE source = $1 AND tranche = $2 AND consumer_group = $3`,
        [key.source, key.tranche, key.group],
      );
      return rows.length === 0 ? undefined : toBigInt(rows[0].position);
    },
    async commit(key: CheckpointKey, position: Position, fence?: CheckpointFence): Promise<void> {
      checkCheckpointKey(key);
      if (fence !== undefined) return await commitFenced(key, position, fence);
      await run(commitSql, [key.source, key.tranche, key.group, checkStorable(position)]);
    },
    async reset(key: CheckpointKey, position: Position | undefined): Promise<void> {
      checkCheckpointKey(key);
      if (position === undefined) {
        await run(
          `DELETE FROM ${table} WHERE source = $1 AND tranche = $2 AND consumer_group = $3`,
          [key.source, key.tranche, key.group],
        );
      } else {
        await run(resetSql, [key.source, key.tranche, key.group, checkStorable(position)]);
      }
    },
    async list(source: string, group?: string) {
      const rows = await run(
        `SELECT source, tranche, consumer_group, position::text AS position FROM ${table}
          WHERE source = $1 AND ($2::text IS NULL OR consumer_group = $2::text)
          ORDER BY tranche, consumer_group`,
        [source, group ?? null],
      );
      return rows.map((r) => ({
        source: r.source as string,
        tranche: r.tranche as string,
        group: r.consumer_group as string,
        position: toBigInt(r.position),
      }));
    },
  };
}
