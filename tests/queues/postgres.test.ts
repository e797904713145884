// PostgreSQL queues against the real server (IMPEL_PG_URL): the store and consumer contracts,
// each case in a schema of its own (dropped afterwards); then what only a database shows: a
// rolled-back enqueue leaves nothing, SKIP LOCKED exclusivity with dequeuers on separate
// connections, NOTIFY wake-up, repeatable init, missing tables.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { InvalidArgumentError } from "../../core/errors.ts";
import {
  initPostgresQueues,
  poolNotifications,
  postgresQueues,
  queueConsumer,
  QueueTablesMissingError,
} from "../../queues/postgres.ts";
import { unique, url } from "../support/postgres.ts";
import { queueStoreContract } from "./contract.ts";
import { consumerContract } from "./consumer_contract.ts";

const pool = new pg.Pool({ connectionString: url, max: 12 });
pool.on("error", () => {});
const available = await pool.query("SELECT 1").then(() => true, () => false);
if (!available) console.warn(`PostgreSQL is not reachable at ${url}: its queue tests are ignored`);
const notifications = poolNotifications(pool);

async function fresh(
  options: { maxDeliveries?: number; maxMessageBytes?: number; prepare?: boolean } = {},
) {
  const schema = unique("q_");
  await initPostgresQueues(pool, { schema });
  const channel = unique("qch_");
  const store = postgresQueues(pool, { schema, notifyChannel: channel, notifications, ...options });
  return {
    schema,
    store,
    [Symbol.asyncDispose]: async () => {
      await store.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    },
  };
}

queueStoreContract("postgres queues", fresh, { ignore: !available });
queueStoreContract(
  "postgres queues (prepared statements)",
  (options) => fresh({ ...options, prepare: true }),
  { ignore: !available },
);
consumerContract("postgres queues", fresh, { ignore: !available });

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !available, sanitizeOps: false, sanitizeResources: false, fn });

test("postgres queues: an enqueue in a rolled-back transaction leaves nothing", async () => {
  await using f = await fresh();
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const ids = await f.store.enqueue("jobs", ["a", "b"], { client });
    assert.equal(ids.length, 2);
    assert.deepEqual(
      await f.store.dequeue("jobs", { visibilityTimeoutMs: 1000 }),
      [],
      "not visible outside the transaction before it commits",
    );
    await client.query("ROLLBACK");
    await client.query("BEGIN");
    await f.store.enqueue("jobs", ["kept"], { client });
    await client.query("COMMIT");
  } finally {
    client.release();
  }
  const got = await f.store.dequeue("jobs", { visibilityTimeoutMs: 1000, max: 10 });
  assert.deepEqual(got.map((m) => m.body), ["kept"]);
  const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${f.schema}".queue_messages`);
  assert.equal(rows[0].n, 1, "the rolled-back rows are gone");
});

