// The decider over the DynamoDB event store (DynamoDB Local; `tools/dynamodb.sh start`): the
// conflict scenario the MessageDB test runs, on DynamoDB's conditional transactions.
import { dynamoStore } from "../../stores/dynamo.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";
import { conflictingChargesRedecide } from "./hotel_scenarios.ts";

Deno.test(
  "decider on DynamoDB: a conflicting append is re-decided on the events it missed",
  opts,
  async () => {
    await using t = await freshTables({ tableName: "events" });
    await conflictingChargesRedecide(dynamoStore(client, { tableName: t.tableName }));
  },
);
