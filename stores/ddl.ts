/**
 * Idempotent DDL that members run together: `CREATE ... IF NOT EXISTS` is not safe against a
 * concurrent creator (both see nothing, one fails on a catalog unique index with 23505, or with
 * 42P06 / 42P07 once the other has committed). Each statement is retried while it fails that
 * way: by then the other creator's transaction has ended, and `IF NOT EXISTS` sees its work.
 * One statement at a time (no explicit transaction), so that it works on a `pg.Pool`, whose
 * queries may each take another connection, and on PGlite alike.
 *
 * Internal (not an entry point): used by `initPostgresLeases`, `initPostgresCheckpoints` and
 * `initPostgresParkStore`.
 *
 * @module
 */
import { type SqlClient, sqlState } from "./sql.ts";

/** Catalog races of concurrent `IF NOT EXISTS` DDL: unique violation, duplicate schema/table. */
const RACES = new Set(["23505", "42P06", "42P07", "42710"]);
/** Retries of one statement: each needs another creator to have raced it. */
const ATTEMPTS = 5;

/**
 * Runs `statements` in order, each retried while it loses a race with a concurrent creator.
 *
 * @example
 * ```ts
 * import { PGlite } from "@electric-sql/pglite";
 * import { runDdl } from "./ddl.ts";
 * const db = new PGlite();
 * await runDdl(db, ["CREATE SCHEMA IF NOT EXISTS s", "CREATE TABLE IF NOT EXISTS s.t (x int)"]);
 * await db.close();
 * ```
 */
export async function runDdl(client: SqlClient, statements: readonly string[]): Promise<void> {
  for (const text of statements) {
    for (let attempt = 1;; attempt++) {
      try {
        await client.query(text);
        break;
      } catch (error) {
        if (attempt >= ATTEMPTS || !RACES.has(sqlState(error) ?? "")) throw error;
      }
    }
  }
}
