// A bad record fails its stream, not the source (semantic 14); permanent gaps are reported at
// once and handled by the gap policy; failing commits can fault the pipeline.
import assert from "node:assert/strict";
import {
  type Batch,
  ImpelError,
  PipelineFaultError,
  run,
  type StreamFailure,
  StreamGapError,
  streamsSink,
} from "../../mod.ts";
import { ev, sleep, test, within } from "../support/core.ts";

class BadRecordError extends ImpelError {
  constructor(what: string) {
    super("BadRecord", what);
  }
}

const batchOf = (
  position: number,
  items: Array<[string, number, Error?]>,
  extra: Partial<Batch> = {},
): Batch => ({
  tranche: "0",
  position: BigInt(position),
  isTail: false,
  items: items.map(([stream, i, invalid]) => ({ stream, event: ev(i), invalid })),
  ...extra,
});

test("an invalid record never reaches the handler: it is parked by the deadLetter policy and its stream moves on", async () => {
  const seen: string[] = [];
  const parked: StreamFailure[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1 },
    failure: { kind: "deadLetter", maxAttempts: 2, deadLetter: (f) => void parked.push(f) },
    handler: (stream, events) => void seen.push(...events.map((e) => `${stream}@${e.index}`)),
  });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [
    ["A-1", 0],
    ["A-1", 1, new BadRecordError("not JSON")],
    ["A-1", 2],
    ["B-1", 0],
  ]));
  await sleep(30);
  assert.deepEqual(seen.sort(), ["A-1@0", "A-1@2", "B-1@0"]);
  assert.equal(parked.length, 1);
  assert.equal(parked[0].stream, "A-1");
  assert.deepEqual(parked[0].events.map((e) => e.index), [1]);
  assert.ok(parked[0].error instanceof BadRecordError);
  assert.equal(parked[0].attempts, 2);
  assert.equal(sink.stats().counters.failures, 2);
  assert.equal(sink.stats().tranches[0].completed, 1n);
  await sink.stop();
});

test("an invalid record under the fault policy rejects run() with its error as the cause", async () => {
  const sink = streamsSink({
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1 },
    failure: { kind: "fault", maxAttempts: 1 },
    handler: () => {},
  });
  const source = ReadableStream.from([batchOf(1, [["A-1", 0, new BadRecordError("corrupt")]])]);
  const result = await within(run(source, sink), 2000);
  assert.ok(result.error instanceof PipelineFaultError, `got ${result.error}`);
  assert.ok((result.error as Error).cause instanceof BadRecordError);
});

test("an invalid record under the retry policy shows its stream as failing, others carry on", async () => {
  const seen: string[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1, maxDelayMs: 5 },
    handler: (stream) => void seen.push(stream),
  });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [["A-1", 0, new BadRecordError("corrupt")], ["B-1", 0]]));
  await sleep(30);
  assert.deepEqual(seen, ["B-1"]);
  const failing = sink.stats().failing;
  assert.equal(failing.length, 1);
  assert.equal(failing[0].stream, "A-1");
  assert.ok(failing[0].attempts > 1);
  await sink.stop();
});

test("a permanent gap faults the pipeline by default, naming the stream and the missing indexes", async () => {
  const sink = streamsSink({ statsIntervalMs: 0, handler: () => {} });
  const source = ReadableStream.from([
    batchOf(1, [["A-1", 0]], { gapsAreFinal: true }),
    batchOf(2, [["A-1", 3], ["B-1", 0]], { gapsAreFinal: true }),
  ]);
  const result = await within(run(source, sink), 2000);
  assert.ok(result.error instanceof PipelineFaultError, `got ${result.error}`);
  const cause = (result.error as Error).cause;
  assert.ok(cause instanceof StreamGapError);
  assert.equal(cause.stream, "A-1");
  assert.equal(cause.missingFrom, 1);
  assert.equal(cause.next, 3);
  assert.match((result.error as Error).message, /A-1: events 1 to 2 are missing/);
});

test("gaps: skip moves past a permanent gap, counts it and handles what follows", async () => {
  const seen: string[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    gaps: "skip",
    handler: (stream, events) => void seen.push(...events.map((e) => `${stream}@${e.index}`)),
  });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [["A-1", 0]], { gapsAreFinal: true }));
  await sleep(5);
  await writer.write(batchOf(2, [["A-1", 3], ["A-1", 4]], { gapsAreFinal: true }));
  await sleep(5);
  assert.deepEqual(seen, ["A-1@0", "A-1@3", "A-1@4"]);
  assert.equal(sink.stats().counters.gapsSkipped, 1);
  assert.equal(sink.stats().tranches[0].completed, 2n);
  await sink.stop();
});

test("a gap in a batch not marked final waits for the missing events", async () => {
  const seen: string[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    handler: (stream, events) => void seen.push(...events.map((e) => `${stream}@${e.index}`)),
  });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [["A-1", 0]]));
  await sleep(5);
  await writer.write(batchOf(2, [["A-1", 2]]));
  await sleep(5);
  assert.deepEqual(seen, ["A-1@0"]);
  await writer.write(batchOf(3, [["A-1", 1]]));
  await sleep(5);
  assert.deepEqual(seen, ["A-1@0", "A-1@1", "A-1@2"]);
  await sink.stop();
});

