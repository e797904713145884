/**
 * Reads a DynamoDB event store in order through the index of appends that
 * `stores/dynamo-indexer.ts` builds (in the format of `stores/dynamo-index.ts`) from the table's DynamoDB Stream.
 *
 * - Each index partition is a tranche, read epoch by epoch, chunk by chunk. A batch's position
 *   is `epoch * 1e6 + offset` (the next entry to read), so checkpoints order naturally.
 * - With `eventTable`, each entry's events are read from the events table and batches carry
 *   full events; without it, batches are index-only: events carry their index, type and time,
 *   with `data` and `meta` undefined and an `id` of `{stream}@{index}` (for reactors that only
 *   need to know that a stream changed, at a fraction of the cost).
 * - It is an adapter over the paged-tranche reader of `core/reader.ts` (start policy,
 *   announcement, tail rule, tail sleep, retries, partition discovery through `readTranches`).
 * - When a read reaches the end of the open epoch, the batch says `isTail` (an empty batch is
 *   sent if there was nothing new), and the reader sleeps `tailSleepMs` before polling again.
 *   A closed epoch's end marker moves the reader on to the next epoch. A chunk that is not yet
 *   visible after a visible one (eventually consistent reads) ends the page there, as the tail.
 * - With `maxBatchItems`, a read is handed on as batches of at most that many events, each
 *   checkpointing at the entry it ends in (an entry cut in two is read again from its start on
 *   a resume: at least once, deduplicated by the scheduler).
 * - Each partition's first batch, sent before its first read, is empty, not at the tail and
 *   without `commit`, at the start position: it makes the partition known to the sink, so that
 *   waiting for every tranche's tail also waits for a partition whose first read is slow.
 * - Partitions are found in the index (and looked for again periodically) unless `tranches`
 *   names them.
 * - `startFrom: "tail"` (or `whenNoCheckpoint: "tail"`) starts the partitions there are at start
 *   at their tip; a partition found while the source runs is read from its first epoch (it was
 *   made after the start: its tip would skip what was indexed into it before it was found). A
 *   stored checkpoint beyond the tip is refused at start ({@linkcode CheckpointPastTailError}).
 * - Failures that look transient (throttling, 5xx, lost connections) are retried with backoff
 *   (`retry`) from the same position, the index reads and each stream's event reads alike; other
 *   failures (a `TypeError` other than fetch's "fetch failed" is a bug) error the stream. Every
 *   retried failure is logged, and a partition whose reads keep failing shows in the stream's
 *   `problems()`, degraded and then failing, since the first failure.
 * - A damaged index partition ({@linkcode DynamoIndexCorruptError}: a chunk that does not decode,
 *   a hole, an overlap, a wrong end marker) stops that partition only: it is logged as an error
 *   and shows in `problems()` as failing (so `/health` and a fault policy's `maxSourceFailureMs`
 *   see it), its checkpoint stays before the damage, and the other partitions carry on. Repair
 *   the partition, then restart the source.
 * - Within a partition each stream's entries must follow on (`trackedStreams`): an entry that
 *   skips a stream's versions or repeats them fails that stream alone with
 *   {@linkcode DynamoIndexOrderError}, through its failure policy, and the others carry on.
 *
 * @module
 */
import {
  type DynamoDBClient,
  GetItemCommand,
  QueryCommand,
  type QueryCommandOutput,
} from "@aws-sdk/client-dynamodb";
import type { BatchItem, ObservableSource, Position } from "../core/batch.ts";
import type { CheckpointStore } from "../core/checkpoints.ts";
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import type { StreamEvent } from "../core/event.ts";
import type { RetryOptions } from "../core/failure.ts";
import { pagedSource, type ReadContext, type ReadPage, type StartFrom } from "../core/reader.ts";
import {
  checkDynamoStreamName,
  checkTableName,
  type DynamoClient,
  type DynamoEventStore,
  dynamoStore,
  isTransientDynamoError,
} from "../stores/dynamo.ts";
import {
  decodeEntries,
  DynamoIndexCorruptError,
  DynamoIndexOrderError,
  EPOCH_FACTOR,
  epochKey,
  type IndexEntry,
  listPartitions,
  tipKey,
} from "../stores/dynamo-index.ts";

export { CheckpointPastTailError } from "../core/reader.ts";
export { DynamoIndexCorruptError, DynamoIndexOrderError } from "../stores/dynamo-index.ts";

