// The decider over the DynamoDB event store (DynamoDB Local; `tools/dynamodb.sh start`): the
// conflict scenario the MessageDB test runs, on DynamoDB's conditional transactions.
import { DeleteTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { createEventTable, dynamoStore } from "../../stores/dynamo.ts";
import { conflictingChargesRedecide } from "./hotel_scenarios.ts";

const client = new DynamoDBClient({
  endpoint: Deno.env.get("DYNAMODB_ENDPOINT") ?? "http://127.0.0.1:8000",
  region: "local",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
});

Deno.test({
  name: "decider on DynamoDB: a conflicting append is re-decided on the events it missed",
  sanitizeOps: false, // the SDK keeps its HTTP agent's sockets
  sanitizeResources: false,
  fn: async () => {
    const tableName = `decider-${crypto.randomUUID()}`;
    await createEventTable(client, tableName);
    try {
      await conflictingChargesRedecide(dynamoStore(client, { tableName }));
    } finally {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
    }
  },
});
