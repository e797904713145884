// A replicator process for tests/sinks/store_writer_replication.test.ts: a pipeline reading a
// MessageDB category (checkpoints in the same database) through the store writer into a target
// store: MessageDB (another database, or another category), a DynamoDB table or a Cosmos
// container. Killed and restarted by the test.
//
// Environment: IMPEL_PG_URL (source), CATEGORY, GROUP, TARGET ("messagedb", "dynamo" or
// "cosmos"), TARGET_PG_URL, TARGET_TABLE (+ DYNAMODB_ENDPOINT) or TARGET_CONTAINER (+
// COSMOS_ENDPOINT, COSMOS_DATABASE), RENAME (see below), LOG (a file: a `stats {json}` line every
// 50 ms and `done {json}` after a clean stop), HANG_AFTER (once this many events are written,
// calls hang: the process stops midway, wherever the machine's speed, to be killed there),
// COMMIT_MS.
// @ts-types="@types/pg"
import pg from "pg";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { pipeline, stopOnSignals } from "../../../mod.ts";
import type { EventStore } from "../../../core/store.ts";
import { postgresCheckpoints } from "../../../checkpoints/postgres.ts";
import { messageDbSource } from "../../../sources/messagedb.ts";
import { messageDbStore } from "../../../stores/messagedb.ts";
import { dynamoStore } from "../../../stores/dynamo.ts";
import { CosmosClient } from "@azure/cosmos";
import { cosmosStore } from "../../../stores/cosmos.ts";
import { copyEvent, renameCategory, storeWriter } from "../../../sinks/store-writer.ts";
import { lineWriter } from "../../faults/support/process.ts";

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`set ${name}`);
  return value;
};
const pool = new pg.Pool({ connectionString: env("IMPEL_PG_URL"), max: 6 });
const category = env("CATEGORY");
const hangAfter = Number(env("HANG_AFTER", "Infinity"));
let target: EventStore;
let targetPool: pg.Pool | undefined;
let dynamo: DynamoDBClient | undefined;
let cosmos: CosmosClient | undefined;
if (env("TARGET") === "cosmos") {
  cosmos = new CosmosClient({
    endpoint: env("COSMOS_ENDPOINT"),
    key: "bG9jYWw=",
    connectionPolicy: { enableEndpointDiscovery: false },
  });
  target = cosmosStore(cosmos.database(env("COSMOS_DATABASE")).container(env("TARGET_CONTAINER")));
} else if (env("TARGET") === "dynamo") {
  dynamo = new DynamoDBClient({
    endpoint: env("DYNAMODB_ENDPOINT", "http://127.0.0.1:8000"),
    region: "local",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  target = dynamoStore(dynamo, { tableName: env("TARGET_TABLE") });
} else {
  targetPool = new pg.Pool({ connectionString: env("TARGET_PG_URL"), max: 6 });
  target = messageDbStore(targetPool);
}

// RENAME=1: into the same database under `${CATEGORY}Copy`, with ids of its own (MessageDB's ids
// are unique across the database): the source id's hex digits reversed, one to one.
const rename = env("RENAME", "0") === "1";
const reversed = (id: string) => {
  const hex = [...id.replaceAll("-", "")].reverse().join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
};
const writer = storeWriter({
  target,
  stream: rename ? renameCategory({ [category]: `${category}Copy` }) : undefined,
  event: rename ? (e) => ({ ...copyEvent(e), id: reversed(e.id) }) : undefined,
});
const checkpoints = postgresCheckpoints(pool);
const replicator = pipeline({
  name: env("GROUP"),
  source: ({ group }) =>
    messageDbSource({
      client: pool,
      categories: [category],
      group,
      checkpoints,
      tailSleepMs: 50,
      maxBatchItems: 50,
    }),
  handler: async (stream, events, context) => {
    if (writer.stats().events.written >= hangAfter) await new Promise(() => {});
    return await writer.handler(stream, events, context);
  },
  maxConcurrentStreams: 4,
  maxEventsPerCall: 20,
  commitIntervalMs: Number(env("COMMIT_MS", "300")),
  retry: { initialDelayMs: 20, maxDelayMs: 500 },
  failure: { kind: "fault", maxAttempts: 20 },
  statsIntervalMs: 0,
});

const log = lineWriter(env("LOG"));
const tick = setInterval(() => log.write(`stats ${JSON.stringify(writer.stats())}`), 50);
const stop = stopOnSignals();
try {
  await replicator.run({ signal: stop.signal });
} finally {
  clearInterval(tick);
}
log.write(`done ${JSON.stringify(writer.stats())}`);
log.close();
await pool.end();
await targetPool?.end();
dynamo?.destroy();
cosmos?.dispose();
