// The Cosmos event store against the local server (`tools/cosmos.sh start`): the shared event
// store contract, the document layout, backward reads, the snapshot capabilities, cached tips
// going stale, stray documents, limits and undecodable documents.
import assert from "node:assert/strict";
import { EventDecodeError } from "../../core/codec.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { WrongExpectedVersionError } from "../../core/store.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import {
  CosmosAppendError,
  CosmosContainerError,
  cosmosStore,
  decodeBatch,
  ensureCosmosContainer,
  MAX_APPEND_BYTES,
  MAX_EVENT_TYPE_BYTES,
} from "../../stores/cosmos.ts";
import { freshContainer, opts, testDatabase } from "../support/cosmos.ts";
import { eventStoreContract } from "./contract.ts";

eventStoreContract("cosmos", async () => {
  const t = await freshContainer("contract");
  return { store: cosmosStore(t.container), close: async () => await t[Symbol.asyncDispose]() };
}, opts);

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `cosmos store: ${name}`, ...opts, fn });

test("documents: a tip with the version, one batch document per append", async () => {
  await using t = await freshContainer();
  const store = cosmosStore(t.container);
  await store.append(
    "Order-1",
    [{ type: "Placed", data: { total: 3 } }, { type: "Paid", data: 1 }],
    0,
  );
  await store.append("Order-1", [{ type: "Placed", data: { total: 4 } }], 2);
  const { resources } = await t.container.items
    .query("SELECT c.id, c.p, c.i, c.n, c.ty FROM c WHERE c.p = 'Order-1'")
    .fetchAll();
  const byId = Object.fromEntries(resources.map((r) => [r.id, r]));
  assert.deepEqual(Object.keys(byId).sort(), ["-1", "0", "2"]);
  assert.equal(byId["-1"].n, 3);
  assert.deepEqual([byId["0"].i, byId["0"].n, byId["0"].ty], [0, 2, ["Placed", "Paid"]]);
  assert.deepEqual([byId["2"].i, byId["2"].n, byId["2"].ty], [2, 3, ["Placed"]]);
  assert.equal(await store.version("Order-1"), 3);
  assert.equal(await store.version("Order-2"), 0);
  const [doc] = (await t.container.items.query("SELECT * FROM c WHERE c.id = '0'").fetchAll())
    .resources;
  assert.deepEqual(doc.e[0].d, { total: 3 }, "data is kept as JSON, queryable");
});

