// Failure handling: retries with backoff, dead-lettering, faulting the pipeline, and typed errors
// for bad options, malformed batches and invalid handler results.
import assert from "node:assert/strict";
import {
  type Batch,
  ImpelError,
  InvalidArgumentError,
  InvalidHandlerResultError,
  PipelineFaultError,
  run,
  type StreamFailure,
  type StreamsSink,
  streamsSink,
  type StreamsSinkOptions,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { batchBuilder, ev, KEY, test, within } from "../support/core.ts";

const batch = batchBuilder({ isTail: true });
const quiet = { statsIntervalMs: 0, commitIntervalMs: 5 } as const;

test("a throwing handler is retried with backoff until it succeeds; stats show it failing meanwhile", async () => {
  const store = createMemoryStore();
  await store.append("A-1", [{ type: "T", data: 0 }, { type: "T", data: 1 }], 0);
  await store.append("B-1", [{ type: "T", data: 0 }], 0);
  const seen: Array<
    {
      attempt: number;
      at: number;
      events: number[];
      failing: string[];
      failingAttempts?: number;
      error?: string;
      busyAttempts?: number;
      failures: number;
    }
  > = [];
  const handledB: number[] = [];
  const checkpoints = memoryCheckpoints();
  const sink: StreamsSink = streamsSink({
    ...quiet,
    retry: { initialDelayMs: 4, factor: 2, maxDelayMs: 100, jitter: 0 },
    handler: async (stream, events, ctx) => {
      await Promise.resolve();
      if (stream === "B-1") return void handledB.push(...events.map((e) => e.index));
      const s = sink.stats();
      seen.push({
        attempt: ctx.attempt,
        at: performance.now(),
        events: events.map((e) => e.index),
        failing: s.failing.map((f) => f.stream),
        failingAttempts: s.failing[0]?.attempts,
        error: (s.failing[0]?.error as Error | undefined)?.message,
        busyAttempts: s.busy.find((b) => b.stream === "A-1")?.attempts,
        failures: s.counters.failures,
      });
      if (ctx.attempt < 4) throw new Error(`attempt ${ctx.attempt} failed`);
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "g" }), sink, {
    signal: ac.signal,
  });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
    assert.deepEqual(seen.map((s) => s.attempt), [1, 2, 3, 4]);
    for (const s of seen) assert.deepEqual(s.events, [0, 1], "every attempt gets the same events");
    assert.deepEqual(seen[0].failing, []);
    for (let k = 1; k < 4; k++) {
      // While attempt k+1 runs, the stream shows as failing after k attempts, with the last error.
      assert.deepEqual(seen[k].failing, ["A-1"], `attempt ${k + 1}`);
      assert.equal(seen[k].failingAttempts, k);
      assert.equal(seen[k].error, `attempt ${k} failed`);
      assert.equal(seen[k].busyAttempts, k + 1);
      assert.equal(seen[k].failures, k);
      // Backoff: 4, 8, 16 ms (no jitter); a timer may fire up to a millisecond early.
      assert.ok(
        seen[k].at - seen[k - 1].at >= 4 * 2 ** (k - 1) - 1,
        `delay before attempt ${k + 1}`,
      );
    }
    assert.deepEqual(handledB, [0], "another stream carried on");
    const stats = sink.stats();
    assert.deepEqual(stats.failing, []);
    assert.equal(stats.counters.failures, 3);
    assert.ok(stats.latency.failed.count > 0, "failed calls show in the failed latency"); // sampled
  } finally {
    ac.abort();
    await running;
  }
  assert.equal(await checkpoints.load(KEY), BigInt(store.head));
});

