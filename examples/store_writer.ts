// A replicator: the Customer category of a MessageDB copied into a DynamoDB event table, stream
// by stream at the same indexes, with checkpoints in PostgreSQL; it stops cleanly on Ctrl-C.
//   IMPEL_PG_URL=postgres://… IMPEL_DYNAMO_ENDPOINT=http://127.0.0.1:8000 deno run -A examples/store_writer.ts
// (The README shows this file with the package's import names; tests/examples/store_writer.test.ts
// runs it under Deno and Bun against PostgreSQL and DynamoDB Local.)
import pg from "pg";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { pipeline, stopOnSignals } from "../mod.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../checkpoints/postgres.ts";
import { messageDbSource } from "../sources/messagedb.ts";
import { createEventTable, dynamoStore } from "../stores/dynamo.ts";
import { storeWriter } from "../sinks/store-writer.ts";

const url = process.env.IMPEL_PG_URL;
if (!url) throw new Error("set IMPEL_PG_URL to the MessageDB database");
const pool = new pg.Pool({ connectionString: url, options: "-c search_path=message_store,public" });
const endpoint = process.env.IMPEL_DYNAMO_ENDPOINT; // unset: AWS, with the usual credentials
const client = new DynamoDBClient(
  endpoint
    ? { endpoint, region: "local", credentials: { accessKeyId: "local", secretAccessKey: "local" } }
    : {},
);
await createEventTable(client, "customers-replica"); // a no-op when the table exists
await initPostgresCheckpoints(pool); // the checkpoint table, unless it exists
const checkpoints = postgresCheckpoints(pool);

// Each span is appended at its own index: a span the replica already has is skipped, one it
// has in part is completed, and one whose prefix it lacks fails with PrefixMissingError, retried
// with backoff (the default failure policy) until the prefix is there.
const writer = storeWriter({
  target: dynamoStore(client, { tableName: "customers-replica" }),
  onOutcome: (o) =>
    console.log(`${o.stream} [${o.index}, ${o.next}) ${o.kind}: ${o.written} written`),
});
const replicator = pipeline({
  name: "customer-replicator",
  source: ({ group }) =>
    messageDbSource({ client: pool, categories: ["Customer"], group, checkpoints }),
  handler: writer.handler,
});
console.log(`${replicator.name} running`);
await replicator.run({ signal: stopOnSignals().signal });
console.log("stopped:", JSON.stringify(writer.stats().events));
await pool.end();
client.destroy();
