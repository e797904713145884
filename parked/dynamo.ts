/**
 * A park store in one DynamoDB table (partition key `p`, sort key `k`, both strings), written
 * with conditions so that several sinks and operators can use it at once. Item kinds, each in
 * partitions of its own so that a sink's poll reads only what it needs:
 *
 * | item | `p` | `k` | holds |
 * | --- | --- | --- | --- |
 * | active episode | `["a", group]` | stream | state, failure, `first`, `next`, event count |
 * | request | `["q", group]` | stream | the pending release or skip, and the claim on it |
 * | resolved episode | `["r", group]` | `[stream, episode]` | the episode as it ended, with its resolution |
 * | event | `["e", group, stream, episode]` | index, zero-padded | the event as JSON |
 * | counter | `["n", group]` | stream | the stream's last number given out |
 *
 * (keys are JSON texts; a group or stream name over 400 bytes of UTF-8 is keyed by `#` and its
 * SHA-256, since DynamoDB keys are bounded, and kept whole in the item). Episode ids, and the
 * keys of history records within an episode, are numbers from the stream's counter item (an
 * atomic `ADD`), never clock readings: members whose clocks disagree still order a stream's
 * episodes as they happened (tables written before carry time-based ids, which sort before
 * every numbered one). A write adds event items and moves the episode's `next` on in one
 * transaction conditioned on its old value; a resolution deletes the active episode in a
 * transaction conditioned on `next` (for a release) and on the claim: an event written while an
 * episode is resolved is either counted in it, or its writer is told the stream is not parked
 * any more and handles the event itself. Whatever else changes an episode is one transaction
 * too: parking it again (its new error, the events a failed release handled leaving it, its
 * request removed and the failed release recorded), a claim's renewal with a release's progress
 * (under the claim's condition, so a sink whose claim lapsed records nothing), a bounded skip.
 * Event items that leave an episode are deleted after the transaction; a crash in between
 * leaves items no read reaches (below the episode's `first`, or of an episode resolved; episode
 * ids are never reused).
 * One event item holds at most about 390 KB of event JSON; a larger event is refused with a
 * {@linkcode ParkEventTooLargeError} (its stream stays failing, visibly; the other streams of
 * the call are written: a call with some writes failed throws `ParkWritesError` with each
 * write's outcome or error). Error text over 16 KB is cut, ending with a note of its full size.
 * Listing every group
 * (no `group` given) scans the table.
 *
 * @module
 */
import {
  type AttributeValue,
  BatchWriteItemCommand,
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  type GetItemCommandOutput,
  QueryCommand,
  type QueryCommandOutput,
  ScanCommand,
  type ScanCommandOutput,
  TransactionCanceledException,
  TransactWriteItemsCommand,
  type TransactWriteItemsCommandInput,
  UpdateItemCommand,
  type UpdateItemCommandOutput,
} from "@aws-sdk/client-dynamodb";
import { createHash } from "node:crypto";
import { checkInteger, ImpelError } from "../core/errors.ts";
import { type StreamEvent, utf8Length } from "../core/event.ts";
import { backoff } from "../core/failure.ts";
import {
  checkParkName,
  checkParkRequest,
  checkParkWrites,
  decodeParkedEvent,
  encodeParkedEvent,
  newClaimToken,
  type ParkAction,
  type ParkedFailure,
  type ParkedStream,
  ParkRequestConflictError,
  type ParkStore,
  type ParkWrite,
  type ParkWriteOutcome,
  ParkWritesError,
  skipBound,
  StreamNotParkedError,
  truncateParkError,
} from "../core/park.ts";
import { sleep } from "../core/tranches.ts";
import { checkTableName, type DynamoClient, ensureTable } from "../stores/dynamo.ts";

// Re-exported so that this entry point's documentation can show the client type it takes.
export type { DynamoClient } from "../stores/dynamo.ts";

/**
 * Options of {@linkcode dynamoParkStore}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import {
 *   createParkTable,
 *   dynamoParkStore,
 *   type DynamoParkStoreOptions,
 * } from "@impel/impel/parked/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const options: DynamoParkStoreOptions = { tableName: "orders-parked" };
 * await createParkTable(client, options.tableName);
 * const store = dynamoParkStore(client, options);
 * console.log(await store.list("billing")); // [] at first
 * ```
 *
 * @category Parked streams
 */
export interface DynamoParkStoreOptions {
  /** The table, created by {@linkcode createParkTable}. */
  readonly tableName: string;
}

/**
 * An event is too large for one DynamoDB item of the park store.
 *
 * @example
 * ```ts
 * import { ParkEventTooLargeError } from "@impel/impel/parked/dynamo";
 * const e = new ParkEventTooLargeError("Payment-1", 3, 500_000);
 * console.log(e.code); // "ParkEventTooLarge"
 * ```
 *
 * @category Parked streams
 */
export class ParkEventTooLargeError extends ImpelError {
  /** Creates the error naming the event and its size in bytes. */
  constructor(stream: string, index: number, bytes: number) {
    super(
      "ParkEventTooLarge",
      `event ${index} of ${stream} is ${bytes} bytes as JSON; a DynamoDB park store holds at most ${MAX_EVENT_BYTES}`,
    );
  }
}

/**
 * A DynamoDB operation of the park store failed (other than a condition, which is part of how it
 * works).
 *
 * @example
 * ```ts
 * import { DynamoParkStoreError } from "@impel/impel/parked/dynamo";
 * const e = new DynamoParkStoreError("list", "billing", new Error("throttled"));
 * console.log(e.code, e.message); // "DynamoParkStore" "park store list for billing failed: throttled"
 * ```
 *
 * @category Parked streams
 */
