/**
 * Runs the indexer of `stores/dynamo-indexer.ts` as a long-lived process over the events table's
 * DynamoDB Stream: the alternative to a Lambda fed by an event source mapping. It is the one
 * module that loads `@aws-sdk/client-dynamodb-streams`.
 *
 * @module
 */
import {
  DescribeTableCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
} from "@aws-sdk/client-dynamodb";
import {
  DescribeStreamCommand,
  type DynamoDBStreamsClient,
  ExpiredIteratorException,
  GetRecordsCommand,
  GetShardIteratorCommand,
  type Shard,
  TrimmedDataAccessException,
} from "@aws-sdk/client-dynamodb-streams";
import { getLogger } from "@logtape/logtape";
import { checkInteger, ImpelError } from "../core/errors.ts";
import { backoff, errorText } from "../core/failure.ts";
import { retrying as retryingWith } from "../core/reader.ts";
import { sleep } from "../core/tranches.ts";
import {
  checkTableName,
  type DynamoClient,
  type DynamoStreamsClient,
  isTransientDynamoError,
} from "./dynamo.ts";
import type { DynamoIndexer, IngestResult } from "./dynamo-indexer.ts";

// Re-exported so that this entry point's documentation can show the client types it takes.
export type { DynamoClient, DynamoStreamsClient } from "./dynamo.ts";

const log = getLogger(["impel", "dynamo", "indexer"]);

/**
 * Options of {@linkcode runStreamsIndexer}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
 * import { dynamoIndexer } from "@impel/impel/stores/dynamo-indexer";
 * import { runStreamsIndexer, type StreamsIndexerOptions } from "@impel/impel/stores/dynamo-streams";
 * const config = { endpoint: "http://127.0.0.1:8000", region: "local" };
 * const client = new DynamoDBClient(config);
 * const stop = new AbortController();
 * const options: StreamsIndexerOptions = {
 *   client,
 *   streamsClient: new DynamoDBStreamsClient(config),
 *   eventTable: "events",
 *   indexer: dynamoIndexer(client, { indexTable: "events-index" }),
 *   startAt: "latest", // shards without recorded progress: only new records
 *   pollIntervalMs: 500,
 *   onIngest: (result, shardId) => console.log(shardId, result.events),
 *   signal: stop.signal,
 * };
 * const running = runStreamsIndexer(options);
 * // ... on shutdown
 * stop.abort();
 * await running;
 * ```
 */
export interface StreamsIndexerOptions {
  /** The client of the events and index tables (for the stream ARN and shard progress). */
  readonly client: DynamoClient;
  /** The DynamoDB Streams client. */
  readonly streamsClient: DynamoStreamsClient;
  /** The events table whose stream is indexed. */
  readonly eventTable: string;
  /** The indexer that receives the records. */
  readonly indexer: DynamoIndexer;
  /** Stops the runner; it resolves once in-flight batches are indexed. */
  readonly signal?: AbortSignal;
  /** How long to wait after an empty read of a shard, in ms (default 200). */
  readonly pollIntervalMs?: number;
  /** How often to look for new shards, in ms (default 10 000). */
  readonly describeIntervalMs?: number;
  /** Where to start shards with no recorded progress: the oldest record (default) or the newest. */
  readonly startAt?: "trim-horizon" | "latest";
  /**
   * Attempts at a read or write failing otherwise than transiently before the runner gives up
   * (default 8). Transient failures (a connection refused or reset, throttling, a 5xx, a
   * timeout: `isTransientDynamoError`) are retried for as long as they last, at most 5 s apart,
   * each logged as a warning, so that the runner carries on through an outage of DynamoDB.
   */
  readonly maxAttempts?: number;
  /**
   * Records indexed at a time, each slice's progress recorded before the next (default 100, at
   * most 1000, one read's worth): what a restart may index again.
   */
  readonly recordsPerIngest?: number;
  /** Called after each indexed batch of records (for metrics and tests). */
  readonly onIngest?: (result: IngestResult, shardId: string) => void;
}

