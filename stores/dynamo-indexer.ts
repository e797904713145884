/**
 * The indexer that makes a DynamoDB event table readable in order.
 *
 * DynamoDB has no ordered change feed across a table, so the indexer turns DynamoDB Streams
 * records of the events table (`stores/dynamo.ts`) into index entries ("stream S advanced from
 * index i to n, with these event types") and appends them, per index partition, to a sequence of
 * epochs (the format of `stores/dynamo-index.ts`, re-exported here). `sources/dynamo.ts` reads the
 * epochs in order. Call it from a Lambda fed by the table's stream, or run it as a process with
 * `runStreamsIndexer` of `stores/dynamo-streams.ts`.
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
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  TransactionCanceledException,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { getLogger } from "@logtape/logtape";
import type { SourceProblem } from "../core/batch.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import type { StreamName } from "../core/streamName.ts";
import { sleep } from "../core/tranches.ts";
import {
  type AppendSummary,
  checkDynamoStreamName,
  checkTableName,
  type DynamoClient,
  inspectAppend,
  MAX_EVENT_TYPE_BYTES,
} from "./dynamo.ts";
import {
  encodeEntries,
  EPOCH_FACTOR,
  epochKey,
  type IndexEntry,
  PARTITIONS_KEY,
  partitionSlot,
  tipKey,
} from "./dynamo-index.ts";

// Re-exported so that this entry point's documentation can show the client type it takes, and
// so that the index format stays importable from here.
export type { DynamoClient } from "./dynamo.ts";
export * from "./dynamo-index.ts";

const log = getLogger(["impel", "dynamo", "indexer"]);

// A transaction takes at most 100 actions: a chunk, a header, the tip, the partition's listing
// and one per stream; chunks stay well below the 400 KB item limit.
const MAX_STREAMS_PER_WRITE = 90;
const MAX_CHUNK_BYTES = 300_000;
const CONTENTION_ATTEMPTS = 12;

/**
 * Options of {@linkcode dynamoIndexer}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { dynamoIndexer, type DynamoIndexerOptions } from "@impel/impel/stores/dynamo-indexer";
 * import { categoryOf } from "@impel/impel";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
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
   * (records missing or out of order, or an item another writer put ahead of the stream).
   * Appends are taken in the order they are given (a stream's records come in write order), so
   * one given before the appends that fill its hole is a gap, even in the same call. A gap is
   * never indexed across the hole, and it never stops the other streams: it is parked (kept under
   * `$parked`, counted in `gaps` and `parked`) and the appends that fill the hole are still
   * indexed. `"error"` (default) also parks its stream from the gapped version on, as for any
   * record the index cannot hold (see {@linkcode ParkedRecord}): its later appends are parked too
   * until it is released by hand. `"warn"` (which needs `eventTable`) logs a warning and leaves
   * the stream unparked: an append at a version where a gap is parked is indexed only once the
   * events table confirms it (the item at that version is that append and the stream's tip
   * covers it), so that feeding the parked record again once the hole is filled (a replay of the
   * shard, a Lambda retry, or `ingestAppends`) indexes it, while a replay of another writer's
   * item, or of one replaced since, stays parked and never takes the place of the real append.
   * Until the hole is filled every later append of the stream is a gap too and is parked
   * likewise; past 100 gaps waiting in one stream, the stream is parked as under `"error"`.
   */
  readonly onGap?: "error" | "warn";
  /**
   * The events table the records come from; needed by `onGap: "warn"`, which reads it to
   * confirm a gapped append before indexing it.
   */
  readonly eventTable?: string;
}

/**
 * A DynamoDB Streams record, as the streams client or a Lambda event delivers it.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { dynamoIndexer, type StreamRecordLike } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
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
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
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
  /** Appends that started beyond the next expected version: parked, never indexed (`onGap`). */
  readonly gaps: number;
  /** Epochs closed by this call. */
  readonly epochsClosed: number;
  /**
   * Append records set aside instead of indexed (see {@linkcode ParkedRecord}): malformed ones,
   * ones whose stream or partition the index cannot hold, and later ones of a parked stream.
   */
  readonly parked: number;
  /** Of the parked records, those that could not be read as appends at all. */
  readonly malformed: number;
  /**
   * Records set aside but not parked: ones the index already holds their stream past (their
   * index is below the stream's indexed version, and so is their end if known), such as junk
   * another writer put inside an indexed range. Logged as a warning; the stream carries on.
   */
  readonly dropped: number;
}

