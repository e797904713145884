// PostgreSQL queues under a crash loop (issue 17): 10,000 messages (1% poison: their handler
// always throws), 4 real consumer processes (tests/queues/support/worker.ts: concurrency 8,
// visibility 2 s extended while a handler runs, maxDeliveries 5), one of them SIGKILLed a random
// 0.7–2 s after it is ready and restarted, again and again until the queue is drained. From the
// workers' logs (each handler call's start and end, each ack and its outcome) and the tables:
//
//   - every message is acked exactly once, or is in the dead letters after maxDeliveries
//     deliveries with its last error (every poison message is; a good one only if it was killed
//     mid-handler on every one of its deliveries);
//   - never two holders at once: per message, each delivery's hold (its start to the return of its
//     ack or nack, or to the kill of its process) ends before the next delivery starts;
//   - no message is delivered more than maxDeliveries times.
//
//   deno task faults tests/faults/queues.fault.ts            # about a minute
//   IMPEL_FAULTS_SEED=123 ...                                 # repeat the kill delays
//
// Only PostgreSQL is needed: against a running server, `deno test -A tests/faults/queues.fault.ts`.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresQueues, postgresQueues } from "../../queues/postgres.ts";
import { unique, url } from "../support/postgres.ts";
import { type Child, seededRandom, spawnScript } from "./support/process.ts";

const MESSAGES = 10_000;
const POISON_EVERY = 100;
const WORKERS = 4;
const MAX_DELIVERIES = 5;
const SEED = Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now() % 1_000_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const wallNow = () => performance.timeOrigin + performance.now();

interface Hold {
  readonly worker: string;
  readonly delivery: number;
  readonly start: number;
  end: number | undefined;
  ack: boolean | undefined;
  /** When its ack or nack returned. */
  settledAt: number | undefined;
}

