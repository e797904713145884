// The paged reader's start policy for tranches found while the source runs, the problems() of
// several failing parts of one read, and a page's readAgainAt.
import assert from "node:assert/strict";
import type { Batch, BatchItem } from "../../mod.ts";
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

/** Every tranche holds 3 events (positions 0..2) and its tail is 3. */
const threeEach: ReadPage = (tranche, position) =>
  Promise.resolve(
    position === undefined || position < 3n
      ? {
        items: [0, 1, 2].slice(Number(position ?? 0n)).map((k) => item(`${tranche}-1`, k)),
        next: 3n,
        isTail: true,
      }
      : { items: [], next: position, isTail: true },
  );

async function readUntil(stream: ReadableStream<Batch>, done: (b: Batch[]) => boolean) {
  const batches: Batch[] = [];
  const reader = stream.getReader();
  const deadline = Date.now() + 5000;
  try {
    while (!done(batches)) {
      assert.ok(Date.now() < deadline, "in time");
      const { value } = await reader.read();
      if (value) batches.push(value);
    }
  } finally {
    await reader.cancel();
  }
  return batches;
}

for (const policy of ["whenNoCheckpoint", "startFrom"] as const) {
  test(`${policy}: "tail" starts the first listing's tranches at their tail, a tranche found later from its beginning`, async () => {
    let listings = 0;
    const source = feedSource({
      name: "f",
      readTranches: () => Promise.resolve(++listings === 1 ? ["a"] : ["a", "b"]),
      tranchesRefreshMs: 20,
      readPage: threeEach,
      readTail: () => Promise.resolve(3n),
      checkpoints: memoryCheckpoints(),
      ...(policy === "startFrom" ? { startFrom: "tail" } : { whenNoCheckpoint: "tail" }),
      tailSleepMs: 10,
    });
    const batches = await readUntil(source, (bs) => bs.some((b) => b.tranche === "b" && b.isTail));
    const of = (t: string) => batches.filter((b) => b.tranche === t);
    assert.deepEqual(of("a").flatMap((b) => b.items), [], "a starts at its tail");
    assert.deepEqual(of("a")[0].position, 3n);
    assert.deepEqual(
      of("b").flatMap((b) => b.items.map((i) => i.event.index)),
      [0, 1, 2],
      "what was written to b before it was found is read",
    );
    assert.deepEqual([of("b")[0].position, of("b")[0].isTail, of("b")[0].commit], [
      0n,
      false,
      undefined,
    ]);
  });
}

test("a stored checkpoint still wins for a tranche found later", async () => {
  const checkpoints = memoryCheckpoints();
  await checkpoints.commit({ source: "f", tranche: "b", group: "default" }, 2n);
  let listings = 0;
  const source = feedSource({
    name: "f",
    readTranches: () => Promise.resolve(++listings === 1 ? ["a"] : ["a", "b"]),
    tranchesRefreshMs: 20,
    readPage: threeEach,
    readTail: () => Promise.resolve(3n),
    checkpoints,
    whenNoCheckpoint: "tail",
    tailSleepMs: 10,
  });
  const batches = await readUntil(source, (bs) => bs.some((b) => b.tranche === "b" && b.isTail));
  assert.deepEqual(
    batches.filter((b) => b.tranche === "b").flatMap((b) => b.items.map((i) => i.event.index)),
    [2],
  );
});

test("problems(): several failing parts of one read keep the since of the first failure until all succeed", async () => {
  const t0 = Date.now();
  let fixedX = false, fixedY = false;
  const failUntil = (fixed: () => boolean, what: string) => () =>
    fixed() ? Promise.resolve(what) : Promise.reject(new Error(`${what} unavailable`));
  const readPage: ReadPage = async (_tranche, position, _signal, context) => {
    await Promise.all([
      context!.retry("reading x", failUntil(() => fixedX, "x")),
      context!.retry("reading y", failUntil(() => fixedY, "y")),
    ]);
    return { items: [], next: position ?? 0n, isTail: true };
  };
  const source = feedSource({
    name: "f",
    tranches: ["a"],
    readPage,
    retry: { initialDelayMs: 5, maxDelayMs: 5 },
    tailSleepMs: 10,
  });
  const reader = source.getReader();
  await reader.read(); // the announcement
  const pending = reader.read();
  try {
    const deadline = Date.now() + 5000;
    while ((source.problems?.() ?? []).length === 0) {
      assert.ok(Date.now() < deadline);
      await new Promise((r) => setTimeout(r, 5));
    }
    const [first] = source.problems!();
    assert.equal(first.severity, "degraded");
    assert.equal(first.tranche, "a");
    assert.ok(first.since >= t0 && first.since <= Date.now());
    await new Promise((r) => setTimeout(r, 40));
    fixedX = true; // x recovers, y still fails: the trouble goes on, since the same time
    await new Promise((r) => setTimeout(r, 40));
    const later = source.problems!();
    assert.equal(later.length, 1);
    assert.equal(later[0].since, first.since, "since is when the failures began");
    assert.match(later[0].reason, /reading y/);
    fixedY = true;
    const { value } = await pending;
    assert.equal(value?.isTail, true);
    assert.deepEqual(source.problems!(), [], "all parts succeeded");
  } finally {
    await reader.cancel();
  }
});

test("a page's readAgainAt replaces the tail sleep", async () => {
  const reads: number[] = [];
  const source = feedSource({
    name: "f",
    tranches: ["a"],
    readPage: (_tranche, position) => {
      reads.push(Date.now());
      return Promise.resolve({
        items: [],
        next: (position ?? 0n) + 1n,
        isTail: true,
        readAgainAt: Date.now() + 30,
      });
    },
    tailSleepMs: 60_000,
  });
  await readUntil(source, (bs) => bs.length >= 4);
  assert.ok(reads.length >= 3);
  assert.ok(reads[2] - reads[1] >= 25 && reads[2] - reads[1] < 2000, `${reads[2] - reads[1]} ms`);
});
