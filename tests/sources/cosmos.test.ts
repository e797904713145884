// The Cosmos change-feed source against the local server (`tools/cosmos.sh start`), whose change
// feed answers the first read of a range with every document and any read with a continuation
// with 304: catch-up from the beginning is tested here, tailing in cosmos_tailing.test.ts
// against a real account. Catch-up of 2,000 events over 100 streams, complete and in order per
// stream, with the continuation committed as the checkpoint's token; a restart resumes from it;
// tips and foreign documents skipped; undecodable events as invalid items; typed refusals.
import assert from "node:assert/strict";
import type { Batch } from "../../core/batch.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { cosmosCheckpoints } from "../../checkpoints/cosmos.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { cosmosStore } from "../../stores/cosmos.ts";
import { cosmosSource, CosmosTokenMissingError, rangeTranche } from "../../sources/cosmos.ts";
import { freshContainer, opts, seed } from "../support/cosmos.ts";

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `cosmos source: ${name}`, ...opts, fn });

/** Runs the source into a recording sink until every tranche is at its tail. */
async function catchUp(
  source: (signal: AbortSignal) => ReadableStream<Batch>,
  group: string,
): Promise<Map<string, number[]>> {
  const seen = new Map<string, number[]>();
  const sink = streamsSink({
    group,
    statsIntervalMs: 0,
    commitIntervalMs: 50,
    handler: (stream, events) => {
      if (!seen.has(stream)) seen.set(stream, []);
      for (const e of events) {
        assert.equal((e.data as { n: number }).n, e.index, "the event's own data");
        seen.get(stream)!.push(e.index);
      }
    },
  });
  const ac = new AbortController();
  const running = run(source(ac.signal), sink, { signal: ac.signal });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 60_000 });
  } finally {
    ac.abort();
    await running;
  }
  return seen;
}

test("catches up 2,000 events over 100 streams from the beginning, complete and in order; a restart resumes from the continuation", async () => {
  await using t = await freshContainer("source");
  await using aux = await freshContainer("aux");
  const store = cosmosStore(t.container);
  const names = await seed(store, 100, 20, 4);
  const checkpoints = cosmosCheckpoints(aux.container);
  const source = (signal: AbortSignal) =>
    cosmosSource({ container: t.container, group: "g", checkpoints, pageSize: 10_000, signal });
  const seen = await catchUp(source, "g");
  assert.equal(seen.size, 100);
  for (const name of names) {
    assert.deepEqual(seen.get(name), Array.from({ length: 20 }, (_, k) => k), name);
  }
  const [saved] = await checkpoints.list(`cosmos:${t.id}`, "g");
  assert.equal(saved.tranche, "-FF", "the container's one feed range");
  // 500 batch documents and 100 tips read.
  const stored = await checkpoints.loadCheckpoint(saved);
  assert.equal(stored?.position, 600n);
  assert.match(stored?.token ?? "", /Continuation/, "the change feed's continuation");
  // From the checkpoint: nothing is read again.
  const again = await catchUp(source, "g");
  assert.equal(again.size, 0, "resumed from the continuation, not the beginning");
  // Another group reads everything from the beginning.
  const other = await catchUp(
    (signal) =>
      cosmosSource({ container: t.container, group: "h", checkpoints, pageSize: 10_000, signal }),
    "h",
  );
  assert.equal([...other.values()].reduce((n, l) => n + l.length, 0), 2_000);
});

test("batches are spans of batch documents: tips and foreign documents are skipped, undecodable events are invalid items", async () => {
  await using t = await freshContainer("source");
  const store = cosmosStore(t.container);
  await store.append("A-1", [{ type: "X", data: 1 }, { type: "Y", data: 2 }], 0);
  await t.container.items.create({ id: "note", p: "A-1", text: "not an append" });
  await t.container.items.create({
    id: "0",
    p: "B-1",
    i: 0,
    n: 2,
    ts: 0,
    e: [{ d: 1, id: "a", s: 1 }, { c: "Ok", d: 2, id: "b", s: 1 }],
  });
  await t.container.items.create({
    id: "0",
    p: "nodash",
    i: 0,
    n: 1,
    ts: 0,
    e: [{ c: "T", id: "c", s: 0 }],
  });
  const ac = new AbortController();
  const source = cosmosSource({ container: t.container, group: "g", signal: ac.signal });
  const items: Batch["items"][number][] = [];
  for await (const batch of source) {
    items.push(...batch.items);
    if (batch.isTail) break;
  }
  ac.abort();
  const summary = items.map((i) => `${i.stream}@${i.event.index}${i.invalid ? "!" : ""}`);
  assert.deepEqual(summary, ["A-1@0", "A-1@1", "B-1@0!", "B-1@1", "nodash@0!"]);
  assert.match(items[2].invalid!.message, /no type/);
  assert.equal(items[4].invalid!.name, "InvalidStreamNameError");
  assert.equal(items[0].event.type, "X");
  assert.equal(rangeTranche({ minInclusive: "", maxExclusive: "FF" }), "-FF");
});

