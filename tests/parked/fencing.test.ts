// Fenced claims in the streams sink: a sink whose claim on a release lapses (its renewals do not
// get through) stops replaying at once, and a skip asked then is applied, never overtaken by the
// old replay.
import assert from "node:assert/strict";
import {
  createOwnership,
  type Ownership,
  type ParkStore,
  run,
  type StreamEvent,
  streamsSink,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { batchBuilder, test } from "../support/core.ts";

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("a release whose claim lapses stops replaying; a skip asked then is applied, the replay does not go on", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const inner = memoryParkStore();
  // A deliberate fault: claims and renewals wait until the test lets them through, as if the
  // sink were cut off from the store.
  let blocked: Promise<void> | undefined;
  let unblock = () => {};
  const parked: ParkStore = {
    ...inner,
    async claim(group, stream, episode, claim) {
      if (blocked !== undefined) await blocked;
      return await inner.claim(group, stream, episode, claim);
    },
  };
  // Long enough that the replay cannot end before the claim lapses (about 6 s of calls).
  const N = 2_000;
  await store.append("Pay-X", Array.from({ length: N }, (_, i) => ({ type: "T", data: i })), 0);
  let broken = true;
  const handled: number[] = [];
  const handler = async (_stream: string, events: readonly StreamEvent[]) => {
    if (broken) throw new Error("poison");
    await new Promise((r) => setTimeout(r, 3));
    handled.push(...events.map((e) => e.index));
  };
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    maxEventsPerCall: 1,
    handler,
    failure: { kind: "park", maxAttempts: 1, store: parked, pollMs: 20 }, // claims last 1 s
  });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "g" }), sink, {
    signal: ac.signal,
  });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    assert.equal((await inner.get("g", "Pay-X"))?.events, N);
    broken = false;
    await inner.request("g", "Pay-X", { action: "release", by: "alice" });
    await until("the replay to be under way", () => handled.length >= 20);
    blocked = new Promise((resolve) => (unblock = resolve));
    // The claim lapses 1 s after its last renewal; the sink must stop by then (one call may
    // still be running).
    await until("the claim to lapse", async () => {
      const e = await inner.get("g", "Pay-X");
      return e?.claim !== undefined && e.claim.until <= Date.now();
    });
    await new Promise((r) => setTimeout(r, 30));
    const atLapse = handled.length;
    assert.ok(atLapse < N, `the replay stopped before its end (handled ${atLapse})`);
    const skip = await inner.request("g", "Pay-X", { action: "skip", by: "bob", reason: "bad" });
    assert.equal(skip.request?.action, "skip", "a skip is taken once the claim lapsed");
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(
      handled.length <= atLapse + 1,
      `nothing more replayed with the claim gone (${atLapse} then ${handled.length})`,
    );
    unblock(); // the old renewal reaches the store: refused, its claim is gone
    blocked = undefined;
    await until("the skip", async () => (await inner.get("g", "Pay-X"))?.state === "skipped");
    const done = (await inner.get("g", "Pay-X"))!;
    assert.equal(done.resolution?.action, "skip");
    assert.equal(done.resolution?.by, "bob");
    assert.ok(handled.length <= atLapse + 1, "the skip was not overtaken by the old replay");
    assert.deepEqual(handled, Array.from({ length: handled.length }, (_, i) => i), "in order");
  } finally {
    unblock();
    ac.abort();
    await running;
  }
});

