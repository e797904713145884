// /health reports release and skip requests that wait unclaimed past a claim's lease (issue 12):
// an operator asked, and no sink applies it. Two real causes: a backlog (a sink applies at most
// 8 requests at once, and the owner of the tranche is busy with them) and claims that fail.
import assert from "node:assert/strict";
import { run, type StreamEvent, streamsSink } from "../../mod.ts";
import type { ParkStore } from "../../core/park.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { checkHealth, createHttpHandler } from "../../observability/http.ts";
import { test } from "../support/core.ts";

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A running pipeline "g" in which `streams` streams (Pay-0, ...) are parked with one event each. */
async function parkedPipeline(streams: number, wrap: (s: ParkStore) => ParkStore = (s) => s) {
  const events = createMemoryStore();
  const park = memoryParkStore();
  let poison = true;
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    failure: { kind: "park", maxAttempts: 1, store: wrap(park), pollMs: 20 },
    handler: async (_stream: string, _evs: readonly StreamEvent[]) => {
      if (poison) throw new Error("declined");
      await gate; // replays wait until the test lets them go
    },
  });
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.addPipeline({ group: "g", source: "memory", sink });
  for (let i = 0; i < streams; i++) await events.append(`Pay-${i}`, [{ type: "T", data: i }], 0);
  const ac = new AbortController();
  const running = run(memorySource({ store: events, group: "g" }), sink, { signal: ac.signal });
  await until("all parked", () => sink.stats().parked.streams === streams);
  poison = false;
  return {
    park,
    sink,
    metrics,
    open,
    async stop() {
      open();
      ac.abort();
      await running;
    },
  };
}

const unclaimedReason = async (metrics: ReturnType<typeof createMetrics>, t = {}) =>
  (await checkHealth(metrics.pipelines(), t)).reasons.find((r) =>
    r.kind === "parkRequestUnclaimed"
  );

test("health: a release request left unclaimed past the claim lease (a backlog) degrades, then clears", async () => {
  const p = await parkedPipeline(9);
  try {
    // Pay-8 asked last: the sink claims 8 (its limit) and Pay-8 waits behind the stalled replays.
    for (let i = 0; i < 9; i++) {
      await p.park.request("g", `Pay-${i}`, { action: "release", by: "alice" });
      await new Promise((r) => setTimeout(r, 2));
    }
    await until(
      "8 claimed",
      async () => (await p.park.list("g", { requested: true })).filter((e) => e.claim).length === 8,
    );
    assert.equal(await unclaimedReason(p.metrics), undefined, "not reported within the lease");
    await until("reported", async () => (await unclaimedReason(p.metrics)) !== undefined, 5_000);
    const reason = (await unclaimedReason(p.metrics))!;
    assert.equal(reason.status, "degraded");
    assert.equal(reason.stream, "Pay-8");
    assert.ok(typeof reason.value === "number" && reason.value > 1_000, String(reason.value));
    assert.ok(typeof reason.since === "number" && reason.since <= Date.now() - 1_000);
    assert.match(
      reason.message,
      /^1 park request unclaimed past the claim lease; oldest: the release of Pay-8 .*, asked by alice, claimable for \d+\.\d s/,
    );
    assert.equal(p.sink.stats().parked.unclaimed?.requests, 1);
    // Thresholds move it: failing at once (and /health answers 503), or not before an hour.
    const health = { parkRequestUnclaimedMs: { failing: 0 } };
    assert.equal((await unclaimedReason(p.metrics, health))?.status, "failing");
    const http = createHttpHandler({ metrics: p.metrics, health });
    assert.equal((await http(new Request("http://localhost/health"))).status, 503);
    assert.equal(
      await unclaimedReason(p.metrics, { parkRequestUnclaimedMs: { degraded: 3_600_000 } }),
      undefined,
    );
    assert.throws(() =>
      createHttpHandler({ metrics: p.metrics, health: { parkRequestUnclaimedMs: { failing: -1 } } })
    );
    p.open();
    await until("all released", () => p.sink.stats().counters.released === 9);
    await until("cleared", async () => (await unclaimedReason(p.metrics)) === undefined, 2_000);
    assert.equal(p.sink.stats().parked.unclaimed, undefined);
  } finally {
    await p.stop();
  }
});

test("health: a request the sink cannot claim (claims fail) is reported past the lease with the store failure", async () => {
  let refuse = true;
  const p = await parkedPipeline(1, (s) => ({
    ...s,
    park: s.park.bind(s),
    list: s.list.bind(s),
    get: s.get.bind(s),
    events: s.events.bind(s),
    request: s.request.bind(s),
    resolve: s.resolve.bind(s),
    claim: (...args) =>
      refuse ? Promise.reject(new Error("claims refused")) : s.claim.bind(s)(...args),
  }));
  try {
    await p.park.request("g", "Pay-0", { action: "skip", by: "bob", reason: "test card" });
    await until("reported", async () => (await unclaimedReason(p.metrics)) !== undefined, 5_000);
    const report = await checkHealth(p.metrics.pipelines());
    const kinds = report.reasons.map((r) => r.kind);
    assert.ok(kinds.includes("parkStore"), kinds.join());
    const reason = report.reasons.find((r) => r.kind === "parkRequestUnclaimed")!;
    assert.match(reason.message, /the skip of Pay-0 \(tranche all\), asked by bob/);
    refuse = false;
    p.open();
    await until("skipped", () => p.sink.stats().counters.skipped === 1);
    await until("cleared", async () => (await unclaimedReason(p.metrics)) === undefined, 2_000);
  } finally {
    await p.stop();
  }
});
