// DynamoDB refusing an index write as invalid (issue 21, R1): the partition's records are
// parked with the reason, and the indexer carries on with the other partitions.
import assert from "node:assert/strict";
import { PutItemCommand } from "@aws-sdk/client-dynamodb";
import { dynamoIndexer } from "../../stores/dynamo-indexer.ts";
import { client, freshTables, opts, summaryAt } from "../support/dynamo.ts";

const summary = summaryAt(1_700_000_000_000);

Deno.test(
  "dynamo indexer: a write DynamoDB refuses as invalid parks that partition's records",
  opts,
  async () => {
    await using t = await freshTables({ indexTable: "index" }, "dyn-");
    const partitionOf = (s: string) => s.split("-")[0].padEnd(1000, "p");
    const ix = dynamoIndexer(client, { indexTable: t.indexTable, partitionOf });
    assert.equal((await ix.ingestAppends([summary("Old-1", 0, 1)])).entries, 1);
    // Another writer left the index's item of New-1 a few bytes short of 400 KB: recording the
    // stream's partition (1 000 bytes) in it is refused (a ValidationError).
    await client.send(
      new PutItemCommand({
        TableName: t.indexTable,
        Item: { p: { S: "$stream#New-1" }, i: { N: "0" }, junk: { S: "j".repeat(409_000) } },
      }),
    );
    const r = await ix.ingestAppends([summary("New-1", 0, 2), summary("Old-2", 0, 1)]);
    assert.equal(r.entries, 1, "the other partition's append is indexed");
    assert.equal(r.parked, 1, "the refused partition's append is parked, not thrown");
    const parked = await ix.parked();
    assert.deepEqual(parked.map((p) => [p.stream, p.index]), [["New-1", 0]]);
    assert.match(parked[0].reason, /DynamoDB refused the index write of partition "New/);
    // Its stream stays parked: a later append is parked too, never indexed past the hole.
    assert.equal((await ix.ingestAppends([summary("New-1", 2, 3)])).parked, 1);
  },
);
