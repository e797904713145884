/**
 * The format of the index that makes a DynamoDB event table readable in order: the layout of the
 * index table, its keys and the encoding of its entries. The indexer (`stores/dynamo-indexer.ts`)
 * writes it and the source (`sources/dynamo.ts`) reads it; this module loads neither the
 * indexer's code nor the DynamoDB Streams client.
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
 * @module
 */
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
 * The index table's partition-key value of the set of partitions in use.
 *
 * @example
 * ```ts
 * import { DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";
 * import { PARTITIONS_KEY } from "@impel/impel/stores/dynamo-index";
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
 * import { createIndexTable } from "@impel/impel/stores/dynamo-index";
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
 * import { decodeEntries, encodeEntries } from "@impel/impel/stores/dynamo-index";
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
 * import { decodeEntries } from "@impel/impel/stores/dynamo-index";
 * decodeEntries('[["A-1",0,2,["X","Y"],5]]'); // [{ stream: "A-1", index: 0, next: 2, types: ["X", "Y"], time: 5 }]
 * ```
 */
export function decodeEntries(json: string): IndexEntry[] {
  const tuples = JSON.parse(json) as [string, number, number, string[], number][];
  return tuples.map(([stream, index, next, types, time]) => ({ stream, index, next, types, time }));
}
