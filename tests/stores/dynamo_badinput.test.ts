// DynamoDB under bad input (issue 21): limits in UTF-8 bytes, what the store refuses at append
// time so that everything it accepts can be indexed. Against DynamoDB Local.
import assert from "node:assert/strict";
import {
  type AttributeValue,
  PutItemCommand,
  QueryCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { WrongExpectedVersionError } from "../../core/store.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { categoryOf, InvalidStreamNameError } from "../../core/streamName.ts";
import {
  DynamoAppendError,
  dynamoStore,
  isTransientDynamoError,
  MAX_EVENT_TYPE_BYTES,
  MAX_STREAM_NAME_BYTES,
} from "../../stores/dynamo.ts";
import {
  decodeEntries,
  dynamoIndexer,
  epochKey,
  type IndexEntry,
} from "../../stores/dynamo-indexer.ts";
import { runStreamsIndexer } from "../../stores/dynamo-streams.ts";
import { allRecords, client, freshTables, opts, streamsClient } from "../support/dynamo.ts";

async function freshStore() {
  const t = await freshTables({ tableName: "events" }, "ddbbad-");
  return { ...t, store: dynamoStore(client, { tableName: t.tableName }) };
}

const bytes = (s: string) => new TextEncoder().encode(s).length;

Deno.test(
  "dynamo bad input: multi-byte bodies are packed by UTF-8 bytes, not characters",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    // 300 000 bytes each: three never fit one item, and each fits alone.
    const euros = "€".repeat(100_000);
    const r = await store.append(
      "Euro-1",
      [0, 1, 2].map((k) => ({ type: "Priced", data: { k, euros } })),
      0,
    );
    assert.equal(r.nextIndex, 3);
    const events = await store.readStream("Euro-1");
    assert.deepEqual(events.map((e) => (e.data as { k: number }).k), [0, 1, 2]);
    assert.equal((events[2].data as { euros: string }).euros, euros);
    // Sizes are bytes too: what the scheduler's byte limits see.
    assert.ok(events[0].size >= 300_000, `size ${events[0].size} counts bytes`);
    // And they still read from inside the split append.
    const tail = await store.readStream("Euro-1", { fromIndex: 1 });
    assert.deepEqual(tail.map((e) => e.index), [1, 2]);
  },
);

Deno.test(
  "dynamo bad input: many tiny events are packed by DynamoDB's own sizes (element overhead)",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    // 8 300 events of ~51 bytes each: one item by a count without the per-attribute byte, over
    // DynamoDB's 409 600 bytes by its own.
    const events = Array.from({ length: 8_300 }, () => ({ type: "A", data: "x" }));
    assert.equal((await store.append("Tiny-1", events, 0)).nextIndex, 8_300);
    const read = await store.readStream("Tiny-1", { fromIndex: 8_290 });
    assert.deepEqual(read.map((e) => e.index), Array.from({ length: 10 }, (_, k) => 8_290 + k));
  },
);

Deno.test(
  "dynamo bad input: one event over the item limit is a typed error whatever its characters",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    // 420 000 bytes of "€" (140 000 characters) gets the same typed error as ASCII would.
    await assert.rejects(
      () => store.append("Euro-1", [{ type: "Huge", data: "€".repeat(140_000) }], 0),
      (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        assert.equal(e.field, "events[0]");
        assert.match(e.message, /bytes in UTF-8/);
        return true;
      },
    );
    // Nothing was written: the stream can still start at version 0.
    assert.equal(await store.version("Euro-1"), 0);
    // Just under the limit is accepted: the estimate matches DynamoDB's own accounting.
    const r = await store.append("Euro-1", [{ type: "Big", data: "x".repeat(399_000) }], 0);
    assert.equal(r.nextIndex, 1);
    assert.equal(((await store.readStream("Euro-1"))[0].data as string).length, 399_000);
  },
);

