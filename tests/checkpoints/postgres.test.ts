// Runs against the PostgreSQL server prepared by tools/postgres.sh; IMPEL_PG_URL overrides the
// default postgres://postgres@127.0.0.1:5432/impel_test.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { ImpelError, InvalidArgumentError } from "../../core/errors.ts";
import {
  CheckpointTableMissingError,
  initPostgresCheckpoints,
  postgresCheckpoints,
} from "../../checkpoints/postgres.ts";
import { url, withSchema } from "../support/postgres.ts";

Deno.test("postgres checkpoints: commit, load, never backwards, reset, list", () =>
  withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema, table: "positions" });
    await initPostgresCheckpoints(pool, { schema, table: "positions" }); // idempotent
    const store = postgresCheckpoints(pool, { schema, table: "positions" });
    const key = { source: "messagedb", tranche: "GuestStay", group: "reactor" };

    assert.equal(await store.load(key), undefined);
    await store.commit(key, 10n);
    assert.equal(await store.load(key), 10n);
    await store.commit(key, 5n);
    assert.equal(await store.load(key), 10n, "a lower commit must be ignored");
    await store.commit(key, 10n);
    await store.commit(key, 11n);
    assert.equal(await store.load(key), 11n);

    await store.reset(key, 3n);
    assert.equal(await store.load(key), 3n, "reset may move backwards");
    await store.reset(key, undefined);
    assert.equal(await store.load(key), undefined);

    const big = (1n << 63n) - 1n;
    await store.commit(key, big);
    assert.equal(await store.load(key), big, "positions beyond 2^53 survive exactly");
    await assert.rejects(store.commit(key, 1n << 63n), InvalidArgumentError);
    await assert.rejects(store.commit(key, -1n), ImpelError);
    await assert.rejects(store.load({ source: "", tranche: "t", group: "g" }), ImpelError);

    await store.commit({ source: "messagedb", tranche: "Other", group: "reactor" }, 7n);
    await store.commit({ source: "messagedb", tranche: "GuestStay", group: "audit" }, 8n);
    await store.commit({ source: "kafka", tranche: "0", group: "reactor" }, 9n);
    assert.deepEqual(await store.list("messagedb", "reactor"), [
      { source: "messagedb", tranche: "GuestStay", group: "reactor", position: big },
      { source: "messagedb", tranche: "Other", group: "reactor", position: 7n },
    ]);
    assert.equal((await store.list("messagedb")).length, 3);
    assert.deepEqual(await store.list("nothing"), []);
  }));

Deno.test("postgres checkpoints: concurrent commits in any order keep the highest", () =>
  withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    const store = postgresCheckpoints(pool, { schema });
    const key = { source: "s", tranche: "t", group: "g" };
    const positions = Array.from({ length: 60 }, (_, i) => BigInt(i + 1));
    positions.sort(() => Math.random() - 0.5);
    await Promise.all(positions.map((p) => store.commit(key, p)));
    assert.equal(await store.load(key), 60n);
  }));

Deno.test("postgres checkpoints: the table is created only by init", () =>
  withSchema(async (pool, schema) => {
    const store = postgresCheckpoints(pool, { schema });
    await assert.rejects(
      store.load({ source: "s", tranche: "t", group: "g" }),
      (e) => e instanceof CheckpointTableMissingError && /initPostgresCheckpoints/.test(e.message),
    );
    await initPostgresCheckpoints(pool, { schema });
    assert.equal(await store.load({ source: "s", tranche: "t", group: "g" }), undefined);
  }));

Deno.test("postgres checkpoints: schema and table names must be plain identifiers", async () => {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  try {
    for (const bad of ["", "a-b", "x; DROP TABLE y", 'q"uote', "1abc", "a".repeat(64), "a b"]) {
      assert.throws(
        () => postgresCheckpoints(pool, { schema: bad }),
        (e) => e instanceof InvalidArgumentError && e.field === "schema",
      );
      assert.throws(
        () => postgresCheckpoints(pool, { table: bad }),
        (e) => e instanceof InvalidArgumentError && e.field === "table",
      );
      await assert.rejects(initPostgresCheckpoints(pool, { schema: bad }), InvalidArgumentError);
    }
    // mixed case is kept as written (quoted), not folded
    assert.doesNotThrow(() => postgresCheckpoints(pool, { schema: "Impel_2", table: "_t" }));
  } finally {
    await pool.end();
  }
});
