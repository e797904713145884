// Workflow crash loop (issue 18): the fulfilment saga's runner and the simulated payment gateway
// run in one real process (tests/faults/workflow/runner.ts, over the real MessageDB at
// IMPEL_PG_URL) that is SIGKILLed after a random 1–3 s from its spawn, KILLS times, while this
// process places ORDERS orders through a workflow client in the first seconds, so that they are
// in flight together through the kills. Then one last run goes on until every order has ended and
// stops cleanly on SIGTERM. The payment deadline is the sample's 15 minutes on a clock SPEED
// times faster than real time (45 s), so deadlines set by one process fire in a later one.
//
// From every stream the orders touched and the runs' logs it checks that every order ended
// completed or compensated, as the gateway's answer, the address and the stock allow; that no
// saga record, delivery mark or timer firing is kept twice and no service effect (reservation,
// release, payment events, shipment) is applied twice; that every send was delivered; that the
// stock adds up; that the ignored orders' deadlines fired once, some of them in another process
// than the one that set them; and that kills did land between sends and their records (sends
// handled more than once).
//
//   deno task faults tests/faults/workflow.fault.ts              # 35 kills, 500 orders, ~2 min
//   IMPEL_FAULTS_SHORT=1 deno task faults tests/faults/workflow.fault.ts   # 10 kills, 150 orders
//   IMPEL_FAULTS_SEED=123 ...                                     # repeat a run's kill delays
//
// Only PostgreSQL is needed: against a server that is already running, use
// `deno test -A tests/faults/workflow.fault.ts`. The figures are printed and kept in the log
// directory (figures.json) when the bars fail.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import type { StreamEvent } from "../../core/event.ts";
import { type Clock, sagaEnded, workflowClient } from "../../core/workflow.ts";
import {
  FULFILMENT,
  fulfilment,
  fulfilmentServices,
} from "../../examples/fulfilment/fulfilment.ts";
import { PAYMENT } from "../../examples/fulfilment/payment.ts";
import { messageDbCheckpointKey } from "../../sources/messagedb.ts";
import { messageDbStore, toBigInt } from "../../stores/messagedb.ts";
import { unique, url } from "../support/postgres.ts";
import { analyse } from "./workflow/analyse.ts";
import { answerFor, orderOf, SKUS, stockOf } from "./workflow/orders.ts";
import { exitWithin, killAfter, seededRandom, spawnScript } from "./support/process.ts";

const SHORT = Deno.env.get("IMPEL_FAULTS_SHORT") === "1";
const KILLS = SHORT ? 10 : 35;
const ORDERS = SHORT ? 150 : 500;
const SPEED = 20;
const SEED = Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now() % 1_000_000);

