/**
 * Store-writer sinks (Propulsion's store sinks and sync tools): a handler for the streams sink
 * that writes each span it is given to a target {@linkcode EventStore} (memory, MessageDB,
 * DynamoDB, any store of the contract) at the expected version, so that a stream replicated
 * from one store to another keeps its indexes, and classifies what it found there:
 *
 * | outcome | the target's version `v`, span `[index, next)` | what the writer does |
 * | --- | --- | --- |
 * | `written` | `v = index` | appends the span |
 * | `duplicate` | `v >= next` | nothing: the target already has it |
 * | `partial` | `index < v < next` | appends only the missing suffix `[v, next)` |
 * | `behind` | `v < index` | nothing: a prefix is missing; the call throws {@linkcode PrefixMissingError} |
 * | `filtered` | — | nothing: the `stream` mapping left the stream out |
 *
 * Idempotent under replays and crashes: the target's version decides, never the writer's memory.
 * An append meeting another version (a span written before a crash whose checkpoint was not
 * committed, a replay after a checkpoint reset, another writer) rejects with the store's
 * `WrongExpectedVersionError`; the writer takes the version it reports (or reads it) and
 * classifies again. Versions it has seen are cached (`maxCachedVersions`), so a replayed span
 * the cache already covers costs no round trip.
 *
 * **A missing prefix is a failure of the stream, not a silent wait.** The scheduler has no
 * "waiting" state; a handler either reports progress or throws. The writer throws
 * {@linkcode PrefixMissingError} (code `"PrefixMissing"`, with the target's version and the
 * span's index), so the stream shows as failing with that reason, the sink retries it with its
 * backoff (`retry`), and the failure policy acts on it like on any failure: keep retrying until
 * the prefix arrives (written by another writer, or a source replayed from further back), park
 * the stream after N attempts, or fault the pipeline. Nothing of the stream is written out of
 * order meanwhile, and its checkpoint does not pass it.
 *
 * Mapping: `stream` renames streams (or categories, see {@linkcode renameCategory}) and leaves
 * streams out (`undefined`); `event` turns each source event into the event written. Events map
 * one to one, so that the target's version is the source's index: dropping single events is
 * not offered (the writer could then no longer tell what it had written from the target's
 * version). The mapping must not send two source streams to one target stream.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { renameCategory, storeWriter } from "@impel/impel/sinks/store-writer";
 *
 * const source = createMemoryStore(), target = createMemoryStore();
 * await source.append("Order-1", [{ type: "Placed", data: { total: 5 } }], 0);
 * const writer = storeWriter({ target, stream: renameCategory({ Order: "OrderCopy" }) });
 * const sink = streamsSink({ handler: writer.handler, statsIntervalMs: 0 });
 * const stop = new AbortController();
 * const running = run(memorySource({ store: source }), sink, { signal: stop.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * stop.abort();
 * await running;
 * console.log((await target.readStream("OrderCopy-1")).map((e) => e.type)); // ["Placed"]
 * console.log(writer.stats().spans.written); // 1
 * ```
 *
 * @module
 */
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import type { StreamEvent } from "../core/event.ts";
import type { HandlerContext } from "../core/scheduler.ts";
import { type EventData, type EventStore, WrongExpectedVersionError } from "../core/store.ts";
import { categoryOf, checkCategory, checkStreamName, type StreamName } from "../core/streamName.ts";

/**
 * Options of {@linkcode storeWriter}.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import type { StoreWriterOptions } from "@impel/impel/sinks/store-writer";
 * const options: StoreWriterOptions = {
 *   target: createMemoryStore(),
 *   // Only orders, under another category; other streams are left out.
 *   stream: (name) => name.startsWith("Order-") ? `OrderCopy-${name.slice(6)}` : undefined,
 *   // Keep the source's event ids and bodies; tag the metadata.
 *   event: (e) => ({ type: e.type, data: e.data, id: e.id, meta: { copiedFrom: "orders-db" } }),
 *   maxEventsPerAppend: 500,
 * };
 * ```
 *
 * @category Store writer
 */
