// The DynamoDB indexer as the process tests/faults/dynamo.fault.ts kills over and over:
// runStreamsIndexer over the events table's stream into the index table, default settings but for
// small epochs (so that epochs close under the kills too) and one index partition per category.
// Every line goes to LOG with one unbuffered write, so that what was written before a SIGKILL
// survives. Tab-separated:
//
//   resume <shard> <sequence number or ->   progress found at start, per shard of the stream
//   ready <pid> <ms>
//   ingest <shard> <events> <duplicateEvents> <gaps> <parked> <dropped> <entries> <epochsClosed>
//          <ms since the last ingest line or ready> <ms>
//   done <pid> <ms>                           SIGTERM: stopped cleanly (exit 0)
//   X <ms> <code> <message>                   runStreamsIndexer rejected (exit 3)
//
// Env: DYNAMODB_ENDPOINT, EVENT_TABLE, INDEX_TABLE, LOG, MAX_EPOCH_ENTRIES (default 20).
import { DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";
import { DescribeStreamCommand, DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { DescribeTableCommand } from "@aws-sdk/client-dynamodb";
import { configure, getStreamSink } from "@logtape/logtape";
import { categoryOf } from "../../../mod.ts";
import { dynamoIndexer } from "../../../stores/dynamo-indexer.ts";
import { runStreamsIndexer } from "../../../stores/dynamo-streams.ts";
import { lineWriter } from "../support/process.ts";

const env = (name: string, fallback?: string): string => {
  const value = Deno.env.get(name) ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const eventTable = env("EVENT_TABLE");
const indexTable = env("INDEX_TABLE");
const log = lineWriter(env("LOG"));
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);

await configure({
  sinks: { stderr: getStreamSink(Deno.stderr.writable) },
  loggers: [
    { category: ["impel"], lowestLevel: "warning", sinks: ["stderr"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});

const config = {
  endpoint: env("DYNAMODB_ENDPOINT"),
  region: "local",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
};
const client = new DynamoDBClient(config);
const streamsClient = new DynamoDBStreamsClient(config);

// What the runner will resume from (its progress items, read as it reads them): the suite checks
// that a restart resumes rather than starting over.
const { Table } = await client.send(new DescribeTableCommand({ TableName: eventTable }));
const { StreamDescription } = await streamsClient.send(
  new DescribeStreamCommand({ StreamArn: Table!.LatestStreamArn! }),
);
for (const shard of StreamDescription?.Shards ?? []) {
  const { Item } = await client.send(
    new GetItemCommand({
      TableName: indexTable,
      Key: { p: { S: `$shard#${eventTable}#${shard.ShardId}` }, i: { N: "0" } },
      ConsistentRead: true,
    }),
  );
  log.write(`resume\t${shard.ShardId}\t${Item?.seq?.S ?? "-"}`);
}

const stop = new AbortController();
Deno.addSignalListener("SIGTERM", () => stop.abort());
const indexer = dynamoIndexer(client, {
  indexTable,
  partitionOf: categoryOf,
  maxEpochEntries: Number(env("MAX_EPOCH_ENTRIES", "20")),
});
log.write(`ready\t${Deno.pid}\t${now()}`);
// Time since the last ingest (or since ready): what reading, indexing and recording one slice
// took, when the indexer is behind.
let since = performance.now();
try {
  await runStreamsIndexer({
    client,
    streamsClient,
    eventTable,
    indexer,
    signal: stop.signal,
    onIngest: (r, shard) => {
      const ms = (performance.now() - since).toFixed(0);
      since = performance.now();
      log.write(
        [
          "ingest",
          shard,
          r.events,
          r.duplicateEvents,
          r.gaps,
          r.parked,
          r.dropped,
          r.entries,
          r.epochsClosed,
          ms,
          now(),
        ].join("\t"),
      );
    },
  });
  log.write(`done\t${Deno.pid}\t${now()}`);
  Deno.exit(0);
} catch (e) {
  const code = (e as { code?: string }).code ?? (e as Error)?.name ?? "?";
  log.write(`X\t${now()}\t${code}\t${String(e).replaceAll("\n", " ")}`);
  Deno.exit(3);
}