export class DynamoParkStoreError extends ImpelError {
  /** Creates the error: `what` failed for `where`, because of `cause`. */
  constructor(what: string, where: string, cause: unknown) {
    super(
      "DynamoParkStore",
      `park store ${what} for ${where} failed: ${(cause as Error)?.message ?? cause}`,
      { cause },
    );
  }
}

const MAX_EVENT_BYTES = 390_000;
/** Error text kept in an episode item; longer text is cut, saying so (items hold 400 KB). */
const MAX_ERROR_BYTES = 16_000;
/**
 * Names longer than this (UTF-8 bytes) are keyed by their SHA-256 instead: a sort key holds at
 * most 1024 bytes, a partition key 2048. Items keep the names themselves (`g`, `s`).
 */
const MAX_KEY_NAME_BYTES = 400;

/** The key form of a group or stream name: itself, or `#` and its SHA-256 when long. */
function keyPart(name: string): string {
  if (utf8Length(name) <= MAX_KEY_NAME_BYTES) return name;
  return "#" + createHash("sha256").update(name).digest("hex");
}
/** Events per transaction, with the episode's update: DynamoDB Local takes at most 25 items. */
const TRANSACT_EVENTS = 24;

/**
 * Creates the park table unless it exists (on-demand billing); waits until it is active.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createParkTable } from "@impel/impel/parked/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * await createParkTable(client, "parked");
 * ```
 *
 * @category Parked streams
 */
export async function createParkTable(client: DynamoClient, tableName: string): Promise<void> {
  await ensureTable(client, { tableName, partitionKey: ["p", "S"], sortKey: ["k", "S"] });
}

type Item = Record<string, AttributeValue>;
type TransactItem = NonNullable<TransactWriteItemsCommandInput["TransactItems"]>[number];
/** A parked event as the table stores it, with its size in bytes. */
type EncodedEvent = { readonly index: number; readonly text: string; readonly bytes: number };
const S = (s: string): AttributeValue => ({ S: s });
const N = (n: number): AttributeValue => ({ N: String(n) });
const num = (v: AttributeValue | undefined) => Number(v?.N);
const str = (v: AttributeValue | undefined) => v?.S;
const pad = (index: number) => String(index).padStart(16, "0");

/**
 * An episode id from the stream's counter: `n` and the number, zero-padded, so that ids sort as
 * the episodes began (the latest resolved episode of a stream comes last) and after the
 * time-based ids of earlier versions (which start with `0`).
 */
const episodeId = (n: number) => "n" + String(n).padStart(15, "0");
/** The suffix of a history record within an episode (a failed release, a bounded skip). */
const recordId = (n: number) => "x" + String(n).padStart(15, "0");

/**
 * A {@linkcode ParkStore} in DynamoDB. The client is the caller's.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { streamsSink } from "@impel/impel";
 * import { createParkTable, dynamoParkStore } from "@impel/impel/parked/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * await createParkTable(client, "parked");
 * const sink = streamsSink({
 *   group: "billing",
 *   handler: () => {},
 *   failure: { kind: "park", maxAttempts: 3, store: dynamoParkStore(client, { tableName: "parked" }) },
 * });
 * await sink.stop();
 * ```
 *
 * @category Parked streams
 */
