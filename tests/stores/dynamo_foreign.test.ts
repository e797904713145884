// DynamoDB items written around the store (issue 21): readers walk append items as a chain and
// skip what does not belong to it, instead of reading it as the stream's events.
import assert from "node:assert/strict";
import { type AttributeValue, PutItemCommand } from "@aws-sdk/client-dynamodb";
import type { StreamEvent } from "../../core/event.ts";
import { EventDecodeError } from "../../core/codec.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
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

Deno.test(
  "dynamo foreign items: an item whose e is not a list reports each of its events",
  opts,
  async () => {
    await using t = await freshStore();
    const { store, tableName } = t;
    await store.append("NoList-1", [{ type: "A", data: 0 }], 0);
    await store.append("NoList-1", [{ type: "B", data: 1 }, { type: "C", data: 2 }], 1);
    // Overwritten around the store without its events.
    await client.send(
      new PutItemCommand({
        TableName: tableName,
        Item: { p: { S: "NoList-1" }, i: { N: "1" }, n: { N: "3" }, ts: { N: "0" } },
      }),
    );
    const reported: string[] = [];
    const events = await store.readStream("NoList-1", {
      onInvalid: (e, error) => reported.push(`${e.index}: ${error.message}`),
    });
    assert.equal(show(events), "0:A");
    assert.equal(reported.length, 2);
    assert.match(reported[0], /^1: .*e is not a list/);
    assert.match(reported[1], /^2: /);
    await assert.rejects(
      () => store.readStream("NoList-1"),
      (e) => e instanceof EventDecodeError && e.index === 1,
    );
  },
);

Deno.test(
  "dynamo bad input: an id, correlationId or causationId that is not a string is refused",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    const cases: Array<[string, unknown, RegExp]> = [
      ["id", 42, /^events\[0\]\.id .*non-empty string.*a number/],
      ["id", "", /^events\[0\]\.id .*an empty string/],
      ["correlationId", 7, /^events\[0\]\.correlationId .*a number/],
      ["causationId", { a: 1 }, /^events\[0\]\.causationId .*an object/],
    ];
    for (const [field, value, message] of cases) {
      await assert.rejects(
        () => store.append("Ids-1", [{ type: "T", data: {}, [field]: value } as never], 0),
        (e: unknown) =>
          e instanceof InvalidArgumentError && e.field === `events[0].${field}` &&
          message.test(e.message),
        `${field} ${JSON.stringify(value)}`,
      );
    }
    assert.equal(await store.version("Ids-1"), 0, "nothing was written");
    // Strings still pass, an empty correlationId included.
    await store.append("Ids-1", [{ type: "T", data: {}, id: "a", correlationId: "" }], 0);
    const [event] = await store.readStream("Ids-1");
    assert.deepEqual([event.id, event.correlationId], ["a", ""]);
  },
);

Deno.test(
  "dynamo foreign items: one starting inside an append and ending past the next one's start is not its holder",
  opts,
  async () => {
    await using t = await freshStore();
    const { store, tableName } = t;
    const events = (...types: string[]) => types.map((type) => ({ type, data: type }));
    await store.append("Span-1", events("A", "B", "C"), 0); // item [0, 3)
    await store.append("Span-1", events("D", "E"), 3); // item [3, 5)
    await store.append("Span-1", events("F"), 5); // item [5, 6)
    await forge(tableName, "Span-1", 2, 4); // starts inside [0, 3), covers index 3
    await forge(tableName, "Span-1", 4, 5); // starts inside [3, 5), ends at its end
    const skipped: number[] = [];
    const onInvalid = (e: StreamEvent) => skipped.push(e.index);
    // From an append's start (as the index source reads) and from inside it.
    assert.equal(
      show(await store.readStream("Span-1", { fromIndex: 3, onInvalid })),
      "3:D 4:E 5:F",
    );
    assert.equal(show(await store.readStream("Span-1", { fromIndex: 3, maxCount: 2 })), "3:D 4:E");
    assert.equal(show(await store.readStream("Span-1", { fromIndex: 4, maxCount: 1 })), "4:E");
    assert.equal(show(await store.readStream("Span-1", { fromIndex: 4 })), "4:E 5:F");
    assert.equal(show(await store.readStream("Span-1")), "0:A 1:B 2:C 3:D 4:E 5:F");
    assert.deepEqual(skipped, [4], "the foreign item inside the read range is reported");
    const last = await store.readLastEvent("Span-1", "E");
    assert.equal(`${last?.index}:${last?.type}`, "4:E");
    assert.equal(show(await store.readFromLast("Span-1", "D")), "3:D 4:E 5:F");
    assert.equal(show(await store.readFromLast("Span-1", "E")), "4:E 5:F");
  },
);

Deno.test(
  "dynamo foreign items: an item holding more or fewer events than its range reports the difference",
  opts,
  async () => {
    await using t = await freshStore();
    const { store, tableName } = t;
    const events = (...types: string[]) => types.map((type) => ({ type, data: type }));
    await store.append("Count-1", events("A", "B", "C"), 0); // item [0, 3)
    await store.append("Count-1", events("D", "E"), 3); // item [3, 5)
    await store.append("Count-1", events("F"), 5); // item [5, 6)
    const overwrite = (i: number, n: number, types: string[]) =>
      client.send(
        new PutItemCommand({
          TableName: tableName,
          Item: {
            p: { S: "Count-1" },
            i: { N: String(i) },
            n: { N: String(n) },
            ts: { N: "0" },
            e: { L: types.map((t) => ({ M: { t: { S: t }, id: { S: "f" }, d: { S: '"x"' } } })) },
          },
        }),
      );
    await overwrite(0, 3, ["Q"]); // one event for three indexes
    await overwrite(3, 5, ["X", "Y", "Z"]); // three events for two
    const reported: number[] = [];
    const read = await store.readStream("Count-1", { onInvalid: (e) => reported.push(e.index) });
    assert.equal(show(read), "0:Q 3:X 4:Y 5:F", "no event twice, none past its item's range");
    assert.deepEqual(reported, [1, 2, 5], "the missing ones and the one past the range");
    assert.equal(
      show(await store.readStream("Count-1", { fromIndex: 3, maxCount: 3, onInvalid: () => {} })),
      "3:X 4:Y 5:F",
    );
    await assert.rejects(
      () => store.readStream("Count-1"),
      (e) =>
        e instanceof EventDecodeError && e.index === 1 && /holds 1 event for 3/.test(e.message),
    );
  },
);
