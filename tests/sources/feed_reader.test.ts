// The paged reader's features beyond a plain feed: tranches found while running (readTranches),
// pages split into batches by per-item positions, starting at the tail and refusing a checkpoint
// past it, and problems() while reads keep failing. Pages come from in-test logs; a failing
// readPage is a deliberate fault.
import assert from "node:assert/strict";
import { type Batch, type BatchItem, InvalidArgumentError, run, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { CheckpointPastTailError, feedSource, type ReadPage } from "../../sources/feed.ts";
import { ev, test as sanitizedTest } from "../support/core.ts";
import { readBatches, waitFor } from "./read_batches.ts";

const test = (name: string, fn: () => Promise<void>) => sanitizedTest(`feed reader: ${name}`, fn);
const item = (stream: string, index: number): BatchItem => ({ stream, event: ev(index) });

/** Logs per tranche; positions are log offsets, so item k's position after it is k + 1. */
function logs() {
  const byTranche = new Map<string, BatchItem[]>();
  const append = (tranche: string, stream: string, count: number) => {
    const log = byTranche.get(tranche) ?? [];
    byTranche.set(tranche, log);
    const base = log.filter((i) => i.stream === stream).length;
    for (let k = 0; k < count; k++) log.push(item(stream, base + k));
  };
  const readPage = (pageSize: number, withPositions: boolean): ReadPage => (tranche, position) => {
    const log = byTranche.get(tranche) ?? [];
    const from = Number(position ?? 0n);
    const items = log.slice(from, from + pageSize);
    const next = from + items.length;
    const positions = items.map((_, k) => BigInt(from + k + 1));
    return Promise.resolve({
      items,
      next: BigInt(next),
      isTail: next >= log.length,
      ...(withPositions ? { positions } : {}),
    });
  };
  return { byTranche, append, readPage };
}

test("tranches that readTranches finds later are read too, each announced first", async () => {
  const feed = logs();
  feed.append("a", "A-1", 2);
  const known = ["a"];
  let listings = 0;
  const source = feedSource({
    name: "f",
    readTranches: () => {
      listings++;
      return Promise.resolve([...known]);
    },
    tranchesRefreshMs: 10,
    tailSleepMs: 5,
    readPage: feed.readPage(10, false),
  });
  const batches = await readBatches(source, (bs) => {
    if (bs.some((b) => b.tranche === "a" && b.isTail) && known.length === 1) {
      feed.append("b", "B-1", 3); // a tranche appears while the source runs
      known.push("b");
    }
    return bs.some((b) => b.tranche === "b" && b.isTail);
  });
  const b = batches.filter((x) => x.tranche === "b");
  assert.deepEqual(
    [b[0].items.length, b[0].isTail, b[0].commit],
    [0, false, undefined],
    "announced before its first read",
  );
  assert.deepEqual(b.flatMap((x) => x.items.map((i) => `${i.stream}/${i.event.index}`)), [
    "B-1/0",
    "B-1/1",
    "B-1/2",
  ]);
  assert.equal(
    batches.filter((x) => x.tranche === "a" && x.items.length === 0 && !x.isTail).length,
    1,
  );
  assert.ok(listings >= 2, `readTranches was called again (${listings} times)`);
});

test("readTranches returning something other than names fails the source with a typed error", async () => {
  const source = feedSource({
    name: "f",
    readTranches: () => Promise.resolve(["ok", ""]),
    readPage: () => Promise.resolve({ items: [], next: 0n, isTail: true }),
  });
  const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
  await assert.rejects(run(source, sink), (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError, String(e));
    assert.match(e.message, /readTranches\(\) of f/);
    return true;
  });
});

test("with per-item positions a page goes out as batches of maxBatchItems, each checkpointing after its last item", async () => {
  const feed = logs();
  for (let s = 0; s < 5; s++) feed.append("a", `S-${s}`, 5); // 25 items
  const batches = await readBatches(
    feedSource({
      name: "f",
      tranches: ["a"],
      readPage: feed.readPage(25, true),
      maxBatchItems: 10,
      checkpoints: memoryCheckpoints(),
    }),
    (bs) => bs.at(-1)?.isTail === true,
  );
  const reads = batches.slice(1); // after the announcement
  assert.deepEqual(reads.map((b) => [b.items.length, b.position, b.isTail]), [
    [10, 10n, false],
    [10, 20n, false],
    [5, 25n, true],
  ]);
  // the read's time is counted once, on its first batch
  assert.deepEqual(reads.map((b) => typeof b.readMs), ["number", "undefined", "undefined"]);
  assert.ok(reads.every((b) => typeof b.commit === "function"));
  // without positions the page cannot be cut: one batch
  const whole = await readBatches(
    feedSource({
      name: "f",
      tranches: ["a"],
      readPage: feed.readPage(25, false),
      maxBatchItems: 10,
    }),
    (bs) => bs.at(-1)?.isTail === true,
  );
  assert.deepEqual(whole.slice(1).map((b) => b.items.length), [25]);
});

