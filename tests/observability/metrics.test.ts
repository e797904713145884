import assert from "node:assert/strict";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import type { Batch } from "../../core/batch.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { createMetrics } from "../../observability/metrics.ts";

/** Parses exposition text into `name{labels}` → value, plus each family's type. */
function parse(text: string) {
  const values = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) {
      const [, , name, type] = line.split(" ");
      types.set(name, type);
    } else if (line && !line.startsWith("#")) {
      const at = line.lastIndexOf(" ");
      values.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
  }
  const get = (series: string) => {
    const v = values.get(series);
    assert.notEqual(
      v,
      undefined,
      `series ${series} missing from:\n${
        [...values.keys()].filter((k) => k.startsWith(series.split("{")[0])).join("\n")
      }`,
    );
    return v!;
  };
  return { values, types, get };
}

const EXPORTED = [
  "impel_pipeline_up",
  "impel_pipeline_faulted",
  "impel_scheduler_streams",
  "impel_scheduler_events",
  "impel_scheduler_bytes",
  "impel_scheduler_buffered_events",
  "impel_scheduler_streams_tracked",
  "impel_scheduler_oldest_seconds",
  "impel_scheduler_newest_seconds",
  "impel_scheduler_max_attempts",
  "impel_scheduler_uncompleted_batches",
  "impel_scheduler_read_ahead_limit",
  "impel_scheduler_batches_total",
  "impel_scheduler_batches_completed_total",
  "impel_scheduler_events_total",
  "impel_scheduler_events_handled_total",
  "impel_scheduler_events_duplicate_total",
  "impel_scheduler_dead_lettered_total",
  "impel_parked_streams",
  "impel_parked_events",
  "impel_parked_oldest_seconds",
  "impel_parked_store_failing_seconds",
  "impel_parked_total",
  "impel_handler_calls_total",
  "impel_handler_duration_seconds",
  "impel_source_batches_total",
  "impel_source_items_total",
  "impel_source_position",
  "impel_source_at_tail",
  "impel_source_last_batch_age_seconds",
  "impel_source_read_ahead_batches",
  "impel_source_completed_position",
  "impel_source_committed_position",
  "impel_source_commit_failures",
  "impel_source_commit_failing_seconds",
  "impel_source_problems",
  "impel_source_head_position",
  "impel_source_lag",
  "impel_source_read_duration_seconds",
  "impel_lease_held",
  "impel_lease_share",
  "impel_lease_members",
  "impel_lease_units_unowned",
  "impel_lease_mismatched_members",
  "impel_lease_heartbeat_failures",
  "impel_lease_acquire_failures",
  "impel_lease_heartbeat_age_seconds",
  "impel_lease_oldest_seconds",
  "impel_lease_events_total",
  "impel_store_writer_spans_total",
  "impel_store_writer_events_total",
  "impel_store_writer_conflicts_total",
  "impel_queue_messages",
  "impel_queue_dead_letters",
  "impel_queue_oldest_seconds",
  "impel_queue_deliveries_total",
  "impel_queue_handler_duration_seconds",
  "impel_replay_events",
  "impel_replay_events_per_second",
  "impel_replay_eta_seconds",
  "impel_replay_running",
];

