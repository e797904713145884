// A release whose claim lapsed while a call of its replay was running (a renewal that did not
// reach the store in time: DynamoDB Local at load ~16, tests/parked/kill.test.ts 1 run in 41):
// when the same sink claims the request again, the events of that call are not replayed again.
import assert from "node:assert/strict";
import { run, type StreamEvent, streamsSink } from "../../mod.ts";
import type { ParkStore } from "../../core/park.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * The memory park store, whose claim renewals (a claim call with a token and a time ahead) wait
 * while `stalled` and are then lost (answered `undefined`, as a renewal that never arrived) —
 * the deliberate fault.
 */
function stallingRenewals() {
  const inner = memoryParkStore();
  let stalled = false;
  let resume: () => void = () => {};
  let resumed = Promise.resolve();
  const store: ParkStore = {
    ...inner,
    async claim(group, stream, episode, claim) {
      if (stalled && claim.token !== undefined && claim.until > Date.now()) {
        await resumed;
        return undefined;
      }
      return inner.claim(group, stream, episode, claim);
    },
  };
  return {
    store,
    stall() {
      stalled = true;
      resumed = new Promise((r) => resume = r);
    },
    unstall() {
      stalled = false;
      resume();
    },
  };
}

Deno.test("parked: a call in flight when the release's claim lapsed is not replayed again after the re-claim", async () => {
  const events = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const fault = stallingRenewals();
  const park = fault.store;
  let broken = true;
  const handled: number[] = [];
  let inThree: () => void = () => {};
  const threeStarted = new Promise<void>((r) => inThree = r);
  let finishThree: () => void = () => {};
  const threeMayEnd = new Promise<void>((r) => finishThree = r);
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    maxEventsPerCall: 1,
    retry: { initialDelayMs: 1 },
    failure: { kind: "park", maxAttempts: 1, store: park, pollMs: 20 },
    handler: async (_stream: string, evs: readonly StreamEvent[]) => {
      if (broken) throw new Error("bug");
      const n = evs[0].data as number;
      if (n === 3 && !handled.includes(3)) {
        // The claim lapses while this call runs; it succeeds afterwards.
        fault.stall();
        inThree();
        await threeMayEnd;
      }
      handled.push(n);
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: events, checkpoints, group: "g" }), sink, {
    signal: ac.signal,
  });
  try {
    await events.append("X-1", [1, 2, 3, 4, 5, 6].map((n) => ({ type: "T", data: n })), 0);
    await until("X-1 parked with 6 events", async () => (await park.get("g", "X-1"))?.events === 6);
    broken = false;
    await park.request("g", "X-1", { action: "release", by: "test" });
    await threeStarted;
    // Past the claim's time (as the store has it) and a few polls more: the sink gave it up.
    const claimed = await park.get("g", "X-1");
    assert.ok(claimed?.claim !== undefined, "the release is claimed while event 3 is handled");
    await until("the claim lapsed", () => Date.now() > claimed.claim!.until + 200, 15_000);
    finishThree();
    fault.unstall();
    await until(
      "the release resolved",
      async () => (await park.get("g", "X-1"))?.state === "released",
    );
    assert.deepEqual(handled, [1, 2, 3, 4, 5, 6], "in order, once each");
  } finally {
    fault.unstall();
    finishThree();
    ac.abort();
    await running;
  }
});

Deno.test("parked: a call that failed while the release's claim lapsed is replayed after the re-claim", async () => {
  const events = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const fault = stallingRenewals();
  const park = fault.store;
  let broken = true;
  const handled: number[] = [];
  let threeCalls = 0;
  let inThree: () => void = () => {};
  const threeStarted = new Promise<void>((r) => inThree = r);
  let finishThree: () => void = () => {};
  const threeMayEnd = new Promise<void>((r) => finishThree = r);
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    maxEventsPerCall: 1,
    retry: { initialDelayMs: 1 },
    // Two attempts: the failed call of the replay is retried, not parked again.
    failure: { kind: "park", maxAttempts: 2, store: park, pollMs: 20 },
    handler: async (_stream: string, evs: readonly StreamEvent[]) => {
      if (broken) throw new Error("bug");
      const n = evs[0].data as number;
      if (n === 3 && threeCalls++ === 0) {
        fault.stall();
        inThree();
        await threeMayEnd;
        throw new Error("event 3 failed while the claim lapsed");
      }
      handled.push(n);
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: events, checkpoints, group: "g" }), sink, {
    signal: ac.signal,
  });
  try {
    await events.append("X-1", [1, 2, 3, 4, 5, 6].map((n) => ({ type: "T", data: n })), 0);
    await until("X-1 parked with 6 events", async () => (await park.get("g", "X-1"))?.events === 6);
    broken = false;
    await park.request("g", "X-1", { action: "release", by: "test" });
    await threeStarted;
    const claimed = await park.get("g", "X-1");
    assert.ok(claimed?.claim !== undefined, "the release is claimed while event 3 is handled");
    await until("the claim lapsed", () => Date.now() > claimed.claim!.until + 200, 15_000);
    finishThree();
    fault.unstall();
    await until(
      "the release resolved",
      async () => (await park.get("g", "X-1"))?.state === "released",
    );
    assert.deepEqual(handled, [1, 2, 3, 4, 5, 6], "event 3 handled once it succeeded, in order");
    assert.equal(threeCalls, 2, "event 3 called again after its failed call");
  } finally {
    fault.unstall();
    finishThree();
    ac.abort();
    await running;
  }
});
