// The event store contract (tests/stores/contract.ts) on the memory store, MessageDB (the test
// database, IMPEL_PG_URL) and DynamoDB Local; the Cosmos store runs it in
// tests/stores/cosmos.test.ts.
// @ts-types="@types/pg"
import pg from "pg";
import { createMemoryStore } from "../../sources/memory.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";
import { url } from "../support/postgres.ts";
import { eventStoreContract } from "./contract.ts";

eventStoreContract("memory", () => Promise.resolve({ store: createMemoryStore(), close() {} }));
eventStoreContract("messagedb", () => {
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  pool.on("error", () => {});
  return Promise.resolve({ store: messageDbStore(pool), close: () => pool.end() });
}, opts);
eventStoreContract("dynamo", async () => {
  const t = await freshTables({ tableName: "events" });
  return {
    store: dynamoStore(client, { tableName: t.tableName }),
    close: () => t[Symbol.asyncDispose](),
  };
}, opts);
