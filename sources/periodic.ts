/**
 * A source over something that cannot say what changed since a position (a table without a
 * change feed, an API listing): it re-crawls it every `intervalMs` and emits each item as an event
 * of its stream, carrying a hash of its content, and only when that hash differs from the one the
 * stream had at the last crawl, so that unchanged items are not handled again. Propulsion's
 * periodic source, on the paged-tranche reader of `core/reader.ts` (announcement, tail rule,
 * retries of a failed crawl, `problems()`).
 *
 * - Each tranche is crawled on its own (default one tranche, `"0"`). A crawl is one page; the
 *   position is the time the crawl started (ms since the epoch), committed once every changed
 *   item of the crawl is handled. At start a stored checkpoint says when the last crawl was: the
 *   next one comes after `intervalMs` from then (within one interval).
 * - An event's `index` counts the changes of its stream seen in this run (0 for the first crawl
 *   that sees it), `type` is the item's (default `"Crawled"`), `meta` is `{ contentHash }`, and
 *   `id` is `{stream}@{contentHash}`.
 * - The hashes live in memory: after a restart the first crawl emits every item once more
 *   (at least once). An item that is no longer crawled is forgotten; if it comes back it is
 *   emitted again.
 * - A crawl is handed on in batches of `maxBatchItems` (default 1000); only the last batch of a
 *   crawl moves the checkpoint.
 *
 * @module
 */
import type { BatchItem, ObservableSource, Position } from "../core/batch.ts";
import type { CheckpointStore } from "../core/checkpoints.ts";
import { checkInteger, checkNumber, describe, InvalidArgumentError } from "../core/errors.ts";
import type { RetryOptions } from "../core/failure.ts";
import { pagedSource, type ReadPage } from "../core/reader.ts";
import { parseStreamName, type StreamName } from "../core/streamName.ts";

/**
 * One item found by a crawl: the stream it is an event of, and its content.
 *
 * @example
 * ```ts
 * import type { PeriodicItem } from "@impel/impel/sources/periodic";
 * const item: PeriodicItem = { stream: "Product-42", data: { name: "Lamp", price: 30 } };
 * ```
 */
export interface PeriodicItem {
  /** The stream, `{category}-{id}`. */
  readonly stream: StreamName;
  /** The content; what is hashed (as JSON) unless `hash` is given. */
  readonly data: unknown;
  /** The event type (default `"Crawled"`). */
  readonly type?: string;
}

/**
 * Options of {@linkcode periodicSource}.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * import { type PeriodicSourceOptions, periodicSource } from "@impel/impel/sources/periodic";
 * const options: PeriodicSourceOptions = {
 *   name: "prices",
 *   crawl: () => Promise.resolve([{ stream: "Price-1", data: { eur: 3 } }]),
 *   intervalMs: 60_000,
 *   checkpoints: memoryCheckpoints(),
 *   group: "price-sync",
 * };
 * await periodicSource(options).cancel();
 * ```
 */
export interface PeriodicSourceOptions {
  /** The source's name, in logs and as the checkpoint key's `source`. */
  readonly name: string;
  /** Lists every item of `tranche` as it is now. */
  readonly crawl: (tranche: string, signal: AbortSignal) => Promise<readonly PeriodicItem[]>;
  /** The tranches, each crawled on its own (default `["0"]`). */
  readonly tranches?: readonly string[];
  /** Time from the start of one crawl of a tranche to the next, ms. */
  readonly intervalMs: number;
  /** The content hash of an item (default: SHA-256 of `JSON.stringify(item.data)`, base64). */
  readonly hash?: (item: PeriodicItem) => string | Promise<string>;
  /** Where to keep when each tranche was last crawled (none: crawl at once on start). */
  readonly checkpoints?: CheckpointStore;
  /** The consumer group for checkpoints (default `"default"`). */
  readonly group?: string;
  /** Largest batch, in items (default 1000). */
  readonly maxBatchItems?: number;
  /** Backoff between retries of a failed crawl (default 100 ms doubling to 30 s). */
  readonly retry?: RetryOptions;
  /** Aborting stops crawling and closes the stream. */
  readonly signal?: AbortSignal;
}