test("startFrom tail reads nothing written before; a checkpoint without a token fails its range", async () => {
  await using t = await freshContainer("source");
  await cosmosStore(t.container).append("A-1", [{ type: "X", data: 1 }], 0);
  const ac = new AbortController();
  const tail = cosmosSource({
    container: t.container,
    group: "g",
    startFrom: "tail",
    signal: ac.signal,
  });
  for await (const batch of tail) {
    assert.equal(batch.items.length, 0);
    if (batch.isTail) break;
  }
  ac.abort();
  const checkpoints = memoryCheckpoints();
  await checkpoints.reset({ source: `cosmos:${t.id}`, tranche: "-FF", group: "g" }, 5n);
  const broken = cosmosSource({ container: t.container, group: "g", checkpoints });
  await assert.rejects(async () => {
    for await (const _ of broken) { /* the checkpoint load fails the source */ }
  }, CosmosTokenMissingError);
  // Position 0 without a token is the beginning.
  await checkpoints.reset({ source: `cosmos:${t.id}`, tranche: "-FF", group: "g" }, 0n);
  const ac2 = new AbortController();
  let read = 0;
  for await (
    const batch of cosmosSource({
      container: t.container,
      group: "g",
      checkpoints,
      signal: ac2.signal,
    })
  ) {
    read += batch.items.length;
    if (batch.isTail) break;
  }
  ac2.abort();
  assert.equal(read, 1);
});

test("bad options are refused with typed errors", async () => {
  await using t = await freshContainer("source");
  const container = t.container;
  const bad = (options: Record<string, unknown>) =>
    assert.throws(
      () => cosmosSource({ container, group: "g", ...options } as never),
      InvalidArgumentError,
    );
  bad({ container: {} });
  bad({ group: "" });
  bad({ checkpoints: { load() {}, commit() {}, reset() {}, list() {} } }); // keeps no tokens
  bad({ pageSize: 0 });
  bad({ startFrom: "middle" });
  bad({ whenNoCheckpoint: "checkpoint" });
  const leases = memoryLeases();
  bad({ leases: { store: leases }, checkpoints: memoryCheckpoints() }); // not fenced
  bad({
    leases: { store: leases },
    checkpoints: memoryCheckpoints({ leases }),
    startFrom: "start",
  });
  bad({ leases: { store: {} }, checkpoints: memoryCheckpoints({ leases }) });
});

test("after a split, child ranges inside a checkpointed range are not read again; a merge is refused", async () => {
  await using t = await freshContainer("source");
  await cosmosStore(t.container).append("A-1", [{ type: "X", data: 1 }], 0);
  const checkpoints = memoryCheckpoints();
  const name = `cosmos:${t.id}`;
  const ac = new AbortController();
  for await (
    const batch of cosmosSource({
      container: t.container,
      group: "g",
      checkpoints,
      signal: ac.signal,
    })
  ) {
    await batch.commit?.(batch.position);
    if (batch.isTail) break;
  }
  ac.abort();
  assert.equal((await checkpoints.list(name, "g"))[0]?.tranche, "-FF");
  // The container now reports the range split in two (as Cosmos does after a split).
  const [whole] = await t.container.getFeedRanges();
  const Range = whole.constructor as new (min: string, max: string) => typeof whole;
  const split = Object.create(t.container, {
    getFeedRanges: { value: () => Promise.resolve([new Range("", "80"), new Range("80", "FF")]) },
  });
  const tranches = async (checkpointStore: typeof checkpoints | undefined) => {
    const stop = new AbortController();
    const names = new Set<string>();
    const source = cosmosSource({
      container: split,
      group: "g",
      checkpoints: checkpointStore,
      signal: stop.signal,
    });
    const reader = source.getReader();
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline) {
      const { value } = await reader.read();
      if (value === undefined) break;
      names.add(value.tranche);
      if (value.isTail && names.size >= (checkpointStore ? 1 : 2)) break;
    }
    stop.abort();
    await reader.cancel().catch(() => {});
    return [...names].sort();
  };
  assert.deepEqual(
    await tranches(checkpoints),
    ["-FF"],
    "the checkpointed range, its children skipped",
  );
  assert.deepEqual(
    await tranches(undefined),
    ["-80", "80-FF"],
    "without checkpoints: the ranges there are",
  );
  // A checkpointed range overlapping a current one without containing it (a merge): refused.
  await checkpoints.reset({ source: name, tranche: "-FF", group: "g" }, undefined);
  await checkpoints.commitCheckpoint!({ source: name, tranche: "-40", group: "g" }, {
    position: 1n,
    token: "x",
  });
  await assert.rejects(async () => {
    for await (const _ of cosmosSource({ container: split, group: "g", checkpoints })) {
      /* fails */
    }
  }, (e: unknown) => e instanceof InvalidArgumentError && /overlaps/.test(e.message));
});
