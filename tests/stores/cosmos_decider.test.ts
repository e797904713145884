// The decider over the Cosmos store on the local server: transacts with conflicts between two
// deciders, the state cache (a warm load reads only what was appended since), rolling snapshots
// (a cold load reads only from the latest snapshot, in one backward read), idempotent retries.
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { createDecider, createStateCache } from "../../core/decider.ts";
import type { EventStore } from "../../core/store.ts";
import { type CosmosEventStore, cosmosStore } from "../../stores/cosmos.ts";
import { freshContainer, opts } from "../support/cosmos.ts";

type Event =
  | { type: "Added"; data: { n: number } }
  | { type: "Totalled"; data: { total: number } };
const codec = createCodec<Event>({ Added: {}, Totalled: {} });
const fold = (total: number, events: readonly Event[]) =>
  events.reduce((t, e) => e.type === "Totalled" ? e.data.total : t + e.data.n, total);
const snapshot = {
  isOrigin: (e: Event) => e.type === "Totalled",
  toSnapshot: (total: number): Event => ({ type: "Totalled", data: { total } }),
  every: 10,
};

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `decider on cosmos: ${name}`, ...opts, fn });

/** The store, recording where each forward read starts (-1: a backward snapshot read). */
function recorded(store: CosmosEventStore): { store: EventStore; reads: number[] } {
  const reads: number[] = [];
  return {
    reads,
    store: {
      readStream: (stream, o) => (reads.push(o?.fromIndex ?? 0), store.readStream(stream, o)),
      append: (stream, events, expected) => store.append(stream, events, expected),
      readLastEvent: (stream: string, type?: string) => store.readLastEvent(stream, type),
      readFromLast: (
        stream: string,
        type: string,
      ) => (reads.push(-1), store.readFromLast(stream, type)),
    } as EventStore,
  };
}

test("two deciders on one stream: conflicts are retried, every addition counted", async () => {
  await using t = await freshContainer();
  // Two writers in step conflict on most attempts: enough attempts that each gets through.
  const options = { codec, initial: 0, fold, maxAttempts: 30 };
  const a = createDecider<Event, number>({ store: cosmosStore(t.container), ...options });
  const b = createDecider<Event, number>({ store: cosmosStore(t.container), ...options });
  await Promise.all(
    Array.from(
      { length: 10 },
      (_, k) => (k % 2 ? a : b).transact("Sum-1", () => [{ type: "Added", data: { n: k + 1 } }]),
    ),
  );
  assert.equal(await a.query("Sum-1", (s) => s), 55);
  assert.equal((await cosmosStore(t.container).readStream("Sum-1")).length, 10);
});

test("with a cache a warm load reads only the events appended since", async () => {
  await using t = await freshContainer();
  const { store, reads } = recorded(cosmosStore(t.container));
  const cache = createStateCache();
  const decider = createDecider<Event, number>({ store, codec, initial: 0, fold, cache });
  for (let k = 1; k <= 5; k++) {
    await decider.transact("Sum-1", () => [{ type: "Added", data: { n: k } }]);
  }
  // Another writer appends behind the cache's back.
  await cosmosStore(t.container).append("Sum-1", [{ type: "Added", data: { n: 100 } }], 5);
  reads.length = 0;
  assert.equal(await decider.query("Sum-1", (s) => s), 115);
  assert.deepEqual(reads, [5], "read from the cached version only");
  reads.length = 0;
  assert.equal(await decider.query("Sum-1", (s) => s, { load: "allowStale" }), 115);
  assert.deepEqual(reads, [], "allowStale reads nothing");
  assert.equal(cache.entries("Sum-1")[0]?.version, 6);
});

test("rolling snapshots: a cold load starts at the latest snapshot in one backward read", async () => {
  await using t = await freshContainer();
  const writer = createDecider<Event, number>({
    store: cosmosStore(t.container),
    codec,
    initial: 0,
    fold,
    snapshot,
  });
  for (let k = 1; k <= 24; k++) {
    await writer.transact("Sum-1", () => [{ type: "Added", data: { n: k } }]);
  }
  const raw = cosmosStore(t.container);
  const types = (await raw.readStream("Sum-1")).map((e) => e.type[0]).join("");
  assert.equal(types, "A".repeat(10) + "T" + "A".repeat(10) + "T" + "AAAA");
  assert.equal((await raw.readLastEvent("Sum-1", "Totalled"))?.index, 21);
  const { store, reads } = recorded(raw);
  const cold = createDecider<Event, number>({ store, codec, initial: 0, fold, snapshot });
  assert.equal(await cold.query("Sum-1", (s) => s), (24 * 25) / 2);
  assert.deepEqual(reads, [-1], "one backward read, from the snapshot");
  // Without readFromLast the decider finds the snapshot with readLastEvent and reads from it.
  const lastOnly = {
    readStream: store.readStream,
    append: store.append,
    readLastEvent: (s: string, type?: string) => raw.readLastEvent(s, type),
  } as EventStore;
  reads.length = 0;
  const viaLast = createDecider<Event, number>({
    store: lastOnly,
    codec,
    initial: 0,
    fold,
    snapshot,
  });
  assert.equal(await viaLast.query("Sum-1", (s) => s), (24 * 25) / 2);
  assert.deepEqual(reads, [22]);
});

test("an idempotency key makes a retried transact append nothing", async () => {
  await using t = await freshContainer();
  const decider = createDecider<Event, number>({
    store: cosmosStore(t.container),
    codec,
    initial: 0,
    fold,
  });
  const first = await decider.transactEx("Sum-1", () => [{ type: "Added", data: { n: 3 } }], {
    idempotencyKey: "cmd-1",
  });
  const again = await decider.transactEx("Sum-1", () => [{ type: "Added", data: { n: 3 } }], {
    idempotencyKey: "cmd-1",
  });
  assert.equal(first.duplicate ?? false, false);
  assert.equal(again.duplicate, true);
  assert.equal((await cosmosStore(t.container).readStream("Sum-1")).length, 1);
});
