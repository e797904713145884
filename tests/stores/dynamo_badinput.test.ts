// DynamoDB under bad input (issue 21): limits in UTF-8 bytes, what the store refuses at append
// time so that everything it accepts can be indexed. Against DynamoDB Local.
import assert from "node:assert/strict";
import { QueryCommand } from "@aws-sdk/client-dynamodb";
import { InvalidArgumentError } from "../../core/errors.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import { dynamoStore, MAX_EVENT_TYPE_BYTES, MAX_STREAM_NAME_BYTES } from "../../stores/dynamo.ts";
import {
  decodeEntries,
  dynamoIndexer,
  epochKey,
  type IndexEntry,
} from "../../stores/dynamo-indexer.ts";
import { allRecords, client, freshTables, opts } from "../support/dynamo.ts";

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
