/**
 * A source over the change feed of a Cosmos DB events container written by
 * `stores/cosmos.ts`: each feed range is a tranche, read with `@azure/cosmos`'s pull model
 * (`getChangeFeedIterator` from a range's beginning, its current end, or a continuation), each
 * batch document a span of its stream. Batch documents are written once and never changed, so
 * the feed holds each exactly once, in append order per stream; tips and other documents are
 * skipped.
 *
 * **Checkpoints are continuations.** A range's change-feed continuation names where to resume in
 * every physical partition the range covers (an LSN each, more after a split), which no single
 * number can hold. The source therefore commits a {@linkcode Checkpoint} of both: `position`,
 * the number of documents read from the range since the group first read it (from its beginning,
 * or from its end with a tail start; it orders checkpoints and shows progress), and `token`, the
 * continuation. The checkpoint store must keep tokens
 * (`cosmosCheckpoints`, `memoryCheckpoints`); a stored position without a token (set by hand)
 * cannot be resumed from and fails the tranche with {@linkcode CosmosTokenMissingError}, except
 * position 0, which reads from the beginning.
 *
 * **Ranges are fixed once checkpointed.** The tranches are the ranges that have checkpoints
 * (their continuations follow a split by themselves) plus the container's current feed ranges
 * that none of them covers, so that a split never makes a range be read twice.
 *
 * **Consumer groups** (`leases`): the members of `{name}/{group}` share the ranges through a
 * lease store (`cosmosLeases` in the checkpoints' container), each range read by one member at
 * a time, its commits fenced by the lease (core/leased.ts).
 *
 * The source has no `heads()`: a range's end is not a number comparable with its position.
 *
 * @module
 */
import {
  type ChangeFeedPullModelIterator,
  ChangeFeedStartFrom,
  type Container,
  type FeedRange,
} from "@azure/cosmos";
import type { Batch, BatchItem, ObservableSource, Position } from "../core/batch.ts";
import type { Checkpoint, CheckpointKey, CheckpointStore } from "../core/checkpoints.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import type { RetryOptions } from "../core/failure.ts";
import { backoff } from "../core/failure.ts";
import { checkLeaseFence, checkLeaseTiming, type LeaseSnapshot } from "../core/lease.ts";
import { type LeasedSource, leasedSource, type LeasedSourceLeases } from "../core/leased.ts";
import { pagedSource, type ReadPage, retrying } from "../core/reader.ts";
import {
  checkCosmosStreamName,
  type CosmosContainer,
  decodeBatch,
  isStoreBatch,
  isTransientCosmosError,
} from "../stores/cosmos.ts";

export type { Checkpoint, CheckpointStore } from "../core/checkpoints.ts";
export type { LeaseSnapshot, LeaseStore } from "../core/lease.ts";
export type { CosmosContainer } from "../stores/cosmos.ts";

/** The streams sink's default stopTimeoutMs, which lease timing must leave room for. */
const SINK_STOP_TIMEOUT_MS = 10_000;

/**
 * A consumer group with leases on feed ranges (see `core/lease.ts` for the timing rule).
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosLeases } from "@impel/impel/leases/cosmos";
 * import type { CosmosSourceLeases } from "@impel/impel/sources/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const leases: CosmosSourceLeases = {
 *   store: cosmosLeases(client.database("app").container("aux")),
 *   durationMs: 30_000,
 * };
 * ```
 */
export type CosmosSourceLeases = LeasedSourceLeases;

/**
 * Options of {@linkcode cosmosSource}.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosCheckpoints } from "@impel/impel/checkpoints/cosmos";
 * import type { CosmosSourceOptions } from "@impel/impel/sources/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const db = client.database("app");
 * const options: CosmosSourceOptions = {
 *   container: db.container("events"),
 *   group: "reactor",
 *   checkpoints: cosmosCheckpoints(db.container("aux")),
 *   pageSize: 500,
 * };
 * ```
 */