// Re-exported so that this entry point's documentation can show the client type it takes.
export type { DynamoClient } from "../stores/dynamo.ts";

/**
 * Options of {@linkcode dynamoSource}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { run, streamsSink } from "@impel/impel";
 * import { type DynamoSourceOptions, dynamoSource } from "@impel/impel/sources/dynamo";
 * import { dynamoCheckpoints } from "@impel/impel/checkpoints/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const stop = new AbortController();
 * // Index-only batches (no eventTable): the reactor only needs to know which streams changed.
 * const options: DynamoSourceOptions = {
 *   client,
 *   indexTable: "events-index",
 *   group: "cache-invalidator",
 *   checkpoints: dynamoCheckpoints(client, { tableName: "checkpoints" }),
 *   tranches: ["0"],
 *   tailSleepMs: 200,
 *   signal: stop.signal,
 * };
 * const sink = streamsSink({
 *   group: "cache-invalidator",
 *   handler: (stream, events) => console.log(stream, events.map((e) => e.type)),
 * });
 * const running = run(dynamoSource(options), sink, { signal: stop.signal });
 * // ... on shutdown
 * stop.abort();
 * await running;
 * ```
 */
export interface DynamoSourceOptions {
  /** The DynamoDB client (the caller's). */
  readonly client: DynamoClient;
  /** The index table the indexer writes. */
  readonly indexTable: string;
  /** The events table to read event bodies from; omit for index-only batches. */
  readonly eventTable?: string;
  /** The consumer group the checkpoints are kept under. */
  readonly group: string;
  /** Where checkpoints are loaded from and committed to. */
  readonly checkpoints: CheckpointStore;
  /** The checkpoint key's `source` (default `dynamo:{indexTable}`). */
  readonly sourceName?: string;
  /** The partitions to read; default: every partition the index lists, including new ones. */
  readonly tranches?: readonly string[];
  /** `"checkpoint"` (default) resumes from the stored checkpoint; `"start"` ignores it. */
  /**
   * `"checkpoint"` (default) resumes from the stored checkpoint (or per `whenNoCheckpoint`);
   * `"start"` and `"tail"` ignore it: from the partition's first epoch, or from its tip.
   */
  readonly startFrom?: StartFrom;
  /** Where `"checkpoint"` starts when nothing is stored: `"start"` (default) or `"tail"`. */
  readonly whenNoCheckpoint?: "start" | "tail";
  /**
   * A stored checkpoint beyond the partition's tip would skip the entries indexed next:
   * `"error"` (default) fails the source at start with {@linkcode CheckpointPastTailError},
   * `"warn"` logs it and reads from it.
   */
  readonly checkpointPastTail?: "error" | "warn";
  /** Chunks per index query, hence roughly per batch (default 20; a chunk holds up to 90 entries). */
  readonly chunksPerRead?: number;
  /** Concurrent stream reads when loading event bodies (default 16). */
  readonly readConcurrency?: number;
  /** How long to wait at the tail before polling again (default 500 ms). */
  readonly tailSleepMs?: number;
  /** How often to look for new partitions (default 10 000 ms). */
  readonly partitionRefreshMs?: number;
  /**
   * Strongly consistent index and event reads (default true). With eventual reads a hole in
   * an epoch is waited for as not yet visible, unless the epoch is complete (its end marker is
   * visible or the tip has moved past it): then one consistent read decides, and a hole it
   * still shows is a {@linkcode DynamoIndexCorruptError}.
   */
  readonly consistentRead?: boolean;
  /** Largest batch handed on, in events (default: one batch per read). */
  readonly maxBatchItems?: number;
  /**
   * How many streams per partition the source remembers the indexed version of, to notice an
   * index whose entries skip or repeat a stream's versions ({@linkcode DynamoIndexOrderError}):
   * default 50 000; past it the stream indexed least recently is forgotten, and a forgotten (or
   * first seen) stream's next entry is taken as it comes. A stream whose `partitionOf` changes
   * while the source runs looks like such damage when it comes back to a partition.
   */
  readonly trackedStreams?: number;
  /** Backoff between retries of a failed read (default 100 ms doubling to 5 s). */
  readonly retry?: RetryOptions;
  /** @deprecated Use `retry.initialDelayMs`; read only when `retry` is not given. */
  readonly retryMinMs?: number;
  /** @deprecated Use `retry.maxDelayMs`; read only when `retry` is not given. */
  readonly retryMaxMs?: number;
  /** Aborting stops reading and closes the stream. */
  readonly signal?: AbortSignal;
}

