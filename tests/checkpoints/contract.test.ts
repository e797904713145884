// The checkpoint store contract (tests/checkpoints/contract.ts) on the memory store, PostgreSQL
// (a schema of its own in the test database, IMPEL_PG_URL) and DynamoDB Local; Cosmos runs it in
// tests/checkpoints/cosmos.test.ts.
// @ts-types="@types/pg"
import pg from "pg";
import { dynamoCheckpoints } from "../../checkpoints/dynamo.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";
import { unique, url } from "../support/postgres.ts";
import { checkpointStoreContract } from "./contract.ts";

checkpointStoreContract(
  "memory",
  () => Promise.resolve({ store: memoryCheckpoints(), close() {} }),
);
checkpointStoreContract("postgres", async () => {
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  pool.on("error", () => {});
  const schema = unique("cpc_");
  await initPostgresCheckpoints(pool, { schema });
  return {
    store: postgresCheckpoints(pool, { schema }),
    async close() {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    },
  };
}, opts);
checkpointStoreContract("dynamo", async () => {
  const t = await freshTables({ tableName: "checkpoints" });
  return {
    store: dynamoCheckpoints(client, { tableName: t.tableName }),
    close: () => t[Symbol.asyncDispose](),
  };
}, opts);