export interface StoreWriterOptions {
  /** The store written to. */
  readonly target: EventStore;
  /**
   * The target stream of a source stream, or `undefined` to leave the stream out (default: the
   * same name). Must be one to one: two source streams must not share a target stream.
   */
  readonly stream?: (stream: StreamName) => StreamName | undefined;
  /**
   * The event written for a source event (default {@linkcode copyEvent}: type, data, meta, id,
   * correlation and causation ids). Called once per event per write attempt.
   */
  readonly event?: (event: StreamEvent, stream: StreamName) => EventData;
  /** Most events in one append (default 1000); a longer span is written in several appends. */
  readonly maxEventsPerAppend?: number;
  /**
   * About the most bytes (by the source's `event.size`) in one append (default 1 MiB, within a
   * DynamoDB transaction's 4 MB); one event always goes.
   */
  readonly maxBytesPerAppend?: number;
  /**
   * Check what a duplicate skips (default false): the target's events in the skipped range are
   * read and compared with the mapped events' types and ids (where the mapping gives an id); a
   * difference throws {@linkcode TargetDivergedError}. Costs a read per duplicate span.
   */
  readonly verify?: boolean;
  /** Most target streams whose version is remembered (default 10 000; 0 remembers none). */
  readonly maxCachedVersions?: number;
  /**
   * Appends of one call that may meet another version and be classified again (default 5, at
   * least 1: a conflict is how a replayed span is first recognised); the next conflict is
   * thrown for the sink to retry with backoff. Bounds a call racing a busy second writer.
   */
  readonly maxConflicts?: number;
  /** Called with each call's outcome (for logs and tests); an exception here fails the call. */
  readonly onOutcome?: (outcome: StoreWriteOutcome) => void;
}

/**
 * What writing one span came to (see the module's table).
 *
 * @example
 * ```ts
 * import type { StoreWriteOutcome } from "@impel/impel/sinks/store-writer";
 * const line = (o: StoreWriteOutcome) =>
 *   o.kind === "behind"
 *     ? `${o.target} waits: at ${o.version}, span from ${o.index}`
 *     : `${o.stream} [${o.index}, ${o.next}): ${o.kind}, ${o.written} written`;
 * ```
 *
 * @category Store writer
 */
export interface StoreWriteOutcome {
  /** The classification. */
  readonly kind: "written" | "duplicate" | "partial" | "behind" | "filtered";
  /** The source stream. */
  readonly stream: StreamName;
  /** The target stream (`undefined` when filtered). */
  readonly target: StreamName | undefined;
  /** The span's first index. */
  readonly index: number;
  /** The index after the span. */
  readonly next: number;
  /** Events this call appended. */
  readonly written: number;
  /** Events the target already had (skipped). */
  readonly skipped: number;
  /** The target's version as last known (after the writes); `undefined` when filtered. */
  readonly version: number | undefined;
  /** Appends that met another version and were classified again. */
  readonly conflicts: number;
}

/**
 * Running totals of a store writer by outcome: spans (handler calls) and their events.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import { storeWriter, type StoreWriterStats } from "@impel/impel/sinks/store-writer";
 * const writer = storeWriter({ target: createMemoryStore() });
 * const s: StoreWriterStats = writer.stats();
 * console.log(s.spans.written, s.events.duplicate, s.conflicts); // 0 0 0
 * ```
 *
 * @category Store writer
 */
export interface StoreWriterStats {
  /** Calls by outcome. */
  readonly spans: Readonly<Record<StoreWriteOutcome["kind"], number>>;
  /**
   * Events by outcome: `written` appended, `duplicate` already there (of duplicate and partial
   * spans), `behind` in spans that found a prefix missing, `filtered` left out.
   */
  readonly events: Readonly<Record<"written" | "duplicate" | "behind" | "filtered", number>>;
  /** Appends that met another version than expected. */
  readonly conflicts: number;
  /** Appends made (successful ones). */
  readonly appends: number;
}

