import assert from "node:assert/strict";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import type { Batch, ObservableSource, SourceProblem } from "../../core/batch.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import {
  checkHealth,
  type HealthReport,
  resolveHealthThresholds,
} from "../../observability/health.ts";
import { createHttpHandler } from "../../observability/http.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { batch, gate, within } from "../support/core.ts";
import { poolFixture, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 4 });

/** Polls `probe` until `accept` holds, failing after `ms`; what is observed is real time passing. */
async function until<T>(probe: () => Promise<T>, accept: (t: T) => boolean, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (accept(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`condition not reached within ${ms} ms; last: ${JSON.stringify(value)}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The value of one series in an exposition text, or undefined. */
function series(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

Deno.test("health: a dropped checkpoint table makes health degraded, then failing, then ok once it is back (PostgreSQL)", () =>
  withPool(async (pool) => {
    const schema = unique("obs_health_");
    const table = { schema, table: "checkpoints" };
    await initPostgresCheckpoints(pool, table);
    try {
      const checkpoints = postgresCheckpoints(pool, table);
      const store = createMemoryStore();
      const metrics = createMetrics({ defaultMetrics: false });
      const sink = streamsSink({
        group: "obs-health",
        statsIntervalMs: 0,
        commitIntervalMs: 20,
        handler: () => {},
      });
      const pipeline = metrics.addPipeline({
        group: "obs-health",
        source: "memory",
        sink,
        checkpoints,
      });
      const handler = createHttpHandler({
        metrics,
        health: { commitFailingMs: { degraded: 0, failing: 400 } },
      });
      const health = async () => {
        const res = await handler(new Request("http://impel.test/health"));
        return { code: res.status, body: (await res.json()) as HealthReport };
      };
      const key = { source: "memory", tranche: "all", group: "obs-health" };
      const ac = new AbortController();
      const running = run(
        pipeline.observe(memorySource({ store, checkpoints, group: "obs-health" })),
        sink,
        { signal: ac.signal },
      );
      try {
        await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
        await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 3000 });
        await until(() => checkpoints.load(key), (p) => p === 1n);
        assert.equal((await health()).body.status, "ok");

        // The table goes away mid-run: every commit from now on fails.
        await pool.query(`DROP TABLE "${schema}".checkpoints`);
        await store.append("Order-2", [{ type: "Placed", data: {} }], 0);
        await sink.monitor.awaitCompletion({ timeoutMs: 3000 });
        const degraded = await until(health, (h) => h.body.status !== "ok");
        assert.equal(degraded.code, 200);
        assert.equal(degraded.body.status, "degraded", "degraded at the first failed commit");
        const reason = degraded.body.reasons[0];
        assert.equal(reason.kind, "commitFailing");
        assert.equal(reason.group, "obs-health");
        assert.equal(reason.tranche, "all");
        assert.ok(reason.since! <= Date.now() && reason.value! < 400);
        assert.match(reason.message, /checkpoint commits of tranche all failing for \d+\.\d s/);
        assert.match(reason.message, /CheckpointTableMissing.*does not exist/);

        const failing = await until(health, (h) => h.body.status === "failing");
        assert.equal(failing.code, 503);
        const bad = failing.body.reasons[0];
        assert.equal(bad.kind, "commitFailing");
        assert.ok(bad.value! >= 400, `age ${bad.value} past the threshold`);
        assert.match(bad.message, /\(\d+ times in a row\)/);
        assert.equal(bad.since, reason.since, "the age counts from the first failure of the run");
        const text = await metrics.metrics();
        const labels = '{group="obs-health",source="memory",tranche="all"}';
        assert.ok(series(text, `impel_source_commit_failures${labels}`)! >= 2);
        assert.ok(series(text, `impel_source_commit_failing_seconds${labels}`)! >= 0.4);
        assert.equal(series(text, `impel_source_committed_position${labels}`), 1);

        // The table is back: the next commit lands and health is ok again.
        await initPostgresCheckpoints(pool, table);
        await until(() => checkpoints.load(key), (p) => p === 2n);
        const ok = await until(health, (h) => h.body.status === "ok");
        assert.deepEqual(ok.body.reasons, []);
        const after = await metrics.metrics();
        assert.equal(series(after, `impel_source_commit_failures${labels}`), 0);
        assert.equal(series(after, `impel_source_commit_failing_seconds${labels}`), 0);
      } finally {
        ac.abort();
        await running;
      }
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  }));

/** A source stream whose batches the test pushes and whose problems it sets. */
function troubledSource() {
  let problems: () => readonly SourceProblem[] = () => [];
  let controller!: ReadableStreamDefaultController<Batch>;
  const stream = new ReadableStream<Batch>({ start: (c) => void (controller = c) });
  const source: ObservableSource = Object.assign(stream, { problems: () => problems() });
  return {
    source,
    setProblems: (fn: () => readonly SourceProblem[]) => void (problems = fn),
    push: (batch: Batch) => controller.enqueue(batch),
    close: () => controller.close(),
    fail: (error: unknown) => controller.error(error),
  };
}

Deno.test("health: each problem the source reports shows with its severity, reason and age", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const sink = streamsSink({ group: "obs-src", statsIntervalMs: 0, handler: () => {} });
  const pipeline = metrics.addPipeline({ group: "obs-src", source: "feed", sink });
  const t = troubledSource();
  const observed = pipeline.observe(t.source);
  const running = run(observed, sink);
  t.push({ tranche: "0", items: [], position: 1n, isTail: true });
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
  assert.equal((await checkHealth(metrics.pipelines())).status, "ok");

  const since = Date.now() - 1500;
  t.setProblems(() => [
    { severity: "degraded", reason: "nothing assigned to this member", since },
    { severity: "failing", reason: "consumer crashed: ECONNREFUSED", since, tranche: "0" },
  ]);
  assert.equal(observed.problems?.().length, 2, "the wrapper is an ObservableSource too");
  const report = await checkHealth(metrics.pipelines());
  assert.equal(report.status, "failing");
  assert.deepEqual(report.reasons.map((r) => [r.status, r.kind, r.tranche]), [
    ["failing", "source", "0"],
    ["degraded", "source", undefined],
  ]);
  const crashed = report.reasons[0];
  assert.match(
    crashed.message,
    /^source: consumer crashed: ECONNREFUSED \(tranche 0\), for 1\.\d s$/,
  );
  assert.ok(crashed.value! >= 1500 && crashed.value! < 5000);
  assert.equal(crashed.since, since);
  const text = await metrics.metrics();
  assert.equal(
    series(text, 'impel_source_problems{group="obs-src",source="feed",severity="failing"}'),
    1,
  );
  assert.equal(
    series(text, 'impel_source_problems{group="obs-src",source="feed",severity="degraded"}'),
    1,
  );

  // A source that cannot say what is wrong, or says it badly, is not taken for a healthy one.
  t.setProblems(() => {
    throw new Error("state unavailable");
  });
  const unknown = await checkHealth(metrics.pipelines());
  assert.equal(unknown.status, "degraded");
  assert.match(unknown.reasons[0].message, /problems\(\) threw Error: state unavailable/);
  t.setProblems(() => [{ severity: "bad", reason: 42 } as unknown as SourceProblem]);
  const malformed = await checkHealth(metrics.pipelines());
  assert.equal(malformed.status, "failing");
  assert.match(malformed.reasons[0].message, /malformed problem .*"severity":"bad"/);

  t.setProblems(() => []);
  assert.equal((await checkHealth(metrics.pipelines())).status, "ok");
  const cleared = await metrics.metrics();
  assert.equal(
    series(cleared, 'impel_source_problems{group="obs-src",source="feed",severity="failing"}'),
    0,
  );

  // Once the source has ended, its problems are no longer the pipeline's.
  t.setProblems(() => [{ severity: "failing", reason: "late", since: Date.now() }]);
  t.close();
  await running;
  const stopped = await checkHealth(metrics.pipelines());
  assert.deepEqual(stopped.reasons.map((r) => r.kind), ["stopped"]);
});

Deno.test("health: the observed source's failure reaches run() while a write waits for room", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const blocked = gate();
  const sink = streamsSink({
    group: "obs-err",
    statsIntervalMs: 0,
    maxReadAhead: 1,
    stopTimeoutMs: 200,
    handler: () => blocked.opened,
  });
  const pipeline = metrics.addPipeline({ group: "obs-err", source: "feed", sink });
  const t = troubledSource();
  const running = run(pipeline.observe(t.source), sink);
  t.push(batch(1, [["A-1", 0]], false));
  t.push(batch(2, [["A-2", 0]], false));
  // The second batch waits for room behind the first, whose handler does not return.
  await until(() => Promise.resolve(sink.stats().uncompletedBatches), (n) => n === 1);
  const broke = new Error("source broke");
  t.fail(broke);
  const outcome = await within(running, 3000);
  blocked.open();
  assert.equal(outcome.timedOut, undefined, "run() must not wait for the handler to make room");
  assert.equal(outcome.error, broke);
  // Health says why the pipeline stopped: the source's error, as a problem of the source.
  const report = await checkHealth(metrics.pipelines());
  assert.deepEqual(report.reasons.map((r) => [r.status, r.kind]), [
    ["failing", "stopped"],
    ["failing", "source"],
  ]);
  assert.match(report.reasons[1].message, /^source: stopped reading: Error: source broke, for /);
  // A new run starts with a clean slate.
  const next = troubledSource();
  pipeline.observe(next.source);
  assert.deepEqual(pipeline.problems(), []);
  next.close();
  assert.throws(
    () => createHttpHandler({ metrics, health: { commitFailingMs: { failing: -1 } } }),
    InvalidArgumentError,
  );
  assert.deepEqual(resolveHealthThresholds({}).commitFailingMs, { degraded: 0, failing: 60_000 });
});

Deno.test("health: problems of other parts registered with a pipeline (an indexer's parked records) are reported", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const sink = streamsSink({ group: "idx", handler: () => {}, statsIntervalMs: 0 });
  const since = Date.now() - 5000;
  const pipeline = metrics.addPipeline({
    group: "idx",
    source: "dynamo",
    sink,
    problems: () => [{
      severity: "degraded",
      reason: "parked Order-1 at index 5: an index gap",
      since,
      tranche: "0",
    }],
  });
  const report = await checkHealth([pipeline]);
  assert.equal(report.status, "degraded");
  const reason = report.reasons.find((r) => r.kind === "source");
  assert.match(reason?.message ?? "", /parked Order-1 at index 5/);
  assert.throws(
    () => metrics.addPipeline({ group: "idx2", source: "dynamo", sink, problems: 5 as never }),
    (e: Error & { code?: string }) => e.code === "InvalidArgument",
  );
  await sink.stop();
});
