// DynamoDB items written around the store (issue 21): readers walk append items as a chain and
// skip what does not belong to it, instead of reading it as the stream's events.
import assert from "node:assert/strict";
import { type AttributeValue, PutItemCommand } from "@aws-sdk/client-dynamodb";
import type { StreamEvent } from "../../core/event.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";

async function freshStore() {
  const t = await freshTables({ tableName: "events" }, "ddbforeign-");
  return { ...t, store: dynamoStore(client, { tableName: t.tableName }) };
}

// One item of one event at `i`, as a writer that bypasses the store would put it.
function forge(tableName: string, stream: string, i: number, n = i + 1) {
  const Item: Record<string, AttributeValue> = {
    p: { S: stream },
    i: { N: String(i) },
    n: { N: String(n) },
    ts: { N: "0" },
    e: { L: [{ M: { t: { S: "Forged" }, id: { S: "f" }, d: { S: '"forged"' } } }] },
  };
  return client.send(new PutItemCommand({ TableName: tableName, Item }));
}

const show = (events: StreamEvent[]) => events.map((e) => `${e.index}:${e.type}`).join(" ");

Deno.test(
  "dynamo foreign items: ones inside an append's range or past the version are not read",
  opts,
  async () => {
    await using t = await freshStore();
    const { store, tableName } = t;
    await store.append("Order-1", [{ type: "A", data: 0 }], 0);
    await forge(tableName, "Order-1", 2); // inside the next append's range
    await store.append("Order-1", [{ type: "B", data: 1 }, { type: "C", data: 2 }, {
      type: "D",
      data: 3,
    }], 1);
    await forge(tableName, "Order-1", 9); // past the version
    await forge(tableName, "Order-1", 4); // chains on, but at the version
    assert.equal(await store.version("Order-1"), 4);
    assert.equal(show(await store.readStream("Order-1")), "0:A 1:B 2:C 3:D");
    // From an index where a foreign item starts: the real item holding it is read.
    assert.equal(show(await store.readStream("Order-1", { fromIndex: 2 })), "2:C 3:D");
    assert.equal(show(await store.readStream("Order-1", { fromIndex: 3 })), "3:D");
    assert.equal(show(await store.readStream("Order-1", { fromIndex: 1, maxCount: 2 })), "1:B 2:C");
    const last = await store.readLastEvent("Order-1");
    assert.equal(`${last?.index}:${last?.type}`, "3:D");
    const lastB = await store.readLastEvent("Order-1", "B");
    assert.equal(`${lastB?.index}:${lastB?.type}`, "1:B");
    assert.equal(show(await store.readFromLast("Order-1", "D")), "3:D");
    assert.equal(show(await store.readFromLast("Order-1", "B")), "1:B 2:C 3:D");
    // What was skipped reaches onInvalid, which sees the foreign events.
    const skipped: number[] = [];
    await store.readStream("Order-1", { onInvalid: (e) => skipped.push(e.index) });
    assert.deepEqual(skipped.sort((a, b) => a - b), [2, 4, 9]);
  },
);
