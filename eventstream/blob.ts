/**
 * Event stream storage in Azure append blobs (Lokad's production backend), through
 * `@azure/storage-blob`; tested against Azurite. The stream is a series of append blobs
 * `<prefix>events.00000`, `events.00001`, ... in one container, each a concatenation of frames
 * (`eventstream/frame.ts`); each append is one block, so it lands whole or not at all.
 *
 * - Optimistic concurrency: a block is appended only at the blob length the writer last saw
 *   (the append-position condition); the service answers 412 `AppendPositionConditionNotMet`
 *   when another writer got there first, which is {@linkcode AppendConflictError}.
 * - Rollover: a blob takes at most `maxBlocks` blocks (Azure's limit is 50,000); the append
 *   after that goes to a new blob, created only if it does not exist, with the sequence number
 *   of its first event in its metadata (`firstseq`), so that a reader finds where an event is
 *   from the listing. Every writer of a stream must use the same `maxBlocks`.
 * - Readers need only list and read: a container client made from a SAS URL with those
 *   permissions, and `readOnly: true`.
 * - Snapshots of the service can live beside the stream (`storage.snapshots`,
 *   {@linkcode blobSnapshots}): a block blob `<prefix>snapshots/<Name>.json` per projection.
 *
 * @module
 */
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import {
  CorruptFrameError,
  decodeFrames,
  DEFAULT_MAX_PAYLOAD,
  encodeFrames,
  FRAME_OVERHEAD,
  type StoredEvent,
} from "./frame.ts";
import { checkNextSegment, readSegment } from "./segment.ts";
import { AppendConflictError, type EventStorage, StorageClosedError } from "./storage.ts";
import { checkSnapshotKey, type SnapshotStore } from "./snapshots.ts";

/**
 * What the storage uses of a container: `ContainerClient` of `@azure/storage-blob` has it (the
 * module takes the client from the caller and does not import the SDK itself).
 *
 * @example
 * ```ts ignore
 * import { BlobServiceClient } from "@azure/storage-blob";
 * import type { BlobContainer } from "@impel/impel/eventstream/blob";
 * const container: BlobContainer = BlobServiceClient
 *   .fromConnectionString("UseDevelopmentStorage=true")
 *   .getContainerClient("events");
 * ```
 */
export interface BlobContainer {
  /** The container's URL, in names and errors. */
  readonly url: string;
  /** Creates the container unless it exists. */
  createIfNotExists(): Promise<unknown>;
  /** Lists blobs. */
  listBlobsFlat(
    options: { prefix?: string; includeMetadata?: boolean },
  ): AsyncIterable<{ name: string; metadata?: Record<string, string> }>;
  /** An append blob. */
  getAppendBlobClient(name: string): AppendBlobHandle;
  /** A blob, to read. */
  getBlobClient(name: string): BlobHandle;
  /** A block blob: the snapshots. */
  getBlockBlobClient(name: string): BlockBlobHandle;
}

/**
 * What {@linkcode blobSnapshots} uses of a block blob (`BlockBlobClient` has it).
 *
 * @example
 * ```ts ignore
 * import { BlobServiceClient } from "@azure/storage-blob";
 * import type { BlockBlobHandle } from "@impel/impel/eventstream/blob";
 * const blob: BlockBlobHandle = BlobServiceClient
 *   .fromConnectionString("UseDevelopmentStorage=true")
 *   .getContainerClient("events").getBlockBlobClient("snapshots/Words.json");
 * ```
 */
export interface BlockBlobHandle {
  /** Downloads the blob, with its ETag. */
  download(): Promise<{
    etag?: string;
    readableStreamBody?: AsyncIterable<Uint8Array | string>;
    blobBody?: Promise<Blob>;
  }>;
  /** Replaces the blob whole, if `conditions` hold (else 412, or 409 when it exists). */
  upload(
    body: Uint8Array,
    length: number,
    options: { conditions?: { ifMatch?: string; ifNoneMatch?: string } },
  ): Promise<unknown>;
}

/**
 * What the storage uses of an append blob client.
 *
 * @example
 * ```ts ignore
 * import type { AppendBlobHandle, BlobContainer } from "@impel/impel/eventstream/blob";
 * declare const container: BlobContainer;
 * const blob: AppendBlobHandle = container.getAppendBlobClient("events.00000");
 * ```
 */
