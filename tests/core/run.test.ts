// run(): the pump between a source and the streams sink — source failures while a write waits
// for room, and read-ahead held by a batch that cannot finish.
import assert from "node:assert/strict";
import { type Batch, ImpelError, InvalidArgumentError, run, streamsSink } from "../../mod.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { ev, test as sanitizedTest } from "../support/core.ts";

const test = (name: string, fn: () => Promise<void>) => sanitizedTest(`run: ${name}`, fn);

test("a source that fails while a write waits for room rejects run() with its error", async () => {
  let pulls = 0;
  const source = new ReadableStream<Batch>({
    pull(c) {
      if (pulls++ === 0) {
        c.enqueue({
          tranche: "t",
          items: [{ stream: "Poison-1", event: ev(0) }],
          position: 1n,
          isTail: false,
        });
      } else c.error(new Error("broker connection lost"));
    },
  });
  const sink = streamsSink({
    handler: () => {
      throw new Error("poison"); // the batch never completes: the read-ahead of 1 stays full
    },
    maxReadAhead: 1,
    retry: { initialDelayMs: 5, maxDelayMs: 5 },
    statsIntervalMs: 0,
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    run(source, sink).then(() => "resolved", (e) => `rejected: ${e.message}`),
    new Promise((r) => (timer = setTimeout(() => r("still pending after 3 s"), 3000))),
  ]);
  clearTimeout(timer);
  assert.equal(outcome, "rejected: broker connection lost");
});

test("a stream that keeps failing holds the source back after maxReadAhead batches", async () => {
  const store = createMemoryStore();
  await store.append("Poison-1", [{ type: "T", data: {} }], 0);
  for (let i = 0; i < 2000; i++) await store.append(`Order-${i}`, [{ type: "T", data: {} }], 0);
  let failures = 0;
  let failedOften!: () => void;
  const often = new Promise<void>((resolve) => (failedOften = resolve));
  const maxReadAhead = 4;
  const sink = streamsSink({
    handler: (stream) => {
      if (stream !== "Poison-1") return;
      if (++failures === 10) failedOften();
      throw new Error("poison");
    },
    maxReadAhead,
    retry: { initialDelayMs: 2, maxDelayMs: 2, jitter: 0 },
    statsIntervalMs: 0,
  });
  const ac = new AbortController();
  const running = run(memorySource({ store, maxBatchSize: 10 }), sink, { signal: ac.signal });
  await often; // meanwhile every other stream's events could have been read and handled
  const stats = sink.stats();
  ac.abort();
  await running;
  // The sink holds maxReadAhead batches; the pump holds one more read while a write waits.
  assert.ok(
    stats.counters.batches <= maxReadAhead + 1,
    `${stats.counters.batches} batches read behind a stuck one (limit ${maxReadAhead})`,
  );
  assert.equal(stats.tranches[0].readAhead, stats.counters.batches);
  assert.equal(
    stats.tranches[0].completed,
    undefined,
    "nothing may be committed past the stuck batch",
  );
});

test("a checkpoint commit that never settles cannot stall a stop: done rejects with CommitTimeout", async () => {
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "T", data: {} }], 0);
  const hanging = {
    load: () => Promise.resolve(undefined),
    commit: () => new Promise<void>(() => {}),
    reset: () => Promise.resolve(),
    list: () => Promise.resolve([]),
  };
  const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0, stopTimeoutMs: 50 });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints: hanging }), sink, { signal: ac.signal });
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  ac.abort();
  const error = await running.then(() => undefined, (e) => e);
  assert.ok(error instanceof ImpelError && error.code === "CommitTimeout", `got ${error}`);
});

test("awaitCompletion rejects a negative timeout with a typed error", async () => {
  const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
  await assert.rejects(sink.monitor.awaitCompletion({ timeoutMs: -5 }), InvalidArgumentError);
  await sink.stop();
});
