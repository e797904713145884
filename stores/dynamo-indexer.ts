/**
 * The index of appends that makes a DynamoDB event table readable in order.
 *
 * DynamoDB has no ordered change feed across a table, so the indexer turns DynamoDB Streams
 * records of the events table (`stores/dynamo.ts`) into index entries ("stream S advanced from
 * index i to n, with these event types") and appends them, per index partition, to a sequence of
 * epochs. `sources/dynamo.ts` reads the epochs in order.
 *
 * Index table layout (partition key `p`, number sort key `i`):
 * - `$partitions` / 0: the set `ps` of partition ids in use;
 * - `$tip#{partition}` / 0: the open epoch `ep`, its entry count `o`, bytes `b` and streams `s`;
 * - `$epoch#{partition}#{epoch}` / offset: a chunk of entries (JSON `j`, count `c`) starting at
 *   that offset; `/ 1e6` ({@linkcode EPOCH_FACTOR}): the end marker, written when the epoch
 *   closes, with its final count `c` (it sorts after every chunk, so the query that reads the
 *   last chunks also tells whether the epoch is closed);
 * - `$stream#{stream}` / 0: the next version `n` indexed for the stream, and the partition `pt`
 *   and epoch `ep` it was last indexed in;
 * - `$shard#{table}#{shard}` / 0: how far the streams runner got in a DynamoDB Streams shard.
 *
 * Each write is one transaction that appends a chunk, moves the tip and advances the versions of
 * the streams in it, all under conditions on the values read. That makes the indexer safe to
 * re-run over the same records (already-indexed versions are dropped) and safe against a second
 * indexer running at once (the loser re-reads and retries).
 *
 * @module
 */