test("bytes round-trip; backward reads; last events and reads from the last snapshot", async () => {
  await using t = await freshContainer();
  const store = cosmosStore(t.container);
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  await store.append("A-1", [{ type: "Bin", data: bytes, meta: new Uint8Array([9]) }], 0);
  const [bin] = await store.readStream("A-1");
  assert.deepEqual(bin.data, bytes);
  assert.deepEqual(bin.meta, new Uint8Array([9]));
  assert.equal(bin.size, 8 + 4, "base64 text measured");

  const s = "A-2";
  await store.append(
    s,
    [{ type: "A", data: 0 }, { type: "B", data: 1 }, { type: "A", data: 2 }],
    0,
  );
  await store.append(s, [{ type: "C", data: 3 }], 3);
  await store.append(s, [{ type: "D", data: 4 }, { type: "E", data: 5 }], 4);
  const back = await store.readBackwards(s);
  assert.deepEqual(back.map((e) => e.index), [5, 4, 3, 2, 1, 0]);
  assert.deepEqual((await store.readBackwards(s, { maxCount: 2 })).map((e) => e.type), ["E", "D"]);
  assert.deepEqual(
    (await store.readBackwards(s, { fromIndex: 3, maxCount: 3 })).map((e) => e.index),
    [
      3,
      2,
      1,
    ],
  );
  assert.deepEqual(await store.readBackwards(s, { maxCount: 0 }), []);
  assert.deepEqual(await store.readBackwards("A-none"), []);
  assert.equal((await store.readLastEvent(s))?.index, 5);
  assert.equal((await store.readLastEvent(s, "A"))?.index, 2);
  assert.equal((await store.readLastEvent(s, "B"))?.data, 1);
  assert.equal(await store.readLastEvent(s, "Z"), undefined);
  assert.equal(await store.readLastEvent("A-none"), undefined);
  assert.deepEqual((await store.readFromLast(s, "B")).map((e) => e.index), [1, 2, 3, 4, 5]);
  assert.deepEqual((await store.readFromLast(s, "C")).map((e) => e.index), [3, 4, 5]);
  assert.deepEqual((await store.readFromLast(s, "Z")).map((e) => e.index), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(await store.readFromLast("A-none", "B"), []);
  await assert.rejects(() => store.readLastEvent(s, ""), InvalidArgumentError);
  await assert.rejects(() => store.readBackwards(s, { fromIndex: -1 }), InvalidArgumentError);
});

test("reads page through streams of more documents than a page holds", async () => {
  await using t = await freshContainer();
  const store = cosmosStore(t.container);
  for (let k = 0; k < 150; k++) await store.append("Long-1", [{ type: "N", data: k }], k);
  const events = await store.readStream("Long-1");
  assert.deepEqual(events.map((e) => e.index), Array.from({ length: 150 }, (_, k) => k));
  assert.equal((await store.readStream("Long-1", { fromIndex: 40, maxCount: 105 })).length, 105);
  const back = await store.readBackwards("Long-1");
  assert.equal(back.length, 150);
  assert.equal(back[0].index, 149);
});

test("a tip cached by one store object, moved by another, gives a conflict with the actual version", async () => {
  await using t = await freshContainer();
  const a = cosmosStore(t.container);
  const b = cosmosStore(t.container);
  await a.append("S-1", [{ type: "A", data: 0 }], 0);
  await b.append("S-1", [{ type: "B", data: 1 }], 1);
  // a still remembers version 1 and its etag.
  await assert.rejects(
    () => a.append("S-1", [{ type: "C", data: 2 }], 1),
    (e: unknown) => e instanceof WrongExpectedVersionError && e.actual === 2,
  );
  assert.equal((await a.append("S-1", [{ type: "C", data: 2 }], 2)).nextIndex, 3);
  // An "any" append from a stale cache lands at the real end.
  await b.append("S-1", [{ type: "D", data: 3 }], 3);
  assert.equal((await a.append("S-1", [{ type: "E", data: 4 }], "any")).nextIndex, 5);
  assert.deepEqual((await b.readStream("S-1")).map((e) => e.type), ["A", "B", "C", "D", "E"]);
});

test("a document the store did not write at the next index is a typed stray-document error", async () => {
  await using t = await freshContainer();
  const store = cosmosStore(t.container);
  await store.append("S-1", [{ type: "A", data: 0 }], 0);
  await t.container.items.create({ id: "1", p: "S-1", note: "written around the store" });
  await assert.rejects(
    () => store.append("S-1", [{ type: "B", data: 1 }], 1),
    (e: unknown) => e instanceof CosmosAppendError && e.code === "CosmosStrayDocument",
  );
  assert.equal(
    await store.version("S-1"),
    1,
    "the tip did not move (put back where batches are not atomic)",
  );
  // The stray document has no i: reads do not take it for events.
  assert.deepEqual((await store.readStream("S-1")).map((e) => e.type), ["A"]);
});

test("reads skip documents that break the chain and report them to onInvalid", async () => {
  await using t = await freshContainer();
  const store = cosmosStore(t.container);
  await store.append("S-1", [{ type: "A", data: 0 }, { type: "B", data: 1 }], 0);
  await store.append("S-1", [{ type: "C", data: 2 }], 2);
  // Inside the first append's range: not an append of the store.
  await t.container.items.create({
    id: "x1",
    p: "S-1",
    i: 1,
    n: 2,
    ts: 0,
    ty: ["F"],
    e: [{ c: "F", d: 9, id: "f", s: 1 }],
  });
  const skipped: number[] = [];
  const events = await store.readStream("S-1", {
    onInvalid: (event, error) => {
      assert.ok(error instanceof EventDecodeError);
      skipped.push(event.index);
    },
  });
  assert.deepEqual(events.map((e) => e.type), ["A", "B", "C"]);
  assert.deepEqual(skipped, [1]);
  // A document whose events cannot be read: EventDecodeError, or onInvalid.
  assert.throws(
    () => decodeBatch({ id: "0", p: "S-2", i: 0, n: 2, ts: 0, e: [{ d: 1 }, { c: "T", D: "%%" }] }),
    EventDecodeError,
  );
  const bad: string[] = [];
  const read = decodeBatch({
    id: "0",
    p: "S-2",
    i: 0,
    n: 3,
    e: [{ d: 1 }, { c: "T", D: "%%" }, { c: "U", id: "u", s: 0 }],
  }, (_, e) => bad.push(e.message));
  assert.deepEqual(read.map((e) => e.index), [2]);
  assert.equal(bad.length, 2);
  assert.match(bad[0], /no type/);
  assert.match(bad[1], /base64/);
  const noList: string[] = [];
  assert.deepEqual(
    decodeBatch({ i: 4, n: 6, p: "S-3" }, (event) => noList.push(String(event.index))),
    [],
  );
  assert.deepEqual(noList, ["4", "5"]);
});

test("limits: stream names, event types and append sizes Cosmos cannot take are refused", async () => {
  await using t = await freshContainer();
  const store = cosmosStore(t.container);
  await assert.rejects(
    () => store.append(`S-${"é".repeat(1100)}`, [{ type: "A", data: 0 }], 0),
    InvalidStreamNameError,
  );
  await assert.rejects(
    () => store.append("S-1", [{ type: "T".repeat(MAX_EVENT_TYPE_BYTES + 1), data: 0 }], 0),
    InvalidArgumentError,
  );
  const big = "x".repeat(MAX_APPEND_BYTES / 4);
  await assert.rejects(
    () => store.append("S-1", [1, 2, 3, 4, 5].map(() => ({ type: "Big", data: big })), 0),
    (e: unknown) => e instanceof InvalidArgumentError && /split the append/.test(e.message),
  );
  await assert.rejects(
    () => store.append("S-1", [{ type: "A", data: 0, id: 5 as never }], 0),
    InvalidArgumentError,
  );
  await assert.rejects(
    () => store.append("S-1", [{ type: "A", data: 0, correlationId: 5 as never }], 0),
    InvalidArgumentError,
  );
  assert.equal(await store.version("S-1"), 0, "nothing written");
  // Just under the limit is written and read back.
  await store.append("S-1", [1, 2, 3].map(() => ({ type: "Big", data: big })), 0);
  assert.equal((await store.readStream("S-1")).length, 3);
  assert.throws(() => cosmosStore({} as never), InvalidArgumentError);
});

test("an existing container partitioned otherwise is refused", async () => {
  const db = await testDatabase();
  const id = `other-${crypto.randomUUID()}`;
  const { container } = await db.containers.createIfNotExists({
    id,
    partitionKey: { paths: ["/id"] },
  });
  try {
    await assert.rejects(() => ensureCosmosContainer(db, id), CosmosContainerError);
    await assert.rejects(() => ensureCosmosContainer(db, "a/b"), InvalidArgumentError);
  } finally {
    await container.delete();
  }
});
