/**
 * An event store in one Azure Cosmos DB (SQL API) container partitioned by stream name, in the
 * spirit of Equinox's CosmosStore layout, and the Cosmos helpers the Cosmos checkpoint store,
 * lease store and source share (container set-up, errors, limits).
 *
 * Layout (partition key path `/p` = the stream name):
 * - a **tip** document, id `"-1"`, holding the stream's version `n` (its event count) and the
 *   time of its last append; every append replaces it under an `If-Match` on its etag (creates it
 *   for a new stream), so two writers can never both extend a stream from the same version;
 * - one **batch** document per append, id = the index of its first event (`i`), holding `n` (the
 *   index after its last event), `ts` (append time, ms), `ty` (the distinct event types, so that
 *   the last event of a type is one indexed query) and `e`, the events: `c` type, `d` data (the
 *   JSON value itself, queryable; `D`: base64 for a `Uint8Array`), `m` meta (`M`: base64), `id`,
 *   `correlationId`, `causationId`, `s` size in bytes.
 *
 * An append is one transactional batch in the stream's partition: the tip's conditional replace
 * (or create) first, then the batch document's create. Batch documents are never changed after,
 * so the change feed (`sources/cosmos.ts`) sees each exactly once, in append order per stream.
 * Reads query the batch documents of the partition by `i` (forwards or backwards).
 *
 * A batch document is the store's only when its `id` is its `i` as text ({@linkcode isStoreBatch});
 * anything else in the partition (imported, restored, written by another tool) is never one of
 * the stream's events, for the reads and for the change feed alike.
 *
 * Stranded tips. The tip also holds `l`, the first index of the batch document written with it.
 * A server without atomic batches (the local test server) can write the tip and refuse the batch
 * document; the store then puts the tip back, retrying transient failures for up to
 * {@linkcode PUT_BACK_TIMEOUT_MS}, and when that fails the append rejects with
 * {@linkcode CosmosAppendError} `"CosmosTipStranded"`. Whatever happened, a tip this process did
 * not itself write is checked when read (`version`, an append's read): the batch document `l` must
 * exist and end at the tip's version. When it does not, the tip is ahead of the events and is
 * repaired (replaced, under `If-Match`, by the version the newest batch document ends at) before
 * anything is appended or answered, so no append lands after a gap and the version counts the
 * events there are. (On a server without atomic batches a tip read between the two operations of
 * another writer's batch looks stranded too; such servers are for tests only.)
 *
 * Etags of tips this process wrote or read are kept (a bounded map), so an append at the version
 * the process last saw is one round trip; otherwise the tip is read first.
 *
 * Limits: an append's events take at most {@linkcode MAX_APPEND_BYTES} as JSON (one batch
 * document, below Cosmos's 2 MB item and batch limits), stream names at most
 * {@linkcode MAX_STREAM_NAME_BYTES} (Cosmos's partition key limit), event types at most
 * {@linkcode MAX_EVENT_TYPE_BYTES}; more is refused with {@linkcode InvalidArgumentError}
 * before anything is sent.
 *
 * @module
 */
import {
  BulkOperationType,
  type Container,
  type Database,
  type JSONObject,
  type OperationInput,
  type OperationResponse,
} from "@azure/cosmos";
import { getLogger } from "@logtape/logtape";
import { EventDecodeError } from "../core/codec.ts";
import { backoff } from "../core/failure.ts";
import { retrying } from "../core/reader.ts";
import type { LastEventReader, SnapshotReader } from "../core/decider.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
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

const log = getLogger(["impel", "cosmos", "store"]);

/** The id of a stream's tip document. */
export const TIP_ID = "-1";

/**
 * The longest stream name the store accepts, in UTF-8 bytes: Cosmos's limit on a partition key
 * value (containers made by {@linkcode createCosmosEventContainer} use large partition keys).
 *
 * @example
 * ```ts
 * import { MAX_STREAM_NAME_BYTES } from "@impel/impel/stores/cosmos";
 * console.log(MAX_STREAM_NAME_BYTES); // 2048
 * ```
 */
export const MAX_STREAM_NAME_BYTES = 2_048;

/**
 * The longest event type the store accepts, in UTF-8 bytes (types are kept in every batch
 * document's type list and queried).
 *
 * @example
 * ```ts
 * import { MAX_EVENT_TYPE_BYTES } from "@impel/impel/stores/cosmos";
 * console.log(MAX_EVENT_TYPE_BYTES); // 1024
 * ```
 */
export const MAX_EVENT_TYPE_BYTES = 1_024;

/**
 * The most one append may write, in bytes of JSON (its batch document): Cosmos refuses items over
 * 2 MB and transactional batches over 2 MB; the rest is left for the tip and the envelope.
 *
 * @example
 * ```ts
 * import { MAX_APPEND_BYTES } from "@impel/impel/stores/cosmos";
 * console.log(MAX_APPEND_BYTES); // 2000000
 * ```
 */
export const MAX_APPEND_BYTES = 2_000_000;

// Tip etags remembered for one-round-trip appends; the oldest go first beyond this.
const MAX_CACHED_TIPS = 10_000;
// "any" appends re-read the version and try again this often before giving up.
const ANY_VERSION_ATTEMPTS = 10;
// A tip whose etag changed while its version did not (another writer's failed append on a
// server without atomic batches, a hand edit) is re-read and tried again this often.
const TIP_RACE_ATTEMPTS = 5;
// Documents per page of a read.
const PAGE_DOCUMENTS = 100;

/**
 * How long the store keeps trying to put back a tip whose batch document was refused (transient
 * failures only) before rejecting with `"CosmosTipStranded"`.
 *
 * @example
 * ```ts
 * import { PUT_BACK_TIMEOUT_MS } from "@impel/impel/stores/cosmos";
 * console.log(PUT_BACK_TIMEOUT_MS); // 3000
 * ```
 */
