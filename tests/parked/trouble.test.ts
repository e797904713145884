// Park store trouble is kept per stream: a stream whose writes keep failing shows as a park
// store failure (stats and health's parkStore reason, by its age) until its own write succeeds,
// whatever other streams' writes do meanwhile.
import assert from "node:assert/strict";
import { type Batch, type ParkStore, type StreamEvent, streamsSink } from "../../mod.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { checkHealth } from "../../observability/http.ts";
import { createMetrics } from "../../observability/metrics.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ev = (index: number): StreamEvent => ({
  index,
  type: "T",
  data: null,
  meta: null,
  id: `${index}`,
  time: new Date(0),
  size: 1,
});

Deno.test("park store trouble of one stream stays while other streams park fine, until its write succeeds", async () => {
  const inner = memoryParkStore();
  let refuse = true;
  const store: ParkStore = {
    ...inner,
    park: (group, writes) =>
      refuse && writes.some((w) => w.stream === "Pay-X" && w.events.some((e) => e.index >= 1))
        ? Promise.reject(new Error("item too large"))
        : inner.park(group, writes),
  };
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 100, maxDelayMs: 100, jitter: 0 },
    failure: { kind: "park", maxAttempts: 1, store, pollMs: 1000 },
    handler: () => {
      throw new Error("poison");
    },
  });
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.addPipeline({ group: "g", source: "x", sink });
  const writer = sink.writable.getWriter();
  const batch = (p: number, stream: string, i: number): Batch => ({
    tranche: "0",
    position: BigInt(p),
    isTail: true,
    items: [{ stream, event: ev(i) }],
  });
  try {
    await writer.write(batch(1, "Pay-X", 0));
    await sink.monitor.awaitCompletion({ timeoutMs: 5_000 });
    await writer.write(batch(2, "Pay-X", 1)); // refused until `refuse` is cleared
    let since: number | undefined;
    for (let i = 0; i < 16; i++) {
      if (i % 2 === 0) await writer.write(batch(3 + i, `Pay-Y${i}`, 0)); // parks fine
      await sleep(40);
      if (i < 3) continue; // the first refusal is on its way
      const failing = sink.stats().parked.storeFailing;
      assert.ok(failing !== undefined, `sample ${i}: the refused stream's trouble was cleared`);
      since ??= failing.since;
      assert.equal(failing.since, since, `sample ${i}: the trouble started again`);
      const h = await checkHealth(metrics.pipelines(), { parked: { degraded: 100 } });
      assert.notEqual(h.status, "ok", `sample ${i}: health is ok`);
      assert.ok(h.pipelines[0].reasons.some((r) => r.kind === "parkStore"), `sample ${i}`);
    }
    refuse = false;
    await sink.monitor.awaitCompletion({ timeoutMs: 5_000 });
    assert.equal(sink.stats().parked.storeFailing, undefined);
    assert.equal((await store.get("g", "Pay-X"))!.next, 2);
  } finally {
    writer.releaseLock();
    await sink.stop();
  }
});

// A park store whose read of the parked streams never settles (a query on a pool its owner ended
// meanwhile) held a stop, and the process, for the store call's 30 s timeout.
Deno.test("a sink stopped while its park store's first read hangs stops at once, no timer left", async () => {
  const inner = memoryParkStore();
  const store: ParkStore = { ...inner, list: () => new Promise(() => {}) };
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    failure: { kind: "park", maxAttempts: 1, store, pollMs: 1000 },
    handler: () => {},
  });
  const writer = sink.writable.getWriter();
  const started = Date.now();
  await sleep(20);
  await sink.stop();
  await writer.closed.catch(() => {});
  assert.ok(Date.now() - started < 5_000, `stopped after ${Date.now() - started} ms`);
});
