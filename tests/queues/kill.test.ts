// A real consumer process (tests/queues/support/worker.ts) SIGKILLed in the middle of a handler:
// its message stays hidden until the visibility it last extended lapses, then is delivered
// again (delivery 2, with the expiry as its last error), and a new consumer acks it.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresQueues, postgresQueues } from "../../queues/postgres.ts";
import { EXPIRED_ERROR } from "../../queues/queue.ts";
import { spawnScript } from "../faults/support/process.ts";
import { unique, url } from "../support/postgres.ts";

const pool = new pg.Pool({ connectionString: url, max: 4 });
pool.on("error", () => {});
const available = await pool.query("SELECT 1").then(() => true, () => false);
if (!available) {
  console.warn(`PostgreSQL is not reachable at ${url}: the queue kill test is ignored`);
}

async function until(what: string, cond: () => Promise<boolean> | boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test({
  name: "queue consumer SIGKILLed mid-handler: its message reappears after the visibility timeout",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const schema = unique("qkill_");
    const dir = await Deno.makeTempDir({ prefix: "impel-queue-kill-" });
    const VISIBILITY = 1_500;
    await initPostgresQueues(pool, { schema });
    const store = postgresQueues(pool, { schema });
    const log = (k: number) => Deno.readTextFile(`${dir}/w${k}.log`).catch(() => "");
    const spawn = (k: number) =>
      spawnScript("tests/queues/support/worker.ts", {
        env: {
          IMPEL_PG_URL: url,
          QUEUE_SCHEMA: schema,
          QUEUE_NAME: "jobs",
          LOG: `${dir}/w${k}.log`,
          VISIBILITY_MS: String(VISIBILITY),
        },
        stderrPath: `${dir}/w${k}.err`,
      });
    const first = spawn(1);
    try {
      const [id] = await store.enqueue("jobs", [{ hang: true }]);
      await until("the handler to start", async () => (await log(1)).includes(`start ${id} 1 `));
      // Past two extensions (every 500 ms), so the kill lands on an extended visibility.
      await new Promise((r) => setTimeout(r, 1_200));
      first.kill("SIGKILL");
      await first.status;
      const killedAt = Date.now();
      const held = await pool.query(
        `SELECT (extract(epoch FROM visible_at) * 1000)::float8 AS until FROM "${schema}".queue_messages`,
      );
      const visibleUntil = Number(held.rows[0].until);
      assert.ok(visibleUntil > killedAt + 300, "the kill left it hidden: extended, not lapsed");
      assert.deepEqual(await store.dequeue("jobs", { visibilityTimeoutMs: 10_000 }), []);
      let again;
      await until("the message to reappear", async () => {
        [again] = await store.dequeue("jobs", { visibilityTimeoutMs: 10_000 });
        return again !== undefined;
      });
      const reappearedAt = Date.now();
      assert.ok(reappearedAt >= visibleUntil - 50, "not before its visibility lapsed");
      assert.ok(reappearedAt <= visibleUntil + 1_000, "and soon after");
      assert.equal(again!.id, id);
      assert.equal(again!.deliveries, 2);
      assert.equal(again!.lastError, EXPIRED_ERROR + 1);
      assert.equal(await store.nack(again!), true, "handed back for the next consumer");
      // A new consumer process takes it (delivery 3) and, the body still hanging, we only check
      // that it started there: the message moved on from the dead process.
      const second = spawn(2);
      try {
        await until(
          "the new consumer to take it",
          async () => (await log(2)).includes(`start ${id} 3 `),
        );
      } finally {
        second.kill("SIGTERM");
        second.kill("SIGKILL");
        await second.status;
      }
      assert.ok(!(await log(1)).includes(`ack ${id}`), "the killed consumer never acked it");
    } finally {
      first.kill("SIGKILL");
      await store.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