export const PUT_BACK_TIMEOUT_MS = 3_000;

/**
 * Whether `doc` is a batch document the store wrote: its `id` is its first index `i` as text,
 * `n` is after `i`, and it names its stream (`p`). Reads and the change-feed source keep only
 * these, so that a foreign document never replaces or adds to a stream's events.
 *
 * @example
 * ```ts
 * import { isStoreBatch } from "@impel/impel/stores/cosmos";
 * console.log(isStoreBatch({ id: "4", p: "Order-1", i: 4, n: 5 })); // true
 * console.log(isStoreBatch({ id: "imported", p: "Order-1", i: 4, n: 5 })); // false
 * ```
 */
export function isStoreBatch(doc: Record<string, unknown>): boolean {
  const i = doc.i;
  const n = doc.n;
  return typeof i === "number" && Number.isInteger(i) && i >= 0 && doc.id === String(i) &&
    typeof n === "number" && Number.isInteger(n) && n > i && typeof doc.p === "string";
}

/**
 * The part of `@azure/cosmos`'s `Container` that impel's signatures name: pass a `Container`
 * (`client.database(id).container(id)`), which impel never disposes. Declared here rather than
 * taken from the SDK so that impel's API does not pull the SDK's types into its own; impel uses
 * the container's documents, queries, batches and change feed.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { type CosmosContainer, cosmosStore } from "@impel/impel/stores/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const container: CosmosContainer = client.database("app").container("events");
 * const store = cosmosStore(container);
 * ```
 */
export interface CosmosContainer {
  /** The container's id. */
  readonly id: string;
  /** Its database. */
  readonly database: { readonly id: string };
  /** A document by id and partition key value. */
  item(id: string, partitionKey: string): object;
  /** The container's documents. */
  readonly items: object;
}

/**
 * The part of `@azure/cosmos`'s `Database` that impel's signatures name: pass a `Database`
 * (`client.database(id)`, or from `client.databases.createIfNotExists`). See
 * {@linkcode CosmosContainer}.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import type { CosmosDatabase } from "@impel/impel/stores/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const database: CosmosDatabase = client.database("app");
 * console.log(database.id); // "app"
 * ```
 */
export interface CosmosDatabase {
  /** The database's id. */
  readonly id: string;
  /** Its containers. */
  readonly containers: object;
}

// Views a CosmosContainer as the SDK's Container it stands for: the interface only narrows it and
// callers are documented to pass one, so this is the one cast at the boundary (sibling modules
// have their own, likewise).
function sdkContainer(container: CosmosContainer): Container {
  return container as unknown as Container;
}

/**
 * A Cosmos container set-up went wrong: creation failed, or an existing container has another
 * partition key path than impel's `/p`.
 *
 * @example
 * ```ts
 * import { CosmosContainerError } from "@impel/impel/stores/cosmos";
 * const e = new CosmosContainerError("events", "is partitioned by /id, not /p");
 * console.log(e.code, e.containerId); // "CosmosContainer" "events"
 * ```
 */
export class CosmosContainerError extends ImpelError {
  /** The container concerned. */
  readonly containerId: string;
  /** Creates the error; `problem` completes "Cosmos container {id} ...". */
  constructor(containerId: string, problem: string, options?: ErrorOptions) {
    super("CosmosContainer", `Cosmos container ${containerId} ${problem}`, options);
    this.containerId = containerId;
  }
}

/**
 * Cosmos refused an append for a reason other than a version conflict (which is a
 * `WrongExpectedVersionError`): `code` says which. `"CosmosStrayDocument"`: a document the store
 * did not write holds the id the append's batch document needs; `"CosmosAppendContention"`: the
 * tip kept changing without its version moving; `"CosmosTipStranded"`: the tip was written, the
 * batch document was not, and putting the tip back failed (the next read of the tip repairs it);
 * `"CosmosAppendRefused"`: any other refusal (the status is in the message; Cosmos's error is the
 * `cause`).
 *
 * @example
 * ```ts
 * import { CosmosAppendError } from "@impel/impel/stores/cosmos";
 * const e = new CosmosAppendError("CosmosStrayDocument", "Order-1", 5, "document 5 exists");
 * console.log(e.code, e.stream, e.expected); // "CosmosStrayDocument" "Order-1" 5
 * ```
 */