test("a tranche revoked while one of its streams is released: the replay stops, the claim is given up at once, the new owner releases it", async () => {
  const parked = memoryParkStore();
  let broken = true;
  const handledA: number[] = [];
  const handledB: number[] = [];
  const slow = (log: number[]) => async (_s: string, events: readonly StreamEvent[]) => {
    if (broken) throw new Error("poison");
    await new Promise((r) => setTimeout(r, 3));
    log.push(...events.map((e) => e.index));
  };
  const options = {
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    maxEventsPerCall: 1,
    // Claims last 10 × pollMs = 2 s: a claim given up only by lapsing would show.
    failure: { kind: "park", maxAttempts: 1, store: parked, pollMs: 200 },
  } as const;
  const a = streamsSink({ ...options, handler: slow(handledA) });
  const writer = a.writable.getWriter();
  const batch = (ownership: Ownership) => ({
    ...batchBuilder({ isTail: true })(200, Array.from({ length: 200 }, (_, i) => ["Pay-X", i])),
    ownership,
  });
  let b: ReturnType<typeof streamsSink> | undefined;
  try {
    const first = createOwnership("0");
    await writer.write(batch(first.ownership));
    await a.monitor.awaitCompletion({ timeoutMs: 5_000 });
    assert.equal((await parked.get("g", "Pay-X"))?.events, 200);
    broken = false;
    await parked.request("g", "Pay-X", { action: "release", by: "alice" });
    await until("the replay to be under way", () => handledA.length >= 10);
    const revoked = Date.now();
    await first.revoke();
    const atRevoke = handledA.length;
    await until("the claim to be given up", async () => {
      const claim = (await parked.get("g", "Pay-X"))?.claim;
      return claim === undefined || claim.until <= Date.now();
    }, 1_500);
    assert.ok(Date.now() - revoked < 1_500, "given up, not left to lapse");
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(handledA.length <= atRevoke + 1, "the old owner replays nothing more");
    // The new owner of the tranche releases it.
    b = streamsSink({ ...options, handler: slow(handledB) });
    await until("the new owner's release", async () => {
      return (await parked.get("g", "Pay-X"))?.state === "released";
    }, 5_000);
    // From the progress last recorded (at or before where the old owner stopped) to the end.
    assert.ok(handledB[0] <= atRevoke, `nothing skipped: B began at ${handledB[0]}`);
    assert.deepEqual(
      handledB,
      Array.from({ length: 200 - handledB[0] }, (_, i) => handledB[0] + i),
      "in order, to the end",
    );
  } finally {
    writer.releaseLock();
    await a.stop();
    await b?.stop();
  }
});

test("releasing many streams at once buffers a bounded number of pages, not every backlog", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const parked = memoryParkStore();
  const names = Array.from({ length: 30 }, (_, i) => `Pay-${i}`);
  for (const name of names) {
    await store.append(name, Array.from({ length: 300 }, (_, i) => ({ type: "T", data: i })), 0);
  }
  let broken = true;
  const handled = new Map<string, number[]>();
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    maxEventsPerCall: 10, // pages of 100 events
    handler: async (stream, events) => {
      if (broken) throw new Error("poison");
      await new Promise((r) => setTimeout(r, 1));
      handled.set(stream, [...(handled.get(stream) ?? []), ...events.map((e) => e.index)]);
    },
    failure: { kind: "park", maxAttempts: 1, store: parked, pollMs: 10 },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "g" }), sink, {
    signal: ac.signal,
  });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
    assert.equal((await parked.list("g")).length, 30);
    broken = false;
    for (const name of names) await parked.request("g", name, { action: "release", by: "a" });
    let maxBuffered = 0;
    let maxClaimed = 0;
    await until("every release", async () => {
      maxBuffered = Math.max(maxBuffered, sink.stats().bufferedEvents);
      const now = Date.now();
      const claimed = (await parked.list("g")).filter((e) => (e.claim?.until ?? 0) > now);
      maxClaimed = Math.max(maxClaimed, claimed.length);
      return sink.stats().counters.released === 30;
    }, 30_000);
    assert.ok(maxClaimed <= 8, `at most 8 releases at once, saw ${maxClaimed}`);
    assert.ok(maxBuffered <= 8 * 100, `at most 8 pages buffered, saw ${maxBuffered} events`);
    for (const name of names) {
      assert.deepEqual(handled.get(name), Array.from({ length: 300 }, (_, i) => i), name);
    }
  } finally {
    ac.abort();
    await running;
  }
});
