// A reactor over a Cosmos DB events container: the change feed of each feed range feeds the
// reactor; checkpoints (the feed's continuations) and the leases that share the ranges between
// the reactor's instances are kept in a second container.
//   IMPEL_COSMOS_ENDPOINT=http://127.0.0.1:8081 deno run -A examples/cosmos_reactor.ts
// (The README shows this file with the package's import names; tests/examples/cosmos_reactor.test.ts
// runs it against the local server.)
import { CosmosClient } from "@azure/cosmos";
import { pipeline, stopOnSignals } from "../mod.ts";
import { cosmosStore, createCosmosEventContainer } from "../stores/cosmos.ts";
import { cosmosSource } from "../sources/cosmos.ts";
import { cosmosCheckpoints, initCosmosCheckpoints } from "../checkpoints/cosmos.ts";
import { cosmosLeases } from "../leases/cosmos.ts";

const endpoint = process.env.IMPEL_COSMOS_ENDPOINT ?? "http://127.0.0.1:8081";
const client = new CosmosClient({
  endpoint,
  key: process.env.IMPEL_COSMOS_KEY ?? "bG9jYWw=", // the local server takes any base64 key
  // The local server (plain HTTP) advertises endpoints it does not serve: no discovery there.
  connectionPolicy: { enableEndpointDiscovery: !endpoint.startsWith("http://") },
});
const { database } = await client.databases.createIfNotExists({ id: "shop" });
const events = await createCosmosEventContainer(database, "shop-events"); // no-op if it exists
const aux = await initCosmosCheckpoints(database, "shop-aux"); // checkpoints and leases

// Appended before the reactor starts, because the local server's change feed shows only what
// its first read finds; against an account the reactor also sees what is appended later.
await cosmosStore(events).append("Order-1", [{ type: "Placed", data: { total: 5 } }], "any");

const stop = stopOnSignals();
const printer = pipeline({
  name: "order-printer",
  source: ({ group }) =>
    cosmosSource({
      container: events,
      group,
      checkpoints: cosmosCheckpoints(aux),
      leases: { store: cosmosLeases(aux) }, // instances share the feed ranges
    }),
  handler: (stream, events) => {
    for (const e of events) console.log(`${stream} #${e.index} ${e.type}`);
  },
});
console.log(`reactor ${printer.name} running on ${events.id}`);
await printer.run({ signal: stop.signal });
console.log("stopped, checkpoints committed");