/**
 * The events table holds fewer events than the index says it should: events were deleted, or
 * the index was built from another table.
 *
 * @example
 * ```ts
 * import { DynamoIndexMismatchError } from "@impel/impel/sources/dynamo";
 * const e = new DynamoIndexMismatchError("Order-1", 4, 2);
 * console.log(e.code); // "DynamoIndexMismatch"
 * ```
 */
export class DynamoIndexMismatchError extends ImpelError {
  /** The stream concerned. */
  readonly stream: string;
  /** Creates the error: the index covers events up to `indexed`, the table has `found`. */
  constructor(stream: string, indexed: number, found: number) {
    super(
      "DynamoIndexMismatch",
      `the index covers ${stream} up to version ${indexed} but the events table has ${found} events`,
    );
    this.stream = stream;
  }
}

/**
 * Splits a checkpoint position into its epoch and offset.
 *
 * @example
 * ```ts
 * import { decodePosition } from "@impel/impel/sources/dynamo";
 * decodePosition(3_000_017n); // { epoch: 3, offset: 17 }
 * ```
 */
export function decodePosition(position: Position): { epoch: number; offset: number } {
  const factor = BigInt(EPOCH_FACTOR);
  return { epoch: Number(position / factor), offset: Number(position % factor) };
}

/**
 * Composes a checkpoint position from an epoch and an offset.
 *
 * @example
 * ```ts
 * import { encodePosition } from "@impel/impel/sources/dynamo";
 * encodePosition(3, 17); // 3000017n
 * ```
 */
export function encodePosition(epoch: number, offset: number): Position {
  return BigInt(epoch) * BigInt(EPOCH_FACTOR) + BigInt(offset);
}

/**
 * A source over a DynamoDB event store's index: a `ReadableStream` of batches, each (but the
 * empty one announcing a partition) with a `commit` that records its position in `checkpoints`. Reading waits while the consumer is not
 * pulling (backpressure). The stream closes when `signal` aborts or the consumer cancels it.
 *
 * @example
 * ```ts ignore
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { dynamoSource } from "@impel/impel/sources/dynamo";
 * import { dynamoCheckpoints } from "@impel/impel/checkpoints/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const stop = new AbortController();
 * const batches = dynamoSource({
 *   client,
 *   indexTable: "events-index",
 *   eventTable: "events",
 *   group: "reactor",
 *   checkpoints: dynamoCheckpoints(client, { tableName: "checkpoints" }),
 *   signal: stop.signal,
 * });
 * for await (const batch of batches) {
 *   console.log(batch.tranche, batch.items.length, batch.position, batch.isTail);
 *   await batch.commit?.(batch.position);
 * }
 * ```
 */