Deno.test("metrics: names, types and values after a known run of two pipelines", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const store = createMemoryStore();
  // 3 streams x 4 events = 12 events, read 5 per batch: batches of 5, 5, 2.
  for (let i = 0; i < 4; i++) {
    for (const s of ["Order-1", "Order-2", "Order-3"]) {
      await store.append(s, [{ type: "E", data: i }], i);
    }
  }
  let failedOnce = false;
  const sinkA = streamsSink({
    group: "a",
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1, jitter: 0 },
    handler: (stream) => {
      if (stream === "Order-2" && !failedOnce) {
        failedOnce = true;
        throw new Error("once");
      }
    },
  });
  const sinkB = streamsSink({ group: "b", statsIntervalMs: 0, handler: () => {} });
  const checkpoints = memoryCheckpoints();
  const head = () => Promise.resolve(BigInt(store.head));
  const a = metrics.addPipeline({
    group: "a",
    source: "memory",
    sink: sinkA,
    checkpoints,
    positions: { head },
  });
  const b = metrics.addPipeline({
    group: "b",
    source: "memory",
    sink: sinkB,
    positions: { head },
    headCacheMs: 0,
  });
  assert.throws(
    () => metrics.addPipeline({ group: "a", source: "memory", sink: sinkB }),
    InvalidArgumentError,
  );

  const ac = new AbortController();
  const runA = run(
    a.observe(memorySource({ store, checkpoints, group: "a", maxBatchSize: 5 })),
    sinkA,
    { signal: ac.signal },
  );
  const runB = run(
    b.observe(memorySource({ store, group: "b", maxBatchSize: 12, categories: ["Order"] })),
    sinkB,
    { signal: ac.signal },
  );
  await sinkA.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  await sinkB.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  await sinkA.flush();

  const text = await metrics.metrics();
  const { types, get, values } = parse(text);
  for (const name of EXPORTED) assert.ok(types.has(name), `${name} not exported`);
  assert.equal(types.get("impel_handler_calls_total"), "counter");
  assert.equal(types.get("impel_scheduler_streams"), "gauge");
  assert.equal(types.get("impel_source_read_duration_seconds"), "histogram");
  assert.deepEqual(
    [...types.keys()].filter((n) => n.startsWith("impel_")).sort(),
    [...EXPORTED].sort(),
  );

  const A = 'group="a"',
    srcA = 'group="a",source="memory",tranche="all"',
    srcB = 'group="b",source="memory",tranche="all"';
  assert.equal(get(`impel_scheduler_events_total{${A}}`), 12);
  assert.equal(get(`impel_scheduler_events_handled_total{${A}}`), 12);
  assert.equal(get(`impel_scheduler_events_total{group="b"}`), 12);
  assert.equal(get(`impel_handler_calls_total{${A},outcome="failed"}`), 1);
  assert.ok(get(`impel_handler_calls_total{${A},outcome="ok"}`) >= 3);
  assert.equal(types.get("impel_handler_duration_seconds"), "histogram");
  // Timed calls only (sampled), so at most the calls made; buckets are cumulative up to +Inf.
  const okCalls = get(`impel_handler_calls_total{${A},outcome="ok"}`);
  const okTimed = get(`impel_handler_duration_seconds_count{${A},outcome="ok"}`);
  assert.ok(okTimed >= 1 && okTimed <= okCalls, `${okTimed} of ${okCalls} ok calls timed`);
  assert.ok(get(`impel_handler_duration_seconds_count{${A},outcome="failed"}`) <= 1);
  assert.equal(get(`impel_handler_duration_seconds_bucket{le="+Inf",${A},outcome="ok"}`), okTimed);
  assert.ok(get(`impel_handler_duration_seconds_sum{${A},outcome="ok"}`) >= 0);
  let below = 0;
  for (const le of ["0.0005", "0.001", "0.0025", "0.005", "0.01", "60"]) {
    const n = get(`impel_handler_duration_seconds_bucket{le="${le}",${A},outcome="ok"}`);
    assert.ok(n >= below && n <= okTimed, `bucket le=${le}: ${n}`);
    below = n;
  }
  // 3 pages with items, then an empty one saying "at the tail".
  assert.equal(get(`impel_source_batches_total{${srcA}}`), 3);
  assert.equal(get(`impel_source_items_total{${srcA}}`), 12);
  assert.equal(get(`impel_source_position{${srcA}}`), 12);
  assert.equal(get(`impel_source_at_tail{${srcA}}`), 1);
  assert.equal(get(`impel_source_completed_position{${srcA}}`), 12);
  assert.equal(get(`impel_source_committed_position{${srcA}}`), 12);
  assert.equal(get(`impel_source_head_position{${srcA}}`), 12);
  assert.equal(get(`impel_source_lag{${srcA}}`), 0);
  assert.equal(get(`impel_source_batches_total{${srcB}}`), 1);
  assert.equal(get(`impel_scheduler_batches_completed_total{group="b"}`), 1);
  assert.equal(get(`impel_pipeline_up{${A}}`), 1);
  assert.equal(get(`impel_scheduler_streams{${A},state="failing"}`), 0);
  assert.equal(get(`impel_scheduler_buffered_events{${A}}`), 0);
  assert.equal(get(`impel_scheduler_read_ahead_limit{${A}}`), 16);
  assert.equal(values.has(`impel_source_committed_position{${srcB}}`), false, "b commits nowhere");

  // Appends while b's handler cannot finish: b's lag grows; a's series are unaffected.
  let release!: () => void;
  const blocked = new Promise<void>((resolve) => (release = resolve));
  await sinkB.stop();
  await runB;
  const sinkC = streamsSink({ group: "c", statsIntervalMs: 0, handler: () => blocked });
  const c = metrics.addPipeline({
    group: "c",
    source: "memory",
    sink: sinkC,
    positions: { head },
    headCacheMs: 0,
  });
  const runC = run(c.observe(memorySource({ store, group: "c" })), sinkC, { signal: ac.signal });
  await store.append("Order-9", [{ type: "E", data: 0 }, { type: "E", data: 1 }], 0);
  await sinkA.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  while (sinkC.stats().busy.length === 0) await new Promise((r) => setTimeout(r, 5));
  const later = parse(await metrics.metrics());
  assert.equal(later.get(`impel_pipeline_up{group="b"}`), 0, "b stopped");
  assert.equal(
    later.get(`impel_source_lag{group="c",source="memory",tranche="all"}`),
    14,
    "c completed nothing of 14",
  );
  assert.equal(later.get(`impel_scheduler_streams{group="c",state="active"}`), 4);
  assert.ok(later.get(`impel_scheduler_oldest_seconds{group="c",state="active"}`) >= 0);
  assert.equal(later.get(`impel_scheduler_events_total{${A}}`), 14);
  b.remove();
  assert.equal(metrics.pipeline("b"), undefined);
  assert.equal(
    parse(await metrics.metrics()).values.has(`impel_scheduler_events_total{group="b"}`),
    false,
  );
  release();
  ac.abort();
  await Promise.all([runA, runC]);
});