/**
 * An append record the indexer could not index and set aside, so that it blocks nothing behind
 * it. It is kept in the index table (`$parked`), logged as an error and reported by
 * {@linkcode DynamoIndexer.problems}. When the record names a stream the index can hold, the
 * stream is parked from `index` on: its later appends are parked too (rather than indexed past a
 * hole), so that readers see the stream stop where it broke, never skip.
 *
 * The events stay in the events table. To release a stream: repair or remove the bad item, delete
 * the stream's `$parked` items and the `pk` and `gw` attributes of its `$stream#{stream}` item in
 * the index table, and feed its records to the indexer again (e.g. `ingestAppends` of summaries read back
 * from the events table).
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { dynamoIndexer, type ParkedRecord } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const indexer = dynamoIndexer(client, { indexTable: "events-index" });
 * const parked: ParkedRecord[] = await indexer.parked();
 * for (const r of parked) console.log(r.stream, r.index, r.reason);
 * ```
 */
export interface ParkedRecord {
  /** The stream the record names, if it names one. */
  readonly stream?: string;
  /** The index of the record's first event, if known. */
  readonly index?: number;
  /** The index after its last event, if known. */
  readonly next?: number;
  /** The index partition it was meant for, if one could be chosen. */
  readonly partition?: string;
  /** Why it was set aside. */
  readonly reason: string;
  /** When it was (last) parked, in ms since the epoch. */
  readonly time: number;
}

/**
 * Turns DynamoDB Streams records of an events table into index entries.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { type DynamoIndexer, dynamoIndexer } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
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
  /** Every record parked so far (read from the index table), oldest key first. */
  parked(): Promise<ParkedRecord[]>;
  /** The records this indexer parked since it was created (the latest 100), for health checks. */
  problems(): readonly SourceProblem[];
  /** The options in force. */
  readonly options: Required<Omit<DynamoIndexerOptions, "eventTable">> & {
    readonly eventTable: string | undefined;
  };
}