test("a handler of 20 ms per event completes and commits the first small batch long before the page", async () => {
  const feed = logs();
  for (let s = 0; s < 40; s++) feed.append("a", `S-${s}`, 1);
  const checkpoints = memoryCheckpoints();
  const key = { source: "f", tranche: "a", group: "default" };
  const sink = streamsSink({
    handler: (_s, events) => new Promise((r) => setTimeout(r, 20 * events.length)),
    maxConcurrentStreams: 4,
    commitIntervalMs: 10,
    statsIntervalMs: 0,
  });
  const ac = new AbortController();
  const running = run(
    feedSource({
      name: "f",
      tranches: ["a"],
      readPage: feed.readPage(40, true),
      maxBatchItems: 4,
      checkpoints,
      tailSleepMs: 50,
    }),
    sink,
    { signal: ac.signal },
  );
  try {
    // 40 events at 4 concurrent 20 ms calls take about 200 ms; the first batch of 4 about 20 ms.
    let first: bigint | undefined;
    const commits = setInterval(async () => first ??= await checkpoints.load(key), 2);
    try {
      await waitFor("a first commit", () => first !== undefined, 3000);
    } finally {
      clearInterval(commits);
    }
    assert.ok(first! < 40n, `a partial checkpoint was committed (${first})`);
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  } finally {
    ac.abort();
    await running;
  }
  assert.equal(await checkpoints.load(key), 40n);
});

test('startFrom "tail" needs readTail; with it the tail position is committed at once', async () => {
  const feed = logs();
  feed.append("a", "A-1", 3);
  for (const field of ["startFrom", "whenNoCheckpoint"] as const) {
    assert.throws(
      () =>
        feedSource({
          name: "f",
          tranches: ["a"],
          readPage: feed.readPage(10, false),
          [field]: "tail",
        }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === field,
    );
  }
  const readTail = (tranche: string) =>
    Promise.resolve(BigInt(feed.byTranche.get(tranche)?.length ?? 0));
  const checkpoints = memoryCheckpoints();
  const reader = feedSource({
    name: "f",
    tranches: ["a"],
    readPage: feed.readPage(10, false),
    readTail,
    checkpoints,
    whenNoCheckpoint: "tail",
    tailSleepMs: 5,
  }).getReader();
  try {
    const first = (await reader.read()).value!;
    assert.deepEqual([first.items.length, first.position, first.isTail], [0, 3n, true]);
    await first.commit!(first.position);
    feed.append("a", "A-1", 1);
    let next: Batch;
    do next = (await reader.read()).value!; while (next.items.length === 0);
    assert.deepEqual(next.items.map((i) => i.event.index), [3], "only what came after the tail");
  } finally {
    await reader.cancel();
  }
});

test("a checkpoint beyond the tail is refused at start, or read from with a warning", async () => {
  const feed = logs();
  feed.append("a", "A-1", 3);
  const checkpoints = memoryCheckpoints();
  await checkpoints.commit({ source: "f", tranche: "a", group: "default" }, 53n);
  const options = {
    name: "f",
    tranches: ["a"],
    readPage: feed.readPage(10, false),
    readTail: () => Promise.resolve(3n),
    checkpoints,
  };
  const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
  await assert.rejects(run(feedSource(options), sink), (e: unknown) => {
    assert.ok(e instanceof CheckpointPastTailError, String(e));
    assert.deepEqual([e.tranche, e.checkpoint, e.tail], ["a", 53n, 3n]);
    return true;
  });
  const batches = await readBatches(
    feedSource({ ...options, checkpointPastTail: "warn" }),
    (bs) => bs.length >= 1,
  );
  assert.equal(batches[0].position, 53n, "read from the checkpoint as asked");
});

test("problems() shows a tranche whose reads keep failing, and clears once they succeed", async () => {
  let failing = true;
  let failures = 0;
  const readPage: ReadPage = (_tranche, position) => {
    if (failing) {
      failures++;
      return Promise.reject(new Error("connection refused"));
    }
    return Promise.resolve({ items: [], next: position ?? 0n, isTail: true });
  };
  const source = feedSource({
    name: "f",
    tranches: ["a", "b"],
    readPage: (t, p, s) =>
      t === "a" ? readPage(t, p, s) : Promise.resolve({ items: [], next: 0n, isTail: true }),
    retry: { initialDelayMs: 2, maxDelayMs: 5 },
    tailSleepMs: 5,
  });
  const reader = source.getReader();
  try {
    const pump = (async () => {
      for (;;) if ((await reader.read()).done) return;
    })();
    await waitFor("reads retried", () => failures >= 3);
    const problems = source.problems!();
    assert.equal(problems.length, 1);
    assert.equal(problems[0].tranche, "a");
    assert.equal(problems[0].severity, "degraded");
    assert.match(
      problems[0].reason,
      /read from the start of f\/a failing \(\d+ attempts\): Error: connection refused/,
    );
    failing = false;
    await waitFor("the problem cleared", () => source.problems!().length === 0);
    await reader.cancel();
    await pump;
  } finally {
    await reader.cancel();
  }
});
