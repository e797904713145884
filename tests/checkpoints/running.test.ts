// The running mark of the PostgreSQL checkpoint store: a reset by hand is refused while a
// pipeline holds its scope, checked and done in one transaction; losing the held connection is
// logged, not fatal; a pg.Client (not a pool) works too. Real PostgreSQL.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { PipelineRunningError } from "../../core/checkpoints.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { unique, url } from "../support/postgres.ts";

const scope = { source: "messagedb", group: "g" };
const key = { ...scope, tranche: "Order" };

async function withSchema(fn: (pool: pg.Pool, schema: string) => Promise<void>) {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  const schema = unique("cp_hold_");
  try {
    await initPostgresCheckpoints(pool, { schema });
    await fn(pool, schema);
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  }
}

Deno.test("postgres checkpoints: resetUnlessRunning is refused while a hold is held, done once released", () =>
  withSchema(async (pool, schema) => {
    const store = postgresCheckpoints(pool, { schema });
    await store.commit(key, 10n);
    const release = await store.hold!(scope);
    await assert.rejects(store.resetUnlessRunning!(scope, key, 0n), PipelineRunningError);
    assert.equal(await store.load(key), 10n, "nothing changed");
    await store.resetUnlessRunning!({ ...scope, group: "other" }, key, 3n); // another scope: free
    assert.equal(await store.load(key), 3n);
    await release();
    await store.resetUnlessRunning!(scope, key, 0n);
    assert.equal(await store.load(key), 0n);
    assert.equal(pool.totalCount - pool.idleCount, 0, "no connection left checked out");
  }));

Deno.test("postgres checkpoints: a held connection cut by the server is logged, the process lives on", () =>
  withSchema(async (pool, schema) => {
    const store = postgresCheckpoints(pool, { schema });
    const release = await store.hold!(scope);
    await pool.query(
      `SELECT pg_terminate_backend(pid) FROM pg_locks
        WHERE locktype = 'advisory' AND mode = 'ShareLock' AND pid <> pg_backend_pid()
          AND objid = (hashtext($1) & 4294967295)::oid`,
      [`impel "${schema}"."checkpoints" messagedb/g`],
    );
    await new Promise((r) => setTimeout(r, 200)); // the error event arrives
    await release(); // a no-op now: the hold went with its connection
    await store.resetUnlessRunning!(scope, key, 1n); // the mark is gone with it
    assert.equal(await store.load(key), 1n);
  }));

Deno.test("postgres checkpoints: a single pg.Client holds and resets on its own session", async () => {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const schema = unique("cp_hold_");
  try {
    await initPostgresCheckpoints(client, { schema });
    const store = postgresCheckpoints(client, { schema });
    const release = await store.hold!(scope);
    // Its own session's lock never conflicts with itself: the reset goes through (documented).
    await store.resetUnlessRunning!(scope, key, 2n);
    assert.equal(await store.load(key), 2n);
    await release();
  } finally {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.end();
  }
});

Deno.test("postgres checkpoints: a pool of one connection is not pinned by the hold", async () => {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  try {
    const store = postgresCheckpoints(pool);
    const release = await store.hold!(scope);
    const { rows } = await pool.query("SELECT 1 AS one"); // would wait for ever if pinned
    assert.equal(rows[0].one, 1);
    await release();
  } finally {
    await pool.end();
  }
});