export function dynamoSource(options: DynamoSourceOptions): ObservableSource {
  const settings = checkOptions(options);
  // The one cast at this boundary: DynamoClient only narrows the SDK client callers pass.
  const client = options.client as DynamoDBClient;
  const store = options.eventTable === undefined ? undefined : dynamoStore(options.client, {
    tableName: options.eventTable,
    consistentRead: settings.consistentRead,
  });
  // Reads again, consistently, a stream some of whose indexed events an eventually
  // consistent read did not return (the item may not have reached that replica yet).
  const recheck = options.eventTable === undefined || settings.consistentRead
    ? undefined
    : dynamoStore(options.client, { tableName: options.eventTable, consistentRead: true });
  // Per partition, the position the last read ended at: a read from anywhere else (a checkpoint,
  // a batch cut inside a chunk) first finds the chunk that holds its offset.
  // With it, the start of the chunk that position is in: a read that continues from there
  // queries the chunks after that one, so that the next chunk must start exactly where the last
  // one ended (an overlap is damage, never skipped).
  const readTo = new Map<string, { at: Position; chunkStart: number }>();
  // Per partition, when the tip was last compared with an idle epoch (see readPage).
  const tipChecked = new Map<string, number>();
  // Per partition, each stream's next version as the entries read so far leave it.
  const order = streamOrder(settings.trackedStreams);

  const partitions = (signal: AbortSignal): Promise<string[]> =>
    listPartitions(client, settings.indexTable, {
      consistentRead: settings.consistentRead,
      signal,
    });

  // The chunks of an epoch from `offset` (including the chunk that holds it), and whether the
  // epoch is closed and at which count.
  async function readChunks(
    tranche: string,
    epoch: number,
    offset: number,
    probe: boolean,
    after: number | undefined,
    consistent = settings.consistentRead,
  ) {
    let from = after === undefined ? offset : after + 1;
    if (probe && offset > 0) {
      const res = await client.send(
        new QueryCommand({
          TableName: settings.indexTable,
          KeyConditionExpression: "p = :p AND i BETWEEN :lo AND :hi",
          ExpressionAttributeValues: {
            ":p": { S: epochKey(tranche, epoch) },
            ":lo": { N: "0" },
            ":hi": { N: String(offset) },
          },
          ProjectionExpression: "i",
          ScanIndexForward: false,
          Limit: 1,
          ConsistentRead: consistent,
        }),
      );
      from = Number(res.Items?.[0]?.i?.N ?? offset);
    }
    const res: QueryCommandOutput = await client.send(
      new QueryCommand({
        TableName: settings.indexTable,
        KeyConditionExpression: "p = :p AND i >= :i",
        ExpressionAttributeValues: {
          ":p": { S: epochKey(tranche, epoch) },
          ":i": { N: String(from) },
        },
        Limit: settings.chunksPerRead,
        ConsistentRead: consistent,
      }),
    );
    const chunks: { start: number; entries: IndexEntry[] }[] = [];
    let closedAt: number | undefined;
    for (const item of res.Items ?? []) {
      const i = Number(item.i.N);
      if (i === EPOCH_FACTOR) {
        closedAt = Number(item.c?.N ?? Number.NaN);
        continue;
      }
      const entries = decodeEntries(item.j?.S ?? "", { partition: tranche, epoch, offset: i });
      if (Number(item.c?.N) !== entries.length) {
        throw new DynamoIndexCorruptError(
          tranche,
          epoch,
          i,
          `the chunk holds ${entries.length} entries but its count says ${item.c?.N}`,
        );
      }
      chunks.push({ start: i, entries });
    }
    return { chunks, closedAt, more: res.LastEvaluatedKey !== undefined && closedAt === undefined };
  }

  // An idle epoch without an end marker must be the tip's: one the tip has moved past has lost
  // its marker, and waiting in it would report the tail forever while later epochs fill up.
  // Checked at most every partitionRefreshMs, since it costs a read.
  async function checkNotPastEpoch(tranche: string, epoch: number, next: number): Promise<void> {
    const now = Date.now();
    if (now - (tipChecked.get(tranche) ?? 0) < settings.partitionRefreshMs) return;
    tipChecked.set(tranche, now);
    const { Item: tip } = await client.send(
      new GetItemCommand({
        TableName: settings.indexTable,
        Key: { p: { S: tipKey(tranche) }, i: { N: "0" } },
        ConsistentRead: true,
      }),
    );
    const tipEpoch = Number(tip?.ep?.N ?? 0);
    if (tipEpoch === epoch) {
      // The tip says the epoch goes on past `next`: chunks there are only not visible yet, or
      // gone (deleted), which a consistent read tells apart.
      const end = Number(tip?.o?.N ?? 0);
      if (end <= next) return;
      const again = await readChunks(tranche, epoch, next, false, undefined, true);
      if (again.chunks.length > 0) return;
      throw new DynamoIndexCorruptError(
        tranche,
        epoch,
        undefined,
        `entries ${next} to ${end - 1} are missing (the partition's tip is at ${end})`,
      );
    }
    if (tipEpoch < epoch) return;
    const { Item: marker } = await client.send(
      new GetItemCommand({
        TableName: settings.indexTable,
        Key: { p: { S: epochKey(tranche, epoch) }, i: { N: String(EPOCH_FACTOR) } },
        ConsistentRead: true,
      }),
    );
    if (marker === undefined) {
      throw new DynamoIndexCorruptError(
        tranche,
        epoch,
        undefined,
        `the epoch has no end marker but the partition's tip is at epoch ${tipEpoch}`,
      );
    }
  }

  // With eventual reads a hole may only be not yet visible, but not once the epoch is known to
  // be complete (its end marker is visible, or the tip has moved past it): then one consistent
  // read decides, and a hole it still shows is damage. The tip is read at most every
  // partitionRefreshMs.
  const holeChecked = new Map<string, number>();
  async function checkHole(
    tranche: string,
    epoch: number,
    from: number,
    closed: boolean,
  ): Promise<void> {
    if (!closed) {
      const now = Date.now();
      if (now - (holeChecked.get(tranche) ?? 0) < settings.partitionRefreshMs) return;
      holeChecked.set(tranche, now);
      const get = async (p: string, i: number) =>
        (await client.send(
          new GetItemCommand({
            TableName: settings.indexTable,
            Key: { p: { S: p }, i: { N: String(i) } },
            ConsistentRead: true,
          }),
        )).Item;
      const marker = await get(epochKey(tranche, epoch), EPOCH_FACTOR);
      if (marker === undefined && Number((await get(tipKey(tranche), 0))?.ep?.N ?? 0) <= epoch) {
        return;
      }
    }
    const again = await readChunks(tranche, epoch, from, false, undefined, true);
    const first = again.chunks[0]?.start ?? again.closedAt;
    if (first !== undefined && first > from) {
      throw new DynamoIndexCorruptError(
        tranche,
        epoch,
        first,
        `entries ${from} to ${first - 1} are missing (the epoch is complete)`,
      );
    }
  }

  async function withBodies(
    entries: readonly IndexEntry[],
    context: ReadContext | undefined,
  ): Promise<BatchItem[]> {
    // One read per stream covering all of its entries in this batch.
    const ranges = new Map<string, { from: number; to: number }>();
    for (const e of entries) {
      const r = ranges.get(e.stream);
      if (!r) ranges.set(e.stream, { from: e.index, to: e.next });
      else {
        r.from = Math.min(r.from, e.index);
        r.to = Math.max(r.to, e.next);
      }
    }
    // A name the store cannot read fails its stream's items, not the read.
    const names = new Map<string, Error | undefined>();
    for (const stream of ranges.keys()) names.set(stream, nameError(stream));
    const loaded = new Map<string, Map<number, BatchItem>>();
    const readable = [...ranges].filter(([stream]) => names.get(stream) === undefined);
    await mapLimit(readable, settings.readConcurrency, async ([stream, { from, to }]) => {
      const byIndex = new Map<number, BatchItem>();
      // An event that does not decode fails its stream through the failure policy.
      const onInvalid = (event: StreamEvent, invalid: Error) =>
        byIndex.set(event.index, { stream, event, invalid });
      const read = (from_: DynamoEventStore) => () =>
        from_.readStream(stream, { fromIndex: from, maxCount: to - from, onInvalid });
      // Retried by the reader's policy (logged, and in problems() under the partition), alone:
      // the index and the other streams' reads are not repeated. Without the reader's context
      // (readPage called directly) a failure fails the page, which the caller retries.
      const load = async (from_: DynamoEventStore) => {
        const events = context === undefined
          ? await read(from_)()
          : await context.retry(`reading the events of ${stream}`, read(from_));
        for (const event of events) byIndex.set(event.index, { stream, event });
      };
      await load(store as DynamoEventStore);
      const short = () => {
        for (let k = from; k < to; k++) if (!byIndex.has(k)) return true;
        return false;
      };
      if (recheck !== undefined && short()) await load(recheck);
      loaded.set(stream, byIndex);
    });
    const items: BatchItem[] = [];
    for (const e of entries) {
      const invalid = names.get(e.stream);
      if (invalid !== undefined) {
        items.push(...indexOnly([e]).map((item) => ({ ...item, invalid })));
        continue;
      }
      const byIndex = loaded.get(e.stream)!;
      // An indexed event the table no longer holds (deleted, overwritten) fails its stream
      // through the failure policy; the other streams carry on.
      const missing = indexOnly([e]);
      for (let k = e.index; k < e.next; k++) {
        const item = byIndex.get(k);
        items.push(
          item ?? {
            ...missing[k - e.index],
            invalid: new DynamoIndexMismatchError(e.stream, e.next, k),
          },
        );
      }
    }
    return items;
  }

  function indexOnly(entries: readonly IndexEntry[]): BatchItem[] {
    const items: BatchItem[] = [];
    for (const e of entries) {
      const time = new Date(e.time);
      const invalid = nameError(e.stream);
      for (let k = e.index; k < e.next; k++) {
        const type = e.types[k - e.index];
        items.push({
          stream: e.stream,
          ...(invalid ? { invalid } : {}),
          event: {
            index: k,
            type,
            data: undefined,
            meta: undefined,
            id: `${e.stream}@${k}`,
            time,
            size: utf8.encode(type).length,
          },
        });
      }
    }
    return items;
  }

  const readPage: ReadPage = async (tranche, position, _signal, context) => {
    let { epoch, offset } = decodePosition(position ?? 0n);
    const last = readTo.get(tranche);
    // Whether this read goes on from where the last one ended (or starts anew: a checkpoint).
    let continues = last !== undefined && last.at === position;
    let probe = offset > 0 && last?.at !== position;
    let after = offset > 0 && !probe ? last?.chunkStart : undefined;
    for (;;) {
      const page = await readChunks(tranche, epoch, offset, probe, after);
      const corrupt = (at: number | undefined, problem: string) =>
        new DynamoIndexCorruptError(tranche, epoch, at, problem);
      const entries: IndexEntry[] = [];
      // Per entry, the offset just after it; the events of an entry resume at its start.
      const ends: number[] = [];
      let next = offset;
      let chunkStart = after ?? 0;
      let hole = false;
      for (const [c, chunk] of page.chunks.entries()) {
        if (chunk.start > next) {
          // With consistent reads every chunk before a visible one is visible too: a hole is
          // damage. Otherwise the missing chunk may not be visible yet: wait for the next read.
          if (settings.consistentRead) {
            throw corrupt(chunk.start, `entries ${next} to ${chunk.start - 1} are missing`);
          }
          hole = true;
          await checkHole(tranche, epoch, next, page.closedAt !== undefined);
          break;
        }
        // Only the chunk that holds a position found by the probe may start before it.
        if (chunk.start < next && !(c === 0 && probe)) {
          throw corrupt(chunk.start, `the chunk overlaps the one before, which ends at ${next}`);
        }
        if (chunk.start + chunk.entries.length < next) {
          throw corrupt(chunk.start, `position ${next} lies past this chunk's end, in no chunk`);
        }
        for (let k = next - chunk.start; k < chunk.entries.length; k++) {
          entries.push(chunk.entries[k]);
          ends.push(chunk.start + k + 1);
        }
        next = chunk.start + chunk.entries.length;
        chunkStart = chunk.start;
      }
      probe = false;
      after = undefined;
      if (page.closedAt !== undefined && !hole && page.closedAt !== next) {
        throw corrupt(
          undefined,
          `the end marker counts ${page.closedAt} entries but the chunks end at ${next}`,
        );
      }
      const epochDone = page.closedAt !== undefined && page.closedAt === next;
      if (epochDone && entries.length === 0) {
        // A closed epoch's end marker: move on to the next epoch.
        epoch++;
        offset = 0;
        continue;
      }
      if (entries.length === 0 && !page.more && page.closedAt === undefined) {
        await checkNotPastEpoch(tranche, epoch, next);
      }
      // Each stream's entries must follow on from the last one read in the partition.
      const checked = order.check(tranche, epoch, entries, ends, continues);
      continues = true;
      const spans = checked.spans.map((s) => s.entry);
      const read = store ? await withBodies(spans, context) : indexOnly(spans);
      const items: BatchItem[] = [];
      const positions: Position[] = [];
      let from = 0;
      for (const span of checked.spans) {
        const e = span.entry;
        const start = encodePosition(epoch, span.end - 1), end = encodePosition(epoch, span.end);
        for (const missing of span.missing) {
          items.push(missing);
          positions.push(start);
        }
        for (let i = e.index; i < e.next; i++, from++) {
          items.push(
            i === e.index && span.invalid !== undefined
              ? { ...read[from], invalid: span.invalid }
              : read[from],
          );
          positions.push(i === e.next - 1 ? end : start);
        }
      }
      checked.commit();
      const at = encodePosition(epoch, next);
      readTo.set(tranche, { at, chunkStart });
      return { items, positions, next: at, isTail: !page.more && !epochDone };
    }
  };

  return pagedSource({
    name: settings.sourceName,
    tranches: settings.tranches ?? [],
    readTranches: settings.tranches ? undefined : partitions,
    tranchesRefreshMs: settings.partitionRefreshMs,
    readPage,
    checkpoints: options.checkpoints,
    group: options.group,
    // The partition's tip: the next entry to be indexed.
    readTail: async (tranche) => {
      const { Item } = await client.send(
        new GetItemCommand({
          TableName: settings.indexTable,
          Key: { p: { S: tipKey(tranche) }, i: { N: "0" } },
          ConsistentRead: settings.consistentRead,
        }),
      );
      return encodePosition(Number(Item?.ep?.N ?? 0), Number(Item?.o?.N ?? 0));
    },
    startFrom: options.startFrom,
    whenNoCheckpoint: options.whenNoCheckpoint,
    checkpointPastTail: options.checkpointPastTail,
    tailSleepMs: settings.tailSleepMs,
    retry: settings.retry,
    isRetriable: isTransientDynamoError,
    // A damaged index partition stops that tranche only: the other partitions carry on.
    isTrancheFailure: (error) => error instanceof DynamoIndexCorruptError,
    maxBatchItems: options.maxBatchItems,
    signal: options.signal,
  });
}

