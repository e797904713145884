// The DynamoDB store's transaction budget (issue 21): an append is counted as DynamoDB counts a
// transaction (the tip's update and every item's own attributes included), so that DynamoDB
// never answers a bare ValidationException for size. Against DynamoDB Local, which refuses a
// transaction over 4 MiB.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { EventData } from "../../core/store.ts";
import { DynamoAppendError, dynamoStore } from "../../stores/dynamo.ts";
import { actionBytes, MAX_TRANSACTION_BYTES, numberBytes } from "../../stores/dynamo-size.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";

// Eleven events of about 381 KB: each takes an item of its own, and together they pass 4 MiB.
const events = (shorten: number): EventData[] =>
  Array.from({ length: 11 }, (_, k) => ({
    type: `Prïced-${k}`,
    data: { k, text: "€".repeat(60_000) + "x".repeat(201_300 - (k === 10 ? shorten : 0)) },
  }));

// A long multi-byte name: it is in every item's key and in the tip's.
const streamName = (n: number) => `Edge-${n}${"é".repeat(500)}`;

Deno.test(
  "dynamo store: an append at exactly DynamoDB's 4 MiB transaction limit is written, one byte more is a typed error",
  opts,
  async () => {
    await using t = await freshTables({ tableName: "events" }, "dyn-");
    const store = dynamoStore(client, { tableName: t.tableName });
    // Over the limit: refused before anything is sent, with the bytes it counted.
    let counted = 0;
    await assert.rejects(
      () => store.append(streamName(0), events(0), 0),
      (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        assert.equal(e.field, "events");
        const m = /take (\d+) bytes in one DynamoDB transaction with the stream's tip/.exec(
          e.message,
        );
        assert.ok(m, e.message);
        counted = Number(m[1]);
        return true;
      },
    );
    assert.ok(counted > MAX_TRANSACTION_BYTES, `${counted}`);
    assert.equal(await store.version(streamName(0)), 0, "nothing was written");

    // Exactly at the limit by that count: DynamoDB takes it, so the count is never short.
    const over = counted - MAX_TRANSACTION_BYTES;
    const r = await store.append(streamName(1), events(over), 0);
    assert.equal(r.nextIndex, 11);
    const read = await store.readStream(streamName(1));
    assert.deepEqual(read.map((e) => (e.data as { k: number }).k), [...Array(11).keys()]);
    assert.equal((read[10].data as { text: string }).text.length, 60_000 + 201_300 - over);
    assert.equal((await store.readLastEvent(streamName(1), "Prïced-10"))?.index, 10);

    // One byte more: the typed error again, and the stream is untouched.
    await assert.rejects(
      () => store.append(streamName(2), events(over - 1), 0),
      (e: unknown) =>
        e instanceof InvalidArgumentError &&
        e.message.includes(`take ${MAX_TRANSACTION_BYTES + 1} bytes`),
    );
    assert.equal(await store.version(streamName(2)), 0);
    // After an earlier append the tip's condition is shorter ("n = :v"): the same events fit.
    await store.append(streamName(2), [{ type: "Opened", data: {} }], 0);
    assert.equal((await store.append(streamName(2), events(over - 1), 1)).nextIndex, 12);
  },
);

Deno.test("dynamo store: DynamoDB's own counting rules, as measured", () => {
  // Numbers: 1 byte plus 1 per significant pair of digits, plus 1 if negative.
  assert.deepEqual(
    ["0", "1", "99", "100", "123", "12345", "1700000000000", "1764662400123", "-1", "0.5"].map(
      numberBytes,
    ),
    [1, 2, 2, 2, 3, 4, 3, 8, 3, 2],
  );
  // An update costs its key, its expressions, the names and values it uses.
  const update = {
    Update: {
      TableName: "t",
      Key: { p: { S: "K" }, i: { N: "-1" } },
      UpdateExpression: "SET n = :n",
      ConditionExpression: "attribute_not_exists(n) OR n = :v0",
      ExpressionAttributeValues: { ":n": { N: "5" }, ":v0": { N: "4" } },
    },
  };
  assert.equal(actionBytes(update), 54); // what DynamoDB Local reported for this action
});

Deno.test(
  "dynamo store: a transaction DynamoDB refuses outright is a typed DynamoAppendRefused",
  async () => {
    // A deliberate fault: DynamoDB answering ValidationException to the transaction itself (a
    // limit AWS would count otherwise than the store).
    const refusing = {
      send(command: object) {
        if (command.constructor.name === "TransactWriteItemsCommand") {
          const e = Object.assign(new Error("Transaction payload size cannot exceed 4MB"), {
            name: "ValidationException",
            $metadata: { httpStatusCode: 400 },
          });
          return Promise.reject(e);
        }
        return Promise.reject(new Error(`unexpected ${command.constructor.name}`));
      },
    };
    const store = dynamoStore(refusing, { tableName: "events" });
    await assert.rejects(
      () => store.append("Order-1", [{ type: "Placed", data: {} }], 0),
      (e: unknown) => {
        assert.ok(e instanceof DynamoAppendError, String(e));
        assert.equal(e.code, "DynamoAppendRefused");
        assert.match(e.message, /DynamoDB refused the transaction: Transaction payload size/);
        assert.equal((e.cause as Error).name, "ValidationException");
        return true;
      },
    );
  },
);
