/**
 * The hotel backend on DynamoDB: the event store's table, the indexer tailing its DynamoDB Stream
 * into an index partitioned by category, the index source feeding the reactor, and DynamoDB
 * checkpoints. The indexer runs in the same process here; in production it is its own process
 * (or a Lambda), since every reactor shares its index.
 *
 * @module
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { createCheckpointTable, dynamoCheckpoints } from "../../checkpoints/dynamo.ts";
import { ImpelError } from "../../core/errors.ts";
import type { StreamsSink } from "../../core/sink.ts";
import { categoryOf } from "../../core/streamName.ts";
import { dynamoSource, encodePosition } from "../../sources/dynamo.ts";
import { createEventTable, dynamoStore } from "../../stores/dynamo.ts";
import { createIndexTable, dynamoIndexer } from "../../stores/dynamo-indexer.ts";
import { runStreamsIndexer } from "../../stores/dynamo-streams.ts";
import { GROUP_CHECKOUT } from "./groupCheckout.ts";
import { REACTOR_GROUP } from "./reactor.ts";
import type { HotelBackend } from "./wiring.ts";

/** Where the DynamoDB backend's tables are, and how the reactor starts. */
export interface DynamoBackendOptions {
  /** The DynamoDB endpoint, e.g. DynamoDB Local's `http://127.0.0.1:8000`; default: AWS's. */
  readonly endpoint?: string;
  /** The AWS region (default `$AWS_REGION`, else `local` with an endpoint). */
  readonly region?: string;
  /** The tables' name prefix (default `hotel`): `<prefix>-events`, `-index`, `-checkpoints`. */
  readonly tablePrefix?: string;
  /** The reactor's consumer group (default {@linkcode REACTOR_GROUP}). */
  readonly group?: string;
  /** Where a group without a checkpoint starts: `"start"` (default) or `"tail"`. */
  readonly whenNoCheckpoint?: "start" | "tail";
}

/**
 * The hotel on DynamoDB, creating its three tables unless they exist. With an endpoint and no
 * credentials in the environment it uses DynamoDB Local's dummy ones.
 *
 * @example
 * ```ts ignore
 * import { dynamoBackend } from "./dynamo.ts";
 * const backend = await dynamoBackend({ endpoint: "http://127.0.0.1:8000" });
 * await backend.close();
 * ```
 */
export async function dynamoBackend(options: DynamoBackendOptions = {}): Promise<HotelBackend> {
  const { endpoint } = options;
  const env = (name: string) => globalThis.process?.env?.[name];
  const config = {
    region: options.region ?? env("AWS_REGION") ?? (endpoint ? "local" : undefined),
    ...(endpoint ? { endpoint } : {}),
    ...(endpoint && !env("AWS_ACCESS_KEY_ID")
      ? { credentials: { accessKeyId: "local", secretAccessKey: "local" } }
      : {}),
  };
  const client = new DynamoDBClient(config);
  const streamsClient = new DynamoDBStreamsClient(config);
  const prefix = options.tablePrefix ?? "hotel";
  const eventTable = `${prefix}-events`, indexTable = `${prefix}-index`;
  const checkpointTable = `${prefix}-checkpoints`;
  const close = () => {
    client.destroy();
    streamsClient.destroy();
  };
  try {
    await createEventTable(client, eventTable);
    await createIndexTable(client, indexTable);
    await createCheckpointTable(client, checkpointTable);
  } catch (error) {
    close();
    throw error;
  }
  // One index partition per category: the reactor reads only GroupCheckout's.
  const indexer = dynamoIndexer(client, { indexTable, partitionOf: categoryOf });
  const stopIndexer = new AbortController();
  let indexerError: unknown;
  // What settle() waits for: every event appended through this backend indexed.
  let appended = 0, indexed = 0;
  const indexing = runStreamsIndexer({
    client,
    streamsClient,
    eventTable,
    indexer,
    pollIntervalMs: 20,
    onIngest: (result) => void (indexed += result.events),
    signal: stopIndexer.signal,
  }).catch((error) => void (indexerError = error));
  const store = dynamoStore(client, { tableName: eventTable });
  const checkpoints = dynamoCheckpoints(client, { tableName: checkpointTable });
  const head = async () => {
    if (indexerError !== undefined) {
      throw new ImpelError("HotelIndexer", "the indexer stopped", { cause: indexerError });
    }
    const tip = await indexer.tip(GROUP_CHECKOUT);
    return encodePosition(tip.epoch, tip.offset);
  };
  return {
    name: `dynamo (${endpoint ?? "AWS"}, tables ${prefix}-*)`,
    store: {
      ...store,
      async append(stream, events, expectedVersion) {
        const result = await store.append(stream, events, expectedVersion);
        appended += events.length;
        return result;
      },
    },
    source: (signal) =>
      dynamoSource({
        client,
        indexTable,
        eventTable,
        group: options.group ?? REACTOR_GROUP,
        checkpoints,
        tranches: [GROUP_CHECKOUT],
        whenNoCheckpoint: options.whenNoCheckpoint,
        tailSleepMs: 20,
        signal,
      }),
    async settle(sink: StreamsSink, timeoutMs = 30_000) {
      // Appends reach the reactor through the table's stream and the indexer: wait until all of
      // them are indexed and the reactor has handled the index's tip, and check that nothing
      // (the reactor's own appends) was appended meanwhile.
      const deadline = Date.now() + timeoutMs;
      const sleep = () => new Promise((resolve) => setTimeout(resolve, 10));
      for (;;) {
        if (Date.now() > deadline) {
          throw new ImpelError("Timeout", `the reactor did not catch up within ${timeoutMs} ms`);
        }
        const before = appended;
        if (indexed < before) {
          await head(); // rethrows the indexer's failure
          await sleep();
          continue;
        }
        const tip = await head();
        await sink.monitor.awaitCompletion({ tail: true, timeoutMs: deadline - Date.now() });
        const completed = sink.stats().tranches.find((t) => t.tranche === GROUP_CHECKOUT)
          ?.completed;
        if (completed !== undefined && completed >= tip && appended === before) return;
        await sleep();
      }
    },
    async close() {
      stopIndexer.abort();
      await indexing;
      close();
    },
  };
}