test("postgres queues: dequeuers on 8 connections never hold one message at once", async () => {
  await using f = await fresh();
  const N = 2_000;
  for (let i = 0; i < N; i += 500) {
    await f.store.enqueue("jobs", Array.from({ length: 500 }, (_, k) => i + k));
  }
  // Every holder records [taken, released] per message; any two of one message must not overlap.
  const holds = new Map<number, Array<[number, number]>>();
  const acks = new Map<number, number>();
  const worker = async () => {
    for (;;) {
      const got = await f.store.dequeue("jobs", { visibilityTimeoutMs: 60_000, max: 5 });
      if (got.length === 0) return;
      for (const m of got) {
        const taken = performance.now();
        await new Promise((r) => setTimeout(r, Math.random() < 0.1 ? 1 : 0));
        const ok = await f.store.ack(m);
        const body = m.body as number;
        (holds.get(body) ?? holds.set(body, []).get(body)!).push([taken, performance.now()]);
        if (ok) acks.set(body, (acks.get(body) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  assert.equal(acks.size, N, "every message acked");
  assert.ok([...acks.values()].every((n) => n === 1), "each exactly once");
  assert.ok([...holds.values()].every((h) => h.length === 1), "each delivered once");
});

test("postgres queues: LISTEN/NOTIFY wakes a waiting consumer well before its poll", async () => {
  await using f = await fresh();
  const ac = new AbortController();
  const latencies: number[] = [];
  const consumer = queueConsumer<{ at: number }>({
    store: f.store,
    queue: "jobs",
    pollMs: 5_000,
    signal: ac.signal,
    handler: (body) => void latencies.push(performance.now() - body.at),
  });
  await new Promise((r) => setTimeout(r, 200)); // the consumer is waiting by now
  for (let i = 0; i < 5; i++) {
    await f.store.enqueue("jobs", [{ at: performance.now() }]);
    await new Promise((r) => setTimeout(r, 100));
  }
  const deadline = Date.now() + 3_000;
  while (latencies.length < 5 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  ac.abort();
  await consumer.done;
  assert.equal(latencies.length, 5);
  assert.ok(Math.max(...latencies) < 1_000, `woken by NOTIFY, not the 5 s poll: ${latencies}`);
});

test("postgres queues: without notifications the consumer polls", async () => {
  const schema = unique("q_");
  await initPostgresQueues(pool, { schema });
  const store = postgresQueues(pool, { schema });
  try {
    const ac = new AbortController();
    let handled = 0;
    const consumer = queueConsumer({
      store,
      queue: "jobs",
      pollMs: 50,
      signal: ac.signal,
      handler: () => void handled++,
    });
    await new Promise((r) => setTimeout(r, 100));
    await store.enqueue("jobs", [1, 2, 3]);
    const deadline = Date.now() + 3_000;
    while (handled < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    await consumer.done;
    assert.equal(handled, 3);
  } finally {
    await store.close();
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  }
});

test("postgres queues: init is repeatable and concurrent; missing tables are a typed error", async () => {
  const schema = unique("q_");
  try {
    const store = postgresQueues(pool, { schema });
    await assert.rejects(
      store.enqueue("jobs", [1]),
      (e) => e instanceof QueueTablesMissingError && /initPostgresQueues/.test(e.message),
    );
    await assert.rejects(
      store.dequeue("jobs", { visibilityTimeoutMs: 10 }),
      QueueTablesMissingError,
    );
    await Promise.all([1, 2, 3].map(() => initPostgresQueues(pool, { schema })));
    await initPostgresQueues(pool, { schema });
    assert.equal((await store.enqueue("jobs", [1])).length, 1);
    await store.close();
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  }
});

test("postgres queues: bad store options and receipts are typed errors", async () => {
  const field = (f: string) => (e: unknown) => e instanceof InvalidArgumentError && e.field === f;
  assert.throws(() => postgresQueues(pool, { schema: "a-b" }), field("schema"));
  assert.throws(() => postgresQueues(pool, { notifyChannel: "x y" }), field("notifyChannel"));
  assert.throws(() => postgresQueues(pool, { maxDeliveries: 0 }), field("maxDeliveries"));
  assert.throws(() => postgresQueues(pool, { maxMessageBytes: 1 }), field("maxMessageBytes"));
  assert.throws(() => postgresQueues(pool, { notifications: {} as never }), field("notifications"));
  assert.throws(() => postgresQueues(pool, { prepare: "yes" as never }), field("prepare"));
  await assert.rejects(initPostgresQueues(pool, { schema: "x;drop" }), field("schema"));
  await using f = await fresh();
  await assert.rejects(
    f.store.ack({ id: "1", queue: "jobs", receipt: "not-a-uuid" } as never),
    field("message.receipt"),
  );
  await assert.rejects(
    f.store.enqueue("jobs", [1], { client: {} as never }),
    field("client"),
  );
});

Deno.test({
  name: "postgres queues: (teardown)",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await notifications.close();
    await pool.end();
  },
});