/**
 * Tails every shard of the events table's DynamoDB Stream and feeds the records to the indexer:
 * the long-running alternative to a Lambda. Parent shards are read to their end before their
 * children; progress per shard is kept in the index table, every `recordsPerIngest` records, so
 * that a restart resumes (and replays are harmless anyway). Resolves when `signal` aborts;
 * rejects with the error if a failure that is not transient persists past `maxAttempts`, or with
 * one of impel's errors (a bad argument, an index that keeps being contended); an outage of
 * DynamoDB is waited out. A record the index cannot take (malformed, an index gap) is parked by
 * the indexer and never stops the runner: see `ParkedRecord` and `DynamoIndexerOptions.onGap`.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
 * import { dynamoIndexer } from "@impel/impel/stores/dynamo-indexer";
 * import { runStreamsIndexer } from "@impel/impel/stores/dynamo-streams";
 * const config = { endpoint: "http://127.0.0.1:8000", region: "local" };
 * const client = new DynamoDBClient(config);
 * const streamsClient = new DynamoDBStreamsClient(config);
 * const indexer = dynamoIndexer(client, { indexTable: "events-index" });
 * const stop = new AbortController();
 * const running = runStreamsIndexer({ client, streamsClient, eventTable: "events", indexer, signal: stop.signal });
 * // ... later
 * stop.abort();
 * await running;
 * ```
 */
