// Clean stop and resume, stop timeouts, finite sources, and the monitor's deterministic waits.
// Deno's op and resource sanitizers stay on: a timer left behind by a stopped pipeline fails
// the test that stopped it.
import assert from "node:assert/strict";
import {
  ImpelError,
  PipelineFaultError,
  PipelineStoppedError,
  run,
  streamsSink,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { batch, gate, KEY, sleep, test } from "../support/core.ts";

test("stop mid-run, then resume from the checkpoint with nothing lost", async () => {
  const store = createMemoryStore();
  const streams = ["Order-0", "Order-1", "Order-2", "Order-3"];
  for (let round = 0; round < 5; round++) {
    for (const s of streams) {
      await store.append(
        s,
        Array.from({ length: 4 }, (_, k) => ({ type: "T", data: round * 4 + k })),
        round * 4,
      );
    }
  }
  const total = store.head; // 80, interleaved across the four streams
  const logPosition = new Map(store.readLog(0, total).map((e, i) => [e.event.id, i]));
  const checkpoints = memoryCheckpoints();
  const options = {
    group: "g",
    maxReadAhead: 2,
    maxEventsPerCall: 3,
    commitIntervalMs: 5,
    statsIntervalMs: 0,
    stopTimeoutMs: 2000,
  };

  // Run 1: slow handlers; stop once a good part is handled.
  const first = new Set<string>();
  let active = 0;
  let callsAfterStop = 0;
  let stopped = false;
  const midway = gate();
  const sink1 = streamsSink({
    ...options,
    handler: async (_stream, events) => {
      if (stopped) callsAfterStop++;
      active++;
      await sleep(2);
      for (const e of events) first.add(e.id);
      if (first.size >= 30) midway.open();
      active--;
    },
  });
  const ac1 = new AbortController();
  const running1 = run(memorySource({ store, checkpoints, group: "g", maxBatchSize: 5 }), sink1, {
    signal: ac1.signal,
  });
  await midway.opened;
  ac1.abort();
  await running1;
  stopped = true;
  assert.equal(active, 0, "in-flight handlers finished before run() resolved");
  const checkpoint = await checkpoints.load(KEY);
  assert.ok(
    checkpoint !== undefined && checkpoint > 0n && checkpoint < BigInt(total),
    `checkpoint ${checkpoint} is mid-run`,
  );
  for (let i = 0; i < Number(checkpoint); i++) {
    const id = store.readLog(i, i + 1)[0].event.id;
    assert.ok(
      first.has(id),
      `log entry ${i} is below the checkpoint ${checkpoint} but was not handled`,
    );
  }
  assert.ok(first.size < total, "the first run stopped before the end");

  // Run 2: a new process, as after a restart.
  const second: Array<{ stream: string; index: number; id: string }> = [];
  const sink2 = streamsSink({
    ...options,
    handler: (stream, events) =>
      void second.push(...events.map((e) => ({ stream, index: e.index, id: e.id }))),
  });
  const ac2 = new AbortController();
  const running2 = run(memorySource({ store, checkpoints, group: "g", maxBatchSize: 5 }), sink2, {
    signal: ac2.signal,
  });
  try {
    await sink2.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  } finally {
    ac2.abort();
    await running2;
  }
  assert.equal(callsAfterStop, 0, "the first run's handler was not called after it stopped");
  const startedAt = Math.min(...second.map((e) => logPosition.get(e.id)!));
  assert.equal(startedAt, Number(checkpoint), "the second run started at the committed position");
  const all = new Set([...first, ...second.map((e) => e.id)]);
  assert.equal(all.size, total, "every event was handled in one run or the other");
  for (const s of streams) {
    const indexes = second.filter((e) => e.stream === s).map((e) => e.index);
    assert.deepEqual(indexes, [...indexes].sort((a, b) => a - b), `${s} in order in run 2`);
  }
  assert.equal(await checkpoints.load(KEY), BigInt(total));
});

test("a handler that outlives the stop timeout has its signal aborted and its batch is not committed", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  await store.append("Fast-1", [{ type: "T", data: 0 }], 0);
  await store.append("Slow-1", [{ type: "T", data: 0 }], 0);
  await store.append("Fast-1", [{ type: "T", data: 1 }], 1);
  const slowStarted = gate();
  const fastDone = gate();
  let abortReason: unknown;
  const fast: number[] = [];
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    stopTimeoutMs: 50,
    handler: (stream, events, ctx) => {
      if (stream !== "Slow-1") {
        fast.push(...events.map((e) => e.index));
        if (fast.length === 2) fastDone.open();
        return;
      }
      slowStarted.open();
      return new Promise((_, reject) => {
        ctx.signal.addEventListener("abort", () => {
          abortReason = ctx.signal.reason;
          reject(ctx.signal.reason);
        });
      });
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "g", maxBatchSize: 1 }), sink, {
    signal: ac.signal,
  });
  await slowStarted.opened;
  await fastDone.opened; // Fast-1 carries on past the busy stream
  const t0 = performance.now();
  ac.abort();
  await running;
  assert.ok(performance.now() - t0 >= 45, "stop waited for the stop timeout");
  assert.ok(
    abortReason instanceof ImpelError && abortReason.code === "StopTimeout",
    `abort reason ${abortReason}`,
  );
  assert.deepEqual(fast, [0, 1]);
  assert.equal(await checkpoints.load(KEY), 1n, "the checkpoint stops before Slow-1's batch");
});

