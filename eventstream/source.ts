/**
 * The event stream as an impel source, so that reactors and the scheduler run on it: one tranche
 * (`all`), position = the sequence number of the last event handled (0: none), read through the
 * one paged-tranche reader (`core/reader.ts`), which owns the checkpoint load, the announcement,
 * the tail sleep and the retries. This module only turns stored events into batch items.
 *
 * @module
 */
import type { BatchItem, ObservableSource } from "../core/batch.ts";
import { checkInteger, InvalidArgumentError } from "../core/errors.ts";
import type { StreamEvent } from "../core/event.ts";
import { pagedSource } from "../core/reader.ts";
import type { FeedSourceOptions } from "../sources/feed.ts";
import { checkStreamName, type StreamName } from "../core/streamName.ts";
import type { StoredEvent } from "./frame.ts";
import type { EventStorage } from "./storage.ts";

/**
 * The source's one tranche: its batches' `tranche` and its checkpoints' key.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * import { EVENT_STREAM_TRANCHE } from "@impel/impel/eventstream";
 * const checkpoints = memoryCheckpoints();
 * const key = { source: "eventstream:memory", tranche: EVENT_STREAM_TRANCHE, group: "printer" };
 * await checkpoints.reset(key, 0n); // the next run of "printer" replays the stream
 * ```
 */
export const EVENT_STREAM_TRANCHE = "all";

/**
 * Options of {@linkcode eventStreamSource}; the reader's options (checkpoints, group, start
 * policy, tail sleep, retry, signal) apply as in `sources/feed.ts`.
 *
 * @example
 * ```ts
 * import { eventStreamSource, type EventStreamSourceOptions, memoryStorage } from "@impel/impel/eventstream";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * const options: EventStreamSourceOptions = {
 *   storage: memoryStorage({ events: [{ type: "Hello" }] }),
 *   checkpoints: memoryCheckpoints(),
 *   group: "printer",
 *   stream: "Words-all",
 *   tailSleepMs: 200,
 * };
 * await eventStreamSource(options).cancel();
 * ```
 */
export interface EventStreamSourceOptions<E = unknown>
  extends Omit<FeedSourceOptions, "name" | "tranches" | "readTranches" | "readPage" | "readTail"> {
  /** The stream to read. */
  readonly storage: EventStorage;
  /** The checkpoint key's `source` (default `eventstream:<storage name>`). */
  readonly name?: string;
  /**
   * The impel stream every event is handed to (default `EventStream-all`), as index `seq - 1`:
   * the whole stream in order, one handler call at a time. Ignored with `toItem`.
   */
  readonly stream?: StreamName;
  /**
   * Makes the batch item of an event instead (to spread the stream over several impel streams):
   * each impel stream's indexes must run 0, 1, 2, ... in sequence order, as the scheduler
   * requires of any source.
   */
  readonly toItem?: (stored: StoredEvent<E>) => BatchItem;
  /** Events per read (default 1000). */
  readonly pageSize?: number;
}

/**
 * Creates the source. An event's `type` is its `type` field when that is a string (else
 * `Event`), `data` the event, `id` its sequence number, `time` when it was read (the frame
 * carries no time), `size` its JSON length.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { eventStreamSource, memoryStorage } from "@impel/impel/eventstream";
 * const storage = memoryStorage({ events: [{ type: "Hello" }, { type: "World" }] });
 * const seen: string[] = [];
 * const sink = streamsSink({ handler: (_s, events) => void seen.push(...events.map((e) => e.type)) });
 * const ac = new AbortController();
 * const running = run(eventStreamSource({ storage }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * console.log(seen); // ["Hello", "World"]
 * ```
 */
export function eventStreamSource<E = unknown>(
  options: EventStreamSourceOptions<E>,
): ObservableSource {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with storage");
  }
  const { storage, toItem, stream: given, pageSize: size, name, ...reader } = options;
  if (typeof storage?.read !== "function" || typeof storage.last !== "function") {
    throw new InvalidArgumentError("storage", "must be EventStorage (memoryStorage, fileStorage)");
  }
  if (toItem !== undefined && typeof toItem !== "function") {
    throw new InvalidArgumentError("toItem", "must be a function (stored) => BatchItem");
  }
  const stream = checkStreamName(given ?? "EventStream-all");
  const pageSize = checkInteger("pageSize", size ?? 1000, 1);
  const item = toItem ?? ((stored: StoredEvent<E>): BatchItem => {
    const { seq, event } = stored;
    const type = (event as { type?: unknown })?.type;
    const e: StreamEvent = {
      index: seq - 1,
      type: typeof type === "string" ? type : "Event",
      data: event,
      meta: null,
      id: String(seq),
      time: new Date(),
      size: JSON.stringify(event).length,
    };
    return { stream, event: e };
  });
  return pagedSource({
    ...reader,
    name: name ?? `eventstream:${storage.name}`,
    tranches: [EVENT_STREAM_TRANCHE],
    gapsAreFinal: true,
    readTail: async () => BigInt(await storage.last()),
    readPage: async (_tranche, position) => {
      const after = Number(position ?? 0n);
      const page = await storage.read(after, pageSize);
      const items = page.map((e) => item(e as StoredEvent<E>));
      const next = page.length ? page.at(-1)!.seq : after;
      return {
        items,
        next: BigInt(next),
        positions: page.map((e) => BigInt(e.seq)),
        isTail: page.length < pageSize,
      };
    },
  });
}