Deno.test("metrics: read durations reported by batches, per-state totals when stats carry them", async () => {
  const metrics = createMetrics({ defaultMetrics: false, prefix: "x_" });
  const sink = streamsSink({ group: "g", statsIntervalMs: 0, handler: () => {} });
  const withStates = {
    stats: () => {
      const stats = sink.stats();
      return { ...stats, states: { ...stats.states, ready: { streams: 2, events: 5, bytes: 40 } } };
    },
    done: sink.done,
  };
  const p = metrics.addPipeline({ group: "g", source: "feed", sink: withStates });
  const batches: Array<Batch & { readMs: number }> = [
    { tranche: "0", items: [], position: 1n, isTail: false, readMs: 3 },
    { tranche: "0", items: [], position: 2n, isTail: true, readMs: 300 },
  ];
  const source = new ReadableStream<Batch>({
    start(c) {
      for (const b of batches) c.enqueue(b);
      c.close();
    },
  });
  await run(p.observe(source), sink);
  const { get, types } = parse(await metrics.metrics());
  assert.ok([...types.keys()].every((n) => n.startsWith("x_")), "the prefix applies to every name");
  const labels = 'group="g",source="feed",tranche="0"';
  assert.equal(get(`x_source_read_duration_seconds_count{${labels}}`), 2);
  assert.equal(get(`x_source_read_duration_seconds_bucket{le="0.005",${labels}}`), 1);
  assert.ok(Math.abs(get(`x_source_read_duration_seconds_sum{${labels}}`) - 0.303) < 1e-9);
  assert.equal(get(`x_scheduler_streams{group="g",state="ready"}`), 2);
  assert.equal(get(`x_scheduler_bytes{group="g",state="ready"}`), 40);
  assert.equal(get(`x_pipeline_up{group="g"}`), 0, "the source ended, so the pipeline stopped");
});

Deno.test("metrics: default process metrics, and bad options rejected", async () => {
  const metrics = createMetrics();
  const { values } = parse(await metrics.metrics());
  assert.ok(values.get("process_cpu_seconds_total")! > 0);
  assert.throws(() => createMetrics({ prefix: "bad prefix" }), InvalidArgumentError);
  const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
  assert.throws(() => metrics.addPipeline({ group: "", source: "s", sink }), InvalidArgumentError);
  assert.throws(
    () => metrics.addPipeline({ group: "g", source: "s", sink: {} as never }),
    InvalidArgumentError,
  );
  assert.throws(
    () => metrics.addPipeline({ group: "g", source: "s", sink, headCacheMs: -1 }),
    InvalidArgumentError,
  );
  await sink.stop();
});

Deno.test("metrics: the Grafana dashboard uses exactly the exported metric names", async () => {
  const dashboard = JSON.parse(
    await Deno.readTextFile(new URL("../../observability/grafana-dashboard.json", import.meta.url)),
  );
  const exprs: string[] = [];
  const ids = new Set<number>();
  for (const panel of dashboard.panels) {
    assert.ok(!ids.has(panel.id), `panel id ${panel.id} repeated`);
    ids.add(panel.id);
    for (const k of ["h", "w", "x", "y"]) assert.equal(typeof panel.gridPos[k], "number");
    for (const t of panel.targets ?? []) exprs.push(t.expr);
  }
  for (const v of dashboard.templating.list) if (v.definition) exprs.push(v.definition);
  const used = new Set(
    exprs.flatMap((e) => e.match(/\bimpel_[a-z_]+/g) ?? []).map((n) =>
      n.replace(/_(bucket|sum|count)$/, "")
    ),
  );
  assert.deepEqual([...used].sort(), [...EXPORTED].sort());
});