export class CosmosAppendError extends ImpelError {
  /** The stream appended to. */
  readonly stream: StreamName;
  /** The version the append expected. */
  readonly expected: number;
  /** Creates the error; `problem` says what Cosmos refused. */
  constructor(
    code:
      | "CosmosStrayDocument"
      | "CosmosAppendContention"
      | "CosmosTipStranded"
      | "CosmosAppendRefused",
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
 * Returns `stream` if it is a valid stream name ({@linkcode checkStreamName}) that Cosmos can
 * take as a partition key (at most {@linkcode MAX_STREAM_NAME_BYTES} in UTF-8), else throws
 * {@linkcode InvalidStreamNameError}.
 *
 * @example
 * ```ts
 * import { checkCosmosStreamName } from "@impel/impel/stores/cosmos";
 * checkCosmosStreamName("Order-1"); // "Order-1"
 * try {
 *   checkCosmosStreamName(`Order-${"€".repeat(700)}`); // 2 106 bytes
 * } catch (e) {
 *   console.log((e as Error).name); // "InvalidStreamNameError"
 * }
 * ```
 */
export function checkCosmosStreamName(stream: StreamName): StreamName {
  checkStreamName(stream);
  const bytes = utf8Length(stream);
  if (bytes > MAX_STREAM_NAME_BYTES) {
    throw new InvalidStreamNameError(
      stream.slice(0, 80),
      `is ${bytes} bytes in UTF-8, over the ${MAX_STREAM_NAME_BYTES} of a Cosmos partition key`,
    );
  }
  return stream;
}

/**
 * Throws {@linkcode InvalidArgumentError} unless `value` is a valid Cosmos database or container
 * id (1 to 255 characters, none of `/ \ ? #`).
 *
 * @example
 * ```ts
 * import { checkCosmosId } from "@impel/impel/stores/cosmos";
 * checkCosmosId("containerId", "events"); // "events"
 * ```
 */
export function checkCosmosId(field: string, value: unknown): string {
  if (
    typeof value !== "string" || value.length === 0 || value.length > 255 || /[/\\?#]/.test(value)
  ) {
    throw new InvalidArgumentError(
      field,
      `must be a Cosmos id (1-255 characters, none of / \\ ? #), got ${describe(value)}`,
    );
  }
  return value;
}

/**
 * A Cosmos document id for a key made of `parts`: `{prefix}-` and the parts (joined by `|`, each
 * URI-encoded, so that none of `/ \ ? #` remains) when that is at most 200 characters, else
 * `{prefix}h-` and the SHA-256 of the parts in hex. Leases and checkpoints name their documents
 * with it.
 *
 * @example
 * ```ts
 * import { documentId } from "@impel/impel/stores/cosmos";
 * console.log(await documentId("cp", ["cosmos:events", "0", "reactor"])); // "cp-cosmos%3Aevents|0|reactor"
 * console.log((await documentId("cp", ["x".repeat(300)])).length); // 67
 * ```
 */
export async function documentId(prefix: string, parts: readonly string[]): Promise<string> {
  const plain = parts.map(encodeURIComponent).join("|");
  if (plain.length <= 200) return `${prefix}-${plain}`;
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(JSON.stringify(parts)),
  );
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${prefix}h-${hex}`;
}

/**
 * Creates a container partitioned by `/p` (large partition keys) in `database` unless it exists,
 * and checks that an existing one has that partition key. The event store, the checkpoint store
 * and the lease store create theirs with it.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { ensureCosmosContainer } from "@impel/impel/stores/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const { database } = await client.databases.createIfNotExists({ id: "app" });
 * const container = await ensureCosmosContainer(database, "aux");
 * console.log(container.id); // "aux"
 * ```
 */
export async function ensureCosmosContainer(
  database: CosmosDatabase,
  id: string,
): Promise<CosmosContainer> {
  checkCosmosId("containerId", id);
  let resource: { partitionKey?: { paths?: string[] } } | undefined;
  let container: Container;
  try {
    const response = await (database as unknown as Database).containers.createIfNotExists({
      id,
      partitionKey: { paths: ["/p"], version: 2 },
    });
    container = response.container;
    resource = response.resource;
  } catch (e) {
    throw new CosmosContainerError(id, `could not be created: ${errorText(e)}`, { cause: e });
  }
  const paths = resource?.partitionKey?.paths;
  if (paths !== undefined && (paths.length !== 1 || paths[0] !== "/p")) {
    throw new CosmosContainerError(id, `is partitioned by ${paths.join(", ")}, not /p`);
  }
  return container;
}

/**
 * Creates the events container (partition key `/p`) unless it exists; see
 * {@linkcode ensureCosmosContainer}.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosStore, createCosmosEventContainer } from "@impel/impel/stores/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const { database } = await client.databases.createIfNotExists({ id: "app" });
 * const store = cosmosStore(await createCosmosEventContainer(database, "events"));
 * ```
 */
export function createCosmosEventContainer(
  database: CosmosDatabase,
  id: string,
): Promise<CosmosContainer> {
  return ensureCosmosContainer(database, id);
}

/**
 * Options of {@linkcode CosmosEventStore.readBackwards}.
 *
 * @example
 * ```ts
 * import type { CosmosReadBackwardsOptions } from "@impel/impel/stores/cosmos";
 * const lastThree: CosmosReadBackwardsOptions = { maxCount: 3 };
 * const beforeTen: CosmosReadBackwardsOptions = { fromIndex: 9, maxCount: 5 };
 * ```
 */
export interface CosmosReadBackwardsOptions {
  /** The newest index to return (default: the stream's last event). */
  readonly fromIndex?: number;
  /** The most events to return (default: all). */
  readonly maxCount?: number;
}

/**
 * Options of {@linkcode CosmosEventStore.readStream}: those of every store, and what to do with
 * an event that does not decode.
 *
 * @example
 * ```ts
 * import type { CosmosReadStreamOptions } from "@impel/impel/stores/cosmos";
 * const options: CosmosReadStreamOptions = {
 *   fromIndex: 10,
 *   onInvalid: (event, error) => console.error(event.index, error.message),
 * };
 * ```
 */
export interface CosmosReadStreamOptions extends ReadStreamOptions {
  /**
   * Called for each event that cannot be read (no type, a body that does not decode) with what
   * could be read and the error; the event is left out. Without it such an event rejects the read
   * with {@linkcode EventDecodeError}.
   */
  readonly onInvalid?: (event: StreamEvent, error: EventDecodeError) => void;
}

/**
 * An {@linkcode EventStore} in a Cosmos container, with the capabilities rolling snapshots use
 * (`readLastEvent`, `readFromLast`), the stream's version and backward reads.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { type CosmosEventStore, cosmosStore } from "@impel/impel/stores/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const store: CosmosEventStore = cosmosStore(client.database("app").container("events"));
 * const version = await store.version("Order-1"); // 0 if the stream does not exist
 * await store.append("Order-1", [{ type: "Shipped", data: {} }], version);
 * const [last] = await store.readBackwards("Order-1", { maxCount: 1 });
 * console.log(last.type); // "Shipped"
 * ```
 */
export interface CosmosEventStore extends EventStore, LastEventReader, SnapshotReader {
  /** The container the events are kept in. */
  readonly container: CosmosContainer;
  /** The stream's version (its event count), 0 if it does not exist. */
  version(stream: StreamName): Promise<number>;
  /** Reads events forwards from `fromIndex`; see {@linkcode CosmosReadStreamOptions}. */
  readStream(stream: StreamName, options?: CosmosReadStreamOptions): Promise<StreamEvent[]>;
  /** Reads events newest first, from `fromIndex` (default: the last) down. */
  readBackwards(stream: StreamName, options?: CosmosReadBackwardsOptions): Promise<StreamEvent[]>;
}

/** One event as a batch document holds it. */
export interface CosmosEventDocument {
  /** Type. */
  readonly c: string;
  /** Data, a JSON value. */
  readonly d?: unknown;
  /** Data bytes, base64. */
  readonly D?: string;
  /** Metadata, a JSON value. */
  readonly m?: unknown;
  /** Metadata bytes, base64. */
  readonly M?: string;
  /** The event's id. */
  readonly id: string;
  /** Correlation id. */
  readonly correlationId?: string;
  /** Causation id. */
  readonly causationId?: string;
  /** Size in bytes of data and meta as stored. */
  readonly s: number;
}

/**
 * A batch document of the events container: the events of one append.
 *
 * @example
 * ```ts
 * import type { CosmosBatchDocument } from "@impel/impel/stores/cosmos";
 * const doc: CosmosBatchDocument = {
 *   id: "0", p: "Order-1", i: 0, n: 1, ts: 0, ty: ["Placed"],
 *   e: [{ c: "Placed", d: { total: 3 }, id: "x", s: 11 }],
 * };
 * ```
 */
export interface CosmosBatchDocument {
  /** The index of its first event, as text. */
  readonly id: string;
  /** The stream. */
  readonly p: StreamName;
  /** The index of its first event. */
  readonly i: number;
  /** The index after its last event. */
  readonly n: number;
  /** When it was appended, ms since the epoch. */
  readonly ts: number;
  /** The distinct event types it holds. */
  readonly ty: readonly string[];
  /** The events. */
  readonly e: readonly CosmosEventDocument[];
}

interface Tip {
  readonly n: number;
  /** Absent when the stream has no tip yet. */
  readonly etag?: string;
  /** Whether the batch document ending at `n` is known to exist (this process wrote or checked it). */
  readonly checked: boolean;
}

/**
 * An event store over a container made by {@linkcode createCosmosEventContainer} (partition key
 * `/p`). The container's client is the caller's; the store never disposes it.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosStore, createCosmosEventContainer } from "@impel/impel/stores/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const { database } = await client.databases.createIfNotExists({ id: "app" });
 * const store = cosmosStore(await createCosmosEventContainer(database, "events"));
 * await store.append("Order-1", [{ type: "Placed", data: { total: 3 } }], 0);
 * const events = await store.readStream("Order-1"); // [{ index: 0, type: "Placed", ... }]
 * ```
 */
export function cosmosStore(events: CosmosContainer): CosmosEventStore {
  const container = checkContainer(events);
  const tips = new Map<StreamName, Tip>();
  const remember = (stream: StreamName, tip: Tip) => {
    tips.delete(stream);
    tips.set(stream, tip);
    if (tips.size > MAX_CACHED_TIPS) tips.delete(tips.keys().next().value!);
  };

  /** Reads the tip; one this process did not write is checked, and repaired when stranded. */
  async function readTip(stream: StreamName, repairs = 0): Promise<Tip> {
    const { resource, etag } = await container.item(TIP_ID, stream).read<
      { n?: unknown; l?: unknown }
    >();
    if (resource === undefined) {
      const none: Tip = { n: 0, checked: true };
      remember(stream, none);
      return none;
    }
    const n = Number(resource.n);
    if (!Number.isInteger(n) || n < 0) {
      throw new CosmosAppendError(
        "CosmosAppendRefused",
        stream,
        0,
        `its tip holds ${describe(resource.n)} as the version, not a count`,
      );
    }
    const known = tips.get(stream);
    let tip: Tip = { n, etag, checked: known?.checked === true && known.etag === etag };
    if (!tip.checked && n > 0) {
      const last = resource.l;
      const doc = typeof last === "number" && Number.isInteger(last) && last >= 0
        ? (await container.item(String(last), stream).read<Record<string, unknown>>()).resource
        : await newestBatch(stream);
      if (doc === undefined || !isStoreBatch(doc) || doc.n !== n) {
        if (repairs >= TIP_RACE_ATTEMPTS) {
          throw new CosmosAppendError(
            "CosmosAppendContention",
            stream,
            n,
            `its tip is ahead of its batch documents and kept changing while being repaired`,
          );
        }
        await repairTip(stream, n, etag);
        return readTip(stream, repairs + 1);
      }
    }
    tip = { n, etag, checked: true };
    remember(stream, tip);
    return tip;
  }

  /** The stream's newest batch document written by the store. */
  async function newestBatch(stream: StreamName): Promise<Record<string, unknown> | undefined> {
    for await (const page of documents(stream, "true", [], "DESC", 20)) {
      const doc = page.find(isStoreBatch);
      if (doc !== undefined) return doc;
    }
    return undefined;
  }

  /** Puts a stranded tip (`n` ahead of the events) back where the newest batch document ends. */
  async function repairTip(stream: StreamName, n: number, etag: string | undefined) {
    const last = await newestBatch(stream);
    const to = last === undefined ? 0 : Number(last.n);
    log.warn("the tip of {stream} says {n} but its batch documents end at {to}: tip repaired", {
      stream,
      n,
      to,
    });
    try {
      await container.item(TIP_ID, stream).replace(
        {
          id: TIP_ID,
          p: stream,
          i: -1,
          n: to,
          l: last === undefined ? -1 : Number(last.i),
          ts: Date.now(),
        },
        etag === undefined ? undefined : { accessCondition: { type: "IfMatch", condition: etag } },
      );
    } catch (e) {
      // Another writer changed the tip meanwhile: the caller reads it again.
      if (statusOf(e) !== 412) throw e;
    }
  }

  async function version(stream: StreamName): Promise<number> {
    checkCosmosStreamName(stream);
    return (await readTip(stream)).n;
  }

  /** Appends at `tip.n`; a conflict rejects with WrongExpectedVersionError. */
  async function appendAt(
    stream: StreamName,
    events: readonly EventData[],
    encoded: Encoded,
    tip: Tip,
  ): Promise<number> {
    for (let attempt = 1;; attempt++) {
      const expected = tip.n;
      const next = expected + events.length;
      const now = Date.now();
      const tipBody = { id: TIP_ID, p: stream, i: -1, n: next, l: expected, ts: now };
      // The tip first: a server that applies a batch's operations one by one (the local test
      // server) then writes nothing when the condition fails.
      const operations: OperationInput[] = [
        tip.etag === undefined
          ? { operationType: BulkOperationType.Create, partitionKey: stream, resourceBody: tipBody }
          : {
            operationType: BulkOperationType.Replace,
            partitionKey: stream,
            id: TIP_ID,
            resourceBody: tipBody,
            ifMatch: tip.etag,
          },
        {
          operationType: BulkOperationType.Create,
          partitionKey: stream,
          // The SDK types bodies as JSON objects, which an interface is not.
          resourceBody: batchDocument(stream, expected, now, encoded) as unknown as JSONObject,
        },
      ];
      let results: readonly OperationResponse[] | undefined;
      let failure: unknown;
      try {
        const response = await container.items.batch(operations, stream);
        results = response.result;
      } catch (e) {
        const code = statusOf(e);
        if (code !== 409 && code !== 412) {
          throw new CosmosAppendError(
            "CosmosAppendRefused",
            stream,
            expected,
            `Cosmos refused the batch (${code ?? "no status"}): ${errorText(e)}`,
            e,
          );
        }
        failure = e;
      }
      const [tipResult, docResult] = results ?? [];
      if (results !== undefined && ok(tipResult) && ok(docResult)) {
        remember(stream, { n: next, etag: tipResult.eTag, checked: true });
        return next;
      }
      if (results !== undefined && ok(tipResult)) {
        // The tip was written and the batch document was not: a server that does not roll a
        // failed batch back (the local test server). Put the tip back as it was.
        await undoTip(stream, tip, tipResult.eTag);
      }
      if (docResult?.statusCode === 409) throw stray(stream, expected, failure);
      if (results !== undefined && !isConflict(tipResult)) {
        const codes = results.map((r) => r?.statusCode).join(", ");
        throw new CosmosAppendError(
          "CosmosAppendRefused",
          stream,
          expected,
          `Cosmos refused the batch (operation statuses ${codes})`,
          failure,
        );
      }
      // A conflict on the tip (another writer moved it), or, when Cosmos did not say which
      // operation failed, maybe on the batch document. The tip as it is now tells them apart.
      const current = await readTip(stream);
      if (current.n !== expected) throw new WrongExpectedVersionError(stream, expected, current.n);
      if (current.etag === tip.etag) throw stray(stream, expected, failure);
      if (attempt >= TIP_RACE_ATTEMPTS) {
        throw new CosmosAppendError(
          "CosmosAppendContention",
          stream,
          expected,
          `its tip kept changing without its version moving (${attempt} attempts)`,
          failure,
        );
      }
      tip = current;
    }
  }

  /**
   * Restores a tip written by a batch whose batch document was refused, retrying transient
   * failures; rejects with "CosmosTipStranded" when it cannot.
   */
  async function undoTip(stream: StreamName, before: Tip, written: string | undefined) {
    tips.delete(stream);
    const condition = written === undefined
      ? undefined
      : { accessCondition: { type: "IfMatch", condition: written } };
    let lastError: unknown;
    try {
      await retrying(async () => {
        try {
          if (before.etag === undefined) await container.item(TIP_ID, stream).delete(condition);
          else {
            await container.item(TIP_ID, stream).replace(
              { id: TIP_ID, p: stream, i: -1, n: before.n, l: -1, ts: Date.now() },
              condition,
            );
          }
        } catch (e) {
          lastError = e;
          throw e;
        }
      }, {
        backoff: backoff({ initialDelayMs: 50, maxDelayMs: 500 }),
        signal: AbortSignal.timeout(PUT_BACK_TIMEOUT_MS),
        isRetriable: isTransientCosmosError,
      });
      log.warn(
        "a batch on {stream} wrote its tip but not its document (no atomic batches?): tip restored",
        { stream },
      );
    } catch (error) {
      // Another writer changed the tip since: its read of the tip checked (and repaired) it.
      if (statusOf(lastError) === 412 || statusOf(lastError) === 404) return;
      const cause = lastError ?? error;
      log.error("a batch on {stream} wrote its tip but not its document, and restoring it failed", {
        stream,
        error: errorText(cause),
      });
      throw new CosmosAppendError(
        "CosmosTipStranded",
        stream,
        before.n,
        `the tip was written but the batch document was not, and putting the tip back failed ` +
          `(${errorText(cause)}); the next read of the tip repairs it`,
        cause,
      );
    }
  }

  async function append(
    stream: StreamName,
    events: readonly EventData[],
    expectedVersion: ExpectedVersion,
  ): Promise<AppendResult> {
    checkCosmosStreamName(stream);
    if (!Array.isArray(events)) {
      throw new InvalidArgumentError("events", `must be an array, got ${describe(events)}`);
    }
    if (expectedVersion !== "any") checkInteger("expectedVersion", expectedVersion, 0);
    if (events.length === 0) {
      const actual = await version(stream);
      if (expectedVersion !== "any" && expectedVersion !== actual) {
        throw new WrongExpectedVersionError(stream, expectedVersion, actual);
      }
      return { nextIndex: actual };
    }
    // Everything is checked and encoded before anything is sent.
    const encoded = encodeEvents(stream, events);
    if (expectedVersion !== "any") {
      let tip = tips.get(stream);
      if (tip === undefined || tip.n !== expectedVersion) tip = await readTip(stream);
      if (tip.n !== expectedVersion) {
        throw new WrongExpectedVersionError(stream, expectedVersion, tip.n);
      }
      try {
        return { nextIndex: await appendAt(stream, events, encoded, tip) };
      } catch (e) {
        if (e instanceof WrongExpectedVersionError) tips.delete(stream);
        throw e;
      }
    }
    // "any" means "wherever the stream is": read the version and retry when another writer wins.
    let tip = tips.get(stream) ?? await readTip(stream);
    for (let attempt = 1;; attempt++) {
      try {
        return { nextIndex: await appendAt(stream, events, encoded, tip) };
      } catch (e) {
        if (!(e instanceof WrongExpectedVersionError) || attempt >= ANY_VERSION_ATTEMPTS) throw e;
        tip = tips.get(stream) ?? await readTip(stream);
      }
    }
  }

  /** Batch documents of `stream` selected by `where` (on `c.i`), in `order`, page by page. */
  async function* documents(
    stream: StreamName,
    where: string,
    parameters: { name: string; value: number | string }[],
    order: "ASC" | "DESC",
    pageSize = PAGE_DOCUMENTS,
  ): AsyncGenerator<Record<string, unknown>[]> {
    const iterator = container.items.query<Record<string, unknown>>(
      {
        query: `SELECT * FROM c WHERE c.p = @p AND c.i >= 0 AND ${where} ORDER BY c.i ${order}`,
        parameters: [{ name: "@p", value: stream }, ...parameters],
      },
      { partitionKey: stream, maxItemCount: pageSize },
    );
    while (iterator.hasMoreResults()) {
      const page = await iterator.fetchNext();
      if (page.resources.length > 0) yield page.resources;
    }
  }

  async function readStream(
    stream: StreamName,
    options: CosmosReadStreamOptions = {},
  ): Promise<StreamEvent[]> {
    checkCosmosStreamName(stream);
    const fromIndex = checkInteger("fromIndex", options.fromIndex ?? 0, 0);
    const maxCount = options.maxCount === undefined
      ? Number.POSITIVE_INFINITY
      : checkInteger("maxCount", options.maxCount, 0);
    const onInvalid = options.onInvalid;
    const out: StreamEvent[] = [];
    if (maxCount === 0) return out;
    // Documents chain: each starts where the one before ended (ids are their first index, so
    // two cannot start at one index). One starting inside the events before it was written
    // around the store and is skipped.
    let expected = fromIndex;
    let first = true;
    const pageSize = Number.isFinite(maxCount) ? Math.min(maxCount, PAGE_DOCUMENTS) : undefined;
    const after = [{ name: "@from", value: fromIndex }];
    for await (const page of documents(stream, "c.n > @from", after, "ASC", pageSize)) {
      for (const doc of page) {
        const i = Number(doc.i);
        const n = Number(doc.n);
        if (!isStoreBatch(doc)) {
          foreign(stream, doc, `its id is not its first index ${describe(doc.i)}`, onInvalid);
          continue;
        }
        if (!first && i < expected) {
          foreign(stream, doc, `it starts inside the events before ${expected}`, onInvalid);
          continue;
        }
        if (i > expected) {
          log.warn("{stream} has no batch document for events {from} to {to}", {
            stream,
            from: expected,
            to: i - 1,
          });
        }
        first = false;
        expected = n;
        for (const event of decodeBatch(doc, onInvalid)) {
          if (event.index < fromIndex) continue;
          out.push(event);
          if (out.length >= maxCount) return out;
        }
      }
    }
    return out;
  }

  async function readBackwards(
    stream: StreamName,
    options: CosmosReadBackwardsOptions = {},
  ): Promise<StreamEvent[]> {
    checkCosmosStreamName(stream);
    const from = options.fromIndex === undefined
      ? Number.MAX_SAFE_INTEGER
      : checkInteger("fromIndex", options.fromIndex, 0);
    const maxCount = options.maxCount === undefined
      ? Number.POSITIVE_INFINITY
      : checkInteger("maxCount", options.maxCount, 0);
    const out: StreamEvent[] = [];
    if (maxCount === 0) return out;
    for await (
      const page of documents(stream, "c.i <= @from", [{ name: "@from", value: from }], "DESC")
    ) {
      for (const doc of page) {
        if (!isStoreBatch(doc)) continue;
        const events = decodeBatch(doc);
        for (let k = events.length - 1; k >= 0; k--) {
          if (events[k].index > from) continue;
          out.push(events[k]);
          if (out.length >= maxCount) return out;
        }
      }
    }
    return out;
  }

  async function readLastEvent(
    stream: StreamName,
    type?: string,
  ): Promise<StreamEvent | undefined> {
    checkCosmosStreamName(stream);
    if (type === undefined) return (await readBackwards(stream, { maxCount: 1 }))[0];
    checkType(type);
    const typed = [{ name: "@t", value: type }];
    for await (const page of documents(stream, "ARRAY_CONTAINS(c.ty, @t)", typed, "DESC", 5)) {
      const doc = page.find(isStoreBatch);
      if (doc !== undefined) return decodeBatch(doc).findLast((e) => e.type === type);
    }
    return undefined;
  }

  async function readFromLast(stream: StreamName, type: string): Promise<StreamEvent[]> {
    checkCosmosStreamName(stream);
    checkType(type);
    // Newest document first, until one holds the type: usually one page however long the stream.
    const newestFirst: StreamEvent[][] = [];
    for await (const page of documents(stream, "c.i >= 0", [], "DESC", 20)) {
      for (const doc of page) {
        if (!isStoreBatch(doc)) continue;
        const events = decodeBatch(doc);
        const at = events.findLastIndex((e) => e.type === type);
        newestFirst.push(at < 0 ? events : events.slice(at));
        if (at >= 0) return newestFirst.reverse().flat();
      }
    }
    return newestFirst.reverse().flat();
  }

  return {
    container: events,
    version,
    append,
    readStream,
    readBackwards,
    readLastEvent,
    readFromLast,
  };
}

/**
 * Throws {@linkcode InvalidArgumentError} unless `container` looks like an `@azure/cosmos`
 * `Container`; returns it as the SDK's type.
 */
function checkContainer(container: CosmosContainer): Container {
  if (
    container === null || typeof container !== "object" || typeof container.item !== "function" ||
    typeof container.items !== "object"
  ) {
    throw new InvalidArgumentError("container", "must be a Container of @azure/cosmos");
  }
  return sdkContainer(container);
}

function checkType(type: unknown): void {
  if (typeof type !== "string" || type.length === 0) {
    throw new InvalidArgumentError("type", `must be a non-empty string, got ${describe(type)}`);
  }
}

interface Encoded {
  readonly events: CosmosEventDocument[];
  readonly types: string[];
}

function batchDocument(
  stream: StreamName,
  index: number,
  ts: number,
  encoded: Encoded,
): CosmosBatchDocument {
  return {
    id: String(index),
    p: stream,
    i: index,
    n: index + encoded.events.length,
    ts,
    ty: encoded.types,
    e: encoded.events,
  };
}

/** Checks and encodes an append's events; refuses what Cosmos could not take. */
function encodeEvents(stream: StreamName, events: readonly EventData[]): Encoded {
  const out: CosmosEventDocument[] = [];
  const types = new Set<string>();
  // The document's own fields: id, p (the stream), i, n, ts, ty, e and system properties.
  let bytes = 200 + 2 * utf8Length(stream);
  for (const [k, event] of events.entries()) {
    if (event === null || typeof event !== "object") {
      throw new InvalidArgumentError(`events[${k}]`, `must be an object, got ${describe(event)}`);
    }
    if (typeof event.type !== "string" || event.type.length === 0) {
      throw new InvalidArgumentError(`events[${k}].type`, "must be a non-empty string");
    }
    const typeBytes = utf8Length(event.type);
    if (typeBytes > MAX_EVENT_TYPE_BYTES) {
      throw new InvalidArgumentError(
        `events[${k}].type`,
        `is ${typeBytes} bytes in UTF-8, over the limit of ${MAX_EVENT_TYPE_BYTES}`,
      );
    }
    if (event.id !== undefined && (typeof event.id !== "string" || event.id.length === 0)) {
      throw new InvalidArgumentError(
        `events[${k}].id`,
        `must be a non-empty string when given, got ${describe(event.id)}`,
      );
    }
    for (const field of ["correlationId", "causationId"] as const) {
      if (event[field] !== undefined && typeof event[field] !== "string") {
        throw new InvalidArgumentError(
          `events[${k}].${field}`,
          `must be a string when given, got ${describe(event[field])}`,
        );
      }
    }
    const doc: Record<string, unknown> = { c: event.type, id: event.id ?? crypto.randomUUID() };
    const data = encodeBody(`events[${k}].data`, event.data, doc, "d", "D");
    const meta = encodeBody(`events[${k}].meta`, event.meta, doc, "m", "M");
    doc.s = data + meta;
    if (event.correlationId !== undefined) doc.correlationId = event.correlationId;
    if (event.causationId !== undefined) doc.causationId = event.causationId;
    // Types, ids and the field names as JSON, twice over for the type (also in `ty`).
    bytes += data + meta + 2 * jsonLength(event.type) + jsonLength(doc.id as string) +
      jsonLength(event.correlationId) + jsonLength(event.causationId) + 90;
    if (bytes > MAX_APPEND_BYTES) {
      throw new InvalidArgumentError(
        events.length === 1 ? "events[0]" : "events",
        `take about ${bytes} bytes as JSON by events[${k}], over the ${MAX_APPEND_BYTES} one ` +
          `Cosmos append can write (split the append)`,
      );
    }
    types.add(event.type);
    out.push(doc as unknown as CosmosEventDocument);
  }
  return { events: out, types: [...types] };
}

/** Sets a body on the event's document (JSON, or base64 for bytes); returns its stored bytes. */
function encodeBody(
  field: string,
  value: unknown,
  doc: Record<string, unknown>,
  json: string,
  binary: string,
): number {
  if (value === undefined) return 0;
  if (value instanceof Uint8Array) {
    const text = toBase64(value);
    doc[binary] = text;
    return text.length;
  }
  // The text is what the SDK will send: checked here so that what it cannot take is a typed
  // error naming the field, and measured.
  const text = storedJson(field, value);
  if (text === undefined) return 0;
  doc[json] = value;
  return utf8Length(text);
}

/**
 * Decodes the events of one batch document of the events container (as the change feed or a
 * query returns it). An event that cannot be read goes to `onInvalid`, or rejects with
 * {@linkcode EventDecodeError} without it.
 *
 * @example
 * ```ts
 * import { decodeBatch } from "@impel/impel/stores/cosmos";
 * const [event] = decodeBatch({
 *   id: "4", p: "Order-1", i: 4, n: 5, ts: 0, ty: ["Placed"],
 *   e: [{ c: "Placed", d: { total: 3 }, id: "x", s: 11 }],
 * });
 * console.log(event.index, event.data); // 4 { total: 3 }
 * ```
 */
export function decodeBatch(
  doc: Record<string, unknown>,
  onInvalid?: (event: StreamEvent, error: EventDecodeError) => void,
): StreamEvent[] {
  const first = Number(doc.i);
  const list = doc.e;
  const time = new Date(Number(doc.ts ?? 0));
  const stream = typeof doc.p === "string" ? doc.p : "";
  const out: StreamEvent[] = [];
  if (!Number.isInteger(first) || first < 0) return out;
  if (!Array.isArray(list)) {
    const next = Number(doc.n);
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
        `in ${JSON.stringify(stream.slice(0, 200))}: the document's e is not a list of events`,
      );
      if (onInvalid === undefined) throw error;
      onInvalid(event, error);
    }
    return out;
  }
  for (const [k, raw] of list.entries()) {
    const e = (raw ?? {}) as Record<string, unknown>;
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
      type: typeof e.c === "string" ? e.c : "",
      data: e.d,
      meta: e.m,
      id: typeof e.id === "string" ? e.id : "",
      time,
      size: typeof e.s === "number" ? e.s : 0,
    };
    if (typeof e.correlationId === "string") event.correlationId = e.correlationId;
    if (typeof e.causationId === "string") event.causationId = e.causationId;
    try {
      if (event.type.length === 0) throw new Error("it has no type (c)");
      if (e.D !== undefined) event.data = fromBase64(e.D, "data (D)");
      if (e.M !== undefined) event.meta = fromBase64(e.M, "meta (M)");
    } catch (error) {
      const decodeError = new EventDecodeError(
        "MalformedEvent",
        event,
        `in ${JSON.stringify(stream.slice(0, 200))}: ${(error as Error).message}`,
        { cause: error },
      );
      if (onInvalid === undefined) throw decodeError;
      onInvalid(event, decodeError);
      continue;
    }
    out.push(event);
  }
  return out;
}