/**
 * A store writer: `handler` goes to `streamsSink` (or `pipeline`); `write` is the same step
 * returning the outcome instead of the next index; `stats` counts outcomes.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import { storeWriter } from "@impel/impel/sinks/store-writer";
 * const source = createMemoryStore(), target = createMemoryStore();
 * await source.append("Order-1", [{ type: "Placed", data: {} }, { type: "Paid", data: {} }], 0);
 * const writer = storeWriter({ target });
 * const events = await source.readStream("Order-1");
 * console.log((await writer.write("Order-1", events)).kind); // "written"
 * console.log((await writer.write("Order-1", events)).kind); // "duplicate"
 * console.log(await writer.handler("Order-1", events.slice(1))); // 2: the next index
 * ```
 *
 * @category Store writer
 */
export interface StoreWriter {
  /**
   * The streams-sink handler: writes the span and resolves to the index after it; throws
   * {@linkcode PrefixMissingError} when the target lacks a prefix of it.
   */
  handler(
    stream: StreamName,
    events: readonly StreamEvent[],
    context?: HandlerContext,
  ): Promise<number>;
  /** Writes the span and reports the outcome (`behind` is returned here, not thrown). */
  write(stream: StreamName, events: readonly StreamEvent[]): Promise<StoreWriteOutcome>;
  /** Totals by outcome since the writer was made. */
  stats(): StoreWriterStats;
}

/**
 * The target stream lacks events below the span: it is at `version`, the span starts at
 * `index` (events `version` to `index - 1` are missing there). The stream waits, failing with
 * this error, until they arrive; the sink's retry and failure policy decide for how long.
 *
 * @example
 * ```ts
 * import { PrefixMissingError } from "@impel/impel/sinks/store-writer";
 * const e = new PrefixMissingError("Order-1", "OrderCopy-1", 3, 5);
 * console.log(e.code, e.version, e.index); // "PrefixMissing" 3 5
 * ```
 *
 * @category Errors
 */
export class PrefixMissingError extends ImpelError {
  /** The source stream. */
  readonly stream: StreamName;
  /** The target stream. */
  readonly target: StreamName;
  /** The target's version (its event count). */
  readonly version: number;
  /** The first index of the span. */
  readonly index: number;
  /** Creates the error. */
  constructor(stream: StreamName, target: StreamName, version: number, index: number) {
    super(
      "PrefixMissing",
      `${stream} -> ${target}: the target is at version ${version} but the span starts at ` +
        `${index}, so events ${version} to ${index - 1} are missing there; the stream waits ` +
        `(retried under the failure policy) until they arrive`,
    );
    this.stream = stream;
    this.target = target;
    this.version = version;
    this.index = index;
  }
}

/**
 * With `verify`, the target's event at `index` is not the one the writer would have written:
 * the streams diverged (another writer, a wrong mapping), and skipping it as a duplicate would
 * hide that.
 *
 * @example
 * ```ts
 * import { TargetDivergedError } from "@impel/impel/sinks/store-writer";
 * const e = new TargetDivergedError("Order-1", "OrderCopy-1", 2, "type Paid", "type Placed");
 * console.log(e.code, e.index); // "TargetDiverged" 2
 * ```
 *
 * @category Errors
 */
export class TargetDivergedError extends ImpelError {
  /** The source stream. */
  readonly stream: StreamName;
  /** The target stream. */
  readonly target: StreamName;
  /** The index where they differ. */
  readonly index: number;
  /** Creates the error; `expected` and `found` describe the two events. */
  constructor(
    stream: StreamName,
    target: StreamName,
    index: number,
    expected: string,
    found: string,
  ) {
    super(
      "TargetDiverged",
      `${stream} -> ${target}: event ${index} of the target has ${found}, expected ${expected}`,
    );
    this.stream = stream;
    this.target = target;
    this.index = index;
  }
}