export interface AppendBlobHandle {
  /** Creates the blob (with `ifNoneMatch: "*"`: only if it does not exist). */
  create(
    options: { conditions?: { ifNoneMatch?: string }; metadata?: Record<string, string> },
  ): Promise<unknown>;
  /** Its size, block count and metadata. */
  getProperties(): Promise<
    { contentLength?: number; blobCommittedBlockCount?: number; metadata?: Record<string, string> }
  >;
  /** Appends a block at `appendPosition` (else 412 AppendPositionConditionNotMet). */
  appendBlock(
    body: Uint8Array,
    length: number,
    options: { conditions?: { appendPosition?: number } },
  ): Promise<{ blobCommittedBlockCount?: number }>;
}

/**
 * What the storage uses of a blob client to read.
 *
 * @example
 * ```ts ignore
 * import type { BlobContainer, BlobHandle } from "@impel/impel/eventstream/blob";
 * declare const container: BlobContainer;
 * const blob: BlobHandle = container.getBlobClient("events.00000");
 * ```
 */
export interface BlobHandle {
  /** Downloads from `offset` to the end; the response tells the block count. */
  download(offset?: number): Promise<{
    blobCommittedBlockCount?: number;
    readableStreamBody?: AsyncIterable<Uint8Array | string>;
    blobBody?: Promise<Blob>;
  }>;
  /** Downloads `count` bytes from `offset`. */
  downloadToBuffer(offset?: number, count?: number): Promise<Uint8Array>;
  /** Its size. */
  getProperties(): Promise<{ contentLength?: number }>;
}

/** The largest block Azure appends in one request that every service version accepts. */
const MAX_BLOCK_BYTES = 4 * 1024 * 1024;

/**
 * Options of {@linkcode blobStorage}.
 *
 * @example
 * ```ts ignore
 * import { BlobServiceClient } from "@azure/storage-blob";
 * import { blobStorage, type BlobStorageOptions } from "@impel/impel/eventstream/blob";
 * const service = BlobServiceClient.fromConnectionString("UseDevelopmentStorage=true");
 * const options: BlobStorageOptions = {
 *   container: service.getContainerClient("events"),
 *   prefix: "words/",
 *   maxBlocks: 50_000,
 * };
 * const storage = await blobStorage(options);
 * ```
 */
export interface BlobStorageOptions {
  /** The container (created if missing, unless `readOnly`): a `ContainerClient`. */
  readonly container: BlobContainer;
  /** Blob names start with this (default none). */
  readonly prefix?: string;
  /** Blocks per blob before rolling over to the next (default 50,000, Azure's limit). */
  readonly maxBlocks?: number;
  /** The largest event payload in bytes (default 4 MiB); an append is at most 4 MiB. */
  readonly maxPayload?: number;
  /** Read only (a SAS with list and read permissions is enough): appends reject. */
  readonly readOnly?: boolean;
  /** Named in errors (default: the container URL, without a SAS, and prefix). */
  readonly name?: string;
}

/**
 * Blob storage: the contract plus its blobs.
 *
 * @example
 * ```ts ignore
 * import { BlobServiceClient } from "@azure/storage-blob";
 * import { blobStorage, type BlobStorage } from "@impel/impel/eventstream/blob";
 * const container = BlobServiceClient.fromConnectionString("UseDevelopmentStorage=true")
 *   .getContainerClient("events");
 * const storage: BlobStorage = await blobStorage({ container });
 * console.log(storage.blobs());
 * ```
 */
export interface BlobStorage extends EventStorage {
  /** The blobs found so far, oldest first, with the sequence number of their first event. */
  blobs(): { name: string; first: number }[];
  /**
   * Snapshots beside the stream, {@linkcode blobSnapshots} with the same container and prefix;
   * read-only storage loads them, and a save rejects with {@linkcode ReadOnlyBlobStorageError}.
   */
  readonly snapshots: SnapshotStore;
}

/**
 * Snapshots as block blobs `<prefix>snapshots/<key>.json` in `container` (the stream's storage
 * offers this as `snapshots`). An upload replaces a blob whole, so a reader sees the old snapshot
 * or the new one. Several writers of one stream may save at once: each save is conditional on
 * the blob it found (`If-Match` its ETag, `If-None-Match: *` when there was none) and is not
 * made when the stored snapshot is of the same projection version at the same or a later
 * sequence number, so a slower writer never replaces a newer snapshot with an older one.
 *
 * @example
 * ```ts ignore
 * import { BlobServiceClient } from "@azure/storage-blob";
 * import { blobSnapshots } from "@impel/impel/eventstream/blob";
 * const container = BlobServiceClient.fromConnectionString("UseDevelopmentStorage=true")
 *   .getContainerClient("events");
 * const snapshots = blobSnapshots(container, "words/");
 * await snapshots.save("Words", JSON.stringify({ name: "Words-1", seq: 10, state: {} }));
 * ```
 */