export interface CosmosSourceOptions {
  /** The events container (`stores/cosmos.ts`'s layout). */
  readonly container: CosmosContainer;
  /** The consumer group (its checkpoints' `group`). */
  readonly group: string;
  /**
   * Where continuations are kept: a store with `tokens` (`cosmosCheckpoints`); with `leases`,
   * fenced against the lease store's leases. None: every start reads from the beginning.
   */
  readonly checkpoints?: CheckpointStore;
  /** The checkpoint keys' `source` and the lease scope's prefix (default `cosmos:{container id}`). */
  readonly name?: string;
  /** Where to start: the checkpoint (default), the beginning, or the current end. */
  readonly startFrom?: "checkpoint" | "start" | "tail";
  /** Where `"checkpoint"` starts a range without a checkpoint (default `"start"`). */
  readonly whenNoCheckpoint?: "start" | "tail";
  /** Documents per change-feed read (`maxItemCount`, default 1 000). */
  readonly pageSize?: number;
  /** Pause after a read that found nothing new (default 1 000 ms). */
  readonly tailSleepMs?: number;
  /** Backoff between retries of a failed read (default 100 ms doubling to 5 s). */
  readonly retry?: RetryOptions;
  /** Share the ranges with the group's other members through leases. */
  readonly leases?: CosmosSourceLeases;
  /** Aborting stops reading and closes the stream. */
  readonly signal?: AbortSignal;
}

/**
 * What {@linkcode cosmosSource} returns: the batches, `problems()` for health, and, for a
 * consumer group with leases, who holds what.
 *
 * @example
 * ```ts
 * import type { CosmosSource } from "@impel/impel/sources/cosmos";
 * const held = (source: CosmosSource) => source.leases()?.held.map((h) => h.unit) ?? [];
 * ```
 */
export type CosmosSource = ObservableSource & {
  /** With leases: this member's leases, their ages, the live members, hand-overs and losses. */
  leases(): LeaseSnapshot | undefined;
  /** Resolves once the source has stopped and, with leases, released every range. */
  readonly released: Promise<void>;
};

/**
 * A stored checkpoint of a range has a position but no continuation token (set by hand, or by
 * a store that keeps no tokens): the range cannot be resumed from it.
 *
 * @example
 * ```ts
 * import { CosmosTokenMissingError } from "@impel/impel/sources/cosmos";
 * const key = { source: "cosmos:events", tranche: "-FF", group: "g" };
 * console.log(new CosmosTokenMissingError(key, 40n).code); // "CosmosTokenMissing"
 * ```
 */
export class CosmosTokenMissingError extends ImpelError {
  /** The checkpoint concerned. */
  readonly key: CheckpointKey;
  /** Its position. */
  readonly position: Position;
  /** Creates the error. */
  constructor(key: CheckpointKey, position: Position) {
    super(
      "CosmosTokenMissing",
      `the checkpoint of ${key.source}/${key.tranche}/${key.group} is at ${position} without a ` +
        `change-feed continuation: reset it (impel checkpoints set ... to nothing reads the range ` +
        `from its beginning) or commit it with its token`,
    );
    this.key = key;
    this.position = position;
  }
}

/**
 * Reading a feed range failed in a way that is not retried.
 *
 * @example
 * ```ts
 * import { CosmosReadError } from "@impel/impel/sources/cosmos";
 * const e = new CosmosReadError("-FF", new Error("403 Forbidden"));
 * console.log(e.code, e.tranche); // "CosmosRead" "-FF"
 * ```
 */
