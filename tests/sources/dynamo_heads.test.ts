// The DynamoDB index source knows its heads (each partition's tip): awaitCompletion({ tail: true })
// waits for what was indexed before the call, and lag is known without positions.head.
// DynamoDB Local (tools/dynamodb.sh start).
import assert from "node:assert/strict";
import { run, streamsSink } from "../../core/sink.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { dynamoIndexer } from "../../stores/dynamo-indexer.ts";
import { dynamoSource, encodePosition } from "../../sources/dynamo.ts";
import { client, freshTables, opts, summaryAt } from "../support/dynamo.ts";

const summary = summaryAt(1_700_000_000_000);

Deno.test(
  "dynamo source: heads are the partitions' tips; awaitCompletion waits for them",
  opts,
  async () => {
    await using t = await freshTables({ indexTable: "index" });
    const indexer = dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 4 });
    await indexer.ingestAppends(["A-1", "B-1", "C-1"].map((s) => summary(s, 0, 2)));
    let handled = 0;
    const sink = streamsSink({
      group: "g",
      statsIntervalMs: 0,
      handler: (_s, events) => void (handled += events.length),
    });
    const source = dynamoSource({
      client,
      indexTable: t.indexTable,
      group: "g",
      checkpoints: memoryCheckpoints(),
      tailSleepMs: 3000, // at the tail it looks again only after 3 s
    });
    const ac = new AbortController();
    const running = run(source, sink, { signal: ac.signal });
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
    assert.equal(handled, 6);
    assert.deepEqual([...(await source.heads!())], [["0", encodePosition(0, 3)]]);

    await indexer.ingestAppends(["A-1", "B-1"].map((s) => summary(s, 2, 1)));
    assert.deepEqual([...(await source.heads!())], [["0", encodePosition(1, 1)]]);
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
    assert.equal(handled, 8, "what was indexed before the call is handled when it resolves");
    ac.abort();
    await running;
  },
);
