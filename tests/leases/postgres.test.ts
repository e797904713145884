// The PostgreSQL lease store and fenced Postgres checkpoints against the real server, each test in
// its own schema: the store contract (shared with the memory store), racing acquisitions, the
// fence of commits (after expiry, release, takeover) and the lock that makes an acquisition wait
// for a commit in flight.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { StaleCommitError } from "../../mod.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import {
  initPostgresLeases,
  LeaseTableMissingError,
  postgresLeases,
} from "../../leases/postgres.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { withSchema } from "../support/postgres.ts";
import { leaseStoreContract } from "./contract.ts";

leaseStoreContract("memory", () => Promise.resolve({ store: memoryLeases(), close() {} }));
leaseStoreContract("postgres", async () => {
  const pool = new pg.Pool({
    connectionString: Deno.env.get("IMPEL_PG_URL") ??
      "postgres://postgres@127.0.0.1:5432/impel_test",
    max: 12,
  });
  pool.on("error", () => {});
  const schema = `lease_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  await initPostgresLeases(pool, { schema });
  return {
    store: postgresLeases(pool, { schema }),
    async close() {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    },
  };
});

const key = { source: "messagedb", tranche: "Order-0/4", group: "g" };

Deno.test("postgres leases: a fenced commit is recorded only under the current, unexpired lease", () =>
  withSchema(async (pool, schema) => {
    await initPostgresLeases(pool, { schema });
    await initPostgresCheckpoints(pool, { schema, leases: { schema } });
    const leases = postgresLeases(pool, { schema });
    const checkpoints = postgresCheckpoints(pool, { schema, leases: { schema } });
    assert.equal(checkpoints.fenced, true);
    const a = await leases.acquire("s", "Order-0/4", "a", 400);
    const fenceA = { scope: "s", unit: "Order-0/4", owner: "a", generation: a!.generation };
    await checkpoints.commit(key, 10n, fenceA);
    assert.equal(await checkpoints.load(key), 10n);
    // Wrong owner, wrong generation: refused.
    await assert.rejects(checkpoints.commit(key, 11n, { ...fenceA, owner: "b" }), StaleCommitError);
    await assert.rejects(
      checkpoints.commit(key, 11n, { ...fenceA, generation: a!.generation + 1n }),
      StaleCommitError,
    );
    // Expired (nobody took it yet): refused all the same.
    await new Promise((r) => setTimeout(r, 450));
    await assert.rejects(checkpoints.commit(key, 12n, fenceA), StaleCommitError);
    // Taken by b: a's late commit refused, b's accepted.
    const b = await leases.acquire("s", "Order-0/4", "b", 10_000);
    assert.equal(b!.generation, a!.generation + 1n);
    const fenceB = { ...fenceA, owner: "b", generation: b!.generation };
    await assert.rejects(checkpoints.commit(key, 13n, fenceA), (e) => {
      assert.ok(e instanceof StaleCommitError);
      assert.match(e.message, /a no longer holds lease s\/Order-0\/4/);
      return true;
    });
    await checkpoints.commit(key, 14n, fenceB);
    // Released: refused.
    await leases.release("s", { unit: "Order-0/4", generation: b!.generation }, "b");
    await assert.rejects(checkpoints.commit(key, 15n, fenceB), StaleCommitError);
    assert.equal(await checkpoints.load(key), 14n);
    // Unfenced commits are as before.
    await checkpoints.commit(key, 16n);
    assert.equal(await checkpoints.load(key), 16n);
  }));

Deno.test("postgres leases: an acquisition waits for a fenced commit in flight, which the next owner then loads", () =>
  withSchema(async (pool, schema) => {
    await initPostgresLeases(pool, { schema });
    await initPostgresCheckpoints(pool, { schema, leases: { schema } });
    const leases = postgresLeases(pool, { schema });
    const checkpoints = postgresCheckpoints(pool, { schema, leases: { schema } });
    const a = await leases.acquire("s", "Order-0/4", "a", 300);
    const fenceA = { scope: "s", unit: "Order-0/4", owner: "a", generation: a!.generation };
    await checkpoints.commit(key, 1n, fenceA);
    // Hold the checkpoint row so that a's next commit stops after locking the lease row.
    const blocker = await pool.connect();
    try {
      await blocker.query("BEGIN");
      await blocker.query(`SELECT 1 FROM "${schema}".checkpoints FOR UPDATE`);
      const commit = checkpoints.commit(key, 2n, fenceA);
      await new Promise((r) => setTimeout(r, 400)); // the lease lapses meanwhile
      let acquired = false;
      const acquire = leases.acquire("s", "Order-0/4", "b", 10_000).then((l) => {
        acquired = true;
        return l;
      });
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(acquired, false, "the acquisition waits for the commit's lock on the lease");
      await blocker.query("COMMIT");
      await commit; // begun while a held the lease: recorded
      const b = await acquire;
      assert.equal(b?.owner, "b");
      assert.equal(await checkpoints.load(key), 2n, "b resumes from a's last commit");
    } finally {
      blocker.release();
    }
  }));

Deno.test("postgres leases: racing members, one winner per unit", () =>
  withSchema(async (pool, schema) => {
    await initPostgresLeases(pool, { schema });
    const leases = postgresLeases(pool, { schema });
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => leases.acquire("s", "u", `m${i}`, 10_000)),
    );
    assert.equal(results.filter((l) => l !== undefined).length, 1);
    const [view] = await leases.list("s");
    assert.equal(view.leases[0].generation, 1n);
  }));

Deno.test("postgres leases: bad identifiers and a missing table are typed errors", () =>
  withSchema(async (pool, schema) => {
    assert.throws(() => postgresLeases(pool, { schema: "no; drop" }), InvalidArgumentError);
    await assert.rejects(initPostgresLeases(pool, { table: "a b" }), InvalidArgumentError);
    const leases = postgresLeases(pool, { schema });
    await assert.rejects(leases.acquire("s", "u", "a", 1000), LeaseTableMissingError);
    await initPostgresLeases(pool, { schema });
    await assert.rejects(leases.acquire("s", "", "a", 1000), InvalidArgumentError);
    await assert.rejects(leases.acquire("s", "u", "a", 0), InvalidArgumentError);
    await assert.rejects(
      leases.release("s", { unit: "u", generation: 1 as unknown as bigint }, "a"),
      InvalidArgumentError,
    );
  }));
