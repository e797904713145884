// The store writer inside a streams sink (memory store): a missing prefix is a failing stream
// the failure policy acts on (retried until the prefix arrives, faulted, or parked); a replay
// from a reset checkpoint finds only duplicates; outcomes reach the metrics.
import assert from "node:assert/strict";
import { PipelineFaultError, run, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore, MEMORY_TRANCHE, memorySource } from "../../sources/memory.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { PrefixMissingError, storeWriter } from "../../sinks/store-writer.ts";

const six = ["A", "B", "C", "D", "E", "F"].map((type, i) => ({ type, data: { i } }));

/** A source store with Order-1 (six events) and a source starting past its first four. */
async function midStream() {
  const source = createMemoryStore();
  await source.append("Order-1", six, 0);
  await source.append("Order-2", six.slice(0, 2), 0);
  const checkpoints = memoryCheckpoints();
  // The log position after Order-1's first four events: the sink sees Order-1 from index 4.
  await checkpoints.commit({ source: "memory", tranche: MEMORY_TRANCHE, group: "copy" }, 4n);
  return { source, checkpoints };
}

Deno.test("store writer in a sink: a missing prefix fails the stream until it arrives", async () => {
  const { source, checkpoints } = await midStream();
  const target = createMemoryStore();
  await target.append("Order-1", six.slice(0, 2), 0); // the target has 0..1, the span is 4..5
  const writer = storeWriter({ target });
  const sink = streamsSink({
    group: "copy",
    handler: writer.handler,
    retry: { initialDelayMs: 5, maxDelayMs: 20 },
    statsIntervalMs: 0,
  });
  const stop = new AbortController();
  const running = run(memorySource({ store: source, checkpoints, group: "copy" }), sink, {
    signal: stop.signal,
  });
  try {
    // Order-2 is unaffected; Order-1 shows as failing with the typed reason.
    const deadline = Date.now() + 5_000;
    while (sink.stats().failing.length === 0) {
      assert.ok(Date.now() < deadline, "Order-1 never showed as failing");
      await new Promise((r) => setTimeout(r, 5));
    }
    const [failing] = sink.stats().failing;
    assert.equal(failing.stream, "Order-1");
    assert.ok(failing.error instanceof PrefixMissingError);
    assert.equal((failing.error as PrefixMissingError).version, 2);
    assert.equal((await target.readStream("Order-2")).length, 2, "other streams carry on");
    assert.equal((await target.readStream("Order-1")).length, 2, "nothing out of order");
    // Another writer fills the prefix in; the next retry writes the span.
    await target.append("Order-1", six.slice(2, 4), 2);
    await sink.monitor.awaitCompletion({ tail: true });
    assert.deepEqual((await target.readStream("Order-1")).map((e) => e.type), [
      "A",
      "B",
      "C",
      "D",
      "E",
      "F",
    ]);
    assert.ok(writer.stats().spans.behind >= 1);
    assert.equal(writer.stats().spans.written, 2);
    assert.equal(sink.stats().failing.length, 0);
  } finally {
    stop.abort();
    await running;
  }
});

