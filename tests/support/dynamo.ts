// DynamoDB Local fixtures for the tests (`tools/dynamodb.sh start`): clients and throwaway tables.
import {
  DeleteTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  type DynamoDBClientConfig,
} from "@aws-sdk/client-dynamodb";
import {
  type _Record,
  DescribeStreamCommand,
  DynamoDBStreamsClient,
  GetRecordsCommand,
  GetShardIteratorCommand,
} from "@aws-sdk/client-dynamodb-streams";
import { createCheckpointTable } from "../../checkpoints/dynamo.ts";
import { type AppendSummary, createEventTable } from "../../stores/dynamo.ts";
import { createIndexTable } from "../../stores/dynamo-indexer.ts";

/** DynamoDB Local's URL; DYNAMODB_ENDPOINT overrides it. */
export const endpoint: string = Deno.env.get("DYNAMODB_ENDPOINT") ?? "http://127.0.0.1:8000";

/** Client settings for DynamoDB Local, which accepts any credentials. */
export const config: DynamoDBClientConfig = {
  endpoint,
  region: "local",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
};

/** Shared by the tests, never destroyed: the process exits after them. */
export const client: DynamoDBClient = new DynamoDBClient(config);
/** Reads the events table's change stream (DynamoDB Streams). */
export const streamsClient: DynamoDBStreamsClient = new DynamoDBStreamsClient(config);

/** Test options: the SDK keeps its HTTP agent's sockets open between tests. */
export const opts: { sanitizeOps: boolean; sanitizeResources: boolean } = {
  sanitizeOps: false,
  sanitizeResources: false,
};

const creators = {
  events: createEventTable,
  index: createIndexTable,
  checkpoints: createCheckpointTable,
};

/** Which impel table to create: an event store's, an indexer's or a checkpoint store's. */
export type TableKind = keyof typeof creators;

/**
 * Creates one table per entry of `tables` (field name -> kind), named `${prefix}${kind}-${uuid}`
 * with one uuid for all, and returns their names under the same fields; disposing it deletes them.
 */
export async function freshTables<const T extends Record<string, TableKind>>(
  tables: T,
  prefix = "",
): Promise<{ readonly [K in keyof T]: string } & AsyncDisposable> {
  const id = crypto.randomUUID();
  const names: Record<string, string> = {};
  const created: string[] = [];
  const dispose = async () => {
    for (const TableName of created) await client.send(new DeleteTableCommand({ TableName }));
  };
  try {
    for (const [field, kind] of Object.entries(tables)) {
      const name = `${prefix}${kind}-${id}`;
      await creators[kind](client, name);
      created.push(name);
      names[field] = name;
    }
  } catch (e) {
    await dispose().catch(() => {});
    if (created.length > 0) throw e;
    throw new Error(`DynamoDB Local is needed at ${endpoint}: run tools/dynamodb.sh start`, {
      cause: e,
    });
  }
  return { ...names, [Symbol.asyncDispose]: dispose } as
    & { readonly [K in keyof T]: string }
    & AsyncDisposable;
}

/** Every record of the events table's stream so far, shard by shard. */
export async function allRecords(eventTable: string): Promise<_Record[]> {
  const { Table } = await client.send(new DescribeTableCommand({ TableName: eventTable }));
  const arn = Table!.LatestStreamArn!;
  const { StreamDescription } = await streamsClient.send(
    new DescribeStreamCommand({ StreamArn: arn }),
  );
  const out: _Record[] = [];
  for (const shard of StreamDescription!.Shards!) {
    let it = (await streamsClient.send(
      new GetShardIteratorCommand({
        StreamArn: arn,
        ShardId: shard.ShardId,
        ShardIteratorType: "TRIM_HORIZON",
      }),
    )).ShardIterator;
    while (it) {
      const res = await streamsClient.send(new GetRecordsCommand({ ShardIterator: it }));
      out.push(...(res.Records ?? []));
      if ((res.Records ?? []).length === 0) break;
      it = res.NextShardIterator;
    }
  }
  return out;
}

/**
 * `summary(stream, index, count, type = "T")`: an append of `count` one-byte events typed
 * `${type}${index + k}`, timed `time0 + index` (each test file asserts its own times).
 */
export const summaryAt =
  (time0: number) => (stream: string, index: number, count: number, type = "T"): AppendSummary => ({
    stream,
    index,
    next: index + count,
    types: Array.from({ length: count }, (_, k) => `${type}${index + k}`),
    sizes: Array.from({ length: count }, () => 1),
    time: time0 + index,
  });
