// Rolling snapshots shorten cold loads on every store: the decider finds the latest snapshot
// through readLastEvent and reads only what follows it. Memory, MessageDB on the real server,
// DynamoDB Local.
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { createDecider, type LastEventReader, type SnapshotReader } from "../../core/decider.ts";
import type { EventStore } from "../../core/store.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";
import { poolFixture, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 2 });
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

async function coldLoadsStartAtTheSnapshot(
  store: EventStore & LastEventReader & Partial<SnapshotReader>,
): Promise<void> {
  const s = `${unique("wsSnap")}-1`;
  const writer = createDecider<Event, number>({ store, codec, initial: 0, fold, snapshot });
  for (let k = 1; k <= 24; k++) await writer.transact(s, () => [{ type: "Added", data: { n: k } }]);
  // Snapshots after the 10th and 20th additions: at indexes 10 and 21, four events after.
  const types = (await store.readStream(s)).map((e) => e.type[0]).join("");
  assert.equal(types, "A".repeat(10) + "T" + "A".repeat(10) + "T" + "AAAA");
  assert.equal((await store.readLastEvent(s, "Totalled"))?.index, 21);
  assert.equal((await store.readLastEvent(s))?.index, 25);
  assert.equal(await store.readLastEvent(s, "Nothing"), undefined);
  assert.equal(await store.readLastEvent(`${unique("wsSnap")}-2`, "Totalled"), undefined);

  const reads: number[] = [];
  const recorded: EventStore & LastEventReader & Partial<SnapshotReader> = {
    readStream: (stream, o) => (reads.push(o?.fromIndex ?? 0), store.readStream(stream, o)),
    append: (stream, events, expected) => store.append(stream, events, expected),
    readLastEvent: (stream, type) => store.readLastEvent(stream, type),
  };
  const fromLast = store.readFromLast?.bind(store);
  if (fromLast !== undefined) {
    recorded.readFromLast = (stream, type) => (reads.push(-1), fromLast(stream, type));
  }
  const cold = createDecider<Event, number>({ store: recorded, codec, initial: 0, fold, snapshot });
  assert.equal(await cold.query(s, (t) => t), (24 * 25) / 2);
  // Only the four events after the snapshot: read from 22, or in the one backward read (-1).
  assert.deepEqual(reads, fromLast === undefined ? [22] : [-1]);
}

Deno.test("snapshots on memory: a cold load starts at the latest snapshot", () =>
  coldLoadsStartAtTheSnapshot(createMemoryStore()));

Deno.test({
  name: "snapshots on MessageDB: a cold load starts at the latest snapshot",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => withPool((pool) => coldLoadsStartAtTheSnapshot(messageDbStore(pool))),
});

Deno.test("snapshots on DynamoDB: a cold load starts at the latest snapshot", opts, async () => {
  await using t = await freshTables({ tableName: "events" });
  const store = dynamoStore(client, { tableName: t.tableName });
  await coldLoadsStartAtTheSnapshot(store);
  // A type appended in the middle of a multi-event append is found inside its item.
  const s = `${unique("wsSnap")}-3`;
  await store.append(
    s,
    [{ type: "A", data: 1 }, { type: "B", data: 2 }, { type: "A", data: 3 }],
    0,
  );
  assert.equal((await store.readLastEvent(s, "B"))?.data, 2);
  assert.equal((await store.readLastEvent(s, "A"))?.index, 2);
  assert.deepEqual((await store.readFromLast(s, "B")).map((e) => e.data), [2, 3]);
  await store.append(s, [{ type: "C", data: 4 }], 3);
  assert.deepEqual((await store.readFromLast(s, "A")).map((e) => e.index), [2, 3]);
  // No event of the type: the whole stream, in order.
  assert.deepEqual((await store.readFromLast(s, "Z")).map((e) => e.index), [0, 1, 2, 3]);
  assert.deepEqual(await store.readFromLast(`${unique("wsSnap")}-4`, "B"), []);
});
