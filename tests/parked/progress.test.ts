// A release records its progress in the park store while it replays (issue 12: a release of 300
// events went to the handler in one call, so nothing was recorded before it ended, and a restart
// after a SIGKILL at 173 replayed all 300 again).
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { run, type StreamEvent, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { createMetrics } from "../../observability/metrics.ts";

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("parked: a release replays in bounded calls and records its progress as it goes", async () => {
  const events = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const park = memoryParkStore();
  let broken = true;
  const replayCalls: number[] = [];
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    failure: { kind: "park", maxAttempts: 1, store: park, pollMs: 20 },
    handler: async (_stream: string, evs: readonly StreamEvent[]) => {
      if (broken) throw new Error("bug");
      replayCalls.push(evs.length);
      // 2 ms an event: the 300 take about 600 ms, many claim renewals (every pollMs).
      await new Promise((r) => setTimeout(r, 2 * evs.length));
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: events, checkpoints, group: "g" }), sink, {
    signal: ac.signal,
  });
  try {
    await events.append(
      "Pay-1",
      Array.from({ length: 300 }, (_, i) => ({ type: "T", data: i })),
      0,
    );
    await until(
      "Pay-1 parked with 300 events",
      async () => (await park.get("g", "Pay-1"))?.events === 300,
    );
    broken = false;
    await park.request("g", "Pay-1", { action: "release", by: "test" });
    // Seen mid-replay: the store's first moved up (events left the episode) before it resolved.
    const seen: number[] = [];
    await until("the release resolved", async () => {
      const e = await park.get("g", "Pay-1");
      if (e?.state === "parked" && e.claim !== undefined) seen.push(e.first);
      return e?.state === "released";
    });
    const mid = seen.filter((f) => f > 0 && f < 300);
    assert.ok(
      mid.length > 0,
      `progress recorded during the replay (first seen: ${seen.join(",")})`,
    );
    assert.equal(replayCalls.reduce((a, b) => a + b, 0), 300);
    assert.ok(Math.max(...replayCalls) <= 100, `replay calls of at most 100: ${replayCalls}`);
  } finally {
    ac.abort();
    await running;
  }
});

Deno.test("parked: a stream parked under a rule since removed is logged when the sink loads it", async () => {
  const park = memoryParkStore();
  await park.park("g", [{
    stream: "Pay-1",
    events: [{ index: 0, type: "T", data: 0, meta: null, id: "e0", time: new Date(), size: 1 }],
    failure: { error: "Error: bug", attempts: 3, firstFailedAt: 0, lastFailedAt: 1 },
  }]);
  const lines: string[] = [];
  await configure({
    reset: true,
    sinks: { mem: (r: LogRecord) => lines.push(r.message.map(String).join("")) },
    loggers: [
      { category: ["impel", "parked"], lowestLevel: "warning", sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  const events = createMemoryStore();
  // The Pay-* rule is gone; the store is still used for Order-*.
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    failure: {
      kind: "byStream",
      rules: [{ match: "Order-*", policy: { kind: "park", maxAttempts: 1, store: park } }],
    },
    handler: () => {},
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: events, group: "g" }), sink, { signal: ac.signal });
  try {
    await until("the warning", () => lines.some((l) => l.includes("Pay-1")));
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0], /Pay-1 is parked in park store 0 .*policy \(retry\) no longer parks it/);
    assert.equal(sink.stats().parked.streams, 1, "still parked");
  } finally {
    ac.abort();
    await running;
    await reset();
  }
});

Deno.test("parked: a release that fails again is in the history as failed and counted as a parking", async () => {
  const events = createMemoryStore();
  const park = memoryParkStore();
  let badFrom = 0; // the first index that fails
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    failure: { kind: "park", maxAttempts: 2, store: park, pollMs: 20 },
    handler: (_stream: string, evs: readonly StreamEvent[]) => {
      const bad = evs.findIndex((e) => e.index >= badFrom);
      if (bad === 0) throw new Error(`bug at ${evs[0].index}`);
      return bad < 0 ? undefined : evs[bad].index;
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: events, group: "g" }), sink, { signal: ac.signal });
  try {
    await events.append("Pay-1", Array.from({ length: 5 }, (_, i) => ({ type: "T", data: i })), 0);
    await until("parked", async () => (await park.get("g", "Pay-1"))?.events === 5);
    assert.equal(sink.stats().counters.parked, 1);
    badFrom = 3; // the release handles 0..2, then fails again at 3
    await park.request("g", "Pay-1", { action: "release", by: "alice", reason: "fixed?" });
    await until("parked again", async () => {
      const e = await park.get("g", "Pay-1");
      return e?.state === "parked" && e.request === undefined && e.first === 3;
    });
    const [active, failed] = await park.list("g", { resolved: true });
    assert.deepEqual([active.state, active.events, failed?.state], ["parked", 2, "failed"]);
    assert.deepEqual(
      [failed.resolution?.by, failed.resolution?.reason, failed.resolution?.events, failed.error],
      ["alice", "fixed?", 3, "Error: bug at 3"],
    );
    assert.equal(sink.stats().counters.parked, 2, "the second parking is counted");
    assert.equal(sink.stats().counters.released, 0);
    assert.equal(sink.stats().counters.releaseFailures, 1, "counted as a failed release");
    assert.equal(sink.stats().counters.parkFailures, 0, "not as a park store failure");
    const metrics = createMetrics({ defaultMetrics: false });
    metrics.addPipeline({ group: "g", source: "memory", sink });
    const text = await metrics.metrics();
    assert.match(text, /impel_parked_total\{group="g",outcome="releaseFailed"\} 1\n/);
    assert.match(text, /impel_parked_total\{group="g",outcome="storeFailed"\} 0\n/);
    assert.match(text, /impel_parked_total\{group="g",outcome="parked"\} 2\n/);
  } finally {
    ac.abort();
    await running;
  }
});
