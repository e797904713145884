// Smoke suite for Bun: a memory pipeline end to end (store -> source -> sink -> checkpoint), a
// resume from the checkpoint, and a fault, through Bun's own web streams. Run with
// `bun test tests/bun/`; Deno's test run excludes this folder (deno.json `test.exclude`).
import { test } from "bun:test";
import assert from "node:assert/strict";
import { PipelineFaultError, run, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../../sources/memory.ts";
import type { CheckpointStore } from "../../core/checkpoints.ts";

const KEY = { source: "memory", tranche: "all", group: "smoke" };

/** Runs a pipeline until it is at the tail, plus `more` appends handled while it runs. */
async function runOnce(
  store: MemoryStore,
  checkpoints: CheckpointStore,
  more: () => Promise<void> = () => Promise.resolve(),
): Promise<Map<string, number[]>> {
  const seen = new Map<string, number[]>();
  const sink = streamsSink({
    group: "smoke",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    maxReadAhead: 2,
    handler: async (stream, events) => {
      await new Promise((r) => setTimeout(r, 0));
      seen.set(stream, [...(seen.get(stream) ?? []), ...events.map((e) => e.index)]);
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "smoke", maxBatchSize: 4 }), sink, {
    signal: ac.signal,
  });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
    await more();
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  } finally {
    ac.abort();
    await running;
  }
  return seen;
}

test("a memory pipeline handles every event in order and checkpoints, then resumes", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  for (let round = 0; round < 3; round++) {
    for (const s of ["Order-1", "Order-2", "Order-3"]) {
      await store.append(s, [{ type: "T", data: round }, { type: "T", data: round }], round * 2);
    }
  }
  const first = await runOnce(store, checkpoints, async () => {
    await store.append("Order-1", [{ type: "T", data: "late" }], 6);
  });
  assert.deepEqual(first.get("Order-1"), [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(first.get("Order-2"), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(first.get("Order-3"), [0, 1, 2, 3, 4, 5]);
  assert.equal(await checkpoints.load(KEY), BigInt(store.head));

  await store.append("Order-2", [{ type: "T", data: "next" }], 6);
  const second = await runOnce(store, checkpoints);
  assert.deepEqual([...second], [["Order-2", [6]]], "the second run started at the checkpoint");
  assert.equal(await checkpoints.load(KEY), BigInt(store.head));
});

test("a fault rejects run() with a PipelineFaultError naming the stream", async () => {
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "T", data: 0 }], 0);
  const sink = streamsSink({
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1, maxDelayMs: 1, jitter: 0 },
    failure: { kind: "fault", maxAttempts: 2 },
    handler: () => {
      throw new Error("kaput");
    },
  });
  const ac = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const outcome = await Promise.race([
      run(memorySource({ store }), sink, { signal: ac.signal }).then(() => "resolved", (e) => e),
      new Promise((r) => (timer = setTimeout(() => r("still running after 3 s"), 3000))),
    ]);
    assert.ok(outcome instanceof PipelineFaultError, `run() settled with ${outcome}`);
    assert.match(outcome.message, /Order-1/);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
});