Deno.test(
  "dynamo bad input: stream names the index cannot key and long types are refused at append",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    const long = `Long-${"é".repeat(1_100)}`; // 1 105 characters, 2 205 bytes
    assert.ok(bytes(long) > MAX_STREAM_NAME_BYTES && long.length < MAX_STREAM_NAME_BYTES);
    await assert.rejects(
      () => store.append(long, [{ type: "T", data: 1 }], 0),
      (e: unknown) => e instanceof InvalidStreamNameError && /bytes in UTF-8/.test(e.message),
    );
    await assert.rejects(() => store.readStream(long), InvalidStreamNameError);
    // At the limit exactly it is accepted.
    const atLimit = `Long-${"x".repeat(MAX_STREAM_NAME_BYTES - 5)}`;
    await store.append(atLimit, [{ type: "T", data: 1 }], 0);
    assert.equal(await store.version(atLimit), 1);
    // Names without an id never get in.
    await assert.rejects(
      () => store.append("Cat", [{ type: "T", data: 1 }], 0),
      InvalidStreamNameError,
    );
    const type = "型".repeat(400); // 1 200 bytes
    await assert.rejects(
      () => store.append("Type-1", [{ type, data: 1 }], 0),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "events[0].type",
    );
    await store.append("Type-1", [{ type: "型".repeat(MAX_EVENT_TYPE_BYTES / 4), data: 1 }], 0);
    assert.equal(await store.version("Type-1"), 1);
  },
);

/** Every chunk item of a partition's index: its offset, count, entries and JSON bytes. */
async function chunks(indexTable: string, partition = "0") {
  const out: {
    epoch: number;
    start: number;
    count: number;
    entries: IndexEntry[];
    bytes: number;
  }[] = [];
  for (let epoch = 0;; epoch++) {
    const res = await client.send(
      new QueryCommand({
        TableName: indexTable,
        KeyConditionExpression: "p = :p",
        ExpressionAttributeValues: { ":p": { S: epochKey(partition, epoch) } },
        ConsistentRead: true,
      }),
    );
    if ((res.Items ?? []).length === 0) return out;
    for (const item of res.Items!) {
      if (item.j?.S === undefined) continue;
      out.push({
        epoch,
        start: Number(item.i.N),
        count: Number(item.c.N),
        entries: decodeEntries(item.j.S),
        bytes: bytes(item.j.S),
      });
    }
  }
}

Deno.test(
  "dynamo bad input: long and multi-byte types are split into entries and chunks below the item limit",
  opts,
  async () => {
    await using t = await freshTables({ eventTable: "events", indexTable: "index" }, "ddbbad-");
    const store = dynamoStore(client, { tableName: t.eventTable });
    // One append of 2 000 events typed with 250 characters: one entry would be about 500 KB.
    const long = "L".repeat(250);
    await store.append("Long-1", Array.from({ length: 2000 }, () => ({ type: long, data: 1 })), 0);
    // Seven appends of 1 000 events with 20-character Japanese types (60 bytes each).
    const jp = "日本語の型".repeat(4);
    for (let k = 0; k < 7; k++) {
      await store.append(
        "Jp-1",
        Array.from({ length: 1000 }, () => ({ type: jp, data: k })),
        k * 1000,
      );
    }
    await store.append("Small-1", [{ type: "T", data: 1 }], 0);
    const indexer = dynamoIndexer(client, { indexTable: t.indexTable });
    const result = await indexer.ingest(await allRecords(t.eventTable));
    assert.equal(result.events, 2000 + 7000 + 1);
    const all = await chunks(t.indexTable);
    assert.ok(all.length >= 3, `${all.length} chunks`);
    for (const chunk of all) {
      assert.ok(chunk.bytes < 350_000, `chunk at ${chunk.start} is ${chunk.bytes} bytes`);
      assert.equal(chunk.entries.length, chunk.count);
    }
    // Every event is indexed once, in order, with its type.
    const byStream = new Map<string, string[]>();
    for (const e of all.flatMap((c) => c.entries)) {
      const types = byStream.get(e.stream) ?? [];
      assert.equal(e.index, types.length, `${e.stream} is contiguous`);
      types.push(...e.types);
      byStream.set(e.stream, types);
    }
    assert.equal(byStream.get("Long-1")!.length, 2000);
    assert.ok(byStream.get("Long-1")!.every((x) => x === long));
    assert.equal(byStream.get("Jp-1")!.length, 7000);
    assert.ok(byStream.get("Jp-1")!.every((x) => x === jp));
    assert.deepEqual(byStream.get("Small-1"), ["T"]);
  },
);

/** Writes an item straight into the events table, as another writer (or damage) would. */
async function putRaw(eventTable: string, item: Record<string, AttributeValue>) {
  await client.send(new PutItemCommand({ TableName: eventTable, Item: item }));
}

const event = (type: string) => ({ M: { t: { S: type }, id: { S: crypto.randomUUID() } } });

