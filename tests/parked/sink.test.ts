// The park policy in the streams sink, against the memory park store: a poison stream parks
// whole and in order while others carry on, stays parked across a restart, is released (its
// events replayed in order, arrivals behind them) or skipped (reason recorded), and a failing
// store keeps the stream failing rather than dropping anything.
import assert from "node:assert/strict";
import {
  createOwnership,
  type FailurePolicy,
  InvalidArgumentError,
  type Ownership,
  type ParkStore,
  run,
  type StreamEvent,
  type StreamsSink,
  streamsSink,
  type StreamsSinkOptions,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../../sources/memory.ts";
import { batchBuilder, ev, KEY, test } from "../support/core.ts";

const quiet = { statsIntervalMs: 0, commitIntervalMs: 5, retry: { initialDelayMs: 1 } } as const;

/** Waits until `cond` holds, checking every few ms; fails after `ms`. */
async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A handler log: each call's start and end, to check order and overlap per stream. */
function recorder(poison: (stream: string, e: StreamEvent) => boolean) {
  const calls: Array<{ stream: string; indexes: number[]; ok: boolean }> = [];
  const running = new Set<string>();
  const overlaps: string[] = [];
  const handled = new Map<string, number[]>();
  const handler = async (stream: string, events: readonly StreamEvent[]) => {
    if (running.has(stream)) overlaps.push(stream);
    running.add(stream);
    try {
      await Promise.resolve();
      const bad = events.findIndex((e) => poison(stream, e));
      calls.push({ stream, indexes: events.map((e) => e.index), ok: bad < 0 });
      if (bad === 0) throw new Error(`poison ${stream}@${events[0].index}`);
      const done = bad < 0 ? events : events.slice(0, bad);
      handled.set(stream, [...(handled.get(stream) ?? []), ...done.map((e) => e.index)]);
      return bad < 0 ? undefined : events[bad].index;
    } finally {
      running.delete(stream);
    }
  };
  return { handler, calls, overlaps, handled };
}

async function appendEach(store: MemoryStore, streams: string[], count: number, from = 0) {
  for (const stream of streams) {
    const events = Array.from({ length: count }, (_, i) => ({ type: "T", data: from + i }));
    await store.append(stream, events, from);
  }
}

interface Running {
  sink: StreamsSink;
  stop(): Promise<void>;
}

function start(
  store: MemoryStore,
  checkpoints: ReturnType<typeof memoryCheckpoints>,
  options: Partial<StreamsSinkOptions> & Pick<StreamsSinkOptions, "handler">,
): Running {
  const sink = streamsSink({ ...quiet, group: "g", ...options });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "g" }), sink, {
    signal: ac.signal,
  });
  return {
    sink,
    async stop() {
      ac.abort();
      await running;
    },
  };
}

const parkAfter = (store: ParkStore, maxAttempts = 3): FailurePolicy => ({
  kind: "park",
  maxAttempts,
  store,
  pollMs: 10,
});

test("a poison stream parks whole after N attempts, in order, while 100 others finish; the checkpoint passes it", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const parked = memoryParkStore();
  const others = Array.from({ length: 100 }, (_, i) => `Order-${i}`);
  await appendEach(store, ["Pay-X"], 3);
  await appendEach(store, others, 5);
  const log = recorder((stream, e) => stream === "Pay-X" && e.index === 1);
  const r = start(store, checkpoints, { handler: log.handler, failure: parkAfter(parked, 3) });
  try {
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    for (const o of others) assert.deepEqual(log.handled.get(o), [0, 1, 2, 3, 4], o);
    assert.deepEqual(log.handled.get("Pay-X"), [0], "the event before the poison one is handled");
    const attempts = log.calls.filter((c) => c.stream === "Pay-X" && c.indexes[0] === 1);
    assert.equal(attempts.length, 3, "parked after 3 attempts");
    // Later events of X go to the store, not the handler.
    await store.append("Pay-X", [{ type: "T", data: 3 }, { type: "T", data: 4 }], 3);
    await appendEach(store, ["Order-0"], 1, 5);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    const entry = (await parked.get("g", "Pay-X"))!;
    assert.equal(entry.state, "parked");
    assert.equal(entry.attempts, 3);
    assert.match(entry.error, /poison Pay-X@1/);
    assert.deepEqual(
      (await parked.events("g", "Pay-X", entry.episode, 0, 100)).map((e) => e.index),
      [1, 2, 3, 4],
      "the failing span and every later event, in order",
    );
    assert.equal(log.calls.filter((c) => c.stream === "Pay-X").length, 4, "none of them handled");
    assert.deepEqual(log.handled.get("Order-0"), [0, 1, 2, 3, 4, 5]);
    await r.sink.flush();
    assert.equal(await checkpoints.load(KEY), BigInt(store.head), "the checkpoint passed X");
    const stats = r.sink.stats();
    assert.equal(stats.parked.streams, 1);
    assert.equal(stats.parked.events, 4);
    assert.equal(stats.parked.oldest[0].stream, "Pay-X");
    assert.equal(stats.parked.oldest[0].state, "parked");
    assert.equal(stats.counters.parked, 1);
    assert.equal(stats.counters.parkedEvents, 4);
    assert.deepEqual(stats.failing, [], "parked is not failing");
    assert.deepEqual(log.overlaps, []);
  } finally {
    await r.stop();
  }
});