/**
 * An append started beyond the next version the index expects for its stream: records were
 * lost, skipped or delivered out of order. The indexer no longer throws it (a gapped append is
 * parked, see {@linkcode DynamoIndexerOptions.onGap}); it stays for callers that check
 * summaries themselves.
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
 * An indexer over the index table: a function a Lambda fed by a DynamoDB Streams event source
 * mapping can call with `event.Records`, and that {@linkcode runStreamsIndexer} calls when the
 * indexer runs as a long-lived process.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createIndexTable, dynamoIndexer } from "@impel/impel/stores/dynamo-indexer";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
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
  const eventTable = options.eventTable === undefined
    ? undefined
    : checkTableName("eventTable", options.eventTable);
  if (onGap === "warn" && eventTable === undefined) {
    // Without the table a replayed record cannot be told from the real append at its version.
    throw new InvalidArgumentError(
      "eventTable",
      'is needed with onGap "warn", to confirm a gapped append before it is indexed',
    );
  }
  const resolved: DynamoIndexer["options"] = {
    indexTable,
    partitionOf,
    maxEpochEntries,
    maxEpochBytes,
    maxEpochStreams,
    onGap,
    eventTable,
  };

  async function tip(partition: string): Promise<TipState> {
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
          out.set(stream, {
            version: num(item.n),
            indexed: item.n?.N !== undefined,
            parkedAt: item.pk?.N === undefined ? undefined : Number(item.pk.N),
            gapsWaiting: (item.gw?.NS ?? []).map(Number),
            partition: item.pt?.S,
            epoch: num(item.ep),
          });
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
    all: readonly AppendSummary[],
    parkedFrom: ReadonlyMap<string, number>,
  ): Promise<IngestResult> {
    const written = { entries: 0, events: 0, epochsClosed: 0 };
    for (let attempt = 1;; attempt++) {
      const state = await tip(partition);
      const streams = await streamStates([...new Set(all.map((a) => a.stream))]);
      // Under "warn", an append at a version where a gap is parked is taken only as the events
      // table confirms it: otherwise a replay of another writer's item would be indexed there.
      const unconfirmed = new Set<AppendSummary>();
      await Promise.all(
        all.filter((a) => streams.get(a.stream)?.gapsWaiting?.includes(a.index)).map(async (a) => {
          if (!(await confirmed(a))) unconfirmed.add(a);
        }),
      );
      // A parked stream's later appends are parked too: indexing them would leave a hole.
      const appends: AppendSummary[] = [];
      const parks: Park[] = [];
      for (const a of all) {
        if (unconfirmed.has(a)) {
          parks.push({
            stream: a.stream,
            index: a.index,
            next: a.next,
            partition,
            reason: `index gap: a replay at version ${a.index} that the events table does not ` +
              `confirm (another writer's item, or one replaced since)`,
            key: GAP_KEY,
            mark: false,
          });
          continue;
        }
        const marks = [streams.get(a.stream)?.parkedAt, parkedFrom.get(a.stream)];
        const at = Math.min(...marks.filter((m) => m !== undefined));
        if (a.next > at && a.next > (streams.get(a.stream)?.version ?? 0)) {
          parks.push({
            stream: a.stream,
            index: a.index,
            next: a.next,
            partition,
            reason: `its stream is parked from version ${at}`,
          });
        } else appends.push(a);
      }
      // Re-classifying after a lost race drops whatever was indexed meanwhile, by us or others.
      const plan = classify(appends, streams);
      // A gapped append is parked, never indexed across the hole (see onGap).
      const waiting = new Map<string, number>();
      for (const { append: a, expected } of plan.gapped) {
        const where = `expected an append at version ${expected}, got one at ${a.index}`;
        // Under "warn" a stream holds at most MAX_GAPS_WAITING gaps; past them it is parked.
        const held = waiting.get(a.stream) ?? streams.get(a.stream)?.gapsWaiting?.length ?? 0;
        const lenient = onGap === "warn" && held < MAX_GAPS_WAITING;
        if (lenient) {
          waiting.set(a.stream, held + 1);
          log.warn("index gap in {stream}: {where}; parked until the hole is filled", {
            stream: a.stream,
            where,
          });
        }
        parks.push({
          stream: a.stream,
          index: a.index,
          next: a.next,
          partition,
          reason: `index gap: ${where} (records missing, out of order, or another writer's item)` +
            (onGap === "warn" && !lenient
              ? `; the stream holds ${MAX_GAPS_WAITING} gaps already and is parked`
              : ""),
          key: onGap === "warn" ? GAP_KEY : undefined,
          mark: !lenient,
        });
      }
      try {
        await writeEntries(partition, state, streams, plan.entries, written);
        const kept = await park(parks);
        await resolveGaps(all, streams);
        // Events we wrote in earlier attempts show up as duplicates in the last classification.
        return {
          ...written,
          gaps: plan.gapped.length,
          duplicateEvents: plan.duplicateEvents - (written.events - plan.events),
          parked: kept.length,
          malformed: 0,
          dropped: parks.length - kept.length,
        };
      } catch (e) {
        if (e instanceof RefusedWrite) {
          // Parked rather than thrown: a refusal would stop the runner for every partition.
          // What was indexed before the refused write stays; the rest is parked with why.
          const reasons = (e.cause as TransactionCanceledException).CancellationReasons ?? [];
          const why = reasons.find((r) => r.Code === "ValidationError")?.Message ?? e.message;
          for (const a of appends) {
            if (a.next <= (streams.get(a.stream)?.version ?? 0)) continue;
            if (parks.some((r) => r.stream === a.stream && r.index === a.index)) continue;
            parks.push({
              stream: a.stream,
              index: a.index,
              next: a.next,
              partition,
              reason: `DynamoDB refused the index write of partition ${
                JSON.stringify(partition.slice(0, 200))
              }: ${why}`,
            });
          }
          const kept = await park(parks);
          return {
            ...written,
            gaps: plan.gapped.length,
            duplicateEvents: plan.duplicateEvents - (written.events - plan.events),
            parked: kept.length,
            malformed: 0,
            dropped: parks.length - kept.length,
          };
        }
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

  // Writes the entries as a sequence of transactions, each packed to fit the open epoch and the
  // transaction's limits; counts what was written into `done` as it goes.
  async function writeEntries(
    partition: string,
    start: TipState,
    streams: Map<string, StreamState>,
    entries: readonly PlannedEntry[],
    done: { entries: number; events: number; epochsClosed: number },
  ): Promise<void> {
    let tip = start;
    for (let k = 0; k < entries.length;) {
      const packed = packChunk(partition, tip, streams, entries, k, resolved);
      await transact(partition, tip, packed);
      for (const [stream, { to }] of packed.touched) {
        const { parkedAt, gapsWaiting } = streams.get(stream) ?? {};
        streams.set(stream, {
          version: to,
          indexed: true,
          parkedAt,
          gapsWaiting,
          partition,
          epoch: tip.epoch,
        });
      }
      for (const entry of packed.chunk) done.events += entry.next - entry.index;
      done.entries += packed.chunk.length;
      if (packed.close) {
        done.epochsClosed++;
        log.info("index partition {partition} closed epoch {epoch} at {count} entries", {
          partition,
          epoch: tip.epoch,
          count: tip.offset + packed.chunk.length,
        });
      }
      k += packed.chunk.length;
      tip = { exists: true, ...packed.next };
    }
  }

  // One transaction: the chunk, the end marker if the epoch closes, the tip (conditional on the
  // tip read), the listing of a new partition, and each stream's indexed version.
  async function transact(partition: string, tip: TipState, packed: Packed): Promise<void> {
    const { chunk, close, next, touched } = packed;
    const actions: TransactWriteItem[] = [];
    if (chunk.length > 0) {
      actions.push({
        Put: {
          TableName: indexTable,
          Item: {
            ...key(epochKey(partition, tip.epoch), tip.offset),
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
            ...key(epochKey(partition, tip.epoch), EPOCH_FACTOR),
            closed: { BOOL: true },
            c: { N: String(tip.offset + chunk.length) },
          },
          ConditionExpression: "attribute_not_exists(p)",
        },
      });
    }
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
        ConditionExpression: tip.exists ? "ep = :ep AND o = :o" : "attribute_not_exists(p)",
        ExpressionAttributeValues: tip.exists
          ? { ":ep": { N: String(tip.epoch) }, ":o": { N: String(tip.offset) } }
          : undefined,
      },
    });
    if (!tip.exists) {
      // A new partition is listed by an item of its own, so that there can be any number.
      actions.push({
        Put: {
          TableName: indexTable,
          Item: { ...key(PARTITIONS_KEY, await freeSlot(partition)), pt: { S: partition } },
          ConditionExpression: "attribute_not_exists(p) OR pt = :pt",
          ExpressionAttributeValues: { ":pt": { S: partition } },
        },
      });
    }
    for (const [stream, { from, to }] of touched) {
      // An update, not a put: the item may carry the stream's parking mark (`pk`).
      const values: Record<string, AttributeValue> = {
        ":to": { N: String(to) },
        ":pt": { S: partition },
        ":ep": { N: String(tip.epoch) },
      };
      if (from?.indexed) values[":n"] = { N: String(from.version) };
      actions.push({
        Update: {
          TableName: indexTable,
          Key: key(`$stream#${stream}`, 0),
          UpdateExpression: "SET n = :to, pt = :pt, ep = :ep",
          ConditionExpression: from?.indexed ? "n = :n" : "attribute_not_exists(n)",
          ExpressionAttributeValues: values,
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
      if (
        e instanceof TransactionCanceledException &&
        (e.CancellationReasons ?? []).some((r) => r.Code === "ValidationError")
      ) throw new RefusedWrite(e);
      throw e;
    }
  }

  // The slot under PARTITIONS_KEY for a partition: its hash's, or the next one up not held by
  // another partition (a collision). A writer taking the same slot meanwhile for another
  // partition fails the transaction's condition, which is retried from a fresh read.
  async function freeSlot(partition: string): Promise<number> {
    for (let slot = await partitionSlot(partition);; slot++) {
      const { Item } = await client.send(
        new GetItemCommand({
          TableName: indexTable,
          Key: key(PARTITIONS_KEY, slot),
          ConsistentRead: true,
        }),
      );
      if (Item === undefined || Item.pt?.S === partition) return slot;
    }
  }

  // Whether the events table holds `a` as the append at its version: the item there has its
  // range, time and types, and the stream's tip covers it (an item past the tip is another
  // writer's).
  async function confirmed(a: AppendSummary): Promise<boolean> {
    const get = async (i: number) =>
      (await client.send(
        new GetItemCommand({
          TableName: eventTable!,
          Key: { p: { S: a.stream }, i: { N: String(i) } },
          ConsistentRead: true,
        }),
      )).Item;
    const [item, streamTip] = await Promise.all([get(a.index), get(-1)]);
    const image = inspectAppend(item);
    const version = Number(streamTip?.n?.N ?? Number.NaN);
    const ok = image.kind === "append" && image.append.next === a.next &&
      image.append.time === a.time && image.append.types.length === a.types.length &&
      image.append.types.every((t, k) => t === a.types[k]) && version >= a.next;
    if (!ok) {
      log.warn(
        "the events table does not confirm the append of {stream} at version {index}: " +
          "not indexed, it stays parked",
        { stream: a.stream, index: a.index },
      );
    }
    return ok;
  }

  // A gap parked under "warn" is resolved once its stream's indexed version covers it (its own
  // record, confirmed, or others' filled it): its $parked item and its mark in `gw` go.
  async function resolveGaps(
    appends: readonly AppendSummary[],
    streams: ReadonlyMap<string, StreamState>,
  ): Promise<void> {
    for (const stream of new Set(appends.map((a) => a.stream))) {
      const state = streams.get(stream);
      for (const at of state?.gapsWaiting ?? []) {
        if (state === undefined || at >= state.version) continue;
        const parkedKey = key(PARKED_KEY, await parkedSortKey({ stream, index: at, key: GAP_KEY }));
        const { Item } = await client.send(
          new GetItemCommand({ TableName: indexTable, Key: parkedKey, ConsistentRead: true }),
        );
        if (Item?.n?.N !== undefined && Number(Item.n.N) > state.version) continue;
        await client.send(new DeleteItemCommand({ TableName: indexTable, Key: parkedKey }));
        await client.send(
          new UpdateItemCommand({
            TableName: indexTable,
            Key: key(`$stream#${stream}`, 0),
            UpdateExpression: "DELETE gw :at",
            ExpressionAttributeValues: { ":at": { NS: [String(at)] } },
          }),
        );
        log.info("index gap of {stream} at version {index} resolved: indexed to {version}", {
          stream,
          index: at,
          version: state.version,
        });
      }
    }
  }

  // Records set aside since creation, newest last, for problems().
  const recent: SourceProblem[] = [];

  // Whether the index holds the record's stream past it (its index below the indexed version,
  // and its end too if known): then it hides no hole and parking it would stop a healthy stream.
  async function below(r: Park): Promise<number | undefined> {
    if (r.stream === undefined || r.index === undefined || !indexable(r.stream)) return undefined;
    const { Item } = await client.send(
      new GetItemCommand({
        TableName: indexTable,
        Key: key(`$stream#${r.stream}`, 0),
        ConsistentRead: true,
      }),
    );
    const version = Item?.n?.N === undefined ? undefined : Number(Item.n.N);
    return version !== undefined && r.index < version && (r.next === undefined || r.next <= version)
      ? version
      : undefined;
  }

  // Keeps each record in the index table (keyed by a hash of its stream and index, so that a
  // replay parks it again in place) and marks its stream parked from its index on (unless
  // `mark` is false). A record below its stream's indexed version is logged and dropped instead.
  // Returns the records parked.
  async function park(parks: readonly Park[]): Promise<Park[]> {
    const kept: Park[] = [];
    for (const r of parks) {
      const version = await below(r);
      if (version !== undefined) {
        log.warn(
          "index dropped a record of {stream} at version {index}, below its indexed version " +
            "{version}: {reason}",
          { stream: r.stream, index: r.index, version, reason: r.reason },
        );
        continue;
      }
      kept.push(r);
      const time = Date.now();
      const item: Record<string, AttributeValue> = {
        ...key(PARKED_KEY, await parkedSortKey(r)),
        r: { S: r.reason },
        ts: { N: String(time) },
      };
      if (r.stream !== undefined) item.s = { S: r.stream };
      if (r.index !== undefined) item.x = { N: String(r.index) };
      if (r.next !== undefined) item.n = { N: String(r.next) };
      if (r.partition !== undefined) item.pt = { S: r.partition };
      await client.send(new PutItemCommand({ TableName: indexTable, Item: item }));
      if (
        r.mark === false && r.key === GAP_KEY && r.stream !== undefined &&
        r.index !== undefined && indexable(r.stream)
      ) {
        // A gap parked without parking its stream: appends at this version are confirmed first.
        await client.send(
          new UpdateItemCommand({
            TableName: indexTable,
            Key: key(`$stream#${r.stream}`, 0),
            UpdateExpression: "ADD gw :at",
            ExpressionAttributeValues: { ":at": { NS: [String(r.index)] } },
          }),
        );
      }
      if (
        r.mark !== false && r.stream !== undefined && r.index !== undefined && indexable(r.stream)
      ) {
        try {
          await client.send(
            new UpdateItemCommand({
              TableName: indexTable,
              Key: key(`$stream#${r.stream}`, 0),
              UpdateExpression: "SET pk = :pk",
              ConditionExpression: "attribute_not_exists(pk) OR pk > :pk",
              ExpressionAttributeValues: { ":pk": { N: String(r.index) } },
            }),
          );
        } catch (e) {
          if (!(e instanceof ConditionalCheckFailedException)) throw e;
        }
      }
      const where = `${r.stream === undefined ? "an unnamed stream" : JSON.stringify(r.stream)}` +
        (r.index === undefined ? "" : ` at version ${r.index}`);
      log.error("index parked an append of {where}: {reason}", { where, reason: r.reason });
      recent.push({
        severity: "degraded",
        reason: `parked an append of ${where}: ${r.reason}`,
        since: time,
        tranche: r.partition,
      });
      if (recent.length > 100) recent.shift();
    }
    return kept;
  }

  async function parked(): Promise<ParkedRecord[]> {
    const out: ParkedRecord[] = [];
    let start: Record<string, AttributeValue> | undefined;
    do {
      const res: QueryCommandOutput = await client.send(
        new QueryCommand({
          TableName: indexTable,
          KeyConditionExpression: "p = :p",
          ExpressionAttributeValues: { ":p": { S: PARKED_KEY } },
          ConsistentRead: true,
          ExclusiveStartKey: start,
        }),
      );
      for (const item of res.Items ?? []) {
        out.push({
          stream: item.s?.S,
          index: item.x?.N === undefined ? undefined : Number(item.x.N),
          next: item.n?.N === undefined ? undefined : Number(item.n.N),
          partition: item.pt?.S,
          reason: item.r?.S ?? "",
          time: num(item.ts),
        });
      }
      start = res.LastEvaluatedKey;
    } while (start);
    return out;
  }

  async function ingestSorted(
    appends: readonly AppendSummary[],
    parks: Park[],
  ): Promise<IngestResult> {
    const byPartition = new Map<string, AppendSummary[]>();
    for (const append of appends) {
      const problem = checkSummary(append);
      if (problem !== undefined) {
        parks.push({ ...partOf(append), reason: problem, malformed: true });
        continue;
      }
      let partition: unknown;
      try {
        partition = partitionOf(append.stream);
      } catch (e) {
        parks.push({ ...partOf(append), reason: `partitionOf failed: ${errorText(e)}` });
        continue;
      }
      if (
        typeof partition !== "string" || partition.length === 0 ||
        utf8.encode(partition).length > MAX_PARTITION_BYTES
      ) {
        parks.push({
          ...partOf(append),
          reason: `partitionOf must return a non-empty string of at most ${MAX_PARTITION_BYTES} ` +
            `bytes, got ${describe(partition)}`,
        });
        continue;
      }
      let list = byPartition.get(partition);
      if (!list) byPartition.set(partition, list = []);
      list.push(append);
    }
    const kept = await park(parks);
    // Where this batch parks a stream: its appends from there on are parked too.
    const parkedFrom = new Map<string, number>();
    for (const r of kept) {
      if (r.stream === undefined || r.index === undefined) continue;
      parkedFrom.set(r.stream, Math.min(r.index, parkedFrom.get(r.stream) ?? Infinity));
    }
    const total = {
      entries: 0,
      events: 0,
      duplicateEvents: 0,
      gaps: 0,
      epochsClosed: 0,
      parked: kept.length,
      malformed: kept.filter((r) => r.malformed).length,
      dropped: parks.length - kept.length,
    };
    // Partitions are independent; indexing them at once keeps a Lambda invocation short.
    const results = await Promise.all(
      [...byPartition].map(([p, list]) => ingestPartition(p, list, parkedFrom)),
    );
    for (const r of results) {
      total.entries += r.entries;
      total.events += r.events;
      total.duplicateEvents += r.duplicateEvents;
      total.gaps += r.gaps;
      total.epochsClosed += r.epochsClosed;
      total.parked += r.parked;
      total.dropped += r.dropped;
    }
    return total;
  }

  async function ingestAppends(appends: readonly AppendSummary[]): Promise<IngestResult> {
    if (!Array.isArray(appends)) throw new InvalidArgumentError("appends", "must be an array");
    return await ingestSorted(appends, []);
  }

  async function ingest(records: readonly StreamRecordLike[]): Promise<IngestResult> {
    if (!Array.isArray(records)) throw new InvalidArgumentError("records", "must be an array");
    const appends: AppendSummary[] = [];
    const parks: Park[] = [];
    for (const record of records) {
      if (record?.eventName !== "INSERT") continue;
      const image = inspectAppend(record.dynamodb?.NewImage);
      if (image.kind === "append") appends.push(image.append);
      else if (image.kind === "malformed") {
        const { stream, index, next, problem } = image;
        parks.push({
          stream,
          index,
          next,
          reason: `malformed append item: ${problem}`,
          malformed: true,
        });
      }
    }
    return await ingestSorted(appends, parks);
  }

  return {
    ingest,
    ingestAppends,
    tip: async (partition) => {
      const { epoch, offset, bytes, streams } = await tip(partition);
      return { epoch, offset, bytes, streams };
    },
    parked,
    problems: () => [...recent],
    options: resolved,
  };
}

/** A record to park: what is known of it, and why. */
interface Park {
  readonly stream?: string;
  readonly index?: number;
  readonly next?: number;
  readonly partition?: string;
  readonly reason: string;
  /**
   * What keys its `$parked` item with the stream and index (default: the reason), so that the
   * same record parked again lands on the same item.
   */
  readonly key?: string;
  /** Whether to park the stream from `index` on (default true; false for gaps under "warn"). */
  readonly mark?: boolean;
  /** The record could not be read as an append at all. */
  readonly malformed?: boolean;
}

