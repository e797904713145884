// The feed source announces every tranche before its first read, retries a failed checkpoint
// load like a failed read, and survives a wakeup that throws.
import assert from "node:assert/strict";
import { type BatchItem, type CheckpointStore, run, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { feedSource, type ReadPage } from "../../sources/feed.ts";
import { test as sanitizedTest } from "../support/core.ts";

const test = (name: string, fn: () => Promise<void>) => sanitizedTest(`feed source: ${name}`, fn);
const item = (stream: string, index: number): BatchItem => ({
  stream,
  event: {
    index,
    type: "T",
    data: null,
    meta: null,
    id: `${stream}/${index}`,
    time: new Date(0),
    size: 1,
  },
});
/** One event per tranche (stream `<TRANCHE>-1`), then the tail; tranche "b" reads slowly. */
const onePerTranche: ReadPage = async (tranche, position) => {
  if (tranche === "b") await new Promise((r) => setTimeout(r, 30));
  if (position !== undefined) return { items: [], next: position, isTail: true };
  return { items: [item(`${tranche.toUpperCase()}-1`, 0)], next: 1n, isTail: true };
};

async function handleAll(source: ReadableStream) {
  const seen: string[] = [];
  const sink = streamsSink({ handler: (s) => void seen.push(s), statsIntervalMs: 0 });
  const ac = new AbortController();
  const running = run(source, sink, { signal: ac.signal });
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  const snapshot = [...seen].sort();
  ac.abort();
  await running;
  return snapshot;
}

test("waiting for the tail includes a tranche whose first read is still running", async () => {
  const seen = await handleAll(
    feedSource({ name: "f", tranches: ["a", "b"], tailSleepMs: 50, readPage: onePerTranche }),
  );
  assert.deepEqual(seen, ["A-1", "B-1"]);
});

test("a failed checkpoint load is retried, not fatal", async () => {
  const store = memoryCheckpoints();
  let loads = 0;
  const flaky: CheckpointStore = {
    ...store,
    load: (key) => ++loads < 3 ? Promise.reject(new Error("connection reset")) : store.load(key),
  };
  const seen = await handleAll(
    feedSource({
      name: "f",
      tranches: ["a"],
      checkpoints: flaky,
      retry: { initialDelayMs: 1, maxDelayMs: 1 },
      tailSleepMs: 50,
      readPage: onePerTranche,
    }),
  );
  assert.deepEqual(seen, ["A-1"]);
  assert.equal(loads, 3);
});

test("a wakeup that throws synchronously only loses the early wake", async () => {
  const seen = await handleAll(
    feedSource({
      name: "f",
      tranches: ["a"],
      tailSleepMs: 10,
      readPage: onePerTranche,
      wakeup: () => {
        throw new Error("listener gone");
      },
    }),
  );
  assert.deepEqual(seen, ["A-1"]);
});
