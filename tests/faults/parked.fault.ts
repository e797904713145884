// Parked streams under a crash loop: a real reactor process (tests/parked/support/reactor.ts:
// MessageDB source, PostgreSQL checkpoints and park store, park after 3 attempts) is SIGKILLed
// after a random 0.8–3 s from its spawn, RUNS times, while this process keeps appending to 30
// streams of its own category, about 4% of the events poison. Every third run has the fix
// deployed (the handler takes poison events), and during half of the runs every parked stream is
// asked to be released at a random moment, so that kills land while streams park, while
// requests are claimed and while releases replay. A last, fixed run releases whatever is still
// parked and goes to the tail. From the per-run logs it counts: events never handled (lost),
// calls that went backwards within a run (reordered), events first handled before an earlier
// event of their stream (out of order: a parked stream's later events handled before it),
// calls of a stream that overlapped, and events handled more than once (redone).
//
//   deno task faults tests/faults/parked.fault.ts                 # 30 runs, about 2 minutes
//   IMPEL_FAULTS_SHORT=1 deno task faults tests/faults/parked.fault.ts   # 8 runs, ~40 s
//   IMPEL_FAULTS_SEED=123 ...                                     # repeat a run's delays
//
// Only PostgreSQL is needed: against a running server, `deno test -A tests/faults/parked.fault.ts`.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { initPostgresParkStore, postgresParkStore } from "../../parked/postgres.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { unique, url } from "../support/postgres.ts";
import { callsOf, missing, outOfOrder, overlapsOf, reorderedOf } from "../parked/support/logs.ts";
import { exitWithin, killAfter, seededRandom, spawnScript } from "./support/process.ts";