Deno.test({
  name: `faults: ${ORDERS} fulfilment workflows, runner SIGKILLed ${KILLS} times`,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pool = new pg.Pool({
      connectionString: url,
      max: 8,
      options: "-c search_path=message_store,public",
    });
    pool.on("error", () => {});
    const run = unique("", 10);
    const group = `wf${run}`;
    const schema = unique("faults_wf_", 10);
    const timers = `FulfilmentTimers${run}`;
    const dir = await Deno.makeTempDir({ prefix: "impel-faults-wf-" });
    const random = seededRandom(SEED);
    const epoch = Date.now();
    const clock: Clock = {
      now: () => epoch + (Date.now() - epoch) * SPEED,
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms / SPEED)),
    };
    console.log(`seed ${SEED}, run ${run}, logs in ${dir}`);
    try {
      await initPostgresCheckpoints(pool, { schema });
      const checkpoints = postgresCheckpoints(pool, { schema });
      // The runs start at the categories' current heads: earlier runs' events are not theirs.
      const head = async (category: string) =>
        toBigInt(
          (await pool.query(
            `SELECT (coalesce(max(global_position), 0) + 1)::text AS head
               FROM message_store.messages WHERE message_store.category(stream_name) = $1`,
            [category],
          )).rows[0].head,
        );
      for (
        const [name, categories] of [["runner", [FULFILMENT, PAYMENT]], ["gateway", [
          PAYMENT,
        ]]] as const
      ) {
        for (const category of categories) {
          const key = messageDbCheckpointKey(category, { group: `${group}-${name}` });
          await checkpoints.commit(key, await head(category));
        }
      }
      const store = messageDbStore(pool);
      const services = fulfilmentServices(store);
      const restocked = new Map<string, number>();
      for (let k = 0; k < SKUS; k++) {
        await services.stock.restock(`${run}s${k}`, stockOf(k));
        restocked.set(`${run}s${k}`, stockOf(k));
      }
      const client = workflowClient(fulfilment, { store, clock });
      const orders = Array.from({ length: ORDERS }, (_, n) => orderOf(run, n));

      const env = {
        IMPEL_PG_URL: url,
        FAULT_GROUP: group,
        FAULT_SCHEMA: schema,
        FAULT_TIMERS: timers,
        FAULT_EPOCH: String(epoch),
        FAULT_SPEED: String(SPEED),
      };
      const runs: { path: string; killed: boolean }[] = [];
      const spawnRun = (final: boolean) => {
        const path = `${dir}/run-${String(runs.length).padStart(3, "0")}`;
        const child = spawnScript("tests/faults/workflow/runner.ts", {
          env: { ...env, FAULT_LOG: `${path}.log`, FAULT_FINAL: final ? "1" : "0" },
          stderrPath: `${path}.err`,
        });
        return { path, child };
      };

      // All orders are placed in the first seconds, so that they are in flight together.
      const placing = (async () => {
        for (const order of orders) {
          await client.handle(order.orderId, { type: "Start", data: order }, {
            id: `place-${order.orderId}`,
            correlationId: `req-${order.orderId}`,
          });
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })();
      let inFlight = 0;
      try {
        for (let i = 0; i < KILLS; i++) {
          const { path, child } = spawnRun(false);
          const ending = await killAfter(child, 1000 + random() * 2000);
          if (!ending.killed) {
            throw new Error(
              `run ${i} exited on its own (${JSON.stringify(ending.status)}): ${await Deno
                .readTextFile(`${path}.err`)}`,
            );
          }
          runs.push({ path, killed: true });
          if (i % 3 === 0) {
            const states = await Promise.all(orders.map((o) => client.read(o.orderId)));
            const started = states.filter((s) => s.version > 0 && !sagaEnded(s.state)).length;
            inFlight = Math.max(inFlight, started);
          }
        }
      } finally {
        await placing;
      }

      // The last run goes on until every order has ended, then stops on SIGTERM.
      const { path, child } = spawnRun(true);
      runs.push({ path, killed: false });
      const deadline = Date.now() + (SHORT ? 120_000 : 300_000);
      for (;;) {
        const states = await Promise.all(orders.map((o) => client.read(o.orderId)));
        if (states.every((s) => sagaEnded(s.state))) break;
        if (Date.now() > deadline) {
          child.kill("SIGKILL");
          throw new Error(
            `${states.filter((s) => !sagaEnded(s.state)).length} orders had not ended: ${await Deno
              .readTextFile(`${path}.err`)}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      child.kill("SIGTERM");
      // exitWithin counts from the spawn: 30 s from now.
      const bound = performance.now() - child.startedAt + 30_000;
      const status = await exitWithin(child, bound, "the final run's stop").catch(async (error) => {
        const tail = (await Deno.readTextFile(`${path}.log`)).split("\n").slice(-15).join("\n");
        throw new Error(`${error.message}; its log ends:\n${tail}`);
      });
      assert.equal(status.code, 0, `final run failed: ${await Deno.readTextFile(`${path}.err`)}`);

      const streams = new Map<string, StreamEvent[]>();
      const read = async (stream: string) =>
        void streams.set(stream, await store.readStream(stream));
      await Promise.all(orders.map((o) =>
        Promise.all([
          read(`Fulfilment-${o.orderId}`),
          read(`Payment-${o.orderId}`),
          read(`Shipment-${o.orderId}`),
        ])
      ));
      for (const sku of restocked.keys()) await read(`Stock-${sku}`);
      const figures = {
        seed: SEED,
        mostInFlight: inFlight,
        ...analyse({
          orders,
          answers: answerFor,
          streams,
          restocked,
          runs: await Promise.all(runs.map(async (r) => ({
            log: await Deno.readTextFile(`${r.path}.log`).catch(() => ""),
            killed: r.killed,
          }))),
        }),
      };
      console.log(JSON.stringify(figures, null, 2));
      await Deno.writeTextFile(`${dir}/figures.json`, JSON.stringify(figures, null, 2));

      assert.equal(figures.kills, KILLS);
      assert.equal(figures.unfinished, 0, "every order ended");
      assert.equal(figures.failed, 0, "none ended failed");
      assert.equal(figures.completed + figures.compensated, ORDERS);
      assert.equal(figures.duplicateRecords, 0, "no record or mark kept twice");
      assert.equal(figures.undelivered, 0, "every send delivered");
      assert.equal(figures.effectsTwice, 0, "no effect applied twice");
      assert.equal(figures.inconsistent, 0, "outcomes agree with the services' events");
      assert.equal(figures.stockMismatches, 0, "the stock adds up");
      assert.equal(figures.timersFiredTwice, 0, "no timer fired twice");
      assert.equal(figures.ignoredTimedOut, figures.ignored, "every ignored order timed out");
      assert.ok(figures.ignored > 0, "some orders were never answered");
      assert.ok(figures.timersFiredAfterRestart > 0, "deadlines fired after a restart");
      assert.ok(figures.resent > 0, "kills landed between sends and their records");
      assert.ok(figures.completed > 0 && figures.compensated > 0);
      await Deno.remove(dir, { recursive: true });
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.query(
        `DELETE FROM message_store.messages WHERE stream_name LIKE ANY($1::text[])`,
        [
          [FULFILMENT, PAYMENT, "Shipment", "Stock"].map((c) => `${c}-${run}%`).concat(
            `${timers}-%`,
          ),
        ],
      );
      await pool.end();
    }
  },
});
