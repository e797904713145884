/**
 * What each member of a group keeps in memory per parked stream of the group: every sink loads
 * the group's parked streams at start (they are not subject to `maxIdleStreams`), so this is a
 * cost per member that grows with the group's parked streams, not with the member's own work.
 *
 * A PostgreSQL park store (IMPEL_PG_URL, a schema of its own) is filled with `--streams` parked
 * streams by SQL (names `Payment-` and a UUID, 44 characters; one event each; an error text of
 * `--error` characters; 16 tranche names); a sink with the park policy over it and an empty
 * source starts, loads them, and the heap is measured after a full GC, against the heap before
 * the sink started. Runs under Deno and Bun:
 *
 *   deno run -A --v8-flags=--expose-gc bench/parked_state.ts [--streams 100000] [--error 60]
 *   bun run bench/parked_state.ts [--streams 100000] [--error 60]
 */
// @ts-types="@types/pg"
import pg from "pg";
import process from "node:process";
import { run, streamsSink } from "../mod.ts";
import { initPostgresParkStore, postgresParkStore } from "../parked/postgres.ts";
import { createMemoryStore, memorySource } from "../sources/memory.ts";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) =>
  args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback;
const STREAMS = arg("--streams", 100_000);
const ERROR = arg("--error", 60);
const url = process.env.IMPEL_PG_URL ?? "postgres://postgres@127.0.0.1:5432/impel_test";

const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
async function heap(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    if (g.Bun) g.Bun.gc(true);
    else if (g.gc) g.gc();
    else throw new Error("run Deno with --v8-flags=--expose-gc");
    await new Promise((r) => setTimeout(r, 50));
  }
  return process.memoryUsage().heapUsed;
}

const pool = new pg.Pool({ connectionString: url, max: 4 });
const schema = `bench_state_${crypto.randomUUID().slice(0, 8)}`;
try {
  await initPostgresParkStore(pool, { schema });
  const error = "Error: " + "x".repeat(Math.max(0, ERROR - 7));
  await pool.query(
    `INSERT INTO "${schema}".parked (consumer_group, stream, episode, idx, state, first_index,
       next_index, event_count, error, attempts, first_failed_at, last_failed_at, parked_at,
       tranche)
     SELECT 'bench', 'Payment-' || gen_random_uuid(), 1, -1, 'parked', 0, 1, 1, $1, 3, now(),
            now(), now(), 't' || (i % 16)
       FROM generate_series(1, $2::int) i`,
    [error, STREAMS],
  );
  const store = postgresParkStore(pool, { schema });
  const before = await heap();
  const sink = streamsSink({
    group: "bench",
    handler: () => {},
    statsIntervalMs: 0,
    // No polls while measuring: a poll's read of every parked stream (each 10th) is transient.
    failure: { kind: "park", maxAttempts: 3, store, pollMs: 60_000 },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: createMemoryStore(), group: "bench" }), sink, {
    signal: ac.signal,
  });
  const t0 = performance.now();
  while (sink.stats().parked.streams < STREAMS) await new Promise((r) => setTimeout(r, 20));
  const loadMs = performance.now() - t0;
  const after = await heap();
  ac.abort();
  await running;
  const perStream = (after - before) / STREAMS;
  const runtime = g.Bun ? `Bun ${process.versions.bun}` : `Deno ${process.versions.deno}`;
  console.log(JSON.stringify({
    runtime,
    streams: STREAMS,
    errorChars: ERROR,
    heapBeforeMB: +(before / 1e6).toFixed(1),
    heapAfterMB: +(after / 1e6).toFixed(1),
    bytesPerStream: Math.round(perStream),
    loadSeconds: +(loadMs / 1000).toFixed(2),
  }));
} finally {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
}
