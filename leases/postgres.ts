/**
 * A {@linkcode LeaseStore} in one PostgreSQL table, for `pg.Pool` or PGlite clients, so that
 * MessageDB reactors need nothing but the database they already use. Each operation is one
 * conditional statement, and every time is the database's, so members' clocks need not agree:
 * whether a lease is still valid (to renew it) is decided on `clock_timestamp()`, the time the
 * row is looked at, after any wait for its lock; new expiries and "has it lapsed" are decided on
 * the statement's start (`now()`), the earlier of the two, so that both err on the safe side.
 * The table holds two kinds of rows per scope: `unit` (a lease: owner, generation, expiry, a
 * hand-over request) and `member` (a heartbeat, with the fingerprint of the member's units).
 *
 * Commits are fenced by `postgresCheckpoints` (checkpoints/postgres.ts) in the same database: the
 * checkpoint upsert and a `FOR SHARE` check of the lease row are one statement, so a commit is
 * recorded only while its lease is current, and an acquisition waits for a commit in flight.
 *
 * The table is created by {@linkcode initPostgresLeases}, never implicitly.
 *
 * @module
 */
import type {
  HeartbeatResult,
  HeldLease,
  Lease,
  LeaseMemberBeat,
  LeaseStore,
  ScopedLeaseView,
} from "../core/lease.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { type SqlClient, sqlIdentifier, type SqlRow, sqlState, toBigInt } from "../stores/sql.ts";
import { runDdl } from "../stores/ddl.ts";

export type { SqlClient } from "../stores/sql.ts";
export type * from "../core/lease.ts";

/**
 * Where the lease table lives.
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite";
 * import {
 *   initPostgresLeases,
 *   type PostgresLeaseOptions,
 *   postgresLeases,
 * } from "@impel/impel/leases/postgres";
 * const db = new PGlite(); // or a pg.Pool
 * const options: PostgresLeaseOptions = { schema: "reactor", table: "leases" };
 * await initPostgresLeases(db, options);
 * const leases = postgresLeases(db, options);
 * console.log((await leases.acquire("messagedb/g", "Order-0/4", "a", 10_000))?.generation); // 1n
 * await db.close();
 * ```
 */
export interface PostgresLeaseOptions {
  /** The schema (default `impel`); a plain SQL identifier. */
  readonly schema?: string;
  /** The table (default `leases`); a plain SQL identifier. */
  readonly table?: string;
}

/**
 * The lease table does not exist (or is not reachable with the given schema and table).
 *
 * @example
 * ```ts
 * import { LeaseTableMissingError } from "@impel/impel/leases/postgres";
 * const e = new LeaseTableMissingError("\"impel\".\"leases\"");
 * console.log(e.code); // "LeaseTableMissing"
 * ```
 */
export class LeaseTableMissingError extends ImpelError {
  /** Creates the error for the qualified table name. */
  constructor(table: string, options?: ErrorOptions) {
    super(
      "LeaseTableMissing",
      `lease table ${table} does not exist; call initPostgresLeases first`,
      options,
    );
  }
}

/**
 * The qualified name of the lease table for `options`, its identifiers checked.
 *
 * @example
 * ```ts
 * import { leaseTable } from "@impel/impel/leases/postgres";
 * console.log(leaseTable({ schema: "reactor" })); // "reactor"."leases"
 * ```
 */
export function leaseTable(options: PostgresLeaseOptions = {}): string {
  return `${sqlIdentifier("schema", options.schema ?? "impel")}.${
    sqlIdentifier("table", options.table ?? "leases")
  }`;
}

/**
 * Creates the schema and lease table if they do not exist. Safe to call on every start, and from
 * every member at once.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { initPostgresLeases } from "@impel/impel/leases/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresLeases(pool);
 * ```
 */
export async function initPostgresLeases(
  client: SqlClient,
  options: PostgresLeaseOptions = {},
): Promise<void> {
  const schema = sqlIdentifier("schema", options.schema ?? "impel");
  const table = leaseTable(options);
  // Members start together: runDdl survives a concurrent creator of the same schema or table.
  await runDdl(client, [
    `CREATE SCHEMA IF NOT EXISTS ${schema}`,
    `CREATE TABLE IF NOT EXISTS ${table} (
       scope text NOT NULL,
       kind text NOT NULL CHECK (kind IN ('unit', 'member')),
       name text NOT NULL,
       owner text,
       generation bigint NOT NULL DEFAULT 0,
       expires_at timestamptz NOT NULL,
       acquired_at timestamptz,
       renewed_at timestamptz,
       requested_by text,
       units text,
       PRIMARY KEY (scope, kind, name)
     )`,
    // Tables made before members advertised their units.
    `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS units text`,
  ]);
}