test("dead-letter: after N attempts the stream is parked and the pipeline moves past it", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  await store.append("A-1", [{ type: "Poison", data: 0 }, { type: "Poison", data: 1 }], 0);
  const parked: StreamFailure[] = [];
  const handled = new Map<string, number[]>();
  let bHandledAtPark = -1;
  const sink = streamsSink({
    ...quiet,
    retry: { initialDelayMs: 5, maxDelayMs: 5, jitter: 0 },
    failure: {
      kind: "deadLetter",
      maxAttempts: 3,
      deadLetter: (f) => {
        parked.push(f);
        bHandledAtPark = handled.get("B-1")?.length ?? 0;
      },
    },
    handler: (stream, events, ctx) => {
      if (events.some((e) => e.type === "Poison")) {
        // Other streams' events arrive while this one is failing.
        if (ctx.attempt === 1) {
          void store.append("B-1", [{ type: "T", data: 0 }, { type: "T", data: 1 }], 0);
        }
        throw new Error(`poison in ${stream}`);
      }
      handled.set(stream, [...handled.get(stream) ?? [], ...events.map((e) => e.index)]);
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "g", maxBatchSize: 1 }), sink, {
    signal: ac.signal,
  });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
    assert.equal(parked.length, 1);
    assert.equal(parked[0].stream, "A-1");
    assert.deepEqual(parked[0].events.map((e) => e.index), [0, 1]);
    assert.equal(parked[0].attempts, 3);
    assert.match(String(parked[0].error), /poison in A-1/);
    assert.equal(bHandledAtPark, 2, "B-1 was handled while A-1 was failing");
    // The parked stream carries on from after the parked events.
    await store.append("A-1", [{ type: "T", data: 2 }], 2);
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
    assert.deepEqual(handled.get("A-1"), [2]);
    assert.deepEqual(handled.get("B-1"), [0, 1]);
    const stats = sink.stats();
    assert.equal(stats.counters.deadLettered, 1);
    assert.deepEqual(stats.failing, []);
  } finally {
    ac.abort();
    await running;
  }
  assert.equal(
    await checkpoints.load(KEY),
    BigInt(store.head),
    "the checkpoint moved past the parked events",
  );
});

test("dead-letter: a dead-letter callback that throws keeps the stream failing and the checkpoint behind it", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  await store.append("A-1", [{ type: "Poison", data: 0 }], 0);
  await store.append("B-1", [{ type: "T", data: 0 }], 0);
  const parkCalls: Array<
    { attempts: number; checkpoint: bigint | undefined; completed: bigint | undefined }
  > = [];
  let handlerCalls = 0;
  const sink: StreamsSink = streamsSink({
    ...quiet,
    commitIntervalMs: 1,
    retry: { initialDelayMs: 2, maxDelayMs: 2, jitter: 0 },
    failure: {
      kind: "deadLetter",
      maxAttempts: 2,
      deadLetter: async (f) => {
        parkCalls.push({
          attempts: f.attempts,
          checkpoint: await checkpoints.load(KEY),
          completed: sink.stats().tranches[0].completed,
        });
        if (parkCalls.length === 1) throw new Error("dead-letter store unavailable");
      },
    },
    handler: (stream) => {
      if (stream === "A-1") {
        handlerCalls++;
        throw new Error("poison");
      }
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "g", maxBatchSize: 1 }), sink, {
    signal: ac.signal,
  });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
    assert.equal(parkCalls.length, 2, "parking was retried");
    assert.deepEqual(parkCalls.map((p) => p.attempts), [2, 3]);
    assert.equal(handlerCalls, 3, "the handler was retried between the two parking attempts");
    for (const p of parkCalls) {
      // A-1's batch is the first (position 1): nothing may be completed or committed before it parks.
      assert.equal(p.completed, undefined);
      assert.equal(p.checkpoint, undefined);
    }
    assert.equal(sink.stats().counters.deadLettered, 1);
  } finally {
    ac.abort();
    await running;
  }
  assert.equal(await checkpoints.load(KEY), 2n);
});

