// Read-ahead backpressure, backlog batching, and what the handler's returned index does to the
// events buffered behind it.
import assert from "node:assert/strict";
import { type Batch, run, type StreamsSink, streamsSink } from "../../mod.ts";
import { feedSource } from "../../sources/feed.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../../sources/memory.ts";
import { batchBuilder, ev, gate, sleep, test } from "../support/core.ts";

const batch = batchBuilder({ isTail: false });

type Call = { stream: string; indexes: number[] };
const indexesOf = (calls: Call[], stream: string) =>
  calls.filter((c) => c.stream === stream).map((c) => c.indexes);

test("maxReadAhead holds a feed source back while a handler is blocked", async () => {
  const maxReadAhead = 4;
  const pages = 60;
  let produced = 0;
  let worst = 0;
  let producedWhenReleased = -1;
  let calls = 0;
  // The sink first: the source starts reading (and counting against it) as soon as it exists.
  const sink = streamsSink({
    maxReadAhead,
    statsIntervalMs: 0,
    handler: async () => {
      if (calls++ === 0) {
        await sleep(50); // deliberately slow: the reader has time to run ahead if nothing stops it
        producedWhenReleased = produced;
      }
    },
  });
  const source = feedSource({
    name: "numbers",
    tranches: ["0"],
    tailSleepMs: 5,
    readPage: (_tranche, position) => {
      const from = Number(position ?? 0n);
      if (from >= pages) return Promise.resolve({ items: [], next: BigInt(from), isTail: true });
      produced++;
      worst = Math.max(worst, produced - sink.stats().counters.batchesCompleted);
      // Every page holds the next event of one stream, so nothing completes while it is blocked.
      return Promise.resolve({
        items: [{ stream: "A-1", event: ev(from) }],
        next: BigInt(from + 1),
        isTail: false,
      });
    },
  });
  const ac = new AbortController();
  const running = run(source, sink, { signal: ac.signal });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  } finally {
    ac.abort();
    await running;
  }
  // Produced but not complete: up to maxReadAhead batches in the scheduler (a write waits once
  // that many are uncompleted), one held by pipeTo waiting for the writer to be ready, one in the
  // source stream's queue (highWaterMark 1), and one page read by the tranche's reader, waiting
  // for queue space. Hence maxReadAhead + 3 for one tranche.
  const bound = maxReadAhead + 3;
  assert.ok(
    producedWhenReleased <= bound,
    `${producedWhenReleased} pages read while the handler was blocked, bound ${bound}`,
  );
  assert.ok(worst <= bound, `at worst ${worst} batches produced and not complete, bound ${bound}`);
  assert.ok(producedWhenReleased >= maxReadAhead, "the reader did run ahead up to the limit");
  assert.equal(sink.stats().counters.handled, pages);
});

test("maxReadAhead holds a memory source back while a handler is blocked", async () => {
  const maxReadAhead = 3;
  const store = createMemoryStore();
  for (let i = 0; i < 40; i++) await store.append("A-1", [{ type: "T", data: i }], i);
  let produced = 0;
  let worst = 0;
  // Counts the batches the source reads, by its calls to readLog (one per batch).
  const counted: MemoryStore = Object.assign(Object.create(store), {
    readLog(from: number, to: number) {
      produced++;
      worst = Math.max(worst, produced - sink.stats().counters.batchesCompleted);
      return store.readLog(from, to);
    },
  });
  let producedWhenReleased = -1;
  let calls = 0;
  const sink: StreamsSink = streamsSink({
    maxReadAhead,
    statsIntervalMs: 0,
    handler: async () => {
      if (calls++ === 0) {
        await sleep(50);
        producedWhenReleased = produced;
      }
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: counted, maxBatchSize: 1 }), sink, {
    signal: ac.signal,
  });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  } finally {
    ac.abort();
    await running;
  }
  // maxReadAhead in the scheduler, one held by pipeTo, one in the stream's queue (highWaterMark 1);
  // the memory source reads only when asked to fill the queue.
  const bound = maxReadAhead + 2;
  assert.ok(
    producedWhenReleased <= bound,
    `${producedWhenReleased} batches read while blocked, bound ${bound}`,
  );
  assert.ok(worst <= bound, `at worst ${worst} batches produced and not complete, bound ${bound}`);
  assert.equal(sink.stats().counters.handled, 40);
});