const SHORT = Deno.env.get("IMPEL_FAULTS_SHORT") === "1";
const RUNS = SHORT ? 8 : 30;
const STREAMS = 30;
const POISON = 0.04;
const SEED = Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now() % 1_000_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test(`faults: parked streams, reactor SIGKILLed ${RUNS} times`, async () => {
  const pool = new pg.Pool({ connectionString: url, max: 6 });
  pool.on("error", () => {});
  const category = unique("FaultPark", 10);
  const group = "parkloop";
  const schema = unique("faults_park_", 10);
  const dir = await Deno.makeTempDir({ prefix: "impel-faults-park-" });
  const random = seededRandom(SEED), writes = seededRandom(SEED + 1);
  console.log(`seed ${SEED}, category ${category}, logs in ${dir}`);
  await initPostgresCheckpoints(pool, { schema });
  await initPostgresParkStore(pool, { schema });
  const parked = postgresParkStore(pool, { schema });
  const checkpoints = postgresCheckpoints(pool, { schema });
  const store = messageDbStore(pool);
  const streams = Array.from({ length: STREAMS }, (_, i) => `${category}-${i}`);
  const written = new Map<string, number>();
  let poisoned = 0;
  const logs: string[] = [];
  let requests = 0;
  const releaseAll = async () => {
    for (const e of await parked.list(group)) {
      await parked.request(group, e.stream, { action: "release", by: "suite" }).catch(() => {});
      requests++;
    }
  };
  const head = async () =>
    BigInt(
      (await pool.query(
        `SELECT (coalesce(max(global_position), 0) + 1)::text AS head FROM message_store.messages
          WHERE message_store.category(stream_name) = $1`,
        [category],
      )).rows[0].head,
    );
  const spawn = (k: number, fixed: boolean) =>
    spawnScript("tests/parked/support/reactor.ts", {
      env: {
        IMPEL_PG_URL: url,
        PARK_CATEGORY: category,
        PARK_GROUP: group,
        PARK_SCHEMA: schema,
        PARK_LOG: `${dir}/run${k}.log`,
        ...(fixed ? { PARK_FIXED: "1" } : {}),
      },
      stderrPath: `${dir}/run${k}.err`,
    });
  const readLog = (k: number) => Deno.readTextFile(`${dir}/run${k}.log`).catch(() => "");

  let writing = true;
  const writer = (async () => {
    while (writing) {
      const stream = streams[Math.floor(writes() * STREAMS)];
      const from = written.get(stream) ?? 0;
      const n = 1 + Math.floor(writes() * 3);
      const events = Array.from({ length: n }, (_, k) => {
        const poison = writes() < POISON;
        if (poison) poisoned++;
        return { type: "Happened", data: { i: from + k, ...(poison ? { poison: true } : {}) } };
      });
      await store.append(stream, events, from);
      written.set(stream, from + n);
      await sleep(15 + writes() * 30);
    }
  })();

  try {
    for (let k = 1; k <= RUNS; k++) {
      const child = spawn(k, k % 3 === 0);
      const lifeMs = 800 + random() * 2200;
      const ask = random() < 0.5 ? random() * lifeMs : undefined;
      const asking = ask === undefined ? Promise.resolve() : sleep(ask).then(releaseAll);
      await killAfter(child, lifeMs);
      await asking;
      logs.push(await readLog(k));
    }
    writing = false;
    await writer;

    // The last run: fixed, everything released, to the tail.
    const final = RUNS + 1;
    const child = spawn(final, true);
    const deadline = Date.now() + 120_000;
    for (;;) {
      await releaseAll();
      const calls = [...logs, await readLog(final)].flatMap(callsOf);
      const active = (await parked.list(group)).length;
      const committed = await checkpoints.load({ source: "messagedb", tranche: category, group });
      if (active === 0 && missing(calls, written) === 0 && committed === await head()) break;
      if (Date.now() > deadline) {
        const gaps = [...written].flatMap(([stream, n]) => {
          const done = new Set(
            calls.flatMap((c) =>
              c.stream === stream && c.next !== undefined
                ? Array.from({ length: c.next - c.from }, (_, i) => c.from + i)
                : []
            ),
          );
          const lost = Array.from({ length: n }, (_, i) => i).filter((i) => !done.has(i));
          return lost.length ? [`${stream}: ${lost.join(",")}`] : [];
        });
        throw new Error(
          `the final run did not finish (logs in ${dir}): parked ${
            JSON.stringify(await parked.list(group))
          }; committed ${committed} of ${await head()}; never handled: ${gaps.join("; ")}`,
        );
      }
      await sleep(200);
    }
    child.kill("SIGTERM");
    await exitWithin(child, 15_000, "the final run's clean stop");
    logs.push(await readLog(final));

    const calls = logs.flatMap(callsOf);
    const history = await parked.list(group, { resolved: true });
    const total = [...written.values()].reduce((a, b) => a + b, 0);
    const handledEvents = calls.reduce(
      (n, c) => n + (c.next === undefined ? 0 : c.next - c.from),
      0,
    );
    const figures = {
      seed: SEED,
      runs: RUNS + 1,
      events: total,
      poisonEvents: poisoned,
      episodes: history.filter((e) => e.state !== "failed").length,
      released: history.filter((e) => e.state === "released").length,
      failedReleases: history.filter((e) => e.state === "failed").length,
      releaseRequests: requests,
      failedAttempts: calls.filter((c) => c.failed).length,
      lost: missing(calls, written),
      reorderedInRun: logs.reduce((n, log) => n + reorderedOf(callsOf(log)), 0),
      outOfOrder: outOfOrder(calls),
      overlaps: logs.reduce((n, log) => n + overlapsOf(log), 0),
      redone: handledEvents - total,
      handledPerEvent: Number((handledEvents / total).toFixed(2)),
      parkedAtEnd: (await parked.list(group)).length,
    };
    console.log(JSON.stringify(figures, null, 2));
    await Deno.writeTextFile(`${dir}/figures.json`, JSON.stringify(figures, null, 2));
    assert.ok(figures.episodes > 0, "some streams parked");
    assert.ok(figures.released > 0, "some releases were applied");
    assert.equal(figures.lost, 0, "events never handled");
    assert.equal(figures.reorderedInRun, 0, "calls backwards within a run");
    assert.equal(figures.outOfOrder, 0, "events first handled before an earlier one");
    assert.equal(figures.overlaps, 0, "overlapping calls of a stream");
    assert.equal(figures.parkedAtEnd, 0);
    await Deno.remove(dir, { recursive: true });
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.query(
      `DELETE FROM message_store.messages WHERE message_store.category(stream_name) = $1`,
      [category],
    );
  } finally {
    // On failure the schema, the category and the logs stay, for a post-mortem.
    writing = false;
    await writer.catch(() => {});
    await pool.end();
  }
});
