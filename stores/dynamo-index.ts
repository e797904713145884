/**
 * The format of the index that makes a DynamoDB event table readable in order: the layout of the
 * index table, its keys and the encoding of its entries. The indexer (`stores/dynamo-indexer.ts`)
 * writes it and the source (`sources/dynamo.ts`) reads it; this module loads neither the
 * indexer's code nor the DynamoDB Streams client.
 *
 * Index table layout (partition key `p`, number sort key `i`):
 * - `$partitions` / slot: one item per partition in use, its id in `pt`; the slot is a 48-bit
 *   hash of the id plus one ({@linkcode partitionSlot}), the next one up on a collision. (Indexes
 *   written before this layout hold every id in one string set `ps` at `$partitions` / 0, which
 *   400 KB bounds to about 400 ids of 1 000 bytes: readers still read it, with the items, and
 *   nothing writes it any more. {@linkcode listPartitions} reads both.)
 * - `$tip#{partition}` / 0: the open epoch `ep`, its entry count `o`, bytes `b` and streams `s`;
 * - `$epoch#{partition}#{epoch}` / offset: a chunk of entries (JSON `j`, count `c`) starting at
 *   that offset; `/ 1e6` ({@linkcode EPOCH_FACTOR}): the end marker, written when the epoch
 *   closes, with its final count `c` (it sorts after every chunk, so the query that reads the
 *   last chunks also tells whether the epoch is closed);
 * - `$stream#{stream}` / 0: the next version `n` indexed for the stream, and the partition `pt`
 *   and epoch `ep` it was last indexed in;
 * - `$shard#{table}#{shard}` / 0: how far the streams runner got in a DynamoDB Streams shard.
 *
 * @module
 */
import {
  type AttributeValue,
  type DynamoDBClient,
  QueryCommand,
  type QueryCommandOutput,
} from "@aws-sdk/client-dynamodb";
import { ImpelError } from "../core/errors.ts";
import { type DynamoClient, ensureTable } from "./dynamo.ts";
import type { StreamName } from "../core/streamName.ts";

/**
 * Checkpoint positions of the dynamo source are `epoch * EPOCH_FACTOR + offset`.
 *
 * @example
 * ```ts
 * import { EPOCH_FACTOR } from "@impel/impel/stores/dynamo-index";
 * const checkpoint = 3_000_017n; // as stored by a dynamoSource
 * const epoch = checkpoint / BigInt(EPOCH_FACTOR); // 3n
 * const offset = checkpoint % BigInt(EPOCH_FACTOR); // 17n: the next entry of epoch 3 to read
 * console.log(epoch, offset);
 * ```
 */
export const EPOCH_FACTOR = 1_000_000;

/**
 * One index entry: a stream advanced over `[index, next)` with events of these types.
 *
 * @example
 * ```ts
 * import { decodeEntries, type IndexEntry } from "@impel/impel/stores/dynamo-index";
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
 * The index table's partition-key value of an epoch's items.
 *
 * @example
 * ```ts
 * import { epochKey } from "@impel/impel/stores/dynamo-index";
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
 * import { tipKey } from "@impel/impel/stores/dynamo-index";
 * tipKey("0"); // "$tip#0"
 * ```
 */
export function tipKey(partition: string): string {
  return `$tip#${partition}`;
}

/**
 * The index table's partition-key value of the items that list the partitions in use (one per
 * partition; see {@linkcode listPartitions}).
 *
 * @example
 * ```ts
 * import { DynamoDBClient, QueryCommand } from "@aws-sdk/client-dynamodb";
 * import { PARTITIONS_KEY } from "@impel/impel/stores/dynamo-index";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const { Items } = await client.send(
 *   new QueryCommand({
 *     TableName: "events-index",
 *     KeyConditionExpression: "p = :p",
 *     ExpressionAttributeValues: { ":p": { S: PARTITIONS_KEY } },
 *   }),
 * );
 * console.log(Items?.map((item) => item.pt?.S)); // e.g. ["0"]: the first page of partitions
 * ```
 */
export const PARTITIONS_KEY = "$partitions";

