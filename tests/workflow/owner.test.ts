// One runner per workflow category across processes (`startWorkflow({ owner })`): real processes
// over MessageDB with the runner lease in PostgreSQL. A second runner while the first lives fails
// with WorkflowRunnerConflictError and delivers nothing; after a SIGKILL the lease lapses and a
// restart takes over; a clean stop releases it at once.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { workflowClient } from "../../core/workflow.ts";
import { holdRunnerLease, WorkflowRunnerConflictError } from "../../core/workflow/ownership.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { spawnExample } from "../support/example_process.ts";
import { unique, url } from "../support/postgres.ts";
import { pingerOf } from "./support/pinger.ts";

const DURATION_MS = 2_000;

Deno.test({
  name:
    "workflow owner: a second runner process fails typed; a killed one's lease lapses; a stop releases it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const category = `Own${unique("").replace(/[^a-z0-9]/gi, "")}`;
    const env = { IMPEL_PG_URL: url, CATEGORY: category, DURATION_MS: String(DURATION_MS) };
    const spawn = (name: string) =>
      spawnExample(
        "tests/workflow/support/owned_runner.ts",
        "deno",
        { ...env, NAME: name },
        60_000,
      );
    const pool = new pg.Pool({
      connectionString: url,
      max: 2,
      options: "-c search_path=message_store,public",
    });
    pool.on("error", () => {});
    const client = workflowClient(pingerOf(category), { store: messageDbStore(pool) });
    // This client records the inputs; the runner processes deliver what they send.
    const note = (id: string) =>
      client.handle(id, { type: "Note", data: null }, { id: `note-${id}` });
    const processes = [] as ReturnType<typeof spawn>[];
    try {
      const a = spawn("a");
      processes.push(a);
      await a.until(/started a/);
      await note("i1");
      await a.until(new RegExp(`delivered ${category}-i1#0`));

      // A second process while a lives: it waits a lease's length, then fails, delivering nothing.
      const b = spawn("b");
      processes.push(b);
      await note("i2");
      await a.until(new RegExp(`delivered ${category}-i2#0`));
      assert.equal(await b.ended(), 3, b.out());
      assert.match(b.out(), /conflict WorkflowRunnerConflict .*is held by a/);
      assert.doesNotMatch(b.out(), /delivered/);

      // a is killed: its lease lapses and a restart takes over.
      a.kill();
      const killedAt = Date.now();
      await a.ended();
      const c = spawn("c");
      processes.push(c);
      await note("i3");
      await c.until(new RegExp(`delivered ${category}-i3#0`));
      const takeover = Date.now() - killedAt;
      assert.ok(takeover < DURATION_MS * 4, `took over ${takeover} ms after the kill`);

      // A clean stop releases it: the next runner takes it without waiting for it to lapse.
      c.child.kill("SIGTERM");
      assert.equal(await c.ended(), 0, c.out());
      const stoppedAt = Date.now();
      const d = spawn("d");
      processes.push(d);
      await note("i4");
      await d.until(new RegExp(`delivered ${category}-i4#0`));
      assert.doesNotMatch(d.out(), /conflict/);
      console.log(
        `takeover after SIGKILL ${takeover} ms, after a stop ${Date.now() - stoppedAt} ms ` +
          `(lease ${DURATION_MS} ms, both including a process start)`,
      );
    } finally {
      for (const p of processes) p.kill();
      for (const p of processes) await p.ended();
      await pool.end();
    }
  },
});

Deno.test("workflow owner: a held lease fails the second holder typed; bad options are refused", async () => {
  const leases = memoryLeases();
  const first = holdRunnerLease({ leases, member: "a", durationMs: 300 }, "Orders");
  await first.ready;
  const second = holdRunnerLease({ leases, member: "b", durationMs: 300 }, "Orders");
  await assert.rejects(
    second.ready,
    (e: unknown) =>
      e instanceof WorkflowRunnerConflictError && e.category === "Orders" && e.member === "b" &&
      /held by a/.test(e.message),
  );
  await first.stop();
  const third = holdRunnerLease({ leases, member: "c", durationMs: 300, waitMs: 0 }, "Orders");
  await third.ready;
  await third.stop();
  assert.throws(
    () => holdRunnerLease({ leases, durationMs: 1 }, "Orders"),
    (e: unknown) => e instanceof InvalidArgumentError && /owner\.durationMs/.test(e.message),
  );
  assert.throws(
    () => holdRunnerLease({ leases: {} as never }, "Orders"),
    (e: unknown) => e instanceof InvalidArgumentError && /owner\.leases/.test(e.message),
  );
});
