// A lease store and a fenced checkpoint store pointed at different leases (review of issue 14,
// finding 9): every commit was refused as a StaleCommitError, the lease being in the other table.
// Now the stores say where the leases are (LeaseStore.location, CheckpointStore.fenceLocation) and
// the leased MessageDB source refuses the pair when created, naming both.
import assert from "node:assert/strict";
import {
  checkLeaseFence,
  InvalidArgumentError,
  LeaseFenceMismatchError,
  StaleCommitError,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { initPostgresLeases, postgresLeases } from "../../leases/postgres.ts";
import { messageDbSource } from "../../sources/messagedb.ts";
import { unique, withSchema } from "../support/postgres.ts";

Deno.test("lease fence location: postgresCheckpoints checking another lease table than postgresLeases keeps is refused at creation, naming both", async () => {
  await withSchema(async (pool, schema) => {
    const other = unique("cp_");
    try {
      for (const s of [schema, other]) {
        await initPostgresLeases(pool, { schema: s });
        await initPostgresCheckpoints(pool, { schema: s });
      }
      const leases = postgresLeases(pool, { schema });
      // The mistake: the checkpoints' fence left on another table (here another schema's).
      const checkpoints = postgresCheckpoints(pool, { schema, leases: { schema: other } });
      // What it did: the lease is held, and the commit is refused all the same.
      const lease = (await leases.acquire("messagedb/g", "Order-0/4", "a", 10_000))!;
      const key = { source: "messagedb", tranche: "Order-0/4", group: "g" };
      const fence = { scope: "messagedb/g", unit: "Order-0/4", owner: "a", generation: 1n };
      assert.equal(lease.generation, 1n);
      await assert.rejects(checkpoints.commit(key, 5n, fence), StaleCommitError);

      // What it does now: the source refuses the pair before anything runs.
      // A source starts its member when created: stopped before the pool ends (its running mark
      // holds a connection, which pool.end() would wait for).
      const stop = new AbortController();
      const make = (cp: typeof checkpoints) =>
        messageDbSource({
          client: pool,
          categories: ["Order"],
          group: "g",
          checkpoints: cp,
          leases: { store: leases, slots: 4, stopTimeoutMs: 1_000 },
          signal: stop.signal,
        });
      assert.throws(
        () => make(checkpoints),
        (e: unknown) => {
          assert.ok(e instanceof LeaseFenceMismatchError);
          assert.ok(e instanceof InvalidArgumentError && e.field === "checkpoints");
          assert.equal(e.leaseLocation, `postgresql "${schema}"."leases"`);
          assert.equal(e.fenceLocation, `postgresql "${other}"."leases"`);
          assert.match(e.message, new RegExp(`"${schema}"\\."leases"`));
          assert.match(e.message, new RegExp(`"${other}"\\."leases"`));
          return true;
        },
      );
      // The default table on one side only is a mismatch too.
      assert.throws(() => make(postgresCheckpoints(pool, { schema })), LeaseFenceMismatchError);
      // Pointed at the same table: accepted, and the fenced commit is recorded.
      const same = postgresCheckpoints(pool, { schema, leases: { schema } });
      const source = make(same);
      assert.equal(source.group, "g");
      await same.commit(key, 5n, fence);
      assert.equal(await same.load(key), 5n);
      stop.abort();
      await source.released;
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${other}" CASCADE`);
    }
  });
});

Deno.test("lease fence location: memory checkpoints fenced by another memory lease store are refused", async () => {
  const fake = { query: () => Promise.resolve({ rows: [] }) };
  const stop = new AbortController();
  const store = memoryLeases(), another = memoryLeases();
  assert.notEqual(store.location, another.location);
  const make = (leases: typeof store) =>
    messageDbSource({
      client: fake,
      categories: ["Order"],
      group: "g",
      checkpoints: memoryCheckpoints({ leases }),
      leases: { store, stopTimeoutMs: 1_000 },
      signal: stop.signal,
    } as never);
  assert.throws(
    () => make(another),
    (e: unknown) =>
      e instanceof LeaseFenceMismatchError && e.leaseLocation === store.location &&
      e.fenceLocation === another.location,
  );
  const source = make(store); // the same store: fine
  stop.abort();
  await source.released;
});

Deno.test("lease fence location: stores that do not say where are not checked", () => {
  checkLeaseFence({}, { fenceLocation: "postgresql x" });
  checkLeaseFence({ location: "postgresql x" }, {});
  checkLeaseFence({ location: "postgresql x" }, { fenceLocation: "postgresql x" });
  assert.throws(
    () => checkLeaseFence({ location: "a" }, { fenceLocation: "b" }, "leases."),
    (e: unknown) => e instanceof LeaseFenceMismatchError && /leases\.store keeps/.test(e.message),
  );
});
