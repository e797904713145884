// DynamoDB refusing an index write as invalid (issue 21, R1): the partition's records are
// parked with the reason, and the indexer carries on with the other partitions.
import assert from "node:assert/strict";
import { PutItemCommand } from "@aws-sdk/client-dynamodb";
import { dynamoIndexer } from "../../stores/dynamo-indexer.ts";
import { PARTITIONS_KEY } from "../../stores/dynamo-index.ts";
import { client, freshTables, opts, summaryAt } from "../support/dynamo.ts";

const summary = summaryAt(1_700_000_000_000);

Deno.test(
  "dynamo indexer: a partition set that can take no more partitions parks the new one's records",
  opts,
  async () => {
    await using t = await freshTables({ indexTable: "index" }, "ddbrefused-");
    const partitionOf = (s: string) => s.split("-")[0].padEnd(1000, "p");
    const ix = dynamoIndexer(client, { indexTable: t.indexTable, partitionOf });
    assert.equal((await ix.ingestAppends([summary("Old-1", 0, 1)])).entries, 1);
    // The set as 409 partitions of 1 000-byte ids leave it: one more is over 400 KB.
    const filler = Array.from({ length: 408 }, (_, k) => `F${k}`.padEnd(1000, "p"));
    await client.send(
      new PutItemCommand({
        TableName: t.indexTable,
        Item: {
          p: { S: PARTITIONS_KEY },
          i: { N: "0" },
          ps: { SS: [partitionOf("Old-1"), ...filler] },
        },
      }),
    );
    const r = await ix.ingestAppends([summary("New-1", 0, 2), summary("Old-2", 0, 1)]);
    assert.equal(r.entries, 1, "the known partition's append is indexed");
    assert.equal(r.parked, 1, "the new partition's append is parked, not thrown");
    const parked = await ix.parked();
    assert.deepEqual(parked.map((p) => [p.stream, p.index]), [["New-1", 0]]);
    assert.match(parked[0].reason, /DynamoDB refused the index write of partition "New/);
    // Its stream stays parked: a later append is parked too, never indexed past the hole.
    assert.equal((await ix.ingestAppends([summary("New-1", 2, 3)])).parked, 1);
  },
);
