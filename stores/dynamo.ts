/**
 * An event store in one DynamoDB table, with DynamoDB Streams enabled so that an indexer
 * (`stores/dynamo-indexer.ts`) can build the ordered index that `sources/dynamo.ts` reads.
 *
 * Layout (partition key `p` = stream name, sort key `i` = number):
 * - one item per append at `i` = the index of its first event, holding `n` (the next index),
 *   `ts` (append time, ms) and `e` (the events: type, id, JSON or binary data and meta);
 * - a tip item at `i = -1` holding the stream's version `n`, and for each event type the index
 *   of its latest event (attribute `l:{type}`). Each append updates the tip under the
 *   expected-version condition and puts its item in the same transaction, so two writers can
 *   never both extend a stream from the same version.
 *
 * The per-type indexes make `readLastEvent(stream, type)` one tip read and one query whatever
 * the stream's length. They are bounded: an append of more than 100 distinct types (whose
 * marks would overflow the 4 KB limit of an update expression), or one whose new marks would
 * take the tip past DynamoDB's 400 KB item limit (many long distinct types over a stream's
 * life), writes no marks and moves the tip's `x` to its end; `readLastEvent` then trusts a mark
 * only at or above `x` and otherwise searches backwards from the stream's end. Keep the
 * distinct types of a stream few: every mark is read and written with the tip. A decider with rolling snapshots uses `readFromLast(stream, type)`
 * instead: a query backwards from the stream's end that stops at the latest snapshot, so a cold
 * load is usually one query however long the stream.
 * Streams appended to before the tip kept them find their types from the next append of each.
 *
 * @module
 */