test("parked across a restart: none of its events is handled; released, they replay in order and handling resumes", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const parked = memoryParkStore();
  let broken = true;
  await appendEach(store, ["Pay-X"], 4);
  await appendEach(store, ["Order-1"], 2);
  const first = recorder((s, e) => broken && s === "Pay-X" && e.index === 0);
  let r = start(store, checkpoints, { handler: first.handler, failure: parkAfter(parked, 2) });
  await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
  await r.stop();
  assert.equal((await parked.get("g", "Pay-X"))?.next, 4);

  // A new process: the checkpoint is past X's events, the park store says X is parked.
  const second = recorder(() => false);
  r = start(store, checkpoints, { handler: second.handler, failure: parkAfter(parked, 2) });
  try {
    await store.append("Pay-X", [{ type: "T", data: 4 }], 4);
    await appendEach(store, ["Order-1"], 1, 2);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.equal(second.handled.get("Pay-X"), undefined, "no event of X handled after restart");
    assert.deepEqual(second.handled.get("Order-1"), [2]);
    assert.equal((await parked.get("g", "Pay-X"))?.next, 5, "the new event parked behind");
    assert.equal(r.sink.stats().parked.streams, 1);

    // Released from outside (as the CLI does) while the reactor runs; arrivals queue behind.
    broken = false;
    await parked.request("g", "Pay-X", { action: "release", by: "alice" });
    await store.append("Pay-X", [{ type: "T", data: 5 }], 5);
    await until("the release", () => r.sink.stats().counters.released === 1);
    await store.append("Pay-X", [{ type: "T", data: 6 }], 6);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.deepEqual(second.handled.get("Pay-X"), [0, 1, 2, 3, 4, 5, 6], "in order, once each");
    assert.deepEqual(second.overlaps, []);
    const entry = (await parked.get("g", "Pay-X"))!;
    assert.equal(entry.state, "released");
    assert.equal(entry.resolution?.by, "alice");
    // Event 5 came while the request was pending: parked (6) or queued behind the replay (5).
    assert.ok([5, 6].includes(entry.resolution!.events), String(entry.resolution?.events));
    assert.match(entry.resolution!.appliedBy, /^g\//);
    assert.equal(r.sink.stats().parked.streams, 0);
    // Idempotent: asking again changes nothing and replays nothing.
    const again = await parked.request("g", "Pay-X", { action: "release", by: "alice" });
    assert.equal(again.state, "released");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(second.handled.get("Pay-X")!.length, 7);
  } finally {
    await r.stop();
  }
});

test("skip drops the parked events with the reason recorded; later events are handled", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const parked = memoryParkStore();
  await appendEach(store, ["Pay-X"], 3);
  const log = recorder((s, e) => s === "Pay-X" && e.index < 3);
  const r = start(store, checkpoints, { handler: log.handler, failure: parkAfter(parked, 1) });
  try {
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    await parked.request("g", "Pay-X", { action: "skip", by: "bob", reason: "test payments" });
    await until("the skip", () => r.sink.stats().counters.skipped === 1);
    await store.append("Pay-X", [{ type: "T", data: 3 }], 3);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.deepEqual(log.handled.get("Pay-X"), [3], "the skipped events never reach the handler");
    const entry = (await parked.get("g", "Pay-X"))!;
    assert.equal(entry.state, "skipped");
    assert.deepEqual(
      [entry.resolution?.by, entry.resolution?.reason, entry.resolution?.events],
      ["bob", "test payments", 3],
    );
  } finally {
    await r.stop();
  }
});

