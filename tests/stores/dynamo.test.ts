// The DynamoDB event store against DynamoDB Local (start it with `tools/dynamodb.sh start`).
import assert from "node:assert/strict";
import { DeleteTableCommand } from "@aws-sdk/client-dynamodb";
import { WrongExpectedVersionError } from "../../core/store.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import {
  createEventTable,
  dynamoStore,
  DynamoTableError,
  ensureTable,
} from "../../stores/dynamo.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";

async function freshStore() {
  const t = await freshTables({ tableName: "events" });
  return { ...t, store: dynamoStore(client, { tableName: t.tableName }) };
}

Deno.test("dynamo store: append and read back with all fields", opts, async () => {
  await using t = await freshStore();
  const { store } = t;
  const bytes = new Uint8Array([1, 2, 3]);
  const r1 = await store.append("Order-1", [
    {
      type: "Placed",
      data: { total: 3, items: ["a"] },
      meta: { user: "u" },
      id: "id-0",
      correlationId: "c",
      causationId: "z",
    },
    { type: "Paid", data: bytes },
  ], 0);
  assert.equal(r1.nextIndex, 2);
  const r2 = await store.append("Order-1", [{ type: "Shipped", data: "text" }], 2);
  assert.equal(r2.nextIndex, 3);
  const events = await store.readStream("Order-1");
  assert.deepEqual(events.map((e) => [e.index, e.type]), [[0, "Placed"], [1, "Paid"], [
    2,
    "Shipped",
  ]]);
  assert.deepEqual(events[0].data, { total: 3, items: ["a"] });
  assert.deepEqual(events[0].meta, { user: "u" });
  assert.equal(events[0].id, "id-0");
  assert.equal(events[0].correlationId, "c");
  assert.equal(events[0].causationId, "z");
  assert.deepEqual(events[1].data, bytes);
  assert.equal(events[1].meta, undefined);
  assert.equal(events[2].data, "text");
  assert.match(events[1].id, /^[0-9a-f-]{36}$/);
  assert.ok(
    events[0].time instanceof Date && Math.abs(events[0].time.getTime() - Date.now()) < 60_000,
  );
  assert.ok(events[0].size > 0);
  assert.equal(await store.version("Order-1"), 3);
  assert.equal(await store.version("Order-2"), 0);
  assert.deepEqual(await store.readStream("Order-2"), []);
});

Deno.test("dynamo store: reads from an index inside an append, with maxCount", opts, async () => {
  await using t = await freshStore();
  const { store } = t;
  await store.append("A-1", [0, 1, 2, 3].map((n) => ({ type: "T", data: n })), 0);
  await store.append("A-1", [4, 5, 6].map((n) => ({ type: "T", data: n })), 4);
  const from2 = await store.readStream("A-1", { fromIndex: 2 });
  assert.deepEqual(from2.map((e) => e.index), [2, 3, 4, 5, 6]);
  assert.deepEqual(from2.map((e) => e.data), [2, 3, 4, 5, 6]);
  const some = await store.readStream("A-1", { fromIndex: 3, maxCount: 2 });
  assert.deepEqual(some.map((e) => e.index), [3, 4]);
  assert.deepEqual(await store.readStream("A-1", { fromIndex: 7 }), []);
  assert.deepEqual(await store.readStream("A-1", { maxCount: 0 }), []);
});

Deno.test(
  "dynamo store: append conflicts raise WrongExpectedVersionError with the actual version",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    await store.append("Seat-1", [{ type: "Reserved", data: 1 }], 0);
    await assert.rejects(
      () => store.append("Seat-1", [{ type: "Reserved", data: 2 }], 0),
      (e) =>
        e instanceof WrongExpectedVersionError && e.expected === 0 && e.actual === 1 &&
        e.code === "WrongExpectedVersion",
    );
    await assert.rejects(
      () => store.append("Seat-1", [{ type: "Reserved", data: 2 }], 5),
      (e) => e instanceof WrongExpectedVersionError && e.expected === 5 && e.actual === 1,
    );
    await assert.rejects(
      () => store.append("Seat-2", [{ type: "Reserved", data: 2 }], 1),
      (e) => e instanceof WrongExpectedVersionError && e.actual === 0,
    );
    // Nothing from the rejected appends was written.
    assert.deepEqual((await store.readStream("Seat-1")).map((e) => e.data), [1]);
    assert.deepEqual(await store.readStream("Seat-2"), []);
    // Empty appends check the version without writing.
    assert.deepEqual(await store.append("Seat-1", [], 1), { nextIndex: 1 });
    await assert.rejects(() => store.append("Seat-1", [], 0), WrongExpectedVersionError);
  },
);

Deno.test("dynamo store: concurrent writers at one version, exactly one wins", opts, async () => {
  await using t = await freshStore();
  const { store } = t;
  const results = await Promise.allSettled(
    Array.from({ length: 8 }, (_, k) => store.append("Race-1", [{ type: "T", data: k }], 0)),
  );
  const won = results.filter((r) => r.status === "fulfilled");
  assert.equal(won.length, 1);
  for (const r of results) {
    if (r.status === "rejected") {
      assert.ok(r.reason instanceof WrongExpectedVersionError, String(r.reason));
    }
  }
  assert.equal((await store.readStream("Race-1")).length, 1);
});

Deno.test(
  "dynamo store: 'any' appends from concurrent writers all land, contiguously",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    await Promise.all(
      Array.from({ length: 6 }, (_, k) => store.append("Any-1", [{ type: "T", data: k }], "any")),
    );
    const events = await store.readStream("Any-1");
    assert.deepEqual(events.map((e) => e.index), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(events.map((e) => e.data).sort(), [0, 1, 2, 3, 4, 5]);
  },
);

Deno.test(
  "dynamo store: a large append is split into several items in one transaction",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    const big = "x".repeat(100_000);
    const r = await store.append(
      "Big-1",
      Array.from({ length: 8 }, (_, k) => ({ type: "Blob", data: { k, big } })),
      0,
    );
    assert.equal(r.nextIndex, 8);
    const events = await store.readStream("Big-1", { fromIndex: 5 });
    assert.deepEqual(events.map((e) => (e.data as { k: number }).k), [5, 6, 7]);
    await assert.rejects(
      () => store.append("Big-1", [{ type: "Huge", data: "y".repeat(500_000) }], 8),
      InvalidArgumentError,
    );
  },
);

Deno.test(
  "dynamo store: rejects bad arguments and mismatched tables with typed errors",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    await assert.rejects(
      () => store.append("nodash", [{ type: "T", data: 1 }], 0),
      InvalidStreamNameError,
    );
    await assert.rejects(
      () => store.append("A-1", [{ type: "", data: 1 }], 0),
      InvalidArgumentError,
    );
    await assert.rejects(
      () => store.append("A-1", [{ type: "T", data: 1 }], -1),
      InvalidArgumentError,
    );
    await assert.rejects(() => store.readStream("A-1", { fromIndex: -1 }), InvalidArgumentError);
    assert.throws(() => dynamoStore(client, { tableName: "x" }), InvalidArgumentError);
    // An existing table with another key schema is reported, not silently used.
    const other = `other-${crypto.randomUUID()}`;
    await ensureTable(client, { tableName: other, partitionKey: ["k", "S"] });
    await assert.rejects(() => createEventTable(client, other), DynamoTableError);
    await client.send(new DeleteTableCommand({ TableName: other }));
  },
);