test("backlog batching: a released stream gets every buffered contiguous event in one call", async (t) => {
  async function blockedThenReleased(
    options: { maxEventsPerCall?: number; maxBytesPerCall?: number },
    batches: Batch[],
  ) {
    const calls: Call[] = [];
    const release = gate();
    const sink = streamsSink({
      ...options,
      maxReadAhead: 16,
      statsIntervalMs: 0,
      handler: async (stream, events) => {
        calls.push({ stream, indexes: events.map((e) => e.index) });
        if (stream === "A-1" && events[0].index === 0) await release.opened;
      },
    });
    const writer = sink.writable.getWriter();
    for (const b of batches) await writer.write(b); // each write resolves once the batch is ingested
    const whileBlocked = calls.map((c) => ({ ...c }));
    release.open();
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
    await writer.close();
    return { calls, whileBlocked };
  }

  await t.step(
    "all buffered events of the blocked stream, across batches, in one call",
    async () => {
      const { calls, whileBlocked } = await blockedThenReleased({}, [
        batch(1, [["A-1", 0]]),
        batch(2, [["A-1", 1], ["A-1", 2], ["B-1", 0]]),
        batch(3, [["A-1", 3]]),
        batch(4, [["B-1", 1], ["A-1", 4], ["A-1", 5]]),
        batch(5, [["A-1", 6]], true),
      ]);
      assert.deepEqual(indexesOf(whileBlocked, "A-1"), [[0]], "one call in flight for A-1");
      assert.deepEqual(indexesOf(whileBlocked, "B-1").flat(), [0, 1], "B-1 carried on meanwhile");
      assert.deepEqual(indexesOf(calls, "A-1"), [[0], [1, 2, 3, 4, 5, 6]]);
    },
  );

  await t.step("bounded by maxEventsPerCall", async () => {
    const { calls } = await blockedThenReleased({ maxEventsPerCall: 4 }, [
      batch(1, [["A-1", 0]]),
      batch(2, [["A-1", 1], ["A-1", 2], ["A-1", 3]]),
      batch(3, [["A-1", 4], ["A-1", 5], ["A-1", 6]]),
      batch(4, [["A-1", 7], ["A-1", 8], ["A-1", 9]], true),
    ]);
    assert.deepEqual(indexesOf(calls, "A-1"), [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]);
  });

  await t.step("bounded by maxBytesPerCall; one event always goes, however large", async () => {
    const sized = (position: number, items: Array<[number, number]>, isTail = false): Batch => ({
      tranche: "0",
      position: BigInt(position),
      isTail,
      items: items.map(([i, size]) => ({ stream: "A-1", event: ev(i, size) })),
    });
    const { calls } = await blockedThenReleased({ maxBytesPerCall: 25 }, [
      sized(1, [[0, 10]]),
      sized(2, [[1, 10], [2, 10], [3, 10]]),
      sized(3, [[4, 100], [5, 10]]),
      sized(4, [[6, 10], [7, 10]], true),
    ]);
    assert.deepEqual(indexesOf(calls, "A-1"), [[0], [1, 2], [3], [4], [5, 6], [7]]);
  });

  await t.step("stops at a gap and resumes when it is filled", async () => {
    const { calls } = await blockedThenReleased({}, [
      batch(1, [["A-1", 0]]),
      batch(2, [["A-1", 1], ["A-1", 3], ["A-1", 4]]),
      batch(3, [["A-1", 2]], true),
    ]);
    // By release time 2 has arrived, so the backlog is contiguous again.
    assert.deepEqual(indexesOf(calls, "A-1"), [[0], [1, 2, 3, 4]]);
  });
});

test("a handler result below the span's end leaves the rest queued; the batch waits for it", async () => {
  const calls: Call[] = [];
  const completedSeen: Array<bigint | undefined> = [];
  const commits: bigint[] = [];
  const sink: StreamsSink = streamsSink({
    statsIntervalMs: 0,
    commitIntervalMs: 1,
    handler: (stream, events) => {
      calls.push({ stream, indexes: events.map((e) => e.index) });
      completedSeen.push(sink.stats().tranches[0].completed);
      if (calls.length === 1) return 2;
    },
  });
  const writer = sink.writable.getWriter();
  await writer.write({
    ...batch(1, [["A-1", 0], ["A-1", 1], ["A-1", 2], ["A-1", 3], ["A-1", 4]], true),
    commit: (p) => Promise.resolve(void commits.push(p)),
  });
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
  assert.deepEqual(indexesOf(calls, "A-1"), [[0, 1, 2, 3, 4], [2, 3, 4]]);
  assert.deepEqual(
    completedSeen,
    [undefined, undefined],
    "the batch was not complete while 2..4 were queued",
  );
  assert.equal(sink.stats().counters.handled, 5);
  await writer.close();
  assert.deepEqual(commits, [1n]);
});