test("gaps: deadLetter needs the deadLetter failure policy", () => {
  assert.throws(
    () => streamsSink({ handler: () => {}, gaps: "deadLetter" }),
    (e: Error & { code?: string }) => e.code === "InvalidArgument" && /gaps/.test(e.message),
  );
  assert.throws(
    () => streamsSink({ handler: () => {}, gaps: "sometimes" as "skip" }),
    (e: Error & { code?: string }) => e.code === "InvalidArgument",
  );
});

test("commits failing for maxCommitFailureMs fault the pipeline within a commit interval", async () => {
  const sink = streamsSink({
    statsIntervalMs: 0,
    commitIntervalMs: 20,
    failure: { kind: "fault", maxCommitFailureMs: 100 },
    handler: () => {},
  });
  const started = Date.now();
  const source = new ReadableStream<Batch>({
    start(c) {
      c.enqueue(batchOf(1, [["A-1", 0]], {
        commit: () => Promise.reject(new Error("relation impel_checkpoints does not exist")),
      }));
    },
  });
  const result = await within(run(source, sink), 3000);
  const elapsed = Date.now() - started;
  assert.ok(result.error instanceof PipelineFaultError, `got ${JSON.stringify(result)}`);
  assert.match((result.error as Error).message, /commits of tranche 0 have failed/);
  assert.match((result.error as Error).message, /impel_checkpoints does not exist/);
  assert.ok(elapsed >= 100 && elapsed < 100 + 20 + 200, `faulted after ${elapsed} ms`);
});

test("a stuck stream faults within max(commitIntervalMs, maxStuckMs / 4) of maxStuckMs", async () => {
  const sink = streamsSink({
    statsIntervalMs: 0,
    commitIntervalMs: 20,
    stuckAfterMs: 50,
    stopTimeoutMs: 10,
    failure: { kind: "fault", maxStuckMs: 200 },
    handler: () => new Promise<void>(() => {}),
  });
  const started = Date.now();
  const source = new ReadableStream<Batch>({
    start(c) {
      c.enqueue(batchOf(1, [["A-1", 0]]));
    },
  });
  const result = await within(run(source, sink), 3000);
  const elapsed = Date.now() - started;
  assert.ok(result.error instanceof PipelineFaultError, `got ${JSON.stringify(result)}`);
  assert.ok(elapsed >= 200 && elapsed <= 200 + 50 + 150, `faulted after ${elapsed} ms`);
});

test("invalid records after a handler jumped ahead still reach the failure policy; nothing is committed past them unhandled", async () => {
  const seen: string[] = [];
  const parked: StreamFailure[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1 },
    failure: { kind: "deadLetter", maxAttempts: 1, deadLetter: (f) => void parked.push(f) },
    handler: (stream, events) => {
      seen.push(...events.map((e) => `${stream}@${e.index}`));
      return events[0].index === 0 ? 50 : undefined; // the stream is known to be at 50
    },
  });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [["A-1", 0], ["A-1", 1], ["A-1", 2]]));
  await sleep(5);
  // The source numbered what followed from its own count: 3 and 4, below the write position.
  await writer.write(batchOf(2, [["A-1", 3, new BadRecordError("corrupt span")]]));
  await writer.write(batchOf(3, [["A-1", 4, new BadRecordError("after the invalid record")]]));
  await sleep(30);
  assert.deepEqual(seen, ["A-1@0", "A-1@1", "A-1@2"]);
  assert.equal(parked.length, 2, "both unreadable records reach the dead-letter callback");
  assert.equal(sink.stats().counters.duplicates, 0, "dead-lettered events are not duplicates");
  assert.equal(sink.stats().tranches[0].completed, 3n);
  await sink.stop();
});

test("a final commit still runs when the interval commit before it failed", async () => {
  const attempts: bigint[] = [];
  let fail = true;
  const sink = streamsSink({ statsIntervalMs: 0, commitIntervalMs: 5, handler: () => {} });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf(1, [["A-1", 0]], {
    commit: async (p) => {
      attempts.push(p);
      const failing = fail;
      await sleep(20);
      if (failing) throw new Error("store down");
    },
  }));
  await sleep(10); // the interval commit is in flight
  fail = false;
  await sink.stop();
  assert.ok(attempts.length >= 2, `the final commit was not tried again: ${attempts.length}`);
  assert.equal(sink.stats().tranches[0].committed, 1n);
});

test("a source failing for maxSourceFailureMs faults the pipeline; degraded problems do not", async () => {
  const failingSince = Date.now();
  let severity: "degraded" | "failing" = "degraded";
  const sink = streamsSink({
    statsIntervalMs: 0,
    commitIntervalMs: 10,
    failure: { kind: "fault", maxSourceFailureMs: 100 },
    handler: () => {},
  });
  const source = Object.assign(new ReadableStream<Batch>(), {
    problems: () => [{
      severity,
      reason: "reads of orders keep failing: ECONNREFUSED",
      since: failingSince,
    }],
  });
  const running = run(source, sink);
  assert.ok((await within(running, 200)).timedOut, "a degraded source must not fault");
  severity = "failing";
  const result = await within(running, 1000);
  assert.ok(result.error instanceof PipelineFaultError, `got ${JSON.stringify(result)}`);
  assert.match(
    (result.error as Error).message,
    /source has been failing for \d+ ms: reads of orders/,
  );
});