export function dynamoParkStore(dynamo: DynamoClient, options: DynamoParkStoreOptions): ParkStore {
  // The one cast at this boundary: DynamoClient only narrows the SDK client callers pass.
  const client = dynamo as DynamoDBClient;
  const TableName = checkTableName("tableName", options?.tableName);
  const retry = backoff({ initialDelayMs: 20, maxDelayMs: 1_000 });

  const activeKey = (group: string, stream: string): Item => ({
    p: S(JSON.stringify(["a", keyPart(group)])),
    k: S(keyPart(stream)),
  });
  const requestKey = (group: string, stream: string): Item => ({
    p: S(JSON.stringify(["q", keyPart(group)])),
    k: S(keyPart(stream)),
  });
  const counterKey = (group: string, stream: string): Item => ({
    p: S(JSON.stringify(["n", keyPart(group)])),
    k: S(keyPart(stream)),
  });
  const resolvedPartition = (group: string) => JSON.stringify(["r", keyPart(group)]);
  const eventsPartition = (group: string, stream: string, episode: string) =>
    JSON.stringify(["e", keyPart(group), keyPart(stream), episode]);

  /** Runs `fn`, wrapping what DynamoDB throws (except conditions) in a typed error. */
  async function guard<T>(what: string, where: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof ImpelError) throw e;
      throw new DynamoParkStoreError(what, where, e);
    }
  }

  const getItem = async (Key: Item): Promise<Item | undefined> =>
    ((await client.send(
      new GetItemCommand({ TableName, Key, ConsistentRead: true }),
    )) as GetItemCommandOutput).Item;

  async function queryAll(
    input: Omit<ConstructorParameters<typeof QueryCommand>[0], "TableName">,
  ): Promise<Item[]> {
    const out: Item[] = [];
    let start: Item | undefined;
    do {
      const page = (await client.send(
        new QueryCommand({ ...input, TableName, ConsistentRead: true, ExclusiveStartKey: start }),
      )) as QueryCommandOutput;
      out.push(...(page.Items ?? []));
      start = page.LastEvaluatedKey;
    } while (start);
    return out;
  }

  async function batchWrite(requests: Array<Record<string, unknown>>) {
    for (let i = 0; i < requests.length; i += 25) {
      let pending = requests.slice(i, i + 25);
      for (let attempt = 1; pending.length > 0; attempt++) {
        const { UnprocessedItems } = await client.send(
          new BatchWriteItemCommand({ RequestItems: { [TableName]: pending } }),
        );
        pending = (UnprocessedItems?.[TableName] ?? []) as typeof pending;
        if (pending.length > 0) await sleep(retry.delay(attempt));
      }
    }
  }

  async function deleteEvents(partition: string, below?: number) {
    const keys = await queryAll({
      KeyConditionExpression: below === undefined ? "p = :p" : "p = :p AND k < :k",
      ExpressionAttributeValues: {
        ":p": S(partition),
        ...(below === undefined ? {} : { ":k": S(pad(below)) }),
      },
      ProjectionExpression: "p, k",
    });
    await batchWrite(keys.map((Key) => ({ DeleteRequest: { Key } })));
  }

  async function countEvents(partition: string, from: number, below: number): Promise<number> {
    if (below <= from) return 0;
    let count = 0;
    let start: Item | undefined;
    do {
      const page = (await client.send(
        new QueryCommand({
          TableName,
          KeyConditionExpression: "p = :p AND k BETWEEN :a AND :b",
          ExpressionAttributeValues: {
            ":p": S(partition),
            ":a": S(pad(from)),
            ":b": S(pad(below - 1)),
          },
          Select: "COUNT",
          ConsistentRead: true,
          ExclusiveStartKey: start,
        }),
      )) as QueryCommandOutput;
      count += page.Count ?? 0;
      start = page.LastEvaluatedKey;
    } while (start);
    return count;
  }

  function entryOf(item: Item, request?: Item): ParkedStream {
    const base = {
      group: str(item.g)!,
      stream: str(item.s)!,
      ...(item.tr?.S === undefined ? {} : { tranche: item.tr.S }),
      episode: str(item.ep)!,
      state: (str(item.st) ?? "parked") as ParkedStream["state"],
      first: num(item.first),
      next: num(item.next),
      events: num(item.events),
      error: str(item.err)!,
      attempts: num(item.att),
      firstFailedAt: num(item.ff),
      lastFailedAt: num(item.lf),
      parkedAt: num(item.pa),
    };
    if (base.state !== "parked") {
      return {
        ...base,
        events: 0,
        resolution: {
          action: base.state === "skipped" ? "skip" : "release",
          by: str(item.by)!,
          ...(item.rsn ? { reason: str(item.rsn)! } : {}),
          at: num(item.ra),
          appliedBy: str(item.ab)!,
          events: num(item.re),
          ...(base.state === "skipped" && item.to?.N !== undefined ? { upTo: num(item.to) } : {}),
        },
      };
    }
    if (request === undefined || str(request.ep) !== base.episode) return base;
    return {
      ...base,
      request: {
        action: str(request.act) as ParkAction,
        by: str(request.by)!,
        ...(request.rsn ? { reason: str(request.rsn)! } : {}),
        at: num(request.at),
        ...(request.to?.N === undefined ? {} : { upTo: num(request.to) }),
      },
      ...(request.cb
        ? { claim: { by: str(request.cb)!, until: num(request.cu), token: str(request.ct) ?? "" } }
        : {}),
    };
  }

  async function active(group: string, stream: string): Promise<ParkedStream | undefined> {
    const [item, request] = await Promise.all([
      getItem(activeKey(group, stream)),
      getItem(requestKey(group, stream)),
    ]);
    return item === undefined ? undefined : entryOf(item, request);
  }

  async function latest(group: string, stream: string): Promise<ParkedStream | undefined> {
    const current = await active(group, stream);
    if (current !== undefined) return current;
    const { Items } = (await client.send(
      new QueryCommand({
        TableName,
        KeyConditionExpression: "p = :p AND begins_with(k, :k)",
        ExpressionAttributeValues: {
          ":p": S(resolvedPartition(group)),
          ":k": S(JSON.stringify([keyPart(stream)]).slice(0, -1) + ","),
        },
        ScanIndexForward: false,
        Limit: 1,
        ConsistentRead: true,
      }),
    )) as QueryCommandOutput;
    return Items?.[0] === undefined ? undefined : entryOf(Items[0]);
  }

  /** The stream's next number (episode ids, history records): its counter, added to atomically. */
  async function nextNumber(group: string, stream: string): Promise<number> {
    const { Attributes } = (await client.send(
      new UpdateItemCommand({
        TableName,
        Key: counterKey(group, stream),
        UpdateExpression: "SET g = :g, s = :s ADD #n :one",
        ExpressionAttributeNames: { "#n": "n" },
        ExpressionAttributeValues: { ":g": S(group), ":s": S(stream), ":one": N(1) },
        ReturnValues: "UPDATED_NEW",
      }),
    )) as UpdateItemCommandOutput;
    return num(Attributes?.n);
  }

  /**
   * The update of an active episode, for a transaction that also holds a fence or removes its
   * request: sets `set`, and with `to` moves `first` up to it (the events below leave the
   * episode: handled by a release, or dropped by a bounded skip; `dropped` counts them).
   * Conditioned on the episode being as `item` shows it, so a transaction cancelled on it is
   * decided again on a fresh read. `undefined` when there is nothing to change.
   */
  async function episodeUpdate(
    group: string,
    stream: string,
    episode: string,
    item: Item,
    changes: { readonly to?: number; readonly set?: Item },
  ): Promise<{ update: TransactItem; dropped: number } | undefined> {
    const first = num(item.first);
    const next = num(item.next);
    const to = changes.to !== undefined && changes.to > first ? changes.to : undefined;
    const set = Object.entries(changes.set ?? {});
    if (to === undefined && set.length === 0) return undefined;
    const dropped = to === undefined
      ? 0
      : await countEvents(eventsPartition(group, stream, episode), first, to);
    const names: Record<string, string> = { "#first": "first", "#next": "next" };
    const values: Item = { ":ep": S(episode), ":first": N(first), ":next": N(next) };
    const clauses = set.map(([name, value], i) => {
      names[`#a${i}`] = name;
      values[`:a${i}`] = value;
      return `#a${i} = :a${i}`;
    });
    if (to !== undefined) {
      names["#events"] = "events";
      values[":to"] = N(to);
      values[":nx"] = N(Math.max(next, to));
      values[":d"] = N(dropped);
      clauses.push("#first = :to", "#next = :nx", "#events = #events - :d");
    }
    return {
      dropped,
      update: {
        Update: {
          TableName,
          Key: activeKey(group, stream),
          UpdateExpression: `SET ${clauses.join(", ")}`,
          ConditionExpression: "ep = :ep AND #first = :first AND #next = :next",
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        },
      },
    };
  }

  /** A check that the stream's active episode is `episode`, for a transaction. */
  const episodeCheck = (group: string, stream: string, episode: string): TransactItem => ({
    ConditionCheck: {
      TableName,
      Key: activeKey(group, stream),
      ConditionExpression: "ep = :ep",
      ExpressionAttributeValues: { ":ep": S(episode) },
    },
  });

  /**
   * A bounded skip of an episode with events at or above its bound, in one transaction fenced
   * by the claim: the request's removal, the skip's record in the history, and the events below
   * the bound leaving the episode, which stays active from the bound on.
   */
  async function skipBelow(
    group: string,
    stream: string,
    episode: string,
    item: Item,
    request: Item,
    upTo: number,
    by: string,
    now: number,
  ): Promise<ParkedStream | undefined> {
    const moved = await episodeUpdate(group, stream, episode, item, { to: upTo });
    const n = await nextNumber(group, stream);
    const record: Item = {
      ...item,
      p: S(resolvedPartition(group)),
      k: S(JSON.stringify([keyPart(stream), episode, recordId(n)])),
      ep: S(`${episode}.${recordId(n)}`),
      st: S("skipped"),
      next: N(upTo),
      by: request.by,
      ...(request.rsn ? { rsn: request.rsn } : {}),
      ra: N(now),
      ab: S(by),
      re: N(moved?.dropped ?? 0),
      to: N(upTo),
      events: N(0),
    };
    try {
      await client.send(
        new TransactWriteItemsCommand({
          TransactItems: [
            {
              Delete: {
                TableName,
                Key: requestKey(group, stream),
                ConditionExpression: "ep = :ep AND ct = :ct AND cu > :now",
                ExpressionAttributeValues: {
                  ":ep": S(episode),
                  ":ct": request.ct ?? S(""),
                  ":now": N(now),
                },
              },
            },
            { Put: { TableName, Item: record, ConditionExpression: "attribute_not_exists(p)" } },
            moved?.update ?? episodeCheck(group, stream, episode),
          ],
        }),
      );
    } catch (e) {
      // The claim lapsed, or events were added meanwhile (the sink asks again).
      if (e instanceof TransactionCanceledException) return undefined;
      throw e;
    }
    if (moved !== undefined) await deleteEvents(eventsPartition(group, stream, episode), upTo);
    const after = await active(group, stream);
    if (after === undefined || after.episode !== episode) return undefined;
    return { ...after, resolution: entryOf(record).resolution };
  }

  /**
   * The condition under which a re-park removes `request`, the stream's request as read: that
   * it is still that one (same episode, action, time and claim), or still absent.
   */
  function requestUnchanged(request: Item | undefined): {
    ConditionExpression: string;
    ExpressionAttributeNames?: Record<string, string>;
    ExpressionAttributeValues?: Item;
  } {
    if (request === undefined) return { ConditionExpression: "attribute_not_exists(p)" };
    const claim = request.cb === undefined
      ? "attribute_not_exists(cb)"
      : request.ct === undefined
      ? "cb = :cb AND attribute_not_exists(ct)"
      : "cb = :cb AND ct = :ct";
    return {
      ConditionExpression: `ep = :ep AND act = :act AND #at = :at AND ${claim}`,
      ExpressionAttributeNames: { "#at": "at" },
      ExpressionAttributeValues: {
        ":ep": request.ep,
        ":act": request.act,
        ":at": request.at,
        ...(request.cb === undefined ? {} : { ":cb": request.cb }),
        ...(request.ct === undefined ? {} : { ":ct": request.ct }),
      },
    };
  }

  /** How many of `events` go in one transaction: at most TRANSACT_EVENTS, under 3 MB. */
  function chunkLength(events: readonly EncodedEvent[]): number {
    let size = 0;
    let n = 0;
    while (n < events.length && n < TRANSACT_EVENTS && size + events[n].bytes < 3e6) {
      size += events[n].bytes;
      n++;
    }
    return n;
  }

  /** The puts of `events` into an episode's partition, each refused if stored already. */
  const eventPuts = (partition: string, events: readonly EncodedEvent[]): TransactItem[] =>
    events.map((e) => ({
      Put: {
        TableName,
        Item: { p: S(partition), k: S(pad(e.index)), ev: S(e.text) },
        ConditionExpression: "attribute_not_exists(k)",
      },
    }));

  /**
   * Stores a write with a failure: a new episode, numbered by the stream's counter, or (a
   * release that failed again) the active one parked again in one transaction: its error,
   * attempts and tranche, the events the release handled leaving it, its request removed and, if
   * the release was being applied, the failure recorded in the history. A crash never leaves
   * part of it done. Answers the episode item after it.
   */
  async function parkFailure(
    group: string,
    w: ParkWrite,
    f: ParkedFailure,
    events: readonly EncodedEvent[],
  ): Promise<{ header: Item; stored: number } | "gone"> {
    const key = activeKey(group, w.stream);
    const failed: Item = {
      g: S(group),
      s: S(w.stream),
      err: S(truncateParkError(f.error, MAX_ERROR_BYTES)),
      att: N(f.attempts),
      lf: N(f.lastFailedAt),
      ...(w.tranche === undefined ? {} : { tr: S(w.tranche) }),
    };
    for (let attempt = 1;; attempt++) {
      const [item, request] = await Promise.all([
        getItem(key),
        getItem(requestKey(group, w.stream)),
      ]);
      if (item === undefined) {
        // A new episode is written with its first events in one transaction: an operator never
        // sees it parked without the events that failed, so a skip asked at once (bounded by the
        // episode's `next`) drops them rather than nothing.
        const first = w.events[0]?.index ?? w.handledTo ?? 0;
        const episode = episodeId(await nextNumber(group, w.stream));
        const chunk = events.slice(0, chunkLength(events));
        const header: Item = {
          ...key,
          ...failed,
          ff: N(f.firstFailedAt),
          ep: S(episode),
          pa: N(Date.now()),
          first: N(first),
          next: N(chunk.length === 0 ? first : Math.max(first, chunk[chunk.length - 1].index + 1)),
          events: N(chunk.length),
        };
        try {
          await client.send(
            new TransactWriteItemsCommand({
              TransactItems: [
                {
                  Put: { TableName, Item: header, ConditionExpression: "attribute_not_exists(p)" },
                },
                ...eventPuts(eventsPartition(group, w.stream, episode), chunk),
              ],
            }),
          );
          return { header, stored: chunk.length };
        } catch (e) {
          if (!(e instanceof TransactionCanceledException) || attempt >= 20) throw e;
          // Another writer began one meanwhile (this write parks it again), or a conflict.
          if (e.CancellationReasons?.[0]?.Code !== "ConditionalCheckFailed") {
            await sleep(retry.delay(attempt));
          }
          continue;
        }
      }
      const episode = str(item.ep)!;
      const pending = request !== undefined && str(request.ep) === episode ? request : undefined;
      // A release being applied failed again: recorded with the request's removal, so that the
      // record is written once (a repeated write finds no request).
      const applied = pending !== undefined && str(pending.act) === "release" &&
        pending.cb !== undefined;
      const change = (await episodeUpdate(group, w.stream, episode, item, {
        set: failed,
        ...(w.handledTo === undefined ? {} : { to: w.handledTo }),
      }))!;
      const n = applied ? await nextNumber(group, w.stream) : 0;
      const now = Date.now();
      const record: Item | undefined = applied
        ? {
          ...item,
          ...failed,
          p: S(resolvedPartition(group)),
          k: S(JSON.stringify([keyPart(w.stream), episode, recordId(n)])),
          ep: S(`${episode}.${recordId(n)}`),
          st: S("failed"),
          by: pending.by,
          ...(pending.rsn ? { rsn: pending.rsn } : {}),
          ra: N(now),
          ab: pending.cb,
          re: N(change.dropped),
          events: N(0),
        }
        : undefined;
      try {
        await client.send(
          new TransactWriteItemsCommand({
            TransactItems: [
              change.update,
              // A request of an older episode (left by a crash) is not this episode's to clear.
              ...(request !== undefined && pending === undefined ? [] : [{
                Delete: {
                  TableName,
                  Key: requestKey(group, w.stream),
                  ...requestUnchanged(pending),
                },
              }]),
              ...(record === undefined ? [] : [{
                Put: { TableName, Item: record, ConditionExpression: "attribute_not_exists(p)" },
              }]),
            ],
          }),
        );
      } catch (e) {
        if (!(e instanceof TransactionCanceledException) || attempt >= 20) throw e;
        await sleep(retry.delay(attempt)); // changed meanwhile (events, a claim): decide again
        continue;
      }
      if (w.handledTo !== undefined && w.handledTo > num(item.first)) {
        await deleteEvents(eventsPartition(group, w.stream, episode), w.handledTo);
      }
      const header = await getItem(key);
      return header !== undefined && str(header.ep) === episode ? { header, stored: 0 } : "gone";
    }
  }

  async function parkOne(group: string, w: ParkWrite): Promise<ParkWriteOutcome> {
    const key = activeKey(group, w.stream);
    const encoded = w.events.map((e): EncodedEvent => {
      const text = encodeParkedEvent(e);
      return { index: e.index, text, bytes: utf8Length(text) };
    });
    for (const e of encoded) {
      if (e.bytes > MAX_EVENT_BYTES) throw new ParkEventTooLargeError(w.stream, e.index, e.bytes);
    }
    let header: Item | undefined;
    let stored = 0;
    if (w.failure !== undefined) {
      const parked = await parkFailure(group, w, w.failure, encoded);
      if (parked === "gone") return "notParked";
      ({ header, stored } = parked);
    } else {
      header = await getItem(key);
      if (header === undefined) return "notParked";
    }
    const episode = str(header.ep)!;
    if (w.tranche !== undefined && str(header.tr) !== w.tranche) {
      await client.send(
        new UpdateItemCommand({
          TableName,
          Key: key,
          UpdateExpression: "SET tr = :tr",
          ConditionExpression: "ep = :ep",
          ExpressionAttributeValues: { ":tr": S(w.tranche), ":ep": S(episode) },
        }),
      ).catch((e) => {
        if (!(e instanceof ConditionalCheckFailedException)) throw e; // resolved meanwhile
      });
    }
    const partition = eventsPartition(group, w.stream, episode);
    let pending = encoded.slice(stored).filter((e) => e.index >= num(header!.first));
    while (pending.length > 0) {
      // Each chunk in one transaction with the episode's next and count: all or nothing.
      const n = chunkLength(pending);
      let chunk = pending.slice(0, n);
      pending = pending.slice(n);
      for (let attempt = 1; chunk.length > 0; attempt++) {
        const next = num(header.next);
        const first = num(header.first);
        try {
          await client.send(
            new TransactWriteItemsCommand({
              TransactItems: [
                {
                  Update: {
                    TableName,
                    Key: key,
                    UpdateExpression: "SET #next = :to ADD #events :n",
                    ConditionExpression: "ep = :ep AND #next = :from AND #first = :first",
                    ExpressionAttributeNames: {
                      "#next": "next",
                      "#events": "events",
                      "#first": "first",
                    },
                    ExpressionAttributeValues: {
                      ":to": N(Math.max(next, chunk[chunk.length - 1].index + 1)),
                      ":n": N(chunk.length),
                      ":ep": S(episode),
                      ":from": N(next),
                      ":first": N(first),
                    },
                  },
                },
                ...eventPuts(partition, chunk),
              ],
            }),
          );
          break;
        } catch (e) {
          if (!(e instanceof TransactionCanceledException)) throw e;
          // Events stored already are not added again; the episode may have moved or gone.
          const reasons = e.CancellationReasons ?? [];
          const stored = new Set(
            chunk.filter((_, i) => reasons[i + 1]?.Code === "ConditionalCheckFailed")
              .map((x) => x.index),
          );
          header = await getItem(key);
          if (header === undefined || str(header.ep) !== episode) return "notParked";
          const from = num(header.first);
          chunk = chunk.filter((x) => !stored.has(x.index) && x.index >= from);
          if (reasons.some((r) => r.Code === "TransactionConflict")) {
            await sleep(retry.delay(attempt));
          }
        }
      }
    }
    return "parked";
  }

  async function listGroup(group: string, resolved: boolean, requested: boolean) {
    const requests = await queryAll({
      KeyConditionExpression: "p = :p",
      ExpressionAttributeValues: { ":p": S(JSON.stringify(["q", keyPart(group)])) },
    });
    // By sort key (the stream, or its hash when long): what active episodes are keyed by too.
    const byStream = new Map(requests.map((r) => [str(r.k)!, r]));
    if (requested) {
      const items = await Promise.all(
        requests.map((r) => getItem({ p: S(JSON.stringify(["a", keyPart(group)])), k: r.k })),
      );
      return items.flatMap((item) => {
        if (item === undefined) return [];
        const e = entryOf(item, byStream.get(str(item.k)!));
        return e.request === undefined ? [] : [e];
      });
    }
    const actives = await queryAll({
      KeyConditionExpression: "p = :p",
      ExpressionAttributeValues: { ":p": S(JSON.stringify(["a", keyPart(group)])) },
    });
    const out = actives.map((item) => entryOf(item, byStream.get(str(item.k)!)));
    if (resolved) {
      const history = await queryAll({
        KeyConditionExpression: "p = :p",
        ExpressionAttributeValues: { ":p": S(resolvedPartition(group)) },
      });
      out.push(...history.map((item) => entryOf(item)));
    }
    return out;
  }

  // By group and stream, the active episode first, then the history newest first by episode
  // (ids from the stream's counter, not from clocks); within an episode its resolution, then the
  // records of failed releases and bounded skips in it, newest first (by their numbers too).
  const order = (a: ParkedStream, b: ParkedStream) => {
    if (a.group !== b.group) return a.group < b.group ? -1 : 1;
    if (a.stream !== b.stream) return a.stream < b.stream ? -1 : 1;
    const active = (a.state === "parked" ? 0 : 1) - (b.state === "parked" ? 0 : 1);
    if (active !== 0) return active;
    const [ea, ra = ""] = a.episode.split(".");
    const [eb, rb = ""] = b.episode.split(".");
    if (ea !== eb) return ea < eb ? 1 : -1;
    if (ra === rb) return 0;
    return ra === "" ? -1 : rb === "" ? 1 : ra < rb ? 1 : -1;
  };

  return {
    async park(group, writes) {
      checkParkWrites(group, writes);
      const outcomes: Array<ParkWriteOutcome | undefined> = writes.map(() => undefined);
      const errors: unknown[] = writes.map(() => undefined);
      let next = 0;
      let failed = 0;
      // A few writes at a time: each is a handful of requests. Each stream's write stands alone,
      // so that one the table cannot take fails its own stream only.
      const worker = async () => {
        while (next < writes.length) {
          const i = next++;
          try {
            outcomes[i] = await guard(
              "write",
              `${group}/${writes[i].stream}`,
              () => parkOne(group, writes[i]),
            );
          } catch (e) {
            errors[i] = e;
            failed++;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(16, writes.length) }, worker));
      if (failed === writes.length) throw errors[0];
      if (failed > 0) throw new ParkWritesError(outcomes, errors);
      return outcomes as ParkWriteOutcome[];
    },

    async list(group, options = {}) {
      if (group !== undefined) checkParkName("group", group);
      const resolved = options.resolved === true && options.requested !== true;
      const requested = options.requested === true;
      return await guard("list", group ?? "every group", async () => {
        if (group !== undefined) return (await listGroup(group, resolved, requested)).sort(order);
        const groups = new Set<string>();
        let start: Item | undefined;
        do {
          const page = (await client.send(
            new ScanCommand({
              TableName,
              FilterExpression: "begins_with(p, :a)",
              ExpressionAttributeValues: { ":a": S('["a",') },
              ProjectionExpression: "g",
              ExclusiveStartKey: start,
              ConsistentRead: true,
            }),
          )) as ScanCommandOutput;
          for (const item of page.Items ?? []) groups.add(str(item.g)!);
          start = page.LastEvaluatedKey;
        } while (start);
        if (resolved) {
          start = undefined;
          do {
            const page = (await client.send(
              new ScanCommand({
                TableName,
                FilterExpression: "begins_with(p, :r)",
                ExpressionAttributeValues: { ":r": S('["r",') },
                ProjectionExpression: "g",
                ExclusiveStartKey: start,
                ConsistentRead: true,
              }),
            )) as ScanCommandOutput;
            for (const item of page.Items ?? []) groups.add(str(item.g)!);
            start = page.LastEvaluatedKey;
          } while (start);
        }
        const all = await Promise.all(
          [...groups].map((g) => listGroup(g, resolved, requested)),
        );
        return all.flat().sort(order);
      });
    },

    async get(group, stream) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      return await guard("get", `${group}/${stream}`, () => latest(group, stream));
    },

    async events(group, stream, episode, from, limit) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      checkInteger("from", from, 0);
      checkInteger("limit", limit, 1);
      return await guard("read", `${group}/${stream}`, async () => {
        const item = await getItem(activeKey(group, stream));
        if (item === undefined || str(item.ep) !== episode) return [];
        const start = Math.max(from, num(item.first));
        if (start >= num(item.next)) return [];
        // A Query page stops at 1 MB: read on until `limit` events or the episode's end, since
        // a short answer means the episode has no more.
        const out: StreamEvent[] = [];
        let startKey: Item | undefined;
        do {
          const page = (await client.send(
            new QueryCommand({
              TableName,
              KeyConditionExpression: "p = :p AND k BETWEEN :a AND :b",
              ExpressionAttributeValues: {
                ":p": S(eventsPartition(group, stream, episode)),
                ":a": S(pad(start)),
                ":b": S(pad(num(item.next) - 1)),
              },
              Limit: limit - out.length,
              ConsistentRead: true,
              ExclusiveStartKey: startKey,
            }),
          )) as QueryCommandOutput;
          for (const i of page.Items ?? []) out.push(decodeParkedEvent(str(i.ev)!));
          startKey = page.LastEvaluatedKey;
        } while (startKey !== undefined && out.length < limit);
        return out;
      });
    },

    async request(group, stream, request) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      checkParkRequest(request);
      return await guard("request", `${group}/${stream}`, async () => {
        for (let attempt = 1;; attempt++) {
          const current = await latest(group, stream);
          if (current === undefined || current.state !== "parked") {
            if (current?.resolution?.action === request.action) return current;
            throw new StreamNotParkedError(group, stream);
          }
          const pending = current.request;
          if (pending?.action === request.action) return current;
          const now = Date.now();
          if (pending !== undefined && current.claim !== undefined && current.claim.until > now) {
            throw new ParkRequestConflictError(group, stream, pending.action, request.action);
          }
          const upTo = skipBound(current, request);
          const item: Item = {
            ...requestKey(group, stream),
            ep: S(current.episode),
            act: S(request.action),
            by: S(request.by),
            at: N(now),
            ...(request.reason === undefined ? {} : { rsn: S(request.reason) }),
            ...(upTo === undefined ? {} : { to: N(upTo) }),
          };
          const input: TransactWriteItemsCommandInput = {
            TransactItems: [
              {
                ConditionCheck: {
                  TableName,
                  Key: activeKey(group, stream),
                  ConditionExpression: "ep = :ep",
                  ExpressionAttributeValues: { ":ep": S(current.episode) },
                },
              },
              {
                Put: {
                  TableName,
                  Item: item,
                  ConditionExpression: pending === undefined
                    ? "attribute_not_exists(p) OR ep <> :ep"
                    : "ep = :ep AND act = :act AND " +
                      (current.claim === undefined ? "attribute_not_exists(cb)" : "cb = :cb"),
                  ExpressionAttributeValues: {
                    ":ep": S(current.episode),
                    ...(pending === undefined ? {} : { ":act": S(pending.action) }),
                    ...(current.claim === undefined ? {} : { ":cb": S(current.claim.by) }),
                  },
                },
              },
            ],
          };
          try {
            await client.send(new TransactWriteItemsCommand(input));
            return (await active(group, stream)) ?? current;
          } catch (e) {
            if (!(e instanceof TransactionCanceledException) || attempt >= 10) throw e;
            await sleep(retry.delay(attempt)); // changed meanwhile: decide again
          }
        }
      });
    },

    async claim(group, stream, episode, claim) {
      checkParkName("by", claim?.by);
      checkInteger("until", claim.until, 0);
      if (claim.handledTo !== undefined) checkInteger("handledTo", claim.handledTo, 0);
      if (claim.token !== undefined) checkParkName("token", claim.token);
      return await guard("claim", `${group}/${stream}`, async () => {
        const token = claim.token ?? newClaimToken();
        const partition = eventsPartition(group, stream, episode);
        for (let attempt = 1;; attempt++) {
          // A release's progress goes in the claim's own transaction: recorded only while the
          // claim holds, so a sink whose claim lapsed (or was taken) changes nothing.
          let progress: { update: TransactItem; dropped: number } | undefined;
          if (claim.handledTo !== undefined) {
            const item = await getItem(activeKey(group, stream));
            if (item === undefined || str(item.ep) !== episode) return undefined;
            progress = await episodeUpdate(group, stream, episode, item, { to: claim.handledTo });
          }
          try {
            await client.send(
              new TransactWriteItemsCommand({
                TransactItems: [
                  progress?.update ?? episodeCheck(group, stream, episode),
                  {
                    Update: {
                      TableName,
                      Key: requestKey(group, stream),
                      UpdateExpression: "SET cb = :by, cu = :until, ct = :ct",
                      // A new claim only where none is held; a renewal only of its own live claim.
                      ConditionExpression: claim.token === undefined
                        ? "ep = :ep AND (attribute_not_exists(cb) OR cu <= :now)"
                        : "ep = :ep AND ct = :ct AND cu > :now",
                      ExpressionAttributeValues: {
                        ":ep": S(episode),
                        ":by": S(claim.by),
                        ":until": N(claim.until),
                        ":ct": S(token),
                        ":now": N(Date.now()),
                      },
                    },
                  },
                ],
              }),
            );
          } catch (e) {
            if (!(e instanceof TransactionCanceledException)) throw e;
            const [onEpisode, onClaim] = (e.CancellationReasons ?? []).map((r) => r?.Code);
            // Refused by the fence, or the episode is gone: nothing of it was applied.
            if (onClaim === "ConditionalCheckFailed") return undefined;
            if (onEpisode === "ConditionalCheckFailed" && progress === undefined) return undefined;
            if (attempt >= 20) throw e;
            // Events added meanwhile (the progress is decided again), or a conflicting write.
            await sleep(retry.delay(attempt));
            continue;
          }
          if (progress !== undefined) await deleteEvents(partition, claim.handledTo!);
          break;
        }
        const now = await active(group, stream);
        return now?.episode === episode ? now : undefined;
      });
    },

    async resolve(group, stream, episode, resolution) {
      checkParkName("by", resolution?.by);
      checkParkName("token", resolution.token);
      if (resolution.expectedNext !== undefined) {
        checkInteger("expectedNext", resolution.expectedNext, 0);
      }
      return await guard("resolve", `${group}/${stream}`, async () => {
        const [item, request] = await Promise.all([
          getItem(activeKey(group, stream)),
          getItem(requestKey(group, stream)),
        ]);
        if (item === undefined || str(item.ep) !== episode) return undefined;
        if (request === undefined || str(request.ep) !== episode) return undefined;
        const now = Date.now();
        if (str(request.ct) !== resolution.token || num(request.cu) <= now) return undefined;
        const action = str(request.act) as ParkAction;
        const next = num(item.next);
        if (
          action === "release" && resolution.expectedNext !== undefined &&
          next !== resolution.expectedNext
        ) return undefined;
        const upTo = action === "skip" && request.to?.N !== undefined ? num(request.to) : undefined;
        if (upTo !== undefined && next > upTo) {
          return await skipBelow(group, stream, episode, item, request, upTo, resolution.by, now);
        }
        const done: Item = {
          ...item,
          p: S(resolvedPartition(group)),
          k: S(JSON.stringify([keyPart(stream), episode])),
          st: S(action === "release" ? "released" : "skipped"),
          by: request.by,
          ...(request.rsn ? { rsn: request.rsn } : {}),
          ra: N(Date.now()),
          ab: S(resolution.by),
          re: item.events,
          events: N(0),
          ...(upTo === undefined ? {} : { to: N(upTo) }),
        };
        try {
          await client.send(
            new TransactWriteItemsCommand({
              TransactItems: [
                {
                  Delete: {
                    TableName,
                    Key: activeKey(group, stream),
                    ConditionExpression: "ep = :ep AND #next = :next",
                    ExpressionAttributeNames: { "#next": "next" },
                    ExpressionAttributeValues: { ":ep": S(episode), ":next": N(next) },
                  },
                },
                {
                  Delete: {
                    TableName,
                    Key: requestKey(group, stream),
                    ConditionExpression: "ep = :ep AND ct = :ct AND cu > :now",
                    ExpressionAttributeValues: {
                      ":ep": S(episode),
                      ":ct": S(resolution.token),
                      ":now": N(now),
                    },
                  },
                },
                { Put: { TableName, Item: done, ConditionExpression: "attribute_not_exists(p)" } },
              ],
            }),
          );
        } catch (e) {
          if (e instanceof TransactionCanceledException) return undefined;
          throw e;
        }
        await deleteEvents(eventsPartition(group, stream, episode));
        return entryOf(done);
      });
    },
  };
}