test("fault: run() rejects with a PipelineFaultError naming the stream", async () => {
  const store = createMemoryStore();
  await store.append("A-1", [{ type: "T", data: 0 }], 0);
  const sink = streamsSink({
    ...quiet,
    retry: { initialDelayMs: 1, maxDelayMs: 1, jitter: 0 },
    failure: { kind: "fault", maxAttempts: 2 },
    handler: () => {
      throw new Error("kaput");
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store }), sink, { signal: ac.signal });
  try {
    const outcome = await within(running, 3000);
    const doneOutcome = await within(sink.done, 0);
    assert.ok(
      !outcome.timedOut,
      `run() had not settled 3 s after the fault (sink.done: ${
        doneOutcome.error ?? doneOutcome.value ?? "pending"
      })`,
    );
    const error = outcome.error;
    assert.ok(error instanceof PipelineFaultError, `expected a PipelineFaultError, got ${error}`);
    assert.equal(error.code, "PipelineFault");
    assert.match(error.message, /A-1/);
    assert.equal(error.failures[0].stream, "A-1");
    assert.equal(error.failures[0].attempts, 2);
    assert.match(String(error.cause), /kaput/);
  } finally {
    ac.abort();
    await running.catch(() => {});
  }
});

test("fault: sink.done and awaitCompletion reject with the fault; the checkpoint stays behind the failing batch", async () => {
  const commits: bigint[] = [];
  let calls = 0;
  const sink = streamsSink({
    ...quiet,
    commitIntervalMs: 1,
    retry: { initialDelayMs: 1, maxDelayMs: 1, jitter: 0 },
    failure: { kind: "fault", maxAttempts: 3 },
    handler: (stream) => {
      if (stream === "Bad-1") {
        calls++;
        throw new Error("kaput");
      }
    },
  });
  const waiting = sink.monitor.awaitCompletion({ tail: true });
  waiting.catch(() => {}); // asserted below, after the fault
  const writer = sink.writable.getWriter();
  const commit = (p: bigint) => Promise.resolve(void commits.push(p));
  await writer.write({ ...batch(1, [["Good-1", 0]], false), commit });
  await writer.write({ ...batch(2, [["Bad-1", 0], ["Good-1", 1]], false), commit });
  await writer.write({ ...batch(3, [["Good-2", 0]]), commit });
  const error = await sink.done.then(() => undefined, (e) => e);
  assert.ok(error instanceof PipelineFaultError, `expected a PipelineFaultError, got ${error}`);
  assert.match(error.message, /Bad-1 failed 3 times/);
  assert.deepEqual(error.failures.map((f) => f.stream), ["Bad-1"]);
  assert.equal(calls, 3, "no attempts after the fault");
  await assert.rejects(waiting, (e) => e === error);
  await assert.rejects(
    sink.monitor.awaitCompletion(),
    (e) => e === error,
    "later waits reject at once",
  );
  assert.ok(commits.every((p) => p < 2n), `commits ${commits} passed the failing batch`);
  assert.equal(commits.at(-1), 1n, "the final flush committed what was complete");
  await writer.abort().catch(() => {});
});

test("fault: more failing streams than maxFailingStreams faults the pipeline", async () => {
  const sink = streamsSink({
    ...quiet,
    retry: { initialDelayMs: 50, maxDelayMs: 50, jitter: 0 },
    failure: { kind: "fault", maxAttempts: 100, maxFailingStreams: 1 },
    handler: () => {
      throw new Error("down");
    },
  });
  const writer = sink.writable.getWriter();
  await writer.write(batch(1, [["A-1", 0], ["B-1", 0], ["C-1", 0]]));
  const error = await sink.done.then(() => undefined, (e) => e);
  assert.ok(error instanceof PipelineFaultError, `expected a PipelineFaultError, got ${error}`);
  assert.match(error.message, /2 streams failing \(limit 1\)/);
  assert.deepEqual(error.failures.map((f) => f.stream).sort(), ["A-1", "B-1"]);
  await writer.abort().catch(() => {});
});

