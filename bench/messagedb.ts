// MessageDB benchmarks against the local PostgreSQL (prepare the database first:
// `tools/postgres.sh impel_bench`):
//   1. catch-up of a 200k-event category (1k streams): a raw `pg` paged read of the category
//      vs the source alone vs the source through the scheduler (pages cut into the default
//      batches of 100, and whole), in the same run;
//   2. append → handler latency at a steady rate, with and without LISTEN/NOTIFY.
// Run: deno run --allow-all bench/messagedb.ts [--events 200000] [--streams 1000]
//        [--rate 500] [--seconds 10] [--rounds 3]
// IMPEL_BENCH_PG_URL overrides postgres://postgres@127.0.0.1:5432/impel_bench.
// @ts-types="@types/pg"
import pg from "pg";
import type { Batch } from "../core/batch.ts";
import { memoryCheckpoints } from "../checkpoints/memory.ts";
import { messageDbStore } from "../stores/messagedb.ts";
import {
  installNotifyTrigger,
  messageDbSource,
  poolNotifications,
  uninstallNotifyTrigger,
} from "../sources/messagedb.ts";
import * as sinkModule from "../core/sink.ts";

const args = new Map<string, string>();
for (let k = 0; k < Deno.args.length; k += 2) {
  args.set(Deno.args[k].replace(/^--/, ""), Deno.args[k + 1]);
}
const totalEvents = Number(args.get("events") ?? 200_000);
const streams = Number(args.get("streams") ?? 1000);
const rate = Number(args.get("rate") ?? 500);
const seconds = Number(args.get("seconds") ?? 10);
const rounds = Number(args.get("rounds") ?? 5);
const url = Deno.env.get("IMPEL_BENCH_PG_URL") ?? "postgres://postgres@127.0.0.1:5432/impel_bench";

const pool = new pg.Pool({ connectionString: url, max: 8 });
pool.on("error", () => {});
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const pct = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};
const median = (xs: number[]) => pct(xs, 50);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const report: string[] = [];
const out = (line: string) => {
  console.log(line);
  report.push(line);
};

/** Seeds the category once (reused by later runs): rows inserted in bulk, round-robin by stream. */
async function seed(category: string) {
  const { rows } = await pool.query(
    "SELECT count(*)::int AS n FROM message_store.messages WHERE message_store.category(stream_name) = $1",
    [category],
  );
  if (rows[0].n === totalEvents) return;
  if (rows[0].n !== 0) {
    throw new Error(`category ${category} holds ${rows[0].n} events; recreate impel_bench`);
  }
  const t0 = performance.now();
  // Bulk insert into MessageDB's table (write_message would take minutes for 200k); positions
  // follow the same rules write_message applies.
  await pool.query(
    `INSERT INTO message_store.messages (id, stream_name, position, type, data, metadata)
     SELECT gen_random_uuid(), $1 || '-' || (k % $2), k / $2, 'Happened',
            jsonb_build_object('k', k, 'payload', repeat('x', 100)),
            jsonb_build_object('correlationId', 'c' || k)
       FROM generate_series(0, $3 - 1) AS k ORDER BY k`,
    [category, streams, totalEvents],
  );
  await pool.query("ANALYZE message_store.messages");
  console.log(`seeded ${fmt(totalEvents)} events in ${fmt(performance.now() - t0)} ms`);
}

/** The baseline: page through the category with get_category_messages and decode every row. */
async function rawRead(category: string): Promise<number> {
  const t0 = performance.now();
  let position = "1", n = 0;
  for (;;) {
    const { rows } = await pool.query(
      "SELECT * FROM message_store.get_category_messages($1, $2::bigint, 1000)",
      [category, position],
    );
    for (const row of rows) {
      // what any consumer does with a message: parse its JSON
      if (JSON.parse(row.data).k < 0 || JSON.parse(row.metadata) === null) {
        throw new Error("unexpected row");
      }
      n++;
    }
    if (rows.length < 1000) break;
    position = String(BigInt(rows[rows.length - 1].global_position) + 1n);
  }
  if (n !== totalEvents) throw new Error(`raw read ${n} events`);
  return performance.now() - t0;
}

async function sourceOnly(category: string): Promise<number> {
  const t0 = performance.now();
  const reader = messageDbSource({
    client: pool,
    categories: [category],
    group: "bench",
    checkpoints: memoryCheckpoints(),
  }).getReader();
  let n = 0;
  while (n < totalEvents) {
    const r: ReadableStreamReadResult<Batch> = await reader.read();
    n += r.value!.items.length;
  }
  const ms = performance.now() - t0;
  await reader.cancel();
  return ms;
}

type SinkApi = {
  streamsSink: (options: Record<string, unknown>) => {
    monitor: { awaitCompletion(options?: { tail?: boolean }): Promise<void> };
  };
  run: (
    source: ReadableStream<Batch>,
    sink: unknown,
    options: { signal: AbortSignal },
  ) => Promise<unknown>;
};
const sinkApi = sinkModule as unknown as SinkApi;