// A batch document outside the stream's chain (written around the store): its events are not
// the stream's. They go to `onInvalid` when given, so that a reader sees what was skipped.
function foreign(
  stream: StreamName,
  doc: Record<string, unknown>,
  why: string,
  onInvalid?: (event: StreamEvent, error: EventDecodeError) => void,
): void {
  log.warn("skipped the document {id} of {stream}, not an append of the store: {why}", {
    stream,
    id: String(doc.id),
    why,
  });
  if (onInvalid === undefined) return;
  for (const event of decodeBatch(doc, () => {})) {
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

function stray(stream: StreamName, expected: number, cause: unknown): CosmosAppendError {
  return new CosmosAppendError(
    "CosmosStrayDocument",
    stream,
    expected,
    `a document the store did not write already has id ${expected} in the stream's partition; ` +
      `remove it to append here`,
    cause,
  );
}

function ok(result: OperationResponse | undefined): result is OperationResponse {
  return result !== undefined && result.statusCode >= 200 && result.statusCode < 300;
}

function isConflict(result: OperationResponse | undefined): boolean {
  return result !== undefined && (result.statusCode === 409 || result.statusCode === 412);
}

/**
 * The HTTP status of a failed Cosmos call (`ErrorResponse.code`), if it has one.
 *
 * @example
 * ```ts
 * import { statusOf } from "@impel/impel/stores/cosmos";
 * console.log(statusOf({ code: 412 }), statusOf(new Error("no"))); // 412 undefined
 * ```
 */
export function statusOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown; statusCode?: unknown } | null)?.code ??
    (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === "number" ? code : undefined;
}