/**
 * The sort key under {@linkcode PARTITIONS_KEY} where a partition is first looked for: one plus
 * 48 bits of the SHA-256 of its id (never 0, where the old set lives). Two ids with the same
 * slot are told apart by `pt`: the second takes the next free slot up.
 *
 * @example
 * ```ts
 * import { partitionSlot } from "@impel/impel/stores/dynamo-index";
 * const slot = await partitionSlot("Order");
 * console.log(slot >= 1 && slot <= 2 ** 48); // true
 * ```
 */
export async function partitionSlot(partition: string): Promise<number> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(partition)),
  );
  return digest.slice(0, 6).reduce((n, b) => n * 256 + b, 0) + 1;
}

/**
 * Every partition the index lists, sorted: one item per partition under
 * {@linkcode PARTITIONS_KEY}, read page by page, and the string set of indexes written before
 * that layout (read, never written).
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { listPartitions } from "@impel/impel/stores/dynamo-index";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const partitions = await listPartitions(client, "events-index");
 * console.log(partitions); // e.g. ["0"]: the tranches a dynamoSource reads
 * ```
 */
export async function listPartitions(
  dynamo: DynamoClient,
  indexTable: string,
  options: { readonly consistentRead?: boolean; readonly signal?: AbortSignal } = {},
): Promise<string[]> {
  // The one cast at this boundary: DynamoClient only narrows the SDK client callers pass.
  const client = dynamo as DynamoDBClient;
  const found = new Set<string>();
  let start: Record<string, AttributeValue> | undefined;
  do {
    const page: QueryCommandOutput = await client.send(
      new QueryCommand({
        TableName: indexTable,
        KeyConditionExpression: "p = :p",
        ExpressionAttributeValues: { ":p": { S: PARTITIONS_KEY } },
        ConsistentRead: options.consistentRead ?? true,
        ExclusiveStartKey: start,
      }),
      { abortSignal: options.signal },
    );
    for (const item of page.Items ?? []) {
      if (item.pt?.S !== undefined) found.add(item.pt.S);
      for (const id of item.ps?.SS ?? []) found.add(id);
    }
    start = page.LastEvaluatedKey;
  } while (start);
  return [...found].sort();
}

/**
 * Creates the index table unless it exists (on-demand billing); waits until it is active.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createIndexTable } from "@impel/impel/stores/dynamo-index";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
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
 * import { decodeEntries, encodeEntries } from "@impel/impel/stores/dynamo-index";
 * const json = encodeEntries([{ stream: "A-1", index: 0, next: 1, types: ["T"], time: 5 }]);
 * decodeEntries(json); // [{ stream: "A-1", index: 0, next: 1, types: ["T"], time: 5 }]
 * ```
 */
export function encodeEntries(entries: readonly IndexEntry[]): string {
  return JSON.stringify(entries.map((e) => [e.stream, e.index, e.next, e.types, e.time]));
}

/**
 * The index breaks one of its invariants: a chunk that does not decode or whose count is wrong,
 * chunks that overlap or leave a hole, an epoch whose end marker is missing or miscounted.
 * Readers raise it rather than skip or stall; it names where the damage is. Recovery is an
 * operator's: rebuild the damaged epoch from the events table (or restore the index table).
 *
 * @example
 * ```ts
 * import { DynamoIndexCorruptError } from "@impel/impel/stores/dynamo-index";
 * const e = new DynamoIndexCorruptError("0", 3, 40, "the chunk holds 9 entries, its count says 10");
 * console.log(e.code, e.message);
 * // "DynamoIndexCorrupt" "index partition 0, epoch 3, offset 40: the chunk holds 9 entries, ..."
 * ```
 */
export class DynamoIndexCorruptError extends ImpelError {
  /** The index partition. */
  readonly partition: string;
  /** The epoch. */
  readonly epoch: number;
  /** The offset of the chunk concerned, if one. */
  readonly offset: number | undefined;
  /** Creates the error; `problem` says what is wrong. */
  constructor(partition: string, epoch: number, offset: number | undefined, problem: string) {
    super(
      "DynamoIndexCorrupt",
      `index partition ${partition}, epoch ${epoch}${
        offset === undefined ? "" : `, offset ${offset}`
      }: ${problem}`,
    );
    this.partition = partition;
    this.epoch = epoch;
    this.offset = offset;
  }
}