import {
  type AttributeValue,
  BatchGetItemCommand,
  DescribeTableCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  TransactionCanceledException,
  type TransactWriteItem,
  TransactWriteItemsCommand,
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
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import type { StreamName } from "../core/streamName.ts";
import {
  type AppendSummary,
  checkTableName,
  type DynamoClient,
  type DynamoStreamsClient,
  ensureTable,
  summarizeAppend,
} from "./dynamo.ts";

// Re-exported so that this entry point's documentation can show the client types it takes.
export type { DynamoClient, DynamoStreamsClient } from "./dynamo.ts";

const log = getLogger(["impel", "dynamo", "indexer"]);

/**
 * Checkpoint positions of the dynamo source are `epoch * EPOCH_FACTOR + offset`.
 *
 * @example
 * ```ts
 * import { EPOCH_FACTOR } from "@impel/impel/stores/dynamo-indexer";
 * const checkpoint = 3_000_017n; // as stored by a dynamoSource
 * const epoch = checkpoint / BigInt(EPOCH_FACTOR); // 3n
 * const offset = checkpoint % BigInt(EPOCH_FACTOR); // 17n: the next entry of epoch 3 to read
 * console.log(epoch, offset);
 * ```
 */
export const EPOCH_FACTOR = 1_000_000;

// A transaction takes at most 100 actions: a chunk, a header, the tip, the partition set and
// one per stream; chunks stay well below the 400 KB item limit.
const MAX_STREAMS_PER_WRITE = 90;
const MAX_CHUNK_BYTES = 300_000;
const CONTENTION_ATTEMPTS = 12;

/**
 * One index entry: a stream advanced over `[index, next)` with events of these types.
 *
 * @example
 * ```ts
 * import { decodeEntries, type IndexEntry } from "@impel/impel/stores/dynamo-indexer";
 * // The JSON `j` of a chunk item of the index table
 * const chunk = '[["Order-1",2,4,["Paid","Shipped"],1700000000000]]';
 * const entries: IndexEntry[] = decodeEntries(chunk);
 * for (const entry of entries) {
 *   console.log(entry.stream, entry.index, entry.next, entry.types.join());
 *   // "Order-1" 2 4 "Paid,Shipped"
 * }
 * ```
 */
export interface IndexEntry {
  /** The stream appended to. */
  readonly stream: StreamName;
  /** The index of the first event of the span. */
  readonly index: number;
  /** The index after the last event of the span. */
  readonly next: number;
  /** The event types, one per event of the span. */
  readonly types: readonly string[];
  /** When the (last) append of the span was written, in ms since the epoch. */
  readonly time: number;
}

/**
 * Options of {@linkcode dynamoIndexer}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { dynamoIndexer, type DynamoIndexerOptions } from "@impel/impel/stores/dynamo-indexer";
 * import { categoryOf } from "@impel/impel";
 * const client = new DynamoDBClient({ endpoint: "http://127.0.0.1:8000", region: "local" });
 * const options: DynamoIndexerOptions = {
 *   indexTable: "events-index",
 *   partitionOf: (stream) => categoryOf(stream), // one tranche per category
 *   maxEpochEntries: 50_000,
 *   onGap: "warn",
 * };
 * const indexer = dynamoIndexer(client, options);
 * console.log(indexer.options.maxEpochStreams); // 10000: the default
 * ```
 */
export interface DynamoIndexerOptions {
  /** The index table, created by {@linkcode createIndexTable}. */
  readonly indexTable: string;
  /** The index partition (source tranche) of a stream; default: everything in `"0"`. */
  readonly partitionOf?: (stream: StreamName) => string;
  /** An epoch closes before it would hold more entries than this (default 100 000, max 1e6). */
  readonly maxEpochEntries?: number;
  /** An epoch closes before its entries would exceed this many bytes of JSON (default 8 MiB). */
  readonly maxEpochBytes?: number;
  /** An epoch closes before it would hold more distinct streams than this (default 10 000). */
  readonly maxEpochStreams?: number;
  /**
   * What to do with an append that starts beyond the next version expected for its stream
   * (records missing or out of order): `"error"` (default) throws {@linkcode IndexGapError}
   * without writing that partition; `"warn"` logs a warning and indexes it anyway.
   */
  readonly onGap?: "error" | "warn";
}

/**
 * A DynamoDB Streams record, as the streams client or a Lambda event delivers it.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { dynamoIndexer, type StreamRecordLike } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({ endpoint: "http://127.0.0.1:8000", region: "local" });
 * const indexer = dynamoIndexer(client, { indexTable: "events-index" });
 * // The handler of a Lambda fed by the events table's DynamoDB Stream
 * const handler = async (event: { Records: StreamRecordLike[] }) => {
 *   const { entries, events } = await indexer.ingest(event.Records);
 *   console.log(`indexed ${events} events in ${entries} entries`);
 * };
 * ```
 */
export interface StreamRecordLike {
  /** `INSERT`, `MODIFY` or `REMOVE`; only inserts of append items are indexed. */
  readonly eventName?: string;
  /** The change. */
  readonly dynamodb?: {
    /** The item after the change (the table's stream view must include new images). */
    readonly NewImage?: Record<string, unknown>;
    /** The record's position in its shard. */
    readonly SequenceNumber?: string;
  };
}

/**
 * What one {@linkcode DynamoIndexer.ingest} call did.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { summarizeAppend } from "@impel/impel/stores/dynamo";
 * import { dynamoIndexer, type IngestResult } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({ endpoint: "http://127.0.0.1:8000", region: "local" });
 * const indexer = dynamoIndexer(client, { indexTable: "events-index" });
 * const append = summarizeAppend({
 *   p: { S: "Order-1" },
 *   i: { N: "0" },
 *   n: { N: "1" },
 *   ts: { N: String(Date.now()) },
 *   e: { L: [{ M: { t: { S: "Placed" }, id: { S: "a" } } }] },
 * })!;
 * const first: IngestResult = await indexer.ingestAppends([append]);
 * const again: IngestResult = await indexer.ingestAppends([append]); // a replay
 * console.log(first.entries, first.events, again.entries, again.duplicateEvents); // 1 1 0 1
 * ```
 */
export interface IngestResult {
  /** Index entries written. */
  readonly entries: number;
  /** Events covered by the entries written. */
  readonly events: number;
  /** Events dropped because they were already indexed (replays, duplicates). */
  readonly duplicateEvents: number;
  /** Appends that started beyond the next expected version (only non-zero with `onGap: "warn"`). */
  readonly gaps: number;
  /** Epochs closed by this call. */
  readonly epochsClosed: number;
}

/**
 * Turns DynamoDB Streams records of an events table into index entries.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { type DynamoIndexer, dynamoIndexer } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({ endpoint: "http://127.0.0.1:8000", region: "local" });
 * const indexer: DynamoIndexer = dynamoIndexer(client, { indexTable: "events-index" });
 * const { epoch, offset, streams } = await indexer.tip("0");
 * console.log(`partition 0: epoch ${epoch} holds ${offset} entries of ${streams} streams`);
 * ```
 */
export interface DynamoIndexer {
  /** Indexes the appends among `records`; safe to call again with the same records. */
  ingest(records: readonly StreamRecordLike[]): Promise<IngestResult>;
  /** Indexes appends summarized by the caller (e.g. from an export). */
  ingestAppends(appends: readonly AppendSummary[]): Promise<IngestResult>;
  /** The open epoch of a partition and how many entries it holds. */
  tip(
    partition: string,
  ): Promise<{ epoch: number; offset: number; bytes: number; streams: number }>;
  /** The options in force. */
  readonly options: Required<DynamoIndexerOptions>;
}

/**
 * An append started beyond the next version the index expects for its stream: records were
 * lost, skipped or delivered out of order.
 *
 * @example
 * ```ts
 * import { IndexGapError } from "@impel/impel/stores/dynamo-indexer";
 * const e = new IndexGapError("Order-1", 3, 5);
 * console.log(e.code, e.expected, e.actual); // "DynamoIndexGap" 3 5
 * ```
 */
export class IndexGapError extends ImpelError {
  /** The stream with the gap. */
  readonly stream: StreamName;
  /** The version the index expected the next append to start at. */
  readonly expected: number;
  /** Where the append actually started. */
  readonly actual: number;
  /** Creates the error for `stream`. */
  constructor(stream: StreamName, expected: number, actual: number) {
    super(
      "DynamoIndexGap",
      `index gap in ${stream}: expected an append at version ${expected}, got one at ${actual} (records missing or out of order)`,
    );
    this.stream = stream;
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * Another writer kept winning the race for the same index partition.
 *
 * @example
 * ```ts
 * import { IndexContentionError } from "@impel/impel/stores/dynamo-indexer";
 * console.log(new IndexContentionError("0", 12).code); // "DynamoIndexContention"
 * ```
 */
export class IndexContentionError extends ImpelError {
  /** The contended partition. */
  readonly partition: string;
  /** Creates the error. */
  constructor(partition: string, attempts: number, options?: ErrorOptions) {
    super(
      "DynamoIndexContention",
      `index partition ${partition}: gave up after ${attempts} conflicting writes`,
      options,
    );
    this.partition = partition;
  }
}

/**
 * The index table's partition-key value of an epoch's items.
 *
 * @example
 * ```ts
 * import { epochKey } from "@impel/impel/stores/dynamo-indexer";
 * epochKey("0", 3); // "$epoch#0#3"
 * ```
 */
export function epochKey(partition: string, epoch: number): string {
  return `$epoch#${partition}#${epoch}`;
}

/**
 * The index table's partition-key value of a partition's tip.
 *
 * @example
 * ```ts
 * import { tipKey } from "@impel/impel/stores/dynamo-indexer";
 * tipKey("0"); // "$tip#0"
 * ```
 */
export function tipKey(partition: string): string {
  return `$tip#${partition}`;
}

/**
 * The index table's partition-key value of the set of partitions in use.
 *
 * @example
 * ```ts
 * import { DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";
 * import { PARTITIONS_KEY } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({ endpoint: "http://127.0.0.1:8000", region: "local" });
 * const { Item } = await client.send(
 *   new GetItemCommand({
 *     TableName: "events-index",
 *     Key: { p: { S: PARTITIONS_KEY }, i: { N: "0" } },
 *   }),
 * );
 * const partitions = Item?.ps?.SS ?? []; // e.g. ["0"]: the tranches a dynamoSource reads
 * ```
 */
export const PARTITIONS_KEY = "$partitions";

/**
 * Creates the index table unless it exists (on-demand billing); waits until it is active.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createIndexTable } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({ endpoint: "http://127.0.0.1:8000", region: "local" });
 * await createIndexTable(client, "events-index");
 * ```
 */
export async function createIndexTable(client: DynamoClient, tableName: string): Promise<void> {
  await ensureTable(client, { tableName, partitionKey: ["p", "S"], sortKey: ["i", "N"] });
}

/**
 * Encodes index entries as stored in a chunk: `[stream, index, next, types, time]` tuples.
 *
 * @example
 * ```ts
 * import { decodeEntries, encodeEntries } from "@impel/impel/stores/dynamo-indexer";
 * const json = encodeEntries([{ stream: "A-1", index: 0, next: 1, types: ["T"], time: 5 }]);
 * decodeEntries(json); // [{ stream: "A-1", index: 0, next: 1, types: ["T"], time: 5 }]
 * ```
 */
export function encodeEntries(entries: readonly IndexEntry[]): string {
  return JSON.stringify(entries.map((e) => [e.stream, e.index, e.next, e.types, e.time]));
}

/**
 * Decodes a chunk's entries; the inverse of {@linkcode encodeEntries}.
 *
 * @example
 * ```ts
 * import { decodeEntries } from "@impel/impel/stores/dynamo-indexer";
 * decodeEntries('[["A-1",0,2,["X","Y"],5]]'); // [{ stream: "A-1", index: 0, next: 2, types: ["X", "Y"], time: 5 }]
 * ```
 */
export function decodeEntries(json: string): IndexEntry[] {
  const tuples = JSON.parse(json) as [string, number, number, string[], number][];
  return tuples.map(([stream, index, next, types, time]) => ({ stream, index, next, types, time }));
}

/**
 * An indexer over the index table: a function a Lambda fed by a DynamoDB Streams event source
 * mapping can call with `event.Records`, and that {@linkcode runStreamsIndexer} calls when the
 * indexer runs as a long-lived process.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createIndexTable, dynamoIndexer } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({ endpoint: "http://127.0.0.1:8000", region: "local" });
 * await createIndexTable(client, "events-index");
 * const indexer = dynamoIndexer(client, { indexTable: "events-index" });
 * // In a Lambda handler: `export const handler = (event) => indexer.ingest(event.Records);`
 * await indexer.ingest([]);
 * ```
 */
export function dynamoIndexer(
  dynamo: DynamoClient,
  options: DynamoIndexerOptions,
): DynamoIndexer {
  // The one cast at this boundary: DynamoClient only narrows the SDK client callers pass.
  const client = dynamo as DynamoDBClient;
  const indexTable = checkTableName("indexTable", options?.indexTable);
  const partitionOf = options.partitionOf ?? (() => "0");
  if (typeof partitionOf !== "function") {
    throw new InvalidArgumentError("partitionOf", "must be a function");
  }
  const maxEpochEntries = checkInteger(
    "maxEpochEntries",
    options.maxEpochEntries ?? 100_000,
    1,
    EPOCH_FACTOR,
  );
  const maxEpochBytes = checkInteger("maxEpochBytes", options.maxEpochBytes ?? 8 * 1024 * 1024, 1);
  const maxEpochStreams = checkInteger("maxEpochStreams", options.maxEpochStreams ?? 10_000, 1);
  const onGap = options.onGap ?? "error";
  if (onGap !== "error" && onGap !== "warn") {
    throw new InvalidArgumentError(
      "onGap",
      `must be "error" or "warn", got ${JSON.stringify(onGap)}`,
    );
  }
  const resolved: Required<DynamoIndexerOptions> = {
    indexTable,
    partitionOf,
    maxEpochEntries,
    maxEpochBytes,
    maxEpochStreams,
    onGap,
  };

  async function tip(partition: string) {
    const { Item } = await client.send(
      new GetItemCommand({
        TableName: indexTable,
        Key: key(tipKey(partition), 0),
        ConsistentRead: true,
      }),
    );
    return {
      exists: Item !== undefined,
      epoch: num(Item?.ep),
      offset: num(Item?.o),
      bytes: num(Item?.b),
      streams: num(Item?.s),
    };
  }

  async function streamStates(streams: readonly string[]): Promise<Map<string, StreamState>> {
    const out = new Map<string, StreamState>();
    for (let k = 0; k < streams.length; k += 100) {
      let keys: Record<string, AttributeValue>[] = streams.slice(k, k + 100).map((s) =>
        key(`$stream#${s}`, 0)
      );
      for (let attempt = 0; keys.length > 0; attempt++) {
        const res = await client.send(
          new BatchGetItemCommand({
            RequestItems: { [indexTable]: { Keys: keys, ConsistentRead: true } },
          }),
        );
        for (const item of res.Responses?.[indexTable] ?? []) {
          const stream = item.p.S!.slice("$stream#".length);
          out.set(stream, { version: num(item.n), partition: item.pt?.S, epoch: num(item.ep) });
        }
        keys = (res.UnprocessedKeys?.[indexTable]?.Keys ?? []) as Record<string, AttributeValue>[];
        if (keys.length > 0) await sleep(Math.min(1000, 20 * 2 ** attempt));
      }
    }
    return out;
  }

  // Indexes one partition's appends; returns counts. Retries from a fresh read on contention.
  async function ingestPartition(
    partition: string,
    appends: readonly AppendSummary[],
  ): Promise<IngestResult> {
    const written = { entries: 0, events: 0, gaps: 0, epochsClosed: 0 };
    for (let attempt = 1;; attempt++) {
      const state = await tip(partition);
      const streams = await streamStates([...new Set(appends.map((a) => a.stream))]);
      // Re-classifying after a lost race drops whatever was indexed meanwhile, by us or others.
      const plan = classify(appends, streams, onGap);
      try {
        await writeEntries(partition, state, streams, plan.entries, written);
        // Events we wrote in earlier attempts show up as duplicates in the last classification.
        return {
          ...written,
          duplicateEvents: plan.duplicateEvents - (written.events - plan.events),
        };
      } catch (e) {
        if (!(e instanceof LostRace)) throw e;
        if (attempt >= CONTENTION_ATTEMPTS) {
          throw new IndexContentionError(partition, attempt, { cause: e.cause });
        }
        log.debug("index partition {partition} contended; retrying (attempt {attempt})", {
          partition,
          attempt,
        });
        await sleep(Math.min(1000, 10 * 2 ** attempt) * (0.5 + Math.random()));
      }
    }
  }

  async function writeEntries(
    partition: string,
    start: { exists: boolean; epoch: number; offset: number; bytes: number; streams: number },
    streams: Map<string, StreamState>,
    entries: readonly PlannedEntry[],
    done: { entries: number; events: number; gaps: number; epochsClosed: number },
  ): Promise<void> {
    if (entries.length === 0) return;
    let tipExists = start.exists;
    let epoch = start.epoch,
      offset = start.offset,
      bytes = start.bytes,
      streamCount = start.streams;
    let k = 0;
    while (k < entries.length) {
      // Build one transaction: entries that fit the open epoch, up to the transaction's budget.
      const chunk: PlannedEntry[] = [];
      const chunkStart = offset;
      const touched = new Map<string, { from: StreamState | undefined; to: number }>();
      let chunkBytes = 0, newStreams = 0, addedBytes = 0, close = false;
      while (k < entries.length) {
        const entry = entries[k];
        const size = entrySize(entry);
        const known = touched.has(entry.stream) ||
          (streams.get(entry.stream)?.partition === partition &&
            streams.get(entry.stream)?.epoch === epoch);
        const fits = offset + chunk.length === 0 || (
          offset + chunk.length + 1 <= maxEpochEntries &&
          bytes + addedBytes + size <= maxEpochBytes &&
          streamCount + newStreams + (known ? 0 : 1) <= maxEpochStreams
        );
        if (!fits) {
          close = true;
          break;
        }
        if (!touched.has(entry.stream) && touched.size >= MAX_STREAMS_PER_WRITE) break;
        if (chunk.length > 0 && chunkBytes + size > MAX_CHUNK_BYTES) break;
        chunk.push(entry);
        chunkBytes += size;
        addedBytes += size;
        if (!known) newStreams++;
        const prior = touched.get(entry.stream);
        touched.set(entry.stream, {
          from: prior ? prior.from : streams.get(entry.stream),
          to: entry.next,
        });
        k++;
      }
      const newOffset = offset + chunk.length;
      const actions: TransactWriteItem[] = [];
      if (chunk.length > 0) {
        actions.push({
          Put: {
            TableName: indexTable,
            Item: {
              ...key(epochKey(partition, epoch), chunkStart),
              j: { S: encodeEntries(chunk) },
              c: { N: String(chunk.length) },
              ts: { N: String(Date.now()) },
            },
            ConditionExpression: "attribute_not_exists(p)",
          },
        });
      }
      if (close) {
        actions.push({
          Put: {
            TableName: indexTable,
            Item: {
              ...key(epochKey(partition, epoch), EPOCH_FACTOR),
              closed: { BOOL: true },
              c: { N: String(newOffset) },
            },
            ConditionExpression: "attribute_not_exists(p)",
          },
        });
      }
      const next = close ? { epoch: epoch + 1, offset: 0, bytes: 0, streams: 0 } : {
        epoch,
        offset: newOffset,
        bytes: bytes + addedBytes,
        streams: streamCount + newStreams,
      };
      actions.push({
        Put: {
          TableName: indexTable,
          Item: {
            ...key(tipKey(partition), 0),
            ep: { N: String(next.epoch) },
            o: { N: String(next.offset) },
            b: { N: String(next.bytes) },
            s: { N: String(next.streams) },
          },
          ConditionExpression: tipExists ? "ep = :ep AND o = :o" : "attribute_not_exists(p)",
          ExpressionAttributeValues: tipExists
            ? { ":ep": { N: String(epoch) }, ":o": { N: String(offset) } }
            : undefined,
        },
      });
      if (!tipExists) {
        actions.push({
          Update: {
            TableName: indexTable,
            Key: key(PARTITIONS_KEY, 0),
            UpdateExpression: "ADD ps :ps",
            ExpressionAttributeValues: { ":ps": { SS: [partition] } },
          },
        });
      }
      for (const [stream, { from, to }] of touched) {
        actions.push({
          Put: {
            TableName: indexTable,
            Item: {
              ...key(`$stream#${stream}`, 0),
              n: { N: String(to) },
              pt: { S: partition },
              ep: { N: String(epoch) },
            },
            ConditionExpression: from === undefined ? "attribute_not_exists(p)" : "n = :n",
            ExpressionAttributeValues: from === undefined
              ? undefined
              : { ":n": { N: String(from.version) } },
          },
        });
      }
      try {
        await client.send(new TransactWriteItemsCommand({ TransactItems: actions }));
      } catch (e) {
        // Lost to another writer (a condition no longer holds, or a transaction in progress):
        // re-read and retry. Anything else (an oversized item, a validation error) is final.
        const races = ["None", "ConditionalCheckFailed", "TransactionConflict"];
        if (
          e instanceof TransactionCanceledException &&
          (e.CancellationReasons ?? []).every((r) => races.includes(r.Code ?? "None"))
        ) throw new LostRace(e);
        throw e;
      }
      for (const [stream, { to }] of touched) {
        streams.set(stream, { version: to, partition, epoch });
      }
      for (const entry of chunk) {
        done.events += entry.next - entry.index;
        if (entry.gap) done.gaps++;
      }
      done.entries += chunk.length;
      tipExists = true;
      if (close) {
        done.epochsClosed++;
        log.info("index partition {partition} closed epoch {epoch} at {count} entries", {
          partition,
          epoch,
          count: newOffset,
        });
      }
      ({ epoch, offset, bytes, streams: streamCount } = next);
    }
  }

  async function ingestAppends(appends: readonly AppendSummary[]): Promise<IngestResult> {
    const byPartition = new Map<string, AppendSummary[]>();
    for (const append of appends) {
      const partition = partitionOf(append.stream);
      if (typeof partition !== "string" || partition.length === 0 || partition.includes("#")) {
        throw new InvalidArgumentError(
          "partitionOf",
          `must return a non-empty string without '#', got ${JSON.stringify(partition)}`,
        );
      }
      let list = byPartition.get(partition);
      if (!list) byPartition.set(partition, list = []);
      list.push(append);
    }
    const total = { entries: 0, events: 0, duplicateEvents: 0, gaps: 0, epochsClosed: 0 };
    // Partitions are independent; indexing them at once keeps a Lambda invocation short.
    const results = await Promise.all(
      [...byPartition].map(([p, list]) => ingestPartition(p, list)),
    );
    for (const r of results) {
      total.entries += r.entries;
      total.events += r.events;
      total.duplicateEvents += r.duplicateEvents;
      total.gaps += r.gaps;
      total.epochsClosed += r.epochsClosed;
    }
    return total;
  }

  async function ingest(records: readonly StreamRecordLike[]): Promise<IngestResult> {
    if (!Array.isArray(records)) throw new InvalidArgumentError("records", "must be an array");
    const appends: AppendSummary[] = [];
    for (const record of records) {
      if (record?.eventName !== "INSERT") continue;
      const summary = summarizeAppend(record.dynamodb?.NewImage);
      if (summary) appends.push(summary);
    }
    return await ingestAppends(appends);
  }

  return {
    ingest,
    ingestAppends,
    tip: async (partition) => {
      const { epoch, offset, bytes, streams } = await tip(partition);
      return { epoch, offset, bytes, streams };
    },
    options: resolved,
  };
}

interface StreamState {
  readonly version: number;
  readonly partition: string | undefined;
  readonly epoch: number;
}

class LostRace extends Error {
  constructor(cause: unknown) {
    super("index write lost a race", { cause });
  }
}

interface PlannedEntry extends IndexEntry {
  /** The entry starts beyond the version expected (indexed anyway under `onGap: "warn"`). */
  readonly gap: boolean;
}

// Entries stay well inside a chunk item however many events one append held.
const MAX_ENTRY_EVENTS = 2000;

// Drops what is already indexed, trims partial overlaps, spots gaps, and coalesces consecutive
// appends of a stream into one entry (so an entry is usually "everything this stream got").
function classify(
  appends: readonly AppendSummary[],
  streams: ReadonlyMap<string, StreamState>,
  onGap: "error" | "warn",
): { entries: PlannedEntry[]; events: number; duplicateEvents: number } {
  const sorted = [...appends].sort((a, b) =>
    a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : a.index - b.index
  );
  const version = new Map<string, number>();
  type Building = {
    stream: string;
    index: number;
    next: number;
    types: string[];
    time: number;
    gap: boolean;
  };
  const open = new Map<string, Building>();
  const order: Building[] = [];
  let duplicateEvents = 0, events = 0;
  // Entries keep the order in which their streams first appear among the records.
  const firstSeen = new Map<string, number>();
  appends.forEach((a, k) => firstSeen.has(a.stream) || firstSeen.set(a.stream, k));
  for (const a of sorted) {
    const v = version.get(a.stream) ?? streams.get(a.stream)?.version ?? 0;
    if (a.next <= v) {
      duplicateEvents += a.next - a.index;
      continue;
    }
    let from = a.index;
    let gap = false;
    if (from < v) {
      duplicateEvents += v - from;
      from = v;
    } else if (from > v) {
      if (onGap === "error") throw new IndexGapError(a.stream, v, from);
      gap = true;
      log.warn(
        "index gap in {stream}: expected version {expected}, indexing an append at {actual}",
        {
          stream: a.stream,
          expected: v,
          actual: from,
        },
      );
    }
    events += a.next - from;
    for (let at = from; at < a.next;) {
      const current = open.get(a.stream);
      const room = current && current.next === at && !gap
        ? MAX_ENTRY_EVENTS - current.types.length
        : 0;
      if (room > 0) {
        const end = Math.min(a.next, at + room);
        current!.types.push(...a.types.slice(at - a.index, end - a.index));
        current!.next = end;
        current!.time = Math.max(current!.time, a.time);
        at = end;
      } else {
        const end = Math.min(a.next, at + MAX_ENTRY_EVENTS);
        const types = a.types.slice(at - a.index, end - a.index);
        const entry = { stream: a.stream, index: at, next: end, types, time: a.time, gap };
        open.set(a.stream, entry);
        order.push(entry);
        gap = false;
        at = end;
      }
    }
    version.set(a.stream, a.next);
  }
  order.sort((x, y) => firstSeen.get(x.stream)! - firstSeen.get(y.stream)! || x.index - y.index);
  return { entries: order, events, duplicateEvents };
}

function entrySize(e: IndexEntry): number {
  let size = e.stream.length + 32;
  for (const t of e.types) size += t.length + 3;
  return size;
}

function key(p: string, i: number): Record<string, AttributeValue> {
  return { p: { S: p }, i: { N: String(i) } };
}

function num(value: AttributeValue | undefined): number {
  return value?.N === undefined ? 0 : Number(value.N);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Options of {@linkcode runStreamsIndexer}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
 * import {
 *   dynamoIndexer,
 *   runStreamsIndexer,
 *   type StreamsIndexerOptions,
 * } from "@impel/impel/stores/dynamo-indexer";
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
  /** Attempts at a failing read or write before the runner gives up (default 8). */
  readonly maxAttempts?: number;
  /** Called after each indexed batch of records (for metrics and tests). */
  readonly onIngest?: (result: IngestResult, shardId: string) => void;
}

/**
 * Tails every shard of the events table's DynamoDB Stream and feeds the records to the indexer:
 * the long-running alternative to a Lambda. Parent shards are read to their end before their
 * children; progress per shard is kept in the index table so that a restart resumes (and replays
 * are harmless anyway). Resolves when `signal` aborts; rejects with the error if indexing fails
 * past `maxAttempts` or hits an {@linkcode IndexGapError}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
 * import { dynamoIndexer, runStreamsIndexer } from "@impel/impel/stores/dynamo-indexer";
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
  let failure: unknown;
  const fail = (e: unknown) => {
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

  async function retrying<T>(what: string, f: () => Promise<T>): Promise<T> {
    for (let attempt = 1;; attempt++) {
      try {
        return await f();
      } catch (e) {
        if (e instanceof ImpelError || attempt >= maxAttempts || internal.signal.aborted) throw e;
        log.warn("{what} failed (attempt {attempt}): {error}", { what, attempt, error: String(e) });
        await sleep(Math.min(30_000, 100 * 2 ** attempt), internal.signal);
      }
    }
  }

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
      if (records.length > 0) {
        const result = await exclusive(() =>
          retrying(`indexing shard ${shardId}`, () => indexer.ingest(records))
        );
        seq = records[records.length - 1].dynamodb?.SequenceNumber ?? seq;
        await retrying(`shard ${shardId} progress`, () => saveProgress(shardId, seq, false));
        onIngest?.(result, shardId);
      }
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