export function blobSnapshots(container: BlobContainer, prefix = ""): SnapshotStore {
  return snapshotBlobs(container, prefix);
}

/**
 * {@linkcode blobSnapshots}, and with `streamLast` (the stream's last sequence number now) a stored
 * snapshot beyond the stream (left from another history of it) is replaced, not kept: kept, it
 * would be loaded as valid once the stream grew past it.
 */
function snapshotBlobs(
  container: BlobContainer,
  prefix: string,
  streamLast?: () => Promise<number>,
): SnapshotStore {
  if (typeof container?.getBlockBlobClient !== "function") {
    throw new InvalidArgumentError("container", "must be a ContainerClient of @azure/storage-blob");
  }
  if (typeof prefix !== "string") throw new InvalidArgumentError("prefix", "must be a string");
  const blobOf = (key: string) =>
    container.getBlockBlobClient(`${prefix}snapshots/${checkSnapshotKey(key)}.json`);
  const get = async (blob: BlockBlobHandle) => {
    try {
      const response = await blob.download();
      return { etag: response.etag, text: new TextDecoder().decode(await bodyBytes(response)) };
    } catch (error) {
      if (statusOf(error).status === 404) return undefined;
      throw error;
    }
  };
  /** The projection version and sequence number of a snapshot's text, if it has them. */
  const position = (text: string) => {
    try {
      const { name, seq } = JSON.parse(text);
      return typeof name === "string" && typeof seq === "number" ? { name, seq } : undefined;
    } catch {
      return undefined;
    }
  };
  return {
    async load(key) {
      return (await get(blobOf(key)))?.text;
    },
    async save(key, text) {
      const blob = blobOf(key);
      const body = new TextEncoder().encode(text);
      const ours = position(text);
      for (let attempt = 1;; attempt++) {
        const found = await get(blob);
        const theirs = found && position(found.text);
        if (
          ours && theirs && theirs.name === ours.name && theirs.seq >= ours.seq &&
          (streamLast === undefined || theirs.seq <= await streamLast())
        ) return;
        try {
          await blob.upload(body, body.length, {
            conditions: found?.etag ? { ifMatch: found.etag } : { ifNoneMatch: "*" },
          });
          return;
        } catch (error) {
          const { status } = statusOf(error);
          // Another writer saved in between: look again (a handful of times; saves are rare).
          if ((status !== 412 && status !== 409) || attempt >= 5) throw error;
        }
      }
    },
  };
}

/**
 * An append to storage opened read-only (or refused by the service for lack of permission).
 *
 * @example
 * ```ts
 * import { ReadOnlyBlobStorageError } from "@impel/impel/eventstream/blob";
 * console.log(new ReadOnlyBlobStorageError("events").code); // "ReadOnlyStorage"
 * ```
 */
export class ReadOnlyBlobStorageError extends ImpelError {
  /** Creates the error. */
  constructor(storage: string, cause?: unknown) {
    super("ReadOnlyStorage", `${storage} is read-only: it cannot be appended to`, { cause });
  }
}

interface BlobState {
  readonly name: string;
  readonly first: number;
  /** Bytes known to hold whole frames. */
  length: number;
  /** Committed blocks, as of the last look. */
  blocks: number;
  /** Known (seq, offset) frame starts, ascending. */
  readonly marks: { seq: number; offset: number }[];
  /** Where the last read of this blob ended. */
  cursor?: { seq: number; offset: number };
}

const pad = (n: number) => String(n).padStart(5, "0");

async function bodyBytes(
  response: { readableStreamBody?: AsyncIterable<Uint8Array | string>; blobBody?: Promise<Blob> },
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  if (response.readableStreamBody) {
    for await (const c of response.readableStreamBody) {
      // Bytes unless an encoding was set on the stream, which nothing here does.
      if (typeof c === "string") throw new ImpelError("BlobBody", "a blob body came as text");
      chunks.push(c);
    }
  } else if (response.blobBody) {
    chunks.push(new Uint8Array(await (await response.blobBody).arrayBuffer()));
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) out.set(c, at), at += c.length;
  return out;
}