/**
 * An index partition's entries skip or repeat versions of a stream: the entry at `offset` starts
 * at `actual` where the partition's earlier entries for the stream had reached `expected`
 * (`"gap"`: versions `expected` to `actual - 1` were never indexed; `"repeat"`: versions from
 * `actual` were indexed before). The indexer never writes either, so the index is damaged (or
 * the stream's partition changed while the source ran). The source hands it to the failure
 * policy of that stream alone, as an invalid record (for a gap, one for each missing version;
 * for a repeat, the stream's next event after it), and the other streams carry on.
 *
 * @example
 * ```ts
 * import { DynamoIndexOrderError } from "@impel/impel/stores/dynamo-index";
 * const e = new DynamoIndexOrderError("gap", "Order-1", 2, 5, { partition: "0", epoch: 3, offset: 40 });
 * console.log(e.code, e.kind, e.expected, e.actual); // "DynamoIndexOrder" "gap" 2 5
 * ```
 */
export class DynamoIndexOrderError extends ImpelError {
  /** Whether versions were skipped or indexed again. */
  readonly kind: "gap" | "repeat";
  /** The stream concerned. */
  readonly stream: StreamName;
  /** The version the stream's earlier entries in the partition had reached. */
  readonly expected: number;
  /** Where the entry starts. */
  readonly actual: number;
  /** The index partition. */
  readonly partition: string;
  /** The epoch of the entry. */
  readonly epoch: number;
  /** The entry's offset in its epoch. */
  readonly offset: number;
  /** Creates the error for the entry at `where`. */
  constructor(
    kind: "gap" | "repeat",
    stream: StreamName,
    expected: number,
    actual: number,
    where: { readonly partition: string; readonly epoch: number; readonly offset: number },
  ) {
    super(
      "DynamoIndexOrder",
      `index partition ${where.partition}, epoch ${where.epoch}, offset ${where.offset}: the ` +
        `entry of ${JSON.stringify(stream.slice(0, 200))} starts at version ${actual} where the ` +
        `partition's entries had reached ${expected}: ` +
        (kind === "gap"
          ? `versions ${expected} to ${actual - 1} are missing from the index`
          : `versions from ${actual} are indexed again`),
    );
    this.kind = kind;
    this.stream = stream;
    this.expected = expected;
    this.actual = actual;
    this.partition = where.partition;
    this.epoch = where.epoch;
    this.offset = where.offset;
  }
}

/**
 * Decodes a chunk's entries; the inverse of {@linkcode encodeEntries}. Anything but a list of
 * well-formed entries (one type per event) throws {@linkcode DynamoIndexCorruptError}, located
 * by `where` when given.
 *
 * @example
 * ```ts
 * import { decodeEntries } from "@impel/impel/stores/dynamo-index";
 * decodeEntries('[["A-1",0,2,["X","Y"],5]]'); // [{ stream: "A-1", index: 0, next: 2, types: ["X", "Y"], time: 5 }]
 * ```
 */
export function decodeEntries(
  json: string,
  where: { partition: string; epoch: number; offset: number } = {
    partition: "?",
    epoch: 0,
    offset: 0,
  },
): IndexEntry[] {
  const corrupt = (problem: string) =>
    new DynamoIndexCorruptError(where.partition, where.epoch, where.offset, problem);
  let tuples: unknown;
  try {
    tuples = JSON.parse(json);
  } catch (e) {
    throw corrupt(`the chunk's JSON does not parse (${(e as Error).message})`);
  }
  if (!Array.isArray(tuples)) throw corrupt("the chunk's JSON is not a list of entries");
  return tuples.map((t: unknown, k): IndexEntry => {
    const [stream, index, next, types, time] = Array.isArray(t) ? t : [];
    const ok = typeof stream === "string" && Number.isInteger(index) && index >= 0 &&
      Number.isInteger(next) && next > index && Array.isArray(types) &&
      types.length === next - index && types.every((x) => typeof x === "string") &&
      typeof time === "number";
    if (!ok) {
      throw corrupt(
        `entry ${k} is not [stream, index, next, types (one per event), time]: ` +
          JSON.stringify(t).slice(0, 200),
      );
    }
    return { stream, index, next, types, time };
  });
}