test("a handler that makes no progress is retried after a backoff and shows as stuck meanwhile", async () => {
  const calls: Call[] = [];
  let stuckSeen: string[] = [];
  const sink: StreamsSink = streamsSink({
    statsIntervalMs: 0,
    stuckAfterMs: 3,
    retry: { initialDelayMs: 6, maxDelayMs: 6, jitter: 0 },
    handler: (stream, events) => {
      calls.push({ stream, indexes: events.map((e) => e.index) });
      if (calls.length === 1) return events[0].index; // "not yet": e.g. waiting on something outside
      stuckSeen = sink.stats().stuck.map((s) => s.stream);
    },
  });
  const writer = sink.writable.getWriter();
  const t0 = performance.now();
  await writer.write(batch(1, [["A-1", 0], ["A-1", 1]], true));
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
  assert.ok(performance.now() - t0 >= 5, "the retry waited for the backoff");
  assert.deepEqual(indexesOf(calls, "A-1"), [[0, 1], [0, 1]]);
  assert.deepEqual(stuckSeen, ["A-1"]);
  assert.deepEqual(sink.stats().stuck, [], "no longer stuck once it progressed");
  await writer.close();
});

test("a stalled stream whose retry runs long is listed once among the stuck streams", async () => {
  let stuckSeen: string[] = [];
  let calls = 0;
  const sink: StreamsSink = streamsSink({
    statsIntervalMs: 0,
    stuckAfterMs: 3,
    retry: { initialDelayMs: 1, maxDelayMs: 1, jitter: 0 },
    handler: async (_stream, events) => {
      if (calls++ === 0) return events[0].index; // no progress: stalled
      await sleep(10); // the retry is busy past stuckAfterMs
      stuckSeen = sink.stats().stuck.map((s) => s.stream);
    },
  });
  const writer = sink.writable.getWriter();
  await writer.write(batch(1, [["A-1", 0]], true));
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
  assert.deepEqual(stuckSeen, ["A-1"], "one stream, one entry");
  await writer.close();
});

test("a handler result beyond the span drops buffered events below it, and later arrivals too", async () => {
  const calls: Call[] = [];
  const release = gate();
  const commits: bigint[] = [];
  const commit = (p: bigint) => Promise.resolve(void commits.push(p));
  const sink = streamsSink({
    statsIntervalMs: 0,
    handler: async (stream, events) => {
      calls.push({ stream, indexes: events.map((e) => e.index) });
      if (calls.length === 1) {
        await release.opened;
        return 4; // the stream is known to be at 4 already
      }
    },
  });
  const writer = sink.writable.getWriter();
  await writer.write({ ...batch(1, [["A-1", 0]]), commit });
  await writer.write({
    ...batch(2, [["A-1", 1], ["A-1", 2], ["A-1", 3], ["A-1", 4], ["A-1", 5]]),
    commit,
  });
  release.open();
  await sink.monitor.awaitCompletion({ timeoutMs: 2000 });
  assert.deepEqual(indexesOf(calls, "A-1"), [[0], [4, 5]]);
  const duplicatesBefore = sink.stats().counters.duplicates;
  // Redelivery of events below the write position: discarded, and their batch completes.
  await writer.write({ ...batch(3, [["A-1", 2], ["A-1", 3], ["A-1", 6]], true), commit });
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
  assert.deepEqual(indexesOf(calls, "A-1"), [[0], [4, 5], [6]]);
  assert.equal(sink.stats().counters.duplicates - duplicatesBefore, 2);
  await writer.close();
  assert.equal(commits.at(-1), 3n);
});

test("a result far beyond everything buffered completes every batch below it", async () => {
  const calls: Call[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    handler: (stream, events) => {
      calls.push({ stream, indexes: events.map((e) => e.index) });
      if (calls.length === 1) return 100;
    },
  });
  const writer = sink.writable.getWriter();
  await writer.write(batch(1, [["A-1", 0], ["A-1", 1]]));
  await writer.write(batch(2, [["A-1", 2], ["A-1", 99]]));
  await writer.write(batch(3, [["A-1", 100]], true));
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
  assert.deepEqual(indexesOf(calls, "A-1"), [[0, 1], [100]]);
  assert.equal(sink.stats().uncompletedBatches, 0);
  await writer.close();
});

test("a stream waiting on a gap that only a later batch fills shows as stuck, not a silent stall", async () => {
  // With the read-ahead full, the batch that would fill the gap can never be written: the
  // pipeline cannot progress, and the design asks that this be visible rather than silent.
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxReadAhead: 1,
    stuckAfterMs: 10,
    handler: () => {},
  });
  const writer = sink.writable.getWriter();
  try {
    await writer.write(batch(1, [["A-1", 0]]));
    const blocked = writer.write(batch(2, [["A-1", 5]])); // 1..4 come in batch 3
    blocked.catch(() => {});
    await sleep(30); // past stuckAfterMs
    const stats = sink.stats();
    assert.equal(stats.uncompletedBatches, 1);
    assert.deepEqual(stats.stuck.map((s) => s.stream), ["A-1"], "the gapped stream shows as stuck");
  } finally {
    await sink.stop();
    await writer.abort().catch(() => {});
  }
});