const ms = (column: string) => `(extract(epoch FROM ${column}) * 1000)::float8`;
const COLUMNS = `t.kind, t.name, t.owner, t.generation::text AS generation,
  ${ms("t.expires_at")} AS expires_ms, ${ms("t.acquired_at")} AS acquired_ms,
  ${ms("t.renewed_at")} AS renewed_ms, t.requested_by, t.units`;
/** The longest lease: members time its deadline with setTimeout. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const DURATION = (p: string) => `now() + ${p}::float8 * interval '1 millisecond'`;
/**
 * A member row expired for this many lease durations (of the member beating) is deleted by the
 * next heartbeat: long dead, it counts for nothing, and would only grow every view.
 */
const DEAD_MEMBER_DURATIONS = 10;

/**
 * A {@linkcode LeaseStore} over a table created by {@linkcode initPostgresLeases}.
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { createLeaseMember } from "@impel/impel";
 * import { initPostgresLeases, postgresLeases } from "@impel/impel/leases/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresLeases(pool);
 * const member = createLeaseMember({
 *   store: postgresLeases(pool), scope: "reports", units: ["r0", "r1", "r2"],
 *   onAcquired: (lease) => console.log("start", lease.unit), onRevoked: async () => {},
 * });
 * const running = member.start();
 * // ... on shutdown
 * await member.stop();
 * await running;
 * ```
 */
export function postgresLeases(
  client: SqlClient,
  options: PostgresLeaseOptions = {},
): LeaseStore {
  if (typeof client?.query !== "function") {
    throw new InvalidArgumentError("client", "must have a query(text, params) method");
  }
  const table = leaseTable(options);
  const run = async (text: string, params: unknown[]): Promise<SqlRow[]> => {
    try {
      return (await client.query(text, params)).rows;
    } catch (error) {
      // 42703: a table from before the units column; initPostgresLeases adds it.
      if (["42P01", "3F000", "42703"].includes(sqlState(error) ?? "")) {
        throw new LeaseTableMissingError(table, { cause: error });
      }
      throw error;
    }
  };

  const heartbeatSql = `
    WITH beat AS (
      INSERT INTO ${table} AS t
        (scope, kind, name, owner, expires_at, acquired_at, renewed_at, units)
      VALUES ($1, 'member', $2, $2, ${DURATION("$3")}, now(), now(), $6)
      ON CONFLICT (scope, kind, name) DO UPDATE
        SET expires_at = EXCLUDED.expires_at, renewed_at = now(), units = EXCLUDED.units,
            acquired_at = CASE WHEN t.expires_at <= now() THEN now() ELSE t.acquired_at END
      RETURNING 1),
    gone AS (
      -- Rows of members that died without leaving (a crash, SIGKILL): deleted once long expired,
      -- or every crashed start with a random id would stay in every view. SKIP LOCKED: members
      -- deleting the same rows at once neither wait for nor deadlock with each other.
      DELETE FROM ${table} AS t
       WHERE (t.scope, t.kind, t.name) IN (
         SELECT d.scope, d.kind, d.name FROM ${table} AS d
          WHERE d.scope = $1 AND d.kind = 'member' AND d.name <> $2
            AND d.expires_at < now() - ${DEAD_MEMBER_DURATIONS} * $3::float8 * interval '1 millisecond'
            FOR UPDATE SKIP LOCKED)
      RETURNING 1),
    renewed AS (
      UPDATE ${table} AS t SET expires_at = ${DURATION("$3")}, renewed_at = now()
        FROM unnest($4::text[], $5::bigint[]) AS h(unit, generation)
       WHERE t.scope = $1 AND t.kind = 'unit' AND t.name = h.unit AND t.owner = $2
         AND t.generation = h.generation AND t.expires_at > clock_timestamp()
      RETURNING t.name)
    SELECT ${ms("now()")} AS now_ms,
           (SELECT coalesce(array_agg(name), '{}') FROM renewed) AS renewed, ${COLUMNS}
      FROM (SELECT 1) AS one LEFT JOIN ${table} AS t ON t.scope = $1`;

  const acquireSql = `
    INSERT INTO ${table} AS t
      (scope, kind, name, owner, generation, expires_at, acquired_at, renewed_at)
    VALUES ($1, 'unit', $2, $3, 1, ${DURATION("$4")}, now(), now())
    ON CONFLICT (scope, kind, name) DO UPDATE
      SET owner = EXCLUDED.owner, generation = t.generation + 1, expires_at = EXCLUDED.expires_at,
          acquired_at = now(), renewed_at = now(), requested_by = NULL
      WHERE t.owner IS NULL OR t.expires_at <= now()
    RETURNING ${COLUMNS}`;

  return {
    // As postgresCheckpoints names the table it checks fences against: a source compares them.
    location: `postgresql ${table}`,
    async heartbeat(scope, member, durationMs, held, units): Promise<HeartbeatResult> {
      checkText("scope", scope);
      checkText("member", member);
      checkInteger("durationMs", durationMs, 1, MAX_TIMER_MS);
      checkHeld(held);
      if (units !== undefined) checkText("units", units);
      const rows = await run(heartbeatSql, [
        scope,
        member,
        durationMs,
        held.map((h) => h.unit),
        held.map((h) => h.generation.toString()),
        units ?? null,
      ]);
      return { renewed: rows[0].renewed as string[], view: toView(scope, rows) };
    },
    async acquire(scope, unit, member, durationMs) {
      checkText("scope", scope);
      checkText("unit", unit);
      checkText("member", member);
      checkInteger("durationMs", durationMs, 1, MAX_TIMER_MS);
      const rows = await run(acquireSql, [scope, unit, member, durationMs]);
      return rows.length === 0 ? undefined : toLease(rows[0]);
    },
    async request(scope, unit, member) {
      checkText("scope", scope);
      checkText("unit", unit);
      checkText("member", member);
      await run(
        `UPDATE ${table} SET requested_by = $3
          WHERE scope = $1 AND kind = 'unit' AND name = $2 AND owner IS NOT NULL
            AND owner <> $3 AND expires_at > now()`,
        [scope, unit, member],
      );
    },
    async release(scope, held, member) {
      checkText("scope", scope);
      checkText("member", member);
      checkHeld([held]);
      await run(
        `UPDATE ${table} SET owner = NULL, expires_at = now(), requested_by = NULL
          WHERE scope = $1 AND kind = 'unit' AND name = $2 AND owner = $3
            AND generation = $4::bigint`,
        [scope, held.unit, member, held.generation.toString()],
      );
    },
    async leave(scope, member) {
      checkText("scope", scope);
      checkText("member", member);
      await run(`DELETE FROM ${table} WHERE scope = $1 AND kind = 'member' AND name = $2`, [
        scope,
        member,
      ]);
    },
    async list(scope) {
      if (scope !== undefined) checkText("scope", scope);
      const rows = await run(
        `SELECT ${ms("now()")} AS now_ms, t.scope, ${COLUMNS} FROM ${table} AS t
          WHERE $1::text IS NULL OR t.scope = $1::text ORDER BY t.scope, t.kind, t.name`,
        [scope ?? null],
      );
      const byScope = new Map<string, SqlRow[]>();
      for (const r of rows) {
        const list = byScope.get(r.scope as string);
        if (list) list.push(r);
        else byScope.set(r.scope as string, [r]);
      }
      if (scope !== undefined && !byScope.has(scope)) {
        const [{ now_ms }] = await run(`SELECT ${ms("now()")} AS now_ms`, []);
        return [{ scope, now: Number(now_ms), leases: [], members: [] }];
      }
      return [...byScope].map(([name, list]) => toView(name, list));
    },
  };
}