interface Settings {
  readonly indexTable: string;
  readonly sourceName: string;
  readonly tranches: readonly string[] | undefined;
  readonly chunksPerRead: number;
  readonly readConcurrency: number;
  readonly tailSleepMs: number;
  readonly partitionRefreshMs: number;
  readonly consistentRead: boolean;
  readonly retry: RetryOptions;
  readonly trackedStreams: number;
}

function checkOptions(options: DynamoSourceOptions): Settings {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object");
  }
  if (
    options.client === null || typeof options.client !== "object" ||
    typeof options.client.send !== "function"
  ) {
    throw new InvalidArgumentError("client", "must be a DynamoDBClient");
  }
  const indexTable = checkTableName("indexTable", options.indexTable);
  if (options.eventTable !== undefined) checkTableName("eventTable", options.eventTable);
  if (typeof options.group !== "string" || options.group.length === 0) {
    throw new InvalidArgumentError(
      "group",
      `must be a non-empty string, got ${JSON.stringify(options.group)}`,
    );
  }
  const cp = options.checkpoints;
  if (
    cp === null || typeof cp !== "object" || typeof cp.load !== "function" ||
    typeof cp.commit !== "function"
  ) {
    throw new InvalidArgumentError("checkpoints", "must be a CheckpointStore");
  }
  const sourceName = options.sourceName ?? `dynamo:${indexTable}`;
  if (typeof sourceName !== "string" || sourceName.length === 0) {
    throw new InvalidArgumentError("sourceName", "must be a non-empty string");
  }
  if (options.tranches !== undefined) {
    if (!Array.isArray(options.tranches) || options.tranches.length === 0) {
      throw new InvalidArgumentError("tranches", "must be a non-empty array of partition ids");
    }
    for (const t of options.tranches) {
      if (typeof t !== "string" || t.length === 0) {
        throw new InvalidArgumentError(
          "tranches",
          `must hold non-empty partition ids, got ${JSON.stringify(t)}`,
        );
      }
    }
  }
  const retryMinMs = checkInteger("retryMinMs", options.retryMinMs ?? 100, 1);
  return {
    indexTable,
    sourceName,
    tranches: options.tranches ? [...new Set(options.tranches)] : undefined,
    chunksPerRead: checkInteger("chunksPerRead", options.chunksPerRead ?? 20, 1, 1000),
    readConcurrency: checkInteger("readConcurrency", options.readConcurrency ?? 16, 1, 1000),
    tailSleepMs: checkInteger("tailSleepMs", options.tailSleepMs ?? 500, 0),
    partitionRefreshMs: checkInteger("partitionRefreshMs", options.partitionRefreshMs ?? 10_000, 1),
    consistentRead: options.consistentRead ?? true,
    trackedStreams: checkInteger("trackedStreams", options.trackedStreams ?? 50_000, 0),
    retry: options.retry ?? {
      initialDelayMs: retryMinMs,
      maxDelayMs: checkInteger("retryMaxMs", options.retryMaxMs ?? 5000, retryMinMs),
    },
  };
}