/**
 * Follows the frame headers of `bytes` (lengths and sequence numbers from `seq`; no checksums, no
 * JSON): where its last append starts and that append's first sequence number, when `bytes` are
 * whole appends; `undefined` for anything else.
 */
function lastAppendOf(
  bytes: Uint8Array,
  seq: number,
  maxPayload: number,
): { offset: number; seq: number } | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  let appendAt = 0;
  let appendSeq = seq;
  let last: { offset: number; seq: number } | undefined;
  while (at < bytes.length) {
    if (at + FRAME_OVERHEAD > bytes.length) return undefined;
    const n = view.getUint32(at, true);
    const got = view.getUint32(at + 4, true) + view.getUint32(at + 8, true) * 0x1_0000_0000;
    if (n > maxPayload || got !== seq || at + FRAME_OVERHEAD + n > bytes.length) return undefined;
    at += FRAME_OVERHEAD + n;
    seq++;
    if (view.getUint32(at - FRAME_OVERHEAD - n + 12, true) === 0) {
      last = { offset: appendAt, seq: appendSeq };
      appendAt = at;
      appendSeq = seq;
    }
  }
  return appendAt === bytes.length ? last : undefined;
}

function statusOf(error: unknown): { status?: number; code?: string } {
  const e = error as { statusCode?: number; code?: string; details?: { errorCode?: string } };
  return { status: e?.statusCode, code: e?.details?.errorCode ?? e?.code };
}

/**
 * Opens the stream in `options.container`: lists its blobs and finds the last event.
 *
 * @example
 * ```ts ignore
 * import { BlobServiceClient } from "@azure/storage-blob";
 * import { blobStorage } from "@impel/impel/eventstream/blob";
 * import { eventStream } from "@impel/impel/eventstream";
 * const container = BlobServiceClient.fromConnectionString("UseDevelopmentStorage=true")
 *   .getContainerClient("words");
 * const service = eventStream({
 *   storage: await blobStorage({ container }),
 *   projections: { count: { name: "Count-1", initial: 0, apply: (n: number) => n + 1 } },
 * });
 * await service.ready;
 * ```
 */