function toView(scope: string, rows: SqlRow[]): ScopedLeaseView {
  const leases: Lease[] = [];
  const members: LeaseMemberBeat[] = [];
  for (const r of rows) {
    if (r.kind === "unit") leases.push(toLease(r));
    else if (r.kind === "member") {
      members.push({
        member: r.name as string,
        expiresAt: Number(r.expires_ms),
        renewedAt: Number(r.renewed_ms),
        ...(r.acquired_ms == null ? {} : { joinedAt: Number(r.acquired_ms) }),
        ...(r.units == null ? {} : { units: r.units as string }),
      });
    }
  }
  return { scope, now: Number(rows[0]?.now_ms ?? Date.now()), leases, members };
}

function toLease(r: SqlRow): Lease {
  return {
    unit: r.name as string,
    ...(r.owner == null ? {} : { owner: r.owner as string }),
    generation: toBigInt(r.generation),
    expiresAt: Number(r.expires_ms),
    ...(r.acquired_ms == null ? {} : { acquiredAt: Number(r.acquired_ms) }),
    ...(r.renewed_ms == null ? {} : { renewedAt: Number(r.renewed_ms) }),
    ...(r.requested_by == null ? {} : { requestedBy: r.requested_by as string }),
  };
}

function checkText(field: string, value: unknown): void {
  if (typeof value !== "string" || value.length === 0) {
    throw new InvalidArgumentError(field, `must be a non-empty string, got ${describe(value)}`);
  }
}

function checkHeld(held: readonly HeldLease[]): void {
  if (!Array.isArray(held)) throw new InvalidArgumentError("held", "must be an array of leases");
  for (const h of held) {
    checkText("held.unit", h?.unit);
    if (typeof h.generation !== "bigint" || h.generation < 0n) {
      throw new InvalidArgumentError("held.generation", "must be a non-negative bigint");
    }
  }
}