export class CosmosReadError extends ImpelError {
  /** The range (tranche) read. */
  readonly tranche: string;
  /** Creates the error for `tranche` caused by `cause`. */
  constructor(tranche: string, cause: unknown) {
    super(
      "CosmosRead",
      `reading the change feed of range ${tranche} failed: ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause },
    );
    this.tranche = tranche;
  }
}

/**
 * The tranche name of a feed range: `{minInclusive}-{maxExclusive}` (effective partition key
 * bounds in hex; the first range's minimum is empty).
 *
 * @example
 * ```ts
 * import { rangeTranche } from "@impel/impel/sources/cosmos";
 * console.log(rangeTranche({ minInclusive: "", maxExclusive: "FF" })); // "-FF"
 * ```
 */
export function rangeTranche(range: { minInclusive: string; maxExclusive: string }): string {
  return `${range.minInclusive}-${range.maxExclusive}`;
}

/** The bounds a tranche name stands for. */
function bounds(tranche: string): { readonly min: string; readonly max: string } {
  const dash = tranche.indexOf("-");
  return { min: tranche.slice(0, dash), max: tranche.slice(dash + 1) };
}

/** Whether range `inner` lies within `outer` (EPK bounds compare as text; "" is the lowest). */
function within(inner: string, outer: string): boolean {
  const a = bounds(inner), b = bounds(outer);
  return a.min >= b.min && a.max <= b.max;
}

function overlaps(x: string, y: string): boolean {
  const a = bounds(x), b = bounds(y);
  return a.min < b.max && b.min < a.max;
}

interface Settings {
  readonly name: string;
  readonly pageSize: number;
  readonly tailSleepMs: number;
  readonly startFrom: "checkpoint" | "start" | "tail";
  readonly whenNoCheckpoint: "start" | "tail";
  readonly retry: RetryOptions;
}

/**
 * Creates a source over the change feed of `options.container`; see the module documentation.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosCheckpoints } from "@impel/impel/checkpoints/cosmos";
 * import { cosmosSource } from "@impel/impel/sources/cosmos";
 * import { run, streamsSink } from "@impel/impel";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const db = client.database("app");
 * const controller = new AbortController();
 * const source = cosmosSource({
 *   container: db.container("events"),
 *   group: "printer",
 *   checkpoints: cosmosCheckpoints(db.container("aux")),
 *   signal: controller.signal,
 * });
 * const sink = streamsSink({
 *   group: "printer",
 *   handler: (stream, events) => console.log(stream, events.map((e) => e.type)),
 * });
 * const running = run(source, sink, { signal: controller.signal });
 * ```
 */
export function cosmosSource(options: CosmosSourceOptions): CosmosSource {
  const settings = checkOptions(options);
  const container = options.container as unknown as Container;
  const checkpoints = options.checkpoints;
  const signal = options.signal ?? new AbortController().signal;

  // The tranches: ranges with checkpoints, and the current ranges none of them covers.
  let listing: Promise<{ tranches: string[]; ranges: Map<string, FeedRange> }> | undefined;
  const list = () => {
    listing ??= retrying(async () => {
      const current = await container.getFeedRanges();
      const ranges = new Map(current.map((r) => [rangeTranche(r), r]));
      const known = checkpoints === undefined
        ? []
        : (await checkpoints.list(settings.name, options.group)).map((c) => c.tranche);
      const tranches = [...new Set(known)];
      for (const t of ranges.keys()) {
        if (tranches.some((k) => within(t, k))) continue;
        const clash = tranches.find((k) => overlaps(t, k));
        if (clash !== undefined) {
          throw new InvalidArgumentError(
            "container",
            `has feed range ${t}, which overlaps the checkpointed range ${clash} without lying ` +
              `within it (merged partitions?): reset the group's checkpoints to read it anew`,
          );
        }
        tranches.push(t);
      }
      return { tranches: tranches.sort(), ranges };
    }, {
      backoff: backoff(settings.retry),
      signal,
      isRetriable: isTransientCosmosError,
    });
    listing.catch(() => (listing = undefined));
    return listing;
  };

  /** A reader of `tranches` committing to `store` (the fenced view with leases). */
  const reading = (
    tranches: readonly string[] | undefined,
    store: CheckpointStore | undefined,
    readSignal: AbortSignal,
  ): ObservableSource => {
    // Per tranche: the continuation of each position handed out or loaded, until committed.
    const tokens = new Map<string, Map<Position, string>>();
    const tokensOf = (tranche: string) => {
      let m = tokens.get(tranche);
      if (m === undefined) tokens.set(tranche, m = new Map());
      return m;
    };
    const view: CheckpointStore | undefined = store === undefined ? undefined : {
      ...store,
      async load(key) {
        const stored = await store.loadCheckpoint!(key);
        if (stored === undefined) return undefined;
        if (stored.token === undefined) {
          if (stored.position === 0n) return undefined; // the beginning
          throw new CosmosTokenMissingError(key, stored.position);
        }
        tokensOf(key.tranche).set(stored.position, stored.token);
        return stored.position;
      },
      commit(key, position) {
        const m = tokensOf(key.tranche);
        const token = m.get(position);
        for (const p of m.keys()) if (p < position) m.delete(p);
        if (token === undefined) return Promise.resolve(); // nothing read yet: nothing to keep
        const checkpoint: Checkpoint = { position, token };
        return store.commitCheckpoint!(key, checkpoint);
      },
    };
    // Per tranche: the iterator, and the position it stands at.
    const iterators = new Map<
      string,
      { iterator: ChangeFeedPullModelIterator<Record<string, unknown>>; at: Position | undefined }
    >();
    const readPage: ReadPage = async (tranche, position) => {
      let state = iterators.get(tranche);
      if (state === undefined || state.at !== position) {
        let from: ChangeFeedStartFrom;
        if (position === undefined) {
          const { ranges } = await list();
          const range = ranges.get(tranche);
          if (range === undefined) {
            throw new InvalidArgumentError(
              `tranche ${tranche}`,
              "has no checkpoint and is not a feed range of the container now",
            );
          }
          const tail = settings.startFrom === "tail" ||
            (settings.startFrom === "checkpoint" && settings.whenNoCheckpoint === "tail");
          from = tail ? ChangeFeedStartFrom.Now(range) : ChangeFeedStartFrom.Beginning(range);
        } else {
          const token = tokensOf(tranche).get(position);
          if (token === undefined) {
            throw new CosmosTokenMissingError(
              { source: settings.name, tranche, group: options.group },
              position,
            );
          }
          from = ChangeFeedStartFrom.Continuation(token);
        }
        state = {
          iterator: container.items.getChangeFeedIterator<Record<string, unknown>>({
            changeFeedStartFrom: from,
            maxItemCount: settings.pageSize,
          }),
          at: position,
        };
        iterators.set(tranche, state);
      }
      let response;
      try {
        response = await state.iterator.readNext();
      } catch (error) {
        iterators.delete(tranche); // a retry starts afresh from the position's continuation
        throw error;
      }
      const docs = response.result ?? [];
      const next = (position ?? 0n) + BigInt(docs.length);
      if (docs.length > 0) tokensOf(tranche).set(next, response.continuationToken);
      state.at = next;
      const items: BatchItem[] = [];
      for (const doc of docs) spanOf(doc, items);
      return { items, next, isTail: response.statusCode === 304 || docs.length === 0 };
    };
    return pagedSource({
      name: settings.name,
      ...(tranches === undefined
        ? { readTranches: async () => (await list()).tranches }
        : { tranches }),
      readPage,
      checkpoints: view,
      group: options.group,
      startFrom: settings.startFrom === "checkpoint" ? "checkpoint" : "start",
      whenNoCheckpoint: "start",
      tailSleepMs: settings.tailSleepMs,
      retry: settings.retry,
      isRetriable: isTransientCosmosError,
      finalError: (error, tranche) =>
        error instanceof ImpelError ? error : new CosmosReadError(tranche, error),
      // A stream's batch documents come in order within its range and each comes once.
      gapsAreFinal: true,
      signal: readSignal,
    });
  };

  if (options.leases === undefined) {
    const source = reading(undefined, checkpoints, signal);
    return Object.assign(source, {
      leases: () => undefined,
      released: Promise.resolve(),
    });
  }
  // The units are the tranches, known once the ranges and checkpoints are listed.
  return deferred(
    async () => {
      const { tranches } = await list();
      return leasedSource({
        scope: `${settings.name}/${options.group}`,
        units: tranches,
        leases: options.leases!,
        stopTimeoutMs: SINK_STOP_TIMEOUT_MS,
        checkpoints: checkpoints!,
        reading: (tranche, fenced, readSignal) => reading([tranche], fenced, readSignal),
        group: options.group,
        sourceName: settings.name,
        signal,
      });
    },
    settings.name,
    options.group,
  );
}

/**
 * Adds the events of one change-feed document to `items`: a batch document is a span of its
 * stream ({@linkcode isStoreBatch}, the rule the store's reads apply); anything else (the stream's
 * tip, foreign documents) is skipped. Events that do not
 * decode, or a stream name the store would refuse, become invalid items of their stream.
 */
function spanOf(doc: Record<string, unknown>, items: BatchItem[]): void {
  if (!isStoreBatch(doc)) return;
  const stream = doc.p as string;
  let badName: Error | undefined;
  try {
    checkCosmosStreamName(stream);
  } catch (e) {
    badName = e instanceof Error ? e : new Error(String(e));
  }
  const span: BatchItem[] = [];
  const events = decodeBatch(doc, (event, error) => span.push({ stream, event, invalid: error }));
  const unreadable = span.length > 0;
  for (const event of events) {
    span.push(badName === undefined ? { stream, event } : { stream, event, invalid: badName });
  }
  // Events that did not decode were met first: the span keeps its order.
  if (unreadable) span.sort((a, b) => a.event.index - b.event.index);
  for (const item of span) items.push(item);
}

/**
 * A source whose real one is made asynchronously (once the feed ranges are listed): batches pass
 * through with backpressure; problems, leases and `released` are the real source's once made.
 */
function deferred(
  make: () => Promise<LeasedSource>,
  name: string,
  group: string,
): CosmosSource {
  let inner: LeasedSource | undefined;
  let failure: unknown;
  const since = Date.now();
  const ready = make().then((s) => (inner = s), (e) => {
    failure = e;
    throw e;
  });
  ready.catch(() => {});
  // The real source's reader, taken once it exists (its type inferred: Bun's and Deno's differ).
  const reading = ready.then((source) => source.getReader());
  reading.catch(() => {});
  const stream = new ReadableStream<Batch>({
    async pull(controller) {
      const { done, value } = await (await reading).read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel(reason) {
      const reader = await reading.catch(() => undefined);
      await reader?.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return Object.assign(stream, {
    problems: () =>
      inner?.problems?.() ??
        (failure === undefined
          ? [{ severity: "degraded" as const, reason: `${name} is listing its feed ranges`, since }]
          : [{
            severity: "failing" as const,
            reason: `${name} could not start: ${String(failure)}`,
            since,
          }]),
    leases: () => inner?.leases(),
    released: ready.then((s) => s.released, () => undefined),
    group,
    sourceName: name,
  });
}

function checkOptions(options: CosmosSourceOptions): Settings {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with container and group");
  }
  const c = options.container as unknown as Container | undefined;
  if (
    c === null || typeof c !== "object" || typeof c.items?.getChangeFeedIterator !== "function" ||
    typeof c.getFeedRanges !== "function"
  ) {
    throw new InvalidArgumentError("container", "must be a Container of @azure/cosmos");
  }
  if (typeof options.group !== "string" || options.group.length === 0) {
    throw new InvalidArgumentError(
      "group",
      `must be a non-empty string, got ${describe(options.group)}`,
    );
  }
  const name = options.name ?? `cosmos:${c.id}`;
  if (typeof name !== "string" || name.length === 0) {
    throw new InvalidArgumentError("name", `must be a non-empty string, got ${describe(name)}`);
  }
  const checkpoints = options.checkpoints;
  if (checkpoints !== undefined) {
    if (
      checkpoints === null || typeof checkpoints !== "object" || checkpoints.tokens !== true ||
      typeof checkpoints.loadCheckpoint !== "function" ||
      typeof checkpoints.commitCheckpoint !== "function"
    ) {
      throw new InvalidArgumentError(
        "checkpoints",
        "must keep continuation tokens (tokens: true, as cosmosCheckpoints and memoryCheckpoints do)",
      );
    }
  }
  const startFrom = options.startFrom ?? "checkpoint";
  if (!["checkpoint", "start", "tail"].includes(startFrom)) {
    throw new InvalidArgumentError(
      "startFrom",
      `must be "checkpoint", "start" or "tail", got ${describe(startFrom)}`,
    );
  }
  const whenNoCheckpoint = options.whenNoCheckpoint ?? "start";
  if (whenNoCheckpoint !== "start" && whenNoCheckpoint !== "tail") {
    throw new InvalidArgumentError(
      "whenNoCheckpoint",
      `must be "start" or "tail", got ${describe(whenNoCheckpoint)}`,
    );
  }
  const leases = options.leases;
  if (leases !== undefined) {
    if (
      leases === null || typeof leases !== "object" || typeof leases.store?.heartbeat !== "function"
    ) {
      throw new InvalidArgumentError(
        "leases",
        "must be an object with a lease store (cosmosLeases)",
      );
    }
    if (checkpoints === undefined || checkpoints.fenced !== true) {
      throw new InvalidArgumentError(
        "checkpoints",
        "must be a fenced store with leases (cosmosCheckpoints over the lease store's container)",
      );
    }
    checkLeaseFence(leases.store, checkpoints, "leases.");
    // A range taken over must resume where its last owner committed, never restart or skip.
    if (startFrom !== "checkpoint") {
      throw new InvalidArgumentError("startFrom", `must be "checkpoint" with leases`);
    }
    checkLeaseTiming(
      { ...leases, stopTimeoutMs: leases.stopTimeoutMs ?? SINK_STOP_TIMEOUT_MS },
      "leases.",
    );
  }
  return {
    name,
    pageSize: checkInteger("pageSize", options.pageSize ?? 1000, 1, 1_000_000),
    tailSleepMs: checkInteger("tailSleepMs", options.tailSleepMs ?? 1000, 0),
    startFrom: startFrom as Settings["startFrom"],
    whenNoCheckpoint,
    retry: options.retry ?? { initialDelayMs: 100, maxDelayMs: 5000 },
  };
}
