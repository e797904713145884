// The README's store-writer replicator (examples/store_writer.ts) as a real process under Deno
// and Bun: MessageDB (IMPEL_PG_URL) → DynamoDB Local. It copies a new Customer stream at the
// same indexes, and stops on SIGTERM with its checkpoint committed. Also checks that the README
// shows exactly this file.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { DeleteTableCommand } from "@aws-sdk/client-dynamodb";
import { postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { client, endpoint } from "../support/dynamo.ts";
import { url } from "../support/postgres.ts";
import { readmeForm, readmeShows } from "../support/readme.ts";
import { bun, spawnExample } from "../support/example_process.ts";

Deno.test("README: the store-writer replicator is examples/store_writer.ts with the package's names", async () => {
  assert.ok(await readmeShows(await readmeForm("examples/store_writer.ts")));
});

for (const runtime of ["deno", "bun"] as const) {
  Deno.test({
    name: `examples/store_writer.ts under ${runtime}: replicates a stream, stops on SIGTERM`,
    ignore: runtime === "bun" && bun === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      const stream = `Customer-${crypto.randomUUID()}`;
      const events = ["Registered", "Renamed", "Moved"].map((type, i) => ({
        type,
        data: { i },
        meta: { by: "test" },
      }));
      await messageDbStore(pool).append(stream, events, 0);
      const example = spawnExample("examples/store_writer.ts", runtime, {
        IMPEL_PG_URL: url,
        IMPEL_DYNAMO_ENDPOINT: endpoint,
      }, 60_000);
      try {
        await example.until(new RegExp(`${stream} \\[0, 3\\) written: 3 written`));
        const replica = await dynamoStore(client, { tableName: "customers-replica" })
          .readStream(stream);
        const original = await messageDbStore(pool).readStream(stream);
        const shape = (e: (typeof original)[number]) => [e.index, e.type, e.data, e.meta, e.id];
        assert.deepEqual(replica.map(shape), original.map(shape));
        example.child.kill("SIGTERM");
        assert.equal(await example.ended(), 0, example.out());
        assert.match(example.out(), /stopped: \{"written":\d+/);
        const [saved] = await postgresCheckpoints(pool).list("messagedb", "customer-replicator");
        assert.ok(saved !== undefined && saved.position > 0n, "the checkpoint was committed");
      } finally {
        example.kill();
        // The next run starts afresh: no table (DynamoDB Local slows as tables pile up), and no
        // checkpoint past what an empty table holds.
        await client.send(new DeleteTableCommand({ TableName: "customers-replica" })).catch(
          () => {},
        );
        await postgresCheckpoints(pool).reset(
          { source: "messagedb", tranche: "Customer", group: "customer-replicator" },
          undefined,
        );
        await pool.end();
      }
    },
  });
}
