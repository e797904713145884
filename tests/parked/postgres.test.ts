// The park-store contract against the real PostgreSQL server (IMPEL_PG_URL, default the
// impel_test database), each case in a schema of its own, dropped afterwards; plus the store's
// own edges: an explicit init, validated identifiers, a missing table, concurrent writers.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { InvalidArgumentError } from "../../mod.ts";
import {
  initPostgresParkStore,
  ParkTableMissingError,
  postgresParkStore,
} from "../../parked/postgres.ts";
import { unique, url } from "../support/postgres.ts";
import { event, failure, parkStoreContract } from "./contract.ts";

const pool = new pg.Pool({ connectionString: url, max: 4 });
pool.on("error", () => {});
const available = await pool.query("SELECT 1").then(() => true, () => false);
if (!available) console.warn(`PostgreSQL is not reachable at ${url}: its park tests are ignored`);

async function freshSchema() {
  const schema = unique("park_");
  await initPostgresParkStore(pool, { schema });
  return {
    schema,
    store: postgresParkStore(pool, { schema }),
    [Symbol.asyncDispose]: async () => {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    },
  };
}

parkStoreContract("postgres park store", freshSchema, { ignore: !available, sanitize: false });

const opts = { ignore: !available, sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "postgres park store: init is explicit and repeatable; a missing table is a typed error",
  ...opts,
  async fn() {
    const schema = unique("park_");
    try {
      const store = postgresParkStore(pool, { schema, table: "held" });
      await assert.rejects(store.list("g"), ParkTableMissingError);
      await assert.rejects(
        store.park("g", [{ stream: "A-1", events: [], failure: failure() }]),
        (e) => e instanceof ParkTableMissingError && /initPostgresParkStore/.test(e.message),
      );
      await initPostgresParkStore(pool, { schema, table: "held" });
      await initPostgresParkStore(pool, { schema, table: "held" }); // again: no error
      await store.park("g", [{ stream: "A-1", events: [event(0)], failure: failure() }]);
      const { rows } = await pool.query(
        `SELECT idx, state, event IS NOT NULL AS has_event FROM "${schema}"."held" ORDER BY idx`,
      );
      assert.deepEqual(rows, [
        { idx: "-1", state: "parked", has_event: false },
        { idx: "0", state: null, has_event: true },
      ]);
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  },
});