/**
 * The default event mapping: the source event's type, data, meta, id, correlation and causation
 * ids (the target store assigns index and time).
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import { copyEvent } from "@impel/impel/sinks/store-writer";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: { total: 5 }, correlationId: "r1" }], 0);
 * const [placed] = await store.readStream("Order-1");
 * console.log(copyEvent(placed)); // { type: "Placed", data: { total: 5 }, meta: null, id: "…", correlationId: "r1" }
 * ```
 *
 * @category Store writer
 */
export function copyEvent(event: StreamEvent): EventData {
  const out: {
    type: string;
    data: unknown;
    meta: unknown;
    id: string;
    correlationId?: string;
    causationId?: string;
  } = { type: event.type, data: event.data, meta: event.meta, id: event.id };
  if (event.correlationId !== undefined) out.correlationId = event.correlationId;
  if (event.causationId !== undefined) out.causationId = event.causationId;
  return out;
}

/**
 * A `stream` mapping that renames categories (`{ Order: "OrderCopy" }` writes `Order-1` to
 * `OrderCopy-1`) and, with `others: "drop"`, leaves out streams of any other category (default
 * `"keep"`: written under their own name).
 *
 * @example
 * ```ts
 * import { renameCategory } from "@impel/impel/sinks/store-writer";
 * const rename = renameCategory({ Order: "OrderCopy" }, { others: "drop" });
 * console.log(rename("Order-1"), rename("Invoice-7")); // "OrderCopy-1" undefined
 * ```
 *
 * @category Store writer
 */
export function renameCategory(
  categories: Readonly<Record<string, string>>,
  options: { readonly others?: "keep" | "drop" } = {},
): (stream: StreamName) => StreamName | undefined {
  if (categories === null || typeof categories !== "object") {
    throw new InvalidArgumentError("categories", `must be an object, got ${describe(categories)}`);
  }
  const map = new Map<string, string>();
  for (const [from, to] of Object.entries(categories)) {
    checkCategory(from);
    checkCategory(to);
    map.set(from, to);
  }
  const others = options.others ?? "keep";
  if (others !== "keep" && others !== "drop") {
    throw new InvalidArgumentError("others", `must be "keep" or "drop", got ${describe(others)}`);
  }
  return (stream) => {
    const category = categoryOf(stream);
    const to = map.get(category);
    if (to === undefined) return others === "keep" ? stream : undefined;
    return to + stream.slice(category.length);
  };
}

/**
 * Creates a store writer over `options.target`. Give its `handler` to `streamsSink` or
 * `pipeline`; the scheduler runs at most one call per stream at a time, which the writer relies
 * on (per stream, its appends are sequential).
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import { PrefixMissingError, storeWriter } from "@impel/impel/sinks/store-writer";
 * const source = createMemoryStore(), target = createMemoryStore();
 * const five = ["A", "B", "C", "D", "E"].map((type) => ({ type, data: {} }));
 * await source.append("Order-1", five, 0);
 * const events = await source.readStream("Order-1");
 * await target.append("Order-1", five.slice(0, 3), 0); // the target has 0..2
 * const writer = storeWriter({ target });
 * const partial = await writer.write("Order-1", events.slice(1)); // 1..4
 * console.log(partial.kind, partial.skipped, partial.written); // "partial" 2 2
 * await writer.handler("Other-1", events.slice(2)).catch((e) => {
 *   console.log(e instanceof PrefixMissingError, e.version, e.index); // true 0 2
 * });
 * ```
 *
 * @category Store writer
 */
