// The generic feed source over readPage(tranche, position): several tranches, tail sleeping and
// wake-ups, retries of failed reads, checkpoints per tranche, and typed errors. The pages come
// from an in-test log per tranche; a failing readPage is a deliberate fault.
import assert from "node:assert/strict";
import {
  type BatchItem,
  InvalidArgumentError,
  run,
  type StreamEvent,
  streamsSink,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import {
  feedSource,
  type FeedSourceOptions,
  type Page,
  type ReadPage,
} from "../../sources/feed.ts";
import { handleToTail, test } from "../support/core.ts";

/** Per-tranche logs that readPage pages through, `pageSize` items at a time. */
function createFeed(pageSize = 3) {
  const logs = new Map<string, BatchItem[]>();
  const versions = new Map<string, number>();
  const reads: Array<{ tranche: string; position: bigint | undefined; at: number }> = [];
  const append = (tranche: string, stream: string, count = 1) => {
    let log = logs.get(tranche);
    if (!log) logs.set(tranche, log = []);
    for (let k = 0; k < count; k++) {
      const index = versions.get(stream) ?? 0;
      versions.set(stream, index + 1);
      const event: StreamEvent = {
        index,
        type: "T",
        data: null,
        meta: null,
        id: `${stream}@${index}`,
        time: new Date(0),
        size: 1,
      };
      log.push({ stream, event });
    }
  };
  const readPage: ReadPage = (tranche, position) => {
    reads.push({ tranche, position, at: performance.now() });
    const log = logs.get(tranche) ?? [];
    const from = Number(position ?? 0n);
    const items = log.slice(from, from + pageSize);
    const next = from + items.length;
    return Promise.resolve({ items, next: BigInt(next), isTail: next >= log.length });
  };
  return { logs, append, readPage, reads };
}

/** Runs the source into a sink until every tranche is at its tail; returns what was handled. */
const handleAll = (options: FeedSourceOptions, seen: string[] = []): Promise<string[]> =>
  handleToTail(() => feedSource(options), {
    timeoutMs: 5000,
    sink: { commitIntervalMs: 5 },
    seen,
  });

test("feed source: several tranches are read to their tails and checkpointed each on its own", async () => {
  const feed = createFeed(3);
  for (let i = 0; i < 7; i++) feed.append("a", `A-${i % 2}`);
  for (let i = 0; i < 5; i++) feed.append("b", `B-${i % 3}`);
  const checkpoints = memoryCheckpoints();
  const seen = await handleAll({
    name: "feed",
    tranches: ["a", "b", "c"],
    readPage: feed.readPage,
    checkpoints,
    group: "g",
    tailSleepMs: 5,
  });
  const expected = [...feed.logs.values()].flat().map((i) => `${i.stream}@${i.event.index}`);
  assert.deepEqual([...seen].sort(), [...expected].sort());
  for (const stream of ["A-0", "A-1", "B-0", "B-1", "B-2"]) {
    const indexes = seen.filter((s) => s.startsWith(stream + "@")).map((s) =>
      Number(s.split("@")[1])
    );
    assert.deepEqual(indexes, [...indexes].sort((x, y) => x - y), `${stream} in order`);
  }
  const list = (await checkpoints.list("feed", "g")).map((c) => `${c.tranche}=${c.position}`)
    .sort();
  assert.deepEqual(list, ["a=7", "b=5", "c=0"]);
  // Each tranche started from the beginning and read in pages.
  assert.deepEqual(feed.reads.filter((r) => r.tranche === "a").slice(0, 3).map((r) => r.position), [
    undefined,
    3n,
    6n,
  ]);
});

test("feed source: resumes every tranche from its own checkpoint", async () => {
  const feed = createFeed(2);
  for (let i = 0; i < 4; i++) feed.append("a", "A-1");
  for (let i = 0; i < 3; i++) feed.append("b", "B-1");
  const checkpoints = memoryCheckpoints();
  const options = {
    name: "feed",
    tranches: ["a", "b"],
    readPage: feed.readPage,
    checkpoints,
    group: "g",
    tailSleepMs: 5,
  };
  await handleAll(options);
  feed.append("a", "A-1", 2);
  feed.append("b", "B-1");
  feed.reads.length = 0;
  const seen = await handleAll(options);
  assert.deepEqual(seen.sort(), ["A-1@4", "A-1@5", "B-1@3"]);
  const firstRead = (tranche: string) => feed.reads.find((r) => r.tranche === tranche)?.position;
  assert.equal(firstRead("a"), 4n);
  assert.equal(firstRead("b"), 3n);
  assert.equal(await checkpoints.load({ source: "feed", tranche: "a", group: "g" }), 6n);
  assert.equal(await checkpoints.load({ source: "feed", tranche: "b", group: "g" }), 4n);
});

test('feed source: startFrom "start" ignores the checkpoints', async () => {
  const feed = createFeed();
  feed.append("a", "A-1", 2);
  const checkpoints = memoryCheckpoints();
  await checkpoints.commit({ source: "feed", tranche: "a", group: "default" }, 2n);
  const seen = await handleAll({
    name: "feed",
    tranches: ["a"],
    readPage: feed.readPage,
    checkpoints,
    startFrom: "start",
    tailSleepMs: 5,
  });
  assert.deepEqual(seen, ["A-1@0", "A-1@1"]);
  assert.equal(feed.reads[0].position, undefined);
});

test("feed source: sleeps tailSleepMs after a read that reached the tail", async () => {
  const feed = createFeed();
  feed.append("a", "A-1");
  const tailSleepMs = 30;
  let onRead: (() => void) | undefined;
  const readPage: ReadPage = (tranche, position, signal) => {
    const page = feed.readPage(tranche, position, signal);
    onRead?.();
    return page;
  };
  const sink = streamsSink({ statsIntervalMs: 0, handler: () => {} });
  const ac = new AbortController();
  const running = run(feedSource({ name: "feed", tranches: ["a"], readPage, tailSleepMs }), sink, {
    signal: ac.signal,
  });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
    // Wait for two more reads at the tail: each must come a tail sleep after the one before.
    for (let k = 0; k < 2; k++) await new Promise<void>((resolve) => (onRead = resolve));
  } finally {
    ac.abort();
    await running;
  }
  const times = feed.reads.map((r) => r.at);
  for (let i = 1; i < times.length; i++) {
    assert.ok(
      times[i] - times[i - 1] >= tailSleepMs - 1,
      `read ${i} came ${times[i] - times[i - 1]} ms after the one before`,
    );
  }
});