// The index table's partition-key value of the parked records.
const PARKED_KEY = "$parked";
// The key of a gap parked under onGap "warn" (whatever its reason's wording): one item per
// stream and version, found again when the gap is resolved.
const GAP_KEY = "index gap";
// Gaps one stream may hold under onGap "warn" (kept in the `gw` set of its item).
const MAX_GAPS_WAITING = 100;
// A partition id goes into epoch and tip keys: keep them well below DynamoDB's 2 048 bytes.
const MAX_PARTITION_BYTES = 1_024;

// A parked record's sort key: 48 bits of a hash of its stream and index (a number key, since
// the index table's sort key is one), so that parking the same record again overwrites it.
async function parkedSortKey(
  r: Pick<Park, "stream" | "index" | "key"> & { readonly reason?: string },
): Promise<number> {
  const text = `${r.stream ?? ""}\u0000${r.index ?? ""}\u0000${r.key ?? r.reason}`;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8.encode(text)));
  return digest.slice(0, 6).reduce((n, b) => n * 256 + b, 0);
}

function partOf(a: AppendSummary): Pick<Park, "stream" | "index" | "next"> {
  const known = (n: unknown) => typeof n === "number" && Number.isInteger(n) ? n : undefined;
  return {
    stream: typeof a?.stream === "string" ? a.stream : undefined,
    index: known(a?.index),
    next: known(a?.next),
  };
}