export async function runStreamsIndexer(options: StreamsIndexerOptions): Promise<void> {
  const { indexer, signal, onIngest } = options;
  // The one cast at this boundary: the option types only narrow the SDK clients callers pass.
  const client = options.client as DynamoDBClient;
  const streamsClient = options.streamsClient as DynamoDBStreamsClient;
  const eventTable = checkTableName("eventTable", options.eventTable);
  const pollIntervalMs = checkInteger("pollIntervalMs", options.pollIntervalMs ?? 200, 0);
  const describeIntervalMs = checkInteger(
    "describeIntervalMs",
    options.describeIntervalMs ?? 10_000,
    10,
  );
  const maxAttempts = checkInteger("maxAttempts", options.maxAttempts ?? 8, 1);
  const recordsPerIngest = checkInteger(
    "recordsPerIngest",
    options.recordsPerIngest ?? 100,
    1,
    1000,
  );
  const startAt = options.startAt ?? "trim-horizon";
  const indexTable = indexer.options.indexTable;
  if (signal?.aborted) return;

  const { Table } = await client.send(new DescribeTableCommand({ TableName: eventTable }));
  const streamArn = Table?.LatestStreamArn;
  if (!streamArn || !Table?.StreamSpecification?.StreamEnabled) {
    throw new ImpelError("DynamoNoStream", `DynamoDB table ${eventTable} has no stream enabled`);
  }

  const internal = new AbortController();
  const stop = () => internal.abort();
  signal?.addEventListener("abort", stop, { once: true });
  // Aborted while the table was described: the listener came too late to hear it.
  if (signal?.aborted) {
    signal.removeEventListener("abort", stop);
    return;
  }
  let failure: unknown;
  const fail = (e: unknown) => {
    if (internal.signal.aborted && e === internal.signal.reason) return; // a retry cut by the stop
    failure ??= e;
    internal.abort();
  };

  // One ingest at a time: shards rarely share streams, but serializing avoids needless races.
  let lock: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(f: () => Promise<T>): Promise<T> => {
    const run = lock.then(f);
    lock = run.catch(() => {});
    return run;
  };

  const progressKey = (shardId: string) => key(`$shard#${eventTable}#${shardId}`, 0);
  const loadProgress = async (shardId: string) => {
    const { Item } = await client.send(
      new GetItemCommand({
        TableName: indexTable,
        Key: progressKey(shardId),
        ConsistentRead: true,
      }),
    );
    return { seq: Item?.seq?.S, done: Item?.done?.BOOL === true };
  };
  const saveProgress = (shardId: string, seq: string | undefined, done: boolean) =>
    client.send(
      new PutItemCommand({
        TableName: indexTable,
        Item: {
          ...progressKey(shardId),
          ...(seq ? { seq: { S: seq } } : {}),
          done: { BOOL: done },
        },
      }),
    );

  // Transient failures are retried for as long as they last (as the source's reads are: a
  // long-running indexer must outlive an outage), others up to maxAttempts; impel's own errors
  // are final (a record the index cannot take is parked by the indexer, not thrown). The delay
  // is capped at 5 s, so that indexing resumes within seconds of DynamoDB coming back.
  const delays = backoff({ initialDelayMs: 200, maxDelayMs: 5_000 });
  const retrying = <T>(what: string, f: () => Promise<T>): Promise<T> => {
    let attempts = 0;
    return retryingWith(f, {
      backoff: delays,
      signal: internal.signal,
      isRetriable: (e) =>
        !(e instanceof ImpelError) && (isTransientDynamoError(e) || ++attempts < maxAttempts),
      onFailure: (e, attempt) =>
        log.warn("{what} failed (attempt {attempt}): {error}", {
          what,
          attempt,
          error: errorText(e),
        }),
    });
  };

  async function readShard(shard: Shard, progress: { seq?: string }): Promise<void> {
    const shardId = shard.ShardId!;
    let seq = progress.seq;
    const iterator = async () =>
      (await streamsClient.send(
        new GetShardIteratorCommand({
          StreamArn: streamArn,
          ShardId: shardId,
          ShardIteratorType: seq
            ? "AFTER_SEQUENCE_NUMBER"
            : startAt === "latest"
            ? "LATEST"
            : "TRIM_HORIZON",
          SequenceNumber: seq,
        }),
      )).ShardIterator;
    let it = await retrying(`shard ${shardId} iterator`, iterator);
    while (it && !internal.signal.aborted) {
      let res;
      try {
        res = await retrying(
          `shard ${shardId} read`,
          () => streamsClient.send(new GetRecordsCommand({ ShardIterator: it, Limit: 1000 })),
        );
      } catch (e) {
        if (e instanceof ExpiredIteratorException) {
          it = await retrying(`shard ${shardId} iterator`, iterator);
          continue;
        }
        if (e instanceof TrimmedDataAccessException) {
          log.error("shard {shardId}: records after {seq} were trimmed before being indexed", {
            shardId,
            seq,
          });
          seq = undefined;
          it = await retrying(`shard ${shardId} iterator`, iterator);
          continue;
        }
        throw e;
      }
      const records = res.Records ?? [];
      // A read is indexed and recorded a slice at a time, so that a restart redoes one slice at
      // most, and a runner restarted often still gets somewhere.
      let k = 0;
      for (; k < records.length && !internal.signal.aborted; k += recordsPerIngest) {
        const slice = records.slice(k, k + recordsPerIngest);
        const result = await exclusive(() =>
          retrying(`indexing shard ${shardId}`, () => indexer.ingest(slice))
        );
        seq = slice[slice.length - 1].dynamodb?.SequenceNumber ?? seq;
        await retrying(`shard ${shardId} progress`, () => saveProgress(shardId, seq, false));
        onIngest?.(result, shardId);
      }
      if (k < records.length) break; // stopped: the rest is read again after `seq` next time
      it = res.NextShardIterator;
      if (records.length === 0 && it) await sleep(pollIntervalMs, internal.signal);
    }
    if (!it) await retrying(`shard ${shardId} progress`, () => saveProgress(shardId, seq, true));
  }

  const finished = new Set<string>();
  const running = new Map<string, Promise<void>>();
  const known = new Map<string, Shard>();

  async function describe(): Promise<void> {
    let start: string | undefined;
    do {
      const res = await streamsClient.send(
        new DescribeStreamCommand({ StreamArn: streamArn, ExclusiveStartShardId: start }),
      );
      for (const shard of res.StreamDescription?.Shards ?? []) {
        if (shard.ShardId) known.set(shard.ShardId, shard);
      }
      start = res.StreamDescription?.LastEvaluatedShardId;
    } while (start);
  }

  function launch(): void {
    for (const [id, shard] of known) {
      if (finished.has(id) || running.has(id)) continue;
      const parent = shard.ParentShardId;
      if (parent && known.has(parent) && !finished.has(parent)) continue;
      // Registered before any await so that two launches never start the same shard.
      const task = (async () => {
        const progress = await retrying(`shard ${id} progress`, () => loadProgress(id));
        if (!progress.done) await readShard(shard, progress);
      })().then(
        () => {
          running.delete(id);
          if (!internal.signal.aborted) {
            finished.add(id);
            // A closed shard has children: find and start them now rather than at the next look.
            retrying("describing the stream", describe).then(launch).catch(fail);
          }
        },
        (e) => {
          running.delete(id);
          fail(e);
        },
      );
      running.set(id, task);
    }
  }

  try {
    while (!internal.signal.aborted) {
      await retrying("describing the stream", describe);
      launch();
      await sleep(describeIntervalMs, internal.signal);
    }
  } catch (e) {
    fail(e);
  } finally {
    signal?.removeEventListener("abort", stop);
    internal.abort();
    while (running.size > 0) await Promise.allSettled([...running.values()]);
  }
  if (failure !== undefined) throw failure;
}

function key(p: string, i: number): Record<string, { S: string } | { N: string }> {
  return { p: { S: p }, i: { N: String(i) } };
}
