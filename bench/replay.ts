// Replay benchmarks against the local PostgreSQL (a MessageDB database: `tools/postgres.sh NAME`):
//   1. an unthrottled replay of a 200k-event category (1k streams) against the MessageDB catch-up
//      of the same category (messageDbSource → streamsSink, no-op handler), rounds alternating;
//   2. a throttled replay: the rate asked against the rate measured;
//   3. the start from a time: positionAtTime's binary search against a scan of messages.time.
// Run: deno run -A bench/replay.ts [--events 200000] [--streams 1000] [--rounds 5] [--rate 20000]
// IMPEL_BENCH_PG_URL overrides postgres://postgres@127.0.0.1:5432/impel_bench.
// @ts-types="@types/pg"
import pg from "pg";
import { memoryCheckpoints } from "../checkpoints/memory.ts";
import { messageDbSource } from "../sources/messagedb.ts";
import { run, streamsSink } from "../core/sink.ts";
import { positionAtTime, replayMessageDb } from "../replay/messagedb.ts";

const args = new Map<string, string>();
for (let k = 0; k < Deno.args.length; k += 2) {
  args.set(Deno.args[k].replace(/^--/, ""), Deno.args[k + 1]);
}
const totalEvents = Number(args.get("events") ?? 200_000);
const streams = Number(args.get("streams") ?? 1000);
const rounds = Number(args.get("rounds") ?? 5);
const rate = Number(args.get("rate") ?? 20_000);
const url = Deno.env.get("IMPEL_BENCH_PG_URL") ?? "postgres://postgres@127.0.0.1:5432/impel_bench";

const pool = new pg.Pool({ connectionString: url, max: 8 });
pool.on("error", () => {});
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const uptime = async () =>
  (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");

/** Seeds the category once: bulk rows, round-robin by stream, times 1 ms apart ending now. */
async function seed(category: string) {
  const { rows } = await pool.query(
    "SELECT count(*)::int AS n FROM message_store.messages WHERE message_store.category(stream_name) = $1",
    [category],
  );
  if (rows[0].n === totalEvents) return;
  if (rows[0].n !== 0) throw new Error(`category ${category} holds ${rows[0].n} events`);
  const t0 = performance.now();
  await pool.query(
    `INSERT INTO message_store.messages (id, stream_name, position, type, data, metadata, time)
     SELECT gen_random_uuid(), $1 || '-' || (k % $2), k / $2, 'Happened',
            jsonb_build_object('k', k, 'payload', repeat('x', 100)),
            jsonb_build_object('correlationId', 'c' || k),
            (now() AT TIME ZONE 'UTC') - ($3 - k) * interval '1 millisecond'
       FROM generate_series(0, $3 - 1) AS k ORDER BY k`,
    [category, streams, totalEvents],
  );
  await pool.query("ANALYZE message_store.messages");
  console.log(`seeded ${fmt(totalEvents)} events in ${fmt(performance.now() - t0)} ms`);
}

async function catchUp(category: string): Promise<number> {
  let handled = 0;
  const controller = new AbortController();
  const sink = streamsSink({
    handler: (_s, events) => void (handled += events.length),
    maxConcurrentStreams: 64,
    statsIntervalMs: 0,
  });
  const t0 = performance.now();
  const done = run(
    messageDbSource({
      client: pool,
      categories: [category],
      group: "bench",
      checkpoints: memoryCheckpoints(),
      signal: controller.signal,
    }),
    sink,
    { signal: controller.signal },
  );
  await sink.monitor.awaitCompletion({ tail: true });
  const ms = performance.now() - t0;
  controller.abort();
  await done;
  if (handled !== totalEvents) throw new Error(`catch-up handled ${handled}`);
  return ms;
}

async function replay(category: string, limit?: number): Promise<{ wallMs: number; ms: number }> {
  let handled = 0;
  const t0 = performance.now();
  const r = replayMessageDb({
    client: pool,
    categories: [category],
    from: { position: 0n },
    rate: limit,
    handler: (_s, events) => void (handled += events.length),
    maxConcurrentStreams: 64,
    statsIntervalMs: 0,
  });
  const result = await r.done;
  const wallMs = performance.now() - t0;
  if (result.done !== totalEvents || handled !== totalEvents) {
    throw new Error(`replay handled ${handled}`);
  }
  return { wallMs, ms: r.progress().elapsedMs };
}

const category = `BenchReplay${totalEvents}x${streams}`;
await seed(category);
console.log(`load at start: ${await uptime()}`);
await catchUp(category); // warm the cache and the JIT
const cu: number[] = [], rp: number[] = [], rpWall: number[] = [];
for (let i = 0; i < rounds; i++) {
  cu.push(await catchUp(category));
  const r = await replay(category);
  rp.push(r.ms);
  rpWall.push(r.wallMs);
  console.log(
    `round ${i + 1}: catch-up ${fmt(totalEvents / (cu[i] / 1000))}/s, replay ${
      fmt(totalEvents / (r.ms / 1000))
    }/s (wall ${fmt(totalEvents / (r.wallMs / 1000))}/s), load ${await uptime()}`,
  );
}
const per = (ms: number) => totalEvents / (ms / 1000);
console.log(
  `medians: catch-up ${fmt(per(median(cu)))}/s, replay ${fmt(per(median(rp)))}/s (${
    (median(cu) / median(rp)).toFixed(2)
  }×), replay wall ${fmt(per(median(rpWall)))}/s (${(median(cu) / median(rpWall)).toFixed(2)}×)`,
);

const throttled = await replay(category, rate);
const measured = per(throttled.ms);
console.log(
  `throttled at ${fmt(rate)}/s: ${fmt(measured)}/s (${((measured / rate - 1) * 100).toFixed(1)}%)`,
);

// The start from a time, at the middle and near the end of the seeded range (run on a database
// holding only this category, so that times follow positions and both answers must agree). The
// scan is PostgreSQL's own best: min(global_position) walks the primary key until a row matches.
for (const at of [0.5, 0.95]) {
  const { rows } = await pool.query(
    `SELECT time FROM message_store.messages WHERE message_store.category(stream_name) = $1
      ORDER BY global_position OFFSET $2 LIMIT 1`,
    [category, Math.floor(totalEvents * at)],
  );
  const time = new Date(rows[0].time + "Z");
  const searches: number[] = [], scans: number[] = [];
  let lookups = 0, found = 0n, scanned = 0n;
  for (let i = 0; i < 5; i++) {
    let t0 = performance.now();
    const f = await positionAtTime(pool, time);
    searches.push(performance.now() - t0);
    lookups = f.lookups;
    found = f.position;
    t0 = performance.now();
    const s = await pool.query(
      `SELECT min(global_position)::text AS p FROM message_store.messages
        WHERE time >= ($1::timestamptz AT TIME ZONE 'UTC')`,
      [time.toISOString()],
    );
    scans.push(performance.now() - t0);
    scanned = BigInt(s.rows[0].p);
  }
  const { rows: size } = await pool.query("SELECT count(*)::int AS n FROM message_store.messages");
  console.log(
    `positionAtTime at ${at * 100}% of ${fmt(size[0].n)} rows: ${median(searches).toFixed(1)} ms ` +
      `(${lookups} lookups) vs min(global_position) WHERE time >= … ${
        median(scans).toFixed(1)
      } ms; same position: ${found === scanned}`,
  );
}
console.log(`load at end: ${await uptime()}`);
await pool.end();