export async function blobStorage(options: BlobStorageOptions): Promise<BlobStorage> {
  const container = options?.container;
  if (typeof container?.getAppendBlobClient !== "function") {
    throw new InvalidArgumentError("container", "must be a ContainerClient of @azure/storage-blob");
  }
  const prefix = options.prefix ?? "";
  if (typeof prefix !== "string") throw new InvalidArgumentError("prefix", "must be a string");
  const maxBlocks = checkInteger("maxBlocks", options.maxBlocks ?? 50_000, 1, 50_000);
  const maxPayload = checkInteger("maxPayload", options.maxPayload ?? DEFAULT_MAX_PAYLOAD, 1);
  const readOnly = options.readOnly ?? false;
  // The container's URL without its query: a SAS there would be in every log line and error, and
  // the source's checkpoint key (the name) would change each time the SAS is renewed.
  const url = new URL(container.url);
  url.search = "";
  const name = options.name ?? `${url.href}/${prefix}`;
  if (!readOnly) {
    try {
      await container.createIfNotExists();
    } catch (error) {
      // A SAS without write permissions: say what to do rather than hand on a bare 403.
      if (statusOf(error).status === 403) throw new ReadOnlyBlobStorageError(name, error);
      throw error;
    }
  }

  const snapshots = snapshotBlobs(container, prefix, () =>
    serial(async () => {
      await refresh();
      return last;
    }));
  let blobs: BlobState[] = [];
  /** The last downloaded range of a blob. */
  let cache: { name: string; offset: number; bytes: Uint8Array } | undefined;
  let last = 0;
  let closed = false;
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => {});
    return next;
  };

  const blobName = (i: number) => `${prefix}events.${pad(i)}`;
  const list = async () => {
    const found: { name: string; first: number; length: number; blocks: number }[] = [];
    for await (
      const item of container.listBlobsFlat({ prefix: `${prefix}events.`, includeMetadata: true })
    ) {
      const first = Number(item.metadata?.firstseq);
      if (!/^\d{5}$/.test(item.name.slice(prefix.length + 7))) continue;
      if (!Number.isSafeInteger(first) || first < 1) {
        throw new CorruptFrameError(item.name, 0, "sequence", "no firstseq metadata");
      }
      found.push({ name: item.name, first, length: 0, blocks: 0 });
    }
    found.sort((a, b) => a.name.localeCompare(b.name));
    const known = new Map(blobs.map((b) => [b.name, b]));
    blobs = found.map((f, i) => {
      if (f.name !== blobName(i)) {
        throw new CorruptFrameError(f.name, 0, "sequence", `blob ${blobName(i)} is missing`);
      }
      return known.get(f.name) ?? { ...f, marks: [] };
    });
  };

  /**
   * Finds the stream's end as of now: downloads the last blob from what is known of it (one
   * request, which also tells the block count). A writer lists the blobs only when the last one
   * is full, since every writer rolls over at the same `maxBlocks`; a reader, which does not
   * know the writers' limit, lists them every time.
   */
  const refresh = async () => {
    if (readOnly || blobs.length === 0 || blobs.at(-1)!.blocks >= maxBlocks) await list();
    for (;;) {
      const tail = blobs.at(-1);
      if (tail === undefined) return;
      if (last < tail.first - 1) last = tail.first - 1;
      await readTail(tail);
      if (readOnly || tail.blocks < maxBlocks) return;
      const count = blobs.length;
      await list();
      if (blobs.length === count) return;
    }
  };

  const readTail = async (tail: BlobState) => {
    let bytes: Uint8Array;
    try {
      const response = await container.getBlobClient(tail.name).download(tail.length);
      tail.blocks = response.blobCommittedBlockCount ?? tail.blocks;
      bytes = await bodyBytes(response);
    } catch (error) {
      // 416: nothing after the offset (the service answers so rather than with no bytes).
      if (statusOf(error).status === 416) return;
      throw error;
    }
    // Finding the end needs only the frame headers and the last append verified in full (as the
    // file backend does): a restart from a snapshot then costs the download, not a decode of the
    // whole blob. The frames before it are verified when something reads them. Anything unusual
    // in the headers: decode all, which names the bad frame.
    const walked = lastAppendOf(bytes, last + 1, maxPayload);
    const from = walked?.offset ?? 0;
    const decoded = decodeFrames(bytes.subarray(from), {
      where: tail.name,
      expectedSeq: walked?.seq ?? last + 1,
      offset: tail.length + from,
      maxPayload,
    });
    if (decoded.incomplete || from + decoded.end !== bytes.length) {
      throw new CorruptFrameError(
        tail.name,
        tail.length + from + decoded.end,
        "truncated",
        "a block ends inside a frame",
      );
    }
    if (decoded.events.length) last = decoded.events.at(-1)!.seq;
    tail.length += bytes.length;
  };

  /** The events after `after` that are known; looks for more first only when there are none. */
  const read = async (after: number, maxCount: number): Promise<StoredEvent[]> => {
    if (after >= last) await refresh();
    return await readKnown(after, maxCount);
  };

  const readKnown = async (after: number, maxCount: number): Promise<StoredEvent[]> => {
    const out: StoredEvent[] = [];
    if (after >= last) return out;
    const target = after + 1;
    let i = blobs.length - 1;
    while (i > 0 && blobs[i].first > target) i--;
    for (; i < blobs.length && out.length < maxCount; i++) {
      const blob = blobs[i];
      const client = container.getBlobClient(blob.name);
      let size = blob.length;
      if (i < blobs.length - 1) {
        // A full blob no longer grows: its size is final once seen.
        size = (await client.getProperties()).contentLength ?? 0;
        blob.length = size;
      }
      let seq = blob.first;
      let pos = 0;
      for (const m of blob.marks) if (m.seq <= target) seq = m.seq, pos = m.offset;
      const c = blob.cursor;
      if (c !== undefined && c.seq <= target && c.seq > seq) seq = c.seq, pos = c.offset;
      const read = await readSegment({
        where: blob.name,
        noun: "blob",
        seq,
        pos,
        size,
        target,
        out,
        maxCount,
        maxPayload,
        chunk: 1024 * 1024,
        fetch: async (at, length) => {
          // A catch-up reads on where the last page ended: serve it from the bytes already
          // downloaded (blocks never change once appended) rather than ask for a megabyte again.
          if (
            cache?.name === blob.name && at >= cache.offset &&
            at < cache.offset + cache.bytes.length
          ) {
            return cache.bytes.subarray(
              at - cache.offset,
              Math.min(cache.bytes.length, size - cache.offset),
            );
          }
          const bytes = await client.downloadToBuffer(at, length);
          cache = { name: blob.name, offset: at, bytes };
          return bytes;
        },
        grown: () => void (cache = undefined),
        advanced: (next, at) => {
          const prev = blob.marks.at(-1);
          if (prev === undefined || at - prev.offset >= 256 * 1024) {
            blob.marks.push({ seq: next, offset: at });
          }
          blob.cursor = { seq: next, offset: at };
        },
      });
      const next = blobs[i + 1];
      checkNextSegment("blob", next && { where: next.name, first: next.first }, read, size);
    }
    return out;
  };

  /** Creates the next blob, or finds the one another writer created for the same event. */
  const roll = async (): Promise<BlobState> => {
    const index = blobs.length;
    const next = blobName(index);
    const client = container.getAppendBlobClient(next);
    try {
      await client.create({
        conditions: { ifNoneMatch: "*" },
        metadata: { firstseq: String(last + 1) },
      });
    } catch (error) {
      const { status } = statusOf(error);
      if (status !== 409 && status !== 412) throw error;
      const props = await client.getProperties();
      if (Number(props.metadata?.firstseq) !== last + 1) {
        throw new AppendConflictError(name, last, undefined);
      }
    }
    const blob: BlobState = { name: next, first: last + 1, length: 0, blocks: 0, marks: [] };
    blobs.push(blob);
    return blob;
  };

  const append = async (after: number, events: readonly unknown[]): Promise<number> => {
    if (closed) throw new StorageClosedError(name);
    if (readOnly) throw new ReadOnlyBlobStorageError(name);
    if (after > last) await refresh();
    if (after !== last) throw new AppendConflictError(name, after, last);
    if (events.length === 0) return last;
    const bytes = encodeFrames(last + 1, events, maxPayload);
    if (bytes.length > MAX_BLOCK_BYTES) {
      throw new InvalidArgumentError(
        "events",
        `make ${bytes.length} bytes of frames, above the ${MAX_BLOCK_BYTES} bytes of one block`,
      );
    }
    let blob = blobs.at(-1);
    if (blob === undefined || blob.blocks >= maxBlocks) blob = await roll();
    try {
      const response = await container.getAppendBlobClient(blob.name).appendBlock(
        bytes,
        bytes.length,
        { conditions: { appendPosition: blob.length } },
      );
      blob.blocks = response.blobCommittedBlockCount ?? blob.blocks + 1;
    } catch (error) {
      const { status, code } = statusOf(error);
      if (status === 412 && code === "AppendPositionConditionNotMet") {
        throw new AppendConflictError(name, after, undefined);
      }
      if (status === 409 && code === "BlockCountExceedsLimit") {
        blob.blocks = maxBlocks; // the next attempt rolls over
        throw new AppendConflictError(name, after, undefined);
      }
      if (status === 403) throw new ReadOnlyBlobStorageError(name, error);
      throw error;
    }
    blob.marks.length === 0 && blob.length >= 256 * 1024 &&
      blob.marks.push({ seq: last + 1, offset: blob.length });
    blob.length += bytes.length;
    last += events.length;
    return last;
  };

  await serial(refresh);

  return {
    name,
    blobs: () => blobs.map(({ name, first }) => ({ name, first })),
    snapshots: {
      load: (key) => snapshots.load(key),
      save: (key, text) => {
        if (readOnly) return Promise.reject(new ReadOnlyBlobStorageError(name));
        return snapshots.save(key, text);
      },
    },
    read(after, maxCount = 1000) {
      return serial(() => {
        if (closed) throw new StorageClosedError(name);
        checkInteger("after", after, 0);
        checkInteger("maxCount", maxCount, 1);
        return read(after, maxCount);
      });
    },
    last() {
      return serial(async () => {
        if (closed) throw new StorageClosedError(name);
        await refresh();
        return last;
      });
    },
    append(after, events) {
      return serial(() => {
        checkInteger("after", after, 0);
        if (!Array.isArray(events)) throw new InvalidArgumentError("events", "must be an array");
        return append(after, events);
      });
    },
    close() {
      closed = true;
      return Promise.resolve();
    },
  };
}