test("a park store that fails keeps the stream failing (retried, visible); nothing is dropped or passed", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  let down = true;
  const parked = memoryParkStore({
    beforeWrite: () => {
      if (down) throw new Error("park store unavailable");
    },
  });
  await appendEach(store, ["Pay-X", "Order-1"], 2);
  const log = recorder((s) => s === "Pay-X");
  const r = start(store, checkpoints, { handler: log.handler, failure: parkAfter(parked, 1) });
  try {
    await until("the store failures", () => r.sink.stats().counters.parkFailures >= 3);
    const stats = r.sink.stats();
    assert.deepEqual(stats.failing.map((f) => f.stream), ["Pay-X"]);
    assert.match(String(stats.failing[0].error), /park store unavailable/);
    assert.match(String(stats.parked.storeFailing?.error), /park store unavailable/);
    assert.equal(stats.uncompletedBatches, 1, "the batch holding X's events is not complete");
    await r.sink.flush();
    assert.equal(await checkpoints.load(KEY), undefined, "the checkpoint does not pass X");
    assert.deepEqual(log.handled.get("Order-1"), [0, 1]);
    down = false;
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    const entry = (await parked.get("g", "Pay-X"))!;
    assert.equal(entry.events, 2, "both events parked once the store is back");
    assert.equal(r.sink.stats().parked.storeFailing, undefined);
    assert.deepEqual(r.sink.stats().failing, []);
  } finally {
    await r.stop();
  }
});

test("a release that fails again parks the stream again after what it handled; arrivals stay behind", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const parked = memoryParkStore();
  let poisonAt = 0;
  await appendEach(store, ["Pay-X"], 5);
  const log = recorder((s, e) => s === "Pay-X" && e.index === poisonAt);
  const r = start(store, checkpoints, {
    handler: log.handler,
    failure: parkAfter(parked, 2),
    maxEventsPerCall: 1,
  });
  try {
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    poisonAt = 3; // the release gets past 0, 1 and 2, then fails again
    await parked.request("g", "Pay-X", { action: "release", by: "alice" });
    await until("the release to fail", async () => {
      const e = await parked.get("g", "Pay-X");
      return e?.first === 3 && e.request === undefined;
    });
    await store.append("Pay-X", [{ type: "T", data: 5 }], 5);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    const entry = (await parked.get("g", "Pay-X"))!;
    assert.equal(entry.state, "parked");
    assert.deepEqual(
      (await parked.events("g", "Pay-X", entry.episode, 0, 100)).map((e) => e.index),
      [3, 4, 5],
    );
    assert.match(entry.error, /poison Pay-X@3/);
    assert.deepEqual(log.handled.get("Pay-X"), [0, 1, 2]);
    assert.equal(r.sink.stats().parked.streams, 1);
    // Fixed: the second release replays the rest.
    poisonAt = -1;
    await parked.request("g", "Pay-X", { action: "release", by: "alice" });
    await until("the release", () => r.sink.stats().counters.released === 1);
    assert.deepEqual(log.handled.get("Pay-X"), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(log.overlaps, []);
  } finally {
    await r.stop();
  }
});

test("a release replays more events than one page, in order", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const parked = memoryParkStore();
  let broken = true;
  await store.append("Pay-X", Array.from({ length: 450 }, (_, i) => ({ type: "T", data: i })), 0);
  const log = recorder((s, e) => broken && s === "Pay-X" && e.index === 0);
  const r = start(store, checkpoints, {
    handler: log.handler,
    failure: parkAfter(parked, 1),
    maxEventsPerCall: 7,
  });
  try {
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.equal((await parked.get("g", "Pay-X"))?.events, 450);
    broken = false;
    await parked.request("g", "Pay-X", { action: "release", by: "alice" });
    await until("the release", () => r.sink.stats().counters.released === 1);
    assert.deepEqual(log.handled.get("Pay-X"), Array.from({ length: 450 }, (_, i) => i));
    assert.ok(log.calls.every((c) => c.indexes.length <= 7), "per-call limits apply to replays");
  } finally {
    await r.stop();
  }
});

test("byStream: Payment-* parks after 3 attempts while other streams retry forever", async () => {
  const store = createMemoryStore();
  const parked = memoryParkStore();
  await appendEach(store, ["Payment-1", "Order-1"], 1);
  const log = recorder(() => true);
  const r = start(store, memoryCheckpoints(), {
    handler: log.handler,
    failure: {
      kind: "byStream",
      rules: [{ match: "Payment-*", policy: { kind: "park", maxAttempts: 3, store: parked } }],
    },
  });
  try {
    await until(
      "Order-1 to retry past 6 attempts",
      () => log.calls.filter((c) => c.stream === "Order-1").length >= 6,
    );
    assert.equal(log.calls.filter((c) => c.stream === "Payment-1").length, 3);
    assert.deepEqual((await parked.list("g")).map((e) => e.stream), ["Payment-1"]);
    assert.deepEqual(r.sink.stats().failing.map((f) => f.stream), ["Order-1"]);
    assert.equal(r.sink.parkStores[0], parked);
  } finally {
    await r.stop();
  }
});

