// The README's Cosmos reactor (examples/cosmos_reactor.ts) as a real process under Deno and Bun
// against the local Cosmos server: it creates its containers, handles its append, and stops on
// SIGTERM with its checkpoint (a continuation) committed. Also checks that the README shows
// exactly this file.
import assert from "node:assert/strict";
import { cosmosCheckpoints } from "../../checkpoints/cosmos.ts";
import { client, endpoint } from "../support/cosmos.ts";
import { readmeForm, readmeShows } from "../support/readme.ts";
import { bun, spawnExample } from "../support/example_process.ts";

Deno.test("README: the Cosmos reactor is examples/cosmos_reactor.ts with the package's names", async () => {
  assert.ok(await readmeShows(await readmeForm("examples/cosmos_reactor.ts")));
});

// The local server's change feed shows only what its first read finds: each run starts from
// empty containers, and leaves none behind.
const clean = () =>
  Promise.all(
    ["shop-events", "shop-aux"].map((id) =>
      client.database("shop").container(id).delete().catch(() => {})
    ),
  );

for (const runtime of ["deno", "bun"] as const) {
  Deno.test({
    name: `examples/cosmos_reactor.ts under ${runtime}: handles its append, stops on SIGTERM`,
    ignore: runtime === "bun" && bun === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await clean();
      const example = spawnExample("examples/cosmos_reactor.ts", runtime, {
        IMPEL_COSMOS_ENDPOINT: endpoint,
      }, 60_000);
      try {
        await example.until(/Order-1 #0 Placed/);
        example.child.kill("SIGTERM");
        assert.equal(await example.ended(), 0, example.out());
        assert.match(example.out(), /stopped, checkpoints committed/);
        const checkpoints = cosmosCheckpoints(client.database("shop").container("shop-aux"));
        const saved = await checkpoints.list("cosmos:shop-events", "order-printer");
        assert.equal(saved.length, 1, example.out());
        const stored = await checkpoints.loadCheckpoint(saved[0]);
        assert.ok(stored !== undefined && stored.position > 0n && stored.token !== undefined);
      } finally {
        example.kill();
        await clean();
      }
    },
  });
}
