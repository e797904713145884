// A reactor over a DynamoDB event table: the indexer tails the table's DynamoDB Stream into the
// index, the index source feeds the reactor, checkpoints are kept in DynamoDB. The indexer runs
// in this process for brevity; in production it is its own process (every reactor shares it).
//   IMPEL_DYNAMO_ENDPOINT=http://127.0.0.1:8000 deno run -A examples/dynamo_reactor.ts
// (The README shows this file with the package's import names; tests/examples/dynamo_reactor.test.ts
// runs it against DynamoDB Local.)
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { pipeline, stopOnSignals } from "../mod.ts";
import { createEventTable, dynamoStore } from "../stores/dynamo.ts";
import { createIndexTable, dynamoIndexer } from "../stores/dynamo-indexer.ts";
import { runStreamsIndexer } from "../stores/dynamo-streams.ts";
import { dynamoSource } from "../sources/dynamo.ts";
import { createCheckpointTable, dynamoCheckpoints } from "../checkpoints/dynamo.ts";

const endpoint = process.env.IMPEL_DYNAMO_ENDPOINT; // unset: AWS, with the usual credentials
const config = endpoint
  ? { endpoint, region: "local", credentials: { accessKeyId: "local", secretAccessKey: "local" } }
  : {};
const client = new DynamoDBClient(config);
const eventTable = "shop-events", indexTable = "shop-index", checkpointTable = "shop-checkpoints";
await createEventTable(client, eventTable); // each is a no-op when the table exists
await createIndexTable(client, indexTable);
await createCheckpointTable(client, checkpointTable);

const stop = stopOnSignals();
const indexer = dynamoIndexer(client, { indexTable });
const indexing = runStreamsIndexer({
  client,
  streamsClient: new DynamoDBStreamsClient(config),
  eventTable,
  indexer,
  signal: stop.signal,
});

const checkpoints = dynamoCheckpoints(client, { tableName: checkpointTable });
const printer = pipeline({
  name: "order-printer",
  source: ({ group }) => dynamoSource({ client, indexTable, eventTable, group, checkpoints }),
  handler: (stream, events) => {
    for (const e of events) console.log(`${stream} #${e.index} ${e.type}`);
  },
});
console.log(`reactor ${printer.name} running on ${eventTable}`);
const running = printer.run({ signal: stop.signal });

// Any process appends through the store; the reactor sees it once the indexer has.
await dynamoStore(client, { tableName: eventTable }).append("Order-1", [
  { type: "Placed", data: { total: 5 } },
], "any");

await running;
await indexing;
client.destroy();
console.log("stopped, checkpoints committed");