const utf8 = new TextEncoder();

// Why a stream name read from the index cannot be a stream of the store, if it cannot.
function nameError(stream: string): Error | undefined {
  try {
    checkDynamoStreamName(stream);
    return undefined;
  } catch (e) {
    return e as Error;
  }
}

async function mapLimit<T>(
  items: readonly T[],
  limit: number,
  f: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await f(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// Placeholders for a gap of more versions than this would be a batch of their own: a gap that
// long stops the partition (DynamoIndexCorruptError) instead.
const MAX_GAP_EVENTS = 10_000;

/** What the order check makes of one entry. */
interface Span {
  /** The entry, trimmed to the versions not read before (possibly none). */
  readonly entry: IndexEntry;
  /** The offset just after the entry. */
  readonly end: number;
  /** Invalid records for versions the index skipped before the entry, one per version. */
  readonly missing: readonly BatchItem[];
  /** Set on the entry's first event: the stream's versions were repeated before it. */
  readonly invalid?: DynamoIndexOrderError;
}

/**
 * Tracks, per partition, each stream's next version (at most `limit` streams per partition, the
 * least recently indexed forgotten first), so that an entry that skips versions or repeats them
 * fails its stream ({@linkcode DynamoIndexOrderError}) rather than being followed. A gap's
 * missing versions become invalid records at the stream's next version, so that they reach the
 * stream's failure policy in order; a repeat is dropped and the stream's next event carries the
 * error (an invalid record at a version already read would take the place of the event that
 * comes next). `check` changes nothing until its `commit` is called, after the read succeeded.
 */
function streamOrder(limit: number) {
  const next = new Map<string, Map<string, number>>();
  // Per partition, streams whose repeat is to be reported on their next event.
  const repeated = new Map<string, Map<string, DynamoIndexOrderError>>();
  return {
    check(
      tranche: string,
      epoch: number,
      entries: readonly IndexEntry[],
      ends: readonly number[],
      continues: boolean,
    ): { spans: Span[]; commit: () => void } {
      if (!continues) {
        next.delete(tranche);
        repeated.delete(tranche);
      }
      const known = next.get(tranche);
      const pending = repeated.get(tranche);
      const reached = new Map<string, number>();
      const reports = new Map<string, DynamoIndexOrderError | undefined>();
      const spans: Span[] = [];
      for (const [k, e] of entries.entries()) {
        const where = { partition: tranche, epoch, offset: ends[k] - 1 };
        const expected = reached.get(e.stream) ?? known?.get(e.stream);
        let entry = e;
        const missing: BatchItem[] = [];
        let invalid = reports.has(e.stream) ? reports.get(e.stream) : pending?.get(e.stream);
        if (expected !== undefined && e.index > expected) {
          if (e.index - expected > MAX_GAP_EVENTS) {
            throw new DynamoIndexCorruptError(
              tranche,
              epoch,
              where.offset,
              new DynamoIndexOrderError("gap", e.stream, expected, e.index, where).message +
                ` (over ${MAX_GAP_EVENTS} versions)`,
            );
          }
          const error = new DynamoIndexOrderError("gap", e.stream, expected, e.index, where);
          const time = new Date(e.time);
          invalid = undefined; // the missing versions fail the stream first
          for (let i = expected; i < e.index; i++) {
            missing.push({
              stream: e.stream,
              invalid: error,
              event: {
                index: i,
                type: "",
                data: undefined,
                meta: undefined,
                id: `${e.stream}@${i}`,
                time,
                size: 0,
              },
            });
          }
        } else if (expected !== undefined && e.index < expected) {
          const error = new DynamoIndexOrderError("repeat", e.stream, expected, e.index, where);
          const from = Math.min(expected, e.next);
          entry = { ...e, index: from, types: e.types.slice(from - e.index) };
          invalid = error;
        }
        if (entry.index < entry.next) {
          // Reported now: by the missing versions, or on the entry's first event.
          spans.push({ entry, end: ends[k], missing, invalid });
          reports.set(e.stream, undefined);
        } else reports.set(e.stream, invalid); // all repeated: the stream's next event reports it
        reached.set(e.stream, Math.max(expected ?? 0, e.next));
      }
      const commit = () => {
        if (limit === 0) return;
        let streams = next.get(tranche);
        if (streams === undefined) next.set(tranche, streams = new Map());
        let errors = repeated.get(tranche);
        for (const [stream, to] of reached) {
          streams.delete(stream);
          streams.set(stream, to);
          const report = reports.get(stream);
          if (report === undefined) errors?.delete(stream);
          else {
            if (errors === undefined) repeated.set(tranche, errors = new Map());
            errors.set(stream, report);
          }
        }
        while (streams.size > limit) {
          const oldest = streams.keys().next().value as string;
          streams.delete(oldest);
          errors?.delete(oldest);
        }
      };
      return { spans, commit };
    },
  };
}
