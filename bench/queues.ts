/**
 * Queue benchmark: impel's PostgreSQL queues (`queues/postgres.ts` with `queueConsumer`) next to
 * pg-boss on the same database, in alternating rounds, each system in a schema of its own; impel
 * with `prepare: true` (named statements, planned once per connection).
 *
 * 1. Throughput: `--messages` (default 10k) enqueued in batches of 1000, then drained by 4
 *    consumers with a no-op handler: enqueues/s, and dequeue+ack/s until the last is handled.
 *    Compared: 16 messages per consumer at a time (impel `concurrency: 16`; pg-boss
 *    `localConcurrency: 4, batchSize: 16` with `burstWhenBatchFull`, which completes a batch in
 *    one call, while impel acks each message). impel alone also with `concurrency: 1` (pg-boss
 *    has no like shape: with `batchSize: 1` it waits its polling interval, at least 0.5 s,
 *    between fetches, so 4 workers take about 8 jobs/s).
 * 2. Latency: the consumers idle; one message every 10 ms (`--latency` of them, default 300),
 *    each carrying its send time; enqueue→handler p50/p99. Both wake by LISTEN/NOTIFY (pg-boss:
 *    `useListenNotify`, queue `notify: true`).
 *
 *   deno run -A bench/queues.ts [--rounds 3] [--messages 10000] [--latency 300]
 *   IMPEL_PG_URL=postgres://... deno run -A bench/queues.ts
 *
 * JSON per round on stdout, a summary (medians) on stderr.
 */
// @ts-types="@types/pg"
import pg from "pg";
import { PgBoss } from "pg-boss";
import {
  initPostgresQueues,
  poolNotifications,
  postgresQueues,
  queueConsumer,
} from "../queues/postgres.ts";

const url = Deno.env.get("IMPEL_PG_URL") ?? "postgres://postgres@127.0.0.1:5432/impel_test";
const arg = (name: string, fallback: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
};
const ROUNDS = arg("rounds", 3);
const MESSAGES = arg("messages", 10_000);
const LATENCY = arg("latency", 300);
const CONSUMERS = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const median = (xs: number[]) => quantile(xs, 0.5);

interface Result {
  system: "impel" | "pg-boss";
  shape: number;
  enqueuePerSec: number;
  drainPerSec: number;
}
interface Latency {
  system: "impel" | "pg-boss";
  p50: number;
  p99: number;
}

async function until(cond: () => boolean, ms = 120_000) {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error("timed out");
    await sleep(2);
  }
}

/** Enqueues MESSAGES in batches of 1000 with `send`, then runs `consume` until all are handled. */
async function throughput(
  system: Result["system"],
  shape: number,
  send: (bodies: { n: number }[]) => Promise<void>,
  consume: (onMessage: () => void) => Promise<() => Promise<void>>,
): Promise<Result> {
  let t = performance.now();
  for (let i = 0; i < MESSAGES; i += 1000) {
    await send(Array.from({ length: Math.min(1000, MESSAGES - i) }, (_, k) => ({ n: i + k })));
  }
  const enqueueSec = (performance.now() - t) / 1000;
  let handled = 0;
  t = performance.now();
  const stop = await consume(() => handled++);
  await until(() => handled >= MESSAGES);
  const drainSec = (performance.now() - t) / 1000;
  await stop();
  return {
    system,
    shape,
    enqueuePerSec: Math.round(MESSAGES / enqueueSec),
    drainPerSec: Math.round(MESSAGES / drainSec),
  };
}

async function latency(
  system: Latency["system"],
  send: (body: { at: number }) => Promise<void>,
  consume: (onMessage: (body: { at: number }) => void) => Promise<() => Promise<void>>,
): Promise<Latency> {
  const ms: number[] = [];
  const stop = await consume((body) => ms.push(performance.now() - body.at));
  await sleep(1_000); // idle: every consumer is waiting
  for (let i = 0; i < LATENCY; i++) {
    await send({ at: performance.now() });
    await sleep(10);
  }
  await until(() => ms.length >= LATENCY, 30_000);
  await stop();
  return { system, p50: +median(ms).toFixed(2), p99: +quantile(ms, 0.99).toFixed(2) };
}