Deno.test(
  "dynamo bad input: records the index cannot hold are parked, counted and reported; the rest is indexed",
  opts,
  async () => {
    await using t = await freshTables({ eventTable: "events", indexTable: "index" }, "ddbbad-");
    const store = dynamoStore(client, { tableName: t.eventTable });
    const ts = { N: String(Date.now()) };
    await store.append("Good-1", [{ type: "A", data: 1 }], 0);
    // Another writer's items: no id in the name, a name over the key budget, and malformed ones.
    await putRaw(t.eventTable, {
      p: { S: "Cat" },
      i: { N: "0" },
      n: { N: "1" },
      ts,
      e: { L: [event("T")] },
    });
    const long = `Long-${"x".repeat(2_040)}`;
    await putRaw(t.eventTable, {
      p: { S: long },
      i: { N: "0" },
      n: { N: "1" },
      ts,
      e: { L: [event("T")] },
    });
    await putRaw(t.eventTable, { p: { S: "NoEvents-1" }, i: { N: "0" }, n: { N: "1" }, ts });
    await putRaw(t.eventTable, {
      p: { S: "StringN-1" },
      i: { N: "0" },
      n: { S: "1" },
      ts,
      e: { L: [event("T")] },
    });
    await putRaw(t.eventTable, {
      p: { S: "Count-1" },
      i: { N: "0" },
      n: { N: "3" },
      ts,
      e: { L: [event("T")] },
    });
    await putRaw(t.eventTable, {
      p: { S: "Typed-1" },
      i: { N: "0" },
      n: { N: "1" },
      ts,
      e: { L: [{ M: { t: { N: "7" }, id: { S: "x" } } }] },
    });
    // The stream whose first append is malformed stays parked: its next append is set aside too,
    // rather than indexed past the hole.
    await putRaw(t.eventTable, {
      p: { S: "Count-1" },
      i: { N: "3" },
      n: { N: "4" },
      ts,
      e: { L: [event("U")] },
    });
    await store.append("Good-1", [{ type: "B", data: 2 }], 1);
    await store.append("Good-2", [{ type: "C", data: 3 }], 0);

    const indexer = dynamoIndexer(client, { indexTable: t.indexTable });
    const result = await indexer.ingest(await allRecords(t.eventTable));
    assert.equal(result.events, 3, "Good-1 twice and Good-2 are indexed");
    assert.equal(result.malformed, 6);
    assert.equal(result.parked, 7);
    const indexed = (await chunks(t.indexTable)).flatMap((c) => c.entries);
    assert.deepEqual(indexed.map((e) => [e.stream, e.index, e.next]), [["Good-1", 0, 2], [
      "Good-2",
      0,
      1,
    ]]);
    const parked = await indexer.parked();
    assert.equal(parked.length, 7);
    const reasons = new Map(parked.map((r) => [`${r.stream?.slice(0, 12)}@${r.index}`, r.reason]));
    assert.match(reasons.get("Cat@0")!, /missing '-'/);
    assert.match(reasons.get("Long-xxxxxxx@0")!, /bytes in UTF-8/);
    assert.match(reasons.get("NoEvents-1@0")!, /e is not a list/);
    assert.match(reasons.get("StringN-1@0")!, /n is not a number/);
    assert.match(reasons.get("Count-1@0")!, /holds 1 events where n - i is 3/);
    assert.match(reasons.get("Typed-1@0")!, /no type/);
    assert.match(reasons.get("Count-1@3")!, /parked from version 0/);
    // Health sees them.
    const problems = indexer.problems();
    assert.equal(problems.length, 7);
    assert.ok(problems.every((p) => p.severity === "degraded"));
    // A replay parks them again in place: nothing new is indexed, nothing duplicated.
    const again = await indexer.ingest(await allRecords(t.eventTable));
    assert.equal(again.entries, 0);
    assert.equal(again.parked, 7);
    assert.equal((await indexer.parked()).length, 7);
    // Later appends of the good streams carry on.
    await store.append("Good-1", [{ type: "D", data: 4 }], 2);
    const later = await indexer.ingest(await allRecords(t.eventTable));
    assert.equal(later.events, 1);
  },
);

