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
 *
 * (keys are JSON texts; a group or stream name over 400 bytes of UTF-8 is keyed by `#` and its
 * SHA-256, since DynamoDB keys are bounded, and kept whole in the item). A write adds event items first and then moves the episode's `next`
 * on with a condition on its old value; a resolution deletes the active episode in a
 * transaction conditioned on `next` (for a release) and on the claim: an event written while an
 * episode is resolved is either counted in it, or its writer is told the stream is not parked
 * any more and handles the event itself. Event items of a resolved episode are deleted after
 * the transaction; a crash in between leaves items no read reaches (episode ids are unique).
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
const S = (s: string): AttributeValue => ({ S: s });
const N = (n: number): AttributeValue => ({ N: String(n) });
const num = (v: AttributeValue | undefined) => Number(v?.N);
const str = (v: AttributeValue | undefined) => v?.S;
const pad = (index: number) => String(index).padStart(16, "0");

/** Episode ids sort by time: the latest resolved episode of a stream comes last. */
const newEpisode = () =>
  Date.now().toString(36).padStart(10, "0") + crypto.randomUUID().slice(0, 8);

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

  /**
   * A bounded skip of an episode with events at or above its bound: the skip is recorded in the
   * history with the request's removal (fenced by the claim), then the events below the bound
   * leave the episode, which stays active from the bound on.
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
    const first = num(item.first);
    const dropped = await countEvents(eventsPartition(group, stream, episode), first, upTo);
    const record: Item = {
      ...item,
      p: S(resolvedPartition(group)),
      k: S(JSON.stringify([keyPart(stream), episode, `s${now}`])),
      ep: S(`${episode}.s${now.toString(36)}`),
      st: S("skipped"),
      next: N(upTo),
      by: request.by,
      ...(request.rsn ? { rsn: request.rsn } : {}),
      ra: N(now),
      ab: S(by),
      re: N(dropped),
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
          ],
        }),
      );
    } catch (e) {
      if (e instanceof TransactionCanceledException) return undefined;
      throw e;
    }
    await advanceFirst(group, stream, episode, upTo);
    const after = await active(group, stream);
    if (after === undefined || after.episode !== episode) return undefined;
    return { ...after, resolution: entryOf(record).resolution };
  }

  /** Moves the episode's `first` up to `handledTo`, dropping the events below it. */
  async function advanceFirst(group: string, stream: string, episode: string, handledTo: number) {
    const partition = eventsPartition(group, stream, episode);
    for (let attempt = 1;; attempt++) {
      const item = await getItem(activeKey(group, stream));
      if (item === undefined || str(item.ep) !== episode || num(item.first) >= handledTo) return;
      const first = num(item.first);
      const dropped = await countEvents(partition, first, handledTo);
      try {
        await client.send(
          new UpdateItemCommand({
            TableName,
            Key: activeKey(group, stream),
            UpdateExpression:
              "SET #first = :h, #next = if_not_exists(#next, :h), #events = #events - :d",
            ConditionExpression: "ep = :ep AND #first = :first",
            ExpressionAttributeNames: { "#first": "first", "#next": "next", "#events": "events" },
            ExpressionAttributeValues: {
              ":h": N(handledTo),
              ":d": N(dropped),
              ":ep": S(episode),
              ":first": N(first),
            },
          }),
        );
        if (num(item.next) < handledTo) {
          await client.send(
            new UpdateItemCommand({
              TableName,
              Key: activeKey(group, stream),
              UpdateExpression: "SET #next = :h",
              ConditionExpression: "ep = :ep AND #next < :h",
              ExpressionAttributeNames: { "#next": "next" },
              ExpressionAttributeValues: { ":h": N(handledTo), ":ep": S(episode) },
            }),
          ).catch((e) => {
            if (!(e instanceof ConditionalCheckFailedException)) throw e;
          });
        }
        await deleteEvents(partition, handledTo);
        return;
      } catch (e) {
        if (!(e instanceof ConditionalCheckFailedException)) throw e;
        await sleep(retry.delay(attempt)); // moved meanwhile: look again
      }
    }
  }

  async function parkOne(group: string, w: ParkWrite): Promise<ParkWriteOutcome> {
    const key = activeKey(group, w.stream);
    let header: Item | undefined;
    if (w.failure !== undefined) {
      const f = w.failure;
      const first = w.events[0]?.index ?? w.handledTo ?? 0;
      const candidate = newEpisode();
      const { Attributes } = (await client.send(
        new UpdateItemCommand({
          TableName,
          Key: key,
          UpdateExpression: "SET g = :g, s = :s, err = :err, att = :att, lf = :lf, " +
            "ff = if_not_exists(ff, :ff), ep = if_not_exists(ep, :ep), " +
            "pa = if_not_exists(pa, :now), #first = if_not_exists(#first, :first), " +
            "#next = if_not_exists(#next, :first), #events = if_not_exists(#events, :zero)",
          ExpressionAttributeNames: { "#first": "first", "#next": "next", "#events": "events" },
          ExpressionAttributeValues: {
            ":g": S(group),
            ":s": S(w.stream),
            ":err": S(truncateParkError(f.error, MAX_ERROR_BYTES)),
            ":att": N(f.attempts),
            ":lf": N(f.lastFailedAt),
            ":ff": N(f.firstFailedAt),
            ":ep": S(candidate),
            ":now": N(Date.now()),
            ":first": N(first),
            ":zero": N(0),
          },
          ReturnValues: "ALL_NEW",
        }),
      )) as UpdateItemCommandOutput;
      header = Attributes!;
      const episode = str(header.ep)!;
      // Parked again after a release: its request and claim are over (a new episode has none).
      if (episode !== candidate) {
        const request = await getItem(requestKey(group, w.stream));
        const applied = request !== undefined && str(request.ep) === episode &&
          str(request.act) === "release" && request.cb !== undefined;
        // A release being applied failed again: recorded in the history with the request's
        // removal, so that the record is written once (a repeated write finds no request).
        const record: Item | undefined = applied
          ? {
            ...header,
            p: S(resolvedPartition(group)),
            k: S(JSON.stringify([keyPart(w.stream), episode, `f${Date.now()}`])),
            ep: S(`${episode}.f${Date.now().toString(36)}`),
            st: S("failed"),
            by: request.by,
            ...(request.rsn ? { rsn: request.rsn } : {}),
            ra: N(Date.now()),
            ab: request.cb,
            re: N(
              await countEvents(
                eventsPartition(group, w.stream, episode),
                num(header.first),
                Math.max(num(header.first), w.handledTo ?? 0),
              ),
            ),
            events: N(0),
          }
          : undefined;
        await client.send(
          new TransactWriteItemsCommand({
            TransactItems: [
              {
                Delete: {
                  TableName,
                  Key: requestKey(group, w.stream),
                  ConditionExpression: applied
                    ? "ep = :ep AND ct = :ct"
                    : "attribute_not_exists(p) OR ep = :ep",
                  ExpressionAttributeValues: {
                    ":ep": S(episode),
                    ...(applied ? { ":ct": request.ct ?? S("") } : {}),
                  },
                },
              },
              ...(record === undefined ? [] : [{ Put: { TableName, Item: record } }]),
            ],
          }),
        ).catch((e) => {
          if (!(e instanceof TransactionCanceledException)) throw e;
        });
      }
      if (w.handledTo !== undefined && w.handledTo > num(header.first)) {
        await advanceFirst(group, w.stream, episode, w.handledTo);
        header = await getItem(key);
        if (header === undefined || str(header.ep) !== episode) return "notParked";
      }
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
    const encoded = w.events.map((e) => {
      const text = encodeParkedEvent(e);
      return { index: e.index, text, bytes: utf8Length(text) };
    });
    for (const e of encoded) {
      if (e.bytes > MAX_EVENT_BYTES) throw new ParkEventTooLargeError(w.stream, e.index, e.bytes);
    }
    let pending = encoded.filter((e) => e.index >= num(header!.first));
    while (pending.length > 0) {
      // Each chunk in one transaction with the episode's next and count: all or nothing.
      let size = 0;
      let n = 0;
      while (n < pending.length && n < TRANSACT_EVENTS && size + pending[n].bytes < 3e6) {
        size += pending[n].bytes;
        n++;
      }
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
                ...chunk.map((e) => ({
                  Put: {
                    TableName,
                    Item: { p: S(partition), k: S(pad(e.index)), ev: S(e.text) },
                    ConditionExpression: "attribute_not_exists(k)",
                  },
                })),
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

  const order = (a: ParkedStream, b: ParkedStream) =>
    a.group < b.group
      ? -1
      : a.group > b.group
      ? 1
      : a.stream < b.stream
      ? -1
      : a.stream > b.stream
      ? 1
      : (a.state === "parked" ? 0 : 1) - (b.state === "parked" ? 0 : 1) ||
        // The history newest first; a failed release before the resolution of its episode.
        (b.resolution?.at ?? 0) - (a.resolution?.at ?? 0) ||
        (a.state === "failed" ? 1 : 0) - (b.state === "failed" ? 1 : 0) ||
        (a.episode < b.episode ? 1 : a.episode > b.episode ? -1 : 0);

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
        try {
          await client.send(
            new TransactWriteItemsCommand({
              TransactItems: [
                {
                  ConditionCheck: {
                    TableName,
                    Key: activeKey(group, stream),
                    ConditionExpression: "ep = :ep",
                    ExpressionAttributeValues: { ":ep": S(episode) },
                  },
                },
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
                      ":ct": S(claim.token ?? newClaimToken()),
                      ":now": N(Date.now()),
                    },
                  },
                },
              ],
            }),
          );
        } catch (e) {
          if (e instanceof TransactionCanceledException) return undefined;
          throw e;
        }
        if (claim.handledTo !== undefined) {
          await advanceFirst(group, stream, episode, claim.handledTo);
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