Deno.test({
  name: `faults: queues, ${MESSAGES} messages, ${WORKERS} consumers, one SIGKILLed repeatedly`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const pool = new pg.Pool({ connectionString: url, max: 4 });
    pool.on("error", () => {});
    const schema = unique("qfault_");
    const dir = await Deno.makeTempDir({ prefix: "impel-queue-fault-" });
    const random = seededRandom(SEED);
    await initPostgresQueues(pool, { schema });
    const store = postgresQueues(pool, { schema, maxDeliveries: MAX_DELIVERIES });
    const ids: string[] = [];
    const poison = new Set<string>();
    for (let i = 0; i < MESSAGES; i += 1_000) {
      const bodies = Array.from({ length: 1_000 }, (_, k) => ({
        n: i + k,
        poison: (i + k) % POISON_EVERY === 7,
      }));
      const got = await store.enqueue("work", bodies);
      got.forEach((id, k) => {
        ids.push(id);
        if (bodies[k].poison) poison.add(id);
      });
    }

    const killedAt = new Map<string, number>(); // log name -> when its process was killed
    let runs = 0;
    const spawn = (name: string): Child =>
      spawnScript("tests/queues/support/worker.ts", {
        env: {
          IMPEL_PG_URL: url,
          QUEUE_SCHEMA: schema,
          QUEUE_NAME: "work",
          LOG: `${dir}/${name}.log`,
          CONCURRENCY: "8",
          VISIBILITY_MS: "2000",
          MAX_DELIVERIES: String(MAX_DELIVERIES),
          HANDLER_MS: "30",
        },
        stderrPath: `${dir}/${name}.err`,
      });
    const steady = Array.from({ length: WORKERS - 1 }, (_, k) => spawn(`steady${k}`));
    const started = performance.now();
    const remaining = async () => {
      const s = await store.stats("work");
      return s.ready + s.inFlight + s.delayed;
    };
    try {
      // The victim: killed a while after it reports ready, restarted, until the queue drains.
      while (await remaining() > 0) {
        if (performance.now() - started > 240_000) throw new Error("the queue did not drain");
        const name = `victim${runs++}`;
        const victim = spawn(name);
        const log = `${dir}/${name}.log`;
        const readyBy = performance.now() + 20_000;
        while (!(await Deno.readTextFile(log).catch(() => "")).startsWith("ready")) {
          if (performance.now() > readyBy) throw new Error(`${name} never became ready`);
          await sleep(20);
        }
        await sleep(700 + random() * 1_300);
        victim.kill("SIGKILL");
        await victim.status;
        killedAt.set(name, wallNow());
      }
      for (const w of steady) w.kill("SIGTERM");
      // A stopped consumer lets its handlers finish and exits by itself, within seconds.
      const stopBy = sleep(20_000).then(() => "late");
      const endings = await Promise.all(steady.map((w) => Promise.race([w.status, stopBy])));
      assert.ok(endings.every((e) => e !== "late"), "the steady consumers stop on SIGTERM");
    } finally {
      for (const w of steady) w.kill("SIGKILL");
    }

    // Per message, its holds in start order.
    const holds = new Map<string, Hold[]>();
    const open = new Map<string, Hold>(); // worker/id -> the hold its last start opened
    const problems: string[] = [];
    for (const entry of Deno.readDirSync(dir)) {
      if (!entry.name.endsWith(".log")) continue;
      const worker = entry.name.slice(0, -4);
      for (const line of Deno.readTextFileSync(`${dir}/${entry.name}`).split("\n")) {
        const [kind, id, a, b] = line.split(" ");
        if (kind === "start") {
          const hold: Hold = {
            worker,
            delivery: Number(a),
            start: Number(b),
            end: undefined,
            ack: undefined,
            settledAt: undefined,
          };
          (holds.get(id) ?? holds.set(id, []).get(id)!).push(hold);
          open.set(`${worker}/${id}`, hold);
        } else if (kind === "end") {
          const hold = open.get(`${worker}/${id}`);
          if (hold === undefined) problems.push(`${worker}: end of ${id} without a start`);
          else hold.end = Number(a);
        } else if (kind === "ack" || kind === "nack") {
          const hold = open.get(`${worker}/${id}`);
          if (hold === undefined) problems.push(`${worker}: ${kind} of ${id} without a start`);
          else {
            hold.settledAt = Number(a);
            if (kind === "ack") hold.ack = b === "true";
          }
        }
      }
    }

    const dead = new Map(
      (await pool.query(
        `SELECT id::text, deliveries, last_error FROM "${schema}".queue_dead_letters`,
      )).rows.map((r) => [r.id as string, r as { deliveries: number; last_error: string }]),
    );
    const left = Number(
      (await pool.query(`SELECT count(*) AS n FROM "${schema}".queue_messages`)).rows[0].n,
    );
    let overlaps = 0, ackedTwice = 0, unacked = 0, ackedUnlogged = 0, tooMany = 0;
    let deadGood = 0, redelivered = 0;
    for (const id of ids) {
      const hs = (holds.get(id) ?? []).sort((x, y) => x.start - y.start);
      if (hs.length > 1) redelivered++;
      if (hs.some((h) => h.delivery > MAX_DELIVERIES)) tooMany++;
      // Deliveries count up across holds; one may be missing from the logs (taken by a process
      // killed before its handler started).
      hs.forEach((h, k) => {
        if (k > 0 && h.delivery <= hs[k - 1].delivery) {
          problems.push(`${id}: delivery ${h.delivery} after delivery ${hs[k - 1].delivery}`);
        }
      });
      // A hold ends when its ack or nack returned, else at its process's kill (else never).
      const holdEnd = (h: Hold) => h.settledAt ?? killedAt.get(h.worker) ?? Infinity;
      for (let k = 1; k < hs.length; k++) {
        if (hs[k].start < holdEnd(hs[k - 1])) {
          overlaps++;
          problems.push(
            `${id}: delivery ${k + 1} began while ${JSON.stringify(hs[k - 1])} held it`,
          );
        }
      }
      const acks = hs.filter((h) => h.ack === true).length;
      if (acks > 1) ackedTwice++;
      const d = dead.get(id);
      if (d !== undefined) {
        if (acks > 0) problems.push(`${id}: acked and dead-lettered`);
        if (d.deliveries !== MAX_DELIVERIES) problems.push(`${id}: dead after ${d.deliveries}`);
        if (poison.has(id)) {
          if (!/poison message|visibility timeout expired/.test(d.last_error)) {
            problems.push(`${id}: dead letter's error ${d.last_error}`);
          }
        } else deadGood++;
      } else if (poison.has(id)) {
        problems.push(`poison ${id} is not in the dead letters`);
      } else if (acks === 0) {
        // Gone from the table without a logged ack: the ack committed and its process was
        // killed before it could write the line. Anything else is a lost message.
        const last = hs.at(-1);
        if (last !== undefined && killedAt.has(last.worker) && last.end !== undefined) {
          ackedUnlogged++;
        } else unacked++;
      }
    }
    const figures = {
      seed: SEED,
      victims: runs,
      seconds: Math.round((performance.now() - started) / 1000),
      redelivered,
      deadLettered: dead.size,
      deadGood,
      ackedUnlogged,
      overlaps,
      ackedTwice,
      unacked,
      tooMany,
      left,
      problems: problems.length,
    };
    console.log(`queues under kills: ${JSON.stringify(figures)}`);
    for (const p of problems.slice(0, 10)) console.log(`  ${p}`);
    if (problems.length > 0) {
      console.log(`  logs kept in ${dir}; kills: ${JSON.stringify([...killedAt])}`);
    }
    await store.close();
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
    assert.equal(left, 0, "the queue drained");
    assert.equal(overlaps, 0, "never two holders at once");
    assert.equal(ackedTwice, 0, "never acked twice");
    assert.equal(unacked, 0, "no message lost");
    assert.equal(tooMany, 0, "never more than maxDeliveries deliveries");
    assert.deepEqual(problems, []);
    assert.ok(runs >= 3, `the victim was killed repeatedly (${runs} times)`);
    assert.ok(redelivered > 0, "kills mid-handler caused redeliveries (the test bit)");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  },
});
