// Queue metrics and health (issue 17): the impel_queue_* series from a real PostgreSQL queue and
// its consumer, /health degraded when dead letters grow or the oldest message is too old, and the
// replay progress gauges.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { checkHealth } from "../../observability/health.ts";
import { createHttpHandler } from "../../observability/http.ts";
import { initPostgresQueues, postgresQueues } from "../../queues/postgres.ts";
import { memoryQueues } from "../../queues/memory.ts";
import { queueConsumer } from "../../queues/consumer.ts";
import type { QueueStore } from "../../queues/queue.ts";
import { replayMessageDb } from "../../replay/messagedb.ts";
import { seed, unique, withSchema } from "../support/postgres.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 5_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** The value of one series in an exposition text. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("queue metrics: counts, dead letters, oldest age, consumer counters and durations (PostgreSQL)", async () => {
  await withSchema(async (pool, schema) => {
    await initPostgresQueues(pool, { schema });
    const store = postgresQueues(pool, { schema, maxDeliveries: 1 });
    const ac = new AbortController();
    try {
      await store.enqueue("mail", [{ ok: true }, { ok: true }, { ok: false }]);
      const consumer = queueConsumer<{ ok: boolean }>({
        store,
        queue: "mail",
        pollMs: 20,
        retry: { initialDelayMs: 1, maxDelayMs: 1 },
        signal: ac.signal,
        handler: async (body) => {
          await sleep(3);
          if (!body.ok) throw new Error("bounced");
        },
      });
      const metrics = createMetrics({ defaultMetrics: false });
      metrics.addQueue({ store, queue: "mail", consumer });
      await until("the dead letter", async () => (await store.stats("mail")).dead === 1);
      await until("two acks", () => consumer.stats().acked === 2);
      await store.enqueue("mail", [{ ok: true }], { delayMs: 60_000 });
      const text = await metrics.metrics();
      assert.equal(value(text, 'impel_queue_dead_letters{queue="mail"}'), 1);
      assert.equal(value(text, 'impel_queue_messages{queue="mail",state="delayed"}'), 1);
      assert.equal(value(text, 'impel_queue_messages{queue="mail",state="ready"}'), 0);
      assert.equal(value(text, 'impel_queue_messages{queue="mail",state="in_flight"}'), 0);
      const oldest = value(text, 'impel_queue_oldest_seconds{queue="mail"}')!;
      assert.ok(oldest >= 0 && oldest < 30, `oldest ${oldest}`);
      assert.equal(
        value(text, 'impel_queue_deliveries_total{queue="mail",outcome="delivered"}'),
        3,
      );
      assert.equal(value(text, 'impel_queue_deliveries_total{queue="mail",outcome="acked"}'), 2);
      assert.equal(value(text, 'impel_queue_deliveries_total{queue="mail",outcome="nacked"}'), 1);
      assert.equal(value(text, 'impel_queue_handler_duration_seconds_count{queue="mail"}'), 3);
      assert.equal(
        value(text, 'impel_queue_handler_duration_seconds_bucket{le="+Inf",queue="mail"}'),
        3,
      );
      assert.ok(value(text, 'impel_queue_handler_duration_seconds_sum{queue="mail"}')! >= 0.009);
      // A second scrape reports the same totals (counters are set, not added twice).
      const again = await metrics.metrics();
      assert.equal(value(again, 'impel_queue_deliveries_total{queue="mail",outcome="acked"}'), 2);
      assert.throws(() => metrics.addQueue({ store, queue: "mail" }), /already registered/);
      assert.throws(() => metrics.addQueue({ store: {} as never, queue: "x" }), /store/);
    } finally {
      ac.abort();
      await store.close();
    }
  });
});

Deno.test("queue metrics: one queue name in two schemas, told apart by the registration's name", async () => {
  await withSchema(async (pool, schema) => {
    const other = `${schema}_b`;
    await initPostgresQueues(pool, { schema });
    await initPostgresQueues(pool, { schema: other });
    const jobs = postgresQueues(pool, { schema });
    const billing = postgresQueues(pool, { schema: other });
    try {
      await jobs.enqueue("mail", [1]);
      await billing.enqueue("mail", [1, 2, 3]);
      const metrics = createMetrics({ defaultMetrics: false });
      metrics.addQueue({ store: jobs, queue: "mail" });
      const metered = metrics.addQueue({ store: billing, queue: "mail", name: `${other}.mail` });
      assert.equal(metered.queue, `${other}.mail`);
      const text = await metrics.metrics();
      assert.equal(value(text, 'impel_queue_messages{queue="mail",state="ready"}'), 1);
      assert.equal(
        value(text, `impel_queue_messages{queue="${other}.mail",state="ready"}`),
        3,
        "the second schema's queue under its name",
      );
      const report = await checkHealth([], {}, metrics.queues());
      assert.deepEqual(report.queues?.map((q) => [q.queue, q.snapshot.stats?.ready]), [
        ["mail", 1],
        [`${other}.mail`, 3],
      ]);
      assert.throws(
        () => metrics.addQueue({ store: billing, queue: "mail" }),
        (e) => e instanceof InvalidArgumentError && e.field === "queue" && /name:/.test(e.message),
        "a clash says how to tell them apart",
      );
      assert.throws(
        () => metrics.addQueue({ store: billing, queue: "mail", name: "" }),
        (e) => e instanceof InvalidArgumentError && e.field === "name",
      );
      metered.remove();
      metrics.addQueue({ store: billing, queue: "mail", name: `${other}.mail` }); // free again
    } finally {
      await jobs.close();
      await billing.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${other}" CASCADE`);
    }
  });
});