test("feed source: wakeup ends the tail sleep early, and stop ends it at once", async () => {
  const feed = createFeed();
  feed.append("a", "A-1");
  const wakers = new Set<() => void>();
  const seen: string[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    handler: (s, events) => void seen.push(...events.map((e) => `${s}@${e.index}`)),
  });
  const ac = new AbortController();
  const source = feedSource({
    name: "feed",
    tranches: ["a"],
    readPage: feed.readPage,
    tailSleepMs: 60_000, // without a wake-up nothing new would be read in this test
    wakeup: (_tranche, signal) =>
      new Promise<void>((resolve) => {
        wakers.add(resolve);
        signal.addEventListener("abort", () => wakers.delete(resolve));
      }),
  });
  const running = run(source, sink, { signal: ac.signal });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
    const readsAtTail = feed.reads.length;
    feed.append("a", "A-1");
    for (const wake of wakers) wake();
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
    assert.deepEqual(seen, ["A-1@0", "A-1@1"]);
    assert.ok(feed.reads.length - readsAtTail <= 2, "the reader slept instead of polling");
  } finally {
    ac.abort();
    await running; // a 60 s sleep left running would fail the timer sanitizer
  }
  assert.equal(wakers.size, 0, "the wake-up's signal was aborted when the sleep ended");
});

