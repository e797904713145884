// The index lists its partitions one item each (issue 21): more partitions than one 400 KB item
// could name are all indexed and read, and an index written with the old single set is still
// read, next to partitions added since. Against DynamoDB Local.
import assert from "node:assert/strict";
import { DeleteItemCommand, GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import type { Batch } from "../../core/batch.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import {
  dynamoIndexer,
  listPartitions,
  PARTITIONS_KEY,
  partitionSlot,
} from "../../stores/dynamo-indexer.ts";
import { dynamoSource } from "../../sources/dynamo.ts";
import { client, freshTables, opts, summaryAt } from "../support/dynamo.ts";

const summary = summaryAt(1_700_000_000_000);

/** Reads index-only batches until every stream in `want` is seen (within `ms`). */
async function readAll(indexTable: string, want: ReadonlySet<string>, ms: number) {
  const stop = new AbortController();
  const source = dynamoSource({
    client,
    indexTable,
    group: "g",
    checkpoints: memoryCheckpoints(),
    tailSleepMs: 200,
    signal: stop.signal,
  });
  const seen = new Set<string>();
  const tranches = new Set<string>();
  const reader = source.getReader();
  const deadline = Date.now() + ms;
  try {
    while ([...want].some((s) => !seen.has(s))) {
      assert.ok(Date.now() < deadline, `read ${seen.size} of ${want.size} streams in time`);
      const { value, done } = await reader.read();
      assert.ok(!done);
      for (const item of (value as Batch).items) seen.add(item.stream);
      tranches.add((value as Batch).tranche);
    }
  } finally {
    stop.abort();
    await reader.cancel().catch(() => {});
  }
  return { seen, tranches };
}

Deno.test(
  "dynamo index: more partitions than one item could list are all indexed and read",
  opts,
  async () => {
    await using t = await freshTables({ indexTable: "index" }, "dyn-");
    // 1 000-byte partition ids: the old single set held 409 of them at most.
    const count = 430;
    const partitionOf = (s: string) => s.split("-")[0].padEnd(1000, "p");
    const ix = dynamoIndexer(client, { indexTable: t.indexTable, partitionOf });
    const appends = Array.from({ length: count }, (_, k) => summary(`P${k}-1`, 0, 1));
    for (let k = 0; k < count; k += 50) {
      const r = await ix.ingestAppends(appends.slice(k, k + 50));
      assert.deepEqual([r.entries, r.parked], [Math.min(50, count - k), 0]);
    }
    const listed = await listPartitions(client, t.indexTable);
    assert.equal(listed.length, count);
    assert.deepEqual(listed, appends.map((a) => partitionOf(a.stream)).sort());
    // The source finds every partition and reads each.
    const { seen, tranches } = await readAll(
      t.indexTable,
      new Set(appends.map((a) => a.stream)),
      120_000,
    );
    assert.equal(seen.size, count);
    assert.equal(tranches.size, count);
    // A partition indexed again is not listed twice.
    await ix.ingestAppends([summary("P0-1", 1, 1)]);
    assert.equal((await listPartitions(client, t.indexTable)).length, count);
  },
);

Deno.test(
  "dynamo index: the old single partition set is still read; new partitions get items",
  opts,
  async () => {
    await using t = await freshTables({ indexTable: "index" }, "dyn-");
    const ix = dynamoIndexer(client, { indexTable: t.indexTable, partitionOf: (s) => s[0] });
    await ix.ingestAppends([summary("A-1", 0, 1), summary("B-1", 0, 1)]);
    // As an index written before one item per partition: A and B listed in the set only.
    for (const p of ["A", "B"]) {
      await client.send(
        new DeleteItemCommand({
          TableName: t.indexTable,
          Key: { p: { S: PARTITIONS_KEY }, i: { N: String(await partitionSlot(p)) } },
        }),
      );
    }
    await client.send(
      new PutItemCommand({
        TableName: t.indexTable,
        Item: { p: { S: PARTITIONS_KEY }, i: { N: "0" }, ps: { SS: ["A", "B"] } },
      }),
    );
    assert.deepEqual(await listPartitions(client, t.indexTable), ["A", "B"]);
    // A partition added now is listed by its own item; the set is left as it was.
    await ix.ingestAppends([summary("C-1", 0, 1), summary("A-1", 1, 1)]);
    assert.deepEqual(await listPartitions(client, t.indexTable), ["A", "B", "C"]);
    const { Item } = await client.send(
      new GetItemCommand({
        TableName: t.indexTable,
        Key: { p: { S: PARTITIONS_KEY }, i: { N: "0" } },
        ConsistentRead: true,
      }),
    );
    assert.deepEqual(Item?.ps?.SS?.sort(), ["A", "B"]);
    const { seen } = await readAll(t.indexTable, new Set(["A-1", "B-1", "C-1"]), 20_000);
    assert.equal(seen.size, 3);
  },
);

Deno.test(
  "dynamo index: a partition whose slot another partition holds takes the next one",
  opts,
  async () => {
    await using t = await freshTables({ indexTable: "index" }, "dyn-");
    // Another id at X's slot, as a hash collision would leave it.
    const slot = await partitionSlot("X");
    await client.send(
      new PutItemCommand({
        TableName: t.indexTable,
        Item: { p: { S: PARTITIONS_KEY }, i: { N: String(slot) }, pt: { S: "Other" } },
      }),
    );
    const ix = dynamoIndexer(client, { indexTable: t.indexTable, partitionOf: () => "X" });
    assert.equal((await ix.ingestAppends([summary("X-1", 0, 1)])).entries, 1);
    assert.deepEqual(await listPartitions(client, t.indexTable), ["Other", "X"]);
    const { Item } = await client.send(
      new GetItemCommand({
        TableName: t.indexTable,
        Key: { p: { S: PARTITIONS_KEY }, i: { N: String(slot + 1) } },
        ConsistentRead: true,
      }),
    );
    assert.equal(Item?.pt?.S, "X");
  },
);