Deno.test(
  "dynamo bad input: junk inside a stream's indexed range is dropped and logged, not parked",
  opts,
  async () => {
    await using t = await freshTables({ eventTable: "events", indexTable: "index" }, "ddbbad-");
    const store = dynamoStore(client, { tableName: t.eventTable });
    const indexer = dynamoIndexer(client, { indexTable: t.indexTable });
    await store.append("Good-1", [0, 1, 2].map((k) => ({ type: "A", data: k })), 0);
    await indexer.ingest(await allRecords(t.eventTable));
    // Another writer's malformed item at a key inside the indexed range [0, 3).
    const ts = { N: "0" };
    await putRaw(t.eventTable, { p: { S: "Good-1" }, i: { N: "1" }, n: { N: "2" }, ts });
    await store.append("Good-1", [{ type: "B", data: 3 }], 3);
    await store.append("Good-1", [{ type: "C", data: 4 }], 4);
    const r = await indexer.ingest(await allRecords(t.eventTable));
    assert.deepEqual([r.events, r.parked, r.malformed, r.dropped], [2, 0, 0, 1]);
    assert.deepEqual(await indexer.parked(), []);
    const indexed = (await chunks(t.indexTable)).flatMap((c) => c.entries);
    assert.deepEqual(indexed.map((e) => [e.index, e.next]), [[0, 3], [3, 5]]);
    // Junk straddling the indexed version, or above it, still parks the stream.
    await putRaw(t.eventTable, { p: { S: "Good-1" }, i: { N: "2" }, n: { N: "7" }, ts });
    const straddling = await indexer.ingest(await allRecords(t.eventTable));
    assert.deepEqual([straddling.parked, straddling.dropped], [1, 1]);
  },
);

Deno.test(
  "dynamo bad input: partitions may hold '#'; a partitionOf that throws parks only that stream",
  opts,
  async () => {
    await using t = await freshTables({ eventTable: "events", indexTable: "index" }, "ddbbad-");
    const store = dynamoStore(client, { tableName: t.eventTable });
    await store.append("A#B-1", [{ type: "T", data: 1 }], 0);
    await store.append("A-1", [{ type: "T", data: 1 }], 0);
    await store.append("Boom-1", [{ type: "T", data: 1 }], 0);
    const indexer = dynamoIndexer(client, {
      indexTable: t.indexTable,
      partitionOf: (stream) => {
        if (stream.startsWith("Boom")) throw new Error("no partition for Boom");
        return categoryOf(stream);
      },
    });
    const result = await indexer.ingest(await allRecords(t.eventTable));
    assert.equal(result.events, 2);
    assert.equal(result.parked, 1);
    assert.equal(result.malformed, 0);
    // "A#B" and "A" are separate partitions whose keys cannot collide: the epoch number follows
    // the last '#'.
    assert.deepEqual(
      (await chunks(t.indexTable, "A#B")).flatMap((c) => c.entries).map((e) => e.stream),
      ["A#B-1"],
    );
    assert.deepEqual(
      (await chunks(t.indexTable, "A")).flatMap((c) => c.entries).map((e) => e.stream),
      ["A-1"],
    );
    assert.match((await indexer.parked())[0].reason, /partitionOf failed: .*no partition for Boom/);
  },
);

Deno.test(
  "dynamo bad input: the streams runner indexes past a bad record instead of stopping",
  opts,
  async () => {
    await using t = await freshTables({ eventTable: "events", indexTable: "index" }, "ddbbad-");
    const store = dynamoStore(client, { tableName: t.eventTable });
    const indexer = dynamoIndexer(client, { indexTable: t.indexTable });
    await store.append("Good-1", [{ type: "A", data: 1 }], 0);
    await putRaw(t.eventTable, {
      p: { S: "Cat" },
      i: { N: "0" },
      n: { N: "1" },
      ts: { N: "0" },
      e: { L: [event("T")] },
    });
    await store.append("Good-1", [{ type: "B", data: 2 }], 1);
    let events = 0, parked = 0;
    const stop = new AbortController();
    const running = runStreamsIndexer({
      client,
      streamsClient,
      eventTable: t.eventTable,
      indexer,
      signal: stop.signal,
      pollIntervalMs: 20,
      onIngest: (r) => {
        events += r.events;
        parked += r.parked;
      },
    });
    const deadline = Date.now() + 20_000;
    while (events < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    stop.abort();
    await running;
    assert.equal(events, 2);
    assert.equal(parked, 1);
  },
);

Deno.test(
  "dynamo bad input: a stray item at a key an append needs is a typed error naming it",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    await store.append("Stray-1", [{ type: "T", data: 0 }], 0);
    // Another writer puts an item where the next append's event item goes.
    await putRaw(t.tableName, {
      p: { S: "Stray-1" },
      i: { N: "1" },
      n: { N: "2" },
      ts: { N: "0" },
      e: { L: [event("Forged")] },
    });
    await assert.rejects(
      () => store.append("Stray-1", [{ type: "T", data: 1 }], 1),
      (e: unknown) => {
        assert.ok(e instanceof DynamoAppendError, String(e));
        assert.equal(e.code, "DynamoStrayItem");
        assert.match(e.message, /holds index 1/);
        return true;
      },
    );
    // Nothing half-written: the tip is unchanged and the stream reads as before plus the stray.
    assert.equal(await store.version("Stray-1"), 1);
    // Other streams are unaffected.
    await store.append("Other-1", [{ type: "T", data: 1 }], 0);
    assert.equal(await store.version("Other-1"), 1);
  },
);