test("feed source: a failing readPage is retried from the same position", async () => {
  const feed = createFeed(2);
  feed.append("a", "A-1", 3);
  feed.append("b", "B-1", 3);
  let failuresLeft = 3;
  const attempts: Array<bigint | undefined> = [];
  const readPage: ReadPage = (tranche, position, signal) => {
    if (tranche === "b") {
      attempts.push(position);
      if (position === 2n && failuresLeft-- > 0) {
        return Promise.reject(new Error("connection reset"));
      }
    }
    return feed.readPage(tranche, position, signal);
  };
  const seen = await handleAll({
    name: "feed",
    tranches: ["a", "b"],
    readPage,
    tailSleepMs: 5,
    retry: { initialDelayMs: 1, maxDelayMs: 2, jitter: 0 },
  });
  assert.deepEqual(seen.filter((s) => s.startsWith("B-1")), ["B-1@0", "B-1@1", "B-1@2"]);
  assert.deepEqual(seen.filter((s) => s.startsWith("A-1")), ["A-1@0", "A-1@1", "A-1@2"]);
  assert.deepEqual(
    attempts.slice(0, 5),
    [undefined, 2n, 2n, 2n, 2n],
    "three failures, then success, at 2",
  );
});

test("feed source: a malformed page fails run() with a typed error and stops every tranche", async () => {
  const signals = new Map<string, AbortSignal>();
  let goodReads = 0;
  const readPage: ReadPage = async (tranche, position, signal) => {
    signals.set(tranche, signal);
    if (tranche === "bad") {
      // Late enough that the good tranche has read its tail and is sleeping.
      await new Promise((r) => setTimeout(r, 5));
      return { items: [], next: 1 } as unknown as Page;
    }
    goodReads++;
    return { items: [], next: position ?? 0n, isTail: true };
  };
  const sink = streamsSink({ statsIntervalMs: 0, handler: () => {} });
  await assert.rejects(
    run(feedSource({ name: "feed", tranches: ["good", "bad"], readPage, tailSleepMs: 50 }), sink),
    (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${err}`);
      assert.match(err.message, /readPage\(bad\)/);
      return true;
    },
  );
  assert.ok(goodReads >= 1);
  // Left running, the good tranche's reader would wake from its tail sleep and read on after
  // the pipeline has failed (and its sleep timer would trip the sanitizer).
  assert.equal(signals.get("good")?.aborted, true, "the other tranche's reader was stopped");
});

test("feed source: stopping aborts a read in flight", async () => {
  let readStarted!: () => void;
  const started = new Promise<void>((r) => (readStarted = r));
  let sawAbort = false;
  const readPage: ReadPage = (_tranche, _position, signal) =>
    new Promise((_, reject) => {
      readStarted();
      signal.addEventListener("abort", () => {
        sawAbort = true;
        reject(signal.reason);
      });
    });
  const sink = streamsSink({ statsIntervalMs: 0, handler: () => {} });
  const ac = new AbortController();
  const running = run(feedSource({ name: "feed", tranches: ["a"], readPage }), sink, {
    signal: ac.signal,
  });
  await started;
  ac.abort();
  await running;
  assert.equal(sawAbort, true);
});

test("feed source: invalid options are typed errors", () => {
  const readPage: ReadPage = () => Promise.resolve({ items: [], next: 0n, isTail: true });
  const base: FeedSourceOptions = { name: "feed", tranches: ["a"], readPage };
  const cases: Array<[string, Partial<Record<keyof FeedSourceOptions, unknown>>]> = [
    ["name", { name: "" }],
    ["name", { name: undefined }],
    ["tranches", { tranches: [] }],
    ["tranches", { tranches: "a" }],
    ["tranches", { tranches: ["a", ""] }],
    ["tranches", { tranches: ["a", "a"] }],
    ["readPage", { readPage: undefined }],
    ["tailSleepMs", { tailSleepMs: -1 }],
    ["startFrom", { startFrom: "tail" }],
    ["retry.jitter", { retry: { jitter: 5 } }],
  ];
  for (const [field, override] of cases) {
    assert.throws(
      () => feedSource({ ...base, ...override } as FeedSourceOptions),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError, `${JSON.stringify(override)}: ${err}`);
        assert.equal(err.field, field);
        return true;
      },
    );
  }
});
