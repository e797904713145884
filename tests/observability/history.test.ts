// Throughput history: what each interval of a running pipeline holds, the ring's bound, the
// timer's end with the sink, and the latency quantiles of an interval from bucket differences.
import assert from "node:assert/strict";
import { run, streamsSink } from "../../core/sink.ts";
import type { LatencyTotals } from "../../core/histogram.ts";
import { latencyBetween } from "../../observability/history.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { test } from "../support/core.ts";

// Sanitizers on: the history timer must end with the sink.
test("history: intervals count what the sink did, the ring keeps keepMs, the timer ends with the sink", async () => {
  const store = createMemoryStore();
  const metrics = createMetrics({
    defaultMetrics: false,
    history: { intervalMs: 100, keepMs: 500 },
  });
  let calls = 0;
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    retry: { initialDelayMs: 10, maxDelayMs: 10 },
    handler: (stream) => {
      calls++;
      if (stream === "Bad-1" && calls < 6) throw new Error("not yet");
    },
  });
  const pipeline = metrics.addPipeline({ group: "g", source: "memory", sink });
  const ac = new AbortController();
  const running = run(pipeline.observe(memorySource({ store })), sink, { signal: ac.signal });
  for (let i = 0; i < 10; i++) await store.append(`Order-${i}`, [{ type: "T", data: i }], 0);
  await store.append("Bad-1", [{ type: "T", data: 0 }], 0);
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 900));
  const h = pipeline.history();
  // 500 ms at 100 ms: at most 5 intervals, however long it ran.
  assert.ok(h.length >= 2 && h.length <= 5, `${h.length} samples`);
  // About 100 ms each (a loaded machine delays timers, hence the wide bound).
  for (const s of h) assert.ok(s.ms >= 50 && s.ms < 1000, `interval of ${s.ms} ms`);
  ac.abort();
  await running;
  const after = pipeline.history();
  await new Promise((r) => setTimeout(r, 250));
  // Stopped with the sink: no new intervals (and no timer left for the sanitizer).
  assert.deepEqual(pipeline.history().at(-1)?.at, after.at(-1)?.at);
  assert.ok(pipeline.history(after.at(-1)!.at).length === 0);
});

test("history: the whole run's intervals add up to the sink's totals", async () => {
  const store = createMemoryStore();
  const metrics = createMetrics({ defaultMetrics: false, history: { intervalMs: 100 } });
  const sink = streamsSink({ group: "g", statsIntervalMs: 0, handler: () => {} });
  const pipeline = metrics.addPipeline({ group: "g", source: "memory", sink });
  const ac = new AbortController();
  const running = run(pipeline.observe(memorySource({ store })), sink, { signal: ac.signal });
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 20; i++) {
      await store.append(`S-${round}-${i}`, [{ type: "T", data: i }], 0);
    }
    await new Promise((r) => setTimeout(r, 60));
  }
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 250));
  const h = pipeline.history();
  const sum = (k: "handled" | "events" | "calls") => h.reduce((n, s) => n + s[k], 0);
  assert.equal(sum("handled"), 100);
  assert.equal(sum("events"), 100);
  assert.equal(sum("calls"), sink.stats().counters.calls);
  assert.ok(h.some((s) => s.latency !== null));
  ac.abort();
  await running;
});

test("history: an interval's latency quantiles interpolate within the buckets it adds", () => {
  const boundsMs = [1, 10, 100];
  const totals = (counts: number[], sumMs: number): LatencyTotals => ({
    boundsMs,
    counts,
    count: counts.reduce((a, b) => a + b, 0),
    sumMs,
  });
  const before = totals([5, 0, 0, 0], 2.5);
  // The interval adds 50 calls in (1, 10] ms and 50 in (10, 100] ms.
  const after = totals([5, 50, 50, 0], 2.5 + 50 * 5 + 50 * 50);
  const l = latencyBetween(before, after)!;
  assert.equal(l.mean, 27.5);
  assert.equal(l.p50, 10); // the 50th of 100 ends the (1, 10] bucket
  assert.equal(l.p99, 10 + 90 * (49 / 50));
  assert.equal(latencyBetween(after, after), null);
  // Past the last bound: the last bound, as Prometheus' histogram_quantile answers.
  assert.equal(latencyBetween(after, totals([5, 50, 50, 10], 9999))!.p99, 100);
});