import {
  type AttributeValue,
  CreateTableCommand,
  DescribeTableCommand,
  type DynamoDBClient,
  GetItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  ResourceInUseException,
  TransactionCanceledException,
  type TransactWriteItem,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import { getLogger } from "@logtape/logtape";
import { EventDecodeError } from "../core/codec.ts";
import type { LastEventReader, SnapshotReader } from "../core/decider.ts";
import { ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { backoff } from "../core/failure.ts";
import type { StreamEvent } from "../core/event.ts";
import { storedJson } from "../core/json.ts";
import {
  type AppendResult,
  type EventData,
  type EventStore,
  type ExpectedVersion,
  type ReadStreamOptions,
  WrongExpectedVersionError,
} from "../core/store.ts";
import { checkStreamName, InvalidStreamNameError, type StreamName } from "../core/streamName.ts";
import { sleep } from "../core/tranches.ts";
import { actionBytes, MAX_TRANSACTION_BYTES, utf8Length } from "./dynamo-size.ts";

// The sort key of a stream's tip item; event items use their first index (>= 0).
const TIP_INDEX = -1;
// The tip attribute holding the index of the latest event of a type.
const log = getLogger(["impel", "dynamo", "store"]);
const lastOfType = (type: string): string => `l:${type}`;
// At most this many distinct types per append get a mark on the tip: more would overflow the
// 4 KB limit of the tip's UpdateExpression (about 280 marks).
const MAX_TYPE_MARKS = 100;
// Pages of 10 items read down from an index for the item holding it, past foreign items.
const HOLDER_PAGES = 5;

// DynamoDB's item limit is 400 KB (409 600 bytes), counted as the UTF-8 bytes of attribute
// names and values; sizes here are computed the same way and keep a margin below it.
const MAX_ITEM_BYTES = 400_000;
// DynamoDB's upper bound on a number attribute's size, used for the keys and counters.
const NUMBER_BYTES = 21;
// TransactWriteItems takes at most 100 actions (one is the tip) and 4 MiB in total, counted by
// actionBytes (the tip's update and each item's own attributes included).
const MAX_TRANSACTION_ITEMS = 99;
const ANY_VERSION_ATTEMPTS = 10;

/**
 * The longest stream name the store accepts, in UTF-8 bytes: DynamoDB's 2 048-byte partition
 * key limit less the index's `$stream#` prefix (`stores/dynamo-index.ts`), so that every
 * stream the store holds can be indexed.
 *
 * @example
 * ```ts
 * import { MAX_STREAM_NAME_BYTES } from "@impel/impel/stores/dynamo";
 * const name = `Order-${"x".repeat(100)}`;
 * console.log(new TextEncoder().encode(name).length <= MAX_STREAM_NAME_BYTES); // true
 * ```
 */
export const MAX_STREAM_NAME_BYTES = 2_040;

/**
 * The longest event type the store accepts, in UTF-8 bytes. Types travel in every index entry
 * and name an attribute of the stream's tip, so they are kept short enough that any entry can be
 * split into chunks below DynamoDB's item limit.
 *
 * @example
 * ```ts
 * import { MAX_EVENT_TYPE_BYTES } from "@impel/impel/stores/dynamo";
 * console.log(MAX_EVENT_TYPE_BYTES); // 1024
 * ```
 */
export const MAX_EVENT_TYPE_BYTES = 1_024;

/**
 * Returns `stream` if it is a valid stream name ({@linkcode checkStreamName}) that DynamoDB and
 * the index can key (at most {@linkcode MAX_STREAM_NAME_BYTES} in UTF-8), else throws
 * {@linkcode InvalidStreamNameError}.
 *
 * @example
 * ```ts
 * import { checkDynamoStreamName } from "@impel/impel/stores/dynamo";
 * checkDynamoStreamName("Order-1"); // "Order-1"
 * try {
 *   checkDynamoStreamName(`Order-${"€".repeat(700)}`); // 2 106 bytes
 * } catch (e) {
 *   console.log((e as Error).name); // "InvalidStreamNameError"
 * }
 * ```
 */
export function checkDynamoStreamName(stream: StreamName): StreamName {
  checkStreamName(stream);
  const bytes = utf8Length(stream);
  if (bytes > MAX_STREAM_NAME_BYTES) {
    throw new InvalidStreamNameError(
      stream.slice(0, 80),
      `is ${bytes} bytes in UTF-8, over the ${MAX_STREAM_NAME_BYTES} that DynamoDB's key limit leaves for the index`,
    );
  }
  return stream;
}
const CONFLICT_ATTEMPTS = 10;
// Between tries while another transaction holds the tip: short, jittered, growing a little.
const CONTENTION_BACKOFF = backoff({ initialDelayMs: 10, maxDelayMs: 100, factor: 1.5, jitter: 1 });

/**
 * The part of the AWS SDK's `DynamoDBClient` (from `@aws-sdk/client-dynamodb`) that impel
 * uses: `send`. Every impel function that talks to DynamoDB takes one; pass a
 * `DynamoDBClient`, which impel never closes. Declared here rather than taken from the SDK so
 * that impel's API does not pull the SDK's types into its own.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { type DynamoClient, dynamoStore } from "@impel/impel/stores/dynamo";
 * const client: DynamoClient = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 * });
 * const store = dynamoStore(client, { tableName: "events" });
 * ```
 */
export interface DynamoClient {
  /**
   * Sends one DynamoDB command (a `GetItemCommand`, `QueryCommand`, ...) with the SDK's
   * per-request options (such as `abortSignal`), resolving with the command's output.
   */
  send(command: object, options?: object): Promise<unknown>;
}

/**
 * The part of the AWS SDK's `DynamoDBStreamsClient` (from `@aws-sdk/client-dynamodb-streams`)
 * that impel uses: `send`. {@linkcode DynamoClient} explains why it is declared here; pass a
 * `DynamoDBStreamsClient`.
 *
 * @example
 * ```ts
 * import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
 * import type { DynamoStreamsClient } from "@impel/impel/stores/dynamo";
 * const streamsClient: DynamoStreamsClient = new DynamoDBStreamsClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 * });
 * ```
 */
export interface DynamoStreamsClient {
  /**
   * Sends one DynamoDB Streams command (a `DescribeStreamCommand`, `GetRecordsCommand`, ...)
   * with the SDK's per-request options, resolving with the command's output.
   */
  send(command: object, options?: object): Promise<unknown>;
}

/**
 * Options of {@linkcode dynamoStore}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { dynamoStore, type DynamoStoreOptions } from "@impel/impel/stores/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * // A read model that tolerates slightly stale reads at half the read cost.
 * const options: DynamoStoreOptions = { tableName: "events", consistentRead: false };
 * const store = dynamoStore(client, options);
 * const events = await store.readStream("Order-1");
 * ```
 */
export interface DynamoStoreOptions {
  /** The events table, created by {@linkcode createEventTable}. */
  readonly tableName: string;
  /** Strongly consistent reads (default true); eventually consistent reads cost half. */
  readonly consistentRead?: boolean;
}

/**
 * An {@linkcode EventStore} kept in DynamoDB.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { type DynamoEventStore, dynamoStore } from "@impel/impel/stores/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const store: DynamoEventStore = dynamoStore(client, { tableName: "events" });
 * const version = await store.version("Order-1"); // 0 if the stream does not exist
 * await store.append("Order-1", [{ type: "Shipped", data: {} }], version);
 * console.log(store.tableName, await store.version("Order-1")); // "events" version + 1
 * ```
 */
export interface DynamoEventStore extends EventStore, LastEventReader, SnapshotReader {
  /** The DynamoDB client the store was created with. */
  readonly client: DynamoClient;
  /** The events table. */
  readonly tableName: string;
  /** The stream's version (its event count), 0 if it does not exist. */
  version(stream: StreamName): Promise<number>;
  /**
   * Reads a stream's events. An event that does not decode rejects the read with
   * {@linkcode EventDecodeError}, unless `options.onInvalid` takes it.
   */
  readStream(stream: StreamName, options?: DynamoReadStreamOptions): Promise<StreamEvent[]>;
}

/**
 * Options of {@linkcode DynamoEventStore.readStream}: those of every store, and what to do with
 * an event that does not decode.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { dynamoStore, type DynamoReadStreamOptions } from "@impel/impel/stores/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const store = dynamoStore(client, { tableName: "events" });
 * const options: DynamoReadStreamOptions = {
 *   onInvalid: (event, error) => console.error(event.index, error.message),
 * };
 * const events = await store.readStream("Order-1", options); // without the undecodable ones
 * ```
 */
export interface DynamoReadStreamOptions extends ReadStreamOptions {
  /**
   * Called for each event that does not decode (its body is not JSON, it has no type), with the
   * event as stored (`data` and `meta` the raw text) and the error; the event is left out of
   * the result. Without it such an event rejects the read.
   */
  readonly onInvalid?: (event: StreamEvent, error: EventDecodeError) => void;
}

/**
 * A DynamoDB table definition went wrong: creation failed, or an existing table has the wrong
 * key schema or no stream of new images.
 *
 * @example
 * ```ts
 * import { DynamoTableError } from "@impel/impel/stores/dynamo";
 * const e = new DynamoTableError("events", "has no stream");
 * console.log(e.code); // "DynamoTable"
 * ```
 */
export class DynamoTableError extends ImpelError {
  /** The table concerned. */
  readonly tableName: string;
  /** Creates the error; `problem` completes "table {name} ...". */
  constructor(tableName: string, problem: string, options?: ErrorOptions) {
    super("DynamoTable", `DynamoDB table ${tableName} ${problem}`, options);
    this.tableName = tableName;
  }
}

/**
 * DynamoDB cancelled an append for a reason other than a version conflict (which is a
 * `WrongExpectedVersionError`): `code` says which. `"DynamoStrayItem"`: an item the store did not
 * write occupies a key the append needs; `"DynamoAppendContention"`: other transactions kept
 * holding the stream; `"DynamoAppendThrottled"`: DynamoDB kept throttling it (transient, see
 * {@linkcode isTransientDynamoError}); `"DynamoAppendRefused"`: any other cancellation reason (a
 * validation error, an item collection over its limit), named in the message. The SDK's error is
 * the `cause`.
 *
 * @example
 * ```ts
 * import { DynamoAppendError } from "@impel/impel/stores/dynamo";
 * const e = new DynamoAppendError("DynamoStrayItem", "Order-1", 5, "an item holds index 5");
 * console.log(e.code, e.stream, e.expected); // "DynamoStrayItem" "Order-1" 5
 * ```
 */
export class DynamoAppendError extends ImpelError {
  /** The stream appended to. */
  readonly stream: StreamName;
  /** The version the append expected. */
  readonly expected: number;
  /** Creates the error; `problem` says what DynamoDB refused. */
  constructor(
    code:
      | "DynamoStrayItem"
      | "DynamoAppendContention"
      | "DynamoAppendThrottled"
      | "DynamoAppendRefused",
    stream: StreamName,
    expected: number,
    problem: string,
    cause?: unknown,
  ) {
    super(code, `append to ${stream} at version ${expected} failed: ${problem}`, { cause });
    this.stream = stream;
    this.expected = expected;
  }
}

/**
 * The key schema (and stream) of a table created by {@linkcode ensureTable}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { ensureTable, type TableDefinition } from "@impel/impel/stores/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * // A projection table: one item per order, keyed by id and version.
 * const definition: TableDefinition = {
 *   tableName: "order-summaries",
 *   partitionKey: ["id", "S"],
 *   sortKey: ["version", "N"],
 * };
 * await ensureTable(client, definition);
 * ```
 */
export interface TableDefinition {
  /** The table name. */
  readonly tableName: string;
  /** The partition key's attribute name and type (string or number). */
  readonly partitionKey: readonly [name: string, type: "S" | "N"];
  /** The sort key's attribute name and type, if the table has one. */
  readonly sortKey?: readonly [name: string, type: "S" | "N"];
  /** Enable DynamoDB Streams with new images. */
  readonly streamNewImages?: boolean;
}

/**
 * Creates a DynamoDB table (on-demand billing) unless it exists, waits until it is active, and
 * checks that an existing one has the same key schema (and a stream, when one is asked for).
 * The event store, the index and the checkpoint store create their tables with it.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { ensureTable } from "@impel/impel/stores/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * await ensureTable(client, { tableName: "things", partitionKey: ["p", "S"] });
 * ```
 */
export async function ensureTable(
  dynamo: DynamoClient,
  definition: TableDefinition,
  options: { readonly timeoutMs?: number } = {},
): Promise<void> {
  const client = sdkClient(dynamo);
  const name = checkTableName("tableName", definition?.tableName);
  const keys = [definition.partitionKey, definition.sortKey].filter((k) => k !== undefined);
  const keySchema = keys.map(([AttributeName], k) => ({
    AttributeName,
    KeyType: k === 0 ? "HASH" as const : "RANGE" as const,
  }));
  try {
    await client.send(
      new CreateTableCommand({
        TableName: name,
        AttributeDefinitions: keys.map(([AttributeName, AttributeType]) => ({
          AttributeName,
          AttributeType,
        })),
        KeySchema: keySchema,
        BillingMode: "PAY_PER_REQUEST",
        StreamSpecification: definition.streamNewImages
          ? { StreamEnabled: true, StreamViewType: "NEW_IMAGE" }
          : undefined,
      }),
    );
  } catch (e) {
    if (!(e instanceof ResourceInUseException)) {
      throw new DynamoTableError(name, `could not be created: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: name }));
    const wantKeys = JSON.stringify(keySchema);
    const haveKeys = JSON.stringify(
      Table?.KeySchema?.map(({ AttributeName, KeyType }) => ({ AttributeName, KeyType })),
    );
    if (wantKeys !== haveKeys) {
      throw new DynamoTableError(name, `exists with key schema ${haveKeys}, expected ${wantKeys}`);
    }
    if (definition.streamNewImages) {
      const spec = Table?.StreamSpecification;
      const view = spec?.StreamViewType;
      if (!spec?.StreamEnabled || (view !== "NEW_IMAGE" && view !== "NEW_AND_OLD_IMAGES")) {
        throw new DynamoTableError(name, "exists without a stream of new images");
      }
    }
    if (Table?.TableStatus === "ACTIVE") return;
    if (Date.now() > deadline) {
      throw new DynamoTableError(name, `is still ${Table?.TableStatus} after waiting`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/**
 * Creates the events table (on-demand billing, DynamoDB Streams with new images) unless it
 * exists; waits until it is active.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createEventTable } from "@impel/impel/stores/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * await createEventTable(client, "events");
 * ```
 */
export async function createEventTable(client: DynamoClient, tableName: string): Promise<void> {
  await ensureTable(client, {
    tableName,
    partitionKey: ["p", "S"],
    sortKey: ["i", "N"],
    streamNewImages: true,
  });
}

/**
 * An event store over a DynamoDB table created by {@linkcode createEventTable}. The client is
 * the caller's; the store never closes it.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createEventTable, dynamoStore } from "@impel/impel/stores/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * await createEventTable(client, "events");
 * const store = dynamoStore(client, { tableName: "events" });
 * await store.append("Order-1", [{ type: "Placed", data: { total: 3 } }], 0);
 * const events = await store.readStream("Order-1"); // [{ index: 0, type: "Placed", ... }]
 * ```
 */
export function dynamoStore(dynamo: DynamoClient, options: DynamoStoreOptions): DynamoEventStore {
  const client = sdkClient(dynamo);
  const tableName = checkTableName("tableName", options?.tableName);
  const consistentRead = options.consistentRead ?? true;

  async function version(stream: StreamName): Promise<number> {
    checkDynamoStreamName(stream);
    const { Item } = await client.send(
      new GetItemCommand({
        TableName: tableName,
        Key: { p: { S: stream }, i: { N: String(TIP_INDEX) } },
        ConsistentRead: true,
      }),
    );
    return Item?.n?.N === undefined ? 0 : Number(Item.n.N);
  }

  async function appendAt(
    stream: StreamName,
    events: readonly EventData[],
    expected: number,
  ): Promise<number> {
    const now = Date.now();
    const items = encodeAppend(stream, events, expected, now);
    const next = expected + events.length;
    const latest = new Map<string, number>();
    events.forEach((e, k) => latest.set(e.type, expected + k));
    // The tip's per-type marks are bounded (see MAX_TYPE_MARKS): an append of more distinct
    // types, or one the tip has no room left for, writes none and moves `x` to its end instead,
    // so that readLastEvent no longer trusts the marks below it.
    const tipUpdate = (marked: boolean): TransactWriteItem => {
      const names: Record<string, string> = {};
      const values: Record<string, AttributeValue> = {
        ":n": { N: String(next) },
        ":ts": { N: String(now) },
      };
      const sets = ["n = :n", "ts = :ts"];
      if (marked) {
        for (const [type, index] of latest) {
          const k = sets.length;
          names[`#l${k}`] = lastOfType(type);
          values[`:l${k}`] = { N: String(index) };
          sets.push(`#l${k} = :l${k}`);
        }
      } else sets.push("x = :n");
      if (expected !== 0) values[":v"] = { N: String(expected) };
      return {
        Update: {
          TableName: tableName,
          Key: { p: { S: stream }, i: { N: String(TIP_INDEX) } },
          UpdateExpression: `SET ${sets.join(", ")}`,
          ConditionExpression: expected === 0 ? "attribute_not_exists(n)" : "n = :v",
          ExpressionAttributeNames: marked ? names : undefined,
          ExpressionAttributeValues: values,
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        },
      };
    };
    let marked = latest.size <= MAX_TYPE_MARKS;
    const puts: TransactWriteItem[] = items.map((Item) => ({
      Put: { TableName: tableName, Item, ConditionExpression: "attribute_not_exists(p)" },
    }));
    // DynamoDB refuses a transaction over 4 MiB with a bare ValidationException: counted here,
    // the tip's update and every item's own attributes included, so that it never gets that far.
    // An append that fits only without the tip's type marks goes unmarked.
    const itemsBytes = puts.reduce((sum, put) => sum + actionBytes(put), 0);
    if (marked && itemsBytes + actionBytes(tipUpdate(true)) > MAX_TRANSACTION_BYTES) {
      marked = false;
    }
    const bytes = itemsBytes + actionBytes(tipUpdate(marked));
    if (bytes > MAX_TRANSACTION_BYTES) {
      throw new InvalidArgumentError(
        "events",
        `take ${bytes} bytes in one DynamoDB transaction with the stream's tip, over the ` +
          `${MAX_TRANSACTION_BYTES} it allows: append them in smaller groups`,
      );
    }
    for (let attempt = 1;; attempt++) {
      try {
        await client.send(
          new TransactWriteItemsCommand({ TransactItems: [tipUpdate(marked), ...puts] }),
        );
        return next;
      } catch (e) {
        if (!(e instanceof TransactionCanceledException)) {
          // A request DynamoDB refuses outright (a limit counted differently from ours): typed,
          // with DynamoDB's words, rather than the SDK's bare error.
          if ((e as Error)?.name === "ValidationException") {
            throw new DynamoAppendError(
              "DynamoAppendRefused",
              stream,
              expected,
              `DynamoDB refused the transaction: ${(e as Error).message}`,
              e,
            );
          }
          throw e;
        }
        const reasons = e.CancellationReasons ?? [];
        const reason = reasons[0];
        // The tip would outgrow DynamoDB's item limit with this append's new marks: append
        // without them (the tip stays the size it is).
        if (marked && reason?.Code === "ValidationError") {
          log.warn("the tip of {stream} has no room for more event types; appending unmarked", {
            stream,
          });
          marked = false;
          attempt--;
          continue;
        }
        if (reason?.Code === "ConditionalCheckFailed") {
          const actual = reason.Item?.n?.N === undefined ? 0 : Number(reason.Item.n.N);
          throw new WrongExpectedVersionError(stream, expected, actual);
        }
        // The tip allowed the append but an item is already where an event item goes: written
        // by another writer (the tip does not know it), it blocks this version until removed.
        // Only when the tip itself had no objection: a TransactionConflict on the tip is another
        // append mid-commit, whose event items may already be in place (contention, retried).
        const tipFine = (reason?.Code ?? "None") === "None";
        const stray = tipFine
          ? reasons.findIndex((r, k) => k > 0 && r.Code === "ConditionalCheckFailed")
          : -1;
        if (stray > 0) {
          const at = Number(items[stray - 1].i.N);
          throw new DynamoAppendError(
            "DynamoStrayItem",
            stream,
            expected,
            `an item the store did not write already holds index ${at}; remove it to append here`,
            e,
          );
        }
        // Another transaction held the tip: the outcome is unknown, so try again; the
        // condition then decides between success and a version conflict. A throttled
        // transaction wrote nothing and is tried again too (the SDK does not retry a
        // cancellation).
        const conflict = reasons.some((r) => r.Code === "TransactionConflict");
        const throttled = reasons.some((r) =>
          r.Code === "ThrottlingError" || r.Code === "ProvisionedThroughputExceeded"
        );
        if (!(conflict || throttled) || attempt >= CONFLICT_ATTEMPTS) {
          const codes = reasons.map((r) => r.Code ?? "None").filter((c) => c !== "None");
          throw new DynamoAppendError(
            conflict
              ? "DynamoAppendContention"
              : throttled
              ? "DynamoAppendThrottled"
              : "DynamoAppendRefused",
            stream,
            expected,
            conflict
              ? `other transactions kept holding the stream (${attempt} attempts)`
              : throttled
              ? `DynamoDB kept throttling it (${codes.join(", ")}; ${attempt} attempts)`
              : `DynamoDB cancelled the transaction: ${codes.join(", ") || e.message}`,
            e,
          );
        }
        await sleep(CONTENTION_BACKOFF.delay(attempt));
      }
    }
  }

  async function append(
    stream: StreamName,
    events: readonly EventData[],
    expectedVersion: ExpectedVersion,
  ): Promise<AppendResult> {
    checkDynamoStreamName(stream);
    if (!Array.isArray(events)) throw new InvalidArgumentError("events", "must be an array");
    if (expectedVersion !== "any" && (!Number.isInteger(expectedVersion) || expectedVersion < 0)) {
      throw new InvalidArgumentError(
        "expectedVersion",
        `must be a non-negative integer or "any", got ${String(expectedVersion)}`,
      );
    }
    if (events.length === 0) {
      const actual = await version(stream);
      if (expectedVersion !== "any" && expectedVersion !== actual) {
        throw new WrongExpectedVersionError(stream, expectedVersion, actual);
      }
      return { nextIndex: actual };
    }
    if (expectedVersion !== "any") {
      return { nextIndex: await appendAt(stream, events, expectedVersion) };
    }
    // "any" means "wherever the stream is": read the version and retry when another writer wins.
    let current = await version(stream);
    for (let attempt = 1;; attempt++) {
      try {
        return { nextIndex: await appendAt(stream, events, current) };
      } catch (e) {
        if (!(e instanceof WrongExpectedVersionError) || attempt >= ANY_VERSION_ATTEMPTS) throw e;
        current = e.actual ?? await version(stream);
      }
    }
  }

  async function readStream(
    stream: StreamName,
    options: DynamoReadStreamOptions = {},
  ): Promise<StreamEvent[]> {
    const onInvalid = options.onInvalid;
    checkDynamoStreamName(stream);
    const fromIndex = options.fromIndex ?? 0;
    const maxCount = options.maxCount ?? Number.POSITIVE_INFINITY;
    if (!Number.isInteger(fromIndex) || fromIndex < 0) {
      throw new InvalidArgumentError(
        "fromIndex",
        `must be a non-negative integer, got ${String(fromIndex)}`,
      );
    }
    if (maxCount !== Number.POSITIVE_INFINITY && (!Number.isInteger(maxCount) || maxCount < 0)) {
      throw new InvalidArgumentError(
        "maxCount",
        `must be a non-negative integer, got ${String(maxCount)}`,
      );
    }
    const out: StreamEvent[] = [];
    if (maxCount === 0) return out;
    // The chain rule: real append items chain, each starting where the one before ended, and
    // none ends past the stream's version. Items written around the store break the chain and
    // are skipped, so that they are never read as the stream's events. The version is read
    // alongside the first page, and again for an item ending past it (an append may have
    // landed in between).
    const tip = version(stream);
    tip.catch(() => {}); // awaited below; a failure must not go unhandled meanwhile
    let known: number | undefined;
    const pastVersion = async (n: number): Promise<boolean> => {
      if (known === undefined) known = await tip;
      if (n > known) known = await version(stream);
      return n > known;
    };
    let expected = 0;
    const walk = async (items: readonly Item[]): Promise<boolean> => {
      for (const item of items) {
        const i = Number(item.i?.N);
        const n = Number(item.n?.N);
        const fault = await chainFault(item, expected, Number.POSITIVE_INFINITY, pastVersion);
        if (fault !== undefined) {
          // Below `fromIndex` the item is none of this read's business.
          if (i >= fromIndex) foreign(stream, item, fault, onInvalid);
          continue;
        }
        if (i > expected && i > fromIndex) {
          log.warn("{stream} has no append item for events {from} to {to}", {
            stream,
            from: Math.max(expected, fromIndex),
            to: i - 1,
          });
        }
        expected = n;
        if (n > fromIndex) {
          for (const event of decodeEvents(item, onInvalid)) {
            if (event.index < fromIndex) continue;
            out.push(event);
            if (out.length >= maxCount) return true;
          }
        }
      }
      return false;
    };
    const forward = async (from: number, first?: Promise<QueryCommandOutput>) => {
      let exclusiveStartKey: Record<string, AttributeValue> | undefined;
      let next = first;
      do {
        const page: QueryCommandOutput = await (next ?? client.send(
          new QueryCommand({
            TableName: tableName,
            KeyConditionExpression: "p = :p AND i >= :i",
            ExpressionAttributeValues: { ":p": { S: stream }, ":i": { N: String(from) } },
            ConsistentRead: consistentRead,
            ExclusiveStartKey: exclusiveStartKey,
            // Each item holds at least one event, so this many items are always enough.
            Limit: Number.isFinite(maxCount) ? Math.min(maxCount, 1000) : undefined,
          }),
        ));
        next = undefined;
        if (await walk(page.Items ?? [])) return;
        exclusiveStartKey = page.LastEvaluatedKey;
      } while (exclusiveStartKey);
    };
    if (fromIndex === 0) {
      await forward(0);
    } else if (Number.isFinite(maxCount)) {
      // A bounded read is one query down from its last index: the items of the range, then
      // those below it that the chain rule needs to tell which item holds `fromIndex`.
      const top = fromIndex + maxCount - 1;
      const below = await chainWindow(stream, fromIndex, top, consistentRead, pastVersion);
      expected = below.start;
      if (await walk(below.items)) return out;
      // Short of maxCount with events past the range: items are missing inside it (warned),
      // and the read goes on past them, as a read with no bound does.
      if (known === undefined) known = await tip;
      if (top + 1 < known) await forward(top + 1);
    } else {
      const first = client.send(
        new QueryCommand({
          TableName: tableName,
          KeyConditionExpression: "p = :p AND i >= :i",
          ExpressionAttributeValues: { ":p": { S: stream }, ":i": { N: String(fromIndex) } },
          ConsistentRead: consistentRead,
        }),
      );
      first.catch(() => {}); // awaited in forward()
      const below = await chainWindow(
        stream,
        fromIndex,
        fromIndex - 1,
        consistentRead,
        pastVersion,
      );
      expected = below.start;
      await walk(below.items);
      await forward(fromIndex, first);
    }
    return out;
  }

  // The items the chain rule needs to tell which append item holds `index`, ascending: those
  // from `index` up to `top` (none when `top` < `index`), then, read down from `index`, those
  // below it down to an item that ends at or before every item above it starts and that the
  // item below it ends where it starts (so the chain passes through it), the stream's first
  // item, or HOLDER_PAGES pages.
  // `start` is where the walk starts: the lowest item read (0 at the stream's first item).
  async function chainWindow(
    stream: StreamName,
    index: number,
    top: number,
    consistent: boolean,
    pastVersion: (n: number) => Promise<boolean>,
  ): Promise<{ items: Item[]; start: number }> {
    const down: Item[] = [];
    let lowest = Number.POSITIVE_INFINITY;
    // An item that ends at or before every item above it starts, taken as where the walk
    // starts once the next item below ends where it starts (a foreign item's start is inside
    // a real item, where no real item ends).
    let pending: Item | undefined;
    let exclusiveStartKey: Record<string, AttributeValue> | undefined;
    for (let pagesBelow = 0; pagesBelow < HOLDER_PAGES;) {
      const res: QueryCommandOutput = await client.send(
        new QueryCommand({
          TableName: tableName,
          KeyConditionExpression: "p = :p AND i BETWEEN :lo AND :hi",
          ExpressionAttributeValues: {
            ":p": { S: stream },
            ":lo": { N: "0" },
            ":hi": { N: String(Math.max(top, index - 1)) },
          },
          ScanIndexForward: false,
          Limit: Math.min(Math.max(top - index + 1, 0) + 10, 1000),
          ConsistentRead: consistent,
          ExclusiveStartKey: exclusiveStartKey,
        }),
      );
      let reachedBelow = false;
      for (const item of res.Items ?? []) {
        down.push(item);
        const i = Number(item.i?.N);
        const n = Number(item.n?.N);
        if (i < index) reachedBelow = true;
        if (!(n > i) || await pastVersion(n)) continue;
        if (pending !== undefined) {
          const at = Number(pending.i.N);
          if (n === at) return { items: down.reverse(), start: at };
          lowest = Math.min(lowest, at);
          pending = undefined;
        }
        if (i < index && n <= Math.min(lowest, index)) {
          if (i === 0) return { items: down.reverse(), start: 0 };
          pending = item;
        } else lowest = Math.min(lowest, i);
      }
      if (reachedBelow) pagesBelow++;
      exclusiveStartKey = res.LastEvaluatedKey;
      if (exclusiveStartKey === undefined) return { items: down.reverse(), start: 0 };
    }
    const start = down.length === 0 ? 0 : Number(down[down.length - 1].i?.N);
    return { items: down.reverse(), start: Number.isFinite(start) ? start : 0 };
  }

  // The append item holding event `index` (i <= index < n), as the chain rule decides it.
  async function holderOf(
    stream: StreamName,
    index: number,
    consistent: boolean,
    pastVersion: (n: number) => Promise<boolean>,
  ): Promise<Item | undefined> {
    const { items, start } = await chainWindow(stream, index, index, consistent, pastVersion);
    let expected = start;
    let holder: Item | undefined;
    for (const item of items) {
      if (await chainFault(item, expected, Number.POSITIVE_INFINITY, pastVersion)) continue;
      expected = Number(item.n.N);
      if (Number(item.i.N) <= index && expected > index) holder = item;
    }
    return holder;
  }

  async function readLastEvent(
    stream: StreamName,
    type?: string,
  ): Promise<StreamEvent | undefined> {
    checkDynamoStreamName(stream);
    if (type !== undefined && (typeof type !== "string" || type.length === 0)) {
      throw new InvalidArgumentError("type", `must be a non-empty string, got ${String(type)}`);
    }
    const { Item } = await client.send(
      new GetItemCommand({
        TableName: tableName,
        Key: { p: { S: stream }, i: { N: String(TIP_INDEX) } },
        ProjectionExpression: type === undefined ? "n" : "#l, x, n",
        ExpressionAttributeNames: type === undefined ? undefined : { "#l": lastOfType(type) },
        ConsistentRead: true,
      }),
    );
    const mark = type === undefined ? Item?.n?.N : Item?.[lastOfType(type)]?.N;
    // Appends below `x` wrote no marks: a mark below it may be stale, and a missing one may hide
    // the type, so the type is looked for from the stream's end.
    const unmarked = Item?.x?.N === undefined ? 0 : Number(Item.x.N);
    if (type !== undefined && (mark === undefined ? unmarked > 0 : Number(mark) < unmarked)) {
      const tail = await readFromLast(stream, type);
      return tail[0]?.type === type ? tail[0] : undefined;
    }
    if (mark === undefined) return undefined;
    const index = type === undefined ? Number(mark) - 1 : Number(mark);
    if (index < 0) return undefined;
    const tipVersion = Item?.n?.N === undefined ? 0 : Number(Item.n.N);
    const item = await holderOf(stream, index, true, (n) => Promise.resolve(n > tipVersion));
    return item === undefined ? undefined : decodeEvents(item).find((e) => e.index === index);
  }

  async function readFromLast(stream: StreamName, type: string): Promise<StreamEvent[]> {
    checkDynamoStreamName(stream);
    if (typeof type !== "string" || type.length === 0) {
      throw new InvalidArgumentError("type", `must be a non-empty string, got ${String(type)}`);
    }
    // Newest append first; appends only ever land after what was read, so the pages join up.
    // Read down, the items are cut at each item that ends at or before every item above it
    // starts (see chainWindow): the chain rule walks each run up from that item, no item
    // ending past where the run above starts (or the version, for the newest run).
    const version_ = await version(stream);
    const pastVersion = (n: number) => Promise.resolve(n > version_);
    let end = version_;
    let lowest = Number.POSITIVE_INFINITY;
    let run: Item[] = [];
    let pending: Item | undefined; // as in chainWindow
    const newestFirst: StreamEvent[][] = [];
    // Walks one run (newest first in `run`) from its lowest item; true once `type` is found.
    const walkRun = async (start: number): Promise<boolean> => {
      let expected = start;
      const chain: Item[] = [];
      for (const item of run.reverse()) {
        const fault = await chainFault(item, expected, end, pastVersion);
        if (fault !== undefined) {
          foreign(stream, item, fault);
          continue;
        }
        expected = Number(item.n.N);
        chain.push(item);
      }
      run = [];
      end = start;
      for (const item of chain.reverse()) {
        const events = decodeEvents(item);
        const at = events.findLastIndex((e) => e.type === type);
        newestFirst.push(at < 0 ? events : events.slice(at));
        if (at >= 0) return true;
      }
      return false;
    };
    let exclusiveStartKey: Record<string, AttributeValue> | undefined;
    do {
      const page: QueryCommandOutput = await client.send(
        new QueryCommand({
          TableName: tableName,
          KeyConditionExpression: "p = :p AND i >= :i",
          ExpressionAttributeValues: { ":p": { S: stream }, ":i": { N: "0" } },
          ScanIndexForward: false,
          ConsistentRead: true,
          ExclusiveStartKey: exclusiveStartKey,
          Limit: 20,
        }),
      );
      for (const item of page.Items ?? []) {
        const i = Number(item.i?.N);
        const n = Number(item.n?.N);
        const fits = n > i && n <= end;
        if (fits && pending !== undefined) {
          const at = Number(pending.i.N);
          if (n === at) {
            if (await walkRun(at)) return newestFirst.reverse().flat();
            lowest = at;
          } else lowest = Math.min(lowest, at);
          pending = undefined;
        }
        run.push(item);
        if (!fits) continue;
        if (n <= lowest) {
          if (i !== 0) pending = item;
          else if (await walkRun(0)) return newestFirst.reverse().flat();
        } else lowest = Math.min(lowest, i);
      }
      exclusiveStartKey = page.LastEvaluatedKey;
    } while (exclusiveStartKey);
    if (run.length > 0) await walkRun(0);
    return newestFirst.reverse().flat();
  }

  return { client: dynamo, tableName, version, append, readStream, readLastEvent, readFromLast };
}

/**
 * What the indexer needs from one append: the stream, its index span, event types and time.
 *
 * @example
 * ```ts
 * import { type AppendSummary, summarizeAppend } from "@impel/impel/stores/dynamo";
 * // The NewImage of a DynamoDB Streams record: events 2 and 3 of Order-1.
 * const summary: AppendSummary | undefined = summarizeAppend({
 *   p: { S: "Order-1" },
 *   i: { N: "2" },
 *   n: { N: "4" },
 *   ts: { N: "1700000000000" },
 *   e: {
 *     L: [
 *       { M: { t: { S: "Paid" }, id: { S: "a" } } },
 *       { M: { t: { S: "Shipped" }, id: { S: "b" } } },
 *     ],
 *   },
 * });
 * if (summary !== undefined) {
 *   console.log(summary.stream, summary.next - summary.index, summary.types);
 *   // "Order-1" 2 ["Paid", "Shipped"]
 *   console.log(new Date(summary.time).toISOString(), summary.sizes);
 *   // "2023-11-14T22:13:20.000Z" [0, 0]
 * }
 * ```
 */
export interface AppendSummary {
  /** The stream appended to. */
  readonly stream: StreamName;
  /** The index of the first event appended. */
  readonly index: number;
  /** The index after the last event appended. */
  readonly next: number;
  /** The types of the appended events, in order. */
  readonly types: readonly string[];
  /** When the append was written (ms since the epoch). */
  readonly time: number;
  /** The approximate bytes of each event, in order. */
  readonly sizes: readonly number[];
}

/**
 * What an events-table item (a DynamoDB Streams record's `NewImage`) is to the indexer: an
 * append, something else (the tip item), or an item in the appends' key space that cannot be
 * read as one (written by another writer, or damaged), with what is wrong and as much of its
 * identity as could be read.
 *
 * @example
 * ```ts
 * import { type InspectedImage, inspectAppend } from "@impel/impel/stores/dynamo";
 * const image: InspectedImage = inspectAppend({ p: { S: "Order-1" }, i: { N: "0" }, n: { S: "1" } });
 * if (image.kind === "malformed") console.log(image.stream, image.index, image.problem);
 * // "Order-1" 0 "n is not a number above i"
 * ```
 */
export type InspectedImage =
  | { readonly kind: "append"; readonly append: AppendSummary }
  | { readonly kind: "other" }
  | {
    readonly kind: "malformed";
    /** The stream, when the item names one. */
    readonly stream?: string;
    /** The index of its first event, when the item has one. */
    readonly index?: number;
    /** The index after its last event, when the item has one. */
    readonly next?: number;
    /** What is wrong. */
    readonly problem: string;
  };

/**
 * Reads an events-table item as the indexer needs it; see {@linkcode InspectedImage}. An item
 * whose stream name the store would refuse (no id, too long) is malformed too, so that it is
 * set aside rather than indexed for readers that cannot handle it.
 *
 * @example
 * ```ts
 * import { inspectAppend } from "@impel/impel/stores/dynamo";
 * const image = inspectAppend({
 *   p: { S: "Cat" }, i: { N: "0" }, n: { N: "1" }, ts: { N: "0" },
 *   e: { L: [{ M: { t: { S: "Placed" }, id: { S: "x" } } }] },
 * });
 * console.log(image.kind); // "malformed": "Cat" has no id
 * ```
 */
export function inspectAppend(record: Record<string, unknown> | undefined): InspectedImage {
  // Images from the streams client, the main client and Lambda's JSON share this shape.
  const image = record as Record<string, AttributeValue> | undefined;
  const stream = image?.p?.S;
  const index = image?.i?.N === undefined ? Number.NaN : Number(image.i.N);
  if (stream === undefined || index === TIP_INDEX) return { kind: "other" };
  const bad = (problem: string, next?: number): InspectedImage => ({
    kind: "malformed",
    stream,
    index: Number.isInteger(index) ? index : undefined,
    next,
    problem,
  });
  if (!Number.isInteger(index) || index < 0) return bad("i is not a non-negative integer");
  const next = image?.n?.N === undefined ? Number.NaN : Number(image.n.N);
  if (!Number.isInteger(next) || next <= index) return bad("n is not a number above i");
  try {
    checkDynamoStreamName(stream);
  } catch (e) {
    return bad((e as Error).message, next);
  }
  const list = image?.e?.L;
  if (list === undefined) return bad("e is not a list of events", next);
  if (list.length !== next - index) {
    return bad(`e holds ${list.length} events where n - i is ${next - index}`, next);
  }
  const time = image?.ts?.N === undefined ? 0 : Number(image.ts.N);
  if (!Number.isFinite(time)) return bad("ts is not a number", next);
  const types: string[] = [];
  const sizes: number[] = [];
  for (const [k, value] of list.entries()) {
    const m = value.M;
    const type = m?.t?.S;
    if (type === undefined || type.length === 0 || utf8Length(type) > MAX_EVENT_TYPE_BYTES) {
      return bad(`event ${k} has no type of 1 to ${MAX_EVENT_TYPE_BYTES} bytes (t)`, next);
    }
    for (const body of ["d", "m"] as const) {
      if (m![body] !== undefined && m![body].S === undefined && m![body].B === undefined) {
        return bad(`event ${k}'s ${body} is neither JSON text nor binary`, next);
      }
    }
    types.push(type);
    sizes.push(valueSize(m!.d) + valueSize(m!.m));
  }
  return { kind: "append", append: { stream, index, next, types, time, sizes } };
}

/**
 * Summarizes an events-table item (as found in a DynamoDB Streams record's `NewImage`), or
 * returns `undefined` for items that are not appends (the tip item, foreign items) and for
 * malformed ones ({@linkcode inspectAppend} tells them apart).
 *
 * @example
 * ```ts
 * import { summarizeAppend } from "@impel/impel/stores/dynamo";
 * const summary = summarizeAppend({
 *   p: { S: "Order-1" }, i: { N: "0" }, n: { N: "1" }, ts: { N: "0" },
 *   e: { L: [{ M: { t: { S: "Placed" }, id: { S: "x" } } }] },
 * });
 * // { stream: "Order-1", index: 0, next: 1, types: ["Placed"], time: 0, sizes: [0] }
 * ```
 */
export function summarizeAppend(
  record: Record<string, unknown> | undefined,
): AppendSummary | undefined {
  const image = inspectAppend(record);
  return image.kind === "append" ? image.append : undefined;
}

type Item = Record<string, AttributeValue>;

// Why an append item is not the chain's next one after `expected` (undefined when it is): its
// range is empty, it starts inside the events before `expected`, or it ends past `end` (where
// the items read above it start) or past the stream's version.
async function chainFault(
  item: Item,
  expected: number,
  end: number,
  pastVersion: (n: number) => Promise<boolean>,
): Promise<string | undefined> {
  const i = Number(item.i?.N);
  const n = Number(item.n?.N);
  if (!(n > i)) return "its n is not a number above its i";
  if (i < expected) return `it starts inside the events before ${expected}`;
  if (n > end) return `it ends past ${end}, where the item after it starts`;
  if (await pastVersion(n)) return "it ends past the stream's version";
  return undefined;
}

// An append item outside the stream's chain (written around the store): its events are not
// the stream's. They go to `onInvalid` when given, so that a reader sees what was skipped.
function foreign(
  stream: StreamName,
  item: Record<string, AttributeValue>,
  why: string,
  onInvalid?: (event: StreamEvent, error: EventDecodeError) => void,
): void {
  log.warn("skipped the item {i} of {stream}, not an append of the store: {why}", {
    stream,
    i: item.i?.N,
    why,
  });
  if (onInvalid === undefined) return;
  for (const event of decodeEvents(item, () => {})) {
    onInvalid(
      event,
      new EventDecodeError(
        "MalformedEvent",
        event,
        `in ${JSON.stringify(stream.slice(0, 200))}: not an append of the store (${why})`,
      ),
    );
  }
}

/**
 * Decodes the events of one append item of the events table.
 *
 * @example
 * ```ts
 * import { decodeEvents } from "@impel/impel/stores/dynamo";
 * const [event] = decodeEvents({
 *   p: { S: "Order-1" }, i: { N: "4" }, n: { N: "5" }, ts: { N: "0" },
 *   e: { L: [{ M: { t: { S: "Placed" }, id: { S: "x" }, d: { S: "{\"total\":3}" } } }] },
 * });
 * // event.index === 4, event.data is { total: 3 }
 * ```
 */
export function decodeEvents(
  record: Record<string, unknown>,
  onInvalid?: (event: StreamEvent, error: EventDecodeError) => void,
): StreamEvent[] {
  const item = record as Record<string, AttributeValue>;
  const first = Number(item.i?.N ?? Number.NaN);
  const list = item.e?.L;
  const time = new Date(Number(item.ts?.N ?? 0));
  const stream = item.p?.S ?? "";
  if (!(first >= 0)) return [];
  if (list === undefined) {
    // Its events cannot be read, yet its range says which are lost: each is reported.
    const next = Number(item.n?.N ?? Number.NaN);
    const count = Number.isInteger(next) && next > first ? Math.min(next - first, 10_000) : 1;
    for (let k = 0; k < count; k++) {
      const event = {
        index: first + k,
        type: "",
        data: undefined,
        meta: undefined,
        id: "",
        time,
        size: 0,
      };
      const error = new EventDecodeError(
        "MalformedEvent",
        event,
        `in ${JSON.stringify(stream.slice(0, 200))}: the item's e is not a list of events`,
      );
      if (onInvalid === undefined) throw error;
      onInvalid(event, error);
    }
    return [];
  }
  // The item's range (i to n) says how many events it holds: events past it are not this
  // item's (they would repeat the next item's indexes) and missing ones are lost; both are
  // reported, never delivered or skipped silently.
  const next = Number(item.n?.N ?? Number.NaN);
  const ranged = Number.isInteger(next) && next > first;
  const counted = `the item holds ${list.length} event${list.length === 1 ? "" : "s"} for ${
    ranged ? next - first : "?"
  } indexes`;
  const out: StreamEvent[] = [];
  for (const [k, value] of list.entries()) {
    const m = value.M ?? {};
    const event: {
      index: number;
      type: string;
      data: unknown;
      meta: unknown;
      id: string;
      time: Date;
      size: number;
      correlationId?: string;
      causationId?: string;
    } = {
      index: first + k,
      type: m.t?.S ?? "",
      // Until decoded: the stored text, so that a dead-letter callback sees what was there.
      data: m.d?.S ?? m.d?.B,
      meta: m.m?.S ?? m.m?.B,
      id: m.id?.S ?? "",
      time,
      size: valueSize(m.d) + valueSize(m.m),
    };
    if (m.c?.S !== undefined) event.correlationId = m.c.S;
    if (m.z?.S !== undefined) event.causationId = m.z.S;
    try {
      if (ranged && event.index >= next) throw new Error(`${counted}: this one is past n`);
      if (event.type.length === 0) throw new Error("it has no type (t)");
      event.data = decodeValue(m.d, "data (d)");
      event.meta = decodeValue(m.m, "meta (m)");
    } catch (e) {
      const error = new EventDecodeError(
        "MalformedEvent",
        event,
        `in ${JSON.stringify(stream.slice(0, 200))}: ${(e as Error).message}`,
        { cause: e },
      );
      if (onInvalid === undefined) throw error;
      onInvalid(event, error);
      continue;
    }
    out.push(event);
  }
  const missing = ranged ? Math.min(next - first, 10_000) - list.length : 0;
  for (let k = 0; k < missing; k++) {
    const event = {
      index: first + list.length + k,
      type: "",
      data: undefined,
      meta: undefined,
      id: "",
      time,
      size: 0,
    };
    const error = new EventDecodeError(
      "MalformedEvent",
      event,
      `in ${JSON.stringify(stream.slice(0, 200))}: ${counted}: this one is missing`,
    );
    if (onInvalid === undefined) throw error;
    onInvalid(event, error);
  }
  return out;
}

function encodeAppend(
  stream: StreamName,
  events: readonly EventData[],
  expected: number,
  now: number,
): Record<string, AttributeValue>[] {
  const items: Record<string, AttributeValue>[] = [];
  let current: AttributeValue[] = [];
  let currentBytes = 0;
  let first = expected;
  let total = 0;
  // The item's own attributes: p (the stream), i, n, ts, and the list e's header.
  const overhead = 1 + utf8Length(stream) + 1 + NUMBER_BYTES + 1 + NUMBER_BYTES + 2 +
    NUMBER_BYTES + 1 + 3;
  const flush = () => {
    if (current.length === 0) return;
    items.push({
      p: { S: stream },
      i: { N: String(first) },
      n: { N: String(first + current.length) },
      ts: { N: String(now) },
      e: { L: current },
    });
    first += current.length;
    current = [];
    currentBytes = 0;
  };
  for (const [k, event] of events.entries()) {
    if (typeof event?.type !== "string" || event.type.length === 0) {
      throw new InvalidArgumentError(`events[${k}].type`, "must be a non-empty string");
    }
    const typeBytes = utf8Length(event.type);
    if (typeBytes > MAX_EVENT_TYPE_BYTES) {
      throw new InvalidArgumentError(
        `events[${k}].type`,
        `is ${typeBytes} bytes in UTF-8, over the limit of ${MAX_EVENT_TYPE_BYTES}`,
      );
    }
    // DynamoDB would store a number or object here as "" (the SDK drops what is not a string).
    if (event.id !== undefined && (typeof event.id !== "string" || event.id.length === 0)) {
      throw new InvalidArgumentError(
        `events[${k}].id`,
        `must be a non-empty string when given, got ${describeValue(event.id)}`,
      );
    }
    for (const field of ["correlationId", "causationId"] as const) {
      if (event[field] !== undefined && typeof event[field] !== "string") {
        throw new InvalidArgumentError(
          `events[${k}].${field}`,
          `must be a string when given, got ${describeValue(event[field])}`,
        );
      }
    }
    const m: Record<string, AttributeValue> = {
      t: { S: event.type },
      id: { S: event.id ?? crypto.randomUUID() },
    };
    const d = encodeValue(`events[${k}].data`, event.data);
    if (d) m.d = d;
    const meta = encodeValue(`events[${k}].meta`, event.meta);
    if (meta) m.m = meta;
    if (event.correlationId !== undefined) m.c = { S: event.correlationId };
    if (event.causationId !== undefined) m.z = { S: event.causationId };
    const bytes = eventBytes(m);
    if (bytes + overhead > MAX_ITEM_BYTES) {
      throw new InvalidArgumentError(
        `events[${k}]`,
        `is ${bytes} bytes in UTF-8, over DynamoDB's 400 KB item limit (${
          MAX_ITEM_BYTES - overhead
        } bytes are left for one event of ${JSON.stringify(stream.slice(0, 80))})`,
      );
    }
    if (currentBytes + bytes + overhead > MAX_ITEM_BYTES) flush();
    current.push({ M: m });
    currentBytes += bytes;
    total += bytes;
  }
  flush();
  if (items.length > MAX_TRANSACTION_ITEMS) {
    throw new InvalidArgumentError(
      "events",
      `(${total} bytes) need ${items.length} items, over the ${MAX_TRANSACTION_ITEMS} one ` +
        `DynamoDB transaction can write with the tip: append them in smaller groups`,
    );
  }
  return items;
}

// Bodies are JSON text, except byte arrays which are stored as binary so they round-trip.
// How an error message names a refused id: by its type (an empty string by what it is).
function describeValue(value: unknown): string {
  if (typeof value === "string") return "an empty string";
  if (value === null) return "null";
  return /^[aeiou]/.test(typeof value) ? `an ${typeof value}` : `a ${typeof value}`;
}

function encodeValue(field: string, value: unknown): AttributeValue | undefined {
  if (value === undefined) return undefined;
  if (value instanceof Uint8Array) return { B: value };
  const json = storedJson(field, value);
  return json === undefined ? undefined : { S: json };
}

function decodeValue(value: AttributeValue | undefined, what: string): unknown {
  if (value === undefined) return undefined;
  if (value.B !== undefined) return value.B;
  if (value.S !== undefined) {
    try {
      return JSON.parse(value.S);
    } catch (e) {
      throw new Error(`its ${what} is not JSON (${(e as Error).message})`, { cause: e });
    }
  }
  throw new Error(`its ${what} is neither JSON text nor binary`);
}

// The bytes DynamoDB counts for one event's map in the item's list `e`: the list element's
// byte, the map's 3, and each attribute's name, value and 1 byte of element overhead (what
// DynamoDB Local measures: without that byte, about 8 300 tiny events overfill an item).
function eventBytes(m: Record<string, AttributeValue>): number {
  let bytes = 1 + 3;
  for (const name in m) bytes += name.length + valueSize(m[name]) + 1;
  return bytes;
}

// The bytes DynamoDB counts for a string or binary value (UTF-8 for strings).
function valueSize(value: AttributeValue | undefined): number {
  if (value === undefined) return 0;
  if (value.S !== undefined) return utf8Length(value.S);
  // Lambda's JSON records carry binary values as base64 text.
  const b = value.B as Uint8Array | string | undefined;
  if (typeof b === "string") return Math.floor((b.length * 3) / 4);
  if (b !== undefined) return b.byteLength;
  return 0;
}

// Views a DynamoClient as the SDK client it stands for, so that `send` is typed per command
// again. The interface only narrows DynamoDBClient and callers are documented to pass one, so
// this is the one cast at the boundary (sibling modules have their own, likewise).
function sdkClient(client: DynamoClient): DynamoDBClient {
  return client as DynamoDBClient;
}

/**
 * Throws {@linkcode InvalidArgumentError} unless `value` is a valid DynamoDB table name.
 *
 * @example
 * ```ts
 * import { checkTableName } from "@impel/impel/stores/dynamo";
 * checkTableName("tableName", "events"); // "events"
 * ```
 */
export function checkTableName(field: string, value: unknown): string {
  if (typeof value !== "string" || !/^[A-Za-z0-9_.-]{3,255}$/.test(value)) {
    throw new InvalidArgumentError(
      field,
      `must be a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -), got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

const TRANSIENT_NAMES = new Set([
  "ProvisionedThroughputExceededException",
  "ThrottlingException",
  "RequestLimitExceeded",
  "InternalServerError",
  "InternalFailure",
  "ServiceUnavailable",
  "TimeoutError",
]);

const NETWORK = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EAI_AGAIN|socket|network/i;

/**
 * Whether a failed DynamoDB call is worth retrying as it is: throttling, a server error (5xx), a
 * timeout or a failed connection (no HTTP response at all). impel's own errors are not, unless
 * they only wrap one that is (a checkpoint read); a `TypeError` is a bug, but for fetch's "fetch
 * failed". `sources/dynamo.ts` and `runStreamsIndexer` retry these for as long as they last.
 *
 * @example
 * ```ts
 * import { isTransientDynamoError } from "@impel/impel/stores/dynamo";
 * const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:8000"), {
 *   code: "ECONNREFUSED",
 * });
 * isTransientDynamoError(refused); // true: the server is down, or restarting
 * const invalid = { name: "ValidationException", $metadata: { httpStatusCode: 400 } };
 * isTransientDynamoError(invalid); // false: the same request fails again
 * ```
 */
export function isTransientDynamoError(error: unknown): boolean {
  // Our own errors are final, unless they only wrap a transient one (a checkpoint read) or are
  // an append DynamoDB throttled (its cause, a cancellation, is not transient by itself).
  if (error instanceof DynamoAppendError && error.code === "DynamoAppendThrottled") return true;
  if (error instanceof ImpelError) {
    return error.cause !== undefined && isTransientDynamoError(error.cause);
  }
  const err = error as {
    name?: string;
    code?: unknown;
    cause?: unknown;
    $metadata?: { httpStatusCode?: number };
    $retryable?: unknown;
  };
  if (err?.$retryable) return true;
  if (TRANSIENT_NAMES.has(err?.name ?? "")) return true;
  const status = err?.$metadata?.httpStatusCode;
  if (typeof status === "number") return status >= 500;
  // A TypeError is a bug (a property of undefined, a bad argument), retried forever it would
  // hide; the one exception is fetch's own "fetch failed", thrown for a failed connection.
  if (error instanceof TypeError) {
    return error.message === "fetch failed" ||
      (err.cause !== undefined && isTransientDynamoError(err.cause));
  }
  // No HTTP response at all: the connection failed.
  return NETWORK.test(typeof err?.code === "string" ? err.code : "") || NETWORK.test(String(error));
}
