// PostgreSQL fixtures for the tests (the MessageDB database tools/postgres.sh prepares): pools,
// throwaway schemas and names, seeded streams.
// @ts-types="@types/pg"
import pg from "pg";
import { messageDbStore } from "../../stores/messagedb.ts";

/** The test database; IMPEL_PG_URL overrides it. */
export const url: string = Deno.env.get("IMPEL_PG_URL") ??
  "postgres://postgres@127.0.0.1:5432/impel_test";

/** `prefix` then `length` random hex digits: a name no earlier run left in the database. */
export const unique = (prefix: string, length = 12): string =>
  prefix + crypto.randomUUID().replaceAll("-", "").slice(0, length);

/** Runs `fn` with a pool to the test database, configured by `defaults` then `config`. */
export type WithPool = (
  fn: (pool: pg.Pool) => Promise<void>,
  config?: pg.PoolConfig,
) => Promise<void>;

/**
 * A `withPool` whose pools take `defaults` (each test file sizes its own). The pool is ended
 * afterwards; errors of idle connections are ignored, since some tests cut them on purpose.
 */
export const poolFixture = (defaults: pg.PoolConfig): WithPool => async (fn, config = {}) => {
  const pool = new pg.Pool({ connectionString: url, ...defaults, ...config });
  pool.on("error", () => {});
  try {
    await fn(pool);
  } finally {
    await pool.end();
  }
};

/** Runs `fn` with a pool (8 connections) and a new schema name, dropping the schema after. */
export const withSchema = (
  fn: (pool: pg.Pool, schema: string) => Promise<void>,
): Promise<void> =>
  poolFixture({ max: 8 })(async (pool) => {
    const schema = unique("cp_");
    try {
      await fn(pool, schema);
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

/** Appends `perStream` events to each of `streams` streams of `category`, interleaved. */
export async function seed(
  pool: pg.Pool,
  category: string,
  streams: number,
  perStream: number,
  from = 0,
): Promise<void> {
  const store = messageDbStore(pool);
  const chunk = 5;
  for (let start = 0; start < perStream; start += chunk) {
    const n = Math.min(chunk, perStream - start);
    await Promise.all(Array.from({ length: streams }, (_, s) =>
      store.append(
        `${category}-${s}`,
        Array.from(
          { length: n },
          (_, k) => ({ type: "Happened", data: { s, i: from + start + k } }),
        ),
        from + start,
      )));
  }
}