async function impel(pool: pg.Pool, round: number) {
  const schema = `bench_q_${round}_${Date.now() % 100_000}`;
  await initPostgresQueues(pool, { schema });
  const notifications = poolNotifications(pool);
  const store = postgresQueues(pool, { schema, notifications, prepare: true });
  const consume = (queue: string, concurrency: number, fn: (body: unknown) => void) => {
    const ac = new AbortController();
    const consumers = Array.from({ length: CONSUMERS }, () =>
      queueConsumer({
        store,
        queue,
        concurrency,
        pollMs: 1000,
        signal: ac.signal,
        handler: (body) => fn(body),
      }));
    return Promise.resolve(async () => {
      ac.abort();
      await Promise.all(consumers.map((c) => c.done));
    });
  };
  const out: (Result | Latency)[] = [];
  try {
    for (const shape of [1, 16]) {
      const queue = `tp${shape}`;
      out.push(
        await throughput(
          "impel",
          shape,
          (bodies) => store.enqueue(queue, bodies).then(() => {}),
          (on) => consume(queue, shape, on),
        ),
      );
    }
    out.push(
      await latency(
        "impel",
        (body) => store.enqueue("lat", [body]).then(() => {}),
        (on) => consume("lat", 1, on as (body: unknown) => void),
      ),
    );
  } finally {
    await store.close();
    await notifications.close();
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  }
  return out;
}

async function pgBoss(pool: pg.Pool, round: number) {
  const schema = `bench_boss_${round}_${Date.now() % 100_000}`;
  const boss = new PgBoss({
    connectionString: url,
    schema,
    max: 12,
    useListenNotify: true,
    schedule: false,
    supervise: false,
  });
  boss.on("error", (e: unknown) => console.error("pg-boss:", e));
  await boss.start();
  const out: (Result | Latency)[] = [];
  const consume = async (queue: string, batchSize: number, fn: (data: unknown) => void) => {
    const ids: string[] = [];
    ids.push(
      await boss.work(
        queue,
        {
          localConcurrency: CONSUMERS,
          batchSize,
          pollingIntervalSeconds: 0.5,
          notifyPollingIntervalSeconds: 1,
          ...(batchSize > 1 ? { burstWhenBatchFull: true } : {}),
        },
        // deno-lint-ignore require-await
        async (jobs: { data: unknown }[]) => {
          for (const job of jobs) fn(job.data);
        },
      ),
    );
    return async () => {
      for (const id of ids) await boss.offWork(queue, { id, wait: true } as never);
    };
  };
  try {
    for (const shape of [16]) {
      const queue = `tp${shape}`;
      await boss.createQueue(queue, { notify: true } as never);
      out.push(
        await throughput(
          "pg-boss",
          shape,
          (bodies) => boss.insert(queue, bodies.map((data) => ({ data }))).then(() => {}),
          (on) => consume(queue, shape, on),
        ),
      );
    }
    await boss.createQueue("lat", { notify: true } as never);
    out.push(
      await latency(
        "pg-boss",
        (body) => boss.send("lat", body).then(() => {}),
        (on) => consume("lat", 1, on as (data: unknown) => void),
      ),
    );
  } finally {
    await boss.stop({ graceful: true, wait: true } as never);
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  }
  return out;
}

const pool = new pg.Pool({ connectionString: url, max: 12 });
pool.on("error", () => {});
const all: (Result | Latency)[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? [impel, pgBoss] : [pgBoss, impel];
  for (const system of order) {
    const results = await system(pool, round);
    for (const r of results) console.log(JSON.stringify({ round, ...r }));
    all.push(...results);
  }
}
await pool.end();

for (const system of ["impel", "pg-boss"] as const) {
  for (const shape of system === "impel" ? [1, 16] : [16]) {
    const rs = all.filter((r): r is Result =>
      r.system === system && "shape" in r && r.shape === shape
    );
    console.error(
      `${system} ×${shape}: enqueue ${median(rs.map((r) => r.enqueuePerSec))}/s, ` +
        `dequeue+ack ${median(rs.map((r) => r.drainPerSec))}/s`,
    );
  }
  const ls = all.filter((r): r is Latency => r.system === system && "p50" in r);
  console.error(
    `${system} latency: p50 ${median(ls.map((r) => r.p50))} ms, p99 ${
      median(ls.map((r) => r.p99))
    } ms`,
  );
}
