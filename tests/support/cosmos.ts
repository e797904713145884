// Local Cosmos DB fixtures for the tests (`tools/cosmos.sh start`): a client and throwaway
// containers. COSMOS_ENDPOINT overrides the endpoint (default the local server on 8081).
import { type Container, CosmosClient, type Database } from "@azure/cosmos";
import type { EventStore } from "../../core/store.ts";
import { ensureCosmosContainer } from "../../stores/cosmos.ts";

/** The local server's URL. */
export const endpoint: string = Deno.env.get("COSMOS_ENDPOINT") ?? "http://127.0.0.1:8081";

/**
 * Shared by the tests, never disposed: the process exits after them. The local server checks no
 * key, and its account's endpoints are https ones it does not serve: no endpoint discovery.
 */
export const client: CosmosClient = new CosmosClient({
  endpoint,
  key: "bG9jYWw=",
  connectionPolicy: { enableEndpointDiscovery: false },
});

/** Test options: the SDK keeps its HTTP agent's sockets (and a timer) between tests. */
export const opts: { sanitizeOps: boolean; sanitizeResources: boolean } = {
  sanitizeOps: false,
  sanitizeResources: false,
};

let database: Promise<Database> | undefined;

/** The tests' database, created once. */
export function testDatabase(): Promise<Database> {
  database ??= client.databases.createIfNotExists({ id: "impel_test" }).then(
    (r) => r.database,
    (e) => {
      database = undefined;
      throw new Error(`a Cosmos server is needed at ${endpoint}: run tools/cosmos.sh start`, {
        cause: e,
      });
    },
  );
  return database;
}

/** A fresh container partitioned by /p (`${prefix}-${uuid}`); disposing it deletes it. */
export async function freshContainer(
  prefix = "t",
): Promise<
  { readonly container: Container; readonly id: string; [Symbol.asyncDispose](): Promise<void> }
> {
  const db = await testDatabase();
  const id = `${prefix}-${crypto.randomUUID()}`;
  await ensureCosmosContainer(db, id);
  const container = db.container(id);
  return {
    container,
    id,
    async [Symbol.asyncDispose]() {
      await container.delete().catch(() => {});
    },
  };
}

/** Appends `perStream` events to each of `streams` streams, `perAppend` at a time, interleaved. */
export async function seed(
  store: EventStore,
  streams: number,
  perStream: number,
  perAppend: number,
): Promise<string[]> {
  const names = Array.from({ length: streams }, (_, k) => `Order-${k}`);
  for (let at = 0; at < perStream; at += perAppend) {
    // Ten streams at a time: the appends of a round interleave in the feed.
    for (let k = 0; k < names.length; k += 10) {
      await Promise.all(
        names.slice(k, k + 10).map((s) =>
          store.append(
            s,
            Array.from({ length: Math.min(perAppend, perStream - at) }, (_, j) => ({
              type: "Step",
              data: { n: at + j },
            })),
            at,
          )
        ),
      );
    }
  }
  return names;
}