Deno.test("queue health: degraded when dead letters grow, ok again after the window", async () => {
  const store = memoryQueues({ maxDeliveries: 1 });
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.addQueue({ store, queue: "jobs", deadWindowMs: 300 });
  const first = await checkHealth([], {}, metrics.queues());
  assert.equal(first.status, "ok");
  assert.equal(first.queues?.[0].queue, "jobs");
  await store.enqueue("jobs", [1]);
  const [m] = await store.dequeue("jobs", { visibilityTimeoutMs: 1_000 });
  await store.nack(m, { error: "boom" });
  await store.dequeue("jobs", { visibilityTimeoutMs: 1_000 }); // moves it to the dead letters
  const grown = await checkHealth([], {}, metrics.queues());
  assert.equal(grown.status, "degraded");
  assert.equal(grown.reasons[0].kind, "queueDeadLetters");
  assert.equal(grown.reasons[0].queue, "jobs");
  assert.equal(grown.reasons[0].value, 1);
  await sleep(350);
  await checkHealth([], {}, metrics.queues()); // a sample past the window
  await sleep(10);
  const later = await checkHealth([], {}, metrics.queues());
  assert.equal(later.status, "ok", JSON.stringify(later.reasons));
  // A threshold can make them failing.
  await store.enqueue("jobs", [2]);
  const [n] = await store.dequeue("jobs", { visibilityTimeoutMs: 1_000 });
  await store.nack(n, { error: "boom" });
  await store.dequeue("jobs", { visibilityTimeoutMs: 1_000 });
  const strict = await checkHealth([], { queueDeadLetters: { failing: 1 } }, metrics.queues());
  assert.equal(strict.status, "failing");
});

Deno.test("queue health: the oldest message's age against its threshold, and an unreadable store, over /health", async () => {
  const store = memoryQueues();
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.addQueue({ store, queue: "jobs" });
  await store.enqueue("jobs", [1]);
  const handler = createHttpHandler({ metrics, health: { queueOldestMs: { degraded: 50 } } });
  const fresh = await (await handler(new Request("http://localhost/health"))).json();
  assert.equal(fresh.status, "ok");
  await sleep(80);
  const response = await handler(new Request("http://localhost/health"));
  assert.equal(response.status, 200);
  const old = await response.json();
  assert.equal(old.status, "degraded");
  assert.equal(old.reasons[0].kind, "queueOldest");
  assert.ok(old.reasons[0].value >= 50);
  assert.equal(old.queues[0].snapshot.stats.ready, 1);

  const broken: QueueStore = {
    ...memoryQueues(),
    stats: () => Promise.reject(new Error("connection refused")),
  };
  const m2 = createMetrics({ defaultMetrics: false });
  m2.addQueue({ store: broken, queue: "jobs" });
  const report = await checkHealth([], {}, m2.queues());
  assert.equal(report.status, "degraded");
  assert.equal(report.reasons[0].kind, "queueUnavailable");
  assert.match(report.reasons[0].message, /connection refused/);
  // The scrape still answers, without the queue's counts.
  assert.ok(!(await m2.metrics()).includes('impel_queue_dead_letters{queue="jobs"}'));
});

Deno.test("replay progress gauges through metrics", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 4, 5);
    const metrics = createMetrics({ defaultMetrics: false });
    const replay = replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      rate: 40,
      handler: () => {},
      metrics,
      statsIntervalMs: 0,
    });
    await sleep(300);
    const mid = await metrics.metrics();
    assert.equal(value(mid, 'impel_replay_events{group="impel-replay",kind="total"}'), 20);
    assert.equal(value(mid, 'impel_replay_running{group="impel-replay"}'), 1);
    const eta = value(mid, 'impel_replay_eta_seconds{group="impel-replay"}');
    assert.ok(eta === undefined || eta > 0, `eta ${eta}`);
    await replay.done;
    const end = await metrics.metrics();
    assert.equal(value(end, 'impel_replay_events{group="impel-replay",kind="done"}'), 20);
    assert.equal(value(end, 'impel_replay_running{group="impel-replay"}'), 0);
    // The replay's pipeline is registered too, under its group.
    assert.equal(value(end, 'impel_scheduler_events_handled_total{group="impel-replay"}'), 20);
  });
});