function indexable(stream: string): boolean {
  try {
    checkDynamoStreamName(stream);
    return true;
  } catch {
    return false;
  }
}

// What makes a caller's summary unindexable, if anything (the checks of inspectAppend).
function checkSummary(a: AppendSummary): string | undefined {
  if (a === null || typeof a !== "object") return "not an append summary";
  if (typeof a.stream !== "string") return "stream is not a string";
  try {
    checkDynamoStreamName(a.stream);
  } catch (e) {
    return errorText(e);
  }
  if (!Number.isInteger(a.index) || a.index < 0) return "index is not a non-negative integer";
  if (!Number.isInteger(a.next) || a.next <= a.index) return "next is not an integer above index";
  if (!Array.isArray(a.types) || a.types.length !== a.next - a.index) {
    return `types does not hold next - index = ${a.next - a.index} types`;
  }
  for (const t of a.types) {
    if (typeof t !== "string" || t.length === 0 || utf8.encode(t).length > MAX_EVENT_TYPE_BYTES) {
      return `types holds ${describe(t)}, not a type of 1 to ${MAX_EVENT_TYPE_BYTES} bytes`;
    }
  }
  if (typeof a.time !== "number" || !Number.isFinite(a.time)) return "time is not a number";
  return undefined;
}

/** A partition's tip as read: the open epoch, its entry count, bytes and streams. */
interface TipState {
  readonly exists: boolean;
  readonly epoch: number;
  readonly offset: number;
  readonly bytes: number;
  readonly streams: number;
}