test("idle purge never forgets a parked stream", async () => {
  const store = createMemoryStore();
  const parked = memoryParkStore();
  await appendEach(store, ["Pay-X"], 1);
  const log = recorder((s) => s === "Pay-X");
  const r = start(store, memoryCheckpoints(), {
    handler: log.handler,
    failure: parkAfter(parked, 1),
    maxIdleStreams: 0,
  });
  try {
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    await appendEach(store, Array.from({ length: 50 }, (_, i) => `Order-${i}`), 1);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.ok(r.sink.stats().counters.purgedStreams >= 49);
    await store.append("Pay-X", [{ type: "T", data: 1 }], 1);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.equal(log.calls.filter((c) => c.stream === "Pay-X").length, 1, "still parked");
    assert.equal((await parked.get("g", "Pay-X"))?.events, 2);
  } finally {
    await r.stop();
  }
});

test("a permanent gap with gaps: deadLetter parks the stream from the event after the gap", async () => {
  const parked = memoryParkStore();
  const handled: number[] = [];
  const sink = streamsSink({
    ...quiet,
    group: "g",
    handler: (_s, events) => void handled.push(...events.map((e) => e.index)),
    failure: parkAfter(parked, 1),
    gaps: "deadLetter",
  });
  const batch = batchBuilder({ isTail: true });
  const writer = sink.writable.getWriter();
  await writer.write(batch(1, [["A-1", 0]]));
  await writer.write({ ...batch(2, [["A-1", 3], ["A-1", 4]]), gapsAreFinal: true });
  await sink.monitor.awaitCompletion({ timeoutMs: 5_000 });
  const entry = (await parked.get("g", "A-1"))!;
  assert.match(entry.error, /events 1 to 2 are missing/);
  assert.deepEqual(
    (await parked.events("g", "A-1", entry.episode, 0, 10)).map((e) => e.index),
    [3, 4],
  );
  assert.deepEqual(handled, [0]);
  writer.releaseLock();
  await sink.stop();
});

test("bad park configuration fails at construction, naming the entry", () => {
  const store = memoryParkStore();
  const bad = (failure: unknown, field: string, extra: Partial<StreamsSinkOptions> = {}) =>
    assert.throws(
      () => streamsSink({ handler: () => {}, failure: failure as FailurePolicy, ...extra }),
      (e) => e instanceof InvalidArgumentError && e.field === field,
      field,
    );
  bad({ kind: "park", maxAttempts: 0, store }, "failure.maxAttempts");
  bad({ kind: "park", maxAttempts: 1, store: {} }, "failure.store");
  bad({ kind: "park", maxAttempts: 1, store, pollMs: 0 }, "failure.pollMs");
  bad({ kind: "byStream", rules: [] }, "failure.rules");
  bad(
    { kind: "byStream", rules: [{ match: "", policy: { kind: "retry" } }] },
    "failure.rules[0].match",
  );
  bad(
    {
      kind: "byStream",
      rules: [
        { match: "A-*", policy: { kind: "retry" } },
        { match: "Payment-*", policy: { kind: "park", maxAttempts: 3 } },
      ],
    },
    "failure.rules[1].policy.store",
  );
  bad(
    { kind: "byStream", rules: [{ match: "*", policy: { kind: "fault", maxStuckMs: 1 } }] },
    "failure.rules[0].policy.maxStuckMs",
  );
  bad(
    { kind: "byStream", rules: [{ match: "*", policy: { kind: "byStream", rules: [] } }] },
    "failure.rules[0].policy.kind",
  );
  bad(
    { kind: "byStream", rules: [{ match: "*", policy: { kind: "nope" } }] },
    "failure.rules[0].policy.kind",
  );
  bad({ kind: "retry" }, "gaps", { gaps: "deadLetter" });
});

