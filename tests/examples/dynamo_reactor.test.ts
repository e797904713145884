// The README's DynamoDB reactor (examples/dynamo_reactor.ts) as a real process under Deno and Bun
// against DynamoDB Local: it creates its tables, indexes and handles its append, and stops on
// SIGTERM with its checkpoint committed. Also checks that the README shows exactly this file.
import assert from "node:assert/strict";
import { DeleteTableCommand } from "@aws-sdk/client-dynamodb";
import { dynamoCheckpoints } from "../../checkpoints/dynamo.ts";
import { client, endpoint } from "../support/dynamo.ts";
import { readmeForm, readmeShows } from "../support/readme.ts";
import { bun, spawnExample } from "../support/example_process.ts";

Deno.test("README: the DynamoDB reactor is examples/dynamo_reactor.ts with the package's names", async () => {
  assert.ok(await readmeShows(await readmeForm("examples/dynamo_reactor.ts")));
});

for (const runtime of ["deno", "bun"] as const) {
  Deno.test({
    name: `examples/dynamo_reactor.ts under ${runtime}: indexes, handles, stops on SIGTERM`,
    ignore: runtime === "bun" && bun === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const example = spawnExample("examples/dynamo_reactor.ts", runtime, {
        IMPEL_DYNAMO_ENDPOINT: endpoint,
      }, 60_000);
      try {
        await example.until(/Order-1 #\d+ Placed/);
        example.child.kill("SIGTERM");
        assert.equal(await example.ended(), 0, example.out());
        assert.match(example.out(), /stopped, checkpoints committed/);
        const saved = await dynamoCheckpoints(client, { tableName: "shop-checkpoints" })
          .list("dynamo:shop-index", "order-printer");
        assert.ok(
          saved.length > 0 && saved.every((c) => c.position > 0n),
          JSON.stringify(saved, (_k, v) => typeof v === "bigint" ? String(v) : v),
        );
      } finally {
        example.kill();
        // DynamoDB Local slows down as tables pile up: leave none behind.
        for (const TableName of ["shop-events", "shop-index", "shop-checkpoints"]) {
          await client.send(new DeleteTableCommand({ TableName })).catch(() => {});
        }
      }
    },
  });
}