/** What one transaction writes: a chunk of entries, whether it closes the epoch, the new tip. */
interface Packed {
  readonly chunk: PlannedEntry[];
  readonly close: boolean;
  readonly next: Omit<TipState, "exists">;
  /** Per stream in the chunk: its state before, and the version it reaches. */
  readonly touched: Map<string, { from: StreamState | undefined; to: number }>;
}

// Packs entries from `k` into one transaction: as many as fit the open epoch (entries, bytes,
// streams) and the transaction's budget (streams per write, chunk bytes). An entry that does
// not fit the epoch closes it.
function packChunk(
  partition: string,
  tip: TipState,
  streams: ReadonlyMap<string, StreamState>,
  entries: readonly PlannedEntry[],
  k: number,
  limits: Pick<DynamoIndexer["options"], "maxEpochEntries" | "maxEpochBytes" | "maxEpochStreams">,
): Packed {
  const chunk: PlannedEntry[] = [];
  const touched = new Map<string, { from: StreamState | undefined; to: number }>();
  let chunkBytes = 0, newStreams = 0, close = false;
  for (; k < entries.length; k++) {
    const entry = entries[k];
    const size = entrySize(entry);
    const known = touched.has(entry.stream) ||
      (streams.get(entry.stream)?.partition === partition &&
        streams.get(entry.stream)?.epoch === tip.epoch);
    const fits = tip.offset + chunk.length === 0 || (
      tip.offset + chunk.length + 1 <= limits.maxEpochEntries &&
      tip.bytes + chunkBytes + size <= limits.maxEpochBytes &&
      tip.streams + newStreams + (known ? 0 : 1) <= limits.maxEpochStreams
    );
    if (!fits) {
      close = true;
      break;
    }
    if (!touched.has(entry.stream) && touched.size >= MAX_STREAMS_PER_WRITE) break;
    if (chunk.length > 0 && chunkBytes + size > MAX_CHUNK_BYTES) break;
    chunk.push(entry);
    chunkBytes += size;
    if (!known) newStreams++;
    const prior = touched.get(entry.stream);
    touched.set(entry.stream, {
      from: prior ? prior.from : streams.get(entry.stream),
      to: entry.next,
    });
  }
  const next = close ? { epoch: tip.epoch + 1, offset: 0, bytes: 0, streams: 0 } : {
    epoch: tip.epoch,
    offset: tip.offset + chunk.length,
    bytes: tip.bytes + chunkBytes,
    streams: tip.streams + newStreams,
  };
  return { chunk, close, next, touched };
}

