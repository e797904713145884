// Unreadable records (BatchItem.invalid) and the park policy: one parked keeps its mark in the
// park store, so a release hands it to the failure policy again (never to the handler); one
// re-read after a restart (before the checkpoint passed it) is not parked a second time under
// the index of the stream's next real event, which would then be dropped as a duplicate.
import assert from "node:assert/strict";
import { type Batch, type StreamEvent, streamsSink } from "../../mod.ts";
import { memoryParkStore } from "../../parked/memory.ts";

const quiet = { statsIntervalMs: 0, commitIntervalMs: 5, retry: { initialDelayMs: 1 } } as const;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ev = (index: number, data: unknown): StreamEvent => ({
  index,
  type: "T",
  data,
  meta: null,
  id: `id-${index}`,
  time: new Date(0),
  size: 1,
});

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

Deno.test("parked unreadable record: a release hands it to the failure policy again, never to the handler", async () => {
  const store = memoryParkStore();
  const seen: unknown[] = [];
  const sink = streamsSink({
    ...quiet,
    group: "g",
    failure: { kind: "park", maxAttempts: 2, store, pollMs: 20 },
    handler: (_s, events) => void seen.push(...events.map((e) => e.data)),
  });
  const writer = sink.writable.getWriter();
  try {
    const batch: Batch = {
      tranche: "0",
      position: 1n,
      isTail: true,
      items: [
        { stream: "Pay-X", event: ev(0, "ok-0") },
        { stream: "Pay-X", event: ev(1, new Uint8Array([0xff])), invalid: new Error("no decode") },
        { stream: "Pay-X", event: ev(2, "ok-2") },
      ],
    };
    await writer.write(batch);
    await sink.monitor.awaitCompletion({ timeoutMs: 5_000 });
    const parked = (await store.get("g", "Pay-X"))!;
    assert.equal(parked.state, "parked");
    assert.match(parked.error, /no decode/);
    assert.deepEqual(seen, ["ok-0"]);
    await store.request("g", "Pay-X", { action: "release", by: "alice" });
    // The release reaches the unreadable record again: it fails again, the stream stays parked.
    await until("failed again", () => sink.stats().counters.unreadable >= 2);
    await until("the failure recorded", async () => {
      const e = (await store.get("g", "Pay-X"))!;
      return e.request === undefined && e.lastFailedAt > parked.lastFailedAt;
    });
    assert.ok(!(seen as unknown[]).some((d) => d instanceof Uint8Array), "the handler saw it");
    assert.deepEqual(seen, ["ok-0"]);
    const again = (await store.get("g", "Pay-X"))!;
    assert.equal(again.state, "parked");
    assert.equal(again.first, 1);
    assert.equal(again.request, undefined);
    assert.match(again.error, /no decode/);
  } finally {
    writer.releaseLock();
    await sink.stop();
  }
});

Deno.test("parked unreadable record re-read after a restart: not parked again, the next real event kept", async () => {
  const store = memoryParkStore();
  let broken = true;
  const handled: string[] = [];
  const newSink = () =>
    streamsSink({
      ...quiet,
      group: "g",
      failure: { kind: "park", maxAttempts: 1, store, pollMs: 20 },
      handler: (_s, events) => {
        if (broken) throw new Error("poison");
        handled.push(...events.map((e) => `${e.index}:${e.data}`));
      },
    });
  const first: Batch = {
    tranche: "0",
    position: 1n,
    isTail: true,
    items: [
      { stream: "Pay-X", event: ev(0, new Uint8Array([0xff])), invalid: new Error("no decode") },
      { stream: "Pay-X", event: ev(1, "e1") },
      { stream: "Pay-X", event: ev(2, "e2") },
    ],
  };
  // Run 1 parks the stream and stops before a checkpoint passes the batch.
  const s1 = newSink();
  let w = s1.writable.getWriter();
  await w.write(first);
  await s1.monitor.awaitCompletion({ timeoutMs: 5_000 });
  w.releaseLock();
  await s1.stop();
  // Run 2 reads the batch again, then the next real event, 3.
  const s2 = newSink();
  w = s2.writable.getWriter();
  try {
    await w.write(first);
    await w.write({
      tranche: "0",
      position: 2n,
      isTail: true,
      items: [{ stream: "Pay-X", event: ev(3, "e3") }],
    });
    await s2.monitor.awaitCompletion({ timeoutMs: 5_000 });
    const e = (await store.get("g", "Pay-X"))!;
    const stored = await store.events("g", "Pay-X", e.episode, 0, 100);
    assert.deepEqual(stored.map((x) => `${x.index}:${x.id}`), [
      "0:id-0",
      "1:id-1",
      "2:id-2",
      "3:id-3",
    ]);
    assert.equal(s2.stats().counters.duplicates, 3);
    broken = false;
    assert.deepEqual(handled, []);
  } finally {
    w.releaseLock();
    await s2.stop();
  }
});