Deno.test("store writer in a sink: the fault policy stops the pipeline on a missing prefix", async () => {
  const { source, checkpoints } = await midStream();
  const writer = storeWriter({ target: createMemoryStore() });
  const sink = streamsSink({
    group: "copy",
    handler: writer.handler,
    retry: { initialDelayMs: 1 },
    failure: { kind: "fault", maxAttempts: 2 },
    statsIntervalMs: 0,
  });
  const error = await run(memorySource({ store: source, checkpoints, group: "copy" }), sink)
    .catch((e) => e);
  assert.ok(error instanceof PipelineFaultError, String(error));
  assert.ok(error.cause instanceof PrefixMissingError);
  assert.match(
    error.message,
    /Order-1 \(2 attempts: PrefixMissingError: .*events 0 to 3 are missing/,
  );
});

Deno.test("store writer in a sink: the park policy parks a stream whose prefix is missing", async () => {
  const { source, checkpoints } = await midStream();
  const target = createMemoryStore();
  const store = memoryParkStore();
  const sink = streamsSink({
    group: "copy",
    handler: storeWriter({ target }).handler,
    retry: { initialDelayMs: 1 },
    failure: { kind: "park", maxAttempts: 2, store },
    statsIntervalMs: 0,
  });
  const stop = new AbortController();
  const running = run(memorySource({ store: source, checkpoints, group: "copy" }), sink, {
    signal: stop.signal,
  });
  await sink.monitor.awaitCompletion({ tail: true });
  stop.abort();
  await running;
  const parked = await store.list("copy");
  assert.deepEqual(parked.map((p) => [p.stream, p.first, p.next]), [["Order-1", 4, 6]]);
  assert.match(parked[0].error, /PrefixMissing/);
  assert.equal((await target.readStream("Order-2")).length, 2);
});

Deno.test("store writer in a sink: a replay from a reset checkpoint finds only duplicates", async () => {
  const source = createMemoryStore(), target = createMemoryStore();
  for (let s = 0; s < 20; s++) await source.append(`Order-${s}`, six, 0);
  const checkpoints = memoryCheckpoints();
  const key = { source: "memory", tranche: MEMORY_TRANCHE, group: "copy" };
  const pass = async () => {
    const writer = storeWriter({ target });
    const sink = streamsSink({ group: "copy", handler: writer.handler, statsIntervalMs: 0 });
    const stop = new AbortController();
    const running = run(memorySource({ store: source, checkpoints, group: "copy" }), sink, {
      signal: stop.signal,
    });
    await sink.monitor.awaitCompletion({ tail: true });
    stop.abort();
    await running;
    return writer.stats();
  };
  const first = await pass();
  assert.equal(first.events.written, 120);
  await checkpoints.reset(key, 0n);
  const replay = await pass();
  assert.deepEqual(replay.spans, { written: 0, duplicate: 20, partial: 0, behind: 0, filtered: 0 });
  assert.deepEqual(replay.events, { written: 0, duplicate: 120, behind: 0, filtered: 0 });
  assert.equal(replay.appends, 0);
  for (let s = 0; s < 20; s++) assert.equal((await target.readStream(`Order-${s}`)).length, 6);
});

Deno.test("store writer metrics: outcome counters by group", async () => {
  const target = createMemoryStore();
  const writer = storeWriter({ target });
  const metrics = createMetrics({ defaultMetrics: false });
  const added = metrics.addStoreWriter("copy", writer);
  const source = createMemoryStore();
  await source.append("Order-1", six, 0);
  const events = await source.readStream("Order-1");
  await writer.write("Order-1", events.slice(0, 4));
  await writer.write("Order-1", events.slice(2));
  await writer.write("Order-1", events);
  await writer.write("Order-2", events.slice(3));
  const text = await metrics.metrics();
  for (
    const line of [
      'impel_store_writer_spans_total{group="copy",outcome="written"} 1',
      'impel_store_writer_spans_total{group="copy",outcome="partial"} 1',
      'impel_store_writer_spans_total{group="copy",outcome="duplicate"} 1',
      'impel_store_writer_spans_total{group="copy",outcome="behind"} 1',
      'impel_store_writer_events_total{group="copy",outcome="written"} 6',
      'impel_store_writer_events_total{group="copy",outcome="duplicate"} 8',
      'impel_store_writer_events_total{group="copy",outcome="behind"} 3',
      'impel_store_writer_conflicts_total{group="copy"} 1',
    ]
  ) assert.ok(text.includes(line), `missing ${line}`);
  assert.throws(() => metrics.addStoreWriter("copy", writer), /already has a store writer/);
  assert.throws(() => metrics.addStoreWriter("x", {} as never), /stats\(\) method/);
  added.remove();
  assert.ok(!(await metrics.metrics()).includes('group="copy"'));
});
