// Lease state in metrics and /health: a MessageDB source with leases on the real PostgreSQL,
// observed by the metrics pipeline (held, share, unowned, counters; heartbeats failing once the
// lease table is gone), and a member whose acquisitions fail registered by hand (health failing:
// it holds nothing while units are unowned).
import assert from "node:assert/strict";
import { createLeaseMember, type LeaseStore, run, streamsSink } from "../../mod.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { initPostgresLeases, postgresLeases } from "../../leases/postgres.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { checkHealth, createHttpHandler } from "../../observability/http.ts";
import { messageDbSource } from "../../sources/messagedb.ts";
import { seed, unique, withSchema } from "../support/postgres.ts";

async function until(what: string, ms: number, ok: () => boolean): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The value of one series in an exposition, undefined when absent. */
function series(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

Deno.test("lease observability: a MessageDB member's leases in metrics and /health, failing once heartbeats fail", () =>
  withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    await initPostgresLeases(pool, { schema });
    const category = unique("LeaseObs");
    await seed(pool, category, 10, 2);
    const stop = new AbortController();
    const source = messageDbSource({
      client: pool,
      categories: [category],
      group: "g",
      checkpoints: postgresCheckpoints(pool, { schema, leases: { schema } }),
      leases: {
        store: postgresLeases(pool, { schema }),
        slots: 4,
        member: "a",
        durationMs: 1500,
        heartbeatMs: 250,
        handoverMs: 700,
        stopTimeoutMs: 300,
      },
      tailSleepMs: 50,
      signal: stop.signal,
    });
    const sink = streamsSink({
      group: "g",
      handler: () => {},
      statsIntervalMs: 0,
      stopTimeoutMs: 300,
    });
    const metrics = createMetrics({ defaultMetrics: false });
    const pipeline = metrics.addPipeline({ group: "g", source: "messagedb", sink });
    const running = run(pipeline.observe(source), sink, { signal: stop.signal });
    try {
      await until("four slots held", 5_000, () => source.leases()!.held.length === 4);
      const labels = `group="g",source="messagedb",scope="messagedb/g"`;
      const text = await metrics.metrics();
      assert.equal(series(text, "impel_lease_held", labels), 4);
      assert.equal(series(text, "impel_lease_share", labels), 4);
      assert.equal(series(text, "impel_lease_members", labels), 1);
      assert.equal(series(text, "impel_lease_units_unowned", labels), 0);
      assert.equal(series(text, "impel_lease_heartbeat_failures", labels), 0);
      assert.equal(series(text, "impel_lease_events_total", `${labels},event="acquired"`), 4);
      assert.equal(series(text, "impel_lease_events_total", `${labels},event="lost"`), 0);
      const healthy = await checkHealth(metrics.pipelines());
      assert.equal(healthy.status, "ok", JSON.stringify(healthy.reasons));
      assert.equal(healthy.pipelines[0].leases?.[0].held, 4);
      assert.equal(healthy.pipelines[0].leases?.[0].member, "a");

      // The lease table gone: every heartbeat fails, with the leases still held.
      await pool.query(`DROP TABLE "${schema}".leases`);
      await until("a failed heartbeat", 5_000, () => source.leases()!.heartbeatFailures > 0);
      const response = await createHttpHandler({ metrics })(new Request("http://x/health"));
      assert.equal(response.status, 503);
      const report = await response.json();
      assert.equal(report.status, "failing");
      const reason = report.reasons.find((r: { message: string }) =>
        r.message.includes("lease heartbeats of a")
      );
      assert.equal(reason?.status, "failing", JSON.stringify(report.reasons));
      assert.match(reason.message, /does not exist/);
      const failing = await metrics.metrics();
      assert.ok(series(failing, "impel_lease_heartbeat_failures", labels)! >= 1);
      assert.ok(
        series(failing, "impel_lease_events_total", `${labels},event="heartbeat_failed"`)! >= 1,
      );
    } finally {
      stop.abort();
      await running.catch(() => {});
      await source.released;
    }
  }));

Deno.test("lease observability: a member that holds nothing while units are unowned fails /health", async () => {
  let clock = 0;
  const base = memoryLeases();
  const store: LeaseStore = {
    ...base,
    acquire: () => Promise.reject(new Error("acquire refused")), // the deliberate fault
  };
  const member = createLeaseMember({
    store,
    scope: "messagedb/g",
    units: ["u0", "u1", "u2"],
    member: "a",
    durationMs: 1000,
    heartbeatMs: 200,
    handoverMs: 400,
    now: () => clock,
    onAcquired() {},
    onRevoked: () => Promise.resolve(),
  });
  const sink = streamsSink({ group: "g", handler: () => {}, statsIntervalMs: 0 });
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.addPipeline({
    group: "g",
    source: "messagedb",
    sink,
    leases: () => member.snapshot(),
    problems: () => member.problems(),
  });
  try {
    for (let t = 0; t <= 1000; t += 200) {
      clock = t;
      await member.tick();
    }
    const report = await checkHealth(metrics.pipelines());
    assert.equal(report.status, "failing");
    const messages = report.reasons.map((r) => r.message);
    assert.ok(
      messages.some((m) => /a holds no lease of messagedb\/g while 3 of its 3 units/.test(m)),
      messages.join("\n"),
    );
    assert.ok(messages.some((m) => /lease acquisitions of a .* failing/.test(m)));
    assert.equal(report.pipelines[0].leases?.[0].unowned, 3);
    const labels = `group="g",source="messagedb",scope="messagedb/g"`;
    const text = await metrics.metrics();
    assert.equal(series(text, "impel_lease_units_unowned", labels), 3);
    assert.equal(series(text, "impel_lease_held", labels), 0);
    assert.ok(series(text, "impel_lease_acquire_failures", labels)! >= 3);
    assert.ok(series(text, "impel_lease_events_total", `${labels},event="acquire_failed"`)! >= 3);
  } finally {
    await member.stop();
    await sink.stop();
  }
});