test("a release claimed while the stream waits to retry a failed write replays every parked event", async () => {
  // The claim is renewed (with the release's progress) while the release cannot begin yet: no
  // progress may be reported before the replay begins, or the parked events would be dropped.
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  let down = false;
  const parked = memoryParkStore({
    beforeWrite: () => {
      if (down) throw new Error("park store unavailable");
    },
  });
  let broken = true;
  await appendEach(store, ["Pay-X"], 3);
  const log = recorder((s) => broken && s === "Pay-X");
  const r = start(store, checkpoints, {
    handler: log.handler,
    failure: parkAfter(parked, 1),
    retry: { initialDelayMs: 200, maxDelayMs: 200, jitter: 0 },
  });
  try {
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    down = true;
    await store.append("Pay-X", [{ type: "T", data: 3 }], 3);
    await until("a failed write", () => r.sink.stats().counters.parkFailures >= 1);
    broken = false;
    await parked.request("g", "Pay-X", { action: "release", by: "alice" });
    await until("the claim", async () => (await parked.get("g", "Pay-X"))?.claim !== undefined);
    await new Promise((r) => setTimeout(r, 60)); // several polls renew the claim meanwhile
    assert.equal((await parked.get("g", "Pay-X"))?.first, 0, "no progress reported yet");
    down = false;
    await until("the release", () => r.sink.stats().counters.released === 1);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.deepEqual(log.handled.get("Pay-X"), [0, 1, 2, 3]);
  } finally {
    await r.stop();
  }
});

test("arrivals during a release wait until the release is recorded, then follow in order", async () => {
  const store = createMemoryStore();
  const inner = memoryParkStore();
  // A slow store (a deliberate fault): the replay's read and the resolution wait for the test.
  let fetched!: () => void, resolved!: () => void;
  const fetchGate = new Promise<void>((r) => (fetched = r));
  const resolveGate = new Promise<void>((r) => (resolved = r));
  const parked: ParkStore = {
    ...inner,
    events: async (...args) => (await fetchGate, inner.events(...args)),
    resolve: async (...args) => (await resolveGate, inner.resolve(...args)),
  };
  let broken = true;
  await appendEach(store, ["Pay-X"], 2);
  const log = recorder((s) => broken && s === "Pay-X");
  const r = start(store, memoryCheckpoints(), {
    handler: log.handler,
    failure: parkAfter(parked, 1),
  });
  try {
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    broken = false;
    await parked.request("g", "Pay-X", { action: "release", by: "alice" });
    await until(
      "the release to begin",
      () => r.sink.stats().parked.oldest[0]?.state === "releasing",
    );
    await store.append("Pay-X", [{ type: "T", data: 2 }], 2);
    await until("the arrival", () => r.sink.stats().bufferedEvents === 1);
    fetched();
    await until("the replay", () => log.handled.get("Pay-X")?.length === 2);
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(log.handled.get("Pay-X"), [0, 1], "the arrival waits for the resolution");
    resolved();
    await until("the release", () => r.sink.stats().counters.released === 1);
    await r.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.deepEqual(log.handled.get("Pay-X"), [0, 1, 2]);
    assert.deepEqual(log.calls.filter((c) => c.ok).map((c) => c.indexes), [[0, 1], [2]]);
  } finally {
    await r.stop();
  }
});

test("a tranche newly owned reads the park store again: a stream another sink parked meanwhile stays parked", async () => {
  const parked = memoryParkStore();
  const handled: string[] = [];
  const sink = streamsSink({
    ...quiet,
    group: "g",
    handler: (stream, events) => void handled.push(...events.map((e) => `${stream}@${e.index}`)),
    failure: parkAfter(parked, 3),
  });
  const writer = sink.writable.getWriter();
  const at = (position: number, items: Array<[string, number]>, ownership: Ownership) => ({
    ...batchBuilder({ isTail: true })(position, items),
    ownership,
  });
  try {
    const first = createOwnership("0");
    await writer.write(at(1, [["Pay-Y", 0]], first.ownership));
    await sink.monitor.awaitCompletion({ timeoutMs: 5_000 });
    await first.revoke();
    // While this sink did not own the tranche, another member parked Pay-Y from index 1.
    await parked.park("g", [{
      stream: "Pay-Y",
      events: [{ ...ev(1) }],
      failure: { error: "Error: elsewhere", attempts: 3, firstFailedAt: 1, lastFailedAt: 2 },
    }]);
    const second = createOwnership("0");
    await writer.write(at(2, [["Pay-Y", 1], ["Pay-Y", 2], ["Order-1", 0]], second.ownership));
    await sink.monitor.awaitCompletion({ timeoutMs: 5_000 });
    assert.deepEqual(handled, ["Pay-Y@0", "Order-1@0"], "Pay-Y@1 and @2 are not handled");
    const entry = (await parked.get("g", "Pay-Y"))!;
    assert.deepEqual(
      (await parked.events("g", "Pay-Y", entry.episode, 0, 10)).map((e) => e.index),
      [1, 2],
    );
  } finally {
    writer.releaseLock();
    await sink.stop();
  }
});