interface StreamState {
  readonly version: number;
  /** Whether the index holds a version for the stream (its item may only carry `pk`). */
  readonly indexed: boolean;
  /** The stream is parked from this index on (see ParkedRecord). */
  readonly parkedAt?: number;
  /** Under onGap "warn": the versions where a gapped append of the stream is parked (`gw`). */
  readonly gapsWaiting?: readonly number[];
  readonly partition: string | undefined;
  readonly epoch: number;
}

class LostRace extends Error {
  constructor(cause: unknown) {
    super("index write lost a race", { cause });
  }
}

// DynamoDB refused an index write as invalid (a ValidationError among the cancellation reasons,
// such as an item of the index grown past 400 KB by another writer): retrying would refuse it.
class RefusedWrite extends Error {
  constructor(cause: TransactionCanceledException) {
    super(cause.message, { cause });
  }
}

/** An entry to write (the planned chunks' element type). */
type PlannedEntry = IndexEntry;

// Entries stay well inside a chunk item however many events one append held.
const MAX_ENTRY_EVENTS = 2000;
const MAX_ENTRY_BYTES = MAX_CHUNK_BYTES;
// An entry's JSON besides its stream and types: brackets, commas, index, next and time.
const ENTRY_NUMBERS_BYTES = 64;

// Drops what is already indexed, trims partial overlaps, spots gaps, and coalesces consecutive
// appends of a stream into one entry (so an entry is usually "everything this stream got").
// An append that starts beyond its stream's version is returned in `gapped` and not indexed
// (nor are the stream's later appends in the batch, which are then gaps too).
function classify(
  appends: readonly AppendSummary[],
  streams: ReadonlyMap<string, StreamState>,
): {
  entries: PlannedEntry[];
  events: number;
  duplicateEvents: number;
  gapped: { append: AppendSummary; expected: number }[];
} {
  // By stream, and within a stream in the order given (the sort is stable): an append given
  // before the ones that fill its hole stays a gap, so that it cannot be indexed in the place
  // of an append written after it.
  const sorted = [...appends].sort((a, b) =>
    a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : 0
  );
  const version = new Map<string, number>();
  type Building = {
    stream: string;
    index: number;
    next: number;
    types: string[];
    time: number;
    /** The entry's JSON bytes so far. */
    bytes: number;
  };
  const open = new Map<string, Building>();
  const typeSizes = new Map<string, number>();
  const typeSize = (type: string): number => {
    let size = typeSizes.get(type);
    if (size === undefined) {
      typeSizes.set(type, size = utf8.encode(JSON.stringify(type)).length + 1);
    }
    return size;
  };
  const order: Building[] = [];
  const gapped: { append: AppendSummary; expected: number }[] = [];
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
    if (from < v) {
      duplicateEvents += v - from;
      from = v;
    } else if (from > v) {
      gapped.push({ append: a, expected: v });
      continue;
    }
    events += a.next - from;
    // Entries are cut at MAX_ENTRY_EVENTS events and MAX_ENTRY_BYTES of JSON, so that an
    // entry always fits a chunk item on its own however long the types.
    for (let at = from; at < a.next;) {
      let entry = open.get(a.stream);
      const size = typeSize(a.types[at - a.index]);
      if (
        !entry || entry.next !== at || entry.types.length >= MAX_ENTRY_EVENTS ||
        entry.bytes + size > MAX_ENTRY_BYTES
      ) {
        const bytes = utf8.encode(JSON.stringify(a.stream)).length + ENTRY_NUMBERS_BYTES;
        entry = { stream: a.stream, index: at, next: at, types: [], time: a.time, bytes };
        open.set(a.stream, entry);
        order.push(entry);
      }
      while (at < a.next && entry.types.length < MAX_ENTRY_EVENTS) {
        const size = typeSize(a.types[at - a.index]);
        if (entry.types.length > 0 && entry.bytes + size > MAX_ENTRY_BYTES) break;
        entry.types.push(a.types[at - a.index]);
        entry.bytes += size;
        at++;
      }
      entry.next = at;
      entry.time = Math.max(entry.time, a.time);
    }
    version.set(a.stream, a.next);
  }
  order.sort((x, y) => firstSeen.get(x.stream)! - firstSeen.get(y.stream)! || x.index - y.index);
  return { entries: order, events, duplicateEvents, gapped };
}

// The UTF-8 bytes an entry takes in a chunk's JSON (with its separating comma): what counts
// towards DynamoDB's item limit, escapes and multi-byte text included.
function entrySize(e: IndexEntry): number {
  return utf8.encode(encodeEntries([e])).length - 1;
}

const utf8 = new TextEncoder();

function key(p: string, i: number): Record<string, AttributeValue> {
  return { p: { S: p }, i: { N: String(i) } };
}

function num(value: AttributeValue | undefined): number {
  return value?.N === undefined ? 0 : Number(value.N);
}