test("run() resolves when a finite source ends, after handling and committing everything", async () => {
  const commits: bigint[] = [];
  const handled: string[] = [];
  const commit = (p: bigint) => Promise.resolve(void commits.push(p));
  const batches = [
    batch(10, [["A-1", 0], ["B-1", 0]], false),
    batch(20, [["A-1", 1]], false),
    batch(30, [["B-1", 1], ["A-1", 2]], true),
  ].map((b) => ({ ...b, commit }));
  const sink = streamsSink({
    statsIntervalMs: 0,
    commitIntervalMs: 1000,
    maxReadAhead: 1,
    handler: async (stream, events) => {
      await sleep(1);
      handled.push(...events.map((e) => `${stream}@${e.index}`));
    },
  });
  await run(ReadableStream.from(batches), sink);
  assert.deepEqual(handled.sort(), ["A-1@0", "A-1@1", "A-1@2", "B-1@0", "B-1@1"]);
  assert.equal(commits.at(-1), 30n);
  await sink.done;
});

test("sink.stop() ends run() even while a write waits on a full read-ahead", async () => {
  const store = createMemoryStore();
  for (let i = 0; i < 10; i++) await store.append("A-1", [{ type: "T", data: i }], i);
  const started = gate();
  let calls = 0;
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxReadAhead: 1,
    handler: async () => {
      calls++;
      started.open();
      await sleep(5);
    },
  });
  const running = run(memorySource({ store, maxBatchSize: 1 }), sink); // no signal: only stop()
  await started.opened;
  await sink.stop();
  await running;
  await sink.stop(); // idempotent
  await sink.done;
  assert.ok(calls < 10, `the pipeline stopped early (${calls} calls)`);
  await assert.rejects(sink.monitor.awaitCompletion(), PipelineStoppedError);
});

test("a failed checkpoint commit is retried on the next interval", async () => {
  const attempts: bigint[] = [];
  const committed = gate();
  let failuresLeft = 2;
  const commit = (p: bigint) => {
    attempts.push(p);
    if (failuresLeft-- > 0) return Promise.reject(new Error("checkpoint store down"));
    committed.open();
    return Promise.resolve();
  };
  const sink = streamsSink({ statsIntervalMs: 0, commitIntervalMs: 1, handler: () => {} });
  const writer = sink.writable.getWriter();
  await writer.write({ ...batch(7, [["A-1", 0]], true), commit });
  await committed.opened; // by the interval's retries
  assert.deepEqual(attempts, [7n, 7n, 7n]);
  await writer.close();
  assert.deepEqual(attempts, [7n, 7n, 7n], "nothing new to commit on stop");
  assert.equal(sink.stats().tranches[0].committed, 7n);
});

test("a final checkpoint commit that fails rejects run() with that error", async () => {
  const store = createMemoryStore();
  await store.append("A-1", [{ type: "T", data: 0 }], 0);
  const failing = memoryCheckpoints();
  const checkpoints = {
    ...failing,
    commit: () => Promise.reject(new Error("checkpoint store down")),
  };
  const sink = streamsSink({ statsIntervalMs: 0, commitIntervalMs: 60_000, handler: () => {} });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints }), sink, { signal: ac.signal });
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 1000 });
  ac.abort();
  await assert.rejects(running, /checkpoint store down/);
});

test("a checkpoint commit that throws synchronously is a failed commit, not a crash", async () => {
  // The commit interval runs the same code as flush(): a synchronous throw escaping it there
  // would be an uncaught exception in a timer, which ends the process.
  const sink = streamsSink({ statsIntervalMs: 0, commitIntervalMs: 60_000, handler: () => {} });
  const writer = sink.writable.getWriter();
  try {
    const commit = () => {
      throw new Error("commit threw");
    };
    await writer.write({ ...batch(1, [], true), commit });
    let flushed: Promise<void> | undefined;
    assert.doesNotThrow(() => {
      flushed = sink.flush();
    }, "flush() reports a failed commit through its promise");
    await assert.rejects(flushed!, /commit threw/);
  } finally {
    await writer.close().catch(() => {});
  }
});

test("an already aborted signal stops the pipeline before anything is handled", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  await store.append("A-1", [{ type: "T", data: 0 }], 0);
  let calls = 0;
  const sink = streamsSink({ statsIntervalMs: 0, handler: () => void calls++ });
  const ac = new AbortController();
  ac.abort();
  await run(memorySource({ store, checkpoints, group: "g" }), sink, { signal: ac.signal });
  assert.equal(calls, 0);
  assert.equal(await checkpoints.load(KEY), undefined);
});