Deno.test({
  name:
    "postgres park store: 24 members initialising at once all succeed, on a new schema and on a table of an older version",
  ...opts,
  async fn() {
    // One connection per member, all connected before any starts, so that the statements really
    // race (a pool would queue them on its few connections).
    const members = await Promise.all(Array.from({ length: 24 }, async () => {
      const c = new pg.Client({ connectionString: url });
      c.on("error", () => {});
      await c.connect();
      return c;
    }));
    const schemas: string[] = [];
    try {
      const initAll = async (schema: string) => {
        const results = await Promise.allSettled(
          members.map((c) => initPostgresParkStore(c, { schema })),
        );
        const failed = results.flatMap((r) => r.status === "rejected" ? [String(r.reason)] : []);
        assert.deepEqual(failed, [], `${failed.length} of ${members.length} inits failed`);
        const store = postgresParkStore(pool, { schema });
        await store.park("g", [{ stream: "A-1", events: [event(0)], failure: failure() }]);
        assert.equal((await store.get("g", "A-1"))?.state, "parked");
      };
      for (let round = 0; round < 3; round++) {
        const schema = unique("park_");
        schemas.push(schema);
        await initAll(schema); // schema, table and indexes created at once by all
      }
      // A table of the first version (no claim tokens, tranches or skip bounds; no 'failed'
      // state): every member upgrades it at once.
      const schema = unique("park_");
      schemas.push(schema);
      await pool.query(`CREATE SCHEMA "${schema}"`);
      await pool.query(
        `CREATE TABLE "${schema}".parked (
           consumer_group text NOT NULL, stream text NOT NULL, episode bigint NOT NULL,
           idx bigint NOT NULL CHECK (idx >= -1), event text,
           state text CHECK (state IN ('parked', 'released', 'skipped')),
           first_index bigint, next_index bigint, event_count bigint, error text,
           attempts integer, first_failed_at timestamptz, last_failed_at timestamptz,
           parked_at timestamptz, request_action text CHECK (request_action IN ('release', 'skip')),
           request_by text, request_reason text, requested_at timestamptz, claim_by text,
           claim_until timestamptz, resolved_at timestamptz, applied_by text,
           resolved_events bigint, PRIMARY KEY (consumer_group, stream, episode, idx),
           CHECK ((idx = -1) = (state IS NOT NULL) AND (idx >= 0) = (event IS NOT NULL)))`,
      );
      await initAll(schema);
      const { rows } = await pool.query(
        `SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint
          WHERE conrelid = '"${schema}".parked'::regclass AND conname = 'parked_state_check'`,
      );
      assert.match(String(rows[0]?.def), /failed/, "the upgraded table takes the failed state");
    } finally {
      await Promise.all(members.map((c) => c.end()));
      for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  },
});

Deno.test({
  name: "postgres park store: schema and table names are validated identifiers",
  ...opts,
  fn() {
    for (
      const [options, field] of [
        [{ schema: 'x"; DROP TABLE y; --' }, "schema"],
        [{ table: "1abc" }, "table"],
        [{ table: "t".repeat(51) }, "table"],
        [{ schema: "" }, "schema"],
      ] as const
    ) {
      assert.throws(
        () => postgresParkStore(pool, options),
        (e) => e instanceof InvalidArgumentError && e.field === field,
        JSON.stringify(options),
      );
    }
  },
});

Deno.test({
  name: "postgres park store: writers racing on one stream store each event once, in order",
  ...opts,
  async fn() {
    await using f = await freshSchema();
    await f.store.park("g", [{ stream: "A-1", events: [event(0)], failure: failure() }]);
    // Eight writers, each writing overlapping spans of the same stream at once.
    await Promise.all(Array.from({ length: 8 }, (_, w) =>
      f.store.park("g", [{
        stream: "A-1",
        events: Array.from({ length: 10 }, (_, i) => event(1 + w * 5 + i)),
      }])));
    const entry = (await f.store.get("g", "A-1"))!;
    const events = await f.store.events("g", "A-1", entry.episode, 0, 1000);
    const indexes = events.map((e) => e.index);
    assert.deepEqual(indexes, Array.from({ length: 46 }, (_, i) => i), "all, once each, in order");
    assert.equal(entry.events, indexes.length, "the count matches the rows");
    assert.equal(entry.next, indexes[indexes.length - 1] + 1);
  },
});

Deno.test({
  name:
    "postgres park store: a write racing a skip is either left parked or not parked, and no row is orphaned",
  ...opts,
  async fn() {
    await using f = await freshSchema();
    for (let round = 0; round < 20; round++) {
      const stream = `A-${round}`;
      await f.store.park("g", [{ stream, events: [event(0)], failure: failure() }]);
      const { episode } = (await f.store.get("g", stream))!;
      await f.store.request("g", stream, { action: "skip", by: "t", reason: "race" });
      const c = await f.store.claim("g", stream, episode, { by: "s", until: Date.now() + 60_000 });
      const token = c!.claim!.token;
      const [outcomes, first] = await Promise.all([
        f.store.park("g", [{ stream, events: [event(1)] }]),
        f.store.resolve("g", stream, episode, { by: "s", token }),
      ]);
      // Undefined only when the write moved `next` between its two statements: asked again, as
      // a sink does ("moved").
      const resolved = first ?? await f.store.resolve("g", stream, episode, { by: "s", token });
      assert.ok(resolved);
      assert.equal(resolved.resolution?.events, 1, "only the event the operator saw is dropped");
      if (outcomes[0] === "parked") {
        assert.deepEqual([resolved.state, resolved.first, resolved.events], ["parked", 1, 1]);
      } else assert.equal(resolved.state, "skipped", "written after: the writer keeps it");
      const { rows } = await pool.query(
        `SELECT idx FROM "${f.schema}".parked WHERE stream = $1 AND idx >= 0 ORDER BY idx`,
        [stream],
      );
      assert.deepEqual(
        rows.map((r) => Number(r.idx)),
        outcomes[0] === "parked" ? [1] : [],
        "rows left are the episode's own",
      );
    }
  },
});

Deno.test({
  name:
    "postgres park store: a skip resolved while a write holds the episode leaves no event rows behind",
  ...opts,
  async fn() {
    await using f = await freshSchema();
    await f.store.park("g", [{ stream: "S", events: [event(0), event(1)], failure: failure() }]);
    const { episode } = (await f.store.get("g", "S"))!;
    // Unbounded (as recorded before skips were bounded): the skip drops whatever it finds.
    await pool.query(
      `UPDATE "${f.schema}".parked SET request_action = 'skip', request_by = 'alice',
              request_reason = 'r', requested_at = now() WHERE idx = -1`,
    );
    const c = await f.store.claim("g", "S", episode, { by: "s", until: Date.now() + 60_000 });
    const tx = new pg.Client({ connectionString: url });
    await tx.connect();
    try {
      await tx.query("BEGIN");
      await postgresParkStore(tx, { schema: f.schema }).park("g", [{
        stream: "S",
        events: [event(2), event(3)],
      }]);
      const resolving = f.store.resolve("g", "S", episode, { by: "s", token: c!.claim!.token });
      await new Promise((r) => setTimeout(r, 200));
      await tx.query("COMMIT");
      const done = await resolving;
      assert.deepEqual([done?.state, done?.resolution?.events], ["skipped", 4]);
      const { rows } = await pool.query(
        `SELECT idx FROM "${f.schema}".parked WHERE stream = 'S' AND idx >= 0`,
      );
      assert.deepEqual(rows, [], "no event row outlives its episode");
    } finally {
      await tx.end();
    }
  },
});

globalThis.addEventListener("unload", () => void pool.end());