Deno.test(
  "dynamo bad input: an event item in place while the tip is held is contention, not a stray",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    await store.append("Order-1", [{ type: "A", data: 0 }], 0);
    // What a loser sees while the winner is mid-commit: the tip locked, its event item applied.
    let injected = false;
    const racy = {
      async send(command: object, options?: object) {
        if (command instanceof TransactWriteItemsCommand && !injected) {
          injected = true;
          await store.append("Order-1", [{ type: "Winner", data: 1 }], 1);
          throw new TransactionCanceledException({
            message: "Transaction cancelled [TransactionConflict, ConditionalCheckFailed]",
            $metadata: {},
            CancellationReasons: [{ Code: "TransactionConflict" }, {
              Code: "ConditionalCheckFailed",
            }],
          });
        }
        return await client.send(command as never, options);
      },
    };
    const loser = dynamoStore(racy, { tableName: t.tableName });
    // Retried, then the tip's condition decides: a version conflict the decider retries.
    await assert.rejects(
      () => loser.append("Order-1", [{ type: "Loser", data: 2 }], 1),
      (e: unknown) => e instanceof WrongExpectedVersionError && e.expected === 1 && e.actual === 2,
    );
  },
);

Deno.test(
  "dynamo bad input: many distinct types append; the tip's type marks stay bounded and right",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    // 300 distinct types in one append used to overflow the tip's 4 KB update expression.
    const many = Array.from({ length: 300 }, (_, k) => ({ type: `Type${k}`, data: k }));
    await store.append("Short-1", [{ type: "Type7", data: "old" }], 0);
    assert.equal((await store.append("Short-1", many, 1)).nextIndex, 301);
    // readLastEvent finds the types of the unmarked append (Type7's mark of index 0 is stale).
    assert.equal((await store.readLastEvent("Short-1", "Type7"))?.index, 8);
    assert.equal((await store.readLastEvent("Short-1", "Type299"))?.index, 300);
    assert.equal(await store.readLastEvent("Short-1", "Absent"), undefined);
    // A marked append after it is trusted again.
    await store.append("Short-1", [{ type: "Type7", data: "new" }], 301);
    assert.equal((await store.readLastEvent("Short-1", "Type7"))?.data, "new");
    // A tip grown near 400 KB of marks over many appends: new types still append, unmarked.
    let v = 0;
    for (let batch = 0; batch < 11; batch++) {
      const events = Array.from({ length: 40 }, (_, k) => ({
        type: `${batch}-${k}`.padStart(1000, "g"),
        data: batch,
      }));
      v = (await store.append("Grow-1", events, v)).nextIndex;
    }
    assert.equal(v, 440);
    await store.append("Grow-1", [{ type: "Brand-New", data: 1 }], v);
    assert.equal((await store.readLastEvent("Grow-1", "Brand-New"))?.index, 440);
    const last = `${10}-${39}`.padStart(1000, "g");
    assert.equal((await store.readLastEvent("Grow-1", last))?.index, 439);
  },
);