test("awaitCompletion", async (t) => {
  await t.step(
    "without tail: everything ingested is handled; with tail: also every tranche at its tail",
    async () => {
      const handled: number[] = [];
      const sink = streamsSink({
        statsIntervalMs: 0,
        handler: (_s, events) => void handled.push(...events.map((e) => e.index)),
      });
      const writer = sink.writable.getWriter();
      await writer.write(batch(1, [["A-1", 0]], false));
      await sink.monitor.awaitCompletion({ timeoutMs: 1000 });
      assert.deepEqual(handled, [0]);
      await assert.rejects(
        sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30 }),
        (e: unknown) => e instanceof ImpelError && e.code === "Timeout",
        "not at the tail yet",
      );
      const atTail = sink.monitor.awaitCompletion({ tail: true, timeoutMs: 1000 });
      await writer.write(batch(2, [["A-1", 1]], true));
      await atTail;
      assert.deepEqual(handled, [0, 1]);
      await writer.close();
    },
  );

  await t.step("with tail and several tranches: waits for every tranche", async () => {
    const sink = streamsSink({ statsIntervalMs: 0, handler: () => {} });
    const writer = sink.writable.getWriter();
    await writer.write({ ...batch(1, [["A-1", 0]], true), tranche: "x" });
    await writer.write({ ...batch(1, [["B-1", 0]], false), tranche: "y" });
    await assert.rejects(sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30 }), /timed out/);
    await writer.write({ ...batch(2, [], true), tranche: "y" });
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 1000 });
    await writer.close();
  });

  await t.step("waits for a batch still being handled", async () => {
    const release = gate();
    let finished = false;
    const sink = streamsSink({
      statsIntervalMs: 0,
      handler: async () => {
        await release.opened;
        finished = true;
      },
    });
    const writer = sink.writable.getWriter();
    await writer.write(batch(1, [["A-1", 0]], true));
    const waiting = sink.monitor.awaitCompletion({ tail: true, timeoutMs: 1000 }).then(() =>
      finished
    );
    setTimeout(release.open, 10);
    assert.equal(await waiting, true, "resolved only after the handler finished");
    await writer.close();
  });

  await t.step("after an append, waits for that append to be handled", async () => {
    const store = createMemoryStore();
    const handled: number[] = [];
    const sink = streamsSink({
      statsIntervalMs: 0,
      handler: async (_s, events) => {
        await Promise.resolve();
        handled.push(...events.map((e) => e.index));
      },
    });
    const ac = new AbortController();
    const running = run(memorySource({ store }), sink, { signal: ac.signal });
    try {
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 1000 }); // an empty store is at its tail
      for (let i = 0; i < 20; i++) {
        await store.append("A-1", [{ type: "T", data: i }], i);
        await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 1000 });
        assert.equal(
          handled.length,
          i + 1,
          `append ${i} was handled when awaitCompletion resolved`,
        );
      }
    } finally {
      ac.abort();
      await running;
    }
  });

  await t.step(
    "rejects with PipelineStoppedError when the pipeline stops before the condition holds",
    async () => {
      const release = gate();
      const sink = streamsSink({
        statsIntervalMs: 0,
        stopTimeoutMs: 20, // the handler outlives the stop
        handler: () => release.opened,
      });
      const writer = sink.writable.getWriter();
      await writer.write(batch(1, [["A-1", 0]], true));
      const waiting = sink.monitor.awaitCompletion({ tail: true });
      waiting.catch(() => {}); // asserted below
      await sink.stop();
      await assert.rejects(
        waiting,
        (e: unknown) => e instanceof PipelineStoppedError && e.code === "PipelineStopped",
      );
      await assert.rejects(sink.monitor.awaitCompletion({ tail: false }), PipelineStoppedError);
      release.open();
      await writer.abort().catch(() => {});
    },
  );

  await t.step("resolves a waiter whose condition holds once the stop has drained", async () => {
    const release = gate();
    const sink = streamsSink({
      statsIntervalMs: 0,
      stopTimeoutMs: 1000,
      handler: () => release.opened,
    });
    const writer = sink.writable.getWriter();
    await writer.write(batch(1, [["A-1", 0]], true));
    const waiting = sink.monitor.awaitCompletion({ tail: true });
    const stopping = sink.stop();
    release.open(); // the in-flight call finishes during the drain
    await stopping;
    await waiting;
    await assert.rejects(
      sink.monitor.awaitCompletion(),
      PipelineStoppedError,
      "later waits reject",
    );
    await writer.abort().catch(() => {});
  });

  await t.step("rejects with the fault when the pipeline faults", async () => {
    const sink = streamsSink({
      statsIntervalMs: 0,
      failure: { kind: "fault", maxAttempts: 1 },
      handler: () => {
        throw new Error("no");
      },
    });
    const waiting = sink.monitor.awaitCompletion({ tail: true });
    waiting.catch(() => {});
    const writer = sink.writable.getWriter();
    await writer.write(batch(1, [["A-1", 0]], true)).catch(() => {});
    await assert.rejects(waiting, PipelineFaultError);
    await assert.rejects(sink.done, PipelineFaultError);
    await writer.abort().catch(() => {});
  });
});
