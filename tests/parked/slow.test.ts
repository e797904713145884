// A park store slower than a claim's lease per poll round (found with DynamoDB Local under load,
// about 2 s a call against the 1 s lease of a 50 ms pollMs): claims were timed from the start of
// the poll, so each was lapsed when taken and dropped at once, and the release was claimed and
// lost again for good. Claims now run from when they are asked, for three rounds of polls at
// least, and the release is applied.
import assert from "node:assert/strict";
import { run, type StreamEvent, streamsSink } from "../../mod.ts";
import type { ParkStore } from "../../core/park.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `store` with every call taking `ms` longer (a deliberate fault: a slow store). */
function slow(store: ParkStore, ms: number): ParkStore {
  const later = <T>(p: () => Promise<T>) => new Promise<void>((r) => setTimeout(r, ms)).then(p);
  return {
    park: (...a) => later(() => store.park(...a)),
    list: (...a) => later(() => store.list(...a)),
    get: (...a) => later(() => store.get(...a)),
    events: (...a) => later(() => store.events(...a)),
    request: (...a) => later(() => store.request(...a)),
    claim: (...a) => later(() => store.claim(...a)),
    resolve: (...a) => later(() => store.resolve(...a)),
  };
}

Deno.test("parked: a release is applied by a sink whose park store takes longer per poll round than a claim lasts", async () => {
  const park = memoryParkStore();
  const events = createMemoryStore();
  let poison = true;
  const handled: number[] = [];
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    // A 1 s lease (10 polls of 20 ms, at least 1 s); a round of polls here takes over 1 s.
    failure: { kind: "park", maxAttempts: 1, store: slow(park, 400), pollMs: 20 },
    handler: (_stream: string, evs: readonly StreamEvent[]) => {
      if (poison) throw new Error("declined");
      handled.push(...evs.map((e) => e.index));
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: events, group: "g" }), sink, { signal: ac.signal });
  try {
    await events.append("Pay-1", [0, 1, 2].map((i) => ({ type: "T", data: i })), 0);
    await until("parked", async () => (await park.get("g", "Pay-1"))?.events === 3);
    poison = false;
    await park.request("g", "Pay-1", { action: "release", by: "alice" });
    await until("released", async () => (await park.get("g", "Pay-1"))?.state === "released");
    assert.deepEqual(handled, [0, 1, 2]);
  } finally {
    ac.abort();
    await running;
  }
});