export function storeWriter(options: StoreWriterOptions): StoreWriter {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", `must be an object, got ${describe(options)}`);
  }
  const target = options.target;
  if (
    target === null || typeof target !== "object" || typeof target.append !== "function" ||
    typeof target.readStream !== "function"
  ) {
    throw new InvalidArgumentError(
      "target",
      `must be an EventStore (readStream and append), got ${describe(target)}`,
    );
  }
  for (const field of ["stream", "event", "onOutcome"] as const) {
    if (options[field] !== undefined && typeof options[field] !== "function") {
      throw new InvalidArgumentError(field, `must be a function, got ${describe(options[field])}`);
    }
  }
  const mapStream = options.stream;
  const mapEvent = options.event ?? copyEvent;
  const onOutcome = options.onOutcome;
  const maxEvents = checkInteger("maxEventsPerAppend", options.maxEventsPerAppend ?? 1000, 1);
  const maxBytes = checkInteger("maxBytesPerAppend", options.maxBytesPerAppend ?? 1 << 20, 1);
  const maxCached = checkInteger("maxCachedVersions", options.maxCachedVersions ?? 10_000, 0);
  const maxConflicts = checkInteger("maxConflicts", options.maxConflicts ?? 5, 1);
  if (options.verify !== undefined && typeof options.verify !== "boolean") {
    throw new InvalidArgumentError("verify", `must be a boolean, got ${describe(options.verify)}`);
  }
  const verify = options.verify ?? false;

  // Target versions seen, oldest first (a Map keeps insertion order): a lower bound of each
  // stream's version, since stores never remove events.
  const versions = new Map<StreamName, number>();
  const remember = (stream: StreamName, version: number) => {
    if (maxCached === 0) return;
    versions.delete(stream);
    versions.set(stream, version);
    if (versions.size > maxCached) versions.delete(versions.keys().next().value!);
  };

  const spans = { written: 0, duplicate: 0, partial: 0, behind: 0, filtered: 0 };
  const events = { written: 0, duplicate: 0, behind: 0, filtered: 0 };
  let conflicts = 0, appends = 0;

  // The version of a stream whose conflict did not say (an empty append reports it in every
  // store of the contract).
  const versionOf = async (stream: StreamName): Promise<number> =>
    (await target.append(stream, [], "any")).nextIndex;

  // Compares the target's events [from, end) with `wanted`, what the writer would write there.
  async function check(
    stream: StreamName,
    to: StreamName,
    wanted: readonly EventData[],
    from: number,
    end: number,
  ) {
    const found = await target.readStream(to, { fromIndex: from, maxCount: end - from });
    for (let i = from; i < end; i++) {
      const want = wanted[i - from];
      const got = found[i - from];
      if (got === undefined || got.index !== i) {
        throw new TargetDivergedError(stream, to, i, `type ${want.type}`, "no event");
      }
      if (got.type !== want.type) {
        throw new TargetDivergedError(stream, to, i, `type ${want.type}`, `type ${got.type}`);
      }
      if (want.id !== undefined && got.id !== want.id) {
        throw new TargetDivergedError(stream, to, i, `id ${want.id}`, `id ${got.id}`);
      }
    }
  }

  async function write(
    stream: StreamName,
    given: readonly StreamEvent[],
  ): Promise<StoreWriteOutcome> {
    checkSpan(stream, given);
    const index = given[0].index;
    const next = index + given.length;
    const to = mapStream === undefined ? stream : mapStream(stream);
    if (to === undefined) {
      spans.filtered++;
      events.filtered += given.length;
      return report({
        kind: "filtered",
        stream,
        target: undefined,
        index,
        next,
        written: 0,
        skipped: 0,
        version: undefined,
        conflicts: 0,
      });
    }
    checkStreamName(to);
    // Mapped on demand: a duplicate maps nothing (unless verified).
    const mapped: EventData[] = new Array(given.length);
    const take = (from: number, end: number): EventData[] => {
      for (let k = from; k < end; k++) mapped[k] ??= mapEvent(given[k], stream);
      return from === 0 && end === given.length ? mapped : mapped.slice(from, end);
    };
    let known = versions.get(to);
    let written = 0, met = 0;
    // Highest index known to be in the target from before this call: what was skipped.
    let had = index;
    for (;;) {
      // The optimistic case (a cache miss, or a cached version below the span) appends at the
      // span's start: in steady replication the target is exactly there.
      let at = known === undefined || known < index ? index : known;
      if (at > had) {
        if (verify) {
          const end = Math.min(at, next);
          await check(stream, to, take(had - index, end - index), had, end);
        }
        had = Math.min(at, next);
      }
      if (at >= next) break;
      try {
        while (at < next) {
          const end = chunkEnd(given, at - index, maxEvents, maxBytes) + index;
          const result = await target.append(to, take(at - index, end - index), at);
          appends++;
          written += end - at;
          at = had = end;
          // A store reporting more than it was given has other writers: trust the larger.
          known = Math.max(at, result.nextIndex);
          remember(to, known);
        }
        break;
      } catch (error) {
        if (!(error instanceof WrongExpectedVersionError)) throw error;
        conflicts++;
        if (++met > maxConflicts) throw error;
        known = error.actual ?? await versionOf(to);
        remember(to, known);
        if (known < at && written > 0) {
          // Below what this call just wrote: the store moved backwards, which no store of the
          // contract does; never classify on it.
          throw error;
        }
        if (known < index) {
          spans.behind++;
          events.behind += given.length;
          return report({
            kind: "behind",
            stream,
            target: to,
            index,
            next,
            written: 0,
            skipped: 0,
            version: known,
            conflicts: met,
          });
        }
      }
    }
    const skipped = given.length - written;
    const kind = skipped === 0 ? "written" : written === 0 ? "duplicate" : "partial";
    spans[kind]++;
    events.written += written;
    events.duplicate += skipped;
    return report({
      kind,
      stream,
      target: to,
      index,
      next,
      written,
      skipped,
      version: known,
      conflicts: met,
    });
  }

  function report(outcome: StoreWriteOutcome): StoreWriteOutcome {
    onOutcome?.(outcome);
    return outcome;
  }

  return {
    write,
    async handler(stream, given) {
      const outcome = await write(stream, given);
      if (outcome.kind === "behind") {
        throw new PrefixMissingError(stream, outcome.target!, outcome.version!, outcome.index);
      }
      return outcome.next;
    },
    stats: () => ({
      spans: { ...spans },
      events: { ...events },
      conflicts,
      appends,
    }),
  };
}