test("fault: a handler that hangs past maxStuckMs faults the pipeline, naming the stream", async () => {
  const store = createMemoryStore();
  await store.append("A-1", [{ type: "T", data: 0 }], 0);
  await store.append("B-1", [{ type: "T", data: 0 }], 0);
  const handled: string[] = [];
  const sink = streamsSink({
    ...quiet,
    stuckAfterMs: 20,
    stopTimeoutMs: 10,
    failure: { kind: "fault", maxStuckMs: 40 },
    // A-1 never finishes on its own; it gives up only when the stop aborts its signal.
    handler: (stream, _events, { signal }) => {
      if (stream !== "A-1") return void handled.push(stream);
      return new Promise<void>((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    },
  });
  const outcome = await within(run(memorySource({ store }), sink), 3000);
  assert.ok(!outcome.timedOut, "a hung handler must fault the pipeline, not stall it");
  const error = outcome.error;
  assert.ok(error instanceof PipelineFaultError, `expected a PipelineFaultError, got ${error}`);
  assert.match(error.message, /without progress for 40 ms/);
  assert.deepEqual(error.failures.map((f) => f.stream), ["A-1"]);
  assert.deepEqual(handled, ["B-1"], "other streams carried on meanwhile");
});

test("fault: maxStuckMs below stuckAfterMs is rejected, since it could never apply", () => {
  assert.throws(
    () =>
      streamsSink({
        ...quiet,
        stuckAfterMs: 1000,
        failure: { kind: "fault", maxStuckMs: 10 },
        handler: () => {},
      }),
    (e) => e instanceof InvalidArgumentError && e.field === "failure.maxStuckMs",
  );
});

test("invalid handler results are typed failures, never silent progress", async (t) => {
  for (const value of ["3", -1, 1.5, NaN, Infinity, null, {}, 2n]) {
    await t.step(
      `returning ${typeof value === "bigint" ? "2n" : JSON.stringify(value) ?? String(value)}`,
      async () => {
        const sink = streamsSink({
          ...quiet,
          failure: { kind: "fault", maxAttempts: 1 },
          handler: () => value as unknown as number,
        });
        const writer = sink.writable.getWriter();
        await writer.write(batch(1, [["A-1", 0], ["A-1", 1]]));
        const error = await sink.done.then(() => undefined, (e) => e);
        assert.ok(
          error instanceof PipelineFaultError,
          `expected a PipelineFaultError, got ${error}`,
        );
        assert.ok(error.cause instanceof InvalidHandlerResultError, `cause: ${error.cause}`);
        assert.equal((error.cause as ImpelError).code, "InvalidHandlerResult");
        assert.match((error.cause as Error).message, /A-1/);
        assert.equal(sink.stats().counters.handled, 0);
        await writer.abort().catch(() => {});
      },
    );
  }
  await t.step(
    "under the retry policy the stream shows as failing until the handler returns a valid index",
    async () => {
      let calls = 0;
      let failingSeen: unknown;
      const sink: StreamsSink = streamsSink({
        ...quiet,
        retry: { initialDelayMs: 1, maxDelayMs: 1, jitter: 0 },
        handler: (_stream, events) => {
          calls++;
          if (calls === 2) failingSeen = sink.stats().failing[0]?.error;
          return calls === 1 ? -5 : events[0].index + events.length;
        },
      });
      const writer = sink.writable.getWriter();
      await writer.write(batch(1, [["A-1", 0]]));
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
      assert.equal(calls, 2);
      assert.ok(failingSeen instanceof InvalidHandlerResultError, `failing error: ${failingSeen}`);
      assert.equal(sink.stats().counters.handled, 1);
      await writer.close();
    },
  );
});

test("invalid options are rejected with InvalidArgumentError naming the option", async (t) => {
  const handler = () => {};
  const cases: Array<[string, Partial<Record<keyof StreamsSinkOptions, unknown>>]> = [
    ["handler", { handler: undefined }],
    ["handler", { handler: "f" }],
    ["maxConcurrentStreams", { maxConcurrentStreams: 0 }],
    ["maxConcurrentStreams", { maxConcurrentStreams: 1.5 }],
    ["maxConcurrentStreams", { maxConcurrentStreams: "2" }],
    ["maxEventsPerCall", { maxEventsPerCall: 0 }],
    ["maxBytesPerCall", { maxBytesPerCall: 0 }],
    ["maxBytesPerCall", { maxBytesPerCall: NaN }],
    ["maxReadAhead", { maxReadAhead: 0 }],
    ["maxReadAhead", { maxReadAhead: Infinity }],
    ["commitIntervalMs", { commitIntervalMs: 0 }],
    ["stopTimeoutMs", { stopTimeoutMs: -1 }],
    ["statsIntervalMs", { statsIntervalMs: -1 }],
    ["stuckAfterMs", { stuckAfterMs: -1 }],
    ["retry.initialDelayMs", { retry: { initialDelayMs: -1 } }],
    ["retry.maxDelayMs", { retry: { initialDelayMs: 10, maxDelayMs: 5 } }],
    ["retry.factor", { retry: { factor: 0.5 } }],
    ["retry.jitter", { retry: { jitter: 2 } }],
    ["failure.kind", { failure: { kind: "ignore" } }],
    ["failure.maxAttempts", {
      failure: { kind: "deadLetter", maxAttempts: 0, deadLetter: () => {} },
    }],
    ["failure.deadLetter", { failure: { kind: "deadLetter", maxAttempts: 1 } }],
    ["failure.maxAttempts", { failure: { kind: "fault", maxAttempts: 0 } }],
    ["failure.maxFailingStreams", { failure: { kind: "fault", maxFailingStreams: -1 } }],
  ];
  for (const [field, override] of cases) {
    await t.step(`${field}: ${JSON.stringify(override)}`, () => {
      assert.throws(
        () => streamsSink({ handler, statsIntervalMs: 0, ...override } as StreamsSinkOptions),
        (e: unknown) => {
          assert.ok(e instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${e}`);
          assert.equal(e.code, "InvalidArgument");
          assert.equal(e.field, field);
          return true;
        },
      );
    });
  }
  await t.step("no options at all", () => {
    assert.throws(
      () => streamsSink(undefined as unknown as StreamsSinkOptions),
      (e: unknown) => e instanceof ImpelError,
      "a JavaScript caller that passes nothing should get a typed error, not a TypeError",
    );
  });
});

test("malformed batches fail run() with a typed error after handling what came before", async (t) => {
  const good = batch(1, [["A-1", 0]], false);
  const bad: Array<[string, unknown]> = [
    ["null", null],
    ["no tranche", { ...batch(2, [["A-1", 1]]), tranche: "" }],
    ["items not an array", { ...batch(2, []), items: "x" }],
    ["number position", { ...batch(2, [["A-1", 1]]), position: 2 }],
    ["negative index", batch(2, [["A-1", -1]])],
    ["fractional index", batch(2, [["A-1", 1.5]])],
    ["item without event", { ...batch(2, []), items: [{ stream: "A-1" }] }],
    ["stream not a string", { ...batch(2, []), items: [{ stream: 7, event: ev(1) }] }],
    ["isTail missing", { ...batch(2, [["A-1", 1]]), isTail: undefined }],
    ["commit not a function", { ...batch(2, [["A-1", 1]]), commit: 1 }],
  ];
  for (const [what, value] of bad) {
    await t.step(what, async () => {
      const handled: number[] = [];
      const commits: bigint[] = [];
      const sink = streamsSink({
        ...quiet,
        handler: (_s, events) => void handled.push(...events.map((e) => e.index)),
      });
      const source = new ReadableStream<Batch>({
        start(controller) {
          controller.enqueue({ ...good, commit: (p) => Promise.resolve(void commits.push(p)) });
          controller.enqueue(value as Batch);
        },
      });
      const outcome = await within(run(source, sink), 3000);
      assert.ok(!outcome.timedOut, "run() settled");
      const error = outcome.error;
      assert.ok(error instanceof ImpelError, `expected an ImpelError, got ${error}`);
      assert.equal(error.code, "InvalidBatch");
      assert.deepEqual(handled, [0]);
      assert.deepEqual(commits, [1n]);
      assert.equal(sink.stats().counters.batches, 1, "the bad batch changed nothing");
      await sink.done;
    });
  }
});
