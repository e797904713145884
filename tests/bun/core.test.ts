// The scheduler's newer guarantees under Bun's own web streams and timers: revocation (one owner
// at a time), idle-stream purge, and bad records failing their stream. Run with `bun test tests/bun/`.
import { test } from "bun:test";
import assert from "node:assert/strict";
import { type Batch, createOwnership, type StreamFailure, streamsSink } from "../../mod.ts";

const ev = (index: number) => ({
  index,
  type: "E",
  data: null,
  meta: null,
  id: `${index}`,
  time: new Date(0),
  size: 1,
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("revocation waits for the in-flight call, starts nothing new and commits what was done", async () => {
  const commits: bigint[] = [];
  const started: string[] = [];
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxConcurrentStreams: 1,
    handler: async (stream) => {
      started.push(stream);
      if (stream === "A-1") await held;
    },
  });
  const writer = sink.writable.getWriter();
  const owned = createOwnership("p0");
  const batch = (position: number, stream: string): Batch => ({
    tranche: "p0",
    position: BigInt(position),
    isTail: false,
    items: [{ stream, event: ev(0) }],
    ownership: owned.ownership,
    commit: (p) => {
      commits.push(p);
      return Promise.resolve();
    },
  });
  await writer.write(batch(1, "A-1"));
  await writer.write(batch(2, "A-2"));
  await sleep(5);
  const revoking = owned.revoke();
  await sleep(10);
  release();
  const outcome = await revoking;
  assert.deepEqual(started, ["A-1"]);
  assert.equal(outcome.committed, 1n);
  assert.deepEqual(commits, [1n]);
  await sink.stop();
  assert.deepEqual(commits, [1n], "the revoked tranche is not committed again on stop");
});

test("idle stream states stay bounded by maxIdleStreams", async () => {
  const sink = streamsSink({ statsIntervalMs: 0, maxIdleStreams: 50, handler: () => {} });
  const writer = sink.writable.getWriter();
  for (let b = 0; b < 20; b++) {
    const items = Array.from({ length: 50 }, (_, i) => ({ stream: `S-${b}_${i}`, event: ev(0) }));
    await writer.write({ tranche: "0", position: BigInt(b + 1), isTail: false, items });
  }
  await sleep(5);
  assert.equal(sink.stats().counters.handled, 1000);
  assert.ok(sink.stats().streams <= 100, `${sink.stats().streams} states`);
  await sink.stop();
});

test("an invalid record is dead-lettered without reaching the handler; other streams carry on", async () => {
  const seen: string[] = [];
  const parked: StreamFailure[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1 },
    failure: { kind: "deadLetter", maxAttempts: 1, deadLetter: (f) => void parked.push(f) },
    handler: (stream, events) => void seen.push(`${stream}@${events[0].index}`),
  });
  const writer = sink.writable.getWriter();
  await writer.write({
    tranche: "0",
    position: 1n,
    isTail: false,
    items: [
      { stream: "A-1", event: ev(0), invalid: new Error("does not decode") },
      { stream: "B-1", event: ev(0) },
    ],
  });
  await sleep(20);
  assert.deepEqual(seen, ["B-1@0"]);
  assert.equal(parked.length, 1);
  assert.equal(parked[0].stream, "A-1");
  assert.equal(sink.stats().tranches[0].completed, 1n);
  await sink.stop();
});