/**
 * Creates a source that re-crawls every tranche each `intervalMs` and emits the items whose
 * content changed since the last crawl (all of them on the first), as described in the module
 * documentation. An item naming no valid stream, or twice in one crawl, fails the source with an
 * {@linkcode InvalidArgumentError}.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { periodicSource } from "@impel/impel/sources/periodic";
 * const rows = new Map([["1", "Lamp"], ["2", "Desk"]]);
 * const source = periodicSource({
 *   name: "products",
 *   intervalMs: 1000,
 *   crawl: () =>
 *     Promise.resolve([...rows].map(([id, name]) => ({ stream: `Product-${id}`, data: { name } }))),
 * });
 * const sink = streamsSink({ handler: (stream, events) => console.log(stream, events[0].data) });
 * const stop = new AbortController();
 * const running = run(source, sink, { signal: stop.signal });
 * await sink.monitor.awaitCompletion({ tail: true }); // Product-1 { name: "Lamp" }, Product-2 ...
 * stop.abort();
 * await running;
 * ```
 */
export function periodicSource(options: PeriodicSourceOptions): ObservableSource {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with name, crawl and intervalMs");
  }
  const { name, crawl } = options;
  if (typeof crawl !== "function") throw new InvalidArgumentError("crawl", "must be a function");
  const intervalMs = checkNumber("intervalMs", options.intervalMs, 1);
  const hash = options.hash ?? sha256OfData;
  if (typeof hash !== "function") throw new InvalidArgumentError("hash", "must be a function");
  // Per tranche, per stream: the last content hash seen and the stream's next index.
  const known = new Map<string, Map<StreamName, { hash: string; next: number }>>();

  const readPage: ReadPage = async (tranche, position, signal) => {
    const last = position ?? 0n;
    const now = Date.now();
    if (position !== undefined && now < Number(last) + intervalMs) {
      return { items: [], next: last, isTail: true }; // not due yet (after a restart)
    }
    const started = BigInt(now) > last ? BigInt(now) : last + 1n;
    const found = await crawl(tranche, signal);
    if (!Array.isArray(found)) {
      throw new InvalidArgumentError(`crawl(${tranche}) of ${name}`, "must resolve to an array");
    }
    const hashes = await Promise.all(found.map((item) => hash(item)));
    const before = known.get(tranche) ?? new Map();
    const after = new Map<StreamName, { hash: string; next: number }>();
    const items: BatchItem[] = [];
    const time = new Date(now);
    found.forEach((item, k) => {
      const stream = checkItem(name, tranche, item);
      if (after.has(stream)) {
        throw new InvalidArgumentError(
          `crawl(${tranche}) of ${name}`,
          `listed ${stream} twice in one crawl`,
        );
      }
      const contentHash = hashes[k];
      const seen = before.get(stream);
      if (seen?.hash === contentHash) return void after.set(stream, seen);
      const index = seen?.next ?? 0;
      after.set(stream, { hash: contentHash, next: index + 1 });
      const type = item.type ?? "Crawled";
      const data = item.data ?? null;
      items.push({
        stream,
        event: {
          index,
          type,
          data,
          meta: { contentHash },
          id: `${stream}@${contentHash}`,
          time,
          size: type.length + (JSON.stringify(data)?.length ?? 0),
        },
      });
    });
    known.set(tranche, after);
    // Cut into batches, only the last moves the checkpoint: a restart crawls again anyway.
    const positions: Position[] = new Array(items.length).fill(last);
    return { items, positions, next: started, isTail: true };
  };

  return pagedSource({
    name,
    tranches: options.tranches ?? ["0"],
    readPage,
    checkpoints: options.checkpoints,
    group: options.group,
    tailSleepMs: intervalMs,
    retry: options.retry,
    // A crawl that fails is retried; a crawl that lists bad items is a bug, and fails the source.
    isRetriable: (error) => !(error instanceof InvalidArgumentError),
    maxBatchItems: checkInteger("maxBatchItems", options.maxBatchItems ?? 1000, 1),
    signal: options.signal,
  });
}

function checkItem(source: string, tranche: string, item: PeriodicItem): StreamName {
  const field = `crawl(${tranche}) of ${source}`;
  if (item === null || typeof item !== "object") {
    throw new InvalidArgumentError(
      field,
      `must list { stream, data } items, got ${describe(item)}`,
    );
  }
  try {
    parseStreamName(item.stream);
  } catch (error) {
    throw new InvalidArgumentError(field, `listed an item with a bad stream name: ${error}`);
  }
  if (item.type !== undefined && (typeof item.type !== "string" || item.type.length === 0)) {
    throw new InvalidArgumentError(field, `listed ${item.stream} with type ${describe(item.type)}`);
  }
  return item.stream;
}

async function sha256OfData(item: PeriodicItem): Promise<string> {
  const bytes = new TextEncoder().encode(JSON.stringify(item.data ?? null));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  let text = "";
  for (const b of digest) text += String.fromCharCode(b);
  return btoa(text);
}