const NETWORK = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EAI_AGAIN|socket|network|fetch failed/i;

/**
 * Whether a failed Cosmos call is worth retrying as it is: throttling (429, which the SDK has
 * already retried), a timeout (408), "retry with" (449), a server error (5xx) or a failed
 * connection. impel's own errors are not, unless they only wrap one that is.
 *
 * @example
 * ```ts
 * import { isTransientCosmosError } from "@impel/impel/stores/cosmos";
 * console.log(isTransientCosmosError({ code: 503 }), isTransientCosmosError({ code: 400 })); // true false
 * ```
 */
export function isTransientCosmosError(error: unknown): boolean {
  if (error instanceof ImpelError) {
    return error.cause !== undefined && isTransientCosmosError(error.cause);
  }
  const status = statusOf(error);
  if (status !== undefined) {
    return status === 408 || status === 429 || status === 449 || status >= 500;
  }
  if (error instanceof TypeError && error.message !== "fetch failed") return false;
  const err = error as { code?: unknown; cause?: unknown; name?: unknown } | null;
  if (err?.name === "TimeoutError") return true;
  if (err?.cause !== undefined && err.cause !== error && isTransientCosmosError(err.cause)) {
    return true;
  }
  return NETWORK.test(typeof err?.code === "string" ? err.code : "") || NETWORK.test(String(error));
}

/** A short text of an error, for messages. */
export function errorText(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.length > 300 ? `${message.slice(0, 300)}…` : message;
}

function jsonLength(text: string | undefined): number {
  return text === undefined ? 0 : utf8Length(JSON.stringify(text));
}

/** The UTF-8 byte length of `s`, without allocating. */
export function utf8Length(s: string): number {
  let bytes = 0;
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      bytes += 4;
      k++;
    } else bytes += 3;
  }
  return bytes;
}

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (let k = 0; k < bytes.length; k += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(k, k + 0x8000));
  }
  return btoa(text);
}

function fromBase64(value: unknown, what: string): Uint8Array {
  if (typeof value !== "string") throw new Error(`its ${what} is not base64 text`);
  let text: string;
  try {
    text = atob(value);
  } catch (e) {
    throw new Error(`its ${what} is not base64 (${(e as Error).message})`, { cause: e });
  }
  const bytes = new Uint8Array(text.length);
  for (let k = 0; k < text.length; k++) bytes[k] = text.charCodeAt(k);
  return bytes;
}