/** Refuses what is not a span: empty, or indexes that are not consecutive integers. */
function checkSpan(stream: StreamName, events: readonly StreamEvent[]): void {
  checkStreamName(stream);
  if (!Array.isArray(events) || events.length === 0) {
    throw new InvalidArgumentError(
      "events",
      `must be a non-empty array of consecutive events of ${stream}, got ${describe(events)}`,
    );
  }
  const first = events[0]?.index;
  if (typeof first !== "number" || !Number.isInteger(first) || first < 0) {
    throw new InvalidArgumentError(
      "events[0].index",
      `must be a non-negative integer, got ${describe(first)}`,
    );
  }
  for (let k = 1; k < events.length; k++) {
    if (events[k]?.index !== first + k) {
      throw new InvalidArgumentError(
        `events[${k}].index`,
        `must be ${first + k} (a span's events are consecutive), got ${describe(events[k]?.index)}`,
      );
    }
  }
}

/** The end (exclusive, relative to the span) of the append starting at `from`. */
function chunkEnd(
  events: readonly StreamEvent[],
  from: number,
  maxEvents: number,
  maxBytes: number,
): number {
  const last = Math.min(events.length, from + maxEvents);
  let bytes = events[from].size ?? 0;
  let end = from + 1;
  while (end < last) {
    bytes += events[end].size ?? 0;
    if (bytes > maxBytes) break;
    end++;
  }
  return end;
}
