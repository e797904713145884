// MessageDB crash loop (issue 11, section 2): a real reactor process (tests/faults/messagedb/
// reactor.ts: messageDbSource over pg.Pool, Postgres checkpoints, streamsSink, 50 ms per event,
// default page size) is SIGKILLed after a random 1–3 s from its spawn, KILLS times, over its own
// category of the real MessageDB at IMPEL_PG_URL, while this process keeps appending through
// write_message; then one last run goes to the tail and stops cleanly. From the per-run logs and
// the category's rows it counts: runs in which the checkpoint advanced, events handled against
// events written, events never handled (lost), calls out of index order within a run (reordered),
// calls on a stream that was already being handled (overlaps).
//
//   deno task faults tests/faults/messagedb.fault.ts              # 50 kills, 2–3 minutes
//   IMPEL_FAULTS_SHORT=1 deno task faults tests/faults/messagedb.fault.ts   # 10 kills, ~35 s
//   IMPEL_FAULTS_SEED=123 ...                                     # repeat a run's kill delays
//
// Only PostgreSQL is needed: against servers that are already running, use
// `deno test -A tests/faults/messagedb.fault.ts` (the task also starts and stops the others).
// The figures are printed and kept in the log directory (figures.json) when the bars fail.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { messageDbCheckpointKey } from "../../sources/messagedb.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { seed, unique, url } from "../support/postgres.ts";
import { analyse, type RunLog } from "./messagedb/analyse.ts";
import { exitWithin, killAfter, seededRandom, spawnScript } from "./support/process.ts";

const SHORT = Deno.env.get("IMPEL_FAULTS_SHORT") === "1";
const KILLS = SHORT ? 10 : 50;
// Enough that the kills end before the backlog does: a run handles about 500 events (16
// streams at once, 50 ms each), of which about 300 last. handledInFinalRun shows what was left.
const STREAMS = SHORT ? 200 : 500;
const PER_STREAM = SHORT ? 25 : 40;
const SEED = Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now() % 1_000_000);

Deno.test(`faults: MessageDB reactor SIGKILLed ${KILLS} times`, async () => {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  pool.on("error", () => {});
  const category = unique("FaultMdb", 10);
  const group = "crashloop";
  const schema = unique("faults_mdb_", 10);
  const dir = await Deno.makeTempDir({ prefix: "impel-faults-mdb-" });
  // The writer draws from its own generator, so that a seed repeats the kill delays exactly.
  const random = seededRandom(SEED), writes = seededRandom(SEED + 1);
  console.log(`seed ${SEED}, category ${category}, logs in ${dir}`);
  try {
    await initPostgresCheckpoints(pool, { schema });
    const checkpoints = postgresCheckpoints(pool, { schema });
    const key = messageDbCheckpointKey(category, { group });
    await seed(pool, category, STREAMS, PER_STREAM);
    const head = async () =>
      BigInt(
        (await pool.query(
          `SELECT (coalesce(max(global_position), 0) + 1)::text AS head FROM message_store.messages
            WHERE message_store.category(stream_name) = $1`,
          [category],
        )).rows[0].head,
      );

    // Appends go on during the kills: a few events every 100–300 ms, to existing and new streams.
    const store = messageDbStore(pool);
    let writing = true;
    const writer = (async () => {
      for (let n = 0; writing && n < 10_000; n++) {
        const s = Math.floor(writes() * (STREAMS + 50));
        const events = Array.from({ length: 1 + Math.floor(writes() * 3) }, (_, i) => ({
          type: "Late",
          data: { n, i },
        }));
        await store.append(`${category}-${s}`, events, "any");
        await new Promise((r) => setTimeout(r, 100 + writes() * 200));
      }
    })();

    const env = {
      IMPEL_PG_URL: url,
      FAULT_CATEGORY: category,
      FAULT_GROUP: group,
      FAULT_SCHEMA: schema,
    };
    const runs: RunLog[] = [];
    const spawnRun = (final: boolean) => {
      const path = `${dir}/run-${String(runs.length).padStart(3, "0")}`;
      return {
        path,
        child: spawnScript("tests/faults/messagedb/reactor.ts", {
          env: { ...env, FAULT_LOG: `${path}.log`, FAULT_FINAL: final ? "1" : "0" },
          stderrPath: `${path}.err`,
        }),
      };
    };
    try {
      for (let i = 0; i < KILLS; i++) {
        const before = await checkpoints.load(key) ?? 0n;
        const headAtStart = await head();
        const { path, child } = spawnRun(false);
        const ending = await killAfter(child, 1000 + random() * 2000);
        if (!ending.killed) {
          throw new Error(
            `run ${i} exited on its own (${JSON.stringify(ending.status)}): ${await Deno
              .readTextFile(`${path}.err`)}`,
          );
        }
        const after = await checkpoints.load(key) ?? 0n;
        runs.push({
          log: await Deno.readTextFile(`${path}.log`).catch(() => ""),
          pid: child.pid,
          spawnedAt: performance.timeOrigin + child.startedAt,
          livedMs: ending.livedMs,
          before,
          after,
          headAtStart,
        });
      }
    } finally {
      writing = false;
      await writer;
    }

    const before = await checkpoints.load(key) ?? 0n;
    const headAtStart = await head();
    const { path, child } = spawnRun(true);
    const status = await exitWithin(child, SHORT ? 120_000 : 300_000, "the final run");
    const err = await Deno.readTextFile(`${path}.err`);
    assert.equal(status.code, 0, `final run failed: ${err}`);
    const finalCheckpoint = await checkpoints.load(key);
    runs.push({
      log: await Deno.readTextFile(`${path}.log`),
      pid: child.pid,
      spawnedAt: performance.timeOrigin + child.startedAt,
      livedMs: performance.now() - child.startedAt,
      before,
      after: finalCheckpoint ?? 0n,
      headAtStart,
    });

    const { rows } = await pool.query(
      `SELECT stream_name AS stream, count(*)::int AS n FROM message_store.messages
        WHERE message_store.category(stream_name) = $1 GROUP BY stream_name`,
      [category],
    );
    const written = new Map<string, number>(rows.map((r) => [r.stream as string, r.n as number]));
    const figures = analyse(runs, written);
    console.log(JSON.stringify(figures, null, 2));
    await Deno.writeTextFile(`${dir}/figures.json`, JSON.stringify(figures, null, 2));

    assert.equal(finalCheckpoint, await head(), "the final run committed the category's head");
    assert.equal(figures.lost, 0, "every event handled at least once");
    assert.equal(figures.unknown, 0, "no event handled that was never written");
    assert.equal(figures.reordered, 0, "per stream and run, calls in index order");
    assert.equal(figures.skippedInRun, 0, "per stream and run, no index jumped over");
    assert.equal(figures.overlaps, 0, "no stream handled twice at once");
    assert.equal(figures.foreignLines, 0, "every log line from its run's process");
    assert.ok(
      figures.killedRunsAdvanced * 2 > figures.killedRunsWithWork,
      `the checkpoint advanced in most killed runs with work to do (${figures.killedRunsAdvanced} of ${figures.killedRunsWithWork})`,
    );
    assert.ok(
      figures.handledPerEvent <= 2,
      `handled at most 2x the events (${figures.handledPerEvent.toFixed(2)}x)`,
    );
    await Deno.remove(dir, { recursive: true });
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.query(
      "DELETE FROM message_store.messages WHERE message_store.category(stream_name) = $1",
      [category],
    );
    await pool.end();
  }
});
