// Flat in streams (semantic 11) and lasting progress: idle stream states are purged past
// maxIdleStreams, and the oldest unfinished batch is dispatched first.
import assert from "node:assert/strict";
import { type Batch, streamsSink } from "../../mod.ts";
import { createScheduler } from "../../core/scheduler.ts";
import { ev, sleep, test } from "../support/core.ts";

const batchOf = (position: number, items: Array<[string, number]>): Batch => ({
  tranche: "0",
  position: BigInt(position),
  isTail: false,
  items: items.map(([stream, i]) => ({ stream, event: ev(i) })),
});

test("idle stream states are purged past maxIdleStreams, so states stay bounded", async () => {
  let peak = 0;
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxIdleStreams: 100,
    handler: () => {
      peak = Math.max(peak, sink.stats().streams);
    },
  });
  const writer = sink.writable.getWriter();
  for (let b = 0; b < 50; b++) {
    await writer.write(batchOf(b + 1, Array.from({ length: 100 }, (_, i) => [`S-${b}_${i}`, 0])));
  }
  await sleep(5);
  const stats = sink.stats();
  assert.equal(stats.counters.handled, 5000);
  assert.ok(stats.streams <= 100 + 100, `${stats.streams} states kept`);
  assert.ok(stats.counters.purgedStreams >= 4800, `${stats.counters.purgedStreams} purged`);
  assert.ok(peak <= 300, `peak ${peak}`);
  await sink.stop();
});

test("a purged stream starts afresh at its next event; a stream with work is never purged", async () => {
  const seen: string[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxIdleStreams: 0,
    handler: (stream, events) => {
      for (const e of events) seen.push(`${stream}@${e.index}`);
      if (stream === "Held-1") return events[0].index; // no progress: keeps its work
    },
    retry: { initialDelayMs: 1000 },
  });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [["A-1", 0], ["A-1", 1], ["Held-1", 0]]));
  await sleep(5);
  // Purging runs as batches arrive: the next one forgets A-1 but not Held-1, which has work.
  await writer.write(batchOf(2, [["B-1", 0]]));
  await sleep(5);
  assert.equal(sink.stats().counters.purgedStreams, 1);
  assert.equal(sink.stats().states.buffered.streams, 1, "Held-1 keeps its work");
  // A-1 was forgotten: its next event starts it afresh.
  await writer.write(batchOf(3, [["A-1", 2]]));
  await sleep(5);
  assert.deepEqual(seen, ["A-1@0", "A-1@1", "Held-1@0", "B-1@0", "A-1@2"]);
  await sink.stop();
});

test("the oldest unfinished batch is dispatched first: its streams run before later batches'", async () => {
  const order: string[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxConcurrentStreams: 1,
    maxReadAhead: 10,
    handler: async (stream, events) => {
      order.push(`${stream}@${events.map((e) => e.index).join(",")}`);
      await sleep(1);
    },
  });
  const writer = sink.writable.getWriter();
  // Batch 1 holds B-1 and C-1; later batches bring new streams first, then more of B and C.
  await writer.write(batchOf(1, [["A-1", 0], ["B-1", 0], ["C-1", 0]]));
  await writer.write(batchOf(2, [["D-1", 0], ["E-1", 0], ["B-1", 1]]));
  await writer.write(batchOf(3, [["F-1", 0], ["C-1", 1]]));
  await sleep(50);
  // A-1 started at once; then batch 1's B-1 and C-1 before batch 2's D-1, E-1 and batch 3's F-1.
  assert.deepEqual(order.slice(0, 3).map((s) => s.split("@")[0]), ["A-1", "B-1", "C-1"]);
  const completed: bigint[] = [];
  await sink.stop();
  completed.push(sink.stats().tranches[0].completed!);
  assert.deepEqual(completed, [3n]);
});

test("a slow handler's call reaches only a little beyond what the oldest batch needs", async () => {
  const spans: number[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxReadAhead: 20,
    handler: async (_stream, events) => {
      spans.push(events.length);
      await sleep(40 * events.length); // 40 ms per event
    },
  });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [["Warm-1", 0]])); // measures the handler's pace
  await sleep(60);
  for (let b = 0; b < 10; b++) await writer.write(batchOf(b + 2, [["Slow-1", b]]));
  const started = Date.now();
  while (sink.stats().tranches[0].completed! < 2n && Date.now() - started < 2000) await sleep(5);
  const waited = Date.now() - started;
  // Without the bound the first call would take all 10 events (400 ms) before batch 2 completes.
  assert.ok(spans[1] <= 4, `the first call on Slow-1 took ${spans[1]} events`);
  assert.ok(waited < 300, `batch 2 completed after ${waited} ms`);
  await sink.stop();
});

test("a fast handler still gets whole backlogs per call", async () => {
  const spans: number[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxReadAhead: 20,
    maxConcurrentStreams: 1,
    handler: async (stream, events) => {
      spans.push(events.length);
      if (stream === "Gate-1") await sleep(2); // 2 ms per event: a reach of 50 events
    },
  });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [["Gate-1", 0]]));
  for (let b = 0; b < 10; b++) await writer.write(batchOf(b + 2, [["Fast-1", b]]));
  await sleep(60);
  assert.deepEqual(spans, [1, 10]);
  await sink.stop();
});

test("calls that end together share one dispatch; quick calls never wait for a timer", async () => {
  let running = 0, most = 0, calls = 0, progress = 0;
  const scheduler = createScheduler({
    maxConcurrentStreams: 64,
    handler: async () => {
      most = Math.max(most, ++running);
      calls++;
      await Promise.resolve();
      running--;
    },
  }, {
    onProgress: () => void progress++,
    onFault: (error) => {
      throw error;
    },
    onHandlerError() {},
  });
  scheduler.ingest(batchOf(1, Array.from({ length: 640 }, (_, i) => [`Quick-${i}`, 0])));
  // A timer runs only once every microtask has: the calls must not have waited for one.
  const before = await new Promise<number>((resolve) => setTimeout(() => resolve(calls), 0));
  assert.equal(before, 640);
  assert.equal(scheduler.uncompleted, 0);
  assert.equal(most, 64, "never more calls at once than maxConcurrentStreams");
  // One dispatch (and one progress report) per 64 calls that ended in the same microtask run,
  // not one per call.
  assert.ok(progress <= 640 / 64 + 1, `${progress} progress reports for 640 calls`);
  scheduler.stop();
});