Deno.test(
  "dynamo bad input: malformed append items are logged with their reason; the batch's good ones are indexed",
  opts,
  async () => {
    await using t = await freshTables({ eventTable: "events", indexTable: "index" }, "ddbbad-");
    const store = dynamoStore(client, { tableName: t.eventTable });
    await store.append("Good-1", [{ type: "A", data: 1 }], 0);
    const ts = { N: "0" };
    await putRaw(t.eventTable, { p: { S: "NoEvents-1" }, i: { N: "0" }, n: { N: "1" }, ts });
    await putRaw(t.eventTable, {
      p: { S: "StringN-1" },
      i: { N: "0" },
      n: { S: "1" },
      ts,
      e: { L: [event("T")] },
    });
    await store.append("Good-2", [{ type: "B", data: 2 }], 0);
    const records: LogRecord[] = [];
    await configure({
      reset: true,
      sinks: { buffer: (r) => void records.push(r) },
      loggers: [
        { category: ["impel", "dynamo"], lowestLevel: "warning", sinks: ["buffer"] },
        { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
      ],
    });
    try {
      const indexer = dynamoIndexer(client, { indexTable: t.indexTable });
      const r = await indexer.ingest(await allRecords(t.eventTable));
      assert.deepEqual([r.events, r.malformed, r.parked], [2, 2, 2]);
      const logged = records.filter((x) => x.level === "error").map((x) =>
        `${x.properties.where}: ${x.properties.reason}`
      ).sort();
      assert.equal(logged.length, 2, `one error per malformed item: ${logged}`);
      assert.match(logged[0], /^"NoEvents-1" at version 0: .*e is not a list/);
      assert.match(logged[1], /^"StringN-1" at version 0: .*n is not a number/);
    } finally {
      await reset();
    }
  },
);

/** A client whose transactions DynamoDB cancels with `codes` (the tip first), `times` times. */
function cancelling(codes: readonly string[], times = Infinity) {
  let sent = 0;
  return {
    get cancelled() {
      return sent;
    },
    async send(command: object, options?: object) {
      if (command instanceof TransactWriteItemsCommand && sent < times) {
        sent++;
        throw new TransactionCanceledException({
          message: `Transaction cancelled [${codes.join(", ")}]`,
          $metadata: {},
          CancellationReasons: codes.map((Code) => ({ Code })),
        });
      }
      return await client.send(command as never, options);
    },
  };
}

Deno.test(
  "dynamo bad input: every other cancellation reason is a typed error; the stream appends after",
  opts,
  async () => {
    await using t = await freshStore();
    const { store } = t;
    await store.append("Cancel-1", [{ type: "T", data: 0 }], 0);
    const refused = async (codes: string[], code: string, pattern: RegExp, tries: number) => {
      const fake = cancelling(codes);
      await assert.rejects(
        () =>
          dynamoStore(fake, { tableName: t.tableName }).append(
            "Cancel-1",
            [{ type: "T", data: 1 }],
            1,
          ),
        (e: unknown) => {
          assert.ok(e instanceof DynamoAppendError, String(e));
          assert.equal(e.code, code);
          assert.equal(e.stream, "Cancel-1");
          assert.equal(e.expected, 1);
          assert.match(e.message, pattern);
          assert.ok(e.cause instanceof TransactionCanceledException);
          return true;
        },
      );
      assert.equal(fake.cancelled, tries, `${codes}: attempts`);
    };
    // Refusals of the event items: not retried, named.
    await refused(
      ["None", "ItemCollectionSizeLimitExceeded"],
      "DynamoAppendRefused",
      /ItemCollectionSizeLimitExceeded/,
      1,
    );
    await refused(["None", "ValidationError"], "DynamoAppendRefused", /ValidationError/, 1);
    // Throttling: retried like contention (the SDK does not retry a cancellation), then a
    // typed error that isTransientDynamoError calls transient, so callers' retries apply.
    await refused(
      ["ThrottlingError", "None"],
      "DynamoAppendThrottled",
      /kept throttling it \(ThrottlingError; 10 attempts\)/,
      10,
    );
    assert.ok(
      isTransientDynamoError(
        new DynamoAppendError("DynamoAppendThrottled", "Cancel-1", 1, "throttled"),
      ),
    );
    assert.ok(
      !isTransientDynamoError(new DynamoAppendError("DynamoAppendRefused", "Cancel-1", 1, "no")),
    );
    // Another transaction holding the stream: retried, then contention.
    await refused(
      ["TransactionConflict", "None"],
      "DynamoAppendContention",
      /other transactions kept holding the stream \(10 attempts\)/,
      10,
    );
    // Contention that clears is retried through to a normal append.
    const brief = cancelling(["TransactionConflict", "None"], 2);
    const r = await dynamoStore(brief, { tableName: t.tableName }).append(
      "Cancel-1",
      [{ type: "T", data: 1 }],
      1,
    );
    assert.deepEqual([r.nextIndex, brief.cancelled], [2, 2]);
    const slowed = cancelling(["None", "ThrottlingError"], 3);
    const s = await dynamoStore(slowed, { tableName: t.tableName }).append(
      "Cancel-1",
      [{ type: "T", data: 2 }],
      2,
    );
    assert.deepEqual([s.nextIndex, slowed.cancelled], [3, 3]);
    // Nothing half-written by the refused attempts: the stream reads 0, 1 and 2, once each.
    assert.deepEqual((await store.readStream("Cancel-1")).map((e) => e.data), [0, 1, 2]);
  },
);
