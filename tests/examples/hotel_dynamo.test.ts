// The hotel on DynamoDB Local (`tools/dynamodb.sh start`): the decider's conflict scenario on
// DynamoDB's conditional transactions, and the reactor end to end through the backend the demo
// uses (event table, stream indexer, index source, DynamoDB checkpoints).
import assert from "node:assert/strict";
import { DeleteTableCommand } from "@aws-sdk/client-dynamodb";
import { dynamoCheckpoints } from "../../checkpoints/dynamo.ts";
import { dynamoBackend } from "../../examples/hotel/dynamo.ts";
import { GROUP_CHECKOUT } from "../../examples/hotel/groupCheckout.ts";
import type { HotelBackend } from "../../examples/hotel/wiring.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { client, endpoint, freshTables, opts } from "../support/dynamo.ts";
import {
  closedStaysFailCleanly,
  concurrentSelections,
  conflictingChargesRedecide,
  groupMergesAndConfirms,
  type HotelEnv,
  newId,
  withReactor,
} from "./hotel_scenarios.ts";

Deno.test(
  "decider on DynamoDB: a conflicting append is re-decided on the events it missed",
  opts,
  async () => {
    await using t = await freshTables({ tableName: "events" });
    await conflictingChargesRedecide(dynamoStore(client, { tableName: t.tableName }));
  },
);

/** A backend on its own tables, deleted afterwards. */
async function withBackend(
  fn: (backend: HotelBackend, tables: { prefix: string; group: string }) => Promise<void>,
): Promise<void> {
  const prefix = `hotel-${newId()}`, group = `hotel-test-${newId()}`;
  const backend = await dynamoBackend({ endpoint, tablePrefix: prefix, group });
  try {
    await fn(backend, { prefix, group });
  } finally {
    await backend.close();
    for (const kind of ["events", "index", "checkpoints"]) {
      await client.send(new DeleteTableCommand({ TableName: `${prefix}-${kind}` }));
    }
  }
}

const scenario = (fn: (env: HotelEnv) => Promise<void>) => () =>
  withBackend((backend) =>
    withReactor(backend, async (env) => {
      await fn(env);
      assert.deepEqual(env.sink.stats().failing, []);
    })
  );

Deno.test(
  "hotel on DynamoDB: a group of several stays merges and confirms once paid",
  opts,
  scenario(groupMergesAndConfirms),
);

Deno.test(
  "hotel on DynamoDB: stays checked out, merged elsewhere or unknown fail cleanly",
  opts,
  scenario(closedStaysFailCleanly),
);

Deno.test(
  "hotel on DynamoDB: concurrent selections of one stay leave it in exactly one group",
  opts,
  scenario(concurrentSelections),
);

Deno.test(
  "hotel on DynamoDB: the reactor's checkpoint is committed in DynamoDB",
  opts,
  () =>
    withBackend(async (backend, { prefix, group }) => {
      let completed: bigint | undefined;
      await withReactor(backend, async (env) => {
        await groupMergesAndConfirms(env);
        completed = env.sink.stats().tranches[0].completed;
      });
      const checkpoints = dynamoCheckpoints(client, { tableName: `${prefix}-checkpoints` });
      const stored = await checkpoints.load({
        source: `dynamo:${prefix}-index`,
        tranche: GROUP_CHECKOUT,
        group,
      });
      assert.ok(completed !== undefined && completed > 0n);
      assert.equal(stored, completed);
    }),
);