async function throughScheduler(category: string, maxBatchItems?: number): Promise<number> {
  let handled = 0;
  const controller = new AbortController();
  const sink = sinkApi.streamsSink({
    handler: (_stream: string, events: readonly unknown[]) => {
      handled += events.length;
    },
    maxConcurrentStreams: 64,
  });
  const t0 = performance.now();
  const done = sinkApi.run(
    messageDbSource({
      client: pool,
      categories: [category],
      group: "bench",
      checkpoints: memoryCheckpoints(),
      maxBatchItems,
      signal: controller.signal,
    }),
    sink,
    { signal: controller.signal },
  );
  await sink.monitor.awaitCompletion({ tail: true });
  const ms = performance.now() - t0;
  controller.abort();
  await done;
  if (handled !== totalEvents) throw new Error(`handled ${handled} of ${totalEvents}`);
  return ms;
}

async function catchUp() {
  const category = `BenchCatchUp${totalEvents}x${streams}`;
  await seed(category);
  await rawRead(category); // warm the cache and the JIT
  const raw: number[] = [], source: number[] = [], scheduled: number[] = [], whole: number[] = [];
  for (let r = 0; r < rounds; r++) {
    raw.push(await rawRead(category));
    source.push(await sourceOnly(category));
    scheduled.push(await throughScheduler(category));
    whole.push(await throughScheduler(category, 1000));
  }
  const rps = (ms: number) => totalEvents / (ms / 1000);
  const best = (xs: number[]) => Math.min(...xs);
  const line = (name: string, xs: number[]) =>
    `| ${name} | ${fmt(median(xs))} ms | ${fmt(rps(median(xs)))} | ${
      (median(raw) / median(xs)).toFixed(2)
    }× | ${fmt(rps(best(xs)))} | ${(best(raw) / best(xs)).toFixed(2)}× |`;
  out(
    `catch-up of ${fmt(totalEvents)} events over ${
      fmt(streams)
    } streams, ${rounds} rounds, interleaved:`,
  );
  out("");
  out("| read | median time | events/s | vs raw | best events/s | best vs raw |");
  out("| --- | --- | --- | --- | --- | --- |");
  out(line("raw `pg` paged `get_category_messages` (1000/page, JSON parsed)", raw));
  out(line("`messageDbSource` alone (batches read directly)", source));
  out(line("`messageDbSource` → `streamsSink` (no-op handler, 64 streams at once)", scheduled));
  out(line("the same with `maxBatchItems: 1000` (a page is one batch, as before 0.2)", whole));
  out("");
}

/** Appends `rate` events/s for `seconds` to 100 streams; the handler records append → handler time. */
async function latency(withNotify: boolean) {
  const category = `BenchLatency${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
  const store = messageDbStore(pool);
  const notifications = withNotify ? poolNotifications(pool) : undefined;
  if (withNotify) await installNotifyTrigger(pool);
  else await uninstallNotifyTrigger(pool);
  const latencies: number[] = [], appends: number[] = [];
  const controller = new AbortController();
  const sink = sinkApi.streamsSink({
    handler: (_stream: string, events: ReadonlyArray<{ data: unknown }>) => {
      const now = performance.now();
      for (const e of events) latencies.push(now - (e.data as { t: number }).t);
    },
    maxConcurrentStreams: 64,
  });
  const done = sinkApi.run(
    messageDbSource({
      client: pool,
      categories: [category],
      group: "latency",
      checkpoints: memoryCheckpoints(),
      startFrom: "tail",
      notifications,
      signal: controller.signal,
    }),
    sink,
    { signal: controller.signal },
  );
  await sleep(500);
  const total = rate * seconds;
  const start = performance.now();
  const writes: Promise<unknown>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const t = performance.now();
    writes.push(
      store.append(`${category}-${i % 100}`, [{ type: "Tick", data: { t } }], "any")
        .then(() => appends.push(performance.now() - t)),
    );
  }
  await Promise.all(writes);
  const achieved = total / ((performance.now() - start) / 1000);
  const deadline = performance.now() + 5000;
  while (latencies.length < total && performance.now() < deadline) await sleep(20);
  controller.abort();
  await done;
  await notifications?.close();
  if (latencies.length !== total) throw new Error(`handled ${latencies.length} of ${total}`);
  return {
    achieved,
    p50: pct(latencies, 50),
    p99: pct(latencies, 99),
    max: pct(latencies, 100),
    appendP50: pct(appends, 50),
    appendP99: pct(appends, 99),
  };
}

try {
  const { rows } = await pool.query("SELECT version() AS v");
  const host = `${navigator.hardwareConcurrency} cores, ${(rows[0].v as string).split(" on ")[0]}`;
  out(`Deno ${Deno.version.deno}, ${host}, load average at start ${Deno.loadavg()[0].toFixed(2)}`);
  out("");
  await catchUp();
  await sleep(3000); // let the server settle after the catch-up's reads
  out(
    `append → handler latency (from calling append to the handler), ${rate} events/s for ${seconds} s ` +
      "over 100 streams, default 1 s tail sleep; the append's own round trip is shown for context:",
  );
  out("");
  out("| wake-up | achieved rate | p50 | p99 | max | append p50 / p99 |");
  out("| --- | --- | --- | --- | --- | --- |");
  for (const withNotify of [true, false]) {
    const r = await latency(withNotify);
    out(
      `| ${withNotify ? "LISTEN/NOTIFY trigger" : "tail sleep only"} | ${fmt(r.achieved)}/s | ${
        r.p50.toFixed(1)
      } ms | ${r.p99.toFixed(1)} ms | ${r.max.toFixed(1)} ms | ${r.appendP50.toFixed(1)} / ${
        r.appendP99.toFixed(1)
      } ms |`,
    );
  }
} finally {
  await pool.end();
}
